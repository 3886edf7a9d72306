//! WRITE stability: `FILE_SYNC` and `DATA_SYNC` are answered only after the backend's
//! fsync returned; `UNSTABLE` is answered `UNSTABLE` and COMMIT fsyncs; the verifier is the
//! same for one server instance and changes with a restart.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::{lookup, spy, write};
use nfs3_client::nfs3_types::nfs3::{COMMIT3args, COMMIT3res, stable_how};
use vfs_core::localfs::LocalFs;

#[tokio::test]
async fn file_sync_is_answered_after_fsync_unstable_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"").unwrap();
    let spy = Arc::new(spy(LocalFs::new(dir.path()).unwrap()));
    let server = common::serve(Arc::clone(&spy), common::no_root_squash());
    let (mut c, root) = common::mount(server.addr).await;
    let (fh, _) = lookup(&mut c, &root, "f").await.unwrap();
    spy.hooks.take_log();

    let r = write(&mut c, &fh, 0, b"one", stable_how::FILE_SYNC).await.unwrap();
    assert_eq!(r.committed, stable_how::FILE_SYNC);
    // By the time the reply arrived, the backend had written and then fsynced.
    let log = spy.hooks.take_log();
    let w = log.iter().position(|l| l.starts_with("write 3 -> Ok")).expect("write");
    let f = log
        .iter()
        .position(|l| l == "fsync datasync=false -> Ok(())")
        .expect("fsync");
    assert!(w < f, "{log:?}");

    let r = write(&mut c, &fh, 3, b"two", stable_how::DATA_SYNC).await.unwrap();
    assert_eq!(r.committed, stable_how::DATA_SYNC);
    assert!(
        spy.hooks
            .take_log()
            .contains(&"fsync datasync=true -> Ok(())".to_string())
    );

    let unstable = write(&mut c, &fh, 6, b"three", stable_how::UNSTABLE).await.unwrap();
    assert_eq!(unstable.committed, stable_how::UNSTABLE);
    let log = spy.hooks.take_log();
    assert!(!log.iter().any(|l| l.starts_with("fsync")), "UNSTABLE fsynced: {log:?}");

    let commit = c
        .commit(&COMMIT3args {
            file: fh.clone(),
            offset: 0,
            count: 0,
        })
        .await
        .unwrap();
    let COMMIT3res::Ok(commit) = commit else {
        panic!("COMMIT failed: {commit:?}")
    };
    assert!(
        spy.hooks
            .take_log()
            .contains(&"fsync datasync=false -> Ok(())".to_string())
    );
    assert_eq!(commit.verf, unstable.verf, "one instance, one verifier");
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"onetwothree");
    drop(c);
    server.stop();

    // A new instance on the same directory: same handles, new verifier, so a client holding
    // uncommitted UNSTABLE data knows to send it again.
    let server = common::serve(Arc::new(LocalFs::new(dir.path()).unwrap()), common::no_root_squash());
    let mut c = common::connect(server.addr, 0, 0).await;
    let again = write(&mut c, &fh, 0, b"ONE", stable_how::UNSTABLE).await.unwrap();
    assert_ne!(again.verf, unstable.verf, "the verifier must change with a restart");
}
