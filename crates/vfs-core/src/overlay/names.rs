//! Names: lookups that fall through the layers, the merged directory listing, whiteouts.
//!
//! Invariant: a name is visible in the overlay iff the upper has it as a non-whiteout, or
//! the upper has nothing under it and some lower directory merged under the parent has it,
//! with no whiteout in a layer above that one (a whiteout in any layer hides every layer
//! below it). A directory's listing is the union of its visible names, each once, with the
//! inode number a lookup of it gives, ordered by a cookie that is a hash of the name: a
//! listing resumed by cookie while names come and go never repeats a name and lists every
//! name that stayed untouched.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::node::{Node, NodeState, join};
use super::{CTX, Layer, META_DIR, Overlay, ovl_ino};
use crate::error::{VfsError, VfsResult};
use crate::fh::fnv1a_64;
use crate::types::{Attr, DirEntry, FileType, Ino, Name};
use crate::vfs::VirtualFs;

/// What a lookup found.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub ino: Ino,
    pub kind: FileType,
    pub upper: Option<Ino>,
    pub lower: Option<(usize, Ino)>,
    pub lower_dirs: Vec<(usize, Ino)>,
    /// The name itself is in the upper directory (not only in a lower one).
    pub named_upper: bool,
    /// Attributes from the layer that holds it, with the overlay inode number.
    pub attr: Attr,
}

/// A whiteout: a character device 0/0.
pub(crate) fn is_whiteout(a: &Attr) -> bool {
    a.kind == FileType::CharDevice && a.rdev == 0
}

/// Every entry of directory `ino` of `fs`, `.` and `..` included.
pub(crate) async fn list_all<F: VirtualFs>(fs: &F, ino: Ino) -> VfsResult<Vec<DirEntry>> {
    let mut out = Vec::new();
    let mut cookie = 0;
    loop {
        let page = fs.readdir(&CTX, ino, cookie, 1024).await?;
        let Some(last) = page.last() else { break };
        if last.cookie == cookie {
            break;
        }
        cookie = last.cookie;
        out.extend(page);
    }
    Ok(out)
}

/// The readdir cookie of `name`: a 63-bit hash, so that it stays positive as the signed
/// `off_t` FUSE and NFS clients keep it in (a negative one cannot be `seekdir`ed to), and
/// never 0, 1 or 2 (start, `.`, `..`).
pub(crate) fn cookie_of(name: &[u8]) -> u64 {
    (fnv1a_64(name) >> 1).max(3)
}

fn is_dot(n: &[u8]) -> bool {
    n == b"." || n == b".."
}

impl<U: VirtualFs, L: VirtualFs> Overlay<U, L> {
    /// The overlay inode number of upper object `upper_ino` (through its record's origin
    /// if it was copied up).
    pub(crate) fn ino_of_upper(&self, upper_ino: Ino) -> VfsResult<Ino> {
        match self.records.lock().get(&upper_ino).and_then(|r| r.origin.clone()) {
            Some(o) => ovl_ino(Layer::Lower(o.layer), o.ino),
            None => ovl_ino(Layer::Upper, upper_ino),
        }
    }

    fn is_opaque(&self, upper_ino: Ino) -> bool {
        self.records.lock().get(&upper_ino).is_some_and(|r| r.opaque)
    }

