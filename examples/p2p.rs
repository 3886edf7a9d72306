//! Share a folder with another machine, peer to peer, and mount it there.
//!
//! ```sh
//! # on both machines: print this peer's key (created on first use)
//! cargo run --release --example p2p -- key
//! # on A, the owner: share a directory with B's key
//! cargo run --release --example p2p -- share /srv/data --listen 0.0.0.0:47100 --allow KEY_OF_B
//! # on B: mount A's share, pinning A's key
//! cargo run --release --example p2p -- mount /mnt/a --peer A_ADDR:47100 --peer-key KEY_OF_A
//! ```
//!
//! Invariant: `mount` unmounts before exiting, whichever way it is asked to stop; a
//! refused handshake (or any failure to connect) exits with status 1 and one line.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vfs_core::localfs::LocalFs;
use vfs_fuse::{Dispatch, MountOptions};
use vfs_p2p::exporter::watch::HostWatcher;
use vfs_p2p::exporter::{ExportConfig, Exporter};
use vfs_p2p::identity::{Allowlist, Keypair, PublicKey, default_key_file};
use vfs_p2p::remote::{RemoteConfig, RemoteFs};
use vfs_p2p::transport::Transport;
use vfs_p2p::transport::noise::NoiseTcp;

const SETUP: &str = "\
Two machines, A (the owner of a folder) and B (which mounts it):
  1. On each machine run `p2p key`: it prints that machine's public key (one line) and
     creates its private key file (mode 0600) on first use.
  2. On A: `p2p share DIR --listen ADDR:PORT --allow <B's key>` (repeat --allow per peer).
  3. On B: `p2p mount MOUNTPOINT --peer <A's ADDR:PORT> --peer-key <A's key>`.
B's key goes to A's --allow; A's key goes to B's --peer-key. The link is encrypted and
both sides prove their keys (Noise XX); a key not on A's list is refused.";

/// Share a folder with a peer, or mount a peer's folder (encrypted, key-pinned).
#[derive(Parser, Debug)]
#[command(name = "p2p", after_help = SETUP)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print this peer's public key (one line), creating the key on first use.
    #[command(after_help = SETUP)]
    Key {
        /// The private key file (default: ~/.config/vfs-p2p/key).
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
    },
    /// Share DIR with the peers whose keys are allowed, until Ctrl-C or SIGTERM.
    #[command(after_help = SETUP)]
    Share {
        /// The directory to share.
        dir: PathBuf,
        /// Address to listen on, e.g. 0.0.0.0:47100.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// A peer's public key (from `p2p key` on that peer); repeat for several peers.
        #[arg(long = "allow", value_name = "KEY", required = true)]
        allow: Vec<PublicKey>,
        /// This peer's private key file (default: ~/.config/vfs-p2p/key).
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
    },
    /// Mount a peer's share on MOUNTPOINT through FUSE, until Ctrl-C or SIGTERM.
    #[command(after_help = SETUP)]
    Mount {
        /// Where to mount (an existing, empty directory).
        mountpoint: PathBuf,
        /// The sharing peer's address, e.g. 192.0.2.1:47100.
        #[arg(long, value_name = "ADDR")]
        peer: SocketAddr,
        /// The sharing peer's public key (from `p2p key` on that peer).
        #[arg(long, value_name = "KEY")]
        peer_key: PublicKey,
        /// This peer's private key file (default: ~/.config/vfs-p2p/key).
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// Let other users in (allow_other; needed for services running as their own user).
        #[arg(long)]
        allow_other: bool,
        /// How FUSE requests run: `spawn` (a task each; a request waiting on the network
        /// holds no session thread) or `threads`.
        #[arg(long, default_value = "spawn")]
        dispatch: String,
        /// Seconds an operation waits for a lost link to come back before failing (EIO).
        #[arg(long, default_value_t = 10.0)]
        down_wait: f64,
    },
}

fn key_file(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(default_key_file)
        .unwrap_or_else(|| common::fail("no --key-file given and no HOME to put the default key file in"))
}

