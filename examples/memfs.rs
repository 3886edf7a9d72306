//! Mounts the in-memory filesystem (or, with `--local DIR`, a host directory through
//! `LocalFs`) and serves it until Ctrl-C or SIGTERM, then unmounts.
//!
//! ```sh
//! mkdir -p /tmp/memfs && cargo run --release --example memfs -- /tmp/memfs
//! cargo run --release --example memfs -- /tmp/memfs --local /srv/data --passthrough
//! cargo run --release --example memfs -- /tmp/memfs --local /srv/data --read-only
//! cargo run --release --example memfs -- /tmp/memfs --local /srv/data --no-report-changes
//! ```
//!
//! The mount goes away by itself if the program dies, even by SIGKILL (`auto_unmount`).
//!
//! Invariant: whatever ends the program (Ctrl-C, SIGTERM, an external `umount`), the
//! mount is gone when it exits.

use std::path::PathBuf;

use clap::Parser;
use vfs_cli::memfs::MemfsOptions;
use vfs_cli::serve::Launch;

/// Mount MemFs (or a host directory) through FUSE.
#[derive(Parser, Debug)]
#[command(name = "memfs")]
struct Args {
    /// Where to mount (an existing, empty directory).
    mountpoint: PathBuf,
    /// Serve this host directory (LocalFs) instead of an in-memory filesystem.
    #[arg(long, value_name = "DIR")]
    local: Option<PathBuf>,
    #[command(flatten)]
    opts: MemfsOptions,
}

fn main() {
    vfs_cli::log::init(0, None).unwrap_or_else(|e| vfs_cli::fail(e));
    let args = Args::parse();
    vfs_cli::memfs::run(
        args.local.as_deref(),
        &args.mountpoint,
        &args.opts,
        &Launch::foreground("memfs"),
    );
}
