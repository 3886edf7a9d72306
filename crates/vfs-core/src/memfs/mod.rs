//! `MemFs`: the in-memory reference backend, full POSIX.
//!
//! Invariant: every field of every inode (attributes, data, directory entries, xattrs,
//! open count) is read and written only under that inode's [`MetaTable`] file lock; an
//! operation that changes several inodes (rename, link, unlink) locks them together
//! through [`FileCell::write_many`] (inode order) and re-checks, under those locks, that
//! the names it looked up still point where they did, retrying otherwise. Cross-directory
//! renames are serialized by a [`Namespace`]-level lock so the "not into its own subtree"
//! check cannot race with another rename. An inode is dropped when it has no name and no
//! open handle.
//!
//! Access control (`EACCES`) is the front end's job, as with FUSE's `default_permissions`:
//! MemFs trusts the caller's checks and only applies the rules a filesystem itself owns
//! (ownership of new files, setgid inheritance, clearing setuid/setgid on chown and on
//! writes by non-root, xattr namespaces). It does not update atime on reads (as if
//! mounted `noatime`). Its inode numbers do not survive a restart
//! ([`InodeStability::Volatile`]).

mod node;

use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::error::{VfsError, VfsResult};
use crate::fh_table::FhTable;
use crate::lock_order::{File, LockAfter, Locked, Map, Namespace, OrderedMutex, Unlocked};
use crate::meta::{FileCell, MetaTable};
use crate::types::{
    AccessMode, Attr, DirEntry, Fh, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs,
    Timestamp, XattrSet, check_symlink_target,
};
use crate::vfs::{ChangeSource, InodeStability, MknodSpec, VirtualFs, check_xattr, xattr_namespace_check};
use node::{Content, DirData, FileData, MAX_FILE_SIZE, Node, Slot};

/// Most hard links one inode may have.
const LINK_MAX: u32 = 65_000;
/// The size `statfs` reports, in bytes (MemFs itself is bounded only by memory).
const REPORTED_CAPACITY: u64 = 1 << 40;
const BLOCK: u32 = 4096;

/// What `make_node` creates.
struct NewNode {
    kind: FileType,
    /// Permission bits, umask already applied.
    perm: u32,
    rdev: u64,
    content: Content,
}

/// What a remove may take: `unlink` anything but a directory, `rmdir` an empty directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Removal {
    NonDir,
    EmptyDir,
}

impl Removal {
    /// The kind rule: `EISDIR` for unlinking a directory, `ENOTDIR` for rmdir of anything else.
    fn check_kind(self, kind: FileType) -> VfsResult<()> {
        match (self, kind == FileType::Directory) {
            (Removal::NonDir, true) => Err(VfsError::IsDir),
            (Removal::EmptyDir, false) => Err(VfsError::NotDir),
            _ => Ok(()),
        }
    }

    /// The whole rule on the inode to be removed, under its lock: its kind, and for rmdir
    /// that it is empty (`ENOTEMPTY`).
    fn check(self, victim: &Node) -> VfsResult<()> {
        self.check_kind(victim.attr.kind)?;
        if self == Removal::EmptyDir && !victim.dir()?.is_empty() {
            return Err(VfsError::NotEmpty);
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
struct OpenFile {
    mode: AccessMode,
    append: bool,
}

/// An in-memory filesystem implementing every [`VirtualFs`] operation.
///
/// ```
/// use vfs_core::{memfs::MemFs, Ino, Name, OpenFlags, RequestCtx, VirtualFs};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let fs = MemFs::new();
/// let ctx = RequestCtx::ROOT;
/// let (attr, fh) = fs
///     .create(&ctx, Ino::ROOT, Name::new("hello".as_ref())?, 0o644, 0o022, OpenFlags::RDWR)
///     .await?;
/// fs.write(&ctx, attr.ino, fh, 0, b"hi").await?;
/// assert_eq!(&fs.read(&ctx, attr.ino, fh, 0, 10).await?[..], b"hi");
/// fs.release(&ctx, attr.ino, fh).await?;
/// # Ok::<(), vfs_core::VfsError>(())
/// # }).unwrap();
/// ```
pub struct MemFs {
    table: MetaTable<Node>,
    renames: OrderedMutex<(), Namespace>,
    handles: FhTable<OpenFile>,
    next_ino: AtomicU64,
    allocated: AtomicU64,
    source_id: String,
}

impl std::fmt::Debug for MemFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemFs")
            .field("source_id", &self.source_id)
            .finish_non_exhaustive()
    }
}

impl Default for MemFs {
    fn default() -> Self {
        Self::new()
    }
}

impl MemFs {
    /// An empty filesystem whose root is owned by root, mode 0755.
    pub fn new() -> MemFs {
        MemFs::with_root(0, 0, 0o755)
    }

