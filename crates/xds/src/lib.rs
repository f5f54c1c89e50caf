//! Strait's xDS resources: what a proxy is told to do, with Envoy's semantics but Strait's own
//! types. The control plane's translation produces them; the xDS server converts them to Envoy
//! protobufs on the wire, and the proxy converts what it receives back into them (rejecting what
//! it cannot honour). Serializable, for golden files and config dumps.

pub mod cluster;
pub mod dns;
pub mod endpoint;
pub mod jwt;
pub mod listener;
pub mod rbac;
pub mod route;
pub mod secret;

use serde::{Deserialize, Serialize};

pub use cluster::Cluster;
pub use endpoint::ClusterLoadAssignment;
pub use listener::Listener;
pub use route::RouteConfiguration;
pub use secret::Secret;

/// Istio's SDS names of the workload certificate and the mesh roots.
pub const SDS_DEFAULT: &str = "default";
pub const SDS_ROOTCA: &str = "ROOTCA";

/// ALPN values Istio's sidecars offer when they originate mesh mTLS (Envoy's overrides for
/// HTTP/1.0, HTTP/1.1 and HTTP/2 clusters, and TCP's `istio-peer-exchange` / `istio`); inbound
/// mTLS filter chains match on them.
pub const MESH_MTLS_ALPN: [&str; 5] = [
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// The resource types served over ADS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Listener,
    Route,
    Cluster,
    Endpoint,
    Secret,
    /// The DNS proxy's name table (Istio's NDS).
    NameTable,
}

impl ResourceType {
    pub const ALL: [ResourceType; 6] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
        ResourceType::NameTable,
    ];

    /// The type URL on the wire.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
            ResourceType::NameTable => "type.googleapis.com/istio.networking.nds.v1.NameTable",
        }
    }

    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name, as Istio's debug pages use (`LDS`, `RDS`, ...).
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Listener => "LDS",
            ResourceType::Route => "RDS",
            ResourceType::Cluster => "CDS",
            ResourceType::Endpoint => "EDS",
            ResourceType::Secret => "SDS",
            ResourceType::NameTable => "NDS",
        }
    }

    /// Listeners, clusters and the name table are sent whole in state-of-the-world responses;
    /// the others by name.
    pub fn is_wildcard_in_sotw(self) -> bool {
        matches!(
            self,
            ResourceType::Listener | ResourceType::Cluster | ResourceType::NameTable
        )
    }
}

/// An IP address (as text) and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SocketAddress {
    pub ip: String,
    pub port: u16,
}

impl SocketAddress {
    pub fn new(ip: impl Into<String>, port: u16) -> Self {
        Self {
            ip: ip.into(),
            port,
        }
    }
}

/// Where a workload runs (Envoy's `Locality`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

/// A string matcher (Envoy's `StringMatcher`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// RE2 syntax.
    Regex(String),
    /// The value is present, whatever it is.
    Present,
}

/// `text` as a regex that matches it literally (for `StringMatch::Regex` built from user text).
pub fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A resource with its name, of any type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Resource {
    Listener(Listener),
    Route(RouteConfiguration),
    Cluster(Cluster),
    Endpoint(ClusterLoadAssignment),
}

impl Resource {
    pub fn name(&self) -> &str {
        match self {
            Resource::Listener(r) => &r.name,
            Resource::Route(r) => &r.name,
            Resource::Cluster(r) => &r.name,
            Resource::Endpoint(r) => &r.cluster_name,
        }
    }

    pub fn resource_type(&self) -> ResourceType {
        match self {
            Resource::Listener(_) => ResourceType::Listener,
            Resource::Route(_) => ResourceType::Route,
            Resource::Cluster(_) => ResourceType::Cluster,
            Resource::Endpoint(_) => ResourceType::Endpoint,
        }
    }
}
