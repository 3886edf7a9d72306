//! Host-side building blocks of [`super::LocalFs`]: the descriptors it holds, `statx` →
//! [`Attr`], inode-number mapping, open-flag translation and the `/proc/self/fd` reopen.
//!
//! Invariant: every helper here acts on an already-held descriptor or on one name relative
//! to a held directory descriptor, with the final component never followed
//! (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, or by construction of the `*at` call). The one
//! deliberate follow is of a `/proc/self/fd/N` magic link, which resolves to the very inode
//! descriptor `N` refers to, never to a path.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Mode, OFlags, Statx, StatxFlags};

use crate::error::{VfsError, VfsResult};
use crate::sync::Arc;
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::types::{AccessMode, Attr, FileType, Ino, OpenFlags, Timestamp};

/// Flags of every descriptor that only names an inode: `O_PATH` (no access, no side
/// effects), never following a final symlink, closed on exec.
pub(super) const PATH_FLAGS: OFlags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// `statx` of the inode `fd` refers to (works on `O_PATH` descriptors and symlinks).
pub(super) fn statx_fd(fd: BorrowedFd<'_>) -> rustix::io::Result<Statx> {
    rustix::fs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
}

/// The generation of the inode a `statx` answer describes: its birth time in nanoseconds,
/// which a host inode number reused for a new object does not share with the old one;
/// `None` where the host filesystem keeps no birth time.
pub(super) fn generation_of(st: &Statx) -> Option<u64> {
    if st.stx_mask & StatxFlags::BTIME.bits() == 0 {
        return None;
    }
    let secs = u64::try_from(st.stx_btime.tv_sec).ok()?;
    Some(
        secs.wrapping_mul(1_000_000_000)
            .wrapping_add(u64::from(st.stx_btime.tv_nsec)),
    )
}

/// `statx` of `name` in directory `dir`, without following a symlink.
pub(super) fn statx_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<Statx> {
    rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS)
}

/// An `O_PATH` descriptor for `name` in `dir`, the final component not followed.
pub(super) fn open_path_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(dir, name, PATH_FLAGS, Mode::empty())
}

/// A readable descriptor of the directory `dir` (an `O_PATH` one is enough): `openat(dir,
/// ".")` reopens the same inode.
pub(super) fn open_dir_for_reading(dir: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The device a `statx` answer lives on.
pub(super) fn dev_of(st: &Statx) -> (u32, u32) {
    (st.stx_dev_major, st.stx_dev_minor)
}

/// The file type of a `statx` answer.
pub(super) fn kind_of(st: &Statx) -> VfsResult<FileType> {
    FileType::from_mode(u32::from(st.stx_mode)).ok_or_else(|| VfsError::Io("host reported an unknown file type".into()))
}

/// The bijection between host inode numbers and ours: the root's host number and 1 trade
/// places, every other number is itself. It is its own inverse.
#[derive(Clone, Copy, Debug)]
pub(super) struct InoMap {
    root_host: u64,
}

impl InoMap {
    pub(super) fn new(root_host: u64) -> InoMap {
        InoMap { root_host }
    }

    /// Our inode number for a host one.
    pub(super) fn to_vfs(self, host: u64) -> Ino {
        Ino(self.swap(host))
    }

    /// The host inode number for ours.
    #[cfg(all(test, not(loom)))]
    pub(super) fn to_host(self, ino: Ino) -> u64 {
        self.swap(ino.0)
    }

    fn swap(self, n: u64) -> u64 {
        if n == self.root_host {
            Ino::ROOT.0
        } else if n == Ino::ROOT.0 {
            self.root_host
        } else {
            n
        }
    }
}

/// Attributes from a `statx` answer, numbered through `map`.
pub(super) fn attr_of(st: &Statx, map: InoMap) -> VfsResult<Attr> {
    let ts = |t: &rustix::fs::StatxTimestamp| Timestamp::new(t.tv_sec, t.tv_nsec);
    Ok(Attr {
        ino: map.to_vfs(st.stx_ino),
        kind: kind_of(st)?,
        perm: st.stx_mode & 0o7777,
        nlink: st.stx_nlink,
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: st.stx_size,
        blocks: st.stx_blocks,
        blksize: st.stx_blksize,
        rdev: rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor),
        atime: ts(&st.stx_atime),
        mtime: ts(&st.stx_mtime),
        ctime: ts(&st.stx_ctime),
    })
}

