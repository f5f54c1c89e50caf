//! The wire boundary of xDS: Strait's resources (`strait-xds`) become Envoy v3 protobufs here
//! and nowhere else. (The proxy's reverse conversion, which rejects what it cannot honour, lands
//! with the proxy.)

mod to_envoy;

pub use to_envoy::{cluster, listener, load_assignment, route_configuration, to_any};

/// The protobuf message types, for callers that build discovery messages.
pub use envoy_types::pb;
