//! The P2P table of doc/BENCHMARKS.md, from one run on loopback: raw TCP, the encrypted
//! transport's bulk throughput, an on-demand sequential read of a 1 GiB file through
//! `RemoteFs` (its API) and through its FUSE mount, and the latency of a `stat` issued
//! while that read runs (p50, p99). Every throughput also as a ratio to raw TCP measured
//! in the same run; repetitions interleaved, medians reported.
//!
//! ```sh
//! scripts/bench-p2p                      # or:
//! cargo bench -p vfs-p2p --bench ondemand -- [--mib 1024] [--reps 5] [--no-fuse]
//! ```
//!
//! The owner serves a `LocalFs` directory holding the file (in the page cache: the limit
//! measured is the link and the far side, not a disk). Each repetition connects a fresh
//! far side, so every read is on demand (cold cache). The `stat` is a lookup of a name
//! that does not exist (a new one each time): never cached by the kernel or by
//! `RemoteFs`, so each one crosses the link, behind the bulk read. The FUSE rows need
//! root and /dev/fuse; they are left out (and say so) otherwise.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "transport.rs"]
mod transport;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vfs_core::localfs::LocalFs;
use vfs_core::{Ino, Name, OpenFlags, RequestCtx, VirtualFs};
use vfs_fuse::{Dispatch, MountOptions};
use vfs_p2p::exporter::ExportConfig;
use vfs_p2p::loopback::Loopback;
use vfs_p2p::remote::RemoteConfig;
use vfs_p2p::transport::noise::Suite;

const CTX: RequestCtx = RequestCtx::ROOT;

/// The far side's configuration: the defaults, or `P2P_READAHEAD` / `P2P_BLOCK_KIB`.
fn far_cfg() -> RemoteConfig {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    let mut cfg = RemoteConfig::default();
    if let Some(r) = env("P2P_READAHEAD") {
        cfg.readahead = r;
    }
    if let Some(b) = env("P2P_BLOCK_KIB") {
        cfg.block_size = b * 1024;
    }
    cfg
}
const READ: usize = 128 * 1024;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Whether this machine can mount FUSE filesystems; prints why not when it cannot.
fn fuse_usable() -> bool {
    vfs_fuse::probe::fuse_usable()
        .map_err(|e| eprintln!("SKIP: {e}; the FUSE rows are not measured"))
        .is_ok()
}

fn make_file(path: &Path, total: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(path).unwrap());
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..total / block.len() {
        for w in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    f.flush().unwrap();
    // Into the page cache.
    let mut r = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    while r.read(&mut buf).unwrap() > 0 {}
}

/// Reads the whole file through the `RemoteFs` API, while a task stats missing names.
fn api_read(lb: &Loopback<LocalFs>, total: usize, lat: &mut Vec<f64>) -> Duration {
    let remote = Arc::new(lb.connect(far_cfg()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (remote, stop) = (Arc::clone(&remote), Arc::clone(&stop));
        lb.runtime().spawn(async move {
            let mut out = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                i += 1;
                let name = format!("missing-{i}");
                let t = Instant::now();
                let r = remote.lookup(&CTX, Ino::ROOT, Name::new(name.as_ref()).unwrap()).await;
                out.push(t.elapsed().as_secs_f64() * 1e3);
                assert!(r.is_err());
            }
            out
        })
    };
    let took = lb.block_on(async {
        let f = remote
            .lookup(&CTX, Ino::ROOT, Name::new("big".as_ref()).unwrap())
            .await
            .unwrap();
        let fh = remote.open(&CTX, f.ino, OpenFlags::RDONLY).await.unwrap();
        let start = Instant::now();
        let mut off = 0usize;
        while off < total {
            let b = remote.read(&CTX, f.ino, fh, off as u64, READ as u32).await.unwrap();
            assert!(!b.is_empty(), "short file at {off}");
            off += b.len();
        }
        let took = start.elapsed();
        remote.release(&CTX, f.ino, fh).await.unwrap();
        took
    });
    stop.store(true, Ordering::Relaxed);
    lat.extend(lb.block_on(sampler).unwrap());
    took
}

