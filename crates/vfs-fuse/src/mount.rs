//! Mounting and unmounting: [`mount`] and the [`Mount`] guard.
//!
//! Invariants:
//! - **A mount never outlives its guard.** Dropping a [`Mount`] (also while a test
//!   unwinds from a panic) unmounts it; if the mount is busy it is detached lazily
//!   (`MNT_DETACH`) so the mount point is free at once, and the session ends when its last
//!   user lets go.
//! - **Failures to mount are one clear line each** ([`MountError`]): a missing mount
//!   point, one that is not a directory, no `/dev/fuse`, no `fusermount3` (with the
//!   Debian package to install).
//! - **Nor its process.** With [`MountOptions::auto_unmount`] (the default) a mount whose
//!   serving process dies, even by SIGKILL, is unmounted by `fusermount3` at once, so
//!   nobody meets "Transport endpoint is not connected".
//! - The backend runs on a tokio runtime owned by the mount, so mounting works from
//!   inside or outside another runtime, and the invalidation thread stops with the mount.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::{debug, warn};
use vfs_core::{ChangeSource, Invalidator, VirtualFs};

use crate::adapter::FuseAdapter;
use crate::invalidate::QueuedInvalidator;
use crate::options::MountOptions;

/// Why a filesystem could not be mounted. Each displays as one line saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount point does not exist.
    #[error("mount point {0} does not exist (create it first: mkdir -p {0})")]
    MountpointMissing(PathBuf),
    /// The mount point is not a directory.
    #[error("mount point {0} is not a directory")]
    NotADirectory(PathBuf),
    /// `/dev/fuse` is missing: no FUSE in this kernel, or not passed into the container.
    #[error(
        "/dev/fuse is missing: load the fuse module (modprobe fuse), or give the container the device (--device /dev/fuse)"
    )]
    NoDevFuse,
    /// `fusermount3`, needed to mount without root, is not installed.
    #[error("fusermount3 is not installed; install it with: apt-get install fuse3")]
    NoFusermount,
    /// Any other failure, as the kernel or `fusermount3` reported it.
    #[error("cannot mount on {path}: {source}")]
    Io {
        /// The mount point.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

/// Whether `name` is an executable file in one of the `PATH` directories.
fn in_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsStr::new("/usr/bin:/bin").to_os_string());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin"), PathBuf::from("/sbin")])
        .any(|dir| rustix::fs::access(dir.join(name), rustix::fs::Access::EXEC_OK).is_ok())
}

/// Whether `auto_unmount` can be had: it is fusermount3's (package fuse3), which must be
/// installed, and which grants it to root always and to anyone else only if
/// `/etc/fuse.conf` has a `user_allow_other` line (fusermount3 needs `allow_other` for it).
/// Without it root still mounts, with mount(2) itself, so a fresh machine without fuse3
/// mounts as root.
fn auto_unmount_possible() -> bool {
    in_path("fusermount3")
        && (rustix::process::geteuid().is_root()
            || std::fs::read_to_string("/etc/fuse.conf")
                .is_ok_and(|conf| conf.lines().any(|l| l.trim() == "user_allow_other")))
}

/// The checks that turn the common mistakes into one clear line before anything is tried.
fn preflight(mountpoint: &Path, auto_unmount: bool) -> Result<(), MountError> {
    match std::fs::metadata(mountpoint) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MountError::MountpointMissing(mountpoint.to_path_buf()));
        }
        Err(e) => {
            return Err(MountError::Io {
                path: mountpoint.to_path_buf(),
                source: e,
            });
        }
        Ok(m) if !m.is_dir() => return Err(MountError::NotADirectory(mountpoint.to_path_buf())),
        Ok(_) => {}
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::NoDevFuse);
    }
    // Root mounts with mount(2) itself; everyone else, and every mount that unmounts by
    // itself when its process dies, goes through the setuid helper.
    if (auto_unmount || !rustix::process::geteuid().is_root()) && !in_path("fusermount3") {
        return Err(MountError::NoFusermount);
    }
    Ok(())
}

