//! What the server serves from (`Current`), and each proxy's generated configuration, encoded
//! once and shared by every proxy with the same generation key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use envoy_types::pb::google::protobuf::Any;
use strait_registry::Snapshot;
use strait_translate::{GatewayTable, Generated, MeshView, ProxyNode, names};
use strait_xds::ResourceType;

/// A published state of the mesh.
pub struct Current {
    pub version: u64,
    pub snapshot: Arc<Snapshot>,
    pub gateways: GatewayTable,
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

/// One encoded resource.
#[derive(Debug)]
pub struct Encoded {
    pub any: Any,
    pub hash: u64,
}

impl Encoded {
    pub fn version(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

/// All resources of one type, by name.
pub type TypeResources = BTreeMap<String, Arc<Encoded>>;

/// A proxy's configuration at one version.
pub struct ProxyConfig {
    pub version: u64,
    pub generated: Arc<Generated>,
    pub types: BTreeMap<ResourceType, Arc<TypeResources>>,
}

impl ProxyConfig {
    pub fn of(&self, t: ResourceType) -> Arc<TypeResources> {
        self.types.get(&t).cloned().unwrap_or_default()
    }
}

fn encode(any: Any) -> Arc<Encoded> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    any.value.hash(&mut h);
    Arc::new(Encoded {
        hash: h.finish(),
        any,
    })
}

fn encode_type<T>(
    items: &[T],
    name: impl Fn(&T) -> &str,
    to_any: impl Fn(&T) -> Any,
) -> Arc<TypeResources> {
    Arc::new(
        items
            .iter()
            .map(|r| (name(r).to_string(), encode(to_any(r))))
            .collect(),
    )
}

fn encode_all(g: &Generated) -> BTreeMap<ResourceType, Arc<TypeResources>> {
    use strait_xds_wire as wire;
    BTreeMap::from([
        (
            ResourceType::Listener,
            encode_type(
                &g.listeners,
                |r| &r.name,
                |r| wire::to_any(&wire::listener(r)),
            ),
        ),
        (
            ResourceType::Route,
            encode_type(
                &g.routes,
                |r| &r.name,
                |r| wire::to_any(&wire::route_configuration(r)),
            ),
        ),
        (
            ResourceType::Cluster,
            encode_type(
                &g.clusters,
                |r| &r.name,
                |r| wire::to_any(&wire::cluster(r)),
            ),
        ),
        (
            ResourceType::Endpoint,
            encode_type(
                &g.endpoints,
                |r| &r.cluster_name,
                |r| wire::to_any(&wire::load_assignment(r)),
            ),
        ),
    ])
}

/// How translation sees the current state.
pub fn view<'a>(
    current: &'a Current,
    cluster: &strait_model::ClusterId,
    root_namespace: &'a str,
) -> Option<MeshView<'a>> {
    let config = current.snapshot.clusters.get(cluster)?;
    let mesh = config.mesh_configs.first().map(|m| &m.spec);
    Some(MeshView {
        model: &current.snapshot.model,
        config,
        gateways: &current.gateways,
        root_namespace,
        mesh_locality: mesh.and_then(|m| m.locality_lb_setting.as_ref()),
        mesh_outbound_mode: mesh
            .and_then(|m| m.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode),
    })
}

/// Generated configurations by generation key, for the current version.
#[derive(Default)]
pub struct ConfigCache {
    entries: Mutex<HashMap<String, Arc<ProxyConfig>>>,
}

impl ConfigCache {
    /// The configuration of `proxy` at `current`: from the cache, or by updating only the
    /// endpoints of a cached older version when nothing else changed since, or generated anew.
    pub fn get(
        &self,
        current: &Current,
        proxy: &ProxyNode,
        cluster: &strait_model::ClusterId,
        root_namespace: &str,
    ) -> Arc<ProxyConfig> {
        let key = proxy.generation_key();
        let cached = self.entries.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some(c) = &cached
            && c.version == current.version
        {
            return c.clone();
        }
        let Some(view) = view(current, cluster, root_namespace) else {
            return Arc::new(ProxyConfig {
                version: current.version,
                generated: Arc::default(),
                types: BTreeMap::new(),
            });
        };
        let config = match cached
            .as_ref()
            .and_then(|c| current.endpoint_hosts_since(c.version).map(|h| (c, h)))
        {
            Some((old, hosts)) => {
                Arc::new(update_endpoints(old, &hosts, &view, proxy, current.version))
            }
            None => {
                let generated = strait_translate::generate(&view, proxy);
                let types = encode_all(&generated);
                Arc::new(ProxyConfig {
                    version: current.version,
                    generated: Arc::new(generated),
                    types,
                })
            }
        };
        if let Ok(mut m) = self.entries.lock() {
            // Keep the cache bounded by the number of distinct proxies (keys), one version each.
            m.insert(key, config.clone());
        }
        config
    }

    /// Drops cached configurations of keys no connected proxy uses.
    pub fn retain(&self, live_keys: &BTreeSet<String>) {
        if let Ok(mut m) = self.entries.lock() {
            m.retain(|k, _| live_keys.contains(k));
        }
    }
}

/// A new configuration sharing everything with `old` but the load assignments of `hosts`.
fn update_endpoints(
    old: &ProxyConfig,
    hosts: &BTreeSet<String>,
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    version: u64,
) -> ProxyConfig {
    let old_eds = old.of(ResourceType::Endpoint);
    let names: BTreeSet<String> = old_eds
        .keys()
        .filter(|n| names::parse_outbound(n).is_some_and(|(_, _, h)| hosts.contains(h)))
        .cloned()
        .collect();
    let mut types = old.types.clone();
    let mut generated = (*old.generated).clone();
    if !names.is_empty() {
        let fresh = strait_translate::endpoints_for(view, proxy, &names);
        let mut eds = (*old_eds).clone();
        for cla in &fresh {
            eds.insert(
                cla.cluster_name.clone(),
                encode(strait_xds_wire::to_any(&strait_xds_wire::load_assignment(
                    cla,
                ))),
            );
        }
        types.insert(ResourceType::Endpoint, Arc::new(eds));
        for cla in fresh {
            if let Some(slot) = generated
                .endpoints
                .iter_mut()
                .find(|e| e.cluster_name == cla.cluster_name)
            {
                *slot = cla;
            }
        }
    }
    ProxyConfig {
        version,
        generated: Arc::new(generated),
        types,
    }
}
