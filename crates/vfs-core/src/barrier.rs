//! `OpBarrier`: per-inode operation ordering.
//!
//! Invariant: writes to one inode apply in the order they were *issued*
//! ([`OpBarrier::begin_write`] order); a read waits for exactly the writes issued before
//! it ([`OpBarrier::begin_read`] captures them) and never for a write issued after it; and
//! an inode has state here only while some operation on it is pending, so
//! [`OpBarrier::inode_count`] returns to zero when the filesystem is quiet. A ticket
//! dropped without being completed (a cancelled future, an early `?` return) counts as
//! completed, so it can never wedge the operations issued after it.
//!
//! *Prevents:* seed 001 (doc/LESSONS.md#seed-001), PostgreSQL's "read only 0 of 8192 bytes" and stale sizes: a read
//! (or a `getattr`) issued after a write was accepted ran before that write had reached
//! the backing file, because writes were applied asynchronously with nothing ordering
//! them against later reads. The fix there was a sequence barrier (`pending.rs`): "READs
//! see all preceding WRITEs, don't wait for concurrent ones", writes run FIFO, and the
//! per-inode entry is removed on `forget` so it does not accumulate. This module is that
//! barrier, with removal made automatic (an idle inode has no entry at all) and
//! cancellation made harmless.
//!
//! # How it works
//!
//! Each inode with pending operations has an entry `{next, done}`: `begin_write` hands out
//! sequence number `next` and increments it; `done` is the length of the prefix of
//! sequence numbers that have completed. A write waits for `done >= seq` (every earlier
//! write finished) before it applies; a read captures `target = next` when it begins and
//! waits for `done >= target`. A write completed out of order (only possible by dropping
//! its ticket before its turn) is parked until the prefix reaches it. When `done == next`
//! and no reader is registered, the entry is removed.
//!
//! Waiting is available both blocking (a facade [`Condvar`], for kernel-request threads
//! and for loom) and async (wakers kept in the entry, for tokio tasks that must not block
//! a worker). Both go through the same bookkeeping under the same shard [`Mutex`], which
//! is what the loom models check. The shard lock is a leaf: nothing else is locked while
//! it is held, and wakers are woken only after it is released.
//!
//! ```
//! use vfs_core::barrier::OpBarrier;
//! use vfs_core::Ino;
//!
//! let barrier = OpBarrier::new();
//! let w = barrier.begin_write(Ino(7)); // issued: later reads will wait for it
//! let r = barrier.begin_read(Ino(7)); // captures "one write pending"
//! w.wait_turn(); // no earlier write: returns at once
//! // ... apply the write to the backend ...
//! w.complete();
//! r.wait(); // returns: the write it must see has completed
//! assert_eq!(barrier.inode_count(), 0);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use rustc_hash::FxHasher;

use crate::sync::{Condvar, Mutex, MutexGuard};
use crate::types::Ino;

#[cfg(not(loom))]
const SHARDS: usize = 64;
#[cfg(loom)]
const SHARDS: usize = 2;

type InodeMap = HashMap<Ino, InodeOps, BuildHasherDefault<FxHasher>>;

/// One inode's pending operations.
#[derive(Default)]
struct InodeOps {
    /// The sequence number the next `begin_write` gets.
    next: u64,
    /// Every write with a sequence number below this has completed.
    done: u64,
    /// Writes completed out of order (tickets dropped before their turn), all `> done`.
    early: Vec<u64>,
    /// Read tickets that captured a target not yet reached; they keep the entry alive so
    /// that sequence numbers are not restarted under them.
    readers: u32,
    /// Threads blocked on the shard's condition variable for this inode.
    blocked: u32,
    /// Async waiters: `(target, id, waker)`.
    wakers: Vec<(u64, u64, Waker)>,
    /// Source of waiter ids.
    waiter_ids: u64,
}

impl InodeOps {
    fn idle(&self) -> bool {
        self.done == self.next && self.readers == 0
    }

    /// Marks `seq` complete. Returns whether `done` advanced.
    fn complete(&mut self, seq: u64) -> bool {
        if seq != self.done {
            self.early.push(seq);
            return false;
        }
        self.done += 1;
        while let Some(pos) = self.early.iter().position(|&s| s == self.done) {
            self.early.swap_remove(pos);
            self.done += 1;
        }
        true
    }
}

struct Shard {
    map: Mutex<InodeMap>,
    cond: Condvar,
}

