//! `LocalFs`'s change reports: what other processes do in the host directory, turned into
//! kernel-cache invalidations for every front end that asked
//! ([`crate::VirtualFs::report_changes`]).
//!
//! Invariant: every change the watcher ([`crate::watch::HostWatcher`], inotify) sees
//! becomes, within one pass of the reporting thread, the invalidation of the entry
//! (parent, name), of the parent directory's attributes and listing, and of the inode's
//! attributes and data (attributes only while `LocalFs` has the file open: its pages may be
//! in use, and the kernel drops them itself when it sees the new mtime or size,
//! `FUSE_AUTO_INVAL_DATA`). An inotify overflow invalidates every entry found by a walk of
//! the tree (at most [`crate::watch::RESCAN_MAX`]). Changes are not debounced (a file
//! appended to without pause would never be reported): the reporting thread takes what
//! is queued, up to [`PASS_MAX`] at a time, keeps the latest per path, and invalidates.
//! Invalidators only queue, so the reporting thread never waits on a front end, and the
//! watcher waits only on the bounded channel: no deadlock under a storm.
//!
//! Lifetime: the [`Reports`] lives in the `LocalFs`; dropping it stops the watcher, which
//! closes the channel, which ends the reporting thread.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use parking_lot::Mutex;
use tracing::{debug, trace};

use super::Inner;
use crate::invalidate::Invalidator;
use crate::lock_order::{Locked, Unlocked};
use crate::notify::Change;
use crate::types::{Attr, FileType, Ino};
use crate::watch::{HostWatcher, RESCAN_MAX, REVALIDATE_ALL, SharePath, attr_of};

/// Changes the watcher may queue before it waits.
const QUEUE: usize = 16_384;
/// Most changes the reporting thread takes in one pass.
pub(super) const PASS_MAX: usize = 4096;

type Invs = std::sync::Arc<Mutex<Vec<std::sync::Arc<dyn Invalidator>>>>;

/// The watcher of a `LocalFs` root and the front ends it reports to.
pub(super) struct Reports {
    _watcher: HostWatcher,
    invs: Invs,
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports")
            .field("front_ends", &self.invs.lock().len())
            .finish()
    }
}

impl Reports {
    /// Starts watching `root` and reporting to `inv`.
    pub(super) fn start(
        root: &Path,
        inner: crate::sync::Arc<Inner>,
        inv: std::sync::Arc<dyn Invalidator>,
    ) -> std::io::Result<Reports> {
        let root = std::fs::canonicalize(root)?;
        let root_ino = std::fs::metadata(&root)?.ino();
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let invs: Invs = std::sync::Arc::new(Mutex::new(vec![inv]));
        let reporter = Reporter {
            root: root.clone(),
            root_ino,
            inner,
            invs: std::sync::Arc::clone(&invs),
        };
        std::thread::Builder::new()
            .name("localfs-reports".into())
            .spawn(move || reporter.run(rx))?;
        let watcher = HostWatcher::start(&root, tx).map_err(std::io::Error::other)?;
        debug!(root = %root.display(), "reporting host changes to the front end");
        Ok(Reports {
            _watcher: watcher,
            invs,
        })
    }

    /// Reports to `inv` too (another front end of the same `LocalFs`).
    pub(super) fn add(&self, inv: std::sync::Arc<dyn Invalidator>) {
        self.invs.lock().push(inv);
    }
}

struct Reporter {
    root: PathBuf,
    root_ino: u64,
    inner: crate::sync::Arc<Inner>,
    invs: Invs,
}

impl Reporter {
    fn run(self, rx: mpsc::Receiver<Change<SharePath, Attr>>) {
        // Latest per path: `None` for a removal.
        let mut pass: HashMap<SharePath, Option<Attr>> = HashMap::new();
        while let Ok(first) = rx.recv() {
            let mut everything = false;
            let mut take = |c: Change<SharePath, Attr>, pass: &mut HashMap<SharePath, Option<Attr>>| match c {
                Change::Create { key, attrs } | Change::Update { key, attrs } => {
                    if key == REVALIDATE_ALL {
                        everything = true;
                    } else {
                        pass.insert(key, Some(attrs));
                    }
                }
                Change::Remove { key } => {
                    pass.insert(key, None);
                }
                Change::Rename { from, to, attrs } => {
                    pass.insert(from, None);
                    pass.insert(to, Some(attrs));
                }
            };
            take(first, &mut pass);
            while pass.len() < PASS_MAX {
                match rx.try_recv() {
                    Ok(c) => take(c, &mut pass),
                    Err(_) => break,
                }
            }
            let invs: Vec<_> = self.invs.lock().clone();
            if everything {
                self.revalidate_all(&invs);
            }
            trace!(changes = pass.len(), "host changes");
            for (key, attrs) in pass.drain() {
                self.changed(&invs, &key, attrs.as_ref());
            }
        }
        debug!(root = %self.root.display(), "host watcher stopped; no more reports");
    }

    /// Our inode number of a host inode number (the root's and 1 trade places).
    fn ino_of(&self, host: u64) -> Ino {
        match host {
            h if h == self.root_ino => Ino::ROOT,
            1 => Ino(self.root_ino),
            h => Ino(h),
        }
    }

    fn is_open(&self, ino: Ino) -> bool {
        // SAFETY: the reporting thread holds no lock of the ordering here.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.inner.open_handle_of(&mut tok, ino).is_some()
    }

    /// Invalidates what a change of `key` (now with `attrs`, or gone) made stale.
    fn changed(&self, invs: &[std::sync::Arc<dyn Invalidator>], key: &[u8], attrs: Option<&Attr>) {
        let inode = attrs.map(|a| {
            let data = !(a.kind == FileType::Regular && self.is_open(a.ino));
            (a.ino, data)
        });
        let parent = match key.iter().rposition(|&b| b == b'/') {
            _ if key.is_empty() => None,
            Some(i) => Some((&key[..i], &key[i + 1..])),
            None => Some((&b""[..], key)),
        };
        let parent = parent.and_then(|(dir, name)| {
            let path = self.root.join(OsStr::from_bytes(dir));
            // A parent that is gone has its own removal reported.
            let m = std::fs::symlink_metadata(path).ok()?;
            Some((self.ino_of(m.ino()), name))
        });
        for inv in invs {
            if let Some((dir, name)) = parent {
                inv.inval_entry(dir, OsStr::from_bytes(name));
                inv.inval_inode(dir, 0, 0);
            }
            match inode {
                Some((ino, true)) => inv.inval_inode(ino, 0, 0),
                Some((ino, false)) => inv.inval_attr(ino),
                None => {}
            }
        }
    }

    /// Inotify lost events: invalidates every entry of the tree (at most [`RESCAN_MAX`]).
    fn revalidate_all(&self, invs: &[std::sync::Arc<dyn Invalidator>]) {
        debug!(root = %self.root.display(), "inotify overflow: invalidating the whole tree");
        for inv in invs {
            inv.inval_inode(Ino::ROOT, 0, 0);
        }
        let mut todo = vec![self.root.clone()];
        let mut seen = 0usize;
        while let Some(dir) = todo.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
                if m.is_dir() {
                    todo.push(p.clone());
                }
                if let Ok(rel) = p.strip_prefix(&self.root) {
                    self.changed(invs, rel.as_os_str().as_bytes(), Some(&attr_of(&m, self.root_ino)));
                }
                seen += 1;
                if seen >= RESCAN_MAX {
                    return;
                }
            }
        }
    }
}
