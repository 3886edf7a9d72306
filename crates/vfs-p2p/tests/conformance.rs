//! The vfs-core conformance kit against `RemoteFs`: every scenario, race and the model
//! test run on a far side whose owner (an in-process exporter) serves MemFs or LocalFs
//! over the real transport on loopback.

use vfs_core::localfs::LocalFs;
use vfs_core::memfs::MemFs;
use vfs_core::testkit::Backend;
use vfs_p2p::exporter::ExportConfig;
use vfs_p2p::loopback::Loopback;
use vfs_p2p::remote::{RemoteConfig, RemoteFs};

fn remote_memfs() -> Backend<RemoteFs> {
    let lb = Loopback::serve(MemFs::new(), ExportConfig::trusted()).expect("serve MemFs");
    let remote = lb.connect(RemoteConfig::default()).expect("connect");
    Backend::new(remote).keep(lb)
}

fn remote_localfs() -> Backend<RemoteFs> {
    let dir = tempfile::tempdir().expect("temp dir");
    let fs = LocalFs::new(dir.path()).expect("LocalFs");
    let lb = Loopback::serve(fs, ExportConfig::trusted()).expect("serve LocalFs");
    let remote = lb.connect(RemoteConfig::default()).expect("connect");
    Backend::new(remote).keep(lb).keep(dir)
}

vfs_core::vfs_conformance!(over_p2p_memfs, remote_memfs);
vfs_core::vfs_conformance!(over_p2p_localfs, remote_localfs);
