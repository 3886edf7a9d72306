//! `MetaTable`: each inode's metadata behind its own lock, taken innermost.
//!
//! Invariant: a file's fields are read and written only through its [`FileCell`]'s
//! [`File`]-level lock, which is taken after the table's [`Map`]-level shard lock and
//! never before it (enforced by [`crate::lock_order`]). Two or more files are locked
//! together only through [`FileCell::write_many`], which locks in inode order. So no reader
//! sees a torn struct, and no pair of operations can deadlock on the table.
//!
//! The table is a fixed array of shards, each a facade [`OrderedRwLock`] over a hash map
//! from inode to `Arc<FileCell<T>>`. It is deliberately not a `DashMap`: loom can only
//! model-check locks built from [`crate::sync`], and DashMap's internal shard locks are
//! invisible to it. Built this way, `RUSTFLAGS="--cfg loom"` checks the very code that
//! runs in production (see `doc/ARCHITECTURE.md`).
//!
//! A table lock may be held while a file lock is taken ([`MetaTable::read`],
//! [`MetaTable::update`], [`MetaTable::remove_if`]); the reverse does not compile:
//!
//! ```compile_fail,E0277
//! use vfs_core::lock_order::{Locked, Unlocked};
//! use vfs_core::meta::MetaTable;
//! use vfs_core::Ino;
//! let table: MetaTable<u64> = MetaTable::new();
//! let mut tok = unsafe { Locked::<Unlocked>::new() }; // SAFETY: entry, no lock held
//! let cell = table.insert(&mut tok, Ino(2), 0).ok().unwrap();
//! let mut g = cell.write(&mut tok);
//! table.remove(g.token(), Ino(2)); // the table (Map) after a file (File): rejected
//! ```

use std::fmt;

use crate::lock_order::{File, LockAfter, Locked, Map, OrderedRwLock, ReadGuard, WriteGuard};
use crate::sharded::{Shard, Shards};
use crate::sync::Arc;
use crate::types::Ino;

#[cfg(not(loom))]
const SHARDS: usize = 64;
#[cfg(loom)]
const SHARDS: usize = 2;

/// One inode's metadata and its innermost lock.
pub struct FileCell<T> {
    ino: Ino,
    lock: OrderedRwLock<T, File>,
}

impl<T> fmt::Debug for FileCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCell")
            .field("ino", &self.ino)
            .finish_non_exhaustive()
    }
}

/// Shared guard on one file's metadata.
pub type FileRead<'a, T> = ReadGuard<'a, T, File>;
/// Exclusive guard on one file's metadata.
pub type FileWrite<'a, T> = WriteGuard<'a, T, File>;

impl<T> FileCell<T> {
    /// A cell for `ino` not (yet) in any table.
    pub fn new(ino: Ino, value: T) -> Self {
        FileCell {
            ino,
            lock: OrderedRwLock::new(value),
        }
    }

    /// The inode this cell belongs to.
    pub fn ino(&self) -> Ino {
        self.ino
    }

    /// Locks this file's metadata shared.
    pub fn read<'a, P>(&'a self, tok: &'a mut Locked<P>) -> FileRead<'a, T>
    where
        File: LockAfter<P>,
    {
        self.lock.read(tok)
    }

    /// Locks this file's metadata exclusively.
    pub fn write<'a, P>(&'a self, tok: &'a mut Locked<P>) -> FileWrite<'a, T>
    where
        File: LockAfter<P>,
    {
        self.lock.write(tok)
    }

