//! Tests of the debouncer: exact timing under tokio's paused clock, the seed regressions (doc/LESSONS.md),
//! and the convergence property (a replica applying the emitted batches converges to the
//! source tree), both on the bare state machine and through the queues under backpressure.

use std::collections::BTreeMap;
use std::sync::{Arc as StdArc, Mutex as StdMutex};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

type C = Change<String, EntrySnapshot>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn file(size: u64) -> EntrySnapshot {
    EntrySnapshot::file(size, Timestamp::new(i64::try_from(size).unwrap_or(0), 0))
}

fn create(k: &str, size: u64) -> C {
    Change::Create {
        key: k.to_owned(),
        attrs: file(size),
    }
}

fn update(k: &str, size: u64) -> C {
    Change::Update {
        key: k.to_owned(),
        attrs: file(size),
    }
}

fn remove(k: &str) -> C {
    Change::Remove { key: k.to_owned() }
}

fn rename(from: &str, to: &str, attrs: EntrySnapshot) -> C {
    Change::Rename {
        from: from.to_owned(),
        to: to.to_owned(),
        attrs,
    }
}

fn cfg() -> DebounceConfig {
    DebounceConfig::default()
}

/// Every batch due at `now`.
fn drain(st: &mut DebounceState<String, EntrySnapshot>, now: Instant) -> Vec<C> {
    let mut out = Vec::new();
    while let Some(b) = st.next_batch(now, false) {
        out.extend(b);
    }
    out
}

// --- the state machine, exact time ---------------------------------------------------

#[test]
fn deadline_resets_on_each_update() {
    let mut st = DebounceState::new(&cfg());
    let t0 = Instant::now();
    st.apply(create("a", 1), t0);
    st.apply(update("a", 2), t0 + ms(150));
    st.expire(t0 + ms(349));
    assert!(drain(&mut st, t0 + ms(349)).is_empty(), "deadline was reset at 150 ms");
    st.expire(t0 + ms(350));
    assert_eq!(drain(&mut st, t0 + ms(350)), vec![create("a", 2)]);
    assert!(st.is_idle());
}

#[test]
fn batches_hold_at_most_max_batch() {
    let config = DebounceConfig { max_batch: 4, ..cfg() };
    let mut st = DebounceState::new(&config);
    let t0 = Instant::now();
    for i in 0..10 {
        st.apply(create(&format!("f{i}"), i), t0);
    }
    st.expire(t0 + ms(200));
    let mut sizes = Vec::new();
    while let Some(b) = st.next_batch(t0 + ms(200), false) {
        sizes.push(b.len());
    }
    assert_eq!(sizes, vec![4, 4, 2]);
}

#[test]
fn create_then_remove_of_unsent_entry_cancels() {
    let mut st = DebounceState::new(&cfg());
    let t0 = Instant::now();
    st.apply(create("a", 1), t0);
    st.apply(update("a", 5), t0);
    st.apply(remove("a"), t0);
    assert!(st.is_idle(), "never sent, so the receiver never saw it");
    st.expire(t0 + ms(1000));
    assert!(drain(&mut st, t0 + ms(1000)).is_empty());
}

#[test]
fn remove_after_sent_create_is_always_sent() {
    let mut st = DebounceState::new(&cfg());
    let t0 = Instant::now();
    st.apply(create("a", 1), t0);
    st.expire(t0 + ms(200));
    assert_eq!(drain(&mut st, t0 + ms(200)), vec![create("a", 1)]);
    // Sent: a later create-like churn must not cancel the remove.
    st.apply(update("a", 2), t0 + ms(300));
    st.apply(remove("a"), t0 + ms(300));
    st.expire(t0 + ms(500));
    assert_eq!(drain(&mut st, t0 + ms(500)), vec![remove("a")]);
}

#[test]
fn remove_then_create_becomes_update_that_a_remove_does_not_cancel() {
    let mut st = DebounceState::new(&cfg());
    let t0 = Instant::now();
    // "a" exists on both sides (no pending entry); it is replaced, then removed again.
    st.apply(remove("a"), t0);
    st.apply(create("a", 3), t0);
    st.apply(remove("a"), t0);
    st.expire(t0 + ms(200));
    assert_eq!(drain(&mut st, t0 + ms(200)), vec![remove("a")]);
}

