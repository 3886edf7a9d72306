//! Block bytes in an S3 bucket (the `object_store` crate), metadata in PostgreSQL.
//!
//! Invariant: an object is written once and never changed. Block `id` lives at key
//! `PREFIX/blocks/ID` (ID in 16 hex digits); block ids come from a database sequence and
//! are never reused, so a new version of a block is always a new object. `put` uploads
//! before the transaction that adds the block's row commits: if the transaction rolls
//! back or the process dies first, the object is an orphan (no row names it), never a
//! row without its object. `delete` deletes no object: it records the block in
//! `block_gone` in the same transaction, and [`S3BlockStore::gc`] removes objects no row
//! refers to once they (and their `block_gone` record) are older than a grace period.
//! Every call to the store is bounded: a per-request timeout, a bounded number of
//! retries, and a deadline over the whole call, so a dead store is `EIO` in bounded time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use deadpool_postgres::Transaction;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::blocks::{BlockStore, StoreError};
use crate::db::{IoRuntime, exec, rows};

/// How to reach a bucket.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// The bucket's name.
    pub bucket: String,
    /// A key prefix inside the bucket (`""` for none; no leading or trailing `/`).
    pub prefix: String,
    /// The endpoint (`http://127.0.0.1:8333` for SeaweedFS); `None`: AWS itself, or
    /// `AWS_ENDPOINT_URL` from the environment.
    pub endpoint: Option<String>,
    /// Access key and secret; `None`: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
    /// (and the rest of the usual AWS environment) decide.
    pub credentials: Option<(String, String)>,
    /// The region; `None`: `AWS_REGION` / `AWS_DEFAULT_REGION` from the environment, else
    /// `us-east-1`.
    pub region: Option<String>,
    /// Longest wait for one HTTP request.
    pub request_timeout: Duration,
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Retries of one request (with backoff) after a transient failure.
    pub retries: usize,
    /// Longest wait for one whole store call (every request and retry of it): past it
    /// the operation answers `EIO`.
    pub deadline: Duration,
}

impl S3Options {
    /// Options for `bucket` with the default bounds: 10 s per request, 3 s to connect,
    /// 2 retries, 20 s per call.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Options {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            credentials: None,
            region: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            retries: 2,
            deadline: Duration::from_secs(20),
        }
    }

    /// Parses `s3://BUCKET[/PREFIX]`.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("block store {url:?} is not s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("block store {url:?} names no bucket"));
        }
        let mut o = S3Options::new(bucket);
        o.prefix = prefix.trim_matches('/').to_string();
        Ok(o)
    }
}

/// What [`S3BlockStore::gc`] found and did.
#[derive(Debug, Default, Clone)]
pub struct GcReport {
    /// Block objects under the store's prefix.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Objects a block row refers to.
    pub referenced: usize,
    /// Removed objects that no row ever committed (uploads of rolled-back or crashed
    /// transactions): `(block id, bytes)`.
    pub removed_orphans: Vec<(i64, u64)>,
    /// Removed objects of blocks whose deletion committed: `(block id, bytes)`.
    pub removed_deleted: Vec<(i64, u64)>,
    /// Objects no row refers to, kept because they are younger than the grace period.
    pub kept_young: usize,
    /// Blocks a row refers to whose object is missing (data loss; should be empty).
    pub missing: Vec<i64>,
    /// Other keys under the prefix (left alone; SeaweedFS lists an emptied directory).
    pub foreign: usize,
}

impl GcReport {
    /// Objects removed in all.
    pub fn removed(&self) -> usize {
        self.removed_orphans.len() + self.removed_deleted.len()
    }
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sum = |v: &[(i64, u64)]| v.iter().map(|(_, b)| b).sum::<u64>();
        write!(
            f,
            "gc: {} objects ({} bytes), {} referenced; removed {} orphans ({} bytes) and {} deleted blocks ({} bytes); kept {} younger than the grace; {} referenced blocks missing; {} other keys",
            self.objects,
            self.bytes,
            self.referenced,
            self.removed_orphans.len(),
            sum(&self.removed_orphans),
            self.removed_deleted.len(),
            sum(&self.removed_deleted),
            self.kept_young,
            self.missing.len(),
            self.foreign
        )
    }
}

