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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshModel {
    pub settings: Arc<MeshSettings>,
    services: BTreeMap<ServiceKey, ServiceView>,
    workloads: Vec<Workload>,
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
        let mut ordered: Vec<&(&ClusterId, &ClusterView)> = views.iter().collect();
        ordered.sort_by(|a, b| a.0.cmp(b.0));
        let mut model = MeshModel {
            settings,
            ..Default::default()
        };
        for (id, view) in ordered {
            model.workloads.extend(view.workloads.iter().cloned());
            for sv in &view.services {
                model.merge(id, sv.clone());
            }
        }
        model.allocate_vips();
        model
    }

    /// Gives ServiceEntry hosts without addresses one from `240.240.0.0/16` (see [`vips`]).
    fn allocate_vips(&mut self) {
        let taken = self
            .services
            .values()
            .flat_map(|s| s.service.addresses.values().flatten())
            .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
            .collect();
        let wanted: Vec<String> = self
            .services
            .values()
            .filter(|s| vips::wants_vip(s))
            .map(|s| s.service.host.as_str().to_string())
            .collect();
        let allocated: BTreeMap<String, std::net::Ipv4Addr> =
            vips::allocate(wanted.iter().map(String::as_str), &taken)
                .into_iter()
                .map(|(h, a)| (h.to_string(), a))
                .collect();
        for sv in self.services.values_mut() {
            let Some(a) = allocated.get(sv.service.host.as_str()) else {
                continue;
            };
            if !vips::wants_vip(sv) {
                continue;
            }
            let s = &mut sv.service;
            for c in &s.clusters {
                s.addresses.insert(c.clone(), vec![a.to_string()]);
            }
            s.vip_allocated = true;
        }
    }

    fn merge(&mut self, cluster: &ClusterId, incoming: ServiceView) {
        let key = ServiceKey {
            host: incoming.service.host.clone(),
            local_to: incoming.service.cluster_local.then(|| cluster.clone()),
        };
        let Some(existing) = self.services.get_mut(&key) else {
            self.services.insert(key, incoming);
            return;
        };
        let s = &mut existing.service;
        for port in incoming.service.ports {
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
                None => s.ports.push(port),
            }
        }
        s.clusters.extend(incoming.service.clusters);
        s.addresses.extend(incoming.service.addresses);
        for (network, addresses) in incoming.service.external_addresses {
            let known = s.external_addresses.entry(network).or_default();
            for a in addresses {
                if !known.contains(&a) {
                    known.push(a);
                }
            }
        }
        existing.endpoints.extend(incoming.endpoints);
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
    }

    /// Every service, cluster-local ones once per cluster.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceKey, &ServiceView)> {
        self.services.iter()
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
            .map(|(_, v)| v)
    }

    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    pub fn conflicts(&self) -> &[MergeConflict] {
        &self.conflicts
    }

    /// What changed from `self` to `newer`, for incremental pushes.
    pub fn diff(&self, newer: &MeshModel) -> ModelDiff {
        let mut d = self.diff_services(newer, |_| true);
        d.workloads_changed = self.workloads != newer.workloads;
        d.settings_changed = self.settings != newer.settings;
        d
    }

    /// [`MeshModel::diff`] when only some hosts can differ (those defined by the clusters that
    /// changed) and whether workloads changed is already known.
    pub fn diff_hosts(
        &self,
        newer: &MeshModel,
        hosts: &BTreeSet<Hostname>,
        workloads_changed: bool,
    ) -> ModelDiff {
        let mut d = self.diff_services(newer, |k| hosts.contains(&k.host));
        d.workloads_changed = workloads_changed;
        d.settings_changed = self.settings != newer.settings;
        d
    }

    fn diff_services(
        &self,
        newer: &MeshModel,
        consider: impl Fn(&ServiceKey) -> bool,
    ) -> ModelDiff {
        let mut d = ModelDiff::default();
        for (k, old) in self.services.iter().filter(|(k, _)| consider(k)) {
            match newer.services.get(k) {
                None => {
                    d.removed.insert(k.clone());
                }
                Some(new) if new.service != old.service => {
                    d.changed.insert(k.clone());
                }
                Some(new) if new.endpoints != old.endpoints => {
                    d.endpoints_changed.insert(k.clone());
                }
                Some(_) => {}
            }
        }
        for k in newer.services.keys().filter(|k| consider(k)) {
            if !self.services.contains_key(k) {
                d.added.insert(k.clone());
            }
        }
        d
    }
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
