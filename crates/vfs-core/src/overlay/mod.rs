//! `Overlay`: a copy-on-write [`VirtualFs`] made of one writable upper layer over one or
//! more read-only lower layers (topmost first, as overlayfs's `lowerdir=a:b:c`), each any
//! backend.
//!
//! Invariants:
//! - **Lowers are never written.** The only calls made on a lower layer are `lookup`,
//!   `getattr`, `readlink`, `readdir`, `open` read-only, `read`, `release`, `getxattr`
//!   and `listxattr`.
//! - **Every overlay state lives in the upper**, so a mount stopped and started again on
//!   the same upper finds every change: whiteouts are character devices 0/0 in the upper
//!   tree (overlayfs's convention); everything else (origins, opaque directories, block
//!   maps) is a record per upper inode in the hidden directory [`META_DIR`] of the upper
//!   root (see `record.rs`), loaded at [`Overlay::open`]. The hidden directory is never
//!   listed, looked up or created through the overlay.
//! - **Inode numbers do not change on copy-up.** An object's number derives from where it
//!   first came from: the upper inode for an object born in the upper, `(layer, lower
//!   inode)` for one that came from a lower layer (also after copy-up, through its
//!   record's origin). They are stable across restarts when the layers' own numbers are.
//! - **Copy-up is by block.** The first change to a lower file creates a sparse upper
//!   file of the same size with an empty block map; a write materializes only the blocks
//!   it touches (filling the parts it does not cover from the lower), and a read of a
//!   block not materialized is served from the lower layer, whichever handle it comes
//!   through (seed 001 (doc/LESSONS.md#seed-001): never zeros).
//! - **Per-inode order.** Writes and truncations of one inode apply in issue order and a
//!   read or `getattr` waits for every write issued before it (an [`OpBarrier`]). No
//!   attribute is cached: sizes always come from the layer that holds the file.
//! - **Namespace changes are serialized** by one async lock (taken shared by lookups and
//!   listings), so a rename, which is a copy-up, an upper rename and a whiteout, is atomic
//!   to every other caller of the overlay.
//!
//! Layout: `record.rs` (the persistent record), `node.rs` (inodes in memory), `names.rs`
//! (lookup, merged readdir, whiteouts), `copyup.rs`, `data.rs` (block reads and writes),
//! `ops.rs` (the [`VirtualFs`] implementation), `handles.rs` (the handle table).

mod copyup;
mod data;
mod handles;
mod names;
mod node;
mod ops;
mod record;
#[cfg(all(test, not(loom)))]
mod tests;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::barrier::OpBarrier;
use crate::error::{VfsError, VfsResult};
use crate::types::{FileType, Ino, Name, RequestCtx};
use crate::vfs::{InodeStability, VirtualFs};

use crate::fh_table::FhTable;
use handles::Handle;
use node::{Node, NodeState};
use record::Record;

/// The hidden directory in the upper root that holds the overlay's records.
pub const META_DIR: &str = ".vfs-overlay";
/// Default copy-up block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 64 * 1024;

const CTX: RequestCtx = RequestCtx::ROOT;

/// How an [`Overlay`] behaves.
#[derive(Clone, Copy, Debug)]
pub struct OverlayOptions {
    /// Copy-up granularity in bytes (a power of two, at least 512). New block maps use
    /// it; a file copied up earlier keeps the size it was copied up with.
    pub block_size: u32,
    /// Reads of blocks not yet in the upper copy them up, the file itself first if it
    /// is only in a lower layer (off by default: reads never grow the upper).
    pub materialize_on_read: bool,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        OverlayOptions {
            block_size: DEFAULT_BLOCK_SIZE,
            materialize_on_read: false,
        }
    }
}

/// What the overlay has done so far (see [`Overlay::counters`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlayCounters {
    /// Objects copied up from a lower layer (files, directories, links).
    pub objects_copied_up: u64,
    /// Blocks copied from a lower file into its upper copy.
    pub blocks_copied_up: u64,
    /// Bytes of file data read from the upper layer.
    pub bytes_from_upper: u64,
    /// Bytes of file data read from each lower layer (topmost first).
    pub bytes_from_lower: Vec<u64>,
}

#[derive(Default)]
struct Counters {
    objects: AtomicU64,
    blocks: AtomicU64,
    upper: AtomicU64,
    lower: Vec<AtomicU64>,
}

/// The hidden directories in the upper.
#[derive(Clone, Copy)]
struct Meta {
    /// `META_DIR/inodes`: one record per upper inode, named by its number.
    inodes: Ino,
    /// `META_DIR/work`: objects being prepared before they are renamed into place.
    work: Ino,
}