    /// An empty filesystem whose root directory has this owner and mode.
    pub fn with_root(uid: u32, gid: u32, perm: u16) -> MemFs {
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let now = Timestamp::now();
        let fs = MemFs {
            table: MetaTable::new(),
            renames: OrderedMutex::new(()),
            handles: FhTable::new(),
            next_ino: AtomicU64::new(Ino::ROOT.0 + 1),
            allocated: AtomicU64::new(0),
            source_id: format!(
                "memfs:{}:{}.{}:{}",
                std::process::id(),
                now.secs,
                now.nsecs,
                INSTANCE.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let attr = new_attr(Ino::ROOT, FileType::Directory, perm & 0o7777, uid, gid, 0, now);
        // SAFETY: the constructor's entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        // A fresh table cannot already hold the root.
        let _ = fs.table.insert(
            &mut tok,
            Ino::ROOT,
            Node::new(attr, Content::Dir(DirData::new(Ino::ROOT))),
        );
        fs
    }

    /// Number of live inodes (for tests and diagnostics).
    pub fn inode_count(&self) -> usize {
        // SAFETY: an entry point: no lock is held.
        self.table.len(&mut unsafe { Locked::<Unlocked>::new() })
    }

    /// Number of open handles (for tests and diagnostics).
    pub fn open_handles(&self) -> usize {
        // SAFETY: an entry point: no lock is held.
        self.handles.len(&mut unsafe { Locked::<Unlocked>::new() })
    }

    fn alloc_ino(&self) -> Ino {
        Ino(self.next_ino.fetch_add(1, Ordering::Relaxed))
    }

    fn handle<P>(&self, tok: &mut Locked<P>, ino: Ino, fh: Fh) -> VfsResult<OpenFile>
    where
        Map: LockAfter<P>,
    {
        self.handles.get(tok, ino, fh)
    }

    fn cell<P>(&self, tok: &mut Locked<P>, ino: Ino) -> VfsResult<crate::sync::Arc<FileCell<Node>>>
    where
        Map: LockAfter<P>,
    {
        self.table.get(tok, ino).ok_or(VfsError::Stale)
    }

    /// The entry `name` of directory `dir`, if any.
    fn entry<P>(&self, tok: &mut Locked<P>, dir: Ino, name: &OsStr) -> VfsResult<Option<Slot>>
    where
        Map: LockAfter<P>,
    {
        self.table
            .read(tok, dir, |n| n.dir().map(|d| d.get(name)))
            .ok_or(VfsError::Stale)?
    }

    fn parent_of<P>(&self, tok: &mut Locked<P>, dir: Ino) -> VfsResult<Ino>
    where
        Map: LockAfter<P>,
    {
        self.table
            .read(tok, dir, |n| n.dir().map(|d| d.parent))
            .ok_or(VfsError::Stale)?
    }

    /// `Err(EINVAL)` if `dir` is `ancestor` or lies beneath it.
    fn check_not_within<P>(&self, tok: &mut Locked<P>, dir: Ino, ancestor: Ino) -> VfsResult<()>
    where
        Map: LockAfter<P>,
    {
        let mut cur = dir;
        loop {
            if cur == ancestor {
                return Err(VfsError::Invalid("cannot move a directory into itself"));
            }
            if cur == Ino::ROOT {
                return Ok(());
            }
            cur = self.parent_of(tok, cur)?;
        }
    }

    fn add_allocated(&self, grown: u64) {
        if grown > 0 {
            self.allocated.fetch_add(grown, Ordering::Relaxed);
        }
    }

    fn sub_allocated(&self, freed: u64) {
        if freed > 0 {
            self.allocated.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Drops `ino` if it has neither names nor open handles.
    fn reap<P>(&self, tok: &mut Locked<P>, ino: Ino)
    where
        Map: LockAfter<P>,
        File: LockAfter<P>,
    {
        if let Some(cell) = self.table.remove_if(tok, ino, Node::is_dead) {
            let freed = match &cell.read(tok).content {
                Content::File(d) => d.allocated(),
                _ => 0,
            };
            self.sub_allocated(freed);
        }
    }

    /// Creates a node named `name` in `parent`: inserted into the table first (its number
    /// is fresh, nobody can reach it), then linked into the parent under the parent's lock.
    fn make_node<P>(
        &self,
        tok: &mut Locked<P>,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        spec: NewNode,
    ) -> VfsResult<Attr>
    where
        Map: LockAfter<P>,
    {
        let NewNode {
            kind,
            perm,
            rdev,
            content,
        } = spec;
        let now = Timestamp::now();
        let (pgid, pperm) = self
            .table
            .read(tok, parent, |n| n.dir().map(|_| (n.attr.gid, n.attr.perm)))
            .ok_or(VfsError::Stale)??;
        let setgid_dir = pperm & 0o2000 != 0;
        let gid = if setgid_dir { pgid } else { ctx.gid };
        let mut perm = (perm & 0o7777) as u16;
        if setgid_dir && kind == FileType::Directory {
            perm |= 0o2000;
        }
        let ino = self.alloc_ino();
        let attr = new_attr(ino, kind, perm, ctx.uid, gid, rdev, now);
        if self.table.insert(tok, ino, Node::new(attr, content)).is_err() {
            return Err(VfsError::Io("inode number reused".into()));
        }
        let linked = self
            .table
            .update(tok, parent, |p| {
                let d = p.live_dir_mut()?;
                if d.get(name.as_os_str()).is_some() {
                    return Err(VfsError::Exists);
                }
                d.insert(name.to_os_string(), ino, kind);
                if kind == FileType::Directory {
                    p.attr.nlink += 1;
                }
                p.touch_data(now);
                Ok(())
            })
            .unwrap_or(Err(VfsError::Stale));
        match linked {
            Ok(()) => Ok(attr),
            Err(e) => {
                self.table.remove(tok, ino);
                Err(e)
            }
        }
    }

    /// `lookup` under the caller's token.
    fn lookup_in<P>(&self, tok: &mut Locked<P>, parent: Ino, name: Name<'_>) -> VfsResult<Attr>
    where
        Map: LockAfter<P>,
    {
        // The entry's inode may be replaced between the two reads (a rename over the name);
        // then the name must be looked up again, never answered ENOENT while it exists.
        for _ in 0..16 {
            let Some(slot) = self.entry(tok, parent, name.as_os_str())? else {
                tracing::trace!(parent = parent.0, %name, "lookup: no such entry");
                return Err(VfsError::NotFound);
            };
            if let Some(attr) = self.table.read(tok, slot.ino, |n| n.attr) {
                return Ok(attr);
            }
        }
        Err(VfsError::Io("lookup kept racing with renames".into()))
    }

    /// The attributes of `ino`, `Stale` if it is gone.
    fn attr_of<P>(&self, tok: &mut Locked<P>, ino: Ino) -> VfsResult<Attr>
    where
        Map: LockAfter<P>,
    {
        self.table.read(tok, ino, |n| n.attr).ok_or(VfsError::Stale)
    }

    fn open_node<P>(&self, tok: &mut Locked<P>, ino: Ino, flags: OpenFlags) -> VfsResult<Fh>
    where
        Map: LockAfter<P>,
    {
        let mode = flags.access();
        let now = Timestamp::now();
        let freed = self
            .table
            .update(tok, ino, |n| {
                match n.attr.kind {
                    FileType::Directory if mode.can_write() => return Err(VfsError::IsDir),
                    FileType::Symlink => return Err(VfsError::Loop),
                    _ => {}
                }
                let mut freed = 0;
                if flags.truncate()
                    && mode.can_write()
                    && let Content::File(d) = &mut n.content
                {
                    freed = d.truncate(0);
                    n.attr.size = 0;
                    n.touch_data(now);
                    n.update_blocks();
                }
                n.open += 1;
                Ok(freed)
            })
            .ok_or(VfsError::Stale)??;
        self.sub_allocated(freed);
        Ok(self.handles.insert(
            tok,
            ino,
            OpenFile {
                mode,
                append: flags.append(),
            },
        ))
    }

    /// `unlink` and `rmdir`: removes the entry `name` of `parent` if `what` allows its
    /// kind, re-checking under both inodes' locks that the name still points where it did.
    fn remove_entry<P>(&self, tok: &mut Locked<P>, parent: Ino, name: Name<'_>, what: Removal) -> VfsResult<()>
    where
        Map: LockAfter<P>,
        File: LockAfter<P>,
    {
        loop {
            let now = Timestamp::now();
            let slot = self.entry(tok, parent, name.as_os_str())?.ok_or(VfsError::NotFound)?;
            what.check_kind(slot.kind)?;
            let pcell = self.cell(tok, parent)?;
            let Some(ccell) = self.table.get(tok, slot.ino) else {
                continue;
            };
            let mut set = FileCell::write_many(tok, &[&pcell, &ccell]);
            let Some((p, c)) = set.pair_mut(parent, slot.ino) else {
                continue;
            };
            if p.dir()?.get(name.as_os_str()).map(|s| s.ino) != Some(slot.ino) {
                continue;
            }
            what.check(c)?;
            match what {
                Removal::NonDir => c.attr.nlink -= 1,
                Removal::EmptyDir => {
                    // The child's ".." no longer counts as a link of the parent.
                    p.attr.nlink -= 1;
                    c.attr.nlink = 0;
                }
            }
            p.dir_mut()?.remove(name.as_os_str());
            p.touch_data(now);
            c.attr.ctime = now;
            drop(set);
            self.reap(tok, slot.ino);
            return Ok(());
        }
    }

    fn rename_locked<P>(
        &self,
        tok: &mut Locked<P>,
        parent: Ino,
        name: Name<'_>,
        newparent: Ino,
        newname: Name<'_>,
        flags: RenameFlags,
    ) -> VfsResult<()>
    where
        Map: LockAfter<P>,
        File: LockAfter<P>,
    {
        loop {
            let now = Timestamp::now();
            let src = self.entry(tok, parent, name.as_os_str())?.ok_or(VfsError::NotFound)?;
            let dst = self.entry(tok, newparent, newname.as_os_str())?;
            // Linux's order of checks: NOREPLACE, EXCHANGE's missing target, the two
            // subtree traps, then "same inode: nothing to do", then types.
            match dst {
                Some(_) if flags.noreplace() => return Err(VfsError::Exists),
                None if flags.exchange() => return Err(VfsError::NotFound),
                _ => {}
            }
            if parent != newparent {
                if src.kind == FileType::Directory {
                    self.check_not_within(tok, newparent, src.ino)?;
                }
                if let Some(d) = dst.filter(|d| d.kind == FileType::Directory) {
                    // The target is an ancestor of the source: it cannot be empty.
                    self.check_not_within(tok, parent, d.ino)
                        .map_err(|e| if flags.exchange() { e } else { VfsError::NotEmpty })?;
                }
            }
            if dst.is_some_and(|d| d.ino == src.ino) {
                // Two names of one inode: POSIX says do nothing.
                return Ok(());
            }
            let pcell = self.cell(tok, parent)?;
            let npcell = self.cell(tok, newparent)?;
            let Some(scell) = self.table.get(tok, src.ino) else {
                continue;
            };
            let dcell = match dst {
                Some(d) => match self.table.get(tok, d.ino) {
                    Some(c) => Some(c),
                    None => continue,
                },
                None => None,
            };
            let mut cells: Vec<&FileCell<Node>> = vec![&pcell, &npcell, &scell];
            if let Some(c) = &dcell {
                cells.push(c);
            }
            let mut set = FileCell::write_many(tok, &cells);

            // Re-check under the locks what was looked up without them.
            let still = |set: &crate::meta::FileSet<'_, Node>, dir: Ino, n: &OsStr, want: Option<Ino>| {
                set.get(dir).and_then(|p| p.dir().ok()).map(|d| d.get(n).map(|s| s.ino)) == Some(want)
            };
            if !still(&set, parent, name.as_os_str(), Some(src.ino))
                || !still(&set, newparent, newname.as_os_str(), dst.map(|d| d.ino))
            {
                continue;
            }
            for dir in [parent, newparent] {
                if set.get(dir).is_some_and(|p| p.attr.nlink == 0) {
                    return Err(VfsError::NotFound);
                }
            }

            if flags.exchange() {
                let Some(d) = dst else { return Err(VfsError::NotFound) };
                exchange(&mut set, parent, name, newparent, newname, src, d, now);
                return Ok(());
            }

            let is_dir = src.kind == FileType::Directory;
            if let Some(d) = dst {
                // Replacing a name removes its old inode by unlink's or rmdir's rule.
                let victim = set.get(d.ino).ok_or(VfsError::Stale)?;
                let rule = if is_dir { Removal::EmptyDir } else { Removal::NonDir };
                rule.check(victim)?;
            }
            if let Some(p) = set.get_mut(parent) {
                p.dir_mut()?.remove(name.as_os_str());
                p.touch_data(now);
                if is_dir && parent != newparent {
                    p.attr.nlink -= 1;
                }
            }
            let mut victim_dead = None;
            if let Some(d) = dst {
                if let Some(v) = set.get_mut(d.ino) {
                    if d.kind == FileType::Directory {
                        v.attr.nlink = 0;
                    } else {
                        v.attr.nlink -= 1;
                    }
                    v.attr.ctime = now;
                    victim_dead = Some(d.ino);
                }
                if d.kind == FileType::Directory
                    && let Some(np) = set.get_mut(newparent)
                {
                    np.attr.nlink -= 1;
                }
            }
            if let Some(np) = set.get_mut(newparent) {
                np.dir_mut()?.insert(newname.to_os_string(), src.ino, src.kind);
                np.touch_data(now);
                if is_dir && parent != newparent {
                    np.attr.nlink += 1;
                }
            }
            if let Some(m) = set.get_mut(src.ino) {
                m.attr.ctime = now;
                if is_dir && let Ok(d) = m.dir_mut() {
                    d.parent = newparent;
                }
            }
            drop(set);
            if let Some(v) = victim_dead {
                self.reap(tok, v);
            }
            return Ok(());
        }
    }
}

/// `RENAME_EXCHANGE`: swaps two entries (and, across directories, their parents).
#[allow(clippy::too_many_arguments)]
fn exchange(
    set: &mut crate::meta::FileSet<'_, Node>,
    parent: Ino,
    name: Name<'_>,
    newparent: Ino,
    newname: Name<'_>,
    src: Slot,
    dst: Slot,
    now: Timestamp,
) {
    if let Some(p) = set.get_mut(parent)
        && let Ok(d) = p.dir_mut()
    {
        d.insert(name.to_os_string(), dst.ino, dst.kind);
        p.touch_data(now);
    }
    if let Some(np) = set.get_mut(newparent)
        && let Ok(d) = np.dir_mut()
    {
        d.insert(newname.to_os_string(), src.ino, src.kind);
        np.touch_data(now);
    }
    if parent != newparent {
        let src_dir = src.kind == FileType::Directory;
        let dst_dir = dst.kind == FileType::Directory;
        if src_dir != dst_dir {
            // One directory moves from parent to newparent, the other way nothing does.
            let (from, to) = if src_dir {
                (parent, newparent)
            } else {
                (newparent, parent)
            };
            if let Some(f) = set.get_mut(from) {
                f.attr.nlink -= 1;
            }
            if let Some(t) = set.get_mut(to) {
                t.attr.nlink += 1;
            }
        }
    }
    for (moved, new_parent) in [(src.ino, newparent), (dst.ino, parent)] {
        if let Some(m) = set.get_mut(moved) {
            m.attr.ctime = now;
            if let Ok(d) = m.dir_mut() {
                d.parent = new_parent;
            }
        }
    }
}

/// A new inode's attributes; `rdev` is kept as given ([`MknodSpec`] zeroed it for non-devices).
fn new_attr(ino: Ino, kind: FileType, perm: u16, uid: u32, gid: u32, rdev: u64, now: Timestamp) -> Attr {
    Attr {
        ino,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid,
        gid,
        size: if kind == FileType::Directory {
            u64::from(BLOCK)
        } else {
            0
        },
        blocks: 0,
        blksize: BLOCK,
        rdev,
        atime: now,
        mtime: now,
        ctime: now,
    }
}

impl VirtualFs for MemFs {
    fn source_id(&self) -> &str {
        &self.source_id
    }

    fn inode_stability(&self) -> InodeStability {
        InodeStability::Volatile
    }

    /// A memory tree changes only through these operations.
    fn change_source(&self) -> ChangeSource {
        ChangeSource::OnlyThroughMount
    }

    async fn lookup(&self, _ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.lookup_in(&mut tok, parent, name)
    }

    async fn getattr(&self, _ctx: &RequestCtx, ino: Ino, fh: Option<Fh>) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        if let Some(fh) = fh {
            self.handle(&mut tok, ino, fh)?;
        }
        self.attr_of(&mut tok, ino)
    }

    async fn setattr(&self, _ctx: &RequestCtx, ino: Ino, set: SetAttr) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        if let (Some(fh), Some(_)) = (set.fh, set.size) {
            self.handle(&mut tok, ino, fh)?;
        }
        let now = Timestamp::now();
        let (attr, freed) = self
            .table
            .update(&mut tok, ino, |n| {
                // Every check first, so a refused change changes nothing.
                if let Some(size) = set.size {
                    match n.attr.kind {
                        FileType::Regular => {}
                        FileType::Directory => return Err(VfsError::IsDir),
                        _ => return Err(VfsError::Invalid("truncate of a non-regular file")),
                    }
                    if size > MAX_FILE_SIZE {
                        return Err(VfsError::TooBig);
                    }
                }
                let mut freed = 0;
                if let Some(size) = set.size {
                    if let Content::File(d) = &mut n.content
                        && size < n.attr.size
                    {
                        freed = d.truncate(size);
                    }
                    n.attr.size = size;
                    n.touch_data(now);
                    n.update_blocks();
                }
                if set.uid.is_some() || set.gid.is_some() {
                    if let Some(uid) = set.uid {
                        n.attr.uid = uid;
                    }
                    if let Some(gid) = set.gid {
                        n.attr.gid = gid;
                    }
                    if n.attr.kind != FileType::Directory {
                        n.attr.perm &= !0o4000;
                        if n.attr.perm & 0o010 != 0 {
                            n.attr.perm &= !0o2000;
                        }
                    }
                }
                if let Some(mode) = set.mode {
                    n.attr.perm = (mode & 0o7777) as u16;
                }
                if let Some(t) = set.atime {
                    n.attr.atime = t.resolve(now);
                }
                if let Some(t) = set.mtime {
                    n.attr.mtime = t.resolve(now);
                }
                n.attr.ctime = now;
                Ok((n.attr, freed))
            })
            .ok_or(VfsError::Stale)??;
        self.sub_allocated(freed);
        Ok(attr)
    }

    async fn readlink(&self, _ctx: &RequestCtx, ino: Ino) -> VfsResult<OsString> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.table
            .read(&mut tok, ino, |n| match &n.content {
                Content::Symlink(t) => Ok(t.clone()),
                _ => Err(VfsError::Invalid("not a symlink")),
            })
            .ok_or(VfsError::Stale)?
    }

    async fn mknod(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
        rdev: u64,
    ) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let MknodSpec { kind, perm, rdev } = MknodSpec::new(mode, umask, rdev)?;
        let content = match kind {
            FileType::Regular => Content::File(FileData::default()),
            _ => Content::Special,
        };
        self.make_node(
            &mut tok,
            ctx,
            parent,
            name,
            NewNode {
                kind,
                perm,
                rdev,
                content,
            },
        )
    }

    async fn mkdir(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, mode: u32, umask: u32) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let content = Content::Dir(DirData::new(parent));
        self.make_node(
            &mut tok,
            ctx,
            parent,
            name,
            NewNode {
                kind: FileType::Directory,
                perm: mode & !umask,
                rdev: 0,
                content,
            },
        )
    }

