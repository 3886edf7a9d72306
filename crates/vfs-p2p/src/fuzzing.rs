//! Entry points for the fuzz targets in `fuzz/` and the "arbitrary bytes" proptests:
//! one function per decoder of peer (or user) bytes. Not a stable API.
//!
//! Invariant: each function feeds its input to a real decoder exactly as the network
//! (or the command line) would, and must return without panicking for every input.

use bytes::{Bytes, BytesMut};

use crate::transport::noise::{Sealer, Suite};
use crate::wire::{Frame, Reassembler, ReassemblyLimits};

/// One frame through [`Frame::decode`]; a frame that decodes must re-encode to bytes
/// that decode to the same frame.
pub fn wire_frame(data: &[u8]) {
    if let Ok(frame) = Frame::decode(Bytes::copy_from_slice(data)) {
        let again = Frame::decode(Bytes::from(frame.encode()));
        assert_eq!(again.as_ref(), Ok(&frame), "encode does not round-trip {frame:?}");
    }
}

/// A stream of frames (each `len:u16 bytes`, as records would deliver them) through
/// [`Frame::decode`] and a [`Reassembler`] with small limits; stops at the first error,
/// as a link would.
pub fn wire_stream(data: &[u8]) {
    let mut r = Reassembler::new(ReassemblyLimits {
        max_pending: 4,
        max_bytes: 1 << 20,
    });
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        let Ok(frame) = Frame::decode(Bytes::copy_from_slice(frame)) else {
            return;
        };
        if r.push(frame).is_err() {
            return;
        }
        assert!(r.declared_bytes() <= 1 << 20);
        assert!(r.pending() <= 4);
    }
}

/// Arbitrary bytes as the encrypted record stream of a link, delivered in pieces of the
/// sizes given by the first bytes, through [`Sealer::open`] for both suites.
pub fn noise_records(data: &[u8]) {
    for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
        let Ok(mut opener) = Sealer::new(suite, &[7u8; 32]) else {
            return;
        };
        let mut buf = BytesMut::new();
        for piece in data.chunks(97) {
            buf.extend_from_slice(piece);
            loop {
                match opener.open(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
}

/// Arbitrary bytes as handshake messages 1 and 3 to a responder, and as message 2 to an
/// initiator, split at the first byte's value.
pub fn noise_handshake(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (m1, m3) = rest.split_at(usize::from(cut).min(rest.len()));
    if crate::transport::noise::check_handshake_len(m1.len()).is_err() {
        return;
    }
    let Ok(params) = Suite::AesGcm.protocol_name().parse::<snow::params::NoiseParams>() else {
        return;
    };
    let key = [9u8; 32];
    let mut buf = [0u8; 2048];
    let responder = snow::Builder::new(params.clone())
        .prologue(crate::transport::noise::PROLOGUE)
        .and_then(|b| b.local_private_key(&key))
        .and_then(|b| b.build_responder());
    if let Ok(mut r) = responder
        && r.read_message(m1, &mut buf).is_ok()
        && r.write_message(&[], &mut buf).is_ok()
    {
        let _ = r.read_message(m3, &mut buf);
    }
    let initiator = snow::Builder::new(params)
        .prologue(crate::transport::noise::PROLOGUE)
        .and_then(|b| b.local_private_key(&key))
        .and_then(|b| b.build_initiator());
    if let Ok(mut i) = initiator
        && i.write_message(&[], &mut buf).is_ok()
    {
        let _ = i.read_message(m1, &mut buf);
    }
}

/// Key text as typed on a command line or found in a key file, and a keys file of the
/// owner's (`p2p share --keys-file`): a keys file that parses lists exactly the keys
/// that parse on their own, and written back it parses to the same list.
pub fn key_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = text.parse::<crate::identity::PublicKey>();
    let _ = crate::identity::parse_key_file(&text);
    if let Ok(keys) = crate::identity::parse_keys_file(&text) {
        let again: String = keys.iter().map(|(k, r)| format!("{k} {r}\n")).collect();
        assert_eq!(
            crate::identity::parse_keys_file(&again).ok(),
            Some(keys),
            "keys file round trip"
        );
    }
}
