//! What every mount command does the same way: start (in the background or not), mount,
//! say so, wait for Ctrl-C, SIGTERM or an unmount from outside, unmount; and one-line
//! failures.
//!
//! Invariant: a command that mounted something unmounts it before exiting, whichever way
//! it is asked to stop; a failure is one line `error: ...` and exit status 1.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vfs_fuse::MountOptions;

use crate::daemon::{self, Ready};
use crate::options::{self, FuseOpts};

/// Prints `error: ...` on one line and exits with status 1 (once detached, where stderr
/// is `/dev/null`, the line goes to the log instead).
pub fn fail(e: impl std::fmt::Display) -> ! {
    if daemon::detached() {
        tracing::error!("{e}");
    } else {
        eprintln!("error: {e}");
    }
    std::process::exit(1)
}

/// Prints a progress line to stderr (to the log once detached).
pub fn say(line: impl std::fmt::Display) {
    if daemon::detached() {
        tracing::warn!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// The flags every `vfs` mount command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LaunchArgs {
    /// Mount options, comma-separated, as FUSE tools take them: ro, rw, allow_other,
    /// default_permissions, auto_unmount, fsname=NAME (and mount(8)'s own, which need
    /// nothing). Repeatable.
    #[arg(short = 'o', value_name = "OPT,OPT")]
    pub options: Vec<String>,
    /// Stay attached: serve until Ctrl-C or SIGTERM (default: return once the mount is up
    /// and serve in the background; `umount MOUNTPOINT` stops it).
    #[arg(short = 'f', long)]
    pub foreground: bool,
}

/// How one mount command runs: its name in messages, its `-o` options, and whether it
/// goes to the background once mounted.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The program's name in its messages (`vfs`, `memfs`, ...).
    pub prog: String,
    /// The `-o` options.
    pub opts: FuseOpts,
    /// Return once mounted, serving in the background.
    pub background: bool,
}

impl Launch {
    /// Foreground, no `-o` options: what the examples do.
    pub fn foreground(prog: &str) -> Launch {
        Launch {
            prog: prog.to_owned(),
            opts: FuseOpts::default(),
            background: false,
        }
    }

    /// From the `vfs` flags; a bad `-o` is a one-line error.
    pub fn from_args(prog: &str, args: &LaunchArgs) -> Result<Launch, String> {
        Ok(Launch {
            prog: prog.to_owned(),
            opts: options::parse(&args.options)?,
            background: !args.foreground,
        })
    }

    /// Forks into the background if asked ([`daemon::start`]); call before any runtime.
    pub fn start(&self) -> Ready {
        daemon::start(self.background).unwrap_or_else(|e| fail(e))
    }

    /// `-o` options over `m`.
    pub fn apply(&self, m: &mut MountOptions) {
        self.opts.apply(m);
    }

    /// Whether the mount is read-only (its own flag or `-o ro`).
    pub fn read_only(&self, flag: bool) -> bool {
        flag || self.opts.read_only
    }
}

/// Blocks until SIGINT or SIGTERM arrives, or until `mount` stops serving; says which.
pub fn wait_for_stop(mount: &vfs_fuse::Mount) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => fail(format!("cannot start the signal runtime: {e}")),
    };
    rt.block_on(async {
        let (mut int, mut term) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => fail(format!("cannot listen for signals: {e}")),
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = int.recv() => return "SIGINT",
                _ = term.recv() => return "SIGTERM",
                _ = tick.tick() => if !mount.is_serving() { return "unmounted from outside" },
            }
        }
    })
}

/// Mounts `fs` on `mountpoint`, calls `mounted` with the mount (e.g. to hand its
/// invalidator to the filesystem), says so, tells `ready`, serves until Ctrl-C, SIGTERM or
/// an outside unmount, then calls `before_unmount` and unmounts. `what` names the
/// filesystem in the messages; `after` is appended to the last one.
#[allow(clippy::too_many_arguments)]
pub fn serve_until_stopped<F: vfs_core::VirtualFs>(
    prog: &str,
    what: &str,
    fs: Arc<F>,
    mountpoint: &Path,
    opts: &MountOptions,
    ready: &mut Ready,
    mounted: impl FnOnce(&vfs_fuse::Mount),
    after: impl FnOnce() -> String,
) {
    let mount = vfs_fuse::mount(fs, mountpoint, opts).unwrap_or_else(|e| fail(e));
    mounted(&mount);
    let how = if ready.is_background() {
        "in the background; umount it to stop"
    } else {
        "Ctrl-C to unmount"
    };
    say(format!(
        "{prog}: {what} mounted on {} ({how})",
        mount.mountpoint().display()
    ));
    ready.notify();
    let why = wait_for_stop(&mount);
    let tail = after();
    match mount.unmount() {
        Ok(()) => say(format!("{prog}: {why}, unmounted{tail}")),
        Err(e) => fail(e),
    }
}
