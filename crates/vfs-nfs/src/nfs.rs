//! The NFSv3 procedures (RFC 1813), each a translation to `VirtualFs` calls.
//!
//! Invariants:
//!
//! - **Handles**: every handle argument is decoded by `vfs_core::fh` against this
//!   export's generation: malformed → `NFS3ERR_BADHANDLE`, another source's →
//!   `NFS3ERR_STALE`. A handle whose inode the backend no longer has is `NFS3ERR_STALE`
//!   too (RFC 1813: "the file referred to by that file handle no longer exists").
//! - **Data goes through the [`HandlePool`](vfs_core::pool::HandlePool)**: READ, WRITE and
//!   COMMIT never open a backend handle of their own, and CREATE hands the handle the
//!   backend opened to the pool. `EBADF` is never an answer (see `status`).
//! - **WRITE tells the truth about stability**: `FILE_SYNC` or `DATA_SYNC` is answered
//!   only after the backend's `fsync` (or `fdatasync`) returned; an `UNSTABLE` write is
//!   answered `UNSTABLE` with this server instance's verifier, and COMMIT fsyncs.
//! - **No pre-operation attributes**: `wcc_data.before` is always absent. The server
//!   cannot read them atomically with the change, and a stale "before" would let a client
//!   keep a cached size or listing that is no longer true (seed 001 (doc/LESSONS.md#seed-001)).
//! - **Errors are values**: `ENOENT` and friends go to the client through the one table in
//!   `status`, logged at `trace` at most.

use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use bytes::Bytes;
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::{BoundedList, Opaque, Pack, Void};
use vfs_core::{
    Attr, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, SetTime, Timestamp, VfsError, VfsResult,
    VirtualFs, access_mask,
};

use crate::attr::{decode_sattr, fattr, nfstime, rdev};
use crate::perm;
use crate::rpc::MAX_IO;
use crate::server::{Answer, Shared, body};
use crate::status::nfsstat_of;
use crate::xdr::{UNBOUNDED, XdrReader, XdrResult};

/// The NFS program number.
pub const PROGRAM: u32 = 100_003;

/// The largest READDIR/READDIRPLUS reply built, whatever the client allows.
const MAX_DIR_REPLY: u32 = 1 << 20;
/// The READDIR size the server prefers (`dtpref`).
const DIR_PREF: u32 = 64 << 10;

/// Runs procedure `proc_` with the XDR arguments `args`.
pub(crate) async fn call<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, proc_: u32, args: &[u8]) -> Answer {
    let mut r = XdrReader::new(args);
    let r = &mut r;
    let res = match proc_ {
        0 => r.finish().map(|()| body(&Void)),
        1 => getattr(s, ctx, r).await,
        2 => setattr(s, ctx, r).await,
        3 => lookup(s, ctx, r).await,
        4 => access(s, ctx, r).await,
        5 => readlink(s, ctx, r).await,
        6 => read(s, ctx, r).await,
        7 => write(s, ctx, r).await,
        8 => create(s, ctx, r).await,
        9 => mkdir(s, ctx, r).await,
        10 => symlink(s, ctx, r).await,
        11 => mknod(s, ctx, r).await,
        12 => remove(s, ctx, r).await,
        13 => rmdir(s, ctx, r).await,
        14 => rename(s, ctx, r).await,
        15 => link(s, ctx, r).await,
        16 => readdir(s, ctx, r).await,
        17 => readdirplus(s, ctx, r).await,
        18 => fsstat(s, ctx, r).await,
        19 => fsinfo(s, ctx, r).await,
        20 => pathconf(s, ctx, r).await,
        21 => commit(s, ctx, r).await,
        _ => return Answer::NoProc,
    };
    res.unwrap_or(Answer::Garbage)
}

// ---------------------------------------------------------------------------------------
// Argument decoding helpers.

/// A file handle: `opaque<64>`.
fn fh_arg<'a>(r: &mut XdrReader<'a>) -> XdrResult<&'a [u8]> {
    r.opaque(NFS3_FHSIZE)
}

/// `diropargs3`: a directory handle and a name.
fn dirop_arg<'a>(r: &mut XdrReader<'a>) -> XdrResult<(&'a [u8], &'a [u8])> {
    Ok((fh_arg(r)?, r.opaque(UNBOUNDED)?))
}

/// A name from the wire as a `Name` (`EINVAL`, `ENAMETOOLONG` otherwise).
fn name(b: &[u8]) -> Result<Name<'_>, nfsstat3> {
    Name::from_bytes(b).map_err(|e| nfsstat_of(&e))
}

// ---------------------------------------------------------------------------------------
// Result helpers.

/// Attributes for a post-operation reply; none if the object is gone.
async fn post<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, ino: Ino) -> post_op_attr {
    match s.fs.getattr(ctx, ino, None).await {
        Ok(a) => post_op_attr::Some(fattr(&a, s.fsid)),
        Err(_) => post_op_attr::None,
    }
}

