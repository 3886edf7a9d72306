//! The smallest FUSE filesystem: one read-only file, `hello.txt`.
//!
//! ```sh
//! mkdir -p /tmp/hello && cargo run --example hello -- /tmp/hello
//! cat /tmp/hello/hello.txt        # in another terminal; Ctrl-C unmounts
//! ```
//!
//! Invariant: the backend answers the six operations a read-only filesystem needs; every
//! other operation gets the trait's default (`ENOSYS`, or `EROFS` from the kernel).

mod common;

#[path = "common/hello_fs.rs"]
mod hello_fs;

use std::sync::Arc;

use hello_fs::Hello;

fn main() {
    common::init_logging();
    let Some(mountpoint) = std::env::args_os().nth(1) else {
        common::fail("usage: hello MOUNTPOINT")
    };
    let opts = vfs_fuse::MountOptions {
        read_only: true,
        ..vfs_fuse::MountOptions::default()
    };
    let mount = vfs_fuse::mount(Arc::new(Hello), &mountpoint, &opts).unwrap_or_else(|e| common::fail(e));
    eprintln!("hello: mounted on {} (Ctrl-C to unmount)", mount.mountpoint().display());
    let why = common::wait_for_stop(&mount);
    match mount.unmount() {
        Ok(()) => eprintln!("hello: {why}, unmounted"),
        Err(e) => common::fail(e),
    }
}
