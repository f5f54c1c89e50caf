//! `strait up` on the bundled examples, each pod a network namespace with its app and a
//! captured sidecar, each network its own segment:
//! - in each topology (Multi-Primary and Primary-Remote, one network and two), `curl` in each
//!   cluster's `sleep` pod reaches helloworld v1 (cluster1) and v2 (cluster2), over mesh mTLS:
//!   the far sidecar sees the caller's SPIFFE identity — across networks arriving from its
//!   network's east-west gateway, which passed the TLS through (SNI on 15443);
//! - Primary-Remote: the remote's proxies take their configuration from the primary — across
//!   networks through the primary's east-west gateway, which passes 15012 through;
//! - locality: `distribute` 80/20 measured over 1000 calls from each region; a control plane
//!   killed is restarted and its proxies keep serving meanwhile, then reconnect; stopping every
//!   helloworld pod of a cluster moves its callers to the other region within 3 s, with no
//!   failed call; a cut link to one network (its packets dropped) leaves the rest serving;
//! - Linkerd-style: east links west, sees its exported backend-api as backend-api-west
//!   through west's gateway, splits 70/30 with SMI, and withdraws the mirror when the gateway
//!   fails its probes;
//! - Ctrl-C removes every namespace and process.
//!
//! Needs root (network namespaces, iptables). Without it each test says so and does nothing.
//! The meshes run one at a time (the machine has two cores; failover is timed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use support::*;

/// One mesh at a time.
static ONE_MESH: Mutex<()> = Mutex::new(());

