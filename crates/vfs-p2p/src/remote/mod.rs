//! The far side: [`RemoteFs`], a [`VirtualFs`](vfs_core::VirtualFs) whose tree lives on a peer.
//!
//! Invariants:
//!
//! - **Write-through, in order, acknowledged.** Every change is sent to the owner and
//!   returns only with the owner's answer; a write that was not acknowledged is an error
//!   for the writer (`EIO` when the link died or the owner did not answer in time), never
//!   a success. Writes (and truncations, `fallocate`) to one inode are issued through an
//!   [`OpBarrier`]: each waits for the acknowledgement of the one issued before it, so
//!   they apply in issue order; reads and `getattr` wait for exactly the writes issued
//!   before them (seed 001 (doc/LESSONS.md#seed-001)). `fsync` returns when the owner's backend says the data is
//!   durable.
//! - **Caches that cannot go stale by themselves.** Attributes and listings
//!   (`cache`) and file blocks (`blocks`) are kept until invalidated: by this side's
//!   own changes at once, by the owner's change notifications when they arrive, and
//!   entirely when the link is made again (changes may have been missed). Nothing is
//!   cached across an in-flight write; a missing name is never cached.
//! - **Rename materializes on the owner**, whatever this side knew of the source: the
//!   names travel, not a cached view, so a temp this side never saw is renamed there too.
//! - **Bounded waits.** Every operation ends within the link's request timeout while the
//!   link is up, and within [`RemoteConfig::down_wait`] when it is down (`EIO`).
//! - **The kernel hears of remote changes** through the [`Invalidator`] set with
//!   [`RemoteFs::set_invalidator`] (a mount's queued invalidator): entries by name,
//!   inodes with open handles by attributes only.

//!
//! Modules, by concern: `session` (the current link, typed calls), `reconnect` (making
//! the link again), `notes` (applying the owner's notifications), `read` (block reads
//! and readahead), `ordering` (writes in issue order), `vfs` (the `VirtualFs` impl);
//! `cache` and `blocks` hold what is cached.

mod blocks;
mod cache;
mod notes;
mod ordering;
mod read;
mod reconnect;
mod session;
mod vfs;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;
use vfs_core::barrier::OpBarrier;
use vfs_core::fh_table::FhTable;
use vfs_core::lock_order::{Locked, Unlocked};
use vfs_core::{Attr, Fh, Ino, Invalidator, Name, NoInvalidator, OpenFlags, VfsError, VfsResult};

pub use session::ConnectError;

use self::blocks::Blocks;
use self::cache::MetaCache;
use self::session::{Hello, Session};
use crate::identity::PublicKey;
use crate::rpc::LinkConfig;
use crate::transport::Transport;
use crate::wire::MAX_IO;

/// Knobs of a [`RemoteFs`]. `Default` gives the documented values.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// Timeouts of the link: a call waits at most `request_timeout` (30 s) for its answer;
    /// a link silent for `dead_after` (10 s; pinged every 2 s) is dead.
    pub link: LinkConfig,
    /// How long an operation issued while the link is down waits for it to come back
    /// before answering `EIO` (10 s).
    pub down_wait: Duration,
    /// First and longest wait between reconnection attempts (100 ms, doubling to 5 s).
    pub backoff_min: Duration,
    /// See `backoff_min`.
    pub backoff_max: Duration,
    /// Size of a cached block, the unit of on-demand reads (1 MiB).
    pub block_size: u32,
    /// Blocks fetched ahead of a sequential reader (4: 4 MiB in flight, enough for a
    /// 1 Gbit/s link with 30 ms of round trip; more only queued bytes ahead of a `stat`
    /// in the measurements of doc/BENCHMARKS.md).
    pub readahead: u32,
    /// Bytes of file data kept (256 MiB).
    pub cache_bytes: usize,
    /// How the owner's uids and gids appear here ([`IdMap::None`]: as the owner reports
    /// them; the example's `mount` defaults to [`IdMap::User`] with the mounting user).
    pub idmap: IdMap,
}

