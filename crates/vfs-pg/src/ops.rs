//! The `VirtualFs` operations of [`PgFs`], each one transaction (or one statement).
//!
//! Invariant: every check an operation makes (does the name exist, is it a directory,
//! is it empty, is the target inside the source) is made inside the transaction that
//! makes the change, so under `SERIALIZABLE` no other operation can have invalidated it
//! by the time the change commits. Reads that are one statement run without an explicit
//! transaction; reads of several statements share one `REPEATABLE READ` snapshot. The
//! mount root and module directories only hold modules and versets (`mkdir` with a
//! number) and `ctl`; anything else there is `EPERM`, and nothing is renamed or linked
//! across versets (`EXDEV`).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use bytes::Bytes;
use deadpool_postgres::Transaction;
use vfs_core::{
    Attr, DirEntry, DirEntryPlus, Fh, FileType, Ino, Name, OpenFlags, RenameFlags, RequestCtx, SetAttr, StatFs,
    Timestamp, VfsError, VfsResult, VirtualFs, XattrSet, check_symlink_target, check_xattr, xattr_namespace_check,
};

use crate::blocks::BlockStore;
use crate::changes::Note;
use crate::db::{ATTR_COLS, OpError, OpResult, attr_from_row, exec, in_snapshot, in_txn, row, rows, with_client};
use crate::tree::{self, NewInode, Node};
use crate::verset::{self, MOUNT_ROOT};
use crate::{CTL_INO, CTL_NAME, Command, PgFs, data};

/// Largest file size: what an `i64` byte count and block index hold comfortably.
const MAX_FILE_SIZE: u64 = 1 << 50;
/// Most hard links of one inode.
const LINK_MAX: i64 = 65_000;

impl<S: BlockStore> PgFs<S> {
    async fn attr_tx(&self, tx: &Transaction<'_>, ino: i64) -> OpResult<Attr> {
        let sql = format!("SELECT {ATTR_COLS} FROM inode i WHERE i.ino = $1");
        match row(tx, &sql, &[&ino]).await? {
            Some(r) => attr_from_row(&r, 0, self.vfs_ino(ino), self.block_size),
            None => Err(VfsError::Stale.into()),
        }
    }

    fn ctl_attr(&self) -> Attr {
        Attr {
            atime: self.opened_at,
            mtime: self.opened_at,
            ctime: self.opened_at,
            ..Attr::new(CTL_INO, FileType::Regular, 0o644)
        }
    }

    /// Refuses what the mount root and module directories cannot hold.
    fn control_level(&self, parent: &Node) -> OpResult<()> {
        if parent.verset.is_none() {
            return Err(VfsError::NotPermitted.into());
        }
        Ok(())
    }

    /// Creates `parent/name` as `spec` inside `tx`; returns its attributes.
    async fn make_node_tx(
        &self,
        tx: &Transaction<'_>,
        ctx: &RequestCtx,
        parent: i64,
        name: &[u8],
        mut spec: NewInode<'_>,
        now: Timestamp,
    ) -> OpResult<Attr> {
        let p = tree::dir(tx, parent).await?;
        if tree::entry(tx, parent, name).await?.is_some()
            || (parent == MOUNT_ROOT && self.modules && name == CTL_NAME.as_bytes())
        {
            return Err(VfsError::Exists.into());
        }
        if p.verset.is_none() {
            // The mount root holds modules, a module holds versets: directories with numbers.
            let number = verset::number(name);
            return match (spec.kind, number) {
                (FileType::Directory, Some(n)) if parent == MOUNT_ROOT => {
                    let ino = verset::create_module(tx, n, ctx, spec.perm, now).await?;
                    self.announce(tx, &[Note::Entry(parent, name.to_vec()), Note::Inode(parent)])
                        .await?;
                    self.attr_tx(tx, ino).await
                }
                (FileType::Directory, Some(n)) => match verset::module_of_dir(tx, parent).await? {
                    Some(module) => {
                        let ino = verset::create_verset(tx, module, parent, n, ctx, spec.perm, now).await?;
                        self.announce(tx, &[Note::Entry(parent, name.to_vec()), Note::Inode(parent)])
                            .await?;
                        self.attr_tx(tx, ino).await
                    }
                    None => Err(VfsError::NotPermitted.into()),
                },
                (FileType::Directory, None) => {
                    Err(VfsError::Invalid("modules and versets are named by numbers").into())
                }
                _ => Err(VfsError::NotPermitted.into()),
            };
        }
        spec.verset = p.verset;
        // setgid directories hand their group down (and setgid to subdirectories).
        if p.perm & 0o2000 != 0 {
            spec.gid = p.gid as u32;
            if spec.kind == FileType::Directory {
                spec.perm |= 0o2000;
            }
        }
        let ino = tree::insert_inode(tx, &spec, now).await?;
        tree::add_entry(tx, parent, name, ino).await?;
        let delta = i64::from(spec.kind == FileType::Directory);
        tree::touch_dir(tx, parent, delta, now).await?;
        self.announce(tx, &[Note::Entry(parent, name.to_vec()), Note::Inode(parent)])
            .await?;
        self.attr_tx(tx, ino).await
    }