/// A copy-on-write filesystem: `upper` over `lowers` (topmost first). See the
/// [module docs](self).
///
/// All lowers have one type `L`; to stack different backends, wrap them in an enum that
/// implements [`VirtualFs`] by delegation (the trait's `impl Future` methods make it
/// impossible to box them as `dyn`).
pub struct Overlay<U, L> {
    upper: U,
    lowers: Vec<L>,
    opts: OverlayOptions,
    source: String,
    meta: Meta,
    /// Shared by lookups and listings, exclusive for every change of the namespace.
    ns: tokio::sync::RwLock<()>,
    nodes: Mutex<HashMap<Ino, Arc<Node>>>,
    /// Records by upper inode number.
    records: Mutex<HashMap<Ino, Record>>,
    /// Overlay inode of a copied-up object → its upper inode (origin index).
    by_origin: Mutex<HashMap<Ino, Ino>>,
    /// Upper inode number of each record file.
    record_files: Mutex<HashMap<Ino, Ino>>,
    handles: FhTable<Handle>,
    barrier: OpBarrier,
    counters: Counters,
    work_seq: AtomicU64,
}

/// Which layer an object lives in, for inode numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    Upper,
    Lower(usize),
}

/// Bits of an overlay inode number above the layer's own number.
const TAG_SHIFT: u32 = 56;

/// The overlay inode number of `ino` of `layer`.
fn ovl_ino(layer: Layer, ino: Ino) -> VfsResult<Ino> {
    if ino == Ino::ROOT && layer == Layer::Upper {
        return Ok(Ino::ROOT);
    }
    if ino.0 >> TAG_SHIFT != 0 {
        tracing::debug!(?layer, ino = ino.0, "overlay: inode number too large to tag");
        return Err(VfsError::Os(crate::error::Errno::EOVERFLOW));
    }
    let tag = match layer {
        Layer::Upper => 0,
        Layer::Lower(i) => i as u64 + 1,
    };
    Ok(Ino(tag << TAG_SHIFT | ino.0))
}

fn name(s: &str) -> Name<'_> {
    // Callers pass literals and decimal numbers: always valid names.
    match Name::new(OsStr::new(s)) {
        Ok(n) => n,
        Err(_) => unreachable_name(s),
    }
}

#[cold]
fn unreachable_name(s: &str) -> ! {
    panic!("overlay: internal name {s:?} is not a valid name")
}

impl<U: VirtualFs, L: VirtualFs> Overlay<U, L> {
    /// Opens an overlay of `upper` over `lowers` (topmost first): creates the hidden
    /// directory in the upper if needed, discards half-prepared objects of an interrupted
    /// earlier run and loads every record. Errors: no lower layer, more than 254, or an
    /// upper that cannot hold the hidden directory.
    pub async fn open(upper: U, lowers: Vec<L>, opts: OverlayOptions) -> VfsResult<Self> {
        if lowers.is_empty() || lowers.len() > 254 {
            return Err(VfsError::Invalid("an overlay needs between 1 and 254 lower layers"));
        }
        if !opts.block_size.is_power_of_two() || opts.block_size < 512 {
            return Err(VfsError::Invalid("block size must be a power of two of at least 512"));
        }
        let dir = Self::ensure_dir(&upper, Ino::ROOT, META_DIR, 0o700).await?;
        let inodes = Self::ensure_dir(&upper, dir, "inodes", 0o700).await?;
        let work = Self::ensure_dir(&upper, dir, "work", 0o700).await?;
        let mut source = format!("overlay:{}", upper.source_id());
        for l in &lowers {
            source.push('|');
            source.push_str(l.source_id());
        }
        let counters = Counters {
            lower: lowers.iter().map(|_| AtomicU64::new(0)).collect(),
            ..Counters::default()
        };
        let fs = Overlay {
            upper,
            lowers,
            opts,
            source,
            meta: Meta { inodes, work },
            ns: tokio::sync::RwLock::new(()),
            nodes: Mutex::new(HashMap::new()),
            records: Mutex::new(HashMap::new()),
            by_origin: Mutex::new(HashMap::new()),
            record_files: Mutex::new(HashMap::new()),
            handles: FhTable::new(),
            barrier: OpBarrier::new(),
            counters,
            work_seq: AtomicU64::new(0),
        };
        fs.clean_work().await?;
        fs.load_records().await?;
        let root_opaque = fs.records.lock().get(&Ino::ROOT).is_some_and(|r| r.opaque);
        let lower_dirs = if root_opaque {
            Vec::new()
        } else {
            (0..fs.lowers.len()).map(|i| (i, Ino::ROOT)).collect()
        };
        let root = Node::new(
            Ino::ROOT,
            FileType::Directory,
            NodeState {
                upper: Some(Ino::ROOT),
                lower: None,
                lower_dirs,
                parent: Ino::ROOT,
                name: Vec::new(),
                path: Vec::new(),
                lookups: 1,
                ..NodeState::default()
            },
        );
        fs.nodes.lock().insert(Ino::ROOT, root);
        Ok(fs)
    }

