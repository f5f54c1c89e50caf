//! Translation: the mesh model and configuration, seen from one proxy, become that proxy's xDS
//! resources (listeners, routes, clusters, load assignments), named as Istio names them. Pure:
//! no IO; golden-file tests pin every feature.

pub mod authz;
pub mod cds;
pub mod dns;
pub mod eds;
pub mod gateways;
pub mod jwt;
pub mod keys;
pub mod lds;
pub mod names;
pub mod policy;
pub mod proxy;
pub mod rds;
pub mod scope;
pub mod secrets;
pub mod security;

use std::collections::BTreeMap;
use std::sync::Arc;

use strait_config::ConfigSet;
use strait_config::istio::gateway::OutboundMode;
use strait_config::istio::traffic::{ConnectionPoolSettings, LocalityLbSetting, Subset};
use strait_model::{Hostname, MeshModel};
use strait_xds::cluster::Discovery;
use strait_xds::route::VirtualHost;
use strait_xds::{Cluster, ClusterLoadAssignment, Listener, RouteConfiguration, SocketAddress};

pub use eds::{GatewayEndpoint, GatewayTable};
pub use keys::{Profile, ProxyKeys};
pub use proxy::{NodeInfo, ProxyKind, ProxyNode};

/// Everything translation reads.
pub struct MeshView<'a> {
    pub model: &'a MeshModel,
    /// The control plane's own cluster's configuration (routing and policy objects).
    pub config: &'a ConfigSet,
    pub gateways: &'a GatewayTable,
    /// Where mesh-wide Sidecar, DestinationRule and PeerAuthentication objects live.
    pub root_namespace: &'a str,
    pub mesh_locality: Option<&'a LocalityLbSetting>,
    pub mesh_outbound_mode: Option<OutboundMode>,
    /// Key sets the control plane fetched for RequestAuthentications' `jwksUri`s, by URI
    /// (absent: not fetched).
    pub jwks: &'a BTreeMap<String, String>,
}

/// A proxy's resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
}

/// What a sidecar's own workload receives: its ports, and who may reach them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbound {
    pub ports: Vec<InboundPort>,
    /// What PeerAuthentication lets in on the workload: on its ports above, and on any other
    /// port, where traffic is passed through to the port it was sent to (Istio's inbound
    /// passthrough) — the workload's mode, or a `portLevelMtls` port's own.
    pub passthrough: security::PeerPolicy,
    pub authorization: authz::Authorization,
}

/// A port of the proxy's own workload, receiving traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPort {
    /// The workload port traffic arrives on (captured traffic's original destination port);
    /// it names the inbound cluster.
    pub target_port: u16,
    /// Where the application is reached for this port: `127.0.0.1:<target_port>`, or the
    /// `defaultEndpoint` of the Sidecar `ingress` port with this number (Istio's port remapping).
    pub app: SocketAddress,
    pub protocol: InboundProtocol,
    /// What PeerAuthentication lets in on this port.
    pub mtls: security::PeerMode,
    /// What the application may be sent at once: the Sidecar `ingress` port's
    /// `connectionPool`, else the Sidecar's `inboundConnectionPool` (Istio's precedence).
    pub pool: Option<ConnectionPoolSettings>,
    /// TLS terminated with the Sidecar `ingress` port's own certificate (its `tls`), for
    /// callers from outside the mesh: the port then takes that alone, not what PeerAuthentication
    /// says.
    pub tls: Option<strait_xds::listener::DownstreamTls>,
}

impl InboundPort {
    pub fn http(&self) -> bool {
        self.protocol >= InboundProtocol::Http
    }
}

/// How a workload port is served: a Sidecar `ingress` port's declared protocol, else from the
/// protocols of the service ports it backs (the strongest wins when several meet on one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InboundProtocol {
    Tcp,
    Http,
    /// HTTP/2 or gRPC: the application speaks HTTP/2.
    Http2,
}

impl InboundProtocol {
    pub fn of(p: strait_model::Protocol) -> InboundProtocol {
        if p.is_http2() {
            InboundProtocol::Http2
        } else if p.is_http() {
            InboundProtocol::Http
        } else {
            InboundProtocol::Tcp
        }
    }

