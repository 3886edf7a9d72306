//! Deterministic file handles for stateless front ends (NFS, the P2P exporter).
//!
//! Invariant: a handle is [`FileHandle::LEN`] bytes, `version ‖ reserved ‖ generation ‖
//! inode`, where the [`Generation`] is FNV-1a 64 over the backend's
//! [`VirtualFs::source_id`]. The same source id gives byte-identical handles in every
//! process, on every start; a handle minted for another source decodes as
//! [`HandleError::Stale`]; bytes of the wrong length, version or reserved bits decode as
//! [`HandleError::BadHandle`]. Decoding never panics on any input.
//!
//! Why: nfsserve's default handle embeds the server's start time as the generation, so
//! every restart invalidated every handle a client had cached (seed 003 (doc/LESSONS.md#seed-003), hf-mount PR
//! #177). A client that caches handles across a remount (macOS does) then gets
//! `NFS3ERR_STALE` for files that never changed. The generation therefore depends only on
//! *what* is served, never on *when* — and is computed with a hash written out here,
//! because std's `DefaultHasher` is keyed randomly per process.
//!
//! # What a backend must do for handles to survive a restart
//!
//! A handle names `(generation, inode)`. After a restart it still names the same file only
//! if both halves still mean the same thing, so a backend that wants handles to survive
//! must:
//!
//! 1. return the same [`VirtualFs::source_id`] on every start for the same data (e.g.
//!    `localfs:` followed by the canonical path of the exported directory), and a
//!    different one for different data;
//! 2. give each file the same inode number on every start, and never give a number that
//!    named a file before the restart to a *different* file; and
//! 3. declare it by returning [`InodeStability::Stable`] from
//!    [`VirtualFs::inode_stability`].
//!
//! `LocalFs` can: it reports the host filesystem's inode numbers, which the host keeps
//! across restarts of our process (while the directory stays on the same host
//! filesystem; a copy to another filesystem gets new numbers and must get a new source
//! id). The caveat is the host's own: a deleted file's number may be reused by a later
//! file, exactly as it would be for the kernel's NFS server.
//!
//! `MemFs` cannot: its inode numbers are handed out afresh on each start, and its data do
//! not survive anyway. Such a backend keeps the default [`InodeStability::Volatile`] and
//! must put something unique per instance into its `source_id` (a random nonce or the
//! start time), so that a handle from an earlier instance decodes as
//! [`HandleError::Stale`] instead of resolving to whatever file now has that number. A
//! backend that numbers inodes in listing order (hf-mount) is volatile too unless it
//! persists its numbering.
//!
//! # Mapping to protocol errors
//!
//! [`HandleError`] says which kind of refusal it is: [`HandleError::BadHandle`] (the bytes
//! are not a handle of ours) or [`HandleError::Stale`] (a well-formed handle from another
//! source or instance). Each front end maps the kind to its protocol in its own status
//! table (vfs-nfs: `BADHANDLE` and `STALE` in `status.rs`); this crate carries no protocol's
//! numbers. The two must not be confused: an NFS client drops its cached state on
//! `STALE`, and macOS drops pending writes with it.

use std::fmt;

use crate::error::VfsError;
use crate::types::Ino;
#[cfg(doc)]
use crate::vfs::InodeStability;
use crate::vfs::VirtualFs;

