//! Subcommands of `strait`.

pub mod analyze;
pub mod control_plane;
pub mod validate;

use std::io::Write;

/// Writes a failure that stopped a command (not a finding in the configuration) to stderr.
pub fn report_failure(e: &anyhow::Error) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "strait: {e:#}");
}

/// Logs to stderr; `RUST_LOG` overrides the level (`info` by default).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
