//! A small recording backend for the pool's tests and loom models.
//!
//! Invariant it checks: no handle is used after its release, released while an operation
//! is in flight on it, or released twice; every such event is recorded as a violation,
//! and [`TestFs::open_handles`] counts handles opened and not yet released (leaks). Its
//! handles record their access mode: a write through a read-only handle fails with
//! `EBADF`, as [`VirtualFs`] requires.
//!
//! Its state sits behind a `std` mutex on purpose: the mutex is held only for a few
//! instructions and never across a yield, so under loom it adds no interleavings; the
//! model explores the pool's locks, not this fake's.

#![cfg_attr(loom, allow(dead_code))]

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::error::{VfsError, VfsResult};
use crate::types::{
    AccessMode, Attr, DirEntry, Fh, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs,
};
use crate::vfs::VirtualFs;

struct File {
    data: Vec<u8>,
    perm: u16,
    uid: u32,
}

struct Handle {
    ino: Ino,
    mode: AccessMode,
    released: bool,
    in_flight: usize,
}

#[derive(Default)]
struct Inner {
    files: HashMap<Ino, File>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    opened: u64,
    released: u64,
    opens: Vec<(Ino, AccessMode)>,
    violations: Vec<String>,
    refuse_writes: bool,
}

/// The fake backend: a flat set of regular files.
pub(crate) struct TestFs {
    inner: Mutex<Inner>,
    yields: bool,
    /// Touched at the start and in the middle of every operation: under loom these are
    /// the points where another thread may run, as it could during a real backend call.
    ticks: crate::sync::atomic::AtomicUsize,
}

/// Ready on the second poll (after waking its waker): a point where another task may run.
#[derive(Default)]
pub(crate) struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl TestFs {
    /// A backend whose every operation yields once in its middle (for interleaving tests).
    pub(crate) fn new() -> Self {
        TestFs {
            inner: Mutex::new(Inner {
                next_fh: 1,
                ..Inner::default()
            }),
            yields: true,
            ticks: crate::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A backend whose operations complete without yielding to the executor (loom models;
    /// loom still preempts at each operation's start and middle).
    #[cfg_attr(not(loom), allow(dead_code))]
    pub(crate) fn without_yields() -> Self {
        TestFs {
            yields: false,
            ..TestFs::new()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A point inside an operation where other tasks (and, under loom, other threads) run.
    async fn pause(&self) {
        self.tick();
        if self.yields {
            YieldNow(false).await;
        }
    }

    fn tick(&self) {
        self.ticks.fetch_add(1, crate::sync::atomic::Ordering::Relaxed);
    }

    /// Adds a regular file owned by root, mode 0644.
    pub(crate) fn add_file(&self, ino: Ino, data: &[u8]) {
        self.add_file_as(ino, data, 0o644, 0);
    }

    /// Adds a regular file with these permission bits and owner.
    pub(crate) fn add_file_as(&self, ino: Ino, data: &[u8], perm: u16, uid: u32) {
        self.lock().files.insert(
            ino,
            File {
                data: data.to_vec(),
                perm,
                uid,
            },
        );
    }

    /// Makes every write fail with `EBADF`, even through writable handles.
    pub(crate) fn refuse_writes(&self) {
        self.lock().refuse_writes = true;
    }

    /// The file's bytes.
    pub(crate) fn contents(&self, ino: Ino) -> Vec<u8> {
        self.lock().files.get(&ino).map(|f| f.data.clone()).unwrap_or_default()
    }

    /// Handles opened so far.
    pub(crate) fn opened(&self) -> u64 {
        self.lock().opened
    }

    /// Handles released so far.
    pub(crate) fn released(&self) -> u64 {
        self.lock().released
    }

    /// Handles opened and not released.
    pub(crate) fn open_handles(&self) -> u64 {
        let g = self.lock();
        g.opened - g.released
    }

    /// Every open, in order, with its mode.
    pub(crate) fn opens(&self) -> Vec<(Ino, AccessMode)> {
        self.lock().opens.clone()
    }

    /// Use-after-release, release-while-in-use and double-release events.
    pub(crate) fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    fn begin(&self, ino: Ino, fh: Fh, op: &str) -> VfsResult<AccessMode> {
        self.tick();
        let mut g = self.lock();
        let msg = match g.handles.get_mut(&fh.0) {
            None => format!("{op} through unknown {fh:?}"),
            Some(h) if h.released => format!("{op} through released {fh:?} (use after release)"),
            Some(h) if h.ino != ino => format!("{op} of {ino:?} through {fh:?} of {:?}", h.ino),
            Some(h) => {
                h.in_flight += 1;
                return Ok(h.mode);
            }
        };
        g.violations.push(msg);
        Err(VfsError::BadHandle)
    }

    /// Like `begin`, with an `end` when the returned guard is dropped (also when the
    /// operation's future is dropped half-way).
    fn op<'a>(&'a self, ino: Ino, fh: Fh, op: &'static str) -> VfsResult<(AccessMode, InFlight<'a>)> {
        let mode = self.begin(ino, fh, op)?;
        Ok((mode, InFlight { fs: self, fh, op }))
    }

    fn end(&self, fh: Fh, op: &str) {
        let mut g = self.lock();
        let released = match g.handles.get_mut(&fh.0) {
            Some(h) => {
                h.in_flight -= 1;
                h.released
            }
            None => false,
        };
        if released {
            g.violations.push(format!("{fh:?} released during {op}"));
        }
    }

    fn attr(ino: Ino, f: &File) -> Attr {
        Attr {
            uid: f.uid,
            size: f.data.len() as u64,
            ..Attr::new(ino, FileType::Regular, f.perm)
        }
    }
}

/// An operation in flight on a handle; ends it when dropped.
struct InFlight<'a> {
    fs: &'a TestFs,
    fh: Fh,
    op: &'static str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.fs.end(self.fh, self.op);
    }
}

/// Polls every future to completion on this thread, with a no-op waker (every pending
/// point of the fake backend is ready on its next poll). `pick(n)` chooses which of the `n`
/// unfinished futures to poll next: this is how tests fix an interleaving.
pub(crate) fn run_schedule<'a>(
    mut futs: Vec<Pin<Box<dyn Future<Output = ()> + 'a>>>,
    mut pick: impl FnMut(usize) -> usize,
) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut steps = 0u32;
    while !futs.is_empty() {
        steps += 1;
        assert!(steps < 100_000, "schedule does not terminate");
        let i = pick(futs.len()) % futs.len();
        if futs[i].as_mut().poll(&mut cx).is_ready() {
            drop(futs.remove(i));
        }
    }
}

