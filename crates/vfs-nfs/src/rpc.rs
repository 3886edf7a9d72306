//! ONC RPC over TCP (RFC 5531): record marking, call headers, replies.
//!
//! Invariant: a record is read into memory only up to [`MAX_RECORD`] bytes, whatever its
//! fragment headers claim; a longer one ends the connection before anything is allocated
//! for it. A call whose header cannot be decoded far enough to know its `xid` ends the
//! connection (there is no one to answer); once the `xid` is known, every defect gets a
//! reply: `RPC_MISMATCH`, `AUTH_ERROR`, `PROG_UNAVAIL`, `PROG_MISMATCH`, `PROC_UNAVAIL` or
//! `GARBAGE_ARGS`. Nothing here panics on any input.

use std::io;

use bytes::Bytes;
use nfs3_types::rpc::{
    accept_stat_data, accepted_reply, auth_stat, msg_body, opaque_auth, rejected_reply, reply_body, rpc_msg,
};
use nfs3_types::xdr_codec::Pack;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::xdr::{Garbage, XdrReader};

/// The largest record accepted: a 1 MiB WRITE plus its header and arguments, rounded up.
pub const MAX_RECORD: usize = (1 << 20) + (64 << 10);
/// The largest READ or WRITE payload the server advertises (`rtmax`, `wtmax`).
pub const MAX_IO: u32 = 1 << 20;

const LAST_FRAGMENT: u32 = 0x8000_0000;
const RPC_VERSION: u32 = 2;
const MSG_CALL: u32 = 0;
const AUTH_NULL: u32 = 0;
const AUTH_UNIX: u32 = 1;
/// RFC 5531: an `opaque_auth` body is at most 400 bytes.
const MAX_AUTH_BODY: usize = 400;
/// RFC 5531: `machinename<255>`, `gids<16>`.
const MAX_MACHINE_NAME: usize = 255;
const MAX_GIDS: u32 = 16;

/// Why a record could not be read.
#[derive(Debug)]
pub enum RecordError {
    /// The fragments add up to more than the limit (the claimed length, in bytes).
    TooLarge(u64),
    /// The connection failed or ended in the middle of a record.
    Io(io::Error),
}

/// Reads one record (all its fragments) into `buf`, which is cleared first. `Ok(false)`:
/// the peer closed the connection cleanly between records.
pub async fn read_record<R: AsyncRead + Unpin>(r: &mut R, max: usize, buf: &mut Vec<u8>) -> Result<bool, RecordError> {
    buf.clear();
    loop {
        let mut mark = [0u8; 4];
        match r.read_exact(&mut mark).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && buf.is_empty() => return Ok(false),
            Err(e) => return Err(RecordError::Io(e)),
        }
        let mark = u32::from_be_bytes(mark);
        let len = (mark & !LAST_FRAGMENT) as usize;
        let total = buf.len() as u64 + len as u64;
        if total > max as u64 {
            return Err(RecordError::TooLarge(total));
        }
        let start = buf.len();
        buf.resize(start + len, 0);
        r.read_exact(&mut buf[start..]).await.map_err(RecordError::Io)?;
        if mark & LAST_FRAGMENT != 0 {
            return Ok(true);
        }
    }
}

/// Who sent a call, as its credential says.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Cred {
    /// `AUTH_NULL` (or `AUTH_NONE`): anonymous.
    Null,
    /// `AUTH_UNIX` (`AUTH_SYS`): the client's word for its uid and groups.
    Unix {
        /// Effective uid.
        uid: u32,
        /// Effective gid.
        gid: u32,
        /// Supplementary groups (at most 16).
        gids: Vec<u32>,
    },
}

/// A decoded call header; the procedure's arguments follow it in the record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Call {
    /// Transaction id, echoed in the reply.
    pub xid: u32,
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub proc_: u32,
    /// The caller's credential.
    pub cred: Cred,
}

/// A record that is not a call this server can process.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum BadCall {
    /// Not even an `xid` and a `CALL` marker: close the connection.
    Unreadable,
    /// Answer with this reply (already encoded, record mark included).
    Reply(Reply),
}

