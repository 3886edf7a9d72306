//! `FhTable`: the open-handle table of a backend, keyed by [`Fh`].
//!
//! Invariant: a handle number is issued once per table (a counter, never reused while the
//! table lives), and a handle answers only for the inode it was opened on: [`FhTable::get`]
//! and [`FhTable::remove`] give [`VfsError::BadHandle`] for an unknown handle *and* for a
//! known handle asked with another inode. The inode check and the removal happen under one
//! shard lock, so of two concurrent releases of one handle exactly one succeeds.
//!
//! Every backend that hands out [`Fh`]s keeps such a table (MemFs, LocalFs, Overlay,
//! vfs-p2p's RemoteFs, vfs-pg's PgFs), and each used to write the same "`Some(h) if h.ino == ino` else
//! `BadHandle`" match over its own map and lock. Here it is written once.
//!
//! The table is a fixed array of shards (sequential handle numbers are spread over them by
//! Fibonacci hashing), each a facade [`OrderedRwLock`] at the [`Map`] level over a hash
//! map. Like [`crate::meta::MetaTable`] it is deliberately not a `DashMap`, whose locks
//! loom cannot see: `tests/loom_fh_table.rs` model-checks the code that runs in
//! production.
//!
//! ```
//! use vfs_core::fh_table::FhTable;
//! use vfs_core::lock_order::Locked;
//! use vfs_core::{Fh, Ino, VfsError};
//! let table: FhTable<&str> = FhTable::new();
//! // SAFETY: the entry of this example: no lock is held.
//! let mut tok = unsafe { Locked::new() };
//! let fh = table.insert(&mut tok, Ino(7), "read-only");
//! assert_eq!(table.get(&mut tok, Ino(7), fh).ok(), Some("read-only"));
//! assert!(matches!(table.get(&mut tok, Ino(8), fh), Err(VfsError::BadHandle))); // another inode
//! assert_eq!(table.remove(&mut tok, Ino(7), fh).ok(), Some("read-only"));
//! assert!(matches!(table.remove(&mut tok, Ino(7), fh), Err(VfsError::BadHandle))); // released
//! ```

use std::fmt;

use crate::error::{VfsError, VfsResult};
use crate::lock_order::{LockAfter, Locked, Map, OrderedRwLock};
use crate::sharded::{Shard, Shards};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::types::{Fh, Ino};

#[cfg(not(loom))]
const SHARDS: usize = 16;
#[cfg(loom)]
const SHARDS: usize = 2;

/// One open handle: the inode it was opened on and the backend's per-handle state.
struct Entry<T> {
    ino: Ino,
    value: T,
}

/// Open handles: [`Fh`] → (inode, the backend's per-handle state `T`).
///
/// `T` is what a backend keeps per open file (its access mode, a descriptor, a read-ahead
/// position); it is cloned out by [`FhTable::get`], so keep it small or in an `Arc`.
pub struct FhTable<T> {
    shards: Shards<Entry<T>>,
    next: AtomicU64,
}

impl<T> fmt::Debug for FhTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FhTable")
            .field("shards", &self.shards.count())
            .finish_non_exhaustive()
    }
}

impl<T> Default for FhTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> FhTable<T> {
    /// An empty table; the first handle it issues is `Fh(1)`.
    pub fn new() -> Self {
        FhTable {
            shards: Shards::new(SHARDS),
            next: AtomicU64::new(1),
        }
    }

    fn shard(&self, fh: u64) -> &OrderedRwLock<Shard<Entry<T>>, Map> {
        self.shards.of(fh)
    }

    /// Records a new open handle of `ino` and returns its fresh number.
    pub fn insert<P>(&self, tok: &mut Locked<P>, ino: Ino, value: T) -> Fh
    where
        Map: LockAfter<P>,
    {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.shard(fh).write(tok).insert(fh, Entry { ino, value });
        Fh(fh)
    }

    /// Runs `f` on the state of `fh`, which must be a handle of `ino`; `BadHandle`
    /// otherwise (unknown, released, or opened on another inode).
    pub fn with<P, R>(&self, tok: &mut Locked<P>, ino: Ino, fh: Fh, f: impl FnOnce(&T) -> R) -> VfsResult<R>
    where
        Map: LockAfter<P>,
    {
        match self.shard(fh.0).read(tok).get(&fh.0) {
            Some(e) if e.ino == ino => Ok(f(&e.value)),
            _ => Err(VfsError::BadHandle),
        }
    }

    /// The state of `fh`, which must be a handle of `ino`; `BadHandle` otherwise.
    pub fn get<P>(&self, tok: &mut Locked<P>, ino: Ino, fh: Fh) -> VfsResult<T>
    where
        Map: LockAfter<P>,
        T: Clone,
    {
        self.with(tok, ino, fh, T::clone)
    }

    /// Releases `fh`, which must be a handle of `ino`, and returns its state; `BadHandle`
    /// otherwise, and then nothing is removed. The check and the removal are one critical
    /// section.
    pub fn remove<P>(&self, tok: &mut Locked<P>, ino: Ino, fh: Fh) -> VfsResult<T>
    where
        Map: LockAfter<P>,
    {
        let mut shard = self.shard(fh.0).write(tok);
        match shard.get(&fh.0) {
            Some(e) if e.ino == ino => shard.remove(&fh.0).map(|e| e.value).ok_or(VfsError::BadHandle),
            _ => Err(VfsError::BadHandle),
        }
    }

