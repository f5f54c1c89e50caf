//! Linkerd-style service mirroring (pure): of a linked cluster's services, those labelled
//! `mirror.linkerd.io/exported: "true"` appear as `<name>-<cluster>` in the same namespace —
//! a service of their own, never merged with the local one of the same name — with the linked
//! cluster's endpoints; mesh mTLS still names the exported service, so the linked cluster's
//! east-west gateway routes it. The linked cluster's other services stay out of the mesh, but
//! for its gateways' Services, where the mesh finds their addresses.

use std::sync::Arc;

use strait_config::linkerd::LinkSelector;

use crate::build::ClusterView;
use crate::ids::{ClusterId, Hostname};
use crate::service::ServiceView;

/// The label that exports a service to linking clusters (Linkerd's).
pub const EXPORTED_LABEL: &str = "mirror.linkerd.io/exported";
/// The secret type of a Linkerd link's credentials.
pub const LINK_SECRET_TYPE: &str = "mirror.linkerd.io/remote-kubeconfig";
/// The label naming a link's target cluster (Linkerd's).
pub const LINK_CLUSTER_LABEL: &str = "mirror.linkerd.io/cluster-name";

/// The clusters `config` links and which of their services each exports: its Linkerd `Link`s
/// (their `selector`), and its link credentials Secrets that no Link covers (Linkerd's default
/// selector).
pub fn links(config: &strait_config::ConfigSet) -> Vec<(ClusterId, LinkSelector)> {
    let mut out: Vec<(ClusterId, LinkSelector)> = config
        .links
        .iter()
        .filter(|l| !l.spec.target_cluster_name.is_empty())
        .map(|l| {
            (
                ClusterId::new(&l.spec.target_cluster_name),
                l.spec
                    .selector
                    .clone()
                    .unwrap_or_else(default_export_selector),
            )
        })
        .collect();
    for s in config
        .secrets
        .iter()
        .filter(|s| s.spec.secret_type.as_deref() == Some(LINK_SECRET_TYPE))
    {
        if let Some(c) = s.meta.labels.get(LINK_CLUSTER_LABEL)
            && !out.iter().any(|(id, _)| id.as_str() == c)
        {
            out.push((ClusterId::new(c), default_export_selector()));
        }
    }
    out
}

/// `backend-api.prod.svc.cluster.local` mirrored from `west`:
/// `backend-api-west.prod.svc.cluster.local`.
pub fn mirror_host(host: &Hostname, cluster: &ClusterId) -> Hostname {
    let h = host.as_str();
    match h.split_once('.') {
        Some((name, rest)) => Hostname::new(&format!("{name}-{cluster}.{rest}")),
        None => Hostname::new(&format!("{h}-{cluster}")),
    }
}

/// Linkerd's default choice of exported services: labelled `mirror.linkerd.io/exported: "true"`.
pub fn default_export_selector() -> LinkSelector {
    LinkSelector {
        match_labels: [(EXPORTED_LABEL.to_string(), "true".to_string())].into(),
        ..LinkSelector::default()
    }
}

/// What a linked cluster contributes: the services `selector` exports (a Link's `selector`,
/// by default [`default_export_selector`]), mirrored; with `alive` false (its gateway fails its
/// probes) they keep their names but lose their endpoints.
pub fn mirror_view(
    view: &ClusterView,
    cluster: &ClusterId,
    alive: bool,
    selector: &LinkSelector,
) -> ClusterView {
    let exported = |s: &&Arc<ServiceView>| selector.matches(&s.service.labels);
    // Load-balanced Services (the linked cluster's east-west gateways) stay as they are: the
    // mesh finds a network's gateway address on them (`registryServiceName`), as Istio does.
    let gateways = view
        .services
        .iter()
        .filter(|s| !exported(s) && !s.service.external_addresses.is_empty())
        .cloned();
    let services = view
        .services
        .iter()
        .filter(exported)
        .map(|s| {
            let mut m = ServiceView::clone(s);
            m.service.mirror_of = Some(s.service.host.clone());
            m.service.host = mirror_host(&s.service.host, cluster);
            m.service.name = format!("{}-{cluster}", s.service.name);
            if !alive {
                m.endpoints.clear();
            }
            Arc::new(m)
        })
        .chain(gateways)
        .collect();
    ClusterView {
        services,
        workloads: view.workloads.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::view_of;

    #[test]
    fn exported_services_are_mirrored_and_the_rest_stay_out() {
        let west = ClusterId::new("west");
        let view = view_of(
            "west",
            "apiVersion: v1\nkind: Service\nmetadata: {name: backend-api, namespace: prod, labels: {mirror.linkerd.io/exported: \"true\"}}\nspec: {ports: [{port: 8080, name: http}], selector: {app: backend-api}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: internal, namespace: prod}\nspec: {ports: [{port: 80, name: http}], selector: {app: internal}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b1, namespace: prod, labels: {app: backend-api}}\nstatus: {podIP: 10.2.1.5}\n",
        );
        let m = mirror_view(&view, &west, true, &default_export_selector());
        let hosts: Vec<&str> = m.services.iter().map(|s| s.service.host.as_str()).collect();
        assert_eq!(hosts, ["backend-api-west.prod.svc.cluster.local"]);
        let s = &m.services[0];
        assert_eq!(s.service.name, "backend-api-west");
        assert_eq!(
            s.service.sni_host().as_str(),
            "backend-api.prod.svc.cluster.local"
        );
        assert_eq!(s.endpoints.len(), 1);
        let dead = mirror_view(&view, &west, false, &default_export_selector());
        assert!(dead.services[0].endpoints.is_empty());
    }
}
