//! The in-memory inode of `MemFs`: attributes, content and extended attributes together.
//!
//! Invariant: a `Node` is only ever reached through its `FileCell` lock, so its size and
//! its data can never disagree for a reader: file data holds no byte at or beyond
//! `attr.size` (truncation drops it), and holes read as zeros. A directory entry's cookie
//! is a function of its name (a hash, probed past the rare collision), as in ext4's
//! htree: a name removed and re-created during a listing comes back at the same place,
//! so a resumed listing never shows a name twice, and an entry nobody touches keeps its
//! place, so it is listed exactly once.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;

use bytes::{Bytes, BytesMut};

use crate::error::{VfsError, VfsResult};
use crate::types::{Attr, FileType, Ino, Timestamp};

/// Bytes per data chunk. A chunk stores a prefix of its range; the rest reads as zeros.
pub(crate) const CHUNK: u64 = 64 * 1024;
/// Largest file size (Linux `MAX_LFS_FILESIZE`).
pub(crate) const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// First cookie of a real entry: 1 and 2 are `.` and `..`.
pub(crate) const FIRST_SEQ: u64 = 3;

/// Sparse file contents: chunk index → bytes from the chunk's start.
#[derive(Debug, Default)]
pub(crate) struct FileData {
    chunks: BTreeMap<u64, Vec<u8>>,
}

impl FileData {
    /// Bytes held in memory.
    pub(crate) fn allocated(&self) -> u64 {
        self.chunks.values().map(|c| c.len() as u64).sum()
    }

    /// Copies `data` in at `offset`. The caller checked `offset + len <= MAX_FILE_SIZE`.
    /// Returns the change in allocated bytes.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> u64 {
        let mut grown = 0u64;
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let idx = pos / CHUNK;
            let within = (pos % CHUNK) as usize;
            let n = rest.len().min(CHUNK as usize - within);
            let chunk = self.chunks.entry(idx).or_default();
            if chunk.len() < within + n {
                grown += (within + n - chunk.len()) as u64;
                chunk.resize(within + n, 0);
            }
            chunk[within..within + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            pos += n as u64;
        }
        grown
    }

    /// Reads `len` bytes at `offset`; the caller clamped the range to the file size.
    pub(crate) fn read(&self, offset: u64, len: usize) -> Bytes {
        let mut out = BytesMut::zeroed(len);
        if len == 0 {
            return out.freeze();
        }
        let end = offset + len as u64;
        for (&idx, chunk) in self.chunks.range(offset / CHUNK..=(end - 1) / CHUNK) {
            let start = idx * CHUNK;
            let from = offset.max(start);
            let to = end.min(start + chunk.len() as u64);
            if from < to {
                let src = &chunk[(from - start) as usize..(to - start) as usize];
                let dst = (from - offset) as usize;
                out[dst..dst + src.len()].copy_from_slice(src);
            }
        }
        out.freeze()
    }

    /// Drops every byte at or beyond `size`. Returns the change in allocated bytes.
    pub(crate) fn truncate(&mut self, size: u64) -> u64 {
        let before = self.allocated();
        let keep_idx = size / CHUNK;
        let within = (size % CHUNK) as usize;
        // Chunks wholly at or beyond `size` go; the chunk containing `size` is cut.
        let first_gone = if within == 0 { keep_idx } else { keep_idx + 1 };
        self.chunks.split_off(&first_gone);
        if within != 0
            && let Some(c) = self.chunks.get_mut(&keep_idx)
        {
            c.truncate(within);
        }
        before - self.allocated()
    }

    /// Zeroes `[offset, offset+len)` without changing the size (hole punching).
    pub(crate) fn zero_range(&mut self, offset: u64, len: u64) -> u64 {
        let before = self.allocated();
        let end = offset.saturating_add(len);
        let idxs: Vec<u64> = self
            .chunks
            .range(offset / CHUNK..=end.saturating_sub(1) / CHUNK)
            .map(|(i, _)| *i)
            .collect();
        for idx in idxs {
            let start = idx * CHUNK;
            if offset <= start && end >= start + CHUNK {
                self.chunks.remove(&idx);
            } else if let Some(c) = self.chunks.get_mut(&idx) {
                let from = (offset.max(start) - start) as usize;
                let to = ((end.min(start + CHUNK)) - start) as usize;
                let to = to.min(c.len());
                if from < to {
                    c[from..to].fill(0);
                }
            }
        }
        before - self.allocated()
    }
}

/// One directory entry: the target and the cookie it is listed under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) ino: Ino,
    pub(crate) kind: FileType,
    pub(crate) seq: u64,
}

/// Directory contents.
#[derive(Debug)]
pub(crate) struct DirData {
    /// The parent directory (the root is its own parent).
    pub(crate) parent: Ino,
    pub(crate) entries: HashMap<OsString, Slot>,
    /// Cookie order: position → name.
    pub(crate) order: BTreeMap<u64, OsString>,
}

/// The listing position of `name`: a 62-bit hash (cookies stay positive as a signed
/// 64-bit offset, as FUSE and NFS clients keep them), above the cookies of `.` and `..`.
fn position(name: &std::ffi::OsStr) -> u64 {
    use std::hash::{Hash, Hasher};
    // `DefaultHasher::new()` has fixed keys: the same name gets the same position.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    (h.finish() >> 2).max(FIRST_SEQ)
}

