//! The Strait proxy end to end with real clients: `strait control-plane` serves a sidecar
//! (`strait proxy`) whose Sidecar egress listener is bound on a loopback address (captureMode
//! NONE), curl, h2load and grpcio call through it to Python backends, and the proxy's admin API
//! and `strait proxy-config` show what happened. Each test has its own 127.1.<n>.0/24 addresses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const HOST: &str = "echo.default.svc.cluster.local";

/// Round robin rather than Istio's default least request, so tests can count.
const ROUND_ROBIN: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
";

/// A Service `echo` (port 8080) with pods at `ips`, and a Sidecar for `app=client` that binds
/// the outbound listener for port 8080 (and 9090, 7000) on `bind`.
fn mesh(dir: &Path, bind: &str, ips: &[&str], extra: &str) {
    let mut docs = vec![format!(
        "apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  ports: [{{name: http, port: 8080}}, {{name: grpc, port: 9090}}, {{name: tcp-echo, port: 7000}}]
  selector: {{app: echo}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: client, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: client}}}}
  egress:
  - port: {{number: 8080, protocol: HTTP, name: http}}
    bind: {bind}
    captureMode: NONE
    hosts: [\"./*\"]
  - port: {{number: 9090, protocol: GRPC, name: grpc}}
    bind: {bind}
    captureMode: NONE
    hosts: [\"./*\"]
  - port: {{number: 7000, protocol: TCP, name: tcp}}
    bind: {bind}
    captureMode: NONE
    hosts: [\"./*\"]
"
    )];
    for (i, ip) in ips.iter().enumerate() {
        docs.push(format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: echo-{i}, namespace: default, labels: {{app: echo, version: v{i}}}}}
spec: {{serviceAccountName: echo}}
status: {{podIP: {ip}}}
"
        ));
    }
    if !extra.is_empty() {
        docs.push(extra.to_string());
    }
    std::fs::write(dir.join("mesh.yaml"), docs.join("---\n")).unwrap();
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    _backends: Vec<Proc>,
    cp: Option<ControlPlane>,
    proxy: StraitProxy,
    bind: String,
}

fn setup(net: u8, backends: &[(&str, Option<u16>)], extra: &str) -> Setup {
    setup_with(net, backends, extra, &[])
}

/// As [`setup`], the proxy started with `proxy_flags` too.
fn setup_with(
    net: u8,
    backends: &[(&str, Option<u16>)],
    extra: &str,
    proxy_flags: &[&str],
) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    let bind = format!("127.1.{net}.100");
    let ips: Vec<String> = (1..=backends.len())
        .map(|i| format!("127.1.{net}.{i}"))
        .collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    mesh(&dir, &bind, &ip_refs, extra);
    let procs: Vec<Proc> = backends
        .iter()
        .zip(&ips)
        .map(|((name, always), ip)| http_backend(name, ip, 8080, *always))
        .collect();
    let cp = ControlPlane::start(&dir, &[]);
    let proxy = StraitProxy::start_with(
        &cp,
        tmp.path(),
        &format!("sidecar~{bind}~client-1.default~default.svc.cluster.local"),
        "client-1",
        "app=client,version=v1",
        proxy_flags,
    );
    Setup {
        dir: dir.clone(),
        _tmp: tmp,
        _backends: procs,
        cp: Some(cp),
        proxy,
        bind,
    }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://{}:8080{path}", self.bind)
    }

    fn get(&self, path: &str, extra: &[&str]) -> (u16, String) {
        let url = self.url(path);
        let host = format!("Host: {HOST}");
        let mut args = vec!["-H", host.as_str()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    fn name_of(body: &str) -> String {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["name"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// gRPC calls by h2load (`args`: its connection and request counts) to port 9090, each
    /// posting an empty message: its counts as [`h2load`]'s.
    fn grpc_calls(&self, args: &[&str]) -> ([u64; 4], u64, String) {
        self.grpc_calls_to("/strait.test.Nothing/Call", args)
    }

    /// [`Setup::grpc_calls`] to `method` (`/<service>/<method>`).
    fn grpc_calls_to(&self, method: &str, args: &[&str]) -> ([u64; 4], u64, String) {
        let empty_message = self.dir.join("empty-grpc-message");
        std::fs::write(&empty_message, [0u8; 5]).unwrap();
        let authority = format!(":authority: {HOST}:9090");
        let url = format!("http://{}:9090{method}", self.bind);
        let mut all = args.to_vec();
        all.extend_from_slice(&[
            "-d",
            empty_message.to_str().unwrap(),
            "-H",
            "content-type: application/grpc",
            // gRPC servers refuse a call without it.
            "-H",
            "te: trailers",
            "-H",
            &authority,
            &url,
        ]);
        h2load(&all)
    }

    /// Applies a new version of the extra configuration and waits until the proxy has it.
    /// Replaces the VirtualService and DestinationRule documents with `extra` and waits until
    /// the proxy's configuration dump contains `marker`.
    fn reconfigure(&self, extra: &str, marker: &str) {
        let mesh_yaml = std::fs::read_to_string(self.dir.join("mesh.yaml")).unwrap();
        let base: Vec<&str> = mesh_yaml.split("---\n").collect();
        let keep: Vec<&str> = base
            .into_iter()
            .filter(|d| !d.contains("kind: VirtualService") && !d.contains("kind: DestinationRule"))
            .collect();
        let mut docs: Vec<String> = keep.into_iter().map(str::to_string).collect();
        docs.push(extra.to_string());
        std::fs::write(self.dir.join("mesh.yaml"), docs.join("---\n")).unwrap();
        wait_for(
            Duration::from_secs(20),
            "the proxy to take the new configuration",
            || {
                self.proxy
                    .admin("/config_dump")
                    .contains(marker)
                    .then_some(())
            },
        );
    }
}

#[test]
fn http1_and_http2_requests_are_balanced_over_endpoints_and_reported_with_istio_labels() {
    let s = setup(1, &[("a", None), ("b", None)], ROUND_ROBIN);
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..10 {
        let (status, body) = s.get("/hello", &[]);
        assert_eq!(status, 200, "{body}\n{}", s.proxy.log());
        *seen.entry(Setup::name_of(&body)).or_default() += 1;
    }
    for _ in 0..10 {
        let (status, body) = s.get("/h2", &["--http2-prior-knowledge"]);
        assert_eq!(status, 200, "{body}");
        *seen.entry(Setup::name_of(&body)).or_default() += 1;
    }
    // Round robin: exactly half each.
    let hosts: Vec<String> = s
        .proxy
        .access_log()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["upstream_host"].to_string())
        .collect();
    assert_eq!(seen.get("a"), Some(&10), "{seen:?} {hosts:?}");
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");

    // What the backend received: the peer header, trace context, the request ID.
    let (_, body) = s.get(
        "/headers",
        &[
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let tp = v["headers"]["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "a new span for this hop: {tp}"
    );
    assert!(v["headers"]["x-request-id"].is_string());
    assert_eq!(
        v["headers"]["x-strait-peer"],
        "client-1;default;cluster1;client;v1"
    );

    // Istio's metrics, with both clusters known.
    let metrics = s.proxy.admin("/stats/prometheus");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap_or_else(|| panic!("no istio_requests_total line:\n{metrics}"));
    for label in [
        "reporter=\"source\"",
        "source_workload=\"client-1\"",
        "source_cluster=\"cluster1\"",
        "destination_cluster=\"cluster1\"",
        "destination_service=\"echo.default.svc.cluster.local\"",
        "destination_workload_namespace=\"default\"",
        "response_flags=\"-\"",
    ] {
        assert!(line.contains(label), "{label} missing in {line}");
    }
    assert!(metrics.contains("istio_request_duration_milliseconds_bucket{"));
    assert!(metrics.contains("istio_response_bytes_sum{"));

    // A client expecting `100 Continue` before its body gets it from the proxy at once (Envoy's
    // default), over HTTP/2 as over HTTP/1.1 (hyper's); the backend sees no `expect`.
    for args in [&["--http1.1"][..], &["--http2-prior-knowledge"][..]] {
        let out = std::process::Command::new("curl")
            .args(["-sv", "-m", "10", "-H", &format!("Host: {HOST}")])
            .args(["-H", "Expect: 100-continue", "-d", "hello"])
            .args(args)
            .arg(s.url("/expect"))
            .output()
            .unwrap();
        let (body, trace) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            trace.contains("< HTTP/1.1 100") || trace.contains("< HTTP/2 100"),
            "{args:?}: {trace}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
        assert_eq!(v["body_bytes"], 5, "{body}");
        if args == ["--http2-prior-knowledge"] {
            assert!(v["headers"].get("expect").is_none(), "{body}");
        }
    }

    // A 20 KiB header (a large cookie or token) passes over HTTP/2 as over HTTP/1.1: within
    // Envoy's 60 KiB.
    let big = format!("x-big: {}", "t".repeat(20 * 1024));
    for args in [
        &["-H", &big][..],
        &["-H", &big, "--http2-prior-knowledge"][..],
    ] {
        let (status, body) = s.get("/big", args);
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["headers"]["x-big"].as_str().map(str::len),
            Some(20 * 1024)
        );
    }

    // Bodiless answers (204, and to HEAD) are whole, not downstream disconnects (`DC`), over
    // either protocol.
    for args in [&[][..], &["--http2-prior-knowledge"][..]] {
        let (status, body) = s.get("/status/204", args);
        assert_eq!(status, 204, "{args:?}: {body}");
        // A 204 that says it has a length is passed on without it (HTTP/2 clients would
        // refuse the stream as malformed).
        let (status, body) = s.get("/status/204?length", args);
        assert_eq!(status, 204, "{args:?}: {body}");
    }
    let head = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I"])
        .args(["-H", &format!("Host: {HOST}"), &s.url("/status/205")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout), "205");
    let metrics = s.proxy.admin("/stats/prometheus");
    let bodiless: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{")
                && (l.contains("response_code=\"204\"") || l.contains("response_code=\"205\""))
        })
        .collect();
    for code in ["204", "205"] {
        let code = format!("response_code=\"{code}\"");
        assert!(bodiless.iter().any(|l| l.contains(&code)), "{metrics}");
    }
    for line in bodiless {
        assert!(line.contains("response_flags=\"-\""), "{line}");
    }

    // The access log has a JSON line per request.
    let log = wait_for(Duration::from_secs(5), "access log lines", || {
        let l = s.proxy.access_log();
        (l.lines().count() >= 28).then_some(l)
    });
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["response_code"], 200);
    assert_eq!(
        first["upstream_cluster"],
        "outbound|8080||echo.default.svc.cluster.local"
    );
    assert_eq!(first["destination_cluster"], "cluster1");
    assert_eq!(first["source_cluster"], "cluster1");
}

#[test]
fn proxy_config_shows_listeners_routes_clusters_and_endpoints() {
    let s = setup(2, &[("a", None)], "");
    let admin = format!("127.0.0.1:{}", s.proxy.admin_port);
    let show = |what: &str| {
        let (ok, out, err) = run(
            env!("CARGO_BIN_EXE_strait"),
            &["proxy-config", what, "--admin", &admin],
        );
        assert!(ok, "{err}");
        out
    };
    let listeners = show("listeners");
    assert!(
        listeners.contains(&format!("{}_8080", s.bind)),
        "{listeners}"
    );
    assert!(listeners.contains("Route: 8080"), "{listeners}");
    let routes = show("routes");
    assert!(
        routes.contains("echo.default.svc.cluster.local"),
        "{routes}"
    );
    let clusters = show("clusters");
    assert!(
        clusters
            .lines()
            .any(|l| l.starts_with("echo.default.svc.cluster.local")
                && l.contains("8080")
                && l.contains("outbound")),
        "{clusters}"
    );
    let endpoints = show("endpoints");
    assert!(
        endpoints
            .lines()
            .any(|l| l.contains("127.1.2.1:8080") && l.contains("HEALTHY") && l.contains("OK")),
        "{endpoints}"
    );
    // The log level changes at run time, and a bad one is refused with the reason.
    let (status, body) = curl(&["-X", "POST", &format!("http://{admin}/logging?level=debug")]);
    assert_eq!((status, body.trim()), (200, "log level: debug"));
    let (status, body) = curl(&[
        "-X",
        "POST",
        &format!("http://{admin}/logging?level=strait=loud"),
    ]);
    assert_eq!(status, 400, "{body}");
    let (ok, json, _) = run(
        env!("CARGO_BIN_EXE_strait"),
        &["proxy-config", "clusters", "--admin", &admin, "-o", "json"],
    );
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "outbound|8080||echo.default.svc.cluster.local")
    );
}

