//! The wire boundary of xDS: Strait's resources (`strait-xds`) become Envoy v3 protobufs here
//! and nowhere else (`to_envoy`, for the control plane), and Envoy's protobufs become Strait's
//! resources here (`from_envoy`, for the proxy), rejecting what cannot be honoured with a reason
//! for the NACK.

pub mod from_envoy;
mod jwt;
mod meta;
pub mod nds;
mod rbac;
pub mod sds;
mod to_envoy;

pub use from_envoy::Rejected;
pub use to_envoy::{
    SDS_DEFAULT, SDS_ROOTCA, cluster, listener, load_assignment, route_configuration, to_any,
};

/// The protobuf message types, for callers that build discovery messages.
pub use envoy_types::pb;
