//! Row-level building blocks of every tree operation, each a statement or two inside the
//! caller's transaction.
//!
//! Invariant: these helpers keep the counted facts true within the transaction they run
//! in: a directory's `nlink` is 2 plus its subdirectories, a non-directory's is its
//! number of entries, `block.refs` is the number of `file_block` rows naming the block,
//! and a block whose count reaches 0 is removed (bytes first, through the store) before
//! the transaction commits. They never commit.

use deadpool_postgres::Transaction;
use vfs_core::{FileType, Timestamp, VfsError};

use crate::blocks::BlockStore;
use crate::db::{OpResult, exec, kind_code, kind_from_code, row, rows};

/// Facts about an inode that operations decide on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node {
    pub(crate) ino: i64,
    pub(crate) kind: FileType,
    pub(crate) nlink: i64,
    pub(crate) verset: Option<i64>,
    pub(crate) perm: i32,
    pub(crate) uid: i64,
    pub(crate) gid: i64,
    pub(crate) size: i64,
}

const NODE_COLS: &str = "i.ino, i.kind, i.nlink, i.verset, i.perm, i.uid, i.gid, i.size";

fn node_from(r: &tokio_postgres::Row) -> OpResult<Node> {
    Ok(Node {
        ino: r.try_get(0)?,
        kind: kind_from_code(r.try_get(1)?)?,
        nlink: r.try_get(2)?,
        verset: r.try_get(3)?,
        perm: r.try_get(4)?,
        uid: r.try_get(5)?,
        gid: r.try_get(6)?,
        size: r.try_get(7)?,
    })
}

/// The inode `ino`, or `ESTALE` if it does not exist.
pub(crate) async fn node(tx: &Transaction<'_>, ino: i64) -> OpResult<Node> {
    let sql = format!("SELECT {NODE_COLS} FROM inode i WHERE i.ino = $1");
    match row(tx, &sql, &[&ino]).await? {
        Some(r) => node_from(&r),
        None => Err(VfsError::Stale.into()),
    }
}

/// The directory `ino`: `ESTALE` if missing, `ENOTDIR` if not a directory, `ENOENT` if
/// it was removed (no names left, still referenced by a handle).
pub(crate) async fn dir(tx: &Transaction<'_>, ino: i64) -> OpResult<Node> {
    let n = node(tx, ino).await?;
    if n.kind != FileType::Directory {
        return Err(VfsError::NotDir.into());
    }
    if n.nlink == 0 {
        return Err(VfsError::NotFound.into());
    }
    Ok(n)
}

/// The inode that `parent/name` names, if any.
pub(crate) async fn entry(tx: &Transaction<'_>, parent: i64, name: &[u8]) -> OpResult<Option<Node>> {
    let sql =
        format!("SELECT {NODE_COLS} FROM dentry d JOIN inode i ON i.ino = d.ino WHERE d.parent = $1 AND d.name = $2");
    match row(tx, &sql, &[&parent, &name]).await? {
        Some(r) => Ok(Some(node_from(&r)?)),
        None => Ok(None),
    }
}

/// What a new inode is.
pub(crate) struct NewInode<'a> {
    pub(crate) kind: FileType,
    pub(crate) perm: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) rdev: u64,
    pub(crate) verset: Option<i64>,
    pub(crate) target: Option<&'a [u8]>,
}

/// Inserts a new inode (number from the sequence, one link, two for a directory) and
/// returns its number.
pub(crate) async fn insert_inode(tx: &Transaction<'_>, n: &NewInode<'_>, now: Timestamp) -> OpResult<i64> {
    let nlink: i64 = if n.kind == FileType::Directory { 2 } else { 1 };
    let size: i64 = match (n.kind, n.target) {
        (FileType::Directory, _) => 4096,
        (_, Some(t)) => t.len() as i64,
        _ => 0,
    };
    let rdev: i64 = if matches!(n.kind, FileType::CharDevice | FileType::BlockDevice) {
        n.rdev as i64
    } else {
        0
    };
    let r = row(
        tx,
        "INSERT INTO inode (ino, verset, kind, perm, nlink, uid, gid, size, rdev,
                            atime_s, atime_ns, mtime_s, mtime_ns, ctime_s, ctime_ns, target)
         VALUES (nextval('vfs_ino_seq'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $9, $10, $9, $10, $11)
         RETURNING ino",
        &[
            &n.verset,
            &kind_code(n.kind),
            &((n.perm & 0o7777) as i32),
            &nlink,
            &i64::from(n.uid),
            &i64::from(n.gid),
            &size,
            &rdev,
            &now.secs,
            &(now.nsecs as i32),
            &n.target,
        ],
    )
    .await?;
    match r {
        Some(r) => Ok(r.try_get(0)?),
        None => Err(VfsError::Io("insert of an inode returned nothing".into()).into()),
    }
}

/// The listing place of `name`: FNV-1a 64 of its bytes, in `16 .. 2^62` (cookies stay
/// positive as signed 64-bit offsets, as FUSE and NFS clients keep them).
pub(crate) fn name_cookie(name: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h >> 2) as i64).max(16)
}

/// Most places after its hash that a name may take when those before are used.
const COOKIE_PROBES: i64 = 64;

/// Adds the entry `parent/name → ino`, listed at the first free place from the hash of
/// its name.
pub(crate) async fn add_entry(tx: &Transaction<'_>, parent: i64, name: &[u8], ino: i64) -> OpResult<()> {
    let h = name_cookie(name);
    exec(
        tx,
        "INSERT INTO dentry (parent, name, ino, cookie)
         SELECT $1, $2, $3, min(c) FROM generate_series($4::bigint, $4::bigint + $5) AS c
         WHERE NOT EXISTS (SELECT 1 FROM dentry WHERE parent = $1 AND cookie = c)",
        &[&parent, &name, &ino, &h, &COOKIE_PROBES],
    )
    .await?;
    Ok(())
}