/// A `wcc_data` with no "before" (see the module invariants).
async fn wcc<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, ino: Ino) -> wcc_data {
    wcc_data {
        before: pre_op_attr::None,
        after: post(s, ctx, ino).await,
    }
}

/// The status for an error about the object a handle names: a vanished inode is stale.
fn object_status(e: &VfsError) -> nfsstat3 {
    match e {
        VfsError::NotFound => nfsstat3::NFS3ERR_STALE,
        other => nfsstat_of(other),
    }
}

fn trace_err(op: &'static str, e: &VfsError) {
    tracing::trace!(op, error = %e, "NFS call answered with an error");
}

macro_rules! handle {
    ($s:expr, $fh:expr, $fail:expr) => {
        match $s.ino($fh) {
            Ok(ino) => ino,
            Err(stat) => return Ok(body(&Nfs3Result::<Void, _>::Err((stat, $fail)))),
        }
    };
}

macro_rules! fail {
    ($stat:expr, $fail:expr) => {
        return Ok(body(&Nfs3Result::<Void, _>::Err(($stat, $fail))))
    };
}

// ---------------------------------------------------------------------------------------
// Procedures.

async fn getattr<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    r.finish()?;
    let ino = handle!(s, fh, Void);
    Ok(match s.fs.getattr(ctx, ino, None).await {
        Ok(a) => body(&GETATTR3res::Ok(GETATTR3resok {
            obj_attributes: fattr(&a, s.fsid),
        })),
        Err(e) => {
            trace_err("getattr", &e);
            body(&GETATTR3res::Err((object_status(&e), Void)))
        }
    })
}

async fn setattr<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    let set = decode_sattr(r)?;
    let guard = if r.bool()? { Some((r.u32()?, r.u32()?)) } else { None };
    r.finish()?;
    let ino = handle!(s, fh, SETATTR3resfail::default());
    let result = async {
        let before = s.fs.getattr(ctx, ino, None).await.map_err(|e| object_status(&e))?;
        if let Some((secs, nsecs)) = guard {
            let ctime = nfstime(before.ctime);
            if (ctime.seconds, ctime.nseconds) != (secs, nsecs) {
                return Err(nfsstat3::NFS3ERR_NOT_SYNC);
            }
        }
        perm::check_setattr(&*s.fs, ctx, &before, &set)
            .await
            .map_err(|e| nfsstat_of(&e))?;
        s.fs.setattr(ctx, ino, set).await.map_err(|e| {
            trace_err("setattr", &e);
            object_status(&e)
        })
    }
    .await;
    Ok(match result {
        Ok(a) => body(&SETATTR3res::Ok(SETATTR3resok {
            obj_wcc: wcc_data {
                before: pre_op_attr::None,
                after: post_op_attr::Some(fattr(&a, s.fsid)),
            },
        })),
        Err(stat) => body(&SETATTR3res::Err((
            stat,
            SETATTR3resfail {
                obj_wcc: wcc(s, ctx, ino).await,
            },
        ))),
    })
}

/// Looks `name` up in `dir`, with `.` and `..` (which `VirtualFs::lookup` never sees:
/// `..` is found in the directory's listing).
async fn lookup_name<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, dir: Ino, raw: &[u8]) -> VfsResult<Attr> {
    match raw {
        b"." => {
            let a = s.fs.getattr(ctx, dir, None).await?;
            if a.kind == FileType::Directory {
                Ok(a)
            } else {
                Err(VfsError::NotDir)
            }
        }
        b".." => {
            let entries = s.fs.readdir(ctx, dir, 0, 2).await?;
            let parent = entries
                .iter()
                .find(|e| e.name.as_bytes() == b"..")
                .map_or(dir, |e| e.ino);
            s.fs.getattr(ctx, parent, None).await
        }
        _ => {
            let n = Name::from_bytes(raw)?;
            s.fs.lookup(ctx, dir, n).await
        }
    }
}

async fn lookup<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let (dfh, raw) = dirop_arg(r)?;
    r.finish()?;
    let dir = handle!(s, dfh, LOOKUP3resfail::default());
    let found = async {
        perm::check(&*s.fs, ctx, dir, access_mask::EXEC).await?;
        lookup_name(s, ctx, dir, raw).await
    }
    .await;
    Ok(match found {
        Ok(a) => body(&LOOKUP3res::Ok(LOOKUP3resok {
            object: s.fh(a.ino),
            obj_attributes: post_op_attr::Some(fattr(&a, s.fsid)),
            dir_attributes: post(s, ctx, dir).await,
        })),
        Err(e) => {
            trace_err("lookup", &e);
            body(&LOOKUP3res::Err((
                nfsstat_of(&e),
                LOOKUP3resfail {
                    dir_attributes: post(s, ctx, dir).await,
                },
            )))
        }
    })
}

