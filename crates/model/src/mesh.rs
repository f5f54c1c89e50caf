//! The aggregated view across clusters that the control plane serves from.
//!
//! Services with the same host in several clusters are one service whose endpoints are the
//! union (namespace sameness); cluster-local hosts stay one per cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::build::{ClusterSource, ClusterView, build_cluster};
use crate::ids::{ClusterId, Hostname};
use crate::service::{ServiceView, Workload};
use crate::settings::MeshSettings;
use crate::vips;

/// How a service is keyed: by host, and by cluster for cluster-local services.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub host: Hostname,
    /// `Some(cluster)` for a cluster-local service.
    pub local_to: Option<ClusterId>,
}

/// Something about the merge an operator should know (shown by `strait analyze`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeConflict {
    pub host: Hostname,
    pub message: String,
}

/// Services are shared (`Arc`) so that a model rebuilt after a change shares every service
/// the change did not touch with the model before it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshModel {
    pub settings: Arc<MeshSettings>,
    services: BTreeMap<ServiceKey, Arc<ServiceView>>,
    workloads: Arc<Vec<Workload>>,
    conflicts: Vec<MergeConflict>,
}

impl MeshModel {
    /// Builds every cluster and merges them.
    pub fn build(settings: Arc<MeshSettings>, clusters: &[ClusterSource]) -> Self {
        let views: Vec<(ClusterId, ClusterView)> = clusters
            .iter()
            .map(|c| (c.id.clone(), build_cluster(c, &settings)))
            .collect();
        let refs: Vec<(&ClusterId, &ClusterView)> = views.iter().map(|(id, v)| (id, v)).collect();
        Self::from_views(settings, &refs)
    }

    /// Merges clusters already built (so a reload rebuilds only the clusters that changed).
    pub fn from_views(settings: Arc<MeshSettings>, views: &[(&ClusterId, &ClusterView)]) -> Self {
        let mut model = MeshModel {
            settings,
            workloads: Arc::new(all_workloads(views)),
            ..Default::default()
        };
        model.merge_views(views, |_| true);
        model
    }

    /// The model after the services of `hosts` changed in `views` (the services clusters
    /// define, all of them, as for [`MeshModel::from_views`]): the services of other hosts are
    /// shared with `self`, so the work is proportional to the change, not to the mesh.
    /// `workloads_changed` says whether any cluster's workloads differ from `self`'s. With other
    /// settings than `self`'s, everything is built afresh.
    pub fn rebuilt(
        &self,
        settings: Arc<MeshSettings>,
        views: &[(&ClusterId, &ClusterView)],
        hosts: &BTreeSet<Hostname>,
        workloads_changed: bool,
    ) -> Self {
        if !Arc::ptr_eq(&self.settings, &settings) {
            return Self::from_views(settings, views);
        }
        let mut model = MeshModel {
            settings,
            services: self.services.clone(),
            workloads: if workloads_changed {
                Arc::new(all_workloads(views))
            } else {
                self.workloads.clone()
            },
            conflicts: self.conflicts.clone(),
        };
        model.services.retain(|k, _| !hosts.contains(&k.host));
        model.conflicts.retain(|c| !hosts.contains(&c.host));
        model.merge_views(views, |host| hosts.contains(host));
        model
    }

    /// Merges the services of the hosts `wanted` picks, cluster by cluster in name order, then
    /// gives addresses to hosts that want one and orders the conflicts.
    fn merge_views(
        &mut self,
        views: &[(&ClusterId, &ClusterView)],
        wanted: impl Fn(&Hostname) -> bool,
    ) {
        for (id, view) in in_cluster_order(views) {
            for sv in view.services.iter().filter(|s| wanted(&s.service.host)) {
                self.merge(id, sv);
            }
        }
        self.allocate_vips();
        // Stable: a host's conflicts keep the order of its clusters.
        self.conflicts.sort_by(|a, b| a.host.cmp(&b.host));
    }