/// Per-inode ordering of reads and writes. See the [module docs](self).
pub struct OpBarrier {
    shards: Box<[Shard]>,
}

impl fmt::Debug for OpBarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpBarrier")
            .field("inodes", &self.inode_count())
            .finish()
    }
}

impl Default for OpBarrier {
    fn default() -> Self {
        Self::new()
    }
}

impl OpBarrier {
    /// An empty barrier.
    pub fn new() -> Self {
        let shards = (0..SHARDS)
            .map(|_| Shard {
                map: Mutex::new(InodeMap::default()),
                cond: Condvar::new(),
            })
            .collect();
        OpBarrier { shards }
    }

    fn shard(&self, ino: Ino) -> &Shard {
        // Fibonacci hashing spreads sequential inode numbers over the shards.
        let h = ino.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros());
        &self.shards[(h as usize) % SHARDS]
    }

    /// Issues a write to `ino`: it gets the next sequence number now, and will apply after
    /// every write issued before it. Call this in the order the writes arrive (on the
    /// thread that receives them), then [`WriteTicket::wait_turn`] (or its async form)
    /// before applying, then [`WriteTicket::complete`] (or drop the ticket).
    pub fn begin_write(&self, ino: Ino) -> WriteTicket<'_> {
        let mut map = self.shard(ino).map.lock();
        let ops = map.entry(ino).or_default();
        let seq = ops.next;
        ops.next += 1;
        WriteTicket {
            barrier: self,
            ino,
            seq,
            // `done` never decreases while this ticket is outstanding, so a write with no
            // earlier write pending needs no second look.
            turn_at_issue: ops.done == seq,
            completed: false,
        }
    }

    /// Begins a read of `ino`: captures the writes issued so far, which
    /// [`ReadTicket::wait`] will wait for. Writes issued after this call are not waited
    /// for. When no write is pending the ticket is already satisfied and nothing is
    /// recorded.
    pub fn begin_read(&self, ino: Ino) -> ReadTicket<'_> {
        let mut map = self.shard(ino).map.lock();
        let target = match map.get_mut(&ino) {
            Some(ops) if ops.done < ops.next => {
                ops.readers += 1;
                Some(ops.next)
            }
            _ => None,
        };
        ReadTicket {
            barrier: self,
            ino,
            target,
        }
    }

    /// Blocks until every write to `ino` issued before this call has completed.
    /// `begin_read(ino).wait()`.
    pub fn read(&self, ino: Ino) {
        self.begin_read(ino).wait();
    }

    /// Waits (async) until every write to `ino` issued before this call has completed.
    /// The writes are captured when this is called, not when the future is first polled.
    pub fn read_async(&self, ino: Ino) -> impl Future<Output = ()> + Send + '_ {
        self.begin_read(ino).wait_async()
    }

    /// The kernel forgot `ino`: drops its state if nothing is pending on it and returns
    /// `true`; returns `false` if operations are still in flight, in which case the state
    /// goes when the last of them completes. (Dropping it earlier would restart the
    /// sequence numbers under the in-flight operations and break their order.)
    pub fn forget(&self, ino: Ino) -> bool {
        let mut map = self.shard(ino).map.lock();
        match map.get(&ino) {
            Some(ops) if ops.idle() => {
                map.remove(&ino);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// How many inodes have state (pending operations). Zero when the filesystem is quiet.
    pub fn inode_count(&self) -> usize {
        self.shards.iter().map(|s| s.map.lock().len()).sum()
    }

    /// Blocks until `done >= target` on `ino`; returns the held shard lock.
    fn wait_until(&self, ino: Ino, target: u64) -> MutexGuard<'_, InodeMap> {
        let shard = self.shard(ino);
        let mut map = shard.map.lock();
        loop {
            match map.get_mut(&ino) {
                Some(ops) if ops.done < target => ops.blocked += 1,
                // Reached, or no entry: an entry is only removed when nothing is pending.
                _ => return map,
            }
            map = shard.cond.wait(map);
            if let Some(ops) = map.get_mut(&ino) {
                ops.blocked -= 1;
            }
        }
    }

    /// Completes write `seq` on `ino`, wakes whoever it unblocks, removes idle state.
    fn complete(&self, ino: Ino, seq: u64) {
        let shard = self.shard(ino);
        let mut woken = Vec::new();
        let mut notify = false;
        {
            let mut map = shard.map.lock();
            let Some(ops) = map.get_mut(&ino) else {
                return;
            };
            if ops.complete(seq) {
                let done = ops.done;
                let mut i = 0;
                while i < ops.wakers.len() {
                    if ops.wakers[i].0 <= done {
                        woken.push(ops.wakers.swap_remove(i).2);
                    } else {
                        i += 1;
                    }
                }
                notify = ops.blocked > 0;
            }
            if ops.idle() {
                map.remove(&ino);
            }
        }
        if notify {
            shard.cond.notify_all();
        }
        for w in woken {
            w.wake();
        }
    }

    /// Drops a reader's registration; removes the entry if that made it idle.
    fn release_reader(map: &mut InodeMap, ino: Ino) {
        if let Some(ops) = map.get_mut(&ino) {
            ops.readers = ops.readers.saturating_sub(1);
            if ops.idle() {
                map.remove(&ino);
            }
        }
    }

    /// One poll of an async wait for `done >= target`. `id` is this waiter's slot.
    fn poll_until(&self, ino: Ino, target: u64, id: &mut Option<u64>, cx: &mut Context<'_>) -> Poll<()> {
        let mut map = self.shard(ino).map.lock();
        let Some(ops) = map.get_mut(&ino) else {
            *id = None;
            return Poll::Ready(());
        };
        if ops.done >= target {
            if let Some(me) = id.take() {
                ops.wakers.retain(|w| w.1 != me);
            }
            return Poll::Ready(());
        }
        match id.and_then(|me| ops.wakers.iter_mut().find(|w| w.1 == me)) {
            Some(slot) => {
                if !slot.2.will_wake(cx.waker()) {
                    slot.2 = cx.waker().clone();
                }
            }
            None => {
                let me = ops.waiter_ids;
                ops.waiter_ids += 1;
                ops.wakers.push((target, me, cx.waker().clone()));
                *id = Some(me);
            }
        }
        Poll::Pending
    }

    /// Removes an async waiter's waker (its future was dropped before it was ready).
    fn forget_waker(&self, ino: Ino, id: u64) {
        let mut map = self.shard(ino).map.lock();
        if let Some(ops) = map.get_mut(&ino) {
            ops.wakers.retain(|w| w.1 != id);
        }
    }
}

/// A write issued to one inode. Dropping it (completed or not) completes it.
#[must_use = "a write ticket orders the write only if it is waited on"]
pub struct WriteTicket<'a> {
    barrier: &'a OpBarrier,
    ino: Ino,
    seq: u64,
    /// No earlier write was pending when this one was issued.
    turn_at_issue: bool,
    completed: bool,
}

