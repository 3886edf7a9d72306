//! POSIX scenarios: one function per rule that backends commonly get wrong.
//!
//! Invariant: each scenario builds what it needs from an empty root, checks one rule with
//! exact expectations (errno, sizes, bytes, link counts, time stamps), and reports the
//! first difference as a [`Failure`] naming the operation.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::time::Duration;

use super::{Backend, Cap, Caps, Failure, KitResult};
use crate::error::{Errno, VfsError, VfsResult};
use crate::types::{Attr, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, XattrSet};
use crate::vfs::VirtualFs;
use crate::{kit_bytes_eq, kit_ensure, kit_eq, kit_expect_err, kit_try};

pub(crate) const CTX: RequestCtx = RequestCtx::ROOT;

/// A name known to be valid (scenario names are literals).
pub(crate) fn nm(s: &str) -> Name<'_> {
    match Name::new(OsStr::new(s)) {
        Ok(n) => n,
        Err(e) => panic!("testkit: invalid scenario name {s:?}: {e}"),
    }
}

/// Long enough for any host clock to tick (coarse kernel clocks advance every few ms).
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

pub(crate) async fn mkfile<F: VirtualFs>(fs: &F, parent: Ino, name: &str, data: &[u8]) -> VfsResult<Ino> {
    let (attr, fh) = fs
        .create(&CTX, parent, nm(name), 0o644, 0, OpenFlags::RDWR.with(libc::O_EXCL))
        .await?;
    let written = if data.is_empty() {
        Ok(0)
    } else {
        fs.write(&CTX, attr.ino, fh, 0, data).await
    };
    let released = fs.release(&CTX, attr.ino, fh).await;
    written?;
    released?;
    Ok(attr.ino)
}

/// The kit's own loops over a backend's answers are bounded, so a backend whose reads never
/// reach end of file or whose cookies cycle fails the check instead of hanging it.
const MAX_READ_ALL: usize = 1 << 30;
/// Most entries a listing may return before the kit calls it endless (see [`MAX_READ_ALL`]).
pub(crate) const MAX_LISTING: usize = 1 << 20;
/// The error a listing that does not end is reported as.
pub(crate) const LISTING_DID_NOT_END: &str = "readdir did not end within 1,048,576 entries (cookies that cycle?)";

pub(crate) async fn read_all<F: VirtualFs>(fs: &F, ino: Ino) -> VfsResult<Vec<u8>> {
    let fh = fs.open(&CTX, ino, OpenFlags::RDONLY).await?;
    let mut out = Vec::new();
    let res = loop {
        match fs.read(&CTX, ino, fh, out.len() as u64, 1 << 20).await {
            Ok(b) if b.is_empty() => break Ok(()),
            Ok(_) if out.len() >= MAX_READ_ALL => {
                break Err(VfsError::Invalid("reads did not reach end of file within 1 GiB"));
            }
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => break Err(e),
        }
    };
    let released = fs.release(&CTX, ino, fh).await;
    res?;
    released?;
    Ok(out)
}

/// Every name in `dir` except `.` and `..`, read through cookies `page` entries at a time.
pub(crate) async fn list<F: VirtualFs>(fs: &F, dir: Ino, page: usize) -> VfsResult<Vec<(String, FileType, Ino)>> {
    let mut out = Vec::new();
    let mut cookie = 0;
    let mut listed = 0usize;
    loop {
        let entries = fs.readdir(&CTX, dir, cookie, page).await?;
        let Some(last) = entries.last() else { break };
        cookie = last.cookie;
        listed += entries.len();
        if listed > MAX_LISTING {
            return Err(VfsError::Invalid(LISTING_DID_NOT_END));
        }
        for e in entries {
            let n = e.name.to_string_lossy().into_owned();
            if n != "." && n != ".." {
                out.push((n, e.kind, e.ino));
            }
        }
    }
    Ok(out)
}

/// The inode `..` of `dir` names, from a full listing (cookies are the backend's own).
pub(crate) async fn dotdot<F: VirtualFs>(fs: &F, dir: Ino) -> VfsResult<Option<Ino>> {
    let mut cookie = 0;
    for _ in 0..MAX_LISTING / 16 {
        let page = fs.readdir(&CTX, dir, cookie, 16).await?;
        let Some(last) = page.last() else { return Ok(None) };
        cookie = last.cookie;
        if let Some(e) = page.iter().find(|e| e.name == "..") {
            return Ok(Some(e.ino));
        }
    }
    Err(VfsError::Invalid(LISTING_DID_NOT_END))
}

async fn names<F: VirtualFs>(fs: &F, dir: Ino) -> VfsResult<Vec<String>> {
    let mut v: Vec<String> = list(fs, dir, 64).await?.into_iter().map(|(n, _, _)| n).collect();
    v.sort();
    Ok(v)
}

async fn attr_of<F: VirtualFs>(fs: &F, ino: Ino) -> VfsResult<Attr> {
    fs.getattr(&CTX, ino, None).await
}

/// What each scenario needs; a backend lacking one of them skips it (see [`Cap`]).
/// Scenarios not listed need writes only.
pub fn needs(scenario: &str) -> &'static [Cap] {
    use Cap::*;
    match scenario {
        "tree_walk" | "statfs_sane" | "absent_capabilities_answer_errno" => &[],
        "rename_noreplace" => &[Writes, RenameFlags, HardLinks],
        "rename_exchange" => &[Writes, RenameFlags],
        "hard_link_counts" => &[Writes, HardLinks],
        "symlink_and_readlink" => &[Writes, Symlinks],
        "mknod_kinds" => &[Writes, SpecialFiles],
        "xattrs" => &[Writes, Xattrs],
        "ctime_rules" => &[Writes, Timestamps, HardLinks],
        "mtime_rules" => &[Writes, Timestamps],
        "space_accounting" => &[Writes, SpaceAccounting],
        "caller_rules" => &[Writes, CallerRules],
        _ => &[Writes],
    }
}

/// Most nodes [`tree_walk`] visits.
const WALK_MAX: usize = 1000;