    async fn make_node(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, spec: NewInode<'_>) -> VfsResult<Attr> {
        let parent = self.db_ino(parent)?;
        let now = Timestamp::now();
        let spec = &spec;
        in_txn!(self, "create", |tx| {
            let s = NewInode {
                target: spec.target,
                ..*spec
            };
            self.make_node_tx(&tx, ctx, parent, name.as_bytes(), s, now).await?
        })
    }

    /// Unlinks `parent/name` (a directory if `dir`) inside `tx`.
    async fn remove_tx(
        &self,
        tx: &Transaction<'_>,
        parent: i64,
        name: &[u8],
        dir: bool,
        now: Timestamp,
    ) -> OpResult<()> {
        let p = tree::dir(tx, parent).await?;
        let Some(victim) = tree::entry(tx, parent, name).await? else {
            return Err(VfsError::NotFound.into());
        };
        match (dir, victim.kind == FileType::Directory) {
            (true, false) => return Err(VfsError::NotDir.into()),
            (false, true) => return Err(VfsError::IsDir.into()),
            _ => {}
        }
        if dir {
            if tree::has_entries(tx, victim.ino).await? {
                return Err(VfsError::NotEmpty.into());
            }
            if p.verset.is_none() {
                // A module (in the mount root) or a verset (in a module).
                exec(tx, "DELETE FROM verset WHERE root = $1", &[&victim.ino]).await?;
                exec(tx, "DELETE FROM module WHERE ino = $1", &[&victim.ino]).await?;
            }
        }
        tree::remove_entry(tx, parent, name).await?;
        tree::touch_dir(tx, parent, if dir { -1 } else { 0 }, now).await?;
        let left = tree::relink(tx, victim.ino, -1, dir, now).await?;
        if left == 0 && (dir || !self.is_open(victim.ino)) {
            tree::reap(tx, &self.store, victim.ino).await?;
        }
        let notes = [
            Note::Entry(parent, name.to_vec()),
            Note::Inode(parent),
            Note::Inode(victim.ino),
        ];
        self.announce(tx, &notes).await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn rename_tx(
        &self,
        tx: &Transaction<'_>,
        parent: i64,
        name: &[u8],
        newparent: i64,
        newname: &[u8],
        flags: RenameFlags,
        now: Timestamp,
    ) -> OpResult<()> {
        let p = tree::dir(tx, parent).await?;
        let np = if newparent == parent {
            p
        } else {
            tree::dir(tx, newparent).await?
        };
        let src = tree::entry(tx, parent, name)
            .await?
            .ok_or(OpError::Fs(VfsError::NotFound))?;
        let dst = tree::entry(tx, newparent, newname).await?;
        // Linux's order: NOREPLACE, EXCHANGE's missing target, the subtree traps, then
        // "same inode: nothing to do", then types.
        match dst {
            Some(_) if flags.noreplace() => return Err(VfsError::Exists.into()),
            None if flags.exchange() => return Err(VfsError::NotFound.into()),
            _ => {}
        }
        self.control_level(&p)?;
        self.control_level(&np)?;
        if p.verset != np.verset {
            return Err(VfsError::CrossDevice.into());
        }
        if parent != newparent {
            if src.kind == FileType::Directory && tree::is_within(tx, newparent, src.ino).await? {
                return Err(VfsError::Invalid("cannot move a directory into itself").into());
            }
            if let Some(d) = dst.filter(|d| d.kind == FileType::Directory)
                && tree::is_within(tx, parent, d.ino).await?
            {
                return Err(if flags.exchange() {
                    VfsError::Invalid("cannot move a directory into itself")
                } else {
                    VfsError::NotEmpty
                }
                .into());
            }
        }
        if dst.is_some_and(|d| d.ino == src.ino) {
            return Ok(());
        }
        let src_dir = src.kind == FileType::Directory;
        if flags.exchange() {
            let Some(d) = dst else {
                return Err(VfsError::NotFound.into());
            };
            exec(
                tx,
                "UPDATE dentry SET ino = $3 WHERE parent = $1 AND name = $2",
                &[&parent, &name, &d.ino],
            )
            .await?;
            exec(
                tx,
                "UPDATE dentry SET ino = $3 WHERE parent = $1 AND name = $2",
                &[&newparent, &newname, &src.ino],
            )
            .await?;
            let dst_dir = d.kind == FileType::Directory;
            let (dp, dnp) = if parent != newparent && src_dir != dst_dir {
                if src_dir { (-1, 1) } else { (1, -1) }
            } else {
                (0, 0)
            };
            tree::touch_dir(tx, parent, dp, now).await?;
            tree::touch_dir(tx, newparent, dnp, now).await?;
            tree::touch_ctime(tx, src.ino, now).await?;
            tree::touch_ctime(tx, d.ino, now).await?;
            let notes = [
                Note::Entry(parent, name.to_vec()),
                Note::Entry(newparent, newname.to_vec()),
                Note::Inode(parent),
                Note::Inode(newparent),
                Note::Inode(src.ino),
                Note::Inode(d.ino),
            ];
            self.announce(tx, &notes).await?;
            return Ok(());
        }
        if let Some(d) = dst {
            match (src_dir, d.kind == FileType::Directory) {
                (true, false) => return Err(VfsError::NotDir.into()),
                (false, true) => return Err(VfsError::IsDir.into()),
                (true, true) if tree::has_entries(tx, d.ino).await? => return Err(VfsError::NotEmpty.into()),
                _ => {}
            }
        }
        tree::remove_entry(tx, parent, name).await?;
        let mut np_delta = 0;
        if let Some(d) = dst {
            let d_dir = d.kind == FileType::Directory;
            tree::remove_entry(tx, newparent, newname).await?;
            let left = tree::relink(tx, d.ino, -1, d_dir, now).await?;
            if d_dir {
                np_delta -= 1;
            }
            if left == 0 && (d_dir || !self.is_open(d.ino)) {
                tree::reap(tx, &self.store, d.ino).await?;
            }
        }
        tree::add_entry(tx, newparent, newname, src.ino).await?;
        if src_dir && parent != newparent {
            np_delta += 1;
            tree::touch_dir(tx, parent, -1, now).await?;
        } else if parent != newparent {
            tree::touch_dir(tx, parent, 0, now).await?;
        }
        tree::touch_dir(tx, newparent, np_delta, now).await?;
        tree::touch_ctime(tx, src.ino, now).await?;
        let mut notes = vec![
            Note::Entry(parent, name.to_vec()),
            Note::Entry(newparent, newname.to_vec()),
            Note::Inode(parent),
            Note::Inode(newparent),
            Note::Inode(src.ino),
        ];
        notes.extend(dst.map(|d| Note::Inode(d.ino)));
        self.announce(tx, &notes).await?;
        Ok(())
    }

    async fn open_tx(&self, tx: &Transaction<'_>, ino: i64, flags: OpenFlags, now: Timestamp) -> OpResult<()> {
        let n = tree::node(tx, ino).await?;
        match n.kind {
            FileType::Directory if flags.access().can_write() => return Err(VfsError::IsDir.into()),
            FileType::Symlink => return Err(VfsError::Loop.into()),
            _ => {}
        }
        if flags.truncate() && flags.access().can_write() && n.kind == FileType::Regular {
            data::truncate(tx, &self.store, self.block_size, ino, n.size as u64, 0).await?;
            exec(
                tx,
                "UPDATE inode SET size = 0, mtime_s = $2, mtime_ns = $3, ctime_s = $2, ctime_ns = $3 WHERE ino = $1",
                &[&ino, &now.secs, &(now.nsecs as i32)],
            )
            .await?;
            self.announce(tx, &[Note::Inode(ino)]).await?;
        }
        Ok(())
    }

    /// Opens `ino`: the handle is registered before the inode is checked, so an unlink
    /// that commits after the check keeps the inode for this handle.
    async fn open_ino(&self, ino: i64, flags: OpenFlags) -> VfsResult<Fh> {
        let fh = self.add_handle(ino, flags);
        let now = Timestamp::now();
        let opened = if flags.truncate() && flags.access().can_write() {
            in_txn!(self, "open", |tx| self.open_tx(&tx, ino, flags, now).await?)
        } else {
            in_snapshot!(self, "open", |tx| self.open_tx(&tx, ino, flags, now).await?)
        };
        match opened {
            Ok(()) => Ok(fh),
            Err(e) => {
                // The handle was issued just above for this inode.
                let _ = self.remove_handle(ino, fh);
                self.drop_handle(ino);
                Err(e)
            }
        }
    }

    async fn readdir_rows(&self, ino: i64, cookie: u64, max: usize, plus: bool) -> VfsResult<Vec<DirEntryPlus>> {
        let max = max.max(1);
        let after = i64::try_from(cookie).unwrap_or(i64::MAX);
        in_snapshot!(self, "readdir", |tx| {
            let n = tree::node(&tx, ino).await?;
            if n.kind != FileType::Directory {
                return Err(VfsError::NotDir.into());
            }
            let mut out: Vec<DirEntryPlus> = Vec::new();
            let up: i64 = if ino == self.root {
                ino
            } else {
                match row(&tx, "SELECT parent FROM dentry WHERE ino = $1 LIMIT 1", &[&ino]).await? {
                    Some(r) => r.try_get(0)?,
                    None => ino,
                }
            };
            let dot = |name: &str, target: i64, c: u64| DirEntryPlus {
                entry: DirEntry {
                    ino: self.vfs_ino(target),
                    kind: FileType::Directory,
                    name: name.into(),
                    cookie: c,
                },
                attr: Attr::new(self.vfs_ino(target), FileType::Directory, 0),
            };
            if cookie == 0 {
                out.push(dot(".", ino, 1));
            }
            if cookie <= 1 && out.len() < max {
                out.push(dot("..", up, 2));
            }
            if plus {
                for e in out.iter_mut() {
                    let target = self.db_ino(e.entry.ino)?;
                    e.attr = self.attr_tx(&tx, target).await?;
                }
            }
            if self.modules && ino == MOUNT_ROOT && cookie <= 2 && out.len() < max {
                out.push(DirEntryPlus {
                    entry: DirEntry {
                        ino: CTL_INO,
                        kind: FileType::Regular,
                        name: CTL_NAME.into(),
                        cookie: 3,
                    },
                    attr: self.ctl_attr(),
                });
            }
            if out.len() < max {
                let limit = (max - out.len()) as i64;
                let sql = format!(
                    "SELECT d.name, d.cookie, {ATTR_COLS} FROM dentry d JOIN inode i ON i.ino = d.ino
                     WHERE d.parent = $1 AND d.cookie > $2 ORDER BY d.cookie LIMIT $3"
                );
                for r in rows(&tx, &sql, &[&ino, &after, &limit]).await? {
                    let name: Vec<u8> = r.try_get(0)?;
                    let c: i64 = r.try_get(1)?;
                    let target: i64 = r.try_get(2)?;
                    let attr = attr_from_row(&r, 2, self.vfs_ino(target), self.block_size)?;
                    out.push(DirEntryPlus {
                        entry: DirEntry {
                            ino: attr.ino,
                            kind: attr.kind,
                            name: OsString::from_vec(name),
                            cookie: c as u64,
                        },
                        attr,
                    });
                }
            }
            out
        })
    }

    async fn set_ctl(&self, data: &[u8]) -> VfsResult<u32> {
        let cmd = Command::parse(data)?;
        let n = self.command(cmd).await?;
        tracing::info!(?cmd, new_verset = n, "vfs-pg: control command done");
        u32::try_from(data.len()).map_err(|_| VfsError::Invalid("command too long"))
    }
}

impl<S: BlockStore> VirtualFs for PgFs<S> {
    fn source_id(&self) -> &str {
        &self.source_id
    }

