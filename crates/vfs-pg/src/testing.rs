//! A private PostgreSQL server for tests (feature `testing`).
//!
//! Invariant: a [`TestServer`] owns a fresh data directory under `/tmp/pg-server-*`, a
//! server listening only on a unix socket in that directory (on a port picked free, so
//! the socket name is unique too), and nothing else; dropping it stops the server
//! (`pg_ctl stop -m immediate`) and removes the directory, also when a test panics. The
//! server runs as `postgres` (through `runuser`) when we are root, since PostgreSQL
//! refuses root, and as the current user otherwise. Missing server binaries are one
//! error naming the package, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{PgFs, PgOptions};

#[cfg(feature = "s3")]
pub mod weed;

/// A PostgreSQL server of our own, stopped on drop.
#[derive(Debug)]
pub struct TestServer {
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
    /// Commits wait for their WAL (`synchronous_commit=on`), so a commit survives an
    /// immediate stop; off for speed otherwise.
    durable: bool,
    next_db: AtomicU64,
}

const MISSING: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql";

/// The directory holding `initdb` and `pg_ctl`: the newest Debian cluster version,
/// else `pg_config --bindir`, else `PATH`.
fn bin_dir() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .ok_or_else(|| MISSING.to_string())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl TestServer {
    /// Makes a data directory and starts a server on it, tuned for speed: no fsync, and
    /// commits do not wait for their WAL (an immediate stop may lose the last ones).
    pub fn start() -> Result<TestServer, String> {
        TestServer::start_with(false)
    }

    /// Like [`TestServer::start`], but every commit is in the WAL before it returns, so
    /// it survives [`TestServer::stop`] (an immediate shutdown) and the restart after it.
    pub fn start_durable() -> Result<TestServer, String> {
        TestServer::start_with(true)
    }

    fn start_with(durable: bool) -> Result<TestServer, String> {
        let bin = bin_dir()?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("pg-server-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot make a temp dir: {e}"))?;
        let mut server = TestServer {
            dir: Some(dir),
            bin,
            port: free_port()?,
            as_postgres,
            running: false,
            durable,
            next_db: AtomicU64::new(1),
        };
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(
                    "cannot hand the temp dir to the postgres user (is there one? apt-get install postgresql)".into(),
                );
            }
        }
        let data = server.path().join("data");
        server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        server.pg_ctl_start()?;
        Ok(server)
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new("/nonexistent"))
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.path())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn pg_ctl_start(&mut self) -> Result<(), String> {
        let data = self.path().join("data");
        let log = self.path().join("server.log");
        let opts = format!(
            "-c listen_addresses='' -k {} -p {} -c fsync=off -c synchronous_commit={} -c full_page_writes=off \
             -c max_connections=400 -c shared_buffers=128MB",
            self.path().display(),
            self.port,
            if self.durable { "on" } else { "off" }
        );
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-o".as_ref(),
                opts.as_ref(),
                "start".as_ref(),
            ],
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}\nserver log:\n{log}")
        })?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (immediate shutdown); the data stay until drop.
    pub fn stop(&mut self) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        let data = self.path().join("data");
        self.running = false;
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )
    }

    /// Starts the server again after [`TestServer::stop`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop()?;
        self.pg_ctl_start()
    }

    /// The libpq connection string of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.path().display(),
            self.port
        )
    }

    /// Creates a new, empty database and returns its connection string. Callable from
    /// async code too (it works on a thread of its own).
    pub fn create_db(&self) -> Result<String, String> {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        let admin = self.url("postgres");
        let sql = format!("CREATE DATABASE {name}");
        on_own_thread("database-creating", async move {
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("cannot connect to the test server: {e}"))?;
            let driver = tokio::spawn(conn);
            let made = client.batch_execute(&sql).await.map_err(|e| format!("{sql}: {e}"));
            drop(client);
            let _ = driver.await;
            made
        })?;
        Ok(self.url(&name))
    }

    /// A [`PgFs`] on a new database of this server.
    pub fn open_fs(&self, opts: PgOptions) -> Result<PgFs, String> {
        let url = self.create_db()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        rt.block_on(PgFs::open(&url, opts)).map_err(|e| e.to_string())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("vfs-pg testing: stopping the test server: {e}");
        }
    }
}

/// Runs `work` to completion on a current-thread runtime on a thread of its own, so that
/// async code (a `#[tokio::test]`) may call it too; `what` names the thread in the error
/// if it panics.
pub(crate) fn on_own_thread<T: Send + 'static>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        rt.block_on(work)
    })
    .join()
    .map_err(|_| format!("the {what} thread panicked"))?
}

/// One server a test process shares between its tests: started on first use, stopped
/// (dropped) when the process exits, normally or after failed tests.
pub(crate) trait SharedServer: Sized + Send + 'static {
    /// What an error message calls it ("test server", "weed server").
    const WHAT: &'static str;
    /// The process-wide slot.
    fn slot() -> &'static OnceLock<Result<std::sync::Mutex<Option<Self>>, String>>;
    /// Starts the server for the slot.
    fn start_shared() -> Result<Self, String>;
}

extern "C" fn stop_shared<S: SharedServer>() {
    if let Some(Ok(m)) = S::slot().get() {
        // Dropping stops the server and removes its directory.
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }
}

/// Runs `f` with the process's shared `S`, starting it on first use.
pub(crate) fn with_shared_server<S: SharedServer, T>(f: impl FnOnce(&S) -> T) -> Result<T, String> {
    let shared = S::slot().get_or_init(|| {
        let server = S::start_shared()?;
        // SAFETY: registering a plain `extern "C" fn` with no arguments is what atexit
        // expects; it runs once at exit, after the tests.
        if unsafe { libc::atexit(stop_shared::<S>) } != 0 {
            return Err("atexit registration failed".into());
        }
        Ok(std::sync::Mutex::new(Some(server)))
    });
    let m = shared.as_ref().map_err(Clone::clone)?;
    // A test that panicked while holding the lock left the server as it was.
    let guard = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match guard.as_ref() {
        Some(s) => Ok(f(s)),
        None => Err(format!("the shared {} was already stopped", S::WHAT)),
    }
}

impl SharedServer for TestServer {
    const WHAT: &'static str = "test server";
    fn slot() -> &'static OnceLock<Result<std::sync::Mutex<Option<Self>>, String>> {
        static SLOT: OnceLock<Result<std::sync::Mutex<Option<TestServer>>, String>> = OnceLock::new();
        &SLOT
    }
    fn start_shared() -> Result<Self, String> {
        TestServer::start()
    }
}

/// Runs `f` with the one server this test process shares between its tests, started on
/// first use and stopped when the process exits (normally or after failed tests).
pub fn with_shared<T>(f: impl FnOnce(&TestServer) -> T) -> Result<T, String> {
    with_shared_server(f)
}

/// A [`PgFs`] on a fresh database of the shared server; panics with the reason if there
/// is none (what a test wants).
pub fn fresh_fs(opts: PgOptions) -> PgFs {
    match with_shared(|s| s.open_fs(opts)) {
        Ok(Ok(fs)) => fs,
        Ok(Err(e)) | Err(e) => panic!("vfs-pg test server: {e}"),
    }
}
