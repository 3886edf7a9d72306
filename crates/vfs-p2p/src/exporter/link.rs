//! One peer's link: the side effects of its requests on the owner.
//!
//! Invariant: a link holds on the backend exactly what its peer asked for and has not
//! given back: one [`HeldHandle`] per open not yet released, and the lookups counted for
//! it minus those it forgot; when the link ends, all of it is released ([`LinkHandler::end`]).
//! Every change made through the link is announced (see the [parent module](super)).
//! The translation of a request into a backend call is not here: it is generated
//! ([`super::serve`]); the methods below override it only where a side effect is due.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use vfs_core::notify::Change;
use vfs_core::pool::HeldHandle;
use vfs_core::{
    Attr, DirEntry, Errno, Fh, Ino, InodeStability, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, VfsError,
    VfsResult, VirtualFs,
};

use super::serve::{Answer, Serve, dispatch, plain};
use super::{Exporter, rights};
use crate::identity::PublicKey;
use crate::rpc::Handler;
use crate::wire::{MAX_IO, Op, Payload, Reply, Request, VERSION};

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

/// Serves one link of an [`Exporter`].
pub(super) struct LinkHandler<F: VirtualFs> {
    exp: Arc<Exporter<F>>,
    state: Mutex<LinkState<F>>,
}

/// Open flags a peer may ask for: the access mode, append, truncate, synchronous writes.
fn open_flags(raw: i32) -> OpenFlags {
    OpenFlags(raw & (libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC))
}

impl<F: VirtualFs> Handler for LinkHandler<F> {
    /// Every request runs as the exporter's identity, whatever `req.ctx` claims, once
    /// [`rights::admit`] let it through (the key's right, the setid and device rules, and
    /// for a non-root identity the kernel's permission checks).
    async fn handle(&self, peer: PublicKey, req: Request, body: Payload) -> Answer {
        if let Op::Hello { .. } = req.op {
            return dispatch(self, RequestCtx::ROOT, req.op, body).await;
        }
        let Some(right) = self.exp.right_of(&peer) else {
            return Err(Errno::EACCES);
        };
        let who = self.exp.identity().await.map_err(|e| e.errno())?;
        let pinned = |ino, write| self.pinned(ino, write, false).is_some();
        rights::admit(self.fs(), &self.exp.cfg.peers, right, &who, &req.op, pinned)
            .await
            .map_err(|e| e.errno())?;
        dispatch(self, who, req.op, body).await
    }
}

impl<F: VirtualFs> LinkHandler<F> {
    pub(super) fn new(exp: Arc<Exporter<F>>) -> LinkHandler<F> {
        LinkHandler {
            exp,
            state: Mutex::new(LinkState::default()),
        }
    }

    fn fs(&self) -> &F {
        &self.exp.fs
    }

    fn counted(&self, attr: &Attr, parent: Ino, name: &OsStr) {
        *self.state.lock().lookups.entry(attr.ino).or_default() += 1;
        self.exp.remember(attr.ino, parent, name);
    }

