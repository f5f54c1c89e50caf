//! The control plane proven with a real xDS client: Python grpcio as a proxyless gRPC client
//! (GRPC_XDS_BOOTSTRAP, `xds:///` targets) against Python gRPC servers on loopback that answer
//! with their own name.

#![allow(clippy::unwrap_used, clippy::panic)] // end-to-end test

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::*;

const TARGET: &str = "xds:///helloworld.sample.svc.cluster.local:5000";

fn service() -> String {
    "apiVersion: v1\nkind: Service\nmetadata: {name: helloworld, namespace: sample}\nspec: {ports: [{name: grpc, port: 5000}], selector: {app: helloworld}}\n".into()
}

fn pod(name: &str, version: &str, ip: &str, node: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: sample, labels: {{app: helloworld, version: {version}}}}}\nspec: {{nodeName: {node}, serviceAccountName: helloworld}}\nstatus: {{podIP: {ip}}}\n"
    )
}

fn node(name: &str, region: &str, zone: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{topology.kubernetes.io/region: {region}, topology.kubernetes.io/zone: {zone}}}}}\n"
    )
}

fn subsets() -> String {
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: helloworld, namespace: sample}\nspec:\n  host: helloworld\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n".into()
}

fn answers(output: &str) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let v: serde_json::Value = serde_json::from_str(output.trim())
        .unwrap_or_else(|e| panic!("client output {output:?}: {e}"));
    let map = |k: &str| {
        v[k].as_object()
            .unwrap()
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
            .collect()
    };
    (map("answers"), map("errors"))
}

/// Two backends (v1 on 127.0.0.2, v2 on 127.0.0.3), both in region1.
fn two_versions(dir: &std::path::Path, vs: &str) -> (Vec<Proc>, ControlPlane) {
    let port = free_port();
    let manifests = format!(
        "{}{}{}{}{}{}",
        service().replace("port: 5000}", &format!("port: 5000, targetPort: {port}}}")),
        node("n1", "region1", "zone1"),
        pod("hw-v1", "v1", "127.0.0.2", "n1"),
        pod("hw-v2", "v2", "127.0.0.3", "n1"),
        subsets(),
        vs
    );
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/mesh.yaml"), manifests).unwrap();
    let backends = vec![
        backend("v1", "127.0.0.2", port),
        backend("v2", "127.0.0.3", port),
    ];
    let cp = ControlPlane::start(&dir.join("config"), &[]);
    (backends, cp)
}

#[test]
fn weights_of_80_and_20_between_two_subsets_land_within_3_points() {
    let dir = tempfile::tempdir().unwrap();
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: helloworld, namespace: sample}\nspec:\n  hosts: [helloworld]\n  http:\n  - route:\n    - {destination: {host: helloworld, subset: v1}, weight: 80}\n    - {destination: {host: helloworld, subset: v2}, weight: 20}\n";
    let (_backends, cp) = two_versions(dir.path(), vs);
    let bootstrap = cp.bootstrap(dir.path(), "client", "region1", "zone1");
    let (answers, errors) = answers(&client(&bootstrap, TARGET, &["--calls", "2000"]));
    assert!(errors.is_empty(), "{errors:?}");
    let v1 = *answers.get("v1").unwrap_or(&0) as f64;
    let total = answers.values().sum::<u64>() as f64;
    let share = 100.0 * v1 / total;
    println!("v1 share over {total} calls: {share:.1}% (expected 80 ± 3)");
    assert_eq!(total, 2000.0);
    assert!(
        (77.0..=83.0).contains(&share),
        "v1 got {share:.1}% of calls: {answers:?}"
    );
}

