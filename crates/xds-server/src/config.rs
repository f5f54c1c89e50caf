//! What the server serves from (`Current`), and each proxy's configuration, assembled from parts
//! that proxies alike share: encoded once per version, each part under the key of what it
//! depends on (see [`strait_translate::keys`]), and carried over to the next version when only
//! endpoints changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use foldhash::HashMap;
use prost::Message;
use strait_model::ClusterId;
use strait_registry::Snapshot;
use strait_translate::{
    EdsPlan, GatewayTable, MeshView, Profile, ProxyKeys, ProxyKind, ProxyNode, names,
};
use strait_xds::ResourceType;
use strait_xds_wire as wire;

use crate::content_hash::content_hash;

/// A published state of the mesh.
pub struct Current {
    pub version: u64,
    pub snapshot: Arc<Snapshot>,
    pub gateways: GatewayTable,
    /// Key sets fetched for RequestAuthentications' `jwksUri`s, by URI.
    pub jwks: BTreeMap<String, String>,
    /// The latest version whose change needed more than endpoints.
    pub full_version: u64,
    /// For each version after `full_version`: the hosts whose endpoints changed.
    pub endpoint_changes: Vec<(u64, BTreeSet<String>)>,
    pub published_at: Instant,
}

impl Current {
    /// Hosts whose endpoints changed after `since`, or `None` when something more changed.
    pub fn endpoint_hosts_since(&self, since: u64) -> Option<BTreeSet<String>> {
        if since < self.full_version {
            return None;
        }
        Some(
            self.endpoint_changes
                .iter()
                .filter(|(v, _)| *v > since)
                .flat_map(|(_, h)| h.iter().cloned())
                .collect(),
        )
    }
}

/// One encoded resource: its `Any` as protobuf bytes (shared, never copied per proxy) and a
/// hash of them (its version).
#[derive(Debug)]
pub struct Encoded {
    pub any: Bytes,
    pub hash: u64,
    /// The hash as the version delta xDS sends with the resource.
    pub version: Arc<str>,
}

impl Encoded {
    /// `any` encoded, versioned by `hash` (of the resource's content, see [`content_hash`](crate::content_hash)).
    pub fn new(any: &Any, hash: u64) -> Encoded {
        Encoded {
            hash,
            version: Arc::from(format!("{hash:016x}")),
            any: Bytes::from(any.encode_to_vec()),
        }
    }
}

/// A resource name, shared by the maps that hold it and the subscriptions that ask for it.
pub type Name = Arc<str>;

/// Resources of one type by name, shared by every proxy that gets them.
pub type TypeResources = BTreeMap<Name, Arc<Encoded>>;

/// A proxy's resources of one type: shared maps with disjoint names.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    layers: Vec<Arc<TypeResources>>,
}

