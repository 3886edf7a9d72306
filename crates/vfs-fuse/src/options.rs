//! Mount options: what the kernel caches, who may enter, and how requests are run.
//!
//! Invariant: the defaults are the safe ones. The kernel checks permissions
//! (`default_permissions`), a "does not exist" answer is never cached (negative TTL 0,
//! seed 002 bug 3 (doc/LESSONS.md#seed-002-bug-3)), attributes and entries are cached for long only when the backend
//! promises that nothing changes behind the mount or that it reports what does
//! ([`vfs_core::ChangeSource`]; otherwise 1 s), cached pages are dropped on every open (no `keep_cache`), and nothing
//! is handed to the kernel directly (passthrough) only where that changes nothing a
//! program can see (`passthrough_auto`) or when asked for; a kernel or privilege that is
//! missing falls back to ordinary requests, said once per mount.

use std::time::Duration;

/// How requests read from `/dev/fuse` are run against the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Several `fuser` session threads, each reading a request and driving the backend's
    /// future to completion on its own thread (`Handle::block_on`) before reading the
    /// next. No copy of request data, no hand-off between threads. The default: measured
    /// faster for backends that answer without waiting on a network (doc/BENCHMARKS.md).
    Threads,
    /// Session threads only read requests; each request runs as a task on the tokio
    /// runtime and replies from there. Request data (names, written bytes) is copied once.
    /// Better when backend operations wait on a network: a slow request holds a task,
    /// not a session thread.
    Spawn,
}

