//! Builds one cluster's services, endpoints and workloads from its manifests.
//!
//! Endpoints of a Kubernetes Service come from its Endpoints/EndpointSlices when the cluster
//! has them (as on a real cluster), and otherwise from the Pods and WorkloadEntries its
//! selector chooses (as the endpoints controller would compute them). ServiceEntry endpoints
//! come from `endpoints` or from `workloadSelector`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use strait_config::istio::workload::{ServiceEntry, WorkloadEntry};
use strait_config::kube::{IntOrString, ServiceSpec};
use strait_config::resource::{EndpointSliceData, EndpointsData, Object};
use strait_config::{ConfigSet, Kind};

use crate::identity::SpiffeId;
use crate::ids::{ClusterId, Hostname, NetworkId};
use crate::locality::Locality;
use crate::network::NETWORK_LABEL;
use crate::protocol::Protocol;
use crate::service::{
    Endpoint, EndpointAddress, Health, Labels, Service, ServiceOrigin, ServicePort, ServiceView,
    Workload, WorkloadKind,
};
use crate::settings::MeshSettings;

pub const CLUSTER_LABEL: &str = "topology.istio.io/cluster";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
/// Pod label giving the locality as `region.zone.subzone`.
pub const LOCALITY_LABEL: &str = "istio-locality";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One cluster's manifests and identity.
#[derive(Debug, Clone)]
pub struct ClusterSource {
    pub id: ClusterId,
    /// The network of the cluster's workloads unless a label or `meshNetworks` says otherwise.
    pub network: NetworkId,
    pub config: Arc<ConfigSet>,
}

/// What one cluster contributes to the mesh.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// Shared, so that a rebuilt view and the mesh model share what did not change.
    pub services: Vec<Arc<ServiceView>>,
    pub workloads: Arc<Vec<Workload>>,
}

impl ClusterView {
    /// The hosts whose services differ between `self` and `newer`: defined in only one of
    /// them, or defined differently (ports, addresses, endpoints, ...).
    pub fn changed_hosts(&self, newer: &ClusterView) -> BTreeSet<Hostname> {
        fn by_host(view: &ClusterView) -> BTreeMap<&Hostname, Vec<&Arc<ServiceView>>> {
            let mut hosts: BTreeMap<&Hostname, Vec<&Arc<ServiceView>>> = BTreeMap::new();
            for s in &view.services {
                hosts.entry(&s.service.host).or_default().push(s);
            }
            hosts
        }
        let same = |a: &[&Arc<ServiceView>], b: &[&Arc<ServiceView>]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
        };
        let (old, new) = (by_host(self), by_host(newer));
        old.keys()
            .chain(new.keys())
            .filter(|h| match (old.get(*h), new.get(*h)) {
                (Some(a), Some(b)) => !same(a, b),
                _ => true,
            })
            .map(|h| (*h).clone())
            .collect()
    }
}

struct Context<'a> {
    cluster: &'a ClusterSource,
    mesh: &'a MeshSettings,
    namespace_labels: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    node_localities: BTreeMap<&'a str, Locality>,
    /// Endpoints objects by namespace and name (the first, when defined twice).
    endpoints: HashMap<(&'a str, &'a str), &'a Object<EndpointsData>>,
    /// EndpointSlices by namespace and the service their label names, in file order.
    slices: HashMap<(&'a str, &'a str), Vec<&'a Object<EndpointSliceData>>>,
    /// The topology labels of address-only workloads, by network and locality: thousands of
    /// endpoints share a handful.
    bare_labels: RefCell<HashMap<(NetworkId, Locality), Labels>>,
}

/// A cluster's workloads (sorted by namespace, name and kind) with the lookups that building
/// endpoints makes once per address: without them, building a cluster took time proportional
/// to its endpoints times its workloads.
struct WorkloadIndex<'w> {
    all: &'w [Workload],
    /// The first pod of each namespace and name.
    pods: HashMap<(&'w str, &'w str), &'w Workload>,
    /// The first workload at each IP address.
    by_ip: HashMap<IpAddr, &'w Workload>,
}

