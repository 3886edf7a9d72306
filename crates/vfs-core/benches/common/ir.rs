//! The instruction-count protocol shared by every bench: with `VFS_IR=<scenario>` and
//! `VFS_IR_N=<n>` set, a bench binary runs that scenario's loop `n` times and exits, so
//! `scripts/bench-ir` can count instructions under callgrind (repeatable on a noisy
//! machine) and subtract the `none` baseline (the same set-up with no operation).

/// The scenario and iteration count asked for, if the binary runs in IR mode.
pub fn mode() -> Option<(String, u64)> {
    let scenario = std::env::var("VFS_IR").ok()?;
    let n = std::env::var("VFS_IR_N").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    Some((scenario, n))
}
