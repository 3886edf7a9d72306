//! The overlay's open-file handles: an [`Fh`] of the overlay names an inode and the
//! access mode it was opened with; the backends' own handles are kept per inode (see
//! `node.rs`), shared by every overlay handle of that inode.
//!
//! Invariant: a handle is in the table from `open`/`create` until `release`, and records
//! the access mode and `O_APPEND` of its open; numbers are never reused within a mount.
//! This is the only handle map of the overlay, kept small so that it can move onto a
//! shared handle table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{VfsError, VfsResult};
use crate::types::{AccessMode, Fh, Ino};

/// One open handle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handle {
    pub ino: Ino,
    pub access: AccessMode,
    pub append: bool,
}

/// Handle number → handle.
#[derive(Default)]
pub(crate) struct Handles {
    next: AtomicU64,
    map: Mutex<HashMap<Fh, Handle>>,
}

impl Handles {
    /// Registers a handle and returns its number.
    pub fn insert(&self, h: Handle) -> Fh {
        let fh = Fh(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        self.map.lock().insert(fh, h);
        fh
    }

    /// The handle `fh` of `ino`; `EBADF` if unknown or for another inode.
    pub fn get(&self, ino: Ino, fh: Fh) -> VfsResult<Handle> {
        match self.map.lock().get(&fh) {
            Some(h) if h.ino == ino => Ok(*h),
            _ => Err(VfsError::BadHandle),
        }
    }

    /// Removes `fh`.
    pub fn remove(&self, ino: Ino, fh: Fh) -> VfsResult<Handle> {
        let mut map = self.map.lock();
        match map.get(&fh) {
            Some(h) if h.ino == ino => map.remove(&fh).ok_or(VfsError::BadHandle),
            _ => Err(VfsError::BadHandle),
        }
    }
}
