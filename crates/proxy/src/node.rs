//! Who this proxy is: its node ID and metadata as Istio spells them
//! (`sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`; `NAMESPACE`, `CLUSTER_ID`, `LABELS`,
//! `WORKLOAD_NAME`, …), the Envoy `Node` announced to the control plane, and the peer labels
//! its telemetry reports for itself.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use crate::metrics::{Peer, Text};

/// The proxy's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sidecar,
    Router,
}

/// The proxy's identity, read from its node ID and metadata.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub id: String,
    pub mode: Mode,
    pub ip: String,
    pub pod: String,
    pub namespace: String,
    pub cluster: String,
    pub labels: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub locality: [String; 3],
    /// The cluster's domain suffix, from the ID's `<namespace>.svc.<suffix>` (`cluster.local`).
    pub domain_suffix: String,
}

impl NodeIdentity {
    /// Reads `type~ip~pod.namespace~domain` and the metadata (`KEY=VALUE`); `LABELS` is
    /// `k=v,k=v`, `LOCALITY` (or `--locality`) `region/zone/subzone`.
    pub fn parse(id: &str, metadata: &[(String, String)]) -> Result<NodeIdentity, String> {
        let parts: Vec<&str> = id.split('~').collect();
        let [kind, ip, pod_ns, domain] = parts[..] else {
            return Err(format!(
                "node ID {id:?} must look like Istio's: sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local"
            ));
        };
        let mode = match kind {
            "sidecar" => Mode::Sidecar,
            "router" => Mode::Router,
            other => {
                return Err(format!(
                    "node ID {id:?}: the type {other:?} must be sidecar or router"
                ));
            }
        };
        let (pod, ns_from_id) = pod_ns.split_once('.').unwrap_or((pod_ns, ""));
        let meta: BTreeMap<String, String> = metadata.iter().cloned().collect();
        let namespace = meta
            .get("NAMESPACE")
            .cloned()
            .unwrap_or_else(|| ns_from_id.to_string());
        let labels = meta
            .get("LABELS")
            .map(|l| {
                l.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let mut locality: [String; 3] = Default::default();
        if let Some(l) = meta.get("LOCALITY") {
            for (slot, part) in locality.iter_mut().zip(l.split('/')) {
                *slot = part.to_string();
            }
        }
        Ok(NodeIdentity {
            id: id.to_string(),
            mode,
            ip: ip.to_string(),
            pod: pod.to_string(),
            namespace,
            cluster: meta.get("CLUSTER_ID").cloned().unwrap_or_default(),
            labels,
            metadata: meta,
            locality,
            domain_suffix: domain
                .split_once(".svc.")
                .map_or("cluster.local", |(_, suffix)| suffix)
                .to_string(),
        })
    }

    /// The workload name: `WORKLOAD_NAME`, else the pod name without its generated suffixes.
    pub fn workload(&self) -> String {
        if let Some(w) = self.metadata.get("WORKLOAD_NAME") {
            return w.clone();
        }
        // `reviews-v1-545db77b95-xq2bn` → `reviews-v1` (Deployment pods), else the pod name.
        let parts: Vec<&str> = self.pod.split('-').collect();
        if parts.len() > 2 {
            let hash = parts[parts.len() - 2];
            let id = parts[parts.len() - 1];
            if hash.len() >= 8 && id.len() == 5 {
                return parts[..parts.len() - 2].join("-");
            }
        }
        self.pod.clone()
    }

    /// What the control plane is told (Istio's keys; `LABELS` as a structure).
    pub fn envoy_node(&self) -> Node {
        let mut fields: BTreeMap<String, Value> = self
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != "LABELS")
            .map(|(k, v)| (k.clone(), string(v)))
            .collect();
        fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(Kind::StructValue(Struct {
                    fields: self
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), string(v)))
                        .collect(),
                })),
            },
        );
        fields
            .entry("NAMESPACE".into())
            .or_insert_with(|| string(&self.namespace));
        Node {
            id: self.id.clone(),
            cluster: format!("{}.{}", self.workload(), self.namespace),
            metadata: Some(Struct {
                fields: fields.into_iter().collect(),
            }),
            locality: Some(Locality {
                region: self.locality[0].clone(),
                zone: self.locality[1].clone(),
                sub_zone: self.locality[2].clone(),
            }),
            user_agent_name: "strait".into(),
            ..Default::default()
        }
    }

    /// This proxy's own labels in telemetry.
    pub fn peer(&self) -> Peer {
        let or_unknown = |v: Option<&String>| Text::known_or_unknown(v.map_or("", String::as_str));
        let workload = self.workload();
        Peer {
            workload: or_unknown(Some(&workload)),
            namespace: or_unknown(Some(&self.namespace)),
            principal: Text::UNKNOWN,
            app: or_unknown(
                self.labels
                    .get("app")
                    .or_else(|| self.labels.get("app.kubernetes.io/name")),
            ),
            version: or_unknown(
                self.labels
                    .get("version")
                    .or_else(|| self.labels.get("app.kubernetes.io/version")),
            ),
            cluster: or_unknown(Some(&self.cluster)),
        }
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_node_ids_and_metadata() {
        let n = NodeIdentity::parse(
            "sidecar~10.0.1.5~reviews-v1-545db77b95-xq2bn.bookinfo~bookinfo.svc.cluster.local",
            &[
                ("CLUSTER_ID".into(), "cluster1".into()),
                ("LABELS".into(), "app=reviews,version=v1".into()),
            ],
        )
        .unwrap();
        assert_eq!(n.mode, Mode::Sidecar);
        assert_eq!(n.namespace, "bookinfo");
        assert_eq!(n.workload(), "reviews-v1");
        let p = n.peer();
        assert_eq!(&*p.app, "reviews");
        assert_eq!(&*p.cluster, "cluster1");
        let node = n.envoy_node();
        assert_eq!(node.cluster, "reviews-v1.bookinfo");
        let meta = node.metadata.unwrap();
        assert!(matches!(
            meta.fields["LABELS"].kind,
            Some(Kind::StructValue(_))
        ));
        assert!(
            NodeIdentity::parse("10.0.0.1", &[])
                .unwrap_err()
                .contains("sidecar~<ip>")
        );
        assert!(NodeIdentity::parse("gateway~1~a.b~c", &[]).is_err());
    }
}
