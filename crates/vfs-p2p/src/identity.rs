//! Peer identity: a static X25519 keypair per peer, its public key as one short line of
//! text, the key file, and the allowlist of pinned peer keys with what each may do.
//!
//! Invariant: a [`PublicKey`] is exactly 32 bytes and its text form is the canonical
//! unpadded base64url of those bytes (43 characters); parsing accepts that form only, so
//! one key has one spelling and an allowlist compares bytes. A private key never leaves
//! [`Keypair`] except into a key file created with mode 0600 that is never overwritten.
//! There is no certificate authority: a peer is who its key says, and trust is the
//! allowlist (on the sharing side) or the pinned `--peer-key` (on the mounting side).

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use curve25519_dalek::montgomery::MontgomeryPoint;
use parking_lot::RwLock;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroize;

/// Length of a public or private key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key's text form (unpadded base64url of 32 bytes).
pub const KEY_TEXT_LEN: usize = 43;

/// Why a key could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// Not 43 characters long.
    #[error("a key is {KEY_TEXT_LEN} characters of base64url, got {0} characters")]
    Length(usize),
    /// A character outside `A-Z a-z 0-9 - _`.
    #[error("a key is base64url (A-Z, a-z, 0-9, '-', '_'); found {0:?}")]
    Character(char),
    /// The last character carries bits that a canonical encoding leaves zero.
    #[error("not the canonical spelling of a key (trailing bits set)")]
    NonCanonical,
}

/// A peer's public key: what `p2p key` prints and what `--allow` / `--peer-key` take.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A key from raw bytes, if there are exactly [`KEY_LEN`] of them.
    pub fn from_slice(bytes: &[u8]) -> Option<PublicKey> {
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64url_encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_key(s.trim()).map(PublicKey)
    }
}

/// This peer's static keypair (Noise `s`).
pub struct Keypair {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Drop for Keypair {
    fn drop(&mut self) {
        // Do not leave the private key in freed memory.
        self.private.zeroize();
    }
}

impl Keypair {
    /// A fresh keypair from the operating system's random source.
    pub fn generate() -> io::Result<Keypair> {
        let mut private = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut private)
            .map_err(|_| io::Error::other("the system random source failed"))?;
        Ok(Keypair::from_private(private))
    }

    /// The keypair of this private key (X25519: the public key is derived).
    pub fn from_private(private: [u8; KEY_LEN]) -> Keypair {
        let public = PublicKey(MontgomeryPoint::mul_base_clamped(private).to_bytes());
        Keypair { private, public }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The private half, for the handshake only.
    pub(crate) fn private_bytes(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// Loads the key file at `path`, or creates it (mode 0600, parent directories 0700)
    /// with a fresh key if it does not exist. Returns the keypair and whether it was
    /// created. An existing file is never overwritten, even if it does not parse.
    pub fn load_or_create(path: &Path) -> io::Result<(Keypair, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => return Ok((parse_key_file(&text).map_err(|e| bad_key_file(path, e))?, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let pair = Keypair::generate()?;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let mut file = match created {
            Ok(f) => f,
            // Another process created it between our read and our create: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path)?;
                return Ok((parse_key_file(&text).map_err(|e| bad_key_file(path, e))?, false));
            }
            Err(e) => return Err(e),
        };
        file.write_all(key_file_text(&pair).as_bytes())?;
        file.sync_all()?;
        Ok((pair, true))
    }
}

fn bad_key_file(path: &Path, e: KeyParseError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("key file {}: {e}", path.display()))
}

const KEY_FILE_HEADER: &str = "# vfs-p2p private key (keep secret; the public key is printed by `p2p key`)";

/// The text of a key file for `pair`: a comment line, then the private key in base64url.
fn key_file_text(pair: &Keypair) -> String {
    format!("{KEY_FILE_HEADER}\n{}\n", base64url_encode(&pair.private))
}

/// Parses a key file: `#` comment lines and blank lines are skipped; exactly one other
/// line, the private key in base64url, must remain.
pub fn parse_key_file(text: &str) -> Result<Keypair, KeyParseError> {
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let first = keys.next().ok_or(KeyParseError::Length(0))?;
    if let Some(extra) = keys.next() {
        return Err(KeyParseError::Length(first.len() + extra.len()));
    }
    decode_key(first).map(Keypair::from_private)
}

/// The key file used when `--key-file` is not given:
/// `$XDG_CONFIG_HOME/vfs-p2p/key`, else `$HOME/.config/vfs-p2p/key`.
pub fn default_key_file() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("vfs-p2p").join("key"))
}

