//! `strait proxy`: a sidecar or router that takes its configuration from the control plane.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use strait_identity::SpiffeId;
use strait_identity::workload::CaClientOptions;
use strait_proxy::node::{Mode, NodeIdentity};
use strait_proxy::xds::client::{Variant, XdsTls};
use strait_proxy::{DnsOptions, IdentityOptions, ProxyOptions, SetLogLevel};

/// Run a proxy (sidecar or router) driven by xDS from a Strait or Istio-compatible control plane.
///
/// The node ID and metadata follow Istio's conventions, so the control plane generates this
/// proxy's listeners, routes, clusters and endpoints as it would for an Envoy sidecar:
/// `--node-id sidecar~10.0.1.5~reviews-v1-7d9f8.bookinfo~bookinfo.svc.cluster.local --meta
/// CLUSTER_ID=cluster1 --meta LABELS=app=reviews,version=v1`.
///
/// Ports as Istio's sidecar: admin 15000, outbound capture 15001, inbound capture 15006 (both
/// from the configuration), health 15021 (`/healthz/ready`), Prometheus 15090. Each can be moved
/// with a flag so several proxies run side by side on one machine. With capture, iptables in the
/// pod's network namespace redirects traffic to 15001/15006 and lets the proxy's own traffic
/// (marked with `--mark`) out; without it, Sidecar egress listeners with `bind` work as explicit
/// proxies. Configuration the proxy cannot honour is rejected (NACK) with the reason and the
/// last good version kept; `strait proxy-config` shows what it holds.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The control plane's xDS address (`host:port`).
    #[arg(long, value_name = "ADDR")]
    pub xds: Option<String>,
    /// Istio-style node ID: `<sidecar|router>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// The proxy's role; must agree with the node ID's type.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Node metadata as Istio's keys (`CLUSTER_ID=c1`, `LABELS=app=a,version=v1`, `NAMESPACE=ns`,
    /// `LOCALITY=region/zone/subzone`); repeat.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Address of the admin API.
    #[arg(long, default_value = "127.0.0.1:15000", value_name = "ADDR")]
    pub admin_listen: SocketAddr,
    /// Address of the health endpoint (`/healthz/ready`); `off` to disable.
    #[arg(long, default_value = "0.0.0.0:15021", value_name = "ADDR")]
    pub health_listen: String,
    /// Address of the Prometheus endpoint (`/stats/prometheus`); `off` to disable.
    #[arg(long, default_value = "0.0.0.0:15090", value_name = "ADDR")]
    pub prometheus_listen: String,
    /// A bootstrap file (YAML or JSON: `xds`, `node: {id, metadata, locality}`, `admin`);
    /// flags override it.
    #[arg(long, value_name = "FILE")]
    pub bootstrap: Option<PathBuf>,
    /// xDS variant: delta when the server has it (auto), or force one.
    #[arg(long, value_enum, default_value = "auto")]
    pub xds_variant: VariantArg,
    /// Write a JSON access log line per request and connection (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<String>,
    /// Mark upstream sockets (`SO_MARK`) so capture rules let the proxy's own traffic out.
    #[arg(long, value_name = "MARK")]
    pub mark: Option<u32>,
    /// The source address of upstream connections (Envoy's `upstream_bind_config`): with
    /// several proxies on one host, peers see which one called.
    #[arg(long, value_name = "IP")]
    pub upstream_bind: Option<std::net::IpAddr>,
    /// Listeners the configuration puts on the wildcard address (0.0.0.0) bind this address
    /// instead: several proxies on one host without network namespaces.
    #[arg(long, value_name = "IP")]
    pub wildcard_bind: Option<std::net::IpAddr>,
    /// Worker threads, each accepting connections and serving them to their end on its own
    /// event loop (Istio's `concurrency`, 2 by default as there; 0: one per core).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub concurrency: usize,
    /// The workers' Linux scheduling policy. `batch` (SCHED_BATCH): a worker woken by its
    /// sockets waits for the thread running on its CPU to block, or for the next tick, instead
    /// of preempting it at once — a request relayed through client, sidecars and server then
    /// runs through without each hop preempting the one before it. Measured on a 2-core VM at
    /// 1000 req/s: a quarter to a half less of the proxies' CPU per request and a lower p50;
    /// with the cores saturated by other work, a higher p99 (see docs/benchmarks.md). `normal` leaves the policy the
    /// proxy was started with (SCHED_OTHER, unless started under `chrt`).
    #[arg(long, value_enum, default_value = "normal", value_name = "POLICY")]
    pub worker_scheduling: WorkerSchedulingArg,
    /// The mesh root(s) that verify the control plane before the proxy holds a trust bundle
    /// of its own (Istio's `root-cert.pem`). Turns on workload identity: TLS to `--xds` (its
    /// 15012) and a certificate from the CA for mesh mTLS.
    #[arg(long, value_name = "PEM")]
    pub ca_root: Option<PathBuf>,
    /// The CA's address (Istio's `CA_ADDR`); defaults to `--xds`.
    #[arg(long, value_name = "ADDR")]
    pub ca_address: Option<String>,
    /// The bootstrap token file (`strait ca token`), re-read on each certificate request.
    #[arg(long, value_name = "FILE")]
    pub token: Option<PathBuf>,
    /// The name the control plane's certificate carries.
    #[arg(long, default_value = "istiod.istio-system.svc", value_name = "NAME")]
    pub control_plane_name: String,
    /// The mesh's trust domain.
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub trust_domain: String,
    /// Another trust domain whose identities count as this one's (Istio's
    /// `trustDomainAliases`); repeat.
    #[arg(long = "trust-domain-alias", value_name = "DOMAIN")]
    pub trust_domain_aliases: Vec<String>,
    /// The workload's service account (default: `SERVICE_ACCOUNT` metadata, else `default`).
    #[arg(long, value_name = "NAME")]
    pub service_account: Option<String>,
    /// Requested certificate lifetime in seconds (0: the CA's default, 24 h).
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub cert_ttl: u64,
    /// Run the DNS proxy here (Istio's `127.0.0.1:15053`): it answers the mesh's names from
    /// the control plane's name table and forwards the rest. Metadata `DNS_CAPTURE=true`
    /// (Istio's `ISTIO_META_DNS_CAPTURE`) turns it on at Istio's address.
    #[arg(long, value_name = "ADDR")]
    pub dns_listen: Option<SocketAddr>,
    /// Where the DNS proxy asks for names the mesh does not know (default: the name servers
    /// of `--resolv-conf`); repeat.
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    pub dns_upstreams: Vec<SocketAddr>,
    /// The resolver configuration whose name servers and search domains the DNS proxy uses.
    #[arg(long, default_value = "/etc/resolv.conf", value_name = "FILE")]
    pub resolv_conf: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WorkerSchedulingArg {
    Normal,
    Batch,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Sidecar,
    Router,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum VariantArg {
    Auto,
    Delta,
    Sotw,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bootstrap {
    xds: Option<String>,
    admin: Option<SocketAddr>,
    #[serde(default)]
    node: BootstrapNode,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapNode {
    id: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    locality: Option<BootstrapLocality>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BootstrapLocality {
    #[serde(default)]
    region: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    sub_zone: String,
}

fn optional_addr(text: &str, flag: &str) -> anyhow::Result<Option<SocketAddr>> {
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .with_context(|| format!("{flag} {text}: write ip:port or off"))
}

/// Reads flags and bootstrap into the proxy's options.
fn options(args: &Args, set_log_level: SetLogLevel) -> anyhow::Result<ProxyOptions> {
    let bootstrap = match &args.bootstrap {
        None => Bootstrap::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--bootstrap {}: cannot read", path.display()))?;
            serde_saphyr::from_str(&text)
                .map_err(|e| anyhow::anyhow!("--bootstrap {}: {e}", path.display()))?
        }
    };
    let xds = args
        .xds
        .clone()
        .or(bootstrap.xds)
        .context("no control plane: give --xds host:port (or xds: in --bootstrap)")?;
    let id = args.node_id.clone().or(bootstrap.node.id).context(
        "no node ID: give --node-id sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local (or node.id in --bootstrap)",
    )?;
    let mut meta: Vec<(String, String)> = bootstrap.node.metadata.into_iter().collect();
    if let Some(l) = bootstrap.node.locality {
        meta.push((
            "LOCALITY".into(),
            format!("{}/{}/{}", l.region, l.zone, l.sub_zone),
        ));
    }
    for kv in &args.meta {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--meta {kv}: write KEY=VALUE"))?;
        meta.retain(|(key, _)| key != k);
        meta.push((k.to_string(), v.to_string()));
    }
    let node = NodeIdentity::parse(&id, &meta).map_err(|e| anyhow::anyhow!("--node-id: {e}"))?;
    match (args.mode, node.mode) {
        (Some(ModeArg::Sidecar), Mode::Router) | (Some(ModeArg::Router), Mode::Sidecar) => {
            bail!(
                "--mode {:?} disagrees with the node ID's type ({:?}): the control plane reads the type from the ID",
                args.mode,
                node.mode
            )
        }
        _ => {}
    }
    let (identity, xds_tls) = identity_options(args, &node, &xds)?;
    let dns = dns_options(args, &node)?;
    Ok(ProxyOptions {
        dns,
        identity,
        xds_tls,
        xds_address: xds,
        node,
        variant: match args.xds_variant {
            VariantArg::Auto => Variant::Auto,
            VariantArg::Delta => Variant::Delta,
            VariantArg::Sotw => Variant::StateOfTheWorld,
        },
        admin: bootstrap.admin.unwrap_or(args.admin_listen),
        health: optional_addr(&args.health_listen, "--health-listen")?,
        prometheus: optional_addr(&args.prometheus_listen, "--prometheus-listen")?,
        mark: args.mark,
        upstream_bind: args.upstream_bind,
        wildcard_bind: args.wildcard_bind,
        concurrency: args.concurrency,
        worker_scheduling: match args.worker_scheduling {
            WorkerSchedulingArg::Normal => None,
            WorkerSchedulingArg::Batch => Some(strait_sys::sched::Policy::Batch),
        },
        release_memory: strait_alloc::release_free_memory,
        access_log: args.access_log.clone(),
        set_log_level,
    })
}

/// The DNS proxy's options, when it runs: `--dns-listen`, or `DNS_CAPTURE=true` metadata.
fn dns_options(args: &Args, node: &NodeIdentity) -> anyhow::Result<Option<DnsOptions>> {
    let capture = node
        .metadata
        .get("DNS_CAPTURE")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let Some(listen) = args
        .dns_listen
        .or_else(|| capture.then(|| SocketAddr::from(([127, 0, 0, 1], 15053))))
    else {
        return Ok(None);
    };
    let path = &args.resolv_conf;
    let conf = match std::fs::read_to_string(path) {
        Ok(text) => strait_dns::ResolvConf::parse(&text)
            .map_err(|e| anyhow::anyhow!("--resolv-conf {}: {e}", path.display()))?,
        // Upstreams given explicitly need no resolv.conf.
        Err(_) if !args.dns_upstreams.is_empty() => strait_dns::ResolvConf::default(),
        Err(e) => bail!(
            "--resolv-conf {}: cannot read ({e}); give the upstream resolvers with --dns-upstream",
            path.display()
        ),
    };
    let upstreams = if args.dns_upstreams.is_empty() {
        conf.nameservers
    } else {
        args.dns_upstreams.clone()
    };
    Ok(Some(DnsOptions {
        listen,
        upstreams,
        search: conf.search,
    }))
}

/// Workload identity and control-plane TLS, when `--ca-root` is given.
fn identity_options(
    args: &Args,
    node: &NodeIdentity,
    xds: &str,
) -> anyhow::Result<(Option<IdentityOptions>, Option<XdsTls>)> {
    let Some(root_path) = &args.ca_root else {
        if args.token.is_some() || args.ca_address.is_some() {
            bail!("--token and --ca-address need --ca-root (the mesh root that verifies the CA)");
        }
        return Ok((None, None));
    };
    let pem = std::fs::read_to_string(root_path)
        .with_context(|| format!("--ca-root {}: cannot read", root_path.display()))?;
    let roots = strait_identity::cert::parse_pem_certs(&pem, &root_path.display().to_string())?;
    let service_account = args
        .service_account
        .clone()
        .or_else(|| node.metadata.get("SERVICE_ACCOUNT").cloned())
        .unwrap_or_else(|| "default".into());
    let mut trust_domains = vec![args.trust_domain.clone()];
    trust_domains.extend(args.trust_domain_aliases.iter().cloned());
    let ca = CaClientOptions {
        address: args.ca_address.clone().unwrap_or_else(|| xds.to_string()),
        server_name: args.control_plane_name.clone(),
        bootstrap_roots: roots.clone(),
        token_file: args.token.clone(),
        identity: SpiffeId::new(&args.trust_domain, &node.namespace, &service_account),
        ttl: Duration::from_secs(args.cert_ttl),
        mark: args.mark,
    };
    Ok((
        Some(IdentityOptions { ca, trust_domains }),
        Some(XdsTls {
            server_name: args.control_plane_name.clone(),
            roots,
        }),
    ))
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let set_level = super::init_reloadable_logging();
    let options = options(args, set_level)?;
    // The main thread: xDS, certificates, the admin API, DNS. Connections run on the workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(strait_proxy::run(options, super::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}
