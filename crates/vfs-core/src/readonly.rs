//! [`ReadOnly`]: any backend, served read-only.
//!
//! Invariant: no call through a `ReadOnly` can change the tree, a file's data, its
//! attributes or its extended attributes. Every operation that would is answered `EROFS`
//! ([`VfsError::ReadOnly`]) *before* the inner backend is called, so the inner backend
//! sees only reads; an `open` for writing (or with `O_TRUNC`) is refused the same way, so
//! no handle that could write exists. `access` with `W_OK` is `EROFS`, as on a read-only
//! mount. Everything else is passed through unchanged, including `source_id` and the
//! inode numbers, so file handles of a read-only front end are those of a read-write one.
//!
//! All three front ends use it for their read-only mode (FUSE `--read-only`, an NFS
//! read-only export, a read-only P2P share), so the rule is written once.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;

use bytes::Bytes;

use crate::error::{VfsError, VfsResult};
use crate::types::{
    Attr, DirEntry, DirEntryPlus, Fh, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs, XattrSet,
};
use crate::vfs::{ChangeSource, InodeStability, VirtualFs, access_mask};

/// A backend served read-only: see the module documentation.
#[derive(Debug)]
pub struct ReadOnly<F> {
    inner: F,
}

impl<F> ReadOnly<F> {
    /// Serves `inner` read-only.
    pub fn new(inner: F) -> ReadOnly<F> {
        ReadOnly { inner }
    }

    /// The backend inside.
    pub fn inner(&self) -> &F {
        &self.inner
    }

    /// Gives the backend back.
    pub fn into_inner(self) -> F {
        self.inner
    }
}

/// Whether an open with `flags` could change the file: write access or `O_TRUNC`.
fn writes(flags: OpenFlags) -> bool {
    flags.access().can_write() || flags.truncate()
}

impl<F: VirtualFs> VirtualFs for ReadOnly<F> {
    fn source_id(&self) -> &str {
        self.inner.source_id()
    }

    fn inode_stability(&self) -> InodeStability {
        self.inner.inode_stability()
    }

    fn change_source(&self) -> ChangeSource {
        self.inner.change_source()
    }

    fn report_changes(&self, inv: std::sync::Arc<dyn crate::invalidate::Invalidator>) -> ChangeSource {
        self.inner.report_changes(inv)
    }

    async fn lookup(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
        self.inner.lookup(ctx, parent, name).await
    }

    async fn forget(&self, ino: Ino, nlookup: u64) {
        self.inner.forget(ino, nlookup).await
    }

    async fn getattr(&self, ctx: &RequestCtx, ino: Ino, fh: Option<Fh>) -> VfsResult<Attr> {
        self.inner.getattr(ctx, ino, fh).await
    }

    async fn setattr(&self, _: &RequestCtx, _: Ino, _: SetAttr) -> VfsResult<Attr> {
        Err(VfsError::ReadOnly)
    }

