//! `Wrapped` forwards every method, with its arguments, and a hook replaces exactly one.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use bytes::Bytes;

use super::{Hooks, Wrapped};
use crate::error::{VfsError, VfsResult};
use crate::types::{
    Attr, DirEntry, DirEntryPlus, Fh, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs,
    XattrSet,
};
use crate::vfs::{InodeStability, VirtualFs};

/// A backend that records every call with its arguments.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn note(&self, s: String) -> Attr {
        self.0.lock().unwrap().push(s);
        Attr::new(Ino(42), FileType::Regular, 0o644)
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl VirtualFs for Recorder {
    fn source_id(&self) -> &str {
        "recorder"
    }
    fn inode_stability(&self) -> InodeStability {
        InodeStability::Stable
    }
    async fn lookup(&self, _: &RequestCtx, p: Ino, n: Name<'_>) -> VfsResult<Attr> {
        Ok(self.note(format!("lookup {p:?} {n:?}")))
    }
    async fn forget(&self, ino: Ino, n: u64) {
        self.note(format!("forget {ino:?} {n}"));
    }
    async fn getattr(&self, _: &RequestCtx, ino: Ino, fh: Option<Fh>) -> VfsResult<Attr> {
        Ok(self.note(format!("getattr {ino:?} {fh:?}")))
    }
    async fn setattr(&self, _: &RequestCtx, ino: Ino, set: SetAttr) -> VfsResult<Attr> {
        Ok(self.note(format!("setattr {ino:?} {:?}", set.size)))
    }
    async fn readlink(&self, _: &RequestCtx, ino: Ino) -> VfsResult<OsString> {
        self.note(format!("readlink {ino:?}"));
        Ok("t".into())
    }
    async fn mknod(&self, _: &RequestCtx, p: Ino, n: Name<'_>, m: u32, u: u32, r: u64) -> VfsResult<Attr> {
        Ok(self.note(format!("mknod {p:?} {n:?} {m} {u} {r}")))
    }
    async fn mkdir(&self, _: &RequestCtx, p: Ino, n: Name<'_>, m: u32, u: u32) -> VfsResult<Attr> {
        Ok(self.note(format!("mkdir {p:?} {n:?} {m} {u}")))
    }
    async fn unlink(&self, _: &RequestCtx, p: Ino, n: Name<'_>) -> VfsResult<()> {
        self.note(format!("unlink {p:?} {n:?}"));
        Ok(())
    }
    async fn rmdir(&self, _: &RequestCtx, p: Ino, n: Name<'_>) -> VfsResult<()> {
        self.note(format!("rmdir {p:?} {n:?}"));
        Ok(())
    }
    async fn symlink(&self, _: &RequestCtx, p: Ino, n: Name<'_>, t: &OsStr) -> VfsResult<Attr> {
        Ok(self.note(format!("symlink {p:?} {n:?} {t:?}")))
    }
    async fn rename(
        &self,
        _: &RequestCtx,
        p: Ino,
        n: Name<'_>,
        np: Ino,
        nn: Name<'_>,
        f: RenameFlags,
    ) -> VfsResult<()> {
        self.note(format!("rename {p:?} {n:?} {np:?} {nn:?} {f:?}"));
        Ok(())
    }
    async fn link(&self, _: &RequestCtx, ino: Ino, np: Ino, nn: Name<'_>) -> VfsResult<Attr> {
        Ok(self.note(format!("link {ino:?} {np:?} {nn:?}")))
    }
    async fn open(&self, _: &RequestCtx, ino: Ino, f: OpenFlags) -> VfsResult<Fh> {
        self.note(format!("open {ino:?} {f:?}"));
        Ok(Fh(7))
    }
    async fn create(&self, _: &RequestCtx, p: Ino, n: Name<'_>, m: u32, u: u32, f: OpenFlags) -> VfsResult<(Attr, Fh)> {
        Ok((self.note(format!("create {p:?} {n:?} {m} {u} {f:?}")), Fh(8)))
    }
    async fn read(&self, _: &RequestCtx, ino: Ino, fh: Fh, off: u64, size: u32) -> VfsResult<Bytes> {
        self.note(format!("read {ino:?} {fh:?} {off} {size}"));
        Ok(Bytes::from_static(b"r"))
    }
    async fn write(&self, _: &RequestCtx, ino: Ino, fh: Fh, off: u64, data: &[u8]) -> VfsResult<u32> {
        self.note(format!("write {ino:?} {fh:?} {off} {data:?}"));
        Ok(3)
    }
    async fn flush(&self, _: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        self.note(format!("flush {ino:?} {fh:?}"));
        Ok(())
    }
    async fn fsync(&self, _: &RequestCtx, ino: Ino, fh: Fh, d: bool) -> VfsResult<()> {
        self.note(format!("fsync {ino:?} {fh:?} {d}"));
        Ok(())
    }
    async fn release(&self, _: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        self.note(format!("release {ino:?} {fh:?}"));
        Ok(())
    }
    fn passthrough_fd(&self, ino: Ino, fh: Fh) -> Option<OwnedFd> {
        self.note(format!("passthrough_fd {ino:?} {fh:?}"));
        None
    }
    async fn readdir(&self, _: &RequestCtx, ino: Ino, c: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        self.note(format!("readdir {ino:?} {c} {max}"));
        Ok(Vec::new())
    }
    async fn readdirplus(&self, _: &RequestCtx, ino: Ino, c: u64, max: usize) -> VfsResult<Vec<DirEntryPlus>> {
        self.note(format!("readdirplus {ino:?} {c} {max}"));
        Ok(Vec::new())
    }
    async fn statfs(&self, _: &RequestCtx, ino: Ino) -> VfsResult<StatFs> {
        self.note(format!("statfs {ino:?}"));
        Ok(StatFs {
            files: 9,
            ..StatFs::default()
        })
    }
    async fn access(&self, _: &RequestCtx, ino: Ino, mask: u32) -> VfsResult<()> {
        self.note(format!("access {ino:?} {mask}"));
        Err(VfsError::Stale)
    }
    async fn getxattr(&self, _: &RequestCtx, ino: Ino, n: &OsStr) -> VfsResult<Bytes> {
        self.note(format!("getxattr {ino:?} {n:?}"));
        Ok(Bytes::from_static(b"x"))
    }
    async fn setxattr(&self, _: &RequestCtx, ino: Ino, n: &OsStr, v: &[u8], how: XattrSet) -> VfsResult<()> {
        self.note(format!("setxattr {ino:?} {n:?} {v:?} {how:?}"));
        Ok(())
    }
    async fn listxattr(&self, _: &RequestCtx, ino: Ino) -> VfsResult<Vec<OsString>> {
        self.note(format!("listxattr {ino:?}"));
        Ok(vec!["user.a".into()])
    }
    async fn removexattr(&self, _: &RequestCtx, ino: Ino, n: &OsStr) -> VfsResult<()> {
        self.note(format!("removexattr {ino:?} {n:?}"));
        Ok(())
    }
    async fn fallocate(&self, _: &RequestCtx, ino: Ino, fh: Fh, off: u64, len: u64, mode: i32) -> VfsResult<()> {
        self.note(format!("fallocate {ino:?} {fh:?} {off} {len} {mode}"));
        Ok(())
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Calls every `VirtualFs` method once on `fs`, with distinct arguments.
async fn call_all(fs: &impl VirtualFs) {
    let c = &RequestCtx::ROOT;
    let n = Name::new(OsStr::new("n")).unwrap();
    let m = Name::new(OsStr::new("m")).unwrap();
    let (i, f) = (Ino(5), Fh(6));
    assert_eq!(fs.source_id(), "recorder");
    assert_eq!(fs.inode_stability(), InodeStability::Stable);
    assert_eq!(fs.lookup(c, i, n).await.unwrap().ino, Ino(42));
    fs.forget(i, 3).await;
    fs.getattr(c, i, Some(f)).await.unwrap();
    let set = SetAttr {
        size: Some(11),
        ..SetAttr::default()
    };
    fs.setattr(c, i, set).await.unwrap();
    assert_eq!(fs.readlink(c, i).await.unwrap(), "t");
    fs.mknod(c, i, n, 1, 2, 3).await.unwrap();
    fs.mkdir(c, i, n, 4, 5).await.unwrap();
    fs.unlink(c, i, n).await.unwrap();
    fs.rmdir(c, i, n).await.unwrap();
    fs.symlink(c, i, n, OsStr::new("tgt")).await.unwrap();
    fs.rename(c, i, n, Ino(9), m, RenameFlags(1)).await.unwrap();
    fs.link(c, i, Ino(9), m).await.unwrap();
    assert_eq!(fs.open(c, i, OpenFlags(2)).await.unwrap(), Fh(7));
    assert_eq!(fs.create(c, i, n, 6, 7, OpenFlags(1)).await.unwrap().1, Fh(8));
    assert_eq!(&fs.read(c, i, f, 10, 20).await.unwrap()[..], b"r");
    assert_eq!(fs.write(c, i, f, 30, b"abc").await.unwrap(), 3);
    fs.flush(c, i, f).await.unwrap();
    fs.fsync(c, i, f, true).await.unwrap();
    fs.release(c, i, f).await.unwrap();
    assert!(fs.passthrough_fd(i, f).is_none());
    fs.readdir(c, i, 40, 50).await.unwrap();
    fs.readdirplus(c, i, 60, 70).await.unwrap();
    assert_eq!(fs.statfs(c, i).await.unwrap().files, 9);
    assert!(matches!(fs.access(c, i, 4).await, Err(VfsError::Stale)));
    assert_eq!(&fs.getxattr(c, i, OsStr::new("user.x")).await.unwrap()[..], b"x");
    fs.setxattr(c, i, OsStr::new("user.y"), b"v", XattrSet::Create)
        .await
        .unwrap();
    assert_eq!(fs.listxattr(c, i).await.unwrap(), vec![OsString::from("user.a")]);
    fs.removexattr(c, i, OsStr::new("user.z")).await.unwrap();
    fs.fallocate(c, i, f, 80, 90, 1).await.unwrap();
}

/// Hooks that change nothing.
struct Nothing;
impl<F: VirtualFs> Hooks<F> for Nothing {}

#[test]
fn every_method_is_forwarded_with_its_arguments() {
    let direct = Recorder::default();
    block_on(call_all(&direct));
    let expected = direct.take();
    assert_eq!(expected.len(), 29, "the recorder saw every call: {expected:#?}");

    let wrapped = Wrapped::new(Recorder::default(), Nothing);
    block_on(call_all(&wrapped));
    assert_eq!(wrapped.inner.take(), expected);
}

/// Replaces `write` (drops it, as seed 003's (doc/LESSONS.md#seed-003) lost writes did) and leaves the rest alone.
struct DropWrites;
impl Hooks<Recorder> for DropWrites {
    async fn write(&self, _inner: &Recorder, _: &RequestCtx, _: Ino, _: Fh, _: u64, data: &[u8]) -> VfsResult<u32> {
        Ok(data.len() as u32)
    }
}

#[test]
fn a_hook_replaces_exactly_its_method() {
    let direct = Recorder::default();
    block_on(call_all(&direct));
    let expected: Vec<String> = direct.take().into_iter().filter(|s| !s.starts_with("write ")).collect();
    let wrapped = Wrapped::new(Recorder::default(), DropWrites);
    block_on(call_all(&wrapped));
    assert_eq!(wrapped.inner.take(), expected);
}
