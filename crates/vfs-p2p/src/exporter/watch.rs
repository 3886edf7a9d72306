//! Changes made directly in a shared host directory (not through the exporter), seen with
//! inotify (the `notify` crate), turned into changes for the exporter's debouncer.
//!
//! Invariant: every inotify event under the root becomes a change, with the attributes
//! observed when the event was handled; none is filtered by name. An event whose file
//! is already gone again yields a removal (its later events say the rest); an inotify
//! queue overflow yields an update of the root, which peers take as "revalidate
//! everything". A rename is reported as the removal of the old path and an update of the
//! new one (inotify gives the two halves separately), which every receiver that fetches
//! on demand converges on exactly as on a rename.
//!
//! Directory moves: inotify watches directories, and `notify` re-watches a moved
//! directory only after it has handled the move, so events in the moved subtree in
//! between can be lost or reported under the old path (measured: a write just after
//! `mv d1 moved` was missed). A directory move therefore also yields "revalidate
//! everything", at once and again [`SETTLE`] later, after the window has closed.
//!
//! Attributes carry the inode numbers `LocalFs` gives: the host's, with the root's host
//! number and 1 trading places (see `vfs_core::localfs`).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode as NotifyAccess, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use vfs_core::notify::{Change, Debouncer};
use vfs_core::{Attr, FileType, Ino, Timestamp};

use super::SharePath;

/// How long after a directory move the second "revalidate everything" is sent.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

/// Watches a host directory for as long as it lives.
pub struct HostWatcher {
    _watcher: RecommendedWatcher,
}

impl std::fmt::Debug for HostWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostWatcher")
    }
}

impl HostWatcher {
    /// Starts watching `root` (recursively) and sending what changes to `changes`. The
    /// watcher's own thread does the sending and waits when the debouncer is full.
    pub fn start(root: &Path, changes: Debouncer<SharePath, Attr>) -> notify::Result<HostWatcher> {
        let root = std::fs::canonicalize(root)?;
        let root_ino = std::fs::metadata(&root)?.ino();
        let base = root.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                let moved_dir = dir_moved(&ev);
                for change in translate(&base, root_ino, &ev) {
                    if changes.send_blocking(change).is_err() {
                        return;
                    }
                }
                if moved_dir && let Ok(m) = std::fs::symlink_metadata(&base) {
                    let marker = super::revalidate_all(attr_of(&m, root_ino));
                    let _ = changes.send_blocking(marker.clone());
                    let later = changes.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(SETTLE);
                        let _ = later.send_blocking(marker);
                    });
                }
            }
            Err(e) => tracing::debug!("host watcher: {e}"),
        })?;
        watcher.watch(&root, RecursiveMode::Recursive)?;
        tracing::debug!(root = %root.display(), "watching the host directory");
        Ok(HostWatcher { _watcher: watcher })
    }
}

/// Whether `ev` is the arrival of a directory by rename (its subtree's events may be lost
/// or misnamed for a moment).
fn dir_moved(ev: &notify::Event) -> bool {
    matches!(
        ev.kind,
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any))
    ) && ev.paths.last().is_some_and(|p| p.is_dir())
}

/// The share path of a host path under `root`.
fn share_path(root: &Path, p: &Path) -> Option<SharePath> {
    let rel = p.strip_prefix(root).ok()?;
    Some(rel.as_os_str().as_bytes().to_vec())
}

fn update_or_remove(root: &Path, root_ino: u64, p: &PathBuf) -> Option<Change<SharePath, Attr>> {
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
            .map(|m| vec![super::revalidate_all(attr_of(&m, root_ino))])
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
