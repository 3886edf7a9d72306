//! Kernel cache invalidation, queued and sent from a thread of its own.
//!
//! Invariant: [`QueuedInvalidator`]'s methods only push onto an unbounded queue; they never
//! touch `/dev/fuse`, never block, and so are safe from inside any request handler, with
//! any lock held. One dedicated thread drains the queue into `fuser`'s [`fuser::Notifier`].
//! The kernel handles `INVAL_ENTRY` synchronously (it takes the directory's lock and may
//! need a request answered meanwhile); sent from a request thread that is the deadlock of
//! fuser issue #320. From this thread, the session threads keep answering while a notice
//! waits for the kernel. After [`QueuedInvalidator::close`] every call is a no-op.
//!
//! An entry is invalidated with `FUSE_EXPIRE_ONLY` when the kernel offers it (Linux 6.2+,
//! [`ExpireOnly`]): the kernel marks the entry expired, and the next lookup through it asks
//! us again and replaces it if it changed; without the flag the kernel `d_invalidate`s the
//! entry at once, which also detaches any mount stacked on it (pjdfstest's
//! `rmdir::ebusy` saw its tmpfs vanish after the echo of its own `mkdir`).

use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tracing::{debug, trace};
use vfs_core::{Ino, Invalidator};

/// Whether the kernel offered `FUSE_HAS_EXPIRE_ONLY` at `init` (set by the adapter).
pub(crate) type ExpireOnly = Arc<AtomicBool>;

/// `FUSE_NOTIFY_INVAL_ENTRY`'s code and its `FUSE_EXPIRE_ONLY` flag (fuse.h).
const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;
const FUSE_EXPIRE_ONLY: u32 = 1;

/// Writes an `INVAL_ENTRY` notice with `FUSE_EXPIRE_ONLY` to the session's `/dev/fuse`
/// descriptor (`fuser`'s notifier sends the flags word as 0): a `fuse_out_header`
/// (length, the notify code as error, unique 0), `fuse_notify_inval_entry_out` (parent,
/// name length, flags), the name and a NUL, in one write.
fn expire_entry(dev: &std::os::fd::OwnedFd, parent: Ino, name: &OsStr) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let name = name.as_bytes();
    let namelen = u32::try_from(name.len()).map_err(|_| std::io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
    let len = 16 + 16 + name.len() + 1;
    let total = u32::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(&total.to_ne_bytes());
    buf.extend_from_slice(&FUSE_NOTIFY_INVAL_ENTRY.to_ne_bytes());
    buf.extend_from_slice(&0u64.to_ne_bytes());
    buf.extend_from_slice(&parent.0.to_ne_bytes());
    buf.extend_from_slice(&namelen.to_ne_bytes());
    buf.extend_from_slice(&FUSE_EXPIRE_ONLY.to_ne_bytes());
    buf.extend_from_slice(name);
    buf.push(0);
    match rustix::io::write(dev, &buf) {
        Ok(n) if n == len => Ok(()),
        Ok(_) => Err(std::io::Error::other("short write of a notice")),
        // The kernel no longer knows the entry: nothing to invalidate.
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The receiving end of a [`QueuedInvalidator`]'s queue, before its thread starts.
pub(crate) struct Pending(mpsc::Receiver<Notice>);

enum Notice {
    Inode { ino: Ino, offset: i64, len: i64 },
    Entry { parent: Ino, name: OsString },
    Stop,
}

/// The [`Invalidator`] of a FUSE mount. Get it from [`crate::Mount::invalidator`] and give
/// it to a backend whose data changes underneath the kernel. A call only queues; a thread
/// of its own sends to the kernel, so calling from a request handler cannot deadlock.
#[derive(Debug)]
pub struct QueuedInvalidator {
    tx: Mutex<Option<mpsc::Sender<Notice>>>,
    closed: AtomicBool,
    sent: Arc<AtomicU64>,
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Inode { ino, offset, len } => write!(f, "inval_inode({ino}, {offset}, {len})"),
            Notice::Entry { parent, name } => write!(f, "inval_entry({parent}, {name:?})"),
            Notice::Stop => f.write_str("stop"),
        }
    }
}

impl QueuedInvalidator {
    /// A queue that holds notices until [`QueuedInvalidator::start_sending`] hands them
    /// to the kernel (a backend may report changes before the session exists).
    pub(crate) fn queue() -> (Arc<QueuedInvalidator>, Pending) {
        let (tx, rx) = mpsc::channel::<Notice>();
        let inval = Arc::new(QueuedInvalidator {
            tx: Mutex::new(Some(tx)),
            closed: AtomicBool::new(false),
            sent: Arc::new(AtomicU64::new(0)),
        });
        (inval, Pending(rx))
    }

    /// Starts the sending thread: what was queued, and all that follows, goes to
    /// `notifier`.
    /// `dev`, a duplicate of the session's `/dev/fuse` descriptor, sends entry notices
    /// with `FUSE_EXPIRE_ONLY` once `expire_only` says the kernel offers it.
    pub(crate) fn start_sending(
        &self,
        pending: Pending,
        notifier: fuser::Notifier,
        dev: Option<std::os::fd::OwnedFd>,
        expire_only: ExpireOnly,
    ) -> std::io::Result<JoinHandle<()>> {
        let rx = pending.0;
        let counter = Arc::clone(&self.sent);
        std::thread::Builder::new()
            .name("vfs-fuse-inval".into())
            .spawn(move || {
                while let Ok(notice) = rx.recv() {
                    let r = match &notice {
                        Notice::Inode { ino, offset, len } => {
                            notifier.inval_inode(fuser::INodeNo(ino.0), *offset, *len)
                        }
                        Notice::Entry { parent, name } => match &dev {
                            Some(dev) if expire_only.load(Ordering::Relaxed) => expire_entry(dev, *parent, name),
                            _ => notifier.inval_entry(fuser::INodeNo(parent.0), name),
                        },
                        Notice::Stop => break,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(()) => trace!(?notice, "sent"),
                        // The mount is going away, or the kernel no longer knows the inode.
                        Err(e) => debug!(?notice, error = %e, "invalidation not delivered"),
                    }
                }
            })
    }

    fn push(&self, notice: Notice) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Some(tx) = self.tx.lock().as_ref() {
            // A send fails only once the thread has stopped: nothing left to invalidate.
            let _ = tx.send(notice);
        }
    }

    /// Notices handed to the kernel so far (delivered or not), for tests.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the sending thread after the notices already queued; later calls do nothing.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(tx) = self.tx.lock().take() {
            let _ = tx.send(Notice::Stop);
        }
    }
}

impl Invalidator for QueuedInvalidator {
    fn inval_inode(&self, ino: Ino, offset: i64, len: i64) {
        self.push(Notice::Inode { ino, offset, len });
    }

    fn inval_entry(&self, parent: Ino, name: &OsStr) {
        self.push(Notice::Entry {
            parent,
            name: name.to_os_string(),
        });
    }
}
