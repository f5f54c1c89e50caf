//! Root CA rotation under load, as an operator does it with `strait ca` and the control plane's
//! watched `cacerts`: old root → both roots trusted (still signing under the old) → signing
//! under the new root, both trusted → the new root alone. Two sidecars with 4-second
//! certificates keep calling each other over STRICT mTLS the whole time, every request on a
//! fresh upstream connection (a full handshake with the trust of the moment); no request fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

/// Replaces the watched `cacerts` with those of `from` (the control plane polls every 2 s).
fn install(from: &Path, cacerts: &Path) {
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        std::fs::copy(from.join(f), cacerts.join(f)).unwrap();
    }
}

/// A new intermediate under `root`, trusting `root` and `also`, in a fresh directory.
fn intermediate(t: &Path, name: &str, root: &Path, also: Option<&Path>) -> std::path::PathBuf {
    let out = t.join(name);
    let mut args = vec![
        "ca".to_string(),
        "intermediate".into(),
        "--root".into(),
        root.to_str().unwrap().into(),
        "--cluster".into(),
        "cluster1".into(),
        "--out".into(),
        out.to_str().unwrap().into(),
    ];
    if let Some(a) = also {
        args.extend(["--also-trust".into(), a.to_str().unwrap().into()]);
    }
    strait(&strs(&args));
    out
}

#[test]
fn the_mesh_root_rotates_under_load_without_a_failed_request() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = MeshCa::create(t);
    let old_root = t.join("root");
    let new_root = t.join("new-root");
    strait(&["ca", "init", "--out", new_root.to_str().unwrap()]);

    let app_port = free_port();
    let _app = http_backend("echo-app", "127.0.0.1", app_port, None);
    let dir = t.join("config");
    std::fs::create_dir(&dir).unwrap();
    // Every request on a new upstream connection: a full handshake with the trust of the moment.
    let one_request_per_connection = "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo.default.svc.cluster.local
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 1}}
";
    std::fs::write(
        dir.join("mesh.yaml"),
        two_sidecar_mesh(
            "127.1.42.1",
            "127.1.42.100",
            app_port,
            one_request_per_connection,
        ),
    )
    .unwrap();
    let cp = ControlPlane::start(&dir, &strs(&ca.control_plane_args()));
    let echo = StraitProxy::start_with(
        &cp,
        t,
        "sidecar~127.1.42.1~echo-0.default~default.svc.cluster.local",
        "echo-0",
        "app=echo",
        &strs(&ca.proxy_args("default", "echo", "4")),
    );
    let client = StraitProxy::start_with(
        &cp,
        t,
        "sidecar~127.1.42.100~client-0.default~default.svc.cluster.local",
        "client-0",
        "app=client",
        &strs(&ca.proxy_args("default", "client", "4")),
    );
    wait_for(Duration::from_secs(20), "the echo ingress listener", || {
        std::net::TcpStream::connect("127.1.42.1:8080").ok()
    });
    wait_for(
        Duration::from_secs(20),
        "a first call through the mesh",
        || {
            let (code, _) = curl(&["http://127.1.42.100:8080/", "-H", "Host: echo"]);
            (code == 200).then_some(())
        },
    );

    // Load: two callers, each request on a new mTLS connection between the sidecars.
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let callers: Vec<_> = (0..2)
        .map(|i| {
            let (stop, results) = (stop.clone(), results.clone());
            std::thread::spawn(move || {
                // Bounded by the stop flag and a hard cap.
                for n in 0..5000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let url = format!("http://127.1.42.100:8080/call/{i}/{n}");
                    let r = curl(&[&url, "-H", "Host: echo"]);
                    results.lock().unwrap().push(r);
                }
            })
        })
        .collect();
    let phase = |what: &str| {
        eprintln!("phase: {what}");
        std::thread::sleep(Duration::from_secs(6));
    };
    phase("old root");
    // 1. Both roots trusted; still signing under the old root (a new intermediate).
    install(
        &intermediate(
            t,
            "both-old-signs",
            &old_root,
            Some(&new_root.join("root-cert.pem")),
        ),
        &ca.cacerts,
    );
    phase("both roots, old signs");
    // 2. Signing under the new root; both still trusted.
    install(
        &intermediate(
            t,
            "both-new-signs",
            &new_root,
            Some(&old_root.join("root-cert.pem")),
        ),
        &ca.cacerts,
    );
    phase("both roots, new signs");
    // 3. The new root alone.
    install(&intermediate(t, "new-only", &new_root, None), &ca.cacerts);
    phase("new root only");
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().unwrap();
    }

    let results = results.lock().unwrap();
    let failed: Vec<&(u16, String)> = results.iter().filter(|(c, _)| *c != 200).collect();
    assert!(
        results.len() >= 100,
        "too little load to mean anything: {} requests",
        results.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during rotation, first: {:?}\nclient:\n{}\necho:\n{}\ncontrol plane:\n{}",
        failed.len(),
        results.len(),
        failed.first(),
        client.log(),
        echo.log(),
        cp.log()
    );
    eprintln!("{} requests, none failed", results.len());

    // Every step was taken: the control plane reloaded three times, and the sidecars went from
    // one root to two and back to one.
    let reloads = cp.log().matches("CA material reloaded").count();
    assert_eq!(reloads, 3, "{}", cp.log());
    for p in [&client, &echo] {
        let log = p.log();
        let issued: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("workload certificate issued"))
            .collect();
        assert!(issued.iter().any(|l| l.contains("roots=2")), "{log}");
        assert!(issued.last().unwrap().contains("roots=1"), "{log}");
    }
    // The echo sidecar now presents a certificate of the new root, which alone is trusted.
    let peer = t.join("peer");
    issue_certificate(&ca.cacerts, "tester", &peer, &[]);
    let verify = |root: &Path| {
        let (_, out, err) = run(
            "openssl",
            &[
                "s_client",
                "-connect",
                "127.1.42.1:8080",
                "-alpn",
                "istio",
                "-CAfile",
                root.to_str().unwrap(),
                "-cert",
                peer.join("cert-chain.pem").to_str().unwrap(),
                "-cert_chain",
                peer.join("cert-chain.pem").to_str().unwrap(),
                "-key",
                peer.join("key.pem").to_str().unwrap(),
            ],
        );
        format!("{out}{err}")
    };
    let with_new = verify(&new_root.join("root-cert.pem"));
    assert!(
        with_new.contains("Verify return code: 0 (ok)"),
        "{with_new}"
    );
    let with_old = verify(&old_root.join("root-cert.pem"));
    assert!(
        !with_old.contains("Verify return code: 0 (ok)"),
        "{with_old}"
    );
}
