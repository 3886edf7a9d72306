//! The README's `Hello` backend, compiled from the README itself (`build.rs` extracts its
//! first ```rust block): one read-only file, `hello.txt`, in the root. Shared by the `hello`
//! example and `tests/hello_kit.rs`, which runs the conformance kit on it.
//!
//! Invariant: the backend answers the six operations a read-only filesystem needs; every
//! other operation gets the trait's default (`ENOSYS`, or `EOPNOTSUPP` for xattrs), and
//! opening for writing is `EROFS`.

include!(concat!(env!("OUT_DIR"), "/readme_hello.rs"));
