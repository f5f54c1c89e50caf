//! What of a proxy its configuration depends on, so that proxies alike share one generation:
//! the labels the configuration can react to, and keys for the outbound part (clusters,
//! routes), the load assignments (locality, network) and the inbound part (its own ports).
//!
//! Translation reads a proxy's labels only through selectors (Sidecar and DestinationRule
//! workload selectors, VirtualService `sourceLabels`, Gateway selectors) and
//! `failoverPriority` label names; labels no such place names cannot change the result, so they
//! are left out of the keys. A test checks that proxies with equal keys get equal resources.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use strait_config::istio::common::ServerPort;
use strait_config::istio::traffic::{ConnectionPoolSettings, LoadBalancerSettings, TrafficPolicy};
use strait_model::{ClusterId, EndpointAddress, MeshModel, ServiceView, WorkloadRef};

use crate::proxy::{ProxyKind, ProxyNode};
use crate::security::PeerPolicy;
use crate::{Inbound, InboundPort, InboundProtocol, MeshView, scope};
use strait_xds::SocketAddress;
use strait_xds::listener::DownstreamTls;

/// Label names the current configuration selects on or fails over by.
pub fn relevant_label_keys(view: &MeshView<'_>) -> BTreeSet<String> {
    let c = view.config;
    let mut keys = BTreeSet::new();
    for s in &c.sidecars {
        if let Some(w) = &s.spec.workload_selector {
            keys.extend(w.labels.keys().cloned());
        }
    }
    for g in &c.gateways {
        keys.extend(g.spec.selector.keys().cloned());
    }
    for vs in &c.virtual_services {
        for m in vs.spec.http.iter().flat_map(|r| r.matches.iter()) {
            keys.extend(m.source_labels.keys().cloned());
        }
    }
    let mut failover = |lb: Option<&LoadBalancerSettings>| {
        for entry in lb
            .and_then(|lb| lb.locality_lb_setting.as_ref())
            .map(|l| l.failover_priority.as_slice())
            .unwrap_or_default()
        {
            let name = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
            keys.insert(name.to_string());
        }
    };
    let mut policies: Vec<&TrafficPolicy> = Vec::new();
    for dr in &c.destination_rules {
        policies.extend(dr.spec.traffic_policy.as_ref());
        policies.extend(
            dr.spec
                .subsets
                .iter()
                .filter_map(|s| s.traffic_policy.as_ref()),
        );
    }
    for p in policies {
        failover(p.load_balancer.as_ref());
        for port in p.port_level_settings.iter().flatten() {
            failover(port.load_balancer.as_ref());
        }
    }
    if let Some(mesh) = view.mesh_locality {
        for entry in &mesh.failover_priority {
            let name = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
            keys.insert(name.to_string());
        }
    }
    for dr in &c.destination_rules {
        if let Some(w) = &dr.spec.workload_selector {
            keys.extend(w.match_labels.keys().cloned());
        }
    }
    keys
}

/// A proxy's generation keys: proxies with equal keys get equal resources of that part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyKeys {
    /// Clusters, routes and (for routers and proxyless clients) listeners: kind, namespace,
    /// cluster and the relevant labels.
    pub outbound: String,
    /// Load assignments: kind (routers never cross networks), cluster, network, locality and
    /// the relevant labels.
    pub endpoints: String,
    /// The proxy's own receiving ports and their authorization (sidecars only).
    pub inbound: String,
    pub inbound_side: Inbound,
    /// The DNS name table, besides the outbound part: network and IP families.
    pub names: String,
    /// The node's own listener settings (its idle timeout), besides outbound and inbound.
    pub connection: String,
}

impl ProxyKeys {
    /// The key of the whole configuration.
    pub fn full(&self) -> String {
        format!(
            "{}#{}#{}#{}#{}",
            self.outbound, self.endpoints, self.inbound, self.names, self.connection
        )
    }
}

