//! The far side's link to the owner: the current [`RpcClient`], replaced when the link is
//! made again after a failure.
//!
//! Invariant: every call ends within a bounded time. A call made while the link is up
//! ends within [`crate::rpc::LinkConfig::request_timeout`] (and at once with `EIO` if the
//! link dies meanwhile); a call made while it is down waits for the link to come back
//! until [`super::RemoteConfig::down_wait`] after the link went down, then answers
//! `EIO` (so once the link has been down that long, calls fail at once until it is back).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use std::ffi::OsString;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use vfs_core::Attr;
use vfs_core::{DirEntry, DirEntryPlus, Ino, RequestCtx, SetAttr, StatFs, VfsError, VfsResult};

use crate::ops::{Data, ReplyKind, Written};
use crate::rpc::{LinkConfig, LinkFailure, RpcClient};
use crate::transport::{Transport, TransportError};
use crate::wire::{Op, Payload, Reply, VERSION, WireChange};

/// A link just made, with the owner's answer to `Hello`.
pub(crate) struct Connected {
    pub client: Arc<RpcClient>,
    pub notes: mpsc::Receiver<Vec<WireChange>>,
    pub task: JoinHandle<LinkFailure>,
    pub hello: Hello,
}

/// What the owner said about its share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    pub source_id: String,
    pub stable_inodes: bool,
    pub max_io: u32,
}

/// Why a link could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The transport failed or the handshake was refused.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The owner did not answer `Hello` as expected.
    #[error("the peer does not speak this protocol: {0}")]
    Protocol(String),
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send>>;
type Connector = Box<dyn Fn() -> ConnectFuture + Send + Sync>;

pub(crate) struct Session {
    connector: Connector,
    current: Mutex<Option<Arc<RpcClient>>>,
    /// When the link went down (`None` while it is up).
    down_since: Mutex<Option<tokio::time::Instant>>,
    /// Bumped each time a link is installed; callers waiting for one watch it.
    installed: watch::Sender<u64>,
    down_wait: Duration,
    /// Every owner and group the owner reports is shown as this `uid:gid`
    /// ([`super::IdMap::User`]); `None`: as reported.
    pub show_as: Option<(u32, u32)>,
}

impl Session {
    pub fn new<T: Transport>(
        transport: T,
        addr: std::net::SocketAddr,
        peer: crate::identity::PublicKey,
        link: LinkConfig,
        down_wait: Duration,
        show_as: Option<(u32, u32)>,
    ) -> Session {
        let transport = Arc::new(transport);
        let connector: Connector = Box::new(move || {
            let (transport, link) = (Arc::clone(&transport), link.clone());
            Box::pin(async move {
                let l = transport.connect(addr, peer).await?;
                let (client, notes, task) = RpcClient::start(l, link);
                let hello = match client
                    .call(
                        RequestCtx::ROOT,
                        Op::Hello {
                            min_version: VERSION,
                            max_version: VERSION,
                        },
                        Bytes::new(),
                    )
                    .await
                {
                    Ok((
                        Reply::Hello {
                            version,
                            source_id,
                            stable_inodes,
                            max_io,
                        },
                        _,
                    )) if version == VERSION => Hello {
                        source_id,
                        stable_inodes,
                        max_io,
                    },
                    Ok((other, _)) => {
                        client.close();
                        return Err(ConnectError::Protocol(format!("unexpected answer to hello: {other:?}")));
                    }
                    Err(e) => {
                        client.close();
                        return Err(ConnectError::Protocol(format!("hello failed: {e}")));
                    }
                };
                Ok(Connected {
                    client,
                    notes,
                    task,
                    hello,
                })
            })
        });
        Session {
            connector,
            current: Mutex::new(None),
            down_since: Mutex::new(None),
            installed: watch::channel(0).0,
            down_wait,
            show_as,
        }
    }

    /// Makes a new link (does not install it).
    pub async fn connect(&self) -> Result<Connected, ConnectError> {
        (self.connector)().await
    }

    /// Makes `client` the link calls go through.
    pub fn install(&self, client: Arc<RpcClient>) {
        *self.current.lock() = Some(client);
        *self.down_since.lock() = None;
        self.installed.send_modify(|n| *n += 1);
    }

    /// The link is gone: calls wait for the next one (at most `down_wait`).
    pub fn set_down(&self) {
        if let Some(c) = self.current.lock().take() {
            c.close();
        }
        self.down_since.lock().get_or_insert_with(tokio::time::Instant::now);
    }

    /// Closes the link for good.
    pub fn close(&self) {
        self.set_down();
    }

