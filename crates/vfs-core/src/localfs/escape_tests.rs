//! Escape tests: nothing outside the root may be read, written, created, removed or
//! renamed through [`LocalFs`], whatever symlinks the root holds or the host swaps in.
//!
//! Layout: `tmp/outside/secret` (and `tmp/outside/dir/`) lie outside; `tmp/root` is
//! served. Inside the root the host plants an absolute symlink to the secret, a relative
//! `../outside/secret` one, and symlinks to the outside directory, relative and absolute.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use super::tests::{CTX, Fx, nm};
use super::*;

/// What the snapshot keeps of one path: contents, mode, uid, mtime, mtime nsec, nlink.
type Seen = (Vec<u8>, u32, u32, i64, i64, u64);

const SECRET: &[u8] = b"TOP SECRET: never leaves the outside";

struct Esc {
    fx: Fx,
    outside: PathBuf,
}

impl Esc {
    fn new() -> Esc {
        let fx = Fx::new();
        let outside = fx.tmp.path().join("outside");
        fs::create_dir_all(outside.join("dir")).unwrap();
        fs::write(outside.join("secret"), SECRET).unwrap();
        fs::write(outside.join("dir/secret"), SECRET).unwrap();
        let secret = outside.join("secret");
        symlink(&secret, fx.p("abs_link")).unwrap();
        symlink("../outside/secret", fx.p("rel_link")).unwrap();
        symlink("../outside", fx.p("dir_link")).unwrap();
        symlink(&outside, fx.p("abs_dir_link")).unwrap();
        symlink("../../../../../../../../../../../..", fx.p("up_link")).unwrap();
        Esc { fx, outside }
    }

    /// Everything outside, with contents, modes, owners and times.
    fn snapshot(&self) -> BTreeMap<PathBuf, Seen> {
        fn visit(p: &Path, out: &mut BTreeMap<PathBuf, Seen>) {
            let md = fs::symlink_metadata(p).unwrap();
            let data = if md.is_file() { fs::read(p).unwrap() } else { Vec::new() };
            out.insert(
                p.to_path_buf(),
                (data, md.mode(), md.uid(), md.mtime(), md.mtime_nsec(), md.nlink()),
            );
            if md.is_dir() {
                for e in fs::read_dir(p).unwrap() {
                    visit(&e.unwrap().path(), out);
                }
            }
        }
        let mut out = BTreeMap::new();
        visit(&self.outside, &mut out);
        let xattrs = rustix::fs::listxattr(self.outside.join("secret").as_path(), &mut [0u8; 1024][..]).unwrap();
        out.insert(PathBuf::from("xattr-list-len"), (Vec::new(), 0, 0, 0, 0, xattrs as u64));
        out
    }

    fn links(&self) -> [&'static str; 2] {
        ["abs_link", "rel_link"]
    }

    fn dir_links(&self) -> [&'static str; 3] {
        ["dir_link", "abs_dir_link", "up_link"]
    }
}

/// Every byte string a read through LocalFs produced must not contain the secret.
fn assert_not_secret(data: &[u8]) {
    assert!(!data.windows(SECRET.len()).any(|w| w == SECRET), "the secret leaked");
}

