//! The values every operation speaks in: inode and handle numbers, attributes, names,
//! flags and the request context.
//!
//! Invariant: a [`Name`] is always a valid single path component (non-empty, no `/`, no
//! NUL, not `.` or `..`, at most [`NAME_MAX`] bytes): it cannot be constructed otherwise,
//! so no backend can be handed a name that walks out of a directory.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{VfsError, VfsResult};

/// Longest single name component, in bytes (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Longest symlink target, in bytes including nothing else (Linux `PATH_MAX` - 1).
pub const PATH_MAX: usize = 4095;

/// An inode number. The root directory is always [`Ino::ROOT`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Ino(pub u64);

impl Ino {
    /// The root directory of every filesystem.
    pub const ROOT: Ino = Ino(1);
}

impl fmt::Display for Ino {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ino {}", self.0)
    }
}

/// An open-file handle number, chosen by the backend in `open`/`create`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Fh(pub u64);

/// The type of a filesystem object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A unix-domain socket node.
    Socket,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
}

impl FileType {
    /// Every type, in the order of [`FileType::code`].
    pub const ALL: [FileType; 7] = [
        FileType::Regular,
        FileType::Directory,
        FileType::Symlink,
        FileType::Fifo,
        FileType::Socket,
        FileType::CharDevice,
        FileType::BlockDevice,
    ];

    /// A small stable number for this type (1 to 7, in the order of [`FileType::ALL`]),
    /// for formats that store it: vfs-p2p's wire, vfs-pg's rows. Never renumbered.
    pub const fn code(self) -> u8 {
        match self {
            FileType::Regular => 1,
            FileType::Directory => 2,
            FileType::Symlink => 3,
            FileType::Fifo => 4,
            FileType::Socket => 5,
            FileType::CharDevice => 6,
            FileType::BlockDevice => 7,
        }
    }

    /// The type of a [`FileType::code`]; `None` for any other number.
    pub fn from_code(code: u8) -> Option<FileType> {
        FileType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The `S_IFMT` bits of this type.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => libc::S_IFREG,
            FileType::Directory => libc::S_IFDIR,
            FileType::Symlink => libc::S_IFLNK,
            FileType::Fifo => libc::S_IFIFO,
            FileType::Socket => libc::S_IFSOCK,
            FileType::CharDevice => libc::S_IFCHR,
            FileType::BlockDevice => libc::S_IFBLK,
        }
    }

    /// The type named by the `S_IFMT` bits of `mode`, if any.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileType::Regular,
            libc::S_IFDIR => FileType::Directory,
            libc::S_IFLNK => FileType::Symlink,
            libc::S_IFIFO => FileType::Fifo,
            libc::S_IFSOCK => FileType::Socket,
            libc::S_IFCHR => FileType::CharDevice,
            libc::S_IFBLK => FileType::BlockDevice,
            _ => return None,
        })
    }
}

/// A point in time with nanosecond precision; may precede the epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Timestamp {
    /// Seconds since the epoch (negative before it).
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsecs: u32,
}

impl Timestamp {
    /// The epoch.
    pub const EPOCH: Timestamp = Timestamp { secs: 0, nsecs: 0 };

    /// A timestamp; `nsecs` is clamped to below one second.
    pub const fn new(secs: i64, nsecs: u32) -> Timestamp {
        let nsecs = if nsecs >= 1_000_000_000 { 999_999_999 } else { nsecs };
        Timestamp { secs, nsecs }
    }

    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp::new(i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 {
                    Timestamp::new(-secs, 0)
                } else {
                    Timestamp::new(-secs - 1, 1_000_000_000 - d.subsec_nanos())
                }
            }
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        if t.secs >= 0 {
            UNIX_EPOCH + Duration::new(t.secs.unsigned_abs(), t.nsecs)
        } else {
            UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + Duration::from_nanos(u64::from(t.nsecs))
        }
    }
}

/// The attributes of one inode, as `stat(2)` reports them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Object type.
    pub kind: FileType,
    /// Permission bits, `0o7777` (setuid, setgid, sticky, rwx×3).
    pub perm: u16,
    /// Number of hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (for a symlink, the target's length).
    pub size: u64,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
    /// Preferred I/O size.
    pub blksize: u32,
    /// Device number for device nodes, else 0.
    pub rdev: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last data modification.
    pub mtime: Timestamp,
    /// Last status change.
    pub ctime: Timestamp,
}

