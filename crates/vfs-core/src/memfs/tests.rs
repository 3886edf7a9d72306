//! Unit tests of every MemFs operation, its error answers, and the seed 000 bug 1 (doc/LESSONS.md#seed-000-bug-1)
//! regressions.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::Arc;

use super::*;
use crate::types::SetTime;

const CTX: RequestCtx = RequestCtx::ROOT;

fn n(s: &str) -> Name<'_> {
    Name::new(OsStr::new(s)).unwrap()
}

async fn mkfile(fs: &MemFs, parent: Ino, name: &str, data: &[u8]) -> Ino {
    let (attr, fh) = fs
        .create(&CTX, parent, n(name), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    if !data.is_empty() {
        fs.write(&CTX, attr.ino, fh, 0, data).await.unwrap();
    }
    fs.release(&CTX, attr.ino, fh).await.unwrap();
    attr.ino
}

async fn read_all(fs: &MemFs, ino: Ino) -> Vec<u8> {
    let fh = fs.open(&CTX, ino, OpenFlags::RDONLY).await.unwrap();
    let data = fs.read(&CTX, ino, fh, 0, 1 << 24).await.unwrap();
    fs.release(&CTX, ino, fh).await.unwrap();
    data.to_vec()
}

async fn names(fs: &MemFs, dir: Ino) -> Vec<String> {
    let mut out: Vec<String> = fs
        .readdir(&CTX, dir, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .filter(|s| s != "." && s != "..")
        .collect();
    out.sort();
    out
}

async fn tick() {
    // Timestamps have nanosecond resolution; make "later" observable.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
}

#[tokio::test]
async fn root_is_a_directory_numbered_one() {
    let fs = MemFs::new();
    let a = fs.getattr(&CTX, Ino::ROOT, None).await.unwrap();
    assert_eq!(a.ino, Ino::ROOT);
    assert_eq!(a.kind, FileType::Directory);
    assert_eq!(a.nlink, 2);
    assert_eq!(a.perm, 0o755);
    let entries = fs.readdir(&CTX, Ino::ROOT, 0, 10).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].ino, Ino::ROOT, "the root's .. is itself");
}

#[tokio::test]
async fn create_lookup_getattr() {
    let fs = MemFs::new();
    let ctx = RequestCtx::new(1000, 100, 7);
    let (attr, fh) = fs
        .create(&ctx, Ino::ROOT, n("f"), 0o666, 0o022, OpenFlags::WRONLY)
        .await
        .unwrap();
    assert_eq!(attr.perm, 0o644);
    assert_eq!((attr.uid, attr.gid), (1000, 100));
    assert_eq!(attr.kind, FileType::Regular);
    fs.release(&ctx, attr.ino, fh).await.unwrap();
    assert_eq!(fs.lookup(&ctx, Ino::ROOT, n("f")).await.unwrap(), attr);
    assert!(matches!(
        fs.lookup(&ctx, Ino::ROOT, n("g")).await,
        Err(VfsError::NotFound)
    ));
    assert!(matches!(fs.lookup(&ctx, attr.ino, n("x")).await, Err(VfsError::NotDir)));
    assert!(matches!(fs.getattr(&ctx, Ino(999), None).await, Err(VfsError::Stale)));
}

