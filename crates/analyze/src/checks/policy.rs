//! DestinationRule subsets and locality settings; mTLS modes that contradict each other.

use std::collections::BTreeMap;

use strait_config::FieldPath;
use strait_config::istio::security::{MtlsMode, PeerAuthentication};
use strait_config::istio::traffic::{ClientTlsMode, DestinationRule, TrafficPolicy};
use strait_config::resource::Object;
use strait_model::{Endpoint, Workload};

use crate::context::{Context, at};
use crate::message::{Message, codes};

/// The namespace whose selector-less PeerAuthentication applies mesh-wide (Istio's root namespace).
const ROOT_NAMESPACE: &str = "istio-system";

/// Subsets whose labels select no endpoint of their host.
pub(super) fn subsets_select_workloads(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for dr in ctx.all(|c| &c.destination_rules) {
        let host = ctx.resolve(&dr.spec.host, &dr.meta.namespace);
        if host.starts_with('*') {
            continue;
        }
        let Some(view) = ctx.find_service(&host) else {
            out.push(at(
                codes::DESTINATION_RULE_HOST_NOT_FOUND,
                "DestinationRule",
                dr,
                &FieldPath::root().field("spec").field("host"),
                format!("no Service or ServiceEntry defines host \"{host}\"; this rule applies to nothing"),
            ));
            continue;
        };
        for (i, subset) in dr.spec.subsets.iter().enumerate() {
            let selects = |e: &Endpoint| {
                subset
                    .labels
                    .iter()
                    .all(|(k, v)| e.labels.get(k) == Some(v))
            };
            // Declared workloads the service selects count too, running or not.
            let declared = view
                .service
                .selector
                .as_ref()
                .filter(|s| !s.is_empty())
                .is_some_and(|sel| {
                    ctx.selected(Some(&view.service.namespace), sel)
                        .any(|w| w.matches(&subset.labels))
                });
            if !declared && !view.endpoints.iter().any(selects) {
                let labels: Vec<String> = subset
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                out.push(at(
                    codes::SUBSET_SELECTS_NO_WORKLOAD,
                    "DestinationRule",
                    dr,
                    &FieldPath::root().field("spec").field("subsets").index(i).field("labels"),
                    format!(
                        "subset \"{}\" ({}) selects none of the {} endpoint(s) of \"{host}\"; traffic routed to it fails with 503",
                        subset.name,
                        if labels.is_empty() { "no labels".into() } else { labels.join(",") },
                        view.endpoints.len()
                    ),
                ));
            }
        }
    }
}

/// Every traffic policy of a rule with its path: top level, port level, subsets.
fn policies(dr: &DestinationRule) -> Vec<(FieldPath, &TrafficPolicy)> {
    let spec = FieldPath::root().field("spec");
    let mut out = Vec::new();
    if let Some(tp) = &dr.traffic_policy {
        out.push((spec.field("trafficPolicy"), tp));
    }
    for (i, s) in dr.subsets.iter().enumerate() {
        if let Some(tp) = &s.traffic_policy {
            out.push((spec.field("subsets").index(i).field("trafficPolicy"), tp));
        }
    }
    out
}

/// Locality `distribute` without outlier detection. (Failover without it is a validation
/// warning with the same code.)
pub(super) fn locality_without_outlier_detection(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for dr in ctx.all(|c| &c.destination_rules) {
        for (path, tp) in policies(&dr.spec) {
            let Some(l) = tp
                .load_balancer
                .as_ref()
                .and_then(|lb| lb.locality_lb_setting.as_ref())
            else {
                continue;
            };
            if l.enabled == Some(false) || tp.outlier_detection.is_some() {
                continue;
            }
            if !l.distribute.is_empty() {
                out.push(at(
                    codes::FAILOVER_WITHOUT_OUTLIER_DETECTION,
                    "DestinationRule",
                    dr,
                    &path.field("loadBalancer").field("localityLbSetting").field("distribute"),
                    "locality distribute is set but outlierDetection is not: failing endpoints are never ejected, so their locality keeps its full share of traffic; add outlierDetection (e.g. consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s)",
                ));
            }
        }
    }
}

