//! Requests and replies over one link: the client side ([`RpcClient`]) and the serving
//! side ([`serve_link`]), both on top of [`crate::mux`] and [`crate::wire`].
//!
//! Invariant: every call ends. A call returns the peer's reply, or `EIO` when the link
//! is gone or the peer did not answer within [`LinkConfig::request_timeout`]; it never
//! waits longer and never returns a reply to another request (replies are matched by id,
//! and a payload is handed out only when exactly its declared length arrived). A link on
//! which the peer sent something that does not decode, or frames out of sequence, is
//! closed with a [`Frame::Goaway`] naming the reason, logged once at info; other links
//! are untouched. A link that is silent for [`LinkConfig::dead_after`] (the client pings
//! every [`LinkConfig::keepalive`]) counts as dead.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use vfs_core::{Errno, RequestCtx, VfsError, VfsResult};

use crate::identity::PublicKey;
use crate::mux::{Outbox, run_writer};
use crate::transport::{FrameRx, FrameTx, Link, TransportError};
use crate::wire::{Frame, Message, Op, Payload, Reassembler, ReassemblyLimits, Reply, Request, WireChange, WireError};

/// Timeouts and limits of a link.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// How long a call waits for its reply before answering `EIO` (30 s).
    pub request_timeout: Duration,
    /// How often the client pings an otherwise quiet link (2 s).
    pub keepalive: Duration,
    /// Silence after which a link is dead (10 s).
    pub dead_after: Duration,
    /// Bytes of bulk payload queued for sending before producers wait (16 MiB).
    pub bulk_budget: usize,
    /// Requests a server runs at once per link; more wait (256).
    pub max_inflight: usize,
    /// Payload reassembly limits (per link, per direction).
    pub reassembly: ReassemblyLimits,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            request_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(2),
            dead_after: Duration::from_secs(10),
            bulk_budget: 16 << 20,
            max_inflight: 256,
            reassembly: ReassemblyLimits::default(),
        }
    }
}

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkFailure {
    /// The transport failed.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The peer sent bytes that do not decode, or frames out of sequence.
    #[error("bad frame from the peer: {0}")]
    Wire(#[from] WireError),
    /// The peer closed the link and said why.
    #[error("the peer closed the link: {0}")]
    Goaway(String),
    /// Nothing arrived for [`LinkConfig::dead_after`].
    #[error("the peer was silent for {0:?}")]
    Silent(Duration),
}

/// The next whole message of a link, `None` at a clean end.
async fn next_message<R: FrameRx>(
    rx: &mut R,
    reasm: &mut Reassembler,
    dead_after: Duration,
) -> Result<Option<Message>, LinkFailure> {
    loop {
        let frame = match tokio::time::timeout(dead_after, rx.recv()).await {
            Ok(r) => r?,
            Err(_) => return Err(LinkFailure::Silent(dead_after)),
        };
        let Some(frame) = frame else {
            return Ok(None);
        };
        if let Some(m) = reasm.push(Frame::decode(frame)?)? {
            return Ok(Some(m));
        }
    }
}

/// Says goodbye on a failing link (best effort, bounded) and stops its writer.
async fn close_with(outbox: &Outbox, writer: JoinHandle<Result<(), TransportError>>, failure: Option<&LinkFailure>) {
    if let Some(f) = failure
        && !matches!(f, LinkFailure::Transport(_) | LinkFailure::Goaway(_))
    {
        let bye = Frame::Goaway { reason: f.to_string() }.encode();
        let _ = tokio::time::timeout(Duration::from_millis(200), outbox.control(bye)).await;
    }
    outbox.close();
    match tokio::time::timeout(Duration::from_secs(1), writer).await {
        Ok(_) => {}
        Err(_) => tracing::debug!("link writer did not stop in time"),
    }
}

// ---------------------------------------------------------------------------------------
// Serving side

/// What a server does with one request: the reply and its payload (which must be as
/// long as the reply declares), or an errno.
pub trait Handler: Send + Sync + 'static {
    /// Answers `req` (with payload `body`) from `peer`.
    fn handle(
        &self,
        peer: PublicKey,
        req: Request,
        body: Payload,
    ) -> impl Future<Output = Result<(Reply, Bytes), Errno>> + Send;
}

/// The serving side's handle on one link: sends change notifications to the peer.
#[derive(Clone)]
pub struct ServerLink {
    outbox: Arc<Outbox>,
    seq: Arc<Mutex<u64>>,
    /// The peer's key.
    pub peer: PublicKey,
}