    fn inode_stability(&self) -> vfs_core::InodeStability {
        vfs_core::InodeStability::Stable
    }

    /// Starts the listener (`set_invalidator`): other mounts' changes are reported. The
    /// promise stays [`vfs_core::ChangeSource::Unknown`] (the mount's own TTLs), because
    /// changes committed while the listener reconnects are not reported: the TTL is what
    /// bounds them (`changes.rs`).
    fn report_changes(&self, inv: std::sync::Arc<dyn vfs_core::Invalidator>) -> vfs_core::ChangeSource {
        self.set_invalidator(inv);
        vfs_core::ChangeSource::Unknown
    }

    async fn lookup(&self, _ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
        if self.modules && parent == Ino::ROOT && name.as_bytes() == CTL_NAME.as_bytes() {
            return Ok(self.ctl_attr());
        }
        let parent = self.db_ino(parent)?;
        let name = name.as_bytes();
        with_client!(self, "lookup", |c| {
            let sql = format!(
                "SELECT {ATTR_COLS} FROM dentry d JOIN inode i ON i.ino = d.ino WHERE d.parent = $1 AND d.name = $2"
            );
            match row(&c, &sql, &[&parent, &name]).await? {
                Some(r) => {
                    let ino: i64 = r.try_get(0)?;
                    attr_from_row(&r, 0, self.vfs_ino(ino), self.block_size)?
                }
                None => {
                    let kind = row(&c, "SELECT kind FROM inode WHERE ino = $1", &[&parent]).await?;
                    let e = match kind {
                        None => VfsError::Stale,
                        Some(r) if r.try_get::<_, i16>(0)? != 2 => VfsError::NotDir,
                        Some(_) => VfsError::NotFound,
                    };
                    return Err(e.into());
                }
            }
        })
    }