impl<'w> WorkloadIndex<'w> {
    fn new(all: &'w [Workload]) -> Self {
        let mut pods = HashMap::new();
        let mut by_ip = HashMap::new();
        for w in all {
            if w.kind == WorkloadKind::Pod {
                pods.entry((w.namespace.as_str(), w.name.as_str()))
                    .or_insert(w);
            }
            if let EndpointAddress::Ip(ip) = w.address {
                by_ip.entry(ip).or_insert(w);
            }
        }
        WorkloadIndex { all, pods, by_ip }
    }

    /// The workloads of one namespace.
    fn in_namespace(&self, ns: &str) -> &'w [Workload] {
        let start = self.all.partition_point(|w| w.namespace.as_str() < ns);
        let end = self.all.partition_point(|w| w.namespace.as_str() <= ns);
        &self.all[start..end]
    }
}

impl Context<'_> {
    fn network(
        &self,
        own_label: Option<&String>,
        explicit: Option<&str>,
        namespace: &str,
        ip: Option<IpAddr>,
    ) -> NetworkId {
        if let Some(n) = own_label.filter(|n| !n.is_empty()) {
            return NetworkId::new(n);
        }
        if let Some(n) = explicit.filter(|n| !n.is_empty()) {
            return NetworkId::new(n);
        }
        if let Some(n) = self
            .namespace_labels
            .get(namespace)
            .and_then(|l| l.get(NETWORK_LABEL))
        {
            return NetworkId::new(n);
        }
        self.mesh
            .networks
            .lookup(ip, &self.cluster.id)
            .unwrap_or_else(|| self.cluster.network.clone())
    }

    fn identity(&self, namespace: &str, service_account: &str) -> SpiffeId {
        SpiffeId::new(&self.mesh.trust_domain, namespace, service_account)
    }
}

/// The label sidecar injection puts on a workload that speaks mesh mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// The annotation sidecar injection leaves on a pod.
const SIDECAR_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";

fn has_sidecar(labels: &BTreeMap<String, String>) -> bool {
    labels.get(TLS_MODE_LABEL).is_some_and(|m| m == "istio")
}

/// Adds the topology labels Istio puts on every workload, so subsets can select by cluster,
/// network or locality.
fn augment_labels(
    mut labels: BTreeMap<String, String>,
    cluster: &ClusterId,
    network: &NetworkId,
    locality: &Locality,
) -> Labels {
    labels
        .entry(CLUSTER_LABEL.into())
        .or_insert_with(|| cluster.to_string());
    if !network.is_empty() {
        labels
            .entry(NETWORK_LABEL.into())
            .or_insert_with(|| network.to_string());
    }
    for (key, value) in [
        (REGION_LABEL, &locality.region),
        (ZONE_LABEL, &locality.zone),
        (SUBZONE_LABEL, &locality.subzone),
    ] {
        if !value.is_empty() {
            labels.entry(key.into()).or_insert_with(|| value.clone());
        }
    }
    Arc::new(labels)
}

/// Builds the view of one cluster.
pub fn build_cluster(cluster: &ClusterSource, mesh: &MeshSettings) -> ClusterView {
    let ctx = Context::new(cluster, mesh);
    let workloads = Arc::new(cluster_workloads(&ctx));
    let services = cluster_services(&ctx, &workloads, |_, _, _| None);
    ClusterView {
        services,
        workloads,
    }
}

/// The kinds whose objects every service's endpoints can depend on: a change to one of them
/// rebuilds the whole cluster.
const WORKLOAD_KINDS: [Kind; 4] = [Kind::Pod, Kind::WorkloadEntry, Kind::Node, Kind::Namespace];

