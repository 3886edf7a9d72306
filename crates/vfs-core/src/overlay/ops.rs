//! The [`VirtualFs`] implementation of [`Overlay`]: each operation in terms of the
//! layers.
//!
//! Invariant: an operation that changes the namespace holds the namespace lock
//! exclusively for its whole course (lookups and listings hold it shared), and never
//! takes it twice; an operation that changes file data or size takes an [`OpBarrier`]
//! write ticket before anything else, and `read`/`getattr` wait for the writes issued
//! before them. Nothing here calls a mutating operation of a lower layer.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use bytes::Bytes;

use super::handles::Handle;
use super::names::Found;
use super::node::{Node, NodeState, join};
use super::{CTX, Layer, META_DIR, Overlay, ovl_ino};
use crate::barrier::WriteTicket;
use crate::error::{VfsError, VfsResult};
use crate::lock_order::{Locked, Unlocked};
use crate::types::{
    Attr, DirEntry, DirEntryPlus, Fh, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs,
    XattrSet,
};
use crate::vfs::{ChangeSource, InodeStability, VirtualFs, access_mask, check_access};

fn is_meta(parent: Ino, name: Name<'_>) -> bool {
    parent == Ino::ROOT && name.as_bytes() == META_DIR.as_bytes()
}

impl<U: VirtualFs, L: VirtualFs> Overlay<U, L> {
    /// Attributes of a node from the layer that holds it.
    async fn attr_of(&self, node: &Node) -> VfsResult<Attr> {
        let st = node.snapshot();
        let mut a = match (st.upper, st.lower) {
            (Some(u), _) => self.upper.getattr(&CTX, u, st.upper_fh).await?,
            (None, Some((layer, lino))) => self.lowers[layer].getattr(&CTX, lino, st.lower_fh).await?,
            (None, None) => return Err(VfsError::Stale),
        };
        a.ino = node.ino;
        if node.ino == Ino::ROOT {
            // The hidden directory is not a subdirectory anyone can see.
            a.nlink = a.nlink.saturating_sub(1);
        }
        Ok(a)
    }

    /// A node for a directory found by `resolve`, not registered (to list it).
    fn probe(found: &Found) -> Node {
        let st = NodeState {
            upper: found.upper,
            lower: found.lower,
            lower_dirs: found.lower_dirs.clone(),
            ..NodeState::default()
        };
        Arc::into_inner(Node::new(found.ino, found.kind, st)).unwrap_or_else(unreachable_probe)
    }

    /// Checks that `ctx` may change entries of directory `p`.
    async fn check_dir_write(&self, ctx: &RequestCtx, p: &Node) -> VfsResult<()> {
        if ctx.uid == 0 {
            return Ok(());
        }
        let a = self.attr_of(p).await?;
        check_access(&a, ctx, access_mask::WRITE | access_mask::EXEC)
    }

    /// Registers a new upper object `a` created as `p/name`.
    async fn new_entry(&self, p: &Node, name: Name<'_>, a: Attr) -> VfsResult<(Arc<Node>, Attr)> {
        if self.records.lock().contains_key(&a.ino) {
            // A record left by an earlier object with this (reused) upper inode number.
            self.drop_record(a.ino).await?;
        }
        let ino = ovl_ino(Layer::Upper, a.ino)?;
        let found = Found {
            ino,
            kind: a.kind,
            upper: Some(a.ino),
            lower: None,
            lower_dirs: Vec::new(),
            named_upper: true,
            attr: Attr { ino, ..a },
        };
        let node = self.register(p, name, &found, true);
        Ok((node, found.attr))
    }

    /// Common start of every operation creating `p/name`: the name must be free; the
    /// parent goes to the upper; a whiteout there is removed (returns whether there was one).
    async fn prepare_new(&self, ctx: &RequestCtx, p: &Arc<Node>, name: Name<'_>) -> VfsResult<(Ino, bool)> {
        if is_meta(p.ino, name) {
            return Err(VfsError::NotPermitted);
        }
        if self.resolve(p, name).await?.is_some() {
            return Err(VfsError::Exists);
        }
        self.check_dir_write(ctx, p).await?;
        let pu = self.copy_up(p, false).await?;
        let wh = self.take_whiteout(pu, name).await?;
        Ok((pu, wh))
    }

