//! `DebounceState`: the synchronous heart of the debouncer (pending map, deadlines,
//! rename retargeting, batch building), with no locks, no clock and no I/O of its own.
//!
//! Invariant: for every key with no pending entry, the changes already moved to the ready
//! queue (emitted, in order) leave a [`Replica`](super::Replica) with that key exactly as
//! the source has it; a pending entry holds everything the receiver still needs for its
//! key. So emitting every pending entry, in any order across keys, converges the replica.
//! Nothing is ever dropped except a never-sent create that a remove cancels, which the
//! receiver has provably never seen.
//!
//! *Prevents:* seed 002 bug 7 (doc/LESSONS.md#seed-002-bug-7; a debounced add for the old path fired after a rename, stale
//! and for a path that no longer existed: here the pending entry is retargeted to the new
//! key with the rename's final attributes) and seed 000 bug 2 (doc/LESSONS.md#seed-000-bug-2; the destination of a
//! rename from a never-sent temp never materialized: here such a rename collapses into an
//! upsert of the destination, and any rename that is sent carries the destination's
//! attributes).
//!
//! Pending entries live in a slab threaded by a doubly linked list in deadline order. The
//! debounce delay is the same for every key, so "most recently updated last" is also
//! "latest deadline last": an update relinks its entry at the tail, expiry pops the head,
//! both in O(1). Keys are stored once, in the slab; the index is a `HashTable` of
//! `(slot, hash)` pairs, so growing it never touches the slab or hashes a key again.

use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;
use std::time::Duration;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use tokio::time::Instant;

use super::{Change, DebounceConfig, NotifyKey, Snapshot};

const NIL: u32 = u32::MAX;
/// Upper bound of [`DebounceConfig::max_pending`]: slot numbers are `u32`.
const MAX_PENDING_LIMIT: usize = (u32::MAX - 2) as usize;

/// What the receiver still needs to hear about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending<E> {
    /// The key exists with these attributes. `fresh`: the receiver does not have the key
    /// (every change it has been sent leaves the key absent), so a remove may cancel this.
    Upsert { attrs: E, fresh: bool },
    /// The key is gone.
    Remove,
}

struct Node<K, E> {
    key: K,
    /// [`DebounceState::hash32`] of `key`.
    hash: u32,
    pending: Pending<E>,
    deadline: Instant,
    prev: u32,
    next: u32,
}

enum Slot<K, E> {
    Used(Node<K, E>),
    Free { next_free: u32 },
}

/// The debouncer's state machine: feed it [`Change`]s with [`apply`](Self::apply), let
/// time pass with [`expire`](Self::expire), take batches with
/// [`next_batch`](Self::next_batch). The async [`DebounceTask`](super::DebounceTask) and
/// the blocking driver are thin loops around it; tests and loom models drive it directly.
pub struct DebounceState<K, E> {
    delay: Duration,
    linger: Duration,
    max_batch: usize,
    max_pending: usize,
    hasher: FxBuildHasher,
    /// `(slot, 32-bit key hash)` of every pending entry.
    index: HashTable<(u32, u32)>,
    slots: Vec<Slot<K, E>>,
    free: u32,
    head: u32,
    tail: u32,
    len: usize,
    ready: VecDeque<Change<K, E>>,
    /// When the oldest item now in `ready` became ready.
    ready_since: Option<Instant>,
}

