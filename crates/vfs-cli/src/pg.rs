//! Mounting a filesystem stored in PostgreSQL (vfs-pg), and checking one (`fsck`).
//!
//! The database's schema is created on first use; the mount root lists modules, a module
//! its versets (a fresh database has module 1 with an empty verset 1), and
//! `echo "cpverset 1" > MOUNT/ctl` copies verset 1 into the next one. Several programs may
//! mount one database at once: each hears the others' changes through `LISTEN/NOTIFY`
//! and drops what its kernel cached of them.
//!
//! File blocks live in the database or, with `--blocks s3://BUCKET`, in an S3 bucket
//! (credentials from the usual AWS environment variables); [`gc`] removes the bucket's
//! objects no row refers to that are older than a grace period.
//!
//! Invariant: whatever ends the command, the mount is gone when it exits; `fsck` changes
//! nothing and exits 1 if it found a problem; a bucket that is missing or refuses the
//! credentials is one line at start, before anything is mounted.

use std::path::Path;

use vfs_fuse::MountOptions;
use vfs_pg::{PgBlockStore, PgFs, PgOptions, S3BlockStore, S3Options};

use crate::serve::{Launch, fail};

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
    /// Where file blocks live: `pg` (in the database) or `s3://BUCKET[/PREFIX]` (an S3
    /// bucket; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION).
    /// A database keeps the store it was created with.
    #[arg(long, value_name = "STORE", default_value = "pg")]
    pub blocks: String,
    /// The S3 endpoint (`http://127.0.0.1:8333` for SeaweedFS); default: AWS, or
    /// AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// With gc: never remove an object younger than this many seconds (longer than any
    /// write transaction takes).
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub grace: u64,
    /// With gc: remove nothing, report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
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

/// The bucket named by `--blocks`, checked (it exists and takes the credentials), or
/// `None` for blocks in the database. Exits with one line if the bucket is unusable.
fn s3_store(rt: &tokio::runtime::Runtime, args: &PgArgs) -> Option<S3BlockStore> {
    if args.blocks == "pg" {
        return None;
    }
    let mut s3 = S3Options::from_url(&args.blocks).unwrap_or_else(|e| fail(format!("--blocks: {e}")));
    s3.endpoint = args.s3_endpoint.clone();
    let store = S3BlockStore::new(&s3).unwrap_or_else(|e| fail(format!("--blocks {}: {e}", args.blocks)));
    // The error names the bucket and says what failed, on one line.
    rt.block_on(store.check()).unwrap_or_else(|e| fail(e));
    Some(store)
}

/// Checks the database `db` (and, with blocks in a bucket, that every block row has its
/// object), prints the report and exits: 0 if clean, 1 if not.
pub fn fsck(db: &str, args: &PgArgs) -> ! {
    let rt = current_thread_runtime();
    let (report, missing) = match s3_store(&rt, args) {
        None => {
            let fs = rt
                .block_on(PgFs::open_with_store(db, args.pg_options(), PgBlockStore))
                .unwrap_or_else(|e| fail(e));
            (rt.block_on(fs.fsck()), Vec::new())
        }
        Some(store) => {
            let fs = rt
                .block_on(PgFs::open_with_store(db, args.pg_options(), store))
                .unwrap_or_else(|e| fail(e));
            let g = rt
                .block_on(fs.store().gc(db, std::time::Duration::MAX, true))
                .unwrap_or_else(|e| fail(format!("fsck: {e}")));
            (rt.block_on(fs.fsck()), g.missing)
        }
    };
    let report = report.unwrap_or_else(|e| fail(format!("fsck: {e}")));
    print!("{report}");
    for id in &missing {
        println!("block {id}: its object is missing from the bucket");
    }
    std::process::exit(if report.is_clean() && missing.is_empty() { 0 } else { 1 });
}

/// Removes the bucket's objects that no row of `db` refers to (orphans of crashed writes,
/// blocks whose deletion committed) and that are older than `--grace`, prints what was
/// removed and exits: 0 if every block row has its object, 1 if not. Safe while mounts are
/// active.
pub fn gc(db: &str, args: &PgArgs) -> ! {
    let rt = current_thread_runtime();
    let Some(store) = s3_store(&rt, args) else {
        fail("gc is for blocks in a bucket (--blocks s3://BUCKET); blocks in pg are deleted with their rows")
    };
    let grace = std::time::Duration::from_secs(args.grace);
    let report = rt
        .block_on(store.gc(db, grace, args.dry_run))
        .unwrap_or_else(|e| fail(format!("gc: {e}")));
    let verb = if args.dry_run { "would remove" } else { "removed" };
    for (id, bytes) in &report.removed_orphans {
        println!("{verb} orphan block {id} ({bytes} bytes)");
    }
    for (id, bytes) in &report.removed_deleted {
        println!("{verb} deleted block {id} ({bytes} bytes)");
    }
    for id in &report.missing {
        println!("MISSING object of block {id}");
    }
    println!("{report}");
    std::process::exit(if report.missing.is_empty() { 0 } else { 1 });
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
    let store = s3_store(&rt, args);
    let pg_opts = args.pg_options();
    match store {
        None => {
            let fs = rt
                .block_on(PgFs::open_with_store(db, pg_opts, PgBlockStore))
                .unwrap_or_else(|e| fail(e));
            drop(rt);
            crate::memfs::serve(fs, "vfs-pg", mountpoint, &opts, launch, &mut ready);
        }
        Some(store) => {
            let fs = rt
                .block_on(PgFs::open_with_store(db, pg_opts, store))
                .unwrap_or_else(|e| fail(e));
            drop(rt);
            crate::memfs::serve(fs, "vfs-pg", mountpoint, &opts, launch, &mut ready);
        }
    }
}
