//! Change reports between mounts of one database: PostgreSQL `LISTEN/NOTIFY`, batched
//! through [`vfs_core::notify::Debouncer`], delivered to the mount's
//! [`vfs_core::Invalidator`].
//!
//! Invariant: every transaction that changes a name or an inode announces it with
//! `pg_notify` *inside* that transaction, so the announcement is delivered if and only
//! if the change committed, and after it did (PostgreSQL sends notifications at
//! commit). A mount ignores its own announcements (its kernel saw the change as it
//! happened) and turns the others' into kernel invalidations: an entry notice into
//! `inval_entry(parent, name)`, an inode notice into `inval_inode(ino, 0, 0)` (attributes
//! and cached pages). Nothing here ever blocks an operation: the listener has its own
//! connection and tasks on the I/O runtime; if that connection is lost it reconnects
//! every [`RECONNECT_PAUSE`], and what changed meanwhile is bounded by the kernel's
//! attribute and entry timeouts (1 s by default), as with no listener at all.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{AsyncMessage, Config, NoTls};
use vfs_core::notify::{Change, DebounceConfig, Debouncer, NotifyKey, Snapshot};
use vfs_core::{Ino, Invalidator};

use crate::db::{OpResult, exec};

/// The notification channel every mount of a database listens on.
pub(crate) const CHANNEL: &str = "vfs_pg";

/// Pause between attempts to (re)connect the listener.
pub(crate) const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Quiet time per notice before it is delivered: small, so another mount sees a change
/// well within a second; a burst on one key still leaves as one invalidation.
const DEBOUNCE_DELAY: Duration = Duration::from_millis(20);

/// Longest payload sent in one notification (PostgreSQL's limit is 8000 bytes); a
/// transaction with more notices sends several.
const MAX_PAYLOAD: usize = 7000;

/// What a transaction changed, as other mounts need to hear it (database inode numbers).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Note {
    /// The entry `name` in directory `parent` appeared, vanished or names another inode.
    Entry(i64, Vec<u8>),
    /// The inode's attributes or data changed.
    Inode(i64),
}

impl NotifyKey for Note {}

/// The debouncer's per-key payload: nothing (the receiver asks the database again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen;