/// The host flags for opening a file with the caller's `flags`: its access mode (an
/// invalid `O_ACCMODE` of 3 becomes read-write, as [`OpenFlags::access`] says) and the
/// flags that only change how I/O behaves. Everything that could change *what* is opened
/// (`O_CREAT`, `O_DIRECTORY`, `O_PATH`, `O_TMPFILE`, …) or break our buffers (`O_DIRECT`)
/// is dropped; the caller adds `O_CLOEXEC`/`O_NOFOLLOW`/`O_NOCTTY` as fits.
pub(super) fn io_flags(flags: OpenFlags) -> OFlags {
    let access = match flags.access() {
        AccessMode::Read => OFlags::RDONLY,
        AccessMode::Write => OFlags::WRONLY,
        AccessMode::ReadWrite => OFlags::RDWR,
    };
    let keep = libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME | libc::O_NONBLOCK;
    access | OFlags::from_bits_retain((flags.0 & keep).cast_unsigned())
}

/// A budget of long-lived directory descriptors, so that keeping `O_PATH` descriptors for
/// looked-up directories can never exhaust the process's descriptor table.
#[derive(Debug)]
pub(super) struct FdBudget {
    held: AtomicUsize,
    limit: usize,
}

impl FdBudget {
    pub(super) fn new(limit: usize) -> Arc<FdBudget> {
        Arc::new(FdBudget {
            held: AtomicUsize::new(0),
            limit,
        })
    }

