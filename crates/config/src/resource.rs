//! What a document is: its kind and apiVersion, the typed object it holds, and where it came
//! from. [`ConfigSet`] gathers the accepted objects of many files.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::istio::gateway::{Gateway, Sidecar};
use crate::istio::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::istio::traffic::{DestinationRule, VirtualService};
use crate::istio::workload::{ServiceEntry, WorkloadEntry, WorkloadGroup};
use crate::kube::{
    EndpointPort, EndpointSubset, NamespaceSpec, PodSpec, PodStatus, SecretData, ServiceSpec,
    SliceEndpoint,
};
use crate::linkerd::Link;
use crate::mesh::MeshConfig;
use crate::path::FieldPath;
use crate::smi::TrafficSplit;
use crate::yaml::{Node, Pos};

/// Every kind Strait reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    WorkloadGroup,
    Gateway,
    Sidecar,
    PeerAuthentication,
    RequestAuthentication,
    AuthorizationPolicy,
    Service,
    Endpoints,
    EndpointSlice,
    Namespace,
    Pod,
    Node,
    Secret,
    TrafficSplit,
    Link,
    MeshConfig,
}

impl Kind {
    pub const ALL: [Kind; 20] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::Gateway,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Service,
        Kind::Endpoints,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::Pod,
        Kind::Node,
        Kind::Secret,
        Kind::TrafficSplit,
        Kind::Link,
        Kind::MeshConfig,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::Gateway => "Gateway",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Node => "Node",
            Kind::Secret => "Secret",
            Kind::TrafficSplit => "TrafficSplit",
            Kind::Link => "Link",
            Kind::MeshConfig => "MeshConfig",
        }
    }

    /// The apiVersions Strait accepts for the kind.
    pub fn api_versions(self) -> &'static [&'static str] {
        const NETWORKING: &[&str] = &[
            "networking.istio.io/v1",
            "networking.istio.io/v1beta1",
            "networking.istio.io/v1alpha3",
        ];
        const SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::WorkloadGroup
            | Kind::Gateway
            | Kind::Sidecar => NETWORKING,
            Kind::PeerAuthentication | Kind::RequestAuthentication | Kind::AuthorizationPolicy => {
                SECURITY
            }
            Kind::Service
            | Kind::Endpoints
            | Kind::Namespace
            | Kind::Pod
            | Kind::Node
            | Kind::Secret => &["v1"],
            Kind::EndpointSlice => &["discovery.k8s.io/v1"],
            Kind::TrafficSplit => &[
                "split.smi-spec.io/v1alpha1",
                "split.smi-spec.io/v1alpha2",
                "split.smi-spec.io/v1alpha3",
                "split.smi-spec.io/v1alpha4",
            ],
            Kind::Link => &[
                "multicluster.linkerd.io/v1alpha1",
                "multicluster.linkerd.io/v1alpha2",
                "multicluster.linkerd.io/v1alpha3",
            ],
            Kind::MeshConfig => &["strait.dev/v1alpha1"],
        }
    }

    /// Whether objects of the kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node | Kind::MeshConfig)
    }

    fn by_name(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Istio kinds Strait knows but does not implement; documents of these kinds are skipped
/// with this explanation rather than counted as errors.
pub const NOT_SUPPORTED_KINDS: &[(&str, &str)] = &[
    (
        "EnvoyFilter",
        "Strait's proxy is not Envoy: EnvoyFilter patches have nothing to apply to",
    ),
    ("WasmPlugin", "Strait's proxy does not run Wasm extensions"),
    (
        "Telemetry",
        "Strait emits Istio's standard metrics and access logs without Telemetry resources",
    ),
    (
        "ProxyConfig",
        "per-workload proxy settings are given to `strait proxy` by flags",
    ),
    ("TrafficExtension", "Strait's proxy does not run extensions"),
];

/// How a document's `apiVersion` and `kind` are treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// A kind Strait reads.
    Supported(Kind),
    /// A kind Strait reads, with an apiVersion it does not know.
    WrongVersion(Kind),
    /// An Istio kind outside Strait's scope.
    NotSupported(&'static str),
    /// Anything else (ConfigMap, Deployment, IstioOperator, ...): skipped.
    Other,
}

pub fn classify(api_version: &str, kind: &str) -> Classification {
    if let Some(k) = Kind::by_name(kind) {
        if k.api_versions().contains(&api_version) {
            return Classification::Supported(k);
        }
        // A `Service` of another group (e.g. serving.knative.dev) is not ours.
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let our_group = k.api_versions()[0].rsplit_once('/').map_or("", |(g, _)| g);
        if group == our_group {
            return Classification::WrongVersion(k);
        }
        return Classification::Other;
    }
    if let Some((_, why)) = NOT_SUPPORTED_KINDS.iter().find(|(k, _)| *k == kind)
        && api_version.contains("istio.io")
    {
        return Classification::NotSupported(why);
    }
    Classification::Other
}

/// Where a document came from, with its parsed tree to point at fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The file as the user named it (or a label such as `<stdin>`).
    pub file: Arc<str>,
    /// 1-based index of the document in the file.
    pub document: usize,
    /// Path of the object inside the document (`items[3]` for List items; root otherwise).
    pub base: FieldPath,
    pub node: Arc<Node>,
}

