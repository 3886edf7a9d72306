//! From our inode number to a descriptor of that very host inode.
//!
//! Invariant: a descriptor handed out for inode `ino` has been checked to refer to a host
//! inode on the root's device whose number maps to `ino`, and was reached only through
//! `openat(dir, name, O_PATH | O_NOFOLLOW)` steps starting at the root (or at a kept
//! directory descriptor that was itself reached that way). What the table remembers
//! (`parent`, `name`) is a hint, never trusted without that check.
//!
//! Three ways, cheapest first:
//! 1. a kept `O_PATH` descriptor (looked-up directories, within the [`FdBudget`]);
//! 2. the remembered chain of `(parent, name)` up to the root or to a kept descriptor,
//!    reopened step by step, each step verified by inode number;
//! 3. an open handle on the inode (a file unlinked while open has no name left);
//! 4. a breadth-first walk of the whole tree from the root, which remembers the path
//!    it found. Absent there, the inode is gone: `ESTALE`.
//!
//! [`FdBudget`]: super::host::FdBudget

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::Dir;
use tracing::{debug, trace};

use super::Inner;
use super::host::{
    DirFd, FdBudget, InodeFd, OpenFile, Resolved, dev_of, kind_of, open_dir_for_reading, open_path_at, statx_fd,
};
use crate::error::{VfsError, VfsResult};
use crate::lock_order::{Locked, Unlocked};
use crate::sync::Arc;
use crate::types::{FileType, Ino};

/// Longest remembered chain followed before falling back to the walk (it also breaks
/// cycles that stale hints may form).
const MAX_CHAIN: usize = 4096;

/// Directory descriptors a walk keeps open for its frontier; the rest are reopened from
/// the root when their turn comes.
const WALK_FRONTIER_FDS: usize = 64;

/// One step of a path found by the walk: inode, type, parent, name.
type PathStep = (Ino, FileType, Ino, OsString);

/// What LocalFs knows about one inode. Sizes and other attributes are deliberately absent:
/// they are always asked of the host.
#[derive(Debug)]
pub(super) struct Node {
    /// The type, as last seen.
    pub(super) kind: FileType,
    /// The directory it was last seen in.
    pub(super) parent: Ino,
    /// The name it was last seen under.
    pub(super) name: OsString,
    /// A kept `O_PATH` descriptor, for directories the front end looked up.
    pub(super) dir: Option<Arc<DirFd>>,
    /// References the front end holds (FUSE lookup count).
    pub(super) nlookup: u64,
    /// The generation last answered with an entry ([`super::host::generation_of`]; 0
    /// if unknown): a host inode number reused for a new object gets a new one.
    pub(super) generation: u64,
}

/// Where an inode was seen.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sighting<'a> {
    pub(super) ino: Ino,
    pub(super) kind: FileType,
    pub(super) parent: Ino,
    pub(super) name: &'a OsStr,
    /// The generation, when this sighting's `statx` told it (entries answered to the
    /// front end); `None` leaves the remembered one.
    pub(super) generation: Option<u64>,
}

impl Inner {
    /// Records a sighting and adds `lookups` front-end references. `dir_fd`, an `O_PATH`
    /// descriptor of a looked-up directory, is kept if the node has none yet and the
    /// budget allows.
    pub(super) fn remember(&self, tok: &mut Locked<Unlocked>, s: Sighting<'_>, lookups: u64, dir_fd: Option<OwnedFd>) {
        if s.ino == Ino::ROOT {
            return;
        }
        let mut kept = match dir_fd {
            Some(fd) if lookups > 0 && s.kind == FileType::Directory && !self.has_dir_fd(tok, s.ino) => {
                FdBudget::keep(&self.budget, fd).ok()
            }
            _ => None,
        };
        loop {
            let spare = self.nodes.update(tok, s.ino, |n| {
                n.kind = s.kind;
                n.parent = s.parent;
                s_clone_into(s.name, &mut n.name);
                n.nlookup = n.nlookup.saturating_add(lookups);
                if let Some(g) = s.generation {
                    n.generation = g;
                }
                if s.kind != FileType::Directory {
                    n.dir.take()
                } else if n.dir.is_none() {
                    n.dir = kept.take();
                    None
                } else {
                    None
                }
            });
            match spare {
                // Dropped here, outside the file lock.
                Some(old) => {
                    drop((old, kept));
                    return;
                }
                None => {
                    let node = Node {
                        kind: s.kind,
                        parent: s.parent,
                        name: s.name.to_os_string(),
                        dir: kept.take(),
                        nlookup: lookups,
                        generation: s.generation.unwrap_or(0),
                    };
                    match self.nodes.insert(tok, s.ino, node) {
                        Ok(_) => return,
                        // Inserted by someone else meanwhile: merge into theirs.
                        Err(node) => kept = node.dir,
                    }
                }
            }
        }
    }

