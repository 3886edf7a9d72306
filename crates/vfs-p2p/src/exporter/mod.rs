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
//! - **No per-operation logging above `debug`.**

pub mod watch;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use vfs_core::notify::{Batches, Change, DebounceConfig, Debouncer};
use vfs_core::pool::{HandlePool, HeldHandle};
use vfs_core::{
    Attr, Errno, FileType, Ino, InodeStability, Name, OpenFlags, RenameFlags, RequestCtx, VfsError, VirtualFs, XattrSet,
};

use crate::identity::PublicKey;
use crate::rpc::{Handler, LinkConfig, LinkFailure, ServerLink, serve_link};
use crate::transport::{FrameRx, FrameTx, Link, Listener, TransportError};
use crate::wire::{MAX_ENTRIES, MAX_IO, Op, Payload, Reply, Request, VERSION, WireChange};

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
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            link: LinkConfig::default(),
            pool_capacity: 1024,
            debounce: DebounceConfig::default(),
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
        let handler = Arc::new(LinkHandler {
            exp: Arc::clone(self),
            state: Mutex::new(LinkState::default()),
        });
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
pub const REVALIDATE_ALL: &[u8] = b"/";

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

// ---------------------------------------------------------------------------------------
// One link

/// What one link holds on the backend.
struct LinkState<F> {
    /// Lookups counted for the peer, forgotten when it says so or when the link ends.
    lookups: HashMap<Ino, u64>,
    /// Files the peer has open: one held handle per open.
    pins: HashMap<Ino, Vec<HeldHandle<F>>>,
}

impl<F> Default for LinkState<F> {
    fn default() -> Self {
        LinkState {
            lookups: HashMap::new(),
            pins: HashMap::new(),
        }
    }
}

struct LinkHandler<F: VirtualFs> {
    exp: Arc<Exporter<F>>,
    state: Mutex<LinkState<F>>,
}

type Answer = Result<(Reply, Bytes), Errno>;

fn err(e: VfsError) -> Errno {
    e.errno()
}

fn name(n: &OsStr) -> Result<Name<'_>, Errno> {
    Name::new(n).map_err(err)
}

fn attr_reply(a: Attr) -> Answer {
    Ok((Reply::Attr(a), Bytes::new()))
}

fn unit() -> Answer {
    Ok((Reply::Unit, Bytes::new()))
}

/// Open flags a peer may ask for: the access mode, append, truncate, synchronous writes.
fn open_flags(raw: i32) -> OpenFlags {
    OpenFlags(raw & (libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC))
}

impl<F: VirtualFs> Handler for LinkHandler<F> {
    async fn handle(&self, _peer: PublicKey, req: Request, body: Payload) -> Answer {
        self.dispatch(req.ctx, req.op, body).await
    }
}

impl<F: VirtualFs> LinkHandler<F> {
    fn fs(&self) -> &F {
        &self.exp.fs
    }

    fn counted(&self, attr: &Attr, parent: Ino, name: &OsStr) {
        *self.state.lock().lookups.entry(attr.ino).or_default() += 1;
        self.exp.remember(attr.ino, parent, name);
    }

    /// A handle of `ino` this link holds open that can read (or write, with `write`), as
    /// `(fh, append)`.
    fn pinned(&self, ino: Ino, write: bool, append: bool) -> Option<vfs_core::Fh> {
        let st = self.state.lock();
        let pins = st.pins.get(&ino)?;
        let ok = |h: &&HeldHandle<F>| {
            if write {
                h.mode().can_write()
            } else {
                h.mode().can_read()
            }
        };
        pins.iter()
            .filter(ok)
            .find(|h| !write || h.flags().append() == append)
            .or_else(|| pins.iter().find(ok).filter(|_| !append))
            .map(HeldHandle::fh)
    }

    fn any_pin(&self, ino: Ino) -> Option<vfs_core::Fh> {
        self.state
            .lock()
            .pins
            .get(&ino)
            .and_then(|v| v.first())
            .map(HeldHandle::fh)
    }

