//! The server: listener, connections, and the state every call shares.
//!
//! Invariants:
//!
//! - **Bounded per connection.** At most [`NfsConfig::max_in_flight`] calls of one
//!   connection run at a time; the next record is not read until one finishes, so a
//!   client that floods is slowed by TCP, not buffered in memory. A record is at most
//!   [`MAX_RECORD`](crate::rpc::MAX_RECORD) bytes, and must arrive within
//!   [`NfsConfig::record_timeout`] once begun.
//! - **Every decoded call is answered**, even if its handler panics (`SYSTEM_ERR`): a
//!   client never waits forever on an `xid` the server forgot. A connection is closed only
//!   when the peer closes it, when a record cannot be read (too long, cut short, too
//!   slow), or when it is not even a call; other connections are unaffected.
//! - **Refused clients reach nothing.** A connection from an address outside
//!   [`NfsConfig::allow_clients`] gets `AUTH_ERROR` for every call it makes; none is
//!   dispatched, so no backend method runs for it.
//! - **Handles are released**: backend open handles live only in the [`HandlePool`],
//!   which is emptied when the server stops.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Buf;
use nfs3_types::nfs3::{nfs_fh3, nfsstat3};
use nfs3_types::rpc::accept_stat_data;
use nfs3_types::xdr_codec::Opaque;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use vfs_core::fh::{FileHandle, Generation, fnv1a_64};
use vfs_core::pool::{HandlePool, PoolStats};
use vfs_core::{Ino, RequestCtx, VirtualFs};

use crate::clients::{self, ClientNet};
use crate::rpc::{self, BadCall, Call, Cred, MAX_RECORD, RecordError, Reply};
use crate::status::nfsstat_of_handle;

/// Whose identity each call runs as (the Linux server's `root_squash`, `no_root_squash`
/// and `all_squash`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Credentials {
    /// The uid and gid of the call's `AUTH_UNIX` credential, as the client states them,
    /// root included (`no_root_squash`: NFS `AUTH_SYS` is trust in the client machine);
    /// `AUTH_NULL` calls run as `anonymous`.
    FromClient {
        /// The identity of `AUTH_NULL` calls.
        anonymous: RequestCtx,
    },
    /// As [`Credentials::FromClient`], except that uid 0 becomes `anonymous`'s uid and
    /// gid 0 its gid (`root_squash`, the default): a client's root is nobody here.
    RootSquash {
        /// The identity root (and `AUTH_NULL`) acts as: `anonuid`/`anongid`.
        anonymous: RequestCtx,
    },
    /// Every call runs as this identity, whatever it claims (`all_squash`).
    Squash(RequestCtx),
}

impl Credentials {
    /// The identity of a call whose credential is `cred`.
    pub(crate) fn ctx(self, cred: &Cred) -> RequestCtx {
        match (self, cred) {
            (Credentials::Squash(ctx), _) => ctx,
            (Credentials::FromClient { anonymous } | Credentials::RootSquash { anonymous }, Cred::Null) => anonymous,
            (Credentials::FromClient { .. }, Cred::Unix { uid, gid, .. }) => RequestCtx::new(*uid, *gid, 0),
            (Credentials::RootSquash { anonymous }, Cred::Unix { uid, gid, .. }) => RequestCtx::new(
                if *uid == 0 { anonymous.uid } else { *uid },
                if *gid == 0 { anonymous.gid } else { *gid },
                0,
            ),
        }
    }
}

/// `nobody`/`nogroup`: the identity of anonymous calls by default.
pub const NOBODY: RequestCtx = RequestCtx::new(65534, 65534, 0);

/// How the server behaves.
///
/// A read-only export is a read-only backend: serve `Arc::new(vfs_core::ReadOnly::new(fs))`;
/// every change is then `NFS3ERR_ROFS` and `ACCESS` grants no write right.
#[derive(Clone, Debug)]
pub struct NfsConfig {
    /// Most backend handles kept open in the [`HandlePool`].
    pub pool_capacity: usize,
    /// Most calls of one connection processed at the same time.
    pub max_in_flight: usize,
    /// How long the rest of a record may take to arrive once its first byte has (zero: no
    /// limit).
    pub record_timeout: Duration,
    /// Whose identity calls run as. Default: `root_squash` to [`NOBODY`].
    pub credentials: Credentials,
    /// The client addresses served (empty: every address). Every call of any other
    /// client, MOUNT and portmapper included, is answered `AUTH_ERROR` (`AUTH_TOOWEAK`)
    /// and reaches nothing else.
    pub allow_clients: Vec<ClientNet>,
}

impl Default for NfsConfig {
    fn default() -> Self {
        NfsConfig {
            pool_capacity: 1024,
            max_in_flight: 16,
            record_timeout: Duration::from_secs(30),
            credentials: Credentials::RootSquash { anonymous: NOBODY },
            allow_clients: Vec::new(),
        }
    }
}