/// The FNV-1a 64-bit offset basis.
pub const FNV1A_64_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// The FNV-1a 64-bit prime.
pub const FNV1A_64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`: for each byte, xor it into the state, then multiply by the
/// prime. Deterministic across processes, machines and Rust versions.
pub const fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash = FNV1A_64_OFFSET_BASIS;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV1A_64_PRIME);
        i += 1;
    }
    hash
}

/// The generation half of a handle: FNV-1a 64 of the backend's source id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Generation(pub u64);

impl Generation {
    /// The generation for a source id.
    pub const fn from_source_id(source_id: &str) -> Generation {
        Generation(fnv1a_64(source_id.as_bytes()))
    }

    /// The generation of `fs`, from its [`VirtualFs::source_id`].
    pub fn of<F: VirtualFs + ?Sized>(fs: &F) -> Generation {
        Generation::from_source_id(fs.source_id())
    }

    /// The handle for `ino` in this generation.
    pub fn handle(self, ino: Ino) -> FileHandle {
        FileHandle::new(self, ino)
    }

    /// The inode named by `bytes`, if they are a handle of this generation.
    pub fn decode(self, bytes: &[u8]) -> Result<Ino, HandleError> {
        FileHandle::decode(bytes, self)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why bytes were refused as a handle.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HandleError {
    /// Not a handle of this format: wrong length, unknown version or non-zero reserved
    /// bytes. NFS: `NFS3ERR_BADHANDLE`.
    #[error("malformed file handle")]
    BadHandle,
    /// A well-formed handle of another source or instance. NFS: `NFS3ERR_STALE`.
    #[error("stale file handle (generation {found:016x}, expected {expected:016x})")]
    Stale {
        /// The generation the handle carries.
        found: u64,
        /// The generation of the filesystem being served.
        expected: u64,
    },
}

impl From<HandleError> for VfsError {
    /// `BadHandle` → [`VfsError::BadHandle`] (`EBADF`), `Stale` → [`VfsError::Stale`]
    /// (`ESTALE`). Protocols with a status of their own for malformed handles (NFS) map
    /// the two kinds in their own status table instead of going through an errno.
    fn from(e: HandleError) -> VfsError {
        match e {
            HandleError::BadHandle => VfsError::BadHandle,
            HandleError::Stale { .. } => VfsError::Stale,
        }
    }
}

/// An encoded handle: `[version, 0 × 7, generation (8, big-endian), inode (8,
/// big-endian)]`.
///
/// The encoding is canonical: every byte string that [`FileHandle::parse`] accepts is the
/// encoding of exactly the `(generation, inode)` it decodes to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileHandle([u8; FileHandle::LEN]);

impl FileHandle {
    /// Length of every handle, in bytes (NFSv3 allows up to 64).
    pub const LEN: usize = 24;
    /// The format version this code writes and accepts.
    pub const VERSION: u8 = 1;

    const GEN: std::ops::Range<usize> = 8..16;
    const INO: std::ops::Range<usize> = 16..24;

    /// The handle of `ino` in `generation`.
    pub fn new(generation: Generation, ino: Ino) -> FileHandle {
        let mut b = [0u8; Self::LEN];
        b[0] = Self::VERSION;
        b[Self::GEN].copy_from_slice(&generation.0.to_be_bytes());
        b[Self::INO].copy_from_slice(&ino.0.to_be_bytes());
        FileHandle(b)
    }

    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// The generation this handle carries.
    pub fn generation(&self) -> Generation {
        Generation(u64::from_be_bytes(field(&self.0, Self::GEN)))
    }

    /// The inode this handle names.
    pub fn ino(&self) -> Ino {
        Ino(u64::from_be_bytes(field(&self.0, Self::INO)))
    }

    /// Checks the format of `bytes` (length, version, reserved bytes) without looking at
    /// the generation.
    pub fn parse(bytes: &[u8]) -> Result<FileHandle, HandleError> {
        let b: [u8; Self::LEN] = bytes.try_into().map_err(|_| HandleError::BadHandle)?;
        if b[0] != Self::VERSION || b[1..Self::GEN.start].iter().any(|&x| x != 0) {
            return Err(HandleError::BadHandle);
        }
        Ok(FileHandle(b))
    }

    /// The inode named by `bytes` if they are a well-formed handle of `expected`:
    /// [`HandleError::BadHandle`] for a malformed one, [`HandleError::Stale`] for another
    /// generation's.
    pub fn decode(bytes: &[u8], expected: Generation) -> Result<Ino, HandleError> {
        let fh = Self::parse(bytes)?;
        let found = fh.generation();
        if found != expected {
            return Err(HandleError::Stale {
                found: found.0,
                expected: expected.0,
            });
        }
        Ok(fh.ino())
    }
}

/// Eight bytes of `b` at `r` (always in bounds: `r` is one of the two fixed fields).
fn field(b: &[u8; FileHandle::LEN], r: std::ops::Range<usize>) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[r]);
    out
}

impl AsRef<[u8]> for FileHandle {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileHandle(gen={}, ino={})", self.generation(), self.ino().0)
    }
}

impl fmt::Display for FileHandle {
    /// The handle as lowercase hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The published FNV-1a 64 vectors (Fowler, Noll, Vo; `draft-eastlake-fnv`).
    #[test]
    fn fnv1a_64_matches_published_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn generation_distinguishes_sources() {
        let a = Generation::from_source_id("bucket/alice");
        let b = Generation::from_source_id("bucket/bob");
        assert_ne!(a, b);
        assert_eq!(a, Generation::from_source_id("bucket/alice"));
    }

