//! File data: reads that pick each block's layer, writes that materialize blocks.
//!
//! Invariant: for a copied-up file with a block map, byte `x < lower_len` is read from
//! the origin in the lower layer while its block's bit is clear and from the upper file
//! once it is set; a bit is set only after the whole block (lower bytes merged with the
//! write) is in the upper file, and the bitmap byte is written to the record after the
//! data. Every byte at or past `lower_len` comes from the upper file. The size is the
//! upper file's, asked for on every read: nothing here caches a size.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::node::Node;
use super::record::Record;
use super::{CTX, Overlay};
use crate::error::{VfsError, VfsResult};
use crate::types::{Fh, Ino, OpenFlags};
use crate::vfs::VirtualFs;

/// Largest single backend read or write issued here.
const CHUNK: u64 = 1 << 20;

/// Writes all of `data` at `offset`.
pub(crate) async fn write_all<F: VirtualFs>(
    fs: &F,
    ino: Ino,
    fh: Fh,
    mut offset: u64,
    mut data: &[u8],
) -> VfsResult<()> {
    while !data.is_empty() {
        let n = fs.write(&CTX, ino, fh, offset, data).await?;
        if n == 0 {
            return Err(VfsError::Io("overlay: a layer accepted no bytes of a write".into()));
        }
        data = &data[(n as usize).min(data.len())..];
        offset += u64::from(n);
    }
    Ok(())
}

/// Reads `[offset, offset + len)`, fewer bytes only at end of file.
pub(crate) async fn read_full<F: VirtualFs>(fs: &F, ino: Ino, fh: Fh, offset: u64, len: u64) -> VfsResult<BytesMut> {
    // `len` may be `u64::MAX` ("to the end"): reserve at most one chunk up front.
    let mut out = BytesMut::with_capacity(usize::try_from(len.min(CHUNK)).unwrap_or(0));
    while (out.len() as u64) < len {
        let want = (len - out.len() as u64).min(CHUNK) as u32;
        let got = fs.read(&CTX, ino, fh, offset + out.len() as u64, want).await?;
        if got.is_empty() {
            break;
        }
        out.extend_from_slice(&got);
    }
    Ok(out)
}

/// A whole (small) file.
pub(crate) async fn read_whole<F: VirtualFs>(fs: &F, ino: Ino) -> VfsResult<Vec<u8>> {
    let fh = fs.open(&CTX, ino, OpenFlags::RDONLY).await?;
    let r = read_full(fs, ino, fh, 0, u64::MAX).await;
    fs.release(&CTX, ino, fh).await?;
    Ok(r?.to_vec())
}

/// Where a span of a read comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Src {
    Upper,
    Lower,
}

impl<U: VirtualFs, L: VirtualFs> Overlay<U, L> {
    /// The node's upper handle (read-write), opened on first use.
    pub(crate) async fn upper_fh(&self, node: &Node) -> VfsResult<(Ino, Fh)> {
        let (u, fh) = {
            let st = node.st.lock();
            let u = st.upper.ok_or_else(|| VfsError::Io("overlay: no upper file".into()))?;
            (u, st.upper_fh)
        };
        if let Some(fh) = fh {
            return Ok((u, fh));
        }
        let fh = self.upper.open(&CTX, u, OpenFlags::RDWR).await?;
        let other = {
            let mut st = node.st.lock();
            let other = st.upper_fh;
            if other.is_none() {
                st.upper_fh = Some(fh);
            }
            other
        };
        match other {
            Some(other) => {
                self.upper.release(&CTX, u, fh).await?;
                Ok((u, other))
            }
            None => Ok((u, fh)),
        }
    }