    /// The upper object named `name` in `pu` lost a name: its record goes with its last one.
    async fn after_unname(&self, u: Ino) -> VfsResult<()> {
        let fh = self
            .nodes
            .lock()
            .values()
            .find(|n| n.st.lock().upper == Some(u))
            .and_then(|n| n.st.lock().upper_fh);
        match self.upper.getattr(&CTX, u, fh).await {
            Ok(a) if a.nlink > 0 && a.kind != FileType::Directory => Ok(()),
            _ => self.drop_record(u).await,
        }
    }

    async fn open_node(
        &self,
        tok: &mut Locked<Unlocked>,
        ctx: &RequestCtx,
        node: &Arc<Node>,
        flags: OpenFlags,
        ns_held: bool,
    ) -> VfsResult<Fh> {
        let access = flags.access();
        match node.kind {
            FileType::Directory if access.can_write() => return Err(VfsError::IsDir),
            // As `O_NOFOLLOW` answers: a symlink's own inode is never opened.
            FileType::Symlink => return Err(VfsError::Loop),
            _ => {}
        }
        if ctx.uid != 0 {
            let a = self.attr_of(node).await?;
            let mut mask = 0;
            if access.can_read() {
                mask |= access_mask::READ;
            }
            if access.can_write() {
                mask |= access_mask::WRITE;
            }
            check_access(&a, ctx, mask)?;
        }
        if flags.truncate() && access.can_write() && node.kind == FileType::Regular {
            let ticket = self.barrier.begin_write(node.ino);
            ticket.wait_turn_async().await;
            match node.upper() {
                None if ns_held => {
                    self.copy_up(node, true).await?;
                }
                None => {
                    let _ns = self.ns.write().await;
                    self.copy_up(node, true).await?;
                }
                Some(u) => {
                    let _d = node.data.lock().await;
                    self.truncate_map(node, u, 0).await?;
                    let fh = node.st.lock().upper_fh;
                    self.upper.setattr(&CTX, u, SetAttr { fh, ..SetAttr::size(0) }).await?;
                }
            }
            ticket.complete();
        }
        if node.kind == FileType::Regular && node.upper().is_some() {
            // Held while any overlay handle is open: the file stays reachable after an
            // unlink, as an open descriptor keeps it.
            self.upper_fh(node).await?;
        }
        node.st.lock().opens += 1;
        Ok(self.handles.insert(
            tok,
            node.ino,
            Handle {
                access,
                append: flags.append(),
            },
        ))
    }

    /// Drops a node nobody refers to any more.
    async fn maybe_drop(&self, node: &Arc<Node>) {
        let idle = {
            let st = node.st.lock();
            st.lookups == 0 && st.opens == 0
        };
        if !idle || node.ino == Ino::ROOT {
            return;
        }
        {
            let mut nodes = self.nodes.lock();
            if nodes.get(&node.ino).is_some_and(|n| Arc::ptr_eq(n, node)) {
                nodes.remove(&node.ino);
            }
        }
        self.release_fhs(node).await;
        self.barrier.forget(node.ino);
    }

    /// The common start of `write` and `fallocate`: checks that `fh` is a writable handle of
    /// `ino`, takes the inode's write turn (so data changes of one inode apply in request
    /// order) and copies the file up if it has no upper yet. Returns the handle, the turn (to
    /// complete after the change), the node and the upper inode.
    async fn begin_data_write(&self, ino: Ino, fh: Fh) -> VfsResult<(Handle, WriteTicket<'_>, Arc<Node>, Ino)> {
        // SAFETY: an entry point of the overlay: it holds no lock of the lock order.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let h = self.handles.get(&mut tok, ino, fh)?;
        if !h.access.can_write() {
            return Err(VfsError::BadHandle);
        }
        let ticket = self.barrier.begin_write(ino);
        ticket.wait_turn_async().await;
        let node = self.node(ino)?;
        let u = match node.upper() {
            Some(u) => u,
            None => {
                let _ns = self.ns.write().await;
                self.copy_up(&node, false).await?
            }
        };
        Ok((h, ticket, node, u))
    }