#[tokio::test]
async fn escape_symlinks_are_objects_never_followed() {
    let e = Esc::new();
    let before = e.snapshot();
    let fs_ = &e.fx.fs;
    for name in e.links().into_iter().chain(e.dir_links()) {
        let a = fs_.lookup(&CTX, Ino::ROOT, nm(name)).await.unwrap();
        assert_eq!(a.kind, FileType::Symlink, "{name}");
        assert_eq!(a.ino.0, fs::symlink_metadata(e.fx.p(name)).unwrap().ino());
        assert_eq!(
            fs_.readlink(&CTX, a.ino).await.unwrap(),
            fs::read_link(e.fx.p(name)).unwrap().into_os_string()
        );
        // Opening a symlink inode fails, in every mode, and with O_TRUNC too.
        for flags in [
            OpenFlags::RDONLY,
            OpenFlags::RDWR,
            OpenFlags::WRONLY.with(libc::O_TRUNC),
            OpenFlags::RDONLY.with(libc::O_NOFOLLOW),
        ] {
            assert!(
                matches!(fs_.open(&CTX, a.ino, flags).await, Err(VfsError::Loop)),
                "{name}"
            );
        }
        let attr = fs_.getattr(&CTX, a.ino, None).await.unwrap();
        assert_eq!(attr.kind, FileType::Symlink);
        assert_ne!(attr.size, SECRET.len() as u64);
        // Creating over the link never opens what it points at.
        assert!(matches!(
            fs_.create(&CTX, Ino::ROOT, nm(name), 0o644, 0, OpenFlags::RDWR.with(libc::O_TRUNC))
                .await,
            Err(VfsError::Loop)
        ));
        let excl = OpenFlags::RDWR.with(libc::O_EXCL);
        assert!(matches!(
            fs_.create(&CTX, Ino::ROOT, nm(name), 0o644, 0, excl).await,
            Err(VfsError::Exists)
        ));
        // Attributes change on the link itself or are refused.
        assert!(matches!(
            fs_.setattr(&CTX, a.ino, SetAttr::size(0)).await,
            Err(VfsError::Invalid(_))
        ));
        assert!(matches!(
            fs_.setattr(&CTX, a.ino, SetAttr::mode(0o777)).await,
            Err(VfsError::Unsupported)
        ));
        let set = SetAttr {
            uid: Some(4242),
            mtime: Some(SetTime::At(crate::Timestamp::new(7, 0))),
            ..SetAttr::default()
        };
        let changed = fs_.setattr(&CTX, a.ino, set).await.unwrap();
        assert_eq!(changed.kind, FileType::Symlink);
        assert_eq!(changed.mtime.secs, 7);
        // xattrs: user.* is refused on symlinks by Linux; trusted.* lands on the link.
        assert!(
            fs_.setxattr(&CTX, a.ino, OsStr::new("user.x"), b"v", XattrSet::Any)
                .await
                .is_err()
        );
        if fs_.inner.creds.is_root {
            fs_.setxattr(&CTX, a.ino, OsStr::new("trusted.x"), b"v", XattrSet::Any)
                .await
                .unwrap();
            assert_eq!(
                &fs_.getxattr(&CTX, a.ino, OsStr::new("trusted.x")).await.unwrap()[..],
                b"v"
            );
            fs_.removexattr(&CTX, a.ino, OsStr::new("trusted.x")).await.unwrap();
        }
        assert!(fs_.getxattr(&CTX, a.ino, OsStr::new("user.x")).await.is_err());
        // A hard link of the symlink is another name for the symlink.
        let l = fs_
            .link(&CTX, a.ino, Ino::ROOT, nm(&format!("{name}.hard")))
            .await
            .unwrap();
        assert_eq!(l.kind, FileType::Symlink);
        assert_eq!(l.ino, a.ino);
    }
    assert_eq!(e.snapshot(), before, "the outside changed");
}

#[tokio::test]
async fn escape_nothing_resolves_under_a_symlinked_directory() {
    let e = Esc::new();
    let before = e.snapshot();
    let fs_ = &e.fx.fs;
    for name in e.dir_links() {
        let l = fs_.lookup(&CTX, Ino::ROOT, nm(name)).await.unwrap();
        assert_eq!(l.kind, FileType::Symlink);
        assert!(matches!(
            fs_.lookup(&CTX, l.ino, nm("secret")).await,
            Err(VfsError::NotDir)
        ));
        assert!(matches!(
            fs_.lookup(&CTX, l.ino, nm("dir")).await,
            Err(VfsError::NotDir)
        ));
        assert!(matches!(fs_.readdir(&CTX, l.ino, 0, 100).await, Err(VfsError::NotDir)));
        assert!(matches!(
            fs_.readdirplus(&CTX, l.ino, 0, 100).await,
            Err(VfsError::NotDir)
        ));
        let excl = OpenFlags::RDWR.with(libc::O_EXCL);
        assert!(matches!(
            fs_.create(&CTX, l.ino, nm("planted"), 0o644, 0, excl).await,
            Err(VfsError::NotDir)
        ));
        assert!(matches!(
            fs_.create(&CTX, l.ino, nm("secret"), 0o644, 0, OpenFlags::RDWR.with(libc::O_TRUNC))
                .await,
            Err(VfsError::NotDir)
        ));
        assert!(matches!(
            fs_.mkdir(&CTX, l.ino, nm("pd"), 0o755, 0).await,
            Err(VfsError::NotDir)
        ));
        assert!(matches!(
            fs_.mknod(&CTX, l.ino, nm("pn"), libc::S_IFIFO | 0o644, 0, 0).await,
            Err(VfsError::NotDir)
        ));
        assert!(matches!(
            fs_.symlink(&CTX, l.ino, nm("ps"), OsStr::new("x")).await,
            Err(VfsError::NotDir)
        ));
        assert!(matches!(
            fs_.unlink(&CTX, l.ino, nm("secret")).await,
            Err(VfsError::NotDir)
        ));
        assert!(matches!(fs_.rmdir(&CTX, l.ino, nm("dir")).await, Err(VfsError::NotDir)));
        assert!(matches!(
            fs_.rename(&CTX, l.ino, nm("secret"), Ino::ROOT, nm("stolen"), RenameFlags::NONE)
                .await,
            Err(VfsError::NotDir)
        ));
        let mine = e.fx.create(Ino::ROOT, &format!("mine-{name}"), b"mine").await;
        assert!(matches!(
            fs_.rename(
                &CTX,
                Ino::ROOT,
                nm(&format!("mine-{name}")),
                l.ino,
                nm("secret"),
                RenameFlags::NONE
            )
            .await,
            Err(VfsError::NotDir)
        ));
        assert!(matches!(
            fs_.rename(
                &CTX,
                Ino::ROOT,
                nm(&format!("mine-{name}")),
                l.ino,
                nm("x"),
                RenameFlags::EXCHANGE
            )
            .await,
            Err(VfsError::NotDir)
        ));
        assert!(matches!(
            fs_.link(&CTX, mine.ino, l.ino, nm("hl")).await,
            Err(VfsError::NotDir)
        ));
    }
    assert_eq!(e.snapshot(), before, "the outside changed");
}