/// What an allowed key may do on the owner's share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Right {
    /// Read and change (`--allow KEY`).
    ReadWrite,
    /// Read only: every change is `EROFS` (`--allow-read KEY`).
    ReadOnly,
}

impl Right {
    /// Whether this right allows changes.
    pub fn can_write(self) -> bool {
        self == Right::ReadWrite
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Right::ReadWrite => "rw",
            Right::ReadOnly => "ro",
        })
    }
}

/// The public keys a sharing peer accepts, each with its [`Right`]. Empty means nobody.
///
/// Clones share one list: [`Allowlist::replace`] (a keys file reloaded on `SIGHUP`) is
/// seen at once by the listener (new handshakes) and the exporter (each request of a
/// link already up checks its key's right again).
#[derive(Clone, Debug, Default)]
pub struct Allowlist(Arc<RwLock<HashMap<PublicKey, Right>>>);

impl Allowlist {
    /// An allowlist of these keys, each read-write.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Allowlist {
        Allowlist::with_rights(keys.into_iter().map(|k| (k, Right::ReadWrite)))
    }

    /// An allowlist of these keys with these rights; a key given twice keeps the
    /// narrower right (read-only wins).
    pub fn with_rights(keys: impl IntoIterator<Item = (PublicKey, Right)>) -> Allowlist {
        Allowlist(Arc::new(RwLock::new(merge_rights(keys))))
    }

    /// Whether `key` is allowed.
    pub fn allows(&self, key: &PublicKey) -> bool {
        self.0.read().contains_key(key)
    }

    /// What `key` may do, `None` if it is not allowed.
    pub fn right(&self, key: &PublicKey) -> Option<Right> {
        self.0.read().get(key).copied()
    }

    /// Adds `key` with `right` (replacing its right if it was there).
    pub fn insert(&self, key: PublicKey, right: Right) {
        self.0.write().insert(key, right);
    }

    /// Replaces the whole list (seen by every clone).
    pub fn replace(&self, keys: impl IntoIterator<Item = (PublicKey, Right)>) {
        *self.0.write() = merge_rights(keys);
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.read().len()
    }

    /// Whether no key is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.read().is_empty()
    }
}

fn merge_rights(keys: impl IntoIterator<Item = (PublicKey, Right)>) -> HashMap<PublicKey, Right> {
    let mut map = HashMap::new();
    for (k, r) in keys {
        let e = map.entry(k).or_insert(r);
        if r == Right::ReadOnly {
            *e = Right::ReadOnly;
        }
    }
    map
}

/// Why a keys file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysFileError {
    /// A line that is not `KEY RIGHT`.
    #[error("line {line}: expected `KEY rw` or `KEY ro`, got {got:?}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The offending line (at most 80 characters of it).
        got: String,
    },
    /// A key that does not parse.
    #[error("line {line}: {err}")]
    Key {
        /// 1-based line number.
        line: usize,
        /// Why.
        err: KeyParseError,
    },
}

/// Parses a keys file: one key and one right per line (`KEY rw` or `KEY read-write`,
/// `KEY ro` or `KEY read-only`), blank lines and lines starting with `#` ignored. Any bad
/// line makes the whole file an error (naming the line), so a typo never silently drops
/// or widens a key. Never panics.
pub fn parse_keys_file(text: &str) -> Result<Vec<(PublicKey, Right)>, KeysFileError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(key), Some(right), None) = (words.next(), words.next(), words.next()) else {
            return Err(KeysFileError::Syntax {
                line: i + 1,
                got: line.chars().take(80).collect(),
            });
        };
        let right = match right {
            "rw" | "read-write" => Right::ReadWrite,
            "ro" | "read-only" => Right::ReadOnly,
            _ => {
                return Err(KeysFileError::Syntax {
                    line: i + 1,
                    got: line.chars().take(80).collect(),
                });
            }
        };
        let key = key
            .parse::<PublicKey>()
            .map_err(|err| KeysFileError::Key { line: i + 1, err })?;
        out.push((key, right));
    }
    Ok(out)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (RFC 4648 §5) of `bytes`.
pub fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// The character starting at byte `i` of `text` (for the error message), never panicking.
fn bad_char(text: &str, i: usize) -> char {
    text.get(i..).and_then(|t| t.chars().next()).unwrap_or('?')
}

