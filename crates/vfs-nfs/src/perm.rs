//! Permission checks: what the server must check because no kernel does it for it.
//!
//! Invariant: every NFS procedure that reads, writes or changes something checks the
//! caller's [`RequestCtx`] here first, with the rules of the Linux NFS server: search (`x`)
//! on a directory to look a name up in it, write and search on a directory to add or
//! remove a name, read or write on a file for its data, ownership to change its mode or
//! times, root to give it away. The bits come from the backend ([`VirtualFs::access`],
//! which defaults to [`vfs_core::check_access`] on `getattr`), so a backend with ACLs is
//! asked, not second-guessed. Root (uid 0) passes every check, as on a local filesystem.
//!
//! Two NFS rules differ from `open(2)`:
//!
//! - **Owner override.** NFSv3 has no OPEN: a process that created a file with mode 0444
//!   and writes to it through its descriptor is, to the server, just WRITEs to a
//!   read-only file. As the Linux server does, the owner of a file may always read and
//!   write its data; the client's own `open(2)` check is what refuses a new opener.
//! - **Supplementary groups are not consulted**: `RequestCtx` carries one gid, so a
//!   caller is in a file's group only through its primary gid.

use vfs_core::{Attr, Ino, RequestCtx, SetAttr, SetTime, VfsError, VfsResult, VirtualFs, access_mask};

/// Whether `ctx` may do `mask` ([`access_mask`] bits) to `ino`.
pub async fn check<F: VirtualFs>(fs: &F, ctx: &RequestCtx, ino: Ino, mask: u32) -> VfsResult<()> {
    if ctx.uid == 0 {
        return Ok(());
    }
    fs.access(ctx, ino, mask).await
}

/// Whether `ctx` may add or remove names in directory `dir`.
pub async fn check_dir_change<F: VirtualFs>(fs: &F, ctx: &RequestCtx, dir: Ino) -> VfsResult<()> {
    check(fs, ctx, dir, access_mask::WRITE | access_mask::EXEC).await
}

/// Whether `ctx` may read (`mask` = READ) or write (WRITE) the data of `ino`, with the
/// owner override.
pub async fn check_data<F: VirtualFs>(fs: &F, ctx: &RequestCtx, ino: Ino, mask: u32) -> VfsResult<()> {
    if ctx.uid == 0 {
        return Ok(());
    }
    let attr = fs.getattr(ctx, ino, None).await?;
    if attr.uid == ctx.uid {
        return Ok(());
    }
    fs.access(ctx, ino, mask).await
}

/// Whether `ctx` may make the change `set` to a file whose attributes are `attr`.
pub async fn check_setattr<F: VirtualFs>(fs: &F, ctx: &RequestCtx, attr: &Attr, set: &SetAttr) -> VfsResult<()> {
    if ctx.uid == 0 {
        return Ok(());
    }
    let owner = attr.uid == ctx.uid;
    if set.mode.is_some() && !owner {
        return Err(VfsError::NotPermitted);
    }
    if set.uid.is_some_and(|u| u != attr.uid) {
        return Err(VfsError::NotPermitted);
    }
    if set.gid.is_some_and(|g| g != attr.gid && !(owner && g == ctx.gid)) {
        return Err(VfsError::NotPermitted);
    }
    let explicit = |t: Option<SetTime>| matches!(t, Some(SetTime::At(_)));
    if (explicit(set.atime) || explicit(set.mtime)) && !owner {
        return Err(VfsError::NotPermitted);
    }
    let touch = matches!(set.atime, Some(SetTime::Now)) || matches!(set.mtime, Some(SetTime::Now));
    if (set.size.is_some() || touch) && !owner {
        fs.access(ctx, attr.ino, access_mask::WRITE).await?;
    }
    Ok(())
}
