//! Sharing a folder with another machine, peer to peer, and mounting it there.
//!
//! Invariant: `mount` unmounts before exiting, whichever way it is asked to stop; a
//! refused handshake (or any failure to connect) exits with status 1 and one line.
//! `share` never lets peers act as root unless given `--as-root`: they act as the owner
//! of DIR (or `--as USER`), and a DIR owned by root without either flag is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use vfs_core::localfs::LocalFs;
use vfs_fuse::{Dispatch, MountOptions};
use vfs_p2p::exporter::watch::HostWatcher;
use vfs_p2p::exporter::{ExportConfig, Exporter, PeerIdentity, PeerPolicy};
use vfs_p2p::identity::{Allowlist, Keypair, PublicKey, Right, default_key_file, parse_keys_file};
use vfs_p2p::remote::{IdMap, RemoteConfig, RemoteFs};
use vfs_p2p::transport::Transport;
use vfs_p2p::transport::noise::NoiseTcp;

use crate::serve::{Launch, LaunchArgs, fail, serve_until_stopped};

/// How two machines are set up, shown after each command's help.
pub const SETUP: &str = "\
Two machines, A (the owner of a folder) and B (which mounts it):
  1. On each machine run `p2p key`: it prints that machine's public key (one line) and
     creates its private key file (mode 0600) on first use.
  2. On A: `p2p share DIR --listen ADDR:PORT --allow <B's key>` (repeat --allow per peer;
     --allow-read for a read-only peer; --keys-file for a list reloaded on SIGHUP).
  3. On B: `p2p mount MOUNTPOINT --peer <A's ADDR:PORT> --peer-key <A's key>`.
B's key goes to A's --allow; A's key goes to B's --peer-key. The link is encrypted and
both sides prove their keys (Noise XX); a key not on A's list is refused.";

/// What to do: print this peer's key, share a folder, or mount a peer's share.
#[derive(Subcommand, Debug)]
pub enum Cmd {
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
        /// A peer's public key (from `p2p key` on that peer), read-write; repeat for
        /// several peers.
        #[arg(long = "allow", value_name = "KEY")]
        allow: Vec<PublicKey>,
        /// A peer's public key, read-only (every change it asks for is EROFS); repeatable.
        #[arg(long = "allow-read", value_name = "KEY")]
        allow_read: Vec<PublicKey>,
        /// A file of keys, one per line: `KEY rw` or `KEY ro` (`#` comments). Re-read on
        /// SIGHUP; peers no longer listed are disconnected.
        #[arg(long, value_name = "PATH")]
        keys_file: Option<PathBuf>,
        /// The local user every peer acts as (name or uid). Default: the owner of DIR.
        #[arg(long = "as", value_name = "USER")]
        as_user: Option<String>,
        /// Let peers act as root (needed if DIR or --as is root).
        #[arg(long)]
        as_root: bool,
        /// Let peers make setuid files and setgid non-directories.
        #[arg(long)]
        allow_setid: bool,
        /// Let peers make character and block device nodes.
        #[arg(long)]
        allow_devices: bool,
        /// Every peer read-only, whatever --allow or the keys file say (changes are EROFS).
        #[arg(long)]
        read_only: bool,
        /// This peer's private key file (default: ~/.config/vfs-p2p/key).
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
    },
    /// Mount a peer's share on MOUNTPOINT through FUSE (vfs: in the background once it is
    /// up unless --foreground; the p2p example stays attached until Ctrl-C or SIGTERM).
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
        /// Mount read-only (`ro`: the kernel refuses every change with EROFS).
        #[arg(long)]
        read_only: bool,
        /// How the owner's file owners appear: `user` (every file is yours, like sshfs
        /// idmap=user), `none` (the owner's numeric ids), or `auto`: `user` unless you
        /// are root (root can use any file already, and services it runs through the
        /// mount, PostgreSQL for one, check the real owners).
        #[arg(long, default_value = "auto")]
        idmap: String,
        /// `-o` options and `--foreground` (the p2p example always stays attached).
        #[command(flatten)]
        launch: LaunchArgs,
    },
}

fn key_file(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(default_key_file)
        .unwrap_or_else(|| fail("no --key-file given and no HOME to put the default key file in"))
}