    async fn dispatch(&self, ctx: RequestCtx, op: Op, body: Payload) -> Answer {
        let fs = self.fs();
        match op {
            Op::Hello {
                min_version,
                max_version,
            } => {
                if !(min_version..=max_version).contains(&VERSION) {
                    return Err(Errno::from_raw(libc::EPROTO));
                }
                Ok((
                    Reply::Hello {
                        version: VERSION,
                        source_id: fs.source_id().to_owned(),
                        stable_inodes: fs.inode_stability() == InodeStability::Stable,
                        max_io: MAX_IO,
                    },
                    Bytes::new(),
                ))
            }
            Op::Lookup { parent, name: n } => {
                let attr = fs.lookup(&ctx, parent, name(&n)?).await.map_err(err)?;
                self.counted(&attr, parent, &n);
                attr_reply(attr)
            }
            Op::Forget { ino, nlookup } => {
                let n = {
                    let mut st = self.state.lock();
                    match st.lookups.get_mut(&ino) {
                        Some(c) => {
                            let n = nlookup.min(*c);
                            *c -= n;
                            if *c == 0 {
                                st.lookups.remove(&ino);
                            }
                            n
                        }
                        None => 0,
                    }
                };
                if n > 0 {
                    fs.forget(ino, n).await;
                }
                unit()
            }
            Op::Getattr { ino } => attr_reply(fs.getattr(&ctx, ino, self.any_pin(ino)).await.map_err(err)?),
            Op::Setattr { ino, mut set } => {
                set.fh = if set.size.is_some() {
                    self.pinned(ino, true, false)
                } else {
                    self.any_pin(ino)
                };
                let attr = fs.setattr(&ctx, ino, set).await.map_err(err)?;
                self.exp.announce_attr(ino, attr).await;
                attr_reply(attr)
            }
            Op::Readlink { ino } => Ok((Reply::Target(fs.readlink(&ctx, ino).await.map_err(err)?), Bytes::new())),
            Op::Mknod {
                parent,
                name: n,
                mode,
                umask,
                rdev,
            } => {
                let attr = fs
                    .mknod(&ctx, parent, name(&n)?, mode, umask, rdev)
                    .await
                    .map_err(err)?;
                self.created(parent, &n, attr).await
            }
            Op::Mkdir {
                parent,
                name: n,
                mode,
                umask,
            } => {
                let attr = fs.mkdir(&ctx, parent, name(&n)?, mode, umask).await.map_err(err)?;
                self.created(parent, &n, attr).await
            }
            Op::Symlink {
                parent,
                name: n,
                target,
            } => {
                let attr = fs.symlink(&ctx, parent, name(&n)?, &target).await.map_err(err)?;
                self.created(parent, &n, attr).await
            }
            Op::Link {
                ino,
                newparent,
                newname,
            } => {
                let attr = fs.link(&ctx, ino, newparent, name(&newname)?).await.map_err(err)?;
                self.created(newparent, &newname, attr).await
            }
            Op::Unlink { parent, name: n } => {
                let nm = name(&n)?;
                let victim = fs.lookup(&ctx, parent, nm).await.ok();
                if let Some(v) = &victim {
                    fs.forget(v.ino, 1).await;
                }
                fs.unlink(&ctx, parent, nm).await.map_err(err)?;
                self.removed(parent, &n, victim).await;
                unit()
            }
            Op::Rmdir { parent, name: n } => {
                let nm = name(&n)?;
                let victim = fs.lookup(&ctx, parent, nm).await.ok();
                if let Some(v) = &victim {
                    fs.forget(v.ino, 1).await;
                }
                fs.rmdir(&ctx, parent, nm).await.map_err(err)?;
                self.removed(parent, &n, victim).await;
                unit()
            }
            Op::Rename {
                parent,
                name: n,
                newparent,
                newname,
                flags,
            } => self.rename(ctx, parent, &n, newparent, &newname, flags).await,
            Op::Open { ino, flags } => {
                let flags = open_flags(flags);
                let held = self.exp.pool.open_held(&ctx, ino, flags).await.map_err(err)?;
                let attr = fs.getattr(&ctx, ino, Some(held.fh())).await;
                self.state.lock().pins.entry(ino).or_default().push(held);
                let attr = attr.map_err(err)?;
                if flags.truncate() {
                    self.exp.announce_attr(ino, attr).await;
                }
                attr_reply(attr)
            }
            Op::Create {
                parent,
                name: n,
                mode,
                umask,
                flags,
            } => {
                let exclusive = flags & libc::O_EXCL != 0;
                let flags = open_flags(flags);
                let create_flags = OpenFlags(flags.0 | libc::O_CREAT | if exclusive { libc::O_EXCL } else { 0 });
                let (attr, fh) = fs
                    .create(&ctx, parent, name(&n)?, mode, umask, create_flags)
                    .await
                    .map_err(err)?;
                let held = self.exp.pool.adopt(&ctx, attr.ino, fh, flags);
                self.state.lock().pins.entry(attr.ino).or_default().push(held);
                if exclusive {
                    self.created(parent, &n, attr).await
                } else {
                    // It may have existed: an update, which a later removal cannot cancel.
                    self.counted(&attr, parent, &n);
                    self.exp.announce_attr(attr.ino, attr).await;
                    self.exp.announce_update(parent, None).await;
                    attr_reply(attr)
                }
            }
            Op::Read { ino, offset, size } => {
                let size = size.min(MAX_IO);
                let data = match self.pinned(ino, false, false) {
                    Some(fh) => fs.read(&ctx, ino, fh, offset, size).await,
                    None => self.exp.pool.read(&ctx, ino, offset, size).await,
                }
                .map_err(err)?;
                let len = u32::try_from(data.len()).map_err(|_| Errno::EIO)?;
                Ok((Reply::Bytes { len }, data))
            }
            Op::Write {
                ino,
                offset,
                append,
                len: _,
            } => {
                let data = body.into_bytes();
                let n = match self.pinned(ino, true, append) {
                    Some(fh) => fs.write(&ctx, ino, fh, offset, &data).await,
                    None => {
                        let at = if append {
                            fs.getattr(&ctx, ino, None).await.map_err(err)?.size
                        } else {
                            offset
                        };
                        self.exp.pool.write(&ctx, ino, at, &data).await
                    }
                }
                .map_err(err)?;
                self.exp.announce_update(ino, self.any_pin(ino)).await;
                Ok((Reply::Written(n), Bytes::new()))
            }
            Op::Fsync { ino, datasync } => {
                match self.any_pin(ino) {
                    Some(fh) => fs.fsync(&ctx, ino, fh, datasync).await,
                    None => self.exp.pool.fsync(&ctx, ino, datasync).await,
                }
                .map_err(err)?;
                unit()
            }
            Op::Readdir { ino, cookie, max } => {
                let max = (max as usize).clamp(1, MAX_ENTRIES);
                let entries = fs.readdir(&ctx, ino, cookie, max).await.map_err(err)?;
                for e in &entries {
                    if e.name != "." && e.name != ".." {
                        self.exp.remember(e.ino, ino, &e.name);
                    }
                }
                Ok((Reply::Entries(entries), Bytes::new()))
            }
            Op::Readdirplus { ino, cookie, max } => {
                let max = (max as usize).clamp(1, MAX_ENTRIES);
                let entries = fs.readdirplus(&ctx, ino, cookie, max).await.map_err(err)?;
                for e in &entries {
                    if e.entry.name != "." && e.entry.name != ".." {
                        self.exp.remember(e.entry.ino, ino, &e.entry.name);
                    }
                }
                Ok((Reply::EntriesPlus(entries), Bytes::new()))
            }
            Op::Statfs { ino } => Ok((Reply::StatFs(fs.statfs(&ctx, ino).await.map_err(err)?), Bytes::new())),
            Op::Access { ino, mask } => {
                fs.access(&ctx, ino, mask).await.map_err(err)?;
                unit()
            }
            Op::Getxattr { ino, name: n } => {
                let v = fs.getxattr(&ctx, ino, &n).await.map_err(err)?;
                let len = u32::try_from(v.len()).map_err(|_| Errno::E2BIG)?;
                Ok((Reply::Bytes { len }, v))
            }
            Op::Setxattr {
                ino,
                name: n,
                how,
                len: _,
            } => {
                let how = match how {
                    1 => XattrSet::Create,
                    2 => XattrSet::Replace,
                    _ => XattrSet::Any,
                };
                fs.setxattr(&ctx, ino, &n, &body.into_bytes(), how).await.map_err(err)?;
                self.exp.announce_update(ino, self.any_pin(ino)).await;
                unit()
            }
            Op::Listxattr { ino } => {
                let names = fs.listxattr(&ctx, ino).await.map_err(err)?;
                let mut out = Vec::new();
                for n in names {
                    out.extend_from_slice(n.as_bytes());
                    out.push(0);
                }
                if out.len() > MAX_IO as usize {
                    return Err(Errno::E2BIG);
                }
                let len = u32::try_from(out.len()).map_err(|_| Errno::E2BIG)?;
                Ok((Reply::Bytes { len }, Bytes::from(out)))
            }
            Op::Removexattr { ino, name: n } => {
                fs.removexattr(&ctx, ino, &n).await.map_err(err)?;
                self.exp.announce_update(ino, self.any_pin(ino)).await;
                unit()
            }
            Op::Fallocate {
                ino,
                offset,
                length,
                mode,
            } => {
                let r = match self.pinned(ino, true, false) {
                    Some(fh) => fs.fallocate(&ctx, ino, fh, offset, length, mode).await,
                    None => {
                        let held = self
                            .exp
                            .pool
                            .open_held(&ctx, ino, OpenFlags::WRONLY)
                            .await
                            .map_err(err)?;
                        let r = fs.fallocate(&ctx, ino, held.fh(), offset, length, mode).await;
                        held.close().await;
                        r
                    }
                };
                r.map_err(err)?;
                self.exp.announce_update(ino, self.any_pin(ino)).await;
                unit()
            }
            Op::Release { ino } => {
                let held = {
                    let mut st = self.state.lock();
                    let held = st.pins.get_mut(&ino).and_then(Vec::pop);
                    if st.pins.get(&ino).is_some_and(Vec::is_empty) {
                        st.pins.remove(&ino);
                    }
                    held
                };
                if let Some(h) = held {
                    self.close_pin(h).await;
                }
                unit()
            }
            Op::Unknown(code) => {
                tracing::debug!(code, "unknown operation");
                Err(Errno::ENOSYS)
            }
        }
    }

