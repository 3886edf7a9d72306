//! FUSE adapter: mounts any `vfs_core::VirtualFs` through the kernel (crate `fuser`). Placeholder until the FUSE issue lands.
#![warn(missing_docs)]
