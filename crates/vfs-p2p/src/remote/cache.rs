//! The far side's metadata cache: attributes, names, directory listings, lookup counts.
//!
//! Invariants:
//!
//! - **One lock.** Everything lives in one table behind one mutex, a leaf lock never held
//!   across an `.await`; no node is reachable any other way, so no reader sees a torn node
//!   (seed 000 bug 1 (doc/LESSONS.md#seed-000-bug-1)).
//! - **Never cached across a write or an invalidation.** Each node has a generation, set
//!   from a table-wide counter whenever the node is invalidated (a write begins or ends, a
//!   notification names it, an operation through this side changes it). A fetched answer
//!   is stored only if the node's generation is not newer than the counter read before
//!   the fetch was sent, and no write to it is in flight (seed 001 (doc/LESSONS.md#seed-001)). The same rule guards
//!   directory listings. An answer about an inode the table does not know is stored only
//!   if no unknown inode was invalidated since the fetch began.
//! - **A name being removed answers nothing.** While an unlink, rmdir or rename sent by
//!   this side is in flight, its names answer nothing from this table and learn nothing
//!   from lookup answers, and the inodes they denote (as far as this table knows) count as
//!   written to: no attribute of them is served or stored until the answer is in. The
//!   owner may already have freed such an inode and reused its number for a new object (a
//!   host filesystem does at once), whose answer can arrive first: without this, the old
//!   name answered with the new object's attributes (found by the testkit's concurrent
//!   mode over LocalFs: `/shared/keep`, renamed over, looked up as a directory of 4096
//!   bytes that another thread had just made under the freed number). For the same
//!   reason a rename that overlapped another such operation on one of its names moves no
//!   name (both are forgotten): the owner may have run the two in the other order.
//! - **No negative entries.** A missing name is never remembered (seed 002 bug 3 (doc/LESSONS.md#seed-002-bug-3)).
//! - **Only where a notification can find it.** Notifications name paths; they reach a
//!   node through the known names from the root. Attributes and listings are stored only
//!   for a node so reachable, and forgetting a name drops what was cached under it.
//! - **Bounded by the kernel.** A node lives while the kernel holds a reference to it
//!   (lookup count above zero) or this side has it open; it goes when both end.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use parking_lot::Mutex;
use vfs_core::{Attr, DirEntry, Ino};

struct Node {
    parent: Ino,
    name: OsString,
    /// References the kernel (the caller of `RemoteFs`) holds.
    kernel: u64,
    /// Lookups the owner counted for this link.
    remote: u64,
    /// Handles of this side open on it.
    open: u32,
    attr: Option<Attr>,
    generation: u64,
    writers: u32,
    /// Known names in this directory (from lookups and creations).
    children: HashMap<OsString, Ino>,
    listing: Option<Arc<Vec<DirEntry>>>,
    list_gen: u64,
}

impl Default for Node {
    fn default() -> Self {
        Node {
            parent: Ino::ROOT,
            name: OsString::new(),
            kernel: 0,
            remote: 0,
            open: 0,
            attr: None,
            generation: 0,
            writers: 0,
            children: HashMap::new(),
            listing: None,
            list_gen: 0,
        }
    }
}

#[derive(Default)]
struct State {
    nodes: HashMap<Ino, Node>,
    counter: u64,
    /// Last time an inode without a node was invalidated.
    unknown_inval: u64,
    /// Inode numbers of an earlier incarnation of the share (answered `ESTALE`).
    stale: HashSet<Ino>,
    /// Names an unlink, rmdir or rename in flight may take away, with how many such
    /// operations are in flight.
    unnaming: HashMap<(Ino, OsString), Pending>,
}

/// Operations in flight that may take one name away.
struct Pending {
    count: u32,
    /// When the last of them was sent.
    last: u64,
}

