//! Mounting a filesystem stored in PostgreSQL (vfs-pg), and checking one (`fsck`).
//!
//! The database's schema is created on first use; the mount root lists modules, a module
//! its versets (a fresh database has module 1 with an empty verset 1), and
//! `echo "cpverset 1" > MOUNT/ctl` copies verset 1 into the next one. Several programs may
//! mount one database at once: each hears the others' changes through `LISTEN/NOTIFY`
//! and drops what its kernel cached of them.
//!
//! Invariant: whatever ends the command, the mount is gone when it exits; `fsck` changes
//! nothing and exits 1 if it found a problem.

use std::path::Path;
use std::sync::Arc;

use vfs_fuse::MountOptions;
use vfs_pg::{PgFs, PgOptions};

use crate::serve::{Launch, fail, serve_until_stopped};

/// The flags of a vfs-pg mount (the database is given apart: `--db URL` or a positional).
#[derive(clap::Args, Debug, Clone)]
pub struct PgArgs {
    /// Let other users in (allow_other; needed for services running as their own user).
    #[arg(long)]
    pub allow_other: bool,
    /// Block size in bytes for a new database (an existing one keeps its own).
    #[arg(long, default_value_t = vfs_pg::DEFAULT_BLOCK_SIZE)]
    pub block_size: u32,
    /// Most database connections this mount holds.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// How long the kernel may keep attributes and names it looked up, in seconds. Other
    /// mounts' changes drop them earlier (LISTEN/NOTIFY); this bounds what is missed
    /// while the listener reconnects.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub ttl: f64,
    /// Serve read-only: every change is EROFS, in the kernel (`ro`) and in the backend
    /// (`vfs_core::ReadOnly`), so nothing can write through this mount.
    #[arg(long)]
    pub read_only: bool,
}

impl PgArgs {
    fn pg_options(&self) -> PgOptions {
        PgOptions {
            block_size: self.block_size,
            pool_size: self.connections,
            ..PgOptions::default()
        }
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start a runtime: {e}")))
}

/// Checks the database `db`, prints the report and exits: 0 if clean, 1 if not.
pub fn fsck(db: &str, args: &PgArgs) -> ! {
    let rt = current_thread_runtime();
    let fs = rt
        .block_on(PgFs::open(db, args.pg_options()))
        .unwrap_or_else(|e| fail(e));
    let report = rt.block_on(fs.fsck()).unwrap_or_else(|e| fail(format!("fsck: {e}")));
    print!("{report}");
    std::process::exit(if report.is_clean() { 0 } else { 1 });
}

/// Opens (creating its schema if new) the database `db`, mounts it on `mountpoint` and
/// serves it until stopped.
pub fn run(db: &str, mountpoint: &Path, args: &PgArgs, launch: &Launch) {
    let ttl = std::time::Duration::try_from_secs_f64(args.ttl)
        .unwrap_or_else(|_| fail(format!("--ttl {}: not a number of seconds", args.ttl)));
    let mut opts = MountOptions {
        allow_other: args.allow_other,
        fsname: Some("vfs-pg".into()),
        attr_ttl: ttl,
        entry_ttl: ttl,
        read_only: launch.read_only(args.read_only),
        ..MountOptions::default()
    };
    launch.apply(&mut opts);
    let mut ready = launch.start();
    let rt = current_thread_runtime();
    let fs = rt
        .block_on(PgFs::open(db, args.pg_options()))
        .unwrap_or_else(|e| fail(e));
    drop(rt);
    let prog = launch.prog.as_str();
    // Other mounts' changes (LISTEN/NOTIFY) become kernel invalidations of this mount, a
    // read-only one included.
    if opts.read_only {
        let fs = Arc::new(vfs_core::ReadOnly::new(fs));
        let hook = |m: &vfs_fuse::Mount| fs.inner().set_invalidator(m.invalidator());
        serve_until_stopped(
            prog,
            "vfs-pg, read-only",
            Arc::clone(&fs),
            mountpoint,
            &opts,
            &mut ready,
            hook,
            String::new,
        );
    } else {
        let fs = Arc::new(fs);
        let hook = |m: &vfs_fuse::Mount| fs.set_invalidator(m.invalidator());
        serve_until_stopped(
            prog,
            "vfs-pg",
            Arc::clone(&fs),
            mountpoint,
            &opts,
            &mut ready,
            hook,
            String::new,
        );
    }
}