#[tokio::test]
async fn escape_inode_numbers_from_outside_are_stale() {
    let e = Esc::new();
    let before = e.snapshot();
    let fs_ = &e.fx.fs;
    for p in [
        e.outside.join("secret"),
        e.outside.join("dir"),
        e.outside.join("dir/secret"),
    ] {
        let ino = Ino(fs::metadata(&p).unwrap().ino());
        assert!(
            matches!(fs_.getattr(&CTX, ino, None).await, Err(VfsError::Stale)),
            "{p:?}"
        );
        assert!(matches!(
            fs_.open(&CTX, ino, OpenFlags::RDONLY).await,
            Err(VfsError::Stale)
        ));
        assert!(matches!(fs_.readdir(&CTX, ino, 0, 10).await, Err(VfsError::Stale)));
        assert!(matches!(
            fs_.create(&CTX, ino, nm("planted"), 0o644, 0, OpenFlags::RDWR).await,
            Err(VfsError::Stale)
        ));
        assert!(matches!(
            fs_.link(&CTX, ino, Ino::ROOT, nm("pulled-in")).await,
            Err(VfsError::Stale)
        ));
    }
    // The root's parent is not reachable either: `..` of the root is the root.
    let list = fs_.readdir(&CTX, Ino::ROOT, 0, 100).await.unwrap();
    assert_eq!(list.iter().find(|d| d.name == "..").unwrap().ino, Ino::ROOT);
    let parent = Ino(fs::metadata(e.fx.tmp.path()).unwrap().ino());
    assert!(matches!(fs_.readdir(&CTX, parent, 0, 10).await, Err(VfsError::Stale)));
    assert_eq!(e.snapshot(), before, "the outside changed");
}

#[tokio::test]
async fn escape_swap_directory_for_symlink_after_lookup() {
    let e = Esc::new();
    let before = e.snapshot();
    let fs_ = &e.fx.fs;
    fs::create_dir(e.fx.p("d")).unwrap();
    fs::write(e.fx.p("d/secret"), b"inside").unwrap();
    let d = fs_.lookup(&CTX, Ino::ROOT, nm("d")).await.unwrap();

    // The host moves the directory away and puts a symlink to the outside in its place
    // (rename(2) of a symlink over the name, atomically).
    fs::rename(e.fx.p("d"), e.fx.p("d.old")).unwrap();
    symlink("../outside", e.fx.p("d.tmp")).unwrap();
    fs::rename(e.fx.p("d.tmp"), e.fx.p("d")).unwrap();

    // The old inode is still the old directory, wherever it went; the name `d` is a symlink.
    let excl = OpenFlags::RDWR.with(libc::O_EXCL);
    let r = fs_.create(&CTX, d.ino, nm("planted"), 0o644, 0, excl).await;
    if let Ok((a, fh)) = r {
        fs_.release(&CTX, a.ino, fh).await.unwrap();
        assert!(e.fx.p("d.old/planted").exists());
    }
    let _ = fs_.mkdir(&CTX, d.ino, nm("pdir"), 0o755, 0).await;
    let _ = fs_.symlink(&CTX, d.ino, nm("psym"), OsStr::new("/")).await;
    let _ = fs_.mknod(&CTX, d.ino, nm("pfifo"), libc::S_IFIFO | 0o644, 0, 0).await;
    let _ = fs_.unlink(&CTX, d.ino, nm("secret")).await;
    let looked = fs_.lookup(&CTX, d.ino, nm("dir")).await;
    assert!(matches!(looked, Err(VfsError::NotFound)));
    let now = fs_.lookup(&CTX, Ino::ROOT, nm("d")).await.unwrap();
    assert_eq!(now.kind, FileType::Symlink);
    assert!(matches!(
        fs_.lookup(&CTX, now.ino, nm("secret")).await,
        Err(VfsError::NotDir)
    ));
    assert_eq!(e.snapshot(), before, "the outside changed");
}