    async fn list(&self, node: &Node, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        if node.kind != FileType::Directory {
            return Err(VfsError::NotDir);
        }
        let parent = node.st.lock().parent;
        let mut all = vec![
            DirEntry {
                ino: node.ino,
                kind: FileType::Directory,
                name: ".".into(),
                cookie: 1,
            },
            DirEntry {
                ino: parent,
                kind: FileType::Directory,
                name: "..".into(),
                cookie: 2,
            },
        ];
        // Cookie 1 resumes after `.`, 2 after `..` (a page of one entry must move on).
        all.retain(|e| e.cookie > cookie);
        all.extend(
            self.merged_entries(node)
                .await?
                .into_iter()
                .filter(|e| e.cookie > cookie),
        );
        all.truncate(max);
        Ok(all)
    }

    /// Whether `anc` is `ino` or one of its ancestors.
    fn is_ancestor(&self, anc: Ino, mut ino: Ino) -> VfsResult<bool> {
        for _ in 0..100_000 {
            if ino == anc {
                return Ok(true);
            }
            if ino == Ino::ROOT {
                return Ok(false);
            }
            ino = self.node(ino)?.st.lock().parent;
        }
        Err(VfsError::Loop)
    }
}

#[cold]
fn unreachable_probe() -> Node {
    panic!("overlay: a fresh node had another owner")
}

impl<U: VirtualFs, L: VirtualFs> VirtualFs for Overlay<U, L> {
    fn source_id(&self) -> &str {
        &self.source
    }

    fn inode_stability(&self) -> InodeStability {
        self.inode_stability_of_layers()
    }

    /// Only through the mount if every layer is; otherwise no promise: the overlay's
    /// inode numbers are its own, so a layer's reports could not be passed on as they are.
    fn change_source(&self) -> ChangeSource {
        let quiet = self.upper.change_source() == ChangeSource::OnlyThroughMount
            && self
                .lowers
                .iter()
                .all(|l| l.change_source() == ChangeSource::OnlyThroughMount);
        if quiet {
            ChangeSource::OnlyThroughMount
        } else {
            ChangeSource::Unknown
        }
    }

    async fn lookup(&self, _ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
        let _ns = self.ns.read().await;
        let p = self.node(parent)?;
        let found = self.resolve(&p, name).await?.ok_or(VfsError::NotFound)?;
        self.register(&p, name, &found, true);
        Ok(found.attr)
    }

    async fn forget(&self, ino: Ino, nlookup: u64) {
        let Ok(node) = self.node(ino) else { return };
        {
            let mut st = node.st.lock();
            st.lookups = st.lookups.saturating_sub(nlookup);
        }
        self.maybe_drop(&node).await;
    }

    async fn getattr(&self, _ctx: &RequestCtx, ino: Ino, _fh: Option<Fh>) -> VfsResult<Attr> {
        self.barrier.read_async(ino).await;
        let node = self.node(ino)?;
        self.attr_of(&node).await
    }

