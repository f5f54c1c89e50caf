//! The data-plane scenario: nginx (one process, no master, so stopping it by PID stops it all)
//! answers 1 KiB; h2load drives it directly, through one Strait
//! sidecar (the client's, with an explicit `bind` listener) and through two (the client's and
//! the server's, whose Sidecar `ingress` listener hands to nginx on loopback), over HTTP/1.1
//! keep-alive, HTTP/2 and opaque TCP — the two-hop chains once in plaintext and once over mesh
//! mTLS (a third sidecar with a CA-issued identity, STRICT), against HAProxy and nginx chains
//! with and without mutual TLS between their hops. For each path: saturation throughput,
//! latency percentiles at a fixed 1000 requests per second from the open-model generators, and
//! each proxy's CPU per 1000 requests. Then the proxy's memory idle and holding a mesh of 1000
//! services × 10 endpoints.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::pki::{MeshCa, ReferencePki};
use crate::process::{Memory, Started, free_port, http_get, wait_ready};
use crate::reference;
use crate::synth;

/// How long and how hard.
#[derive(Debug, Clone)]
pub struct Params {
    /// One saturation run of each chain; there are `rounds` of them, interleaved.
    pub saturation: Duration,
    /// Rounds (saturation, then the fixed rate): every chain once per round, round after
    /// round, so slow spells of the shared machine fall on all chains alike; the median round
    /// counts.
    pub rounds: u32,
    pub fixed_rate: u32,
    /// Each chain's time at the fixed rate, over all its rounds.
    pub fixed_duration: Duration,
    /// The mesh the proxy holds for the large-configuration memory row.
    pub large: synth::Shape,
    /// How long each profiled load runs ([`PROFILED`]); none: no profiles.
    pub profile: Option<Duration>,
    /// Only hold the warmed-up chains up this long (or until Ctrl-C) for profiling by hand,
    /// and measure nothing.
    pub hold: Option<Duration>,
}

impl Params {
    /// How long each fixed-rate round loads a chain.
    pub fn fixed_round_length(&self) -> Duration {
        (self.fixed_duration / self.rounds.max(1)).max(Duration::from_secs(1))
    }
}

/// The chains profiled (protocol, path), each compared with the same chain through HAProxy:
/// the target chain of the throughput targets, and the widest gap to HAProxy.
const PROFILED: [(&str, &str, &str); 2] = [
    ("HTTP/1.1", "2 Strait hops, mTLS", "2 HAProxy hops, TLS"),
    ("HTTP/2", "2 Strait hops, mTLS", "2 HAProxy hops, TLS"),
];

/// One chain's proxies profiled under one load.
#[derive(Debug, Clone)]
pub struct ChainProfile {
    pub protocol: &'static str,
    pub path: &'static str,
    /// `None`: saturation (as in the saturation rows); some: that fixed rate.
    pub rate: Option<u32>,
    /// Requests completed while profiled.
    pub requests: u64,
    /// CPU microseconds per request of each proxy on the path, measured in a run of the same
    /// load without perf attached.
    pub cpu_us_per_request: Vec<f64>,
    pub profile: crate::profile::Profile,
}

/// What a chain goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Direct,
    /// One or two Strait sidecars.
    Strait(usize),
    /// Two Strait sidecars over mesh mTLS whose workers run under `SCHED_BATCH`
    /// (`--worker-scheduling batch`).
    StraitBatch,
    /// Two HAProxy hops.
    Haproxy,
    /// Two nginx hops.
    Nginx,
}

/// One chain measured.
#[derive(Debug, Clone)]
pub struct PathResult {
    pub path: &'static str,
    pub protocol: &'static str,
    pub via: Via,
    /// Mutual TLS between the hops (mesh mTLS for Strait).
    pub tls: bool,
    /// The median round's requests per second.
    pub saturation_rps: f64,
    /// The slowest and the fastest round's.
    pub saturation_range: (f64, f64),
    pub saturation_errors: u64,
    /// p50, p90, p99 at the fixed rate.
    pub latency: Option<[Duration; 3]>,
    pub fixed_rps: f64,
    pub fixed_errors: u64,
    /// CPU seconds per 1000 requests of each proxy on the path at the fixed rate (direct: of
    /// the server answering).
    pub cpu_per_1000: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct Results {
    pub paths: Vec<PathResult>,
    /// The client's sidecar idle, with the small configuration.
    pub idle: Memory,
    /// A sidecar holding the large configuration.
    pub large: Memory,
    /// Endpoints in that sidecar's clusters, counted on its admin API.
    pub large_hosts: usize,
    pub large_ready: Duration,
    pub large_shape: synth::Shape,
    pub load_generator: String,
    /// Where the proxies' CPU went ([`PROFILED`]); the reason when there are no profiles.
    pub profiles: Result<Vec<ChainProfile>, String>,
    /// The fixed rate again on the [`BUSY`] chains while busy loops keep every core busy.
    pub busy: Vec<BusyResult>,
    /// How many busy loops ran (one per core).
    pub busy_loops: usize,
}

/// The chains (protocol, path) measured again with every core kept busy by other processes:
/// the default sidecars and the batch-worker ones, whose trade is latency under contention.
const BUSY: [(&str, &str); 4] = [
    ("HTTP/1.1", "2 Strait hops, mTLS"),
    ("HTTP/1.1", "2 Strait hops, mTLS, batch workers"),
    ("HTTP/2", "2 Strait hops, mTLS"),
    ("HTTP/2", "2 Strait hops, mTLS, batch workers"),
];

/// One chain at the fixed rate with every core busy.
#[derive(Debug, Clone)]
pub struct BusyResult {
    pub protocol: &'static str,
    pub path: &'static str,
    /// p50, p90, p99 over all rounds.
    pub latency: Option<[Duration; 3]>,
    pub achieved_rps: f64,
    pub errors: u64,
}

const NGINX_H1: u16 = 8081;
const NGINX_H2: u16 = 8082;
/// The gRPC application ([`crate::grpc_app`]).
const GRPC_APP: u16 = 8083;
const APP_IP: &str = "127.2.0.1";
const SERVER_IP: &str = "127.2.0.2";
/// The server whose sidecar takes mesh mTLS only (STRICT).
const SECURE_IP: &str = "127.2.0.3";
const CLIENT_BIND: &str = "127.2.0.100";
/// The same client and mTLS server, their sidecars' workers under `SCHED_BATCH`.
const SECURE_BATCH_IP: &str = "127.2.0.4";
const CLIENT_BATCH_BIND: &str = "127.2.0.101";

fn nginx_conf(dir: &Path) -> String {
    let body = "x".repeat(1024);
    let d = dir.display();
    format!(
        "worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  keepalive_requests 1000000;
  http2_max_requests 1000000;
  server {{
    listen {APP_IP}:{NGINX_H1}; listen 127.0.0.1:{NGINX_H1};
    location / {{ default_type text/plain; return 200 '{body}'; }}
  }}
  server {{
    listen {APP_IP}:{NGINX_H2} http2; listen 127.0.0.1:{NGINX_H2} http2;
    location / {{ default_type text/plain; return 200 '{body}'; }}
  }}
}}
"
    )
}

