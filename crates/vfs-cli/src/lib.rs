//! The `vfs` command's code, as a library: the `vfs` binary and the repository's examples
//! are thin callers of it, so a flag means the same thing in both.
//!
//! Invariant: a command either mounts (or serves) what it was asked to, or exits with
//! status 1 and one line saying why; nothing it mounted outlives it (every mount is held
//! by a [`vfs_fuse::Mount`] guard and unmounted whichever way the program is stopped).
//!
//! | module | what it holds |
//! |---|---|
//! | [`cli`] | the `vfs` command line, and the `mount.fuse3` helper form `vfs SOURCE MOUNTPOINT -o opts` |
//! | [`options`] | `-o opt,opt` FUSE-style mount options |
//! | [`daemon`] | mounting in the background: fork, then report readiness through a pipe |
//! | [`log`] | `-v`, `RUST_LOG` and `--log-file` |
//! | [`serve`] | mount, wait for a stop, unmount; one-line failures |
//! | [`memfs`], [`overlay`], [`pg`], [`nfs`], [`p2p`] | one backend each |

pub mod cli;
pub mod daemon;
pub mod log;
pub mod memfs;
pub mod nfs;
pub mod options;
pub mod overlay;
pub mod p2p;
pub mod pg;
pub mod serve;

pub use serve::fail;
