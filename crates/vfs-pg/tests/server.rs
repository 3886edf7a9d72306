//! What a mount does with its database: the identity that NFS handles derive from, the
//! schema version check, and the server going away and coming back.

use std::time::{Duration, Instant};

use vfs_core::{Errno, Ino, InodeStability, Name, OpenFlags, RequestCtx, VirtualFs};
use vfs_pg::testing::{TestServer, with_shared};
use vfs_pg::{OpenError, PgFs, PgOptions, Root};

const CTX: RequestCtx = RequestCtx::ROOT;

fn nm(s: &str) -> Name<'_> {
    Name::new(s.as_ref()).expect("name")
}

fn verset_opts() -> PgOptions {
    PgOptions {
        root: Root::Verset { module: 1, verset: 1 },
        connect_timeout: Duration::from_secs(2),
        ..PgOptions::default()
    }
}

async fn sql(url: &str, text: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let driver = tokio::spawn(conn);
    client.batch_execute(text).await.expect("sql");
    drop(client);
    let _ = driver.await;
}

#[tokio::test]
async fn the_same_database_gives_the_same_source_id_and_inode_numbers() {
    let url = with_shared(|s| s.create_db()).expect("server").expect("database");
    let other = with_shared(|s| s.create_db()).expect("server").expect("database");
    let a = PgFs::open(&url, verset_opts()).await.expect("open");
    let f = a.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await.expect("mkdir");
    assert_eq!(a.inode_stability(), InodeStability::Stable);
    drop(a);
    let b = PgFs::open(&url, verset_opts()).await.expect("reopen");
    assert_eq!(b.lookup(&CTX, Ino::ROOT, nm("d")).await.expect("lookup").ino, f.ino);
    let c = PgFs::open(&other, verset_opts()).await.expect("open other");
    assert_ne!(b.source_id(), c.source_id(), "another database is another source");
    let again = PgFs::open(&url, verset_opts()).await.expect("open again");
    assert_eq!(b.source_id(), again.source_id());
    let whole = PgFs::open(&url, PgOptions::default()).await.expect("whole view");
    assert_ne!(b.source_id(), whole.source_id(), "another view is another source");
}

#[tokio::test]
async fn a_database_of_another_schema_version_is_refused_with_one_line() {
    let url = with_shared(|s| s.create_db()).expect("server").expect("database");
    PgFs::open(&url, verset_opts()).await.expect("create");
    sql(&url, "UPDATE vfs_meta SET value = '99' WHERE key = 'schema_version'").await;
    let e = PgFs::open(&url, verset_opts())
        .await
        .expect_err("version 99 must be refused");
    assert!(matches!(e, OpenError::Version { .. }), "{e:?}");
    let line = e.to_string();
    assert!(line.contains("version 99") && !line.contains('\n'), "{line}");
}

#[tokio::test]
async fn a_missing_verset_is_refused() {
    let url = with_shared(|s| s.create_db()).expect("server").expect("database");
    let opts = PgOptions {
        root: Root::Verset { module: 1, verset: 5 },
        ..PgOptions::default()
    };
    let e = PgFs::open(&url, opts).await.expect_err("no verset 5");
    assert!(matches!(e, OpenError::NoVerset { module: 1, verset: 5 }), "{e:?}");
}

