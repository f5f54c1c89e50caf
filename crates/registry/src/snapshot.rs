//! Consistent snapshots of the whole registry and what changed between two of them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use strait_config::load::Diagnostic;
use strait_config::resource::Object;
use strait_config::{ConfigSet, Kind};
use strait_model::{ClusterId, MeshModel, MeshSettings, ModelDiff, NetworkId};

/// Everything the control plane serves from, at one instant. Readers hold an `Arc` and never
/// see half an update.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases by one with every published change.
    pub version: u64,
    /// Each cluster's objects in effect.
    pub clusters: BTreeMap<ClusterId, Arc<ConfigSet>>,
    /// Each cluster's network, as its workloads were built with (the cluster's own setting,
    /// else its MeshConfig's `network`; empty when neither says).
    pub networks: BTreeMap<ClusterId, NetworkId>,
    pub settings: Arc<MeshSettings>,
    pub model: Arc<MeshModel>,
    /// Current problems: invalid documents (with their last good version kept), unreadable files.
    pub problems: Arc<Vec<Diagnostic>>,
    /// What changed from the previous version (`None` for the first).
    pub change: Option<Arc<Change>>,
}

/// An object that changed: its cluster, kind and `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigKey {
    pub cluster: ClusterId,
    pub kind: Kind,
    pub name: String,
}

/// What changed between two snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub from: u64,
    pub to: u64,
    /// Services and endpoints.
    pub services: ModelDiff,
    /// Configuration objects added, removed or modified (any kind).
    pub config: BTreeSet<ConfigKey>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.config.is_empty()
    }

    /// True when routing configuration is unchanged and only endpoints moved: an
    /// endpoint-only push is enough.
    pub fn endpoints_only(&self) -> bool {
        self.services.endpoints_only()
            && self.config.iter().all(|k| {
                matches!(
                    k.kind,
                    Kind::Pod
                        | Kind::Endpoints
                        | Kind::EndpointSlice
                        | Kind::WorkloadEntry
                        | Kind::Node
                )
            })
    }
}

impl Snapshot {
    /// The changes from `older` to `self`.
    pub fn changes_since(&self, older: &Snapshot) -> Change {
        let mut config = BTreeSet::new();
        let clusters: BTreeSet<&ClusterId> =
            self.clusters.keys().chain(older.clusters.keys()).collect();
        let empty = ConfigSet::default();
        for c in clusters {
            let new = self.clusters.get(c).map_or(&empty, |a| a.as_ref());
            let old = older.clusters.get(c).map_or(&empty, |a| a.as_ref());
            config_diff(c, old, new, &mut config);
        }
        Change {
            from: older.version,
            to: self.version,
            services: older.model.diff(&self.model),
            config,
        }
    }
}

fn diff_kind<T: PartialEq>(
    cluster: &ClusterId,
    kind: Kind,
    old: &[Arc<Object<T>>],
    new: &[Arc<Object<T>>],
    out: &mut BTreeSet<ConfigKey>,
) {
    let index = |list: &[Arc<Object<T>>]| -> BTreeMap<String, usize> {
        list.iter().enumerate().map(|(i, o)| (o.key(), i)).collect()
    };
    let (oi, ni) = (index(old), index(new));
    for (name, &i) in &oi {
        let changed = match ni.get(name) {
            None => true,
            // The very same object (its file did not change), else what the object says,
            // not where it was written.
            Some(&j) => {
                !Arc::ptr_eq(&old[i], &new[j])
                    && (old[i].meta != new[j].meta || old[i].spec != new[j].spec)
            }
        };
        if changed {
            out.insert(ConfigKey {
                cluster: cluster.clone(),
                kind,
                name: name.clone(),
            });
        }
    }
    for name in ni.keys() {
        if !oi.contains_key(name) {
            out.insert(ConfigKey {
                cluster: cluster.clone(),
                kind,
                name: name.clone(),
            });
        }
    }
}

pub(crate) fn config_diff(
    c: &ClusterId,
    old: &ConfigSet,
    new: &ConfigSet,
    out: &mut BTreeSet<ConfigKey>,
) {
    diff_kind(
        c,
        Kind::VirtualService,
        &old.virtual_services,
        &new.virtual_services,
        out,
    );
    diff_kind(
        c,
        Kind::DestinationRule,
        &old.destination_rules,
        &new.destination_rules,
        out,
    );
    diff_kind(
        c,
        Kind::ServiceEntry,
        &old.service_entries,
        &new.service_entries,
        out,
    );
    diff_kind(
        c,
        Kind::WorkloadEntry,
        &old.workload_entries,
        &new.workload_entries,
        out,
    );
    diff_kind(
        c,
        Kind::WorkloadGroup,
        &old.workload_groups,
        &new.workload_groups,
        out,
    );
    diff_kind(c, Kind::Gateway, &old.gateways, &new.gateways, out);
    diff_kind(c, Kind::Sidecar, &old.sidecars, &new.sidecars, out);
    diff_kind(
        c,
        Kind::PeerAuthentication,
        &old.peer_authentications,
        &new.peer_authentications,
        out,
    );
    diff_kind(
        c,
        Kind::RequestAuthentication,
        &old.request_authentications,
        &new.request_authentications,
        out,
    );
    diff_kind(
        c,
        Kind::AuthorizationPolicy,
        &old.authorization_policies,
        &new.authorization_policies,
        out,
    );
    diff_kind(c, Kind::Service, &old.services, &new.services, out);
    diff_kind(c, Kind::Endpoints, &old.endpoints, &new.endpoints, out);
    diff_kind(
        c,
        Kind::EndpointSlice,
        &old.endpoint_slices,
        &new.endpoint_slices,
        out,
    );
    diff_kind(c, Kind::Namespace, &old.namespaces, &new.namespaces, out);
    diff_kind(c, Kind::Pod, &old.pods, &new.pods, out);
    diff_kind(c, Kind::Node, &old.nodes, &new.nodes, out);
    diff_kind(c, Kind::Secret, &old.secrets, &new.secrets, out);
    diff_kind(
        c,
        Kind::TrafficSplit,
        &old.traffic_splits,
        &new.traffic_splits,
        out,
    );
    diff_kind(
        c,
        Kind::MeshConfig,
        &old.mesh_configs,
        &new.mesh_configs,
        out,
    );
}
