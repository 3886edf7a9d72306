//! Mutant backends for the testkit's own tests: `MemFs` with one classic mistake each.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};

use vfs_core::memfs::MemFs;
use vfs_core::testkit::Backend;
use vfs_core::wrap::{Hooks, Wrapped};
use vfs_core::{
    Attr, DirEntry, Fh, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, Timestamp, VfsResult, VirtualFs,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bug {
    /// No bug: the wrapper is `MemFs` as it is.
    None,
    /// Publishes a write's new size in one critical section and copies its data in
    /// another: the shape of seed 000 bug 1 (doc/LESSONS.md#seed-000-bug-1; fields touched under different locks).
    SizeBeforeData,
    /// The same two critical sections with nothing between them (no yield point): the
    /// window in which a reader sees the new size without the data is a few instructions.
    SizeBeforeDataNoYield,
    /// Forgets to change the moved inode's ctime on rename.
    NoCtimeOnRename,
    /// Cookies are positions in the listing: removing an earlier entry skips a later one.
    PositionalCookies,
    /// Once a file has been read, later writes are acknowledged and dropped: the symptom
    /// of seed 003 (doc/LESSONS.md#seed-003-pr-178; #178), writes silently lost after a READ pooled a read-only handle.
    LosesWriteAfterRead,
    /// Rename removes the target, then moves the source: the name is briefly missing.
    NonAtomicRename,
    /// A directory moved to another parent leaves both parents' link counts as they were
    /// (the old parent keeps the `..` link, the new one never gets it).
    StaleDirNlinkOnMove,
    /// A write changes the data and ctime but leaves mtime as it was.
    NoMtimeOnWrite,
    /// An `O_APPEND` handle writes at the offset it is given, not at the end.
    AppendAtHandleOffset,
    /// `O_EXCL` is ignored: create opens an existing name instead of `EEXIST`.
    ExclOpensExisting,
    /// `open(O_TRUNC)` leaves the file as it was.
    OpenTruncIgnored,
    /// Rename over an existing name unlinks the target, then links the source under the
    /// name and unlinks the old name: three steps, so the name is briefly missing (no
    /// yield point in between).
    RenameInThreeSteps,
}

/// The planted bug and the state it needs; every operation it does not change goes
/// straight to the inner `MemFs` (`vfs_core::wrap`).
pub struct Mutant {
    bug: Bug,
    /// NoCtimeOnRename: the ctime each renamed inode had before its rename.
    frozen_ctime: Mutex<HashMap<Ino, Timestamp>>,
    /// LosesWriteAfterRead: inodes read so far.
    read: Mutex<HashSet<Ino>>,
    /// StaleDirNlinkOnMove: what to add to each directory's real link count.
    nlink_skew: Mutex<HashMap<Ino, i64>>,
    /// NoMtimeOnWrite: the mtime each written inode had before its first write.
    frozen_mtime: Mutex<HashMap<Ino, Timestamp>>,
}

pub fn backend(bug: Bug) -> Backend<Wrapped<MemFs, Mutant>> {
    Backend::new(Wrapped::new(
        MemFs::new(),
        Mutant {
            bug,
            frozen_ctime: Mutex::default(),
            read: Mutex::default(),
            nlink_skew: Mutex::default(),
            frozen_mtime: Mutex::default(),
        },
    ))
}

impl Mutant {
    fn patch(&self, mut a: Attr) -> Attr {
        if let Some(t) = self.frozen_ctime.lock().get(&a.ino) {
            a.ctime = *t;
        }
        if let Some(t) = self.frozen_mtime.lock().get(&a.ino) {
            a.mtime = *t;
        }
        if let Some(d) = self.nlink_skew.lock().get(&a.ino) {
            a.nlink = (i64::from(a.nlink) + d).max(0) as u32;
        }
        a
    }
}

impl Hooks<MemFs> for Mutant {
    async fn lookup(&self, inner: &MemFs, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
        inner.lookup(ctx, parent, name).await.map(|a| self.patch(a))
    }
    async fn getattr(&self, inner: &MemFs, ctx: &RequestCtx, ino: Ino, fh: Option<Fh>) -> VfsResult<Attr> {
        inner.getattr(ctx, ino, fh).await.map(|a| self.patch(a))
    }
    async fn setattr(&self, inner: &MemFs, ctx: &RequestCtx, ino: Ino, set: SetAttr) -> VfsResult<Attr> {
        self.frozen_ctime.lock().remove(&ino);
        if set.size.is_some() || set.mtime.is_some() {
            self.frozen_mtime.lock().remove(&ino);
        }
        inner.setattr(ctx, ino, set).await.map(|a| self.patch(a))
    }
    async fn open(&self, inner: &MemFs, ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        match self.bug {
            Bug::AppendAtHandleOffset => inner.open(ctx, ino, OpenFlags(flags.0 & !libc::O_APPEND)).await,
            Bug::OpenTruncIgnored => inner.open(ctx, ino, OpenFlags(flags.0 & !libc::O_TRUNC)).await,
            _ => inner.open(ctx, ino, flags).await,
        }
    }
    async fn create(
        &self,
        inner: &MemFs,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> VfsResult<(Attr, Fh)> {
        let flags = match self.bug {
            Bug::ExclOpensExisting => OpenFlags(flags.0 & !libc::O_EXCL),
            _ => flags,
        };
        inner.create(ctx, parent, name, mode, umask, flags).await
    }
    async fn rename(
        &self,
        inner: &MemFs,
        ctx: &RequestCtx,
        p: Ino,
        n: Name<'_>,
        np: Ino,
        nn: Name<'_>,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        match self.bug {
            Bug::NoCtimeOnRename => {
                let moved = inner.lookup(ctx, p, n).await?;
                let before = self.patch(moved).ctime;
                inner.rename(ctx, p, n, np, nn, flags).await?;
                self.frozen_ctime.lock().insert(moved.ino, before);
                Ok(())
            }
            Bug::NonAtomicRename if flags == RenameFlags::NONE => {
                if let Ok(target) = inner.lookup(ctx, np, nn).await
                    && target.kind != vfs_core::FileType::Directory
                {
                    inner.unlink(ctx, np, nn).await?;
                    std::thread::yield_now();
                }
                inner.rename(ctx, p, n, np, nn, flags).await
            }
            Bug::StaleDirNlinkOnMove if flags == RenameFlags::NONE && p != np => {
                let moved = inner.lookup(ctx, p, n).await?;
                inner.rename(ctx, p, n, np, nn, flags).await?;
                if moved.kind == vfs_core::FileType::Directory {
                    let mut skew = self.nlink_skew.lock();
                    *skew.entry(p).or_default() += 1;
                    *skew.entry(np).or_default() -= 1;
                }
                Ok(())
            }
            Bug::RenameInThreeSteps if flags == RenameFlags::NONE => {
                let moved = inner.lookup(ctx, p, n).await?;
                if moved.kind == vfs_core::FileType::Directory {
                    return inner.rename(ctx, p, n, np, nn, flags).await;
                }
                match inner.lookup(ctx, np, nn).await {
                    Ok(t) if t.ino == moved.ino => return Ok(()),
                    Ok(_) => inner.unlink(ctx, np, nn).await?,
                    Err(_) => {}
                }
                inner.link(ctx, moved.ino, np, nn).await?;
                inner.unlink(ctx, p, n).await
            }
            _ => inner.rename(ctx, p, n, np, nn, flags).await,
        }
    }
    async fn link(&self, inner: &MemFs, ctx: &RequestCtx, ino: Ino, np: Ino, nn: Name<'_>) -> VfsResult<Attr> {
        self.frozen_ctime.lock().remove(&ino);
        inner.link(ctx, ino, np, nn).await
    }
    async fn read(
        &self,
        inner: &MemFs,
        ctx: &RequestCtx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        size: u32,
    ) -> VfsResult<bytes::Bytes> {
        self.read.lock().insert(ino);
        inner.read(ctx, ino, fh, offset, size).await
    }
    async fn write(
        &self,
        inner: &MemFs,
        ctx: &RequestCtx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        data: &[u8],
    ) -> VfsResult<u32> {
        match self.bug {
            Bug::SizeBeforeData if !data.is_empty() => {
                let size = inner.getattr(ctx, ino, None).await?.size;
                let end = offset + data.len() as u64;
                if end > size {
                    inner.setattr(ctx, ino, SetAttr::size(end)).await?;
                }
                std::thread::yield_now();
                inner.write(ctx, ino, fh, offset, data).await
            }
            Bug::SizeBeforeDataNoYield if !data.is_empty() => {
                let size = inner.getattr(ctx, ino, None).await?.size;
                let end = offset + data.len() as u64;
                if end > size {
                    inner.setattr(ctx, ino, SetAttr::size(end)).await?;
                }
                inner.write(ctx, ino, fh, offset, data).await
            }
            Bug::LosesWriteAfterRead if self.read.lock().contains(&ino) => Ok(data.len() as u32),
            Bug::NoMtimeOnWrite if !data.is_empty() => {
                let before = self.patch(inner.getattr(ctx, ino, None).await?).mtime;
                let n = inner.write(ctx, ino, fh, offset, data).await?;
                self.frozen_mtime.lock().insert(ino, before);
                Ok(n)
            }
            _ => inner.write(ctx, ino, fh, offset, data).await,
        }
    }
    async fn readdir(
        &self,
        inner: &MemFs,
        ctx: &RequestCtx,
        ino: Ino,
        cookie: u64,
        max: usize,
    ) -> VfsResult<Vec<DirEntry>> {
        if self.bug != Bug::PositionalCookies {
            return inner.readdir(ctx, ino, cookie, max).await;
        }
        let all = inner.readdir(ctx, ino, 0, usize::MAX).await?;
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
}
