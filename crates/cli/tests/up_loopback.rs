//! `strait up` without root: examples/multi-primary-multi-network in loopback mode, run as an
//! unprivileged user (as root, the test drops to `nobody` with `setpriv`; `strait up` must pick
//! loopback mode by itself). No namespace is made; every process runs as that user, each pod at
//! its own 127.x address with a sidecar whose bound listeners (generated Sidecar resources
//! that `strait validate` accepts) stand in for capture:
//! - cluster1's client app, calling its sidecar's bound listener, gets v1 and v2; curl through
//!   cluster2's `sleep` sidecar does too; v2's sidecar saw cluster1's calls as mesh mTLS from
//!   sleep's SPIFFE identity, arriving from cluster2's east-west gateway;
//! - the cluster2-only tcp-echo and grpc-echo answer through cluster1's sidecar (TCP, and gRPC
//!   from Python grpcio);
//! - Primary-Remote across networks works the same: the remote's proxies reach the primary's
//!   control plane through its gateway;
//! - Ctrl-C ends every process it started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use support::*;

/// The user an unprivileged run uses when the test runs as root.
const NOBODY: &str = "65534";

fn is_root() -> bool {
    let (_, uid, _) = run("id", &["-u"]);
    uid.trim() == "0"
}

/// A process's start time (`/proc/PID/stat` field 22), while it runs.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A loopback `strait up` run, one at a time.
struct Run {
    run: UpRun,
    /// Held until the mesh is gone (declared last: dropped after the run cleaned up).
    _one: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Run {
    type Target = UpRun;
    fn deref(&self) -> &UpRun {
        &self.run
    }
}

impl std::ops::DerefMut for Run {
    fn deref_mut(&mut self) -> &mut UpRun {
        &mut self.run
    }
}

impl Run {
    /// The processes the run recorded (PID, start time) in its state file.
    fn recorded(&self) -> Vec<(u32, u64)> {
        let text = std::fs::read_to_string(self.state.path().join("state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap();
        state["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["pid"].as_u64().unwrap() as u32,
                    p["start"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

/// `GET url` through `via` (a sidecar's bound listener), keeping the URL's host.
fn curl_via(via: &str, url: &str) -> (u16, String) {
    let (code, body) = curl(&["--connect-to", &format!("::{via}:"), url]);
    (code, body.lines().next().unwrap_or("").to_string())
}

fn versions(answers: &BTreeMap<String, u32>) -> Vec<&str> {
    answers.keys().filter_map(|a| a.split(',').next()).collect()
}

/// One mesh at a time: every loopback mesh uses the same addresses.
static ONE_MESH: Mutex<()> = Mutex::new(());

/// Starts `strait up examples/<example>` as an unprivileged user and waits until it is up.
fn start_unprivileged(example: &str, tag: &str) -> Run {
    let one = ONE_MESH.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("lb{}{tag}", std::process::id() % 100_000);
    let state = tempfile::tempdir().unwrap();
    let mut command = if is_root() {
        // The state directory belongs to the unprivileged user that writes it.
        let (ok, _, err) = run(
            "chown",
            &[
                &format!("{NOBODY}:{NOBODY}"),
                state.path().to_str().unwrap(),
            ],
        );
        assert!(ok, "{err}");
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(env!("CARGO_BIN_EXE_strait"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_strait"))
    };
    command.env("HOME", state.path());
    let mesh = Run {
        run: UpRun::start(command, example, name, state),
        _one: one,
    };
    let printed = mesh.printed.join("\n");
    assert!(
        printed.contains("not root: running in loopback mode"),
        "{printed}"
    );
    mesh
}

/// The tally of `cluster`'s client app once it has reached both versions; none failed.
fn client_reaches_both_versions(mesh: &Run, cluster: &str) {
    let tally = wait_for(
        Duration::from_secs(30),
        "the client to reach both versions",
        || {
            let log = mesh.log(&format!("{cluster}_sample_sleep.app.log"));
            let last = log.lines().last().unwrap_or("").to_string();
            (last.contains("version: v1") && last.contains("version: v2")).then_some(last)
        },
    );
    assert!(tally.contains(", 0 failed]"), "{cluster}: {tally}");
}

/// v2's sidecar saw cluster1's calls as mesh mTLS from sleep, arriving from cluster2's east-west
/// gateway (its load balancer address, the source its proxy binds).
fn v2_saw_cluster1_sleep_through_the_gateway(mesh: &Run) {
    let log = mesh.log("cluster2_sample_helloworld-v2.access.log");
    let calls: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["reporter"] == "destination"
                && e["source_cluster"] == "cluster1"
                && e["response_code"] == 200
        })
        .collect();
    assert!(!calls.is_empty(), "no calls from cluster1 in {log}");
    for e in &calls {
        assert_eq!(
            e["source_principal"], "spiffe://cluster.local/ns/sample/sa/sleep",
            "{e}"
        );
        let from = e["downstream_remote_address"].as_str().unwrap();
        assert!(
            from.starts_with("127.255.0.101:"),
            "not from the gateway: {e}"
        );
    }
}

/// Ctrl-C ends every process the run started.
fn interrupt_and_check_clean(mut mesh: Run, recorded: Vec<(u32, u64)>) {
    run("kill", &["-INT", &mesh.up.id().to_string()]);
    let exited = wait_for(Duration::from_secs(30), "strait up to stop", || {
        mesh.up.try_wait().unwrap()
    });
    assert!(exited.success(), "strait up exited with {exited}");
    for (pid, start) in recorded {
        assert_ne!(
            start_time(pid),
            Some(start),
            "process {pid} outlived strait up"
        );
    }
}

#[test]
fn multi_primary_multi_network_runs_without_root_on_loopback() {
    let mesh = start_unprivileged("multi-primary-multi-network", "a");
    let name = mesh.name.clone();

    // Nothing privileged: no namespace, every process the unprivileged user's.
    let (_, netns, _) = run("ip", &["netns", "list"]);
    assert!(
        !netns.lines().any(|l| l.starts_with(&format!("{name}-"))),
        "{netns}"
    );
    let recorded = mesh.recorded();
    // Two control planes; eight proxies (two gateways, six sidecars); six apps.
    assert_eq!(recorded.len(), 2 + 8 + 6, "{recorded:?}");
    if is_root() {
        for (pid, _) in &recorded {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            assert!(
                uid.split_whitespace().nth(1) == Some(NOBODY),
                "{pid}: {uid}"
            );
        }
    }

    // The generated Sidecars are valid Istio.
    for cluster in ["cluster1", "cluster2"] {
        let file = mesh.state.path().join(format!(
            "clusters/{cluster}/strait-up-loopback-sidecars.yaml"
        ));
        let (ok, out, err) = run(
            env!("CARGO_BIN_EXE_strait"),
            &["validate", file.to_str().unwrap()],
        );
        assert!(ok, "{cluster}: {out}{err}");
    }

    // cluster1's client app, through its sidecar's bound listener, reaches both versions.
    client_reaches_both_versions(&mesh, "cluster1");

    // curl through cluster2's sleep sidecar does too.
    let mut answers: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..30 {
        let (code, body) = curl_via("127.2.1.12", "http://helloworld.sample:5000/hello");
        assert_eq!(code, 200, "{body}");
        *answers.entry(body).or_default() += 1;
    }
    assert_eq!(
        versions(&answers),
        ["Hello version: v1", "Hello version: v2"],
        "{answers:?}"
    );

    v2_saw_cluster1_sleep_through_the_gateway(&mesh);

    // The cluster2-only TCP echo, through cluster1's sidecar and both gateways.
    let mut tcp = TcpStream::connect("127.1.1.12:9000").unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"ping\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains("ping") {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), "hello tcp-echo\nping\n");

    // The cluster2-only gRPC echo, from Python grpcio through cluster1's sidecar.
    let py = python();
    let (ok, out, err) = run(
        py.to_str().unwrap(),
        &[
            "-c",
            GRPC_ECHO_VIA,
            "127.1.1.12:9090",
            "grpc-echo.sample:9090",
        ],
    );
    // message "hi", instance "grpc-echo".
    let want = format!("0a0268691209{}", hex("grpc-echo"));
    assert!(
        ok && out.trim() == want,
        "gRPC echo in loopback mode: {out}{err}"
    );

    interrupt_and_check_clean(mesh, recorded);
}

/// Primary-Remote across networks: the remote's proxies (cluster2) take configuration and
/// certificates from cluster1's control plane through cluster1's gateway, which passes 15012
/// through on its own address; cluster2's gateway is configured by cluster1's Gateway, bound to
/// its own address by its proxy.
#[test]
fn primary_remote_multi_network_runs_without_root_on_loopback() {
    let mesh = start_unprivileged("primary-remote-multi-network", "b");
    let recorded = mesh.recorded();
    client_reaches_both_versions(&mesh, "cluster1");
    client_reaches_both_versions(&mesh, "cluster2");
    v2_saw_cluster1_sleep_through_the_gateway(&mesh);
    let log = mesh.log("cluster2_sample_sleep.sidecar.log");
    assert!(log.contains("xds=127.255.0.100:15012"), "{log}");
    interrupt_and_check_clean(mesh, recorded);
}

/// A gRPC unary call to the echo at `argv[1]` with authority `argv[2]` (how an app without
/// capture calls its sidecar's bound listener); prints the reply's bytes in hex.
const GRPC_ECHO_VIA: &str = r#"
import sys, grpc
channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.default_authority", sys.argv[2])])
grpc.channel_ready_future(channel).result(timeout=10)
echo = channel.unary_unary("/strait.demo.v1.Echo/Echo")
print(echo(b"\n\x02hi", timeout=5).hex())
"#;
