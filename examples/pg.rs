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

use std::path::PathBuf;

use clap::Parser;
use vfs_cli::pg::PgArgs;
use vfs_cli::serve::Launch;

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
    /// Check the database's consistency (entries, link counts, cycles, blocks), print
    /// the report and exit: 0 if clean, 1 if not. Mounts nothing.
    #[arg(long)]
    fsck: bool,
    /// Remove the bucket's objects no row refers to (orphans of crashed writes, blocks
    /// whose deletion committed) that are older than --grace, print what was removed and
    /// exit: 0 if every block row has its object, 1 if not. Safe while mounts are active.
    /// Needs --blocks s3://BUCKET. Mounts nothing.
    #[arg(long)]
    gc: bool,
    #[command(flatten)]
    opts: PgArgs,
}

fn main() {
    vfs_cli::log::init(0, None).unwrap_or_else(|e| vfs_cli::fail(e));
    let args = Args::parse();
    if args.fsck {
        vfs_cli::pg::fsck(&args.db, &args.opts);
    }
    if args.gc {
        vfs_cli::pg::gc(&args.db, &args.opts);
    }
    let Some(mountpoint) = args.mountpoint.as_deref() else {
        vfs_cli::fail("a MOUNTPOINT is needed (or --fsck)");
    };
    vfs_cli::pg::run(&args.db, mountpoint, &args.opts, &Launch::foreground("pg"));
}
