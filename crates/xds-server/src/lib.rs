//! The control plane's ADS server: state-of-the-world and delta xDS over gRPC for Listener,
//! RouteConfiguration, Cluster and ClusterLoadAssignment; per-proxy generation from the
//! registry's snapshots; a push pipeline that sends only what changed (endpoint-only changes as
//! EDS alone, to the proxies watching those clusters); a debug and metrics API.

pub mod caller;
mod config;
mod content_hash;
mod debug;
mod delta;
pub mod gateway_dns;
pub mod gateway_probe;
mod grpc;
pub mod http_fetch;
pub mod jwks_fetch;
mod metrics;
mod node;
mod sotw;
mod status;
mod stream;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use strait_model::{ClusterId, NetworkId};
use strait_registry::Snapshot;
use strait_translate::{ProxyNode, gateways};
use tokio::sync::watch;
use tonic::Status;
use tracing::{info, warn};

pub use config::{Current, ProxyConfig};
pub use debug::serve_debug;
pub use grpc::AdsService;
pub use metrics::Metrics;
pub use status::{ConnectionInfo, TypeStatus};

/// Bytes of responses copied for connections and not yet written, across all of them (see
/// [`wire::SendBudget`]).
const SEND_BUDGET: usize = 16 * 1024 * 1024;

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The control plane's own cluster: its configuration is served; proxies that do not say
    /// otherwise belong to it.
    pub cluster: ClusterId,
    /// Where mesh-wide objects live (Istio's root namespace).
    pub root_namespace: String,
    /// Where gateway addresses given as DNS names are resolved.
    pub gateway_resolver: gateway_dns::GatewayResolver,
    /// How often RequestAuthentications' `jwksUri` key sets are fetched.
    pub jwks: jwks_fetch::JwksOptions,
    /// How the networks' gateways are probed.
    pub gateway_probe: gateway_probe::ProbeSettings,
}

pub(crate) struct Inner {
    options: ServerOptions,
    current: watch::Receiver<Arc<Current>>,
    cache: config::ConfigCache,
    connections: Mutex<BTreeMap<u64, Arc<ConnectionInfo>>>,
    metrics: Metrics,
    next_id: AtomicU64,
    ready: AtomicBool,
    send_budget: Arc<wire::SendBudget>,
    /// Debug pages other parts of the control plane add (path → JSON).
    pages: Mutex<BTreeMap<String, DebugPage>>,
}

/// A debug page's content, computed on each request.
pub type DebugPage = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The xDS server; cheap to clone.
#[derive(Clone)]
pub struct XdsServer {
    inner: Arc<Inner>,
}

impl XdsServer {
    /// A server serving `snapshots`. Returns it and the push pipeline to run (it turns each new
    /// snapshot into what connections push).
    pub async fn new(
        options: ServerOptions,
        snapshots: watch::Receiver<Arc<Snapshot>>,
    ) -> (XdsServer, impl Future<Output = ()> + Send) {
        let first = snapshots.borrow().clone();
        let metrics = Metrics::default();
        metrics.snapshot_version.set(first.version as i64);
        metrics
            .config_errors
            .set(first.problems.iter().filter(|d| d.is_error()).count() as i64);
        let mut dns = gateway_dns::GatewayDns::new(options.gateway_resolver.clone());
        dns.refresh(&first.settings).await;
        let mut jwks = jwks_fetch::JwksFetcher::new(options.jwks.clone());
        jwks.refresh(&first).await;
        let (targets_tx, targets) = watch::channel(BTreeSet::new());
        let (verdicts, unreachable) = watch::channel(Arc::new(BTreeSet::new()));
        let gws = Gateways {
            dns,
            unreachable,
            targets: targets_tx,
        };
        let first_gateways = gws.table(&first);
        let probes = gateway_probe::ProbeBoard::default();
        let prober = gateway_probe::run(options.gateway_probe, targets, verdicts, probes.clone());
        let current = Arc::new(Current {
            version: first.version,
            gateways: first_gateways,
            jwks: jwks.table(),
            snapshot: first,
            full_version: 0,
            endpoint_changes: Vec::new(),
            published_at: Instant::now(),
        });
        let (tx, rx) = watch::channel(current);
        let inner = Arc::new(Inner {
            options,
            current: rx,
            cache: config::ConfigCache::default(),
            connections: Mutex::new(BTreeMap::new()),
            metrics,
            next_id: AtomicU64::new(1),
            ready: AtomicBool::new(false),
            send_budget: wire::SendBudget::new(SEND_BUDGET),
            pages: Mutex::new(BTreeMap::new()),
        });
        let server = XdsServer { inner };
        server.add_debug_page("/debug/gatewayz", gatewayz(&server, probes));
        let pipeline = push_pipeline(server.inner.clone(), snapshots, tx, gws, jwks);
        // The prober ends when the pipeline does (it drops the prober's targets).
        let pipeline = async move {
            tokio::join!(pipeline, prober);
        };
        (server, pipeline)
    }

