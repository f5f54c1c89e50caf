//! The Kubernetes objects Strait reads: Service, Endpoints, EndpointSlice, Namespace, Pod,
//! Node and Secret.
//!
//! Service, Endpoints, EndpointSlice, Namespace and Secret are modelled completely, so unknown
//! fields are errors as `kubectl --validate=strict` makes them. A Pod's or Node's spec and
//! status have many fields Strait never needs; their structs are *open* (serde name starting
//! with `~`, see [`crate::yaml::de`]) and ignore what they do not name.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};

/// `metadata` of every object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub generate_name: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub creation_timestamp: Option<Opaque>,
    pub deletion_timestamp: Option<Opaque>,
    pub deletion_grace_period_seconds: Option<i64>,
    pub owner_references: Option<Opaque>,
    pub finalizers: Option<Vec<String>>,
    pub managed_fields: Option<Opaque>,
    pub self_link: Option<String>,
}

/// A value Strait accepts but never reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opaque;

impl<'de> Deserialize<'de> for Opaque {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Opaque)
    }
}

/// Kubernetes' `IntOrString` (`targetPort: 8080` or `targetPort: http`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntOrString {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Service

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `None` means "no selector": endpoints are managed by hand.
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs", default)]
    pub cluster_ips: Vec<String>,
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    #[serde(rename = "externalIPs", default)]
    pub external_ips: Vec<String>,
    pub external_name: Option<String>,
    pub session_affinity: Option<String>,
    pub session_affinity_config: Option<Opaque>,
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    pub load_balancer_source_ranges: Option<Vec<String>>,
    pub load_balancer_class: Option<String>,
    pub allocate_load_balancer_node_ports: Option<bool>,
    pub external_traffic_policy: Option<String>,
    pub internal_traffic_policy: Option<String>,
    pub health_check_node_port: Option<i32>,
    #[serde(default)]
    pub publish_not_ready_addresses: bool,
    pub ip_families: Option<Vec<String>>,
    pub ip_family_policy: Option<String>,
    pub traffic_distribution: Option<String>,
    /// The load balancer's addresses (IPs or host names) from the Service's
    /// `status.loadBalancer.ingress`, where a cloud (or `strait up`) publishes them; filled by
    /// the loader, not part of the spec.
    #[serde(skip)]
    pub load_balancer_ingress: Vec<String>,
}

/// A Service's `status`: only the load balancer's ingress points matter to a mesh (they are
/// how other networks reach an east-west gateway); the rest is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename = "~ServiceStatus", rename_all = "camelCase")]
pub struct ServiceStatus {
    pub load_balancer: Option<LoadBalancerStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename = "~LoadBalancerStatus", rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    #[serde(default)]
    pub ingress: Vec<LoadBalancerIngress>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename = "~LoadBalancerIngress", rename_all = "camelCase")]
pub struct LoadBalancerIngress {
    pub ip: Option<String>,
    pub hostname: Option<String>,
}

impl ServiceStatus {
    /// The ingress points' addresses, IPs before host names as Istio reads them.
    pub fn ingress_addresses(&self) -> Vec<String> {
        let ingress = self
            .load_balancer
            .as_ref()
            .map(|l| l.ingress.as_slice())
            .unwrap_or_default();
        ingress
            .iter()
            .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
            .filter(|a| !a.is_empty())
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
    pub port: i32,
    pub target_port: Option<IntOrString>,
    pub node_port: Option<i32>,
}

// ---------------------------------------------------------------------------------------------
// Endpoints and EndpointSlice

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSubset {
    #[serde(default)]
    pub addresses: Vec<EndpointAddress>,
    #[serde(default)]
    pub not_ready_addresses: Vec<EndpointAddress>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAddress {
    pub ip: String,
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    pub target_ref: Option<ObjectReference>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub api_version: Option<String>,
    pub resource_version: Option<String>,
    pub field_path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceEndpoint {
    pub addresses: Vec<String>,
    pub conditions: Option<EndpointConditions>,
    pub hostname: Option<String>,
    pub target_ref: Option<ObjectReference>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub hints: Option<Opaque>,
    pub deprecated_topology: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EndpointConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Namespace, Pod, Node, Secret

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NamespaceSpec {
    pub finalizers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename = "~PodSpec", rename_all = "camelCase")]
pub struct PodSpec {
    pub node_name: Option<String>,
    /// With `subdomain` naming a headless Service: the pod's own DNS name
    /// (`<hostname>.<subdomain>.<namespace>.svc.<domain>`, as a StatefulSet's pods have).
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`, still honoured by Kubernetes.
    pub service_account: Option<String>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename = "~Container", rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    pub image: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: i32,
    pub protocol: Option<String>,
    pub host_port: Option<i32>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename = "~PodStatus", rename_all = "camelCase")]
pub struct PodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs", default)]
    pub pod_ips: Vec<PodIp>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
    #[serde(default)]
    pub conditions: Vec<PodCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename = "~PodCondition")]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename = "~NodeSpec")]
pub struct NodeSpec {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename = "~Status")]
pub struct AnyStatus {}

/// Fields of a Secret besides metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretData {
    /// Base64 values.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
    #[serde(rename = "type")]
    pub secret_type: Option<String>,
    pub immutable: Option<bool>,
}

impl SecretData {
    /// The value of `key` as the API server gives it: `stringData` over `data` (which is
    /// base64); `None` when absent or not base64 (validation reports that).
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(s) = self.string_data.get(key) {
            return Some(s.as_bytes().to_vec());
        }
        decode_base64(self.data.get(key)?).ok()
    }

    /// The certificate chain and private key a TLS credential holds, as Istio reads them:
    /// `tls.crt` and `tls.key` (a `kubernetes.io/tls` Secret), else the generic `cert` and `key`.
    pub fn certificate(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        [("tls.crt", "tls.key"), ("cert", "key")]
            .iter()
            .find_map(|(cert, key)| Some((self.value(cert)?, self.value(key)?)))
    }

    /// The CA certificates a credential holds, as Istio reads them: `ca.crt`, else `cacert`.
    pub fn ca_certificates(&self) -> Option<Vec<u8>> {
        ["ca.crt", "cacert"].iter().find_map(|k| self.value(k))
    }
}

/// The suffix of the Secret Istio looks in first for a credential's CA certificates.
pub const CA_SECRET_SUFFIX: &str = "-cacert";

/// The Secret holding credential `name`'s CA certificates, as Istio looks for it: the Secret
/// `<name>-cacert` when there is one (whether or not it holds any), else `<name>` itself;
/// `find` looks a Secret up by name in the credential's namespace.
pub fn roots_secret<'a>(
    find: impl Fn(&str) -> Option<&'a SecretData>,
    name: &str,
) -> Option<&'a SecretData> {
    find(&format!("{name}{CA_SECRET_SUFFIX}")).or_else(|| find(name))
}

/// A Secret's `data` value (standard base64; line breaks, as `base64` writes them, allowed).
pub fn decode_base64(value: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact)
}
