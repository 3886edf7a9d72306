//! [`FuseAdapter`]: `fuser`'s `Filesystem` trait implemented over any [`VirtualFs`].
//!
//! Invariants:
//! - **It translates and holds no filesystem logic.** Every request becomes one call on the
//!   backend (readdir: as many as fill the kernel's buffer) and its answer becomes the
//!   reply; errors go through [`crate::convert::errno`]. Nothing is cached here: what the
//!   kernel may reuse is governed by the TTLs of [`MountOptions`], long only for a
//!   backend that reports its changes or has none behind the mount.
//! - **Every reply is sent exactly once**, from the thread or task that ran the backend's
//!   future (a reply object dropped unsent would answer `EIO`; none is).
//! - **`forget` reaches the backend** with the kernel's count, so per-inode state is
//!   released when the kernel lets go of the inode (primitive 5). `readdirplus` is not
//!   used: its entries would count as lookups the backend never saw.
//! - The only state kept is what the kernel protocol requires of a server and cannot be
//!   asked of the backend: the passthrough backing ids, one per inode while any of its
//!   handles is open (the kernel refuses two different backing files for one inode).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fuser::{
    AccessFlags, BackingId, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use tracing::{debug, trace};
use vfs_core::{Fh, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, VfsError, VirtualFs, XattrSet};

use crate::convert::{decode_dev, errno, file_attr, file_type, negative_attr, set_time};
use crate::options::{Dispatch, MountOptions};

/// How many directory entries one backend `readdir` call is asked for.
const READDIR_BATCH: usize = 128;

/// The TTLs replies carry.
#[derive(Clone, Copy, Debug)]
struct Ttls {
    attr: Duration,
    entry: Duration,
    negative: Duration,
}

/// Passthrough backing ids: one per inode while any handle of it is open.
#[derive(Debug, Default)]
struct Backing {
    by_handle: HashMap<u64, Arc<BackingId>>,
    by_inode: HashMap<u64, Weak<BackingId>>,
}

/// A [`VirtualFs`] served to the kernel. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct FuseAdapter<F> {
    fs: Arc<F>,
    rt: tokio::runtime::Handle,
    dispatch: Dispatch,
    ttl: Ttls,
    keep_cache: bool,
    writeback_cache: bool,
    /// Passthrough was asked for and the kernel has not refused it (yet).
    passthrough: Arc<AtomicBool>,
    backing: Arc<Mutex<Backing>>,
    /// Set at `init` if the kernel offers `FUSE_HAS_EXPIRE_ONLY` (for the invalidator).
    expire_only: crate::invalidate::ExpireOnly,
    /// Files opened with a passthrough backing file ([`crate::Mount::passthrough_files`]).
    passthrough_files: Arc<AtomicU64>,
}

fn ctx(req: &Request) -> RequestCtx {
    RequestCtx::new(req.uid(), req.gid(), req.pid())
}

fn ino(i: INodeNo) -> Ino {
    Ino(i.0)
}

fn fh(h: FileHandle) -> Fh {
    Fh(h.0)
}

/// The requests answered with an entry; which of them may cache an absence is decided
/// here, by the operation, not by its log label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryOp {
    Lookup,
    Mknod,
    Mkdir,
    Symlink,
    Link,
}

impl EntryOp {
    /// Whether `ENOENT` may be answered as a negative entry the kernel caches for the
    /// negative TTL: only for a lookup (a failed create says nothing about the name).
    fn caches_absence(self) -> bool {
        match self {
            EntryOp::Lookup => true,
            EntryOp::Mknod | EntryOp::Mkdir | EntryOp::Symlink | EntryOp::Link => false,
        }
    }

    /// The operation's name in diagnostics.
    fn label(self) -> &'static str {
        match self {
            EntryOp::Lookup => "lookup",
            EntryOp::Mknod => "mknod",
            EntryOp::Mkdir => "mkdir",
            EntryOp::Symlink => "symlink",
            EntryOp::Link => "link",
        }
    }
}

/// Logs a backend error at a level fit for a hot path: expected answers at trace, the rest
/// at debug (the caller gets the errno either way).
fn log_err(op: &'static str, e: &VfsError) {
    if e.is_expected() {
        trace!(op, error = %e);
    } else {
        debug!(op, error = %e);
    }
}

