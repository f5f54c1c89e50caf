//! The objects a cluster shares with the control planes watching it (pure): from its
//! manifests, every document of a registry kind — what service discovery is built from, never
//! Secrets or routing rules — keyed `<kind>/<namespace>/<name>`, and the difference between
//! two such sets.

use std::collections::BTreeMap;

use serde::Deserialize;
use strait_config::yaml::split_documents;

/// The kinds a cluster shares: Kubernetes' discovery objects, and Strait's MeshConfig (which
/// says the cluster's network). Istio's routing and security rules stay with each primary's
/// own configuration, as in Istio; Secrets never leave their cluster.
pub const SHARED_KINDS: [&str; 7] = [
    "Namespace",
    "Service",
    "Endpoints",
    "EndpointSlice",
    "Pod",
    "Node",
    "MeshConfig",
];

/// Shared objects by key.
pub type Objects = BTreeMap<String, Vec<u8>>;

#[derive(Deserialize)]
struct Head {
    kind: Option<String>,
    metadata: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
}

/// Adds the shared documents of one manifest file's text. Documents that do not parse are
/// skipped: the serving cluster's own registry reports them.
pub fn add_from_text(text: &str, out: &mut Objects) {
    for doc in split_documents(text) {
        let Ok(head) = serde_saphyr::from_str::<Head>(&doc.text) else {
            continue;
        };
        let (Some(kind), Some(meta)) = (head.kind, head.metadata) else {
            continue;
        };
        let Some(name) = meta.name else { continue };
        if !SHARED_KINDS.contains(&kind.as_str()) {
            continue;
        }
        let namespace = meta.namespace.unwrap_or_default();
        out.insert(
            format!("{kind}/{namespace}/{name}"),
            doc.text.clone().into_bytes(),
        );
    }
}

/// What changed from `old` to `new`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub upserts: Vec<(String, Vec<u8>)>,
    pub deletes: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}

pub fn diff(old: &Objects, new: &Objects) -> Diff {
    Diff {
        upserts: new
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        deletes: old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_discovery_kinds_only_and_diffs_by_key() {
        let mut a = Objects::new();
        add_from_text(
            "apiVersion: v1\nkind: Service\nmetadata: {name: hw, namespace: sample}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: sample}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: hw, namespace: sample}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\n---\nnot: [valid\n",
            &mut a,
        );
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            ["Node//n1", "Service/sample/hw"]
        );
        let mut b = a.clone();
        b.remove("Node//n1");
        b.insert("Service/sample/hw".into(), b"changed".to_vec());
        b.insert("Pod/sample/p".into(), b"new".to_vec());
        let d = diff(&a, &b);
        assert_eq!(d.deletes, ["Node//n1"]);
        assert_eq!(
            d.upserts
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["Pod/sample/p", "Service/sample/hw"]
        );
        assert!(diff(&b, &b).is_empty());
    }
}
