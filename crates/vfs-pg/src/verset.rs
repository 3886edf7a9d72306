//! Modules and versets: the mount root lists modules, a module lists its versets, a
//! verset is one whole tree; `cpverset` makes a new verset as a copy of another.
//!
//! Invariant: every inode of a verset carries that verset's id (`inode.verset`), and only
//! the mount root and the module directories carry none. A copy copies rows only:
//! inodes (new numbers from the sequence), entries, xattrs and `file_block` rows, and adds
//! one reference to each shared block per copied `file_block` row, so after the copy
//! `block.refs` is still exactly the number of rows naming each block. A write to a
//! shared block later replaces it by a new block for that file only (blocks are
//! immutable), which is what keeps two versets independent.

use deadpool_postgres::Transaction;
use vfs_core::{FileType, RequestCtx, Timestamp, VfsError};

use crate::db::{OpError, OpResult, exec, row};
use crate::tree::{NewInode, add_entry, insert_inode, touch_dir};

/// The mount root's inode number in the database.
pub(crate) const MOUNT_ROOT: i64 = 1;

/// A module or verset number from a directory name: decimal, 1 or more.
pub(crate) fn number(name: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(name).ok()?;
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok().filter(|n| *n > 0)
}

/// Makes module `number` (a directory in the mount root); returns its inode.
pub(crate) async fn create_module(
    tx: &Transaction<'_>,
    number: i64,
    ctx: &RequestCtx,
    perm: u32,
    now: Timestamp,
) -> OpResult<i64> {
    let ino = insert_inode(tx, &dir_spec(ctx, perm, None), now).await?;
    add_entry(tx, MOUNT_ROOT, number.to_string().as_bytes(), ino).await?;
    touch_dir(tx, MOUNT_ROOT, 1, now).await?;
    exec(tx, "INSERT INTO module (number, ino) VALUES ($1, $2)", &[&number, &ino]).await?;
    Ok(ino)
}

/// Makes an empty verset `number` in module `module` (directory `module_ino`); returns
/// the verset's root inode.
pub(crate) async fn create_verset(
    tx: &Transaction<'_>,
    module: i64,
    module_ino: i64,
    number: i64,
    ctx: &RequestCtx,
    perm: u32,
    now: Timestamp,
) -> OpResult<i64> {
    let id = new_verset_id(tx).await?;
    let root = insert_inode(tx, &dir_spec(ctx, perm, Some(id)), now).await?;
    add_entry(tx, module_ino, number.to_string().as_bytes(), root).await?;
    touch_dir(tx, module_ino, 1, now).await?;
    exec(
        tx,
        "INSERT INTO verset (id, module, number, root) VALUES ($1, $2, $3, $4)",
        &[&id, &module, &number, &root],
    )
    .await?;
    Ok(root)
}

fn dir_spec(ctx: &RequestCtx, perm: u32, verset: Option<i64>) -> NewInode<'static> {
    NewInode {
        kind: FileType::Directory,
        perm,
        uid: ctx.uid,
        gid: ctx.gid,
        rdev: 0,
        verset,
        target: None,
    }
}

async fn new_verset_id(tx: &Transaction<'_>) -> OpResult<i64> {
    match row(tx, "SELECT nextval(pg_get_serial_sequence('verset', 'id'))", &[]).await? {
        Some(r) => Ok(r.try_get(0)?),
        None => Err(VfsError::Io("no verset id".into()).into()),
    }
}

/// The module whose directory is `ino`, if it is one.
pub(crate) async fn module_of_dir(tx: &Transaction<'_>, ino: i64) -> OpResult<Option<i64>> {
    Ok(
        match row(tx, "SELECT number FROM module WHERE ino = $1", &[&ino]).await? {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        },
    )
}

/// The root inode of verset `number` of module `module`.
pub(crate) async fn verset_root(
    tx: &impl deadpool_postgres::GenericClient,
    module: i64,
    number: i64,
) -> OpResult<Option<(i64, i64)>> {
    Ok(
        match row(
            tx,
            "SELECT id, root FROM verset WHERE module = $1 AND number = $2",
            &[&module, &number],
        )
        .await?
        {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
            None => None,
        },
    )
}

/// A command written to the control file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `cpverset V` (module 1) or `cpverset M V`: copy verset V of module M into the next
    /// verset number of that module.
    CpVerset {
        /// Module number.
        module: i64,
        /// Verset to copy.
        verset: i64,
    },
}

impl Command {
    /// Parses one line written to `ctl`.
    pub fn parse(text: &[u8]) -> Result<Command, VfsError> {
        let text = std::str::from_utf8(text).map_err(|_| VfsError::Invalid("ctl: not UTF-8"))?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let num = |w: &str| number(w.as_bytes()).ok_or(VfsError::Invalid("ctl: a number must be 1 or more"));
        match words.as_slice() {
            ["cpverset", v] => Ok(Command::CpVerset {
                module: 1,
                verset: num(v)?,
            }),
            ["cpverset", m, v] => Ok(Command::CpVerset {
                module: num(m)?,
                verset: num(v)?,
            }),
            _ => Err(VfsError::Invalid(
                "ctl: unknown command (expected: cpverset [MODULE] VERSET)",
            )),
        }
    }
}