impl Attr {
    /// The attributes of a new, empty object of `kind`: `perm` bits, one link (two for a
    /// directory: its name and its `.`), owned by root, size 0, no blocks, 4 KiB preferred
    /// I/O, every time the epoch. Change the rest with struct update syntax:
    ///
    /// ```
    /// use vfs_core::{Attr, FileType, Ino};
    /// let a = Attr { size: 12, ..Attr::new(Ino(2), FileType::Regular, 0o644) };
    /// assert_eq!((a.nlink, a.size, a.mode()), (1, 12, 0o100644));
    /// ```
    pub const fn new(ino: Ino, kind: FileType, perm: u16) -> Attr {
        Attr {
            ino,
            kind,
            perm,
            nlink: if matches!(kind, FileType::Directory) { 2 } else { 1 },
            uid: 0,
            gid: 0,
            size: 0,
            blocks: 0,
            blksize: 4096,
            rdev: 0,
            atime: Timestamp::EPOCH,
            mtime: Timestamp::EPOCH,
            ctime: Timestamp::EPOCH,
        }
    }

    /// `st_mode`: type bits and permission bits together.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | u32::from(self.perm)
    }
}

/// A time to set: an explicit value, or "now" as the backend sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SetTime {
    /// The backend's current time (`UTIME_NOW`).
    Now,
    /// This exact time.
    At(Timestamp),
}

impl SetTime {
    /// Resolves "now" against `now`.
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            SetTime::Now => now,
            SetTime::At(t) => t,
        }
    }
}

/// Which attributes a `setattr` changes; `None` leaves a field as it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SetAttr {
    /// New permission bits (`chmod`); only the low 12 bits are used.
    pub mode: Option<u32>,
    /// New owner (`chown`).
    pub uid: Option<u32>,
    /// New group (`chown`).
    pub gid: Option<u32>,
    /// New size (`truncate`).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
    /// The handle the change is made through (`ftruncate`, `fchmod`), if any.
    pub fh: Option<Fh>,
}

impl SetAttr {
    /// A change of size only.
    pub fn size(size: u64) -> SetAttr {
        SetAttr {
            size: Some(size),
            ..SetAttr::default()
        }
    }
    /// A change of permission bits only.
    pub fn mode(mode: u32) -> SetAttr {
        SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        }
    }
}

/// Who is asking: the caller's credentials, as the front end saw them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RequestCtx {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process id (0 if unknown, e.g. over NFS).
    pub pid: u32,
}

impl RequestCtx {
    /// The superuser, pid 0: what internal callers and tests use.
    pub const ROOT: RequestCtx = RequestCtx { uid: 0, gid: 0, pid: 0 };

    /// A context for these credentials.
    pub const fn new(uid: u32, gid: u32, pid: u32) -> RequestCtx {
        RequestCtx { uid, gid, pid }
    }
}

/// One directory entry from `readdir`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirEntry {
    /// The entry's inode.
    pub ino: Ino,
    /// The entry's type.
    pub kind: FileType,
    /// The entry's name (`.` and `..` included).
    pub name: OsString,
    /// The cookie to pass to `readdir` to continue *after* this entry. Never 0.
    pub cookie: u64,
}

/// One directory entry with the attributes of its inode (`readdirplus`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirEntryPlus {
    /// The entry.
    pub entry: DirEntry,
    /// Its attributes, as `lookup` would return them.
    pub attr: Attr,
}

/// Filesystem-wide figures (`statfs(2)`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StatFs {
    /// Total blocks of `frsize` bytes.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Preferred block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}

/// How a file is opened: the `open(2)` flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OpenFlags(pub i32);

/// The access mode part of [`OpenFlags`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AccessMode {
    /// `O_RDONLY`.
    Read,
    /// `O_WRONLY`.
    Write,
    /// `O_RDWR`.
    ReadWrite,
}

impl AccessMode {
    /// Whether reads are allowed.
    pub fn can_read(self) -> bool {
        matches!(self, AccessMode::Read | AccessMode::ReadWrite)
    }
    /// Whether writes are allowed.
    pub fn can_write(self) -> bool {
        matches!(self, AccessMode::Write | AccessMode::ReadWrite)
    }
}

