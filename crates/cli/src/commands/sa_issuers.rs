//! The Kubernetes service-account token issuers the CA accepts (`--service-account-issuer`),
//! and following their public keys as they rotate: a key set file is re-read when it changes;
//! a key set URL, or the one an issuer's OpenID discovery document names, is fetched again
//! every refresh interval (sooner after a failure). A key set that cannot be read or used keeps
//! the last good one in effect; an issuer whose keys were never fetched has its tokens refused.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use strait_identity::service_account::ServiceAccountIssuer;
use strait_xds_server::jwks_fetch;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often key set files are looked at.
const FILE_POLL: Duration = Duration::from_secs(2);

/// Where an issuer's public keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    /// A key set URL (the API server's `/openid/v1/jwks`).
    Url(String),
    /// The `jwks_uri` of the issuer's discovery document.
    Discovery,
}

/// What one `--service-account-issuer` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSpec {
    spec: String,
    issuer: String,
    keys: KeySource,
}

/// Parses `ISSUER=JWKS_FILE`, `ISSUER=JWKS_URL` or `ISSUER` (an `https://` issuer whose keys
/// its discovery document names).
pub fn parse(specs: &[String]) -> anyhow::Result<Vec<IssuerSpec>> {
    let is_url = |s: &str| s.starts_with("https://") || s.starts_with("http://");
    specs
        .iter()
        .map(|spec| {
            let (issuer, keys) = match spec.split_once('=') {
                Some((issuer, url)) if is_url(url) => (issuer, KeySource::Url(url.to_string())),
                Some((issuer, file)) if !file.is_empty() => {
                    (issuer, KeySource::File(PathBuf::from(file)))
                }
                None if is_url(spec) => (spec.as_str(), KeySource::Discovery),
                _ => bail!(
                    "--service-account-issuer {spec}: expected ISSUER=JWKS_FILE, ISSUER=JWKS_URL, or an http(s):// ISSUER whose discovery document names its keys"
                ),
            };
            if issuer.is_empty() {
                bail!("--service-account-issuer {spec}: the issuer is empty");
            }
            Ok(IssuerSpec {
                spec: spec.clone(),
                issuer: issuer.to_string(),
                keys,
            })
        })
        .collect()
}

/// The issuers and the key set text last fetched or read for each.
struct Followed {
    specs: Vec<IssuerSpec>,
    audiences: Vec<String>,
    texts: Mutex<Vec<Option<String>>>,
    current: Arc<ArcSwap<Vec<ServiceAccountIssuer>>>,
    roots: PathBuf,
}

