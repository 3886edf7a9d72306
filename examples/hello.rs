//! The smallest FUSE filesystem: one read-only file, `hello.txt`.
//!
//! ```sh
//! mkdir -p /tmp/hello && cargo run --example hello -- /tmp/hello
//! cat /tmp/hello/hello.txt        # in another terminal; Ctrl-C unmounts
//! ```
//!
//! Invariant: the backend answers the six operations a read-only filesystem needs; every
//! other operation gets the trait's default (`ENOSYS`, or `EROFS` from the kernel).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use vfs_core::{Attr, DirEntry, Fh, FileType, Ino, Name, OpenFlags, RequestCtx, VfsError, VfsResult, VirtualFs};

struct Hello;
const FILE: Ino = Ino(2);
const TEXT: &[u8] = b"hello, world\n";

fn attr(ino: Ino) -> Attr {
    if ino == Ino::ROOT {
        return Attr::new(ino, FileType::Directory, 0o755);
    }
    Attr {
        size: TEXT.len() as u64,
        blocks: 1,
        ..Attr::new(ino, FileType::Regular, 0o444)
    }
}

impl VirtualFs for Hello {
    fn source_id(&self) -> &str {
        "hello:v1"
    }
    async fn lookup(&self, _: &RequestCtx, parent: Ino, name: Name<'_>) -> VfsResult<Attr> {
        if parent == Ino::ROOT && name.as_bytes() == b"hello.txt" {
            Ok(attr(FILE))
        } else {
            Err(VfsError::NotFound)
        }
    }
    async fn getattr(&self, _: &RequestCtx, ino: Ino, _: Option<Fh>) -> VfsResult<Attr> {
        if ino == Ino::ROOT || ino == FILE {
            Ok(attr(ino))
        } else {
            Err(VfsError::Stale)
        }
    }
    async fn readdir(&self, _: &RequestCtx, ino: Ino, cookie: u64, max: usize) -> VfsResult<Vec<DirEntry>> {
        if ino != Ino::ROOT {
            return Err(VfsError::NotDir);
        }
        let all = [
            (".", Ino::ROOT, FileType::Directory),
            ("..", Ino::ROOT, FileType::Directory),
            ("hello.txt", FILE, FileType::Regular),
        ];
        Ok(all
            .iter()
            .enumerate()
            .skip(usize::try_from(cookie).unwrap_or(usize::MAX))
            .take(max)
            .map(|(i, (n, ino, kind))| DirEntry {
                ino: *ino,
                kind: *kind,
                name: n.into(),
                cookie: i as u64 + 1,
            })
            .collect())
    }
    async fn open(&self, _: &RequestCtx, ino: Ino, flags: OpenFlags) -> VfsResult<Fh> {
        if flags.access().can_write() {
            Err(VfsError::ReadOnly)
        } else if ino == FILE {
            Ok(Fh(0))
        } else {
            Err(VfsError::IsDir)
        }
    }
    async fn read(&self, _: &RequestCtx, _: Ino, _: Fh, offset: u64, size: u32) -> VfsResult<Bytes> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(TEXT.len());
        let end = start.saturating_add(size as usize).min(TEXT.len());
        Ok(Bytes::from_static(&TEXT[start..end]))
    }
}

/// The smallest FUSE filesystem: one read-only file, hello.txt.
#[derive(Parser, Debug)]
#[command(name = "hello")]
struct Args {
    /// Where to mount (an existing, empty directory).
    mountpoint: PathBuf,
}

fn main() {
    vfs_cli::log::init(0, None).unwrap_or_else(|e| vfs_cli::fail(e));
    let args = Args::parse();
    let opts = vfs_fuse::MountOptions {
        read_only: true,
        ..vfs_fuse::MountOptions::default()
    };
    let mut ready = vfs_cli::daemon::Ready::foreground();
    let mountpoint = args.mountpoint.as_path();
    vfs_cli::serve::serve_until_stopped(
        "hello",
        "hello.txt",
        Arc::new(Hello),
        mountpoint,
        &opts,
        &mut ready,
        |_| {},
        String::new,
    );
}
