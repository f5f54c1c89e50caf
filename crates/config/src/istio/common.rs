//! Building blocks shared by several Istio resources: selectors, destinations, string matches.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `selector` of security resources (`matchLabels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `workloadSelector` of networking resources (`labels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LabelSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `port: {number: N}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PortSelector {
    pub number: Option<u32>,
}

/// Where traffic goes: a host, optionally a subset and a port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Destination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

impl Destination {
    pub fn port_number(&self) -> Option<u32> {
        self.port.as_ref().and_then(|p| p.number)
    }
}

/// A percentage with a fractional part: `{value: 12.5}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// Match on a string: exactly one of `exact`, `prefix`, `regex` (or none, which matches all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

/// The single matching rule a [`StringMatch`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatchKind<'a> {
    Any,
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

impl StringMatch {
    /// How many of `exact`, `prefix`, `regex` are set (the schema allows at most one).
    pub fn set_count(&self) -> usize {
        [
            self.exact.is_some(),
            self.prefix.is_some(),
            self.regex.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count()
    }

    pub fn kind(&self) -> StringMatchKind<'_> {
        if let Some(v) = &self.exact {
            StringMatchKind::Exact(v)
        } else if let Some(v) = &self.prefix {
            StringMatchKind::Prefix(v)
        } else if let Some(v) = &self.regex {
            StringMatchKind::Regex(v)
        } else {
            StringMatchKind::Any
        }
    }
}

/// `tls` of Gateway servers and Sidecar ingress listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsSettings {
    #[serde(default)]
    pub https_redirect: bool,
    pub mode: Option<ServerTlsMode>,
    pub server_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    pub ca_crl: Option<String>,
    pub credential_name: Option<String>,
    pub credential_names: Option<Vec<String>>,
    pub tls_certificates: Option<Vec<TlsCertificate>>,
    pub ca_cert_credential_name: Option<String>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    pub min_protocol_version: Option<TlsProtocolVersion>,
    pub max_protocol_version: Option<TlsProtocolVersion>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub ecdh_curves: Vec<String>,
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCertificate {
    pub server_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum TlsProtocolVersion {
    #[serde(rename = "TLS_AUTO")]
    Auto,
    #[serde(rename = "TLSV1_0")]
    V1_0,
    #[serde(rename = "TLSV1_1")]
    V1_1,
    #[serde(rename = "TLSV1_2")]
    V1_2,
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// A port of a Gateway server or Sidecar listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerPort {
    pub number: Option<u32>,
    pub protocol: Option<String>,
    pub name: Option<String>,
    pub target_port: Option<u32>,
}

impl ServerPort {
    /// The port number, when it is one a socket can have.
    pub fn port(&self) -> Option<u16> {
        self.number.and_then(|n| u16::try_from(n).ok())
    }
}
