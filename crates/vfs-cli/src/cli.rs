//! The `vfs` command line.
//!
//! Two forms:
//! - `vfs mount memfs|local|overlay|pg ...`, `vfs nfs ...`, `vfs p2p key|share|mount ...`;
//! - the mount helper form `vfs SOURCE MOUNTPOINT [-o OPTS]`, which `mount.fuse3` runs for
//!   `mount -t fuse.vfs SOURCE MOUNTPOINT` and `/etc/fstab` lines of type `fuse.vfs`.
//!   SOURCE is `memfs`, `local:DIR` (or an absolute `DIR`), `pg:URL` (or a
//!   `postgresql://` URL), or `overlay:UPPER:LOWER[:LOWER...]`; it is rewritten to the
//!   first form before parsing ([`helper_args`]).
//!
//! Invariant: every bad command line, option or source is one line on stderr and a
//! non-zero exit; `--help` and `--version` always work, whatever else is given.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::serve::{Launch, LaunchArgs, fail};
use crate::{log, memfs, nfs, overlay, p2p, pg};

const AFTER_HELP: &str = "\
Mounts go to the background once they are up (-f/--foreground to stay attached);
`umount MOUNTPOINT` (or `fusermount3 -u MOUNTPOINT`) stops them.

As a mount helper (mount.fuse3 runs it for type fuse.vfs):
  mount -t fuse.vfs memfs /mnt/m
  mount -t fuse.vfs -o ro local:/srv/data /mnt/data
  /etc/fstab:  local:/srv/data  /mnt/data  fuse.vfs  ro,allow_other  0 0
SOURCE: memfs | local:DIR | pg:URL | overlay:UPPER:LOWER[:LOWER...]";

/// Mount memory, host, overlay, PostgreSQL or peer filesystems through FUSE; serve NFSv3.
#[derive(Parser, Debug)]
#[command(name = "vfs", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// More log lines: -v info, -vv debug, -vvv trace (RUST_LOG, if set, wins).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Write the log to FILE (appended; no colour codes) instead of stderr. A background
    /// mount's only log.
    #[arg(long, value_name = "FILE", global = true)]
    pub log_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands of `vfs`.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Mount a filesystem through FUSE (in the background once it is up).
    #[command(subcommand)]
    Mount(MountCmd),
    /// Serve a filesystem over NFSv3 (stays in the foreground).
    Nfs(nfs::NfsArgs),
    /// Share a folder with a peer, or mount a peer's folder (encrypted, key-pinned).
    #[command(subcommand, after_help = p2p::SETUP)]
    P2p(p2p::Cmd),
}

/// The filesystems `vfs mount` mounts.
#[derive(Subcommand, Debug)]
pub enum MountCmd {
    /// A fresh in-memory filesystem (gone when unmounted).
    Memfs {
        /// Where to mount (an existing, empty directory).
        mountpoint: PathBuf,
        /// `-o` and `--foreground`.
        #[command(flatten)]
        launch: LaunchArgs,
        /// The filesystem's own flags.
        #[command(flatten)]
        opts: memfs::MemfsOptions,
    },
    /// A host directory.
    Local {
        /// The directory to serve.
        dir: PathBuf,
        /// Where to mount (an existing, empty directory).
        mountpoint: PathBuf,
        /// `-o` and `--foreground`.
        #[command(flatten)]
        launch: LaunchArgs,
        /// The filesystem's own flags.
        #[command(flatten)]
        opts: memfs::MemfsOptions,
    },
    /// A copy-on-write overlay: a writable upper directory over read-only lower ones.
    Overlay {
        /// Where to mount (an existing, empty directory outside every layer).
        mountpoint: PathBuf,
        /// `-o` and `--foreground`.
        #[command(flatten)]
        launch: LaunchArgs,
        /// The filesystem's own flags.
        #[command(flatten)]
        opts: overlay::OverlayArgs,
    },
    /// A filesystem stored in PostgreSQL (vfs-pg); the schema is created on first use.
    Pg {
        /// The database, as a libpq connection string: `postgresql://user@host:port/db`
        /// or `host=/run/postgresql dbname=files`.
        url: String,
        /// Where to mount (an existing, empty directory).
        mountpoint: PathBuf,
        /// `-o` and `--foreground`.
        #[command(flatten)]
        launch: LaunchArgs,
        /// The filesystem's own flags.
        #[command(flatten)]
        opts: pg::PgArgs,
    },
}

/// The first arguments that are `vfs`'s own, not a helper-form SOURCE.
const COMMANDS: &[&str] = &["mount", "nfs", "p2p", "help"];

