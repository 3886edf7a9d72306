//! Sequential throughput through NFS (`nfs3_client` → this server → `LocalFs`) against the
//! same bytes through `LocalFs` directly (in-process `VirtualFs` calls), in 1 MiB calls.
//! Prints a table of MB/s and ratios; run by `scripts/bench-nfs`.
//!
//! - write, UNSTABLE + COMMIT: what libnfs and the Linux client do; one fsync at the end.
//!   Reference: direct writes, then one fsync.
//! - write, FILE_SYNC: every reply waits for the backend's fsync. Reference: direct
//!   writes with an fsync after each; the gap between the two write rows is the price of
//!   telling the truth per WRITE.
//! - read: from the page cache both ways (the file was just written).
//!
//! `VFS_NFS_BENCH_MIB` (default 256) sets the file size, `VFS_NFS_BENCH_ROUNDS` (3) the
//! rounds; each figure is the median. The server runs in a process of its own (this binary
//! again, two worker threads); the client and the direct calls share the bench's thread.

#![allow(clippy::unwrap_used, missing_docs)] // a bench: a failed unwrap is a failed run

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::TokioConnector;
use vfs_core::localfs::LocalFs;
use vfs_core::{Ino, Name, OpenFlags, RequestCtx, VirtualFs};
use vfs_nfs::{Credentials, NOBODY, NfsConfig, NfsServer};

const CHUNK: usize = 1 << 20;
const CTX: RequestCtx = RequestCtx::ROOT;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Direct: creates `name`, writes `mib` MiB, fsyncing after each chunk or once at the end.
async fn direct_write(fs: &LocalFs, name: &str, mib: usize, sync_each: bool) -> f64 {
    let _ = fs
        .unlink(&CTX, Ino::ROOT, Name::from_bytes(name.as_bytes()).unwrap())
        .await;
    let data = vec![0x5au8; CHUNK];
    let t = Instant::now();
    let (a, fh) = fs
        .create(
            &CTX,
            Ino::ROOT,
            Name::from_bytes(name.as_bytes()).unwrap(),
            0o644,
            0,
            OpenFlags::RDWR,
        )
        .await
        .unwrap();
    for i in 0..mib {
        fs.write(&CTX, a.ino, fh, (i * CHUNK) as u64, &data).await.unwrap();
        if sync_each {
            fs.fsync(&CTX, a.ino, fh, false).await.unwrap();
        }
    }
    if !sync_each {
        fs.fsync(&CTX, a.ino, fh, false).await.unwrap();
    }
    fs.release(&CTX, a.ino, fh).await.unwrap();
    t.elapsed().as_secs_f64()
}

async fn direct_read(fs: &LocalFs, name: &str, mib: usize) -> f64 {
    let a = fs
        .lookup(&CTX, Ino::ROOT, Name::from_bytes(name.as_bytes()).unwrap())
        .await
        .unwrap();
    let t = Instant::now();
    let fh = fs.open(&CTX, a.ino, OpenFlags::RDONLY).await.unwrap();
    let mut n = 0;
    for i in 0..mib {
        n += fs
            .read(&CTX, a.ino, fh, (i * CHUNK) as u64, CHUNK as u32)
            .await
            .unwrap()
            .len();
    }
    fs.release(&CTX, a.ino, fh).await.unwrap();
    assert_eq!(n, mib * CHUNK);
    t.elapsed().as_secs_f64()
}

type Client = nfs3_client::Nfs3Client<nfs3_client::tokio::TokioIo<tokio::net::TcpStream>>;

async fn nfs_client(addr: SocketAddr) -> (Client, nfs_fh3) {
    let conn = Nfs3ConnectionBuilder::new(TokioConnector, addr.ip().to_string(), "/")
        .mount_port(addr.port())
        .nfs3_port(addr.port())
        .connect_from_privileged_port(false)
        .credential(opaque_auth::auth_unix(&auth_unix {
            stamp: 0,
            machinename: Opaque::borrowed(b"bench"),
            uid: 0,
            gid: 0,
            gids: vec![],
        }))
        .mount()
        .await
        .unwrap();
    let root = conn.root_nfs_fh3();
    (conn.into_nfs3_client(), root)
}

fn dirop<'a>(root: &nfs_fh3, name: &'a str) -> diropargs3<'a> {
    diropargs3 {
        dir: root.clone(),
        name: filename3(Opaque::borrowed(name.as_bytes())),
    }
}

