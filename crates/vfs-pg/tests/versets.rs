//! Modules and versets through the `VirtualFs` interface, on the whole-database view (the
//! mount root lists modules): a fresh database has module 1 with an empty verset 1;
//! `cpverset` through the control file copies rows, not bytes; afterwards the two
//! versets change independently, a write giving only the written verset a private copy
//! of the blocks written.

use std::collections::BTreeMap;

use vfs_core::{Attr, Errno, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, VfsError, VirtualFs};
use vfs_pg::testing::with_shared;
use vfs_pg::{CTL_INO, PgFs, PgOptions};

const CTX: RequestCtx = RequestCtx::ROOT;

fn nm(s: &str) -> Name<'_> {
    Name::new(s.as_ref()).expect("name")
}

async fn whole_db() -> PgFs {
    let url = with_shared(|s| s.create_db()).expect("server").expect("database");
    PgFs::open(&url, PgOptions::default()).await.expect("open")
}

async fn names(fs: &PgFs, dir: Ino) -> Vec<String> {
    let mut out = Vec::new();
    let mut cookie = 0;
    loop {
        let page = fs.readdir(&CTX, dir, cookie, 3).await.expect("readdir");
        let Some(last) = page.last() else { break };
        cookie = last.cookie;
        out.extend(page.iter().map(|e| e.name.to_string_lossy().into_owned()));
    }
    out.retain(|n| n != "." && n != "..");
    out.sort();
    out
}

async fn walk(fs: &PgFs, path: &[&str]) -> Attr {
    let mut a = fs.getattr(&CTX, Ino::ROOT, None).await.expect("root");
    for p in path {
        a = fs
            .lookup(&CTX, a.ino, nm(p))
            .await
            .unwrap_or_else(|e| panic!("lookup {p} in {path:?}: {e}"));
    }
    a
}

