//! The far side mounted through FUSE in this process, the owner a `LocalFs` share edited
//! directly on the host: what a program on the far mount sees, and when. The kernel's
//! caches are invalidated through the mount's invalidator (from its own thread).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfs_core::localfs::LocalFs;
use vfs_fuse::MountOptions;
use vfs_p2p::exporter::ExportConfig;
use vfs_p2p::exporter::watch::HostWatcher;
use vfs_p2p::loopback::Loopback;
use vfs_p2p::remote::RemoteConfig;

/// Polls `check` every 20 ms; returns how long until it held (or panics after `limit`).
fn within(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            let took = start.elapsed();
            eprintln!("{what}: {took:?}");
            return took;
        }
        assert!(start.elapsed() < limit, "{what}: not seen within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

#[test]
fn owner_side_changes_reach_the_far_mount() {
    if !common::fuse_usable() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (host, mnt) = (tmp.path().join("host"), tmp.path().join("mnt"));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::write(host.join("f"), vec![b'a'; 10_000]).unwrap();

    let lb = Loopback::serve(LocalFs::new(&host).unwrap(), ExportConfig::trusted()).unwrap();
    let _watch = HostWatcher::start(&host, lb.exporter.changes()).unwrap();
    let fs = Arc::new(lb.connect(RemoteConfig::default()).unwrap());
    let mount = vfs_fuse::mount(Arc::clone(&fs), &mnt, &MountOptions::default()).unwrap();
    fs.set_invalidator(mount.invalidator());

    // Content changes (same size): the far mount reads the new bytes.
    assert_eq!(read(&mnt.join("f")).unwrap(), vec![b'a'; 10_000]);
    std::fs::write(host.join("f"), vec![b'b'; 10_000]).unwrap();
    let took = within("rewrite seen on the far mount", Duration::from_secs(3), || {
        read(&mnt.join("f")) == Some(vec![b'b'; 10_000])
    });
    assert!(took < Duration::from_secs(3));

    // Through a descriptor kept open on the far side (attributes invalidated, pages kept
    // until the kernel sees the new mtime).
    let mut open = std::fs::File::open(mnt.join("f")).unwrap();
    std::fs::write(host.join("f"), vec![b'c'; 12_000]).unwrap();
    within(
        "rewrite seen through an open descriptor",
        Duration::from_secs(3),
        || {
            let mut buf = Vec::new();
            open.seek(SeekFrom::Start(0)).unwrap();
            open.read_to_end(&mut buf).is_ok() && buf == vec![b'c'; 12_000]
        },
    );

    // A name looked up before it existed appears once created (no stale absence).
    assert!(!mnt.join("late").exists());
    std::fs::write(host.join("late"), b"here").unwrap();
    within("a file created on the owner appears", Duration::from_secs(3), || {
        read(&mnt.join("late")).as_deref() == Some(&b"here"[..])
    });

    // git: a temp the far side never saw, renamed into place, with bytes appended after
    // its close (index-pack's checksum).
    std::fs::create_dir_all(host.join("objects/pack")).unwrap();
    let tmp_pack = host.join("objects/pack/tmp_pack_x");
    std::fs::write(&tmp_pack, vec![7u8; 300_000]).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&tmp_pack).unwrap();
        f.write_all(&[9u8; 20]).unwrap();
    }
    std::fs::rename(&tmp_pack, host.join("objects/pack/pack-1.pack")).unwrap();
    within(
        "a renamed temp materializes on the far mount",
        Duration::from_secs(3),
        || read(&mnt.join("objects/pack/pack-1.pack")).is_some_and(|b| b.len() == 300_020 && b[300_000..] == [9u8; 20]),
    );

    // The far side writes: the owner has the bytes when close returns.
    std::fs::write(mnt.join("from-far"), b"written on the far side").unwrap();
    assert_eq!(read(&host.join("from-far")).unwrap(), b"written on the far side");
    std::fs::rename(mnt.join("from-far"), mnt.join("objects/renamed")).unwrap();
    assert_eq!(read(&host.join("objects/renamed")).unwrap(), b"written on the far side");

    // Removal on the owner: gone on the far mount.
    std::fs::remove_file(host.join("late")).unwrap();
    within("a removal reaches the far mount", Duration::from_secs(3), || {
        !mnt.join("late").exists()
    });

    drop(open);
    mount.unmount().unwrap();
}

/// git on the far mount, in a repository the owner made: stage and commit a file from a
/// working directory on the mount. Pins a bug the two-host git test found: every change
/// note for a directory (its mtime moves when an entry is added) made the far side drop
/// the directory's *entry* in the kernel, not only its attributes; with git working in that
/// directory, its getcwd() then failed with ENOENT ("fatal: unable to get current working
/// directory") and the commit was lost. A change in place now invalidates only the
/// inode's attributes and data; the name keeps its entry.
#[test]
fn git_commits_from_a_working_directory_on_the_far_mount() {
    use std::process::Command;

    if !common::fuse_usable() {
        return;
    }
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .expect("git is installed (scripts/test installs it)");
        assert!(
            out.status.success(),
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (host, mnt) = (tmp.path().join("host"), tmp.path().join("mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    let repo = host.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    for i in 0..20 {
        std::fs::write(repo.join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "on the owner"]);

    let lb = Loopback::serve(LocalFs::new(&host).unwrap(), ExportConfig::trusted()).unwrap();
    let _watch = HostWatcher::start(&host, lb.exporter.changes()).unwrap();
    let fs = Arc::new(lb.connect(RemoteConfig::default()).unwrap());
    let mount = vfs_fuse::mount(Arc::clone(&fs), &mnt, &MountOptions::default()).unwrap();
    fs.set_invalidator(mount.invalidator());

    let far = mnt.join("repo");
    assert_eq!(git(&far, &["status", "--porcelain"]), "");
    std::fs::write(far.join("from-far.txt"), b"far\n").unwrap();
    git(&far, &["add", "from-far.txt"]);
    git(&far, &["status", "--porcelain"]);
    git(&far, &["commit", "-qm", "on the far side"]);
    let head = git(&far, &["rev-parse", "HEAD"]);
    assert_eq!(
        git(&repo, &["rev-parse", "HEAD"]),
        head,
        "the far side's commit is not on the owner"
    );
    assert_eq!(git(&repo, &["log", "-1", "--format=%s"]), "on the far side");
    git(&repo, &["fsck", "--full", "--strict"]);
    mount.unmount().unwrap();
}
