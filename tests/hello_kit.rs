//! The conformance kit on the README's read-only `Hello`: it declares no capabilities
//! (no writes, no xattrs, ...), so the kit runs the checks that need nothing (the tree
//! walk, statfs) and checks that every missing capability answers with its errno
//! (`EROFS`/`ENOSYS` for changes, `EOPNOTSUPP` for xattrs); the rest print `skipped: ...`.

#[path = "../examples/common/hello_fs.rs"]
mod hello_fs;

use vfs_core::testkit::{Backend, Caps};

vfs_core::vfs_conformance!(hello, || Backend::new(hello_fs::Hello).with_caps(Caps::NONE));