#[test]
fn too_many_pending_keys_are_sent_early_not_dropped() {
    let config = DebounceConfig {
        max_pending: 3,
        ..cfg()
    };
    let mut st = DebounceState::new(&config);
    let t0 = Instant::now();
    for i in 0..5 {
        st.apply(create(&format!("f{i}"), i), t0);
    }
    assert_eq!(st.pending_len(), 3);
    assert_eq!(st.ready_len(), 2);
    st.flush_all(t0);
    let mut all = Vec::new();
    while let Some(b) = st.next_batch(t0, true) {
        all.extend(b);
    }
    assert_eq!(all.len(), 5);
}

#[test]
fn partial_batch_waits_for_a_burst_still_expiring() {
    let mut st = DebounceState::new(&cfg());
    let t0 = Instant::now();
    st.apply(create("a", 1), t0);
    st.apply(create("b", 1), t0 + ms(5));
    st.expire(t0 + ms(200));
    assert!(drain(&mut st, t0 + ms(200)).is_empty(), "b expires within linger");
    assert_eq!(st.next_wakeup(), Some(t0 + ms(205)));
    st.expire(t0 + ms(205));
    assert_eq!(drain(&mut st, t0 + ms(205)).len(), 2);
}

/// Seed 002 bug 7 regression (doc/LESSONS.md#seed-002-bug-7; LFS intermediate sizes + stale notification): LFS grows
/// `incomplete/<hash>` through several closes, then renames it into `objects/`. The
/// pending add for the old path must be retargeted to the new path with the final size:
/// not sent stale for a path that no longer exists, not deleted.
#[test]
fn seed002_bug7_grow_then_rename_retargets_pending_add_with_final_size() {
    let mut st = DebounceState::new(&cfg());
    let mut replica = Replica::new();
    let t0 = Instant::now();
    // Sent once (the receiver knows the incomplete file at 100 MB)...
    st.apply(create("lfs/incomplete/h", 100), t0);
    st.expire(t0 + ms(200));
    replica.apply_batch(drain(&mut st, t0 + ms(200)));
    // ... then grown twice and renamed, all within the debounce window.
    st.apply(update("lfs/incomplete/h", 200), t0 + ms(300));
    st.apply(update("lfs/incomplete/h", 300), t0 + ms(310));
    st.apply(rename("lfs/incomplete/h", "lfs/objects/h", file(420)), t0 + ms(320));
    let now = t0 + ms(320);
    let first = drain(&mut st, now);
    assert_eq!(first, vec![rename("lfs/incomplete/h", "lfs/objects/h", file(420))]);
    st.expire(t0 + ms(520));
    let later = drain(&mut st, t0 + ms(520));
    // The retargeted add: new path, final size. Nothing for the old path.
    assert_eq!(later, vec![update("lfs/objects/h", 420)]);
    replica.apply_batch(first);
    replica.apply_batch(later);
    assert_eq!(replica.get(&"lfs/objects/h".to_owned()), Some(&file(420)));
    assert_eq!(replica.get(&"lfs/incomplete/h".to_owned()), None);
    assert_eq!(replica.entries().len(), 1);
}

/// Seed 002 bug 7 (doc/LESSONS.md#seed-002-bug-7), chains: a→b→c retargets twice, and nothing is ever sent for a key
/// that no longer exists with stale attributes. Never sent: `a` vanishes without a trace
/// (the receiver never saw it); `b` may have replaced an older `b` the receiver holds, so
/// it is moved on to `c`; `c` gets the final size. Already sent: two renames, then the
/// retargeted update of `c`.
#[test]
fn seed002_bug7_rename_chains_retarget_to_the_last_key() {
    let t0 = Instant::now();
    let mut st = DebounceState::new(&cfg());
    st.apply(create("a", 1), t0);
    st.apply(update("a", 2), t0 + ms(10));
    st.apply(rename("a", "b", file(2)), t0 + ms(20));
    st.apply(update("b", 3), t0 + ms(30));
    st.apply(rename("b", "c", file(3)), t0 + ms(40));
    st.expire(t0 + ms(240));
    let out = drain(&mut st, t0 + ms(240));
    assert_eq!(out, vec![rename("b", "c", file(3)), update("c", 3)]);
    let mut replica = Replica::new();
    replica.apply_batch(out);
    assert_eq!(replica.entries().len(), 1);
    assert_eq!(replica.get(&"c".to_owned()), Some(&file(3)));

    let mut st = DebounceState::new(&cfg());
    let mut replica = Replica::new();
    st.apply(create("a", 1), t0);
    st.expire(t0 + ms(200));
    replica.apply_batch(drain(&mut st, t0 + ms(200)));
    st.apply(update("a", 2), t0 + ms(300));
    st.apply(rename("a", "b", file(2)), t0 + ms(310));
    st.apply(rename("b", "c", file(2)), t0 + ms(320));
    st.expire(t0 + ms(600));
    let out = drain(&mut st, t0 + ms(600));
    assert_eq!(
        out,
        vec![rename("a", "b", file(2)), rename("b", "c", file(2)), update("c", 2)]
    );
    replica.apply_batch(out);
    assert_eq!(replica.entries().len(), 1);
    assert_eq!(replica.get(&"c".to_owned()), Some(&file(2)));
}

