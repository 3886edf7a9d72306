//! Fuzz target: the NFS server's request path (`vfs_nfs`), from the bytes of one RPC
//! record to the bytes of its reply, against an in-memory filesystem: call header,
//! credentials, every procedure's argument decoding, and the procedure itself.
//!
//! Invariant checked: never a panic; a record whose header decodes gets a reply carrying
//! its xid, behind a record mark that states the reply's length.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vfs_core::memfs::MemFs;
use vfs_nfs::{Credentials, NOBODY, NfsConfig, RecordResponder};

struct Fixture {
    rt: tokio::runtime::Runtime,
    responder: RecordResponder<MemFs>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"),
        responder: RecordResponder::new(Arc::new(MemFs::new()), NfsConfig { credentials: Credentials::FromClient { anonymous: NOBODY }, ..NfsConfig::default() }, 2049),
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    if let Some(reply) = fx.rt.block_on(fx.responder.answer(data)) {
        assert!(reply.len() >= 16);
        assert_eq!(&reply[4..8], &data[..4], "the reply carries the call's xid");
        let mark = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
        assert_eq!((mark & 0x7fff_ffff) as usize, reply.len() - 4);
    }
});
