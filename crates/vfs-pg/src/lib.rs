//! `vfs-pg`: a [`VirtualFs`](vfs_core::VirtualFs) stored in PostgreSQL, as seed 004 (doc/LESSONS.md#seed-004)'s
//! Pgfs: every inode, directory entry, symlink target and extended attribute is a row,
//! file data is kept in fixed-size immutable blocks shared by reference, and every
//! operation is one transaction.
//!
//! Invariant of the crate: the database is the only state that outlives an operation.
//! Each operation that changes anything runs as one `SERIALIZABLE` transaction (retried a
//! bounded number of times on serialization failures), so the tree seen by any number of
//! mounts of one database is always the result of whole operations; an expected refusal
//! is an errno and changes nothing, an unexpected failure is `EIO` and changes nothing.
//! In memory a mount keeps only its open file handles (and which inodes they keep
//! alive after their last name is gone).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vfs_pg::OpenError> {
//! use vfs_pg::{PgFs, PgOptions};
//! // The mount root lists modules; module 1 has an empty verset 1 in a fresh database.
//! let fs = PgFs::open("host=/run/postgresql dbname=files", PgOptions::default()).await?;
//! # Ok(()) }
//! ```
//!
//! Run against a private server (feature `testing`: `initdb` and `pg_ctl` from the
//! `postgresql` package, in a temporary directory, stopped on drop):
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use std::ffi::OsStr;
//! use vfs_core::{Ino, Name, RequestCtx, VirtualFs};
//! use vfs_pg::PgOptions;
//! use vfs_pg::testing::TestServer;
//!
//! let server = TestServer::start().expect("a private PostgreSQL server");
//! let fs = server.open_fs(PgOptions::default()).expect("a fresh database");
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
//! let root = rt.block_on(fs.getattr(&RequestCtx::ROOT, Ino::ROOT, None)).expect("root");
//! assert_eq!(root.kind, vfs_core::FileType::Directory);
//! # }
//! ```
#![warn(missing_docs)]

mod blocks;
mod changes;
mod data;
mod db;
pub mod fsck;
mod ops;
#[cfg(feature = "s3")]
pub mod s3;
mod schema;
#[cfg(feature = "testing")]
pub mod testing;
mod tree;
mod verset;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use vfs_core::fh_table::FhTable;
use vfs_core::lock_order::{Locked, Unlocked};
use vfs_core::{AccessMode, Ino, Invalidator, VfsError, VfsResult};

pub use blocks::{BlockStore, PgBlockStore, StoreError};
#[cfg(feature = "s3")]
pub use s3::{GcReport, S3BlockStore, S3Options};
pub use schema::{OpenError, SCHEMA_VERSION};
pub use verset::Command;

use db::IoRuntime;

/// The block size when none is given: 64 KiB. A FUSE read or write of 128 KiB is two
/// whole blocks (no read-modify-write), a copy-on-write of one changed byte in a shared
/// file copies at most 64 KiB, and a 1 GiB file is 16,384 block rows.
pub const DEFAULT_BLOCK_SIZE: u32 = 64 * 1024;

/// The synthetic control file in the mount root (`echo "cpverset 1" > MOUNT/ctl`).
pub const CTL_INO: Ino = Ino(2);
/// Its name.
pub const CTL_NAME: &str = "ctl";

/// What part of the database a [`PgFs`] serves as its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Root {
    /// The whole database: the root lists modules and holds the control file `ctl`.
    #[default]
    Modules,
    /// One verset's tree as the root (inode numbers are the database's, except that the
    /// verset's root is [`Ino::ROOT`]).
    Verset {
        /// Module number.
        module: i64,
        /// Verset number.
        verset: i64,
    },
}

/// How to open a database.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Size of file blocks in bytes (1 KiB to 16 MiB), recorded when the database is
    /// created; a database that exists keeps the block size it was made with.
    pub block_size: u32,
    /// Most connections this mount holds.
    pub pool_size: usize,
    /// How long an operation waits for a connection or for the server to answer a
    /// connection attempt before it answers `EIO`.
    pub connect_timeout: Duration,
    /// What the root shows.
    pub root: Root,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            block_size: DEFAULT_BLOCK_SIZE,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            root: Root::Modules,
        }
    }
}

/// The key of a database inode in the handle table (the check that a handle belongs to
/// the inode asked; database inode numbers are positive).
fn handle_ino(ino: i64) -> Ino {
    Ino(ino as u64)
}