/// Seed 000 bug 2 (doc/LESSONS.md#seed-000-bug-2) regression: git writes `tmp_pack_X`, then renames it to
/// `pack-<hash>.pack`. The temp was never sent, so the receiver must create the
/// destination from the attributes the rename carries. Both halves: the debouncer turns
/// the unsent temp's rename into a create of the pack, and a receiver handed a rename
/// whose source it never saw (debouncer started after the temp existed) still
/// materializes the pack.
#[test]
fn seed000_bug2_rename_of_never_sent_temp_materializes_destination() {
    let t0 = Instant::now();
    let pack = file(22 << 20);
    // The debouncer saw the temp's create: the temp is never sent, the rename collapses
    // into an upsert of the pack with the rename's attributes.
    let mut st = DebounceState::new(&cfg());
    st.apply(create(".git/objects/pack/tmp_pack_X", 0), t0);
    st.apply(update(".git/objects/pack/tmp_pack_X", 22 << 20), t0 + ms(50));
    st.apply(
        rename(".git/objects/pack/tmp_pack_X", ".git/objects/pack/pack-1.pack", pack),
        t0 + ms(60),
    );
    st.expire(t0 + ms(260));
    let out = drain(&mut st, t0 + ms(260));
    // An update, not a create: an older file of that name may exist on the receiver.
    assert_eq!(out, vec![update(".git/objects/pack/pack-1.pack", 22 << 20)]);

    // The debouncer never saw the temp: the rename is sent, and the receiver, which
    // never had the temp, must still create the pack.
    let mut st = DebounceState::new(&cfg());
    st.apply(
        rename(".git/objects/pack/tmp_pack_Y", ".git/objects/pack/pack-2.pack", pack),
        t0,
    );
    let out = drain(&mut st, t0);
    assert_eq!(
        out,
        vec![rename(
            ".git/objects/pack/tmp_pack_Y",
            ".git/objects/pack/pack-2.pack",
            pack
        )]
    );
    let mut replica = Replica::new();
    replica.apply_batch(out);
    assert_eq!(
        replica.get(&".git/objects/pack/pack-2.pack".to_owned()),
        Some(&pack),
        "the pack never landed"
    );
}

#[test]
fn directory_rename_retargets_pending_entries_under_it() {
    let t0 = Instant::now();
    let mut st = DebounceState::new(&cfg());
    let mut replica = Replica::new();
    let d = EntrySnapshot::dir(Timestamp::EPOCH);
    st.apply(
        Change::Create {
            key: "d".into(),
            attrs: d,
        },
        t0,
    );
    st.apply(create("d/x", 1), t0);
    st.expire(t0 + ms(200));
    replica.apply_batch(drain(&mut st, t0 + ms(200)));
    st.apply(update("d/x", 2), t0 + ms(300));
    st.apply(create("d/y", 3), t0 + ms(300));
    st.apply(rename("d", "e", d), t0 + ms(310));
    st.expire(t0 + ms(600));
    let out = drain(&mut st, t0 + ms(600));
    assert_eq!(out[0], rename("d", "e", d));
    replica.apply_batch(out);
    let mut keys: Vec<_> = replica.entries().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["e", "e/x", "e/y"]);
    assert_eq!(replica.get(&"e/x".to_owned()), Some(&file(2)));
}

