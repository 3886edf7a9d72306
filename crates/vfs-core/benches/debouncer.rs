//! Debouncer benchmarks: throughput with one producer, and memory per distinct key.
//!
//! Throughput: one async producer `send().await`s N changes into a default-configured
//! debouncer (200 ms delay, batches of 64, queue of 16384) while a consumer task drains
//! the batches; the time is from the first send to the consumer seeing the end (the
//! producer handle is dropped, so what is still pending is flushed at once). Reference,
//! same run: the same N items through a bare `tokio::sync::mpsc` channel of the same
//! capacity, drained with `recv_many` (the plain data structure the debouncer's queue
//! stands for). Two key mixes: 1,024 hot keys (heavy coalescing) and all keys distinct.
//!
//! Memory: a counting global allocator measures the live heap of a `DebounceState` with
//! N distinct pending keys, divided by N, against a `HashMap<K, EntrySnapshot>` holding the
//! same keys (reference). Printed before the criterion runs.
//!
//! Run: `cargo bench -p vfs-core --bench debouncer -- --warm-up-time 1 --measurement-time 3`
//!
//! Instruction counts (repeatable on a noisy machine): `scripts/bench-ir` runs each
//! scenario of this binary under callgrind (`VFS_IR=<scenario>`, see `benches/common/ir.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use vfs_core::Timestamp;
use vfs_core::notify::{Change, DebounceConfig, DebounceState, Debouncer, EntrySnapshot};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded from our caller, who upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded from our caller, who upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded from our caller, who upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const N: u64 = 200_000;

fn attrs(i: u64) -> EntrySnapshot {
    EntrySnapshot::file(i, Timestamp::new(1_700_000_000, 0))
}

fn path(i: u64) -> String {
    format!("repo/objects/{:02x}/{:038x}", i % 256, i)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One producer through the debouncer; returns the elapsed time.
async fn through_debouncer(keys: &[String], n: u64) -> Duration {
    let (d, mut batches) = Debouncer::<String>::spawn(DebounceConfig::default());
    let consumer = tokio::spawn(async move {
        let mut seen = 0usize;
        while let Some(b) = batches.next().await {
            seen += b.len();
        }
        seen
    });
    let start = Instant::now();
    for i in 0..n {
        let key = keys[(i as usize) % keys.len()].clone();
        let change = Change::Update { key, attrs: attrs(i) };
        if d.send(change).await.is_err() {
            break;
        }
    }
    drop(d);
    black_box(consumer.await.unwrap_or(0));
    start.elapsed()
}

/// The reference: the same items through a bare bounded tokio channel.
async fn through_mpsc(keys: &[String], n: u64) -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Change<String>>(16384);
    let consumer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(256);
        let mut seen = 0usize;
        while rx.recv_many(&mut buf, 256).await > 0 {
            seen += buf.len();
            buf.clear();
        }
        seen
    });
    let start = Instant::now();
    for i in 0..n {
        let key = keys[(i as usize) % keys.len()].clone();
        if tx.send(Change::Update { key, attrs: attrs(i) }).await.is_err() {
            break;
        }
    }
    drop(tx);
    black_box(consumer.await.unwrap_or(0));
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("debouncer_one_producer");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    for (label, distinct) in [("1024_keys", 1024u64), ("distinct_keys", N)] {
        let keys: Vec<String> = (0..distinct).map(path).collect();
        g.bench_with_input(BenchmarkId::new("debouncer", label), &keys, |b, keys| {
            b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(through_debouncer(keys, N))).sum());
        });
        g.bench_with_input(BenchmarkId::new("mpsc_reference", label), &keys, |b, keys| {
            b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(through_mpsc(keys, N))).sum());
        });
    }
    g.finish();
}

