//! The owner's side: an [`Exporter`] serves a local [`VirtualFs`] to the peers whose keys
//! it allows, and tells them what changed.
//!
//! Invariants:
//!
//! - **Nothing outside the share.** Every request names an inode and, for entry
//!   operations, single path components; a name is used only after
//!   [`vfs_core::Name::new`] accepted it, so `..`, `/`, NUL and over-long names get an
//!   error reply (`EINVAL`, `ENAMETOOLONG`) and the link goes on. Inode numbers are
//!   resolved by the backend within its own tree (`LocalFs` walks from its root).
//! - **Backend handles only through the [`HandlePool`].** Reads and writes by inode go
//!   through the pool; a file a peer has open is held open by a
//!   [`vfs_core::pool::HeldHandle`] per open (taken with the caller's credentials, so the
//!   backend checks access at open time as it would locally), which is also what keeps an
//!   unlinked file readable until the peer closes it. When a link ends, every handle it
//!   held is released and every lookup it counted is forgotten.
//! - **Every change is announced, none is dropped.** Each change made through the
//!   exporter (and, for a `LocalFs` share, each change made directly in the host
//!   directory, see [`watch`]) enters one [`Debouncer`] keyed by path with the attributes
//!   observed right after the change; its batches go to every connected peer, in order,
//!   waiting for room rather than dropping. A change whose path cannot be named (an inode
//!   the exporter never saw by name) is announced as [`REVALIDATE_ALL`], which peers
//!   take as "revalidate everything".
//! - **Peers act as the owner says** ([`rights`]): every request runs as the one identity
//!   of [`PeerPolicy::identity`], never as the uid it claims; a read-only key changes
//!   nothing (`EROFS`); setuid files and devices from a peer are refused (`EPERM`).
//! - **No per-operation logging above `debug`.**

mod link;
pub mod rights;
mod serve;
pub mod watch;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use vfs_core::notify::{Batches, Change, DebounceConfig, Debouncer};
use vfs_core::pool::HandlePool;
use vfs_core::{Attr, FileType, Ino, RequestCtx, VfsResult, VirtualFs};

use self::link::LinkHandler;
pub use self::rights::{PeerIdentity, PeerPolicy};
use crate::identity::{PublicKey, Right};
use crate::rpc::{LinkConfig, LinkFailure, ServerLink, serve_link};
use crate::transport::{FrameRx, FrameTx, Link, Listener, TransportError};
use crate::wire::WireChange;

/// A path relative to the share's root, `/`-separated, empty for the root.
pub type SharePath = Vec<u8>;

/// What the exporter sends peers: changes keyed by path, with the attributes observed.
pub type ShareChange = Change<SharePath, Attr>;

/// Knobs of an [`Exporter`].
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// Timeouts and limits of each link.
    pub link: LinkConfig,
    /// Backend handles the pool keeps (1024).
    pub pool_capacity: usize,
    /// Debouncing of change notifications (200 ms per path, batches of 64).
    pub debounce: DebounceConfig,
    /// Who peers act as and what they may do (default: as the share's owner, never
    /// root, read-write for every admitted key, no setuid files or devices).
    pub peers: PeerPolicy,
}

impl ExportConfig {
    /// The defaults, with peers trusted as root ([`PeerPolicy::trusted`]): for tests and
    /// benches that exercise the backend through a peer, not the access control.
    pub fn trusted() -> ExportConfig {
        ExportConfig {
            peers: PeerPolicy::trusted(),
            ..ExportConfig::default()
        }
    }
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            link: LinkConfig::default(),
            pool_capacity: 1024,
            debounce: DebounceConfig::default(),
            peers: PeerPolicy::default(),
        }
    }
}

/// Serves a [`VirtualFs`] to peers. See the [module docs](self).
pub struct Exporter<F: VirtualFs> {
    fs: Arc<F>,
    pool: Arc<HandlePool<F>>,
    /// The last name each inode was seen under: `ino -> (parent, name)`. What turns an
    /// inode into the path a notification carries.
    names: Mutex<HashMap<Ino, (Ino, OsString)>>,
    changes: Debouncer<SharePath, Attr>,
    links: Arc<Mutex<Vec<ServerLink>>>,
    /// Who peers act as, once resolved (see [`Exporter::identity`]).
    identity: Mutex<Option<RequestCtx>>,
    cfg: ExportConfig,
}

