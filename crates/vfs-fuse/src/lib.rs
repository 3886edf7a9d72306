//! `vfs-fuse`: any [`vfs_core::VirtualFs`] mounted through the kernel's FUSE, with the
//! crate `fuser`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use vfs_core::memfs::MemFs;
//!
//! let mount = vfs_fuse::mount(Arc::new(MemFs::new()), "/mnt/memfs", &vfs_fuse::MountOptions::default())?;
//! // ... the filesystem is served until `mount` is dropped.
//! mount.unmount()?;
//! # Ok::<(), vfs_fuse::MountError>(())
//! ```
//!
//! (`no_run`: mounting needs `/dev/fuse` and a mount point.) What the kernel may cache is
//! chosen before mounting; by default a failed lookup is never cached, so a file created
//! behind the kernel's back is seen at once:
//!
//! ```
//! let opts = vfs_fuse::MountOptions::default();
//! assert!(opts.negative_ttl.is_zero());
//! ```
//!
//! Invariant of the crate: it translates and holds no filesystem logic. Each kernel
//! request is one backend call whose answer is the reply; what the kernel may cache is
//! set by [`MountOptions`] and by what the backend promises about changes behind the
//! mount ([`vfs_core::ChangeSource`], asked once with `VirtualFs::report_changes`: long
//! TTLs and kept pages only for `OnlyThroughMount` or `Reported`; negative lookups never
//! cached by default); a backend whose data changes underneath tells the kernel through
//! the mount's [`vfs_core::Invalidator`], which queues and never blocks; `forget` reaches the
//! backend. What a FUSE user sees is written in `doc/SEMANTICS.md`.
#![warn(missing_docs)]

mod adapter;
mod convert;
mod invalidate;
mod mount;
mod options;
pub mod probe;

pub use invalidate::QueuedInvalidator;
pub use mount::{Mount, MountError, mount};
pub use options::{Dispatch, MountOptions};
