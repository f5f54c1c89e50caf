//! `strait control-plane`: the registry, the xDS server and the debug API of one cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use strait_identity::Authority;
use strait_identity::cacerts::CaFiles;
use strait_identity::policy::Limits;
use strait_identity::service::CaService;
use strait_identity::serving::{
    ServingNames, keep_serving_config, reload_authority_on_change, serving_config,
};
use strait_identity::token::TokenKey;
use strait_model::MeshSettings;

use anyhow::{Context, bail};
use strait_model::ClusterId;
use strait_multicluster::client::{StatusBoard, WatchOptions};
use strait_multicluster::remotes;
use strait_multicluster::server::RegistryService;
use strait_registry::{ClusterSpec, Registry, RegistryOptions};
use strait_xds_server::gateway_dns::GatewayResolver;
use strait_xds_server::{ServerOptions, XdsServer, serve_debug};
use tokio::sync::watch;
use tracing::{info, warn};

/// Run a cluster's control plane: watch its manifests and serve them to proxies over xDS.
///
/// Reads the cluster's manifests (`--config`, watched: edits apply after `--debounce`; an invalid
/// document keeps its last good version and the problem is logged and shown on
/// `/debug/config_problems`), builds the mesh (with other clusters' manifests given by
/// `--remote-config`), and serves every connected proxy its own listeners, routes, clusters and
/// endpoints over Envoy's ADS (state-of-the-world and delta), as Istio's istiod does on 15010.
///
/// Other clusters join through remote secrets among the manifests (`strait
/// create-remote-secret` of the other cluster): each is watched over the other control plane's
/// authenticated registry stream on its TLS port, which this one serves too. Adding, replacing
/// or deleting a remote secret applies without a restart; a remote that cannot be reached keeps
/// its last services and endpoints for `--remote-stale-after`, then they are withdrawn.
///
/// The debug port serves `/ready` (after the first load and once xDS is listening), `/metrics`
/// (Prometheus), `/debug/syncz` (what each proxy was sent and acknowledged, and NACK reasons),
/// `/debug/config_dump?proxy=ID` (what that proxy is sent, as JSON) and `/debug/remotez` (each
/// remote cluster's sync state, reason and age).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// This cluster's name (Istio's cluster ID).
    #[arg(long, value_name = "NAME")]
    pub cluster: String,
    /// Directory (or file) of this cluster's manifests.
    #[arg(long, value_name = "DIR")]
    pub config: PathBuf,
    /// Strait MeshConfig file (mesh ID, trust domain, networks); may also live in --config.
    #[arg(long, value_name = "FILE")]
    pub mesh: Option<PathBuf>,
    /// Another cluster and the directory of its manifests, whose services and endpoints join
    /// the mesh; repeat per cluster.
    #[arg(long = "remote-config", value_name = "NAME=DIR")]
    pub remote_configs: Vec<String>,
    /// Address of the plaintext xDS (ADS) server.
    #[arg(long, default_value = "0.0.0.0:15010", value_name = "ADDR")]
    pub xds_listen: SocketAddr,
    /// Address of the debug and metrics API.
    #[arg(long, default_value = "0.0.0.0:15014", value_name = "ADDR")]
    pub debug_listen: SocketAddr,
    /// Quiet time after a manifest change before it is pushed, in milliseconds.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub debounce: u64,
    /// Namespace of mesh-wide objects (Sidecar, DestinationRule, PeerAuthentication defaults).
    #[arg(long, default_value = "istio-system", value_name = "NAMESPACE")]
    pub root_namespace: String,
    /// Address of the TLS port serving the CA and xDS (Istio's 15012).
    #[arg(long, default_value = "0.0.0.0:15012", value_name = "ADDR")]
    pub secure_listen: SocketAddr,
    /// The cluster's CA material in Istio's `cacerts` layout (`strait ca intermediate`); watched,
    /// so a rotated intermediate or trust bundle applies without a restart. Without it, a
    /// self-signed development root is created in memory.
    #[arg(long, value_name = "DIR")]
    pub cacerts: Option<PathBuf>,
    /// Key that checks workloads' bootstrap tokens (`strait ca token --key FILE`); created if
    /// missing. Without it, only workloads already holding a mesh certificate get one.
    #[arg(long, value_name = "FILE")]
    pub token_key: Option<PathBuf>,
    /// Revoked bootstrap tokens (`strait ca revoke` writes it): one `token <id>` or
    /// `serviceaccount <ns>/<name> <unix-seconds>` per line; re-read when it changes, open
    /// registry streams of revoked reader tokens end.
    #[arg(long, value_name = "FILE", requires = "token_key")]
    pub token_revocations: Option<PathBuf>,
    /// Also accept Kubernetes service-account tokens (the projected token a pod mounts for
    /// the mesh) signed by this issuer (the API server's `--service-account-issuer`), whose
    /// public keys are: `ISSUER=JWKS_FILE` in a file (`kubectl get --raw /openid/v1/jwks`),
    /// re-read when it changes; `ISSUER=JWKS_URL` at a URL; or, given `ISSUER` alone (an
    /// `https://` issuer), where its OpenID discovery document says. URLs are fetched again
    /// every `--service-account-keys-refresh`. Repeat per cluster.
    #[arg(
        long = "service-account-issuer",
        value_name = "ISSUER=JWKS_FILE|ISSUER=JWKS_URL|ISSUER"
    )]
    pub service_account_issuers: Vec<String>,
    /// How often service-account issuers' key set URLs are fetched again, in seconds (Istio's
    /// 20 minutes; 10 s after a failed fetch).
    #[arg(long, default_value_t = 1200, value_name = "S")]
    pub service_account_keys_refresh: u64,
    /// Audience such a token must be for (default `istio-ca`, what Istio's injection asks
    /// for); repeat to accept several.
    #[arg(long = "service-account-audience", value_name = "AUDIENCE")]
    pub service_account_audiences: Vec<String>,
    /// Also accept service-account tokens this Kubernetes API server vouches for (a
    /// TokenReview, Istio's default way), for those no `--service-account-issuer` verifies:
    /// `https://<api server>`.
    #[arg(long, value_name = "URL")]
    pub token_review_server: Option<String>,
    /// The control plane's own service-account token, sent to the API server with each
    /// review (read again every time, as the kubelet rotates it).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token",
        requires = "token_review_server"
    )]
    pub token_review_token: PathBuf,
    /// The CA bundle the API server's certificate must chain to.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        requires = "token_review_server"
    )]
    pub token_review_ca: PathBuf,
    /// Extra DNS name for the control plane's serving certificate (besides
    /// `istiod.<root-namespace>.svc` and `localhost`); repeat per name.
    #[arg(long = "server-name", value_name = "NAME")]
    pub server_names: Vec<String>,
    /// How long an unreachable remote cluster's services and endpoints stay in effect before
    /// they are withdrawn, in seconds.
    #[arg(long, default_value_t = 120, value_name = "S")]
    pub remote_stale_after: u64,
    /// Also serve this cluster's DNS here, as kube-dns does: its Kubernetes Services by full
    /// name under `svc.<domain>` (unknown names there do not exist; other names are refused
    /// with SERVFAIL, there is no upstream). Sidecars forward to it what their name table
    /// does not hold.
    #[arg(long, value_name = "ADDR")]
    pub dns_listen: Option<SocketAddr>,
    /// Name server for gateway addresses given as DNS names in `meshNetworks` (default:
    /// `/etc/resolv.conf`'s, else the system resolver); repeat. Names are resolved again when
    /// their TTL runs out.
    #[arg(long = "gateway-dns", value_name = "ADDR")]
    pub gateway_dns: Vec<SocketAddr>,
    /// How often each network's east-west gateway is probed (a TCP connection to its data
    /// port, from this control plane's network), in milliseconds; 0 turns probing off. A
    /// gateway that answered and then fails `--gateway-probe-failures` probes in a row has the
    /// endpoints behind it sent through another gateway of its network, or unhealthy, until it
    /// answers again (`strait multicluster gateways`).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub gateway_probe_period: u64,
    /// How long a gateway probe's connection may take to open, in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub gateway_probe_timeout: u64,
    /// Failed probes in a row (each failure is probed again at once) that make a gateway
    /// unreachable.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_probe_failures: u32,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    super::init_logging();
    super::without_huge_pages();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))?;
    Ok(ExitCode::SUCCESS)
}