/// How owners and groups from the owner appear on the far side (sshfs's `idmap`).
///
/// The owner runs every request of this peer as one identity of its own choosing, which
/// the far side does not know; its numeric ids mean nothing here. With
/// [`IdMap::User`], every file shows as owned by this `uid:gid` (so the far kernel's
/// `default_permissions` checks the mode bits for the mounting user as the owner, and a
/// non-root user can work on a mount they made); a `chown` to exactly these ids is
/// taken as "to me" and not sent (it is a no-op on the owner, whose files are the
/// identity's already). The owner checks every request again as its identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdMap {
    /// Ids as the owner reports them.
    #[default]
    None,
    /// Every file appears owned by this user and group.
    User {
        /// Shown as every file's owner.
        uid: u32,
        /// Shown as every file's group.
        gid: u32,
    },
}

impl IdMap {
    /// The ids every file is shown with, if any.
    pub fn shown(self) -> Option<(u32, u32)> {
        match self {
            IdMap::None => None,
            IdMap::User { uid, gid } => Some((uid, gid)),
        }
    }
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            link: LinkConfig::default(),
            down_wait: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            block_size: 1 << 20,
            readahead: 4,
            cache_bytes: 256 << 20,
            idmap: IdMap::None,
        }
    }
}

/// An open handle of this side.
struct Handle {
    ino: Ino,
    flags: OpenFlags,
    /// Where the last read through it ended (sequential detection).
    next: AtomicU64,
}

struct Inner {
    session: Session,
    cache: MetaCache,
    blocks: Blocks,
    barrier: OpBarrier,
    handles: FhTable<Arc<Handle>>,
    invalidator: RwLock<Arc<dyn Invalidator>>,
    hello: Mutex<Hello>,
    source_id: String,
    rt: tokio::runtime::Handle,
    cfg: RemoteConfig,
}

/// A peer's share as a [`VirtualFs`](vfs_core::VirtualFs). See the [module docs](self).
pub struct RemoteFs {
    inner: Arc<Inner>,
    supervisor: JoinHandle<()>,
}

impl std::fmt::Debug for RemoteFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFs")
            .field("source_id", &self.inner.source_id)
            .finish()
    }
}

impl Drop for RemoteFs {
    fn drop(&mut self) {
        self.supervisor.abort();
        self.inner.session.close();
    }
}

impl RemoteFs {
    /// Connects to the owner at `addr`, which must prove the key `peer`, and returns its
    /// share. Call from within a tokio runtime: the link's tasks and the reconnecting
    /// supervisor run on it. Fails if the first link cannot be made (refused key,
    /// unreachable, not this protocol); later failures are reconnected with backoff.
    pub async fn connect<T: Transport>(
        transport: T,
        addr: SocketAddr,
        peer: PublicKey,
        cfg: RemoteConfig,
    ) -> Result<RemoteFs, ConnectError> {
        let session = Session::new(
            transport,
            addr,
            peer,
            cfg.link.clone(),
            cfg.down_wait,
            cfg.idmap.shown(),
        );
        let first = session.connect().await?;
        let hello = first.hello.clone();
        let source_id = format!("p2p:{peer}:{}", hello.source_id);
        let block = u64::from(cfg.block_size.clamp(4096, MAX_IO.min(hello.max_io.max(4096))));
        let inner = Arc::new(Inner {
            session,
            cache: MetaCache::new(),
            blocks: Blocks::new(block, cfg.cache_bytes, u64::from(cfg.readahead.max(1))),
            barrier: OpBarrier::new(),
            handles: FhTable::new(),
            invalidator: RwLock::new(Arc::new(NoInvalidator)),
            hello: Mutex::new(hello),
            source_id,
            rt: tokio::runtime::Handle::current(),
            cfg,
        });
        let task = inner.adopt(first);
        let supervisor = tokio::spawn(Arc::clone(&inner).supervise(task));
        tracing::info!(%peer, %addr, "connected to the peer");
        Ok(RemoteFs { inner, supervisor })
    }

