//! The proxy's configuration at run time: one immutable snapshot built from the xDS store,
//! swapped atomically when the store changes. Requests and connections read whichever snapshot
//! is current when they start; cluster runtimes (pools, outlier state, counters) carry over from
//! one snapshot to the next while their settings stay the same.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use strait_xds::cluster::Discovery;
use strait_xds::listener::{FilterChain, ListenerKind, NetworkFilter, RouteSource, SocketListener};
use strait_xds::{Cluster, Listener};

use crate::http::router::Router;
use crate::listen::chain::{self, CompiledMatch};
use crate::upstream::{ClusterEnv, ClusterRuntime};
use crate::xds::store::Store;

/// A filter chain ready to use.
pub struct ChainRuntime {
    pub config: FilterChain,
    /// The compiled router of an inline route configuration.
    pub inline_router: Option<Arc<Router>>,
}

/// A socket listener ready to use.
pub struct ListenerRuntime {
    pub config: Arc<Listener>,
    pub address: SocketAddr,
    matches: Vec<CompiledMatch>,
    pub chains: Vec<ChainRuntime>,
    pub default_chain: Option<ChainRuntime>,
}

impl ListenerRuntime {
    pub fn socket(&self) -> Option<&SocketListener> {
        match &self.config.kind {
            ListenerKind::Socket(s) => Some(s),
            ListenerKind::Api(_) => None,
        }
    }

    /// The chain for a connection, or `None` (no chain and no default: close it).
    pub fn select(&self, facts: &chain::ConnectionFacts) -> Option<&ChainRuntime> {
        match chain::select(&self.matches, facts) {
            Some(i) => self.chains.get(i),
            None => self.default_chain.as_ref(),
        }
    }
}

/// Everything a connection or request needs, as of one moment.
#[derive(Default)]
pub struct Snapshot {
    pub generation: u64,
    pub listeners: BTreeMap<String, Arc<ListenerRuntime>>,
    pub routes: HashMap<String, Arc<Router>>,
    pub clusters: HashMap<String, Arc<ClusterRuntime>>,
}

impl Snapshot {
    /// Builds the next snapshot; `previous` lends its cluster runtimes.
    pub fn build(store: &Store, previous: &Snapshot, env: &ClusterEnv) -> Snapshot {
        let mut clusters = HashMap::new();
        for (name, config) in &store.clusters {
            let runtime = match previous.clusters.get(name) {
                Some(rt) if same_cluster(&rt.config, config) => rt.clone(),
                Some(rt) => rt.successor(config.clone(), env),
                None => ClusterRuntime::new(config.clone(), env),
            };
            if let Discovery::Eds(service) = &config.discovery {
                let key = service.as_deref().unwrap_or(name);
                if let Some(cla) = store.endpoints.get(key) {
                    let current = runtime.assignment();
                    if !current.is_some_and(|c| Arc::ptr_eq(&c, cla)) {
                        runtime.set_assignment(cla.clone());
                    }
                }
            }
            clusters.insert(name.clone(), runtime);
        }
        let routes = store
            .routes
            .iter()
            .map(|(n, r)| (n.clone(), r.router.clone()))
            .collect();
        // A listener the store still holds as the same resource keeps its compiled runtime.
        let listeners = store
            .listeners
            .iter()
            .filter_map(|(n, l)| match previous.listeners.get(n) {
                Some(rt) if Arc::ptr_eq(&rt.config, l) => Some((n.clone(), rt.clone())),
                _ => listener_runtime(l).map(|rt| (n.clone(), Arc::new(rt))),
            })
            .collect();
        Snapshot {
            generation: previous.generation + 1,
            listeners,
            routes,
            clusters,
        }
    }

    /// The listener a captured connection to `destination` belongs to: the one bound to that
    /// exact address, else the wildcard one on its port (Envoy's original-destination hand-off).
    pub fn listener_for(
        &self,
        destination: SocketAddr,
        direction: strait_xds::listener::Direction,
    ) -> Option<&Arc<ListenerRuntime>> {
        let of_direction = |l: &&Arc<ListenerRuntime>| {
            l.socket()
                .is_some_and(|s| s.direction == direction && !s.use_original_dst)
        };
        self.listeners
            .values()
            .filter(of_direction)
            .find(|l| l.address == destination)
            .or_else(|| {
                self.listeners.values().filter(of_direction).find(|l| {
                    l.address.port() == destination.port() && l.address.ip().is_unspecified()
                })
            })
    }
}

fn same_cluster(a: &Arc<Cluster>, b: &Arc<Cluster>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

fn chain_runtime(c: &FilterChain) -> ChainRuntime {
    let inline_router = match &c.filter {
        NetworkFilter::Http(hcm) => match &hcm.route {
            RouteSource::Inline(rc) => Router::compile(rc).ok().map(Arc::new),
            RouteSource::Rds(_) => None,
        },
        _ => None,
    };
    ChainRuntime {
        config: c.clone(),
        inline_router,
    }
}

fn listener_runtime(l: &Arc<Listener>) -> Option<ListenerRuntime> {
    let ListenerKind::Socket(s) = &l.kind else {
        return None;
    };
    // The store accepted only listeners whose address and chains compile.
    let ip: IpAddr = s.address.ip.parse().ok()?;
    let matches = chain::compile_all(&s.filter_chains).ok()?;
    Some(ListenerRuntime {
        config: l.clone(),
        address: SocketAddr::new(ip, s.address.port),
        matches,
        chains: s.filter_chains.iter().map(chain_runtime).collect(),
        default_chain: s.default_chain.as_ref().map(chain_runtime),
    })
}