/// Works on any backend, read-only ones included: walks the tree from the root (after
/// making a small one if the backend can write) and checks that listings read one entry
/// at a time and 64 at a time agree, that every listed name looks up to the listed inode
/// and type, that `getattr` agrees, that each directory's `..` is its parent, that a
/// regular file reads exactly `size` bytes, and that a missing name is `ENOENT`.
pub async fn tree_walk<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    if b.caps().has(Cap::Writes) {
        let d = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await, "mkdir d");
        kit_try!(mkfile(fs, d.ino, "f", b"walk").await, "create d/f");
        kit_try!(mkfile(fs, Ino::ROOT, "top", b"").await, "create top");
    }
    kit_expect_err!(
        fs.lookup(&CTX, Ino::ROOT, nm("kit-no-such-name")).await,
        Errno::ENOENT,
        "[lookup.missing] lookup of a missing name"
    );
    let up = kit_try!(dotdot(fs, Ino::ROOT).await, "readdir / for ..");
    kit_eq!(up, Some(Ino::ROOT), "the root's .. is the root");
    let mut queue = vec![Ino::ROOT];
    let mut visited = 0usize;
    while let Some(dir) = queue.pop() {
        let one = kit_try!(list(fs, dir, 1).await, "readdir {dir:?} one entry at a time");
        let mut many = kit_try!(list(fs, dir, 64).await, "readdir {dir:?} 64 at a time");
        let mut sorted = one.clone();
        sorted.sort();
        many.sort();
        kit_eq!(
            sorted,
            many,
            "[readdir.pages] a listing of {dir:?} does not depend on the page size"
        );
        for (name, kind, ino) in one {
            visited += 1;
            kit_ensure!(visited <= WALK_MAX, "tree_walk: more than {WALK_MAX} nodes (a cycle?)");
            let looked = kit_try!(
                fs.lookup(&CTX, dir, nm(&name)).await,
                "lookup {name:?} listed in {dir:?}"
            );
            kit_eq!(
                (looked.ino, looked.kind),
                (ino, kind),
                "lookup of {name:?} agrees with its listing"
            );
            let got = kit_try!(attr_of(fs, ino).await, "getattr of {name:?} ({ino:?})");
            kit_eq!(
                (got.ino, got.kind),
                (ino, kind),
                "getattr of {name:?} agrees with lookup"
            );
            match kind {
                FileType::Directory => {
                    let up = kit_try!(dotdot(fs, ino).await, "readdir {name:?} for ..");
                    kit_eq!(up, Some(dir), "the .. of directory {name:?}");
                    queue.push(ino);
                }
                FileType::Regular => {
                    let data = kit_try!(read_all(fs, ino).await, "read {name:?} to the end");
                    kit_eq!(
                        data.len() as u64,
                        got.size,
                        "reading {name:?} to the end gives `size` bytes"
                    );
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Fails, with the rule (its id first) and file and line, unless `r` is an error among
/// `accepted`.
#[track_caller]
fn expect_one_of<T>(r: VfsResult<T>, accepted: &[Errno], rule: &str) -> KitResult {
    let at = std::panic::Location::caller();
    let seen = match r {
        Err(e) if accepted.contains(&e.errno()) => return Ok(()),
        Err(e) => format!("{:?} ({e:?})", e.errno()),
        Ok(_) => "success".to_string(),
    };
    Err(Failure(format!(
        "rule: {rule}\n  expected: one of {accepted:?}\n  seen:     {seen}\n  at: {}:{}",
        at.file(),
        at.line()
    )))
}

/// Fails unless `r` is an error among `accepted`.
fn absent_answer<T>(r: VfsResult<T>, accepted: &[Errno], what: &str) -> KitResult {
    match r {
        Err(e) if accepted.contains(&e.errno()) => {
            println!("absent: {what} answered {:?}", e.errno());
            Ok(())
        }
        Err(e) => Err(Failure(format!(
            "rule: [absent.errno] {what}\n  expected: one of {accepted:?}\n  seen:     {:?} ({e:?})",
            e.errno()
        ))),
        Ok(_) => Err(Failure(format!(
            "rule: [absent.errno] {what}\n  expected: one of {accepted:?}\n  seen:     success"
        ))),
    }
}

/// For every capability the backend declares absent, the operations that need it answer
/// with one of [`Cap::absent_errnos`] (`EROFS` for writes, `EOPNOTSUPP` for xattrs, ...).
/// A backend that lacks writes may answer `EROFS` to anything that would write.
pub async fn absent_capabilities_answer_errno<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let caps: Caps = b.caps();
    let writes = caps.has(Cap::Writes);
    let or_rofs = |cap: Cap| -> Vec<Errno> {
        let mut v = cap.absent_errnos().to_vec();
        if !writes {
            v.extend_from_slice(Cap::Writes.absent_errnos());
        }
        v
    };
    // A regular file to work on: made if the backend writes, else the first one listed.
    let file = if writes {
        Some(kit_try!(
            mkfile(fs, Ino::ROOT, "kit-absent", b"x").await,
            "create kit-absent"
        ))
    } else {
        let entries = kit_try!(list(fs, Ino::ROOT, 64).await, "readdir /");
        entries.into_iter().find(|e| e.1 == FileType::Regular).map(|e| e.2)
    };
    let wrofs = Cap::Writes.absent_errnos();
    if !writes {
        absent_answer(
            fs.create(&CTX, Ino::ROOT, nm("kit-new"), 0o644, 0, OpenFlags::RDWR)
                .await,
            wrofs,
            "create without writes",
        )?;
        absent_answer(
            fs.mkdir(&CTX, Ino::ROOT, nm("kit-new"), 0o755, 0).await,
            wrofs,
            "mkdir without writes",
        )?;
        absent_answer(
            fs.setattr(&CTX, Ino::ROOT, SetAttr::mode(0o700)).await,
            wrofs,
            "chmod without writes",
        )?;
        if let Some(f) = file {
            absent_answer(
                fs.open(&CTX, f, OpenFlags::WRONLY).await,
                &[Errno::EROFS],
                "open for writing without writes",
            )?;
        }
    }
    if !caps.has(Cap::Xattrs) {
        let k = OsStr::new("user.kit");
        let no = Cap::Xattrs.absent_errnos();
        absent_answer(fs.getxattr(&CTX, Ino::ROOT, k).await, no, "getxattr without xattrs")?;
        absent_answer(fs.listxattr(&CTX, Ino::ROOT).await, no, "listxattr without xattrs")?;
        let set = or_rofs(Cap::Xattrs);
        absent_answer(
            fs.setxattr(&CTX, Ino::ROOT, k, b"v", XattrSet::Any).await,
            &set,
            "setxattr without xattrs",
        )?;
        absent_answer(
            fs.removexattr(&CTX, Ino::ROOT, k).await,
            &set,
            "removexattr without xattrs",
        )?;
    }
    if !caps.has(Cap::HardLinks)
        && let Some(f) = file
    {
        absent_answer(
            fs.link(&CTX, f, Ino::ROOT, nm("kit-link")).await,
            &or_rofs(Cap::HardLinks),
            "link without hard links",
        )?;
    }
    if !caps.has(Cap::Symlinks) {
        absent_answer(
            fs.symlink(&CTX, Ino::ROOT, nm("kit-sym"), OsStr::new("t")).await,
            &or_rofs(Cap::Symlinks),
            "symlink without symbolic links",
        )?;
    }
    if !caps.has(Cap::SpecialFiles) {
        absent_answer(
            fs.mknod(&CTX, Ino::ROOT, nm("kit-fifo"), libc::S_IFIFO | 0o644, 0, 0)
                .await,
            &or_rofs(Cap::SpecialFiles),
            "mknod of a fifo without special files",
        )?;
    }
    if !caps.has(Cap::RenameFlags) && writes {
        kit_try!(mkfile(fs, Ino::ROOT, "kit-other", b"").await, "create kit-other");
        for flags in [RenameFlags::NOREPLACE, RenameFlags::EXCHANGE] {
            absent_answer(
                fs.rename(&CTX, Ino::ROOT, nm("kit-absent"), Ino::ROOT, nm("kit-other"), flags)
                    .await,
                Cap::RenameFlags.absent_errnos(),
                "rename with flags without rename flags",
            )?;
        }
    }
    if !caps.has(Cap::Timestamps) {
        println!("skipped: time-stamp checks (the backend declares no time stamps; nothing to answer)");
    }
    Ok(())
}

/// lookup and getattr agree; a missing name is `ENOENT`; a file as a directory `ENOTDIR`.
pub async fn lookup_and_getattr<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let root = kit_try!(attr_of(fs, Ino::ROOT).await, "getattr of the root");
    kit_ensure!(
        root.ino == Ino::ROOT && root.kind == FileType::Directory,
        "rule: the root is inode 1 and a directory\n  seen: {root:?}"
    );
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "f", b"12345").await, "create f");
    let looked = kit_try!(fs.lookup(&CTX, Ino::ROOT, nm("f")).await, "lookup f");
    let got = kit_try!(attr_of(fs, ino).await, "getattr f");
    kit_ensure!(
        looked.ino == ino && got.ino == ino,
        "rule: lookup and getattr agree on the inode\n  seen: lookup {looked:?}\n  getattr {got:?}"
    );
    kit_ensure!(
        got.size == 5 && got.kind == FileType::Regular && got.nlink == 1,
        "rule: f has size 5, is a regular file, has 1 link\n  seen: {got:?}"
    );
    kit_expect_err!(
        fs.lookup(&CTX, Ino::ROOT, nm("missing")).await,
        Errno::ENOENT,
        "[lookup.missing] lookup of a missing name"
    );
    kit_expect_err!(
        fs.lookup(&CTX, ino, nm("x")).await,
        Errno::ENOTDIR,
        "[lookup.notdir] lookup under a file"
    );
    Ok(())
}

/// `O_EXCL` on an existing name is `EEXIST`; without it the existing file is opened.
pub async fn create_exclusive<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "f", b"keep").await, "create f");
    let excl = OpenFlags::RDWR.with(libc::O_EXCL);
    kit_expect_err!(
        fs.create(&CTX, Ino::ROOT, nm("f"), 0o644, 0, excl).await,
        Errno::EEXIST,
        "[create.excl] O_EXCL create of f"
    );
    let (attr, fh) = kit_try!(
        fs.create(&CTX, Ino::ROOT, nm("f"), 0o644, 0, OpenFlags::RDWR).await,
        "create f again"
    );
    kit_try!(fs.release(&CTX, attr.ino, fh).await, "release");
    kit_ensure!(
        attr.ino == ino,
        "create without O_EXCL opened {:?}, not the existing {ino:?}",
        attr.ino
    );
    kit_bytes_eq!(
        kit_try!(read_all(fs, ino).await, "read f"),
        b"keep",
        "create without O_TRUNC keeps the data"
    );
    Ok(())
}

