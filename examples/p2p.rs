//! Share a folder with another machine, peer to peer, and mount it there.
//!
//! ```sh
//! # on both machines: print this peer's key (created on first use)
//! cargo run --release --example p2p -- key
//! # on A, the owner: share a directory with B's key (read-write; --allow-read for read-only)
//! cargo run --release --example p2p -- share /srv/data --listen 0.0.0.0:47100 --allow KEY_OF_B
//! # on B: mount A's share, pinning A's key
//! cargo run --release --example p2p -- mount /mnt/a --peer A_ADDR:47100 --peer-key KEY_OF_A
//! ```
//!
//! Invariant: `mount` unmounts before exiting, whichever way it is asked to stop; a
//! refused handshake (or any failure to connect) exits with status 1 and one line.
//! `share` never lets peers act as root unless given `--as-root`: they act as the owner
//! of DIR (or `--as USER`), and a DIR owned by root without either flag is refused.

use clap::Parser;

/// Share a folder with a peer, or mount a peer's folder (encrypted, key-pinned).
#[derive(Parser, Debug)]
#[command(name = "p2p", after_help = vfs_cli::p2p::SETUP)]
struct Args {
    #[command(subcommand)]
    cmd: vfs_cli::p2p::Cmd,
}

fn main() {
    vfs_cli::log::init(0, None).unwrap_or_else(|e| vfs_cli::fail(e));
    // The example stays attached (its scripts rely on it), whatever --foreground says.
    vfs_cli::p2p::run(Args::parse().cmd, "p2p", true);
}
