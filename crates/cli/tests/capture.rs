//! Traffic capture as in a Kubernetes pod: two network namespaces joined by a veth pair, each a
//! "pod" with iptables rules like Istio's init container. In the client pod, curl calls the
//! echo pod's IP; iptables redirects it to the sidecar's 15001, which recovers the original
//! destination (`SO_ORIGINAL_DST`), routes it, and connects out with its marked socket. In the
//! echo pod, iptables redirects arriving traffic to the sidecar's 15006, which hands it to the
//! application on 127.0.0.1. Both sidecars report it: as source and as destination.
//!
//! Needs root (network namespaces, iptables). Without it the test says so and does nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// Network namespaces, removed (with their veths and iptables rules) when dropped.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    sh(&all);
}

/// Starts `strait ...` inside `ns`, logging to `log`.
fn spawn_in(ns: &str, args: &[&str], log: &std::path::Path) -> Proc {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_strait")])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap();
    Proc {
        child,
        what: format!("strait {}", args[0]),
    }
}

/// Two "pods", network namespaces joined by a veth pair: the client at 10.`net`.0.1, whose
/// outgoing TCP iptables sends to its sidecar's 15001 (except the sidecar's own marked sockets,
/// loopback, and processes of uid 65534: an application left out of the mesh, as Istio's
/// excluded UIDs are), and the server at 10.`net`.0.2, whose arriving TCP the `inbound` rules
/// (iptables `nat PREROUTING` rules) send to its sidecar's 15006. `None` without root.
struct Pods {
    client: String,
    server: String,
    _namespaces: Namespaces,
}

#[allow(clippy::print_stderr)] // a test that cannot run says so, loudly
fn pods(tag: &str, net: u8, inbound: &[&str]) -> Option<Pods> {
    let id = std::process::id();
    let (a, b) = (
        format!("strait-{id}-{tag}-a"),
        format!("strait-{id}-{tag}-b"),
    );
    if Command::new("ip")
        .args(["netns", "add", &a])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!(
            "SKIPPED: cannot create network namespaces (needs root with CAP_NET_ADMIN and iproute2); \
             the capture path (iptables REDIRECT + SO_ORIGINAL_DST) is not tested in this run"
        );
        return None;
    }
    let mut namespaces = Namespaces(vec![a.clone()]);
    sh(&["ip", "netns", "add", &b]);
    namespaces.0.push(b.clone());
    let (va, vb) = (
        format!("{tag}a{}", id % 100000),
        format!("{tag}b{}", id % 100000),
    );
    sh(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ]);
    sh(&["ip", "link", "set", &va, "netns", &a]);
    sh(&["ip", "link", "set", &vb, "netns", &b]);
    in_ns(
        &a,
        &["ip", "addr", "add", &format!("10.{net}.0.1/24"), "dev", &va],
    );
    in_ns(
        &b,
        &["ip", "addr", "add", &format!("10.{net}.0.2/24"), "dev", &vb],
    );
    for (ns, dev) in [(&a, &va), (&b, &vb)] {
        in_ns(ns, &["ip", "link", "set", dev, "up"]);
        in_ns(ns, &["ip", "link", "set", "lo", "up"]);
    }
    for rule in [
        "-m mark --mark 1337 -j RETURN",
        "-m owner --uid-owner 65534 -j RETURN",
        "-d 127.0.0.0/8 -j RETURN",
        "-p tcp -j REDIRECT --to-ports 15001",
    ] {
        let mut args = vec!["iptables", "-t", "nat", "-A", "OUTPUT"];
        args.extend(rule.split(' '));
        in_ns(&a, &args);
    }
    for rule in inbound {
        let mut args = vec!["iptables", "-t", "nat", "-A", "PREROUTING"];
        args.extend(rule.split(' '));
        in_ns(&b, &args);
    }
    Some(Pods {
        client: a,
        server: b,
        _namespaces: namespaces,
    })
}

