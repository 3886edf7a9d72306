//! Every operation that crosses the link, declared once.
//!
//! Invariant: [`with_ops!`] is the only list of operations. Each entry gives the
//! operation's method name and [`crate::wire::Op`] variant, its opcode, its fields in wire
//! order (with the codec and the error label of a field when they are not the field's own
//! type and name), the field that counts the payload following it as data frames (if any),
//! the kind of its successful answer ([`ReplyKind`]), and, when the owner can serve it by
//! one plain [`vfs_core::VirtualFs`] call, that call. From it are generated, each where it
//! belongs:
//!
//! - the [`crate::wire::Op`] enum, its opcode and payload length (`wire/frame.rs`),
//!   its encoding (`wire/encode.rs`) and its decoding (`wire/decode.rs`);
//! - one typed call per operation on the far side's session (`remote/session.rs`), which
//!   builds the request and checks the kind of the answer;
//! - the exporter's `Serve` trait and `dispatch` (`exporter/serve.rs`): a method per
//!   operation whose default is the plain call; the exporter overrides only the
//!   operations that have side effects (held handles, lookup counts, announcements).
//!
//! Adding an operation is one entry here (with a new opcode: opcodes are never reused)
//! plus, if it has any, its side effects in the exporter and its caching in `RemoteFs`.
//! The wire format of the existing entries is pinned by `tests/fixtures/frames-v1.hex`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use bytes::Bytes;
use vfs_core::{Attr, DirEntry, DirEntryPlus, Errno, StatFs, VfsError, VfsResult};

use crate::wire::{MAX_IO, Payload, Reply};

