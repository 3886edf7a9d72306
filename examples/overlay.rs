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

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use vfs_core::localfs::LocalFs;
use vfs_core::overlay::{Overlay, OverlayCounters, OverlayOptions};
use vfs_core::{ReadOnly, VirtualFs};
use vfs_fuse::MountOptions;

/// Mount a copy-on-write overlay of host directories through FUSE.
///
/// Reads fall through the layers (the first --lower is the topmost); the first change to
/// a lower file copies it into the upper directory block by block (an 8 KiB write into a
/// 1 GiB file stores one 64 KiB block); deletions of lower entries leave whiteouts in the
/// upper. Everything the overlay keeps lives in the upper (its hidden `.vfs-overlay`
/// directory), so mounting the same layers again finds every change. Lower directories
/// are only ever read.
#[derive(Parser, Debug)]
#[command(name = "overlay")]
struct Args {
    /// Where to mount (an existing, empty directory).
    mountpoint: PathBuf,
    /// A read-only lower layer; repeat for more, topmost first.
    #[arg(long = "lower", value_name = "DIR", required = true)]
    lowers: Vec<PathBuf>,
    /// The writable upper layer (an existing directory, not inside a lower one).
    #[arg(long, value_name = "DIR")]
    upper: PathBuf,
    /// Copy blocks into the upper when they are read, not only when written.
    #[arg(long)]
    materialize_on_read: bool,
    /// Let other users in (allow_other; needed for services running as their own user).
    #[arg(long)]
    allow_other: bool,
    /// Serve read-only: every change is EROFS, in the kernel (`ro`) and in the backend
    /// (`vfs_core::ReadOnly`).
    #[arg(long)]
    read_only: bool,
}

/// The canonical path of an existing directory, or one line saying what is wrong.
fn directory(path: &Path, what: &str) -> PathBuf {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|e| common::fail(format!("{what} {}: {e}", path.display())));
    if !canon.is_dir() {
        common::fail(format!("{what} {} is not a directory", path.display()));
    }
    canon
}

fn main() {
    common::init_logging();
    let args = Args::parse();
    let upper = directory(&args.upper, "upper");
    let mut lowers = Vec::new();
    for l in &args.lowers {
        let lower = directory(l, "lower");
        if upper.starts_with(&lower) || lower.starts_with(&upper) {
            common::fail(format!(
                "upper {} and lower {} overlap: one is inside the other",
                args.upper.display(),
                l.display()
            ));
        }
        lowers.push(lower);
    }
    let mountpoint = directory(&args.mountpoint, "mount point");
    if lowers
        .iter()
        .chain([&upper])
        .any(|d| d.starts_with(&mountpoint) || mountpoint.starts_with(d))
    {
        common::fail("the mount point must be outside every layer (and no layer inside it)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| common::fail(format!("cannot start the runtime: {e}")));
    let fs = rt.block_on(async {
        let upper_fs = LocalFs::new(&upper).unwrap_or_else(|e| common::fail(format!("upper {}: {e}", upper.display())));
        let mut lower_fs = Vec::new();
        for l in &lowers {
            lower_fs.push(LocalFs::new(l).unwrap_or_else(|e| common::fail(format!("lower {}: {e}", l.display()))));
        }
        let opts = OverlayOptions {
            materialize_on_read: args.materialize_on_read,
            ..OverlayOptions::default()
        };
        Overlay::open(upper_fs, lower_fs, opts)
            .await
            .unwrap_or_else(|e| common::fail(format!("cannot open the overlay: {e}")))
    });
    let opts = MountOptions {
        allow_other: args.allow_other,
        read_only: args.read_only,
        ..MountOptions::default()
    };
    let what = format!("{} over {} lower layer(s)", upper.display(), lowers.len());
    if args.read_only {
        let fs = Arc::new(ReadOnly::new(fs));
        serve(Arc::clone(&fs), &format!("{what}, read-only,"), &args, &opts, || {
            fs.inner().counters()
        });
    } else {
        let fs = Arc::new(fs);
        serve(Arc::clone(&fs), &what, &args, &opts, || fs.counters());
    }
    drop(rt);
}

/// Mounts `fs`, serves until a stop signal, unmounts, and reports what was copied up.
fn serve<F: VirtualFs>(
    fs: Arc<F>,
    what: &str,
    args: &Args,
    opts: &MountOptions,
    counters: impl Fn() -> OverlayCounters,
) {
    let mount = vfs_fuse::mount(fs, &args.mountpoint, opts).unwrap_or_else(|e| common::fail(e));
    eprintln!(
        "overlay: {what} mounted on {} (Ctrl-C to unmount)",
        mount.mountpoint().display()
    );
    let why = common::wait_for_stop(&mount);
    let c = counters();
    match mount.unmount() {
        Ok(()) => eprintln!(
            "overlay: {why}, unmounted ({} objects and {} blocks copied up; bytes read: {} upper, {:?} lower)",
            c.objects_copied_up, c.blocks_copied_up, c.bytes_from_upper, c.bytes_from_lower
        ),
        Err(e) => common::fail(e),
    }
}
