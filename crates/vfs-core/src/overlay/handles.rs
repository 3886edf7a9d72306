//! The overlay's open-file handles: an [`Fh`](crate::types::Fh) of the overlay names an
//! inode and the access mode it was opened with, kept in the shared
//! [`FhTable`](crate::fh_table::FhTable); the backends' own handles are kept per inode
//! (see `node.rs`), shared by every overlay handle of that inode.
//!
//! Invariant: a handle is in the table from `open`/`create` until `release`, answers only
//! for the inode it was opened on, and records the access mode and `O_APPEND` of its open;
//! numbers are never reused within a mount (the table's rules).

use crate::types::AccessMode;

/// What the overlay keeps per open handle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handle {
    pub access: AccessMode,
    pub append: bool,
}
