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

mod reassemble;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use bytes::{Buf, Bytes};
use vfs_core::{
    Attr, DirEntry, DirEntryPlus, Errno, FileType, Ino, PATH_MAX, RequestCtx, SetAttr, SetTime, StatFs, Timestamp,
};

pub use reassemble::{Message, Payload, Reassembler, ReassemblyLimits};

use crate::transport::MAX_FRAME;

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
        /// The chunk (1..=[`MAX_CHUNK`] bytes).
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

/// The operations, one per [`vfs_core::VirtualFs`] method that crosses the link. Names
/// are raw bytes here: the exporter validates them.
#[allow(missing_docs)] // the fields are those of the VirtualFs method of the same name
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// First request of a link: which versions the client speaks.
    Hello {
        min_version: u8,
        max_version: u8,
    },
    Lookup {
        parent: Ino,
        name: OsString,
    },
    Forget {
        ino: Ino,
        nlookup: u64,
    },
    Getattr {
        ino: Ino,
    },
    Setattr {
        ino: Ino,
        set: SetAttr,
    },
    Readlink {
        ino: Ino,
    },
    Mknod {
        parent: Ino,
        name: OsString,
        mode: u32,
        umask: u32,
        rdev: u64,
    },
    Mkdir {
        parent: Ino,
        name: OsString,
        mode: u32,
        umask: u32,
    },
    Unlink {
        parent: Ino,
        name: OsString,
    },
    Rmdir {
        parent: Ino,
        name: OsString,
    },
    Symlink {
        parent: Ino,
        name: OsString,
        target: OsString,
    },
    Rename {
        parent: Ino,
        name: OsString,
        newparent: Ino,
        newname: OsString,
        flags: u32,
    },
    Link {
        ino: Ino,
        newparent: Ino,
        newname: OsString,
    },
    /// Checks that `ino` may be opened with `flags` (applies `O_TRUNC`).
    Open {
        ino: Ino,
        flags: i32,
    },
    Create {
        parent: Ino,
        name: OsString,
        mode: u32,
        umask: u32,
        flags: i32,
    },
    Read {
        ino: Ino,
        offset: u64,
        size: u32,
    },
    /// `len` payload bytes follow as data frames.
    Write {
        ino: Ino,
        offset: u64,
        append: bool,
        len: u32,
    },
    Fsync {
        ino: Ino,
        datasync: bool,
    },
    Readdir {
        ino: Ino,
        cookie: u64,
        max: u32,
    },
    Readdirplus {
        ino: Ino,
        cookie: u64,
        max: u32,
    },
    Statfs {
        ino: Ino,
    },
    Access {
        ino: Ino,
        mask: u32,
    },
    Getxattr {
        ino: Ino,
        name: OsString,
    },
    /// `len` value bytes follow as data frames. `how`: 0 any, 1 create, 2 replace.
    Setxattr {
        ino: Ino,
        name: OsString,
        how: u8,
        len: u32,
    },
    Listxattr {
        ino: Ino,
    },
    Removexattr {
        ino: Ino,
        name: OsString,
    },
    Fallocate {
        ino: Ino,
        offset: u64,
        length: u64,
        mode: i32,
    },
    /// An opcode this version does not know (answered with `ENOSYS`).
    Unknown(u8),
}

