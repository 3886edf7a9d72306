//! Mounting the in-memory filesystem (`MemFs`) or a host directory (`LocalFs`).
//!
//! Invariant: whatever ends the command (Ctrl-C, SIGTERM, an external `umount`), the
//! mount is gone when it exits; `--read-only` (or `-o ro`) is enforced in the kernel and
//! in the backend.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vfs_core::localfs::LocalFs;
use vfs_core::memfs::MemFs;
use vfs_core::{ReadOnly, VirtualFs};
use vfs_fuse::{Dispatch, MountOptions};

use crate::daemon::Ready;
use crate::serve::{Launch, fail, serve_until_stopped};

/// The flags of a memfs or local mount.
#[derive(clap::Args, Debug, Clone)]
pub struct MemfsOptions {
    /// Let other users in (allow_other; needed for services running as their own user).
    #[arg(long)]
    pub allow_other: bool,
    /// Hand open files' host descriptors to the kernel (FUSE passthrough; local only).
    #[arg(long)]
    pub passthrough: bool,
    /// Never use passthrough (by default it is used where it costs nothing: a host
    /// directory, no --allow-other, no --writeback-cache, and the kernel and privilege
    /// allow it).
    #[arg(long, conflicts_with = "passthrough")]
    pub no_passthrough: bool,
    /// Let the kernel cache writes and send them in batches (FUSE writeback cache).
    #[arg(long)]
    pub writeback_cache: bool,
    /// How requests run: `threads` (session threads drive each request) or `spawn`
    /// (each request is a task on the runtime).
    #[arg(long, default_value = "threads")]
    pub dispatch: String,
    /// Session threads reading /dev/fuse.
    #[arg(long)]
    pub session_threads: Option<usize>,
    /// Attribute TTL in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub attr_ttl: f64,
    /// Entry TTL in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub entry_ttl: f64,
    /// Negative-lookup TTL in seconds (0: a missing name is never cached).
    #[arg(long, default_value_t = 0.0)]
    pub negative_ttl: f64,
    /// Serve read-only: every change is EROFS, in the kernel (`ro`) and in the backend
    /// (`vfs_core::ReadOnly`), so nothing can write through this mount.
    #[arg(long)]
    pub read_only: bool,
    /// Do not watch the host directory for changes made behind the mount (`--local`
    /// only; `LocalFs::without_reports`): the kernel then caches for 1 s instead of being
    /// told of each change (for a tree larger than the host's inotify watch limit).
    #[arg(long)]
    pub no_report_changes: bool,
}

fn secs(s: f64, what: &str) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_else(|_| fail(format!("--{what} must be a number of seconds >= 0")))
}

/// The dispatch named by `--dispatch`; anything else is a one-line error.
pub fn dispatch(name: &str) -> Dispatch {
    match name {
        "threads" => Dispatch::Threads,
        "spawn" => Dispatch::Spawn,
        other => fail(format!("--dispatch must be threads or spawn, not {other:?}")),
    }
}

/// Mounts `local` (a host directory) or, without it, a fresh `MemFs` on `mountpoint`, and
/// serves it until stopped.
pub fn run(local: Option<&Path>, mountpoint: &Path, args: &MemfsOptions, launch: &Launch) {
    let read_only = launch.read_only(args.read_only);
    let mut opts = MountOptions {
        allow_other: args.allow_other,
        passthrough: args.passthrough,
        passthrough_auto: !args.no_passthrough,
        writeback_cache: args.writeback_cache,
        attr_ttl: secs(args.attr_ttl, "attr-ttl"),
        entry_ttl: secs(args.entry_ttl, "entry-ttl"),
        negative_ttl: secs(args.negative_ttl, "negative-ttl"),
        session_threads: args.session_threads,
        dispatch: dispatch(&args.dispatch),
        read_only,
        ..MountOptions::default()
    };
    launch.apply(&mut opts);
    if local.is_none() && args.passthrough {
        fail("--passthrough needs a host directory (MemFs has no host files to pass through)");
    }
    if local.is_none() && args.no_report_changes {
        fail("--no-report-changes needs a host directory (MemFs changes only through the mount)");
    }
    // LocalFs keeps `/proc/self/fd` open, which names the process that opened it: open
    // it in the process that serves (after the fork), never before.
    let mut ready = launch.start();
    let local = local.map(|dir| {
        let fs = LocalFs::new(dir).unwrap_or_else(|e| fail(format!("cannot serve {}: {e}", dir.display())));
        let fs = if args.no_report_changes {
            fs.without_reports()
        } else {
            fs
        };
        (fs, dir.to_path_buf())
    });
    match local {
        Some((fs, dir)) => serve(
            fs,
            &format!("LocalFs({})", dir.display()),
            mountpoint,
            &opts,
            launch,
            &mut ready,
        ),
        None => {
            // The root belongs to whoever mounts, like a freshly created directory.
            // SAFETY: getuid and getgid cannot fail and touch no memory.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            serve(
                MemFs::with_root(uid, gid, 0o755),
                "MemFs",
                mountpoint,
                &opts,
                launch,
                &mut ready,
            );
        }
    }
}

/// Serves `fs` on `mountpoint` until stopped, behind [`ReadOnly`] when the mount is
/// read-only. What a backend reports of changes made behind the mount reaches the kernel
/// through `vfs_fuse::mount` itself (`VirtualFs::report_changes`).
pub(crate) fn serve<F: VirtualFs>(
    fs: F,
    what: &str,
    mountpoint: &Path,
    opts: &MountOptions,
    launch: &Launch,
    ready: &mut Ready,
) {
    let (prog, nothing) = (launch.prog.as_str(), |_: &vfs_fuse::Mount| {});
    if opts.read_only {
        let what = format!("{what}, read-only,");
        serve_until_stopped(
            prog,
            &what,
            Arc::new(ReadOnly::new(fs)),
            mountpoint,
            opts,
            ready,
            nothing,
            String::new,
        );
    } else {
        serve_until_stopped(prog, what, Arc::new(fs), mountpoint, opts, ready, nothing, String::new);
    }
}
