//! Handles survive a restart (seed 003 (doc/LESSONS.md#seed-003-pr-177), hf-mount PR #177), across real processes.
//!
//! The test binary re-runs itself as the server (`child_server`, a no-op unless
//! `VFS_NFS_CHILD_DIR` is set): a `LocalFs` over a directory, served until killed. The
//! parent takes a file handle from server 1, kills it (SIGKILL: no goodbye), starts server
//! 2 on the same directory and uses the old handle without any LOOKUP: it works. Server 3,
//! on another directory, answers the same handle `NFS3ERR_STALE`.
//!
//! Run with `--nocapture` to see the handle and every answer.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::{getattr, hex, lookup, read};
use nfs3_client::nfs3_types::nfs3::nfsstat3;
use vfs_core::localfs::LocalFs;
use vfs_nfs::NfsServer;

const CHILD_DIR: &str = "VFS_NFS_CHILD_DIR";

/// The server process: a no-op when run as an ordinary test.
#[test]
fn child_server() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let fs = Arc::new(LocalFs::new(&dir).unwrap());
        let server = NfsServer::bind("127.0.0.1:0", fs, common::no_root_squash())
            .await
            .unwrap();
        println!("LISTENING {}", server.local_addr().unwrap());
        server.serve().await.unwrap();
    });
}

struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(dir: &Path) -> ServerProcess {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args(["--exact", "child_server", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("child exited before listening").unwrap();
            // libtest prints "test child_server ... " before it, on the same line.
            if let Some((_, a)) = line.split_once("LISTENING ") {
                break a.trim().parse().unwrap();
            }
        };
        ServerProcess { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap: the server gets no chance to say goodbye.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn seed003_pr177_handles_survive_a_restart_and_are_stale_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), b"hello, nfs\n").unwrap();
    std::fs::write(other.path().join("hello.txt"), b"another file\n").unwrap();

    let one = ServerProcess::start(dir.path());
    let (mut c, root) = common::mount(one.addr).await;
    let (fh, attr) = lookup(&mut c, &root, "hello.txt").await.unwrap();
    println!(
        "restart: handle of /hello.txt = {} ({} bytes, fileid {})",
        hex(&fh.data),
        fh.data.len(),
        attr.fileid
    );
    let data = read(&mut c, &fh, 0, 100).await.unwrap();
    println!(
        "restart: server 1 (pid {}): READ -> {:?}",
        one.pid(),
        String::from_utf8_lossy(&data)
    );
    drop(c);
    one.kill();

    let two = ServerProcess::start(dir.path());
    let mut c = common::connect(two.addr, 0, 0).await;
    let a = getattr(&mut c, &fh).await;
    let data = read(&mut c, &fh, 0, 100).await;
    println!(
        "restart: server 2 (pid {}, same directory, killed and restarted): GETATTR with the old handle -> {}, READ -> {:?}",
        two.pid(),
        a.as_ref()
            .map_or_else(|s| s.to_string(), |a| format!("NFS3_OK fileid {}", a.fileid)),
        data.as_ref().map(|d| String::from_utf8_lossy(d).into_owned())
    );
    assert_eq!(a.map(|a| a.fileid), Ok(attr.fileid));
    assert_eq!(data.unwrap(), b"hello, nfs\n");
    drop(c);
    two.kill();

    let three = ServerProcess::start(other.path());
    let mut c = common::connect(three.addr, 0, 0).await;
    let a = getattr(&mut c, &fh).await;
    let data = read(&mut c, &fh, 0, 100).await;
    println!(
        "restart: server 3 (pid {}, another directory): GETATTR with the old handle -> {}, READ -> {}",
        three.pid(),
        a.as_ref().map_or_else(|s| s.to_string(), |_| "NFS3_OK".into()),
        data.as_ref().map_or_else(|s| s.to_string(), |_| "NFS3_OK".into())
    );
    assert_eq!(a.map(|_| ()), Err(nfsstat3::NFS3ERR_STALE));
    assert_eq!(data.map(|_| ()), Err(nfsstat3::NFS3ERR_STALE));
    three.kill();
}
