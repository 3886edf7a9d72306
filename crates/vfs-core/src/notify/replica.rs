//! `Replica`: the reference receiver of debounced batches.
//!
//! Invariant: applying a change never depends on the receiver already knowing the
//! change's source: a rename whose `from` is unknown still creates `to` from the
//! attributes the event carries, and a remove of an unknown key is a no-op. That is what
//! lets every cross-key reordering the debouncer makes converge.
//!
//! *Prevents:* seed 000 bug 2 (doc/LESSONS.md#seed-000-bug-2): the receiving peer materialized a rename's destination
//! only if it tracked the source; git's `tmp_pack_*` was never sent, so the 22 MB pack
//! never landed and `git status` said "bad object HEAD".
//!
//! It is a flat map from key to attributes, deliberately simple (removing or renaming a
//! directory scans every entry): the oracle of the convergence property test and the
//! executable statement of what a real receiver (the P2P importer) must do.

use std::collections::HashMap;
use std::fmt;

use super::{Change, NotifyKey, Snapshot};

/// A receiver's view of the sender's tree: key → attributes.
#[derive(Clone)]
pub struct Replica<K, E> {
    entries: HashMap<K, E>,
}

impl<K: fmt::Debug, E: fmt::Debug> fmt::Debug for Replica<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter()).finish()
    }
}

impl<K: NotifyKey, E: PartialEq> PartialEq for Replica<K, E> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl<K: NotifyKey, E: Eq> Eq for Replica<K, E> {}

impl<K, E> Default for Replica<K, E> {
    fn default() -> Self {
        Replica {
            entries: HashMap::new(),
        }
    }
}

impl<K: NotifyKey, E: Snapshot> Replica<K, E> {
    /// An empty replica.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one change (see the module docs of [`crate::notify`] for the rules).
    pub fn apply(&mut self, change: Change<K, E>) {
        match change {
            Change::Create { key, attrs } | Change::Update { key, attrs } => {
                self.entries.insert(key, attrs);
            }
            Change::Remove { key } => {
                self.entries.remove(&key);
                self.entries.retain(|k, _| k.rebase(&key, &key).is_none());
            }
            Change::Rename { from, to, attrs } => {
                // Whatever was at `to` is replaced.
                self.entries.remove(&to);
                self.entries.retain(|k, _| k.rebase(&to, &to).is_none());
                if attrs.is_dir() {
                    let moved: Vec<(K, K)> = self
                        .entries
                        .keys()
                        .filter_map(|k| k.rebase(&from, &to).map(|n| (k.clone(), n)))
                        .collect();
                    for (old, new) in moved {
                        if let Some(v) = self.entries.remove(&old) {
                            self.entries.insert(new, v);
                        }
                    }
                }
                self.entries.remove(&from);
                // Known source or not, the destination exists now (seed 000 bug 2 (doc/LESSONS.md#seed-000-bug-2)).
                self.entries.insert(to, attrs);
            }
        }
    }

    /// Applies a batch in order.
    pub fn apply_batch(&mut self, batch: impl IntoIterator<Item = Change<K, E>>) {
        for change in batch {
            self.apply(change);
        }
    }

    /// The entries.
    pub fn entries(&self) -> &HashMap<K, E> {
        &self.entries
    }

    /// The attributes of `key`, if present.
    pub fn get(&self, key: &K) -> Option<&E> {
        self.entries.get(key)
    }
}
