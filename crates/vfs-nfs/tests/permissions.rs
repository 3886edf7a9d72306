//! Permissions: the server checks each call against its `AUTH_UNIX` credential (no client
//! kernel does it for the backend), with the NFS owner override, and honours squashing.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::NfsClientFs;
use nfs3_client::nfs3_types::nfs3::{
    ACCESS3_MODIFY, ACCESS3_READ, ACCESS3args, ACCESS3res, CREATE3args, CREATE3res, CREATE3resok, createhow3,
    diropargs3, filename3, post_op_attr, sattr3,
};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use vfs_core::memfs::MemFs;
use vfs_core::{Errno, Ino, Name, OpenFlags, RequestCtx, SetAttr, VirtualFs};
use vfs_nfs::{Credentials, NfsConfig};

const ROOT: RequestCtx = RequestCtx::ROOT;
const USER: RequestCtx = RequestCtx::new(1000, 1000, 0);

fn n(s: &str) -> Name<'_> {
    Name::from_bytes(s.as_bytes()).unwrap()
}

fn errno<T>(r: Result<T, vfs_core::VfsError>) -> Result<(), Errno> {
    r.map(|_| ()).map_err(|e| e.errno())
}

async fn mkfile<F: VirtualFs>(fs: &F, dir: Ino, name: &str, mode: u32, data: &[u8]) -> Ino {
    let (a, fh) = fs.create(&ROOT, dir, n(name), mode, 0, OpenFlags::RDWR).await.unwrap();
    if !data.is_empty() {
        fs.write(&ROOT, a.ino, fh, 0, data).await.unwrap();
    }
    fs.release(&ROOT, a.ino, fh).await.unwrap();
    a.ino
}

#[tokio::test]
async fn a_user_gets_what_the_modes_allow_and_the_owner_override() {
    let server = common::serve(Arc::new(MemFs::new()), common::no_root_squash());
    let root = NfsClientFs::new(server.addr);
    let public = mkfile(&root, Ino::ROOT, "public", 0o644, b"for all").await;
    let secret = mkfile(&root, Ino::ROOT, "secret", 0o600, b"for root").await;
    let shared = root.mkdir(&ROOT, Ino::ROOT, n("shared"), 0o777, 0).await.unwrap().ino;

    let user = NfsClientFs::as_user(server.addr, 1000, 1000);
    // Lookups (x on the root) and reads that the modes allow.
    let a = user.lookup(&USER, Ino::ROOT, n("public")).await.unwrap();
    assert_eq!(a.ino, public);
    assert_eq!(
        &user.read(&USER, public, vfs_core::Fh(0), 0, 64).await.unwrap()[..],
        b"for all"
    );
    // What they do not.
    let sec = user.lookup(&USER, Ino::ROOT, n("secret")).await.unwrap();
    assert_eq!(sec.ino, secret);
    assert_eq!(
        errno(user.read(&USER, secret, vfs_core::Fh(0), 0, 64).await),
        Err(Errno::EACCES)
    );
    assert_eq!(
        errno(user.write(&USER, public, vfs_core::Fh(0), 0, b"x").await),
        Err(Errno::EACCES)
    );
    assert_eq!(
        errno(
            user.create(&USER, Ino::ROOT, n("mine"), 0o644, 0, OpenFlags::RDWR)
                .await
        ),
        Err(Errno::EACCES)
    );
    assert_eq!(
        errno(user.unlink(&USER, Ino::ROOT, n("public")).await),
        Err(Errno::EACCES)
    );
    assert_eq!(
        errno(user.setattr(&USER, public, SetAttr::mode(0o666)).await),
        Err(Errno::EPERM)
    );
    assert_eq!(
        errno(user.setattr(&USER, public, SetAttr::size(0)).await),
        Err(Errno::EACCES)
    );

    // ACCESS answers what the user may do, not what was asked.
    let (mut raw, _) = common::mount_as(server.addr, 1000, 1000).await;
    let (fh, _) = common::lookup(&mut raw, &common::mount(server.addr).await.1, "public")
        .await
        .unwrap();
    let r = raw
        .access(&ACCESS3args {
            object: fh,
            access: ACCESS3_READ | ACCESS3_MODIFY,
        })
        .await
        .unwrap();
    let ACCESS3res::Ok(ok) = r else { panic!("{r:?}") };
    assert_eq!(ok.access, ACCESS3_READ);

    // In a world-writable directory the user creates a file it owns; mode 0444 does not
    // stop its owner from writing it (NFS has no OPEN: the owner override).
    assert_eq!(user.lookup(&USER, Ino::ROOT, n("shared")).await.unwrap().ino, shared);
    let (mine, _) = user
        .create(&USER, shared, n("mine"), 0o444, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    assert_eq!((mine.uid, mine.gid, mine.perm), (1000, 1000, 0o444));
    assert_eq!(
        user.write(&USER, mine.ino, vfs_core::Fh(0), 0, b"mine").await.unwrap(),
        4
    );
    assert_eq!(
        &user.read(&USER, mine.ino, vfs_core::Fh(0), 0, 64).await.unwrap()[..],
        b"mine"
    );
    assert_eq!(
        user.setattr(&USER, mine.ino, SetAttr::mode(0o600)).await.unwrap().perm,
        0o600
    );
    // Giving it away takes root.
    let give = SetAttr {
        uid: Some(0),
        ..SetAttr::default()
    };
    assert_eq!(errno(user.setattr(&USER, mine.ino, give).await), Err(Errno::EPERM));
    assert_eq!(root.lookup(&ROOT, shared, n("mine")).await.unwrap().ino, mine.ino);
    assert_eq!(root.setattr(&ROOT, mine.ino, give).await.unwrap().uid, 0);
}

#[tokio::test]
async fn auth_null_is_nobody_and_squash_is_everyone() {
    let server = common::serve(Arc::new(MemFs::new()), common::no_root_squash());
    let root = NfsClientFs::new(server.addr);
    root.mkdir(&ROOT, Ino::ROOT, n("shared"), 0o777, 0).await.unwrap();
    // AUTH_NULL: what `Client::new` sends.
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut anon = common::Client::new(nfs3_client::tokio::TokioIo::new(stream));
    let root_fh = common::mount(server.addr).await.1;
    let (dir, _) = common::lookup(&mut anon, &root_fh, "shared").await.unwrap();
    let args = CREATE3args {
        where_: diropargs3 {
            dir,
            name: filename3(Opaque::borrowed(b"anon")),
        },
        how: createhow3::GUARDED(sattr3::default()),
    };
    let r = anon.create(&args).await.unwrap();
    let CREATE3res::Ok(CREATE3resok {
        obj_attributes: post_op_attr::Some(a),
        ..
    }) = r
    else {
        panic!("{r:?}")
    };
    assert_eq!((a.uid, a.gid), (65534, 65534), "AUTH_NULL runs as nobody");

    let squash = RequestCtx::new(4242, 4343, 0);
    let config = NfsConfig {
        credentials: Credentials::Squash(squash),
        ..common::no_root_squash()
    };
    let server = common::serve(Arc::new(MemFs::with_root(4242, 4343, 0o755)), config);
    common::assert_root_squashed(server.addr, "f", (4242, 4343)).await;
}
