//! Cross-cluster discovery without shared kubeconfigs. A cluster's control plane serves its
//! registry objects (Services, Endpoints, Pods, Nodes, …) over an authenticated stream
//! ([`server`]); another cluster's control plane watches it with what a remote secret gives —
//! address, CA bundle, short-lived token ([`secret`]) — and feeds it into its own registry
//! ([`client`]), keeping the last state for a bounded time when the remote is unreachable.
//! [`remotes`] follows the remote secrets among a cluster's manifests, so adding, rotating or
//! deleting one takes effect without a restart.

pub mod client;
pub mod objects;
pub mod remotes;
pub mod secret;
pub mod server;

/// Manifests as a configuration, asserting they are valid (for the crate's tests).
#[cfg(test)]
#[allow(clippy::panic)]
pub(crate) fn valid_config(yaml: &str) -> strait_config::ConfigSet {
    use strait_config::{ConfigSet, LoadOptions, load_str};
    let report = load_str(yaml, "manifests.yaml", &LoadOptions::default());
    let errors: Vec<String> = report
        .diagnostics()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    ConfigSet::from_resources(report.into_resources())
}

/// The remote registry's protobuf types and gRPC stubs.
#[allow(clippy::all, unused_qualifications, rust_2018_idioms, missing_docs)]
pub mod pb {
    tonic::include_proto!("strait.registry.v1");
}
