//! File data: bytes in fixed-size immutable blocks, `file_block` rows saying which block
//! holds which part of which file.
//!
//! Invariant: block `idx` of a file covers bytes `idx * B .. (idx + 1) * B`, B the
//! database's block size (recorded in `vfs_meta` when it was created); a block holds at most `B` bytes and never bytes at or
//! past the file's end; whatever a file range has no block or no bytes for reads as
//! zeros. A write never changes a block: it puts a new block holding the old bytes with
//! the new ones laid over them and moves the file's row to it, so a block shared with
//! another file or verset is never seen to change through that other file.

use deadpool_postgres::Transaction;

use crate::blocks::BlockStore;
use crate::db::{OpResult, exec, rows};
use crate::tree::{drop_blocks, unref_blocks};

/// One block of a file as its `file_block` row says.
struct Mapped {
    idx: i64,
    block: i64,
    len: i32,
}

async fn mapped(tx: &Transaction<'_>, ino: i64, first: i64, last: i64) -> OpResult<Vec<Mapped>> {
    rows(
        tx,
        "SELECT f.idx, f.block, b.len FROM file_block f JOIN block b ON b.id = f.block
         WHERE f.ino = $1 AND f.idx BETWEEN $2 AND $3 ORDER BY f.idx",
        &[&ino, &first, &last],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Mapped {
            idx: r.try_get(0)?,
            block: r.try_get(1)?,
            len: r.try_get(2)?,
        })
    })
    .collect()
}

/// Reads `len` bytes at `offset` of file `ino` (the caller has clipped the range to the
/// file's size): holes and block tails read as zeros.
pub(crate) async fn read<S: BlockStore>(
    tx: &Transaction<'_>,
    store: &S,
    bs: u32,
    ino: i64,
    offset: u64,
    len: usize,
) -> OpResult<Vec<u8>> {
    let mut out = vec![0u8; len];
    if len == 0 {
        return Ok(out);
    }
    let bs = u64::from(bs);
    let end = offset + len as u64;
    let first = (offset / bs) as i64;
    let last = ((end - 1) / bs) as i64;
    let map = mapped(tx, ino, first, last).await?;
    let ids: Vec<i64> = map.iter().filter(|m| m.len > 0).map(|m| m.block).collect();
    let bytes = store.get(tx, &ids).await?;
    for m in &map {
        let Some(data) = bytes.get(&m.block) else { continue };
        let bstart = m.idx as u64 * bs;
        // The overlap of [bstart, bstart + data.len()) with [offset, end).
        let from = bstart.max(offset);
        let to = (bstart + data.len() as u64).min(end);
        if from < to {
            let src = &data[(from - bstart) as usize..(to - bstart) as usize];
            out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
        }
    }
    Ok(out)
}

/// Writes `data` at `offset` of file `ino`.
pub(crate) async fn write<S: BlockStore>(
    tx: &Transaction<'_>,
    store: &S,
    bs: u32,
    ino: i64,
    offset: u64,
    data: &[u8],
) -> OpResult<()> {
    if data.is_empty() {
        return Ok(());
    }
    let bsz = u64::from(bs);
    let end = offset + data.len() as u64;
    let first = (offset / bsz) as i64;
    let last = ((end - 1) / bsz) as i64;
    let map = mapped(tx, ino, first, last).await?;
    // The old bytes are needed only where a block keeps some of them.
    let need: Vec<i64> = map
        .iter()
        .filter(|m| {
            let bstart = m.idx as u64 * bsz;
            m.len > 0 && (offset > bstart || end < bstart + m.len as u64)
        })
        .map(|m| m.block)
        .collect();
    let old = store.get(tx, &need).await?;
    let mut contents: Vec<(i64, Vec<u8>)> = Vec::with_capacity((last - first + 1) as usize);
    for idx in first..=last {
        let bstart = idx as u64 * bsz;
        let from = bstart.max(offset);
        let to = (bstart + bsz).min(end);
        let prior = map
            .iter()
            .find(|m| m.idx == idx)
            .and_then(|m| old.get(&m.block))
            .map(|b| &b[..]);
        let mut block = prior.map(<[u8]>::to_vec).unwrap_or_default();
        let need_len = (to - bstart) as usize;
        if block.len() < need_len {
            block.resize(need_len, 0);
        }
        block[(from - bstart) as usize..need_len]
            .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
        contents.push((idx, block));
    }
    let olds: Vec<i64> = map.iter().map(|m| m.block).collect();
    put_blocks(tx, store, ino, &contents).await?;
    unref_blocks(tx, store, &olds).await
}

