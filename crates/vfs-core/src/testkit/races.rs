//! Race scenarios: concurrent operations on one backend, checked for the states a correct
//! backend can never show.
//!
//! Invariant: each scenario runs its parties on real OS threads (each with its own
//! current-thread runtime) for `VFS_TESTKIT_RACE_ITERS` rounds (default 1,000), and checks
//! every observation as it is made, so a torn or stale state fails the scenario the moment
//! it is seen, with what was seen. Under `cfg(loom)`, `loom_models` (compiled only then) runs the smallest
//! version of the first two as loom models, exploring every interleaving of the facade
//! locks a backend is built on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::scenarios::{CTX, dotdot, list, mkfile, nm};
use super::{Backend, Failure, KitResult};
use crate::error::Errno;
use crate::types::{Ino, OpenFlags, RenameFlags, SetAttr};
use crate::vfs::VirtualFs;
use crate::{kit_bytes_eq, kit_ensure, kit_try};

/// The longest a race keeps its writer going past its rounds while waiting for the
/// readers to have observed enough.
const RACE_DEADLINE: Duration = Duration::from_secs(1);

fn iterations() -> u64 {
    super::env_u64("VFS_TESTKIT_RACE_ITERS", 1000)
}

/// Sets the flag when dropped: the end of a party that others poll for, even on failure.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Decrements the counter when dropped: a party that others wait on has ended.
struct DecOnDrop<'a>(&'a AtomicU64);

impl Drop for DecOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// One party of a race: a future run on its own thread, ending with a `T` (most races:
/// nothing) or a failure.
pub(crate) type Party<'a, T = ()> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + 'a>>;

pub(crate) fn party<'a, T>(f: impl Future<Output = Result<T, Failure>> + Send + 'a) -> Party<'a, T> {
    Box::pin(f)
}

/// Waits (spinning, then yielding the thread: parties run on their own OS threads) until
/// `in_flight` is odd — another party is inside the operation it brackets with two
/// increments — or `give_up(spins)` says to stop, then spins a random, log-uniform while
/// (up to ~1000 spins, from the xorshift state `rng`) so that what follows lands anywhere
/// inside that operation, not in step with its lock releases. Returns the counter's last
/// value (odd: the operation was in flight when the wait ended).
pub(crate) fn land_inside(in_flight: &AtomicU64, rng: &mut u64, give_up: impl Fn(u32) -> bool) -> u64 {
    let mut spins = 0u32;
    let mut seen = in_flight.load(Ordering::SeqCst);
    while seen.is_multiple_of(2) && !give_up(spins) {
        if spins < 256 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        spins = spins.saturating_add(1);
        seen = in_flight.load(Ordering::SeqCst);
    }
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    for _ in 0..(*rng >> 20) % (1 << (*rng % 11)) {
        std::hint::spin_loop();
    }
    seen
}

/// Runs one future per party, each on its own OS thread and runtime; all start together.
/// Returns the first failure.
pub(crate) fn parties(futs: Vec<Party<'_>>) -> KitResult {
    party_results(futs).map(drop)
}

/// [`parties`] for parties that end with a value: each party's value, in the order given,
/// or the first failure.
pub(crate) fn party_results<T: Send>(futs: Vec<Party<'_, T>>) -> Result<Vec<T>, Failure> {
    let barrier = std::sync::Barrier::new(futs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = futs
            .into_iter()
            .map(|f| {
                let barrier = &barrier;
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| Failure(format!("runtime: {e}")))?;
                    barrier.wait();
                    rt.block_on(f)
                })
            })
            .collect();
        let mut first = Ok(Vec::new());
        for h in handles {
            let r = h.join().unwrap_or_else(|_| Err(Failure("a party panicked".into())));
            match (&mut first, r) {
                (Ok(out), Ok(v)) => out.push(v),
                (Ok(_), Err(f)) => first = Err(f),
                (Err(_), _) => {}
            }
        }
        first
    })
}

/// A byte pattern that is never zero, so zeros read back are always a bug here.
fn pattern(k: u64) -> u8 {
    (k % 250) as u8 + 1
}

