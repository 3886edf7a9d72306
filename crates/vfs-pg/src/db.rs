//! The connection layer: a private I/O runtime that owns every connection, the pool,
//! errors, and the one-transaction-per-operation runner with bounded retries.
//!
//! Invariant: every connection's socket and driver task live on [`IoRuntime`], never on
//! the caller's runtime, so a pooled connection outlives whichever runtime (a FUSE
//! worker, a test thread's current-thread runtime) first asked for it. Every operation
//! that changes anything runs as one `SERIALIZABLE` transaction through [`in_txn!`]: it
//! commits whole or not at all; a serialization failure or deadlock is retried a bounded
//! number of times ([`MAX_ATTEMPTS`]) with a growing pause; an expected answer
//! ([`OpError::Fs`]) rolls back and is returned as it is; anything else rolls back and
//! is `EIO`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, Row};
use vfs_core::{Attr, FileType, Ino, Timestamp, VfsError};

/// How many times an operation is tried when the database reports a serialization
/// failure or a deadlock before it answers `EIO`.
pub(crate) const MAX_ATTEMPTS: u32 = 12;

/// Why an operation did not complete, before it is turned into a [`VfsError`].
#[derive(Debug)]
pub(crate) enum OpError {
    /// An expected answer (`ENOENT`, `EEXIST`, ...): roll back, answer it.
    Fs(VfsError),
    /// The database said no.
    Db(tokio_postgres::Error),
    /// The block store failed.
    Store(crate::blocks::StoreError),
    /// No connection could be had.
    Pool(String),
}

impl From<VfsError> for OpError {
    fn from(e: VfsError) -> Self {
        OpError::Fs(e)
    }
}

impl From<tokio_postgres::Error> for OpError {
    fn from(e: tokio_postgres::Error) -> Self {
        OpError::Db(e)
    }
}

impl From<crate::blocks::StoreError> for OpError {
    fn from(e: crate::blocks::StoreError) -> Self {
        match e {
            crate::blocks::StoreError::Db(e) => OpError::Db(e),
            other => OpError::Store(other),
        }
    }
}

impl OpError {
    /// Whether trying the whole transaction again may succeed.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            OpError::Db(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
            ),
            _ => false,
        }
    }

    /// The answer given to the caller: expected errors as they are, the rest `EIO`.
    pub(crate) fn into_vfs(self, op: &'static str) -> VfsError {
        match self {
            OpError::Fs(e) => e,
            OpError::Db(e) => {
                let text = crate::schema::db_text(&e);
                tracing::warn!(op, error = %text, "vfs-pg: database error, answering EIO");
                VfsError::Io(format!("{op}: database: {text}"))
            }
            OpError::Store(e) => {
                tracing::warn!(op, error = %e, "vfs-pg: block store error, answering EIO");
                VfsError::Io(format!("{op}: block store: {e}"))
            }
            OpError::Pool(e) => {
                tracing::warn!(op, error = %e, "vfs-pg: no database connection, answering EIO");
                VfsError::Io(format!("{op}: no database connection: {e}"))
            }
        }
    }
}

/// Result of one step of an operation.
pub(crate) type OpResult<T> = Result<T, OpError>;

/// A tokio runtime of our own that drives every connection. Shut down without blocking
/// when dropped, so dropping a `PgFs` inside async code is fine.
pub(crate) struct IoRuntime {
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl IoRuntime {
    pub(crate) fn new() -> std::io::Result<IoRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vfs-pg-io")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        Ok(IoRuntime { rt: Some(rt), handle })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Sleeps for `d` on the I/O runtime's clock (the caller's runtime may have no timer).
    pub(crate) async fn sleep(&self, d: Duration) {
        let _ = self.handle.spawn(tokio::time::sleep(d)).await;
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Connects on the I/O runtime: the socket is registered with its reactor and the
/// connection's driver task runs there.
struct SpawnConnect {
    handle: tokio::runtime::Handle,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl deadpool_postgres::Connect for SpawnConnect {
    fn connect(
        &self,
        pg_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        let cfg = pg_config.clone();
        let handle = self.handle.clone();
        Box::pin(async move {
            let spawned = handle.spawn(connect_here(cfg.clone()));
            match spawned.await {
                Ok(r) => r,
                // The I/O runtime is shutting down (the filesystem is being dropped):
                // connect on the caller's runtime so the caller gets a real answer.
                Err(_) => connect_here(cfg).await,
            }
        })
    }
}

async fn connect_here(cfg: Config) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    let (client, conn) = cfg.connect(NoTls).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "vfs-pg: connection ended");
        }
    });
    Ok((client, task))
}

/// Parses a libpq connection string (`postgresql://user@host:port/db` or
/// `host=/run/postgresql dbname=...`).
pub(crate) fn parse_url(url: &str) -> Result<Config, String> {
    url.parse::<Config>()
        .map_err(|e| format!("cannot parse the database URL {url:?}: {e}"))
}

/// A pool of at most `size` connections, each made on `io`.
pub(crate) fn pool(cfg: Config, io: &IoRuntime, size: usize, timeout: Duration) -> Result<Pool, String> {
    let mgr = Manager::from_connect(
        cfg,
        SpawnConnect {
            handle: io.handle().clone(),
        },
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        })
        .build()
        .map_err(|e| format!("cannot build the connection pool: {e}"))
}

