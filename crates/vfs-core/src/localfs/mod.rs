//! `LocalFs`: a host directory served as a [`VirtualFs`], passing every operation through
//! to the host kernel.
//!
//! Invariants:
//! - **Nothing outside the root is ever reached.** Every name is resolved relative to a
//!   directory descriptor with `*at` calls that never follow a symlink in the final
//!   component (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, or calls that never follow, such as
//!   `mkdirat`, `unlinkat`, `renameat2`). Names are [`Name`]s, single components that are
//!   never `..`. Directory descriptors are `O_PATH` descriptors reached from the root that
//!   way, and an operation on an inode by number uses a descriptor verified to be that
//!   inode (see `resolve.rs`), reopened through `/proc/self/fd/N` when real access is
//!   needed (a magic link that names the descriptor's inode, not a path). A symlink
//!   inside the root, whatever it points at, is only ever an object of its own: looked
//!   up, read with `readlink`, never followed. Opening one fails with `ELOOP`.
//! - **Inode numbers are the host's** (`st_ino`), so they survive restarts
//!   ([`InodeStability::Stable`]); the root's host number and 1 trade places so that the
//!   root is [`Ino::ROOT`]. An inode number the table does not know (a handle from before
//!   a restart, or after `forget`) is found by walking the tree from the root; absent
//!   there, it is [`VfsError::Stale`].
//! - **No attribute is cached.** The table keeps, per inode, only where it was last seen,
//!   a lookup count and, for looked-up directories, an `O_PATH` descriptor; `getattr`
//!   always asks the host, so no size is ever stale.
//! - **Descriptors are bounded.** Regular files hold a descriptor only while open
//!   (a [`Fh`] is a real descriptor with the caller's access mode). Kept directory
//!   descriptors are limited by a budget of a quarter of `RLIMIT_NOFILE` (raised to its
//!   hard limit at start); past it, directories are reopened by their remembered path.
//!
//! Limitations, deliberate:
//! - **One device.** An entry on another device than the root (a mount point inside the
//!   root) is listed by `readdir` with the inode number the host gives it, but `lookup`
//!   answers `EXDEV` for it and `readdirplus` leaves it out (there are no attributes a
//!   lookup would agree with), and nothing below it is reachable.
//! - **Device nodes, fifos and sockets** can be created, listed, stat'ed, renamed and
//!   removed, but not opened through `LocalFs`: opening a device node would give access to
//!   the host's device, outside the root, and opening a fifo could block a worker thread
//!   forever. `open` answers `EOPNOTSUPP` (`ENXIO` for a socket, `ELOOP` for a symlink).
//! - **Ownership and permissions.** New objects get the caller's uid (and gid, unless the
//!   parent directory is setgid, where the host's own rule applies) when the process runs
//!   as root; otherwise they belong to the process. Permission checks against the caller
//!   are the front end's job (FUSE `default_permissions`); the host checks the process.
//! - **Inode numbers are reused by the host** after a file is deleted; like an NFS server
//!   without generation numbers, an old handle may then name the new file. FUSE entries
//!   tell them apart ([`VirtualFs::generation`]: the host's birth time, where it keeps one).
//! - A directory moved *out of* the root on the host while `LocalFs` holds its descriptor
//!   stays reachable through that descriptor until the front end forgets it, as a process's
//!   current directory would. (Moving things out of the root needs access outside it.)
//! - `readdirplus` entries and inodes found by a walk are remembered (a name and a parent,
//!   no descriptor) without counting as lookups, so that using them needs no walk; they
//!   go when the front end forgets them. A front end that never forgets (NFS) makes this
//!   memory grow with the number of distinct inodes it touches. A walk costs a scan of
//!   the whole tree, and nothing stops a client from asking for unknown inode numbers.
//!
//! Blocking: host calls run inline on the calling task, except `fsync`, `fallocate` and
//! the tree walk, which go to tokio's blocking pool (or inline outside a runtime).

mod host;
#[cfg(feature = "watch")]
mod report;
mod resolve;

