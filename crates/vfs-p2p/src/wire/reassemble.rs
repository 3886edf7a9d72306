//! Reassembly: frames in, whole messages out, within a fixed memory budget.
//!
//! Invariant: a message is handed out only when every byte of its declared payload has
//! arrived, and never with a byte more. Memory held for partial payloads is bounded by
//! [`ReassemblyLimits`]: a payload's declared length counts against the budget when its
//! header arrives (before any buffer is allocated for it), so a peer that declares more
//! than the budget is refused with [`WireError::Budget`] instead of being believed. Data
//! for an id with no payload pending, a second header for a pending id, and a chunk
//! longer than what is still missing are [`WireError::Sequence`] errors.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use vfs_core::Errno;

use super::{Frame, Reply, Request, WireError, WireResult};

/// Bounds on what a peer may have in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Most payloads being received at once.
    pub max_pending: usize,
    /// Most bytes declared by payloads being received at once.
    pub max_bytes: usize,
}

impl Default for ReassemblyLimits {
    /// 256 payloads, 64 MiB.
    fn default() -> Self {
        ReassemblyLimits {
            max_pending: 256,
            max_bytes: 64 << 20,
        }
    }
}

/// A whole message: a frame with its payload, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A request and its payload (empty unless the operation carries one).
    Request {
        /// Request id.
        id: u64,
        /// The request.
        req: Request,
        /// Its payload.
        body: Bytes,
    },
    /// A reply and its payload.
    Reply {
        /// Request id.
        id: u64,
        /// The answer.
        result: Result<Reply, Errno>,
        /// Its payload.
        body: Bytes,
    },
    /// Any frame that is whole by itself (notify, cancel, ping, pong, goaway).
    Other(Frame),
}

enum Head {
    Request(Request),
    Reply(Reply),
}

struct Partial {
    head: Head,
    want: usize,
    buf: BytesMut,
}

/// Turns the frames of one direction of a link into [`Message`]s.
pub struct Reassembler {
    limits: ReassemblyLimits,
    pending: HashMap<u64, Partial>,
    declared: usize,
}

impl Reassembler {
    /// A reassembler with these limits.
    pub fn new(limits: ReassemblyLimits) -> Reassembler {
        Reassembler {
            limits,
            pending: HashMap::new(),
            declared: 0,
        }
    }

    /// Payloads still being received.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes declared by the payloads still being received.
    pub fn declared_bytes(&self) -> usize {
        self.declared
    }

    /// Takes one frame; returns a message if it completed one.
    pub fn push(&mut self, frame: Frame) -> WireResult<Option<Message>> {
        match frame {
            Frame::Request { id, req } => {
                let len = req.op.body_len() as usize;
                if len == 0 {
                    return Ok(Some(Message::Request {
                        id,
                        req,
                        body: Bytes::new(),
                    }));
                }
                self.start(id, Head::Request(req), len)?;
                Ok(None)
            }
            Frame::Reply { id, result: Ok(reply) } => {
                let len = reply.body_len() as usize;
                if len == 0 {
                    return Ok(Some(Message::Reply {
                        id,
                        result: Ok(reply),
                        body: Bytes::new(),
                    }));
                }
                self.start(id, Head::Reply(reply), len)?;
                Ok(None)
            }
            Frame::Reply { id, result: Err(e) } => {
                if self.pending.contains_key(&id) {
                    return Err(WireError::Sequence("reply for an id whose payload is pending"));
                }
                Ok(Some(Message::Reply {
                    id,
                    result: Err(e),
                    body: Bytes::new(),
                }))
            }
            Frame::Data { id, bytes } => self.data(id, bytes),
            other => Ok(Some(Message::Other(other))),
        }
    }

    fn start(&mut self, id: u64, head: Head, len: usize) -> WireResult<()> {
        if self.pending.contains_key(&id) {
            return Err(WireError::Sequence("second header for a pending id"));
        }
        if self.pending.len() >= self.limits.max_pending {
            return Err(WireError::Budget("too many payloads in flight"));
        }
        let declared = self.declared.saturating_add(len);
        if declared > self.limits.max_bytes {
            return Err(WireError::Budget("too many payload bytes in flight"));
        }
        self.declared = declared;
        self.pending.insert(
            id,
            Partial {
                head,
                want: len,
                buf: BytesMut::new(),
            },
        );
        Ok(())
    }

    fn data(&mut self, id: u64, chunk: Bytes) -> WireResult<Option<Message>> {
        let Some(p) = self.pending.get_mut(&id) else {
            return Err(WireError::Sequence("data for no pending payload"));
        };
        let missing = p.want - p.buf.len();
        if chunk.len() > missing {
            return Err(WireError::Sequence("data beyond the declared length"));
        }
        let body = if p.buf.is_empty() && chunk.len() == p.want {
            // The whole payload in one chunk: hand the received bytes on without a copy.
            chunk
        } else {
            if p.buf.is_empty() {
                // Allocation bounded by `want`, which the budget admitted.
                p.buf.reserve(p.want);
            }
            p.buf.extend_from_slice(&chunk);
            if p.buf.len() < p.want {
                return Ok(None);
            }
            std::mem::take(&mut p.buf).freeze()
        };
        let Some(p) = self.pending.remove(&id) else {
            return Err(WireError::Sequence("payload vanished"));
        };
        self.declared = self.declared.saturating_sub(p.want);
        Ok(Some(match p.head {
            Head::Request(req) => Message::Request { id, req, body },
            Head::Reply(reply) => Message::Reply {
                id,
                result: Ok(reply),
                body,
            },
        }))
    }
}
