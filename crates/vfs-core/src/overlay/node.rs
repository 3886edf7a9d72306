//! Overlay inodes in memory.
//!
//! Invariant: one [`Node`] per overlay inode number while the front end holds a lookup
//! reference to it or a handle is open on it. A node knows its object in the upper (once
//! it exists there) and in the topmost lower layer that has it, and for a directory the
//! lower directories merged under it (none when opaque). The backends' handles a node
//! holds are opened on first use and released with the last overlay handle (or when the
//! node goes).

use std::sync::Arc;

use parking_lot::Mutex;

use crate::types::{Fh, FileType, Ino};

/// What a node knows, behind its lock (a leaf lock: nothing is awaited or locked under it).
#[derive(Clone, Debug)]
pub(crate) struct NodeState {
    /// The object in the upper layer, once there is one.
    pub upper: Option<Ino>,
    /// The object in the topmost lower layer that has it (layer index, inode). For a
    /// copied-up object found through its upper name after a restart, resolved from its
    /// record's origin path on first use.
    pub lower: Option<(usize, Ino)>,
    /// For a directory: the lower directories merged under it, topmost first.
    pub lower_dirs: Vec<(usize, Ino)>,
    /// The directory it was last seen in and its name there (for copy-up).
    pub parent: Ino,
    pub name: Vec<u8>,
    /// Its path from the root (for directories: where their lower namesakes are).
    pub path: Vec<u8>,
    /// Lookup references held by the front end.
    pub lookups: u64,
    /// Open overlay handles.
    pub opens: u32,
    /// Read-write handle of the upper file.
    pub upper_fh: Option<Fh>,
    /// Read-only handle of the lower file.
    pub lower_fh: Option<Fh>,
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState {
            upper: None,
            lower: None,
            lower_dirs: Vec::new(),
            parent: Ino::ROOT,
            name: Vec::new(),
            path: Vec::new(),
            lookups: 0,
            opens: 0,
            upper_fh: None,
            lower_fh: None,
        }
    }
}

/// One overlay inode.
pub(crate) struct Node {
    pub ino: Ino,
    pub kind: FileType,
    pub st: Mutex<NodeState>,
    /// Serializes changes of this file's upper data with block materialization.
    pub data: tokio::sync::Mutex<()>,
}

impl Node {
    pub fn new(ino: Ino, kind: FileType, st: NodeState) -> Arc<Node> {
        Arc::new(Node {
            ino,
            kind,
            st: Mutex::new(st),
            data: tokio::sync::Mutex::new(()),
        })
    }

    pub fn snapshot(&self) -> NodeState {
        self.st.lock().clone()
    }

    pub fn upper(&self) -> Option<Ino> {
        self.st.lock().upper
    }
}

/// `parent_path/name`.
pub(crate) fn join(parent_path: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent_path.len() + 1 + name.len());
    if !parent_path.is_empty() {
        p.extend_from_slice(parent_path);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}
