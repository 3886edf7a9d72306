//! The one table from errors to NFSv3 status codes.
//!
//! Invariant: every error a backend can answer reaches the client through
//! [`nfsstat_of`], which reads [`ERRNO_TO_NFSSTAT`]: one row for every errno `vfs-core`
//! names (a test checks that none is missing and none appears twice), and `NFS3ERR_IO`
//! for any other. [`VfsError::errno`] is itself an exhaustive match, so a new `VfsError`
//! variant reaches this table through its errno.
//!
//! `EBADF` is `NFS3ERR_IO`, never `NFS3ERR_STALE`: "bad descriptor" is a fact about a
//! server-side handle the client never saw, and a client told `STALE` drops its state —
//! macOS silently discards buffered writes (seed 003 (doc/LESSONS.md#seed-003-pr-178), hf-mount PR #178). Only `ESTALE`
//! (and a file handle of another source, decided by `vfs_core::fh`) is `NFS3ERR_STALE`;
//! bytes that are not a handle of ours are `NFS3ERR_BADHANDLE`.

use nfs3_types::nfs3::nfsstat3;
use vfs_core::fh::HandleError;
use vfs_core::{Errno, VfsError};

/// Errno → NFSv3 status, one row per errno that `vfs-core` names.
pub const ERRNO_TO_NFSSTAT: [(Errno, nfsstat3); 37] = [
    (Errno::EPERM, nfsstat3::NFS3ERR_PERM),
    (Errno::ENOENT, nfsstat3::NFS3ERR_NOENT),
    (Errno::EIO, nfsstat3::NFS3ERR_IO),
    (Errno::ENXIO, nfsstat3::NFS3ERR_NXIO),
    // An argument list too long for the backend: no NFS equivalent.
    (Errno::E2BIG, nfsstat3::NFS3ERR_IO),
    // Never STALE (see the module documentation).
    (Errno::EBADF, nfsstat3::NFS3ERR_IO),
    // "Try again later": the client waits and retries.
    (Errno::EAGAIN, nfsstat3::NFS3ERR_JUKEBOX),
    // Transient on the server, as the Linux server answers it.
    (Errno::ENOMEM, nfsstat3::NFS3ERR_JUKEBOX),
    (Errno::EACCES, nfsstat3::NFS3ERR_ACCES),
    // Not transient in general (a busy mount point): retrying forever would hang.
    (Errno::EBUSY, nfsstat3::NFS3ERR_IO),
    (Errno::EEXIST, nfsstat3::NFS3ERR_EXIST),
    (Errno::EXDEV, nfsstat3::NFS3ERR_XDEV),
    (Errno::ENODEV, nfsstat3::NFS3ERR_NODEV),
    (Errno::ENOTDIR, nfsstat3::NFS3ERR_NOTDIR),
    (Errno::EISDIR, nfsstat3::NFS3ERR_ISDIR),
    (Errno::EINVAL, nfsstat3::NFS3ERR_INVAL),
    // Out of descriptors: the handle pool gives some back; retry later.
    (Errno::ENFILE, nfsstat3::NFS3ERR_JUKEBOX),
    (Errno::EMFILE, nfsstat3::NFS3ERR_JUKEBOX),
    (Errno::ETXTBSY, nfsstat3::NFS3ERR_IO),
    (Errno::EFBIG, nfsstat3::NFS3ERR_FBIG),
    (Errno::ENOSPC, nfsstat3::NFS3ERR_NOSPC),
    (Errno::ESPIPE, nfsstat3::NFS3ERR_INVAL),
    (Errno::EROFS, nfsstat3::NFS3ERR_ROFS),
    (Errno::EMLINK, nfsstat3::NFS3ERR_MLINK),
    (Errno::ERANGE, nfsstat3::NFS3ERR_INVAL),
    (Errno::ENAMETOOLONG, nfsstat3::NFS3ERR_NAMETOOLONG),
    (Errno::ENOSYS, nfsstat3::NFS3ERR_NOTSUPP),
    (Errno::ENOTEMPTY, nfsstat3::NFS3ERR_NOTEMPTY),
    // NFSv3 has no "symlink loop": the Linux server answers EINVAL too.
    (Errno::ELOOP, nfsstat3::NFS3ERR_INVAL),
    // No xattrs in NFSv3; a backend answering ENODATA to a data operation failed.
    (Errno::ENODATA, nfsstat3::NFS3ERR_IO),
    (Errno::EOVERFLOW, nfsstat3::NFS3ERR_FBIG),
    (Errno::EOPNOTSUPP, nfsstat3::NFS3ERR_NOTSUPP),
    // A remote backend whose peer is gone, or slow: retry later.
    (Errno::ENOTCONN, nfsstat3::NFS3ERR_JUKEBOX),
    (Errno::ETIMEDOUT, nfsstat3::NFS3ERR_JUKEBOX),
    (Errno::ESTALE, nfsstat3::NFS3ERR_STALE),
    (Errno::EDQUOT, nfsstat3::NFS3ERR_DQUOT),
    (Errno::EINTR, nfsstat3::NFS3ERR_JUKEBOX),
];