/// What every call of one server shares.
pub(crate) struct Shared<F> {
    pub fs: Arc<F>,
    pub pool: HandlePool<F>,
    pub generation: Generation,
    /// `fsid` of every `fattr3`: the generation, so two exports differ.
    pub fsid: u64,
    /// The WRITE/COMMIT verifier: new on every start of the server, so a client that
    /// wrote UNSTABLE before a restart sees it change and writes again.
    pub write_verf: [u8; 8],
    pub config: NfsConfig,
    pub port: u16,
}

impl<F: VirtualFs> Shared<F> {
    /// The inode named by a file handle from the wire.
    pub fn ino(&self, fh: &[u8]) -> Result<Ino, nfsstat3> {
        self.generation.decode(fh).map_err(nfsstat_of_handle)
    }

    /// The wire handle of `ino`.
    pub fn fh(&self, ino: Ino) -> nfs_fh3 {
        nfs_fh3 {
            data: Opaque::owned(self.generation.handle(ino).as_bytes().to_vec()),
        }
    }

    /// The identity a call runs as.
    pub fn ctx(&self, cred: &Cred) -> RequestCtx {
        self.config.credentials.ctx(cred)
    }
}

/// An NFSv3 server for one [`VirtualFs`], bound and ready to serve.
///
/// One TCP port answers NFS v3, MOUNT v3 and a portmapper (v2 `GETPORT`, which names
/// this port), so a client needs only the address: `nfs://HOST/?nfsport=P&mountport=P`.
pub struct NfsServer<F: VirtualFs> {
    listener: TcpListener,
    shared: Arc<Shared<F>>,
}

impl<F: VirtualFs> NfsServer<F> {
    /// Binds `addr` (port 0 picks a free one) to serve `fs`.
    pub async fn bind(addr: impl ToSocketAddrs, fs: Arc<F>, config: NfsConfig) -> io::Result<NfsServer<F>> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let generation = Generation::of(&*fs);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let seed = format!("{}:{nanos}:{local}:{}", std::process::id(), fs.source_id());
        let shared = Arc::new(Shared {
            pool: HandlePool::new(Arc::clone(&fs), config.pool_capacity),
            fs,
            generation,
            fsid: generation.0,
            write_verf: fnv1a_64(seed.as_bytes()).to_be_bytes(),
            config,
            port: local.port(),
        });
        tracing::info!(%local, source = shared.fs.source_id(), "NFSv3 server listening");
        Ok(NfsServer { listener, shared })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The URL a libnfs client (`nfs-ls`, `nfs-cp`) takes. For a file, libnfs wants the
    /// export spelled out: `nfs://HOST//file?…` (two slashes).
    pub fn url(&self) -> io::Result<String> {
        let a = self.local_addr()?;
        let host = match a {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        Ok(format!("nfs://{host}/?nfsport={0}&mountport={0}", a.port()))
    }

    /// The handle generation (FNV-1a of the backend's source id).
    pub fn generation(&self) -> Generation {
        self.shared.generation
    }

    /// The wire handle the server gives out for `ino`.
    pub fn handle_of(&self, ino: Ino) -> FileHandle {
        self.shared.generation.handle(ino)
    }

    /// What the handle pool has done so far.
    pub fn pool_stats(&self) -> PoolStats {
        self.shared.pool.stats()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self) -> io::Result<()> {
        self.serve_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes; then closes every connection and releases every
    /// backend handle.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tracing::debug!(%peer, "NFS connection");
                        let shared = Arc::clone(&self.shared);
                        conns.spawn(connection(shared, stream, peer));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: wait rather than spin.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
        self.shared.pool.release_all().await;
        Ok(())
    }
}

/// Serves one connection until it closes or misbehaves.
async fn connection<F: VirtualFs>(shared: Arc<Shared<F>>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let refused = !clients::allowed(&shared.config.allow_clients, peer.ip());
    if refused {
        tracing::debug!(%peer, "client not in the allowlist; every call will be AUTH_ERROR");
    }
    let (mut rd, mut wr) = stream.into_split();
    let max = shared.config.max_in_flight.max(1);
    // Room for one reply per call in flight plus one from the reader: never full.
    let (tx, mut rx) = mpsc::channel::<Reply>(max + 1);
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let mut wire = (&reply.head[..]).chain(&reply.data[..]).chain(reply.padding());
            if wr.write_all_buf(&mut wire).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let slots = Arc::new(Semaphore::new(max));
    let mut calls: JoinSet<()> = JoinSet::new();
    let buffers = Arc::new(RecordBuffers::new(max));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        while calls.try_join_next().is_some() {}
        let mut record = buffers.take();
        let got = match timed_record(&mut rd, shared.config.record_timeout, &mut record).await {
            Some(got) => got,
            None => {
                tracing::debug!(%peer, "record not received in time; closing");
                break;
            }
        };
        match got {
            Ok(true) => {}
            Ok(false) => break,
            Err(RecordError::TooLarge(n)) => {
                tracing::debug!(%peer, bytes = n, "record too large; closing");
                break;
            }
            Err(RecordError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "connection ended inside a record");
                break;
            }
        }
        match rpc::decode_call(&record) {
            Err(BadCall::Unreadable) => {
                tracing::debug!(%peer, "not an RPC call; closing");
                break;
            }
            Err(BadCall::Reply(reply)) => {
                buffers.give_back(record);
                if tx.send(reply).await.is_err() {
                    break;
                }
            }
            Ok((call, _)) if refused => {
                buffers.give_back(record);
                if tx.send(rpc::refused(call.xid)).await.is_err() {
                    break;
                }
            }
            Ok((call, args_at)) => {
                let shared = Arc::clone(&shared);
                let buffers = Arc::clone(&buffers);
                let guard = ReplyGuard {
                    xid: call.xid,
                    tx: tx.clone(),
                    sent: false,
                    _slot: slot,
                };
                calls.spawn(async move {
                    let reply = dispatch(&shared, &call, &record[args_at..]).await;
                    buffers.give_back(record);
                    guard.send(reply).await;
                });
            }
        }
    }
    // Answer what was asked before the end (a client may half-close and wait).
    while calls.join_next().await.is_some() {}
    drop(tx);
    let _ = writer.await;
}

