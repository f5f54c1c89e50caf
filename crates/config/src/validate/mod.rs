//! Validation equal to Istio's: the rules of the CRD schemas (types, ranges, required fields,
//! `x-kubernetes-validations`) and of Istio's admission webhook, plus Kubernetes' rules for
//! the core objects Strait reads. Every rule reports at a field path.

pub mod codes;
mod kube;
mod networking;
pub mod rules;
mod security;
mod workloads;

use std::collections::BTreeMap;

use crate::duration::Duration;
use crate::issue::{Issue, IssueKind, Issues};
use crate::path::FieldPath;
use crate::resource::{Kind, Meta, Resource};

/// Every problem of one accepted-shape resource (errors reject it; warnings do not).
pub fn resource(r: &Resource) -> Vec<Issue> {
    let mut out = Issues::new();
    metadata(r.kind(), r.meta(), &mut out);
    let spec = FieldPath::root().field("spec");
    match r {
        Resource::VirtualService(o) => {
            networking::virtual_service(&o.spec, &o.meta, &spec, &mut out)
        }
        Resource::DestinationRule(o) => {
            networking::destination_rule(&o.spec, &o.meta, &spec, &mut out)
        }
        Resource::ServiceEntry(o) => workloads::service_entry(&o.spec, &o.meta, &spec, &mut out),
        Resource::WorkloadEntry(o) => workloads::workload_entry(&o.spec, &spec, &mut out),
        Resource::WorkloadGroup(o) => workloads::workload_group(&o.spec, &spec, &mut out),
        Resource::Gateway(o) => workloads::gateway(&o.spec, &spec, &mut out),
        Resource::Sidecar(o) => workloads::sidecar(&o.spec, &o.meta, &spec, &mut out),
        Resource::PeerAuthentication(o) => security::peer_authentication(&o.spec, &spec, &mut out),
        Resource::RequestAuthentication(o) => {
            security::request_authentication(&o.spec, &spec, &mut out)
        }
        Resource::AuthorizationPolicy(o) => {
            security::authorization_policy(&o.spec, &o.meta, &spec, &mut out)
        }
        Resource::Service(o) => kube::service(&o.spec, &spec, &mut out),
        Resource::Endpoints(o) => kube::endpoints(&o.spec, &mut out),
        Resource::EndpointSlice(o) => kube::endpoint_slice(&o.spec, &mut out),
        Resource::Pod(o) => kube::pod(&o.spec, &mut out),
        Resource::Secret(o) => kube::secret(&o.spec, &mut out),
        Resource::Namespace(_) | Resource::Node(_) => {}
        Resource::TrafficSplit(o) => kube::traffic_split(&o.spec, &spec, &mut out),
        Resource::Link(o) => kube::link(&o.spec, &spec, &mut out),
        Resource::MeshConfig(o) => kube::mesh_config(&o.spec, &spec, &mut out),
    }
    out.into_vec()
}

fn metadata(kind: Kind, meta: &Meta, out: &mut Issues) {
    let m = FieldPath::root().field("metadata");
    if meta.name.is_empty() {
        out.required(m.field("name"), "name or generateName is required");
    } else if kind == Kind::Gateway && !rules::is_dns1123_label(&meta.name) {
        // A gateway is referenced as `namespace/name`, so its name may not contain dots.
        out.invalid(m.field("name"), format!("invalid gateway name: \"{}\": must be a DNS-1123 label (lower case letters, digits and '-')", meta.name));
    } else if !rules::is_dns1123_subdomain(&meta.name) {
        out.invalid(
            m.field("name"),
            format!("\"{}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character", meta.name),
        );
    }
    if kind.is_namespaced() && !rules::is_dns1123_label(&meta.namespace) {
        out.invalid(
            m.field("namespace"),
            format!(
                "\"{}\": a namespace must be a DNS-1123 label",
                meta.namespace
            ),
        );
    }
    labels(&meta.labels, &m.field("labels"), out);
    if meta.annotations.contains_key("istio.io/dry-run") && kind != Kind::AuthorizationPolicy {
        out.invalid(
            m.field("annotations").key("istio.io/dry-run"),
            "only AuthorizationPolicy supports the annotation istio.io/dry-run; remove it",
        );
    }
}

