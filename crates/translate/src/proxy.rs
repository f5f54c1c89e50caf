//! Who a proxy is, from the node it announces: Istio's node ID
//! (`sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`) and metadata keys
//! (`NAMESPACE`, `CLUSTER_ID`, `NETWORK`, `LABELS`, `SERVICE_ACCOUNT`, `GENERATOR`,
//! `IDLE_TIMEOUT`), plus the node's locality.

use std::collections::BTreeMap;
use std::net::IpAddr;

use strait_model::{ClusterId, Locality, NetworkId};

/// What kind of client a proxy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyKind {
    /// A workload's sidecar: outbound and inbound listeners.
    Sidecar,
    /// A gateway: listeners from Gateway resources.
    Router,
    /// A gRPC application with the xDS client built in: `api_listener`s per target.
    ProxylessGrpc,
}

/// A connected proxy as translation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyNode {
    pub id: String,
    pub kind: ProxyKind,
    pub ip: Option<IpAddr>,
    pub workload_name: String,
    pub namespace: String,
    pub cluster: ClusterId,
    pub network: NetworkId,
    pub locality: Locality,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// The IP families of the proxy's workload.
    pub families: IpFamilies,
    /// Traffic reaches the proxy by capture (iptables, Istio's `REDIRECT`/`TPROXY`); `false`
    /// for metadata `INTERCEPTION_MODE: NONE` (no iptables: only the Sidecar resource's explicit
    /// `bind` listeners carry traffic, so the capture listeners are left out).
    pub captured: bool,
    /// Istio's `IDLE_TIMEOUT` metadata (`ISTIO_META_IDLE_TIMEOUT`, a duration such as `30s`):
    /// the idle timeout of the proxy's HTTP connection managers and TCP proxies, in
    /// milliseconds (`0` disables it). Unset: Envoy's default of one hour.
    pub idle_timeout_ms: Option<u64>,
}

/// Which IP families a proxy's workload has addresses in (Istio reads them from the node's
/// `INSTANCE_IPS`): an IPv4-only proxy is never told IPv6 addresses the mesh made up, nor an
/// IPv6-only one IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpFamilies {
    pub v4: bool,
    pub v6: bool,
}

impl IpFamilies {
    /// The families of `ips`; IPv4 alone when there are none (Istio's default).
    pub fn of(ips: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut f = IpFamilies {
            v4: false,
            v6: false,
        };
        for ip in ips {
            match ip {
                IpAddr::V4(_) => f.v4 = true,
                IpAddr::V6(_) => f.v6 = true,
            }
        }
        if !f.v4 && !f.v6 {
            f.v4 = true;
        }
        f
    }

    /// Whether an address of `ip`'s family is of use to the proxy.
    pub fn has(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() { self.v4 } else { self.v6 }
    }

    /// `4`, `6` or `46`, for generation keys.
    pub fn key(&self) -> &'static str {
        match (self.v4, self.v6) {
            (true, true) => "46",
            (false, true) => "6",
            _ => "4",
        }
    }
}

/// The node as it arrives (wire-independent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    /// Flattened string metadata (`LABELS` may be a JSON object rendered as `k=v,k2=v2`).
    pub metadata: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub locality: Locality,
}