/// The record buffers of one connection: a finished call hands its buffer back for a later
/// record. A 1 MiB WRITE then costs no allocation: glibc returns freed blocks of that size
/// to the kernel, and a fresh one is page-faulted in again, which measured 3 to 4 times
/// slower per WRITE (doc/BENCHMARKS.md). At most one buffer per call slot is kept.
struct RecordBuffers {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl RecordBuffers {
    fn new(keep: usize) -> Self {
        RecordBuffers {
            free: std::sync::Mutex::new(Vec::new()),
            keep,
        }
    }

    fn take(&self) -> Vec<u8> {
        self.free.lock().ok().and_then(|mut f| f.pop()).unwrap_or_default()
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut free) = self.free.lock()
            && free.len() < self.keep
        {
            free.push(buf);
        }
    }
}

/// Reads a record, allowing `timeout` from its first byte to its last (an idle
/// connection may wait forever for its next record; a started one may not).
async fn timed_record(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    timeout: Duration,
    buf: &mut Vec<u8>,
) -> Option<Result<bool, RecordError>> {
    let mut probe = [0u8; 1];
    match rd.peek(&mut probe).await {
        Ok(0) => return Some(Ok(false)),
        Ok(_) => {}
        Err(e) => return Some(Err(RecordError::Io(e))),
    }
    if timeout.is_zero() {
        return Some(rpc::read_record(rd, MAX_RECORD, buf).await);
    }
    tokio::time::timeout(timeout, rpc::read_record(rd, MAX_RECORD, buf))
        .await
        .ok()
}

