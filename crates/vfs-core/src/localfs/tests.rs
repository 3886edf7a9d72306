//! Unit tests of [`LocalFs`]: every operation, its error cases, and the properties the
//! module docs promise (host inode numbers, no cached attributes, resolution after a
//! restart, readdir cookies). Escape tests live in `escape_tests.rs`.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::future::Future as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;
use crate::types::Timestamp;

/// A token for a test's own entry point (each call site holds no lock).
fn entry() -> Locked<Unlocked> {
    // SAFETY: called only where the test holds no lock.
    unsafe { Locked::new() }
}

pub(super) const CTX: RequestCtx = RequestCtx::ROOT;

pub(super) fn nm(s: &str) -> Name<'_> {
    Name::new(OsStr::new(s)).unwrap()
}

pub(super) struct Fx {
    pub(super) tmp: TempDir,
    pub(super) root: PathBuf,
    pub(super) fs: LocalFs,
}

impl Fx {
    pub(super) fn new() -> Fx {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        let fs = LocalFs::new(&root).unwrap();
        Fx { tmp, root, fs }
    }

    pub(super) fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Looks up a slash-separated path from the root.
    pub(super) async fn walk(&self, rel: &str) -> VfsResult<Attr> {
        let mut attr = self.fs.getattr(&CTX, Ino::ROOT, None).await?;
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            attr = self.fs.lookup(&CTX, attr.ino, nm(part)).await?;
        }
        Ok(attr)
    }

    pub(super) async fn create(&self, parent: Ino, name: &str, data: &[u8]) -> Attr {
        let (attr, fh) = self
            .fs
            .create(&CTX, parent, nm(name), 0o644, 0o022, OpenFlags::RDWR)
            .await
            .unwrap();
        if !data.is_empty() {
            assert_eq!(
                self.fs.write(&CTX, attr.ino, fh, 0, data).await.unwrap() as usize,
                data.len()
            );
        }
        self.fs.release(&CTX, attr.ino, fh).await.unwrap();
        attr
    }

    pub(super) async fn read_all(&self, ino: Ino) -> VfsResult<Vec<u8>> {
        let fh = self.fs.open(&CTX, ino, OpenFlags::RDONLY).await?;
        let data = self.fs.read(&CTX, ino, fh, 0, 1 << 20).await;
        self.fs.release(&CTX, ino, fh).await?;
        Ok(data?.to_vec())
    }

    pub(super) async fn names(&self, ino: Ino) -> Vec<OsString> {
        let mut out: Vec<OsString> = self
            .fs
            .readdir(&CTX, ino, 0, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        out.sort();
        out
    }

    pub(super) fn node_count(&self) -> usize {
        self.fs.inner.nodes.len(&mut entry())
    }
}

fn host_ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

fn errno(r: VfsResult<impl std::fmt::Debug>) -> crate::Errno {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.errno(),
    }
}

// ---- identity ------------------------------------------------------------------------

#[tokio::test]
async fn root_is_ino_one_and_source_is_canonical() {
    let fx = Fx::new();
    let a = fx.fs.getattr(&CTX, Ino::ROOT, None).await.unwrap();
    assert_eq!(a.ino, Ino::ROOT);
    assert_eq!(a.kind, FileType::Directory);
    let canon = fs::canonicalize(&fx.root).unwrap();
    assert_eq!(fx.fs.source_id(), format!("localfs:{}", canon.display()));
    assert_eq!(fx.fs.inode_stability(), InodeStability::Stable);
    let list = fx.fs.readdir(&CTX, Ino::ROOT, 0, 100).await.unwrap();
    let dot = list.iter().find(|e| e.name == ".").unwrap();
    let dotdot = list.iter().find(|e| e.name == "..").unwrap();
    assert_eq!(dot.ino, Ino::ROOT);
    assert_eq!(dotdot.ino, Ino::ROOT);
}

#[tokio::test]
async fn new_refuses_missing_root_and_files() {
    let tmp = TempDir::new().unwrap();
    assert!(matches!(LocalFs::new(tmp.path().join("nope")), Err(VfsError::NotFound)));
    fs::write(tmp.path().join("f"), b"x").unwrap();
    assert!(matches!(LocalFs::new(tmp.path().join("f")), Err(VfsError::NotDir)));
}

#[tokio::test]
async fn inode_numbers_are_the_hosts() {
    let fx = Fx::new();
    fs::create_dir(fx.p("d")).unwrap();
    fs::write(fx.p("d/f"), b"hello").unwrap();
    let d = fx.walk("d").await.unwrap();
    let f = fx.walk("d/f").await.unwrap();
    assert_eq!(d.ino.0, host_ino(&fx.p("d")));
    assert_eq!(f.ino.0, host_ino(&fx.p("d/f")));
    assert_eq!(f.size, 5);
    assert_eq!(f.kind, FileType::Regular);
    // readdir reports the same numbers lookup does.
    let list = fx.fs.readdir(&CTX, d.ino, 0, 100).await.unwrap();
    assert_eq!(list.iter().find(|e| e.name == "f").unwrap().ino, f.ino);
    assert_eq!(list.iter().find(|e| e.name == "..").unwrap().ino, Ino::ROOT);
    assert_eq!(list.iter().find(|e| e.name == ".").unwrap().ino, d.ino);
}

#[tokio::test]
async fn same_file_same_ino_across_instances() {
    let fx = Fx::new();
    fs::create_dir_all(fx.p("a/b")).unwrap();
    fs::write(fx.p("a/b/c"), b"data").unwrap();
    let first = fx.walk("a/b/c").await.unwrap();
    let again = LocalFs::new(&fx.root).unwrap();
    let mut ino = Ino::ROOT;
    for part in ["a", "b", "c"] {
        ino = again.lookup(&CTX, ino, nm(part)).await.unwrap().ino;
    }
    assert_eq!(ino, first.ino);
    assert_eq!(again.source_id(), fx.fs.source_id());
}

#[tokio::test]
async fn unknown_ino_is_resolved_after_restart() {
    let fx = Fx::new();
    fs::create_dir_all(fx.p("a/b/c")).unwrap();
    fs::create_dir_all(fx.p("x/y")).unwrap();
    fs::write(fx.p("a/b/c/deep"), b"deep data").unwrap();
    let deep = fx.walk("a/b/c/deep").await.unwrap();
    let dir = fx.walk("a/b").await.unwrap();

    // A new instance has never seen these numbers: it finds them by walking the tree.
    let fs2 = LocalFs::new(&fx.root).unwrap();
    let a = fs2.getattr(&CTX, deep.ino, None).await.unwrap();
    assert_eq!(a.ino, deep.ino);
    assert_eq!(a.size, 9);
    let fh = fs2.open(&CTX, deep.ino, OpenFlags::RDONLY).await.unwrap();
    assert_eq!(&fs2.read(&CTX, deep.ino, fh, 0, 100).await.unwrap()[..], b"deep data");
    fs2.release(&CTX, deep.ino, fh).await.unwrap();
    let names: Vec<_> = fs2
        .readdir(&CTX, dir.ino, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&OsString::from("c")));

    // Renamed behind our back: the remembered path fails, the walk finds it again.
    fs::rename(fx.p("a/b/c/deep"), fx.p("x/y/moved")).unwrap();
    let a = fs2.getattr(&CTX, deep.ino, None).await.unwrap();
    assert_eq!(a.ino, deep.ino);
    // ...and lookups always ask the host.
    assert_eq!(fx.walk("x/y/moved").await.unwrap().ino, deep.ino);
    assert_eq!(errno(fx.walk("a/b/c/deep").await), crate::Errno::ENOENT);
}

