//! `examples/p2p.rs` as two processes: `p2p share` in one, the far side in another (this
//! test process with a `RemoteFs`, and `p2p mount` through FUSE when the machine allows):
//! keys, sharing, mounting, an owner that dies and comes back, a refused key, SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfs_core::{Ino, Name, OpenFlags, RequestCtx, VirtualFs};
use vfs_p2p::identity::{Keypair, PublicKey};
use vfs_p2p::remote::{RemoteConfig, RemoteFs};
use vfs_p2p::transport::noise::NoiseTcp;

/// The example binary, built by cargo with the tests (built here if it is missing).
fn p2p_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join("p2p");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--example", "p2p"]);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building the p2p example failed");
    }
    bin
}

fn free_port() -> u16 {
    for port in (47500..=47999).rev() {
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 47500..=47999");
}

fn key(bin: &Path, file: &Path) -> String {
    let out = Command::new(bin)
        .arg("key")
        .arg("--key-file")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "p2p key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    text.trim().to_owned()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn share(bin: &Path, dir: &Path, port: u16, allow: &str, key_file: &Path) -> Proc {
    let child = Command::new(bin)
        .arg("share")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--allow", allow, "--key-file"])
        .arg(key_file)
        // The share directory is a root-owned temporary directory and these tests act as
        // root on the far side: say so, as the user of a root share must.
        .arg("--as-root")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "share did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

fn signal(p: &Proc, sig: i32) {
    // SAFETY: kill(2) on a child we own; no memory is touched.
    unsafe {
        libc::kill(p.0.id() as i32, sig);
    }
}

fn wait_exit(p: &mut Proc, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "process did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this machine can mount FUSE filesystems; prints why not when it cannot.
fn fuse_usable() -> bool {
    vfs_fuse::probe::fuse_usable()
        .map_err(|e| eprintln!("SKIP: {e}; FUSE mount tests not run"))
        .is_ok()
}

fn is_mounted(path: &Path) -> bool {
    vfs_fuse::probe::is_mounted(path).unwrap()
}

#[test]
fn key_prints_one_line_and_keeps_the_file_private() {
    let bin = p2p_bin();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("conf/key");
    let k1 = key(&bin, &file);
    assert_eq!(key(&bin, &file), k1, "the key is made once");
    assert!(k1.parse::<PublicKey>().is_ok());
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let help = Command::new(&bin).args(["mount", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--peer-key") && help.contains("p2p key"), "{help}");
}

#[test]
fn share_in_one_process_far_side_in_another() {
    let bin = p2p_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shared");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/hello"), b"hello from the owner").unwrap();
    let (ka, kb) = (tmp.path().join("a.key"), tmp.path().join("b.key"));
    let (key_a, key_b) = (key(&bin, &ka), key(&bin, &kb));
    let port = free_port();
    let _owner = share(&bin, &dir, port, &key_b, &ka);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let b = Arc::new(Keypair::load_or_create(&kb).unwrap().0);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let remote = rt
        .block_on(RemoteFs::connect(
            NoiseTcp::new(b),
            addr,
            key_a.parse().unwrap(),
            RemoteConfig::default(),
        ))
        .unwrap();
    let ctx = RequestCtx::ROOT;
    rt.block_on(async {
        let sub = remote
            .lookup(&ctx, Ino::ROOT, Name::new("sub".as_ref()).unwrap())
            .await
            .unwrap();
        let f = remote
            .lookup(&ctx, sub.ino, Name::new("hello".as_ref()).unwrap())
            .await
            .unwrap();
        let fh = remote.open(&ctx, f.ino, OpenFlags::RDONLY).await.unwrap();
        assert_eq!(
            &remote.read(&ctx, f.ino, fh, 0, 100).await.unwrap()[..],
            b"hello from the owner"
        );
        remote.release(&ctx, f.ino, fh).await.unwrap();
        let (a, fh) = remote
            .create(
                &ctx,
                sub.ino,
                Name::new("back".as_ref()).unwrap(),
                0o644,
                0,
                OpenFlags::RDWR,
            )
            .await
            .unwrap();
        remote
            .write(&ctx, a.ino, fh, 0, b"written by the far side")
            .await
            .unwrap();
        remote.fsync(&ctx, a.ino, fh, false).await.unwrap();
        remote.release(&ctx, a.ino, fh).await.unwrap();
    });
    assert_eq!(std::fs::read(dir.join("sub/back")).unwrap(), b"written by the far side");

    // A key the owner does not allow: the mount command says so on one line, exit 1.
    let stranger = tmp.path().join("stranger.key");
    let out = Command::new(&bin)
        .arg("mount")
        .arg(tmp.path())
        .args(["--peer", &addr.to_string(), "--peer-key", &key_a, "--key-file"])
        .arg(&stranger)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains("refused"), "{err}");
}

#[test]
fn far_mount_survives_an_owner_restart_and_unmounts_on_sigterm() {
    if !fuse_usable() {
        eprintln!("SKIP: needs root and /dev/fuse");
        return;
    }
    let bin = p2p_bin();
    let tmp = tempfile::tempdir().unwrap();
    let (dir, mnt) = (tmp.path().join("shared"), tmp.path().join("mnt"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::write(dir.join("f"), b"before").unwrap();
    let (ka, kb) = (tmp.path().join("a.key"), tmp.path().join("b.key"));
    let (key_a, key_b) = (key(&bin, &ka), key(&bin, &kb));
    let port = free_port();
    let mut owner = share(&bin, &dir, port, &key_b, &ka);
    let mut far = Proc(
        Command::new(&bin)
            .arg("mount")
            .arg(&mnt)
            .args([
                "--peer",
                &format!("127.0.0.1:{port}"),
                "--peer-key",
                &key_a,
                "--key-file",
            ])
            .arg(&kb)
            .args(["--down-wait", "2"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !is_mounted(&mnt) {
        assert!(start.elapsed() < Duration::from_secs(10), "not mounted");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"before");
    std::fs::write(mnt.join("g"), b"from the mount").unwrap();
    assert_eq!(std::fs::read(dir.join("g")).unwrap(), b"from the mount");

    // The owner dies: operations fail with EIO within the documented bound.
    signal(&owner, libc::SIGKILL);
    wait_exit(&mut owner, Duration::from_secs(5));
    let t = Instant::now();
    let e = std::fs::read(mnt.join("f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "EIO after {:?}", t.elapsed());

    // It comes back (same key, same address): the mount reconnects by itself.
    std::fs::write(dir.join("f"), b"after").unwrap();
    let _owner2 = share(&bin, &dir, port, &key_b, &ka);
    let t = Instant::now();
    loop {
        if std::fs::read(mnt.join("f")).ok().as_deref() == Some(&b"after"[..]) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no reconnection");
        std::thread::sleep(Duration::from_millis(50));
    }

    signal(&far, libc::SIGTERM);
    let status = wait_exit(&mut far, Duration::from_secs(10));
    assert!(status.success(), "mount exited with {status}");
    assert!(!is_mounted(&mnt), "still mounted after SIGTERM");
}
