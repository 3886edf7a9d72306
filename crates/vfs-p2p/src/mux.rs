//! The multiplexing writer: many requests and replies share one link, and a `stat`
//! never waits behind a bulk read.
//!
//! Invariant: frames are written in two classes. *Control* frames (requests without a
//! payload, replies without a payload, notifications, pings) go out in the order they
//! were queued, each ahead of any bulk data not yet written. *Bulk* messages (a header
//! frame plus a payload of up to [`crate::wire::MAX_IO`] bytes) go out as their header
//! and then data frames of at most [`MAX_CHUNK`] bytes, round-robin between the bulk
//! messages queued, and the writer looks at the control queue again between any two
//! chunks. So a control frame waits at most for one chunk and what the socket already
//! holds, whatever the bulk load; one message's header precedes its chunks, and its
//! chunks are in order. Both queues are bounded (bulk by bytes, control by frames):
//! producers wait for room, so memory does not grow with a slow link.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use crate::transport::{FrameTx, TransportError};
use crate::wire::{MAX_CHUNK, data_header};

/// Flush the transport's buffer once it holds this much.
const FLUSH_AT: usize = 256 * 1024;

/// The outbox was closed: the link is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link is closed")]
pub struct Closed;

struct Bulk {
    id: u64,
    head: Option<Vec<u8>>,
    data: Bytes,
}

#[derive(Default)]
struct State {
    control: VecDeque<Vec<u8>>,
    bulk: VecDeque<Bulk>,
    closed: bool,
}

/// The queue in front of one link's writer. Cloned as `Arc<Outbox>` by every producer.
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    control_room: Semaphore,
    bulk_room: Semaphore,
    bulk_budget: usize,
}

/// Room in the control queue, in frames.
const CONTROL_FRAMES: usize = 4096;

/// One unit of work for the writer.
enum Piece {
    Frame(Vec<u8>),
    Chunk { id: u64, bytes: Bytes },
}