/// Where workloads receive traffic: for each endpoint address, the workload ports it serves
/// (found by the proxy's IP, as Istio finds a proxy's service targets).
#[derive(Debug, Default, PartialEq)]
struct InboundIndex {
    /// Endpoint IP → (cluster, workload port, protocol) for every service port it backs, with
    /// how many service endpoints give it (so that a change can take its own away).
    by_ip: HashMap<IpAddr, BTreeMap<(ClusterId, u16, InboundProtocol), u32>>,
}

impl InboundIndex {
    fn new(model: &MeshModel) -> Self {
        let mut index = InboundIndex::default();
        for (_, s) in model.services() {
            index.count(s, true);
        }
        index
    }

    /// Adds what a service's endpoints give (or, with `add` false, takes it away).
    fn count(&mut self, s: &ServiceView, add: bool) {
        for e in &s.endpoints {
            let EndpointAddress::Ip(ip) = e.address else {
                continue;
            };
            for p in &s.service.ports {
                let Some(t) = e.target_port(p.port) else {
                    continue;
                };
                let item = (e.cluster.clone(), t, InboundProtocol::of(p.protocol));
                if add {
                    *self.by_ip.entry(ip).or_default().entry(item).or_insert(0) += 1;
                    continue;
                }
                let Some(items) = self.by_ip.get_mut(&ip) else {
                    continue;
                };
                if let Some(n) = items.get_mut(&item) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        items.remove(&item);
                    }
                }
                if items.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }

    /// The proxy's workload ports: by its IP, else (no IP, or none of its endpoints known by
    /// it) by its workload name, looked up in the model.
    fn ports_of(&self, model: &MeshModel, proxy: &ProxyNode) -> BTreeSet<(u16, InboundProtocol)> {
        let by_ip: BTreeSet<(u16, InboundProtocol)> = proxy
            .ip
            .and_then(|ip| self.by_ip.get(&ip))
            .into_iter()
            .flat_map(BTreeMap::keys)
            .filter(|(c, _, _)| *c == proxy.cluster)
            .map(|(_, t, h)| (*t, *h))
            .collect();
        if !by_ip.is_empty() {
            return by_ip;
        }
        let me: Option<WorkloadRef> = model
            .workloads()
            .iter()
            .find(|w| {
                w.cluster == proxy.cluster
                    && w.namespace == proxy.namespace
                    && w.name == proxy.workload_name
            })
            .map(|w| w.reference());
        let Some(me) = me else {
            return BTreeSet::new();
        };
        let mut ports = BTreeSet::new();
        for (_, s) in model.services() {
            for e in s
                .endpoints
                .iter()
                .filter(|e| e.cluster == proxy.cluster && e.workload == me)
            {
                for p in &s.service.ports {
                    if let Some(t) = e.target_port(p.port) {
                        ports.insert((t, InboundProtocol::of(p.protocol)));
                    }
                }
            }
        }
        ports
    }
}

/// What is needed to key and place proxies under one view: built once per version, or
/// carried to the next when only some services' endpoints changed.
#[derive(Debug, PartialEq)]
pub struct Profile {
    relevant: BTreeSet<String>,
    inbound: InboundIndex,
}

impl Profile {
    pub fn new(view: &MeshView<'_>) -> Profile {
        Profile {
            relevant: relevant_label_keys(view),
            inbound: InboundIndex::new(view.model),
        }
    }

    /// The profile of `new` from this one of `old`, where only the services of `hosts`
    /// differ (the configuration, which gives the relevant labels, is the same).
    pub fn update_hosts(&mut self, old: &MeshModel, new: &MeshModel, hosts: &BTreeSet<String>) {
        for (model, add) in [(old, false), (new, true)] {
            for (_, s) in model
                .services()
                .filter(|(k, _)| hosts.contains(k.host.as_str()))
            {
                self.inbound.count(s, add);
            }
        }
    }

