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
//! File blocks may live in an S3 bucket instead of the database (metadata stays in
//! PostgreSQL), credentials from the usual AWS environment variables; `--gc` removes the
//! bucket's objects that no row refers to and that are older than `--grace`:
//!
//! ```sh
//! export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
//! cargo run --release --example pg -- /tmp/pg --db URL --blocks s3://BUCKET --s3-endpoint http://127.0.0.1:8333
//! cargo run --release --example pg -- --gc --db URL --blocks s3://BUCKET --s3-endpoint http://127.0.0.1:8333
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
use vfs_pg::{BlockStore, PgBlockStore, PgFs, PgOptions, S3BlockStore, S3Options};

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

    /// Where file blocks live: `pg` (in the database) or `s3://BUCKET[/PREFIX]` (an S3
    /// bucket; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION).
    /// A database keeps the store it was created with.
    #[arg(long, value_name = "STORE", default_value = "pg")]
    blocks: String,
    /// The S3 endpoint (`http://127.0.0.1:8333` for SeaweedFS); default: AWS, or
    /// AWS_ENDPOINT_URL.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// Remove the bucket's objects no row refers to (orphans of crashed writes, blocks
    /// whose deletion committed) that are older than --grace, print what was removed and
    /// exit: 0 if every block row has its object, 1 if not. Safe while mounts are active.
    #[arg(long)]
    gc: bool,
    /// With --gc: never remove an object younger than this many seconds (longer than any
    /// write transaction takes).
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    grace: u64,
    /// With --gc: remove nothing, report what would be removed.
    #[arg(long)]
    dry_run: bool,
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
    if args.blocks == "pg" {
        if args.gc {
            common::fail(
                "--gc is for blocks in a bucket (--blocks s3://BUCKET); blocks in pg are deleted with their rows",
            );
        }
        let fs = rt
            .block_on(PgFs::open_with_store(&args.db, opts, PgBlockStore))
            .unwrap_or_else(|e| common::fail(e));
        return serve(fs, &args, rt, None);
    }
    let mut s3 = S3Options::from_url(&args.blocks).unwrap_or_else(|e| common::fail(format!("--blocks: {e}")));
    s3.endpoint = args.s3_endpoint.clone();
    let store = S3BlockStore::new(&s3).unwrap_or_else(|e| common::fail(format!("--blocks {}: {e}", args.blocks)));
    // The error names the bucket and says what failed, on one line.
    rt.block_on(store.check()).unwrap_or_else(|e| common::fail(e));
    if args.gc {
        let grace = std::time::Duration::from_secs(args.grace);
        let report = rt
            .block_on(store.gc(&args.db, grace, args.dry_run))
            .unwrap_or_else(|e| common::fail(format!("gc: {e}")));
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
    let fs = rt
        .block_on(PgFs::open_with_store(&args.db, opts, store))
        .unwrap_or_else(|e| common::fail(e));
    let missing = if args.fsck {
        let g = rt
            .block_on(fs.store().gc(&args.db, std::time::Duration::MAX, true))
            .unwrap_or_else(|e| common::fail(format!("fsck: {e}")));
        Some(g.missing)
    } else {
        None
    };
    serve(fs, &args, rt, missing)
}

/// Runs `--fsck` (with `missing`: block rows whose object the bucket lacks) or mounts.
fn serve<S: BlockStore>(fs: PgFs<S>, args: &Args, rt: tokio::runtime::Runtime, missing: Option<Vec<i64>>) {
    if args.fsck {
        let report = rt
            .block_on(fs.fsck())
            .unwrap_or_else(|e| common::fail(format!("fsck: {e}")));
        print!("{report}");
        let missing = missing.unwrap_or_default();
        for id in &missing {
            println!("block {id}: its object is missing from the bucket");
        }
        std::process::exit(if report.is_clean() && missing.is_empty() { 0 } else { 1 });
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
