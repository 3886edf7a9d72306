//! Questions a program asks before or after mounting: can this process mount FUSE
//! filesystems here, and is a path a mount point right now.
//!
//! Invariant: both answers come from the kernel at the moment of the call (`/dev/fuse`
//! opened for real, `/proc/self/mountinfo` read fresh); nothing is cached, and neither
//! function panics on what it reads.

use std::fmt;
use std::path::Path;

/// Why this process cannot mount FUSE filesystems the way [`crate::mount`] does.
#[derive(Debug)]
pub enum NotUsable {
    /// `/dev/fuse` could not be opened for reading and writing.
    NoDevice(std::io::Error),
    /// The process is not root: `mount(2)` of a FUSE filesystem needs `CAP_SYS_ADMIN`.
    NotRoot,
}

impl fmt::Display for NotUsable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotUsable::NoDevice(e) => write!(f, "/dev/fuse is not usable here ({e})"),
            NotUsable::NotRoot => f.write_str("mounting FUSE filesystems with mount(2) needs root"),
        }
    }
}

impl std::error::Error for NotUsable {}

/// Whether this process can mount FUSE filesystems: `/dev/fuse` opens read-write and the
/// process is root.
pub fn fuse_usable() -> Result<(), NotUsable> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(NotUsable::NoDevice)?;
    if !rustix::process::geteuid().is_root() {
        return Err(NotUsable::NotRoot);
    }
    Ok(())
}

/// Whether `path` is a mount point of this process's mount namespace now: it is the mount
/// point field of a line of `/proc/self/mountinfo` (whose octal escapes such as `\040` for a
/// space are decoded before comparing). `path` is compared as given: pass an absolute,
/// canonical path.
pub fn is_mounted(path: &Path) -> std::io::Result<bool> {
    let info = std::fs::read(/* fresh every call */ "/proc/self/mountinfo")?;
    let want = path.as_os_str().as_encoded_bytes();
    Ok(info
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .any(|field| unescape(field) == want))
}

/// Decodes mountinfo's `\ooo` octal escapes (space, tab, newline and backslash are written
/// so); anything that is not a complete escape stays as it is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let esc = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match esc {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unescape_decodes_mountinfo_escapes() {
        assert_eq!(unescape(br"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape(br"/x\134y"), br"/x\y");
        assert_eq!(unescape(br"/trail\04"), br"/trail\04", "an incomplete escape stays");
        assert_eq!(unescape(br"/n\9"), br"/n\9");
    }

    #[test]
    fn root_is_mounted_and_a_fresh_dir_is_not() {
        assert!(is_mounted(Path::new("/")).unwrap());
        let tmp = tempfile::tempdir().unwrap();
        assert!(!is_mounted(tmp.path()).unwrap());
    }
}
