//! The schema and its migrations, embedded in the crate.
//!
//! Invariant: a database is used only if its `vfs_meta.schema_version` is one this build
//! knows. An empty database gets every migration in order, then the initial tree (the
//! mount root, module 1 and its empty verset 1) and a fresh `fs_id`, all in one
//! transaction under an advisory lock, so two mounts starting on one empty database
//! create it once. A database of an older version gets the missing migrations; one of a
//! newer version (or one whose version cannot be read) is refused with one line.

use deadpool_postgres::Pool;
use vfs_core::{RequestCtx, Timestamp};

use crate::db::{OpError, exec, row};
use crate::verset;

/// The schema version this build creates and speaks.
pub const SCHEMA_VERSION: i64 = 2;

/// Every migration, `(version it brings the database to, SQL)`, in order.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("sql/001_init.sql")),
    (2, include_str!("sql/002_block_store.sql")),
];

/// An arbitrary constant: the advisory lock every opener takes while it checks or
/// creates the schema.
const SCHEMA_LOCK: i64 = 0x7666_735f_7067_0001;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL does not parse, or the pool cannot be built.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// The database was made by another schema version.
    #[error(
        "the database has vfs-pg schema version {found}, this build knows versions up to {known}: use a vfs-pg that matches it"
    )]
    Version {
        /// What the database says.
        found: String,
        /// The newest version this build knows.
        known: i64,
    },
    /// The database failed while the schema was checked or created.
    #[error("database error while preparing the schema: {0}")]
    Db(String),
    /// The database keeps its blocks in another store than the one given.
    #[error("the database keeps its file blocks in {found}, not in {given}: open it with --blocks {found}")]
    Store {
        /// Where the database says its blocks are.
        found: String,
        /// Where the opener was told they are.
        given: String,
    },
    /// The requested verset does not exist.
    #[error("module {module} has no verset {verset}")]
    NoVerset {
        /// Module number.
        module: i64,
        /// Verset number.
        verset: i64,
    },
}

impl From<OpError> for OpenError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Pool(e) => OpenError::Connect(e),
            OpError::Db(e) => OpenError::Db(db_text(&e)),
            other => OpenError::Db(format!("{other:?}")),
        }
    }
}

/// A database error with the server's own message when there is one.
pub(crate) fn db_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// What an opener learns about the database.
pub(crate) struct Facts {
    pub(crate) fs_id: String,
    /// The block size of this database (fixed when it was created).
    pub(crate) block_size: u32,
}

/// Checks, migrates or creates the schema; returns the filesystem's identity.
/// `block_size` is recorded if the database is new; an existing database keeps its own.
/// `blocks` names the block store ([`crate::BlockStore::location`]): recorded by the
/// first opener (a database from before it was recorded keeps its blocks in `pg`),
/// refused if the database names another.
pub(crate) async fn prepare(pool: &Pool, block_size: u32, blocks: &str) -> Result<Facts, OpenError> {
    let mut client = pool.get().await.map_err(|e| OpenError::Connect(e.to_string()))?;
    let tx = client.transaction().await.map_err(OpError::Db)?;
    exec(&tx, "SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).await?;
    let has_meta = row(&tx, "SELECT to_regclass('vfs_meta') IS NOT NULL", &[])
        .await?
        .map(|r| r.try_get::<_, bool>(0))
        .transpose()
        .map_err(OpError::Db)?
        .unwrap_or(false);
    let found: i64 = if has_meta {
        let v: Option<String> = row(&tx, "SELECT value FROM vfs_meta WHERE key = 'schema_version'", &[])
            .await?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(OpError::Db)?;
        let v = v.unwrap_or_else(|| "(none)".into());
        match v.trim().parse::<i64>() {
            Ok(n) if (1..=SCHEMA_VERSION).contains(&n) => n,
            _ => {
                return Err(OpenError::Version {
                    found: v,
                    known: SCHEMA_VERSION,
                });
            }
        }
    } else {
        0
    };
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await.map_err(OpError::Db)?;
        tracing::info!(version, "vfs-pg: schema migrated");
    }
    if found == 0 {
        create_tree(&tx, block_size).await?;
    }
    if found < SCHEMA_VERSION {
        let v = SCHEMA_VERSION.to_string();
        exec(
            &tx,
            "INSERT INTO vfs_meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&v],
        )
        .await?;
    }
    let fs_id: String = row(&tx, "SELECT value FROM vfs_meta WHERE key = 'fs_id'", &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(OpError::Db)?
        .ok_or_else(|| OpenError::Db("vfs_meta has no fs_id".into()))?;
    let stored: Option<String> = row(&tx, "SELECT value FROM vfs_meta WHERE key = 'block_size'", &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(OpError::Db)?;
    let block_size = match stored.as_deref().map(str::parse::<u32>) {
        Some(Ok(b)) if (1024..=16 << 20).contains(&b) => b,
        other => return Err(OpenError::Db(format!("vfs_meta has no valid block_size ({other:?})"))),
    };
    let recorded: Option<String> = row(&tx, "SELECT value FROM vfs_meta WHERE key = 'blocks'", &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(OpError::Db)?;
    match recorded {
        Some(found) if found != blocks => {
            return Err(OpenError::Store {
                found,
                given: blocks.to_string(),
            });
        }
        Some(_) => {}
        None => {
            // A database that had blocks before the store was recorded kept them in pg.
            let any: bool = row(&tx, "SELECT EXISTS (SELECT 1 FROM block)", &[])
                .await?
                .map(|r| r.try_get(0))
                .transpose()
                .map_err(OpError::Db)?
                .unwrap_or(false);
            if any && blocks != "pg" {
                return Err(OpenError::Store {
                    found: "pg".into(),
                    given: blocks.to_string(),
                });
            }
            exec(
                &tx,
                "INSERT INTO vfs_meta (key, value) VALUES ('blocks', $1)",
                &[&blocks],
            )
            .await?;
        }
    }
    tx.commit().await.map_err(OpError::Db)?;
    Ok(Facts { fs_id, block_size })
}

/// The tree of a fresh database: the mount root (inode 1), module 1, its empty verset 1.
async fn create_tree(tx: &deadpool_postgres::Transaction<'_>, block_size: u32) -> Result<(), OpenError> {
    let now = Timestamp::now();
    let bs = block_size.to_string();
    exec(
        tx,
        "INSERT INTO vfs_meta (key, value) VALUES
           ('fs_id', md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text)),
           ('created_at', clock_timestamp()::text),
           ('block_size', $1)",
        &[&bs],
    )
    .await?;
    exec(
        tx,
        "INSERT INTO inode (ino, verset, kind, perm, nlink, uid, gid, size, rdev,
                            atime_s, atime_ns, mtime_s, mtime_ns, ctime_s, ctime_ns)
         VALUES (1, NULL, 2, 493, 2, 0, 0, 4096, 0, $1, $2, $1, $2, $1, $2)",
        &[&now.secs, &(now.nsecs as i32)],
    )
    .await?;
    let module = verset::create_module(tx, 1, &RequestCtx::ROOT, 0o755, now).await?;
    verset::create_verset(tx, 1, module, 1, &RequestCtx::ROOT, 0o755, now).await?;
    Ok(())
}
