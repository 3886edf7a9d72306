//! The testkit's loom race models, run on MemFs (whose locks come from the facade).
#![cfg(loom)]

mod common;

use vfs_core::memfs::MemFs;
use vfs_core::testkit::{Backend, races::loom_models};

#[test]
fn loom_memfs_write_vs_getattr() {
    loom_models::write_vs_getattr(|| Backend::new(MemFs::new()));
}

#[test]
fn loom_memfs_rename_vs_lookup() {
    loom_models::rename_vs_lookup(|| Backend::new(MemFs::new()));
}

/// The loom model catches the seed 000 (doc/LESSONS.md#seed-000) shape (size published in one critical section, data
/// in another): some interleaving shows the reader a size without its data.
#[test]
#[should_panic(expected = "read [0, 0, 0, 0]")]
fn loom_catches_size_published_before_data() {
    loom_models::write_vs_getattr(|| common::backend(common::Bug::SizeBeforeData));
}
