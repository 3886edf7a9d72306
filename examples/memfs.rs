//! Mounts the in-memory filesystem (or, with `--local DIR`, a host directory through
//! `LocalFs`) and serves it until Ctrl-C or SIGTERM, then unmounts.
//!
//! ```sh
//! mkdir -p /tmp/memfs && cargo run --release --example memfs -- /tmp/memfs
//! cargo run --release --example memfs -- /tmp/memfs --local /srv/data --passthrough
//! cargo run --release --example memfs -- /tmp/memfs --local /srv/data --read-only
//! ```
//!
//! The mount goes away by itself if the program dies, even by SIGKILL (`auto_unmount`).
//!
//! Invariant: whatever ends the program (Ctrl-C, SIGTERM, an external `umount`), the
//! mount is gone when it exits.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use vfs_core::localfs::LocalFs;
use vfs_core::memfs::MemFs;
use vfs_core::{ReadOnly, VirtualFs};
use vfs_fuse::{Dispatch, MountOptions};

/// Mount MemFs (or a host directory) through FUSE.
#[derive(Parser, Debug)]
#[command(name = "memfs")]
struct Args {
    /// Where to mount (an existing, empty directory).
    mountpoint: PathBuf,
    /// Serve this host directory (LocalFs) instead of an in-memory filesystem.
    #[arg(long, value_name = "DIR")]
    local: Option<PathBuf>,
    /// Let other users in (allow_other; needed for services running as their own user).
    #[arg(long)]
    allow_other: bool,
    /// Hand open files' host descriptors to the kernel (FUSE passthrough; --local only).
    #[arg(long)]
    passthrough: bool,
    /// Let the kernel cache writes and send them in batches (FUSE writeback cache).
    #[arg(long)]
    writeback_cache: bool,
    /// How requests run: `threads` (session threads drive each request) or `spawn`
    /// (each request is a task on the runtime).
    #[arg(long, default_value = "threads")]
    dispatch: String,
    /// Session threads reading /dev/fuse.
    #[arg(long)]
    session_threads: Option<usize>,
    /// Attribute TTL in seconds.
    #[arg(long, default_value_t = 1.0)]
    attr_ttl: f64,
    /// Entry TTL in seconds.
    #[arg(long, default_value_t = 1.0)]
    entry_ttl: f64,
    /// Negative-lookup TTL in seconds (0: a missing name is never cached).
    #[arg(long, default_value_t = 0.0)]
    negative_ttl: f64,
    /// Serve read-only: every change is EROFS, in the kernel (`ro`) and in the backend
    /// (`vfs_core::ReadOnly`), so nothing can write through this mount.
    #[arg(long)]
    read_only: bool,
}

fn secs(s: f64, what: &str) -> Duration {
    Duration::try_from_secs_f64(s)
        .unwrap_or_else(|_| common::fail(format!("--{what} must be a number of seconds >= 0")))
}

fn serve<F: VirtualFs>(fs: F, what: &str, args: &Args, opts: &MountOptions) {
    if args.read_only {
        serve_arc(Arc::new(ReadOnly::new(fs)), &format!("{what}, read-only,"), args, opts);
    } else {
        serve_arc(Arc::new(fs), what, args, opts);
    }
}

fn serve_arc<F: VirtualFs>(fs: Arc<F>, what: &str, args: &Args, opts: &MountOptions) {
    let mount = vfs_fuse::mount(fs, &args.mountpoint, opts).unwrap_or_else(|e| common::fail(e));
    eprintln!(
        "memfs: {what} mounted on {} (Ctrl-C to unmount)",
        mount.mountpoint().display()
    );
    let why = common::wait_for_stop(&mount);
    match mount.unmount() {
        Ok(()) => eprintln!("memfs: {why}, unmounted"),
        Err(e) => common::fail(e),
    }
}

fn main() {
    common::init_logging();
    let args = Args::parse();
    let dispatch = match args.dispatch.as_str() {
        "threads" => Dispatch::Threads,
        "spawn" => Dispatch::Spawn,
        other => common::fail(format!("--dispatch must be threads or spawn, not {other:?}")),
    };
    let opts = MountOptions {
        allow_other: args.allow_other,
        passthrough: args.passthrough,
        writeback_cache: args.writeback_cache,
        attr_ttl: secs(args.attr_ttl, "attr-ttl"),
        entry_ttl: secs(args.entry_ttl, "entry-ttl"),
        negative_ttl: secs(args.negative_ttl, "negative-ttl"),
        session_threads: args.session_threads,
        dispatch,
        read_only: args.read_only,
        ..MountOptions::default()
    };
    match &args.local {
        Some(dir) => {
            let fs = LocalFs::new(dir).unwrap_or_else(|e| common::fail(format!("cannot serve {}: {e}", dir.display())));
            serve(fs, &format!("LocalFs({})", dir.display()), &args, &opts);
        }
        None => {
            if args.passthrough {
                common::fail("--passthrough needs --local DIR (MemFs has no host files to pass through)");
            }
            // The root belongs to whoever mounts, like a freshly created directory.
            let fs = MemFs::with_root(rustix_ids().0, rustix_ids().1, 0o755);
            serve(fs, "MemFs", &args, &opts);
        }
    }
}

/// The caller's uid and gid.
fn rustix_ids() -> (u32, u32) {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    unsafe { (libc::getuid(), libc::getgid()) }
}
