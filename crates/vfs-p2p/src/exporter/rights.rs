//! Who a peer acts as on the owner, and what it may do there.
//!
//! Invariants (checked in `admit`, before the backend sees the request):
//!
//! - **One identity per share.** Every request of every peer runs as the one local
//!   identity the owner chose ([`PeerIdentity`]); the uid, gid and pid a request carries
//!   are ignored. The identity is root only when the owner says so
//!   ([`PeerIdentity::Root`]); a share whose directory belongs to root, served with the
//!   default [`PeerIdentity::ShareOwner`], acts as `nobody` (65534:65534).
//! - **Read-only keys change nothing.** A key whose [`Right`] is read-only gets `EROFS`
//!   for every operation that could change the share ([`changes`]: writes, creations,
//!   renames, removals, links, attribute and xattr changes, opens for writing or
//!   truncating, `access(W_OK)`), before any backend call.
//! - **No privilege from a peer.** Unless the owner allows it ([`PeerPolicy`]), a peer
//!   cannot make a setuid file or a setgid non-directory (create, mknod, chmod: `EPERM`),
//!   a character or block device (`EPERM`), or set the `security.capability` xattr
//!   (`EPERM`).
//! - **The kernel's permission checks, for a non-root identity.** A backend such as
//!   `LocalFs` run by root does not check its caller (that is the FUSE front end's
//!   `default_permissions`), so here the identity gets the checks the kernel would make:
//!   search and write on parent directories, the sticky bit, read or write on the file
//!   opened, read on a listed directory, ownership for chmod, chown and explicit times,
//!   and, for xattrs, only the `user.` namespace. Only the identity's primary group counts.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use vfs_core::vfs::access_mask::{EXEC, READ, WRITE};
use vfs_core::{Attr, FileType, Ino, Name, RequestCtx, SetTime, VfsError, VfsResult, VirtualFs, check_access};

use crate::identity::{Allowlist, Right};
use crate::wire::Op;

/// The uid and gid of `nobody`, what a root-owned share's default identity becomes.
pub const NOBODY: u32 = 65534;

/// As whom peers act on the owner's backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerIdentity {
    /// The owner (uid and gid) of the share's root directory, looked up at the first
    /// request; `nobody` if that is root (never root implicitly).
    #[default]
    ShareOwner,
    /// This uid and gid. A uid of 0 acts as `nobody` too: root is [`PeerIdentity::Root`].
    User {
        /// The user id.
        uid: u32,
        /// The (primary) group id.
        gid: u32,
    },
    /// Root: no permission checks of our own (the explicit `--as-root`).
    Root,
}

/// What the owner lets peers do. See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct PeerPolicy {
    /// The keys and their rights, re-read on every request (so a reloaded list applies to
    /// links already up). `None`: every peer the listener admitted may read and write.
    pub keys: Option<Allowlist>,
    /// As whom peers act.
    pub identity: PeerIdentity,
    /// Let peers make setuid files and setgid non-directories (and set
    /// `security.capability`).
    pub allow_setid: bool,
    /// Let peers make character and block devices.
    pub allow_devices: bool,
}

impl PeerPolicy {
    /// Peers act as root, may make setuid files and devices, and are all read-write: the
    /// behaviour of a share with no access control, for tests and fully trusted peers.
    pub fn trusted() -> PeerPolicy {
        PeerPolicy {
            keys: None,
            identity: PeerIdentity::Root,
            allow_setid: true,
            allow_devices: true,
        }
    }
}

/// The request context of `uid:gid`, with `nobody` for root.
pub(super) fn unprivileged(uid: u32, gid: u32) -> RequestCtx {
    if uid == 0 {
        RequestCtx::new(NOBODY, NOBODY, 0)
    } else {
        RequestCtx::new(uid, gid, 0)
    }
}

fn erofs() -> VfsError {
    VfsError::ReadOnly
}

fn eperm() -> VfsError {
    VfsError::NotPermitted
}