/// Names being taken away by an operation in flight, and the inodes they denoted
/// ([`MetaCache::unnaming`]).
#[derive(Debug)]
pub(crate) struct Unnaming {
    /// The names, when this operation was sent, and whether none was in flight then.
    names: Vec<((Ino, OsString), u64, bool)>,
    inos: Vec<Ino>,
}

impl Unnaming {
    /// The inodes the names denoted when the operation was sent, as far as known.
    pub fn inos(&self) -> &[Ino] {
        &self.inos
    }
}

impl State {
    fn tick(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn invalidate(&mut self, ino: Ino) {
        let g = self.tick();
        match self.nodes.get_mut(&ino) {
            Some(n) => {
                n.attr = None;
                n.generation = g;
            }
            None => self.unknown_inval = g,
        }
    }

    fn drop_listing(&mut self, dir: Ino) {
        let g = self.tick();
        if let Some(n) = self.nodes.get_mut(&dir) {
            n.listing = None;
            n.list_gen = g;
        }
    }
}

/// What the kernel may have cached, to be invalidated: inodes with their open state, and
/// names by parent.
#[derive(Default, Debug)]
pub(crate) struct KernelView {
    /// `(ino, has open handles)`.
    pub inodes: Vec<(Ino, bool)>,
    /// `(parent, name)`.
    pub entries: Vec<(Ino, OsString)>,
}

/// A path resolved through the known names.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    /// The parent directory and the last component, if the parent is known.
    pub parent: Option<(Ino, OsString)>,
    /// The inode the path names, if known.
    pub ino: Option<Ino>,
}

pub(crate) struct MetaCache {
    st: Mutex<State>,
}

impl MetaCache {
    pub fn new() -> MetaCache {
        let mut st = State::default();
        st.nodes.insert(
            Ino::ROOT,
            Node {
                parent: Ino::ROOT,
                kernel: u64::MAX / 2,
                ..Node::default()
            },
        );
        MetaCache { st: Mutex::new(st) }
    }

    /// The counter, read before a fetch is sent.
    pub fn now(&self) -> u64 {
        self.st.lock().counter
    }

    pub fn is_stale(&self, ino: Ino) -> bool {
        let st = self.st.lock();
        !st.stale.is_empty() && st.stale.contains(&ino)
    }

    /// The cached attributes of `ino`, unless a write to it is in flight.
    pub fn attr(&self, ino: Ino) -> Option<Attr> {
        let st = self.st.lock();
        st.nodes.get(&ino).filter(|n| n.writers == 0).and_then(|n| n.attr)
    }

    fn may_store(st: &State, ino: Ino, since: u64) -> bool {
        match st.nodes.get(&ino) {
            Some(n) => n.writers == 0 && n.generation <= since && Self::reachable(st, ino),
            None => st.unknown_inval <= since,
        }
    }

    /// Whether the known names lead from the root to `ino`: only then can a notification
    /// (which names a path) find what is cached for it, so only then is anything cached.
    fn reachable(st: &State, mut ino: Ino) -> bool {
        for _ in 0..4096 {
            if ino == Ino::ROOT {
                return true;
            }
            let Some(n) = st.nodes.get(&ino) else { return false };
            let linked = st
                .nodes
                .get(&n.parent)
                .is_some_and(|p| p.children.get(&n.name) == Some(&ino));
            if !linked {
                return false;
            }
            ino = n.parent;
        }
        false
    }

    /// Stores attributes fetched by a call sent when the counter was `since`.
    pub fn store_attr(&self, attr: Attr, since: u64) {
        let mut st = self.st.lock();
        if Self::may_store(&st, attr.ino, since)
            && let Some(n) = st.nodes.get_mut(&attr.ino)
        {
            n.attr = Some(attr);
        }
    }

    pub fn invalidate(&self, ino: Ino) {
        self.st.lock().invalidate(ino);
    }

