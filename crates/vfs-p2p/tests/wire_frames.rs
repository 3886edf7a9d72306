//! The wire format does not drift: `fixtures/frames-v1.hex` holds one encoded frame of
//! every request operation, every reply kind, a data chunk, notification batches and the
//! link frames (cancel, ping, pong, goaway), recorded with the encoder of wire version 1
//! before the operations were declared in one table. Each recorded frame must
//! decode to the value below and encode back to the same bytes.
//!
//! The fixture was written by the ignored test `record_frames` (`cargo test -p vfs-p2p
//! --test wire_frames -- --ignored`), which refuses to overwrite it: a change of the bytes
//! is a new wire version (a new fixture next to this one), never a new recording of v1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use bytes::Bytes;
use vfs_core::{
    Attr, DirEntry, DirEntryPlus, Errno, Fh, FileType, Ino, RequestCtx, SetAttr, SetTime, StatFs, Timestamp,
};
use vfs_p2p::wire::{Frame, Op, Reply, Request, VERSION, WireChange, data_header, encode_notify};

fn os(s: &str) -> OsString {
    OsString::from(s)
}

fn ts(secs: i64, nsecs: u32) -> Timestamp {
    Timestamp { secs, nsecs }
}

/// Attributes whose every field is distinct, so a field encoded out of place shows.
fn attr(ino: u64, kind: FileType) -> Attr {
    Attr {
        ino: Ino(ino),
        kind,
        perm: 0o4755,
        nlink: 3,
        uid: 1001,
        gid: 1002,
        size: 0x0102_0304_0506,
        blocks: 77,
        blksize: 4096,
        rdev: 0x0801,
        atime: ts(1_700_000_001, 11),
        mtime: ts(-5, 999_999_999),
        ctime: ts(1_700_000_003, 33),
    }
}

fn entry(ino: u64, kind: FileType, name: &str, cookie: u64) -> DirEntry {
    DirEntry {
        ino: Ino(ino),
        kind,
        name: os(name),
        cookie,
    }
}

fn request(id: u64, op: Op) -> Frame {
    Frame::Request {
        id,
        req: Request {
            ctx: RequestCtx::new(1000 + id as u32, 2000 + id as u32, 3000 + id as u32),
            op,
        },
    }
}

fn reply(id: u64, r: Reply) -> Frame {
    Frame::Reply { id, result: Ok(r) }
}