/// Builds the view of a cluster whose objects changed from `old` to `cluster.config`, where
/// `changed` holds the kind and key (`namespace/name`, see [`Object::key`]) of every object
/// added, removed or modified, and `previous` was built from `old` with the same settings and
/// network. Services none of whose objects changed (their Service or ServiceEntry, Endpoints,
/// EndpointSlices) are taken from `previous`, shared; the result equals [`build_cluster`]'s.
pub fn rebuild_cluster<'a>(
    cluster: &'a ClusterSource,
    mesh: &MeshSettings,
    previous: &ClusterView,
    old: &'a ConfigSet,
    changed: &'a BTreeSet<(Kind, String)>,
) -> ClusterView {
    if changed
        .iter()
        .any(|(kind, _)| WORKLOAD_KINDS.contains(kind))
    {
        return build_cluster(cluster, mesh);
    }
    // `namespace/name` keys; cluster-scoped objects have no namespace.
    let split = |key: &'a str| key.split_once('/').unwrap_or(("", key));
    // Kubernetes Services and ServiceEntries (namespace, name) to build again.
    let mut services: HashSet<(&str, &str)> = HashSet::new();
    let mut entries: HashSet<(&str, &str)> = HashSet::new();
    let mut slices: HashSet<(&str, &str)> = HashSet::new();
    for (kind, key) in changed {
        match kind {
            Kind::Service | Kind::Endpoints => {
                services.insert(split(key));
            }
            Kind::EndpointSlice => {
                slices.insert(split(key));
            }
            Kind::ServiceEntry => {
                entries.insert(split(key));
            }
            _ => {}
        }
    }
    // A slice belongs to the service its label names, before and after the change.
    if !slices.is_empty() {
        for slice in old
            .endpoint_slices
            .iter()
            .chain(&cluster.config.endpoint_slices)
        {
            let ns = slice.meta.namespace.as_str();
            if slices.contains(&(ns, slice.meta.name.as_str()))
                && let Some(service) = slice.meta.labels.get(SERVICE_NAME_LABEL)
            {
                services.insert((ns, service.as_str()));
            }
        }
    }
    let mut kept: HashMap<(bool, &str, &str), Vec<Arc<ServiceView>>> = HashMap::new();
    for view in &previous.services {
        let s = &view.service;
        let entry = matches!(s.origin, ServiceOrigin::ServiceEntry { .. });
        kept.entry((entry, s.namespace.as_str(), s.name.as_str()))
            .or_default()
            .push(view.clone());
    }
    let ctx = Context::new(cluster, mesh);
    let reuse = |kind: Kind, ns: &str, name: &str| {
        let (stale, entry) = match kind {
            Kind::ServiceEntry => (&entries, true),
            _ => (&services, false),
        };
        if stale.contains(&(ns, name)) {
            return None;
        }
        kept.get(&(entry, ns, name)).cloned()
    };
    ClusterView {
        services: cluster_services(&ctx, &previous.workloads, reuse),
        workloads: previous.workloads.clone(),
    }
}

impl<'a> Context<'a> {
    fn new(cluster: &'a ClusterSource, mesh: &'a MeshSettings) -> Self {
        let config = &cluster.config;
        let mut endpoints = HashMap::new();
        for e in &config.endpoints {
            endpoints
                .entry((e.meta.namespace.as_str(), e.meta.name.as_str()))
                .or_insert(e.as_ref());
        }
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for slice in &config.endpoint_slices {
            if let Some(service) = slice.meta.labels.get(SERVICE_NAME_LABEL) {
                slices
                    .entry((slice.meta.namespace.as_str(), service.as_str()))
                    .or_default()
                    .push(slice.as_ref());
            }
        }
        Context {
            cluster,
            mesh,
            namespace_labels: config
                .namespaces
                .iter()
                .map(|n| (n.meta.name.as_str(), &n.meta.labels))
                .collect(),
            node_localities: config
                .nodes
                .iter()
                .map(|n| {
                    let get = |k: &str| n.meta.labels.get(k).map(String::as_str).unwrap_or("");
                    (
                        n.meta.name.as_str(),
                        Locality::new(get(REGION_LABEL), get(ZONE_LABEL), get(SUBZONE_LABEL)),
                    )
                })
                .collect(),
            endpoints,
            slices,
            bare_labels: RefCell::default(),
        }
    }
}

