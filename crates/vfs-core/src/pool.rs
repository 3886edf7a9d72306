//! `HandlePool`: backend open handles, keyed by inode, for stateless front ends (NFS, the
//! P2P exporter), which receive reads and writes with no `OPEN` before them.
//!
//! Invariants:
//!
//! 1. **A handle is released to the backend only when no operation is using it.** Every
//!    use goes through a lease ([`PooledHandle`], a reference-counted pointer to the entry)
//!    taken from the map under the pool's lock, and only from the map. An entry that
//!    leaves the map (eviction, [`HandlePool::invalidate`], replacement, the `EBADF`
//!    upgrade) is *retired*: released at once if no lease holds it, else parked in a
//!    graveyard until its reference count says the last lease is gone — final, since no
//!    lease can be taken any more — and then released by the operation of that last user
//!    or a later one. Releases are queued under the lock, so each handle is released once.
//! 2. **A handle is published only after its first successful use.** A handle the pool
//!    opens is private to the operation that opened it until that operation's read or
//!    write succeeded through it; no other task can find it, replace it or release it
//!    before then.
//! 3. **`EBADF` is an upgrade, never an answer.** A write that gets `EBADF`
//!    ([`VfsError::BadHandle`]) through a pooled handle (opened read-only for an earlier
//!    READ) removes that entry only if it is still the same one (compare-and-remove by
//!    entry id), opens a writable handle, writes through it privately and then publishes
//!    it. No operation of the pool returns `EBADF`: callers hold no handle, so it can mean
//!    nothing to them; should the backend refuse a handle it has just opened, the pool
//!    answers `EIO`. In particular it never becomes "stale".
//! 4. **At most one entry per inode**, and an entry is replaced only by a strictly more
//!    capable one (read-write replaces read-only): when two writers race, the first to
//!    publish wins and the second's private handle is released, so exactly one writable
//!    handle is published.
//! 5. **Bounded**: at most `capacity` entries; beyond that the clock (second-chance)
//!    algorithm evicts, preferring entries that are neither recently used nor in use. An
//!    evicted entry that is in use is released by its last user.
//!
//! Held handles ([`HandlePool::open_held`], [`HandlePool::adopt`]) are the one way to
//! keep a handle for longer than an operation (the P2P exporter holds one per file a peer
//! has open, so that an unlinked file stays readable, as POSIX wants): they never enter
//! the map, so none of the rules above can release them, and they are released through
//! the same queue, once, when their holder closes or drops them.
//!
//! Why: seed 003 (doc/LESSONS.md#seed-003-pr-178; hf-mount PR #178). A READ pooled a read-only handle; the next WRITE
//! used it, got `EBADF`, and the server mapped that to `NFS3ERR_STALE`; macOS then
//! silently dropped the client's buffered writes. The first fix attempt inserted the new
//! writable handle into the pool *before* writing through it, so a second writer racing
//! on the same inode replaced it and released it under the first writer — the same silent
//! loss. Here both are impossible by construction (invariants 1–3).
//!
//! Concurrency: the map, the clock ring, the graveyard and the release queue live behind
//! one [`crate::sync::RwLock`] (a leaf lock: nothing else is locked under it, and it is
//! never held across an `.await`); leases are taken under its read side. Every lock and atomic
//! comes from [`crate::sync`], so `RUSTFLAGS="--cfg loom"` model-checks this very code
//! (`pool::loom_tests`).
//!
//! Releases are asynchronous ([`VirtualFs::release`]), so they are queued under the lock
//! and performed at the end of a pool operation: the one that made them due (evicted an
//! idle entry, ended the last lease of a retired one, lost a publication race) or, if its
//! future was dropped first, a later one. Dropping any pool future at any point leaks no
//! handle, except a release that was already being awaited.
//!
//! Permissions: a pooled handle was opened with the credentials of the request that
//! opened it and is reused for later requests on the same inode. A front end serving
//! several users checks each request's permission itself (e.g. with
//! [`VirtualFs::access`]) before calling the pool, as NFS servers do.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc as StdArc;

