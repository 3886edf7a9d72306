//! Round trips of every frame, the limits, and arbitrary bytes.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use bytes::Bytes;
use proptest::prelude::*;
use vfs_core::{
    Attr, DirEntry, DirEntryPlus, Errno, Fh, FileType, Ino, RequestCtx, SetAttr, SetTime, StatFs, Timestamp,
};

use super::frame::{K_NOTIFY, K_REQUEST};
use super::*;
use crate::transport::MAX_FRAME;

fn ts() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), 0u32..1_000_000_000).prop_map(|(secs, nsecs)| Timestamp { secs, nsecs })
}

fn kind() -> impl Strategy<Value = FileType> {
    prop_oneof![
        Just(FileType::Regular),
        Just(FileType::Directory),
        Just(FileType::Symlink),
        Just(FileType::Fifo),
        Just(FileType::Socket),
        Just(FileType::CharDevice),
        Just(FileType::BlockDevice),
    ]
}

fn attr() -> impl Strategy<Value = Attr> {
    (
        (
            any::<u64>(),
            kind(),
            0u16..=0o7777,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u64>(), ts(), ts(), ts()),
    )
        .prop_map(
            |((ino, kind, perm, nlink, uid, gid), (size, blocks, blksize, rdev, atime, mtime, ctime))| Attr {
                ino: Ino(ino),
                kind,
                perm,
                nlink,
                uid,
                gid,
                size,
                blocks,
                blksize,
                rdev,
                atime,
                mtime,
                ctime,
            },
        )
}

fn name() -> impl Strategy<Value = OsString> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(b"..".to_vec()),
        Just(b"a/b".to_vec()),
        Just(vec![b'x'; 300]),
    ]
    .prop_map(OsString::from_vec)
}

fn ino() -> impl Strategy<Value = Ino> {
    any::<u64>().prop_map(Ino)
}

fn set_time() -> impl Strategy<Value = Option<SetTime>> {
    prop_oneof![
        Just(None),
        Just(Some(SetTime::Now)),
        ts().prop_map(|t| Some(SetTime::At(t)))
    ]
}

fn set_attr() -> impl Strategy<Value = SetAttr> {
    (
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u64>()),
        set_time(),
        set_time(),
        proptest::option::of(any::<u64>().prop_map(Fh)),
    )
        .prop_map(|(mode, uid, gid, size, atime, mtime, fh)| SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let len = 0..=MAX_IO;
    prop_oneof![
        (any::<u8>(), any::<u8>()).prop_map(|(min_version, max_version)| Op::Hello {
            min_version,
            max_version
        }),
        (ino(), name()).prop_map(|(parent, name)| Op::Lookup { parent, name }),
        (ino(), any::<u64>()).prop_map(|(ino, nlookup)| Op::Forget { ino, nlookup }),
        ino().prop_map(|ino| Op::Getattr { ino }),
        (ino(), set_attr()).prop_map(|(ino, set)| Op::Setattr { ino, set }),
        ino().prop_map(|ino| Op::Readlink { ino }),
        (ino(), name(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(parent, name, mode, umask, rdev)| {
            Op::Mknod {
                parent,
                name,
                mode,
                umask,
                rdev,
            }
        }),
        (ino(), name(), any::<u32>(), any::<u32>()).prop_map(|(parent, name, mode, umask)| Op::Mkdir {
            parent,
            name,
            mode,
            umask
        }),
        (ino(), name()).prop_map(|(parent, name)| Op::Unlink { parent, name }),
        (ino(), name()).prop_map(|(parent, name)| Op::Rmdir { parent, name }),
        (ino(), name(), name()).prop_map(|(parent, name, target)| Op::Symlink { parent, name, target }),
        (ino(), name(), ino(), name(), any::<u32>()).prop_map(|(parent, name, newparent, newname, flags)| {
            Op::Rename {
                parent,
                name,
                newparent,
                newname,
                flags,
            }
        }),
        (ino(), ino(), name()).prop_map(|(ino, newparent, newname)| Op::Link {
            ino,
            newparent,
            newname
        }),
        (ino(), any::<i32>()).prop_map(|(ino, flags)| Op::Open { ino, flags }),
        (ino(), name(), any::<u32>(), any::<u32>(), any::<i32>()).prop_map(|(parent, name, mode, umask, flags)| {
            Op::Create {
                parent,
                name,
                mode,
                umask,
                flags,
            }
        }),
        (ino(), any::<u64>(), any::<u32>()).prop_map(|(ino, offset, size)| Op::Read { ino, offset, size }),
        (ino(), any::<u64>(), any::<bool>(), len.clone()).prop_map(|(ino, offset, append, len)| Op::Write {
            ino,
            offset,
            append,
            len
        }),
        (ino(), any::<bool>()).prop_map(|(ino, datasync)| Op::Fsync { ino, datasync }),
        (ino(), any::<u64>(), any::<u32>()).prop_map(|(ino, cookie, max)| Op::Readdir { ino, cookie, max }),
        (ino(), any::<u64>(), any::<u32>()).prop_map(|(ino, cookie, max)| Op::Readdirplus { ino, cookie, max }),
        ino().prop_map(|ino| Op::Statfs { ino }),
        (ino(), any::<u32>()).prop_map(|(ino, mask)| Op::Access { ino, mask }),
        (ino(), name()).prop_map(|(ino, name)| Op::Getxattr { ino, name }),
        (ino(), name(), 0u8..=2, len).prop_map(|(ino, name, how, len)| Op::Setxattr { ino, name, how, len }),
        ino().prop_map(|ino| Op::Listxattr { ino }),
        (ino(), name()).prop_map(|(ino, name)| Op::Removexattr { ino, name }),
        ino().prop_map(|ino| Op::Release { ino }),
        (ino(), any::<u64>(), any::<u64>(), any::<i32>()).prop_map(|(ino, offset, length, mode)| Op::Fallocate {
            ino,
            offset,
            length,
            mode
        }),
        (29u8..=255).prop_map(Op::Unknown),
    ]
}

fn entry() -> impl Strategy<Value = DirEntry> {
    (ino(), kind(), any::<u64>(), name()).prop_map(|(ino, kind, cookie, name)| DirEntry {
        ino,
        kind,
        name,
        cookie,
    })
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::Unit),
        attr().prop_map(Reply::Attr),
        name().prop_map(Reply::Target),
        (0..=MAX_IO).prop_map(|len| Reply::Bytes { len }),
        any::<u32>().prop_map(Reply::Written),
        proptest::collection::vec(entry(), 0..20).prop_map(Reply::Entries),
        proptest::collection::vec((entry(), attr()), 0..20).prop_map(|v| Reply::EntriesPlus(
            v.into_iter()
                .map(|(entry, attr)| DirEntryPlus { entry, attr })
                .collect()
        )),
        any::<[u64; 8]>().prop_map(|v| Reply::StatFs(StatFs {
            blocks: v[0],
            bfree: v[1],
            bavail: v[2],
            files: v[3],
            ffree: v[4],
            bsize: v[5] as u32,
            namelen: v[6] as u32,
            frsize: v[7] as u32,
        })),
        (any::<u8>(), "[a-z:/]{0,40}", any::<bool>(), any::<u32>()).prop_map(
            |(version, source_id, stable_inodes, max_io)| Reply::Hello {
                version,
                source_id,
                stable_inodes,
                max_io
            }
        ),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..60)
}

