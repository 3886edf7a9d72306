//! Fuzz target: NFS-style file handle decoding (`vfs_core::fh`), the bytes a client sends.
//!
//! Invariant checked: decoding never panics, answers `Stale` only for a well-formed
//! handle of another generation, and accepts only canonical encodings (what it accepts
//! re-encodes to the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vfs_core::fh::{FileHandle, Generation, HandleError};

fuzz_target!(|data: &[u8]| {
    let ours = Generation::from_source_id("fuzz:source");
    match FileHandle::decode(data, ours) {
        Ok(ino) => assert_eq!(FileHandle::new(ours, ino).as_bytes().as_slice(), data),
        Err(HandleError::Stale { found, expected }) => {
            assert_eq!(expected, ours.0);
            assert_ne!(found, ours.0);
            assert_eq!(data.len(), FileHandle::LEN);
        }
        Err(HandleError::BadHandle) => {}
    }
    if let Ok(fh) = FileHandle::parse(data) {
        assert_eq!(fh.as_bytes().as_slice(), data);
        assert_eq!(fh.generation().decode(data), Ok(fh.ino()));
        let _ = format!("{fh:?} {fh}");
    }
});