impl fmt::Debug for WriteTicket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTicket")
            .field("ino", &self.ino)
            .field("seq", &self.seq)
            .finish()
    }
}

impl WriteTicket<'_> {
    /// This write's sequence number on its inode (0 for the first pending write).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The inode written.
    pub fn ino(&self) -> Ino {
        self.ino
    }

    /// Blocks until every write to this inode issued before this one has completed.
    pub fn wait_turn(&self) {
        if !self.turn_at_issue {
            drop(self.barrier.wait_until(self.ino, self.seq));
        }
    }

    /// Waits (async) until every write to this inode issued before this one has
    /// completed. Dropping the future only stops waiting; the ticket stays issued.
    pub fn wait_turn_async(&self) -> Wait<'_> {
        Wait {
            barrier: self.barrier,
            ino: self.ino,
            target: self.seq,
            id: None,
            ready: self.turn_at_issue,
        }
    }

    /// The write has been applied: later writes may go, and reads waiting for it return.
    pub fn complete(mut self) {
        self.completed = true;
        self.barrier.complete(self.ino, self.seq);
    }
}

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        if !self.completed {
            // Cancelled: count it as completed so it does not wedge later operations.
            self.barrier.complete(self.ino, self.seq);
        }
    }
}

/// A read begun on one inode, holding the set of writes it must see.
#[must_use = "a read ticket orders nothing unless it is waited on"]
pub struct ReadTicket<'a> {
    barrier: &'a OpBarrier,
    ino: Ino,
    /// `None` when nothing was pending at `begin_read` (or the wait has finished).
    target: Option<u64>,
}

impl fmt::Debug for ReadTicket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadTicket")
            .field("ino", &self.ino)
            .field("target", &self.target)
            .finish()
    }
}

