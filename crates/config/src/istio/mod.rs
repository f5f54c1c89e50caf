//! Istio's `networking.istio.io` and `security.istio.io` resources, field for field as the
//! CRD schemas spell them.

pub mod common;
pub mod delegation;
pub mod gateway;
pub mod security;
pub mod traffic;
pub mod workload;