/// Copies verset `verset` of module `module` into the next verset number of that module;
/// returns the new verset's number and the module's directory inode.
pub(crate) async fn cpverset(tx: &Transaction<'_>, module: i64, verset: i64, now: Timestamp) -> OpResult<(i64, i64)> {
    let module_ino: i64 = match row(tx, "SELECT ino FROM module WHERE number = $1", &[&module]).await? {
        Some(r) => r.try_get(0)?,
        None => return Err(OpError::Fs(VfsError::NotFound)),
    };
    let (src_id, src_root) = verset_root(tx, module, verset)
        .await?
        .ok_or(OpError::Fs(VfsError::NotFound))?;
    let next: i64 = match row(
        tx,
        "SELECT coalesce(max(number), 0) + 1 FROM verset WHERE module = $1",
        &[&module],
    )
    .await?
    {
        Some(r) => r.try_get(0)?,
        None => 1,
    };
    let dst_id = new_verset_id(tx).await?;
    // The map lives for this transaction only; statements that name it are not cached
    // (the table is new each time).
    tx.batch_execute("CREATE TEMP TABLE vfs_copy_map (old bigint PRIMARY KEY, new bigint NOT NULL) ON COMMIT DROP")
        .await?;
    tx.execute(
        "INSERT INTO vfs_copy_map SELECT ino, nextval('vfs_ino_seq') FROM inode WHERE verset = $1 AND nlink > 0",
        &[&src_id],
    )
    .await?;
    tx.execute(
        "INSERT INTO inode (ino, verset, kind, perm, nlink, uid, gid, size, rdev,
                            atime_s, atime_ns, mtime_s, mtime_ns, ctime_s, ctime_ns, target)
         SELECT m.new, $1, i.kind, i.perm, i.nlink, i.uid, i.gid, i.size, i.rdev,
                i.atime_s, i.atime_ns, i.mtime_s, i.mtime_ns, i.ctime_s, i.ctime_ns, i.target
         FROM inode i JOIN vfs_copy_map m ON m.old = i.ino",
        &[&dst_id],
    )
    .await?;
    tx.execute(
        "INSERT INTO dentry (parent, name, ino, cookie)
         SELECT p.new, d.name, c.new, d.cookie FROM dentry d
         JOIN vfs_copy_map p ON p.old = d.parent JOIN vfs_copy_map c ON c.old = d.ino",
        &[],
    )
    .await?;
    tx.execute(
        "INSERT INTO xattr (ino, name, value) SELECT m.new, x.name, x.value FROM xattr x JOIN vfs_copy_map m ON m.old = x.ino",
        &[],
    )
    .await?;
    tx.execute(
        "INSERT INTO file_block (ino, idx, block) SELECT m.new, f.idx, f.block FROM file_block f JOIN vfs_copy_map m ON m.old = f.ino",
        &[],
    )
    .await?;
    tx.execute(
        "UPDATE block b SET refs = b.refs + c.n
         FROM (SELECT f.block, count(*) AS n FROM file_block f JOIN vfs_copy_map m ON m.old = f.ino GROUP BY f.block) c
         WHERE b.id = c.block",
        &[],
    )
    .await?;
    let new_root: i64 = match tx
        .query_opt("SELECT new FROM vfs_copy_map WHERE old = $1", &[&src_root])
        .await?
    {
        Some(r) => r.try_get(0)?,
        None => return Err(VfsError::Io("the verset's root was not copied".into()).into()),
    };
    tx.batch_execute("DROP TABLE vfs_copy_map").await?;
    add_entry(tx, module_ino, next.to_string().as_bytes(), new_root).await?;
    touch_dir(tx, module_ino, 1, now).await?;
    exec(
        tx,
        "INSERT INTO verset (id, module, number, root) VALUES ($1, $2, $3, $4)",
        &[&dst_id, &module, &next, &new_root],
    )
    .await?;
    Ok((next, module_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_plain_decimals_from_one() {
        assert_eq!(number(b"1"), Some(1));
        assert_eq!(number(b"42"), Some(42));
        for bad in [&b"0"[..], b"01", b"-1", b"x", b"", b"1a", b"99999999999999999999"] {
            assert_eq!(number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ctl_commands_parse() {
        assert_eq!(
            Command::parse(b"cpverset 1\n").ok(),
            Some(Command::CpVerset { module: 1, verset: 1 })
        );
        assert_eq!(
            Command::parse(b"cpverset 3 7").ok(),
            Some(Command::CpVerset { module: 3, verset: 7 })
        );
        for bad in [&b"cpverset"[..], b"cpverset 0", b"cp 1", b"cpverset 1 2 3", b"\xff"] {
            assert!(Command::parse(bad).is_err(), "{bad:?}");
        }
    }
}