/// The server stops: operations answer EIO promptly, change nothing; the server comes
/// back: the same mount works again by itself, and what was written before is there.
#[test]
fn server_gone_is_eio_and_the_mount_recovers_when_it_is_back() {
    let mut server = TestServer::start_durable().expect("private server");
    let url = server.create_db().expect("database");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fs = rt.block_on(PgFs::open(&url, verset_opts())).expect("open");
    let (f, fh) = rt
        .block_on(fs.create(&CTX, Ino::ROOT, nm("f"), 0o644, 0, OpenFlags::RDWR))
        .expect("create");
    rt.block_on(fs.write(&CTX, f.ino, fh, 0, b"before")).expect("write");

    server.stop().expect("stop");
    for _ in 0..3 {
        let t = Instant::now();
        let e = rt
            .block_on(fs.getattr(&CTX, f.ino, None))
            .expect_err("getattr without a server");
        assert_eq!(e.errno(), Errno::EIO, "{e:?}");
        let e = rt
            .block_on(fs.write(&CTX, f.ino, fh, 0, b"during"))
            .expect_err("write without a server");
        assert_eq!(e.errno(), Errno::EIO, "{e:?}");
        let e = rt
            .block_on(fs.mkdir(&CTX, Ino::ROOT, nm("x"), 0o755, 0))
            .expect_err("mkdir without a server");
        assert_eq!(e.errno(), Errno::EIO, "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(10), "EIO took {:?}", t.elapsed());
    }

    server.restart().expect("restart");
    let a = rt
        .block_on(fs.getattr(&CTX, f.ino, None))
        .expect("getattr after the restart");
    assert_eq!(a.size, 6);
    assert_eq!(
        &rt.block_on(fs.read(&CTX, f.ino, fh, 0, 100)).expect("read")[..],
        b"before"
    );
    assert!(
        rt.block_on(fs.lookup(&CTX, Ino::ROOT, nm("x"))).is_err(),
        "the failed mkdir left nothing"
    );
    rt.block_on(fs.write(&CTX, f.ino, fh, 6, b" after"))
        .expect("write after");
    rt.block_on(fs.release(&CTX, f.ino, fh)).expect("release");
    let r = rt.block_on(fs.fsck()).expect("fsck");
    assert!(r.is_clean(), "{r}");
}

/// The server is stopped (immediately, as a crash) and started again in
/// the middle of a write workload of four writers, each writing numbered records and
/// `fsync`ing each. While it is down every operation answers `EIO`, each within the
/// bound of [`verset_opts`]' connect timeout (2 s) plus a margin; the same mount resumes
/// by itself once the server is back; every record whose `fsync` was acknowledged before
/// the crash is there after it, byte for byte; and the consistency check is clean.
#[test]
fn restart_during_a_write_workload_loses_no_fsynced_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const WRITERS: usize = 4;
    const RECORD: usize = 4096;
    let mut server = TestServer::start_durable().expect("private server");
    let url = server.create_db().expect("database");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let fs = Arc::new(rt.block_on(PgFs::open(&url, verset_opts())).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (fs, stop) = (Arc::clone(&fs), Arc::clone(&stop));
        tasks.push(rt.spawn(async move {
            let name = format!("w{w}");
            let (f, fh) = fs
                .create(&CTX, Ino::ROOT, nm(&name), 0o644, 0, OpenFlags::RDWR)
                .await
                .expect("create");
            // Records acknowledged by fsync, the errors seen (errno, time to answer),
            // and whether a write succeeded after an error (the mount recovered).
            let (mut acked, mut errors, mut recovered) = (Vec::new(), Vec::new(), false);
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let rec = vec![(w as u8) ^ (i as u8); RECORD];
                let t = Instant::now();
                let r = match fs.write(&CTX, f.ino, fh, i * RECORD as u64, &rec).await {
                    Ok(_) => fs.fsync(&CTX, f.ino, fh, false).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => {
                        recovered |= !errors.is_empty();
                        acked.push(i);
                        i += 1;
                    }
                    Err(e) => {
                        errors.push((e.errno(), t.elapsed()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (w as u8, f.ino, fh, acked, errors, recovered)
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    server.stop().expect("stop");
    std::thread::sleep(Duration::from_millis(1500));
    server.restart().expect("restart");
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let mut total_acked = 0;
    let mut total_errors = 0;
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (w, ino, fh, acked, errors, recovered) = rt.block_on(t).expect("writer");
        assert!(!errors.is_empty(), "a writer saw no error while the server was down");
        for (errno, took) in &errors {
            assert_eq!(*errno, Errno::EIO, "while the server was down");
            slowest = slowest.max(*took);
        }
        assert!(recovered, "the writer never succeeded again after the restart");
        let last = *acked.last().expect("acknowledged writes");
        let size = rt.block_on(fs.getattr(&CTX, ino, None)).expect("getattr").size;
        assert!(
            size >= (last + 1) * RECORD as u64,
            "size {size} after {} records",
            last + 1
        );
        for i in acked.iter().copied() {
            let got = rt
                .block_on(fs.read(&CTX, ino, fh, i * RECORD as u64, RECORD as u32))
                .expect("read back");
            assert!(
                got.len() == RECORD && got.iter().all(|b| *b == w ^ (i as u8)),
                "writer {w}: record {i} is not what was fsync'ed"
            );
        }
        rt.block_on(fs.release(&CTX, ino, fh)).expect("release");
        total_acked += acked.len();
        total_errors += errors.len();
    }
    assert!(slowest < Duration::from_secs(5), "an EIO took {slowest:?}");
    let r = rt.block_on(fs.fsck()).expect("fsck");
    assert!(r.is_clean(), "{r}");
    eprintln!(
        "restart during writes: {total_acked} records fsync'ed and read back, {total_errors} EIO while down, slowest EIO {} ms, fsck clean",
        slowest.as_millis()
    );
}
