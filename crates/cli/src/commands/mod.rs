//! Subcommands of `strait`.

pub mod analyze;
pub mod validate;

use std::io::Write;

/// Writes a failure that stopped a command (not a finding in the configuration) to stderr.
pub fn report_failure(e: &anyhow::Error) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "strait: {e:#}");
}
