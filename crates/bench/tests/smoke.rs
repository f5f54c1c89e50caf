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
            "--only",
            "control-plane",
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

#[test]
fn a_tiny_data_plane_run_measures_every_chain() {
    let runner = PathBuf::from(env!("CARGO_BIN_EXE_strait-bench"));
    let strait = runner.with_file_name("strait");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.md");
    let status = Command::new(&runner)
        .args([
            "--quick",
            "--only",
            "data-plane",
            "--seconds",
            "1",
            "--services",
            "20",
        ])
        .arg("--strait")
        .arg(&strait)
        .arg("--out")
        .arg(&out)
        .arg("--logs")
        .arg(dir.path().join("logs"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "strait-bench failed (needs nginx and h2load: scripts/test installs them)"
    );
    let report = std::fs::read_to_string(&out).unwrap();
    for needle in [
        "## Data plane",
        "2-hop path ≥ 0.5× direct throughput (HTTP/1.1",
        "2-hop path ≥ 0.5× direct throughput (HTTP/2",
        "≤ 0.10 vCPU per 1000 req/s per Strait proxy",
        "2 Strait hops ≥ 1.0× HAProxy on the same chain (HTTP/1.1)",
        "| HTTP/1.1 | 2 nginx hops |",
        "| TCP | 2 HAProxy hops |",
        "Idle RSS ≤ 8 MB",
        "| HTTP/1.1 | 2 Strait hops |",
        "| HTTP/2 | 1 Strait hop |",
        "| TCP | 2 Strait hops |",
    ] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    // Every chain answered: no row reports errors.
    for line in report
        .lines()
        .filter(|l| l.starts_with("| HTTP") || l.starts_with("| TCP"))
    {
        if line.contains(" hop") || line.contains("direct") {
            assert!(line.trim_end().ends_with("| 0 |"), "errors on {line}");
            let rps: f64 = line.split('|').nth(3).unwrap().trim().parse().unwrap();
            assert!(rps > 0.0, "nothing got through: {line}");
        }
    }
}

#[test]
fn a_tiny_identity_run_reports_signing_and_handshakes() {
    let runner = PathBuf::from(env!("CARGO_BIN_EXE_strait-bench"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.md");
    let status = Command::new(&runner)
        .args(["--quick", "--only", "identity", "--strait"])
        .arg(runner.with_file_name("strait"))
        .arg("--out")
        .arg(&out)
        .arg("--logs")
        .arg(dir.path().join("logs"))
        .status()
        .unwrap();
    assert!(status.success(), "strait-bench failed");
    let report = std::fs::read_to_string(&out).unwrap();
    for needle in [
        "## Identity",
        "| CSR signing rate, one core |",
        "bare P-256 signatures",
        "| mTLS connection per hop, wall |",
        "| mTLS connection per hop, CPU (both ends) |",
    ] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
}