#[test]
fn a_header_match_routes_every_matching_call_to_the_named_subset() {
    let dir = tempfile::tempdir().unwrap();
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: helloworld, namespace: sample}\nspec:\n  hosts: [helloworld]\n  http:\n  - match: [{headers: {x-canary: {exact: \"yes\"}}}]\n    route: [{destination: {host: helloworld, subset: v2}}]\n  - route: [{destination: {host: helloworld, subset: v1}}]\n";
    let (_backends, cp) = two_versions(dir.path(), vs);
    let bootstrap = cp.bootstrap(dir.path(), "client", "region1", "zone1");
    let (with, errors) = answers(&client(
        &bootstrap,
        TARGET,
        &["--calls", "300", "--header", "x-canary=yes"],
    ));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(with, BTreeMap::from([("v2".to_string(), 300)]));
    let (without, _) = answers(&client(&bootstrap, TARGET, &["--calls", "300"]));
    assert_eq!(without, BTreeMap::from([("v1".to_string(), 300)]));
}

#[test]
fn a_client_in_region1_stays_in_region1_and_moves_to_region2_within_2s_when_region1_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dr = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: helloworld, namespace: sample}\nspec:\n  host: helloworld\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 5, interval: 1s, baseEjectionTime: 30s}\n";
    let region2 = format!(
        "{}{}",
        node("n2", "region2", "zone1"),
        pod("hw-r2", "v1", "127.0.0.4", "n2")
    );
    let region1 = format!(
        "{}{}{}",
        node("n1", "region1", "zone1"),
        pod("hw-r1-a", "v1", "127.0.0.2", "n1"),
        pod("hw-r1-b", "v1", "127.0.0.3", "n1")
    );
    let svc = service().replace("port: 5000}", &format!("port: 5000, targetPort: {port}}}"));
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/service.yaml"),
        format!("{svc}{dr}{region2}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("config/region1.yaml"), &region1).unwrap();
    let _backends = [
        backend("r1-a", "127.0.0.2", port),
        backend("r1-b", "127.0.0.3", port),
        backend("r2", "127.0.0.4", port),
    ];
    let cp = ControlPlane::start(&dir.path().join("config"), &[]);
    let bootstrap = cp.bootstrap(dir.path(), "client", "region1", "zone1");
    let mut client = client_spawn(&bootstrap, TARGET, &["--seconds", "9", "--interval", "5"]);
    let lines = lines(client.child.stdout.take().unwrap());
    let mut calls: Vec<(f64, Option<String>, Option<String>)> = Vec::new();
    let mut removed_at = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v.get("started").is_some() {
            continue;
        }
        let t = v["t"].as_f64().unwrap();
        calls.push((
            t,
            v["answer"].as_str().map(String::from),
            v["error"].as_str().map(String::from),
        ));
        // After 200 calls in region1, remove region1's pods from the manifests.
        if removed_at.is_none() && calls.len() == 200 {
            std::fs::remove_file(dir.path().join("config/region1.yaml")).unwrap();
            removed_at = Some(t);
        }
        assert!(Instant::now() < deadline, "client ran too long");
    }
    let removed_at = removed_at.expect("the client made 200 calls");
    let before: Vec<_> = calls.iter().filter(|c| c.0 < removed_at).collect();
    let moved_after = calls
        .iter()
        .filter(|c| c.0 > removed_at && c.1.as_deref() == Some("r2"))
        .map(|c| c.0)
        .next();
    let late: Vec<_> = calls.iter().filter(|c| c.0 > removed_at + 2.0).collect();
    let errors: Vec<_> = calls.iter().filter(|c| c.2.is_some()).collect();
    println!(
        "{} calls; region1 removed at {removed_at:.2}s; first region2 answer {:.3}s later; {} calls after +2s; {} errors",
        calls.len(),
        moved_after.map(|t| t - removed_at).unwrap_or(f64::NAN),
        late.len(),
        errors.len()
    );
    assert!(
        before
            .iter()
            .all(|c| matches!(c.1.as_deref(), Some("r1-a" | "r1-b"))),
        "while region1 exists, only region1 answers"
    );
    assert!(
        before.iter().any(|c| c.1.as_deref() == Some("r1-a"))
            && before.iter().any(|c| c.1.as_deref() == Some("r1-b"))
    );
    assert!(!late.is_empty(), "the client kept calling after the change");
    assert!(
        late.iter().all(|c| c.1.as_deref() == Some("r2")),
        "2 s after region1 is removed every call goes to region2"
    );
    assert!(errors.is_empty(), "no call failed: {errors:?}");
}

#[test]
fn an_invalid_resource_is_nacked_by_the_client_shown_in_syncz_and_other_updates_still_flow() {
    let dir = tempfile::tempdir().unwrap();
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: helloworld, namespace: sample}\nspec:\n  hosts: [helloworld]\n  http: [{route: [{destination: {host: helloworld, subset: v1}}]}]\n";
    let (_backends, cp) = two_versions(dir.path(), vs);
    let bootstrap = cp.bootstrap(dir.path(), "client", "region1", "zone1");
    let mut client = client_spawn(&bootstrap, TARGET, &["--seconds", "20", "--interval", "20"]);
    let lines = lines(client.child.stdout.take().unwrap());
    let last = |want: &str| {
        wait_for(
            Duration::from_secs(15),
            &format!("calls answered by {want}"),
            || {
                let mut seen = None;
                while let Ok(l) = lines.try_recv() {
                    seen = Some(l);
                }
                seen.filter(|l| l.contains(&format!("\"answer\": \"{want}\"")))
            },
        )
    };
    last("v1");
    // Maglev is valid Istio, but a gRPC client cannot do it: it must NACK the v1 cluster it uses,
    // and keep calling v1 with the last version it accepted.
    let config = dir.path().join("config/mesh.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let maglev = text.replace(
        "{name: v1, labels: {version: v1}}",
        "{name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}}}",
    );
    assert_ne!(maglev, text);
    std::fs::write(&config, &maglev).unwrap();
    let nack = wait_for(Duration::from_secs(15), "a NACK in /debug/syncz", || {
        let syncz: serde_json::Value = serde_json::from_str(&cp.get("/debug/syncz")).ok()?;
        let proxy = syncz["proxies"].as_array()?.first()?.clone();
        proxy["types"]["CDS"]["last_nack"]
            .as_str()
            .map(String::from)
    });
    println!("the client's NACK reason: {nack}");
    assert!(
        nack.contains("outbound|5000|v1|helloworld.sample.svc.cluster.local"),
        "{nack}"
    );
    assert!(
        cp.get("/metrics")
            .lines()
            .any(|l| l.starts_with("strait_xds_nacks_total{type=\"CDS\"}") && !l.ends_with(" 0"))
    );
    assert!(
        cp.log().contains("proxy rejected configuration"),
        "the NACK is logged"
    );
    last("v1");
    // Other resources still update: route everything to the (valid) v2 cluster.
    std::fs::write(
        &config,
        maglev.replace("subset: v1}}]}]", "subset: v2}}]}]"),
    )
    .unwrap();
    last("v2");
    let syncz: serde_json::Value = serde_json::from_str(&cp.get("/debug/syncz")).unwrap();
    let rds = &syncz["proxies"][0]["types"]["RDS"];
    assert_eq!(
        rds["acked_nonce"], rds["sent_nonce"],
        "the route change was acknowledged: {rds}"
    );
}