/// Everything about a mount that is not the backend. `MountOptions::default()` gives the
/// safe defaults; set fields to change them.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Let users other than the one who mounted enter the filesystem (`allow_other`).
    /// Needed when a service runs as its own user (PostgreSQL) or for permission tests.
    /// Unprivileged users need `user_allow_other` in `/etc/fuse.conf`. Default: off.
    pub allow_other: bool,
    /// The kernel checks permissions against the attributes the backend reports
    /// (`default_permissions`). Default: on. Off, permission checks are the backend's
    /// (`VirtualFs::access` and each operation).
    pub default_permissions: bool,
    /// How long the kernel may reuse attributes without asking again. Default: 1 s.
    pub attr_ttl: Duration,
    /// How long the kernel may reuse a name → inode answer without asking again.
    /// Default: 1 s.
    pub entry_ttl: Duration,
    /// The attribute and entry TTL used instead of [`MountOptions::attr_ttl`] and
    /// [`MountOptions::entry_ttl`] when the backend promises that its tree changes only
    /// through the mount or that it reports every other change
    /// ([`vfs_core::ChangeSource`], asked with `VirtualFs::report_changes` at mount time):
    /// the kernel then keeps what it learned until it is told otherwise. `None`: always
    /// the short TTLs. Default: 10 minutes.
    pub long_ttl: Option<Duration>,
    /// How long the kernel may remember that a name does not exist. Default: zero, never
    /// (a file that appears is found by the next lookup; seed 002 bug 3 (doc/LESSONS.md#seed-002-bug-3)).
    pub negative_ttl: Duration,
    /// Keep cached file pages across opens (`FOPEN_KEEP_CACHE`). Only for backends whose
    /// data never changes behind the kernel's back, or which invalidate when it does.
    /// Default: off, but in effect by itself whenever [`MountOptions::long_ttl`] is (the
    /// backend's [`vfs_core::ChangeSource`] is not `Unknown`): its reports drop the pages
    /// of a file changed behind the mount.
    pub keep_cache: bool,
    /// Let the kernel cache writes and send them in large batches (`FUSE_WRITEBACK_CACHE`):
    /// much faster sequential writes; the kernel owns the size and mtime of a file while it
    /// has dirty pages, and a write error surfaces at `fsync`/`close` instead of at
    /// `write`. Only for backends nothing else writes to behind the kernel's back.
    /// Default: off.
    pub writeback_cache: bool,
    /// Hand the kernel the backend's own descriptor of each open regular file, when the
    /// backend has one (`VirtualFs::passthrough_fd`, e.g. `LocalFs`), so reads and writes
    /// go from the kernel straight to the host file (FUSE passthrough, Linux 6.9+, needs
    /// `CAP_SYS_ADMIN`). If the kernel refuses, files are served normally, said once per
    /// mount (a debug line). Writes through passthrough are made with the mounting
    /// process's credentials (another user's write does not clear setuid bits), so asking
    /// for it with [`MountOptions::allow_other`] trades that. Default: off, but see
    /// [`MountOptions::passthrough_auto`], on by default. [`crate::Mount::passthrough_files`]
    /// counts the files actually handed over.
    pub passthrough: bool,
    /// Passthrough wherever it costs nothing in correctness: the backend names a backing
    /// file, the kernel offers passthrough, the privilege is there, only the mounting
    /// user (and root) can reach the mount ([`MountOptions::allow_other`] off, so every
    /// write is made with the credentials passthrough would use anyway) and no
    /// [`MountOptions::writeback_cache`]. Default: on.
    pub passthrough_auto: bool,
    /// The mount's readahead in KiB, written to its `/sys/class/bdi/<dev>/read_ahead_kb`
    /// once the session is up (the kernel's `init` offers at most the default, 128 KiB;
    /// requests are still at most 1 MiB, `max_pages`). Needs root; skipped otherwise.
    /// `None`: the kernel's default (128 KiB), which is the default: 1024 measured slower
    /// for sequential 1 MiB reads of a `LocalFs` mount of tmpfs (560-660 MB/s against
    /// 740-1400 MB/s, doc/BENCHMARKS.md).
    pub read_ahead_kb: Option<u32>,
    /// Mount read-only (`ro`). Default: off. (The kernel refuses writes; serve a
    /// [`vfs_core::ReadOnly`] backend as well so that nothing else can write either.)
    pub read_only: bool,
    /// Unmount by itself when the serving process dies, SIGKILL included, so nobody ever
    /// meets a dead mount ("Transport endpoint is not connected"). Default: on. It is
    /// `fusermount3`'s `auto_unmount`: a small helper process holds a socket to this one
    /// and unmounts when it closes. Needs `fusermount3` (package `fuse3`) even as root,
    /// and, since that helper can only do it for a mount other users could reach, it turns
    /// on the kernel's `allow_other` with fuser filtering requests back to the owner and
    /// root when [`MountOptions::allow_other`] is off (what a mount without it allows).
    ///
    /// Fallback: without `fusermount3` installed, or for a non-root user without
    /// `user_allow_other` in `/etc/fuse.conf` (fusermount3 refuses `allow_other`), the
    /// mount is made without it, with one warning, rather than failing (root then mounts
    /// with mount(2) itself; a non-root user without fusermount3 cannot mount at all).
    pub auto_unmount: bool,
    /// The source name shown in `/proc/mounts`. Default: the backend's `source_id`.
    pub fsname: Option<String>,
    /// How requests are run. Default: [`Dispatch::Threads`].
    pub dispatch: Dispatch,
    /// Session threads reading `/dev/fuse` (each with its own cloned descriptor).
    /// Default with [`Dispatch::Threads`]: the number of CPUs, at least 2 and at most 8
    /// (each thread carries one request at a time; more threads than CPUs measured slower
    /// for one client, doc/BENCHMARKS.md). With [`Dispatch::Spawn`]: 2.
    pub session_threads: Option<usize>,
    /// Worker threads of the tokio runtime the backend runs on. Default: the number of
    /// CPUs.
    pub runtime_threads: Option<usize>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            default_permissions: true,
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            long_ttl: Some(Duration::from_secs(600)),
            negative_ttl: Duration::ZERO,
            keep_cache: false,
            writeback_cache: false,
            passthrough: false,
            passthrough_auto: true,
            read_ahead_kb: None,
            read_only: false,
            auto_unmount: true,
            fsname: None,
            dispatch: Dispatch::Threads,
            session_threads: None,
            runtime_threads: None,
        }
    }
}

impl MountOptions {
    /// Whether the mount asks the kernel for passthrough ([`MountOptions::passthrough`],
    /// or [`MountOptions::passthrough_auto`] where it costs nothing).
    pub fn wants_passthrough(&self) -> bool {
        self.passthrough || (self.passthrough_auto && !self.allow_other && !self.writeback_cache)
    }