/// Services for each chain, the client's Sidecar with bound egress listeners, and the server's
/// Sidecar with bound ingress listeners in front of nginx.
fn mesh() -> String {
    let svc = |name: &str, app: &str, ports: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{selector: {{app: {app}}}, ports: [{ports}]}}\n"
        )
    };
    let pod = |name: &str, app: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}\nspec: {{serviceAccountName: {app}}}\nstatus: {{podIP: {ip}}}\n"
        )
    };
    let docs = [
        // One hop: the client's sidecar straight to nginx.
        svc("one", "app", &format!("{{name: http, port: 8080, targetPort: {NGINX_H1}}}, {{name: http2, port: 8090, targetPort: {NGINX_H2}}}, {{name: tcp, port: 7000, targetPort: {NGINX_H1}}}, {{name: grpc, port: 9000, targetPort: {GRPC_APP}}}")),
        pod("app-0", "app", APP_IP),
        // Two hops: to the server's sidecar, which hands to nginx on loopback.
        svc("two", "server", "{name: http, port: 8080}, {name: http2, port: 8090}, {name: tcp, port: 7001}, {name: grpc, port: 9000}"),
        pod("server-0", "server", SERVER_IP),
        // Two hops over mesh mTLS: the same, to a sidecar with an identity, STRICT.
        svc("two-mtls", "secure", "{name: http, port: 8080}, {name: http2, port: 8090}, {name: tcp, port: 7002}, {name: grpc, port: 9000}"),
        pod("secure-0", "secure", SECURE_IP).replace("app: secure}", "app: secure, security.istio.io/tlsMode: istio}"),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: secure, namespace: default}\nspec: {selector: {matchLabels: {app: secure}}, mtls: {mode: STRICT}}\n".to_string(),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: secure, namespace: default}}\nspec:\n  workloadSelector: {{labels: {{app: secure}}}}\n  ingress:\n  - {{port: {{number: 8080, protocol: HTTP, name: http}}, bind: {SECURE_IP}, captureMode: NONE, defaultEndpoint: 127.0.0.1:{NGINX_H1}}}\n  - {{port: {{number: 8090, protocol: HTTP2, name: http2}}, bind: {SECURE_IP}, captureMode: NONE, defaultEndpoint: 127.0.0.1:{NGINX_H2}}}\n  - {{port: {{number: 9000, protocol: GRPC, name: grpc}}, bind: {SECURE_IP}, captureMode: NONE, defaultEndpoint: 127.0.0.1:{GRPC_APP}}}\n  - {{port: {{number: 7002, protocol: TCP, name: tcp}}, bind: {SECURE_IP}, captureMode: NONE, defaultEndpoint: 127.0.0.1:{NGINX_H1}}}\n  egress:\n  - hosts: [\"./*\"]\n"
        ),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: client, namespace: default}}\nspec:\n  workloadSelector: {{labels: {{app: client}}}}\n  egress:\n  - {{port: {{number: 8080, protocol: HTTP, name: http}}, bind: {CLIENT_BIND}, captureMode: NONE, hosts: [\"./*\"]}}\n  - {{port: {{number: 8090, protocol: HTTP2, name: http2}}, bind: {CLIENT_BIND}, captureMode: NONE, hosts: [\"./*\"]}}\n  - {{port: {{number: 7000, protocol: TCP, name: tcp}}, bind: {CLIENT_BIND}, captureMode: NONE, hosts: [\"./*\"]}}\n  - {{port: {{number: 7001, protocol: TCP, name: tcp2}}, bind: {CLIENT_BIND}, captureMode: NONE, hosts: [\"./*\"]}}\n  - {{port: {{number: 7002, protocol: TCP, name: tcp3}}, bind: {CLIENT_BIND}, captureMode: NONE, hosts: [\"./*\"]}}\n  - {{port: {{number: 9000, protocol: GRPC, name: grpc}}, bind: {CLIENT_BIND}, captureMode: NONE, hosts: [\"./*\"]}}\n"
        ),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: server, namespace: default}}\nspec:\n  workloadSelector: {{labels: {{app: server}}}}\n  ingress:\n  - {{port: {{number: 8080, protocol: HTTP, name: http}}, bind: {SERVER_IP}, captureMode: NONE, defaultEndpoint: 127.0.0.1:{NGINX_H1}}}\n  - {{port: {{number: 8090, protocol: HTTP2, name: http2}}, bind: {SERVER_IP}, captureMode: NONE, defaultEndpoint: 127.0.0.1:{NGINX_H2}}}\n  - {{port: {{number: 9000, protocol: GRPC, name: grpc}}, bind: {SERVER_IP}, captureMode: NONE, defaultEndpoint: 127.0.0.1:{GRPC_APP}}}\n  - {{port: {{number: 7001, protocol: TCP, name: tcp}}, bind: {SERVER_IP}, captureMode: NONE, defaultEndpoint: 127.0.0.1:{NGINX_H1}}}\n  egress:\n  - hosts: [\"./*\"]\n"
        ),
    ];
    // The mTLS pair again, their workers under SCHED_BATCH: their own Sidecars bind their own
    // addresses.
    let batch = |doc: &str, app: &str, ip: &str, batch_ip: &str| {
        doc.replace(&format!("name: {app},"), &format!("name: {app}-batch,"))
            .replace(&format!("app: {app}}}"), &format!("app: {app}-batch}}"))
            .replace(&format!("app: {app},"), &format!("app: {app}-batch,"))
            .replace(ip, batch_ip)
    };
    let batch_docs = [
        batch(&docs[4], "secure", SECURE_IP, SECURE_BATCH_IP),
        batch(&docs[5], "secure", SECURE_IP, SECURE_BATCH_IP)
            .replace("name: secure-0,", "name: secure-batch-0,"),
        batch(&docs[6], "secure", SECURE_IP, SECURE_BATCH_IP),
        batch(&docs[7], "secure", SECURE_IP, SECURE_BATCH_IP),
        batch(&docs[8], "client", CLIENT_BIND, CLIENT_BATCH_BIND),
    ]
    .map(|d| {
        // HTTP chains only: a second service on the TCP port would leave that port's
        // listener (no original destination to go by) two services to choose from.
        d.replace("name: two-mtls,", "name: two-mtls-batch,")
            .replace(", {name: tcp, port: 7002}", "")
            .lines()
            .filter(|l| !l.contains("protocol: TCP"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    });
    docs.iter()
        .chain(&batch_docs)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("---\n")
}

struct ControlPlane {
    /// Kept to stop it (by PID) when dropped.
    _process: Started,
    xds_port: u16,
    /// xDS over TLS and the CA (Istio's 15012).
    secure_port: u16,
}

async fn control_plane(
    strait: &Path,
    config: &Path,
    logs: &Path,
    name: &str,
    extra: &[String],
) -> anyhow::Result<ControlPlane> {
    let (xds_port, debug_port, secure_port) = (free_port()?, free_port()?, free_port()?);
    let mut cmd = Command::new(strait);
    cmd.args(["control-plane", "--cluster", "cluster1", "--config"])
        .arg(config)
        .args(["--xds-listen", &format!("127.0.0.1:{xds_port}")])
        .args(["--debug-listen", &format!("127.0.0.1:{debug_port}")])
        .args(["--secure-listen", &format!("127.0.0.1:{secure_port}")])
        .args(extra)
        .env("RUST_LOG", "warn");
    let mut process = Started::spawn(
        "strait control-plane",
        &mut cmd,
        &logs.join(format!("{name}.log")),
    )?;
    wait_ready(&mut process, debug_port, Duration::from_secs(120)).await?;
    Ok(ControlPlane {
        _process: process,
        xds_port,
        secure_port,
    })
}

struct Proxy {
    process: Started,
    admin: u16,
}

/// Who a proxy is: its pod IP, name, namespace and `app` label, and its identity flags
/// ([`MeshCa::proxy_args`]; none: no identity, plaintext xDS).
struct Pod<'a> {
    ip: &'a str,
    name: &'a str,
    namespace: &'a str,
    app: &'a str,
    identity: Vec<String>,
    /// More `strait proxy` flags.
    extra: &'a [&'a str],
}

