//! `strait create-remote-secret` and `strait multicluster check`: giving another cluster's
//! control plane access to this cluster's registry, and seeing where each remote stands.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use strait_identity::token::{TokenKey, claims};
use strait_multicluster::secret::{
    READER_NAMESPACE, READER_SERVICE_ACCOUNT, RemoteAccess, secret_yaml,
};

/// Print a remote secret for this cluster: apply it among another cluster's manifests and that
/// cluster's control plane watches this one's registry (Istio's `istioctl create-remote-secret`).
///
/// The secret holds this control plane's secure address, the CA bundle that verifies it and a
/// reader token valid for `--ttl`. Create a fresh one and replace the old to rotate the token:
/// the watching control plane reconnects with it, without a restart, and keeps the remote's
/// services meanwhile.
#[derive(Debug, clap::Args)]
pub struct CreateRemoteSecretArgs {
    /// This cluster's name (the secret's key; `--cluster` of its control plane).
    #[arg(long, value_name = "NAME")]
    pub cluster: String,
    #[command(flatten)]
    pub access: AccessArgs,
}

/// How another control plane reaches and is let into this one.
#[derive(Debug, clap::Args)]
pub struct AccessArgs {
    /// `host:port` where other control planes reach this one's secure port (15012).
    #[arg(long, value_name = "ADDR")]
    pub server: String,
    /// The DNS name in this control plane's serving certificate.
    #[arg(long, default_value = "istiod.istio-system.svc", value_name = "NAME")]
    pub server_name: String,
    /// PEM root(s) the serving certificate chains to (the mesh root, `root-cert.pem`).
    #[arg(long, value_name = "FILE")]
    pub ca_root: PathBuf,
    /// This control plane's token key (`strait control-plane --token-key`).
    #[arg(long, value_name = "FILE")]
    pub token_key: PathBuf,
    /// How long the reader token is valid (Go duration: `24h`, `30m`).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub ttl: String,
}

