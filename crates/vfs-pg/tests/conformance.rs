//! The vfs-core conformance and race kit, model test included, on vfs-pg: each test (and
//! each model case) on a fresh database of one private PostgreSQL server that this test
//! process starts (and stops at exit), serving verset 1 of module 1 as the root. When a
//! backend is dropped at the end of its test, the consistency check runs on its database
//! and fails the test unless it is clean.

use std::sync::Arc;

use vfs_core::testkit::Backend;
use vfs_pg::testing::fresh_fs;
use vfs_pg::{PgFs, PgOptions, Root};

/// Runs `fsck` on the filesystem when the last clone of its backend is dropped; panics
/// (failing the test) if it finds a problem.
struct FsckOnDrop(Arc<PgFs>);

impl Drop for FsckOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let fs = Arc::clone(&self.0);
        // Dropped inside the scenario's runtime: check from a thread of its own.
        let report = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(fs.fsck())
        })
        .join()
        .expect("fsck thread");
        match report {
            Ok(r) if r.is_clean() => {}
            Ok(r) => panic!("the consistency check failed after the test:\n{r}"),
            Err(e) => panic!("the consistency check could not run: {e}"),
        }
    }
}

fn verset_backend() -> Backend<PgFs> {
    let fs = fresh_fs(PgOptions {
        root: Root::Verset { module: 1, verset: 1 },
        pool_size: 8,
        ..PgOptions::default()
    });
    let b = Backend::new(fs);
    let guard = FsckOnDrop(Arc::clone(&b.fs));
    b.keep(guard)
}

vfs_core::vfs_conformance!(pgfs, verset_backend);