    /// The state of some open handle of `ino`, if there is one.
    pub fn any_of<P>(&self, tok: &mut Locked<P>, ino: Ino) -> Option<T>
    where
        Map: LockAfter<P>,
        T: Clone,
    {
        self.shards
            .iter()
            .find_map(|s| s.read(tok).values().find(|e| e.ino == ino).map(|e| e.value.clone()))
    }

    /// Every open handle with its inode and state (a snapshot: shards are read one after
    /// another), in handle order.
    pub fn snapshot<P>(&self, tok: &mut Locked<P>) -> Vec<(Fh, Ino, T)>
    where
        Map: LockAfter<P>,
        T: Clone,
    {
        let mut out: Vec<(Fh, Ino, T)> = Vec::new();
        for s in self.shards.iter() {
            out.extend(s.read(tok).iter().map(|(&fh, e)| (Fh(fh), e.ino, e.value.clone())));
        }
        out.sort_by_key(|(fh, _, _)| *fh);
        out
    }

    /// Number of open handles (a snapshot).
    pub fn len<P>(&self, tok: &mut Locked<P>) -> usize
    where
        Map: LockAfter<P>,
    {
        self.shards.len(tok)
    }

    /// Whether no handle is open (a snapshot).
    pub fn is_empty<P>(&self, tok: &mut Locked<P>) -> bool
    where
        Map: LockAfter<P>,
    {
        self.len(tok) == 0
    }
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use super::*;
    use crate::lock_order::Unlocked;

    fn tok() -> Locked<Unlocked> {
        // SAFETY: each test is an entry point and holds no lock when it calls this.
        unsafe { Locked::new() }
    }

    #[test]
    fn handles_are_fresh_and_answer_only_for_their_inode() {
        let t: FhTable<u32> = FhTable::new();
        let mut tok = tok();
        let a = t.insert(&mut tok, Ino(2), 10);
        let b = t.insert(&mut tok, Ino(2), 20);
        let c = t.insert(&mut tok, Ino(3), 30);
        assert_eq!(a, Fh(1));
        assert!(a != b && b != c && a != c);
        assert_eq!(t.get(&mut tok, Ino(2), a).ok(), Some(10));
        assert_eq!(t.get(&mut tok, Ino(2), b).ok(), Some(20));
        assert_eq!(t.get(&mut tok, Ino(3), c).ok(), Some(30));
        assert!(matches!(t.get(&mut tok, Ino(3), a), Err(VfsError::BadHandle)));
        assert!(matches!(t.get(&mut tok, Ino(2), Fh(99)), Err(VfsError::BadHandle)));
        assert_eq!(t.with(&mut tok, Ino(3), c, |v| v + 1).ok(), Some(31));
        assert_eq!(t.len(&mut tok), 3);
    }

    #[test]
    fn remove_checks_the_inode_and_removes_once() {
        let t: FhTable<u32> = FhTable::new();
        let mut tok = tok();
        let a = t.insert(&mut tok, Ino(2), 10);
        // The wrong inode removes nothing.
        assert!(matches!(t.remove(&mut tok, Ino(3), a), Err(VfsError::BadHandle)));
        assert_eq!(t.get(&mut tok, Ino(2), a).ok(), Some(10));
        assert_eq!(t.remove(&mut tok, Ino(2), a).ok(), Some(10));
        assert!(matches!(t.remove(&mut tok, Ino(2), a), Err(VfsError::BadHandle)));
        assert!(matches!(t.get(&mut tok, Ino(2), a), Err(VfsError::BadHandle)));
        assert!(t.is_empty(&mut tok));
        // A released number is not issued again.
        assert_ne!(t.insert(&mut tok, Ino(2), 11), a);
    }

    #[test]
    fn any_of_and_snapshot_see_every_shard() {
        let t: FhTable<u64> = FhTable::new();
        let mut tok = tok();
        let n = 3 * SHARDS as u64;
        let fhs: Vec<Fh> = (0..n).map(|i| t.insert(&mut tok, Ino(100 + i), i)).collect();
        for i in 0..n {
            assert_eq!(t.any_of(&mut tok, Ino(100 + i)), Some(i));
        }
        assert_eq!(t.any_of(&mut tok, Ino(1)), None);
        let snap = t.snapshot(&mut tok);
        assert_eq!(snap.len() as u64, n);
        for (i, (fh, ino, v)) in snap.into_iter().enumerate() {
            assert_eq!((fh, ino, v), (fhs[i], Ino(100 + i as u64), i as u64));
        }
    }

    #[test]
    fn concurrent_opens_and_releases_lose_nothing() {
        let t: FhTable<u64> = FhTable::new();
        std::thread::scope(|s| {
            for th in 0..4u64 {
                let t = &t;
                s.spawn(move || {
                    let mut tok = tok();
                    for i in 0..500u64 {
                        let ino = Ino(th * 1000 + i);
                        let fh = t.insert(&mut tok, ino, i);
                        assert_eq!(t.get(&mut tok, ino, fh).ok(), Some(i));
                        if i % 2 == 0 {
                            assert_eq!(t.remove(&mut tok, ino, fh).ok(), Some(i));
                        }
                    }
                });
            }
        });
        assert_eq!(t.len(&mut tok()), 4 * 250);
    }
}