    /// The gRPC service to mount (Envoy's `AggregatedDiscoveryService`).
    pub fn service(&self) -> AdsService {
        AdsService {
            inner: self.inner.clone(),
        }
    }

    /// Adds a JSON page to the debug API at `path` (e.g. `/debug/remotez`).
    pub fn add_debug_page(&self, path: &str, page: DebugPage) {
        if let Ok(mut pages) = self.inner.pages.lock() {
            pages.insert(path.to_string(), page);
        }
    }

    /// The added debug page at `path`, if any.
    pub fn debug_page(&self, path: &str) -> Option<DebugPage> {
        self.inner.pages.lock().ok()?.get(path).cloned()
    }

    /// Marks the server ready (call once its listeners are bound).
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    pub fn current(&self) -> Arc<Current> {
        self.inner.current.borrow().clone()
    }

    pub fn connections(&self) -> Vec<Arc<ConnectionInfo>> {
        self.inner
            .connections
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn metrics_text(&self) -> String {
        let stats = self.inner.cache.stats();
        self.inner
            .metrics
            .cache_resources
            .set(stats.resources as i64);
        self.inner.metrics.cache_bytes.set(stats.bytes as i64);
        self.inner.metrics.encode()
    }

    /// What the proxy with this node ID is sent.
    pub fn config_dump(&self, node_id: &str) -> Option<serde_json::Value> {
        let conn = self
            .connections()
            .into_iter()
            .find(|c| c.node_id == node_id)?;
        let current = self.current();
        let view = config::view(
            &current,
            &self.inner.options.cluster,
            &self.inner.options.root_namespace,
        )?;
        let g = strait_translate::generate(&view, &conn.proxy);
        Some(serde_json::json!({
            "node_id": node_id,
            "version": current.version,
            "listeners": g.listeners,
            "routes": g.routes,
            "clusters": g.clusters,
            "endpoints": g.endpoints,
        }))
    }
}

impl Inner {
    fn config_for(&self, proxy: &ProxyNode) -> (Arc<Current>, Arc<ProxyConfig>) {
        let current = self.current.borrow().clone();
        let config = self.cache.get(
            &current,
            proxy,
            &self.options.cluster,
            &self.options.root_namespace,
        );
        (current, config)
    }

    fn register(
        &self,
        proxy: ProxyNode,
        protocol: &'static str,
        caller: &caller::Caller,
    ) -> Arc<ConnectionInfo> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let reads_secrets = caller::may_read_secrets(caller);
        let info = Arc::new(ConnectionInfo::new(id, proxy, protocol, reads_secrets));
        info!(proxy = %info.node_id, kind = %info.kind, cluster = %info.cluster, protocol, "proxy connected");
        if let Ok(mut c) = self.connections.lock() {
            c.insert(id, info.clone());
            self.metrics.connected_proxies.set(c.len() as i64);
        }
        info
    }

    fn disconnect(&self, id: u64) {
        if let Ok(mut c) = self.connections.lock() {
            if let Some(info) = c.remove(&id) {
                info!(proxy = %info.node_id, "proxy disconnected");
            }
            self.metrics.connected_proxies.set(c.len() as i64);
        }
    }

