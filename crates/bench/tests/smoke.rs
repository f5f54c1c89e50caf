//! The benchmark runner keeps working: a tiny control-plane run against the debug `strait`
//! binary writes a report with every section. (Numbers from a debug build mean nothing; the
//! full run is `scripts/bench`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test

use std::path::PathBuf;
use std::process::Command;

#[test]
fn a_tiny_run_writes_a_complete_report() {
    let runner = PathBuf::from(env!("CARGO_BIN_EXE_strait-bench"));
    let strait = runner.with_file_name("strait");
    assert!(
        strait.exists(),
        "{} is missing: `cargo test --workspace` builds it (or run `cargo build -p strait`)",
        strait.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.md");
    let status = Command::new(&runner)
        .args([
            "--quick",
            "--services",
            "20",
            "--proxies",
            "4",
            "--changes",
            "2",
            "--additions",
            "1",
        ])
        .arg("--strait")
        .arg(&strait)
        .arg("--out")
        .arg(&out)
        .arg("--logs")
        .arg(dir.path().join("logs"))
        .status()
        .unwrap();
    assert!(status.success(), "strait-bench failed");
    let report = std::fs::read_to_string(&out).unwrap();
    for needle in [
        "## Control plane",
        "### Targets",
        "Endpoint change ACKed by all proxies, p99 ≤ 500 ms (SotW)",
        "Endpoint change ACKed by all proxies, p99 ≤ 500 ms (delta)",
        "Cold sync of all proxies ≤ 1 s",
        "per additional proxy",
        "Delta sends O(change) bytes",
        "over 2 changes",
        "(1 additions)",
        "### Reading these numbers",
        "## Data plane",
    ] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    assert!(!report.contains("not ACKed by every proxy"), "{report}");
}
