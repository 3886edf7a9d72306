//! vfs-pg with its file blocks in an S3 bucket (SeaweedFS, started by this test process
//! on loopback ports and killed at exit): the conformance and race kit, a crash between
//! upload and commit, garbage collection, the store refusing at start, and the store
//! dying in the middle of writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::Transaction;
use vfs_core::testkit::Backend;
use vfs_core::{Errno, Ino, Name, OpenFlags, RequestCtx, VirtualFs};
use vfs_pg::testing::weed::{self, SHARED_BUCKET, WeedServer};
use vfs_pg::{BlockStore, OpenError, PgFs, PgOptions, Root, S3BlockStore, S3Options, StoreError};

const CTX: RequestCtx = RequestCtx::ROOT;

fn nm(s: &str) -> Name<'_> {
    Name::new(s.as_ref()).expect("name")
}

fn verset_opts() -> PgOptions {
    PgOptions {
        root: Root::Verset { module: 1, verset: 1 },
        pool_size: 8,
        connect_timeout: Duration::from_secs(2),
        ..PgOptions::default()
    }
}

fn new_db() -> String {
    vfs_pg::testing::with_shared(|s| s.create_db())
        .expect("server")
        .expect("database")
}

fn shared_options() -> S3Options {
    weed::with_shared(|w| w.options(SHARED_BUCKET)).expect("weed server")
}

/// Runs `fsck` on the filesystem when the last clone of its backend is dropped, and
/// checks that every block row has its object; panics (failing the test) otherwise.
struct FsckOnDrop(Arc<PgFs<S3BlockStore>>, String);

impl Drop for FsckOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let (fs, url) = (Arc::clone(&self.0), self.1.clone());
        let (report, gc) = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                (
                    fs.fsck().await,
                    fs.store().gc(&url, Duration::from_secs(3600), true).await,
                )
            })
        })
        .join()
        .expect("fsck thread");
        match report {
            Ok(r) if r.is_clean() => {}
            Ok(r) => panic!("the consistency check failed after the test:\n{r}"),
            Err(e) => panic!("the consistency check could not run: {e}"),
        }
        match gc {
            Ok(g) => assert!(g.missing.is_empty(), "blocks without their object: {:?}", g.missing),
            Err(e) => panic!("gc --dry-run could not run: {e}"),
        }
    }
}

fn s3_backend() -> Backend<PgFs<S3BlockStore>> {
    let url = new_db();
    let fs = weed::open_s3_fs(&url, verset_opts(), &shared_options()).expect("open with S3 blocks");
    let b = Backend::new(fs);
    let guard = FsckOnDrop(Arc::clone(&b.fs), url);
    b.keep(guard)
}

vfs_core::vfs_conformance!(pgfs_s3, s3_backend);

/// A store that uploads like [`S3BlockStore`] and then, when armed, fails as a process
/// killed between the upload and the commit would: the transaction never commits.
struct CrashAfterUpload {
    inner: S3BlockStore,
    armed: AtomicBool,
}

impl BlockStore for CrashAfterUpload {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, tx: &Transaction<'_>, blocks: &[(i64, &[u8])]) -> Result<(), StoreError> {
        self.inner.put(tx, blocks).await?;
        if self.armed.load(Ordering::Relaxed) {
            return Err(StoreError::Other("simulated crash after the upload".into()));
        }
        Ok(())
    }
    async fn get(
        &self,
        tx: &Transaction<'_>,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Bytes>, StoreError> {
        self.inner.get(tx, ids).await
    }
    async fn delete(&self, tx: &Transaction<'_>, ids: &[i64]) -> Result<(), StoreError> {
        self.inner.delete(tx, ids).await
    }
    fn fsck_rules(&self) -> &'static [(&'static str, &'static str)] {
        self.inner.fsck_rules()
    }
}