    async fn unlink(&self, _ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.remove_entry(&mut tok, parent, name, Removal::NonDir)
    }

    async fn rmdir(&self, _ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.remove_entry(&mut tok, parent, name, Removal::EmptyDir)
    }

    async fn symlink(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, target: &OsStr) -> VfsResult<Attr> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        check_symlink_target(target)?;
        let len = target.len() as u64;
        let content = Content::Symlink(target.to_os_string());
        let mut attr = self.make_node(
            &mut tok,
            ctx,
            parent,
            name,
            NewNode {
                kind: FileType::Symlink,
                perm: 0o777,
                rdev: 0,
                content,
            },
        )?;
        self.table.update(&mut tok, attr.ino, |n| {
            n.attr.size = len;
            attr = n.attr;
        });
        Ok(attr)
    }

    async fn rename(
        &self,
        _ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        newparent: Ino,
        newname: Name<'_>,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        let flags = flags.validate()?;
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        if parent == newparent {
            self.rename_locked(&mut tok, parent, name, newparent, newname, flags)
        } else {
            // Cross-directory renames are serialized so that the subtree check stays true
            // until the move is done (as Linux's s_vfs_rename_mutex does).
            let mut ns = self.renames.lock(&mut tok);
            self.rename_locked(ns.token(), parent, name, newparent, newname, flags)
        }
    }

