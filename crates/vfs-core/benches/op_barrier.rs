//! OpBarrier benchmarks: the cost of ordering an uncontended operation, against a bare
//! `DashMap` doing the same shape of work (what seed 001's (doc/LESSONS.md#seed-001) `pending.rs` was built on).
//!
//! * write: `begin_write` + `wait_turn` + `complete` (one map insert, one lookup, one
//!   remove, all under a shard lock) vs `DashMap::entry().or_insert()` + `remove`.
//! * read with nothing pending: `read` (one lookup) vs `DashMap::get`.
//! * read behind a pending write on another inode's shard mate, i.e. an entry exists:
//!   `begin_read` registers and `wait` returns at once after completion; measured as
//!   write + read issued back to back.
//!
//! Run: `cargo bench -p vfs-core --bench op_barrier -- --warm-up-time 1 --measurement-time 3`
//!
//! Instruction counts (repeatable on a noisy machine): `scripts/bench-ir` runs each
//! scenario of this binary under callgrind (`VFS_IR=<scenario>`, see `benches/common/ir.rs`).

use std::hint::black_box;

use criterion::Criterion;
use dashmap::DashMap;
use vfs_core::Ino;
use vfs_core::barrier::OpBarrier;

#[derive(Default)]
struct Entry {
    next: u64,
    done: u64,
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("op_barrier_uncontended");
    let barrier = OpBarrier::new();
    let map: DashMap<Ino, Entry> = DashMap::new();
    let mut i = 0u64;

    g.bench_function("write_ticket", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let t = barrier.begin_write(Ino(i & 1023));
            t.wait_turn();
            t.complete();
        });
    });
    g.bench_function("dashmap_entry_remove_reference", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let ino = Ino(i & 1023);
            {
                let mut e = map.entry(ino).or_default();
                e.next += 1;
            }
            if let Some((_, e)) = map.remove(&ino) {
                black_box(e.done);
            }
        });
    });
    g.bench_function("read_nothing_pending", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            barrier.read(Ino(i & 1023));
        });
    });
    g.bench_function("dashmap_get_reference", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(map.get(&Ino(i & 1023)).map(|e| e.done));
        });
    });
    g.bench_function("write_then_read_behind_it", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let ino = Ino(i & 1023);
            let t = barrier.begin_write(ino);
            let r = barrier.begin_read(ino);
            t.wait_turn();
            t.complete();
            r.wait();
        });
    });
    g.finish();
    assert_eq!(barrier.inode_count(), 0);
}

#[inline(never)]
fn ir_write_ticket(b: &OpBarrier, n: u64) {
    for i in 0..n {
        let t = b.begin_write(Ino(i & 1023));
        t.wait_turn();
        t.complete();
    }
}

#[inline(never)]
fn ir_dashmap_entry_remove(map: &DashMap<Ino, Entry>, n: u64) {
    for i in 0..n {
        let ino = Ino(i & 1023);
        {
            let mut e = map.entry(ino).or_default();
            e.next += 1;
        }
        if let Some((_, e)) = map.remove(&ino) {
            black_box(e.done);
        }
    }
}

#[inline(never)]
fn ir_read_nothing_pending(b: &OpBarrier, n: u64) {
    for i in 0..n {
        b.read(Ino(i & 1023));
    }
}

#[inline(never)]
fn ir_dashmap_get(map: &DashMap<Ino, Entry>, n: u64) {
    for i in 0..n {
        black_box(map.get(&Ino(i & 1023)).map(|e| e.done));
    }
}

#[path = "common/ir.rs"]
mod ir;

fn main() {
    if let Some((scenario, n)) = ir::mode() {
        let b = OpBarrier::new();
        let map: DashMap<Ino, Entry> = DashMap::new();
        match scenario.as_str() {
            "write_ticket" => ir_write_ticket(&b, n),
            "dashmap_entry_remove" => ir_dashmap_entry_remove(&map, n),
            "read_nothing_pending" => ir_read_nothing_pending(&b, n),
            "dashmap_get" => ir_dashmap_get(&map, n),
            _ => {}
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    uncontended(&mut c);
    c.final_summary();
}