    async fn setattr(&self, ctx: &RequestCtx, ino: Ino, set: SetAttr) -> VfsResult<Attr> {
        // SAFETY: an entry point of the overlay: it holds no lock of the lock order.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let node = self.node(ino)?;
        let ticket = self.barrier.begin_write(ino);
        ticket.wait_turn_async().await;
        if set.size.is_some() && node.kind == FileType::Directory {
            return Err(VfsError::IsDir);
        }
        let u = match node.upper() {
            Some(u) => u,
            None => {
                let _ns = self.ns.write().await;
                self.copy_up(&node, set.size == Some(0)).await?
            }
        };
        let _d = node.data.lock().await;
        if let Some(size) = set.size {
            self.truncate_map(&node, u, size).await?;
        }
        let fh = match set.fh {
            Some(fh) => {
                self.handles.get(&mut tok, ino, fh)?;
                node.st.lock().upper_fh
            }
            None => None,
        };
        let mut a = self.upper.setattr(ctx, u, SetAttr { fh, ..set }).await?;
        drop(_d);
        ticket.complete();
        a.ino = ino;
        if ino == Ino::ROOT {
            a.nlink = a.nlink.saturating_sub(1);
        }
        Ok(a)
    }

    async fn readlink(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<OsString> {
        let st = self.node(ino)?.snapshot();
        match (st.upper, st.lower) {
            (Some(u), _) => self.upper.readlink(ctx, u).await,
            (None, Some((layer, lino))) => self.lowers[layer].readlink(ctx, lino).await,
            (None, None) => Err(VfsError::Stale),
        }
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
        if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            // Device 0/0 is how the overlay writes a whiteout.
            return Err(VfsError::NotPermitted);
        }
        let _ns = self.ns.write().await;
        let p = self.node(parent)?;
        let (pu, _) = self.prepare_new(ctx, &p, name).await?;
        let a = self.upper.mknod(ctx, pu, name, mode, umask, rdev).await?;
        Ok(self.new_entry(&p, name, a).await?.1)
    }

    async fn mkdir(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, mode: u32, umask: u32) -> VfsResult<Attr> {
        let _ns = self.ns.write().await;
        let p = self.node(parent)?;
        let (pu, whiteout) = self.prepare_new(ctx, &p, name).await?;
        let a = self.upper.mkdir(ctx, pu, name, mode, umask).await?;
        let (_, attr) = self.new_entry(&p, name, a).await?;
        if whiteout {
            // A directory where a lower one was removed: the old contents stay hidden.
            self.set_opaque(a.ino).await?;
        }
        Ok(attr)
    }

    async fn unlink(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        let _ns = self.ns.write().await;
        let p = self.node(parent)?;
        if is_meta(parent, name) {
            return Err(VfsError::NotFound);
        }
        let f = self.resolve(&p, name).await?.ok_or(VfsError::NotFound)?;
        if f.kind == FileType::Directory {
            return Err(VfsError::IsDir);
        }
        self.check_dir_write(ctx, &p).await?;
        let in_lower = self.lower_has(&p.snapshot(), name).await?;
        if f.named_upper
            && let (Some(pu), Some(u)) = (p.upper(), f.upper)
        {
            self.upper.unlink(ctx, pu, name).await?;
            self.after_unname(u).await?;
        }
        if in_lower {
            let pu = self.copy_up(&p, false).await?;
            self.make_whiteout(pu, name).await?;
        }
        Ok(())
    }

    async fn rmdir(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        let _ns = self.ns.write().await;
        let p = self.node(parent)?;
        if is_meta(parent, name) {
            return Err(VfsError::NotFound);
        }
        let f = self.resolve(&p, name).await?.ok_or(VfsError::NotFound)?;
        if f.kind != FileType::Directory {
            return Err(VfsError::NotDir);
        }
        if !self.merged_entries(&Self::probe(&f)).await?.is_empty() {
            return Err(VfsError::NotEmpty);
        }
        self.check_dir_write(ctx, &p).await?;
        let in_lower = self.lower_has(&p.snapshot(), name).await?;
        if f.named_upper
            && let (Some(pu), Some(u)) = (p.upper(), f.upper)
        {
            self.purge_whiteouts(u).await?;
            self.upper.rmdir(ctx, pu, name).await?;
            self.drop_record(u).await?;
        }
        if in_lower {
            let pu = self.copy_up(&p, false).await?;
            self.make_whiteout(pu, name).await?;
        }
        Ok(())
    }