/// The status for an errno: its row in [`ERRNO_TO_NFSSTAT`], or `NFS3ERR_IO`.
pub fn nfsstat_of_errno(e: Errno) -> nfsstat3 {
    ERRNO_TO_NFSSTAT
        .iter()
        .find(|(errno, _)| *errno == e)
        .map_or(nfsstat3::NFS3ERR_IO, |(_, stat)| *stat)
}

/// The status a client receives for a backend error.
pub fn nfsstat_of(e: &VfsError) -> nfsstat3 {
    nfsstat_of_errno(e.errno())
}

/// The status for a file handle that did not decode: `NFS3ERR_BADHANDLE` (not a handle of
/// ours) or `NFS3ERR_STALE` (another source's or another instance's).
pub fn nfsstat_of_handle(e: HandleError) -> nfsstat3 {
    match e {
        HandleError::BadHandle => nfsstat3::NFS3ERR_BADHANDLE,
        HandleError::Stale { .. } => nfsstat3::NFS3ERR_STALE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every errno `vfs-core` names has exactly one row.
    #[test]
    fn the_table_is_exhaustive_and_has_no_duplicates() {
        for raw in 1..4096 {
            let e = Errno::from_raw(raw);
            let rows = ERRNO_TO_NFSSTAT.iter().filter(|(x, _)| *x == e).count();
            if e.name().is_some() {
                assert_eq!(rows, 1, "{e:?} must have exactly one row");
            } else {
                assert_eq!(rows, 0, "{e:?} is not named by vfs-core");
            }
        }
    }

    /// Seed 003 (doc/LESSONS.md#seed-003-pr-178; hf-mount PR #178): EBADF reached macOS as NFS3ERR_STALE and the client
    /// dropped the writes. Only ESTALE is STALE, whatever the errno.
    #[test]
    fn seed003_pr178_ebadf_is_never_stale() {
        assert_eq!(nfsstat_of(&VfsError::BadHandle), nfsstat3::NFS3ERR_IO);
        assert_eq!(nfsstat_of_errno(Errno::EBADF), nfsstat3::NFS3ERR_IO);
        for raw in 1..4096 {
            let e = Errno::from_raw(raw);
            let stale = nfsstat_of(&VfsError::from_errno(e)) == nfsstat3::NFS3ERR_STALE;
            assert_eq!(stale, e == Errno::ESTALE, "{e:?}");
        }
    }

    #[test]
    fn handle_errors() {
        assert_eq!(nfsstat_of_handle(HandleError::BadHandle), nfsstat3::NFS3ERR_BADHANDLE);
        assert_eq!(
            nfsstat_of_handle(HandleError::Stale { found: 1, expected: 2 }),
            nfsstat3::NFS3ERR_STALE
        );
    }

    #[test]
    fn common_answers() {
        assert_eq!(nfsstat_of(&VfsError::NotFound), nfsstat3::NFS3ERR_NOENT);
        assert_eq!(nfsstat_of(&VfsError::Exists), nfsstat3::NFS3ERR_EXIST);
        assert_eq!(nfsstat_of(&VfsError::NotEmpty), nfsstat3::NFS3ERR_NOTEMPTY);
        assert_eq!(nfsstat_of(&VfsError::Invalid("x")), nfsstat3::NFS3ERR_INVAL);
        assert_eq!(nfsstat_of(&VfsError::NotImplemented), nfsstat3::NFS3ERR_NOTSUPP);
        assert_eq!(nfsstat_of(&VfsError::Io("x".into())), nfsstat3::NFS3ERR_IO);
        assert_eq!(nfsstat_of(&VfsError::Os(Errno::from_raw(4000))), nfsstat3::NFS3ERR_IO);
    }
}
