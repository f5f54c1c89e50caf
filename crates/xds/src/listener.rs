//! Listeners: where a proxy accepts connections and what it does with them.

use serde::{Deserialize, Serialize};

use crate::SocketAddress;
use crate::rbac::Rbac;
use crate::route::RouteConfiguration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    pub name: String,
    pub kind: ListenerKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    /// A listener without a socket, for proxyless gRPC clients (Envoy's `api_listener`).
    Api(HttpConnectionManager),
    Socket(SocketListener),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketListener {
    pub address: SocketAddress,
    pub direction: Direction,
    /// Hand connections to the listener of their original destination (capture listeners).
    pub use_original_dst: bool,
    /// False for listeners reached only through `use_original_dst` hand-off.
    pub bind_to_port: bool,
    /// Read the first bytes to learn TLS SNI / ALPN and HTTP, to choose a filter chain.
    pub inspect_protocol: bool,
    pub filter_chains: Vec<FilterChain>,
    pub default_chain: Option<FilterChain>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterChain {
    pub name: String,
    pub matching: FilterChainMatch,
    /// Terminate TLS with this setting (inbound mTLS, gateways).
    pub tls: Option<DownstreamTls>,
    /// Connection-level authorization (Envoy's network RBAC filters, in order), checked once
    /// the peer is known; HTTP chains authorize each request in their connection manager.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rbac: Vec<Rbac>,
    pub filter: NetworkFilter,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterChainMatch {
    pub destination_port: Option<u16>,
    /// Destination addresses (CIDR text).
    pub prefix_ranges: Vec<String>,
    /// TLS SNI names; `*.example.com` wildcards allowed.
    pub server_names: Vec<String>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: Option<String>,
    /// ALPN / detected protocols (`istio-peer-exchange`, `h2c`, `http/1.1`).
    pub application_protocols: Vec<String>,
}

/// How a downstream TLS connection is terminated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownstreamTls {
    pub certificate: ServerCertificate,
    /// Trusted roots for client certificates, when they are required or optional.
    pub validation: Option<ClientRoots>,
    pub require_client_certificate: bool,
    pub alpn: Vec<String>,
}

/// The certificate a listener presents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerCertificate {
    /// An SDS secret by name (the workload's own: [`crate::SDS_DEFAULT`]).
    Sds(String),
    /// PEM files on the proxy's host (a Gateway server's `serverCertificate` and
    /// `privateKey`).
    Files {
        certificate_chain: String,
        private_key: String,
    },
}

/// Where the roots that client certificates must chain to come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClientRoots {
    /// An SDS secret by name (the mesh's roots: [`crate::SDS_ROOTCA`]).
    Sds(String),
    /// A PEM file on the proxy's host (a Gateway server's `caCertificates`).
    File { ca_certificates: String },
}

impl DownstreamTls {
    /// Terminates mesh mTLS: the workload's certificate, the peer's required and verified
    /// against the mesh roots.
    pub fn mesh(alpn: Vec<String>) -> DownstreamTls {
        DownstreamTls {
            certificate: ServerCertificate::Sds(crate::SDS_DEFAULT.into()),
            validation: Some(ClientRoots::Sds(crate::SDS_ROOTCA.into())),
            require_client_certificate: true,
            alpn,
        }
    }

    /// Whether this is the workload's own mesh certificate and roots.
    pub fn is_mesh(&self) -> bool {
        self.certificate == ServerCertificate::Sds(crate::SDS_DEFAULT.into())
            && self
                .validation
                .as_ref()
                .is_none_or(|v| *v == ClientRoots::Sds(crate::SDS_ROOTCA.into()))
    }

    /// The files this termination reads (its certificate, key and client CA).
    pub fn file_paths(&self) -> impl Iterator<Item = &str> {
        let (chain, key) = match &self.certificate {
            ServerCertificate::Files {
                certificate_chain,
                private_key,
            } => (Some(certificate_chain.as_str()), Some(private_key.as_str())),
            ServerCertificate::Sds(_) => (None, None),
        };
        let ca = match &self.validation {
            Some(ClientRoots::File { ca_certificates }) => Some(ca_certificates.as_str()),
            _ => None,
        };
        chain.into_iter().chain(key).chain(ca)
    }

    /// The SDS secrets this termination names besides the workload's certificate and the
    /// mesh roots (which the proxy's identity provides): a `credentialName`'s.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        let certificate = match &self.certificate {
            ServerCertificate::Sds(name) if name != crate::SDS_DEFAULT => Some(name.as_str()),
            _ => None,
        };
        let roots = match &self.validation {
            Some(ClientRoots::Sds(name)) if name != crate::SDS_ROOTCA => Some(name.as_str()),
            _ => None,
        };
        certificate.into_iter().chain(roots)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkFilter {
    Http(HttpConnectionManager),
    Tcp(TcpProxy),
    /// East-west gateway passthrough: the cluster is named by the TLS SNI
    /// (`outbound_.<port>_.<subset>_.<host>` → `outbound|<port>|<subset>|<host>`), and the
    /// workload's TLS is forwarded untouched.
    SniCluster(TcpProxy),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub route: RouteSource,
    pub http_filters: Vec<HttpFilter>,
    /// Request authentication (JWT), before authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<crate::jwt::JwtAuthn>,
    /// Request authorization (Envoy's HTTP RBAC filters, in order), before any other filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rbac: Vec<Rbac>,
    /// Let `Upgrade: websocket` through.
    pub upgrades: Vec<String>,
    /// Closes idle downstream connections.
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteSource {
    /// Fetched over RDS by name.
    Rds(String),
    Inline(RouteConfiguration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpFilter {
    /// Fault injection (configured per route).
    Fault,
    /// CORS (configured per route).
    Cors,
    /// Always last.
    Router,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// One cluster, or weighted clusters.
    pub clusters: Vec<(String, u32)>,
    pub idle_timeout_ms: Option<u64>,
}