    fn has_dir_fd(&self, tok: &mut Locked<Unlocked>, ino: Ino) -> bool {
        self.nodes.read(tok, ino, |n| n.dir.is_some()).unwrap_or(false)
    }

    /// Updates where an inode we already know was last seen (after a rename). Unknown
    /// inodes are left unknown.
    pub(super) fn moved(&self, tok: &mut Locked<Unlocked>, ino: Ino, parent: Ino, name: &OsStr) {
        self.nodes.update(tok, ino, |n| {
            n.parent = parent;
            s_clone_into(name, &mut n.name);
        });
    }

    /// Drops the kept descriptor of a directory that was removed.
    pub(super) fn dir_removed(&self, tok: &mut Locked<Unlocked>, ino: Ino) {
        let old = self.nodes.update(tok, ino, |n| n.dir.take()).flatten();
        drop(old);
    }

    /// Drops `n` front-end references; the node and its descriptor go at zero.
    pub(super) fn forget(&self, tok: &mut Locked<Unlocked>, ino: Ino, n: u64) {
        if ino == Ino::ROOT {
            return;
        }
        let zero = self.nodes.update(tok, ino, |node| {
            node.nlookup = node.nlookup.saturating_sub(n);
            node.nlookup == 0
        });
        if zero == Some(true) {
            let removed = self.nodes.remove_if(tok, ino, |node| node.nlookup == 0);
            drop(removed);
        }
    }

    /// The generation remembered for `ino` (0 if unknown or forgotten).
    pub(super) fn generation(&self, tok: &mut Locked<Unlocked>, ino: Ino) -> u64 {
        self.nodes.read(tok, ino, |n| n.generation).unwrap_or(0)
    }

    /// The inode through what the table remembers (ways 1 and 2), or `None`.
    pub(super) fn resolve_known(&self, tok: &mut Locked<Unlocked>, ino: Ino) -> Option<Resolved> {
        let mut chain: Vec<(Ino, OsString)> = Vec::new();
        let mut cur = ino;
        let base = loop {
            if cur == Ino::ROOT {
                break Arc::clone(&self.root);
            }
            let (dir, parent, name) = self
                .nodes
                .read(tok, cur, |n| (n.dir.clone(), n.parent, n.name.clone()))?;
            if let Some(d) = dir {
                break d;
            }
            if chain.len() >= MAX_CHAIN {
                return None;
            }
            chain.push((cur, name));
            cur = parent;
        };
        let mut fd = InodeFd::Dir(base);
        let mut kind = FileType::Directory;
        let mut verified = None;
        for (want, name) in chain.iter().rev() {
            if kind != FileType::Directory {
                return None;
            }
            let next = open_path_at(fd.as_fd(), name).ok()?;
            let st = statx_fd(next.as_fd()).ok()?;
            if dev_of(&st) != self.root_dev || self.map.to_vfs(st.stx_ino) != *want {
                return None;
            }
            kind = kind_of(&st).ok()?;
            fd = InodeFd::Path(next);
            verified = Some(st);
        }
        Some(Resolved { fd, kind, verified })
    }

    /// An open handle on `ino` (way 3): the only way left to a file unlinked while open.
    pub(super) fn open_handle_of(&self, tok: &mut Locked<Unlocked>, ino: Ino) -> Option<Arc<OpenFile>> {
        self.handles.any_of(tok, ino)
    }