    /// Label names the configuration selects on or fails over by.
    pub fn relevant_labels(&self) -> &BTreeSet<String> {
        &self.relevant
    }

    /// The ports on which the proxy's own workload receives traffic: those of the services its
    /// endpoints back — or, when its Sidecar resource lists `ingress` ports, those alone, each
    /// by its own number, handing to its `defaultEndpoint` (Istio's port remapping: traffic
    /// arriving on 9080 for an application listening on 8080).
    fn inbound_ports(
        &self,
        view: &MeshView<'_>,
        proxy: &ProxyNode,
        peer: &PeerPolicy,
    ) -> Vec<InboundPort> {
        let mut ports = self.inbound.ports_of(view.model, proxy);
        // Ingress ports' applications; every other port's is on loopback at its own number.
        let mut apps: BTreeMap<u16, SocketAddress> = BTreeMap::new();
        let sidecar = scope::sidecar_for(view, proxy);
        let default_pool = sidecar.and_then(|sc| sc.spec.inbound_connection_pool.clone());
        let mut pools: BTreeMap<u16, ConnectionPoolSettings> = BTreeMap::new();
        let mut own_tls: BTreeMap<u16, DownstreamTls> = BTreeMap::new();
        if let Some(sc) = sidecar
            && !sc.spec.ingress.is_empty()
        {
            // As Istio: a Sidecar that lists ingress ports configures those and no others; the
            // workload's other ports are passed through (under its PeerAuthentication).
            ports.clear();
            for ing in &sc.spec.ingress {
                let Some(port) = ing.port.as_ref().and_then(ServerPort::port) else {
                    continue;
                };
                let mut proto = ing
                    .port
                    .as_ref()
                    .and_then(|p| p.protocol.as_deref())
                    .and_then(strait_model::Protocol::parse);
                if let Some(tls) = ing.tls.as_ref().and_then(crate::lds::own_certificate) {
                    // HTTPS terminated here is HTTP to the application.
                    if proto == Some(strait_model::Protocol::Https) {
                        proto = Some(strait_model::Protocol::Http);
                    }
                    own_tls.insert(port, tls);
                }
                // The ingress port's own declared protocol, whatever a service says of the
                // same port number (as Istio: a listed ingress port is configured as listed).
                ports.retain(|(p, _)| *p != port);
                ports.insert((
                    port,
                    proto.map_or(InboundProtocol::Tcp, InboundProtocol::of),
                ));
                if let Some(app) = ing
                    .default_endpoint
                    .as_deref()
                    .and_then(|e| default_endpoint(e, proxy))
                {
                    apps.insert(port, app);
                }
                if let Some(pool) = &ing.connection_pool {
                    pools.insert(port, pool.clone());
                }
            }
        }
        let mut out: Vec<InboundPort> = Vec::new();
        for (t, protocol) in ports {
            match out.iter_mut().find(|p| p.target_port == t) {
                Some(p) => p.protocol = p.protocol.max(protocol),
                None => out.push(InboundPort {
                    target_port: t,
                    app: apps
                        .get(&t)
                        .cloned()
                        .unwrap_or_else(|| SocketAddress::new("127.0.0.1", t)),
                    protocol,
                    mtls: peer.mode(t),
                    pool: pools.get(&t).or(default_pool.as_ref()).cloned(),
                    tls: own_tls.get(&t).cloned(),
                }),
            }
        }
        out
    }

    /// The ports of the proxy's own workload and the authorization in front of them.
    pub fn inbound(&self, view: &MeshView<'_>, proxy: &ProxyNode) -> Inbound {
        let peer = crate::security::peer_policy(view, &proxy.namespace, &proxy.labels);
        Inbound {
            ports: self.inbound_ports(view, proxy, &peer),
            passthrough: peer,
            authorization: crate::authz::for_workload(view, &proxy.namespace, &proxy.labels),
        }
    }

