//! Write ordering: changes to one file's data apply on the owner in issue order.
//!
//! Invariant: a write, truncation or `fallocate` of an inode is issued only after the one
//! issued before it was acknowledged (one [`vfs_core::barrier::OpBarrier`] ticket each),
//! and while it is in flight neither the block cache nor the attribute cache holds
//! anything of its range (invalidated before and after), so no reader sees data older
//! than a write acknowledged before the read began. A write is acknowledged chunk by
//! chunk; a short count ends it.

use bytes::Bytes;
use vfs_core::{Fh, Ino, RequestCtx, VfsError, VfsResult};

use super::Inner;
use crate::wire::MAX_IO;

impl Inner {
    /// Runs a change to the data of `ino` (`[start, end)`) in issue order: it waits for
    /// the acknowledgement of the change issued before it, and caches hold nothing of the
    /// range while it is in flight.
    pub(super) async fn ordered<T>(
        &self,
        ino: Ino,
        start: u64,
        end: u64,
        f: impl std::future::Future<Output = VfsResult<T>>,
    ) -> VfsResult<T> {
        let ticket = self.barrier.begin_write(ino);
        ticket.wait_turn_async().await;
        self.cache.write_begin(ino);
        self.blocks.invalidate_range(ino, start, end);
        let r = f.await;
        self.blocks.invalidate_range(ino, start, end);
        self.cache.write_end(ino);
        ticket.complete();
        r
    }

    pub(super) async fn write(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let h = self.handle(fh, ino)?;
        if !h.flags.access().can_write() {
            return Err(VfsError::BadHandle);
        }
        self.check(ino)?;
        let append = h.flags.append();
        let (start, end) = if append {
            (0, u64::MAX)
        } else {
            (offset, offset.saturating_add(data.len() as u64))
        };
        self.ordered(ino, start, end, async {
            let mut done = 0usize;
            for chunk in data.chunks(MAX_IO as usize) {
                let len = u32::try_from(chunk.len()).map_err(|_| VfsError::TooBig)?;
                let at = offset + done as u64;
                let body = Bytes::copy_from_slice(chunk);
                match self.session.on(ctx).write(ino, at, append, len, body).await? {
                    n if n == len => done += chunk.len(),
                    n => return Ok(u32::try_from(done + n as usize).unwrap_or(u32::MAX)),
                }
            }
            Ok(u32::try_from(done).unwrap_or(u32::MAX))
        })
        .await
    }
}