    /// One letter in a proxy's generation key.
    pub fn key(self) -> &'static str {
        match self {
            InboundProtocol::Tcp => "t",
            InboundProtocol::Http => "h",
            InboundProtocol::Http2 => "2",
        }
    }
}

/// A cluster whose endpoints come over EDS, with everything its load assignment depends on
/// besides the proxy's place (owned, so a server can keep it and recompute endpoints alone).
#[derive(Debug, Clone, PartialEq)]
pub struct EdsPlan {
    /// The cluster (and load assignment) name.
    pub name: String,
    pub host: Hostname,
    pub port: u16,
    /// The subset's labels, for a subset cluster.
    pub subset_labels: Option<BTreeMap<String, String>>,
    /// The locality setting of the DestinationRule for this port and subset.
    pub locality: Option<LocalityLbSetting>,
    /// Whether outlier detection is on (locality priorities need it, as in Istio).
    pub outlier_detection: bool,
    /// The DestinationRule the policy comes from (`namespace/name`), empty when none: load
    /// assignments of the same cluster, rule and proxy place are equal.
    pub rule: String,
}

/// The part of a proxy's configuration that does not depend on where it runs or what it
/// serves: its outbound clusters, their EDS plans, and its routes.
pub struct Outbound {
    pub clusters: Vec<Cluster>,
    pub eds: Vec<EdsPlan>,
    pub routes: Vec<RouteConfiguration>,
}

/// The outbound part of `proxy`'s configuration.
pub fn outbound(view: &MeshView<'_>, proxy: &ProxyNode) -> Outbound {
    let services = scope::visible_services(view, proxy);
    let sni_dnat = proxy.kind == ProxyKind::Router && lds::auto_passthrough(view, proxy);
    let mut clusters = Vec::new();
    let mut eds = Vec::new();
    for s in &services {
        let host = s.service.host.as_str();
        let dr = policy::rule_for(view, proxy, host, &s.service.namespace);
        let rule = dr
            .map(|d| format!("{}/{}", d.meta.namespace, d.meta.name))
            .unwrap_or_default();
        for port in &s.service.ports {
            let mut variants: Vec<(Option<&Subset>, String)> =
                vec![(None, names::outbound_cluster(port.port, "", host))];
            for subset in dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default() {
                variants.push((
                    Some(subset),
                    names::outbound_cluster(port.port, &subset.name, host),
                ));
            }
            for (subset, name) in variants {
                let policy = policy::effective(dr.map(|d| &d.spec), port.port, subset);
                let cluster =
                    cds::outbound_cluster(view, name.clone(), s, port, subset, &policy, proxy);
                let plan = |name: String| EdsPlan {
                    name,
                    host: s.service.host.clone(),
                    port: port.port,
                    subset_labels: subset.map(|s| s.labels.clone()),
                    locality: policy
                        .load_balancer
                        .as_ref()
                        .and_then(|lb| lb.locality_lb_setting.clone()),
                    outlier_detection: policy.outlier_detection.is_some(),
                    rule: rule.clone(),
                };
                if sni_dnat {
                    let dnat = cds::sni_dnat_cluster(&cluster, port.port, host);
                    if matches!(dnat.discovery, Discovery::Eds(_)) {
                        eds.push(plan(dnat.name.clone()));
                    }
                    clusters.push(dnat);
                }
                if matches!(cluster.discovery, Discovery::Eds(_)) {
                    eds.push(plan(name));
                }
                clusters.push(cluster);
            }
        }
    }
    let mut routes = Vec::new();
    match proxy.kind {
        ProxyKind::ProxylessGrpc => {
            for s in &services {
                for p in &s.service.ports {
                    let name = names::grpc_listener(s.service.host.as_str(), p.port);
                    let mut vh = rds::virtual_host(view, proxy, s, p, rds::MESH_GATEWAY);
                    vh.domains.insert(0, name.clone());
                    vh.domains.dedup();
                    routes.push(RouteConfiguration {
                        name,
                        virtual_hosts: vec![vh],
                    });
                }
            }
        }
        ProxyKind::Sidecar => {
            let allow_any = scope::allow_any(view, proxy);
            for (port, entries) in rds::http_ports(&services) {
                let mut vhs: Vec<VirtualHost> = entries
                    .iter()
                    .map(|(s, p)| rds::virtual_host(view, proxy, s, p, rds::MESH_GATEWAY))
                    .collect();
                if allow_any {
                    vhs.push(VirtualHost {
                        name: "allow_any".into(),
                        domains: vec!["*".into()],
                        routes: vec![Arc::new(rds::forward_all("allow_any", names::PASSTHROUGH))],
                    });
                }
                routes.push(RouteConfiguration {
                    name: port.to_string(),
                    virtual_hosts: vhs,
                });
            }
        }
        ProxyKind::Router => routes = lds::router_listeners(view, proxy, &services).1,
    }
    Outbound {
        clusters,
        eds,
        routes,
    }
}