/// Whether `op` could change the share (what a read-only key is refused). Exhaustive on
/// purpose: a new operation must be classified here.
pub fn changes(op: &Op) -> bool {
    match op {
        Op::Hello { .. }
        | Op::Lookup { .. }
        | Op::Forget { .. }
        | Op::Getattr { .. }
        | Op::Readlink { .. }
        | Op::Read { .. }
        | Op::Fsync { .. }
        | Op::Readdir { .. }
        | Op::Readdirplus { .. }
        | Op::Statfs { .. }
        | Op::Getxattr { .. }
        | Op::Listxattr { .. }
        | Op::Release { .. }
        | Op::Unknown(_) => false,
        Op::Access { mask, .. } => mask & WRITE != 0,
        Op::Open { flags, .. } => flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0,
        Op::Setattr { .. }
        | Op::Mknod { .. }
        | Op::Mkdir { .. }
        | Op::Unlink { .. }
        | Op::Rmdir { .. }
        | Op::Symlink { .. }
        | Op::Rename { .. }
        | Op::Link { .. }
        | Op::Create { .. }
        | Op::Write { .. }
        | Op::Setxattr { .. }
        | Op::Removexattr { .. }
        | Op::Fallocate { .. } => true,
    }
}

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;

/// setuid on anything, setgid on a non-directory: `EPERM` unless allowed. A setgid
/// directory is allowed: it only makes new entries inherit the directory's group, and
/// grants nobody a privilege on execution.
fn setid_ok(policy: &PeerPolicy, mode: u32, dir: bool) -> VfsResult<()> {
    if policy.allow_setid || (mode & S_ISUID == 0 && (dir || mode & S_ISGID == 0)) {
        Ok(())
    } else {
        Err(eperm())
    }
}

/// Checks `op` from a peer with right `right`, acting as `who`, before it is served.
/// `pinned(ino, write)`: whether the link holds a handle of `ino` open for reading (or
/// writing), whose access was checked when it was opened.
pub(super) async fn admit<F: VirtualFs>(
    fs: &F,
    policy: &PeerPolicy,
    right: Right,
    who: &RequestCtx,
    op: &Op,
    pinned: impl Fn(Ino, bool) -> bool,
) -> VfsResult<()> {
    if !right.can_write() && changes(op) {
        return Err(erofs());
    }
    privilege(fs, policy, who, op).await?;
    if who.uid == 0 {
        return Ok(());
    }
    Checks { fs, who }.permissions(op, pinned).await
}

/// The setid, device and capability rules (for any identity, root included).
async fn privilege<F: VirtualFs>(fs: &F, policy: &PeerPolicy, who: &RequestCtx, op: &Op) -> VfsResult<()> {
    match op {
        Op::Create { mode, .. } => setid_ok(policy, *mode, false),
        Op::Mkdir { mode, .. } => setid_ok(policy, *mode, true),
        Op::Mknod { mode, .. } => {
            let fmt = mode & libc::S_IFMT;
            if !policy.allow_devices && (fmt == libc::S_IFCHR || fmt == libc::S_IFBLK) {
                return Err(eperm());
            }
            setid_ok(policy, *mode, false)
        }
        Op::Setattr { ino, set } => match set.mode {
            Some(mode) if !policy.allow_setid && mode & (S_ISUID | S_ISGID) != 0 => {
                let dir = fs.getattr(who, *ino, None).await?.kind == FileType::Directory;
                setid_ok(policy, mode, dir)
            }
            _ => Ok(()),
        },
        Op::Setxattr { name, .. } | Op::Removexattr { name, .. }
            if !policy.allow_setid && name.as_bytes() == b"security.capability" =>
        {
            Err(eperm())
        }
        _ => Ok(()),
    }
}

/// The kernel's permission checks for a non-root identity.
struct Checks<'a, F> {
    fs: &'a F,
    who: &'a RequestCtx,
}

