//! A hostile or unknown peer: an unknown key is refused in the handshake; names that would
//! leave the share (`..`, `/`), NUL, empty and over-long names get error replies and the
//! link goes on; a garbage frame or an oversized length closes that one link. Throughout,
//! the exporter keeps serving a well-behaved peer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::CTX;
use vfs_core::memfs::MemFs;
use vfs_core::{Ino, Name, OpenFlags, RequestCtx, VirtualFs};
use vfs_p2p::exporter::ExportConfig;
use vfs_p2p::identity::Keypair;
use vfs_p2p::loopback::Loopback;
use vfs_p2p::remote::{ConnectError, RemoteConfig, RemoteFs};
use vfs_p2p::rpc::{LinkConfig, RpcClient};
use vfs_p2p::transport::noise::NoiseTcp;
use vfs_p2p::transport::{Transport, TransportError};
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
    let lb = Loopback::serve(MemFs::new(), ExportConfig::trusted()).unwrap();
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
    let lb = Loopback::serve(MemFs::new(), ExportConfig::trusted()).unwrap();
    let good = lb.connect(RemoteConfig::default()).unwrap();
    let link = lb
        .block_on(NoiseTcp::new(Arc::clone(&lb.peer)).connect(lb.addr, lb.owner_key))
        .unwrap();
    let client = lb
        .runtime()
        .block_on(async { RpcClient::start(link, LinkConfig::default()).0 });
    lb.block_on(async {
        for (name, want) in &vfs_p2p::hostile::bad_names() {
            let ops = vfs_p2p::hostile::name_ops(name);
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
    lb.block_on(vfs_p2p::hostile::frame_closes_link(
        &NoiseTcp::new(Arc::clone(&lb.peer)),
        lb.addr,
        lb.owner_key,
        frame,
        Duration::from_secs(5),
    ))
    .unwrap()
}

#[test]
fn garbage_and_oversized_frames_close_only_their_link() {
    let lb = Loopback::serve(MemFs::new(), ExportConfig::trusted()).unwrap();
    let good = lb.connect(RemoteConfig::default()).unwrap();
    good_peer_works(&lb, &good, "before");

    let cases = vfs_p2p::hostile::bad_frames();
    for (what, frame) in cases {
        assert!(raw_frame_closes_link(&lb, &frame), "{what}: the link stayed open");
        good_peer_works(&lb, &good, what.replace(' ', "-").as_str());
    }
}
