//! Lock ordering enforced by the type system.
//!
//! Invariant: locks are taken in the order of their levels, `Unlocked → Namespace → Map →
//! File`, never the reverse, and a level is never taken twice except through a function
//! that orders the locks it takes (by inode). Code that breaks the order does not compile.
//!
//! Every operation starts with a zero-sized [`Locked<Unlocked>`] token, minted once at its
//! entry (see "Where tokens come from" below). Taking an
//! [`OrderedRwLock`] or [`OrderedMutex`] of level `L` needs a `&mut Locked<P>` where `L`
//! comes after `P`; the guard borrows that token for as long as it lives and hands out a
//! `Locked<L>` of its own, so the next lock must come after `L`. Levels and their order are
//! declared with [`impl_lock_after!`](crate::impl_lock_after), which also makes the order
//! transitive. This is the scheme of Fuchsia's `lock_order` crate, cut to what a
//! filesystem needs.
//!
//! Why: in seed 000 bug 1 (doc/LESSONS.md#seed-000-bug-1) a `File` was reachable from three maps and each handler
//! touched its fields under whichever map lock it had used to find it. Here a file's
//! fields live behind a [`File`]-level lock that can only be taken after the map lock, and
//! the map cannot be taken while a file is held.
//!
//! Taking a map lock while holding a file lock is a type error:
//!
//! ```compile_fail,E0277
//! use vfs_core::lock_order::{Locked, Unlocked, OrderedRwLock, Map, File};
//! let map: OrderedRwLock<u32, Map> = OrderedRwLock::new(0);
//! let file: OrderedRwLock<u32, File> = OrderedRwLock::new(0);
//! let mut tok = unsafe { Locked::<Unlocked>::new() }; // SAFETY: entry, no lock held
//! let mut f = file.write(&mut tok);
//! let _m = map.read(f.token()); // Map does not come after File
//! ```
//!
//! So is taking a second file lock from the first one (use `FileCell::write_many`):
//!
//! ```compile_fail,E0277
//! use vfs_core::lock_order::{Locked, Unlocked, OrderedRwLock, File};
//! let a: OrderedRwLock<u32, File> = OrderedRwLock::new(0);
//! let b: OrderedRwLock<u32, File> = OrderedRwLock::new(0);
//! let mut tok = unsafe { Locked::<Unlocked>::new() }; // SAFETY: entry, no lock held
//! let mut ga = a.write(&mut tok);
//! let _gb = b.write(ga.token()); // File does not come after File
//! ```
//!
//! And reusing the outer token while a guard is alive is a borrow error:
//!
//! ```compile_fail,E0499
//! use vfs_core::lock_order::{Locked, Unlocked, OrderedRwLock, File};
//! let a: OrderedRwLock<u32, File> = OrderedRwLock::new(0);
//! let b: OrderedRwLock<u32, File> = OrderedRwLock::new(0);
//! let mut tok = unsafe { Locked::<Unlocked>::new() }; // SAFETY: entry, no lock held
//! let ga = a.write(&mut tok);
//! let gb = b.write(&mut tok); // `tok` is still borrowed by `ga`
//! drop((ga, gb));
//! ```
//!
//! # Where tokens come from
//!
//! The checks above hold only if every `Locked<Unlocked>` is minted where no lock is
//! held: a fresh token minted under a `File` guard can take the map, and the compiler
//! would not object. Nothing in the type system knows "inside an operation", so the
//! choice is how to make minting a deliberate, visible act:
//!
//! - *crate-private `new`* would lock out every backend outside this crate from
//!   [`crate::meta::MetaTable`] and [`crate::fh_table::FhTable`], and would not stop this
//!   crate's own backends from minting mid-operation (MemFs did, at fifteen places);
//! - *a safe closure entry point* (`Locked::enter(|tok| ..)`) can be called again inside
//!   the closure, and an async operation holds its token across `.await`s, so it neither
//!   prevents the bypass nor fits the `VirtualFs` methods;
//! - *`unsafe fn new`* (chosen, as Fuchsia's starnix_sync does for `Unlocked::new`):
//!   minting a token is a promise the compiler cannot check, so it is written as one.
//!   Each mint carries a `// SAFETY:` line (clippy's `undocumented_unsafe_blocks` is
//!   denied), `grep -n 'Locked::new'` lists every entry point, and a mint inside a
//!   locked region stands out in review. Backends mint one token at the entry of each
//!   `VirtualFs` method and pass `&mut` references down; helpers take `&mut Locked<P>`.
//!
//! The bypass — a fresh token minted while a `File` guard is held, used to take the map —
//! no longer compiles without `unsafe`:
//!
//! ```compile_fail,E0133
//! use vfs_core::lock_order::{Locked, Unlocked, OrderedRwLock, Map, File};
//! let map: OrderedRwLock<u32, Map> = OrderedRwLock::new(0);
//! let file: OrderedRwLock<u32, File> = OrderedRwLock::new(0);
//! let mut tok = unsafe { Locked::<Unlocked>::new() }; // SAFETY: entry, no lock held
//! let _f = file.write(&mut tok);
//! let mut fresh = Locked::<Unlocked>::new(); // minting is `unsafe`: rejected
//! let _m = map.read(&mut fresh);
//! ```
//!
//! The right order compiles:
//!
//! ```
//! use vfs_core::lock_order::{Locked, Unlocked, OrderedRwLock, Map, File};
//! let map: OrderedRwLock<u32, Map> = OrderedRwLock::new(1);
//! let file: OrderedRwLock<u32, File> = OrderedRwLock::new(2);
//! // SAFETY: the entry of this example: no lock is held.
//! let mut tok = unsafe { Locked::<Unlocked>::new() };
//! let mut m = map.read(&mut tok);
//! let f = file.read(m.token());
//! assert_eq!(*f + 1, 3);
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use crate::sync;

