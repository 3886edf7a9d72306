//! The notify debouncer: change events per path in, debounced batches out, nothing lost.
//!
//! Invariant: a receiver that applies every emitted batch, in order, with the rules of
//! [`Replica`] converges to the sender's tree once the sender is quiet for the debounce
//! delay. In between, per key: changes are coalesced (the deadline resets on each update,
//! default 200 ms), batches hold at most `max_batch` changes (default 64), and nothing is
//! ever dropped. A full queue stalls the producer ([`Debouncer::send`] waits,
//! [`Debouncer::try_send`] hands the change back); a change carries the attributes
//! captured when it was observed, so a file gone by send time is still sent; a rename
//! retargets what was pending for the old key to the new key (chains a→b→c included).
//! The only change ever left out is a create followed by a remove before anything was
//! sent: the receiver provably never saw it. A remove after a sent create is always sent.
//!
//! *Prevents:* seed 000 bug 3 (doc/LESSONS.md#seed-000-bug-3; notifications silently dropped when the file could not
//! be re-stated at send time, and when the bounded channel overflowed); seed 000 bug 2 (doc/LESSONS.md#seed-000-bug-2)
//! (git's `tmp_pack_*` → `pack-*.pack` rename never materialized the pack on the peer,
//! because the temp had never been sent); seed 002 bug 4 (doc/LESSONS.md#seed-002-bug-4; 612 files closing at once, one
//! RPC each, hung the connection: here they leave as at most ⌈612/64⌉ batches) and bug 7
//! (a debounced add for an LFS `incomplete/` path fired after the rename, stale and for a
//! path that no longer existed).
//!
//! # Pipeline
//!
//! ```text
//! producers ──Change──▶ bounded queue ──▶ DebounceTask (DebounceState) ──Vec<Change>──▶ Batches
//!            (backpressure)                 pending map, deadlines        (bounded too)
//! ```
//!
//! [`Debouncer`] is the cloneable producer handle, [`Batches`] the consumer (e.g. the P2P
//! exporter sending each batch to the peer), [`DebounceTask`] the loop between them: spawn
//! [`DebounceTask::run`] on tokio or call [`DebounceTask::run_blocking`] on a thread of
//! its own. Both queues are bounded, so a slow consumer stalls the producers rather than
//! growing memory. Time is tokio's [`Instant`]: under
//! `tokio::time::pause` (`#[tokio::test(start_paused = true)]`) tests are exact.
//!
//! # What the receiver does ([`Replica`] is the reference)
//!
//! * [`Change::Create`] / [`Change::Update`]: the key now exists with these attributes
//!   (create it if missing, and its missing parents; fetch content lazily).
//! * [`Change::Remove`]: the key and everything under it are gone (a no-op if absent).
//! * [`Change::Rename`]: whatever was at `to` (and under it) is replaced by what was at
//!   `from` (for a directory, with everything under it), with the attributes carried by
//!   the event; `from` is gone. **If `from` is unknown the destination is created anyway
//!   from the carried attributes** (seed 000 bug 2 (doc/LESSONS.md#seed-000-bug-2)). A size that differs from the moved
//!   content's means the content changed: fetch again (seed 002 bug 2 (doc/LESSONS.md#seed-002-bug-2)).
//!
//! Changes to different keys may be reordered against each other (that is what
//! debouncing is); everything above is designed so that every such order converges. The
//! property test in this module checks it on random trees.
//!
//! # What the producer must report
//!
//! [`Change::Create`] only for a key that did not exist (a successful `create`, `mknod`,
//! `mkdir`, `symlink`, `link`): it is what allows a later remove to cancel it. Anything
//! else that changes a key's attributes or content is [`Change::Update`]. A rename is
//! [`Change::Rename`] with the attributes of the moved entry; `RENAME_EXCHANGE` is two
//! updates. Keys of a hierarchy implement [`NotifyKey::rebase`] so that a directory rename
//! retargets what is pending under it.

mod replica;
mod state;

pub mod queue;