impl OpenFlags {
    /// `O_RDONLY`.
    pub const RDONLY: OpenFlags = OpenFlags(libc::O_RDONLY);
    /// `O_WRONLY`.
    pub const WRONLY: OpenFlags = OpenFlags(libc::O_WRONLY);
    /// `O_RDWR`.
    pub const RDWR: OpenFlags = OpenFlags(libc::O_RDWR);

    /// The access mode. An invalid `O_ACCMODE` value (3) is treated as read-write, as Linux does.
    pub fn access(self) -> AccessMode {
        match self.0 & libc::O_ACCMODE {
            libc::O_RDONLY => AccessMode::Read,
            libc::O_WRONLY => AccessMode::Write,
            _ => AccessMode::ReadWrite,
        }
    }
    /// `O_TRUNC` is set.
    pub fn truncate(self) -> bool {
        self.0 & libc::O_TRUNC != 0
    }
    /// `O_APPEND` is set.
    pub fn append(self) -> bool {
        self.0 & libc::O_APPEND != 0
    }
    /// `O_EXCL` is set.
    pub fn exclusive(self) -> bool {
        self.0 & libc::O_EXCL != 0
    }
    /// These flags with `extra` added.
    pub fn with(self, extra: i32) -> OpenFlags {
        OpenFlags(self.0 | extra)
    }
}

/// `renameat2(2)` flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RenameFlags(pub u32);

impl RenameFlags {
    /// Plain rename: replace the destination if it exists.
    pub const NONE: RenameFlags = RenameFlags(0);
    /// Fail with `EEXIST` if the destination exists.
    pub const NOREPLACE: RenameFlags = RenameFlags(libc::RENAME_NOREPLACE);
    /// Atomically swap source and destination; both must exist.
    pub const EXCHANGE: RenameFlags = RenameFlags(libc::RENAME_EXCHANGE);

    /// `RENAME_NOREPLACE` is set.
    pub fn noreplace(self) -> bool {
        self.0 & libc::RENAME_NOREPLACE != 0
    }
    /// `RENAME_EXCHANGE` is set.
    pub fn exchange(self) -> bool {
        self.0 & libc::RENAME_EXCHANGE != 0
    }
    /// Rejects unknown bits and the contradictory NOREPLACE|EXCHANGE, as Linux does.
    pub fn validate(self) -> VfsResult<RenameFlags> {
        let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
        if self.0 & !known != 0 {
            return Err(VfsError::Invalid("unsupported rename flag"));
        }
        if self.noreplace() && self.exchange() {
            return Err(VfsError::Invalid("RENAME_NOREPLACE with RENAME_EXCHANGE"));
        }
        Ok(self)
    }
}

/// `setxattr(2)` flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum XattrSet {
    /// Create or replace.
    #[default]
    Any,
    /// Fail with `EEXIST` if the attribute exists (`XATTR_CREATE`).
    Create,
    /// Fail with `ENODATA` if the attribute does not exist (`XATTR_REPLACE`).
    Replace,
}

impl XattrSet {
    /// From the raw `setxattr` flags.
    pub fn from_raw(flags: i32) -> VfsResult<XattrSet> {
        match flags {
            0 => Ok(XattrSet::Any),
            libc::XATTR_CREATE => Ok(XattrSet::Create),
            libc::XATTR_REPLACE => Ok(XattrSet::Replace),
            _ => Err(VfsError::Invalid("unknown setxattr flags")),
        }
    }
}

/// A valid single path component: non-empty, no `/`, no NUL, not `.` or `..`, at most
/// [`NAME_MAX`] bytes. The only way to make one is [`Name::new`], which checks all of that.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name<'a>(&'a OsStr);

