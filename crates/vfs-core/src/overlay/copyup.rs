//! Copy-up: making an upper object for a lower one, and keeping records.
//!
//! Invariant: an object appears at its name in the upper only complete: it is prepared
//! in the work directory (created, sized, owned, timed, its xattrs copied, its record
//! written) and then renamed into place, so a crash leaves either nothing in the upper
//! (the lower object still shows) or the finished copy; what a crash leaves in the work
//! directory is removed, with its record, at the next [`Overlay::open`]. A regular file is
//! copied up *sparse*: no data is copied here, its block map says every block is still in
//! the lower layer. Parents are copied up before children. Callers hold the namespace
//! lock exclusively.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::data::write_all;
use super::node::Node;
use super::record::{BlockMap, Origin, Record};
use super::{CTX, Overlay, name};
use crate::error::{VfsError, VfsResult};
use crate::types::{FileType, Ino, Name, OpenFlags, RenameFlags, SetAttr, SetTime, XattrSet};
use crate::vfs::VirtualFs;

impl<U: VirtualFs, L: VirtualFs> Overlay<U, L> {
    /// Makes sure `node` (and every directory above it) has an upper object; returns its
    /// upper inode. `truncate`: a regular file is copied up empty (an `O_TRUNC` open).
    pub(crate) async fn copy_up(&self, node: &Arc<Node>, truncate: bool) -> VfsResult<Ino> {
        if let Some(u) = node.upper() {
            return Ok(u);
        }
        let mut chain = vec![Arc::clone(node)];
        loop {
            let parent = chain[chain.len() - 1].st.lock().parent;
            let p = self.node(parent)?;
            if p.upper().is_some() {
                break;
            }
            if chain.len() > 4096 {
                return Err(VfsError::Io("overlay: directory chain too deep to copy up".into()));
            }
            chain.push(p);
        }
        for (i, n) in chain.iter().enumerate().rev() {
            self.copy_up_one(n, truncate && i == 0).await?;
        }
        node.upper()
            .ok_or_else(|| VfsError::Io("overlay: copy-up left no upper object".into()))
    }

    async fn copy_up_one(&self, n: &Node, truncate: bool) -> VfsResult<()> {
        let st = n.snapshot();
        if st.upper.is_some() {
            return Ok(());
        }
        let (layer, lino) = st
            .lower
            .ok_or_else(|| VfsError::Io("overlay: object in no layer".into()))?;
        let pu = self
            .node(st.parent)?
            .upper()
            .ok_or_else(|| VfsError::Io("overlay: parent not copied up".into()))?;
        let lower = &self.lowers[layer];
        let la = lower.getattr(&CTX, lino, None).await?;
        let work = self.meta.work;
        let tmp = self.next_work_name();
        let tn = name(&tmp);
        let perm = u32::from(la.perm);
        let mut rec = Record {
            opaque: false,
            origin: Some(Origin {
                layer,
                ino: lino,
                path: st.path.clone(),
            }),
            map: None,
        };
        let ua = match n.kind {
            FileType::Directory => self.upper.mkdir(&CTX, work, tn, perm, 0).await?,
            FileType::Regular => {
                let (a, fh) = self
                    .upper
                    .create(&CTX, work, tn, perm, 0, OpenFlags::RDWR.with(libc::O_EXCL))
                    .await?;
                self.upper.release(&CTX, a.ino, fh).await?;
                let len = if truncate { 0 } else { la.size };
                if len > 0 {
                    self.upper.setattr(&CTX, a.ino, SetAttr::size(len)).await?;
                    rec.map = Some(BlockMap::new(u64::from(self.opts.block_size), len));
                }
                a
            }
            FileType::Symlink => {
                let target = lower.readlink(&CTX, lino).await?;
                self.upper.symlink(&CTX, work, tn, &target).await?
            }
            _ => self.upper.mknod(&CTX, work, tn, la.mode(), 0, la.rdev).await?,
        };
        let set = SetAttr {
            mode: (n.kind != FileType::Symlink).then_some(perm),
            uid: Some(la.uid),
            gid: Some(la.gid),
            atime: Some(SetTime::At(la.atime)),
            mtime: Some(SetTime::At(la.mtime)),
            ..SetAttr::default()
        };
        match self.upper.setattr(&CTX, ua.ino, set).await {
            Ok(_) => {}
            // Some backends cannot change a symlink's own attributes.
            Err(_) if n.kind == FileType::Symlink => {}
            Err(e) => return Err(e),
        }
        self.copy_xattrs(layer, lino, ua.ino).await?;
        self.write_record(ua.ino, rec).await?;
        self.upper
            .rename(&CTX, work, tn, pu, Name::from_bytes(&st.name)?, RenameFlags::NONE)
            .await?;
        n.st.lock().upper = Some(ua.ino);
        self.counters.objects.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(ino = n.ino.0, layer, path = %String::from_utf8_lossy(&st.path), "overlay: copied up");
        Ok(())
    }