impl<'a> ReadTicket<'a> {
    /// Whether the read can go without waiting (every write it must see has completed).
    pub fn is_ready(&self) -> bool {
        let Some(target) = self.target else {
            return true;
        };
        let map = self.barrier.shard(self.ino).map.lock();
        map.get(&self.ino).is_none_or(|ops| ops.done >= target)
    }

    /// Blocks until every write issued before [`OpBarrier::begin_read`] has completed.
    pub fn wait(mut self) {
        if let Some(target) = self.target.take() {
            let mut map = self.barrier.wait_until(self.ino, target);
            OpBarrier::release_reader(&mut map, self.ino);
        }
    }

    /// Waits (async) until every write issued before [`OpBarrier::begin_read`] has
    /// completed. Dropping the future releases the ticket.
    pub fn wait_async(self) -> ReadWait<'a> {
        ReadWait {
            wait: self.target.map(|target| Wait {
                barrier: self.barrier,
                ino: self.ino,
                target,
                id: None,
                ready: false,
            }),
            ticket: self,
        }
    }
}

impl Drop for ReadTicket<'_> {
    fn drop(&mut self) {
        if self.target.take().is_some() {
            let mut map = self.barrier.shard(self.ino).map.lock();
            OpBarrier::release_reader(&mut map, self.ino);
        }
    }
}

/// Future of [`WriteTicket::wait_turn_async`]: ready when `done >= target`.
#[must_use = "futures do nothing unless polled"]
pub struct Wait<'a> {
    barrier: &'a OpBarrier,
    ino: Ino,
    target: u64,
    id: Option<u64>,
    /// Known reached without looking (no earlier write was pending at issue).
    ready: bool,
}

impl fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("ino", &self.ino)
            .field("target", &self.target)
            .finish()
    }
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.ready {
            return Poll::Ready(());
        }
        this.barrier.poll_until(this.ino, this.target, &mut this.id, cx)
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.barrier.forget_waker(self.ino, id);
        }
    }
}

/// Future of [`ReadTicket::wait_async`] and [`OpBarrier::read_async`].
#[must_use = "futures do nothing unless polled"]
pub struct ReadWait<'a> {
    // Declared before `ticket` so the waker goes before the registration.
    wait: Option<Wait<'a>>,
    ticket: ReadTicket<'a>,
}

impl fmt::Debug for ReadWait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadWait").field("ticket", &self.ticket).finish()
    }
}

