//! Fuzz target: a peer key as typed on the command line (`PublicKey::from_str`) and a key file (`parse_key_file`).
//!
//! Invariant checked: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vfs_p2p::fuzzing::key_text(data));
