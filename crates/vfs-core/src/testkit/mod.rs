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
//!   shrinks a failure to the shortest sequence that still fails. Time stamps are compared
//!   with the model's rules too, and a concurrent mode ([`model::check_concurrent`]) runs
//!   three threads of random operations on private and shared names at once.
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

use crate::error::Errno;
use crate::vfs::VirtualFs;
use std::sync::Arc;

/// Something a backend may not support. A backend declares what it lacks with
/// [`Backend::without`] (or [`Backend::with_caps`]); the kit then skips exactly the checks
/// that need it, printing `skipped: <reason>`, and checks instead that the missing thing
/// answers with one of [`Cap::absent_errnos`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cap {
    /// Any change at all (create, mkdir, write, setattr, ...). Absent: `EROFS` (or the
    /// trait's default `ENOSYS`), and opening for writing is `EROFS`.
    Writes,
    /// Extended attributes. Absent: `EOPNOTSUPP` (the trait's default).
    Xattrs,
    /// Fifos, sockets and device nodes through `mknod`. Absent: `EPERM` (or `ENOSYS`).
    SpecialFiles,
    /// More than one name for a file (`link`). Absent: `EPERM` (or `ENOSYS`).
    HardLinks,
    /// Symbolic links. Absent: `EPERM` (or `ENOSYS`).
    Symlinks,
    /// `RENAME_NOREPLACE` and `RENAME_EXCHANGE`. Absent: `EINVAL`, as Linux answers an
    /// unsupported flag.
    RenameFlags,
    /// mtime and ctime kept and changed by the rules of doc/SEMANTICS.md. Absent: nothing
    /// to answer; the time-stamp checks are skipped.
    Timestamps,
    /// A promise beyond the basic set, made with [`Backend::with`] (not in [`Caps::ALL`]):
    /// `statfs` and `st_blocks` count what the backend itself stores. A new file takes an
    /// inode from `ffree`, written data takes blocks from `bfree`, truncating, punching a
    /// hole and removing the last name of a file with no handle open give them back.
    /// `MemFs` promises it; `LocalFs` cannot (its figures are the host filesystem's and
    /// move with every other writer there).
    SpaceAccounting,
    /// A promise beyond the basic set, made with [`Backend::with`] (not in [`Caps::ALL`]):
    /// the backend applies the rules that depend on the caller's credentials itself: a
    /// write by a caller other than root clears setuid (and setgid with group-exec), and
    /// `trusted.*` xattrs are root's. `MemFs` promises it; `LocalFs` acts with the
    /// server's own credentials and leaves these rules to the kernel in front of it.
    CallerRules,
}

impl Cap {
    /// Every capability and promise, in declaration order.
    pub const ALL: [Cap; 9] = [
        Cap::Writes,
        Cap::Xattrs,
        Cap::SpecialFiles,
        Cap::HardLinks,
        Cap::Symlinks,
        Cap::RenameFlags,
        Cap::Timestamps,
        Cap::SpaceAccounting,
        Cap::CallerRules,
    ];

    fn bit(self) -> u16 {
        1 << (self as u8)
    }

    /// What the capability is, in words (used in "skipped: ..." lines).
    pub fn what(self) -> &'static str {
        match self {
            Cap::Writes => "writes",
            Cap::Xattrs => "extended attributes",
            Cap::SpecialFiles => "special files (fifos, sockets, devices)",
            Cap::HardLinks => "hard links",
            Cap::Symlinks => "symbolic links",
            Cap::RenameFlags => "rename flags (NOREPLACE, EXCHANGE)",
            Cap::Timestamps => "time stamps",
            Cap::SpaceAccounting => "space accounting (statfs and st_blocks count what the backend stores)",
            Cap::CallerRules => "the caller-credential rules (a non-root write clears setuid; trusted.* is root's)",
        }
    }

    /// The answers the kit accepts from an operation that needs this capability when the
    /// backend declares it absent (first: the one to prefer).
    pub fn absent_errnos(self) -> &'static [Errno] {
        match self {
            Cap::Writes => &[Errno::EROFS, Errno::ENOSYS],
            Cap::Xattrs => &[Errno::EOPNOTSUPP],
            Cap::SpecialFiles | Cap::HardLinks | Cap::Symlinks => &[Errno::EPERM, Errno::ENOSYS],
            Cap::RenameFlags => &[Errno::EINVAL],
            Cap::Timestamps | Cap::SpaceAccounting | Cap::CallerRules => &[],
        }
    }

    /// Whether this is a promise a backend opts into ([`Backend::with`]) rather than a
    /// capability it has unless it declares it absent.
    pub fn is_promise(self) -> bool {
        matches!(self, Cap::SpaceAccounting | Cap::CallerRules)
    }
}