    /// The keys of `proxy`.
    pub fn keys(&self, view: &MeshView<'_>, proxy: &ProxyNode) -> ProxyKeys {
        let mut labels = String::new();
        for (k, v) in proxy
            .labels
            .iter()
            .filter(|(k, _)| self.relevant.contains(*k))
        {
            let _ = write!(labels, "{k}={v},");
        }
        // A gateway's listeners carry the policies that select it.
        let gateway_security = if proxy.kind == ProxyKind::Router {
            crate::authz::for_workload(view, &proxy.namespace, &proxy.labels).key()
        } else {
            String::new()
        };
        let outbound = format!(
            "{:?}|{}|{}|{}|{labels}|{gateway_security}",
            proxy.kind, proxy.namespace, proxy.cluster, proxy.captured
        );
        let endpoints = format!(
            "{}|{}|{}|{}|{labels}",
            proxy.kind == ProxyKind::Router,
            proxy.cluster,
            proxy.network,
            proxy.locality
        );
        let inbound_side = if proxy.kind == ProxyKind::Sidecar {
            self.inbound(view, proxy)
        } else {
            Inbound::default()
        };
        let mut inbound = inbound_side.authorization.key();
        let passthrough = &inbound_side.passthrough;
        let _ = write!(inbound, "|{}", passthrough.workload.key());
        for (port, mode) in &passthrough.ports {
            let _ = write!(inbound, "{port}{},", mode.key());
        }
        inbound.push('|');
        for p in &inbound_side.ports {
            let _ = write!(
                inbound,
                "{}{}{}>{}:{},",
                p.target_port,
                p.protocol.key(),
                p.mtls.key(),
                p.app.ip,
                p.app.port
            );
        }
        ProxyKeys {
            outbound,
            endpoints,
            inbound,
            inbound_side,
            names: format!("{}|{}", proxy.network, proxy.families.key()),
            connection: proxy
                .idle_timeout_ms
                .map_or_else(String::new, |ms| format!("idle={ms}")),
        }
    }
}