    /// Whether a live link is installed.
    pub fn is_up(&self) -> bool {
        self.current.lock().as_ref().is_some_and(|c| !c.is_dead())
    }

    fn live(&self) -> Option<Arc<RpcClient>> {
        self.current.lock().as_ref().filter(|c| !c.is_dead()).cloned()
    }

    async fn client(&self) -> VfsResult<Arc<RpcClient>> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let mut rx = self.installed.subscribe();
        let wait = async {
            loop {
                if let Some(c) = self.live() {
                    return Some(c);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        let since = *self.down_since.lock().get_or_insert_with(tokio::time::Instant::now);
        match tokio::time::timeout_at(since + self.down_wait, wait).await {
            Ok(Some(c)) => Ok(c),
            _ => Err(VfsError::Io(format!(
                "the link to the peer is down (waited {:?} for it to come back)",
                self.down_wait
            ))),
        }
    }

    /// Calls `op` on the owner: its answer, its errno, or `EIO` (link down, no answer in
    /// time).
    pub async fn call(&self, ctx: &RequestCtx, op: Op, body: Bytes) -> VfsResult<(Reply, Payload)> {
        let client = self.client().await?;
        client.call(*ctx, op, body).await
    }

    /// Like [`Session::call`] but only on the link that is up now, as root (for calls
    /// that are pointless on another link: releases, forgets, reopening after a
    /// reconnection).
    pub async fn call_now(&self, op: Op, body: Bytes) -> VfsResult<(Reply, Payload)> {
        match self.live() {
            Some(c) => c.call(RequestCtx::ROOT, op, body).await,
            None => Err(VfsError::Io("the link to the peer is down".into())),
        }
    }

    /// Typed calls for `ctx` ([`Session::call`]).
    pub fn on<'a>(&'a self, ctx: &'a RequestCtx) -> Caller<'a> {
        Caller {
            session: self,
            ctx: Some(ctx),
        }
    }

    /// Typed calls on the link that is up now ([`Session::call_now`]).
    pub fn now(&self) -> Caller<'_> {
        Caller {
            session: self,
            ctx: None,
        }
    }
}

/// Calls on the owner, one typed method per operation of the table (`crate::ops`): each
/// builds its request and takes the answer of the kind the table declares (any other
/// answer is `EIO`).
#[derive(Clone, Copy)]
pub(crate) struct Caller<'a> {
    session: &'a Session,
    /// `None`: only on the link up now, as root.
    ctx: Option<&'a RequestCtx>,
}

impl Caller<'_> {
    async fn raw(self, op: Op, body: Bytes) -> VfsResult<(Reply, Payload)> {
        match self.ctx {
            Some(ctx) => self.session.call(ctx, op, body).await,
            None => self.session.call_now(op, body).await,
        }
    }
}

macro_rules! typed_calls {
    (@call $snake:ident $V:ident ($($f:ident: $ty:ty),*) $R:ty []) => {
        pub async fn $snake(self, $($f: $ty),*) -> VfsResult<<$R as ReplyKind>::Received> {
            let r = self.raw(Op::$V { $($f),* }, Bytes::new()).await?;
            let mut v = <$R as ReplyKind>::take(r, stringify!($snake))?;
            if let Some((uid, gid)) = self.session.show_as {
                <$R as ReplyKind>::show_as(&mut v, uid, gid);
            }
            Ok(v)
        }
    };
    (@call $snake:ident $V:ident ($($f:ident: $ty:ty),*) $R:ty [$blen:ident]) => {
        /// The payload (`body`) follows the request as data frames.
        pub async fn $snake(self, $($f: $ty,)* body: Bytes) -> VfsResult<<$R as ReplyKind>::Received> {
            let r = self.raw(Op::$V { $($f),* }, body).await?;
            let mut v = <$R as ReplyKind>::take(r, stringify!($snake))?;
            if let Some((uid, gid)) = self.session.show_as {
                <$R as ReplyKind>::show_as(&mut v, uid, gid);
            }
            Ok(v)
        }
    };
    ($($snake:ident $V:ident $code:literal [$(#[$doc:meta])*] {$($f:ident: $ty:ty [$($codec:ty)?] [$($what:literal)?]),*} [$($blen:ident)?] $R:ty [$($plain:tt)*];)*) => {
        // `hello` is sent by the connector, on a link not installed yet.
        #[allow(dead_code)]
        impl Caller<'_> {
            $( typed_calls!(@call $snake $V ($($f: $ty),*) $R [$($blen)?]); )*
        }
    };
}

crate::ops::with_ops!(typed_calls);