impl<'a> Name<'a> {
    /// Validates `name` as a single path component.
    ///
    /// Errors: `ENAMETOOLONG` over [`NAME_MAX`] bytes; `EINVAL` if empty, `.`, `..`, or
    /// containing `/` or NUL.
    pub fn new(name: &'a OsStr) -> VfsResult<Name<'a>> {
        let b = name.as_bytes();
        if b.len() > NAME_MAX {
            return Err(VfsError::NameTooLong);
        }
        if b.is_empty() {
            return Err(VfsError::Invalid("empty name"));
        }
        if b == b"." || b == b".." {
            return Err(VfsError::Invalid("name is . or .."));
        }
        if b.iter().any(|&c| c == b'/' || c == 0) {
            return Err(VfsError::Invalid("name contains / or NUL"));
        }
        Ok(Name(name))
    }

    /// Validates a byte string as a name (see [`Name::new`]).
    pub fn from_bytes(name: &'a [u8]) -> VfsResult<Name<'a>> {
        Name::new(OsStr::from_bytes(name))
    }

    /// The name as an `OsStr`.
    pub fn as_os_str(self) -> &'a OsStr {
        self.0
    }

    /// The name's bytes.
    pub fn as_bytes(self) -> &'a [u8] {
        self.0.as_bytes()
    }

    /// An owned copy.
    pub fn to_os_string(self) -> OsString {
        self.0.to_os_string()
    }
}

impl fmt::Debug for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_string_lossy())
    }
}

impl AsRef<OsStr> for Name<'_> {
    fn as_ref(&self) -> &OsStr {
        self.0
    }
}

/// Checks a symlink target: non-empty, no NUL, at most [`PATH_MAX`] bytes.
pub fn check_symlink_target(target: &OsStr) -> VfsResult<()> {
    let b = target.as_bytes();
    if b.len() > PATH_MAX {
        return Err(VfsError::NameTooLong);
    }
    if b.is_empty() {
        return Err(VfsError::NotFound);
    }
    if b.contains(&0) {
        return Err(VfsError::Invalid("symlink target contains NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_type_codes_are_stable_and_round_trip() {
        // Stored on the P2P wire and in vfs-pg rows: these numbers never change.
        let codes: Vec<u8> = FileType::ALL.iter().map(|t| t.code()).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7]);
        for t in FileType::ALL {
            assert_eq!(FileType::from_code(t.code()), Some(t));
        }
        assert_eq!(FileType::from_code(0), None);
        assert_eq!(FileType::from_code(8), None);
    }

    #[test]
    fn name_rejects_what_walks_out() {
        for bad in ["", ".", "..", "a/b", "/", "a\0b"] {
            assert!(
                matches!(Name::new(OsStr::new(bad)), Err(VfsError::Invalid(_))),
                "{bad:?}"
            );
        }
        let long = "x".repeat(NAME_MAX + 1);
        assert!(matches!(Name::new(OsStr::new(&long)), Err(VfsError::NameTooLong)));
        let max = "x".repeat(NAME_MAX);
        assert!(Name::new(OsStr::new(&max)).is_ok());
        assert!(Name::new(OsStr::new("...")).is_ok());
    }

    #[test]
    fn timestamps_round_trip_through_system_time() {
        for t in [
            Timestamp::new(0, 0),
            Timestamp::new(1_700_000_000, 123),
            Timestamp::new(-1, 500),
            Timestamp::new(-100, 0),
        ] {
            assert_eq!(Timestamp::from(SystemTime::from(t)), t);
        }
    }

    #[test]
    fn open_flags_access_mode() {
        assert_eq!(OpenFlags::RDONLY.access(), AccessMode::Read);
        assert_eq!(OpenFlags::WRONLY.access(), AccessMode::Write);
        assert_eq!(OpenFlags::RDWR.with(libc::O_TRUNC).access(), AccessMode::ReadWrite);
        assert!(OpenFlags::RDWR.with(libc::O_TRUNC).truncate());
    }

    #[test]
    fn rename_flags_validate() {
        assert!(
            RenameFlags(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE)
                .validate()
                .is_err()
        );
        assert!(RenameFlags(libc::RENAME_WHITEOUT).validate().is_err());
        assert!(RenameFlags::EXCHANGE.validate().is_ok());
    }

    #[test]
    fn file_type_mode_round_trip() {
        for t in [
            FileType::Regular,
            FileType::Directory,
            FileType::Symlink,
            FileType::Fifo,
            FileType::Socket,
            FileType::CharDevice,
            FileType::BlockDevice,
        ] {
            assert_eq!(FileType::from_mode(t.mode_bits() | 0o644), Some(t));
        }
        assert_eq!(FileType::from_mode(0o644), None);
    }
}