/// Makes new blocks with these contents and points `ino`'s rows `idx` at them.
async fn put_blocks<S: BlockStore>(
    tx: &Transaction<'_>,
    store: &S,
    ino: i64,
    contents: &[(i64, Vec<u8>)],
) -> OpResult<()> {
    if contents.is_empty() {
        return Ok(());
    }
    let lens: Vec<i32> = contents.iter().map(|(_, b)| b.len() as i32).collect();
    let ids: Vec<i64> = rows(
        tx,
        "INSERT INTO block (refs, len) SELECT 1, l FROM unnest($1::int[]) WITH ORDINALITY AS t(l, n) ORDER BY n RETURNING id",
        &[&lens],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    if ids.len() != contents.len() {
        return Err(vfs_core::VfsError::Io("block insert returned the wrong count".into()).into());
    }
    let puts: Vec<(i64, &[u8])> = ids.iter().zip(contents).map(|(id, (_, b))| (*id, &b[..])).collect();
    store.put(tx, &puts).await?;
    let idxs: Vec<i64> = contents.iter().map(|(i, _)| *i).collect();
    exec(
        tx,
        "INSERT INTO file_block (ino, idx, block) SELECT $1, * FROM unnest($2::bigint[], $3::bigint[])
         ON CONFLICT (ino, idx) DO UPDATE SET block = EXCLUDED.block",
        &[&ino, &idxs, &ids],
    )
    .await?;
    Ok(())
}

/// Cuts or extends file `ino` from `size` to `new`: blocks wholly past the new end are
/// dropped, the block the new end falls in is cut (a new block), and extending adds no
/// block at all (the new range is a hole).
pub(crate) async fn truncate<S: BlockStore>(
    tx: &Transaction<'_>,
    store: &S,
    bs: u32,
    ino: i64,
    size: u64,
    new: u64,
) -> OpResult<()> {
    if new >= size {
        return Ok(());
    }
    let bsz = u64::from(bs);
    let keep = new.div_ceil(bsz) as i64;
    drop_blocks(tx, store, ino, keep).await?;
    let tail = new % bsz;
    if tail != 0 {
        let idx = keep - 1;
        let map = mapped(tx, ino, idx, idx).await?;
        if let Some(m) = map.first().filter(|m| i64::from(m.len) > tail as i64) {
            let old = store.get(tx, &[m.block]).await?;
            if let Some(b) = old.get(&m.block) {
                put_blocks(tx, store, ino, &[(idx, b[..tail as usize].to_vec())]).await?;
                unref_blocks(tx, store, &[m.block]).await?;
            }
        }
    }
    Ok(())
}

/// Zeros `offset .. offset + len` of file `ino` (size `size`) without changing its size:
/// whole blocks are dropped (holes), partial ones rewritten.
pub(crate) async fn punch<S: BlockStore>(
    tx: &Transaction<'_>,
    store: &S,
    bs: u32,
    ino: i64,
    size: u64,
    offset: u64,
    len: u64,
) -> OpResult<()> {
    let end = offset.saturating_add(len).min(size);
    if offset >= end {
        return Ok(());
    }
    let bsz = u64::from(bs);
    let first_whole = offset.div_ceil(bsz);
    let end_whole = end / bsz;
    if first_whole < end_whole {
        let dropped: Vec<i64> = rows(
            tx,
            "DELETE FROM file_block WHERE ino = $1 AND idx >= $2 AND idx < $3 RETURNING block",
            &[&ino, &(first_whole as i64), &(end_whole as i64)],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        unref_blocks(tx, store, &dropped).await?;
    }
    // The partial edges: write zeros over them.
    let head_end = (first_whole * bsz).min(end);
    if offset < head_end {
        write(tx, store, bs, ino, offset, &vec![0; (head_end - offset) as usize]).await?;
    }
    let tail_start = (end_whole * bsz).max(offset);
    if tail_start < end && end_whole >= first_whole {
        write(tx, store, bs, ino, tail_start, &vec![0; (end - tail_start) as usize]).await?;
    }
    Ok(())
}