impl Snapshot for Seen {
    fn is_dir(&self) -> bool {
        false
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The payloads announcing `notes` from mount `mount`: `"<mount hex> <note>/<note>..."`,
/// a note being `i<ino>` or `e<parent>:<name hex>`, each payload at most [`MAX_PAYLOAD`].
pub(crate) fn payloads(mount: u64, notes: &[Note]) -> Vec<String> {
    let head = format!("{mount:016x} ");
    let mut out = Vec::new();
    let mut cur = head.clone();
    for n in notes {
        let item = match n {
            Note::Entry(p, name) => format!("e{p}:{}", hex(name)),
            Note::Inode(i) => format!("i{i}"),
        };
        if cur.len() > head.len() && cur.len() + 1 + item.len() > MAX_PAYLOAD {
            out.push(std::mem::replace(&mut cur, head.clone()));
        }
        if cur.len() > head.len() {
            cur.push('/');
        }
        cur.push_str(&item);
    }
    if cur.len() > head.len() {
        out.push(cur);
    }
    out
}

/// The sender and notes of one payload; `None` if it is not one of ours.
pub(crate) fn parse(payload: &str) -> Option<(u64, Vec<Note>)> {
    let (mount, rest) = payload.split_once(' ')?;
    let mount = u64::from_str_radix(mount, 16).ok()?;
    let mut notes = Vec::new();
    for item in rest.split('/') {
        if let Some(i) = item.strip_prefix('i') {
            notes.push(Note::Inode(i.parse().ok()?));
        } else if let Some(e) = item.strip_prefix('e') {
            let (p, name) = e.split_once(':')?;
            notes.push(Note::Entry(p.parse().ok()?, unhex(name)?));
        } else {
            return None;
        }
    }
    Some((mount, notes))
}

/// Announces `notes` inside the transaction `tx` (delivered when it commits).
pub(crate) async fn announce<C: deadpool_postgres::GenericClient>(c: &C, mount: u64, notes: &[Note]) -> OpResult<()> {
    for p in payloads(mount, notes) {
        exec(c, "SELECT pg_notify($1, $2)::text", &[&CHANNEL, &p]).await?;
    }
    Ok(())
}

/// What the listener needs to turn a database inode into the number the kernel knows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InoMap {
    /// The database inode served as [`Ino::ROOT`].
    pub(crate) root: i64,
}

impl InoMap {
    fn vfs(&self, n: i64) -> Ino {
        if n == self.root { Ino::ROOT } else { Ino(n as u64) }
    }
}

/// Starts, on `io`, the listener of mount `mount`: other mounts' notices, debounced,
/// become calls of `inv`. Runs until the I/O runtime shuts down (the `PgFs` is dropped).
pub(crate) fn start(io: &tokio::runtime::Handle, cfg: Config, mount: u64, map: InoMap, inv: Arc<dyn Invalidator>) {
    let config = DebounceConfig {
        delay: DEBOUNCE_DELAY,
        linger: Duration::from_millis(5),
        ..DebounceConfig::default()
    };
    let (debouncer, mut batches, task) = Debouncer::<Note, Seen>::new(config);
    io.spawn(task.run());
    io.spawn(async move {
        while let Some(batch) = batches.next().await {
            for change in batch {
                let note = match change {
                    Change::Create { key, .. } | Change::Update { key, .. } | Change::Remove { key } => key,
                    Change::Rename { to, .. } => to,
                };
                match note {
                    Note::Entry(parent, name) => inv.inval_entry(map.vfs(parent), OsStr::from_bytes(&name)),
                    Note::Inode(ino) => inv.inval_inode(map.vfs(ino), 0, 0),
                }
            }
        }
    });
    io.spawn(async move {
        loop {
            match listen(&cfg, mount, &debouncer).await {
                Ok(()) => tracing::debug!("vfs-pg: listener connection ended; reconnecting"),
                Err(e) => tracing::debug!(error = %e, "vfs-pg: listener connection failed; retrying"),
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    });
}

/// One listener connection: `LISTEN`, then every notice of another mount into
/// `debouncer`, until the connection ends.
async fn listen(cfg: &Config, mount: u64, debouncer: &Debouncer<Note, Seen>) -> Result<(), tokio_postgres::Error> {
    let (client, mut conn) = cfg.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
    let driver = tokio::spawn(async move {
        while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "vfs-pg: listener connection error");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    while let Some(payload) = rx.recv().await {
        let Some((from, notes)) = parse(&payload) else {
            tracing::debug!(payload, "vfs-pg: notification not understood");
            continue;
        };
        if from == mount {
            continue;
        }
        for note in notes {
            if debouncer.send(Change::Update { key: note, attrs: Seen }).await.is_err() {
                return Ok(());
            }
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_back_to_the_notes_they_carry() {
        let notes = vec![
            Note::Entry(7, b"a name/with:odd\xffbytes".to_vec()),
            Note::Inode(42),
            Note::Entry(1, Vec::new()),
        ];
        let p = payloads(0xabc, &notes);
        assert_eq!(p.len(), 1);
        assert_eq!(parse(&p[0]), Some((0xabc, notes)));
    }

    #[test]
    fn long_announcements_are_split_under_the_server_limit() {
        let notes: Vec<Note> = (0..40).map(|i| Note::Entry(i, vec![b'x'; 255])).collect();
        let p = payloads(1, &notes);
        assert!(p.len() > 1);
        let mut back = Vec::new();
        for s in &p {
            assert!(s.len() <= MAX_PAYLOAD, "{}", s.len());
            back.extend(parse(s).expect("parse").1);
        }
        assert_eq!(back, notes);
    }

    #[test]
    fn foreign_payloads_are_not_understood() {
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("zz i1"), None);
        assert_eq!(parse("01 x1"), None);
        assert_eq!(parse("01 e1:abc"), None);
    }
}