use bytes::Bytes;
use rustc_hash::FxHasher;

use crate::error::{VfsError, VfsResult};
use crate::sync::atomic::{AtomicBool, Ordering, fence};
use crate::sync::{Arc, RwLock};
use crate::types::{AccessMode, Fh, Ino, OpenFlags, RequestCtx};
use crate::vfs::VirtualFs;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(test)]
mod test_fs;
#[cfg(all(test, not(loom)))]
mod tests;

/// A pooled backend handle.
struct Entry {
    ino: Ino,
    fh: Fh,
    mode: AccessMode,
    /// The credentials it was opened with (used again to release it).
    ctx: RequestCtx,
    /// Unique per pool: what compare-and-remove compares.
    id: u64,
    /// Clock reference bit.
    referenced: AtomicBool,
}

/// A handle that must be released.
#[derive(Clone, Copy, Debug)]
struct Doomed {
    ino: Ino,
    fh: Fh,
    ctx: RequestCtx,
}

impl Entry {
    fn doomed(&self) -> Doomed {
        Doomed {
            ino: self.ino,
            fh: self.fh,
            ctx: self.ctx,
        }
    }
}

type Map = HashMap<Ino, Arc<Entry>, BuildHasherDefault<FxHasher>>;

struct State {
    map: Map,
    /// Clock order: `(ino, id)` of every entry in `map`, plus stale pairs of entries that
    /// left it (skipped and dropped when met, compacted when they pile up).
    ring: VecDeque<(Ino, u64)>,
    /// Retired entries that were in use when they left the map. Leases are `Arc` clones
    /// taken only from the map, so once an entry here is down to this one reference
    /// (`strong_count == 1`) nobody can use it again and it is moved to `doomed`.
    graveyard: Vec<Arc<Entry>>,
    /// Handles to release, by whoever drains the queue next.
    doomed: Vec<Doomed>,
    next_id: u64,
    stats: PoolStats,
}

/// Counters of what the pool did (a snapshot from [`HandlePool::stats`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PoolStats {
    /// Handles published (entered the pool).
    pub published: u64,
    /// Of which writable.
    pub published_writable: u64,
    /// Handles offered for publication but not published because the pooled entry was not
    /// strictly less capable (the losing writer of a race, a reader behind a writer).
    pub declined: u64,
    /// Entries removed after the backend answered `EBADF` through them (the upgrade path).
    pub upgrades: u64,
    /// Entries evicted for capacity or by [`HandlePool::trim`].
    pub evicted: u64,
    /// Entries removed by [`HandlePool::invalidate`] or [`HandlePool::release_all`].
    pub invalidated: u64,
    /// Writable entries that left the pool, for any reason.
    pub retired_writable: u64,
    /// Handles queued for release to the backend (released by the operation that queued
    /// them, or the next one).
    pub releases_queued: u64,
}

/// Backend handles pooled by inode: see the [module documentation](self).
pub struct HandlePool<F> {
    fs: StdArc<F>,
    state: RwLock<State>,
    /// Whether `State::doomed` is non-empty, and whether `State::graveyard` is. Written
    /// only under the write lock, read without it: a stale `false` only defers a release
    /// to a later operation, and a thread that queued a release sees its own `true` or the
    /// `false` of the drainer that took it.
    has_doomed: AtomicBool,
    has_graveyard: AtomicBool,
    capacity: usize,
}

impl<F> fmt::Debug for HandlePool<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlePool")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Whether a handle of mode `have` can do everything one of mode `want` can.
fn covers(have: AccessMode, want: AccessMode) -> bool {
    (have.can_read() || !want.can_read()) && (have.can_write() || !want.can_write())
}

/// The pool's answer for a backend error: `EBADF` becomes `EIO` (see invariant 3).
fn hide_ebadf(e: VfsError) -> VfsError {
    match e {
        VfsError::BadHandle => VfsError::Io("backend refused a handle it had just opened (EBADF)".into()),
        other => other,
    }
}

