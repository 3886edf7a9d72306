//! The examples' command lines: `--help` prints help (it was once taken for a mount point)
//! and a missing argument is a usage error, not a mount attempt.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// An example binary, built by cargo with the tests (built here if it is missing).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--example", name]);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building the {name} example failed");
    }
    bin
}

#[test]
fn help_is_help() {
    for name in ["hello", "memfs", "overlay", "pg", "nfs", "p2p"] {
        let out = Command::new(example(name)).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} --help: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("Usage:"), "{name} --help: {text}");
    }
    let out = Command::new(example("hello")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MOUNTPOINT"));
}
