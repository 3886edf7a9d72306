//! Fuzz target: Noise XX handshake messages 1 and 3 to a responder and message 2 to an initiator.
//!
//! Invariant checked: never panics; over-long messages are refused before they are read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vfs_p2p::fuzzing::noise_handshake(data));