/// Every frame of the fixture, with its label, in order.
fn frames() -> Vec<(&'static str, Frame)> {
    let p = Ino(0x10);
    let i = Ino(0x1234_5678_9abc);
    let every_setattr = SetAttr {
        mode: Some(0o640),
        uid: Some(7),
        gid: Some(8),
        size: Some(1 << 33),
        atime: Some(SetTime::Now),
        mtime: Some(SetTime::At(ts(1_600_000_000, 5))),
        fh: Some(Fh(42)),
    };
    let ops: Vec<(&'static str, Op)> = vec![
        (
            "hello",
            Op::Hello {
                min_version: 1,
                max_version: 3,
            },
        ),
        (
            "lookup",
            Op::Lookup {
                parent: p,
                name: os("file.txt"),
            },
        ),
        ("forget", Op::Forget { ino: i, nlookup: 12345 }),
        ("getattr", Op::Getattr { ino: i }),
        (
            "setattr-all",
            Op::Setattr {
                ino: i,
                set: every_setattr,
            },
        ),
        (
            "setattr-none",
            Op::Setattr {
                ino: i,
                set: SetAttr::default(),
            },
        ),
        (
            "setattr-size",
            Op::Setattr {
                ino: i,
                set: SetAttr::size(99),
            },
        ),
        ("readlink", Op::Readlink { ino: i }),
        (
            "mknod",
            Op::Mknod {
                parent: p,
                name: os("fifo"),
                mode: 0o10644,
                umask: 0o022,
                rdev: 0x0103,
            },
        ),
        (
            "mkdir",
            Op::Mkdir {
                parent: p,
                name: os("dir"),
                mode: 0o755,
                umask: 0o027,
            },
        ),
        (
            "unlink",
            Op::Unlink {
                parent: p,
                name: os("gone"),
            },
        ),
        (
            "rmdir",
            Op::Rmdir {
                parent: p,
                name: os("olddir"),
            },
        ),
        (
            "symlink",
            Op::Symlink {
                parent: p,
                name: os("link"),
                target: os("../target/path"),
            },
        ),
        (
            "rename",
            Op::Rename {
                parent: p,
                name: os("from"),
                newparent: Ino(0x20),
                newname: os("to"),
                flags: 2,
            },
        ),
        (
            "link",
            Op::Link {
                ino: i,
                newparent: Ino(0x21),
                newname: os("hard"),
            },
        ),
        (
            "open",
            Op::Open {
                ino: i,
                flags: libc::O_RDWR | libc::O_APPEND,
            },
        ),
        (
            "create",
            Op::Create {
                parent: p,
                name: os("new"),
                mode: 0o600,
                umask: 0o002,
                flags: libc::O_WRONLY | libc::O_EXCL,
            },
        ),
        (
            "read",
            Op::Read {
                ino: i,
                offset: 1 << 40,
                size: 65536,
            },
        ),
        (
            "write",
            Op::Write {
                ino: i,
                offset: 4096,
                append: true,
                len: 5,
            },
        ),
        ("fsync", Op::Fsync { ino: i, datasync: true }),
        (
            "readdir",
            Op::Readdir {
                ino: p,
                cookie: 17,
                max: 128,
            },
        ),
        (
            "readdirplus",
            Op::Readdirplus {
                ino: p,
                cookie: 18,
                max: 64,
            },
        ),
        ("statfs", Op::Statfs { ino: Ino::ROOT }),
        ("access", Op::Access { ino: i, mask: 6 }),
        (
            "getxattr",
            Op::Getxattr {
                ino: i,
                name: os("user.a"),
            },
        ),
        (
            "setxattr",
            Op::Setxattr {
                ino: i,
                name: os("user.b"),
                how: 2,
                len: 3,
            },
        ),
        ("listxattr", Op::Listxattr { ino: i }),
        (
            "removexattr",
            Op::Removexattr {
                ino: i,
                name: os("user.c"),
            },
        ),
        (
            "fallocate",
            Op::Fallocate {
                ino: i,
                offset: 8192,
                length: 1 << 20,
                mode: 3,
            },
        ),
        ("release", Op::Release { ino: i }),
        ("unknown-op", Op::Unknown(200)),
    ];
    let mut out: Vec<(&'static str, Frame)> = Vec::new();
    for (n, (label, op)) in ops.into_iter().enumerate() {
        out.push((label, request(n as u64 + 1, op)));
    }
    let replies: Vec<(&'static str, Reply)> = vec![
        ("reply-unit", Reply::Unit),
        ("reply-attr", Reply::Attr(attr(0x99, FileType::Regular))),
        (
            "reply-target",
            Reply::Target(OsString::from_vec(b"t\xffarget".to_vec())),
        ),
        ("reply-bytes", Reply::Bytes { len: 70_000 }),
        ("reply-written", Reply::Written(4096)),
        (
            "reply-entries",
            Reply::Entries(vec![
                entry(1, FileType::Directory, ".", 1),
                entry(0x77, FileType::Symlink, "sym", 2),
                entry(0x78, FileType::Fifo, "p", 3),
            ]),
        ),
        ("reply-entries-empty", Reply::Entries(Vec::new())),
        (
            "reply-entriesplus",
            Reply::EntriesPlus(vec![
                DirEntryPlus {
                    entry: entry(0x79, FileType::CharDevice, "c", 9),
                    attr: attr(0x79, FileType::CharDevice),
                },
                DirEntryPlus {
                    entry: entry(0x7a, FileType::BlockDevice, "b", 10),
                    attr: attr(0x7a, FileType::BlockDevice),
                },
                DirEntryPlus {
                    entry: entry(0x7b, FileType::Socket, "s", 11),
                    attr: attr(0x7b, FileType::Socket),
                },
            ]),
        ),
        (
            "reply-statfs",
            Reply::StatFs(StatFs {
                blocks: 1,
                bfree: 2,
                bavail: 3,
                files: 4,
                ffree: 5,
                bsize: 6,
                namelen: 7,
                frsize: 8,
            }),
        ),
        (
            "reply-hello",
            Reply::Hello {
                version: 1,
                source_id: "localfs:/srv/share".into(),
                stable_inodes: true,
                max_io: 4 << 20,
            },
        ),
    ];
    for (n, (label, r)) in replies.into_iter().enumerate() {
        out.push((label, reply(100 + n as u64, r)));
    }
    out.push((
        "reply-errno",
        Frame::Reply {
            id: 200,
            result: Err(Errno::ENOENT),
        },
    ));
    out.push((
        "data",
        Frame::Data {
            id: 17,
            bytes: Bytes::from_static(b"hello"),
        },
    ));
    out.push((
        "notify",
        Frame::Notify {
            seq: 5,
            changes: vec![
                WireChange::Create {
                    path: b"a/new".to_vec(),
                    attr: attr(0x50, FileType::Regular),
                },
                WireChange::Update {
                    path: Vec::new(),
                    attr: attr(1, FileType::Directory),
                },
                WireChange::Remove {
                    path: b"a/old".to_vec(),
                },
                WireChange::Rename {
                    from: b"x".to_vec(),
                    to: b"y/z".to_vec(),
                    attr: attr(0x51, FileType::Symlink),
                },
            ],
        },
    ));
    out.push((
        "notify-empty",
        Frame::Notify {
            seq: 6,
            changes: Vec::new(),
        },
    ));
    out.push(("cancel", Frame::Cancel { id: 31 }));
    out.push(("ping", Frame::Ping { id: 32 }));
    out.push(("pong", Frame::Pong { id: 33 }));
    out.push((
        "goaway",
        Frame::Goaway {
            reason: "shutting down".into(),
        },
    ));
    out
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames-v1.hex")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// `label hex` per line, `#` comments.
fn recorded() -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(fixture()).expect("fixture frames-v1.hex (see the module docs)");
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (label, h) = l.split_once(' ').expect("label and hex");
            (label.to_owned(), unhex(h))
        })
        .collect()
}

