//! `strait up` on the bundled Multi-Primary, multi-network example (the seed's check): two
//! clusters on two networks, each pod a network namespace with its app and a captured sidecar,
//! the networks joined only by their east-west gateways. `curl` in each cluster's `sleep` pod
//! reaches helloworld v1 (cluster1) and v2 (cluster2); the far one through the far network's
//! gateway (SNI passthrough on 15443) with mesh mTLS kept end to end — the far sidecar sees the
//! caller's SPIFFE identity, arriving from its gateway. Pod addresses of the other network are
//! unreachable. Ctrl-C removes every namespace and process.
//!
//! Needs root (network namespaces, iptables). Without it the test says so and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::io::BufReader;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// Removes the run's namespaces and processes even when the test fails.
struct Down {
    name: String,
    state: std::path::PathBuf,
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_strait"))
            .args(["up", "--down", "--name", &self.name, "--state-dir"])
            .arg(&self.state)
            .output();
    }
}

fn namespaces(prefix: &str) -> Vec<String> {
    let (_, out, _) = run("ip", &["netns", "list"]);
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

#[test]
fn multi_primary_multi_network_serves_both_clusters_through_the_gateways_with_mtls() {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    {
        eprintln!(
            "SKIPPED: strait up needs root (network namespaces, iptables); the multi-network mesh is not tested in this run"
        );
        return;
    }
    let name = format!("su{}", std::process::id() % 100_000);
    let state = tempfile::tempdir().unwrap();
    let _down = Down {
        name: name.clone(),
        state: state.path().to_path_buf(),
    };
    let mut up = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["up"])
        .arg(repo().join("examples/multi-primary-multi-network"))
        .args(["--name", &name, "--status-every", "0", "--state-dir"])
        .arg(state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = up.id();
    let out = lines(up.stdout.take().unwrap());
    let mut seen = Vec::new();
    let started = loop {
        match out.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let up_now = line.contains(" is up;");
                seen.push(line);
                if up_now {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !started {
        let _ = up.kill();
        let mut err = String::new();
        let _ =
            std::io::Read::read_to_string(&mut BufReader::new(up.stderr.take().unwrap()), &mut err);
        panic!("strait up did not come up:\n{}\n{err}", seen.join("\n"));
    }

    // Each cluster's client reaches both versions; none fails.
    for cluster in ["cluster1", "cluster2"] {
        let ns = format!("{name}-{cluster}-sample-sleep");
        let mut answers: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..30 {
            let (code, body) = curl_in(&ns, &["http://helloworld.sample:5000/hello"]);
            let body = body.lines().next().unwrap_or("").to_string();
            assert_eq!(code, 200, "{cluster}: {body}");
            *answers.entry(body).or_default() += 1;
        }
        let versions: Vec<&str> = answers.keys().filter_map(|a| a.split(',').next()).collect();
        assert_eq!(
            versions,
            ["Hello version: v1", "Hello version: v2"],
            "{cluster}: {answers:?}"
        );
    }

    // cluster1's calls reach v2 in cluster2 from cluster2's gateway, with the caller's
    // identity: the gateway passed mTLS through without terminating it.
    let log = std::fs::read_to_string(
        state
            .path()
            .join("logs/cluster2_sample_helloworld-v2.access.log"),
    )
    .unwrap();
    let from_cluster1: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["reporter"] == "destination" && e["source_cluster"] == "cluster1")
        .collect();
    assert!(!from_cluster1.is_empty(), "no calls from cluster1 in {log}");
    for e in &from_cluster1 {
        assert_eq!(
            e["source_principal"], "spiffe://cluster.local/ns/sample/sa/sleep",
            "{e}"
        );
        let from = e["downstream_remote_address"].as_str().unwrap();
        assert!(
            from.starts_with("10.2.1.10:"),
            "not from cluster2's gateway: {e}"
        );
    }

    // Networks meet only through gateways: cluster2's pod address is unreachable from
    // cluster1 (the sidecar passes the call through and it finds no route).
    let (code, _) = curl_in(
        &format!("{name}-cluster1-sample-sleep"),
        &["-m", "3", "http://10.2.1.11:5000/hello"],
    );
    assert_ne!(code, 200, "a pod on network2 answered network1 directly");

    // Ctrl-C removes everything.
    assert!(!namespaces(&name).is_empty());
    run("kill", &["-INT", &pid.to_string()]);
    let exited = wait_for(Duration::from_secs(30), "strait up to stop", || {
        up.try_wait().unwrap()
    });
    assert!(exited.success(), "strait up exited with {exited}");
    assert_eq!(namespaces(&name), Vec::<String>::new());
    assert!(
        !std::path::Path::new(&format!("/etc/netns/{name}-cluster1-sample-sleep")).exists(),
        "its /etc/netns files stayed"
    );
}
