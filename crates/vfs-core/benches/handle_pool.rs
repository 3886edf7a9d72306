//! `HandlePool` overhead against the plain data structure it stands in for: a
//! `DashMap<u64, u64>` from inode to handle, with its default (SipHash) hasher and with
//! the FxHash the pool itself uses (`dashmap_fx`, the like-for-like reference).
//!
//! Invariant: every pool figure is paired with a reference measured in the same run, so
//! the ratio (not the absolute time) is what `doc/BENCHMARKS.md` reports.
//!
//! - `get`: take a lease on a pooled handle, read its `Fh`, end the lease — against
//!   `DashMap::get` + copy + guard drop.
//! - `publish`: hand the pool a handle for an inode that already has one (steady state:
//!   it is declined and its release queued), then perform the queued release — against
//!   `DashMap::insert` over an existing key.
//! - `read_op`: a whole `HandlePool::read` through a backend that answers at once —
//!   against `DashMap::get` + the same backend call.
//!
//! Run: `cargo bench -p vfs-core --bench handle_pool -- --warm-up-time 1 --measurement-time 3`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::Criterion;
use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use vfs_core::pool::HandlePool;
use vfs_core::{
    AccessMode, Attr, DirEntry, Fh, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs, VfsError,
    VfsResult, VirtualFs,
};

const KEYS: u64 = 1024;
const CTX: RequestCtx = RequestCtx::ROOT;

/// A backend whose every call is ready at once and does nothing.
struct NullFs {
    next: AtomicU64,
}

impl VirtualFs for NullFs {
    fn source_id(&self) -> &str {
        "null:"
    }
    async fn lookup(&self, _: &RequestCtx, _: Ino, _: Name<'_>) -> VfsResult<Attr> {
        Err(VfsError::NotImplemented)
    }
    async fn getattr(&self, _: &RequestCtx, _: Ino, _: Option<Fh>) -> VfsResult<Attr> {
        Err(VfsError::NotImplemented)
    }
    async fn setattr(&self, _: &RequestCtx, _: Ino, _: SetAttr) -> VfsResult<Attr> {
        Err(VfsError::NotImplemented)
    }
    async fn readlink(&self, _: &RequestCtx, _: Ino) -> VfsResult<std::ffi::OsString> {
        Err(VfsError::NotImplemented)
    }
    async fn mknod(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: u32, _: u32, _: u64) -> VfsResult<Attr> {
        Err(VfsError::NotImplemented)
    }
    async fn mkdir(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: u32, _: u32) -> VfsResult<Attr> {
        Err(VfsError::NotImplemented)
    }
    async fn unlink(&self, _: &RequestCtx, _: Ino, _: Name<'_>) -> VfsResult<()> {
        Err(VfsError::NotImplemented)
    }
    async fn rmdir(&self, _: &RequestCtx, _: Ino, _: Name<'_>) -> VfsResult<()> {
        Err(VfsError::NotImplemented)
    }
    async fn symlink(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: &std::ffi::OsStr) -> VfsResult<Attr> {
        Err(VfsError::NotImplemented)
    }
    async fn rename(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: Ino, _: Name<'_>, _: RenameFlags) -> VfsResult<()> {
        Err(VfsError::NotImplemented)
    }
    async fn link(&self, _: &RequestCtx, _: Ino, _: Ino, _: Name<'_>) -> VfsResult<Attr> {
        Err(VfsError::NotImplemented)
    }
    async fn open(&self, _: &RequestCtx, _: Ino, _: OpenFlags) -> VfsResult<Fh> {
        Ok(Fh(self.next.fetch_add(1, Ordering::Relaxed)))
    }
    async fn create(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: u32, _: u32, _: OpenFlags) -> VfsResult<(Attr, Fh)> {
        Err(VfsError::NotImplemented)
    }
    async fn read(&self, _: &RequestCtx, _: Ino, fh: Fh, _: u64, _: u32) -> VfsResult<Bytes> {
        black_box(fh);
        Ok(Bytes::new())
    }
    async fn write(&self, _: &RequestCtx, _: Ino, fh: Fh, _: u64, data: &[u8]) -> VfsResult<u32> {
        black_box(fh);
        Ok(data.len() as u32)
    }
    async fn fsync(&self, _: &RequestCtx, _: Ino, _: Fh, _: bool) -> VfsResult<()> {
        Ok(())
    }
    async fn release(&self, _: &RequestCtx, _: Ino, fh: Fh) -> VfsResult<()> {
        black_box(fh);
        Ok(())
    }
    async fn readdir(&self, _: &RequestCtx, _: Ino, _: u64, _: usize) -> VfsResult<Vec<DirEntry>> {
        Err(VfsError::NotImplemented)
    }
    async fn statfs(&self, _: &RequestCtx, _: Ino) -> VfsResult<StatFs> {
        Ok(StatFs::default())
    }
}

/// Polls a future that is ready at once (every `NullFs` call is).
fn now<T>(f: impl Future<Output = T>) -> T {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("NullFs never waits"),
    }
}

