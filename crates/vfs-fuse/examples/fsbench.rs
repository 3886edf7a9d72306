//! A metadata micro-benchmark for any directory (a mount or the host's own): creates,
//! stats and unlinks N files with T threads and prints operations per second. Used by
//! `scripts/bench-fuse`; it is a measurement, not a test.
//!
//! ```sh
//! cargo run --release -p vfs-fuse --example fsbench -- DIR [FILES] [THREADS]
//! ```
//!
//! Invariant: it touches only `DIR/fsbench.*` entries it creates, and removes them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn phase(name: &str, dir: &Path, files: usize, threads: usize, op: fn(&Path) -> std::io::Result<()>) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in (t..files).step_by(threads) {
                    let p: PathBuf = dir.join(format!("fsbench.{i}"));
                    if let Err(e) = op(&p) {
                        eprintln!("fsbench: {name} {}: {e}", p.display());
                        std::process::exit(1);
                    }
                }
            });
        }
    });
    files as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: fsbench DIR [FILES] [THREADS]");
        std::process::exit(2)
    };
    let files: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let create = phase("create", &dir, files, threads, |p| fs::File::create(p).map(drop));
    let stat = phase("stat", &dir, files, threads, |p| fs::metadata(p).map(drop));
    let unlink = phase("unlink", &dir, files, threads, |p| fs::remove_file(p));
    println!("create {create:.0} stat {stat:.0} unlink {unlink:.0}");
}
