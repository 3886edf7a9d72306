//! Unit tests of the overlay, the seed 001 (doc/LESSONS.md#seed-001) regressions among them.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Overlay, OverlayOptions};
use crate::fh::fnv1a_64;
use crate::localfs::LocalFs;
use crate::memfs::MemFs;
use crate::types::*;
use crate::vfs::VirtualFs;
use crate::{VfsError, VfsResult};

const CTX: RequestCtx = RequestCtx::ROOT;
const BLOCK: u64 = super::DEFAULT_BLOCK_SIZE as u64;

fn nm(s: &str) -> Name<'_> {
    Name::new(OsStr::new(s)).expect("name")
}

/// A file of `len` bytes whose byte `i` is `(i / 7) as u8 | 1` (never zero).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i / 7) as u8) | 1).collect()
}

async fn mkfile<F: VirtualFs>(fs: &F, dir: Ino, n: &str, data: &[u8]) -> Ino {
    let (a, fh) = fs
        .create(&CTX, dir, nm(n), 0o644, 0, OpenFlags::RDWR)
        .await
        .expect("create");
    if !data.is_empty() {
        fs.write(&CTX, a.ino, fh, 0, data).await.expect("write");
    }
    fs.release(&CTX, a.ino, fh).await.expect("release");
    a.ino
}

async fn read_all<F: VirtualFs>(fs: &F, ino: Ino, fh: Fh) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = fs.read(&CTX, ino, fh, out.len() as u64, 1 << 20).await.expect("read");
        if b.is_empty() {
            return out;
        }
        out.extend_from_slice(&b);
    }
}

async fn names<F: VirtualFs>(fs: &F, dir: Ino) -> Vec<String> {
    let mut v: Vec<String> = fs
        .readdir(&CTX, dir, 2, 10_000)
        .await
        .expect("readdir")
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

async fn mem_overlay(lowers: Vec<MemFs>) -> Overlay<MemFs, MemFs> {
    Overlay::open(MemFs::new(), lowers, OverlayOptions::default())
        .await
        .expect("overlay")
}

/// Seed 001 bug 1 (doc/LESSONS.md#seed-001; "could not read block: read only 0 of 8192 bytes"): a file opened
/// with write intent got a handle on the sparse diff file, and reads through that handle
/// of blocks never written returned the holes' zeros instead of the backup's data.
/// Reads here go through the block map whatever handle they come through; with the
/// lower spans of `read_data` replaced by a plain upper read, this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed001_unmaterialized_blocks_read_through_a_write_handle_come_from_the_lower() {
    let lower = MemFs::new();
    let data = pattern(3 * BLOCK as usize + 100);
    mkfile(&lower, Ino::ROOT, "rel", &data).await;
    let fs = mem_overlay(vec![lower]).await;
    let a = fs.lookup(&CTX, Ino::ROOT, nm("rel")).await.expect("lookup");
    let fh = fs.open(&CTX, a.ino, OpenFlags::RDWR).await.expect("open rw");
    fs.write(&CTX, a.ino, fh, BLOCK + 10, b"new!").await.expect("write");
    let mut want = data.clone();
    want[BLOCK as usize + 10..BLOCK as usize + 14].copy_from_slice(b"new!");
    assert_eq!(read_all(&fs, a.ino, fh).await, want, "read through the write handle");
    let page = fs.read(&CTX, a.ino, fh, 2 * BLOCK, 8192).await.expect("read block 2");
    assert_eq!(&page[..], &data[2 * BLOCK as usize..2 * BLOCK as usize + 8192]);
    assert!(page.iter().any(|&b| b != 0), "never zeros");
    assert_eq!(fs.block_status(a.ino), Some((1, 4)), "one block materialized of four");
    let ro = fs.open(&CTX, a.ino, OpenFlags::RDONLY).await.expect("open ro");
    assert_eq!(read_all(&fs, a.ino, ro).await, want, "read through a read-only handle");
    let c = fs.counters();
    assert_eq!(c.blocks_copied_up, 1);
    assert!(c.bytes_from_lower[0] > 0 && c.bytes_from_upper > 0, "{c:?}");
}

