//! Mesh identity end to end with real tools: `strait ca` creates a root and a cluster
//! intermediate, the control plane signs with it (`--cacerts`) and checks bootstrap tokens, two
//! sidecars obtain their SPIFFE certificates from it over 15012 and talk mTLS (the server side
//! STRICT by PeerAuthentication); `openssl s_client` shows the chain and the SPIFFE URI SAN, and
//! peers without a certificate, with another root's, or with an expired one are refused. A
//! PERMISSIVE port takes mTLS and plaintext alike, until STRICT applies. A DestinationRule's
//! own `ISTIO_MUTUAL` reaches a workload not marked as having a sidecar with mTLS, and a
//! Sidecar's `inboundConnectionPool` bounds what the server's application is sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// `openssl s_client` to `addr` offering Istio's ALPN, sending one HTTP/1.1 request; returns
/// everything it printed (the handshake and, if it got through, the response).
fn s_client(addr: &str, root: &Path, client: Option<&Path>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        addr,
        "-alpn",
        "istio",
        "-showcerts",
        "-CAfile",
    ])
    .arg(root);
    if let Some(dir) = client {
        // `-cert` sends only the first certificate; the intermediate goes with `-cert_chain`.
        cmd.arg("-cert")
            .arg(dir.join("cert-chain.pem"))
            .arg("-cert_chain")
            .arg(dir.join("cert-chain.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is missing: scripts/test installs it");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        // Give the handshake time to finish before the request (TLS 1.3 client auth
        // completes after the client's first flight).
        std::thread::sleep(Duration::from_millis(500));
        let _ = stdin.write_all(b"GET /whoami HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n");
        std::thread::sleep(Duration::from_millis(1500));
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(out)) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        _ => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("openssl s_client to {addr} did not finish");
        }
    }
}

fn first_pem(text: &str) -> String {
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start + 25;
    format!("{}\n", &text[start..end])
}

