//! `MetaTable` against the bare data structure it replaces: a `DashMap<u64, Attr>` of the
//! same shape, with DashMap's default hasher and with the hasher MetaTable uses (FxHash),
//! so the cost of the per-file lock is visible apart from the hasher. Reads copy one field
//! out; updates change two fields. One thread, and two threads running the same loop at
//! once (time per operation per thread).
//!
//! Run: `cargo bench -p vfs-core --bench meta_table`. The ratio MetaTable / DashMap is
//! what `doc/BENCHMARKS.md` reports.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::Criterion;
use dashmap::DashMap;
use vfs_core::lock_order::{Locked, Unlocked};
use vfs_core::meta::MetaTable;
use vfs_core::{Attr, FileType, Ino};

/// A token for a test's own entry point (each call site holds no lock).
fn entry() -> Locked<Unlocked> {
    // SAFETY: called only where the test holds no lock.
    unsafe { Locked::new() }
}

const KEYS: u64 = 1024;

fn attr(i: u64) -> Attr {
    Attr {
        size: i,
        ..Attr::new(Ino(i), FileType::Regular, 0o644)
    }
}

/// Next key of a cheap pseudo-random walk over 2..KEYS+2.
fn next(k: u64) -> u64 {
    2 + (k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 33) % KEYS
}

trait Table: Send + Sync + 'static {
    fn read(&self, k: u64) -> u64;
    fn update(&self, k: u64);
}

impl Table for MetaTable<Attr> {
    fn read(&self, k: u64) -> u64 {
        MetaTable::read(self, &mut entry(), Ino(k), |a| a.size).unwrap_or(0)
    }
    fn update(&self, k: u64) {
        MetaTable::update(self, &mut entry(), Ino(k), |a| {
            a.size += 1;
            a.mtime.secs += 1;
        });
    }
}

type FxDashMap = DashMap<u64, Attr, rustc_hash::FxBuildHasher>;

impl Table for FxDashMap {
    fn read(&self, k: u64) -> u64 {
        self.get(&k).map(|a| a.size).unwrap_or(0)
    }
    fn update(&self, k: u64) {
        if let Some(mut a) = self.get_mut(&k) {
            a.size += 1;
            a.mtime.secs += 1;
        }
    }
}

impl Table for DashMap<u64, Attr> {
    fn read(&self, k: u64) -> u64 {
        self.get(&k).map(|a| a.size).unwrap_or(0)
    }
    fn update(&self, k: u64) {
        if let Some(mut a) = self.get_mut(&k) {
            a.size += 1;
            a.mtime.secs += 1;
        }
    }
}

fn meta_table() -> Arc<MetaTable<Attr>> {
    let t = MetaTable::new();
    let mut tok = entry();
    for i in 2..KEYS + 2 {
        let _ = t.insert(&mut tok, Ino(i), attr(i));
    }
    Arc::new(t)
}

fn dash_map() -> Arc<DashMap<u64, Attr>> {
    let m = DashMap::new();
    for i in 2..KEYS + 2 {
        m.insert(i, attr(i));
    }
    Arc::new(m)
}

fn fx_dash_map() -> Arc<FxDashMap> {
    let m = FxDashMap::default();
    for i in 2..KEYS + 2 {
        m.insert(i, attr(i));
    }
    Arc::new(m)
}

/// Runs `op` `iters` times on each of `threads` threads at once; returns the wall time
/// (so the figure is time per operation per thread).
fn run<T: Table>(t: &Arc<T>, threads: usize, iters: u64, write: bool) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|n| {
            let t = Arc::clone(t);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut k = n as u64 * 7919;
                let mut acc = 0u64;
                for _ in 0..iters {
                    k = next(k);
                    if write {
                        t.update(k);
                    } else {
                        acc = acc.wrapping_add(t.read(k));
                    }
                }
                black_box(acc);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for w in workers {
        let _ = w.join();
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mt = meta_table();
    let dm = dash_map();
    let fx = fx_dash_map();
    for threads in [1usize, 2] {
        for (op, write) in [("read", false), ("update", true)] {
            let mut g = c.benchmark_group(format!("{op}/{threads}t"));
            g.bench_function("dashmap", |b| b.iter_custom(|iters| run(&dm, threads, iters, write)));
            g.bench_function("dashmap_fxhash", |b| {
                b.iter_custom(|iters| run(&fx, threads, iters, write))
            });
            g.bench_function("meta_table", |b| b.iter_custom(|iters| run(&mt, threads, iters, write)));
            g.finish();
        }
    }
}

#[path = "common/ir.rs"]
mod ir;

fn main() {
    if let Some((scenario, n)) = ir::mode() {
        let (mt, dm, fx) = (meta_table(), dash_map(), fx_dash_map());
        let mut k = 0;
        let mut acc = 0u64;
        for _ in 0..n {
            k = next(k);
            match scenario.as_str() {
                "read/meta_table" => acc = acc.wrapping_add(Table::read(&*mt, k)),
                "read/dashmap" => acc = acc.wrapping_add(Table::read(&*dm, k)),
                "read/dashmap_fx" => acc = acc.wrapping_add(Table::read(&*fx, k)),
                "update/meta_table" => Table::update(&*mt, k),
                "update/dashmap" => Table::update(&*dm, k),
                "update/dashmap_fx" => Table::update(&*fx, k),
                _ => {}
            }
        }
        black_box(acc);
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}
