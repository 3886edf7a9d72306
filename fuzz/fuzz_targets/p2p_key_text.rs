//! Fuzz target: a peer key as typed on the command line (`PublicKey::from_str`), a key file (`parse_key_file`) and a keys file of rights (`parse_keys_file`).
//!
//! Invariants checked: never panics; a keys file that parses round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vfs_p2p::fuzzing::key_text(data));