/// Connections a listener lets wait to be accepted. Every proxy of a cluster reconnects at once
/// when the control plane restarts; with tokio's 1024 a burst of reconnecting proxies overflows
/// the queue and the kernel answers with SYN cookies and resets. The kernel caps it at
/// `net.core.somaxconn` (Go's listeners, istiod's among them, ask for that too).
const LISTEN_BACKLOG: u32 = 65535;

fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listen = || -> std::io::Result<tokio::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().with_context(|| format!("cannot listen for {what} on {addr}: is another control plane running? choose another address with {flag}"))
}

async fn serve(args: &Args) -> anyhow::Result<()> {
    if !args.config.exists() {
        bail!(
            "--config {}: no such file or directory",
            args.config.display()
        );
    }
    let cluster = ClusterId::new(&args.cluster);
    let mut paths = vec![args.config.clone()];
    if let Some(m) = &args.mesh {
        if !m.exists() {
            bail!("--mesh {}: no such file", m.display());
        }
        paths.push(m.clone());
    }
    let mut specs = vec![ClusterSpec {
        id: cluster.clone(),
        paths,
        network: None,
    }];
    for spec in &args.remote_configs {
        let (name, dir) = spec
            .split_once('=')
            .with_context(|| format!("--remote-config {spec}: write NAME=DIR"))?;
        specs.push(ClusterSpec {
            id: ClusterId::new(name),
            paths: vec![PathBuf::from(dir)],
            network: None,
        });
    }
    let options = RegistryOptions {
        debounce: Duration::from_millis(args.debounce),
        local_cluster: Some(cluster.clone()),
        ..Default::default()
    };
    let local_paths = specs[0].paths.clone();
    let registry = Registry::load(specs, options);
    let pusher = registry.pusher();
    let first = registry.snapshot();
    for p in first.problems.iter() {
        warn!("{p}");
    }
    info!(
        cluster = %cluster,
        services = first.model.services().count(),
        objects = first.clusters.values().map(|c| c.len()).sum::<usize>(),
        errors = first.problems.iter().filter(|d| d.is_error()).count(),
        "configuration loaded"
    );
    if let Some(addr) = args.dns_listen {
        start_cluster_dns(addr, cluster.clone(), registry.subscribe()).await?;
    }
    let (server, pipeline) = XdsServer::new(
        ServerOptions {
            cluster: cluster.clone(),
            root_namespace: args.root_namespace.clone(),
            gateway_resolver: if args.gateway_dns.is_empty() {
                GatewayResolver::System
            } else {
                GatewayResolver::Servers(args.gateway_dns.clone())
            },
            // `https://` jwksUris are verified against `SSL_CERT_FILE` when set (Go's and
            // OpenSSL's variable, which istiod honours), else the system's roots.
            jwks: strait_xds_server::jwks_fetch::JwksOptions {
                trust_roots: std::env::var_os("SSL_CERT_FILE").map(PathBuf::from),
                ..Default::default()
            },
            gateway_probe: strait_xds_server::gateway_probe::ProbeSettings {
                period: Duration::from_millis(args.gateway_probe_period),
                timeout: Duration::from_millis(args.gateway_probe_timeout.max(1)),
                failures: args.gateway_probe_failures,
            },
        },
        registry.subscribe(),
    )
    .await;
    let xds_listener = bind(args.xds_listen, "xDS", "--xds-listen")?;
    let debug_listener = bind(args.debug_listen, "the debug API", "--debug-listen")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let secure = start_identity(args, &first.settings, stop_rx.clone()).await?;
    let snapshots = registry.subscribe();
    tokio::spawn(registry.watch(stop_rx.clone()));
    let board: StatusBoard = Arc::default();
    tokio::spawn(remotes::run(
        cluster.clone(),
        snapshots.clone(),
        pusher,
        board.clone(),
        WatchOptions {
            local: cluster.to_string(),
            stale_after: Duration::from_secs(args.remote_stale_after),
            ..WatchOptions::default()
        },
        stop_rx.clone(),
    ));
    let synced_board = board.clone();
    server.add_debug_page(
        "/debug/remotez",
        Arc::new(move || strait_multicluster::client::board_json(&board)),
    );
    server.add_debug_page(
        "/debug/remotez/synced",
        Arc::new(move || serde_json::json!(remotes::synced_count(&synced_board))),
    );
    let registry_service = RegistryService::new(
        cluster.clone(),
        local_paths,
        snapshots,
        secure.tokens.clone(),
    );
    tokio::spawn(pipeline);
    tokio::spawn(serve_debug(server.clone(), debug_listener, stop_rx.clone()));
    let mut grpc_stop = stop_rx.clone();
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(server.service())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(xds_listener),
            async move {
                let _ = grpc_stop.changed().await;
            },
        );
    let mut secure_stop = stop_rx.clone();
    let secure_grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(server.service())
        .add_service(secure.ca.into_server())
        .add_service(registry_service.into_server())
        .serve_with_incoming_shutdown(
            strait_identity::transport::tls_incoming(secure.listener, secure.config),
            async move {
                let _ = secure_stop.changed().await;
            },
        );
    server.set_ready();
    info!(xds = %args.xds_listen, secure = %args.secure_listen, debug = %args.debug_listen, "control plane ready");
    let grpc_task = tokio::spawn(grpc);
    tokio::spawn(secure_grpc);
    super::shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc_task).await;
    Ok(())
}

