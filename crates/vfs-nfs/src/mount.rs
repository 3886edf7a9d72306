//! MOUNT v3 (RFC 1813, appendix I) and the portmapper's `GETPORT` (RFC 1833), both on
//! the NFS port.
//!
//! Invariant: there is one export, `/`, the backend's root; `MNT` of `/` or of a path
//! below it (a subdirectory mount, walked with lookups as the caller) returns that
//! directory's handle, in the same format and generation as every NFS handle. The
//! portmapper answers this server's own port for NFS v3 and MOUNT v3 over TCP and `0`
//! ("not registered") for anything else; it registers nothing.

use nfs3_types::mount::{dirpath, export_node, fhandle3, mountres3, mountres3_ok, mountstat3};
use nfs3_types::nfs3::{NFS3_FHSIZE, nfsstat3};
use nfs3_types::xdr_codec::{List, Opaque, Void};
use vfs_core::{FileType, Ino, Name, RequestCtx, VfsError, VirtualFs};

use crate::server::{Answer, Shared, body};
use crate::status::nfsstat_of;
use crate::xdr::XdrReader;

/// The MOUNT program number.
pub const MOUNT_PROGRAM: u32 = 100_005;
/// The portmapper program number.
pub const PORTMAP_PROGRAM: u32 = 100_000;
/// `MNTPATHLEN`.
const MNTPATHLEN: usize = 1024;
const IPPROTO_TCP: u32 = 6;
const AUTH_NULL: u32 = 0;
const AUTH_UNIX: u32 = 1;

/// Runs MOUNT procedure `proc_`.
pub(crate) async fn mount_call<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, proc_: u32, args: &[u8]) -> Answer {
    let mut r = XdrReader::new(args);
    let decoded = match proc_ {
        // NULL, DUMP, UMNTALL, EXPORT: no arguments.
        0 | 2 | 4 | 5 => r.finish().map(|()| None),
        // MNT, UMNT: a path.
        1 | 3 => r.opaque(MNTPATHLEN).and_then(|p| r.finish().map(|()| Some(p))),
        _ => return Answer::NoProc,
    };
    let Ok(path) = decoded else { return Answer::Garbage };
    match (proc_, path) {
        (1, Some(path)) => body(&mnt(s, ctx, path).await),
        // DUMP: we keep no list of mounts (clients do not need one).
        (2, _) => body(&List::<Void>(Vec::new())),
        // EXPORT: the one export, open to every host.
        (5, _) => body(&List(vec![export_node {
            ex_dir: dirpath(Opaque::borrowed(b"/")),
            ex_groups: List(Vec::new()),
        }])),
        // NULL, UMNT, UMNTALL.
        _ => body(&Void),
    }
}

async fn mnt<F: VirtualFs>(s: &Shared<F>, ctx: &RequestCtx, path: &[u8]) -> mountres3<'static> {
    let mut ino = Ino::ROOT;
    for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty() && *p != b".") {
        let step = async {
            let n = Name::from_bytes(part)?;
            let a = s.fs.lookup(ctx, ino, n).await?;
            if a.kind == FileType::Directory {
                Ok(a.ino)
            } else {
                Err(VfsError::NotDir)
            }
        };
        match step.await {
            Ok(next) => ino = next,
            Err(e) => return mountres3::Err(mountstat(&e)),
        }
    }
    let fh = s.generation.handle(ino);
    debug_assert!(fh.as_bytes().len() <= NFS3_FHSIZE);
    mountres3::Ok(mountres3_ok {
        fhandle: fhandle3(Opaque::owned(fh.as_bytes().to_vec())),
        auth_flavors: vec![AUTH_UNIX, AUTH_NULL],
    })
}

fn mountstat(e: &VfsError) -> mountstat3 {
    match nfsstat_of(e) {
        nfsstat3::NFS3ERR_NOENT => mountstat3::MNT3ERR_NOENT,
        nfsstat3::NFS3ERR_NOTDIR => mountstat3::MNT3ERR_NOTDIR,
        nfsstat3::NFS3ERR_ACCES | nfsstat3::NFS3ERR_PERM => mountstat3::MNT3ERR_ACCES,
        nfsstat3::NFS3ERR_NAMETOOLONG => mountstat3::MNT3ERR_NAMETOOLONG,
        nfsstat3::NFS3ERR_INVAL => mountstat3::MNT3ERR_INVAL,
        nfsstat3::NFS3ERR_NOTSUPP => mountstat3::MNT3ERR_NOTSUPP,
        _ => mountstat3::MNT3ERR_SERVERFAULT,
    }
}

/// Runs portmapper (v2) procedure `proc_`.
pub(crate) fn portmap_call<F: VirtualFs>(s: &Shared<F>, proc_: u32, args: &[u8]) -> Answer {
    let mut r = XdrReader::new(args);
    match proc_ {
        0 => match r.finish() {
            Ok(()) => body(&Void),
            Err(_) => Answer::Garbage,
        },
        // SET, UNSET: nothing can be registered here.
        1 | 2 => match (r.u32(), r.u32(), r.u32(), r.u32(), r.finish()) {
            (Ok(_), Ok(_), Ok(_), Ok(_), Ok(())) => body(&false),
            _ => Answer::Garbage,
        },
        3 => match (r.u32(), r.u32(), r.u32(), r.u32(), r.finish()) {
            (Ok(prog), Ok(vers), Ok(prot), Ok(_), Ok(())) => {
                let ours = matches!(
                    (prog, vers),
                    (crate::nfs::PROGRAM, 3) | (MOUNT_PROGRAM, 3) | (PORTMAP_PROGRAM, 2)
                );
                let port = if ours && prot == IPPROTO_TCP {
                    u32::from(s.port)
                } else {
                    0
                };
                body(&port)
            }
            _ => Answer::Garbage,
        },
        _ => Answer::NoProc,
    }
}