/// A directory renamed onto an emptied directory: the removes still pending under the
/// destination are superseded by the rename (the receiver drops the old destination
/// whole); sent after it, they would delete what the rename just moved in.
#[test]
fn directory_rename_onto_emptied_directory_supersedes_removes_under_it() {
    let t0 = Instant::now();
    let mut st = DebounceState::new(&cfg());
    let mut replica = Replica::new();
    let d = EntrySnapshot::dir(Timestamp::EPOCH);
    for c in [
        Change::Create {
            key: "a".into(),
            attrs: d,
        },
        Change::Create {
            key: "b".into(),
            attrs: d,
        },
        create("a/x", 1),
        create("b/x", 2),
    ] {
        st.apply(c, t0);
    }
    st.expire(t0 + ms(200));
    replica.apply_batch(drain(&mut st, t0 + ms(200)));
    st.apply(remove("b/x"), t0 + ms(300));
    st.apply(rename("a", "b", d), t0 + ms(300));
    st.expire(t0 + ms(600));
    replica.apply_batch(drain(&mut st, t0 + ms(600)));
    let mut keys: Vec<_> = replica.entries().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["b", "b/x"]);
    assert_eq!(replica.get(&"b/x".to_owned()), Some(&file(1)));
}

#[test]
fn path_keys_rebase_by_component() {
    use std::path::PathBuf;
    let (a, b) = (PathBuf::from("a/b"), PathBuf::from("z"));
    assert_eq!(PathBuf::from("a/b/c").rebase(&a, &b), Some(PathBuf::from("z/c")));
    assert_eq!(PathBuf::from("a/bc").rebase(&a, &b), None);
    assert_eq!(a.rebase(&a, &b), None);
    let (a, b) = (b"a/b".to_vec(), b"z".to_vec());
    assert_eq!(b"a/b/c".to_vec().rebase(&a, &b), Some(b"z/c".to_vec()));
    assert_eq!(b"a/bc".to_vec().rebase(&a, &b), None);
    assert_eq!(
        "a/b/c".to_owned().rebase(&"a/b".into(), &"z".into()),
        Some("z/c".into())
    );
    assert_eq!("a/bc".to_owned().rebase(&"a/b".into(), &"z".into()), None);
    assert_eq!(7u64.rebase(&7, &8), None);
}

// --- the pipeline, paused clock --------------------------------------------------------