fn load_key(path: &Path) -> Keypair {
    match Keypair::load_or_create(path) {
        Ok((k, created)) => {
            if created {
                eprintln!("p2p: created a new key in {}", path.display());
            }
            k
        }
        Err(e) => common::fail(format!("cannot use the key file {}: {e}", path.display())),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("p2p")
        .build()
        .unwrap_or_else(|e| common::fail(format!("cannot start the runtime: {e}")))
}

async fn signalled() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => common::fail(format!("cannot listen for signals: {e}")),
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn share(dir: PathBuf, listen: SocketAddr, allow: Vec<PublicKey>, key: PathBuf) {
    let keys = Arc::new(load_key(&key));
    let fs = LocalFs::new(&dir).unwrap_or_else(|e| common::fail(format!("cannot share {}: {e}", dir.display())));
    let rt = runtime();
    rt.block_on(async {
        let t = NoiseTcp::new(Arc::clone(&keys));
        let listener = t
            .listen(listen, Allowlist::new(allow))
            .await
            .unwrap_or_else(|e| common::fail(format!("cannot listen on {listen}: {e}")));
        let exporter = Exporter::new(Arc::new(fs), ExportConfig::default());
        let _watcher = HostWatcher::start(&dir, exporter.changes())
            .map_err(|e| eprintln!("p2p: host changes will not be seen ({e})"))
            .ok();
        eprintln!(
            "p2p: sharing {} on {} as {} (Ctrl-C to stop)",
            dir.display(),
            vfs_p2p::transport::Listener::local_addr(&listener),
            keys.public()
        );
        tokio::select! {
            r = exporter.serve(listener) => if let Err(e) = r { common::fail(format!("listener failed: {e}")) },
            why = signalled() => eprintln!("p2p: {why}, stopped sharing"),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[allow(clippy::too_many_arguments)]
fn mount(
    mountpoint: PathBuf,
    peer: SocketAddr,
    peer_key: PublicKey,
    key: PathBuf,
    allow_other: bool,
    dispatch: &str,
    down_wait: f64,
) {
    let keys = Arc::new(load_key(&key));
    let dispatch = match dispatch {
        "threads" => Dispatch::Threads,
        "spawn" => Dispatch::Spawn,
        other => common::fail(format!("--dispatch must be threads or spawn, not {other:?}")),
    };
    let down_wait = Duration::try_from_secs_f64(down_wait)
        .unwrap_or_else(|_| common::fail("--down-wait must be a number of seconds >= 0"));
    let rt = runtime();
    let cfg = RemoteConfig {
        down_wait,
        ..RemoteConfig::default()
    };
    let remote = rt
        .block_on(RemoteFs::connect(NoiseTcp::new(keys), peer, peer_key, cfg))
        .unwrap_or_else(|e| common::fail(format!("cannot connect to {peer}: {e}")));
    let fs = Arc::new(remote);
    let opts = MountOptions {
        allow_other,
        dispatch,
        session_threads: Some(4),
        fsname: Some(format!("p2p:{peer}")),
        ..MountOptions::default()
    };
    let m = vfs_fuse::mount(Arc::clone(&fs), &mountpoint, &opts).unwrap_or_else(|e| common::fail(e));
    fs.set_invalidator(m.invalidator());
    eprintln!(
        "p2p: {peer} mounted on {} (Ctrl-C to unmount)",
        m.mountpoint().display()
    );
    let why = common::wait_for_stop(&m);
    let r = m.unmount();
    drop(fs);
    rt.shutdown_timeout(Duration::from_secs(1));
    match r {
        Ok(()) => eprintln!("p2p: {why}, unmounted"),
        Err(e) => common::fail(e),
    }
}

fn main() {
    common::init_logging();
    match Args::parse().cmd {
        Cmd::Key { key_file: k } => {
            let path = key_file(k);
            println!("{}", load_key(&path).public());
        }
        Cmd::Share {
            dir,
            listen,
            allow,
            key_file: k,
        } => share(dir, listen, allow, key_file(k)),
        Cmd::Mount {
            mountpoint,
            peer,
            peer_key,
            key_file: k,
            allow_other,
            dispatch,
            down_wait,
        } => mount(
            mountpoint,
            peer,
            peer_key,
            key_file(k),
            allow_other,
            &dispatch,
            down_wait,
        ),
    }
}