async fn access<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    let asked = r.u32()?;
    r.finish()?;
    let ino = handle!(s, fh, ACCESS3resfail::default());
    let a = match s.fs.getattr(ctx, ino, None).await {
        Ok(a) => a,
        Err(e) => fail!(object_status(&e), ACCESS3resfail::default()),
    };
    let dir = a.kind == FileType::Directory;
    // The access bits each NFS right needs, and whether it applies to this type.
    let rights = [
        (ACCESS3_READ, access_mask::READ, true),
        (ACCESS3_LOOKUP, access_mask::EXEC, dir),
        (ACCESS3_MODIFY, access_mask::WRITE, true),
        (ACCESS3_EXTEND, access_mask::WRITE, true),
        (ACCESS3_DELETE, access_mask::WRITE, dir),
        (ACCESS3_EXECUTE, access_mask::EXEC, !dir),
    ];
    let mut granted = 0;
    let mut verdicts: [Option<bool>; 8] = [None; 8];
    for (right, mask, applies) in rights {
        if asked & right == 0 || !applies {
            continue;
        }
        let slot = mask as usize;
        let ok = match verdicts[slot] {
            Some(ok) => ok,
            None => {
                let ok = s.fs.access(ctx, ino, mask).await.is_ok();
                verdicts[slot] = Some(ok);
                ok
            }
        };
        if ok {
            granted |= right;
        }
    }
    Ok(body(&ACCESS3res::Ok(ACCESS3resok {
        obj_attributes: post_op_attr::Some(fattr(&a, s.fsid)),
        access: granted,
    })))
}

async fn readlink<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    r.finish()?;
    let ino = handle!(s, fh, READLINK3resfail::default());
    Ok(match s.fs.readlink(ctx, ino).await {
        Ok(target) => body(&READLINK3res::Ok(READLINK3resok {
            symlink_attributes: post(s, ctx, ino).await,
            data: nfspath3(Opaque::owned(target.into_vec())),
        })),
        Err(e) => {
            trace_err("readlink", &e);
            body(&READLINK3res::Err((
                object_status(&e),
                READLINK3resfail {
                    symlink_attributes: post(s, ctx, ino).await,
                },
            )))
        }
    })
}

async fn read<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    let offset = r.u64()?;
    let count = r.u32()?.min(MAX_IO);
    r.finish()?;
    let ino = handle!(s, fh, READ3resfail::default());
    let data: VfsResult<Bytes> = async {
        perm::check_data(&*s.fs, ctx, ino, access_mask::READ).await?;
        if count == 0 {
            return Ok(Bytes::new());
        }
        s.pool.read(ctx, ino, offset, count).await
    }
    .await;
    let attrs = post(s, ctx, ino).await;
    Ok(match data {
        Ok(data) => {
            let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let eof = match &attrs {
                post_op_attr::Some(a) => offset.saturating_add(u64::from(n)) >= a.size,
                post_op_attr::None => n < count,
            };
            // READ3resok up to the data's length word; the data follows uncopied.
            let mut head = Vec::with_capacity(4 + attrs.packed_size() + 12);
            let packed = (
                nfsstat3::NFS3_OK.pack(&mut head),
                attrs.pack(&mut head),
                n.pack(&mut head),
            );
            match (packed, eof.pack(&mut head), n.pack(&mut head)) {
                ((Ok(_), Ok(_), Ok(_)), Ok(_), Ok(_)) => Answer::BodyThenData(head, data),
                _ => Answer::Garbage,
            }
        }
        Err(e) => {
            trace_err("read", &e);
            body(&READ3res::Err((
                object_status(&e),
                READ3resfail { file_attributes: attrs },
            )))
        }
    })
}

async fn write<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    let offset = r.u64()?;
    let count = r.u32()?;
    let stable = match r.u32()? {
        0 => stable_how::UNSTABLE,
        1 => stable_how::DATA_SYNC,
        2 => stable_how::FILE_SYNC,
        _ => return Err(crate::xdr::Garbage),
    };
    let data = r.opaque(UNBOUNDED)?;
    r.finish()?;
    let ino = handle!(s, fh, WRITE3resfail::default());
    let Some(data) = data.get(..count as usize) else {
        // `count` claims more bytes than were sent.
        fail!(nfsstat3::NFS3ERR_INVAL, WRITE3resfail::default());
    };
    if offset
        .checked_add(u64::from(count))
        .is_none_or(|end| end > i64::MAX as u64)
    {
        fail!(nfsstat3::NFS3ERR_FBIG, WRITE3resfail::default());
    }
    tracing::trace!(op = "write", ino = ino.0, offset, count, stable = %stable, "write");
    let written: VfsResult<u32> = async {
        perm::check_data(&*s.fs, ctx, ino, access_mask::WRITE).await?;
        let n = if data.is_empty() {
            0
        } else {
            s.pool.write(ctx, ino, offset, data).await?
        };
        match stable {
            stable_how::UNSTABLE => {}
            stable_how::DATA_SYNC => durable(s, ctx, ino, true).await?,
            stable_how::FILE_SYNC => durable(s, ctx, ino, false).await?,
        }
        Ok(n)
    }
    .await;
    Ok(match written {
        Ok(n) => body(&WRITE3res::Ok(WRITE3resok {
            file_wcc: wcc(s, ctx, ino).await,
            count: n,
            committed: stable,
            verf: writeverf3(s.write_verf),
        })),
        Err(e) => {
            trace_err("write", &e);
            body(&WRITE3res::Err((
                object_status(&e),
                WRITE3resfail {
                    file_wcc: wcc(s, ctx, ino).await,
                },
            )))
        }
    })
}