use std::hash::Hash;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

pub use queue::{Received, SendError, TrySendError};
pub use replica::Replica;
pub use state::DebounceState;

use crate::types::{Attr, FileType, Ino, Timestamp};

/// Inputs taken from the queue per step of the task.
const CHUNK: usize = 256;

/// A key of the debouncer: a path, or anything that names a filesystem entry.
pub trait NotifyKey: Eq + Hash + Clone {
    /// If `self` lies strictly under `from` (a descendant, not `from` itself), the same
    /// entry's key under `to`. Flat key spaces keep the default (`None`): a directory
    /// rename then retargets only its own key.
    fn rebase(&self, from: &Self, to: &Self) -> Option<Self> {
        let _ = (from, to);
        None
    }
}

impl NotifyKey for PathBuf {
    /// Component-wise: `a/bc` is not under `a/b`.
    fn rebase(&self, from: &Self, to: &Self) -> Option<Self> {
        let rest = self.strip_prefix(from).ok()?;
        (!rest.as_os_str().is_empty()).then(|| to.join(rest))
    }
}

/// `/`-separated paths without a trailing `/`.
impl NotifyKey for Vec<u8> {
    fn rebase(&self, from: &Self, to: &Self) -> Option<Self> {
        let rest = self.strip_prefix(from.as_slice())?.strip_prefix(b"/")?;
        if rest.is_empty() {
            return None;
        }
        let mut key = Vec::with_capacity(to.len() + 1 + rest.len());
        key.extend_from_slice(to);
        key.push(b'/');
        key.extend_from_slice(rest);
        Some(key)
    }
}

/// `/`-separated paths without a trailing `/`.
impl NotifyKey for String {
    fn rebase(&self, from: &Self, to: &Self) -> Option<Self> {
        let rest = self.strip_prefix(from.as_str())?.strip_prefix('/')?;
        (!rest.is_empty()).then(|| format!("{to}/{rest}"))
    }
}

impl NotifyKey for u64 {}
impl NotifyKey for Ino {}

/// The attributes a change carries: captured when the change was observed, never looked
/// up again at send time (the file may be gone by then; the change is sent anyway).
pub trait Snapshot: Clone {
    /// Whether the entry is a directory (a rename of it moves what is under it).
    fn is_dir(&self) -> bool;
}

/// What a receiver needs to materialize an entry: type, size, mtime, permission bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EntrySnapshot {
    /// Object type.
    pub kind: FileType,
    /// Size in bytes when observed.
    pub size: u64,
    /// Last modification when observed.
    pub mtime: Timestamp,
    /// Permission bits.
    pub perm: u16,
}

impl EntrySnapshot {
    /// A regular file of `size` bytes, mode 0644, mtime `mtime`.
    pub fn file(size: u64, mtime: Timestamp) -> Self {
        EntrySnapshot {
            kind: FileType::Regular,
            size,
            mtime,
            perm: 0o644,
        }
    }

    /// A directory, mode 0755, mtime `mtime`.
    pub fn dir(mtime: Timestamp) -> Self {
        EntrySnapshot {
            kind: FileType::Directory,
            size: 0,
            mtime,
            perm: 0o755,
        }
    }
}

impl From<&Attr> for EntrySnapshot {
    fn from(a: &Attr) -> Self {
        EntrySnapshot {
            kind: a.kind,
            size: a.size,
            mtime: a.mtime,
            perm: a.perm,
        }
    }
}

impl Snapshot for EntrySnapshot {
    fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }
}

impl Snapshot for Attr {
    fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }
}

/// One change to the tree, as the producer reports it and as batches carry it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Change<K, E = EntrySnapshot> {
    /// `key` was created (it did not exist) with these attributes.
    Create {
        /// The new entry.
        key: K,
        /// Its attributes when observed.
        attrs: E,
    },
    /// `key` changed (content or attributes) and now has these attributes.
    Update {
        /// The changed entry.
        key: K,
        /// Its attributes when observed.
        attrs: E,
    },
    /// `key` (and, for a directory, everything under it) was removed.
    Remove {
        /// The removed entry.
        key: K,
    },
    /// The entry at `from` moved to `to`, replacing whatever was there.
    Rename {
        /// The old key.
        from: K,
        /// The new key.
        to: K,
        /// The moved entry's attributes (the destination's), when observed.
        attrs: E,
    },
}