/// Reads the issuers' key set files (an unreadable or unusable one is an error) and fetches
/// their URLs (one that cannot be fetched yet is retried: its tokens are refused meanwhile),
/// then follows both until `stop`. The returned list is what the CA checks tokens against.
pub async fn follow(
    specs: Vec<IssuerSpec>,
    audiences: Vec<String>,
    trust_roots: Option<&Path>,
    refresh: Duration,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Arc<ArcSwap<Vec<ServiceAccountIssuer>>>> {
    let followed = Arc::new(Followed {
        texts: Mutex::new(vec![None; specs.len()]),
        specs,
        audiences,
        current: Arc::new(ArcSwap::from_pointee(Vec::new())),
        roots: jwks_fetch::trust_roots(trust_roots),
    });
    let files = followed.read_files()?;
    followed.set_files(files)?;
    let fetched = followed.fetch_urls().await;
    let current = followed.current.clone();
    if !followed.specs.is_empty() {
        info!(
            issuers = ?current.load().iter().map(|i| i.issuer.as_str()).collect::<Vec<_>>(),
            "the CA accepts Kubernetes service-account tokens of these issuers"
        );
    }
    let paths: Vec<PathBuf> = followed
        .specs
        .iter()
        .filter_map(|s| match &s.keys {
            KeySource::File(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    if !paths.is_empty() {
        let on_change = followed.clone();
        tokio::spawn(strait_identity::serving::on_file_change(
            paths,
            FILE_POLL,
            stop.clone(),
            move || match on_change.read_files().and_then(|f| on_change.set_files(f)) {
                Ok(()) => info!("service-account issuers' key sets reloaded"),
                Err(e) => {
                    error!(error = %format!("{e:#}"), "a service-account issuer's key set changed but cannot be used; the previous key sets stay in effect")
                }
            },
        ));
    }
    if followed
        .specs
        .iter()
        .any(|s| !matches!(s.keys, KeySource::File(_)))
    {
        tokio::spawn(refetch(followed, fetched, refresh, stop));
    }
    Ok(current)
}

/// Fetches the URL issuers' key sets every `refresh` (every 10 s while one fails) until `stop`.
async fn refetch(
    followed: Arc<Followed>,
    mut all_fetched: bool,
    refresh: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wait = if all_fetched {
            refresh
        } else {
            jwks_fetch::RETRY
        };
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        all_fetched = followed.fetch_urls().await;
    }
}

impl Followed {
    /// The key set file of each issuer that has one.
    fn read_files(&self) -> anyhow::Result<Vec<(usize, String)>> {
        let mut read = Vec::new();
        for (i, s) in self.specs.iter().enumerate() {
            if let KeySource::File(path) = &s.keys {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "--service-account-issuer {}: cannot read the key set {}",
                        s.spec,
                        path.display()
                    )
                })?;
                read.push((i, text));
            }
        }
        Ok(read)
    }

    /// Puts new key sets in effect, all or none.
    fn set_files(&self, read: Vec<(usize, String)>) -> anyhow::Result<()> {
        let mut texts = self.texts.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = texts.clone();
        for (i, text) in read {
            next[i] = Some(text);
        }
        let issuers = self.build(&next)?;
        *texts = next;
        self.current.store(Arc::new(issuers));
        Ok(())
    }

    /// Fetches every URL issuer's key set; those fetched and usable take effect, the others
    /// keep their last one. Returns whether all were fetched.
    async fn fetch_urls(&self) -> bool {
        let mut all = true;
        for (i, s) in self.specs.iter().enumerate() {
            let uri = match &s.keys {
                KeySource::File(_) => continue,
                KeySource::Url(url) => Ok(url.clone()),
                KeySource::Discovery => {
                    jwks_fetch::discover(&s.issuer, FETCH_TIMEOUT, &self.roots).await
                }
            };
            let fetched = match uri {
                Ok(uri) => jwks_fetch::fetch(&uri, FETCH_TIMEOUT, &self.roots)
                    .await
                    .map_err(|e| format!("{uri}: {e}")),
                Err(e) => Err(e),
            };
            let text = match fetched {
                Ok(text) => text,
                Err(e) => {
                    all = false;
                    warn!(issuer = %s.issuer, error = %e, "cannot fetch the service-account issuer's key set; its last one stays in effect (none: its tokens are refused), trying again in {} s", jwks_fetch::RETRY.as_secs());
                    continue;
                }
            };
            let mut texts = self.texts.lock().unwrap_or_else(|e| e.into_inner());
            if texts[i].as_ref() == Some(&text) {
                continue;
            }
            let mut next = texts.clone();
            next[i] = Some(text);
            match self.build(&next) {
                Ok(issuers) => {
                    *texts = next;
                    self.current.store(Arc::new(issuers));
                    info!(issuer = %s.issuer, "fetched the service-account issuer's key set");
                }
                Err(e) => {
                    all = false;
                    warn!(issuer = %s.issuer, error = %format!("{e:#}"), "the service-account issuer's fetched key set cannot be used; its last one stays in effect");
                }
            }
        }
        all
    }

    /// The issuers whose key sets are known.
    fn build(&self, texts: &[Option<String>]) -> anyhow::Result<Vec<ServiceAccountIssuer>> {
        self.specs
            .iter()
            .zip(texts)
            .filter_map(|(s, text)| text.as_ref().map(|t| (s, t)))
            .map(|(s, text)| {
                ServiceAccountIssuer::new(&s.issuer, text, &self.audiences)
                    .map_err(|e| anyhow::anyhow!("--service-account-issuer {}: {e}", s.spec))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> anyhow::Result<IssuerSpec> {
        parse(&[spec.to_string()]).map(|mut v| v.remove(0))
    }

    #[test]
    fn specs_name_a_file_a_url_or_an_issuer_to_discover() {
        let file = one("https://kubernetes.default.svc=/etc/jwks.json").unwrap();
        assert_eq!(file.issuer, "https://kubernetes.default.svc");
        assert_eq!(file.keys, KeySource::File("/etc/jwks.json".into()));
        let url = one("https://k8s.example=https://k8s.example:6443/openid/v1/jwks").unwrap();
        assert_eq!(
            url.keys,
            KeySource::Url("https://k8s.example:6443/openid/v1/jwks".into())
        );
        let discovered = one("https://oidc.example/cluster1").unwrap();
        assert_eq!(discovered.issuer, "https://oidc.example/cluster1");
        assert_eq!(discovered.keys, KeySource::Discovery);
        for bad in ["kubernetes", "=jwks.json", "issuer="] {
            let e = one(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("--service-account-issuer {bad}")),
                "{e}"
            );
        }
    }
}
