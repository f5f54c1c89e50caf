//! The benchmark runner keeps working: a tiny control-plane run against the debug `strait`
//! binary writes a report with every section. (Numbers from a debug build mean nothing; the
//! full run is `scripts/bench`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The data-plane runs use the same loopback addresses and ports: one at a time.
static DATA_PLANE: Mutex<()> = Mutex::new(());

/// Runs `strait-bench ARGS` against the debug `strait` binary, writing into a temporary
/// directory; the report it wrote. `why` says what the run needs when it fails.
fn run_runner(args: &[&str], why: &str) -> String {
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
        .args(args)
        .arg("--strait")
        .arg(&strait)
        .arg("--out")
        .arg(&out)
        .arg("--logs")
        .arg(dir.path().join("logs"))
        .status()
        .unwrap();
    assert!(status.success(), "strait-bench failed{why}");
    std::fs::read_to_string(&out).unwrap()
}

#[test]
fn a_tiny_run_writes_a_complete_report() {
    let report = run_runner(
        &[
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
        ],
        "",
    );
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
        "### Growth when the mesh doubles",
        "| 2× services (40) |",
        "| 2× endpoints per service (20) |",
        "| 2× clusters (6) |",
        "| 2× proxies (8) |",
        "### Where the control plane's CPU goes",
        "| CPU per proxy synced |",
        "| System calls per proxy synced |",
        "Hottest functions: control plane, delta",
        "## Data plane",
    ] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    assert!(!report.contains("not ACKed by every proxy"), "{report}");
    assert!(
        !report.contains("NOT PROFILED"),
        "the control plane was not profiled (is perf installed? scripts/test installs linux-perf):\n{report}"
    );
}

#[test]
fn a_tiny_data_plane_run_measures_every_chain() {
    let _one_at_a_time = DATA_PLANE.lock().unwrap_or_else(|e| e.into_inner());
    let report = run_runner(
        &[
            "--quick",
            "--only",
            "data-plane",
            "--seconds",
            "1",
            "--services",
            "20",
        ],
        " (needs nginx and h2load: scripts/test installs them)",
    );
    for needle in [
        "## Data plane",
        "2 Strait hops ≥ 0.5× direct throughput (HTTP/1.1, mTLS)",
        "2 Strait hops ≥ 0.5× direct throughput (HTTP/2, mTLS)",
        "2 Strait hops ≥ 0.5× direct throughput (HTTP/1.1, plaintext)",
        "≤ 0.10 vCPU per 1000 req/s per Strait proxy",
        "2 Strait hops ≥ 1.0× HAProxy on the same chain (HTTP/1.1, mTLS)",
        "2 Strait hops ≥ 1.0× nginx on the same chain (HTTP/1.1, mTLS)",
        "2 Strait hops ≥ 1.0× HAProxy on the same chain (HTTP/1.1, plaintext)",
        "| HTTP/1.1 | 2 nginx hops |",
        "| HTTP/1.1 | 2 nginx hops, TLS |",
        "| TCP | 2 HAProxy hops |",
        "| TCP | 2 HAProxy hops, TLS |",
        "| HTTP/2 | 2 HAProxy hops, TLS |",
        "| HTTP/1.1 | 2 Strait hops, mTLS |",
        "| HTTP/2 | 2 Strait hops, mTLS |",
        "| TCP | 2 Strait hops, mTLS |",
        "2 Strait hops ≥ 1.0× nginx on the same chain (gRPC, mTLS)",
        "| gRPC | direct |",
        "| gRPC | 2 Strait hops, mTLS |",
        "| gRPC | 2 HAProxy hops, TLS |",
        "| gRPC | 2 nginx hops, TLS |",
        "Idle RSS ≤ 8 MB",
        "| HTTP/1.1 | 2 Strait hops |",
        "| HTTP/2 | 1 Strait hop |",
        "| TCP | 2 Strait hops |",
        "### Where the proxies' CPU goes",
    ] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    // The proxies were profiled (perf: scripts/test installs linux-perf), and what the profile
    // saw is the proxies' own code: HTTP/2 framing on the HTTP/2 chain, HAProxy on its own.
    assert!(
        !report.contains("NOT PROFILED"),
        "the profiles are missing (is perf installed? scripts/test installs linux-perf):\n{report}"
    );
    for needle in [
        "| | HTTP/1.1 2 Strait hops, mTLS | HTTP/1.1 2 HAProxy hops, TLS | HTTP/2 2 Strait hops, mTLS | HTTP/2 2 HAProxy hops, TLS |",
        "| CPU per request, each proxy |",
        "| System calls per request, all proxies |",
        "| Context switches per request, all proxies |",
        "| HTTP/2 (h2) | — | — |",
        "| HAProxy | — |",
        "Hottest functions: HTTP/2 2 Strait hops, mTLS, saturation",
    ] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    // Every chain answered: no row reports errors.
    for line in report
        .lines()
        .filter(|l| l.starts_with("| HTTP") || l.starts_with("| TCP") || l.starts_with("| gRPC"))
    {
        if line.contains(" hop") || line.contains("direct") {
            assert!(line.trim_end().ends_with("| 0 |"), "errors on {line}");
            // "median (slowest–fastest)" over the saturation rounds.
            let cell = line.split('|').nth(3).unwrap().trim();
            let numbers: Vec<f64> = cell
                .split(|c: char| !c.is_ascii_digit() && c != '.')
                .filter(|n| !n.is_empty())
                .map(|n| n.parse().unwrap())
                .collect();
            let [median, slowest, fastest] = numbers[..] else {
                panic!("saturation cell {cell:?} in {line}")
            };
            assert!(median > 0.0, "nothing got through: {line}");
            assert!(slowest <= median && median <= fastest, "{line}");
        }
    }
}

