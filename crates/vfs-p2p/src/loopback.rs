//! An owner and a far side in one process, over the real transport on loopback: what the
//! tests, the benches and the examples' self-checks use.
//!
//! Invariant: a [`Loopback`] owns everything it started (its runtime, the exporter's
//! accept task, the listener's port); dropping it stops them, from any context (the
//! runtime is shut down in the background, never blocked on).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use vfs_core::VirtualFs;

use crate::exporter::{ExportConfig, Exporter};
use crate::identity::{Allowlist, Keypair, PublicKey, Right};
use crate::remote::{ConnectError, RemoteConfig, RemoteFs};
use crate::transport::noise::{NoiseListener, NoiseTcp};
use crate::transport::{Transport, TransportError};

/// The ports the repository's tests and benches listen on.
pub const TEST_PORTS: RangeInclusive<u16> = 47000..=47999;

static NEXT: AtomicU16 = AtomicU16::new(0);

/// Listens on the first free port of `ports` on `ip` (tries each once, starting at a
/// place that differs per process and per call, so parallel tests rarely collide).
pub async fn listen_in(
    t: &NoiseTcp,
    ip: IpAddr,
    ports: RangeInclusive<u16>,
    allow: Allowlist,
) -> Result<NoiseListener, TransportError> {
    let (lo, hi) = (*ports.start(), *ports.end());
    let span = u32::from(hi - lo) + 1;
    let seed = std::process::id() % span + u32::from(NEXT.fetch_add(7, Ordering::Relaxed));
    let mut last = None;
    for i in 0..span {
        let port = lo + ((seed + i) % span) as u16;
        match t.listen(SocketAddr::new(ip, port), allow.clone()).await {
            Ok(l) => return Ok(l),
            Err(TransportError::Io(e)) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(TransportError::Io(
        last.unwrap_or_else(|| std::io::Error::other("no port in the range")),
    ))
}

/// A share served in this process and mounted (as a [`RemoteFs`]) in this process.
pub struct Loopback<F: VirtualFs> {
    /// The owner's side.
    pub exporter: Arc<Exporter<F>>,
    /// Where the exporter listens.
    pub addr: SocketAddr,
    /// The exporter's key.
    pub owner_key: PublicKey,
    /// The far side's keypair (allowed by the exporter).
    pub peer: Arc<Keypair>,
    rt: Option<tokio::runtime::Runtime>,
}

impl<F: VirtualFs> Loopback<F> {
    /// Serves `fs` on 127.0.0.1 (a port of [`TEST_PORTS`]) on a runtime of its own, for
    /// one allowed far-side key (made here, read-write). If `cfg.peers.keys` holds a
    /// list, that key is added to it and the listener admits the whole list (connect
    /// with the others through [`Loopback::connect_with`]).
    pub fn serve(fs: F, cfg: ExportConfig) -> std::io::Result<Loopback<F>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("p2p-loopback")
            .build()?;
        let owner = Arc::new(Keypair::generate()?);
        let peer = Arc::new(Keypair::generate()?);
        let owner_key = owner.public();
        let allow = match &cfg.peers.keys {
            Some(list) => {
                list.insert(peer.public(), Right::ReadWrite);
                list.clone()
            }
            None => Allowlist::new([peer.public()]),
        };
        let (exporter, addr) = rt.block_on(async {
            let t = NoiseTcp::new(owner);
            let listener = listen_in(&t, IpAddr::V4(Ipv4Addr::LOCALHOST), TEST_PORTS, allow)
                .await
                .map_err(std::io::Error::other)?;
            let addr = crate::transport::Listener::local_addr(&listener);
            let exporter = Exporter::new(Arc::new(fs), cfg);
            let e = Arc::clone(&exporter);
            tokio::spawn(async move {
                if let Err(err) = e.serve(listener).await {
                    tracing::debug!("loopback listener ended: {err}");
                }
            });
            Ok::<_, std::io::Error>((exporter, addr))
        })?;
        Ok(Loopback {
            exporter,
            addr,
            owner_key,
            peer,
            rt: Some(rt),
        })
    }

    /// The runtime the exporter (and far sides made by [`Loopback::connect`]) run on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        match &self.rt {
            Some(rt) => rt.handle(),
            None => unreachable_runtime(),
        }
    }

    /// Connects a far side with the allowed key.
    pub fn connect(&self, cfg: RemoteConfig) -> Result<RemoteFs, ConnectError> {
        let (t, addr, key) = (NoiseTcp::new(Arc::clone(&self.peer)), self.addr, self.owner_key);
        self.block_on(RemoteFs::connect(t, addr, key, cfg))
    }

    /// Connects a far side with the key `keys` (which the exporter's list must admit).
    pub fn connect_with(&self, keys: Arc<Keypair>, cfg: RemoteConfig) -> Result<RemoteFs, ConnectError> {
        let (t, addr, key) = (NoiseTcp::new(keys), self.addr, self.owner_key);
        self.block_on(RemoteFs::connect(t, addr, key, cfg))
    }

    /// Runs `f` on the loopback's runtime, blocking this thread (not from async code).
    pub fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable_runtime(),
        }
    }
}

fn unreachable_runtime() -> ! {
    // The runtime is taken only in `drop`.
    panic!("loopback runtime used after drop")
}

impl<F: VirtualFs> Drop for Loopback<F> {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
