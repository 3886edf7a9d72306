//! Unit and regression tests of [`HandlePool`] against the recording [`TestFs`].
//!
//! Invariant checked by every test: the backend saw no use after release, no release
//! while in use and no double release, and after `release_all` every handle it opened
//! was released.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc as StdArc;

use proptest::prelude::*;

use super::test_fs::{TestFs, block_on, lockstep, run_schedule};
use super::*;
use crate::Errno;
use crate::types::SetAttr;

const FILE: Ino = Ino(2);
const ROOT: RequestCtx = RequestCtx::ROOT;

/// A comparable form of a result.
fn errno<T>(r: VfsResult<T>) -> Result<T, Errno> {
    r.map_err(|e| e.errno())
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

fn setup(data: &[u8], capacity: usize) -> (StdArc<TestFs>, HandlePool<TestFs>) {
    let fs = StdArc::new(TestFs::new());
    fs.add_file(FILE, data);
    let pool = HandlePool::new(StdArc::clone(&fs), capacity);
    (fs, pool)
}

/// Releases everything and checks the backend saw no misuse and no leak.
fn assert_clean(fs: &TestFs, pool: &HandlePool<TestFs>) {
    block_on(pool.release_all());
    assert_eq!(fs.violations(), Vec::<String>::new());
    assert_eq!(
        fs.open_handles(),
        0,
        "leaked handles: opened {} released {}",
        fs.opened(),
        fs.released()
    );
    assert!(pool.is_empty());
}

/// Seed 003 (doc/LESSONS.md#seed-003-pr-178), hf-mount PR #178: a READ pooled a read-only handle; the WRITE that followed
/// got `EBADF` through it, which the server answered as `NFS3ERR_STALE`, and macOS
/// silently dropped the written bytes. The write must upgrade the handle and land.
#[test]
fn seed003_pr178_write_after_read_upgrades_instead_of_stale() {
    let (fs, pool) = setup(b"hello world", 8);
    assert_eq!(block_on(pool.read(&ROOT, FILE, 0, 5)).unwrap(), &b"hello"[..]);
    assert_eq!(pool.peek(FILE).map(|(_, m)| m), Some(AccessMode::Read));

    assert_eq!(errno(block_on(pool.write(&ROOT, FILE, 0, b"HELLO"))), Ok(5));
    assert_eq!(fs.contents(FILE), b"HELLO world");
    assert_eq!(pool.peek(FILE).map(|(_, m)| m), Some(AccessMode::ReadWrite));
    assert_eq!(pool.stats().upgrades, 1);

    // The upgraded handle is reused: by the next write and by reads.
    let opened = fs.opened();
    assert_eq!(errno(block_on(pool.write(&ROOT, FILE, 6, b"W"))), Ok(1));
    assert_eq!(block_on(pool.read(&ROOT, FILE, 0, 11)).unwrap(), &b"HELLO World"[..]);
    assert_eq!(fs.opened(), opened);
    // The read-only handle was released once it left the pool.
    assert_eq!(fs.released(), 1);
    assert_clean(&fs, &pool);
}

/// hf-mount #185 (doc/LESSONS.md#seed-003-pr-185): NFSv3 has no OPEN, so SETATTR(size=0)
/// followed by WRITE must work without any open state — on an inode nobody opened, and
/// on one whose only pooled handle is the read-only one a READ left behind (seed 003 (doc/LESSONS.md#seed-003)).
#[test]
fn hf185_setattr_size_zero_then_write_without_open_state() {
    let (fs, pool) = setup(b"old contents", 8);
    block_on(fs.setattr(&ROOT, FILE, SetAttr::size(0))).unwrap();
    assert_eq!(errno(block_on(pool.write(&ROOT, FILE, 0, b"new"))), Ok(3));
    assert_eq!(fs.contents(FILE), b"new");

    let other = Ino(3);
    fs.add_file(other, b"some old bytes");
    assert_eq!(block_on(pool.read(&ROOT, other, 0, 4)).unwrap(), &b"some"[..]);
    block_on(fs.setattr(&ROOT, other, SetAttr::size(0))).unwrap();
    assert_eq!(errno(block_on(pool.write(&ROOT, other, 0, b"xyz"))), Ok(3));
    assert_eq!(fs.contents(other), b"xyz");
    assert_eq!(block_on(pool.read(&ROOT, other, 0, 100)).unwrap(), &b"xyz"[..]);
    assert_clean(&fs, &pool);
}

/// Seed 003 (doc/LESSONS.md#seed-003-pr-178), hf-mount PR #178 ("concurrent-write race"): two WRITEs after a READ both hit
/// `EBADF` on the pooled read-only handle and both open a writable one. The first fix
/// published each new handle before writing through it, so the second writer's insert
/// replaced and released the first writer's handle under its write: `EBADF` again, and
/// lost bytes. Both ranges must land, under every interleaving tried here.
#[test]
fn seed003_pr178_two_writers_racing_after_read_both_ranges_land() {
    let run = |schedule: &mut dyn FnMut(usize) -> usize| {
        let (fs, pool) = setup(b"0123456789abcdef", 8);
        block_on(pool.read(&ROOT, FILE, 0, 1)).unwrap();
        let (mut ra, mut rb) = (None, None);
        let futs: Vec<BoxFut<'_>> = vec![
            Box::pin(async { ra = Some(errno(pool.write(&ROOT, FILE, 0, b"AAAA").await)) }),
            Box::pin(async { rb = Some(errno(pool.write(&ROOT, FILE, 8, b"BBBB").await)) }),
        ];
        run_schedule(futs, schedule);
        assert_eq!((ra, rb), (Some(Ok(4)), Some(Ok(4))));
        assert_eq!(fs.contents(FILE), b"AAAA4567BBBBcdef");
        assert_eq!(fs.violations(), Vec::<String>::new());
        let s = pool.stats();
        assert_eq!(s.published_writable, 1, "exactly one writable handle published: {s:?}");
        assert_eq!(pool.peek(FILE).map(|(_, m)| m), Some(AccessMode::ReadWrite));
        assert_clean(&fs, &pool);
    };
    // Lockstep: each writer advances one backend step at a time, the other right after.
    for first in 0..2 {
        let mut next = first;
        run(&mut |n| {
            let i = next % n;
            next = i + 1;
            i
        });
    }
    // And a few hundred seeded random interleavings.
    for seed in 1..300u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        run(&mut |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        });
    }
}

