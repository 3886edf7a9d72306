//! The smallest FUSE filesystem: one read-only file, `hello.txt`.
//!
//! ```sh
//! mkdir -p /tmp/hello && cargo run --example hello -- /tmp/hello
//! cat /tmp/hello/hello.txt        # in another terminal; Ctrl-C unmounts
//! ```
//!
//! Invariant: the backend answers the six operations a read-only filesystem needs; every
//! other operation gets the trait's default (`ENOSYS`, or `EROFS` from the kernel).

#[path = "common/hello_fs.rs"]
mod hello_fs;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use hello_fs::Hello;

/// The smallest FUSE filesystem: one read-only file, hello.txt.
#[derive(Parser, Debug)]
#[command(name = "hello")]
struct Args {
    /// Where to mount (an existing, empty directory).
    mountpoint: PathBuf,
}

fn main() {
    vfs_cli::log::init(0, None).unwrap_or_else(|e| vfs_cli::fail(e));
    let args = Args::parse();
    let opts = vfs_fuse::MountOptions {
        read_only: true,
        ..vfs_fuse::MountOptions::default()
    };
    let mut ready = vfs_cli::daemon::Ready::foreground();
    let mountpoint = args.mountpoint.as_path();
    vfs_cli::serve::serve_until_stopped(
        "hello",
        "hello.txt",
        Arc::new(Hello),
        mountpoint,
        &opts,
        &mut ready,
        |_| {},
        String::new,
    );
}