    /// The node's lower object (resolving a copied-up object's origin path after a restart).
    pub(crate) async fn lower_of(&self, node: &Node) -> VfsResult<(usize, Ino)> {
        let (lower, upper) = {
            let st = node.st.lock();
            (st.lower, st.upper)
        };
        if let Some(l) = lower {
            return Ok(l);
        }
        let origin = upper
            .and_then(|u| self.records.lock().get(&u).and_then(|r| r.origin.clone()))
            .ok_or_else(|| VfsError::Io("overlay: file has no lower origin".into()))?;
        let lower = &self.lowers[origin.layer];
        let mut ino = Ino::ROOT;
        for comp in origin.path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            ino = lower
                .lookup(&CTX, ino, crate::types::Name::from_bytes(comp)?)
                .await?
                .ino;
        }
        let l = (origin.layer, ino);
        node.st.lock().lower = Some(l);
        Ok(l)
    }

    /// The node's lower handle (read-only), opened on first use.
    pub(crate) async fn lower_fh(&self, node: &Node) -> VfsResult<(usize, Ino, Fh)> {
        let (layer, lino) = self.lower_of(node).await?;
        let cached = node.st.lock().lower_fh;
        if let Some(fh) = cached {
            return Ok((layer, lino, fh));
        }
        let fh = self.lowers[layer].open(&CTX, lino, OpenFlags::RDONLY).await?;
        let other = {
            let mut st = node.st.lock();
            let other = st.lower_fh;
            if other.is_none() {
                st.lower_fh = Some(fh);
            }
            other
        };
        match other {
            Some(other) => {
                self.lowers[layer].release(&CTX, lino, fh).await?;
                Ok((layer, lino, other))
            }
            None => Ok((layer, lino, fh)),
        }
    }

    /// Releases the backend handles of a node nobody has open any more.
    pub(crate) async fn release_fhs(&self, node: &Node) {
        let (u, ufh, l, lfh) = {
            let mut st = node.st.lock();
            (st.upper, st.upper_fh.take(), st.lower, st.lower_fh.take())
        };
        if let (Some(u), Some(fh)) = (u, ufh)
            && let Err(e) = self.upper.release(&CTX, u, fh).await
        {
            tracing::debug!(ino = node.ino.0, "overlay: releasing the upper handle: {e}");
        }
        if let (Some((layer, lino)), Some(fh)) = (l, lfh)
            && let Err(e) = self.lowers[layer].release(&CTX, lino, fh).await
        {
            tracing::debug!(ino = node.ino.0, "overlay: releasing the lower handle: {e}");
        }
    }

    fn count_lower(&self, layer: usize, n: usize) {
        if let Some(c) = self.counters.lower.get(layer) {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn count_upper(&self, n: usize) {
        self.counters.upper.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Reads file data of `node`, each block from the layer that holds it.
    pub(crate) async fn read_data(&self, node: &Node, offset: u64, size: u32) -> VfsResult<Bytes> {
        let Some(u) = node.upper() else {
            let (layer, lino, fh) = self.lower_fh(node).await?;
            let b = self.lowers[layer].read(&CTX, lino, fh, offset, size).await?;
            self.count_lower(layer, b.len());
            return Ok(b);
        };
        if self.opts.materialize_on_read {
            self.materialize(node, u, offset, u64::from(size)).await?;
        }
        let (_, ufh) = self.upper_fh(node).await?;
        let needs_lower = self
            .records
            .lock()
            .get(&u)
            .and_then(|r| r.map.as_ref())
            .is_some_and(|m| offset < m.lower_len);
        if !needs_lower {
            let b = self.upper.read(&CTX, u, ufh, offset, size).await?;
            self.count_upper(b.len());
            return Ok(b);
        }
        let fsize = self.upper.getattr(&CTX, u, Some(ufh)).await?.size;
        let end = offset.saturating_add(u64::from(size)).min(fsize);
        if end <= offset {
            return Ok(Bytes::new());
        }
        let spans = self.spans(u, offset, end);
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (src, s, e) in spans {
            let got = match src {
                Src::Upper => {
                    let b = read_full(&self.upper, u, ufh, s, e - s).await?;
                    self.count_upper(b.len());
                    b
                }
                Src::Lower => {
                    let (layer, lino, lfh) = self.lower_fh(node).await?;
                    let b = read_full(&self.lowers[layer], lino, lfh, s, e - s).await?;
                    self.count_lower(layer, b.len());
                    b
                }
            };
            let short = (got.len() as u64) < e - s;
            out.extend_from_slice(&got);
            if short {
                // The layer ended early (a lower file changed underneath): stop there.
                break;
            }
        }
        Ok(out.freeze())
    }

    /// Splits `[start, end)` of upper file `u` into runs read from one layer.
    fn spans(&self, u: Ino, start: u64, end: u64) -> Vec<(Src, u64, u64)> {
        let recs = self.records.lock();
        let Some(m) = recs.get(&u).and_then(|r| r.map.as_ref()) else {
            return vec![(Src::Upper, start, end)];
        };
        let mut out: Vec<(Src, u64, u64)> = Vec::new();
        let mut pos = start;
        while pos < end {
            let k = pos / m.block;
            // Past `lower_len` first: the last lower block may end before its block does
            // (checked after `from_lower`, a read from there never moved on).
            let (src, stop) = if pos >= m.lower_len {
                (Src::Upper, end)
            } else if m.in_lower(k) {
                (Src::Lower, ((k + 1) * m.block).min(m.lower_len))
            } else {
                (Src::Upper, (k + 1) * m.block)
            };
            let stop = stop.min(end);
            match out.last_mut() {
                Some(last) if last.0 == src && last.2 == pos => last.2 = stop,
                _ => out.push((src, pos, stop)),
            }
            pos = stop;
        }
        out
    }

    /// Blocks of `[offset, offset + len)` still in the lower layer; `partial_only`: only
    /// those the range does not cover entirely (what a write must fill first).
    fn unmaterialized(&self, u: Ino, offset: u64, len: u64, partial_only: bool) -> Vec<u64> {
        let recs = self.records.lock();
        let Some(m) = recs.get(&u).and_then(|r| r.map.as_ref()) else {
            return Vec::new();
        };
        if len == 0 || offset >= m.lower_len {
            return Vec::new();
        }
        let end = offset.saturating_add(len);
        (offset / m.block..=(end - 1) / m.block)
            .filter(|&k| m.in_lower(k))
            .filter(|&k| {
                let bs = k * m.block;
                let be = (bs + m.block).min(m.lower_len);
                !(partial_only && offset <= bs && end >= be)
            })
            .collect()
    }

    /// Copies blocks `ks` of the lower file into upper file `u` (not yet marked).
    async fn fill_blocks(&self, node: &Node, u: Ino, ks: &[u64]) -> VfsResult<()> {
        if ks.is_empty() {
            return Ok(());
        }
        let (block, lower_len) = {
            let recs = self.records.lock();
            let m = recs.get(&u).and_then(|r| r.map.as_ref());
            m.map_or((1, 0), |m| (m.block, m.lower_len))
        };
        let (layer, lino, lfh) = self.lower_fh(node).await?;
        let (_, ufh) = self.upper_fh(node).await?;
        for &k in ks {
            let bs = k * block;
            let be = (bs + block).min(lower_len);
            let data = read_full(&self.lowers[layer], lino, lfh, bs, be - bs).await?;
            self.count_lower(layer, data.len());
            write_all(&self.upper, u, ufh, bs, &data).await?;
            self.counters.blocks.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(ino = node.ino.0, blocks = ks.len(), "overlay: blocks copied up");
        Ok(())
    }

    /// Marks every block of `[offset, offset + len)` below `lower_len` materialized and
    /// writes the changed bitmap bytes to the record.
    async fn mark(&self, u: Ino, offset: u64, len: u64) -> VfsResult<()> {
        let patch = {
            let mut recs = self.records.lock();
            let Some(rec) = recs.get_mut(&u) else {
                return Ok(());
            };
            let base = rec.bits_offset();
            let Some(m) = rec.map.as_mut() else {
                return Ok(());
            };
            if len == 0 || offset >= m.lower_len {
                return Ok(());
            }
            let end = offset.saturating_add(len).min(m.lower_len);
            let mut changed: Option<(usize, usize)> = None;
            for k in offset / m.block..=(end - 1) / m.block {
                if let Some(i) = m.set(k) {
                    changed = Some(changed.map_or((i, i), |(a, b)| (a.min(i), b.max(i))));
                }
            }
            changed.map(|(a, b)| (base + a as u64, m.bits[a..=b].to_vec()))
        };
        match patch {
            Some((off, bytes)) => self.patch_record(u, off, &bytes).await,
            None => Ok(()),
        }
    }

    /// Copies up the blocks of a range that are still in the lower layer
    /// (materialize-on-read).
    async fn materialize(&self, node: &Node, u: Ino, offset: u64, len: u64) -> VfsResult<()> {
        if self.unmaterialized(u, offset, len, false).is_empty() {
            return Ok(());
        }
        let _data = node.data.lock().await;
        let ks = self.unmaterialized(u, offset, len, false);
        self.fill_blocks(node, u, &ks).await?;
        let block = u64::from(self.opts.block_size).max(1);
        for k in ks {
            self.mark(u, k * self.block_of(u).unwrap_or(block), 1).await?;
        }
        Ok(())
    }

    fn block_of(&self, u: Ino) -> Option<u64> {
        self.records
            .lock()
            .get(&u)
            .and_then(|r| r.map.as_ref())
            .map(|m| m.block)
    }

    /// Writes `data` at `offset` into the upper file of `node` (already copied up).
    pub(crate) async fn write_data(&self, node: &Node, u: Ino, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let _data = node.data.lock().await;
        let ks = self.unmaterialized(u, offset, data.len() as u64, true);
        self.fill_blocks(node, u, &ks).await?;
        let (_, ufh) = self.upper_fh(node).await?;
        write_all(&self.upper, u, ufh, offset, data).await?;
        self.mark(u, offset, data.len() as u64).await?;
        u32::try_from(data.len()).map_err(|_| VfsError::TooBig)
    }

    /// `fallocate` of the upper file of `node` (already copied up). A mode that changes
    /// bytes (punch hole, zero range) makes the range's lower blocks upper blocks first:
    /// those it covers partly are copied up, then the range is marked materialized (the
    /// upper's zeros are its contents from then on), as a write of zeros would.
    pub(crate) async fn fallocate_data(
        &self,
        node: &Node,
        u: Ino,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> VfsResult<()> {
        let _data = node.data.lock().await;
        let changes_bytes = mode & !libc::FALLOC_FL_KEEP_SIZE != 0;
        if changes_bytes {
            let ks = self.unmaterialized(u, offset, length, true);
            self.fill_blocks(node, u, &ks).await?;
        }
        let (_, ufh) = self.upper_fh(node).await?;
        self.upper.fallocate(&CTX, u, ufh, offset, length, mode).await?;
        if changes_bytes {
            self.mark(u, offset, length).await?;
        }
        Ok(())
    }

    /// Before upper file `u` is truncated to `size`: lower data past `size` must never
    /// show again, so the block holding `size` is materialized and `lower_len` lowered.
    pub(crate) async fn truncate_map(&self, node: &Node, u: Ino, size: u64) -> VfsResult<()> {
        let (lower_len, block, partial) = {
            let recs = self.records.lock();
            let Some(m) = recs.get(&u).and_then(|r| r.map.as_ref()) else {
                return Ok(());
            };
            (
                m.lower_len,
                m.block,
                m.in_lower(size / m.block) && !size.is_multiple_of(m.block),
            )
        };
        if size >= lower_len {
            return Ok(());
        }
        if partial {
            let k = size / block;
            self.fill_blocks(node, u, &[k]).await?;
            self.mark(u, k * block, 1).await?;
        }
        if let Some(m) = self.records.lock().get_mut(&u).and_then(|r| r.map.as_mut()) {
            m.lower_len = size;
        }
        self.patch_record(u, Record::LOWER_LEN_OFFSET, &size.to_le_bytes())
            .await
    }
}