    async fn link(&self, _ctx: &RequestCtx, ino: Ino, newparent: Ino, newname: Name<'_>) -> VfsResult<Attr> {
        let now = Timestamp::now();
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let ncell = self.cell(&mut tok, ino)?;
        let pcell = self.cell(&mut tok, newparent)?;
        let mut set = FileCell::write_many(&mut tok, &[&ncell, &pcell]);
        if ino == newparent {
            return Err(VfsError::NotPermitted);
        }
        let Some((n, p)) = set.pair_mut(ino, newparent) else {
            return Err(VfsError::Stale);
        };
        if n.attr.kind == FileType::Directory {
            return Err(VfsError::NotPermitted);
        }
        if n.attr.nlink == 0 {
            return Err(VfsError::NotFound);
        }
        if n.attr.nlink >= LINK_MAX {
            return Err(VfsError::TooManyLinks);
        }
        let d = p.live_dir_mut()?;
        if d.get(newname.as_os_str()).is_some() {
            return Err(VfsError::Exists);
        }
        d.insert(newname.to_os_string(), ino, n.attr.kind);
        p.touch_data(now);
        n.attr.nlink += 1;
        n.attr.ctime = now;
        Ok(n.attr)
    }

    async fn open(&self, _ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.open_node(&mut tok, ino, flags)
    }

