//! AuthorizationPolicy end to end: three sidecars with CA-issued identities (`sleep` in `foo`,
//! `other` in `bar`, `httpbin` in `foo` behind STRICT mTLS), the policies as users write them,
//! and an allow/deny table of real curl requests and TCP connections through both sidecars.
//! Then the policies are deleted and the same caller is let through: policy changes apply
//! without restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

const HTTPBIN: &str = "127.1.41.1";
const SLEEP: &str = "127.1.41.100";
const OTHER: &str = "127.1.41.101";

const POLICIES: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin-readers, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/foo/sa/sleep]}}]
    to: [{operation: {methods: [GET], paths: [/info*, /headers]}}]
  - from: [{source: {namespaces: [bar]}}]
    to: [{operation: {paths: [/public/*]}}]
  - from: [{source: {namespaces: [foo]}}]
    to: [{operation: {ports: [\"9000\"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: foo}
spec:
  action: DENY
  rules:
  # Ports named: a DENY rule of HTTP-only fields alone would close every TCP connection too.
  - to: [{operation: {paths: [/info/admin*], ports: [\"8000\"]}}]
  - to: [{operation: {ports: [\"8000\"]}}]
    when: [{key: \"request.headers[x-block]\", values: [\"yes\"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-public, namespace: foo}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: [/public/*]}}]
";

/// A client workload's sidecar: explicit egress listeners on its own address for httpbin's
/// HTTP (8000) and TCP (9000) ports.
fn client_sidecar(name: &str, namespace: &str, ip: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  workloadSelector: {{labels: {{app: {name}}}}}
  egress:
  - port: {{number: 8000, protocol: HTTP, name: http}}
    bind: {ip}
    captureMode: NONE
    hosts: [\"foo/*\"]
  - port: {{number: 9000, protocol: TCP, name: tcp}}
    bind: {ip}
    captureMode: NONE
    hosts: [\"foo/*\"]
"
    )
}

/// One round trip through a TCP echo; `None` when the connection is closed on us.
fn tcp_echo(ip: &str, message: &[u8]) -> Option<Vec<u8>> {
    let mut c = TcpStream::connect((ip, 9000)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(message).ok()?;
    let mut buf = vec![0u8; message.len()];
    c.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// The value of the series of `name` whose labels contain all of `labels`.
fn metric(stats: &str, name: &str, labels: &[&str]) -> f64 {
    stats
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn authorization_policies_allow_and_deny_requests_and_connections_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = MeshCa::create(t);

    let app_port = free_port();
    let _app = http_backend("httpbin", "127.0.0.1", app_port, None);
    // Bounded: the test makes a handful of connections.
    let echo_port = tcp_echo_server(16);

    let dir = t.join("config");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("mesh.yaml"),
        format!(
            "{}---
{}---
{}---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: foo}}
spec: {{mtls: {{mode: STRICT}}}}
",
            bound_httpbin(
                HTTPBIN,
                &[(8000, "HTTP", app_port), (9000, "TCP", echo_port)]
            ),
            client_sidecar("sleep", "foo", SLEEP),
            client_sidecar("other", "bar", OTHER),
        ),
    )
    .unwrap();
    std::fs::write(dir.join("policies.yaml"), POLICIES).unwrap();
    let cp = ControlPlane::start(&dir, &strs(&ca.control_plane_args()));

    let sidecar = |ip: &str, pod: &str, ns: &str, sa: &str, app: &str| {
        StraitProxy::start_with(
            &cp,
            t,
            &format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local"),
            pod,
            &format!("app={app}"),
            &strs(&ca.proxy_args(ns, sa, "3600")),
        )
    };
    let httpbin = sidecar(HTTPBIN, "httpbin-0", "foo", "httpbin", "httpbin");
    let sleep = sidecar(SLEEP, "sleep-0", "foo", "sleep", "sleep");
    let other = sidecar(OTHER, "other-0", "bar", "other", "other");
    for p in [&httpbin, &sleep, &other] {
        p.wait_for_certificate();
    }
    wait_for(
        Duration::from_secs(20),
        "httpbin's ingress listeners",
        || {
            TcpStream::connect((HTTPBIN, 8000)).ok()?;
            TcpStream::connect((HTTPBIN, 9000)).ok()
        },
    );

    // (caller, method, path, extra header, expected status)
    let table: &[(&str, &str, &str, Option<&str>, u16)] = &[
        (SLEEP, "GET", "/info", None, 200),
        (SLEEP, "GET", "/headers", None, 200),
        (SLEEP, "POST", "/info", None, 403), // no ALLOW rule for POST
        (SLEEP, "GET", "/info/admin", None, 403), // DENY wins over ALLOW
        (SLEEP, "GET", "/info", Some("x-block: yes"), 403), // DENY by header
        (SLEEP, "GET", "/public/a", None, 403), // /public is for namespace bar
        (OTHER, "GET", "/info", None, 403),  // another identity
        (OTHER, "GET", "/public/a", None, 200),
        (OTHER, "POST", "/public/b", None, 200),
    ];
    let mut denied = 0;
    for (caller, method, path, header, want) in table {
        let url = format!("http://{caller}:8000{path}");
        let mut args = vec!["-X", method, url.as_str(), "-H", "Host: httpbin.foo"];
        if let Some(h) = header {
            args.extend(["-H", h]);
        }
        let (code, body) = curl(&args);
        assert_eq!(
            code,
            *want,
            "{method} {path} from {caller} (header {header:?}): {body}\n{}",
            httpbin.log()
        );
        if *want == 403 {
            assert_eq!(body, "RBAC: access denied");
            denied += 1;
        }
    }

    // TCP: namespace foo may connect to port 9000; bar's connection is closed.
    assert_eq!(
        tcp_echo(SLEEP, b"ping from sleep").as_deref(),
        Some(&b"ping from sleep"[..]),
        "{}\n{}",
        httpbin.log(),
        sleep.log()
    );
    assert_eq!(tcp_echo(OTHER, b"ping from other"), None);

    // What httpbin's sidecar recorded: the deciding policy, the audit mark, the counts.
    let log = wait_for(Duration::from_secs(5), "httpbin's access log", || {
        let l = httpbin.access_log();
        (l.lines().count() >= table.len()).then_some(l)
    });
    assert!(
        log.contains("rbac_access_denied_matched_policy[ns[foo]-policy[no-admin]-rule[0]]"),
        "{log}"
    );
    assert!(
        log.contains("rbac_access_denied_matched_policy[none]"),
        "{log}"
    );
    let audited: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"audit_policy\":\"ns[foo]-policy[audit-public]-rule[0]\""))
        .collect();
    assert_eq!(audited.len(), 3, "{log}");
    let stats = httpbin.admin("/stats/prometheus");
    let decisions = "strait_authorization_decisions_total";
    assert_eq!(
        metric(
            &stats,
            decisions,
            &["protocol=\"http\"", "result=\"denied\""]
        ),
        f64::from(denied),
        "{stats}"
    );
    assert_eq!(
        metric(
            &stats,
            decisions,
            &["protocol=\"tcp\"", "result=\"denied\""]
        ),
        1.0,
        "{stats}"
    );
    assert_eq!(
        metric(
            &stats,
            "istio_requests_total",
            &["response_code=\"403\"", "reporter=\"destination\""]
        ),
        f64::from(denied),
        "{stats}"
    );

    // The policies go away: the caller that was refused is let through, no restart.
    std::fs::remove_file(dir.join("policies.yaml")).unwrap();
    wait_for(
        Duration::from_secs(20),
        "the policies to be withdrawn",
        || {
            let (code, _) = curl(&[
                &format!("http://{OTHER}:8000/info"),
                "-H",
                "Host: httpbin.foo",
            ]);
            (code == 200).then_some(())
        },
    );
    assert_eq!(
        tcp_echo(OTHER, b"now allowed").as_deref(),
        Some(&b"now allowed"[..])
    );
}
