//! Noise XX over TCP: the default [`Transport`].
//!
//! Invariant: the handshake is `Noise_XX_25519_AESGCM_SHA256` (or `..._ChaChaPoly_...`,
//! see [`Suite`]) with the prologue [`PROLOGUE`]; the connecting side aborts as soon as
//! message 2 proves a responder key other than the pinned one; the accepting side learns
//! the initiator's key in message 3, checks it against its allowlist there, and answers
//! with one encrypted verdict record before anything else. On refusal it sends the
//! verdict and closes without reading another byte. After the handshake each direction
//! is a stream of records `u16 big-endian length ‖ ciphertext ‖ 16-byte tag`, exactly
//! Noise transport messages (nonce = record counter, empty associated data), so the
//! format is standard Noise; every length is checked before a byte is buffered for it.
//!
//! Why the records are sealed here and not by `snow`'s transport state: snow copies each
//! payload into a separate output buffer before sealing, and its ring resolver seals a
//! copy again; sealing in place in the send buffer with ring's AEAD (keys from the
//! handshake's split) saves those copies, which is what keeps the link near raw TCP speed
//! (doc/BENCHMARKS.md). On the receiving side each record is copied once out of a reused
//! receive buffer and opened in place in its own frame-sized allocation, so frames that
//! are kept (payload chunks, cached blocks) hold exactly their own memory. The handshake
//! itself, where the subtle parts of Noise live, is entirely snow's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::{FrameRx, FrameTx, Link, Listener, MAX_FRAME, Transport, TransportError};
use crate::identity::{Allowlist, Keypair, PublicKey};

/// Bound into every handshake: both sides must speak this protocol.
pub const PROLOGUE: &[u8] = b"vfs-p2p/1";
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Largest handshake message we accept (XX messages here are under 200 bytes).
const MAX_HANDSHAKE_MSG: usize = 1024;
/// Receive buffer growth step.
const READ_CHUNK: usize = 256 * 1024;
/// Handshakes in progress at once on one listener; more wait for the TCP backlog.
const MAX_PENDING_HANDSHAKES: usize = 64;
/// Verdict byte: accepted.
const VERDICT_OK: u8 = 1;
/// Verdict byte: refused (a reason text follows).
const VERDICT_REFUSED: u8 = 0;

/// The cipher of the Noise protocol name. DH is always 25519 and the hash SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Suite {
    /// `Noise_XX_25519_AESGCM_SHA256`: fastest with AES instructions (the default).
    #[default]
    AesGcm,
    /// `Noise_XX_25519_ChaChaPoly_SHA256`: for CPUs without AES instructions.
    ChaChaPoly,
}

impl Suite {
    /// The Noise protocol name.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Suite::AesGcm => "Noise_XX_25519_AESGCM_SHA256",
            Suite::ChaChaPoly => "Noise_XX_25519_ChaChaPoly_SHA256",
        }
    }

    fn key(self, raw: &[u8; 32]) -> Result<LessSafeKey, TransportError> {
        let alg = match self {
            Suite::AesGcm => &AES_256_GCM,
            Suite::ChaChaPoly => &CHACHA20_POLY1305,
        };
        UnboundKey::new(alg, raw)
            .map(LessSafeKey::new)
            .map_err(|_| TransportError::Protocol("bad key length".into()))
    }

    /// The Noise nonce for counter `n`: 32 zero bits then `n`, big-endian for AESGCM and
    /// little-endian for ChaChaPoly (Noise spec §12).
    fn nonce(self, n: u64) -> Nonce {
        let mut b = [0u8; 12];
        let tail = match self {
            Suite::AesGcm => n.to_be_bytes(),
            Suite::ChaChaPoly => n.to_le_bytes(),
        };
        b[4..].copy_from_slice(&tail);
        Nonce::assume_unique_for_key(b)
    }
}

/// Noise XX over TCP.
#[derive(Clone)]
pub struct NoiseTcp {
    keypair: Arc<Keypair>,
    suite: Suite,
    handshake_timeout: Duration,
}

