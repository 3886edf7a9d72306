//! Changes made directly in a shared host directory (not through the exporter): the
//! watcher is `vfs_core::watch` (inotify), shared with `LocalFs`'s kernel-cache reports;
//! this module names it where the exporter's users have always found it.
//!
//! Invariant: the same as `vfs_core::watch`'s — every inotify event under the root becomes
//! a change for the exporter's debouncer, an overflow becomes "revalidate everything"
//! ([`super::REVALIDATE_ALL`], the same key as `vfs_core::watch::REVALIDATE_ALL`).

pub use vfs_core::watch::{HostWatcher, RESCAN_MAX, SETTLE, attr_of};