    /// `name` in `parent` now names `attr.ino`: the kernel gets a reference to it
    /// (`remote`: the owner counted a lookup too). Attributes are stored under the rule.
    pub fn entered(&self, parent: Ino, name: &OsStr, attr: Attr, remote: bool, since: u64) {
        let mut st = self.st.lock();
        st.stale.remove(&attr.ino);
        // A name an operation in flight may take away: the answer may name an inode the
        // owner frees and reuses at once, so it teaches nothing (module invariant).
        let unnaming = !st.unnaming.is_empty() && st.unnaming.contains_key(&(parent, name.to_os_string()));
        let known = st.nodes.contains_key(&attr.ino);
        let fresh = !unnaming
            && match st.nodes.get(&attr.ino) {
                Some(n) => n.writers == 0 && n.generation <= since,
                None => st.unknown_inval <= since,
            };
        let n = st.nodes.entry(attr.ino).or_default();
        n.kernel += 1;
        if remote {
            n.remote += 1;
        }
        if attr.ino != Ino::ROOT && (!unnaming || !known) {
            n.parent = parent;
            n.name = name.to_os_string();
        }
        // The name is remembered only if the directory did not change while the answer
        // travelled (a removal or rename notified meanwhile would be undone).
        if let Some(p) = st.nodes.get_mut(&parent)
            && p.list_gen <= since
            && !unnaming
        {
            p.children.insert(name.to_os_string(), attr.ino);
        }
        if fresh
            && Self::reachable(&st, attr.ino)
            && let Some(n) = st.nodes.get_mut(&attr.ino)
        {
            n.attr = Some(attr);
        }
    }

    /// A cached answer to a lookup: the child's attributes, if its name and attributes
    /// are known (the kernel's reference is counted).
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Option<Attr> {
        let mut st = self.st.lock();
        if !st.unnaming.is_empty() && st.unnaming.contains_key(&(parent, name.to_os_string())) {
            return None;
        }
        let ino = *st.nodes.get(&parent)?.children.get(name)?;
        let n = st.nodes.get_mut(&ino)?;
        if n.writers > 0 {
            return None;
        }
        let attr = n.attr?;
        n.kernel += 1;
        Some(attr)
    }

    /// The name `parent/name` is not there (any more), or may name something else now.
    ///
    /// Notifications reach cached state by path, through the known names; what hung under
    /// the forgotten name can no longer be reached that way, so its attributes and
    /// listings (the whole subtree's) are dropped with the name: a cache entry exists only
    /// where a notification can find it.
    pub fn no_entry(&self, parent: Ino, name: &OsStr) {
        let mut st = self.st.lock();
        let child = st.nodes.get_mut(&parent).and_then(|p| p.children.remove(name));
        if let Some(c) = child {
            Self::drop_subtree(&mut st, c);
        }
    }

    fn drop_subtree(st: &mut State, top: Ino) {
        let g = st.tick();
        let mut todo = vec![top];
        let mut seen = HashSet::new();
        while let Some(ino) = todo.pop() {
            if !seen.insert(ino) || seen.len() > 1_000_000 {
                continue;
            }
            if let Some(n) = st.nodes.get_mut(&ino) {
                n.attr = None;
                n.generation = g;
                n.listing = None;
                n.list_gen = g;
                todo.extend(n.children.values().copied());
            }
        }
    }

    /// The entries of `dir` changed through this side (a name added or removed).
    pub fn dir_changed(&self, dir: Ino) {
        let mut st = self.st.lock();
        st.invalidate(dir);
        st.drop_listing(dir);
    }

    /// `parent/name` was removed through this side.
    pub fn removed(&self, parent: Ino, name: &OsStr) -> Option<Ino> {
        let mut st = self.st.lock();
        let child = st.nodes.get_mut(&parent).and_then(|p| p.children.remove(name));
        st.invalidate(parent);
        st.drop_listing(parent);
        if let Some(c) = child {
            Self::drop_subtree(&mut st, c);
        }
        child
    }