impl<K, E> fmt::Debug for DebounceState<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DebounceState")
            .field("pending", &self.len)
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl<K: NotifyKey, E: Snapshot> DebounceState<K, E> {
    /// An empty state with `config`'s delay, linger and batch limits.
    pub fn new(config: &DebounceConfig) -> Self {
        DebounceState {
            delay: config.delay,
            linger: config.linger,
            max_batch: config.max_batch.max(1),
            // Slot numbers are u32 and the slab never holds more than `max_pending + 1`.
            max_pending: config.max_pending.clamp(1, MAX_PENDING_LIMIT),
            hasher: FxBuildHasher,
            index: HashTable::new(),
            slots: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
            ready: VecDeque::new(),
            ready_since: None,
        }
    }

    /// Keys with a pending (not yet emitted) change.
    pub fn pending_len(&self) -> usize {
        self.len
    }

    /// Changes emitted and waiting to be taken as batches.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Nothing pending and nothing ready.
    pub fn is_idle(&self) -> bool {
        self.len == 0 && self.ready.is_empty()
    }

    /// Takes in one change observed at `now`. Its attributes are the ones captured when
    /// it was observed; nothing is looked up again later.
    pub fn apply(&mut self, change: Change<K, E>, now: Instant) {
        match change {
            Change::Create { key, attrs } => self.upsert(key, attrs, true, now),
            Change::Update { key, attrs } => self.upsert(key, attrs, false, now),
            Change::Remove { key } => self.remove(key, now),
            Change::Rename { from, to, attrs } => self.rename(from, to, attrs, now),
        }
        while self.len > self.max_pending {
            // Too many distinct keys waiting: emit the oldest early rather than grow.
            self.pop_head_to_ready(now);
        }
    }

    /// Emits every pending change whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) {
        while self.head != NIL && self.node(self.head).deadline <= now {
            self.pop_head_to_ready(now);
        }
    }

    /// Emits every pending change now, deadlines or not (shutdown, explicit flush).
    pub fn flush_all(&mut self, now: Instant) {
        while self.head != NIL {
            self.pop_head_to_ready(now);
        }
    }

    /// The next batch to send at `now`: a full one (`max_batch` changes) whenever there
    /// is one; a partial one when no pending deadline falls within `linger` (so a burst
    /// that expires over a few milliseconds leaves as full batches) or when its oldest
    /// change has waited `delay` already; every remaining change when `closing`.
    pub fn next_batch(&mut self, now: Instant, closing: bool) -> Option<Vec<Change<K, E>>> {
        if self.ready.is_empty() {
            return None;
        }
        let full = self.ready.len() >= self.max_batch;
        if !(full || closing || self.partial_due(now)) {
            return None;
        }
        let n = self.ready.len().min(self.max_batch);
        let batch: Vec<_> = self.ready.drain(..n).collect();
        self.ready_since = if self.ready.is_empty() { None } else { Some(now) };
        Some(batch)
    }

    fn partial_due(&self, now: Instant) -> bool {
        let quiet = self.next_deadline().is_none_or(|d| d > now + self.linger);
        let waited = self.ready_since.is_some_and(|t| now >= t + self.delay);
        quiet || waited
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.head != NIL).then(|| self.node(self.head).deadline)
    }

    /// When the driver should look at the state again if no input arrives: the next
    /// deadline, or when a held partial batch becomes due. `None`: only input matters.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let deadline = self.next_deadline();
        let held = self.ready_since.map(|t| t + self.delay);
        match (deadline, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // --- the change rules ---------------------------------------------------------

    fn upsert(&mut self, key: K, attrs: E, created: bool, now: Instant) {
        match self.find(&key) {
            Some(idx) => {
                let node = self.node_mut(idx);
                let fresh = match node.pending {
                    // Still never sent: stays cancellable.
                    Pending::Upsert { fresh, .. } => fresh,
                    // The receiver still has the old entry: not fresh.
                    Pending::Remove => false,
                };
                node.pending = Pending::Upsert { attrs, fresh };
                self.touch(idx, now);
            }
            // No pending entry: the receiver agrees with the source, which did not have
            // the key if this is a create.
            None => self.insert(key, Pending::Upsert { attrs, fresh: created }, now),
        }
    }

    fn remove(&mut self, key: K, now: Instant) {
        match self.find(&key) {
            Some(idx) => match self.node(idx).pending {
                // Created and removed before anything was sent: the receiver never saw it.
                Pending::Upsert { fresh: true, .. } => {
                    self.unlink_free(idx);
                }
                _ => {
                    self.node_mut(idx).pending = Pending::Remove;
                    self.touch(idx, now);
                }
            },
            None => self.insert(key, Pending::Remove, now),
        }
    }

    fn rename(&mut self, from: K, to: K, attrs: E, now: Instant) {
        if from == to {
            self.upsert(to, attrs, false, now);
            return;
        }
        let is_dir = attrs.is_dir();
        // Whatever was pending for `to` (and, for a directory, under it) is superseded:
        // the rename replaces it on the receiver.
        let to_fresh = match self.find(&to) {
            Some(idx) => matches!(self.unlink_free(idx), Pending::Upsert { fresh: true, .. }),
            None => false,
        };
        if is_dir {
            self.drop_descendants(&to);
        }
        let from_pending = self.find(&from).map(|idx| self.unlink_free(idx));
        match from_pending {
            // A file the receiver never saw: nothing to move there. The destination
            // materializes as a create (or update) with the rename's attributes.
            Some(Pending::Upsert { fresh: true, .. }) if !is_dir => {
                self.insert(to, Pending::Upsert { attrs, fresh: to_fresh }, now);
            }
            from_pending => {
                // The receiver may hold `from` (or, for a directory, entries under it):
                // tell it now, ahead of everything still pending, so later changes to
                // either key land after the move.
                if is_dir {
                    self.retarget_descendants(&from, &to, now);
                }
                self.push_ready(
                    Change::Rename {
                        from,
                        to: to.clone(),
                        attrs: attrs.clone(),
                    },
                    now,
                );
                if let Some(Pending::Upsert { .. }) = from_pending {
                    // The content changed since the receiver last heard of `from`: retarget
                    // that pending change to `to`, with the final attributes.
                    self.insert(to, Pending::Upsert { attrs, fresh: false }, now);
                }
            }
        }
    }

    /// Drops pending entries strictly under `dir` (superseded by a rename onto `dir`).
    fn drop_descendants(&mut self, dir: &K) {
        let mut idx = self.head;
        while idx != NIL {
            let next = self.node(idx).next;
            if self.node(idx).key.rebase(dir, dir).is_some() {
                self.unlink_free(idx);
            }
            idx = next;
        }
    }

    /// Moves pending entries strictly under `from` to the same place under `to`.
    fn retarget_descendants(&mut self, from: &K, to: &K, now: Instant) {
        let mut moved = Vec::new();
        let mut idx = self.head;
        while idx != NIL {
            let next = self.node(idx).next;
            if let Some(new_key) = self.node(idx).key.rebase(from, to) {
                moved.push((new_key, self.unlink_free(idx)));
            }
            idx = next;
        }
        for (key, pending) in moved {
            if let Some(idx) = self.find(&key) {
                self.unlink_free(idx);
            }
            self.insert(key, pending, now);
        }
    }

    // --- slab, index and list -----------------------------------------------------

    fn node(&self, idx: u32) -> &Node<K, E> {
        match &self.slots[idx as usize] {
            Slot::Used(n) => n,
            Slot::Free { .. } => unreachable!("linked or indexed slot {idx} is free"),
        }
    }

    fn node_mut(&mut self, idx: u32) -> &mut Node<K, E> {
        match &mut self.slots[idx as usize] {
            Slot::Used(n) => n,
            Slot::Free { .. } => unreachable!("linked or indexed slot {idx} is free"),
        }
    }

    /// The key's hash as stored: 32 bits, so an index entry is 8 bytes.
    fn hash32(&self, key: &K) -> u32 {
        (self.hasher.hash_one(key) >> 32) as u32
    }

    /// The table hash of a stored 32-bit hash: spread over 64 bits (hashbrown takes its
    /// tag from the top bits and the bucket from the bottom ones).
    fn table_hash(h: u32) -> u64 {
        u64::from(h).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(h)
    }

    fn find(&self, key: &K) -> Option<u32> {
        let h = self.hash32(key);
        let slots = &self.slots;
        self.index
            .find(Self::table_hash(h), |&(i, hi)| {
                hi == h && matches!(&slots[i as usize], Slot::Used(n) if n.key == *key)
            })
            .map(|&(i, _)| i)
    }

    fn insert(&mut self, key: K, pending: Pending<E>, now: Instant) {
        let hash = self.hash32(&key);
        let node = Node {
            key,
            hash,
            pending,
            deadline: now + self.delay,
            prev: self.tail,
            next: NIL,
        };
        let idx = if self.free != NIL {
            let idx = self.free;
            if let Slot::Free { next_free } = self.slots[idx as usize] {
                self.free = next_free;
            }
            self.slots[idx as usize] = Slot::Used(node);
            idx
        } else {
            // At most `max_pending + 1 < NIL` slots exist, so this fits.
            let idx = u32::try_from(self.slots.len()).unwrap_or(NIL - 1);
            self.slots.push(Slot::Used(node));
            idx
        };
        if self.tail != NIL {
            let tail = self.tail;
            self.node_mut(tail).next = idx;
        } else {
            self.head = idx;
        }
        self.tail = idx;
        self.len += 1;
        self.index
            .insert_unique(Self::table_hash(hash), (idx, hash), |&(_, h)| Self::table_hash(h));
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next) = {
            let n = self.node(idx);
            (n.prev, n.next)
        };
        if prev != NIL {
            self.node_mut(prev).next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.node_mut(next).prev = prev;
        } else {
            self.tail = prev;
        }
    }

    /// Moves `idx` to the tail with a fresh deadline (the key was just updated).
    fn touch(&mut self, idx: u32, now: Instant) {
        self.unlink(idx);
        let tail = self.tail;
        let deadline = now + self.delay;
        {
            let n = self.node_mut(idx);
            n.deadline = deadline;
            n.prev = tail;
            n.next = NIL;
        }
        if tail != NIL {
            self.node_mut(tail).next = idx;
        } else {
            self.head = idx;
        }
        self.tail = idx;
    }

    /// Removes `idx` from the list, the index and the slab; returns its key and change.
    fn take(&mut self, idx: u32) -> (K, Pending<E>) {
        self.unlink(idx);
        let hash = Self::table_hash(self.node(idx).hash);
        if let Ok(entry) = self.index.find_entry(hash, |&(i, _)| i == idx) {
            entry.remove();
        }
        let slot = std::mem::replace(&mut self.slots[idx as usize], Slot::Free { next_free: self.free });
        self.free = idx;
        self.len -= 1;
        match slot {
            Slot::Used(n) => (n.key, n.pending),
            Slot::Free { .. } => unreachable!("took a free slot"),
        }
    }

    fn unlink_free(&mut self, idx: u32) -> Pending<E> {
        self.take(idx).1
    }

    fn pop_head_to_ready(&mut self, now: Instant) {
        if self.head == NIL {
            return;
        }
        let (key, pending) = self.take(self.head);
        let change = match pending {
            Pending::Upsert { attrs, fresh: true } => Change::Create { key, attrs },
            Pending::Upsert { attrs, fresh: false } => Change::Update { key, attrs },
            Pending::Remove => Change::Remove { key },
        };
        self.push_ready(change, now);
    }

    fn push_ready(&mut self, change: Change<K, E>, now: Instant) {
        if self.ready.is_empty() {
            self.ready_since = Some(now);
        }
        self.ready.push_back(change);
    }
}
