//! Two processes of `examples/pg.rs` mount one database: what one
//! creates, renames, writes (and `fsync`s) or removes is seen through the other within
//! one second. Both mounts keep the kernel's attribute and entry caches for 60 s
//! (`--ttl 60`), so only the other mount's LISTEN/NOTIFY announcement, turned into a
//! kernel invalidation, can make a change visible that fast: without it (the
//! `set_invalidator` call in the example removed) the rename, write and remove checks
//! fail. The server is private to the test (a unix socket in a temporary directory),
//! both processes are stopped with SIGTERM (they unmount) when the test ends, also
//! while a failed assertion unwinds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vfs_pg::testing::TestServer;

/// The example binary, built by cargo with the tests (built here if it is missing).
fn pg_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join("pg");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--example", "pg"]);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building the pg example failed");
    }
    bin
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

/// One `pg` process serving a mount; SIGTERM (which unmounts) on drop.
struct PgMount {
    child: Child,
    mnt: PathBuf,
}

impl PgMount {
    fn start(url: &str, mnt: &Path) -> PgMount {
        fs::create_dir_all(mnt).unwrap();
        let child = Command::new(pg_bin())
            .arg(mnt)
            .args(["--db", url, "--ttl", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut m = PgMount {
            child,
            mnt: mnt.to_path_buf(),
        };
        let start = Instant::now();
        while !is_mounted(mnt) {
            assert!(m.child.try_wait().unwrap().is_none(), "pg exited before mounting");
            assert!(start.elapsed() < Duration::from_secs(20), "not mounted after 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join("1/1").join(rel)
    }
}

impl Drop for PgMount {
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap_or(0);
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// Polls `cond` every 5 ms for at most one second; the time it took, or a panic naming `what`.
fn within_a_second(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: not seen through the other mount within 1 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read(p: &Path) -> Option<Vec<u8>> {
    fs::read(p).ok()
}

#[test]
fn two_processes_mounting_one_database_see_each_others_changes_within_a_second() {
    if !fuse_usable() {
        return;
    }
    let server = TestServer::start().expect("private PostgreSQL server");
    let url = server.create_db().expect("database");
    let tmp = tempfile::Builder::new().prefix("vfs-pg-two").tempdir().unwrap();
    let a = PgMount::start(&url, &tmp.path().join("a"));
    let b = PgMount::start(&url, &tmp.path().join("b"));
    let mut seen = Vec::new();

    // Created through A (with data, fsync'ed), read back through B.
    {
        let mut f = fs::File::create(a.path("f")).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_all().unwrap();
    }
    seen.push((
        "create",
        within_a_second("create", || read(&b.path("f")).as_deref() == Some(b"hello")),
    ));

    // B has looked `f` up (its entry cached for 60 s); A renames it.
    assert!(b.path("f").exists());
    fs::rename(a.path("f"), a.path("g")).unwrap();
    seen.push((
        "rename",
        within_a_second("rename", || !b.path("f").exists() && b.path("g").exists()),
    ));

    // B knows g's size (5, cached for 60 s); A appends and fsyncs.
    assert_eq!(fs::metadata(b.path("g")).unwrap().len(), 5);
    {
        let mut f = fs::OpenOptions::new().append(true).open(a.path("g")).unwrap();
        f.write_all(b" world").unwrap();
        f.sync_all().unwrap();
    }
    seen.push((
        "write+fsync",
        within_a_second("write", || read(&b.path("g")).as_deref() == Some(b"hello world")),
    ));

    // A directory made through B, seen through A; then removals both ways.
    assert!(!a.path("d").exists());
    fs::create_dir(b.path("d")).unwrap();
    seen.push(("mkdir", within_a_second("mkdir", || a.path("d").is_dir())));
    assert!(b.path("g").exists());
    fs::remove_file(a.path("g")).unwrap();
    seen.push(("unlink", within_a_second("unlink", || !b.path("g").exists())));
    assert!(a.path("d").is_dir());
    fs::remove_dir(b.path("d")).unwrap();
    seen.push(("rmdir", within_a_second("rmdir", || !a.path("d").exists())));

    for (what, t) in &seen {
        eprintln!(
            "two mounts: {what} seen through the other mount after {} ms",
            t.as_millis()
        );
    }
    drop(a);
    drop(b);

    let out = Command::new(pg_bin()).args(["--fsck", "--db", &url]).output().unwrap();
    assert!(
        out.status.success(),
        "fsck after the two mounts: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