/// Block bytes as objects of an S3 bucket. See the module documentation.
pub struct S3BlockStore {
    store: Arc<AmazonS3>,
    /// `PREFIX/blocks` (or `blocks`).
    dir: String,
    location: String,
    deadline: Duration,
    // Every request runs here, whatever runtime (or none) the caller has.
    io: IoRuntime,
}

impl std::fmt::Debug for S3BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlockStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// One line of an object store error (their messages nest their causes over lines).
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

impl S3BlockStore {
    /// A store for `opts`, credentials from the usual AWS environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...). Makes no request: see
    /// [`S3BlockStore::check`].
    pub fn new(opts: &S3Options) -> Result<Self, StoreError> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&opts.bucket);
        let plain_http = opts.endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        if let Some(e) = &opts.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some((key, secret)) = &opts.credentials {
            b = b.with_access_key_id(key).with_secret_access_key(secret);
        }
        if let Some(r) = &opts.region {
            b = b.with_region(r);
        }
        let b = b
            .with_client_options(
                // Replaces the builder's client options: allow_http is set here.
                ClientOptions::new()
                    .with_allow_http(plain_http)
                    .with_timeout(opts.request_timeout)
                    .with_connect_timeout(opts.connect_timeout),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: opts.retries,
                retry_timeout: opts.deadline,
            });
        let store = b
            .build()
            .map_err(|e| StoreError::Other(format!("bucket {}: {}", opts.bucket, one_line(&e))))?;
        let dir = if opts.prefix.is_empty() {
            "blocks".to_string()
        } else {
            format!("{}/blocks", opts.prefix)
        };
        let location = if opts.prefix.is_empty() {
            format!("s3://{}", opts.bucket)
        } else {
            format!("s3://{}/{}", opts.bucket, opts.prefix)
        };
        let io = IoRuntime::new().map_err(|e| StoreError::Other(format!("cannot start the S3 runtime: {e}")))?;
        Ok(S3BlockStore {
            store: Arc::new(store),
            dir,
            location,
            deadline: opts.deadline,
            io,
        })
    }

    fn key(&self, id: i64) -> Path {
        Path::from(format!("{}/{:016x}", self.dir, id))
    }

    /// The block id of a key of this store, `None` for any other key.
    fn id_of(&self, key: &Path) -> Option<i64> {
        let s = key.as_ref();
        let name = s.strip_prefix(self.dir.as_str())?.strip_prefix('/')?;
        if name.len() != 16 {
            return None;
        }
        i64::from_str_radix(name, 16).ok()
    }

    /// Runs `f` on the store's own runtime, bounded by the deadline.
    async fn bounded<T, F>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let deadline = self.deadline;
        let task = self.io.handle().spawn(async move {
            match tokio::time::timeout(deadline, f).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Other(format!("no answer within {deadline:?}"))),
            }
        });
        match task.await {
            Ok(r) => r.map_err(|e| match e {
                StoreError::Other(m) => StoreError::Other(format!("{}: {what}: {m}", self.location)),
                other => other,
            }),
            Err(e) => Err(StoreError::Other(format!(
                "{}: {what}: task failed: {e}",
                self.location
            ))),
        }
    }

    /// Checks at start that the bucket exists and takes these credentials: lists the
    /// store's prefix, then writes and deletes a probe object. The error is one line.
    pub async fn check(&self) -> Result<(), StoreError> {
        let store = self.store.clone();
        let dir = Path::from(self.dir.clone());
        // Beside the blocks, not among them (a store may list an emptied directory).
        let probe = Path::from(format!("{}.probe", self.dir));
        self.bounded("check", async move {
            store
                .list_with_delimiter(Some(&dir))
                .await
                .map_err(|e| StoreError::Other(format!("cannot list the bucket: {}", one_line(&e))))?;
            store
                .put(&probe, PutPayload::from_static(b"vfs-pg"))
                .await
                .map_err(|e| StoreError::Other(format!("cannot write to the bucket: {}", one_line(&e))))?;
            store
                .delete(&probe)
                .await
                .map_err(|e| StoreError::Other(format!("cannot delete from the bucket: {}", one_line(&e))))?;
            Ok(())
        })
        .await
    }

    /// Every object under the store's prefix: `(key, block id if a block key, bytes, age)`.
    async fn list(&self) -> Result<Vec<(Path, Option<i64>, u64, Duration)>, StoreError> {
        let store = self.store.clone();
        let dir = Path::from(self.dir.clone());
        let listed = self
            .bounded("list", async move {
                store
                    .list_with_delimiter(Some(&dir))
                    .await
                    .map_err(|e| StoreError::Other(one_line(&e)))
            })
            .await?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok(listed
            .objects
            .into_iter()
            .map(|m| {
                let ms = u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0);
                let age = now.saturating_sub(Duration::from_millis(ms));
                let id = self.id_of(&m.location);
                (m.location, id, m.size, age)
            })
            .collect())
    }

    /// Removes objects no committed row refers to, if older than `grace` (an object
    /// whose block's deletion committed: if that too is older than `grace`), and the
    /// `block_gone` records of removed or absent objects; reports what it found and did.
    /// With `dry_run` it removes nothing and reports what it would remove. Safe while
    /// mounts are active as long as no transaction runs longer than `grace`: an upload
    /// not yet committed is younger than that.
    pub async fn gc(&self, db_url: &str, grace: Duration, dry_run: bool) -> Result<GcReport, StoreError> {
        let cfg = crate::db::parse_url(db_url).map_err(StoreError::Other)?;
        let io = IoRuntime::new().map_err(|e| StoreError::Other(e.to_string()))?;
        let pool = crate::db::pool(cfg, &io, 1, Duration::from_secs(10)).map_err(StoreError::Other)?;
        let mut client = pool.get().await.map_err(|e| StoreError::Other(e.to_string()))?;
        let recorded = client
            .query_opt("SELECT value FROM vfs_meta WHERE key = 'blocks'", &[])
            .await?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?;
        if recorded.as_deref() != Some(self.location.as_str()) {
            return Err(StoreError::Other(format!(
                "the database keeps its blocks in {}, not in {}",
                recorded.as_deref().unwrap_or("(not recorded)"),
                self.location
            )));
        }
        // List first, then read the rows: an object uploaded after the listing is not
        // looked at; one listed and not referenced by a committed row now is either an
        // orphan or belongs to a transaction still running (younger than the grace).
        let objects = self.list().await?;
        let ids: Vec<i64> = objects.iter().filter_map(|(_, id, _, _)| *id).collect();
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .start()
            .await?;
        let referenced: HashSet<i64> = rows(&tx, "SELECT id FROM block WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let gone: HashMap<i64, f64> = rows(
            &tx,
            "SELECT id, extract(epoch FROM clock_timestamp() - at)::float8 FROM block_gone",
            &[],
        )
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()?;
        let all_blocks: Vec<i64> = rows(&tx, "SELECT id FROM block", &[])
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        let listed: HashSet<i64> = ids.iter().copied().collect();
        let mut report = GcReport {
            objects: objects.iter().filter(|o| o.1.is_some()).count(),
            bytes: objects.iter().filter(|o| o.1.is_some()).map(|o| o.2).sum(),
            ..GcReport::default()
        };
        // A block committed after the listing is not missing: ask for those one by one.
        for id in all_blocks.into_iter().filter(|id| !listed.contains(id)) {
            let store = self.store.clone();
            let key = self.key(id);
            let found = self
                .bounded("head", async move {
                    match store.head(&key).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::NotFound { .. }) => Ok(false),
                        Err(e) => Err(StoreError::Other(one_line(&e))),
                    }
                })
                .await?;
            if !found {
                report.missing.push(id);
            }
        }
        report.missing.sort_unstable();
        let mut doomed: Vec<(Path, i64, u64, bool)> = Vec::new();
        for (key, id, size, age) in objects {
            let Some(id) = id else {
                report.foreign += 1;
                continue;
            };
            if referenced.contains(&id) {
                report.referenced += 1;
                continue;
            }
            let gone_for = gone.get(&id).map(|s| Duration::from_secs_f64(s.max(0.0)));
            if age < grace || gone_for.is_some_and(|g| g < grace) {
                report.kept_young += 1;
                continue;
            }
            doomed.push((key, id, size, gone_for.is_some()));
        }
        for (key, id, size, was_deleted) in doomed {
            if !dry_run {
                let store = self.store.clone();
                self.bounded("delete", async move {
                    match store.delete(&key).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(StoreError::Other(one_line(&e))),
                    }
                })
                .await?;
                tracing::debug!(id, size, "vfs-pg gc: removed object");
            }
            if was_deleted {
                report.removed_deleted.push((id, size));
            } else {
                report.removed_orphans.push((id, size));
            }
        }
        if !dry_run {
            // Records whose object is gone now (removed above, or never listed) and old
            // enough that no upload of theirs can still be running.
            let stale: Vec<i64> = gone
                .iter()
                .filter(|(id, secs)| !listed.contains(id) && Duration::from_secs_f64(secs.max(0.0)) >= grace)
                .map(|(id, _)| *id)
                .chain(report.removed_deleted.iter().map(|(id, _)| *id))
                .collect();
            exec(&client, "DELETE FROM block_gone WHERE id = ANY($1)", &[&stale])
                .await
                .map_err(db_err)?;
        }
        Ok(report)
    }
}