impl Outbox {
    /// An outbox holding at most `bulk_budget` bytes of bulk payload.
    pub fn new(bulk_budget: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            control_room: Semaphore::new(CONTROL_FRAMES),
            bulk_room: Semaphore::new(bulk_budget),
            bulk_budget,
        })
    }

    /// Queues a control frame (already encoded), waiting for room.
    pub async fn control(&self, frame: Vec<u8>) -> Result<(), Closed> {
        let permit = self.control_room.acquire().await.map_err(|_| Closed)?;
        let mut s = self.state.lock();
        if s.closed {
            return Err(Closed);
        }
        permit.forget();
        s.control.push_back(frame);
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a bulk message: `head` (an encoded request or reply declaring `data.len()`
    /// payload bytes) followed by `data` as data frames of request `id`. Waits for room.
    pub async fn bulk(&self, id: u64, head: Vec<u8>, data: Bytes) -> Result<(), Closed> {
        let want = data.len().min(self.bulk_budget);
        let n = u32::try_from(want).map_err(|_| Closed)?;
        let permit = self.bulk_room.acquire_many(n).await.map_err(|_| Closed)?;
        let mut s = self.state.lock();
        if s.closed {
            return Err(Closed);
        }
        permit.forget();
        s.bulk.push_back(Bulk {
            id,
            head: Some(head),
            data,
        });
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    /// Closes the outbox: producers get [`Closed`] from now on and the writer stops once
    /// it has written what is queued (or at once, if the link failed).
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.control_room.close();
        self.bulk_room.close();
        self.wake.notify_one();
    }

    /// Whether [`Outbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Takes what the writer sends next: every queued control frame, then at most one
    /// bulk piece (the next message's header or one chunk), rotating the bulk queue.
    fn take(&self, control: &mut Vec<Vec<u8>>) -> (Option<Piece>, bool) {
        let mut s = self.state.lock();
        control.extend(s.control.drain(..));
        let piece = match s.bulk.pop_front() {
            None => None,
            Some(mut b) => {
                let piece = if let Some(head) = b.head.take() {
                    Piece::Frame(head)
                } else {
                    let n = b.data.len().min(MAX_CHUNK);
                    Piece::Chunk {
                        id: b.id,
                        bytes: b.data.split_to(n),
                    }
                };
                if !b.data.is_empty() {
                    s.bulk.push_back(b);
                }
                Some(piece)
            }
        };
        (piece, s.closed)
    }

    fn release_bulk(&self, n: usize) {
        // Permits were taken for at most `bulk_budget` bytes of a message; give back
        // no more than that.
        let room = self.bulk_budget.saturating_sub(self.bulk_room.available_permits());
        self.bulk_room.add_permits(n.min(room));
    }
}

/// Writes what `outbox` holds to `tx` until the outbox is closed and empty, or the link
/// fails (then the outbox is closed too).
pub async fn run_writer<T: FrameTx>(outbox: Arc<Outbox>, mut tx: T) -> Result<(), TransportError> {
    let result = write_loop(&outbox, &mut tx).await;
    outbox.close();
    if result.is_ok() {
        let _ = tx.shutdown().await;
    }
    result
}

async fn write_loop<T: FrameTx>(outbox: &Outbox, tx: &mut T) -> Result<(), TransportError> {
    let mut control = Vec::new();
    loop {
        let (piece, closed) = outbox.take(&mut control);
        if control.is_empty() && piece.is_none() {
            tx.flush().await?;
            if closed {
                return Ok(());
            }
            outbox.wake.notified().await;
            continue;
        }
        let frames = control.len();
        for f in control.drain(..) {
            tx.push(&[&f])?;
        }
        outbox.control_room.add_permits(frames);
        match piece {
            Some(Piece::Frame(f)) => tx.push(&[&f])?,
            Some(Piece::Chunk { id, bytes }) => {
                tx.push(&[&data_header(id), &bytes])?;
                outbox.release_bulk(bytes.len());
            }
            None => {}
        }
        if tx.buffered() >= FLUSH_AT {
            tx.flush().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Frame, Message, Op, Reassembler, Reply, Request};
    use vfs_core::{Ino, RequestCtx};

    /// A transport that records frames in memory.
    #[derive(Default)]
    struct Memory {
        sent: Arc<Mutex<Vec<Bytes>>>,
        pending: Vec<Bytes>,
    }

    impl FrameTx for Memory {
        fn push(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
            self.pending.push(Bytes::from(parts.concat()));
            Ok(())
        }
        fn buffered(&self) -> usize {
            self.pending.iter().map(Bytes::len).sum()
        }
        async fn flush(&mut self) -> Result<(), TransportError> {
            self.sent.lock().append(&mut self.pending);
            Ok(())
        }
        async fn shutdown(&mut self) -> Result<(), TransportError> {
            self.flush().await
        }
    }

    fn getattr(id: u64) -> Vec<u8> {
        Frame::Request {
            id,
            req: Request {
                ctx: RequestCtx::ROOT,
                op: Op::Getattr { ino: Ino(id) },
            },
        }
        .encode()
    }

    fn read_reply(id: u64, len: usize) -> Vec<u8> {
        Frame::Reply {
            id,
            result: Ok(Reply::Bytes { len: len as u32 }),
        }
        .encode()
    }

    #[tokio::test]
    async fn control_overtakes_bulk_between_chunks() {
        let outbox = Outbox::new(16 << 20);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let len = 4 * MAX_CHUNK + 7;
        let data = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
        outbox.bulk(1, read_reply(1, len), data.clone()).await.unwrap();
        outbox
            .bulk(2, read_reply(2, 10), Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        outbox.control(getattr(3)).await.unwrap();
        outbox.close();
        run_writer(
            outbox.clone(),
            Memory {
                sent: sent.clone(),
                pending: Vec::new(),
            },
        )
        .await
        .unwrap();
        let frames: Vec<Frame> = sent.lock().iter().map(|b| Frame::decode(b.clone()).unwrap()).collect();
        // The control frame goes first although it was queued last.
        assert!(matches!(frames[0], Frame::Request { id: 3, .. }));
        // The small read completes before the large one (round robin), and the large
        // one arrives whole and in order.
        let mut r = Reassembler::new(Default::default());
        let mut done = Vec::new();
        for f in frames {
            if let Some(Message::Reply { id, body, .. }) = r.push(f).unwrap() {
                done.push((id, body));
            }
        }
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].0, 2);
        assert_eq!(done[1], (1, crate::wire::Payload::from_bytes(data)));
    }

    #[tokio::test]
    async fn closed_outbox_refuses_producers() {
        let outbox = Outbox::new(1 << 20);
        outbox.close();
        assert_eq!(outbox.control(getattr(1)).await, Err(Closed));
        assert_eq!(
            outbox.bulk(1, read_reply(1, 1), Bytes::from_static(b"x")).await,
            Err(Closed)
        );
    }
}