    /// Locks several files exclusively, in ascending inode order whatever the order of
    /// `cells`; a cell listed twice is locked once. The one way to hold two file locks at
    /// once (rename, link).
    pub fn write_many<'a, P>(_tok: &'a mut Locked<P>, cells: &[&'a FileCell<T>]) -> FileSet<'a, T>
    where
        File: LockAfter<P>,
    {
        let mut sorted: Vec<&'a FileCell<T>> = cells.to_vec();
        sorted.sort_by_key(|c| c.ino);
        sorted.dedup_by_key(|c| c.ino);
        // The caller's token proved that File may be taken now; locking in ascending
        // inode order is what makes holding several File locks safe, and this is the only
        // function that does it.
        let guards = sorted
            .into_iter()
            .map(|c| (c.ino, c.lock.write_ordered_set()))
            .collect();
        FileSet { guards }
    }
}

/// Exclusive guards on a set of files, taken in inode order by [`FileCell::write_many`].
pub struct FileSet<'a, T> {
    guards: Vec<(Ino, crate::sync::RwLockWriteGuard<'a, T>)>,
}

impl<T> FileSet<'_, T> {
    /// The metadata of `ino`, if it is in the set.
    pub fn get(&self, ino: Ino) -> Option<&T> {
        self.guards.iter().find(|(i, _)| *i == ino).map(|(_, g)| &**g)
    }

    /// The metadata of `ino` for writing, if it is in the set.
    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut T> {
        self.guards.iter_mut().find(|(i, _)| *i == ino).map(|(_, g)| &mut **g)
    }

    /// Two distinct members for writing at once.
    pub fn pair_mut(&mut self, a: Ino, b: Ino) -> Option<(&mut T, &mut T)> {
        if a == b {
            return None;
        }
        let ia = self.guards.iter().position(|(i, _)| *i == a)?;
        let ib = self.guards.iter().position(|(i, _)| *i == b)?;
        if ia < ib {
            let (lo, hi) = self.guards.split_at_mut(ib);
            Some((&mut *lo[ia].1, &mut *hi[0].1))
        } else {
            let (lo, hi) = self.guards.split_at_mut(ia);
            Some((&mut *hi[0].1, &mut *lo[ib].1))
        }
    }

    /// The inodes in the set, ascending.
    pub fn inos(&self) -> impl Iterator<Item = Ino> + '_ {
        self.guards.iter().map(|(i, _)| *i)
    }
}

/// Inode → per-file metadata, sharded; each file behind its own innermost lock.
pub struct MetaTable<T> {
    shards: Shards<Arc<FileCell<T>>>,
}

impl<T> fmt::Debug for MetaTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaTable")
            .field("shards", &self.shards.count())
            .finish_non_exhaustive()
    }
}