/// Makes `ino`'s data durable through the pool. A backend that does not implement `fsync`
/// (`ENOSYS`, the trait's default) has nothing more to do than its `write` did: its writes
/// are as durable as they get (as `MemFs` says of itself), and the WRITE or COMMIT
/// succeeds. Any other error fails the WRITE or COMMIT.
async fn durable<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, ino: Ino, datasync: bool) -> VfsResult<()> {
    match s.pool.fsync(ctx, ino, datasync).await {
        Err(VfsError::NotImplemented) => Ok(()),
        other => other,
    }
}

/// How a CREATE asks for its file.
enum CreateHow {
    Unchecked(SetAttr),
    Guarded(SetAttr),
    Exclusive([u8; 8]),
}

/// The times an EXCLUSIVE create stores its verifier in (as the Linux server does), so
/// that a retransmitted CREATE finds its own file.
fn verifier_times(v: [u8; 8]) -> (Timestamp, Timestamp) {
    let a = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let m = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
    (Timestamp::new(i64::from(a), 0), Timestamp::new(i64::from(m), 0))
}

/// Applies what `set` asks beyond the mode a new object was created with.
async fn settle_new<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, a: Attr, set: SetAttr) -> VfsResult<Attr> {
    let rest = SetAttr {
        mode: None,
        uid: set.uid.filter(|u| *u != a.uid),
        gid: set.gid.filter(|g| *g != a.gid),
        ..set
    };
    if rest == SetAttr::default() {
        return Ok(a);
    }
    perm::check_setattr(&*s.fs, ctx, &a, &rest).await?;
    s.fs.setattr(ctx, a.ino, rest).await
}

async fn create<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let (dfh, raw) = dirop_arg(r)?;
    let how = match r.u32()? {
        0 => CreateHow::Unchecked(decode_sattr(r)?),
        1 => CreateHow::Guarded(decode_sattr(r)?),
        2 => {
            let mut v = [0u8; 8];
            v.copy_from_slice(r.fixed(8)?);
            CreateHow::Exclusive(v)
        }
        _ => return Err(crate::xdr::Garbage),
    };
    r.finish()?;
    let dir = handle!(s, dfh, CREATE3resfail::default());
    let n = match name(raw) {
        Ok(n) => n,
        Err(stat) => fail!(
            stat,
            CREATE3resfail {
                dir_wcc: wcc(s, ctx, dir).await
            }
        ),
    };
    let made: VfsResult<Attr> = async {
        perm::check_dir_change(&*s.fs, ctx, dir).await?;
        let (mode, set) = match &how {
            CreateHow::Unchecked(set) | CreateHow::Guarded(set) => (set.mode.unwrap_or(0o644), Some(*set)),
            CreateHow::Exclusive(_) => (0o644, None),
        };
        let flags = OpenFlags::RDWR.with(libc::O_EXCL);
        match s.fs.create(ctx, dir, n, mode, 0, flags).await {
            Ok((a, fh)) => {
                // The handle the backend opened goes to the pool, which releases it in turn.
                s.pool.publish(ctx, a.ino, fh, flags.access());
                match (&how, set) {
                    (CreateHow::Exclusive(v), _) => {
                        let (at, mt) = verifier_times(*v);
                        let set = SetAttr {
                            atime: Some(SetTime::At(at)),
                            mtime: Some(SetTime::At(mt)),
                            ..SetAttr::default()
                        };
                        s.fs.setattr(ctx, a.ino, set).await
                    }
                    (_, Some(set)) => settle_new(s, ctx, a, set).await,
                    (_, None) => Ok(a),
                }
            }
            Err(VfsError::Exists) => {
                let existing = s.fs.lookup(ctx, dir, n).await?;
                match how {
                    CreateHow::Guarded(_) => Err(VfsError::Exists),
                    CreateHow::Exclusive(v) => {
                        let (at, mt) = verifier_times(v);
                        if existing.kind == FileType::Regular
                            && existing.atime.secs == at.secs
                            && existing.mtime.secs == mt.secs
                        {
                            Ok(existing) // a retransmission of the CREATE that made it
                        } else {
                            Err(VfsError::Exists)
                        }
                    }
                    CreateHow::Unchecked(set) => {
                        if existing.kind != FileType::Regular {
                            return Err(VfsError::Exists);
                        }
                        // An existing file keeps its attributes, except a requested size.
                        match set.size {
                            Some(size) => {
                                let trunc = SetAttr::size(size);
                                perm::check_setattr(&*s.fs, ctx, &existing, &trunc).await?;
                                s.fs.setattr(ctx, existing.ino, trunc).await
                            }
                            None => Ok(existing),
                        }
                    }
                }
            }
            Err(e) => Err(e),
        }
    }
    .await;
    Ok(match made {
        Ok(a) => body(&CREATE3res::Ok(CREATE3resok {
            obj: post_op_fh3::Some(s.fh(a.ino)),
            obj_attributes: post_op_attr::Some(fattr(&a, s.fsid)),
            dir_wcc: wcc(s, ctx, dir).await,
        })),
        Err(e) => {
            trace_err("create", &e);
            body(&CREATE3res::Err((
                nfsstat_of(&e),
                CREATE3resfail {
                    dir_wcc: wcc(s, ctx, dir).await,
                },
            )))
        }
    })
}