/// A `MemFs` whose writes starting with `A` take 150 ms: the slow asynchronous write of
/// seed 001 (doc/LESSONS.md#seed-001).
struct SlowWrites(MemFs);

impl VirtualFs for SlowWrites {
    fn source_id(&self) -> &str {
        self.0.source_id()
    }
    async fn lookup(&self, c: &RequestCtx, p: Ino, n: Name<'_>) -> VfsResult<Attr> {
        self.0.lookup(c, p, n).await
    }
    async fn getattr(&self, c: &RequestCtx, i: Ino, f: Option<Fh>) -> VfsResult<Attr> {
        self.0.getattr(c, i, f).await
    }
    async fn setattr(&self, c: &RequestCtx, i: Ino, s: SetAttr) -> VfsResult<Attr> {
        self.0.setattr(c, i, s).await
    }
    async fn readlink(&self, c: &RequestCtx, i: Ino) -> VfsResult<OsString> {
        self.0.readlink(c, i).await
    }
    async fn mknod(&self, c: &RequestCtx, p: Ino, n: Name<'_>, m: u32, u: u32, r: u64) -> VfsResult<Attr> {
        self.0.mknod(c, p, n, m, u, r).await
    }
    async fn mkdir(&self, c: &RequestCtx, p: Ino, n: Name<'_>, m: u32, u: u32) -> VfsResult<Attr> {
        self.0.mkdir(c, p, n, m, u).await
    }
    async fn unlink(&self, c: &RequestCtx, p: Ino, n: Name<'_>) -> VfsResult<()> {
        self.0.unlink(c, p, n).await
    }
    async fn rmdir(&self, c: &RequestCtx, p: Ino, n: Name<'_>) -> VfsResult<()> {
        self.0.rmdir(c, p, n).await
    }
    async fn rename(
        &self,
        c: &RequestCtx,
        p: Ino,
        n: Name<'_>,
        np: Ino,
        nn: Name<'_>,
        f: RenameFlags,
    ) -> VfsResult<()> {
        self.0.rename(c, p, n, np, nn, f).await
    }
    async fn open(&self, c: &RequestCtx, i: Ino, f: OpenFlags) -> VfsResult<Fh> {
        self.0.open(c, i, f).await
    }
    async fn create(&self, c: &RequestCtx, p: Ino, n: Name<'_>, m: u32, u: u32, f: OpenFlags) -> VfsResult<(Attr, Fh)> {
        self.0.create(c, p, n, m, u, f).await
    }
    async fn read(&self, c: &RequestCtx, i: Ino, f: Fh, o: u64, s: u32) -> VfsResult<Bytes> {
        self.0.read(c, i, f, o, s).await
    }
    async fn write(&self, c: &RequestCtx, i: Ino, f: Fh, o: u64, d: &[u8]) -> VfsResult<u32> {
        if d.first() == Some(&b'A') {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        self.0.write(c, i, f, o, d).await
    }
    async fn release(&self, c: &RequestCtx, i: Ino, f: Fh) -> VfsResult<()> {
        self.0.release(c, i, f).await
    }
    async fn readdir(&self, c: &RequestCtx, i: Ino, k: u64, m: usize) -> VfsResult<Vec<DirEntry>> {
        self.0.readdir(c, i, k, m).await
    }
}

/// Waits (bounded) until the overlay has an ordered operation pending.
async fn until_pending<U: VirtualFs, L: VirtualFs>(fs: &Overlay<U, L>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs.pending_inodes() == 0 {
        assert!(Instant::now() < deadline, "the write never started");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn slow_overlay() -> (Arc<Overlay<SlowWrites, MemFs>>, Ino) {
    let lower = MemFs::new();
    mkfile(&lower, Ino::ROOT, "rel", &pattern(100)).await;
    let fs = Overlay::open(SlowWrites(MemFs::new()), vec![lower], OverlayOptions::default())
        .await
        .expect("overlay");
    let ino = fs.lookup(&CTX, Ino::ROOT, nm("rel")).await.expect("lookup").ino;
    (Arc::new(fs), ino)
}

/// Seed 001 bug 2 (doc/LESSONS.md#seed-001; stale size): PostgreSQL extended a file and the following `stat`
/// returned the size from before, because the size cache was invalidated before the
/// asynchronous write had landed. Here `getattr` waits for the writes issued before it
/// and asks the upper; with the `barrier.read_async` of `getattr` removed, this test
/// fails (it sees 100 bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed001_getattr_after_an_extending_write_returns_the_new_size() {
    let (fs, ino) = slow_overlay().await;
    let fh = fs.open(&CTX, ino, OpenFlags::RDWR).await.expect("open");
    let w = {
        let fs = Arc::clone(&fs);
        tokio::spawn(async move { fs.write(&CTX, ino, fh, 8192, b"A extends").await })
    };
    until_pending(&fs).await;
    let a = fs.getattr(&CTX, ino, None).await.expect("getattr");
    assert_eq!(a.size, 8192 + 9, "getattr issued after the write");
    w.await.expect("join").expect("write");
    assert_eq!(fs.getattr(&CTX, ino, Some(fh)).await.expect("getattr").size, 8201);
}

/// Seed 001 bug 3 (doc/LESSONS.md#seed-001; unordered writes): writes to one file were applied by workers in
/// whatever order they ran, and a read issued after a write could run before it. Here a
/// slow write issued first still applies before a fast one issued after it, a read issued
/// after both sees both, and the per-inode state is gone when the kernel forgets the
/// inode. With the `read_async` of `read` removed, the read sees old bytes and this test
/// fails (checked). With only the `wait_turn_async` of `write` removed it still passes:
/// the per-node data lock, taken in issue order here, also keeps the two writes in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed001_writes_apply_in_issue_order_and_reads_see_earlier_writes() {
    let (fs, ino) = slow_overlay().await;
    let fh = fs.open(&CTX, ino, OpenFlags::RDWR).await.expect("open");
    let slow = {
        let fs = Arc::clone(&fs);
        tokio::spawn(async move { fs.write(&CTX, ino, fh, 0, b"AAAA").await })
    };
    until_pending(&fs).await;
    let fast = {
        let fs = Arc::clone(&fs);
        tokio::spawn(async move { fs.write(&CTX, ino, fh, 0, b"BBBB").await })
    };
    // Let the fast write be issued (it waits for its turn behind the slow one).
    tokio::time::sleep(Duration::from_millis(30)).await;
    let seen = fs.read(&CTX, ino, fh, 0, 4).await.expect("read");
    assert_eq!(&seen[..], b"BBBB", "a read sees every write issued before it, in order");
    slow.await.expect("join").expect("slow write");
    fast.await.expect("join").expect("fast write");
    assert_eq!(&fs.read(&CTX, ino, fh, 0, 4).await.expect("read")[..], b"BBBB");
    assert_eq!(fs.pending_inodes(), 0, "no ordering state once quiet");
    fs.release(&CTX, ino, fh).await.expect("release");
    let before = fs.known_inodes();
    fs.forget(ino, 1).await;
    assert_eq!(fs.known_inodes(), before - 1, "the inode's state goes with forget");
    assert_eq!(fs.pending_inodes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_fall_through_and_whiteouts_hide_lower_names() {
    let top = MemFs::new();
    let bottom = MemFs::new();
    mkfile(&top, Ino::ROOT, "both", b"top").await;
    mkfile(&bottom, Ino::ROOT, "both", b"bottom").await;
    mkfile(&bottom, Ino::ROOT, "deep", b"deep").await;
    let td = top.mkdir(&CTX, Ino::ROOT, nm("dir"), 0o755, 0).await.expect("mkdir");
    let bd = bottom.mkdir(&CTX, Ino::ROOT, nm("dir"), 0o755, 0).await.expect("mkdir");
    mkfile(&top, td.ino, "t", b"").await;
    mkfile(&bottom, bd.ino, "b", b"").await;
    mkfile(&bottom, bd.ino, "t", b"shadowed").await;
    let fs = mem_overlay(vec![top, bottom]).await;
    assert_eq!(names(&fs, Ino::ROOT).await, ["both", "deep", "dir"]);
    let dir = fs.lookup(&CTX, Ino::ROOT, nm("dir")).await.expect("dir");
    assert_eq!(names(&fs, dir.ino).await, ["b", "t"], "merged without duplicates");
    let both = fs.lookup(&CTX, Ino::ROOT, nm("both")).await.expect("both");
    let fh = fs.open(&CTX, both.ino, OpenFlags::RDONLY).await.expect("open");
    assert_eq!(read_all(&fs, both.ino, fh).await, b"top", "the topmost layer wins");
    fs.unlink(&CTX, Ino::ROOT, nm("both")).await.expect("unlink");
    assert!(matches!(
        fs.lookup(&CTX, Ino::ROOT, nm("both")).await,
        Err(VfsError::NotFound)
    ));
    assert_eq!(
        names(&fs, Ino::ROOT).await,
        ["deep", "dir"],
        "no resurrection from below"
    );
    fs.unlink(&CTX, dir.ino, nm("b")).await.expect("unlink b");
    fs.unlink(&CTX, dir.ino, nm("t")).await.expect("unlink t");
    assert!(names(&fs, dir.ino).await.is_empty());
    fs.rmdir(&CTX, Ino::ROOT, nm("dir")).await.expect("rmdir merged dir");
    let new = fs
        .mkdir(&CTX, Ino::ROOT, nm("dir"), 0o755, 0)
        .await
        .expect("mkdir over whiteout");
    assert!(names(&fs, new.ino).await.is_empty(), "a new directory is opaque");
    // Cookies resume a merged listing without repeating names.
    let mut seen = Vec::new();
    let mut cookie = 0;
    for _ in 0..100 {
        let page = fs.readdir(&CTX, Ino::ROOT, cookie, 1).await.expect("readdir");
        let Some(e) = page.last() else { break };
        cookie = e.cookie;
        seen.push(e.name.clone());
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(seen.len(), dedup.len(), "{seen:?}");
    assert_eq!(seen.len(), 4, "., .., deep, dir: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inode_numbers_and_hard_links_survive_copy_up() {
    let lower = MemFs::new();
    let f = mkfile(&lower, Ino::ROOT, "one", b"shared").await;
    lower.link(&CTX, f, Ino::ROOT, nm("two")).await.expect("link");
    let fs = mem_overlay(vec![lower]).await;
    let one = fs.lookup(&CTX, Ino::ROOT, nm("one")).await.expect("one");
    let two = fs.lookup(&CTX, Ino::ROOT, nm("two")).await.expect("two");
    assert_eq!(one.ino, two.ino, "hard links share an inode");
    let fh = fs.open(&CTX, one.ino, OpenFlags::RDWR).await.expect("open");
    fs.write(&CTX, one.ino, fh, 0, b"SHARED").await.expect("write");
    fs.release(&CTX, one.ino, fh).await.expect("release");
    let after = fs.getattr(&CTX, one.ino, None).await.expect("getattr");
    assert_eq!(after.ino, one.ino, "st_ino before and after copy-up");
    let two2 = fs.lookup(&CTX, Ino::ROOT, nm("two")).await.expect("two");
    assert_eq!(two2.ino, one.ino);
    let fh = fs.open(&CTX, two2.ino, OpenFlags::RDONLY).await.expect("open two");
    assert_eq!(
        read_all(&fs, two2.ino, fh).await,
        b"SHARED",
        "the other name sees the write"
    );
    let listed: Vec<Ino> = fs
        .readdir(&CTX, Ino::ROOT, 2, 10)
        .await
        .expect("readdir")
        .iter()
        .map(|e| e.ino)
        .collect();
    assert_eq!(listed, [one.ino, one.ino], "readdir gives the lookup's inode numbers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_hides_lower_bytes_and_materialize_on_read_is_an_option() {
    let lower = MemFs::new();
    let data = pattern(2 * BLOCK as usize);
    mkfile(&lower, Ino::ROOT, "f", &data).await;
    mkfile(&lower, Ino::ROOT, "g", &data).await;
    let fs = Overlay::open(
        MemFs::new(),
        vec![lower],
        OverlayOptions {
            materialize_on_read: false,
            ..OverlayOptions::default()
        },
    )
    .await
    .expect("overlay");
    let f = fs.lookup(&CTX, Ino::ROOT, nm("f")).await.expect("f");
    fs.setattr(&CTX, f.ino, SetAttr::size(100))
        .await
        .expect("truncate down");
    fs.setattr(&CTX, f.ino, SetAttr::size(BLOCK + 5))
        .await
        .expect("truncate up");
    let fh = fs.open(&CTX, f.ino, OpenFlags::RDONLY).await.expect("open");
    let got = read_all(&fs, f.ino, fh).await;
    assert_eq!(got.len() as u64, BLOCK + 5);
    assert_eq!(&got[..100], &data[..100]);
    assert!(got[100..].iter().all(|&b| b == 0), "old lower bytes never come back");
    let g = fs.lookup(&CTX, Ino::ROOT, nm("g")).await.expect("g");
    let fh = fs.open(&CTX, g.ino, OpenFlags::RDONLY).await.expect("open g");
    assert_eq!(read_all(&fs, g.ino, fh).await, data);
    assert_eq!(fs.block_status(g.ino), None, "reads do not copy up by default");

    let lower = MemFs::new();
    mkfile(&lower, Ino::ROOT, "g", &data).await;
    mkfile(&lower, Ino::ROOT, "h", &data).await;
    let fs = Overlay::open(
        MemFs::new(),
        vec![lower],
        OverlayOptions {
            materialize_on_read: true,
            ..OverlayOptions::default()
        },
    )
    .await
    .expect("overlay");
    let g = fs.lookup(&CTX, Ino::ROOT, nm("g")).await.expect("g");
    let fh = fs.open(&CTX, g.ino, OpenFlags::RDWR).await.expect("open g");
    fs.write(&CTX, g.ino, fh, 0, b"x").await.expect("write");
    assert_eq!(fs.block_status(g.ino), Some((1, 2)));
    let got = read_all(&fs, g.ino, fh).await;
    assert_eq!(&got[1..], &data[1..]);
    assert_eq!(fs.block_status(g.ino), Some((2, 2)), "the read materialized the rest");
    // A file never written is copied up by its first read too.
    let h = fs.lookup(&CTX, Ino::ROOT, nm("h")).await.expect("h");
    let fh = fs.open(&CTX, h.ino, OpenFlags::RDONLY).await.expect("open h");
    let page = fs.read(&CTX, h.ino, fh, BLOCK, 10).await.expect("read h");
    assert_eq!(&page[..], &data[BLOCK as usize..BLOCK as usize + 10]);
    assert_eq!(fs.block_status(h.ino), Some((1, 2)), "the read block only");
}

/// Every regular file under `dir`: (relative path, FNV-1a of mode, size, mtime and bytes).
fn tree_digest(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let md = std::fs::symlink_metadata(e.path()).expect("stat");
            let rel = e.path().strip_prefix(dir).expect("prefix").display().to_string();
            let mut h = format!("{} {} {} {}", md.mode(), md.size(), md.mtime(), md.mtime_nsec()).into_bytes();
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                h.extend(std::fs::read(e.path()).expect("read"));
            }
            out.push((rel, fnv1a_64(&h)));
        }
    }
    out.sort();
    out
}

/// Looks `path` up from the root and returns its attributes.
async fn look<U: VirtualFs, L: VirtualFs>(fs: &Overlay<U, L>, path: &str) -> VfsResult<Attr> {
    let mut ino = Ino::ROOT;
    for c in path.split('/') {
        ino = fs.lookup(&CTX, ino, nm(c)).await?.ino;
    }
    fs.getattr(&CTX, ino, None).await
}

/// The restart test and the lowers-unchanged test, on host directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_upper_finds_every_change_and_the_lower_is_untouched() {
    let upper_dir = tempfile::tempdir().expect("upper");
    let lower_dir = tempfile::tempdir().expect("lower");
    let l = lower_dir.path();
    std::fs::create_dir_all(l.join("base/1")).expect("mkdir");
    std::fs::create_dir_all(l.join("gone")).expect("mkdir");
    std::fs::write(l.join("gone/x"), b"x").expect("write");
    let big = pattern(3 * BLOCK as usize);
    std::fs::write(l.join("base/1/rel"), &big).expect("write");
    std::fs::write(l.join("base/1/moved"), b"moved").expect("write");
    std::fs::write(l.join("deleted"), b"deleted").expect("write");
    std::fs::write(l.join("mode"), b"mode").expect("write");
    let before = tree_digest(l);
    let open = || async {
        let upper = LocalFs::new(upper_dir.path()).expect("upper");
        let lower = LocalFs::new(lower_dir.path()).expect("lower");
        Overlay::open(upper, vec![lower], OverlayOptions::default())
            .await
            .expect("overlay")
    };
    let (rel_ino, moved_ino, mode_ino);
    {
        let fs = open().await;
        let rel = look(&fs, "base/1/rel").await.expect("rel");
        rel_ino = rel.ino;
        let fh = fs.open(&CTX, rel.ino, OpenFlags::RDWR).await.expect("open");
        fs.write(&CTX, rel.ino, fh, BLOCK + 1, b"changed").await.expect("write");
        fs.write(&CTX, rel.ino, fh, 3 * BLOCK, b"appended")
            .await
            .expect("extend");
        fs.fsync(&CTX, rel.ino, fh, false).await.expect("fsync");
        fs.release(&CTX, rel.ino, fh).await.expect("release");
        let one = look(&fs, "base/1").await.expect("base/1").ino;
        moved_ino = look(&fs, "base/1/moved").await.expect("moved").ino;
        fs.rename(&CTX, one, nm("moved"), Ino::ROOT, nm("moved2"), RenameFlags::NONE)
            .await
            .expect("rename");
        fs.unlink(&CTX, Ino::ROOT, nm("deleted")).await.expect("unlink");
        let gone = look(&fs, "gone").await.expect("gone").ino;
        fs.unlink(&CTX, gone, nm("x")).await.expect("unlink x");
        fs.rmdir(&CTX, Ino::ROOT, nm("gone")).await.expect("rmdir");
        fs.mkdir(&CTX, Ino::ROOT, nm("gone"), 0o700, 0)
            .await
            .expect("mkdir over whiteout");
        mode_ino = look(&fs, "mode").await.expect("mode").ino;
        fs.setattr(&CTX, mode_ino, SetAttr::mode(0o600)).await.expect("chmod");
        assert_eq!(fs.block_status(mode_ino), Some((0, 1)), "chmod copies no data");
        mkfile(&fs, Ino::ROOT, "new", b"new file").await;
        assert_eq!(tree_digest(l), before, "the lower is unchanged");
    }
    let fs = open().await;
    let rel = look(&fs, "base/1/rel").await.expect("rel after restart");
    assert_eq!(rel.ino, rel_ino, "same inode number after a restart");
    let fh = fs.open(&CTX, rel.ino, OpenFlags::RDONLY).await.expect("open");
    let mut want = big.clone();
    want[BLOCK as usize + 1..BLOCK as usize + 8].copy_from_slice(b"changed");
    want.extend_from_slice(b"appended");
    assert_eq!(read_all(&fs, rel.ino, fh).await, want, "data after restart");
    assert_eq!(fs.block_status(rel.ino), Some((1, 3)));
    assert!(matches!(look(&fs, "base/1/moved").await, Err(VfsError::NotFound)));
    let m = look(&fs, "moved2").await.expect("moved2");
    assert_eq!(m.ino, moved_ino);
    let fh = fs.open(&CTX, m.ino, OpenFlags::RDONLY).await.expect("open moved2");
    assert_eq!(read_all(&fs, m.ino, fh).await, b"moved");
    assert!(matches!(look(&fs, "deleted").await, Err(VfsError::NotFound)));
    let gone = look(&fs, "gone").await.expect("gone");
    assert!(names(&fs, gone.ino).await.is_empty(), "opaque after restart");
    let mode = look(&fs, "mode").await.expect("mode");
    assert_eq!((mode.ino, mode.perm), (mode_ino, 0o600));
    assert!(look(&fs, "new").await.is_ok());
    assert_eq!(names(&fs, Ino::ROOT).await, ["base", "gone", "mode", "moved2", "new"]);
    let upper_mode = std::fs::metadata(upper_dir.path().join("mode")).expect("upper copy");
    assert_eq!(upper_mode.blocks(), 0, "the chmod'ed copy holds no data blocks");
    assert_eq!(tree_digest(l), before, "the lower is unchanged");
}

/// An 8 KiB write into a 1 GiB lower file stores about one block in the upper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_write_into_a_huge_lower_file_stores_one_block() {
    let upper_dir = tempfile::tempdir().expect("upper");
    let lower_dir = tempfile::tempdir().expect("lower");
    let f = std::fs::File::create(lower_dir.path().join("huge")).expect("create");
    f.set_len(1 << 30).expect("set_len");
    drop(f);
    let upper = LocalFs::new(upper_dir.path()).expect("upper");
    let lower = LocalFs::new(lower_dir.path()).expect("lower");
    let fs = Overlay::open(upper, vec![lower], OverlayOptions::default())
        .await
        .expect("overlay");
    let a = fs.lookup(&CTX, Ino::ROOT, nm("huge")).await.expect("lookup");
    let fh = fs.open(&CTX, a.ino, OpenFlags::RDWR).await.expect("open");
    fs.write(&CTX, a.ino, fh, 500 << 20, &[7u8; 8192]).await.expect("write");
    fs.fsync(&CTX, a.ino, fh, false).await.expect("fsync");
    assert_eq!(fs.getattr(&CTX, a.ino, None).await.expect("getattr").ino, a.ino);
    assert_eq!(fs.block_status(a.ino), Some((1, (1 << 30) / BLOCK)));
    let md = std::fs::metadata(upper_dir.path().join("huge")).expect("upper file");
    assert_eq!(md.len(), 1 << 30);
    assert!(
        md.blocks() * 512 <= 2 * BLOCK,
        "upper holds {} bytes",
        md.blocks() * 512
    );
}

#[tokio::test]
async fn bad_configurations_are_errors() {
    assert!(
        Overlay::<MemFs, MemFs>::open(MemFs::new(), vec![], OverlayOptions::default())
            .await
            .is_err()
    );
    let bad = OverlayOptions {
        block_size: 1000,
        ..OverlayOptions::default()
    };
    assert!(Overlay::open(MemFs::new(), vec![MemFs::new()], bad).await.is_err());
}

/// A file shorter than a block, copied up by an append: the read of the whole file must
/// end (the span after the lower bytes is the upper's). Found on a real mount, where
/// `cat` of an appended lower file spun forever in `spans`; with the `pos >= lower_len`
/// case of `spans` moved back after `from_lower`, this test times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_to_a_short_lower_file_reads_back_whole() {
    let lower = MemFs::new();
    mkfile(&lower, Ino::ROOT, "short", b"hi\n").await;
    let fs = mem_overlay(vec![lower]).await;
    let a = fs.lookup(&CTX, Ino::ROOT, nm("short")).await.expect("lookup");
    let fh = fs
        .open(&CTX, a.ino, OpenFlags::WRONLY.with(libc::O_APPEND))
        .await
        .expect("open append");
    fs.write(&CTX, a.ino, fh, 0, b"more\n").await.expect("append");
    fs.release(&CTX, a.ino, fh).await.expect("release");
    let fh = fs.open(&CTX, a.ino, OpenFlags::RDONLY).await.expect("open");
    // On a thread of its own: a read that spins never yields, so only another thread can
    // see that it does not end (the spinning thread dies with the test process).
    let fs = Arc::new(fs);
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let fs = Arc::clone(&fs);
        let ino = a.ino;
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let _ = tx.send(rt.block_on(fs.read(&CTX, ino, fh, 0, 4096)));
        });
    }
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the read ends within 10 s")
        .expect("read");
    assert_eq!(&got[..], b"hi\nmore\n");
    assert_eq!(
        fs.block_status(a.ino),
        Some((0, 1)),
        "nothing of the lower block copied"
    );
}
