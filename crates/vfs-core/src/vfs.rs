//! The `VirtualFs` trait: the one interface every backend implements and every adapter
//! (FUSE, NFS, P2P) consumes.
//!
//! Invariant: operations are keyed by inode number ([`Ino::ROOT`] is the root), take
//! `&self` and may run concurrently from many threads of a multi-threaded tokio runtime;
//! their futures are `Send`. A backend answers with values or a [`VfsError`]; it never
//! panics on caller input. A default method exists only where its answer is honest for
//! every backend that does not override it: `ENOSYS` ("not implemented") for every
//! operation that changes the tree or file data, so a read-only backend implements six
//! methods; xattrs "not supported"; `forget` and `release` no-ops for a backend without
//! per-inode or per-handle state; `readdirplus` built from `readdir` + `getattr`.
//!
//! What each operation guarantees is written in `doc/SEMANTICS.md`.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{VfsError, VfsResult};
use crate::invalidate::Invalidator;
use crate::types::{
    Attr, DirEntry, DirEntryPlus, Fh, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs,
    XattrSet,
};

/// Access bits for [`VirtualFs::access`] and [`check_access`] (`R_OK`, `W_OK`, `X_OK`).
pub mod access_mask {
    /// Existence only (`F_OK`).
    pub const EXISTS: u32 = 0;
    /// Read (`R_OK`).
    pub const READ: u32 = 4;
    /// Write (`W_OK`).
    pub const WRITE: u32 = 2;
    /// Execute or search (`X_OK`).
    pub const EXEC: u32 = 1;
}

/// Whether `ctx` may access an object with attributes `attr` for `mask` (bits of
/// [`access_mask`]), by the classic owner/group/other rules. Root may read and write
/// anything and execute anything that has at least one execute bit (or is a directory).
pub fn check_access(attr: &Attr, ctx: &RequestCtx, mask: u32) -> VfsResult<()> {
    let mask = mask & 7;
    if mask == 0 {
        return Ok(());
    }
    if ctx.uid == 0 {
        let any_x = attr.perm & 0o111 != 0 || attr.kind == crate::types::FileType::Directory;
        return if mask & access_mask::EXEC != 0 && !any_x {
            Err(VfsError::Access)
        } else {
            Ok(())
        };
    }
    let bits = if ctx.uid == attr.uid {
        (attr.perm >> 6) & 7
    } else if ctx.gid == attr.gid {
        (attr.perm >> 3) & 7
    } else {
        attr.perm & 7
    };
    if u32::from(bits) & mask == mask {
        Ok(())
    } else {
        Err(VfsError::Access)
    }
}