/// The cluster's pods and WorkloadEntries, sorted by namespace, name and kind.
fn cluster_workloads(ctx: &Context<'_>) -> Vec<Workload> {
    let config = &ctx.cluster.config;
    let mut workloads: Vec<Workload> = config
        .pods
        .iter()
        .filter_map(|p| pod_workload(p, ctx))
        .collect();
    workloads.extend(config.workload_entries.iter().map(|we| {
        entry_workload(
            &we.spec,
            &we.meta.name,
            &we.meta.namespace,
            WorkloadKind::WorkloadEntry,
            ctx,
        )
    }));
    workloads.sort_by(|a, b| (&a.namespace, &a.name, a.kind).cmp(&(&b.namespace, &b.name, b.kind)));
    workloads
}

/// The cluster's services in the order of their objects: each Service's, then each
/// ServiceEntry's (one per host), built unless `reuse` (given the kind, namespace and name of
/// the object) has them already.
fn cluster_services(
    ctx: &Context<'_>,
    workloads: &[Workload],
    reuse: impl Fn(Kind, &str, &str) -> Option<Vec<Arc<ServiceView>>>,
) -> Vec<Arc<ServiceView>> {
    let config = &ctx.cluster.config;
    let index = WorkloadIndex::new(workloads);
    let mut services = Vec::new();
    for svc in &config.services {
        match reuse(Kind::Service, &svc.meta.namespace, &svc.meta.name) {
            Some(views) => services.extend(views),
            None => services.push(Arc::new(kubernetes_service(svc, &index, ctx))),
        }
    }
    for se in &config.service_entries {
        match reuse(Kind::ServiceEntry, &se.meta.namespace, &se.meta.name) {
            Some(views) => services.extend(views),
            None => services.extend(service_entry(se, &index, ctx).into_iter().map(Arc::new)),
        }
    }
    services
}

fn pod_workload(
    pod: &Object<strait_config::resource::PodData>,
    ctx: &Context<'_>,
) -> Option<Workload> {
    let status = &pod.spec.status;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    // A pod without an IP (declared, not running yet) is a workload selectors can match, but
    // not an endpoint.
    let ip: Option<IpAddr> = status
        .pod_ip
        .as_deref()
        .or_else(|| status.pod_ips.first().map(|p| p.ip.as_str()))
        .and_then(|t| t.parse().ok());
    let spec = &pod.spec.spec;
    let locality = pod
        .meta
        .labels
        .get(LOCALITY_LABEL)
        .map(|l| Locality::parse_dotted(l))
        .or_else(|| {
            spec.node_name
                .as_deref()
                .and_then(|n| ctx.node_localities.get(n).cloned())
        })
        .unwrap_or_default();
    let network = ctx.network(
        pod.meta.labels.get(NETWORK_LABEL),
        None,
        &pod.meta.namespace,
        ip,
    );
    let service_account = spec
        .service_account_name
        .clone()
        .or_else(|| spec.service_account.clone())
        .unwrap_or_else(|| "default".into());
    let ready = status
        .conditions
        .iter()
        .find(|c| c.condition_type == "Ready")
        .is_none_or(|c| c.status == "True");
    let named_ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter())
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    Some(Workload {
        kind: WorkloadKind::Pod,
        name: pod.meta.name.clone(),
        namespace: pod.meta.namespace.clone(),
        cluster: ctx.cluster.id.clone(),
        labels: augment_labels(
            pod.meta.labels.clone(),
            &ctx.cluster.id,
            &network,
            &locality,
        ),
        network,
        locality,
        identity: Some(ctx.identity(&pod.meta.namespace, &service_account)),
        sidecar: has_sidecar(&pod.meta.labels)
            || pod.meta.annotations.contains_key(SIDECAR_STATUS_ANNOTATION),
        service_account,
        address: ip.map_or(EndpointAddress::None, EndpointAddress::Ip),
        dns_name: spec.hostname.clone().zip(spec.subdomain.clone()),
        named_ports,
        health: if ready && ip.is_some() {
            Health::Healthy
        } else {
            Health::Unhealthy
        },
        weight: 1,
    })
}

