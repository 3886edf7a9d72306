//! `-o opt,opt,...`: mount options as FUSE tools (sshfs, mount.fuse3, /etc/fstab) give them.
//!
//! Invariant: every option is either applied, or known to need nothing (it names what
//! every vfs mount is anyway, or it is for `mount(8)` and not for the filesystem), or
//! refused with one line naming it; an unknown option is never silently ignored.

use vfs_fuse::MountOptions;

/// The options understood, applied on top of a backend's own flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FuseOpts {
    /// `ro`: read-only, in the kernel and in the backend (`vfs_core::ReadOnly`).
    pub read_only: bool,
    /// `allow_other`: let other users in.
    pub allow_other: bool,
    /// `default_permissions`: the kernel checks permissions (on already by default).
    pub default_permissions: bool,
    /// `auto_unmount`: unmount when the process dies (on already by default).
    pub auto_unmount: bool,
    /// `fsname=NAME`: the source shown in `/proc/mounts`.
    pub fsname: Option<String>,
}

/// Options that need nothing: `mount(8)`'s own (`defaults`, `noauto`, `_netdev`, ...),
/// and the ones that name what every vfs mount already is (`rw`, `nodev`, `nosuid`).
const NOTHING_TO_DO: &[&str] = &[
    "rw", "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "_netdev", "nofail", "async",
    "atime", "relatime", "exec", "nodev", "nosuid",
];

/// What `mount.fuse3` adds by itself for root (`dev`, `suid`): vfs mounts stay `nodev` and
/// `nosuid` whatever is asked (the safe choice for a filesystem that may hold files made
/// by a peer or read from a database), so these are accepted and have no effect.
const ALWAYS_NODEV_NOSUID: &[&str] = &["dev", "suid"];

/// Parses each `-o` argument (each a comma-separated list). Errors: one line naming the
/// first option that is unknown or not supported.
pub fn parse<S: AsRef<str>>(lists: &[S]) -> Result<FuseOpts, String> {
    let mut o = FuseOpts::default();
    for opt in lists.iter().flat_map(|l| l.as_ref().split(',')).map(str::trim) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (key, value) {
            ("", None) => {}
            ("ro", None) => o.read_only = true,
            ("allow_other", None) => o.allow_other = true,
            ("default_permissions", None) => o.default_permissions = true,
            ("auto_unmount", None) => o.auto_unmount = true,
            ("fsname", Some(name)) if !name.is_empty() => o.fsname = Some(name.to_owned()),
            ("subtype", Some("vfs")) => {}
            (k, None) if NOTHING_TO_DO.contains(&k) || ALWAYS_NODEV_NOSUID.contains(&k) => {}
            // systemd's and mount(8)'s own options (x-systemd.automount, comment=...).
            (k, _) if k.starts_with("x-") || k == "comment" => {}
            ("allow_root" | "noexec" | "noatime" | "sync" | "dirsync" | "subtype", _) => {
                return Err(format!("mount option {opt:?} is not supported by vfs"));
            }
            _ => {
                return Err(format!(
                    "unknown mount option {opt:?} (known: ro, rw, allow_other, default_permissions, auto_unmount, fsname=NAME)"
                ));
            }
        }
    }
    Ok(o)
}

impl FuseOpts {
    /// Sets in `m` what these options ask for (they only ever add to what the backend's
    /// flags asked).
    pub fn apply(&self, m: &mut MountOptions) {
        m.read_only |= self.read_only;
        m.allow_other |= self.allow_other;
        m.default_permissions |= self.default_permissions;
        m.auto_unmount |= self.auto_unmount;
        if let Some(name) = &self.fsname {
            m.fsname = Some(name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_options_apply() {
        let o = parse(&[
            "ro,allow_other",
            "fsname=data,rw,nodev,nosuid,dev,suid,x-systemd.automount",
        ])
        .expect("valid");
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.fsname.as_deref(), Some("data"));
        let mut m = MountOptions::default();
        o.apply(&mut m);
        assert!(m.read_only && m.allow_other);
        assert_eq!(m.fsname.as_deref(), Some("data"));
    }

    #[test]
    fn unknown_and_unsupported_options_are_one_line_errors() {
        let e = parse(&["ro,bogus"]).expect_err("bogus is unknown");
        assert!(e.contains("\"bogus\"") && !e.contains('\n'), "{e}");
        let e = parse(&["noexec"]).expect_err("noexec is not applied, so refused");
        assert!(e.contains("not supported"), "{e}");
        assert!(parse(&["fsname="]).is_err());
        assert!(parse(&["subtype=other"]).is_err());
    }

    #[test]
    fn nothing_asked_changes_nothing() {
        let o = parse::<&str>(&[]).expect("empty");
        let mut m = MountOptions::default();
        o.apply(&mut m);
        assert!(!m.read_only && !m.allow_other && m.default_permissions && m.auto_unmount);
    }
}