    /// Gives ServiceEntry hosts without addresses one from `240.240.0.0/16` and one from
    /// `2001:2::/48` (see [`vips`]).
    /// Hosts keep the address they have when the allocation still gives it to them, so a
    /// rebuilt model shares those services.
    fn allocate_vips(&mut self) {
        let wants = |s: &ServiceView| s.service.vip_allocated || vips::wants_vip(s);
        let taken = self
            .services
            .values()
            .filter(|s| !s.service.vip_allocated)
            .flat_map(|s| s.service.addresses.values().flatten())
            .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
            .collect();
        let wanted: Vec<String> = self
            .services
            .values()
            .filter(|s| wants(s))
            .map(|s| s.service.host.as_str().to_string())
            .collect();
        let allocated: BTreeMap<String, std::net::Ipv4Addr> =
            vips::allocate(wanted.iter().map(String::as_str), &taken)
                .into_iter()
                .map(|(h, a)| (h.to_string(), a))
                .collect();
        for sv in self.services.values_mut() {
            if !wants(sv) {
                continue;
            }
            let address = allocated.get(sv.service.host.as_str());
            if address.is_none() && !sv.service.vip_allocated {
                continue;
            }
            // Past the range's 65024 hosts, a host can lose its address (reached by port only).
            let wanted: Vec<String> = address
                .iter()
                .flat_map(|a| [a.to_string(), vips::ipv6_of(**a).to_string()])
                .collect();
            let s = &sv.service;
            let kept = s.vip_allocated == address.is_some()
                && s.clusters
                    .iter()
                    .all(|c| s.addresses.get(c).is_some_and(|a| *a == wanted));
            if kept {
                continue;
            }
            let s = &mut Arc::make_mut(sv).service;
            for c in &s.clusters {
                s.addresses.insert(c.clone(), wanted.clone());
            }
            s.vip_allocated = address.is_some();
        }
    }

    /// Adds a cluster's service: shared as it is when no other cluster defines the host, else
    /// merged into a copy of the other clusters' definition.
    fn merge(&mut self, cluster: &ClusterId, incoming: &Arc<ServiceView>) {
        let key = ServiceKey {
            host: incoming.service.host.clone(),
            local_to: incoming.service.cluster_local.then(|| cluster.clone()),
        };
        let Some(existing) = self.services.get_mut(&key) else {
            self.services.insert(key, incoming.clone());
            return;
        };
        let existing = Arc::make_mut(existing);
        let s = &mut existing.service;
        for port in &incoming.service.ports {
            match s.ports.iter().find(|p| p.port == port.port) {
                Some(p) if p.protocol != port.protocol => self.conflicts.push(MergeConflict {
                    host: s.host.clone(),
                    message: format!(
                        "port {} is {} in cluster(s) {} but {} in cluster {cluster}; {} is used",
                        port.port,
                        p.protocol,
                        s.clusters
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        port.protocol,
                        p.protocol
                    ),
                }),
                Some(_) => {}
                None => s.ports.push(port.clone()),
            }
        }
        let incoming_endpoints = &incoming.endpoints;
        let incoming = &incoming.service;
        s.clusters.extend(incoming.clusters.iter().cloned());
        s.addresses.extend(
            incoming
                .addresses
                .iter()
                .map(|(c, a)| (c.clone(), a.clone())),
        );
        for (network, addresses) in &incoming.external_addresses {
            let known = s.external_addresses.entry(network.clone()).or_default();
            for a in addresses {
                if !known.contains(a) {
                    known.push(a.clone());
                }
            }
        }
        existing
            .endpoints
            .extend(incoming_endpoints.iter().cloned());
    }

    /// The service a proxy in `from` sees for `host`.
    pub fn service(&self, host: &Hostname, from: &ClusterId) -> Option<&ServiceView> {
        self.services
            .get(&ServiceKey {
                host: host.clone(),
                local_to: Some(from.clone()),
            })
            .or_else(|| {
                self.services.get(&ServiceKey {
                    host: host.clone(),
                    local_to: None,
                })
            })
            .map(Arc::as_ref)
    }

    /// Every service, cluster-local ones once per cluster.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceKey, &ServiceView)> {
        self.services.iter().map(|(k, v)| (k, v.as_ref()))
    }

    /// The services a proxy in `from` can see.
    pub fn services_visible_from(
        &self,
        from: &ClusterId,
    ) -> impl Iterator<Item = &ServiceView> + '_ {
        let from = from.clone();
        self.services
            .iter()
            .filter(move |(k, _)| k.local_to.as_ref().is_none_or(|c| *c == from))
            .map(|(_, v)| v.as_ref())
    }

    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    pub fn conflicts(&self) -> &[MergeConflict] {
        &self.conflicts
    }

    /// What changed from `self` to `newer`, for incremental pushes. Services `newer` shares
    /// with `self` (see [`MeshModel::rebuilt`]) are not compared.
    pub fn diff(&self, newer: &MeshModel) -> ModelDiff {
        let mut d = ModelDiff::default();
        for (k, old) in &self.services {
            match newer.services.get(k) {
                None => {
                    d.removed.insert(k.clone());
                }
                Some(new) if Arc::ptr_eq(old, new) => {}
                Some(new) if new.service != old.service => {
                    d.changed.insert(k.clone());
                }
                Some(new) if new.endpoints != old.endpoints => {
                    d.endpoints_changed.insert(k.clone());
                }
                Some(_) => {}
            }
        }
        for k in newer.services.keys() {
            if !self.services.contains_key(k) {
                d.added.insert(k.clone());
            }
        }
        d.workloads_changed =
            !Arc::ptr_eq(&self.workloads, &newer.workloads) && self.workloads != newer.workloads;
        d.settings_changed = self.settings != newer.settings;
        d
    }
}