/// A WorkloadEntry, or an endpoint of a ServiceEntry (same shape).
fn entry_workload(
    we: &WorkloadEntry,
    name: &str,
    namespace: &str,
    kind: WorkloadKind,
    ctx: &Context<'_>,
) -> Workload {
    let address = EndpointAddress::parse(we.address.as_deref().unwrap_or(""));
    let locality = we
        .locality
        .as_deref()
        .map(Locality::parse_slashed)
        .unwrap_or_default();
    let network = ctx.network(
        we.labels.get(NETWORK_LABEL),
        we.network.as_deref(),
        namespace,
        address.ip(),
    );
    let cluster = we
        .labels
        .get(CLUSTER_LABEL)
        .map(|c| ClusterId::new(c))
        .unwrap_or_else(|| ctx.cluster.id.clone());
    let service_account = we
        .service_account
        .clone()
        .unwrap_or_else(|| "default".into());
    let identity = match kind {
        WorkloadKind::ServiceEntryEndpoint if we.service_account.is_none() => None,
        _ => Some(ctx.identity(namespace, &service_account)),
    };
    Workload {
        kind,
        name: name.to_string(),
        namespace: namespace.to_string(),
        labels: augment_labels(we.labels.clone(), &cluster, &network, &locality),
        cluster,
        network,
        locality,
        identity,
        sidecar: has_sidecar(&we.labels),
        service_account,
        address,
        named_ports: we
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k, u16::try_from(v).ok()?)))
            .collect(),
        health: Health::Healthy,
        weight: we.weight.filter(|w| *w > 0).unwrap_or(1),
        dns_name: None,
    }
}

/// Pods with an address and WorkloadEntries (which may be reached through their network's
/// gateway without one) become endpoints of the services selecting them.
fn is_endpoint_candidate(w: &Workload) -> bool {
    match w.kind {
        WorkloadKind::Pod => w.address != EndpointAddress::None,
        WorkloadKind::WorkloadEntry => true,
        _ => false,
    }
}

fn endpoint_from(w: &Workload, ports: BTreeMap<u16, u16>, health: Health) -> Endpoint {
    Endpoint {
        hostname: None,
        address: w.address.clone(),
        ports,
        labels: w.labels.clone(),
        cluster: w.cluster.clone(),
        network: w.network.clone(),
        locality: w.locality.clone(),
        service_account: w.service_account.clone(),
        identity: w.identity.clone(),
        sidecar: w.sidecar,
        health,
        weight: w.weight,
        workload: w.reference(),
    }
}

