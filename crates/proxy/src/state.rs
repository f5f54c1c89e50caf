//! The proxy's configuration at run time: one immutable snapshot built from the xDS store,
//! swapped atomically when the store changes. Requests and connections read whichever snapshot
//! is current when they start; cluster runtimes (pools, outlier state, counters) carry over from
//! one snapshot to the next while their settings stay the same.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use strait_xds::cluster::Discovery;
use strait_xds::listener::{FilterChain, ListenerKind, NetworkFilter, RouteSource, SocketListener};
use strait_xds::{Cluster, Listener};
use tokio::sync::Notify;

use crate::authz::Authorizer;
use crate::http::router::Router;
use crate::jwt::JwtRuntime;
use crate::listen::chain::{self, CompiledMatch};
use crate::secrets::{Secrets, TlsMaterial};
use crate::upstream::{ClusterEnv, ClusterRuntime};
use crate::xds::store::Store;

/// Set when a chain's configuration is replaced or removed: its HTTP connections finish the
/// requests they carry and close (HTTP/1.1 after the current response, HTTP/2 with GOAWAY), so
/// the next requests meet the new configuration — new routes, new authorization — on a fresh
/// connection, as Envoy drains a changed filter chain. Opaque TCP streams run to their end.
#[derive(Debug, Default)]
pub struct Retirement {
    retired: AtomicBool,
    notify: Notify,
}

impl Retirement {
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Resolves once retired.
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_retired() {
            return;
        }
        notified.await;
    }
}

/// A filter chain ready to use.
pub struct ChainRuntime {
    pub retirement: Arc<Retirement>,
    pub config: FilterChain,
    /// The compiled router of an inline route configuration.
    pub inline_router: Option<Arc<Router>>,
    /// Connection-level authorization (network RBAC), checked once the peer is known.
    pub connection_authz: Option<Arc<Authorizer>>,
    /// Per-request authorization of an HTTP chain.
    pub request_authz: Option<Arc<Authorizer>>,
    /// Request authentication (JWT) of an HTTP chain, before its authorization.
    pub request_jwt: Option<Arc<JwtRuntime>>,
    /// How the chain terminates TLS, if it does.
    pub tls: Option<Termination>,
    /// The secrets and certificate files its TLS was made with: a new version of one, or a
    /// secret's arrival, compiles the chain afresh.
    tls_material: TlsMaterial,
}

/// How a chain terminates TLS, decided when it is compiled.
pub enum Termination {
    /// With the workload's mesh certificate, taken per connection (it is renewed), offering
    /// these ALPN values.
    Mesh(Vec<String>),
    /// With a certificate of the chain's own (a gateway server's, a Sidecar ingress port's).
    Own(Arc<rustls::ServerConfig>),
    /// A certificate of its own that could not be loaded (the store refuses such files; a
    /// secret may not have arrived yet): connections are closed, never served with the mesh
    /// certificate instead.
    Unavailable,
}

/// A socket listener ready to use.
pub struct ListenerRuntime {
    pub config: Arc<Listener>,
    pub address: SocketAddr,
    matches: Vec<CompiledMatch>,
    pub chains: Vec<Arc<ChainRuntime>>,
    pub default_chain: Option<Arc<ChainRuntime>>,
}

impl ListenerRuntime {
    /// Every chain, the default one included.
    fn all_chains(&self) -> impl Iterator<Item = &Arc<ChainRuntime>> {
        self.chains.iter().chain(&self.default_chain)
    }

    pub fn socket(&self) -> Option<&SocketListener> {
        match &self.config.kind {
            ListenerKind::Socket(s) => Some(s),
            ListenerKind::Api(_) => None,
        }
    }

