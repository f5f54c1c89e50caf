//! Translation: the mesh model and configuration, seen from one proxy, become that proxy's xDS
//! resources (listeners, routes, clusters, load assignments), named as Istio names them. Pure:
//! no IO; golden-file tests pin every feature.

pub mod cds;
pub mod eds;
pub mod gateways;
pub mod lds;
pub mod names;
pub mod policy;
pub mod proxy;
pub mod rds;
pub mod scope;

use std::collections::BTreeSet;

use strait_config::ConfigSet;
use strait_config::istio::gateway::OutboundMode;
use strait_config::istio::traffic::LocalityLbSetting;
use strait_model::{EndpointAddress, MeshModel, ServicePort, ServiceView};
use strait_xds::cluster::Discovery;
use strait_xds::route::VirtualHost;
use strait_xds::{Cluster, ClusterLoadAssignment, Listener, RouteConfiguration};

pub use eds::{GatewayEndpoint, GatewayTable};
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
}

/// A proxy's resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generated {
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
}

/// A port of the proxy's own workload, receiving traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPort {
    pub target_port: u16,
    pub http: bool,
}

/// One EDS cluster and what its endpoints depend on.
struct EdsCluster<'a> {
    name: String,
    service: &'a ServiceView,
    port: &'a ServicePort,
    subset: Option<&'a strait_config::istio::traffic::Subset>,
    policy: policy::Policy,
}

fn eds_clusters<'a>(
    view: &MeshView<'a>,
    proxy: &ProxyNode,
    services: &[&'a ServiceView],
) -> Vec<(Cluster, Option<EdsCluster<'a>>)> {
    let mut out = Vec::new();
    for s in services {
        let host = s.service.host.as_str();
        let dr = policy::rule_for(view, proxy, host, &s.service.namespace);
        for port in &s.service.ports {
            let mut variants: Vec<(Option<&strait_config::istio::traffic::Subset>, String)> =
                vec![(None, names::outbound_cluster(port.port, "", host))];
            for subset in dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default() {
                variants.push((
                    Some(subset),
                    names::outbound_cluster(port.port, &subset.name, host),
                ));
            }
            for (subset, name) in variants {
                let policy = policy::effective(dr.map(|d| &d.spec), port.port, subset);
                let cluster = cds::outbound_cluster(name.clone(), s, port, subset, &policy, proxy);
                let eds = matches!(cluster.discovery, Discovery::Eds(_)).then_some(EdsCluster {
                    name,
                    service: s,
                    port,
                    subset,
                    policy,
                });
                out.push((cluster, eds));
            }
        }
    }
    out
}

/// The ports on which the proxy's own workload receives traffic.
fn inbound_ports(view: &MeshView<'_>, proxy: &ProxyNode) -> Vec<InboundPort> {
    let mut ports: BTreeSet<(u16, bool)> = BTreeSet::new();
    let me = view.model.workloads().iter().find(|w| {
        w.cluster == proxy.cluster
            && ((proxy.ip.is_some()
                && w.address
                    == EndpointAddress::Ip(
                        proxy.ip.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                    ))
                || (w.name == proxy.workload_name && w.namespace == proxy.namespace))
    });
    if let Some(me) = me {
        for (_, s) in view.model.services() {
            for e in s.endpoints.iter().filter(|e| e.workload == me.reference()) {
                for p in &s.service.ports {
                    if let Some(t) = e.target_port(p.port) {
                        ports.insert((t, p.protocol.is_http()));
                    }
                }
            }
        }
    }
    if let Some(sc) = scope::sidecar_for(view, proxy) {
        for ing in &sc.spec.ingress {
            let target = ing
                .default_endpoint
                .as_deref()
                .and_then(|e| e.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<u16>().ok());
            let proto = ing
                .port
                .as_ref()
                .and_then(|p| p.protocol.as_deref())
                .and_then(strait_model::Protocol::parse);
            if let Some(t) = target.or_else(|| {
                ing.port
                    .as_ref()
                    .and_then(|p| p.number)
                    .and_then(|n| u16::try_from(n).ok())
            }) {
                ports.insert((t, proto.is_some_and(|p| p.is_http())));
            }
        }
    }
    let mut out: Vec<InboundPort> = Vec::new();
    for (t, http) in ports {
        match out.iter_mut().find(|p| p.target_port == t) {
            Some(p) => p.http |= http,
            None => out.push(InboundPort {
                target_port: t,
                http,
            }),
        }
    }
    out
}

