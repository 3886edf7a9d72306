//! The persistent per-inode record of the overlay, kept in the upper layer.
//!
//! Invariant: a record describes one upper inode (it is keyed by the upper inode number)
//! and is the *only* place the overlay keeps state that is not a plain object of the
//! upper tree: where a copied-up object came from (its origin in a lower layer), whether a
//! directory is opaque, and, for a regular file copied up block by block, the length of
//! lower data still in use and the bitmap of blocks already materialized in the upper
//! file. A block whose bit is clear is read from the origin; a set bit is never cleared.
//! Decoding never panics: a short or foreign record is an error naming it.

use crate::error::{VfsError, VfsResult};
use crate::types::Ino;

/// Magic bytes at the start of every record (format version 1).
const MAGIC: &[u8; 8] = b"vfsovl01";
/// Bytes before the origin path.
const HEADER: usize = 32;
const FLAG_OPAQUE: u8 = 1;
const FLAG_ORIGIN: u8 = 2;
const FLAG_MAP: u8 = 4;

/// Where a copied-up object came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Index of the lower layer (0: topmost).
    pub layer: usize,
    /// The lower inode number at copy-up time (the overlay's inode number derives from it).
    pub ino: Ino,
    /// The path of the object in that layer, components joined by `/`, no leading `/`.
    pub path: Vec<u8>,
}

/// Which blocks of a copied-up regular file live in the upper file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlockMap {
    /// Block size in bytes.
    pub block: u64,
    /// Bytes `[0, lower_len)` of the file come from the origin unless their block's bit is
    /// set; bytes past it always come from the upper file. Never grows.
    pub lower_len: u64,
    /// One bit per block of `[0, lower_len)` at copy-up time, least significant bit first.
    pub bits: Vec<u8>,
}

impl BlockMap {
    /// A map with no block materialized, for `len` bytes of lower data.
    pub fn new(block: u64, len: u64) -> BlockMap {
        let blocks = len.div_ceil(block);
        let bytes = usize::try_from(blocks.div_ceil(8)).unwrap_or(usize::MAX);
        BlockMap {
            block,
            lower_len: len,
            bits: vec![0; bytes],
        }
    }

    /// Whether block `k` must be read from the lower layer.
    pub fn in_lower(&self, k: u64) -> bool {
        if k.saturating_mul(self.block) >= self.lower_len {
            return false;
        }
        let byte = usize::try_from(k / 8).unwrap_or(usize::MAX);
        self.bits.get(byte).is_some_and(|b| b & (1 << (k % 8)) == 0)
    }

    /// Marks block `k` materialized; returns the index of the bitmap byte that changed.
    pub fn set(&mut self, k: u64) -> Option<usize> {
        let byte = usize::try_from(k / 8).ok()?;
        let b = self.bits.get_mut(byte)?;
        let bit = 1 << (k % 8);
        if *b & bit != 0 {
            return None;
        }
        *b |= bit;
        Some(byte)
    }

    /// Number of materialized blocks.
    pub fn materialized(&self) -> u64 {
        self.bits.iter().map(|b| u64::from(b.count_ones())).sum()
    }
}

/// One upper inode's overlay state.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Record {
    /// A directory whose lower namesakes are hidden.
    pub opaque: bool,
    /// The lower object it was copied up from.
    pub origin: Option<Origin>,
    /// For a regular file copied up block by block.
    pub map: Option<BlockMap>,
}

impl Record {
    /// Offset of the bitmap in the encoded record.
    pub fn bits_offset(&self) -> u64 {
        (HEADER + self.origin.as_ref().map_or(0, |o| o.path.len())) as u64
    }

    /// Offset of the `lower_len` field in the encoded record.
    pub const LOWER_LEN_OFFSET: u64 = 8;

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 64);
        out.extend_from_slice(MAGIC);
        let map = self.map.as_ref();
        out.extend_from_slice(&map.map_or(0, |m| m.lower_len).to_le_bytes());
        out.extend_from_slice(&u32::try_from(map.map_or(0, |m| m.block)).unwrap_or(0).to_le_bytes());
        let flags = (u8::from(self.opaque) * FLAG_OPAQUE)
            | (u8::from(self.origin.is_some()) * FLAG_ORIGIN)
            | (u8::from(map.is_some()) * FLAG_MAP);
        out.push(flags);
        let origin = self.origin.as_ref();
        out.push(origin.map_or(0, |o| u8::try_from(o.layer).unwrap_or(u8::MAX)));
        out.extend_from_slice(
            &u16::try_from(origin.map_or(0, |o| o.path.len()))
                .unwrap_or(0)
                .to_le_bytes(),
        );
        out.extend_from_slice(&origin.map_or(0, |o| o.ino.0).to_le_bytes());
        if let Some(o) = origin {
            out.extend_from_slice(&o.path);
        }
        if let Some(m) = map {
            out.extend_from_slice(&m.bits);
        }
        out
    }

    /// Parses a record; `what` names it in the error.
    pub fn decode(b: &[u8], what: &str) -> VfsResult<Record> {
        let bad = |why: &str| VfsError::Io(format!("overlay record {what}: {why}"));
        if b.len() < HEADER || &b[..8] != MAGIC {
            return Err(bad("not an overlay record (bad magic or short)"));
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let lower_len = u64_at(8);
        let block = u64::from(u32::from_le_bytes([b[16], b[17], b[18], b[19]]));
        let flags = b[20];
        let layer = usize::from(b[21]);
        let path_len = usize::from(u16::from_le_bytes([b[22], b[23]]));
        let lower_ino = u64_at(24);
        let path_end = HEADER + path_len;
        if b.len() < path_end {
            return Err(bad("origin path cut short"));
        }
        let origin = (flags & FLAG_ORIGIN != 0).then(|| Origin {
            layer,
            ino: Ino(lower_ino),
            path: b[HEADER..path_end].to_vec(),
        });
        let map = if flags & FLAG_MAP != 0 {
            if block == 0 {
                return Err(bad("block size 0"));
            }
            let mut m = BlockMap::new(block, lower_len);
            let bits = &b[path_end..];
            if bits.len() < m.bits.len() {
                return Err(bad("block bitmap cut short"));
            }
            let n = m.bits.len();
            m.bits.copy_from_slice(&bits[..n]);
            Some(m)
        } else {
            None
        };
        Ok(Record {
            opaque: flags & FLAG_OPAQUE != 0,
            origin,
            map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_errors() {
        let mut map = BlockMap::new(4096, 10_000);
        assert_eq!(map.bits.len(), 1);
        assert!(map.in_lower(2) && !map.in_lower(3));
        assert_eq!(map.set(1), Some(0));
        assert_eq!(map.set(1), None);
        let r = Record {
            opaque: false,
            origin: Some(Origin {
                layer: 1,
                ino: Ino(77),
                path: b"a/b".to_vec(),
            }),
            map: Some(map),
        };
        let bytes = r.encode();
        assert_eq!(bytes.len() as u64, r.bits_offset() + 1);
        assert_eq!(Record::decode(&bytes, "t").unwrap(), r);
        assert!(Record::decode(&bytes[..bytes.len() - 1], "t").is_err());
        assert!(Record::decode(b"short", "t").is_err());
        let opaque = Record {
            opaque: true,
            ..Record::default()
        };
        assert_eq!(Record::decode(&opaque.encode(), "t").unwrap(), opaque);
    }
}
