//! Reconnection: the link to the owner is made again, forever, with backoff.
//!
//! Invariant: while no link is up, calls wait at most `down_wait` (see [`super::session`]);
//! a new link starts from nothing cached (every cache is dropped and the kernel told
//! when the old link is lost, and again once the new one is up, since changes may have
//! been missed), and every file this side has open is opened again on it without
//! truncation. A share that comes back as a new incarnation (another source id) makes
//! every inode known so far stale.

use std::sync::Arc;

use tokio::task::JoinHandle;
use vfs_core::{Ino, OpenFlags};

use super::Inner;
use super::session::Connected;
use crate::rpc::LinkFailure;

impl Inner {
    /// Installs a new link and starts applying its notifications; returns its end.
    pub(super) fn adopt(self: &Arc<Self>, c: Connected) -> JoinHandle<LinkFailure> {
        self.cache.reset_remote_counts();
        self.session.install(c.client);
        self.rt.spawn(Arc::clone(self).apply_notes(c.notes));
        c.task
    }

    /// Waits for the link to end, then makes it again with backoff, forever.
    pub(super) async fn supervise(self: Arc<Self>, mut task: JoinHandle<LinkFailure>) {
        loop {
            let why = match (&mut task).await {
                Ok(f) => f.to_string(),
                Err(e) => format!("link task ended: {e}"),
            };
            tracing::warn!("link to the peer lost ({why}); reconnecting");
            self.session.set_down();
            self.revalidate_all();
            let mut backoff = self.cfg.backoff_min;
            let connected = loop {
                tokio::time::sleep(backoff).await;
                match self.session.connect().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::debug!("reconnection failed: {e}");
                        backoff = (backoff * 2).min(self.cfg.backoff_max);
                    }
                }
            };
            let new_incarnation = {
                let mut h = self.hello.lock();
                let changed = h.source_id != connected.hello.source_id;
                *h = connected.hello.clone();
                changed
            };
            task = self.adopt(connected);
            if new_incarnation {
                tracing::warn!("the peer's share is a new incarnation: earlier inodes are stale");
                let view = self.cache.new_incarnation();
                self.blocks.invalidate_all();
                self.tell_kernel(view);
            } else {
                self.repin().await;
                self.revalidate_all();
            }
            tracing::warn!("reconnected to the peer");
        }
    }

    /// Opens again, on the new link, every file this side has open (without truncating).
    async fn repin(&self) {
        let open: Vec<(Ino, OpenFlags)> = self
            .handles
            .snapshot(&mut super::entry_token())
            .into_iter()
            .map(|(_, ino, h)| (ino, h.flags))
            .collect();
        for (ino, flags) in open {
            let flags = OpenFlags(flags.0 & (libc::O_ACCMODE | libc::O_APPEND | libc::O_SYNC | libc::O_DSYNC));
            if let Err(e) = self.session.now().open(ino, flags.0).await {
                tracing::debug!(ino = ino.0, "reopening after reconnection failed: {e}");
            }
        }
    }
}
