//! Block storage behind a small trait: where the bytes of file blocks live.
//!
//! Invariant: a block is immutable once put. Which blocks exist, how many files refer to
//! each (`block.refs`) and which file block each one is (`file_block`) is metadata kept in
//! PostgreSQL by the filesystem itself, in the operation's transaction; a [`BlockStore`]
//! only keeps bytes by block id. `put` is called after the block's row exists in the
//! transaction and `delete` before it is removed, so with [`PgBlockStore`] bytes and rows
//! commit or roll back together. A store outside the database (an object store) uploads
//! in `put` before the row commits and deletes nothing in `delete` until the transaction
//! is known to have committed (a crash leaves an orphan object, never a row without its
//! bytes); collecting orphans is that store's garbage collector's job.

use std::collections::HashMap;
use std::future::Future;

use bytes::Bytes;
use deadpool_postgres::Transaction;

use crate::db::{exec, rows};

/// Why a block store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (for the PostgreSQL store).
    #[error("{0}")]
    Db(#[from] tokio_postgres::Error),
    /// A block that a row refers to has no bytes: the store lost it.
    #[error("block {0} is missing from the block store")]
    Missing(i64),
    /// Anything else the store reports.
    #[error("{0}")]
    Other(String),
}

/// Where block bytes are kept.
pub trait BlockStore: Send + Sync + 'static {
    /// A short name of the store for diagnostics (`"pg"`).
    fn name(&self) -> &str;

    /// Where this store keeps the bytes (`"pg"`, `"s3://bucket/prefix"`): recorded in the
    /// database by its first opener, and a later opener naming another place is refused,
    /// so one database never has its blocks in two stores.
    fn location(&self) -> String {
        self.name().to_string()
    }

    /// Stores new immutable blocks, `(id, bytes)`; each id's `block` row exists in `tx`.
    fn put(&self, tx: &Transaction<'_>, blocks: &[(i64, &[u8])])
    -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The bytes of blocks `ids` as of `tx`'s snapshot. Every id must be found.
    fn get(
        &self,
        tx: &Transaction<'_>,
        ids: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, Bytes>, StoreError>> + Send;

    /// Forgets blocks `ids`, whose reference count reached zero in `tx`; called before
    /// their `block` rows are deleted in the same transaction.
    fn delete(&self, tx: &Transaction<'_>, ids: &[i64]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The store's own consistency rules for [`crate::fsck`]: `(rule, query)`, each
    /// query returning one text column per problem.
    fn fsck_rules(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
}

/// Block bytes in the `block_data` table of the same database: one row per block, so a
/// block's bytes commit and roll back with the metadata that refers to them.
#[derive(Debug, Default, Clone, Copy)]
pub struct PgBlockStore;

impl BlockStore for PgBlockStore {
    fn name(&self) -> &str {
        "pg"
    }

    async fn put(&self, tx: &Transaction<'_>, blocks: &[(i64, &[u8])]) -> Result<(), StoreError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = blocks.iter().map(|(id, _)| *id).collect();
        let data: Vec<&[u8]> = blocks.iter().map(|(_, d)| *d).collect();
        exec(
            tx,
            "INSERT INTO block_data (id, data) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
            &[&ids, &data],
        )
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn get(&self, tx: &Transaction<'_>, ids: &[i64]) -> Result<HashMap<i64, Bytes>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(out);
        }
        let ids_v = ids.to_vec();
        for r in rows(tx, "SELECT id, data FROM block_data WHERE id = ANY($1)", &[&ids_v])
            .await
            .map_err(store_err)?
        {
            let id: i64 = r.try_get(0)?;
            let data: Vec<u8> = r.try_get(1)?;
            out.insert(id, Bytes::from(data));
        }
        if let Some(missing) = ids.iter().find(|id| !out.contains_key(id)) {
            return Err(StoreError::Missing(*missing));
        }
        Ok(out)
    }

    async fn delete(&self, tx: &Transaction<'_>, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        exec(tx, "DELETE FROM block_data WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(store_err)?;
        Ok(())
    }

    fn fsck_rules(&self) -> &'static [(&'static str, &'static str)] {
        PG_STORE_RULES
    }
}

/// Rules of the PostgreSQL block store.
const PG_STORE_RULES: &[(&str, &str)] = &[
    (
        "block without bytes",
        "SELECT format('block %s', b.id) FROM block b LEFT JOIN block_data d ON d.id = b.id WHERE d.id IS NULL",
    ),
    (
        "bytes without a block, or of another length",
        "SELECT format('block_data %s: %s bytes, block says %s', d.id, length(d.data), coalesce(b.len::text, 'missing'))
         FROM block_data d LEFT JOIN block b ON b.id = d.id WHERE b.id IS NULL OR b.len <> length(d.data)",
    ),
];

fn store_err(e: crate::db::OpError) -> StoreError {
    match e {
        crate::db::OpError::Db(e) => StoreError::Db(e),
        other => StoreError::Other(format!("{other:?}")),
    }
}