/// A lease on a pooled handle: while it lives, the handle is not released.
///
/// Dropping it ends the use. If the entry left the pool meanwhile and this was its last
/// user, the release is performed by the next pool operation, or at once by
/// [`PooledHandle::done`].
#[must_use = "dropping the lease at once makes the handle useless"]
pub struct PooledHandle<'a, F> {
    pool: &'a HandlePool<F>,
    entry: Arc<Entry>,
}

impl<F> fmt::Debug for PooledHandle<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledHandle")
            .field("ino", &self.entry.ino)
            .field("fh", &self.entry.fh)
            .field("mode", &self.entry.mode)
            .finish()
    }
}

impl<F> PooledHandle<'_, F> {
    /// The inode.
    pub fn ino(&self) -> Ino {
        self.entry.ino
    }
    /// The backend handle, valid while this lease lives.
    pub fn fh(&self) -> Fh {
        self.entry.fh
    }
    /// The access mode it was opened with.
    pub fn mode(&self) -> AccessMode {
        self.entry.mode
    }
}

impl<F: VirtualFs> PooledHandle<'_, F> {
    /// Ends the use and performs any release it made due.
    pub async fn done(self) {
        let pool = self.pool;
        drop(self);
        pool.release_pending().await;
    }
}

/// A handle held by one caller for as long as it likes, outside the pool's map (see
/// [`HandlePool::open_held`]). Closing or dropping it releases the handle through the
/// pool's release queue, so it is released exactly once, by [`HeldHandle::close`] or
/// by the pool's next operation.
pub struct HeldHandle<F> {
    pool: StdArc<HandlePool<F>>,
    handle: Option<Doomed>,
    flags: OpenFlags,
}

impl<F> fmt::Debug for HeldHandle<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldHandle")
            .field("handle", &self.handle)
            .field("flags", &self.flags)
            .finish()
    }
}

impl<F> HeldHandle<F> {
    /// The backend handle, valid while this lives.
    pub fn fh(&self) -> Fh {
        self.handle.map_or(Fh(u64::MAX), |d| d.fh)
    }
    /// The inode.
    pub fn ino(&self) -> Ino {
        self.handle.map_or(Ino(0), |d| d.ino)
    }
    /// The flags it was opened with.
    pub fn flags(&self) -> OpenFlags {
        self.flags
    }
    /// Its access mode.
    pub fn mode(&self) -> AccessMode {
        self.flags.access()
    }
}

impl<F: VirtualFs> HeldHandle<F> {
    /// Releases the handle now.
    pub async fn close(mut self) {
        if let Some(d) = self.handle.take() {
            {
                let mut st = self.pool.state.write();
                self.pool.doom(&mut st, d);
            }
            self.pool.release_pending().await;
        }
    }
}

impl<F> Drop for HeldHandle<F> {
    fn drop(&mut self) {
        if let Some(d) = self.handle.take() {
            let mut st = self.pool.state.write();
            self.pool.doom(&mut st, d);
        }
    }
}

/// A handle the pool opened and has not published: private to one operation. Dropped
/// unpublished (an error, or the future was cancelled), it is queued for release.
struct Private<'a, F> {
    pool: &'a HandlePool<F>,
    handle: Doomed,
    mode: AccessMode,
    published: bool,
}

impl<F> Private<'_, F> {
    fn fh(&self) -> Fh {
        self.handle.fh
    }

    /// Offers the handle to the pool (invariant 4); the operation must not use it after.
    fn publish(mut self) {
        self.published = true;
        self.pool.publish_entry(self.handle, self.mode);
    }
}

impl<F> Drop for Private<'_, F> {
    fn drop(&mut self) {
        if !self.published {
            let mut st = self.pool.state.write();
            self.pool.doom(&mut st, self.handle);
        }
    }
}