#[tokio::test]
async fn removed_ino_is_stale() {
    let fx = Fx::new();
    fs::write(fx.p("f"), b"x").unwrap();
    let f = fx.walk("f").await.unwrap();
    fs::remove_file(fx.p("f")).unwrap();
    assert!(matches!(fx.fs.getattr(&CTX, f.ino, None).await, Err(VfsError::Stale)));
    assert!(matches!(
        fx.fs.open(&CTX, f.ino, OpenFlags::RDONLY).await,
        Err(VfsError::Stale)
    ));
    let fs2 = LocalFs::new(&fx.root).unwrap();
    assert!(matches!(fs2.getattr(&CTX, f.ino, None).await, Err(VfsError::Stale)));
    assert!(matches!(
        fs2.getattr(&CTX, Ino(u64::MAX - 7), None).await,
        Err(VfsError::Stale)
    ));
    assert!(matches!(
        fs2.readdir(&CTX, Ino(u64::MAX - 7), 0, 10).await,
        Err(VfsError::Stale)
    ));
}

#[tokio::test]
async fn forget_drops_state_and_directory_descriptors() {
    let fx = Fx::new();
    fs::create_dir(fx.p("d")).unwrap();
    fs::write(fx.p("f"), b"x").unwrap();
    let before = fx.fs.inner.budget.held();
    let d = fx.walk("d").await.unwrap();
    fx.fs.lookup(&CTX, Ino::ROOT, nm("d")).await.unwrap();
    let f = fx.walk("f").await.unwrap();
    assert_eq!(fx.node_count(), 2);
    assert_eq!(fx.fs.inner.budget.held(), before + 1);
    fx.fs.forget(d.ino, 1).await;
    assert_eq!(fx.node_count(), 2, "one lookup of d is still held");
    fx.fs.forget(d.ino, 1).await;
    fx.fs.forget(f.ino, 5).await;
    assert_eq!(fx.node_count(), 0);
    assert_eq!(fx.fs.inner.budget.held(), before);
    fx.fs.forget(Ino::ROOT, 10).await;
    fx.fs.forget(Ino(999_999_999), 1).await;
    // Forgotten inodes are still found (by walking).
    assert_eq!(fx.fs.getattr(&CTX, d.ino, None).await.unwrap().ino, d.ino);
}

#[tokio::test]
async fn directory_descriptors_respect_the_budget() {
    let fx = Fx::new();
    let small = LocalFs::with_dir_fd_budget(&fx.root, Some(3)).unwrap();
    for i in 0..10 {
        fs::create_dir_all(fx.p(&format!("d{i}/sub"))).unwrap();
    }
    let mut inos = Vec::new();
    for i in 0..10 {
        let d = small.lookup(&CTX, Ino::ROOT, nm(&format!("d{i}"))).await.unwrap();
        inos.push(small.lookup(&CTX, d.ino, nm("sub")).await.unwrap().ino);
        assert!(small.inner.budget.held() <= 3);
    }
    assert_eq!(small.inner.budget.held(), 3);
    // Every directory still works, with or without a kept descriptor: those without one
    // are reopened through their remembered path, step by verified step.
    for ino in &inos {
        let (a, fh) = small
            .create(&CTX, *ino, nm("f"), 0o644, 0, OpenFlags::WRONLY)
            .await
            .unwrap();
        small.release(&CTX, a.ino, fh).await.unwrap();
        assert!(small.inner.resolve_known(&mut entry(), *ino).is_some());
    }
    for i in 0..10 {
        assert!(fx.p(&format!("d{i}/sub/f")).exists());
    }
}

// ---- lookup and errors -----------------------------------------------------------------

#[tokio::test]
async fn lookup_errors() {
    let fx = Fx::new();
    fs::write(fx.p("f"), b"x").unwrap();
    let f = fx.walk("f").await.unwrap();
    assert!(matches!(
        fx.fs.lookup(&CTX, Ino::ROOT, nm("missing")).await,
        Err(VfsError::NotFound)
    ));
    assert!(matches!(
        fx.fs.lookup(&CTX, f.ino, nm("x")).await,
        Err(VfsError::NotDir)
    ));
    assert!(matches!(fx.fs.readdir(&CTX, f.ino, 0, 10).await, Err(VfsError::NotDir)));
    assert!(matches!(
        fx.fs.create(&CTX, f.ino, nm("x"), 0o644, 0, OpenFlags::RDWR).await,
        Err(VfsError::NotDir)
    ));
    assert!(matches!(
        fx.fs.mkdir(&CTX, f.ino, nm("x"), 0o755, 0).await,
        Err(VfsError::NotDir)
    ));
}

#[tokio::test]
async fn long_names() {
    let fx = Fx::new();
    let long = "n".repeat(256);
    assert!(matches!(Name::new(OsStr::new(&long)), Err(VfsError::NameTooLong)));
    // The longest name the host allows works end to end.
    let max = "m".repeat(255);
    let a = fx.create(Ino::ROOT, &max, b"max").await;
    assert_eq!(fx.walk(&max).await.unwrap().ino, a.ino);
    assert!(fx.names(Ino::ROOT).await.contains(&OsString::from(&max)));
    // A host-side name of every byte but '/' and NUL is listed and found.
    let odd = OsStr::from_bytes(b"\x01odd \xff\xfe name\n");
    fs::write(fx.root.join(odd), b"odd").unwrap();
    let list = fx.fs.readdirplus(&CTX, Ino::ROOT, 0, 100).await.unwrap();
    let e = list.iter().find(|e| e.entry.name == odd).unwrap();
    let l = fx.fs.lookup(&CTX, Ino::ROOT, Name::new(odd).unwrap()).await.unwrap();
    assert_eq!(e.attr.ino, l.ino);
    assert_eq!(fx.read_all(l.ino).await.unwrap(), b"odd");
    // A symlink target longer than PATH_MAX is refused before reaching the host.
    let target = "t/".repeat(3000);
    assert!(matches!(
        fx.fs.symlink(&CTX, Ino::ROOT, nm("l"), OsStr::new(&target)).await,
        Err(VfsError::NameTooLong)
    ));
}

// ---- files -----------------------------------------------------------------------------

