//! A reference model of a filesystem tree and random operation sequences run against it
//! and a backend side by side.
//!
//! Invariant: after every step the backend's answer (value or errno) equals the model's,
//! and the backend's whole observable tree (names, types, sizes, link counts, bytes,
//! symlink targets, and which names share an inode) equals the model's tree. The model
//! follows Linux: errno precedence is the kernel's, checked against `LocalFs` on a real
//! host directory. For a backend that keeps time stamps ([`Cap::Timestamps`]) every
//! node's mtime and ctime also follow the model's rules after every step: changed where
//! the step must change them (strictly later once a [`Step::Tick`] has let any clock
//! advance since the node's last change), unchanged everywhere else.
//!
//! Operations pick their targets by index into the current tree (modulo its size) and
//! their names from a four-letter alphabet, so they collide often: creating over existing
//! names, renaming into subtrees, unlinking what was just linked. A failing sequence is
//! shrunk by proptest to a minimal one and reported step by step.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use super::scenarios::{CTX, dotdot, list, nm, read_all};
use super::{Backend, Cap, Caps};
use crate::error::Errno;
use crate::types::{FileType, Ino, OpenFlags, RenameFlags, SetAttr};
use crate::vfs::VirtualFs;

/// The names operations use: few, so they collide.
pub const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// Offsets and sizes writes and truncations use: page and chunk edges.
pub const OFFSETS: [u64; 8] = [0, 1, 100, 4095, 4096, 65535, 65536, 70_000];

/// One operation; `u8` fields pick a target by index into the current tree.
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub enum Op {
    Create {
        dir: u8,
        name: u8,
    },
    Mkdir {
        dir: u8,
        name: u8,
    },
    Symlink {
        dir: u8,
        name: u8,
        target: u8,
    },
    Link {
        node: u8,
        dir: u8,
        name: u8,
    },
    Unlink {
        dir: u8,
        name: u8,
    },
    Rmdir {
        dir: u8,
        name: u8,
    },
    Rename {
        dir: u8,
        name: u8,
        to_dir: u8,
        to_name: u8,
        flags: u8,
    },
    Write {
        file: u8,
        offset: u8,
        len: u16,
        byte: u8,
    },
    Truncate {
        file: u8,
        size: u8,
    },
    Getattr {
        node: u8,
    },
    Readdir {
        dir: u8,
    },
    /// `open(O_CREAT)` without `O_EXCL`, optionally with `O_TRUNC`.
    CreateOpen {
        dir: u8,
        name: u8,
        trunc: bool,
    },
    /// `open(O_TRUNC)` of an existing file.
    OpenTrunc {
        file: u8,
    },
    /// A write through an `O_APPEND` handle (at offset 0: the handle must ignore it).
    Append {
        file: u8,
        len: u16,
        byte: u8,
    },
    /// `chmod`.
    Chmod {
        node: u8,
        mode: u16,
    },
    /// Waits long enough for any clock to advance (see [`Step::Tick`]).
    Tick,
}

/// A proptest strategy for one operation of the first set (no open modes, chmod or
/// clock ticks): what every harness can drive, an NFSv3 client included.
pub fn op() -> impl Strategy<Value = Op> {
    let i = any::<u8>;
    let n = || 0u8..NAMES.len() as u8;
    prop_oneof![
        3 => (i(), n()).prop_map(|(dir, name)| Op::Create { dir, name }),
        2 => (i(), n()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        1 => (i(), n(), n()).prop_map(|(dir, name, target)| Op::Symlink { dir, name, target }),
        1 => (i(), i(), n()).prop_map(|(node, dir, name)| Op::Link { node, dir, name }),
        2 => (i(), n()).prop_map(|(dir, name)| Op::Unlink { dir, name }),
        1 => (i(), n()).prop_map(|(dir, name)| Op::Rmdir { dir, name }),
        3 => (i(), n(), i(), n(), 0u8..3).prop_map(|(dir, name, to_dir, to_name, flags)| Op::Rename { dir, name, to_dir, to_name, flags }),
        3 => (i(), 0u8..OFFSETS.len() as u8, 0u16..300, 1u8..=255).prop_map(|(file, offset, len, byte)| Op::Write { file, offset, len, byte }),
        2 => (i(), 0u8..OFFSETS.len() as u8).prop_map(|(file, size)| Op::Truncate { file, size }),
        1 => i().prop_map(|node| Op::Getattr { node }),
        1 => i().prop_map(|dir| Op::Readdir { dir }),
    ]
}

/// A proptest strategy for one operation of the whole set: [`op`]'s, plus `O_CREAT`
/// without `O_EXCL`, `O_TRUNC` and `O_APPEND` opens, chmod and clock ticks.
pub fn full_op() -> impl Strategy<Value = Op> {
    let i = any::<u8>;
    let n = || 0u8..NAMES.len() as u8;
    prop_oneof![
        20 => op(),
        1 => (i(), n(), any::<bool>()).prop_map(|(dir, name, trunc)| Op::CreateOpen { dir, name, trunc }),
        1 => i().prop_map(|file| Op::OpenTrunc { file }),
        2 => (i(), 0u16..300, 1u8..=255).prop_map(|(file, len, byte)| Op::Append { file, len, byte }),
        1 => (i(), 0u16..0o777).prop_map(|(node, mode)| Op::Chmod { node, mode }),
        1 => Just(Op::Tick),
    ]
}

/// A proptest strategy for a sequence of 1 to 40 operations of the whole set.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(full_op(), 1..40)
}

/// Like [`ops`], for a backend with `caps`: operations that need an absent capability
/// (symlinks, hard links, rename flags) are left out.
pub fn ops_for(caps: Caps) -> impl Strategy<Value = Vec<Op>> {
    let keep = move |op: &Op| match op {
        Op::Symlink { .. } => caps.has(Cap::Symlinks),
        Op::Link { .. } => caps.has(Cap::HardLinks),
        Op::Rename { flags, .. } => *flags == 0 || caps.has(Cap::RenameFlags),
        _ => true,
    };
    proptest::collection::vec(full_op(), 1..40)
        .prop_map(move |v| v.into_iter().filter(|o| keep(o)).collect::<Vec<Op>>())
}

/// A path from the root, as names.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Path(Vec<String>);