    /// Releases a held handle; if that was the last reference to an unlinked file, the
    /// pool lets go of it too, so the backend can drop the file.
    async fn close_pin(&self, h: HeldHandle<F>) {
        let ino = h.ino();
        let unlinked = self
            .fs()
            .getattr(&RequestCtx::ROOT, ino, Some(h.fh()))
            .await
            .is_ok_and(|a| a.nlink == 0);
        h.close().await;
        if unlinked {
            self.exp.pool.invalidate(ino).await;
        }
    }

    async fn created(&self, parent: Ino, name: &OsStr, attr: Attr) -> Answer {
        self.counted(&attr, parent, name);
        self.exp.announce_created(parent, name, attr).await;
        self.exp.announce_update(parent, None).await;
        attr_reply(attr)
    }

    async fn removed(&self, parent: Ino, name: &OsStr, victim: Option<Attr>) {
        self.exp.announce_removed(parent, name).await;
        if let Some(v) = victim {
            self.exp.forget_name(v.ino, parent, name);
            self.exp.pool.invalidate(v.ino).await;
        }
        self.exp.announce_update(parent, None).await;
    }

    async fn rename(
        &self,
        ctx: RequestCtx,
        parent: Ino,
        n: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: u32,
    ) -> Answer {
        let fs = self.fs();
        let flags = RenameFlags(flags).validate().map_err(err)?;
        let (from, to) = (name(n)?, name(newname)?);
        let from_path = self.exp.child_path(parent, n);
        let to_path = self.exp.child_path(newparent, newname);
        let moved = fs.lookup(&ctx, parent, from).await.ok();
        let replaced = fs.lookup(&ctx, newparent, to).await.ok();
        for a in moved.iter().chain(replaced.iter()) {
            fs.forget(a.ino, 1).await;
        }
        fs.rename(&ctx, parent, from, newparent, to, flags).await.map_err(err)?;
        if flags.exchange() {
            if let Some(m) = &moved {
                self.exp.remember(m.ino, newparent, newname);
            }
            if let Some(r) = &replaced {
                self.exp.remember(r.ino, parent, n);
            }
            for (who, key) in [(&moved, &to_path), (&replaced, &from_path)] {
                match (who, key) {
                    (Some(a), Some(key)) => {
                        let attrs = fs.getattr(&RequestCtx::ROOT, a.ino, None).await.unwrap_or(*a);
                        self.exp
                            .announce(Change::Update {
                                key: key.clone(),
                                attrs,
                            })
                            .await;
                    }
                    _ => self.exp.announce_unnamed().await,
                }
            }
        } else {
            if let Some(r) = &replaced
                && moved.as_ref().is_none_or(|m| m.ino != r.ino)
            {
                self.exp.forget_name(r.ino, newparent, newname);
                self.exp.pool.invalidate(r.ino).await;
            }
            match (&moved, from_path, to_path) {
                (Some(m), Some(from), Some(to)) => {
                    let attrs = fs.getattr(&RequestCtx::ROOT, m.ino, None).await.unwrap_or(*m);
                    self.exp.remember(m.ino, newparent, newname);
                    self.exp.announce(Change::Rename { from, to, attrs }).await;
                }
                (Some(m), _, _) => {
                    self.exp.remember(m.ino, newparent, newname);
                    self.exp.announce_unnamed().await;
                }
                _ => self.exp.announce_unnamed().await,
            }
        }
        self.exp.announce_update(parent, None).await;
        if newparent != parent {
            self.exp.announce_update(newparent, None).await;
        }
        unit()
    }

    /// The link ended: release every handle it held and forget every lookup it counted.
    async fn end(&self) {
        let (lookups, pins) = {
            let mut st = self.state.lock();
            (std::mem::take(&mut st.lookups), std::mem::take(&mut st.pins))
        };
        for h in pins.into_values().flatten() {
            self.close_pin(h).await;
        }
        for (ino, n) in lookups {
            self.fs().forget(ino, n).await;
        }
        tracing::debug!("link state released");
    }
}