#[tokio::test]
async fn create_write_read_and_sizes_are_never_cached() {
    let fx = Fx::new();
    let (a, fh) = fx
        .fs
        .create(&CTX, Ino::ROOT, nm("f"), 0o644, 0o022, OpenFlags::RDWR)
        .await
        .unwrap();
    assert_eq!(a.kind, FileType::Regular);
    assert_eq!(a.size, 0);
    assert_eq!(a.ino.0, host_ino(&fx.p("f")));
    assert_eq!(fx.fs.write(&CTX, a.ino, fh, 0, b"hello world").await.unwrap(), 11);
    assert_eq!(&fx.fs.read(&CTX, a.ino, fh, 6, 100).await.unwrap()[..], b"world");
    assert_eq!(fx.fs.getattr(&CTX, a.ino, Some(fh)).await.unwrap().size, 11);
    // A change made on the host is seen at once: nothing is cached.
    fs::write(fx.p("f"), b"longer contents from the host").unwrap();
    assert_eq!(fx.fs.getattr(&CTX, a.ino, None).await.unwrap().size, 29);
    assert_eq!(fx.fs.read(&CTX, a.ino, fh, 0, 1000).await.unwrap().len(), 29);
    assert_eq!(fx.fs.read(&CTX, a.ino, fh, 1000, 10).await.unwrap().len(), 0);
    fx.fs.fsync(&CTX, a.ino, fh, false).await.unwrap();
    fx.fs.fsync(&CTX, a.ino, fh, true).await.unwrap();
    fx.fs.flush(&CTX, a.ino, fh).await.unwrap();
    fx.fs.release(&CTX, a.ino, fh).await.unwrap();
}

