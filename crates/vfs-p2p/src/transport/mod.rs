//! The transport: an authenticated, encrypted, ordered duplex of frames between two
//! peers that know each other's public keys, behind a small trait so that another
//! implementation (QUIC, iroh for NAT traversal) can be added without touching the
//! filesystem layer.
//!
//! Invariant: a [`Link`] exists only after the handshake proved that the far side holds
//! the private key of [`Link::peer`], and that key was accepted (pinned by the
//! connecting side, on the allowlist of the accepting side). A refused peer never gets
//! a `Link`: the accepting side reads nothing from it after the handshake. Every frame
//! is at most [`MAX_FRAME`] bytes, delivered whole, once, in order, or the link fails;
//! a failure of decryption or framing ends the link with a [`TransportError`], never a
//! panic. Frames carry no meaning here: the wire format (`crate::wire`) gives them one.

pub mod noise;

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::identity::PublicKey;

/// Largest frame a transport carries (the Noise limit: a 65535-byte message less its
/// 16-byte tag).
pub const MAX_FRAME: usize = 65_519;

/// Why a link could not be made or broke.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket failed (connection refused, reset, ...).
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The peer does not follow the handshake or record format.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The peer's bytes failed authentication (wrong key, tampering, or a bug).
    #[error("a record failed authentication; closing the link")]
    Decrypt,
    /// The accepting peer refused our key: it is not on its allowlist.
    #[error(
        "the peer refused our key {ours}: it is not on the peer's allowlist (run `p2p share ... --allow {ours}` there)"
    )]
    Refused {
        /// Our own public key, for the message.
        ours: PublicKey,
    },
    /// The peer proved a key other than the one we pinned.
    #[error("the peer's key is {got}, not the pinned {expected}")]
    WrongPeer {
        /// The key we pinned.
        expected: PublicKey,
        /// The key the peer proved.
        got: PublicKey,
    },
    /// The handshake did not finish in time.
    #[error("the handshake timed out")]
    Timeout,
    /// A frame larger than [`MAX_FRAME`] was offered to send.
    #[error("frame of {0} bytes exceeds the maximum of {MAX_FRAME}")]
    FrameTooLarge(usize),
    /// The link was closed.
    #[error("the link is closed")]
    Closed,
}

/// The sending half of a link.
pub trait FrameTx: Send + 'static {
    /// Encrypts one frame, the concatenation of `parts` (at most [`MAX_FRAME`] bytes in
    /// all), into the send buffer. Nothing reaches the network until [`FrameTx::flush`].
    fn push(&mut self, parts: &[&[u8]]) -> Result<(), TransportError>;
    /// Bytes encrypted and not yet flushed.
    fn buffered(&self) -> usize;
    /// Writes everything buffered to the network.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Flushes, then closes the sending direction.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// The receiving half of a link.
pub trait FrameRx: Send + 'static {
    /// The next frame, or `None` when the peer closed the link cleanly between frames.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, TransportError>> + Send;
}

/// An authenticated link: who is on the other end, and the two halves.
pub struct Link<T, R> {
    /// The far side's proven public key.
    pub peer: PublicKey,
    /// The far side's address, for logs.
    pub addr: SocketAddr,
    /// Sending half.
    pub tx: T,
    /// Receiving half.
    pub rx: R,
}

/// Accepts authenticated links.
pub trait Listener: Send + 'static {
    /// Sending half of an accepted link.
    type Tx: FrameTx;
    /// Receiving half of an accepted link.
    type Rx: FrameRx;
    /// The address actually bound.
    fn local_addr(&self) -> SocketAddr;
    /// The next link whose handshake succeeded and whose key is allowed. Refused and
    /// failed handshakes are logged and skipped; they never reach the caller.
    fn accept(&mut self) -> impl Future<Output = Result<Link<Self::Tx, Self::Rx>, TransportError>> + Send;
}

/// A way of making authenticated links: the one thing the filesystem layer knows about
/// the network.
pub trait Transport: Send + Sync + 'static {
    /// Sending half of a link.
    type Tx: FrameTx;
    /// Receiving half of a link.
    type Rx: FrameRx;
    /// Accepting side.
    type Listener: Listener<Tx = Self::Tx, Rx = Self::Rx>;

    /// Connects to `addr` and proves that the far side holds the private key of `peer`.
    fn connect(
        &self,
        addr: SocketAddr,
        peer: PublicKey,
    ) -> impl Future<Output = Result<Link<Self::Tx, Self::Rx>, TransportError>> + Send;

    /// Listens on `addr`, accepting only peers whose key `allow` holds.
    fn listen(
        &self,
        addr: SocketAddr,
        allow: crate::identity::Allowlist,
    ) -> impl Future<Output = Result<Self::Listener, TransportError>> + Send;
}