/// The reply of MKDIR, SYMLINK and MKNOD, which share a layout.
async fn made_reply<F: VirtualFs>(
    s: &Shared<F>,
    ctx: &RequestCtx,
    dir: Ino,
    made: VfsResult<Attr>,
    op: &'static str,
) -> Answer {
    match made {
        Ok(a) => body(&MKDIR3res::Ok(MKDIR3resok {
            obj: post_op_fh3::Some(s.fh(a.ino)),
            obj_attributes: post_op_attr::Some(fattr(&a, s.fsid)),
            dir_wcc: wcc(s, ctx, dir).await,
        })),
        Err(e) => {
            trace_err(op, &e);
            body(&MKDIR3res::Err((
                nfsstat_of(&e),
                MKDIR3resfail {
                    dir_wcc: wcc(s, ctx, dir).await,
                },
            )))
        }
    }
}

async fn mkdir<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let (dfh, raw) = dirop_arg(r)?;
    let set = decode_sattr(r)?;
    r.finish()?;
    let dir = handle!(s, dfh, MKDIR3resfail::default());
    let made = async {
        let n = Name::from_bytes(raw)?;
        perm::check_dir_change(&*s.fs, ctx, dir).await?;
        let a = s.fs.mkdir(ctx, dir, n, set.mode.unwrap_or(0o755), 0).await?;
        settle_new(s, ctx, a, set).await
    }
    .await;
    Ok(made_reply(s, ctx, dir, made, "mkdir").await)
}

async fn symlink<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let (dfh, raw) = dirop_arg(r)?;
    let set = decode_sattr(r)?;
    let target = r.opaque(UNBOUNDED)?;
    r.finish()?;
    let dir = handle!(
        s,
        dfh,
        SYMLINK3resfail {
            dir_wcc: wcc_data::default()
        }
    );
    let made = async {
        let n = Name::from_bytes(raw)?;
        let target = OsStr::from_bytes(target);
        vfs_core::check_symlink_target(target)?;
        perm::check_dir_change(&*s.fs, ctx, dir).await?;
        let a = s.fs.symlink(ctx, dir, n, target).await?;
        // A symlink's mode means nothing; its owner and times may be set.
        settle_new(s, ctx, a, SetAttr { mode: None, ..set }).await
    }
    .await;
    Ok(made_reply(s, ctx, dir, made, "symlink").await)
}

async fn mknod<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let (dfh, raw) = dirop_arg(r)?;
    // mknoddata3: a union on ftype3; regular files, directories and symlinks have their
    // own procedures (NFS3ERR_BADTYPE here).
    let device = |r: &mut XdrReader<'_>, kind| -> XdrResult<_> {
        let set = decode_sattr(r)?;
        let (major, minor) = (r.u32()?, r.u32()?);
        Ok(Some((kind, set, rdev(major, minor))))
    };
    let node = match r.u32()? {
        3 => device(r, FileType::BlockDevice)?,
        4 => device(r, FileType::CharDevice)?,
        6 => Some((FileType::Socket, decode_sattr(r)?, 0)),
        7 => Some((FileType::Fifo, decode_sattr(r)?, 0)),
        1 | 2 | 5 => None,
        _ => return Err(crate::xdr::Garbage),
    };
    r.finish()?;
    let dir = handle!(
        s,
        dfh,
        MKNOD3resfail {
            dir_wcc: wcc_data::default()
        }
    );
    let Some((kind, set, dev)) = node else {
        fail!(
            nfsstat3::NFS3ERR_BADTYPE,
            MKNOD3resfail {
                dir_wcc: wcc(s, ctx, dir).await
            }
        );
    };
    let made = async {
        let n = Name::from_bytes(raw)?;
        perm::check_dir_change(&*s.fs, ctx, dir).await?;
        let mode = kind.mode_bits() | set.mode.unwrap_or(0o644);
        let a = s.fs.mknod(ctx, dir, n, mode, 0, dev).await?;
        settle_new(s, ctx, a, set).await
    }
    .await;
    Ok(made_reply(s, ctx, dir, made, "mknod").await)
}