/// `EBADF` never reaches a caller (let alone as "stale"), even when the backend refuses
/// a handle it has just opened.
/// A stateless front end fsyncs before it calls a write stable (NFS `FILE_SYNC`): through
/// the pooled handle when there is one, else through a new one that is then pooled.
#[test]
fn fsync_uses_the_pooled_handle_or_pools_a_new_one() {
    let (fs, pool) = setup(b"data", 8);
    assert_eq!(errno(block_on(pool.fsync(&ROOT, FILE, false))), Ok(()));
    assert_eq!(fs.opened(), 1);
    assert_eq!(pool.peek(FILE).map(|(_, m)| m), Some(AccessMode::Read));
    assert_eq!(errno(block_on(pool.write(&ROOT, FILE, 0, b"DA"))), Ok(2));
    let opened = fs.opened();
    assert_eq!(errno(block_on(pool.fsync(&ROOT, FILE, true))), Ok(()));
    assert_eq!(fs.opened(), opened, "fsync reused the pooled writable handle");
    assert_eq!(errno(block_on(pool.fsync(&ROOT, Ino(99), false))), Err(Errno::ENOENT));
    assert_clean(&fs, &pool);
}

#[test]
fn ebadf_never_escapes_the_pool() {
    let (fs, pool) = setup(b"data", 8);
    block_on(pool.read(&ROOT, FILE, 0, 1)).unwrap();
    fs.refuse_writes();
    let err = block_on(pool.write(&ROOT, FILE, 0, b"x")).unwrap_err();
    assert_eq!(err.errno(), Errno::EIO, "{err:?}");
    // The refused writable handle was never published; the read-only one is gone.
    assert_eq!(pool.stats().published_writable, 0);
    assert_clean(&fs, &pool);
}

#[test]
fn evicted_handle_in_use_is_released_by_its_last_user() {
    let (fs, pool) = setup(b"data", 8);
    block_on(pool.read(&ROOT, FILE, 0, 1)).unwrap();
    let lease = pool.get(FILE).unwrap();
    let lease2 = pool.get(FILE).unwrap();
    block_on(pool.trim(0));
    assert!(pool.is_empty());
    assert_eq!(fs.released(), 0, "released under its users");
    assert_eq!(block_on(fs.read(&ROOT, FILE, lease.fh(), 0, 4)).unwrap(), &b"data"[..]);
    drop(lease);
    block_on(pool.release_pending());
    assert_eq!(fs.released(), 0);
    block_on(lease2.done());
    assert_eq!(fs.released(), 1);
    assert_clean(&fs, &pool);
}