fn kubernetes_service(
    svc: &Object<ServiceSpec>,
    workloads: &WorkloadIndex<'_>,
    ctx: &Context<'_>,
) -> ServiceView {
    let spec = &svc.spec;
    let host = format!(
        "{}.{}.svc.{}",
        svc.meta.name, svc.meta.namespace, ctx.mesh.domain_suffix
    );
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.port).ok()?,
                protocol: Protocol::for_kubernetes_port(
                    p.name.as_deref(),
                    p.app_protocol.as_deref(),
                    p.protocol.as_deref(),
                ),
                target_port: None,
            })
        })
        .collect();
    let mut addresses: Vec<String> = spec.cluster_ips.clone();
    if let Some(ip) = spec
        .cluster_ip
        .as_ref()
        .filter(|ip| !ip.is_empty() && *ip != "None" && !addresses.contains(ip))
    {
        addresses.insert(0, ip.clone());
    }
    let endpoints = service_endpoints(svc, workloads, ctx);
    let mut address_map = BTreeMap::new();
    if !addresses.is_empty() {
        address_map.insert(ctx.cluster.id.clone(), addresses);
    }
    let mut external: Vec<String> = spec.load_balancer_ingress.clone();
    for ip in &spec.external_ips {
        if !external.contains(ip) {
            external.push(ip.clone());
        }
    }
    let mut external_addresses = BTreeMap::new();
    if !external.is_empty() {
        let network = ctx.network(None, None, &svc.meta.namespace, None);
        external_addresses.insert(network, external);
    }
    let service = Service {
        external_addresses,
        cluster_local: ctx.mesh.is_cluster_local(&host),
        host: Hostname::new(&host),
        namespace: svc.meta.namespace.clone(),
        name: svc.meta.name.clone(),
        ports,
        origin: ServiceOrigin::Kubernetes,
        addresses: address_map,
        clusters: BTreeSet::from([ctx.cluster.id.clone()]),
        export_to: svc
            .meta
            .annotations
            .get("networking.istio.io/exportTo")
            .map(|e| e.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default(),
        labels: Arc::new(svc.meta.labels.clone()),
        selector: spec.selector.clone(),
        mirror_of: None,
        vip_allocated: false,
    };
    ServiceView { service, endpoints }
}

/// The target port of `port` on workload `w` for a Kubernetes Service.
fn kube_target(port: &strait_config::kube::ServicePort, w: &Workload) -> Option<u16> {
    match &port.target_port {
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::Str(name)) => w.named_ports.get(name).copied(),
        None => match w.kind {
            // A WorkloadEntry maps service port names to its own ports.
            WorkloadKind::WorkloadEntry => port
                .name
                .as_ref()
                .and_then(|n| w.named_ports.get(n).copied())
                .or(u16::try_from(port.port).ok()),
            _ => u16::try_from(port.port).ok(),
        },
    }
}

fn service_endpoints(
    svc: &Object<ServiceSpec>,
    workloads: &WorkloadIndex<'_>,
    ctx: &Context<'_>,
) -> Vec<Endpoint> {
    let ns = svc.meta.namespace.as_str();
    let key = (ns, svc.meta.name.as_str());
    if let Some(slices) = ctx.slices.get(&key) {
        return from_slices(svc, slices, workloads, ctx);
    }
    if let Some(eps) = ctx.endpoints.get(&key) {
        return from_endpoints(svc, eps, workloads, ctx);
    }
    let Some(selector) = svc.spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    workloads
        .in_namespace(ns)
        .iter()
        .filter(|w| w.matches(selector) && is_endpoint_candidate(w))
        .filter_map(|w| {
            let ports: BTreeMap<u16, u16> = svc
                .spec
                .ports
                .iter()
                .filter_map(|p| Some((u16::try_from(p.port).ok()?, kube_target(p, w)?)))
                .collect();
            (!ports.is_empty() || svc.spec.ports.is_empty()).then(|| Endpoint {
                // Kubernetes names a pod under the Service its `subdomain` names.
                hostname: w
                    .dns_name
                    .as_ref()
                    .filter(|(_, sub)| *sub == svc.meta.name)
                    .map(|(host, _)| host.clone()),
                ..endpoint_from(w, ports, w.health)
            })
        })
        .collect()
}

/// A known workload for an address: by target reference, else by IP.
fn workload_for<'w>(
    ip: &str,
    target: Option<&strait_config::kube::ObjectReference>,
    ns: &str,
    workloads: &WorkloadIndex<'w>,
) -> Option<&'w Workload> {
    if let Some(t) = target
        && t.kind.as_deref() == Some("Pod")
        && let Some(name) = &t.name
    {
        let tns = t.namespace.as_deref().unwrap_or(ns);
        if let Some(w) = workloads.pods.get(&(tns, name.as_str())) {
            return Some(w);
        }
    }
    let ip: IpAddr = ip.parse().ok()?;
    workloads.by_ip.get(&ip).copied()
}

