//! Clusters: one per service port (`outbound|<port>||<host>`) and per DestinationRule subset
//! (`outbound|<port>|<subset>|<host>`), inbound clusters for a sidecar's own workload, and the
//! pass-through and black-hole clusters.

use std::collections::BTreeSet;
use std::sync::Arc;

use strait_config::istio::traffic::{
    ClientTlsMode, ConnectionPoolSettings, H2UpgradePolicy, SimpleLb, Subset,
};
use strait_config::istio::workload::Resolution;
use strait_model::{EndpointAddress, ServiceOrigin, ServicePort, ServiceView};
use strait_xds::SocketAddress;
use strait_xds::cluster::{
    CircuitBreakers, Cluster, Discovery, LbPolicy, OutlierDetection, ServiceInfo, TcpKeepalive,
    UpstreamTls, UpstreamTlsMode,
};

use crate::MeshView;
use crate::names;
use crate::policy::Policy;
use crate::proxy::{ProxyKind, ProxyNode};

/// Istio's default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;

fn millis(d: &Option<strait_config::duration::Duration>) -> Option<u64> {
    d.as_ref().map(|d| d.as_std().as_millis() as u64)
}

fn non_negative(v: Option<i32>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0)
}

/// The cluster of one service port and subset for one proxy.
pub fn outbound_cluster(
    mesh: &MeshView<'_>,
    name: String,
    view: &ServiceView,
    port: &ServicePort,
    subset: Option<&Subset>,
    policy: &Policy,
    proxy: &ProxyNode,
) -> Cluster {
    let s = &view.service;
    let lb = policy.load_balancer.as_ref();
    let mut lb_policy = if proxy.kind == ProxyKind::ProxylessGrpc {
        LbPolicy::RoundRobin
    } else {
        LbPolicy::LeastRequest
    };
    let mut discovery = match s.origin {
        _ if s.resolved_by_dns() => {
            let mut targets: Vec<(String, u16)> = view
                .endpoints
                .iter()
                .filter_map(|e| match &e.address {
                    EndpointAddress::Dns(name) => {
                        Some((name.clone(), e.target_port(port.port).unwrap_or(port.port)))
                    }
                    EndpointAddress::Ip(ip) => Some((
                        ip.to_string(),
                        e.target_port(port.port).unwrap_or(port.port),
                    )),
                    _ => None,
                })
                .collect();
            if targets.is_empty() {
                targets.push((s.host.to_string(), port.target_port.unwrap_or(port.port)));
            }
            Discovery::StrictDns(targets)
        }
        ServiceOrigin::ServiceEntry {
            resolution: Resolution::None | Resolution::DynamicDns,
            ..
        } => Discovery::OriginalDst,
        _ => Discovery::Eds(None),
    };
    if let Some(simple) = lb.and_then(|l| l.simple) {
        match simple {
            SimpleLb::RoundRobin => lb_policy = LbPolicy::RoundRobin,
            SimpleLb::LeastConn | SimpleLb::LeastRequest => lb_policy = LbPolicy::LeastRequest,
            SimpleLb::Random => lb_policy = LbPolicy::Random,
            SimpleLb::Passthrough => discovery = Discovery::OriginalDst,
            SimpleLb::Unspecified => {}
        }
    }
    if let Some(ch) = lb.and_then(|l| l.consistent_hash.as_ref()) {
        lb_policy = match (&ch.maglev, &ch.ring_hash) {
            (Some(m), _) => LbPolicy::Maglev {
                table_size: if m.table_size == 0 {
                    65_537
                } else {
                    m.table_size
                },
            },
            (None, Some(r)) => LbPolicy::RingHash {
                minimum_ring_size: r.minimum_ring_size.unwrap_or(1024),
            },
            (None, None) => LbPolicy::RingHash {
                minimum_ring_size: ch.minimum_ring_size.filter(|v| *v > 0).unwrap_or(1024),
            },
        };
    }
    let pool = policy.connection_pool.as_ref();
    let http = pool.and_then(|p| p.http.as_ref());
    let limits = PoolLimits::of(pool);
    let outlier = policy.outlier_detection.as_ref();
    let outlier_detection = outlier.map(|o| OutlierDetection {
        // The deprecated `consecutiveErrors` counts as 5xx errors, as in Istio.
        consecutive_5xx: o
            .consecutive_5xx_errors
            .or(o.consecutive_errors.and_then(|v| u32::try_from(v).ok())),
        consecutive_gateway_errors: o.consecutive_gateway_errors,
        consecutive_local_origin_failures: o.consecutive_local_origin_failures,
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        interval_ms: millis(&o.interval).unwrap_or(10_000),
        base_ejection_time_ms: millis(&o.base_ejection_time).unwrap_or(30_000),
        max_ejection_percent: o
            .max_ejection_percent
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(10),
    });
    let subset_name = subset.map(|x| x.name.as_str()).unwrap_or("");
    let tls = upstream_tls(policy, mesh, view, port, subset_name, proxy).map(Arc::new);
    let distribute = lb
        .and_then(|l| l.locality_lb_setting.as_ref())
        .is_some_and(|l| !l.distribute.is_empty());
    Cluster {
        name,
        discovery,
        lb_policy,
        connect_timeout_ms: limits.connect_timeout_ms,
        circuit_breakers: limits.circuit_breakers,
        outlier_detection,
        http2: port.protocol.is_http2()
            || http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade),
        tls,
        locality_weighted: distribute,
        panic_threshold_percent: outlier
            .map(|o| f64::from(o.min_health_percent.unwrap_or(0).max(0))),
        max_requests_per_connection: limits.max_requests_per_connection,
        idle_timeout_ms: limits.idle_timeout_ms,
        tcp_keepalive: limits.tcp_keepalive,
        service: Some(ServiceInfo {
            host: s.host.to_string(),
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            port: port.port,
            subset: subset.map(|x| x.name.clone()),
        }),
    }
}