async fn remove<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let (dfh, raw) = dirop_arg(r)?;
    r.finish()?;
    let dir = handle!(s, dfh, REMOVE3resfail::default());
    let done = async {
        let n = Name::from_bytes(raw)?;
        perm::check_dir_change(&*s.fs, ctx, dir).await?;
        let gone = s.fs.lookup(ctx, dir, n).await?;
        s.fs.unlink(ctx, dir, n).await?;
        if gone.nlink <= 1 {
            // Its last name: the pooled handle would keep the data alive for nothing.
            s.pool.invalidate(gone.ino).await;
        }
        Ok::<(), VfsError>(())
    }
    .await;
    let dir_wcc = wcc(s, ctx, dir).await;
    Ok(match done {
        Ok(()) => body(&REMOVE3res::Ok(REMOVE3resok { dir_wcc })),
        Err(e) => {
            trace_err("remove", &e);
            body(&REMOVE3res::Err((nfsstat_of(&e), REMOVE3resfail { dir_wcc })))
        }
    })
}

async fn rmdir<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let (dfh, raw) = dirop_arg(r)?;
    r.finish()?;
    let dir = handle!(
        s,
        dfh,
        RMDIR3resfail {
            dir_wcc: wcc_data::default()
        }
    );
    let done = async {
        let n = Name::from_bytes(raw)?;
        perm::check_dir_change(&*s.fs, ctx, dir).await?;
        s.fs.rmdir(ctx, dir, n).await
    }
    .await;
    let dir_wcc = wcc(s, ctx, dir).await;
    Ok(match done {
        Ok(()) => body(&RMDIR3res::Ok(RMDIR3resok { dir_wcc })),
        Err(e) => {
            trace_err("rmdir", &e);
            body(&RMDIR3res::Err((nfsstat_of(&e), RMDIR3resfail { dir_wcc })))
        }
    })
}

async fn rename<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let (ffh, fraw) = dirop_arg(r)?;
    let (tfh, traw) = dirop_arg(r)?;
    r.finish()?;
    let from = handle!(s, ffh, RENAME3resfail::default());
    let to = handle!(s, tfh, RENAME3resfail::default());
    let done = async {
        let (fname, tname) = (Name::from_bytes(fraw)?, Name::from_bytes(traw)?);
        perm::check_dir_change(&*s.fs, ctx, from).await?;
        perm::check_dir_change(&*s.fs, ctx, to).await?;
        let replaced = s.fs.lookup(ctx, to, tname).await.ok();
        s.fs.rename(ctx, from, fname, to, tname, RenameFlags::NONE).await?;
        if let Some(old) = replaced
            && old.kind != FileType::Directory
            && old.nlink <= 1
        {
            s.pool.invalidate(old.ino).await;
        }
        Ok::<(), VfsError>(())
    }
    .await;
    let fromdir_wcc = wcc(s, ctx, from).await;
    let todir_wcc = wcc(s, ctx, to).await;
    Ok(match done {
        Ok(()) => body(&RENAME3res::Ok(RENAME3resok { fromdir_wcc, todir_wcc })),
        Err(e) => {
            trace_err("rename", &e);
            body(&RENAME3res::Err((
                nfsstat_of(&e),
                RENAME3resfail { fromdir_wcc, todir_wcc },
            )))
        }
    })
}

async fn link<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    let (dfh, raw) = dirop_arg(r)?;
    r.finish()?;
    let ino = handle!(
        s,
        fh,
        LINK3resfail {
            file_attributes: post_op_attr::None,
            linkdir_wcc: wcc_data::default()
        }
    );
    let dir = handle!(
        s,
        dfh,
        LINK3resfail {
            file_attributes: post_op_attr::None,
            linkdir_wcc: wcc_data::default()
        }
    );
    let done = async {
        let n = Name::from_bytes(raw)?;
        perm::check_dir_change(&*s.fs, ctx, dir).await?;
        s.fs.link(ctx, ino, dir, n).await
    }
    .await;
    let linkdir_wcc = wcc(s, ctx, dir).await;
    Ok(match done {
        Ok(a) => body(&LINK3res::Ok(LINK3resok {
            file_attributes: post_op_attr::Some(fattr(&a, s.fsid)),
            linkdir_wcc,
        })),
        Err(e) => {
            trace_err("link", &e);
            body(&LINK3res::Err((
                nfsstat_of(&e),
                LINK3resfail {
                    file_attributes: post(s, ctx, ino).await,
                    linkdir_wcc,
                },
            )))
        }
    })
}

