//! Serving the in-memory filesystem (or a host directory through `LocalFs`, or a vfs-pg
//! database) over NFSv3, and printing how to reach it.
//!
//! One port answers NFS v3, MOUNT v3 and the portmapper's GETPORT. With a directory (or a
//! database), file handles survive a restart on the same directory (or database).
//!
//! Who may do what, as the Linux server's exports(5): a client's root acts as `nobody`
//! (`--squash root`, the default; `--squash all` for every user, `--squash none` to trust
//! the client's root) with `--anonuid`/`--anongid` to choose that identity; `--read-only`
//! refuses every change (`NFS3ERR_ROFS`); `--allow-client CIDR` (repeatable) answers only
//! those addresses, any other gets `AUTH_ERROR` for every call. The in-memory root is
//! world-writable with the sticky bit (mode 1777, like /tmp), so a squashed client can
//! create files in it.
//!
//! Invariant: whatever stops it (Ctrl-C, SIGTERM), every backend handle is released before
//! it exits; a busy port or a missing directory is a one-line error and exit status 1.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use vfs_core::localfs::LocalFs;
use vfs_core::memfs::MemFs;
use vfs_core::{ReadOnly, RequestCtx, VirtualFs};
use vfs_nfs::{ClientNet, Credentials, NfsConfig, NfsServer};

use crate::serve::fail;

/// Serve MemFs (or a host directory, or a vfs-pg database) over NFSv3.
#[derive(clap::Args, Debug, Clone)]
pub struct NfsArgs {
    /// Serve this host directory (LocalFs) instead of an in-memory filesystem.
    #[arg(long, value_name = "DIR", conflicts_with = "pg")]
    pub local: Option<PathBuf>,
    /// Serve a filesystem stored in PostgreSQL (vfs-pg), as a libpq connection string:
    /// `postgresql://user@host:port/db` or `host=/run/postgresql dbname=files`. The
    /// schema is created on first use; the root lists modules (module 1 has verset 1).
    #[arg(long, value_name = "URL")]
    pub pg: Option<String>,
    /// Address and port to listen on (NFS, MOUNT and portmapper share it).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:11111")]
    pub listen: SocketAddr,
    /// Refuse every change (a read-only export: NFS3ERR_ROFS).
    #[arg(long)]
    pub read_only: bool,
    /// Whose ids are replaced by --anonuid/--anongid: `root` (uid 0 and gid 0, the
    /// default), `all` (every call), `none` (trust the client's ids, root included).
    #[arg(long, value_name = "root|all|none", default_value = "root")]
    pub squash: String,
    /// The uid squashed calls (and AUTH_NULL calls) act as.
    #[arg(long, value_name = "UID", default_value_t = vfs_nfs::NOBODY.uid)]
    pub anonuid: u32,
    /// The gid squashed calls (and AUTH_NULL calls) act as.
    #[arg(long, value_name = "GID", default_value_t = vfs_nfs::NOBODY.gid)]
    pub anongid: u32,
    /// Serve only clients in this network (`10.0.0.0/8`, `192.168.1.7`, `::1/128`);
    /// repeatable. Default: every client.
    #[arg(long = "allow-client", value_name = "CIDR")]
    pub allow_clients: Vec<String>,
}

/// The server's configuration from the command line; a bad value is a one-line error.
fn config(args: &NfsArgs) -> NfsConfig {
    let anonymous = RequestCtx::new(args.anonuid, args.anongid, 0);
    let credentials = match args.squash.as_str() {
        "root" => Credentials::RootSquash { anonymous },
        "all" => Credentials::Squash(anonymous),
        "none" => Credentials::FromClient { anonymous },
        other => fail(format!("--squash must be root, all or none, not {other:?}")),
    };
    let allow_clients = args
        .allow_clients
        .iter()
        .map(|s| {
            s.parse::<ClientNet>()
                .unwrap_or_else(|e| fail(format!("--allow-client: {e}")))
        })
        .collect();
    NfsConfig {
        credentials,
        allow_clients,
        ..NfsConfig::default()
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => fail(format!("cannot listen for signals: {e}")),
    };
    let which = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    eprintln!("{which}: stopping");
}

async fn serve<F: VirtualFs>(fs: F, args: &NfsArgs) {
    let config = config(args);
    if args.read_only {
        serve_with(ReadOnly::new(fs), args.listen, config).await;
    } else {
        serve_with(fs, args.listen, config).await;
    }
}

async fn serve_with<F: VirtualFs>(fs: F, listen: SocketAddr, config: NfsConfig) {
    let source = fs.source_id().to_string();
    let who = match config.credentials {
        Credentials::RootSquash { anonymous } => format!("root squashed to {}:{}", anonymous.uid, anonymous.gid),
        Credentials::Squash(anonymous) => format!("every user squashed to {}:{}", anonymous.uid, anonymous.gid),
        Credentials::FromClient { .. } => "client ids trusted, root included".to_string(),
    };
    let clients = if config.allow_clients.is_empty() {
        "every client".to_string()
    } else {
        let nets: Vec<String> = config.allow_clients.iter().map(ToString::to_string).collect();
        format!("clients {}", nets.join(", "))
    };
    let server = match NfsServer::bind(listen, Arc::new(fs), config).await {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => fail(format!(
            "cannot listen on {listen}: the address is already in use (another server?); choose another with --listen"
        )),
        Err(e) => fail(format!("cannot listen on {listen}: {e}")),
    };
    let (url, port) = match (server.url(), server.local_addr()) {
        (Ok(u), Ok(a)) => (u, a.port()),
        (Err(e), _) | (_, Err(e)) => fail(e),
    };
    let ip = listen.ip();
    println!("serving {source} ({who}; {clients})");
    println!("{url}");
    println!("  list:   nfs-ls \"{url}\"");
    println!("  copy:   nfs-cp FILE \"nfs://{ip}//FILE?nfsport={port}&mountport={port}\"   (libnfs wants two slashes)");
    println!(
        "  mount:  mount -t nfs -o vers=3,proto=tcp,port={port},mountport={port},mountproto=tcp,nolock {ip}:/ /mnt"
    );
    if let Err(e) = server.serve_until(stop_signal()).await {
        fail(e);
    }
}

/// Serves what `args` name over NFSv3 until Ctrl-C or SIGTERM (in the foreground: a
/// server, not a mount).
pub fn run(args: &NfsArgs) {
    // Check the directory before anything else, so the error names the argument.
    if let Some(dir) = &args.local {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => fail(format!("--local {}: not a directory", dir.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fail(format!("--local {}: no such directory", dir.display()))
            }
            Err(e) => fail(format!("--local {}: {e}", dir.display())),
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => fail(format!("cannot start a runtime: {e}")),
    };
    rt.block_on(async {
        if let Some(url) = &args.pg {
            match vfs_pg::PgFs::open(url, vfs_pg::PgOptions::default()).await {
                Ok(fs) => return serve(fs, args).await,
                Err(e) => fail(format!("--pg: {e}")),
            }
        }
        match &args.local {
            Some(dir) => match LocalFs::new(dir) {
                Ok(fs) => serve(fs, args).await,
                Err(e) => fail(format!("--local {}: {e}", dir.display())),
            },
            None => serve(MemFs::with_root(0, 0, 0o1777), args).await,
        }
    });
}
