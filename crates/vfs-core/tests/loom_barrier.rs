//! Loom models of [`OpBarrier`]: the production code, built from the `sync` facade, run
//! under every interleaving loom can reach.
//!
//! Invariant checked: a read that begins after a write was issued observes that write's
//! effect (loom reports a causality violation on the `UnsafeCell` otherwise); a read never
//! waits for a write issued after it began (loom reports a deadlock otherwise); writes to
//! one inode apply in issue order; cancelled tickets do not wedge later writes; and the
//! per-inode state is gone at the end.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p vfs-core --release loom`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use vfs_core::Ino;
use vfs_core::barrier::OpBarrier;
use vfs_core::sync::Mutex;

const INO: Ino = Ino(9);

/// Seed 001 (doc/LESSONS.md#seed-001): a read issued after a write was accepted must see the write's data, not the
/// file as it was before ("read only 0 of 8192 bytes").
#[test]
fn loom_barrier_read_after_issued_write_sees_it() {
    read_after_issued_write(false);
}

/// The same through the async API (wakers), driven by loom's `block_on`.
#[test]
fn loom_barrier_async_read_after_issued_write_sees_it() {
    read_after_issued_write(true);
}

/// The seed 001 (doc/LESSONS.md#seed-001) model, through the blocking or (`async_api`) the async waits.
fn read_after_issued_write(async_api: bool) {
    loom::model(move || {
        let b = Arc::new(OpBarrier::new());
        let data = Arc::new(UnsafeCell::new(0u32));
        let issued = Arc::new(AtomicBool::new(false));
        let writer = {
            let (b, data, issued) = (b.clone(), data.clone(), issued.clone());
            thread::spawn(move || {
                let t = b.begin_write(INO);
                issued.store(true, Ordering::Release);
                if async_api {
                    loom::future::block_on(t.wait_turn_async());
                } else {
                    t.wait_turn();
                }
                // SAFETY: loom checks this access against every other one to `data`.
                data.with_mut(|p| unsafe { *p = 1 });
                t.complete();
            })
        };
        if issued.load(Ordering::Acquire) {
            if async_api {
                loom::future::block_on(b.read_async(INO));
            } else {
                b.read(INO);
            }
            // Without the barrier this read races the write (loom: causality violation).
            // SAFETY: loom checks this access against every other one to `data`.
            let seen = data.with(|p| unsafe { *p });
            assert_eq!(seen, 1);
        }
        writer.join().expect("the writer panicked");
        assert_eq!(b.inode_count(), 0);
    });
}

/// A read does not wait for a write issued after it began: the writer holds its ticket
/// until the read has returned, so waiting for it would deadlock.
#[test]
fn loom_barrier_read_does_not_wait_for_later_write() {
    loom::model(|| {
        let b = Arc::new(OpBarrier::new());
        let began = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (b, began, done) = (b.clone(), began.clone(), done.clone());
            thread::spawn(move || {
                while !began.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                let t = b.begin_write(INO); // races the reader's wait
                while !done.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                t.complete();
            })
        };
        let r = b.begin_read(INO);
        began.store(true, Ordering::Release);
        r.wait();
        done.store(true, Ordering::Release);
        writer.join().unwrap();
        assert_eq!(b.inode_count(), 0);
    });
}

/// Two writers apply in the order their tickets were issued, whatever the scheduling.
#[test]
fn loom_barrier_two_writers_fifo() {
    loom::model(|| {
        let b = Arc::new(OpBarrier::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let spawn = |b: Arc<OpBarrier>, log: Arc<Mutex<Vec<u64>>>| {
            thread::spawn(move || {
                let t = b.begin_write(INO);
                t.wait_turn();
                log.lock().push(t.seq());
                t.complete();
            })
        };
        let a = spawn(b.clone(), log.clone());
        let c = spawn(b.clone(), log.clone());
        a.join().unwrap();
        c.join().unwrap();
        // Sequence numbers restart once an inode goes idle ([0, 0] when the writers did not
        // overlap); when they overlap, the one issued second (seq 1) must apply second.
        let log = log.lock().clone();
        assert!(log == [0, 1] || log == [0, 0], "applied out of issue order: {log:?}");
        assert_eq!(b.inode_count(), 0);
    });
}

/// A ticket dropped before its turn (a cancelled future) counts as completed: the write
/// issued after it still runs once the one before it completes.
#[test]
fn loom_barrier_cancelled_ticket_does_not_wedge() {
    loom::model(|| {
        let b = Arc::new(OpBarrier::new());
        let first = b.begin_write(INO);
        let cancel = {
            let b = b.clone();
            thread::spawn(move || drop(b.begin_write(INO)))
        };
        let later = {
            let b = b.clone();
            thread::spawn(move || {
                let t = b.begin_write(INO);
                t.wait_turn();
                t.complete();
            })
        };
        first.complete();
        cancel.join().unwrap();
        later.join().unwrap();
        assert_eq!(b.inode_count(), 0);
    });
}
