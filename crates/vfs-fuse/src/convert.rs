//! Translation between `vfs-core` values and `fuser`'s: errors, attributes, file types,
//! device numbers, times and flags.
//!
//! Invariant: this is the one place where a [`VfsError`] becomes the errno the kernel
//! sees ([`errno`]), and it goes through [`VfsError::errno`], whose match is exhaustive;
//! nothing else in the adapter chooses an errno, except for requests the adapter answers
//! without asking the backend (documented where they are).

use std::time::SystemTime;

use vfs_core::{Attr, FileType, SetTime, VfsError};

/// The errno the kernel is told for `e`.
pub(crate) fn errno(e: &VfsError) -> fuser::Errno {
    fuser::Errno::from_i32(e.errno().raw())
}

/// `fuser`'s file type for ours.
pub(crate) fn file_type(kind: FileType) -> fuser::FileType {
    match kind {
        FileType::Regular => fuser::FileType::RegularFile,
        FileType::Directory => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
        FileType::CharDevice => fuser::FileType::CharDevice,
        FileType::BlockDevice => fuser::FileType::BlockDevice,
    }
}

/// The attributes as the kernel wants them.
pub(crate) fn file_attr(a: &Attr) -> fuser::FileAttr {
    let ctime = SystemTime::from(a.ctime);
    fuser::FileAttr {
        ino: fuser::INodeNo(a.ino.0),
        size: a.size,
        blocks: a.blocks,
        atime: SystemTime::from(a.atime),
        mtime: SystemTime::from(a.mtime),
        ctime,
        crtime: ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: encode_dev(a.rdev),
        blksize: a.blksize,
        flags: 0,
    }
}

/// The attributes of "no such entry" for a cached negative lookup (inode 0).
pub(crate) fn negative_attr() -> fuser::FileAttr {
    fuser::FileAttr {
        ino: fuser::INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// A userspace `dev_t` (glibc encoding, as `stat(2)` gives it) in the kernel's 32-bit
/// encoding that FUSE carries (`new_encode_dev`).
pub(crate) fn encode_dev(dev: u64) -> u32 {
    let major = u64::from(libc::major(dev));
    let minor = u64::from(libc::minor(dev));
    let enc = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12);
    // Numbers beyond the 32-bit encoding (major >= 4096 or minor >= 2^20) cannot be
    // carried; the low bits are what the kernel would see from any FUSE server.
    (enc & 0xffff_ffff) as u32
}

/// The kernel's 32-bit device number (`new_decode_dev`) as a userspace `dev_t`.
pub(crate) fn decode_dev(dev: u32) -> u64 {
    let major = (dev & 0xf_ff00) >> 8;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xf_ff00);
    libc::makedev(major, minor)
}

/// A time to set, from the kernel's.
pub(crate) fn set_time(t: fuser::TimeOrNow) -> SetTime {
    match t {
        fuser::TimeOrNow::Now => SetTime::Now,
        fuser::TimeOrNow::SpecificTime(t) => SetTime::At(t.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfs_core::{Ino, Timestamp};

    #[test]
    fn every_error_keeps_its_errno() {
        for raw in 1..140 {
            let e = VfsError::from_errno(vfs_core::Errno::from_raw(raw));
            assert_eq!(errno(&e).code(), raw);
        }
        assert_eq!(errno(&VfsError::NotFound), fuser::Errno::ENOENT);
        assert_eq!(errno(&VfsError::Stale), fuser::Errno::ESTALE);
    }

    #[test]
    fn device_numbers_round_trip() {
        for (ma, mi) in [(0, 0), (1, 3), (8, 1), (4095, 255), (254, 70000), (13, 1 << 19)] {
            let dev = libc::makedev(ma, mi);
            assert_eq!(decode_dev(encode_dev(dev)), dev, "{ma}:{mi}");
        }
        // The classic 16-bit encoding agrees for small numbers.
        assert_eq!(encode_dev(libc::makedev(1, 3)), 0x103);
    }

    #[test]
    fn attributes_carry_over() {
        let t = Timestamp::new(-5, 7);
        let a = Attr {
            ino: Ino(42),
            kind: FileType::Symlink,
            perm: 0o4755,
            nlink: 3,
            uid: 1,
            gid: 2,
            size: 10,
            blocks: 8,
            blksize: 4096,
            rdev: 0,
            atime: t,
            mtime: Timestamp::new(100, 0),
            ctime: Timestamp::new(200, 5),
        };
        let f = file_attr(&a);
        assert_eq!(f.ino, fuser::INodeNo(42));
        assert_eq!(f.kind, fuser::FileType::Symlink);
        assert_eq!(f.perm, 0o4755);
        assert_eq!(Timestamp::from(f.atime), t);
        assert_eq!(Timestamp::from(f.ctime), Timestamp::new(200, 5));
        assert_eq!((f.nlink, f.uid, f.gid, f.size, f.blocks), (3, 1, 2, 10, 8));
    }
}