#[tokio::test]
async fn create_exclusive_and_existing() {
    let fx = Fx::new();
    fx.create(Ino::ROOT, "f", b"old contents").await;
    let excl = OpenFlags::RDWR.with(libc::O_EXCL | libc::O_CREAT);
    assert!(matches!(
        fx.fs.create(&CTX, Ino::ROOT, nm("f"), 0o644, 0, excl).await,
        Err(VfsError::Exists)
    ));
    // Without O_EXCL the existing file is opened; O_TRUNC truncates it.
    let (a, fh) = fx
        .fs
        .create(&CTX, Ino::ROOT, nm("f"), 0o600, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    assert_eq!(a.size, 12);
    assert_eq!(a.perm, 0o644, "an existing file keeps its mode");
    fx.fs.release(&CTX, a.ino, fh).await.unwrap();
    let (a, fh) = fx
        .fs
        .create(
            &CTX,
            Ino::ROOT,
            nm("f"),
            0o600,
            0,
            OpenFlags::WRONLY.with(libc::O_TRUNC),
        )
        .await
        .unwrap();
    assert_eq!(a.size, 0);
    fx.fs.release(&CTX, a.ino, fh).await.unwrap();
    fs::create_dir(fx.p("d")).unwrap();
    assert!(matches!(
        fx.fs
            .create(&CTX, Ino::ROOT, nm("d"), 0o644, 0, OpenFlags::RDONLY)
            .await,
        Err(VfsError::IsDir)
    ));
}

#[tokio::test]
async fn umask_is_applied_whatever_the_process_umask() {
    let fx = Fx::new();
    let (a, fh) = fx
        .fs
        .create(&CTX, Ino::ROOT, nm("f"), 0o666, 0o022, OpenFlags::RDWR)
        .await
        .unwrap();
    fx.fs.release(&CTX, a.ino, fh).await.unwrap();
    assert_eq!(a.perm, 0o644);
    // umask 0: every bit asked for is set, even those the process umask (022) would clear.
    let (b, fh) = fx
        .fs
        .create(&CTX, Ino::ROOT, nm("g"), 0o777, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    fx.fs.release(&CTX, b.ino, fh).await.unwrap();
    assert_eq!(b.perm, 0o777);
    assert_eq!(fs::metadata(fx.p("g")).unwrap().permissions().mode() & 0o7777, 0o777);
    let d = fx.fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o777, 0o027).await.unwrap();
    assert_eq!(d.perm, 0o750);
    let d2 = fx.fs.mkdir(&CTX, Ino::ROOT, nm("d2"), 0o1777, 0).await.unwrap();
    assert_eq!(d2.perm, 0o1777);
    let n = fx
        .fs
        .mknod(&CTX, Ino::ROOT, nm("n"), libc::S_IFIFO | 0o666, 0o002, 0)
        .await
        .unwrap();
    assert_eq!(n.perm, 0o664);
}

#[tokio::test]
async fn handles_enforce_access_modes() {
    let fx = Fx::new();
    let a = fx.create(Ino::ROOT, "f", b"abc").await;
    let ro = fx.fs.open(&CTX, a.ino, OpenFlags::RDONLY).await.unwrap();
    assert!(matches!(
        fx.fs.write(&CTX, a.ino, ro, 0, b"x").await,
        Err(VfsError::BadHandle)
    ));
    let wo = fx.fs.open(&CTX, a.ino, OpenFlags::WRONLY).await.unwrap();
    assert!(matches!(
        fx.fs.read(&CTX, a.ino, wo, 0, 1).await,
        Err(VfsError::BadHandle)
    ));
    assert_eq!(fx.fs.write(&CTX, a.ino, wo, 0, b"X").await.unwrap(), 1);
    assert_eq!(&fx.fs.read(&CTX, a.ino, ro, 0, 10).await.unwrap()[..], b"Xbc");
    // Unknown handles, handles used with another inode, double release.
    assert!(matches!(
        fx.fs.read(&CTX, a.ino, Fh(987_654), 0, 1).await,
        Err(VfsError::BadHandle)
    ));
    assert!(matches!(
        fx.fs.read(&CTX, Ino(12345), ro, 0, 1).await,
        Err(VfsError::BadHandle)
    ));
    assert!(matches!(
        fx.fs.fsync(&CTX, a.ino, Fh(987_654), false).await,
        Err(VfsError::BadHandle)
    ));
    fx.fs.release(&CTX, a.ino, ro).await.unwrap();
    assert!(matches!(fx.fs.release(&CTX, a.ino, ro).await, Err(VfsError::BadHandle)));
    assert!(matches!(
        fx.fs.read(&CTX, a.ino, ro, 0, 1).await,
        Err(VfsError::BadHandle)
    ));
    fx.fs.release(&CTX, a.ino, wo).await.unwrap();
}

#[tokio::test]
async fn append_handles_append() {
    let fx = Fx::new();
    let a = fx.create(Ino::ROOT, "f", b"12345").await;
    let fh = fx
        .fs
        .open(&CTX, a.ino, OpenFlags::WRONLY.with(libc::O_APPEND))
        .await
        .unwrap();
    assert_eq!(fx.fs.write(&CTX, a.ino, fh, 0, b"ab").await.unwrap(), 2);
    fx.fs.release(&CTX, a.ino, fh).await.unwrap();
    assert_eq!(fs::read(fx.p("f")).unwrap(), b"12345ab");
}

#[tokio::test]
async fn unlink_while_open_keeps_data_until_release() {
    let fx = Fx::new();
    let a = fx.create(Ino::ROOT, "f", b"still here").await;
    let fh = fx.fs.open(&CTX, a.ino, OpenFlags::RDWR).await.unwrap();
    fx.fs.unlink(&CTX, Ino::ROOT, nm("f")).await.unwrap();
    assert!(!fx.p("f").exists());
    assert!(matches!(
        fx.fs.lookup(&CTX, Ino::ROOT, nm("f")).await,
        Err(VfsError::NotFound)
    ));
    assert_eq!(&fx.fs.read(&CTX, a.ino, fh, 0, 100).await.unwrap()[..], b"still here");
    // Without a handle argument the inode is still found, through the open handle.
    let attr = fx.fs.getattr(&CTX, a.ino, None).await.unwrap();
    assert_eq!(attr.nlink, 0);
    assert_eq!(attr.size, 10);
    fx.fs.write(&CTX, a.ino, fh, 10, b"!").await.unwrap();
    assert_eq!(fx.fs.getattr(&CTX, a.ino, Some(fh)).await.unwrap().size, 11);
    fx.fs.release(&CTX, a.ino, fh).await.unwrap();
    assert!(matches!(fx.fs.getattr(&CTX, a.ino, None).await, Err(VfsError::Stale)));
}

#[tokio::test]
async fn sparse_write_reads_zeros_in_the_hole() {
    let fx = Fx::new();
    let (a, fh) = fx
        .fs
        .create(&CTX, Ino::ROOT, nm("sparse"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    fx.fs.write(&CTX, a.ino, fh, 1 << 20, b"end").await.unwrap();
    let attr = fx.fs.getattr(&CTX, a.ino, Some(fh)).await.unwrap();
    assert_eq!(attr.size, (1 << 20) + 3);
    let hole = fx.fs.read(&CTX, a.ino, fh, 4096, 8192).await.unwrap();
    assert_eq!(hole.len(), 8192);
    assert!(hole.iter().all(|&b| b == 0));
    let all = fx.fs.read(&CTX, a.ino, fh, 0, (1 << 21) as u32).await.unwrap();
    assert_eq!(all.len(), (1 << 20) + 3);
    assert_eq!(&all[(1 << 20)..], b"end");
    fx.fs.release(&CTX, a.ino, fh).await.unwrap();
}

#[tokio::test]
async fn truncate_up_and_down() {
    let fx = Fx::new();
    let a = fx.create(Ino::ROOT, "f", b"0123456789").await;
    let down = fx.fs.setattr(&CTX, a.ino, SetAttr::size(4)).await.unwrap();
    assert_eq!(down.size, 4);
    assert_eq!(fx.read_all(a.ino).await.unwrap(), b"0123");
    let up = fx.fs.setattr(&CTX, a.ino, SetAttr::size(8)).await.unwrap();
    assert_eq!(up.size, 8);
    assert_eq!(fx.read_all(a.ino).await.unwrap(), b"0123\0\0\0\0");
    // Through a handle, read-only or writable.
    for flags in [OpenFlags::RDONLY, OpenFlags::RDWR] {
        let fh = fx.fs.open(&CTX, a.ino, flags).await.unwrap();
        let set = SetAttr {
            size: Some(2),
            fh: Some(fh),
            ..SetAttr::default()
        };
        assert_eq!(fx.fs.setattr(&CTX, a.ino, set).await.unwrap().size, 2);
        fx.fs.release(&CTX, a.ino, fh).await.unwrap();
    }
    assert!(matches!(
        fx.fs.setattr(&CTX, Ino::ROOT, SetAttr::size(0)).await,
        Err(VfsError::IsDir)
    ));
}

#[tokio::test]
async fn fallocate_extends() {
    let fx = Fx::new();
    let (a, fh) = fx
        .fs
        .create(&CTX, Ino::ROOT, nm("f"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    fx.fs.fallocate(&CTX, a.ino, fh, 0, 65536, 0).await.unwrap();
    let attr = fx.fs.getattr(&CTX, a.ino, None).await.unwrap();
    assert_eq!(attr.size, 65536);
    assert!(attr.blocks >= 128);
    assert!(matches!(
        fx.fs.fallocate(&CTX, a.ino, fh, 0, 1, -1).await,
        Err(VfsError::Invalid(_))
    ));
    // Through a read-only handle the host refuses.
    let ro = fx.fs.open(&CTX, a.ino, OpenFlags::RDONLY).await.unwrap();
    assert!(matches!(
        fx.fs.fallocate(&CTX, a.ino, ro, 0, 1 << 20, 0).await,
        Err(VfsError::BadHandle)
    ));
    fx.fs.release(&CTX, a.ino, ro).await.unwrap();
    fx.fs.release(&CTX, a.ino, fh).await.unwrap();
}

#[tokio::test]
async fn open_directories_and_special_files() {
    let fx = Fx::new();
    let d = fx.fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await.unwrap();
    let fh = fx.fs.open(&CTX, d.ino, OpenFlags::RDONLY).await.unwrap();
    assert!(matches!(fx.fs.read(&CTX, d.ino, fh, 0, 10).await, Err(VfsError::IsDir)));
    fx.fs.release(&CTX, d.ino, fh).await.unwrap();
    assert!(matches!(
        fx.fs.open(&CTX, d.ino, OpenFlags::WRONLY).await,
        Err(VfsError::IsDir)
    ));
    let fifo = fx
        .fs
        .mknod(&CTX, Ino::ROOT, nm("fifo"), libc::S_IFIFO | 0o644, 0, 0)
        .await
        .unwrap();
    assert!(matches!(
        fx.fs.open(&CTX, fifo.ino, OpenFlags::RDONLY).await,
        Err(VfsError::Unsupported)
    ));
    let sock = fx
        .fs
        .mknod(&CTX, Ino::ROOT, nm("sock"), libc::S_IFSOCK | 0o644, 0, 0)
        .await
        .unwrap();
    assert_eq!(
        errno(fx.fs.open(&CTX, sock.ino, OpenFlags::RDONLY).await),
        crate::Errno::ENXIO
    );
}

// ---- namespace ---------------------------------------------------------------------------

#[tokio::test]
async fn mkdir_rmdir_unlink_errors() {
    let fx = Fx::new();
    let d = fx.fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await.unwrap();
    assert_eq!(d.kind, FileType::Directory);
    assert!(fx.p("d").is_dir());
    assert!(matches!(
        fx.fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await,
        Err(VfsError::Exists)
    ));
    let f = fx.create(d.ino, "f", b"").await;
    assert!(matches!(
        fx.fs.rmdir(&CTX, Ino::ROOT, nm("d")).await,
        Err(VfsError::NotEmpty)
    ));
    assert!(matches!(fx.fs.rmdir(&CTX, d.ino, nm("f")).await, Err(VfsError::NotDir)));
    assert!(matches!(
        fx.fs.unlink(&CTX, Ino::ROOT, nm("d")).await,
        Err(VfsError::IsDir)
    ));
    assert!(matches!(
        fx.fs.unlink(&CTX, Ino::ROOT, nm("nope")).await,
        Err(VfsError::NotFound)
    ));
    assert!(matches!(
        fx.fs.rmdir(&CTX, Ino::ROOT, nm("nope")).await,
        Err(VfsError::NotFound)
    ));
    assert!(matches!(
        fx.fs.lookup(&CTX, f.ino, nm("x")).await,
        Err(VfsError::NotDir)
    ));
    fx.fs.unlink(&CTX, d.ino, nm("f")).await.unwrap();
    fx.fs.rmdir(&CTX, Ino::ROOT, nm("d")).await.unwrap();
    assert!(!fx.p("d").exists());
    // The removed directory's number no longer resolves.
    assert!(matches!(fx.fs.readdir(&CTX, d.ino, 0, 10).await, Err(VfsError::Stale)));
}

#[tokio::test]
async fn rename_plain_noreplace_exchange_and_errors() {
    let fx = Fx::new();
    let a = fx.create(Ino::ROOT, "a", b"AAA").await;
    let b = fx.create(Ino::ROOT, "b", b"BB").await;
    let d = fx.fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await.unwrap();
    let sub = fx.fs.mkdir(&CTX, d.ino, nm("sub"), 0o755, 0).await.unwrap();

    assert!(matches!(
        fx.fs
            .rename(&CTX, Ino::ROOT, nm("a"), Ino::ROOT, nm("b"), RenameFlags::NOREPLACE)
            .await,
        Err(VfsError::Exists)
    ));
    fx.fs
        .rename(&CTX, Ino::ROOT, nm("a"), Ino::ROOT, nm("b"), RenameFlags::EXCHANGE)
        .await
        .unwrap();
    assert_eq!(fs::read(fx.p("a")).unwrap(), b"BB");
    assert_eq!(fs::read(fx.p("b")).unwrap(), b"AAA");
    assert_eq!(fx.walk("b").await.unwrap().ino, a.ino);
    assert!(matches!(
        fx.fs
            .rename(&CTX, Ino::ROOT, nm("a"), Ino::ROOT, nm("zz"), RenameFlags::EXCHANGE)
            .await,
        Err(VfsError::NotFound)
    ));
    // A directory into its own subdirectory.
    assert!(matches!(
        fx.fs
            .rename(&CTX, Ino::ROOT, nm("d"), sub.ino, nm("d"), RenameFlags::NONE)
            .await,
        Err(VfsError::Invalid(_))
    ));
    // Directory over file and file over non-empty directory.
    assert!(matches!(
        fx.fs
            .rename(&CTX, Ino::ROOT, nm("d"), Ino::ROOT, nm("a"), RenameFlags::NONE)
            .await,
        Err(VfsError::NotDir)
    ));
    assert!(matches!(
        fx.fs
            .rename(&CTX, Ino::ROOT, nm("a"), Ino::ROOT, nm("d"), RenameFlags::NONE)
            .await,
        Err(VfsError::IsDir)
    ));
    assert!(matches!(
        fx.fs
            .rename(&CTX, Ino::ROOT, nm("a"), Ino::ROOT, nm("c"), RenameFlags(0x80))
            .await,
        Err(VfsError::Invalid(_))
    ));
    // Plain rename across directories replaces; the moved inode keeps its number.
    fx.fs
        .rename(&CTX, Ino::ROOT, nm("b"), sub.ino, nm("moved"), RenameFlags::NONE)
        .await
        .unwrap();
    assert_eq!(fx.walk("d/sub/moved").await.unwrap().ino, a.ino);
    assert_eq!(fx.fs.getattr(&CTX, a.ino, None).await.unwrap().size, 3);
    fx.fs
        .rename(&CTX, Ino::ROOT, nm("a"), sub.ino, nm("moved"), RenameFlags::NONE)
        .await
        .unwrap();
    assert_eq!(fx.walk("d/sub/moved").await.unwrap().ino, b.ino);
    assert!(matches!(fx.fs.getattr(&CTX, a.ino, None).await, Err(VfsError::Stale)));
}

#[tokio::test]
async fn link_counts() {
    let fx = Fx::new();
    let a = fx.create(Ino::ROOT, "a", b"x").await;
    assert_eq!(a.nlink, 1);
    let d = fx.fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await.unwrap();
    assert_eq!(d.nlink, 2);
    let l = fx.fs.link(&CTX, a.ino, d.ino, nm("b")).await.unwrap();
    assert_eq!(l.ino, a.ino);
    assert_eq!(l.nlink, 2);
    assert_eq!(host_ino(&fx.p("d/b")), a.ino.0);
    assert!(matches!(
        fx.fs.link(&CTX, a.ino, d.ino, nm("b")).await,
        Err(VfsError::Exists)
    ));
    assert!(matches!(
        fx.fs.link(&CTX, d.ino, Ino::ROOT, nm("dl")).await,
        Err(VfsError::NotPermitted)
    ));
    fx.fs.mkdir(&CTX, d.ino, nm("sub"), 0o755, 0).await.unwrap();
    assert_eq!(fx.fs.getattr(&CTX, d.ino, None).await.unwrap().nlink, 3);
    fx.fs.unlink(&CTX, Ino::ROOT, nm("a")).await.unwrap();
    assert_eq!(fx.fs.getattr(&CTX, a.ino, None).await.unwrap().nlink, 1);
    // Linking a symlink links the symlink itself.
    let s = fx
        .fs
        .symlink(&CTX, Ino::ROOT, nm("s"), OsStr::new("d/b"))
        .await
        .unwrap();
    let s2 = fx.fs.link(&CTX, s.ino, Ino::ROOT, nm("s2")).await.unwrap();
    assert_eq!(s2.kind, FileType::Symlink);
    assert_eq!(s2.nlink, 2);
}

#[tokio::test]
async fn symlink_and_readlink() {
    let fx = Fx::new();
    let s = fx
        .fs
        .symlink(&CTX, Ino::ROOT, nm("s"), OsStr::new("some/where"))
        .await
        .unwrap();
    assert_eq!(s.kind, FileType::Symlink);
    assert_eq!(s.size, 10);
    assert_eq!(fx.fs.readlink(&CTX, s.ino).await.unwrap(), "some/where");
    assert_eq!(fs::read_link(fx.p("s")).unwrap(), Path::new("some/where"));
    assert_eq!(fx.walk("s").await.unwrap().kind, FileType::Symlink);
    assert!(matches!(
        fx.fs.symlink(&CTX, Ino::ROOT, nm("s"), OsStr::new("x")).await,
        Err(VfsError::Exists)
    ));
    assert!(matches!(
        fx.fs.symlink(&CTX, Ino::ROOT, nm("e"), OsStr::new("")).await,
        Err(VfsError::NotFound)
    ));
    let f = fx.create(Ino::ROOT, "f", b"").await;
    assert!(matches!(fx.fs.readlink(&CTX, f.ino).await, Err(VfsError::Invalid(_))));
    assert!(matches!(
        fx.fs.open(&CTX, s.ino, OpenFlags::RDONLY).await,
        Err(VfsError::Loop)
    ));
}

#[tokio::test]
async fn mknod_every_type() {
    let fx = Fx::new();
    let r = fx.fs.mknod(&CTX, Ino::ROOT, nm("reg"), 0o640, 0, 0).await.unwrap();
    assert_eq!(r.kind, FileType::Regular);
    assert_eq!(r.perm, 0o640);
    let r2 = fx
        .fs
        .mknod(&CTX, Ino::ROOT, nm("reg2"), libc::S_IFREG | 0o600, 0, 0)
        .await
        .unwrap();
    assert_eq!(r2.kind, FileType::Regular);
    let fifo = fx
        .fs
        .mknod(&CTX, Ino::ROOT, nm("fifo"), libc::S_IFIFO | 0o600, 0, 0)
        .await
        .unwrap();
    assert_eq!(fifo.kind, FileType::Fifo);
    let sock = fx
        .fs
        .mknod(&CTX, Ino::ROOT, nm("sock"), libc::S_IFSOCK | 0o600, 0, 0)
        .await
        .unwrap();
    assert_eq!(sock.kind, FileType::Socket);
    if fx.fs.inner.creds.is_root {
        let dev = rustix::fs::makedev(1, 3);
        let c = fx
            .fs
            .mknod(&CTX, Ino::ROOT, nm("null"), libc::S_IFCHR | 0o600, 0, dev)
            .await
            .unwrap();
        assert_eq!(c.kind, FileType::CharDevice);
        assert_eq!(c.rdev, dev);
        let b = fx
            .fs
            .mknod(
                &CTX,
                Ino::ROOT,
                nm("blk"),
                libc::S_IFBLK | 0o600,
                0,
                rustix::fs::makedev(7, 0),
            )
            .await
            .unwrap();
        assert_eq!(b.kind, FileType::BlockDevice);
        // Device nodes are never opened: that would reach the host's devices.
        assert!(matches!(
            fx.fs.open(&CTX, c.ino, OpenFlags::RDWR).await,
            Err(VfsError::Unsupported)
        ));
        assert!(matches!(
            fx.fs.open(&CTX, b.ino, OpenFlags::RDONLY).await,
            Err(VfsError::Unsupported)
        ));
    }
    assert!(matches!(
        fx.fs
            .mknod(&CTX, Ino::ROOT, nm("fifo"), libc::S_IFIFO | 0o600, 0, 0)
            .await,
        Err(VfsError::Exists)
    ));
    assert!(matches!(
        fx.fs
            .mknod(&CTX, Ino::ROOT, nm("dir"), libc::S_IFDIR | 0o755, 0, 0)
            .await,
        Err(VfsError::NotPermitted)
    ));
    assert!(matches!(
        fx.fs.mknod(&CTX, Ino::ROOT, nm("bad"), 0o170000 | 0o755, 0, 0).await,
        Err(VfsError::Invalid(_))
    ));
}

// ---- attributes ----------------------------------------------------------------------------

#[tokio::test]
async fn setattr_mode_owner_times() {
    let fx = Fx::new();
    let a = fx.create(Ino::ROOT, "f", b"x").await;
    let m = fx.fs.setattr(&CTX, a.ino, SetAttr::mode(0o4751)).await.unwrap();
    assert_eq!(m.perm, 0o4751);
    assert_eq!(fs::metadata(fx.p("f")).unwrap().permissions().mode() & 0o7777, 0o4751);
    if fx.fs.inner.creds.is_root {
        let set = SetAttr {
            uid: Some(1234),
            gid: Some(4321),
            ..SetAttr::default()
        };
        let o = fx.fs.setattr(&CTX, a.ino, set).await.unwrap();
        assert_eq!((o.uid, o.gid), (1234, 4321));
        let md = fs::metadata(fx.p("f")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 4321));
        // -1 leaves an id unchanged.
        let set = SetAttr {
            uid: Some(u32::MAX),
            gid: Some(99),
            ..SetAttr::default()
        };
        let o = fx.fs.setattr(&CTX, a.ino, set).await.unwrap();
        assert_eq!((o.uid, o.gid), (1234, 99));
    }
    let t = Timestamp::new(1_000_000_000, 123_456_789);
    let set = SetAttr {
        atime: Some(SetTime::At(Timestamp::new(-5, 0))),
        mtime: Some(SetTime::At(t)),
        ..SetAttr::default()
    };
    let tm = fx.fs.setattr(&CTX, a.ino, set).await.unwrap();
    assert_eq!(tm.mtime, t);
    assert_eq!(tm.atime, Timestamp::new(-5, 0));
    assert_eq!(fs::metadata(fx.p("f")).unwrap().mtime(), 1_000_000_000);
    // Only the mtime: the atime stays.
    let set = SetAttr {
        mtime: Some(SetTime::Now),
        ..SetAttr::default()
    };
    let now = fx.fs.setattr(&CTX, a.ino, set).await.unwrap();
    assert!(now.mtime.secs > t.secs);
    assert_eq!(now.atime, Timestamp::new(-5, 0));
    // Symlinks: no mode; times and owner apply to the link itself.
    let s = fx.fs.symlink(&CTX, Ino::ROOT, nm("s"), OsStr::new("f")).await.unwrap();
    assert!(matches!(
        fx.fs.setattr(&CTX, s.ino, SetAttr::mode(0o777)).await,
        Err(VfsError::Unsupported)
    ));
    let set = SetAttr {
        mtime: Some(SetTime::At(Timestamp::new(42, 0))),
        ..SetAttr::default()
    };
    assert_eq!(
        fx.fs.setattr(&CTX, s.ino, set).await.unwrap().mtime,
        Timestamp::new(42, 0)
    );
    assert_eq!(fs::metadata(fx.p("f")).unwrap().mtime(), now.mtime.secs);
    assert!(matches!(
        fx.fs.setattr(&CTX, s.ino, SetAttr::size(0)).await,
        Err(VfsError::Invalid(_))
    ));
}

#[tokio::test]
async fn new_objects_belong_to_the_caller() {
    let fx = Fx::new();
    if !fx.fs.inner.creds.is_root {
        return;
    }
    let user = RequestCtx::new(1234, 5678, 42);
    let (f, fh) = fx
        .fs
        .create(&user, Ino::ROOT, nm("f"), 0o644, 0o022, OpenFlags::RDWR)
        .await
        .unwrap();
    fx.fs.release(&user, f.ino, fh).await.unwrap();
    assert_eq!((f.uid, f.gid), (1234, 5678));
    let md = fs::metadata(fx.p("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let d = fx.fs.mkdir(&user, Ino::ROOT, nm("d"), 0o755, 0).await.unwrap();
    assert_eq!((d.uid, d.gid), (1234, 5678));
    let s = fx.fs.symlink(&user, Ino::ROOT, nm("s"), OsStr::new("f")).await.unwrap();
    assert_eq!((s.uid, s.gid), (1234, 5678));
    let n = fx
        .fs
        .mknod(&user, Ino::ROOT, nm("n"), libc::S_IFIFO | 0o600, 0, 0)
        .await
        .unwrap();
    assert_eq!((n.uid, n.gid), (1234, 5678));
    // A setuid request survives the chown (which would clear it).
    let (g, fh) = fx
        .fs
        .create(&user, Ino::ROOT, nm("g"), 0o4755, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    fx.fs.release(&user, g.ino, fh).await.unwrap();
    assert_eq!(g.perm, 0o4755);

    // In a setgid directory the group comes from the directory, and subdirectories
    // inherit the setgid bit, as Linux does.
    fs::create_dir(fx.p("sg")).unwrap();
    std::os::unix::fs::chown(fx.p("sg"), Some(0), Some(777)).unwrap();
    fs::set_permissions(fx.p("sg"), fs::Permissions::from_mode(0o2777)).unwrap();
    let sg = fx.walk("sg").await.unwrap();
    let (h, fh) = fx
        .fs
        .create(&user, sg.ino, nm("h"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    fx.fs.release(&user, h.ino, fh).await.unwrap();
    assert_eq!((h.uid, h.gid), (1234, 777));
    let sd = fx.fs.mkdir(&user, sg.ino, nm("sd"), 0o755, 0).await.unwrap();
    assert_eq!((sd.uid, sd.gid), (1234, 777));
    assert_eq!(sd.perm, 0o2755);
    // Root callers get root-owned files.
    let r = fx.create(Ino::ROOT, "r", b"").await;
    assert_eq!((r.uid, r.gid), (0, 0));
}

#[tokio::test]
async fn access_by_mode_bits() {
    let fx = Fx::new();
    let a = fx.create(Ino::ROOT, "f", b"").await;
    fx.fs.setattr(&CTX, a.ino, SetAttr::mode(0o640)).await.unwrap();
    let other = RequestCtx::new(4242, 4242, 0);
    fx.fs.access(&CTX, a.ino, crate::access_mask::READ).await.unwrap();
    assert!(matches!(
        fx.fs.access(&other, a.ino, crate::access_mask::READ).await,
        Err(VfsError::Access)
    ));
    fx.fs.access(&other, a.ino, crate::access_mask::EXISTS).await.unwrap();
}

#[tokio::test]
async fn statfs_reports_the_host() {
    let fx = Fx::new();
    let s = fx.fs.statfs(&CTX, Ino::ROOT).await.unwrap();
    assert!(s.blocks > 0);
    assert!(s.bsize > 0);
    assert_eq!(s.namelen, 255);
}

// ---- xattrs --------------------------------------------------------------------------------

#[tokio::test]
async fn xattr_round_trip() {
    let fx = Fx::new();
    let a = fx.create(Ino::ROOT, "f", b"").await;
    let n = OsStr::new("user.test");
    assert!(matches!(fx.fs.getxattr(&CTX, a.ino, n).await, Err(VfsError::NoAttr)));
    fx.fs.setxattr(&CTX, a.ino, n, b"value", XattrSet::Any).await.unwrap();
    assert_eq!(&fx.fs.getxattr(&CTX, a.ino, n).await.unwrap()[..], b"value");
    assert!(matches!(
        fx.fs.setxattr(&CTX, a.ino, n, b"v2", XattrSet::Create).await,
        Err(VfsError::Exists)
    ));
    fx.fs.setxattr(&CTX, a.ino, n, b"v2", XattrSet::Replace).await.unwrap();
    assert!(matches!(
        fx.fs
            .setxattr(&CTX, a.ino, OsStr::new("user.other"), b"", XattrSet::Replace)
            .await,
        Err(VfsError::NoAttr)
    ));
    // A value bigger than the first small buffer.
    let big = vec![7u8; 3000];
    fx.fs
        .setxattr(&CTX, a.ino, OsStr::new("user.big"), &big, XattrSet::Create)
        .await
        .unwrap();
    assert_eq!(
        fx.fs.getxattr(&CTX, a.ino, OsStr::new("user.big")).await.unwrap().len(),
        3000
    );
    let mut names = fx.fs.listxattr(&CTX, a.ino).await.unwrap();
    names.sort();
    assert_eq!(names, vec![OsString::from("user.big"), OsString::from("user.test")]);
    fx.fs.removexattr(&CTX, a.ino, n).await.unwrap();
    assert!(matches!(fx.fs.removexattr(&CTX, a.ino, n).await, Err(VfsError::NoAttr)));
    assert!(matches!(
        fx.fs.getxattr(&CTX, a.ino, OsStr::new("nonamespace")).await,
        Err(VfsError::Unsupported)
    ));
    // The host sees the same attribute (it is on the real inode).
    let got = rustix::fs::getxattr(fx.p("f").as_path(), "user.big", &mut vec![0u8; 4096][..]).unwrap();
    assert_eq!(got, 3000);
    // Directories carry xattrs too.
    fx.fs
        .setxattr(&CTX, Ino::ROOT, OsStr::new("user.dir"), b"d", XattrSet::Any)
        .await
        .unwrap();
    assert_eq!(
        &fx.fs.getxattr(&CTX, Ino::ROOT, OsStr::new("user.dir")).await.unwrap()[..],
        b"d"
    );
}

// ---- readdir ---------------------------------------------------------------------------------

async fn list_all_paged(fs: &LocalFs, ino: Ino, max: usize) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut cookie = 0;
    for pages in 0.. {
        assert!(pages < 100_000, "readdir did not end");
        let page = fs.readdir(&CTX, ino, cookie, max).await.unwrap();
        if page.is_empty() {
            return out;
        }
        assert!(page.len() <= max);
        for e in &page {
            assert_ne!(e.cookie, 0);
        }
        cookie = page.last().unwrap().cookie;
        out.extend(page);
    }
    unreachable!("the loop returns or fails")
}

#[tokio::test]
async fn readdir_pages_resume_after_each_entry() {
    let fx = Fx::new();
    for i in 0..50 {
        fs::write(fx.p(&format!("f{i:02}")), b"").unwrap();
    }
    fs::create_dir(fx.p("sub")).unwrap();
    let all = fx.fs.readdir(&CTX, Ino::ROOT, 0, usize::MAX).await.unwrap();
    assert_eq!(all.len(), 53);
    for max in [1, 2, 3, 7, 100] {
        let paged = list_all_paged(&fx.fs, Ino::ROOT, max).await;
        let names: Vec<_> = paged.iter().map(|e| e.name.clone()).collect();
        assert_eq!(
            names,
            all.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
            "max {max}"
        );
    }
    // Resuming from any entry's cookie yields exactly what follows it.
    for (i, e) in all.iter().enumerate() {
        let rest = fx.fs.readdir(&CTX, Ino::ROOT, e.cookie, usize::MAX).await.unwrap();
        assert_eq!(rest, all[i + 1..].to_vec());
    }
    let sub = all.iter().find(|e| e.name == "sub").unwrap();
    assert_eq!(sub.kind, FileType::Directory);
    assert_eq!(sub.ino.0, host_ino(&fx.p("sub")));
    assert!(fx.fs.readdir(&CTX, Ino::ROOT, 0, 0).await.unwrap().is_empty());
    // A cookie the host never gave is an error or the end, never a panic.
    for bogus in [u64::MAX, 1 << 63, 12345] {
        if let Ok(page) = fx.fs.readdir(&CTX, Ino::ROOT, bogus, 10).await {
            assert!(page.len() <= 10);
        }
    }
}

#[tokio::test]
async fn readdir_paging_under_concurrent_changes() {
    let fx = Fx::new();
    let stable: HashSet<OsString> = (0..40).map(|i| OsString::from(format!("stable{i:02}"))).collect();
    for s in &stable {
        fs::write(fx.root.join(s), b"").unwrap();
    }
    for i in 0..40 {
        fs::write(fx.p(&format!("vol{i:02}")), b"").unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = std::sync::Arc::clone(&stop);
        let root = fx.root.clone();
        std::thread::spawn(move || {
            // The churn names come from a fixed set (at most 40 + 64 of them exist at
            // once): a directory that grows without bound may legitimately never finish
            // listing one entry per page, which is what a CI run saw when this loop
            // created a new name every time ("readdir did not end").
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = fs::remove_file(root.join(format!("vol{:02}", i % 40)));
                let _ = fs::write(root.join(format!("new{:02}", i % 64)), b"");
                if i.is_multiple_of(3) {
                    let _ = fs::remove_file(root.join(format!("new{:02}", (i / 2) % 64)));
                }
                i += 1;
            }
        })
    };
    for round in 0..20 {
        let max = 1 + round % 4;
        let listed = list_all_paged(&fx.fs, Ino::ROOT, max).await;
        let mut seen: HashMap<OsString, usize> = HashMap::new();
        for e in &listed {
            *seen.entry(e.name.clone()).or_default() += 1;
        }
        for (name, count) in &seen {
            assert_eq!(*count, 1, "{name:?} listed {count} times (max {max})");
        }
        for s in &stable {
            assert!(seen.contains_key(s), "untouched {s:?} missing (max {max})");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
}

#[tokio::test]
async fn readdir_paging_with_our_own_changes_between_pages() {
    let fx = Fx::new();
    for i in 0..30 {
        fx.create(Ino::ROOT, &format!("keep{i:02}"), b"").await;
        fx.create(Ino::ROOT, &format!("drop{i:02}"), b"").await;
    }
    let mut cookie = 0;
    let mut seen: HashMap<OsString, usize> = HashMap::new();
    let mut round = 0;
    loop {
        assert!(round < 1000, "readdir did not end");
        let page = fx.fs.readdir(&CTX, Ino::ROOT, cookie, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        cookie = page.last().unwrap().cookie;
        for e in page {
            *seen.entry(e.name).or_default() += 1;
        }
        // Between pages: remove some, add some.
        let _ = fx.fs.unlink(&CTX, Ino::ROOT, nm(&format!("drop{round:02}"))).await;
        fx.create(Ino::ROOT, &format!("added{round:02}"), b"").await;
        round += 1;
    }
    assert!(seen.values().all(|&c| c == 1), "duplicates: {seen:?}");
    for i in 0..30 {
        assert_eq!(seen.get(&OsString::from(format!("keep{i:02}"))), Some(&1));
    }
}

#[tokio::test]
async fn readdirplus_matches_lookup_and_is_resolvable() {
    let fx = Fx::new();
    fs::create_dir(fx.p("d")).unwrap();
    fs::write(fx.p("d/f"), b"12345").unwrap();
    std::os::unix::fs::symlink("f", fx.p("d/s")).unwrap();
    let d = fx.walk("d").await.unwrap();
    let fs2 = LocalFs::new(&fx.root).unwrap();
    let list = fs2.readdirplus(&CTX, d.ino, 0, 100).await.unwrap();
    assert_eq!(list.len(), 4);
    for e in &list {
        assert_eq!(e.entry.ino, e.attr.ino);
        assert_eq!(e.entry.kind, e.attr.kind);
    }
    let f = list.iter().find(|e| e.entry.name == "f").unwrap();
    assert_eq!(f.attr.size, 5);
    assert_eq!(f.attr, fx.fs.lookup(&CTX, d.ino, nm("f")).await.unwrap());
    assert_eq!(list.iter().find(|e| e.entry.name == "..").unwrap().attr.ino, Ino::ROOT);
    assert_eq!(list.iter().find(|e| e.entry.name == ".").unwrap().attr.ino, d.ino);
    // Entries seen by readdirplus are remembered: using them needs no walk, and the
    // remembered path is right.
    let known = fs2.inner.resolve_known(&mut entry(), f.attr.ino);
    assert!(known.is_some());
    assert_eq!(fs2.getattr(&CTX, f.attr.ino, None).await.unwrap().size, 5);
    let root = fs2.readdirplus(&CTX, Ino::ROOT, 0, 100).await.unwrap();
    let dotdot = root.iter().find(|e| e.entry.name == "..").unwrap();
    assert_eq!(dotdot.attr.ino, Ino::ROOT);
}

#[tokio::test]
async fn mount_points_are_another_device() {
    let fx = Fx::new();
    fs::create_dir(fx.p("mnt")).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "localfs-test", fx.p("mnt").to_str().unwrap()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("cannot mount tmpfs here: skipping the cross-device test");
        return;
    }
    fs::write(fx.p("mnt/inner"), b"other fs").unwrap();
    let lookup = fx.fs.lookup(&CTX, Ino::ROOT, nm("mnt")).await;
    let names = fx.names(Ino::ROOT).await;
    let plus = fx.fs.readdirplus(&CTX, Ino::ROOT, 0, 100).await.unwrap();
    let _ = std::process::Command::new("umount").arg(fx.p("mnt")).status();
    assert!(matches!(lookup, Err(VfsError::CrossDevice)));
    assert!(names.contains(&OsString::from("mnt")), "listed by readdir");
    assert!(!plus.iter().any(|e| e.entry.name == "mnt"));
}

#[tokio::test]
async fn works_without_a_runtime_for_blocking_work() {
    // The walk and fsync go to the blocking pool inside a runtime; outside one they run
    // inline. Drive a future by hand on a plain thread to check the inline path.
    let fx = Fx::new();
    fs::create_dir_all(fx.p("a/b")).unwrap();
    fs::write(fx.p("a/b/f"), b"x").unwrap();
    let ino = Ino(host_ino(&fx.p("a/b/f")));
    let root = fx.root.clone();
    let attr = std::thread::spawn(move || {
        let fs2 = LocalFs::new(&root).unwrap();
        let fut = fs2.getattr(&CTX, ino, None);
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r.unwrap(),
            std::task::Poll::Pending => panic!("LocalFs futures without a runtime complete at once"),
        }
    })
    .join()
    .unwrap();
    assert_eq!(attr.ino, ino);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_and_forgets_balance() {
    let fx = std::sync::Arc::new(Fx::new());
    fs::create_dir(fx.p("d")).unwrap();
    let held0 = fx.fs.inner.budget.held();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let fx = std::sync::Arc::clone(&fx);
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                let d = fx.fs.lookup(&CTX, Ino::ROOT, nm("d")).await.unwrap();
                let name = format!("f{t}-{i}");
                let (a, fh) = fx
                    .fs
                    .create(&CTX, d.ino, nm(&name), 0o644, 0, OpenFlags::RDWR)
                    .await
                    .unwrap();
                fx.fs.write(&CTX, a.ino, fh, 0, name.as_bytes()).await.unwrap();
                assert_eq!(fx.fs.getattr(&CTX, a.ino, None).await.unwrap().size, name.len() as u64);
                fx.fs.release(&CTX, a.ino, fh).await.unwrap();
                fx.fs.unlink(&CTX, d.ino, nm(&name)).await.unwrap();
                fx.fs.forget(a.ino, 1).await;
                fx.fs.forget(d.ino, 1).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(fx.node_count(), 0);
    assert_eq!(fx.fs.inner.budget.held(), held0);
    assert!(fx.fs.inner.handles.is_empty(&mut entry()));
}

// ---- passthrough -----------------------------------------------------------------------

#[tokio::test]
async fn passthrough_fd_is_the_handles_file() {
    let fx = Fx::new();
    let (a, fh) = fx
        .fs
        .create(&CTX, Ino::ROOT, nm("pt"), 0o644, 0o022, OpenFlags::RDWR)
        .await
        .unwrap();
    let fd = fx
        .fs
        .passthrough_fd(a.ino, fh)
        .expect("a regular file's handle has a descriptor");
    // Writing through the duplicate is writing to the file the handle reads.
    rustix::io::pwrite(&fd, b"through the kernel", 0).unwrap();
    assert_eq!(
        &fx.fs.read(&CTX, a.ino, fh, 0, 100).await.unwrap()[..],
        b"through the kernel"
    );
    // Unknown handles and another inode's handle have none.
    assert!(fx.fs.passthrough_fd(a.ino, Fh(fh.0 + 1000)).is_none());
    assert!(fx.fs.passthrough_fd(Ino::ROOT, fh).is_none());
    fx.fs.release(&CTX, a.ino, fh).await.unwrap();
    assert!(fx.fs.passthrough_fd(a.ino, fh).is_none());
}