impl Path {
    fn child(&self, name: &str) -> Path {
        let mut v = self.0.clone();
        v.push(name.to_string());
        Path(v)
    }
    fn is_within(&self, ancestor: &Path) -> bool {
        self.0.len() >= ancestor.0.len() && self.0[..ancestor.0.len()] == ancestor.0[..]
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

/// An operation with its targets resolved to paths: what the report prints.
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub enum Step {
    Create(Path),
    Mkdir(Path),
    Symlink(Path, &'static str),
    Link(Path, Path),
    Unlink(Path),
    Rmdir(Path),
    Rename(Path, Path, RenameFlags),
    Write {
        file: Path,
        offset: u64,
        len: usize,
        byte: u8,
    },
    Truncate(Path, u64),
    Getattr(Path),
    Readdir(Path),
    /// `open(O_CREAT)` without `O_EXCL` (`true`: with `O_TRUNC`): opens what is there.
    CreateOpen(Path, bool),
    /// `open(O_RDWR | O_TRUNC)`, then release.
    OpenTrunc(Path),
    /// Open `O_WRONLY | O_APPEND`, write `len` bytes at offset 0, release.
    Append {
        file: Path,
        len: usize,
        byte: u8,
    },
    /// `chmod` (setattr of the mode).
    Chmod(Path, u32),
    /// Sleeps past one tick of the host's coarse clock (the one file systems stamp
    /// with), so a time stamp that must change is then strictly later.
    Tick,
}

/// What a step must do to one time stamp of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stamp {
    /// Left as it was.
    Same,
    /// Either (e.g. truncation to the size the file has): never earlier.
    Either,
    /// Changed: later, or equal only while the clock cannot have ticked.
    Changed,
}

/// What a step returns when it succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Outcome {
    Done,
    Written(u32),
    Attr {
        kind: FileType,
        size: Option<u64>,
        nlink: Option<u32>,
    },
    Names(Vec<(String, FileType)>),
}

#[derive(Clone, Debug)]
enum Content {
    File(Vec<u8>),
    Dir(BTreeMap<String, usize>),
    Symlink(String),
}

#[derive(Clone, Debug)]
struct MNode {
    content: Content,
    nlink: u32,
}

impl MNode {
    fn kind(&self) -> FileType {
        match self.content {
            Content::File(_) => FileType::Regular,
            Content::Dir(_) => FileType::Directory,
            Content::Symlink(_) => FileType::Symlink,
        }
    }
}

/// The reference model: a tree of nodes; hard links share a node.
#[derive(Clone, Debug)]
pub struct Model {
    nodes: HashMap<usize, MNode>,
    next: usize,
    /// What the last successful [`Model::apply`] must have done to each node's (mtime,
    /// ctime); nodes not listed keep both.
    touched: HashMap<usize, (Stamp, Stamp)>,
}

const ROOT: usize = 0;

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    /// An empty root.
    pub fn new() -> Model {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            MNode {
                content: Content::Dir(BTreeMap::new()),
                nlink: 2,
            },
        );
        Model {
            nodes,
            next: 1,
            touched: HashMap::new(),
        }
    }

    /// Whether node `id` may be removed by an operation on a directory (`as_dir`: rmdir, a
    /// directory renamed over it) or on a non-directory (unlink, a file renamed over it).
    fn may_replace(&self, as_dir: bool, id: usize) -> Result<(), Errno> {
        match (as_dir, self.children(id)) {
            (false, Some(_)) => Err(Errno::EISDIR),
            (true, None) => Err(Errno::ENOTDIR),
            (true, Some(c)) if !c.is_empty() => Err(Errno::ENOTEMPTY),
            _ => Ok(()),
        }
    }

    fn children(&self, id: usize) -> Option<&BTreeMap<String, usize>> {
        match &self.nodes.get(&id)?.content {
            Content::Dir(c) => Some(c),
            _ => None,
        }
    }

    fn children_mut(&mut self, id: usize) -> Option<&mut BTreeMap<String, usize>> {
        match &mut self.nodes.get_mut(&id)?.content {
            Content::Dir(c) => Some(c),
            _ => None,
        }
    }

    fn resolve(&self, path: &Path) -> Option<usize> {
        let mut cur = ROOT;
        for c in &path.0 {
            cur = *self.children(cur)?.get(c)?;
        }
        Some(cur)
    }

    /// Every path in the tree, depth first, sorted; with the node it names.
    fn paths(&self) -> Vec<(Path, usize)> {
        let mut out = vec![(Path(Vec::new()), ROOT)];
        let mut i = 0;
        while i < out.len() {
            let (p, id) = out[i].clone();
            if let Some(c) = self.children(id) {
                for (name, child) in c {
                    out.push((p.child(name), *child));
                }
            }
            i += 1;
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn pick(&self, idx: u8, want: impl Fn(FileType) -> bool) -> Option<Path> {
        let all: Vec<Path> = self
            .paths()
            .into_iter()
            .filter(|(_, id)| self.nodes.get(id).is_some_and(|n| want(n.kind())))
            .map(|(p, _)| p)
            .collect();
        if all.is_empty() {
            None
        } else {
            Some(all[idx as usize % all.len()].clone())
        }
    }

    /// Resolves an operation's indices against the current tree; `None` if it has no
    /// possible target (e.g. a write when there are no files).
    pub fn resolve_op(&self, op: &Op) -> Option<Step> {
        let dir = |i: u8| self.pick(i, |k| k == FileType::Directory);
        let name = |i: u8| NAMES[i as usize % NAMES.len()];
        Some(match *op {
            Op::Create { dir: d, name: n } => Step::Create(dir(d)?.child(name(n))),
            Op::Mkdir { dir: d, name: n } => Step::Mkdir(dir(d)?.child(name(n))),
            Op::Symlink {
                dir: d,
                name: n,
                target,
            } => Step::Symlink(dir(d)?.child(name(n)), name(target)),
            Op::Link { node, dir: d, name: n } => {
                Step::Link(self.pick(node, |k| k != FileType::Directory)?, dir(d)?.child(name(n)))
            }
            Op::Unlink { dir: d, name: n } => Step::Unlink(dir(d)?.child(name(n))),
            Op::Rmdir { dir: d, name: n } => Step::Rmdir(dir(d)?.child(name(n))),
            Op::Rename {
                dir: d,
                name: n,
                to_dir,
                to_name,
                flags,
            } => {
                let flags = [RenameFlags::NONE, RenameFlags::NOREPLACE, RenameFlags::EXCHANGE][flags as usize % 3];
                Step::Rename(dir(d)?.child(name(n)), dir(to_dir)?.child(name(to_name)), flags)
            }
            Op::Write {
                file,
                offset,
                len,
                byte,
            } => Step::Write {
                file: self.pick(file, |k| k == FileType::Regular)?,
                offset: OFFSETS[offset as usize % OFFSETS.len()],
                len: usize::from(len),
                byte,
            },
            Op::Truncate { file, size } => Step::Truncate(
                self.pick(file, |k| k == FileType::Regular)?,
                OFFSETS[size as usize % OFFSETS.len()],
            ),
            Op::Getattr { node } => Step::Getattr(self.pick(node, |_| true)?),
            Op::Readdir { dir: d } => Step::Readdir(dir(d)?),
            Op::CreateOpen { dir: d, name: n, trunc } => {
                let p = dir(d)?.child(name(n));
                // open(2) follows a symlink; the trait's create does not say how: skipped.
                if self
                    .resolve(&p)
                    .and_then(|id| self.nodes.get(&id))
                    .is_some_and(|m| m.kind() == FileType::Symlink)
                {
                    return None;
                }
                Step::CreateOpen(p, trunc)
            }
            Op::OpenTrunc { file } => Step::OpenTrunc(self.pick(file, |k| k == FileType::Regular)?),
            Op::Append { file, len, byte } => Step::Append {
                file: self.pick(file, |k| k == FileType::Regular)?,
                len: usize::from(len),
                byte,
            },
            Op::Chmod { node, mode } => {
                Step::Chmod(self.pick(node, |k| k != FileType::Symlink)?, u32::from(mode & 0o777))
            }
            Op::Tick => Step::Tick,
        })
    }

    fn split(path: &Path) -> (Path, &str) {
        let (last, parent) = path
            .0
            .split_last()
            .map(|(l, p)| (l.as_str(), p.to_vec()))
            .unwrap_or(("", Vec::new()));
        (Path(parent), last)
    }

    fn add(&mut self, parent: usize, name: &str, content: Content) -> usize {
        let id = self.next;
        self.next += 1;
        let is_dir = matches!(content, Content::Dir(_));
        self.nodes.insert(
            id,
            MNode {
                content,
                nlink: if is_dir { 2 } else { 1 },
            },
        );
        if let Some(c) = self.children_mut(parent) {
            c.insert(name.to_string(), id);
        }
        if is_dir && let Some(p) = self.nodes.get_mut(&parent) {
            p.nlink += 1;
        }
        id
    }

    /// Drops one name of a non-directory; the node goes with its last name.
    fn drop_link(&mut self, id: usize) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.nlink = n.nlink.saturating_sub(1);
            if n.nlink == 0 {
                self.nodes.remove(&id);
            }
        }
    }

    /// Applies a step with Linux's semantics and returns its outcome or errno. Also notes
    /// which time stamps of which nodes the step must change (none when it fails).
    pub fn apply(&mut self, step: &Step) -> Result<Outcome, Errno> {
        let rules = self.stamp_rules(step);
        let r = self.apply_inner(step);
        self.touched.clear();
        if r.is_ok() {
            for (id, m, c) in rules {
                let e = self.touched.entry(id).or_insert((Stamp::Same, Stamp::Same));
                *e = (e.0.max(m), e.1.max(c));
            }
        }
        r
    }

    /// What `step`, if it succeeds, must do to the (mtime, ctime) of which nodes, computed
    /// on the tree before it (Linux; POSIX for the parents and the renamed inode).
    fn stamp_rules(&self, step: &Step) -> Vec<(usize, Stamp, Stamp)> {
        use Stamp::{Changed as C, Either as E, Same as S};
        let node = |p: &Path| self.resolve(p);
        let parent = |p: &Path| self.resolve(&Model::split(p).0);
        let size = |id: usize| match self.nodes.get(&id).map(|n| &n.content) {
            Some(Content::File(d)) => d.len() as u64,
            _ => 0,
        };
        let is_dir = |id: usize| self.children(id).is_some();
        let mut out = Vec::new();
        let mut add = |id: Option<usize>, m, c| {
            if let Some(id) = id {
                out.push((id, m, c));
            }
        };
        match step {
            Step::Create(p) | Step::Mkdir(p) | Step::Symlink(p, _) | Step::Rmdir(p) => add(parent(p), C, C),
            Step::Unlink(p) => {
                add(parent(p), C, C);
                add(node(p), S, C);
            }
            Step::Link(src, dst) => {
                add(parent(dst), C, C);
                add(node(src), S, C);
            }
            Step::Rename(from, to, _) => {
                let (src, dst) = (node(from), node(to));
                if src.is_some() && src == dst {
                    // Two names of one inode: Linux does nothing; a backend may touch.
                    add(parent(from), E, E);
                    add(parent(to), E, E);
                    add(src, E, E);
                } else {
                    let moves = parent(from) != parent(to);
                    add(parent(from), C, C);
                    add(parent(to), C, C);
                    // A directory moving to another parent has its `..` rewritten: some
                    // file systems count that as a change of its data.
                    for id in [src, dst].into_iter().flatten() {
                        add(Some(id), if moves && is_dir(id) { E } else { S }, C);
                    }
                }
            }
            Step::Write { file, len, .. } | Step::Append { file, len, .. } => {
                let s = if *len > 0 { C } else { E };
                add(node(file), s, s);
            }
            Step::Truncate(file, to) => {
                let s = node(file).map_or(E, |id| if size(id) != *to { C } else { E });
                add(node(file), s, s);
            }
            Step::OpenTrunc(file) => {
                let s = node(file).map_or(E, |id| if size(id) > 0 { C } else { E });
                add(node(file), s, s);
            }
            Step::CreateOpen(p, trunc) => match node(p) {
                None => add(parent(p), C, C),
                Some(id) if *trunc => {
                    let s = if size(id) > 0 { C } else { E };
                    add(Some(id), s, s);
                }
                Some(_) => {}
            },
            Step::Chmod(p, _) => add(node(p), S, C),
            Step::Getattr(_) | Step::Readdir(_) | Step::Tick => {}
        }
        out
    }

    fn apply_inner(&mut self, step: &Step) -> Result<Outcome, Errno> {
        match step {
            Step::Create(p) | Step::Mkdir(p) | Step::Symlink(p, _) => {
                let (parent, name) = Model::split(p);
                let pid = self.resolve(&parent).ok_or(Errno::ENOENT)?;
                if self.children(pid).ok_or(Errno::ENOTDIR)?.contains_key(name) {
                    return Err(Errno::EEXIST);
                }
                let content = match step {
                    Step::Create(_) => Content::File(Vec::new()),
                    Step::Mkdir(_) => Content::Dir(BTreeMap::new()),
                    Step::Symlink(_, t) => Content::Symlink((*t).to_string()),
                    _ => unreachable!("outer match"),
                };
                self.add(pid, name, content);
                Ok(Outcome::Done)
            }
            Step::Link(src, dst) => {
                let id = self.resolve(src).ok_or(Errno::ENOENT)?;
                let (parent, name) = Model::split(dst);
                let pid = self.resolve(&parent).ok_or(Errno::ENOENT)?;
                if self.children(pid).ok_or(Errno::ENOTDIR)?.contains_key(name) {
                    return Err(Errno::EEXIST);
                }
                if let Some(c) = self.children_mut(pid) {
                    c.insert(name.to_string(), id);
                }
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.nlink += 1;
                }
                Ok(Outcome::Done)
            }
            Step::Unlink(p) | Step::Rmdir(p) => {
                let rmdir = matches!(step, Step::Rmdir(_));
                let (parent, name) = Model::split(p);
                let pid = self.resolve(&parent).ok_or(Errno::ENOENT)?;
                let id = *self
                    .children(pid)
                    .ok_or(Errno::ENOTDIR)?
                    .get(name)
                    .ok_or(Errno::ENOENT)?;
                let is_dir = self.children(id).is_some();
                self.may_replace(rmdir, id)?;
                if let Some(c) = self.children_mut(pid) {
                    c.remove(name);
                }
                if is_dir {
                    if let Some(n) = self.nodes.get_mut(&pid) {
                        n.nlink -= 1;
                    }
                    self.nodes.remove(&id);
                } else {
                    self.drop_link(id);
                }
                Ok(Outcome::Done)
            }
            Step::Rename(from, to, flags) => self.rename(from, to, *flags),
            Step::Write {
                file,
                offset,
                len,
                byte,
            } => {
                let id = self.resolve(file).ok_or(Errno::ENOENT)?;
                if let Some(MNode {
                    content: Content::File(d),
                    ..
                }) = self.nodes.get_mut(&id)
                    && *len > 0
                {
                    let end = *offset as usize + len;
                    if d.len() < end {
                        d.resize(end, 0);
                    }
                    d[*offset as usize..end].fill(*byte);
                }
                Ok(Outcome::Written(*len as u32))
            }
            Step::Truncate(file, size) => {
                let id = self.resolve(file).ok_or(Errno::ENOENT)?;
                if let Some(MNode {
                    content: Content::File(d),
                    ..
                }) = self.nodes.get_mut(&id)
                {
                    d.resize(*size as usize, 0);
                }
                Ok(Outcome::Done)
            }
            Step::CreateOpen(p, trunc) => {
                let (parent, name) = Model::split(p);
                let pid = self.resolve(&parent).ok_or(Errno::ENOENT)?;
                match self.children(pid).ok_or(Errno::ENOTDIR)?.get(name).copied() {
                    None => {
                        self.add(pid, name, Content::File(Vec::new()));
                    }
                    Some(id) => match self.nodes.get_mut(&id).map(|n| &mut n.content) {
                        Some(Content::File(d)) => {
                            if *trunc {
                                d.clear();
                            }
                        }
                        Some(Content::Dir(_)) => return Err(Errno::EISDIR),
                        _ => return Err(Errno::EINVAL),
                    },
                }
                Ok(Outcome::Done)
            }
            Step::OpenTrunc(p) => {
                let id = self.resolve(p).ok_or(Errno::ENOENT)?;
                if let Some(Content::File(d)) = self.nodes.get_mut(&id).map(|n| &mut n.content) {
                    d.clear();
                }
                Ok(Outcome::Done)
            }
            Step::Append { file, len, byte } => {
                let id = self.resolve(file).ok_or(Errno::ENOENT)?;
                if let Some(Content::File(d)) = self.nodes.get_mut(&id).map(|n| &mut n.content) {
                    d.resize(d.len() + len, *byte);
                }
                Ok(Outcome::Written(*len as u32))
            }
            Step::Chmod(p, _) => {
                self.resolve(p).ok_or(Errno::ENOENT)?;
                Ok(Outcome::Done)
            }
            Step::Tick => Ok(Outcome::Done),
            Step::Getattr(p) => {
                let id = self.resolve(p).ok_or(Errno::ENOENT)?;
                let n = self.nodes.get(&id).ok_or(Errno::ENOENT)?;
                Ok(model_attr(n))
            }
            Step::Readdir(p) => {
                let id = self.resolve(p).ok_or(Errno::ENOENT)?;
                let c = self.children(id).ok_or(Errno::ENOTDIR)?;
                Ok(Outcome::Names(
                    c.iter()
                        .map(|(n, id)| (n.clone(), self.nodes.get(id).map_or(FileType::Regular, |m| m.kind())))
                        .collect(),
                ))
            }
        }
    }

    fn rename(&mut self, from: &Path, to: &Path, flags: RenameFlags) -> Result<Outcome, Errno> {
        let (fp, fname) = Model::split(from);
        let (tp, tname) = Model::split(to);
        let fpid = self.resolve(&fp).ok_or(Errno::ENOENT)?;
        let tpid = self.resolve(&tp).ok_or(Errno::ENOENT)?;
        let src = *self
            .children(fpid)
            .ok_or(Errno::ENOTDIR)?
            .get(fname)
            .ok_or(Errno::ENOENT)?;
        let dst = self.children(tpid).ok_or(Errno::ENOTDIR)?.get(tname).copied();
        match dst {
            Some(_) if flags.noreplace() => return Err(Errno::EEXIST),
            None if flags.exchange() => return Err(Errno::ENOENT),
            _ => {}
        }
        if fp != tp {
            // The source must not be an ancestor of the target's directory, nor the target
            // an ancestor of the source's directory (Linux's "trap" checks).
            if tp.is_within(from) {
                return Err(Errno::EINVAL);
            }
            if fp.is_within(to) {
                return Err(if flags.exchange() {
                    Errno::EINVAL
                } else {
                    Errno::ENOTEMPTY
                });
            }
        }
        if dst == Some(src) {
            return Ok(Outcome::Done);
        }
        let src_dir = self.children(src).is_some();
        if flags.exchange() {
            let Some(dst) = dst else { return Err(Errno::ENOENT) };
            let dst_dir = self.children(dst).is_some();
            if let Some(c) = self.children_mut(fpid) {
                c.insert(fname.to_string(), dst);
            }
            if let Some(c) = self.children_mut(tpid) {
                c.insert(tname.to_string(), src);
            }
            if fpid != tpid && src_dir != dst_dir {
                let (from_dir, to_dir) = if src_dir { (fpid, tpid) } else { (tpid, fpid) };
                if let Some(n) = self.nodes.get_mut(&from_dir) {
                    n.nlink -= 1;
                }
                if let Some(n) = self.nodes.get_mut(&to_dir) {
                    n.nlink += 1;
                }
            }
            return Ok(Outcome::Done);
        }
        if let Some(d) = dst {
            self.may_replace(src_dir, d)?;
        }
        if let Some(c) = self.children_mut(fpid) {
            c.remove(fname);
        }
        if let Some(d) = dst {
            if self.children(d).is_some() {
                self.nodes.remove(&d);
                if let Some(n) = self.nodes.get_mut(&tpid) {
                    n.nlink -= 1;
                }
            } else {
                self.drop_link(d);
            }
        }
        if let Some(c) = self.children_mut(tpid) {
            c.insert(tname.to_string(), src);
        }
        if src_dir && fpid != tpid {
            if let Some(n) = self.nodes.get_mut(&fpid) {
                n.nlink -= 1;
            }
            if let Some(n) = self.nodes.get_mut(&tpid) {
                n.nlink += 1;
            }
        }
        Ok(Outcome::Done)
    }
}

