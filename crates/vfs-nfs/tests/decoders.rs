//! The request path on arbitrary bytes, in process (what `fuzz/fuzz_targets/nfs_record.rs`
//! does for longer): random records, and well-formed call headers for every procedure of
//! NFS v3, MOUNT v3 and the portmapper with arguments that start with a real handle and go
//! on with garbage. Never a panic; every call whose header decodes gets a reply with its
//! xid.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use vfs_core::memfs::MemFs;
use vfs_core::{Ino, Name, OpenFlags, RequestCtx, VirtualFs};
use vfs_nfs::{Credentials, NOBODY, NfsConfig, RecordResponder};

struct Fixture {
    rt: tokio::runtime::Runtime,
    responder: RecordResponder<MemFs>,
    handles: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let fs = Arc::new(MemFs::new());
        let handles = rt.block_on(async {
            let ctx = RequestCtx::ROOT;
            let name = |s: &'static str| Name::from_bytes(s.as_bytes()).unwrap();
            let (f, fh) = fs
                .create(&ctx, Ino::ROOT, name("f"), 0o644, 0, OpenFlags::RDWR)
                .await
                .unwrap();
            fs.write(&ctx, f.ino, fh, 0, b"some bytes").await.unwrap();
            fs.release(&ctx, f.ino, fh).await.unwrap();
            let d = fs.mkdir(&ctx, Ino::ROOT, name("d"), 0o755, 0).await.unwrap();
            let l = fs.symlink(&ctx, d.ino, name("l"), "f".as_ref()).await.unwrap();
            let g = vfs_core::fh::Generation::of(&*fs);
            [Ino::ROOT, f.ino, d.ino, l.ino]
                .map(|i| g.handle(i).as_bytes().to_vec())
                .to_vec()
        });
        let responder = RecordResponder::new(
            fs,
            NfsConfig {
                credentials: Credentials::FromClient { anonymous: NOBODY },
                ..NfsConfig::default()
            },
            2049,
        );
        Fixture { rt, responder, handles }
    })
}

fn header(xid: u32, prog: u32, vers: u32, proc_: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [xid, 0, 2, prog, vers, proc_, 0, 0, 0, 0] {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_records_never_panic(record in proptest::collection::vec(any::<u8>(), 0..512)) {
        let fx = fixture();
        let _ = fx.rt.block_on(fx.responder.answer(&record));
    }

    #[test]
    fn every_procedure_on_garbage_arguments_is_answered(
        xid in any::<u32>(),
        prog in prop_oneof![Just((100_003u32, 3u32)), Just((100_005, 3)), Just((100_000, 2))],
        proc_ in 0u32..24,
        handle in 0usize..5,
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        words in proptest::collection::vec(prop_oneof![Just(0u32), Just(1), Just(2), Just(u32::MAX), any::<u32>()], 0..12),
    ) {
        let fx = fixture();
        let mut record = header(xid, prog.0, prog.1, proc_);
        if let Some(h) = fx.handles.get(handle) {
            record.extend_from_slice(&(h.len() as u32).to_be_bytes());
            record.extend_from_slice(h);
        }
        for w in &words {
            record.extend_from_slice(&w.to_be_bytes());
        }
        record.extend_from_slice(&tail);
        let reply = fx.rt.block_on(fx.responder.answer(&record));
        let reply = reply.expect("a decodable header always gets a reply");
        prop_assert!(reply.len() >= 4 + 12);
        prop_assert_eq!(&reply[4..8], &xid.to_be_bytes());
        let mark = u32::from_be_bytes(reply[..4].try_into().unwrap());
        prop_assert_eq!((mark & 0x7fff_ffff) as usize, reply.len() - 4, "record mark matches the reply");
    }
}
