//! Mounts a copy-on-write overlay: one writable upper directory over one or more
//! read-only lower directories, served until Ctrl-C or SIGTERM, then unmounted.
//!
//! ```sh
//! mkdir -p /tmp/ovl /tmp/upper
//! cargo run --release --example overlay -- /tmp/ovl --lower /srv/backup --upper /tmp/upper
//! ```
//!
//! Invariant: nothing is mounted unless every layer is valid (each lower an existing
//! directory, the upper an existing directory that is neither inside a lower nor holding
//! one); whatever ends the program, the mount is gone when it exits; the lower
//! directories are never written.

use std::path::PathBuf;

use clap::Parser;
use vfs_cli::overlay::OverlayArgs;
use vfs_cli::serve::Launch;

/// Mount a copy-on-write overlay of host directories through FUSE.
#[derive(Parser, Debug)]
#[command(name = "overlay")]
struct Args {
    /// Where to mount (an existing, empty directory).
    mountpoint: PathBuf,
    #[command(flatten)]
    opts: OverlayArgs,
}

fn main() {
    vfs_cli::log::init(0, None).unwrap_or_else(|e| vfs_cli::fail(e));
    let args = Args::parse();
    vfs_cli::overlay::run(&args.mountpoint, &args.opts, &Launch::foreground("overlay"));
}
