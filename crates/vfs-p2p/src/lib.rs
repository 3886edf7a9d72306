//! `vfs-p2p`: share any [`vfs_core::VirtualFs`] with another machine over an
//! authenticated, encrypted link; the other side gets a `VirtualFs` that reads on demand.
//!
//! Invariant of the crate: nothing a peer sends can make this side panic, allocate
//! without a bound, or read a request before the peer's key was checked. Every decoder
//! of peer bytes ([`wire::Frame::decode`], [`wire::Reassembler`], the record layer
//! [`transport::noise::Sealer::open`], the handshake) returns an error on bad input; an
//! error ends that one link with a logged reason and nothing else.
//!
//! Layers, bottom up:
//!
//! - [`identity`]: static X25519 keys, their one-line text form, the allowlist.
//! - [`transport`]: the [`transport::Transport`] trait (authenticated duplex of frames)
//!   and its Noise-over-TCP implementation [`transport::noise::NoiseTcp`].
//! - [`wire`]: versioned frames (requests, replies, data chunks, notifications) and
//!   reassembly of payloads split into chunks.
//! - [`mux`]: the writer that puts control frames ahead of bulk chunks.
//! - [`rpc`]: calls matched to replies with bounded waits, the serving loop, and
//!   closing a link on the first bad frame.
//!
//! The smallest use: an owner and a far side in one process, over the real encrypted
//! transport on 127.0.0.1 ([`loopback::Loopback`]; across machines the `p2p` example does
//! the same with two processes).
//!
//! ```
//! use std::ffi::OsStr;
//! use vfs_core::memfs::MemFs;
//! use vfs_core::{Ino, Name, RequestCtx, VirtualFs};
//! use vfs_p2p::exporter::ExportConfig;
//! use vfs_p2p::loopback::Loopback;
//! use vfs_p2p::remote::RemoteConfig;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let owner = MemFs::new();
//! let ctx = RequestCtx::ROOT;
//! let lb = Loopback::serve(owner, ExportConfig::trusted())?;
//! let far = lb.connect(RemoteConfig::default())?;
//! lb.block_on(async {
//!     let dir = Name::new(OsStr::new("shared"))?;
//!     lb.exporter.fs().mkdir(&ctx, Ino::ROOT, dir, 0o755, 0o022).await?;
//!     let seen = far.lookup(&ctx, Ino::ROOT, dir).await?;
//!     assert_eq!(seen.kind, vfs_core::FileType::Directory);
//!     Ok::<_, vfs_core::VfsError>(())
//! })?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod exporter;
pub mod hostile;
pub mod identity;
pub mod loopback;
pub mod mux;
mod ops;
pub mod remote;
pub mod rpc;
pub mod transport;
pub mod wire;

#[doc(hidden)]
pub mod fuzzing;