    /// The chain for a connection, or `None` (no chain and no default: close it).
    pub fn select(&self, facts: &chain::ConnectionFacts) -> Option<&Arc<ChainRuntime>> {
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
                Some(rt)
                    if same_cluster(&rt.config, config)
                        && rt.tls_material().current(&store.secrets) =>
                {
                    rt.clone()
                }
                Some(rt) => {
                    let next = rt.successor(config.clone(), env, &store.secrets);
                    match (same_cluster(&rt.config, config), next.tls_refused()) {
                        // Certificate files rewritten into something unusable: the previous
                        // ones serve on, checked again with every change.
                        (true, Some(reason)) if rt.tls_refused().is_none() => {
                            tracing::warn!(cluster = %name, "TLS origination not renewed, the previous certificates serve on: {reason}");
                            rt.tls_material().accept_refused_files(next.tls_material());
                            rt.clone()
                        }
                        _ => next,
                    }
                }
                None => ClusterRuntime::new(config.clone(), env, &store.secrets),
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
        // A listener the store still holds as the same resource keeps its compiled runtime; a
        // changed one keeps the runtimes of its unchanged chains.
        let listeners: BTreeMap<String, Arc<ListenerRuntime>> = store
            .listeners
            .iter()
            .filter_map(|(n, l)| match previous.listeners.get(n) {
                Some(rt)
                    if Arc::ptr_eq(&rt.config, l)
                        && rt
                            .all_chains()
                            .all(|c| c.tls_material.current(&store.secrets)) =>
                {
                    Some((n.clone(), rt.clone()))
                }
                old => listener_runtime(l, old.map(|o| &**o), &store.secrets)
                    .map(|rt| (n.clone(), Arc::new(rt))),
            })
            .collect();
        // Chains no longer served as they were: their connections drain.
        for (name, old) in &previous.listeners {
            let current = listeners.get(name);
            if current.is_some_and(|c| Arc::ptr_eq(c, old)) {
                continue;
            }
            for chain in old.all_chains() {
                let kept = current.is_some_and(|c| c.all_chains().any(|n| Arc::ptr_eq(n, chain)));
                if !kept {
                    chain.retirement.retire();
                }
            }
        }
        Snapshot {
            generation: previous.generation + 1,
            listeners,
            routes,
            clusters,
        }
    }