#[test]
fn invalidate_releases_an_idle_handle_at_once() {
    let (fs, pool) = setup(b"data", 8);
    block_on(pool.write(&ROOT, FILE, 0, b"D")).unwrap();
    block_on(pool.invalidate(FILE));
    assert_eq!((pool.len(), fs.released()), (0, 1));
    assert_eq!(pool.stats().invalidated, 1);
    assert_clean(&fs, &pool);
}

#[test]
fn capacity_is_bounded_by_the_clock() {
    let fs = StdArc::new(TestFs::new());
    for i in 2..=5 {
        fs.add_file(Ino(i), b"x");
    }
    let pool = HandlePool::new(StdArc::clone(&fs), 2);
    for i in 2..=4 {
        block_on(pool.read(&ROOT, Ino(i), 0, 1)).unwrap();
        assert!(pool.len() <= 2);
    }
    // All three were referenced once: the sweep clears them and takes the oldest.
    assert!(pool.peek(Ino(2)).is_none());
    assert_eq!(fs.released(), 1);
    // 3 is used again, so the next insertion evicts 4 rather than 3.
    block_on(pool.read(&ROOT, Ino(3), 0, 1)).unwrap();
    block_on(pool.read(&ROOT, Ino(5), 0, 1)).unwrap();
    assert!(pool.peek(Ino(3)).is_some());
    assert!(pool.peek(Ino(4)).is_none());
    assert!(pool.peek(Ino(5)).is_some());
    assert_eq!(pool.stats().evicted, 2);
    assert_clean(&fs, &pool);
}

#[test]
fn eviction_prefers_idle_entries() {
    let fs = StdArc::new(TestFs::new());
    for i in 2..=4 {
        fs.add_file(Ino(i), b"x");
    }
    let pool = HandlePool::new(StdArc::clone(&fs), 2);
    block_on(pool.read(&ROOT, Ino(2), 0, 1)).unwrap();
    block_on(pool.read(&ROOT, Ino(3), 0, 1)).unwrap();
    let busy = pool.get(Ino(2)).unwrap();
    block_on(pool.read(&ROOT, Ino(4), 0, 1)).unwrap();
    assert!(pool.peek(Ino(2)).is_some(), "the entry in use stays");
    assert!(pool.peek(Ino(3)).is_none());
    drop(busy);
    assert_clean(&fs, &pool);
}

/// A file the caller may write but not read (mode 0200): `O_RDWR` fails with `EACCES`,
/// so the pool opens `O_WRONLY`; a later read cannot use that handle and answers
/// `EACCES` without evicting it.
#[test]
fn write_falls_back_to_write_only_on_eacces() {
    let fs = StdArc::new(TestFs::new());
    fs.add_file_as(FILE, b"secret", 0o200, 1000);
    let pool = HandlePool::new(StdArc::clone(&fs), 4);
    let user = RequestCtx::new(1000, 1000, 0);
    assert_eq!(errno(block_on(pool.write(&user, FILE, 0, b"S"))), Ok(1));
    assert_eq!(pool.peek(FILE).map(|(_, m)| m), Some(AccessMode::Write));
    let err = block_on(pool.read(&user, FILE, 0, 1)).unwrap_err();
    assert_eq!(err.errno(), Errno::EACCES);
    assert_eq!(pool.peek(FILE).map(|(_, m)| m), Some(AccessMode::Write));
    assert_eq!(errno(block_on(pool.write(&user, FILE, 1, b"E"))), Ok(1));
    assert_eq!(fs.contents(FILE), b"SEcret");
    // O_RDWR and O_RDONLY were refused; the one handle ever opened is write-only.
    assert_eq!(fs.opens(), vec![(FILE, AccessMode::Write)]);
    assert_clean(&fs, &pool);
}

#[test]
fn read_through_write_only_handle_uses_a_private_readable_one() {
    let fs = StdArc::new(TestFs::new());
    fs.add_file(FILE, b"abc");
    let pool = HandlePool::new(StdArc::clone(&fs), 4);
    let d = Doomed {
        ino: FILE,
        fh: block_on(fs.open(&ROOT, FILE, OpenFlags::WRONLY)).unwrap(),
        ctx: ROOT,
    };
    assert!(pool.publish(&d.ctx, d.ino, d.fh, AccessMode::Write));
    assert_eq!(block_on(pool.read(&ROOT, FILE, 0, 3)).unwrap(), &b"abc"[..]);
    // Neither covers the other: the write-only entry keeps its place.
    assert_eq!(pool.peek(FILE), Some((d.fh, AccessMode::Write)));
    assert_eq!(pool.stats().declined, 1);
    assert_clean(&fs, &pool);
}

