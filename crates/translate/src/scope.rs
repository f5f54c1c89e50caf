//! What a proxy may see: services by their `exportTo`, narrowed by the Sidecar resource that
//! applies to the proxy (workload selector, then namespace default, then root namespace).

use strait_config::istio::gateway::{OutboundMode, Sidecar};
use strait_config::resource::Object;
use strait_model::ServiceView;

use crate::MeshView;
use crate::proxy::{ProxyKind, ProxyNode};

/// The Sidecar resource that applies to a proxy, as Istio chooses it.
pub fn sidecar_for<'a>(view: &MeshView<'a>, proxy: &ProxyNode) -> Option<&'a Object<Sidecar>> {
    let in_ns = || {
        view.config
            .sidecars
            .iter()
            .filter(|s| s.meta.namespace == proxy.namespace)
    };
    in_ns()
        .find(|s| {
            s.spec.workload_selector.as_ref().is_some_and(|w| {
                !w.labels.is_empty() && w.labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
            })
        })
        .or_else(|| {
            in_ns().find(|s| {
                s.spec
                    .workload_selector
                    .as_ref()
                    .is_none_or(|w| w.labels.is_empty())
            })
        })
        .or_else(|| {
            view.config.sidecars.iter().find(|s| {
                s.meta.namespace == view.root_namespace && s.spec.workload_selector.is_none()
            })
        })
        .map(|s| &**s)
}

/// Whether `exportTo` (of an object in `owner_ns`) makes it visible in `namespace`.
pub fn exported_to(export_to: &[String], owner_ns: &str, namespace: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| match e.as_str() {
            "*" => true,
            "." => owner_ns == namespace,
            "~" => false,
            ns => ns == namespace,
        })
}

/// Whether `pattern` (`*`, `*.example.com` or a host) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    pattern == "*"
        || pattern == host
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| host.ends_with(suffix))
}

/// Whether a Sidecar egress host entry `ns/host` admits a service.
fn egress_admits(entry: &str, proxy_ns: &str, svc: &ServiceView) -> bool {
    let Some((ns, host)) = entry.split_once('/') else {
        return false;
    };
    let ns_ok = match ns {
        "*" => true,
        "." => svc.service.namespace == proxy_ns,
        "~" => false,
        other => svc.service.namespace == other,
    };
    ns_ok && host_matches(host, svc.service.host.as_str())
}

/// The services a proxy can reach, in host order.
pub fn visible_services<'a>(view: &MeshView<'a>, proxy: &ProxyNode) -> Vec<&'a ServiceView> {
    let sidecar = if proxy.kind == ProxyKind::Router {
        None
    } else {
        sidecar_for(view, proxy)
    };
    let egress_hosts: Vec<&String> = sidecar
        .map(|s| s.spec.egress.iter().flat_map(|e| e.hosts.iter()).collect())
        .unwrap_or_default();
    view.model
        .services_visible_from(&proxy.cluster)
        .filter(|s| {
            exported_to(&s.service.export_to, &s.service.namespace, &proxy.namespace)
                || proxy.kind == ProxyKind::Router
        })
        .filter(|s| {
            egress_hosts.is_empty()
                || egress_hosts
                    .iter()
                    .any(|h| egress_admits(h, &proxy.namespace, s))
        })
        .collect()
}

/// Traffic to unknown destinations: passed through (ALLOW_ANY, Istio's default) or refused.
pub fn allow_any(view: &MeshView<'_>, proxy: &ProxyNode) -> bool {
    let from_sidecar = sidecar_for(view, proxy)
        .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
        .and_then(|p| p.mode);
    let from_mesh = view.mesh_outbound_mode;
    from_sidecar.or(from_mesh).unwrap_or(OutboundMode::AllowAny) == OutboundMode::AllowAny
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_to_follows_istio() {
        assert!(exported_to(&[], "a", "b"));
        assert!(exported_to(&[".".into()], "a", "a"));
        assert!(!exported_to(&[".".into()], "a", "b"));
        assert!(exported_to(&["b".into()], "a", "b"));
        assert!(!exported_to(&["~".into()], "a", "a"));
    }
}
