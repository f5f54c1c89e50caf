//! The Envoy `Node` a client announces, read into translation's wire-independent `NodeInfo`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Value, value::Kind};
use strait_model::Locality;
use strait_translate::NodeInfo;

fn flatten(v: &Value) -> String {
    match &v.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::NumberValue(n)) => n.to_string(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::StructValue(s)) => {
            let mut pairs: Vec<String> = s
                .fields
                .iter()
                .map(|(k, v)| format!("{k}={}", flatten(v)))
                .collect();
            pairs.sort();
            pairs.join(",")
        }
        Some(Kind::ListValue(l)) => l.values.iter().map(flatten).collect::<Vec<_>>().join(","),
        Some(Kind::NullValue(_)) | None => String::new(),
    }
}

/// Reads the node: its ID, string metadata (structured values flattened: `LABELS` becomes
/// `k=v,k=v`), and locality.
pub fn node_info(node: &Node) -> NodeInfo {
    let metadata: BTreeMap<String, String> = node
        .metadata
        .as_ref()
        .map(|m| {
            m.fields
                .iter()
                .map(|(k, v)| (k.clone(), flatten(v)))
                .collect()
        })
        .unwrap_or_default();
    let locality = node
        .locality
        .as_ref()
        .map(|l| Locality::new(&l.region, &l.zone, &l.sub_zone))
        .unwrap_or_default();
    NodeInfo {
        id: node.id.clone(),
        metadata,
        labels: BTreeMap::new(),
        locality,
    }
}