#[cfg(all(test, not(loom)))]
mod escape_tests;
#[cfg(all(test, not(loom)))]
mod tests;

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use bytes::Bytes;
use rustix::fs::{AtFlags, Dir, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno as HostErrno;
use tracing::{debug, trace};

use self::host::{
    DirFd, FdBudget, InoMap, InodeFd, OpenFile, ProcFd, Resolved, attr_of, dev_of, io_flags, kind_of,
    open_dir_for_reading, open_path_at, statx_at, statx_fd,
};
use self::resolve::{Node, Sighting};
use crate::error::{VfsError, VfsResult};
use crate::fh_table::FhTable;
use crate::lock_order::{Locked, Unlocked};
use crate::meta::MetaTable;
use crate::sync::Arc;
use crate::types::{
    Attr, DirEntry, DirEntryPlus, Fh, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, SetTime,
    StatFs, XattrSet, check_symlink_target,
};
use crate::vfs::{ChangeSource, InodeStability, MknodSpec, VirtualFs, XATTR_SIZE_MAX, check_xattr};

/// Fewest and most directory descriptors kept open for looked-up directories.
const DIR_FD_BUDGET_MIN: usize = 64;
const DIR_FD_BUDGET_MAX: usize = 1 << 16;

/// The largest chunk one `pread` asks for; a read grows its buffer only as data arrives.
const READ_CHUNK: usize = 1 << 20;

/// A host directory served as a [`VirtualFs`]. See the [module docs](self).
#[derive(Debug)]
pub struct LocalFs {
    inner: Arc<Inner>,
    /// The canonical root, for the watcher.
    #[cfg_attr(not(feature = "watch"), allow(dead_code))]
    root_path: std::path::PathBuf,
    /// Reports of host changes to front ends, once one asked.
    #[cfg(feature = "watch")]
    reports: parking_lot::Mutex<Option<report::Reports>>,
    /// Whether host changes are to be reported (default; [`LocalFs::without_reports`]).
    #[cfg_attr(not(feature = "watch"), allow(dead_code))]
    reports_wanted: bool,
}

/// Who the process is, for giving new objects to the caller.
#[derive(Debug, Clone, Copy)]
struct Creds {
    is_root: bool,
    euid: u32,
    egid: u32,
}

#[derive(Debug)]
struct Inner {
    root: Arc<DirFd>,
    root_dev: (u32, u32),
    map: InoMap,
    proc: ProcFd,
    nodes: MetaTable<Node>,
    handles: FhTable<Arc<OpenFile>>,
    budget: Arc<FdBudget>,
    creds: Creds,
    source_id: String,
}

impl LocalFs {
    /// Serves the directory `root`. Raises the soft `RLIMIT_NOFILE` to the hard limit.
    ///
    /// Errors: whatever the host says about `root` (`ENOENT`, `EACCES`), `ENOTDIR` if it is
    /// not a directory, and any error opening `/proc/self/fd` (procfs must be mounted).
    pub fn new(root: impl AsRef<Path>) -> VfsResult<LocalFs> {
        Self::with_dir_fd_budget(root, None)
    }

    /// [`LocalFs::new`] with a given number of directory descriptors to keep (`None`: a
    /// quarter of `RLIMIT_NOFILE`, within bounds).
    fn with_dir_fd_budget(root: impl AsRef<Path>, budget: Option<usize>) -> VfsResult<LocalFs> {
        let canonical = std::fs::canonicalize(root.as_ref())?;
        let fd = rustix::fs::openat(
            rustix::fs::CWD,
            &canonical,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = statx_fd(fd.as_fd())?;
        if kind_of(&st)? != FileType::Directory {
            return Err(VfsError::NotDir);
        }
        let nofile = raise_nofile_limit();
        let budget = budget.unwrap_or((nofile / 4).clamp(DIR_FD_BUDGET_MIN, DIR_FD_BUDGET_MAX));
        let euid = rustix::process::geteuid();
        let creds = Creds {
            is_root: euid.is_root(),
            euid: euid.as_raw(),
            egid: rustix::process::getegid().as_raw(),
        };
        debug!(root = %canonical.display(), nofile, budget, "localfs ready");
        Ok(LocalFs {
            inner: Arc::new(Inner {
                root: DirFd::uncounted(fd),
                root_dev: dev_of(&st),
                map: InoMap::new(st.stx_ino),
                proc: ProcFd::open()?,
                nodes: MetaTable::new(),
                handles: FhTable::new(),
                budget: FdBudget::new(budget),
                creds,
                source_id: format!("localfs:{}", canonical.display()),
            }),
            root_path: canonical,
            #[cfg(feature = "watch")]
            reports: parking_lot::Mutex::new(None),
            reports_wanted: true,
        })
    }

    /// Reports changes made in the host directory by other processes to every front end
    /// that asks ([`VirtualFs::report_changes`]: an inotify watcher, feature `watch`), so
    /// that the front end may cache for long ([`ChangeSource::Reported`]). This is the
    /// default; it undoes [`LocalFs::without_reports`].
    pub fn with_reports(mut self) -> Self {
        self.reports_wanted = true;
        self
    }

    /// Starts no watcher: the `LocalFs` then declares [`ChangeSource::Unknown`] and front
    /// ends keep short caches (for a tree too large for the host's inotify watches, or a
    /// front end that never caches).
    pub fn without_reports(mut self) -> Self {
        self.reports_wanted = false;
        self
    }

    /// Finds `ino` on the host: through the table, an open handle, or a walk of the tree.
    async fn resolve(&self, tok: &mut Locked<Unlocked>, ino: Ino) -> VfsResult<Resolved> {
        if let Some(r) = self.inner.resolve_known(tok, ino) {
            return Ok(r);
        }
        if let Some(h) = self.inner.open_handle_of(tok, ino) {
            let st = statx_fd(h.fd.as_fd())?;
            return Ok(Resolved {
                fd: InodeFd::Open(h),
                kind: kind_of(&st)?,
                verified: Some(st),
            });
        }
        trace!(%ino, "unknown inode: walking the tree");
        let inner = Arc::clone(&self.inner);
        run_blocking(move || inner.walk_and_remember(ino)).await
    }

    /// Like [`LocalFs::resolve`] for an inode that must be a directory.
    async fn resolve_dir(&self, tok: &mut Locked<Unlocked>, ino: Ino) -> VfsResult<Resolved> {
        let r = self.resolve(tok, ino).await?;
        if r.kind == FileType::Directory {
            Ok(r)
        } else {
            Err(VfsError::NotDir)
        }
    }

    /// The open file behind `fh`, which must belong to `ino`.
    fn handle(&self, tok: &mut Locked<Unlocked>, ino: Ino, fh: Fh) -> VfsResult<Arc<OpenFile>> {
        self.inner.handles.get(tok, ino, fh)
    }

    fn add_handle(&self, tok: &mut Locked<Unlocked>, ino: Ino, fd: OwnedFd, flags: OpenFlags) -> Fh {
        let file = Arc::new(OpenFile {
            fd,
            access: flags.access(),
        });
        self.inner.handles.insert(tok, ino, file)
    }

    /// Attributes of a descriptor's inode, which must be on the root's device.
    fn attr(&self, fd: BorrowedFd<'_>) -> VfsResult<Attr> {
        self.attr_gen(fd).map(|(a, _)| a)
    }

    /// [`LocalFs::attr`] and the inode's generation ([`host::generation_of`]).
    fn attr_gen(&self, fd: BorrowedFd<'_>) -> VfsResult<(Attr, Option<u64>)> {
        let st = statx_fd(fd)?;
        if dev_of(&st) != self.inner.root_dev {
            return Err(VfsError::CrossDevice);
        }
        Ok((attr_of(&st, self.inner.map)?, host::generation_of(&st)))
    }

    /// A real descriptor for the inode behind the `O_PATH` descriptor `fd`, opened with
    /// `flags`. Only regular files and directories are opened (see the module docs).
    fn open_inode(&self, fd: BorrowedFd<'_>, kind: FileType, flags: OFlags) -> VfsResult<OwnedFd> {
        match kind {
            FileType::Regular => Ok(self.inner.proc.reopen(fd, flags)?),
            FileType::Directory => Ok(rustix::fs::openat(
                fd,
                c".",
                flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?),
            FileType::Symlink => Err(VfsError::Loop),
            FileType::Socket => Err(VfsError::Os(crate::Errno::ENXIO)),
            FileType::Fifo | FileType::CharDevice | FileType::BlockDevice => Err(VfsError::Unsupported),
        }
    }

    /// Gives a new object to the caller (when we are root) and sets its permission bits
    /// exactly, whatever the process umask. `mode` is `None` for a symlink.
    fn settle_new(&self, ctx: &RequestCtx, parent_sgid: bool, fd: BorrowedFd<'_>, mode: Option<u32>) -> VfsResult<()> {
        let c = self.inner.creds;
        if c.is_root {
            let uid = (ctx.uid != c.euid && ctx.uid != u32::MAX).then(|| Uid::from_raw(ctx.uid));
            let gid = (ctx.gid != c.egid && ctx.gid != u32::MAX && !parent_sgid).then(|| Gid::from_raw(ctx.gid));
            if uid.is_some() || gid.is_some() {
                rustix::fs::chownat(fd, c"", uid, gid, AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)?;
            }
        }
        if let Some(mode) = mode {
            self.inner.proc.chmod(fd, mode)?;
        }
        Ok(())
    }

    /// Finishes a node created as `name` in `dir`: opens it, checks it is the kind we
    /// made, settles owner and mode, remembers it with one lookup and returns its attributes.
    #[allow(clippy::too_many_arguments)]
    fn finish_node(
        &self,
        tok: &mut Locked<Unlocked>,
        ctx: &RequestCtx,
        parent: Ino,
        dir: BorrowedFd<'_>,
        parent_sgid: bool,
        name: Name<'_>,
        kind: FileType,
        mode: Option<u32>,
    ) -> VfsResult<Attr> {
        let fd = open_path_at(dir, name.as_os_str())?;
        let attr = self.attr(fd.as_fd())?;
        if attr.kind != kind {
            // Replaced on the host between our two calls: not ours to settle.
            return Err(VfsError::Io("created object was replaced on the host".into()));
        }
        self.settle_new(ctx, parent_sgid, fd.as_fd(), mode)?;
        let (attr, generation) = self.attr_gen(fd.as_fd())?;
        let sighting = Sighting {
            ino: attr.ino,
            kind,
            parent,
            name: name.as_os_str(),
            generation,
        };
        self.inner.remember(tok, sighting, 1, Some(fd));
        Ok(attr)
    }

    /// Entries of directory `dir` (inode `ino`) after `cookie`, at most `max`.
    fn list(&self, dir: BorrowedFd<'_>, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let mut stream = Dir::new(open_dir_for_reading(dir)?)?;
        if cookie != 0 {
            stream.seek(cookie.cast_signed())?;
        }
        while out.len() < max {
            let entry = match stream.read() {
                None => break,
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(e)) => e,
            };
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            let entry_ino = if name == "." {
                ino
            } else if name == ".." && ino == Ino::ROOT {
                Ino::ROOT
            } else {
                self.inner.map.to_vfs(entry.ino())
            };
            let kind = match dirent_kind(entry.file_type()) {
                Some(k) => k,
                // The filesystem does not fill d_type: ask (an entry gone meanwhile is skipped).
                None => match statx_at(dir, name).map_err(VfsError::from).and_then(|st| kind_of(&st)) {
                    Ok(k) => k,
                    Err(_) => continue,
                },
            };
            // d_off is the position after this entry; 0 would restart the listing.
            let next = match entry.offset() {
                0 => i64::MAX.cast_unsigned(),
                off => off.cast_unsigned(),
            };
            out.push(DirEntry {
                ino: entry_ino,
                kind,
                name: name.to_os_string(),
                cookie: next,
            });
        }
        Ok(out)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in force.
fn raise_nofile_limit() -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum && lim.maximum.is_some() {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            debug!(error = %e, "could not raise RLIMIT_NOFILE");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    now.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn dirent_kind(t: rustix::fs::FileType) -> Option<FileType> {
    use rustix::fs::FileType as H;
    Some(match t {
        H::RegularFile => FileType::Regular,
        H::Directory => FileType::Directory,
        H::Symlink => FileType::Symlink,
        H::Fifo => FileType::Fifo,
        H::Socket => FileType::Socket,
        H::CharacterDevice => FileType::CharDevice,
        H::BlockDevice => FileType::BlockDevice,
        H::Unknown => return None,
    })
}

fn host_file_type(kind: FileType) -> rustix::fs::FileType {
    use rustix::fs::FileType as H;
    match kind {
        FileType::Regular => H::RegularFile,
        FileType::Directory => H::Directory,
        FileType::Symlink => H::Symlink,
        FileType::Fifo => H::Fifo,
        FileType::Socket => H::Socket,
        FileType::CharDevice => H::CharacterDevice,
        FileType::BlockDevice => H::BlockDevice,
    }
}

/// Whether the directory behind `fd` is setgid (new objects then take its group).
fn is_setgid(fd: BorrowedFd<'_>) -> VfsResult<bool> {
    let st = statx_fd(fd)?;
    Ok(u32::from(st.stx_mode) & libc::S_ISGID != 0)
}

fn set_time(t: Option<SetTime>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(SetTime::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(SetTime::At(t)) => Timespec {
            tv_sec: t.secs,
            tv_nsec: i64::from(t.nsecs),
        },
    }
}

/// A `u32::MAX` id means "leave unchanged", as `-1` does for `chown(2)`.
fn some_id(id: Option<u32>) -> Option<u32> {
    id.filter(|&i| i != u32::MAX)
}

/// Runs `f` on tokio's blocking pool if there is a runtime, else right here.
async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> VfsResult<T> + Send + 'static) -> VfsResult<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt
            .spawn_blocking(f)
            .await
            .map_err(|e| VfsError::Io(format!("blocking task failed: {e}")))?,
        Err(_) => f(),
    }
}

/// Splits a NUL-separated `listxattr` answer into names.
fn split_names(buf: &[u8]) -> Vec<OsString> {
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect()
}

/// Calls `f` with a small buffer, then with the largest the kernel allows if the answer
/// did not fit (`ERANGE`), so the common case costs no 64 KiB allocation.
fn with_xattr_buf(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> VfsResult<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = match f(&mut buf) {
        Ok(n) => n,
        Err(HostErrno::RANGE) => {
            buf = vec![0u8; XATTR_SIZE_MAX];
            f(&mut buf)?
        }
        Err(e) => return Err(e.into()),
    };
    buf.truncate(n);
    Ok(buf)
}

impl VirtualFs for LocalFs {
    fn source_id(&self) -> &str {
        &self.inner.source_id
    }

    /// Other processes change the host directory; unless [`LocalFs::without_reports`] (and
    /// with the `watch` feature), an inotify watcher reports each change.
    fn change_source(&self) -> ChangeSource {
        if cfg!(feature = "watch") && self.reports_wanted {
            ChangeSource::Reported
        } else {
            ChangeSource::Unknown
        }
    }

    fn report_changes(&self, inv: std::sync::Arc<dyn crate::invalidate::Invalidator>) -> ChangeSource {
        #[cfg(feature = "watch")]
        {
            if !self.reports_wanted {
                return ChangeSource::Unknown;
            }
            let mut reports = self.reports.lock();
            if let Some(r) = reports.as_ref() {
                r.add(inv);
                return ChangeSource::Reported;
            }
            match report::Reports::start(&self.root_path, Arc::clone(&self.inner), inv) {
                Ok(r) => {
                    *reports = Some(r);
                    ChangeSource::Reported
                }
                Err(e) => {
                    // E.g. too few inotify watches (fs.inotify.max_user_watches).
                    tracing::warn!(root = %self.root_path.display(), error = %e, "cannot watch the host directory; changes made behind the mount are not reported");
                    ChangeSource::Unknown
                }
            }
        }
        #[cfg(not(feature = "watch"))]
        {
            let _ = inv;
            ChangeSource::Unknown
        }
    }

    fn inode_stability(&self) -> InodeStability {
        InodeStability::Stable
    }

    async fn lookup(&self, _ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let dir = self.resolve_dir(&mut tok, parent).await?;
        let fd = match open_path_at(dir.fd.as_fd(), name.as_os_str()) {
            Ok(fd) => fd,
            Err(e) => {
                trace!(%parent, %name, error = %e, "lookup");
                return Err(e.into());
            }
        };
        let (attr, generation) = match self.attr_gen(fd.as_fd()) {
            Err(VfsError::CrossDevice) => {
                debug!(%parent, %name, "lookup of a mount point: another device");
                return Err(VfsError::CrossDevice);
            }
            r => r?,
        };
        let sighting = Sighting {
            ino: attr.ino,
            kind: attr.kind,
            parent,
            name: name.as_os_str(),
            generation,
        };
        self.inner.remember(&mut tok, sighting, 1, Some(fd));
        Ok(attr)
    }

    async fn forget(&self, ino: Ino, nlookup: u64) {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.inner.forget(&mut tok, ino, nlookup);
    }

    async fn getattr(&self, _ctx: &RequestCtx, ino: Ino, fh: Option<Fh>) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        if let Some(f) = fh.and_then(|fh| self.handle(&mut tok, ino, fh).ok()) {
            return self.attr(f.fd.as_fd());
        }
        let r = self.resolve(&mut tok, ino).await?;
        match &r.verified {
            // Verified on the root's device by this very call: no need to ask again.
            Some(st) => attr_of(st, self.inner.map),
            None => self.attr(r.fd.as_fd()),
        }
    }

    async fn setattr(&self, _ctx: &RequestCtx, ino: Ino, set: SetAttr) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let r = match set.fh.and_then(|fh| self.handle(&mut tok, ino, fh).ok()) {
            Some(f) => Resolved {
                kind: kind_of(&statx_fd(f.fd.as_fd())?)?,
                fd: InodeFd::Open(f),
                verified: None,
            },
            None => self.resolve(&mut tok, ino).await?,
        };
        let fd = r.fd.as_fd();
        let (uid, gid) = (some_id(set.uid), some_id(set.gid));
        if uid.is_some() || gid.is_some() {
            rustix::fs::chownat(
                fd,
                c"",
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(mode) = set.mode {
            if r.kind == FileType::Symlink {
                // Linux has no mode on symlinks: fchmodat(AT_SYMLINK_NOFOLLOW) says the same.
                return Err(VfsError::Unsupported);
            }
            self.inner.proc.chmod(fd, mode & 0o7777)?;
        }
        if let Some(size) = set.size {
            match (&r.fd, r.kind) {
                (_, FileType::Directory) => return Err(VfsError::IsDir),
                (InodeFd::Open(f), FileType::Regular) if f.access.can_write() => rustix::fs::ftruncate(&f.fd, size)?,
                (_, FileType::Regular) => {
                    let w = self.inner.proc.reopen(fd, OFlags::WRONLY)?;
                    rustix::fs::ftruncate(&w, size)?;
                }
                _ => return Err(VfsError::Invalid("truncate of a non-regular file")),
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let times = Timestamps {
                last_access: set_time(set.atime),
                last_modification: set_time(set.mtime),
            };
            rustix::fs::utimensat(fd, c"", &times, AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)?;
        }
        self.attr(fd)
    }

    async fn readlink(&self, _ctx: &RequestCtx, ino: Ino) -> VfsResult<OsString> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let r = self.resolve(&mut tok, ino).await?;
        if r.kind != FileType::Symlink {
            return Err(VfsError::Invalid("not a symlink"));
        }
        let target = rustix::fs::readlinkat(r.fd.as_fd(), c"", Vec::new())?;
        Ok(OsString::from_vec(target.into_bytes()))
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
        let MknodSpec { kind, perm, rdev } = MknodSpec::new(mode, umask, rdev)?;
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let dir = self.resolve_dir(&mut tok, parent).await?;
        let dfd = dir.fd.as_fd();
        let sgid = is_setgid(dfd)?;
        rustix::fs::mknodat(
            dfd,
            name.as_os_str(),
            host_file_type(kind),
            Mode::from_raw_mode(perm),
            rdev,
        )?;
        self.finish_node(&mut tok, ctx, parent, dfd, sgid, name, kind, Some(perm))
    }

    async fn mkdir(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, mode: u32, umask: u32) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let dir = self.resolve_dir(&mut tok, parent).await?;
        let dfd = dir.fd.as_fd();
        let sgid = is_setgid(dfd)?;
        // mkdir(2) keeps only the rwx and sticky bits; a setgid parent passes its bit on.
        let perm = (mode & !umask & 0o1777) | if sgid { libc::S_ISGID } else { 0 };
        rustix::fs::mkdirat(dfd, name.as_os_str(), Mode::from_raw_mode(perm))?;
        self.finish_node(&mut tok, ctx, parent, dfd, sgid, name, FileType::Directory, Some(perm))
    }

    async fn unlink(&self, _ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let dir = self.resolve_dir(&mut tok, parent).await?;
        rustix::fs::unlinkat(dir.fd.as_fd(), name.as_os_str(), AtFlags::empty())?;
        Ok(())
    }

    async fn rmdir(&self, _ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let dir = self.resolve_dir(&mut tok, parent).await?;
        let dfd = dir.fd.as_fd();
        let gone = statx_at(dfd, name.as_os_str()).ok();
        rustix::fs::unlinkat(dfd, name.as_os_str(), AtFlags::REMOVEDIR)?;
        if let Some(st) = gone {
            self.inner.dir_removed(&mut tok, self.inner.map.to_vfs(st.stx_ino));
        }
        Ok(())
    }

    async fn symlink(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, target: &OsStr) -> VfsResult<Attr> {
        check_symlink_target(target)?;
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let dir = self.resolve_dir(&mut tok, parent).await?;
        let dfd = dir.fd.as_fd();
        let sgid = is_setgid(dfd)?;
        rustix::fs::symlinkat(target, dfd, name.as_os_str())?;
        self.finish_node(&mut tok, ctx, parent, dfd, sgid, name, FileType::Symlink, None)
    }

    async fn rename(
        &self,
        _ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        newparent: Ino,
        newname: Name<'_>,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        let flags = flags.validate()?;
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let from = self.resolve_dir(&mut tok, parent).await?;
        let to = self.resolve_dir(&mut tok, newparent).await?;
        let moved = statx_at(from.fd.as_fd(), name.as_os_str()).ok();
        let swapped = if flags.exchange() {
            statx_at(to.fd.as_fd(), newname.as_os_str()).ok()
        } else {
            None
        };
        rustix::fs::renameat_with(
            from.fd.as_fd(),
            name.as_os_str(),
            to.fd.as_fd(),
            newname.as_os_str(),
            rustix::fs::RenameFlags::from_bits_retain(flags.0),
        )?;
        if let Some(st) = moved {
            let ino = self.inner.map.to_vfs(st.stx_ino);
            self.inner.moved(&mut tok, ino, newparent, newname.as_os_str());
        }
        if let Some(st) = swapped {
            let ino = self.inner.map.to_vfs(st.stx_ino);
            self.inner.moved(&mut tok, ino, parent, name.as_os_str());
        }
        Ok(())
    }

    async fn link(&self, _ctx: &RequestCtx, ino: Ino, newparent: Ino, newname: Name<'_>) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let r = self.resolve(&mut tok, ino).await?;
        if r.kind == FileType::Directory {
            return Err(VfsError::NotPermitted);
        }
        let to = self.resolve_dir(&mut tok, newparent).await?;
        self.inner.proc.link(r.fd.as_fd(), to.fd.as_fd(), newname.as_os_str())?;
        let (attr, generation) = self.attr_gen(r.fd.as_fd())?;
        let sighting = Sighting {
            ino: attr.ino,
            kind: attr.kind,
            parent: newparent,
            name: newname.as_os_str(),
            generation,
        };
        self.inner.remember(&mut tok, sighting, 1, None);
        Ok(attr)
    }

    async fn open(&self, _ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let r = self.resolve(&mut tok, ino).await?;
        let fd = self.open_inode(r.fd.as_fd(), r.kind, io_flags(flags))?;
        Ok(self.add_handle(&mut tok, ino, fd, flags))
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
        let perm = mode & !umask & 0o7777;
        let io = io_flags(flags);
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let dir = self.resolve_dir(&mut tok, parent).await?;
        let dfd = dir.fd.as_fd();
        let excl = io | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let mut retries = 0;
        let (file, created) = loop {
            match rustix::fs::openat(dfd, name.as_os_str(), excl, Mode::from_raw_mode(perm)) {
                Ok(fd) => break (fd, true),
                Err(HostErrno::EXIST) if !flags.exclusive() => {}
                Err(e) => return Err(e.into()),
            }
            // The name exists and the caller accepts that: open what is there, never
            // following it, and only if it is a regular file.
            match open_path_at(dfd, name.as_os_str()) {
                Ok(p) => {
                    let kind = kind_of(&statx_fd(p.as_fd())?)?;
                    if kind == FileType::Directory {
                        return Err(VfsError::IsDir);
                    }
                    break (self.open_inode(p.as_fd(), kind, io)?, false);
                }
                // Removed between our two calls: try to create again.
                Err(HostErrno::NOENT) if retries < 8 => retries += 1,
                Err(e) => return Err(e.into()),
            }
        };
        if created {
            self.settle_new(ctx, is_setgid(dfd)?, file.as_fd(), Some(perm))?;
        }
        let (attr, generation) = self.attr_gen(file.as_fd())?;
        let sighting = Sighting {
            ino: attr.ino,
            kind: attr.kind,
            parent,
            name: name.as_os_str(),
            generation,
        };
        self.inner.remember(&mut tok, sighting, 1, None);
        let fh = self.add_handle(&mut tok, attr.ino, file, flags);
        Ok((attr, fh))
    }

    async fn read(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let f = self.handle(&mut tok, ino, fh)?;
        let want = usize::try_from(size).unwrap_or(usize::MAX);
        let mut buf: Vec<u8> = Vec::new();
        while buf.len() < want {
            let have = buf.len();
            let chunk = (want - have).min(READ_CHUNK);
            let at = offset
                .checked_add(have as u64)
                .ok_or(VfsError::Invalid("offset overflow"))?;
            buf.resize(have + chunk, 0);
            let n = rustix::io::pread(&f.fd, &mut buf[have..], at)?;
            buf.truncate(have + n);
            if n == 0 {
                break;
            }
        }
        Ok(Bytes::from(buf))
    }

    async fn write(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> VfsResult<u32> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let f = self.handle(&mut tok, ino, fh)?;
        let data = &data[..data.len().min(u32::MAX as usize)];
        let mut done = 0usize;
        // At least one call, so that even an empty write gets the host's answer (EBADF
        // through a read-only handle).
        loop {
            let at = offset.checked_add(done as u64).ok_or(VfsError::TooBig)?;
            match rustix::io::pwrite(&f.fd, &data[done..], at) {
                Ok(n) => {
                    done += n;
                    if n == 0 || done >= data.len() {
                        break;
                    }
                }
                // Report what was written before the failure, as write(2) does.
                Err(_) if done > 0 => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(u32::try_from(done).unwrap_or(u32::MAX))
    }

    async fn fsync(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh, datasync: bool) -> VfsResult<()> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let f = self.handle(&mut tok, ino, fh)?;
        run_blocking(move || {
            if datasync {
                rustix::fs::fdatasync(&f.fd)?;
            } else {
                rustix::fs::fsync(&f.fd)?;
            }
            Ok(())
        })
        .await
    }

    async fn release(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        // The descriptor closes when the removed `Arc` drops, outside the lock (or later,
        // when an in-flight operation on it finishes).
        self.inner.handles.remove(&mut tok, ino, fh).map(drop)
    }

    /// The host inode's birth time, as last seen by an entry answered for `ino`: a
    /// host filesystem reuses an inode number right after a removal, and without a new
    /// generation a FUSE kernel still holding the removed object's inode would take the
    /// new object for it.
    fn generation(&self, ino: Ino) -> u64 {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.inner.generation(&mut tok, ino)
    }

    fn passthrough_fd(&self, ino: Ino, fh: Fh) -> Option<OwnedFd> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let f = self.handle(&mut tok, ino, fh).ok()?;
        // Reads and writes of a handle are plain pread/pwrite on this descriptor, so the
        // kernel may use a duplicate of it directly (regular files only).
        let st = statx_fd(f.fd.as_fd()).ok()?;
        if kind_of(&st).ok()? != FileType::Regular {
            return None;
        }
        match f.fd.try_clone() {
            Ok(fd) => Some(fd),
            Err(e) => {
                debug!(%ino, error = %e, "passthrough: could not duplicate the descriptor");
                None
            }
        }
    }

    async fn readdir(&self, _ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let dir = self.resolve_dir(&mut tok, ino).await?;
        self.list(dir.fd.as_fd(), ino, cookie, max)
    }

    async fn readdirplus(&self, _ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntryPlus>> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let dir = self.resolve_dir(&mut tok, ino).await?;
        let dfd = dir.fd.as_fd();
        let entries = self.list(dfd, ino, cookie, max)?;
        let mut out = Vec::with_capacity(entries.len());
        for mut entry in entries {
            let st = if entry.name == "." || (entry.name == ".." && ino == Ino::ROOT) {
                statx_fd(dfd)
            } else {
                statx_at(dfd, &entry.name)
            };
            let attr = match st.map_err(VfsError::from).and_then(|st| {
                if dev_of(&st) == self.inner.root_dev {
                    attr_of(&st, self.inner.map)
                } else {
                    Err(VfsError::CrossDevice)
                }
            }) {
                Ok(a) => a,
                Err(e) => {
                    trace!(%ino, name = ?entry.name, error = %e, "readdirplus: entry skipped");
                    continue;
                }
            };
            if entry.name == ".." && ino == Ino::ROOT {
                // The root's parent is the root: nothing above it is shown.
            } else if entry.name != "." && entry.name != ".." {
                let sighting = Sighting {
                    ino: attr.ino,
                    kind: attr.kind,
                    parent: ino,
                    name: &entry.name,
                    generation: None,
                };
                self.inner.remember(&mut tok, sighting, 0, None);
            }
            entry.ino = attr.ino;
            entry.kind = attr.kind;
            out.push(DirEntryPlus { entry, attr });
        }
        Ok(out)
    }

    async fn statfs(&self, _ctx: &RequestCtx, _ino: Ino) -> VfsResult<StatFs> {
        let v = rustix::fs::fstatvfs(self.inner.root.as_fd())?;
        let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(StatFs {
            blocks: v.f_blocks,
            bfree: v.f_bfree,
            bavail: v.f_bavail,
            files: v.f_files,
            ffree: v.f_ffree,
            bsize: small(v.f_bsize),
            namelen: small(v.f_namemax),
            frsize: small(v.f_frsize),
        })
    }

    async fn getxattr(&self, _ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<Bytes> {
        check_xattr(name, None)?;
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let r = self.resolve(&mut tok, ino).await?;
        let path = ProcFd::path(r.fd.as_fd());
        let value = with_xattr_buf(|buf| rustix::fs::getxattr(path.as_str(), name, buf))?;
        Ok(Bytes::from(value))
    }

    async fn setxattr(&self, _ctx: &RequestCtx, ino: Ino, name: &OsStr, value: &[u8], how: XattrSet) -> VfsResult<()> {
        check_xattr(name, Some(value))?;
        let flags = match how {
            XattrSet::Any => XattrFlags::empty(),
            XattrSet::Create => XattrFlags::CREATE,
            XattrSet::Replace => XattrFlags::REPLACE,
        };
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let r = self.resolve(&mut tok, ino).await?;
        rustix::fs::setxattr(ProcFd::path(r.fd.as_fd()), name, value, flags)?;
        Ok(())
    }

    async fn listxattr(&self, _ctx: &RequestCtx, ino: Ino) -> VfsResult<Vec<OsString>> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let r = self.resolve(&mut tok, ino).await?;
        let path = ProcFd::path(r.fd.as_fd());
        let list = with_xattr_buf(|buf| rustix::fs::listxattr(path.as_str(), buf))?;
        Ok(split_names(&list))
    }

    async fn removexattr(&self, _ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<()> {
        check_xattr(name, None)?;
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let r = self.resolve(&mut tok, ino).await?;
        rustix::fs::removexattr(ProcFd::path(r.fd.as_fd()), name)?;
        Ok(())
    }

    async fn fallocate(
        &self,
        _ctx: &RequestCtx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> VfsResult<()> {
        let mode = u32::try_from(mode).map_err(|_| VfsError::Invalid("negative fallocate mode"))?;
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let f = self.handle(&mut tok, ino, fh)?;
        run_blocking(move || {
            rustix::fs::fallocate(
                &f.fd,
                rustix::fs::FallocateFlags::from_bits_retain(mode),
                offset,
                length,
            )?;
            Ok(())
        })
        .await
    }
}
