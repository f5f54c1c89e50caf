//! The Strait proxy: a sidecar or router driven by xDS from the control plane. It holds the
//! configuration it is sent (rejecting, with reasons, what it cannot honour), binds and
//! captures listeners, serves HTTP/1.1, HTTP/2, gRPC and TCP, routes, balances and protects
//! upstreams with Envoy's semantics, and reports Istio's metrics and an admin API.

pub mod access_log;
pub mod admin;
pub mod authz;
pub mod boxed;
pub mod gather;
pub mod h2_stream;
pub mod http;
pub mod identity;
pub mod idle;
pub mod jwt;
pub mod listen;
pub mod metrics;
pub mod node;
pub mod secrets;
pub mod state;
pub mod tcp;
pub mod trace;
pub mod upstream;
pub mod workers;
pub mod xds;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use metrics::{Metrics, Peer};
use node::NodeIdentity;
use state::Snapshot;

/// Changes the log filter at run time (`/logging?level=`).
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How to run a proxy.
pub struct ProxyOptions {
    pub xds_address: String,
    pub node: NodeIdentity,
    pub variant: xds::client::Variant,
    pub admin: SocketAddr,
    /// Istio's health port (15021): `/healthz/ready`.
    pub health: Option<SocketAddr>,
    /// Istio's Prometheus port (15090): `/stats/prometheus`.
    pub prometheus: Option<SocketAddr>,
    /// `SO_MARK` for upstream sockets (capture rules let marked traffic out).
    pub mark: Option<u32>,
    /// The source address of upstream connections (Envoy's `upstream_bind_config`): where
    /// several proxies share a host, peers then see which one called.
    pub upstream_bind: Option<std::net::IpAddr>,
    /// Listeners the configuration puts on the wildcard address bind this address instead:
    /// several proxies share one host without network namespaces.
    pub wildcard_bind: Option<std::net::IpAddr>,
    /// JSON access log destination (`-` for standard output).
    pub access_log: Option<String>,
    pub set_log_level: SetLogLevel,
    /// Where the workload certificate comes from; `None`: no identity (plaintext only).
    pub identity: Option<IdentityOptions>,
    /// TLS to the control plane (its 15012); `None`: plaintext xDS (15010).
    pub xds_tls: Option<xds::client::XdsTls>,
    /// The DNS proxy (Istio's 15053); `None`: the proxy answers no DNS.
    pub dns: Option<DnsOptions>,
    /// Worker threads serving connections (Istio's `concurrency`; 0: one per core).
    pub concurrency: usize,
    /// The workers' scheduling policy; `None`: the one the proxy was started with.
    pub worker_scheduling: Option<strait_sys::sched::Policy>,
    /// Hands the allocator's free memory back to the system; called after each configuration
    /// update, whose decoding is a burst of transient allocations.
    pub release_memory: fn(),
}

/// The DNS proxy's address and what it needs besides the name table.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    pub listen: SocketAddr,
    /// Where names the mesh does not know are asked (from `resolv.conf`).
    pub upstreams: Vec<SocketAddr>,
    /// `resolv.conf`'s search domains.
    pub search: Vec<String>,
}

/// The proxy's workload identity.
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    pub ca: strait_identity::workload::CaClientOptions,
    /// The mesh's trust domain and its aliases.
    pub trust_domains: Vec<String>,
}

/// Everything shared by the proxy's tasks.
pub struct Proxy {
    pub snapshot: ArcSwap<Snapshot>,
    pub node: NodeIdentity,
    pub me: Peer,
    pub peer_header: Option<::http::HeaderValue>,
    pub metrics: Metrics,
    pub access_log: Option<access_log::AccessLog>,
    /// The upstream socket mark and the workload identity, shared by every cluster runtime
    /// and by the listeners that terminate mTLS.
    pub cluster_env: upstream::ClusterEnv,
    pub xds: Arc<xds::client::Shared>,
    pub bind_errors: Arc<Mutex<HashMap<String, String>>>,
    pub set_log_level: SetLogLevel,
    /// See [`ProxyOptions::release_memory`].
    pub release_memory: fn(),
    pub stop: watch::Sender<bool>,
    /// The DNS proxy, when it runs.
    pub dns: Option<Arc<strait_dns::DnsServer>>,
    /// Where listeners on the wildcard address bind instead (`--wildcard-bind`).
    pub wildcard_bind: Option<std::net::IpAddr>,
}

impl Proxy {
    /// Ready once every resource type has arrived and everything they name has too.
    pub fn is_ready(&self) -> bool {
        self.xds.store.lock().map(|s| s.is_warm()).unwrap_or(false)
    }
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for {what} on {addr}: {e}; choose another address with {flag}"
        )
    })
}