/// Serves the cluster's DNS on `addr`, its table following every snapshot.
async fn start_cluster_dns(
    addr: SocketAddr,
    cluster: ClusterId,
    mut snapshots: watch::Receiver<Arc<strait_registry::Snapshot>>,
) -> anyhow::Result<()> {
    let domain = snapshots.borrow().settings.domain_suffix.clone();
    let (dns, _) = strait_dns::DnsServer::start(
        addr,
        strait_dns::LookupContext {
            zone: Some(domain.clone()),
            domain_suffix: domain,
            ..Default::default()
        },
        Vec::new(),
        None,
    )
    .await
    .with_context(|| {
        format!("cannot listen for DNS on {addr}; choose another address with --dns-listen")
    })?;
    let table = move |s: &strait_registry::Snapshot| {
        Arc::new(strait_translate::dns::cluster_table(&s.model, &cluster))
    };
    dns.update(&table(&snapshots.borrow_and_update()));
    tokio::spawn(async move {
        while snapshots.changed().await.is_ok() {
            let next = table(&snapshots.borrow_and_update());
            dns.update(&next);
        }
    });
    info!(dns = %addr, "cluster DNS serving");
    Ok(())
}

/// What the TLS port serves: the CA service, with its listener and rotating TLS configuration.
struct Secure {
    ca: CaService,
    /// Checks bootstrap and registry-reader tokens.
    tokens: Option<Arc<TokenKey>>,
    listener: tokio::net::TcpListener,
    config: Arc<ArcSwap<rustls::ServerConfig>>,
}