#[test]
fn two_sidecars_talk_mtls_with_ca_issued_identities_and_strangers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // The mesh's root and this cluster's intermediate, as an operator makes them.
    let ca = MeshCa::create(t);
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        assert!(ca.cacerts.join(f).exists(), "{f} missing");
    }
    let root = ca.root.clone();

    // The mesh: a client sidecar with an explicit egress listener, and an echo workload whose
    // sidecar has an explicit STRICT ingress listener in front of the app.
    let app_port = free_port();
    let _app = http_backend("echo-app", "127.0.0.1", app_port, None);
    let dir = t.join("config");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("mesh.yaml"),
        two_sidecar_mesh("127.1.40.1", "127.1.40.100", app_port, ""),
    )
    .unwrap();
    let cp = ControlPlane::start(&dir, &strs(&ca.control_plane_args()));
    let echo_args = ca.proxy_args("default", "echo", "3600");
    let echo = StraitProxy::start_with(
        &cp,
        t,
        "sidecar~127.1.40.1~echo-0.default~default.svc.cluster.local",
        "echo-0",
        "app=echo",
        &strs(&echo_args),
    );
    // The client's certificate lives 4 s, so it rotates about every 2 s during the test.
    let client_args = ca.proxy_args("default", "client", "4");
    let client = StraitProxy::start_with(
        &cp,
        t,
        "sidecar~127.1.40.100~client-0.default~default.svc.cluster.local",
        "client-0",
        "app=client",
        &strs(&client_args),
    );
    echo.wait_for_certificate();
    client.wait_for_certificate();
    wait_for(Duration::from_secs(20), "the echo ingress listener", || {
        std::net::TcpStream::connect("127.1.40.1:8080").ok()
    });

    // Through both sidecars, mTLS between them, for 8 s of certificate rotation: no failure.
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let (code, body) = curl(&["http://127.1.40.100:8080/hello", "-H", "Host: echo"]);
        assert_eq!(code, 200, "call {calls} failed: {body}\n{}", client.log());
        calls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let issued = client.log().matches("workload certificate issued").count();
    assert!(
        issued >= 3,
        "the client's certificate should have rotated: issued {issued} times\n{}",
        client.log()
    );
    let stats = echo.admin("/stats/prometheus");
    let mtls_line = stats
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("connection_security_policy=\"mutual_tls\"")
                && l.contains("source_principal=\"spiffe://cluster.local/ns/default/sa/client\"")
        })
        .unwrap_or_else(|| panic!("no mTLS request from the client's identity in:\n{stats}"));
    let counted: f64 = mtls_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(counted as usize, calls, "{mtls_line}");

    // openssl sees the echo sidecar's chain (leaf, intermediate) and its SPIFFE identity.
    let peer = t.join("peer");
    issue_certificate(&ca.cacerts, "tester", &peer, &[]);
    let out = s_client("127.1.40.1:8080", &root, Some(&peer));
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(
        out.contains(" 1 s:") && out.contains("Intermediate CA"),
        "the chain should hold the intermediate: {out}"
    );
    assert!(
        out.contains("HTTP/1.1 200"),
        "an mTLS peer is served: {out}"
    );
    let leaf = t.join("leaf.pem");
    std::fs::write(&leaf, first_pem(&out)).unwrap();
    let (_, san, _) = run(
        "openssl",
        &[
            "x509",
            "-in",
            leaf.to_str().unwrap(),
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    assert!(
        san.contains("URI:spiffe://cluster.local/ns/default/sa/echo"),
        "{san}"
    );

    // Refused: no client certificate, another root's certificate, an expired certificate,
    // and plaintext to the STRICT port.
    let out = s_client("127.1.40.1:8080", &root, None);
    assert!(
        !out.contains("HTTP/1.1 200"),
        "a peer without a certificate was served: {out}"
    );
    strait(&[
        "ca",
        "init",
        "--out",
        t.join("other-root").to_str().unwrap(),
    ]);
    strait(&[
        "ca",
        "intermediate",
        "--root",
        t.join("other-root").to_str().unwrap(),
        "--cluster",
        "x",
        "--out",
        t.join("other-ca").to_str().unwrap(),
    ]);
    let stranger = t.join("stranger");
    issue_certificate(&t.join("other-ca"), "client", &stranger, &[]);
    let out = s_client("127.1.40.1:8080", &root, Some(&stranger));
    assert!(
        !out.contains("HTTP/1.1 200"),
        "a peer from another root was served: {out}"
    );
    let expired = t.join("expired");
    issue_certificate(&ca.cacerts, "client", &expired, &["--ttl", "1"]);
    std::thread::sleep(Duration::from_secs(2));
    let out = s_client("127.1.40.1:8080", &root, Some(&expired));
    assert!(
        !out.contains("HTTP/1.1 200"),
        "a peer with an expired certificate was served: {out}"
    );
    let (code, _) = curl(&["http://127.1.40.1:8080/hello"]);
    assert_eq!(code, 0, "plaintext to a STRICT port must not be served");
    let failures = echo.admin("/stats/prometheus");
    assert!(
        failures
            .lines()
            .any(|l| l.starts_with("strait_tls_handshake_failures_total ") && !l.ends_with(" 0")),
        "handshake failures are counted:\n{failures}"
    );
}

/// PERMISSIVE, as Istio: the server sidecar's port takes mesh mTLS and plaintext alike (a
/// workload-level PeerAuthentication over the namespace's STRICT), reporting which each request
/// used; switched to STRICT while running, plaintext is refused and mTLS keeps working.
#[test]
fn a_permissive_port_takes_mtls_and_plaintext_and_strict_then_refuses_plaintext() {
    let m = EchoMesh::start(41, "PERMISSIVE", |app_port, mode| {
        two_sidecar_mesh(
            "127.1.41.1",
            "127.1.41.100",
            app_port,
            &format!(
                "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: echo, namespace: default}}\nspec: {{selector: {{matchLabels: {{app: echo}}}}, mtls: {{mode: {mode}}}}}\n"
            ),
        )
    });
    let (echo, client) = (&m.echo, &m.client);

    // Both ways in, on one port.
    let through_client = || curl(&["http://127.1.41.100:8080/hello", "-H", "Host: echo"]);
    let plaintext = || curl(&["-m", "3", "http://127.1.41.1:8080/hello"]);
    for _ in 0..5 {
        assert_eq!(through_client().0, 200, "{}", client.log());
        assert_eq!(plaintext().0, 200, "{}", echo.log());
    }
    let stats = echo.admin("/stats/prometheus");
    let count = |policy: &str| -> f64 {
        stats
            .lines()
            .filter(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("reporter=\"destination\"")
                    && l.contains(&format!("connection_security_policy=\"{policy}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("mutual_tls"), 5.0, "{stats}");
    assert_eq!(count("none"), 5.0, "{stats}");

    // STRICT now: plaintext refused, mTLS still served.
    m.configure("STRICT");
    wait_for(
        Duration::from_secs(10),
        "plaintext refused under STRICT",
        || (plaintext().0 != 200).then_some(()),
    );
    assert_eq!(through_client().0, 200, "{}", client.log());
}

/// Auto mTLS sends mesh mTLS only to workloads marked as having a sidecar
/// (`security.istio.io/tlsMode: istio`); one without the mark is sent plaintext, which its
/// STRICT sidecar refuses. A DestinationRule that says `ISTIO_MUTUAL` itself, as in Istio,
/// applies to every endpoint: the same unmarked workload is then reached with mTLS.
#[test]
fn a_destination_rules_own_istio_mutual_reaches_endpoints_not_marked_as_having_a_sidecar() {
    let m = EchoMesh::start(49, "", |app_port, extra| {
        let mesh = two_sidecar_mesh("127.1.49.1", "127.1.49.100", app_port, extra);
        let without = mesh.replace(", security.istio.io/tlsMode: istio", "");
        assert_ne!(
            mesh, without,
            "the echo pod's tlsMode label is what this test removes"
        );
        without
    });
    let (echo, client) = (&m.echo, &m.client);
    let through_client = || {
        curl(&[
            "-m",
            "5",
            "http://127.1.49.100:8080/hello",
            "-H",
            "Host: echo",
        ])
    };

    // Unmarked, so auto mTLS sends plaintext: the STRICT server refuses it.
    let (status, body) = through_client();
    assert_eq!(status, 503, "{body}\n{}", client.log());

    let rule = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo, namespace: default}\nspec: {host: echo.default.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n";
    m.configure(rule);
    wait_for(
        Duration::from_secs(15),
        "mTLS to the unmarked workload once the rule says ISTIO_MUTUAL",
        || (through_client().0 == 200).then_some(()),
    );
    let (status, body) = through_client();
    assert_eq!(status, 200, "{body}\n{}", client.log());
    assert!(body.contains("echo-app"), "{body}");
    let stats = echo.admin("/stats/prometheus");
    assert!(
        stats.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("reporter=\"destination\"")
            && l.contains("connection_security_policy=\"mutual_tls\"")),
        "{stats}"
    );
}

/// A Sidecar's `inboundConnectionPool` bounds what its application is sent, as Istio's inbound
/// circuit breakers: with one connection and one request waiting for it, calls at once beyond
/// those are answered 503 by the server's sidecar, flagged UO there; without it, none are.
#[test]
fn a_sidecars_inbound_connection_pool_bounds_what_its_application_is_sent() {
    let m = EchoMesh::start(51, "", |app_port, pool| {
        let mesh = two_sidecar_mesh("127.1.51.1", "127.1.51.100", app_port, "");
        let selector = "  workloadSelector: {labels: {app: echo}}\n";
        assert!(mesh.contains(selector), "the echo Sidecar this test bounds");
        mesh.replace(selector, &format!("{selector}{pool}"))
    });
    let (echo, client) = (&m.echo, &m.client);
    // Ten callers at once, each request held 300 ms by the application.
    let load = || {
        h2load(&[
            "--h1",
            "-n",
            "20",
            "-c",
            "10",
            "-H",
            ":authority: echo",
            "http://127.1.51.100:8080/delay/300",
        ])
    };
    let overflowed = || {
        echo.admin("/stats/prometheus")
            .lines()
            .filter(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("reporter=\"destination\"")
                    && l.contains("response_flags=\"UO\"")
                    && l.contains("response_code=\"503\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (codes, _, out) = load();
    assert_eq!(
        codes[0],
        20,
        "unbounded, all served: {out}\n{}",
        client.log()
    );
    assert_eq!(overflowed(), 0.0);

    let pool =
        "  inboundConnectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}\n";
    m.configure(pool);
    let (codes, out) = wait_for(
        Duration::from_secs(20),
        "the inbound pool to refuse what exceeds it",
        || {
            let (codes, _, out) = load();
            (overflowed() > 0.0).then_some((codes, out))
        },
    );
    assert!(codes[0] >= 2, "what fits is served: {out}");
    assert!(codes[3] >= 1, "the rest is refused: {out}");
}

/// `two_sidecar_mesh` on 127.1.`net` (echo at .1, the client at .100), served by a control
/// plane signing with a new mesh CA: its configuration made by `config` from the application's
/// port and a variant a test changes while running (`configure`); both sidecars hold their
/// certificates and listen. Dropped, everything stops.
struct EchoMesh {
    echo: StraitProxy,
    client: StraitProxy,
    config: Box<dyn Fn(&str) -> String>,
    dir: std::path::PathBuf,
    _cp: ControlPlane,
    _app: Proc,
    _tmp: tempfile::TempDir,
}

impl EchoMesh {
    fn start(net: u8, first: &str, config: impl Fn(u16, &str) -> String + 'static) -> EchoMesh {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let ca = MeshCa::create(t);
        let app_port = free_port();
        let app = http_backend("echo-app", "127.0.0.1", app_port, None);
        let dir = t.join("config");
        std::fs::create_dir(&dir).unwrap();
        let config: Box<dyn Fn(&str) -> String> = Box::new(move |v| config(app_port, v));
        std::fs::write(dir.join("mesh.yaml"), config(first)).unwrap();
        let cp = ControlPlane::start(&dir, &strs(&ca.control_plane_args()));
        let (echo_ip, client_ip) = (format!("127.1.{net}.1"), format!("127.1.{net}.100"));
        let (echo, client) = echo_and_client(&cp, t, &ca, &echo_ip, &client_ip);
        for ip in [echo_ip, client_ip] {
            wait_for(Duration::from_secs(20), "the sidecars' listeners", || {
                std::net::TcpStream::connect((ip.as_str(), 8080)).ok()
            });
        }
        EchoMesh {
            echo,
            client,
            config,
            dir,
            _cp: cp,
            _app: app,
            _tmp: tmp,
        }
    }

    /// Rewrites the configuration with another variant.
    fn configure(&self, variant: &str) {
        std::fs::write(self.dir.join("mesh.yaml"), (self.config)(variant)).unwrap();
    }
}

/// The sidecars of `two_sidecar_mesh`'s echo and client workloads, each holding a certificate
/// the mesh CA issued.
fn echo_and_client(
    cp: &ControlPlane,
    t: &Path,
    ca: &MeshCa,
    echo_ip: &str,
    client_ip: &str,
) -> (StraitProxy, StraitProxy) {
    let start = |ip: &str, name: &str| {
        StraitProxy::start_with(
            cp,
            t,
            &format!("sidecar~{ip}~{name}-0.default~default.svc.cluster.local"),
            &format!("{name}-0"),
            &format!("app={name}"),
            &strs(&ca.proxy_args("default", name, "3600")),
        )
    };
    let (echo, client) = (start(echo_ip, "echo"), start(client_ip, "client"));
    echo.wait_for_certificate();
    client.wait_for_certificate();
    (echo, client)
}