/// Seed 000 bug 1 (doc/LESSONS.md#seed-000-bug-1): getattr and read racing a writer that truncates and rewrites a file.
/// No size a reader sees exceeds what the writer wrote, and a read never returns a zero
/// byte: zeros would mean the size ran ahead of the data, the "wrong clamp length and
/// wrong bytes" PostgreSQL saw. (A read may see a page-granular prefix of a concurrent
/// write, as Linux allows; `MemFs` is stricter and its unit tests check that.)
///
/// How it catches a write that publishes the size and the data in two critical sections
/// even with no yield point between them (a window of a few hundred nanoseconds):
///
/// - the writer brackets every write with a sequence counter (odd while a write is in
///   flight), and readers observe *only while a write is in flight*: between writes they
///   touch nothing, so they never queue behind the writer's locks (a reader that parked
///   on a lock wakes after the writer has taken it again: on `MemFs` two readers made
///   130,000 reads inside writes without ever landing in the window);
/// - before each observation a reader waits a random, log-uniform number of spins, so
///   reads land anywhere in the write, not in step with the writer's lock releases;
/// - the writer keeps going, past its `VFS_TESTKIT_RACE_ITERS` rounds, until
///   `VFS_TESTKIT_RACE_ITERS / 4` distinct writes had a whole read inside them (or 1 s
///   passed): on a loaded host the threads may share a core for most of a run, and only
///   reads made inside a write can land in its window.
pub async fn write_vs_getattr<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let n = iterations();
    let ino = kit_try!(mkfile(&*b.fs, Ino::ROOT, "f", b"").await, "create f");
    // Every length the writer can use (it may run past `n` rounds, see below).
    let largest = 512u64;
    // Small writes from buffers made up front: the writer's rounds are then mostly the
    // backend's own work, so a preemption or a parallel reader lands between a backend's
    // critical sections as often as possible. Every write extends the file (it follows a
    // truncation to 0), so every write opens the window a two-section write has.
    let buffers: Vec<Vec<u8>> = (0..64u64)
        .map(|k| vec![pattern(k); 1 + (k as usize * 37) % 512])
        .collect();
    let fs = &*b.fs;
    let done = AtomicBool::new(false);
    // Odd while the writer is inside `write`.
    let in_write = AtomicU64::new(0);
    // Reader observations that overlapped a write, and all of them.
    let overlaps = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let readers_left = AtomicU64::new(2);
    // Writes with a whole read inside them, counted once each. The no-yield two-section
    // mutant is caught within 16 of them in every run measured (doc/BACKENDS.md); a
    // correct MemFs makes ~150-800 a second on a loaded 2-core machine.
    let need = n / 4;
    let deadline = Instant::now() + RACE_DEADLINE;
    let writer = async {
        let _done = SetOnDrop(&done);
        let fh = kit_try!(fs.open(&CTX, ino, OpenFlags::RDWR).await, "open for writing");
        let mut k = 0u64;
        // A reader that ended early failed: its verdict is the race's.
        while readers_left.load(Ordering::Relaxed) == 2
            && (k < n || (overlaps.load(Ordering::Relaxed) < need && Instant::now() < deadline))
        {
            kit_try!(fs.setattr(&CTX, ino, SetAttr::size(0)).await, "truncate to 0");
            in_write.fetch_add(1, Ordering::SeqCst);
            let w = fs.write(&CTX, ino, fh, 0, &buffers[(k % 64) as usize]).await;
            in_write.fetch_add(1, Ordering::SeqCst);
            kit_try!(w, "write round {k}");
            k += 1;
        }
        kit_try!(fs.release(&CTX, ino, fh).await, "release");
        let seen = overlaps.load(Ordering::Relaxed);
        if seen < need && readers_left.load(Ordering::Relaxed) == 2 {
            println!(
                "race write_vs_getattr: {seen} of {need} reads overlapped a write before the {RACE_DEADLINE:?} deadline ({k} writes, {} reads; a busy machine): a two-section write may go unseen",
                reads.load(Ordering::Relaxed)
            );
        }
        Ok(())
    };
    let reader = |seed: u64| {
        let (done, in_write, overlaps, reads, readers_left) = (&done, &in_write, &overlaps, &reads, &readers_left);
        async move {
            let _left = DecOnDrop(readers_left);
            let mut rng = seed | 1;
            let mut counted = 0;
            let fh = kit_try!(fs.open(&CTX, ino, OpenFlags::RDONLY).await, "open for reading");
            let mut k = 0u64;
            while !done.load(Ordering::Acquire) {
                // Observe only while a write is in flight: between writes the readers touch
                // nothing, so they never queue on (and park behind) the writer's locks, and
                // a reader spinning on a lock the writer holds gets it the moment the writer
                // lets go: in the window between two critical sections, if there is one.
                // Then wait a random while (log-uniform, up to ~1000 spins) so that reads
                // land anywhere in the write, not in step with the writer's lock releases
                // (a reader that waited on a lock wakes after the writer took it again).
                let before = land_inside(in_write, &mut rng, |_| done.load(Ordering::Relaxed));
                if k.is_multiple_of(4) {
                    let a = kit_try!(fs.getattr(&CTX, ino, None).await, "getattr");
                    kit_ensure!(
                        a.size <= largest,
                        "rule: [race.size_bound] getattr never sees a size no write made\n  expected: at most {largest}\n  seen:     {}",
                        a.size
                    );
                }
                let data = kit_try!(fs.read(&CTX, ino, fh, 0, 16384).await, "read");
                let after = in_write.load(Ordering::SeqCst);
                kit_ensure!(
                    data.len() as u64 <= largest,
                    "rule: [race.size_bound] a read never returns more than any write\n  expected: at most {largest} bytes\n  seen:     {}",
                    data.len()
                );
                if let Some(at) = data.iter().position(|&x| x == 0) {
                    return Err(Failure(format!(
                        "rule: [race.size_with_data] a reader never sees a size without its data (the writer writes no zero byte)\n  seen: a read of {} bytes with zeros in it, the first at offset {at} (observation {k} of this reader; {} observations so far overlapped a write): the size ran ahead of the data\n  at: {}:{}",
                        data.len(),
                        overlaps.load(Ordering::Relaxed),
                        file!(),
                        line!()
                    )));
                }
                if before % 2 == 1 && before == after && before != counted {
                    counted = before;
                    overlaps.fetch_add(1, Ordering::Relaxed);
                }
                reads.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
            kit_try!(fs.release(&CTX, ino, fh).await, "release");
            Ok(())
        }
    };
    parties(vec![
        party(writer),
        party(reader(0x9E37_79B9_7F4A_7C15)),
        party(reader(0xD1B5_4A32_D192_ED03)),
    ])
}