/// `Self` may be locked while a lock of level `A` is held.
pub trait LockAfter<A> {}

/// `Self` may be held while a lock of level `B` is taken. Implemented for every pair that
/// [`LockAfter`] orders; do not implement it directly.
pub trait LockBefore<B> {}

impl<B: LockAfter<A>, A> LockBefore<B> for A {}

/// Declares that level `$b` comes after level `$a`, and after every level before `$a`.
///
/// Written `Unlocked => X`, it declares a new outermost level (nothing comes before
/// `Unlocked`, so only the direct relation is emitted). Outside this crate that is the
/// form to use: coherence cannot prove across crates that `vfs-core`'s own levels are
/// acyclic, so chaining a new level after `Map` or `File` is rejected there (E0119).
///
/// ```
/// use vfs_core::impl_lock_after;
/// use vfs_core::lock_order::{LockAfter, Unlocked};
/// /// A backend's own outermost lock, e.g. its connection table.
/// pub enum Connections {}
/// impl_lock_after!(Unlocked => Connections);
/// fn check<L: LockAfter<Unlocked>>() {}
/// check::<Connections>();
/// ```
#[macro_export]
macro_rules! impl_lock_after {
    (Unlocked => $b:ty) => {
        impl $crate::lock_order::LockAfter<$crate::lock_order::Unlocked> for $b {}
    };
    ($a:ty => $b:ty) => {
        impl $crate::lock_order::LockAfter<$a> for $b {}
        impl<X: $crate::lock_order::LockBefore<$a>> $crate::lock_order::LockAfter<X> for $b {}
    };
}

/// The level of code that holds no lock: where every operation starts.
#[derive(Debug)]
pub enum Unlocked {}
/// A backend's tree-wide namespace lock (e.g. the one that serializes cross-directory
/// renames so that no rename can create a cycle).
#[derive(Debug)]
pub enum Namespace {}
/// A table lock: the shard of [`crate::meta::MetaTable`] that maps inodes to files.
#[derive(Debug)]
pub enum Map {}
/// A single file's metadata lock: always innermost.
#[derive(Debug)]
pub enum File {}

impl_lock_after!(Unlocked => Namespace);
impl_lock_after!(Namespace => Map);
impl_lock_after!(Map => File);

/// A proof that the current code holds locks up to level `L` and no later one.
///
/// Zero-sized; mint a `Locked<Unlocked>` ([`Locked::new`]) at the entry of each operation
/// and pass `&mut` references down.
pub struct Locked<L>(PhantomData<fn() -> L>);

impl Locked<Unlocked> {
    /// The token of an operation that holds no lock yet: mint it once, at the operation's
    /// entry point, and pass `&mut` references down.
    ///
    /// # Safety
    ///
    /// The caller holds no lock of this ordering: no guard of an [`OrderedRwLock`] or
    /// [`OrderedMutex`] (nor a [`crate::meta::FileSet`]) is alive in the calling thread of
    /// control, and no other `Locked` token of the current operation is. A token minted
    /// while a guard is held lets the code take a lock out of order, which the compiler
    /// then cannot see: a deadlock, or a file's fields read under the wrong lock (seed
    /// 000). Breaking the contract is not undefined behaviour in the memory sense; it is
    /// `unsafe` because it is the one promise of this module that the compiler cannot
    /// check (see the module docs, "Where tokens come from").
    pub unsafe fn new() -> Self {
        Locked(PhantomData)
    }
}

impl<L> Locked<L> {
    fn at_level() -> Self {
        Locked(PhantomData)
    }
}

impl<L> fmt::Debug for Locked<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Locked<{}>", std::any::type_name::<L>())
    }
}

/// A reader-writer lock at level `L`.
pub struct OrderedRwLock<T, L> {
    inner: sync::RwLock<T>,
    _level: PhantomData<fn() -> L>,
}

impl<T: fmt::Debug, L> fmt::Debug for OrderedRwLock<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedRwLock")
            .field("level", &std::any::type_name::<L>())
            .finish_non_exhaustive()
    }
}

impl<T: Default, L> Default for OrderedRwLock<T, L> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T, L> OrderedRwLock<T, L> {
    /// A new unlocked lock.
    pub fn new(value: T) -> Self {
        OrderedRwLock {
            inner: sync::RwLock::new(value),
            _level: PhantomData,
        }
    }

