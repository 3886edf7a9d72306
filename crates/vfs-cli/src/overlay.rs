//! Mounting a copy-on-write overlay: one writable upper directory over one or more
//! read-only lower directories.
//!
//! Invariant: nothing is mounted unless every layer is valid (each lower an existing
//! directory, the upper an existing directory that is neither inside a lower nor holding
//! one, the mount point outside them all); the lower directories are never written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfs_core::localfs::LocalFs;
use vfs_core::overlay::{Overlay, OverlayCounters, OverlayOptions};
use vfs_core::{ReadOnly, VirtualFs};
use vfs_fuse::MountOptions;

use crate::daemon::Ready;
use crate::serve::{Launch, fail, serve_until_stopped};

/// The layers and flags of an overlay mount.
///
/// Reads fall through the layers (the first --lower is the topmost); the first change to
/// a lower file copies it into the upper directory block by block (an 8 KiB write into a
/// 1 GiB file stores one 64 KiB block); deletions of lower entries leave whiteouts in the
/// upper. Everything the overlay keeps lives in the upper (its hidden `.vfs-overlay`
/// directory), so mounting the same layers again finds every change. Lower directories
/// are only ever read.
#[derive(clap::Args, Debug, Clone)]
pub struct OverlayArgs {
    /// A read-only lower layer; repeat for more, topmost first.
    #[arg(long = "lower", value_name = "DIR", required = true)]
    pub lowers: Vec<PathBuf>,
    /// The writable upper layer (an existing directory, not inside a lower one).
    #[arg(long, value_name = "DIR")]
    pub upper: PathBuf,
    /// Copy blocks into the upper when they are read, not only when written.
    #[arg(long)]
    pub materialize_on_read: bool,
    /// Let other users in (allow_other; needed for services running as their own user).
    #[arg(long)]
    pub allow_other: bool,
    /// Serve read-only: every change is EROFS, in the kernel (`ro`) and in the backend
    /// (`vfs_core::ReadOnly`).
    #[arg(long)]
    pub read_only: bool,
}

/// The canonical path of an existing directory, or one line saying what is wrong.
fn directory(path: &Path, what: &str) -> PathBuf {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|e| fail(format!("{what} {}: {e}", path.display())));
    if !canon.is_dir() {
        fail(format!("{what} {} is not a directory", path.display()));
    }
    canon
}

/// Checks the layers, mounts the overlay on `mountpoint` and serves it until stopped.
pub fn run(mountpoint: &Path, args: &OverlayArgs, launch: &Launch) {
    let upper = directory(&args.upper, "upper");
    let mut lowers = Vec::new();
    for l in &args.lowers {
        let lower = directory(l, "lower");
        if upper.starts_with(&lower) || lower.starts_with(&upper) {
            fail(format!(
                "upper {} and lower {} overlap: one is inside the other",
                args.upper.display(),
                l.display()
            ));
        }
        lowers.push(lower);
    }
    let mountpoint = directory(mountpoint, "mount point");
    if lowers
        .iter()
        .chain([&upper])
        .any(|d| d.starts_with(&mountpoint) || mountpoint.starts_with(d))
    {
        fail("the mount point must be outside every layer (and no layer inside it)");
    }
    let mut opts = MountOptions {
        allow_other: args.allow_other,
        read_only: launch.read_only(args.read_only),
        ..MountOptions::default()
    };
    launch.apply(&mut opts);
    let mut ready = launch.start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start the runtime: {e}")));
    let fs = rt.block_on(async {
        let upper_fs = LocalFs::new(&upper).unwrap_or_else(|e| fail(format!("upper {}: {e}", upper.display())));
        let mut lower_fs = Vec::new();
        for l in &lowers {
            lower_fs.push(LocalFs::new(l).unwrap_or_else(|e| fail(format!("lower {}: {e}", l.display()))));
        }
        let o = OverlayOptions {
            materialize_on_read: args.materialize_on_read,
            ..OverlayOptions::default()
        };
        Overlay::open(upper_fs, lower_fs, o)
            .await
            .unwrap_or_else(|e| fail(format!("cannot open the overlay: {e}")))
    });
    let what = format!("{} over {} lower layer(s)", upper.display(), lowers.len());
    if opts.read_only {
        let fs = Arc::new(ReadOnly::new(fs));
        let counters = || fs.inner().counters();
        serve(
            Arc::clone(&fs),
            &format!("{what}, read-only,"),
            &mountpoint,
            &opts,
            launch,
            &mut ready,
            counters,
        );
    } else {
        let fs = Arc::new(fs);
        serve(Arc::clone(&fs), &what, &mountpoint, &opts, launch, &mut ready, || {
            fs.counters()
        });
    }
    drop(rt);
}

/// Mounts `fs`, serves until a stop signal, unmounts, and reports what was copied up.
fn serve<F: VirtualFs>(
    fs: Arc<F>,
    what: &str,
    mountpoint: &Path,
    opts: &MountOptions,
    launch: &Launch,
    ready: &mut Ready,
    counters: impl Fn() -> OverlayCounters,
) {
    serve_until_stopped(
        &launch.prog,
        what,
        fs,
        mountpoint,
        opts,
        ready,
        |_| {},
        || {
            let c = counters();
            format!(
                " ({} objects and {} blocks copied up; bytes read: {} upper, {:?} lower)",
                c.objects_copied_up, c.blocks_copied_up, c.bytes_from_upper, c.bytes_from_lower
            )
        },
    );
}
