//! Logging set-up: `tracing` to stderr or to a file, filtered by `RUST_LOG` or by `-v`.
//!
//! Invariant: colour codes are written only to a terminal (never to a log file or a pipe);
//! the default level is `warn`, so a user sees link loss and refused keys but nothing per
//! operation.

use std::io::IsTerminal;
use std::path::Path;

/// The filter directive for `verbose` repetitions of `-v`: warn, info, debug, trace.
pub fn level(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber: `RUST_LOG` if set, else [`level`]`(verbose)`; to
/// `log_file` (appended to, created if missing) if given, else to stderr. A second call
/// does nothing. Errors: the log file cannot be opened (one line).
pub fn init(verbose: u8, log_file: Option<&Path>) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => {
            tracing_subscriber::EnvFilter::try_new(&s).map_err(|e| format!("RUST_LOG={s:?}: {e}"))?
        }
        _ => tracing_subscriber::EnvFilter::new(level(verbose)),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // `try_init` fails only if a subscriber is already installed: keep that one.
    match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--log-file {}: {e}", path.display()))?;
            let _ = builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init();
        }
        None => {
            let _ = builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_v_raises_the_level() {
        assert_eq!(level(0), "warn");
        assert_eq!(level(1), "info");
        assert_eq!(level(2), "debug");
        assert_eq!(level(9), "trace");
    }
}