/// The clusters' views ordered by cluster name.
fn in_cluster_order<'a, 'v>(
    views: &'a [(&'v ClusterId, &'v ClusterView)],
) -> Vec<&'a (&'v ClusterId, &'v ClusterView)> {
    let mut ordered: Vec<_> = views.iter().collect();
    ordered.sort_by(|a, b| a.0.cmp(b.0));
    ordered
}

/// Every cluster's workloads, in cluster order.
fn all_workloads(views: &[(&ClusterId, &ClusterView)]) -> Vec<Workload> {
    in_cluster_order(views)
        .into_iter()
        .flat_map(|(_, v)| v.workloads.iter().cloned())
        .collect()
}

/// The difference between two models.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelDiff {
    pub added: BTreeSet<ServiceKey>,
    pub removed: BTreeSet<ServiceKey>,
    /// Services whose definition (ports, addresses, ...) changed.
    pub changed: BTreeSet<ServiceKey>,
    /// Services whose endpoints alone changed: these need only an endpoint push.
    pub endpoints_changed: BTreeSet<ServiceKey>,
    pub workloads_changed: bool,
    pub settings_changed: bool,
}

impl ModelDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.endpoints_changed.is_empty()
            && !self.workloads_changed
            && !self.settings_changed
    }

    /// True when only endpoints changed (no service was added, removed or redefined).
    pub fn endpoints_only(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.settings_changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::view_of;

    fn service(name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{ports: [{{port: 80, name: http}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: ns}}\nsubsets: [{{addresses: [{{ip: {ip}}}], ports: [{{port: 8080, name: http}}]}}]\n"
        )
    }

    #[test]
    fn a_rebuilt_model_shares_the_services_a_change_did_not_touch() {
        let settings = Arc::new(MeshSettings::default());
        let (c1, c2) = (ClusterId::new("c1"), ClusterId::new("c2"));
        let a = format!(
            "{}---\n{}",
            service("a", "10.0.0.1"),
            service("b", "10.0.0.2")
        );
        let (v1, v2) = (view_of("c1", &a), view_of("c2", &service("a", "10.1.0.1")));
        let before = MeshModel::from_views(settings.clone(), &[(&c1, &v1), (&c2, &v2)]);

        let moved = view_of("c2", &service("a", "10.1.0.9"));
        let hosts = v2.changed_hosts(&moved);
        let host_a = Hostname::new("a.ns.svc.cluster.local");
        assert_eq!(hosts, BTreeSet::from([host_a.clone()]));
        let after = before.rebuilt(
            settings.clone(),
            &[(&c1, &v1), (&c2, &moved)],
            &hosts,
            false,
        );
        assert_eq!(
            after,
            MeshModel::from_views(settings.clone(), &[(&c1, &v1), (&c2, &moved)]),
            "the same as built afresh"
        );
        let key = |host: &str| ServiceKey {
            host: Hostname::new(host),
            local_to: None,
        };
        let b = key("b.ns.svc.cluster.local");
        assert!(Arc::ptr_eq(&before.services[&b], &after.services[&b]));
        assert!(!Arc::ptr_eq(
            &before.services[&key(host_a.as_str())],
            &after.services[&key(host_a.as_str())]
        ));
        assert!(Arc::ptr_eq(&before.workloads, &after.workloads));
        let diff = before.diff(&after);
        assert_eq!(
            diff.endpoints_changed,
            BTreeSet::from([key(host_a.as_str())])
        );
        assert!(diff.endpoints_only() && diff.changed.is_empty());

        // Other settings: everything is merged again, whatever `hosts` says.
        let other = Arc::new(MeshSettings::default());
        let views = [(&c1, &v1), (&c2, &v2)];
        let fresh = after.rebuilt(other.clone(), &views, &BTreeSet::new(), false);
        assert_eq!(fresh, MeshModel::from_views(other, &views));
        assert_ne!(fresh.services, after.services, "a's endpoint moved back");
    }
}