    /// The lower directories named `name` under `dirs`, topmost first, down to the first
    /// layer where the name is a non-directory or a whiteout.
    async fn lower_dirs_named(&self, dirs: &[(usize, Ino)], name: Name<'_>) -> VfsResult<Vec<(usize, Ino)>> {
        let mut out = Vec::new();
        for &(layer, dir) in dirs {
            match self.lowers[layer].lookup(&CTX, dir, name).await {
                Ok(a) if a.kind == FileType::Directory => out.push((layer, a.ino)),
                Ok(_) => break,
                Err(VfsError::NotFound | VfsError::NotDir) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Whether some lower layer under `parent` has `name` visible (not whited out).
    pub(crate) async fn lower_has(&self, parent: &NodeState, name: Name<'_>) -> VfsResult<bool> {
        for &(layer, dir) in &parent.lower_dirs {
            match self.lowers[layer].lookup(&CTX, dir, name).await {
                Ok(a) => return Ok(!is_whiteout(&a)),
                Err(VfsError::NotFound | VfsError::NotDir) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Finds `name` in directory node `p` without registering anything.
    pub(crate) async fn resolve(&self, p: &Node, name: Name<'_>) -> VfsResult<Option<Found>> {
        if p.kind != FileType::Directory {
            return Err(VfsError::NotDir);
        }
        if p.ino == Ino::ROOT && name.as_bytes() == META_DIR.as_bytes() {
            return Ok(None);
        }
        let st = p.snapshot();
        if let Some(pu) = st.upper {
            match self.upper.lookup(&CTX, pu, name).await {
                Ok(a) if is_whiteout(&a) => return Ok(None),
                Ok(a) => {
                    let ino = self.ino_of_upper(a.ino)?;
                    let lower_dirs = if a.kind == FileType::Directory && !self.is_opaque(a.ino) {
                        self.lower_dirs_named(&st.lower_dirs, name).await?
                    } else {
                        Vec::new()
                    };
                    return Ok(Some(Found {
                        ino,
                        kind: a.kind,
                        upper: Some(a.ino),
                        lower: None,
                        lower_dirs,
                        named_upper: true,
                        attr: Attr { ino, ..a },
                    }));
                }
                Err(VfsError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        for (i, &(layer, dir)) in st.lower_dirs.iter().enumerate() {
            match self.lowers[layer].lookup(&CTX, dir, name).await {
                Ok(a) if is_whiteout(&a) => return Ok(None),
                Ok(a) => {
                    let ino = ovl_ino(Layer::Lower(layer), a.ino)?;
                    let mut lower_dirs = Vec::new();
                    if a.kind == FileType::Directory {
                        lower_dirs.push((layer, a.ino));
                        lower_dirs.extend(self.lower_dirs_named(&st.lower_dirs[i + 1..], name).await?);
                    }
                    // A hard link of a file already copied up through another name.
                    let upper = self.by_origin.lock().get(&ino).copied();
                    let attr = match upper {
                        Some(u) => self.upper.getattr(&CTX, u, None).await?,
                        None => a,
                    };
                    return Ok(Some(Found {
                        ino,
                        kind: a.kind,
                        upper,
                        lower: Some((layer, a.ino)),
                        lower_dirs,
                        named_upper: false,
                        attr: Attr { ino, ..attr },
                    }));
                }
                Err(VfsError::NotFound | VfsError::NotDir) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Makes (or refreshes) the node of `found`, seen as `name` in `p`; counts a lookup
    /// reference if `count`.
    pub(crate) fn register(&self, p: &Node, name: Name<'_>, found: &Found, count: bool) -> Arc<Node> {
        let ppath = p.st.lock().path.clone();
        let mut nodes = self.nodes.lock();
        let node = match nodes.get(&found.ino) {
            Some(n) if n.kind == found.kind => Arc::clone(n),
            _ => {
                let n = Node::new(found.ino, found.kind, NodeState::default());
                nodes.insert(found.ino, Arc::clone(&n));
                n
            }
        };
        drop(nodes);
        let mut st = node.st.lock();
        st.parent = p.ino;
        st.name = name.as_bytes().to_vec();
        st.path = join(&ppath, name.as_bytes());
        if found.upper.is_some() {
            st.upper = found.upper;
        }
        if found.lower.is_some() {
            st.lower = found.lower;
        }
        if found.kind == FileType::Directory {
            st.lower_dirs = found.lower_dirs.clone();
        }
        if count {
            st.lookups += 1;
        }
        drop(st);
        node
    }

    /// The visible entries of directory node `dir` (without `.` and `..`), in cookie order.
    pub(crate) async fn merged_entries(&self, dir: &Node) -> VfsResult<Vec<DirEntry>> {
        let st = dir.snapshot();
        let root = dir.ino == Ino::ROOT;
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut out = Vec::new();
        if let Some(u) = st.upper {
            for e in list_all(&self.upper, u).await? {
                let n = e.name.as_bytes();
                if is_dot(n) || (root && n == META_DIR.as_bytes()) || !seen.insert(n.to_vec()) {
                    continue;
                }
                if e.kind == FileType::CharDevice {
                    let a = self.upper.lookup(&CTX, u, Name::new(&e.name)?).await?;
                    if is_whiteout(&a) {
                        continue;
                    }
                }
                let ino = self.ino_of_upper(e.ino)?;
                out.push(DirEntry {
                    ino,
                    cookie: cookie_of(n),
                    ..e
                });
            }
        }
        for &(layer, d) in &st.lower_dirs {
            for e in list_all(&self.lowers[layer], d).await? {
                let n = e.name.as_bytes();
                if is_dot(n) || (root && n == META_DIR.as_bytes()) || !seen.insert(n.to_vec()) {
                    continue;
                }
                if e.kind == FileType::CharDevice {
                    let a = self.lowers[layer].lookup(&CTX, d, Name::new(&e.name)?).await?;
                    if is_whiteout(&a) {
                        continue;
                    }
                }
                let ino = ovl_ino(Layer::Lower(layer), e.ino)?;
                out.push(DirEntry {
                    ino,
                    cookie: cookie_of(n),
                    ..e
                });
            }
        }
        out.sort_by_key(|e| e.cookie);
        Ok(out)
    }

    /// Removes the whiteouts of upper directory `u` (before it is removed or replaced:
    /// it is empty in the overlay's view).
    pub(crate) async fn purge_whiteouts(&self, u: Ino) -> VfsResult<()> {
        for e in list_all(&self.upper, u).await? {
            if e.kind != FileType::CharDevice {
                continue;
            }
            let n = Name::new(&e.name)?;
            if is_whiteout(&self.upper.lookup(&CTX, u, n).await?) {
                self.upper.unlink(&CTX, u, n).await?;
            }
        }
        Ok(())
    }

    /// If the upper has a whiteout at `u/name`, removes it and returns `true`.
    pub(crate) async fn take_whiteout(&self, u: Ino, name: Name<'_>) -> VfsResult<bool> {
        match self.upper.lookup(&CTX, u, name).await {
            Ok(a) if is_whiteout(&a) => {
                self.upper.unlink(&CTX, u, name).await?;
                Ok(true)
            }
            Ok(_) => Err(VfsError::Exists),
            Err(VfsError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Puts a whiteout at `u/name` in the upper.
    pub(crate) async fn make_whiteout(&self, u: Ino, name: Name<'_>) -> VfsResult<()> {
        self.upper.mknod(&CTX, u, name, libc::S_IFCHR, 0, 0).await.map(|_| ())
    }
}