fn change() -> impl Strategy<Value = WireChange> {
    prop_oneof![
        (path(), attr()).prop_map(|(path, attr)| WireChange::Create { path, attr }),
        (path(), attr()).prop_map(|(path, attr)| WireChange::Update { path, attr }),
        path().prop_map(|path| WireChange::Remove { path }),
        (path(), path(), attr()).prop_map(|(from, to, attr)| WireChange::Rename { from, to, attr }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u64>(), any::<(u32, u32, u32)>(), op()).prop_map(|(id, (uid, gid, pid), op)| Frame::Request {
            id,
            req: Request {
                ctx: RequestCtx::new(uid, gid, pid),
                op
            }
        }),
        (any::<u64>(), reply()).prop_map(|(id, r)| Frame::Reply { id, result: Ok(r) }),
        (any::<u64>(), 1i32..4096).prop_map(|(id, e)| Frame::Reply {
            id,
            result: Err(Errno::from_raw(e))
        }),
        (any::<u64>(), proptest::collection::vec(any::<u8>(), 1..200)).prop_map(|(id, b)| Frame::Data {
            id,
            bytes: Bytes::from(b)
        }),
        (any::<u64>(), proptest::collection::vec(change(), 0..20))
            .prop_map(|(seq, changes)| Frame::Notify { seq, changes }),
        any::<u64>().prop_map(|id| Frame::Cancel { id }),
        any::<u64>().prop_map(|id| Frame::Ping { id }),
        any::<u64>().prop_map(|id| Frame::Pong { id }),
        "\\PC{0,100}".prop_map(|reason| Frame::Goaway { reason }),
    ]
}