    async fn ensure_dir(upper: &U, parent: Ino, n: &str, mode: u32) -> VfsResult<Ino> {
        match upper.lookup(&CTX, parent, name(n)).await {
            Ok(a) if a.kind == FileType::Directory => Ok(a.ino),
            Ok(_) => Err(VfsError::Io(format!("the upper's {n} is not a directory"))),
            Err(VfsError::NotFound) => Ok(upper.mkdir(&CTX, parent, name(n), mode, 0).await?.ino),
            Err(e) => Err(e),
        }
    }

    /// Removes whatever an interrupted copy-up left in the work directory.
    async fn clean_work(&self) -> VfsResult<()> {
        for e in names::list_all(&self.upper, self.meta.work).await? {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let n = Name::new(&e.name)?;
            // A copy-up interrupted after its record was written: the record goes too.
            match self
                .upper
                .unlink(&CTX, self.meta.inodes, name(&e.ino.0.to_string()))
                .await
            {
                Ok(()) | Err(VfsError::NotFound) => {}
                Err(e) => return Err(e),
            }
            if e.kind == FileType::Directory {
                // Work directories are created empty and renamed away at once.
                self.upper.rmdir(&CTX, self.meta.work, n).await?;
            } else {
                self.upper.unlink(&CTX, self.meta.work, n).await?;
            }
        }
        Ok(())
    }

    async fn load_records(&self) -> VfsResult<()> {
        for e in names::list_all(&self.upper, self.meta.inodes).await? {
            let text = e.name.to_string_lossy();
            if e.name == "." || e.name == ".." {
                continue;
            }
            let Ok(upper_ino) = text.parse::<u64>() else {
                return Err(VfsError::Io(format!(
                    "overlay: foreign file {text} in the record directory"
                )));
            };
            let a = self.upper.lookup(&CTX, self.meta.inodes, Name::new(&e.name)?).await?;
            let bytes = data::read_whole(&self.upper, a.ino).await?;
            let rec = Record::decode(&bytes, &text)?;
            self.index_record(Ino(upper_ino), &rec)?;
            self.record_files.lock().insert(Ino(upper_ino), a.ino);
            self.records.lock().insert(Ino(upper_ino), rec);
        }
        Ok(())
    }

    fn index_record(&self, upper_ino: Ino, rec: &Record) -> VfsResult<()> {
        if let Some(o) = &rec.origin {
            let ino = ovl_ino(Layer::Lower(o.layer), o.ino)?;
            self.by_origin.lock().insert(ino, upper_ino);
        }
        Ok(())
    }

    /// The options this overlay was opened with.
    pub fn options(&self) -> OverlayOptions {
        self.opts
    }

    /// The upper layer.
    pub fn upper(&self) -> &U {
        &self.upper
    }

    /// The lower layers, topmost first.
    pub fn lowers(&self) -> &[L] {
        &self.lowers
    }

    /// What the overlay has done so far.
    pub fn counters(&self) -> OverlayCounters {
        OverlayCounters {
            objects_copied_up: self.counters.objects.load(Ordering::Relaxed),
            blocks_copied_up: self.counters.blocks.load(Ordering::Relaxed),
            bytes_from_upper: self.counters.upper.load(Ordering::Relaxed),
            bytes_from_lower: self.counters.lower.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
        }
    }

    /// How many inodes have pending ordered operations (zero when quiet).
    pub fn pending_inodes(&self) -> usize {
        self.barrier.inode_count()
    }

    /// How many inodes the overlay knows (looked up and not forgotten, or open).
    pub fn known_inodes(&self) -> usize {
        self.nodes.lock().len()
    }

    fn inode_stability_of_layers(&self) -> InodeStability {
        let all_stable = self.upper.inode_stability() == InodeStability::Stable
            && self
                .lowers
                .iter()
                .all(|l| l.inode_stability() == InodeStability::Stable);
        if all_stable {
            InodeStability::Stable
        } else {
            InodeStability::Volatile
        }
    }

    fn node(&self, ino: Ino) -> VfsResult<Arc<Node>> {
        self.nodes.lock().get(&ino).cloned().ok_or(VfsError::Stale)
    }

    fn next_work_name(&self) -> String {
        format!("w{}", self.work_seq.fetch_add(1, Ordering::Relaxed))
    }

    /// How many blocks of file `ino` are in the upper, and how many blocks its lower data
    /// in use spans; `None` for a file without a block map (never copied
    /// up, born in the upper, or copied up empty).
    pub fn block_status(&self, ino: Ino) -> Option<(u64, u64)> {
        let u = self.nodes.lock().get(&ino)?.upper()?;
        let recs = self.records.lock();
        let m = recs.get(&u)?.map.as_ref()?;
        let total = m.lower_len.div_ceil(m.block);
        Some((m.materialized(), total))
    }
}