#[test]
fn publish_replaces_only_with_a_more_capable_handle() {
    let (fs, pool) = setup(b"abc", 4);
    let open = |flags| block_on(fs.open(&ROOT, FILE, flags)).unwrap();
    let ro = open(OpenFlags::RDONLY);
    assert!(pool.publish(&ROOT, FILE, ro, AccessMode::Read));
    let ro2 = open(OpenFlags::RDONLY);
    assert!(!pool.publish(&ROOT, FILE, ro2, AccessMode::Read));
    let rw = open(OpenFlags::RDWR);
    assert!(pool.publish(&ROOT, FILE, rw, AccessMode::ReadWrite));
    let rw2 = open(OpenFlags::RDWR);
    assert!(!pool.publish(&ROOT, FILE, rw2, AccessMode::ReadWrite));
    assert_eq!(pool.peek(FILE), Some((rw, AccessMode::ReadWrite)));
    block_on(pool.release_pending());
    // ro2 and rw2 declined, ro replaced while idle.
    assert_eq!(fs.released(), 3);
    assert_clean(&fs, &pool);
}

/// A pool future dropped at any point (a cancelled request) leaks no handle: its private
/// handle is queued and released by the next operation.
#[test]
fn cancelled_operations_leak_nothing() {
    for polls in 0..12 {
        let (fs, pool) = setup(b"0123", 4);
        block_on(pool.read(&ROOT, FILE, 0, 1)).unwrap();
        {
            let mut fut = std::pin::pin!(pool.write(&ROOT, FILE, 0, b"zz"));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            for _ in 0..polls {
                if fut.as_mut().poll(&mut cx).is_ready() {
                    break;
                }
            }
        }
        assert_clean(&fs, &pool);
    }
}

#[test]
fn pool_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let (_fs, pool) = setup(b"", 1);
    send(&pool.read(&ROOT, FILE, 0, 1));
    send(&pool.write(&ROOT, FILE, 0, b""));
    send(&pool.invalidate(FILE));
    send(&pool.trim(0));
    send(&pool.release_all());
    send(&pool.release_pending());
}

