//! The conformance kit on the README's read-only `Hello`: it declares no capabilities
//! (no writes, no xattrs, ...), so the kit runs the checks that need nothing (the tree
//! walk, statfs) and checks that every missing capability answers with its errno
//! (`EROFS`/`ENOSYS` for changes, `EOPNOTSUPP` for xattrs); the rest print `skipped: ...`.

#[path = "../examples/common/hello_fs.rs"]
mod hello_fs;

use vfs_core::testkit::{Backend, Caps};

vfs_core::vfs_conformance!(hello, || Backend::new(hello_fs::Hello).with_caps(Caps::NONE));

/// The checks Hello passes can fail: two planted mistakes on top of Hello.
mod mutants {
    use super::hello_fs::Hello;
    use std::ffi::OsStr;
    use vfs_core::testkit::{Backend, Caps, check_scenario, scenarios};
    use vfs_core::wrap::{Hooks, Wrapped};
    use vfs_core::{Attr, Ino, Name, RequestCtx, VfsError, VfsResult, VirtualFs};

    /// Answers `ENODATA` to getxattr although it declares no xattrs (`EOPNOTSUPP` is due),
    /// or, with `wrong_ino`, looks `hello.txt` up to an inode its listing does not name.
    struct Lies {
        wrong_ino: bool,
    }

    impl Hooks<Hello> for Lies {
        async fn getxattr(&self, _: &Hello, _: &RequestCtx, _: Ino, _: &OsStr) -> VfsResult<bytes::Bytes> {
            Err(VfsError::NoAttr)
        }
        async fn lookup(&self, inner: &Hello, ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
            let a = inner.lookup(ctx, parent, name).await?;
            Ok(if self.wrong_ino { Attr { ino: Ino(7), ..a } } else { a })
        }
    }

    fn lying(wrong_ino: bool) -> Backend<Wrapped<Hello, Lies>> {
        Backend::new(Wrapped::new(Hello, Lies { wrong_ino })).with_caps(Caps::NONE)
    }

    #[test]
    fn a_wrong_errno_for_an_absent_capability_fails() {
        let r = check_scenario(|| lying(false), scenarios::absent_capabilities_answer_errno);
        let msg = r
            .expect_err("the kit must refuse ENODATA from a backend without xattrs")
            .0;
        assert!(
            msg.contains("[absent.errno] getxattr") && msg.contains("ENODATA"),
            "{msg}"
        );
    }

    #[test]
    fn a_lookup_that_disagrees_with_the_listing_fails_the_walk() {
        let r = check_scenario(|| lying(true), scenarios::tree_walk);
        let msg = r.expect_err("the walk must see the wrong inode").0;
        assert!(
            msg.contains("agrees with its listing") && msg.contains("Ino(7)"),
            "{msg}"
        );
        assert!(check_scenario(|| lying(false), scenarios::tree_walk).is_ok());
    }
}