async fn read_all(fs: &PgFs, ino: Ino) -> Vec<u8> {
    let fh = fs.open(&CTX, ino, OpenFlags::RDONLY).await.expect("open");
    let mut out = Vec::new();
    loop {
        let b = fs.read(&CTX, ino, fh, out.len() as u64, 1 << 20).await.expect("read");
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    fs.release(&CTX, ino, fh).await.expect("release");
    out
}

async fn write_at(fs: &PgFs, ino: Ino, offset: u64, data: &[u8]) {
    let fh = fs.open(&CTX, ino, OpenFlags::WRONLY).await.expect("open");
    fs.write(&CTX, ino, fh, offset, data).await.expect("write");
    fs.release(&CTX, ino, fh).await.expect("release");
}

async fn ctl(fs: &PgFs, cmd: &str) -> Result<u32, VfsError> {
    let fh = fs.open(&CTX, CTL_INO, OpenFlags::WRONLY.with(libc::O_TRUNC)).await?;
    let r = fs.write(&CTX, CTL_INO, fh, 0, cmd.as_bytes()).await;
    fs.release(&CTX, CTL_INO, fh).await?;
    r
}

async fn blocks(fs: &PgFs) -> u64 {
    let r = fs.fsck().await.expect("fsck");
    assert!(r.is_clean(), "{r}");
    r.blocks
}

/// Everything `stat` shows except the inode number, keyed by path.
fn stat_view(a: &Attr) -> (FileType, u16, u32, u32, u32, u64, u64, vfs_core::Timestamp) {
    (a.kind, a.perm, a.nlink, a.uid, a.gid, a.size, a.rdev, a.mtime)
}

const PATHS: &[&[&str]] = &[
    &["bin"],
    &["bin", "su"],
    &["etc"],
    &["etc", "su-link"],
    &["etc", "motd"],
    &["dev"],
    &["dev", "cua0"],
];

/// A small tree as seed 004 (doc/LESSONS.md#seed-004) shows one: a setuid binary owned by root:bin (7), a device
/// node owned by root:uucp (10), a symlink, a hard link across directories, an xattr.
async fn populate(fs: &PgFs, verset: Ino) -> Vec<u8> {
    let bin = fs.mkdir(&CTX, verset, nm("bin"), 0o755, 0).await.expect("mkdir bin");
    let etc = fs.mkdir(&CTX, verset, nm("etc"), 0o755, 0).await.expect("mkdir etc");
    let dev = fs.mkdir(&CTX, verset, nm("dev"), 0o755, 0).await.expect("mkdir dev");
    let (su, fh) = fs
        .create(&CTX, bin.ino, nm("su"), 0o755, 0, OpenFlags::RDWR)
        .await
        .expect("create su");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs.write(&CTX, su.ino, fh, 0, &data).await.expect("write su");
    fs.release(&CTX, su.ino, fh).await.expect("release");
    let set = SetAttr {
        uid: Some(0),
        gid: Some(7),
        ..SetAttr::default()
    };
    fs.setattr(&CTX, su.ino, set).await.expect("chown su");
    fs.setattr(&CTX, su.ino, SetAttr::mode(0o4755)).await.expect("chmod su");
    fs.setxattr(&CTX, su.ino, "user.origin".as_ref(), b"cdrom", vfs_core::XattrSet::Any)
        .await
        .expect("setxattr");
    fs.link(&CTX, su.ino, etc.ino, nm("su-link")).await.expect("link");
    fs.symlink(&CTX, etc.ino, nm("motd"), "../bin/su".as_ref())
        .await
        .expect("symlink");
    let cua = fs
        .mknod(&CTX, dev.ino, nm("cua0"), libc::S_IFCHR | 0o660, 0, (5 << 8) | 64)
        .await
        .expect("mknod");
    fs.setattr(
        &CTX,
        cua.ino,
        SetAttr {
            gid: Some(10),
            ..SetAttr::default()
        },
    )
    .await
    .expect("chgrp");
    data
}

#[tokio::test]
async fn fresh_database_has_module_1_with_an_empty_verset_1() {
    let fs = whole_db().await;
    assert_eq!(names(&fs, Ino::ROOT).await, ["1", "ctl"]);
    let m1 = walk(&fs, &["1"]).await;
    assert_eq!(names(&fs, m1.ino).await, ["1"]);
    let v1 = walk(&fs, &["1", "1"]).await;
    assert_eq!(v1.kind, FileType::Directory);
    assert!(names(&fs, v1.ino).await.is_empty());
}

#[tokio::test]
async fn cpverset_copies_rows_and_the_copies_change_independently() {
    let fs = whole_db().await;
    let v1 = walk(&fs, &["1", "1"]).await;
    let data = populate(&fs, v1.ino).await;
    let before = blocks(&fs).await;
    assert!(before >= 5, "300 kB in 64 KiB blocks: {before}");

    assert_eq!(ctl(&fs, "cpverset 1\n").await.expect("cpverset"), 11);
    assert_eq!(names(&fs, walk(&fs, &["1"]).await.ino).await, ["1", "2"]);
    assert_eq!(blocks(&fs).await, before, "a copy adds block references, never blocks");

    // Every path has the same stat in both versets, under different inode numbers.
    let mut one = BTreeMap::new();
    for p in PATHS {
        let a = walk(&fs, &[&["1", "1"][..], p].concat()).await;
        let b = walk(&fs, &[&["1", "2"][..], p].concat()).await;
        assert_eq!(stat_view(&a), stat_view(&b), "{p:?}");
        assert_ne!(a.ino, b.ino, "{p:?}");
        one.insert(p.join("/"), a);
    }
    let su2 = walk(&fs, &["1", "2", "bin", "su"]).await;
    let link2 = walk(&fs, &["1", "2", "etc", "su-link"]).await;
    assert_eq!(su2.ino, link2.ino, "the hard link is one inode in the copy too");
    assert_eq!((su2.perm, su2.uid, su2.gid, su2.nlink), (0o4755, 0, 7, 2));
    let cua2 = walk(&fs, &["1", "2", "dev", "cua0"]).await;
    assert_eq!(
        (cua2.kind, cua2.rdev, cua2.gid),
        (FileType::CharDevice, (5 << 8) | 64, 10)
    );
    let motd2 = walk(&fs, &["1", "2", "etc", "motd"]).await;
    assert_eq!(fs.readlink(&CTX, motd2.ino).await.expect("readlink"), "../bin/su");
    assert_eq!(
        &fs.getxattr(&CTX, su2.ino, "user.origin".as_ref())
            .await
            .expect("getxattr")[..],
        b"cdrom"
    );
    assert_eq!(read_all(&fs, su2.ino).await, data);

    // A write in verset 2 copies only the block written, and only verset 2 sees it.
    write_at(&fs, su2.ino, 70_000, b"sendmail 8.8").await;
    assert_eq!(blocks(&fs).await, before + 1, "one block written, one block copied");
    let su1 = one["bin/su"];
    assert_eq!(read_all(&fs, su1.ino).await, data, "verset 1 unchanged");
    let mut want = data.clone();
    want[70_000..70_012].copy_from_slice(b"sendmail 8.8");
    assert_eq!(read_all(&fs, su2.ino).await, want);
    assert_eq!(
        read_all(&fs, link2.ino).await,
        want,
        "through the hard link in verset 2"
    );

    // Truncate and unlink in verset 1 leave verset 2 alone.
    fs.setattr(&CTX, su1.ino, SetAttr::size(10)).await.expect("truncate");
    let etc1 = walk(&fs, &["1", "1", "etc"]).await;
    fs.unlink(&CTX, etc1.ino, nm("motd")).await.expect("unlink");
    assert_eq!(read_all(&fs, su2.ino).await, want);
    assert!(
        fs.lookup(&CTX, walk(&fs, &["1", "2", "etc"]).await.ino, nm("motd"))
            .await
            .is_ok()
    );
    assert_eq!(walk(&fs, &["1", "1", "bin", "su"]).await.size, 10);
    blocks(&fs).await;
}

#[tokio::test]
async fn modules_and_versets_are_made_with_mkdir_and_the_layout_is_kept() {
    let fs = whole_db().await;
    let m2 = fs
        .mkdir(&CTX, Ino::ROOT, nm("2"), 0o755, 0)
        .await
        .expect("mkdir module 2");
    let v21 = fs
        .mkdir(&CTX, m2.ino, nm("1"), 0o755, 0)
        .await
        .expect("mkdir verset 2/1");
    let (f, fh) = fs
        .create(&CTX, v21.ino, nm("file"), 0o644, 0, OpenFlags::RDWR)
        .await
        .expect("create");
    fs.write(&CTX, f.ino, fh, 0, b"module 2").await.expect("write");
    fs.release(&CTX, f.ino, fh).await.expect("release");
    assert_eq!(names(&fs, Ino::ROOT).await, ["1", "2", "ctl"]);

    let errno = |r: Result<Attr, VfsError>| r.err().map(|e| e.errno());
    assert_eq!(
        errno(fs.mkdir(&CTX, Ino::ROOT, nm("x"), 0o755, 0).await),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        errno(fs.mkdir(&CTX, Ino::ROOT, nm("2"), 0o755, 0).await),
        Some(Errno::EEXIST)
    );
    assert_eq!(
        errno(fs.mkdir(&CTX, Ino::ROOT, nm("ctl"), 0o755, 0).await),
        Some(Errno::EEXIST)
    );
    assert_eq!(
        errno(fs.symlink(&CTX, m2.ino, nm("s"), "t".as_ref()).await),
        Some(Errno::EPERM)
    );
    assert_eq!(
        fs.create(&CTX, Ino::ROOT, nm("f"), 0o644, 0, OpenFlags::RDWR)
            .await
            .err()
            .map(|e| e.errno()),
        Some(Errno::EPERM)
    );
    let v11 = walk(&fs, &["1", "1"]).await;
    assert_eq!(errno(fs.link(&CTX, f.ino, v11.ino, nm("f")).await), Some(Errno::EXDEV));
    assert_eq!(
        fs.rename(&CTX, v21.ino, nm("file"), v11.ino, nm("file"), RenameFlags::NONE)
            .await
            .err()
            .map(|e| e.errno()),
        Some(Errno::EXDEV)
    );

    assert_eq!(ctl(&fs, "cpverset 2 1").await.expect("cpverset 2 1"), 12);
    let copy = walk(&fs, &["2", "2", "file"]).await;
    assert_eq!(read_all(&fs, copy.ino).await, b"module 2");
    assert_eq!(
        ctl(&fs, "cpverset 9").await.err().map(|e| e.errno()),
        Some(Errno::ENOENT)
    );
    assert_eq!(ctl(&fs, "rm -rf /").await.err().map(|e| e.errno()), Some(Errno::EINVAL));
    assert_eq!(blocks(&fs).await, 1);
}
