//! A hostile or unknown peer: an unknown key is refused in the handshake; names that would
//! leave the share (`..`, `/`), NUL, empty and over-long names get error replies and the
//! link goes on; a garbage frame or an oversized length closes that one link. Throughout,
//! the exporter keeps serving a well-behaved peer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::CTX;
use vfs_core::memfs::MemFs;
use vfs_core::{Errno, Ino, Name, OpenFlags, RequestCtx, VirtualFs};
use vfs_p2p::exporter::ExportConfig;
use vfs_p2p::identity::Keypair;
use vfs_p2p::loopback::Loopback;
use vfs_p2p::remote::{ConnectError, RemoteConfig, RemoteFs};
use vfs_p2p::rpc::{LinkConfig, RpcClient};
use vfs_p2p::transport::noise::NoiseTcp;
use vfs_p2p::transport::{FrameRx, FrameTx, Transport, TransportError};
use vfs_p2p::wire::{Op, Reply};

/// The well-behaved peer still works: a file round-trips.
fn good_peer_works(lb: &Loopback<MemFs>, good: &RemoteFs, name: &str) {
    lb.block_on(async {
        let (a, fh) = good
            .create(
                &CTX,
                Ino::ROOT,
                Name::new(name.as_ref()).unwrap(),
                0o644,
                0,
                OpenFlags::RDWR,
            )
            .await
            .unwrap();
        good.write(&CTX, a.ino, fh, 0, name.as_bytes()).await.unwrap();
        assert_eq!(&good.read(&CTX, a.ino, fh, 0, 100).await.unwrap()[..], name.as_bytes());
        good.release(&CTX, a.ino, fh).await.unwrap();
    });
}

#[test]
fn an_unknown_key_is_refused_in_the_handshake() {
    let lb = Loopback::serve(MemFs::new(), ExportConfig::default()).unwrap();
    let stranger = Arc::new(Keypair::generate().unwrap());
    let r = lb.block_on(RemoteFs::connect(
        NoiseTcp::new(stranger),
        lb.addr,
        lb.owner_key,
        RemoteConfig::default(),
    ));
    match r {
        Err(ConnectError::Transport(TransportError::Refused { .. })) => {}
        other => panic!("an unknown key got {other:?}"),
    }
    // Pinning the wrong owner key fails too.
    let wrong = Keypair::generate().unwrap().public();
    let r = lb.block_on(RemoteFs::connect(
        NoiseTcp::new(Arc::clone(&lb.peer)),
        lb.addr,
        wrong,
        RemoteConfig::default(),
    ));
    assert!(
        matches!(r, Err(ConnectError::Transport(TransportError::WrongPeer { .. }))),
        "{r:?}"
    );
}