/// Why a node is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeError(pub String);

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ProxyNode {
    /// Whether an endpoint on `network` is directly reachable from this proxy: the same
    /// network, or either side's network unset (Istio's `InNetwork`: a proxy that does not say
    /// its `NETWORK` reaches every endpoint directly, as does any proxy an endpoint without a
    /// network).
    pub fn in_network(&self, network: &NetworkId) -> bool {
        self.network.is_empty() || network.is_empty() || *network == self.network
    }

    /// Reads a node. `default_cluster` is the control plane's own cluster, used when the node
    /// does not say `CLUSTER_ID`.
    pub fn from_node(node: &NodeInfo, default_cluster: &ClusterId) -> Result<ProxyNode, NodeError> {
        let parts: Vec<&str> = node.id.split('~').collect();
        let (kind, ip, workload, ns_from_id) = match parts.as_slice() {
            [kind, ip, pod, domain] => {
                let kind = match *kind {
                    "sidecar" => ProxyKind::Sidecar,
                    "router" => ProxyKind::Router,
                    other => {
                        return Err(NodeError(format!(
                            "node ID \"{}\": unknown proxy type \"{other}\"; use sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local or router~...",
                            node.id
                        )));
                    }
                };
                let ip = ip.parse::<IpAddr>().ok();
                let (pod_name, pod_ns) = pod.split_once('.').unwrap_or((pod, ""));
                let ns = if pod_ns.is_empty() {
                    domain.split('.').next().unwrap_or("")
                } else {
                    pod_ns
                };
                (kind, ip, pod_name.to_string(), ns.to_string())
            }
            // Plain IDs (e.g. a gRPC bootstrap's `node.id`) are accepted as sidecars by name.
            _ if !node.id.is_empty() && !node.id.contains('~') => {
                (ProxyKind::Sidecar, None, node.id.clone(), String::new())
            }
            _ => {
                return Err(NodeError(format!(
                    "node ID \"{}\" is not <type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local",
                    node.id
                )));
            }
        };
        let kind = if node.metadata.get("GENERATOR").map(String::as_str) == Some("grpc") {
            ProxyKind::ProxylessGrpc
        } else {
            kind
        };
        let meta = |k: &str| node.metadata.get(k).filter(|v| !v.is_empty()).cloned();
        let namespace = meta("NAMESPACE").unwrap_or(if ns_from_id.is_empty() {
            "default".into()
        } else {
            ns_from_id
        });
        let mut labels = node.labels.clone();
        if let Some(l) = meta("LABELS") {
            for pair in l.split(',') {
                if let Some((k, v)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
        }
        let instance_ips: Vec<IpAddr> = meta("INSTANCE_IPS")
            .map(|ips| {
                ips.split(',')
                    .filter_map(|i| i.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let families = IpFamilies::of(instance_ips.iter().copied().chain(ip));
        let idle_timeout_ms = match meta("IDLE_TIMEOUT") {
            None => None,
            Some(text) => match strait_config::duration::parse(&text) {
                Ok(d) => Some(u64::try_from(d.as_std().as_millis()).unwrap_or(u64::MAX)),
                Err(e) => {
                    return Err(NodeError(format!(
                        "node \"{}\": metadata IDLE_TIMEOUT: {e}; set ISTIO_META_IDLE_TIMEOUT to a duration such as 30s, or 0s to disable the idle timeout",
                        node.id
                    )));
                }
            },
        };
        let ip = instance_ips.first().copied().or(ip);
        Ok(ProxyNode {
            id: node.id.clone(),
            kind,
            ip,
            families,
            workload_name: meta("WORKLOAD_NAME").unwrap_or(workload),
            cluster: meta("CLUSTER_ID")
                .map(|c| ClusterId::new(&c))
                .unwrap_or_else(|| default_cluster.clone()),
            network: NetworkId::new(&meta("NETWORK").unwrap_or_default()),
            locality: node.locality.clone(),
            service_account: meta("SERVICE_ACCOUNT").unwrap_or_else(|| "default".into()),
            captured: !meta("INTERCEPTION_MODE").is_some_and(|m| m.eq_ignore_ascii_case("NONE")),
            idle_timeout_ms,
            namespace,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_node_ids_and_metadata_are_read() {
        let node = NodeInfo {
            id: "sidecar~10.1.0.5~helloworld-v1.sample~sample.svc.cluster.local".into(),
            metadata: [
                ("CLUSTER_ID", "cluster1"),
                ("NETWORK", "network1"),
                ("LABELS", "app=helloworld,version=v1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            labels: BTreeMap::new(),
            locality: Locality::new("region1", "zone1", ""),
        };
        let p = ProxyNode::from_node(&node, &ClusterId::new("cp")).unwrap();
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.ip, Some("10.1.0.5".parse().unwrap()));
        assert_eq!(
            (p.workload_name.as_str(), p.namespace.as_str()),
            ("helloworld-v1", "sample")
        );
        assert_eq!(
            (p.cluster.as_str(), p.network.as_str()),
            ("cluster1", "network1")
        );
        assert_eq!(p.labels.get("version").map(String::as_str), Some("v1"));
    }

    #[test]
    fn ip_families_come_from_the_instance_ips_else_the_node_id() {
        let families = |id: &str, ips: Option<&str>| {
            let node = NodeInfo {
                id: id.into(),
                metadata: ips
                    .map(|i| BTreeMap::from([("INSTANCE_IPS".to_string(), i.to_string())]))
                    .unwrap_or_default(),
                ..Default::default()
            };
            let p = ProxyNode::from_node(&node, &ClusterId::new("c1")).unwrap();
            (p.families.v4, p.families.v6)
        };
        let id = "sidecar~10.1.0.9~sleep.sample~sample.svc.cluster.local";
        assert_eq!(families(id, None), (true, false));
        assert_eq!(families(id, Some("10.1.0.9,fd00::9")), (true, true));
        assert_eq!(
            families(
                "sidecar~fd00::9~sleep.sample~sample.svc.cluster.local",
                Some("fd00::9")
            ),
            (false, true)
        );
        assert_eq!(
            families("grpc-client", None),
            (true, false),
            "unknown: IPv4"
        );
    }

    #[test]
    fn the_idle_timeout_metadata_is_read_and_a_bad_one_named() {
        let node = |value: Option<&str>| {
            ProxyNode::from_node(
                &NodeInfo {
                    id: "sidecar~10.1.0.9~sleep.sample~sample.svc.cluster.local".into(),
                    metadata: value
                        .map(|v| BTreeMap::from([("IDLE_TIMEOUT".to_string(), v.to_string())]))
                        .unwrap_or_default(),
                    ..Default::default()
                },
                &ClusterId::new("cluster1"),
            )
        };
        assert_eq!(node(None).unwrap().idle_timeout_ms, None);
        assert_eq!(node(Some("1m30s")).unwrap().idle_timeout_ms, Some(90_000));
        assert_eq!(node(Some("0s")).unwrap().idle_timeout_ms, Some(0));
        let e = node(Some("ten seconds")).unwrap_err().0;
        assert!(
            e.contains("IDLE_TIMEOUT") && e.contains("\"ten seconds\" is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn an_unset_network_on_either_side_is_the_same_network() {
        let proxy = |network: &str| ProxyNode {
            network: NetworkId::new(network),
            ..ProxyNode::from_node(
                &NodeInfo {
                    id: "sidecar~10.1.0.9~sleep.sample~sample.svc.cluster.local".into(),
                    ..Default::default()
                },
                &ClusterId::new("cluster1"),
            )
            .unwrap()
        };
        let (n1, n2, unset) = (
            NetworkId::new("network1"),
            NetworkId::new("network2"),
            NetworkId::new(""),
        );
        assert!(proxy("network1").in_network(&n1));
        assert!(!proxy("network1").in_network(&n2));
        assert!(proxy("network1").in_network(&unset));
        assert!(proxy("").in_network(&n1));
        assert!(proxy("").in_network(&n2));
    }

    #[test]
    fn grpc_generator_makes_a_proxyless_client() {
        let node = NodeInfo {
            id: "sidecar~127.0.0.1~client.default~default.svc.cluster.local".into(),
            metadata: [("GENERATOR".to_string(), "grpc".to_string())].into(),
            ..Default::default()
        };
        let p = ProxyNode::from_node(&node, &ClusterId::new("c1")).unwrap();
        assert_eq!(p.kind, ProxyKind::ProxylessGrpc);
        assert_eq!(
            p.cluster.as_str(),
            "c1",
            "the control plane's cluster by default"
        );
    }

    #[test]
    fn bad_node_ids_say_what_is_expected() {
        let node = NodeInfo {
            id: "waypoint~1~2~3".into(),
            ..Default::default()
        };
        let e = ProxyNode::from_node(&node, &ClusterId::new("c")).unwrap_err();
        assert!(e.0.contains("unknown proxy type \"waypoint\""));
    }
}
