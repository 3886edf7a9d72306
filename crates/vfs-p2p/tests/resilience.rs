//! What the far side does when the link fails: calls end with `EIO` within a bounded time
//! (never hang, never return bytes that did not arrive, never report an unacknowledged
//! write as written), and the link is made again by itself once the owner is reachable.
//!
//! A small TCP proxy between the two sides plays the network: it can cut every
//! connection and refuse new ones, or hold them open and forward nothing (a silent peer).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use common::CTX;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vfs_core::memfs::MemFs;
use vfs_core::{Errno, Ino, Name, OpenFlags, VirtualFs};
use vfs_p2p::exporter::ExportConfig;
use vfs_p2p::loopback::{Loopback, TEST_PORTS};
use vfs_p2p::remote::{RemoteConfig, RemoteFs};
use vfs_p2p::rpc::LinkConfig;
use vfs_p2p::transport::noise::NoiseTcp;

const FORWARD: u8 = 0;
const CUT: u8 = 1;
const SILENT: u8 = 2;

struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    pumps: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(to: SocketAddr) -> Proxy {
        let mut listener = None;
        for port in TEST_PORTS.rev() {
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
                listener = Some(l);
                break;
            }
        }
        let listener = listener.expect("a free port for the proxy");
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let pumps: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (m, p) = (Arc::clone(&mode), Arc::clone(&pumps));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if m.load(Ordering::SeqCst) != FORWARD {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(to).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let a = tokio::spawn(pump(cr, sw, Arc::clone(&m)));
                let b = tokio::spawn(pump(sr, cw, Arc::clone(&m)));
                p.lock().extend([a.abort_handle(), b.abort_handle()]);
            }
        });
        Proxy { addr, mode, pumps }
    }

    /// Every connection is reset and new ones are refused.
    fn cut(&self) {
        self.mode.store(CUT, Ordering::SeqCst);
        for p in self.pumps.lock().drain(..) {
            p.abort();
        }
    }

    /// Connections stay open but nothing gets through.
    fn silence(&self) {
        self.mode.store(SILENT, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.cut();
        self.mode.store(FORWARD, Ordering::SeqCst);
    }
}

async fn pump(mut r: tokio::net::tcp::OwnedReadHalf, mut w: tokio::net::tcp::OwnedWriteHalf, mode: Arc<AtomicU8>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while mode.load(Ordering::SeqCst) == SILENT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if mode.load(Ordering::SeqCst) == CUT || w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn quick() -> RemoteConfig {
    RemoteConfig {
        link: LinkConfig {
            request_timeout: Duration::from_secs(3),
            keepalive: Duration::from_millis(200),
            dead_after: Duration::from_secs(1),
            ..LinkConfig::default()
        },
        down_wait: Duration::from_secs(1),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..RemoteConfig::default()
    }
}

fn setup() -> (Loopback<MemFs>, Proxy, RemoteFs, Ino, Vec<u8>) {
    let lb = Loopback::serve(MemFs::new(), ExportConfig::trusted()).unwrap();
    let proxy = lb.block_on(Proxy::start(lb.addr));
    let remote = lb
        .block_on(RemoteFs::connect(
            NoiseTcp::new(Arc::clone(&lb.peer)),
            proxy.addr,
            lb.owner_key,
            quick(),
        ))
        .unwrap();
    let data: Vec<u8> = (0..3 * (1 << 20) + 123).map(|i| (i % 251) as u8).collect();
    let ino = lb.block_on(async {
        let (a, fh) = remote
            .create(
                &CTX,
                Ino::ROOT,
                Name::new("f".as_ref()).unwrap(),
                0o644,
                0,
                OpenFlags::RDWR,
            )
            .await
            .unwrap();
        assert_eq!(
            remote.write(&CTX, a.ino, fh, 0, &data).await.unwrap() as usize,
            data.len()
        );
        remote.release(&CTX, a.ino, fh).await.unwrap();
        a.ino
    });
    (lb, proxy, remote, ino, data)
}

fn wait_connected(remote: &RemoteFs, limit: Duration) {
    let start = Instant::now();
    while !remote.is_connected() {
        assert!(
            start.elapsed() < limit,
            "the far side did not reconnect within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_cut_link_fails_calls_with_eio_in_bounded_time_then_reconnects_by_itself() {
    let (lb, proxy, remote, ino, data) = setup();
    let fh = lb.block_on(remote.open(&CTX, ino, OpenFlags::RDWR)).unwrap();
    proxy.cut();
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let read = lb.block_on(remote.read(&CTX, ino, fh, 1 << 20, 4096));
    assert_eq!(
        read.map(|b| b.len()).map_err(|e| e.errno()),
        Err(Errno::EIO),
        "read while the link is cut"
    );
    let write = lb.block_on(remote.write(&CTX, ino, fh, 0, b"lost"));
    assert_eq!(
        write.map_err(|e| e.errno()),
        Err(Errno::EIO),
        "a write nobody acknowledged"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "EIO took {:?}",
        start.elapsed()
    );

    proxy.restore();
    wait_connected(&remote, Duration::from_secs(5));
    // The handle opened before the cut still works; the bytes are the owner's.
    let back = lb.block_on(async {
        let mut out = Vec::new();
        loop {
            let b = remote.read(&CTX, ino, fh, out.len() as u64, 1 << 20).await.unwrap();
            if b.is_empty() {
                break out;
            }
            out.extend_from_slice(&b);
            assert!(out.len() <= data.len(), "read past the owner's end of file");
        }
    });
    assert_eq!(back.len(), data.len());
    assert!(
        back[4..] == data[4..],
        "bytes after the reconnection differ from the owner's"
    );
    lb.block_on(remote.release(&CTX, ino, fh)).unwrap();
}

#[test]
fn a_call_in_flight_when_the_peer_goes_silent_ends_with_eio() {
    let (lb, proxy, remote, ino, _data) = setup();
    let fh = lb.block_on(remote.open(&CTX, ino, OpenFlags::RDONLY)).unwrap();
    proxy.silence();
    let start = Instant::now();
    let r = lb.block_on(remote.read(&CTX, ino, fh, 2 << 20, 4096));
    assert_eq!(r.map(|b| b.len()).map_err(|e| e.errno()), Err(Errno::EIO));
    let took = start.elapsed();
    // Silence is noticed after `dead_after` (1 s here), at the latest the request timeout.
    assert!(took < Duration::from_secs(5), "EIO took {took:?}");
    eprintln!("silent peer: EIO after {took:?}");
    proxy.restore();
    wait_connected(&remote, Duration::from_secs(5));
    assert_eq!(lb.block_on(remote.read(&CTX, ino, fh, 0, 3)).unwrap().len(), 3);
}