    /// The number of session threads in effect.
    pub fn effective_session_threads(&self) -> usize {
        self.session_threads
            .unwrap_or(match self.dispatch {
                Dispatch::Threads => std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8)),
                Dispatch::Spawn => 2,
            })
            .max(1)
    }

    /// The attribute and entry TTLs for a backend whose changes come from `source`.
    pub fn ttls_for(&self, source: vfs_core::ChangeSource) -> (Duration, Duration) {
        match (source, self.long_ttl) {
            (vfs_core::ChangeSource::Unknown, _) | (_, None) => (self.attr_ttl, self.entry_ttl),
            (_, Some(long)) => (long.max(self.attr_ttl), long.max(self.entry_ttl)),
        }
    }

    /// Whether pages are kept across opens for a backend whose changes come from `source`.
    pub fn keep_cache_for(&self, source: vfs_core::ChangeSource) -> bool {
        self.keep_cache || (source != vfs_core::ChangeSource::Unknown && self.long_ttl.is_some())
    }

    /// The `fuser` configuration for these options.
    pub(crate) fn fuser_config(&self, fsname: &str) -> fuser::Config {
        let mut mount_options = vec![
            fuser::MountOption::FSName(fsname.to_owned()),
            fuser::MountOption::Subtype("vfs".to_owned()),
        ];
        if self.default_permissions {
            mount_options.push(fuser::MountOption::DefaultPermissions);
        }
        mount_options.push(if self.read_only {
            fuser::MountOption::RO
        } else {
            fuser::MountOption::RW
        });
        if self.auto_unmount {
            mount_options.push(fuser::MountOption::AutoUnmount);
        }
        let mut config = fuser::Config::default();
        config.mount_options = mount_options;
        config.acl = match (self.allow_other, self.auto_unmount) {
            (true, _) => fuser::SessionACL::All,
            // fusermount3 performs auto_unmount only for a mount with allow_other or
            // allow_root; RootAndOwner lets in exactly the owner and root.
            (false, true) => fuser::SessionACL::RootAndOwner,
            (false, false) => fuser::SessionACL::Owner,
        };
        config.n_threads = Some(self.effective_session_threads());
        config.clone_fd = true;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_safe_ones() {
        let o = MountOptions::default();
        assert!(o.default_permissions);
        assert!(!o.allow_other);
        assert_eq!(o.negative_ttl, Duration::ZERO);
        assert!(!o.keep_cache && !o.writeback_cache && !o.passthrough && !o.read_only);
        assert!(o.passthrough_auto && o.wants_passthrough(), "on where it costs nothing");
        let shared = MountOptions {
            allow_other: true,
            ..MountOptions::default()
        };
        assert!(
            !shared.wants_passthrough(),
            "other users' writes would be the mounter's"
        );
        assert!(o.auto_unmount);
        let c = o.fuser_config("x");
        assert!(c.mount_options.contains(&fuser::MountOption::DefaultPermissions));
        assert!(c.mount_options.contains(&fuser::MountOption::AutoUnmount));
        assert_eq!(c.acl, fuser::SessionACL::RootAndOwner);
        let manual = MountOptions {
            auto_unmount: false,
            ..MountOptions::default()
        };
        let c = manual.fuser_config("x");
        assert!(!c.mount_options.contains(&fuser::MountOption::AutoUnmount));
        assert_eq!(c.acl, fuser::SessionACL::Owner);
        assert!((2..=8).contains(&c.n_threads.unwrap_or(0)));
    }

    #[test]
    fn long_ttls_and_kept_pages_only_where_changes_are_known() {
        use vfs_core::ChangeSource::{OnlyThroughMount, Reported, Unknown};
        let o = MountOptions::default();
        let short = (Duration::from_secs(1), Duration::from_secs(1));
        let long = (Duration::from_secs(600), Duration::from_secs(600));
        assert_eq!(o.ttls_for(Unknown), short);
        assert_eq!(o.ttls_for(Reported), long);
        assert_eq!(o.ttls_for(OnlyThroughMount), long);
        assert!(!o.keep_cache_for(Unknown));
        assert!(o.keep_cache_for(Reported) && o.keep_cache_for(OnlyThroughMount));
        let off = MountOptions {
            long_ttl: None,
            ..MountOptions::default()
        };
        assert_eq!(off.ttls_for(Reported), short);
        assert!(!off.keep_cache_for(Reported));
    }

    #[test]
    fn allow_other_and_spawn() {
        let o = MountOptions {
            allow_other: true,
            dispatch: Dispatch::Spawn,
            read_only: true,
            ..MountOptions::default()
        };
        let c = o.fuser_config("x");
        assert_eq!(c.acl, fuser::SessionACL::All);
        assert_eq!(c.n_threads, Some(2));
        assert!(c.mount_options.contains(&fuser::MountOption::RO));
    }
}