    async fn symlink(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, target: &OsStr) -> VfsResult<Attr> {
        let _ns = self.ns.write().await;
        let p = self.node(parent)?;
        let (pu, _) = self.prepare_new(ctx, &p, name).await?;
        let a = self.upper.symlink(ctx, pu, name, target).await?;
        Ok(self.new_entry(&p, name, a).await?.1)
    }

    async fn rename(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        newparent: Ino,
        newname: Name<'_>,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        let flags = flags.validate()?;
        let _ns = self.ns.write().await;
        let p = self.node(parent)?;
        let q = self.node(newparent)?;
        if is_meta(parent, name) {
            return Err(VfsError::NotFound);
        }
        if is_meta(newparent, newname) {
            return Err(VfsError::NotPermitted);
        }
        let s = self.resolve(&p, name).await?.ok_or(VfsError::NotFound)?;
        let d = self.resolve(&q, newname).await?;
        if flags.exchange() && d.is_none() {
            return Err(VfsError::NotFound);
        }
        if flags.noreplace() && d.is_some() {
            return Err(VfsError::Exists);
        }
        if s.kind == FileType::Directory && self.is_ancestor(s.ino, newparent)? {
            return Err(VfsError::Invalid("rename of a directory into itself"));
        }
        if (parent, name) == (newparent, newname) {
            return Ok(());
        }
        if let Some(d) = &d {
            if flags.exchange() && d.kind == FileType::Directory && self.is_ancestor(d.ino, parent)? {
                return Err(VfsError::Invalid("exchange of a directory with its own subtree"));
            }
            if !flags.exchange() {
                if d.ino == s.ino {
                    return Ok(());
                }
                if self.is_ancestor(d.ino, parent)? {
                    return Err(VfsError::NotEmpty);
                }
                match (s.kind == FileType::Directory, d.kind == FileType::Directory) {
                    (true, false) => return Err(VfsError::NotDir),
                    (false, true) => return Err(VfsError::IsDir),
                    (true, true) => {
                        if !self.merged_entries(&Self::probe(d)).await?.is_empty() {
                            return Err(VfsError::NotEmpty);
                        }
                    }
                    (false, false) => {}
                }
            }
        }
        let has_lower_dirs = |f: &Found| f.kind == FileType::Directory && !f.lower_dirs.is_empty();
        if has_lower_dirs(&s) || (flags.exchange() && d.as_ref().is_some_and(has_lower_dirs)) {
            // A directory with lower contents cannot move (overlayfs without redirect_dir):
            // `mv` falls back to copying.
            return Err(VfsError::CrossDevice);
        }
        self.check_dir_write(ctx, &p).await?;
        self.check_dir_write(ctx, &q).await?;
        let snode = self.register(&p, name, &s, false);
        let pu = self.copy_up(&p, false).await?;
        let su = self.copy_up(&snode, false).await?;
        let qu = self.copy_up(&q, false).await?;
        let src_in_lower = self.lower_has(&p.snapshot(), name).await?;
        let dst_in_lower = self.lower_has(&q.snapshot(), newname).await?;
        let mut dnode = None;
        match &d {
            Some(d) if flags.exchange() => {
                let n = self.register(&q, newname, d, false);
                let du = self.copy_up(&n, false).await?;
                if d.kind == FileType::Directory && src_in_lower {
                    self.set_opaque(du).await?;
                }
                dnode = Some(n);
            }
            Some(d) if d.named_upper => {
                if d.kind == FileType::Directory
                    && let Some(du) = d.upper
                {
                    self.purge_whiteouts(du).await?;
                }
            }
            Some(_) => {}
            None => {
                self.take_whiteout(qu, newname).await?;
            }
        }
        if s.kind == FileType::Directory && dst_in_lower {
            self.set_opaque(su).await?;
        }
        self.upper.rename(ctx, pu, name, qu, newname, flags).await?;
        if !flags.exchange() {
            if src_in_lower {
                self.make_whiteout(pu, name).await?;
            }
            if let Some(d) = &d
                && d.named_upper
                && let Some(du) = d.upper
            {
                self.after_unname(du).await?;
            }
        }
        let ppath = p.st.lock().path.clone();
        let qpath = q.st.lock().path.clone();
        {
            let mut st = snode.st.lock();
            st.parent = newparent;
            st.name = newname.as_bytes().to_vec();
            st.path = join(&qpath, newname.as_bytes());
        }
        if let Some(n) = dnode {
            let mut st = n.st.lock();
            st.parent = parent;
            st.name = name.as_bytes().to_vec();
            st.path = join(&ppath, name.as_bytes());
        }
        Ok(())
    }

