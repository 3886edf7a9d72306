//! What every example does the same way: logging set-up, waiting for Ctrl-C or SIGTERM
//! (or for the filesystem to be unmounted from outside), and one-line errors.
//!
//! Invariant: an example that mounted something unmounts it before exiting, whichever
//! way it is asked to stop.

// Each example uses a subset of these.
#![allow(dead_code)]

use std::time::Duration;

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings only).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Prints `error: ...` on one line and exits with status 1.
pub fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
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

/// Mounts `fs` on `mountpoint`, serves until Ctrl-C, SIGTERM or an outside unmount, then
/// unmounts; `prog` and `what` name the program and the filesystem in its messages.
pub fn serve_until_stopped<F: vfs_core::VirtualFs>(
    prog: &str,
    what: &str,
    fs: std::sync::Arc<F>,
    mountpoint: &std::path::Path,
    opts: &vfs_fuse::MountOptions,
) {
    serve_until_stopped_with(prog, what, fs, mountpoint, opts, |_| {});
}

/// [`serve_until_stopped`], calling `mounted` with the mount once it is up (e.g. to hand
/// its invalidator to the filesystem).
pub fn serve_until_stopped_with<F: vfs_core::VirtualFs>(
    prog: &str,
    what: &str,
    fs: std::sync::Arc<F>,
    mountpoint: &std::path::Path,
    opts: &vfs_fuse::MountOptions,
    mounted: impl FnOnce(&vfs_fuse::Mount),
) {
    let mount = vfs_fuse::mount(fs, mountpoint, opts).unwrap_or_else(|e| fail(e));
    mounted(&mount);
    eprintln!(
        "{prog}: {what} mounted on {} (Ctrl-C to unmount)",
        mount.mountpoint().display()
    );
    let why = wait_for_stop(&mount);
    match mount.unmount() {
        Ok(()) => eprintln!("{prog}: {why}, unmounted"),
        Err(e) => fail(e),
    }
}
