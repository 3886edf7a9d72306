//! Test support: servers on a background runtime, raw clients, and `NfsClientFs` — a
//! `VirtualFs` whose every method is one or two NFS calls through the `nfs3_client` crate,
//! so the testkit's scenarios and model run *through* the server.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use nfs3_client::Nfs3Client;
use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use tokio::net::TcpStream;
use vfs_core::wrap::{Hooks, Wrapped};
use vfs_core::{
    Attr, DirEntry, DirEntryPlus, Errno, Fh, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, SetTime,
    StatFs, Timestamp, VfsError, VfsResult, VirtualFs,
};
use vfs_nfs::{Credentials, NOBODY, NfsConfig, NfsServer};

pub type Client = Nfs3Client<TokioIo<TcpStream>>;

/// The runtime every test server runs on, whatever runtime (if any) the test uses.
pub fn server_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A running server; dropping it stops it and releases its handles.
pub struct ServerGuard {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl ServerGuard {
    /// Stops the server and waits until it has released everything.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let done = self.done.lock().map(|mut g| g.take()).ok().flatten();
        if let Some(done) = done {
            let _ = done.recv_timeout(std::time::Duration::from_secs(10));
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Starts a server for `fs` on 127.0.0.1 (a free port) on the background runtime. Callable
/// from inside or outside a runtime.
/// The default configuration, but trusting the client's root (`no_root_squash`): these
/// tests act as root through the protocol to build their trees.
pub fn no_root_squash() -> NfsConfig {
    NfsConfig {
        credentials: Credentials::FromClient { anonymous: NOBODY },
        ..NfsConfig::default()
    }
}

pub fn serve<F: VirtualFs>(fs: Arc<F>, config: NfsConfig) -> ServerGuard {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    server_runtime().spawn(async move {
        let server = NfsServer::bind("127.0.0.1:0", fs, config).await.unwrap();
        addr_tx.send(server.local_addr().unwrap()).unwrap();
        let _ = server
            .serve_until(async {
                let _ = stop_rx.await;
            })
            .await;
        let _ = done_tx.send(());
    });
    ServerGuard {
        addr: addr_rx.recv().unwrap(),
        stop: Some(stop_tx),
        done: Mutex::new(Some(done_rx)),
    }
}

pub fn unix_cred(uid: u32, gid: u32) -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 1,
        machinename: Opaque::borrowed(b"test"),
        uid,
        gid,
        gids: vec![],
    })
}

/// Mounts `/` as `uid`/`gid` and returns the NFS client and the root handle.
pub async fn mount_as(addr: SocketAddr, uid: u32, gid: u32) -> (Client, nfs_fh3) {
    let conn = Nfs3ConnectionBuilder::new(TokioConnector, addr.ip().to_string(), "/")
        .mount_port(addr.port())
        .nfs3_port(addr.port())
        .connect_from_privileged_port(false)
        .credential(unix_cred(uid, gid))
        .mount()
        .await
        .unwrap();
    let root = conn.root_nfs_fh3();
    (conn.into_nfs3_client(), root)
}

pub async fn mount(addr: SocketAddr) -> (Client, nfs_fh3) {
    mount_as(addr, 0, 0).await
}

