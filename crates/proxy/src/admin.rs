//! The admin API, in Envoy's shapes where they help habits carry over: `/config_dump` (what the
//! proxy holds, as JSON), `/clusters` (each host's address, locality, priority, weight, health
//! and outlier state; `?format=json`), `/stats/prometheus`, `/ready`, `/logging?level=`,
//! `/quitquitquit`. The same server answers the health port (`/healthz/ready`) and the
//! Prometheus port.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde_json::{Value, json};
use strait_xds::Locality;
use strait_xds::endpoint::HealthStatus;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Proxy;
use crate::http::body;
use crate::upstream::limits::Resource;
use crate::upstream::pool::Body;

/// Serves until `stop` flips.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let p = proxy.clone();
                async move { Ok::<_, Infallible>(route(&p, req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body_text: String, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(body_text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn json_response(v: &Value) -> Response<Body> {
    text(
        StatusCode::OK,
        serde_json::to_string_pretty(v).unwrap_or_default(),
        "application/json",
    )
}

fn query<'a>(req: &'a http::Request<Incoming>, key: &str) -> Option<&'a str> {
    crate::http::router::query_param(req.uri().query()?, key)
}

fn route(proxy: &Arc<Proxy>, req: http::Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready" | "/healthz/ready") => {
            if proxy.is_ready() {
                text(StatusCode::OK, "LIVE\n".into(), "text/plain")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "PRE_INITIALIZING: waiting for the first complete configuration from the control plane\n".into(),
                    "text/plain",
                )
            }
        }
        (&Method::GET, "/stats/prometheus" | "/metrics") => text(
            StatusCode::OK,
            proxy.metrics.encode() + &cluster_stats(proxy) + &dns_stats(proxy),
            "text/plain; version=0.0.4",
        ),
        (&Method::GET, "/config_dump") => json_response(&config_dump(proxy)),
        (&Method::GET, "/dns") => json_response(&dns_json(proxy)),
        (&Method::GET, "/certs") => json_response(&certs(proxy)),
        (&Method::GET, "/clusters") => {
            if query(&req, "format") == Some("json") {
                clusters_json(proxy)
            } else {
                text(StatusCode::OK, clusters_text(proxy), "text/plain")
            }
        }
        (&Method::GET | &Method::POST, "/logging") => match query(&req, "level") {
            None => text(
                StatusCode::OK,
                "usage: /logging?level=<trace|debug|info|warn|error> (or a tracing filter such as strait_proxy=debug)\n".into(),
                "text/plain",
            ),
            Some(level) => match (proxy.set_log_level)(level) {
                Ok(()) => text(StatusCode::OK, format!("log level: {level}\n"), "text/plain"),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n"), "text/plain"),
            },
        },
        (&Method::POST, "/quitquitquit") => {
            let _ = proxy.stop.send(true);
            text(StatusCode::OK, "OK\n".into(), "text/plain")
        }
        (&Method::GET, "/") => text(
            StatusCode::OK,
            "/config_dump /clusters[?format=json] /certs /dns /stats/prometheus /ready /logging?level= /quitquitquit\n"
                .into(),
            "text/plain",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found; see /\n".into(), "text/plain"),
    }
}

/// The DNS proxy: its upstreams, counters and the table it answers from.
fn dns_json(proxy: &Proxy) -> Value {
    let Some(dns) = &proxy.dns else {
        return serde_json::json!({"enabled": false});
    };
    let s = &dns.stats;
    serde_json::json!({
        "enabled": true,
        "upstreams": dns.upstreams().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "requests": s.requests.load(Ordering::Relaxed),
        "answered": s.answered.load(Ordering::Relaxed),
        "forwarded": s.forwarded.load(Ordering::Relaxed),
        "upstream_failures": s.upstream_failures.load(Ordering::Relaxed),
        "table": dns.table().map(|t| serde_json::to_value(&*t).unwrap_or(Value::Null)),
    })
}