#[tokio::test]
async fn escape_swap_directory_for_symlink_without_a_kept_descriptor() {
    // Here LocalFs keeps no directory descriptor at all: every directory is reached
    // through its remembered path, which the host swaps for a symlink to the outside.
    let e = Esc::new();
    let before = e.snapshot();
    let fs_ = LocalFs::with_dir_fd_budget(&e.fx.root, Some(0)).unwrap();
    fs::create_dir_all(e.fx.p("a/dir")).unwrap();
    fs::write(e.fx.p("a/secret"), b"inside").unwrap();
    fs::write(e.fx.p("a/dir/secret"), b"inside too").unwrap();
    let a = fs_.lookup(&CTX, Ino::ROOT, nm("a")).await.unwrap();
    let inner_dir = fs_.lookup(&CTX, a.ino, nm("dir")).await.unwrap();
    let file = fs_.lookup(&CTX, a.ino, nm("secret")).await.unwrap();
    let deep = fs_.lookup(&CTX, inner_dir.ino, nm("secret")).await.unwrap();

    // Swap 1: the directory is moved within the root, a symlink to outside takes its name.
    fs::rename(e.fx.p("a"), e.fx.p("a.old")).unwrap();
    symlink("../outside", e.fx.p("a")).unwrap();
    for (ino, want) in [(file.ino, &b"inside"[..]), (deep.ino, &b"inside too"[..])] {
        let data = e.fx.read_all_with(&fs_, ino).await.unwrap();
        assert_not_secret(&data);
        assert_eq!(data, want);
    }
    let (p, fh) = fs_
        .create(&CTX, inner_dir.ino, nm("planted"), 0o644, 0, OpenFlags::RDWR)
        .await
        .unwrap();
    fs_.release(&CTX, p.ino, fh).await.unwrap();
    assert!(e.fx.p("a.old/dir/planted").exists());
    fs_.mkdir(&CTX, a.ino, nm("pdir"), 0o755, 0).await.unwrap();
    assert!(e.fx.p("a.old/pdir").is_dir());

    // Swap 2: the directory is gone for good; only the symlink remains.
    fs::remove_dir_all(e.fx.p("a.old")).unwrap();
    for ino in [a.ino, inner_dir.ino, file.ino, deep.ino] {
        assert!(matches!(fs_.getattr(&CTX, ino, None).await, Err(VfsError::Stale)));
        assert!(matches!(
            fs_.open(&CTX, ino, OpenFlags::RDONLY).await,
            Err(VfsError::Stale)
        ));
    }
    assert!(matches!(
        fs_.create(&CTX, inner_dir.ino, nm("planted2"), 0o644, 0, OpenFlags::RDWR)
            .await,
        Err(VfsError::Stale)
    ));
    assert!(matches!(
        fs_.mkdir(&CTX, a.ino, nm("pdir2"), 0o755, 0).await,
        Err(VfsError::Stale)
    ));
    assert!(matches!(
        fs_.unlink(&CTX, inner_dir.ino, nm("secret")).await,
        Err(VfsError::Stale)
    ));
    assert!(matches!(
        fs_.lookup(&CTX, a.ino, nm("secret")).await,
        Err(VfsError::Stale)
    ));
    assert_eq!(e.snapshot(), before, "the outside changed");
}