/// Runs `$body` (an expression using the transaction `$tx` and `?` on [`OpError`]s) in
/// one `SERIALIZABLE` transaction of `$fs`'s pool, retrying it whole on serialization
/// failures, and evaluates to `VfsResult<T>`. `$op` names the operation in diagnostics.
macro_rules! in_txn {
    ($fs:expr, $op:literal, |$tx:ident| $body:expr) => {{
        let fs = &$fs;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let outcome: $crate::db::OpResult<_> = async {
                let mut client = fs
                    .pool
                    .get()
                    .await
                    .map_err(|e| $crate::db::OpError::Pool(e.to_string()))?;
                let $tx = client
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::Serializable)
                    .start()
                    .await?;
                #[allow(clippy::redundant_closure_call)]
                let value = $body;
                $tx.commit().await?;
                Ok(value)
            }
            .await;
            match outcome {
                Ok(v) => break Ok(v),
                Err(e) if e.retryable() && attempt < $crate::db::MAX_ATTEMPTS => {
                    tracing::trace!(op = $op, attempt, "vfs-pg: serialization failure, retrying");
                    fs.io.sleep($crate::db::backoff(attempt)).await;
                }
                Err(e) => break Err(e.into_vfs($op)),
            }
        }
    }};
}
pub(crate) use in_txn;

/// Runs `$body` in one `REPEATABLE READ READ ONLY` transaction: one snapshot for every
/// statement, never a serialization failure. Evaluates to `VfsResult<T>`.
macro_rules! in_snapshot {
    ($fs:expr, $op:literal, |$tx:ident| $body:expr) => {{
        let fs = &$fs;
        let outcome: $crate::db::OpResult<_> = async {
            let mut client = fs
                .pool
                .get()
                .await
                .map_err(|e| $crate::db::OpError::Pool(e.to_string()))?;
            let $tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let value = $body;
            $tx.commit().await?;
            Ok(value)
        }
        .await;
        outcome.map_err(|e| e.into_vfs($op))
    }};
}
pub(crate) use in_snapshot;

/// Runs `$body` with a pooled connection `$c` outside any explicit transaction (each
/// statement is its own). Evaluates to `VfsResult<T>`.
macro_rules! with_client {
    ($fs:expr, $op:literal, |$c:ident| $body:expr) => {{
        let fs = &$fs;
        let outcome: $crate::db::OpResult<_> = async {
            let $c = fs
                .pool
                .get()
                .await
                .map_err(|e| $crate::db::OpError::Pool(e.to_string()))?;
            Ok($body)
        }
        .await;
        outcome.map_err(|e| e.into_vfs($op))
    }};
}
pub(crate) use with_client;

/// The pause before attempt `attempt + 1`: 1, 2, 4 ... ms, at most 64 ms, with jitter so
/// two transactions that collided do not collide again in step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    static JITTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let base = 1u64 << attempt.min(6);
    let x = JITTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    let jitter = (x >> 33) % (base * 1000);
    Duration::from_micros(base * 500 + jitter)
}

/// The columns [`attr_from_row`] reads, in its order.
pub(crate) const ATTR_COLS: &str = "i.ino, i.kind, i.perm, i.nlink, i.uid, i.gid, i.size, i.rdev, i.atime_s, i.atime_ns, i.mtime_s, i.mtime_ns, i.ctime_s, i.ctime_ns";

pub(crate) fn kind_code(kind: FileType) -> i16 {
    i16::from(kind.code())
}

pub(crate) fn kind_from_code(code: i16) -> OpResult<FileType> {
    u8::try_from(code)
        .ok()
        .and_then(FileType::from_code)
        .ok_or_else(|| OpError::Fs(VfsError::Io(format!("inode row with unknown kind {code}"))))
}

fn ts(s: i64, ns: i32) -> Timestamp {
    Timestamp::new(s, u32::try_from(ns).unwrap_or(0))
}

/// An inode row (columns [`ATTR_COLS`] from `start`) as attributes, its number `ino`
/// as the caller presents it, `blksize` the block size.
pub(crate) fn attr_from_row(row: &Row, start: usize, ino: Ino, blksize: u32) -> OpResult<Attr> {
    let g = |i: usize| -> OpResult<i64> { row.try_get::<_, i64>(start + i).map_err(OpError::Db) };
    let kind = kind_from_code(row.try_get::<_, i16>(start + 1)?)?;
    let perm: i32 = row.try_get(start + 2)?;
    let size = g(6)?;
    let ns = |i: usize| -> OpResult<i32> { row.try_get::<_, i32>(start + i).map_err(OpError::Db) };
    let size = u64::try_from(size).unwrap_or(0);
    Ok(Attr {
        ino,
        kind,
        perm: (perm & 0o7777) as u16,
        nlink: u32::try_from(g(3)?).unwrap_or(u32::MAX),
        uid: g(4)? as u32,
        gid: g(5)? as u32,
        size,
        blocks: if kind == FileType::Regular {
            size.div_ceil(512)
        } else {
            0
        },
        blksize,
        rdev: g(7)? as u64,
        atime: ts(g(8)?, ns(9)?),
        mtime: ts(g(10)?, ns(11)?),
        ctime: ts(g(12)?, ns(13)?),
    })
}

/// Runs `sql` (prepared once per connection, then cached) and returns its rows.
pub(crate) async fn rows<C: deadpool_postgres::GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> OpResult<Vec<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query(&st, params).await?)
}

/// Runs `sql` and returns at most one row.
pub(crate) async fn row<C: deadpool_postgres::GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> OpResult<Option<Row>> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&st, params).await?)
}

/// Runs `sql` and returns the number of rows it changed.
pub(crate) async fn exec<C: deadpool_postgres::GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> OpResult<u64> {
    let st = c.prepare_cached(sql).await?;
    Ok(c.execute(&st, params).await?)
}