/// The cluster an east-west gateway forwards an SNI-routed connection to (Istio's SNI-DNAT
/// cluster): named by the SNI clients send (`outbound_.<port>_.<subset>_.<host>`), with the
/// service cluster's endpoints and balancing, but no TLS and no HTTP settings of its own — the
/// bytes pass through, so the workload's mTLS stays end to end.
pub fn sni_dnat_cluster(service_cluster: &Cluster, port: u16, host: &str) -> Cluster {
    let subset = service_cluster
        .service
        .as_ref()
        .and_then(|s| s.subset.as_deref())
        .unwrap_or("");
    Cluster {
        name: names::sni_for(port, subset, host),
        http2: false,
        tls: None,
        max_requests_per_connection: None,
        idle_timeout_ms: None,
        ..service_cluster.clone()
    }
}

/// Explicit TLS from a DestinationRule, to every endpoint (an explicit `ISTIO_MUTUAL` too, as
/// Istio: the rule is how a workload not marked as having a sidecar is reached with mesh mTLS).
/// Without one, mTLS is automatic (Istio's auto mTLS): `ISTIO_MUTUAL` to the endpoints that
/// have a sidecar (the endpoint metadata says which), plaintext to the others — unless the
/// destination namespace's PeerAuthentication disables mTLS. Proxyless clients speak
/// plaintext.
fn upstream_tls(
    policy: &Policy,
    mesh: &MeshView<'_>,
    view: &ServiceView,
    port: &ServicePort,
    subset: &str,
    proxy: &ProxyNode,
) -> Option<UpstreamTls> {
    let Some(t) = policy.tls.as_ref().filter(|t| t.mode.is_some()) else {
        return auto_mtls(mesh, view, port, subset, proxy);
    };
    let mode = match t.mode? {
        ClientTlsMode::Disable => return None,
        ClientTlsMode::IstioMutual => UpstreamTlsMode::IstioMutual,
        ClientTlsMode::Simple => UpstreamTlsMode::Simple,
        ClientTlsMode::Mutual => UpstreamTlsMode::Mutual,
    };
    if proxy.kind == ProxyKind::ProxylessGrpc && mode == UpstreamTlsMode::IstioMutual {
        return None;
    }
    let host = view.service.sni_host().as_str();
    let sans: Vec<String> = match (&t.subject_alt_names, mode) {
        (Some(s), _) if !s.is_empty() => s.clone(),
        (_, UpstreamTlsMode::IstioMutual) => identities(view),
        _ => Vec::new(),
    };
    Some(UpstreamTls {
        mode,
        sni: match mode {
            UpstreamTlsMode::IstioMutual => Some(names::sni_for(port.port, subset, host)),
            // Originated TLS names the service's host when the rule names no SNI (Envoy's
            // `auto_sni` as Istio sets it), and the server's certificate is checked for it.
            _ => t
                .sni
                .clone()
                .or_else(|| (!host.starts_with('*')).then(|| host.to_string())),
        },
        subject_alt_names: sans,
        alpn: if mode == UpstreamTlsMode::IstioMutual {
            vec!["istio".into()]
        } else {
            Vec::new()
        },
        ca_certificates: t.ca_certificates.clone(),
        client_certificate: t.client_certificate.clone(),
        private_key: t.private_key.clone(),
        credential_name: t.credential_name.clone(),
        insecure_skip_verify: t.insecure_skip_verify == Some(true),
        auto_mtls: false,
    })
}

