//! The testkit run against `Overlay`, over `MemFs` layers and over `LocalFs` layers.
//!
//! The kit starts from an empty root. To make its scenarios run over lower files anyway,
//! each lower layer holds the very names the kit uses (`a`, `b`, `c`, `d`, a directory
//! with a file in it, a symlink, hard links, and the names of the scenarios' files) and
//! the factory deletes them all through the overlay before the kit starts: every
//! scenario then creates over whiteouts, makes directories that must be opaque, lists
//! directories whose lower namesakes must not come back, and renames onto names a lower
//! layer still has.

use std::sync::Arc;

use vfs_core::localfs::LocalFs;
use vfs_core::memfs::MemFs;
use vfs_core::overlay::{Overlay, OverlayOptions};
use vfs_core::testkit::Backend;
use vfs_core::{FileType, Ino, Name, OpenFlags, RequestCtx, VirtualFs};

const CTX: RequestCtx = RequestCtx::ROOT;

/// Names the kit's scenarios and model use at the root.
const NAMES: &[&str] = &["a", "b", "c", "d", "f", "g", "x", "dir", "target", "file", "src", "dst"];

fn nm(s: &str) -> Name<'_> {
    Name::new(s.as_ref()).expect("valid name")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Fills a lower layer through the trait: even names are files (one of them hard-linked
/// to the next name), odd ones directories with a file and a symlink inside.
async fn populate<F: VirtualFs>(fs: &F) {
    for (i, n) in NAMES.iter().enumerate() {
        if i % 2 == 0 {
            let (a, fh) = fs
                .create(&CTX, Ino::ROOT, nm(n), 0o644, 0, OpenFlags::RDWR)
                .await
                .expect("create");
            fs.write(&CTX, a.ino, fh, 0, format!("lower {n}\n").as_bytes())
                .await
                .expect("write");
            fs.release(&CTX, a.ino, fh).await.expect("release");
        } else {
            let d = fs.mkdir(&CTX, Ino::ROOT, nm(n), 0o755, 0).await.expect("mkdir");
            let (a, fh) = fs
                .create(&CTX, d.ino, nm("inner"), 0o644, 0, OpenFlags::RDWR)
                .await
                .expect("create inner");
            fs.release(&CTX, a.ino, fh).await.expect("release");
            fs.symlink(&CTX, d.ino, nm("link"), "inner".as_ref())
                .await
                .expect("symlink");
        }
    }
}

/// Removes every root entry of the overlay, recursively.
async fn clear<F: VirtualFs>(fs: &F, dir: Ino) {
    let entries = fs.readdir(&CTX, dir, 0, 10_000).await.expect("readdir");
    for e in entries {
        if e.name == "." || e.name == ".." {
            continue;
        }
        let n = Name::new(&e.name).expect("name");
        if e.kind == FileType::Directory {
            let a = fs.lookup(&CTX, dir, n).await.expect("lookup");
            Box::pin(clear(fs, a.ino)).await;
            fs.rmdir(&CTX, dir, n).await.expect("rmdir");
        } else {
            fs.unlink(&CTX, dir, n).await.expect("unlink");
        }
    }
    assert!(
        fs.readdir(&CTX, dir, 2, 10).await.expect("readdir").is_empty(),
        "the overlay directory is not empty after clearing it"
    );
}

fn overlay_memfs() -> Backend<Overlay<MemFs, MemFs>> {
    rt().block_on(async {
        let lower = MemFs::new();
        populate(&lower).await;
        let lower2 = MemFs::new();
        populate(&lower2).await;
        let fs = Overlay::open(MemFs::new(), vec![lower, lower2], OverlayOptions::default())
            .await
            .expect("overlay");
        clear(&fs, Ino::ROOT).await;
        Backend::new(fs)
    })
}

fn overlay_localfs() -> Backend<Overlay<LocalFs, LocalFs>> {
    let dirs = Arc::new((tempfile::tempdir().expect("upper"), tempfile::tempdir().expect("lower")));
    rt().block_on(async {
        let lower = LocalFs::new(dirs.1.path()).expect("lower LocalFs");
        populate(&lower).await;
        let upper = LocalFs::new(dirs.0.path()).expect("upper LocalFs");
        let fs = Overlay::open(upper, vec![lower], OverlayOptions::default())
            .await
            .expect("overlay");
        clear(&fs, Ino::ROOT).await;
        Backend::new(fs).keep(dirs)
    })
}

vfs_core::vfs_conformance!(overlay_over_memfs, overlay_memfs);
vfs_core::vfs_conformance!(overlay_over_localfs, overlay_localfs);