/// A set of [`Cap`]s: what a backend supports.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Caps(u16);

impl Caps {
    /// Every basic capability, the default: a full POSIX backend. The promises
    /// ([`Cap::SpaceAccounting`], [`Cap::CallerRules`]) are not in it; a backend that keeps
    /// them adds them with [`Backend::with`] (`MemFs` does).
    pub const ALL: Caps = Caps(0x7f);
    /// Nothing: a read-only backend without xattrs, such as the README's `Hello`.
    pub const NONE: Caps = Caps(0);

    /// Whether `cap` is in the set.
    pub fn has(self, cap: Cap) -> bool {
        self.0 & cap.bit() != 0
    }
    /// The set with `cap`.
    pub fn with(self, cap: Cap) -> Caps {
        Caps(self.0 | cap.bit())
    }
    /// The set without `cap`.
    pub fn without(self, cap: Cap) -> Caps {
        Caps(self.0 & !cap.bit())
    }
    /// The first of `needs` that is not in the set.
    pub fn missing(self, needs: &[Cap]) -> Option<Cap> {
        needs.iter().copied().find(|c| !self.has(*c))
    }
}

impl fmt::Debug for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Cap::ALL.iter().filter(|c| self.has(**c)))
            .finish()
    }
}

/// A backend under test, plus whatever must outlive it (a temporary directory, a server).
pub struct Backend<F> {
    /// The filesystem.
    pub fs: Arc<F>,
    keep: Vec<Arc<dyn Any + Send + Sync>>,
    caps: Caps,
}

impl<F> Clone for Backend<F> {
    fn clone(&self) -> Self {
        Backend {
            fs: Arc::clone(&self.fs),
            keep: self.keep.clone(),
            caps: self.caps,
        }
    }
}

impl<F> Backend<F> {
    /// What the backend declares it supports ([`Caps::ALL`] unless narrowed).
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Declares the whole set of what the backend supports, e.g. [`Caps::NONE`] for a
    /// read-only backend without xattrs.
    pub fn with_caps(mut self, caps: Caps) -> Self {
        self.caps = caps;
        self
    }

    /// Declares that the backend lacks `cap`.
    pub fn without(mut self, cap: Cap) -> Self {
        self.caps = self.caps.without(cap);
        self
    }

    /// Declares that the backend has `cap`: how a backend makes one of the promises
    /// ([`Cap::SpaceAccounting`], [`Cap::CallerRules`]) that [`Caps::ALL`] leaves out.
    pub fn with(mut self, cap: Cap) -> Self {
        self.caps = self.caps.with(cap);
        self
    }
}

impl<F: VirtualFs> Backend<F> {
    /// Wraps a backend.
    pub fn new(fs: F) -> Self {
        Backend {
            fs: Arc::new(fs),
            keep: Vec::new(),
            caps: Caps::ALL,
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

/// Fails the enclosing scenario with a formatted reason unless `cond` holds. The reason
/// should state the rule and what was seen; the kit adds the file and line of the check.
#[macro_export]
macro_rules! kit_ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::testkit::Failure(format!("{}\n  at: {}:{}", format!($($fmt)+), file!(), line!())));
        }
    };
}

/// Fails the scenario unless `seen == expected`, reporting both (`Debug`) and the rule.
#[macro_export]
macro_rules! kit_eq {
    ($seen:expr, $expected:expr, $($fmt:tt)+) => {
        match (&$seen, &$expected) {
            (seen, expected) => {
                if seen != expected {
                    return Err($crate::testkit::Failure(format!(
                        "rule: {}\n  expected: {:?}\n  seen:     {:?}\n  at: {}:{}",
                        format!($($fmt)+), expected, seen, file!(), line!()
                    )));
                }
            }
        }
    };
}