impl<T> Default for MetaTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> MetaTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        MetaTable {
            shards: Shards::new(SHARDS),
        }
    }

    fn shard(&self, ino: Ino) -> &OrderedRwLock<Shard<Arc<FileCell<T>>>, Map> {
        self.shards.of(ino.0)
    }

    /// Inserts `value` for `ino` unless the inode is present; returns the new cell, or the
    /// value back if `ino` was taken.
    pub fn insert<P>(&self, tok: &mut Locked<P>, ino: Ino, value: T) -> Result<Arc<FileCell<T>>, T>
    where
        Map: LockAfter<P>,
    {
        let mut shard = self.shard(ino).write(tok);
        if shard.contains_key(&ino.0) {
            return Err(value);
        }
        let cell = Arc::new(FileCell::new(ino, value));
        shard.insert(ino.0, Arc::clone(&cell));
        Ok(cell)
    }

    /// The cell of `ino`, to be locked after the table lock is released.
    pub fn get<P>(&self, tok: &mut Locked<P>, ino: Ino) -> Option<Arc<FileCell<T>>>
    where
        Map: LockAfter<P>,
    {
        self.shard(ino).read(tok).get(&ino.0).cloned()
    }

    /// Runs `f` on `ino`'s metadata under its shared lock (the shard stays read-locked,
    /// so no `Arc` is cloned on this path).
    pub fn read<P, R>(&self, tok: &mut Locked<P>, ino: Ino, f: impl FnOnce(&T) -> R) -> Option<R>
    where
        Map: LockAfter<P>,
    {
        let mut shard = self.shard(ino).read(tok);
        let (map, tok) = shard.split();
        let cell = map.get(&ino.0)?;
        let g = cell.lock.read(tok);
        Some(f(&g))
    }

    /// Runs `f` on `ino`'s metadata under its exclusive lock.
    pub fn update<P, R>(&self, tok: &mut Locked<P>, ino: Ino, f: impl FnOnce(&mut T) -> R) -> Option<R>
    where
        Map: LockAfter<P>,
    {
        let mut shard = self.shard(ino).read(tok);
        let (map, tok) = shard.split();
        let cell = map.get(&ino.0)?;
        let mut g = cell.lock.write(tok);
        Some(f(&mut g))
    }

    /// Removes `ino` if `pred` holds for its metadata, checked under the file lock while the
    /// shard is write-locked, so nothing can change the answer in between.
    pub fn remove_if<P>(&self, tok: &mut Locked<P>, ino: Ino, pred: impl FnOnce(&T) -> bool) -> Option<Arc<FileCell<T>>>
    where
        Map: LockAfter<P>,
    {
        let mut shard = self.shard(ino).write(tok);
        let (map, tok) = shard.split();
        let keep = {
            let cell = map.get(&ino.0)?;
            let g = cell.lock.read(tok);
            !pred(&g)
        };
        if keep { None } else { map.remove(&ino.0) }
    }

    /// Removes `ino` unconditionally.
    pub fn remove<P>(&self, tok: &mut Locked<P>, ino: Ino) -> Option<Arc<FileCell<T>>>
    where
        Map: LockAfter<P>,
    {
        self.shard(ino).write(tok).remove(&ino.0)
    }

    /// Whether `ino` is present.
    pub fn contains<P>(&self, tok: &mut Locked<P>, ino: Ino) -> bool
    where
        Map: LockAfter<P>,
    {
        self.shard(ino).read(tok).contains_key(&ino.0)
    }

    /// Number of inodes (a snapshot: shards are counted one after another).
    pub fn len<P>(&self, tok: &mut Locked<P>) -> usize
    where
        Map: LockAfter<P>,
    {
        self.shards.len(tok)
    }

    /// Whether the table is empty (a snapshot).
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

    #[test]
    fn insert_get_update_remove() {
        let t: MetaTable<(u64, u64)> = MetaTable::new();
        // SAFETY: the test's entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        assert!(t.insert(&mut tok, Ino(5), (1, 1)).is_ok());
        assert_eq!(t.insert(&mut tok, Ino(5), (9, 9)).err(), Some((9, 9)));
        assert_eq!(t.read(&mut tok, Ino(5), |m| *m), Some((1, 1)));
        t.update(&mut tok, Ino(5), |m| *m = (2, 2));
        assert_eq!(t.read(&mut tok, Ino(5), |m| m.0), Some(2));
        assert!(t.remove_if(&mut tok, Ino(5), |m| m.0 == 3).is_none());
        assert!(t.contains(&mut tok, Ino(5)));
        assert!(t.remove_if(&mut tok, Ino(5), |m| m.0 == 2).is_some());
        assert!(!t.contains(&mut tok, Ino(5)));
        assert_eq!(t.read(&mut tok, Ino(5), |m| *m), None);
        assert!(t.is_empty(&mut tok));
    }

    #[test]
    fn write_many_orders_and_dedups() {
        let a = FileCell::new(Ino(7), 70u32);
        let b = FileCell::new(Ino(3), 30u32);
        // SAFETY: the test's entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let mut set = FileCell::write_many(&mut tok, &[&a, &b, &a]);
        assert_eq!(set.inos().collect::<Vec<_>>(), vec![Ino(3), Ino(7)]);
        let (x, y) = set.pair_mut(Ino(7), Ino(3)).unwrap();
        std::mem::swap(x, y);
        assert_eq!(set.get(Ino(7)), Some(&30));
        assert!(set.pair_mut(Ino(3), Ino(3)).is_none());
        drop(set);
        assert_eq!(*a.read(&mut tok), 30);
    }
}