/// Directory link counts, `ENOTEMPTY`, `ENOTDIR` for rmdir of a file, `EISDIR` for
/// unlink of a directory, `EEXIST` for mkdir over a name.
pub async fn mkdir_rmdir_and_link_counts<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let before = kit_try!(attr_of(fs, Ino::ROOT).await, "getattr /").nlink;
    let d = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await, "mkdir d");
    kit_eq!(
        (d.kind, d.nlink),
        (FileType::Directory, 2),
        "a new directory has 2 links (kind, nlink)"
    );
    kit_eq!(
        kit_try!(attr_of(fs, Ino::ROOT).await, "getattr /").nlink,
        before + 1,
        "[mkdir.parent_nlink] mkdir adds one link to the parent (nlink of /)"
    );
    kit_expect_err!(
        fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await,
        Errno::EEXIST,
        "[mkdir.exists] mkdir over d"
    );
    kit_try!(mkfile(fs, d.ino, "f", b"").await, "create d/f");
    kit_expect_err!(
        fs.rmdir(&CTX, Ino::ROOT, nm("d")).await,
        Errno::ENOTEMPTY,
        "[rmdir.notempty] rmdir of non-empty d"
    );
    kit_expect_err!(
        fs.rmdir(&CTX, d.ino, nm("f")).await,
        Errno::ENOTDIR,
        "[rmdir.notdir] rmdir of a file"
    );
    kit_expect_err!(
        fs.unlink(&CTX, Ino::ROOT, nm("d")).await,
        Errno::EISDIR,
        "[unlink.isdir] unlink of a directory"
    );
    kit_try!(fs.unlink(&CTX, d.ino, nm("f")).await, "unlink d/f");
    kit_try!(fs.rmdir(&CTX, Ino::ROOT, nm("d")).await, "rmdir d");
    kit_eq!(
        kit_try!(attr_of(fs, Ino::ROOT).await, "getattr /").nlink,
        before,
        "[rmdir.parent_nlink] rmdir takes one link from the parent (nlink of /)"
    );
    kit_expect_err!(
        fs.lookup(&CTX, Ino::ROOT, nm("d")).await,
        Errno::ENOENT,
        "[lookup.missing] lookup of removed d"
    );
    Ok(())
}

/// Renaming over an existing file replaces it atomically; the old target's data is gone.
pub async fn rename_over_file<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let a = kit_try!(mkfile(fs, Ino::ROOT, "a", b"new").await, "create a");
    kit_try!(mkfile(fs, Ino::ROOT, "b", b"old").await, "create b");
    kit_try!(
        fs.rename(&CTX, Ino::ROOT, nm("a"), Ino::ROOT, nm("b"), RenameFlags::NONE)
            .await,
        "rename a -> b"
    );
    kit_eq!(
        kit_try!(names(fs, Ino::ROOT).await, "readdir"),
        ["b"],
        "after rename a -> b only b remains"
    );
    let got = kit_try!(fs.lookup(&CTX, Ino::ROOT, nm("b")).await, "lookup b");
    kit_eq!(got.ino, a, "b is the renamed inode");
    kit_bytes_eq!(kit_try!(read_all(fs, a).await, "read b"), b"new", "b holds a's data");
    kit_expect_err!(
        fs.rename(&CTX, Ino::ROOT, nm("a"), Ino::ROOT, nm("c"), RenameFlags::NONE)
            .await,
        Errno::ENOENT,
        "[rename.missing] rename of a missing name"
    );
    Ok(())
}

/// Link counts across renames: a directory moved to another parent takes one link from
/// the old parent and gives one to the new; a file renamed over a name with another hard
/// link leaves that link alive, with one link less and its data.
pub async fn rename_link_counts<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let a = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("a"), 0o755, 0).await, "mkdir a");
    let bd = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("b"), 0o755, 0).await, "mkdir b");
    kit_try!(fs.mkdir(&CTX, a.ino, nm("c"), 0o755, 0).await, "mkdir a/c");
    kit_try!(
        fs.rename(&CTX, a.ino, nm("c"), bd.ino, nm("c"), RenameFlags::NONE)
            .await,
        "rename a/c -> b/c"
    );
    let na = kit_try!(attr_of(fs, a.ino).await, "getattr a").nlink;
    let nb = kit_try!(attr_of(fs, bd.ino).await, "getattr b").nlink;
    kit_eq!(
        (na, nb),
        (2, 3),
        "[rename.dir_nlink] after moving directory a/c to b/c: (nlink of a, nlink of b)"
    );
    if !b.caps().has(Cap::HardLinks) {
        println!("skipped: the hard-link half of `rename_link_counts` (no hard links)");
        return Ok(());
    }
    kit_try!(mkfile(fs, Ino::ROOT, "f", b"new").await, "create f");
    let g = kit_try!(mkfile(fs, Ino::ROOT, "g", b"old").await, "create g");
    kit_try!(fs.link(&CTX, g, Ino::ROOT, nm("h")).await, "link g -> h");
    kit_try!(
        fs.rename(&CTX, Ino::ROOT, nm("f"), Ino::ROOT, nm("g"), RenameFlags::NONE)
            .await,
        "rename f over g"
    );
    let h = kit_try!(fs.lookup(&CTX, Ino::ROOT, nm("h")).await, "lookup h after f replaced g");
    kit_eq!(
        (h.ino, h.nlink),
        (g, 1),
        "[rename.victim_nlink] h, the other link of the replaced g: (inode, nlink)"
    );
    kit_bytes_eq!(
        kit_try!(read_all(fs, g).await, "read h"),
        b"old",
        "[rename.victim_nlink] h keeps g's data"
    );
    Ok(())
}

/// A directory may replace an empty directory, not a non-empty one (`ENOTEMPTY`) nor a
/// file (`ENOTDIR`); a file may not replace a directory (`EISDIR`).
pub async fn rename_over_directories<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let src = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("src"), 0o755, 0).await, "mkdir src");
    kit_try!(mkfile(fs, src.ino, "inside", b"x").await, "create src/inside");
    kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("empty"), 0o755, 0).await, "mkdir empty");
    let full = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("full"), 0o755, 0).await, "mkdir full");
    kit_try!(mkfile(fs, full.ino, "x", b"").await, "create full/x");
    kit_try!(mkfile(fs, Ino::ROOT, "file", b"").await, "create file");
    let r = RenameFlags::NONE;
    kit_expect_err!(
        fs.rename(&CTX, Ino::ROOT, nm("src"), Ino::ROOT, nm("full"), r).await,
        Errno::ENOTEMPTY,
        "[rename.notempty] dir over non-empty dir"
    );
    kit_expect_err!(
        fs.rename(&CTX, Ino::ROOT, nm("src"), Ino::ROOT, nm("file"), r).await,
        Errno::ENOTDIR,
        "[rename.notdir] dir over file"
    );
    kit_expect_err!(
        fs.rename(&CTX, Ino::ROOT, nm("file"), Ino::ROOT, nm("empty"), r).await,
        Errno::EISDIR,
        "[rename.isdir] file over dir"
    );
    let links = kit_try!(attr_of(fs, Ino::ROOT).await, "getattr /").nlink;
    kit_try!(
        fs.rename(&CTX, Ino::ROOT, nm("src"), Ino::ROOT, nm("empty"), r).await,
        "dir over empty dir"
    );
    kit_eq!(
        kit_try!(attr_of(fs, Ino::ROOT).await, "getattr /").nlink,
        links - 1,
        "replacing a directory drops the parent's link count by one"
    );
    let moved = kit_try!(fs.lookup(&CTX, Ino::ROOT, nm("empty")).await, "lookup empty");
    kit_eq!(moved.ino, src.ino, "empty is now src");
    kit_eq!(
        kit_try!(names(fs, src.ino).await, "readdir"),
        ["inside"],
        "content moved with it"
    );
    Ok(())
}

/// Moving a directory into itself or its own subtree is `EINVAL`; moving a file onto
/// one of its ancestors is `ENOTEMPTY`.
pub async fn rename_into_own_subtree<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let a = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("a"), 0o755, 0).await, "mkdir a");
    let ab = kit_try!(fs.mkdir(&CTX, a.ino, nm("b"), 0o755, 0).await, "mkdir a/b");
    let abc = kit_try!(fs.mkdir(&CTX, ab.ino, nm("c"), 0o755, 0).await, "mkdir a/b/c");
    let r = RenameFlags::NONE;
    kit_expect_err!(
        fs.rename(&CTX, Ino::ROOT, nm("a"), a.ino, nm("x"), r).await,
        Errno::EINVAL,
        "[rename.subtree] a -> a/x"
    );
    kit_expect_err!(
        fs.rename(&CTX, Ino::ROOT, nm("a"), abc.ino, nm("x"), r).await,
        Errno::EINVAL,
        "[rename.subtree] a -> a/b/c/x"
    );
    kit_try!(mkfile(fs, abc.ino, "f", b"").await, "create a/b/c/f");
    kit_expect_err!(
        fs.rename(&CTX, abc.ino, nm("f"), Ino::ROOT, nm("a"), r).await,
        Errno::ENOTEMPTY,
        "[rename.notempty] a/b/c/f -> a"
    );
    kit_eq!(
        kit_try!(names(fs, Ino::ROOT).await, "readdir /"),
        ["a"],
        "nothing moved"
    );
    kit_try!(
        fs.rename(&CTX, ab.ino, nm("c"), Ino::ROOT, nm("c"), r).await,
        "a/b/c -> c"
    );
    let up = kit_try!(dotdot(fs, abc.ino).await, "readdir c");
    kit_eq!(up, Some(Ino::ROOT), "[rename.dotdot] after the move, c/.. is the root");
    Ok(())
}