    async fn link(&self, ctx: &RequestCtx, ino: Ino, newparent: Ino, newname: Name<'_>) -> VfsResult<Attr> {
        let _ns = self.ns.write().await;
        let node = self.node(ino)?;
        if node.kind == FileType::Directory {
            return Err(VfsError::NotPermitted);
        }
        let q = self.node(newparent)?;
        let u = self.copy_up(&node, false).await?;
        let (qu, _) = self.prepare_new(ctx, &q, newname).await?;
        let mut a = self.upper.link(ctx, u, qu, newname).await?;
        a.ino = ino;
        let found = Found {
            ino,
            kind: node.kind,
            upper: Some(u),
            lower: None,
            lower_dirs: Vec::new(),
            named_upper: true,
            attr: a,
        };
        self.register(&q, newname, &found, true);
        Ok(a)
    }

    async fn open(&self, ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        // SAFETY: an entry point of the overlay: it holds no lock of the lock order.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let node = self.node(ino)?;
        self.open_node(&mut tok, ctx, &node, flags, false).await
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
        // SAFETY: an entry point of the overlay: it holds no lock of the lock order.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let _ns = self.ns.write().await;
        let p = self.node(parent)?;
        if let Some(found) = self.resolve(&p, name).await? {
            if flags.exclusive() {
                return Err(VfsError::Exists);
            }
            if found.kind == FileType::Directory {
                return Err(VfsError::IsDir);
            }
            let node = self.register(&p, name, &found, true);
            let fh = self.open_node(&mut tok, ctx, &node, flags, true).await?;
            return Ok((self.attr_of(&node).await?, fh));
        }
        let (pu, _) = self.prepare_new(ctx, &p, name).await?;
        let (a, ufh) = self
            .upper
            .create(ctx, pu, name, mode, umask, OpenFlags::RDWR.with(libc::O_EXCL))
            .await?;
        let (node, attr) = self.new_entry(&p, name, a).await?;
        let had = {
            let mut st = node.st.lock();
            let had = st.upper_fh.is_some();
            if !had {
                st.upper_fh = Some(ufh);
            }
            had
        };
        if had {
            self.upper.release(&CTX, a.ino, ufh).await?;
        }
        node.st.lock().opens += 1;
        let fh = self.handles.insert(
            &mut tok,
            node.ino,
            Handle {
                access: flags.access(),
                append: flags.append(),
            },
        );
        Ok((attr, fh))
    }

    async fn read(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        // SAFETY: an entry point of the overlay: it holds no lock of the lock order.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        let h = self.handles.get(&mut tok, ino, fh)?;
        if !h.access.can_read() {
            return Err(VfsError::BadHandle);
        }
        self.barrier.read_async(ino).await;
        let node = self.node(ino)?;
        if node.kind == FileType::Directory {
            return Err(VfsError::IsDir);
        }
        if self.opts.materialize_on_read && node.upper().is_none() {
            // Materialize-on-read: the file is copied up (sparse) so its blocks can be.
            let _ns = self.ns.write().await;
            self.copy_up(&node, false).await?;
        }
        self.read_data(&node, offset, size).await
    }

    async fn write(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let (h, ticket, node, u) = self.begin_data_write(ino, fh).await?;
        let offset = if h.append {
            let (_, ufh) = self.upper_fh(&node).await?;
            self.upper.getattr(&CTX, u, Some(ufh)).await?.size
        } else {
            offset
        };
        let n = self.write_data(&node, u, offset, data).await?;
        ticket.complete();
        Ok(n)
    }

