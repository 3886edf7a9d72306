//! Mounts a filesystem stored in PostgreSQL (vfs-pg) and serves it until Ctrl-C or
//! SIGTERM, then unmounts. The database's schema is created on first use; the mount root
//! lists modules, a module its versets (a fresh database has module 1 with an empty
//! verset 1), and `echo "cpverset 1" > MOUNT/ctl` copies verset 1 into the next one.
//!
//! ```sh
//! mkdir -p /tmp/pg && cargo run --release --example pg -- /tmp/pg --db 'host=/run/postgresql dbname=files'
//! cp -a /etc/. /tmp/pg/1/1/ && echo "cpverset 1" > /tmp/pg/ctl && ls /tmp/pg/1
//! cargo run --release --example pg -- --fsck --db postgresql://postgres@localhost/files
//! ```
//!
//! Several programs may mount one database at once (on one machine or several): each
//! hears the others' changes through PostgreSQL `LISTEN/NOTIFY` and drops what its kernel
//! cached of them, so a name created, renamed or removed through one mount is seen
//! through the others within a second.
//!
//! Invariant: whatever ends the program (Ctrl-C, SIGTERM, an external `umount`), the
//! mount is gone when it exits; `--fsck` changes nothing and exits 1 if it found a problem.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use vfs_fuse::MountOptions;
use vfs_pg::{PgFs, PgOptions};

/// Mount a filesystem stored in a PostgreSQL database through FUSE.
#[derive(Parser, Debug)]
#[command(name = "pg")]
struct Args {
    /// Where to mount (an existing, empty directory). Not needed with --fsck.
    mountpoint: Option<PathBuf>,
    /// The database, as a libpq connection string: `postgresql://user@host:port/db` or
    /// `host=/run/postgresql dbname=files`. The database must exist; its schema is
    /// created on first use. A database made by another schema version is refused.
    #[arg(long, value_name = "URL")]
    db: String,
    /// Let other users in (allow_other; needed for services running as their own user).
    #[arg(long)]
    allow_other: bool,
    /// Check the database's consistency (entries, link counts, cycles, blocks), print
    /// the report and exit: 0 if clean, 1 if not. Mounts nothing.
    #[arg(long)]
    fsck: bool,
    /// Block size in bytes for a new database (an existing one keeps its own).
    #[arg(long, default_value_t = vfs_pg::DEFAULT_BLOCK_SIZE)]
    block_size: u32,
    /// Most database connections this mount holds.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How long the kernel may keep attributes and names it looked up, in seconds. Other
    /// mounts' changes drop them earlier (LISTEN/NOTIFY); this bounds what is missed
    /// while the listener reconnects.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    ttl: f64,

    /// Serve read-only: every change is EROFS, in the kernel (`ro`) and in the backend
    /// (`vfs_core::ReadOnly`), so nothing can write through this mount.
    #[arg(long)]
    read_only: bool,
}

fn main() {
    common::init_logging();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| common::fail(format!("cannot start a runtime: {e}")));
    let opts = PgOptions {
        block_size: args.block_size,
        pool_size: args.connections,
        ..PgOptions::default()
    };
    let fs = rt
        .block_on(PgFs::open(&args.db, opts))
        .unwrap_or_else(|e| common::fail(e));
    if args.fsck {
        let report = rt
            .block_on(fs.fsck())
            .unwrap_or_else(|e| common::fail(format!("fsck: {e}")));
        print!("{report}");
        std::process::exit(if report.is_clean() { 0 } else { 1 });
    }
    drop(rt);
    let Some(mountpoint) = args.mountpoint.as_deref() else {
        common::fail("a MOUNTPOINT is needed (or --fsck)");
    };
    let ttl = std::time::Duration::try_from_secs_f64(args.ttl)
        .unwrap_or_else(|_| common::fail(format!("--ttl {}: not a number of seconds", args.ttl)));
    let opts = MountOptions {
        allow_other: args.allow_other,
        fsname: Some("vfs-pg".into()),
        attr_ttl: ttl,
        entry_ttl: ttl,
        read_only: args.read_only,
        ..MountOptions::default()
    };
    // Other mounts' changes (LISTEN/NOTIFY) become kernel invalidations of this mount, a
    // read-only one included.
    if args.read_only {
        let fs = Arc::new(vfs_core::ReadOnly::new(fs));
        common::serve_until_stopped_with("pg", "vfs-pg, read-only", Arc::clone(&fs), mountpoint, &opts, |m| {
            fs.inner().set_invalidator(m.invalidator());
        });
    } else {
        let fs = Arc::new(fs);
        common::serve_until_stopped_with("pg", "vfs-pg", Arc::clone(&fs), mountpoint, &opts, |m| {
            fs.set_invalidator(m.invalidator());
        });
    }
}
