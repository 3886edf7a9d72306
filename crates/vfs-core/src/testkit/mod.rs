//! The conformance and race kit: run it against your own backend.
//!
//! Invariant: every check here can fail. Each scenario returns `Err` with a readable
//! reason when a backend breaks the rule it tests, and the repository keeps a mutant
//! backend for the important ones that proves it (`crates/vfs-core/tests/testkit_mutants.rs`).
//!
//! Three parts, all generic over a constructor of your backend:
//!
//! - [`scenarios`]: one async function per POSIX rule people get wrong (rename over
//!   existing names, into its own subtree, `NOREPLACE`/`EXCHANGE`, unlink while open,
//!   hard-link counts, holes, truncation, readdir cookies under change, xattrs, long names,
//!   time stamps, ...).
//! - [`model`]: a small reference model of a tree and a proptest generator of operation
//!   sequences. Each sequence runs against your backend and the model side by side; return
//!   codes and the whole observable tree are compared after every step, and proptest
//!   shrinks a failure to the shortest sequence that still fails.
//! - [`races`]: concurrent scenarios (write vs getattr, rename vs lookup, create vs
//!   readdir, write vs truncate, unlink vs read through an open handle), run on real
//!   threads for many iterations; under `cfg(loom)`, `races::loom_models` explores every
//!   interleaving for backends built on [`crate::sync`].
//!
//! The [`vfs_conformance!`](crate::vfs_conformance) macro writes one `#[test]` for each:
//!
//! ```
//! use vfs_core::memfs::MemFs;
//! use vfs_core::testkit::Backend;
//!
//! vfs_core::vfs_conformance!(memfs_kit, || Backend::new(MemFs::new()));
//! # fn main() {}
//! ```
//!
//! A third-party backend uses it the same way. Here, a backend of your own that counts
//! writes on top of `MemFs`, written as a [`Wrapped`](crate::wrap::Wrapped) `MemFs` whose
//! hooks change only `write` (every other operation goes straight to `MemFs`):
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use vfs_core::memfs::MemFs;
//! use vfs_core::testkit::Backend;
//! use vfs_core::wrap::{Hooks, Wrapped};
//! use vfs_core::*;
//!
//! /// Counts the bytes written through it.
//! #[derive(Default)]
//! pub struct CountWrites(AtomicU64);
//!
//! impl Hooks<MemFs> for CountWrites {
//!     async fn write(&self, inner: &MemFs, ctx: &RequestCtx, ino: Ino, fh: Fh, off: u64, data: &[u8]) -> VfsResult<u32> {
//!         let n = inner.write(ctx, ino, fh, off, data).await?;
//!         self.0.fetch_add(u64::from(n), Ordering::Relaxed);
//!         Ok(n)
//!     }
//! }
//!
//! vfs_core::vfs_conformance!(counting_fs, || {
//!     Backend::new(Wrapped::new(MemFs::new(), CountWrites::default()))
//! });
//! # fn main() {}
//! ```
//!
//! A backend that needs a directory to live in keeps it alive through [`Backend::keep`]:
//!
//! ```no_run
//! use vfs_core::localfs::LocalFs;
//! use vfs_core::testkit::Backend;
//!
//! vfs_core::vfs_conformance!(localfs_kit, || {
//!     let dir = tempfile::tempdir().unwrap();
//!     Backend::new(LocalFs::new(dir.path()).unwrap()).keep(dir)
//! });
//! # fn main() {}
//! ```
//!
//! Environment: `VFS_TESTKIT_CASES` sets the number of random sequences of the model test
//! (default 64; `scripts/soak` runs 10,000 per backend in release mode),
//! `VFS_TESTKIT_SEED` makes the sequence generation reproducible, and
//! `VFS_TESTKIT_RACE_ITERS` scales the race scenarios (default 1,000 rounds).

pub mod model;
pub mod races;
pub mod scenarios;

use std::any::Any;
use std::fmt;
use std::future::Future;

use crate::vfs::VirtualFs;
use std::sync::Arc;

/// A backend under test, plus whatever must outlive it (a temporary directory, a server).
pub struct Backend<F> {
    /// The filesystem.
    pub fs: Arc<F>,
    keep: Vec<Arc<dyn Any + Send + Sync>>,
}

impl<F> Clone for Backend<F> {
    fn clone(&self) -> Self {
        Backend {
            fs: Arc::clone(&self.fs),
            keep: self.keep.clone(),
        }
    }
}