/// Cookie verifier of every listing: `VirtualFs` cookies stay valid while the directory
/// changes (the trait's readdir contract), so there is nothing to invalidate, and
/// `NFS3ERR_BAD_COOKIE` is never answered.
const COOKIEVERF: cookieverf3 = cookieverf3([0; 8]);

/// Bytes of a READDIR3resok (or READDIRPLUS3resok) around its entries: attributes,
/// verifier, the list terminator and `eof` (the list's own terminator is counted by
/// `BoundedList`).
fn dir_overhead(attrs: &post_op_attr) -> usize {
    attrs.packed_size() + 8 + 4
}

/// How many entries to ask the backend for at once, for a reply of `budget` bytes.
fn batch_for(budget: usize) -> usize {
    // The smallest entry3 is 24 bytes plus the list's 4-byte "more" flag.
    (budget / 28).clamp(1, 1024)
}

async fn readdir<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    let cookie = r.u64()?;
    let _verf = r.fixed(8)?;
    let count = r.u32()?.min(MAX_DIR_REPLY) as usize;
    r.finish()?;
    let dir = handle!(s, fh, READDIR3resfail::default());
    let attrs = post(s, ctx, dir).await;
    let Some(budget) = count.checked_sub(dir_overhead(&attrs)) else {
        fail!(nfsstat3::NFS3ERR_TOOSMALL, READDIR3resfail { dir_attributes: attrs });
    };
    if let Err(e) = perm::check(&*s.fs, ctx, dir, access_mask::READ).await {
        fail!(object_status(&e), READDIR3resfail { dir_attributes: attrs });
    }
    let mut list = BoundedList::<entry3<'static>>::new(budget);
    let mut next = cookie;
    let mut eof = false;
    // Fetch in batches until the reply is full or the directory ends (an empty batch).
    'fill: loop {
        let batch = match s.fs.readdir(ctx, dir, next, batch_for(budget)).await {
            Ok(b) => b,
            Err(e) => {
                trace_err("readdir", &e);
                fail!(object_status(&e), READDIR3resfail { dir_attributes: attrs });
            }
        };
        if batch.is_empty() {
            eof = true;
            break;
        }
        for e in batch {
            let entry = entry3 {
                fileid: e.ino.0,
                name: filename3(Opaque::owned(e.name.into_vec())),
                cookie: e.cookie,
            };
            if list.try_push(entry).is_err() {
                break 'fill;
            }
            next = e.cookie;
        }
    }
    let entries = list.into_inner();
    if entries.is_empty() && !eof {
        fail!(nfsstat3::NFS3ERR_TOOSMALL, READDIR3resfail { dir_attributes: attrs });
    }
    tracing::trace!(
        op = "readdir",
        dir = dir.0,
        cookie,
        entries = entries.0.len(),
        eof,
        "directory page"
    );
    Ok(body(&READDIR3res::Ok(READDIR3resok {
        dir_attributes: attrs,
        cookieverf: COOKIEVERF,
        reply: dirlist3 { entries, eof },
    })))
}

async fn readdirplus<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    let cookie = r.u64()?;
    let _verf = r.fixed(8)?;
    let dircount = r.u32()? as usize;
    let maxcount = r.u32()?.min(MAX_DIR_REPLY) as usize;
    r.finish()?;
    let dir = handle!(s, fh, READDIRPLUS3resfail::default());
    let attrs = post(s, ctx, dir).await;
    let Some(budget) = maxcount.checked_sub(dir_overhead(&attrs)) else {
        fail!(
            nfsstat3::NFS3ERR_TOOSMALL,
            READDIRPLUS3resfail { dir_attributes: attrs }
        );
    };
    if let Err(e) = perm::check(&*s.fs, ctx, dir, access_mask::READ).await {
        fail!(object_status(&e), READDIRPLUS3resfail { dir_attributes: attrs });
    }
    let mut list = BoundedList::<entryplus3<'static>>::new(budget);
    // `dircount` bounds the names and cookies alone; a hint, so one entry always fits.
    let mut names = 0usize;
    let mut next = cookie;
    let mut eof = false;
    'fill: loop {
        let batch = match s.fs.readdirplus(ctx, dir, next, batch_for(budget / 4)).await {
            Ok(b) => b,
            Err(e) => {
                trace_err("readdirplus", &e);
                fail!(object_status(&e), READDIRPLUS3resfail { dir_attributes: attrs });
            }
        };
        if batch.is_empty() {
            eof = true;
            break;
        }
        for e in batch {
            let name = filename3(Opaque::owned(e.entry.name.into_vec()));
            let name_size = 8 + name.packed_size() + 8;
            if names > 0 && dircount > 0 && names + name_size > dircount {
                break 'fill;
            }
            let entry = entryplus3 {
                fileid: e.entry.ino.0,
                name,
                cookie: e.entry.cookie,
                name_attributes: post_op_attr::Some(fattr(&e.attr, s.fsid)),
                name_handle: post_op_fh3::Some(s.fh(e.entry.ino)),
            };
            if list.try_push(entry).is_err() {
                break 'fill;
            }
            names += name_size;
            next = e.entry.cookie;
        }
    }
    let entries = list.into_inner();
    if entries.is_empty() && !eof {
        fail!(
            nfsstat3::NFS3ERR_TOOSMALL,
            READDIRPLUS3resfail { dir_attributes: attrs }
        );
    }
    tracing::trace!(
        op = "readdirplus",
        dir = dir.0,
        cookie,
        entries = entries.0.len(),
        eof,
        "directory page"
    );
    Ok(body(&READDIRPLUS3res::Ok(READDIRPLUS3resok {
        dir_attributes: attrs,
        cookieverf: COOKIEVERF,
        reply: dirlistplus3 { entries, eof },
    })))
}