/// A name replaced by rename stays visible to lookups throughout (POSIX rename atomicity:
/// git's `index.lock → index`, editors' save-by-rename).
pub async fn rename_vs_lookup<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let n = iterations();
    let fs = &*b.fs;
    kit_try!(mkfile(fs, Ino::ROOT, "target", b"0").await, "create target");
    let done = AtomicBool::new(false);
    let renamer = async {
        let _done = SetOnDrop(&done);
        for k in 0..n {
            let tmp = format!("tmp{k}");
            kit_try!(mkfile(fs, Ino::ROOT, &tmp, b"1").await, "create {tmp}");
            kit_try!(
                fs.rename(&CTX, Ino::ROOT, nm(&tmp), Ino::ROOT, nm("target"), RenameFlags::NONE)
                    .await,
                "rename {tmp} over target"
            );
        }
        Ok(())
    };
    let looker = || async {
        let mut k = 0u64;
        while !done.load(Ordering::Acquire) {
            kit_try!(
                fs.lookup(&CTX, Ino::ROOT, nm("target")).await,
                "lookup of target (round {k}) while it is renamed over"
            );
            k += 1;
        }
        Ok(())
    };
    parties(vec![party(renamer), party(looker()), party(looker())])?;
    let left = kit_try!(list(fs, Ino::ROOT, 64).await, "readdir");
    kit_ensure!(left.len() == 1 && left[0].0 == "target", "after the renames: {left:?}");
    Ok(())
}

/// Two parties that start each round together: each calls [`Rendezvous::meet`] with the
/// round's number, then [`Rendezvous::jitter`], so that one party's operation lands
/// anywhere inside the other's. A party that ends (even by failing) sets `ended` through
/// [`Rendezvous::leaving`], and the other stops waiting for it.
struct Rendezvous {
    arrived: AtomicU64,
    ended: AtomicBool,
}

impl Rendezvous {
    fn new() -> Self {
        Rendezvous {
            arrived: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        }
    }