/// Sends the reply of one call, or `SYSTEM_ERR` if the call's task ends without one (its
/// handler panicked): a decoded call is always answered. Holds the call's slot.
struct ReplyGuard {
    xid: u32,
    tx: mpsc::Sender<Reply>,
    sent: bool,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl ReplyGuard {
    async fn send(mut self, reply: Reply) {
        self.sent = true;
        let _ = self.tx.send(reply).await;
    }
}

impl Drop for ReplyGuard {
    fn drop(&mut self) {
        if !self.sent {
            tracing::debug!(xid = self.xid, "NFS call ended without a reply; answering SYSTEM_ERR");
            // Cannot be full (see the channel's capacity); fails only if the writer is gone.
            let _ = self
                .tx
                .try_send(rpc::accepted(self.xid, &accept_stat_data::SYSTEM_ERR, None));
        }
    }
}

/// Runs one call and encodes its reply.
async fn dispatch<F: VirtualFs>(shared: &Shared<F>, call: &Call, args: &[u8]) -> Reply {
    use crate::{mount, nfs};
    let ctx = shared.ctx(&call.cred);
    let (low, high, result) = match call.prog {
        nfs::PROGRAM => (3, 3, (call.vers == 3).then_some(())),
        mount::MOUNT_PROGRAM => (3, 3, (call.vers == 3).then_some(())),
        mount::PORTMAP_PROGRAM => (2, 2, (call.vers == 2).then_some(())),
        _ => return rpc::accepted(call.xid, &accept_stat_data::PROG_UNAVAIL, None),
    };
    if result.is_none() {
        return rpc::accepted(call.xid, &accept_stat_data::PROG_MISMATCH { low, high }, None);
    }
    let answer = match call.prog {
        nfs::PROGRAM => nfs::call(shared, &ctx, call.proc_, args).await,
        mount::MOUNT_PROGRAM => mount::mount_call(shared, &ctx, call.proc_, args).await,
        _ => mount::portmap_call(shared, call.proc_, args),
    };
    match answer {
        Answer::Body(body) => rpc::accepted(call.xid, &accept_stat_data::SUCCESS, Some(&body)),
        Answer::BodyThenData(body, data) => rpc::accepted_with_data(call.xid, &accept_stat_data::SUCCESS, &body, data),
        Answer::Garbage => rpc::accepted(call.xid, &accept_stat_data::GARBAGE_ARGS, None),
        Answer::NoProc => rpc::accepted(call.xid, &accept_stat_data::PROC_UNAVAIL, None),
    }
}

/// What a procedure answers.
pub(crate) enum Answer {
    /// The encoded result.
    Body(Vec<u8>),
    /// The encoded result up to an opaque's length word, then the opaque's bytes (READ).
    BodyThenData(Vec<u8>, bytes::Bytes),
    /// The arguments did not decode.
    Garbage,
    /// No such procedure.
    NoProc,
}

impl From<crate::xdr::Garbage> for Answer {
    fn from(_: crate::xdr::Garbage) -> Self {
        Answer::Garbage
    }
}

/// Encodes a result.
pub(crate) fn body<T: nfs3_types::xdr_codec::Pack>(result: &T) -> Answer {
    let mut out = Vec::with_capacity(result.packed_size());
    match result.pack(&mut out) {
        Ok(_) => Answer::Body(out),
        // Packing into a Vec fails only on values XDR cannot carry (a name over 4 GiB).
        Err(_) => Answer::Garbage,
    }
}

/// Answers single records without a socket: the request path of a connection, from the
/// bytes of one record to the bytes of its reply. For fuzzing (`fuzz/`) and tests.
#[doc(hidden)]
pub struct RecordResponder<F: VirtualFs> {
    shared: Arc<Shared<F>>,
}

impl<F: VirtualFs> RecordResponder<F> {
    /// A responder for `fs`, as a server on port `port` would answer.
    pub fn new(fs: Arc<F>, config: NfsConfig, port: u16) -> Self {
        let generation = Generation::of(&*fs);
        RecordResponder {
            shared: Arc::new(Shared {
                pool: HandlePool::new(Arc::clone(&fs), config.pool_capacity),
                fs,
                generation,
                fsid: generation.0,
                write_verf: [0; 8],
                config,
                port,
            }),
        }
    }

    /// The reply to `record` (the bytes of one record, without its marks), or `None` where
    /// a connection would be closed.
    pub async fn answer(&self, record: &[u8]) -> Option<Vec<u8>> {
        match rpc::decode_call(record) {
            Err(BadCall::Unreadable) => None,
            Err(BadCall::Reply(r)) => Some(r.to_bytes()),
            Ok((call, at)) => Some(dispatch(&self.shared, &call, &record[at..]).await.to_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(uid: u32, gid: u32) -> Cred {
        Cred::Unix {
            uid,
            gid,
            gids: vec![0],
        }
    }

    /// root_squash (the default): uid 0 and gid 0 become the anonymous ids, each on its
    /// own; everyone else is who they say; AUTH_NULL is anonymous.
    #[test]
    fn root_squash_is_the_default_and_maps_only_zero() {
        let c = NfsConfig::default().credentials;
        assert_eq!(c, Credentials::RootSquash { anonymous: NOBODY });
        assert_eq!(c.ctx(&unix(0, 0)), NOBODY);
        assert_eq!(c.ctx(&unix(0, 100)), RequestCtx::new(65534, 100, 0));
        assert_eq!(c.ctx(&unix(1000, 0)), RequestCtx::new(1000, 65534, 0));
        assert_eq!(c.ctx(&unix(1000, 1000)), RequestCtx::new(1000, 1000, 0));
        assert_eq!(c.ctx(&Cred::Null), NOBODY);
        let anon = RequestCtx::new(4000, 4001, 0);
        let c = Credentials::RootSquash { anonymous: anon };
        assert_eq!(c.ctx(&unix(0, 0)), anon, "anonuid/anongid are configurable");
    }

    #[test]
    fn no_root_squash_and_all_squash() {
        let anon = RequestCtx::new(4000, 4001, 0);
        let trusting = Credentials::FromClient { anonymous: anon };
        assert_eq!(trusting.ctx(&unix(0, 0)), RequestCtx::ROOT);
        assert_eq!(trusting.ctx(&Cred::Null), anon);
        let all = Credentials::Squash(anon);
        for cred in [unix(0, 0), unix(1000, 1000), Cred::Null] {
            assert_eq!(all.ctx(&cred), anon);
        }
    }
}