async fn fsstat<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    r.finish()?;
    let ino = handle!(s, fh, FSSTAT3resfail::default());
    let attrs = post(s, ctx, ino).await;
    Ok(match s.fs.statfs(ctx, ino).await {
        Ok(st) => {
            let unit = u64::from(if st.frsize == 0 { st.bsize } else { st.frsize });
            body(&FSSTAT3res::Ok(FSSTAT3resok {
                obj_attributes: attrs,
                tbytes: st.blocks.saturating_mul(unit),
                fbytes: st.bfree.saturating_mul(unit),
                abytes: st.bavail.saturating_mul(unit),
                tfiles: st.files,
                ffiles: st.ffree,
                afiles: st.ffree,
                invarsec: 0,
            }))
        }
        Err(e) => {
            trace_err("fsstat", &e);
            body(&FSSTAT3res::Err((
                object_status(&e),
                FSSTAT3resfail { obj_attributes: attrs },
            )))
        }
    })
}

async fn fsinfo<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    r.finish()?;
    let ino = handle!(s, fh, FSINFO3resfail::default());
    let attrs = post(s, ctx, ino).await;
    if attrs.is_none() {
        fail!(nfsstat3::NFS3ERR_STALE, FSINFO3resfail::default());
    }
    Ok(body(&FSINFO3res::Ok(FSINFO3resok {
        obj_attributes: attrs,
        rtmax: MAX_IO,
        rtpref: MAX_IO,
        rtmult: 4096,
        wtmax: MAX_IO,
        wtpref: MAX_IO,
        wtmult: 4096,
        dtpref: DIR_PREF,
        maxfilesize: i64::MAX as u64,
        time_delta: nfstime3 {
            seconds: 0,
            nseconds: 1,
        },
        properties: FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME,
    })))
}

async fn pathconf<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    r.finish()?;
    let ino = handle!(s, fh, PATHCONF3resfail::default());
    let attrs = post(s, ctx, ino).await;
    if attrs.is_none() {
        fail!(nfsstat3::NFS3ERR_STALE, PATHCONF3resfail::default());
    }
    let name_max = match s.fs.statfs(ctx, ino).await {
        Ok(st) if st.namelen > 0 => st.namelen.min(vfs_core::NAME_MAX as u32),
        _ => vfs_core::NAME_MAX as u32,
    };
    Ok(body(&PATHCONF3res::Ok(PATHCONF3resok {
        obj_attributes: attrs,
        linkmax: u32::MAX,
        name_max,
        no_trunc: true,
        chown_restricted: true,
        case_insensitive: false,
        case_preserving: true,
    })))
}

async fn commit<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, r: &mut XdrReader<'_>) -> XdrResult<Answer> {
    let fh = fh_arg(r)?;
    let _offset = r.u64()?;
    let _count = r.u32()?;
    r.finish()?;
    let ino = handle!(
        s,
        fh,
        COMMIT3resfail {
            file_wcc: wcc_data::default()
        }
    );
    // The whole file, whatever range was asked: what fsync(2) offers.
    tracing::trace!(op = "commit", ino = ino.0, "commit");
    let done = durable(s, ctx, ino, false).await;
    let file_wcc = wcc(s, ctx, ino).await;
    Ok(match done {
        Ok(()) => body(&COMMIT3res::Ok(COMMIT3resok {
            file_wcc,
            verf: writeverf3(s.write_verf),
        })),
        Err(e) => {
            trace_err("commit", &e);
            body(&COMMIT3res::Err((object_status(&e), COMMIT3resfail { file_wcc })))
        }
    })
}
