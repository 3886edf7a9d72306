//! `vfs-nfs`: serves any [`VirtualFs`](vfs_core::VirtualFs) as an NFSv3 server over TCP.
//!
//! ```no_run
//! use std::sync::Arc;
//! use vfs_core::memfs::MemFs;
//! use vfs_nfs::{NfsConfig, NfsServer};
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = NfsServer::bind("127.0.0.1:11111", Arc::new(MemFs::new()), NfsConfig::default()).await?;
//! println!("{}", server.url()?); // nfs://127.0.0.1/?nfsport=11111&mountport=11111
//! server.serve().await
//! # }
//! ```
//!
//! Binding (on a port the system picks) is all it takes to have a server; `serve` then
//! answers clients until the future is dropped:
//!
//! ```
//! # use std::sync::Arc;
//! # use vfs_core::memfs::MemFs;
//! # use vfs_nfs::{NfsConfig, NfsServer};
//! # fn main() -> std::io::Result<()> {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let server = NfsServer::bind("127.0.0.1:0", Arc::new(MemFs::new()), NfsConfig::default()).await?;
//!     assert!(server.url()?.starts_with("nfs://127.0.0.1/?nfsport="));
//!     Ok(())
//! })
//! # }
//! ```
//!
//! Invariant of the crate: it translates, and holds no filesystem logic. Each NFS
//! procedure becomes calls of the backend's `VirtualFs` methods; file handles are
//! `vfs_core::fh` handles whose generation is FNV-1a of the backend's `source_id` (so they
//! survive a restart on the same source and are `NFS3ERR_STALE` on another); every backend
//! open handle lives in a `vfs_core::pool::HandlePool`; every error reaches the client
//! through the one table in [`status`]. Untrusted bytes are decoded by bounded code that
//! answers or closes the connection and never panics.
//!
//! Layers, from the socket in:
//!
//! - `rpc`: record marking and call headers (ONC RPC over TCP);
//! - `server`: listener, per-connection limits, the state calls share;
//! - `nfs`, `mount`: the procedures of NFS v3, MOUNT v3 and the portmapper's `GETPORT`;
//! - `perm`: the permission checks a server owes (there is no client kernel to do them);
//! - `attr`, [`status`], `xdr`: conversions.
//!
//! What a client sees — handles across restarts, `STALE` versus `BADHANDLE`, WRITE
//! stability, LINK/MKNOD/COMMIT, permissions, readdir cookies — is written down in
//! `doc/SEMANTICS.md`; why the server is built on `nfs3_types` rather than on `nfsserve`
//! or `nfs3_server`, in `doc/ARCHITECTURE.md`.
#![warn(missing_docs)]

mod attr;
pub mod clients;
mod mount;
mod nfs;
mod perm;
mod rpc;
mod server;
pub mod status;
mod xdr;

pub use clients::ClientNet;
pub use rpc::{MAX_IO, MAX_RECORD};
#[doc(hidden)]
pub use server::RecordResponder;
pub use server::{Credentials, NOBODY, NfsConfig, NfsServer};
