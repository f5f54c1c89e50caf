//! Load assignments: a cluster's endpoints by locality, with priorities and weights.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Locality, SocketAddress};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterLoadAssignment {
    pub cluster_name: String,
    /// One entry per (locality, priority).
    pub localities: Vec<LocalityEndpoints>,
    /// Envoy's overprovisioning factor, in percent (140 by default).
    pub overprovisioning_factor: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalityEndpoints {
    pub locality: Locality,
    /// 0 is used first; higher priorities take traffic as lower ones lose health.
    pub priority: u32,
    /// Share of traffic within its priority (`distribute`); also required by gRPC clients.
    pub weight: Option<u32>,
    pub endpoints: Vec<LbEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LbEndpoint {
    pub address: SocketAddress,
    pub health: HealthStatus,
    pub weight: u32,
    /// Shared by the endpoints that carry the same metadata (a workload's replicas).
    pub metadata: Arc<EndpointMetadata>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    Draining,
}

/// What the proxy needs to know about an endpoint besides its address. The texts are shared:
/// a service's endpoints mostly name the same cluster, network, namespace and identity, and a
/// proxy holding a large mesh keeps one copy of each (its telemetry labels reuse them too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointMetadata {
    pub cluster: Arc<str>,
    pub network: Arc<str>,
    /// The workload's SPIFFE identity; mTLS verifies it.
    pub identity: Option<Arc<str>>,
    /// The workload speaks Istio mTLS (has a sidecar).
    pub mtls: bool,
    /// This address is the east-west gateway of another network, standing for `weight`
    /// endpoints behind it.
    pub gateway: bool,
    pub workload: Arc<str>,
    pub namespace: Arc<str>,
}
