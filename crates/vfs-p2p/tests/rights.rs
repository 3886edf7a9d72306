//! Who a peer acts as and what it may do on the owner, over
//! the real transport on loopback, against a `LocalFs` share in a temporary directory:
//!
//! - a peer claiming uid 0 creates a file in a share owned by an unprivileged user: the
//!   file belongs to that user; setuid, setgid files and device nodes are refused (`EPERM`);
//!   a file of root's in the share cannot be written;
//! - a share owned by root, with the default identity, acts as `nobody`, never root;
//! - a read-only key's changes all fail with `EROFS` and the owner's bytes are unchanged
//!   (sha256), while a read-write key on the same exporter writes;
//! - a reloaded key list applies to a link already up; a removed key's link is closed;
//! - the far side's id mapping shows every file as the mounting user's.
//!
//! The ownership tests need root (to chown the share to an unprivileged user); they say
//! SKIP and pass otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::CTX;
use vfs_core::localfs::LocalFs;
use vfs_core::{Errno, Ino, Name, OpenFlags, RenameFlags, SetAttr, VfsResult, VirtualFs, XattrSet};
use vfs_p2p::exporter::{ExportConfig, PeerIdentity, PeerPolicy};
use vfs_p2p::identity::{Allowlist, Keypair, KeysFileError, Right, parse_keys_file};
use vfs_p2p::loopback::Loopback;
use vfs_p2p::remote::{IdMap, RemoteConfig, RemoteFs};

/// The unprivileged owner of the test shares.
const OWNER: u32 = 4242;

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn name(s: &str) -> Name<'_> {
    Name::new(OsStr::new(s)).unwrap()
}

fn errno<T: std::fmt::Debug>(r: VfsResult<T>) -> Errno {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.errno(),
    }
}

fn sha256(path: &Path) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(path).unwrap());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A share directory owned by `OWNER:OWNER`, mode 0755.
fn owned_share() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(OWNER), Some(OWNER)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn serve(dir: &Path, peers: PeerPolicy) -> Loopback<LocalFs> {
    let cfg = ExportConfig {
        peers,
        ..ExportConfig::default()
    };
    Loopback::serve(LocalFs::new(dir).unwrap(), cfg).unwrap()
}

#[test]
fn a_peer_claiming_root_acts_as_the_owner_of_the_share() {
    if !is_root() {
        eprintln!("SKIP: chowning the share to an unprivileged user needs root");
        return;
    }
    let dir = owned_share();
    std::fs::write(dir.path().join("roots.txt"), b"root's bytes").unwrap();
    std::fs::set_permissions(dir.path().join("roots.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = sha256(&dir.path().join("roots.txt"));
    let lb = serve(dir.path(), PeerPolicy::default());
    let far = lb.connect(RemoteConfig::default()).unwrap();
    assert_eq!(CTX.uid, 0, "the far side claims root");
    lb.block_on(async {
        // A file made by a peer claiming uid 0 belongs to the share's owner.
        let (a, fh) = far
            .create(&CTX, Ino::ROOT, name("made.txt"), 0o644, 0, OpenFlags::RDWR)
            .await
            .unwrap();
        far.write(&CTX, a.ino, fh, 0, b"from the peer").await.unwrap();
        far.release(&CTX, a.ino, fh).await.unwrap();
        let d = far.mkdir(&CTX, Ino::ROOT, name("sub"), 0o755, 0).await.unwrap();
        assert_eq!((a.uid, a.gid, d.uid, d.gid), (OWNER, OWNER, OWNER, OWNER));

        // setuid and setgid: refused on create and on chmod.
        let r = far
            .create(&CTX, Ino::ROOT, name("suid"), 0o4755, 0, OpenFlags::RDWR)
            .await;
        assert_eq!(errno(r), Errno::EPERM);
        let r = far.setattr(&CTX, a.ino, SetAttr::mode(0o4755)).await;
        assert_eq!(errno(r), Errno::EPERM);
        let r = far.setattr(&CTX, a.ino, SetAttr::mode(0o2755)).await;
        assert_eq!(errno(r), Errno::EPERM);
        // A plain chmod of its own file works.
        far.setattr(&CTX, a.ino, SetAttr::mode(0o600)).await.unwrap();
        // Device nodes: refused; a fifo is fine.
        let r = far
            .mknod(
                &CTX,
                Ino::ROOT,
                name("null"),
                libc::S_IFCHR | 0o666,
                0,
                libc::makedev(1, 3),
            )
            .await;
        assert_eq!(errno(r), Errno::EPERM);
        far.mknod(&CTX, Ino::ROOT, name("fifo"), libc::S_IFIFO | 0o644, 0, 0)
            .await
            .unwrap();
        // Giving the file away is refused.
        let r = far
            .setattr(
                &CTX,
                a.ino,
                SetAttr {
                    uid: Some(0),
                    ..SetAttr::default()
                },
            )
            .await;
        assert_eq!(errno(r), Errno::EPERM);

        // Root's file in the share: not writable by the owner's identity.
        let roots = far.lookup(&CTX, Ino::ROOT, name("roots.txt")).await.unwrap();
        assert_eq!(errno(far.open(&CTX, roots.ino, OpenFlags::WRONLY).await), Errno::EACCES);
        let r = far.setattr(&CTX, roots.ino, SetAttr::size(0)).await;
        assert_eq!(errno(r), Errno::EACCES);
        let r = far.setattr(&CTX, roots.ino, SetAttr::mode(0o666)).await;
        assert_eq!(errno(r), Errno::EPERM);
    });
    let host = dir.path().join("made.txt");
    let md = std::fs::metadata(&host).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (OWNER, OWNER),
        "owner of the peer's file on the host"
    );
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(&host).unwrap(), b"from the peer");
    assert_eq!(std::fs::metadata(dir.path().join("sub")).unwrap().uid(), OWNER);
    assert_eq!(std::fs::metadata(dir.path().join("fifo")).unwrap().uid(), OWNER);
    assert!(!dir.path().join("suid").exists(), "the refused setuid file was made");
    assert!(!dir.path().join("null").exists(), "the refused device node was made");
    assert_eq!(sha256(&dir.path().join("roots.txt")), before, "root's file changed");
    eprintln!(
        "peer claiming uid 0: made.txt is {}:{}, setuid/setgid/device EPERM",
        md.uid(),
        md.gid()
    );
}