/// Knobs of a [`Debouncer`]. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebounceConfig {
    /// Quiet time per key before its change is sent; reset by each update (200 ms).
    pub delay: Duration,
    /// Most changes in one batch (64).
    pub max_batch: usize,
    /// Changes the input queue holds before producers wait (16384).
    pub queue_capacity: usize,
    /// Batches waiting for the consumer before the task waits (4).
    pub batch_capacity: usize,
    /// A partial batch is held while another deadline falls within this (10 ms), so a
    /// burst that expires over a few milliseconds leaves as full batches. Never more than
    /// `delay` extra.
    pub linger: Duration,
    /// Most distinct keys pending; beyond it the oldest is sent early (1 << 20).
    pub max_pending: usize,
}

impl Default for DebounceConfig {
    fn default() -> Self {
        DebounceConfig {
            delay: Duration::from_millis(200),
            max_batch: 64,
            queue_capacity: 16384,
            batch_capacity: 4,
            linger: Duration::from_millis(10),
            max_pending: 1 << 20,
        }
    }
}

/// The producer handle: clone it freely. When every clone is dropped the task sends
/// what is still pending, at once, and then [`Batches`] ends.
pub struct Debouncer<K, E = EntrySnapshot> {
    tx: queue::Sender<Change<K, E>>,
}

impl<K, E> Clone for Debouncer<K, E> {
    fn clone(&self) -> Self {
        Debouncer { tx: self.tx.clone() }
    }
}

impl<K, E> std::fmt::Debug for Debouncer<K, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debouncer").field("queued", &self.tx.len()).finish()
    }
}

impl<K: NotifyKey, E: Snapshot> Debouncer<K, E> {
    /// The three parts: producer handle, consumer, and the task to run between them
    /// ([`DebounceTask::run`] or [`DebounceTask::run_blocking`]).
    pub fn new(config: DebounceConfig) -> (Debouncer<K, E>, Batches<K, E>, DebounceTask<K, E>) {
        let (tx, input) = queue::bounded(config.queue_capacity);
        let (output, rx) = queue::bounded(config.batch_capacity);
        let task = DebounceTask {
            state: DebounceState::new(&config),
            input,
            output,
        };
        (
            Debouncer { tx },
            Batches {
                rx,
                buf: Vec::with_capacity(1),
            },
            task,
        )
    }

    /// [`Debouncer::new`] with the task spawned on the current tokio runtime (call it
    /// from within one: like `tokio::spawn`, it panics otherwise).
    pub fn spawn(config: DebounceConfig) -> (Debouncer<K, E>, Batches<K, E>)
    where
        K: Send + 'static,
        E: Send + 'static,
    {
        let (d, b, task) = Debouncer::new(config);
        tokio::spawn(task.run());
        (d, b)
    }

    /// Queues `change`, waiting while the queue is full (backpressure, never a drop).
    /// Fails, handing the change back, only if the task is gone.
    pub fn send(&self, change: Change<K, E>) -> queue::SendFuture<'_, Change<K, E>> {
        self.tx.send(change)
    }

    /// Queues `change` if there is room now; otherwise hands it back.
    pub fn try_send(&self, change: Change<K, E>) -> Result<(), TrySendError<Change<K, E>>> {
        self.tx.try_send(change)
    }

    /// Queues `change`, blocking the thread while the queue is full. For producers that
    /// are not async (kernel-request threads); never call it on a tokio worker.
    pub fn send_blocking(&self, change: Change<K, E>) -> Result<(), SendError<Change<K, E>>> {
        self.tx.send_blocking(change)
    }
}