impl ServerLink {
    /// Sends a batch of changes, in order, as as many notify frames as it takes. Waits
    /// for room; fails only when the link is gone.
    pub async fn notify(&self, changes: Vec<WireChange>) -> Result<(), crate::mux::Closed> {
        let frames = {
            let mut seq = self.seq.lock();
            crate::wire::encode_notify(&mut seq, changes)
        };
        // Frames of one batch are queued by one caller in order; callers that send
        // batches concurrently must serialize themselves (the exporter has one sender).
        for f in frames {
            self.outbox.control(f).await?;
        }
        Ok(())
    }

    /// Closes the link from this side (the peer sees it end; its calls fail with `EIO`).
    pub fn close(&self) {
        self.outbox.close();
    }

    /// Whether the link is still up.
    pub fn is_open(&self) -> bool {
        !self.outbox.is_closed()
    }
}

/// Serves requests arriving on `link` with `handler` until the link ends. Returns the
/// handle for notifications at once and the link's end (clean, or why not) through the
/// returned task.
pub fn serve_link<T: FrameTx, R: FrameRx, H: Handler>(
    link: Link<T, R>,
    handler: Arc<H>,
    cfg: LinkConfig,
) -> (ServerLink, JoinHandle<Result<(), LinkFailure>>) {
    let outbox = Outbox::new(cfg.bulk_budget);
    let writer = tokio::spawn(run_writer(outbox.clone(), link.tx));
    let server = ServerLink {
        outbox: outbox.clone(),
        seq: Arc::new(Mutex::new(0)),
        peer: link.peer,
    };
    let (peer, addr, mut rx) = (link.peer, link.addr, link.rx);
    let task = tokio::spawn(async move {
        let inflight = Arc::new(Semaphore::new(cfg.max_inflight));
        let mut reasm = Reassembler::new(cfg.reassembly);
        let result = loop {
            let msg = match next_message(&mut rx, &mut reasm, cfg.dead_after).await {
                Ok(Some(m)) => m,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            match msg {
                Message::Request { id, req, body } => {
                    let Ok(permit) = inflight.clone().acquire_owned().await else {
                        break Ok(());
                    };
                    let (handler, outbox) = (handler.clone(), outbox.clone());
                    tokio::spawn(async move {
                        let result = handler.handle(peer, req, body).await;
                        let _ = send_reply(&outbox, id, result).await;
                        drop(permit);
                    });
                }
                Message::Other(Frame::Ping { id }) => {
                    if outbox.control(Frame::Pong { id }.encode()).await.is_err() {
                        break Ok(());
                    }
                }
                Message::Other(Frame::Cancel { .. }) | Message::Other(Frame::Pong { .. }) => {}
                Message::Other(Frame::Goaway { reason }) => break Err(LinkFailure::Goaway(reason)),
                Message::Reply { .. } | Message::Other(_) => {
                    break Err(WireError::Sequence("a client sent a reply or notification").into());
                }
            }
        };
        match &result {
            Ok(()) => tracing::info!(%peer, %addr, "peer disconnected"),
            Err(e) => tracing::warn!(%peer, %addr, "closing link: {e}"),
        }
        close_with(&outbox, writer, result.as_ref().err()).await;
        result
    });
    (server, task)
}

async fn send_reply(outbox: &Outbox, id: u64, result: Result<(Reply, Bytes), Errno>) -> Result<(), crate::mux::Closed> {
    match result {
        Ok((reply, body)) if reply.body_len() as usize == body.len() => {
            let head = Frame::Reply { id, result: Ok(reply) }.encode();
            if body.is_empty() {
                outbox.control(head).await
            } else {
                outbox.bulk(id, head, body).await
            }
        }
        Ok(_) => {
            tracing::debug!(id, "handler's payload does not match its reply; answering EIO");
            let f = Frame::Reply {
                id,
                result: Err(Errno::EIO),
            };
            outbox.control(f.encode()).await
        }
        Err(errno) => outbox.control(Frame::Reply { id, result: Err(errno) }.encode()).await,
    }
}

// ---------------------------------------------------------------------------------------
// Client side

type Waiter = oneshot::Sender<VfsResult<(Reply, Payload)>>;

/// The calling side of a link: sends requests, matches replies, hands notifications on.
pub struct RpcClient {
    outbox: Arc<Outbox>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: AtomicU64,
    dead: AtomicBool,
    cfg: LinkConfig,
    peer: PublicKey,
}

fn link_down() -> VfsError {
    VfsError::Io("the link to the peer is down".into())
}

impl RpcClient {
    /// Starts the client side of `link`. Notifications arrive on the returned receiver,
    /// in the order sent (the reader waits when the receiver is full, never drops); the
    /// task ends with the link and says why.
    pub fn start<T: FrameTx, R: FrameRx>(
        link: Link<T, R>,
        cfg: LinkConfig,
    ) -> (Arc<RpcClient>, mpsc::Receiver<Vec<WireChange>>, JoinHandle<LinkFailure>) {
        let outbox = Outbox::new(cfg.bulk_budget);
        let writer = tokio::spawn(run_writer(outbox.clone(), link.tx));
        let client = Arc::new(RpcClient {
            outbox,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dead: AtomicBool::new(false),
            cfg,
            peer: link.peer,
        });
        let (notes_tx, notes_rx) = mpsc::channel(64);
        let task = tokio::spawn(client.clone().read_loop(link.rx, writer, notes_tx));
        (client, notes_rx, task)
    }

    /// The peer's key.
    pub fn peer(&self) -> PublicKey {
        self.peer
    }

    /// Whether the link is gone (every call now fails with `EIO`).
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Closes the link: calls in flight and later fail with `EIO`.
    pub fn close(&self) {
        self.dead.store(true, Ordering::Release);
        self.outbox.close();
        self.fail_all();
    }

    fn fail_all(&self) {
        let waiters: Vec<Waiter> = self.pending.lock().drain().map(|(_, w)| w).collect();
        for w in waiters {
            let _ = w.send(Err(link_down()));
        }
    }

    /// Calls `op` with payload `body` as `ctx`: the reply and its payload, the peer's
    /// errno, or `EIO` if the link is down or the peer did not answer in time.
    pub async fn call(&self, ctx: RequestCtx, op: Op, body: Bytes) -> VfsResult<(Reply, Payload)> {
        if self.is_dead() {
            return Err(link_down());
        }
        if op.body_len() as usize != body.len() {
            return Err(VfsError::Invalid("payload length differs from the request's"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        if self.is_dead() {
            self.pending.lock().remove(&id);
            return Err(link_down());
        }
        let head = Frame::Request {
            id,
            req: Request { ctx, op },
        }
        .encode();
        let exchange = async {
            let sent = if body.is_empty() {
                self.outbox.control(head).await
            } else {
                self.outbox.bulk(id, head, body).await
            };
            if sent.is_err() {
                return Err(link_down());
            }
            rx.await.unwrap_or_else(|_| Err(link_down()))
        };
        match tokio::time::timeout(self.cfg.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => {
                self.pending.lock().remove(&id);
                let _ = self.outbox.control(Frame::Cancel { id }.encode()).await;
                tracing::debug!(id, "request timed out");
                Err(VfsError::Io(format!(
                    "the peer did not answer within {:?}",
                    self.cfg.request_timeout
                )))
            }
        }
    }

    async fn read_loop<R: FrameRx>(
        self: Arc<Self>,
        mut rx: R,
        writer: JoinHandle<Result<(), TransportError>>,
        notes: mpsc::Sender<Vec<WireChange>>,
    ) -> LinkFailure {
        let pinger = {
            let (outbox, every) = (self.outbox.clone(), self.cfg.keepalive);
            tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    tokio::time::sleep(every).await;
                    n += 1;
                    if outbox.control(Frame::Ping { id: n }.encode()).await.is_err() {
                        return;
                    }
                }
            })
        };
        let mut reasm = Reassembler::new(self.cfg.reassembly);
        let mut next_seq = 0u64;
        let failure = loop {
            let msg = match next_message(&mut rx, &mut reasm, self.cfg.dead_after).await {
                Ok(Some(m)) => m,
                Ok(None) => break LinkFailure::Transport(TransportError::Closed),
                Err(e) => break e,
            };
            match msg {
                Message::Reply { id, result, body } => {
                    let waiter = self.pending.lock().remove(&id);
                    match waiter {
                        Some(w) => {
                            let _ = w.send(result.map(|r| (r, body)).map_err(VfsError::from_errno));
                        }
                        None => tracing::trace!(id, "reply for a request no longer waited for"),
                    }
                }
                Message::Other(Frame::Notify { seq, changes }) => {
                    if seq != next_seq {
                        break WireError::Sequence("notify frames out of order").into();
                    }
                    next_seq = seq.wrapping_add(1);
                    if notes.send(changes).await.is_err() {
                        tracing::trace!("notifications no longer read");
                    }
                }
                Message::Other(Frame::Ping { id }) => {
                    let _ = self.outbox.control(Frame::Pong { id }.encode()).await;
                }
                Message::Other(Frame::Pong { .. }) | Message::Other(Frame::Cancel { .. }) => {}
                Message::Other(Frame::Goaway { reason }) => break LinkFailure::Goaway(reason),
                Message::Request { .. } | Message::Other(_) => {
                    break WireError::Sequence("the serving side sent a request").into();
                }
            }
        };
        tracing::warn!(peer = %self.peer, "link closed: {failure}");
        self.dead.store(true, Ordering::Release);
        pinger.abort();
        self.fail_all();
        close_with(&self.outbox, writer, Some(&failure)).await;
        self.fail_all();
        failure
    }
}

#[cfg(test)]
mod tests;