#[test]
fn setid_and_devices_pass_only_when_the_owner_allows_them() {
    if !is_root() {
        eprintln!("SKIP: making device nodes needs root");
        return;
    }
    let dir = owned_share();
    let lb = serve(
        dir.path(),
        PeerPolicy {
            allow_setid: true,
            allow_devices: true,
            ..PeerPolicy::default()
        },
    );
    let far = lb.connect(RemoteConfig::default()).unwrap();
    lb.block_on(async {
        let (a, fh) = far
            .create(&CTX, Ino::ROOT, name("suid"), 0o4755, 0, OpenFlags::RDWR)
            .await
            .unwrap();
        far.release(&CTX, a.ino, fh).await.unwrap();
        assert_eq!(u32::from(a.perm) & 0o7777, 0o4755);
        assert_eq!(a.uid, OWNER, "a setuid file of the owner's identity, not root's");
    });
}

#[test]
fn a_root_owned_share_acts_as_nobody_by_default() {
    if !is_root() {
        eprintln!("SKIP: a root-owned share needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("r.txt"), b"r").unwrap();
    let lb = serve(dir.path(), PeerPolicy::default());
    let far = lb.connect(RemoteConfig::default()).unwrap();
    lb.block_on(async {
        let r = far.create(&CTX, Ino::ROOT, name("x"), 0o644, 0, OpenFlags::RDWR).await;
        assert_eq!(errno(r), Errno::EACCES, "nobody may not write root's directory");
        // Reading what others may read works.
        let a = far.lookup(&CTX, Ino::ROOT, name("r.txt")).await.unwrap();
        let fh = far.open(&CTX, a.ino, OpenFlags::RDONLY).await.unwrap();
        assert_eq!(&far.read(&CTX, a.ino, fh, 0, 10).await.unwrap()[..], b"r");
        far.release(&CTX, a.ino, fh).await.unwrap();
    });
    assert!(!dir.path().join("x").exists());
    // An explicit root identity does write.
    let lb = serve(
        dir.path(),
        PeerPolicy {
            identity: PeerIdentity::Root,
            ..PeerPolicy::default()
        },
    );
    let far = lb.connect(RemoteConfig::default()).unwrap();
    lb.block_on(async {
        let (a, fh) = far
            .create(&CTX, Ino::ROOT, name("x"), 0o644, 0, OpenFlags::RDWR)
            .await
            .unwrap();
        far.release(&CTX, a.ino, fh).await.unwrap();
        assert_eq!(a.uid, 0);
    });
}

/// Every change a read-only key could ask for, each of which must be `EROFS`.
async fn every_change_is_erofs(far: &RemoteFs) -> usize {
    let file = far.lookup(&CTX, Ino::ROOT, name("data.bin")).await.unwrap();
    let dir = far.lookup(&CTX, Ino::ROOT, name("d")).await.unwrap();
    let mut n = 0;
    let mut is_erofs = |what: &str, e: Errno| {
        assert_eq!(e, Errno::EROFS, "{what} from a read-only key");
        n += 1;
    };
    is_erofs(
        "open O_WRONLY",
        errno(far.open(&CTX, file.ino, OpenFlags::WRONLY).await),
    );
    is_erofs("open O_RDWR", errno(far.open(&CTX, file.ino, OpenFlags::RDWR).await));
    is_erofs(
        "open O_TRUNC",
        errno(
            far.open(&CTX, file.ino, OpenFlags(libc::O_RDONLY | libc::O_TRUNC))
                .await,
        ),
    );
    is_erofs(
        "create",
        errno(
            far.create(&CTX, Ino::ROOT, name("new"), 0o644, 0, OpenFlags::RDWR)
                .await,
        ),
    );
    is_erofs("mkdir", errno(far.mkdir(&CTX, Ino::ROOT, name("nd"), 0o755, 0).await));
    is_erofs(
        "mknod",
        errno(far.mknod(&CTX, Ino::ROOT, name("f"), libc::S_IFIFO | 0o644, 0, 0).await),
    );
    is_erofs(
        "symlink",
        errno(far.symlink(&CTX, Ino::ROOT, name("l"), OsStr::new("data.bin")).await),
    );
    is_erofs("link", errno(far.link(&CTX, file.ino, Ino::ROOT, name("hard")).await));
    is_erofs(
        "rename",
        errno(
            far.rename(
                &CTX,
                Ino::ROOT,
                name("data.bin"),
                Ino::ROOT,
                name("moved"),
                RenameFlags::NONE,
            )
            .await,
        ),
    );
    is_erofs("unlink", errno(far.unlink(&CTX, Ino::ROOT, name("data.bin")).await));
    is_erofs("rmdir", errno(far.rmdir(&CTX, Ino::ROOT, name("d")).await));
    is_erofs("truncate", errno(far.setattr(&CTX, file.ino, SetAttr::size(0)).await));
    is_erofs("chmod", errno(far.setattr(&CTX, dir.ino, SetAttr::mode(0o777)).await));
    is_erofs(
        "setxattr",
        errno(
            far.setxattr(&CTX, file.ino, OsStr::new("user.x"), b"1", XattrSet::Any)
                .await,
        ),
    );
    is_erofs(
        "removexattr",
        errno(far.removexattr(&CTX, file.ino, OsStr::new("user.keep")).await),
    );
    n
}

#[test]
fn a_read_only_key_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    let bytes: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&data, &bytes).unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    xattr_set(&data, "user.keep", b"v");
    let before = sha256(&data);
    let listing = |p: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    let names_before = listing(dir.path());
    let mode_before = std::fs::metadata(dir.path().join("d")).unwrap().mode();

    let reader = Arc::new(Keypair::generate().unwrap());
    let keys = Allowlist::with_rights([(reader.public(), Right::ReadOnly)]);
    let lb = serve(
        dir.path(),
        PeerPolicy {
            keys: Some(keys),
            identity: PeerIdentity::Root,
            ..PeerPolicy::default()
        },
    );
    let ro = lb.connect_with(reader, RemoteConfig::default()).unwrap();
    let n = lb.block_on(async {
        let n = every_change_is_erofs(&ro).await;
        // Reading works.
        let a = ro.lookup(&CTX, Ino::ROOT, name("data.bin")).await.unwrap();
        let fh = ro.open(&CTX, a.ino, OpenFlags::RDONLY).await.unwrap();
        assert_eq!(&ro.read(&CTX, a.ino, fh, 0, 4096).await.unwrap()[..], &bytes[..4096]);
        ro.release(&CTX, a.ino, fh).await.unwrap();
        assert_eq!(errno(ro.access(&CTX, a.ino, 2).await), Errno::EROFS, "access(W_OK)");
        ro.access(&CTX, a.ino, 4).await.unwrap();
        n
    });
    assert_eq!(sha256(&data), before, "the owner's bytes changed");
    assert_eq!(listing(dir.path()), names_before, "the owner's names changed");
    assert_eq!(std::fs::metadata(dir.path().join("d")).unwrap().mode(), mode_before);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), bytes.len() as u64);
    // The loopback's own key is read-write on the same exporter: it can write.
    let rw = lb.connect(RemoteConfig::default()).unwrap();
    lb.block_on(async {
        let (a, fh) = rw
            .create(&CTX, Ino::ROOT, name("rw.txt"), 0o644, 0, OpenFlags::RDWR)
            .await
            .unwrap();
        rw.write(&CTX, a.ino, fh, 0, b"rw").await.unwrap();
        rw.release(&CTX, a.ino, fh).await.unwrap();
    });
    assert_eq!(std::fs::read(dir.path().join("rw.txt")).unwrap(), b"rw");
    eprintln!("read-only key: {n} kinds of change, each EROFS; data.bin sha256 {before} before and after");
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr on the host: {}", std::io::Error::last_os_error());
}

