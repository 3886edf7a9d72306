//! The testkit run against this repository's two reference backends.

use vfs_core::localfs::LocalFs;
use vfs_core::memfs::MemFs;
use vfs_core::testkit::{Backend, Cap};

// MemFs makes both promises beyond the basic set; LocalFs cannot (its statfs is the host
// filesystem's, and the kernel in front of it applies the caller-credential rules).
vfs_core::vfs_conformance!(memfs, || {
    Backend::new(MemFs::new())
        .with(Cap::SpaceAccounting)
        .with(Cap::CallerRules)
});

vfs_core::vfs_conformance!(localfs, || {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs = LocalFs::new(dir.path()).expect("LocalFs on a temp dir");
    Backend::new(fs).keep(dir)
});