impl Op {
    /// Payload bytes that follow this request as data frames.
    pub fn body_len(&self) -> u32 {
        match self {
            Op::Write { len, .. } | Op::Setxattr { len, .. } => *len,
            _ => 0,
        }
    }

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

const K_REQUEST: u8 = 1;
const K_REPLY: u8 = 2;
const K_DATA: u8 = 3;
const K_NOTIFY: u8 = 4;
const K_CANCEL: u8 = 5;
const K_PING: u8 = 6;
const K_PONG: u8 = 7;
const K_GOAWAY: u8 = 8;

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

// ---------------------------------------------------------------------------------------
// Encoding

struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn ino(&mut self, v: Ino) {
        self.u64(v.0);
    }
    /// `len:u16 bytes`, truncated to `max` (the encoder's callers never exceed it; a
    /// truncated field would fail the receiver's checks rather than corrupt the frame).
    fn bytes16(&mut self, b: &[u8], max: usize) {
        let b = b.get(..b.len().min(max)).unwrap_or_default();
        self.u16(u16::try_from(b.len()).unwrap_or(u16::MAX));
        self.0.extend_from_slice(b);
    }
    fn ts(&mut self, t: Timestamp) {
        self.i64(t.secs);
        self.u32(t.nsecs);
    }
    fn attr(&mut self, a: &Attr) {
        self.ino(a.ino);
        self.u8(file_type_code(a.kind));
        self.u16(a.perm);
        self.u32(a.nlink);
        self.u32(a.uid);
        self.u32(a.gid);
        self.u64(a.size);
        self.u64(a.blocks);
        self.u32(a.blksize);
        self.u64(a.rdev);
        self.ts(a.atime);
        self.ts(a.mtime);
        self.ts(a.ctime);
    }
    fn set_time(&mut self, t: Option<SetTime>) {
        match t {
            None => self.u8(0),
            Some(SetTime::Now) => self.u8(1),
            Some(SetTime::At(ts)) => {
                self.u8(2);
                self.ts(ts);
            }
        }
    }
    fn entry(&mut self, e: &DirEntry) {
        self.ino(e.ino);
        self.u8(file_type_code(e.kind));
        self.u64(e.cookie);
        self.bytes16(e.name.as_bytes(), MAX_STR);
    }
    fn change(&mut self, c: &WireChange) {
        match c {
            WireChange::Create { path, attr } => {
                self.u8(1);
                self.bytes16(path, MAX_STR);
                self.attr(attr);
            }
            WireChange::Update { path, attr } => {
                self.u8(2);
                self.bytes16(path, MAX_STR);
                self.attr(attr);
            }
            WireChange::Remove { path } => {
                self.u8(3);
                self.bytes16(path, MAX_STR);
            }
            WireChange::Rename { from, to, attr } => {
                self.u8(4);
                self.bytes16(from, MAX_STR);
                self.bytes16(to, MAX_STR);
                self.attr(attr);
            }
        }
    }
}

fn file_type_code(t: FileType) -> u8 {
    match t {
        FileType::Regular => 1,
        FileType::Directory => 2,
        FileType::Symlink => 3,
        FileType::Fifo => 4,
        FileType::Socket => 5,
        FileType::CharDevice => 6,
        FileType::BlockDevice => 7,
    }
}

fn file_type_from(code: u8) -> WireResult<FileType> {
    Ok(match code {
        1 => FileType::Regular,
        2 => FileType::Directory,
        3 => FileType::Symlink,
        4 => FileType::Fifo,
        5 => FileType::Socket,
        6 => FileType::CharDevice,
        7 => FileType::BlockDevice,
        _ => return Err(WireError::Invalid("file type")),
    })
}

fn op_code(op: &Op) -> u8 {
    match op {
        Op::Hello { .. } => 1,
        Op::Lookup { .. } => 2,
        Op::Forget { .. } => 3,
        Op::Getattr { .. } => 4,
        Op::Setattr { .. } => 5,
        Op::Readlink { .. } => 6,
        Op::Mknod { .. } => 7,
        Op::Mkdir { .. } => 8,
        Op::Unlink { .. } => 9,
        Op::Rmdir { .. } => 10,
        Op::Symlink { .. } => 11,
        Op::Rename { .. } => 12,
        Op::Link { .. } => 13,
        Op::Open { .. } => 14,
        Op::Create { .. } => 15,
        Op::Read { .. } => 16,
        Op::Write { .. } => 17,
        Op::Fsync { .. } => 18,
        Op::Readdir { .. } => 19,
        Op::Readdirplus { .. } => 20,
        Op::Statfs { .. } => 21,
        Op::Access { .. } => 22,
        Op::Getxattr { .. } => 23,
        Op::Setxattr { .. } => 24,
        Op::Listxattr { .. } => 25,
        Op::Removexattr { .. } => 26,
        Op::Fallocate { .. } => 27,
        Op::Unknown(code) => *code,
    }
}