/// A mounted filesystem. Dropping it unmounts (lazily if the mount is busy, also while a
/// test unwinds from a panic).
#[derive(Debug)]
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    invalidator: Arc<QueuedInvalidator>,
    inval_thread: Option<JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Mounted with `auto_unmount`: unmounting is ours to do (see [`Mount::shutdown`]).
    auto_unmount: bool,
    /// What the backend promised at mount time (decides the TTLs).
    change_source: ChangeSource,
    /// Files opened with a passthrough backing file so far.
    passthrough_files: Arc<std::sync::atomic::AtomicU64>,
}

/// Mounts `fs` on `mountpoint` and serves it until the returned [`Mount`] is dropped or
/// [`Mount::unmount`]ed.
///
/// Errors: [`MountError`], one line each.
pub fn mount<F: VirtualFs>(fs: Arc<F>, mountpoint: impl AsRef<Path>, opts: &MountOptions) -> Result<Mount, MountError> {
    let mountpoint = mountpoint.as_ref();
    let fallback;
    let opts = if opts.auto_unmount && !auto_unmount_possible() {
        // fusermount3 is missing, or grants auto_unmount only with allow_other, which it
        // refuses a non-root user unless /etc/fuse.conf says `user_allow_other`: mount
        // without it rather than not at all, and say so once.
        warn!(
            mountpoint = %mountpoint.display(),
            "auto_unmount needs fusermount3 (package fuse3) and root or `user_allow_other` in /etc/fuse.conf; mounting without it (a killed process will leave its mount behind)"
        );
        fallback = MountOptions {
            auto_unmount: false,
            ..opts.clone()
        };
        &fallback
    } else {
        opts
    };
    preflight(mountpoint, opts.auto_unmount)?;
    let io_err = |source: io::Error| MountError::Io {
        path: mountpoint.to_path_buf(),
        source,
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all().thread_name("vfs-fuse-rt");
    if let Some(n) = opts.runtime_threads {
        rt.worker_threads(n.max(1));
    }
    let runtime = rt.build().map_err(io_err)?;
    let fsname = opts.fsname.clone().unwrap_or_else(|| fs.source_id().to_owned());
    // The backend may report changes from now on: they wait in the queue until the
    // session exists and the sending thread starts.
    let (invalidator, pending) = QueuedInvalidator::queue();
    let change_source = fs.report_changes(Arc::clone(&invalidator) as Arc<dyn Invalidator>);
    let expire_only = crate::invalidate::ExpireOnly::default();
    let passthrough_files = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let adapter = FuseAdapter::new(
        fs,
        runtime.handle().clone(),
        opts,
        change_source,
        Arc::clone(&expire_only),
        Arc::clone(&passthrough_files),
    );
    let session = fuser::Session::new(adapter, mountpoint, &opts.fuser_config(&fsname)).map_err(|e| {
        invalidator.close();
        // Root failed to mount(2) and fuser fell back to a helper that is not installed.
        if e.kind() == io::ErrorKind::NotFound && !in_path("fusermount3") {
            MountError::NoFusermount
        } else {
            io_err(e)
        }
    })?;
    let notifier = session.notifier();
    // Without a duplicate, entries are invalidated the old way (fuser's notifier).
    let dev = std::os::fd::AsFd::as_fd(&session)
        .try_clone_to_owned()
        .map_err(|e| debug!(error = %e, "no duplicate of /dev/fuse; entries invalidated without FUSE_EXPIRE_ONLY"))
        .ok();
    let started = invalidator
        .start_sending(pending, notifier, dev, expire_only)
        .and_then(|thread| session.spawn().map(|session| (thread, session)));
    let (inval_thread, session) = started.map_err(|e| {
        invalidator.close();
        io_err(e)
    })?;
    if let Some(kb) = opts.read_ahead_kb {
        set_read_ahead(mountpoint, kb);
    }
    debug!(mountpoint = %mountpoint.display(), %fsname, ?change_source, "mounted");
    Ok(Mount {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        invalidator,
        inval_thread: Some(inval_thread),
        runtime: Some(runtime),
        auto_unmount: opts.auto_unmount,
        change_source,
        passthrough_files,
    })
}

impl Mount {
    /// How many file opens so far were handed to the kernel with a passthrough backing
    /// file ([`MountOptions::passthrough`]); 0 where the backend, the kernel or the
    /// privilege does not allow it, or passthrough is off.
    pub fn passthrough_files(&self) -> u64 {
        self.passthrough_files.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What the backend promised about changes behind the mount when it was mounted, which
    /// decided the kernel's TTLs ([`MountOptions::long_ttl`]).
    pub fn change_source(&self) -> ChangeSource {
        self.change_source
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The kernel-cache invalidator of this mount, for a backend whose data changes
    /// underneath the kernel. Safe to call from anywhere, including inside the backend's
    /// own operations (see [`QueuedInvalidator`]).
    pub fn invalidator(&self) -> Arc<dyn Invalidator> {
        Arc::clone(&self.invalidator) as Arc<dyn Invalidator>
    }

    /// The invalidator with its concrete type (to read [`QueuedInvalidator::sent`]).
    pub fn queued_invalidator(&self) -> Arc<QueuedInvalidator> {
        Arc::clone(&self.invalidator)
    }

    /// Whether the session is still serving (false once the filesystem was unmounted from
    /// outside, e.g. with `umount`, or the kernel aborted the connection).
    pub fn is_serving(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.guard.is_finished())
    }

    /// Unmounts and waits for the session to end. If the mount is busy, it is detached
    /// lazily and the error says so; the session then ends when its last user lets go.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), MountError> {
        self.invalidator.close();
        if let Some(t) = self.inval_thread.take() {
            let _ = t.join();
        }
        let mut result = Ok(());
        if let Some(session) = self.session.take() {
            // With auto_unmount, fuser's own unmount only closes the socket to the waiting
            // fusermount3, and fusermount3 unmounts only a mount whose server is dead (its
            // mount point answers ENOTCONN): a mount still served is unmounted here, unless
            // it is gone already (unmounted from outside), so nothing else is ever hit.
            let own = if self.auto_unmount && !session.guard.is_finished() {
                unmount_now(&self.mountpoint)
            } else {
                Ok(())
            };
            if let Err(e) = own.and_then(|()| session.umount_and_join()) {
                debug!(mountpoint = %self.mountpoint.display(), error = %e, "unmount failed; detaching lazily");
                lazy_detach(&self.mountpoint);
                result = Err(MountError::Io {
                    path: self.mountpoint.clone(),
                    source: e,
                });
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        result
    }
}

/// Sets the readahead of the mount at `path` to `kb` KiB through its backing device info
/// (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`), after the session's `init` (which sets
/// it to at most what `init` offered): a `statfs` waits for that. Root only; a failure is
/// logged at debug and the kernel's default stays.
fn set_read_ahead(path: &Path, kb: u32) {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let r = rustix::fs::statfs(path)
        .map_err(io::Error::from)
        .and_then(|_| std::fs::metadata(path))
        .and_then(|m| {
            use std::os::unix::fs::MetadataExt;
            let dev = m.dev();
            let bdi = format!(
                "/sys/class/bdi/{}:{}/read_ahead_kb",
                rustix::fs::major(dev),
                rustix::fs::minor(dev)
            );
            std::fs::write(bdi, kb.to_string())
        });
    if let Err(e) = r {
        debug!(path = %path.display(), error = %e, "could not set the mount's readahead");
    }
}

/// Unmounts `path` now (not lazily: a busy mount is an error), as root directly,
/// otherwise through `fusermount3 -u`.
fn unmount_now(path: &Path) -> io::Result<()> {
    if rustix::process::geteuid().is_root() {
        return rustix::mount::unmount(path, rustix::mount::UnmountFlags::empty()).map_err(io::Error::from);
    }
    let out = std::process::Command::new("fusermount3")
        .args(["-u", "--"])
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }
}

/// Detaches the mount at `path` if it is still there (`umount -l`), as root directly,
/// otherwise through `fusermount3 -u -z`.
fn lazy_detach(path: &Path) {
    if rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH).is_ok() {
        return;
    }
    let _ = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = self.shutdown();
        }
    }
}