/// Every resource for a proxy.
pub fn generate(view: &MeshView<'_>, proxy: &ProxyNode) -> Generated {
    let services = scope::visible_services(view, proxy);
    let clusters_and_eds = eds_clusters(view, proxy, &services);
    let mut generated = Generated::default();
    for (cluster, eds) in &clusters_and_eds {
        generated.clusters.push(cluster.clone());
        if let Some(e) = eds {
            generated.endpoints.push(eds::load_assignment(
                &eds::EdsRequest {
                    cluster_name: &e.name,
                    service: e.service,
                    port: e.port,
                    subset: e.subset,
                    policy: &e.policy,
                    mesh_locality: view.mesh_locality,
                    gateways: view.gateways,
                },
                proxy,
            ));
        }
    }
    match proxy.kind {
        ProxyKind::ProxylessGrpc => {
            generated.listeners = lds::api_listeners(&services);
            for s in &services {
                for p in &s.service.ports {
                    let name = names::grpc_listener(s.service.host.as_str(), p.port);
                    let mut vh = rds::virtual_host(view, proxy, s, p, rds::MESH_GATEWAY);
                    vh.domains.insert(0, name.clone());
                    vh.domains.dedup();
                    generated.routes.push(RouteConfiguration {
                        name,
                        virtual_hosts: vec![vh],
                    });
                }
            }
        }
        ProxyKind::Sidecar => {
            let inbound = inbound_ports(view, proxy);
            generated.listeners = lds::sidecar_listeners(view, proxy, &services, &inbound);
            for (port, entries) in rds::http_ports(&services) {
                let mut vhs: Vec<VirtualHost> = entries
                    .iter()
                    .map(|(s, p)| rds::virtual_host(view, proxy, s, p, rds::MESH_GATEWAY))
                    .collect();
                if scope::allow_any(view, proxy) {
                    vhs.push(VirtualHost {
                        name: "allow_any".into(),
                        domains: vec!["*".into()],
                        routes: vec![passthrough_route()],
                    });
                }
                generated.routes.push(RouteConfiguration {
                    name: port.to_string(),
                    virtual_hosts: vhs,
                });
            }
            generated
                .clusters
                .extend(inbound.iter().map(|p| cds::inbound_cluster(p.target_port)));
            generated.clusters.extend(cds::special_clusters());
        }
        ProxyKind::Router => {
            let (listeners, routes) = lds::router_listeners(view, proxy, &services);
            generated.listeners = listeners;
            generated.routes = routes;
            generated.clusters.extend(cds::special_clusters());
        }
    }
    generated
}

fn passthrough_route() -> strait_xds::route::Route {
    use strait_xds::route::{Action, HeaderEdits, Route, RouteAction, RouteMatch, WeightedCluster};
    Route {
        name: "allow_any".into(),
        matching: RouteMatch::any(),
        action: Action::Forward(RouteAction {
            clusters: vec![WeightedCluster {
                name: names::PASSTHROUGH.into(),
                weight: 100,
                request_headers: HeaderEdits::default(),
                response_headers: HeaderEdits::default(),
            }],
            timeout_ms: Some(0),
            retry: None,
            mirrors: vec![],
            prefix_rewrite: None,
            regex_rewrite: None,
            host_rewrite: None,
            hash_policy: vec![],
            upgrades: vec!["websocket".into()],
        }),
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        fault: None,
        cors: None,
    }
}

/// The load assignments of the named clusters only (an endpoint-only push).
pub fn endpoints_for(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    names: &BTreeSet<String>,
) -> Vec<ClusterLoadAssignment> {
    let services = scope::visible_services(view, proxy);
    eds_clusters(view, proxy, &services)
        .into_iter()
        .filter_map(|(_, e)| e)
        .filter(|e| names.contains(&e.name))
        .map(|e| {
            eds::load_assignment(
                &eds::EdsRequest {
                    cluster_name: &e.name,
                    service: e.service,
                    port: e.port,
                    subset: e.subset,
                    policy: &e.policy,
                    mesh_locality: view.mesh_locality,
                    gateways: view.gateways,
                },
                proxy,
            )
        })
        .collect()
}