impl Frame {
    /// Encodes this frame. Data frames are normally sent as [`data_header`] plus the
    /// chunk instead, without this copy.
    ///
    /// The caller keeps within the limits (at most [`MAX_ENTRIES`] entries,
    /// [`MAX_CHANGES`] changes, strings within [`MAX_STR`], a frame within
    /// [`MAX_FRAME`]); [`encode_notify`] splits a long batch.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc(Vec::with_capacity(64));
        e.u8(VERSION);
        match self {
            Frame::Request { id, req } => {
                e.u8(K_REQUEST);
                e.u64(*id);
                e.u8(op_code(&req.op));
                e.u32(req.ctx.uid);
                e.u32(req.ctx.gid);
                e.u32(req.ctx.pid);
                encode_op(&mut e, &req.op);
            }
            Frame::Reply { id, result } => {
                e.u8(K_REPLY);
                e.u64(*id);
                match result {
                    Ok(r) => {
                        e.u8(0);
                        encode_reply(&mut e, r);
                    }
                    Err(errno) => {
                        e.u8(1);
                        e.i32(errno.raw());
                    }
                }
            }
            Frame::Data { id, bytes } => {
                e.u8(K_DATA);
                e.u64(*id);
                e.0.extend_from_slice(bytes);
            }
            Frame::Notify { seq, changes } => {
                e.u8(K_NOTIFY);
                e.u64(*seq);
                e.u16(u16::try_from(changes.len()).unwrap_or(u16::MAX));
                for c in changes {
                    e.change(c);
                }
            }
            Frame::Cancel { id } => {
                e.u8(K_CANCEL);
                e.u64(*id);
            }
            Frame::Ping { id } => {
                e.u8(K_PING);
                e.u64(*id);
            }
            Frame::Pong { id } => {
                e.u8(K_PONG);
                e.u64(*id);
            }
            Frame::Goaway { reason } => {
                e.u8(K_GOAWAY);
                e.bytes16(truncate_text(reason).as_bytes(), MAX_TEXT);
            }
        }
        e.0
    }
}

