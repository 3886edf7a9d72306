//! The notification convergence property, end to end: random changes on the owner, a far
//! side that keeps its caches warm by walking the tree between rounds, and after the owner
//! goes quiet the far side's tree (names, types, sizes, bytes) equals the owner's.
//!
//! Two sources of change: a `LocalFs` share edited directly in the host directory (seen
//! through inotify), and a `MemFs` share changed by a second peer through the exporter.
//! Both include git's write-temp-then-rename and LFS's grow-then-rename, whose temps the
//! far side never sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Rng, Snapshot, diff, seeds, snapshot};
use vfs_core::localfs::LocalFs;
use vfs_core::memfs::MemFs;
use vfs_core::{Ino, OpenFlags, RenameFlags, VirtualFs};
use vfs_p2p::exporter::ExportConfig;
use vfs_p2p::exporter::watch::HostWatcher;
use vfs_p2p::loopback::Loopback;
use vfs_p2p::remote::RemoteConfig;

const DIRS: [&str; 4] = ["", "d1", "d1/d2", "d3"];
const NAMES: [&str; 5] = ["a", "b", "c", "pack", "index"];

/// Polls until the far side's snapshot equals the owner's; returns how long it took.
fn wait_converged(
    block_on: impl Fn() -> (Option<Snapshot>, Option<Snapshot>),
    limit: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::from("never compared");
    while start.elapsed() < limit {
        match block_on() {
            (Some(owner), Some(far)) if owner == far => return Ok(start.elapsed()),
            (Some(owner), Some(far)) => last = diff(&owner, &far),
            (o, f) => last = format!("a walk failed (owner ok: {}, far ok: {})", o.is_some(), f.is_some()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

fn host_op(rng: &mut Rng, root: &Path) {
    let dir = root.join(rng.pick(&DIRS));
    let name = *rng.pick(&NAMES);
    let path = dir.join(name);
    let other = root.join(rng.pick(&DIRS)).join(rng.pick(&NAMES));
    let size = match rng.below(10) {
        0 => 0,
        1 => 1 << 20 | rng.below(1 << 20) as usize, // more than one block
        _ => rng.below(70_000) as usize,
    };
    match rng.below(11) {
        0..=2 => {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(&path, rng.bytes(size));
        }
        3 => {
            // git: a temp the far side never sees, renamed into place.
            let _ = std::fs::create_dir_all(&dir);
            let tmp = dir.join(format!("tmp_pack_{}", rng.below(1000)));
            let _ = std::fs::write(&tmp, rng.bytes(size));
            let _ = std::fs::rename(&tmp, &path);
        }
        4 => {
            // LFS: grow an incomplete file in steps, then rename it.
            let _ = std::fs::create_dir_all(root.join("incomplete"));
            let tmp = root.join("incomplete").join(format!("obj{}", rng.below(1000)));
            for _ in 0..3 {
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&tmp) {
                    let _ = f.write_all(&rng.bytes(size / 3 + 1));
                }
            }
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::rename(&tmp, &path);
        }
        5 => {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&path) {
                let _ = f.write_all(&rng.bytes(size.min(5000)));
            }
        }
        6 => {
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                let _ = f.set_len(rng.below(40_000));
            }
        }
        7 => {
            let _ = std::fs::create_dir_all(other.parent().unwrap_or(root));
            let _ = std::fs::rename(&path, &other);
        }
        8 => {
            let _ = std::fs::remove_file(&path);
        }
        9 => {
            let _ = std::fs::remove_dir(&dir);
        }
        _ => {
            // A directory moves with everything under it.
            let from = root.join(rng.pick(&DIRS[1..]));
            let to = root.join(format!("moved{}", rng.below(3)));
            let _ = std::fs::rename(&from, &to);
        }
    }
}

#[test]
fn host_changes_on_a_localfs_share_converge_on_the_far_side() {
    for seed in seeds() {
        let dir = tempfile::tempdir().unwrap();
        let lb = Loopback::serve(LocalFs::new(dir.path()).unwrap(), ExportConfig::trusted()).unwrap();
        let _watch = HostWatcher::start(dir.path(), lb.exporter.changes()).unwrap();
        let far = lb.connect(RemoteConfig::default()).unwrap();
        let owner = LocalFs::new(dir.path()).unwrap();
        let mut rng = Rng::new(seed);
        for _round in 0..8 {
            for _ in 0..12 {
                host_op(&mut rng, dir.path());
            }
            // Warm the far side's caches with what it sees now (maybe stale: that is the point).
            let _ = lb.block_on(snapshot(&far));
        }
        let took = wait_converged(
            || lb.block_on(async { (snapshot(&owner).await.ok(), snapshot(&far).await.ok()) }),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|d| panic!("seed {seed}: the far side did not converge: {d}"));
        eprintln!("seed {seed}: converged {took:?} after the last host change");
    }
}

async fn peer_op<F: VirtualFs>(rng: &mut Rng, fs: &F) {
    use vfs_core::{Name, RequestCtx};
    let ctx = RequestCtx::ROOT;
    let dirs: Vec<Ino> = {
        let mut v = vec![Ino::ROOT];
        for d in ["d1", "d3"] {
            if let Ok(a) = fs.lookup(&ctx, Ino::ROOT, Name::new(d.as_ref()).unwrap()).await {
                v.push(a.ino);
            }
        }
        v
    };
    let dir = *rng.pick(&dirs);
    let name = OsString::from(*rng.pick(&NAMES));
    let n = Name::new(&name).unwrap();
    let size = if rng.below(8) == 0 {
        (1 << 20) + 10
    } else {
        rng.below(50_000) as usize
    };
    match rng.below(7) {
        0 => {
            let _ = fs
                .mkdir(
                    &ctx,
                    Ino::ROOT,
                    Name::new(rng.pick(&["d1", "d3"]).as_ref()).unwrap(),
                    0o755,
                    0,
                )
                .await;
        }
        1 | 2 => {
            // Write a temp, then rename it over the name (git).
            let tmp = OsString::from(format!("tmp{}", rng.below(100)));
            if let Ok((a, fh)) = fs
                .create(&ctx, dir, Name::new(&tmp).unwrap(), 0o644, 0, OpenFlags::RDWR)
                .await
            {
                let _ = fs.write(&ctx, a.ino, fh, 0, &rng.bytes(size)).await;
                let _ = fs.release(&ctx, a.ino, fh).await;
                let _ = fs
                    .rename(&ctx, dir, Name::new(&tmp).unwrap(), dir, n, RenameFlags::NONE)
                    .await;
            }
        }
        3 => {
            if let Ok(a) = fs.lookup(&ctx, dir, n).await
                && let Ok(fh) = fs.open(&ctx, a.ino, OpenFlags::RDWR).await
            {
                let _ = fs
                    .write(&ctx, a.ino, fh, rng.below(10_000), &rng.bytes(size.min(20_000)))
                    .await;
                let _ = fs.release(&ctx, a.ino, fh).await;
            }
        }
        4 => {
            let _ = fs.unlink(&ctx, dir, n).await;
        }
        5 => {
            let to = *rng.pick(&dirs);
            let other = OsString::from(*rng.pick(&NAMES));
            let _ = fs
                .rename(&ctx, dir, n, to, Name::new(&other).unwrap(), RenameFlags::NONE)
                .await;
        }
        _ => {
            if let Ok(a) = fs.lookup(&ctx, dir, n).await {
                let _ = fs
                    .setattr(&ctx, a.ino, vfs_core::SetAttr::size(rng.below(30_000)))
                    .await;
            }
        }
    }
}

#[test]
fn changes_through_one_peer_converge_on_another() {
    for seed in seeds() {
        let lb = Loopback::serve(MemFs::new(), ExportConfig::trusted()).unwrap();
        let writer = lb.connect(RemoteConfig::default()).unwrap();
        let reader = lb.connect(RemoteConfig::default()).unwrap();
        let mut rng = Rng::new(seed);
        for _round in 0..8 {
            lb.block_on(async {
                for _ in 0..12 {
                    peer_op(&mut rng, &writer).await;
                }
            });
            let _ = lb.block_on(snapshot(&reader));
        }
        let owner = std::sync::Arc::clone(lb.exporter.fs());
        let took = wait_converged(
            || lb.block_on(async { (snapshot(&*owner).await.ok(), snapshot(&reader).await.ok()) }),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|d| panic!("seed {seed}: the reading peer did not converge: {d}"));
        // The writing peer sees its own changes at once.
        let (o, w) = lb.block_on(async { (snapshot(&*owner).await.unwrap(), snapshot(&writer).await.unwrap()) });
        assert_eq!(o, w, "seed {seed}: the writing peer's view: {}", diff(&o, &w));
        eprintln!("seed {seed}: converged {took:?} after the last change");
    }
}
