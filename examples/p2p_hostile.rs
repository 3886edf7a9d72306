//! A hostile peer, for testing a share: it connects with a key the share allows, then
//! sends names that try to leave the share (`..`, `/`, NUL, over-long) in every operation
//! that takes a name, and frames that must close its link (garbage, oversized lengths).
//! Prints one line per probe and exits 0 only if every probe got its one right answer.
//! `scripts/e2e-two-hosts` runs it while a good peer keeps using the share.
//!
//! ```sh
//! cargo run --release --example p2p_hostile -- --peer A_ADDR:PORT --peer-key KEY_OF_A --key-file KEY
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use vfs_p2p::identity::{Keypair, PublicKey};
use vfs_p2p::transport::noise::NoiseTcp;

/// Probe a share the way a hostile (but admitted) peer would.
#[derive(Parser, Debug)]
struct Args {
    /// The sharing peer's address.
    #[arg(long, value_name = "ADDR")]
    peer: SocketAddr,
    /// The sharing peer's public key.
    #[arg(long, value_name = "KEY")]
    peer_key: PublicKey,
    /// This peer's private key file (must be on the share's allowlist).
    #[arg(long, value_name = "PATH")]
    key_file: PathBuf,
}

fn main() {
    vfs_cli::log::init(0, None).unwrap_or_else(|e| vfs_cli::fail(e));
    let args = Args::parse();
    let (keypair, _) = Keypair::load_or_create(&args.key_file).unwrap_or_else(|e| vfs_cli::fail(e));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| vfs_cli::fail(e));
    let transport = NoiseTcp::new(Arc::new(keypair));
    let probes = rt
        .block_on(vfs_p2p::hostile::probe(&transport, args.peer, args.peer_key))
        .unwrap_or_else(|e| vfs_cli::fail(format!("p2p_hostile: cannot reach the share: {e}")));
    let mut bad = 0;
    for p in &probes {
        println!("{} {} -> {}", if p.ok { "ok  " } else { "FAIL" }, p.what, p.got);
        bad += usize::from(!p.ok);
    }
    println!("{} probes, {} answered right", probes.len(), probes.len() - bad);
    std::process::exit(i32::from(bad > 0));
}