/// Many tasks on a multi-threaded runtime, reading, writing disjoint ranges, trimming
/// and invalidating over three inodes with room for two handles.
#[test]
fn threaded_stress_keeps_every_write_and_every_handle() {
    const TASKS: usize = 8;
    const OPS: usize = 60;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let fs = StdArc::new(TestFs::new());
    for i in 2..=4 {
        fs.add_file(Ino(i), &[]);
    }
    let pool = StdArc::new(HandlePool::new(StdArc::clone(&fs), 2));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let pool = StdArc::clone(&pool);
            tasks.push(tokio::spawn(async move {
                for op in 0..OPS {
                    let ino = Ino(2 + ((t + op) % 3) as u64);
                    match op % 5 {
                        0 | 1 => {
                            let off = ((t * OPS + op) * 2) as u64;
                            let v = [t as u8 + 1, op as u8 + 1];
                            assert_eq!(errno(pool.write(&ROOT, ino, off, &v).await), Ok(2));
                        }
                        2 | 3 => {
                            pool.read(&ROOT, ino, 0, 64).await.unwrap();
                        }
                        _ if t % 2 == 0 => pool.trim(1).await,
                        _ => pool.invalidate(ino).await,
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    for t in 0..TASKS {
        for op in (0..OPS).filter(|op| op % 5 < 2) {
            let ino = Ino(2 + ((t + op) % 3) as u64);
            let off = (t * OPS + op) * 2;
            assert_eq!(&fs.contents(ino)[off..off + 2], &[t as u8 + 1, op as u8 + 1]);
        }
    }
    assert_clean(&fs, &pool);
}

#[derive(Clone, Debug)]
enum Op {
    Read(u64),
    Write(u64),
    Trim,
    Invalidate(u64),
    Hold(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (2..4u64).prop_map(Op::Read),
        3 => (2..4u64).prop_map(Op::Write),
        1 => Just(Op::Trim),
        1 => (2..4u64).prop_map(Op::Invalidate),
        1 => (2..4u64).prop_map(Op::Hold),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random operations on two inodes (capacity 1), interleaved by a random schedule at
    /// every backend step: no misuse, no leak, every write lands.
    #[test]
    fn random_interleavings_keep_the_invariants(
        ops in proptest::collection::vec(op(), 1..7),
        schedule in proptest::collection::vec(any::<usize>(), 64),
    ) {
        let fs = StdArc::new(TestFs::new());
        fs.add_file(Ino(2), &[0; 16]);
        fs.add_file(Ino(3), &[0; 16]);
        let pool = HandlePool::new(StdArc::clone(&fs), 1);
        let mut writes = Vec::new();
        let futs: Vec<BoxFut<'_>> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| -> BoxFut<'_> {
                let pool = &pool;
                match *op {
                    Op::Read(ino) => Box::pin(async move {
                        assert_eq!(errno(pool.read(&ROOT, Ino(ino), 0, 16).await.map(|b| b.len())), Ok(16));
                    }),
                    Op::Write(ino) => {
                        writes.push((Ino(ino), i));
                        Box::pin(async move {
                            assert_eq!(errno(pool.write(&ROOT, Ino(ino), i as u64 * 2, &[i as u8 + 1; 2]).await), Ok(2));
                        })
                    }
                    Op::Trim => Box::pin(pool.trim(0)),
                    Op::Invalidate(ino) => Box::pin(pool.invalidate(Ino(ino))),
                    Op::Hold(ino) => Box::pin(async move {
                        if let Some(h) = pool.get(Ino(ino)) {
                            let fh = h.fh();
                            super::test_fs::YieldNow::default().await;
                            assert_eq!(errno(pool.fs().fsync(&ROOT, Ino(ino), fh, true).await), Ok(()));
                            h.done().await;
                        }
                    }),
                }
            })
            .collect();
        let mut k = 0;
        run_schedule(futs, |_| {
            k += 1;
            schedule[k % schedule.len()]
        });
        for (ino, i) in writes {
            prop_assert_eq!(&fs.contents(ino)[i * 2..i * 2 + 2], &[i as u8 + 1; 2]);
        }
        prop_assert!(pool.len() <= 1);
        prop_assert_eq!(fs.violations(), Vec::<String>::new());
        block_on(pool.release_all());
        prop_assert_eq!(fs.open_handles(), 0);
    }
}

/// Lockstep itself is what the race test relies on; make sure it interleaves.
#[test]
fn lockstep_interleaves() {
    let log = std::sync::Mutex::new(Vec::new());
    let step = |id: u8| {
        let log = &log;
        async move {
            for _ in 0..2 {
                log.lock().unwrap().push(id);
                super::test_fs::YieldNow::default().await;
            }
        }
    };
    lockstep(vec![Box::pin(step(1)), Box::pin(step(2))]);
    assert_eq!(*log.lock().unwrap(), vec![1, 2, 1, 2]);
}

/// A held handle is the caller's alone: not pooled, not evicted, released once when
/// closed or dropped (then by the pool's next operation).
#[test]
fn held_handles_are_private_and_released_once() {
    let fs = StdArc::new(TestFs::new());
    fs.add_file(FILE, b"data");
    let pool = StdArc::new(HandlePool::new(StdArc::clone(&fs), 1));
    let held = block_on(pool.open_held(&ROOT, FILE, OpenFlags::RDWR)).unwrap();
    assert_eq!(held.mode(), AccessMode::ReadWrite);
    assert!(pool.is_empty(), "a held handle is not published");
    assert_eq!(errno(block_on(fs.write(&ROOT, FILE, held.fh(), 0, b"D"))), Ok(1));
    block_on(pool.trim(0));
    assert_eq!(fs.released(), 0, "trimming the pool does not touch a held handle");
    block_on(held.close());
    assert_eq!(fs.released(), 1);
    let dropped = block_on(pool.open_held(&ROOT, FILE, OpenFlags::RDONLY)).unwrap();
    drop(dropped);
    block_on(pool.release_pending());
    assert_eq!(fs.released(), 2);
    assert_eq!(
        errno(block_on(pool.open_held(&ROOT, Ino(99), OpenFlags::RDONLY))).map(|_| ()),
        Err(Errno::ENOENT)
    );
    assert_clean(&fs, &pool);
}