/// The proxy's listeners: for sidecars, the capture listeners, one per service port and those
/// for its own ports (`inbound`); for routers, those of the Gateways selecting them; for
/// proxyless clients, one API listener per service port.
pub fn listeners(view: &MeshView<'_>, proxy: &ProxyNode, inbound: &Inbound) -> Vec<Listener> {
    let services = scope::visible_services(view, proxy);
    let mut listeners = match proxy.kind {
        ProxyKind::ProxylessGrpc => lds::api_listeners(&services),
        ProxyKind::Sidecar => lds::sidecar_listeners(view, proxy, &services, inbound),
        ProxyKind::Router => lds::router_listeners(view, proxy, &services).0,
    };
    if let Some(ms) = proxy.idle_timeout_ms {
        lds::set_idle_timeout(&mut listeners, ms);
    }
    listeners
}

/// Clusters of the proxy itself: inbound clusters of its ports, passthrough and blackhole.
pub fn local_clusters(proxy: &ProxyNode, inbound: &[InboundPort]) -> Vec<Cluster> {
    match proxy.kind {
        ProxyKind::ProxylessGrpc => Vec::new(),
        ProxyKind::Sidecar => {
            let mut out: Vec<Cluster> = inbound
                .iter()
                .map(|p| {
                    cds::inbound_cluster(
                        p.target_port,
                        &p.app,
                        p.protocol == InboundProtocol::Http2,
                        p.pool.as_ref(),
                    )
                })
                .collect();
            out.extend(cds::special_clusters());
            out
        }
        ProxyKind::Router => cds::special_clusters(),
    }
}

/// The load assignment of a planned cluster as `proxy` sees it (its network and locality);
/// `None` when the service is gone.
pub fn load_assignment(
    view: &MeshView<'_>,
    plan: &EdsPlan,
    proxy: &ProxyNode,
) -> Option<ClusterLoadAssignment> {
    let service = view.model.service(&plan.host, &proxy.cluster)?;
    let port = service.service.ports.iter().find(|p| p.port == plan.port)?;
    Some(eds::load_assignment(
        &eds::EdsRequest {
            cluster_name: &plan.name,
            service,
            port,
            subset_labels: plan.subset_labels.as_ref(),
            locality: plan.locality.as_ref(),
            outlier_detection: plan.outlier_detection,
            mesh_locality: view.mesh_locality,
            gateways: view.gateways,
        },
        proxy,
    ))
}

/// Every resource for a proxy.
pub fn generate(view: &MeshView<'_>, proxy: &ProxyNode) -> Generated {
    let inbound = if proxy.kind == ProxyKind::Sidecar {
        Profile::new(view).inbound(view, proxy)
    } else {
        Inbound::default()
    };
    let out = outbound(view, proxy);
    let endpoints = out
        .eds
        .iter()
        .filter_map(|plan| load_assignment(view, plan, proxy))
        .collect();
    let listeners = listeners(view, proxy, &inbound);
    let mut clusters = out.clusters;
    clusters.extend(local_clusters(proxy, &inbound.ports));
    Generated {
        listeners,
        routes: out.routes,
        clusters,
        endpoints,
    }
}