/// Calls `$m!` with the table of operations (see the [module docs](self)). Grammar of an
/// entry:
///
/// ```text
/// #[doc] method / Variant = opcode { field: Type [Codec] = "label", ... } body len_field
///     -> ReplyKind, plain |fs, ctx, body| expression;
/// ```
///
/// `[Codec]`, `= "label"`, `body len_field` and `, plain ...` are optional. The plain
/// expression sees the fields by value, `fs: &F`, `ctx: &RequestCtx` and `body:
/// Payload`, and evaluates to a `VfsResult` of the reply kind's served value.
///
/// This grammar is parsed here only: `$m!` receives each entry with every optional part
/// made explicit (empty brackets where absent), in this form:
///
/// ```text
/// method Variant opcode [#[doc]...] {field: Type [Codec?] ["label"?], ...} [len_field?] ReplyKind
///     [|fs, ctx, body| expression?];
/// ```
macro_rules! with_ops {
    (@norm $m:ident $(
        $(#[$doc:meta])*
        $snake:ident / $V:ident = $code:literal {
            $( $f:ident : $ty:ty $([$codec:ty])? $(= $what:literal)? ),* $(,)?
        } $(body $blen:ident)? -> $R:ty
        $(, plain |$fs:ident, $ctx:ident, $body:ident| $plain:expr)? ;
    )*) => {
        $m! { $( $snake $V $code [$(#[$doc])*] {$($f: $ty [$($codec)?] [$($what)?]),*} [$($blen)?] $R [$(|$fs, $ctx, $body| $plain)?]; )* }
    };
    ($m:ident) => {
        $crate::ops::with_ops! { @norm $m
            /// First request of a link: which versions the client speaks.
            hello / Hello = 1 { min_version: u8 = "hello", max_version: u8 = "hello" } -> Reply;
            lookup / Lookup = 2 { parent: Ino, name: OsString } -> Attr,
                plain |fs, ctx, body| fs.lookup(ctx, parent, Name::new(&name)?).await;
            forget / Forget = 3 { ino: Ino, nlookup: u64 } -> ();
            getattr / Getattr = 4 { ino: Ino } -> Attr;
            setattr / Setattr = 5 { ino: Ino, set: SetAttr } -> Attr,
                plain |fs, ctx, body| fs.setattr(ctx, ino, set).await;
            readlink / Readlink = 6 { ino: Ino } -> OsString,
                plain |fs, ctx, body| fs.readlink(ctx, ino).await;
            mknod / Mknod = 7 { parent: Ino, name: OsString, mode: u32, umask: u32, rdev: u64 } -> Attr,
                plain |fs, ctx, body| fs.mknod(ctx, parent, Name::new(&name)?, mode, umask, rdev).await;
            mkdir / Mkdir = 8 { parent: Ino, name: OsString, mode: u32, umask: u32 } -> Attr,
                plain |fs, ctx, body| fs.mkdir(ctx, parent, Name::new(&name)?, mode, umask).await;
            unlink / Unlink = 9 { parent: Ino, name: OsString } -> (),
                plain |fs, ctx, body| fs.unlink(ctx, parent, Name::new(&name)?).await;
            rmdir / Rmdir = 10 { parent: Ino, name: OsString } -> (),
                plain |fs, ctx, body| fs.rmdir(ctx, parent, Name::new(&name)?).await;
            symlink / Symlink = 11 { parent: Ino, name: OsString, target: OsString } -> Attr,
                plain |fs, ctx, body| fs.symlink(ctx, parent, Name::new(&name)?, &target).await;
            rename / Rename = 12 {
                parent: Ino, name: OsString, newparent: Ino, newname: OsString, flags: u32 = "rename flags"
            } -> (),
                plain |fs, ctx, body| {
                    let flags = RenameFlags(flags).validate()?;
                    fs.rename(ctx, parent, Name::new(&name)?, newparent, Name::new(&newname)?, flags).await
                };
            link / Link = 13 { ino: Ino, newparent: Ino, newname: OsString } -> Attr,
                plain |fs, ctx, body| fs.link(ctx, ino, newparent, Name::new(&newname)?).await;
            /// Opens `ino` with `flags` for the caller (access checked, `O_TRUNC` applied);
            /// the exporter keeps the file open until the matching [`Op::Release`], and
            /// answers with its attributes.
            open / Open = 14 { ino: Ino, flags: i32 = "open flags" } -> Attr;
            create / Create = 15 {
                parent: Ino, name: OsString, mode: u32, umask: u32, flags: i32 = "open flags"
            } -> Attr;
            read / Read = 16 { ino: Ino, offset: u64, size: u32 } -> Data;
            /// `len` payload bytes follow as data frames.
            write / Write = 17 {
                ino: Ino, offset: u64, append: bool, len: u32 [IoLen] = "write length"
            } body len -> Written;
            fsync / Fsync = 18 { ino: Ino, datasync: bool } -> ();
            readdir / Readdir = 19 { ino: Ino, cookie: u64, max: u32 } -> Vec<DirEntry>,
                plain |fs, ctx, body| fs.readdir(ctx, ino, cookie, entries_max(max)).await;
            readdirplus / Readdirplus = 20 { ino: Ino, cookie: u64, max: u32 } -> Vec<DirEntryPlus>,
                plain |fs, ctx, body| fs.readdirplus(ctx, ino, cookie, entries_max(max)).await;
            statfs / Statfs = 21 { ino: Ino } -> StatFs,
                plain |fs, ctx, body| fs.statfs(ctx, ino).await;
            access / Access = 22 { ino: Ino, mask: u32 } -> (),
                plain |fs, ctx, body| fs.access(ctx, ino, mask).await;
            getxattr / Getxattr = 23 { ino: Ino, name: OsString = "xattr name" } -> Data,
                plain |fs, ctx, body| fs.getxattr(ctx, ino, &name).await;
            /// `len` value bytes follow as data frames. `how`: 0 any, 1 create, 2 replace.
            setxattr / Setxattr = 24 {
                ino: Ino,
                name: OsString = "xattr name",
                how: u8 [XattrHow] = "xattr how",
                len: u32 [IoLen] = "xattr length"
            } body len -> (),
                plain |fs, ctx, body| fs.setxattr(ctx, ino, &name, &body.into_bytes(), xattr_set(how)).await;
            listxattr / Listxattr = 25 { ino: Ino } -> Data,
                plain |fs, ctx, body| fs.listxattr(ctx, ino).await.map(|names| pack_names(&names));
            removexattr / Removexattr = 26 { ino: Ino, name: OsString = "xattr name" } -> (),
                plain |fs, ctx, body| fs.removexattr(ctx, ino, &name).await;
            fallocate / Fallocate = 27 {
                ino: Ino, offset: u64, length: u64, mode: i32 = "fallocate mode"
            } -> ();
            /// The caller closed one handle of `ino` it had opened with [`Op::Open`] or
            /// [`Op::Create`] (the exporter keeps the file open until the last is closed).
            release / Release = 28 { ino: Ino } -> ();
        }
    };
}
pub(crate) use with_ops;

/// The kind of a successful answer: how the owner turns what it served into a [`Reply`]
/// (plus payload), and how the far side checks and takes it back.
pub trait ReplyKind {
    /// What the owner serves.
    type Served;
    /// What the far side receives.
    type Received;
    /// The reply for `v`, with its payload.
    fn reply(v: Self::Served) -> VfsResult<(Reply, Bytes)>;
    /// The value of a reply to operation `what`; any other kind of reply is a protocol
    /// error (`EIO`).
    fn take(r: (Reply, Payload), what: &'static str) -> VfsResult<Self::Received>;
    /// Shows every owner and group in `v` as `uid:gid` (the far side's id mapping,
    /// [`crate::remote::IdMap`]); kinds without attributes have nothing to map.
    fn show_as(v: &mut Self::Received, uid: u32, gid: u32) {
        let _ = (v, uid, gid);
    }
}

/// A reply that does not fit its operation.
pub(crate) fn protocol(what: &'static str) -> VfsError {
    tracing::debug!("unexpected answer from the peer: {what}");
    VfsError::Io(format!("unexpected answer from the peer to {what}"))
}

/// Payload bytes (read data, an xattr value, a NUL-separated xattr list), at most
/// [`MAX_IO`].
pub struct Data;
/// A count of bytes written.
pub struct Written;

macro_rules! reply_kind {
    ($t:ty, $pat:pat => $v:expr, $make:expr) => {
        reply_kind!($t, $pat => $v, $make, |_v, _uid, _gid| {});
    };
    ($t:ty, $pat:pat => $v:expr, $make:expr, |$mv:ident, $mu:ident, $mg:ident| $map:block) => {
        impl ReplyKind for $t {
            type Served = $t;
            type Received = $t;
            fn reply(v: $t) -> VfsResult<(Reply, Bytes)> {
                Ok(($make(v), Bytes::new()))
            }
            fn take(r: (Reply, Payload), what: &'static str) -> VfsResult<$t> {
                match r.0 {
                    $pat => Ok($v),
                    _ => Err(protocol(what)),
                }
            }
            fn show_as($mv: &mut $t, $mu: u32, $mg: u32) $map
        }
    };
}

reply_kind!((), Reply::Unit => (), |()| Reply::Unit);
reply_kind!(Attr, Reply::Attr(a) => a, Reply::Attr, |a, uid, gid| {
    a.uid = uid;
    a.gid = gid;
});
reply_kind!(OsString, Reply::Target(t) => t, Reply::Target);
reply_kind!(Vec<DirEntry>, Reply::Entries(v) => v, Reply::Entries);
reply_kind!(Vec<DirEntryPlus>, Reply::EntriesPlus(v) => v, Reply::EntriesPlus, |v, uid, gid| {
    for e in v.iter_mut() {
        e.attr.uid = uid;
        e.attr.gid = gid;
    }
});
reply_kind!(StatFs, Reply::StatFs(s) => s, Reply::StatFs);

/// `Hello` is answered with [`Reply::Hello`], which the session reads itself.
impl ReplyKind for Reply {
    type Served = Reply;
    type Received = Reply;
    fn reply(v: Reply) -> VfsResult<(Reply, Bytes)> {
        Ok((v, Bytes::new()))
    }
    fn take(r: (Reply, Payload), _what: &'static str) -> VfsResult<Reply> {
        Ok(r.0)
    }
}

impl ReplyKind for Written {
    type Served = u32;
    type Received = u32;
    fn reply(n: u32) -> VfsResult<(Reply, Bytes)> {
        Ok((Reply::Written(n), Bytes::new()))
    }
    fn take(r: (Reply, Payload), what: &'static str) -> VfsResult<u32> {
        match r.0 {
            Reply::Written(n) => Ok(n),
            _ => Err(protocol(what)),
        }
    }
}

impl ReplyKind for Data {
    type Served = Bytes;
    type Received = Payload;
    /// `E2BIG` for more than [`MAX_IO`] bytes (a reply the peer could not decode).
    fn reply(b: Bytes) -> VfsResult<(Reply, Bytes)> {
        match u32::try_from(b.len()) {
            Ok(len) if len <= MAX_IO => Ok((Reply::Bytes { len }, b)),
            _ => Err(VfsError::Os(Errno::E2BIG)),
        }
    }
    fn take(r: (Reply, Payload), what: &'static str) -> VfsResult<Payload> {
        match r.0 {
            Reply::Bytes { len } if len as usize == r.1.len() => Ok(r.1),
            _ => Err(protocol(what)),
        }
    }
}

/// xattr names as `listxattr(2)` lists them: each followed by a NUL.
pub(crate) fn pack_names(names: &[OsString]) -> Bytes {
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    Bytes::from(out)
}