/// Decodes the header of the call in `record`; on success also returns the offset of its
/// arguments.
pub fn decode_call(record: &[u8]) -> Result<(Call, usize), BadCall> {
    let mut r = XdrReader::new(record);
    let (Ok(xid), Ok(MSG_CALL)) = (r.u32(), r.u32()) else {
        return Err(BadCall::Unreadable);
    };
    let garbage = || BadCall::Reply(accepted(xid, &accept_stat_data::GARBAGE_ARGS, None));
    let rpcvers = r.u32().map_err(|_| garbage())?;
    if rpcvers != RPC_VERSION {
        return Err(BadCall::Reply(denied(
            xid,
            rejected_reply::rpc_mismatch(RPC_VERSION, RPC_VERSION),
        )));
    }
    let (prog, vers, proc_) = match (r.u32(), r.u32(), r.u32()) {
        (Ok(p), Ok(v), Ok(c)) => (p, v, c),
        _ => return Err(garbage()),
    };
    let bad_cred = || BadCall::Reply(denied(xid, rejected_reply::auth_error(auth_stat::AUTH_BADCRED)));
    let flavor = r.u32().map_err(|_| bad_cred())?;
    let body = r.opaque(MAX_AUTH_BODY).map_err(|_| bad_cred())?;
    let cred = match flavor {
        AUTH_NULL => Cred::Null,
        AUTH_UNIX => decode_auth_unix(body).map_err(|_| bad_cred())?,
        _ => {
            return Err(BadCall::Reply(denied(
                xid,
                rejected_reply::auth_error(auth_stat::AUTH_REJECTEDCRED),
            )));
        }
    };
    // The verifier: any flavor, ignored (AUTH_NULL and AUTH_UNIX carry none that matters).
    let bad_verf = || BadCall::Reply(denied(xid, rejected_reply::auth_error(auth_stat::AUTH_BADVERF)));
    r.u32().map_err(|_| bad_verf())?;
    r.opaque(MAX_AUTH_BODY).map_err(|_| bad_verf())?;
    let args_at = record.len() - r.remaining();
    Ok((
        Call {
            xid,
            prog,
            vers,
            proc_,
            cred,
        },
        args_at,
    ))
}

fn decode_auth_unix(body: &[u8]) -> Result<Cred, Garbage> {
    let mut r = XdrReader::new(body);
    let _stamp = r.u32()?;
    let _machine = r.opaque(MAX_MACHINE_NAME)?;
    let uid = r.u32()?;
    let gid = r.u32()?;
    let n = r.u32()?;
    if n > MAX_GIDS {
        return Err(Garbage);
    }
    let gids = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
    r.finish()?;
    Ok(Cred::Unix { uid, gid, gids })
}

/// An encoded reply: `head` (record mark included), then `data` and its XDR padding. A
/// READ's data travels as the `Bytes` the backend returned, without being copied into the
/// head.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Reply {
    /// Record mark, reply header and result, up to and including the data's length word.
    pub head: Vec<u8>,
    /// Opaque data that ends the result (empty for most replies); padded on the wire.
    pub data: Bytes,
}

impl Reply {
    /// The padding the data needs.
    pub fn padding(&self) -> &'static [u8] {
        &[0u8; 3][..crate::xdr::pad(self.data.len())]
    }

    /// The whole reply as one buffer, record mark included.
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.head[..], &self.data[..], self.padding()].concat()
    }
}

/// Encodes an accepted reply (`stat`, then `body` if `stat` is `SUCCESS`) with its record
/// mark.
pub fn accepted(xid: u32, stat: &accept_stat_data, body: Option<&[u8]>) -> Reply {
    accepted_with_data(xid, stat, body.unwrap_or_default(), Bytes::new())
}

/// Like [`accepted`], with opaque `data` after `body` (which ends with its length).
pub fn accepted_with_data(xid: u32, stat: &accept_stat_data, body: &[u8], data: Bytes) -> Reply {
    let msg = rpc_msg {
        xid,
        body: msg_body::REPLY(reply_body::MSG_ACCEPTED(accepted_reply {
            verf: opaque_auth::default(),
            reply_data: clone_stat(stat),
        })),
    };
    frame(&msg, body, data)
}

/// The reply to every call of a client outside the allowlist: `AUTH_ERROR`, `AUTH_TOOWEAK`
/// ("rejected for security reasons").
pub fn refused(xid: u32) -> Reply {
    denied(xid, rejected_reply::auth_error(auth_stat::AUTH_TOOWEAK))
}

/// Encodes a denied reply.
pub fn denied(xid: u32, why: rejected_reply) -> Reply {
    let msg = rpc_msg {
        xid,
        body: msg_body::REPLY(reply_body::MSG_DENIED(why)),
    };
    frame(&msg, &[], Bytes::new())
}

fn clone_stat(s: &accept_stat_data) -> accept_stat_data {
    match s {
        accept_stat_data::SUCCESS => accept_stat_data::SUCCESS,
        accept_stat_data::PROG_UNAVAIL => accept_stat_data::PROG_UNAVAIL,
        accept_stat_data::PROG_MISMATCH { low, high } => accept_stat_data::PROG_MISMATCH { low: *low, high: *high },
        accept_stat_data::PROC_UNAVAIL => accept_stat_data::PROC_UNAVAIL,
        accept_stat_data::GARBAGE_ARGS => accept_stat_data::GARBAGE_ARGS,
        accept_stat_data::SYSTEM_ERR => accept_stat_data::SYSTEM_ERR,
    }
}