#[test]
fn retries_turn_503s_into_successes_and_timeouts_fire() {
    let vs = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - match: [{headers: {x-no-retry: {exact: \"1\"}}}]
    route: [{destination: {host: echo}}]
    retries: {attempts: 0}
  - match: [{headers: {x-slow: {exact: \"1\"}}}]
    route: [{destination: {host: echo}}]
    timeout: 300ms
  - route: [{destination: {host: echo}}]
    retries: {attempts: 3, retryOn: 5xx}
";
    let s = setup(
        3,
        &[("a", None), ("b", None)],
        &format!("{vs}---\n{ROUND_ROBIN}"),
    );
    // Each backend fails its first request on a path: without retries the caller sees 503.
    let (status, _) = s.get("/flaky/1?control", &["-H", "x-no-retry: 1"]);
    assert_eq!(status, 503);
    // With retries the same failures are hidden: a 503 from each backend, then a 200.
    let (status, body) = s.get("/flaky/1?retried", &[]);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["x-envoy-attempt-count"], "3", "{body}");
    // Four tries are not enough for a path that fails twice on each backend: 503, flagged URX.
    let (status, _) = s.get("/flaky/2?exhausted", &[]);
    assert_eq!(status, 503);
    assert_eq!(requests_flagged(&s.proxy, "URX"), 1);

    // The route timeout fires (504, UT) long before the backend answers.
    let start = Instant::now();
    let (status, body) = s.get("/delay/3000", &["-H", "x-slow: 1"]);
    let took = start.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body, "upstream request timeout");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let metrics = s.proxy.admin("/stats/prometheus");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("response_code=\"504\"")
                && l.contains("response_flags=\"UT\"")),
        "{metrics}"
    );
}

/// `n` HTTP/1.1 requests to `url` (naming the echo service) over `connections` connections, by
/// [`h2load`].
fn h1_requests(url: &str, n: u32, connections: u32) -> ([u64; 4], u64, String) {
    let (n, connections) = (n.to_string(), connections.to_string());
    let authority = format!(":authority: {HOST}");
    h2load(&["--h1", "-n", &n, "-c", &connections, "-H", &authority, url])
}

/// A DestinationRule for echo: one connection, `max_pending` requests waiting for it.
fn one_connection_rule(max_pending: u32) -> String {
    pool_rule(&format!(
        "{{tcp: {{maxConnections: 1}}, http: {{http1MaxPendingRequests: {max_pending}}}}}"
    ))
}

/// A DestinationRule for `echo` with this `connectionPool` (flow-style YAML).
fn pool_rule(connection_pool: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: echo
  trafficPolicy:
    connectionPool: {connection_pool}
"
    )
}

#[test]
fn a_failing_backend_is_ejected_and_shown_failed_in_clusters() {
    let dr = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}
";
    let s = setup(4, &[("good", None), ("bad", Some(500))], dr);
    let mut failures = 0;
    for _ in 0..20 {
        let (status, _) = s.get("/", &[]);
        if status == 500 {
            failures += 1;
        }
    }
    // Three 500s in a row eject the bad host; nothing reaches it after that.
    assert_eq!(failures, 3);
    let clusters = s.proxy.admin("/clusters");
    assert!(
        clusters.contains("outbound|8080||echo.default.svc.cluster.local::127.1.4.2:8080::health_flags::/failed_outlier_check"),
        "{clusters}"
    );
    assert!(
        clusters.contains(
            "outbound|8080||echo.default.svc.cluster.local::127.1.4.1:8080::health_flags::healthy"
        ),
        "{clusters}"
    );
    let admin = format!("127.0.0.1:{}", s.proxy.admin_port);
    let (_, endpoints, _) = run(
        env!("CARGO_BIN_EXE_strait"),
        &["proxy-config", "endpoints", "--admin", &admin],
    );
    assert!(
        endpoints
            .lines()
            .any(|l| l.contains("127.1.4.2:8080") && l.contains("FAILED")),
        "{endpoints}"
    );
    let stats = s.proxy.admin("/stats/prometheus");
    assert!(
        stats.contains("envoy_cluster_outlier_detection_ejections_total{cluster_name=\"outbound|8080||echo.default.svc.cluster.local\"} 1"),
        "{stats}"
    );
}

#[test]
fn pool_overflow_answers_503_with_the_overflow_flag() {
    let s = setup(5, &[("a", None)], &one_connection_rule(1));
    // Ten clients at once against one connection and one pending slot.
    let url = s.url("/delay/200");
    let (codes, _, out) = h1_requests(&url, 20, 10);
    assert!(codes[0] >= 2, "some requests are served: {out}");
    assert!(codes[3] >= 5, "most overflow: {out}");
    let metrics = s.proxy.admin("/stats/prometheus");
    let overflowed: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("response_flags=\"UO\"")
                && l.contains("response_code=\"503\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(overflowed, codes[3], "every 503 is an overflow, flagged UO");
}

/// Requests beyond `maxConnections` wait in the pending queue and are served, one after the
/// other, as the connection comes back — none is refused while the queue has room.
#[test]
fn queued_requests_are_served_as_the_connection_frees_up() {
    let s = setup(32, &[("a", None)], &one_connection_rule(100));
    let url = s.url("/delay/20");
    let (codes, failed, out) = h1_requests(&url, 40, 8);
    assert_eq!(
        (codes[0], failed),
        (40, 0),
        "every queued request is served: {out}"
    );
}

#[test]
fn fault_injection_aborts_and_delays_the_configured_share() {
    let vs = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - match: [{headers: {x-delay: {exact: \"1\"}}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    route: [{destination: {host: echo}}]
  - fault: {abort: {httpStatus: 418, percentage: {value: 30}}}
    route: [{destination: {host: echo}}]
";
    let s = setup(6, &[("a", None)], vs);
    let url = s.url("/");
    let (codes, failed, out) = h1_requests(&url, 2000, 4);
    // h2load counts 4xx answers as failed; nothing else may fail.
    assert_eq!(failed, codes[2], "{out}");
    assert_eq!(codes[0] + codes[2], 2000, "{out}");
    let aborted = codes[2] as f64 / 2000.0;
    // 30 % ± 3 points (binomial σ ≈ 1 point over 2000 requests).
    assert!((aborted - 0.30).abs() < 0.03, "{aborted} aborted: {out}");
    let start = Instant::now();
    let (status, _) = s.get("/", &["-H", "x-delay: 1"]);
    assert_eq!(status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
    let metrics = s.proxy.admin("/stats/prometheus");
    assert!(metrics.contains("response_flags=\"FI\""), "{metrics}");
    assert!(metrics.contains("response_flags=\"DI\""), "{metrics}");
}

#[test]
fn grpc_calls_and_tcp_bytes_pass_through() {
    let s = setup(7, &[("a", None)], "");
    let _grpc = backend("grpc-a", "127.1.7.1", 9090);

    // A burst of streams on two connections (one per worker) before any upstream connection
    // exists: each worker opens one HTTP/2 connection and its other streams wait for it.
    let (codes, failed, out) = s.grpc_calls(&["-c", "2", "-m", "32", "-n", "64"]);
    assert_eq!((codes[0], failed), (64, 0), "{out}");
    let stats = s.proxy.admin("/stats/prometheus");
    let opened = stats
        .lines()
        .find(|l| l.starts_with("envoy_cluster_upstream_cx_total{") && l.contains("|9090|"))
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(
        opened.ends_with(" 2"),
        "one connection per worker: {opened}"
    );
    // gRPC (HTTP/2 to the upstream, trailers and status carried back).
    let out = client_plain(
        &format!("{}:9090", s.bind),
        &["--calls", "20", "--authority", &format!("{HOST}:9090")],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(v["answers"]["grpc-a"], 20, "{out}\n{}", s.proxy.log());
    let metrics = s.proxy.admin("/stats/prometheus");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("request_protocol=\"grpc\"")
                && l.contains("grpc_response_status=\"0\"")),
        "{metrics}"
    );

    // Opaque TCP: an echo server behind the proxy.
    tcp_echo("127.1.7.1:7000");
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect((s.bind.as_str(), 7000)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"hello through the mesh").unwrap();
        let mut buf = [0u8; 22];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello through the mesh");
    }
    let metrics = wait_for(Duration::from_secs(5), "TCP metrics", || {
        let m = s.proxy.admin("/stats/prometheus");
        m.contains("istio_tcp_connections_closed_total{")
            .then_some(m)
    });
    let sent = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_tcp_received_bytes_total{")
                && l.contains("destination_cluster=\"cluster1\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(sent.ends_with(" 22"), "{sent}");
}

#[test]
fn a_config_push_during_30s_of_load_fails_no_request() {
    let s = setup(8, &[("a", None), ("b", None), ("c", None)], ROUND_ROBIN);
    let url = s.url("/");
    let host = format!(":authority: {HOST}");
    let load = std::thread::scope(|scope| {
        let load = scope.spawn(|| h2load(&["--h1", "-c", "4", "-D", "30", "-H", &host, &url]));
        // Every 3 s, a new version: weights between subsets, then an endpoint less, then back.
        for round in 0..8 {
            std::thread::sleep(Duration::from_secs(3));
            let weight = 10 + round * 10;
            let vs = format!(
                "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo]
  http:
  - route:
    - {{destination: {{host: echo}}, weight: {weight}}}
    - {{destination: {{host: echo}}, weight: {}, headers: {{request: {{set: {{x-round: \"round-{round}\"}}}}}}}}
---
{ROUND_ROBIN}",
                100 - weight
            );
            s.reconfigure(&vs, &format!("round-{round}"));
        }
        load.join().unwrap()
    });
    let (codes, failed, out) = load;
    assert!(codes[0] > 1000, "{out}");
    assert_eq!(
        (codes[1], codes[2], codes[3], failed),
        (0, 0, 0, 0),
        "{out}"
    );
}

#[test]
fn a_rejected_cluster_is_nacked_with_its_reason_and_the_proxy_outlives_its_control_plane() {
    let s = setup(9, &[("a", None)], ROUND_ROBIN);
    let (status, _) = s.get("/", &[]);
    assert_eq!(status, 200);
    // TLS origination whose CA file does not exist cannot be honoured: the cluster is NACKed,
    // the proxy keeps the last good one, and a route change in the same push still applies.
    s.reconfigure(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo
  trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /nonexistent/strait-test/ca.pem}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - route: [{destination: {host: echo}}]
    headers: {response: {set: {x-version: two}}}
",
        "x-version",
    );
    let dump: serde_json::Value = serde_json::from_str(&s.proxy.admin("/config_dump")).unwrap();
    let reason = dump["rejected"]["CDS"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("outbound|8080||echo.default.svc.cluster.local")
            && reason
                .contains("tls.caCertificates /nonexistent/strait-test/ca.pem: cannot read it"),
        "{dump}"
    );
    let (status, _) = s.get("/", &[]);
    assert_eq!(status, 200, "the last good cluster still serves");
    let (_, headers) = curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        &format!("Host: {HOST}"),
        &s.url("/"),
    ]);
    assert!(
        headers.to_ascii_lowercase().contains("x-version: two"),
        "{headers}"
    );
    // The control plane shows the proxy's reason.
    let cp = s.cp.as_ref().unwrap();
    let syncz = wait_for(Duration::from_secs(10), "the NACK in syncz", || {
        let z = cp.get("/debug/syncz");
        z.contains("tls.caCertificates").then_some(z)
    });
    assert!(syncz.contains("sidecar~127.1.9.100~client-1"), "{syncz}");

    // The control plane goes away: the proxy keeps serving what it has.
    let (xds_port, debug_port) = (cp.xds_port, cp.debug_port);
    let mut s = s;
    drop(s.cp.take());
    for _ in 0..10 {
        let (status, _) = s.get("/", &[]);
        assert_eq!(status, 200);
    }
    let dump: serde_json::Value = serde_json::from_str(&s.proxy.admin("/config_dump")).unwrap();
    assert_eq!(dump["xds"]["connected"], false);
    // It comes back, and the proxy reconnects by itself.
    s.cp = Some(ControlPlane::start_on(&s.dir, xds_port, debug_port, &[]));
    wait_for(Duration::from_secs(30), "the proxy to reconnect", || {
        let dump: serde_json::Value = serde_json::from_str(&s.proxy.admin("/config_dump")).ok()?;
        (dump["xds"]["connected"] == true).then_some(())
    });
    let (status, _) = s.get("/", &[]);
    assert_eq!(status, 200);
}

#[test]
fn websocket_upgrades_are_spliced_through() {
    use std::io::{BufRead, BufReader, Read, Write};
    let s = setup(10, &[("a", None)], "");
    let mut c = std::net::TcpStream::connect((s.bind.as_str(), 8080)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(c.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "{head}\n{}",
        s.proxy.log()
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // Frames (here: any bytes) flow both ways over the spliced connection.
    for msg in [&b"\x81\x05hello"[..], &b"\x81\x05again"[..]] {
        c.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        reader.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn routes_redirect_answer_rewrite_match_mirror_and_edit_headers() {
    let config = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo
  subsets: [{name: a, labels: {version: v0}}, {name: b, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - match: [{uri: {prefix: /v1/}}]
    rewrite: {uri: /}
    route: [{destination: {host: echo, subset: b}}]
  - match: [{uri: {prefix: /re/}}]
    rewrite: {uriRegexRewrite: {match: \"^/re/(.*)$\", rewrite: \"/rewritten/\\\\1\"}}
    route: [{destination: {host: echo, subset: b}}]
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: echo, subset: b}}]
  - match: [{queryParams: {v: {exact: b}}}]
    route: [{destination: {host: echo, subset: b}}]
  - route: [{destination: {host: echo, subset: a}}]
    mirror: {host: echo, subset: b}
    mirrorPercentage: {value: 100}
    headers:
      request: {set: {x-req-set: \"yes\"}, add: {x-req-add: added}, remove: [x-remove-me]}
      response: {set: {x-resp: set}}
";
    let s = setup(11, &[("a", None), ("b", None)], config);
    let field = |body: &str, key: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(body).unwrap_or_default()[key].clone()
    };
    // Redirect.
    let (_, head) = curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        &format!("Host: {HOST}"),
        &s.url("/old/page"),
    ]);
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("location: http://{HOST}/new")),
        "{head}"
    );
    // Direct response.
    let (status, body) = s.get("/teapot", &[]);
    assert_eq!((status, body.as_str()), (418, "short and stout"));
    // Prefix and regex rewrites, to subset b.
    let (_, body) = s.get("/v1/items?x=1", &[]);
    assert_eq!(field(&body, "path"), "/items?x=1", "{body}");
    assert_eq!(field(&body, "name"), "b");
    let (_, body) = s.get("/re/abc", &[]);
    assert_eq!(field(&body, "path"), "/rewritten/abc", "{body}");
    // Header and query matches.
    for _ in 0..4 {
        let (_, body) = s.get("/", &["-H", "end-user: jason"]);
        assert_eq!(field(&body, "name"), "b");
        let (_, body) = s.get("/?v=b", &[]);
        assert_eq!(field(&body, "name"), "b");
    }
    // The default route: subset a, headers edited both ways, mirrored to b.
    let (_, head_and_body) = curl(&[
        "-D",
        "-",
        "-H",
        &format!("Host: {HOST}"),
        "-H",
        "x-remove-me: 1",
        &s.url("/mirror-check"),
    ]);
    assert!(
        head_and_body.to_ascii_lowercase().contains("x-resp: set"),
        "{head_and_body}"
    );
    let body = head_and_body.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(field(body, "name"), "a");
    let headers = field(body, "headers");
    assert_eq!(headers["x-req-set"], "yes", "{body}");
    assert_eq!(headers["x-req-add"], "added", "{body}");
    assert!(headers.get("x-remove-me").is_none(), "{body}");
    // b saw the mirrored request (asked directly, its count for the path is then 2).
    let b = wait_for(Duration::from_secs(5), "the mirrored request", || {
        let (_, body) = curl(&["http://127.1.11.2:8080/mirror-check"]);
        let count = field(&body, "count").as_u64()?;
        (count >= 2).then_some(count)
    });
    assert_eq!(b, 2, "exactly one mirrored request");
}

#[test]
fn a_router_serves_an_ingress_gateway_with_its_virtual_services() {
    let port = free_port();
    let gateway = format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: [\"echo.example.com\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo-ingress, namespace: default}}
spec:
  hosts: [echo.example.com]
  gateways: [istio-system/ingress]
  http:
  - match: [{{uri: {{prefix: /api}}}}]
    route: [{{destination: {{host: echo.default.svc.cluster.local, port: {{number: 8080}}}}}}]
"
    );
    let s = setup(12, &[("a", None)], &gateway);
    let router = StraitProxy::start_node(
        s.cp.as_ref().unwrap(),
        s.dir.parent().unwrap(),
        "router~127.1.12.200~ingress-0.istio-system~istio-system.svc.cluster.local",
        "ingress-0",
        "istio=ingressgateway",
    );
    let url = format!("http://127.0.0.1:{port}/api/x");
    let (status, body) = curl(&["-H", "Host: echo.example.com", &url]);
    assert_eq!(status, 200, "{body}\n{}", router.log());
    assert_eq!(Setup::name_of(&body), "a");
    // Hosts and paths the gateway does not route are not found.
    let (status, _) = curl(&["-H", "Host: other.example.com", &url]);
    assert_eq!(status, 404);
    let (status, _) = curl(&[
        "-H",
        "Host: echo.example.com",
        &format!("http://127.0.0.1:{port}/else"),
    ]);
    assert_eq!(status, 404);
}

#[test]
fn a_service_entry_resolved_by_dns_is_reached_at_the_names_address() {
    // `localhost` resolves (from /etc/hosts, no network) to 127.0.0.1, where this backend is.
    let port = free_port();
    let _backend = http_backend("by-dns", "127.0.0.1", port, None);
    let extra = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns-echo, namespace: default}}
spec:
  hosts: [dns-echo.example]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: DNS
  location: MESH_EXTERNAL
  endpoints: [{{address: localhost, ports: {{http: {port}}}}}]
"
    );
    let s = setup(31, &[("echo-0", None)], &extra);
    let url = s.url("/");
    let (code, body) = wait_for(
        Duration::from_secs(20),
        "dns-echo.example to answer",
        || {
            let r = curl(&["-H", "Host: dns-echo.example", &url]);
            (r.0 == 200).then_some(r)
        },
    );
    assert_eq!((code, Setup::name_of(&body)), (200, "by-dns".to_string()));
    let clusters = s.proxy.admin("/clusters");
    assert!(
        clusters.contains(&format!(
            "outbound|8080||dns-echo.example::127.0.0.1:{port}"
        )),
        "{clusters}"
    );
}

#[test]
fn connections_are_spread_over_the_workers_and_served_where_they_land() {
    let s = setup(33, &[("a", None)], "");
    let served = || -> Vec<u64> {
        let metrics = s.proxy.admin("/stats/prometheus");
        let mut per_worker: Vec<(String, u64)> = metrics
            .lines()
            .filter_map(|l| l.strip_prefix("strait_worker_connections_active{worker=\""))
            .filter_map(|l| {
                let (worker, value) = l.split_once("\"} ")?;
                Some((worker.to_string(), value.trim().parse().ok()?))
            })
            .collect();
        per_worker.sort();
        per_worker.into_iter().map(|(_, n)| n).collect()
    };
    // The proxy runs Istio's default two workers. A burst of connections (a client's pool
    // opening) is accepted by whichever worker wakes first, often all of it by one: each is
    // handed to the worker serving fewer.
    let mut open: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(format!("{}:8080", s.bind)).unwrap())
        .collect();
    let counted = wait_for(
        Duration::from_secs(10),
        "the connections to be counted",
        || {
            let n = served();
            (n.iter().sum::<u64>() == 8).then_some(n)
        },
    );
    // Two workers accepting at the same moment may each count before seeing the other's.
    assert!(
        counted.len() == 2 && counted.iter().all(|n| (3..=5).contains(n)),
        "{counted:?}"
    );
    // Each is served, whichever worker it was handed to.
    for c in &mut open {
        use std::io::{Read, Write};
        write!(
            c,
            "GET /hello HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    wait_for(
        Duration::from_secs(10),
        "closed connections to be uncounted",
        || (served() == [0, 0]).then_some(()),
    );
}

#[test]
fn batch_worker_scheduling_puts_the_workers_and_only_them_under_sched_batch() {
    let s = setup_with(39, &[("a", None)], "", &["--worker-scheduling", "batch"]);
    let (status, body) = curl(&["-H", &format!("Host: {HOST}"), &s.url("/hello")]);
    assert_eq!(status, 200, "{body}");
    // Each thread's name and scheduling policy (field 41 of its stat; 0 SCHED_OTHER, 3
    // SCHED_BATCH).
    let task = format!("/proc/{}/task", s.proxy.proc.child.id());
    let mut threads: Vec<(String, String)> = std::fs::read_dir(&task)
        .unwrap()
        .map(|t| {
            let t = t.unwrap().path();
            let name = std::fs::read_to_string(t.join("comm")).unwrap();
            let stat = std::fs::read_to_string(t.join("stat")).unwrap();
            let after_name = stat.rsplit_once(')').unwrap().1;
            let policy = after_name.split_whitespace().nth(41 - 3).unwrap();
            (name.trim().to_string(), policy.to_string())
        })
        .collect();
    threads.sort();
    let workers: Vec<_> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("strait-worker-"))
        .collect();
    assert_eq!(workers.len(), 2, "{threads:?}");
    assert!(workers.iter().all(|(_, p)| p == "3"), "{threads:?}");
    // The main thread (xDS, admin, certificates) keeps the policy it started with.
    let main = threads.iter().find(|(name, _)| name == "strait").unwrap();
    assert_eq!(main.1, "0", "{threads:?}");
}

/// A TCP echo server on `addr` for one connection.
fn tcp_echo(addr: &str) {
    use std::io::{Read, Write};
    let echo = std::net::TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = echo.accept() {
            let mut buf = [0u8; 1024];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 || c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
}

/// One HTTP/1.1 keep-alive request on `c`; the response's status line.
fn request_on(c: &mut std::net::TcpStream, path: &str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    write!(c, "GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(c);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    assert!(reader.buffer().is_empty(), "nothing past the response");
    status.trim_end().to_string()
}

/// Blocks until the peer closes `c`; how long that took.
fn closed_after(c: &mut std::net::TcpStream) -> Duration {
    use std::io::Read;
    let since = Instant::now();
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => since.elapsed(),
        other => panic!("expected the proxy to close the connection, got {other:?}"),
    }
}

/// A host that recycles its HTTP/2 connections (gRPC's `max_connection_age`: a graceful GOAWAY,
/// then the close) fails no request through the proxy: the streams it did not take are retried
/// on a new connection (Istio's default `retryOn` has `refused-stream`), the ones it took finish.
#[test]
fn a_host_recycling_its_http2_connections_fails_no_request() {
    let s = setup(38, &[("a", None)], "");
    let _grpc = backend_aged("grpc-a", "127.1.38.1", 9090, 300);
    // A count, not a duration: h2load stops a timed run with calls in flight, which the
    // proxy then sees finish (or cut off) but h2load does not count.
    let (codes, failed, out) = s.grpc_calls_to(
        "/strait.test.Echo/Name",
        &["-c", "2", "-n", "600", "--rps", "100"],
    );
    assert_eq!(failed, 0, "{out}\n{}", s.proxy.log());
    assert_eq!(codes[0], 600, "{out}\n{}", s.proxy.log());
    // Every call answered by the host (gRPC status 0), none by the proxy.
    let metrics = s.proxy.admin("/stats/prometheus");
    let calls: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{") && l.contains("request_protocol=\"grpc\"")
        })
        .collect();
    let answered: u64 = calls
        .iter()
        .filter(|l| l.contains("grpc_response_status=\"0\"") && l.contains("response_flags=\"-\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(answered, codes[0], "{}", calls.join("\n"));
    let opened = cluster_counter(&s.proxy, "envoy_cluster_upstream_cx_total", "|9090|");
    assert!(opened >= 4, "connections recycled: {opened} opened");
}

/// Opens HTTP/2 on `c` (prior knowledge) and sends no request, answering the server's
/// SETTINGS and PINGs as a client would, until the server closes it: whether a GOAWAY came
/// first, and how long the connection lasted.
fn http2_idle_until_closed(c: &mut std::net::TcpStream) -> (bool, Duration) {
    use std::io::{Read, Write};
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    const ACK: u8 = 1;
    let since = Instant::now();
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    c.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]).unwrap();
    let mut goaway = false;
    // Frames until the close (a bounded number: an idle connection sees a handful).
    for _ in 0..100 {
        let mut head = [0u8; 9];
        if c.read_exact(&mut head).is_err() {
            return (goaway, since.elapsed());
        }
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; length];
        c.read_exact(&mut payload).unwrap();
        match (head[3], head[4] & ACK) {
            (SETTINGS, 0) => c.write_all(&[0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0]).unwrap(),
            (PING, 0) => {
                c.write_all(&[0, 0, 8, PING, ACK, 0, 0, 0, 0]).unwrap();
                c.write_all(&payload).unwrap();
            }
            (GOAWAY, _) => goaway = true,
            _ => {}
        }
    }
    panic!("the proxy kept sending frames on an idle HTTP/2 connection");
}

#[test]
fn idle_connections_are_closed_after_the_nodes_idle_timeout_and_busy_ones_are_not() {
    use std::io::{Read, Write};
    // Istio's `ISTIO_META_IDLE_TIMEOUT`: the control plane sets it on the node's listeners.
    let s = setup_with(34, &[("a", None)], "", &["--meta", "IDLE_TIMEOUT=1s"]);
    let listeners = strait(&[
        "proxy-config",
        "listeners",
        "--admin",
        &format!("127.0.0.1:{}", s.proxy.admin_port),
        "-o",
        "json",
    ]);
    assert!(
        listeners.contains("\"idle_timeout_ms\": 1000"),
        "{listeners}"
    );

    // HTTP/1.1: a request slower than the timeout is not cut; a keep-alive connection used
    // every 400 ms stays; once unused for the timeout, the proxy closes it.
    let mut c = std::net::TcpStream::connect((s.bind.as_str(), 8080)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(request_on(&mut c, "/delay/1500"), "HTTP/1.1 200 OK");
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(request_on(&mut c, "/hello"), "HTTP/1.1 200 OK");
    }
    let waited = closed_after(&mut c);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed {waited:?} after the last response"
    );

    // TCP: bytes moving both ways keep the connection; none for the timeout close it.
    tcp_echo("127.1.34.1:7000");
    let mut t = std::net::TcpStream::connect((s.bind.as_str(), 7000)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..4 {
        t.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        t.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        std::thread::sleep(Duration::from_millis(400));
    }
    let waited = closed_after(&mut t);
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "closed {waited:?} after the last bytes"
    );
    // HTTP/2: an idle connection is sent a GOAWAY and closed.
    let mut h2 = std::net::TcpStream::connect((s.bind.as_str(), 8080)).unwrap();
    h2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (goaway, waited) = http2_idle_until_closed(&mut h2);
    assert!(goaway, "a GOAWAY before the close");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed {waited:?} after the connection opened"
    );
    // A connection that never sends a byte is closed too.
    let mut silent = std::net::TcpStream::connect((s.bind.as_str(), 8080)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let waited = closed_after(&mut silent);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed {waited:?} after the connection opened"
    );
    let metrics = wait_for(Duration::from_secs(5), "the idle timeouts counted", || {
        let m = s.proxy.admin("/stats/prometheus");
        (m.contains("strait_idle_timeouts_total{protocol=\"http\"} 3")
            && m.contains("strait_idle_timeouts_total{protocol=\"tcp\"} 1"))
        .then_some(m)
    });
    assert!(
        metrics.contains("istio_tcp_received_bytes_total{"),
        "{metrics}"
    );
}

/// A cluster's counter from the proxy's Envoy-style stats (`|8080|` or `|9090|` picks the port).
fn cluster_counter(proxy: &StraitProxy, family: &str, port: &str) -> u64 {
    let stats = proxy.admin("/stats/prometheus");
    stats
        .lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(port))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {family} for {port}:\n{stats}"))
}

#[test]
fn upstream_connections_idle_for_the_destination_rules_idle_timeout_are_closed() {
    let s = setup(35, &[("a", None)], &http_pool_rule("idleTimeout: 1s"));
    let _grpc = backend("grpc-a", "127.1.35.1", 9090);
    let (opened, closed) = (
        "envoy_cluster_upstream_cx_total",
        "envoy_cluster_upstream_cx_idle_timeout",
    );
    // HTTP/1.1: the pooled connection closes once idle for a second; the next request opens
    // another.
    assert_eq!(s.get("/one", &[]).0, 200);
    assert_eq!(cluster_counter(&s.proxy, opened, "|8080|"), 1);
    wait_for(
        Duration::from_secs(10),
        "the idle HTTP/1.1 connection to close",
        || (cluster_counter(&s.proxy, closed, "|8080|") == 1).then_some(()),
    );
    assert_eq!(s.get("/two", &[]).0, 200);
    assert_eq!(cluster_counter(&s.proxy, opened, "|8080|"), 2);

    // HTTP/2 (gRPC): the same for the worker's multiplexed connection.
    let (codes, failed, out) = s.grpc_calls(&["-c", "1", "-n", "4"]);
    assert_eq!((codes[0], failed), (4, 0), "{out}");
    assert_eq!(cluster_counter(&s.proxy, opened, "|9090|"), 1);
    wait_for(
        Duration::from_secs(10),
        "the idle HTTP/2 connection to close",
        || (cluster_counter(&s.proxy, closed, "|9090|") == 1).then_some(()),
    );
    let (codes, failed, out) = s.grpc_calls(&["-c", "1", "-n", "4"]);
    assert_eq!((codes[0], failed), (4, 0), "{out}");
    assert_eq!(cluster_counter(&s.proxy, opened, "|9090|"), 2);
}

/// A DestinationRule for `echo` with `connectionPool.http` set to `{fields}`.
fn http_pool_rule(fields: &str) -> String {
    pool_rule(&format!("{{http: {{{fields}}}}}"))
}

/// Two HTTP/1.1 requests for `path` at once, on two connections (h2load's counts).
fn two_at_once(s: &Setup, path: &str) -> ([u64; 4], u64, String) {
    h2load(&[
        "--h1",
        "-c",
        "2",
        "-n",
        "2",
        "-H",
        &format!(":authority: {HOST}"),
        &s.url(path),
    ])
}

/// `istio_requests_total` series with `response_flags="{flag}"`: their count.
fn requests_flagged(proxy: &StraitProxy, flag: &str) -> u64 {
    proxy
        .admin("/stats/prometheus")
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains(&format!("response_flags=\"{flag}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn the_active_request_cap_answers_503_uo_and_the_retry_cap_stops_retries() {
    // `http2MaxRequests: 1` (Envoy's max_requests): one request in flight to the cluster; the
    // one beside it overflows at once.
    let s = setup(36, &[("a", None)], &http_pool_rule("http2MaxRequests: 1"));
    let (codes, failed, out) = two_at_once(&s, "/delay/500");
    // (h2load counts a 5xx as failed.)
    assert_eq!((codes[0], codes[3], failed), (1, 1, 1), "{out}");
    assert_eq!(requests_flagged(&s.proxy, "UO"), 1);
    drop(s);

    // `maxRetries: 1` (Envoy's max_retries): of two requests failing together, one retries
    // (three times, then runs out of attempts: URX) and the other, finding no retry to be
    // had, answers its 503 as it is, flagged UO as Envoy flags a retry overflow.
    let retry_capped = http_pool_rule("maxRetries: 1")
        + "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - route: [{destination: {host: echo}}]
    retries: {attempts: 3, retryOn: 5xx}
";
    let s = setup(37, &[("a", Some(503))], &retry_capped);
    let (codes, failed, out) = two_at_once(&s, "/delay/300");
    assert_eq!((codes[3], failed), (2, 2), "{out}");
    assert_eq!(
        cluster_counter(&s.proxy, "envoy_cluster_upstream_rq_retry", "|8080|"),
        3,
        "only one request retried"
    );
    let counter = |family| cluster_counter(&s.proxy, family, "|8080|");
    assert_eq!(
        (
            counter("envoy_cluster_upstream_rq_retry_overflow"),
            counter("envoy_cluster_upstream_rq_retry_limit_exceeded"),
        ),
        (1, 1)
    );
    assert_eq!(
        (
            requests_flagged(&s.proxy, "UO"),
            requests_flagged(&s.proxy, "URX")
        ),
        (1, 1)
    );
}

/// A Sidecar `ingress` port declared TCP, handing to the same application port as one declared
/// HTTP, passes the bytes through as they come: its listener speaks its own declared protocol.
/// (It took the application port's strongest protocol, HTTP, and refused what is not HTTP.)
#[test]
fn a_tcp_ingress_port_in_front_of_an_http_ones_application_port_passes_bytes_through() {
    const POD: &str = "127.1.46.1";
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Bounded: the test makes a handful of connections.
    let echo_port = tcp_echo_server(8);
    let dir = t.join("config");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("mesh.yaml"),
        bound_httpbin(POD, &[(8000, "HTTP", echo_port), (9000, "TCP", echo_port)]),
    )
    .unwrap();
    let cp = ControlPlane::start(&dir, &[]);
    let proxy = StraitProxy::start_node(
        &cp,
        t,
        &format!("sidecar~{POD}~httpbin-0.foo~foo.svc.cluster.local"),
        "httpbin-0",
        "app=httpbin",
    );
    let mut c = wait_for(Duration::from_secs(20), "the TCP ingress listener", || {
        std::net::TcpStream::connect((POD, 9000)).ok()
    });
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Bytes no HTTP parser takes.
    let message = b"\x00\x01 not HTTP at all\r\n\r\n";
    {
        use std::io::{Read, Write};
        c.write_all(message).unwrap();
        let mut back = vec![0u8; message.len()];
        let read = c.read_exact(&mut back);
        assert!(
            read.is_ok() && back == message,
            "{read:?}: {:?}\n{}",
            String::from_utf8_lossy(&back),
            proxy.log()
        );
    }
}

/// `openssl req` arguments for a new P-256 key, unencrypted.
const NEW_EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

/// `openssl ARGS` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `curl` GET `https://{host}:{port}/hello`, the name resolved to `ip` and the server's
/// certificate checked against the CA file `ca` for that name; `extra` arguments go first.
fn https_get(host: &str, ip: &str, port: u16, ca: &str, extra: &[&str]) -> (u16, String) {
    let resolve = format!("{host}:{port}:{ip}");
    let url = format!("https://{host}:{port}/hello");
    let mut args = vec!["--resolve", &resolve, "--cacert", ca];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// The gateway tests' certificates under `dir/pki`: `web` (web.example.test) and `partner`
/// (partner.example.test) for the gateway, `client` for a partner's client, issued by `ca`.
fn gateway_pki(dir: &Path) -> std::path::PathBuf {
    let pki = test_ca(dir, "gateway test CA");
    issue(&pki, "web", "web.example.test", Some("web.example.test"));
    issue(
        &pki,
        "partner",
        "partner.example.test",
        Some("partner.example.test"),
    );
    // An X.509 v3 certificate (a subjectAltName makes it one): rustls takes no older ones.
    issue(
        &pki,
        "client",
        "partner-client",
        Some("client.partner.example.test"),
    );
    pki
}

/// A new CA `ca.pem` / `ca.key` named `cn`, in the directory `pki` under `dir` (returned).
fn test_ca(dir: &Path, cn: &str) -> std::path::PathBuf {
    let pki = dir.join("pki");
    std::fs::create_dir(&pki).unwrap();
    let subject = format!("/CN={cn}");
    let mut ca = vec!["req", "-x509"];
    ca.extend(NEW_EC_KEY);
    ca.extend([
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", &subject, "-days", "1",
    ]);
    openssl(&pki, &ca);
    pki
}

/// A certificate `<name>.pem` / `<name>.key` in `dir` for `cn` (DNS name `san`, if any),
/// issued by the CA `ca.pem` / `ca.key` there.
fn issue(dir: &Path, name: &str, cn: &str, san: Option<&str>) {
    let (key, csr, pem, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    let subject = format!("/CN={cn}");
    let mut args = vec!["req"];
    args.extend(NEW_EC_KEY);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
    openssl(dir, &args);
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        &pem,
    ];
    if let Some(san) = san {
        std::fs::write(dir.join(&ext), format!("subjectAltName=DNS:{san}\n")).unwrap();
        args.extend_from_slice(&["-extfile", &ext]);
    }
    openssl(dir, &args);
}

/// An ingress gateway terminating TLS with certificates of its own, from the files its Gateway
/// names (Istio's mounted gateway certificates): by SNI, `web.example.test` gets its SIMPLE
/// server's certificate (HTTP/2 offered by ALPN) and `partner.example.test` its MUTUAL one's,
/// which serves only clients presenting a certificate its CA file verifies. A name no server
/// lists is refused, and the mesh certificate is never shown to the outside.
#[test]
fn a_gateway_terminates_tls_with_its_own_certificates_chosen_by_sni() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = gateway_pki(tmp.path());
    let file = |f: &str| pki.join(f).to_str().unwrap().to_string();
    let port = free_port();
    let gateway = format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: https-web, protocol: HTTPS}}
    hosts: [web.example.test]
    tls: {{mode: SIMPLE, serverCertificate: {web}, privateKey: {web_key}}}
  - port: {{number: {port}, name: https-partner, protocol: HTTPS}}
    hosts: [partner.example.test]
    tls: {{mode: MUTUAL, serverCertificate: {partner}, privateKey: {partner_key}, caCertificates: {ca}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo-ingress, namespace: default}}
spec:
  hosts: [web.example.test, partner.example.test]
  gateways: [istio-system/ingress]
  http:
  - route: [{{destination: {{host: echo.default.svc.cluster.local, port: {{number: 8080}}}}}}]
",
        web = file("web.pem"),
        web_key = file("web.key"),
        partner = file("partner.pem"),
        partner_key = file("partner.key"),
        ca = file("ca.pem"),
    );
    let s = setup(50, &[("a", None)], &gateway);
    let router = StraitProxy::start_node(
        s.cp.as_ref().unwrap(),
        s.dir.parent().unwrap(),
        "router~127.1.50.200~ingress-0.istio-system~istio-system.svc.cluster.local",
        "ingress-0",
        "istio=ingressgateway",
    );
    let ca = file("ca.pem");
    let https = |host: &str, extra: &[&str]| https_get(host, "127.0.0.1", port, &ca, extra);
    // curl checks the certificate against the name it asked for: each name gets its own.
    let (status, body) = wait_for(Duration::from_secs(20), "the gateway's TLS server", || {
        let r = https("web.example.test", &[]);
        (r.0 == 200).then_some(r)
    });
    assert_eq!(
        (status, Setup::name_of(&body)),
        (200, "a".to_string()),
        "{}",
        router.log()
    );
    let (status, body) = https(
        "web.example.test",
        &[
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}\n%{http_code}",
        ],
    );
    assert_eq!((status, body.trim()), (200, "2"), "HTTP/2 by ALPN");

    let (status, body) = https("partner.example.test", &[]);
    assert_eq!(status, 0, "no client certificate, no answer: {body}");
    let (cert, key) = (file("client.pem"), file("client.key"));
    let (status, body) = https("partner.example.test", &["--cert", &cert, "--key", &key]);
    assert_eq!(
        (status, Setup::name_of(&body)),
        (200, "a".to_string()),
        "{}",
        router.log()
    );

    // A name no server lists: no chain takes it.
    let (status, _) = https("other.example.test", &["-k"]);
    assert_eq!(status, 0);

    // The certificate is renewed in place (as a re-mounted Secret is, by rename): new
    // connections meet the new one within the proxy's file check, without a configuration push.
    std::fs::create_dir(tmp.path().join("renewed")).unwrap();
    let renewed = test_ca(&tmp.path().join("renewed"), "renewed CA");
    issue(
        &renewed,
        "web",
        "web.example.test",
        Some("web.example.test"),
    );
    let replace = |from: &Path, name: &str| {
        let staged = pki.join(format!("{name}.staged"));
        std::fs::copy(from.join(name), &staged).unwrap();
        std::fs::rename(&staged, pki.join(name)).unwrap();
    };
    replace(&renewed, "web.key");
    replace(&renewed, "web.pem");
    let renewed_ca = renewed.join("ca.pem").to_str().unwrap().to_string();
    wait_for(Duration::from_secs(20), "the renewed certificate", || {
        (https_get("web.example.test", "127.0.0.1", port, &renewed_ca, &[]).0 == 200).then_some(())
    });
    // A file rewritten into something unusable: the last good certificate serves on.
    std::fs::write(pki.join("web.pem"), "not a certificate").unwrap();
    wait_for(Duration::from_secs(20), "the refusal in the log", || {
        router.log().contains("not renewed").then_some(())
    });
    assert_eq!(
        https_get("web.example.test", "127.0.0.1", port, &renewed_ca, &[]).0,
        200
    );
    // Said once, not at every check of the files (one every 5 s).
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        router.log().matches("not renewed").count(),
        1,
        "{}",
        router.log()
    );
}

/// A Kubernetes TLS Secret `namespace/name`: the PEM files `cert` and `key` under `dir` (and
/// `ca`'s as `ca.crt`), as `kubectl create secret tls` writes one.
fn tls_secret(
    namespace: &str,
    name: &str,
    dir: &Path,
    cert: &str,
    key: &str,
    ca: Option<&str>,
) -> String {
    let pem = |f: &str| {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        text.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        pem(cert),
        pem(key)
    );
    if let Some(ca) = ca {
        out += &format!("  ca.crt: |\n{}", pem(ca));
    }
    out
}

/// A gateway serving TLS with certificates from Kubernetes Secrets (`credentialName`, as most
/// Istio users configure it): the control plane sends them by SDS to a gateway that proved its
/// mesh identity, of the Secrets' namespace, over the TLS xDS port — SIMPLE for one name, MUTUAL
/// (the client CA from the same Secret's `ca.crt`) for another. A rotated Secret is served to
/// new connections without a restart. A gateway on the plaintext xDS port is sent no secret:
/// its TLS servers refuse connections, and it says why.
#[test]
fn a_gateway_serves_certificates_from_secrets_sent_by_sds_and_follows_their_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mesh_ca = MeshCa::create(t);
    let pki = gateway_pki(t);
    // The rotated certificate comes from another CA, so a client can tell which one it met.
    let rotated_pki = t.join("rotated");
    std::fs::create_dir(&rotated_pki).unwrap();
    let rotated = test_ca(&rotated_pki, "rotated CA");
    issue(
        &rotated,
        "web",
        "web.example.test",
        Some("web.example.test"),
    );
    let file = |dir: &Path, f: &str| dir.join(f).to_str().unwrap().to_string();
    let port = free_port();
    let gateway = |web_dir: &Path| {
        format!(
            "{}\n---\n{}\n---\napiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: https-web, protocol: HTTPS}}
    hosts: [web.example.test]
    tls: {{mode: SIMPLE, credentialName: web-credential}}
  - port: {{number: {port}, name: https-partner, protocol: HTTPS}}
    hosts: [partner.example.test]
    tls: {{mode: MUTUAL, credentialName: partner-credential}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo-ingress, namespace: default}}
spec:
  hosts: [web.example.test, partner.example.test]
  gateways: [istio-system/ingress]
  http:
  - route: [{{destination: {{host: echo.default.svc.cluster.local, port: {{number: 8080}}}}}}]
",
            tls_secret(
                "istio-system",
                "web-credential",
                web_dir,
                "web.pem",
                "web.key",
                None
            ),
            tls_secret(
                "istio-system",
                "partner-credential",
                &pki,
                "partner.pem",
                "partner.key",
                Some("ca.pem")
            ),
        )
    };
    let dir = t.join("config");
    std::fs::create_dir(&dir).unwrap();
    mesh(&dir, "127.1.53.100", &["127.1.53.1"], &gateway(&pki));
    let _backend = http_backend("a", "127.1.53.1", 8080, None);
    let cp = ControlPlane::start(&dir, &strs(&mesh_ca.control_plane_args()));
    let node = "router~127.1.53.200~ingress-0.istio-system~istio-system.svc.cluster.local";
    let router = StraitProxy::start_with(
        &cp,
        t,
        node,
        "ingress-0",
        "istio=ingressgateway",
        &strs(&mesh_ca.proxy_args("istio-system", "ingress", "3600")),
    );
    let ca = file(&pki, "ca.pem");
    let https =
        |host: &str, ca: &str, extra: &[&str]| https_get(host, "127.0.0.1", port, ca, extra);
    let (status, body) = wait_for(Duration::from_secs(20), "the gateway's TLS server", || {
        let r = https("web.example.test", &ca, &[]);
        (r.0 == 200).then_some(r)
    });
    assert_eq!((status, Setup::name_of(&body)), (200, "a".to_string()));
    let (status, body) = https("partner.example.test", &ca, &[]);
    assert_eq!(status, 0, "no client certificate, no answer: {body}");
    let (cert, key) = (file(&pki, "client.pem"), file(&pki, "client.key"));
    let (status, body) = https(
        "partner.example.test",
        &ca,
        &["--cert", &cert, "--key", &key],
    );
    assert_eq!(
        (status, Setup::name_of(&body)),
        (200, "a".to_string()),
        "{}",
        router.log()
    );
    // The proxy shows what it holds, never a private key.
    let dump = router.admin("/config_dump");
    assert!(
        dump.contains("kubernetes://partner-credential-cacert"),
        "{dump}"
    );
    assert!(dump.contains("[redacted: "), "{dump}");
    assert!(
        !dump.contains("PRIVATE KEY"),
        "a private key in the dump: {dump}"
    );
    // `strait proxy-config secret`, as istioctl's: each certificate with its serial number.
    let admin = format!("127.0.0.1:{}", router.admin_port);
    let table = strait(&["proxy-config", "secret", "--admin", &admin]);
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{table}"))
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let web = row("kubernetes://web-credential");
    let (_, serial, _) = run(
        "openssl",
        &["x509", "-noout", "-serial", "-in", &file(&pki, "web.pem")],
    );
    let digits = |s: &str| {
        s.replace(':', "")
            .trim_start_matches('0')
            .to_ascii_uppercase()
    };
    assert_eq!(
        (
            web[1].as_str(),
            web[2].as_str(),
            web[3].as_str(),
            digits(&web[4])
        ),
        (
            "Cert Chain",
            "ACTIVE",
            "true",
            digits(serial.trim().trim_start_matches("serial="))
        ),
        "{table}"
    );
    assert_eq!(
        row("kubernetes://partner-credential-cacert")[1],
        "CA",
        "{table}"
    );
    // The workload's own certificate and the mesh roots, as Istio's default and ROOTCA.
    assert_eq!(row("default")[1..3], ["Cert Chain", "ACTIVE"], "{table}");
    assert_eq!(row("ROOTCA")[1], "CA", "{table}");

    // The Secret is rotated: new connections meet the new certificate.
    std::fs::write(dir.join("mesh.yaml"), {
        let mesh_yaml = std::fs::read_to_string(dir.join("mesh.yaml")).unwrap();
        let secret = |dir: &Path| {
            tls_secret(
                "istio-system",
                "web-credential",
                dir,
                "web.pem",
                "web.key",
                None,
            )
        };
        let (old, new) = (secret(&pki), secret(&rotated));
        assert!(mesh_yaml.contains(&old));
        mesh_yaml.replace(&old, &new)
    })
    .unwrap();
    let rotated_ca = file(&rotated, "ca.pem");
    wait_for(Duration::from_secs(20), "the rotated certificate", || {
        (https("web.example.test", &rotated_ca, &[]).0 == 200).then_some(())
    });
    assert_eq!(
        https("web.example.test", &ca, &[]).0,
        0,
        "the old one is gone"
    );
    drop(router);

    // On the plaintext port the same gateway proves no identity: it is sent no secret.
    let plain = StraitProxy::start_node(&cp, t, node, "ingress-plain", "istio=ingressgateway");
    wait_for(Duration::from_secs(20), "the gateway's listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert_eq!(https("web.example.test", &rotated_ca, &[]).0, 0);
    let dump: serde_json::Value = serde_json::from_str(&plain.admin("/config_dump")).unwrap();
    assert_eq!(dump["secrets"], serde_json::json!([]), "{dump}");
    assert!(
        plain
            .log()
            .contains("secrets are never sent over plaintext xDS"),
        "{}",
        plain.log()
    );
}

/// TLS originated with a client certificate from a Kubernetes Secret (a DestinationRule's
/// `credentialName`, Istio's egress mTLS origination): a sidecar with a mesh identity is sent the
/// Secret of its namespace by SDS, presents its `tls.crt` / `tls.key` to a server that requires
/// a client certificate, and checks the server against its `ca.crt`. A rotated Secret is
/// presented by the next connections.
#[test]
fn tls_is_originated_with_a_client_certificate_from_a_secret_and_follows_its_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mesh_ca = MeshCa::create(t);
    let pki = test_ca(t, "external test CA");
    issue(
        &pki,
        "server",
        "partner.external.test",
        Some("partner.external.test"),
    );
    issue(&pki, "client", "strait-client", None);
    issue(&pki, "rotated", "rotated-client", None);
    let _partner = https_backend("partner", "127.1.54.2:8443", &pki, "server", Some("ca.pem"));
    let secret = |cert: &str| {
        tls_secret(
            "default",
            "partner-client",
            &pki,
            &format!("{cert}.pem"),
            &format!("{cert}.key"),
            Some("ca.pem"),
        )
    };
    let extra = format!(
        "{}\n---\napiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: partner, namespace: default}}
spec:
  hosts: [partner.external.test]
  ports: [{{number: 8080, name: http, protocol: HTTP, targetPort: 8443}}]
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints: [{{address: 127.1.54.2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: partner, namespace: default}}
spec:
  host: partner.external.test
  trafficPolicy:
    tls: {{mode: MUTUAL, credentialName: partner-client}}
",
        secret("client")
    );
    let dir = t.join("config");
    std::fs::create_dir(&dir).unwrap();
    let bind = "127.1.54.100";
    mesh(&dir, bind, &[], &extra);
    let cp = ControlPlane::start(&dir, &strs(&mesh_ca.control_plane_args()));
    let sidecar = StraitProxy::start_with(
        &cp,
        t,
        &format!("sidecar~{bind}~client-1.default~default.svc.cluster.local"),
        "client-1",
        "app=client,version=v1",
        &strs(&mesh_ca.proxy_args("default", "client", "3600")),
    );
    let url = format!("http://{bind}:8080/hello");
    let client_cn = || {
        let (code, body) = curl(&["-H", "Host: partner.external.test", &url]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (
            code,
            v["client_cn"].as_str().unwrap_or_default().to_string(),
        )
    };
    let first = wait_for(Duration::from_secs(20), "the call over mTLS", || {
        let r = client_cn();
        (r.0 == 200).then_some(r)
    });
    assert_eq!(
        first,
        (200, "strait-client".to_string()),
        "{}",
        sidecar.log()
    );
    let dump = sidecar.admin("/config_dump");
    assert!(
        dump.contains("kubernetes://partner-client-cacert"),
        "{dump}"
    );
    assert!(!dump.contains("PRIVATE KEY"), "a private key in the dump");

    let mesh_yaml = std::fs::read_to_string(dir.join("mesh.yaml")).unwrap();
    assert!(mesh_yaml.contains(&secret("client")));
    std::fs::write(
        dir.join("mesh.yaml"),
        mesh_yaml.replace(&secret("client"), &secret("rotated")),
    )
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "the rotated client certificate",
        || (client_cn() == (200, "rotated-client".to_string())).then_some(()),
    );
}

/// A sidecar terminating TLS on an ingress port with that port's own certificate (Istio's
/// Sidecar ingress `tls`), for callers from outside the mesh: HTTPS in, HTTP to the application;
/// plaintext to that port is refused.
#[test]
fn a_sidecar_ingress_port_terminates_tls_with_its_own_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = test_ca(tmp.path(), "sidecar test CA");
    issue(&pki, "web", "web.example.test", Some("web.example.test"));
    let file = |f: &str| pki.join(f).to_str().unwrap().to_string();
    let app_port = free_port();
    let _app = http_backend("web-app", "127.0.0.1", app_port, None);
    let extra = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: web-0, namespace: default, labels: {{app: web}}}}
