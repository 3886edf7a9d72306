//! What a hostile but admitted peer sends, and what it must get back: names that try to
//! leave the share, and frames that must close the link. Shared by the crate's tests and
//! by `examples/p2p_hostile.rs`, the hostile peer of the two-host test.
//!
//! Invariant: every probe here has one right answer: an errno for a name, a closed link
//! for a frame. [`probe`] reports each answer and whether it was the right one; it never
//! treats a success of a hostile request as acceptable.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use bytes::Bytes;
use vfs_core::{Errno, Ino, RequestCtx};

use crate::identity::PublicKey;
use crate::rpc::{LinkConfig, RpcClient};
use crate::transport::{FrameRx, FrameTx, Transport, TransportError};
use crate::wire::Op;

/// Names that must never resolve, with the errno the exporter must answer.
pub fn bad_names() -> Vec<(OsString, Errno)> {
    vec![
        (OsString::from(".."), Errno::EINVAL),
        (OsString::from("."), Errno::EINVAL),
        (OsString::from("a/../../etc"), Errno::EINVAL),
        (OsString::from("/etc"), Errno::EINVAL),
        (OsString::new(), Errno::EINVAL),
        (OsString::from_vec(b"a\0b".to_vec()), Errno::EINVAL),
        (OsString::from("x".repeat(256)), Errno::ENAMETOOLONG),
        (OsString::from("y".repeat(4000)), Errno::ENAMETOOLONG),
    ]
}

/// Every operation that takes a name, with `name` in it.
pub fn name_ops(name: &OsString) -> [Op; 5] {
    [
        Op::Lookup {
            parent: Ino::ROOT,
            name: name.clone(),
        },
        Op::Mkdir {
            parent: Ino::ROOT,
            name: name.clone(),
            mode: 0o755,
            umask: 0,
        },
        Op::Create {
            parent: Ino::ROOT,
            name: name.clone(),
            mode: 0o644,
            umask: 0,
            flags: libc::O_RDWR,
        },
        Op::Rename {
            parent: Ino::ROOT,
            name: OsString::from("f"),
            newparent: Ino::ROOT,
            newname: name.clone(),
            flags: 0,
        },
        Op::Symlink {
            parent: Ino::ROOT,
            name: name.clone(),
            target: OsString::from("/etc/passwd"),
        },
    ]
}

/// Raw frames that must make the exporter close the link that sent them.
pub fn bad_frames() -> Vec<(&'static str, Vec<u8>)> {
    let mut oversized_write = vec![1u8, 1];
    oversized_write.extend_from_slice(&7u64.to_le_bytes()); // id
    oversized_write.push(17); // write
    oversized_write.extend_from_slice(&[0; 12]); // uid, gid, pid
    oversized_write.extend_from_slice(&Ino::ROOT.0.to_le_bytes());
    oversized_write.extend_from_slice(&0u64.to_le_bytes()); // offset
    oversized_write.push(0); // append
    oversized_write.extend_from_slice(&u32::MAX.to_le_bytes()); // declared length
    let mut long_name = vec![1u8, 1];
    long_name.extend_from_slice(&8u64.to_le_bytes());
    long_name.push(2); // lookup
    long_name.extend_from_slice(&[0; 12]);
    long_name.extend_from_slice(&Ino::ROOT.0.to_le_bytes());
    long_name.extend_from_slice(&u16::MAX.to_le_bytes()); // name length past the frame
    long_name.extend_from_slice(b"abc");
    let mut stray = vec![1u8, 3];
    stray.extend_from_slice(&9u64.to_le_bytes());
    stray.extend_from_slice(b"stray bytes");
    vec![
        ("garbage", b"\x07\x99not a frame at all".to_vec()),
        ("unknown kind", vec![1, 200, 0, 0]),
        ("oversized write length", oversized_write),
        ("name length past the frame", long_name),
        ("data for no request", stray),
    ]
}

/// Sends `frame` on a fresh authenticated link; `Ok(true)` if the exporter closed the link
/// within `wait`.
pub async fn frame_closes_link<T: Transport>(
    transport: &T,
    addr: SocketAddr,
    owner: PublicKey,
    frame: &[u8],
    wait: Duration,
) -> Result<bool, TransportError> {
    let mut link = transport.connect(addr, owner).await?;
    link.tx.push(&[frame])?;
    link.tx.flush().await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, link.rx.recv()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Ok(Err(_)) => return Ok(true),
            Err(_) => return Ok(false),
        }
    }
}

/// One probe's outcome: what was sent, what came back, and whether that was right.
#[derive(Debug, Clone)]
pub struct Probe {
    /// What was sent.
    pub what: String,
    /// What came back.
    pub got: String,
    /// Whether that was the one right answer.
    pub ok: bool,
}

/// Runs every probe against the exporter at `addr`: each bad name in each operation on
/// one link, then each bad frame on a link of its own.
pub async fn probe<T: Transport>(
    transport: &T,
    addr: SocketAddr,
    owner: PublicKey,
) -> Result<Vec<Probe>, TransportError> {
    let mut out = Vec::new();
    let link = transport.connect(addr, owner).await?;
    let client = RpcClient::start(link, LinkConfig::default()).0;
    for (name, want) in bad_names() {
        for op in name_ops(&name) {
            let what = format!("{op:?}");
            let r = client.call(RequestCtx::ROOT, op, Bytes::new()).await;
            let got = match &r {
                Ok(_) => "success".to_string(),
                Err(e) => format!("{:?}", e.errno()),
            };
            let ok = matches!(&r, Err(e) if e.errno() == want);
            out.push(Probe {
                what: format!("{what:.70}"),
                got,
                ok,
            });
        }
    }
    client.close();
    for (what, frame) in bad_frames() {
        let closed = frame_closes_link(transport, addr, owner, &frame, Duration::from_secs(5)).await?;
        out.push(Probe {
            what: format!("frame: {what}"),
            got: if closed {
                "link closed".into()
            } else {
                "link stayed open".into()
            },
            ok: closed,
        });
    }
    Ok(out)
}