#[test]
fn names_that_leave_the_share_are_errors_and_the_link_goes_on() {
    let lb = Loopback::serve(MemFs::new(), ExportConfig::default()).unwrap();
    let good = lb.connect(RemoteConfig::default()).unwrap();
    let link = lb
        .block_on(NoiseTcp::new(Arc::clone(&lb.peer)).connect(lb.addr, lb.owner_key))
        .unwrap();
    let client = lb
        .runtime()
        .block_on(async { RpcClient::start(link, LinkConfig::default()).0 });
    let bad: Vec<(OsString, Errno)> = vec![
        (OsString::from(".."), Errno::EINVAL),
        (OsString::from("."), Errno::EINVAL),
        (OsString::from("a/../../etc"), Errno::EINVAL),
        (OsString::from("/etc"), Errno::EINVAL),
        (OsString::new(), Errno::EINVAL),
        (OsString::from_vec(b"a\0b".to_vec()), Errno::EINVAL),
        (OsString::from("x".repeat(256)), Errno::ENAMETOOLONG),
        (OsString::from("y".repeat(4000)), Errno::ENAMETOOLONG),
    ];
    lb.block_on(async {
        for (name, want) in &bad {
            let ops = [
                Op::Lookup {
                    parent: Ino::ROOT,
                    name: name.clone(),
                },
                Op::Mkdir {
                    parent: Ino::ROOT,
                    name: name.clone(),
                    mode: 0o755,
                    umask: 0,
                },
                Op::Create {
                    parent: Ino::ROOT,
                    name: name.clone(),
                    mode: 0o644,
                    umask: 0,
                    flags: libc::O_RDWR,
                },
                Op::Rename {
                    parent: Ino::ROOT,
                    name: OsString::from("f"),
                    newparent: Ino::ROOT,
                    newname: name.clone(),
                    flags: 0,
                },
                Op::Symlink {
                    parent: Ino::ROOT,
                    name: name.clone(),
                    target: OsString::from("/etc/passwd"),
                },
            ];
            for op in ops {
                let what = format!("{op:?}");
                let r = client.call(RequestCtx::ROOT, op, Bytes::new()).await;
                assert_eq!(r.map(|_| ()).map_err(|e| e.errno()), Err(*want), "{what:.80}");
            }
        }
        // The link is still up: a good request is answered.
        let r = client
            .call(RequestCtx::ROOT, Op::Getattr { ino: Ino::ROOT }, Bytes::new())
            .await;
        assert!(matches!(r, Ok((Reply::Attr(_), _))), "{r:?}");
        // An unknown inode is stale, never something outside.
        let r = client
            .call(RequestCtx::ROOT, Op::Getattr { ino: Ino(987_654) }, Bytes::new())
            .await;
        assert!(r.is_err());
    });
    good_peer_works(&lb, &good, "after-names");
}

/// Sends one raw frame on a fresh authenticated link and says whether the exporter closed
/// the link afterwards.
fn raw_frame_closes_link(lb: &Loopback<MemFs>, frame: &[u8]) -> bool {
    lb.block_on(async {
        let mut link = NoiseTcp::new(Arc::clone(&lb.peer))
            .connect(lb.addr, lb.owner_key)
            .await
            .unwrap();
        link.tx.push(&[frame]).unwrap();
        link.tx.flush().await.unwrap();
        // The exporter answers with a goaway (maybe) and closes.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, link.rx.recv()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Ok(Err(_)) => return true,
                Err(_) => return false,
            }
        }
    })
}

#[test]
fn garbage_and_oversized_frames_close_only_their_link() {
    let lb = Loopback::serve(MemFs::new(), ExportConfig::default()).unwrap();
    let good = lb.connect(RemoteConfig::default()).unwrap();
    good_peer_works(&lb, &good, "before");

    let mut oversized_write = vec![1u8, 1];
    oversized_write.extend_from_slice(&7u64.to_le_bytes()); // id
    oversized_write.push(17); // write
    oversized_write.extend_from_slice(&[0; 12]); // uid, gid, pid
    oversized_write.extend_from_slice(&Ino::ROOT.0.to_le_bytes());
    oversized_write.extend_from_slice(&0u64.to_le_bytes()); // offset
    oversized_write.push(0); // append
    oversized_write.extend_from_slice(&u32::MAX.to_le_bytes()); // declared length
    let mut long_name = vec![1u8, 1];
    long_name.extend_from_slice(&8u64.to_le_bytes());
    long_name.push(2); // lookup
    long_name.extend_from_slice(&[0; 12]);
    long_name.extend_from_slice(&Ino::ROOT.0.to_le_bytes());
    long_name.extend_from_slice(&u16::MAX.to_le_bytes()); // name length past the frame
    long_name.extend_from_slice(b"abc");

    let cases: [(&str, Vec<u8>); 5] = [
        ("garbage", b"\x07\x99not a frame at all".to_vec()),
        ("unknown kind", vec![1, 200, 0, 0]),
        ("oversized write length", oversized_write),
        ("name length past the frame", long_name),
        ("data for no request", {
            let mut v = vec![1u8, 3];
            v.extend_from_slice(&9u64.to_le_bytes());
            v.extend_from_slice(b"stray bytes");
            v
        }),
    ];
    for (what, frame) in cases {
        assert!(raw_frame_closes_link(&lb, &frame), "{what}: the link stayed open");
        good_peer_works(&lb, &good, what.replace(' ', "-").as_str());
    }
}