/// The lock-order token of a `PgFs` call: its handle table's `Map` level is the only
/// ordered (`vfs_core::lock_order`) lock vfs-pg takes, and its guards never outlive one
/// table call, so no ordered lock is held where this is called.
fn entry_token() -> Locked<Unlocked> {
    // SAFETY: see above.
    unsafe { Locked::new() }
}

/// An open file handle (its inode is the handle table's key).
#[derive(Clone, Copy, Debug)]
struct OpenFile {
    mode: AccessMode,
    append: bool,
}

/// A filesystem stored in a PostgreSQL database. See the crate documentation.
pub struct PgFs<S: BlockStore = PgBlockStore> {
    pool: Pool,
    store: S,
    block_size: u32,
    source_id: String,
    /// The database inode shown as [`Ino::ROOT`] (1 for [`Root::Modules`]).
    root: i64,
    modules: bool,
    handles: FhTable<OpenFile>,
    /// Open handles per inode: an inode whose last name goes while it is open here
    /// stays (with no links) until its last handle here is released.
    open: Mutex<HashMap<i64, u32>>,
    /// When this mount opened the database: the control file's times.
    opened_at: vfs_core::Timestamp,
    /// This mount's name in change announcements (its own are ignored when they come back).
    mount_id: u64,
    /// How to connect the change listener.
    cfg: tokio_postgres::Config,
    /// Set once the change listener runs ([`PgFs::set_invalidator`]).
    listening: OnceLock<()>,
    // Dropped last: every connection's driver runs on it.
    io: IoRuntime,
}

impl<S: BlockStore> std::fmt::Debug for PgFs<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFs")
            .field("source_id", &self.source_id)
            .field("store", &self.store.name())
            .field("block_size", &self.block_size)
            .finish_non_exhaustive()
    }
}

impl PgFs<PgBlockStore> {
    /// Opens (creating the schema on first use) the database at `url`, a libpq
    /// connection string (`postgresql://user@host:port/db` or `host=/run/postgresql
    /// dbname=files`), with blocks stored in the database itself.
    pub async fn open(url: &str, opts: PgOptions) -> Result<Self, OpenError> {
        PgFs::open_with_store(url, opts, PgBlockStore).await
    }
}

impl<S: BlockStore> PgFs<S> {
    /// Opens the database at `url` with blocks kept by `store`.
    pub async fn open_with_store(url: &str, opts: PgOptions, store: S) -> Result<Self, OpenError> {
        if !(1024..=16 << 20).contains(&opts.block_size) {
            return Err(OpenError::Config(format!(
                "block size {} is outside 1 KiB to 16 MiB",
                opts.block_size
            )));
        }
        let mut cfg = db::parse_url(url).map_err(OpenError::Config)?;
        cfg.connect_timeout(opts.connect_timeout);
        cfg.application_name("vfs-pg");
        let io = IoRuntime::new().map_err(|e| OpenError::Config(format!("cannot start the I/O runtime: {e}")))?;
        let listen_cfg = cfg.clone();
        let pool = db::pool(cfg, &io, opts.pool_size.max(1), opts.connect_timeout).map_err(OpenError::Config)?;
        let facts = schema::prepare(&pool, opts.block_size, &store.location()).await?;
        let (root, view) = match opts.root {
            Root::Modules => (verset::MOUNT_ROOT, "modules".to_string()),
            Root::Verset { module, verset } => {
                let client = pool.get().await.map_err(|e| OpenError::Connect(e.to_string()))?;
                let found = verset::verset_root(&client, module, verset).await?;
                let (_, root) = found.ok_or(OpenError::NoVerset { module, verset })?;
                (root, format!("{module}/{verset}"))
            }
        };
        let source_id = format!("vfs-pg:{}:{}:{}", facts.fs_id, store.name(), view);
        Ok(PgFs {
            pool,
            store,
            block_size: facts.block_size,
            source_id,
            root,
            modules: opts.root == Root::Modules,
            handles: FhTable::new(),
            open: Mutex::new(HashMap::new()),
            opened_at: vfs_core::Timestamp::now(),
            mount_id: new_mount_id(),
            cfg: listen_cfg,
            listening: OnceLock::new(),
            io,
        })
    }

