//! `Wrapped<F, H>`: a [`VirtualFs`] that forwards every operation to an inner backend
//! `F` through hooks `H`, which override only what they change.
//!
//! Invariant: every method of [`VirtualFs`] is forwarded — a [`Hooks`] method left at its
//! default calls the inner backend's method of the same name with the same arguments,
//! unchanged, and returns its answer unchanged. Both the hook defaults and the forwarding
//! impl are generated from one list of the trait's methods (`wrap_methods!` below), so a
//! method cannot be forwarded with its arguments swapped, or forgotten in one place and
//! not the other.
//!
//! This is what spies, mutants and fault injectors are made of (the testkit's own tests,
//! the front ends' tests): write the two or three operations that differ, not thirty.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use vfs_core::memfs::MemFs;
//! use vfs_core::wrap::{Hooks, Wrapped};
//! use vfs_core::{Attr, Fh, Ino, RequestCtx, VfsResult, VirtualFs};
//!
//! /// Counts getattr calls; everything else goes straight through.
//! #[derive(Default)]
//! struct CountGetattr(AtomicU64);
//!
//! impl Hooks<MemFs> for CountGetattr {
//!     async fn getattr(&self, inner: &MemFs, ctx: &RequestCtx, ino: Ino, fh: Option<Fh>) -> VfsResult<Attr> {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         inner.getattr(ctx, ino, fh).await
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let fs = Wrapped::new(MemFs::new(), CountGetattr::default());
//! let ctx = RequestCtx::ROOT;
//! fs.getattr(&ctx, Ino::ROOT, None).await.unwrap();
//! fs.statfs(&ctx, Ino::ROOT).await.unwrap(); // forwarded, not counted
//! assert_eq!(fs.hooks.0.load(Ordering::Relaxed), 1);
//! # });
//! ```
//!
//! A provided method added to [`VirtualFs`] must be added to the list here too, or a
//! `Wrapped` would answer it with the trait's default instead of the inner backend's; the
//! test `every_method_is_forwarded` below calls each method through a wrapper with no
//! hooks and checks that the inner backend saw it.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::VfsResult;
use crate::invalidate::Invalidator;
use crate::types::{
    Attr, DirEntry, DirEntryPlus, Fh, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs, XattrSet,
};
use crate::vfs::{ChangeSource, InodeStability, VirtualFs};

/// An inner backend and the hooks that stand in front of it. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Wrapped<F, H> {
    /// The backend every operation reaches unless a hook decides otherwise.
    pub inner: F,
    /// The hooks, and whatever state they keep (counters, logs, planted faults).
    pub hooks: H,
}

impl<F, H> Wrapped<F, H> {
    /// `inner` behind `hooks`.
    pub fn new(inner: F, hooks: H) -> Self {
        Wrapped { inner, hooks }
    }
}