    /// Marks this party's end when the guard drops.
    fn leaving(&self) -> SetOnDrop<'_> {
        SetOnDrop(&self.ended)
    }

    /// Waits (spinning, then yielding the thread) until both parties reached round `k`;
    /// false if the other party has ended.
    fn meet(&self, k: u64) -> bool {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut spins = 0u32;
        loop {
            if self.arrived.load(Ordering::SeqCst) >= 2 * (k + 1) {
                return true;
            }
            if self.ended.load(Ordering::Acquire) {
                return false;
            }
            if spins < 256 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            spins = spins.saturating_add(1);
        }
    }

    /// Spins a random 0-63 times (xorshift state `rng`).
    fn jitter(rng: &mut u64) {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        for _ in 0..*rng % 64 {
            std::hint::spin_loop();
        }
    }
}

/// Two renames of one name at once, to different targets: one moves it, the other answers
/// `ENOENT`, and the inode ends under exactly one name with one link. Each round, party
/// `a` creates `s{k}`, both meet (a spinning rendezvous), wait a random few spins and
/// rename `s{k}` to `a{k}` and `b{k}`, for `VFS_TESTKIT_RACE_ITERS` rounds. In a backend
/// whose rename awaits between its lookups and its locks (a database, a network) the bad
/// interleaving is common; in one with no await there (MemFs) only a preemption inside
/// that window opens it: a backend that forgets to recheck is caught in about one run in
/// five there (loom models are the tool for such windows).
pub async fn rename_vs_rename<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let n = iterations();
    let fs = &*b.fs;
    let rv = Rendezvous::new();
    let mover = |side: &'static str, seed: u64| {
        let rv = &rv;
        async move {
            let _leaving = rv.leaving();
            let mut rng = seed;
            let mut won = Vec::new();
            for k in 0..n {
                let (from, to) = (format!("s{k}"), format!("{side}{k}"));
                if side == "a" {
                    kit_try!(mkfile(fs, Ino::ROOT, &from, b"").await, "create {from}");
                }
                if !rv.meet(k) {
                    return Ok((k, won));
                }
                Rendezvous::jitter(&mut rng);
                match fs
                    .rename(&CTX, Ino::ROOT, nm(&from), Ino::ROOT, nm(&to), RenameFlags::NONE)
                    .await
                {
                    Ok(()) => won.push(k),
                    Err(e) if e.errno() == Errno::ENOENT => {}
                    Err(e) => {
                        return Err(Failure(format!(
                            "rule: [rename.one_winner] of two renames of {from} at once, one moves it and the other answers ENOENT\n  expected: success or ENOENT\n  seen:     {:?} ({e:?}) for rename {from} -> {to}\n  at: {}:{}",
                            e.errno(),
                            file!(),
                            line!()
                        )));
                    }
                }
            }
            Ok((n, won))
        }
    };
    let results = party_results(vec![
        party(mover("a", 0x9e37_79b9_7f4a_7c15)),
        party(mover("b", 0xd1b5_4a32_d192_ed03)),
    ])?;
    // Party `a` makes the files: its round count is how many there were.
    let rounds = results.first().map_or(0, |r| r.0);
    let wins: usize = results.iter().map(|r| r.1.len()).sum();
    let entries = kit_try!(list(fs, Ino::ROOT, 64).await, "readdir / after the renames");
    let mut by_ino: HashMap<Ino, Vec<&str>> = HashMap::new();
    for (name, _, ino) in &entries {
        by_ino.entry(*ino).or_default().push(name.as_str());
    }
    for (ino, names) in &by_ino {
        let a = kit_try!(fs.getattr(&CTX, *ino, None).await, "getattr of {names:?}");
        kit_ensure!(
            names.len() == 1 && a.nlink == 1,
            "rule: [rename.one_winner] two renames of one name at once move it once\n  expected: one name, nlink 1\n  seen:     names {names:?}, nlink {} (after {rounds} rounds)",
            a.nlink
        );
    }
    kit_ensure!(
        wins as u64 == rounds && entries.len() as u64 == rounds && entries.iter().all(|e| !e.0.starts_with('s')),
        "rule: [rename.one_winner] of two renames of one name at once exactly one succeeds\n  expected: {rounds} successes, {rounds} names, none of them s*\n  seen:     {wins} successes, {} names",
        entries.len()
    );
    Ok(())
}