/// Decodes the canonical unpadded base64url spelling of a 32-byte key. Never panics.
pub fn decode_key(text: &str) -> Result<[u8; KEY_LEN], KeyParseError> {
    let t = text.as_bytes();
    if t.len() != KEY_TEXT_LEN {
        return Err(KeyParseError::Length(text.chars().count()));
    }
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut out = [0u8; KEY_LEN];
    let mut n = 0usize;
    for (i, &c) in t.iter().enumerate() {
        let v = sextet(c).ok_or_else(|| KeyParseError::Character(bad_char(text, i)))?;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let byte = (acc >> bits) as u8;
            acc &= (1 << bits) - 1;
            match out.get_mut(n) {
                Some(slot) => *slot = byte,
                None => return Err(KeyParseError::Length(KEY_TEXT_LEN)),
            }
            n += 1;
        }
    }
    // 43 sextets = 258 bits: 32 bytes and 2 leftover bits that must be zero.
    if acc != 0 || n != KEY_LEN {
        return Err(KeyParseError::NonCanonical);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_text_round_trips() {
        let pair = Keypair::generate().unwrap();
        let text = pair.public().to_string();
        assert_eq!(text.len(), KEY_TEXT_LEN);
        assert_eq!(text.parse::<PublicKey>().unwrap(), pair.public());
    }

    #[test]
    fn rfc4648_vectors() {
        assert_eq!(base64url_encode(b""), "");
        assert_eq!(base64url_encode(b"f"), "Zg");
        assert_eq!(base64url_encode(b"fo"), "Zm8");
        assert_eq!(base64url_encode(b"foo"), "Zm9v");
        assert_eq!(base64url_encode(b"foob"), "Zm9vYg");
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn x25519_public_key_matches_rfc7748() {
        // RFC 7748 §6.1, Alice's keys.
        let private = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(Keypair::from_private(private).public().0, public);
    }

    fn hex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn rejects_bad_spellings() {
        let good = PublicKey([7; 32]).to_string();
        assert!(matches!(good[1..].parse::<PublicKey>(), Err(KeyParseError::Length(42))));
        let mut bad = good.clone();
        bad.replace_range(0..1, "+");
        assert!(matches!(bad.parse::<PublicKey>(), Err(KeyParseError::Character('+'))));
        // Last char of 32 bytes carries 4 data bits + 2 zero bits: 'B' (1) sets a zero bit.
        let mut nc = PublicKey([0; 32]).to_string();
        nc.replace_range(42..43, "B");
        assert_eq!(nc.parse::<PublicKey>(), Err(KeyParseError::NonCanonical));
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key");
        let (a, created) = Keypair::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = Keypair::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
    }

    #[test]
    fn corrupt_key_file_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(Keypair::load_or_create(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage\n");
    }

    proptest! {
        #[test]
        fn any_key_round_trips(bytes in any::<[u8; 32]>()) {
            let k = PublicKey(bytes);
            prop_assert_eq!(k.to_string().parse::<PublicKey>().unwrap(), k);
        }

        /// Decoder of user-supplied key text: arbitrary input never panics.
        #[test]
        fn arbitrary_key_text_never_panics(s in ".{0,64}", raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = s.parse::<PublicKey>();
            let _ = parse_key_file(&s);
            let _ = parse_key_file(&String::from_utf8_lossy(&raw));
        }

        /// Keys files: lines of real keys, rights (valid or not), comments and noise
        /// never panic, and a file that parses round-trips (`fuzzing::key_text`).
        #[test]
        fn keys_files_never_panic_and_round_trip(
            lines in proptest::collection::vec(
                (any::<[u8; 32]>(), "(rw|ro|read-write|read-only|admin|)", "[ \t#]{0,2}", ".{0,8}", any::<bool>()),
                0..8,
            )
        ) {
            let text: String = lines
                .iter()
                .map(|(k, r, pre, junk, noisy)| {
                    let junk = if *noisy { junk.as_str() } else { "" };
                    format!("{pre}{} {r}{junk}\n", PublicKey(*k))
                })
                .collect();
            crate::fuzzing::key_text(text.as_bytes());
            let clean = lines.iter().all(|(_, r, pre, _, noisy)| {
                !r.is_empty() && r != "admin" && !pre.contains('#') && !noisy
            });
            if clean {
                prop_assert_eq!(parse_keys_file(&text).map(|v| v.len()), Ok(lines.len()));
            }
        }
    }
}