impl<F> HandlePool<F> {
    /// A pool over `fs` holding at most `capacity` handles (at least 1).
    pub fn new(fs: StdArc<F>, capacity: usize) -> Self {
        HandlePool {
            fs,
            state: RwLock::new(State {
                map: Map::default(),
                ring: VecDeque::new(),
                graveyard: Vec::new(),
                doomed: Vec::new(),
                next_id: 1,
                stats: PoolStats::default(),
            }),
            has_doomed: AtomicBool::new(false),
            has_graveyard: AtomicBool::new(false),
            capacity: capacity.max(1),
        }
    }

    /// The backend.
    pub fn fs(&self) -> &StdArc<F> {
        &self.fs
    }

    /// The most handles the pool keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of pooled handles.
    pub fn len(&self) -> usize {
        self.state.read().map.len()
    }

    /// Whether no handle is pooled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the pool has done so far.
    pub fn stats(&self) -> PoolStats {
        self.state.read().stats
    }

    /// The handle pooled for `ino` and its mode, if any (a snapshot, for tests and
    /// diagnostics; use [`HandlePool::get`] to use it).
    pub fn peek(&self, ino: Ino) -> Option<(Fh, AccessMode)> {
        self.state.read().map.get(&ino).map(|e| (e.fh, e.mode))
    }

