//! Changes made directly in a host directory (not through a front end), seen with inotify
//! (the `notify` crate), turned into changes for a [`Debouncer`]. Behind the cargo feature
//! `watch` (off by default; `localfs` turns it on). Every front end uses it: `LocalFs` turns the changes into
//! kernel-cache invalidations ([`crate::VirtualFs::report_changes`]), the P2P exporter
//! sends them to its peers.
//!
//! Invariant: every inotify event under the root becomes a change, with the attributes
//! observed when the event was handled; none is filtered by name. An event whose file
//! is already gone again yields a removal (its later events say the rest); an inotify
//! queue overflow yields an update of [`REVALIDATE_ALL`], which receivers take as
//! "revalidate everything". A rename is reported as the removal of the old path and an
//! update of the new one (inotify gives the two halves separately), which every receiver
//! that fetches on demand converges on exactly as on a rename.
//!
//! New and moved-in directories: inotify watches directories, and `notify` starts
//! watching a directory only after it has handled the event that made it appear, so
//! whatever is created in it (or, for a moved directory, changed in it) in between has no
//! event (measured: `mkdir -p d/e && echo x > d/e/f` was missed, and so was a write just
//! after `mv d1 moved`). Such a directory is therefore walked again [`SETTLE`] after it
//! appeared, once its watch is in place, and every entry found in it is reported as
//! updated; a subtree of more than [`RESCAN_MAX`] entries is reported as "revalidate
//! everything" instead.
//!
//! Keys are paths relative to the root, as bytes (the root itself is the empty key).
//! Attributes carry the inode numbers `LocalFs` gives: the host's, with the root's host
//! number and 1 trading places (see [`crate::localfs`]).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::notify::{Change, Debouncer};
use crate::types::{Attr, FileType, Ino, Timestamp};
use notify::event::{AccessKind, AccessMode as NotifyAccess, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// A path relative to the watched root, as bytes.
pub type SharePath = Vec<u8>;

/// The key of a change that has no path (an inotify overflow, events lost around a
/// directory move): a receiver of an update of it revalidates everything. No real key
/// has it (keys never start with `/`), so the debouncer never merges it with a real change.
pub const REVALIDATE_ALL: &[u8] = b"/";

/// Where a [`HostWatcher`] sends what it sees: a [`Debouncer`] (the P2P exporter) or a
/// bounded channel (`LocalFs`'s reports). Sending waits while the receiver is full, so
/// nothing is dropped (inotify's own queue overflows instead, which is reported as
/// [`REVALIDATE_ALL`]).
pub trait ChangeSink: Clone + Send + 'static {
    /// Sends one change, waiting for room; false once the receiver is gone (the watcher
    /// then stops sending).
    fn send_change(&self, change: Change<SharePath, Attr>) -> bool;
}

impl ChangeSink for Debouncer<SharePath, Attr> {
    fn send_change(&self, change: Change<SharePath, Attr>) -> bool {
        self.send_blocking(change).is_ok()
    }
}

impl ChangeSink for std::sync::mpsc::SyncSender<Change<SharePath, Attr>> {
    fn send_change(&self, change: Change<SharePath, Attr>) -> bool {
        self.send(change).is_ok()
    }
}

/// The "revalidate everything" change.
pub fn revalidate_all(attrs: Attr) -> Change<SharePath, Attr> {
    Change::Update {
        key: REVALIDATE_ALL.to_vec(),
        attrs,
    }
}

/// How long after a directory appeared it is walked again.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);
/// Most entries a walk of a new directory reports one by one.
pub const RESCAN_MAX: usize = 100_000;

/// Watches a host directory for as long as it lives.
pub struct HostWatcher {
    _watcher: RecommendedWatcher,
}

/// Walks the directories that appeared, [`SETTLE`] after they did, reporting what is in
/// them. Ends when the watcher (the sender) is gone.
fn rescanner(
    root: PathBuf,
    root_ino: u64,
    rx: std::sync::mpsc::Receiver<(PathBuf, std::time::Instant)>,
    changes: impl ChangeSink,
) {
    while let Ok((dir, due)) = rx.recv() {
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        let mut found = Vec::new();
        let mut todo = vec![dir];
        let mut overflow = false;
        while let Some(d) = todo.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(p.clone());
                }
                found.push(p);
                if found.len() > RESCAN_MAX {
                    overflow = true;
                    todo.clear();
                    break;
                }
            }
        }
        let batch: Vec<Change<SharePath, Attr>> = if overflow {
            match std::fs::symlink_metadata(&root) {
                Ok(m) => vec![revalidate_all(attr_of(&m, root_ino))],
                Err(_) => Vec::new(),
            }
        } else {
            found
                .iter()
                .filter_map(|p| update_or_remove(&root, root_ino, p))
                .collect()
        };
        for c in batch {
            if !changes.send_change(c) {
                return;
            }
        }
    }
}