const HELLO: &str = "http://helloworld.sample:5000/hello";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn namespaces(prefix: &str) -> Vec<String> {
    let (_, out, _) = run("ip", &["netns", "list"]);
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

/// A running `strait up`; dropping it removes the run's namespaces and processes even when the
/// test fails.
struct Mesh {
    run: UpRun,
    /// Held until the mesh is gone (declared last: dropped after the run cleaned up).
    _one: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Mesh {
    type Target = UpRun;
    fn deref(&self) -> &UpRun {
        &self.run
    }
}

impl std::ops::DerefMut for Mesh {
    fn deref_mut(&mut self) -> &mut UpRun {
        &mut self.run
    }
}

impl Mesh {
    /// Starts `strait up examples/<example>` and waits until it says it is up (one mesh at a
    /// time); `None`, saying so, without root.
    #[allow(clippy::print_stderr)] // a skipped test says why, loudly
    fn start(example: &str, tag: &str) -> Option<Mesh> {
        if !is_root() {
            eprintln!(
                "SKIPPED: strait up needs root (network namespaces, iptables); examples/{example} is not tested in this run"
            );
            return None;
        }
        let one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!("su{}{tag}", std::process::id() % 100_000);
        let state = tempfile::tempdir().unwrap();
        let run = UpRun::start(
            Command::new(env!("CARGO_BIN_EXE_strait")),
            example,
            name,
            state,
        );
        Some(Mesh { run, _one: one })
    }

    /// The namespace of `cluster`'s pod `namespace/pod` (or of its control plane, `istiod`).
    fn ns(&self, cluster: &str, pod: &str) -> String {
        format!("{}-{cluster}-{}", self.name, pod.replace('/', "-"))
    }

    /// Ctrl-C, then checks that nothing is left.
    fn interrupt_and_check_clean(mut self) {
        assert!(!namespaces(&self.name).is_empty());
        run("kill", &["-INT", &self.up.id().to_string()]);
        let exited = wait_for(Duration::from_secs(30), "strait up to stop", || {
            self.up.try_wait().unwrap()
        });
        assert!(exited.success(), "strait up exited with {exited}");
        assert_eq!(namespaces(&self.name), Vec::<String>::new());
        assert!(
            !std::path::Path::new(&format!("/etc/netns/{}-cluster1-sample-sleep", self.name))
                .exists(),
            "its /etc/netns files stayed"
        );
    }
}

/// Each cluster's `sleep` reaches both versions in 30 calls; none fails.
fn both_versions_from_each_cluster(mesh: &Mesh) {
    for cluster in ["cluster1", "cluster2"] {
        let ns = mesh.ns(cluster, "sample/sleep");
        let mut answers: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..30 {
            let (code, body) = curl_in(&ns, &[HELLO]);
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
}

/// The calls `log_file` (a destination sidecar's access log) recorded from `source_cluster`
/// were mesh mTLS from `principal`, arriving from `from` (the far network's gateway, or on one
/// network the caller itself).
fn callers_were(mesh: &Mesh, log_file: &str, source_cluster: &str, principal: &str, from: &str) {
    let log = mesh.log(log_file);
    let calls: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["reporter"] == "destination" && e["source_cluster"] == source_cluster)
        .collect();
    assert!(!calls.is_empty(), "no calls from {source_cluster} in {log}");
    for e in &calls {
        assert_eq!(e["source_principal"], principal, "{e}");
        let addr = e["downstream_remote_address"].as_str().unwrap();
        assert!(
            addr.starts_with(&format!("{from}:")),
            "not from {from}: {e}"
        );
    }
}

/// cluster1's calls reached v2 in cluster2 over mTLS with sleep's identity, arriving from
/// `from` (cluster2's gateway across networks, cluster1's `sleep` on one network).
fn v2_saw_cluster1_sleep_from(mesh: &Mesh, from: &str) {
    callers_were(
        mesh,
        "cluster2_sample_helloworld-v2.access.log",
        "cluster1",
        "spiffe://cluster.local/ns/sample/sa/sleep",
        from,
    );
}

#[test]
fn multi_primary_multi_network_serves_both_clusters_through_the_gateways_with_mtls() {
    let Some(mesh) = Mesh::start("multi-primary-multi-network", "a") else {
        return;
    };
    // Each control plane watches the other's registry through the remote secret `strait up`
    // made, across the WAN.
    for (cluster, ip, peer) in [
        ("cluster1", "10.1.0.2", "cluster2"),
        ("cluster2", "10.2.0.2", "cluster1"),
    ] {
        let (synced, table) = multicluster_check(&mesh.ns(cluster, "istiod"), ip);
        assert!(synced, "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(peer) && l.contains(" synced ")),
            "{table}"
        );
    }
    // Rotate cluster1's secret for cluster2 (a fresh token, as `strait create-remote-secret`
    // run again prints): cluster1's control plane reconnects with it and stays synced.
    let state = mesh.state.path();
    let rotated = strait(&[
        "create-remote-secret",
        "--cluster",
        "cluster2",
        "--server",
        "10.255.0.51:15012",
        "--ca-root",
        state.join("ca/root/root-cert.pem").to_str().unwrap(),
        "--token-key",
        state.join("ca/token-key").to_str().unwrap(),
        "--ttl",
        "1h",
    ]);
    std::fs::write(
        state.join("clusters/cluster1/strait-up-remote-secret-cluster2.yaml"),
        rotated,
    )
    .unwrap();
    wait_for(
        Duration::from_secs(10),
        "cluster1 to use the rotated secret",
        || {
            mesh.log("cluster1_istiod.log")
                .contains("remote secret changed")
                .then_some(())
        },
    );
    wait_for(Duration::from_secs(10), "cluster1 synced again", || {
        let (synced, _) = multicluster_check(&mesh.ns("cluster1", "istiod"), "10.1.0.2");
        synced.then_some(())
    });
    both_versions_from_each_cluster(&mesh);
    // cluster2's gateway pod is 10.2.1.10 (the first pod of network2).
    v2_saw_cluster1_sleep_from(&mesh, "10.2.1.10");

    // Networks meet only through gateways: cluster2's pod address is unreachable from
    // cluster1 (the sidecar passes the call through and it finds no route).
    let (code, _) = curl_in(
        &mesh.ns("cluster1", "sample/sleep"),
        &["-m", "3", "http://10.2.1.11:5000/hello"],
    );
    assert_ne!(code, 200, "a pod on network2 answered network1 directly");

    dns_resolves_remote_only_services_and_outlives_the_control_plane(&mesh);
    mesh.interrupt_and_check_clean();
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The first address `getent hosts NAME` finds inside `ns` (the C library's resolver, as
/// applications use it), or `None`.
fn getent(ns: &str, name: &str) -> Option<String> {
    let (ok, out, _) = run("ip", &["netns", "exec", ns, "getent", "hosts", name]);
    ok.then(|| out.split_whitespace().next().map(str::to_string))
        .flatten()
}

/// The DNS proxy (examples/multi-primary-multi-network): `tcp-echo` exists only in cluster2,
/// with no stub Service in cluster1; cluster1's `sleep` resolves it through its sidecar's name
/// table (at cluster2's service address) and talks to it through the gateways, while
/// cluster1's own DNS (asked directly by a pod without a sidecar) does not know it. With
/// cluster1's control plane frozen, the sidecar keeps answering.
fn dns_resolves_remote_only_services_and_outlives_the_control_plane(mesh: &Mesh) {
    let sleep1 = mesh.ns("cluster1", "sample/sleep");
    let echo_ip = getent(&sleep1, "tcp-echo.sample").expect("tcp-echo.sample resolves in cluster1");
    assert!(
        echo_ip.starts_with("10.201."),
        "not cluster2's VIP: {echo_ip}"
    );
    assert_eq!(
        getent(&sleep1, "tcp-echo").as_deref(),
        Some(echo_ip.as_str())
    );
    // Short names only within the caller's namespace.
    assert!(getent(&sleep1, "istiod.istio-system").is_some());
    assert_eq!(getent(&sleep1, "istiod"), None);
    let gateway1 = mesh.ns("cluster1", "istio-system/istio-eastwestgateway");
    assert_eq!(
        getent(&gateway1, "tcp-echo.sample.svc.cluster.local"),
        None,
        "cluster1's own DNS should not know a cluster2-only Service"
    );
    assert!(getent(&gateway1, "helloworld.sample.svc.cluster.local").is_some());
    let echo = |ns: &str| {
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "timeout",
                "10",
                "bash",
                "-c",
                "exec 3<>/dev/tcp/tcp-echo.sample/9000; echo ping >&3; head -n 2 <&3",
            ],
        )
        .1
    };
    let out = echo(&sleep1);
    assert!(
        out.starts_with("hello tcp-echo") && out.lines().nth(1) == Some("ping"),
        "tcp-echo through the gateways: {out:?}"
    );
    let (_, stats) = curl_in(&sleep1, &["http://127.0.0.1:15000/dns"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(stats["answered"].as_u64().unwrap() > 0, "{stats}");

    // gRPC to the cluster2-only grpc-echo: HTTP/2 through both sidecars and the gateways.
    let py = python();
    let (ok, out, err) = run(
        "ip",
        &[
            "netns",
            "exec",
            &sleep1,
            "env",
            "GRPC_DNS_RESOLVER=native",
            py.to_str().unwrap(),
            "-c",
            GRPC_ECHO_CALL,
            "grpc-echo.sample:9090",
        ],
    );
    // message "hi", instance "grpc-echo" (hex).
    let want = format!("0a0268691209{}", hex("grpc-echo"));
    assert!(
        ok && out.lines().next() == Some(want.as_str()) && out.contains("UNIMPLEMENTED"),
        "gRPC echo across networks: {out}{err}"
    );

    // Freeze cluster1's control plane (SIGSTOP by PID): names still resolve, calls still work.
    let istiod1 = mesh.ns("cluster1", "istiod");
    let pids = strait_local::netns::pids(&istiod1);
    assert!(!pids.is_empty());
    let signal = |sig: &str| {
        for pid in &pids {
            run("kill", &[sig, &pid.to_string()]);
        }
    };
    signal("-STOP");
    let frozen = (
        getent(&sleep1, "helloworld.sample"),
        getent(&sleep1, "tcp-echo.sample"),
        curl_in(&sleep1, &[HELLO]).0,
        echo(&sleep1),
    );
    signal("-CONT");
    assert!(
        frozen.0.is_some(),
        "helloworld.sample with the control plane frozen"
    );
    assert_eq!(frozen.1.as_deref(), Some(echo_ip.as_str()));
    assert_eq!(frozen.2, 200);
    assert!(frozen.3.starts_with("hello tcp-echo"), "{:?}", frozen.3);
}

#[test]
fn multi_primary_single_network_calls_go_pod_to_pod_with_mtls() {
    let Some(mesh) = Mesh::start("multi-primary-single-network", "b") else {
        return;
    };
    both_versions_from_each_cluster(&mesh);
    // One network: straight from cluster1's sleep (10.1.1.11) to v2's pod.
    v2_saw_cluster1_sleep_from(&mesh, "10.1.1.11");
    mesh.interrupt_and_check_clean();
}

/// `strait ARGS` inside namespace `ns`: (exit success, stdout).
fn strait_in(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_strait")])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `strait multicluster check` against the control plane at `ip` (from its namespace):
/// (all synced, the table).
fn multicluster_check(ns: &str, ip: &str) -> (bool, String) {
    strait_in(
        ns,
        &["multicluster", "check", "--debug", &format!("{ip}:15014")],
    )
}

/// The primary's control plane (cluster1's, at 10.1.0.2) serves `expected` proxies of cluster2.
fn primary_serves_remote_proxies(mesh: &Mesh, expected: usize) {
    assert!(
        namespaces(&mesh.name)
            .iter()
            .all(|n| !n.contains("cluster2-istiod")),
        "the remote cluster runs no control plane"
    );
    let (code, syncz) = curl_in(
        &mesh.ns("cluster1", "istiod"),
        &["http://10.1.0.2:15014/debug/syncz"],
    );
    assert_eq!(code, 200, "{syncz}");
    let syncz: serde_json::Value = serde_json::from_str(&syncz).unwrap();
    let remote_proxies = syncz["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["cluster"] == "cluster2")
        .count();
    assert_eq!(remote_proxies, expected, "{syncz:#}");
}

#[test]
fn primary_remote_single_network_remote_proxies_use_the_primary_control_plane() {
    let Some(mesh) = Mesh::start("primary-remote-single-network", "c") else {
        return;
    };
    primary_serves_remote_proxies(&mesh, 2);
    both_versions_from_each_cluster(&mesh);
    v2_saw_cluster1_sleep_from(&mesh, "10.1.1.11");
    mesh.interrupt_and_check_clean();
}

#[test]
fn primary_remote_multi_network_remote_proxies_reach_the_primary_through_its_gateway() {
    let Some(mesh) = Mesh::start("primary-remote-multi-network", "e") else {
        return;
    };
    // cluster2's two pods and its gateway, connected through cluster1's gateway (15012
    // passed through) — the control plane's own address is not reachable from network2.
    primary_serves_remote_proxies(&mesh, 3);
    let (code, _) = curl_in(
        &mesh.ns("cluster2", "sample/sleep"),
        &["-m", "3", "http://10.1.0.2:15014/ready"],
    );
    assert_ne!(
        code, 200,
        "network2 reached cluster1's control plane directly"
    );
    both_versions_from_each_cluster(&mesh);
    v2_saw_cluster1_sleep_from(&mesh, "10.2.1.10");
    mesh.interrupt_and_check_clean();
}

/// `n` calls to `url` in one `curl` (one connection, each call balanced on its own): the
/// answers' first lines by count, failures as `status <code>: <body>`.
fn answers(ns: &str, url: &str, n: u32) -> BTreeMap<String, u32> {
    let url = format!("{url}?n=[1-{n}]");
    // A marker ends each answer: `<body>~~<pid>|<status>`, whether or not the body
    // ends its line.
    let marker = format!("~~{}", std::process::id());
    let format = format!("{marker}|%{{http_code}}\n");
    let out = curl_raw_in(ns, &["-m", "60", "-w", &format, &url]);
    let mut by: BTreeMap<String, u32> = BTreeMap::new();
    let mut rest = out.as_str();
    while let Some(at) = rest.find(&format!("{marker}|")) {
        let body = rest[..at].trim();
        let after = &rest[at + marker.len() + 1..];
        let (code, next) = after.split_once('\n').unwrap_or((after, ""));
        let key = if code == "200" {
            body.lines().next().unwrap_or("").to_string()
        } else {
            format!("status {code}: {body}")
        };
        *by.entry(key).or_default() += 1;
        rest = next;
    }
    by
}

/// `n` calls to helloworld from `ns`: answers by version (`Hello version: v1`).
fn versions_of(ns: &str, n: u32) -> BTreeMap<String, u32> {
    let mut by: BTreeMap<String, u32> = BTreeMap::new();
    for (answer, count) in answers(ns, HELLO, n) {
        let key = answer.split(',').next().unwrap_or(&answer).to_string();
        *by.entry(key).or_default() += count;
    }
    by
}

/// Share (in %) of `version` among the answers.
fn share(by: &BTreeMap<String, u32>, version: &str) -> f64 {
    let total: u32 = by.values().sum();
    f64::from(
        by.get(&format!("Hello version: {version}"))
            .copied()
            .unwrap_or(0),
    ) * 100.0
        / f64::from(total.max(1))
}

#[test]
fn locality_distribute_control_plane_restart_failover_and_link_cut() {
    let Some(mut mesh) = Mesh::start("locality-failover", "d") else {
        return;
    };
    let sleep1 = mesh.ns("cluster1", "sample/sleep");
    let sleep2 = mesh.ns("cluster2", "sample/sleep");

    // distribute: 80 % stays in the caller's region, 20 % goes to the other (±5 points).
    for (ns, local, far) in [(&sleep1, "v1", "v2"), (&sleep2, "v2", "v1")] {
        let by = versions_of(ns, 1000);
        assert_eq!(by.values().sum::<u32>(), 1000, "{ns}: {by:?}");
        let (l, f) = (share(&by, local), share(&by, far));
        eprintln!("{ns}: {l:.1} % local, {f:.1} % far");
        assert!((75.0..=85.0).contains(&l), "{ns}: {l} % local: {by:?}");
        assert!((15.0..=25.0).contains(&f), "{ns}: {f} % far: {by:?}");
    }

    // Kill cluster1's control plane: proxies keep serving from their last configuration, the
    // control plane is restarted, and cluster1's three proxies connect to it again.
    let istiod1 = mesh.ns("cluster1", "istiod");
    assert!(
        strait_local::netns::kill_all(&istiod1) > 0,
        "nothing runs in {istiod1}"
    );
    let restarted = mesh.wait_line(Duration::from_secs(10), |l| {
        l.starts_with("cluster1/istiod exited") && l.contains("restarted")
    });
    assert!(
        restarted.is_some(),
        "strait up did not restart cluster1/istiod"
    );
    let by = versions_of(&sleep1, 20);
    assert_eq!(by.values().sum::<u32>(), 20, "{by:?}");
    assert!(by.keys().all(|k| k.starts_with("Hello")), "{by:?}");
    wait_for(
        Duration::from_secs(30),
        "cluster1's proxies to reconnect",
        || {
            let (code, body) = curl_in(&istiod1, &["http://10.1.0.2:15014/debug/syncz"]);
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let n = v["proxies"].as_array()?.len();
            (code == 200 && n == 3).then_some(())
        },
    );

    // Failover: stop cluster1's helloworld pod while sleep calls in a loop. With Istio's
    // default retries no call fails, and within 3 s every call is served by cluster2.
    let helloworld1 = mesh.ns("cluster1", "sample/helloworld-v1");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let at = Instant::now();
        assert!(strait_local::netns::kill_all(&helloworld1) > 0);
        at
    });
    let start = Instant::now();
    let mut calls: Vec<(Instant, u16, String)> = Vec::new();
    while start.elapsed() < Duration::from_secs(5) {
        let (code, body) = curl_in(&sleep1, &[HELLO]);
        calls.push((
            Instant::now(),
            code,
            body.lines().next().unwrap_or("").into(),
        ));
    }
    let killed_at = killer.join().unwrap();
    let failed: Vec<_> = calls.iter().filter(|c| c.1 != 200).collect();
    assert!(
        failed.is_empty(),
        "calls failed during failover: {failed:?}"
    );
    let after: Vec<_> = calls.iter().filter(|c| c.0 > killed_at).collect();
    let last_v1 = after
        .iter()
        .filter(|c| c.2.contains("v1"))
        .map(|c| c.0 - killed_at)
        .max();
    let settled: Vec<_> = after
        .iter()
        .filter(|c| c.0 > killed_at + Duration::from_secs(3))
        .collect();
    eprintln!(
        "failover: {} calls after the kill, last v1 answer {last_v1:?} after it, {} calls after 3 s all from v2",
        after.len(),
        settled.len()
    );
    assert!(after.len() >= 20, "too few calls after the kill: {after:?}");
    assert!(
        settled.len() >= 10 && settled.iter().all(|c| c.2.contains("v2")),
        "not all served by cluster2 3 s after the kill: {settled:?}"
    );
    let ejections = {
        let (_, stats) = curl_in(&sleep1, &["http://127.0.0.1:15090/stats/prometheus"]);
        stats
            .lines()
            .find(|l| {
                l.starts_with("envoy_cluster_outlier_detection_ejections_total")
                    && l.contains("helloworld")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(ejections >= 1, "outlier detection did not eject v1");
    assert!(
        mesh.wait_line(Duration::from_secs(5), |l| l
            .starts_with("cluster1/sample/helloworld-v1"))
            .is_some(),
        "strait up did not report the stopped pod"
    );
    // Cut network1 off (packets dropped, not refused) — its router, gateway and control
    // plane: cluster2 keeps being served by v2 — calls it sends to network1's gateway get no
    // answer within the 1 s per-try timeout and are retried on v2, until cluster2's control
    // plane finds that gateway not answering its probes and sends the endpoints behind it
    // unhealthy — and cluster2's control plane notices the silent link (HTTP/2 pings) and
    // holds cluster1's registry as stale.
    // (Cut last: a host ejected meanwhile stays out for the base ejection time, 30 s, after
    // the link returns — Envoy's semantics.)
    let gateway1 = mesh.ns("cluster1", "istio-system/istio-eastwestgateway");
    let istiod2 = mesh.ns("cluster2", "istiod");
    let (_, before) = strait_in(
        &istiod2,
        &["multicluster", "gateways", "--debug", "10.2.0.2:15014"],
    );
    strait_local::netns::cut_off(
        &format!("{}-net-network1", mesh.name),
        &[&gateway1, &istiod1],
        true,
    )
    .unwrap();
    let by = versions_of(&sleep2, 50);
    assert_eq!(
        by.get("Hello version: v2"),
        Some(&50),
        "cluster2 with network1 cut off: {by:?}"
    );
    wait_for(
        Duration::from_secs(10),
        "cluster2's control plane to find network1's gateway unreachable",
        || {
            let (ok, table) = strait_in(
                &istiod2,
                &["multicluster", "gateways", "--debug", "10.2.0.2:15014"],
            );
            (!ok && table
                .lines()
                .any(|l| l.starts_with("network1") && l.contains(" unreachable ")))
            .then_some(())
        },
    );
    assert!(
        before
            .lines()
            .any(|l| l.starts_with("network1") && l.contains(" reachable ")),
        "network1's gateway answered cluster2's probes before the cut: {before}"
    );
    assert!(
        mesh.wait_line(Duration::from_secs(10), |l| {
            l.starts_with("cluster2/istiod: network1's gateway") && l.contains("does not answer")
        })
        .is_some(),
        "strait up did not report network1's gateway unreachable"
    );
    wait_for(
        Duration::from_secs(10),
        "cluster2's sidecar to hold network1's gateway unhealthy",
        || {
            let (_, clusters) = curl_in(&sleep2, &["http://127.0.0.1:15000/clusters"]);
            clusters
                .lines()
                .any(|l| {
                    l.contains("helloworld")
                        && l.contains(":15443::health_flags::")
                        && l.contains("/failed_eds_health")
                })
                .then_some(())
        },
    );
    wait_for(
        Duration::from_secs(30),
        "cluster2's control plane to hold cluster1 as stale",
        || {
            let (_, table) = multicluster_check(&istiod2, "10.2.0.2");
            table
                .lines()
                .any(|l| l.starts_with("cluster1") && l.contains(" stale "))
                .then_some(())
        },
    );
    mesh.interrupt_and_check_clean();
}

#[test]
fn linkerd_mirroring_splits_70_30_to_the_mirror_and_probes_the_gateway() {
    let Some(mesh) = Mesh::start("linkerd-mirroring", "f") else {
        return;
    };
    let east = mesh.ns("east", "istiod");
    // Synced at once (strait up waits for it); the gateway's first probe within a period.
    wait_for(
        Duration::from_secs(10),
        "east synced with west and west's gateway alive",
        || {
            let (synced, table) = multicluster_check(&east, "10.1.0.2");
            (synced
                && table.lines().any(|l| {
                    l.starts_with("west") && l.contains(" synced ") && l.contains(" alive ")
                }))
            .then_some(())
        },
    );
    let (_, gateways) = strait_in(
        &east,
        &["multicluster", "gateways", "--debug", "10.1.0.2:15014"],
    );
    assert!(
        gateways.lines().any(|l| l.starts_with("west")
            && l.contains(" yes ")
            && l.ends_with("http://10.255.0.100:15021/healthz/ready")),
        "{gateways}"
    );
    // west links nothing: it sees none of east's services.
    let (_, west_table) = multicluster_check(&mesh.ns("west", "istiod"), "10.2.0.2");
    assert!(west_table.contains("no remote clusters"), "{west_table}");

    // The seed's TrafficSplit: 70 % local, 30 % to backend-api-west (±5 points over 1000).
    let sleep = mesh.ns("east", "prod/sleep");
    let by = answers(&sleep, "http://backend-api.prod:8080/hello", 1000);
    assert_eq!(by.values().sum::<u32>(), 1000, "{by:?}");
    let west = f64::from(
        by.get("Hello version: west, instance: backend-api-west")
            .copied()
            .unwrap_or(0),
    ) / 10.0;
    eprintln!("linkerd-mirroring: {west:.1} % to west: {by:?}");
    assert!((25.0..=35.0).contains(&west), "{west} % to west: {by:?}");

    // The mirror by name, over mesh mTLS through west's gateway: west's backend sees east's
    // sleep identity, arriving from its gateway (10.2.1.10).
    let (code, body) = curl_in(&sleep, &["http://backend-api-west.prod:8080/hello"]);
    assert_eq!(
        (code, body.trim()),
        (200, "Hello version: west, instance: backend-api-west")
    );
    callers_were(
        &mesh,
        "west_prod_backend-api-west.access.log",
        "east",
        "spiffe://cluster.local/ns/prod/sa/sleep",
        "10.2.1.10",
    );

    // west's gateway stops: east's probe (every 3 s) fails and the mirror loses its endpoints
    // — a call to it is answered by east's sidecar (no healthy upstream) instead of going to
    // a dead gateway.
    assert!(
        strait_local::netns::kill_all(&mesh.ns("west", "istio-system/istio-eastwestgateway")) > 0
    );
    wait_for(
        Duration::from_secs(15),
        "east to see west's gateway failing",
        || {
            let (synced, table) = multicluster_check(&east, "10.1.0.2");
            (!synced && table.contains(" failing ")).then_some(())
        },
    );
    let started = Instant::now();
    wait_for(
        Duration::from_secs(5),
        "east's sidecar to drop the mirror's endpoints",
        || {
            let (code, body) = curl_in(&sleep, &["http://backend-api-west.prod:8080/hello"]);
            (code == 503 && body.trim() == "no healthy upstream").then_some(())
        },
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the call waited on a dead gateway"
    );
    mesh.interrupt_and_check_clean();
}

/// A start that fails half-way (here: every control plane exits at once) removes the
/// namespaces it had made and says so; nothing of the run is left.
#[test]
fn a_failed_start_leaves_nothing_behind() {
    if !is_root() {
        eprintln!(
            "SKIPPED: strait up needs root (network namespaces); a failed start is not tested in this run"
        );
        return;
    }
    let _one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // The real binary for everything but the control plane, which refuses to start.
    let exe = dir.path().join("strait-without-control-plane");
    std::fs::write(
        &exe,
        format!(
            "#!/bin/sh\ncase \"$1\" in control-plane) echo 'refusing to start' >&2; exit 3;; esac\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_strait")
        ),
    )
    .unwrap();
    run("chmod", &["755", exe.to_str().unwrap()]);
    let name = format!("sf{}", std::process::id() % 100_000);
    let options = strait_local::up::Options {
        dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/multi-primary-multi-network"),
        name: name.clone(),
        state_dir: dir.path().join("state"),
        exe,
        log_level: "warn".into(),
        runtime: strait_local::plan::Runtime::Namespaces,
    };
    let mut out = Vec::new();
    let started = strait_local::up::Mesh::start(options, &mut out);
    let out = String::from_utf8_lossy(&out);
    let Err(e) = started else {
        panic!("the start succeeded without control planes:\n{out}");
    };
    assert!(format!("{e:#}").contains("refusing to start"), "{e:#}");
    // It failed after making the networks (the control planes start in theirs).
    assert!(out.contains("control plane of cluster1 at"), "{out}");
    assert!(out.contains("start failed; removed the"), "{out}");
    assert!(!out.contains("removed the 0 namespaces"), "{out}");
    assert_eq!(namespaces(&name), Vec::<String>::new(), "{out}");
}