impl Source {
    /// Where the field at `path` (relative to the object) was written.
    pub fn locate(&self, path: &FieldPath) -> Pos {
        let mut full = self.base.clone();
        for seg in path.segments() {
            full = match seg {
                crate::path::Segment::Field(f) => full.field(f),
                crate::path::Segment::Index(i) => full.index(*i),
                crate::path::Segment::Key(k) => full.key(k),
            };
        }
        self.node.locate(&full)
    }

    /// Where the object starts.
    pub fn pos(&self) -> Pos {
        self.node.locate(&self.base)
    }
}

/// The metadata Strait keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    pub api_version: String,
    pub name: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// An accepted object of kind `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T> {
    pub meta: Meta,
    pub spec: T,
    pub source: Arc<Source>,
}

impl<T> Object<T> {
    /// `namespace/name`, or `name` for cluster-scoped objects.
    pub fn key(&self) -> String {
        if self.meta.namespace.is_empty() {
            self.meta.name.clone()
        } else {
            format!("{}/{}", self.meta.namespace, self.meta.name)
        }
    }
}

/// A Kubernetes Endpoints object's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointsData {
    pub subsets: Vec<EndpointSubset>,
}

/// A Kubernetes EndpointSlice's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSliceData {
    pub address_type: String,
    pub endpoints: Vec<SliceEndpoint>,
    pub ports: Vec<EndpointPort>,
}

/// A Pod's spec and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodData {
    pub spec: PodSpec,
    pub status: PodStatus,
}

/// One accepted document, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    VirtualService(Arc<Object<VirtualService>>),
    DestinationRule(Arc<Object<DestinationRule>>),
    ServiceEntry(Arc<Object<ServiceEntry>>),
    WorkloadEntry(Arc<Object<WorkloadEntry>>),
    WorkloadGroup(Arc<Object<WorkloadGroup>>),
    Gateway(Arc<Object<Gateway>>),
    Sidecar(Arc<Object<Sidecar>>),
    PeerAuthentication(Arc<Object<PeerAuthentication>>),
    RequestAuthentication(Arc<Object<RequestAuthentication>>),
    AuthorizationPolicy(Arc<Object<AuthorizationPolicy>>),
    Service(Arc<Object<ServiceSpec>>),
    Endpoints(Arc<Object<EndpointsData>>),
    EndpointSlice(Arc<Object<EndpointSliceData>>),
    Namespace(Arc<Object<NamespaceSpec>>),
    Pod(Arc<Object<PodData>>),
    Node(Arc<Object<()>>),
    Secret(Arc<Object<SecretData>>),
    TrafficSplit(Arc<Object<TrafficSplit>>),
    Link(Arc<Object<Link>>),
    MeshConfig(Arc<Object<MeshConfig>>),
}

macro_rules! each_resource {
    ($value:expr, $o:ident => $body:expr) => {
        match $value {
            Resource::VirtualService($o) => $body,
            Resource::DestinationRule($o) => $body,
            Resource::ServiceEntry($o) => $body,
            Resource::WorkloadEntry($o) => $body,
            Resource::WorkloadGroup($o) => $body,
            Resource::Gateway($o) => $body,
            Resource::Sidecar($o) => $body,
            Resource::PeerAuthentication($o) => $body,
            Resource::RequestAuthentication($o) => $body,
            Resource::AuthorizationPolicy($o) => $body,
            Resource::Service($o) => $body,
            Resource::Endpoints($o) => $body,
            Resource::EndpointSlice($o) => $body,
            Resource::Namespace($o) => $body,
            Resource::Pod($o) => $body,
            Resource::Node($o) => $body,
            Resource::Secret($o) => $body,
            Resource::TrafficSplit($o) => $body,
            Resource::Link($o) => $body,
            Resource::MeshConfig($o) => $body,
        }
    };
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::WorkloadEntry(_) => Kind::WorkloadEntry,
            Resource::WorkloadGroup(_) => Kind::WorkloadGroup,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::Sidecar(_) => Kind::Sidecar,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::Service(_) => Kind::Service,
            Resource::Endpoints(_) => Kind::Endpoints,
            Resource::EndpointSlice(_) => Kind::EndpointSlice,
            Resource::Namespace(_) => Kind::Namespace,
            Resource::Pod(_) => Kind::Pod,
            Resource::Node(_) => Kind::Node,
            Resource::Secret(_) => Kind::Secret,
            Resource::TrafficSplit(_) => Kind::TrafficSplit,
            Resource::Link(_) => Kind::Link,
            Resource::MeshConfig(_) => Kind::MeshConfig,
        }
    }

    pub fn meta(&self) -> &Meta {
        each_resource!(self, o => &o.meta)
    }

    pub fn source(&self) -> &Arc<Source> {
        each_resource!(self, o => &o.source)
    }

    /// `Kind namespace/name`, as `istioctl analyze` names resources.
    pub fn reference(&self) -> ResourceRef {
        ResourceRef::new(
            self.kind().as_str(),
            &self.meta().namespace,
            &self.meta().name,
        )
    }
}