    /// The block store this filesystem keeps its file bytes in.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The block size of this database.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Makes the changes other mounts of this database commit reach `inv` (a FUSE mount's
    /// invalidator, `vfs_fuse::Mount::invalidator`): starts a listener on a connection of
    /// its own (`LISTEN vfs_pg`) whose notices, batched through a
    /// [`Debouncer`](vfs_core::notify::Debouncer), become `inval_entry` and `inval_inode`
    /// calls, typically within tens of milliseconds of the other mount's commit. Only the
    /// first call has an effect; the listener stops when the filesystem is dropped. This
    /// mount announces its own changes whether or not it listens.
    pub fn set_invalidator(&self, inv: Arc<dyn Invalidator>) {
        if self.listening.set(()).is_err() {
            tracing::debug!("vfs-pg: set_invalidator called again; the first invalidator stays");
            return;
        }
        let map = changes::InoMap { root: self.root };
        changes::start(self.io.handle(), self.cfg.clone(), self.mount_id, map, inv);
    }

    /// Announces `notes` to the other mounts when the transaction `tx` commits.
    pub(crate) async fn announce<C: deadpool_postgres::GenericClient>(
        &self,
        tx: &C,
        notes: &[changes::Note],
    ) -> db::OpResult<()> {
        changes::announce(tx, self.mount_id, notes).await
    }

    /// Runs a control-file command (what writing it to `MOUNT/ctl` does). Returns the new
    /// verset's number for `cpverset`.
    pub async fn command(&self, cmd: Command) -> VfsResult<i64> {
        let now = vfs_core::Timestamp::now();
        match cmd {
            Command::CpVerset { module, verset } => {
                db::in_txn!(self, "cpverset", |tx| {
                    let (next, module_dir) = verset::cpverset(&tx, module, verset, now).await?;
                    let notes = [
                        changes::Note::Entry(module_dir, next.to_string().into_bytes()),
                        changes::Note::Inode(module_dir),
                    ];
                    self.announce(&tx, &notes).await?;
                    next
                })
            }
        }
    }

    /// Checks the consistency of the whole database (see [`fsck`]).
    pub async fn fsck(&self) -> VfsResult<fsck::Report> {
        fsck::check(&self.pool, self.store.fsck_rules())
            .await
            .map_err(|e| e.into_vfs("fsck"))
    }

    /// The database inode for `ino` as the caller sees it.
    fn db_ino(&self, ino: Ino) -> VfsResult<i64> {
        if ino == Ino::ROOT {
            return Ok(self.root);
        }
        let n = i64::try_from(ino.0).map_err(|_| VfsError::Stale)?;
        if n == self.root {
            // The served root has one number only: ROOT.
            return Err(VfsError::Stale);
        }
        Ok(n)
    }

    /// The number the caller sees for database inode `n`.
    fn vfs_ino(&self, n: i64) -> Ino {
        if n == self.root { Ino::ROOT } else { Ino(n as u64) }
    }

    fn is_ctl(&self, ino: Ino) -> bool {
        self.modules && ino == CTL_INO
    }

    fn handle(&self, ino: i64, fh: vfs_core::Fh) -> VfsResult<OpenFile> {
        self.handles.get(&mut entry_token(), handle_ino(ino), fh)
    }

    /// Releases `fh`, which must be a handle of `ino` (`BadHandle` otherwise).
    fn remove_handle(&self, ino: i64, fh: vfs_core::Fh) -> VfsResult<OpenFile> {
        self.handles.remove(&mut entry_token(), handle_ino(ino), fh)
    }

    fn is_open(&self, ino: i64) -> bool {
        self.open
            .lock()
            .map(|m| m.get(&ino).copied().unwrap_or(0) > 0)
            .unwrap_or(true)
    }

    fn add_handle(&self, ino: i64, flags: vfs_core::OpenFlags) -> vfs_core::Fh {
        if let Ok(mut m) = self.open.lock() {
            *m.entry(ino).or_insert(0) += 1;
        }
        let of = OpenFile {
            mode: flags.access(),
            append: flags.append(),
        };
        self.handles.insert(&mut entry_token(), handle_ino(ino), of)
    }

    /// Drops one handle of `ino`; true if it was the last one here.
    fn drop_handle(&self, ino: i64) -> bool {
        match self.open.lock() {
            Ok(mut m) => match m.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    m.remove(&ino);
                    true
                }
                None => true,
            },
            Err(_) => false,
        }
    }
}

/// A number that tells this mount's announcements from every other mount's.
fn new_mount_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let pid = u64::from(std::process::id());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (nanos ^ (pid << 40) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1
}