fn bare_workload(
    ip: &str,
    node: Option<&str>,
    zone: Option<&str>,
    ns: &str,
    ctx: &Context<'_>,
) -> Option<Workload> {
    let ip: IpAddr = ip.parse().ok()?;
    let mut locality = node
        .and_then(|n| ctx.node_localities.get(n).cloned())
        .unwrap_or_default();
    if let Some(z) = zone {
        locality.zone = z.to_string();
    }
    let network = ctx.network(None, None, ns, Some(ip));
    let labels = ctx
        .bare_labels
        .borrow_mut()
        .entry((network.clone(), locality.clone()))
        .or_insert_with(|| augment_labels(BTreeMap::new(), &ctx.cluster.id, &network, &locality))
        .clone();
    Some(Workload {
        kind: WorkloadKind::Address,
        name: ip.to_string(),
        namespace: ns.to_string(),
        cluster: ctx.cluster.id.clone(),
        labels,
        network,
        locality,
        service_account: String::new(),
        identity: None,
        sidecar: false,
        address: EndpointAddress::Ip(ip),
        named_ports: BTreeMap::new(),
        health: Health::Healthy,
        weight: 1,
        dns_name: None,
    })
}

/// Service port → endpoint port, matching by port name (or the single port).
fn map_ports(svc: &ServiceSpec, endpoint_ports: &[(Option<&str>, i32)]) -> BTreeMap<u16, u16> {
    svc.ports
        .iter()
        .filter_map(|sp| {
            let found = endpoint_ports
                .iter()
                .find(|(name, _)| name.unwrap_or("") == sp.name.as_deref().unwrap_or(""))
                .or_else(|| {
                    (endpoint_ports.len() == 1 && svc.ports.len() == 1).then(|| &endpoint_ports[0])
                })?;
            Some((u16::try_from(sp.port).ok()?, u16::try_from(found.1).ok()?))
        })
        .collect()
}

fn from_endpoints(
    svc: &Object<ServiceSpec>,
    eps: &Object<EndpointsData>,
    workloads: &WorkloadIndex<'_>,
    ctx: &Context<'_>,
) -> Vec<Endpoint> {
    let ns = &svc.meta.namespace;
    let mut out = Vec::new();
    for subset in &eps.spec.subsets {
        let ports = map_ports(
            &svc.spec,
            &subset
                .ports
                .iter()
                .map(|p| (p.name.as_deref(), p.port))
                .collect::<Vec<_>>(),
        );
        for (list, health) in [
            (&subset.addresses, Health::Healthy),
            (&subset.not_ready_addresses, Health::Unhealthy),
        ] {
            for a in list {
                let w = workload_for(&a.ip, a.target_ref.as_ref(), ns, workloads)
                    .cloned()
                    .or_else(|| bare_workload(&a.ip, a.node_name.as_deref(), None, ns, ctx));
                if let Some(w) = w {
                    out.push(Endpoint {
                        hostname: a.hostname.clone(),
                        ..endpoint_from(&w, ports.clone(), health)
                    });
                }
            }
        }
    }
    out
}

