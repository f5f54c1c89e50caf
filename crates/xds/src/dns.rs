//! The name table a sidecar's DNS proxy answers from (Istio's NDS `NameTable`): for each host
//! the proxy can reach, the addresses to answer with, and for Kubernetes Services the name and
//! namespace from which the proxy derives the short forms (`name`, `name.ns`, `name.ns.svc`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The one name table resource's name (Istio's NDS resource has none).
pub const NAME_TABLE: &str = "";

/// Host → what to answer for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameTable {
    pub hosts: BTreeMap<String, NameInfo>,
}

/// What a host resolves to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameInfo {
    /// IPv4 and IPv6 addresses, as text.
    pub ips: Vec<String>,
    /// Where the host comes from: `Kubernetes` for a Service (short forms apply), else the
    /// registry that declared it (`External` for a ServiceEntry).
    pub registry: String,
    /// A Kubernetes Service's name and namespace (empty otherwise).
    pub short_name: String,
    pub namespace: String,
    /// Further names answering the same addresses.
    pub alt_hosts: Vec<String>,
}

/// Istio's registry name for Kubernetes Services.
pub const REGISTRY_KUBERNETES: &str = "Kubernetes";
/// Istio's registry name for ServiceEntry hosts.
pub const REGISTRY_EXTERNAL: &str = "External";