/// Runs the proxy until `/quitquitquit` or `shutdown` resolves.
pub async fn run(options: ProxyOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let access_log = match &options.access_log {
        Some(path) => Some(
            access_log::AccessLog::open(path)
                .map_err(|e| anyhow::anyhow!("--access-log {path}: {e}"))?,
        ),
        None => None,
    };
    let admin_listener = bind(options.admin, "the admin API", "--admin-listen").await?;
    let health_listener = match options.health {
        Some(a) => Some(bind(a, "health checks", "--health-listen").await?),
        None => None,
    };
    let prometheus_listener = match options.prometheus {
        Some(a) => Some(bind(a, "Prometheus", "--prometheus-listen").await?),
        None => None,
    };
    let (stop, stop_rx) = watch::channel(false);
    let shared = xds::client::Shared::new(options.dns.is_some());
    let dns = match &options.dns {
        Some(d) => Some(start_dns(d, &options.node, options.mark).await?),
        None => None,
    };
    let me = options.node.peer();
    let identity = Arc::new(identity::MeshIdentity::new(
        options.identity.is_some(),
        options
            .identity
            .as_ref()
            .map(|i| i.trust_domains.clone())
            .unwrap_or_default(),
    ));
    let proxy = Arc::new(Proxy {
        cluster_env: upstream::ClusterEnv {
            mark: options.mark,
            source: options.upstream_bind,
            identity: identity.clone(),
        },
        snapshot: ArcSwap::from_pointee(Snapshot::default()),
        peer_header: http::peer_header_value(&me),
        me,
        metrics: Metrics::new(),
        access_log,
        xds: shared.clone(),
        bind_errors: Arc::default(),
        set_log_level: options.set_log_level,
        release_memory: options.release_memory,
        stop,
        node: options.node.clone(),
        dns,
        wildcard_bind: options.wildcard_bind,
    });
    for l in [Some(admin_listener), health_listener, prometheus_listener]
        .into_iter()
        .flatten()
    {
        tokio::spawn(admin::serve(proxy.clone(), l, stop_rx.clone()));
    }
    if let Some(id) = &options.identity {
        let (manager, mut certs) = strait_identity::workload::IdentityManager::new(id.ca.clone());
        tokio::spawn(manager.run(stop_rx.clone()));
        let identity = identity.clone();
        tokio::spawn(async move {
            while certs.changed().await.is_ok() {
                let cert = certs.borrow_and_update().clone();
                if let Some(cert) = cert
                    && let Err(e) = identity.set(cert)
                {
                    warn!(error = %e, "the new workload certificate cannot be used; keeping the previous one");
                }
            }
        });
    }
    tokio::spawn(xds::client::run(
        options.xds_address.clone(),
        options.node.envoy_node(),
        options.variant,
        xds::client::XdsTransport {
            mark: options.mark,
            tls: options.xds_tls.clone(),
            identity: identity.clone(),
        },
        shared.clone(),
        stop_rx.clone(),
    ));
    info!(node = %options.node.id, xds = %options.xds_address, admin = %options.admin, "proxy started");

    let worker_count = workers::count(options.concurrency);
    let workers =
        workers::Workers::start(worker_count, options.worker_scheduling).map_err(|e| {
            anyhow::anyhow!(
                "cannot start {worker_count} worker threads: {e}; try a lower --concurrency{}",
                if options.worker_scheduling.is_some() {
                    " or leave out --worker-scheduling"
                } else {
                    ""
                }
            )
        })?;
    info!(
        workers = worker_count,
        scheduling = ?options.worker_scheduling,
        "connections are served on the worker threads"
    );
    let mut bound = listen::Bound::new(
        proxy.bind_errors.clone(),
        workers.handles().to_vec(),
        &proxy.metrics,
    );
    let mut changed = shared.changed.subscribe();
    let mut stop_watch = stop_rx.clone();
    let mut file_check = tokio::time::interval(CERTIFICATE_FILE_CHECK);
    file_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = changed.changed() => {
                if r.is_err() {
                    break;
                }
                apply(&proxy, &shared, &mut bound).await;
            }
            _ = file_check.tick() => {
                if proxy.snapshot.load().files_changed() {
                    info!("a certificate file changed; applying it");
                    apply(&proxy, &shared, &mut bound).await;
                }
            }
            _ = stop_watch.changed() => break,
            _ = &mut shutdown => break,
        }
    }
    info!("proxy stopping");
    bound.stop_all();
    let _ = proxy.stop.send(true);
    drop(workers);
    Ok(())
}

/// Starts the DNS proxy (its table arrives later over xDS; until then it forwards).
async fn start_dns(
    options: &DnsOptions,
    node: &NodeIdentity,
    mark: Option<u32>,
) -> anyhow::Result<Arc<strait_dns::DnsServer>> {
    if options.upstreams.contains(&options.listen) {
        anyhow::bail!(
            "the DNS proxy's upstream {} is its own address; give the real resolver with --dns-upstream",
            options.listen
        );
    }
    let (server, _) = strait_dns::DnsServer::start(
        options.listen,
        strait_dns::LookupContext {
            namespace: node.namespace.clone(),
            domain_suffix: node.domain_suffix.clone(),
            search: options.search.clone(),
            zone: None,
        },
        options.upstreams.clone(),
        mark,
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for DNS on {}: {e}; choose another address with --dns-listen",
            options.listen
        )
    })?;
    info!(listen = %options.listen, upstreams = ?options.upstreams, "DNS proxy started");
    Ok(server)
}

/// How often the certificate files listeners and clusters were made with are read again for
/// changes (a re-mounted Secret, a renewal in place), as Istio's agent watches mounted ones.
const CERTIFICATE_FILE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds the next snapshot from the store, publishes it, and binds what it names.
async fn apply(proxy: &Arc<Proxy>, shared: &xds::client::Shared, bound: &mut listen::Bound) {
    let next = {
        let Ok(store) = shared.store.lock() else {
            warn!("configuration store unavailable");
            return;
        };
        if let (Some(dns), Some(names)) = (&proxy.dns, &store.names) {
            dns.update(names);
        }
        Snapshot::build(&store, &proxy.snapshot.load(), &proxy.cluster_env)
    };
    proxy.snapshot.store(Arc::new(next));
    bound.reconcile(proxy).await;
    (proxy.release_memory)();
}