impl std::fmt::Debug for HostWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostWatcher")
    }
}

impl HostWatcher {
    /// Starts watching `root` (recursively) and sending what changes to `changes`. The
    /// watcher's own thread does the sending and waits when the debouncer is full.
    pub fn start(root: &Path, changes: impl ChangeSink) -> notify::Result<HostWatcher> {
        let root = std::fs::canonicalize(root)?;
        let root_ino = std::fs::metadata(&root)?.ino();
        let base = root.clone();
        let (rescan, rescan_rx) = std::sync::mpsc::channel();
        {
            let (root, changes) = (root.clone(), changes.clone());
            std::thread::Builder::new()
                .name("vfs-watch-rescan".into())
                .spawn(move || rescanner(root, root_ino, rescan_rx, changes))?;
        }
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                for change in translate(&base, root_ino, &ev) {
                    if !changes.send_change(change) {
                        return;
                    }
                }
                if let Some(dir) = dir_appeared(&ev) {
                    let _ = rescan.send((dir, std::time::Instant::now() + SETTLE));
                }
            }
            Err(e) => tracing::debug!("host watcher: {e}"),
        })?;
        watcher.watch(&root, RecursiveMode::Recursive)?;
        tracing::debug!(root = %root.display(), "watching the host directory");
        Ok(HostWatcher { _watcher: watcher })
    }
}

/// The directory `ev` made appear (created, or moved in), whose first moments inotify
/// may have missed.
fn dir_appeared(ev: &notify::Event) -> Option<PathBuf> {
    let appears = matches!(
        ev.kind,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any))
    );
    ev.paths.last().filter(|p| appears && p.is_dir()).cloned()
}

/// The share path of a host path under `root`.
fn share_path(root: &Path, p: &Path) -> Option<SharePath> {
    let rel = p.strip_prefix(root).ok()?;
    Some(rel.as_os_str().as_bytes().to_vec())
}

fn update_or_remove(root: &Path, root_ino: u64, p: &Path) -> Option<Change<SharePath, Attr>> {
    let key = share_path(root, p)?;
    Some(match std::fs::symlink_metadata(p) {
        Ok(m) => Change::Update {
            key,
            attrs: attr_of(&m, root_ino),
        },
        Err(_) => Change::Remove { key },
    })
}

/// The changes one inotify event stands for.
fn translate(root: &Path, root_ino: u64, ev: &notify::Event) -> Vec<Change<SharePath, Attr>> {
    if ev.need_rescan() {
        return std::fs::symlink_metadata(root)
            .map(|m| vec![revalidate_all(attr_of(&m, root_ino))])
            .unwrap_or_default();
    }
    match ev.kind {
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => ev
            .paths
            .iter()
            .filter_map(|p| share_path(root, p).map(|key| Change::Remove { key }))
            .collect(),
        // The two halves were reported already.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => Vec::new(),
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Access(AccessKind::Close(NotifyAccess::Write))
        | EventKind::Other
        | EventKind::Any => ev
            .paths
            .iter()
            .filter_map(|p| update_or_remove(root, root_ino, p))
            .collect(),
        EventKind::Access(_) => Vec::new(),
    }
}

fn ts(secs: i64, nsecs: i64) -> Timestamp {
    Timestamp::new(secs, u32::try_from(nsecs).unwrap_or(0))
}

/// `LocalFs`'s attributes of a host file (inode numbers mapped as `LocalFs` maps them).
pub fn attr_of(m: &std::fs::Metadata, root_ino: u64) -> Attr {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::from_mode(m.mode()).unwrap_or(FileType::Regular)
    };
    let ino = match m.ino() {
        h if h == root_ino => Ino::ROOT,
        1 => Ino(root_ino),
        h => Ino(h),
    };
    Attr {
        ino,
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: u32::try_from(m.nlink()).unwrap_or(u32::MAX),
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        blocks: m.blocks(),
        blksize: u32::try_from(m.blksize()).unwrap_or(4096),
        rdev: m.rdev(),
        atime: ts(m.atime(), m.atime_nsec()),
        mtime: ts(m.mtime(), m.mtime_nsec()),
        ctime: ts(m.ctime(), m.ctime_nsec()),
    }
}