fn from_slices(
    svc: &Object<ServiceSpec>,
    slices: &[&Object<EndpointSliceData>],
    workloads: &WorkloadIndex<'_>,
    ctx: &Context<'_>,
) -> Vec<Endpoint> {
    let ns = &svc.meta.namespace;
    let mut out = Vec::new();
    for slice in slices {
        let ports = map_ports(
            &svc.spec,
            &slice
                .spec
                .ports
                .iter()
                .map(|p| (p.name.as_deref(), p.port))
                .collect::<Vec<_>>(),
        );
        for ep in &slice.spec.endpoints {
            let conditions = ep.conditions.clone().unwrap_or_default();
            let health = if conditions.terminating == Some(true) {
                Health::Draining
            } else if conditions.ready == Some(false) {
                Health::Unhealthy
            } else {
                Health::Healthy
            };
            for addr in &ep.addresses {
                let w = workload_for(addr, ep.target_ref.as_ref(), ns, workloads)
                    .cloned()
                    .or_else(|| {
                        bare_workload(addr, ep.node_name.as_deref(), ep.zone.as_deref(), ns, ctx)
                    });
                if let Some(w) = w {
                    out.push(Endpoint {
                        hostname: ep.hostname.clone(),
                        ..endpoint_from(&w, ports.clone(), health)
                    });
                }
            }
        }
    }
    out
}

fn service_entry(
    se: &Object<ServiceEntry>,
    workloads: &WorkloadIndex<'_>,
    ctx: &Context<'_>,
) -> Vec<ServiceView> {
    let spec = &se.spec;
    let ns = &se.meta.namespace;
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone(),
                port: u16::try_from(p.number).ok()?,
                protocol: p
                    .protocol
                    .as_deref()
                    .and_then(Protocol::parse)
                    .unwrap_or(Protocol::Unknown),
                target_port: p.target_port.and_then(|t| u16::try_from(t).ok()),
            })
        })
        .collect();
    let target = |p: &strait_config::istio::workload::ServicePort,
                  named: &BTreeMap<String, u16>|
     -> Option<(u16, u16)> {
        let service_port = u16::try_from(p.number).ok()?;
        let t = named
            .get(&p.name)
            .copied()
            .or_else(|| p.target_port.and_then(|t| u16::try_from(t).ok()))
            .unwrap_or(service_port);
        Some((service_port, t))
    };
    let endpoints: Vec<Endpoint> = match (&spec.endpoints, &spec.workload_selector) {
        (Some(list), _) => list
            .iter()
            .enumerate()
            .map(|(i, we)| {
                let w = entry_workload(
                    we,
                    &format!("{}[{i}]", se.meta.name),
                    ns,
                    WorkloadKind::ServiceEntryEndpoint,
                    ctx,
                );
                let ports = spec
                    .ports
                    .iter()
                    .filter_map(|p| target(p, &w.named_ports))
                    .collect();
                endpoint_from(&w, ports, Health::Healthy)
            })
            .collect(),
        (None, Some(sel)) => workloads
            .in_namespace(ns)
            .iter()
            .filter(|w| w.matches(&sel.labels) && is_endpoint_candidate(w))
            .map(|w| {
                let ports = spec
                    .ports
                    .iter()
                    .filter_map(|p| target(p, &w.named_ports))
                    .collect();
                endpoint_from(w, ports, w.health)
            })
            .collect(),
        (None, None) => Vec::new(),
    };
    let addresses = if spec.addresses.is_empty() {
        BTreeMap::new()
    } else {
        BTreeMap::from([(ctx.cluster.id.clone(), spec.addresses.clone())])
    };
    spec.hosts
        .iter()
        .map(|host| ServiceView {
            service: Service {
                host: Hostname::new(host),
                namespace: ns.clone(),
                name: se.meta.name.clone(),
                ports: ports.clone(),
                origin: ServiceOrigin::ServiceEntry {
                    resolution: spec.resolution(),
                    location: spec.location(),
                },
                addresses: addresses.clone(),
                external_addresses: BTreeMap::new(),
                clusters: BTreeSet::from([ctx.cluster.id.clone()]),
                cluster_local: ctx.mesh.is_cluster_local(host),
                export_to: spec.export_to.clone(),
                labels: Arc::new(se.meta.labels.clone()),
                selector: spec.workload_selector.as_ref().map(|s| s.labels.clone()),
                mirror_of: None,
                vip_allocated: false,
            },
            endpoints: endpoints.clone(),
        })
        .collect()
}