/// Writes the fixture with today's encoder, if it does not exist yet.
#[test]
#[ignore = "writes the fixture; run once per wire version"]
fn record_frames() {
    assert!(
        !fixture().exists(),
        "{} exists: a recording is never rewritten",
        fixture().display()
    );
    let mut text = String::from(
        "# vfs-p2p wire version 1: one frame per line, `label hex`.\n\
         # Recorded by tests/wire_frames.rs; never rewrite (a new format is a new file).\n",
    );
    for (label, f) in frames() {
        text.push_str(&format!("{label} {}\n", hex(&f.encode())));
    }
    std::fs::create_dir_all(fixture().parent().unwrap()).unwrap();
    std::fs::write(fixture(), text).unwrap();
}

#[test]
fn recorded_frames_decode_and_encode_byte_identically() {
    let expected = frames();
    let recorded = recorded();
    assert_eq!(recorded.len(), expected.len(), "frame count of the fixture");
    for ((label, bytes), (want_label, want)) in recorded.iter().zip(&expected) {
        assert_eq!(label, want_label, "fixture order");
        assert_eq!(bytes.first(), Some(&VERSION), "{label}: version byte");
        let got = Frame::decode(Bytes::copy_from_slice(bytes)).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(&got, want, "{label}: decoded value");
        assert_eq!(&got.encode(), bytes, "{label}: re-encoded bytes");
        assert_eq!(&want.encode(), bytes, "{label}: bytes of the expected value");
    }
}

/// The zero-copy data header plus its chunk is the recorded data frame, and a batch of
/// changes is the recorded notify frame.
#[test]
fn data_header_and_notify_batches_match_the_recording() {
    let recorded = recorded();
    let find = |l: &str| recorded.iter().find(|(x, _)| x == l).map(|(_, b)| b.clone()).unwrap();
    let mut data = data_header(17).to_vec();
    data.extend_from_slice(b"hello");
    assert_eq!(data, find("data"));
    let Some((_, Frame::Notify { changes, .. })) = frames().into_iter().find(|(l, _)| *l == "notify") else {
        panic!("no notify frame");
    };
    let mut seq = 5;
    assert_eq!(encode_notify(&mut seq, changes), vec![find("notify")]);
    assert_eq!(seq, 6);
}
