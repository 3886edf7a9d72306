//! The wire format: what the frames of a link mean.
//!
//! Invariant: every frame starts with the format version ([`VERSION`]) and a kind byte;
//! decoding a frame ([`Frame::decode`]) never panics and never allocates more than the
//! frame's own length: every count and length read from the peer is checked against a
//! fixed maximum and against the bytes actually left before anything is allocated for
//! it. A frame that does not decode is a [`WireError`]: the connection that carried it
//! is closed with that reason, and nothing else happens. Structure is checked here;
//! meaning is checked by the receiver (names with `vfs_core::Name::new` on the exporter,
//! so a `..`, `/`, NUL or over-long name gets an error reply, not a closed link).
//!
//! # Frames
//!
//! ```text
//! frame   := version:u8 kind:u8 body            (all integers little-endian)
//! Request := id:u64 op:u8 uid:u32 gid:u32 pid:u32 args(op)
//! Reply   := id:u64 0 tag:u8 fields(tag)  |  id:u64 1 errno:i32
//! Data    := id:u64 bytes                       (1..=MAX_CHUNK bytes of a body)
//! Notify  := seq:u64 count:u16 change*count
//! Cancel / Ping / Pong := id:u64
//! Goaway  := reason:str16
//! bytes16 := len:u16 bytes    (len checked against the field's maximum)
//! ```
//!
//! A request or reply that carries a large payload (a write's data, a read's data, an
//! xattr value or list) declares its length `len` (at most [`MAX_IO`]) in its frame;
//! the payload follows as [`Frame::Data`] frames with the same id, at most
//! [`MAX_CHUNK`] bytes each, so a multiplexing writer can put any other frame between
//! two chunks (see `crate::mux`). [`Reassembler`] turns frames back into whole messages
//! within a fixed memory budget.
//!
//! An unknown request opcode decodes as [`Op::Unknown`] (the exporter answers `ENOSYS`),
//! so a newer peer's new operation does not break an older one's link.

mod decode;
mod encode;
mod frame;
mod reassemble;
#[cfg(test)]
mod tests;

use vfs_core::PATH_MAX;

pub use encode::{change_len, encode_notify, entry_len};
pub use frame::{DATA_HEADER_LEN, Frame, Op, Reply, Request, WireChange, data_header};
pub use reassemble::{Message, Payload, Reassembler, ReassemblyLimits};

/// The format version this crate speaks.
pub const VERSION: u8 = 1;
/// Most payload bytes in one [`Frame::Data`]: a data frame (10 bytes of header) fits a
/// transport frame with room to spare.
pub const MAX_CHUNK: usize = 65_024;
/// Largest payload of one request or reply (a read or write of up to 4 MiB).
pub const MAX_IO: u32 = 4 << 20;
/// Longest name, symlink target, xattr name or path a frame may carry. Longer than
/// `NAME_MAX` on purpose: an over-long name must reach the exporter to be refused with
/// `ENAMETOOLONG`, not break the link.
pub const MAX_STR: usize = PATH_MAX;
/// Longest text (source id, goaway reason).
pub const MAX_TEXT: usize = 1024;
/// Most directory entries in one reply.
pub const MAX_ENTRIES: usize = 128;
/// Most changes in one notify frame.
pub const MAX_CHANGES: usize = 256;

/// Encoded size of an [`Attr`].
const ATTR_LEN: usize = 87;

/// Why peer bytes did not decode. The connection that carried them is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame ended before a field did.
    #[error("frame truncated in {0}")]
    Truncated(&'static str),
    /// A frame of a format version this crate does not speak.
    #[error("unsupported wire version {0}")]
    Version(u8),
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// A length or count over its maximum.
    #[error("{what} of {len} exceeds the maximum of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The length found.
        len: usize,
        /// Its maximum.
        max: usize,
    },
    /// A value outside its domain (bad tag, bad file type, ...).
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Bytes left after the last field.
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
    /// Frames out of order (data for no body, a body id used twice, ...).
    #[error("out of sequence: {0}")]
    Sequence(&'static str),
    /// The peer's bodies in flight exceed our memory budget.
    #[error("peer exceeded the reassembly budget ({0})")]
    Budget(&'static str),
}

/// Result of decoding.
pub type WireResult<T> = Result<T, WireError>;

/// A field whose wire form is not its type's own: a payload length, checked against
/// [`MAX_IO`] when decoded.
pub(crate) struct IoLen;
/// A field whose wire form is not its type's own: how a `setxattr` sets (0 any, 1 create,
/// 2 replace; anything else does not decode).
pub(crate) struct XattrHow;

/// The codec of an operation's field: its own type unless the table names one.
macro_rules! field_codec {
    ($t:ty) => {
        $t
    };
    ($t:ty, $c:ty) => {
        $c
    };
}
use field_codec;

/// The label of an operation's field in decoding errors: its name unless the table gives
/// one.
macro_rules! field_what {
    ($f:ident) => {
        stringify!($f)
    };
    ($f:ident, $w:literal) => {
        $w
    };
}
use field_what;