#[tokio::test]
async fn escape_swap_file_for_symlink_between_lookup_and_open() {
    let e = Esc::new();
    let before = e.snapshot();
    let fs_ = &e.fx.fs;
    fs::write(e.fx.p("f"), b"inside").unwrap();
    let f = fs_.lookup(&CTX, Ino::ROOT, nm("f")).await.unwrap();
    fs::rename(e.fx.p("f"), e.fx.p("f.old")).unwrap();
    symlink(e.outside.join("secret"), e.fx.p("f")).unwrap();
    // The inode is the file, found again under its new name; never the symlink's target.
    let data = e.fx.read_all(f.ino).await.unwrap();
    assert_eq!(data, b"inside");
    let fh = fs_
        .open(&CTX, f.ino, OpenFlags::WRONLY.with(libc::O_TRUNC))
        .await
        .unwrap();
    fs_.write(&CTX, f.ino, fh, 0, b"overwritten").await.unwrap();
    fs_.release(&CTX, f.ino, fh).await.unwrap();
    assert_eq!(fs::read(e.fx.p("f.old")).unwrap(), b"overwritten");
    fs_.setattr(&CTX, f.ino, SetAttr::size(1)).await.unwrap();
    fs_.setattr(&CTX, f.ino, SetAttr::mode(0o600)).await.unwrap();
    fs_.setxattr(&CTX, f.ino, OsStr::new("user.k"), b"v", XattrSet::Any)
        .await
        .unwrap();
    assert_eq!(fs::metadata(e.fx.p("f.old")).unwrap().len(), 1);
    // The name `f` is the symlink now.
    let l = fs_.lookup(&CTX, Ino::ROOT, nm("f")).await.unwrap();
    assert_eq!(l.kind, FileType::Symlink);
    assert!(matches!(
        fs_.open(&CTX, l.ino, OpenFlags::RDONLY).await,
        Err(VfsError::Loop)
    ));
    assert_eq!(e.snapshot(), before, "the outside changed");
}

#[tokio::test]
async fn escape_rename_and_unlink_of_links_touch_only_the_links() {
    let e = Esc::new();
    let before = e.snapshot();
    let fs_ = &e.fx.fs;
    fs_.rename(
        &CTX,
        Ino::ROOT,
        nm("abs_link"),
        Ino::ROOT,
        nm("renamed"),
        RenameFlags::NONE,
    )
    .await
    .unwrap();
    assert!(
        fs::symlink_metadata(e.fx.p("renamed"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    e.fx.create(Ino::ROOT, "plain", b"plain").await;
    fs_.rename(
        &CTX,
        Ino::ROOT,
        nm("plain"),
        Ino::ROOT,
        nm("rel_link"),
        RenameFlags::NONE,
    )
    .await
    .unwrap();
    assert_eq!(fs::read(e.fx.p("rel_link")).unwrap(), b"plain");
    fs_.rename(
        &CTX,
        Ino::ROOT,
        nm("renamed"),
        Ino::ROOT,
        nm("dir_link"),
        RenameFlags::EXCHANGE,
    )
    .await
    .unwrap();
    fs_.unlink(&CTX, Ino::ROOT, nm("renamed")).await.unwrap();
    fs_.unlink(&CTX, Ino::ROOT, nm("dir_link")).await.unwrap();
    assert!(matches!(
        fs_.rmdir(&CTX, Ino::ROOT, nm("abs_dir_link")).await,
        Err(VfsError::NotDir)
    ));
    fs_.unlink(&CTX, Ino::ROOT, nm("abs_dir_link")).await.unwrap();
    assert_eq!(e.snapshot(), before, "the outside changed");
}

#[tokio::test]
async fn escape_walk_never_follows_links_out() {
    // A fresh instance looking for an inode it does not know walks the tree; symlinked
    // directories (and a symlink loop) must neither be entered nor hang the walk.
    let e = Esc::new();
    symlink(".", e.fx.p("self_loop")).unwrap();
    fs::create_dir(e.fx.p("real")).unwrap();
    symlink("..", e.fx.p("real/parent_loop")).unwrap();
    let fs2 = LocalFs::new(&e.fx.root).unwrap();
    let outside_secret = Ino(fs::metadata(e.outside.join("dir/secret")).unwrap().ino());
    assert!(matches!(
        fs2.getattr(&CTX, outside_secret, None).await,
        Err(VfsError::Stale)
    ));
    // Listing the root shows the links as links.
    let plus = fs2.readdirplus(&CTX, Ino::ROOT, 0, 100).await.unwrap();
    for name in e.links().into_iter().chain(e.dir_links()) {
        let entry = plus.iter().find(|p| p.entry.name == name).unwrap();
        assert_eq!(entry.attr.kind, FileType::Symlink);
        assert_eq!(entry.entry.kind, FileType::Symlink);
    }
}

impl Fx {
    async fn read_all_with(&self, fs_: &LocalFs, ino: Ino) -> VfsResult<Vec<u8>> {
        let fh = fs_.open(&CTX, ino, OpenFlags::RDONLY).await?;
        let data = fs_.read(&CTX, ino, fh, 0, 1 << 20).await;
        fs_.release(&CTX, ino, fh).await?;
        Ok(data?.to_vec())
    }
}