    /// A lease on the handle pooled for `ino`, whatever its mode. The handle stays open
    /// while the lease lives, even if the entry is evicted or replaced meanwhile.
    pub fn get(&self, ino: Ino) -> Option<PooledHandle<'_, F>> {
        let st = self.state.read();
        let e = st.map.get(&ino)?;
        // The clone is the lease: taken under the read lock while the entry is in the
        // map, so never from the graveyard.
        if !e.referenced.load(Ordering::Relaxed) {
            e.referenced.store(true, Ordering::Relaxed);
        }
        Some(PooledHandle {
            pool: self,
            entry: Arc::clone(e),
        })
    }

    /// Hands the pool a handle that the caller opened and has used successfully (e.g. the
    /// one `create` returned, after the first write). The caller must not use `fh` after
    /// this call. Returns whether it was published; if not (the pooled entry is not
    /// strictly less capable), it is queued for release.
    pub fn publish(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, mode: AccessMode) -> bool {
        self.publish_entry(Doomed { ino, fh, ctx: *ctx }, mode)
    }

    fn publish_entry(&self, d: Doomed, mode: AccessMode) -> bool {
        let mut st = self.state.write();
        // Invariant 4: replace only by a strictly more capable handle.
        if let Some(cur) = st.map.get(&d.ino)
            && (covers(cur.mode, mode) || !covers(mode, cur.mode))
        {
            st.stats.declined += 1;
            self.doom(&mut st, d);
            return false;
        }
        let id = st.next_id;
        st.next_id += 1;
        let entry = Arc::new(Entry {
            ino: d.ino,
            fh: d.fh,
            mode,
            ctx: d.ctx,
            id,
            // Set, as CLOCK does for a new page: a fresh entry survives one sweep.
            referenced: AtomicBool::new(true),
        });
        st.stats.published += 1;
        if mode.can_write() {
            st.stats.published_writable += 1;
        }
        if let Some(old) = st.map.insert(d.ino, entry) {
            self.retire(&mut st, old);
        }
        st.ring.push_back((d.ino, id));
        while st.map.len() > self.capacity {
            if !self.evict_one(&mut st) {
                break;
            }
        }
        self.compact(&mut st);
        true
    }

    /// Removes the entry of `ino` if it is still entry `id` (compare-and-remove).
    fn remove_if_same(&self, ino: Ino, id: u64) -> bool {
        let mut st = self.state.write();
        if st.map.get(&ino).is_none_or(|e| e.id != id) {
            return false;
        }
        if let Some(e) = st.map.remove(&ino) {
            st.stats.upgrades += 1;
            self.retire(&mut st, e);
        }
        self.compact(&mut st);
        true
    }

    /// Retires `e`, the map's reference to an entry just removed from it: dooms it now
    /// if that was the last reference, else parks it in the graveyard until its users'
    /// leases are gone.
    fn retire(&self, st: &mut State, e: Arc<Entry>) {
        if e.mode.can_write() {
            st.stats.retired_writable += 1;
        }
        if Self::unused(&e) {
            self.doom(st, e.doomed());
        } else {
            st.graveyard.push(e);
            self.has_graveyard.store(true, Ordering::Release);
        }
    }

    /// Whether `e`, out of the map, has no lease left. Final: a lease is only ever taken
    /// from the map. The fence orders the users' last accesses (their `Arc` drops are
    /// release operations) before the release to the backend.
    fn unused(e: &Arc<Entry>) -> bool {
        let unused = Arc::strong_count(e) == 1;
        if unused {
            fence(Ordering::Acquire);
        }
        unused
    }

    fn doom(&self, st: &mut State, d: Doomed) {
        st.doomed.push(d);
        st.stats.releases_queued += 1;
        self.has_doomed.store(true, Ordering::Release);
    }

    /// Dooms the graveyard's entries that no lease holds any more.
    fn sweep(&self, st: &mut State) {
        let mut i = 0;
        while i < st.graveyard.len() {
            if Self::unused(&st.graveyard[i]) {
                let e = st.graveyard.swap_remove(i);
                self.doom(st, e.doomed());
            } else {
                i += 1;
            }
        }
    }

    /// Evicts one entry by the clock: skip (and clear) recently used ones and skip ones in
    /// use, for at most two turns of the ring; then take the next one regardless (its
    /// release waits for its users). Returns `false` if there was nothing to evict.
    fn evict_one(&self, st: &mut State) -> bool {
        let mut patience = 2 * st.ring.len();
        while let Some((ino, id)) = st.ring.pop_front() {
            let Some(e) = st.map.get(&ino).filter(|e| e.id == id) else {
                continue; // stale ring slot of an entry that already left
            };
            if patience > 0 {
                patience -= 1;
                let recently_used = e.referenced.swap(false, Ordering::Relaxed);
                if recently_used || Arc::strong_count(e) > 1 {
                    st.ring.push_back((ino, id));
                    continue;
                }
            }
            if let Some(e) = st.map.remove(&ino) {
                st.stats.evicted += 1;
                self.retire(st, e);
            }
            return true;
        }
        false
    }

    /// Drops stale ring slots once they outnumber live ones.
    fn compact(&self, st: &mut State) {
        if st.ring.len() > 2 * st.map.len() + 16 {
            let State { map, ring, .. } = st;
            ring.retain(|(ino, id)| map.get(ino).is_some_and(|e| e.id == *id));
        }
    }

    /// One due release, if any. The common case, nothing retired, costs two loads; while
    /// retired entries are still in use, a shared lock.
    fn pop_doomed(&self) -> Option<Doomed> {
        if !self.has_doomed.load(Ordering::Acquire) {
            if !self.has_graveyard.load(Ordering::Acquire) {
                return None;
            }
            if !self.state.read().graveyard.iter().any(Self::unused) {
                return None;
            }
        }
        let mut st = self.state.write();
        self.sweep(&mut st);
        let d = st.doomed.pop();
        if st.doomed.is_empty() {
            self.has_doomed.store(false, Ordering::Release);
        }
        if st.graveyard.is_empty() {
            self.has_graveyard.store(false, Ordering::Release);
        }
        d
    }

    /// Removes the entry of `ino`, if any, for good.
    fn remove(&self, ino: Ino) {
        let mut st = self.state.write();
        if let Some(e) = st.map.remove(&ino) {
            st.stats.invalidated += 1;
            self.retire(&mut st, e);
        }
        self.compact(&mut st);
    }

    /// Removes every entry.
    fn remove_all(&self) {
        let mut st = self.state.write();
        let entries: Vec<Arc<Entry>> = st.map.drain().map(|(_, e)| e).collect();
        st.ring.clear();
        for e in entries {
            st.stats.invalidated += 1;
            self.retire(&mut st, e);
        }
    }

    /// Evicts by the clock until at most `max` entries remain.
    fn shrink_to(&self, max: usize) {
        let mut st = self.state.write();
        while st.map.len() > max {
            if !self.evict_one(&mut st) {
                break;
            }
        }
        self.compact(&mut st);
    }
}

