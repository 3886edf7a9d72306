//! Telling a front end that its cached view of the tree is out of date.
//!
//! A backend whose data changes underneath the front end (a host directory edited behind
//! the kernel's back, a peer's tree arriving over the network) holds an
//! [`Invalidator`] and calls it when it learns of a change. The front end (the FUSE
//! adapter) then drops what the kernel cached: an entry, so that the next lookup asks
//! again (no stale absence, no stale presence: seed 002 bug 3 (doc/LESSONS.md#seed-002-bug-3)), or an inode's attributes
//! and data, so that the next `stat` or read sees the new size (seed 001 (doc/LESSONS.md#seed-001)).
//!
//! Invariant: calling an [`Invalidator`] never blocks on the front end and never waits
//! for a request to finish, so it is safe from inside any [`crate::VirtualFs`] operation,
//! with or without locks held. Implementations queue the notice and deliver it from a
//! thread of their own (the kernel handles some notices synchronously and may need a
//! request answered meanwhile: sending from a request thread can deadlock, fuser issue
//! #320).

use std::ffi::OsStr;

use crate::types::Ino;

/// Where a backend sends "this changed underneath you" notices. See the
/// [module docs](self).
pub trait Invalidator: Send + Sync {
    /// The attributes of `ino` are out of date, and so are its cached data from byte
    /// `offset` for `len` bytes (`len == 0`: to the end of file). A negative `offset`
    /// invalidates the attributes only; use that for an inode that has open handles, whose
    /// cached pages the kernel may be using (see [`Invalidator::inval_attr`]).
    fn inval_inode(&self, ino: Ino, offset: i64, len: i64);

    /// The entry `name` in directory `parent` is out of date: it appeared, vanished or
    /// now names another inode.
    fn inval_entry(&self, parent: Ino, name: &OsStr);

    /// The attributes of `ino` (size, times, mode) are out of date; cached data is kept.
    fn inval_attr(&self, ino: Ino) {
        self.inval_inode(ino, -1, 0);
    }
}

/// An [`Invalidator`] that does nothing: for front ends with no cache to invalidate (NFS
/// clients revalidate by themselves) and for backends used without a front end.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInvalidator;

impl Invalidator for NoInvalidator {
    fn inval_inode(&self, _ino: Ino, _offset: i64, _len: i64) {}
    fn inval_entry(&self, _parent: Ino, _name: &OsStr) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, i64, i64)>>);

    impl Invalidator for Recorder {
        fn inval_inode(&self, ino: Ino, offset: i64, len: i64) {
            self.0.lock().expect("lock").push((ino.0, offset, len));
        }
        fn inval_entry(&self, _parent: Ino, _name: &OsStr) {}
    }

    #[test]
    fn inval_attr_is_a_negative_offset() {
        let r = Recorder::default();
        r.inval_attr(Ino(7));
        assert_eq!(*r.0.lock().expect("lock"), vec![(7, -1, 0)]);
        NoInvalidator.inval_attr(Ino(7));
        NoInvalidator.inval_entry(Ino::ROOT, OsStr::new("x"));
    }
}