#[test]
fn a_reloaded_key_list_applies_to_links_already_up() {
    let dir = tempfile::tempdir().unwrap();
    let other = Arc::new(Keypair::generate().unwrap());
    let keys = Allowlist::with_rights([(other.public(), Right::ReadWrite)]);
    let lb = serve(
        dir.path(),
        PeerPolicy {
            keys: Some(keys.clone()),
            identity: PeerIdentity::Root,
            ..PeerPolicy::default()
        },
    );
    let far = lb.connect_with(Arc::clone(&other), RemoteConfig::default()).unwrap();
    let mkdir = |n: &'static str| lb.block_on(far.mkdir(&CTX, Ino::ROOT, name(n), 0o755, 0)).map(drop);
    mkdir("a").unwrap();
    // Made read-only while connected: the next change is EROFS, on the same link.
    keys.replace([(other.public(), Right::ReadOnly)]);
    assert_eq!(errno(mkdir("b")), Errno::EROFS);
    assert!(!dir.path().join("b").exists());
    // Removed: its link is closed and its requests refused.
    keys.replace([]);
    assert_eq!(lb.exporter.close_unallowed(), 1);
    let cfg = RemoteConfig {
        down_wait: Duration::from_millis(300),
        ..RemoteConfig::default()
    };
    drop(far);
    let again = lb.connect_with(other, cfg);
    assert!(again.is_err(), "a removed key connected again");
}