    fn proxy_of(&self, node: Option<&Node>) -> Result<ProxyNode, Status> {
        let node = node.ok_or_else(|| {
            Status::invalid_argument(
                "the first request must carry the node (id, metadata, locality)",
            )
        })?;
        let mut proxy = ProxyNode::from_node(&node::node_info(node), &self.options.cluster)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if proxy.network.is_empty() {
            let current = self.current.borrow();
            if let Some(network) = workload_network(&current.snapshot, &proxy)
                .or_else(|| cluster_network(&current.snapshot, &proxy.cluster))
            {
                proxy.network = network;
            }
        }
        Ok(proxy)
    }

    async fn connect(
        &self,
        node: Option<&Node>,
        protocol: &'static str,
        out: &wire::Outbound,
        caller: &caller::Caller,
    ) -> Option<Arc<ConnectionInfo>> {
        let authorized = self
            .proxy_of(node)
            .and_then(|p| caller::authorize(caller, &p).map(|()| p));
        match authorized {
            Ok(p) => Some(self.register(p, protocol, caller)),
            Err(e) => {
                warn!("refused an xDS client: {}", e.message());
                let _ = out.send(Err(e)).await;
                None
            }
        }
    }
}

/// What the push pipeline follows of the networks' gateways: their DNS names, the probes'
/// verdicts, and where it tells the prober what to probe.
struct Gateways {
    dns: gateway_dns::GatewayDns,
    unreachable: watch::Receiver<Arc<BTreeSet<SocketAddr>>>,
    targets: watch::Sender<BTreeSet<SocketAddr>>,
}

