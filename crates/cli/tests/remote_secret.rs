//! Cross-cluster discovery through remote secrets, with two real control planes on loopback:
//! cluster1's control plane watches cluster2's registry over cluster2's authenticated stream,
//! given only what `strait create-remote-secret` printed in cluster2 — and a proxy of cluster1
//! gets cluster2's endpoints. A secret with a token cluster2 did not issue is refused (state
//! `failed`, reason shown); replacing it with a good one, then rotating it again, takes effect
//! without a restart and discovery continues; a Service added in cluster2 arrives
//! incrementally; when cluster2's control plane dies its endpoints stay (state `stale`) for
//! `--remote-stale-after`, then are withdrawn (state `failed`). `strait multicluster check`
//! shows each state and exits 1 unless all are synced. A reader token revoked with `strait ca
//! revoke` ends the open stream within seconds, without a restart of either control plane.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// helloworld's Service, in both clusters.
const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: helloworld, namespace: default}
spec:
  ports: [{port: 5000, name: http}]
  selector: {app: helloworld}
";

/// cluster2 also runs v2's pod, and holds a Secret that must never leave it.
const CLUSTER2_MORE: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: helloworld-v2, namespace: default, labels: {app: helloworld, version: v2}}
spec: {containers: [{name: hw, image: hw}]}
status: {phase: Running, podIP: 10.2.1.11, conditions: [{type: Ready, status: \"True\"}]}
---
apiVersion: v1
kind: Secret
metadata: {name: never-shared, namespace: default}
stringData: {password: hunter2}
";

/// `strait create-remote-secret` for cluster2, its token minted with `key`, valid for an hour.
fn remote_secret(cp2: &ControlPlane, ca: &MeshCa, key: &Path) -> String {
    remote_secret_for(cp2, ca, key, "1h")
}

/// [`remote_secret`] with a token valid for `ttl`.
fn remote_secret_for(cp2: &ControlPlane, ca: &MeshCa, key: &Path, ttl: &str) -> String {
    strait(&[
        "create-remote-secret",
        "--cluster",
        "cluster2",
        "--server",
        &format!("127.0.0.1:{}", cp2.secure_port),
        "--ca-root",
        ca.root.to_str().unwrap(),
        "--token-key",
        key.to_str().unwrap(),
        "--ttl",
        ttl,
    ])
}

/// cluster2's entry on cluster1's `/debug/remotez`, once `want` holds for it.
fn remote_state(
    cp1: &ControlPlane,
    what: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(Duration::from_secs(20), what, || {
        let v: serde_json::Value = serde_json::from_str(&cp1.get("/debug/remotez")).ok()?;
        let r = v["remotes"]
            .as_array()?
            .iter()
            .find(|r| r["cluster"] == "cluster2")?
            .clone();
        want(&r).then_some(r)
    })
}

fn check(cp1: &ControlPlane) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strait"))
        .args(["multicluster", "check", "--debug"])
        .arg(format!("127.0.0.1:{}", cp1.debug_port))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn remote_secrets_give_discovery_that_rotates_and_withdraws_a_dead_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::create(&dir.path().join("ca"));
    let revoked = dir.path().join("revoked-tokens");
    let mut ca_args = ca.control_plane_args();
    ca_args.extend([
        "--token-revocations".into(),
        revoked.to_str().unwrap().into(),
    ]);
    let c2 = dir.path().join("cluster2");
    std::fs::create_dir_all(&c2).unwrap();
    std::fs::write(
        c2.join("sample.yaml"),
        format!("{SERVICE}---\n{CLUSTER2_MORE}"),
    )
    .unwrap();
    let mut cp2 =
        ControlPlane::start_cluster("cluster2", &c2, free_port(), free_port(), &strs(&ca_args));

    let c1 = dir.path().join("cluster1");
    std::fs::create_dir_all(&c1).unwrap();
    std::fs::write(c1.join("sample.yaml"), SERVICE).unwrap();
    // A token from a key cluster2 does not hold.
    let stranger = dir.path().join("stranger-key");
    strait(&[
        "ca",
        "token",
        "--key",
        stranger.to_str().unwrap(),
        "--namespace",
        "x",
    ]);
    std::fs::write(
        c1.join("remote-cluster2.yaml"),
        remote_secret(&cp2, &ca, &stranger),
    )
    .unwrap();
    let mut args1 = strs(&ca_args);
    args1.extend(["--remote-stale-after", "3"]);
    let cp1 = ControlPlane::start_cluster("cluster1", &c1, free_port(), free_port(), &args1);
    let refused = remote_state(&cp1, "cluster2 refused", |r| r["state"] == "failed");
    assert!(
        refused["reason"].as_str().unwrap().contains("reader token"),
        "{refused}"
    );
    let (ok, table) = check(&cp1);
    assert!(
        !ok && table.contains("cluster2") && table.contains("failed"),
        "{table}"
    );

    // The right secret: applied without a restart; cluster1's proxy gets cluster2's endpoint.
    std::fs::write(
        c1.join("remote-cluster2.yaml"),
        remote_secret(&cp2, &ca, &ca.token_key),
    )
    .unwrap();
    let synced = remote_state(&cp1, "cluster2 synced", |r| r["state"] == "synced");
    assert_eq!(
        synced["objects"], 2,
        "the Service and the Pod, never the Secret: {synced}"
    );
    let (ok, table) = check(&cp1);
    assert!(ok && table.contains("synced"), "{table}");
    let proxy = StraitProxy::start(&cp1, dir.path(), "127.0.0.7", "sleep", "app=sleep");
    wait_for(
        Duration::from_secs(10),
        "cluster2's endpoint at cluster1's proxy",
        || {
            proxy
                .admin("/config_dump")
                .contains("10.2.1.11")
                .then_some(())
        },
    );

    // Rotate: a fresh secret replaces the old; the watch reconnects with it and stays synced.
    std::fs::write(
        c1.join("remote-cluster2.yaml"),
        remote_secret(&cp2, &ca, &ca.token_key),
    )
    .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the rotated secret to be used",
        || cp1.log().contains("remote secret changed").then_some(()),
    );
    remote_state(&cp1, "cluster2 synced after rotation", |r| {
        r["state"] == "synced"
    });
    assert!(proxy.admin("/config_dump").contains("10.2.1.11"));

    // A short-lived secret: the open stream ends when its token expires (not only new
    // watches are refused), and a fresh secret brings cluster2 back.
    std::fs::write(
        c1.join("remote-cluster2.yaml"),
        remote_secret_for(&cp2, &ca, &ca.token_key, "4s"),
    )
    .unwrap();
    let expired = remote_state(&cp1, "the 4 s token to expire", |r| {
        r["state"] != "synced"
            && r["reason"]
                .as_str()
                .is_some_and(|m| m.contains("reader token"))
    });
    assert!(
        expired["reason"].as_str().unwrap().contains("expired"),
        "{expired}"
    );
    let fresh = remote_secret(&cp2, &ca, &ca.token_key);
    std::fs::write(c1.join("remote-cluster2.yaml"), &fresh).unwrap();
    remote_state(&cp1, "cluster2 synced with a fresh secret", |r| {
        r["state"] == "synced"
    });

    // That token leaks: cluster2's operator revokes it; the open stream ends (cluster2 keeps
    // running, nothing restarts), and another fresh secret brings cluster2 back.
    let token = fresh
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap();
    let said = strait(&[
        "ca",
        "revoke",
        "--list",
        revoked.to_str().unwrap(),
        "--token",
        token,
    ]);
    assert!(said.starts_with("revoked: token "), "{said}");
    let gone = remote_state(&cp1, "the revoked token's stream to end", |r| {
        r["state"] != "synced"
            && r["reason"]
                .as_str()
                .is_some_and(|m| m.contains("reader token"))
    });
    assert!(
        gone["reason"].as_str().unwrap().contains("revoked"),
        "{gone}"
    );
    assert!(
        cp2.log().contains("token revocations reloaded"),
        "{}",
        cp2.log()
    );
    std::fs::write(
        c1.join("remote-cluster2.yaml"),
        remote_secret(&cp2, &ca, &ca.token_key),
    )
    .unwrap();
    remote_state(&cp1, "cluster2 synced after the revocation", |r| {
        r["state"] == "synced"
    });

    // Incremental: a Service added in cluster2 reaches cluster1's proxy.
    std::fs::write(
        c2.join("more.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}\n",
    )
    .unwrap();
    remote_state(&cp1, "cluster2's new Service", |r| r["objects"] == 3);
    wait_for(
        Duration::from_secs(10),
        "reviews at cluster1's proxy",
        || {
            proxy
                .admin("/config_dump")
                .contains("reviews.default.svc.cluster.local")
                .then_some(())
        },
    );

    // cluster2's control plane dies: its endpoints stay (stale), then are withdrawn (failed).
    cp2.proc.child.kill().unwrap();
    let _ = cp2.proc.child.wait();
    let stale = remote_state(&cp1, "cluster2 stale", |r| r["state"] == "stale");
    assert_eq!(stale["objects"], 3, "{stale}");
    assert!(
        proxy.admin("/config_dump").contains("10.2.1.11"),
        "withdrawn too early"
    );
    remote_state(&cp1, "cluster2 withdrawn", |r| r["state"] == "failed");
    wait_for(
        Duration::from_secs(10),
        "cluster2's endpoint withdrawn",
        || (!proxy.admin("/config_dump").contains("10.2.1.11")).then_some(()),
    );
    assert!(cp1.log().contains("withdrawn"), "{}", cp1.log());
}