impl Future for ReadWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(wait) = this.wait.as_mut() {
            if Pin::new(wait).poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.wait = None;
        }
        // Release the registration now rather than when the future is dropped.
        if this.ticket.target.take().is_some() {
            let mut map = this.ticket.barrier.shard(this.ticket.ino).map.lock();
            OpBarrier::release_reader(&mut map, this.ticket.ino);
        }
        Poll::Ready(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex as StdMutex};
    use std::time::Duration;

    const INO: Ino = Ino(42);

    #[test]
    fn uncontended_ops_leave_no_state() {
        let b = OpBarrier::new();
        let w = b.begin_write(INO);
        assert_eq!(w.seq(), 0);
        assert_eq!(b.inode_count(), 1);
        w.wait_turn();
        w.complete();
        assert_eq!(b.inode_count(), 0);
        b.read(INO);
        assert_eq!(b.inode_count(), 0, "a read with nothing pending records nothing");
    }

    #[test]
    fn writes_apply_in_issue_order() {
        let b = OpBarrier::new();
        let log = StdMutex::new(Vec::new());
        // Issue 0..8 on this thread, apply on 8 threads started in reverse order.
        std::thread::scope(|s| {
            let ts: Vec<_> = (0..8).map(|_| b.begin_write(INO)).collect();
            assert_eq!(
                ts.iter().map(WriteTicket::seq).collect::<Vec<_>>(),
                (0..8).collect::<Vec<_>>()
            );
            for t in ts.into_iter().rev() {
                let log = &log;
                s.spawn(move || {
                    t.wait_turn();
                    log.lock().unwrap().push(t.seq());
                    std::thread::sleep(Duration::from_millis(1));
                    t.complete();
                });
            }
        });
        assert_eq!(log.into_inner().unwrap(), (0..8).collect::<Vec<_>>());
        assert_eq!(b.inode_count(), 0);
    }

    /// Seed 001 regression (doc/LESSONS.md#seed-001; "read only 0 of 8192 bytes"): a read issued after a write was
    /// accepted must not run before that write reached the file, and must not wait for
    /// a write issued after it. Fails if `begin_read` stops capturing pending writes.
    #[test]
    fn read_waits_for_earlier_write_only() {
        let b = OpBarrier::new();
        let data = AtomicU64::new(0);
        std::thread::scope(|s| {
            let w1 = b.begin_write(INO);
            let r = b.begin_read(INO); // must see w1
            let w2 = b.begin_write(INO); // issued after the read: not waited for
            assert!(!r.is_ready());
            s.spawn(|| {
                w1.wait_turn();
                std::thread::sleep(Duration::from_millis(20));
                data.store(1, Ordering::Relaxed);
                w1.complete();
            });
            r.wait();
            assert_eq!(data.load(Ordering::Relaxed), 1, "the read saw the earlier write");
            // w2 is still outstanding and the read returned anyway.
            assert_eq!(b.inode_count(), 1);
            w2.complete();
        });
        assert_eq!(b.inode_count(), 0);
    }

    #[test]
    fn dropped_ticket_does_not_wedge_later_writes() {
        let b = OpBarrier::new();
        let w0 = b.begin_write(INO);
        let w1 = b.begin_write(INO);
        let w2 = b.begin_write(INO);
        drop(w1); // cancelled before its turn: completes out of order
        let r = b.begin_read(INO);
        assert!(!r.is_ready(), "w0 is still pending");
        w0.complete();
        w2.wait_turn(); // would hang if w1's drop did not count
        assert!(!r.is_ready(), "the read also waits for w2");
        w2.complete();
        assert!(r.is_ready());
        r.wait();
        assert_eq!(b.inode_count(), 0);
    }

    #[test]
    fn forget_keeps_in_flight_state_and_drops_idle_state() {
        let b = OpBarrier::new();
        let w = b.begin_write(INO);
        assert!(!b.forget(INO), "in-flight write: state must stay");
        assert_eq!(b.inode_count(), 1);
        w.complete();
        assert!(b.forget(INO));
        assert_eq!(b.inode_count(), 0);
    }

    /// Seed 001 regression (doc/LESSONS.md#seed-001; per-inode entries accumulating over a long mount until
    /// `forget` removed them): state goes away as soon as an inode is quiet.
    #[test]
    fn count_returns_to_zero_after_a_storm() {
        let b = OpBarrier::new();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let b = &b;
                s.spawn(move || {
                    for i in 0..2_000u64 {
                        let ino = Ino(i % 7 + t);
                        match i % 5 {
                            0 => b.read(ino),
                            1 => drop(b.begin_write(ino)),
                            2 => {
                                let r = b.begin_read(ino);
                                drop(r);
                            }
                            _ => {
                                let w = b.begin_write(ino);
                                w.wait_turn();
                                w.complete();
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(b.inode_count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_waits_order_and_cancel_cleanly() {
        let b = Arc::new(OpBarrier::new());
        let w0 = b.begin_write(INO);
        let w1 = b.begin_write(INO);
        let r = b.begin_read(INO);
        // A cancelled wait leaves no waker behind and does not disturb the others.
        let cancelled = tokio::time::timeout(Duration::from_millis(5), w1.wait_turn_async()).await;
        assert!(cancelled.is_err());
        let cancelled_read = tokio::time::timeout(Duration::from_millis(5), b.read_async(INO)).await;
        assert!(cancelled_read.is_err());
        let order = StdMutex::new(Vec::new());
        let r_fut = async {
            r.wait_async().await;
            order.lock().unwrap().push("read");
        };
        let w1_fut = async {
            w1.wait_turn_async().await;
            order.lock().unwrap().push("w1");
            w1.complete();
        };
        let w0_fut = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            order.lock().unwrap().push("w0");
            w0.complete();
        };
        tokio::join!(r_fut, w1_fut, w0_fut);
        let order = order.into_inner().unwrap();
        assert_eq!(order[0], "w0");
        assert!(order.contains(&"w1") && order.contains(&"read"));
        assert_eq!(b.inode_count(), 0);
    }

    #[tokio::test]
    async fn read_async_does_not_wait_for_later_write() {
        let b = OpBarrier::new();
        let r = b.read_async(INO);
        let w = b.begin_write(INO); // issued after the read began
        r.await; // would hang if it waited for w
        w.complete();
        assert_eq!(b.inode_count(), 0);
    }
}