/// `RENAME_NOREPLACE` refuses an existing target with `EEXIST`, even a hard link of the
/// source, and otherwise renames.
pub async fn rename_noreplace<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let a = kit_try!(mkfile(fs, Ino::ROOT, "a", b"a").await, "create a");
    kit_try!(mkfile(fs, Ino::ROOT, "b", b"b").await, "create b");
    kit_try!(fs.link(&CTX, a, Ino::ROOT, nm("a2")).await, "link a2");
    let nr = RenameFlags::NOREPLACE;
    kit_expect_err!(
        fs.rename(&CTX, Ino::ROOT, nm("a"), Ino::ROOT, nm("b"), nr).await,
        Errno::EEXIST,
        "[rename.noreplace] NOREPLACE over b"
    );
    kit_expect_err!(
        fs.rename(&CTX, Ino::ROOT, nm("a"), Ino::ROOT, nm("a2"), nr).await,
        Errno::EEXIST,
        "[rename.noreplace] NOREPLACE over a hard link"
    );
    kit_try!(
        fs.rename(&CTX, Ino::ROOT, nm("a"), Ino::ROOT, nm("c"), nr).await,
        "NOREPLACE to a free name"
    );
    kit_eq!(
        kit_try!(names(fs, Ino::ROOT).await, "readdir"),
        ["a2", "b", "c"],
        "a became c"
    );
    Ok(())
}

/// `RENAME_EXCHANGE` swaps two existing entries, across directories too; a missing
/// target is `ENOENT`.
pub async fn rename_exchange<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let f = kit_try!(mkfile(fs, Ino::ROOT, "f", b"file").await, "create f");
    let d = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await, "mkdir d");
    let sub = kit_try!(fs.mkdir(&CTX, d.ino, nm("sub"), 0o755, 0).await, "mkdir d/sub");
    let x = RenameFlags::EXCHANGE;
    kit_expect_err!(
        fs.rename(&CTX, Ino::ROOT, nm("f"), Ino::ROOT, nm("none"), x).await,
        Errno::ENOENT,
        "[rename.exchange_missing] EXCHANGE with a missing target"
    );
    let root_links = kit_try!(attr_of(fs, Ino::ROOT).await, "getattr /").nlink;
    kit_try!(
        fs.rename(&CTX, Ino::ROOT, nm("f"), d.ino, nm("sub"), x).await,
        "EXCHANGE /f <-> /d/sub"
    );
    kit_eq!(
        kit_try!(fs.lookup(&CTX, Ino::ROOT, nm("f")).await, "lookup /f").ino,
        sub.ino,
        "after EXCHANGE /f is the directory"
    );
    kit_eq!(
        kit_try!(fs.lookup(&CTX, d.ino, nm("sub")).await, "lookup /d/sub").ino,
        f,
        "after EXCHANGE /d/sub is the file"
    );
    kit_eq!(
        kit_try!(attr_of(fs, d.ino).await, "getattr d").nlink,
        2,
        "[rename.dir_nlink] d lost a subdirectory to EXCHANGE: nlink of d"
    );
    kit_eq!(
        kit_try!(attr_of(fs, Ino::ROOT).await, "getattr /").nlink,
        root_links + 1,
        "[rename.dir_nlink] / gained a subdirectory by EXCHANGE: nlink of / (was {root_links})"
    );
    let up = kit_try!(dotdot(fs, sub.ino).await, "readdir /f");
    kit_eq!(
        up,
        Some(Ino::ROOT),
        "[rename.dotdot] the moved directory's .. is the root"
    );
    Ok(())
}

/// An unlinked file stays readable and writable through a handle opened before, until
/// release; then the inode is gone.
pub async fn unlink_while_open<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "f", b"still here").await, "create f");
    let fh = kit_try!(fs.open(&CTX, ino, OpenFlags::RDWR).await, "open f");
    kit_try!(fs.unlink(&CTX, Ino::ROOT, nm("f")).await, "unlink f");
    kit_expect_err!(
        fs.lookup(&CTX, Ino::ROOT, nm("f")).await,
        Errno::ENOENT,
        "[lookup.missing] lookup after unlink"
    );
    let data = kit_try!(fs.read(&CTX, ino, fh, 0, 100).await, "read through the open handle");
    kit_bytes_eq!(
        data,
        b"still here",
        "[unlink.open] an unlinked file stays readable through an open handle"
    );
    kit_try!(fs.write(&CTX, ino, fh, 10, b"!").await, "write through the open handle");
    let attr = kit_try!(fs.getattr(&CTX, ino, Some(fh)).await, "getattr through the handle");
    kit_eq!(
        (attr.nlink, attr.size),
        (0, 11),
        "an unlinked open file: (nlink, size) after a write at 10"
    );
    kit_try!(fs.release(&CTX, ino, fh).await, "release");
    kit_ensure!(
        fs.getattr(&CTX, ino, None).await.is_err(),
        "rule: [unlink.open] an unlinked inode is gone after its last release\n  seen: getattr of {ino:?} still succeeds"
    );
    Ok(())
}

/// Hard links share data and count names.
pub async fn hard_link_counts<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "a", b"shared").await, "create a");
    let d = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await, "mkdir d");
    let l = kit_try!(fs.link(&CTX, ino, d.ino, nm("b")).await, "link d/b");
    kit_eq!(
        (l.ino, l.nlink),
        (ino, 2),
        "link returns the inode with one more name: (ino, nlink)"
    );
    kit_expect_err!(
        fs.link(&CTX, ino, d.ino, nm("b")).await,
        Errno::EEXIST,
        "[link.exists] link over an existing name"
    );
    kit_expect_err!(
        fs.link(&CTX, d.ino, Ino::ROOT, nm("dd")).await,
        Errno::EPERM,
        "[link.dir] link of a directory"
    );
    let fh = kit_try!(fs.open(&CTX, ino, OpenFlags::RDWR).await, "open");
    kit_try!(fs.write(&CTX, ino, fh, 0, b"S").await, "write through one name");
    kit_try!(fs.release(&CTX, ino, fh).await, "release");
    let other = kit_try!(fs.lookup(&CTX, d.ino, nm("b")).await, "lookup d/b");
    kit_bytes_eq!(
        kit_try!(read_all(fs, other.ino).await, "read d/b"),
        b"Shared",
        "both names see the write"
    );
    kit_try!(fs.unlink(&CTX, Ino::ROOT, nm("a")).await, "unlink a");
    kit_eq!(
        kit_try!(attr_of(fs, ino).await, "getattr").nlink,
        1,
        "one name left: nlink"
    );
    Ok(())
}

/// A write far past the end leaves a hole that reads as zeros; reads stop at the end.
pub async fn sparse_write_reads_zeros<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let (attr, fh) = kit_try!(
        fs.create(&CTX, Ino::ROOT, nm("f"), 0o644, 0, OpenFlags::RDWR).await,
        "create f"
    );
    let ino = attr.ino;
    kit_try!(fs.write(&CTX, ino, fh, 0, b"head").await, "write head");
    let far = 10 * 1024 * 1024 + 7;
    kit_try!(fs.write(&CTX, ino, fh, far, b"tail").await, "write tail past a hole");
    let size = kit_try!(attr_of(fs, ino).await, "getattr").size;
    kit_eq!(size, far + 4, "a write past the end sets the size to its end");
    let hole = kit_try!(fs.read(&CTX, ino, fh, 4096, 65536).await, "read inside the hole");
    kit_bytes_eq!(
        hole,
        vec![0u8; 65536],
        "[read.hole] 64 KiB read inside a hole are zeros"
    );
    let edge = kit_try!(fs.read(&CTX, ino, fh, far - 2, 100).await, "read across the tail");
    kit_bytes_eq!(edge, b"\0\0tail", "a read across the tail stops at the end");
    let past = kit_try!(fs.read(&CTX, ino, fh, far + 4, 100).await, "read at the end");
    kit_eq!(past.len(), 0, "a read at end of file returns no bytes");
    kit_try!(fs.release(&CTX, ino, fh).await, "release");
    Ok(())
}

