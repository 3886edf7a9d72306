//! Notifications: the owner's changes applied to this side's caches and the kernel's.
//!
//! Invariant: every change a notification names is invalidated here (attributes,
//! listings, blocks) and in the kernel (through the [`Invalidator`]), never patched from
//! the notification's contents; a change without a path ([`REVALIDATE_ALL`]) drops
//! everything. An entry whose name still denotes the same inode keeps its kernel entry
//! (a process whose working directory it is would lose it).

use std::sync::Arc;

use tokio::sync::mpsc;
use vfs_core::{Ino, Invalidator};

use super::Inner;
use super::cache::{KernelView, Resolved};
use crate::exporter::REVALIDATE_ALL;
use crate::wire::WireChange;

impl Inner {
    /// Drops every cache and tells the kernel to do the same.
    pub(super) fn revalidate_all(&self) {
        let view = self.cache.revalidate_all();
        self.blocks.invalidate_all();
        self.tell_kernel(view);
    }

    pub(super) fn tell_kernel(&self, view: KernelView) {
        let inv = self.invalidator.read().clone();
        for (parent, name) in &view.entries {
            inv.inval_entry(*parent, name);
        }
        for (ino, open) in view.inodes {
            if open {
                inv.inval_attr(ino);
            } else {
                inv.inval_inode(ino, 0, 0);
            }
        }
    }

    fn kernel_inval_inode(&self, inv: &dyn Invalidator, ino: Ino) {
        match self.cache.kernel_state(ino) {
            Some(true) => inv.inval_attr(ino),
            Some(false) => inv.inval_inode(ino, 0, 0),
            None => {}
        }
    }

    /// Applies the owner's change notifications, batch by batch, until the link ends.
    pub(super) async fn apply_notes(self: Arc<Self>, mut notes: mpsc::Receiver<Vec<WireChange>>) {
        while let Some(batch) = notes.recv().await {
            tracing::trace!(changes = batch.len(), "applying a batch of changes");
            for c in batch {
                self.apply(c);
            }
        }
    }

    /// Applies one change: whatever it touches is invalidated here and in the kernel.
    fn apply(&self, c: WireChange) {
        let inv = self.invalidator.read().clone();
        match c {
            WireChange::Update { path, .. } if path == REVALIDATE_ALL => self.revalidate_all(),
            WireChange::Create { path, attr } | WireChange::Update { path, attr } => {
                let r = self.cache.resolve(&path);
                // Where the name already denotes this inode (a change in place, or this
                // side's own create coming back), the kernel's entry stays: invalidating a
                // directory's entry detaches it from every process whose working directory
                // it is, and their getcwd() then fails with ENOENT (git did, mid-commit).
                if r.ino != Some(attr.ino) {
                    self.touch_resolved(&*inv, r, false);
                }
                self.touch_ino(&*inv, attr.ino);
            }
            WireChange::Remove { path } => self.touch_path(&*inv, &path, true),
            WireChange::Rename { from, to, attr } => {
                self.touch_path(&*inv, &from, true);
                self.touch_path(&*inv, &to, true);
                self.touch_ino(&*inv, attr.ino);
            }
        }
    }

    fn touch_ino(&self, inv: &dyn Invalidator, ino: Ino) {
        self.cache.invalidate(ino);
        self.blocks.invalidate(ino);
        self.kernel_inval_inode(inv, ino);
    }

    /// Invalidates what `path` names and its parent's entry for it (`gone`: it was removed
    /// or moved away, so everything known under it is invalidated too). The name itself is
    /// always forgotten: debouncing merges a removal and a re-creation of one path into a
    /// single update, after which the name may denote another inode.
    fn touch_path(&self, inv: &dyn Invalidator, path: &[u8], gone: bool) {
        self.touch_resolved(inv, self.cache.resolve(path), gone);
    }

    /// [`Self::touch_path`] for a path already resolved.
    fn touch_resolved(&self, inv: &dyn Invalidator, r: Resolved, gone: bool) {
        if let Some((parent, name)) = &r.parent {
            self.cache.invalidate(*parent);
            self.cache.dir_changed(*parent);
            self.kernel_inval_inode(inv, *parent);
            self.cache.no_entry(*parent, name);
            if self.cache.kernel_state(*parent).is_some() {
                inv.inval_entry(*parent, name);
            }
        }
        if let Some(ino) = r.ino {
            let targets = if gone { self.cache.subtree(ino) } else { vec![ino] };
            for t in targets {
                self.touch_ino(inv, t);
            }
        }
    }
}