#[test]
fn the_far_side_shows_files_as_the_mounting_users() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let lb = Loopback::serve(LocalFs::new(dir.path()).unwrap(), ExportConfig::trusted()).unwrap();
    let cfg = RemoteConfig {
        idmap: IdMap::User { uid: 1234, gid: 5678 },
        ..RemoteConfig::default()
    };
    let far = lb.connect(cfg).unwrap();
    let raw = lb.connect(RemoteConfig::default()).unwrap();
    lb.block_on(async {
        let a = far.lookup(&CTX, Ino::ROOT, name("f")).await.unwrap();
        assert_eq!((a.uid, a.gid), (1234, 5678));
        let a = far.getattr(&CTX, Ino::ROOT, None).await.unwrap();
        assert_eq!((a.uid, a.gid), (1234, 5678));
        let page = far.readdirplus(&CTX, Ino::ROOT, 0, 64).await.unwrap();
        assert!(page.iter().all(|e| (e.attr.uid, e.attr.gid) == (1234, 5678)));
        // A chown "to me" is not sent: the owner's file keeps its owner.
        let a = far.lookup(&CTX, Ino::ROOT, name("f")).await.unwrap();
        far.setattr(
            &CTX,
            a.ino,
            SetAttr {
                uid: Some(1234),
                gid: Some(5678),
                ..SetAttr::default()
            },
        )
        .await
        .unwrap();
        let r = raw.lookup(&CTX, Ino::ROOT, name("f")).await.unwrap();
        // SAFETY: geteuid and getegid cannot fail.
        let me = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!((r.uid, r.gid), me, "the raw view shows the owner's ids");
    });
}

#[test]
fn keys_files_parse_strictly() {
    let a = Keypair::generate().unwrap().public();
    let b = Keypair::generate().unwrap().public();
    let text = format!("# peers\n{a} rw\n\n  {b}   read-only  \n{a} ro\n");
    let keys = parse_keys_file(&text).unwrap();
    assert_eq!(
        keys,
        vec![(a, Right::ReadWrite), (b, Right::ReadOnly), (a, Right::ReadOnly)]
    );
    // A key given twice keeps the narrower right.
    assert_eq!(Allowlist::with_rights(keys).right(&a), Some(Right::ReadOnly));
    for (bad, line) in [
        (format!("{a}\n"), 1),
        (format!("{a} rw\n{b} admin\n"), 2),
        (format!("{a} rw extra\n"), 1),
        ("not-a-key rw\n".to_string(), 1),
    ] {
        match parse_keys_file(&bad) {
            Err(KeysFileError::Syntax { line: l, .. }) | Err(KeysFileError::Key { line: l, .. }) => {
                assert_eq!(l, line, "{bad:?}")
            }
            Ok(k) => panic!("{bad:?} parsed as {k:?}"),
        }
    }
}