fn model_attr(n: &MNode) -> Outcome {
    match &n.content {
        Content::File(d) => Outcome::Attr {
            kind: FileType::Regular,
            size: Some(d.len() as u64),
            nlink: Some(n.nlink),
        },
        Content::Symlink(t) => Outcome::Attr {
            kind: FileType::Symlink,
            size: Some(t.len() as u64),
            nlink: Some(n.nlink),
        },
        Content::Dir(_) => Outcome::Attr {
            kind: FileType::Directory,
            size: None,
            nlink: None,
        },
    }
}

/// Resolves `path` on the backend by lookups from the root.
async fn ino_of<F: VirtualFs>(fs: &F, root: Ino, path: &Path) -> Result<Ino, Errno> {
    let mut cur = root;
    for c in &path.0 {
        cur = fs.lookup(&CTX, cur, nm(c)).await.map_err(|e| e.errno())?.ino;
    }
    Ok(cur)
}

async fn parent_and_name<'p, F: VirtualFs>(fs: &F, root: Ino, path: &'p Path) -> Result<(Ino, &'p str), Errno> {
    let (parent, name) = Model::split(path);
    Ok((ino_of(fs, root, &parent).await?, name))
}

/// Runs a step on the backend.
pub async fn apply_backend<F: VirtualFs>(fs: &F, step: &Step) -> Result<Outcome, Errno> {
    apply_backend_at(fs, Ino::ROOT, step).await
}

