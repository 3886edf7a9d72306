//! Transport throughput on loopback, client and server in one process: raw TCP against
//! the encrypted candidates, each the median of several repetitions of one bulk transfer
//! in one direction. Prints one table; every figure also as a ratio to raw TCP measured
//! in the same run.
//!
//! ```sh
//! cargo bench -p vfs-p2p --bench transport -- [--mib 1024] [--reps 5] [--only NAME]
//! ```
//!
//! Candidates:
//! - `raw TCP`: 256 KiB writes and reads, no framing (the limit).
//! - `noise aesgcm (in place)`: this crate's `NoiseTcp` (the transport in use): frames
//!   of one data chunk, sealed in place with ring's AES-256-GCM.
//! - `noise chachapoly (in place)`: the same with ring's ChaCha20-Poly1305.
//! - `noise aesgcm + mux + wire`: the full sending path: 1 MiB bulk replies through the
//!   `Outbox` and its writer, decoded and reassembled on the far side.
//! - `snow transport, ring aesgcm` / `snow transport, default chachapoly`: snow's own
//!   `TransportState` (payload copied into a message buffer, then sealed), with the ring
//!   resolver and with snow's pure-Rust default resolver: what the in-place design saves.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vfs_p2p::identity::{Allowlist, Keypair};
use vfs_p2p::mux::{Outbox, run_writer};
use vfs_p2p::transport::noise::{NoiseTcp, Suite};
use vfs_p2p::transport::{FrameRx, FrameTx, Listener, Transport};
use vfs_p2p::wire::{DATA_HEADER_LEN, Frame, MAX_CHUNK, Message, Reassembler, Reply, data_header};

const BUF: usize = 256 * 1024;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind(loopback()).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    let (c, (s, _)) = (c.expect("connect"), s.expect("accept"));
    c.set_nodelay(true).expect("nodelay");
    s.set_nodelay(true).expect("nodelay");
    (c, s)
}

async fn raw_tcp(total: usize) -> Duration {
    let (mut c, mut s) = tcp_pair().await;
    let start = Instant::now();
    let send = tokio::spawn(async move {
        let buf = vec![0x5au8; BUF];
        let mut left = total;
        while left > 0 {
            let n = left.min(BUF);
            c.write_all(&buf[..n]).await.expect("write");
            left -= n;
        }
        c
    });
    let mut buf = vec![0u8; BUF];
    let mut got = 0;
    while got < total {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0);
        got += n;
    }
    let elapsed = start.elapsed();
    drop(send.await);
    elapsed
}

async fn noise_link(
    suite: Suite,
) -> (
    vfs_p2p::transport::Link<vfs_p2p::transport::noise::NoiseTx, vfs_p2p::transport::noise::NoiseRx>,
    vfs_p2p::transport::Link<vfs_p2p::transport::noise::NoiseTx, vfs_p2p::transport::noise::NoiseRx>,
) {
    let sk = Arc::new(Keypair::generate().expect("key"));
    let ck = Arc::new(Keypair::generate().expect("key"));
    let server = NoiseTcp::new(sk.clone()).with_suite(suite);
    let client = NoiseTcp::new(ck.clone()).with_suite(suite);
    let mut l = server
        .listen(loopback(), Allowlist::new([ck.public()]))
        .await
        .expect("listen");
    let addr = l.local_addr();
    let (c, s) = tokio::join!(client.connect(addr, sk.public()), l.accept());
    (c.expect("connect"), s.expect("accept"))
}

/// Data frames of one chunk each, straight through the transport.
async fn noise_frames(suite: Suite, total: usize) -> Duration {
    let (c, mut s) = noise_link(suite).await;
    let start = Instant::now();
    let mut tx = c.tx;
    let send = tokio::spawn(async move {
        let chunk = vec![0x5au8; MAX_CHUNK];
        let mut left = total;
        while left > 0 {
            let n = left.min(MAX_CHUNK);
            tx.push(&[&data_header(1), &chunk[..n]]).expect("push");
            if tx.buffered() >= BUF {
                tx.flush().await.expect("flush");
            }
            left -= n;
        }
        tx.flush().await.expect("flush");
        tx
    });
    let mut got = 0;
    while got < total {
        let f = s.rx.recv().await.expect("recv").expect("frame");
        got += f.len() - DATA_HEADER_LEN;
    }
    let elapsed = start.elapsed();
    drop(send.await);
    elapsed
}

/// The full path: bulk replies of 1 MiB through the outbox, decoded and reassembled.
async fn noise_mux(total: usize) -> Duration {
    const MSG: usize = 1 << 20;
    let (c, mut s) = noise_link(Suite::AesGcm).await;
    let outbox = Outbox::new(16 << 20);
    let writer = tokio::spawn(run_writer(outbox.clone(), c.tx));
    let start = Instant::now();
    let producer = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            let data = Bytes::from(vec![0x5au8; MSG]);
            let mut left = total;
            let mut id = 0u64;
            while left > 0 {
                let n = left.min(MSG);
                id += 1;
                let head = Frame::Reply {
                    id,
                    result: Ok(Reply::Bytes { len: n as u32 }),
                }
                .encode();
                outbox.bulk(id, head, data.slice(..n)).await.expect("bulk");
                left -= n;
            }
        })
    };
    let mut r = Reassembler::new(Default::default());
    let mut got = 0;
    while got < total {
        let f = s.rx.recv().await.expect("recv").expect("frame");
        if let Some(Message::Reply { body, .. }) = r.push(Frame::decode(f).expect("decode")).expect("reassemble") {
            got += body.len();
        }
    }
    let elapsed = start.elapsed();
    producer.await.expect("producer");
    outbox.close();
    drop(writer.await);
    elapsed
}