    async fn getattr(&self, _ctx: &RequestCtx, ino: Ino, fh: Option<Fh>) -> VfsResult<Attr> {
        if self.is_ctl(ino) {
            return Ok(self.ctl_attr());
        }
        let n = self.db_ino(ino)?;
        if let Some(fh) = fh {
            self.handle(n, fh)?;
        }
        with_client!(self, "getattr", |c| {
            let sql = format!("SELECT {ATTR_COLS} FROM inode i WHERE i.ino = $1");
            match row(&c, &sql, &[&n]).await? {
                Some(r) => attr_from_row(&r, 0, ino, self.block_size)?,
                None => return Err(VfsError::Stale.into()),
            }
        })
    }

    async fn setattr(&self, _ctx: &RequestCtx, ino: Ino, set: SetAttr) -> VfsResult<Attr> {
        if self.is_ctl(ino) {
            return Ok(self.ctl_attr());
        }
        let n = self.db_ino(ino)?;
        if let (Some(fh), Some(_)) = (set.fh, set.size) {
            self.handle(n, fh)?;
        }
        let now = Timestamp::now();
        in_txn!(self, "setattr", |tx| {
            let node = tree::node(&tx, n).await?;
            if let Some(size) = set.size {
                match node.kind {
                    FileType::Regular => {}
                    FileType::Directory => return Err(VfsError::IsDir.into()),
                    _ => return Err(VfsError::Invalid("truncate of a non-regular file").into()),
                }
                if size > MAX_FILE_SIZE {
                    return Err(VfsError::TooBig.into());
                }
                data::truncate(&tx, &self.store, self.block_size, n, node.size as u64, size).await?;
            }
            let mut perm = node.perm;
            if (set.uid.is_some() || set.gid.is_some()) && node.kind != FileType::Directory {
                perm &= !0o4000;
                if perm & 0o010 != 0 {
                    perm &= !0o2000;
                }
            }
            if let Some(mode) = set.mode {
                perm = (mode & 0o7777) as i32;
            }
            let size = set.size.map(|s| s as i64).unwrap_or(node.size);
            let uid = set.uid.map(i64::from).unwrap_or(node.uid);
            let gid = set.gid.map(i64::from).unwrap_or(node.gid);
            let at = set.atime.map(|t| t.resolve(now));
            let mt = set.mtime.map(|t| t.resolve(now)).or(set.size.map(|_| now));
            exec(
                &tx,
                "UPDATE inode SET perm = $2, size = $3, uid = $4, gid = $5,
                   atime_s = coalesce($6, atime_s), atime_ns = coalesce($7, atime_ns),
                   mtime_s = coalesce($8, mtime_s), mtime_ns = coalesce($9, mtime_ns),
                   ctime_s = $10, ctime_ns = $11
                 WHERE ino = $1",
                &[
                    &n,
                    &perm,
                    &size,
                    &uid,
                    &gid,
                    &at.map(|t| t.secs),
                    &at.map(|t| t.nsecs as i32),
                    &mt.map(|t| t.secs),
                    &mt.map(|t| t.nsecs as i32),
                    &now.secs,
                    &(now.nsecs as i32),
                ],
            )
            .await?;
            self.announce(&tx, &[Note::Inode(n)]).await?;
            self.attr_tx(&tx, n).await?
        })
    }