/// Rewrites the helper form `vfs SOURCE MOUNTPOINT REST...` to `vfs mount KIND ...`;
/// any other command line is returned as it is. Errors: an unknown SOURCE (one line).
pub fn helper_args(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return Ok(args);
    };
    if first.starts_with('-') || COMMANDS.contains(&first) || args.len() < 3 {
        return Ok(args);
    }
    let source = first.to_owned();
    let mut out: Vec<OsString> = vec![args[0].clone(), "mount".into()];
    let mountpoint = args[2].clone();
    let rest = args[3..].iter().cloned();
    let mut head: Vec<OsString> = Vec::new();
    if source == "memfs" {
        head.push("memfs".into());
    } else if let Some(dir) = source
        .strip_prefix("local:")
        .or(source.starts_with('/').then_some(source.as_str()))
    {
        head.extend(["local".into(), dir.into()]);
    } else if let Some(url) = source.strip_prefix("pg:") {
        head.extend(["pg".into(), url.into()]);
    } else if source.starts_with("postgresql://") || source.starts_with("postgres://") {
        head.extend(["pg".into(), source.as_str().into()]);
    } else if let Some(layers) = source.strip_prefix("overlay:") {
        let mut parts = layers.split(':').filter(|p| !p.is_empty());
        let (Some(upper), Some(lower)) = (parts.next(), parts.next()) else {
            return Err(format!(
                "source {source:?}: an overlay is overlay:UPPER:LOWER[:LOWER...]"
            ));
        };
        head.extend([
            "overlay".into(),
            "--upper".into(),
            upper.into(),
            "--lower".into(),
            lower.into(),
        ]);
        for l in parts {
            head.extend(["--lower".into(), l.into()]);
        }
    } else {
        return Err(format!(
            "unknown command or source {source:?} (commands: mount, nfs, p2p; sources: memfs, local:DIR, pg:URL, overlay:UPPER:LOWER)"
        ));
    }
    out.extend(head);
    out.push(mountpoint);
    out.extend(rest);
    Ok(out)
}

/// The `vfs` program: parse, set up logging, run. Exits on every failure.
pub fn main() {
    let args = helper_args(std::env::args_os().collect()).unwrap_or_else(|e| fail(e));
    let cli = Cli::parse_from(args);
    log::init(cli.verbose, cli.log_file.as_deref()).unwrap_or_else(|e| fail(e));
    let launch = |l: &LaunchArgs| Launch::from_args("vfs", l).unwrap_or_else(|e| fail(e));
    match cli.cmd {
        Cmd::Mount(MountCmd::Memfs {
            mountpoint,
            launch: l,
            opts,
        }) => memfs::run(None, &mountpoint, &opts, &launch(&l)),
        Cmd::Mount(MountCmd::Local {
            dir,
            mountpoint,
            launch: l,
            opts,
        }) => memfs::run(Some(&dir), &mountpoint, &opts, &launch(&l)),
        Cmd::Mount(MountCmd::Overlay {
            mountpoint,
            launch: l,
            opts,
        }) => overlay::run(&mountpoint, &opts, &launch(&l)),
        Cmd::Mount(MountCmd::Pg {
            url,
            mountpoint,
            launch: l,
            opts,
        }) => pg::run(&url, &mountpoint, &opts, &launch(&l)),
        Cmd::Nfs(args) => nfs::run(&args),
        Cmd::P2p(cmd) => p2p::run(cmd, "vfs", false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn helper_form_becomes_a_mount_command() {
        let got = helper_args(argv(&["vfs", "memfs", "/mnt", "-o", "rw,dev,suid"])).expect("memfs");
        assert_eq!(got, argv(&["vfs", "mount", "memfs", "/mnt", "-o", "rw,dev,suid"]));
        let got = helper_args(argv(&["vfs", "local:/srv", "/mnt"])).expect("local");
        assert_eq!(got, argv(&["vfs", "mount", "local", "/srv", "/mnt"]));
        let got = helper_args(argv(&["vfs", "/srv", "/mnt"])).expect("absolute dir");
        assert_eq!(got, argv(&["vfs", "mount", "local", "/srv", "/mnt"]));
        let got = helper_args(argv(&["vfs", "pg:host=/tmp dbname=x", "/mnt"])).expect("pg");
        assert_eq!(got, argv(&["vfs", "mount", "pg", "host=/tmp dbname=x", "/mnt"]));
        let got = helper_args(argv(&["vfs", "overlay:/u:/l1:/l2", "/mnt"])).expect("overlay");
        assert_eq!(
            got,
            argv(&[
                "vfs", "mount", "overlay", "--upper", "/u", "--lower", "/l1", "--lower", "/l2", "/mnt"
            ])
        );
    }

    #[test]
    fn own_commands_and_bad_sources() {
        for keep in [
            &["vfs", "mount", "memfs", "/m"][..],
            &["vfs", "--version"],
            &["vfs", "p2p", "key"],
        ] {
            assert_eq!(helper_args(argv(keep)).expect("kept"), argv(keep));
        }
        let e = helper_args(argv(&["vfs", "nonsense", "/mnt"])).expect_err("unknown source");
        assert!(e.contains("\"nonsense\"") && !e.contains('\n'), "{e}");
        assert!(helper_args(argv(&["vfs", "overlay:/u", "/mnt"])).is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
