//! Linkerd's multicluster `Link` (`multicluster.linkerd.io/v1alpha1`–`v1alpha3`), as
//! `linkerd multicluster link` writes it: which cluster this one links, the Secret holding its
//! credentials, its gateway and how that gateway is probed, and which Services it exports.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A Link's spec. Linkerd writes ports, periods and thresholds as strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Link {
    pub target_cluster_name: String,
    pub target_cluster_domain: Option<String>,
    pub target_cluster_linkerd_namespace: Option<String>,
    /// The Secret (same namespace) with the target cluster's credentials.
    pub cluster_credentials_secret: Option<String>,
    pub gateway_address: Option<String>,
    pub gateway_port: Option<String>,
    pub gateway_identity: Option<String>,
    #[serde(default)]
    pub probe_spec: ProbeSpec,
    /// Services of the target cluster to mirror (default: `mirror.linkerd.io/exported: "true"`).
    pub selector: Option<LinkSelector>,
    pub remote_discovery_selector: Option<LinkSelector>,
    pub federated_service_selector: Option<LinkSelector>,
    #[serde(default)]
    pub excluded_annotations: Vec<String>,
    #[serde(default)]
    pub excluded_labels: Vec<String>,
}

/// How the target's gateway is probed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeSpec {
    pub path: Option<String>,
    pub port: Option<String>,
    pub period: Option<String>,
    pub failure_threshold: Option<String>,
    pub timeout: Option<String>,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<SelectorExpression>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorExpression {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl LinkSelector {
    /// Whether `labels` satisfy every label and expression (Kubernetes' semantics; an unknown
    /// operator matches nothing — validation rejects it).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// Linkerd's defaults for what a Link leaves out.
pub mod defaults {
    pub const PROBE_PATH: &str = "/ready";
    pub const PROBE_PORT: u16 = 4191;
    pub const PROBE_PERIOD: &str = "3s";
    pub const FAILURE_THRESHOLD: u32 = 3;
    pub const PROBE_TIMEOUT: &str = "30s";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> =
            [("mirror.linkerd.io/exported".to_string(), "true".to_string())].into();
        let exported = LinkSelector {
            match_labels: labels.clone(),
            ..Default::default()
        };
        assert!(exported.matches(&labels));
        assert!(!exported.matches(&BTreeMap::new()));
        let expr = |operator: &str, values: &[&str]| LinkSelector {
            match_expressions: vec![SelectorExpression {
                key: "mirror.linkerd.io/exported".into(),
                operator: operator.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
            ..Default::default()
        };
        assert!(expr("In", &["true", "remote-discovery"]).matches(&labels));
        assert!(!expr("NotIn", &["true"]).matches(&labels));
        assert!(expr("NotIn", &["true"]).matches(&BTreeMap::new()));
        assert!(expr("Exists", &[]).matches(&labels));
        assert!(expr("DoesNotExist", &[]).matches(&BTreeMap::new()));
        assert!(!expr("Matches", &[]).matches(&labels));
    }
}
