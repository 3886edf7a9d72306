//! The consistency check: what must hold of the rows after any sequence of whole
//! operations, from any number of mounts.
//!
//! Invariant: `check` (run by `PgFs::fsck`) reads one `REPEATABLE READ` snapshot and changes nothing. It
//! reports a problem for every rule broken: an entry whose inode is missing or whose
//! parent is not a directory; an inode whose link count differs from its entries (a
//! directory: 2 + its subdirectories, one name; a non-directory: its names); a directory
//! not reachable from the mount root (a cycle or a detached subtree); an inode in
//! another verset than its parent directory; a file block row naming a block that does
//! not exist or lying past the file's end; a block whose reference count differs from
//! the rows naming it (an unreferenced block is one whose count is 0); a block without
//! bytes, or bytes without a block (PostgreSQL store). Inodes with no name and no links
//! (kept by an open handle, or left by a mount that died) are counted as orphans, not
//! problems: they are what an unlinked-but-open file is.

use std::fmt;

use deadpool_postgres::Pool;
use tokio_postgres::IsolationLevel;

use crate::db::{OpError, OpResult, rows};

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Inodes.
    pub inodes: u64,
    /// Directory entries.
    pub entries: u64,
    /// Blocks.
    pub blocks: u64,
    /// Inodes without names or links.
    pub orphans: u64,
    /// One line per broken rule (at most [`MAX_LINES`] per rule).
    pub problems: Vec<String>,
}

/// Most lines reported per rule.
pub const MAX_LINES: i64 = 20;

impl Report {
    /// No rule is broken.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fsck: {} inodes, {} entries, {} blocks, {} orphans: {}",
            self.inodes,
            self.entries,
            self.blocks,
            self.orphans,
            if self.is_clean() {
                "clean".to_string()
            } else {
                format!("{} problems", self.problems.len())
            }
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Each rule: a query returning one text column per problem, and what it means.
const RULES: &[(&str, &str)] = &[
    (
        "entry names a missing inode",
        "SELECT format('entry %s/%s -> %s', d.parent, encode(d.name, 'escape'), d.ino)
         FROM dentry d LEFT JOIN inode i ON i.ino = d.ino WHERE i.ino IS NULL",
    ),
    (
        "entry in a non-directory",
        "SELECT format('entry %s/%s: parent is kind %s', d.parent, encode(d.name, 'escape'), coalesce(p.kind::text, 'missing'))
         FROM dentry d LEFT JOIN inode p ON p.ino = d.parent WHERE p.kind IS DISTINCT FROM 2",
    ),
    (
        "link count differs from entries",
        "WITH names AS (SELECT ino, count(*) AS n FROM dentry GROUP BY ino),
              subdirs AS (SELECT d.parent AS ino, count(*) AS n FROM dentry d JOIN inode c ON c.ino = d.ino
                          WHERE c.kind = 2 GROUP BY d.parent)
         SELECT format('inode %s (kind %s): nlink %s, names %s, subdirectories %s', i.ino, i.kind, i.nlink,
                       coalesce(n.n, 0), coalesce(s.n, 0))
         FROM inode i LEFT JOIN names n ON n.ino = i.ino LEFT JOIN subdirs s ON s.ino = i.ino
         WHERE CASE
             WHEN i.kind = 2 AND i.nlink = 0 THEN coalesce(n.n, 0) <> 0 OR coalesce(s.n, 0) <> 0
             WHEN i.kind = 2 THEN i.nlink <> 2 + coalesce(s.n, 0)
                                  OR coalesce(n.n, 0) <> CASE WHEN i.ino = 1 THEN 0 ELSE 1 END
             ELSE i.nlink <> coalesce(n.n, 0)
         END",
    ),
    (
        "directory not reachable from the root (a cycle or a detached tree)",
        "WITH RECURSIVE down(ino) AS (
             SELECT 1::bigint
             UNION
             SELECT d.ino FROM dentry d JOIN down ON d.parent = down.ino
         )
         SELECT format('inode %s (kind %s, nlink %s)', i.ino, i.kind, i.nlink)
         FROM inode i WHERE i.nlink > 0 AND NOT EXISTS (SELECT 1 FROM down WHERE down.ino = i.ino)",
    ),
    (
        "inode in another verset than its directory",
        "SELECT format('entry %s/%s: verset %s in a directory of verset %s', d.parent, encode(d.name, 'escape'),
                       coalesce(c.verset::text, 'none'), coalesce(p.verset::text, 'none'))
         FROM dentry d JOIN inode c ON c.ino = d.ino JOIN inode p ON p.ino = d.parent
         WHERE p.verset IS NOT NULL AND c.verset IS DISTINCT FROM p.verset",
    ),
    (
        "file block names a missing block",
        "SELECT format('inode %s block %s -> %s', f.ino, f.idx, f.block)
         FROM file_block f LEFT JOIN block b ON b.id = f.block WHERE b.id IS NULL",
    ),
    (
        "file block past the end of its file, or of a file that has no data",
        "SELECT format('inode %s (kind %s, size %s): block %s holds %s bytes', i.ino, i.kind, i.size, f.idx, b.len)
         FROM file_block f JOIN inode i ON i.ino = f.ino JOIN block b ON b.id = f.block,
              (SELECT value::bigint AS bs FROM vfs_meta WHERE key = 'block_size') m
         WHERE i.kind <> 1 OR f.idx * m.bs + b.len > i.size OR b.len > m.bs",
    ),
    (
        "block reference count differs from its rows (0: unreferenced)",
        "SELECT format('block %s: refs %s, rows %s', b.id, b.refs, coalesce(r.n, 0))
         FROM block b LEFT JOIN (SELECT block, count(*) AS n FROM file_block GROUP BY block) r ON r.block = b.id
         WHERE b.refs <> coalesce(r.n, 0) OR b.refs = 0",
    ),
];

/// Checks the whole database behind `pool`, with the block store's own rules `extra`
/// ([`BlockStore::fsck_rules`](crate::BlockStore::fsck_rules)).
pub(crate) async fn check(pool: &Pool, extra: &[(&str, &str)]) -> OpResult<Report> {
    let mut client = pool.get().await.map_err(|e| OpError::Pool(e.to_string()))?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut report = Report::default();
    let counts = rows(
        &tx,
        "SELECT (SELECT count(*) FROM inode), (SELECT count(*) FROM dentry), (SELECT count(*) FROM block),
                (SELECT count(*) FROM inode i WHERE i.nlink = 0 AND NOT EXISTS (SELECT 1 FROM dentry d WHERE d.ino = i.ino))",
        &[],
    )
    .await?;
    if let Some(r) = counts.first() {
        report.inodes = r.try_get::<_, i64>(0)? as u64;
        report.entries = r.try_get::<_, i64>(1)? as u64;
        report.blocks = r.try_get::<_, i64>(2)? as u64;
        report.orphans = r.try_get::<_, i64>(3)? as u64;
    }
    for (rule, sql) in RULES.iter().chain(extra) {
        let limited = format!("{sql} LIMIT {MAX_LINES}");
        for r in tx.query(limited.as_str(), &[]).await? {
            let what: String = r.try_get(0)?;
            report.problems.push(format!("{rule}: {what}"));
        }
    }
    tx.commit().await?;
    Ok(report)
}
