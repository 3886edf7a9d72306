//! The far side's file data cache: fixed-size blocks fetched on demand, read ahead for
//! sequential readers, kept within a byte budget.
//!
//! Invariants:
//!
//! - **Only bytes that arrived.** A block is the owner's answer to one read, whole (the
//!   reassembler hands out a payload only when every declared byte came); a block shorter
//!   than the block size marks the end of file. A failed fetch is an error for its
//!   readers, never a block of zeros, and is not cached.
//! - **Never stale across this side's writes.** Each file has a generation, bumped when a
//!   write through this side begins and when it ends, and whenever the file is
//!   invalidated; blocks overlapping the write and the end-of-file block are dropped then,
//!   and a fetch stores its block only if the generation did not move while it ran. A read
//!   joins a fetch in flight only if it was started in the current generation.
//! - **Bounded.** At most the budget's worth of blocks is kept; the least recently used
//!   go first. Fetches in flight per file are bounded by the read-ahead window.
//!
//! Locking: one mutex, a leaf, never held across an `.await`.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::watch;
use vfs_core::{Errno, Ino};

use crate::wire::Payload;

type Outcome = Option<Result<Payload, Errno>>;

struct Block {
    data: Payload,
    used: u64,
}

#[derive(Default)]
struct FileBlocks {
    generation: u64,
    /// Known end of file (from a short block) in this generation.
    eof: Option<u64>,
    blocks: HashMap<u64, Block>,
    inflight: HashMap<u64, (u64, watch::Receiver<Outcome>)>,
}

#[derive(Default)]
struct State {
    files: HashMap<Ino, FileBlocks>,
    bytes: usize,
    clock: u64,
}

/// What a reader of one block does next.
pub(crate) enum Next {
    /// The block is here.
    Hit(Payload),
    /// A fetch is in flight: wait for it.
    Wait(watch::Receiver<Outcome>),
    /// Nobody fetches it: fetch it in generation `generation` and report through `tx`.
    Fetch {
        generation: u64,
        tx: watch::Sender<Outcome>,
    },
}

pub(crate) struct Blocks {
    pub block: u64,
    budget: usize,
    pub window: u64,
    st: Mutex<State>,
}

impl Blocks {
    pub fn new(block: u64, budget: usize, window: u64) -> Blocks {
        Blocks {
            block: block.max(4096),
            budget,
            window,
            st: Mutex::new(State::default()),
        }
    }

    /// Where to get block `idx` of `ino`. With `start == false` (read-ahead) an absent
    /// block past the known end of file, or beyond the window of fetches in flight, is
    /// not fetched (`None`).
    pub fn next(&self, ino: Ino, idx: u64, start: bool) -> Option<Next> {
        let mut st = self.st.lock();
        st.clock += 1;
        let clock = st.clock;
        // Generations come from the clock, so a file's entry made afresh never reuses one.
        let f = st.files.entry(ino).or_insert_with(|| FileBlocks {
            generation: clock,
            ..FileBlocks::default()
        });
        if let Some(b) = f.blocks.get_mut(&idx) {
            b.used = clock;
            return if start { Some(Next::Hit(b.data.clone())) } else { None };
        }
        if let Some((generation, rx)) = f.inflight.get(&idx)
            && *generation == f.generation
        {
            return if start { Some(Next::Wait(rx.clone())) } else { None };
        }
        if !start && (f.eof.is_some_and(|e| idx * self.block >= e) || f.inflight.len() as u64 >= self.window) {
            return None;
        }
        let (tx, rx) = watch::channel(None);
        f.inflight.insert(idx, (f.generation, rx));
        Some(Next::Fetch {
            generation: f.generation,
            tx,
        })
    }

    /// A fetch of block `idx` in generation `generation` ended.
    pub fn finish(&self, ino: Ino, idx: u64, generation: u64, result: &Result<Payload, Errno>) {
        let mut st = self.st.lock();
        st.clock += 1;
        let clock = st.clock;
        let block = self.block;
        let Some(f) = st.files.get_mut(&ino) else {
            return;
        };
        if f.inflight.get(&idx).is_some_and(|(g, _)| *g == generation) {
            f.inflight.remove(&idx);
        }
        let mut added = 0;
        if f.generation == generation
            && let Ok(data) = result
        {
            if (data.len() as u64) < block {
                f.eof = Some(idx * block + data.len() as u64);
            }
            added = data.len();
            if let Some(old) = f.blocks.insert(
                idx,
                Block {
                    data: data.clone(),
                    used: clock,
                },
            ) {
                added = added.saturating_sub(old.data.len());
            }
        }
        st.bytes += added;
        self.evict(&mut st);
    }

