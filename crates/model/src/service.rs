//! Services, their ports and endpoints, and the workloads behind them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use strait_config::istio::workload::{Location, Resolution};

use crate::identity::SpiffeId;
use crate::ids::{ClusterId, Hostname, NetworkId};
use crate::locality::Locality;
use crate::protocol::Protocol;

/// Labels, shared between a workload and its endpoints.
pub type Labels = Arc<BTreeMap<String, String>>;

/// A port of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// May be empty for a Kubernetes Service's only port.
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    /// A ServiceEntry port's `targetPort`: where hosts resolved by DNS without endpoints are
    /// reached (endpoints carry their own target ports).
    pub target_port: Option<u16>,
}

/// Where a service was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceOrigin {
    /// A Kubernetes Service (`<name>.<namespace>.svc.<domain>`).
    Kubernetes,
    /// A host of an Istio ServiceEntry.
    ServiceEntry {
        resolution: Resolution,
        location: Location,
    },
}

/// A service: a host with ports, defined in one or more clusters.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub host: Hostname,
    pub namespace: String,
    /// The Service's (or ServiceEntry's) name.
    pub name: String,
    pub ports: Vec<ServicePort>,
    pub origin: ServiceOrigin,
    /// Virtual IPs by cluster (a Service's cluster IPs; a ServiceEntry's addresses, or the one
    /// allocated for it, see `vip_allocated`).
    pub addresses: BTreeMap<ClusterId, Vec<String>>,
    /// The addresses were allocated by the mesh (one in `240.240.0.0/16`, one in `2001:2::/48`),
    /// the ServiceEntry named none.
    pub vip_allocated: bool,
    /// Where the service is reachable from outside its network, by the network of the cluster
    /// that publishes it: a Kubernetes Service's load-balancer ingress points and external IPs
    /// (IPs or host names). East-west gateways are found this way, as Istio finds them.
    pub external_addresses: BTreeMap<NetworkId, Vec<String>>,
    /// The clusters that define this service.
    pub clusters: BTreeSet<ClusterId>,
    /// Kept inside its cluster rather than merged with same-named services elsewhere.
    pub cluster_local: bool,
    pub export_to: Vec<String>,
    pub labels: Labels,
    /// The label selector choosing workloads, when there is one.
    pub selector: Option<BTreeMap<String, String>>,
    /// For a Linkerd-style mirror (`<name>-<cluster>`), the exported service it stands for:
    /// the name its own cluster (and that cluster's east-west gateway) knows it by.
    pub mirror_of: Option<Hostname>,
}

impl Service {
    /// The host mesh mTLS names in its SNI: a mirror's exported service, else its own.
    pub fn sni_host(&self) -> &Hostname {
        self.mirror_of.as_ref().unwrap_or(&self.host)
    }

    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }

    /// Whether proxies resolve this service's endpoints by DNS, so they travel inside its
    /// cluster definition rather than over EDS (a ServiceEntry with `DNS` resolution).
    pub fn resolved_by_dns(&self) -> bool {
        matches!(
            self.origin,
            ServiceOrigin::ServiceEntry {
                resolution: Resolution::Dns | Resolution::DnsRoundRobin,
                ..
            }
        )
    }
}

/// How an endpoint is addressed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointAddress {
    Ip(IpAddr),
    /// A DNS name (ServiceEntry endpoints with DNS resolution).
    Dns(String),
    /// A Unix domain socket path.
    Unix(String),
    /// No address: a workload reached only through its network's gateway.
    None,
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointAddress::Ip(ip) => write!(f, "{ip}"),
            EndpointAddress::Dns(name) => f.write_str(name),
            EndpointAddress::Unix(path) => write!(f, "unix://{path}"),
            EndpointAddress::None => f.write_str("<none>"),
        }
    }
}

impl EndpointAddress {
    pub fn parse(s: &str) -> Self {
        if let Some(path) = s.strip_prefix("unix://") {
            EndpointAddress::Unix(path.to_string())
        } else if let Ok(ip) = s.parse() {
            EndpointAddress::Ip(ip)
        } else if s.is_empty() {
            EndpointAddress::None
        } else {
            EndpointAddress::Dns(s.to_string())
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            EndpointAddress::Ip(ip) => Some(*ip),
            _ => None,
        }
    }
}

/// Whether an endpoint should receive traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    Healthy,
    Unhealthy,
    /// Terminating: finishing its requests, not taking new ones.
    Draining,
}

/// What kind of object an endpoint or workload came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Pod,
    WorkloadEntry,
    /// An entry of a ServiceEntry's `endpoints`.
    ServiceEntryEndpoint,
    /// An address in Endpoints/EndpointSlices that matches no known pod.
    Address,
}

/// The object behind an endpoint: `Pod sample/helloworld-v1-abc`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

/// One instance of a service: an address and ports on a workload, with everything routing and
/// security need to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub address: EndpointAddress,
    /// Service port number → port on the workload.
    pub ports: BTreeMap<u16, u16>,
    pub labels: Labels,
    pub cluster: ClusterId,
    pub network: NetworkId,
    pub locality: Locality,
    pub service_account: String,
    /// The SPIFFE identity the workload presents (none for external endpoints).
    pub identity: Option<SpiffeId>,
    /// The workload runs a sidecar that speaks mesh mTLS (Istio's `tlsMode: istio`); auto mTLS
    /// sends plaintext to the others.
    pub sidecar: bool,
    pub health: Health,
    /// Relative load balancing weight (default 1).
    pub weight: u32,
    pub workload: WorkloadRef,
    /// The endpoint's own name under a headless service (Kubernetes' endpoint `hostname`): it
    /// answers `<hostname>.<service host>`.
    pub hostname: Option<String>,
}

impl Endpoint {
    /// The workload port serving a service port.
    pub fn target_port(&self, service_port: u16) -> Option<u16> {
        self.ports.get(&service_port).copied()
    }
}

/// A service with all its endpoints across clusters.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub service: Service,
    pub endpoints: Vec<Endpoint>,
}

/// A running workload (Pod or WorkloadEntry), whether or not a service selects it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    pub namespace: String,
    pub cluster: ClusterId,
    pub network: NetworkId,
    pub locality: Locality,
    pub labels: Labels,
    pub service_account: String,
    pub identity: Option<SpiffeId>,
    /// See [`Endpoint::sidecar`].
    pub sidecar: bool,
    pub address: EndpointAddress,
    /// Named ports of the workload (container ports, or a WorkloadEntry's `ports`).
    pub named_ports: BTreeMap<String, u16>,
    pub health: Health,
    pub weight: u32,
    /// A pod's `hostname` and `subdomain` (the headless Service it is named under).
    pub dns_name: Option<(String, String)>,
}

impl Workload {
    pub fn reference(&self) -> WorkloadRef {
        WorkloadRef {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Whether every `selector` label is on the workload.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}