/// Fails the scenario unless the bytes `seen` equal `expected`, reporting lengths, the
/// first differing offset and both sides around it as escaped strings and hex.
#[macro_export]
macro_rules! kit_bytes_eq {
    ($seen:expr, $expected:expr, $($fmt:tt)+) => {
        if let Some(diff) = $crate::testkit::bytes_diff(&$expected[..], &$seen[..]) {
            return Err($crate::testkit::Failure(format!(
                "rule: {}\n{diff}  at: {}:{}",
                format!($($fmt)+), file!(), line!()
            )));
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
                return Err($crate::testkit::Failure(format!(
                    "step: {}\n  expected: success\n  seen:     {:?} ({:?})\n  at: {}:{}",
                    format!($($fmt)+), err.errno(), err, file!(), line!()
                )))
            }
        }
    };
}

/// Fails the scenario unless `$e` failed with errno `$want`. The description starts with
/// the rule's id in brackets (`[lookup.missing]`), the id the trait's docs use.
#[macro_export]
macro_rules! kit_expect_err {
    ($e:expr, $want:expr, $($fmt:tt)+) => {
        match $e {
            Err(err) if err.errno() == $want => {}
            Err(err) => {
                return Err($crate::testkit::Failure(format!(
                    "rule: {}\n  expected: {:?}\n  seen:     {:?} ({:?})\n  at: {}:{}",
                    format!($($fmt)+), $want, err.errno(), err, file!(), line!()
                )))
            }
            Ok(_) => return Err($crate::testkit::Failure(format!(
                "rule: {}\n  expected: {:?}\n  seen:     success\n  at: {}:{}",
                format!($($fmt)+), $want, file!(), line!()
            ))),
        }
    };
}

/// How two byte strings differ, or `None` if they are equal: both lengths, the first
/// differing offset, and 16 bytes from a little before it on each side, as an escaped
/// string and as hex.
pub fn bytes_diff(expected: &[u8], seen: &[u8]) -> Option<String> {
    if expected == seen {
        return None;
    }
    let first = expected
        .iter()
        .zip(seen)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(seen.len()));
    let from = first.saturating_sub(4);
    let window = |b: &[u8]| {
        let w = &b[from.min(b.len())..(from + 16).min(b.len())];
        let hex: Vec<String> = w.iter().map(|x| format!("{x:02x}")).collect();
        format!("\"{}\" [{}]", w.escape_ascii(), hex.join(" "))
    };
    Some(format!(
        "  expected: {} bytes, from offset {from}: {}\n  seen:     {} bytes, from offset {from}: {}\n  first difference at offset {first}\n",
        expected.len(),
        window(expected),
        seen.len(),
        window(seen),
    ))
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

/// Runs one scenario and panics with its reason if it fails (kept for harnesses that
/// call scenarios by hand; the macro uses [`run_kit_scenario`]).
#[track_caller]
pub fn run_scenario<F, Fut>(factory: impl Fn() -> Backend<F>, scenario: impl FnOnce(Backend<F>) -> Fut)
where
    F: VirtualFs,
    Fut: Future<Output = KitResult>,
{
    if let Err(f) = check_scenario(factory, scenario) {
        panic!("{f}");
    }
}

/// Runs the kit's check `name` (a scenario, a race or the model) on a fresh backend,
/// unless the backend lacks one of `needs`: then prints `skipped: ...` and returns. On
/// failure, panics with the check's name, step, rule, expected and seen; the panic points
/// at the caller (the user's `vfs_conformance!` line).
#[track_caller]
pub fn run_kit_scenario<F, Fut>(
    factory: impl Fn() -> Backend<F>,
    name: &str,
    needs: &[Cap],
    scenario: impl FnOnce(Backend<F>) -> Fut,
) where
    F: VirtualFs,
    Fut: Future<Output = KitResult>,
{
    let backend = factory();
    if let Some(cap) = backend.caps().missing(needs) {
        if cap.is_promise() {
            println!(
                "skipped: kit check `{name}` needs {}, which the backend does not promise (Backend::with(Cap::{cap:?}))",
                cap.what()
            );
        } else {
            println!(
                "skipped: kit check `{name}` needs {}, which the backend declares absent",
                cap.what()
            );
        }
        return;
    }
    if let Err(f) = runtime().block_on(scenario(backend)) {
        panic!("kit check `{name}` failed\n  {f}");
    }
}

