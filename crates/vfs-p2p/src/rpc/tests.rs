//! Calls over real loopback links: matching, payloads, notifications, hostile frames,
//! dead links.

use std::net::SocketAddr;
use std::time::Instant;

use vfs_core::{Ino, Name};

use super::*;
use crate::identity::{Allowlist, Keypair};
use crate::transport::noise::{NoiseRx, NoiseTcp, NoiseTx};
use crate::transport::{Listener, Transport};

/// Answers `Read` with `size` bytes of `offset as u8`, `Lookup` with EINVAL for names
/// `Name::new` refuses (what the exporter does), `Getattr` with `Unit`, `Fsync` never.
struct TestHandler;

impl Handler for TestHandler {
    async fn handle(
        &self,
        _peer: PublicKey,
        req: Request,
        body: crate::wire::Payload,
    ) -> Result<(Reply, Bytes), Errno> {
        match req.op {
            Op::Read { offset, size, .. } => Ok((
                Reply::Bytes { len: size },
                Bytes::from(vec![offset as u8; size as usize]),
            )),
            Op::Write { len, .. } => {
                assert_eq!(body.len(), len as usize);
                Ok((Reply::Written(len), Bytes::new()))
            }
            Op::Lookup { name, .. } => match Name::new(&name) {
                Ok(_) => Err(Errno::ENOENT),
                Err(e) => Err(e.errno()),
            },
            Op::Getattr { .. } => Ok((Reply::Unit, Bytes::new())),
            Op::Fsync { .. } => std::future::pending().await,
            _ => Err(Errno::ENOSYS),
        }
    }
}

struct Setup {
    server_key: Arc<Keypair>,
    client_key: Arc<Keypair>,
    listener: crate::transport::noise::NoiseListener,
}

async fn setup() -> Setup {
    let server_key = Arc::new(Keypair::generate().unwrap());
    let client_key = Arc::new(Keypair::generate().unwrap());
    let listener = NoiseTcp::new(server_key.clone())
        .listen(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Allowlist::new([client_key.public()]),
        )
        .await
        .unwrap();
    Setup {
        server_key,
        client_key,
        listener,
    }
}

impl Setup {
    async fn link(
        &mut self,
        cfg: LinkConfig,
    ) -> (Link<NoiseTx, NoiseRx>, ServerLink, JoinHandle<Result<(), LinkFailure>>) {
        let t = NoiseTcp::new(self.client_key.clone());
        let (c, s) = tokio::join!(
            t.connect(self.listener.local_addr(), self.server_key.public()),
            self.listener.accept()
        );
        let (server, task) = serve_link(s.unwrap(), Arc::new(TestHandler), cfg);
        (c.unwrap(), server, task)
    }
}