    async fn create(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> VfsResult<(Attr, Fh)> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        loop {
            let content = Content::File(FileData::default());
            let spec = NewNode {
                kind: FileType::Regular,
                perm: mode & !umask,
                rdev: 0,
                content,
            };
            match self.make_node(&mut tok, ctx, parent, name, spec) {
                Ok(attr) => {
                    let fh = self.open_node(&mut tok, attr.ino, flags)?;
                    return Ok((attr, fh));
                }
                Err(VfsError::Exists) if !flags.exclusive() => {
                    // open(2) without O_EXCL opens what is there.
                    let attr = match self.lookup_in(&mut tok, parent, name) {
                        Ok(a) => a,
                        Err(VfsError::NotFound) => continue,
                        Err(e) => return Err(e),
                    };
                    if attr.kind == FileType::Directory {
                        return Err(VfsError::IsDir);
                    }
                    let fh = match self.open_node(&mut tok, attr.ino, flags) {
                        Ok(fh) => fh,
                        Err(VfsError::Stale) => continue,
                        Err(e) => return Err(e),
                    };
                    let attr = self.attr_of(&mut tok, attr.ino)?;
                    return Ok((attr, fh));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn read(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let of = self.handle(&mut tok, ino, fh)?;
        if !of.mode.can_read() {
            return Err(VfsError::BadHandle);
        }
        self.table
            .read(&mut tok, ino, |n| match &n.content {
                Content::File(d) => {
                    if offset >= n.attr.size {
                        return Ok(Bytes::new());
                    }
                    let len = (n.attr.size - offset).min(u64::from(size)) as usize;
                    Ok(d.read(offset, len))
                }
                Content::Dir(_) => Err(VfsError::IsDir),
                _ => Err(VfsError::Invalid("read of a special file")),
            })
            .ok_or(VfsError::Stale)?
    }

    async fn write(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> VfsResult<u32> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let of = self.handle(&mut tok, ino, fh)?;
        if !of.mode.can_write() {
            return Err(VfsError::BadHandle);
        }
        let len = u32::try_from(data.len()).map_err(|_| VfsError::Invalid("write larger than 4 GiB"))?;
        let now = Timestamp::now();
        let grown = self
            .table
            .update(&mut tok, ino, |n| {
                let offset = if of.append { n.attr.size } else { offset };
                let Content::File(d) = &mut n.content else {
                    return Err(VfsError::Invalid("write to a non-regular file"));
                };
                let end = offset
                    .checked_add(data.len() as u64)
                    .filter(|e| *e <= MAX_FILE_SIZE)
                    .ok_or(VfsError::TooBig)?;
                if data.is_empty() {
                    return Ok(0);
                }
                let grown = d.write(offset, data);
                n.attr.size = n.attr.size.max(end);
                n.touch_data(now);
                n.update_blocks();
                if ctx.uid != 0 && n.attr.perm & 0o6000 != 0 {
                    // A write by someone other than root clears setuid, and setgid when
                    // group-exec is set (Linux `file_remove_privs`).
                    n.attr.perm &= !0o4000;
                    if n.attr.perm & 0o010 != 0 {
                        n.attr.perm &= !0o2000;
                    }
                }
                Ok(grown)
            })
            .ok_or(VfsError::Stale)??;
        self.add_allocated(grown);
        Ok(len)
    }

    async fn fsync(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh, _datasync: bool) -> VfsResult<()> {
        // Memory is as durable as MemFs gets: every completed write is already visible.
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.handle(&mut tok, ino, fh).map(|_| ())
    }

    async fn release(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.handles.remove(&mut tok, ino, fh)?;
        let dead = self.table.update(&mut tok, ino, |n| {
            n.open = n.open.saturating_sub(1);
            n.is_dead()
        });
        if dead == Some(true) {
            self.reap(&mut tok, ino);
        }
        Ok(())
    }

    async fn readdir(&self, _ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let max = max.max(1);
        self.table
            .read(&mut tok, ino, |n| {
                let d = n.dir()?;
                let mut out = Vec::with_capacity(max.min(d.entries.len() + 2));
                if cookie == 0 {
                    out.push(DirEntry {
                        ino,
                        kind: FileType::Directory,
                        name: ".".into(),
                        cookie: 1,
                    });
                }
                if cookie <= 1 && out.len() < max {
                    out.push(DirEntry {
                        ino: d.parent,
                        kind: FileType::Directory,
                        name: "..".into(),
                        cookie: 2,
                    });
                }
                let from = cookie.saturating_add(1).max(node::FIRST_SEQ);
                for (&seq, name) in d.order.range(from..) {
                    if out.len() >= max {
                        break;
                    }
                    if let Some(slot) = d.entries.get(name) {
                        out.push(DirEntry {
                            ino: slot.ino,
                            kind: slot.kind,
                            name: name.clone(),
                            cookie: seq,
                        });
                    }
                }
                Ok(out)
            })
            .ok_or(VfsError::Stale)?
    }

    async fn statfs(&self, _ctx: &RequestCtx, _ino: Ino) -> VfsResult<StatFs> {
        let blocks = REPORTED_CAPACITY / u64::from(BLOCK);
        let used = self.allocated.load(Ordering::Relaxed).div_ceil(u64::from(BLOCK));
        let files = u64::from(u32::MAX);
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let inodes = self.table.len(&mut tok) as u64;
        Ok(StatFs {
            blocks,
            bfree: blocks.saturating_sub(used),
            bavail: blocks.saturating_sub(used),
            files,
            ffree: files.saturating_sub(inodes),
            bsize: BLOCK,
            namelen: crate::types::NAME_MAX as u32,
            frsize: BLOCK,
        })
    }

    async fn getxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<Bytes> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        check_xattr(name, None)?;
        self.table
            .read(&mut tok, ino, |n| {
                xattr_namespace_check(n.attr.kind, name, ctx, false)?;
                n.xattrs.get(name).cloned().ok_or(VfsError::NoAttr)
            })
            .ok_or(VfsError::Stale)?
    }

    async fn setxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr, value: &[u8], how: XattrSet) -> VfsResult<()> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        check_xattr(name, Some(value))?;
        let now = Timestamp::now();
        self.table
            .update(&mut tok, ino, |n| {
                xattr_namespace_check(n.attr.kind, name, ctx, true)?;
                let exists = n.xattrs.contains_key(name);
                match how {
                    XattrSet::Create if exists => return Err(VfsError::Exists),
                    XattrSet::Replace if !exists => return Err(VfsError::NoAttr),
                    _ => {}
                }
                n.xattrs.insert(name.to_os_string(), Bytes::copy_from_slice(value));
                n.attr.ctime = now;
                Ok(())
            })
            .ok_or(VfsError::Stale)?
    }

    async fn listxattr(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<Vec<OsString>> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.table
            .read(&mut tok, ino, |n| {
                n.xattrs
                    .keys()
                    .filter(|k| xattr_namespace_check(n.attr.kind, k, ctx, false).is_ok())
                    .cloned()
                    .collect()
            })
            .ok_or(VfsError::Stale)
    }

    async fn removexattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<()> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        check_xattr(name, None)?;
        let now = Timestamp::now();
        self.table
            .update(&mut tok, ino, |n| {
                xattr_namespace_check(n.attr.kind, name, ctx, true)?;
                n.xattrs.remove(name).ok_or(VfsError::NoAttr)?;
                n.attr.ctime = now;
                Ok(())
            })
            .ok_or(VfsError::Stale)?
    }

    async fn fallocate(
        &self,
        _ctx: &RequestCtx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> VfsResult<()> {
        // SAFETY: operation entry: no lock is held.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let of = self.handle(&mut tok, ino, fh)?;
        if !of.mode.can_write() {
            return Err(VfsError::BadHandle);
        }
        if length == 0 {
            return Err(VfsError::Invalid("fallocate of zero length"));
        }
        let end = offset
            .checked_add(length)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or(VfsError::TooBig)?;
        let now = Timestamp::now();
        let freed = self
            .table
            .update(&mut tok, ino, |n| {
                let Content::File(d) = &mut n.content else {
                    return Err(VfsError::Unsupported);
                };
                match mode {
                    0 => {
                        if end > n.attr.size {
                            n.attr.size = end;
                            n.touch_data(now);
                        }
                        Ok(0)
                    }
                    libc::FALLOC_FL_KEEP_SIZE => Ok(0),
                    m if m == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE => {
                        let freed = d.zero_range(offset, length);
                        n.touch_data(now);
                        n.update_blocks();
                        Ok(freed)
                    }
                    _ => Err(VfsError::Unsupported),
                }
            })
            .ok_or(VfsError::Stale)??;
        self.sub_allocated(freed);
        Ok(())
    }
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests;