impl DirData {
    pub(crate) fn new(parent: Ino) -> Self {
        DirData {
            parent,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub(crate) fn insert(&mut self, name: OsString, ino: Ino, kind: FileType) {
        if let Some(old) = self.entries.get(&name) {
            // Replacing the target of a name keeps its place.
            let seq = old.seq;
            self.entries.insert(name, Slot { ino, kind, seq });
            return;
        }
        let mut seq = position(&name);
        while self.order.contains_key(&seq) {
            seq = seq.wrapping_add(1).max(FIRST_SEQ);
        }
        self.entries.insert(name.clone(), Slot { ino, kind, seq });
        self.order.insert(seq, name);
    }

    pub(crate) fn remove(&mut self, name: &std::ffi::OsStr) -> Option<Slot> {
        let slot = self.entries.remove(name)?;
        self.order.remove(&slot.seq);
        Some(slot)
    }

    pub(crate) fn get(&self, name: &std::ffi::OsStr) -> Option<Slot> {
        self.entries.get(name).copied()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What an inode holds besides its attributes.
#[derive(Debug)]
pub(crate) enum Content {
    File(FileData),
    Dir(DirData),
    Symlink(OsString),
    /// Fifo, socket or device node: no data here.
    Special,
}

/// An inode: attributes, content, xattrs and the number of open handles.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) attr: Attr,
    pub(crate) content: Content,
    pub(crate) xattrs: BTreeMap<OsString, Bytes>,
    /// Open handles; with `nlink == 0` the node lives until this reaches zero.
    pub(crate) open: u32,
}

impl Node {
    pub(crate) fn new(attr: Attr, content: Content) -> Node {
        Node {
            attr,
            content,
            xattrs: BTreeMap::new(),
            open: 0,
        }
    }

    pub(crate) fn dir(&self) -> VfsResult<&DirData> {
        match &self.content {
            Content::Dir(d) => Ok(d),
            _ => Err(VfsError::NotDir),
        }
    }

    pub(crate) fn dir_mut(&mut self) -> VfsResult<&mut DirData> {
        match &mut self.content {
            Content::Dir(d) => Ok(d),
            _ => Err(VfsError::NotDir),
        }
    }

    /// A directory that still has a name (an `rmdir`ed one takes no new entries).
    pub(crate) fn live_dir_mut(&mut self) -> VfsResult<&mut DirData> {
        if self.attr.nlink == 0 {
            return Err(VfsError::NotFound);
        }
        self.dir_mut()
    }

    /// Marks a data change: mtime and ctime to `now`.
    pub(crate) fn touch_data(&mut self, now: Timestamp) {
        self.attr.mtime = now;
        self.attr.ctime = now;
    }

    /// Recomputes `blocks` for regular files from the allocated bytes.
    pub(crate) fn update_blocks(&mut self) {
        if let Content::File(d) = &self.content {
            self.attr.blocks = d.allocated().div_ceil(512);
        }
    }

    /// Whether the node can be dropped from the table.
    pub(crate) fn is_dead(&self) -> bool {
        self.attr.nlink == 0 && self.open == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_data_reads_zeros_in_holes() {
        let mut d = FileData::default();
        d.write(CHUNK * 3 + 10, b"abc");
        assert_eq!(d.allocated(), 13);
        let r = d.read(CHUNK * 3 + 8, 6);
        assert_eq!(&r[..], b"\0\0abc\0");
        assert_eq!(&d.read(0, 4)[..], b"\0\0\0\0");
    }

    #[test]
    fn write_across_chunk_boundary() {
        let mut d = FileData::default();
        let data: Vec<u8> = (0..=255u8).cycle().take(CHUNK as usize + 100).collect();
        d.write(CHUNK - 50, &data);
        assert_eq!(&d.read(CHUNK - 50, data.len())[..], &data[..]);
    }

    #[test]
    fn truncate_drops_bytes_beyond_size() {
        let mut d = FileData::default();
        d.write(0, &vec![7u8; (CHUNK * 2) as usize]);
        d.truncate(CHUNK + 5);
        assert_eq!(d.allocated(), CHUNK + 5);
        // Growing back must show zeros, not the old bytes.
        assert_eq!(&d.read(CHUNK + 3, 4)[..], &[7, 7, 0, 0]);
        d.truncate(CHUNK);
        assert_eq!(d.allocated(), CHUNK);
        d.truncate(0);
        assert_eq!(d.allocated(), 0);
    }

    #[test]
    fn zero_range_punches() {
        let mut d = FileData::default();
        d.write(0, &vec![1u8; (CHUNK * 3) as usize]);
        d.zero_range(10, CHUNK * 2);
        let r = d.read(0, (CHUNK * 3) as usize);
        assert!(r[..10].iter().all(|&b| b == 1));
        assert!(r[10..(10 + CHUNK * 2) as usize].iter().all(|&b| b == 0));
        assert!(r[(10 + CHUNK * 2) as usize..].iter().all(|&b| b == 1));
    }

    #[test]
    fn a_recreated_name_comes_back_at_its_place() {
        let mut d = DirData::new(Ino::ROOT);
        d.insert("a".into(), Ino(2), FileType::Regular);
        d.insert("b".into(), Ino(3), FileType::Regular);
        let a = d.get("a".as_ref()).unwrap().seq;
        d.remove("a".as_ref());
        d.insert("a".into(), Ino(4), FileType::Regular);
        assert_eq!(d.get("a".as_ref()).unwrap().seq, a);
        assert_eq!(d.order.len(), 2);
        assert!(d.order.keys().all(|k| (FIRST_SEQ..1 << 62).contains(k)));
    }

    #[test]
    fn colliding_positions_are_probed() {
        let mut d = DirData::new(Ino::ROOT);
        let p = position("x".as_ref());
        // Occupy the position "x" hashes to with another name.
        d.order.insert(p, "other".into());
        d.entries.insert(
            "other".into(),
            Slot {
                ino: Ino(9),
                kind: FileType::Regular,
                seq: p,
            },
        );
        d.insert("x".into(), Ino(2), FileType::Regular);
        assert_eq!(d.get("x".as_ref()).unwrap().seq, p + 1);
    }
}