/// snow's own transport state over TCP, for comparison.
async fn snow_transport(resolver_default: bool, suite: Suite, total: usize) -> Duration {
    let params: snow::params::NoiseParams = suite.protocol_name().parse().expect("params");
    let builder = |p: snow::params::NoiseParams| {
        if resolver_default {
            snow::Builder::with_resolver(p, Box::new(snow::resolvers::DefaultResolver))
        } else {
            snow::Builder::new(p)
        }
    };
    let ik = builder(params.clone()).generate_keypair().expect("key");
    let rk = builder(params.clone()).generate_keypair().expect("key");
    let mut i = builder(params.clone())
        .local_private_key(&ik.private)
        .expect("key")
        .build_initiator()
        .expect("initiator");
    let mut r = builder(params)
        .local_private_key(&rk.private)
        .expect("key")
        .build_responder()
        .expect("responder");
    let (mut a, mut b) = ([0u8; 1024], [0u8; 1024]);
    let n = i.write_message(&[], &mut a).expect("m1");
    r.read_message(&a[..n], &mut b).expect("m1");
    let n = r.write_message(&[], &mut a).expect("m2");
    i.read_message(&a[..n], &mut b).expect("m2");
    let n = i.write_message(&[], &mut a).expect("m3");
    r.read_message(&a[..n], &mut b).expect("m3");
    let mut it = i.into_transport_mode().expect("transport");
    let mut rt = r.into_transport_mode().expect("transport");
    let (mut c, mut s) = tcp_pair().await;
    let start = Instant::now();
    let send = tokio::spawn(async move {
        let payload = vec![0x5au8; 65_519];
        let mut out = vec![0u8; BUF + 2 * 65_535];
        let mut msg = vec![0u8; 65_535];
        let mut fill = 0;
        let mut left = total;
        while left > 0 {
            let n = left.min(payload.len());
            let m = it.write_message(&payload[..n], &mut msg).expect("seal");
            out[fill..fill + 2].copy_from_slice(&(m as u16).to_be_bytes());
            out[fill + 2..fill + 2 + m].copy_from_slice(&msg[..m]);
            fill += 2 + m;
            if fill >= BUF {
                c.write_all(&out[..fill]).await.expect("write");
                fill = 0;
            }
            left -= n;
        }
        c.write_all(&out[..fill]).await.expect("write");
        c
    });
    let mut buf = BytesMut::with_capacity(BUF);
    let mut plain = vec![0u8; 65_535];
    let mut got = 0;
    while got < total {
        if buf.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            if buf.len() >= 2 + len {
                let rec = buf.split_to(2 + len);
                got += rt.read_message(&rec[2..], &mut plain).expect("open");
                continue;
            }
        }
        buf.reserve(BUF);
        let n = s.read_buf(&mut buf).await.expect("read");
        assert!(n > 0);
    }
    let elapsed = start.elapsed();
    drop(send.await);
    elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut mib = 1024usize;
    let mut reps = 5usize;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mib" => mib = args.next().and_then(|v| v.parse().ok()).expect("--mib N"),
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--only" => only = args.next(),
            _ => {} // cargo bench passes --bench
        }
    }
    let total = mib << 20;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    type Case = (&'static str, Box<dyn Fn(usize) -> Duration>);
    let h = rt.handle().clone();
    let cases: Vec<Case> = vec![
        (
            "raw TCP",
            Box::new({
                let h = h.clone();
                move |t| h.block_on(raw_tcp(t))
            }),
        ),
        (
            "noise aesgcm (in place)",
            Box::new({
                let h = h.clone();
                move |t| h.block_on(noise_frames(Suite::AesGcm, t))
            }),
        ),
        (
            "noise chachapoly (in place)",
            Box::new({
                let h = h.clone();
                move |t| h.block_on(noise_frames(Suite::ChaChaPoly, t))
            }),
        ),
        (
            "noise aesgcm + mux + wire",
            Box::new({
                let h = h.clone();
                move |t| h.block_on(noise_mux(t))
            }),
        ),
        (
            "snow transport, ring aesgcm",
            Box::new({
                let h = h.clone();
                move |t| h.block_on(snow_transport(false, Suite::AesGcm, t))
            }),
        ),
        (
            "snow transport, default chachapoly",
            Box::new({
                let h = h.clone();
                move |t| h.block_on(snow_transport(true, Suite::ChaChaPoly, t))
            }),
        ),
    ];
    // `--only TEXT` keeps raw TCP (the reference) and the candidates whose name contains TEXT.
    let cases: Vec<Case> = cases
        .into_iter()
        .enumerate()
        .filter(|(i, (name, _))| *i == 0 || only.as_deref().is_none_or(|o| name.contains(o)))
        .map(|(_, c)| c)
        .collect();
    // Interleave repetitions so that a noisy moment hurts every candidate alike.
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..reps {
        for (i, (_, run)) in cases.iter().enumerate() {
            let d = run(total);
            results[i].push(total as f64 / d.as_secs_f64() / 1e9);
        }
    }
    let raw = median(results[0].clone());
    println!("transport throughput, loopback, one process, {mib} MiB one way, median of {reps}");
    println!("| candidate | median GB/s | min–max GB/s | vs raw TCP |");
    println!("|---|---:|---:|---:|");
    for ((name, _), r) in cases.iter().zip(&results) {
        let min = r.iter().copied().fold(f64::INFINITY, f64::min);
        let max = r.iter().copied().fold(0.0, f64::max);
        let m = median(r.clone());
        println!("| {name} | {m:.2} | {min:.2}–{max:.2} | {:.2}x |", m / raw);
    }
}