fn truncate_text(s: &str) -> &str {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn encode_op(e: &mut Enc, op: &Op) {
    match op {
        Op::Hello {
            min_version,
            max_version,
        } => {
            e.u8(*min_version);
            e.u8(*max_version);
        }
        Op::Lookup { parent, name } | Op::Unlink { parent, name } | Op::Rmdir { parent, name } => {
            e.ino(*parent);
            e.bytes16(name.as_bytes(), MAX_STR);
        }
        Op::Forget { ino, nlookup } => {
            e.ino(*ino);
            e.u64(*nlookup);
        }
        Op::Getattr { ino } | Op::Readlink { ino } | Op::Statfs { ino } | Op::Listxattr { ino } => e.ino(*ino),
        Op::Setattr { ino, set } => {
            e.ino(*ino);
            let flags = u8::from(set.mode.is_some())
                | u8::from(set.uid.is_some()) << 1
                | u8::from(set.gid.is_some()) << 2
                | u8::from(set.size.is_some()) << 3
                | u8::from(set.fh.is_some()) << 4;
            e.u8(flags);
            e.u32(set.mode.unwrap_or(0));
            e.u32(set.uid.unwrap_or(0));
            e.u32(set.gid.unwrap_or(0));
            e.u64(set.size.unwrap_or(0));
            e.u64(set.fh.map_or(0, |f| f.0));
            e.set_time(set.atime);
            e.set_time(set.mtime);
        }
        Op::Mknod {
            parent,
            name,
            mode,
            umask,
            rdev,
        } => {
            e.ino(*parent);
            e.bytes16(name.as_bytes(), MAX_STR);
            e.u32(*mode);
            e.u32(*umask);
            e.u64(*rdev);
        }
        Op::Mkdir {
            parent,
            name,
            mode,
            umask,
        } => {
            e.ino(*parent);
            e.bytes16(name.as_bytes(), MAX_STR);
            e.u32(*mode);
            e.u32(*umask);
        }
        Op::Symlink { parent, name, target } => {
            e.ino(*parent);
            e.bytes16(name.as_bytes(), MAX_STR);
            e.bytes16(target.as_bytes(), MAX_STR);
        }
        Op::Rename {
            parent,
            name,
            newparent,
            newname,
            flags,
        } => {
            e.ino(*parent);
            e.bytes16(name.as_bytes(), MAX_STR);
            e.ino(*newparent);
            e.bytes16(newname.as_bytes(), MAX_STR);
            e.u32(*flags);
        }
        Op::Link {
            ino,
            newparent,
            newname,
        } => {
            e.ino(*ino);
            e.ino(*newparent);
            e.bytes16(newname.as_bytes(), MAX_STR);
        }
        Op::Open { ino, flags } => {
            e.ino(*ino);
            e.i32(*flags);
        }
        Op::Create {
            parent,
            name,
            mode,
            umask,
            flags,
        } => {
            e.ino(*parent);
            e.bytes16(name.as_bytes(), MAX_STR);
            e.u32(*mode);
            e.u32(*umask);
            e.i32(*flags);
        }
        Op::Read { ino, offset, size } => {
            e.ino(*ino);
            e.u64(*offset);
            e.u32(*size);
        }
        Op::Write {
            ino,
            offset,
            append,
            len,
        } => {
            e.ino(*ino);
            e.u64(*offset);
            e.u8(u8::from(*append));
            e.u32(*len);
        }
        Op::Fsync { ino, datasync } => {
            e.ino(*ino);
            e.u8(u8::from(*datasync));
        }
        Op::Readdir { ino, cookie, max } | Op::Readdirplus { ino, cookie, max } => {
            e.ino(*ino);
            e.u64(*cookie);
            e.u32(*max);
        }
        Op::Access { ino, mask } => {
            e.ino(*ino);
            e.u32(*mask);
        }
        Op::Getxattr { ino, name } | Op::Removexattr { ino, name } => {
            e.ino(*ino);
            e.bytes16(name.as_bytes(), MAX_STR);
        }
        Op::Setxattr { ino, name, how, len } => {
            e.ino(*ino);
            e.bytes16(name.as_bytes(), MAX_STR);
            e.u8(*how);
            e.u32(*len);
        }
        Op::Fallocate {
            ino,
            offset,
            length,
            mode,
        } => {
            e.ino(*ino);
            e.u64(*offset);
            e.u64(*length);
            e.i32(*mode);
        }
        Op::Unknown(_) => {}
    }
}

fn encode_reply(e: &mut Enc, r: &Reply) {
    match r {
        Reply::Unit => e.u8(0),
        Reply::Attr(a) => {
            e.u8(1);
            e.attr(a);
        }
        Reply::Target(t) => {
            e.u8(2);
            e.bytes16(t.as_bytes(), MAX_STR);
        }
        Reply::Bytes { len } => {
            e.u8(3);
            e.u32(*len);
        }
        Reply::Written(n) => {
            e.u8(4);
            e.u32(*n);
        }
        Reply::Entries(list) => {
            e.u8(5);
            e.u16(u16::try_from(list.len()).unwrap_or(u16::MAX));
            for x in list {
                e.entry(x);
            }
        }
        Reply::EntriesPlus(list) => {
            e.u8(6);
            e.u16(u16::try_from(list.len()).unwrap_or(u16::MAX));
            for x in list {
                e.entry(&x.entry);
                e.attr(&x.attr);
            }
        }
        Reply::StatFs(s) => {
            e.u8(7);
            e.u64(s.blocks);
            e.u64(s.bfree);
            e.u64(s.bavail);
            e.u64(s.files);
            e.u64(s.ffree);
            e.u32(s.bsize);
            e.u32(s.namelen);
            e.u32(s.frsize);
        }
        Reply::Hello {
            version,
            source_id,
            stable_inodes,
            max_io,
        } => {
            e.u8(8);
            e.u8(*version);
            e.bytes16(truncate_text(source_id).as_bytes(), MAX_TEXT);
            e.u8(u8::from(*stable_inodes));
            e.u32(*max_io);
        }
    }
}

/// Encoded size of a directory entry: what a reply of `n` of them costs.
pub fn entry_len(e: &DirEntry) -> usize {
    8 + 1 + 8 + 2 + e.name.len()
}

/// Encoded size of a change.
pub fn change_len(c: &WireChange) -> usize {
    1 + match c {
        WireChange::Create { path, .. } | WireChange::Update { path, .. } => 2 + path.len() + ATTR_LEN,
        WireChange::Remove { path } => 2 + path.len(),
        WireChange::Rename { from, to, .. } => 4 + from.len() + to.len() + ATTR_LEN,
    }
}

/// Encodes a batch of changes as as many notify frames as it takes (each within
/// [`MAX_FRAME`] and [`MAX_CHANGES`]), numbered from `*seq` on, in order.
pub fn encode_notify(seq: &mut u64, changes: Vec<WireChange>) -> Vec<Vec<u8>> {
    const HEADER: usize = 2 + 8 + 2;
    let mut frames = Vec::new();
    let mut cur: Vec<WireChange> = Vec::new();
    let mut size = HEADER;
    for c in changes {
        let n = change_len(&c);
        if !cur.is_empty() && (size + n > MAX_FRAME || cur.len() >= MAX_CHANGES) {
            frames.push(notify_frame(seq, std::mem::take(&mut cur)));
            size = HEADER;
        }
        size += n;
        cur.push(c);
    }
    if !cur.is_empty() {
        frames.push(notify_frame(seq, cur));
    }
    frames
}

fn notify_frame(seq: &mut u64, changes: Vec<WireChange>) -> Vec<u8> {
    let f = Frame::Notify { seq: *seq, changes }.encode();
    *seq = seq.wrapping_add(1);
    f
}

// ---------------------------------------------------------------------------------------
// Decoding

/// A cursor over a frame's bytes: every read is checked, nothing panics.
struct Dec {
    buf: Bytes,
}

impl Dec {
    fn need(&self, n: usize, what: &'static str) -> WireResult<()> {
        if self.buf.remaining() < n {
            Err(WireError::Truncated(what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &'static str) -> WireResult<u8> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self, what: &'static str) -> WireResult<u16> {
        self.need(2, what)?;
        Ok(self.buf.get_u16_le())
    }
    fn u32(&mut self, what: &'static str) -> WireResult<u32> {
        self.need(4, what)?;
        Ok(self.buf.get_u32_le())
    }
    fn i32(&mut self, what: &'static str) -> WireResult<i32> {
        self.need(4, what)?;
        Ok(self.buf.get_i32_le())
    }
    fn u64(&mut self, what: &'static str) -> WireResult<u64> {
        self.need(8, what)?;
        Ok(self.buf.get_u64_le())
    }
    fn i64(&mut self, what: &'static str) -> WireResult<i64> {
        self.need(8, what)?;
        Ok(self.buf.get_i64_le())
    }
    fn ino(&mut self, what: &'static str) -> WireResult<Ino> {
        self.u64(what).map(Ino)
    }
    fn bool(&mut self, what: &'static str) -> WireResult<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid(what)),
        }
    }
    /// `len:u16 bytes` with `len <= max`, checked before the copy.
    fn bytes16(&mut self, max: usize, what: &'static str) -> WireResult<Vec<u8>> {
        let len = usize::from(self.u16(what)?);
        if len > max {
            return Err(WireError::TooLong { what, len, max });
        }
        self.need(len, what)?;
        let mut v = vec![0u8; len];
        self.buf.copy_to_slice(&mut v);
        Ok(v)
    }
    fn os(&mut self, what: &'static str) -> WireResult<OsString> {
        self.bytes16(MAX_STR, what).map(OsString::from_vec)
    }
    fn text(&mut self, what: &'static str) -> WireResult<String> {
        let b = self.bytes16(MAX_TEXT, what)?;
        String::from_utf8(b).map_err(|_| WireError::Invalid(what))
    }
    fn ts(&mut self, what: &'static str) -> WireResult<Timestamp> {
        let secs = self.i64(what)?;
        let nsecs = self.u32(what)?;
        if nsecs >= 1_000_000_000 {
            return Err(WireError::Invalid("timestamp nanoseconds"));
        }
        Ok(Timestamp { secs, nsecs })
    }
    fn attr(&mut self) -> WireResult<Attr> {
        self.need(ATTR_LEN, "attributes")?;
        let ino = self.ino("attr ino")?;
        let kind = file_type_from(self.u8("attr kind")?)?;
        let perm = self.u16("attr perm")?;
        if perm > 0o7777 {
            return Err(WireError::Invalid("permission bits"));
        }
        Ok(Attr {
            ino,
            kind,
            perm,
            nlink: self.u32("attr nlink")?,
            uid: self.u32("attr uid")?,
            gid: self.u32("attr gid")?,
            size: self.u64("attr size")?,
            blocks: self.u64("attr blocks")?,
            blksize: self.u32("attr blksize")?,
            rdev: self.u64("attr rdev")?,
            atime: self.ts("attr atime")?,
            mtime: self.ts("attr mtime")?,
            ctime: self.ts("attr ctime")?,
        })
    }
    fn set_time(&mut self) -> WireResult<Option<SetTime>> {
        Ok(match self.u8("set time")? {
            0 => None,
            1 => Some(SetTime::Now),
            2 => Some(SetTime::At(self.ts("set time")?)),
            _ => return Err(WireError::Invalid("set time tag")),
        })
    }
    /// A count of items of at least `min_item` bytes each, checked against `max` and
    /// against the bytes left before any allocation.
    fn count(&mut self, max: usize, min_item: usize, what: &'static str) -> WireResult<usize> {
        let n = usize::from(self.u16(what)?);
        if n > max {
            return Err(WireError::TooLong { what, len: n, max });
        }
        if n.saturating_mul(min_item) > self.buf.remaining() {
            return Err(WireError::Truncated(what));
        }
        Ok(n)
    }
    fn entry(&mut self) -> WireResult<DirEntry> {
        let ino = self.ino("entry ino")?;
        let kind = file_type_from(self.u8("entry kind")?)?;
        let cookie = self.u64("entry cookie")?;
        let name = self.os("entry name")?;
        Ok(DirEntry {
            ino,
            kind,
            name,
            cookie,
        })
    }
    fn change(&mut self) -> WireResult<WireChange> {
        Ok(match self.u8("change tag")? {
            1 => WireChange::Create {
                path: self.bytes16(MAX_STR, "change path")?,
                attr: self.attr()?,
            },
            2 => WireChange::Update {
                path: self.bytes16(MAX_STR, "change path")?,
                attr: self.attr()?,
            },
            3 => WireChange::Remove {
                path: self.bytes16(MAX_STR, "change path")?,
            },
            4 => WireChange::Rename {
                from: self.bytes16(MAX_STR, "rename from")?,
                to: self.bytes16(MAX_STR, "rename to")?,
                attr: self.attr()?,
            },
            _ => return Err(WireError::Invalid("change tag")),
        })
    }
    fn finish(&self) -> WireResult<()> {
        match self.buf.remaining() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

impl Frame {
    /// Decodes one frame. Never panics; allocates at most about the frame's own length.
    pub fn decode(frame: Bytes) -> WireResult<Frame> {
        if frame.len() > MAX_FRAME {
            return Err(WireError::TooLong {
                what: "frame",
                len: frame.len(),
                max: MAX_FRAME,
            });
        }
        let mut d = Dec { buf: frame };
        let version = d.u8("version")?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let kind = d.u8("kind")?;
        let f = match kind {
            K_REQUEST => {
                let id = d.u64("request id")?;
                let code = d.u8("opcode")?;
                let ctx = RequestCtx::new(d.u32("uid")?, d.u32("gid")?, d.u32("pid")?);
                let op = decode_op(&mut d, code)?;
                Frame::Request {
                    id,
                    req: Request { ctx, op },
                }
            }
            K_REPLY => {
                let id = d.u64("reply id")?;
                let result = match d.u8("reply status")? {
                    0 => Ok(decode_reply(&mut d)?),
                    1 => Err(Errno::from_raw(d.i32("errno")?)),
                    _ => return Err(WireError::Invalid("reply status")),
                };
                Frame::Reply { id, result }
            }
            K_DATA => {
                let id = d.u64("data id")?;
                let len = d.buf.remaining();
                if len == 0 {
                    return Err(WireError::Invalid("empty data frame"));
                }
                if len > MAX_CHUNK {
                    return Err(WireError::TooLong {
                        what: "data chunk",
                        len,
                        max: MAX_CHUNK,
                    });
                }
                let bytes = d.buf.split_to(len);
                Frame::Data { id, bytes }
            }
            K_NOTIFY => {
                let seq = d.u64("notify seq")?;
                let n = d.count(MAX_CHANGES, 3, "change count")?;
                let mut changes = Vec::with_capacity(n);
                for _ in 0..n {
                    changes.push(d.change()?);
                }
                Frame::Notify { seq, changes }
            }
            K_CANCEL => Frame::Cancel {
                id: d.u64("cancel id")?,
            },
            K_PING => Frame::Ping { id: d.u64("ping id")? },
            K_PONG => Frame::Pong { id: d.u64("pong id")? },
            K_GOAWAY => {
                let b = d.bytes16(MAX_TEXT, "goaway reason")?;
                let reason = String::from_utf8_lossy(&b);
                Frame::Goaway {
                    reason: truncate_text(&reason).to_owned(),
                }
            }
            other => return Err(WireError::Kind(other)),
        };
        d.finish()?;
        Ok(f)
    }
}

fn decode_op(d: &mut Dec, code: u8) -> WireResult<Op> {
    Ok(match code {
        1 => Op::Hello {
            min_version: d.u8("hello")?,
            max_version: d.u8("hello")?,
        },
        2 => Op::Lookup {
            parent: d.ino("parent")?,
            name: d.os("name")?,
        },
        3 => Op::Forget {
            ino: d.ino("ino")?,
            nlookup: d.u64("nlookup")?,
        },
        4 => Op::Getattr { ino: d.ino("ino")? },
        5 => {
            let ino = d.ino("ino")?;
            let flags = d.u8("setattr flags")?;
            if flags & !0x1f != 0 {
                return Err(WireError::Invalid("setattr flags"));
            }
            let mode = d.u32("mode")?;
            let uid = d.u32("uid")?;
            let gid = d.u32("gid")?;
            let size = d.u64("size")?;
            let fh = d.u64("fh")?;
            let atime = d.set_time()?;
            let mtime = d.set_time()?;
            let set = SetAttr {
                mode: (flags & 1 != 0).then_some(mode),
                uid: (flags & 2 != 0).then_some(uid),
                gid: (flags & 4 != 0).then_some(gid),
                size: (flags & 8 != 0).then_some(size),
                fh: (flags & 16 != 0).then_some(vfs_core::Fh(fh)),
                atime,
                mtime,
            };
            Op::Setattr { ino, set }
        }
        6 => Op::Readlink { ino: d.ino("ino")? },
        7 => Op::Mknod {
            parent: d.ino("parent")?,
            name: d.os("name")?,
            mode: d.u32("mode")?,
            umask: d.u32("umask")?,
            rdev: d.u64("rdev")?,
        },
        8 => Op::Mkdir {
            parent: d.ino("parent")?,
            name: d.os("name")?,
            mode: d.u32("mode")?,
            umask: d.u32("umask")?,
        },
        9 => Op::Unlink {
            parent: d.ino("parent")?,
            name: d.os("name")?,
        },
        10 => Op::Rmdir {
            parent: d.ino("parent")?,
            name: d.os("name")?,
        },
        11 => Op::Symlink {
            parent: d.ino("parent")?,
            name: d.os("name")?,
            target: d.os("target")?,
        },
        12 => Op::Rename {
            parent: d.ino("parent")?,
            name: d.os("name")?,
            newparent: d.ino("newparent")?,
            newname: d.os("newname")?,
            flags: d.u32("rename flags")?,
        },
        13 => Op::Link {
            ino: d.ino("ino")?,
            newparent: d.ino("newparent")?,
            newname: d.os("newname")?,
        },
        14 => Op::Open {
            ino: d.ino("ino")?,
            flags: d.i32("open flags")?,
        },
        15 => Op::Create {
            parent: d.ino("parent")?,
            name: d.os("name")?,
            mode: d.u32("mode")?,
            umask: d.u32("umask")?,
            flags: d.i32("open flags")?,
        },
        16 => Op::Read {
            ino: d.ino("ino")?,
            offset: d.u64("offset")?,
            size: d.u32("size")?,
        },
        17 => {
            let (ino, offset, append) = (d.ino("ino")?, d.u64("offset")?, d.bool("append")?);
            let len = io_len(d.u32("write length")?, "write length")?;
            Op::Write {
                ino,
                offset,
                append,
                len,
            }
        }
        18 => Op::Fsync {
            ino: d.ino("ino")?,
            datasync: d.bool("datasync")?,
        },
        19 => Op::Readdir {
            ino: d.ino("ino")?,
            cookie: d.u64("cookie")?,
            max: d.u32("max")?,
        },
        20 => Op::Readdirplus {
            ino: d.ino("ino")?,
            cookie: d.u64("cookie")?,
            max: d.u32("max")?,
        },
        21 => Op::Statfs { ino: d.ino("ino")? },
        22 => Op::Access {
            ino: d.ino("ino")?,
            mask: d.u32("mask")?,
        },
        23 => Op::Getxattr {
            ino: d.ino("ino")?,
            name: d.os("xattr name")?,
        },
        24 => {
            let (ino, name) = (d.ino("ino")?, d.os("xattr name")?);
            let how = d.u8("xattr how")?;
            if how > 2 {
                return Err(WireError::Invalid("xattr how"));
            }
            let len = io_len(d.u32("xattr length")?, "xattr length")?;
            Op::Setxattr { ino, name, how, len }
        }
        25 => Op::Listxattr { ino: d.ino("ino")? },
        26 => Op::Removexattr {
            ino: d.ino("ino")?,
            name: d.os("xattr name")?,
        },
        27 => Op::Fallocate {
            ino: d.ino("ino")?,
            offset: d.u64("offset")?,
            length: d.u64("length")?,
            mode: d.i32("fallocate mode")?,
        },
        other => {
            // Unknown operation: its arguments are not ours to parse.
            d.buf.advance(d.buf.remaining());
            Op::Unknown(other)
        }
    })
}

fn io_len(len: u32, what: &'static str) -> WireResult<u32> {
    if len > MAX_IO {
        return Err(WireError::TooLong {
            what,
            len: len as usize,
            max: MAX_IO as usize,
        });
    }
    Ok(len)
}

fn decode_reply(d: &mut Dec) -> WireResult<Reply> {
    Ok(match d.u8("reply tag")? {
        0 => Reply::Unit,
        1 => Reply::Attr(d.attr()?),
        2 => Reply::Target(d.os("symlink target")?),
        3 => Reply::Bytes {
            len: io_len(d.u32("payload length")?, "payload length")?,
        },
        4 => Reply::Written(d.u32("written")?),
        5 => {
            let n = d.count(MAX_ENTRIES, 19, "entry count")?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(d.entry()?);
            }
            Reply::Entries(v)
        }
        6 => {
            let n = d.count(MAX_ENTRIES, 19 + ATTR_LEN, "entry count")?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let entry = d.entry()?;
                let attr = d.attr()?;
                v.push(DirEntryPlus { entry, attr });
            }
            Reply::EntriesPlus(v)
        }
        7 => Reply::StatFs(StatFs {
            blocks: d.u64("statfs")?,
            bfree: d.u64("statfs")?,
            bavail: d.u64("statfs")?,
            files: d.u64("statfs")?,
            ffree: d.u64("statfs")?,
            bsize: d.u32("statfs")?,
            namelen: d.u32("statfs")?,
            frsize: d.u32("statfs")?,
        }),
        8 => Reply::Hello {
            version: d.u8("hello version")?,
            source_id: d.text("source id")?,
            stable_inodes: d.bool("stable inodes")?,
            max_io: d.u32("max io")?,
        },
        _ => return Err(WireError::Invalid("reply tag")),
    })
}