spec: {{serviceAccountName: web}}
status: {{podIP: 127.1.52.50}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: web, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: web}}}}
  ingress:
  - port: {{number: 8443, protocol: HTTPS, name: external}}
    bind: 127.1.52.50
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:{app_port}
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
  egress:
  - hosts: [\"./*\"]
",
        cert = file("web.pem"),
        key = file("web.key"),
    );
    let s = setup(52, &[("a", None)], &extra);
    let web = StraitProxy::start_node(
        s.cp.as_ref().unwrap(),
        s.dir.parent().unwrap(),
        "sidecar~127.1.52.50~web-0.default~default.svc.cluster.local",
        "web-0",
        "app=web",
    );
    let ca = file("ca.pem");
    let (_, body) = wait_for(Duration::from_secs(20), "the ingress port's TLS", || {
        let r = https_get("web.example.test", "127.1.52.50", 8443, &ca, &[]);
        (r.0 == 200).then_some(r)
    });
    assert_eq!(Setup::name_of(&body), "web-app", "{}", web.log());
    let (status, _) = curl(&["http://127.1.52.50:8443/hello"]);
    assert_eq!(status, 0, "plaintext is refused on a TLS port");
}

/// Istio's egress TLS origination: the application calls `http://<host>:8080`, its sidecar
/// originates TLS to the host's port 8443 as the DestinationRule says — SIMPLE, checked against
/// the rule's CA for the service's host; MUTUAL, presenting the rule's client certificate and
/// checking the rule's `subjectAltNames`. A certificate for another name is refused (503), unless
/// the rule skips verification.
#[test]
fn tls_is_originated_to_hosts_outside_the_mesh_as_destination_rules_say() {
    const NET: &str = "127.1.47";
    let tmp = tempfile::tempdir().unwrap();
    let pki = test_ca(tmp.path(), "external test CA");
    issue(
        &pki,
        "server",
        "api.external.test",
        Some("api.external.test"),
    );
    issue(&pki, "client", "strait-client", None);
    let _api = https_backend("api", &format!("{NET}.1:8443"), &pki, "server", None);
    let _partner = https_backend(
        "partner",
        &format!("{NET}.2:8443"),
        &pki,
        "server",
        Some("ca.pem"),
    );
    let file = |f: &str| pki.join(f).to_str().unwrap().to_string();
    let entry = |host: &str, ip: &str, tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}, namespace: default}}
