//! The far side: [`RemoteFs`], a [`VirtualFs`] whose tree lives on a peer.
//!
//! Invariants:
//!
//! - **Write-through, in order, acknowledged.** Every change is sent to the owner and
//!   returns only with the owner's answer; a write that was not acknowledged is an error
//!   for the writer (`EIO` when the link died or the owner did not answer in time), never
//!   a success. Writes (and truncations, `fallocate`) to one inode are issued through an
//!   [`OpBarrier`]: each waits for the acknowledgement of the one issued before it, so
//!   they apply in issue order; reads and `getattr` wait for exactly the writes issued
//!   before them (seed 001). `fsync` returns when the owner's backend says the data is
//!   durable.
//! - **Caches that cannot go stale by themselves.** Attributes and listings
//!   ([`cache`]) and file blocks ([`blocks`]) are kept until invalidated: by this side's
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

mod blocks;
mod cache;
mod session;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vfs_core::barrier::OpBarrier;
use vfs_core::{
    Attr, DirEntry, Errno, Fh, Ino, InodeStability, Invalidator, Name, NoInvalidator, OpenFlags, RenameFlags,
    RequestCtx, SetAttr, StatFs, VfsError, VfsResult, VirtualFs, XattrSet,
};

pub use session::ConnectError;

use self::blocks::{Blocks, Next};
use self::cache::{KernelView, MetaCache, Resolved};
use self::session::{Connected, Hello, Session};
use crate::exporter::REVALIDATE_ALL;
use crate::identity::PublicKey;
use crate::rpc::{LinkConfig, LinkFailure};
use crate::transport::Transport;
use crate::wire::{MAX_ENTRIES, MAX_IO, Op, Payload, Reply, WireChange};

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
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    invalidator: RwLock<Arc<dyn Invalidator>>,
    hello: Mutex<Hello>,
    source_id: String,
    rt: tokio::runtime::Handle,
    cfg: RemoteConfig,
}

/// A peer's share as a [`VirtualFs`]. See the [module docs](self).
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

fn protocol(what: &'static str) -> VfsError {
    tracing::debug!("unexpected answer from the peer: {what}");
    VfsError::Io(format!("unexpected answer from the peer to {what}"))
}

fn expect_attr(r: (Reply, Payload), what: &'static str) -> VfsResult<Attr> {
    match r.0 {
        Reply::Attr(a) => Ok(a),
        _ => Err(protocol(what)),
    }
}

fn expect_unit(r: (Reply, Payload), what: &'static str) -> VfsResult<()> {
    match r.0 {
        Reply::Unit => Ok(()),
        _ => Err(protocol(what)),
    }
}