/// Loads (or, for development, creates) the CA, its serving certificate and token key, and
/// starts the tasks that keep them current.
async fn start_identity(
    args: &Args,
    settings: &MeshSettings,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Secure> {
    let limits = Limits {
        trust_domain: settings.trust_domain.clone(),
        trust_domain_aliases: settings.trust_domain_aliases.clone(),
        ..Limits::default()
    };
    let files = match &args.cacerts {
        Some(dir) => CaFiles::load(dir).context("--cacerts")?,
        None => {
            warn!(
                "no --cacerts given: signing with a self-signed root created in memory for development; workloads of other clusters will not trust it and it is gone on restart (create a shared root with `strait ca init` and per-cluster intermediates with `strait ca intermediate`)"
            );
            CaFiles::self_signed_for_development(SystemTime::now())?
        }
    };
    let authority = Authority::new(files, limits).map_err(|e| anyhow::anyhow!("--cacerts: {e}"))?;
    let names = ServingNames::istiod(
        &settings.trust_domain,
        &args.root_namespace,
        &args.server_names,
    );
    let config = Arc::new(ArcSwap::new(
        serving_config(&authority, &names, SystemTime::now()).map_err(anyhow::Error::msg)?,
    ));
    let authority = Arc::new(ArcSwap::from_pointee(authority));
    let tokens = match &args.token_key {
        Some(path) => {
            let key = Arc::new(
                TokenKey::load_or_create(path).map_err(|e| anyhow::anyhow!("--token-key: {e}"))?,
            );
            if let Some(list) = &args.token_revocations {
                let n = strait_identity::serving::load_revocations(list, &key)
                    .map_err(|e| anyhow::anyhow!("--token-revocations: {e}"))?;
                info!(file = %list.display(), entries = n, "token revocations loaded");
                tokio::spawn(strait_identity::serving::reload_revocations_on_change(
                    list.clone(),
                    key.clone(),
                    Duration::from_secs(2),
                    stop.clone(),
                ));
            }
            Some(key)
        }
        None => {
            info!(
                "no --token-key: bootstrap tokens are not accepted (workloads renew with the certificate they hold, or present a service-account token of a --service-account-issuer)"
            );
            None
        }
    };
    // `https://` key servers are verified as `jwksUri`s are.
    let issuers = super::sa_issuers::follow(
        super::sa_issuers::parse(&args.service_account_issuers)?,
        args.service_account_audiences.clone(),
        std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .as_deref(),
        Duration::from_secs(args.service_account_keys_refresh.max(1)),
        stop.clone(),
    )
    .await?;
    let (changed_tx, changed_rx) = watch::channel(0u64);
    if let Some(dir) = &args.cacerts {
        tokio::spawn(reload_authority_on_change(
            dir.clone(),
            authority.clone(),
            changed_tx,
            Duration::from_secs(2),
            stop.clone(),
        ));
    }
    tokio::spawn(keep_serving_config(
        authority.clone(),
        names,
        config.clone(),
        changed_rx,
        stop,
    ));
    let listener = bind(
        args.secure_listen,
        "the CA and secure xDS",
        "--secure-listen",
    )?;
    let mut ca = CaService::new(authority, tokens.clone()).with_service_account_issuers(issuers);
    if let Some(server) = &args.token_review_server {
        let review = super::token_review::ApiServerReview {
            server: server.clone(),
            token_file: args.token_review_token.clone(),
            ca_file: args.token_review_ca.clone(),
            audiences: args.service_account_audiences.clone(),
        };
        review.check()?;
        info!(server = %server, "service-account tokens no issuer verifies are reviewed by the API server");
        ca = ca.with_token_review(Arc::new(review));
    }
    Ok(Secure {
        ca,
        tokens,
        listener,
        config,
    })
}