/// The consumer: batches of at most `max_batch` changes, in emission order.
pub struct Batches<K, E = EntrySnapshot> {
    rx: queue::Receiver<Vec<Change<K, E>>>,
    buf: Vec<Vec<Change<K, E>>>,
}

impl<K, E> std::fmt::Debug for Batches<K, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches").field("waiting", &self.rx.len()).finish()
    }
}

impl<K, E> Batches<K, E> {
    /// The next batch; `None` once the producers are gone and everything was delivered.
    pub async fn next(&mut self) -> Option<Vec<Change<K, E>>> {
        self.rx.recv_many(&mut self.buf, 1).await;
        self.buf.pop()
    }

    /// The next batch if one is waiting now.
    pub fn try_next(&mut self) -> Option<Vec<Change<K, E>>> {
        self.rx.try_recv_many(&mut self.buf, 1);
        self.buf.pop()
    }

    /// The next batch, blocking the thread; `None` at the end.
    pub fn next_blocking(&mut self) -> Option<Vec<Change<K, E>>> {
        self.rx.recv_many_blocking(&mut self.buf, 1, None);
        self.buf.pop()
    }
}

/// The loop between the queues: takes changes in, applies them to a [`DebounceState`],
/// sends due batches out.
pub struct DebounceTask<K, E = EntrySnapshot> {
    state: DebounceState<K, E>,
    input: queue::Receiver<Change<K, E>>,
    output: queue::Sender<Vec<Change<K, E>>>,
}

impl<K, E> std::fmt::Debug for DebounceTask<K, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebounceTask").field("state", &self.state).finish()
    }
}

impl<K: NotifyKey, E: Snapshot> DebounceTask<K, E> {
    /// Runs until every [`Debouncer`] is dropped (then sends what is pending at once and
    /// ends [`Batches`]) or [`Batches`] is dropped.
    pub async fn run(mut self) {
        let mut inbox = Vec::with_capacity(CHUNK);
        loop {
            let now = Instant::now();
            self.state.expire(now);
            while let Some(batch) = self.state.next_batch(now, false) {
                if self.output.send(batch).await.is_err() {
                    return;
                }
            }
            let got = match self.state.next_wakeup() {
                // The receive is polled first, so items already queued win over the
                // deadline (what `select!` with `biased;` did, without tokio's macros).
                Some(at) => tokio::time::timeout_at(at, self.input.recv_many(&mut inbox, CHUNK))
                    .await
                    .unwrap_or(Received::Empty),
                None => self.input.recv_many(&mut inbox, CHUNK).await,
            };
            match got {
                Received::Items(_) => self.apply_inbox(&mut inbox),
                Received::Empty => {}
                Received::Closed => {
                    let now = Instant::now();
                    self.state.flush_all(now);
                    while let Some(batch) = self.state.next_batch(now, true) {
                        if self.output.send(batch).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
            }
        }
    }

    /// [`DebounceTask::run`] on the calling thread, blocking it.
    pub fn run_blocking(mut self) {
        let mut inbox = Vec::with_capacity(CHUNK);
        loop {
            let now = Instant::now();
            self.state.expire(now);
            while let Some(batch) = self.state.next_batch(now, false) {
                if self.output.send_blocking(batch).is_err() {
                    return;
                }
            }
            let timeout = self
                .state
                .next_wakeup()
                .map(|at| at.saturating_duration_since(Instant::now()));
            match self.input.recv_many_blocking(&mut inbox, CHUNK, timeout) {
                Received::Items(_) => self.apply_inbox(&mut inbox),
                Received::Empty => {}
                Received::Closed => {
                    let now = Instant::now();
                    self.state.flush_all(now);
                    while let Some(batch) = self.state.next_batch(now, true) {
                        if self.output.send_blocking(batch).is_err() {
                            return;
                        }
                    }
                    return;
                }
            }
        }
    }

    fn apply_inbox(&mut self, inbox: &mut Vec<Change<K, E>>) {
        let now = Instant::now();
        for change in inbox.drain(..) {
            self.state.apply(change, now);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