/// Two directories moved into each other at once (`A` into `B` and `B` into `A`,
/// siblings): exactly one move succeeds, the other is `EINVAL` (it would move a directory
/// into its own subtree), and both stay reachable from the root. A backend that checks
/// "not into its own subtree" without keeping the answer true until the move is done
/// (Linux serializes cross-directory renames for this) can make a cycle cut off from the
/// tree. Each round, in a fresh directory, party `a` makes `A` and `B`; the parties meet,
/// wait a random few spins and move.
pub async fn rename_cycle_race<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let n = iterations() / 4;
    let fs = &*b.fs;
    let rv = Rendezvous::new();
    let made: std::sync::Mutex<Vec<(Ino, Ino, Ino)>> = std::sync::Mutex::new(Vec::new());
    fn poisoned<T>(_: T) -> Failure {
        Failure("a party panicked".into())
    }
    let mover = |first: bool, seed: u64| {
        let (rv, made) = (&rv, &made);
        async move {
            let _leaving = rv.leaving();
            let mut rng = seed;
            let mut won = 0u64;
            for k in 0..n {
                if first {
                    let r = kit_try!(
                        fs.mkdir(&CTX, Ino::ROOT, nm(&format!("r{k}")), 0o755, 0).await,
                        "mkdir r{k}"
                    );
                    let a = kit_try!(fs.mkdir(&CTX, r.ino, nm("A"), 0o755, 0).await, "mkdir r{k}/A");
                    let b = kit_try!(fs.mkdir(&CTX, r.ino, nm("B"), 0o755, 0).await, "mkdir r{k}/B");
                    made.lock().map_err(poisoned)?.push((r.ino, a.ino, b.ino));
                }
                if !rv.meet(k) {
                    return Ok(won);
                }
                let (r, a, b) = made.lock().map_err(poisoned)?[k as usize];
                let (name, into, what) = if first {
                    ("A", b, "A into B")
                } else {
                    ("B", a, "B into A")
                };
                Rendezvous::jitter(&mut rng);
                match fs.rename(&CTX, r, nm(name), into, nm(name), RenameFlags::NONE).await {
                    Ok(()) => won += 1,
                    Err(e) if e.errno() == Errno::EINVAL => {}
                    Err(e) => {
                        return Err(Failure(format!(
                            "rule: [rename.no_cycle] of two directories moved into each other at once, one moves and the other is EINVAL\n  expected: success or EINVAL\n  seen:     {:?} ({e:?}) moving {what} (round {k})\n  at: {}:{}",
                            e.errno(),
                            file!(),
                            line!()
                        )));
                    }
                }
            }
            Ok(won)
        }
    };
    let wins: u64 = party_results(vec![
        party(mover(true, 0x2545_f491_4f6c_dd1d)),
        party(mover(false, 0x9e37_79b9_7f4a_7c15)),
    ])?
    .into_iter()
    .sum();
    let made = made.into_inner().map_err(poisoned)?;
    for (k, (r, a, b)) in made.iter().enumerate() {
        for (d, what) in [(*a, "A"), (*b, "B")] {
            // Up the `..` chain: the round's directory must be reached in at most two steps.
            let mut at = d;
            let mut steps = 0;
            while at != *r && steps < 3 {
                at = match kit_try!(dotdot(fs, at).await, "readdir of r{k}'s {what} or its parent") {
                    Some(up) => up,
                    None => break,
                };
                steps += 1;
            }
            kit_ensure!(
                at == *r,
                "rule: [rename.no_cycle] two directories moved into each other at once stay in the tree\n  expected: r{k}/{what}'s .. chain reaches r{k}\n  seen:     it does not within 3 steps (a cycle cut off from the tree)"
            );
        }
    }
    kit_ensure!(
        wins == made.len() as u64,
        "rule: [rename.no_cycle] of two directories moved into each other at once exactly one moves\n  expected: {} moves in {} rounds\n  seen:     {wins}",
        made.len(),
        made.len()
    );
    Ok(())
}