    async fn copy_xattrs(&self, layer: usize, lino: Ino, uino: Ino) -> VfsResult<()> {
        let lower = &self.lowers[layer];
        let names = match lower.listxattr(&CTX, lino).await {
            Ok(n) => n,
            Err(VfsError::Unsupported | VfsError::NotImplemented) => return Ok(()),
            Err(e) => return Err(e),
        };
        for n in names {
            let v = match lower.getxattr(&CTX, lino, &n).await {
                Ok(v) => v,
                Err(VfsError::NoAttr) => continue,
                Err(e) => return Err(e),
            };
            self.upper.setxattr(&CTX, uino, &n, &v, XattrSet::Any).await?;
        }
        Ok(())
    }

    /// Writes the whole record of upper inode `u` (replacing any earlier one atomically).
    pub(crate) async fn write_record(&self, u: Ino, rec: Record) -> VfsResult<()> {
        let bytes = rec.encode();
        let tmp = self.next_work_name();
        let (a, fh) = self
            .upper
            .create(
                &CTX,
                self.meta.work,
                name(&tmp),
                0o600,
                0,
                OpenFlags::RDWR.with(libc::O_EXCL),
            )
            .await?;
        let written = write_all(&self.upper, a.ino, fh, 0, &bytes).await;
        self.upper.release(&CTX, a.ino, fh).await?;
        written?;
        let key = u.0.to_string();
        self.upper
            .rename(
                &CTX,
                self.meta.work,
                name(&tmp),
                self.meta.inodes,
                name(&key),
                RenameFlags::NONE,
            )
            .await?;
        self.index_record(u, &rec)?;
        self.record_files.lock().insert(u, a.ino);
        self.records.lock().insert(u, rec);
        Ok(())
    }

    /// Overwrites `bytes` at `offset` of the record of upper inode `u`.
    pub(crate) async fn patch_record(&self, u: Ino, offset: u64, bytes: &[u8]) -> VfsResult<()> {
        let Some(file) = self.record_files.lock().get(&u).copied() else {
            return Err(VfsError::Io(format!("overlay: no record file for upper inode {}", u.0)));
        };
        let fh = self.upper.open(&CTX, file, OpenFlags::RDWR).await?;
        let r = write_all(&self.upper, file, fh, offset, bytes).await;
        self.upper.release(&CTX, file, fh).await?;
        r
    }

    /// Makes the record of upper inode `u` durable.
    pub(crate) async fn sync_record(&self, u: Ino) -> VfsResult<()> {
        let Some(file) = self.record_files.lock().get(&u).copied() else {
            return Ok(());
        };
        let fh = self.upper.open(&CTX, file, OpenFlags::RDWR).await?;
        let r = self.upper.fsync(&CTX, file, fh, true).await;
        self.upper.release(&CTX, file, fh).await?;
        r
    }

    /// Upper inode `u` has no name left: its record goes.
    pub(crate) async fn drop_record(&self, u: Ino) -> VfsResult<()> {
        let Some(rec) = self.records.lock().remove(&u) else {
            return Ok(());
        };
        if let Some(o) = &rec.origin
            && let Ok(ino) = super::ovl_ino(super::Layer::Lower(o.layer), o.ino)
        {
            let mut by = self.by_origin.lock();
            if by.get(&ino) == Some(&u) {
                by.remove(&ino);
            }
        }
        self.record_files.lock().remove(&u);
        match self.upper.unlink(&CTX, self.meta.inodes, name(&u.0.to_string())).await {
            Ok(()) | Err(VfsError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Marks upper directory `u` opaque (its lower namesakes are hidden from now on).
    pub(crate) async fn set_opaque(&self, u: Ino) -> VfsResult<()> {
        let mut rec = self.records.lock().get(&u).cloned().unwrap_or_default();
        if rec.opaque {
            return Ok(());
        }
        rec.opaque = true;
        self.write_record(u, rec).await
    }
}