/// Label keys and values as Kubernetes requires them.
fn labels(labels: &BTreeMap<String, String>, path: &FieldPath, out: &mut Issues) {
    for (k, v) in labels {
        if let Err(e) = rules::validate_label_key(k) {
            out.invalid(path.key(k), e);
        }
        if let Err(e) = rules::validate_label_value(v) {
            out.invalid(path.key(k), e);
        }
    }
}

/// The schema's rule on many durations: at least 1ms; and Envoy's millisecond precision.
fn duration_min_1ms(d: &Option<Duration>, path: &FieldPath, out: &mut Issues) {
    if let Some(d) = d {
        if d.as_std() < std::time::Duration::from_millis(1) {
            out.invalid(
                path.clone(),
                format!("\"{d}\": must be a valid duration greater than 1ms"),
            );
        } else if !d.is_whole_millis() {
            out.invalid(
                path.clone(),
                format!("\"{d}\": only durations to ms precision are supported"),
            );
        }
    }
}

/// A selector of `matchLabels` or `labels`: no empty keys, no wildcards.
fn selector_labels(
    labels: &BTreeMap<String, String>,
    path: &FieldPath,
    wording: SelectorWording,
    out: &mut Issues,
) {
    for (k, v) in labels {
        if k.is_empty() {
            out.invalid(
                path.clone(),
                format!(
                    "key must not be empty (empty key is not supported in selector: \"{k}={v}\")"
                ),
            );
        }
        if k.contains('*') {
            let msg = match wording {
                SelectorWording::MatchLabels => "wildcard not allowed in label key match",
                SelectorWording::Labels => "wildcard is not supported in selector",
            };
            out.invalid(path.clone(), format!("{msg}: \"{k}={v}\""));
        }
        if v.contains('*') {
            let msg = match wording {
                SelectorWording::MatchLabels => "wildcard not allowed in label value match",
                SelectorWording::Labels => "wildcard is not supported in selector",
            };
            out.invalid(path.key(k), format!("{msg}: \"{k}={v}\""));
        }
        if v.len() > 63 {
            out.invalid(path.key(k), "label values are at most 63 characters");
        }
    }
}

#[derive(Clone, Copy)]
enum SelectorWording {
    MatchLabels,
    Labels,
}

/// `exportTo`: `.`, `*`, `~` (ServiceEntry only) or namespace names, without repeats.
fn export_to(
    namespace: &str,
    export: &[String],
    is_service_entry: bool,
    dr_with_selector: bool,
    path: &FieldPath,
    out: &mut Issues,
) {
    if export.is_empty() {
        return;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, e) in export.iter().enumerate() {
        let key = if e == "." { namespace } else { e.as_str() };
        if !seen.insert(key.to_string()) {
            if key != e {
                out.invalid(
                    path.index(i),
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                out.invalid(
                    path.index(i),
                    format!("duplicate entries in exportTo for entry {e}"),
                );
            }
            continue;
        }
        let ok =
            e == "*" || e == "." || (e == "~" && is_service_entry) || rules::is_dns1123_label(e);
        if !ok {
            out.invalid(
                path.index(i),
                format!("\"{e}\": exportTo entries are \".\", \"*\", or a namespace name"),
            );
        }
    }
    if dr_with_selector {
        if seen.contains(namespace) {
            if seen.len() > 1 {
                out.invalid(path.clone(), "destination rule with workload selector cannot have multiple entries in exportTo");
            }
        } else {
            out.invalid(path.clone(), "destination rule with workload selector cannot have exportTo beyond current namespace");
        }
    }
    if seen.contains("*") && export.len() > 1 {
        out.invalid(
            path.clone(),
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if seen.contains("~") && export.len() > 1 {
        out.invalid(
            path.clone(),
            "cannot export service entry to no one (~) and someone",
        );
    }
}

/// Checks `at most one of` several optional fields.
fn at_most_one(set: &[(&str, bool)], path: &FieldPath, out: &mut Issues) -> bool {
    let names: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
    if names.len() > 1 {
        out.invalid(path.clone(), format!("must validate one and only one schema (oneOf): only one of {} may be set, found {}", set.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "), names.join(" and ")));
        return false;
    }
    true
}

/// Warns about a deprecated field.
fn deprecated(path: FieldPath, message: impl Into<String>, out: &mut Issues) {
    out.warn(IssueKind::Deprecated, path, message);
}