/// Where a Sidecar `ingress` port's `defaultEndpoint` hands traffic: `127.0.0.1:PORT` or
/// `[::1]:PORT` as written (`:PORT`, which validation lets through, as loopback), `0.0.0.0:PORT` or `[::]:PORT` to the proxy's own instance address
/// (loopback when it has none); `None` for what is not an address (`unix://` sockets).
fn default_endpoint(text: &str, proxy: &ProxyNode) -> Option<SocketAddress> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host.is_empty() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse().ok()?
    };
    let ip = if ip.is_unspecified() {
        proxy.ip.unwrap_or(if ip.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        })
    } else {
        ip
    };
    Some(SocketAddress::new(ip.to_string(), port))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use strait_config::{ConfigSet, LoadOptions, load_str};
    use strait_model::{ClusterSource, MeshSettings};

    use super::*;
    use crate::eds::GatewayTable;
    use crate::security::PeerMode;

    #[test]
    fn a_default_endpoint_is_loopback_as_written_or_the_instance_address_for_unspecified() {
        let with_ip = |ip: Option<&str>| {
            let node = crate::proxy::NodeInfo {
                id: format!(
                    "sidecar~{}~reviews-v1.bookinfo~bookinfo.svc.cluster.local",
                    ip.unwrap_or("")
                ),
                ..Default::default()
            };
            ProxyNode::from_node(&node, &ClusterId::new("c1")).unwrap()
        };
        let at = |text: &str, proxy: &ProxyNode| {
            default_endpoint(text, proxy).map(|a| format!("{}:{}", a.ip, a.port))
        };
        let pod = with_ip(Some("10.0.3.1"));
        assert_eq!(
            at("127.0.0.1:8080", &pod).as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(at("[::1]:8080", &pod).as_deref(), Some("::1:8080"));
        assert_eq!(at("0.0.0.0:8443", &pod).as_deref(), Some("10.0.3.1:8443"));
        assert_eq!(at("[::]:8443", &pod).as_deref(), Some("10.0.3.1:8443"));
        assert_eq!(
            at("0.0.0.0:8443", &with_ip(None)).as_deref(),
            Some("127.0.0.1:8443")
        );
        assert_eq!(at(":8080", &pod).as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(at("unix:///var/run/app.sock", &pod), None);
        assert_eq!(at("127.0.0.1:http", &pod), None);
    }

    fn model(pod_ip: &str) -> (MeshModel, ConfigSet) {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: a, namespace: ns}}\nspec: {{ports: [{{port: 80, name: http}}], selector: {{app: a}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: a-0, namespace: ns, labels: {{app: a}}}}\nstatus: {{podIP: {pod_ip}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: b, namespace: ns}}\nspec: {{ports: [{{port: 9090, name: grpc}}], selector: {{app: b}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: b-0, namespace: ns, labels: {{app: b}}}}\nstatus: {{podIP: 10.0.0.2}}\n"
        );
        build(&yaml)
    }

    fn build(yaml: &str) -> (MeshModel, ConfigSet) {
        let config = ConfigSet::from_resources(
            load_str(yaml, "t.yaml", &LoadOptions::default()).into_resources(),
        );
        let source = ClusterSource {
            id: ClusterId::new("c1"),
            network: Default::default(),
            config: Arc::new(config.clone()),
        };
        (
            MeshModel::build(Arc::new(MeshSettings::default()), &[source]),
            config,
        )
    }

    /// The mesh as a translation sees it, in root namespace `istio-system`.
    fn view<'a>(
        model: &'a MeshModel,
        config: &'a ConfigSet,
        gateways: &'a GatewayTable,
        jwks: &'a BTreeMap<String, String>,
    ) -> MeshView<'a> {
        MeshView {
            model,
            config,
            gateways,
            root_namespace: "istio-system",
            mesh_locality: None,
            mesh_outbound_mode: None,
            jwks,
        }
    }

    fn profile(model: &MeshModel, config: &ConfigSet) -> Profile {
        Profile::new(&view(model, config, &GatewayTable::new(), &BTreeMap::new()))
    }

    /// As Istio: a Sidecar listing ingress ports configures those and none of the services'
    /// other ports, which pass through under the workload's PeerAuthentication — its mode, and
    /// `portLevelMtls` ports by their own (an UNSET one inheriting).
    #[test]
    fn listed_ingress_ports_are_the_only_ports_and_the_rest_pass_through_by_policy() {
        let (model, config) = build(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {ports: [{port: 80, name: http}, {port: 81, name: http-admin}], selector: {app: a}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a-0, namespace: ns, labels: {app: a}}\nstatus: {podIP: 10.0.0.1}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a, namespace: ns}\nspec:\n  workloadSelector: {labels: {app: a}}\n  ingress: [{port: {number: 8000, protocol: HTTP, name: web}, defaultEndpoint: 127.0.0.1:80}]\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ns-wide, namespace: ns}\nspec: {mtls: {mode: STRICT}}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a, namespace: ns}\nspec:\n  selector: {matchLabels: {app: a}}\n  portLevelMtls: {\"81\": {mode: PERMISSIVE}, \"9000\": {mode: DISABLE}, \"9001\": {mode: UNSET}}\n",
        );
        let (gateways, jwks) = (GatewayTable::new(), BTreeMap::new());
        let view = view(&model, &config, &gateways, &jwks);
        let node = ProxyNode::from_node(
            &crate::proxy::NodeInfo {
                id: "sidecar~10.0.0.1~a-0.ns~ns.svc.cluster.local".into(),
                labels: BTreeMap::from([("app".to_string(), "a".to_string())]),
                ..Default::default()
            },
            &ClusterId::new("c1"),
        )
        .unwrap();
        let inbound = profile(&model, &config).inbound(&view, &node);
        let ports: Vec<_> = inbound
            .ports
            .iter()
            .map(|p| (p.target_port, p.app.port, p.protocol, p.mtls))
            .collect();
        assert_eq!(
            ports,
            [(8000, 80, InboundProtocol::Http, PeerMode::Strict)],
            "only the listed port, not the services' 80 and 81"
        );
        assert_eq!(inbound.passthrough.workload, PeerMode::Strict);
        assert_eq!(
            inbound.passthrough.ports,
            BTreeMap::from([(81, PeerMode::Permissive), (9000, PeerMode::Disable)])
        );
    }

    /// A profile carried over an endpoint change equals one built afresh: the moved pod's
    /// address loses its port, the new one gains it, the other service's stays.
    #[test]
    fn a_profile_updated_for_changed_hosts_equals_one_built_afresh() {
        let (before, config) = model("10.0.0.1");
        let (after, _) = model("10.0.0.9");
        let mut carried = profile(&before, &config);
        let hosts = BTreeSet::from(["a.ns.svc.cluster.local".to_string()]);
        carried.update_hosts(&before, &after, &hosts);
        let fresh = profile(&after, &config);
        assert_eq!(carried, fresh);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!fresh.inbound.by_ip.contains_key(&ip("10.0.0.1")));
        assert!(fresh.inbound.by_ip.contains_key(&ip("10.0.0.9")));
        assert!(fresh.inbound.by_ip.contains_key(&ip("10.0.0.2")));
    }

    /// A node's `IDLE_TIMEOUT` reaches its listeners, and only its own: the listeners' key
    /// differs, the shared outbound and inbound parts do not.
    #[test]
    fn the_idle_timeout_of_a_node_keys_its_listeners_apart() {
        let (model, config) = model("10.0.0.1");
        let (gateways, jwks) = (GatewayTable::new(), BTreeMap::new());
        let view = view(&model, &config, &gateways, &jwks);
        let p = profile(&model, &config);
        let node = |idle: Option<&str>| {
            let mut metadata = BTreeMap::from([("CLUSTER_ID".to_string(), "c1".to_string())]);
            if let Some(i) = idle {
                metadata.insert("IDLE_TIMEOUT".into(), i.into());
            }
            ProxyNode::from_node(
                &crate::proxy::NodeInfo {
                    id: "sidecar~10.0.0.1~a-0.ns~ns.svc.cluster.local".into(),
                    metadata,
                    ..Default::default()
                },
                &ClusterId::new("c1"),
            )
            .unwrap()
        };
        let (plain, idle) = (node(None), node(Some("45s")));
        let (kp, ki) = (p.keys(&view, &plain), p.keys(&view, &idle));
        assert_eq!((&kp.outbound, &kp.inbound), (&ki.outbound, &ki.inbound));
        assert_ne!(kp.connection, ki.connection);
        assert_ne!(kp.full(), ki.full());
        let timeouts = |proxy: &ProxyNode, k: &ProxyKeys| {
            let mut found = Vec::new();
            for l in crate::listeners(&view, proxy, &k.inbound_side) {
                let strait_xds::listener::ListenerKind::Socket(s) = l.kind else {
                    continue;
                };
                for c in s.filter_chains.iter().chain(s.default_chain.as_ref()) {
                    found.push(match &c.filter {
                        strait_xds::listener::NetworkFilter::Http(h) => h.idle_timeout_ms,
                        strait_xds::listener::NetworkFilter::Tcp(t)
                        | strait_xds::listener::NetworkFilter::SniCluster(t) => t.idle_timeout_ms,
                    });
                }
            }
            found
        };
        let with = timeouts(&idle, &ki);
        assert!(
            !with.is_empty() && with.iter().all(|t| *t == Some(45_000)),
            "{with:?}"
        );
        assert!(timeouts(&plain, &kp).iter().all(Option::is_none));
    }
}