    async fn readlink(&self, _ctx: &RequestCtx, ino: Ino) -> VfsResult<OsString> {
        let n = self.db_ino(ino)?;
        with_client!(self, "readlink", |c| {
            match row(&c, "SELECT kind, target FROM inode WHERE ino = $1", &[&n]).await? {
                None => return Err(VfsError::Stale.into()),
                Some(r) => match r.try_get::<_, Option<Vec<u8>>>(1)? {
                    Some(t) if r.try_get::<_, i16>(0)? == 3 => OsString::from_vec(t),
                    _ => return Err(VfsError::Invalid("not a symlink").into()),
                },
            }
        })
    }

    async fn mknod(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
        rdev: u64,
    ) -> VfsResult<Attr> {
        let kind = if mode & libc::S_IFMT == 0 {
            FileType::Regular
        } else {
            match FileType::from_mode(mode) {
                Some(FileType::Directory) => return Err(VfsError::NotPermitted),
                Some(FileType::Symlink) | None => return Err(VfsError::Invalid("mknod of this type")),
                Some(k) => k,
            }
        };
        let spec = NewInode {
            kind,
            perm: mode & !umask,
            uid: ctx.uid,
            gid: ctx.gid,
            rdev,
            verset: None,
            target: None,
        };
        self.make_node(ctx, parent, name, spec).await
    }

    async fn mkdir(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, mode: u32, umask: u32) -> VfsResult<Attr> {
        let spec = NewInode {
            kind: FileType::Directory,
            perm: mode & !umask & 0o7777,
            uid: ctx.uid,
            gid: ctx.gid,
            rdev: 0,
            verset: None,
            target: None,
        };
        self.make_node(ctx, parent, name, spec).await
    }

    async fn unlink(&self, _ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        if self.modules && parent == Ino::ROOT && name.as_bytes() == CTL_NAME.as_bytes() {
            return Err(VfsError::NotPermitted);
        }
        let parent = self.db_ino(parent)?;
        let now = Timestamp::now();
        in_txn!(self, "unlink", |tx| self
            .remove_tx(&tx, parent, name.as_bytes(), false, now)
            .await?)
    }

