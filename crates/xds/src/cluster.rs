//! Clusters: groups of upstream endpoints with how to balance, limit, eject and secure them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::SocketAddress;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// `outbound|<port>|<subset>|<host>`, `inbound|<port>||`, `BlackHoleCluster`, ...
    pub name: String,
    pub discovery: Discovery,
    pub lb_policy: LbPolicy,
    pub connect_timeout_ms: u64,
    pub circuit_breakers: Option<CircuitBreakers>,
    pub outlier_detection: Option<OutlierDetection>,
    /// Speak HTTP/2 to the upstream (http2 and grpc ports).
    pub http2: bool,
    /// Shared with the proxy's connection settings for the cluster.
    pub tls: Option<Arc<UpstreamTls>>,
    /// Honour locality weights (`distribute`) rather than only priorities.
    pub locality_weighted: bool,
    /// Below this percentage of healthy hosts, balance over all hosts (Envoy's panic threshold).
    pub panic_threshold_percent: Option<f64>,
    pub max_requests_per_connection: Option<u32>,
    pub idle_timeout_ms: Option<u64>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// The service this cluster reaches, for telemetry (`destination_service`).
    pub service: Option<ServiceInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// Endpoints over EDS, under this service name (the cluster name when `None`).
    Eds(Option<String>),
    Static(Vec<SocketAddress>),
    /// Resolved by DNS (all addresses).
    StrictDns(Vec<(String, u16)>),
    /// The connection's original destination (passthrough).
    OriginalDst,
    /// No endpoints: every request fails (Istio's `BlackHoleCluster`).
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    RoundRobin,
    /// Power of two choices.
    LeastRequest,
    Random,
    RingHash {
        minimum_ring_size: u64,
    },
    Maglev {
        table_size: u64,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreakers {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutlierDetection {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub consecutive_local_origin_failures: Option<u32>,
    pub split_external_local_origin_errors: bool,
    pub interval_ms: u64,
    pub base_ejection_time_ms: u64,
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTls {
    pub mode: UpstreamTlsMode,
    pub sni: Option<String>,
    /// Accepted server identities (SPIFFE URIs or DNS names).
    pub subject_alt_names: Vec<String>,
    pub alpn: Vec<String>,
    /// For SIMPLE/MUTUAL: file paths, or a credential name (a Kubernetes Secret of the
    /// proxy's namespace, received by SDS: [`UpstreamTls::secret_names`]).
    pub ca_certificates: Option<String>,
    pub client_certificate: Option<String>,
    pub private_key: Option<String>,
    pub credential_name: Option<String>,
    pub insecure_skip_verify: bool,
    /// Istio's auto mTLS: only endpoints marked as having a sidecar (`tlsMode: istio`) take
    /// this TLS and the others are reached in plaintext. False when a DestinationRule asked
    /// for it: every endpoint then takes it.
    #[serde(default)]
    pub auto_mtls: bool,
}

impl UpstreamTls {
    /// The files TLS origination reads (CA, client certificate and key); none for mesh mTLS.
    pub fn file_paths(&self) -> impl Iterator<Item = &str> {
        let origination = self.mode != UpstreamTlsMode::IstioMutual;
        [
            &self.ca_certificates,
            &self.client_certificate,
            &self.private_key,
        ]
        .into_iter()
        .filter(move |_| origination)
        .filter_map(|p| p.as_deref())
    }

    /// The SDS secrets a `credentialName` names, as Istio names them: the client certificate
    /// (`kubernetes://<name>`) for MUTUAL, the CA certificates (`kubernetes://<name>-cacert`)
    /// unless verification is skipped or a CA file is named.
    pub fn secret_names(&self) -> Vec<String> {
        let Some(credential) = &self.credential_name else {
            return vec![];
        };
        let mut out = Vec::new();
        if self.mode == UpstreamTlsMode::IstioMutual {
            return out;
        }
        if self.mode == UpstreamTlsMode::Mutual {
            out.push(crate::secret::certificate_name(credential));
        }
        if !self.insecure_skip_verify && self.ca_certificates.is_none() {
            out.push(crate::secret::roots_name(credential));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTlsMode {
    /// Mesh mTLS with the workload certificate (SDS `default`, roots `ROOTCA`).
    IstioMutual,
    Simple,
    Mutual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time_secs: Option<u32>,
    pub interval_secs: Option<u32>,
}

/// The service behind a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub host: String,
    pub namespace: String,
    pub name: String,
    pub port: u16,
    pub subset: Option<String>,
}