/// Polls the futures round robin, one poll each: lockstep.
pub(crate) fn lockstep<'a>(futs: Vec<Pin<Box<dyn Future<Output = ()> + 'a>>>) {
    let mut next = 0usize;
    run_schedule(futs, move |n| {
        let i = next % n;
        next = i + 1;
        i
    });
}

/// Runs one future to completion on this thread. Between polls that return pending it
/// gives the CPU away (another thread may hold what the future waits for), and it fails
/// after a minute instead of spinning for ever.
pub(crate) fn block_on<T>(f: impl Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "block_on: future still pending after 60 s"
        );
        // The facade's yield: under loom it lets the model run another thread.
        crate::sync::thread::yield_now();
    }
}

async fn unimplemented<T>() -> VfsResult<T> {
    Err(VfsError::NotImplemented)
}

impl VirtualFs for TestFs {
    fn source_id(&self) -> &str {
        "testfs:pool"
    }

    fn lookup(&self, _: &RequestCtx, _: Ino, _: Name<'_>) -> impl Future<Output = VfsResult<Attr>> + Send {
        unimplemented()
    }

    async fn getattr(&self, _: &RequestCtx, ino: Ino, _: Option<Fh>) -> VfsResult<Attr> {
        let g = self.lock();
        g.files.get(&ino).map(|f| Self::attr(ino, f)).ok_or(VfsError::NotFound)
    }

    /// Only `size` is honoured: enough for `SETATTR(size=0)` without any open handle.
    async fn setattr(&self, _: &RequestCtx, ino: Ino, set: SetAttr) -> VfsResult<Attr> {
        let mut g = self.lock();
        let f = g.files.get_mut(&ino).ok_or(VfsError::NotFound)?;
        if let Some(size) = set.size {
            f.data.resize(usize::try_from(size).map_err(|_| VfsError::TooBig)?, 0);
        }
        Ok(Self::attr(ino, f))
    }

    fn readlink(&self, _: &RequestCtx, _: Ino) -> impl Future<Output = VfsResult<OsString>> + Send {
        unimplemented()
    }

    fn mknod(
        &self,
        _: &RequestCtx,
        _: Ino,
        _: Name<'_>,
        _: u32,
        _: u32,
        _: u64,
    ) -> impl Future<Output = VfsResult<Attr>> + Send {
        unimplemented()
    }

    fn mkdir(
        &self,
        _: &RequestCtx,
        _: Ino,
        _: Name<'_>,
        _: u32,
        _: u32,
    ) -> impl Future<Output = VfsResult<Attr>> + Send {
        unimplemented()
    }

