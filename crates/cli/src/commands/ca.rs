//! `strait ca`: the mesh's certificate material — a root, per-cluster intermediates in Istio's
//! `cacerts` layout, and bootstrap tokens for workloads.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use strait_identity::cacerts;
use strait_identity::token::{TokenKey, claims};

/// Create and manage the mesh's certificate authority material.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Create the mesh's root CA (`root-cert.pem`, `root-key.pem`) in a new directory. Keep the
    /// key offline: it only signs intermediates.
    Init {
        /// Directory to create the root in.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Lifetime of the root, in days.
        #[arg(long, default_value_t = cacerts::ROOT_VALIDITY.as_secs() / 86400, value_name = "DAYS")]
        days: u64,
    },
    /// Create a cluster's intermediate CA, signed by the root, in Istio's `cacerts` layout
    /// (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`) — what
    /// `strait control-plane --cacerts DIR` (or Istio's `cacerts` Secret) uses.
    Intermediate {
        /// The root's directory (from `strait ca init`).
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// The cluster this intermediate signs for (written into its subject).
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// Directory to create the intermediate in.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Lifetime of the intermediate, in days (capped at the root's).
        #[arg(long, default_value_t = cacerts::INTERMEDIATE_VALIDITY.as_secs() / 86400, value_name = "DAYS")]
        days: u64,
        /// Extra root certificates workloads should trust too (a root being rotated in or out).
        #[arg(long = "also-trust", value_name = "PEM")]
        also_trust: Vec<PathBuf>,
    },
    /// Issue a workload certificate directly from a `cacerts` directory (for a machine without
    /// the proxy's certificate client, or for testing peers): writes `cert-chain.pem`,
    /// `key.pem` (0600) and `root-cert.pem`.
    Issue {
        /// The signing CA (`strait ca intermediate` output).
        #[arg(long, value_name = "DIR")]
        cacerts: PathBuf,
        #[arg(long, value_name = "NAMESPACE")]
        namespace: String,
        #[arg(long, value_name = "NAME", default_value = "default")]
        service_account: String,
        #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
        trust_domain: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86400, value_name = "SECONDS")]
        ttl: u64,
        /// Directory to write the files to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Mint a workload's bootstrap token: what it presents to obtain its first certificate.
    Token {
        /// The control plane's token key (`strait control-plane --token-key`); created if
        /// missing.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[arg(long, value_name = "NAMESPACE")]
        namespace: String,
        #[arg(long, value_name = "NAME", default_value = "default")]
        service_account: String,
        #[arg(long, value_name = "NAME", default_value = "")]
        cluster: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        ttl: u64,
    },
    /// Revoke bootstrap tokens: add a line to the revocation list a control plane follows
    /// (`strait control-plane --token-revocations FILE`); it applies within seconds.
    Revoke {
        /// The revocation list (created if missing).
        #[arg(long, value_name = "FILE")]
        list: PathBuf,
        /// Revoke this one token (its ID is read from it).
        #[arg(long, value_name = "TOKEN", conflicts_with = "service_account")]
        token: Option<String>,
        /// Revoke every token of this service account (`<namespace>/<name>`) issued until now.
        #[arg(long, value_name = "NS/NAME")]
        service_account: Option<String>,
    },
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let now = SystemTime::now();
    let mut out = std::io::stdout().lock();
    match &args.command {
        CaCommand::Init { out: dir, days } => {
            let root = cacerts::create_root(Duration::from_secs(days * 86400), now)?;
            cacerts::write_root(dir, &root)?;
            writeln!(
                out,
                "root CA created in {}: {} and {} (mode 0600; keep it offline)",
                dir.display(),
                cacerts::ROOT_CERT,
                cacerts::ROOT_KEY
            )?;
        }
        CaCommand::Intermediate {
            root,
            cluster,
            out: dir,
            days,
            also_trust,
        } => {
            let root_pair = cacerts::read_root(root)?;
            let ca = cacerts::create_intermediate(
                &root_pair,
                cluster,
                Duration::from_secs(days * 86400),
                now,
            )?;
            let mut bundle = root_pair.cert.clone();
            for extra in also_trust {
                let pem = std::fs::read_to_string(extra)
                    .with_context(|| format!("--also-trust {}", extra.display()))?;
                strait_identity::cert::parse_pem_certs(&pem, &extra.display().to_string())?;
                bundle.push_str(&pem);
            }
            cacerts::write_intermediate(dir, &ca, &bundle, &root_pair.cert)?;
            writeln!(
                out,
                "intermediate CA for cluster {cluster} created in {} (Istio's cacerts layout); run `strait control-plane --cacerts {}`",
                dir.display(),
                dir.display()
            )?;
        }
        CaCommand::Issue {
            cacerts,
            namespace,
            service_account,
            trust_domain,
            ttl,
            out: dir,
        } => {
            let files = cacerts::CaFiles::load(cacerts)?;
            let limits = strait_identity::policy::Limits {
                trust_domain: trust_domain.clone(),
                ..Default::default()
            };
            let authority = strait_identity::Authority::new(files, limits)?;
            let id = strait_identity::SpiffeId::new(trust_domain, namespace, service_account);
            let cert = authority.issue(&id, Duration::from_secs(*ttl), now)?;
            std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
            let write = |name: &str, text: &str, secret: bool| -> anyhow::Result<()> {
                let path = dir.join(name);
                if secret {
                    strait_identity::token::write_secret(&path, text)
                } else {
                    std::fs::write(&path, text)
                }
                .with_context(|| format!("cannot write {}", path.display()))
            };
            write(
                "cert-chain.pem",
                &strait_identity::cert::to_pem(&cert.chain.0),
                false,
            )?;
            write(
                "root-cert.pem",
                &strait_identity::cert::to_pem(&cert.roots),
                false,
            )?;
            write(
                "key.pem",
                &strait_identity::cert::key_to_pem(&cert.key),
                true,
            )?;
            writeln!(out, "issued {id} (valid {ttl} s) into {}", dir.display())?;
        }
        CaCommand::Token {
            key,
            namespace,
            service_account,
            cluster,
            ttl,
        } => {
            let key = TokenKey::load_or_create(key).map_err(anyhow::Error::msg)?;
            let token = key.mint(&claims(
                namespace,
                service_account,
                cluster,
                now,
                Duration::from_secs(*ttl),
            ));
            writeln!(out, "{token}")?;
        }
        CaCommand::Revoke {
            list,
            token,
            service_account,
        } => {
            let line = match (token, service_account) {
                (Some(t), _) => {
                    let c = strait_identity::token::Claims::peek(t)
                        .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
                    if c.id.is_empty() {
                        anyhow::bail!(
                            "--token: this token has no ID (minted before IDs existed); revoke its service account instead: --service-account {}/{}",
                            c.namespace,
                            c.service_account
                        );
                    }
                    format!("token {}  # {}/{}", c.id, c.namespace, c.service_account)
                }
                (None, Some(sa)) => {
                    let now_s = now
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs();
                    // Tokens minted in this very second are revoked too.
                    format!("serviceaccount {sa} {}", now_s + 1)
                }
                (None, None) => anyhow::bail!("say what to revoke: --token or --service-account"),
            };
            let mut text = std::fs::read_to_string(list).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&line);
            text.push('\n');
            // The list as it will be read back: a wrong service account is caught here.
            strait_identity::revocation::Revocations::parse(&text, &list.display().to_string())
                .map_err(anyhow::Error::msg)?;
            std::fs::write(list, &text)
                .with_context(|| format!("cannot write {}", list.display()))?;
            writeln!(out, "revoked: {line} (in {})", list.display())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
