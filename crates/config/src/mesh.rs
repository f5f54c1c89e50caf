//! Strait's own mesh settings (`strait.dev/v1alpha1`, kind `MeshConfig`): who this cluster is
//! and how the networks of the mesh reach each other. The shape follows Istio's install values
//! (`meshID`, `clusterName`, `network`) and its `meshNetworks`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::istio::gateway::OutboundMode;
use crate::istio::traffic::LocalityLbSetting;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// The mesh this cluster belongs to (Istio's `meshID`).
    pub mesh_id: Option<String>,
    /// The SPIFFE trust domain of workload identities.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Other trust domains whose identities count as this one's (after a rename).
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    /// This cluster's name (Istio's `multiCluster.clusterName`).
    pub cluster_name: Option<String>,
    /// The network this cluster's workloads are on unless a label says otherwise.
    pub network: Option<String>,
    /// Every network of the mesh: which endpoints are on it and how to reach it from outside.
    #[serde(default)]
    pub mesh_networks: BTreeMap<String, Network>,
    /// Hosts with special treatment (`clusterLocal: true` keeps them inside their cluster).
    #[serde(default)]
    pub service_settings: Vec<ServiceSettings>,
    /// Mesh-wide default locality load balancing.
    pub locality_lb_setting: Option<LocalityLbSetting>,
    pub outbound_traffic_policy: Option<MeshOutboundTrafficPolicy>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            mesh_id: None,
            trust_domain: default_trust_domain(),
            trust_domain_aliases: Vec::new(),
            cluster_name: None,
            network: None,
            mesh_networks: BTreeMap::new(),
            service_settings: Vec::new(),
            locality_lb_setting: None,
            outbound_traffic_policy: None,
        }
    }
}

fn default_trust_domain() -> String {
    "cluster.local".to_string()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Network {
    #[serde(default)]
    pub endpoints: Vec<NetworkEndpoints>,
    #[serde(default)]
    pub gateways: Vec<NetworkGateway>,
}

/// How endpoints are recognised as being on a network: by the cluster (registry) they come
/// from, or by their address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkEndpoints {
    pub from_registry: Option<String>,
    pub from_cidr: Option<String>,
}

/// A gateway into a network: an address (IP or DNS name) or a service in the registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkGateway {
    pub address: Option<String>,
    pub registry_service_name: Option<String>,
    pub port: u32,
    pub locality: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ServiceSettings {
    #[serde(default)]
    pub settings: ServiceSettingsValues,
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSettingsValues {
    #[serde(default)]
    pub cluster_local: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MeshOutboundTrafficPolicy {
    pub mode: Option<OutboundMode>,
}