/// Uploads whose transaction never commits leave orphan
/// objects and no row; the file keeps its committed bytes; gc keeps orphans younger than
/// the grace and every referenced object, removes older orphans and the objects of
/// committed deletions, and the mount (open throughout) goes on working.
/// Checked: with `S3BlockStore::delete` changed to delete the objects at once (before
/// the commit, no `block_gone` record) this test fails (`after`: 0 deleted blocks, not 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_upload_and_commit_leaves_only_orphans_that_gc_removes() {
    let url = new_db();
    let s3 = shared_options();
    let inner = S3BlockStore::new(&s3).expect("store");
    inner.check().await.expect("bucket");
    let store = CrashAfterUpload {
        inner,
        armed: AtomicBool::new(false),
    };
    let fs = PgFs::open_with_store(&url, verset_opts(), store).await.expect("open");
    let bs = fs.block_size() as usize;
    let old = vec![7u8; 2 * bs];
    let (f, fh) = fs
        .create(&CTX, Ino::ROOT, nm("f"), 0o644, 0, OpenFlags::RDWR)
        .await
        .expect("create");
    fs.write(&CTX, f.ino, fh, 0, &old).await.expect("write");
    let gc = |grace: u64, dry: bool| fs.store().inner.gc(&url, Duration::from_secs(grace), dry);
    let before = gc(0, true).await.expect("gc dry run");
    assert_eq!(
        (before.objects, before.referenced, before.removed()),
        (2, 2, 0),
        "{before}"
    );

    fs.store().armed.store(true, Ordering::Relaxed);
    let e = fs
        .write(&CTX, f.ino, fh, 0, &vec![9u8; 4 * bs])
        .await
        .expect_err("the crashed write");
    assert_eq!(e.errno(), Errno::EIO, "{e:?}");
    fs.store().armed.store(false, Ordering::Relaxed);
    assert_eq!(
        &fs.read(&CTX, f.ino, fh, 0, 8 * bs as u32).await.expect("read")[..],
        &old[..]
    );
    assert_eq!(
        fs.getattr(&CTX, f.ino, None).await.expect("getattr").size,
        old.len() as u64
    );
    let r = fs.fsck().await.expect("fsck");
    assert!(r.is_clean(), "{r}");

    let young = gc(3600, false).await.expect("gc with a long grace");
    assert_eq!(young.objects, 6, "two referenced objects and four orphans: {young}");
    assert_eq!(
        (young.removed(), young.kept_young, young.referenced),
        (0, 4, 2),
        "{young}"
    );
    assert!(young.missing.is_empty(), "{young}");

    let swept = gc(0, false).await.expect("gc");
    assert_eq!(swept.removed_orphans.len(), 4, "{swept}");
    assert_eq!(swept.referenced, 2, "{swept}");
    assert!(swept.missing.is_empty(), "{swept}");
    assert_eq!(
        &fs.read(&CTX, f.ino, fh, 0, 8 * bs as u32).await.expect("read")[..],
        &old[..]
    );

    // A committed deletion: its objects stay until gc, which removes them.
    fs.write(&CTX, f.ino, fh, 0, b"new").await.expect("write after gc");
    fs.release(&CTX, f.ino, fh).await.expect("release");
    fs.unlink(&CTX, Ino::ROOT, nm("f")).await.expect("unlink");
    let after = gc(0, false).await.expect("gc after unlink");
    assert_eq!((after.referenced, after.removed_deleted.len()), (0, 3), "{after}");
    let last = gc(0, false).await.expect("gc again");
    assert_eq!((last.objects, last.removed()), (0, 0), "{last}");
    let r = fs.fsck().await.expect("fsck");
    assert!(r.is_clean(), "{r}");
}

/// Item 3 (at library level; the example prints the same line): a bucket that does not
/// exist and credentials the store refuses are each one line naming the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_or_refused_credentials_is_one_clear_line() {
    let mut missing = shared_options();
    missing.bucket = "no-such-bucket".into();
    let e = S3BlockStore::new(&missing)
        .expect("store")
        .check()
        .await
        .expect_err("missing bucket");
    let line = e.to_string();
    assert!(line.contains("s3://no-such-bucket") && !line.contains('\n'), "{line}");

    let mut refused = shared_options();
    refused.credentials = Some((weed::ACCESS_KEY.into(), "wrong-secret".into()));
    let e = S3BlockStore::new(&refused)
        .expect("store")
        .check()
        .await
        .expect_err("wrong secret");
    let line = e.to_string();
    assert!(line.contains("s3://vfs-test") && !line.contains('\n'), "{line}");
}

