//! Encoding: frames to bytes.
//!
//! Invariant: the encoder writes exactly the format of the module docs of [`super`]
//! (pinned for version 1 by `tests/fixtures/frames-v1.hex`) and never panics; a value over
//! a limit is cut to it (the receiver then refuses it), so an encoded frame always
//! decodes structurally. Operations are encoded by code generated from the table of
//! operations, field by field in table order.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use vfs_core::{Attr, DirEntry, Ino, SetAttr, SetTime, Timestamp};

use super::frame::{
    Frame, K_CANCEL, K_DATA, K_GOAWAY, K_NOTIFY, K_PING, K_PONG, K_REPLY, K_REQUEST, Op, Reply, WireChange,
    truncate_text,
};
use super::{ATTR_LEN, IoLen, MAX_CHANGES, MAX_STR, MAX_TEXT, VERSION, XattrHow, field_codec};
use crate::transport::MAX_FRAME;

// ---------------------------------------------------------------------------------------
// Encoding

/// A frame being written.
pub(super) struct Enc(Vec<u8>);

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
        self.u8(a.kind.code());
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
        self.u8(e.kind.code());
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

impl Frame {
    /// Encodes this frame. Data frames are normally sent as [`data_header`](crate::wire::data_header) plus the
    /// chunk instead, without this copy.
    ///
    /// The caller keeps within the limits (at most [`MAX_ENTRIES`](super::MAX_ENTRIES) entries,
    /// [`MAX_CHANGES`] changes, strings within [`MAX_STR`], a frame within
    /// [`MAX_FRAME`]); [`encode_notify`] splits a long batch.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc(Vec::with_capacity(64));
        e.u8(VERSION);
        match self {
            Frame::Request { id, req } => {
                e.u8(K_REQUEST);
                e.u64(*id);
                e.u8(req.op.code());
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

/// How a field of an operation is written (`C` is the field's codec, `T` its type).
pub(super) trait Encode<T> {
    fn enc(v: &T, e: &mut Enc);
}

macro_rules! encode_as {
    ($($t:ty => |$v:ident, $e:ident| $body:expr;)*) => {
        $(impl Encode<$t> for $t {
            fn enc($v: &$t, $e: &mut Enc) {
                $body
            }
        })*
    };
}

encode_as! {
    u8 => |v, e| e.u8(*v);
    u32 => |v, e| e.u32(*v);
    i32 => |v, e| e.i32(*v);
    u64 => |v, e| e.u64(*v);
    bool => |v, e| e.u8(u8::from(*v));
    Ino => |v, e| e.ino(*v);
    OsString => |v, e| e.bytes16(v.as_bytes(), MAX_STR);
    SetAttr => |set, e| {
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
    };
}

impl Encode<u32> for IoLen {
    fn enc(v: &u32, e: &mut Enc) {
        e.u32(*v);
    }
}

impl Encode<u8> for XattrHow {
    fn enc(v: &u8, e: &mut Enc) {
        e.u8(*v);
    }
}

/// Generates `encode_op` from the table: each field through its codec, in table order.
macro_rules! encode_op {
    ($($snake:ident $V:ident $code:literal [$(#[$doc:meta])*] {$($f:ident: $ty:ty [$($codec:ty)?] [$($what:literal)?]),*} [$($blen:ident)?] $R:ty [$($plain:tt)*];)*) => {
        /// The arguments of `op` (its opcode is in the request header).
        fn encode_op(e: &mut Enc, op: &Op) {
            match op {
                $( Op::$V { $($f),* } => {
                    $( <field_codec!($ty $(, $codec)?) as Encode<$ty>>::enc($f, e); )*
                } )*
                Op::Unknown(_) => {}
            }
        }
    };
}

crate::ops::with_ops!(encode_op);

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