    /// A handle of `ino` this link holds open that can read (or write, with `write`), as
    /// `(fh, append)`.
    fn pinned(&self, ino: Ino, write: bool, append: bool) -> Option<Fh> {
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

    fn any_pin(&self, ino: Ino) -> Option<Fh> {
        self.state
            .lock()
            .pins
            .get(&ino)
            .and_then(|v| v.first())
            .map(HeldHandle::fh)
    }

    fn pin(&self, held: HeldHandle<F>) {
        self.state.lock().pins.entry(held.ino()).or_default().push(held);
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

    /// After a new entry `parent/name` was made: counted, remembered, announced.
    async fn created(&self, parent: Ino, name: &OsStr, attr: Attr) -> VfsResult<Attr> {
        self.counted(&attr, parent, name);
        self.exp.announce_created(parent, name, attr).await;
        self.exp.announce_update(parent, None).await;
        Ok(attr)
    }

    /// Before removing `parent/name`: what it names, its lookup given back (the removal
    /// itself must not keep it alive).
    async fn victim(&self, ctx: &RequestCtx, parent: Ino, name: &OsStr) -> VfsResult<Option<Attr>> {
        let victim = self.fs().lookup(ctx, parent, Name::new(name)?).await.ok();
        if let Some(v) = &victim {
            self.fs().forget(v.ino, 1).await;
        }
        Ok(victim)
    }

    /// After `parent/name` was removed: announced, its name and pooled handle dropped.
    async fn removed(&self, parent: Ino, name: &OsStr, victim: Option<Attr>) {
        self.exp.announce_removed(parent, name).await;
        if let Some(v) = victim {
            self.exp.forget_name(v.ino, parent, name);
            self.exp.pool.invalidate(v.ino).await;
        }
        self.exp.announce_update(parent, None).await;
    }

    /// After a listing of `dir`: the names it gave are remembered.
    fn listed<'a>(&self, dir: Ino, entries: impl Iterator<Item = &'a DirEntry>) {
        for e in entries.filter(|e| e.name != "." && e.name != "..") {
            self.exp.remember(e.ino, dir, &e.name);
        }
    }

    /// After a change to the data or metadata of `ino`.
    async fn changed(&self, ino: Ino) {
        self.exp.announce_update(ino, self.any_pin(ino)).await;
    }

    /// The link ended: release every handle it held and forget every lookup it counted.
    pub(super) async fn end(&self) {
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

/// The side effects of each operation; the translation is generated ([`super::serve`]).
/// Operations not overridden here (readlink, statfs, access, getxattr, listxattr) are
/// the plain call alone.
impl<F: VirtualFs> Serve for LinkHandler<F> {
    type Fs = F;

    fn backend(&self) -> &F {
        self.fs()
    }

    async fn hello(&self, _ctx: RequestCtx, min_version: u8, max_version: u8, _body: Payload) -> VfsResult<Reply> {
        if !(min_version..=max_version).contains(&VERSION) {
            return Err(VfsError::from_errno(Errno::from_raw(libc::EPROTO)));
        }
        let fs = self.fs();
        Ok(Reply::Hello {
            version: VERSION,
            source_id: fs.source_id().to_owned(),
            stable_inodes: fs.inode_stability() == InodeStability::Stable,
            max_io: MAX_IO,
        })
    }

    async fn lookup(&self, ctx: RequestCtx, parent: Ino, name: OsString, body: Payload) -> VfsResult<Attr> {
        let attr = plain::lookup(self.fs(), &ctx, parent, name.clone(), body).await?;
        self.counted(&attr, parent, &name);
        Ok(attr)
    }

    /// Only what this link counted is forgotten.
    async fn forget(&self, _ctx: RequestCtx, ino: Ino, nlookup: u64, _body: Payload) -> VfsResult<()> {
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
            self.fs().forget(ino, n).await;
        }
        Ok(())
    }

    async fn getattr(&self, ctx: RequestCtx, ino: Ino, _body: Payload) -> VfsResult<Attr> {
        self.fs().getattr(&ctx, ino, self.any_pin(ino)).await
    }

    async fn setattr(&self, ctx: RequestCtx, ino: Ino, mut set: SetAttr, body: Payload) -> VfsResult<Attr> {
        set.fh = if set.size.is_some() {
            self.pinned(ino, true, false)
        } else {
            self.any_pin(ino)
        };
        let attr = plain::setattr(self.fs(), &ctx, ino, set, body).await?;
        self.exp.announce_attr(ino, attr).await;
        Ok(attr)
    }

    async fn mknod(
        &self,
        ctx: RequestCtx,
        parent: Ino,
        name: OsString,
        mode: u32,
        umask: u32,
        rdev: u64,
        body: Payload,
    ) -> VfsResult<Attr> {
        let attr = plain::mknod(self.fs(), &ctx, parent, name.clone(), mode, umask, rdev, body).await?;
        self.created(parent, &name, attr).await
    }

    async fn mkdir(
        &self,
        ctx: RequestCtx,
        parent: Ino,
        name: OsString,
        mode: u32,
        umask: u32,
        body: Payload,
    ) -> VfsResult<Attr> {
        let attr = plain::mkdir(self.fs(), &ctx, parent, name.clone(), mode, umask, body).await?;
        self.created(parent, &name, attr).await
    }

    async fn symlink(
        &self,
        ctx: RequestCtx,
        parent: Ino,
        name: OsString,
        target: OsString,
        body: Payload,
    ) -> VfsResult<Attr> {
        let attr = plain::symlink(self.fs(), &ctx, parent, name.clone(), target, body).await?;
        self.created(parent, &name, attr).await
    }

    async fn link(
        &self,
        ctx: RequestCtx,
        ino: Ino,
        newparent: Ino,
        newname: OsString,
        body: Payload,
    ) -> VfsResult<Attr> {
        let attr = plain::link(self.fs(), &ctx, ino, newparent, newname.clone(), body).await?;
        self.created(newparent, &newname, attr).await
    }

    async fn unlink(&self, ctx: RequestCtx, parent: Ino, name: OsString, body: Payload) -> VfsResult<()> {
        let victim = self.victim(&ctx, parent, &name).await?;
        plain::unlink(self.fs(), &ctx, parent, name.clone(), body).await?;
        self.removed(parent, &name, victim).await;
        Ok(())
    }

    async fn rmdir(&self, ctx: RequestCtx, parent: Ino, name: OsString, body: Payload) -> VfsResult<()> {
        let victim = self.victim(&ctx, parent, &name).await?;
        plain::rmdir(self.fs(), &ctx, parent, name.clone(), body).await?;
        self.removed(parent, &name, victim).await;
        Ok(())
    }

    async fn rename(
        &self,
        ctx: RequestCtx,
        parent: Ino,
        name: OsString,
        newparent: Ino,
        newname: OsString,
        flags: u32,
        body: Payload,
    ) -> VfsResult<()> {
        let fs = self.fs();
        let exchange = RenameFlags(flags).validate()?.exchange();
        let (from, to) = (Name::new(&name)?, Name::new(&newname)?);
        let from_path = self.exp.child_path(parent, &name);
        let to_path = self.exp.child_path(newparent, &newname);
        let moved = fs.lookup(&ctx, parent, from).await.ok();
        let replaced = fs.lookup(&ctx, newparent, to).await.ok();
        for a in moved.iter().chain(replaced.iter()) {
            fs.forget(a.ino, 1).await;
        }
        plain::rename(fs, &ctx, parent, name.clone(), newparent, newname.clone(), flags, body).await?;
        let (n, newname) = (name.as_os_str(), newname.as_os_str());
        if exchange {
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
        Ok(())
    }

    /// Held open until the matching release; a truncation is announced.
    async fn open(&self, ctx: RequestCtx, ino: Ino, flags: i32, _body: Payload) -> VfsResult<Attr> {
        let flags = open_flags(flags);
        let held = self.exp.pool.open_held(&ctx, ino, flags).await?;
        let attr = self.fs().getattr(&ctx, ino, Some(held.fh())).await;
        self.pin(held);
        let attr = attr?;
        if flags.truncate() {
            self.exp.announce_attr(ino, attr).await;
        }
        Ok(attr)
    }

    /// Held open until the matching release; announced as a creation if exclusive,
    /// else as an update (the file may have existed).
    async fn create(
        &self,
        ctx: RequestCtx,
        parent: Ino,
        name: OsString,
        mode: u32,
        umask: u32,
        flags: i32,
        _body: Payload,
    ) -> VfsResult<Attr> {
        let exclusive = flags & libc::O_EXCL != 0;
        let flags = open_flags(flags);
        let create_flags = OpenFlags(flags.0 | libc::O_CREAT | if exclusive { libc::O_EXCL } else { 0 });
        let (attr, fh) = self
            .fs()
            .create(&ctx, parent, Name::new(&name)?, mode, umask, create_flags)
            .await?;
        self.pin(self.exp.pool.adopt(&ctx, attr.ino, fh, flags));
        if exclusive {
            self.created(parent, &name, attr).await
        } else {
            // It may have existed: an update, which a later removal cannot cancel.
            self.counted(&attr, parent, &name);
            self.exp.announce_attr(attr.ino, attr).await;
            self.exp.announce_update(parent, None).await;
            Ok(attr)
        }
    }

    /// Through a handle this link holds, else through the pool.
    async fn read(&self, ctx: RequestCtx, ino: Ino, offset: u64, size: u32, _body: Payload) -> VfsResult<Bytes> {
        let size = size.min(MAX_IO);
        match self.pinned(ino, false, false) {
            Some(fh) => self.fs().read(&ctx, ino, fh, offset, size).await,
            None => self.exp.pool.read(&ctx, ino, offset, size).await,
        }
    }

    /// Through a handle this link holds (of the same append mode), else through the pool.
    async fn write(
        &self,
        ctx: RequestCtx,
        ino: Ino,
        offset: u64,
        append: bool,
        _len: u32,
        body: Payload,
    ) -> VfsResult<u32> {
        let data = body.into_bytes();
        let fs = self.fs();
        let n = match self.pinned(ino, true, append) {
            Some(fh) => fs.write(&ctx, ino, fh, offset, &data).await,
            None => {
                let at = if append {
                    fs.getattr(&ctx, ino, None).await?.size
                } else {
                    offset
                };
                self.exp.pool.write(&ctx, ino, at, &data).await
            }
        }?;
        self.changed(ino).await;
        Ok(n)
    }

    async fn fsync(&self, ctx: RequestCtx, ino: Ino, datasync: bool, _body: Payload) -> VfsResult<()> {
        match self.any_pin(ino) {
            Some(fh) => self.fs().fsync(&ctx, ino, fh, datasync).await,
            None => self.exp.pool.fsync(&ctx, ino, datasync).await,
        }
    }

    async fn readdir(
        &self,
        ctx: RequestCtx,
        ino: Ino,
        cookie: u64,
        max: u32,
        body: Payload,
    ) -> VfsResult<Vec<DirEntry>> {
        let entries = plain::readdir(self.fs(), &ctx, ino, cookie, max, body).await?;
        self.listed(ino, entries.iter());
        Ok(entries)
    }

    async fn readdirplus(
        &self,
        ctx: RequestCtx,
        ino: Ino,
        cookie: u64,
        max: u32,
        body: Payload,
    ) -> VfsResult<Vec<vfs_core::DirEntryPlus>> {
        let entries = plain::readdirplus(self.fs(), &ctx, ino, cookie, max, body).await?;
        self.listed(ino, entries.iter().map(|e| &e.entry));
        Ok(entries)
    }

    async fn setxattr(
        &self,
        ctx: RequestCtx,
        ino: Ino,
        name: OsString,
        how: u8,
        len: u32,
        body: Payload,
    ) -> VfsResult<()> {
        plain::setxattr(self.fs(), &ctx, ino, name, how, len, body).await?;
        self.changed(ino).await;
        Ok(())
    }

    async fn removexattr(&self, ctx: RequestCtx, ino: Ino, name: OsString, body: Payload) -> VfsResult<()> {
        plain::removexattr(self.fs(), &ctx, ino, name, body).await?;
        self.changed(ino).await;
        Ok(())
    }

    /// Through a writable handle this link holds, else through one opened for it.
    async fn fallocate(
        &self,
        ctx: RequestCtx,
        ino: Ino,
        offset: u64,
        length: u64,
        mode: i32,
        _body: Payload,
    ) -> VfsResult<()> {
        let fs = self.fs();
        match self.pinned(ino, true, false) {
            Some(fh) => fs.fallocate(&ctx, ino, fh, offset, length, mode).await,
            None => {
                let held = self.exp.pool.open_held(&ctx, ino, OpenFlags::WRONLY).await?;
                let r = fs.fallocate(&ctx, ino, held.fh(), offset, length, mode).await;
                held.close().await;
                r
            }
        }?;
        self.changed(ino).await;
        Ok(())
    }

    /// Closes one of the handles this link holds of `ino`.
    async fn release(&self, _ctx: RequestCtx, ino: Ino, _body: Payload) -> VfsResult<()> {
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
        Ok(())
    }
}