/// Through NFS: REMOVE, CREATE, `mib` WRITEs of 1 MiB with `stable`, COMMIT if UNSTABLE.
async fn nfs_write(c: &mut Client, root: &nfs_fh3, name: &str, mib: usize, stable: stable_how) -> f64 {
    let _ = c
        .remove(&REMOVE3args {
            object: dirop(root, name),
        })
        .await
        .unwrap();
    let data = vec![0x5au8; CHUNK];
    let t = Instant::now();
    let args = CREATE3args {
        where_: dirop(root, name),
        how: createhow3::UNCHECKED(sattr3::default()),
    };
    let ok = match c.create(&args).await.unwrap() {
        CREATE3res::Ok(ok) => ok,
        CREATE3res::Err((stat, _)) => panic!("CREATE failed: {stat}"),
    };
    let post_op_fh3::Some(fh) = ok.obj else {
        panic!("CREATE gave no handle")
    };
    for i in 0..mib {
        let args = WRITE3args {
            file: fh.clone(),
            offset: (i * CHUNK) as u64,
            count: CHUNK as u32,
            stable,
            data: Opaque::borrowed(&data),
        };
        let WRITE3res::Ok(ok) = c.write(&args).await.unwrap() else {
            panic!("WRITE failed")
        };
        assert_eq!(ok.count as usize, CHUNK);
    }
    if stable == stable_how::UNSTABLE {
        let args = COMMIT3args {
            file: fh,
            offset: 0,
            count: 0,
        };
        assert!(matches!(c.commit(&args).await.unwrap(), COMMIT3res::Ok(_)));
    }
    t.elapsed().as_secs_f64()
}

async fn nfs_read(c: &mut Client, root: &nfs_fh3, name: &str, mib: usize) -> f64 {
    let LOOKUP3res::Ok(ok) = c
        .lookup(&LOOKUP3args {
            what: dirop(root, name),
        })
        .await
        .unwrap()
    else {
        panic!("LOOKUP failed")
    };
    let t = Instant::now();
    let mut n = 0;
    for i in 0..mib {
        let args = READ3args {
            file: ok.object.clone(),
            offset: (i * CHUNK) as u64,
            count: CHUNK as u32,
        };
        let READ3res::Ok(r) = c.read(&args).await.unwrap() else {
            panic!("READ failed")
        };
        n += r.data.len();
    }
    assert_eq!(n, mib * CHUNK);
    t.elapsed().as_secs_f64()
}

const SERVE_ENV: &str = "VFS_NFS_BENCH_SERVE";

/// The server process: `LocalFs` over `dir`, on two worker threads, until killed.
fn serve(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fs = Arc::new(LocalFs::new(dir).unwrap());
        let server = NfsServer::bind(
            "127.0.0.1:0",
            fs,
            NfsConfig {
                credentials: Credentials::FromClient { anonymous: NOBODY },
                ..NfsConfig::default()
            },
        )
        .await
        .unwrap();
        println!("LISTENING {}", server.local_addr().unwrap());
        server.serve().await.unwrap();
    });
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, small.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mib = if smoke { 4 } else { env("VFS_NFS_BENCH_MIB", 256) };
    let rounds = if smoke {
        1
    } else {
        env("VFS_NFS_BENCH_ROUNDS", 3).max(1)
    };
    if let Ok(dir) = std::env::var(SERVE_ENV) {
        serve(&dir);
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = std::env::var("VFS_NFS_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    let dir = tempfile::tempdir_in(base).unwrap();
    // The server in a process of its own, as it would run: this bench binary again.
    let mut server = std::process::Command::new(std::env::current_exe().unwrap())
        .env(SERVE_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    let addr: SocketAddr = line.trim().strip_prefix("LISTENING ").unwrap().parse().unwrap();
    let rows = rt.block_on(async {
        let direct = LocalFs::new(dir.path()).unwrap();
        let (mut c, root) = nfs_client(addr).await;
        let mut t: [Vec<f64>; 6] = Default::default();
        for _ in 0..rounds {
            t[0].push(direct_write(&direct, "direct.bin", mib, false).await);
            t[1].push(nfs_write(&mut c, &root, "nfs.bin", mib, stable_how::UNSTABLE).await);
            t[2].push(direct_write(&direct, "direct.bin", mib, true).await);
            t[3].push(nfs_write(&mut c, &root, "nfs.bin", mib, stable_how::FILE_SYNC).await);
            t[4].push(direct_read(&direct, "direct.bin", mib).await);
            t[5].push(nfs_read(&mut c, &root, "nfs.bin", mib).await);
        }
        t.map(median)
    });
    let _ = server.kill();
    let _ = server.wait();
    let mbs = |secs: f64| (mib * CHUNK) as f64 / secs / 1e6;
    println!(
        "sequential, {mib} MiB in 1 MiB calls, median of {rounds}; NFS = nfs3_client -> vfs-nfs -> LocalFs over loopback TCP"
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "operation", "LocalFs MB/s", "NFS MB/s", "NFS/LocalFs"
    );
    for (label, d, n) in [
        ("write (UNSTABLE + COMMIT | one fsync)", rows[0], rows[1]),
        ("write (FILE_SYNC | fsync after each MiB)", rows[2], rows[3]),
        ("read (page cache)", rows[4], rows[5]),
    ] {
        println!("{label:<44} {:>12.0} {:>12.0} {:>8.2}", mbs(d), mbs(n), d / n);
    }
    println!(
        "cost of FILE_SYNC over NFS: {:.0} MB/s with FILE_SYNC vs {:.0} MB/s with UNSTABLE + COMMIT: {:.2}x the time",
        mbs(rows[3]),
        mbs(rows[1]),
        rows[3] / rows[1]
    );
}