/// Runs the model test unless the backend lacks writes (then prints `skipped: ...`).
#[track_caller]
pub fn run_kit_model<F: VirtualFs>(factory: impl Fn() -> Backend<F>) {
    if let Err(report) = model::check_model(factory, model::cases_from_env()) {
        panic!("kit check `model_random_operation_sequences` failed\n{report}");
    }
}

/// Runs the model's concurrent mode ([`model::check_concurrent`]) for
/// `VFS_TESTKIT_CASES / 16` rounds (default 4), unless the backend lacks writes.
#[track_caller]
pub fn run_kit_concurrent<F: VirtualFs>(factory: impl Fn() -> Backend<F>) {
    let rounds = (model::cases_from_env() / 16).max(1);
    if let Err(report) = model::check_concurrent(factory, rounds) {
        panic!("kit check `model_concurrent_operations` failed\n{report}");
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
                tree_walk,
                lookup_and_getattr,
                create_exclusive,
                mkdir_rmdir_and_link_counts,
                rename_over_file,
                rename_link_counts,
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
                open_kinds,
                readdir_cookies_while_changing,
                symlink_and_readlink,
                mknod_kinds,
                fallocate_modes,
                new_node_mode_and_setgid,
                chown_clears_setuid,
                caller_rules,
                space_accounting,
                xattrs,
                long_names,
                ctime_rules,
                mtime_rules,
                statfs_sane,
            );
            $crate::vfs_conformance!(@races $factory;
                write_vs_getattr,
                rename_vs_lookup,
                rename_vs_rename,
                rename_cycle_race,
                create_vs_readdir,
                write_vs_truncate,
                unlink_vs_read,
            );
            #[test]
            fn model_random_operation_sequences() {
                $crate::testkit::run_kit_model($factory);
            }
            #[test]
            fn model_concurrent_operations() {
                $crate::testkit::run_kit_concurrent($factory);
            }
            #[test]
            fn absent_capabilities_answer_errno() {
                $crate::testkit::run_kit_scenario($factory, "absent_capabilities_answer_errno", &[], $crate::testkit::scenarios::absent_capabilities_answer_errno);
            }
        }
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::run_kit_scenario($factory, stringify!($name), $crate::testkit::scenarios::needs(stringify!($name)), $crate::testkit::scenarios::$name);
            }
        )*
    };
    (@races $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::run_kit_scenario($factory, stringify!($name), &[$crate::testkit::Cap::Writes], $crate::testkit::races::$name);
            }
        )*
    };
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use std::collections::BTreeSet;

    /// Rule ids in brackets (`[lookup.missing]`) found in `text`, in lines that `keep`.
    fn rule_ids(text: &str, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for line in text.lines().filter(|l| keep(l)) {
            for part in line.split('[').skip(1) {
                let Some(id) = part.split(']').next() else { continue };
                let ok = id.contains('.')
                    && id.starts_with(|c: char| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
                if ok {
                    ids.insert(id.to_string());
                }
            }
        }
        ids
    }

    /// The trait's docs and the kit's checks name the same rules: a rule documented on
    /// `VirtualFs` and checked nowhere, or checked and not documented, fails here.
    #[test]
    fn trait_docs_and_kit_checks_name_the_same_rules() {
        let docs = rule_ids(include_str!("../vfs.rs"), |l| l.trim_start().starts_with("///"));
        let mut kit = rule_ids(include_str!("scenarios.rs"), |l| !l.trim_start().starts_with("//"));
        kit.extend(rule_ids(include_str!("races.rs"), |l| {
            !l.trim_start().starts_with("//")
        }));
        let undocumented: Vec<_> = kit.difference(&docs).collect();
        let unchecked: Vec<_> = docs.difference(&kit).collect();
        assert!(
            undocumented.is_empty() && unchecked.is_empty(),
            "rules checked by the kit but not on VirtualFs's docs: {undocumented:?}\nrules on VirtualFs's docs that no kit check uses: {unchecked:?}"
        );
        assert!(kit.len() >= 30, "only {} rule ids found: {kit:?}", kit.len());
    }

    #[test]
    fn bytes_diff_names_the_first_differing_offset() {
        let d = super::bytes_diff(b"hello world", b"hello\0world").expect("they differ");
        assert!(d.contains("first difference at offset 5"), "{d}");
        assert!(d.contains("\\x00"), "escaped: {d}");
        assert!(d.contains("00 77"), "hex: {d}");
        assert!(super::bytes_diff(b"same", b"same").is_none());
    }
}