    /// `parent/name` was renamed to `newparent/newname` through this side. `sure`: no
    /// other operation on these names overlapped this one ([`Self::undisturbed`]);
    /// otherwise the names are forgotten, not moved.
    pub fn renamed(&self, parent: Ino, name: &OsStr, newparent: Ino, newname: &OsStr, exchange: bool, sure: bool) {
        let mut st = self.st.lock();
        let moved = st.nodes.get_mut(&parent).and_then(|p| p.children.remove(name));
        let replaced = st.nodes.get_mut(&newparent).and_then(|p| p.children.remove(newname));
        if let Some(m) = moved.filter(|_| !sure) {
            st.invalidate(m);
        }
        if let Some(r) = replaced.filter(|_| !sure) {
            st.invalidate(r);
        }
        let unsure: Vec<Ino> = if sure {
            Vec::new()
        } else {
            moved.into_iter().chain(replaced).collect()
        };
        let (moved, replaced) = if sure { (moved, replaced) } else { (None, None) };
        if let Some(m) = moved {
            if let Some(p) = st.nodes.get_mut(&newparent) {
                p.children.insert(newname.to_os_string(), m);
            }
            if let Some(n) = st.nodes.get_mut(&m) {
                n.parent = newparent;
                n.name = newname.to_os_string();
            }
            st.invalidate(m);
        }
        if let Some(r) = replaced {
            if exchange {
                if let Some(p) = st.nodes.get_mut(&parent) {
                    p.children.insert(name.to_os_string(), r);
                }
                if let Some(n) = st.nodes.get_mut(&r) {
                    n.parent = parent;
                    n.name = name.to_os_string();
                }
            }
            st.invalidate(r);
        }
        for d in [parent, newparent] {
            st.invalidate(d);
            st.drop_listing(d);
        }
        // A moved directory's own listing holds its `..`, which now names its new parent
        // (for an exchange, both moved): found by the testkit's model, which compares each
        // directory's `..` (an exchange of /a/a with /b listed /b's `..` as /a).
        for d in moved.into_iter().chain(replaced.filter(|_| exchange)).chain(unsure) {
            st.drop_listing(d);
        }
    }

    /// A write (or truncation) of `ino` begins: its attributes are not cached until it ends.
    pub fn write_begin(&self, ino: Ino) {
        let mut st = self.st.lock();
        st.invalidate(ino);
        if let Some(n) = st.nodes.get_mut(&ino) {
            n.writers += 1;
        }
    }

    /// An operation that may take names away (unlink, rmdir, rename) is sent: until
    /// [`Self::unnamed`], the names answer nothing from this table and teach it nothing,
    /// and the inodes they denote now, as far as known, count as written to (see the
    /// module's invariant).
    pub fn unnaming(&self, names: &[(Ino, &OsStr)]) -> Unnaming {
        let mut st = self.st.lock();
        let mut inos: Vec<Ino> = names
            .iter()
            .filter_map(|(p, n)| st.nodes.get(p).and_then(|d| d.children.get(*n)).copied())
            .collect();
        inos.dedup();
        for ino in &inos {
            st.invalidate(*ino);
            if let Some(n) = st.nodes.get_mut(ino) {
                n.writers += 1;
            }
        }
        let mut keys = Vec::with_capacity(names.len());
        for (p, n) in names {
            let key = (*p, n.to_os_string());
            let at = st.tick();
            let pending = st.unnaming.entry(key.clone()).or_insert(Pending { count: 0, last: at });
            let alone = pending.count == 0;
            pending.count += 1;
            pending.last = at;
            keys.push((key, at, alone));
        }
        Unnaming { names: keys, inos }
    }

    /// Whether no other operation that may take these names away was in flight at any
    /// time while this one was: only then does applying its answer leave the names as the
    /// owner has them. Two in flight at once may have run on the owner in either order,
    /// whatever order their answers arrive in (a rename over `keep` applied after a later
    /// one left `keep` naming an inode the owner had freed and reused).
    pub fn undisturbed(&self, u: &Unnaming) -> bool {
        let st = self.st.lock();
        u.names
            .iter()
            .all(|(key, at, alone)| *alone && st.unnaming.get(key).is_some_and(|p| p.last == *at))
    }