/// A resource's name for messages: `DestinationRule prod/reviews`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ResourceRef {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.namespace.is_empty(), self.name.is_empty()) {
            (_, true) => f.write_str(&self.kind),
            (true, false) => write!(f, "{} {}", self.kind, self.name),
            (false, false) => write!(f, "{} {}/{}", self.kind, self.namespace, self.name),
        }
    }
}

/// The accepted objects of a set of files, by kind, in the order they were read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigSet {
    pub virtual_services: Vec<Arc<Object<VirtualService>>>,
    pub destination_rules: Vec<Arc<Object<DestinationRule>>>,
    pub service_entries: Vec<Arc<Object<ServiceEntry>>>,
    pub workload_entries: Vec<Arc<Object<WorkloadEntry>>>,
    pub workload_groups: Vec<Arc<Object<WorkloadGroup>>>,
    pub gateways: Vec<Arc<Object<Gateway>>>,
    pub sidecars: Vec<Arc<Object<Sidecar>>>,
    pub peer_authentications: Vec<Arc<Object<PeerAuthentication>>>,
    pub request_authentications: Vec<Arc<Object<RequestAuthentication>>>,
    pub authorization_policies: Vec<Arc<Object<AuthorizationPolicy>>>,
    pub services: Vec<Arc<Object<ServiceSpec>>>,
    pub endpoints: Vec<Arc<Object<EndpointsData>>>,
    pub endpoint_slices: Vec<Arc<Object<EndpointSliceData>>>,
    pub namespaces: Vec<Arc<Object<NamespaceSpec>>>,
    pub pods: Vec<Arc<Object<PodData>>>,
    pub nodes: Vec<Arc<Object<()>>>,
    pub secrets: Vec<Arc<Object<SecretData>>>,
    pub traffic_splits: Vec<Arc<Object<TrafficSplit>>>,
    /// Linkerd multicluster Links.
    pub links: Vec<Arc<Object<Link>>>,
    pub mesh_configs: Vec<Arc<Object<MeshConfig>>>,
}

impl ConfigSet {
    pub fn insert(&mut self, r: Resource) {
        match r {
            Resource::VirtualService(o) => self.virtual_services.push(o),
            Resource::DestinationRule(o) => self.destination_rules.push(o),
            Resource::ServiceEntry(o) => self.service_entries.push(o),
            Resource::WorkloadEntry(o) => self.workload_entries.push(o),
            Resource::WorkloadGroup(o) => self.workload_groups.push(o),
            Resource::Gateway(o) => self.gateways.push(o),
            Resource::Sidecar(o) => self.sidecars.push(o),
            Resource::PeerAuthentication(o) => self.peer_authentications.push(o),
            Resource::RequestAuthentication(o) => self.request_authentications.push(o),
            Resource::AuthorizationPolicy(o) => self.authorization_policies.push(o),
            Resource::Service(o) => self.services.push(o),
            Resource::Endpoints(o) => self.endpoints.push(o),
            Resource::EndpointSlice(o) => self.endpoint_slices.push(o),
            Resource::Namespace(o) => self.namespaces.push(o),
            Resource::Pod(o) => self.pods.push(o),
            Resource::Node(o) => self.nodes.push(o),
            Resource::Secret(o) => self.secrets.push(o),
            Resource::TrafficSplit(o) => self.traffic_splits.push(o),
            Resource::Link(o) => self.links.push(o),
            Resource::MeshConfig(o) => self.mesh_configs.push(o),
        }
    }

    pub fn from_resources(resources: impl IntoIterator<Item = Resource>) -> Self {
        let mut set = Self::default();
        for r in resources {
            set.insert(r);
        }
        set
    }

    /// Gives every root VirtualService its delegates' routes in place of the routes naming them
    /// (Istio's delegation), as the control plane serves them.
    pub fn merge_delegates(&mut self) {
        self.virtual_services = crate::istio::delegation::merge_delegates(&self.virtual_services);
    }

    /// The number of objects held.
    pub fn len(&self) -> usize {
        self.virtual_services.len()
            + self.destination_rules.len()
            + self.service_entries.len()
            + self.workload_entries.len()
            + self.workload_groups.len()
            + self.gateways.len()
            + self.sidecars.len()
            + self.peer_authentications.len()
            + self.authorization_policies.len()
            + self.services.len()
            + self.endpoints.len()
            + self.endpoint_slices.len()
            + self.namespaces.len()
            + self.pods.len()
            + self.nodes.len()
            + self.secrets.len()
            + self.traffic_splits.len()
            + self.links.len()
            + self.mesh_configs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