/// The DNS proxy's counters under Istio's agent metric names.
fn dns_stats(proxy: &Proxy) -> String {
    let Some(dns) = &proxy.dns else {
        return String::new();
    };
    let s = &dns.stats;
    let mut out = String::new();
    for (family, value) in [
        ("istio_agent_dns_requests_total", &s.requests),
        ("istio_agent_dns_upstream_requests_total", &s.forwarded),
        (
            "istio_agent_dns_upstream_failures_total",
            &s.upstream_failures,
        ),
    ] {
        let _ = writeln!(out, "# TYPE {family} counter");
        let _ = writeln!(out, "{family} {}", value.load(Ordering::Relaxed));
    }
    out
}

/// Envoy-style per-cluster counters, for dashboards that read them.
fn cluster_stats(proxy: &Proxy) -> String {
    let snapshot = proxy.snapshot.load();
    let mut out = String::new();
    let mut names: Vec<&String> = snapshot.clusters.keys().collect();
    names.sort();
    let families: [(&str, &str); 10] = [
        ("envoy_cluster_upstream_rq_total", "counter"),
        ("envoy_cluster_upstream_cx_total", "counter"),
        ("envoy_cluster_upstream_cx_idle_timeout", "counter"),
        ("envoy_cluster_upstream_rq_retry", "counter"),
        ("envoy_cluster_upstream_rq_retry_overflow", "counter"),
        ("envoy_cluster_upstream_rq_retry_limit_exceeded", "counter"),
        ("envoy_cluster_upstream_rq_timeout", "counter"),
        ("envoy_cluster_upstream_cx_connect_fail", "counter"),
        ("envoy_cluster_outlier_detection_ejections_total", "counter"),
        ("envoy_cluster_upstream_rq_pending_overflow", "counter"),
    ];
    for (family, kind) in families {
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for name in &names {
            let c = &snapshot.clusters[*name];
            let v = match family {
                "envoy_cluster_upstream_rq_total" => c.stats.requests.load(Ordering::Relaxed),
                "envoy_cluster_upstream_cx_total" => {
                    c.stats.connections_opened.load(Ordering::Relaxed)
                }
                "envoy_cluster_upstream_cx_idle_timeout" => c.idle_timeouts(),
                "envoy_cluster_upstream_rq_retry" => c.stats.retries.load(Ordering::Relaxed),
                "envoy_cluster_upstream_rq_retry_overflow" => {
                    c.stats.retry_overflows.load(Ordering::Relaxed)
                }
                "envoy_cluster_upstream_rq_retry_limit_exceeded" => {
                    c.stats.retry_limit_exceeded.load(Ordering::Relaxed)
                }
                "envoy_cluster_upstream_rq_timeout" => c.stats.timeouts.load(Ordering::Relaxed),
                "envoy_cluster_upstream_cx_connect_fail" => {
                    c.stats.connect_failures.load(Ordering::Relaxed)
                }
                "envoy_cluster_outlier_detection_ejections_total" => {
                    c.stats.ejections.load(Ordering::Relaxed)
                }
                _ => {
                    c.limits.overflowed(Resource::Pending)
                        + c.limits.overflowed(Resource::Connections)
                }
            };
            let _ = writeln!(out, "{family}{{cluster_name=\"{name}\"}} {v}");
        }
    }
    out
}