async fn proxy(
    strait: &Path,
    cp: &ControlPlane,
    pod: Pod<'_>,
    logs: &Path,
    limit: Duration,
) -> anyhow::Result<(Proxy, Duration)> {
    let Pod {
        ip,
        name: pod,
        namespace,
        app,
        identity,
        extra,
    } = pod;
    let admin = free_port()?;
    let xds = if identity.is_empty() {
        cp.xds_port
    } else {
        cp.secure_port
    };
    let mut cmd = Command::new(strait);
    cmd.args(["proxy", "--xds", &format!("127.0.0.1:{xds}")])
        .args([
            "--node-id",
            &format!("sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"),
        ])
        .args([
            "--meta",
            "CLUSTER_ID=cluster1",
            "--meta",
            &format!("LABELS=app={app}"),
        ])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--health-listen", "off", "--prometheus-listen", "off"])
        .args(&identity)
        .args(extra)
        .env("RUST_LOG", "warn");
    let mut process = Started::spawn(
        &format!("strait proxy {pod}"),
        &mut cmd,
        &logs.join(format!("proxy-{pod}.log")),
    )?;
    let ready = wait_ready(&mut process, admin, limit).await?;
    Ok((Proxy { process, admin }, ready))
}

/// Runs h2load; returns its stdout.
fn h2load<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> anyhow::Result<String> {
    let out = Command::new("h2load")
        .args(args)
        .output()
        .context("running h2load (install nghttp2-client; scripts/bench does)")?;
    if !out.status.success() {
        bail!(
            "h2load {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (requests per second, requests not answered 2xx) from h2load's summary.
pub(crate) fn throughput(out: &str) -> anyhow::Result<(f64, u64)> {
    let finished = out
        .lines()
        .find(|l| l.starts_with("finished in"))
        .context("h2load printed no summary")?;
    let rps = finished
        .split(',')
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("h2load's req/s")?;
    let requests = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .context("h2load's request counts")?;
    let count = |what: &str| {
        requests
            .split(',')
            .find(|p| p.contains(what))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((rps, count("failed") + count("errored") + count("timeout")))
}

struct Chain {
    path: &'static str,
    protocol: &'static str,
    via: Via,
    tls: bool,
    url: String,
    authority: Option<&'static str>,
    h2: bool,
}

// One chain per line reads as the table it is.
#[rustfmt::skip]
fn chains() -> Vec<Chain> {
    use reference::{
        HAPROXY_A, NGINX_A, PLAIN_GRPC, PLAIN_H1, PLAIN_H2, PLAIN_TCP, TLS_GRPC, TLS_H1, TLS_H2,
        TLS_TCP,
    };
    let (h1, h2, tcp, grpc) = ("HTTP/1.1", "HTTP/2", "TCP", "gRPC");
    let c = |path, protocol: &'static str, via, tls, url: String, authority| Chain {
        path,
        protocol,
        via,
        tls,
        // gRPC calls the application's one method.
        url: if protocol == grpc {
            format!("{}{}", url.trim_end_matches('/'), crate::grpc_app::PATH)
        } else {
            url
        },
        authority,
        h2: protocol == h2 || protocol == grpc,
    };
    let client = |port: u16| format!("http://{CLIENT_BIND}:{port}/");
    let client_batch = |port: u16| format!("http://{CLIENT_BATCH_BIND}:{port}/");
    let batch = Via::StraitBatch;
    let at = |ip: &str, port: u16| format!("http://{ip}:{port}/");
    let (one, two) = (Via::Strait(1), Via::Strait(2));
    let (haproxy, nginx) = (Via::Haproxy, Via::Nginx);
    let (one_host, two_host, mtls_host) = (
        "one.default.svc.cluster.local",
        "two.default.svc.cluster.local",
        "two-mtls.default.svc.cluster.local",
    );
    vec![
        c("direct", h1, Via::Direct, false, at(APP_IP, NGINX_H1), None),
        c("1 Strait hop", h1, one, false, client(8080), Some(one_host)),
        c("2 Strait hops", h1, two, false, client(8080), Some(two_host)),
        c("2 Strait hops, mTLS", h1, two, true, client(8080), Some(mtls_host)),
        c("2 Strait hops, mTLS, batch workers", h1, batch, true, client_batch(8080), Some("two-mtls-batch.default.svc.cluster.local")),
        c("direct", h2, Via::Direct, false, at(APP_IP, NGINX_H2), None),
        c("1 Strait hop", h2, one, false, client(8090), Some("one.default.svc.cluster.local:8090")),
        c("2 Strait hops", h2, two, false, client(8090), Some("two.default.svc.cluster.local:8090")),
        c("2 Strait hops, mTLS", h2, two, true, client(8090), Some("two-mtls.default.svc.cluster.local:8090")),
        c("2 Strait hops, mTLS, batch workers", h2, batch, true, client_batch(8090), Some("two-mtls-batch.default.svc.cluster.local:8090")),
        c("direct", grpc, Via::Direct, false, at(APP_IP, GRPC_APP), None),
        c("1 Strait hop", grpc, one, false, client(9000), Some("one.default.svc.cluster.local:9000")),
        c("2 Strait hops", grpc, two, false, client(9000), Some("two.default.svc.cluster.local:9000")),
        c("2 Strait hops, mTLS", grpc, two, true, client(9000), Some("two-mtls.default.svc.cluster.local:9000")),
        c("2 Strait hops, mTLS, batch workers", grpc, batch, true, client_batch(9000), Some("two-mtls-batch.default.svc.cluster.local:9000")),
        c("1 Strait hop", tcp, one, false, client(7000), None),
        c("2 Strait hops", tcp, two, false, client(7001), None),
        c("2 Strait hops, mTLS", tcp, two, true, client(7002), None),
        c("2 HAProxy hops", h1, haproxy, false, at(HAPROXY_A, PLAIN_H1), None),
        c("2 HAProxy hops, TLS", h1, haproxy, true, at(HAPROXY_A, TLS_H1), None),
        c("2 nginx hops", h1, nginx, false, at(NGINX_A, PLAIN_H1), None),
        c("2 nginx hops, TLS", h1, nginx, true, at(NGINX_A, TLS_H1), None),
        c("2 HAProxy hops", h2, haproxy, false, at(HAPROXY_A, PLAIN_H2), None),
        c("2 HAProxy hops, TLS", h2, haproxy, true, at(HAPROXY_A, TLS_H2), None),
        c("2 HAProxy hops", grpc, haproxy, false, at(HAPROXY_A, PLAIN_GRPC), None),
        c("2 HAProxy hops, TLS", grpc, haproxy, true, at(HAPROXY_A, TLS_GRPC), None),
        c("2 nginx hops", grpc, nginx, false, at(NGINX_A, PLAIN_GRPC), None),
        c("2 nginx hops, TLS", grpc, nginx, true, at(NGINX_A, TLS_GRPC), None),
        c("2 HAProxy hops", tcp, haproxy, false, at(HAPROXY_A, PLAIN_TCP), None),
        c("2 HAProxy hops, TLS", tcp, haproxy, true, at(HAPROXY_A, TLS_TCP), None),
    ]
}

/// Where a chain's requests go: the address, the authority they name and the path (for the
/// open-model generators and the gRPC check call).
struct Target {
    addr: std::net::SocketAddr,
    authority: String,
    path: String,
}

fn target(chain: &Chain) -> Option<Target> {
    // `http://host:port/path`.
    let rest = chain.url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Some(Target {
        addr: authority.parse().ok()?,
        authority: chain.authority.unwrap_or(authority).to_string(),
        path: if path.is_empty() { "/" } else { path }.to_string(),
    })
}

/// h2load's arguments for a saturation run of `length`: 32 HTTP/1.1 connections, or 8 HTTP/2
/// connections × 16 streams, from one thread.
fn saturation_args(chain: &Chain, grpc_request: &str, length: Duration) -> Vec<String> {
    let authority = format!(":authority: {}", chain.authority.unwrap_or(""));
    let mut args: Vec<String> = load_args(chain, &authority, grpc_request)
        .into_iter()
        .map(str::to_string)
        .collect();
    let connections: &[&str] = if chain.h2 {
        &["-c", "8", "-m", "16"]
    } else {
        &["-c", "32"]
    };
    let seconds = length.as_secs().max(1).to_string();
    args.extend(connections.iter().map(|a| a.to_string()));
    args.extend([
        "-t".into(),
        "1".into(),
        "-D".into(),
        seconds,
        chain.url.clone(),
    ]);
    args
}

/// h2load's arguments for a chain; gRPC chains POST `grpc_request` (one framed message).
fn load_args<'a>(chain: &'a Chain, authority: &'a str, grpc_request: &'a str) -> Vec<&'a str> {
    let mut args = Vec::new();
    if !chain.h2 {
        args.push("--h1");
    }
    if chain.authority.is_some() {
        args.extend(["-H", authority]);
    }
    if chain.protocol == "gRPC" {
        args.extend([
            "-d",
            grpc_request,
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
        ]);
    }
    args
}

/// Measures every chain; none when `params.hold` asked only to hold them up.
pub async fn run(
    strait: &Path,
    params: &Params,
    logs: &Path,
    say: impl Fn(&str),
) -> anyhow::Result<Option<Results>> {
    let work = tempdir(logs, "data-plane")?;
    std::fs::create_dir_all(work.join("tmp"))?;
    std::fs::write(work.join("nginx.conf"), nginx_conf(&work))?;
    let mut nginx_cmd = Command::new("nginx");
    nginx_cmd
        .args(["-c"])
        .arg(work.join("nginx.conf"))
        .args(["-p"])
        .arg(&work);
    let mut nginx = Started::spawn("nginx", &mut nginx_cmd, &logs.join("nginx.log"))
        .context("starting nginx (install nginx-light; scripts/bench does)")?;
    let mut grpc_cmd = Command::new(std::env::current_exe()?);
    grpc_cmd.args([
        "--serve-grpc",
        &format!("{APP_IP}:{GRPC_APP}"),
        &format!("127.0.0.1:{GRPC_APP}"),
    ]);
    let mut grpc_app = Started::spawn("grpc app", &mut grpc_cmd, &logs.join("grpc-app.log"))?;
    let grpc_request_file = work.join("grpc-request.bin");
    std::fs::write(&grpc_request_file, crate::grpc_app::request_frame())?;
    let grpc_request = grpc_request_file.to_string_lossy().into_owned();
    let config = work.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("mesh.yaml"), mesh())?;
    let ca = MeshCa::create(strait, &work.join("mesh-ca"))?;
    let cp = control_plane(
        strait,
        &config,
        logs,
        "control-plane-data-plane",
        &ca.control_plane_args()?,
    )
    .await?;
    // The clients' sidecars and the mTLS servers' have identities (the service account is the
    // app's, `-batch` aside); the plaintext server's not.
    let mut sidecars = Vec::new();
    let batch: &[&str] = &["--worker-scheduling", "batch"];
    for (ip, name, app, identity, extra) in [
        (CLIENT_BIND, "client-0", "client", Some("client"), &[][..]),
        (SERVER_IP, "server-0", "server", None, &[]),
        (SECURE_IP, "secure-0", "secure", Some("secure"), &[]),
        (
            CLIENT_BATCH_BIND,
            "client-batch-0",
            "client-batch",
            Some("client"),
            batch,
        ),
        (
            SECURE_BATCH_IP,
            "secure-batch-0",
            "secure-batch",
            Some("secure"),
            batch,
        ),
    ] {
        let identity = match identity {
            Some(account) => ca.proxy_args("default", account)?,
            None => vec![],
        };
        let pod = Pod {
            ip,
            name,
            namespace: "default",
            app,
            identity,
            extra,
        };
        let (p, _) = proxy(strait, &cp, pod, logs, Duration::from_secs(30)).await?;
        sidecars.push(p);
    }
    let [client, server, secure, client_batch, secure_batch] = <[Proxy; 5]>::try_from(sidecars)
        .map_err(|_| anyhow::anyhow!("five sidecars were started"))?;
    // The applications up?
    let start = Instant::now();
    for (port, name) in [(NGINX_H1, "nginx"), (GRPC_APP, "grpc-app")] {
        while std::net::TcpStream::connect((APP_IP, port)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!(
                    "{name} did not start; see {}",
                    logs.join(format!("{name}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Ours answering, not a stray process holding the port (ours would have failed to bind):
    // its CPU would be measured as none.
    nginx.check_alive()?;
    grpc_app.check_alive()?;
    let reference_pki = ReferencePki::create(&work.join("reference-pki"))?;
    let references = reference::start(
        &work,
        logs,
        &reference_pki,
        reference::Apps {
            h1: &format!("{APP_IP}:{NGINX_H1}"),
            h2: &format!("{APP_IP}:{NGINX_H2}"),
            grpc: &format!("{APP_IP}:{GRPC_APP}"),
        },
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = client.process.memory()?;

    // The processes a chain's CPU is of: its proxies, or on the direct rows the server's own
    // cost of answering (the floor under every chain).
    let pids = |chain: &Chain| -> Vec<u32> {
        match chain.via {
            Via::Direct if chain.protocol == "gRPC" => vec![grpc_app.pid()],
            Via::Direct => vec![nginx.pid()],
            Via::Strait(n) => [&client, if chain.tls { &secure } else { &server }]
                .into_iter()
                .take(n)
                .map(|p| p.process.pid())
                .collect(),
            Via::StraitBatch => vec![client_batch.process.pid(), secure_batch.process.pid()],
            Via::Haproxy => references.pids(true),
            Via::Nginx => references.pids(false),
        }
    };
    let chains = chains();
    for chain in &chains {
        let authority = format!(":authority: {}", chain.authority.unwrap_or(""));
        let base = load_args(chain, &authority, &grpc_request);
        if chain.protocol == "gRPC" {
            let to = target(chain).with_context(|| format!("the address in {}", chain.url))?;
            crate::grpc_app::check_call(to.addr, &to.authority).await?;
        }
        // Warm up pools and caches.
        let mut warm = base.clone();
        warm.extend(["-n", "200", "-c", "4", chain.url.as_str()]);
        let (_, warm_errors) = throughput(&h2load(&warm)?)?;
        anyhow::ensure!(
            warm_errors == 0,
            "{} {}: {warm_errors} of 200 warm-up requests failed; see the logs in {}",
            chain.protocol,
            chain.path,
            logs.display()
        );
    }
    if let Some(limit) = params.hold {
        hold(&chains, &grpc_request, &pids, limit, &say).await?;
        return Ok(None);
    }
    // Saturation, round after round; each round loads every chain once.
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); chains.len()];
    let mut saturation_errors = vec![0u64; chains.len()];
    for round in 1..=params.rounds.max(1) {
        say(&format!(
            "  saturation round {round} of {}",
            params.rounds.max(1)
        ));
        for (i, chain) in chains.iter().enumerate() {
            let sat = saturation_args(chain, &grpc_request, params.saturation);
            let (rps, errors) = throughput(&h2load(&sat)?)?;
            rounds[i].push(rps);
            saturation_errors[i] += errors;
        }
    }
    // Fixed rate, round after round as well: each round runs every chain for its share of the
    // time, so a slow spell of the shared machine falls on all chains alike, and a chain's CPU
    // is its median round's (one 15 s run per chain moved its CPU by a fifth from one benchmark
    // run to the next).
    let cpu = |chain: &Chain| -> Vec<f64> {
        pids(chain)
            .into_iter()
            .map(|p| crate::process::tree_cpu_seconds(p).unwrap_or(0.0))
            .collect()
    };
    let fixed_rounds = params.rounds.max(1);
    let round_length = params.fixed_round_length();
    let mut fixed: Vec<FixedRounds> = chains.iter().map(|_| FixedRounds::default()).collect();
    for round in 1..=fixed_rounds {
        say(&format!(
            "  {} req/s round {round} of {fixed_rounds}",
            params.fixed_rate
        ));
        for (chain, fixed) in chains.iter().zip(&mut fixed) {
            let to = target(chain).with_context(|| format!("the address in {}", chain.url))?;
            let before = cpu(chain);
            let run = fixed_rate_run(chain, &to, params.fixed_rate, round_length).await?;
            let after = cpu(chain);
            let requests = run.latencies.len().max(1) as f64;
            fixed.cpu_per_1000.push(
                before
                    .iter()
                    .zip(&after)
                    .map(|(b, a)| (a - b) / requests * 1000.0)
                    .collect(),
            );
            fixed.add(run);
        }
    }
    let (busy, busy_loops) = busy_rounds(&chains, params, logs, &say).await?;
    let mut paths = Vec::new();
    for (((chain, mut rps), saturation_errors), fixed) in chains
        .into_iter()
        .zip(rounds)
        .zip(saturation_errors)
        .zip(fixed)
    {
        rps.sort_by(f64::total_cmp);
        let saturation_rps = rps[rps.len() / 2];
        let saturation_range = (rps[0], rps[rps.len() - 1]);
        let latency = fixed.percentiles();
        let fixed_rps = fixed.mean_rps();
        say(&format!(
            "  {} {}: {:.0} req/s saturated, p99 {} at {} req/s",
            chain.protocol,
            chain.path,
            saturation_rps,
            latency.map(|l| crate::stats::ms(l[2])).unwrap_or_default(),
            params.fixed_rate
        ));
        paths.push(PathResult {
            path: chain.path,
            protocol: chain.protocol,
            via: chain.via,
            tls: chain.tls,
            saturation_rps,
            saturation_range,
            saturation_errors,
            latency,
            fixed_rps,
            fixed_errors: fixed.errors,
            cpu_per_1000: median_round(fixed.cpu_per_1000),
        });
    }
    let profiles = match crate::profile::ready(params.profile) {
        Err(why) => Err(why),
        Ok(length) => {
            say("  profiling");
            let setup = ProfileSetup {
                length,
                fixed_rate: params.fixed_rate,
                grpc_request: &grpc_request,
                work: &work,
                logs,
            };
            profile_chains(&setup, &pids)
                .await
                .map_err(|e| format!("profiling failed: {e:#}"))
        }
    };
    drop(references);
    drop(client);
    drop(server);
    drop(secure);
    drop(client_batch);
    drop(secure_batch);
    drop(cp);

    // Memory with a large mesh: every service visible to the sidecar.
    let large_dir = work.join("large");
    synth::write(params.large, &large_dir)?;
    let cp = control_plane(
        strait,
        &synth::Shape::cluster_dir(&large_dir, 1),
        logs,
        "control-plane-large",
        &[],
    )
    .await?;
    let (large, large_ready) = proxy(
        strait,
        &cp,
        Pod {
            ip: "10.250.0.1",
            name: "client-0",
            namespace: "ns-0",
            app: "client",
            identity: vec![],
            extra: &[],
        },
        logs,
        Duration::from_secs(120),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let large_memory = large.process.memory()?;
    // The row is only what it says if the sidecar holds the endpoints.
    let large_hosts = match http_get(large.admin, "/clusters").await {
        Some((200, body)) => body
            .lines()
            .filter(|l| l.contains("::health_flags::"))
            .count(),
        other => bail!("the large-configuration sidecar's /clusters answered {other:?}"),
    };
    if large_hosts == 0 {
        bail!(
            "the sidecar holding {} services has no endpoints in its clusters (see {}): its memory would not be that of the mesh the report names",
            params.large.services,
            logs.join("proxy-client-0.log").display()
        );
    }
    let load_generator = Command::new("h2load")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    Ok(Some(Results {
        paths,
        idle,
        large: large_memory,
        large_hosts,
        large_ready,
        large_shape: params.large,
        busy,
        busy_loops,
        load_generator,
        profiles,
    }))
}

/// Says how to load each chain (its h2load command) and which processes carry it, then waits
/// `limit` or until Ctrl-C, whichever comes first.
async fn hold(
    chains: &[Chain],
    grpc_request: &str,
    pids: &impl Fn(&Chain) -> Vec<u32>,
    limit: Duration,
    say: &impl Fn(&str),
) -> anyhow::Result<()> {
    for chain in chains {
        let authority = format!(":authority: {}", chain.authority.unwrap_or(""));
        let mut command = String::from("h2load");
        for arg in load_args(chain, &authority, grpc_request)
            .into_iter()
            .chain([chain.url.as_str()])
        {
            command.push(' ');
            if arg.contains(' ') {
                command.push_str(&format!("'{arg}'"));
            } else {
                command.push_str(arg);
            }
        }
        let pids: Vec<String> = pids(chain).iter().map(u32::to_string).collect();
        say(&format!(
            "  {} {}: {command}   # processes {}",
            chain.protocol,
            chain.path,
            pids.join(" ")
        ));
    }
    say(&format!(
        "  holding the chains up for {} s; Ctrl-C ends sooner",
        limit.as_secs()
    ));
    tokio::select! {
        _ = tokio::time::sleep(limit) => {}
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
    }
    Ok(())
}

/// What [`profile_chains`] needs from the run.
struct ProfileSetup<'a> {
    length: Duration,
    fixed_rate: u32,
    grpc_request: &'a str,
    work: &'a Path,
    logs: &'a Path,
}

/// Profiles the proxies of each [`PROFILED`] chain and of its HAProxy counterpart, at
/// saturation (h2load as in the saturation rows) and at the fixed rate (the open-model
/// generator): each load runs for `setup.length` twice, first to measure CPU per request, then
/// under perf.
async fn profile_chains(
    setup: &ProfileSetup<'_>,
    pids: &dyn Fn(&Chain) -> Vec<u32>,
) -> anyhow::Result<Vec<ChainProfile>> {
    use crate::profile::Recording;
    let chains = chains();
    let mut profiles = Vec::new();
    for (protocol, strait_path, haproxy_path) in PROFILED {
        for path in [strait_path, haproxy_path] {
            let chain = chains
                .iter()
                .find(|c| c.protocol == protocol && c.path == path)
                .with_context(|| format!("no chain {protocol} {path}"))?;
            let to = target(chain).with_context(|| format!("the address in {}", chain.url))?;
            let pids = pids(chain);
            anyhow::ensure!(
                !pids.is_empty(),
                "no processes to profile on {protocol} {path}"
            );
            for rate in [None, Some(setup.fixed_rate)] {
                let n = profiles.len();
                let load = || async {
                    anyhow::Ok(match rate {
                        None => {
                            let args = saturation_args(chain, setup.grpc_request, setup.length);
                            requests_done(&h2load(&args)?)?
                        }
                        Some(rate) => {
                            let run = fixed_rate_run(chain, &to, rate, setup.length).await?;
                            run.latencies.len() as u64
                        }
                    })
                };
                // CPU per request without perf attached: sampling, and tracing every system
                // call to count them, cost the profiled processes CPU of their own (a third
                // more on the HTTP/1.1 chain, measured by hand).
                let cpu_each = || -> anyhow::Result<Vec<f64>> {
                    pids.iter()
                        .map(|p| crate::process::tree_cpu_seconds(*p))
                        .collect()
                };
                let cpu_before = cpu_each()?;
                let clean_requests = load().await?;
                let cpu_after = cpu_each()?;
                let per_request =
                    |(b, a): (&f64, &f64)| (a - b) * 1e6 / clean_requests.max(1) as f64;
                let cpu_us_per_request =
                    cpu_before.iter().zip(&cpu_after).map(per_request).collect();
                // Then the same load again, profiled.
                let recording = Recording::start(
                    &pids,
                    &setup.work.join(format!("perf-{n}.data")),
                    &setup.logs.join(format!("perf-{n}.log")),
                )
                .await?;
                let requests = load().await?;
                let profile = recording.finish()?;
                profiles.push(ChainProfile {
                    protocol,
                    path,
                    rate,
                    requests,
                    cpu_us_per_request,
                    profile,
                });
            }
        }
    }
    Ok(profiles)
}

/// A chain's fixed-rate rounds.
#[derive(Default)]
struct FixedRounds {
    /// Each round's CPU seconds per 1000 requests, a value per proxy on the path.
    cpu_per_1000: Vec<Vec<f64>>,
    latencies: Vec<Duration>,
    achieved_rps: Vec<f64>,
    errors: u64,
}

impl FixedRounds {
    /// Adds one round's requests.
    fn add(&mut self, run: crate::open_model::OpenRun) {
        self.latencies.extend(run.latencies);
        self.achieved_rps.push(run.achieved_rps);
        self.errors += run.errors;
    }

    /// p50, p90 and p99 over every round's requests.
    fn percentiles(&self) -> Option<[Duration; 3]> {
        (!self.latencies.is_empty()).then(|| {
            [50.0, 90.0, 99.0]
                .map(|q| crate::stats::percentile(&self.latencies, q).unwrap_or_default())
        })
    }

    /// The rounds' mean achieved rate.
    fn mean_rps(&self) -> f64 {
        self.achieved_rps.iter().sum::<f64>() / self.achieved_rps.len().max(1) as f64
    }
}

/// The [`BUSY`] chains at the fixed rate, in interleaved rounds as the other fixed-rate runs,
/// while one busy-looping process per core (this binary, `--busy-loop`) competes for the CPUs.
async fn busy_rounds(
    chains: &[Chain],
    params: &Params,
    logs: &Path,
    say: &impl Fn(&str),
) -> anyhow::Result<(Vec<BusyResult>, usize)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let round_length = params.fixed_round_length();
    let rounds = params.rounds.max(1);
    // Bounded by time on their own, should this runner die; stopped by PID when dropped.
    let lifetime = (round_length * rounds * BUSY.len() as u32 + Duration::from_secs(60)).as_secs();
    let mut loops = Vec::new();
    for i in 0..cores {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["--busy-loop", &lifetime.to_string()]);
        loops.push(Started::spawn(
            "busy loop",
            &mut cmd,
            &logs.join(format!("busy-loop-{i}.log")),
        )?);
    }
    let mut collected: Vec<FixedRounds> = BUSY.iter().map(|_| FixedRounds::default()).collect();
    for round in 1..=rounds {
        say(&format!(
            "  {} req/s with {cores} busy loops, round {round} of {rounds}",
            params.fixed_rate
        ));
        for ((protocol, path), into) in BUSY.iter().zip(&mut collected) {
            let chain = chains
                .iter()
                .find(|c| c.protocol == *protocol && c.path == *path)
                .with_context(|| format!("no chain {protocol} {path}"))?;
            let to = target(chain).with_context(|| format!("the address in {}", chain.url))?;
            into.add(fixed_rate_run(chain, &to, params.fixed_rate, round_length).await?);
        }
    }
    for loop_process in &mut loops {
        loop_process.check_alive()?;
    }
    drop(loops);
    let results = BUSY
        .into_iter()
        .zip(collected)
        .map(|((protocol, path), got)| BusyResult {
            protocol,
            path,
            latency: got.percentiles(),
            achieved_rps: got.mean_rps(),
            errors: got.errors,
        })
        .collect();
    Ok((results, cores))
}

/// Keeps one core busy for `seconds` (the busy-cores rows' competing process).
pub fn busy_loop(seconds: u64) {
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut x = 0u64;
    while Instant::now() < end {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// The round whose CPU, all the path's proxies together, is the median.
fn median_round(mut rounds: Vec<Vec<f64>>) -> Vec<f64> {
    rounds.sort_by(|a, b| a.iter().sum::<f64>().total_cmp(&b.iter().sum::<f64>()));
    let middle = rounds.len() / 2;
    rounds.into_iter().nth(middle).unwrap_or_default()
}

/// The open-model generator at `rate` on a chain: HTTP/2 streams for HTTP/2 and gRPC chains,
/// HTTP/1.1 keep-alive requests otherwise.
async fn fixed_rate_run(
    chain: &Chain,
    to: &Target,
    rate: u32,
    length: Duration,
) -> anyhow::Result<crate::open_model::OpenRun> {
    if chain.h2 {
        let request = crate::open_model::H2Request {
            authority: to.authority.clone(),
            path: to.path.clone(),
            grpc: (chain.protocol == "gRPC")
                .then(|| bytes::Bytes::from(crate::grpc_app::request_frame())),
        };
        crate::open_model::run_h2(to.addr, &request, rate, length)
            .await
            .with_context(|| format!("{} {}", chain.protocol, chain.path))
    } else {
        Ok(crate::open_model::run(to.addr, &to.authority, &to.path, rate, length).await)
    }
}

/// Requests h2load saw completed, from its summary.
fn requests_done(out: &str) -> anyhow::Result<u64> {
    out.lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| l.split(',').find(|p| p.trim_end().ends_with(" done")))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("h2load's count of requests done")
}

fn tempdir(logs: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = logs.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir.canonicalize()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_round_is_chosen_by_all_proxies_together() {
        let rounds = vec![vec![0.20, 0.10], vec![0.09, 0.09], vec![0.12, 0.11]];
        // Totals 0.30, 0.18, 0.23: the middle one is the third round, whole.
        assert_eq!(median_round(rounds), [0.12, 0.11]);
        assert_eq!(median_round(vec![vec![0.05]]), [0.05]);
        assert!(median_round(Vec::new()).is_empty());
    }

    #[test]
    fn fixed_rate_rounds_share_the_chains_time() {
        let mut params = Params {
            saturation: Duration::from_secs(5),
            rounds: 3,
            fixed_rate: 1000,
            fixed_duration: Duration::from_secs(15),
            large: synth::Shape {
                services: 1,
                endpoints: 1,
                clusters: 1,
            },
            profile: None,
            hold: None,
        };
        assert_eq!(params.fixed_round_length(), Duration::from_secs(5));
        params.fixed_duration = Duration::from_secs(1);
        assert_eq!(
            params.fixed_round_length(),
            Duration::from_secs(1),
            "a second at least"
        );
    }
}