/// Truncation down drops data; up exposes zeros, never the old bytes.
pub async fn truncate_up_and_down<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "f", b"0123456789").await, "create f");
    let a = kit_try!(fs.setattr(&CTX, ino, SetAttr::size(4)).await, "truncate to 4");
    kit_eq!(a.size, 4, "size after truncate down");
    kit_try!(fs.setattr(&CTX, ino, SetAttr::size(8)).await, "truncate up to 8");
    let data = kit_try!(read_all(fs, ino).await, "read");
    kit_bytes_eq!(
        data,
        b"0123\0\0\0\0",
        "[setattr.truncate_zeros] truncate down then up exposes zeros"
    );
    // Past the largest size a file can have (Linux's MAX_LFS_FILESIZE is i64::MAX; a
    // filesystem may have a smaller limit): EFBIG, or EINVAL for a size no off_t holds.
    let too_big = [Errno::EFBIG, Errno::EINVAL];
    for size in [1u64 << 63, u64::MAX] {
        expect_one_of(
            fs.setattr(&CTX, ino, SetAttr::size(size)).await,
            &too_big,
            &format!("[setattr.too_big] truncate to {size}"),
        )?;
    }
    let fh = kit_try!(fs.open(&CTX, ino, OpenFlags::RDWR).await, "open f O_RDWR");
    expect_one_of(
        fs.write(&CTX, ino, fh, i64::MAX as u64, b"x").await,
        &too_big,
        "[write.too_big] a write of 1 byte at offset i64::MAX (it would end past the largest size)",
    )?;
    kit_try!(fs.release(&CTX, ino, fh).await, "release f");
    let a = kit_try!(attr_of(fs, ino).await, "getattr f");
    kit_eq!(
        a.size,
        8,
        "[setattr.too_big] a refused truncate or write leaves the size"
    );
    let d = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await, "mkdir");
    kit_expect_err!(
        fs.setattr(&CTX, d.ino, SetAttr::size(0)).await,
        Errno::EISDIR,
        "[setattr.truncate_dir] truncate of a directory"
    );
    Ok(())
}

/// `O_TRUNC` empties the file; an `O_APPEND` handle writes at the end whatever offset it
/// is given.
pub async fn open_truncate_and_append<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "f", b"abc").await, "create f");
    let fh = kit_try!(
        fs.open(&CTX, ino, OpenFlags::WRONLY.with(libc::O_APPEND)).await,
        "open O_APPEND"
    );
    kit_try!(fs.write(&CTX, ino, fh, 0, b"def").await, "append");
    kit_try!(fs.release(&CTX, ino, fh).await, "release");
    kit_bytes_eq!(
        kit_try!(read_all(fs, ino).await, "read"),
        b"abcdef",
        "[write.append] an O_APPEND handle writes at the end"
    );
    let fh = kit_try!(
        fs.open(&CTX, ino, OpenFlags::RDWR.with(libc::O_TRUNC)).await,
        "open O_TRUNC"
    );
    kit_try!(fs.release(&CTX, ino, fh).await, "release");
    kit_eq!(
        kit_try!(attr_of(fs, ino).await, "getattr").size,
        0,
        "[open.trunc] O_TRUNC empties the file: size"
    );
    Ok(())
}

/// A handle records its access mode: writing through a read-only handle, or reading
/// through a write-only one, is `EBADF`.
pub async fn handle_access_modes<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "f", b"abc").await, "create f");
    let ro = kit_try!(fs.open(&CTX, ino, OpenFlags::RDONLY).await, "open O_RDONLY");
    kit_expect_err!(
        fs.write(&CTX, ino, ro, 0, b"x").await,
        Errno::EBADF,
        "[write.badf] write through O_RDONLY"
    );
    let wo = kit_try!(fs.open(&CTX, ino, OpenFlags::WRONLY).await, "open O_WRONLY");
    kit_expect_err!(
        fs.read(&CTX, ino, wo, 0, 1).await,
        Errno::EBADF,
        "[read.badf] read through O_WRONLY"
    );
    kit_try!(fs.release(&CTX, ino, ro).await, "release ro");
    kit_try!(fs.release(&CTX, ino, wo).await, "release wo");
    kit_bytes_eq!(
        kit_try!(read_all(fs, ino).await, "read"),
        b"abc",
        "nothing was written through the refused handles"
    );
    Ok(())
}

/// A listing resumed by cookies while other entries are created and removed repeats no
/// name and lists every untouched entry exactly once.
pub async fn readdir_cookies_while_changing<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    for i in 0..40 {
        kit_try!(
            mkfile(fs, Ino::ROOT, &format!("keep{i:02}"), b"").await,
            "create keep{i}"
        );
        kit_try!(
            mkfile(fs, Ino::ROOT, &format!("gone{i:02}"), b"").await,
            "create gone{i}"
        );
    }
    for cookie in [0, 1] {
        let page = kit_try!(
            fs.readdir(&CTX, Ino::ROOT, cookie, 1).await,
            "readdir from cookie {cookie}, max 1"
        );
        kit_eq!(
            page.len(),
            1,
            "[readdir.max] readdir from cookie {cookie} with max 1 (`.` and `..` count too): entries returned"
        );
    }
    let mut seen = Vec::new();
    let mut removable: Vec<String> = Vec::new();
    let mut cookie = 0;
    let mut round = 0;
    loop {
        // Four per page: with one removal per page a positional cursor then skips a
        // different kind of entry each round, whatever the backend's order.
        let page = kit_try!(fs.readdir(&CTX, Ino::ROOT, cookie, 4).await, "readdir page {round}");
        let Some(last) = page.last() else { break };
        kit_ensure!(
            page.len() <= 4,
            "rule: [readdir.max] readdir returns at most `max` entries\n  expected: at most 4\n  seen:     {} entries",
            page.len()
        );
        kit_ensure!(
            page.iter().all(|e| e.cookie != 0),
            "rule: no entry has cookie 0 (0 means the start)\n  seen: {page:?}"
        );
        kit_ensure!(
            page.iter().all(|e| e.cookie <= i64::MAX as u64),
            "rule: [readdir.cookie_range] cookies are positive as a signed 64-bit offset (FUSE and NFS clients keep them as off_t)\n  seen: {page:?}"
        );
        cookie = last.cookie;
        let names: Vec<String> = page
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        // Remove an entry the listing has already passed (that is what shifts positions
        // in a backend whose cookies are offsets) and add a new one.
        removable.extend(names.iter().filter(|n| n.starts_with("gone")).cloned());
        seen.extend(names);
        if let Some(gone) = removable.pop() {
            kit_try!(fs.unlink(&CTX, Ino::ROOT, nm(&gone)).await, "unlink {gone}");
            kit_try!(
                mkfile(fs, Ino::ROOT, &format!("new{round:02}"), b"").await,
                "create new{round}"
            );
        }
        round += 1;
        kit_ensure!(
            round < 1000,
            "rule: a listing by pages of 4 ends\n  seen: no end after 1000 pages"
        );
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in &seen {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    for (name, n) in &counts {
        kit_ensure!(
            *n == 1,
            "rule: [readdir.no_repeat] a listing never repeats a name\n  seen: {name} listed {n} times"
        );
    }
    for i in 0..40 {
        let k = format!("keep{i:02}");
        kit_ensure!(
            counts.contains_key(k.as_str()),
            "rule: [readdir.all_untouched] a listing resumed by cookies lists every untouched entry\n  seen: untouched {k} missing from the listing"
        );
    }
    kit_ensure!(
        counts.contains_key(".") && counts.contains_key(".."),
        "rule: a listing from cookie 0 lists . and ..\n  seen: names {:?}",
        counts.keys().collect::<Vec<_>>()
    );
    Ok(())
}

/// Symlinks store their target verbatim; readlink of a file is `EINVAL`.
pub async fn symlink_and_readlink<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let target = OsStr::new("../somewhere/else");
    let s = kit_try!(fs.symlink(&CTX, Ino::ROOT, nm("s"), target).await, "symlink s");
    kit_eq!(
        (s.kind, s.size),
        (FileType::Symlink, target.len() as u64),
        "a symlink's kind and size (the target's length)"
    );
    kit_eq!(
        kit_try!(fs.readlink(&CTX, s.ino).await, "readlink s"),
        target,
        "readlink gives back the target verbatim"
    );
    let f = kit_try!(mkfile(fs, Ino::ROOT, "f", b"").await, "create f");
    kit_expect_err!(
        fs.readlink(&CTX, f).await,
        Errno::EINVAL,
        "[readlink.notlink] readlink of a file"
    );
    kit_expect_err!(
        fs.symlink(&CTX, Ino::ROOT, nm("s"), target).await,
        Errno::EEXIST,
        "[symlink.exists] symlink over a name"
    );
    Ok(())
}

