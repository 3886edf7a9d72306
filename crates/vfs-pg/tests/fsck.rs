//! The consistency check finds what it promises to find: each test plants one kind of
//! inconsistency with raw SQL in a database that was clean, and expects the check to
//! name that rule (and to have been clean before).

use vfs_core::{Ino, Name, OpenFlags, RequestCtx, VirtualFs};
use vfs_pg::testing::with_shared;
use vfs_pg::{PgFs, PgOptions, Root};

const CTX: RequestCtx = RequestCtx::ROOT;

fn nm(s: &str) -> Name<'_> {
    Name::new(s.as_ref()).expect("name")
}

/// A database with a small tree in verset 1 (a directory, a file with data, a hard
/// link); returns its URL. Checks that fsck is clean.
async fn populated() -> (String, PgFs) {
    let url = with_shared(|s| s.create_db()).expect("server").expect("database");
    let fs = PgFs::open(
        &url,
        PgOptions {
            root: Root::Verset { module: 1, verset: 1 },
            ..PgOptions::default()
        },
    )
    .await
    .expect("open");
    let d = fs.mkdir(&CTX, Ino::ROOT, nm("dir"), 0o755, 0).await.expect("mkdir");
    let (f, fh) = fs
        .create(&CTX, d.ino, nm("file"), 0o644, 0, OpenFlags::RDWR)
        .await
        .expect("create");
    fs.write(&CTX, f.ino, fh, 0, &vec![7u8; 200_000]).await.expect("write");
    fs.release(&CTX, f.ino, fh).await.expect("release");
    fs.link(&CTX, f.ino, Ino::ROOT, nm("link")).await.expect("link");
    let r = fs.fsck().await.expect("fsck");
    assert!(r.is_clean(), "clean before planting:\n{r}");
    assert!(r.blocks >= 4, "the file has blocks: {r}");
    (url, fs)
}

async fn plant(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let driver = tokio::spawn(conn);
    client.batch_execute(sql).await.expect("plant");
    drop(client);
    let _ = driver.await;
}

async fn expect_rule(sql: &str, rule: &str) {
    let (url, fs) = populated().await;
    plant(&url, sql).await;
    let r = fs.fsck().await.expect("fsck");
    assert!(
        r.problems.iter().any(|p| p.starts_with(rule)),
        "after `{sql}` fsck should report {rule:?}, got:\n{r}"
    );
}

#[tokio::test]
async fn wrong_link_count_is_found() {
    expect_rule(
        "UPDATE inode SET nlink = nlink + 1 WHERE kind = 1",
        "link count differs from entries",
    )
    .await;
}

#[tokio::test]
async fn unreferenced_block_is_found() {
    expect_rule(
        "INSERT INTO block (refs, len) VALUES (0, 1) RETURNING id;
         INSERT INTO block_data (id, data) SELECT max(id), '\\x00'::bytea FROM block",
        "block reference count differs from its rows",
    )
    .await;
}

#[tokio::test]
async fn block_without_bytes_is_found() {
    expect_rule(
        "DELETE FROM block_data WHERE id = (SELECT min(id) FROM block_data)",
        "block without bytes",
    )
    .await;
}

#[tokio::test]
async fn directory_cycle_is_found() {
    // dir's only entry moves into dir itself: a loop that nothing reaches.
    expect_rule(
        "UPDATE dentry SET parent = ino WHERE name = 'dir'::bytea",
        "directory not reachable from the root",
    )
    .await;
}

#[tokio::test]
async fn block_past_the_end_is_found() {
    expect_rule(
        "UPDATE inode SET size = 10 WHERE kind = 1",
        "file block past the end of its file",
    )
    .await;
}

#[tokio::test]
async fn refcount_too_low_is_found() {
    expect_rule(
        "UPDATE block SET refs = refs + 1 WHERE id = (SELECT min(id) FROM block)",
        "block reference count differs from its rows",
    )
    .await;
}