impl<F: VirtualFs> FuseAdapter<F> {
    /// The adapter of `fs`, whose changes come from `source` (the answer of
    /// `report_changes`, which decides the TTLs).
    pub(crate) fn new(
        fs: Arc<F>,
        rt: tokio::runtime::Handle,
        opts: &MountOptions,
        source: vfs_core::ChangeSource,
        expire_only: crate::invalidate::ExpireOnly,
        passthrough_files: Arc<AtomicU64>,
    ) -> FuseAdapter<F> {
        let (attr, entry) = opts.ttls_for(source);
        FuseAdapter {
            fs,
            rt,
            dispatch: opts.dispatch,
            ttl: Ttls {
                attr,
                entry,
                negative: opts.negative_ttl,
            },
            keep_cache: opts.keep_cache_for(source),
            writeback_cache: opts.writeback_cache,
            passthrough: Arc::new(AtomicBool::new(opts.wants_passthrough())),
            backing: Arc::new(Mutex::new(Backing::default())),
            expire_only,
            passthrough_files,
        }
    }

    /// Runs one request's future: on this session thread ([`Dispatch::Threads`]) or as a
    /// task on the runtime ([`Dispatch::Spawn`]). The future sends the reply itself.
    fn run(&self, fut: impl Future<Output = ()> + Send + 'static) {
        match self.dispatch {
            Dispatch::Threads => self.rt.block_on(fut),
            Dispatch::Spawn => {
                drop(self.rt.spawn(fut));
            }
        }
    }

    fn open_flags(&self) -> FopenFlags {
        if self.keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }

    /// Common shape of the requests that answer with an entry (lookup, mknod, mkdir,
    /// symlink, link).
    /// The entry carries the backend's generation of the inode ([`VirtualFs::generation`]),
    /// so that the kernel never takes a new object for an old one with the same number.
    fn entry_reply(fs: &F, ttl: Ttls, reply: ReplyEntry, r: Result<vfs_core::Attr, VfsError>, op: EntryOp) {
        match r {
            Ok(attr) => {
                let generation = Generation(fs.generation(attr.ino));
                reply.entry_with_ttls(&ttl.attr, &ttl.entry, &file_attr(&attr), generation)
            }
            Err(VfsError::NotFound) if op.caches_absence() && !ttl.negative.is_zero() => {
                reply.entry(&ttl.negative, &negative_attr(), Generation(0))
            }
            Err(e) => {
                log_err(op.label(), &e);
                reply.error(errno(&e))
            }
        }
    }

    fn empty_reply(reply: ReplyEmpty, r: Result<(), VfsError>, op: &'static str) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => {
                log_err(op, &e);
                reply.error(errno(&e))
            }
        }
    }
}

/// Validates a name inside a request's future, answering the request if it is invalid.
macro_rules! name_or_reply {
    ($name:expr, $reply:expr) => {
        match Name::new($name) {
            Ok(n) => n,
            Err(e) => {
                trace!(error = %e, "invalid name");
                return $reply.error(errno(&e));
            }
        }
    };
}

/// The open flags of a passthrough reply: without `FOPEN_KEEP_CACHE` (the kernel answers
/// the file's first write with `EIO` when both are set; passthrough has no FUSE page cache
/// to keep anyway).
fn passthrough_flags(fopen: FopenFlags) -> FopenFlags {
    fopen - FopenFlags::FOPEN_KEEP_CACHE
}

/// The passthrough step of open/create: a backing id for `fh`'s descriptor, shared by every
/// open handle of the inode, or `None` to serve the file normally.
fn backing_for<F: VirtualFs>(
    fs: &F,
    enabled: &AtomicBool,
    table: &Mutex<Backing>,
    ino: Ino,
    fh: Fh,
    open_backing: impl FnOnce(std::os::fd::OwnedFd) -> std::io::Result<BackingId>,
) -> Option<Arc<BackingId>> {
    if !enabled.load(Ordering::Relaxed) {
        return None;
    }
    let fd = fs.passthrough_fd(ino, fh)?;
    let mut t = table.lock();
    let id = match t.by_inode.get(&ino.0).and_then(Weak::upgrade) {
        Some(id) => id,
        None => match open_backing(fd) {
            Ok(id) => {
                let id = Arc::new(id);
                t.by_inode.insert(ino.0, Arc::downgrade(&id));
                id
            }
            Err(e) => {
                // Said once per mount: the first refusal turns passthrough off.
                if enabled.swap(false, Ordering::Relaxed) {
                    debug!(error = %e, "the kernel refused a passthrough backing file (privilege?); serving files normally");
                }
                return None;
            }
        },
    };
    t.by_handle.insert(fh.0, Arc::clone(&id));
    Some(id)
}

