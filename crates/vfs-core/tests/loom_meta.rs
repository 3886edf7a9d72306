//! Loom models of `MetaTable` (run with `RUSTFLAGS="--cfg loom" cargo test -p vfs-core
//! --release loom`): every interleaving of a reader, a writer and a remover of one inode
//! is explored; none sees a torn struct and none deadlocks.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use vfs_core::Ino;
use vfs_core::lock_order::{Locked, Unlocked};
use vfs_core::meta::{FileCell, MetaTable};
use vfs_core::sync::{Arc, thread};

/// A token for a test's own entry point (each call site holds no lock).
fn entry() -> Locked<Unlocked> {
    // SAFETY: called only where the test holds no lock.
    unsafe { Locked::new() }
}

/// Two fields a writer changes one after the other; a reader that could run between the
/// two stores (a bypassed lock) would see them differ, and loom would find that schedule.
struct Meta {
    size: AtomicU64,
    mtime: AtomicU64,
}

impl Meta {
    fn new(v: u64) -> Self {
        Meta {
            size: AtomicU64::new(v),
            mtime: AtomicU64::new(v),
        }
    }
}

#[test]
fn loom_meta_table_reader_writer_remover() {
    loom::model(|| {
        let t = Arc::new(MetaTable::<Meta>::new());
        let ino = Ino(2);
        assert!(t.insert(&mut entry(), ino, Meta::new(0)).is_ok());

        let writer = {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                t.update(&mut entry(), ino, |m| {
                    m.size.store(1, Ordering::Relaxed);
                    m.mtime.store(1, Ordering::Relaxed);
                })
            })
        };
        let reader = {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                t.read(&mut entry(), ino, |m| {
                    (m.size.load(Ordering::Relaxed), m.mtime.load(Ordering::Relaxed))
                })
            })
        };
        let remover = {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                t.remove_if(&mut entry(), ino, |m| m.size.load(Ordering::Relaxed) == 1)
                    .is_some()
            })
        };

        // The remover only removes after the write, so the writer always finds the inode.
        assert_eq!(writer.join().unwrap(), Some(()));
        if let Some((size, mtime)) = reader.join().unwrap() {
            assert_eq!(size, mtime, "torn read");
        }
        let removed = remover.join().unwrap();
        let left = t.read(&mut entry(), ino, |m| m.size.load(Ordering::Relaxed));
        if removed {
            assert_eq!(left, None);
        } else {
            assert_eq!(left, Some(1), "kept only because the remover ran before the write");
        }
    });
}

#[test]
fn loom_write_many_in_opposite_orders_never_deadlocks() {
    loom::model(|| {
        let a = Arc::new(FileCell::new(Ino(3), 0u32));
        let b = Arc::new(FileCell::new(Ino(9), 0u32));
        let t1 = {
            let (a, b) = (Arc::clone(&a), Arc::clone(&b));
            thread::spawn(move || {
                let mut tok = entry();
                let mut set = FileCell::write_many(&mut tok, &[&*a, &*b]);
                let (x, y) = set.pair_mut(Ino(3), Ino(9)).unwrap();
                *x += 1;
                *y += 1;
            })
        };
        let t2 = {
            let (a, b) = (Arc::clone(&a), Arc::clone(&b));
            thread::spawn(move || {
                let mut tok = entry();
                let mut set = FileCell::write_many(&mut tok, &[&*b, &*a]);
                let (y, x) = set.pair_mut(Ino(9), Ino(3)).unwrap();
                *x += 1;
                *y += 1;
            })
        };
        t1.join().unwrap();
        t2.join().unwrap();
        let mut tok = entry();
        assert_eq!(*a.read(&mut tok), 2);
        assert_eq!(*b.read(&mut tok), 2);
    });
}