/// mknod makes fifos, sockets, device nodes and regular files (which then hold data like
/// any other).
pub async fn mknod_kinds<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    for (name, mode, kind) in [
        ("fifo", libc::S_IFIFO | 0o644, FileType::Fifo),
        ("sock", libc::S_IFSOCK | 0o644, FileType::Socket),
        ("chr", libc::S_IFCHR | 0o644, FileType::CharDevice),
        ("blk", libc::S_IFBLK | 0o644, FileType::BlockDevice),
        ("reg", libc::S_IFREG | 0o644, FileType::Regular),
    ] {
        let a = kit_try!(
            fs.mknod(&CTX, Ino::ROOT, nm(name), mode, 0, 0x0103).await,
            "mknod {name}"
        );
        kit_eq!(a.kind, kind, "mknod {name} makes the type of its mode");
        let l = kit_try!(fs.lookup(&CTX, Ino::ROOT, nm(name)).await, "lookup {name}");
        kit_eq!(l.kind, kind, "lookup {name} gives the type mknod made");
        if matches!(kind, FileType::CharDevice | FileType::BlockDevice) {
            kit_eq!(l.rdev, 0x0103, "{name} keeps its device number");
        }
    }
    let reg = kit_try!(fs.lookup(&CTX, Ino::ROOT, nm("reg")).await, "lookup reg");
    let fh = kit_try!(fs.open(&CTX, reg.ino, OpenFlags::RDWR).await, "open reg O_RDWR");
    kit_try!(fs.write(&CTX, reg.ino, fh, 0, b"data").await, "write to reg");
    kit_try!(fs.release(&CTX, reg.ino, fh).await, "release reg");
    let data = kit_try!(read_all(fs, reg.ino).await, "read reg");
    kit_bytes_eq!(
        data,
        b"data",
        "[mknod.regular] a regular file made by mknod holds data like one made by create"
    );
    Ok(())
}

/// Whether a backend answered "this operation or mode is not supported" (`EOPNOTSUPP`, or
/// `ENOSYS`, the trait's default): the kit then skips what needed it.
fn not_supported<T>(r: &VfsResult<T>) -> bool {
    matches!(r, Err(e) if matches!(e.errno(), Errno::EOPNOTSUPP | Errno::ENOSYS))
}

/// fallocate: mode 0 extends the size to `offset + length` and never shrinks it,
/// `FALLOC_FL_KEEP_SIZE` keeps the size, `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`
/// zeroes exactly the punched range (across 64 KiB boundaries and past the end) and keeps
/// the size, a zero length is `EINVAL`, a read-only handle `EBADF`. A mode the backend
/// answers `EOPNOTSUPP` (or `ENOSYS`) for is skipped, with a printed `skipped:` line.
pub async fn fallocate_modes<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    const K: u64 = 64 * 1024;
    let mut want: Vec<u8> = (0..3 * K + 100).map(|i| (i % 251) as u8 + 1).collect();
    let ino = kit_try!(
        mkfile(fs, Ino::ROOT, "f", &want).await,
        "create f with {} bytes",
        want.len()
    );
    let fh = kit_try!(fs.open(&CTX, ino, OpenFlags::RDWR).await, "open f O_RDWR");
    let size0 = want.len() as u64;
    let r = fs.fallocate(&CTX, ino, fh, 0, 10, 0).await;
    if not_supported(&r) {
        println!(
            "skipped: kit check `fallocate_modes`: the backend answers {:?} for fallocate",
            r.err().map(|e| e.errno())
        );
        kit_try!(fs.release(&CTX, ino, fh).await, "release");
        return Ok(());
    }
    kit_try!(r, "fallocate(0, 10, mode 0) inside the file");
    let size = kit_try!(attr_of(fs, ino).await, "getattr").size;
    kit_eq!(
        size,
        size0,
        "[fallocate.extend] mode 0 inside the file never changes its size"
    );
    kit_expect_err!(
        fs.fallocate(&CTX, ino, fh, 0, 0, 0).await,
        Errno::EINVAL,
        "[fallocate.zero_len] fallocate of length 0"
    );
    // A mode bit Linux does not define: EOPNOTSUPP, and nothing changes.
    kit_expect_err!(
        fs.fallocate(&CTX, ino, fh, 0, 10, 0x4000_0000).await,
        Errno::EOPNOTSUPP,
        "[fallocate.unknown_mode] fallocate with an undefined mode bit (0x40000000)"
    );
    let data = kit_try!(read_all(fs, ino).await, "read f");
    kit_bytes_eq!(
        data,
        want,
        "[fallocate.unknown_mode] a refused fallocate leaves the data"
    );
    kit_try!(
        fs.fallocate(&CTX, ino, fh, size0 - 50, 1000, 0).await,
        "fallocate(size - 50, 1000, mode 0)"
    );
    want.resize(size0 as usize + 950, 0);
    let size = kit_try!(attr_of(fs, ino).await, "getattr").size;
    kit_eq!(
        size,
        size0 + 950,
        "[fallocate.extend] mode 0 past the end sets the size to offset + length"
    );
    let size1 = size;
    let r = fs
        .fallocate(&CTX, ino, fh, size1 + 10, 5000, libc::FALLOC_FL_KEEP_SIZE)
        .await;
    if not_supported(&r) {
        println!(
            "skipped: FALLOC_FL_KEEP_SIZE (the backend answers {:?})",
            r.err().map(|e| e.errno())
        );
    } else {
        kit_try!(r, "fallocate past the end with FALLOC_FL_KEEP_SIZE");
        let size = kit_try!(attr_of(fs, ino).await, "getattr").size;
        kit_eq!(size, size1, "[fallocate.keep_size] FALLOC_FL_KEEP_SIZE keeps the size");
    }
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // One hole across two 64 KiB boundaries (a whole chunk of MemFs and parts of two),
    // one that runs past the end of the file.
    for (off, len) in [(10, 2 * K), (size1 - 5, 100)] {
        let r = fs.fallocate(&CTX, ino, fh, off, len, punch).await;
        if not_supported(&r) {
            println!(
                "skipped: FALLOC_FL_PUNCH_HOLE (the backend answers {:?})",
                r.err().map(|e| e.errno())
            );
            break;
        }
        kit_try!(r, "punch a hole at {off}, {len} bytes");
        let end = (off + len).min(size1) as usize;
        want[off as usize..end].fill(0);
        let size = kit_try!(attr_of(fs, ino).await, "getattr").size;
        kit_eq!(
            size,
            size1,
            "[fallocate.punch] punching a hole at {off}, {len} bytes keeps the size"
        );
        let data = kit_try!(read_all(fs, ino).await, "read f");
        kit_bytes_eq!(
            data,
            want,
            "[fallocate.punch] a hole punched at {off}, {len} bytes reads as zeros, the rest unchanged"
        );
    }
    kit_try!(fs.release(&CTX, ino, fh).await, "release");
    let ro = kit_try!(fs.open(&CTX, ino, OpenFlags::RDONLY).await, "open f O_RDONLY");
    kit_expect_err!(
        fs.fallocate(&CTX, ino, ro, 0, size1 + 10, 0).await,
        Errno::EBADF,
        "[fallocate.badf] fallocate through an O_RDONLY handle"
    );
    kit_try!(fs.release(&CTX, ino, ro).await, "release");
    Ok(())
}

/// New nodes get `mode & !umask`; in a setgid directory they take the directory's group,
/// and a new subdirectory keeps the setgid bit (Linux `inode_init_owner`).
pub async fn new_node_mode_and_setgid<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let show = |a: &Attr| format!("gid {} mode {:o}", a.gid, a.perm);
    let (f, fh) = kit_try!(
        fs.create(&CTX, Ino::ROOT, nm("f"), 0o666, 0o022, OpenFlags::RDWR).await,
        "create f, mode 666, umask 022"
    );
    kit_try!(fs.release(&CTX, f.ino, fh).await, "release f");
    kit_eq!(
        format!("{:o}", f.perm),
        "644",
        "[create.mode] create applies the umask: mode of f (666 & !022)"
    );
    let d = kit_try!(
        fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o777, 0o022).await,
        "mkdir d, mode 777, umask 022"
    );
    kit_eq!(
        format!("{:o}", d.perm),
        "755",
        "[create.mode] mkdir applies the umask: mode of d (777 & !022)"
    );
    let chgrp = SetAttr {
        gid: Some(7),
        ..SetAttr::default()
    };
    kit_try!(fs.setattr(&CTX, d.ino, chgrp).await, "chown d to group 7");
    kit_try!(fs.setattr(&CTX, d.ino, SetAttr::mode(0o2775)).await, "chmod d 2775");
    let (g, fh) = kit_try!(
        fs.create(&CTX, d.ino, nm("g"), 0o644, 0, OpenFlags::RDWR).await,
        "create d/g, mode 644"
    );
    kit_try!(fs.release(&CTX, g.ino, fh).await, "release d/g");
    kit_eq!(
        show(&g),
        "gid 7 mode 644",
        "[create.setgid_dir] a file made in a setgid directory takes its group, without the setgid bit (d/g)"
    );
    let s = kit_try!(fs.mkdir(&CTX, d.ino, nm("s"), 0o755, 0).await, "mkdir d/s, mode 755");
    kit_eq!(
        show(&s),
        "gid 7 mode 2755",
        "[create.setgid_dir] a directory made in a setgid directory takes its group and the setgid bit (d/s)"
    );
    Ok(())
}

