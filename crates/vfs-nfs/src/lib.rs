//! NFSv3 adapter: serves any `vfs_core::VirtualFs` over NFSv3 (crate `nfsserve`). Placeholder until the NFS issue lands.
#![warn(missing_docs)]
