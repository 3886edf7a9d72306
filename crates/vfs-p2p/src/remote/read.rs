//! Block reads: file data fetched on demand, a block at a time, with readahead.
//!
//! Invariant: a read returns only bytes the owner sent for that range after every write
//! issued before the read was acknowledged (it waits on the [`vfs_core::barrier::OpBarrier`]);
//! one block is fetched at most once at a time (later readers wait for the fetch in
//! flight), and a fetch that raced an invalidation is not cached (its generation is
//! stale). Readahead follows a sequential reader only.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use vfs_core::{Errno, Fh, Ino, RequestCtx, VfsError, VfsResult};

use super::Inner;
use super::blocks::Next;
use crate::wire::{MAX_IO, Payload};

impl Inner {
    /// One block of `ino`, from the cache, a fetch in flight, or a new fetch.
    async fn block(self: &Arc<Self>, ctx: &RequestCtx, ino: Ino, idx: u64) -> VfsResult<Payload> {
        let mut rx = match self.blocks.next(ino, idx, true) {
            Some(Next::Hit(p)) => return Ok(p),
            Some(Next::Wait(rx)) => rx,
            Some(Next::Fetch { generation, tx }) => {
                let rx = tx.subscribe();
                self.rt.spawn(Arc::clone(self).fetch(*ctx, ino, idx, generation, tx));
                rx
            }
            None => return Err(VfsError::Io("block cache refused a read".into())),
        };
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| VfsError::Io("a block fetch was abandoned".into()))?
            .clone();
        match outcome {
            Some(Ok(p)) => Ok(p),
            Some(Err(e)) => Err(VfsError::from_errno(e)),
            None => Err(VfsError::Io("a block fetch was abandoned".into())),
        }
    }

    async fn fetch(
        self: Arc<Self>,
        ctx: RequestCtx,
        ino: Ino,
        idx: u64,
        generation: u64,
        tx: tokio::sync::watch::Sender<Option<Result<Payload, Errno>>>,
    ) {
        let size = u32::try_from(self.blocks.block).unwrap_or(MAX_IO);
        let r = self
            .session
            .on(&ctx)
            .read(ino, idx * self.blocks.block, size)
            .await
            .map_err(|e| e.errno());
        self.blocks.finish(ino, idx, generation, &r);
        let _ = tx.send(Some(r));
    }

    fn readahead(self: &Arc<Self>, ctx: &RequestCtx, ino: Ino, from: u64) {
        for idx in from..from + self.blocks.window {
            match self.blocks.next(ino, idx, false) {
                Some(Next::Fetch { generation, tx }) => {
                    self.rt.spawn(Arc::clone(self).fetch(*ctx, ino, idx, generation, tx));
                }
                Some(_) => {}
                None => {}
            }
        }
    }

    pub(super) async fn read(
        self: &Arc<Self>,
        ctx: &RequestCtx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        size: u32,
    ) -> VfsResult<Bytes> {
        let h = self.handle(fh, ino)?;
        if !h.flags.access().can_read() {
            return Err(VfsError::BadHandle);
        }
        self.check(ino)?;
        self.barrier.read_async(ino).await;
        if size == 0 {
            return Ok(Bytes::new());
        }
        let bs = self.blocks.block;
        let end = offset.saturating_add(u64::from(size));
        let (first, last) = (offset / bs, (end - 1) / bs);
        let sequential = h.next.swap(end, Ordering::Relaxed) == offset || offset == 0;
        let mut out: Option<BytesMut> = None;
        let mut single: Option<Bytes> = None;
        for idx in first..=last {
            let p = self.block(ctx, ino, idx).await?;
            let base = idx * bs;
            let from = offset.max(base) - base;
            let upto = (end.min(base + bs) - base).min(p.len() as u64);
            if from < upto {
                let piece = p.slice(from as usize, (upto - from) as usize);
                match (&mut out, &single) {
                    (None, None) => single = Some(piece),
                    (None, Some(s)) => {
                        let mut b = BytesMut::with_capacity(size as usize);
                        b.extend_from_slice(s);
                        b.extend_from_slice(&piece);
                        out = Some(b);
                        single = None;
                    }
                    (Some(b), _) => b.extend_from_slice(&piece),
                }
            }
            if (p.len() as u64) < bs {
                break; // end of file
            }
        }
        if sequential {
            self.readahead(ctx, ino, last + 1);
        }
        Ok(match (out, single) {
            (Some(b), _) => b.freeze(),
            (None, Some(s)) => s,
            (None, None) => Bytes::new(),
        })
    }
}