/// The mTLS mode in force for a workload's port, as Istio resolves PeerAuthentications:
/// workload selector, then namespace, then mesh (root namespace); UNSET inherits.
fn effective_mode(
    workload: &Workload,
    port: u16,
    pas: &[&Object<PeerAuthentication>],
) -> Option<MtlsMode> {
    let mode_of = |pa: &PeerAuthentication| -> Option<MtlsMode> {
        let port_mode = pa
            .port_level_mtls
            .as_ref()
            .and_then(|m| m.get(&port.to_string()))
            .and_then(|m| m.mode)
            .filter(|m| *m != MtlsMode::Unset);
        port_mode.or_else(|| {
            pa.mtls
                .as_ref()
                .and_then(|m| m.mode)
                .filter(|m| *m != MtlsMode::Unset)
        })
    };
    let workload_level =
        pas.iter()
            .filter(|pa| pa.meta.namespace == workload.namespace)
            .find(|pa| {
                pa.spec.selector.as_ref().is_some_and(|s| {
                    !s.match_labels.is_empty() && workload.matches(&s.match_labels)
                })
            });
    let selectorless = |ns: &str| {
        pas.iter().find(|pa| {
            pa.meta.namespace == ns
                && pa
                    .spec
                    .selector
                    .as_ref()
                    .is_none_or(|s| s.match_labels.is_empty())
        })
    };
    workload_level
        .and_then(|pa| mode_of(&pa.spec))
        .or_else(|| selectorless(&workload.namespace).and_then(|pa| mode_of(&pa.spec)))
        .or_else(|| selectorless(ROOT_NAMESPACE).and_then(|pa| mode_of(&pa.spec)))
}

/// Where a rule disables TLS: the field, the subset's labels (if a subset), the port (if port level).
type DisabledTls<'a> = (FieldPath, Option<&'a BTreeMap<String, String>>, Option<u32>);

/// A DestinationRule sending plaintext to workloads whose PeerAuthentication is STRICT.
pub(super) fn strict_mtls_against_disabled_tls(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let pas: Vec<&Object<PeerAuthentication>> = ctx.all(|c| &c.peer_authentications).collect();
    if pas.is_empty() {
        return;
    }
    let workloads: BTreeMap<_, &Workload> = ctx
        .model
        .workloads()
        .iter()
        .map(|w| (w.reference(), w))
        .collect();
    for dr in ctx.all(|c| &c.destination_rules) {
        let host = ctx.resolve(&dr.spec.host, &dr.meta.namespace);
        let Some(view) = ctx.find_service(&host) else {
            continue;
        };
        let spec = FieldPath::root().field("spec");
        let mut disabled: Vec<DisabledTls<'_>> = Vec::new();
        if let Some(tp) = &dr.spec.traffic_policy {
            if tp.tls.as_ref().and_then(|t| t.mode) == Some(ClientTlsMode::Disable) {
                disabled.push((
                    spec.field("trafficPolicy").field("tls").field("mode"),
                    None,
                    None,
                ));
            }
            for (i, pl) in tp.port_level_settings.iter().flatten().enumerate() {
                if pl.tls.as_ref().and_then(|t| t.mode) == Some(ClientTlsMode::Disable) {
                    let port = pl.port.as_ref().and_then(|p| p.number);
                    disabled.push((
                        spec.field("trafficPolicy")
                            .field("portLevelSettings")
                            .index(i)
                            .field("tls")
                            .field("mode"),
                        None,
                        port,
                    ));
                }
            }
        }
        for (i, s) in dr.spec.subsets.iter().enumerate() {
            if s.traffic_policy
                .as_ref()
                .and_then(|tp| tp.tls.as_ref())
                .and_then(|t| t.mode)
                == Some(ClientTlsMode::Disable)
            {
                disabled.push((
                    spec.field("subsets")
                        .index(i)
                        .field("trafficPolicy")
                        .field("tls")
                        .field("mode"),
                    Some(&s.labels),
                    None,
                ));
            }
        }
        for (path, subset_labels, port) in disabled {
            let hit = view
                .endpoints
                .iter()
                .filter(|e| {
                    subset_labels.is_none_or(|l| l.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
                })
                .find_map(|e| {
                    let w = workloads.get(&e.workload)?;
                    view.service
                        .ports
                        .iter()
                        .filter(|p| port.is_none_or(|n| n == u32::from(p.port)))
                        .find_map(|sp| {
                            let target = e.target_port(sp.port).unwrap_or(sp.port);
                            (effective_mode(w, target, &pas) == Some(MtlsMode::Strict))
                                .then_some((w, target))
                        })
                });
            if let Some((w, target)) = hit {
                out.push(at(
                    codes::MTLS_STRICT_BUT_TLS_DISABLED,
                    "DestinationRule",
                    dr,
                    &path,
                    format!(
                        "tls mode DISABLE sends plaintext to \"{host}\", but PeerAuthentication makes {} {}/{} port {target} STRICT, which rejects plaintext: every request fails; use ISTIO_MUTUAL or remove the tls setting",
                        match w.kind {
                            strait_model::WorkloadKind::Pod => "Pod",
                            _ => "workload",
                        },
                        w.namespace,
                        w.name
                    ),
                ));
            }
        }
    }
}