/// The errno a Linux client reports for an NFS status.
pub fn errno_of(stat: nfsstat3) -> Errno {
    match stat {
        nfsstat3::NFS3_OK => Errno::EIO,
        nfsstat3::NFS3ERR_PERM => Errno::EPERM,
        nfsstat3::NFS3ERR_NOENT => Errno::ENOENT,
        nfsstat3::NFS3ERR_IO | nfsstat3::NFS3ERR_REMOTE | nfsstat3::NFS3ERR_SERVERFAULT => Errno::EIO,
        nfsstat3::NFS3ERR_NXIO => Errno::ENXIO,
        nfsstat3::NFS3ERR_ACCES => Errno::EACCES,
        nfsstat3::NFS3ERR_EXIST => Errno::EEXIST,
        nfsstat3::NFS3ERR_XDEV => Errno::EXDEV,
        nfsstat3::NFS3ERR_NODEV => Errno::ENODEV,
        nfsstat3::NFS3ERR_NOTDIR => Errno::ENOTDIR,
        nfsstat3::NFS3ERR_ISDIR => Errno::EISDIR,
        nfsstat3::NFS3ERR_INVAL
        | nfsstat3::NFS3ERR_BAD_COOKIE
        | nfsstat3::NFS3ERR_TOOSMALL
        | nfsstat3::NFS3ERR_BADTYPE => Errno::EINVAL,
        nfsstat3::NFS3ERR_FBIG => Errno::EFBIG,
        nfsstat3::NFS3ERR_NOSPC => Errno::ENOSPC,
        nfsstat3::NFS3ERR_ROFS => Errno::EROFS,
        nfsstat3::NFS3ERR_MLINK => Errno::EMLINK,
        nfsstat3::NFS3ERR_NAMETOOLONG => Errno::ENAMETOOLONG,
        nfsstat3::NFS3ERR_NOTEMPTY => Errno::ENOTEMPTY,
        nfsstat3::NFS3ERR_DQUOT => Errno::EDQUOT,
        nfsstat3::NFS3ERR_STALE => Errno::ESTALE,
        nfsstat3::NFS3ERR_BADHANDLE => Errno::EBADF,
        nfsstat3::NFS3ERR_NOT_SYNC => Errno::EIO,
        nfsstat3::NFS3ERR_NOTSUPP => Errno::EOPNOTSUPP,
        nfsstat3::NFS3ERR_JUKEBOX => Errno::EAGAIN,
    }
}

fn err(stat: nfsstat3) -> VfsError {
    VfsError::from_errno(errno_of(stat))
}

fn rpc_err(e: nfs3_client::RpcError) -> VfsError {
    VfsError::Io(format!("RPC: {e}"))
}

pub fn attr_of(f: &fattr3) -> Attr {
    let kind = match f.type_ {
        ftype3::NF3REG => FileType::Regular,
        ftype3::NF3DIR => FileType::Directory,
        ftype3::NF3BLK => FileType::BlockDevice,
        ftype3::NF3CHR => FileType::CharDevice,
        ftype3::NF3LNK => FileType::Symlink,
        ftype3::NF3SOCK => FileType::Socket,
        ftype3::NF3FIFO => FileType::Fifo,
    };
    let t = |t: nfstime3| Timestamp::new(i64::from(t.seconds), t.nseconds);
    Attr {
        ino: Ino(f.fileid),
        kind,
        perm: (f.mode & 0o7777) as u16,
        nlink: f.nlink,
        uid: f.uid,
        gid: f.gid,
        size: f.size,
        blocks: f.used / 512,
        blksize: 4096,
        rdev: libc::makedev(f.rdev.specdata1, f.rdev.specdata2),
        atime: t(f.atime),
        mtime: t(f.mtime),
        ctime: t(f.ctime),
    }
}

fn sattr(set: &SetAttr) -> sattr3 {
    let time = |t: Option<SetTime>| match t {
        None => (false, None),
        Some(SetTime::Now) => (true, None),
        Some(SetTime::At(t)) => (
            true,
            Some(nfstime3 {
                seconds: t.secs.clamp(0, i64::from(u32::MAX)) as u32,
                nseconds: t.nsecs,
            }),
        ),
    };
    sattr3 {
        mode: set.mode.map_or(set_mode3::None, set_mode3::Some),
        uid: set.uid.map_or(set_uid3::None, set_uid3::Some),
        gid: set.gid.map_or(set_gid3::None, set_gid3::Some),
        size: set.size.map_or(set_size3::None, set_size3::Some),
        atime: match time(set.atime) {
            (false, _) => set_atime::DONT_CHANGE,
            (true, None) => set_atime::SET_TO_SERVER_TIME,
            (true, Some(t)) => set_atime::SET_TO_CLIENT_TIME(t),
        },
        mtime: match time(set.mtime) {
            (false, _) => set_mtime::DONT_CHANGE,
            (true, None) => set_mtime::SET_TO_SERVER_TIME,
            (true, Some(t)) => set_mtime::SET_TO_CLIENT_TIME(t),
        },
    }
}