impl Resources {
    pub fn from_layers(layers: Vec<Arc<TypeResources>>) -> Self {
        Self { layers }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Encoded>> {
        self.layers.iter().find_map(|l| l.get(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The shared name, when a resource of that name exists.
    pub fn name(&self, name: &str) -> Option<&Name> {
        self.layers
            .iter()
            .find_map(|l| l.get_key_value(name).map(|(k, _)| k))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Name, &Arc<Encoded>)> {
        self.layers.iter().flat_map(|l| l.iter())
    }

    pub fn len(&self) -> usize {
        self.layers.iter().map(|l| l.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn layers(&self) -> &[Arc<TypeResources>] {
        &self.layers
    }

    /// Whether both hold the very same maps (nothing can differ).
    pub fn same_as(&self, other: &Resources) -> bool {
        self.layers.len() == other.layers.len()
            && self
                .layers
                .iter()
                .zip(&other.layers)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

/// A proxy's configuration at one version.
#[derive(Debug)]
pub struct ProxyConfig {
    pub version: u64,
    types: BTreeMap<ResourceType, Resources>,
}

impl ProxyConfig {
    pub fn of(&self, t: ResourceType) -> Resources {
        self.types.get(&t).cloned().unwrap_or_default()
    }

    /// What `conn` is sent of type `t`: no secrets to a client that did not prove its
    /// identity (see [`crate::caller::may_read_secrets`]).
    pub fn served(&self, t: ResourceType, conn: &crate::status::ConnectionInfo) -> Resources {
        if t == ResourceType::Secret && !conn.reads_secrets {
            return Resources::default();
        }
        self.of(t)
    }
}

/// How translation sees the current state.
pub fn view<'a>(
    current: &'a Current,
    cluster: &ClusterId,
    root_namespace: &'a str,
) -> Option<MeshView<'a>> {
    let config = current.snapshot.clusters.get(cluster)?;
    let mesh = config.mesh_configs.first().map(|m| &m.spec);
    Some(MeshView {
        model: &current.snapshot.model,
        config,
        gateways: &current.gateways,
        jwks: &current.jwks,
        root_namespace,
        mesh_locality: mesh.and_then(|m| m.locality_lb_setting.as_ref()),
        mesh_outbound_mode: mesh
            .and_then(|m| m.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode),
    })
}

/// The outbound part: clusters, routes, and the EDS plans of the clusters.
struct OutboundPart {
    clusters: Arc<TypeResources>,
    routes: Arc<TypeResources>,
    eds: Vec<EdsPlan>,
}

/// Load assignments of one outbound part as proxies in one place see them.
struct EndpointsPart {
    resources: Arc<TypeResources>,
    outbound: String,
    endpoints_key: String,
    /// A proxy in that place, to recompute assignments when endpoints change.
    proxy: ProxyNode,
}

/// Everything cached for one version.
#[derive(Default)]
struct Parts {
    version: u64,
    profile: Option<Arc<Profile>>,
    /// The model of `version`, which `profile` (once built) describes.
    model: Option<Arc<strait_model::MeshModel>>,
    /// Each connected proxy's keys at this version, by node ID.
    keys: HashMap<String, (ProxyNode, Arc<ProxyKeys>)>,
    outbound: HashMap<String, Arc<OutboundPart>>,
    /// (outbound key, inbound key) → listeners.
    listeners: HashMap<(String, String, String), Arc<TypeResources>>,
    /// (proxy kind, inbound key) → the proxy's own clusters.
    local_clusters: HashMap<String, Arc<TypeResources>>,
    /// (cluster name, rule, endpoints key) → load assignment.
    loads: HashMap<(String, String, String), Arc<Encoded>>,
    /// (outbound key, endpoints key) → load assignments.
    endpoints: HashMap<(String, String), EndpointsPart>,
    /// (outbound key, names key: network and IP families) → a sidecar's DNS name table: the
    /// services its outbound part sees, answered with their addresses in its cluster (of its
    /// families, where the mesh allocated them), or their endpoints reachable in its network
    /// (so it follows endpoint changes too); the proxy's locality plays no part.
    names: HashMap<(String, String), Arc<TypeResources>>,
    /// (the services it sees, cluster, names key) → a sidecar's DNS name table.
    names_by_services: HashMap<(Vec<usize>, String, String), Arc<TypeResources>>,
    /// (cluster, namespace) → the secrets its proxies may ask for by name (SDS).
    secrets: HashMap<(String, String), Arc<TypeResources>>,
    /// Full key → assembled configuration.
    configs: HashMap<String, Arc<ProxyConfig>>,
    /// Encodings by content, so equal resources of different parts share memory.
    interned: HashMap<u64, Arc<Encoded>>,
}

impl Parts {
    fn intern<T: serde::Serialize>(
        &mut self,
        resource: &T,
        to_any: impl Fn(&T) -> Any,
    ) -> Arc<Encoded> {
        let hash = content_hash(resource);
        if let Some(e) = self.interned.get(&hash) {
            return e.clone();
        }
        let e = Encoded::new(&to_any(resource), hash);
        self.interned
            .entry(e.hash)
            .or_insert_with(|| Arc::new(e))
            .clone()
    }

    fn intern_all<T: serde::Serialize>(
        &mut self,
        items: &[T],
        name: impl Fn(&T) -> &str,
        to_any: impl Fn(&T) -> Any,
    ) -> Arc<TypeResources> {
        Arc::new(
            items
                .iter()
                .map(|r| (Name::from(name(r)), self.intern(r, &to_any)))
                .collect(),
        )
    }

    /// Moves to `current`: keeps every part when only endpoints changed (recomputing the load
    /// assignments of the hosts that changed), else starts afresh.
    fn advance(&mut self, current: &Current, view: Option<&MeshView<'_>>) {
        let hosts = current.endpoint_hosts_since(self.version);
        match (hosts, view) {
            (Some(hosts), Some(view)) if self.version != 0 => {
                let changed = |name: &str| {
                    names::parse_outbound(name).is_some_and(|(_, _, h)| hosts.contains(h))
                };
                self.loads.retain(|(name, _, _), _| !changed(name));
                let keys: Vec<(String, String)> = self.endpoints.keys().cloned().collect();
                for key in keys {
                    let Some(part) = self.endpoints.get(&key) else {
                        continue;
                    };
                    let Some(outbound) = self.outbound.get(&part.outbound).cloned() else {
                        continue;
                    };
                    let (proxy, endpoints_key) = (part.proxy.clone(), part.endpoints_key.clone());
                    let mut resources = (*part.resources).clone();
                    for plan in outbound.eds.iter().filter(|p| changed(&p.name)) {
                        match self.load(view, plan, &proxy, &endpoints_key) {
                            Some(e) => resources.insert(Name::from(plan.name.as_str()), e),
                            None => resources.remove(plan.name.as_str()),
                        };
                    }
                    if let Some(part) = self.endpoints.get_mut(&key) {
                        part.resources = Arc::new(resources);
                    }
                }
                // Own ports can follow endpoints: the profile takes in the changed services;
                // configurations are re-assembled from parts.
                self.names.clear();
                self.names_by_services.clear();
                let model = &current.snapshot.model;
                self.profile = match (self.profile.take(), self.model.take()) {
                    (Some(mut profile), Some(old)) => Arc::get_mut(&mut profile)
                        .map(|p| p.update_hosts(&old, model, &hosts))
                        .map(|()| profile),
                    _ => None,
                };
                self.keys.clear();
                self.configs.clear();
                // Encodings nothing refers to any more (replaced load assignments).
                self.interned.retain(|_, e| Arc::strong_count(e) > 1);
            }
            _ => *self = Parts::default(),
        }
        self.version = current.version;
        self.model = Some(current.snapshot.model.clone());
    }

    fn load(
        &mut self,
        view: &MeshView<'_>,
        plan: &EdsPlan,
        proxy: &ProxyNode,
        endpoints_key: &str,
    ) -> Option<Arc<Encoded>> {
        let key = (
            plan.name.clone(),
            plan.rule.clone(),
            endpoints_key.to_string(),
        );
        if let Some(e) = self.loads.get(&key) {
            return Some(e.clone());
        }
        let cla = strait_translate::load_assignment(view, plan, proxy)?;
        let e = self.intern(&cla, |c| wire::to_any(&wire::load_assignment(c)));
        self.loads.insert(key, e.clone());
        Some(e)
    }

    /// The name table of a sidecar, shared with every sidecar in its cluster and network that
    /// sees the same services (without `Sidecar` scoping or `exportTo`, every namespace does).
    fn names_seeing(
        &mut self,
        view: &MeshView<'_>,
        proxy: &ProxyNode,
        names_key: &str,
    ) -> Arc<TypeResources> {
        let visible = strait_translate::scope::visible_services(view, proxy);
        // The model is fixed for this version (the cache starts afresh with the next), so a
        // service's address names it.
        let seen = visible
            .iter()
            .map(|s| std::ptr::from_ref::<strait_model::ServiceView>(*s) as usize)
            .collect();
        let key = (seen, proxy.cluster.to_string(), names_key.to_string());
        if let Some(n) = self.names_by_services.get(&key) {
            return n.clone();
        }
        let table = strait_translate::dns::name_table_of(&visible, proxy);
        let e = self.intern(&table, |t| wire::to_any(&wire::nds::name_table(t)));
        let n = Arc::new(TypeResources::from([(
            Name::from(strait_xds::dns::NAME_TABLE),
            e,
        )]));
        self.names_by_services.insert(key, n.clone());
        n
    }

    /// The secrets of `proxy`'s namespace in its own cluster (see [`strait_translate::secrets`];
    /// a remote cluster's proxies are sent that cluster's Secrets), encoded once per version.
    fn secrets_of(&mut self, snapshot: &Snapshot, proxy: &ProxyNode) -> Arc<TypeResources> {
        let key = (proxy.cluster.to_string(), proxy.namespace.clone());
        if let Some(s) = self.secrets.get(&key) {
            return s.clone();
        }
        let secrets = snapshot
            .clusters
            .get(&proxy.cluster)
            .map(|c| strait_translate::secrets::of_namespace(c, &proxy.namespace))
            .unwrap_or_default();
        let s = self.intern_all(
            &secrets,
            |s| &s.name,
            |s| wire::to_any(&wire::sds::secret(s)),
        );
        self.secrets.insert(key, s.clone());
        s
    }

    fn config(
        &mut self,
        view: &MeshView<'_>,
        snapshot: &Snapshot,
        proxy: &ProxyNode,
    ) -> Arc<ProxyConfig> {
        let profile = self
            .profile
            .get_or_insert_with(|| Arc::new(Profile::new(view)))
            .clone();
        let keys = match self.keys.get(&proxy.id) {
            Some((p, k)) if p == proxy => k.clone(),
            _ => {
                let k = Arc::new(profile.keys(view, proxy));
                self.keys
                    .insert(proxy.id.clone(), (proxy.clone(), k.clone()));
                k
            }
        };
        let secrets = self.secrets_of(snapshot, proxy);
        // Proxies alike share a configuration unless their namespaces' secrets set them apart.
        let full = if secrets.is_empty() {
            keys.full()
        } else {
            format!(
                "{}|secrets:{}/{}",
                keys.full(),
                proxy.cluster,
                proxy.namespace
            )
        };
        if let Some(c) = self.configs.get(&full) {
            return c.clone();
        }
        let outbound = match self.outbound.get(&keys.outbound) {
            Some(o) => o.clone(),
            None => {
                let o = strait_translate::outbound(view, proxy);
                let part = Arc::new(OutboundPart {
                    clusters: self.intern_all(
                        &o.clusters,
                        |c| &c.name,
                        |c| wire::to_any(&wire::cluster(c)),
                    ),
                    routes: self.intern_all(
                        &o.routes,
                        |r| &r.name,
                        |r| wire::to_any(&wire::route_configuration(r)),
                    ),
                    eds: o.eds,
                });
                self.outbound.insert(keys.outbound.clone(), part.clone());
                part
            }
        };
        let listeners_key = (
            keys.outbound.clone(),
            keys.inbound.clone(),
            keys.connection.clone(),
        );
        let listeners = match self.listeners.get(&listeners_key) {
            Some(l) => l.clone(),
            None => {
                let l = strait_translate::listeners(view, proxy, &keys.inbound_side);
                let l = self.intern_all(&l, |l| &l.name, |l| wire::to_any(&wire::listener(l)));
                self.listeners.insert(listeners_key, l.clone());
                l
            }
        };
        let local_key = format!("{:?}|{}", proxy.kind, keys.inbound);
        let local = match self.local_clusters.get(&local_key) {
            Some(l) => l.clone(),
            None => {
                let l = strait_translate::local_clusters(proxy, &keys.inbound_side.ports);
                let l = self.intern_all(&l, |c| &c.name, |c| wire::to_any(&wire::cluster(c)));
                self.local_clusters.insert(local_key, l.clone());
                l
            }
        };
        let endpoints_key = (keys.outbound.clone(), keys.endpoints.clone());
        let endpoints = match self.endpoints.get(&endpoints_key) {
            Some(e) => e.resources.clone(),
            None => {
                let mut map = TypeResources::new();
                for plan in &outbound.eds {
                    if let Some(e) = self.load(view, plan, proxy, &keys.endpoints) {
                        map.insert(Name::from(plan.name.as_str()), e);
                    }
                }
                let map = Arc::new(map);
                self.endpoints.insert(
                    endpoints_key,
                    EndpointsPart {
                        resources: map.clone(),
                        outbound: keys.outbound.clone(),
                        endpoints_key: keys.endpoints.clone(),
                        proxy: proxy.clone(),
                    },
                );
                map
            }
        };
        let names_key = (keys.outbound.clone(), keys.names.clone());
        let names = match self.names.get(&names_key) {
            Some(n) => n.clone(),
            None if proxy.kind == ProxyKind::Sidecar => {
                let n = self.names_seeing(view, proxy, &keys.names);
                self.names.insert(names_key, n.clone());
                n
            }
            None => Arc::default(),
        };
        let config = Arc::new(ProxyConfig {
            version: self.version,
            types: BTreeMap::from([
                (ResourceType::NameTable, Resources::from_layers(vec![names])),
                (
                    ResourceType::Cluster,
                    Resources::from_layers(vec![outbound.clusters.clone(), local]),
                ),
                (
                    ResourceType::Endpoint,
                    Resources::from_layers(vec![endpoints]),
                ),
                (
                    ResourceType::Listener,
                    Resources::from_layers(vec![listeners]),
                ),
                (
                    ResourceType::Route,
                    Resources::from_layers(vec![outbound.routes.clone()]),
                ),
                (ResourceType::Secret, Resources::from_layers(vec![secrets])),
            ]),
        });
        self.configs.insert(full, config.clone());
        config
    }
}

/// What the cache holds: distinct encoded resources and their bytes, and assembled
/// configurations.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    pub resources: usize,
    pub bytes: usize,
}

/// Proxies' configurations at the current version, assembled from shared parts.
#[derive(Default)]
pub struct ConfigCache {
    parts: Mutex<Parts>,
}

impl ConfigCache {
    pub fn stats(&self) -> CacheStats {
        self.parts
            .lock()
            .map(|p| CacheStats {
                resources: p.interned.len(),
                bytes: p.interned.values().map(|e| e.any.len()).sum(),
            })
            .unwrap_or_default()
    }

    /// The configuration of `proxy` at `current`.
    pub fn get(
        &self,
        current: &Current,
        proxy: &ProxyNode,
        cluster: &ClusterId,
        root_namespace: &str,
    ) -> Arc<ProxyConfig> {
        let view = view(current, cluster, root_namespace);
        let Ok(mut parts) = self.parts.lock() else {
            return Arc::new(ProxyConfig {
                version: current.version,
                types: BTreeMap::new(),
            });
        };
        if parts.version != current.version {
            parts.advance(current, view.as_ref());
        }
        match &view {
            Some(view) => parts.config(view, &current.snapshot, proxy),
            None => Arc::new(ProxyConfig {
                version: current.version,
                types: BTreeMap::new(),
            }),
        }
    }
}