/// A filesystem: what a backend implements and an adapter serves.
///
/// All methods take a [`RequestCtx`] naming the caller. Names are [`Name`]s, already
/// validated as single path components. File handles ([`Fh`]) are chosen by the backend
/// in [`VirtualFs::open`] / [`VirtualFs::create`] and record their access mode: a write
/// through a handle opened read-only fails with [`VfsError::BadHandle`] (`EBADF`).
///
/// Readdir cookies: cookie `0` starts a listing; every returned [`DirEntry`] carries the
/// cookie that resumes *after* it. A listing resumed with cookies while entries are
/// added and removed never repeats an entry, and every entry that exists untouched for
/// the whole listing appears exactly once. `.` and `..` are included.
///
/// The contract is checked by the conformance kit (`vfs_core::testkit`, feature `testkit`;
/// guide: doc/BACKENDS.md). Each method's "Errors and rules the kit checks" lists the
/// answers the kit expects, each with the id (in brackets) that a kit failure prints. A
/// backend that declares a capability absent (`testkit::Cap`) answers what needs it with
/// that capability's errno: `EROFS` (or `ENOSYS`) for changes, `EOPNOTSUPP` for xattrs,
/// `EPERM` (or `ENOSYS`) for links, symlinks and special files, `EINVAL` for rename flags
/// `[absent.errno]`. An unknown inode is `ESTALE`. Helpers: [`check_access`],
/// [`check_xattr`], [`xattr_namespace_check`], [`MknodSpec::new`].
pub trait VirtualFs: Send + Sync + 'static {
    /// A stable name for what this filesystem serves (e.g. `localfs:/srv/data`). Stateless
    /// front ends derive their file-handle generation from it, so the same source gives
    /// the same handles across restarts and another source's handles are refused as stale.
    fn source_id(&self) -> &str;

    /// Whether inode numbers survive a restart of the backend (see [`InodeStability`]).
    /// The default is the conservative answer.
    fn inode_stability(&self) -> InodeStability {
        InodeStability::Volatile
    }

    /// How this backend's tree may change other than through its own operations (see
    /// [`ChangeSource`]). A front end caches for long only what this declares safe. The
    /// default is the conservative answer, [`ChangeSource::Unknown`].
    fn change_source(&self) -> ChangeSource {
        ChangeSource::Unknown
    }

    /// Starts reporting the changes made behind the front end's back to `inv`, as
    /// invalidations (an entry by parent and name; an inode's attributes and data), and
    /// returns the promise in effect: [`ChangeSource::Reported`] only once reports are
    /// flowing (a watcher that could not be started gives [`ChangeSource::Unknown`]).
    /// Called once per front end (each FUSE mount calls it with its own invalidator); a
    /// backend serving several front ends reports to each. Must not block on the front
    /// end: `inv` queues.
    ///
    /// Default: nothing is started; [`VirtualFs::change_source`], with `Reported` turned
    /// into `Unknown`.
    fn report_changes(&self, inv: Arc<dyn Invalidator>) -> ChangeSource {
        let _ = inv;
        match self.change_source() {
            ChangeSource::Reported => ChangeSource::Unknown,
            other => other,
        }
    }

    /// Finds `name` in directory `parent`. `ENOENT` is an answer, not a failure.
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `ENOENT` when `name` is not in `parent` (also once removed) `[lookup.missing]`;
    /// - `ENOTDIR` when `parent` is not a directory `[lookup.notdir]`;
    /// - a name over 255 bytes never reaches the backend: [`Name::new`](crate::Name::new) refuses it
    ///   with `ENAMETOOLONG` `[name.too_long]`.
    fn lookup(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> impl Future<Output = VfsResult<Attr>> + Send;

    /// The front end dropped `nlookup` references to `ino` (FUSE `FORGET`). A backend
    /// with per-inode state releases it when the count reaches zero.
    fn forget(&self, ino: Ino, nlookup: u64) -> impl Future<Output = ()> + Send {
        let _ = (ino, nlookup);
        async {}
    }

    /// Attributes of `ino`, never older than the last write that completed before this
    /// call began.
    ///
    /// # Errors and rules the kit checks
    ///
    /// - a size never ahead of the data a read returns: no reader sees a size without its
    ///   data `[race.size_with_data]`, nor a size no write made `[race.size_bound]`.
    fn getattr(&self, ctx: &RequestCtx, ino: Ino, fh: Option<Fh>) -> impl Future<Output = VfsResult<Attr>> + Send;

    /// Changes attributes (chmod, chown, truncate, utimes) and returns the new ones.
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `EISDIR` for a size change of a directory `[setattr.truncate_dir]`;
    /// - `EFBIG` (or `EINVAL`) for a size past the largest a file can have, at most
    ///   `i64::MAX`, the size unchanged `[setattr.too_big]`;
    /// - truncating down then up exposes zeros, never old bytes `[setattr.truncate_zeros]`;
    /// - chmod/chown change ctime `[ctime.change]` and leave mtime alone `[ctime.only]`; a size
    ///   change changes mtime and ctime `[mtime.write]`;
    /// - chown of a non-directory clears setuid, and setgid when group-exec is set
    ///   `[setattr.chown_clears_suid]`.
    fn setattr(&self, ctx: &RequestCtx, ino: Ino, set: SetAttr) -> impl Future<Output = VfsResult<Attr>> + Send {
        let _ = (ctx, ino, set);
        async { Err(VfsError::NotImplemented) }
    }

    /// The target of symlink `ino`.
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `EINVAL` when `ino` is not a symlink `[readlink.notlink]`.
    fn readlink(&self, ctx: &RequestCtx, ino: Ino) -> impl Future<Output = VfsResult<OsString>> + Send {
        let _ = (ctx, ino);
        async { Err(VfsError::NotImplemented) }
    }

    /// Creates a node: regular file, fifo, socket, character or block device, by the type
    /// bits of `mode`. `umask` is applied to the permission bits.
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - use [`MknodSpec::new`] for Linux's checks of `mode`;
    /// - a regular file made by mknod holds data like one made by `create` `[mknod.regular]`;
    /// - without special files, `EPERM` (or `ENOSYS`) `[absent.errno]`.
    fn mknod(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
        rdev: u64,
    ) -> impl Future<Output = VfsResult<Attr>> + Send {
        let _ = (ctx, parent, name, mode, umask, rdev);
        async { Err(VfsError::NotImplemented) }
    }

    /// Creates a directory.
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `EEXIST` when `name` exists `[mkdir.exists]`;
    /// - the new directory's mode is `mode & !umask`, and in a setgid directory it takes
    ///   that directory's group and the setgid bit `[create.mode]`, `[create.setgid_dir]`;
    /// - the parent gains one link `[mkdir.parent_nlink]`, and mtime and ctime `[mtime.parent]`.
    fn mkdir(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
    ) -> impl Future<Output = VfsResult<Attr>> + Send {
        let _ = (ctx, parent, name, mode, umask);
        async { Err(VfsError::NotImplemented) }
    }

    /// Removes a non-directory name. The inode lives on while it has other names or open
    /// handles.
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `EISDIR` for a directory `[unlink.isdir]`;
    /// - an open handle keeps reading and writing the unlinked inode `[unlink.open]`.
    fn unlink(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> impl Future<Output = VfsResult<()>> + Send {
        let _ = (ctx, parent, name);
        async { Err(VfsError::NotImplemented) }
    }

    /// Removes an empty directory.
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `ENOTEMPTY` when the directory has entries `[rmdir.notempty]`;
    /// - `ENOTDIR` when `name` is not a directory `[rmdir.notdir]`;
    /// - the parent loses one link `[rmdir.parent_nlink]`.
    fn rmdir(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> impl Future<Output = VfsResult<()>> + Send {
        let _ = (ctx, parent, name);
        async { Err(VfsError::NotImplemented) }
    }

    /// Creates a symbolic link to `target` (stored verbatim, never followed by the backend).
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `EEXIST` when `name` exists `[symlink.exists]`.
    fn symlink(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        target: &OsStr,
    ) -> impl Future<Output = VfsResult<Attr>> + Send {
        let _ = (ctx, parent, name, target);
        async { Err(VfsError::NotImplemented) }
    }

    /// Renames `parent/name` to `newparent/newname`, atomically, with `renameat2` flags.
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `ENOENT` when `name` does not exist `[rename.missing]`, or with `EXCHANGE`, when the
    ///   target does not `[rename.exchange_missing]`;
    /// - `EINVAL` when a directory would move into itself or its own subtree `[rename.subtree]`;
    /// - `ENOTEMPTY` over a non-empty directory (also a file over one of its ancestors)
    ///   `[rename.notempty]`; `ENOTDIR` for a directory over a non-directory `[rename.notdir]`;
    ///   `EISDIR` for a non-directory over a directory `[rename.isdir]`;
    /// - `EEXIST` with `NOREPLACE` when the target exists, even as a hard link of the source
    ///   `[rename.noreplace]`; unsupported flags: `EINVAL` `[absent.errno]`;
    /// - a moved directory's `..` is its new parent `[rename.dotdot]`; the moved inode's ctime
    ///   changes `[ctime.change]`;
    /// - a directory moved to another parent takes one link from the old parent and gives
    ///   one to the new `[rename.dir_nlink]`; a replaced name's inode loses one link, its
    ///   other hard links stay, with its data `[rename.victim_nlink]`;
    /// - of two renames of one name at once, one moves it and the other answers `ENOENT`;
    ///   the inode ends under one name `[rename.one_winner]` (recheck under the locks what
    ///   was looked up before taking them);
    /// - of two sibling directories moved into each other at once, one moves and the other
    ///   is `EINVAL`; both stay reachable from the root `[rename.no_cycle]` (keep the
    ///   subtree check true until the move is done, e.g. serialize cross-directory
    ///   renames).
    fn rename(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        newparent: Ino,
        newname: Name<'_>,
        flags: RenameFlags,
    ) -> impl Future<Output = VfsResult<()>> + Send {
        let _ = (ctx, parent, name, newparent, newname, flags);
        async { Err(VfsError::NotImplemented) }
    }

    /// Adds the name `newparent/newname` for `ino`.
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `EEXIST` when the new name exists `[link.exists]`;
    /// - `EPERM` for a directory `[link.dir]`.
    fn link(
        &self,
        ctx: &RequestCtx,
        ino: Ino,
        newparent: Ino,
        newname: Name<'_>,
    ) -> impl Future<Output = VfsResult<Attr>> + Send {
        let _ = (ctx, ino, newparent, newname);
        async { Err(VfsError::NotImplemented) }
    }

    /// Opens `ino`; the handle records the access mode of `flags`. `O_TRUNC` truncates.
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `O_TRUNC` empties the file `[open.trunc]`;
    /// - a directory opens read-only (for listing) and is `EISDIR` for writing
    ///   `[open.dir]`;
    /// - a symlink's own inode is `ELOOP`, as `O_NOFOLLOW` answers `[open.symlink]`;
    /// - a read-only backend answers a write open with `EROFS` `[absent.errno]`.
    fn open(&self, ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> impl Future<Output = VfsResult<Fh>> + Send;

    /// Creates and opens a regular file (`O_CREAT`; `O_EXCL` fails with `EEXIST` on an
    /// existing name).
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `EEXIST` with `O_EXCL` when `name` exists `[create.excl]`;
    /// - the new file's mode is `mode & !umask` `[create.mode]`; in a setgid directory it
    ///   takes that directory's group (and no setgid bit) `[create.setgid_dir]`.
    fn create(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> impl Future<Output = VfsResult<(Attr, Fh)>> + Send {
        let _ = (ctx, parent, name, mode, umask, flags);
        async { Err(VfsError::NotImplemented) }
    }

    /// Reads up to `size` bytes at `offset`; fewer only at end of file. Holes read as zeros.
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `EBADF` through a handle not opened for reading `[read.badf]`;
    /// - holes read as zeros `[read.hole]`.
    fn read(
        &self,
        ctx: &RequestCtx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        size: u32,
    ) -> impl Future<Output = VfsResult<Bytes>> + Send;

    /// Writes `data` at `offset` (at the end of file for a handle opened `O_APPEND`) and
    /// returns the count written.
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `EBADF` through a handle not opened for writing `[write.badf]`;
    /// - `EFBIG` (or `EINVAL`) for a write that would end past the largest size a file can
    ///   have, at most `i64::MAX` `[write.too_big]`;
    /// - an `O_APPEND` handle writes at the end whatever `offset` says `[write.append]`;
    /// - changes mtime and ctime `[mtime.write]`;
    /// - with `testkit::Cap::CallerRules` promised: a write by a caller other
    ///   than root clears setuid, and setgid when group-exec is set; root's write clears
    ///   nothing `[write.clears_suid]`.
    fn write(
        &self,
        ctx: &RequestCtx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        data: &[u8],
    ) -> impl Future<Output = VfsResult<u32>> + Send {
        let _ = (ctx, ino, fh, offset, data);
        async { Err(VfsError::NotImplemented) }
    }

    /// Called on each `close(2)` of a descriptor of this handle.
    fn flush(&self, ctx: &RequestCtx, ino: Ino, fh: Fh) -> impl Future<Output = VfsResult<()>> + Send {
        let _ = (ctx, ino, fh);
        async { Ok(()) }
    }

    /// Makes the file's data (and, unless `datasync`, its metadata) durable.
    ///
    /// Default: `ENOSYS` (not implemented).
    fn fsync(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, datasync: bool) -> impl Future<Output = VfsResult<()>> + Send {
        let _ = (ctx, ino, fh, datasync);
        async { Err(VfsError::NotImplemented) }
    }

    /// The handle is closed for good.
    ///
    /// Default: nothing to release.
    fn release(&self, ctx: &RequestCtx, ino: Ino, fh: Fh) -> impl Future<Output = VfsResult<()>> + Send {
        let _ = (ctx, ino, fh);
        async { Ok(()) }
    }

    /// A host descriptor for the open regular file `fh` of `ino`, for a front end that can
    /// hand the kernel the backing file itself (FUSE passthrough): reads and writes through
    /// that handle then go from the kernel to the host file without calling
    /// [`VirtualFs::read`] or [`VirtualFs::write`]. Only a backend whose reads and writes
    /// are exactly those of this descriptor may answer `Some`; the front end offers it only
    /// when asked to (a mount option) and falls back to ordinary reads and writes if the
    /// kernel refuses.
    ///
    /// Default: `None`, every read and write goes through the backend.
    fn passthrough_fd(&self, ino: Ino, fh: Fh) -> Option<OwnedFd> {
        let _ = (ino, fh);
        None
    }

    /// The generation of inode `ino`: with the inode number, it names one object for the
    /// object's whole life, so that a number the backend reuses for a new object (a host
    /// filesystem does, right after a removal) is told apart from the old one. A front
    /// end asks it right after a call that answered `ino` with an entry (lookup, create,
    /// mkdir, mknod, symlink, link) and hands it to the kernel with the entry: a FUSE
    /// kernel that still holds the old object's inode (a directory just removed, marked
    /// dead) would otherwise take the new object for it (and answer `ENOENT` for every
    /// name created in a directory it believes removed).
    ///
    /// Default: 0 (inode numbers are never reused while the front end may hold them).
    fn generation(&self, ino: Ino) -> u64 {
        let _ = ino;
        0
    }

    /// Up to `max` entries of directory `ino` after `cookie` (0: from the start).
    ///
    /// # Errors and rules the kit checks
    ///
    /// - at most `max` entries, `.` and `..` included `[readdir.max]`;
    /// - listings do not depend on the page size `[readdir.pages]`;
    /// - cookies are never 0 (the start) and at most `i64::MAX`: FUSE and NFS clients keep
    ///   them as a signed `off_t` `[readdir.cookie_range]`;
    /// - a listing resumed by cookies never repeats a name `[readdir.no_repeat]` and lists every
    ///   entry that was not changed meanwhile `[readdir.all_untouched]`.
    fn readdir(
        &self,
        ctx: &RequestCtx,
        ino: Ino,
        cookie: u64,
        max: usize,
    ) -> impl Future<Output = VfsResult<Vec<DirEntry>>> + Send;

    /// Like [`VirtualFs::readdir`], with each entry's attributes. The default asks
    /// `getattr` for each entry and skips entries that vanished in between.
    fn readdirplus(
        &self,
        ctx: &RequestCtx,
        ino: Ino,
        cookie: u64,
        max: usize,
    ) -> impl Future<Output = VfsResult<Vec<DirEntryPlus>>> + Send {
        async move {
            let entries = self.readdir(ctx, ino, cookie, max).await?;
            let mut out = Vec::with_capacity(entries.len());
            for entry in entries {
                match self.getattr(ctx, entry.ino, None).await {
                    Ok(attr) => out.push(DirEntryPlus { entry, attr }),
                    Err(VfsError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        }
    }

    /// Filesystem-wide figures.
    ///
    /// Default: `ENOSYS` (not implemented).
    ///
    /// # Rules the kit checks
    ///
    /// - `bfree` and `bavail` at most `blocks`, `ffree` at most `files`, a block size, a
    ///   name length of at least 255 (`statfs_sane`);
    /// - with `testkit::Cap::SpaceAccounting` promised: a new file takes an
    ///   inode from `ffree` `[statfs.inodes]`; written data takes its blocks from `bfree`
    ///   and shows in `st_blocks` `[statfs.blocks]`; a punched hole, a truncation, and the
    ///   last release of an unlinked file give them back, the last exactly
    ///   `[statfs.frees]`.
    fn statfs(&self, ctx: &RequestCtx, ino: Ino) -> impl Future<Output = VfsResult<StatFs>> + Send {
        let _ = (ctx, ino);
        async { Err(VfsError::NotImplemented) }
    }

    /// Checks `mask` (bits of [`access_mask`]) for the caller. The default applies
    /// [`check_access`] to `getattr`'s answer.
    fn access(&self, ctx: &RequestCtx, ino: Ino, mask: u32) -> impl Future<Output = VfsResult<()>> + Send {
        async move {
            let attr = self.getattr(ctx, ino, None).await?;
            check_access(&attr, ctx, mask)
        }
    }

    /// The value of extended attribute `name`. Default: not supported.
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `ENODATA` for a missing name `[xattr.missing]`; use [`check_xattr`] and
    ///   [`xattr_namespace_check`] for names and values;
    /// - with `testkit::Cap::CallerRules` promised: `ENODATA` for a
    ///   `trusted.*` name asked by a caller other than root `[xattr.trusted]`.
    fn getxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> impl Future<Output = VfsResult<Bytes>> + Send {
        let _ = (ctx, ino, name);
        async { Err(VfsError::Unsupported) }
    }

    /// Sets extended attribute `name`. Default: not supported.
    ///
    /// # Errors and rules the kit checks
    ///
    /// - `ENODATA` with `XATTR_REPLACE` for a missing name `[xattr.missing]`;
    /// - `EEXIST` with `XATTR_CREATE` for an existing one `[xattr.create_exists]`;
    /// - with `testkit::Cap::CallerRules` promised: `EPERM` for a
    ///   `trusted.*` name set by a caller other than root `[xattr.trusted]`.
    fn setxattr(
        &self,
        ctx: &RequestCtx,
        ino: Ino,
        name: &OsStr,
        value: &[u8],
        how: XattrSet,
    ) -> impl Future<Output = VfsResult<()>> + Send {
        let _ = (ctx, ino, name, value, how);
        async { Err(VfsError::Unsupported) }
    }

    /// Names of all extended attributes of `ino`. Default: not supported.
    fn listxattr(&self, ctx: &RequestCtx, ino: Ino) -> impl Future<Output = VfsResult<Vec<OsString>>> + Send {
        let _ = (ctx, ino);
        async { Err(VfsError::Unsupported) }
    }

    /// Removes extended attribute `name`. Default: not supported.
    fn removexattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> impl Future<Output = VfsResult<()>> + Send {
        let _ = (ctx, ino, name);
        async { Err(VfsError::Unsupported) }
    }

    /// Allocates (mode 0: extends the size to `offset + length` if smaller). Default: not
    /// supported, which makes `posix_fallocate(3)` fall back to writing zeros.
    ///
    /// # Errors and rules the kit checks
    ///
    /// A mode answered `EOPNOTSUPP` is skipped by the kit; a mode that is accepted must
    /// do what it says:
    /// - mode 0 sets the size to `offset + length` when that is larger, never shrinks it
    ///   `[fallocate.extend]`;
    /// - `FALLOC_FL_KEEP_SIZE` keeps the size `[fallocate.keep_size]`;
    /// - `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE` zeroes exactly the range (clamped
    ///   to the size) and keeps the size `[fallocate.punch]`;
    /// - `EINVAL` for a zero `length` `[fallocate.zero_len]`;
    /// - `EOPNOTSUPP` for a mode bit Linux does not define, nothing changed
    ///   `[fallocate.unknown_mode]`;
    /// - `EBADF` for a handle not open for writing `[fallocate.badf]`.
    fn fallocate(
        &self,
        ctx: &RequestCtx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> impl Future<Output = VfsResult<()>> + Send {
        let _ = (ctx, ino, fh, offset, length, mode);
        async { Err(VfsError::Unsupported) }
    }
}

/// How the tree a backend serves may change other than through its own operations, and
/// so how long a front end may cache what it was told (FUSE entry and attribute TTLs,
/// pages kept across opens). What each promise means for a user is in `doc/SEMANTICS.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeSource {
    /// Nothing changes except through this backend's operations (e.g. `MemFs`, an
    /// `Overlay` of such layers): whatever a front end caches stays true until it changes
    /// it itself. Long caching is safe.
    OnlyThroughMount,
    /// Others change the tree too (other processes on a host directory, a peer, another
    /// database client), and the backend reports each change to the invalidator given to
    /// [`VirtualFs::report_changes`] within about a second. Long caching is safe once
    /// reports flow.
    Reported,
    /// No promise: the tree may change at any time, unreported. Front ends keep caches
    /// short (FUSE: 1 s TTLs).
    Unknown,
}

/// Whether a backend's inode numbers survive a restart.
///
/// A handle held by an NFS client across a server restart (seed 003 (doc/LESSONS.md#seed-003)) still names the same
/// file only if the backend gives the file the same inode number after the restart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InodeStability {
    /// The same object has the same inode number after a restart (e.g. `LocalFs`, which
    /// uses the host's inode numbers). Handles from before a restart keep working.
    Stable,
    /// Inode numbers are assigned afresh on each start (e.g. `MemFs`). A front end must
    /// make handles from an earlier instance fail as stale, never resolve to another file;
    /// such a backend should put something unique per instance into its `source_id`.
    Volatile,
}

/// Largest extended attribute value (Linux `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;
/// Longest extended attribute name (Linux `XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;

/// Checks an extended attribute name (non-empty, at most [`XATTR_NAME_MAX`] bytes, with a
/// namespace prefix) and value size.
pub fn check_xattr(name: &OsStr, value: Option<&[u8]>) -> VfsResult<()> {
    use std::os::unix::ffi::OsStrExt;
    let b = name.as_bytes();
    if b.is_empty() {
        return Err(VfsError::Invalid("empty xattr name"));
    }
    if b.len() > XATTR_NAME_MAX {
        return Err(VfsError::Range);
    }
    if !b.contains(&b'.') {
        return Err(VfsError::Unsupported);
    }
    if value.is_some_and(|v| v.len() > XATTR_SIZE_MAX) {
        return Err(VfsError::TooBig);
    }
    Ok(())
}

/// Linux's rules for extended attribute namespaces, for a backend that keeps xattrs itself:
/// `user.` only on regular files and directories, `trusted.` only for uid 0, `security.`
/// for anyone; `system.` (ACLs) and unknown namespaces are `ENOTSUP`. A refusal is
/// `EPERM` for a `write` and `ENODATA` for a read (Linux hides what it would refuse).
pub fn xattr_namespace_check(kind: FileType, name: &OsStr, ctx: &RequestCtx, write: bool) -> VfsResult<()> {
    use std::os::unix::ffi::OsStrExt;
    let b = name.as_bytes();
    let denied = if write {
        VfsError::NotPermitted
    } else {
        VfsError::NoAttr
    };
    if b.starts_with(b"user.") {
        if !matches!(kind, FileType::Regular | FileType::Directory) {
            return Err(denied);
        }
        Ok(())
    } else if b.starts_with(b"trusted.") {
        if ctx.uid != 0 {
            return Err(denied);
        }
        Ok(())
    } else if b.starts_with(b"security.") {
        Ok(())
    } else {
        Err(VfsError::Unsupported)
    }
}

/// What `mknod(mode, umask, rdev)` creates, by the rules every backend shares.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MknodSpec {
    /// The file type: from `mode`'s `S_IFMT` bits, a regular file if there are none.
    pub kind: FileType,
    /// The permission bits, `umask` applied (`mode & !umask & 0o7777`).
    pub perm: u32,
    /// The device number: `rdev` for character and block devices, 0 for anything else.
    pub rdev: u64,
}

impl MknodSpec {
    /// Linux's rules for `mknod(2)`: no type bits make a regular file; a directory is
    /// `EPERM` (that is `mkdir`'s job); a symlink or an unknown type is `EINVAL`.
    pub fn new(mode: u32, umask: u32, rdev: u64) -> VfsResult<MknodSpec> {
        let kind = match mode & libc::S_IFMT {
            0 => FileType::Regular,
            bits => match FileType::from_mode(bits) {
                Some(FileType::Directory) => return Err(VfsError::NotPermitted),
                Some(FileType::Symlink) | None => return Err(VfsError::Invalid("mknod of this file type")),
                Some(k) => k,
            },
        };
        let rdev = if matches!(kind, FileType::CharDevice | FileType::BlockDevice) {
            rdev
        } else {
            0
        };
        Ok(MknodSpec {
            kind,
            perm: mode & !umask & 0o7777,
            rdev,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn mknod_spec_follows_linux() {
        let spec = |mode| MknodSpec::new(mode, 0o022, 0x0801).map_err(|e| e.errno());
        assert_eq!(
            spec(0o4777),
            Ok(MknodSpec {
                kind: FileType::Regular,
                perm: 0o4755,
                rdev: 0
            })
        );
        assert_eq!(
            spec(libc::S_IFCHR | 0o666),
            Ok(MknodSpec {
                kind: FileType::CharDevice,
                perm: 0o644,
                rdev: 0x0801
            })
        );
        assert_eq!(spec(libc::S_IFBLK | 0o600).map(|s| s.rdev), Ok(0x0801));
        assert_eq!(
            spec(libc::S_IFIFO | 0o600).map(|s| (s.kind, s.rdev)),
            Ok((FileType::Fifo, 0))
        );
        assert_eq!(spec(libc::S_IFSOCK).map(|s| s.kind), Ok(FileType::Socket));
        assert_eq!(spec(libc::S_IFREG | 0o644).map(|s| s.kind), Ok(FileType::Regular));
        assert_eq!(spec(libc::S_IFDIR | 0o755), Err(crate::Errno::EPERM));
        assert_eq!(spec(libc::S_IFLNK | 0o777), Err(crate::Errno::EINVAL));
        assert_eq!(spec(0o170000), Err(crate::Errno::EINVAL));
    }
}