fn config_dump(proxy: &Proxy) -> Value {
    let store = proxy
        .xds
        .store
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let status = proxy
        .xds
        .status
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let bind_errors = proxy
        .bind_errors
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    json!({
        "node": {
            "id": proxy.node.id,
            "cluster": proxy.node.cluster,
            "namespace": proxy.node.namespace,
            "workload": proxy.node.workload(),
            "locality": proxy.node.locality,
        },
        "xds": status,
        "versions": store.versions.iter().map(|(k, v)| (k.short().to_string(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "rejected": store.rejections.iter().map(|(k, v)| (k.short().to_string(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "listener_bind_errors": bind_errors,
        "listeners": store.listeners.values().map(|l| serde_json::to_value(&**l).unwrap_or(Value::Null)).collect::<Vec<_>>(),
        "routes": store.routes.values().map(|r| serde_json::to_value(&*r.config).unwrap_or(Value::Null)).collect::<Vec<_>>(),
        "clusters": store.clusters.values().map(|c| serde_json::to_value(&**c).unwrap_or(Value::Null)).collect::<Vec<_>>(),
        "endpoints": store.endpoints.values().map(|e| serde_json::to_value(&**e).unwrap_or(Value::Null)).collect::<Vec<_>>(),
        // Private keys are shown as a digest, never their bytes (`strait_xds::secret`).
        "secrets": store.secrets.values().map(|s| serde_json::to_value(&**s).unwrap_or(Value::Null)).collect::<Vec<_>>(),
    })
}

/// `/certs`: the certificates the proxy holds — its workload certificate and the mesh roots
/// (Istio's `default` and `ROOTCA`), then the secrets it received — with serial, validity and
/// names; never a key.
fn certs(proxy: &Proxy) -> Value {
    use crate::secrets::{CA, CERT_CHAIN, SecretView};
    let now = std::time::SystemTime::now();
    let mut views = Vec::new();
    if let Some(cert) = proxy.cluster_env.identity.certificate() {
        views.push(SecretView::of_certificates(
            strait_xds::SDS_DEFAULT,
            CERT_CHAIN,
            &cert.chain.0,
            now,
        ));
        views.push(SecretView::of_certificates(
            strait_xds::SDS_ROOTCA,
            CA,
            &cert.roots,
            now,
        ));
    }
    let store = proxy
        .xds
        .store
        .lock()
        .map(|s| s.secrets.clone())
        .unwrap_or_default();
    views.extend(store.values().map(|s| SecretView::of_secret(s, now)));
    json!({ "secrets": views })
}

/// One host as `/clusters` shows it.
#[derive(Serialize)]
struct HostView<'a> {
    address: String,
    locality: &'a Locality,
    priority: u32,
    weight: u32,
    health: &'static str,
    outlier_ejected: bool,
    ejections_total: u64,
    consecutive_5xx: u32,
    active_requests: u64,
    requests_total: u64,
    idle_connections: usize,
    cluster: &'a str,
    workload: &'a str,
    gateway: bool,
}

/// A circuit breaker's use and limit (`null`: none).
#[derive(Serialize)]
struct LimitView {
    in_use: u64,
    max: Option<u64>,
}

#[derive(Serialize)]
struct LimitsView {
    connections: LimitView,
    pending: LimitView,
    requests: LimitView,
    retries: LimitView,
}

/// One cluster as `/clusters` shows it.
#[derive(Serialize)]
struct ClusterView<'a> {
    name: &'a str,
    service: Option<&'a str>,
    priority_load_percent: Vec<u32>,
    panic: Vec<bool>,
    circuit_breakers: LimitsView,
    hosts: Vec<HostView<'a>>,
}

#[derive(Serialize)]
struct ClustersView<'a> {
    clusters: Vec<ClusterView<'a>>,
}

/// The clusters and their hosts now, sorted by name; typed (not a JSON tree), so a sidecar
/// with ten thousand hosts answers without a burst of memory.
fn clusters_view<'a>(
    snapshot: &'a crate::state::Snapshot,
    plans: &'a [(&'a String, Arc<crate::upstream::Plan>)],
) -> ClustersView<'a> {
    let limit = |c: &crate::upstream::ClusterRuntime, r: Resource| LimitView {
        in_use: c.limits.in_use(r),
        max: Some(c.limits.max(r)).filter(|&m| m != u64::MAX),
    };
    let clusters = plans
        .iter()
        .map(|(name, plan)| {
            let c = &snapshot.clusters[*name];
            let hosts = plan
                .hosts
                .iter()
                .map(|h| {
                    let record = c.outlier_record(h.address).unwrap_or_default();
                    HostView {
                        address: h.address.to_string(),
                        locality: &h.group.locality,
                        priority: h.group.priority,
                        weight: h.weight,
                        health: match h.health {
                            HealthStatus::Healthy => "healthy",
                            HealthStatus::Unhealthy => "unhealthy",
                            HealthStatus::Draining => "draining",
                        },
                        outlier_ejected: h.is_ejected(),
                        ejections_total: record.ejections_total,
                        consecutive_5xx: record.consecutive_5xx,
                        active_requests: h.active_requests(),
                        requests_total: h
                            .used_state()
                            .map_or(0, |s| s.requests.load(Ordering::Relaxed)),
                        idle_connections: h.used_state().map_or(0, |s| s.idle_connections()),
                        cluster: or_unknown(&h.metadata.cluster),
                        workload: or_unknown(&h.metadata.workload),
                        gateway: h.gateway(),
                    }
                })
                .collect();
            ClusterView {
                name,
                service: c.config.service.as_ref().map(|s| s.host.as_str()),
                priority_load_percent: plan.load.percent.clone(),
                panic: plan.load.panic.clone(),
                circuit_breakers: LimitsView {
                    connections: limit(c, Resource::Connections),
                    pending: limit(c, Resource::Pending),
                    requests: limit(c, Resource::Requests),
                    retries: limit(c, Resource::Retries),
                },
                hosts,
            }
        })
        .collect();
    ClustersView { clusters }
}

