//! The `vfs` command: see `vfs --help` and the crate's README.
//!
//! Invariant: all of its behaviour is in the library (`vfs_cli::cli`), shared with the
//! repository's examples.

fn main() {
    vfs_cli::cli::main();
}