impl<F: VirtualFs> HandlePool<F> {
    /// Reads through any pooled handle of `ino`, or through a new read-only one that is
    /// published after the read succeeded.
    pub async fn read(&self, ctx: &RequestCtx, ino: Ino, offset: u64, size: u32) -> VfsResult<Bytes> {
        let r = match self.get(ino) {
            Some(h) => match self.fs.read(ctx, ino, h.fh(), offset, size).await {
                // A write-only handle (pooled for a file we may not read) keeps its place;
                // a readable one the backend refuses is dropped if still the same.
                Err(VfsError::BadHandle) => {
                    if h.mode().can_read() {
                        self.remove_if_same(ino, h.entry.id);
                    }
                    drop(h);
                    self.read_private(ctx, ino, offset, size).await
                }
                other => other,
            },
            None => self.read_private(ctx, ino, offset, size).await,
        };
        self.settle().await;
        r.map_err(hide_ebadf)
    }

    /// Reads through a new read-only handle, published once the read succeeded.
    async fn read_private(&self, ctx: &RequestCtx, ino: Ino, offset: u64, size: u32) -> VfsResult<Bytes> {
        // No mode weaker than O_RDONLY can read: EACCES here is the answer.
        let private = self.open_private(ctx, ino, OpenFlags::RDONLY).await?;
        let data = self.fs.read(ctx, ino, private.fh(), offset, size).await?;
        private.publish();
        Ok(data)
    }

    /// Writes through the pooled handle of `ino`; if it was opened read-only (the backend
    /// answers `EBADF`), replaces it by a writable handle that is published only after
    /// this write succeeded through it.
    pub async fn write(&self, ctx: &RequestCtx, ino: Ino, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let r = match self.get(ino) {
            Some(h) => match self.fs.write(ctx, ino, h.fh(), offset, data).await {
                Err(VfsError::BadHandle) => {
                    // Read-only (seed 003 (doc/LESSONS.md#seed-003)): drop it from the pool, but only if nobody has
                    // replaced it meanwhile; its readers keep it until they finish.
                    self.remove_if_same(ino, h.entry.id);
                    drop(h);
                    self.write_private(ctx, ino, offset, data).await
                }
                other => other,
            },
            None => self.write_private(ctx, ino, offset, data).await,
        };
        self.settle().await;
        r.map_err(hide_ebadf)
    }

    /// Writes through a new writable handle, published only once the write succeeded.
    async fn write_private(&self, ctx: &RequestCtx, ino: Ino, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let private = match self.open_private(ctx, ino, OpenFlags::RDWR).await {
            Err(VfsError::Access) => self.open_private(ctx, ino, OpenFlags::WRONLY).await?,
            other => other?,
        };
        // Private until this write succeeded: no other task can find, replace or
        // release it in between (the #178 race).
        let n = self.fs.write(ctx, ino, private.fh(), offset, data).await?;
        private.publish();
        Ok(n)
    }

    /// Makes the data of `ino` durable (`fsync(2)`, or `fdatasync(2)` if `datasync`)
    /// through the pooled handle, or, if none is pooled, through a new read-only handle that
    /// is published once the fsync succeeded. What a stateless front end calls before it
    /// tells a client its write is stable (NFS `FILE_SYNC`, `COMMIT`).
    ///
    /// Durability is per file in every backend this crate knows (the host's page cache,
    /// `MemFs`), so an fsync through any handle of the inode covers writes made through
    /// the others. A backend that buffers writes per handle must flush them on `release`
    /// (the pool releases every handle it retires) or on `fsync` of any handle.
    pub async fn fsync(&self, ctx: &RequestCtx, ino: Ino, datasync: bool) -> VfsResult<()> {
        let r = match self.get(ino) {
            Some(h) => match self.fs.fsync(ctx, ino, h.fh(), datasync).await {
                Err(VfsError::BadHandle) => {
                    drop(h);
                    self.fsync_private(ctx, ino, datasync).await
                }
                other => other,
            },
            None => self.fsync_private(ctx, ino, datasync).await,
        };
        self.settle().await;
        r.map_err(hide_ebadf)
    }