    /// Where to tell the kernel (or another front end) about changes made on the owner:
    /// a mount's [`Invalidator`] (`vfs_fuse::Mount::invalidator`).
    pub fn set_invalidator(&self, inv: Arc<dyn Invalidator>) {
        *self.inner.invalidator.write() = inv;
    }

    /// Whether the link to the owner is up now.
    pub fn is_connected(&self) -> bool {
        self.inner.session.is_up()
    }

    /// Bytes of file data cached.
    pub fn cached_bytes(&self) -> usize {
        self.inner.blocks.cached_bytes()
    }
}

/// Inodes whose names an operation in flight may take away ([`Inner::unnaming`]); they
/// count as written to until this is dropped.
struct Unnaming<'a> {
    cache: &'a MetaCache,
    names: cache::Unnaming,
}

impl Unnaming<'_> {
    /// The inodes the names denoted when the operation was sent, as far as known.
    fn inos(&self) -> &[Ino] {
        self.names.inos()
    }
}

impl Drop for Unnaming<'_> {
    fn drop(&mut self) {
        self.cache.unnamed(&self.names);
    }
}

/// The lock-order token of a `RemoteFs` call: its handle table's `Map` level is the only
/// ordered (`vfs_core::lock_order`) lock this client takes, and every caller of this
/// function holds none (the table's guards never outlive one table call).
fn entry_token() -> Locked<Unlocked> {
    // SAFETY: see above: no ordered lock is held where this is called.
    unsafe { Locked::new() }
}

impl Inner {
    fn check(&self, ino: Ino) -> VfsResult<()> {
        if self.cache.is_stale(ino) {
            Err(VfsError::Stale)
        } else {
            Ok(())
        }
    }

    fn handle(&self, fh: Fh, ino: Ino) -> VfsResult<Arc<Handle>> {
        self.handles.get(&mut entry_token(), ino, fh)
    }

    fn new_handle(&self, ino: Ino, flags: OpenFlags) -> Fh {
        let handle = Arc::new(Handle {
            ino,
            flags,
            next: AtomicU64::new(u64::MAX),
        });
        let fh = self.handles.insert(&mut entry_token(), ino, handle);
        self.cache.opened(ino);
        fh
    }

    /// Creates a node on the owner with `call` (mknod, mkdir, symlink; not sent until
    /// awaited) and records the new entry `parent/name`.
    async fn make_entry(
        &self,
        parent: Ino,
        name: Name<'_>,
        call: impl Future<Output = VfsResult<Attr>>,
    ) -> VfsResult<Attr> {
        self.check(parent)?;
        let since = self.cache.now();
        let a = call.await?;
        // The number may be a reused one: no block of an earlier object is served for it.
        self.blocks.invalidate(a.ino);
        self.entered(parent, name, a, since);
        Ok(a)
    }

    /// Marks the inodes `names` denote as in flux until the returned guard goes (after
    /// the operation's answer was applied, or when the call is dropped): see the cache's
    /// invariant on names being removed.
    fn unnaming(&self, names: &[(Ino, Name<'_>)]) -> Unnaming<'_> {
        let names: Vec<(Ino, &std::ffi::OsStr)> = names.iter().map(|(p, n)| (*p, n.as_os_str())).collect();
        Unnaming {
            cache: &self.cache,
            names: self.cache.unnaming(&names),
        }
    }

    /// After an operation that returned a new entry.
    fn entered(&self, parent: Ino, name: Name<'_>, attr: Attr, since: u64) {
        self.cache.entered(parent, name.as_os_str(), attr, true, since);
        self.cache.dir_changed(parent);
    }

    async fn forget_remote(&self, ino: Ino, remote: Option<u64>) {
        self.blocks.forget(ino);
        self.barrier.forget(ino);
        if let Some(n) = remote.filter(|n| *n > 0)
            && let Err(e) = self.session.now().forget(ino, n).await
        {
            tracing::trace!(ino = ino.0, "forget not sent: {e}");
        }
    }
}
