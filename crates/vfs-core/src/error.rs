//! Errors: what every operation can answer besides success.
//!
//! Invariant: every [`VfsError`] maps to exactly one [`Errno`] through an exhaustive match
//! with no wildcard arm, so adding a variant forces a decision in every adapter's table.
//! Expected answers (`ENOENT` from a lookup, `EEXIST` from an exclusive create) are
//! values, not failures: nothing here logs.

use std::fmt;
use std::io;

/// A POSIX error number. Always non-zero and positive.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(i32);

macro_rules! errno_consts {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $name: Errno = Errno(libc::$name);
            )*
            /// The symbolic name of this errno, if it is one this crate names.
            pub fn name(self) -> Option<&'static str> {
                $(if self.0 == libc::$name { return Some(stringify!($name)); })*
                None
            }
        }
    };
}

errno_consts!(
    EPERM,
    ENOENT,
    EIO,
    ENXIO,
    E2BIG,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EBUSY,
    EEXIST,
    EXDEV,
    ENODEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    ETXTBSY,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EROFS,
    EMLINK,
    ERANGE,
    ENAMETOOLONG,
    ENOSYS,
    ENOTEMPTY,
    ELOOP,
    ENODATA,
    EOVERFLOW,
    EOPNOTSUPP,
    ENOTCONN,
    ETIMEDOUT,
    ESTALE,
    EDQUOT,
    EINTR,
);

impl Errno {
    /// Wraps a raw errno. Zero or negative values (which are not errors) become `EIO`.
    pub const fn from_raw(raw: i32) -> Errno {
        if raw > 0 { Errno(raw) } else { Errno(libc::EIO) }
    }
    /// The raw, positive errno value.
    pub const fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = io::Error::from_raw_os_error(self.0);
        match self.name() {
            Some(n) => write!(f, "{n} ({text})"),
            None => write!(f, "{text}"),
        }
    }
}

#[cfg(feature = "localfs")]
impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Self {
        Errno::from_raw(e.raw_os_error())
    }
}

/// The result type of every [`crate::VirtualFs`] operation.
pub type VfsResult<T> = Result<T, VfsError>;

/// Why an operation did not succeed.
///
/// Variants that a backend commonly produces have names; anything else the host or a
/// peer reports travels as [`VfsError::Os`] with its errno intact.
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    /// No entry with that name, or no inode with that number (`ENOENT`).
    #[error("no such file or directory")]
    NotFound,
    /// The name already exists (`EEXIST`).
    #[error("file exists")]
    Exists,
    /// A directory was required (`ENOTDIR`).
    #[error("not a directory")]
    NotDir,
    /// A non-directory was required (`EISDIR`).
    #[error("is a directory")]
    IsDir,
    /// The directory is not empty (`ENOTEMPTY`).
    #[error("directory not empty")]
    NotEmpty,
    /// A name is longer than [`crate::NAME_MAX`] or a path longer than [`crate::PATH_MAX`]
    /// (`ENAMETOOLONG`).
    #[error("name too long")]
    NameTooLong,
    /// An argument is invalid; the text says which (`EINVAL`).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The caller lacks permission for the access (`EACCES`).
    #[error("permission denied")]
    Access,
    /// The operation is reserved to the owner or to root (`EPERM`).
    #[error("operation not permitted")]
    NotPermitted,
    /// The file handle is unknown, or was not opened for this kind of access (`EBADF`).
    /// Never a reason to call a handle stale.
    #[error("bad file handle")]
    BadHandle,
    /// The handle refers to a file that no longer exists or to another export (`ESTALE`).
    #[error("stale file handle")]
    Stale,
    /// Rename or link across filesystems (`EXDEV`).
    #[error("cross-device link")]
    CrossDevice,
    /// Too many hard links (`EMLINK`).
    #[error("too many links")]
    TooManyLinks,
    /// The file would exceed the maximum size (`EFBIG`).
    #[error("file too large")]
    TooBig,
    /// No space left (`ENOSPC`).
    #[error("no space left on device")]
    NoSpace,
    /// The extended attribute does not exist (`ENODATA`).
    #[error("no such attribute")]
    NoAttr,
    /// The caller's buffer is too small for the answer (`ERANGE`).
    #[error("result too large for the buffer")]
    Range,
    /// The backend does not support this operation or flag (`EOPNOTSUPP`).
    #[error("operation not supported")]
    Unsupported,
    /// The operation is not implemented at all by this backend (`ENOSYS`).
    #[error("function not implemented")]
    NotImplemented,
    /// The filesystem is read-only (`EROFS`).
    #[error("read-only filesystem")]
    ReadOnly,
    /// Too many symbolic links, or a symlink where none may be followed (`ELOOP`).
    #[error("too many levels of symbolic links")]
    Loop,
    /// The remote side did not answer in time (`ETIMEDOUT`).
    #[error("timed out")]
    TimedOut,
    /// Data could not be read or written, or a peer went away (`EIO`). The text says why.
    #[error("I/O error: {0}")]
    Io(String),
    /// Any other errno, as the host or a peer reported it.
    #[error("{0}")]
    Os(Errno),
}

