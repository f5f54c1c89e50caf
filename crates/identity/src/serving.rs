//! The control plane's own TLS on 15012: a serving certificate from its authority (DNS names as
//! istiod's, `istiod.<namespace>.svc`), renewed before it expires, and the trust bundle it
//! verifies client certificates with — both follow the authority when its files change.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use crate::SpiffeId;
use crate::authority::Authority;
use crate::tls::{self, ClientAuth};

/// Lifetime of the control plane's serving certificate.
pub const SERVING_TTL: Duration = Duration::from_secs(24 * 3600);

/// Names the serving certificate carries.
#[derive(Debug, Clone)]
pub struct ServingNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub identity: SpiffeId,
}

impl ServingNames {
    /// istiod's names in `namespace`, plus `extra` DNS names and `localhost`.
    pub fn istiod(trust_domain: &str, namespace: &str, extra: &[String]) -> Self {
        let mut dns = vec![
            format!("istiod.{namespace}.svc"),
            format!("istiod.{namespace}.svc.cluster.local"),
            "localhost".to_string(),
        ];
        for name in extra {
            if !dns.contains(name) {
                dns.push(name.clone());
            }
        }
        Self {
            dns,
            ips: vec![
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ],
            identity: SpiffeId::new(trust_domain, namespace, "istiod"),
        }
    }
}

/// A TLS server configuration (h2, client certificates optional) with a fresh serving
/// certificate from `authority`.
pub fn serving_config(
    authority: &Authority,
    names: &ServingNames,
    now: SystemTime,
) -> Result<Arc<ServerConfig>, String> {
    let cert = authority
        .issue_server(&names.dns, &names.ips, &names.identity, SERVING_TTL, now)
        .map_err(|e| format!("cannot issue the control plane's serving certificate: {e}"))?;
    let roots = tls::root_store(authority.roots()).map_err(|e| e.to_string())?;
    let key = tls::certified_key(&cert).map_err(|e| e.to_string())?;
    tls::server_config(key, roots, ClientAuth::Optional, &[b"h2"]).map_err(|e| e.to_string())
}

/// Re-issues the serving configuration every `SERVING_TTL / 2`, and whenever `changed` fires
/// (the authority was reloaded), until `stop`.
pub async fn keep_serving_config(
    authority: Arc<ArcSwap<Authority>>,
    names: ServingNames,
    config: Arc<ArcSwap<ServerConfig>>,
    mut changed: tokio::sync::watch::Receiver<u64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SERVING_TTL / 2) => {}
            r = changed.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        match serving_config(&authority.load(), &names, SystemTime::now()) {
            Ok(c) => config.store(c),
            Err(e) => tracing::error!(error = %e, "keeping the previous serving certificate"),
        }
    }
}

/// Polls the `cacerts` directory every `every` and swaps in a new authority when its files
/// change (a rotated intermediate, a root added to or removed from `root-cert.pem`). A change
/// that does not load keeps the current authority and logs why; `changed` counts the swaps.
pub async fn reload_authority_on_change(
    dir: std::path::PathBuf,
    authority: Arc<ArcSwap<Authority>>,
    changed: tokio::sync::watch::Sender<u64>,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let files = [
        crate::cacerts::CA_CERT,
        crate::cacerts::CA_KEY,
        crate::cacerts::ROOT_CERT,
        crate::cacerts::CERT_CHAIN,
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    on_file_change(files, every, stop, || {
        let limits = authority.load().limits.clone();
        match crate::cacerts::CaFiles::load(&dir)
            .map_err(|e| e.to_string())
            .and_then(|files| Authority::new(files, limits).map_err(|e| e.to_string()))
        {
            Ok(a) => {
                tracing::info!(dir = %dir.display(), roots = a.roots().len(), "CA material reloaded");
                authority.store(Arc::new(a));
                changed.send_modify(|n| *n += 1);
            }
            Err(e) => {
                tracing::error!(error = %e, "CA material changed but cannot be used; still signing with the previous material")
            }
        }
    })
    .await;
}

/// Calls `changed` whenever the content of `files` differs from the last look (a missing file
/// counts as a content of its own), looking every `every`, until `stop`. How the control plane
/// follows files it was given — CA material, revocation lists, key sets — without a restart.
pub async fn on_file_change(
    files: Vec<std::path::PathBuf>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut changed: impl FnMut(),
) {
    let contents =
        || -> Vec<Option<Vec<u8>>> { files.iter().map(|f| std::fs::read(f).ok()).collect() };
    let mut last = contents();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let now = contents();
        if now != last {
            last = now;
            changed();
        }
    }
}

/// Reads the revocation list at `path` into `key` now (an unreadable or wrong file is an error
/// then), and again whenever the file changes (checked every `every`): a wrong file is reported
/// and the previous list stays; a missing file revokes nothing.
pub fn load_revocations(
    path: &std::path::Path,
    key: &crate::token::TokenKey,
) -> Result<usize, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
    };
    let list = crate::revocation::Revocations::parse(&text, &path.display().to_string())?;
    let n = list.len();
    key.set_revocations(list);
    Ok(n)
}

/// Follows the revocation list at `path` (see [`load_revocations`]) until `stop`.
pub async fn reload_revocations_on_change(
    path: std::path::PathBuf,
    key: Arc<crate::token::TokenKey>,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    on_file_change(vec![path.clone()], every, stop, || {
        match load_revocations(&path, &key) {
            Ok(n) => {
                tracing::info!(file = %path.display(), entries = n, "token revocations reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "token revocations changed but cannot be read; the previous list stays")
            }
        }
    })
    .await;
}