/// The SPIFFE identities behind a service: what a client accepts from its servers.
fn identities(view: &ServiceView) -> Vec<String> {
    view.endpoints
        .iter()
        .filter_map(|e| e.identity.as_ref().map(ToString::to_string))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn auto_mtls(
    mesh: &MeshView<'_>,
    view: &ServiceView,
    port: &ServicePort,
    subset: &str,
    proxy: &ProxyNode,
) -> Option<UpstreamTls> {
    if proxy.kind == ProxyKind::ProxylessGrpc {
        return None;
    }
    let sans = identities(view);
    if sans.is_empty() || !view.endpoints.iter().any(|e| e.sidecar) {
        return None;
    }
    let server_mode =
        crate::security::peer_policy(mesh, &view.service.namespace, &Default::default())
            .mode(port.port);
    if server_mode == crate::security::PeerMode::Disable {
        return None;
    }
    Some(UpstreamTls {
        mode: UpstreamTlsMode::IstioMutual,
        sni: Some(names::sni_for(
            port.port,
            subset,
            view.service.sni_host().as_str(),
        )),
        subject_alt_names: sans,
        alpn: vec!["istio".into()],
        ca_certificates: None,
        client_certificate: None,
        private_key: None,
        credential_name: None,
        insecure_skip_verify: false,
        auto_mtls: true,
    })
}

/// What a connection pool's settings make of a cluster: Envoy's circuit breakers, the connect
/// and idle timeouts, requests per connection and TCP keepalive.
struct PoolLimits {
    circuit_breakers: Option<CircuitBreakers>,
    connect_timeout_ms: u64,
    max_requests_per_connection: Option<u32>,
    idle_timeout_ms: Option<u64>,
    tcp_keepalive: Option<TcpKeepalive>,
}

impl PoolLimits {
    fn of(pool: Option<&ConnectionPoolSettings>) -> PoolLimits {
        let tcp = pool.and_then(|p| p.tcp.as_ref());
        let http = pool.and_then(|p| p.http.as_ref());
        PoolLimits {
            circuit_breakers: pool.map(|_| CircuitBreakers {
                max_connections: non_negative(tcp.and_then(|t| t.max_connections)),
                max_pending_requests: non_negative(http.and_then(|h| h.http1_max_pending_requests)),
                max_requests: non_negative(http.and_then(|h| h.http2_max_requests)),
                max_retries: non_negative(http.and_then(|h| h.max_retries)),
            }),
            connect_timeout_ms: millis(&tcp.and_then(|t| t.connect_timeout.clone()))
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
            max_requests_per_connection: non_negative(
                http.and_then(|h| h.max_requests_per_connection),
            ),
            idle_timeout_ms: millis(&http.and_then(|h| h.idle_timeout.clone())),
            tcp_keepalive: tcp
                .and_then(|t| t.tcp_keepalive.as_ref())
                .map(|k| TcpKeepalive {
                    probes: k.probes,
                    time_secs: k.time.as_ref().map(|d| d.as_std().as_secs() as u32),
                    interval_secs: k.interval.as_ref().map(|d| d.as_std().as_secs() as u32),
                }),
        }
    }
}

/// A sidecar's cluster for its own workload port `port`, reaching the application at `app`;
/// HTTP/2 to applications that speak it (gRPC and HTTP/2 ports). `pool` bounds what the
/// application is sent (a Sidecar's `inboundConnectionPool`, or its ingress port's
/// `connectionPool`), as Envoy's circuit breakers on Istio's inbound cluster.
pub fn inbound_cluster(
    port: u16,
    app: &SocketAddress,
    http2: bool,
    pool: Option<&ConnectionPoolSettings>,
) -> Cluster {
    let limits = PoolLimits::of(pool);
    Cluster {
        name: names::inbound_cluster(port),
        discovery: Discovery::Static(vec![app.clone()]),
        lb_policy: LbPolicy::RoundRobin,
        connect_timeout_ms: limits.connect_timeout_ms,
        circuit_breakers: limits.circuit_breakers,
        outlier_detection: None,
        http2,
        tls: None,
        locality_weighted: false,
        panic_threshold_percent: None,
        max_requests_per_connection: limits.max_requests_per_connection,
        idle_timeout_ms: limits.idle_timeout_ms,
        tcp_keepalive: limits.tcp_keepalive,
        service: None,
    }
}

/// `PassthroughCluster` (to the original destination) and `BlackHoleCluster` (refuse).
pub fn special_clusters() -> Vec<Cluster> {
    let base = inbound_cluster(0, &SocketAddress::new("127.0.0.1", 0), false, None);
    vec![
        Cluster {
            name: names::BLACKHOLE.into(),
            discovery: Discovery::None,
            ..base.clone()
        },
        Cluster {
            name: names::PASSTHROUGH.into(),
            discovery: Discovery::OriginalDst,
            ..base
        },
    ]
}