impl NoiseTcp {
    /// A transport that proves `keypair` to its peers, with the default suite and a 10 s
    /// handshake timeout.
    pub fn new(keypair: Arc<Keypair>) -> NoiseTcp {
        NoiseTcp {
            keypair,
            suite: Suite::default(),
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// The same transport with another cipher (both sides must agree).
    pub fn with_suite(mut self, suite: Suite) -> NoiseTcp {
        self.suite = suite;
        self
    }

    /// The same transport with another handshake timeout.
    pub fn with_handshake_timeout(mut self, t: Duration) -> NoiseTcp {
        self.handshake_timeout = t;
        self
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        self.keypair.public()
    }

    fn builder(&self) -> Result<snow::Builder<'_>, TransportError> {
        let params = self
            .suite
            .protocol_name()
            .parse()
            .map_err(|e| TransportError::Protocol(format!("noise params: {e}")))?;
        snow::Builder::new(params)
            .prologue(PROLOGUE)
            .and_then(|b| b.local_private_key(self.keypair.private_bytes()))
            .map_err(|e| TransportError::Protocol(format!("noise builder: {e}")))
    }
}

fn noise_err(what: &str, e: snow::Error) -> TransportError {
    match e {
        snow::Error::Decrypt => TransportError::Decrypt,
        e => TransportError::Protocol(format!("{what}: {e}")),
    }
}

async fn write_handshake(stream: &mut TcpStream, msg: &[u8]) -> Result<(), TransportError> {
    let len = u16::try_from(msg.len()).map_err(|_| TransportError::FrameTooLarge(msg.len()))?;
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await?;
    Ok(())
}

/// Reads one length-prefixed handshake message, refusing lengths over
/// [`MAX_HANDSHAKE_MSG`] before reading the body.
async fn read_handshake(stream: &mut TcpStream) -> Result<Vec<u8>, TransportError> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    check_handshake_len(len)?;
    let mut msg = vec![0u8; len];
    stream.read_exact(&mut msg).await?;
    Ok(msg)
}

/// The length check of a handshake message (its own function so the fuzz target and the
/// proptest reach it).
pub fn check_handshake_len(len: usize) -> Result<(), TransportError> {
    if len > MAX_HANDSHAKE_MSG {
        return Err(TransportError::Protocol(format!(
            "handshake message of {len} bytes (maximum {MAX_HANDSHAKE_MSG})"
        )));
    }
    Ok(())
}

impl NoiseTcp {
    /// The initiator's side of the handshake on a connected stream.
    pub async fn handshake_initiator(
        &self,
        mut stream: TcpStream,
        peer: PublicKey,
    ) -> Result<Link<NoiseTx, NoiseRx>, TransportError> {
        let addr = stream.peer_addr()?;
        let mut hs = self
            .builder()?
            .build_initiator()
            .map_err(|e| noise_err("initiator", e))?;
        let mut buf = [0u8; MAX_HANDSHAKE_MSG];
        // -> e
        let n = hs.write_message(&[], &mut buf).map_err(|e| noise_err("message 1", e))?;
        write_handshake(&mut stream, buf.get(..n).unwrap_or_default()).await?;
        // <- e, ee, s, es
        let msg = read_handshake(&mut stream).await?;
        hs.read_message(&msg, &mut buf).map_err(|e| noise_err("message 2", e))?;
        let got = hs
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or_else(|| TransportError::Protocol("no responder key after message 2".into()))?;
        if got != peer {
            return Err(TransportError::WrongPeer { expected: peer, got });
        }
        // -> s, se
        let n = hs.write_message(&[], &mut buf).map_err(|e| noise_err("message 3", e))?;
        write_handshake(&mut stream, buf.get(..n).unwrap_or_default()).await?;
        let (k_send, k_recv) = hs.dangerously_get_raw_split();
        let (r, w) = stream.into_split();
        let mut rx = NoiseRx::new(r, self.suite.key(&k_recv)?, self.suite);
        let tx = NoiseTx::new(w, self.suite.key(&k_send)?, self.suite);
        // The verdict: the responder's first record.
        let verdict = rx.recv().await?.ok_or(TransportError::Closed)?;
        match verdict.first() {
            Some(&VERDICT_OK) => Ok(Link { peer, addr, tx, rx }),
            Some(&VERDICT_REFUSED) => Err(TransportError::Refused {
                ours: self.keypair.public(),
            }),
            _ => Err(TransportError::Protocol("unknown handshake verdict".into())),
        }
    }

