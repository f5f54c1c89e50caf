//! Mesh-wide settings the model needs, derived from Strait's `MeshConfig`.

use std::collections::BTreeMap;

use strait_config::mesh::MeshConfig;

use crate::ids::{ClusterId, NetworkId};
use crate::locality::Locality;
use crate::network::{Cidr, NetworkRules};

/// Istio's default cluster-local hosts: Kubernetes' own services stay in their cluster.
pub const DEFAULT_CLUSTER_LOCAL_HOSTS: &[&str] = &[
    "*.kube-system.svc.cluster.local",
    "kubernetes.default.svc.cluster.local",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    pub mesh_id: String,
    pub trust_domain: String,
    pub trust_domain_aliases: Vec<String>,
    /// The DNS suffix of Kubernetes service hosts.
    pub domain_suffix: String,
    pub networks: NetworkRules,
    /// How to reach each network from outside it.
    pub gateways: BTreeMap<NetworkId, Vec<NetworkGateway>>,
    /// Host patterns (`*.kube-system.svc.cluster.local`) that are not merged across clusters.
    pub cluster_local_hosts: Vec<String>,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            mesh_id: String::new(),
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: Vec::new(),
            domain_suffix: "cluster.local".into(),
            networks: NetworkRules::default(),
            gateways: BTreeMap::new(),
            cluster_local_hosts: DEFAULT_CLUSTER_LOCAL_HOSTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// A gateway into a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGateway {
    pub address: GatewayAddress,
    pub port: u16,
    pub locality: Option<Locality>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayAddress {
    Ip(std::net::IpAddr),
    /// Resolved by DNS (and re-resolved as its TTL says).
    Dns(String),
    /// The addresses of a service in the registry (`istio-eastwestgateway.istio-system.svc...`).
    RegistryService(String),
}

impl MeshSettings {
    /// The settings a `MeshConfig` describes (missing fields keep Istio's defaults).
    pub fn from_config(m: &MeshConfig) -> Self {
        let mut s = MeshSettings {
            mesh_id: m.mesh_id.clone().unwrap_or_default(),
            trust_domain: m.trust_domain.clone(),
            trust_domain_aliases: m.trust_domain_aliases.clone(),
            ..Default::default()
        };
        for (name, net) in &m.mesh_networks {
            let id = NetworkId::new(name);
            for e in &net.endpoints {
                if let Some(c) = e.from_cidr.as_deref().and_then(Cidr::parse) {
                    s.networks.cidrs.push((c, id.clone()));
                }
                if let Some(r) = &e.from_registry {
                    s.networks.registries.insert(ClusterId::new(r), id.clone());
                }
            }
            let gws = net
                .gateways
                .iter()
                .filter_map(|g| {
                    let address = match (&g.address, &g.registry_service_name) {
                        (Some(a), _) => match a.parse() {
                            Ok(ip) => GatewayAddress::Ip(ip),
                            Err(_) => GatewayAddress::Dns(a.clone()),
                        },
                        (None, Some(svc)) => GatewayAddress::RegistryService(svc.clone()),
                        (None, None) => return None,
                    };
                    Some(NetworkGateway {
                        address,
                        port: u16::try_from(g.port).ok()?,
                        locality: g.locality.as_deref().map(Locality::parse_slashed),
                    })
                })
                .collect();
            s.gateways.insert(id, gws);
        }
        for setting in &m.service_settings {
            if setting.settings.cluster_local {
                s.cluster_local_hosts.extend(setting.hosts.iter().cloned());
            }
        }
        s
    }

    /// Whether `host` stays inside its cluster.
    pub fn is_cluster_local(&self, host: &str) -> bool {
        self.cluster_local_hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix('*') {
                Some(suffix) => host.ends_with(suffix),
                None => host == pattern,
            })
    }
}