    async fn fsync(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh, datasync: bool) -> VfsResult<()> {
        // SAFETY: an entry point of the overlay: it holds no lock of the lock order.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.handles.get(&mut tok, ino, fh)?;
        let node = self.node(ino)?;
        let Some(u) = node.upper() else {
            // Nothing of this file is in the upper: nothing to make durable.
            return Ok(());
        };
        let (_, ufh) = self.upper_fh(&node).await?;
        self.upper.fsync(&CTX, u, ufh, datasync).await?;
        self.sync_record(u).await
    }

    async fn release(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        // SAFETY: an entry point of the overlay: it holds no lock of the lock order.
        let mut tok = unsafe { Locked::<Unlocked>::new() };
        self.handles.remove(&mut tok, ino, fh)?;
        let node = self.node(ino)?;
        let last = {
            let mut st = node.st.lock();
            st.opens = st.opens.saturating_sub(1);
            st.opens == 0
        };
        if last {
            self.release_fhs(&node).await;
            self.maybe_drop(&node).await;
        }
        Ok(())
    }

    async fn readdir(&self, _ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        let _ns = self.ns.read().await;
        let node = self.node(ino)?;
        self.list(&node, cookie, max).await
    }

    async fn readdirplus(&self, _ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntryPlus>> {
        let _ns = self.ns.read().await;
        let node = self.node(ino)?;
        let mut out = Vec::new();
        for entry in self.list(&node, cookie, max).await? {
            let attr = match entry.name.as_bytes() {
                b"." => self.attr_of(&node).await?,
                b".." => self.attr_of(&*self.node(entry.ino)?).await?,
                n => {
                    let name = Name::from_bytes(n)?;
                    match self.resolve(&node, name).await? {
                        Some(found) => {
                            let child = self.register(&node, name, &found, true);
                            match self.attr_of(&child).await {
                                Ok(a) => a,
                                Err(VfsError::NotFound | VfsError::Stale) => continue,
                                Err(e) => return Err(e),
                            }
                        }
                        None => continue,
                    }
                }
            };
            out.push(DirEntryPlus { entry, attr });
        }
        Ok(out)
    }

    async fn statfs(&self, ctx: &RequestCtx, _ino: Ino) -> VfsResult<StatFs> {
        self.upper.statfs(ctx, Ino::ROOT).await
    }

    async fn getxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<Bytes> {
        let st = self.node(ino)?.snapshot();
        match (st.upper, st.lower) {
            (Some(u), _) => self.upper.getxattr(ctx, u, name).await,
            (None, Some((layer, lino))) => self.lowers[layer].getxattr(ctx, lino, name).await,
            (None, None) => Err(VfsError::Stale),
        }
    }

    async fn setxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr, value: &[u8], how: XattrSet) -> VfsResult<()> {
        let _ns = self.ns.write().await;
        let node = self.node(ino)?;
        let u = self.copy_up(&node, false).await?;
        self.upper.setxattr(ctx, u, name, value, how).await
    }

    async fn listxattr(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<Vec<OsString>> {
        let st = self.node(ino)?.snapshot();
        match (st.upper, st.lower) {
            (Some(u), _) => self.upper.listxattr(ctx, u).await,
            (None, Some((layer, lino))) => self.lowers[layer].listxattr(ctx, lino).await,
            (None, None) => Err(VfsError::Stale),
        }
    }

    async fn removexattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<()> {
        let _ns = self.ns.write().await;
        let node = self.node(ino)?;
        let u = self.copy_up(&node, false).await?;
        self.upper.removexattr(ctx, u, name).await
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
        let (_, ticket, node, u) = self.begin_data_write(ino, fh).await?;
        self.fallocate_data(&node, u, offset, length, mode).await?;
        ticket.complete();
        Ok(())
    }
}