proptest! {
    #[test]
    fn every_frame_round_trips(f in frame()) {
        let bytes = f.encode();
        prop_assert!(bytes.len() <= MAX_FRAME);
        prop_assert_eq!(Frame::decode(Bytes::from(bytes)), Ok(f));
    }

    /// Every prefix of a valid frame is an error, never a panic or a different frame.
    #[test]
    fn truncated_frames_are_errors(f in frame()) {
        let bytes = f.encode();
        for cut in 0..bytes.len() {
            let r = Frame::decode(Bytes::copy_from_slice(&bytes[..cut]));
            // A data frame cut after its first payload byte is still a data frame.
            if let (Frame::Data { .. }, Ok(Frame::Data { .. })) = (&f, &r) {
                continue;
            }
            prop_assert!(r.is_err(), "prefix {cut} of {f:?} decoded as {r:?}");
        }
    }

    /// The decoder of peer bytes: arbitrary input never panics.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        crate::fuzzing::wire_frame(&data);
    }

    /// Arbitrary bytes behind a valid header reach every opcode's and tag's decoder.
    #[test]
    fn arbitrary_bodies_never_panic(kind in 1u8..=9, code in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut frame = vec![VERSION, kind];
        frame.extend_from_slice(&7u64.to_le_bytes());
        frame.push(code);
        frame.extend_from_slice(&data);
        crate::fuzzing::wire_frame(&frame);
    }

    /// The reassembler fed arbitrary frame streams stays within its limits.
    #[test]
    fn arbitrary_streams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        crate::fuzzing::wire_stream(&data);
    }

    /// Well-formed frames in random order and with random payload lengths: the
    /// reassembler either errors or hands out exactly the declared payloads.
    #[test]
    fn reassembly_of_random_sequences(steps in proptest::collection::vec((0u64..4, 0usize..3, 1usize..3000), 0..40)) {
        let mut r = Reassembler::new(ReassemblyLimits { max_pending: 3, max_bytes: 8000 });
        for (id, what, len) in steps {
            let frame = match what {
                0 => Frame::Reply { id, result: Ok(Reply::Bytes { len: len as u32 }) },
                1 => Frame::Data { id, bytes: Bytes::from(vec![id as u8; len.min(MAX_CHUNK)]) },
                _ => Frame::Reply { id, result: Err(Errno::EIO) },
            };
            match r.push(frame) {
                Ok(Some(Message::Reply { id, result: Ok(Reply::Bytes { len }), body })) => {
                    prop_assert_eq!(body.len(), len as usize);
                    prop_assert!(body.chunks().iter().flatten().all(|&b| b == id as u8));
                }
                Ok(_) => {}
                Err(_) => break,
            }
            prop_assert!(r.declared_bytes() <= 8000);
        }
    }
}

#[test]
fn limits_are_checked_before_allocation() {
    // A notify frame claiming 65535 changes in 10 bytes.
    let mut f = vec![VERSION, K_NOTIFY];
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&u16::MAX.to_le_bytes());
    assert!(matches!(
        Frame::decode(Bytes::from(f)),
        Err(WireError::TooLong {
            what: "change count",
            ..
        })
    ));
    // A write declaring more than MAX_IO.
    let mut f = Frame::Request {
        id: 1,
        req: Request {
            ctx: RequestCtx::ROOT,
            op: Op::Write {
                ino: Ino(2),
                offset: 0,
                append: false,
                len: 1,
            },
        },
    }
    .encode();
    let n = f.len();
    f[n - 4..].copy_from_slice(&(MAX_IO + 1).to_le_bytes());
    assert!(matches!(
        Frame::decode(Bytes::from(f)),
        Err(WireError::TooLong {
            what: "write length",
            ..
        })
    ));
    // A name longer than the frame.
    let mut f = vec![VERSION, K_REQUEST];
    f.extend_from_slice(&1u64.to_le_bytes());
    f.push(2); // lookup
    f.extend_from_slice(&[0; 12]);
    f.extend_from_slice(&1u64.to_le_bytes());
    f.extend_from_slice(&4000u16.to_le_bytes());
    f.extend_from_slice(b"abc");
    assert!(matches!(
        Frame::decode(Bytes::from(f)),
        Err(WireError::Truncated("name"))
    ));
}

#[test]
fn hostile_names_decode_for_the_exporter_to_refuse() {
    for bad in [&b".."[..], b"../etc", b"/", b"a\0b", &[b'x'; 300]] {
        let f = Frame::Request {
            id: 9,
            req: Request {
                ctx: RequestCtx::ROOT,
                op: Op::Lookup {
                    parent: Ino::ROOT,
                    name: OsString::from_vec(bad.to_vec()),
                },
            },
        };
        let Ok(Frame::Request { req, .. }) = Frame::decode(Bytes::from(f.encode())) else {
            panic!("a structurally valid frame must decode");
        };
        let Op::Lookup { name, .. } = req.op else { panic!() };
        assert!(
            vfs_core::Name::new(&name).is_err(),
            "{name:?} must be refused by Name::new"
        );
    }
}