spec:
  hosts: [{host}.external.test]
  ports: [{{number: 8080, name: http, protocol: HTTP, targetPort: 8443}}]
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints: [{{address: {NET}.{ip}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}, namespace: default}}
spec:
  host: {host}.external.test
  trafficPolicy:
    tls: {tls}
"
        )
    };
    let extra = [
        entry(
            "api",
            "1",
            &format!("{{mode: SIMPLE, caCertificates: {}}}", file("ca.pem")),
        ),
        entry(
            "partner",
            "2",
            &format!(
                "{{mode: MUTUAL, caCertificates: {}, clientCertificate: {}, privateKey: {}, subjectAltNames: [api.external.test]}}",
                file("ca.pem"),
                file("client.pem"),
                file("client.key")
            ),
        ),
        // The server's certificate names api.external.test, not this host.
        entry(
            "misnamed",
            "1",
            &format!("{{mode: SIMPLE, caCertificates: {}}}", file("ca.pem")),
        ),
        entry("unchecked", "1", "{mode: SIMPLE, insecureSkipVerify: true}"),
    ]
    .join("---\n");
    let s = setup(47, &[], &extra);
    let call = |host: &str| {
        curl(&[
            "-H",
            &format!("Host: {host}.external.test"),
            &s.url("/hello"),
        ])
    };
    let (code, body) = wait_for(
        Duration::from_secs(20),
        "api.external.test over TLS",
        || {
            let r = call("api");
            (r.0 == 200).then_some(r)
        },
    );
    assert_eq!(Setup::name_of(&body), "api", "{code} {body}");
    let (code, body) = call("partner");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("{code} {body}\n{}", s.proxy.log()));
    assert_eq!(
        (v["name"].as_str(), v["client_cn"].as_str()),
        (Some("partner"), Some("strait-client")),
        "MUTUAL presents the rule's client certificate: {body}"
    );
    let (code, body) = call("misnamed");
    assert_eq!(
        code, 503,
        "a certificate for another name is refused: {body}"
    );
    let (code, body) = call("unchecked");
    assert_eq!(
        (code, Setup::name_of(&body)),
        (200, "api".to_string()),
        "insecureSkipVerify takes any certificate: {body}"
    );
    // The client certificate renewed in place: the next connections present the new one.
    issue(&pki, "renewed", "renewed-client", None);
    for f in ["key", "pem"] {
        let staged = pki.join(format!("client.{f}.staged"));
        std::fs::copy(pki.join(format!("renewed.{f}")), &staged).unwrap();
        std::fs::rename(&staged, pki.join(format!("client.{f}"))).unwrap();
    }
    wait_for(
        Duration::from_secs(20),
        "the renewed client certificate",
        || {
            let (_, body) = call("partner");
            body.contains("\"renewed-client\"").then_some(())
        },
    );
    // Rewritten into something unusable: the last good certificate serves on.
    std::fs::write(pki.join("client.pem"), "not a certificate").unwrap();
    wait_for(Duration::from_secs(20), "the refusal in the log", || {
        s.proxy.log().contains("not renewed").then_some(())
    });
    let (code, body) = call("partner");
    assert!(
        code == 200 && body.contains("\"renewed-client\""),
        "{code} {body}"
    );
    let stats = s.proxy.admin("/stats/prometheus");
    assert!(
        stats.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("destination_service=\"misnamed.external.test\"")
            && l.contains("response_code=\"503\"")
            && l.contains("response_flags=\"UF")),
        "the refused handshake is an upstream connection failure:\n{stats}"
    );
}

