//! The installed `vfs` program, run as a user runs it: `--version`, `--help`, a background
//! mount that is up when the command returns, the `mount.fuse3` helper form, and one-line
//! errors for bad options. Every mount is unmounted by a guard, also on panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const VFS: &str = env!("CARGO_BIN_EXE_vfs");
/// "Read-only file system".
const EROFS: i32 = 30;

fn vfs(args: &[&str]) -> Output {
    Command::new(VFS).args(args).output().expect("run vfs")
}

fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let p = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(p))
}

/// Whether this machine can mount FUSE (a test that needs it says so and passes).
fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists();
    if !ok {
        eprintln!("skipped: no /dev/fuse");
    }
    ok
}

/// Unmounts `0` when dropped (a panicking test leaves no mount behind).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.0).status();
        }
    }
}

/// Unmounts like a user (`fusermount3 -u`) and waits (bounded) for the mount to go.
fn unmount(path: &Path) {
    let st = Command::new("fusermount3").arg("-u").arg(path).status().unwrap();
    assert!(st.success(), "fusermount3 -u {}", path.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    while mounted(path) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!mounted(path), "still mounted");
}

fn one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success(), "must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: ") && err.contains(needle), "{err:?}");
}

#[test]
fn version_and_help() {
    let out = vfs(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("vfs {}", env!("CARGO_PKG_VERSION"))
    );
    let out = vfs(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["mount", "nfs", "p2p", "--log-file", "fuse.vfs"] {
        assert!(help.contains(word), "--help mentions {word}: {help}");
    }
    let out = vfs(&["mount", "memfs", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && help.contains("--foreground") && help.contains("--read-only"),
        "{help}"
    );
}

/// The command returns only once the mount is up: the very next read finds the file.
/// Also pins that LocalFs is opened after the fork: opened before, its `/proc/self/fd`
/// named the parent, which had exited, and every open failed with ENOENT.
#[test]
fn background_mount_is_up_when_the_command_returns() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, mnt) = (dir.path().join("src"), dir.path().join("mnt"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::write(src.join("f"), b"data\n").unwrap();
    let _guard = Unmount(mnt.clone());
    let out = vfs(&["mount", "local", src.to_str().unwrap(), mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(mounted(&mnt), "mounted when vfs returned");
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"data\n");
    std::fs::write(mnt.join("g"), b"new").unwrap();
    assert_eq!(std::fs::read(src.join("g")).unwrap(), b"new");
    unmount(&mnt);
}

#[test]
fn bad_options_and_failed_mounts_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().to_str().unwrap();
    one_line_error(&vfs(&["mount", "memfs", mnt, "-o", "ro,bogus"]), "\"bogus\"");
    one_line_error(&vfs(&["mount", "memfs", mnt, "-o", "noexec"]), "not supported");
    one_line_error(&vfs(&["nonsense", mnt]), "\"nonsense\"");
    one_line_error(
        &vfs(&["mount", "memfs", mnt, "--no-report-changes"]),
        "--no-report-changes needs a host directory",
    );
    // A mount that fails after the fork: the parent exits with the child's status.
    let missing = dir.path().join("missing");
    one_line_error(&vfs(&["mount", "memfs", missing.to_str().unwrap()]), "does not exist");
    assert!(!mounted(dir.path()));
}

/// `mount -t fuse.vfs memfs MNT` runs `mount.fuse3`, which runs `vfs memfs MNT -o
/// rw,dev,suid` (found on PATH); this runs `mount.fuse3` the same way with our binary
/// first on PATH.
#[test]
fn mount_fuse3_helper_form() {
    let helper = ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(helper) = helper else {
        eprintln!("skipped: no mount.fuse3 (apt-get install fuse3)");
        return;
    };
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let bin_dir = Path::new(VFS).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let st = Command::new(helper)
        .args(["memfs", mnt.to_str().unwrap(), "-t", "vfs", "-o", "ro"])
        .env("PATH", &path)
        .status()
        .unwrap();
    assert!(st.success(), "mount.fuse3 memfs -o ro");
    assert!(mounted(&mnt));
    let err = std::fs::write(mnt.join("x"), b"x").expect_err("ro");
    assert_eq!(err.raw_os_error(), Some(EROFS), "{err}");
    unmount(&mnt);
    let st = Command::new(helper)
        .args(["memfs", mnt.to_str().unwrap(), "-t", "vfs", "-o", "rw,nodev,bogus"])
        .env("PATH", &path)
        .status()
        .unwrap();
    assert!(!st.success(), "an unknown option fails the mount");
    assert!(!mounted(&mnt));
}
