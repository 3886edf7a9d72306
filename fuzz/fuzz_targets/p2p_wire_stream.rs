//! Fuzz target: a stream of P2P frames through `Frame::decode` and the payload `Reassembler`.
//!
//! Invariant checked: never panics; the reassembler never holds more payloads or declared bytes than its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vfs_p2p::fuzzing::wire_stream(data));