    /// The answer of the operation that [`Self::unnaming`] announced is in (and applied).
    pub fn unnamed(&self, u: &Unnaming) {
        {
            let mut st = self.st.lock();
            for (key, _, _) in &u.names {
                if let Some(p) = st.unnaming.get_mut(key) {
                    p.count = p.count.saturating_sub(1);
                    if p.count == 0 {
                        st.unnaming.remove(key);
                    }
                }
            }
        }
        for ino in &u.inos {
            self.write_end(*ino);
        }
    }

    pub fn write_end(&self, ino: Ino) {
        let mut st = self.st.lock();
        if let Some(n) = st.nodes.get_mut(&ino) {
            n.writers = n.writers.saturating_sub(1);
        }
        st.invalidate(ino);
    }

    pub fn opened(&self, ino: Ino) {
        self.st.lock().nodes.entry(ino).or_default().open += 1;
    }

    /// A handle was closed. Returns the owner's lookup count to forget if the node went.
    pub fn closed(&self, ino: Ino) -> Option<u64> {
        let mut st = self.st.lock();
        let n = st.nodes.get_mut(&ino)?;
        n.open = n.open.saturating_sub(1);
        Self::maybe_drop(&mut st, ino)
    }

    /// The kernel dropped `n` references. Returns the owner's lookup count to forget if
    /// the node went.
    pub fn forget(&self, ino: Ino, n: u64) -> Option<u64> {
        if ino == Ino::ROOT {
            return None;
        }
        let mut st = self.st.lock();
        let node = st.nodes.get_mut(&ino)?;
        node.kernel = node.kernel.saturating_sub(n);
        Self::maybe_drop(&mut st, ino)
    }

    fn maybe_drop(st: &mut State, ino: Ino) -> Option<u64> {
        let n = st.nodes.get(&ino)?;
        if n.kernel > 0 || n.open > 0 || ino == Ino::ROOT {
            return None;
        }
        let n = st.nodes.remove(&ino)?;
        if let Some(p) = st.nodes.get_mut(&n.parent)
            && p.children.get(&n.name) == Some(&ino)
        {
            p.children.remove(&n.name);
        }
        Some(n.remote)
    }

    /// The cached complete listing of `dir`.
    pub fn listing(&self, dir: Ino) -> Option<Arc<Vec<DirEntry>>> {
        self.st.lock().nodes.get(&dir).and_then(|n| n.listing.clone())
    }

    pub fn store_listing(&self, dir: Ino, entries: Arc<Vec<DirEntry>>, since: u64) {
        let mut st = self.st.lock();
        let reachable = Self::reachable(&st, dir);
        if let Some(n) = st.nodes.get_mut(&dir)
            && n.list_gen <= since
            && reachable
        {
            n.listing = Some(entries);
        }
    }

