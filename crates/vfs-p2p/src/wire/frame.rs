//! The frame types: what a link carries, as values.
//!
//! Invariant: these are plain data, with no encoding logic; [`Op`] is generated from the
//! table of operations (`crate::ops::with_ops`), so a variant, its opcode and its payload
//! length cannot disagree with the encoder and decoder generated from the same table.

use std::ffi::OsString;

use bytes::Bytes;
use vfs_core::{Attr, DirEntry, DirEntryPlus, Errno, Ino, RequestCtx, SetAttr, StatFs};

use super::{MAX_TEXT, VERSION};

/// One frame, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A request from the mounting side.
    Request {
        /// Request id, unique among the sender's requests in flight.
        id: u64,
        /// Who asks and what.
        req: Request,
    },
    /// The answer to request `id`.
    Reply {
        /// The request's id.
        id: u64,
        /// The answer, or the errno.
        result: Result<Reply, Errno>,
    },
    /// A chunk of the payload of request or reply `id`.
    Data {
        /// The request's id.
        id: u64,
        /// The chunk (1..=[`MAX_CHUNK`](crate::wire::MAX_CHUNK) bytes).
        bytes: Bytes,
    },
    /// Changes on the owner's side, in order.
    Notify {
        /// Sequence number of this frame among the sender's notify frames.
        seq: u64,
        /// The changes.
        changes: Vec<WireChange>,
    },
    /// The requester no longer waits for request `id` (its answer may still come).
    Cancel {
        /// The request's id.
        id: u64,
    },
    /// Liveness probe; answered with [`Frame::Pong`] of the same id.
    Ping {
        /// Probe id.
        id: u64,
    },
    /// Answer to a [`Frame::Ping`].
    Pong {
        /// The probe's id.
        id: u64,
    },
    /// The sender closes the link, and says why.
    Goaway {
        /// Why.
        reason: String,
    },
}

/// A request: the caller's credentials and the operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The caller, as the mounting side saw it.
    pub ctx: RequestCtx,
    /// The operation.
    pub op: Op,
}

/// Generates [`Op`] from the table.
macro_rules! define_op {
    ($($snake:ident $V:ident $code:literal [$(#[$doc:meta])*] {$($f:ident: $ty:ty [$($codec:ty)?] [$($what:literal)?]),*} [$($blen:ident)?] $R:ty [$($plain:tt)*];)*) => {
        /// The operations, one per [`vfs_core::VirtualFs`] method that crosses the link
        /// (declared in `crate::ops`). Names are raw bytes here: the exporter validates
        /// them.
        #[allow(missing_docs)] // the fields are those of the VirtualFs method of the same name
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Op {
            $( $(#[$doc])* $V { $($f: $ty),* }, )*
            /// An opcode this version does not know (answered with `ENOSYS`).
            Unknown(u8),
        }

        impl Op {
            /// The opcode.
            pub fn code(&self) -> u8 {
                match self {
                    $( Op::$V { .. } => $code, )*
                    Op::Unknown(code) => *code,
                }
            }

            /// Payload bytes that follow this request as data frames.
            pub fn body_len(&self) -> u32 {
                match self {
                    $( $( Op::$V { $blen, .. } => *$blen, )? )*
                    _ => 0,
                }
            }
        }
    };
}

crate::ops::with_ops!(define_op);

impl Op {
    /// Whether a multiplexing writer should send this ahead of bulk data: everything
    /// but requests whose payload is bulk.
    pub fn is_control(&self) -> bool {
        self.body_len() == 0
    }
}

/// A successful answer.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to say but success.
    Unit,
    Attr(Attr),
    /// A symlink target.
    Target(OsString),
    /// `len` payload bytes follow as data frames (read data, xattr value, xattr list).
    Bytes {
        len: u32,
    },
    Written(u32),
    Entries(Vec<DirEntry>),
    EntriesPlus(Vec<DirEntryPlus>),
    StatFs(StatFs),
    /// Answer to [`Op::Hello`].
    Hello {
        version: u8,
        source_id: String,
        stable_inodes: bool,
        max_io: u32,
    },
}

impl Reply {
    /// Payload bytes that follow this reply as data frames.
    pub fn body_len(&self) -> u32 {
        match self {
            Reply::Bytes { len } => *len,
            _ => 0,
        }
    }
}

/// One change on the owner's side, keyed by `/`-separated path relative to the share's
/// root (no leading `/`; the root itself is the empty path).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireChange {
    Create { path: Vec<u8>, attr: Attr },
    Update { path: Vec<u8>, attr: Attr },
    Remove { path: Vec<u8> },
    Rename { from: Vec<u8>, to: Vec<u8>, attr: Attr },
}

pub(super) const K_REQUEST: u8 = 1;
pub(super) const K_REPLY: u8 = 2;
pub(super) const K_DATA: u8 = 3;
pub(super) const K_NOTIFY: u8 = 4;
pub(super) const K_CANCEL: u8 = 5;
pub(super) const K_PING: u8 = 6;
pub(super) const K_PONG: u8 = 7;
pub(super) const K_GOAWAY: u8 = 8;

/// Length of a data frame's header (version, kind, id).
pub const DATA_HEADER_LEN: usize = 10;

/// The header of a data frame for `id`; the chunk follows it (the writer sends both as
/// parts of one transport frame, so the chunk is never copied into a frame buffer).
pub fn data_header(id: u64) -> [u8; DATA_HEADER_LEN] {
    let mut h = [0u8; DATA_HEADER_LEN];
    h[0] = VERSION;
    h[1] = K_DATA;
    h[2..].copy_from_slice(&id.to_le_bytes());
    h
}

/// `s` cut to at most [`MAX_TEXT`] bytes, on a character boundary.
pub(super) fn truncate_text(s: &str) -> &str {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}
