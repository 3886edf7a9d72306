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
//! Who may do what, as the Linux server's exports(5): a client's root acts as `nobody`
//! (`--squash root`, the default; `--squash all` for every user, `--squash none` to trust
//! the client's root) with `--anonuid`/`--anongid` to choose that identity; `--read-only`
//! refuses every change (`NFS3ERR_ROFS`); `--allow-client CIDR` (repeatable) answers only
//! those addresses, any other gets `AUTH_ERROR` for every call. The in-memory root is
//! world-writable with the sticky bit (mode 1777, like /tmp), so a squashed client can
//! create files in it.
//!
//! ```sh
//! cargo run --release --example nfs -- --local /srv/data --read-only --allow-client 192.168.1.0/24
//! ```
//!
//! Invariant: whatever stops it (Ctrl-C, SIGTERM), every backend handle is released before
//! it exits; a busy port or a missing directory is a one-line error and exit status 1.

use clap::Parser;
use vfs_cli::nfs::NfsArgs;

/// Serve MemFs (or a host directory, or a vfs-pg database) over NFSv3.
#[derive(Parser, Debug)]
#[command(name = "nfs")]
struct Args {
    #[command(flatten)]
    args: NfsArgs,
}

fn main() {
    let args = Args::parse();
    vfs_cli::log::init(0, None).unwrap_or_else(|e| vfs_cli::fail(e));
    vfs_cli::nfs::run(&args.args);
}