impl<F: VirtualFs> Exporter<F> {
    /// An exporter of `fs`. Call from within a tokio runtime: the debouncer and the task
    /// that fans its batches out to the peers are spawned on it.
    pub fn new(fs: Arc<F>, cfg: ExportConfig) -> Arc<Exporter<F>> {
        let pool = Arc::new(HandlePool::new(Arc::clone(&fs), cfg.pool_capacity));
        let (changes, batches) = Debouncer::spawn(cfg.debounce.clone());
        let links = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(fan_out(batches, Arc::clone(&links)));
        Arc::new(Exporter {
            fs,
            pool,
            names: Mutex::new(HashMap::new()),
            changes,
            links,
            identity: Mutex::new(None),
            cfg,
        })
    }

    /// The backend.
    pub fn fs(&self) -> &Arc<F> {
        &self.fs
    }

    /// The producer side of the change debouncer: changes sent here reach every peer
    /// (what [`watch::HostWatcher`] feeds).
    pub fn changes(&self) -> Debouncer<SharePath, Attr> {
        self.changes.clone()
    }

    /// Peers connected now.
    pub fn peers(&self) -> Vec<PublicKey> {
        self.links
            .lock()
            .iter()
            .filter(|l| l.is_open())
            .map(|l| l.peer)
            .collect()
    }

    /// What `peer` may do now: its right in [`PeerPolicy::keys`], read-write when there is
    /// no list, `None` when the list no longer holds it.
    pub fn right_of(&self, peer: &PublicKey) -> Option<Right> {
        match &self.cfg.peers.keys {
            Some(list) => list.right(peer),
            None => Some(Right::ReadWrite),
        }
    }

    /// Closes the links of peers the key list no longer allows (after a reload).
    /// Returns how many were closed.
    pub fn close_unallowed(&self) -> usize {
        let links = self.links.lock();
        let mut n = 0;
        for l in links.iter().filter(|l| l.is_open() && self.right_of(&l.peer).is_none()) {
            l.close();
            n += 1;
        }
        n
    }

    /// The credentials every peer request runs with ([`PeerPolicy::identity`]): for
    /// [`PeerIdentity::ShareOwner`], the owner of the share's root, looked up once (and
    /// `nobody` if that is root).
    pub async fn identity(&self) -> VfsResult<RequestCtx> {
        if let Some(ctx) = *self.identity.lock() {
            return Ok(ctx);
        }
        let ctx = match self.cfg.peers.identity {
            PeerIdentity::Root => RequestCtx::ROOT,
            PeerIdentity::User { uid, gid } => rights::unprivileged(uid, gid),
            PeerIdentity::ShareOwner => {
                let root = self.fs.getattr(&RequestCtx::ROOT, Ino::ROOT, None).await?;
                if root.uid == 0 {
                    tracing::warn!("the share belongs to root: peers act as nobody (choose an identity to change it)");
                }
                rights::unprivileged(root.uid, root.gid)
            }
        };
        *self.identity.lock() = Some(ctx);
        Ok(ctx)
    }

    /// Accepts links from `listener` and serves each until it ends; returns only if the
    /// listener fails.
    pub async fn serve<L: Listener>(self: &Arc<Self>, mut listener: L) -> Result<(), TransportError> {
        loop {
            let link = listener.accept().await?;
            tracing::info!(peer = %link.peer, addr = %link.addr, "peer connected");
            drop(self.attach(link));
        }
    }

    /// Serves one authenticated link until it ends, then releases what it held. The
    /// returned task ends with the link.
    pub fn attach<T: FrameTx, R: FrameRx>(self: &Arc<Self>, link: Link<T, R>) -> JoinHandle<Result<(), LinkFailure>> {
        let handler = Arc::new(LinkHandler::new(Arc::clone(self)));
        let (server, task) = serve_link(link, Arc::clone(&handler), self.cfg.link.clone());
        self.links.lock().push(server);
        let links = Arc::clone(&self.links);
        tokio::spawn(async move {
            let result = match task.await {
                Ok(r) => r,
                Err(e) => Err(LinkFailure::Goaway(format!("link task failed: {e}"))),
            };
            links.lock().retain(ServerLink::is_open);
            handler.end().await;
            result
        })
    }

    /// Queues a change for the peers (waits for room; never drops).
    async fn announce(&self, change: ShareChange) {
        if self.changes.send(change).await.is_err() {
            tracing::debug!("change debouncer is gone; change not announced");
        }
    }