/// Hooks a [`Wrapped`] calls instead of its inner backend: one per [`VirtualFs`] method,
/// taking the inner backend first; each defaults to calling the inner backend's method.
/// Override a method with `async fn` (as a `VirtualFs` impl does) and call `inner`'s
/// method yourself where the wrapped operation should still happen.
macro_rules! wrap_methods {
    ($(
        $(#[$doc:meta])*
        fn $m:ident($($arg:ident: $ty:ty),* $(,)?) -> $out:ty;
    )*) => {
        /// Stand-ins for the operations of the inner backend `F`. See the [module
        /// docs](self); every method defaults to forwarding.
        pub trait Hooks<F: VirtualFs>: Send + Sync + 'static {
            /// [`VirtualFs::source_id`]; forwards by default.
            fn source_id<'a>(&'a self, inner: &'a F) -> &'a str {
                inner.source_id()
            }
            /// [`VirtualFs::inode_stability`]; forwards by default.
            fn inode_stability(&self, inner: &F) -> InodeStability {
                inner.inode_stability()
            }
            /// [`VirtualFs::change_source`]; forwards by default.
            fn change_source(&self, inner: &F) -> ChangeSource {
                inner.change_source()
            }
            /// [`VirtualFs::report_changes`]; forwards by default.
            fn report_changes(&self, inner: &F, inv: Arc<dyn Invalidator>) -> ChangeSource {
                inner.report_changes(inv)
            }
            /// [`VirtualFs::forget`]; forwards by default.
            fn forget(&self, inner: &F, ino: Ino, nlookup: u64) -> impl Future<Output = ()> + Send {
                inner.forget(ino, nlookup)
            }
            /// [`VirtualFs::passthrough_fd`]; forwards by default.
            fn passthrough_fd(&self, inner: &F, ino: Ino, fh: Fh) -> Option<OwnedFd> {
                inner.passthrough_fd(ino, fh)
            }
            /// [`VirtualFs::generation`]; forwards by default.
            fn generation(&self, inner: &F, ino: Ino) -> u64 {
                inner.generation(ino)
            }
            $(
                $(#[$doc])*
                #[allow(clippy::too_many_arguments)] // the operation's own arguments, plus `inner`
                fn $m(&self, inner: &F, ctx: &RequestCtx, $($arg: $ty),*) -> impl Future<Output = $out> + Send {
                    inner.$m(ctx, $($arg),*)
                }
            )*
        }

        impl<F: VirtualFs, H: Hooks<F>> VirtualFs for Wrapped<F, H> {
            fn source_id(&self) -> &str {
                self.hooks.source_id(&self.inner)
            }
            fn inode_stability(&self) -> InodeStability {
                self.hooks.inode_stability(&self.inner)
            }
            fn change_source(&self) -> ChangeSource {
                self.hooks.change_source(&self.inner)
            }
            fn report_changes(&self, inv: Arc<dyn Invalidator>) -> ChangeSource {
                self.hooks.report_changes(&self.inner, inv)
            }
            fn forget(&self, ino: Ino, nlookup: u64) -> impl Future<Output = ()> + Send {
                self.hooks.forget(&self.inner, ino, nlookup)
            }
            fn passthrough_fd(&self, ino: Ino, fh: Fh) -> Option<OwnedFd> {
                self.hooks.passthrough_fd(&self.inner, ino, fh)
            }
            fn generation(&self, ino: Ino) -> u64 {
                self.hooks.generation(&self.inner, ino)
            }
            $(
                fn $m(&self, ctx: &RequestCtx, $($arg: $ty),*) -> impl Future<Output = $out> + Send {
                    self.hooks.$m(&self.inner, ctx, $($arg),*)
                }
            )*
        }
    };
}

wrap_methods! {
    /// [`VirtualFs::lookup`]; forwards by default.
    fn lookup(parent: Ino, name: Name<'_>) -> VfsResult<Attr>;
    /// [`VirtualFs::getattr`]; forwards by default.
    fn getattr(ino: Ino, fh: Option<Fh>) -> VfsResult<Attr>;
    /// [`VirtualFs::setattr`]; forwards by default.
    fn setattr(ino: Ino, set: SetAttr) -> VfsResult<Attr>;
    /// [`VirtualFs::readlink`]; forwards by default.
    fn readlink(ino: Ino) -> VfsResult<OsString>;
    /// [`VirtualFs::mknod`]; forwards by default.
    fn mknod(parent: Ino, name: Name<'_>, mode: u32, umask: u32, rdev: u64) -> VfsResult<Attr>;
    /// [`VirtualFs::mkdir`]; forwards by default.
    fn mkdir(parent: Ino, name: Name<'_>, mode: u32, umask: u32) -> VfsResult<Attr>;
    /// [`VirtualFs::unlink`]; forwards by default.
    fn unlink(parent: Ino, name: Name<'_>) -> VfsResult<()>;
    /// [`VirtualFs::rmdir`]; forwards by default.
    fn rmdir(parent: Ino, name: Name<'_>) -> VfsResult<()>;
    /// [`VirtualFs::symlink`]; forwards by default.
    fn symlink(parent: Ino, name: Name<'_>, target: &OsStr) -> VfsResult<Attr>;
    /// [`VirtualFs::rename`]; forwards by default.
    fn rename(parent: Ino, name: Name<'_>, newparent: Ino, newname: Name<'_>, flags: RenameFlags) -> VfsResult<()>;
    /// [`VirtualFs::link`]; forwards by default.
    fn link(ino: Ino, newparent: Ino, newname: Name<'_>) -> VfsResult<Attr>;
    /// [`VirtualFs::open`]; forwards by default.
    fn open(ino: Ino, flags: OpenFlags) -> VfsResult<Fh>;
    /// [`VirtualFs::create`]; forwards by default.
    fn create(parent: Ino, name: Name<'_>, mode: u32, umask: u32, flags: OpenFlags) -> VfsResult<(Attr, Fh)>;
    /// [`VirtualFs::read`]; forwards by default.
    fn read(ino: Ino, fh: Fh, offset: u64, size: u32) -> VfsResult<Bytes>;
    /// [`VirtualFs::write`]; forwards by default.
    fn write(ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> VfsResult<u32>;
    /// [`VirtualFs::flush`]; forwards by default.
    fn flush(ino: Ino, fh: Fh) -> VfsResult<()>;
    /// [`VirtualFs::fsync`]; forwards by default.
    fn fsync(ino: Ino, fh: Fh, datasync: bool) -> VfsResult<()>;
    /// [`VirtualFs::release`]; forwards by default.
    fn release(ino: Ino, fh: Fh) -> VfsResult<()>;
    /// [`VirtualFs::readdir`]; forwards by default.
    fn readdir(ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>>;
    /// [`VirtualFs::readdirplus`]; forwards by default.
    fn readdirplus(ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntryPlus>>;
    /// [`VirtualFs::statfs`]; forwards by default.
    fn statfs(ino: Ino) -> VfsResult<StatFs>;
    /// [`VirtualFs::access`]; forwards by default.
    fn access(ino: Ino, mask: u32) -> VfsResult<()>;
    /// [`VirtualFs::getxattr`]; forwards by default.
    fn getxattr(ino: Ino, name: &OsStr) -> VfsResult<Bytes>;
    /// [`VirtualFs::setxattr`]; forwards by default.
    fn setxattr(ino: Ino, name: &OsStr, value: &[u8], how: XattrSet) -> VfsResult<()>;
    /// [`VirtualFs::listxattr`]; forwards by default.
    fn listxattr(ino: Ino) -> VfsResult<Vec<OsString>>;
    /// [`VirtualFs::removexattr`]; forwards by default.
    fn removexattr(ino: Ino, name: &OsStr) -> VfsResult<()>;
    /// [`VirtualFs::fallocate`]; forwards by default.
    fn fallocate(ino: Ino, fh: Fh, offset: u64, length: u64, mode: i32) -> VfsResult<()>;
}

#[cfg(test)]
mod tests;
