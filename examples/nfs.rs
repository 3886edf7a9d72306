//! Serves the in-memory filesystem (or, with `--local DIR`, a host directory through
//! `LocalFs`; with `--pg URL`, a vfs-pg database) over NFSv3 until Ctrl-C or SIGTERM, and
//! prints how to reach it.
//!
//! ```sh
//! cargo run --release --example nfs -- --listen 127.0.0.1:11111
//! cargo run --release --example nfs -- --local /srv/data --listen 127.0.0.1:11111
//! cargo run --release --example nfs -- --pg 'host=/run/postgresql dbname=files'
//! nfs-ls "nfs://127.0.0.1/?nfsport=11111&mountport=11111"      # apt-get install libnfs-utils
//! ```
//!
//! One port answers NFS v3, MOUNT v3 and the portmapper's GETPORT. With `--local` (or
//! `--pg`), file handles survive a restart of this program on the same directory (or
//! database).
//!
//! Invariant: whatever stops it (Ctrl-C, SIGTERM), every backend handle is released before
//! it exits; a busy port or a missing directory is a one-line error and exit status 1.

mod common;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use vfs_core::VirtualFs;
use vfs_core::localfs::LocalFs;
use vfs_core::memfs::MemFs;
use vfs_nfs::{NfsConfig, NfsServer};

/// Serve MemFs (or a host directory, or a vfs-pg database) over NFSv3.
#[derive(Parser, Debug)]
#[command(name = "nfs")]
struct Args {
    /// Serve this host directory (LocalFs) instead of an in-memory filesystem.
    #[arg(long, value_name = "DIR", conflicts_with = "pg")]
    local: Option<PathBuf>,
    /// Serve a filesystem stored in PostgreSQL (vfs-pg), as a libpq connection string:
    /// `postgresql://user@host:port/db` or `host=/run/postgresql dbname=files`. The
    /// schema is created on first use; the root lists modules (module 1 has verset 1).
    #[arg(long, value_name = "URL")]
    pg: Option<String>,
    /// Address and port to listen on (NFS, MOUNT and portmapper share it).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:11111")]
    listen: SocketAddr,
}

/// Prints `error: ...` on one line and exits with status 1.
/// Resolves when SIGINT or SIGTERM arrives.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => common::fail(format!("cannot listen for signals: {e}")),
    };
    let which = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    eprintln!("{which}: stopping");
}

async fn serve<F: VirtualFs>(fs: F, listen: SocketAddr) {
    let source = fs.source_id().to_string();
    let server = match NfsServer::bind(listen, Arc::new(fs), NfsConfig::default()).await {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => common::fail(format!(
            "cannot listen on {listen}: the address is already in use (another server?); choose another with --listen"
        )),
        Err(e) => common::fail(format!("cannot listen on {listen}: {e}")),
    };
    let (url, port) = match (server.url(), server.local_addr()) {
        (Ok(u), Ok(a)) => (u, a.port()),
        (Err(e), _) | (_, Err(e)) => common::fail(e),
    };
    let ip = listen.ip();
    println!("serving {source}");
    println!("{url}");
    println!("  list:   nfs-ls \"{url}\"");
    println!("  copy:   nfs-cp FILE \"nfs://{ip}//FILE?nfsport={port}&mountport={port}\"   (libnfs wants two slashes)");
    println!(
        "  mount:  mount -t nfs -o vers=3,proto=tcp,port={port},mountport={port},mountproto=tcp,nolock {ip}:/ /mnt"
    );
    if let Err(e) = server.serve_until(stop_signal()).await {
        common::fail(e);
    }
}

fn main() {
    let args = Args::parse();
    common::init_logging();
    // Check the directory before anything else, so the error names the argument.
    if let Some(dir) = &args.local {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => common::fail(format!("--local {}: not a directory", dir.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                common::fail(format!("--local {}: no such directory", dir.display()))
            }
            Err(e) => common::fail(format!("--local {}: {e}", dir.display())),
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => common::fail(format!("cannot start a runtime: {e}")),
    };
    rt.block_on(async {
        if let Some(url) = &args.pg {
            match vfs_pg::PgFs::open(url, vfs_pg::PgOptions::default()).await {
                Ok(fs) => return serve(fs, args.listen).await,
                Err(e) => common::fail(format!("--pg: {e}")),
            }
        }
        match &args.local {
            Some(dir) => match LocalFs::new(dir) {
                Ok(fs) => serve(fs, args.listen).await,
                Err(e) => common::fail(format!("--local {}: {e}", dir.display())),
            },
            None => serve(MemFs::new(), args.listen).await,
        }
    });
}