fn load_key(path: &Path) -> Keypair {
    match Keypair::load_or_create(path) {
        Ok((k, created)) => {
            if created {
                eprintln!("p2p: created a new key in {}", path.display());
            }
            k
        }
        Err(e) => fail(format!("cannot use the key file {}: {e}", path.display())),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("p2p")
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start the runtime: {e}")))
}

async fn signalled() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => fail(format!("cannot listen for signals: {e}")),
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// What `share` was told about peers.
struct ShareArgs {
    allow: Vec<PublicKey>,
    allow_read: Vec<PublicKey>,
    keys_file: Option<PathBuf>,
    as_user: Option<String>,
    as_root: bool,
    allow_setid: bool,
    allow_devices: bool,
    read_only: bool,
}

impl ShareArgs {
    /// The keys of the command line and of the keys file (all read-only with
    /// `--read-only`).
    fn keys(&self) -> Result<Vec<(PublicKey, Right)>, String> {
        let mut keys: Vec<(PublicKey, Right)> = self.allow.iter().map(|k| (*k, Right::ReadWrite)).collect();
        keys.extend(self.allow_read.iter().map(|k| (*k, Right::ReadOnly)));
        if let Some(path) = &self.keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            keys.extend(parse_keys_file(&text).map_err(|e| format!("{}: {e}", path.display()))?);
        }
        if self.read_only {
            for (_, r) in &mut keys {
                *r = Right::ReadOnly;
            }
        }
        Ok(keys)
    }

    /// Who peers act as: `--as-root`, `--as USER`, else the owner of `dir`; never root
    /// without `--as-root`, never another user than ourselves unless we are root.
    fn identity(&self, dir: &Path) -> Result<(PeerIdentity, String), String> {
        use std::os::unix::fs::MetadataExt;
        let (uid, gid, what) = match &self.as_user {
            _ if self.as_root && self.as_user.is_none() => return Ok((PeerIdentity::Root, "root".into())),
            Some(user) => {
                let (uid, gid) = user_ids(user)?;
                (uid, gid, format!("{user} ({uid}:{gid})"))
            }
            None => {
                let md = std::fs::metadata(dir).map_err(|e| format!("cannot share {}: {e}", dir.display()))?;
                (
                    md.uid(),
                    md.gid(),
                    format!("the owner of {} ({}:{})", dir.display(), md.uid(), md.gid()),
                )
            }
        };
        if uid == 0 {
            return if self.as_root {
                Ok((PeerIdentity::Root, "root".into()))
            } else {
                Err(format!(
                    "peers would act as root ({what}); pass --as USER (e.g. --as nobody) or, to really let them, --as-root"
                ))
            };
        }
        // SAFETY: geteuid cannot fail and touches no memory.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 && euid != uid {
            return Err(format!(
                "peers would act as {what}, but only root can act as another user; run as that user, or pass --as {euid}"
            ));
        }
        Ok((PeerIdentity::User { uid, gid }, what))
    }
}

/// The uid and primary gid of `user` (a name, or a number).
fn user_ids(user: &str) -> Result<(u32, u32), String> {
    let c = std::ffi::CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
    let mut pw = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let numeric = user.parse::<u32>().ok();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `pw`'s
    // strings (we read only its numeric fields).
    let rc = unsafe {
        match numeric {
            Some(uid) => libc::getpwuid_r(uid, pw.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut out),
            None => libc::getpwnam_r(c.as_ptr(), pw.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut out),
        }
    };
    if rc == 0 && !out.is_null() {
        // SAFETY: `out` is non-null, so the call filled `pw`.
        let pw = unsafe { pw.assume_init() };
        return Ok((pw.pw_uid, pw.pw_gid));
    }
    match numeric {
        Some(uid) => Ok((uid, uid)),
        None => Err(format!("no user {user:?} on this machine")),
    }
}

