//! The testkit's POSIX scenarios, run through the NFS server: a `MemFs` served over NFSv3,
//! driven by `NfsClientFs` (every `VirtualFs` call is an NFS call from `nfs3_client`).
//!
//! Scenarios that cannot hold over NFSv3 are listed at the end with the reason; each is
//! asserted to *fail*, so the list stays true.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use vfs_core::memfs::MemFs;
use vfs_core::testkit::{Backend, check_scenario, run_scenario, scenarios};

fn nfs_backend() -> Backend<common::NfsClientFs> {
    let server = common::serve(Arc::new(MemFs::new()), common::no_root_squash());
    Backend::new(common::NfsClientFs::new(server.addr)).keep(server)
}

macro_rules! holds {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            run_scenario(nfs_backend, scenarios::$name);
        }
    )*};
}

holds!(
    lookup_and_getattr,
    create_exclusive,
    mkdir_rmdir_and_link_counts,
    rename_over_file,
    rename_over_directories,
    rename_into_own_subtree,
    hard_link_counts,
    sparse_write_reads_zeros,
    truncate_up_and_down,
    readdir_cookies_while_changing,
    symlink_and_readlink,
    mknod_kinds,
    long_names,
    ctime_rules,
    mtime_rules,
    statfs_sane,
);

/// What cannot hold over NFSv3, and why. Each must fail through NFS (if one starts to
/// pass, the reason below is wrong and the list must change).
macro_rules! cannot_hold {
    ($($name:ident: $why:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            let verdict = check_scenario(nfs_backend, scenarios::$name);
            match verdict {
                Err(failure) => println!("{}: fails over NFSv3 as expected ({}): {failure}", stringify!($name), $why),
                Ok(()) => panic!("{} passes over NFSv3, but is listed as impossible: {}", stringify!($name), $why),
            }
        }
    )*};
}

cannot_hold!(
    rename_noreplace: "NFSv3 RENAME has no flags (RENAME_NOREPLACE needs renameat2 on the server side)",
    rename_exchange: "NFSv3 RENAME has no flags (RENAME_EXCHANGE cannot be expressed)",
    unlink_while_open: "NFSv3 has no open state: after REMOVE of the last name the server has nothing that keeps the inode; clients emulate it by renaming to .nfsXXXX (silly rename)",
    xattrs: "NFSv3 has no extended attributes",
    handle_access_modes: "NFSv3 has no OPEN, so no per-handle access mode: a handle cannot be read-only",
    open_truncate_and_append: "O_APPEND is the client's business in NFSv3: the server only sees WRITEs at offsets",
);