    fn unlink(&self, _: &RequestCtx, _: Ino, _: Name<'_>) -> impl Future<Output = VfsResult<()>> + Send {
        unimplemented()
    }

    fn rmdir(&self, _: &RequestCtx, _: Ino, _: Name<'_>) -> impl Future<Output = VfsResult<()>> + Send {
        unimplemented()
    }

    fn symlink(&self, _: &RequestCtx, _: Ino, _: Name<'_>, _: &OsStr) -> impl Future<Output = VfsResult<Attr>> + Send {
        unimplemented()
    }

    fn rename(
        &self,
        _: &RequestCtx,
        _: Ino,
        _: Name<'_>,
        _: Ino,
        _: Name<'_>,
        _: RenameFlags,
    ) -> impl Future<Output = VfsResult<()>> + Send {
        unimplemented()
    }

    fn link(&self, _: &RequestCtx, _: Ino, _: Ino, _: Name<'_>) -> impl Future<Output = VfsResult<Attr>> + Send {
        unimplemented()
    }

    async fn open(&self, ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        self.pause().await;
        let mut g = self.lock();
        let f = g.files.get(&ino).ok_or(VfsError::NotFound)?;
        let mode = flags.access();
        if ctx.uid != 0 {
            let bits = if ctx.uid == f.uid {
                (f.perm >> 6) & 7
            } else {
                f.perm & 7
            };
            if (mode.can_read() && bits & 4 == 0) || (mode.can_write() && bits & 2 == 0) {
                return Err(VfsError::Access);
            }
        }
        let fh = g.next_fh;
        g.next_fh += 1;
        g.handles.insert(
            fh,
            Handle {
                ino,
                mode,
                released: false,
                in_flight: 0,
            },
        );
        g.opened += 1;
        g.opens.push((ino, mode));
        Ok(Fh(fh))
    }

    fn create(
        &self,
        _: &RequestCtx,
        _: Ino,
        _: Name<'_>,
        _: u32,
        _: u32,
        _: OpenFlags,
    ) -> impl Future<Output = VfsResult<(Attr, Fh)>> + Send {
        unimplemented()
    }

    async fn read(&self, _: &RequestCtx, ino: Ino, fh: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        let (mode, in_flight) = self.op(ino, fh, "read")?;
        self.pause().await;
        drop(in_flight);
        if !mode.can_read() {
            return Err(VfsError::BadHandle);
        }
        let g = self.lock();
        let data = &g.files.get(&ino).ok_or(VfsError::NotFound)?.data;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        Ok(Bytes::copy_from_slice(&data[start..end]))
    }

    async fn write(&self, _: &RequestCtx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let (mode, in_flight) = self.op(ino, fh, "write")?;
        self.pause().await;
        drop(in_flight);
        let mut g = self.lock();
        if !mode.can_write() || g.refuse_writes {
            return Err(VfsError::BadHandle);
        }
        let file = &mut g.files.get_mut(&ino).ok_or(VfsError::NotFound)?.data;
        let start = usize::try_from(offset).map_err(|_| VfsError::TooBig)?;
        let end = start + data.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[start..end].copy_from_slice(data);
        Ok(data.len() as u32)
    }

    async fn fsync(&self, _: &RequestCtx, ino: Ino, fh: Fh, _: bool) -> VfsResult<()> {
        self.begin(ino, fh, "fsync")?;
        self.end(fh, "fsync");
        Ok(())
    }

    async fn release(&self, _: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        self.tick();
        {
            let mut g = self.lock();
            let msg = match g.handles.get_mut(&fh.0) {
                None => Some(format!("release of unknown {fh:?}")),
                Some(h) if h.released => Some(format!("double release of {fh:?}")),
                Some(h) if h.ino != ino => Some(format!("release of {fh:?} as {ino:?}")),
                Some(h) => {
                    h.released = true;
                    let busy = h.in_flight;
                    g.released += 1;
                    (busy > 0).then(|| format!("{fh:?} released with {busy} operation(s) in flight"))
                }
            };
            if let Some(msg) = msg {
                g.violations.push(msg);
            }
        }
        self.pause().await;
        Ok(())
    }

    fn readdir(
        &self,
        _: &RequestCtx,
        _: Ino,
        _: u64,
        _: usize,
    ) -> impl Future<Output = VfsResult<Vec<DirEntry>>> + Send {
        unimplemented()
    }

    async fn statfs(&self, _: &RequestCtx, _: Ino) -> VfsResult<StatFs> {
        Ok(StatFs::default())
    }
}