    async fn rmdir(&self, _ctx: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<()> {
        let parent = self.db_ino(parent)?;
        let now = Timestamp::now();
        in_txn!(self, "rmdir", |tx| self
            .remove_tx(&tx, parent, name.as_bytes(), true, now)
            .await?)
    }

    async fn symlink(&self, ctx: &RequestCtx, parent: Ino, name: Name<'_>, target: &OsStr) -> VfsResult<Attr> {
        check_symlink_target(target)?;
        let spec = NewInode {
            kind: FileType::Symlink,
            perm: 0o777,
            uid: ctx.uid,
            gid: ctx.gid,
            rdev: 0,
            verset: None,
            target: Some(target.as_bytes()),
        };
        self.make_node(ctx, parent, name, spec).await
    }

    async fn rename(
        &self,
        _ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        newparent: Ino,
        newname: Name<'_>,
        flags: RenameFlags,
    ) -> VfsResult<()> {
        let flags = flags.validate()?;
        if self.modules
            && ((parent == Ino::ROOT && name.as_bytes() == CTL_NAME.as_bytes())
                || (newparent == Ino::ROOT && newname.as_bytes() == CTL_NAME.as_bytes()))
        {
            return Err(VfsError::NotPermitted);
        }
        let (p, np) = (self.db_ino(parent)?, self.db_ino(newparent)?);
        let now = Timestamp::now();
        in_txn!(self, "rename", |tx| {
            self.rename_tx(&tx, p, name.as_bytes(), np, newname.as_bytes(), flags, now)
                .await?
        })
    }

    async fn link(&self, _ctx: &RequestCtx, ino: Ino, newparent: Ino, newname: Name<'_>) -> VfsResult<Attr> {
        if self.is_ctl(ino) {
            return Err(VfsError::NotPermitted);
        }
        let (n, np) = (self.db_ino(ino)?, self.db_ino(newparent)?);
        let now = Timestamp::now();
        in_txn!(self, "link", |tx| {
            let node = tree::node(&tx, n).await?;
            if node.kind == FileType::Directory {
                return Err(VfsError::NotPermitted.into());
            }
            let p = tree::dir(&tx, np).await?;
            if node.nlink == 0 {
                return Err(VfsError::NotFound.into());
            }
            self.control_level(&p)?;
            if p.verset != node.verset {
                return Err(VfsError::CrossDevice.into());
            }
            if node.nlink >= LINK_MAX {
                return Err(VfsError::TooManyLinks.into());
            }
            if tree::entry(&tx, np, newname.as_bytes()).await?.is_some() {
                return Err(VfsError::Exists.into());
            }
            tree::add_entry(&tx, np, newname.as_bytes(), n).await?;
            tree::touch_dir(&tx, np, 0, now).await?;
            tree::relink(&tx, n, 1, false, now).await?;
            let notes = [
                Note::Entry(np, newname.as_bytes().to_vec()),
                Note::Inode(np),
                Note::Inode(n),
            ];
            self.announce(&tx, &notes).await?;
            self.attr_tx(&tx, n).await?
        })
    }

    async fn open(&self, _ctx: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        if self.is_ctl(ino) {
            return Ok(self.add_handle(CTL_INO.0 as i64, flags));
        }
        let n = self.db_ino(ino)?;
        self.open_ino(n, flags).await
    }

    async fn create(
        &self,
        ctx: &RequestCtx,
        parent: Ino,
        name: Name<'_>,
        mode: u32,
        umask: u32,
        flags: OpenFlags,
    ) -> VfsResult<(Attr, Fh)> {
        if self.modules && parent == Ino::ROOT && name.as_bytes() == CTL_NAME.as_bytes() {
            if flags.exclusive() {
                return Err(VfsError::Exists);
            }
            return Ok((self.ctl_attr(), self.add_handle(CTL_INO.0 as i64, flags)));
        }
        let p = self.db_ino(parent)?;
        let now = Timestamp::now();
        let spec = NewInode {
            kind: FileType::Regular,
            perm: mode & !umask,
            uid: ctx.uid,
            gid: ctx.gid,
            rdev: 0,
            verset: None,
            target: None,
        };
        let spec = &spec;
        // The handle is registered under the inode found or made, after the transaction;
        // an unlink in between is what any other mount's unlink would be.
        let attr = in_txn!(self, "create", |tx| {
            match tree::entry(&tx, p, name.as_bytes()).await? {
                Some(_) if flags.exclusive() => return Err(VfsError::Exists.into()),
                Some(existing) => {
                    if existing.kind == FileType::Directory {
                        return Err(VfsError::IsDir.into());
                    }
                    self.open_tx(&tx, existing.ino, flags, now).await?;
                    self.attr_tx(&tx, existing.ino).await?
                }
                None => {
                    let s = NewInode { target: None, ..*spec };
                    self.make_node_tx(&tx, ctx, p, name.as_bytes(), s, now).await?
                }
            }
        })?;
        let fh = self.add_handle(self.db_ino(attr.ino)?, flags);
        Ok((attr, fh))
    }

    async fn read(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        if self.is_ctl(ino) {
            self.handle(CTL_INO.0 as i64, fh)?;
            return Ok(Bytes::new());
        }
        let n = self.db_ino(ino)?;
        let of = self.handle(n, fh)?;
        if !of.mode.can_read() {
            return Err(VfsError::BadHandle);
        }
        in_snapshot!(self, "read", |tx| {
            let node = tree::node(&tx, n).await?;
            match node.kind {
                FileType::Regular => {}
                FileType::Directory => return Err(VfsError::IsDir.into()),
                _ => return Err(VfsError::Invalid("read of a special file").into()),
            }
            let fsize = node.size as u64;
            if offset >= fsize {
                Bytes::new()
            } else {
                let len = (fsize - offset).min(u64::from(size)) as usize;
                Bytes::from(data::read(&tx, &self.store, self.block_size, n, offset, len).await?)
            }
        })
    }

    async fn write(&self, ctx: &RequestCtx, ino: Ino, fh: Fh, offset: u64, data: &[u8]) -> VfsResult<u32> {
        if self.is_ctl(ino) {
            self.handle(CTL_INO.0 as i64, fh)?;
            return self.set_ctl(data).await;
        }
        let n = self.db_ino(ino)?;
        let of = self.handle(n, fh)?;
        if !of.mode.can_write() {
            return Err(VfsError::BadHandle);
        }
        let len = u32::try_from(data.len()).map_err(|_| VfsError::Invalid("write larger than 4 GiB"))?;
        let now = Timestamp::now();
        in_txn!(self, "write", |tx| {
            let node = tree::node(&tx, n).await?;
            if node.kind != FileType::Regular {
                return Err(VfsError::Invalid("write to a non-regular file").into());
            }
            let size = node.size as u64;
            let offset = if of.append { size } else { offset };
            let end = offset
                .checked_add(data.len() as u64)
                .filter(|e| *e <= MAX_FILE_SIZE)
                .ok_or(OpError::Fs(VfsError::TooBig))?;
            if !data.is_empty() {
                data::write(&tx, &self.store, self.block_size, n, offset, data).await?;
                let mut perm = node.perm;
                if ctx.uid != 0 && perm & 0o6000 != 0 {
                    perm &= !0o4000;
                    if perm & 0o010 != 0 {
                        perm &= !0o2000;
                    }
                }
                exec(
                    &tx,
                    "UPDATE inode SET size = greatest(size, $2), perm = $3,
                       mtime_s = $4, mtime_ns = $5, ctime_s = $4, ctime_ns = $5 WHERE ino = $1",
                    &[&n, &(end as i64), &perm, &now.secs, &(now.nsecs as i32)],
                )
                .await?;
                self.announce(&tx, &[Note::Inode(n)]).await?;
            }
            len
        })
    }

    async fn fsync(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh, _datasync: bool) -> VfsResult<()> {
        // Every write committed before it answered: there is nothing left to flush.
        let n = if self.is_ctl(ino) {
            CTL_INO.0 as i64
        } else {
            self.db_ino(ino)?
        };
        self.handle(n, fh).map(|_| ())
    }

    async fn release(&self, _ctx: &RequestCtx, ino: Ino, fh: Fh) -> VfsResult<()> {
        let n = if self.is_ctl(ino) {
            CTL_INO.0 as i64
        } else {
            self.db_ino(ino)?
        };
        self.remove_handle(n, fh)?;
        if self.drop_handle(n) && n != CTL_INO.0 as i64 {
            in_txn!(self, "release", |tx| {
                let nlink: Option<i64> = match row(&tx, "SELECT nlink FROM inode WHERE ino = $1", &[&n]).await? {
                    Some(r) => Some(r.try_get(0)?),
                    None => None,
                };
                if nlink == Some(0) && !self.is_open(n) {
                    tree::reap(&tx, &self.store, n).await?;
                }
            })?;
        }
        Ok(())
    }

    async fn readdir(&self, _ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        let n = self.db_ino(ino)?;
        let all = self.readdir_rows(n, cookie, max, false).await?;
        Ok(all.into_iter().map(|e| e.entry).collect())
    }

    async fn readdirplus(&self, _ctx: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntryPlus>> {
        let n = self.db_ino(ino)?;
        self.readdir_rows(n, cookie, max, true).await
    }

    async fn statfs(&self, _ctx: &RequestCtx, _ino: Ino) -> VfsResult<StatFs> {
        let bs = u64::from(self.block_size);
        let (used, files) = with_client!(self, "statfs", |c| {
            match row(
                &c,
                "SELECT (SELECT coalesce(sum(len), 0)::bigint FROM block), (SELECT count(*) FROM inode)",
                &[],
            )
            .await?
            {
                Some(r) => (r.try_get::<_, i64>(0)? as u64, r.try_get::<_, i64>(1)? as u64),
                None => (0, 0),
            }
        })?;
        // The database grows as far as its disk: report a large fixed capacity.
        let blocks = (1u64 << 50) / bs;
        let used = used.div_ceil(bs);
        let total_files = 1u64 << 40;
        Ok(StatFs {
            blocks,
            bfree: blocks.saturating_sub(used),
            bavail: blocks.saturating_sub(used),
            files: total_files,
            ffree: total_files.saturating_sub(files),
            bsize: self.block_size,
            namelen: vfs_core::NAME_MAX as u32,
            frsize: self.block_size,
        })
    }

    async fn getxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<Bytes> {
        check_xattr(name, None)?;
        if self.is_ctl(ino) {
            return Err(VfsError::NoAttr);
        }
        let n = self.db_ino(ino)?;
        let key = name.as_bytes();
        in_snapshot!(self, "getxattr", |tx| {
            let node = tree::node(&tx, n).await?;
            xattr_namespace_check(node.kind, name, ctx, false)?;
            match row(&tx, "SELECT value FROM xattr WHERE ino = $1 AND name = $2", &[&n, &key]).await? {
                Some(r) => Bytes::from(r.try_get::<_, Vec<u8>>(0)?),
                None => return Err(VfsError::NoAttr.into()),
            }
        })
    }

    async fn setxattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr, value: &[u8], how: XattrSet) -> VfsResult<()> {
        check_xattr(name, Some(value))?;
        if self.is_ctl(ino) {
            return Err(VfsError::NotPermitted);
        }
        let n = self.db_ino(ino)?;
        let key = name.as_bytes();
        let now = Timestamp::now();
        in_txn!(self, "setxattr", |tx| {
            let node = tree::node(&tx, n).await?;
            xattr_namespace_check(node.kind, name, ctx, true)?;
            let exists = row(&tx, "SELECT 1 FROM xattr WHERE ino = $1 AND name = $2", &[&n, &key])
                .await?
                .is_some();
            match how {
                XattrSet::Create if exists => return Err(VfsError::Exists.into()),
                XattrSet::Replace if !exists => return Err(VfsError::NoAttr.into()),
                _ => {}
            }
            exec(
                &tx,
                "INSERT INTO xattr (ino, name, value) VALUES ($1, $2, $3)
                 ON CONFLICT (ino, name) DO UPDATE SET value = EXCLUDED.value",
                &[&n, &key, &value],
            )
            .await?;
            tree::touch_ctime(&tx, n, now).await?;
            self.announce(&tx, &[Note::Inode(n)]).await?;
        })
    }

    async fn listxattr(&self, ctx: &RequestCtx, ino: Ino) -> VfsResult<Vec<OsString>> {
        if self.is_ctl(ino) {
            return Ok(Vec::new());
        }
        let n = self.db_ino(ino)?;
        in_snapshot!(self, "listxattr", |tx| {
            let node = tree::node(&tx, n).await?;
            let mut out = Vec::new();
            for r in rows(&tx, "SELECT name FROM xattr WHERE ino = $1 ORDER BY name", &[&n]).await? {
                let name = OsString::from_vec(r.try_get::<_, Vec<u8>>(0)?);
                if xattr_namespace_check(node.kind, &name, ctx, false).is_ok() {
                    out.push(name);
                }
            }
            out
        })
    }

    async fn removexattr(&self, ctx: &RequestCtx, ino: Ino, name: &OsStr) -> VfsResult<()> {
        check_xattr(name, None)?;
        if self.is_ctl(ino) {
            return Err(VfsError::NoAttr);
        }
        let n = self.db_ino(ino)?;
        let key = name.as_bytes();
        let now = Timestamp::now();
        in_txn!(self, "removexattr", |tx| {
            let node = tree::node(&tx, n).await?;
            xattr_namespace_check(node.kind, name, ctx, true)?;
            if exec(&tx, "DELETE FROM xattr WHERE ino = $1 AND name = $2", &[&n, &key]).await? == 0 {
                return Err(VfsError::NoAttr.into());
            }
            tree::touch_ctime(&tx, n, now).await?;
            self.announce(&tx, &[Note::Inode(n)]).await?;
        })
    }

    async fn fallocate(
        &self,
        _ctx: &RequestCtx,
        ino: Ino,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> VfsResult<()> {
        let n = self.db_ino(ino)?;
        let of = self.handle(n, fh)?;
        if !of.mode.can_write() {
            return Err(VfsError::BadHandle);
        }
        if length == 0 {
            return Err(VfsError::Invalid("fallocate of zero length"));
        }
        let end = offset
            .checked_add(length)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or(VfsError::TooBig)?;
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        if mode != 0 && mode != libc::FALLOC_FL_KEEP_SIZE && mode != punch {
            return Err(VfsError::Unsupported);
        }
        let now = Timestamp::now();
        in_txn!(self, "fallocate", |tx| {
            let node = tree::node(&tx, n).await?;
            if node.kind != FileType::Regular {
                return Err(VfsError::Unsupported.into());
            }
            let size = node.size as u64;
            if mode == 0 && end > size {
                exec(
                    &tx,
                    "UPDATE inode SET size = $2, mtime_s = $3, mtime_ns = $4, ctime_s = $3, ctime_ns = $4 WHERE ino = $1",
                    &[&n, &(end as i64), &now.secs, &(now.nsecs as i32)],
                )
                .await?;
                self.announce(&tx, &[Note::Inode(n)]).await?;
            } else if mode == punch {
                data::punch(&tx, &self.store, self.block_size, n, size, offset, length).await?;
                exec(
                    &tx,
                    "UPDATE inode SET mtime_s = $2, mtime_ns = $3, ctime_s = $2, ctime_ns = $3 WHERE ino = $1",
                    &[&n, &now.secs, &(now.nsecs as i32)],
                )
                .await?;
                self.announce(&tx, &[Note::Inode(n)]).await?;
            }
        })
    }
}