fn db_err(e: crate::db::OpError) -> StoreError {
    match e {
        crate::db::OpError::Db(e) => StoreError::Db(e),
        other => StoreError::Other(format!("{other:?}")),
    }
}

impl BlockStore for S3BlockStore {
    fn name(&self) -> &str {
        "s3"
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put(&self, _tx: &Transaction<'_>, blocks: &[(i64, &[u8])]) -> Result<(), StoreError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let uploads: Vec<(Path, Bytes)> = blocks
            .iter()
            .map(|(id, data)| (self.key(*id), Bytes::copy_from_slice(data)))
            .collect();
        let store = self.store.clone();
        self.bounded("put", async move {
            let mut tasks = Vec::with_capacity(uploads.len());
            for (key, data) in uploads {
                let store = store.clone();
                tasks.push(tokio::spawn(
                    async move { store.put(&key, PutPayload::from(data)).await },
                ));
            }
            let mut first_err = None;
            for t in tasks {
                match t.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        first_err.get_or_insert_with(|| one_line(&e));
                    }
                    Err(e) => {
                        first_err.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            match first_err {
                None => Ok(()),
                Some(e) => Err(StoreError::Other(e)),
            }
        })
        .await
    }

    async fn get(&self, _tx: &Transaction<'_>, ids: &[i64]) -> Result<HashMap<i64, Bytes>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut uniq: Vec<i64> = ids.to_vec();
        uniq.sort_unstable();
        uniq.dedup();
        let keys: Vec<(i64, Path)> = uniq.iter().map(|id| (*id, self.key(*id))).collect();
        let store = self.store.clone();
        self.bounded("get", async move {
            let mut tasks = Vec::with_capacity(keys.len());
            for (id, key) in keys {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let r = match store.get(&key).await {
                        Ok(g) => g.bytes().await,
                        Err(e) => Err(e),
                    };
                    (id, r)
                }));
            }
            let mut out = HashMap::with_capacity(tasks.len());
            for t in tasks {
                match t.await {
                    Ok((id, Ok(b))) => {
                        out.insert(id, b);
                    }
                    Ok((id, Err(object_store::Error::NotFound { .. }))) => return Err(StoreError::Missing(id)),
                    Ok((_, Err(e))) => return Err(StoreError::Other(one_line(&e))),
                    Err(e) => return Err(StoreError::Other(e.to_string())),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, tx: &Transaction<'_>, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        exec(
            tx,
            "INSERT INTO block_gone (id) SELECT DISTINCT unnest($1::bigint[]) ON CONFLICT (id) DO NOTHING",
            &[&ids],
        )
        .await
        .map_err(db_err)?;
        Ok(())
    }

    fn fsck_rules(&self) -> &'static [(&'static str, &'static str)] {
        S3_STORE_RULES
    }
}

/// Rules of the S3 block store (whether every row's object exists is [`S3BlockStore::gc`]'s
/// `missing`, which reads the bucket).
const S3_STORE_RULES: &[(&str, &str)] = &[
    (
        "block bytes in the database of an S3 store",
        "SELECT format('block_data %s', id) FROM block_data",
    ),
    (
        "a deleted block that still has a row",
        "SELECT format('block_gone %s', g.id) FROM block_gone g JOIN block b ON b.id = g.id",
    ),
];