/// Collects every batch until the end, with the (virtual) time each arrived.
async fn collect(mut batches: Batches<String, EntrySnapshot>) -> Vec<(Instant, Vec<C>)> {
    let mut out = Vec::new();
    while let Some(b) = batches.next().await {
        out.push((Instant::now(), b));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn pipeline_sends_after_the_quiet_period_exactly() {
    let (d, mut batches) = Debouncer::<String>::spawn(cfg());
    let t0 = Instant::now();
    d.send(create("a", 1)).await.unwrap();
    tokio::time::sleep(ms(150)).await;
    d.send(update("a", 2)).await.unwrap();
    let b = batches.next().await.unwrap();
    assert_eq!(b, vec![create("a", 2)]);
    assert_eq!(Instant::now() - t0, ms(350), "200 ms after the last update, not before");
}

/// Seed 002 bug 4 regression (doc/LESSONS.md#seed-002-bug-4; the 612-file hang): a clone closes 612 files in one burst.
/// They must leave as at most ⌈612/64⌉ = 10 batches once the burst is quiet, all of them,
/// and nothing may hang, even with a consumer that takes its time and a queue far
/// smaller than the burst (the producer waits instead).
#[tokio::test(start_paused = true)]
async fn seed002_bug4_612_file_burst_leaves_in_at_most_10_batches() {
    for spread in [Duration::ZERO, Duration::from_micros(100)] {
        let config = DebounceConfig {
            queue_capacity: 128,
            batch_capacity: 1,
            ..cfg()
        };
        let (d, batches) = Debouncer::<String>::spawn(config);
        let consumer = tokio::spawn(async move {
            let mut batches = batches;
            let mut out = Vec::new();
            while let Some(b) = batches.next().await {
                out.push((Instant::now(), b));
                tokio::time::sleep(ms(3)).await; // a slow link
            }
            out
        });
        let t0 = Instant::now();
        for i in 0..612u64 {
            d.send(create(&format!("repo/f{i:03}"), i)).await.unwrap();
            if !spread.is_zero() {
                tokio::time::sleep(spread).await;
            }
        }
        let burst_end = Instant::now();
        // Keep the producer alive until everything is out: the batches must come from
        // the deadlines, not from the shutdown flush.
        let out = tokio::time::timeout(ms(2_000), async {
            loop {
                tokio::time::sleep(ms(50)).await;
                if Instant::now() > burst_end + ms(1_000) {
                    break;
                }
            }
        })
        .await;
        assert!(out.is_ok());
        drop(d);
        let got = tokio::time::timeout(ms(5_000), consumer).await.expect("hung").unwrap();
        let total: usize = got.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(total, 612, "nothing lost (spread {spread:?})");
        assert!(got.iter().all(|(_, b)| b.len() <= 64));
        assert!(
            got.len() <= 10,
            "{} batches for 612 files (spread {spread:?})",
            got.len()
        );
        assert!(
            got.iter().all(|(t, _)| *t >= t0 + ms(200)),
            "sent before the quiet period"
        );
    }
}

/// Seed 000 bug 3 (doc/LESSONS.md#seed-000-bug-3) regression, first half (a file gone by send time was silently
/// dropped because it was re-stated before sending): the change carries the size
/// captured when it was enqueued, and is sent with it even though the file has since
/// vanished (its remove is still behind in the producer's queue). And when the vanishing
/// is known before the deadline, the peer that holds the file hears of the remove: the
/// pending change is never just discarded.
#[tokio::test(start_paused = true)]
async fn seed000_bug3_vanished_file_is_sent_with_size_captured_at_enqueue() {
    let (d, batches) = Debouncer::<String>::spawn(cfg());
    let collector = tokio::spawn(collect(batches));
    d.send(create("a.keep", 0)).await.unwrap();
    tokio::time::sleep(ms(300)).await; // sent: the peer has it
    d.send(update("a.keep", 4096)).await.unwrap();
    d.send(remove("a.keep")).await.unwrap(); // gone before its deadline
    drop(d);
    let got: Vec<C> = collector.await.unwrap().into_iter().flat_map(|(_, b)| b).collect();
    assert_eq!(got, vec![create("a.keep", 0), remove("a.keep")]);
}

/// Seed 000 bug 3 (doc/LESSONS.md#seed-000-bug-3), the file gone only after its change was sent (see above).
#[tokio::test(start_paused = true)]
async fn seed000_bug3_vanished_after_send_time_keeps_captured_size() {
    let (d, batches) = Debouncer::<String>::spawn(cfg());
    let collector = tokio::spawn(collect(batches));
    // Already known to the peer, then rewritten to 4096 bytes and, at send time, gone.
    d.send(create(".git/objects/pack/pack-1.keep", 0)).await.unwrap();
    tokio::time::sleep(ms(300)).await;
    d.send(update(".git/objects/pack/pack-1.keep", 4096)).await.unwrap();
    tokio::time::sleep(ms(300)).await; // sent during this sleep; the file is gone now
    d.send(remove(".git/objects/pack/pack-1.keep")).await.unwrap();
    drop(d);
    let got: Vec<C> = collector.await.unwrap().into_iter().flat_map(|(_, b)| b).collect();
    assert_eq!(
        got,
        vec![
            create(".git/objects/pack/pack-1.keep", 0),
            update(".git/objects/pack/pack-1.keep", 4096),
            remove(".git/objects/pack/pack-1.keep"),
        ]
    );
}

/// Seed 000 bug 3 (doc/LESSONS.md#seed-000-bug-3) regression, second half (the bounded notify channel dropped on
/// overflow): a full queue hands the change back to `try_send` and makes `send` wait;
/// once the consumer catches up, every change arrives.
#[tokio::test(start_paused = true)]
async fn seed000_bug3_full_queue_applies_backpressure_and_never_drops() {
    let config = DebounceConfig {
        queue_capacity: 2,
        batch_capacity: 1,
        max_batch: 1,
        delay: Duration::ZERO,
        linger: Duration::ZERO,
        ..cfg()
    };
    let (d, mut batches) = Debouncer::<String>::spawn(config);
    let mut accepted = 0u64;
    let mut refused = None;
    for i in 0..64u64 {
        match d.try_send(create(&format!("f{i}"), i)) {
            Ok(()) => accepted += 1,
            Err(TrySendError::Full(back)) => {
                refused = Some(back);
                break;
            }
            Err(TrySendError::Closed(_)) => panic!("closed"),
        }
        tokio::task::yield_now().await;
    }
    let refused = refused.expect("a queue of 2 with a stalled consumer fills up");
    assert_eq!(
        refused,
        create(&format!("f{accepted}"), accepted),
        "the change comes back"
    );
    // `send` waits rather than dropping...
    let blocked = tokio::time::timeout(ms(100), d.send(refused.clone())).await;
    assert!(blocked.is_err(), "send must wait while the queue is full");
    // ... and goes through once the consumer drains.
    let producer = {
        let d = d.clone();
        tokio::spawn(async move {
            d.send(refused).await.unwrap();
            for i in accepted + 1..64 {
                d.send(create(&format!("f{i}"), i)).await.unwrap();
            }
        })
    };
    drop(d);
    let mut got = Vec::new();
    while let Some(b) = batches.next().await {
        got.extend(b);
    }
    producer.await.unwrap();
    let mut keys: Vec<String> = got
        .into_iter()
        .map(|c| match c {
            Change::Create { key, .. } => key,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 64, "every change arrived");
}

#[tokio::test(start_paused = true)]
async fn dropped_consumer_hands_changes_back() {
    let config = DebounceConfig {
        queue_capacity: 1,
        ..cfg()
    };
    let (d, batches, task) = Debouncer::<String>::new(config);
    drop(batches);
    drop(task);
    assert!(matches!(d.try_send(create("a", 1)), Err(TrySendError::Closed(_))));
    let err = d.send(create("b", 2)).await.unwrap_err();
    assert_eq!(err.0, create("b", 2));
}

#[test]
fn blocking_driver_delivers_everything() {
    let config = DebounceConfig {
        delay: ms(5),
        queue_capacity: 4,
        batch_capacity: 1,
        ..cfg()
    };
    let (d, mut batches, task) = Debouncer::<String>::new(config);
    let worker = std::thread::spawn(move || task.run_blocking());
    let producer = std::thread::spawn(move || {
        for i in 0..500u64 {
            d.send_blocking(update(&format!("f{}", i % 50), i)).unwrap();
        }
    });
    let mut replica = Replica::new();
    while let Some(b) = batches.next_blocking() {
        assert!(b.len() <= 64);
        replica.apply_batch(b);
    }
    producer.join().unwrap();
    worker.join().unwrap();
    assert_eq!(replica.entries().len(), 50);
    for j in 0..50u64 {
        assert_eq!(replica.get(&format!("f{j}")), Some(&file(450 + j)), "last write wins");
    }
}

// --- the convergence property ----------------------------------------------------------

/// Names of the small tree: two, so that operations collide.
const NAMES: [&str; 2] = ["x", "y"];
/// Deepest path component count.
const MAX_DEPTH: usize = 3;

/// A tree operation. Targets are picked by index among what exists when the operation
/// runs (`Index`), so most generated operations are valid.
#[derive(Clone, Debug)]
enum Op {
    /// A file named `NAMES[.1]` in the picked directory.
    Create(prop::sample::Index, usize),
    /// A directory named `NAMES[.1]` in the picked directory.
    Mkdir(prop::sample::Index, usize),
    /// Extend the picked file to at least this size.
    Write(prop::sample::Index, u64),
    /// Set the picked file's size.
    Truncate(prop::sample::Index, u64),
    /// Move the picked entry to `NAMES[.2]` in the picked directory.
    Rename(prop::sample::Index, prop::sample::Index, usize),
    /// Unlink the picked file or rmdir the picked (empty) directory.
    Remove(prop::sample::Index),
    /// Let this many milliseconds pass.
    Sleep(u64),
    /// Go quiet long enough for everything to be sent, then compare.
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    let idx = any::<prop::sample::Index>;
    let name = || 0..NAMES.len();
    prop_oneof![
        3 => (idx(), name()).prop_map(|(d, n)| Op::Create(d, n)),
        2 => (idx(), name()).prop_map(|(d, n)| Op::Mkdir(d, n)),
        3 => (idx(), 0..100u64).prop_map(|(f, s)| Op::Write(f, s)),
        1 => (idx(), 0..100u64).prop_map(|(f, s)| Op::Truncate(f, s)),
        4 => (idx(), idx(), name()).prop_map(|(e, d, n)| Op::Rename(e, d, n)),
        2 => idx().prop_map(Op::Remove),
        2 => prop_oneof![Just(1u64), Just(10), Just(150), Just(199), Just(200), Just(260)].prop_map(Op::Sleep),
        1 => Just(Op::Settle),
    ]
}

fn parent(p: &str) -> Option<&str> {
    p.rsplit_once('/').map(|(d, _)| d)
}

fn is_under(k: &str, dir: &str) -> bool {
    k.len() > dir.len() && k.starts_with(dir) && k.as_bytes()[dir.len()] == b'/'
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The sender's tree, with POSIX rules: parents exist, rmdir only when empty, rename
/// onto an empty directory or a file of the same kind, never into itself.
#[derive(Default, Debug)]
struct Source {
    entries: BTreeMap<String, EntrySnapshot>,
    clock: i64,
}

impl Source {
    fn is_dir(&self, p: &str) -> bool {
        p.is_empty() || self.entries.get(p).is_some_and(|a| a.kind == FileType::Directory)
    }

    fn parent_is_dir(&self, p: &str) -> bool {
        self.is_dir(parent(p).unwrap_or(""))
    }

    fn has_children(&self, p: &str) -> bool {
        self.entries.keys().any(|k| is_under(k, p))
    }

    /// The root ("") and every directory.
    fn dirs(&self) -> Vec<String> {
        let mut v = vec![String::new()];
        v.extend(
            self.entries
                .iter()
                .filter(|(_, a)| a.kind == FileType::Directory)
                .map(|(k, _)| k.clone()),
        );
        v
    }

    fn files(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, a)| a.kind == FileType::Regular)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn pick(list: &[String], i: &prop::sample::Index) -> Option<String> {
        (!list.is_empty()).then(|| i.get(list).clone())
    }

    /// Applies `op`; returns the change a producer reports, or `None` if the op fails.
    fn step(&mut self, op: &Op) -> Option<C> {
        self.clock += 1;
        let t = Timestamp::new(self.clock, 0);
        match op {
            Op::Create(d, n) | Op::Mkdir(d, n) => {
                let p = join(&Self::pick(&self.dirs(), d)?, NAMES[*n]);
                if self.entries.contains_key(&p) || p.split('/').count() > MAX_DEPTH {
                    return None;
                }
                let attrs = if matches!(op, Op::Create(..)) {
                    EntrySnapshot::file(0, t)
                } else {
                    EntrySnapshot::dir(t)
                };
                self.entries.insert(p.clone(), attrs);
                Some(Change::Create { key: p, attrs })
            }
            Op::Write(f, n) | Op::Truncate(f, n) => {
                let p = Self::pick(&self.files(), f)?;
                let a = self.entries.get_mut(&p)?;
                a.size = if matches!(op, Op::Write(..)) {
                    a.size.max(*n)
                } else {
                    *n
                };
                a.mtime = t;
                Some(Change::Update { key: p, attrs: *a })
            }
            Op::Remove(e) => {
                let p = Self::pick(&self.entries.keys().cloned().collect::<Vec<_>>(), e)?;
                if self.has_children(&p) {
                    return None;
                }
                self.entries.remove(&p);
                Some(Change::Remove { key: p })
            }
            Op::Rename(e, d, n) => {
                let from = Self::pick(&self.entries.keys().cloned().collect::<Vec<_>>(), e)?;
                let to = join(&Self::pick(&self.dirs(), d)?, NAMES[*n]);
                let attrs = *self.entries.get(&from)?;
                if from == to || is_under(&to, &from) || !self.parent_is_dir(&to) {
                    return None;
                }
                let moved: Vec<String> = self.entries.keys().filter(|k| is_under(k, &from)).cloned().collect();
                let deepest = moved
                    .iter()
                    .map(|k| k.split('/').count() - from.split('/').count())
                    .max();
                if to.split('/').count() + deepest.unwrap_or(0) > MAX_DEPTH {
                    return None;
                }
                if let Some(dst) = self.entries.get(&to) {
                    let dir = attrs.kind == FileType::Directory;
                    if (dst.kind == FileType::Directory) != dir || self.has_children(&to) {
                        return None;
                    }
                }
                self.entries.remove(&to);
                for k in moved {
                    if let Some(v) = self.entries.remove(&k) {
                        self.entries.insert(format!("{to}{}", &k[from.len()..]), v);
                    }
                }
                self.entries.remove(&from);
                self.entries.insert(to.clone(), attrs);
                Some(Change::Rename { from, to, attrs })
            }
            Op::Sleep(_) | Op::Settle => None,
        }
    }

    fn matches(&self, replica: &Replica<String, EntrySnapshot>) -> Result<(), String> {
        let got: BTreeMap<String, EntrySnapshot> = replica.entries().iter().map(|(k, v)| (k.clone(), *v)).collect();
        if got == self.entries {
            Ok(())
        } else {
            Err(format!(
                "replica diverged:\n source  {:?}\n replica {:?}",
                self.entries, got
            ))
        }
    }
}

fn small_config() -> impl Strategy<Value = DebounceConfig> {
    (
        1..5usize,
        1..4usize,
        1..3usize,
        prop_oneof![Just(2usize), Just(1 << 20)],
    )
        .prop_map(
            |(max_batch, queue_capacity, batch_capacity, max_pending)| DebounceConfig {
                max_batch,
                queue_capacity,
                batch_capacity,
                max_pending,
                ..DebounceConfig::default()
            },
        )
}

/// Advances `now` until nothing is pending or held, applying every batch.
fn settle(
    st: &mut DebounceState<String, EntrySnapshot>,
    replica: &mut Replica<String, EntrySnapshot>,
    now: &mut Instant,
    max_batch: usize,
) -> Result<(), TestCaseError> {
    for _ in 0..1_000_000 {
        st.expire(*now);
        while let Some(b) = st.next_batch(*now, false) {
            prop_assert!(b.len() <= max_batch);
            replica.apply_batch(b);
        }
        match st.next_wakeup() {
            Some(at) => *now = at.max(*now + Duration::from_millis(1)),
            None => return Ok(()),
        }
    }
    Err(TestCaseError::fail(
        "the debouncer still had work after 1,000,000 wake-ups",
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// The state machine alone: random tree operations, random time, emitted batches
    /// applied to a replica; at every quiet point and at the end the replica equals the
    /// source.
    #[test]
    fn prop_state_replica_converges(config in small_config(), ops in prop::collection::vec(op(), 1..80)) {
        let mut st = DebounceState::new(&config);
        let mut source = Source::default();
        let mut replica = Replica::new();
        let mut now = Instant::now();
        for op in &ops {
            match op {
                Op::Sleep(n) => {
                    now += ms(*n);
                    st.expire(now);
                }
                Op::Settle => {
                    settle(&mut st, &mut replica, &mut now, config.max_batch)?;
                    source.matches(&replica).map_err(TestCaseError::fail)?;
                }
                op => {
                    if let Some(c) = source.step(op) {
                        st.apply(c, now);
                    }
                }
            }
            while let Some(b) = st.next_batch(now, false) {
                prop_assert!(b.len() <= config.max_batch);
                replica.apply_batch(b);
            }
        }
        settle(&mut st, &mut replica, &mut now, config.max_batch)?;
        source.matches(&replica).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The whole pipeline under tokio's paused clock, with a queue of 1 to 3 changes, a
    /// consumer that lags (backpressure on every stage), and producers that `send` and
    /// wait: quiet points and the end converge.
    #[test]
    fn prop_pipeline_replica_converges_under_backpressure(
        config in small_config(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let result: Result<(), String> = rt.block_on(async move {
            let max_batch = config.max_batch;
            let quiet = config.delay * 3 + config.linger;
            let (d, mut batches) = Debouncer::<String>::spawn(config);
            let replica = StdArc::new(StdMutex::new(Replica::new()));
            let consumer = {
                let replica = StdArc::clone(&replica);
                tokio::spawn(async move {
                    while let Some(b) = batches.next().await {
                        if b.len() > max_batch {
                            return Err(format!("batch of {} > {max_batch}", b.len()));
                        }
                        replica.lock().unwrap().apply_batch(b);
                        tokio::time::sleep(ms(1)).await; // lag: the queues fill up
                    }
                    Ok(())
                })
            };
            let mut source = Source::default();
            for op in &ops {
                match op {
                    Op::Sleep(n) => tokio::time::sleep(ms(*n)).await,
                    Op::Settle => {
                        tokio::time::sleep(quiet).await;
                        source.matches(&replica.lock().unwrap())?;
                    }
                    op => {
                        if let Some(c) = source.step(op) {
                            d.send(c).await.map_err(|_| "task gone".to_owned())?;
                        }
                    }
                }
            }
            tokio::time::sleep(quiet).await;
            source.matches(&replica.lock().unwrap())?;
            drop(d);
            consumer.await.map_err(|e| e.to_string())??;
            source.matches(&replica.lock().unwrap())
        });
        result.map_err(TestCaseError::fail)?;
    }
}