fn getattr() -> Op {
    Op::Getattr { ino: Ino::ROOT }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_get_their_own_replies() {
    let mut s = setup().await;
    let (link, _server, _task) = s.link(LinkConfig::default()).await;
    let (client, _notes, _t) = RpcClient::start(link, LinkConfig::default());
    let mut calls = Vec::new();
    for i in 0..64u64 {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let size = (i as u32 * 37_001) % (3 << 20);
            let (reply, body) = client
                .call(
                    RequestCtx::ROOT,
                    Op::Read {
                        ino: Ino(2),
                        offset: i,
                        size,
                    },
                    Bytes::new(),
                )
                .await
                .unwrap();
            assert_eq!(reply, Reply::Bytes { len: size });
            assert_eq!(body.len(), size as usize);
            assert!(body.chunks().iter().flatten().all(|&b| b == i as u8));
            let data = Bytes::from(vec![1u8; (i as usize * 50_000) % (2 << 20)]);
            let len = data.len() as u32;
            let (reply, _) = client
                .call(
                    RequestCtx::ROOT,
                    Op::Write {
                        ino: Ino(2),
                        offset: 0,
                        append: false,
                        len,
                    },
                    data,
                )
                .await
                .unwrap();
            assert_eq!(reply, Reply::Written(len));
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stat_is_answered_while_bulk_reads_stream() {
    let mut s = setup().await;
    let (link, _server, _task) = s.link(LinkConfig::default()).await;
    let (client, _notes, _t) = RpcClient::start(link, LinkConfig::default());
    let bulk = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..64 {
                let op = Op::Read {
                    ino: Ino(2),
                    offset: i,
                    size: 4 << 20,
                };
                client.call(RequestCtx::ROOT, op, Bytes::new()).await.unwrap();
            }
        })
    };
    // Correctness only (timing is the benchmark's business): every stat completes while
    // the bulk stream is still running.
    let mut answered = 0;
    while !bulk.is_finished() && answered < 50 {
        let t = Instant::now();
        client.call(RequestCtx::ROOT, getattr(), Bytes::new()).await.unwrap();
        answered += 1;
        let _ = t.elapsed();
    }
    assert!(answered > 0);
    bulk.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_get_errors_and_the_link_keeps_serving() {
    let mut s = setup().await;
    let (link, _server, _task) = s.link(LinkConfig::default()).await;
    let (client, _notes, _t) = RpcClient::start(link, LinkConfig::default());
    for (name, errno) in [
        (&b".."[..], Errno::EINVAL),
        (b"../etc", Errno::EINVAL),
        (b"/", Errno::EINVAL),
        (b"a\0b", Errno::EINVAL),
        (&[b'x'; 300], Errno::ENAMETOOLONG),
        (b"fine", Errno::ENOENT),
    ] {
        let op = Op::Lookup {
            parent: Ino::ROOT,
            name: std::os::unix::ffi::OsStringExt::from_vec(name.to_vec()),
        };
        let err = client.call(RequestCtx::ROOT, op, Bytes::new()).await.unwrap_err();
        assert_eq!(err.errno(), errno, "{name:?}");
    }
    assert!(client.call(RequestCtx::ROOT, getattr(), Bytes::new()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_closes_only_its_link() {
    let mut s = setup().await;
    let (good, _gs, _gt) = s.link(LinkConfig::default()).await;
    let (good, _notes, _t) = RpcClient::start(good, LinkConfig::default());
    let garbage: [&[u8]; 4] = [
        b"\x01\x63garbage kind",
        b"\x09\x01wrong version",
        // A write declaring more than MAX_IO.
        &{
            let mut f = Frame::Request {
                id: 1,
                req: Request {
                    ctx: RequestCtx::ROOT,
                    op: Op::Write {
                        ino: Ino(2),
                        offset: 0,
                        append: false,
                        len: 1,
                    },
                },
            }
            .encode();
            let n = f.len();
            f[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
            f
        },
        // Data for no pending payload.
        &[&crate::wire::data_header(77)[..], b"xyz"].concat(),
    ];
    for bad in garbage {
        let (mut raw, _server, task) = s.link(LinkConfig::default()).await;
        raw.tx.push(&[bad]).unwrap();
        raw.tx.flush().await.unwrap();
        // The server answers with a goaway naming the reason, then closes.
        let f = raw.rx.recv().await.unwrap().unwrap();
        let Ok(Frame::Goaway { reason }) = Frame::decode(f) else {
            panic!("expected a goaway")
        };
        assert!(reason.starts_with("bad frame"), "{reason}");
        assert!(matches!(raw.rx.recv().await, Ok(None) | Err(_)));
        assert!(matches!(task.await.unwrap(), Err(LinkFailure::Wire(_))));
        // The other peer is still served.
        assert!(good.call(RequestCtx::ROOT, getattr(), Bytes::new()).await.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_calls_fail_with_eio_after_the_timeout() {
    let mut s = setup().await;
    let cfg = LinkConfig {
        request_timeout: Duration::from_millis(300),
        ..LinkConfig::default()
    };
    let (link, _server, _task) = s.link(cfg.clone()).await;
    let (client, _notes, _t) = RpcClient::start(link, cfg);
    let t = Instant::now();
    let err = client
        .call(
            RequestCtx::ROOT,
            Op::Fsync {
                ino: Ino(2),
                datasync: false,
            },
            Bytes::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EIO);
    assert!(t.elapsed() < Duration::from_secs(5));
    // The link itself is fine.
    assert!(client.call(RequestCtx::ROOT, getattr(), Bytes::new()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_fail_with_eio_when_the_link_dies() {
    let mut s = setup().await;
    let (link, server, _task) = s.link(LinkConfig::default()).await;
    let (client, _notes, reader) = RpcClient::start(link, LinkConfig::default());
    let stuck = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call(
                    RequestCtx::ROOT,
                    Op::Fsync {
                        ino: Ino(2),
                        datasync: false,
                    },
                    Bytes::new(),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.close(); // the serving side goes away with a request in flight
    let err = tokio::time::timeout(Duration::from_secs(5), stuck)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EIO);
    let _ = reader.await;
    assert!(client.is_dead());
    let err = client
        .call(RequestCtx::ROOT, getattr(), Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EIO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_declared_dead() {
    let mut s = setup().await;
    let cfg = LinkConfig {
        keepalive: Duration::from_millis(50),
        dead_after: Duration::from_millis(400),
        ..LinkConfig::default()
    };
    // The far side completes the handshake and then never sends a byte.
    let t = NoiseTcp::new(s.client_key.clone());
    let (c, srv) = tokio::join!(
        t.connect(s.listener.local_addr(), s.server_key.public()),
        s.listener.accept()
    );
    let _silent = srv.unwrap();
    let (client, _notes, reader) = RpcClient::start(c.unwrap(), cfg);
    let failure = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(failure, LinkFailure::Silent(_)));
    assert!(client.is_dead());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_arrive_in_order() {
    let mut s = setup().await;
    let (link, server, _task) = s.link(LinkConfig::default()).await;
    let (_client, mut notes, _t) = RpcClient::start(link, LinkConfig::default());
    for batch in 0..50u8 {
        let changes = (0..100u8)
            .map(|i| WireChange::Remove {
                path: vec![b'a' + batch % 26, i],
            })
            .collect();
        server.notify(changes).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 5000 {
        got.extend(notes.recv().await.unwrap());
    }
    let want: Vec<WireChange> = (0..50u8)
        .flat_map(|b| {
            (0..100u8).map(move |i| WireChange::Remove {
                path: vec![b'a' + b % 26, i],
            })
        })
        .collect();
    assert_eq!(got, want);
}