    #[test]
    fn round_trip_and_layout() {
        let g = Generation::from_source_id("localfs:/srv");
        let fh = g.handle(Ino(0x0102_0304_0506_0708));
        let b = fh.as_bytes();
        assert_eq!(b.len(), FileHandle::LEN);
        assert_eq!(b[0], FileHandle::VERSION);
        assert_eq!(&b[1..8], &[0; 7]);
        assert_eq!(&b[8..16], &g.0.to_be_bytes());
        assert_eq!(&b[16..24], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(g.decode(b), Ok(Ino(0x0102_0304_0506_0708)));
    }

    /// Seed 003 (doc/LESSONS.md#seed-003-pr-177; hf-mount PR #177): nfsserve's default generation is the server's start
    /// time, so a handle from before a restart came back `NFS3ERR_STALE`. Here the
    /// generation depends only on the source id: a "restarted server" (a fresh
    /// `Generation` computed from the same id, nothing else shared) accepts the old handle.
    #[test]
    fn seed003_pr177_handle_survives_simulated_restart() {
        let before = Generation::from_source_id("bucket/X/y").handle(Ino(42));
        let wire = before.as_bytes().to_vec();
        let after = Generation::from_source_id(&String::from("bucket/X/y"));
        assert_eq!(after.decode(&wire), Ok(Ino(42)));
    }

    #[test]
    fn foreign_generation_is_stale_not_bad() {
        let wire = Generation::from_source_id("bucket/A").handle(Ino(7));
        let err = Generation::from_source_id("bucket/B").decode(wire.as_bytes());
        assert!(matches!(err, Err(HandleError::Stale { .. })));
        assert_eq!(
            VfsError::from(HandleError::Stale { found: 1, expected: 2 }).errno(),
            crate::Errno::ESTALE
        );
    }

    #[test]
    fn malformed_is_bad_handle_not_stale() {
        let g = Generation::from_source_id("s");
        let good = *g.handle(Ino(3)).as_bytes();
        for len in [0, 1, 8, 16, 23, 25, 64] {
            let mut v = good.to_vec();
            v.resize(len, 0);
            assert_eq!(g.decode(&v), Err(HandleError::BadHandle), "len {len}");
        }
        let mut wrong_version = good;
        wrong_version[0] = 2;
        assert_eq!(g.decode(&wrong_version), Err(HandleError::BadHandle));
        let mut reserved = good;
        reserved[5] = 1;
        assert_eq!(g.decode(&reserved), Err(HandleError::BadHandle));
        assert_eq!(VfsError::from(HandleError::BadHandle).errno(), crate::Errno::EBADF);
    }

    const CHILD_ENV: &str = "VFS_CORE_FH_CHILD_SOURCE";
    const CHILD_INO: u64 = 0x1234_5678_9abc;

    /// Prints the handle when run as the child of
    /// [`handle_bytes_identical_in_a_separate_process`]; a no-op otherwise.
    #[test]
    fn child_prints_handle() {
        if let Ok(source) = std::env::var(CHILD_ENV) {
            let fh = Generation::from_source_id(&source).handle(Ino(CHILD_INO));
            println!("HANDLE={fh}");
        }
    }

    /// The same source id gives byte-identical handles in two processes: the test binary
    /// re-runs itself for [`child_prints_handle`] and compares the child's hex with ours.
    /// (With std's per-process random hasher this fails.)
    #[test]
    fn handle_bytes_identical_in_a_separate_process() {
        let source = "localfs:/srv/export";
        let exe = std::env::current_exe().expect("current_exe");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "fh::tests::child_prints_handle",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, source)
            .output()
            .expect("run child test process");
        assert!(out.status.success(), "child failed: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let child_hex = stdout
            .lines()
            .find_map(|l| l.split_once("HANDLE=").map(|(_, hex)| hex))
            .unwrap_or_else(|| panic!("no HANDLE= line in child output: {stdout}"));
        let ours = Generation::from_source_id(source).handle(Ino(CHILD_INO)).to_string();
        assert_eq!(child_hex.trim(), ours);
        assert_eq!(ours.len(), 2 * FileHandle::LEN);
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and whatever it accepts re-encodes to
        /// the same bytes (the encoding is canonical).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), g in any::<u64>()) {
            match FileHandle::decode(&bytes, Generation(g)) {
                Ok(ino) => prop_assert_eq!(FileHandle::new(Generation(g), ino).as_bytes().to_vec(), bytes),
                Err(HandleError::Stale { found, expected }) => {
                    prop_assert_eq!(expected, g);
                    prop_assert_ne!(found, g);
                    prop_assert_eq!(bytes.len(), FileHandle::LEN);
                }
                Err(HandleError::BadHandle) => {}
            }
        }

        /// Bytes that are nearly a handle (right length, version 1) exercise the
        /// generation check as well as the format check.
        #[test]
        fn near_handles_never_panic(mut bytes in proptest::array::uniform24(any::<u8>()), version_one in any::<bool>()) {
            if version_one {
                bytes[0] = FileHandle::VERSION;
                bytes[1..8].fill(0);
            }
            let g = Generation(u64::from_be_bytes(field(&bytes, FileHandle::GEN)));
            let r = FileHandle::decode(&bytes, g);
            prop_assert_eq!(r.is_ok(), version_one || FileHandle::parse(&bytes).is_ok());
        }

        #[test]
        fn round_trip(g in any::<u64>(), ino in any::<u64>()) {
            let fh = FileHandle::new(Generation(g), Ino(ino));
            prop_assert_eq!(FileHandle::decode(fh.as_bytes(), Generation(g)), Ok(Ino(ino)));
            prop_assert_eq!(FileHandle::parse(fh.as_bytes()), Ok(fh));
        }
    }
}