/// Runs a step on the backend, its paths taken from directory `root`.
pub async fn apply_backend_at<F: VirtualFs>(fs: &F, root: Ino, step: &Step) -> Result<Outcome, Errno> {
    let e = |e: crate::VfsError| e.errno();
    match step {
        Step::Create(p) => {
            let (dir, name) = parent_and_name(fs, root, p).await?;
            let (attr, fh) = fs
                .create(&CTX, dir, nm(name), 0o644, 0, OpenFlags::RDWR.with(libc::O_EXCL))
                .await
                .map_err(e)?;
            fs.release(&CTX, attr.ino, fh).await.map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::Mkdir(p) => {
            let (dir, name) = parent_and_name(fs, root, p).await?;
            fs.mkdir(&CTX, dir, nm(name), 0o755, 0).await.map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::Symlink(p, target) => {
            let (dir, name) = parent_and_name(fs, root, p).await?;
            fs.symlink(&CTX, dir, nm(name), target.as_ref()).await.map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::Link(src, dst) => {
            let ino = ino_of(fs, root, src).await?;
            let (dir, name) = parent_and_name(fs, root, dst).await?;
            fs.link(&CTX, ino, dir, nm(name)).await.map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::Unlink(p) => {
            let (dir, name) = parent_and_name(fs, root, p).await?;
            fs.unlink(&CTX, dir, nm(name)).await.map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::Rmdir(p) => {
            let (dir, name) = parent_and_name(fs, root, p).await?;
            fs.rmdir(&CTX, dir, nm(name)).await.map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::Rename(from, to, flags) => {
            let (fdir, fname) = parent_and_name(fs, root, from).await?;
            let (tdir, tname) = parent_and_name(fs, root, to).await?;
            fs.rename(&CTX, fdir, nm(fname), tdir, nm(tname), *flags)
                .await
                .map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::Write {
            file,
            offset,
            len,
            byte,
        } => {
            let ino = ino_of(fs, root, file).await?;
            let fh = fs.open(&CTX, ino, OpenFlags::RDWR).await.map_err(e)?;
            let res = fs.write(&CTX, ino, fh, *offset, &vec![*byte; *len]).await;
            fs.release(&CTX, ino, fh).await.map_err(e)?;
            Ok(Outcome::Written(res.map_err(e)?))
        }
        Step::Truncate(file, size) => {
            let ino = ino_of(fs, root, file).await?;
            fs.setattr(&CTX, ino, SetAttr::size(*size)).await.map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::CreateOpen(p, trunc) => {
            let (dir, name) = parent_and_name(fs, root, p).await?;
            let flags = if *trunc {
                OpenFlags::RDWR.with(libc::O_TRUNC)
            } else {
                OpenFlags::RDWR
            };
            let (attr, fh) = fs.create(&CTX, dir, nm(name), 0o644, 0, flags).await.map_err(e)?;
            fs.release(&CTX, attr.ino, fh).await.map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::OpenTrunc(p) => {
            let ino = ino_of(fs, root, p).await?;
            let fh = fs
                .open(&CTX, ino, OpenFlags::RDWR.with(libc::O_TRUNC))
                .await
                .map_err(e)?;
            fs.release(&CTX, ino, fh).await.map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::Append { file, len, byte } => {
            let ino = ino_of(fs, root, file).await?;
            let fh = fs
                .open(&CTX, ino, OpenFlags::WRONLY.with(libc::O_APPEND))
                .await
                .map_err(e)?;
            let res = fs.write(&CTX, ino, fh, 0, &vec![*byte; *len]).await;
            fs.release(&CTX, ino, fh).await.map_err(e)?;
            Ok(Outcome::Written(res.map_err(e)?))
        }
        Step::Chmod(p, mode) => {
            let ino = ino_of(fs, root, p).await?;
            fs.setattr(&CTX, ino, SetAttr::mode(*mode)).await.map_err(e)?;
            Ok(Outcome::Done)
        }
        Step::Tick => {
            tokio::time::sleep(clock_tick()).await;
            Ok(Outcome::Done)
        }
        Step::Getattr(p) => {
            let ino = ino_of(fs, root, p).await?;
            let a = fs.getattr(&CTX, ino, None).await.map_err(e)?;
            let file_like = a.kind != FileType::Directory;
            Ok(Outcome::Attr {
                kind: a.kind,
                size: file_like.then_some(a.size),
                nlink: file_like.then_some(a.nlink),
            })
        }
        Step::Readdir(p) => {
            let ino = ino_of(fs, root, p).await?;
            let mut names: Vec<(String, FileType)> = list(fs, ino, 3)
                .await
                .map_err(e)?
                .into_iter()
                .map(|(n, k, _)| (n, k))
                .collect();
            names.sort();
            Ok(Outcome::Names(names))
        }
    }
}

/// How long [`Step::Tick`] sleeps: one period of the host's coarse clock (the one Linux
/// file systems stamp times with) plus a millisecond, so that any interval this long
/// contains a tick; 20 ms where that period cannot be read.
pub fn clock_tick() -> std::time::Duration {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_getres writes one timespec through a valid pointer.
        let r = unsafe { libc::clock_getres(libc::CLOCK_REALTIME_COARSE, &mut ts) };
        if r == 0 && ts.tv_sec == 0 && ts.tv_nsec > 0 {
            return std::time::Duration::from_nanos(ts.tv_nsec as u64) + std::time::Duration::from_millis(1);
        }
    }
    std::time::Duration::from_millis(20)
}

/// Each model node's path, mtime and ctime, as the backend reported them.
type Stamps = HashMap<usize, (Path, crate::types::Timestamp, crate::types::Timestamp)>;

/// Compares the backend's whole tree with the model's; `Err` names the first difference.
pub async fn compare_trees<F: VirtualFs>(fs: &F, model: &Model) -> Result<(), String> {
    walk_and_compare(fs, model).await.map(|_| ())
}

/// [`compare_trees`], returning every node's time stamps.
async fn walk_and_compare<F: VirtualFs>(fs: &F, model: &Model) -> Result<Stamps, String> {
    walk_and_compare_at(fs, model, Ino::ROOT, Ino::ROOT).await
}

/// [`walk_and_compare`] for the subtree at directory `root`, whose `..` is `up`.
async fn walk_and_compare_at<F: VirtualFs>(fs: &F, model: &Model, root: Ino, up: Ino) -> Result<Stamps, String> {
    let mut stamps = Stamps::new();
    // Backend inode ↔ model node, both ways, so hard links must match exactly.
    let mut b2m: HashMap<Ino, usize> = HashMap::new();
    let mut m2b: HashMap<usize, Ino> = HashMap::new();
    // Each entry carries the backend inode of its parent, which `..` must name.
    let mut stack = vec![(Path(Vec::new()), root, ROOT, up)];
    while let Some((path, ino, id, parent)) = stack.pop() {
        let node = model
            .nodes
            .get(&id)
            .ok_or_else(|| format!("{path:?}: model node missing"))?;
        if b2m.insert(ino, id).is_some_and(|old| old != id) || m2b.insert(id, ino).is_some_and(|old| old != ino) {
            return Err(format!(
                "{path:?}: backend inode {} and model node are not the same object as before (hard links differ)",
                ino.0
            ));
        }
        let attr = fs
            .getattr(&CTX, ino, None)
            .await
            .map_err(|e| format!("{path:?}: getattr failed: {e:?}"))?;
        if attr.kind != node.kind() {
            return Err(format!(
                "{path:?}: backend says {:?}, model {:?}",
                attr.kind,
                node.kind()
            ));
        }
        stamps.insert(id, (path.clone(), attr.mtime, attr.ctime));
        match &node.content {
            Content::Dir(children) => {
                if attr.nlink != node.nlink {
                    return Err(format!(
                        "{path:?}: directory link count: backend nlink {}, model nlink {} (2 + subdirectories)",
                        attr.nlink, node.nlink
                    ));
                }
                let up = dotdot(fs, ino)
                    .await
                    .map_err(|e| format!("{path:?}: readdir for .. failed: {e:?}"))?;
                if up != Some(parent) {
                    return Err(format!("{path:?}: .. is {up:?}, the parent is {parent:?}"));
                }
                let mut entries = list(fs, ino, 7)
                    .await
                    .map_err(|e| format!("{path:?}: readdir failed: {e:?}"))?;
                entries.sort();
                let want: Vec<&String> = children.keys().collect();
                let got: Vec<&String> = entries.iter().map(|(n, _, _)| n).collect();
                if want != got {
                    return Err(format!("{path:?}: backend lists {got:?}, model {want:?}"));
                }
                for (name, kind, child_ino) in entries {
                    let child = children[&name];
                    let looked = fs
                        .lookup(&CTX, ino, nm(&name))
                        .await
                        .map_err(|e| format!("{path:?}/{name}: lookup failed: {e:?}"))?;
                    if looked.ino != child_ino || looked.kind != kind {
                        return Err(format!(
                            "{path:?}/{name}: readdir says {child_ino:?} {kind:?}, lookup {:?} {:?}",
                            looked.ino, looked.kind
                        ));
                    }
                    stack.push((path.child(&name), child_ino, child, ino));
                }
            }
            Content::File(data) => {
                if attr.size != data.len() as u64 || attr.nlink != node.nlink {
                    return Err(format!(
                        "{path:?}: backend size {} nlink {}, model size {} nlink {}",
                        attr.size,
                        attr.nlink,
                        data.len(),
                        node.nlink
                    ));
                }
                let got = read_all(fs, ino)
                    .await
                    .map_err(|e| format!("{path:?}: read failed: {e:?}"))?;
                if &got != data {
                    let at = got
                        .iter()
                        .zip(data.iter())
                        .position(|(a, b)| a != b)
                        .unwrap_or(got.len().min(data.len()));
                    return Err(format!(
                        "{path:?}: contents differ at byte {at} (backend {} bytes, model {})",
                        got.len(),
                        data.len()
                    ));
                }
            }
            Content::Symlink(t) => {
                let got = fs
                    .readlink(&CTX, ino)
                    .await
                    .map_err(|e| format!("{path:?}: readlink failed: {e:?}"))?;
                if got.to_string_lossy() != t.as_str() || attr.nlink != node.nlink {
                    return Err(format!(
                        "{path:?}: symlink {got:?} nlink {}, model {t:?} nlink {}",
                        attr.nlink, node.nlink
                    ));
                }
            }
        }
    }
    Ok(stamps)
}

/// Checks each node's time stamps after a step against what the step must have done to
/// them (`touched`, from the model). `ticked` holds the nodes for which a clock tick came
/// after their last change: a stamp that must change must then be strictly later.
fn check_stamps(
    step: &Step,
    before: &Stamps,
    after: &Stamps,
    touched: &HashMap<usize, (Stamp, Stamp)>,
    ticked: &mut std::collections::HashSet<usize>,
) -> Result<(), String> {
    for (id, (path, mtime, ctime)) in after {
        let Some((_, m0, c0)) = before.get(id) else { continue };
        let (want_m, want_c) = touched.get(id).copied().unwrap_or((Stamp::Same, Stamp::Same));
        for (what, want, was, now) in [("mtime", want_m, m0, mtime), ("ctime", want_c, c0, ctime)] {
            let broken = match want {
                Stamp::Same => now != was,
                Stamp::Either => now < was,
                Stamp::Changed => now < was || (now == was && ticked.contains(id)),
            };
            if broken {
                let rule = match want {
                    Stamp::Same => format!("{step:?} must leave the {what} of {path:?} as it was"),
                    Stamp::Either => format!("{step:?} must not move the {what} of {path:?} back"),
                    Stamp::Changed => format!(
                        "{step:?} must change the {what} of {path:?} (a Tick since its last change let the clock advance)"
                    ),
                };
                return Err(format!(
                    "rule: [model.times] {rule}\n  before: {was:?}\n  after:  {now:?}"
                ));
            }
        }
        if want_m != Stamp::Same || want_c != Stamp::Same {
            ticked.remove(id);
        }
    }
    if matches!(step, Step::Tick) {
        ticked.extend(after.keys().copied());
    }
    Ok(())
}

/// Runs one sequence against a fresh backend and the model; on a difference, a report of
/// every step up to it. Time stamps are compared too unless the backend declares
/// [`Cap::Timestamps`] absent.
pub async fn run_sequence<F: VirtualFs>(backend: &Backend<F>, ops: &[Op]) -> Result<(), String> {
    let fs = &*backend.fs;
    let times = backend.caps().has(Cap::Timestamps);
    let mut model = Model::new();
    let mut trace = String::new();
    let mut before = if times {
        walk_and_compare(fs, &model)
            .await
            .map_err(|d| format!("before the first step the trees differ: {d}"))?
    } else {
        Stamps::new()
    };
    let mut ticked = std::collections::HashSet::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(step) = model.resolve_op(op) else { continue };
        let want = model.apply(&step);
        let got = apply_backend(fs, &step).await;
        trace.push_str(&format!("  {i:>2}: {step:?} -> {}\n", show(&got)));
        if got != want {
            return Err(format!(
                "{trace}step {i} answered {}, the model says {}",
                show(&got),
                show(&want)
            ));
        }
        let after = match walk_and_compare(fs, &model).await {
            Ok(a) => a,
            Err(diff) => return Err(format!("{trace}after step {i} the trees differ: {diff}")),
        };
        if times {
            if let Err(diff) = check_stamps(&step, &before, &after, &model.touched, &mut ticked) {
                return Err(format!("{trace}after step {i} the time stamps break a rule:\n{diff}"));
            }
            before = after;
        }
    }
    Ok(())
}

fn show(r: &Result<Outcome, Errno>) -> String {
    match r {
        Ok(o) => format!("{o:?}"),
        Err(e) => format!("{e:?}"),
    }
}

/// The number of sequences for [`check_model`]: `VFS_TESTKIT_CASES`, default 64.
pub fn cases_from_env() -> u32 {
    u32::try_from(super::env_u64("VFS_TESTKIT_CASES", 64)).unwrap_or(u32::MAX)
}

/// A proptest runner for `cases` sequences that shrinks for at most `max_shrink_iters`
/// steps and persists nothing. With `VFS_TESTKIT_SEED=N` in the environment its random
/// stream is fixed (ChaCha seeded by N), so a failure seen once can be replayed; otherwise
/// it is proptest's usual fresh seed. Exposed so that harnesses which drive the model
/// through another path (an NFS client, a mount) replay the same way.
pub fn test_runner(cases: u32, max_shrink_iters: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters,
        ..Config::default()
    };
    match std::env::var("VFS_TESTKIT_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
        }
        None => TestRunner::new(config),
    }
}

/// Runs `cases` random sequences, each on a fresh backend from `factory`. On failure,
/// returns the report of the shrunk (minimal) failing sequence.
pub fn check_model<F: VirtualFs>(factory: impl Fn() -> Backend<F>, cases: u32) -> Result<(), String> {
    let caps = factory().caps();
    if !caps.has(Cap::Writes) {
        println!(
            "skipped: kit check `model_random_operation_sequences` needs writes, which the backend declares absent"
        );
        return Ok(());
    }
    let mut runner = test_runner(cases, 10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runner.run(&ops_for(caps), |ops| {
        let backend = factory();
        rt.block_on(run_sequence(&backend, &ops)).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, ops)) => Err(format!(
            "model test failed; minimal failing sequence ({} operations):\n{reason}",
            ops.len()
        )),
        Err(TestError::Abort(reason)) => Err(format!("model test aborted: {reason}")),
    }
}

/// Threads of the concurrent mode.
const THREADS: usize = 3;
/// Bytes in each version of the shared file `keep`.
const KEEP_LEN: usize = 256;

/// The concurrent mode: three threads run random operation sequences at once on one
/// backend, each in a private directory `/tN` and in a shared one, `/shared`.
///
/// Invariants checked:
/// - private: each thread's directory follows that thread's own model exactly (answers,
///   tree, link counts, bytes and, with [`Cap::Timestamps`], time stamps) after every
///   step, however the other threads' operations interleave with it;
/// - shared: `/shared/keep` is only ever replaced by renaming a complete new version over
///   it, so every lookup finds it and every read sees one whole version
///   (`[model.concurrent]`); lookups wait (at most ~1 ms) until another thread's rename
///   is in flight, with random jitter, so they land inside renames; creates, unlinks and
///   links of the other shared names answer only what some order of them allows
///   (`EEXIST`, `ENOENT`);
/// - at the end: the shared directory lists what lookups find, its link count is 2, and
///   each file's link count is the number of its names.
///
/// Runs `rounds` times, each on a fresh backend, with sequences from [`test_runner`]
/// (`VFS_TESTKIT_SEED` replays them; the interleaving itself is the machine's).
pub fn check_concurrent<F: VirtualFs>(factory: impl Fn() -> Backend<F>, rounds: u32) -> Result<(), String> {
    let caps = factory().caps();
    if !caps.has(Cap::Writes) {
        println!("skipped: kit check `model_concurrent_operations` needs writes, which the backend declares absent");
        return Ok(());
    }
    let mut runner = test_runner(1, 0);
    let strategy = (
        proptest::collection::vec(ops_for(caps), THREADS),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 40), THREADS),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    for round in 0..rounds {
        let (private, shared) = strategy
            .new_tree(&mut runner)
            .map_err(|e| format!("generating operations: {e}"))?
            .current();
        let backend = factory();
        let fs = &*backend.fs;
        let mut roots = Vec::new();
        for t in 0..THREADS {
            let a = rt
                .block_on(fs.mkdir(&CTX, Ino::ROOT, nm(&format!("t{t}")), 0o755, 0))
                .map_err(|e| format!("concurrent mode: mkdir /t{t}: {e:?}"))?;
            roots.push(a.ino);
        }
        let shared_dir = rt
            .block_on(fs.mkdir(&CTX, Ino::ROOT, nm("shared"), 0o755, 0))
            .map_err(|e| format!("concurrent mode: mkdir /shared: {e:?}"))?
            .ino;
        rt.block_on(super::scenarios::mkfile(fs, shared_dir, "keep", &[1; KEEP_LEN]))
            .map_err(|e| format!("concurrent mode: create /shared/keep: {e:?}"))?;
        let renames = std::sync::atomic::AtomicU64::new(0);
        let parties: Vec<super::races::Party<'_>> = (0..THREADS)
            .map(|t| {
                let (ops, choices, renames, backend) = (&private[t], &shared[t], &renames, &backend);
                let root = roots[t];
                super::races::party(async move {
                    concurrent_thread(backend, t, root, shared_dir, ops, choices, renames)
                        .await
                        .map_err(|e| super::Failure(format!("concurrent mode, round {round}, thread {t}:\n{e}")))
                })
            })
            .collect();
        super::races::parties(parties).map_err(|f| f.0)?;
        rt.block_on(check_shared_at_rest(fs, shared_dir))
            .map_err(|e| format!("concurrent mode, round {round}, at rest: {e}"))?;
    }
    Ok(())
}

/// One thread of [`check_concurrent`]: its private sequence, with shared operations
/// (picked by `choices`) between the steps.
async fn concurrent_thread<F: VirtualFs>(
    backend: &Backend<F>,
    t: usize,
    root: Ino,
    shared: Ino,
    ops: &[Op],
    choices: &[u8],
    renames: &std::sync::atomic::AtomicU64,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    let fs = &*backend.fs;
    let times = backend.caps().has(Cap::Timestamps);
    let e = |e: crate::VfsError| e.errno();
    let mut model = Model::new();
    let mut trace = String::new();
    let mut before = walk_and_compare_at(fs, &model, root, Ino::ROOT).await?;
    let mut ticked = std::collections::HashSet::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
    for (i, op) in ops.iter().enumerate() {
        // A shared operation first, for two steps in three.
        let c = choices[i % choices.len()];
        let name = NAMES[usize::from(c / 16) % NAMES.len()];
        match c % 6 {
            0 | 1 => {
                // Replace keep with a complete new version: create, write, rename over.
                let tmp = format!("tmp{t}");
                let version = [(c | 1).max(2); KEEP_LEN];
                let ino = super::scenarios::mkfile(fs, shared, &tmp, &version)
                    .await
                    .map_err(|err| format!("{trace}create /shared/{tmp}: {:?}", err.errno()))?;
                renames.fetch_add(1, Ordering::SeqCst);
                let r = fs
                    .rename(&CTX, shared, nm(&tmp), shared, nm("keep"), RenameFlags::NONE)
                    .await;
                renames.fetch_add(1, Ordering::SeqCst);
                r.map_err(|err| {
                    format!(
                        "{trace}rule: [model.concurrent] renaming /shared/{tmp} over /shared/keep succeeds whatever runs beside it\n  expected: success\n  seen:     {:?}",
                        err.errno()
                    )
                })?;
                trace.push_str(&format!(
                    "  shared: rename /shared/{tmp} (inode {}) over /shared/keep\n",
                    ino.0
                ));
            }
            2 | 3 => {
                // Look keep up (and read it) while another thread's rename is in flight.
                let until = std::time::Instant::now() + std::time::Duration::from_millis(1);
                let seq = super::races::land_inside(renames, &mut rng, |spins| {
                    spins >= 256 && std::time::Instant::now() >= until
                });
                let a = fs.lookup(&CTX, shared, nm("keep")).await.map_err(|err| {
                    format!(
                        "{trace}rule: [model.concurrent] /shared/keep is only ever replaced by rename, so every lookup finds it\n  expected: success\n  seen:     {:?} (a rename over it was {}in flight)",
                        err.errno(),
                        if seq % 2 == 1 { "" } else { "not " }
                    )
                })?;
                if a.size != KEEP_LEN as u64 {
                    return Err(format!(
                        "{trace}rule: [model.concurrent] every version of /shared/keep has {KEEP_LEN} bytes\n  seen:     size {}",
                        a.size
                    ));
                }
            }
            4 => {
                let r = fs
                    .create(&CTX, shared, nm(name), 0o644, 0, OpenFlags::RDWR.with(libc::O_EXCL))
                    .await;
                match r {
                    Ok((a, fh)) => fs
                        .release(&CTX, a.ino, fh)
                        .await
                        .map_err(e)
                        .map_err(|x| format!("{trace}release: {x:?}"))?,
                    Err(err) if err.errno() == Errno::EEXIST => {}
                    Err(err) => {
                        return Err(format!(
                            "{trace}create /shared/{name} with O_EXCL: expected success or EEXIST, seen {:?}",
                            err.errno()
                        ));
                    }
                }
            }
            _ => {
                let r = fs.unlink(&CTX, shared, nm(name)).await;
                if let Err(err) = r
                    && err.errno() != Errno::ENOENT
                {
                    return Err(format!(
                        "{trace}unlink /shared/{name}: expected success or ENOENT, seen {:?}",
                        err.errno()
                    ));
                }
            }
        }
        // Then the private step, checked against the model.
        let Some(step) = model.resolve_op(op) else { continue };
        let want = model.apply(&step);
        let got = apply_backend_at(fs, root, &step).await;
        trace.push_str(&format!("  {i:>2}: /t{t}: {step:?} -> {}\n", show(&got)));
        if got != want {
            return Err(format!(
                "{trace}step {i} answered {}, the model says {}",
                show(&got),
                show(&want)
            ));
        }
        let after = walk_and_compare_at(fs, &model, root, Ino::ROOT)
            .await
            .map_err(|d| format!("{trace}after step {i} the private tree /t{t} differs: {d}"))?;
        if times {
            check_stamps(&step, &before, &after, &model.touched, &mut ticked)
                .map_err(|d| format!("{trace}after step {i} the time stamps break a rule:\n{d}"))?;
            before = after;
        }
    }
    Ok(())
}

/// The shared directory once every thread is done: listings and lookups agree, and link
/// counts match the names.
async fn check_shared_at_rest<F: VirtualFs>(fs: &F, shared: Ino) -> Result<(), String> {
    let entries = list(fs, shared, 5)
        .await
        .map_err(|e| format!("readdir /shared: {e:?}"))?;
    let mut names_of: HashMap<Ino, u32> = HashMap::new();
    for (name, _, ino) in &entries {
        let a = fs
            .lookup(&CTX, shared, nm(name))
            .await
            .map_err(|e| format!("/shared/{name} is listed but its lookup failed: {e:?}"))?;
        if a.ino != *ino {
            return Err(format!("/shared/{name}: readdir says {ino:?}, lookup {:?}", a.ino));
        }
        *names_of.entry(a.ino).or_default() += 1;
    }
    if !entries.iter().any(|(n, _, _)| n == "keep") {
        return Err("rule: [model.concurrent] /shared/keep is gone after the threads ended".into());
    }
    for (ino, names) in names_of {
        let a = fs
            .getattr(&CTX, ino, None)
            .await
            .map_err(|e| format!("getattr {ino:?}: {e:?}"))?;
        if a.nlink != names {
            return Err(format!(
                "rule: [model.concurrent] a file's link count is the number of its names\n  expected: {names}\n  seen:     nlink {} (inode {})",
                a.nlink, ino.0
            ));
        }
    }
    let a = fs
        .getattr(&CTX, shared, None)
        .await
        .map_err(|e| format!("getattr /shared: {e:?}"))?;
    if a.nlink != 2 {
        return Err(format!(
            "/shared: directory link count\n  expected: 2 (no subdirectories)\n  seen:     {}",
            a.nlink
        ));
    }
    Ok(())
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        Path(s.split('/').filter(|c| !c.is_empty()).map(String::from).collect())
    }

    #[test]
    fn model_rename_rules() {
        let mut m = Model::new();
        m.apply(&Step::Mkdir(p("a"))).unwrap();
        m.apply(&Step::Mkdir(p("a/b"))).unwrap();
        m.apply(&Step::Create(p("a/b/f"))).unwrap();
        assert_eq!(
            m.apply(&Step::Rename(p("a"), p("a/b/x"), RenameFlags::NONE)),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            m.apply(&Step::Rename(p("a/b/f"), p("a"), RenameFlags::NONE)),
            Err(Errno::ENOTEMPTY)
        );
        assert_eq!(
            m.apply(&Step::Rename(p("a/b/f"), p("a"), RenameFlags::EXCHANGE)),
            Err(Errno::EINVAL)
        );
        m.apply(&Step::Link(p("a/b/f"), p("g"))).unwrap();
        assert_eq!(
            m.apply(&Step::Rename(p("a/b/f"), p("g"), RenameFlags::NOREPLACE)),
            Err(Errno::EEXIST)
        );
        assert_eq!(
            m.apply(&Step::Rename(p("a/b/f"), p("g"), RenameFlags::NONE)),
            Ok(Outcome::Done)
        );
        assert_eq!(
            m.apply(&Step::Getattr(p("g"))),
            Ok(Outcome::Attr {
                kind: FileType::Regular,
                size: Some(0),
                nlink: Some(2)
            })
        );
        m.apply(&Step::Rename(p("a/b"), p("b"), RenameFlags::NONE)).unwrap();
        assert_eq!(m.nodes[&ROOT].nlink, 4);
        assert_eq!(m.apply(&Step::Unlink(p("b/f"))), Ok(Outcome::Done));
        assert_eq!(
            m.apply(&Step::Getattr(p("g"))),
            Ok(Outcome::Attr {
                kind: FileType::Regular,
                size: Some(0),
                nlink: Some(1)
            })
        );
    }

    #[test]
    fn model_write_and_truncate() {
        let mut m = Model::new();
        m.apply(&Step::Create(p("f"))).unwrap();
        m.apply(&Step::Write {
            file: p("f"),
            offset: 4,
            len: 2,
            byte: 9,
        })
        .unwrap();
        m.apply(&Step::Truncate(p("f"), 5)).unwrap();
        assert_eq!(
            m.apply(&Step::Getattr(p("f"))),
            Ok(Outcome::Attr {
                kind: FileType::Regular,
                size: Some(5),
                nlink: Some(1)
            })
        );
    }
}
