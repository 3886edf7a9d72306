//! Attributes between `vfs-core` and NFSv3: `Attr` → `fattr3`, `sattr3` → `SetAttr`.
//!
//! Invariant: conversions are total. A time NFSv3 cannot carry (before 1970 or after
//! 2106: `nfstime3` seconds are unsigned 32-bit) is clamped to the nearest one it can,
//! never wrapped, so a client never sees a file jump across a century.

use nfs3_types::nfs3::{fattr3, ftype3, nfstime3, specdata3};
use vfs_core::{Attr, FileType, SetAttr, SetTime, Timestamp};

use crate::xdr::{XdrReader, XdrResult};

/// The NFSv3 type of a file type.
pub fn ftype(kind: FileType) -> ftype3 {
    match kind {
        FileType::Regular => ftype3::NF3REG,
        FileType::Directory => ftype3::NF3DIR,
        FileType::Symlink => ftype3::NF3LNK,
        FileType::Fifo => ftype3::NF3FIFO,
        FileType::Socket => ftype3::NF3SOCK,
        FileType::CharDevice => ftype3::NF3CHR,
        FileType::BlockDevice => ftype3::NF3BLK,
    }
}

/// A timestamp as NFSv3 carries it (clamped to `0 ..= u32::MAX` seconds).
pub fn nfstime(t: Timestamp) -> nfstime3 {
    match u32::try_from(t.secs) {
        Ok(seconds) => nfstime3 {
            seconds,
            nseconds: t.nsecs,
        },
        Err(_) if t.secs < 0 => nfstime3 {
            seconds: 0,
            nseconds: 0,
        },
        Err(_) => nfstime3 {
            seconds: u32::MAX,
            nseconds: 999_999_999,
        },
    }
}

/// The attributes of `a` as NFSv3 carries them, in filesystem `fsid`.
pub fn fattr(a: &Attr, fsid: u64) -> fattr3 {
    fattr3 {
        type_: ftype(a.kind),
        mode: u32::from(a.perm) & 0o7777,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        size: a.size,
        used: a.blocks.saturating_mul(512),
        rdev: specdata3 {
            specdata1: libc::major(a.rdev),
            specdata2: libc::minor(a.rdev),
        },
        fsid,
        fileid: a.ino.0,
        atime: nfstime(a.atime),
        mtime: nfstime(a.mtime),
        ctime: nfstime(a.ctime),
    }
}

/// The device number of an NFSv3 `specdata3` (major, minor).
pub fn rdev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}

fn time_arg(r: &mut XdrReader<'_>) -> XdrResult<Option<SetTime>> {
    // time_how: DONT_CHANGE = 0, SET_TO_SERVER_TIME = 1, SET_TO_CLIENT_TIME = 2.
    Ok(match r.u32()? {
        0 => None,
        1 => Some(SetTime::Now),
        2 => {
            let secs = r.u32()?;
            let nsecs = r.u32()?;
            Some(SetTime::At(Timestamp::new(i64::from(secs), nsecs)))
        }
        _ => return Err(crate::xdr::Garbage),
    })
}

/// Decodes a `sattr3` into the change it asks for.
pub fn decode_sattr(r: &mut XdrReader<'_>) -> XdrResult<SetAttr> {
    let mode = if r.bool()? { Some(r.u32()? & 0o7777) } else { None };
    let uid = if r.bool()? { Some(r.u32()?) } else { None };
    let gid = if r.bool()? { Some(r.u32()?) } else { None };
    let size = if r.bool()? { Some(r.u64()?) } else { None };
    let atime = time_arg(r)?;
    let mtime = time_arg(r)?;
    Ok(SetAttr {
        mode,
        uid,
        gid,
        size,
        atime,
        mtime,
        fh: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfs_core::Ino;

    #[test]
    fn times_are_clamped_not_wrapped() {
        assert_eq!(nfstime(Timestamp::new(-5, 7)).seconds, 0);
        assert_eq!(nfstime(Timestamp::new(1 << 40, 0)).seconds, u32::MAX);
        assert_eq!(
            nfstime(Timestamp::new(1_700_000_000, 12)),
            nfstime3 {
                seconds: 1_700_000_000,
                nseconds: 12
            }
        );
    }

    #[test]
    fn fattr_carries_everything() {
        let t = Timestamp::new(10, 20);
        let a = Attr {
            ino: Ino(42),
            kind: FileType::CharDevice,
            perm: 0o4755,
            nlink: 3,
            uid: 1000,
            gid: 100,
            size: 5,
            blocks: 8,
            blksize: 4096,
            rdev: rdev(4, 64),
            atime: t,
            mtime: t,
            ctime: t,
        };
        let f = fattr(&a, 9);
        assert_eq!(f.type_, ftype3::NF3CHR);
        assert_eq!(f.mode, 0o4755);
        assert_eq!((f.rdev.specdata1, f.rdev.specdata2), (4, 64));
        assert_eq!((f.fileid, f.fsid, f.used), (42, 9, 4096));
    }

    #[test]
    fn sattr_decodes_and_rejects_bad_time_how() {
        let mut b = Vec::new();
        for w in [1u32, 0o644, 0, 1, 7, 1, 0, 0x10, 2, 5, 6, 1] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        let s = decode_sattr(&mut XdrReader::new(&b)).unwrap();
        assert_eq!(s.mode, Some(0o644));
        assert_eq!((s.uid, s.gid, s.size), (None, Some(7), Some(0x10)));
        assert_eq!(s.atime, Some(SetTime::At(Timestamp::new(5, 6))));
        assert_eq!(s.mtime, Some(SetTime::Now));
        let mut bad = b.clone();
        let n = bad.len();
        bad[n - 1] = 3;
        assert!(decode_sattr(&mut XdrReader::new(&bad)).is_err());
    }
}