impl<F: VirtualFs> Checks<'_, F> {
    async fn attr(&self, ino: Ino) -> VfsResult<Attr> {
        self.fs.getattr(self.who, ino, None).await
    }

    async fn may(&self, ino: Ino, mask: u32) -> VfsResult<Attr> {
        let a = self.attr(ino).await?;
        check_access(&a, self.who, mask)?;
        Ok(a)
    }

    fn owns(&self, a: &Attr) -> VfsResult<()> {
        if a.uid == self.who.uid { Ok(()) } else { Err(eperm()) }
    }

    /// What `parent/name` names now, without keeping a lookup.
    async fn entry(&self, parent: Ino, name: &OsStr) -> VfsResult<Option<Attr>> {
        let a = self.fs.lookup(self.who, parent, Name::new(name)?).await.ok();
        if let Some(a) = &a {
            self.fs.forget(a.ino, 1).await;
        }
        Ok(a)
    }

    /// The sticky-bit rule: in a sticky directory only the directory's or the entry's
    /// owner may remove or rename the entry.
    fn sticky(&self, dir: &Attr, victim: &Attr) -> VfsResult<()> {
        if dir.perm & 0o1000 != 0 && self.who.uid != dir.uid && self.who.uid != victim.uid {
            Err(eperm())
        } else {
            Ok(())
        }
    }

    /// Removing (or renaming away) `parent/name`: write and search on `parent`, the
    /// sticky rule; the entry if it exists.
    async fn removable(&self, parent: Ino, name: &OsStr) -> VfsResult<Option<Attr>> {
        let dir = self.may(parent, WRITE | EXEC).await?;
        let victim = self.entry(parent, name).await?;
        if let Some(v) = &victim {
            self.sticky(&dir, v)?;
        }
        Ok(victim)
    }

    async fn permissions(&self, op: &Op, pinned: impl Fn(Ino, bool) -> bool) -> VfsResult<()> {
        match op {
            Op::Lookup { parent, .. } => self.may(*parent, EXEC).await.map(drop),
            Op::Setattr { ino, set } => {
                let a = self.attr(*ino).await?;
                let explicit_time =
                    matches!(set.atime, Some(SetTime::At(_))) || matches!(set.mtime, Some(SetTime::At(_)));
                if set.mode.is_some() || explicit_time {
                    self.owns(&a)?;
                }
                if set.uid.is_some_and(|u| u != a.uid) {
                    return Err(eperm());
                }
                if set.gid.is_some_and(|g| g != a.gid) {
                    self.owns(&a)?;
                    if set.gid != Some(self.who.gid) {
                        return Err(eperm());
                    }
                }
                if set.size.is_some() && !pinned(*ino, true) {
                    check_access(&a, self.who, WRITE)?;
                }
                let now_time = matches!(set.atime, Some(SetTime::Now)) || matches!(set.mtime, Some(SetTime::Now));
                if now_time && a.uid != self.who.uid {
                    check_access(&a, self.who, WRITE)?;
                }
                Ok(())
            }
            Op::Mknod { parent, .. } | Op::Mkdir { parent, .. } | Op::Symlink { parent, .. } => {
                self.may(*parent, WRITE | EXEC).await.map(drop)
            }
            Op::Create {
                parent, name, flags, ..
            } => {
                self.may(*parent, WRITE | EXEC).await?;
                match self.entry(*parent, name).await? {
                    Some(existing) if flags & libc::O_EXCL == 0 => check_access(&existing, self.who, open_mask(*flags)),
                    _ => Ok(()),
                }
            }
            Op::Unlink { parent, name } | Op::Rmdir { parent, name } => self.removable(*parent, name).await.map(drop),
            Op::Rename {
                parent,
                name,
                newparent,
                newname,
                ..
            } => {
                let moved = self.removable(*parent, name).await?;
                self.removable(*newparent, newname).await?;
                if let Some(m) = moved
                    && m.kind == FileType::Directory
                    && newparent != parent
                {
                    // Its ".." changes.
                    check_access(&m, self.who, WRITE)?;
                }
                Ok(())
            }
            Op::Link { ino, newparent, .. } => {
                self.may(*newparent, WRITE | EXEC).await?;
                let a = self.attr(*ino).await?;
                // protected_hardlinks: the owner, or one who may read and write it.
                if a.uid != self.who.uid {
                    check_access(&a, self.who, READ | WRITE)?;
                }
                Ok(())
            }
            Op::Open { ino, flags } => self.may(*ino, open_mask(*flags)).await.map(drop),
            Op::Read { ino, .. } if !pinned(*ino, false) => self.may(*ino, READ).await.map(drop),
            Op::Write { ino, .. } | Op::Fallocate { ino, .. } if !pinned(*ino, true) => {
                self.may(*ino, WRITE).await.map(drop)
            }
            Op::Readdir { ino, .. } | Op::Readdirplus { ino, .. } => self.may(*ino, READ).await.map(drop),
            Op::Getxattr { ino, name } if name.as_bytes().starts_with(b"user.") => self.may(*ino, READ).await.map(drop),
            Op::Setxattr { ino, name, .. } | Op::Removexattr { ino, name } => {
                if name.as_bytes().starts_with(b"user.") {
                    self.may(*ino, WRITE).await.map(drop)
                } else {
                    Err(eperm())
                }
            }
            _ => Ok(()),
        }
    }
}

/// The access an open with `flags` needs: read and/or write, write for a truncation.
fn open_mask(flags: i32) -> u32 {
    let mut mask = match flags & libc::O_ACCMODE {
        libc::O_WRONLY => WRITE,
        libc::O_RDWR => READ | WRITE,
        _ => READ,
    };
    if flags & libc::O_TRUNC != 0 {
        mask |= WRITE;
    }
    mask
}