    fn evict(&self, st: &mut State) {
        while st.bytes > self.budget {
            let victim = st
                .files
                .iter()
                .flat_map(|(ino, f)| f.blocks.iter().map(move |(idx, b)| (b.used, *ino, *idx)))
                .min();
            let Some((_, ino, idx)) = victim else { break };
            if let Some(b) = st.files.get_mut(&ino).and_then(|f| f.blocks.remove(&idx)) {
                st.bytes = st.bytes.saturating_sub(b.data.len());
            }
        }
    }

    /// Bytes `[start, end)` of `ino` change through this side: drops the blocks they
    /// touch and the end-of-file block, and starts a new generation.
    pub fn invalidate_range(&self, ino: Ino, start: u64, end: u64) {
        let mut st = self.st.lock();
        let block = self.block;
        st.clock += 1;
        let clock = st.clock;
        let Some(f) = st.files.get_mut(&ino) else {
            return;
        };
        f.generation = clock;
        f.inflight.clear();
        f.eof = None;
        let (first, last) = (start / block, end.saturating_sub(1) / block);
        let mut freed = 0;
        f.blocks.retain(|idx, b| {
            let keep = (*idx < first || *idx > last) && b.data.len() as u64 == block;
            if !keep {
                freed += b.data.len();
            }
            keep
        });
        st.bytes = st.bytes.saturating_sub(freed);
    }

    /// Everything cached of `ino` is out of date.
    pub fn invalidate(&self, ino: Ino) {
        self.invalidate_range(ino, 0, u64::MAX);
    }

    /// Everything cached is out of date.
    pub fn invalidate_all(&self) {
        let mut st = self.st.lock();
        st.clock += 1;
        let clock = st.clock;
        for f in st.files.values_mut() {
            f.generation = clock;
            f.inflight.clear();
            f.eof = None;
            f.blocks.clear();
        }
        st.bytes = 0;
    }

    /// The kernel forgot `ino`.
    pub fn forget(&self, ino: Ino) {
        let mut st = self.st.lock();
        if let Some(f) = st.files.remove(&ino) {
            let freed: usize = f.blocks.values().map(|b| b.data.len()).sum();
            st.bytes = st.bytes.saturating_sub(freed);
        }
    }

    /// Bytes cached (for tests and diagnostics).
    pub fn cached_bytes(&self) -> usize {
        self.st.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn payload(n: usize, b: u8) -> Payload {
        Payload::from_bytes(Bytes::from(vec![b; n]))
    }

    fn start(c: &Blocks, idx: u64) -> u64 {
        match c.next(Ino(2), idx, true) {
            Some(Next::Fetch { generation, .. }) => generation,
            _ => panic!("expected a fetch"),
        }
    }

    #[test]
    fn a_fetch_overlapping_a_write_is_not_kept() {
        let c = Blocks::new(4096, 1 << 20, 4);
        let g = start(&c, 0);
        c.invalidate_range(Ino(2), 10, 20);
        c.finish(Ino(2), 0, g, &Ok(payload(4096, 1)));
        assert!(matches!(c.next(Ino(2), 0, true), Some(Next::Fetch { .. })), "refetched");
        assert_eq!(c.cached_bytes(), 0);
    }

    #[test]
    fn failures_are_not_cached_and_short_blocks_mark_the_end() {
        let c = Blocks::new(4096, 1 << 20, 4);
        let g = start(&c, 0);
        c.finish(Ino(2), 0, g, &Err(Errno::EIO));
        let g = start(&c, 0);
        c.finish(Ino(2), 0, g, &Ok(payload(100, 7)));
        assert!(matches!(c.next(Ino(2), 0, true), Some(Next::Hit(p)) if p.len() == 100));
        // Read-ahead does not go past the known end of file.
        assert!(c.next(Ino(2), 1, false).is_none());
        // A write anywhere drops the end-of-file block (the size may have changed).
        c.invalidate_range(Ino(2), 8192, 8200);
        assert!(matches!(c.next(Ino(2), 0, true), Some(Next::Fetch { .. })));
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used() {
        let c = Blocks::new(4096, 8192, 8);
        for idx in 0..3 {
            let g = start(&c, idx);
            c.finish(Ino(2), idx, g, &Ok(payload(4096, idx as u8)));
        }
        assert_eq!(c.cached_bytes(), 8192);
        assert!(
            matches!(c.next(Ino(2), 0, true), Some(Next::Fetch { .. })),
            "block 0 was evicted"
        );
    }
}