/// A `VirtualFs` over an NFS connection: what a client kernel does, minus caching.
///
/// NFSv3 has no open state, so `open` checks the file and hands out `Fh(0)`, `release`
/// does nothing, and `fsync` is a COMMIT. Writes are `FILE_SYNC` unless `unstable`.
pub struct NfsClientFs {
    addr: SocketAddr,
    uid: u32,
    gid: u32,
    client: tokio::sync::Mutex<Option<Client>>,
    handles: Mutex<HashMap<u64, nfs_fh3>>,
    source: String,
    /// NFS calls made.
    pub calls: AtomicU64,
    /// READ calls made (every one of them checked by the caller).
    pub reads: AtomicU64,
    pub unstable: bool,
}

impl NfsClientFs {
    pub fn new(addr: SocketAddr) -> NfsClientFs {
        NfsClientFs::as_user(addr, 0, 0)
    }

    pub fn as_user(addr: SocketAddr, uid: u32, gid: u32) -> NfsClientFs {
        NfsClientFs {
            addr,
            uid,
            gid,
            client: tokio::sync::Mutex::new(None),
            handles: Mutex::new(HashMap::new()),
            source: format!("nfs-client:{addr}"),
            calls: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            unstable: false,
        }
    }

    /// The client, mounted on first use (inside whichever runtime the caller runs).
    async fn client(&self) -> VfsResult<tokio::sync::MutexGuard<'_, Option<Client>>> {
        let mut g = self.client.lock().await;
        if g.is_none() {
            let (c, root) = mount_as(self.addr, self.uid, self.gid).await;
            self.handles.lock().unwrap().insert(1, root);
            *g = Some(c);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(g)
    }

    /// The handle of `ino`, as learnt from earlier replies (the root's from MNT).
    async fn fh(&self, ino: Ino) -> VfsResult<nfs_fh3> {
        if ino == Ino::ROOT {
            drop(self.client().await?);
        }
        self.handles.lock().unwrap().get(&ino.0).cloned().ok_or(VfsError::Stale)
    }

    fn learn(&self, fh: &post_op_fh3, attr: &post_op_attr) {
        if let (post_op_fh3::Some(fh), post_op_attr::Some(a)) = (fh, attr) {
            self.handles.lock().unwrap().insert(a.fileid, fh.clone());
        }
    }

    fn made(&self, obj: post_op_fh3, attrs: post_op_attr) -> VfsResult<Attr> {
        self.learn(&obj, &attrs);
        match attrs {
            post_op_attr::Some(a) => Ok(attr_of(&a)),
            post_op_attr::None => Err(VfsError::Io("no attributes".into())),
        }
    }

    async fn dirop<'a>(&self, dir: Ino, name: &'a [u8]) -> VfsResult<diropargs3<'a>> {
        Ok(diropargs3 {
            dir: self.fh(dir).await?,
            name: filename3(Opaque::borrowed(name)),
        })
    }
}

macro_rules! c {
    ($self:ident, $call:ident, $args:expr) => {{
        let mut g = $self.client().await?;
        let client = g.as_mut().ok_or(VfsError::Io("no client".into()))?;
        client.$call(&$args).await.map_err(rpc_err)?
    }};
}

impl VirtualFs for NfsClientFs {
    fn source_id(&self) -> &str {
        &self.source
    }