    /// Fsyncs through a new read-only handle, published once the fsync succeeded.
    async fn fsync_private(&self, ctx: &RequestCtx, ino: Ino, datasync: bool) -> VfsResult<()> {
        // A file the caller may write but not read (mode 0200) is fsynced write-only.
        let private = match self.open_private(ctx, ino, OpenFlags::RDONLY).await {
            Err(VfsError::Access) => self.open_private(ctx, ino, OpenFlags::WRONLY).await?,
            other => other?,
        };
        self.fs.fsync(ctx, ino, private.fh(), datasync).await?;
        private.publish();
        Ok(())
    }

    /// Opens `ino` with `flags` for a caller that keeps the handle for a while (the P2P
    /// exporter, for each file a peer has open): the backend checks the caller's access
    /// and applies `O_TRUNC` as in any `open`. The handle is never published: it belongs
    /// to the returned [`HeldHandle`] alone, so no eviction or upgrade can release it
    /// under its holder, and it keeps an unlinked file alive until the holder lets go.
    pub async fn open_held(
        self: &StdArc<Self>,
        ctx: &RequestCtx,
        ino: Ino,
        flags: OpenFlags,
    ) -> VfsResult<HeldHandle<F>> {
        let fh = self.fs.open(ctx, ino, flags).await?;
        Ok(self.adopt(ctx, ino, fh, flags))
    }

    /// Takes charge of `fh`, a handle of `ino` the caller opened (e.g. the one `create`
    /// returned) with `flags`: it is released through this pool when the returned
    /// [`HeldHandle`] is closed or dropped.
    pub fn adopt(self: &StdArc<Self>, ctx: &RequestCtx, ino: Ino, fh: Fh, flags: OpenFlags) -> HeldHandle<F> {
        HeldHandle {
            pool: StdArc::clone(self),
            handle: Some(Doomed { ino, fh, ctx: *ctx }),
            flags,
        }
    }

    /// Performs the releases due, if any (the common case costs one load).
    async fn settle(&self) {
        if self.has_doomed.load(Ordering::Acquire) || self.has_graveyard.load(Ordering::Acquire) {
            self.release_pending().await;
        }
    }

    async fn open_private(&self, ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Private<'_, F>> {
        let fh = self.fs.open(ctx, ino, flags).await?;
        Ok(Private {
            pool: self,
            handle: Doomed { ino, fh, ctx: *ctx },
            mode: flags.access(),
            published: false,
        })
    }

    /// Removes the entry of `ino` (after unlink, rename over it, or a remote change) and
    /// releases it once idle.
    pub async fn invalidate(&self, ino: Ino) {
        self.remove(ino);
        self.release_pending().await;
    }

    /// Evicts idle entries, least recently used first by the clock, until at most `max`
    /// remain (entries in use are evicted last and released by their last user).
    pub async fn trim(&self, max: usize) {
        self.shrink_to(max);
        self.release_pending().await;
    }

    /// Empties the pool and releases every handle that is not in use; handles in use are
    /// released when their operations finish. Call before dropping the pool: dropping it
    /// releases nothing.
    pub async fn release_all(&self) {
        self.remove_all();
        self.release_pending().await;
    }

    /// Releases the handles whose release is due (normally done by each operation).
    pub async fn release_pending(&self) {
        // One at a time, so that no other drainer waits on a batch this one holds.
        while let Some(d) = self.pop_doomed() {
            if let Err(e) = self.fs.release(&d.ctx, d.ino, d.fh).await {
                tracing::debug!(ino = d.ino.0, fh = d.fh.0, error = %e, "handle pool: release failed");
            }
        }
    }
}