fn setup() -> Bench {
    let fs = Arc::new(NullFs {
        next: AtomicU64::new(1),
    });
    let pool = HandlePool::new(Arc::clone(&fs), KEYS as usize);
    let map = DashMap::new();
    let map_fx = DashMap::with_hasher(FxBuildHasher);
    for k in 0..KEYS {
        let fh = now(fs.open(&CTX, Ino(k), OpenFlags::RDWR)).unwrap_or(Fh(0));
        assert!(pool.publish(&CTX, Ino(k), fh, AccessMode::ReadWrite));
        map.insert(k, fh.0);
        map_fx.insert(k, fh.0);
    }
    Bench { fs, pool, map, map_fx }
}

/// The measured operations, each on key `k`; shared by criterion and the
/// instruction-count mode.
struct Bench {
    fs: Arc<NullFs>,
    pool: HandlePool<NullFs>,
    map: DashMap<u64, u64>,
    map_fx: DashMap<u64, u64, FxBuildHasher>,
}

impl Bench {
    fn get_dashmap_fx(&self, k: u64) -> Option<u64> {
        self.map_fx.get(&k).map(|v| *v)
    }
    fn publish_dashmap_fx(&self, k: u64) -> Option<u64> {
        self.map_fx.insert(k, k)
    }
    fn read_dashmap_fx(&self, k: u64) -> VfsResult<Bytes> {
        let fh = self.map_fx.get(&k).map(|v| Fh(*v)).unwrap_or(Fh(0));
        now(self.fs.read(&CTX, Ino(k), fh, 0, 4096))
    }
    fn get_dashmap(&self, k: u64) -> Option<u64> {
        self.map.get(&k).map(|v| *v)
    }
    fn get_pool(&self, k: u64) -> Option<Fh> {
        self.pool.get(Ino(k)).map(|h| h.fh())
    }
    fn publish_dashmap(&self, k: u64) -> Option<u64> {
        self.map.insert(k, k)
    }
    fn publish_pool(&self, k: u64) -> bool {
        let published = self.pool.publish(&CTX, Ino(k), Fh(k), AccessMode::ReadWrite);
        now(self.pool.release_pending());
        published
    }
    fn read_dashmap(&self, k: u64) -> VfsResult<Bytes> {
        let fh = self.map.get(&k).map(|v| Fh(*v)).unwrap_or(Fh(0));
        now(self.fs.read(&CTX, Ino(k), fh, 0, 4096))
    }
    fn read_pool(&self, k: u64) -> VfsResult<Bytes> {
        now(self.pool.read(&CTX, Ino(k), 0, 4096))
    }

    fn run(&self, scenario: &str, k: u64) {
        match scenario {
            "get/dashmap" => drop(black_box(self.get_dashmap(k))),
            "get/dashmap_fx" => drop(black_box(self.get_dashmap_fx(k))),
            "publish/dashmap_fx" => drop(black_box(self.publish_dashmap_fx(k))),
            "read_op/dashmap_fx+backend" => drop(black_box(self.read_dashmap_fx(k))),
            "get/pool" => drop(black_box(self.get_pool(k))),
            "publish/dashmap" => drop(black_box(self.publish_dashmap(k))),
            "publish/pool" => drop(black_box(self.publish_pool(k))),
            "read_op/dashmap+backend" => drop(black_box(self.read_dashmap(k))),
            "read_op/pool" => drop(black_box(self.read_pool(k))),
            _ => {}
        }
    }
}

fn benches(c: &mut Criterion) {
    let bench = setup();
    let mut k = 0u64;
    let mut next = move || {
        k = (k + 1) % KEYS;
        black_box(k)
    };
    let mut g = c.benchmark_group("get");
    g.bench_function("dashmap", |b| b.iter(|| bench.get_dashmap(next())));
    g.bench_function("dashmap_fx", |b| b.iter(|| bench.get_dashmap_fx(next())));
    g.bench_function("pool", |b| b.iter(|| bench.get_pool(next())));
    g.finish();
    let mut g = c.benchmark_group("publish");
    g.bench_function("dashmap", |b| b.iter(|| bench.publish_dashmap(next())));
    g.bench_function("dashmap_fx", |b| b.iter(|| bench.publish_dashmap_fx(next())));
    g.bench_function("pool", |b| b.iter(|| bench.publish_pool(next())));
    g.finish();
    let mut g = c.benchmark_group("read_op");
    g.bench_function("dashmap+backend", |b| b.iter(|| bench.read_dashmap(next())));
    g.bench_function("dashmap_fx+backend", |b| b.iter(|| bench.read_dashmap_fx(next())));
    g.bench_function("pool", |b| b.iter(|| bench.read_pool(next())));
    g.finish();
    now(bench.pool.release_all());
}

#[path = "common/ir.rs"]
mod ir;

/// In IR mode (`scripts/bench-ir`) runs one scenario `n` times and exits.
fn main() {
    if let Some((scenario, n)) = ir::mode() {
        let bench = setup();
        for i in 0..n {
            bench.run(black_box(&scenario), i % KEYS);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
