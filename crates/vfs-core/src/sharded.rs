//! `Shards<V>`: a fixed array of facade [`OrderedRwLock`]s at the [`Map`] level, each over
//! a hash map from a `u64` key, for the tables that must be visible to loom
//! ([`crate::meta::MetaTable`], [`crate::fh_table::FhTable`]).
//!
//! Invariant: a key always maps to the same shard (Fibonacci hashing of the key, so
//! sequential inode and handle numbers spread over every shard), and every shard lock is
//! a [`Map`]-level lock from [`crate::sync`], so the lock order is checked by types and
//! loom sees every lock. Whole-table answers ([`Shards::len`]) read the shards one after
//! another: a snapshot, not an atomic view.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use rustc_hash::FxHasher;

use crate::lock_order::{LockAfter, Locked, Map, OrderedRwLock};

/// The map inside one shard.
pub(crate) type Shard<V> = HashMap<u64, V, BuildHasherDefault<FxHasher>>;

/// `count` shards (a power of two), each a `Map`-level lock over a [`Shard`].
pub(crate) struct Shards<V> {
    shards: Box<[OrderedRwLock<Shard<V>, Map>]>,
    /// log2 of the number of shards.
    bits: u32,
}

impl<V> Shards<V> {
    /// `count` empty shards; `count` is rounded up to a power of two (at least 2).
    pub(crate) fn new(count: usize) -> Self {
        let count = count.max(2).next_power_of_two();
        Shards {
            shards: (0..count).map(|_| OrderedRwLock::new(Shard::default())).collect(),
            bits: count.trailing_zeros(),
        }
    }

    /// The shard of `key`.
    pub(crate) fn of(&self, key: u64) -> &OrderedRwLock<Shard<V>, Map> {
        // Fibonacci hashing keeps the top `bits` bits of key × 2^64/φ: below the shard
        // count by construction; `%` only guards the index.
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits);
        &self.shards[(h as usize) % self.shards.len()]
    }

    /// Every shard, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &OrderedRwLock<Shard<V>, Map>> {
        self.shards.iter()
    }

    /// The number of shards.
    pub(crate) fn count(&self) -> usize {
        self.shards.len()
    }

    /// Entries in all shards (a snapshot).
    pub(crate) fn len<P>(&self, tok: &mut Locked<P>) -> usize
    where
        Map: LockAfter<P>,
    {
        self.shards.iter().map(|s| s.read(tok).len()).sum()
    }
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_use_every_shard_and_keep_their_shard() {
        for count in [2, 16, 64] {
            let s: Shards<()> = Shards::new(count);
            assert_eq!(s.count(), count);
            let mut used = std::collections::HashSet::new();
            for k in 1..=(4 * count as u64) {
                let a = std::ptr::from_ref(s.of(k)) as usize;
                assert_eq!(a, std::ptr::from_ref(s.of(k)) as usize);
                used.insert(a);
            }
            assert_eq!(used.len(), count, "{count} shards");
        }
        assert_eq!(Shards::<()>::new(5).count(), 8);
    }
}