impl<F: VirtualFs> Backend<F> {
    /// Wraps a backend.
    pub fn new(fs: F) -> Self {
        Backend {
            fs: Arc::new(fs),
            keep: Vec::new(),
        }
    }

    /// Keeps `guard` alive as long as the backend (e.g. its `TempDir`).
    pub fn keep(mut self, guard: impl Any + Send + Sync) -> Self {
        self.keep.push(Arc::new(guard));
        self
    }
}

/// Why a scenario failed: what it checked, and what it saw.
#[derive(Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a scenario returns.
pub type KitResult = Result<(), Failure>;

/// Fails the enclosing scenario with a formatted reason unless `cond` holds.
#[macro_export]
macro_rules! kit_ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::testkit::Failure(format!($($fmt)+)));
        }
    };
}

/// Unwraps a `VfsResult` in a scenario, failing it with the operation's description.
#[macro_export]
macro_rules! kit_try {
    ($e:expr, $($fmt:tt)+) => {
        match $e {
            Ok(v) => v,
            Err(err) => {
                return Err($crate::testkit::Failure(format!("{}: unexpected error {err:?} ({})", format!($($fmt)+), err.errno())))
            }
        }
    };
}

/// Fails the scenario unless `$e` failed with errno `$want`.
#[macro_export]
macro_rules! kit_expect_err {
    ($e:expr, $want:expr, $($fmt:tt)+) => {
        match $e {
            Err(err) if err.errno() == $want => {}
            Err(err) => {
                return Err($crate::testkit::Failure(format!("{}: expected {:?}, got {:?} ({:?})", format!($($fmt)+), $want, err.errno(), err)))
            }
            Ok(_) => return Err($crate::testkit::Failure(format!("{}: expected {:?}, but it succeeded", format!($($fmt)+), $want))),
        }
    };
}

pub(crate) fn env_u64(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("testkit: cannot start a tokio runtime: {e}"),
    }
}

/// Runs one scenario on a fresh backend, on a multi-threaded runtime, and returns its
/// verdict (the mutant tests use this to assert a failure).
pub fn check_scenario<F, Fut>(factory: impl Fn() -> Backend<F>, scenario: impl FnOnce(Backend<F>) -> Fut) -> KitResult
where
    F: VirtualFs,
    Fut: Future<Output = KitResult>,
{
    let backend = factory();
    runtime().block_on(scenario(backend))
}

/// Runs one scenario and panics with its reason if it fails (what the generated
/// `#[test]`s call).
pub fn run_scenario<F, Fut>(factory: impl Fn() -> Backend<F>, scenario: impl FnOnce(Backend<F>) -> Fut)
where
    F: VirtualFs,
    Fut: Future<Output = KitResult>,
{
    if let Err(f) = check_scenario(factory, scenario) {
        panic!("{f}");
    }
}

/// Writes one `#[test]` per scenario, race and the model test, for a backend constructor.
///
/// `vfs_conformance!(module_name, || Backend::new(MyFs::new()))` creates
/// `mod module_name { #[test] fn ... }`. Requires the `testkit` feature of `vfs-core`.
#[macro_export]
macro_rules! vfs_conformance {
    ($modname:ident, $factory:expr) => {
        #[allow(missing_docs)]
        mod $modname {
            #[allow(unused_imports)]
            use super::*;
            $crate::vfs_conformance!(@tests $factory;
                lookup_and_getattr,
                create_exclusive,
                mkdir_rmdir_and_link_counts,
                rename_over_file,
                rename_over_directories,
                rename_into_own_subtree,
                rename_noreplace,
                rename_exchange,
                unlink_while_open,
                hard_link_counts,
                sparse_write_reads_zeros,
                truncate_up_and_down,
                open_truncate_and_append,
                handle_access_modes,
                readdir_cookies_while_changing,
                symlink_and_readlink,
                mknod_kinds,
                xattrs,
                long_names,
                ctime_rules,
                mtime_rules,
                statfs_sane,
            );
            $crate::vfs_conformance!(@races $factory;
                write_vs_getattr,
                rename_vs_lookup,
                create_vs_readdir,
                write_vs_truncate,
                unlink_vs_read,
            );
            #[test]
            fn model_random_operation_sequences() {
                if let Err(report) = $crate::testkit::model::check_model($factory, $crate::testkit::model::cases_from_env()) {
                    panic!("{report}");
                }
            }
        }
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::run_scenario($factory, $crate::testkit::scenarios::$name);
            }
        )*
    };
    (@races $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::run_scenario($factory, $crate::testkit::races::$name);
            }
        )*
    };
}