    /// The responder's side of the handshake on an accepted stream. A refused key gets
    /// its verdict and `Refused`-like error here; nothing more is read from it.
    pub async fn handshake_responder(
        &self,
        mut stream: TcpStream,
        allow: &Allowlist,
    ) -> Result<Link<NoiseTx, NoiseRx>, HandshakeRefusal> {
        let addr = stream.peer_addr().map_err(|e| HandshakeRefusal::Failed(e.into()))?;
        let fail = HandshakeRefusal::Failed;
        let mut hs = self
            .builder()
            .map_err(fail)?
            .build_responder()
            .map_err(|e| fail(noise_err("responder", e)))?;
        let mut buf = [0u8; MAX_HANDSHAKE_MSG];
        // -> e
        let msg = read_handshake(&mut stream).await.map_err(fail)?;
        hs.read_message(&msg, &mut buf)
            .map_err(|e| fail(noise_err("message 1", e)))?;
        // <- e, ee, s, es
        let n = hs
            .write_message(&[], &mut buf)
            .map_err(|e| fail(noise_err("message 2", e)))?;
        write_handshake(&mut stream, buf.get(..n).unwrap_or_default())
            .await
            .map_err(fail)?;
        // -> s, se
        let msg = read_handshake(&mut stream).await.map_err(fail)?;
        hs.read_message(&msg, &mut buf)
            .map_err(|e| fail(noise_err("message 3", e)))?;
        let peer = hs
            .get_remote_static()
            .and_then(PublicKey::from_slice)
            .ok_or_else(|| fail(TransportError::Protocol("no initiator key after message 3".into())))?;
        let (k_recv, k_send) = hs.dangerously_get_raw_split();
        let (r, w) = stream.into_split();
        let mut tx = NoiseTx::new(w, self.suite.key(&k_send).map_err(fail)?, self.suite);
        if !allow.allows(&peer) {
            let mut verdict = vec![VERDICT_REFUSED];
            verdict.extend_from_slice(b"key not on the allowlist");
            // Best effort: the refused peer learns why; we read nothing more from it.
            let _ = tx.push(&[&verdict]);
            let _ = tx.shutdown().await;
            return Err(HandshakeRefusal::NotAllowed { peer, addr });
        }
        tx.push(&[&[VERDICT_OK]]).map_err(fail)?;
        tx.flush().await.map_err(fail)?;
        let rx = NoiseRx::new(r, self.suite.key(&k_recv).map_err(fail)?, self.suite);
        Ok(Link { peer, addr, tx, rx })
    }
}

/// Why an incoming handshake did not give a link.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeRefusal {
    /// The peer proved a key that is not on the allowlist.
    #[error("refused peer {peer} from {addr}: key not on the allowlist")]
    NotAllowed {
        /// The key it proved.
        peer: PublicKey,
        /// Where it came from.
        addr: SocketAddr,
    },
    /// The handshake failed (garbage, timeout, I/O).
    #[error("handshake failed: {0}")]
    Failed(TransportError),
}

impl Transport for NoiseTcp {
    type Tx = NoiseTx;
    type Rx = NoiseRx;
    type Listener = NoiseListener;

    async fn connect(&self, addr: SocketAddr, peer: PublicKey) -> Result<Link<NoiseTx, NoiseRx>, TransportError> {
        let attempt = async {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            self.handshake_initiator(stream, peer).await
        };
        tokio::time::timeout(self.handshake_timeout, attempt)
            .await
            .map_err(|_| TransportError::Timeout)?
    }

    async fn listen(&self, addr: SocketAddr, allow: Allowlist) -> Result<NoiseListener, TransportError> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (links, rx) = mpsc::channel(16);
        let this = self.clone();
        let allow = Arc::new(allow);
        let task = tokio::spawn(accept_loop(this, listener, allow, links));
        Ok(NoiseListener { local, rx, task })
    }
}

async fn accept_loop(
    this: NoiseTcp,
    listener: TcpListener,
    allow: Arc<Allowlist>,
    links: mpsc::Sender<Link<NoiseTx, NoiseRx>>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else {
            return;
        };
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (this, allow, links) = (this.clone(), allow.clone(), links.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%addr, error = %e, "set_nodelay failed");
            }
            let hs = tokio::time::timeout(this.handshake_timeout, this.handshake_responder(stream, &allow)).await;
            match hs {
                Ok(Ok(link)) => {
                    tracing::info!(peer = %link.peer, %addr, "peer connected");
                    let _ = links.send(link).await;
                }
                Ok(Err(refusal @ HandshakeRefusal::NotAllowed { .. })) => tracing::warn!("{refusal}"),
                Ok(Err(HandshakeRefusal::Failed(e))) => tracing::info!(%addr, "handshake failed: {e}"),
                Err(_) => tracing::info!(%addr, "handshake timed out"),
            }
        });
    }
}

/// Accepted links of a [`NoiseTcp`] listener. Dropping it stops listening.
pub struct NoiseListener {
    local: SocketAddr,
    rx: mpsc::Receiver<Link<NoiseTx, NoiseRx>>,
    task: JoinHandle<()>,
}

