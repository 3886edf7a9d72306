//! `vfs-core`: the `VirtualFs` trait and the primitives a virtual filesystem needs to be
//! correct under concurrency.
//!
//! Invariant of the crate: every primitive here exists because a real project got it
//! wrong (the seeds in `doc/SEMANTICS.md` name each failure), is built from the
//! [`sync`] facade so that loom checks the production code, and answers bad input with a
//! [`VfsError`], never a panic.
//!
//! Start with [`VirtualFs`], then the reference backend [`memfs::MemFs`].
#![warn(missing_docs)]

pub mod barrier;
pub mod error;
pub mod fh;
pub mod fh_table;
pub mod invalidate;
#[cfg(target_os = "linux")]
pub mod localfs;
pub mod lock_order;
pub mod memfs;
pub mod meta;
pub mod notify;
pub mod overlay;
pub mod pool;
pub mod readonly;
mod sharded;
pub mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;
pub mod vfs;
#[cfg(feature = "watch")]
pub mod watch;
pub mod wrap;

pub use error::{Errno, VfsError, VfsResult};
pub use invalidate::{Invalidator, NoInvalidator};
pub use readonly::ReadOnly;
pub use types::*;
pub use vfs::{
    ChangeSource, InodeStability, MknodSpec, VirtualFs, access_mask, check_access, check_xattr, xattr_namespace_check,
};

/// The README's code blocks, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