    async fn lookup(&self, _: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
        let what = self.dirop(parent, name.as_bytes()).await?;
        match c!(self, lookup, LOOKUP3args { what }) {
            LOOKUP3res::Ok(ok) => self.made(post_op_fh3::Some(ok.object), ok.obj_attributes),
            LOOKUP3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn getattr(&self, _: &RequestCtx, ino: Ino, _: Option<Fh>) -> VfsResult<Attr> {
        let object = self.fh(ino).await?;
        match c!(self, getattr, GETATTR3args { object }) {
            GETATTR3res::Ok(ok) => Ok(attr_of(&ok.obj_attributes)),
            GETATTR3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn setattr(&self, _: &RequestCtx, ino: Ino, set: SetAttr) -> VfsResult<Attr> {
        let args = SETATTR3args {
            object: self.fh(ino).await?,
            new_attributes: sattr(&set),
            guard: sattrguard3::None,
        };
        match c!(self, setattr, args) {
            SETATTR3res::Ok(ok) => match ok.obj_wcc.after {
                post_op_attr::Some(a) => Ok(attr_of(&a)),
                post_op_attr::None => self.getattr(&RequestCtx::ROOT, ino, None).await,
            },
            SETATTR3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn readlink(&self, _: &RequestCtx, ino: Ino) -> VfsResult<OsString> {
        let symlink = self.fh(ino).await?;
        match c!(self, readlink, READLINK3args { symlink }) {
            READLINK3res::Ok(ok) => Ok(OsString::from_vec(ok.data.0.to_vec())),
            READLINK3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn mknod(
        &self,
        _: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        _: u32,
        rdev: u64,
    ) -> VfsResult<Attr> {
        let attrs = sattr(&SetAttr::mode(mode & 0o7777));
        let spec = specdata3 {
            specdata1: libc::major(rdev),
            specdata2: libc::minor(rdev),
        };
        let what = match FileType::from_mode(mode) {
            Some(FileType::CharDevice) => mknoddata3::NF3CHR(devicedata3 {
                dev_attributes: attrs,
                spec,
            }),
            Some(FileType::BlockDevice) => mknoddata3::NF3BLK(devicedata3 {
                dev_attributes: attrs,
                spec,
            }),
            Some(FileType::Fifo) => mknoddata3::NF3FIFO(attrs),
            Some(FileType::Socket) => mknoddata3::NF3SOCK(attrs),
            Some(FileType::Regular) | None => {
                let (a, _) = self
                    .create(
                        &RequestCtx::ROOT,
                        parent,
                        name,
                        mode,
                        0,
                        OpenFlags::RDWR.with(libc::O_EXCL),
                    )
                    .await?;
                return Ok(a);
            }
            Some(_) => return Err(VfsError::Invalid("mknod type")),
        };
        let args = MKNOD3args {
            where_: self.dirop(parent, name.as_bytes()).await?,
            what,
        };
        match c!(self, mknod, args) {
            MKNOD3res::Ok(ok) => self.made(ok.obj, ok.obj_attributes),
            MKNOD3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn mkdir(&self, _: &RequestCtx, parent: Ino, name: Name<'_>, mode: u32, umask: u32) -> VfsResult<Attr> {
        let args = MKDIR3args {
            where_: self.dirop(parent, name.as_bytes()).await?,
            attributes: sattr(&SetAttr::mode(mode & !umask & 0o7777)),
        };
        match c!(self, mkdir, args) {
            MKDIR3res::Ok(ok) => self.made(ok.obj, ok.obj_attributes),
            MKDIR3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn unlink(&self, _: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        let object = self.dirop(parent, name.as_bytes()).await?;
        match c!(self, remove, REMOVE3args { object }) {
            REMOVE3res::Ok(_) => Ok(()),
            REMOVE3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn rmdir(&self, _: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        let object = self.dirop(parent, name.as_bytes()).await?;
        match c!(self, rmdir, RMDIR3args { object }) {
            RMDIR3res::Ok(_) => Ok(()),
            RMDIR3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn symlink(&self, _: &RequestCtx, parent: Ino, name: Name<'_>, target: &OsStr) -> VfsResult<Attr> {
        let args = SYMLINK3args {
            where_: self.dirop(parent, name.as_bytes()).await?,
            symlink: symlinkdata3 {
                symlink_attributes: sattr3::default(),
                symlink_data: nfspath3(Opaque::borrowed(target.as_bytes())),
            },
        };
        match c!(self, symlink, args) {
            SYMLINK3res::Ok(ok) => self.made(ok.obj, ok.obj_attributes),
            SYMLINK3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn rename(
        &self,
        _: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        newparent: Ino,
        newname: Name<'_>,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        if flags != RenameFlags::NONE {
            // NFSv3 RENAME has no flags.
            return Err(VfsError::Invalid("rename flags over NFSv3"));
        }
        let args = RENAME3args {
            from: self.dirop(parent, name.as_bytes()).await?,
            to: self.dirop(newparent, newname.as_bytes()).await?,
        };
        match c!(self, rename, args) {
            RENAME3res::Ok(_) => Ok(()),
            RENAME3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn link(&self, _: &RequestCtx, ino: Ino, newparent: Ino, newname: Name<'_>) -> VfsResult<Attr> {
        let args = LINK3args {
            file: self.fh(ino).await?,
            link: self.dirop(newparent, newname.as_bytes()).await?,
        };
        match c!(self, link, args) {
            LINK3res::Ok(ok) => match ok.file_attributes {
                post_op_attr::Some(a) => Ok(attr_of(&a)),
                post_op_attr::None => self.getattr(&RequestCtx::ROOT, ino, None).await,
            },
            LINK3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn open(&self, ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        let a = self.getattr(ctx, ino, None).await?;
        if a.kind == FileType::Directory && flags.access().can_write() {
            return Err(VfsError::IsDir);
        }
        if flags.truncate() {
            self.setattr(ctx, ino, SetAttr::size(0)).await?;
        }
        Ok(Fh(0))
    }

    async fn create(
        &self,
        _: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> VfsResult<(Attr, Fh)> {
        let attrs = sattr(&SetAttr::mode(mode & !umask & 0o7777));
        let how = if flags.exclusive() {
            createhow3::GUARDED(attrs)
        } else {
            createhow3::UNCHECKED(attrs)
        };
        let args = CREATE3args {
            where_: self.dirop(parent, name.as_bytes()).await?,
            how,
        };
        match c!(self, create, args) {
            CREATE3res::Ok(ok) => Ok((self.made(ok.obj, ok.obj_attributes)?, Fh(0))),
            CREATE3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn read(&self, _: &RequestCtx, ino: Ino, _: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        let args = READ3args {
            file: self.fh(ino).await?,
            offset,
            count: size,
        };
        self.reads.fetch_add(1, Ordering::Relaxed);
        match c!(self, read, args) {
            READ3res::Ok(ok) => Ok(Bytes::from(ok.data.0.into_owned())),
            READ3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn write(&self, _: &RequestCtx, ino: Ino, _: Fh, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let args = WRITE3args {
            file: self.fh(ino).await?,
            offset,
            count: data.len() as u32,
            stable: if self.unstable {
                stable_how::UNSTABLE
            } else {
                stable_how::FILE_SYNC
            },
            data: Opaque::borrowed(data),
        };
        match c!(self, write, args) {
            WRITE3res::Ok(ok) => Ok(ok.count),
            WRITE3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn fsync(&self, _: &RequestCtx, ino: Ino, _: Fh, _: bool) -> VfsResult<()> {
        let args = COMMIT3args {
            file: self.fh(ino).await?,
            offset: 0,
            count: 0,
        };
        match c!(self, commit, args) {
            COMMIT3res::Ok(_) => Ok(()),
            COMMIT3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn readdir(&self, ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        Ok(self
            .readdirplus(ctx, ino, cookie, max)
            .await?
            .into_iter()
            .map(|e| e.entry)
            .collect())
    }

    async fn readdirplus(&self, _: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntryPlus>> {
        let args = READDIRPLUS3args {
            dir: self.fh(ino).await?,
            cookie,
            cookieverf: cookieverf3::default(),
            dircount: 8192,
            maxcount: 32768,
        };
        match c!(self, readdirplus, args) {
            READDIRPLUS3res::Ok(ok) => {
                let mut out = Vec::new();
                for e in ok.reply.entries.0.into_iter().take(max) {
                    self.learn(&e.name_handle, &e.name_attributes);
                    let post_op_attr::Some(a) = e.name_attributes else {
                        return Err(VfsError::Io("entry without attributes".into()));
                    };
                    let attr = attr_of(&a);
                    out.push(DirEntryPlus {
                        entry: DirEntry {
                            ino: Ino(e.fileid),
                            kind: attr.kind,
                            name: OsString::from_vec(e.name.0.to_vec()),
                            cookie: e.cookie,
                        },
                        attr,
                    });
                }
                Ok(out)
            }
            READDIRPLUS3res::Err((s, _)) => Err(err(s)),
        }
    }

    async fn statfs(&self, _: &RequestCtx, ino: Ino) -> VfsResult<StatFs> {
        let fsroot = self.fh(ino).await?;
        match c!(self, fsstat, FSSTAT3args { fsroot }) {
            FSSTAT3res::Ok(ok) => Ok(StatFs {
                blocks: ok.tbytes / 4096,
                bfree: ok.fbytes / 4096,
                bavail: ok.abytes / 4096,
                files: ok.tfiles,
                ffree: ok.ffiles,
                bsize: 4096,
                namelen: 255,
                frsize: 4096,
            }),
            FSSTAT3res::Err((s, _)) => Err(err(s)),
        }
    }
}

/// A thread-safe counter of operations run, for reports.
pub static OPS: AtomicU64 = AtomicU64::new(0);

/// The handle bytes as hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

/// A backend that delegates to its inner one and records, in order, the data operations
/// the server made (`write`, `fsync`, `open`, `release`).
pub type SpyFs<F> = Wrapped<F, Spy>;

/// `inner` behind a [`Spy`].
pub fn spy<F>(inner: F) -> SpyFs<F> {
    Wrapped::new(inner, Spy::default())
}

/// The spy's log.
#[derive(Default)]
pub struct Spy {
    log: Mutex<Vec<String>>,
}

impl Spy {
    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl<F: VirtualFs> Hooks<F> for Spy {
    async fn open(&self, inner: &F, c: &RequestCtx, i: Ino, f: OpenFlags) -> VfsResult<Fh> {
        let r = inner.open(c, i, f).await;
        self.note(format!(
            "open {:?} -> {:?}",
            f.access(),
            r.as_ref().map_err(|e| e.errno())
        ));
        r
    }
    async fn write(&self, inner: &F, c: &RequestCtx, i: Ino, f: Fh, o: u64, d: &[u8]) -> VfsResult<u32> {
        let r = inner.write(c, i, f, o, d).await;
        self.note(format!("write {} -> {:?}", d.len(), r.as_ref().map_err(|e| e.errno())));
        r
    }
    async fn fsync(&self, inner: &F, c: &RequestCtx, i: Ino, f: Fh, d: bool) -> VfsResult<()> {
        let r = inner.fsync(c, i, f, d).await;
        self.note(format!("fsync datasync={d} -> {:?}", r.as_ref().map_err(|e| e.errno())));
        r
    }
    async fn release(&self, inner: &F, c: &RequestCtx, i: Ino, f: Fh) -> VfsResult<()> {
        self.note("release".to_string());
        inner.release(c, i, f).await
    }
}

/// LOOKUP of `name` in `dir`: its handle and attributes, or the status.
pub async fn lookup(c: &mut Client, dir: &nfs_fh3, name: &str) -> Result<(nfs_fh3, fattr3), nfsstat3> {
    let args = LOOKUP3args {
        what: diropargs3 {
            dir: dir.clone(),
            name: filename3(Opaque::borrowed(name.as_bytes())),
        },
    };
    match c.lookup(&args).await.unwrap() {
        LOOKUP3res::Ok(ok) => match ok.obj_attributes {
            post_op_attr::Some(a) => Ok((ok.object, a)),
            post_op_attr::None => Err(nfsstat3::NFS3ERR_IO),
        },
        LOOKUP3res::Err((s, _)) => Err(s),
    }
}

pub async fn read(c: &mut Client, fh: &nfs_fh3, offset: u64, count: u32) -> Result<Vec<u8>, nfsstat3> {
    let args = READ3args {
        file: fh.clone(),
        offset,
        count,
    };
    match c.read(&args).await.unwrap() {
        READ3res::Ok(ok) => Ok(ok.data.0.into_owned()),
        READ3res::Err((s, _)) => Err(s),
    }
}

pub async fn write(
    c: &mut Client,
    fh: &nfs_fh3,
    offset: u64,
    data: &[u8],
    stable: stable_how,
) -> Result<WRITE3resok, nfsstat3> {
    let args = WRITE3args {
        file: fh.clone(),
        offset,
        count: data.len() as u32,
        stable,
        data: Opaque::borrowed(data),
    };
    match c.write(&args).await.unwrap() {
        WRITE3res::Ok(ok) => Ok(ok),
        WRITE3res::Err((s, _)) => Err(s),
    }
}

pub async fn getattr(c: &mut Client, fh: &nfs_fh3) -> Result<fattr3, nfsstat3> {
    match c.getattr(&GETATTR3args { object: fh.clone() }).await.unwrap() {
        GETATTR3res::Ok(ok) => Ok(ok.obj_attributes),
        GETATTR3res::Err((s, _)) => Err(s),
    }
}

pub async fn setattr_size(c: &mut Client, fh: &nfs_fh3, size: u64) -> Result<(), nfsstat3> {
    let args = SETATTR3args {
        object: fh.clone(),
        new_attributes: sattr(&SetAttr::size(size)),
        guard: sattrguard3::None,
    };
    match c.setattr(&args).await.unwrap() {
        SETATTR3res::Ok(_) => Ok(()),
        SETATTR3res::Err((s, _)) => Err(s),
    }
}

/// A plain connection to the NFS program of `addr` (no MNT: handles are all it needs).
pub async fn connect(addr: SocketAddr, uid: u32, gid: u32) -> Client {
    let stream = TcpStream::connect(addr).await.unwrap();
    Client::new_with_auth(TokioIo::new(stream), unix_cred(uid, gid), opaque_auth::default())
}

/// Checks that a client claiming uid 0 acts as the squashed identity `who` (uid, gid): a
/// file it creates in the root directory under `name` is owned by `who`, and it cannot give
/// that file to root. Returns the file's attributes.
pub async fn assert_root_squashed(addr: SocketAddr, name: &str, who: (u32, u32)) -> Attr {
    let claims_root = NfsClientFs::new(addr);
    let name = Name::new(OsStr::new(name)).expect("a valid name");
    let (a, _) = claims_root
        .create(&RequestCtx::ROOT, Ino::ROOT, name, 0o644, 0, OpenFlags::RDWR)
        .await
        .expect("the squashed root may create in a world-writable root");
    assert_eq!((a.uid, a.gid), who, "a claimed root creates as the squashed identity");
    let give = SetAttr {
        uid: Some(0),
        ..SetAttr::default()
    };
    assert_eq!(
        claims_root
            .setattr(&RequestCtx::ROOT, a.ino, give)
            .await
            .map_err(|e| e.errno())
            .err(),
        Some(Errno::EPERM),
        "a squashed root cannot chown to root"
    );
    a
}
