//! Requests to backend calls, generated from the table of operations (`crate::ops`).
//!
//! Invariant: this module only translates. [`Serve`] has one method per operation; an
//! operation the table gives a plain [`VirtualFs`] call for defaults to it ([`plain`]),
//! and [`dispatch`] routes each request to its method and turns the answer into a reply
//! of the kind the table declares. Whatever the owner must remember or tell (held
//! handles, lookup counts, announcements) lives in the implementor (`super::link`),
//! which overrides only the operations that have such side effects.

use std::ffi::OsString;
use std::future::Future;

use bytes::Bytes;
use vfs_core::{
    Attr, DirEntry, DirEntryPlus, Errno, Ino, Name, RenameFlags, RequestCtx, SetAttr, StatFs, VfsResult, VirtualFs,
    XattrSet,
};

use crate::ops::{Data, ReplyKind, Written, pack_names};
use crate::wire::{MAX_ENTRIES, Op, Payload, Reply};

/// What a request is answered with: a reply and its payload, or an errno.
pub(super) type Answer = Result<(Reply, Bytes), Errno>;

/// What serving an operation of reply kind `R` gives.
type Served<R> = VfsResult<<R as ReplyKind>::Served>;

/// A directory page size a peer may ask for: 1 to [`MAX_ENTRIES`].
fn entries_max(max: u32) -> usize {
    (max as usize).clamp(1, MAX_ENTRIES)
}

/// How a `setxattr` sets, from its wire code (the decoder admits 0 to 2).
fn xattr_set(how: u8) -> XattrSet {
    match how {
        1 => XattrSet::Create,
        2 => XattrSet::Replace,
        _ => XattrSet::Any,
    }
}

macro_rules! serve_ops {
    (@plain $snake:ident ($($f:ident: $ty:ty),*) $R:ty []) => {};
    (@plain $snake:ident ($($f:ident: $ty:ty),*) $R:ty [|$fs:ident, $ctx:ident, $body:ident| $plain:expr]) => {
        #[allow(unused_variables)] // `body` and `ctx` where the call does not use them
        #[allow(clippy::too_many_arguments)] // the arguments of the VirtualFs method, plus the payload
        pub(in crate::exporter) async fn $snake<F: VirtualFs>(
            $fs: &F,
            $ctx: &RequestCtx,
            $($f: $ty,)*
            $body: Payload,
        ) -> Served<$R> {
            $plain
        }
    };
    // One operation's method: required, or defaulting to its plain call.
    (@method $(#[$doc:meta])* $snake:ident ($($f:ident: $ty:ty),*) $R:ty []) => {
        $(#[$doc])* #[allow(clippy::too_many_arguments)] // the VirtualFs method's arguments
        fn $snake(&self, ctx: RequestCtx, $($f: $ty,)* body: Payload) -> impl Future<Output = Served<$R>> + Send;
    };
    (@method $(#[$doc:meta])* $snake:ident ($($f:ident: $ty:ty),*) $R:ty [|$fs:ident, $ctx:ident, $body:ident| $plain:expr]) => {
        $(#[$doc])* #[allow(clippy::too_many_arguments)] // the VirtualFs method's arguments
        fn $snake(&self, ctx: RequestCtx, $($f: $ty,)* body: Payload) -> impl Future<Output = Served<$R>> + Send {
            async move { plain::$snake(self.backend(), &ctx, $($f,)* body).await }
        }
    };
    ($($snake:ident $V:ident $code:literal [$(#[$doc:meta])*] {$($f:ident: $ty:ty [$($codec:ty)?] [$($what:literal)?]),*} [$($blen:ident)?] $R:ty [$($plain:tt)*];)*) => {
        /// The plain backend call of each operation the table gives one for: the
        /// arguments translated (names validated, flags and page sizes bounded), nothing
        /// remembered, nothing announced.
        pub(super) mod plain {
            use super::*;
            $( serve_ops!(@plain $snake ($($f: $ty),*) $R [$($plain)*]); )*
        }

        /// One method per operation, with the operation's fields as arguments. Those with
        /// a plain call default to it.
        pub(super) trait Serve: Sync {
            /// The backend.
            type Fs: VirtualFs;
            /// The backend the plain calls go to.
            fn backend(&self) -> &Self::Fs;
            $( serve_ops!(@method $(#[$doc])* $snake ($($f: $ty),*) $R [$($plain)*]); )*
        }

        /// Answers one request through `s`.
        pub(super) async fn dispatch<S: Serve>(s: &S, ctx: RequestCtx, op: Op, body: Payload) -> Answer {
            match op {
                $( Op::$V { $($f),* } => s
                    .$snake(ctx, $($f,)* body)
                    .await
                    .and_then(<$R as ReplyKind>::reply)
                    .map_err(|e| e.errno()), )*
                Op::Unknown(code) => {
                    tracing::debug!(code, "unknown operation");
                    Err(Errno::ENOSYS)
                }
            }
        }
    };
}

crate::ops::with_ops!(serve_ops);