/// chown of a regular file clears setuid, and setgid only when group-exec is set (setgid
/// without group-exec marks mandatory locking and stays), as Linux does even for root.
/// A backend that refuses to make setuid files (`EPERM`) skips this check.
pub async fn chown_clears_setuid<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    for (name, mode, want) in [("f", 0o6745, "2745"), ("g", 0o6755, "755")] {
        let ino = kit_try!(mkfile(fs, Ino::ROOT, name, b"").await, "create {name}");
        match fs.setattr(&CTX, ino, SetAttr::mode(mode)).await {
            Err(e) if e.errno() == Errno::EPERM => {
                println!("skipped: kit check `chown_clears_setuid`: chmod {mode:o} answered EPERM");
                return Ok(());
            }
            r => drop(kit_try!(r, "chmod {name} {mode:o}")),
        }
        let chown = SetAttr {
            uid: Some(1),
            ..SetAttr::default()
        };
        let a = kit_try!(fs.setattr(&CTX, ino, chown).await, "chown {name} to uid 1");
        kit_eq!(
            format!("{:o}", a.perm),
            want,
            "[setattr.chown_clears_suid] mode of {name} (was {mode:o}) after chown"
        );
    }
    Ok(())
}

/// `open` by kind: a directory opens read-only and is `EISDIR` for writing; a symlink's
/// own inode is `ELOOP` (what `O_NOFOLLOW` answers).
pub async fn open_kinds<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let d = kit_try!(fs.mkdir(&CTX, Ino::ROOT, nm("d"), 0o755, 0).await, "mkdir d");
    let fh = kit_try!(
        fs.open(&CTX, d.ino, OpenFlags::RDONLY).await,
        "[open.dir] open d O_RDONLY"
    );
    kit_try!(fs.release(&CTX, d.ino, fh).await, "release d");
    for (flags, what) in [(OpenFlags::WRONLY, "O_WRONLY"), (OpenFlags::RDWR, "O_RDWR")] {
        kit_expect_err!(
            fs.open(&CTX, d.ino, flags).await,
            Errno::EISDIR,
            "[open.dir] open of a directory {what}"
        );
    }
    if b.caps().has(Cap::Symlinks) {
        let l = kit_try!(
            fs.symlink(&CTX, Ino::ROOT, nm("l"), OsStr::new("d")).await,
            "symlink l -> d"
        );
        for (flags, what) in [(OpenFlags::RDONLY, "O_RDONLY"), (OpenFlags::RDWR, "O_RDWR")] {
            kit_expect_err!(
                fs.open(&CTX, l.ino, flags).await,
                Errno::ELOOP,
                "[open.symlink] open of a symlink's own inode {what}"
            );
        }
    }
    Ok(())
}

/// With [`Cap::CallerRules`]: a write by a caller other than root clears setuid, and
/// setgid when group-exec is set (Linux's `file_remove_privs`); root's write clears
/// nothing; `trusted.*` xattrs are root's (a user's set is `EPERM`, a user's get
/// `ENODATA`).
pub async fn caller_rules<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let user = RequestCtx::new(1000, 1000, 0);
    let owned = SetAttr {
        uid: Some(user.uid),
        gid: Some(user.gid),
        ..SetAttr::default()
    };
    for (name, who, mode, want) in [
        ("u", user, 0o6755, 0o755),
        ("g", user, 0o6745, 0o2745),
        ("p", user, 0o755, 0o755),
        ("r", CTX, 0o6755, 0o6755),
    ] {
        let ino = kit_try!(mkfile(fs, Ino::ROOT, name, b"0123").await, "create {name}");
        kit_try!(fs.setattr(&CTX, ino, owned).await, "chown {name} to 1000:1000");
        kit_try!(
            fs.setattr(&CTX, ino, SetAttr::mode(mode)).await,
            "chmod {name} {mode:o}"
        );
        let fh = kit_try!(
            fs.open(&who, ino, OpenFlags::WRONLY).await,
            "open {name} O_WRONLY as uid {}",
            who.uid
        );
        kit_try!(
            fs.write(&who, ino, fh, 1, b"x").await,
            "write to {name} as uid {}",
            who.uid
        );
        kit_try!(fs.release(&who, ino, fh).await, "release {name}");
        let a = kit_try!(attr_of(fs, ino).await, "getattr {name}");
        kit_eq!(
            format!("{:o}", a.perm),
            format!("{want:o}"),
            "[write.clears_suid] mode of {name} (was {mode:o}, owner 1000) after a write by uid {}",
            who.uid
        );
        let data = kit_try!(read_all(fs, ino).await, "read {name}");
        kit_bytes_eq!(data, b"0x23", "the write to {name} landed");
    }
    if b.caps().has(Cap::Xattrs) {
        let ino = kit_try!(mkfile(fs, Ino::ROOT, "t", b"").await, "create t");
        let k = OsStr::new("trusted.kit");
        kit_expect_err!(
            fs.setxattr(&user, ino, k, b"v", XattrSet::Any).await,
            Errno::EPERM,
            "[xattr.trusted] setxattr of trusted.kit by uid 1000"
        );
        kit_try!(
            fs.setxattr(&CTX, ino, k, b"v", XattrSet::Any).await,
            "setxattr trusted.kit as root"
        );
        kit_expect_err!(
            fs.getxattr(&user, ino, k).await,
            Errno::ENODATA,
            "[xattr.trusted] getxattr of root's trusted.kit by uid 1000"
        );
        let v = kit_try!(fs.getxattr(&CTX, ino, k).await, "getxattr trusted.kit as root");
        kit_bytes_eq!(v, b"v", "[xattr.trusted] root reads its trusted.kit");
    }
    Ok(())
}

/// With [`Cap::SpaceAccounting`]: `statfs` and `st_blocks` count what the backend stores.
/// A new file takes an inode; 1 MiB written takes at least 1 MiB of blocks from `bfree`
/// and shows in `st_blocks`; a punched hole (if the backend punches) and a truncation
/// give blocks back; removing the file and releasing its last handle gives back exactly
/// what it took.
pub async fn space_accounting<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    const LEN: u64 = 1 << 20;
    let s0 = kit_try!(fs.statfs(&CTX, Ino::ROOT).await, "statfs at the start");
    let unit = u64::from(s0.frsize.max(1));
    let (attr, fh) = kit_try!(
        fs.create(&CTX, Ino::ROOT, nm("space"), 0o644, 0, OpenFlags::RDWR).await,
        "create space"
    );
    let ino = attr.ino;
    let s1 = kit_try!(fs.statfs(&CTX, Ino::ROOT).await, "statfs after create");
    kit_ensure!(
        s1.ffree < s0.ffree,
        "rule: [statfs.inodes] a new file takes an inode from ffree\n  before: {}\n  after:  {}",
        s0.ffree,
        s1.ffree
    );
    // 48 KiB pieces: most writes extend a block (or a backend's chunk) that an earlier
    // write began, where accounting slips most easily.
    let piece: Vec<u8> = (0..48 * 1024u64).map(|i| (i % 251) as u8 + 1).collect();
    for off in (0..LEN).step_by(piece.len()) {
        let part = &piece[..piece.len().min((LEN - off) as usize)];
        let n = kit_try!(
            fs.write(&CTX, ino, fh, off, part).await,
            "write {} bytes at {off}",
            part.len()
        );
        kit_eq!(n as usize, part.len(), "a write's count");
    }
    let s2 = kit_try!(fs.statfs(&CTX, Ino::ROOT).await, "statfs after writing 1 MiB");
    let a2 = kit_try!(attr_of(fs, ino).await, "getattr after writing 1 MiB");
    let want = LEN / unit;
    kit_ensure!(
        s1.bfree.saturating_sub(s2.bfree) >= want,
        "rule: [statfs.blocks] writing {LEN} bytes takes at least {want} blocks of {unit} bytes from bfree\n  before: {}\n  after:  {}",
        s1.bfree,
        s2.bfree
    );
    kit_ensure!(
        a2.blocks * 512 >= LEN,
        "rule: [statfs.blocks] st_blocks (512-byte units) counts {LEN} written bytes\n  seen: blocks {} ({} bytes)",
        a2.blocks,
        a2.blocks * 512
    );
    let (mut s3, mut a3) = (s2, a2);
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let r = fs.fallocate(&CTX, ino, fh, LEN / 4, LEN / 2, punch).await;
    if not_supported(&r) {
        println!("skipped: the hole-punching part of `space_accounting` (the backend does not punch holes)");
    } else {
        kit_try!(r, "punch a hole over the middle half");
        s3 = kit_try!(fs.statfs(&CTX, Ino::ROOT).await, "statfs after punching");
        a3 = kit_try!(attr_of(fs, ino).await, "getattr after punching");
        kit_ensure!(
            s3.bfree > s2.bfree && a3.blocks < a2.blocks,
            "rule: [statfs.frees] punching a hole over {} bytes gives blocks back\n  bfree before: {}, after: {}\n  st_blocks before: {}, after: {}",
            LEN / 2,
            s2.bfree,
            s3.bfree,
            a2.blocks,
            a3.blocks
        );
    }
    kit_try!(
        fs.setattr(&CTX, ino, SetAttr::size(LEN / 8)).await,
        "truncate to {}",
        LEN / 8
    );
    let s4 = kit_try!(fs.statfs(&CTX, Ino::ROOT).await, "statfs after truncating");
    let a4 = kit_try!(attr_of(fs, ino).await, "getattr after truncating");
    kit_ensure!(
        s4.bfree > s3.bfree && a4.blocks < a3.blocks && a4.blocks * 512 >= LEN / 8,
        "rule: [statfs.frees] truncating to {} bytes gives blocks back and keeps what is left\n  bfree before: {}, after: {}\n  st_blocks before: {}, after: {}",
        LEN / 8,
        s3.bfree,
        s4.bfree,
        a3.blocks,
        a4.blocks
    );
    kit_try!(fs.unlink(&CTX, Ino::ROOT, nm("space")).await, "unlink space");
    kit_try!(fs.release(&CTX, ino, fh).await, "release space");
    let s5 = kit_try!(fs.statfs(&CTX, Ino::ROOT).await, "statfs after unlink and release");
    kit_eq!(
        (s5.bfree, s5.ffree),
        (s0.bfree, s0.ffree),
        "[statfs.frees] an unlinked file's blocks and inode come back after its last release: (bfree, ffree)"
    );
    Ok(())
}