#[tokio::test]
async fn create_exclusive_and_not() {
    let fs = MemFs::new();
    let ino = mkfile(&fs, Ino::ROOT, "f", b"data").await;
    let r = fs
        .create(&CTX, Ino::ROOT, n("f"), 0o644, 0, OpenFlags::RDWR.with(libc::O_EXCL))
        .await;
    assert!(matches!(r, Err(VfsError::Exists)));
    let (attr, fh) = fs
        .create(&CTX, Ino::ROOT, n("f"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    assert_eq!(attr.ino, ino);
    assert_eq!(attr.size, 4);
    fs.release(&CTX, ino, fh).await.unwrap();
    let (attr, fh) = fs
        .create(&CTX, Ino::ROOT, n("f"), 0o644, 0, OpenFlags::RDWR.with(libc::O_TRUNC))
        .await
        .unwrap();
    assert_eq!(attr.size, 0);
    fs.release(&CTX, ino, fh).await.unwrap();
    fs.mkdir(&CTX, Ino::ROOT, n("d"), 0o755, 0).await.unwrap();
    assert!(matches!(
        fs.create(&CTX, Ino::ROOT, n("d"), 0o644, 0, OpenFlags::RDWR).await,
        Err(VfsError::IsDir)
    ));
}

#[tokio::test]
async fn mkdir_rmdir_and_link_counts() {
    let fs = MemFs::new();
    let d = fs.mkdir(&CTX, Ino::ROOT, n("d"), 0o777, 0o022).await.unwrap();
    assert_eq!(d.perm, 0o755);
    assert_eq!(d.nlink, 2);
    assert_eq!(fs.getattr(&CTX, Ino::ROOT, None).await.unwrap().nlink, 3);
    fs.mkdir(&CTX, d.ino, n("sub"), 0o755, 0).await.unwrap();
    assert_eq!(fs.getattr(&CTX, d.ino, None).await.unwrap().nlink, 3);
    assert!(matches!(
        fs.mkdir(&CTX, Ino::ROOT, n("d"), 0o755, 0).await,
        Err(VfsError::Exists)
    ));
    assert!(matches!(
        fs.rmdir(&CTX, Ino::ROOT, n("d")).await,
        Err(VfsError::NotEmpty)
    ));
    let entries = fs.readdir(&CTX, d.ino, 0, 10).await.unwrap();
    assert_eq!(entries[1].name, "..");
    assert_eq!(entries[1].ino, Ino::ROOT);
    fs.rmdir(&CTX, d.ino, n("sub")).await.unwrap();
    fs.rmdir(&CTX, Ino::ROOT, n("d")).await.unwrap();
    assert_eq!(fs.getattr(&CTX, Ino::ROOT, None).await.unwrap().nlink, 2);
    assert!(matches!(
        fs.rmdir(&CTX, Ino::ROOT, n("d")).await,
        Err(VfsError::NotFound)
    ));
    mkfile(&fs, Ino::ROOT, "f", b"").await;
    assert!(matches!(fs.rmdir(&CTX, Ino::ROOT, n("f")).await, Err(VfsError::NotDir)));
    fs.mkdir(&CTX, Ino::ROOT, n("e"), 0o755, 0).await.unwrap();
    assert!(matches!(fs.unlink(&CTX, Ino::ROOT, n("e")).await, Err(VfsError::IsDir)));
    assert_eq!(fs.inode_count(), 3);
}

#[tokio::test]
async fn removed_directory_takes_no_new_entries() {
    let fs = MemFs::new();
    let d = fs.mkdir(&CTX, Ino::ROOT, n("d"), 0o755, 0).await.unwrap();
    fs.rmdir(&CTX, Ino::ROOT, n("d")).await.unwrap();
    assert!(fs.create(&CTX, d.ino, n("x"), 0o644, 0, OpenFlags::RDWR).await.is_err());
    assert_eq!(fs.inode_count(), 1);
}

#[tokio::test]
async fn read_write_sparse_and_eof() {
    let fs = MemFs::new();
    let (attr, fh) = fs
        .create(&CTX, Ino::ROOT, n("f"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    let ino = attr.ino;
    assert_eq!(fs.write(&CTX, ino, fh, 1 << 20, b"tail").await.unwrap(), 4);
    assert_eq!(fs.getattr(&CTX, ino, None).await.unwrap().size, (1 << 20) + 4);
    let hole = fs.read(&CTX, ino, fh, 1000, 100).await.unwrap();
    assert_eq!(hole.len(), 100);
    assert!(hole.iter().all(|&b| b == 0));
    assert_eq!(
        &fs.read(&CTX, ino, fh, (1 << 20) - 2, 10).await.unwrap()[..],
        b"\0\0tail"
    );
    assert!(fs.read(&CTX, ino, fh, (1 << 20) + 4, 10).await.unwrap().is_empty());
    assert!(fs.read(&CTX, ino, fh, u64::MAX, 10).await.unwrap().is_empty());
    let blocks = fs.getattr(&CTX, ino, None).await.unwrap().blocks;
    assert!(blocks < 16, "a hole is not allocated: {blocks} blocks");
    assert!(matches!(
        fs.write(&CTX, ino, fh, u64::MAX - 1, b"xx").await,
        Err(VfsError::TooBig)
    ));
    fs.release(&CTX, ino, fh).await.unwrap();
}

#[tokio::test]
async fn handles_record_their_access_mode() {
    let fs = MemFs::new();
    let ino = mkfile(&fs, Ino::ROOT, "f", b"abc").await;
    let ro = fs.open(&CTX, ino, OpenFlags::RDONLY).await.unwrap();
    assert!(matches!(
        fs.write(&CTX, ino, ro, 0, b"x").await,
        Err(VfsError::BadHandle)
    ));
    let wo = fs.open(&CTX, ino, OpenFlags::WRONLY).await.unwrap();
    assert!(matches!(fs.read(&CTX, ino, wo, 0, 1).await, Err(VfsError::BadHandle)));
    assert!(matches!(
        fs.read(&CTX, ino, Fh(12345), 0, 1).await,
        Err(VfsError::BadHandle)
    ));
    let other = mkfile(&fs, Ino::ROOT, "g", b"").await;
    assert!(
        matches!(fs.read(&CTX, other, ro, 0, 1).await, Err(VfsError::BadHandle)),
        "handle of another inode"
    );
    fs.release(&CTX, ino, ro).await.unwrap();
    fs.release(&CTX, ino, wo).await.unwrap();
    assert!(matches!(fs.release(&CTX, ino, wo).await, Err(VfsError::BadHandle)));
    assert_eq!(fs.open_handles(), 0);
}

#[tokio::test]
async fn append_handle_writes_at_end() {
    let fs = MemFs::new();
    let ino = mkfile(&fs, Ino::ROOT, "f", b"abc").await;
    let fh = fs
        .open(&CTX, ino, OpenFlags::WRONLY.with(libc::O_APPEND))
        .await
        .unwrap();
    fs.write(&CTX, ino, fh, 0, b"def").await.unwrap();
    fs.release(&CTX, ino, fh).await.unwrap();
    assert_eq!(read_all(&fs, ino).await, b"abcdef");
}

#[tokio::test]
async fn truncate_up_and_down_with_times() {
    let fs = MemFs::new();
    let ino = mkfile(&fs, Ino::ROOT, "f", b"0123456789").await;
    let before = fs.getattr(&CTX, ino, None).await.unwrap();
    tick().await;
    let a = fs.setattr(&CTX, ino, SetAttr::size(4)).await.unwrap();
    assert_eq!(a.size, 4);
    assert!(a.mtime > before.mtime && a.ctime > before.ctime);
    fs.setattr(&CTX, ino, SetAttr::size(8)).await.unwrap();
    assert_eq!(read_all(&fs, ino).await, b"0123\0\0\0\0");
    let d = fs.mkdir(&CTX, Ino::ROOT, n("d"), 0o755, 0).await.unwrap();
    assert!(matches!(
        fs.setattr(&CTX, d.ino, SetAttr::size(0)).await,
        Err(VfsError::IsDir)
    ));
    assert!(matches!(
        fs.setattr(&CTX, ino, SetAttr::size(u64::MAX)).await,
        Err(VfsError::TooBig)
    ));
    assert_eq!(
        fs.getattr(&CTX, ino, None).await.unwrap().size,
        8,
        "a refused setattr changes nothing"
    );
}

#[tokio::test]
async fn write_updates_mtime_and_ctime() {
    let fs = MemFs::new();
    let (attr, fh) = fs
        .create(&CTX, Ino::ROOT, n("f"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    tick().await;
    fs.write(&CTX, attr.ino, fh, 0, b"x").await.unwrap();
    let after = fs.getattr(&CTX, attr.ino, None).await.unwrap();
    assert!(after.mtime > attr.mtime && after.ctime > attr.ctime);
    fs.release(&CTX, attr.ino, fh).await.unwrap();
}

#[tokio::test]
async fn chmod_chown_utimes() {
    let fs = MemFs::new();
    let ino = mkfile(&fs, Ino::ROOT, "f", b"").await;
    let before = fs.getattr(&CTX, ino, None).await.unwrap();
    tick().await;
    let a = fs.setattr(&CTX, ino, SetAttr::mode(0o6755)).await.unwrap();
    assert_eq!(a.perm, 0o6755);
    assert!(a.ctime > before.ctime);
    assert_eq!(a.mtime, before.mtime, "chmod leaves mtime");
    let a = fs
        .setattr(
            &CTX,
            ino,
            SetAttr {
                uid: Some(5),
                gid: Some(6),
                ..SetAttr::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((a.uid, a.gid), (5, 6));
    assert_eq!(a.perm, 0o755, "chown clears setuid, and setgid when group-exec is set");
    let t = Timestamp::new(1_000_000, 5);
    let a = fs
        .setattr(
            &CTX,
            ino,
            SetAttr {
                atime: Some(SetTime::At(t)),
                mtime: Some(SetTime::Now),
                ..SetAttr::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.atime, t);
    assert!(a.mtime > before.mtime);
    let old = Timestamp::new(-5, 0);
    let a = fs
        .setattr(
            &CTX,
            ino,
            SetAttr {
                mtime: Some(SetTime::At(old)),
                ..SetAttr::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.mtime, old, "times before the epoch are kept");
}

#[tokio::test]
async fn non_root_write_clears_setuid() {
    let fs = MemFs::new();
    let ino = mkfile(&fs, Ino::ROOT, "f", b"").await;
    fs.setattr(&CTX, ino, SetAttr::mode(0o6775)).await.unwrap();
    let user = RequestCtx::new(1000, 1000, 1);
    let fh = fs.open(&user, ino, OpenFlags::WRONLY).await.unwrap();
    fs.write(&user, ino, fh, 0, b"x").await.unwrap();
    fs.release(&user, ino, fh).await.unwrap();
    assert_eq!(fs.getattr(&CTX, ino, None).await.unwrap().perm, 0o775);
}

#[tokio::test]
async fn setgid_directory_is_inherited() {
    let fs = MemFs::new();
    let d = fs.mkdir(&CTX, Ino::ROOT, n("d"), 0o2775, 0).await.unwrap();
    fs.setattr(
        &CTX,
        d.ino,
        SetAttr {
            gid: Some(50),
            ..SetAttr::default()
        },
    )
    .await
    .unwrap();
    let user = RequestCtx::new(1000, 1000, 1);
    let (f, fh) = fs
        .create(&user, d.ino, n("f"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    fs.release(&user, f.ino, fh).await.unwrap();
    assert_eq!(f.gid, 50);
    let sub = fs.mkdir(&user, d.ino, n("s"), 0o755, 0).await.unwrap();
    assert_eq!(sub.gid, 50);
    assert_eq!(sub.perm & 0o2000, 0o2000);
}

#[tokio::test]
async fn unlink_while_open_keeps_data_until_release() {
    let fs = MemFs::new();
    let ino = mkfile(&fs, Ino::ROOT, "f", b"still here").await;
    let fh = fs.open(&CTX, ino, OpenFlags::RDWR).await.unwrap();
    fs.unlink(&CTX, Ino::ROOT, n("f")).await.unwrap();
    assert!(matches!(
        fs.lookup(&CTX, Ino::ROOT, n("f")).await,
        Err(VfsError::NotFound)
    ));
    assert_eq!(&fs.read(&CTX, ino, fh, 0, 100).await.unwrap()[..], b"still here");
    fs.write(&CTX, ino, fh, 10, b"!").await.unwrap();
    let a = fs.getattr(&CTX, ino, Some(fh)).await.unwrap();
    assert_eq!((a.nlink, a.size), (0, 11));
    fs.release(&CTX, ino, fh).await.unwrap();
    assert!(matches!(fs.getattr(&CTX, ino, None).await, Err(VfsError::Stale)));
    assert_eq!(fs.inode_count(), 1);
    assert_eq!(fs.allocated.load(Ordering::Relaxed), 0, "its memory is returned");
}

#[tokio::test]
async fn hard_links() {
    let fs = MemFs::new();
    let ino = mkfile(&fs, Ino::ROOT, "a", b"shared").await;
    let d = fs.mkdir(&CTX, Ino::ROOT, n("d"), 0o755, 0).await.unwrap();
    let before = fs.getattr(&CTX, ino, None).await.unwrap();
    tick().await;
    let a = fs.link(&CTX, ino, d.ino, n("b")).await.unwrap();
    assert_eq!(a.nlink, 2);
    assert!(a.ctime > before.ctime, "link changes ctime");
    assert!(matches!(fs.link(&CTX, ino, d.ino, n("b")).await, Err(VfsError::Exists)));
    assert!(matches!(
        fs.link(&CTX, d.ino, Ino::ROOT, n("dd")).await,
        Err(VfsError::NotPermitted)
    ));
    fs.unlink(&CTX, Ino::ROOT, n("a")).await.unwrap();
    assert_eq!(fs.lookup(&CTX, d.ino, n("b")).await.unwrap().nlink, 1);
    assert_eq!(read_all(&fs, ino).await, b"shared");
    fs.unlink(&CTX, d.ino, n("b")).await.unwrap();
    assert_eq!(fs.inode_count(), 2);
}

#[tokio::test]
async fn symlinks() {
    let fs = MemFs::new();
    let s = fs
        .symlink(&CTX, Ino::ROOT, n("s"), OsStr::new("/etc/passwd"))
        .await
        .unwrap();
    assert_eq!(s.kind, FileType::Symlink);
    assert_eq!(s.size, 11);
    assert_eq!(fs.getattr(&CTX, s.ino, None).await.unwrap().size, 11);
    assert_eq!(fs.readlink(&CTX, s.ino).await.unwrap(), "/etc/passwd");
    assert!(matches!(
        fs.open(&CTX, s.ino, OpenFlags::RDONLY).await,
        Err(VfsError::Loop)
    ));
    let f = mkfile(&fs, Ino::ROOT, "f", b"").await;
    assert!(matches!(fs.readlink(&CTX, f).await, Err(VfsError::Invalid(_))));
    let long = "x".repeat(crate::types::PATH_MAX + 1);
    assert!(matches!(
        fs.symlink(&CTX, Ino::ROOT, n("l"), OsStr::new(&long)).await,
        Err(VfsError::NameTooLong)
    ));
    assert!(matches!(
        fs.symlink(&CTX, Ino::ROOT, n("s"), OsStr::new("x")).await,
        Err(VfsError::Exists)
    ));
}

#[tokio::test]
async fn mknod_kinds() {
    let fs = MemFs::new();
    for (name, mode, kind) in [
        ("fifo", libc::S_IFIFO | 0o644, FileType::Fifo),
        ("sock", libc::S_IFSOCK | 0o644, FileType::Socket),
        ("chr", libc::S_IFCHR | 0o644, FileType::CharDevice),
        ("blk", libc::S_IFBLK | 0o644, FileType::BlockDevice),
        ("reg", libc::S_IFREG | 0o644, FileType::Regular),
        ("zero", 0o644, FileType::Regular),
    ] {
        let a = fs.mknod(&CTX, Ino::ROOT, n(name), mode, 0, 0x0103).await.unwrap();
        assert_eq!(a.kind, kind, "{name}");
        let want_rdev = if matches!(kind, FileType::CharDevice | FileType::BlockDevice) {
            0x0103
        } else {
            0
        };
        assert_eq!(a.rdev, want_rdev, "{name}");
    }
    assert!(matches!(
        fs.mknod(&CTX, Ino::ROOT, n("d"), libc::S_IFDIR | 0o755, 0, 0).await,
        Err(VfsError::NotPermitted)
    ));
}

#[tokio::test]
async fn rename_plain_and_over_file() {
    let fs = MemFs::new();
    let a = mkfile(&fs, Ino::ROOT, "a", b"A").await;
    let b = mkfile(&fs, Ino::ROOT, "b", b"B").await;
    let before = fs.getattr(&CTX, a, None).await.unwrap();
    tick().await;
    fs.rename(&CTX, Ino::ROOT, n("a"), Ino::ROOT, n("b"), RenameFlags::NONE)
        .await
        .unwrap();
    assert_eq!(names(&fs, Ino::ROOT).await, vec!["b"]);
    assert_eq!(fs.lookup(&CTX, Ino::ROOT, n("b")).await.unwrap().ino, a);
    assert!(
        fs.getattr(&CTX, a, None).await.unwrap().ctime > before.ctime,
        "rename changes the moved inode's ctime"
    );
    assert!(
        matches!(fs.getattr(&CTX, b, None).await, Err(VfsError::Stale)),
        "the replaced file is gone"
    );
    assert!(matches!(
        fs.rename(&CTX, Ino::ROOT, n("zz"), Ino::ROOT, n("b"), RenameFlags::NONE)
            .await,
        Err(VfsError::NotFound)
    ));
    assert_eq!(fs.inode_count(), 2);
}

#[tokio::test]
async fn rename_directories() {
    let fs = MemFs::new();
    let d1 = fs.mkdir(&CTX, Ino::ROOT, n("d1"), 0o755, 0).await.unwrap();
    let d2 = fs.mkdir(&CTX, Ino::ROOT, n("d2"), 0o755, 0).await.unwrap();
    let sub = fs.mkdir(&CTX, d1.ino, n("sub"), 0o755, 0).await.unwrap();
    let deep = fs.mkdir(&CTX, sub.ino, n("deep"), 0o755, 0).await.unwrap();
    mkfile(&fs, Ino::ROOT, "f", b"").await;
    // Into its own subtree: EINVAL, whether the target is itself or a descendant.
    for (np, nn) in [(sub.ino, "x"), (deep.ino, "x"), (d1.ino, "y")] {
        let r = fs.rename(&CTX, Ino::ROOT, n("d1"), np, n(nn), RenameFlags::NONE).await;
        assert!(matches!(r, Err(VfsError::Invalid(_))), "{nn}: {r:?}");
    }
    // Directory over a file, file over a directory.
    let r = fs
        .rename(&CTX, Ino::ROOT, n("d2"), Ino::ROOT, n("f"), RenameFlags::NONE)
        .await;
    assert!(matches!(r, Err(VfsError::NotDir)));
    let r = fs
        .rename(&CTX, Ino::ROOT, n("f"), Ino::ROOT, n("d2"), RenameFlags::NONE)
        .await;
    assert!(matches!(r, Err(VfsError::IsDir)));
    // Over a non-empty directory, then over an empty one.
    let r = fs
        .rename(&CTX, Ino::ROOT, n("d2"), Ino::ROOT, n("d1"), RenameFlags::NONE)
        .await;
    assert!(matches!(r, Err(VfsError::NotEmpty)));
    let root_links = fs.getattr(&CTX, Ino::ROOT, None).await.unwrap().nlink;
    fs.rename(&CTX, d1.ino, n("sub"), Ino::ROOT, n("d2"), RenameFlags::NONE)
        .await
        .unwrap();
    assert!(matches!(fs.getattr(&CTX, d2.ino, None).await, Err(VfsError::Stale)));
    assert_eq!(
        fs.getattr(&CTX, Ino::ROOT, None).await.unwrap().nlink,
        root_links,
        "one dir in, one replaced"
    );
    assert_eq!(fs.getattr(&CTX, d1.ino, None).await.unwrap().nlink, 2);
    let dotdot = fs.readdir(&CTX, sub.ino, 1, 1).await.unwrap();
    assert_eq!(
        (dotdot[0].name.as_os_str(), dotdot[0].ino),
        (OsStr::new(".."), Ino::ROOT)
    );
}

#[tokio::test]
async fn rename_noreplace_and_exchange() {
    let fs = MemFs::new();
    let a = mkfile(&fs, Ino::ROOT, "a", b"A").await;
    let d = fs.mkdir(&CTX, Ino::ROOT, n("d"), 0o755, 0).await.unwrap();
    let sub = fs.mkdir(&CTX, d.ino, n("sub"), 0o755, 0).await.unwrap();
    let r = fs
        .rename(&CTX, Ino::ROOT, n("a"), Ino::ROOT, n("d"), RenameFlags::NOREPLACE)
        .await;
    assert!(matches!(r, Err(VfsError::Exists)));
    let r = fs
        .rename(&CTX, Ino::ROOT, n("a"), Ino::ROOT, n("none"), RenameFlags::EXCHANGE)
        .await;
    assert!(matches!(r, Err(VfsError::NotFound)));
    let r = fs
        .rename(
            &CTX,
            Ino::ROOT,
            n("a"),
            Ino::ROOT,
            n("x"),
            RenameFlags(libc::RENAME_WHITEOUT),
        )
        .await;
    assert!(matches!(r, Err(VfsError::Invalid(_))));
    // Exchange a file in the root with a directory in d: nlinks follow the directory.
    fs.rename(&CTX, Ino::ROOT, n("a"), d.ino, n("sub"), RenameFlags::EXCHANGE)
        .await
        .unwrap();
    assert_eq!(fs.lookup(&CTX, Ino::ROOT, n("a")).await.unwrap().ino, sub.ino);
    assert_eq!(fs.lookup(&CTX, d.ino, n("sub")).await.unwrap().ino, a);
    assert_eq!(fs.getattr(&CTX, d.ino, None).await.unwrap().nlink, 2);
    assert_eq!(fs.getattr(&CTX, Ino::ROOT, None).await.unwrap().nlink, 4);
    let dotdot = fs.readdir(&CTX, sub.ino, 1, 1).await.unwrap();
    assert_eq!(dotdot[0].ino, Ino::ROOT);
    // Exchanging a directory with its own descendant is refused.
    let inner = fs.mkdir(&CTX, sub.ino, n("inner"), 0o755, 0).await.unwrap();
    let r = fs
        .rename(&CTX, Ino::ROOT, n("a"), sub.ino, n("inner"), RenameFlags::EXCHANGE)
        .await;
    assert!(matches!(r, Err(VfsError::Invalid(_))), "{r:?}");
    assert_eq!(fs.lookup(&CTX, sub.ino, n("inner")).await.unwrap().ino, inner.ino);
}

#[tokio::test]
async fn rename_between_hard_links_is_a_no_op() {
    let fs = MemFs::new();
    let a = mkfile(&fs, Ino::ROOT, "a", b"").await;
    fs.link(&CTX, a, Ino::ROOT, n("b")).await.unwrap();
    fs.rename(&CTX, Ino::ROOT, n("a"), Ino::ROOT, n("b"), RenameFlags::NONE)
        .await
        .unwrap();
    assert_eq!(names(&fs, Ino::ROOT).await, vec!["a", "b"]);
    assert_eq!(fs.getattr(&CTX, a, None).await.unwrap().nlink, 2);
}

#[tokio::test]
async fn readdir_pages_with_cookies() {
    let fs = MemFs::new();
    for i in 0..25 {
        mkfile(&fs, Ino::ROOT, &format!("f{i:02}"), b"").await;
    }
    let mut seen = Vec::new();
    let mut cookie = 0;
    for pages in 0.. {
        assert!(pages < 1000, "readdir did not end");
        let page = fs.readdir(&CTX, Ino::ROOT, cookie, 4).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        for e in &page {
            assert_ne!(e.cookie, 0);
            seen.push(e.name.to_string_lossy().into_owned());
        }
        cookie = page.last().unwrap().cookie;
    }
    assert_eq!(seen.len(), 27);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 27, "no duplicates");
    assert!(matches!(fs.readdir(&CTX, Ino(77), 0, 4).await, Err(VfsError::Stale)));
    let f = fs.lookup(&CTX, Ino::ROOT, n("f00")).await.unwrap().ino;
    assert!(matches!(fs.readdir(&CTX, f, 0, 4).await, Err(VfsError::NotDir)));
}

#[tokio::test]
async fn readdir_while_entries_change() {
    let fs = MemFs::new();
    for i in 0..20 {
        mkfile(&fs, Ino::ROOT, &format!("keep{i}"), b"").await;
        mkfile(&fs, Ino::ROOT, &format!("gone{i}"), b"").await;
    }
    let mut seen = Vec::new();
    let mut cookie = 0;
    let mut round = 0;
    loop {
        assert!(round < 1000, "readdir did not end");
        let page = fs.readdir(&CTX, Ino::ROOT, cookie, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|e| e.name.to_string_lossy().into_owned()));
        cookie = page.last().unwrap().cookie;
        // Between pages: remove one entry, add one.
        if round < 20 {
            fs.unlink(&CTX, Ino::ROOT, n(&format!("gone{round}"))).await.unwrap();
            mkfile(&fs, Ino::ROOT, &format!("new{round}"), b"").await;
        }
        round += 1;
    }
    for i in 0..20 {
        let k = format!("keep{i}");
        assert_eq!(seen.iter().filter(|s| **s == k).count(), 1, "{k} exactly once");
    }
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len(), "no duplicates");
}

#[tokio::test]
async fn xattrs() {
    let fs = MemFs::new();
    let ino = mkfile(&fs, Ino::ROOT, "f", b"").await;
    let name = OsStr::new("user.color");
    assert!(matches!(fs.getxattr(&CTX, ino, name).await, Err(VfsError::NoAttr)));
    assert!(matches!(
        fs.setxattr(&CTX, ino, name, b"red", XattrSet::Replace).await,
        Err(VfsError::NoAttr)
    ));
    let before = fs.getattr(&CTX, ino, None).await.unwrap();
    tick().await;
    fs.setxattr(&CTX, ino, name, b"red", XattrSet::Create).await.unwrap();
    assert!(fs.getattr(&CTX, ino, None).await.unwrap().ctime > before.ctime);
    assert!(matches!(
        fs.setxattr(&CTX, ino, name, b"blue", XattrSet::Create).await,
        Err(VfsError::Exists)
    ));
    fs.setxattr(&CTX, ino, name, b"blue", XattrSet::Replace).await.unwrap();
    assert_eq!(&fs.getxattr(&CTX, ino, name).await.unwrap()[..], b"blue");
    fs.setxattr(&CTX, ino, OsStr::new("trusted.t"), b"1", XattrSet::Any)
        .await
        .unwrap();
    assert_eq!(fs.listxattr(&CTX, ino).await.unwrap().len(), 2);
    let user = RequestCtx::new(1000, 1000, 1);
    assert_eq!(
        fs.listxattr(&user, ino).await.unwrap(),
        vec![name.to_os_string()],
        "trusted.* hidden from users"
    );
    fs.removexattr(&CTX, ino, name).await.unwrap();
    assert!(matches!(fs.removexattr(&CTX, ino, name).await, Err(VfsError::NoAttr)));
    assert!(matches!(
        fs.setxattr(&CTX, ino, OsStr::new("bogus"), b"", XattrSet::Any).await,
        Err(VfsError::Unsupported)
    ));
    assert!(matches!(
        fs.setxattr(&CTX, ino, OsStr::new("system.posix_acl_access"), b"", XattrSet::Any)
            .await,
        Err(VfsError::Unsupported)
    ));
    let big = vec![0u8; crate::vfs::XATTR_SIZE_MAX + 1];
    assert!(matches!(
        fs.setxattr(&CTX, ino, name, &big, XattrSet::Any).await,
        Err(VfsError::TooBig)
    ));
    let s = fs.symlink(&CTX, Ino::ROOT, n("s"), OsStr::new("f")).await.unwrap();
    assert!(matches!(
        fs.setxattr(&CTX, s.ino, name, b"x", XattrSet::Any).await,
        Err(VfsError::NotPermitted)
    ));
}

#[tokio::test]
async fn names_too_long_never_reach_the_backend() {
    let long = "n".repeat(256);
    assert!(matches!(Name::new(OsStr::new(&long)), Err(VfsError::NameTooLong)));
    let fs = MemFs::new();
    let max = "n".repeat(255);
    mkfile(&fs, Ino::ROOT, &max, b"").await;
    assert_eq!(names(&fs, Ino::ROOT).await, vec![max]);
}

#[tokio::test]
async fn statfs_counts_inodes_and_bytes() {
    let fs = MemFs::new();
    let s0 = fs.statfs(&CTX, Ino::ROOT).await.unwrap();
    mkfile(&fs, Ino::ROOT, "f", &vec![1u8; 1 << 20]).await;
    let s1 = fs.statfs(&CTX, Ino::ROOT).await.unwrap();
    assert_eq!(s0.ffree - s1.ffree, 1);
    assert_eq!(s0.bfree - s1.bfree, (1 << 20) / 4096);
    assert_eq!(s1.namelen, 255);
}

#[tokio::test]
async fn fallocate_extends_and_punches() {
    let fs = MemFs::new();
    let (attr, fh) = fs
        .create(&CTX, Ino::ROOT, n("f"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    fs.write(&CTX, attr.ino, fh, 0, &[9u8; 100]).await.unwrap();
    fs.fallocate(&CTX, attr.ino, fh, 50, 1000, 0).await.unwrap();
    assert_eq!(fs.getattr(&CTX, attr.ino, None).await.unwrap().size, 1050);
    fs.fallocate(
        &CTX,
        attr.ino,
        fh,
        10,
        20,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .await
    .unwrap();
    let data = fs.read(&CTX, attr.ino, fh, 0, 100).await.unwrap();
    assert!(
        data[..10].iter().all(|&b| b == 9)
            && data[10..30].iter().all(|&b| b == 0)
            && data[30..].iter().all(|&b| b == 9)
    );
    assert!(matches!(
        fs.fallocate(&CTX, attr.ino, fh, 0, 10, 0x40).await,
        Err(VfsError::Unsupported)
    ));
    fs.release(&CTX, attr.ino, fh).await.unwrap();
}

#[tokio::test]
async fn instances_have_distinct_source_ids() {
    let (a, b) = (MemFs::new(), MemFs::new());
    assert_ne!(a.source_id(), b.source_id());
    assert_eq!(a.inode_stability(), InodeStability::Volatile);
}

/// Runs `parties` futures each on its own OS thread with its own current-thread runtime,
/// all released together, and returns their results in order. Threads, not tasks on one
/// multi-threaded runtime: the parties really run in parallel (a task woken into a busy
/// worker's LIFO slot may not), and a party that spins cannot starve another, because
/// the OS scheduler preempts it.
fn on_threads<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
    parties: usize,
    party: impl Fn(usize) -> Fut + Send + Sync + 'static,
) -> Vec<T> {
    let party = Arc::new(party);
    let start = Arc::new(std::sync::Barrier::new(parties));
    let threads: Vec<_> = (0..parties)
        .map(|i| {
            let (party, start) = (Arc::clone(&party), Arc::clone(&start));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                start.wait();
                rt.block_on(party(i))
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Seed 000 bug 1 (doc/LESSONS.md#seed-000-bug-1): a `File`'s `stat` was rewritten by Getattr under one map lock while
/// Read clamped on `stat.Size` under another, so readers saw torn metadata ("corruption
/// once in a while"). Here two truncating writers set (size, mtime) pairs in single
/// `setattr` calls while readers `getattr` the same inode; every pair a reader sees must
/// be one a writer produced. Fails if size and mtime are updated in two critical sections
/// (checked by publishing `setattr`'s size in a section of its own: 5 of 6 runs failed on
/// a loaded 2-core machine, load average 8; the window is nanoseconds wide, so a run can
/// miss it — the loom model of the same mutant in `tests/loom_testkit.rs` never does).
/// Parties on threads; every loop is bounded.
#[test]
fn seed000_bug1_getattr_never_sees_torn_size_and_mtime() {
    let fs = Arc::new(MemFs::new());
    let ino = block_on(async {
        let ino = mkfile(&fs, Ino::ROOT, "f", b"").await;
        let set = SetAttr {
            size: Some(0),
            mtime: Some(SetTime::At(Timestamp::new(0, 0))),
            ..SetAttr::default()
        };
        fs.setattr(&CTX, ino, set).await.unwrap();
        ino
    });
    const ITER: u64 = 1_000_000;
    let checked = on_threads(4, move |party| {
        let fs = Arc::clone(&fs);
        async move {
            if party < 2 {
                let base = [1, 1_000_000][party];
                for k in 0..ITER {
                    let v = base + k;
                    let set = SetAttr {
                        size: Some(v * 7),
                        mtime: Some(SetTime::At(Timestamp::new(v as i64, 0))),
                        ..SetAttr::default()
                    };
                    fs.setattr(&CTX, ino, set).await.unwrap();
                }
                return ITER;
            }
            let mut checked = 0u64;
            for _ in 0..ITER {
                let a = fs.getattr(&CTX, ino, None).await.unwrap();
                assert_eq!(
                    a.size,
                    a.mtime.secs as u64 * 7,
                    "torn attributes: size {} with mtime {}",
                    a.size,
                    a.mtime.secs
                );
                checked += 1;
            }
            checked
        }
    });
    assert_eq!(checked, vec![ITER; 4]);
}

/// Seed 000 bug 1 (doc/LESSONS.md#seed-000-bug-1), the symptom PostgreSQL saw: "wrong clamp length and wrong bytes".
/// A writer truncates a file to zero and rewrites it whole, over and over, with a byte
/// pattern; readers read it whole. Every byte a reader gets must be pattern, never a zero
/// from a size that ran ahead of its data. Fails if a write publishes the new size in a
/// critical section separate from the one that copies the data (checked by publishing
/// `write`'s size in a section of its own: 6 of 8 runs failed on a loaded 2-core machine,
/// load average 8; the loom model in `tests/loom_testkit.rs` catches it every time).
///
/// The readers read until the writer is done. They used to be tasks on one multi-threaded
/// runtime, and hung on loaded machines: MemFs's read never suspends, so a reader never
/// gave its worker back, and the writer, woken into that worker's LIFO slot by the start
/// barrier, never ran. Now every party is an OS thread, and the readers' loop is bounded.
#[test]
fn seed000_bug1_read_never_sees_size_ahead_of_data() {
    let fs = Arc::new(MemFs::new());
    let ino = block_on(mkfile(&fs, Ino::ROOT, "f", b""));
    const ITER: usize = 200_000;
    // Far more reads than the writer's rounds take on any machine that runs the writer at
    // all; past it the test fails instead of spinning.
    const READ_BOUND: usize = 50_000_000;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let nonempty = on_threads(3, move |party| {
        let (fs, done) = (Arc::clone(&fs), Arc::clone(&done));
        async move {
            if party == 0 {
                let fh = fs.open(&CTX, ino, OpenFlags::RDWR).await.unwrap();
                for k in 0..ITER {
                    let len = 1 + (k * 37) % 9000;
                    fs.setattr(&CTX, ino, SetAttr::size(0)).await.unwrap();
                    fs.write(&CTX, ino, fh, 0, &vec![0xA5; len]).await.unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::Release);
                fs.release(&CTX, ino, fh).await.unwrap();
                return 0;
            }
            let fh = fs.open(&CTX, ino, OpenFlags::RDONLY).await.unwrap();
            let (mut nonempty, mut reads) = (0, 0);
            while reads < ITER || !done.load(std::sync::atomic::Ordering::Acquire) {
                let data = fs.read(&CTX, ino, fh, 0, 16384).await.unwrap();
                assert!(
                    data.iter().all(|&b| b == 0xA5),
                    "read {} bytes with zeros in them",
                    data.len()
                );
                nonempty += usize::from(!data.is_empty());
                reads += 1;
                assert!(reads < READ_BOUND, "the writer made no progress in {READ_BOUND} reads");
            }
            fs.release(&CTX, ino, fh).await.unwrap();
            nonempty
        }
    });
    assert!(nonempty.iter().sum::<usize>() > 0, "readers saw data at least once");
}

/// Rename over an existing name must never make a concurrent lookup of that name fail
/// (POSIX: the new name stays visible throughout).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookup_never_misses_a_name_being_renamed_over() {
    let fs = Arc::new(MemFs::new());
    mkfile(&fs, Ino::ROOT, "target", b"v0").await;
    let renamer = {
        let fs = Arc::clone(&fs);
        tokio::spawn(async move {
            for i in 0..3000 {
                let tmp = format!("tmp{i}");
                mkfile(&fs, Ino::ROOT, &tmp, b"v").await;
                fs.rename(&CTX, Ino::ROOT, n(&tmp), Ino::ROOT, n("target"), RenameFlags::NONE)
                    .await
                    .unwrap();
            }
        })
    };
    let looker = {
        let fs = Arc::clone(&fs);
        tokio::spawn(async move {
            for _ in 0..20_000 {
                fs.lookup(&CTX, Ino::ROOT, n("target")).await.unwrap();
            }
        })
    };
    renamer.await.unwrap();
    looker.await.unwrap();
    assert_eq!(fs.inode_count(), 2);
}

/// Concurrent cross-directory renames in opposite directions must not deadlock or create a
/// cycle (the subtree check and the move happen under one namespace lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cross_directory_renames_never_cycle() {
    let fs = Arc::new(MemFs::new());
    let a = fs.mkdir(&CTX, Ino::ROOT, n("a"), 0o755, 0).await.unwrap().ino;
    let b = fs.mkdir(&CTX, Ino::ROOT, n("b"), 0o755, 0).await.unwrap().ino;
    let t1 = {
        let fs = Arc::clone(&fs);
        tokio::spawn(async move {
            for _ in 0..500 {
                let _ = fs.rename(&CTX, Ino::ROOT, n("a"), b, n("a"), RenameFlags::NONE).await;
                let _ = fs.rename(&CTX, b, n("a"), Ino::ROOT, n("a"), RenameFlags::NONE).await;
            }
        })
    };
    let t2 = {
        let fs = Arc::clone(&fs);
        tokio::spawn(async move {
            for _ in 0..500 {
                let _ = fs.rename(&CTX, Ino::ROOT, n("b"), a, n("b"), RenameFlags::NONE).await;
                let _ = fs.rename(&CTX, a, n("b"), Ino::ROOT, n("b"), RenameFlags::NONE).await;
            }
        })
    };
    t1.await.unwrap();
    t2.await.unwrap();
    // Both directories are reachable from the root: walk up from each.
    for d in [a, b] {
        let mut cur = d;
        for _ in 0..4 {
            cur = fs.readdir(&CTX, cur, 1, 1).await.unwrap()[0].ino;
        }
        assert_eq!(cur, Ino::ROOT, "directory {d} is still under the root");
    }
}
