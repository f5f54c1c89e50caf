//! Mesh identity: the certificate authority (Istio's `cacerts` layout, CSR policy and signing,
//! Istio's certificate service on 15012), bootstrap tokens, the workload side that obtains and
//! rotates its SPIFFE certificate, and the rustls configurations that carry it as mTLS.
//!
//! Decisions are plain functions over plain types ([`policy`], [`token`], [`revocation`]); files, sockets and
//! clocks stay in the modules that need them ([`cacerts`], [`service`], [`workload`]).

pub mod authority;
pub mod cacerts;
pub mod cert;
pub mod policy;
pub mod revocation;
pub mod service;
pub mod service_account;
pub mod serving;
pub mod tls;
pub mod token;
pub mod token_review;
pub mod transport;
pub mod workload;

/// Generated from `proto/certificate.proto` (Istio's `istio.v1.auth` certificate service).
#[allow(clippy::all, unused_qualifications, rust_2018_idioms, missing_docs)]
pub mod pb {
    tonic::include_proto!("istio.v1.auth");
}

pub use authority::Authority;
pub use cert::{CertChain, WorkloadCert};
pub use strait_model::SpiffeId;

/// Istio's default lifetime of a workload certificate.
pub const DEFAULT_WORKLOAD_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Istio's default maximum (`MAX_WORKLOAD_CERT_TTL`): 90 days.
pub const MAX_WORKLOAD_TTL: std::time::Duration = std::time::Duration::from_secs(90 * 24 * 3600);
