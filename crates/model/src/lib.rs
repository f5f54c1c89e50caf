//! The mesh as the control plane sees it: every cluster's services, endpoints and workloads,
//! merged by host across clusters, each endpoint carrying its cluster, network, locality,
//! identity and health. Pure code: no IO.

pub mod build;
pub mod identity;
pub mod ids;
pub mod locality;
pub mod mesh;
pub mod mirror;
pub mod network;
pub mod protocol;
pub mod service;
pub mod settings;
pub mod vips;

pub use build::{ClusterSource, ClusterView, build_cluster, rebuild_cluster};
pub use identity::SpiffeId;
pub use ids::{ClusterId, Hostname, NetworkId};
pub use locality::Locality;
pub use mesh::{MeshModel, ModelDiff, ServiceKey};
pub use protocol::Protocol;
pub use service::{
    Endpoint, EndpointAddress, Health, Labels, Service, ServiceOrigin, ServicePort, ServiceView,
    Workload, WorkloadKind, WorkloadRef,
};
pub use settings::MeshSettings;

#[cfg(test)]
mod tests;