/// A label as telemetry shows it: `unknown` when empty.
fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        &crate::metrics::Text::UNKNOWN
    } else {
        s
    }
}

/// Each cluster's name and current plan, sorted by name.
fn plans(snapshot: &crate::state::Snapshot) -> Vec<(&String, Arc<crate::upstream::Plan>)> {
    let mut plans: Vec<_> = snapshot
        .clusters
        .iter()
        .map(|(name, c)| (name, c.plan()))
        .collect();
    plans.sort_by(|a, b| a.0.cmp(b.0));
    plans
}

fn clusters_json(proxy: &Proxy) -> Response<Body> {
    let snapshot = proxy.snapshot.load();
    let plans = plans(&snapshot);
    text(
        StatusCode::OK,
        serde_json::to_string_pretty(&clusters_view(&snapshot, &plans)).unwrap_or_default(),
        "application/json",
    )
}

/// Envoy's `/clusters` text: `cluster::host::field::value` lines.
fn clusters_text(proxy: &Proxy) -> String {
    let snapshot = proxy.snapshot.load();
    let plans = plans(&snapshot);
    let view = clusters_view(&snapshot, &plans);
    let mut out = String::new();
    for c in &view.clusters {
        let name = c.name;
        for h in &c.hosts {
            let addr = &h.address;
            // Envoy's flags, each a `/`-prefixed word, or `healthy` when there are none.
            let mut health = String::new();
            if h.outlier_ejected {
                health.push_str("/failed_outlier_check");
            }
            match h.health {
                "unhealthy" => health.push_str("/failed_eds_health"),
                "draining" => health.push_str("/eds_status_draining"),
                _ => {}
            }
            if health.is_empty() {
                health.push_str("healthy");
            }
            let _ = writeln!(out, "{name}::{addr}::health_flags::{health}");
            let _ = writeln!(out, "{name}::{addr}::priority::{}", h.priority);
            let _ = writeln!(out, "{name}::{addr}::weight::{}", h.weight);
            let _ = writeln!(out, "{name}::{addr}::region::{}", h.locality.region);
            let _ = writeln!(out, "{name}::{addr}::zone::{}", h.locality.zone);
            let _ = writeln!(out, "{name}::{addr}::rq_total::{}", h.requests_total);
            let _ = writeln!(out, "{name}::{addr}::rq_active::{}", h.active_requests);
        }
    }
    out
}