    async fn readlink(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<OsString> {
        self.inner.readlink(ctx, ino).await
    }

    async fn mknod(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: u32, _: u32, _: u64) -> VfsResult<Attr> {
        Err(VfsError::ReadOnly)
    }

    async fn mkdir(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: u32, _: u32) -> VfsResult<Attr> {
        Err(VfsError::ReadOnly)
    }

    async fn unlink(&self, _: &RequestCtx, _: Ino, _: Name<'_>) -> VfsResult<()> {
        Err(VfsError::ReadOnly)
    }

    async fn rmdir(&self, _: &RequestCtx, _: Ino, _: Name<'_>) -> VfsResult<()> {
        Err(VfsError::ReadOnly)
    }

    async fn symlink(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: &OsStr) -> VfsResult<Attr> {
        Err(VfsError::ReadOnly)
    }

    async fn rename(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: Ino, _: Name<'_>, _: RenameFlags) -> VfsResult<()> {
        Err(VfsError::ReadOnly)
    }

    async fn link(&self, _: &RequestCtx, _: Ino, _: Ino, _: Name<'_>) -> VfsResult<Attr> {
        Err(VfsError::ReadOnly)
    }

    async fn open(&self, ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        if writes(flags) {
            return Err(VfsError::ReadOnly);
        }
        self.inner.open(ctx, ino, flags).await
    }

    async fn create(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: u32, _: u32, _: OpenFlags) -> VfsResult<(Attr, Fh)> {
        Err(VfsError::ReadOnly)
    }

    async fn read(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        self.inner.read(ctx, ino, fh, offset, size).await
    }

    async fn write(&self, _: &RequestCtx, _: Ino, _: Fh, _: u64, _: &[u8]) -> VfsResult<u32> {
        Err(VfsError::ReadOnly)
    }

    async fn flush(&self, ctx: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        self.inner.flush(ctx, ino, fh).await
    }

    async fn fsync(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, datasync: bool) -> VfsResult<()> {
        // Nothing written through this wrapper; the inner answer is still the honest one
        // (a handle it does not know is EBADF).
        self.inner.fsync(ctx, ino, fh, datasync).await
    }

    async fn release(&self, ctx: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        self.inner.release(ctx, ino, fh).await
    }

    fn passthrough_fd(&self, ino: Ino, fh: Fh) -> Option<OwnedFd> {
        // Every handle was opened read-only by the inner backend, so its descriptor
        // cannot write either.
        self.inner.passthrough_fd(ino, fh)
    }

    fn generation(&self, ino: Ino) -> u64 {
        self.inner.generation(ino)
    }

    async fn readdir(&self, ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        self.inner.readdir(ctx, ino, cookie, max).await
    }

    async fn readdirplus(&self, ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntryPlus>> {
        self.inner.readdirplus(ctx, ino, cookie, max).await
    }

    async fn statfs(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<StatFs> {
        self.inner.statfs(ctx, ino).await
    }

    async fn access(&self, ctx: &RequestCtx, ino: Ino, mask: u32) -> VfsResult<()> {
        if mask & access_mask::WRITE != 0 {
            // access(2) on a read-only filesystem: EROFS for W_OK, whatever the mode bits.
            self.inner.getattr(ctx, ino, None).await?;
            return Err(VfsError::ReadOnly);
        }
        self.inner.access(ctx, ino, mask).await
    }

    async fn getxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<Bytes> {
        self.inner.getxattr(ctx, ino, name).await
    }

    async fn setxattr(&self, _: &RequestCtx, _: Ino, _: &OsStr, _: &[u8], _: XattrSet) -> VfsResult<()> {
        Err(VfsError::ReadOnly)
    }

    async fn listxattr(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<Vec<OsString>> {
        self.inner.listxattr(ctx, ino).await
    }

    async fn removexattr(&self, _: &RequestCtx, _: Ino, _: &OsStr) -> VfsResult<()> {
        Err(VfsError::ReadOnly)
    }

    async fn fallocate(&self, _: &RequestCtx, _: Ino, _: Fh, _: u64, _: u64, _: i32) -> VfsResult<()> {
        Err(VfsError::ReadOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfs::MemFs;
    use crate::types::FileType;

    const CTX: RequestCtx = RequestCtx::ROOT;

    fn n(s: &str) -> Name<'_> {
        Name::new(OsStr::new(s)).unwrap()
    }

    /// A MemFs with `d/f` = "data" and a symlink `l`, and the same tree read-only.
    async fn fixture() -> (ReadOnly<MemFs>, Ino, Ino) {
        let fs = MemFs::new();
        let d = fs.mkdir(&CTX, Ino::ROOT, n("d"), 0o755, 0).await.unwrap().ino;
        let (a, fh) = fs.create(&CTX, d, n("f"), 0o644, 0, OpenFlags::RDWR).await.unwrap();
        fs.write(&CTX, a.ino, fh, 0, b"data").await.unwrap();
        fs.release(&CTX, a.ino, fh).await.unwrap();
        fs.symlink(&CTX, Ino::ROOT, n("l"), OsStr::new("d/f")).await.unwrap();
        (ReadOnly::new(fs), d, a.ino)
    }

    async fn snapshot(fs: &MemFs, f: Ino, d: Ino) -> (Attr, Attr, Attr, Vec<u8>, usize) {
        let fh = fs.open(&CTX, f, OpenFlags::RDONLY).await.unwrap();
        let data = fs.read(&CTX, f, fh, 0, 100).await.unwrap().to_vec();
        fs.release(&CTX, f, fh).await.unwrap();
        let entries = fs.readdir(&CTX, d, 0, 100).await.unwrap().len();
        (
            fs.getattr(&CTX, Ino::ROOT, None).await.unwrap(),
            fs.getattr(&CTX, d, None).await.unwrap(),
            fs.getattr(&CTX, f, None).await.unwrap(),
            data,
            entries,
        )
    }

    /// Every mutating operation is EROFS and leaves the inner tree exactly as it was
    /// (attributes of the root, the directory and the file, the bytes, the listing).
    #[tokio::test]
    async fn every_change_is_erofs_and_changes_nothing() {
        let (ro, d, f) = fixture().await;
        let before = snapshot(ro.inner(), f, d).await;
        let rofs =
            |r: VfsResult<()>, what: &str| assert_eq!(r.map_err(|e| e.errno()), Err(crate::Errno::EROFS), "{what}");
        let fh = ro.open(&CTX, f, OpenFlags::RDONLY).await.unwrap();
        rofs(ro.setattr(&CTX, f, SetAttr::size(0)).await.map(drop), "setattr");
        rofs(
            ro.mknod(&CTX, d, n("p"), libc::S_IFIFO | 0o644, 0, 0).await.map(drop),
            "mknod",
        );
        rofs(ro.mkdir(&CTX, d, n("e"), 0o755, 0).await.map(drop), "mkdir");
        rofs(ro.unlink(&CTX, d, n("f")).await, "unlink");
        rofs(ro.rmdir(&CTX, Ino::ROOT, n("d")).await, "rmdir");
        rofs(ro.symlink(&CTX, d, n("s"), OsStr::new("x")).await.map(drop), "symlink");
        rofs(ro.rename(&CTX, d, n("f"), d, n("g"), RenameFlags::NONE).await, "rename");
        rofs(ro.link(&CTX, f, d, n("h")).await.map(drop), "link");
        rofs(ro.open(&CTX, f, OpenFlags::RDWR).await.map(drop), "open O_RDWR");
        rofs(ro.open(&CTX, f, OpenFlags::WRONLY).await.map(drop), "open O_WRONLY");
        rofs(
            ro.open(&CTX, f, OpenFlags(libc::O_RDONLY | libc::O_TRUNC))
                .await
                .map(drop),
            "open O_TRUNC",
        );
        rofs(
            ro.create(&CTX, d, n("c"), 0o644, 0, OpenFlags::RDWR).await.map(drop),
            "create",
        );
        rofs(
            ro.write(&CTX, f, fh, 0, b"XXXX").await.map(drop),
            "write through a read handle",
        );
        rofs(
            ro.setxattr(&CTX, f, OsStr::new("user.a"), b"v", XattrSet::Any).await,
            "setxattr",
        );
        rofs(ro.removexattr(&CTX, f, OsStr::new("user.a")).await, "removexattr");
        rofs(ro.fallocate(&CTX, f, fh, 0, 1 << 20, 0).await, "fallocate");
        rofs(ro.access(&CTX, f, access_mask::WRITE).await, "access W_OK");
        ro.release(&CTX, f, fh).await.unwrap();
        assert_eq!(snapshot(ro.inner(), f, d).await, before, "the inner tree changed");
    }

    /// Reads pass through unchanged: lookup, getattr, read, readdir, readlink, access R_OK,
    /// the same inode numbers and source id as the inner backend (so handles are the same).
    #[tokio::test]
    async fn reads_pass_through() {
        let (ro, d, f) = fixture().await;
        assert_eq!(ro.source_id(), ro.inner().source_id());
        let a = ro.lookup(&CTX, d, n("f")).await.unwrap();
        assert_eq!((a.ino, a.kind, a.size), (f, FileType::Regular, 4));
        let fh = ro.open(&CTX, f, OpenFlags::RDONLY).await.unwrap();
        assert_eq!(&ro.read(&CTX, f, fh, 0, 100).await.unwrap()[..], b"data");
        ro.release(&CTX, f, fh).await.unwrap();
        let l = ro.lookup(&CTX, Ino::ROOT, n("l")).await.unwrap().ino;
        assert_eq!(ro.readlink(&CTX, l).await.unwrap(), "d/f");
        assert_eq!(ro.readdir(&CTX, d, 0, 100).await.unwrap().len(), 3);
        ro.access(&CTX, f, access_mask::READ).await.unwrap();
        assert_eq!(
            ro.access(&CTX, Ino(999_999), access_mask::WRITE)
                .await
                .map_err(|e| e.errno()),
            Err(crate::Errno::ESTALE),
            "an unknown inode is ESTALE before it is EROFS"
        );
    }
}