    /// Whether a certificate file a chain or cluster was made with reads differently now (the
    /// proxy checks every few seconds and builds the next snapshot when one does).
    pub fn files_changed(&self) -> bool {
        self.listeners
            .values()
            .flat_map(|l| l.all_chains())
            .any(|c| c.tls_material.files_changed())
            || self
                .clusters
                .values()
                .any(|c| c.tls_material().files_changed())
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

/// The runtime of chain `c`: the previous listener's chain of that name when its configuration
/// is the very same, else freshly compiled. Chains are looked up by name, so a listener of many
/// chains is not compared pairwise.
fn chain_runtime(
    c: &FilterChain,
    previous: &HashMap<&str, &Arc<ChainRuntime>>,
    secrets: &Secrets,
) -> Arc<ChainRuntime> {
    let old = previous.get(c.name.as_str()).filter(|old| old.config == *c);
    if let Some(old) = old.filter(|old| old.tls_material.current(secrets)) {
        return (*old).clone();
    }
    let (chain, refused) = compile_chain(c, secrets);
    match (refused, old) {
        // A certificate rewritten into something unusable: the previous one keeps serving
        // (as Envoy keeps a secret whose update it rejects), checked again with every change.
        (Some(reason), Some(old)) if matches!(old.tls, Some(Termination::Own(_))) => {
            tracing::warn!(chain = %c.name, "TLS certificate not renewed, the previous one serves on: {reason}");
            old.tls_material.accept_refused_files(&chain.tls_material);
            (*old).clone()
        }
        (Some(reason), _) => {
            tracing::warn!(chain = %c.name, "TLS not served: {reason}");
            Arc::new(chain)
        }
        (None, _) => Arc::new(chain),
    }
}

/// Compiles chain `c`; the reason its own TLS cannot be served, if it cannot.
fn compile_chain(c: &FilterChain, secrets: &Secrets) -> (ChainRuntime, Option<String>) {
    let inline_router = match &c.filter {
        NetworkFilter::Http(hcm) => match &hcm.route {
            RouteSource::Inline(rc) => Router::compile(rc).ok().map(Arc::new),
            RouteSource::Rds(_) => None,
        },
        _ => None,
    };
    // The store accepted only chains whose authorization compiles.
    let compile =
        |rbac: &[strait_xds::rbac::Rbac]| Authorizer::compile(rbac).ok().flatten().map(Arc::new);
    let request_authz = match &c.filter {
        NetworkFilter::Http(hcm) => compile(&hcm.rbac),
        _ => None,
    };
    // The store accepted only chains whose key sets parse.
    let request_jwt = match &c.filter {
        NetworkFilter::Http(hcm) => hcm
            .jwt
            .as_ref()
            .and_then(|j| JwtRuntime::compile(j).ok())
            .map(Arc::new),
        _ => None,
    };
    // The store accepted only chains whose own certificate files made a server configuration
    // when they arrived; one from secrets is made with those received so far. The files are
    // read for their version before they are used.
    let tls_material = TlsMaterial::of(
        c.tls.iter().flat_map(|t| t.secret_names()),
        c.tls.iter().flat_map(|t| t.file_paths()),
        secrets,
    );
    let mut refused = None;
    let tls = c.tls.as_ref().map(|t| {
        if t.is_mesh() {
            return Termination::Mesh(t.alpn.clone());
        }
        match crate::listen::own_tls::server_config(t, secrets) {
            Ok(config) => Termination::Own(config),
            Err(reason) => {
                refused = Some(reason);
                Termination::Unavailable
            }
        }
    });
    let chain = ChainRuntime {
        retirement: Arc::default(),
        config: c.clone(),
        inline_router,
        connection_authz: compile(&c.rbac),
        request_authz,
        request_jwt,
        tls,
        tls_material,
    };
    (chain, refused)
}

fn listener_runtime(
    l: &Arc<Listener>,
    previous: Option<&ListenerRuntime>,
    secrets: &Secrets,
) -> Option<ListenerRuntime> {
    let ListenerKind::Socket(s) = &l.kind else {
        return None;
    };
    // The store accepted only listeners whose address and chains compile.
    let ip: IpAddr = s.address.ip.parse().ok()?;
    let matches = chain::compile_all(&s.filter_chains).ok()?;
    let previous: HashMap<&str, &Arc<ChainRuntime>> = previous
        .into_iter()
        .flat_map(ListenerRuntime::all_chains)
        .map(|c| (c.config.name.as_str(), c))
        .collect();
    Some(ListenerRuntime {
        config: l.clone(),
        address: SocketAddr::new(ip, s.address.port),
        matches,
        chains: s
            .filter_chains
            .iter()
            .map(|c| chain_runtime(c, &previous, secrets))
            .collect(),
        default_chain: s
            .default_chain
            .as_ref()
            .map(|c| chain_runtime(c, &previous, secrets)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_xds::SocketAddress;
    use strait_xds::listener::{Direction, FilterChainMatch, TcpProxy};
    use strait_xds::rbac::{Rbac, RbacAction};

    fn tcp_chain(name: &str, port: u16, deny_all: bool) -> FilterChain {
        FilterChain {
            name: name.into(),
            matching: FilterChainMatch {
                destination_port: Some(port),
                ..Default::default()
            },
            tls: None,
            rbac: if deny_all {
                vec![Rbac {
                    action: RbacAction::Allow,
                    policies: vec![],
                    shadow: false,
                }]
            } else {
                vec![]
            },
            filter: NetworkFilter::Tcp(TcpProxy {
                stat_prefix: name.into(),
                clusters: vec![(name.into(), 100)],
                idle_timeout_ms: None,
            }),
        }
    }

    fn store(chains: Vec<FilterChain>) -> Store {
        let mut s = Store::default();
        s.listeners.insert(
            "in".into(),
            Arc::new(Listener {
                name: "in".into(),
                kind: ListenerKind::Socket(SocketListener {
                    address: SocketAddress::new("0.0.0.0", 15006),
                    direction: Direction::Inbound,
                    use_original_dst: false,
                    bind_to_port: true,
                    inspect_protocol: false,
                    filter_chains: chains,
                    default_chain: None,
                }),
            }),
        );
        s
    }

    #[test]
    fn changed_chains_retire_and_unchanged_ones_carry_over() {
        let env = ClusterEnv::default();
        let first = Snapshot::build(
            &store(vec![tcp_chain("a", 80, false), tcp_chain("b", 81, false)]),
            &Snapshot::default(),
            &env,
        );
        let old = first.listeners["in"].clone();
        assert!(old.chains.iter().all(|c| c.connection_authz.is_none()));
        // Chain b gains an authorization policy; a stays as it was.
        let second = Snapshot::build(
            &store(vec![tcp_chain("a", 80, false), tcp_chain("b", 81, true)]),
            &first,
            &env,
        );
        let new = &second.listeners["in"];
        assert!(Arc::ptr_eq(&old.chains[0], &new.chains[0]));
        assert!(!old.chains[0].retirement.is_retired());
        assert!(old.chains[1].retirement.is_retired());
        assert!(new.chains[1].connection_authz.is_some());
        assert!(!new.chains[1].retirement.is_retired());
        // The listener goes away: all its chains retire.
        let third = Snapshot::build(&Store::default(), &second, &env);
        assert!(third.listeners.is_empty());
        assert!(new.chains.iter().all(|c| c.retirement.is_retired()));
    }

    #[tokio::test]
    async fn waiting_for_retirement_ends_when_retired_even_if_already() {
        let r = Arc::new(Retirement::default());
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.wait().await }
        });
        tokio::task::yield_now().await;
        r.retire();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), r.wait())
            .await
            .unwrap();
    }
}
