//! Fuzz target: the encrypted record stream of a link (`vfs_p2p::transport::noise::Sealer::open`), both suites, delivered in pieces.
//!
//! Invariant checked: never panics; a length is checked before bytes are buffered for it; forged records fail authentication.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vfs_p2p::fuzzing::noise_records(data));