/// Whether process `pid` still exists.
fn alive(pid: &str) -> bool {
    std::path::Path::new("/proc").join(pid).exists()
}

#[test]
fn held_chains_carry_the_load_their_printed_commands_send_and_go_away_on_ctrl_c() {
    let _one_at_a_time = DATA_PLANE.lock().unwrap_or_else(|e| e.into_inner());
    let runner = PathBuf::from(env!("CARGO_BIN_EXE_strait-bench"));
    let dir = tempfile::tempdir().unwrap();
    let mut held = Command::new(&runner)
        .args(["--quick", "--hold", "120", "--strait"])
        .arg(runner.with_file_name("strait"))
        .arg("--logs")
        .arg(dir.path().join("logs"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(held.stderr.take().unwrap());
    // "  PROTOCOL PATH: h2load ARGS   # processes PID..." per chain, then "holding …".
    let mut chains = Vec::new();
    let mut said = String::new();
    let mut lines = stderr.lines();
    loop {
        let Some(Ok(line)) = lines.next() else {
            panic!(
                "the runner ended before holding the chains up (needs nginx, haproxy and h2load: scripts/test installs them):\n{said}"
            );
        };
        said.push_str(&line);
        said.push('\n');
        if line.contains("holding the chains up") {
            break;
        }
        if let Some((chain, rest)) = line.trim().split_once(": h2load ") {
            let (args, pids) = rest.split_once("   # processes ").unwrap();
            chains.push((chain.to_string(), args.to_string(), pids.to_string()));
        }
    }
    let find = |name: &str| {
        chains
            .iter()
            .find(|(c, _, _)| c == name)
            .unwrap_or_else(|| panic!("no {name:?} among the held chains: {chains:#?}"))
    };
    // Commands as printed (quoted for a shell), run by one: the TCP and HTTP/1.1 mTLS chains.
    for name in ["TCP 2 Strait hops, mTLS", "HTTP/1.1 2 Strait hops, mTLS"] {
        let (_, args, pids) = find(name);
        assert_eq!(
            pids.split(' ').count(),
            2,
            "{name}: two proxies, got {pids}"
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("h2load -n 20 -c 2 {args}"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(out.contains("20 succeeded"), "{name}: {out}");
    }
    let pids: Vec<String> = chains
        .iter()
        .flat_map(|(_, _, p)| p.split(' ').map(str::to_string))
        .collect();
    assert!(pids.iter().all(|p| alive(p)), "{pids:?}");
    // Ctrl-C (SIGINT, to the runner's PID): it stops what it started and exits at once.
    let interrupted = Command::new("kill")
        .args(["-INT", &held.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = held.wait().unwrap();
    assert!(status.success(), "{status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<&String> = pids.iter().filter(|p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "still running after the runner ended: {left:?}"
    );
}

#[test]
fn a_tiny_identity_run_reports_signing_and_handshakes() {
    let report = run_runner(&["--quick", "--only", "identity"], "");
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

#[test]
fn a_tiny_multicluster_run_measures_the_gateway_hop_and_failover() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        eprintln!(
            "SKIPPED: the multi-cluster scenario runs pods as network namespaces and needs root; not tested in this run"
        );
        return;
    }
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let report = run_runner(
        &[
            "--quick",
            "--only",
            "multicluster",
            "--examples",
            examples.to_str().unwrap(),
        ],
        "",
    );
    for needle in [
        "## Multi-cluster: gateway hop and failover",
        "| in cluster1's network |",
        "| across networks, through the gateway |",
        "| cluster1's helloworld pod stopped (SIGKILL) | 3 × 1 s |",
        "| cluster1's helloworld pod stopped (SIGKILL) | none |",
        "| network2 blackholed (router and gateway drop every packet) | 3 × 1 s |",
        "Saturation throughput from cluster1's client pod",
        "Through the gateway: ",
    ] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    assert!(!report.contains("NOT MEASURED"), "{report}");
}