/// VirtualService delegation through the real control plane: the root for `echo` hands `/api`
/// to a delegate, whose routes answer within `/api` (a route outside it is dropped, so that path
/// falls to the root's next route, the backend); changing the delegate alone changes the routes.
#[test]
fn a_root_virtual_service_routes_by_its_delegates_routes() {
    let config = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    delegate: {name: echo-api}
  - route: [{destination: {host: echo}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo-api, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /api/users}}]
    directResponse: {status: 200, body: {string: users}}
  - match: [{uri: {prefix: /other}}]
    directResponse: {status: 200, body: {string: outside}}
  - directResponse: {status: 200, body: {string: api}}
";
    let s = setup(48, &[("echo-0", None)], config);
    let body_of = |path: &str| {
        let (code, body) = s.get(path, &[]);
        if code == 200 && body.starts_with('{') {
            Setup::name_of(&body)
        } else {
            format!("{code} {body}")
        }
    };
    wait_for(Duration::from_secs(20), "the delegate's routes", || {
        (body_of("/api/users") == "200 users").then_some(())
    });
    assert_eq!(body_of("/api/other"), "200 api");
    assert_eq!(
        body_of("/other"),
        "echo-0",
        "outside /api: the root's next route"
    );
    assert_eq!(body_of("/"), "echo-0");
    // Only the delegate changes; the root's routes follow.
    std::fs::write(
        s.dir.join("mesh.yaml"),
        std::fs::read_to_string(s.dir.join("mesh.yaml"))
            .unwrap()
            .replace("string: users", "string: people"),
    )
    .unwrap();
    wait_for(Duration::from_secs(20), "the changed delegate", || {
        (body_of("/api/users") == "200 people").then_some(())
    });
}
