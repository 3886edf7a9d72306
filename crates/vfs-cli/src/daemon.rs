//! Mounting in the background, as sshfs and mount-s3 do: the command returns once the
//! mount is up, or exits with the reason it is not.
//!
//! [`start`] forks before anything else runs (no runtime, no thread yet); the parent waits
//! on a pipe. The child mounts and then calls [`Ready::notify`], which sends one byte on
//! the pipe and points its standard streams at `/dev/null` (logs keep going to
//! `--log-file`); the parent then exits 0. If the child exits first (a failed mount:
//! its one-line error went to the same terminal), the pipe closes without that byte and
//! the parent exits with the child's status.
//!
//! Invariant: the parent exits 0 only after the child has said the mount is up; it never
//! exits 0 for a child that failed or died.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

static DETACHED: AtomicBool = AtomicBool::new(false);

/// Whether this process has detached (its stderr is `/dev/null` now).
pub fn detached() -> bool {
    DETACHED.load(Ordering::Relaxed)
}

/// How a mount command runs once it is up: in the background (the default of `vfs
/// mount`) or attached to the terminal (`--foreground`, and the examples).
#[derive(Debug)]
pub struct Ready {
    pipe: Option<OwnedFd>,
}

impl Ready {
    /// A foreground run: [`Ready::notify`] does nothing.
    pub fn foreground() -> Ready {
        Ready { pipe: None }
    }

    /// Whether a parent waits for [`Ready::notify`] (a background start).
    pub fn is_background(&self) -> bool {
        self.pipe.is_some()
    }

    /// Tells the waiting parent the mount is up, then detaches the standard streams. Does
    /// nothing in the foreground or when called again.
    pub fn notify(&mut self) {
        let Some(pipe) = self.pipe.take() else { return };
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
            for std_fd in 0..=2 {
                // SAFETY: dup2 onto the standard descriptors, which this process owns;
                // `null` stays open for the call.
                unsafe { libc::dup2(null.as_raw_fd(), std_fd) };
            }
        }
        DETACHED.store(true, Ordering::Relaxed);
        let _ = File::from(pipe).write_all(b"1");
    }
}

/// In the foreground, returns [`Ready::foreground`]. In the background, forks: returns
/// in the child (in a new session, away from the terminal's Ctrl-C) and never in the
/// parent, which exits once the child is ready (0) or has ended (its status).
///
/// Must be called before any thread is started (a runtime, a mount): `fork` copies only
/// the calling thread. Errors: the pipe or the fork failed (one line).
pub fn start(background: bool) -> Result<Ready, String> {
    if !background {
        return Ok(Ready::foreground());
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("cannot make a pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: the caller starts no thread before this call (see the doc), so the child
    // is a complete copy of this single-threaded process.
    match unsafe { libc::fork() } {
        -1 => Err(format!("cannot fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(read_end);
            // SAFETY: setsid touches no memory; failing (already a leader) is harmless.
            unsafe { libc::setsid() };
            Ok(Ready { pipe: Some(write_end) })
        }
        child => {
            drop(write_end);
            wait_for_child(read_end, child)
        }
    }
}

/// The parent's side: exit 0 on the ready byte, else with the child's status.
fn wait_for_child(read_end: OwnedFd, child: libc::pid_t) -> ! {
    let mut pipe = File::from(read_end);
    let mut byte = [0u8; 1];
    loop {
        match pipe.read(&mut byte) {
            Ok(1) => std::process::exit(0),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    let mut status: libc::c_int = 0;
    // SAFETY: waits for our own child; `status` is a valid place for its status.
    let rc = unsafe { libc::waitpid(child, &mut status, 0) };
    if rc == child && libc::WIFEXITED(status) {
        std::process::exit(libc::WEXITSTATUS(status).max(1));
    }
    eprintln!("error: the mounting process ended before the mount was up");
    std::process::exit(1)
}