    /// Wraps `fd` as a counted [`DirFd`] if the budget allows one more, else gives it back.
    pub(super) fn keep(this: &Arc<FdBudget>, fd: OwnedFd) -> Result<Arc<DirFd>, OwnedFd> {
        let mut cur = this.held.load(Ordering::Relaxed);
        loop {
            if cur >= this.limit {
                return Err(fd);
            }
            match this
                .held
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(Arc::new(DirFd {
                        fd,
                        budget: Some(Arc::clone(this)),
                    }));
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Descriptors currently counted against the budget.
    #[cfg(all(test, not(loom)))]
    pub(super) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// A long-lived `O_PATH` descriptor of a directory; returns its slot to the [`FdBudget`]
/// when the last user drops it.
#[derive(Debug)]
pub(super) struct DirFd {
    fd: OwnedFd,
    budget: Option<Arc<FdBudget>>,
}

impl DirFd {
    /// A descriptor outside any budget (the root's).
    pub(super) fn uncounted(fd: OwnedFd) -> Arc<DirFd> {
        Arc::new(DirFd { fd, budget: None })
    }
}

impl AsFd for DirFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for DirFd {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.held.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// An open file behind an [`crate::Fh`]: a real host descriptor with the caller's access mode.
#[derive(Debug)]
pub(super) struct OpenFile {
    pub(super) fd: OwnedFd,
    pub(super) access: AccessMode,
}

/// A descriptor naming one inode for the length of an operation: a kept directory
/// descriptor, a fresh `O_PATH` one, or an open file's.
#[derive(Debug)]
pub(super) enum InodeFd {
    Dir(Arc<DirFd>),
    Path(OwnedFd),
    Open(Arc<OpenFile>),
}

impl AsFd for InodeFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            InodeFd::Dir(d) => d.as_fd(),
            InodeFd::Path(fd) => fd.as_fd(),
            InodeFd::Open(f) => f.fd.as_fd(),
        }
    }
}

/// An inode found on the host: a descriptor for it and its type.
#[derive(Debug)]
pub(super) struct Resolved {
    pub(super) fd: InodeFd,
    pub(super) kind: FileType,
    /// The `statx` answer that verified the descriptor, taken by this very operation (so
    /// `getattr` need not ask twice); `None` for a kept directory descriptor.
    pub(super) verified: Option<Statx>,
}

/// `/proc/self/fd`, kept open: reopening `N` there reopens the inode of our descriptor `N`
/// (a magic link, resolved by the kernel to the descriptor's inode, not to a path).
#[derive(Debug)]
pub(super) struct ProcFd {
    dir: OwnedFd,
}

impl ProcFd {
    pub(super) fn open() -> VfsResult<ProcFd> {
        let dir = rustix::fs::openat(
            rustix::fs::CWD,
            c"/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(ProcFd { dir })
    }

    fn entry(fd: BorrowedFd<'_>) -> String {
        fd.as_raw_fd().to_string()
    }

    /// A new open file description of `fd`'s inode with `flags`. Fails with `ELOOP` for a
    /// symlink (the kernel never opens one).
    pub(super) fn reopen(&self, fd: BorrowedFd<'_>, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        rustix::fs::openat(
            &self.dir,
            Self::entry(fd),
            flags | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
    }

    /// `chmod` of `fd`'s inode (callers refuse symlinks first).
    pub(super) fn chmod(&self, fd: BorrowedFd<'_>, mode: u32) -> rustix::io::Result<()> {
        rustix::fs::chmodat(&self.dir, Self::entry(fd), Mode::from_raw_mode(mode), AtFlags::empty())
    }

    /// A new name `newdir/newname` for `fd`'s inode.
    pub(super) fn link(&self, fd: BorrowedFd<'_>, newdir: BorrowedFd<'_>, newname: &OsStr) -> rustix::io::Result<()> {
        rustix::fs::linkat(&self.dir, Self::entry(fd), newdir, newname, AtFlags::SYMLINK_FOLLOW)
    }

    /// The path naming `fd`'s inode, for the calls that have no `*at` form (xattrs).
    pub(super) fn path(fd: BorrowedFd<'_>) -> String {
        format!("/proc/self/fd/{}", fd.as_raw_fd())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ino_map_is_an_involution_that_swaps_root_and_one() {
        let m = InoMap::new(2);
        assert_eq!(m.to_vfs(2), Ino::ROOT);
        assert_eq!(m.to_vfs(1), Ino(2));
        assert_eq!(m.to_vfs(77), Ino(77));
        for n in [1, 2, 3, 77, u64::MAX] {
            assert_eq!(m.to_host(m.to_vfs(n)), n);
        }
        let same = InoMap::new(1);
        assert_eq!(same.to_vfs(1), Ino::ROOT);
        assert_eq!(same.to_host(Ino::ROOT), 1);
    }

    #[test]
    fn io_flags_keep_access_and_io_bits_only() {
        let f = io_flags(OpenFlags(
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_DIRECTORY,
        ));
        assert!(f.contains(OFlags::WRONLY | OFlags::APPEND));
        assert!(!f.contains(OFlags::CREATE));
        assert!(!f.contains(OFlags::DIRECTORY));
        assert!(io_flags(OpenFlags(3)).contains(OFlags::RDWR));
        assert!(!io_flags(OpenFlags(libc::O_RDONLY | libc::O_DIRECT)).contains(OFlags::DIRECT));
    }

    #[test]
    fn budget_counts_and_returns_slots() {
        let b = FdBudget::new(1);
        let fd = |_: ()| rustix::fs::openat(rustix::fs::CWD, c"/", PATH_FLAGS, Mode::empty()).unwrap();
        let kept = FdBudget::keep(&b, fd(())).unwrap();
        assert_eq!(b.held(), 1);
        assert!(FdBudget::keep(&b, fd(())).is_err());
        drop(kept);
        assert_eq!(b.held(), 0);
        assert!(FdBudget::keep(&b, fd(())).is_ok());
    }
}
