//! DestinationRules as Istio applies them: the rule for a host is looked up in the proxy's
//! namespace, then the service's, then the root namespace; its traffic policy is merged field by
//! field: top level, then the port's settings, then the subset's.

use strait_config::istio::traffic::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRule, LoadBalancerSettings,
    OutlierDetection, Subset, TrafficPolicy,
};
use strait_config::resource::Object;

use crate::MeshView;
use crate::proxy::ProxyNode;
use crate::scope::{exported_to, host_matches};

/// The effective policy for one (host, port, subset).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
}

/// The DestinationRule that applies to `host` for `proxy`.
pub fn rule_for<'a>(
    view: &MeshView<'a>,
    proxy: &ProxyNode,
    host: &str,
    service_ns: &str,
) -> Option<&'a Object<DestinationRule>> {
    let resolve = |dr: &Object<DestinationRule>| -> String {
        let h = &dr.spec.host;
        if h.contains('.') || h.starts_with('*') {
            h.clone()
        } else {
            format!(
                "{h}.{}.svc.{}",
                dr.meta.namespace, view.model.settings.domain_suffix
            )
        }
    };
    let candidates = |ns: &str| {
        let ns = ns.to_string();
        view.config.destination_rules.iter().filter(move |dr| {
            dr.meta.namespace == ns
                && host_matches(&resolve(dr), host)
                && exported_to(&dr.spec.export_to, &dr.meta.namespace, &proxy.namespace)
                && dr.spec.workload_selector.as_ref().is_none_or(|sel| {
                    dr.meta.namespace == proxy.namespace
                        && sel
                            .match_labels
                            .iter()
                            .all(|(k, v)| proxy.labels.get(k) == Some(v))
                })
        })
    };
    // Most specific host wins within a namespace (exact before wildcard; selector before none).
    let best = |ns: &str| {
        candidates(ns).max_by_key(|dr| {
            let h = resolve(dr);
            (
                dr.spec.workload_selector.is_some(),
                !h.starts_with('*'),
                h.len(),
            )
        })
    };
    best(&proxy.namespace)
        .or_else(|| best(service_ns))
        .or_else(|| best(view.root_namespace))
        .map(|dr| &**dr)
}

fn overlay(base: &mut Policy, tp: &TrafficPolicy, port: u16) {
    if tp.load_balancer.is_some() {
        base.load_balancer.clone_from(&tp.load_balancer);
    }
    if tp.connection_pool.is_some() {
        base.connection_pool.clone_from(&tp.connection_pool);
    }
    if tp.outlier_detection.is_some() {
        base.outlier_detection.clone_from(&tp.outlier_detection);
    }
    if tp.tls.is_some() {
        base.tls.clone_from(&tp.tls);
    }
    for pl in tp.port_level_settings.iter().flatten() {
        if pl.port.as_ref().and_then(|p| p.number) == Some(u32::from(port)) {
            if pl.load_balancer.is_some() {
                base.load_balancer.clone_from(&pl.load_balancer);
            }
            if pl.connection_pool.is_some() {
                base.connection_pool.clone_from(&pl.connection_pool);
            }
            if pl.outlier_detection.is_some() {
                base.outlier_detection.clone_from(&pl.outlier_detection);
            }
            if pl.tls.is_some() {
                base.tls.clone_from(&pl.tls);
            }
        }
    }
}

/// The policy for a port and (optionally) a subset of a rule.
pub fn effective(dr: Option<&DestinationRule>, port: u16, subset: Option<&Subset>) -> Policy {
    let mut p = Policy::default();
    if let Some(tp) = dr.and_then(|d| d.traffic_policy.as_ref()) {
        overlay(&mut p, tp, port);
    }
    if let Some(tp) = subset.and_then(|s| s.traffic_policy.as_ref()) {
        overlay(&mut p, tp, port);
    }
    p
}

#[cfg(test)]
mod tests {
    use strait_config::istio::common::PortSelector;
    use strait_config::istio::traffic::{PortTrafficPolicy, SimpleLb};

    use super::*;

    fn lb(simple: SimpleLb) -> Option<LoadBalancerSettings> {
        Some(LoadBalancerSettings {
            simple: Some(simple),
            ..Default::default()
        })
    }

    #[test]
    fn port_and_subset_settings_override_the_top_level() {
        let dr = DestinationRule {
            host: "h".into(),
            traffic_policy: Some(TrafficPolicy {
                load_balancer: lb(SimpleLb::Random),
                outlier_detection: Some(OutlierDetection {
                    consecutive_5xx_errors: Some(3),
                    ..Default::default()
                }),
                port_level_settings: Some(vec![PortTrafficPolicy {
                    port: Some(PortSelector { number: Some(80) }),
                    load_balancer: lb(SimpleLb::LeastRequest),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            subsets: vec![Subset {
                name: "v1".into(),
                traffic_policy: Some(TrafficPolicy {
                    load_balancer: lb(SimpleLb::RoundRobin),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            effective(Some(&dr), 81, None).load_balancer,
            lb(SimpleLb::Random)
        );
        assert_eq!(
            effective(Some(&dr), 80, None).load_balancer,
            lb(SimpleLb::LeastRequest)
        );
        let sub = effective(Some(&dr), 80, Some(&dr.subsets[0]));
        assert_eq!(sub.load_balancer, lb(SimpleLb::RoundRobin));
        assert!(
            sub.outlier_detection.is_some(),
            "fields the subset does not set are inherited"
        );
    }
}