/// Listings taken while other entries are created and removed list every untouched entry
/// exactly once and repeat no name.
pub async fn create_vs_readdir<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let n = iterations();
    let fs = &*b.fs;
    // Churned names exist before the kept ones too, so that in a backend that lists in
    // creation order their removal happens ahead of a listing's cursor.
    for i in 0..20 {
        kit_try!(
            mkfile(fs, Ino::ROOT, &format!("churn{i}"), b"").await,
            "create churn{i}"
        );
    }
    for i in 0..50 {
        kit_try!(
            mkfile(fs, Ino::ROOT, &format!("keep{i:02}"), b"").await,
            "create keep{i}"
        );
    }
    let churn = async {
        for k in 0..n {
            let name = format!("churn{}", k % 20);
            if k % 40 < 20 {
                kit_try!(fs.unlink(&CTX, Ino::ROOT, nm(&name)).await, "unlink {name}");
            } else {
                kit_try!(mkfile(fs, Ino::ROOT, &name, b"").await, "create {name}");
            }
        }
        Ok(())
    };
    let lister = async {
        for round in 0..(n / 10).max(5) {
            let entries = kit_try!(list(fs, Ino::ROOT, 4).await, "listing {round}");
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (name, _, _) in &entries {
                *seen.entry(name.as_str()).or_default() += 1;
            }
            for (name, count) in &seen {
                kit_ensure!(*count == 1, "listing {round}: {name} appeared {count} times");
            }
            for i in 0..50 {
                let k = format!("keep{i:02}");
                kit_ensure!(seen.contains_key(k.as_str()), "listing {round}: untouched {k} missing");
            }
        }
        Ok(())
    };
    parties(vec![party(churn), party(lister)])
}

const RECORD: usize = 512;

fn record(k: u64) -> Vec<u8> {
    let mut r = vec![pattern(k); RECORD];
    r[..8].copy_from_slice(&k.to_le_bytes());
    r
}

fn check_records(data: &[u8], when: &str) -> KitResult {
    kit_ensure!(
        data.len().is_multiple_of(RECORD),
        "{when}: {} bytes is not a whole number of {RECORD}-byte records",
        data.len()
    );
    for (i, r) in data.chunks(RECORD).enumerate() {
        let mut head = [0u8; 8];
        head.copy_from_slice(&r[..8]);
        let k = u64::from_le_bytes(head);
        kit_ensure!(
            r[8..].iter().all(|&x| x == pattern(k)),
            "{when}: record {i} (number {k}) is torn"
        );
    }
    Ok(())
}

/// Appends of whole records racing truncations to zero: the file is always a whole number
/// of intact records (no append lands at a stale offset, none is torn by a truncation).
pub async fn write_vs_truncate<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let n = iterations();
    let fs = &*b.fs;
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "log", b"").await, "create log");
    let appender = async {
        let fh = kit_try!(
            fs.open(&CTX, ino, OpenFlags::WRONLY.with(libc::O_APPEND)).await,
            "open O_APPEND"
        );
        for k in 0..n {
            let w = kit_try!(fs.write(&CTX, ino, fh, 0, &record(k)).await, "append {k}");
            kit_ensure!(w as usize == RECORD, "append {k} wrote {w} bytes");
        }
        kit_try!(fs.release(&CTX, ino, fh).await, "release");
        Ok(())
    };
    let truncater = async {
        for k in 0..n / 8 {
            kit_try!(fs.setattr(&CTX, ino, SetAttr::size(0)).await, "truncate {k}");
            tokio::task::yield_now().await;
        }
        Ok(())
    };
    let checker = async {
        let fh = kit_try!(fs.open(&CTX, ino, OpenFlags::RDONLY).await, "open for reading");
        for k in 0..n / 4 {
            let a = kit_try!(fs.getattr(&CTX, ino, None).await, "getattr {k}");
            kit_ensure!(
                a.size.is_multiple_of(RECORD as u64),
                "getattr {k}: size {} is not whole records",
                a.size
            );
            let data = kit_try!(fs.read(&CTX, ino, fh, 0, 1 << 20).await, "read {k}");
            check_records(&data, &format!("read {k}"))?;
        }
        kit_try!(fs.release(&CTX, ino, fh).await, "release");
        Ok(())
    };
    parties(vec![party(appender), party(truncater), party(checker)])?;
    let fh = kit_try!(fs.open(&CTX, ino, OpenFlags::RDONLY).await, "open");
    let data = kit_try!(fs.read(&CTX, ino, fh, 0, 1 << 24).await, "final read");
    kit_try!(fs.release(&CTX, ino, fh).await, "release");
    check_records(&data, "final content")
}