fn expect_bytes(r: (Reply, Payload), what: &'static str) -> VfsResult<Payload> {
    match r.0 {
        Reply::Bytes { len } if len as usize == r.1.len() => Ok(r.1),
        _ => Err(protocol(what)),
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
        let session = Session::new(transport, addr, peer, cfg.link.clone(), cfg.down_wait);
        let first = session.connect().await?;
        let hello = first.hello.clone();
        let source_id = format!("p2p:{peer}:{}", hello.source_id);
        let block = u64::from(cfg.block_size.clamp(4096, MAX_IO.min(hello.max_io.max(4096))));
        let inner = Arc::new(Inner {
            session,
            cache: MetaCache::new(),
            blocks: Blocks::new(block, cfg.cache_bytes, u64::from(cfg.readahead.max(1))),
            barrier: OpBarrier::new(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
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

impl Inner {
    /// Installs a new link and starts applying its notifications; returns its end.
    fn adopt(self: &Arc<Self>, c: Connected) -> JoinHandle<LinkFailure> {
        self.cache.reset_remote_counts();
        self.session.install(c.client);
        self.rt.spawn(Arc::clone(self).apply_notes(c.notes));
        c.task
    }

    /// Waits for the link to end, then makes it again with backoff, forever.
    async fn supervise(self: Arc<Self>, mut task: JoinHandle<LinkFailure>) {
        loop {
            let why = match (&mut task).await {
                Ok(f) => f.to_string(),
                Err(e) => format!("link task ended: {e}"),
            };
            tracing::info!("link to the peer lost ({why}); reconnecting");
            self.session.set_down();
            self.revalidate_all();
            let mut backoff = self.cfg.backoff_min;
            let connected = loop {
                tokio::time::sleep(backoff).await;
                match self.session.connect().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::debug!("reconnection failed: {e}");
                        backoff = (backoff * 2).min(self.cfg.backoff_max);
                    }
                }
            };
            let new_incarnation = {
                let mut h = self.hello.lock();
                let changed = h.source_id != connected.hello.source_id;
                *h = connected.hello.clone();
                changed
            };
            task = self.adopt(connected);
            if new_incarnation {
                tracing::info!("the peer's share is a new incarnation: earlier inodes are stale");
                let view = self.cache.new_incarnation();
                self.blocks.invalidate_all();
                self.tell_kernel(view);
            } else {
                self.repin().await;
                self.revalidate_all();
            }
            tracing::info!("reconnected to the peer");
        }
    }

    /// Opens again, on the new link, every file this side has open (without truncating).
    async fn repin(&self) {
        let open: Vec<(Ino, OpenFlags)> = self.handles.lock().values().map(|h| (h.ino, h.flags)).collect();
        for (ino, flags) in open {
            let flags = OpenFlags(flags.0 & (libc::O_ACCMODE | libc::O_APPEND | libc::O_SYNC | libc::O_DSYNC));
            if let Err(e) = self.session.call_now(Op::Open { ino, flags: flags.0 }).await {
                tracing::debug!(ino = ino.0, "reopening after reconnection failed: {e}");
            }
        }
    }

    /// Drops every cache and tells the kernel to do the same.
    fn revalidate_all(&self) {
        let view = self.cache.revalidate_all();
        self.blocks.invalidate_all();
        self.tell_kernel(view);
    }

    fn tell_kernel(&self, view: KernelView) {
        let inv = self.invalidator.read().clone();
        for (parent, name) in &view.entries {
            inv.inval_entry(*parent, name);
        }
        for (ino, open) in view.inodes {
            if open {
                inv.inval_attr(ino);
            } else {
                inv.inval_inode(ino, 0, 0);
            }
        }
    }

    fn kernel_inval_inode(&self, inv: &dyn Invalidator, ino: Ino) {
        match self.cache.kernel_state(ino) {
            Some(true) => inv.inval_attr(ino),
            Some(false) => inv.inval_inode(ino, 0, 0),
            None => {}
        }
    }

    /// Applies the owner's change notifications, batch by batch, until the link ends.
    async fn apply_notes(self: Arc<Self>, mut notes: mpsc::Receiver<Vec<WireChange>>) {
        while let Some(batch) = notes.recv().await {
            tracing::trace!(changes = batch.len(), "applying a batch of changes");
            for c in batch {
                self.apply(c);
            }
        }
    }

    /// Applies one change: whatever it touches is invalidated here and in the kernel.
    fn apply(&self, c: WireChange) {
        let inv = self.invalidator.read().clone();
        match c {
            WireChange::Update { path, .. } if path == REVALIDATE_ALL => self.revalidate_all(),
            WireChange::Create { path, attr } | WireChange::Update { path, attr } => {
                let r = self.cache.resolve(&path);
                // Where the name already denotes this inode (a change in place, or this
                // side's own create coming back), the kernel's entry stays: invalidating a
                // directory's entry detaches it from every process whose working directory
                // it is, and their getcwd() then fails with ENOENT (git did, mid-commit).
                if r.ino != Some(attr.ino) {
                    self.touch_resolved(&*inv, r, false);
                }
                self.touch_ino(&*inv, attr.ino);
            }
            WireChange::Remove { path } => self.touch_path(&*inv, &path, true),
            WireChange::Rename { from, to, attr } => {
                self.touch_path(&*inv, &from, true);
                self.touch_path(&*inv, &to, true);
                self.touch_ino(&*inv, attr.ino);
            }
        }
    }

    fn touch_ino(&self, inv: &dyn Invalidator, ino: Ino) {
        self.cache.invalidate(ino);
        self.blocks.invalidate(ino);
        self.kernel_inval_inode(inv, ino);
    }

    /// Invalidates what `path` names and its parent's entry for it (`gone`: it was removed
    /// or moved away, so everything known under it is invalidated too). The name itself is
    /// always forgotten: debouncing merges a removal and a re-creation of one path into a
    /// single update, after which the name may denote another inode.
    fn touch_path(&self, inv: &dyn Invalidator, path: &[u8], gone: bool) {
        self.touch_resolved(inv, self.cache.resolve(path), gone);
    }

    /// [`Self::touch_path`] for a path already resolved.
    fn touch_resolved(&self, inv: &dyn Invalidator, r: Resolved, gone: bool) {
        if let Some((parent, name)) = &r.parent {
            self.cache.invalidate(*parent);
            self.cache.dir_changed(*parent);
            self.kernel_inval_inode(inv, *parent);
            self.cache.no_entry(*parent, name);
            if self.cache.kernel_state(*parent).is_some() {
                inv.inval_entry(*parent, name);
            }
        }
        if let Some(ino) = r.ino {
            let targets = if gone { self.cache.subtree(ino) } else { vec![ino] };
            for t in targets {
                self.touch_ino(inv, t);
            }
        }
    }

    fn check(&self, ino: Ino) -> VfsResult<()> {
        if self.cache.is_stale(ino) {
            Err(VfsError::Stale)
        } else {
            Ok(())
        }
    }

    async fn call(&self, ctx: &RequestCtx, op: Op) -> VfsResult<(Reply, Payload)> {
        self.session.call(ctx, op, Bytes::new()).await
    }

    fn handle(&self, fh: Fh, ino: Ino) -> VfsResult<Arc<Handle>> {
        match self.handles.lock().get(&fh.0) {
            Some(h) if h.ino == ino => Ok(Arc::clone(h)),
            _ => Err(VfsError::BadHandle),
        }
    }

    fn new_handle(&self, ino: Ino, flags: OpenFlags) -> Fh {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(
            fh,
            Arc::new(Handle {
                ino,
                flags,
                next: AtomicU64::new(u64::MAX),
            }),
        );
        self.cache.opened(ino);
        Fh(fh)
    }

    /// Creates a node on the owner with `op` (mknod, mkdir, symlink) and records the new
    /// entry `parent/name`.
    async fn make_entry(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        op: Op,
        what: &'static str,
    ) -> VfsResult<Attr> {
        self.check(parent)?;
        let since = self.cache.now();
        let a = expect_attr(self.call(ctx, op).await?, what)?;
        self.entered(parent, name, a, since);
        Ok(a)
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
            && let Err(e) = self.session.call_now(Op::Forget { ino, nlookup: n }).await
        {
            tracing::trace!(ino = ino.0, "forget not sent: {e}");
        }
    }

    /// One block of `ino`, from the cache, a fetch in flight, or a new fetch.
    async fn block(self: &Arc<Self>, ctx: &RequestCtx, ino: Ino, idx: u64) -> VfsResult<Payload> {
        let mut rx = match self.blocks.next(ino, idx, true) {
            Some(Next::Hit(p)) => return Ok(p),
            Some(Next::Wait(rx)) => rx,
            Some(Next::Fetch { generation, tx }) => {
                let rx = tx.subscribe();
                self.rt.spawn(Arc::clone(self).fetch(*ctx, ino, idx, generation, tx));
                rx
            }
            None => return Err(VfsError::Io("block cache refused a read".into())),
        };
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| VfsError::Io("a block fetch was abandoned".into()))?
            .clone();
        match outcome {
            Some(Ok(p)) => Ok(p),
            Some(Err(e)) => Err(VfsError::from_errno(e)),
            None => Err(VfsError::Io("a block fetch was abandoned".into())),
        }
    }

    async fn fetch(
        self: Arc<Self>,
        ctx: RequestCtx,
        ino: Ino,
        idx: u64,
        generation: u64,
        tx: tokio::sync::watch::Sender<Option<Result<Payload, Errno>>>,
    ) {
        let size = u32::try_from(self.blocks.block).unwrap_or(MAX_IO);
        let r = self
            .call(
                &ctx,
                Op::Read {
                    ino,
                    offset: idx * self.blocks.block,
                    size,
                },
            )
            .await
            .and_then(|r| expect_bytes(r, "read"))
            .map_err(|e| e.errno());
        self.blocks.finish(ino, idx, generation, &r);
        let _ = tx.send(Some(r));
    }

    fn readahead(self: &Arc<Self>, ctx: &RequestCtx, ino: Ino, from: u64) {
        for idx in from..from + self.blocks.window {
            match self.blocks.next(ino, idx, false) {
                Some(Next::Fetch { generation, tx }) => {
                    self.rt.spawn(Arc::clone(self).fetch(*ctx, ino, idx, generation, tx));
                }
                Some(_) => {}
                None => {}
            }
        }
    }

    async fn read(self: &Arc<Self>, ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        let h = self.handle(fh, ino)?;
        if !h.flags.access().can_read() {
            return Err(VfsError::BadHandle);
        }
        self.check(ino)?;
        self.barrier.read_async(ino).await;
        if size == 0 {
            return Ok(Bytes::new());
        }
        let bs = self.blocks.block;
        let end = offset.saturating_add(u64::from(size));
        let (first, last) = (offset / bs, (end - 1) / bs);
        let sequential = h.next.swap(end, Ordering::Relaxed) == offset || offset == 0;
        let mut out: Option<BytesMut> = None;
        let mut single: Option<Bytes> = None;
        for idx in first..=last {
            let p = self.block(ctx, ino, idx).await?;
            let base = idx * bs;
            let from = offset.max(base) - base;
            let upto = (end.min(base + bs) - base).min(p.len() as u64);
            if from < upto {
                let piece = p.slice(from as usize, (upto - from) as usize);
                match (&mut out, &single) {
                    (None, None) => single = Some(piece),
                    (None, Some(s)) => {
                        let mut b = BytesMut::with_capacity(size as usize);
                        b.extend_from_slice(s);
                        b.extend_from_slice(&piece);
                        out = Some(b);
                        single = None;
                    }
                    (Some(b), _) => b.extend_from_slice(&piece),
                }
            }
            if (p.len() as u64) < bs {
                break; // end of file
            }
        }
        if sequential {
            self.readahead(ctx, ino, last + 1);
        }
        Ok(match (out, single) {
            (Some(b), _) => b.freeze(),
            (None, Some(s)) => s,
            (None, None) => Bytes::new(),
        })
    }

    /// Runs a change to the data of `ino` (`[start, end)`) in issue order: it waits for
    /// the acknowledgement of the change issued before it, and caches hold nothing of the
    /// range while it is in flight.
    async fn ordered<T>(
        &self,
        ino: Ino,
        start: u64,
        end: u64,
        f: impl std::future::Future<Output = VfsResult<T>>,
    ) -> VfsResult<T> {
        let ticket = self.barrier.begin_write(ino);
        ticket.wait_turn_async().await;
        self.cache.write_begin(ino);
        self.blocks.invalidate_range(ino, start, end);
        let r = f.await;
        self.blocks.invalidate_range(ino, start, end);
        self.cache.write_end(ino);
        ticket.complete();
        r
    }

    async fn write(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let h = self.handle(fh, ino)?;
        if !h.flags.access().can_write() {
            return Err(VfsError::BadHandle);
        }
        self.check(ino)?;
        let append = h.flags.append();
        let (start, end) = if append {
            (0, u64::MAX)
        } else {
            (offset, offset.saturating_add(data.len() as u64))
        };
        self.ordered(ino, start, end, async {
            let mut done = 0usize;
            for chunk in data.chunks(MAX_IO as usize) {
                let len = u32::try_from(chunk.len()).map_err(|_| VfsError::TooBig)?;
                let op = Op::Write {
                    ino,
                    offset: offset + done as u64,
                    append,
                    len,
                };
                let (reply, _) = self.session.call(ctx, op, Bytes::copy_from_slice(chunk)).await?;
                match reply {
                    Reply::Written(n) if n == len => done += chunk.len(),
                    Reply::Written(n) => return Ok(u32::try_from(done + n as usize).unwrap_or(u32::MAX)),
                    _ => return Err(protocol("write")),
                }
            }
            Ok(u32::try_from(done).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn readdir(&self, ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        self.check(ino)?;
        let max = max.max(1);
        let listing = match self.cache.listing(ino) {
            Some(l) => Some(l),
            None if cookie == 0 => self.fetch_listing(ctx, ino).await?,
            None => None,
        };
        if let Some(l) = listing {
            let start = if cookie == 0 {
                Some(0)
            } else {
                l.iter().position(|e| e.cookie == cookie).map(|i| i + 1)
            };
            if let Some(start) = start {
                return Ok(l.iter().skip(start).take(max).cloned().collect());
            }
        }
        let r = self
            .call(
                ctx,
                Op::Readdir {
                    ino,
                    cookie,
                    max: u32::try_from(max.min(MAX_ENTRIES)).unwrap_or(1),
                },
            )
            .await?;
        match r.0 {
            Reply::Entries(v) => Ok(v),
            _ => Err(protocol("readdir")),
        }
    }

    /// The whole listing of `dir`, cached (if it fits in 1,000,000 entries).
    async fn fetch_listing(&self, ctx: &RequestCtx, dir: Ino) -> VfsResult<Option<Arc<Vec<DirEntry>>>> {
        let since = self.cache.now();
        let mut all = Vec::new();
        let mut cookie = 0;
        loop {
            let r = self
                .call(
                    ctx,
                    Op::Readdir {
                        ino: dir,
                        cookie,
                        max: MAX_ENTRIES as u32,
                    },
                )
                .await?;
            let Reply::Entries(page) = r.0 else {
                return Err(protocol("readdir"));
            };
            let Some(last) = page.last() else { break };
            cookie = last.cookie;
            all.extend(page);
            if all.len() > 1_000_000 {
                return Ok(None);
            }
        }
        let all = Arc::new(all);
        self.cache.store_listing(dir, Arc::clone(&all), since);
        Ok(Some(all))
    }
}

impl VirtualFs for RemoteFs {
    fn source_id(&self) -> &str {
        &self.inner.source_id
    }

    fn inode_stability(&self) -> InodeStability {
        if self.inner.hello.lock().stable_inodes {
            InodeStability::Stable
        } else {
            InodeStability::Volatile
        }
    }

    async fn lookup(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
        let i = &self.inner;
        i.check(parent)?;
        i.barrier.read_async(parent).await;
        if let Some(a) = i.cache.lookup(parent, name.as_os_str()) {
            return Ok(a);
        }
        let since = i.cache.now();
        let op = Op::Lookup {
            parent,
            name: name.to_os_string(),
        };
        match i.call(ctx, op).await {
            Ok(r) => {
                let a = expect_attr(r, "lookup")?;
                i.cache.entered(parent, name.as_os_str(), a, true, since);
                Ok(a)
            }
            Err(e) => {
                if e.errno() == Errno::ENOENT {
                    i.cache.no_entry(parent, name.as_os_str());
                }
                Err(e)
            }
        }
    }

    async fn forget(&self, ino: Ino, nlookup: u64) {
        let remote = self.inner.cache.forget(ino, nlookup);
        if remote.is_some() {
            self.inner.forget_remote(ino, remote).await;
        }
    }

    async fn getattr(&self, ctx: &RequestCtx, ino: Ino, _fh: Option<Fh>) -> VfsResult<Attr> {
        let i = &self.inner;
        i.check(ino)?;
        i.barrier.read_async(ino).await;
        if let Some(a) = i.cache.attr(ino) {
            return Ok(a);
        }
        let since = i.cache.now();
        let a = expect_attr(i.call(ctx, Op::Getattr { ino }).await?, "getattr")?;
        i.cache.store_attr(a, since);
        Ok(a)
    }

    async fn setattr(&self, ctx: &RequestCtx, ino: Ino, mut set: SetAttr) -> VfsResult<Attr> {
        let i = &self.inner;
        i.check(ino)?;
        set.fh = None;
        let op = Op::Setattr { ino, set };
        let a = match set.size {
            Some(size) => {
                i.ordered(ino, size.min(u64::MAX - 1), u64::MAX, async {
                    expect_attr(i.call(ctx, op).await?, "setattr")
                })
                .await?
            }
            None => {
                let r = expect_attr(i.call(ctx, op).await?, "setattr");
                i.cache.invalidate(ino);
                r?
            }
        };
        Ok(a)
    }

    async fn readlink(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<OsString> {
        self.inner.check(ino)?;
        match self.inner.call(ctx, Op::Readlink { ino }).await?.0 {
            Reply::Target(t) => Ok(t),
            _ => Err(protocol("readlink")),
        }
    }

    async fn mknod(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
        rdev: u64,
    ) -> VfsResult<Attr> {
        let op = Op::Mknod {
            parent,
            name: name.to_os_string(),
            mode,
            umask,
            rdev,
        };
        self.inner.make_entry(ctx, parent, name, op, "mknod").await
    }

    async fn mkdir(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, mode: u32, umask: u32) -> VfsResult<Attr> {
        let op = Op::Mkdir {
            parent,
            name: name.to_os_string(),
            mode,
            umask,
        };
        self.inner.make_entry(ctx, parent, name, op, "mkdir").await
    }

    async fn unlink(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        let i = &self.inner;
        i.check(parent)?;
        let op = Op::Unlink {
            parent,
            name: name.to_os_string(),
        };
        let r = i.call(ctx, op).await;
        // Whatever the answer, what we knew of the name may be wrong now.
        if let Some(child) = i.cache.removed(parent, name.as_os_str()) {
            i.blocks.invalidate(child);
        }
        expect_unit(r?, "unlink")
    }

    async fn rmdir(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        let i = &self.inner;
        i.check(parent)?;
        let op = Op::Rmdir {
            parent,
            name: name.to_os_string(),
        };
        let r = i.call(ctx, op).await;
        i.cache.removed(parent, name.as_os_str());
        expect_unit(r?, "rmdir")
    }

    async fn symlink(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, target: &OsStr) -> VfsResult<Attr> {
        let op = Op::Symlink {
            parent,
            name: name.to_os_string(),
            target: target.to_os_string(),
        };
        self.inner.make_entry(ctx, parent, name, op, "symlink").await
    }

    async fn rename(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        newparent: Ino,
        newname: Name<'_>,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        let i = &self.inner;
        i.check(parent)?;
        i.check(newparent)?;
        let op = Op::Rename {
            parent,
            name: name.to_os_string(),
            newparent,
            newname: newname.to_os_string(),
            flags: flags.0,
        };
        let r = i.call(ctx, op).await;
        match &r {
            Ok(_) => i.cache.renamed(
                parent,
                name.as_os_str(),
                newparent,
                newname.as_os_str(),
                flags.exchange(),
            ),
            Err(_) => {
                // Refused (or unknown, if the link failed): forget both names, ask again.
                for (p, n) in [(parent, name), (newparent, newname)] {
                    i.cache.no_entry(p, n.as_os_str());
                    i.cache.dir_changed(p);
                }
            }
        }
        expect_unit(r?, "rename")
    }

    async fn link(&self, ctx: &RequestCtx, ino: Ino, newparent: Ino, newname: Name<'_>) -> VfsResult<Attr> {
        let i = &self.inner;
        i.check(ino)?;
        i.check(newparent)?;
        let since = i.cache.now();
        i.cache.invalidate(ino);
        let op = Op::Link {
            ino,
            newparent,
            newname: newname.to_os_string(),
        };
        let a = expect_attr(i.call(ctx, op).await?, "link")?;
        i.cache.invalidate(ino);
        i.entered(newparent, newname, a, since);
        Ok(a)
    }

    async fn open(&self, ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        let i = &self.inner;
        i.check(ino)?;
        let op = Op::Open { ino, flags: flags.0 };
        let attr = if flags.truncate() && flags.access().can_write() {
            i.ordered(ino, 0, u64::MAX, async { expect_attr(i.call(ctx, op).await?, "open") })
                .await?
        } else {
            expect_attr(i.call(ctx, op).await?, "open")?
        };
        if attr.kind == vfs_core::FileType::Directory && flags.access().can_write() {
            return Err(VfsError::IsDir);
        }
        Ok(i.new_handle(ino, flags))
    }

    async fn create(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> VfsResult<(Attr, Fh)> {
        let i = &self.inner;
        i.check(parent)?;
        let since = i.cache.now();
        let op = Op::Create {
            parent,
            name: name.to_os_string(),
            mode,
            umask,
            flags: flags.0,
        };
        let a = expect_attr(i.call(ctx, op).await?, "create")?;
        i.blocks.invalidate(a.ino);
        i.cache.invalidate(a.ino);
        i.entered(parent, name, a, since);
        Ok((a, i.new_handle(a.ino, flags)))
    }

    async fn read(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        self.inner.read(ctx, ino, fh, offset, size).await
    }

    async fn write(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> VfsResult<u32> {
        self.inner.write(ctx, ino, fh, offset, data).await
    }

    async fn flush(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        // Writes are acknowledged one by one: nothing is buffered here.
        self.inner.handle(fh, ino).map(|_| ())
    }

    async fn fsync(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, datasync: bool) -> VfsResult<()> {
        let i = &self.inner;
        i.handle(fh, ino)?;
        i.check(ino)?;
        i.barrier.read_async(ino).await;
        expect_unit(i.call(ctx, Op::Fsync { ino, datasync }).await?, "fsync")
    }

    async fn release(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        let i = &self.inner;
        let h = i.handles.lock().remove(&fh.0);
        let Some(h) = h.filter(|h| h.ino == ino) else {
            return Err(VfsError::BadHandle);
        };
        if let Err(e) = i.session.call_now(Op::Release { ino: h.ino }).await {
            tracing::trace!(ino = ino.0, "release not sent: {e}");
        }
        // The file may be gone now (unlinked while open): ask again next time.
        i.cache.invalidate(ino);
        let remote = i.cache.closed(ino);
        if remote.is_some() {
            i.forget_remote(ino, remote).await;
        }
        Ok(())
    }

    async fn readdir(&self, ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        self.inner.readdir(ctx, ino, cookie, max).await
    }

    async fn statfs(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<StatFs> {
        match self.inner.call(ctx, Op::Statfs { ino }).await?.0 {
            Reply::StatFs(s) => Ok(s),
            _ => Err(protocol("statfs")),
        }
    }

    async fn access(&self, ctx: &RequestCtx, ino: Ino, mask: u32) -> VfsResult<()> {
        self.inner.check(ino)?;
        expect_unit(self.inner.call(ctx, Op::Access { ino, mask }).await?, "access")
    }

    async fn getxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<Bytes> {
        self.inner.check(ino)?;
        let op = Op::Getxattr {
            ino,
            name: name.to_os_string(),
        };
        Ok(expect_bytes(self.inner.call(ctx, op).await?, "getxattr")?.into_bytes())
    }

    async fn setxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr, value: &[u8], how: XattrSet) -> VfsResult<()> {
        let i = &self.inner;
        i.check(ino)?;
        vfs_core::check_xattr(name, Some(value))?;
        let op = Op::Setxattr {
            ino,
            name: name.to_os_string(),
            how: match how {
                XattrSet::Any => 0,
                XattrSet::Create => 1,
                XattrSet::Replace => 2,
            },
            len: u32::try_from(value.len()).map_err(|_| VfsError::TooBig)?,
        };
        let r = i.session.call(ctx, op, Bytes::copy_from_slice(value)).await;
        i.cache.invalidate(ino);
        expect_unit(r?, "setxattr")
    }

    async fn listxattr(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<Vec<OsString>> {
        self.inner.check(ino)?;
        let p = expect_bytes(self.inner.call(ctx, Op::Listxattr { ino }).await?, "listxattr")?;
        Ok(p.into_bytes()
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsString::from_vec(n.to_vec()))
            .collect())
    }

    async fn removexattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<()> {
        let i = &self.inner;
        i.check(ino)?;
        let op = Op::Removexattr {
            ino,
            name: name.to_os_string(),
        };
        let r = i.call(ctx, op).await;
        i.cache.invalidate(ino);
        expect_unit(r?, "removexattr")
    }

    async fn fallocate(
        &self,
        ctx: &RequestCtx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> VfsResult<()> {
        let i = &self.inner;
        let h = i.handle(fh, ino)?;
        if !h.flags.access().can_write() {
            return Err(VfsError::BadHandle);
        }
        i.check(ino)?;
        let op = Op::Fallocate {
            ino,
            offset,
            length,
            mode,
        };
        i.ordered(ino, offset, offset.saturating_add(length), async {
            expect_unit(i.call(ctx, op).await?, "fallocate")
        })
        .await
    }
}
