//! Malformed input, over raw TCP: truncated records, huge fragment lengths, bad XDR,
//! handles of the wrong length, version or generation, absurd counts, garbage. Each must
//! get an error reply or a closed connection within a few seconds — never a panic, never a
//! hang — while a well-behaved client on another connection keeps being served.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nfs3_client::nfs3_types::nfs3::{GETATTR3args, GETATTR3res, nfs_fh3};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vfs_core::fh::{FileHandle, Generation};
use vfs_core::memfs::MemFs;
use vfs_core::{Ino, OpenFlags, RequestCtx, VirtualFs};
use vfs_nfs::NfsConfig;

const NFS: u32 = 100_003;
const MOUNT: u32 = 100_005;
const WAIT: Duration = Duration::from_secs(5);

/// What the server did with a message.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A reply: its bytes after the record mark.
    Reply(Vec<u8>),
    /// The connection was closed.
    Closed,
}

impl Outcome {
    /// `(xid, reply_stat, accept_or_reject_stat, rest)` of a reply.
    fn parts(&self) -> (u32, u32, u32, Vec<u8>) {
        let Outcome::Reply(r) = self else {
            panic!("expected a reply, got {self:?}")
        };
        let w = |i: usize| u32::from_be_bytes(r[i..i + 4].try_into().unwrap());
        if w(8) == 0 {
            // MSG_ACCEPTED: verifier (flavor, empty body), then accept_stat.
            (w(0), 0, w(20), r[24..].to_vec())
        } else {
            (w(0), 1, w(12), r[16..].to_vec())
        }
    }

    /// The accept_stat of an accepted reply.
    fn accept_stat(&self) -> u32 {
        let (_, reply_stat, stat, _) = self.parts();
        assert_eq!(reply_stat, 0, "expected MSG_ACCEPTED: {self:?}");
        stat
    }

    /// The nfsstat3 of a successful NFS reply.
    fn nfsstat(&self) -> u32 {
        assert_eq!(self.accept_stat(), 0, "expected SUCCESS: {self:?}");
        let (_, _, _, rest) = self.parts();
        u32::from_be_bytes(rest[..4].try_into().unwrap())
    }
}

