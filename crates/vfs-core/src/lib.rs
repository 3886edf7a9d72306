//! `vfs-core`: the `VirtualFs` trait and the primitives a virtual filesystem needs to be
//! correct under concurrency.
//!
//! Invariant of the crate: every primitive here exists because a real project got it
//! wrong (doc/LESSONS.md tells each failure and what now prevents it), is built from the
//! [`sync`] facade so that loom checks the production code, and answers bad input with a
//! [`VfsError`], never a panic.
//!
//! Start with [`VirtualFs`], then the reference backend [`memfs::MemFs`].
//!
//! The smallest use: the in-memory backend, called directly (no mount needed).
//!
//! ```
//! use std::ffi::OsStr;
//! use vfs_core::memfs::MemFs;
//! use vfs_core::{Ino, Name, OpenFlags, RequestCtx, VirtualFs};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Builder::new_current_thread().build()?;
//! rt.block_on(async {
//!     let (fs, ctx) = (MemFs::new(), RequestCtx::ROOT);
//!     let name = Name::new(OsStr::new("hello.txt"))?;
//!     let (attr, fh) = fs.create(&ctx, Ino::ROOT, name, 0o644, 0o022, OpenFlags::RDWR).await?;
//!     fs.write(&ctx, attr.ino, fh, 0, b"hello").await?;
//!     assert_eq!(&fs.read(&ctx, attr.ino, fh, 0, 100).await?[..], b"hello");
//!     fs.release(&ctx, attr.ino, fh).await?;
//!     Ok::<_, vfs_core::VfsError>(())
//! })?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod barrier;
pub mod error;
pub mod fh;
pub mod fh_table;
pub mod invalidate;
#[cfg(all(target_os = "linux", feature = "localfs"))]
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