    /// The path of `ino`, from the names seen, if every step up to the root is known.
    fn path_of(&self, ino: Ino) -> Option<SharePath> {
        if ino == Ino::ROOT {
            return Some(Vec::new());
        }
        let names = self.names.lock();
        let mut parts: Vec<&OsStr> = Vec::new();
        let mut cur = ino;
        while cur != Ino::ROOT {
            let (parent, name) = names.get(&cur)?;
            parts.push(name);
            if parts.len() > 4096 {
                return None;
            }
            cur = *parent;
        }
        let mut path = Vec::new();
        for (i, p) in parts.iter().rev().enumerate() {
            if i > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(p.as_bytes());
        }
        Some(path)
    }

    fn child_path(&self, parent: Ino, name: &OsStr) -> Option<SharePath> {
        let mut p = self.path_of(parent)?;
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name.as_bytes());
        Some(p)
    }

    fn remember(&self, ino: Ino, parent: Ino, name: &OsStr) {
        if ino != Ino::ROOT {
            self.names.lock().insert(ino, (parent, name.to_os_string()));
        }
    }

    fn forget_name(&self, ino: Ino, parent: Ino, name: &OsStr) {
        let mut names = self.names.lock();
        if names.get(&ino).is_some_and(|(p, n)| *p == parent && n == name) {
            names.remove(&ino);
        }
    }

    /// Announces that `ino` changed, with its attributes now (`fh`: a handle to ask
    /// through, for a file that may have no name left).
    async fn announce_update(&self, ino: Ino, fh: Option<vfs_core::Fh>) {
        let Ok(attr) = self.fs.getattr(&RequestCtx::ROOT, ino, fh).await else {
            return;
        };
        if attr.nlink == 0 && attr.kind != FileType::Directory {
            return; // no name to announce it under: nobody else can reach it
        }
        self.announce_attr(ino, attr).await;
    }

    async fn announce_attr(&self, ino: Ino, attr: Attr) {
        let change = match self.path_of(ino) {
            Some(key) => Change::Update { key, attrs: attr },
            None => revalidate_all(attr),
        };
        self.announce(change).await;
    }

    async fn announce_created(&self, parent: Ino, name: &OsStr, attr: Attr) {
        let change = match self.child_path(parent, name) {
            Some(key) => Change::Create { key, attrs: attr },
            None => revalidate_all(attr),
        };
        self.announce(change).await;
    }

    async fn announce_removed(&self, parent: Ino, name: &OsStr) {
        match self.child_path(parent, name) {
            Some(key) => self.announce(Change::Remove { key }).await,
            None => self.announce_unnamed().await,
        }
    }

    /// Something changed that has no path we can name: peers revalidate everything.
    async fn announce_unnamed(&self) {
        if let Ok(attr) = self.fs.getattr(&RequestCtx::ROOT, Ino::ROOT, None).await {
            self.announce(revalidate_all(attr)).await;
        }
    }
}

/// The key of a change that has no path (an inode the exporter never saw by name, an
/// inotify overflow, events lost around a directory move): peers that receive an update
/// of it revalidate everything. No real path has it (share paths never start with `/`),
/// so the debouncer never merges it with a real change.
pub const REVALIDATE_ALL: &[u8] = vfs_core::watch::REVALIDATE_ALL;

/// The "revalidate everything" change.
pub fn revalidate_all(attrs: Attr) -> ShareChange {
    Change::Update {
        key: REVALIDATE_ALL.to_vec(),
        attrs,
    }
}

/// Sends each batch of the debouncer to every connected peer, in order.
async fn fan_out(mut batches: Batches<SharePath, Attr>, links: Arc<Mutex<Vec<ServerLink>>>) {
    while let Some(batch) = batches.next().await {
        let wire: Vec<WireChange> = batch.into_iter().map(to_wire).collect();
        tracing::trace!(changes = wire.len(), "sending a batch of changes");
        let targets: Vec<ServerLink> = links.lock().iter().filter(|l| l.is_open()).cloned().collect();
        for link in targets {
            if link.notify(wire.clone()).await.is_err() {
                tracing::debug!(peer = %link.peer, "link closed while sending changes");
            }
        }
    }
}

/// A debounced change as the wire carries it.
pub fn to_wire(c: ShareChange) -> WireChange {
    match c {
        Change::Create { key, attrs } => WireChange::Create { path: key, attr: attrs },
        Change::Update { key, attrs } => WireChange::Update { path: key, attr: attrs },
        Change::Remove { key } => WireChange::Remove { path: key },
        Change::Rename { from, to, attrs } => WireChange::Rename { from, to, attr: attrs },
    }
}