/// Removes the entry `parent/name`.
pub(crate) async fn remove_entry(tx: &Transaction<'_>, parent: i64, name: &[u8]) -> OpResult<()> {
    exec(
        tx,
        "DELETE FROM dentry WHERE parent = $1 AND name = $2",
        &[&parent, &name],
    )
    .await?;
    Ok(())
}

/// A directory's contents changed: mtime and ctime now, `nlink` by `delta`.
pub(crate) async fn touch_dir(tx: &Transaction<'_>, dir: i64, delta: i64, now: Timestamp) -> OpResult<()> {
    exec(
        tx,
        "UPDATE inode SET nlink = nlink + $2, mtime_s = $3, mtime_ns = $4, ctime_s = $3, ctime_ns = $4 WHERE ino = $1",
        &[&dir, &delta, &now.secs, &(now.nsecs as i32)],
    )
    .await?;
    Ok(())
}

/// An inode's links changed by `delta` (set to 0 if `zero`), ctime now; returns the new count.
pub(crate) async fn relink(tx: &Transaction<'_>, ino: i64, delta: i64, zero: bool, now: Timestamp) -> OpResult<i64> {
    let r = row(
        tx,
        "UPDATE inode SET nlink = CASE WHEN $5 THEN 0 ELSE nlink + $2 END, ctime_s = $3, ctime_ns = $4
         WHERE ino = $1 RETURNING nlink",
        &[&ino, &delta, &now.secs, &(now.nsecs as i32), &zero],
    )
    .await?;
    match r {
        Some(r) => Ok(r.try_get(0)?),
        None => Err(VfsError::Stale.into()),
    }
}

/// Sets only the ctime of `ino`.
pub(crate) async fn touch_ctime(tx: &Transaction<'_>, ino: i64, now: Timestamp) -> OpResult<()> {
    exec(
        tx,
        "UPDATE inode SET ctime_s = $2, ctime_ns = $3 WHERE ino = $1",
        &[&ino, &now.secs, &(now.nsecs as i32)],
    )
    .await?;
    Ok(())
}

/// Whether `dir` is `ancestor` or lies beneath it (walking `..` up to the top).
pub(crate) async fn is_within(tx: &Transaction<'_>, dir: i64, ancestor: i64) -> OpResult<bool> {
    let r = row(
        tx,
        "WITH RECURSIVE up(ino) AS (
             SELECT $1::bigint
             UNION
             SELECT d.parent FROM dentry d JOIN up ON d.ino = up.ino
         )
         SELECT EXISTS (SELECT 1 FROM up WHERE ino = $2)",
        &[&dir, &ancestor],
    )
    .await?;
    Ok(match r {
        Some(r) => r.try_get(0)?,
        None => false,
    })
}

/// Whether directory `dir` has any entry.
pub(crate) async fn has_entries(tx: &Transaction<'_>, dir: i64) -> OpResult<bool> {
    let r = row(tx, "SELECT EXISTS (SELECT 1 FROM dentry WHERE parent = $1)", &[&dir]).await?;
    Ok(match r {
        Some(r) => r.try_get(0)?,
        None => false,
    })
}

/// Drops the references of `ino`'s file blocks from block number `from` on; blocks no
/// longer referenced by anything are deleted, bytes first.
pub(crate) async fn drop_blocks<S: BlockStore>(tx: &Transaction<'_>, store: &S, ino: i64, from: i64) -> OpResult<()> {
    let dropped: Vec<i64> = rows(
        tx,
        "DELETE FROM file_block WHERE ino = $1 AND idx >= $2 RETURNING block",
        &[&ino, &from],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    unref_blocks(tx, store, &dropped).await
}

/// Takes one reference off each block in `ids` (a block may appear several times) and
/// deletes those left with none.
pub(crate) async fn unref_blocks<S: BlockStore>(tx: &Transaction<'_>, store: &S, ids: &[i64]) -> OpResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids_v = ids.to_vec();
    let mut dead = Vec::new();
    for r in rows(
        tx,
        "UPDATE block b SET refs = b.refs - c.n
         FROM (SELECT id, count(*) AS n FROM unnest($1::bigint[]) AS id GROUP BY id) c
         WHERE b.id = c.id
         RETURNING b.id, b.refs",
        &[&ids_v],
    )
    .await?
    {
        if r.try_get::<_, i64>(1)? == 0 {
            dead.push(r.try_get::<_, i64>(0)?);
        }
    }
    if !dead.is_empty() {
        store.delete(tx, &dead).await?;
        exec(tx, "DELETE FROM block WHERE id = ANY($1)", &[&dead]).await?;
    }
    Ok(())
}

/// Deletes inode `ino` and everything that hangs off it (blocks, xattrs). Its entries
/// must already be gone.
pub(crate) async fn reap<S: BlockStore>(tx: &Transaction<'_>, store: &S, ino: i64) -> OpResult<()> {
    drop_blocks(tx, store, ino, 0).await?;
    exec(tx, "DELETE FROM xattr WHERE ino = $1", &[&ino]).await?;
    exec(tx, "DELETE FROM inode WHERE ino = $1", &[&ino]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_cookies_are_stable_positive_and_above_the_fixed_ones() {
        assert_eq!(name_cookie(b"a"), name_cookie(b"a"));
        assert_ne!(name_cookie(b"a"), name_cookie(b"b"));
        for n in [&b""[..], b"a", b"ctl", &[0xff; 255]] {
            let c = name_cookie(n);
            assert!((16..1 << 62).contains(&c), "{n:?}: {c}");
        }
    }
}