#[test]
fn captured_traffic_goes_through_both_sidecars_to_its_original_destination() {
    // The echo pod: everything arriving for the application's port goes to the sidecar.
    let Some(pods) = pods(
        "c",
        77,
        &["-p tcp --dport 8080 -j REDIRECT --to-ports 15006"],
    ) else {
        return;
    };
    let (a, b) = (pods.client.clone(), pods.server.clone());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("mesh.yaml"),
        "apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec: {ports: [{name: http, port: 8080}, {name: grpc, port: 9090}], selector: {app: echo}}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-0, namespace: default, labels: {app: echo, version: v1}}
spec: {serviceAccountName: echo}
status: {podIP: 10.77.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client-0, namespace: default, labels: {app: client}}
spec: {serviceAccountName: client}
status: {podIP: 10.77.0.1}
",
    )
    .unwrap();
    // The application in the echo pod listens on all addresses, as applications do.
    let backend_child = Command::new("ip")
        .args(["netns", "exec", &b])
        .arg(python())
        .arg(repo().join("tests/http/backend.py"))
        .args(["echo-app", "0.0.0.0:8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut backend = Proc {
        child: backend_child,
        what: "echo app".into(),
    };
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(backend.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let _cp = spawn_in(
        &a,
        &[
            "control-plane",
            "--cluster",
            "cluster1",
            "--config",
            dir.to_str().unwrap(),
            "--xds-listen",
            "0.0.0.0:15010",
            "--debug-listen",
            "127.0.0.1:15014",
        ],
        &tmp.path().join("cp.log"),
    );
    let sidecar = |ns: &str, ip: &str, pod: &str, labels: &str| {
        spawn_in(
            ns,
            &[
                "proxy",
                "--xds",
                "10.77.0.1:15010",
                "--node-id",
                &format!("sidecar~{ip}~{pod}.default~default.svc.cluster.local"),
                "--meta",
                "CLUSTER_ID=cluster1",
                "--meta",
                &format!("LABELS={labels}"),
                "--mark",
                "1337",
            ],
            &tmp.path().join(format!("{pod}.log")),
        )
    };
    let _client_sidecar = sidecar(&a, "10.77.0.1", "client-0", "app=client");
    let _echo_sidecar = sidecar(&b, "10.77.0.2", "echo-0", "app=echo,version=v1");
    let logs = || {
        ["cp.log", "client-0.log", "echo-0.log"]
            .iter()
            .map(|f| std::fs::read_to_string(tmp.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    for ns in [&a, &b] {
        let start = std::time::Instant::now();
        while curl_in(ns, &["http://127.0.0.1:15000/ready"]).0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the sidecar in {ns} is not ready after 30 s\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // The client calls the echo pod's IP, knowing nothing of the mesh.
    let (status, body) = curl_in(
        &a,
        &[
            "-H",
            "Host: echo.default.svc.cluster.local:8080",
            "http://10.77.0.2:8080/hello",
        ],
    );
    assert_eq!(status, 200, "{body}\n{}", logs());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], "echo-app");
    // It went through the client's sidecar (which added the peer header, removed again by the
    // echo sidecar) and arrived from the echo sidecar on loopback.
    assert!(v["headers"]["x-request-id"].is_string(), "{body}");
    assert!(v["headers"].get("x-strait-peer").is_none(), "{body}");

    let (_, client_metrics) = curl_in(&a, &["http://127.0.0.1:15000/stats/prometheus"]);
    assert!(
        client_metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"source\"")
                && l.contains("destination_workload=\"echo-0\"")
                && l.contains("response_code=\"200\"")),
        "{client_metrics}"
    );
    let (_, echo_metrics) = curl_in(&b, &["http://127.0.0.1:15000/stats/prometheus"]);
    assert!(
        echo_metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("source_workload=\"client-0\"")
                && l.contains("source_cluster=\"cluster1\"")
                && l.contains("destination_workload=\"echo-0\"")
                && l.contains("response_code=\"200\"")),
        "{echo_metrics}"
    );

    // A destination outside the mesh passes through to where the client meant it to go.
    let (status, _) = curl_in(
        &a,
        &[
            "http://10.77.0.2:8080/direct",
            "-H",
            "Host: not-in-the-mesh.example",
        ],
    );
    assert_eq!(
        status,
        200,
        "passthrough to the original destination\n{}",
        logs()
    );

    // gRPC: HTTP/2 end to end, through the client's outbound and the echo pod's inbound.
    let grpc_child = Command::new("ip")
        .args(["netns", "exec", &b])
        .arg(python())
        .arg(repo().join("tests/grpc/backend.py"))
        .args(["grpc-echo", "0.0.0.0:9090"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut grpc_backend = Proc {
        child: grpc_child,
        what: "gRPC echo app".into(),
    };
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(grpc_backend.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let script = repo().join("tests/grpc/client.py");
    let (ok, out, err) = run(
        "ip",
        &[
            "netns",
            "exec",
            &a,
            python().to_str().unwrap(),
            script.to_str().unwrap(),
            "10.77.0.2:9090",
            "--calls",
            "10",
            "--authority",
            "echo.default.svc.cluster.local:9090",
        ],
    );
    assert!(ok, "{out}\n{err}\n{}", logs());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(v["answers"]["grpc-echo"], 10, "{out}\n{}", logs());
    drop(grpc_backend);
    drop(backend);
    drop(pods);
}

/// The manifests of the inbound-policy test: `echo` (ports 8080, 9080 and 8181) whose Sidecar
/// lists ingress ports 8080 and 9080 (the latter handing to the application on 127.0.0.1:18080),
/// a client, and `policies` (PeerAuthentication) appended.
fn listed_ports_mesh(policies: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec: {{ports: [{{name: http, port: 8080}}, {{name: http-remapped, port: 9080}}, {{name: http-admin, port: 8181}}], selector: {{app: echo}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: echo-0, namespace: default, labels: {{app: echo, security.istio.io/tlsMode: istio}}}}
spec: {{serviceAccountName: echo}}
status: {{podIP: 10.79.0.2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client-0, namespace: default, labels: {{app: client, security.istio.io/tlsMode: istio}}}}
spec: {{serviceAccountName: client}}
status: {{podIP: 10.79.0.1}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: echo, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: echo}}}}
  ingress:
  - port: {{number: 8080, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:8080
  - port: {{number: 9080, protocol: HTTP, name: http-remapped}}
    defaultEndpoint: 127.0.0.1:18080
---
{policies}"
    )
}

/// Istio's inbound rules through real capture. A Sidecar listing ingress ports configures only
/// those (9080 handing to the application on another port); the service's other port (8181) and
/// a port no service declares (8282) are passed through to the port they were sent to — and
/// every one of them takes only what PeerAuthentication lets in: under STRICT, a mesh client's
/// mTLS (terminated also on the passed-through port), never plaintext from outside the mesh;
/// under PERMISSIVE with `portLevelMtls` STRICT on 8282, plaintext everywhere but 8282.
#[test]
fn every_inbound_port_takes_only_what_peer_authentication_lets_in_and_listed_ingress_ports_alone_are_configured()
 {
    // The echo pod: all arriving TCP goes to the sidecar but for the sidecar's own 150xx ports.
    let Some(pods) = pods(
        "p",
        79,
        &[
            "-p tcp --dport 15000:15099 -j RETURN",
            "-p tcp -j REDIRECT --to-ports 15006",
        ],
    ) else {
        return;
    };
    let (a, b) = (pods.client.clone(), pods.server.clone());
    let tmp = tempfile::tempdir().unwrap();
    let ca = MeshCa::create(tmp.path());
    let dir = tmp.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    let strict = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
";
    std::fs::write(dir.join("mesh.yaml"), listed_ports_mesh(strict)).unwrap();

    // The applications: each answers with its name.
    let mut apps = Vec::new();
    for (name, listen) in [
        ("listed", "0.0.0.0:8080"),
        ("remapped", "127.0.0.1:18080"),
        ("unlisted", "0.0.0.0:8181"),
        ("undeclared", "0.0.0.0:8282"),
    ] {
        let mut app = Proc {
            child: Command::new("ip")
                .args(["netns", "exec", &b])
                .arg(python())
                .arg(repo().join("tests/http/backend.py"))
                .args([name, listen])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            what: format!("{name} app"),
        };
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(app.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "{name}");
        apps.push(app);
    }
    let mut cp_args = vec![
        "control-plane".to_string(),
        "--cluster".into(),
        "cluster1".into(),
        "--config".into(),
        dir.to_str().unwrap().into(),
        "--xds-listen".into(),
        "0.0.0.0:15010".into(),
        "--debug-listen".into(),
        "127.0.0.1:15014".into(),
        "--secure-listen".into(),
        "0.0.0.0:15012".into(),
    ];
    cp_args.extend(ca.control_plane_args());
    let _cp = spawn_in(&a, &strs(&cp_args), &tmp.path().join("cp.log"));
    let sidecar = |ns: &str, ip: &str, pod: &str, account: &str, labels: &str| {
        let mut args = vec![
            "proxy".to_string(),
            // Certificates and xDS over TLS, on Istio's 15012.
            "--xds".into(),
            "10.79.0.1:15012".into(),
            "--node-id".into(),
            format!("sidecar~{ip}~{pod}.default~default.svc.cluster.local"),
            "--meta".into(),
            "CLUSTER_ID=cluster1".into(),
            "--meta".into(),
            format!("LABELS={labels}"),
            "--mark".into(),
            "1337".into(),
        ];
        args.extend(ca.proxy_args("default", account, "3600"));
        spawn_in(ns, &strs(&args), &tmp.path().join(format!("{pod}.log")))
    };
    let _client_sidecar = sidecar(&a, "10.79.0.1", "client-0", "client", "app=client");
    let _echo_sidecar = sidecar(&b, "10.79.0.2", "echo-0", "echo", "app=echo");
    let logs = || {
        ["cp.log", "client-0.log", "echo-0.log"]
            .iter()
            .map(|f| std::fs::read_to_string(tmp.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    for (ns, pod) in [(&a, "client-0"), (&b, "echo-0")] {
        let start = std::time::Instant::now();
        while curl_in(ns, &["http://127.0.0.1:15000/ready"]).0 != 200
            || !std::fs::read_to_string(tmp.path().join(format!("{pod}.log")))
                .unwrap_or_default()
                .contains("workload certificate issued")
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the sidecar in {ns} is not ready with its certificate after 30 s\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The application's name answering a call, or the status when none did ("000": refused).
    let answer = |(status, body): (u16, String)| -> String {
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["name"].as_str().map(str::to_string))
            .filter(|_| status == 200)
            .unwrap_or_else(|| format!("{status:03}"))
    };
    // A mesh client: captured, through its sidecar (mTLS to the echo sidecar).
    let mesh = |port: u16| {
        answer(curl_in(
            &a,
            &[
                "-H",
                &format!("Host: echo.default.svc.cluster.local:{port}"),
                &format!("http://10.79.0.2:{port}/hello"),
            ],
        ))
    };
    // A client outside the mesh: uid 65534 is not captured, so it sends plaintext straight on.
    let outsider = |port: u16| {
        let url = format!("http://10.79.0.2:{port}/hello");
        let (_, out, _) = run(
            "ip",
            &[
                "netns",
                "exec",
                &a,
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "curl",
                "-s",
                "-m",
                "5",
                "-w",
                "\n%{http_code}",
                &url,
            ],
        );
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        answer((code.trim().parse().unwrap_or(0), body.to_string()))
    };

    // The echo sidecar's metrics, and the HTTP requests it served (as destination).
    let echo_metrics = || curl_in(&b, &["http://127.0.0.1:15000/stats/prometheus"]).1;
    let http_served = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };

    // STRICT. Mesh clients reach the listed ports (9080 remapped to 18080), served as HTTP...
    assert_eq!(mesh(8080), "listed", "{}", logs());
    assert_eq!(mesh(9080), "remapped", "{}", logs());
    assert_eq!(http_served(&echo_metrics()), 2.0, "{}", echo_metrics());
    // ... and the unlisted service port, which is not configured but passed through: the
    // passthrough terminates the client's mTLS and relays the bytes.
    assert_eq!(mesh(8181), "unlisted", "{}", logs());
    let echo_metrics = echo_metrics();
    assert_eq!(
        http_served(&echo_metrics),
        2.0,
        "the unlisted port is not served as HTTP:\n{echo_metrics}"
    );
    assert!(
        echo_metrics.lines().any(|l| {
            l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("connection_security_policy=\"mutual_tls\"")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/default/sa/client\"")
        }),
        "the passed-through connection was the client's mTLS, terminated:\n{echo_metrics}"
    );
    // Plaintext from outside the mesh is refused on every port, listed or not.
    for port in [8080, 9080, 8181, 8282] {
        assert_eq!(
            outsider(port),
            "000",
            "plaintext to port {port} under STRICT\n{}",
            logs()
        );
    }

    // PERMISSIVE, but STRICT on 8282 by the workload's `portLevelMtls`.
    let permissive = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: echo, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  portLevelMtls:
    \"8282\": {mode: STRICT}
";
    std::fs::write(dir.join("mesh.yaml"), listed_ports_mesh(permissive)).unwrap();
    let start = std::time::Instant::now();
    while outsider(8181) != "unlisted" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "PERMISSIVE not applied after 30 s\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(outsider(8080), "listed", "{}", logs());
    assert_eq!(outsider(9080), "remapped", "{}", logs());
    assert_eq!(
        outsider(8282),
        "000",
        "plaintext to the port-level STRICT port"
    );
    assert_eq!(mesh(8181), "unlisted", "mTLS still served: {}", logs());
    drop(apps);
    drop(pods);
}
