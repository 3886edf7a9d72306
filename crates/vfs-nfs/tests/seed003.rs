//! Seed 003 (doc/LESSONS.md#seed-003-pr-177, #seed-003-pr-178, #seed-003-pr-185; hf-mount PRs #177, #178, #185) through a real NFS client, on `LocalFs`, where
//! a descriptor opened read-only really answers `EBADF` to a write.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::{lookup, read, setattr_size, spy, write};
use nfs3_client::nfs3_types::nfs3::stable_how;
use vfs_core::localfs::LocalFs;

fn local_server(content: &[u8]) -> (tempfile::TempDir, common::ServerGuard) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), content).unwrap();
    let fs = LocalFs::new(dir.path()).unwrap();
    let server = common::serve(Arc::new(fs), common::no_root_squash());
    (dir, server)
}

/// #178: READ pools a read-only handle; the WRITE that follows must land, not be STALE.
/// The backend's log shows the path: the pooled read-only descriptor answers EBADF, a
/// writable one is opened and the write goes through it.
#[tokio::test]
async fn seed003_pr178_read_then_write_lands_and_is_never_stale() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"hello world").unwrap();
    let spy = Arc::new(spy(LocalFs::new(dir.path()).unwrap()));
    let server = common::serve(Arc::clone(&spy), common::no_root_squash());
    let (mut c, root) = common::mount(server.addr).await;
    let (fh, _) = lookup(&mut c, &root, "f").await.unwrap();
    assert_eq!(read(&mut c, &fh, 0, 5).await.unwrap(), b"hello");
    let ok = write(&mut c, &fh, 0, b"HELLO", stable_how::UNSTABLE).await;
    assert_eq!(ok.map(|r| r.count), Ok(5), "WRITE after READ");
    assert_eq!(read(&mut c, &fh, 0, 64).await.unwrap(), b"HELLO world");
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"HELLO world");
    assert_eq!(
        spy.hooks.take_log(),
        [
            "open Read -> Ok(Fh(1))",
            "write 5 -> Err(EBADF)",
            "open ReadWrite -> Ok(Fh(2))",
            "write 5 -> Ok(5)",
            "release"
        ]
        .map(String::from)
        .to_vec()
    );
}

/// hf-mount #185: NFSv3 has no OPEN, so SETATTR(size=0) then WRITE must work on its own.
#[tokio::test]
async fn hf185_setattr_size_zero_then_write() {
    let (dir, server) = local_server(b"old contents");
    let (mut c, root) = common::mount(server.addr).await;
    let (fh, _) = lookup(&mut c, &root, "f").await.unwrap();
    assert_eq!(read(&mut c, &fh, 0, 3).await.unwrap(), b"old");
    setattr_size(&mut c, &fh, 0).await.unwrap();
    assert_eq!(
        write(&mut c, &fh, 0, b"new", stable_how::UNSTABLE)
            .await
            .map(|r| r.count),
        Ok(3)
    );
    assert_eq!(read(&mut c, &fh, 0, 64).await.unwrap(), b"new");
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
}

/// #178, the race: two clients READ the file (pooling a read-only handle), then write
/// disjoint ranges at the same time. Both writers hit EBADF and upgrade; neither may have
/// its new handle released under it. Both ranges must be there, every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed003_pr178_two_clients_write_disjoint_ranges_after_read() {
    const CHUNK: usize = 64 << 10;
    const CHUNKS: usize = 8;
    for round in 0..20u8 {
        let (dir, server) = local_server(&vec![0u8; 2 * CHUNK * CHUNKS]);
        let (mut a, root) = common::mount(server.addr).await;
        let (mut b, _) = common::mount(server.addr).await;
        let (fh, _) = lookup(&mut a, &root, "f").await.unwrap();
        assert_eq!(read(&mut a, &fh, 0, 1).await.unwrap(), [0]);
        assert_eq!(read(&mut b, &fh, 0, 1).await.unwrap(), [0]);
        let writer = |mut c: common::Client, base: usize, byte: u8| {
            let fh = fh.clone();
            async move {
                for i in 0..CHUNKS {
                    let off = (base + i * CHUNK) as u64;
                    let r = write(&mut c, &fh, off, &[byte; CHUNK], stable_how::UNSTABLE).await;
                    assert_eq!(r.map(|r| r.count), Ok(CHUNK as u32), "round {round}, chunk {i}");
                }
                c
            }
        };
        let (ta, tb) = tokio::join!(
            tokio::spawn(writer(a, 0, 0xaa)),
            tokio::spawn(writer(b, CHUNK * CHUNKS, 0xbb))
        );
        let (mut a, _b) = (ta.unwrap(), tb.unwrap());
        let back = read(&mut a, &fh, 0, (2 * CHUNK * CHUNKS) as u32).await.unwrap();
        assert!(
            back[..CHUNK * CHUNKS].iter().all(|&x| x == 0xaa),
            "round {round}: first range"
        );
        assert!(
            back[CHUNK * CHUNKS..].iter().all(|&x| x == 0xbb),
            "round {round}: second range"
        );
        drop(server);
        let on_disk = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(on_disk, back);
    }
}