    /// Way 4: walks the tree breadth-first for `ino` and remembers the path to it.
    /// Blocking, possibly long: run it off the async workers.
    pub(super) fn walk_and_remember(&self, ino: Ino) -> VfsResult<Resolved> {
        let (found, path) = self.walk(ino)?;
        // SAFETY: runs on its own blocking thread, called with no lock held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        for s in &path {
            self.remember(
                &mut tok,
                Sighting {
                    ino: s.0,
                    kind: s.1,
                    parent: s.2,
                    name: &s.3,
                    generation: None,
                },
                0,
                None,
            );
        }
        Ok(found)
    }

    /// The walk: returns the inode and the sightings from it up to the root.
    fn walk(&self, ino: Ino) -> VfsResult<(Resolved, Vec<PathStep>)> {
        // Directories met so far: ino → (parent, name), to reopen them and to report the path.
        let mut seen: HashMap<Ino, (Ino, OsString)> = HashMap::new();
        let mut visited: HashSet<Ino> = HashSet::from([Ino::ROOT]);
        let mut queue: VecDeque<(Ino, Option<OwnedFd>)> = VecDeque::from([(Ino::ROOT, None)]);
        let mut held = 0usize;
        while let Some((dino, fd)) = queue.pop_front() {
            let dfd = match fd {
                Some(fd) => {
                    held -= 1;
                    InodeFd::Path(fd)
                }
                None if dino == Ino::ROOT => InodeFd::Dir(Arc::clone(&self.root)),
                None => match self.reopen_seen(&seen, dino) {
                    Some(fd) => InodeFd::Path(fd),
                    None => continue,
                },
            };
            let Ok(dir) = open_dir_for_reading(dfd.as_fd()).and_then(Dir::new) else {
                continue;
            };
            for entry in dir {
                let Ok(entry) = entry else { break };
                let name = OsStr::from_bytes(entry.file_name().to_bytes());
                if name == "." || name == ".." {
                    continue;
                }
                let maybe_target = self.map.to_vfs(entry.ino()) == ino;
                let maybe_dir = matches!(
                    entry.file_type(),
                    rustix::fs::FileType::Directory | rustix::fs::FileType::Unknown
                );
                if !maybe_target && !maybe_dir {
                    continue;
                }
                let Ok(child) = open_path_at(dfd.as_fd(), name) else {
                    continue;
                };
                let Ok(st) = statx_fd(child.as_fd()) else { continue };
                if dev_of(&st) != self.root_dev {
                    continue;
                }
                let Ok(kind) = kind_of(&st) else { continue };
                let cino = self.map.to_vfs(st.stx_ino);
                if cino == ino {
                    let mut path = vec![(ino, kind, dino, name.to_os_string())];
                    let mut cur = dino;
                    while let Some((parent, pname)) = seen.get(&cur) {
                        path.push((cur, FileType::Directory, *parent, pname.clone()));
                        cur = *parent;
                    }
                    trace!(%ino, depth = path.len(), "found by walking the tree");
                    return Ok((
                        Resolved {
                            fd: InodeFd::Path(child),
                            kind,
                            verified: Some(st),
                        },
                        path,
                    ));
                }
                if kind == FileType::Directory && visited.insert(cino) {
                    seen.insert(cino, (dino, name.to_os_string()));
                    if held < WALK_FRONTIER_FDS {
                        held += 1;
                        queue.push_back((cino, Some(child)));
                    } else {
                        queue.push_back((cino, None));
                    }
                }
            }
        }
        debug!(%ino, "not found anywhere under the root: stale");
        Err(VfsError::Stale)
    }

    /// Reopens a directory met earlier in this walk from the root, verifying every step.
    fn reopen_seen(&self, seen: &HashMap<Ino, (Ino, OsString)>, dino: Ino) -> Option<OwnedFd> {
        let mut names: Vec<(Ino, &OsStr)> = Vec::new();
        let mut cur = dino;
        while cur != Ino::ROOT {
            let (parent, name) = seen.get(&cur)?;
            names.push((cur, name));
            cur = *parent;
            if names.len() > seen.len() {
                return None;
            }
        }
        let mut fd: Option<OwnedFd> = None;
        for (want, name) in names.into_iter().rev() {
            let next = match &fd {
                Some(f) => open_path_at(f.as_fd(), name),
                None => open_path_at(self.root.as_fd(), name),
            }
            .ok()?;
            let st = statx_fd(next.as_fd()).ok()?;
            if dev_of(&st) != self.root_dev
                || self.map.to_vfs(st.stx_ino) != want
                || kind_of(&st).ok()? != FileType::Directory
            {
                return None;
            }
            fd = Some(next);
        }
        fd
    }
}

fn s_clone_into(name: &OsStr, into: &mut OsString) {
    if into != name {
        name.clone_into(into);
    }
}