fn be(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

fn opaque(b: &[u8]) -> Vec<u8> {
    let mut v = be(&[b.len() as u32]);
    v.extend_from_slice(b);
    v.resize(v.len() + (4 - b.len() % 4) % 4, 0);
    v
}

/// A call header (AUTH_UNIX root) followed by `args`, without the record mark.
fn call(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut cred = be(&[1]);
    cred.extend(opaque(b"host"));
    cred.extend(be(&[0, 0, 0]));
    let mut v = be(&[xid, 0, 2, prog, vers, proc_, 1]);
    v.extend(opaque(&cred));
    v.extend(be(&[0, 0]));
    v.extend_from_slice(args);
    v
}

fn record(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32 | 0x8000_0000).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Sends `bytes` on a new connection and reports what came back first.
async fn send(addr: std::net::SocketAddr, bytes: &[u8]) -> Outcome {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    next(&mut s).await
}

/// The next reply on `s`, or `Closed`; panics after `WAIT` (a hang).
async fn next(s: &mut TcpStream) -> Outcome {
    let got = tokio::time::timeout(WAIT, async {
        let mut mark = [0u8; 4];
        if s.read_exact(&mut mark).await.is_err() {
            return Outcome::Closed;
        }
        let len = (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize;
        let mut body = vec![0u8; len];
        match s.read_exact(&mut body).await {
            Ok(_) => Outcome::Reply(body),
            Err(_) => Outcome::Closed,
        }
    })
    .await;
    got.expect("the server neither answered nor closed the connection: a hang")
}

struct Fixture {
    server: common::ServerGuard,
    generation: Generation,
    root: Vec<u8>,
    file: Vec<u8>,
}

async fn fixture() -> Fixture {
    let fs = MemFs::new();
    let (a, fh) = fs
        .create(
            &RequestCtx::ROOT,
            Ino::ROOT,
            vfs_core::Name::from_bytes(b"f").unwrap(),
            0o644,
            0,
            OpenFlags::RDWR,
        )
        .await
        .unwrap();
    fs.write(&RequestCtx::ROOT, a.ino, fh, 0, &[7u8; 3 << 20])
        .await
        .unwrap();
    fs.release(&RequestCtx::ROOT, a.ino, fh).await.unwrap();
    let generation = Generation::of(&fs);
    let config = NfsConfig {
        record_timeout: Duration::from_secs(2),
        ..common::no_root_squash()
    };
    let server = common::serve(Arc::new(fs), config);
    Fixture {
        server,
        generation,
        root: generation.handle(Ino::ROOT).as_bytes().to_vec(),
        file: generation.handle(a.ino).as_bytes().to_vec(),
    }
}

/// A well-behaved client doing GETATTR on the root in a loop until stopped; returns how
/// many answers it got, and fails on any error.
fn bystander(addr: std::net::SocketAddr, root: Vec<u8>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut c = common::connect(addr, 0, 0).await;
        let served = AtomicU64::new(0);
        while !stop.load(Ordering::Relaxed) {
            let args = GETATTR3args {
                object: nfs_fh3 {
                    data: nfs3_client::nfs3_types::xdr_codec::Opaque::owned(root.clone()),
                },
            };
            let r = tokio::time::timeout(WAIT, c.getattr(&args))
                .await
                .expect("the well-behaved client was not served in time")
                .expect("the well-behaved client got an RPC error");
            assert!(matches!(r, GETATTR3res::Ok(_)), "{r:?}");
            served.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        served.into_inner()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_an_error_or_a_close_and_others_are_served() {
    let fx = fixture().await;
    let addr = fx.server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let good = bystander(addr, fx.root.clone(), Arc::clone(&stop));
    let mut report = Vec::new();
    let mut check = |what: &str, o: &Outcome, ok: bool| {
        let how = if let Outcome::Reply(_) = o { "reply" } else { "closed" };
        report.push(format!("{what}: {how}"));
        assert!(ok, "{what}: {o:?}");
    };

    // --- Record marking -----------------------------------------------------------------
    // A record that claims 2 GiB: closed before anything is allocated.
    let o = send(addr, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    check("fragment of 2^31-1 bytes", &o, o == Outcome::Closed);
    // Non-last fragments that add up to more than the limit.
    let mut v = Vec::new();
    for _ in 0..3 {
        v.extend_from_slice(&(600u32 << 10).to_be_bytes());
        v.resize(v.len() + (600 << 10), 0);
    }
    let o = send(addr, &v).await;
    check("fragments adding up to 1.8 MiB", &o, o == Outcome::Closed);
    // Truncated: a header for 100 bytes, 10 of them, then silence (closed after the
    // record timeout) or a close.
    let o = send(addr, &[&(100u32 | 0x8000_0000).to_be_bytes()[..], &[0; 10]].concat()).await;
    check("record cut short, peer silent", &o, o == Outcome::Closed);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0x80, 0, 0, 40, 0, 0]).await.unwrap();
    s.shutdown().await.unwrap();
    let o = next(&mut s).await;
    check("record cut short, peer closed", &o, o == Outcome::Closed);
    // Not a call: too short to hold an xid and a message type; a REPLY.
    let o = send(addr, &record(&[1, 2, 3, 4])).await;
    check("record of 4 bytes", &o, o == Outcome::Closed);
    let o = send(addr, &record(&be(&[9, 1, 0, 0]))).await;
    check("a REPLY sent to the server", &o, o == Outcome::Closed);

    // --- RPC header ---------------------------------------------------------------------
    let mut hdr = call(1, NFS, 3, 0, &[]);
    hdr[8..12].copy_from_slice(&3u32.to_be_bytes());
    let o = send(addr, &record(&hdr)).await;
    check("rpcvers 3 (RPC_MISMATCH)", &o, o.parts().1 == 1 && o.parts().2 == 0);
    let o = send(addr, &record(&call(2, 100_227, 3, 0, &[]))).await;
    check("unknown program (PROG_UNAVAIL)", &o, o.accept_stat() == 1);
    let o = send(addr, &record(&call(3, NFS, 4, 0, &[]))).await;
    check("NFS version 4 (PROG_MISMATCH)", &o, o.accept_stat() == 2);
    let o = send(addr, &record(&call(4, NFS, 3, 99, &[]))).await;
    check("procedure 99 (PROC_UNAVAIL)", &o, o.accept_stat() == 3);
    let mut gss = call(5, NFS, 3, 0, &[]);
    gss[24..28].copy_from_slice(&6u32.to_be_bytes());
    let o = send(addr, &record(&gss)).await;
    check(
        "RPCSEC_GSS credential (AUTH_ERROR)",
        &o,
        o.parts().1 == 1 && o.parts().2 == 1,
    );
    let mut cred = be(&[1]);
    cred.extend(opaque(b"h"));
    cred.extend(be(&[0, 0, 17]));
    cred.extend(be(&[0; 17]));
    let mut v = be(&[6, 0, 2, NFS, 3, 0, 1]);
    v.extend(opaque(&cred));
    v.extend(be(&[0, 0]));
    let o = send(addr, &record(&v)).await;
    check(
        "AUTH_UNIX with 17 groups (AUTH_ERROR)",
        &o,
        o.parts().1 == 1 && o.parts().2 == 1,
    );

    // --- Arguments ----------------------------------------------------------------------
    let o = send(addr, &record(&call(7, NFS, 3, 1, &be(&[1000])))).await;
    check(
        "GETATTR with a handle claiming 1000 bytes (GARBAGE_ARGS)",
        &o,
        o.accept_stat() == 4,
    );
    let o = send(addr, &record(&call(8, NFS, 3, 1, &[]))).await;
    check("GETATTR without arguments (GARBAGE_ARGS)", &o, o.accept_stat() == 4);
    let mut trailing = opaque(&fx.root);
    trailing.extend(be(&[0]));
    let o = send(addr, &record(&call(9, NFS, 3, 1, &trailing))).await;
    check("GETATTR with trailing bytes (GARBAGE_ARGS)", &o, o.accept_stat() == 4);
    let mut w = opaque(&fx.file);
    w.extend(be(&[0, 0, 0, 5, 2, u32::MAX]));
    let o = send(addr, &record(&call(10, NFS, 3, 7, &w))).await;
    check("WRITE whose data claims 4 GiB (GARBAGE_ARGS)", &o, o.accept_stat() == 4);
    let mut w = opaque(&fx.file);
    w.extend(be(&[0, 0, 100, 2]));
    w.extend(opaque(b"abc"));
    let o = send(addr, &record(&call(11, NFS, 3, 7, &w))).await;
    check("WRITE count 100 with 3 bytes (NFS3ERR_INVAL)", &o, o.nfsstat() == 22);
    let o = send(addr, &record(&call(12, MOUNT, 3, 1, &opaque(&[b'/'; 2000])))).await;
    check("MNT of a 2000-byte path (GARBAGE_ARGS)", &o, o.accept_stat() == 4);

    // --- Handles ------------------------------------------------------------------------
    for (what, fh) in [
        ("empty handle", vec![]),
        ("16-byte handle", vec![1; 16]),
        ("64 bytes of 0xff", vec![0xff; 64]),
        ("handle of version 2", {
            let mut h = fx.file.clone();
            h[0] = 2;
            h
        }),
        ("handle with a reserved byte set", {
            let mut h = fx.file.clone();
            h[3] = 1;
            h
        }),
    ] {
        let o = send(addr, &record(&call(13, NFS, 3, 1, &opaque(&fh)))).await;
        check(
            &format!("GETATTR, {what} (NFS3ERR_BADHANDLE)"),
            &o,
            o.nfsstat() == 10001,
        );
    }
    let foreign = Generation::from_source_id("another source").handle(Ino(2));
    let o = send(addr, &record(&call(14, NFS, 3, 1, &opaque(foreign.as_bytes())))).await;
    check(
        "GETATTR, handle of another source (NFS3ERR_STALE)",
        &o,
        o.nfsstat() == 70,
    );
    let gone = FileHandle::new(fx.generation, Ino(999_999));
    let o = send(addr, &record(&call(15, NFS, 3, 1, &opaque(gone.as_bytes())))).await;
    check("GETATTR, handle of no inode (NFS3ERR_STALE)", &o, o.nfsstat() == 70);

    // --- Absurd counts ------------------------------------------------------------------
    let mut r = opaque(&fx.file);
    r.extend(be(&[0, 0, u32::MAX]));
    let o = send(addr, &record(&call(16, NFS, 3, 6, &r))).await;
    let (_, _, _, rest) = o.parts();
    // status, post_op_attr (1 + 84 bytes), count, eof, data.
    let count = u32::from_be_bytes(rest[92..96].try_into().unwrap());
    check(
        &format!("READ of 4 GiB (OK, {count} bytes: clamped to rtmax)"),
        &o,
        o.nfsstat() == 0 && count == 1 << 20,
    );
    let mut r = opaque(&fx.file);
    r.extend(be(&[u32::MAX, u32::MAX, 10]));
    let o = send(addr, &record(&call(17, NFS, 3, 6, &r))).await;
    check("READ at offset 2^64-1 (OK, 0 bytes, eof)", &o, o.nfsstat() == 0);
    for (what, args, want) in [
        ("READDIR count 0 (NFS3ERR_TOOSMALL)", be(&[0, 0, 0, 0, 0]), 10005),
        ("READDIR count 4 GiB (OK, clamped)", be(&[0, 0, 0, 0, u32::MAX]), 0),
        (
            "READDIR from a cookie far past the end (OK, eof)",
            be(&[u32::MAX, 7, 0, 0, 4096]),
            0,
        ),
        (
            "READDIRPLUS maxcount 0 (NFS3ERR_TOOSMALL)",
            be(&[0, 0, 0, 0, 4096, 0]),
            10005,
        ),
        (
            "READDIRPLUS dircount 0, maxcount 4 GiB (OK)",
            be(&[0, 0, 0, 0, 0, u32::MAX]),
            0,
        ),
    ] {
        let proc_ = if what.starts_with("READDIRPLUS") { 17 } else { 16 };
        let mut a = opaque(&fx.root);
        a.extend(args);
        let o = send(addr, &record(&call(18, NFS, 3, proc_, &a))).await;
        check(what, &o, o.nfsstat() == want);
    }

    // --- Pipelining: 2,000 calls sent without reading a reply; all answered -------------
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut burst = Vec::new();
    for xid in 0..2000u32 {
        burst.extend(record(&call(xid, NFS, 3, 1, &opaque(&fx.root))));
    }
    let (mut rd, mut wr) = s.split();
    let writer = async {
        wr.write_all(&burst).await.unwrap();
    };
    let reader = async {
        let mut n = 0;
        let mut buf = vec![0u8; 64 << 10];
        let mut got = Vec::new();
        while n < 2000 {
            let k = tokio::time::timeout(WAIT, rd.read(&mut buf))
                .await
                .expect("hang")
                .unwrap();
            assert!(k > 0, "closed after {n} replies");
            got.extend_from_slice(&buf[..k]);
            while got.len() >= 4 {
                let len = (u32::from_be_bytes(got[..4].try_into().unwrap()) & 0x7fff_ffff) as usize;
                if got.len() < 4 + len {
                    break;
                }
                got.drain(..4 + len);
                n += 1;
            }
        }
        n
    };
    let ((), n) = tokio::join!(writer, reader);
    report.push(format!("2,000 pipelined GETATTRs: {n} replies"));

    stop.store(true, Ordering::Relaxed);
    let served = good.await.expect("the well-behaved client panicked");
    for line in &report {
        println!("malformed: {line}");
    }
    println!("malformed: meanwhile a well-behaved client was served {served} times, without an error");
    assert!(served > 10);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Garbage on the socket: random bytes, random records, and valid headers with random
    /// arguments for every procedure. An error reply or a close, every time, and the server
    /// still answers a good call afterwards.
    #[test]
    fn garbage_never_hangs_or_kills_the_server(
        raw in proptest::collection::vec(any::<u8>(), 0..600),
        args in proptest::collection::vec(any::<u8>(), 0..300),
        prog in prop_oneof![Just(NFS), Just(MOUNT), Just(100_000u32), any::<u32>()],
        proc_ in 0u32..24,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let fx = GARBAGE_FIXTURE.get_or_init(|| std::thread::spawn(|| {
                tokio::runtime::Runtime::new().unwrap().block_on(fixture())
            }).join().unwrap());
            let addr = fx.server.addr;
            let vers = if prog == 100_000 { 2 } else { 3 };
            for bytes in [raw.clone(), record(&raw), record(&call(1, prog, vers, proc_, &args))] {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(&bytes).await.unwrap();
                s.shutdown().await.unwrap();
                // Every reply until the close; each within WAIT.
                while let Outcome::Reply(_) = next(&mut s).await {}
            }
            let o = send(addr, &record(&call(2, NFS, 3, 1, &opaque(&fx.root)))).await;
            assert_eq!(o.nfsstat(), 0, "the server stopped answering");
        });
    }
}

static GARBAGE_FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