impl Drop for NoiseListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener for NoiseListener {
    type Tx = NoiseTx;
    type Rx = NoiseRx;

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn accept(&mut self) -> Result<Link<NoiseTx, NoiseRx>, TransportError> {
        self.rx.recv().await.ok_or(TransportError::Closed)
    }
}

/// The sending half: seals frames in place into one buffer, written out on flush.
pub struct NoiseTx {
    stream: OwnedWriteHalf,
    out: Vec<u8>,
    sealer: Sealer,
}

impl NoiseTx {
    fn new(stream: OwnedWriteHalf, key: LessSafeKey, suite: Suite) -> NoiseTx {
        NoiseTx {
            stream,
            out: Vec::with_capacity(READ_CHUNK + MAX_FRAME + 64),
            sealer: Sealer { key, suite, nonce: 0 },
        }
    }
}

/// One direction's AEAD and record counter, independent of any socket (the fuzz target
/// and the tests drive it on buffers).
pub struct Sealer {
    key: LessSafeKey,
    suite: Suite,
    nonce: u64,
}

impl Sealer {
    /// A sealer (or opener) for raw key `key` starting at record 0.
    pub fn new(suite: Suite, key: &[u8; 32]) -> Result<Sealer, TransportError> {
        Ok(Sealer {
            key: suite.key(key)?,
            suite,
            nonce: 0,
        })
    }

    fn next_nonce(&mut self) -> Result<Nonce, TransportError> {
        let n = self.nonce;
        // Noise reserves 2^64-1; a link never gets there, but it must not wrap.
        self.nonce = n
            .checked_add(1)
            .filter(|&m| m < u64::MAX)
            .ok_or(TransportError::Closed)?;
        Ok(self.suite.nonce(n))
    }

    /// Appends the record of the frame `parts` to `out`.
    pub fn seal(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), TransportError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > MAX_FRAME {
            return Err(TransportError::FrameTooLarge(total));
        }
        let len = u16::try_from(total + TAG_LEN).map_err(|_| TransportError::FrameTooLarge(total))?;
        let nonce = self.next_nonce()?;
        out.reserve(2 + total + TAG_LEN);
        out.extend_from_slice(&len.to_be_bytes());
        let start = out.len();
        for p in parts {
            out.extend_from_slice(p);
        }
        let body = out.get_mut(start..).ok_or(TransportError::Closed)?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), body)
            .map_err(|_| TransportError::Protocol("seal failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Takes the next whole record off the front of `buf` and opens it in place: `Ok(None)`
    /// if `buf` does not hold a whole record yet. The length is checked before anything
    /// is taken; a record that fails authentication is an error (the link must close).
    pub fn open(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, TransportError> {
        let Some(&[hi, lo]) = buf.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len < TAG_LEN {
            return Err(TransportError::Protocol(format!(
                "record of {len} bytes is shorter than its tag"
            )));
        }
        if buf.len() < 2 + len {
            return Ok(None);
        }
        // The record is copied out of the receive buffer (into a frame-sized allocation,
        // which the allocator recycles) instead of split off it: split-off frames that
        // are kept (payload chunks awaiting the rest of their message) would pin the
        // receive buffer and force a fresh one, page faults included, every 256 KiB.
        let mut rec = BytesMut::with_capacity(len);
        rec.extend_from_slice(buf.get(2..2 + len).unwrap_or_default());
        buf.advance(2 + len);
        let nonce = self.next_nonce()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut rec[..])
            .map_err(|_| TransportError::Decrypt)?
            .len();
        rec.truncate(plain);
        Ok(Some(rec.freeze()))
    }
}

impl FrameTx for NoiseTx {
    fn push(&mut self, parts: &[&[u8]]) -> Result<(), TransportError> {
        self.sealer.seal(parts, &mut self.out)
    }

    fn buffered(&self) -> usize {
        self.out.len()
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), TransportError> {
        self.flush().await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}

/// The receiving half: reads into one buffer and opens records in place.
pub struct NoiseRx {
    stream: OwnedReadHalf,
    buf: BytesMut,
    opener: Sealer,
}

impl NoiseRx {
    fn new(stream: OwnedReadHalf, key: LessSafeKey, suite: Suite) -> NoiseRx {
        NoiseRx {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            opener: Sealer { key, suite, nonce: 0 },
        }
    }
}

impl FrameRx for NoiseRx {
    async fn recv(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            if let Some(frame) = self.opener.open(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < MAX_FRAME + 2 + TAG_LEN {
                self.buf.reserve(READ_CHUNK);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(TransportError::Protocol("link closed in the middle of a record".into()))
                };
            }
        }
    }
}

#[cfg(test)]
mod tests;