/// The state machine alone (no queue, no task): `apply` of N updates.
fn state_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("debounce_state_apply");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    let keys: Vec<String> = (0..1024).map(path).collect();
    let now = tokio::time::Instant::now();
    g.bench_function("debounce_state_1024_keys", |b| {
        b.iter(|| {
            let mut st = DebounceState::<String, EntrySnapshot>::new(&DebounceConfig::default());
            for i in 0..N {
                let key = keys[(i as usize) % keys.len()].clone();
                st.apply(Change::Update { key, attrs: attrs(i) }, now);
            }
            black_box(st.pending_len())
        });
    });
    g.bench_function("hashmap_reference_1024_keys", |b| {
        b.iter(|| {
            let mut m: HashMap<String, EntrySnapshot> = HashMap::new();
            for i in 0..N {
                let key = keys[(i as usize) % keys.len()].clone();
                m.insert(key, attrs(i));
            }
            black_box(m.len())
        });
    });
    g.finish();
}

/// Live heap bytes per distinct pending key, against a HashMap of the same keys.
fn memory_report() {
    const KEYS: u64 = 100_000;
    let now = tokio::time::Instant::now();
    let keys: Vec<String> = (0..KEYS).map(path).collect();
    let key_bytes: usize = keys.iter().map(|k| k.capacity()).sum();

    let before = LIVE.load(Ordering::Relaxed);
    let mut st = DebounceState::<String, EntrySnapshot>::new(&DebounceConfig::default());
    for (i, k) in keys.iter().enumerate() {
        st.apply(
            Change::Create {
                key: k.clone(),
                attrs: attrs(i as u64),
            },
            now,
        );
    }
    let state = LIVE.load(Ordering::Relaxed) - before;
    drop(st);

    let before = LIVE.load(Ordering::Relaxed);
    let mut m: HashMap<String, EntrySnapshot> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        m.insert(k.clone(), attrs(i as u64));
    }
    let map = LIVE.load(Ordering::Relaxed) - before;
    drop(m);

    let before = LIVE.load(Ordering::Relaxed);
    let mut st = DebounceState::<u64, EntrySnapshot>::new(&DebounceConfig::default());
    for i in 0..KEYS {
        st.apply(
            Change::Create {
                key: i,
                attrs: attrs(i),
            },
            now,
        );
    }
    let state_u64 = LIVE.load(Ordering::Relaxed) - before;
    drop(st);

    let per = |b: usize| b as f64 / KEYS as f64;
    println!("memory per distinct pending key ({KEYS} keys, live heap via counting allocator):");
    println!(
        "  DebounceState<String>: {:.1} B/key (of which the key strings {:.1} B/key)",
        per(state),
        per(key_bytes)
    );
    println!(
        "  HashMap<String, EntrySnapshot> reference: {:.1} B/key  (ratio {:.2})",
        per(map),
        state as f64 / map as f64
    );
    println!("  DebounceState<u64>: {:.1} B/key", per(state_u64));
    println!("  size_of EntrySnapshot = {} B", std::mem::size_of::<EntrySnapshot>());
}

#[inline(never)]
fn ir_state_apply(keys: &[String], n: u64) {
    let now = tokio::time::Instant::now();
    let mut st = DebounceState::<String, EntrySnapshot>::new(&DebounceConfig::default());
    for i in 0..n {
        let key = keys[(i as usize) % keys.len()].clone();
        st.apply(Change::Update { key, attrs: attrs(i) }, now);
    }
    black_box(st.pending_len());
}

#[inline(never)]
fn ir_hashmap_insert(keys: &[String], n: u64) {
    let mut m: HashMap<String, EntrySnapshot> = HashMap::new();
    for i in 0..n {
        let key = keys[(i as usize) % keys.len()].clone();
        m.insert(key, attrs(i));
    }
    black_box(m.len());
}

#[path = "common/ir.rs"]
mod ir;

fn main() {
    if let Some((scenario, n)) = ir::mode() {
        let keys: Vec<String> = (0..1024).map(path).collect();
        match scenario.as_str() {
            "state_apply" => ir_state_apply(&keys, n),
            "hashmap_insert" => ir_hashmap_insert(&keys, n),
            _ => {}
        }
        return;
    }
    memory_report();
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    state_apply(&mut c);
    c.final_summary();
}