/// Reads the whole file through a FUSE mount of a fresh `RemoteFs`, while a thread
/// stats missing names on the mount.
fn fuse_read(lb: &Loopback<LocalFs>, mnt: &Path, total: usize, lat: &mut Vec<f64>, opts: &MountOptions) -> Duration {
    let remote = Arc::new(lb.connect(far_cfg()).unwrap());
    let mount = vfs_fuse::mount(Arc::clone(&remote), mnt, opts).unwrap();
    remote.set_invalidator(mount.invalidator());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, mnt) = (Arc::clone(&stop), mnt.to_path_buf());
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                i += 1;
                let p = mnt.join(format!("missing-{i}"));
                let t = Instant::now();
                let r = std::fs::symlink_metadata(&p);
                out.push(t.elapsed().as_secs_f64() * 1e3);
                assert!(r.is_err());
            }
            out
        })
    };
    let mut f = std::fs::File::open(mnt.join("big")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut got = 0usize;
    while got < total {
        let n = f.read(&mut buf).unwrap();
        assert!(n > 0, "short file at {got}");
        got += n;
    }
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    lat.extend(sampler.join().unwrap());
    drop(f);
    mount.unmount().unwrap();
    took
}

fn main() {
    let mut mib = 1024usize;
    let mut reps = 5usize;
    let mut fuse = true;
    let mut dispatch = Dispatch::Spawn;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mib" => mib = args.next().and_then(|v| v.parse().ok()).expect("--mib N"),
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--no-fuse" => fuse = false,
            "--threads" => dispatch = Dispatch::Threads,
            _ => {} // cargo bench passes --bench
        }
    }
    let fuse = fuse && fuse_usable();
    let total = mib << 20;
    let tmp = tempfile::Builder::new().prefix("bench-p2p").tempdir().unwrap();
    let (share, mnt) = (tmp.path().join("share"), tmp.path().join("mnt"));
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    make_file(&share.join("big"), total);
    let lb = Loopback::serve(LocalFs::new(&share).unwrap(), ExportConfig::trusted()).unwrap();
    let opts = MountOptions {
        dispatch,
        session_threads: Some(4),
        ..MountOptions::default()
    };
    // The bench's own runtime for the transport rows (2 workers, as the transport bench).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let gbs = |d: Duration| total as f64 / d.as_secs_f64() / 1e9;
    let (mut raw, mut noise, mut api, mut mount) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut api_lat, mut mount_lat) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        raw.push(gbs(rt.block_on(transport::raw_tcp(total))));
        noise.push(gbs(rt.block_on(transport::noise_frames(Suite::AesGcm, total))));
        api.push(gbs(api_read(&lb, total, &mut api_lat)));
        if fuse {
            mount.push(gbs(fuse_read(&lb, &mnt, total, &mut mount_lat, &opts)));
        }
        eprintln!("repetition {} of {reps} done", rep + 1);
    }
    let r = median(raw.clone());
    println!("P2P on loopback, {mib} MiB one way, median of {reps} (min–max), ratios to raw TCP of this run");
    println!();
    println!("| path | median GB/s | min–max GB/s | vs raw TCP |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, v: &[f64]| {
        if v.is_empty() {
            println!("| {name} | (not run: needs root and /dev/fuse) | | |");
            return;
        }
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        let m = median(v.to_vec());
        println!("| {name} | {m:.2} | {min:.2}–{max:.2} | {:.2}x |", m / r);
    };
    row("raw TCP (256 KiB writes)", &raw);
    row("encrypted transport (Noise, AES-256-GCM, in place)", &noise);
    row("on-demand read, RemoteFs API (128 KiB reads)", &api);
    row("on-demand read, FUSE mount of RemoteFs (1 MiB reads)", &mount);
    println!();
    println!("| stat during the read | samples | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    let n = api_lat.len();
    println!(
        "| RemoteFs API (lookup of a missing name) | {n} | {:.2} | {:.2} |",
        percentile(&mut api_lat, 0.5),
        percentile(&mut api_lat, 0.99)
    );
    if fuse {
        let n = mount_lat.len();
        println!(
            "| FUSE mount (stat of a missing name) | {n} | {:.2} | {:.2} |",
            percentile(&mut mount_lat, 0.5),
            percentile(&mut mount_lat, 0.99)
        );
    }
}
