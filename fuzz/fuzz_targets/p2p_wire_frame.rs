//! Fuzz target: one P2P wire frame (`vfs_p2p::wire::Frame::decode`), the bytes a peer sends.
//!
//! Invariant checked: decoding never panics; a frame that decodes re-encodes to bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vfs_p2p::fuzzing::wire_frame(data));
