//! Mutant backends for the testkit's own tests: `MemFs` with one classic mistake each.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};

use bytes::Bytes;
use vfs_core::memfs::MemFs;
use vfs_core::testkit::Backend;
use vfs_core::{
    Attr, DirEntry, Fh, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs, Timestamp, VfsResult,
    VirtualFs, XattrSet,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bug {
    /// Publishes a write's new size in one critical section and copies its data in
    /// another: the shape of seed 000 bug one (fields touched under different locks).
    SizeBeforeData,
    /// Forgets to change the moved inode's ctime on rename.
    NoCtimeOnRename,
    /// Cookies are positions in the listing: removing an earlier entry skips a later one.
    PositionalCookies,
    /// Once a file has been read, later writes are acknowledged and dropped: the symptom
    /// of seed 003 (#178), writes silently lost after a READ pooled a read-only handle.
    LosesWriteAfterRead,
    /// Rename removes the target, then moves the source: the name is briefly missing.
    NonAtomicRename,
}

pub struct Mutant {
    inner: MemFs,
    bug: Bug,
    /// NoCtimeOnRename: the ctime each renamed inode had before its rename.
    frozen_ctime: Mutex<HashMap<Ino, Timestamp>>,
    /// LosesWriteAfterRead: inodes read so far.
    read: Mutex<HashSet<Ino>>,
}

pub fn backend(bug: Bug) -> Backend<Mutant> {
    Backend::new(Mutant {
        inner: MemFs::new(),
        bug,
        frozen_ctime: Mutex::default(),
        read: Mutex::default(),
    })
}

impl Mutant {
    fn patch(&self, mut a: Attr) -> Attr {
        if let Some(t) = self.frozen_ctime.lock().get(&a.ino) {
            a.ctime = *t;
        }
        a
    }
}

impl VirtualFs for Mutant {
    fn source_id(&self) -> &str {
        self.inner.source_id()
    }
    async fn lookup(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
        self.inner.lookup(ctx, parent, name).await.map(|a| self.patch(a))
    }
    async fn getattr(&self, ctx: &RequestCtx, ino: Ino, fh: Option<Fh>) -> VfsResult<Attr> {
        self.inner.getattr(ctx, ino, fh).await.map(|a| self.patch(a))
    }
    async fn setattr(&self, ctx: &RequestCtx, ino: Ino, set: SetAttr) -> VfsResult<Attr> {
        self.frozen_ctime.lock().remove(&ino);
        self.inner.setattr(ctx, ino, set).await
    }
    async fn readlink(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<OsString> {
        self.inner.readlink(ctx, ino).await
    }
    async fn mknod(&self, ctx: &RequestCtx, p: Ino, n: Name<'_>, mode: u32, umask: u32, rdev: u64) -> VfsResult<Attr> {
        self.inner.mknod(ctx, p, n, mode, umask, rdev).await
    }
    async fn mkdir(&self, ctx: &RequestCtx, p: Ino, n: Name<'_>, mode: u32, umask: u32) -> VfsResult<Attr> {
        self.inner.mkdir(ctx, p, n, mode, umask).await
    }
    async fn unlink(&self, ctx: &RequestCtx, p: Ino, n: Name<'_>) -> VfsResult<()> {
        self.inner.unlink(ctx, p, n).await
    }
    async fn rmdir(&self, ctx: &RequestCtx, p: Ino, n: Name<'_>) -> VfsResult<()> {
        self.inner.rmdir(ctx, p, n).await
    }
    async fn symlink(&self, ctx: &RequestCtx, p: Ino, n: Name<'_>, target: &OsStr) -> VfsResult<Attr> {
        self.inner.symlink(ctx, p, n, target).await
    }
    async fn rename(
        &self,
        ctx: &RequestCtx,
        p: Ino,
        n: Name<'_>,
        np: Ino,
        nn: Name<'_>,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        match self.bug {
            Bug::NoCtimeOnRename => {
                let moved = self.inner.lookup(ctx, p, n).await?;
                let before = self.patch(moved).ctime;
                self.inner.rename(ctx, p, n, np, nn, flags).await?;
                self.frozen_ctime.lock().insert(moved.ino, before);
                Ok(())
            }
            Bug::NonAtomicRename if flags == RenameFlags::NONE => {
                if let Ok(target) = self.inner.lookup(ctx, np, nn).await
                    && target.kind != vfs_core::FileType::Directory
                {
                    self.inner.unlink(ctx, np, nn).await?;
                    std::thread::yield_now();
                }
                self.inner.rename(ctx, p, n, np, nn, flags).await
            }
            _ => self.inner.rename(ctx, p, n, np, nn, flags).await,
        }
    }
    async fn link(&self, ctx: &RequestCtx, ino: Ino, np: Ino, nn: Name<'_>) -> VfsResult<Attr> {
        self.frozen_ctime.lock().remove(&ino);
        self.inner.link(ctx, ino, np, nn).await
    }
    async fn open(&self, ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        self.inner.open(ctx, ino, flags).await
    }
    async fn create(
        &self,
        ctx: &RequestCtx,
        p: Ino,
        n: Name<'_>,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> VfsResult<(Attr, Fh)> {
        self.inner.create(ctx, p, n, mode, umask, flags).await
    }
    async fn read(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        self.read.lock().insert(ino);
        self.inner.read(ctx, ino, fh, offset, size).await
    }
    async fn write(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> VfsResult<u32> {
        match self.bug {
            Bug::SizeBeforeData if !data.is_empty() => {
                let size = self.inner.getattr(ctx, ino, None).await?.size;
                let end = offset + data.len() as u64;
                if end > size {
                    self.inner.setattr(ctx, ino, SetAttr::size(end)).await?;
                }
                std::thread::yield_now();
                self.inner.write(ctx, ino, fh, offset, data).await
            }
            Bug::LosesWriteAfterRead if self.read.lock().contains(&ino) => Ok(data.len() as u32),
            _ => self.inner.write(ctx, ino, fh, offset, data).await,
        }
    }
    async fn fsync(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, datasync: bool) -> VfsResult<()> {
        self.inner.fsync(ctx, ino, fh, datasync).await
    }
    async fn release(&self, ctx: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        self.inner.release(ctx, ino, fh).await
    }
    async fn readdir(&self, ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        if self.bug != Bug::PositionalCookies {
            return self.inner.readdir(ctx, ino, cookie, max).await;
        }
        let all = self.inner.readdir(ctx, ino, 0, usize::MAX).await?;
        Ok(all
            .into_iter()
            .enumerate()
            .skip(cookie as usize)
            .take(max)
            .map(|(i, e)| DirEntry {
                cookie: i as u64 + 1,
                ..e
            })
            .collect())
    }
    async fn statfs(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<StatFs> {
        self.inner.statfs(ctx, ino).await
    }
    async fn getxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<Bytes> {
        self.inner.getxattr(ctx, ino, name).await
    }
    async fn setxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr, value: &[u8], how: XattrSet) -> VfsResult<()> {
        self.inner.setxattr(ctx, ino, name, value, how).await
    }
    async fn listxattr(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<Vec<OsString>> {
        self.inner.listxattr(ctx, ino).await
    }
    async fn removexattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<()> {
        self.inner.removexattr(ctx, ino, name).await
    }
}
