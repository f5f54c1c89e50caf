//! Key sets of RequestAuthentications' `jwksUri`s, fetched by the control plane and sent to
//! proxies inline (Istio's default), over `http://` or `https://` (verified against the
//! system's trust roots, or the bundle `SSL_CERT_FILE` names — the variable istiod, a Go
//! program, honours too), each within its rule's `timeout` (default 5 s). Fetched again every
//! 20 minutes (Istio's refresh interval) so rotated keys are followed; a failed fetch keeps the
//! last good key set and is tried again soon; a URI never fetched has none, so the tokens of its
//! issuer are refused — Istio fails closed the same way. The same fetch (and OpenID discovery)
//! serves the CA's service-account issuers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strait_registry::Snapshot;
use tracing::{info, warn};

use crate::http_fetch;

/// Istio's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`.
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// After a failed fetch.
pub const RETRY: Duration = Duration::from_secs(10);
/// A rule's default `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Where Debian (and most Linux distributions) keep the trust roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How often key sets are fetched, and whom `https://` key servers must be vouched for by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksOptions {
    pub refresh: Duration,
    pub retry: Duration,
    /// PEM bundle of trust roots for `https://` URIs (default: the system's).
    pub trust_roots: Option<PathBuf>,
}

impl Default for JwksOptions {
    fn default() -> Self {
        JwksOptions {
            refresh: REFRESH,
            retry: RETRY,
            trust_roots: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The last key set fetched and parsed.
    text: Option<String>,
    due: Instant,
}

/// The `jwksUri`s in use and their key sets.
#[derive(Debug, Default)]
pub struct JwksFetcher {
    options: JwksOptions,
    entries: BTreeMap<String, Entry>,
}

impl JwksFetcher {
    pub fn new(options: JwksOptions) -> Self {
        JwksFetcher {
            options,
            entries: BTreeMap::new(),
        }
    }

    /// Every `jwksUri` of every cluster's RequestAuthentications, with the shortest timeout a
    /// rule gives it.
    fn wanted(snapshot: &Snapshot) -> BTreeMap<String, Duration> {
        let mut out: BTreeMap<String, Duration> = BTreeMap::new();
        let rules = snapshot
            .clusters
            .values()
            .flat_map(|c| &c.request_authentications)
            .flat_map(|ra| ra.spec.jwt_rules.iter().flatten());
        for rule in rules {
            if rule.jwks.is_some() {
                continue;
            }
            let Some(uri) = rule.jwks_uri() else { continue };
            let timeout = rule
                .timeout
                .as_ref()
                .map_or(DEFAULT_TIMEOUT, |t| t.as_std());
            let e = out.entry(uri.to_string()).or_insert(timeout);
            *e = (*e).min(timeout);
        }
        out
    }

    /// Fetches the key sets that are new or due, forgets unused ones; returns whether any
    /// URI's key set changed.
    pub async fn refresh(&mut self, snapshot: &Snapshot) -> bool {
        let wanted = Self::wanted(snapshot);
        let before = self.entries.len();
        self.entries.retain(|uri, _| wanted.contains_key(uri));
        let mut changed = self.entries.len() != before;
        let now = Instant::now();
        let roots = trust_roots(self.options.trust_roots.as_deref());
        for (uri, timeout) in wanted {
            let entry = self.entries.get(&uri);
            if entry.is_some_and(|e| e.due > now) {
                continue;
            }
            let old = entry.and_then(|e| e.text.clone());
            let next = match fetch(&uri, timeout, &roots).await {
                Ok(text) => {
                    if old.as_ref() != Some(&text) {
                        info!(jwks_uri = %uri, "fetched the key set");
                    }
                    Entry {
                        text: Some(text),
                        due: now + self.options.refresh,
                    }
                }
                Err(e) => {
                    let retry = self.options.retry.as_secs();
                    match &old {
                        Some(_) => {
                            warn!(jwks_uri = %uri, error = %e, "cannot fetch the key set; keeping the last one, trying again in {retry} s")
                        }
                        None => {
                            warn!(jwks_uri = %uri, error = %e, "cannot fetch the key set; tokens of its issuer are refused until it can be, trying again in {retry} s")
                        }
                    }
                    Entry {
                        text: old.clone(),
                        due: now + self.options.retry,
                    }
                }
            };
            changed |= next.text != old || entry.is_none();
            self.entries.insert(uri, next);
        }
        changed
    }

    /// When the first key set is due again (`None`: no URIs).
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.due).min()
    }

    /// The key sets fetched so far, by URI.
    pub fn table(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .filter_map(|(uri, e)| e.text.clone().map(|t| (uri.clone(), t)))
            .collect()
    }
}

/// `GET uri`: the body, when it is a key set.
pub async fn fetch(uri: &str, timeout: Duration, roots: &Path) -> Result<String, String> {
    get_within(uri, timeout, roots).await.and_then(|text| {
        strait_jwt::parse(&text).map_err(|e| format!("the answer is not a key set: {e}"))?;
        Ok(text)
    })
}

/// The `jwks_uri` an OpenID issuer's discovery document
/// (`<issuer>/.well-known/openid-configuration`) names.
pub async fn discover(issuer: &str, timeout: Duration, roots: &Path) -> Result<String, String> {
    let uri = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let text = get_within(&uri, timeout, roots)
        .await
        .map_err(|e| format!("{uri}: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{uri}: not JSON: {e}"))?;
    doc.get("jwks_uri")
        .and_then(|u| u.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("{uri}: no jwks_uri in the discovery document"))
}

/// The trust roots `https://` key servers are verified against: the PEM bundle given, else the
/// system's.
pub fn trust_roots(given: Option<&Path>) -> PathBuf {
    given.map_or_else(|| PathBuf::from(SYSTEM_ROOTS), Path::to_path_buf)
}

async fn get_within(uri: &str, timeout: Duration, roots: &Path) -> Result<String, String> {
    let (status, body) = http_fetch::send(
        http_fetch::Outgoing {
            method: http::Method::GET,
            uri,
            bearer: None,
            json_body: None,
        },
        timeout,
        roots,
    )
    .await
    .map_err(|e| {
        if e.starts_with("no trust roots") {
            format!("{e} (set SSL_CERT_FILE to a PEM bundle that vouches for the key server)")
        } else {
            e
        }
    })?;
    if status != http::StatusCode::OK {
        return Err(format!("answered {status}"));
    }
    Ok(body)
}
