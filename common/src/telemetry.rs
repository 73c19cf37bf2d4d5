//! Logging: `tracing` to stderr, filtered by `EBB_LOG` (or `RUST_LOG`).
//!
//! A log line that cannot be written (stderr redirected to a file on a full
//! disk) is dropped: by default the subscriber reports that with
//! `eprintln!`, which panics when stderr fails too, so a full disk took the
//! whole process down.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; later calls do nothing.
pub fn init() {
    let filter = std::env::var("EBB_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .try_init();
}