/// A database made with S3 blocks is refused with the PostgreSQL store, and the other
/// way round, with one line naming where its blocks are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_opens_only_with_the_store_that_has_its_blocks() {
    let url = new_db();
    let s3 = shared_options();
    let fs = weed::open_s3_fs(&url, verset_opts(), &s3).expect("open with S3");
    drop(fs);
    let e = PgFs::open(&url, verset_opts())
        .await
        .expect_err("pg store on an S3 database");
    assert!(matches!(e, OpenError::Store { .. }), "{e:?}");
    assert!(e.to_string().contains("s3://vfs-test/"), "{e}");

    let pg_url = new_db();
    PgFs::open(&pg_url, verset_opts()).await.expect("pg");
    let e = weed::open_s3_fs(&pg_url, verset_opts(), &s3).expect_err("S3 store on a pg database");
    assert!(e.contains("keeps its file blocks in pg"), "{e}");
}

/// The object store is killed in the middle of a stream of writes.
/// Every write while it is down answers `EIO`, each within the store's deadline (5 s)
/// plus a margin; nothing is half-committed (the file holds exactly the last
/// acknowledged write, every block row has its object); once the store is back the
/// same mount writes and reads again by itself.
#[test]
fn the_store_dying_mid_write_is_eio_in_bounded_time_and_recovers() {
    let mut w = WeedServer::start("fault").expect("private weed server");
    let s3 = w.options("fault");
    let url = new_db();
    let fs = Arc::new(weed::open_s3_fs(&url, verset_opts(), &s3).expect("open"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bs = fs.block_size() as usize;
    let (f, fh) = rt
        .block_on(fs.create(&CTX, Ino::ROOT, nm("f"), 0o644, 0, OpenFlags::RDWR))
        .expect("create");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (fs, stop) = (Arc::clone(&fs), Arc::clone(&stop));
        rt.spawn(async move {
            let (mut acked, mut errors) = (None, Vec::new());
            for i in 0..100_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                match fs.write(&CTX, f.ino, fh, 0, &vec![(i % 251) as u8 + 1; 4 * bs]).await {
                    Ok(_) => acked = Some((i % 251) as u8 + 1),
                    Err(e) => {
                        errors.push((e.errno(), t.elapsed()));
                        if errors.len() >= 3 {
                            break;
                        }
                    }
                }
            }
            (acked, errors)
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    w.stop().expect("kill weed");
    let (acked, errors) = rt.block_on(writer).expect("writer");
    stop.store(true, Ordering::Relaxed);
    let acked = acked.expect("some writes succeeded before the kill");
    assert!(!errors.is_empty(), "no write failed with the store dead");
    for (errno, took) in &errors {
        assert_eq!(*errno, Errno::EIO);
        assert!(*took < Duration::from_secs(12), "EIO took {took:?}");
    }
    eprintln!(
        "writes failed with EIO after {:?}",
        errors.iter().map(|e| e.1).collect::<Vec<_>>()
    );

    w.restart().expect("restart weed");
    let data = rt
        .block_on(fs.read(&CTX, f.ino, fh, 0, 8 * bs as u32))
        .expect("read after the restart");
    assert_eq!(data.len(), 4 * bs);
    assert!(
        data.iter().all(|b| *b == acked),
        "the file is not the last acknowledged write"
    );
    rt.block_on(fs.write(&CTX, f.ino, fh, 0, b"after"))
        .expect("write after the restart");
    rt.block_on(fs.release(&CTX, f.ino, fh)).expect("release");
    let r = rt.block_on(fs.fsck()).expect("fsck");
    assert!(r.is_clean(), "{r}");
    let g = rt
        .block_on(fs.store().gc(&url, Duration::from_secs(3600), true))
        .expect("gc dry run");
    assert!(g.missing.is_empty(), "{g}");
}
