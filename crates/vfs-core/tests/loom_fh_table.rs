//! Loom models of `FhTable` (run with `RUSTFLAGS="--cfg loom" cargo test -p vfs-core
//! --release --features testkit --lib --test 'loom_*' loom`): every interleaving of
//! concurrent opens, lookups and releases is explored.
//!
//! What they prove, and how each fails when the table is broken:
//! - a handle answers only for its own inode, whatever runs meanwhile (drop the
//!   `e.ino == ino` check from `with`, and `open_get_and_release_race` fails);
//! - a release with the wrong inode removes nothing (drop it from `remove`, and the same
//!   model fails: the other thread's handle disappears);
//! - of two releases of one handle exactly one succeeds, and afterwards the handle is gone
//!   (make `remove` answer `Ok` without removing, or check under one lock and remove under
//!   another, and `double_release_exactly_one_wins` fails: loom finds the schedule where
//!   both releases pass the check before either removes);
//! - handle numbers are never issued twice.
//!
//! Each of the three breakages above was made by hand and seen to fail here.
#![cfg(loom)]

use vfs_core::fh_table::FhTable;
use vfs_core::lock_order::{Locked, Unlocked};
use vfs_core::sync::{Arc, thread};
use vfs_core::{Ino, VfsError};

/// A token for a thread's own entry point (each call site holds no lock).
fn entry() -> Locked<Unlocked> {
    // SAFETY: called only where the model holds no lock.
    unsafe { Locked::new() }
}

fn bad<T>(r: Result<T, VfsError>) -> bool {
    matches!(r, Err(VfsError::BadHandle))
}

#[test]
fn loom_fh_table_open_get_and_release_race() {
    loom::model(|| {
        let t = Arc::new(FhTable::<u32>::new());
        let mine = t.insert(&mut entry(), Ino(2), 20);

        // Another file is opened, checked and released while this thread probes `mine`
        // with the wrong inode and releases it with the wrong inode.
        let other = {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                let mut tok = entry();
                let fh = t.insert(&mut tok, Ino(3), 30);
                assert_eq!(t.get(&mut tok, Ino(3), fh).ok(), Some(30));
                assert!(bad(t.get(&mut tok, Ino(2), fh)), "a handle answered for another inode");
                assert_eq!(t.remove(&mut tok, Ino(3), fh).ok(), Some(30));
                assert!(bad(t.get(&mut tok, Ino(3), fh)), "a released handle still answers");
                fh
            })
        };
        let mut tok = entry();
        assert!(
            bad(t.get(&mut tok, Ino(3), mine)),
            "a handle answered for another inode"
        );
        assert!(bad(t.remove(&mut tok, Ino(3), mine)), "released with the wrong inode");
        assert_eq!(
            t.get(&mut tok, Ino(2), mine).ok(),
            Some(20),
            "the wrong inode removed it"
        );
        let theirs = other.join().expect("other thread");
        assert_ne!(theirs, mine, "one handle number issued twice");
        assert_eq!(t.len(&mut tok), 1);
    });
}

#[test]
fn loom_fh_table_double_release_exactly_one_wins() {
    loom::model(|| {
        let t = Arc::new(FhTable::<u32>::new());
        let fh = t.insert(&mut entry(), Ino(2), 7);
        let release = |t: Arc<FhTable<u32>>| thread::spawn(move || t.remove(&mut entry(), Ino(2), fh).is_ok());
        let a = release(Arc::clone(&t));
        let b = release(Arc::clone(&t));
        // Meanwhile a third open must get a number of its own.
        let fresh = t.insert(&mut entry(), Ino(2), 8);
        let won = [a.join().expect("a"), b.join().expect("b")];
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "releases that succeeded: {won:?}"
        );
        let mut tok = entry();
        assert!(bad(t.get(&mut tok, Ino(2), fh)), "a released handle still answers");
        assert_ne!(fresh, fh);
        assert_eq!(t.get(&mut tok, Ino(2), fresh).ok(), Some(8));
        assert_eq!(t.len(&mut tok), 1);
    });
}