    /// Takes the lock shared. `tok` stays borrowed until the guard is dropped.
    pub fn read<'a, P>(&'a self, _tok: &'a mut Locked<P>) -> ReadGuard<'a, T, L>
    where
        L: LockAfter<P>,
    {
        ReadGuard {
            guard: self.inner.read(),
            token: Locked::at_level(),
        }
    }

    /// Takes the lock exclusively. `tok` stays borrowed until the guard is dropped.
    pub fn write<'a, P>(&'a self, _tok: &'a mut Locked<P>) -> WriteGuard<'a, T, L>
    where
        L: LockAfter<P>,
    {
        WriteGuard {
            guard: self.inner.write(),
            token: Locked::at_level(),
        }
    }

    /// Consumes the lock.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }

    /// Takes the lock exclusively without a token, for [`crate::meta::FileCell::write_many`]
    /// only: its caller proved the level with its own token, and it locks in inode order.
    pub(crate) fn write_ordered_set(&self) -> sync::RwLockWriteGuard<'_, T> {
        self.inner.write()
    }
}

/// Shared guard of an [`OrderedRwLock`]; carries the token of its level.
pub struct ReadGuard<'a, T, L> {
    guard: sync::RwLockReadGuard<'a, T>,
    token: Locked<L>,
}

impl<T, L> ReadGuard<'_, T, L> {
    /// The token for taking further locks while this one is held.
    pub fn token(&mut self) -> &mut Locked<L> {
        &mut self.token
    }
    /// The protected value and the token at once.
    pub fn split(&mut self) -> (&T, &mut Locked<L>) {
        (&*self.guard, &mut self.token)
    }
}

impl<T, L> Deref for ReadGuard<'_, T, L> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

/// Exclusive guard of an [`OrderedRwLock`]; carries the token of its level.
pub struct WriteGuard<'a, T, L> {
    guard: sync::RwLockWriteGuard<'a, T>,
    token: Locked<L>,
}

impl<T, L> WriteGuard<'_, T, L> {
    /// The token for taking further locks while this one is held.
    pub fn token(&mut self) -> &mut Locked<L> {
        &mut self.token
    }
    /// The protected value and the token at once.
    pub fn split(&mut self) -> (&mut T, &mut Locked<L>) {
        (&mut *self.guard, &mut self.token)
    }
}

impl<T, L> Deref for WriteGuard<'_, T, L> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T, L> DerefMut for WriteGuard<'_, T, L> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A mutex at level `L`.
pub struct OrderedMutex<T, L> {
    inner: sync::Mutex<T>,
    _level: PhantomData<fn() -> L>,
}

impl<T: Default, L> Default for OrderedMutex<T, L> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T, L> fmt::Debug for OrderedMutex<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedMutex")
            .field("level", &std::any::type_name::<L>())
            .finish_non_exhaustive()
    }
}

impl<T, L> OrderedMutex<T, L> {
    /// A new unlocked mutex.
    pub fn new(value: T) -> Self {
        OrderedMutex {
            inner: sync::Mutex::new(value),
            _level: PhantomData,
        }
    }

    /// Takes the mutex. `tok` stays borrowed until the guard is dropped.
    pub fn lock<'a, P>(&'a self, _tok: &'a mut Locked<P>) -> MutexGuard<'a, T, L>
    where
        L: LockAfter<P>,
    {
        MutexGuard {
            guard: self.inner.lock(),
            token: Locked::at_level(),
        }
    }
}

/// Guard of an [`OrderedMutex`]; carries the token of its level.
pub struct MutexGuard<'a, T, L> {
    guard: sync::MutexGuard<'a, T>,
    token: Locked<L>,
}

impl<T, L> MutexGuard<'_, T, L> {
    /// The token for taking further locks while this one is held.
    pub fn token(&mut self) -> &mut Locked<L> {
        &mut self.token
    }
}

impl<T, L> Deref for MutexGuard<'_, T, L> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T, L> DerefMut for MutexGuard<'_, T, L> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use super::*;

    fn after<A, B: LockAfter<A>>() {}

    #[test]
    fn order_is_transitive() {
        after::<Unlocked, Namespace>();
        after::<Unlocked, Map>();
        after::<Unlocked, File>();
        after::<Namespace, Map>();
        after::<Namespace, File>();
        after::<Map, File>();
    }

    #[test]
    fn nested_locks_in_order() {
        let ns: OrderedMutex<u8, Namespace> = OrderedMutex::new(1);
        let map: OrderedRwLock<u8, Map> = OrderedRwLock::new(2);
        let file: OrderedRwLock<u8, File> = OrderedRwLock::new(3);
        // SAFETY: the test's entry: no lock is held.
        let mut tok = unsafe { Locked::new() };
        let mut n = ns.lock(&mut tok);
        let mut m = map.write(n.token());
        *m += 1;
        let (mv, mt) = m.split();
        let mut f = file.write(mt);
        *f += *mv;
        assert_eq!(*f, 6);
    }
}