/// Extended attributes: create/replace semantics, listing, removal, `ENODATA`.
pub async fn xattrs<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "f", b"").await, "create f");
    let k = OsStr::new("user.kit");
    kit_expect_err!(
        fs.getxattr(&CTX, ino, k).await,
        Errno::ENODATA,
        "[xattr.missing] getxattr of a missing name"
    );
    kit_expect_err!(
        fs.setxattr(&CTX, ino, k, b"v", XattrSet::Replace).await,
        Errno::ENODATA,
        "[xattr.missing] XATTR_REPLACE of a missing name"
    );
    kit_try!(
        fs.setxattr(&CTX, ino, k, b"one", XattrSet::Create).await,
        "XATTR_CREATE"
    );
    kit_expect_err!(
        fs.setxattr(&CTX, ino, k, b"two", XattrSet::Create).await,
        Errno::EEXIST,
        "[xattr.create_exists] XATTR_CREATE of an existing name"
    );
    kit_try!(
        fs.setxattr(&CTX, ino, k, b"two", XattrSet::Replace).await,
        "XATTR_REPLACE"
    );
    let v = kit_try!(fs.getxattr(&CTX, ino, k).await, "getxattr");
    kit_bytes_eq!(v, b"two", "getxattr gives the replaced value");
    let names = kit_try!(fs.listxattr(&CTX, ino).await, "listxattr");
    kit_ensure!(
        names.iter().any(|n| n == k),
        "rule: listxattr lists a name just set\n  expected: user.kit among the names\n  seen:     {names:?}"
    );
    kit_try!(fs.removexattr(&CTX, ino, k).await, "removexattr");
    kit_expect_err!(
        fs.removexattr(&CTX, ino, k).await,
        Errno::ENODATA,
        "[xattr.missing] removexattr of a removed name"
    );
    Ok(())
}

/// Names of 255 bytes work; 256 never reach the backend (`ENAMETOOLONG`).
pub async fn long_names<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let max = "n".repeat(crate::types::NAME_MAX);
    kit_try!(mkfile(fs, Ino::ROOT, &max, b"").await, "create a 255-byte name");
    kit_try!(fs.lookup(&CTX, Ino::ROOT, nm(&max)).await, "lookup the 255-byte name");
    let long = "n".repeat(crate::types::NAME_MAX + 1);
    kit_expect_err!(
        Name::new(OsStr::new(&long)),
        Errno::ENAMETOOLONG,
        "[name.too_long] a 256-byte name"
    );
    kit_eq!(
        kit_try!(names(fs, Ino::ROOT).await, "readdir"),
        [max],
        "the long name is listed"
    );
    Ok(())
}

/// ctime changes on chmod, chown, rename (of the moved inode), link and unlink; mtime does not.
pub async fn ctime_rules<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "f", b"x").await, "create f");
    let mut prev = kit_try!(attr_of(fs, ino).await, "getattr");
    for step in ["chmod", "chown", "rename", "link", "unlink"] {
        settle().await;
        match step {
            "chmod" => drop(kit_try!(fs.setattr(&CTX, ino, SetAttr::mode(0o600)).await, "chmod")),
            "chown" => drop(kit_try!(
                fs.setattr(
                    &CTX,
                    ino,
                    SetAttr {
                        uid: Some(1),
                        ..SetAttr::default()
                    }
                )
                .await,
                "chown"
            )),
            "rename" => kit_try!(
                fs.rename(&CTX, Ino::ROOT, nm("f"), Ino::ROOT, nm("g"), RenameFlags::NONE)
                    .await,
                "rename"
            ),
            "link" => drop(kit_try!(fs.link(&CTX, ino, Ino::ROOT, nm("h")).await, "link")),
            _ => kit_try!(fs.unlink(&CTX, Ino::ROOT, nm("h")).await, "unlink"),
        }
        let now = kit_try!(attr_of(fs, ino).await, "getattr after {step}");
        kit_ensure!(
            now.ctime > prev.ctime,
            "rule: [ctime.change] {step} did not change ctime\n  before: {:?}\n  after:  {:?}",
            prev.ctime,
            now.ctime
        );
        kit_eq!(now.mtime, prev.mtime, "[ctime.only] {step} leaves mtime alone");
        prev = now;
    }
    Ok(())
}

/// mtime and ctime change on write and on truncate; the parent's on create and unlink.
pub async fn mtime_rules<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let root0 = kit_try!(attr_of(fs, Ino::ROOT).await, "getattr /");
    settle().await;
    let ino = kit_try!(mkfile(fs, Ino::ROOT, "f", b"").await, "create f");
    let root1 = kit_try!(attr_of(fs, Ino::ROOT).await, "getattr /");
    kit_ensure!(
        root1.mtime > root0.mtime && root1.ctime > root0.ctime,
        "rule: [mtime.parent] create changes the parent's mtime and ctime\n  before: mtime {:?} ctime {:?}\n  after:  mtime {:?} ctime {:?}",
        root0.mtime,
        root0.ctime,
        root1.mtime,
        root1.ctime
    );
    let mut prev = kit_try!(attr_of(fs, ino).await, "getattr f");
    for step in ["write", "truncate"] {
        settle().await;
        if step == "write" {
            let fh = kit_try!(fs.open(&CTX, ino, OpenFlags::WRONLY).await, "open");
            kit_try!(fs.write(&CTX, ino, fh, 0, b"data").await, "write");
            kit_try!(fs.release(&CTX, ino, fh).await, "release");
        } else {
            kit_try!(fs.setattr(&CTX, ino, SetAttr::size(1)).await, "truncate");
        }
        let now = kit_try!(attr_of(fs, ino).await, "getattr after {step}");
        kit_ensure!(
            now.mtime > prev.mtime && now.ctime > prev.ctime,
            "rule: [mtime.write] {step} changes mtime and ctime\n  before: mtime {:?} ctime {:?}\n  after:  mtime {:?} ctime {:?}",
            prev.mtime,
            prev.ctime,
            now.mtime,
            now.ctime
        );
        prev = now;
    }
    settle().await;
    kit_try!(fs.unlink(&CTX, Ino::ROOT, nm("f")).await, "unlink");
    let root2 = kit_try!(attr_of(fs, Ino::ROOT).await, "getattr /");
    kit_ensure!(
        root2.mtime > root1.mtime,
        "rule: [mtime.parent] unlink changes the parent's mtime\n  before: {:?}\n  after:  {:?}",
        root1.mtime,
        root2.mtime
    );
    Ok(())
}

/// statfs answers with a consistent picture.
pub async fn statfs_sane<F: VirtualFs>(b: Backend<F>) -> KitResult {
    let fs = &*b.fs;
    let s = match fs.statfs(&CTX, Ino::ROOT).await {
        // The trait's default: front ends answer with neutral figures of their own.
        Err(VfsError::NotImplemented) => return Ok(()),
        r => kit_try!(r, "statfs"),
    };
    kit_ensure!(
        s.bfree <= s.blocks && s.bavail <= s.blocks && s.ffree <= s.files,
        "rule: statfs figures are consistent (bfree and bavail <= blocks, ffree <= files)\n  seen: {s:?}"
    );
    kit_ensure!(
        s.bsize > 0 && s.namelen >= 255,
        "rule: statfs has a block size and a name length of at least 255\n  seen: {s:?}"
    );
    Ok(())
}