/// A handle keeps reading the file it opened while its name is unlinked and reused for a
/// new file (unlink while open, under churn).
pub async fn unlink_vs_read<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let n = iterations();
    let fs = &*b.fs;
    let original: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8 + 1).collect();
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "f", &original).await, "create f");
    let fh = kit_try!(fs.open(&CTX, ino, OpenFlags::RDONLY).await, "open f");
    let churn = async {
        for k in 0..n / 4 {
            kit_try!(fs.unlink(&CTX, Ino::ROOT, nm("f")).await, "unlink f ({k})");
            kit_try!(mkfile(fs, Ino::ROOT, "f", &[0xEE; 4096]).await, "create a new f ({k})");
        }
        Ok(())
    };
    let reader = async {
        for k in 0..n {
            let off = (k * 4096) % 65536;
            let data = kit_try!(
                fs.read(&CTX, ino, fh, off, 4096).await,
                "read through the open handle ({k})"
            );
            kit_bytes_eq!(
                data,
                original[off as usize..off as usize + 4096],
                "an open handle keeps reading the file it opened, though its name was unlinked and reused (read of 4096 bytes at {off}, round {k})"
            );
        }
        Ok(())
    };
    parties(vec![party(churn), party(reader)])?;
    kit_try!(fs.release(&CTX, ino, fh).await, "release");
    if let Ok(a) = fs.getattr(&CTX, ino, None).await {
        return Err(Failure(format!(
            "rule: an unlinked file is gone once its last handle is released
  expected: getattr of inode {} fails (ESTALE or ENOENT)
  seen:     success, nlink {}, size {}
  at: {}:{}",
            ino.0,
            a.nlink,
            a.size,
            file!(),
            line!()
        )));
    }
    Ok(())
}

/// Loom models of the races above, for backends whose concurrency is built on
/// [`crate::sync`] (run under `RUSTFLAGS="--cfg loom"`).
#[cfg(loom)]
pub mod loom_models {
    use super::*;
    use crate::sync::thread;

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        loom::future::block_on(f)
    }

    /// One write racing one getattr+read: the reader sees the file before or after the
    /// write, never a size without its data.
    pub fn write_vs_getattr<F: VirtualFs>(factory: impl Fn() -> Backend<F> + Sync + Send + 'static) {
        loom::model(move || {
            let b = factory();
            let ino = block_on(mkfile(&*b.fs, Ino::ROOT, "f", b"")).expect("create f");
            let wfh = block_on(b.fs.open(&CTX, ino, OpenFlags::RDWR)).expect("open");
            let rfh = block_on(b.fs.open(&CTX, ino, OpenFlags::RDONLY)).expect("open");
            let w = {
                let fs = std::sync::Arc::clone(&b.fs);
                thread::spawn(move || block_on(fs.write(&CTX, ino, wfh, 0, b"abcd")).expect("write"))
            };
            let a = block_on(b.fs.getattr(&CTX, ino, None)).expect("getattr");
            let d = block_on(b.fs.read(&CTX, ino, rfh, 0, 16)).expect("read");
            w.join().expect("writer");
            assert!(a.size == 0 || a.size == 4, "size {}", a.size);
            assert!(d.is_empty() || &d[..] == b"abcd", "read {:?}", &d[..]);
        });
    }

    /// One rename over a name racing one lookup of it: the lookup always finds it.
    pub fn rename_vs_lookup<F: VirtualFs>(factory: impl Fn() -> Backend<F> + Sync + Send + 'static) {
        loom::model(move || {
            let b = factory();
            block_on(mkfile(&*b.fs, Ino::ROOT, "target", b"")).expect("create target");
            block_on(mkfile(&*b.fs, Ino::ROOT, "tmp", b"")).expect("create tmp");
            let r = {
                let fs = std::sync::Arc::clone(&b.fs);
                thread::spawn(move || {
                    block_on(fs.rename(&CTX, Ino::ROOT, nm("tmp"), Ino::ROOT, nm("target"), RenameFlags::NONE))
                        .expect("rename")
                })
            };
            block_on(b.fs.lookup(&CTX, Ino::ROOT, nm("target"))).expect("lookup during rename");
            r.join().expect("renamer");
        });
    }
}
