//! The [`VirtualFs`] impl: each method is the typed call of its operation
//! ([`super::session::Caller`], generated from `crate::ops`) plus what this side keeps
//! true around it.
//!
//! Invariant: every method checks the inodes it names are not stale, waits for the
//! writes issued before it where it reads (lookup, getattr, read, fsync), and updates the
//! caches only with what the owner answered: a name is cached only as the answer of a
//! lookup or of the operation that made it, and whatever an operation may have changed
//! is invalidated whether it succeeded or not. Listings are cached whole.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

use bytes::Bytes;
use vfs_core::{
    Attr, DirEntry, Errno, Fh, Ino, InodeStability, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs,
    VfsError, VfsResult, VirtualFs, XattrSet,
};

use super::{Inner, RemoteFs};
use crate::wire::MAX_ENTRIES;

impl Inner {
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
        let max = u32::try_from(max.min(MAX_ENTRIES)).unwrap_or(1);
        self.session.on(ctx).readdir(ino, cookie, max).await
    }

    /// The whole listing of `dir`, cached (if it fits in 1,000,000 entries).
    async fn fetch_listing(&self, ctx: &RequestCtx, dir: Ino) -> VfsResult<Option<Arc<Vec<DirEntry>>>> {
        let since = self.cache.now();
        let mut all = Vec::new();
        let mut cookie = 0;
        loop {
            let page = self.session.on(ctx).readdir(dir, cookie, MAX_ENTRIES as u32).await?;
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

    /// Sends the owner's change reports to `inv` (`set_invalidator`). The promise stays
    /// [`vfs_core::ChangeSource::Unknown`] (the mount's own TTLs) until it is checked that
    /// nothing is missed across a lost link.
    fn report_changes(&self, inv: Arc<dyn vfs_core::Invalidator>) -> vfs_core::ChangeSource {
        self.set_invalidator(inv);
        vfs_core::ChangeSource::Unknown
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
        match i.session.on(ctx).lookup(parent, name.to_os_string()).await {
            Ok(a) => {
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
        let a = i.session.on(ctx).getattr(ino).await?;
        i.cache.store_attr(a, since);
        Ok(a)
    }

    async fn setattr(&self, ctx: &RequestCtx, ino: Ino, mut set: SetAttr) -> VfsResult<Attr> {
        let i = &self.inner;
        i.check(ino)?;
        set.fh = None;
        if let Some((uid, gid)) = i.cfg.idmap.shown() {
            // "To me": the owner's files are its identity's already.
            set.uid = set.uid.filter(|u| *u != uid);
            set.gid = set.gid.filter(|g| *g != gid);
        }
        let call = i.session.on(ctx).setattr(ino, set);
        let a = match set.size {
            Some(size) => i.ordered(ino, size.min(u64::MAX - 1), u64::MAX, call).await?,
            None => {
                let r = call.await;
                i.cache.invalidate(ino);
                r?
            }
        };
        Ok(a)
    }

    async fn readlink(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<OsString> {
        self.inner.check(ino)?;
        self.inner.session.on(ctx).readlink(ino).await
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
        let call = self
            .inner
            .session
            .on(ctx)
            .mknod(parent, name.to_os_string(), mode, umask, rdev);
        self.inner.make_entry(parent, name, call).await
    }

    async fn mkdir(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, mode: u32, umask: u32) -> VfsResult<Attr> {
        let call = self
            .inner
            .session
            .on(ctx)
            .mkdir(parent, name.to_os_string(), mode, umask);
        self.inner.make_entry(parent, name, call).await
    }

    async fn unlink(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        let i = &self.inner;
        i.check(parent)?;
        let _busy = i.unnaming(&[(parent, name)]);
        let r = i.session.on(ctx).unlink(parent, name.to_os_string()).await;
        // Whatever the answer, what we knew of the name may be wrong now.
        if let Some(child) = i.cache.removed(parent, name.as_os_str()) {
            i.blocks.invalidate(child);
        }
        r
    }

    async fn rmdir(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        let i = &self.inner;
        i.check(parent)?;
        let _busy = i.unnaming(&[(parent, name)]);
        let r = i.session.on(ctx).rmdir(parent, name.to_os_string()).await;
        i.cache.removed(parent, name.as_os_str());
        r
    }

    async fn symlink(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, target: &OsStr) -> VfsResult<Attr> {
        let call = self
            .inner
            .session
            .on(ctx)
            .symlink(parent, name.to_os_string(), target.to_os_string());
        self.inner.make_entry(parent, name, call).await
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
        let moved = i.unnaming(&[(parent, name)]);
        let replaced = i.unnaming(&[(newparent, newname)]);
        let r = i
            .session
            .on(ctx)
            .rename(parent, name.to_os_string(), newparent, newname.to_os_string(), flags.0)
            .await;
        match &r {
            Ok(_) => {
                let sure = i.cache.undisturbed(&moved.names) && i.cache.undisturbed(&replaced.names);
                i.cache.renamed(
                    parent,
                    name.as_os_str(),
                    newparent,
                    newname.as_os_str(),
                    flags.exchange(),
                    sure,
                );
                if !flags.exchange() {
                    // The replaced file's number may be reused for a new object: its
                    // blocks must not be served for that one.
                    for ino in replaced.inos() {
                        i.blocks.invalidate(*ino);
                    }
                }
            }
            Err(_) => {
                // Refused (or unknown, if the link failed): forget both names, ask again.
                for (p, n) in [(parent, name), (newparent, newname)] {
                    i.cache.no_entry(p, n.as_os_str());
                    i.cache.dir_changed(p);
                }
            }
        }
        r
    }

    async fn link(&self, ctx: &RequestCtx, ino: Ino, newparent: Ino, newname: Name<'_>) -> VfsResult<Attr> {
        let i = &self.inner;
        i.check(ino)?;
        i.check(newparent)?;
        let since = i.cache.now();
        i.cache.invalidate(ino);
        let a = i.session.on(ctx).link(ino, newparent, newname.to_os_string()).await?;
        i.cache.invalidate(ino);
        i.entered(newparent, newname, a, since);
        Ok(a)
    }

    async fn open(&self, ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        let i = &self.inner;
        i.check(ino)?;
        let call = i.session.on(ctx).open(ino, flags.0);
        let attr = if flags.truncate() && flags.access().can_write() {
            i.ordered(ino, 0, u64::MAX, call).await?
        } else {
            call.await?
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
        let a = i
            .session
            .on(ctx)
            .create(parent, name.to_os_string(), mode, umask, flags.0)
            .await?;
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
        i.session.on(ctx).fsync(ino, datasync).await
    }

    async fn release(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        let i = &self.inner;
        let h = i.handles.remove(&mut super::entry_token(), ino, fh)?;
        if let Err(e) = i.session.now().release(h.ino).await {
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
        self.inner.session.on(ctx).statfs(ino).await
    }

    async fn access(&self, ctx: &RequestCtx, ino: Ino, mask: u32) -> VfsResult<()> {
        self.inner.check(ino)?;
        self.inner.session.on(ctx).access(ino, mask).await
    }

    async fn getxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<Bytes> {
        self.inner.check(ino)?;
        let value = self.inner.session.on(ctx).getxattr(ino, name.to_os_string()).await?;
        Ok(value.into_bytes())
    }

    async fn setxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr, value: &[u8], how: XattrSet) -> VfsResult<()> {
        let i = &self.inner;
        i.check(ino)?;
        vfs_core::check_xattr(name, Some(value))?;
        let how = match how {
            XattrSet::Any => 0,
            XattrSet::Create => 1,
            XattrSet::Replace => 2,
        };
        let len = u32::try_from(value.len()).map_err(|_| VfsError::TooBig)?;
        let body = Bytes::copy_from_slice(value);
        let r = i
            .session
            .on(ctx)
            .setxattr(ino, name.to_os_string(), how, len, body)
            .await;
        i.cache.invalidate(ino);
        r
    }

    async fn listxattr(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<Vec<OsString>> {
        self.inner.check(ino)?;
        let p = self.inner.session.on(ctx).listxattr(ino).await?;
        Ok(p.into_bytes()
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| OsString::from_vec(n.to_vec()))
            .collect())
    }

    async fn removexattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<()> {
        let i = &self.inner;
        i.check(ino)?;
        let r = i.session.on(ctx).removexattr(ino, name.to_os_string()).await;
        i.cache.invalidate(ino);
        r
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
        let call = i.session.on(ctx).fallocate(ino, offset, length, mode);
        i.ordered(ino, offset, offset.saturating_add(length), call).await
    }
}