/// `msg`, `body`, `data` and its padding, behind a single last-fragment record mark.
fn frame(msg: &rpc_msg<'_, '_>, body: &[u8], data: Bytes) -> Reply {
    let len = msg.packed_size() + body.len() + data.len() + crate::xdr::pad(data.len());
    let mut head = Vec::with_capacity(4 + msg.packed_size() + body.len());
    // Replies are at most MAX_IO plus headers, far below 2^31.
    let mark = u32::try_from(len).unwrap_or(u32::MAX >> 1) | LAST_FRAGMENT;
    head.extend_from_slice(&mark.to_be_bytes());
    if msg.pack(&mut head).is_err() {
        head.truncate(4);
    }
    head.extend_from_slice(body);
    Reply { head, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn call_bytes(rpcvers: u32, cred_flavor: u32, cred_body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [7u32, 0, rpcvers, 100_003, 3, 1, cred_flavor, cred_body.len() as u32] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(cred_body);
        v.resize(v.len() + crate::xdr::pad(cred_body.len()), 0);
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(b"ARGS");
        v
    }

    fn unix_body(uid: u32, gid: u32, gids: &[u32]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [1u32, 4] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(b"host");
        for w in [uid, gid, gids.len() as u32].iter().chain(gids) {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v
    }

    #[test]
    fn decodes_an_auth_unix_call() {
        let rec = call_bytes(2, 1, &unix_body(1000, 100, &[4, 5]));
        let (call, at) = decode_call(&rec).unwrap();
        assert_eq!(call.xid, 7);
        assert_eq!((call.prog, call.vers, call.proc_), (100_003, 3, 1));
        assert_eq!(
            call.cred,
            Cred::Unix {
                uid: 1000,
                gid: 100,
                gids: vec![4, 5]
            }
        );
        assert_eq!(&rec[at..], b"ARGS");
    }

    #[test]
    fn defects_get_the_right_reply() {
        assert!(matches!(decode_call(&[0, 0, 0, 7]), Err(BadCall::Unreadable)));
        let reply_to = |rec: &[u8]| match decode_call(rec) {
            Err(BadCall::Reply(r)) => r.to_bytes(),
            other => panic!("{other:?}"),
        };
        // rpcvers 3: MSG_DENIED / RPC_MISMATCH 2..2.
        let r = reply_to(&call_bytes(3, 0, &[]));
        assert_eq!(&r[4..24], &[0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]);
        // 17 gids: AUTH_ERROR / AUTH_BADCRED.
        let r = reply_to(&call_bytes(2, 1, &unix_body(0, 0, &[0; 17])));
        assert_eq!(&r[12..24], &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
        // RPCSEC_GSS: AUTH_REJECTEDCRED.
        let r = reply_to(&call_bytes(2, 6, &[]));
        assert_eq!(&r[12..24], &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2]);
        // Truncated after the xid and CALL: GARBAGE_ARGS.
        let r = reply_to(&call_bytes(2, 0, &[])[..14]);
        assert_eq!(&r[r.len() - 4..], &[0, 0, 0, 4]);
    }

    #[tokio::test]
    async fn records_are_bounded_before_allocation() {
        let mut buf = Vec::new();
        // A last fragment claiming 2 GiB - 1.
        let mut huge: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_record(&mut huge, MAX_RECORD, &mut buf).await,
            Err(RecordError::TooLarge(_))
        ));
        assert!(buf.capacity() < MAX_RECORD);
        // Two fragments that together exceed the limit.
        let mut two: Vec<u8> = Vec::new();
        two.extend_from_slice(&((MAX_RECORD as u32 - 4) & !LAST_FRAGMENT).to_be_bytes());
        two.resize(4 + MAX_RECORD - 4, 1);
        two.extend_from_slice(&(8 | LAST_FRAGMENT).to_be_bytes());
        assert!(matches!(
            read_record(&mut two.as_slice(), MAX_RECORD, &mut buf).await,
            Err(RecordError::TooLarge(_))
        ));
        // A well-formed two-fragment record, then a clean end.
        let mut ok: &[u8] = &[0, 0, 0, 2, b'a', b'b', 0x80, 0, 0, 1, b'c'];
        assert!(read_record(&mut ok, MAX_RECORD, &mut buf).await.unwrap());
        assert_eq!(buf, b"abc");
        assert!(!read_record(&mut ok, MAX_RECORD, &mut buf).await.unwrap());
        // A record cut short.
        let mut cut: &[u8] = &[0x80, 0, 0, 9, 1, 2];
        assert!(matches!(
            read_record(&mut cut, MAX_RECORD, &mut buf).await,
            Err(RecordError::Io(_))
        ));
    }

    proptest! {
        /// Arbitrary bytes never panic the header decoder.
        #[test]
        fn arbitrary_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_call(&bytes);
        }

        /// Arbitrary credential bodies never panic either.
        #[test]
        fn arbitrary_auth_unix_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_call(&call_bytes(2, 1, &body));
        }
    }
}
