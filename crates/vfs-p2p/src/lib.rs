//! Peer-to-peer adapter: shares any `vfs_core::VirtualFs` with an authenticated, encrypted peer. Placeholder until the P2P issue lands.
#![warn(missing_docs)]