impl VfsError {
    /// The errno this error is reported as. Exhaustive: no wildcard arm.
    pub fn errno(&self) -> Errno {
        match self {
            VfsError::NotFound => Errno::ENOENT,
            VfsError::Exists => Errno::EEXIST,
            VfsError::NotDir => Errno::ENOTDIR,
            VfsError::IsDir => Errno::EISDIR,
            VfsError::NotEmpty => Errno::ENOTEMPTY,
            VfsError::NameTooLong => Errno::ENAMETOOLONG,
            VfsError::Invalid(_) => Errno::EINVAL,
            VfsError::Access => Errno::EACCES,
            VfsError::NotPermitted => Errno::EPERM,
            VfsError::BadHandle => Errno::EBADF,
            VfsError::Stale => Errno::ESTALE,
            VfsError::CrossDevice => Errno::EXDEV,
            VfsError::TooManyLinks => Errno::EMLINK,
            VfsError::TooBig => Errno::EFBIG,
            VfsError::NoSpace => Errno::ENOSPC,
            VfsError::NoAttr => Errno::ENODATA,
            VfsError::Range => Errno::ERANGE,
            VfsError::Unsupported => Errno::EOPNOTSUPP,
            VfsError::NotImplemented => Errno::ENOSYS,
            VfsError::ReadOnly => Errno::EROFS,
            VfsError::Loop => Errno::ELOOP,
            VfsError::TimedOut => Errno::ETIMEDOUT,
            VfsError::Io(_) => Errno::EIO,
            VfsError::Os(e) => *e,
        }
    }

    /// The named variant for an errno, or [`VfsError::Os`]. `from_errno(e).errno() == e`
    /// for every errno.
    pub fn from_errno(e: Errno) -> VfsError {
        match e {
            Errno::ENOENT => VfsError::NotFound,
            Errno::EEXIST => VfsError::Exists,
            Errno::ENOTDIR => VfsError::NotDir,
            Errno::EISDIR => VfsError::IsDir,
            Errno::ENOTEMPTY => VfsError::NotEmpty,
            Errno::ENAMETOOLONG => VfsError::NameTooLong,
            Errno::EINVAL => VfsError::Invalid("invalid argument"),
            Errno::EACCES => VfsError::Access,
            Errno::EPERM => VfsError::NotPermitted,
            Errno::EBADF => VfsError::BadHandle,
            Errno::ESTALE => VfsError::Stale,
            Errno::EXDEV => VfsError::CrossDevice,
            Errno::EMLINK => VfsError::TooManyLinks,
            Errno::EFBIG => VfsError::TooBig,
            Errno::ENOSPC => VfsError::NoSpace,
            Errno::ENODATA => VfsError::NoAttr,
            Errno::ERANGE => VfsError::Range,
            Errno::EOPNOTSUPP => VfsError::Unsupported,
            Errno::ENOSYS => VfsError::NotImplemented,
            Errno::EROFS => VfsError::ReadOnly,
            Errno::ELOOP => VfsError::Loop,
            Errno::ETIMEDOUT => VfsError::TimedOut,
            Errno::EIO => VfsError::Io("I/O error".into()),
            other => VfsError::Os(other),
        }
    }

    /// `true` for answers that are part of normal operation (a lookup that finds nothing,
    /// an exclusive create that finds the name taken, a missing xattr). Adapters log these
    /// at `trace` at most; see the "quiet hot paths" tenet.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            VfsError::NotFound | VfsError::Exists | VfsError::NoAttr | VfsError::Range
        )
    }
}

impl From<Errno> for VfsError {
    fn from(e: Errno) -> Self {
        VfsError::from_errno(e)
    }
}

#[cfg(feature = "localfs")]
impl From<rustix::io::Errno> for VfsError {
    fn from(e: rustix::io::Errno) -> Self {
        VfsError::from_errno(e.into())
    }
}

impl From<io::Error> for VfsError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(raw) => VfsError::from_errno(Errno::from_raw(raw)),
            None => match e.kind() {
                io::ErrorKind::NotFound => VfsError::NotFound,
                io::ErrorKind::AlreadyExists => VfsError::Exists,
                io::ErrorKind::PermissionDenied => VfsError::Access,
                io::ErrorKind::TimedOut => VfsError::TimedOut,
                io::ErrorKind::InvalidInput => VfsError::Invalid("invalid input"),
                io::ErrorKind::Unsupported => VfsError::Unsupported,
                _ => VfsError::Io(e.to_string()),
            },
        }
    }
}

impl From<VfsError> for io::Error {
    fn from(e: VfsError) -> Self {
        io::Error::from_raw_os_error(e.errno().raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_errno_round_trips_every_errno() {
        for raw in 1..200 {
            let e = Errno::from_raw(raw);
            assert_eq!(VfsError::from_errno(e).errno(), e, "errno {raw}");
        }
    }

    #[test]
    fn non_positive_raw_becomes_eio() {
        assert_eq!(Errno::from_raw(0), Errno::EIO);
        assert_eq!(Errno::from_raw(-5), Errno::EIO);
    }

    #[test]
    fn io_error_keeps_its_errno() {
        let e: VfsError = io::Error::from_raw_os_error(libc::EBADF).into();
        assert_eq!(e.errno(), Errno::EBADF);
        assert!(matches!(e, VfsError::BadHandle));
    }

    #[test]
    fn display_names_the_errno() {
        assert!(Errno::ENOENT.to_string().starts_with("ENOENT"));
        assert_eq!(format!("{:?}", Errno::EBADF), "EBADF");
    }
}