impl Gateways {
    /// Waits for new verdicts (the prober outlives the pipeline, so they never stop coming
    /// while it runs).
    async fn verdicts_changed(&mut self) {
        if self.unreachable.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Where each network's gateways are for `snapshot`, with DNS names as last resolved and
    /// those the probes found not answering marked; has the prober follow their addresses.
    fn table(&self, snapshot: &Snapshot) -> strait_translate::GatewayTable {
        let mut table = gateways::resolve(&snapshot.model, &|name: &str| self.dns.addresses(name));
        gateways::mark_unreachable(&mut table, &self.unreachable.borrow());
        let addresses = gateways::addresses(&table);
        self.targets.send_if_modified(|t| {
            let changed = *t != addresses;
            if changed {
                *t = addresses;
            }
            changed
        });
        table
    }
}

/// `/debug/gatewayz`: each network's gateways and what the probes say of them.
fn gatewayz(server: &XdsServer, probes: gateway_probe::ProbeBoard) -> DebugPage {
    let current = server.inner.current.clone();
    let settings = server.inner.options.gateway_probe;
    Arc::new(move || {
        let table = current.borrow().gateways.clone();
        let board = probes.lock().map(|b| b.clone()).unwrap_or_default();
        let now = Instant::now();
        let gateways: Vec<serde_json::Value> = table
            .iter()
            .flat_map(|(network, gws)| gws.iter().map(move |g| (network, g)))
            .map(|(network, g)| {
                let addr = SocketAddr::new(g.address, g.port);
                let state = board.get(&addr);
                serde_json::json!({
                    "network": network.to_string(),
                    "address": addr.to_string(),
                    "state": if settings.period.is_zero() {
                        "not probed"
                    } else {
                        state.map_or("unverified", |s| s.verdict.as_str())
                    },
                    "failures": state.map(|s| s.failures),
                    "connect_ms": state.and_then(|s| s.connect_ms),
                    "since_s": state.map(|s| now.duration_since(s.since).as_secs()),
                })
            })
            .collect();
        serde_json::json!({
            "probe_period_ms": settings.period.as_millis() as u64,
            "probe_timeout_ms": settings.timeout.as_millis() as u64,
            "probe_failures": settings.failures,
            "gateways": gateways,
        })
    })
}

/// Turns registry snapshots into published states, recording whether each change needs more
/// than an endpoint push; also publishes when a gateway's DNS name comes to resolve
/// differently (looked up again as its TTL runs out) or a `jwksUri` serves another key set.
async fn push_pipeline(
    inner: Arc<Inner>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    tx: watch::Sender<Arc<Current>>,
    mut gws: Gateways,
    mut jwks: jwks_fetch::JwksFetcher,
) {
    loop {
        let due = match (gws.dns.next_due(), jwks.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let refresh = async move {
            match due {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        let new_snapshot = tokio::select! {
            r = snapshots.changed() => {
                if r.is_err() {
                    return;
                }
                true
            }
            () = refresh => false,
            () = gws.verdicts_changed() => false,
        };
        let snapshot = snapshots.borrow_and_update().clone();
        let moved = gws.dns.refresh(&snapshot.settings).await;
        let rekeyed = jwks.refresh(&snapshot).await;
        let gateways = gws.table(&snapshot);
        if !new_snapshot && !moved && !rekeyed && gateways == tx.borrow().gateways {
            continue;
        }
        let started = Instant::now();
        let previous = tx.borrow().clone();
        // The registry's own change record, unless a version was skipped.
        let change = match &snapshot.change {
            Some(c) if c.from == previous.snapshot.version => c.clone(),
            _ => Arc::new(snapshot.changes_since(&previous.snapshot)),
        };
        // Endpoints of DNS-resolved services travel inside their clusters: a change to them
        // is a cluster change.
        let inline_endpoints = change.services.endpoints_changed.iter().any(|k| {
            snapshot
                .model
                .services()
                .any(|(key, s)| key.host == k.host && s.service.resolved_by_dns())
        });
        let jwks_table = jwks.table();
        let endpoint_only =
            change.endpoints_only() && !inline_endpoints && jwks_table == previous.jwks;
        // The snapshot's version, unless a gateway's address moved without a new snapshot.
        let version = snapshot.version.max(previous.version + 1);
        let (full_version, endpoint_changes) = if endpoint_only
            && previous.endpoint_changes.len() < 64
        {
            let mut hosts: BTreeSet<String> = change
                .services
                .endpoints_changed
                .iter()
                .map(|k| k.host.to_string())
                .collect();
            // A gateway that moved or stopped answering changes the load assignments of
            // the services with endpoints on its network, and nothing else.
            let networks = gateways::changed_networks(&previous.gateways, &gateways);
            if !networks.is_empty() {
                hosts.extend(
                    snapshot
                        .model
                        .services()
                        .filter(|(_, s)| s.endpoints.iter().any(|e| networks.contains(&e.network)))
                        .map(|(key, _)| key.host.to_string()),
                );
            }
            let mut history = previous.endpoint_changes.clone();
            history.push((version, hosts));
            (previous.full_version, history)
        } else {
            (version, Vec::new())
        };
        inner.metrics.snapshot_version.set(version as i64);
        inner
            .metrics
            .config_errors
            .set(snapshot.problems.iter().filter(|d| d.is_error()).count() as i64);
        info!(
            version,
            endpoint_only,
            prepared_ms = started.elapsed().as_millis() as u64,
            "publishing configuration"
        );
        let current = Arc::new(Current {
            version,
            snapshot,
            gateways,
            jwks: jwks_table,
            full_version,
            endpoint_changes,
            published_at: Instant::now(),
        });
        tx.send_replace(current);
    }
}

/// The network of a node's own workload (the pod or WorkloadEntry of its cluster and namespace at
/// its address), for a node that does not say its own `NETWORK`: the registry placed it by its
/// `topology.istio.io/network` label, its namespace's, `meshNetworks` or its cluster's, so the
/// proxy is on the network its own endpoints are.
fn workload_network(snapshot: &Snapshot, proxy: &ProxyNode) -> Option<NetworkId> {
    let ip = proxy.ip?;
    snapshot
        .model
        .workloads()
        .iter()
        .find(|w| {
            w.cluster == proxy.cluster
                && w.namespace == proxy.namespace
                && w.address == strait_model::EndpointAddress::Ip(ip)
        })
        .map(|w| w.network.clone())
        .filter(|n| !n.is_empty())
}

/// The network of a cluster's workloads (the registry's, from the cluster's setting or its
/// MeshConfig), for a node that does not say its own `NETWORK` and has no workload in the
/// registry: what Istio's injection tells every sidecar of a cluster (`values.global.network`).
fn cluster_network(snapshot: &Snapshot, cluster: &ClusterId) -> Option<NetworkId> {
    snapshot
        .networks
        .get(cluster)
        .filter(|n| !n.is_empty())
        .cloned()
}