pub fn create_remote_secret(args: &CreateRemoteSecretArgs) -> anyhow::Result<ExitCode> {
    let access = remote_access(&args.cluster, &args.access)?;
    std::io::stdout()
        .lock()
        .write_all(secret_yaml(&access).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// What a secret holds: the address, the CA and a fresh reader token.
fn remote_access(cluster: &str, args: &AccessArgs) -> anyhow::Result<RemoteAccess> {
    let ttl = strait_config::duration::parse(&args.ttl)
        .map_err(|e| anyhow::anyhow!("--ttl: {e}; write e.g. 24h or 30m"))?;
    let ca_pem = std::fs::read_to_string(&args.ca_root)
        .with_context(|| format!("--ca-root {}: cannot read it", args.ca_root.display()))?;
    strait_identity::cert::parse_pem_certs(&ca_pem, "--ca-root")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !args.token_key.exists() {
        anyhow::bail!(
            "--token-key {}: no such file; give the key this cluster's control plane checks tokens with",
            args.token_key.display()
        );
    }
    let key = TokenKey::load_or_create(&args.token_key).map_err(anyhow::Error::msg)?;
    let token = key.mint(&claims(
        READER_NAMESPACE,
        READER_SERVICE_ACCOUNT,
        cluster,
        SystemTime::now(),
        ttl.as_std(),
    ));
    Ok(RemoteAccess {
        cluster: cluster.to_string(),
        server: args.server.clone(),
        server_name: args.server_name.clone(),
        ca_pem,
        token,
        source: String::new(),
        mirror: false,
        probe: None,
        link: strait_multicluster::secret::LinkSettings::default(),
    })
}

/// Multi-cluster operations.
#[derive(Debug, clap::Args)]
pub struct MulticlusterArgs {
    #[command(subcommand)]
    pub command: MulticlusterCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum MulticlusterCommand {
    /// Print a link to this cluster, Linkerd-style (`linkerd multicluster link`: its credentials
    /// Secret and a `Link`): applied among another cluster's manifests, this cluster's Services labelled
    /// `mirror.linkerd.io/exported: "true"` appear there as `<name>-<cluster-name>`, routed
    /// through this cluster's east-west gateway, whose health is probed every 3 s (after two
    /// failed probes in a row the mirrors lose their endpoints until it answers again).
    Link {
        /// This cluster's name, the suffix of its mirrored services.
        #[arg(long, value_name = "NAME")]
        cluster_name: String,
        #[command(flatten)]
        access: AccessArgs,
        /// The gateway's health URL the linking control plane probes
        /// (`http://<gateway address>:15021/healthz/ready`).
        #[arg(long, value_name = "URL")]
        gateway_probe: Option<String>,
    },
    /// List the gateways this control plane probes: each network's east-west gateways
    /// (`meshNetworks`; reachable, unreachable, or unverified while never seen answering) and
    /// the linked clusters' (Linkerd's `multicluster gateways`: probe URL, whether the gateway
    /// passes its probes, the last probe's round trip). Exits 1 if any fails.
    Gateways {
        /// The control plane's debug address (`--debug-listen`).
        #[arg(long, default_value = "127.0.0.1:15014", value_name = "ADDR")]
        debug: String,
    },
    /// Say what removes a link: the link's Secret and Link to delete from the linking cluster's
    /// manifests (its mirrors go with it).
    Unlink {
        #[arg(long, value_name = "NAME")]
        cluster_name: String,
    },
    /// Show each remote or linked cluster a control plane watches: sync state (synced,
    /// syncing, stale, failed), reason, age, objects held and, for links, whether the gateway
    /// passes its probes; and each network's gateways as its probes find them. Exits 1 unless
    /// every remote is synced and no gateway fails.
    Check {
        /// The control plane's debug address (`--debug-listen`).
        #[arg(long, default_value = "127.0.0.1:15014", value_name = "ADDR")]
        debug: String,
    },
}

pub fn multicluster(args: &MulticlusterArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        MulticlusterCommand::Check { debug } => check(debug),
        MulticlusterCommand::Gateways { debug } => gateways(debug),
        MulticlusterCommand::Link {
            cluster_name,
            access,
            gateway_probe,
        } => {
            if let Some(url) = gateway_probe
                && !url.starts_with("http://")
            {
                anyhow::bail!(
                    "--gateway-probe {url}: write an http:// URL (the gateway's health port)"
                );
            }
            let mut link = remote_access(cluster_name, access)?;
            link.mirror = true;
            link.probe = gateway_probe.clone();
            std::io::stdout()
                .lock()
                .write_all(secret_yaml(&link).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        MulticlusterCommand::Unlink { cluster_name } => {
            writeln!(
                std::io::stdout().lock(),
                "delete Secret linkerd-multicluster/cluster-credentials-{cluster_name} and Link linkerd-multicluster/{cluster_name} from the linking cluster's manifests: its {cluster_name} mirrors are withdrawn at once, without a restart"
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The remotes on a control plane's `/debug/remotez`.
fn remotes(debug: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    debug_list(debug, "/debug/remotez", "remotes")
}

/// The networks' gateways on a control plane's `/debug/gatewayz`.
fn network_gateways(debug: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    debug_list(debug, "/debug/gatewayz", "gateways")
}

/// The list `field` of the control plane's debug page `path`.
fn debug_list(debug: &str, path: &str, field: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let v = super::get_json(
        debug,
        path,
        "the control plane's debug API",
        "is it running? (give its --debug-listen with --debug)",
    )?;
    Ok(v[field].as_array().cloned().unwrap_or_default())
}

fn gateways(debug: &str) -> anyhow::Result<ExitCode> {
    let links: Vec<serde_json::Value> = remotes(debug)?
        .into_iter()
        .filter(|r| r["probe"].is_string())
        .collect();
    let network = network_gateways(debug)?;
    let mut out = std::io::stdout().lock();
    if links.is_empty() && network.is_empty() {
        writeln!(
            out,
            "no gateways: this control plane's meshNetworks name no gateways and it has no links with a gateway probe (`strait multicluster link --gateway-probe`)"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut all_alive = true;
    if !network.is_empty() {
        all_alive &= write_network_gateways(&mut out, &network)?;
    }
    if !links.is_empty() {
        if !network.is_empty() {
            writeln!(out)?;
        }
        writeln!(
            out,
            "{:<16} {:<8} {:>9}  PROBE",
            "CLUSTER", "ALIVE", "LATENCY"
        )?;
        for r in &links {
            let alive = match r["gateway_alive"].as_bool() {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            };
            all_alive &= alive != "no";
            writeln!(
                out,
                "{:<16} {:<8} {:>9}  {}",
                r["cluster"].as_str().unwrap_or("?"),
                alive,
                millis(&r["probe_ms"]),
                r["probe"].as_str().unwrap_or("?"),
            )?;
        }
    }
    Ok(if all_alive {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Writes the networks' gateways and what the probes say; whether none is unreachable.
fn write_network_gateways(
    out: &mut impl Write,
    gateways: &[serde_json::Value],
) -> anyhow::Result<bool> {
    writeln!(
        out,
        "{:<16} {:<24} {:<12} {:>9} {:>8}",
        "NETWORK", "GATEWAY", "STATE", "CONNECT", "SINCE"
    )?;
    let mut none_unreachable = true;
    for g in gateways {
        let state = g["state"].as_str().unwrap_or("?");
        none_unreachable &= state != "unreachable";
        let since = g["since_s"]
            .as_u64()
            .map(|s| format!("{s}s"))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<16} {:<24} {:<12} {:>9} {:>8}",
            g["network"].as_str().unwrap_or("?"),
            g["address"].as_str().unwrap_or("?"),
            state,
            millis(&g["connect_ms"]),
            since,
        )?;
    }
    Ok(none_unreachable)
}

/// A number of milliseconds as `1.2ms`, or `-` when there is none.
fn millis(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |ms| format!("{ms:.1}ms"))
}

fn check(debug: &str) -> anyhow::Result<ExitCode> {
    let remotes = remotes(debug)?;
    let network = network_gateways(debug)?;
    let mut out = std::io::stdout().lock();
    let gateways_ok = if network.is_empty() {
        true
    } else {
        let ok = write_network_gateways(&mut out, &network)?;
        writeln!(out)?;
        ok
    };
    if remotes.is_empty() {
        writeln!(
            out,
            "no remote clusters: this control plane has no remote secrets (create them with `strait create-remote-secret` in the other clusters)"
        )?;
        return Ok(if gateways_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    writeln!(
        out,
        "{:<16} {:<8} {:>8} {:>8}  {:<22} {:<8} REASON",
        "CLUSTER", "STATE", "AGE", "OBJECTS", "SERVER", "GATEWAY"
    )?;
    let mut all_synced = true;
    for r in &remotes {
        let state = r["state"].as_str().unwrap_or("?");
        let gateway = match r["gateway_alive"].as_bool() {
            None => "-",
            Some(true) => "alive",
            Some(false) => "failing",
        };
        all_synced &= state == "synced" && gateway != "failing";
        writeln!(
            out,
            "{:<16} {:<8} {:>7}s {:>8}  {:<22} {:<8} {}",
            r["cluster"].as_str().unwrap_or("?"),
            state,
            r["age_s"].as_u64().unwrap_or(0),
            r["objects"].as_u64().unwrap_or(0),
            r["server"].as_str().unwrap_or("?"),
            gateway,
            r["reason"].as_str().unwrap_or("-"),
        )?;
    }
    Ok(if all_synced && gateways_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
