//! The one place concurrency primitives come from.
//!
//! Invariant: every lock, atomic and thread that a primitive of this crate relies on for
//! its correctness is taken from this module, so that the same code runs under `loom`
//! (`RUSTFLAGS="--cfg loom"`) and in production. In production the locks are
//! `parking_lot`'s (no poisoning, small, fast); under loom they are loom's model-checked
//! equivalents wrapped to present the same poison-free API.
//!
//! Anything that is not built from these types is invisible to the loom model checker:
//! that is why [`crate::meta::MetaTable`] is a sharded map of facade locks rather than a
//! `DashMap` (whose internal locks loom cannot see).

#[cfg(not(loom))]
pub use std::sync::Arc;
#[cfg(not(loom))]
pub use std::sync::atomic;
#[cfg(not(loom))]
pub use std::thread;

#[cfg(loom)]
pub use loom::sync::Arc;
#[cfg(loom)]
pub use loom::sync::atomic;
#[cfg(loom)]
pub use loom::thread;

#[cfg(not(loom))]
mod imp {
    use std::time::Duration;

    /// A mutual-exclusion lock (parking_lot in production, loom under `cfg(loom)`).
    #[derive(Debug, Default)]
    pub struct Mutex<T: ?Sized>(parking_lot::Mutex<T>);
    /// Guard of a [`Mutex`].
    pub type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        /// A new unlocked mutex.
        pub const fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }
        /// Consumes the mutex and returns the value.
        pub fn into_inner(self) -> T {
            self.0.into_inner()
        }
    }
    impl<T: ?Sized> Mutex<T> {
        /// Blocks until the lock is held.
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
        /// Takes the lock if it is free.
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock()
        }
    }

    /// A reader-writer lock (parking_lot in production, loom under `cfg(loom)`).
    #[derive(Debug, Default)]
    pub struct RwLock<T: ?Sized>(parking_lot::RwLock<T>);
    /// Shared guard of a [`RwLock`].
    pub type RwLockReadGuard<'a, T> = parking_lot::RwLockReadGuard<'a, T>;
    /// Exclusive guard of a [`RwLock`].
    pub type RwLockWriteGuard<'a, T> = parking_lot::RwLockWriteGuard<'a, T>;

    impl<T> RwLock<T> {
        /// A new unlocked lock.
        pub const fn new(value: T) -> Self {
            Self(parking_lot::RwLock::new(value))
        }
        /// Consumes the lock and returns the value.
        pub fn into_inner(self) -> T {
            self.0.into_inner()
        }
    }
    impl<T: ?Sized> RwLock<T> {
        /// Blocks until a shared lock is held.
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read()
        }
        /// Blocks until the exclusive lock is held.
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write()
        }
    }

    /// A condition variable paired with [`Mutex`].
    #[derive(Debug, Default)]
    pub struct Condvar(parking_lot::Condvar);
    impl Condvar {
        /// A new condition variable.
        pub const fn new() -> Self {
            Self(parking_lot::Condvar::new())
        }
        /// Releases the guard's lock, waits for a notification, re-takes the lock and
        /// returns the guard (by value, as loom's condvar needs).
        pub fn wait<'a, T>(&self, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(&mut guard);
            guard
        }
        /// Like [`Condvar::wait`] with a timeout; the flag is `true` if it timed out.
        pub fn wait_for<'a, T>(&self, mut guard: MutexGuard<'a, T>, timeout: Duration) -> (MutexGuard<'a, T>, bool) {
            let timed_out = self.0.wait_for(&mut guard, timeout).timed_out();
            (guard, timed_out)
        }
        /// Wakes one waiter.
        pub fn notify_one(&self) {
            self.0.notify_one();
        }
        /// Wakes every waiter.
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

#[cfg(loom)]
mod imp {
    use std::time::Duration;

    /// A mutual-exclusion lock (loom's model-checked mutex).
    #[derive(Debug, Default)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);
    /// Guard of a [`Mutex`].
    pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        /// A new unlocked mutex.
        pub fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }
        /// Consumes the mutex and returns the value.
        pub fn into_inner(self) -> T {
            self.0.into_inner().unwrap_or_else(|e| e.into_inner())
        }
        /// Blocks until the lock is held.
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
        /// Takes the lock if it is free.
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    /// A reader-writer lock (loom's model-checked lock).
    #[derive(Debug, Default)]
    pub struct RwLock<T>(loom::sync::RwLock<T>);
    /// Shared guard of a [`RwLock`].
    pub type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
    /// Exclusive guard of a [`RwLock`].
    pub type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;

    impl<T> RwLock<T> {
        /// A new unlocked lock.
        pub fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }
        /// Consumes the lock and returns the value.
        pub fn into_inner(self) -> T {
            self.0.into_inner().unwrap_or_else(|e| e.into_inner())
        }
        /// Blocks until a shared lock is held.
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }
        /// Blocks until the exclusive lock is held.
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// A condition variable paired with [`Mutex`] (loom's).
    #[derive(Debug, Default)]
    pub struct Condvar(loom::sync::Condvar);
    impl Condvar {
        /// A new condition variable.
        pub fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }
        /// Releases the guard's lock, waits for a notification, re-takes the lock and
        /// returns the guard.
        pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap_or_else(|e| e.into_inner())
        }
        /// Like [`Condvar::wait`]; loom has no clock, so this is a plain wait that
        /// reports no timeout.
        pub fn wait_for<'a, T>(&self, guard: MutexGuard<'a, T>, _timeout: Duration) -> (MutexGuard<'a, T>, bool) {
            (self.wait(guard), false)
        }
        /// Wakes one waiter.
        pub fn notify_one(&self) {
            self.0.notify_one();
        }
        /// Wakes every waiter.
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

pub use imp::*;