#[test]
fn unknown_version_kind_and_opcode() {
    assert_eq!(Frame::decode(Bytes::from_static(&[2, 1])), Err(WireError::Version(2)));
    assert_eq!(
        Frame::decode(Bytes::from_static(&[VERSION, 99])),
        Err(WireError::Kind(99))
    );
    let mut f = vec![VERSION, K_REQUEST];
    f.extend_from_slice(&5u64.to_le_bytes());
    f.push(200);
    f.extend_from_slice(&[0; 12]);
    f.extend_from_slice(b"future arguments");
    assert!(matches!(
        Frame::decode(Bytes::from(f)),
        Ok(Frame::Request {
            id: 5,
            req: Request {
                op: Op::Unknown(200),
                ..
            }
        })
    ));
}

#[test]
fn data_frames_are_bounded_and_non_empty() {
    let mut f = data_header(1).to_vec();
    assert!(Frame::decode(Bytes::from(f.clone())).is_err());
    f.extend(std::iter::repeat_n(0u8, MAX_CHUNK));
    assert!(Frame::decode(Bytes::from(f.clone())).is_ok());
    f.push(0);
    assert!(matches!(
        Frame::decode(Bytes::from(f)),
        Err(WireError::TooLong { what: "data chunk", .. })
    ));
}

#[test]
fn reassembler_rejects_out_of_sequence_and_over_budget() {
    let mut r = Reassembler::new(ReassemblyLimits {
        max_pending: 2,
        max_bytes: 100,
    });
    let data = |id, n| Frame::Data {
        id,
        bytes: Bytes::from(vec![1u8; n]),
    };
    let head = |id, len| Frame::Reply {
        id,
        result: Ok(Reply::Bytes { len }),
    };
    assert!(matches!(r.push(data(1, 5)), Err(WireError::Sequence(_))));
    let mut r = Reassembler::new(ReassemblyLimits {
        max_pending: 2,
        max_bytes: 100,
    });
    assert_eq!(r.push(head(1, 10)), Ok(None));
    assert!(matches!(r.push(head(1, 10)), Err(WireError::Sequence(_))));
    let mut r = Reassembler::new(ReassemblyLimits {
        max_pending: 2,
        max_bytes: 100,
    });
    assert_eq!(r.push(head(1, 60)), Ok(None));
    assert!(matches!(r.push(head(2, 41)), Err(WireError::Budget(_))));
    let mut r = Reassembler::new(ReassemblyLimits {
        max_pending: 2,
        max_bytes: 100,
    });
    assert_eq!(r.push(head(1, 10)), Ok(None));
    assert!(matches!(r.push(data(1, 11)), Err(WireError::Sequence(_))));
    let mut r = Reassembler::new(ReassemblyLimits {
        max_pending: 2,
        max_bytes: 100,
    });
    assert_eq!(r.push(head(1, 10)), Ok(None));
    assert_eq!(r.push(data(1, 4)), Ok(None));
    let done = r.push(data(1, 6)).unwrap().unwrap();
    assert!(matches!(done, Message::Reply { id: 1, ref body, .. } if body.len() == 10));
    assert_eq!(r.declared_bytes(), 0);
}

proptest! {
    /// `Payload::slice` and `into_bytes` agree with slicing the concatenation, however
    /// the payload was chunked.
    #[test]
    fn payload_slices_match_the_concatenation(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..6),
        offset in 0usize..300,
        len in 0usize..300,
    ) {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let all: Vec<u8> = chunks.concat();
        let head = Frame::Reply { id: 1, result: Ok(Reply::Bytes { len: all.len() as u32 }) };
        let mut msg = r.push(head).unwrap();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            msg = r.push(Frame::Data { id: 1, bytes: Bytes::from(c.clone()) }).unwrap();
        }
        let Some(Message::Reply { body, .. }) = msg else { panic!("message must complete") };
        let (a, b) = (offset.min(all.len()), (offset + len).min(all.len()));
        prop_assert_eq!(&body.slice(offset, len)[..], &all[a..b]);
        prop_assert_eq!(&body.into_bytes()[..], &all[..]);
    }
}

#[test]
fn notify_batches_split_within_frame_limits() {
    let a = Attr {
        size: 1,
        ..Attr::new(Ino(5), FileType::Regular, 0o644)
    };
    let changes: Vec<WireChange> = (0..600)
        .map(|i| WireChange::Rename {
            from: vec![b'a'; 100 + i % 7],
            to: vec![b'b'; 3000],
            attr: a,
        })
        .collect();
    let mut seq = 10;
    let frames = encode_notify(&mut seq, changes.clone());
    let mut back = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        assert!(f.len() <= MAX_FRAME);
        let Ok(Frame::Notify { seq: s, changes }) = Frame::decode(Bytes::from(f.clone())) else {
            panic!("notify frame must decode");
        };
        assert_eq!(s, 10 + i as u64);
        back.extend(changes);
    }
    assert_eq!(back, changes);
    assert_eq!(seq, 10 + frames.len() as u64);
}
