//! Decoding: bytes to frames.
//!
//! Invariant: decoding never panics and never allocates more than the frame's own length:
//! every count and length is checked against its maximum and against the bytes left
//! before anything is allocated for it, and a frame must be consumed exactly (no
//! trailing bytes). Operations are decoded by code generated from the table of
//! operations, field by field in table order, so they read what `encode` wrote.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use bytes::{Buf, Bytes};
use vfs_core::{Attr, DirEntry, DirEntryPlus, Errno, FileType, Ino, RequestCtx, SetAttr, SetTime, StatFs, Timestamp};

use super::frame::{
    Frame, K_CANCEL, K_DATA, K_GOAWAY, K_NOTIFY, K_PING, K_PONG, K_REPLY, K_REQUEST, Op, Reply, Request, WireChange,
    truncate_text,
};
use super::{
    ATTR_LEN, IoLen, MAX_CHANGES, MAX_CHUNK, MAX_ENTRIES, MAX_IO, MAX_STR, MAX_TEXT, VERSION, WireError, WireResult,
    XattrHow, field_codec, field_what,
};
use crate::transport::MAX_FRAME;

fn file_type_from(code: u8) -> WireResult<FileType> {
    FileType::from_code(code).ok_or(WireError::Invalid("file type"))
}

// ---------------------------------------------------------------------------------------
// Decoding

/// A cursor over a frame's bytes: every read is checked, nothing panics.
pub(super) struct Dec {
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

/// How a field of an operation is read (`C` is the field's codec, `T` its type).
pub(super) trait Decode<T> {
    fn dec(d: &mut Dec, what: &'static str) -> WireResult<T>;
}

macro_rules! decode_as {
    ($($t:ty => $m:ident;)*) => {
        $(impl Decode<$t> for $t {
            fn dec(d: &mut Dec, what: &'static str) -> WireResult<$t> {
                d.$m(what)
            }
        })*
    };
}

decode_as! {
    u8 => u8;
    u32 => u32;
    i32 => i32;
    u64 => u64;
    bool => bool;
    Ino => ino;
    OsString => os;
}

impl Decode<SetAttr> for SetAttr {
    fn dec(d: &mut Dec, _what: &'static str) -> WireResult<SetAttr> {
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
        Ok(SetAttr {
            mode: (flags & 1 != 0).then_some(mode),
            uid: (flags & 2 != 0).then_some(uid),
            gid: (flags & 4 != 0).then_some(gid),
            size: (flags & 8 != 0).then_some(size),
            fh: (flags & 16 != 0).then_some(vfs_core::Fh(fh)),
            atime,
            mtime,
        })
    }
}

impl Decode<u32> for IoLen {
    fn dec(d: &mut Dec, what: &'static str) -> WireResult<u32> {
        io_len(d.u32(what)?, what)
    }
}

impl Decode<u8> for XattrHow {
    fn dec(d: &mut Dec, what: &'static str) -> WireResult<u8> {
        match d.u8(what)? {
            how @ 0..=2 => Ok(how),
            _ => Err(WireError::Invalid(what)),
        }
    }
}

/// Generates `decode_op` from the table: each field through its codec, in table order.
macro_rules! decode_op {
    ($($snake:ident $V:ident $code:literal [$(#[$doc:meta])*] {$($f:ident: $ty:ty [$($codec:ty)?] [$($what:literal)?]),*} [$($blen:ident)?] $R:ty [$($plain:tt)*];)*) => {
        /// The arguments of operation `code`; an unknown opcode's are skipped.
        fn decode_op(d: &mut Dec, code: u8) -> WireResult<Op> {
            Ok(match code {
                $( $code => Op::$V {
                    $( $f: <field_codec!($ty $(, $codec)?) as Decode<$ty>>::dec(d, field_what!($f $(, $what)?))?, )*
                }, )*
                other => {
                    // Unknown operation: its arguments are not ours to parse.
                    d.buf.advance(d.buf.remaining());
                    Op::Unknown(other)
                }
            })
        }
    };
}

crate::ops::with_ops!(decode_op);

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
