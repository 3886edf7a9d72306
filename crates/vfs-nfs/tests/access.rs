//! Who may do what over NFS: `root_squash` by default, `anonuid`/`anongid`,
//! `all_squash`, a read-only export (`vfs_core::ReadOnly`), and the client allowlist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::NfsClientFs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use vfs_core::memfs::MemFs;
use vfs_core::{Errno, Ino, Name, OpenFlags, ReadOnly, RenameFlags, RequestCtx, SetAttr, VirtualFs};
use vfs_nfs::{ClientNet, Credentials, NOBODY, NfsConfig};

const ROOT: RequestCtx = RequestCtx::ROOT;

fn n(s: &str) -> Name<'_> {
    Name::new(OsStr::new(s)).unwrap()
}

/// A client claiming uid 0 creates files as nobody by default (root_squash), as
/// `anonuid`/`anongid` when they are set, and cannot give a file to root.
#[tokio::test]
async fn root_is_nobody_by_default() {
    let server = common::serve(Arc::new(MemFs::with_root(0, 0, 0o1777)), NfsConfig::default());
    common::assert_root_squashed(server.addr, "f", (65534, 65534)).await;
    // A root-owned 0755 directory is closed to a squashed root.
    let server2 = common::serve(Arc::new(MemFs::new()), NfsConfig::default());
    let r = NfsClientFs::new(server2.addr)
        .mkdir(&ROOT, Ino::ROOT, n("d"), 0o755, 0)
        .await;
    assert_eq!(r.map_err(|e| e.errno()).err(), Some(Errno::EACCES));
    // Other users are who they say.
    let user = NfsClientFs::as_user(server.addr, 1000, 1000);
    let (a, _) = user
        .create(&ROOT, Ino::ROOT, n("u"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    assert_eq!((a.uid, a.gid), (1000, 1000));

    let anon = RequestCtx::new(4242, 4343, 0);
    let config = NfsConfig {
        credentials: Credentials::RootSquash { anonymous: anon },
        ..NfsConfig::default()
    };
    let server = common::serve(Arc::new(MemFs::with_root(0, 0, 0o1777)), config);
    let (a, _) = NfsClientFs::new(server.addr)
        .create(&ROOT, Ino::ROOT, n("f"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    assert_eq!((a.uid, a.gid), (4242, 4343), "anonuid/anongid");

    let config = NfsConfig {
        credentials: Credentials::Squash(anon),
        ..NfsConfig::default()
    };
    let server = common::serve(Arc::new(MemFs::with_root(0, 0, 0o1777)), config);
    let (a, _) = NfsClientFs::as_user(server.addr, 1000, 1000)
        .create(&ROOT, Ino::ROOT, n("f"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    assert_eq!((a.uid, a.gid), (4242, 4343), "all_squash: every user");
}

/// A read-only export (a `ReadOnly` backend) refuses every change with ROFS, even to a
/// trusted root, and the exported tree is unchanged; reads work.
#[tokio::test]
async fn read_only_export_refuses_every_change() {
    let fs = MemFs::new();
    let (a, fh) = fs
        .create(&ROOT, Ino::ROOT, n("f"), 0o666, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    fs.write(&ROOT, a.ino, fh, 0, b"owner's bytes").await.unwrap();
    fs.release(&ROOT, a.ino, fh).await.unwrap();
    let ro = Arc::new(ReadOnly::new(fs));
    let server = common::serve(Arc::clone(&ro), common::no_root_squash());
    let c = NfsClientFs::new(server.addr);
    let f = c.lookup(&ROOT, Ino::ROOT, n("f")).await.unwrap().ino;
    let rofs = |r: Result<(), vfs_core::VfsError>, what: &str| {
        assert_eq!(r.map_err(|e| e.errno()).err(), Some(Errno::EROFS), "{what}");
    };
    rofs(
        c.create(&ROOT, Ino::ROOT, n("g"), 0o644, 0, OpenFlags::RDWR)
            .await
            .map(drop),
        "create",
    );
    rofs(c.mkdir(&ROOT, Ino::ROOT, n("d"), 0o755, 0).await.map(drop), "mkdir");
    rofs(c.unlink(&ROOT, Ino::ROOT, n("f")).await, "remove");
    rofs(
        c.rename(&ROOT, Ino::ROOT, n("f"), Ino::ROOT, n("h"), RenameFlags::NONE)
            .await,
        "rename",
    );
    rofs(c.setattr(&ROOT, f, SetAttr::size(0)).await.map(drop), "setattr size");
    rofs(
        c.symlink(&ROOT, Ino::ROOT, n("s"), OsStr::new("f")).await.map(drop),
        "symlink",
    );
    let fh = c.open(&ROOT, f, OpenFlags::RDONLY).await.unwrap();
    rofs(c.write(&ROOT, f, fh, 0, b"XXXX").await.map(drop), "write");
    assert_eq!(&c.read(&ROOT, f, fh, 0, 100).await.unwrap()[..], b"owner's bytes");
    c.release(&ROOT, f, fh).await.unwrap();
    // The backend is unchanged.
    let inner = ro.inner();
    assert_eq!(
        inner.readdir(&ROOT, Ino::ROOT, 0, 100).await.unwrap().len(),
        3,
        ". .. f"
    );
    let fh = inner.open(&ROOT, f, OpenFlags::RDONLY).await.unwrap();
    assert_eq!(&inner.read(&ROOT, f, fh, 0, 100).await.unwrap()[..], b"owner's bytes");
    inner.release(&ROOT, f, fh).await.unwrap();
}

fn be(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// One call (AUTH_UNIX uid 0) with its record mark; `args` already XDR.
fn record(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut cred = be(&[0, 4]);
    cred.extend_from_slice(b"host");
    cred.extend(be(&[0, 0, 0]));
    let mut body = be(&[xid, 0, 2, prog, vers, proc_, 1, cred.len() as u32]);
    body.extend(cred);
    body.extend(be(&[0, 0]));
    body.extend_from_slice(args);
    let mut v = (body.len() as u32 | 0x8000_0000).to_be_bytes().to_vec();
    v.extend(body);
    v
}

/// Sends `calls` from `from` (a local address) to the server and returns each reply's
/// first five words after the record mark: xid, MSG_REPLY, reply_stat, then
/// reject_stat and auth_stat for a denied reply.
async fn exchange(server: SocketAddr, from: &str, calls: &[Vec<u8>]) -> Vec<[u32; 5]> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(server).await.unwrap();
    let mut out = Vec::new();
    for c in calls {
        s.write_all(c).await.unwrap();
        let mut mark = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut mark))
            .await
            .expect("a reply within 5 s")
            .unwrap();
        let len = (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize;
        let mut r = vec![0u8; len];
        s.read_exact(&mut r).await.unwrap();
        let w = |i: usize| {
            r.get(i * 4..i * 4 + 4)
                .map_or(u32::MAX, |b| u32::from_be_bytes(b.try_into().unwrap()))
        };
        out.push([w(0), w(1), w(2), w(3), w(4)]);
    }
    out
}

/// A client outside the allowlist gets MSG_DENIED / AUTH_ERROR / AUTH_TOOWEAK for every
/// call — NFS NULL, MOUNT MNT, portmapper GETPORT, and a WRITE with a valid handle — and
/// no backend data operation runs; the same calls from an allowed address are served.
#[tokio::test]
async fn a_client_outside_the_allowlist_gets_auth_error_and_nothing_else() {
    let fs = MemFs::new();
    let (a, fh) = fs
        .create(&ROOT, Ino::ROOT, n("f"), 0o666, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    fs.release(&ROOT, a.ino, fh).await.unwrap();
    let spy = Arc::new(common::spy(fs));
    let config = NfsConfig {
        allow_clients: vec!["127.0.0.2/32".parse::<ClientNet>().unwrap()],
        credentials: Credentials::FromClient { anonymous: NOBODY },
        ..NfsConfig::default()
    };
    let server = common::serve(Arc::clone(&spy), config);
    let handle = vfs_core::fh::Generation::of(&*spy).handle(a.ino);
    let mut write_args = be(&[handle.as_bytes().len() as u32]);
    write_args.extend_from_slice(handle.as_bytes());
    write_args.resize(write_args.len().div_ceil(4) * 4, 0);
    write_args.extend(be(&[0, 0, 4, 2, 4]));
    write_args.extend_from_slice(b"XXXX");
    let mut mnt_args = be(&[1]);
    mnt_args.extend_from_slice(b"/\0\0\0");
    let calls = [
        record(1, 100_003, 3, 0, &[]),
        record(2, 100_005, 3, 1, &mnt_args),
        record(3, 100_000, 2, 3, &be(&[100_003, 3, 6, 0])),
        record(4, 100_003, 3, 7, &write_args),
    ];
    let refused = exchange(server.addr, "127.0.0.1", &calls).await;
    for (i, r) in refused.iter().enumerate() {
        // xid, REPLY, MSG_DENIED, AUTH_ERROR, AUTH_TOOWEAK
        assert_eq!(*r, [i as u32 + 1, 1, 1, 1, 5], "call {} from 127.0.0.1", i + 1);
    }
    assert_eq!(
        spy.hooks.take_log(),
        Vec::<String>::new(),
        "no backend data operation ran"
    );

    let allowed = exchange(server.addr, "127.0.0.2", &calls).await;
    for (i, r) in allowed.iter().enumerate() {
        assert_eq!(
            r[..4],
            [i as u32 + 1, 1, 0, 0],
            "call {} from 127.0.0.2: MSG_ACCEPTED",
            i + 1
        );
    }
    assert!(
        spy.hooks.take_log().iter().any(|l| l.contains("write")),
        "the allowed WRITE reached the backend"
    );
}