fn share(dir: PathBuf, listen: SocketAddr, args: ShareArgs, key: PathBuf) {
    let keys = Arc::new(load_key(&key));
    let allow = Allowlist::with_rights(args.keys().unwrap_or_else(|e| fail(e)));
    if allow.is_empty() {
        fail("no peer allowed: give --allow KEY, --allow-read KEY or --keys-file PATH");
    }
    let (identity, who) = args.identity(&dir).unwrap_or_else(|e| fail(e));
    let fs = LocalFs::new(&dir).unwrap_or_else(|e| fail(format!("cannot share {}: {e}", dir.display())));
    let rt = runtime();
    rt.block_on(async {
        let t = NoiseTcp::new(Arc::clone(&keys));
        let listener = t
            .listen(listen, allow.clone())
            .await
            .unwrap_or_else(|e| fail(format!("cannot listen on {listen}: {e}")));
        let cfg = ExportConfig {
            peers: PeerPolicy {
                keys: Some(allow.clone()),
                identity,
                allow_setid: args.allow_setid,
                allow_devices: args.allow_devices,
            },
            ..ExportConfig::default()
        };
        let exporter = Exporter::new(Arc::new(fs), cfg);
        let _watcher = HostWatcher::start(&dir, exporter.changes())
            .map_err(|e| eprintln!("p2p: host changes will not be seen ({e})"))
            .ok();
        eprintln!(
            "p2p: sharing {} on {} as {} (Ctrl-C to stop); {} peer key(s){}; peers act as {who}",
            dir.display(),
            vfs_p2p::transport::Listener::local_addr(&listener),
            keys.public(),
            allow.len(),
            if args.read_only { ", all read-only" } else { "" },
        );
        tokio::select! {
            r = exporter.serve(listener) => if let Err(e) = r { fail(format!("listener failed: {e}")) },
            () = reload_on_hangup(&args, &allow, &exporter) => {}
            why = signalled() => eprintln!("p2p: {why}, stopped sharing"),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// On each SIGHUP: re-reads the keys (a bad file keeps the old list) and disconnects
/// peers no longer allowed. Never returns (unless SIGHUP cannot be listened for).
async fn reload_on_hangup(args: &ShareArgs, allow: &Allowlist, exporter: &Exporter<LocalFs>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("p2p: cannot listen for SIGHUP ({e}); keys will not be reloaded");
            return std::future::pending().await;
        }
    };
    while hup.recv().await.is_some() {
        match args.keys() {
            Ok(keys) => {
                allow.replace(keys);
                let closed = exporter.close_unallowed();
                eprintln!(
                    "p2p: SIGHUP: {} peer key(s) now; {closed} link(s) of removed keys closed",
                    allow.len()
                );
            }
            Err(e) => eprintln!("p2p: SIGHUP: keys not reloaded, the old list stays: {e}"),
        }
    }
    std::future::pending().await
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
    idmap: &str,
    read_only: bool,
    launch: &Launch,
) {
    let keys = Arc::new(load_key(&key));
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let idmap = match idmap {
        "user" => IdMap::User { uid: euid, gid: egid },
        "auto" if euid != 0 => IdMap::User { uid: euid, gid: egid },
        "none" | "auto" => IdMap::None,
        other => fail(format!("--idmap must be user, none or auto, not {other:?}")),
    };
    let dispatch = match dispatch {
        "threads" => Dispatch::Threads,
        "spawn" => Dispatch::Spawn,
        other => fail(format!("--dispatch must be threads or spawn, not {other:?}")),
    };
    let down_wait =
        Duration::try_from_secs_f64(down_wait).unwrap_or_else(|_| fail("--down-wait must be a number of seconds >= 0"));
    let mut ready = launch.start();
    let rt = runtime();
    let cfg = RemoteConfig {
        down_wait,
        idmap,
        ..RemoteConfig::default()
    };
    let remote = rt
        .block_on(RemoteFs::connect(NoiseTcp::new(keys), peer, peer_key, cfg))
        .unwrap_or_else(|e| fail(format!("cannot connect to {peer}: {e}")));
    let fs = Arc::new(remote);
    let mut opts = MountOptions {
        allow_other,
        dispatch,
        session_threads: Some(4),
        fsname: Some(format!("p2p:{peer}")),
        read_only: launch.read_only(read_only),
        ..MountOptions::default()
    };
    launch.apply(&mut opts);
    let what = peer.to_string();
    // The peer's change notes reach the kernel through `vfs_fuse::mount` itself
    // (`RemoteFs::report_changes` installs the mount's invalidator).
    serve_until_stopped(
        &launch.prog,
        &what,
        Arc::clone(&fs),
        &mountpoint,
        &opts,
        &mut ready,
        |_| {},
        String::new,
    );
    drop(fs);
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// Runs `cmd`; `prog` names the program in messages; `foreground` keeps a mount attached
/// whatever `--foreground` says (the p2p example's behaviour).
pub fn run(cmd: Cmd, prog: &str, foreground: bool) {
    match cmd {
        Cmd::Key { key_file: k } => {
            let path = key_file(k);
            println!("{}", load_key(&path).public());
        }
        Cmd::Share {
            dir,
            listen,
            allow,
            allow_read,
            keys_file,
            as_user,
            as_root,
            allow_setid,
            allow_devices,
            read_only,
            key_file: k,
        } => {
            let args = ShareArgs {
                allow,
                allow_read,
                keys_file,
                as_user,
                as_root,
                allow_setid,
                allow_devices,
                read_only,
            };
            share(dir, listen, args, key_file(k))
        }
        Cmd::Mount {
            mountpoint,
            peer,
            peer_key,
            key_file: k,
            allow_other,
            dispatch,
            down_wait,
            idmap,
            read_only,
            launch,
        } => {
            let mut launch = Launch::from_args(prog, &launch).unwrap_or_else(|e| fail(e));
            launch.background &= !foreground;
            mount(
                mountpoint,
                peer,
                peer_key,
                key_file(k),
                allow_other,
                &dispatch,
                down_wait,
                &idmap,
                read_only,
                &launch,
            )
        }
    }
}
