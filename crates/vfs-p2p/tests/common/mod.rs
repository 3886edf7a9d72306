//! What the vfs-p2p integration tests share: a tree walker that works on any `VirtualFs`,
//! a small seeded random generator, and the FUSE availability check.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use vfs_core::{FileType, Ino, Name, OpenFlags, RequestCtx, VfsResult, VirtualFs};

pub const CTX: RequestCtx = RequestCtx::ROOT;

/// What a tree looks like from outside: path -> (type, size, content or link target).
pub type Snapshot = BTreeMap<String, (FileType, u64, Vec<u8>)>;

pub fn nm(s: &OsString) -> Name<'_> {
    Name::new(s).expect("valid name")
}

pub async fn list<F: VirtualFs>(fs: &F, dir: Ino) -> VfsResult<Vec<OsString>> {
    let mut out = Vec::new();
    let mut cookie = 0;
    for pages in 0.. {
        assert!(pages < 100_000, "readdir of {dir} did not end");
        let page = fs.readdir(&CTX, dir, cookie, 64).await?;
        let Some(last) = page.last() else { break };
        cookie = last.cookie;
        for e in page {
            if e.name != "." && e.name != ".." {
                out.push(e.name);
            }
        }
    }
    Ok(out)
}

pub async fn read_all<F: VirtualFs>(fs: &F, ino: Ino) -> VfsResult<Vec<u8>> {
    let fh = fs.open(&CTX, ino, OpenFlags::RDONLY).await?;
    let mut out = Vec::new();
    let r = loop {
        match fs.read(&CTX, ino, fh, out.len() as u64, 128 * 1024).await {
            Ok(b) if b.is_empty() => break Ok(()),
            Ok(b) => {
                out.extend_from_slice(&b);
                assert!(out.len() < 1 << 32, "reads of {ino} did not reach end of file");
            }
            Err(e) => break Err(e),
        }
    };
    fs.release(&CTX, ino, fh).await?;
    r.map(|()| out)
}

/// Every entry under the root, with file contents.
pub async fn snapshot<F: VirtualFs>(fs: &F) -> VfsResult<Snapshot> {
    let mut out = Snapshot::new();
    let mut todo = vec![(Ino::ROOT, String::new())];
    while let Some((dir, prefix)) = todo.pop() {
        for name in list(fs, dir).await? {
            let a = fs.lookup(&CTX, dir, nm(&name)).await?;
            let path = format!("{prefix}/{}", String::from_utf8_lossy(name.as_bytes()));
            let data = match a.kind {
                FileType::Directory => {
                    todo.push((a.ino, path.clone()));
                    Vec::new()
                }
                FileType::Regular => read_all(fs, a.ino).await?,
                FileType::Symlink => fs.readlink(&CTX, a.ino).await?.as_bytes().to_vec(),
                _ => Vec::new(),
            };
            let size = if a.kind == FileType::Directory { 0 } else { a.size };
            out.insert(path, (a.kind, size, data));
        }
    }
    Ok(out)
}

/// Describes how two snapshots differ (first few differences).
pub fn diff(a: &Snapshot, b: &Snapshot) -> String {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("{k}: only on the owner")),
            Some(w) if w != v => out.push(format!(
                "{k}: owner {:?} {} bytes, far side {:?} {} bytes",
                v.0, v.1, w.0, w.1
            )),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push(format!("{k}: only on the far side"));
        }
    }
    out.truncate(8);
    out.join("; ")
}

/// xorshift64*: reproducible random choices without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The seeds the randomized tests run (`P2P_TEST_SEED` picks one).
pub fn seeds() -> Vec<u64> {
    match std::env::var("P2P_TEST_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => vec![1, 2, 3],
    }
}

/// Whether this machine can mount FUSE filesystems; prints why not when it cannot.
pub fn fuse_usable() -> bool {
    vfs_fuse::probe::fuse_usable()
        .map_err(|e| eprintln!("SKIP: {e}; FUSE mount tests not run"))
        .is_ok()
}