    /// Resolves a share path through the known names.
    pub fn resolve(&self, path: &[u8]) -> Resolved {
        let st = self.st.lock();
        if path.is_empty() {
            return Resolved {
                parent: None,
                ino: Some(Ino::ROOT),
            };
        }
        let mut cur = Some(Ino::ROOT);
        let mut parent = None;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let Some(dir) = cur else {
                return Resolved::default();
            };
            let name = OsStr::from_bytes(comp);
            parent = Some((dir, name.to_os_string()));
            cur = st.nodes.get(&dir).and_then(|n| n.children.get(name).copied());
        }
        Resolved { parent, ino: cur }
    }

    /// `ino` and everything known under it.
    pub fn subtree(&self, ino: Ino) -> Vec<Ino> {
        let st = self.st.lock();
        let mut out = vec![ino];
        let mut i = 0;
        while i < out.len() && out.len() < 1_000_000 {
            let me = out[i];
            if let Some(n) = st.nodes.get(&me) {
                out.extend(n.children.values().copied().filter(|c| *c != me));
            }
            i += 1;
        }
        out
    }

    /// Whether the kernel knows `ino`, and whether it has open handles.
    pub fn kernel_state(&self, ino: Ino) -> Option<bool> {
        let st = self.st.lock();
        st.nodes
            .get(&ino)
            .filter(|n| n.kernel > 0 || n.open > 0)
            .map(|n| n.open > 0)
    }

    /// Forgets every attribute, listing and name (changes may have been missed) and says
    /// what the kernel may have cached.
    pub fn revalidate_all(&self) -> KernelView {
        let mut st = self.st.lock();
        let g = st.tick();
        st.unknown_inval = g;
        let mut view = KernelView::default();
        for (ino, n) in st.nodes.iter_mut() {
            n.attr = None;
            n.generation = g;
            n.listing = None;
            n.list_gen = g;
            view.inodes.push((*ino, n.open > 0));
            for name in n.children.drain().map(|(k, _)| k) {
                view.entries.push((*ino, name));
            }
        }
        view
    }

    /// A new link: the owner counts lookups afresh.
    pub fn reset_remote_counts(&self) {
        for n in self.st.lock().nodes.values_mut() {
            n.remote = 0;
        }
    }

    /// The share is another incarnation (the owner restarted with new inode numbers):
    /// every inode but the root is stale from now on.
    pub fn new_incarnation(&self) -> KernelView {
        let view = self.revalidate_all();
        let mut st = self.st.lock();
        let old: Vec<Ino> = st.nodes.keys().copied().filter(|i| *i != Ino::ROOT).collect();
        for ino in old {
            st.stale.insert(ino);
            if let Some(n) = st.nodes.get_mut(&ino) {
                n.kernel = 0;
                n.remote = 0;
            }
        }
        st.nodes.retain(|ino, n| *ino == Ino::ROOT || n.open > 0);
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfs_core::FileType;

    fn attr(ino: u64, size: u64) -> Attr {
        Attr {
            size,
            ..Attr::new(Ino(ino), FileType::Regular, 0o644)
        }
    }

    fn with_file() -> MetaCache {
        let c = MetaCache::new();
        let since = c.now();
        c.entered(Ino::ROOT, OsStr::new("f"), attr(2, 10), true, since);
        c
    }

    /// Seed 001 (doc/LESSONS.md#seed-001): an attribute fetched while a write was in flight, or sent before the
    /// write began, is never cached.
    #[test]
    fn no_attribute_is_cached_across_a_write() {
        let c = with_file();
        assert_eq!(c.attr(Ino(2)).map(|a| a.size), Some(10));
        let since = c.now();
        c.write_begin(Ino(2));
        assert_eq!(c.attr(Ino(2)), None, "not served while a write is in flight");
        c.store_attr(attr(2, 10), since);
        assert_eq!(c.attr(Ino(2)), None, "a getattr racing the write is not stored");
        c.write_end(Ino(2));
        c.store_attr(attr(2, 10), since);
        assert_eq!(c.attr(Ino(2)), None, "an answer sent before the write ended is stale");
        let since = c.now();
        c.store_attr(attr(2, 20), since);
        assert_eq!(c.attr(Ino(2)).map(|a| a.size), Some(20));
    }

    /// A directory moved (or exchanged) to another parent loses its cached listing, whose
    /// `..` named the old parent. Found by the testkit's model (RemoteFs over LocalFs, an
    /// exchange of /a/a with /b listed /b's `..` as /a); fails with the drop reverted.
    #[test]
    fn a_moved_directory_forgets_its_listing() {
        let c = MetaCache::new();
        let dir = |ino| Attr::new(Ino(ino), FileType::Directory, 0o755);
        let since = c.now();
        c.entered(Ino::ROOT, OsStr::new("a"), dir(2), true, since);
        c.entered(Ino(2), OsStr::new("d"), dir(3), true, since);
        c.entered(Ino::ROOT, OsStr::new("e"), dir(4), true, since);
        let dotdot = |parent: u64| {
            Arc::new(vec![DirEntry {
                ino: Ino(parent),
                kind: FileType::Directory,
                name: "..".into(),
                cookie: 1,
            }])
        };
        let since = c.now();
        c.store_listing(Ino(3), dotdot(2), since);
        c.store_listing(Ino(4), dotdot(1), since);
        assert!(c.listing(Ino(3)).is_some() && c.listing(Ino(4)).is_some());
        c.renamed(Ino(2), OsStr::new("d"), Ino::ROOT, OsStr::new("e"), true, true);
        assert!(c.listing(Ino(3)).is_none(), "the moved directory's `..` changed");
        assert!(c.listing(Ino(4)).is_none(), "the exchanged directory's `..` changed");
    }

    /// A name being taken away answers nothing from the cache until the removal's answer
    /// is in: the owner may have reused the freed inode number for a new object whose
    /// answer arrives first. Pins the bug the testkit's concurrent mode found over LocalFs
    /// (`/shared/keep`, renamed over, looked up with the attributes of a directory another
    /// thread had made under the freed number); fails with `unnaming` reverted to a no-op.
    #[test]
    fn a_name_being_removed_does_not_answer_for_a_reused_inode() {
        let c = MetaCache::new();
        let dir = |ino| Attr::new(Ino(ino), FileType::Directory, 0o755);
        let since = c.now();
        c.entered(Ino::ROOT, OsStr::new("shared"), dir(2), true, since);
        c.entered(Ino::ROOT, OsStr::new("t1"), dir(3), true, since);
        c.entered(Ino(2), OsStr::new("keep"), attr(10, 256), true, since);
        c.entered(Ino(2), OsStr::new("tmp"), attr(11, 256), true, since);
        assert_eq!(c.lookup(Ino(2), OsStr::new("keep")).map(|a| a.size), Some(256));
        // rename shared/tmp over shared/keep is sent; the owner frees 10 and a mkdir of
        // t1/b, answered first, reuses it.
        let busy = c.unnaming(&[(Ino(2), OsStr::new("tmp")), (Ino(2), OsStr::new("keep"))]);
        assert_eq!(busy.inos(), [Ino(11), Ino(10)]);
        // A lookup of keep sent now, answered (by the owner, before the rename) with 10,
        // teaches nothing: 10 is about to be freed.
        let since = c.now();
        c.entered(Ino(2), OsStr::new("keep"), attr(10, 256), true, since);
        assert_eq!(c.lookup(Ino(2), OsStr::new("keep")), None);
        let since = c.now();
        c.entered(Ino(3), OsStr::new("b"), dir(10), true, since);
        assert_eq!(
            c.lookup(Ino(2), OsStr::new("keep")),
            None,
            "keep must not answer with the directory that reuses its old number"
        );
        assert_eq!(c.attr(Ino(10)), None);
        // The rename's answer: keep is 11 now.
        assert!(c.undisturbed(&busy));
        c.renamed(Ino(2), OsStr::new("tmp"), Ino(2), OsStr::new("keep"), false, true);
        c.unnamed(&busy);
        assert_eq!(
            c.lookup(Ino(2), OsStr::new("keep")),
            None,
            "11's attributes are asked again"
        );
        let since = c.now();
        c.store_attr(attr(11, 256), since);
        assert_eq!(
            c.lookup(Ino(2), OsStr::new("keep")).map(|a| (a.ino, a.size)),
            Some((Ino(11), 256))
        );
    }

    /// Two renames over one name in flight at once may have run on the owner in either
    /// order, whatever order their answers arrive in: the name is forgotten, not moved.
    /// Pins the second half of the bug above (the answer of the earlier rename over
    /// `keep` applied last left `keep` naming the inode the later one freed, which the
    /// owner reused for a directory); fails with `undisturbed` reverted to `true`.
    #[test]
    fn overlapping_renames_over_one_name_forget_it() {
        let c = MetaCache::new();
        let dir = |ino| Attr::new(Ino(ino), FileType::Directory, 0o755);
        let since = c.now();
        c.entered(Ino::ROOT, OsStr::new("shared"), dir(2), true, since);
        c.entered(Ino::ROOT, OsStr::new("t1"), dir(3), true, since);
        for (name, ino) in [("keep", 10), ("tmp0", 11), ("tmp1", 12)] {
            c.entered(Ino(2), OsStr::new(name), attr(ino, 256), true, since);
        }
        let names = |tmp: &str| {
            (
                c.unnaming(&[(Ino(2), OsStr::new(tmp))]),
                c.unnaming(&[(Ino(2), OsStr::new("keep"))]),
            )
        };
        let first = names("tmp0");
        let second = names("tmp1");
        // The owner ran the first, then the second (freeing 11); the second's answer
        // arrives first.
        for (tmp, r) in [("tmp1", &second), ("tmp0", &first)] {
            let sure = c.undisturbed(&r.0) && c.undisturbed(&r.1);
            c.renamed(Ino(2), OsStr::new(tmp), Ino(2), OsStr::new("keep"), false, sure);
            c.unnamed(&r.0);
            c.unnamed(&r.1);
        }
        // 11 is reused for the directory t1/b.
        let since = c.now();
        c.entered(Ino(3), OsStr::new("b"), dir(11), true, since);
        assert_eq!(c.lookup(Ino(3), OsStr::new("b")).map(|a| a.size), Some(dir(11).size));
        assert_eq!(c.lookup(Ino(2), OsStr::new("keep")), None, "keep is asked again");
        // One rename alone is applied.
        let alone = names("tmp9");
        assert!(c.undisturbed(&alone.0) && c.undisturbed(&alone.1));
    }

    /// A notification that arrives while a fetch travels wins over the fetch's answer.
    #[test]
    fn an_invalidation_during_a_fetch_wins() {
        let c = with_file();
        let since = c.now();
        c.invalidate(Ino(2));
        c.store_attr(attr(2, 99), since);
        assert_eq!(c.attr(Ino(2)), None);
        // An inode without a node: the same rule through the table-wide stamp.
        let since = c.now();
        c.invalidate(Ino(7));
        c.entered(Ino::ROOT, OsStr::new("g"), attr(7, 1), true, since);
        assert_eq!(c.attr(Ino(7)), None);
    }

    /// Seed 002 bug 3 (doc/LESSONS.md#seed-002-bug-3): a missing name leaves nothing behind, and forgetting a name makes
    /// what hung under it uncacheable until it is found again by name.
    #[test]
    fn no_negative_entries_and_nothing_cached_out_of_reach() {
        let c = with_file();
        c.no_entry(Ino::ROOT, OsStr::new("f"));
        assert_eq!(c.lookup(Ino::ROOT, OsStr::new("f")), None);
        let since = c.now();
        c.store_attr(attr(2, 5), since);
        assert_eq!(
            c.attr(Ino(2)),
            None,
            "unreachable by path: a notification could not reach it"
        );
        let since = c.now();
        c.entered(Ino::ROOT, OsStr::new("f"), attr(2, 5), true, since);
        assert_eq!(c.lookup(Ino::ROOT, OsStr::new("f")).map(|a| a.size), Some(5));
    }

    /// The kernel's references bound the table; the owner's lookups are returned.
    #[test]
    fn forgetting_drops_the_node_and_returns_the_owner_count() {
        let c = with_file();
        let since = c.now();
        c.entered(Ino::ROOT, OsStr::new("f"), attr(2, 10), true, since);
        c.opened(Ino(2));
        assert_eq!(c.forget(Ino(2), 2), None, "still open");
        assert_eq!(c.closed(Ino(2)), Some(2));
        assert_eq!(c.resolve(b"f").ino, None);
    }
}
