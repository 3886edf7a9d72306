//! Loom models of the debouncer's queue and backpressure: the production queue and task
//! loop (`DebounceTask::run_blocking`), built from the `sync` facade, under every
//! interleaving loom reaches (preemptions bounded to keep each model well under a minute).
//!
//! Invariant checked: a producer blocked on a full queue is woken when room appears
//! (loom reports a deadlock otherwise), every accepted change reaches the consumer
//! (nothing lost), the pipeline shuts down once the producers are gone, and a producer
//! blocked when the other side goes away gets its change back instead of hanging.
//! Time is not modelled: the models use a zero delay, so every change is due at once.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p vfs-core --release loom`
#![cfg(loom)]

use std::time::Duration;

use loom::thread;
use vfs_core::Timestamp;
use vfs_core::notify::{Change, DebounceConfig, Debouncer, EntrySnapshot, SendError};

fn tiny() -> DebounceConfig {
    DebounceConfig {
        delay: Duration::ZERO,
        linger: Duration::ZERO,
        queue_capacity: 1,
        batch_capacity: 1,
        max_batch: 1,
        ..DebounceConfig::default()
    }
}

fn create(key: u64) -> Change<u64> {
    Change::Create {
        key,
        attrs: EntrySnapshot::file(key, Timestamp::EPOCH),
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

fn keys(got: &[Change<u64>]) -> Vec<u64> {
    let mut k: Vec<u64> = got
        .iter()
        .map(|c| match c {
            Change::Create { key, .. } => *key,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    k.sort_unstable();
    k
}

/// Seed 000 bug 3 (doc/LESSONS.md#seed-000-bug-3; drops on channel overflow): a producer sending two changes into a
/// queue of one blocks, is woken as the task drains, and both changes come out; then
/// everything shuts down.
#[test]
fn loom_notify_blocked_producer_is_woken_and_nothing_is_lost() {
    model(|| {
        let (d, mut batches, task) = Debouncer::<u64>::new(tiny());
        let worker = thread::spawn(move || task.run_blocking());
        let producer = thread::spawn(move || {
            d.send_blocking(create(1)).unwrap();
            d.send_blocking(create(2)).unwrap();
        });
        let mut got = Vec::new();
        while let Some(b) = batches.next_blocking() {
            assert!(b.len() <= 1);
            got.extend(b);
        }
        producer.join().unwrap();
        worker.join().unwrap();
        assert_eq!(keys(&got), vec![1, 2]);
    });
}

/// The same with an async producer (`send().await` through wakers), driven by loom's
/// `block_on`.
#[test]
fn loom_notify_async_producer_is_woken_and_nothing_is_lost() {
    model(|| {
        let (d, mut batches, task) = Debouncer::<u64>::new(tiny());
        let worker = thread::spawn(move || task.run_blocking());
        let producer = thread::spawn(move || {
            loom::future::block_on(async {
                d.send(create(1)).await.unwrap();
                d.send(create(2)).await.unwrap();
            });
        });
        let mut got = Vec::new();
        while let Some(b) = batches.next_blocking() {
            got.extend(b);
        }
        producer.join().unwrap();
        worker.join().unwrap();
        assert_eq!(keys(&got), vec![1, 2]);
    });
}

/// A producer blocked on a full queue when the task goes away is released with its
/// change handed back: no hang, no silent loss.
#[test]
fn loom_notify_blocked_producer_released_when_task_goes_away() {
    model(|| {
        let (d, batches, task) = Debouncer::<u64>::new(tiny());
        let producer = thread::spawn(move || {
            // Accepted, or refused if the task is already gone; never run, so never drained.
            if let Err(SendError(back)) = d.send_blocking(create(1)) {
                assert_eq!(back, create(1));
            }
            // The queue holds one: this blocks until the task is dropped.
            match d.send_blocking(create(2)) {
                Err(SendError(back)) => assert_eq!(back, create(2)),
                Ok(()) => panic!("accepted after the receiver was gone"),
            }
        });
        drop(task);
        drop(batches);
        producer.join().unwrap();
    });
}