impl<F: VirtualFs> Filesystem for FuseAdapter<F> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let caps = config.capabilities();
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_AUTO_INVAL_DATA | InitFlags::FUSE_ASYNC_DIO;
        let _ = config.add_capabilities(wanted & caps);
        self.expire_only
            .store(caps.contains(InitFlags::FUSE_HAS_EXPIRE_ONLY), Ordering::Relaxed);
        if self.writeback_cache {
            if caps.contains(InitFlags::FUSE_WRITEBACK_CACHE) {
                let _ = config.add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE);
            } else {
                debug!("the kernel does not offer the writeback cache; writes go through");
            }
        }
        if self.passthrough.load(Ordering::Relaxed) {
            let ok = caps.contains(InitFlags::FUSE_PASSTHROUGH)
                && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !ok {
                debug!("the kernel does not offer FUSE passthrough; serving files normally");
                self.passthrough.store(false, Ordering::Relaxed);
            }
        }
        debug!(abi = ?config.kernel_abi(), "FUSE session initialized");
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (fs, ctx, ttl, name) = (Arc::clone(&self.fs), ctx(req), self.ttl, name.to_os_string());
        self.run(async move {
            let name = name_or_reply!(&name, reply);
            let r = fs.lookup(&ctx, ino(parent), name).await;
            Self::entry_reply(&*fs, ttl, reply, r, EntryOp::Lookup);
        });
    }

    fn forget(&self, _req: &Request, i: INodeNo, nlookup: u64) {
        let fs = Arc::clone(&self.fs);
        self.run(async move { fs.forget(ino(i), nlookup).await });
    }

    fn getattr(&self, req: &Request, i: INodeNo, h: Option<FileHandle>, reply: ReplyAttr) {
        let (fs, ctx, ttl) = (Arc::clone(&self.fs), ctx(req), self.ttl);
        self.run(async move {
            match fs.getattr(&ctx, ino(i), h.map(fh)).await {
                Ok(a) => reply.attr(&ttl.attr, &file_attr(&a)),
                Err(e) => {
                    log_err("getattr", &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        h: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            fh: h.map(fh),
        };
        let (fs, ctx, ttl) = (Arc::clone(&self.fs), ctx(req), self.ttl);
        self.run(async move {
            match fs.setattr(&ctx, ino(i), set).await {
                Ok(a) => reply.attr(&ttl.attr, &file_attr(&a)),
                Err(e) => {
                    log_err("setattr", &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn readlink(&self, req: &Request, i: INodeNo, reply: ReplyData) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        self.run(async move {
            match fs.readlink(&ctx, ino(i)).await {
                Ok(target) => reply.data(target.as_bytes()),
                Err(e) => {
                    log_err("readlink", &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let (fs, ctx, ttl, name) = (Arc::clone(&self.fs), ctx(req), self.ttl, name.to_os_string());
        self.run(async move {
            let name = name_or_reply!(&name, reply);
            let r = fs.mknod(&ctx, ino(parent), name, mode, umask, decode_dev(rdev)).await;
            Self::entry_reply(&*fs, ttl, reply, r, EntryOp::Mknod);
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let (fs, ctx, ttl, name) = (Arc::clone(&self.fs), ctx(req), self.ttl, name.to_os_string());
        self.run(async move {
            let name = name_or_reply!(&name, reply);
            let r = fs.mkdir(&ctx, ino(parent), name, mode, umask).await;
            Self::entry_reply(&*fs, ttl, reply, r, EntryOp::Mkdir);
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, ctx, name) = (Arc::clone(&self.fs), ctx(req), name.to_os_string());
        self.run(async move {
            let name = name_or_reply!(&name, reply);
            Self::empty_reply(reply, fs.unlink(&ctx, ino(parent), name).await, "unlink");
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, ctx, name) = (Arc::clone(&self.fs), ctx(req), name.to_os_string());
        self.run(async move {
            let name = name_or_reply!(&name, reply);
            Self::empty_reply(reply, fs.rmdir(&ctx, ino(parent), name).await, "rmdir");
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let (fs, ctx, ttl) = (Arc::clone(&self.fs), ctx(req), self.ttl);
        let (name, target) = (link_name.to_os_string(), target.as_os_str().to_os_string());
        self.run(async move {
            let name = name_or_reply!(&name, reply);
            let r = fs.symlink(&ctx, ino(parent), name, &target).await;
            Self::entry_reply(&*fs, ttl, reply, r, EntryOp::Symlink);
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        let (name, newname) = (name.to_os_string(), newname.to_os_string());
        self.run(async move {
            let name = name_or_reply!(&name, reply);
            let newname = name_or_reply!(&newname, reply);
            let r = fs
                .rename(
                    &ctx,
                    ino(parent),
                    name,
                    ino(newparent),
                    newname,
                    RenameFlags(flags.bits()),
                )
                .await;
            Self::empty_reply(reply, r, "rename");
        });
    }

    fn link(&self, req: &Request, i: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let (fs, ctx, ttl, name) = (Arc::clone(&self.fs), ctx(req), self.ttl, newname.to_os_string());
        self.run(async move {
            let name = name_or_reply!(&name, reply);
            let r = fs.link(&ctx, ino(i), ino(newparent), name).await;
            Self::entry_reply(&*fs, ttl, reply, r, EntryOp::Link);
        });
    }

    fn open(&self, req: &Request, i: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        let (fs, ctx, fopen) = (Arc::clone(&self.fs), ctx(req), self.open_flags());
        let (enabled, table) = (Arc::clone(&self.passthrough), Arc::clone(&self.backing));
        let counted = Arc::clone(&self.passthrough_files);
        self.run(async move {
            match fs.open(&ctx, ino(i), OpenFlags(flags.0)).await {
                Ok(h) => match backing_for(&*fs, &enabled, &table, ino(i), h, |fd| reply.open_backing(fd)) {
                    Some(id) => {
                        counted.fetch_add(1, Ordering::Relaxed);
                        reply.opened_passthrough(FileHandle(h.0), passthrough_flags(fopen), &id)
                    }
                    None => reply.opened(FileHandle(h.0), fopen),
                },
                Err(e) => {
                    log_err("open", &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        i: INodeNo,
        h: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        self.run(async move {
            match fs.read(&ctx, ino(i), fh(h), offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    log_err("read", &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        i: INodeNo,
        h: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        let answer = |reply: ReplyWrite, r: Result<u32, VfsError>| match r {
            Ok(n) => reply.written(n),
            Err(e) => {
                log_err("write", &e);
                reply.error(errno(&e))
            }
        };
        match self.dispatch {
            // The data stays in the session thread's buffer: no copy.
            Dispatch::Threads => {
                let r = self.rt.block_on(fs.write(&ctx, ino(i), fh(h), offset, data));
                answer(reply, r);
            }
            Dispatch::Spawn => {
                let data = data.to_vec();
                drop(self.rt.spawn(async move {
                    let r = fs.write(&ctx, ino(i), fh(h), offset, &data).await;
                    answer(reply, r);
                }));
            }
        }
    }

    fn flush(&self, req: &Request, i: INodeNo, h: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        self.run(async move { Self::empty_reply(reply, fs.flush(&ctx, ino(i), fh(h)).await, "flush") });
    }

    fn release(
        &self,
        req: &Request,
        i: INodeNo,
        h: FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let (fs, ctx, table) = (Arc::clone(&self.fs), ctx(req), Arc::clone(&self.backing));
        self.run(async move {
            let r = fs.release(&ctx, ino(i), fh(h)).await;
            {
                let mut t = table.lock();
                if let Some(id) = t.by_handle.remove(&h.0) {
                    // Last handle of the inode: forget the dead weak entry too.
                    if Arc::strong_count(&id) == 1 {
                        t.by_inode.remove(&i.0);
                    }
                }
            }
            Self::empty_reply(reply, r, "release");
        });
    }

    fn fsync(&self, req: &Request, i: INodeNo, h: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        self.run(async move { Self::empty_reply(reply, fs.fsync(&ctx, ino(i), fh(h), datasync).await, "fsync") });
    }

    fn readdir(&self, req: &Request, i: INodeNo, _h: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        self.run(async move {
            let mut cookie = offset;
            let mut added = 0usize;
            loop {
                let batch = match fs.readdir(&ctx, ino(i), cookie, READDIR_BATCH).await {
                    Ok(b) => b,
                    // What was gathered is a valid answer; the kernel asks again from there.
                    Err(e) if added > 0 => {
                        log_err("readdir", &e);
                        break;
                    }
                    Err(e) => {
                        log_err("readdir", &e);
                        return reply.error(errno(&e));
                    }
                };
                if batch.is_empty() {
                    break;
                }
                for e in batch {
                    if reply.add(INodeNo(e.ino.0), e.cookie, file_type(e.kind), &e.name) {
                        return reply.ok();
                    }
                    cookie = e.cookie;
                    added += 1;
                }
            }
            reply.ok()
        });
    }

    fn statfs(&self, req: &Request, i: INodeNo, reply: ReplyStatfs) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        self.run(async move {
            match fs.statfs(&ctx, ino(i)).await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
                ),
                // A backend without figures: report an empty filesystem rather than fail `df`.
                Err(VfsError::NotImplemented) => reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096),
                Err(e) => {
                    log_err("statfs", &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        let (name, value) = (name.to_os_string(), value.to_vec());
        self.run(async move {
            let r = match XattrSet::from_raw(flags) {
                Ok(how) => fs.setxattr(&ctx, ino(i), &name, &value, how).await,
                Err(e) => Err(e),
            };
            Self::empty_reply(reply, r, "setxattr");
        });
    }

    fn getxattr(&self, req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (fs, ctx, name) = (Arc::clone(&self.fs), ctx(req), name.to_os_string());
        self.run(async move {
            match fs.getxattr(&ctx, ino(i), &name).await {
                Ok(v) => xattr_reply(reply, size, &v),
                Err(e) => {
                    log_err("getxattr", &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn listxattr(&self, req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        self.run(async move {
            match fs.listxattr(&ctx, ino(i)).await {
                Ok(names) => {
                    let mut buf = Vec::new();
                    for n in names {
                        buf.extend_from_slice(n.as_bytes());
                        buf.push(0);
                    }
                    xattr_reply(reply, size, &buf)
                }
                Err(e) => {
                    log_err("listxattr", &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn removexattr(&self, req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (fs, ctx, name) = (Arc::clone(&self.fs), ctx(req), name.to_os_string());
        self.run(async move { Self::empty_reply(reply, fs.removexattr(&ctx, ino(i), &name).await, "removexattr") });
    }

    fn access(&self, req: &Request, i: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        let mask = u32::try_from(mask.bits()).unwrap_or(0);
        self.run(async move { Self::empty_reply(reply, fs.access(&ctx, ino(i), mask).await, "access") });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (fs, ctx, ttl, fopen) = (Arc::clone(&self.fs), ctx(req), self.ttl, self.open_flags());
        let (enabled, table) = (Arc::clone(&self.passthrough), Arc::clone(&self.backing));
        let name: OsString = name.to_os_string();
        let counted = Arc::clone(&self.passthrough_files);
        self.run(async move {
            let name = name_or_reply!(&name, reply);
            match fs.create(&ctx, ino(parent), name, mode, umask, OpenFlags(flags)).await {
                Ok((attr, h)) => {
                    let fa = file_attr(&attr);
                    let generation = Generation(fs.generation(attr.ino));
                    match backing_for(&*fs, &enabled, &table, attr.ino, h, |fd| reply.open_backing(fd)) {
                        Some(id) => {
                            counted.fetch_add(1, Ordering::Relaxed);
                            reply.created_passthrough(
                                &ttl.entry,
                                &fa,
                                generation,
                                FileHandle(h.0),
                                passthrough_flags(fopen),
                                &id,
                            )
                        }
                        None => reply.created(&ttl.entry, &fa, generation, FileHandle(h.0), fopen),
                    }
                }
                Err(e) => {
                    log_err("create", &e);
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        i: INodeNo,
        h: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let (fs, ctx) = (Arc::clone(&self.fs), ctx(req));
        self.run(async move {
            let r = fs.fallocate(&ctx, ino(i), fh(h), offset, length, mode).await;
            Self::empty_reply(reply, r, "fallocate")
        });
    }
}

/// Answers a `getxattr`/`listxattr`: the size when asked for it (`size == 0`), the value
/// when it fits, `ERANGE` when it does not.
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len)
    } else if len <= size {
        reply.data(value)
    } else {
        reply.error(fuser::Errno::ERANGE)
    }
}
