//! The CA's TokenReview round trip (`--token-review-server`): a service-account token no trusted
//! issuer's keys verify is posted to the Kubernetes API server, as Istio's CA does, with the
//! control plane's own credentials — its service-account token, read again for every review
//! (the kubelet rotates it), and the cluster's CA bundle for the server's certificate.

use std::path::PathBuf;
use std::time::Duration;

use strait_identity::service_account::{DEFAULT_AUDIENCE, ServiceAccount};
use strait_identity::token_review::{self, TokenReviewer};
use strait_xds_server::http_fetch;

/// How long one review may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// An API server that reviews tokens.
#[derive(Debug, Clone)]
pub struct ApiServerReview {
    /// `https://<api server>[:port]`.
    pub server: String,
    /// The control plane's own bearer token.
    pub token_file: PathBuf,
    /// PEM bundle the API server's certificate must chain to.
    pub ca_file: PathBuf,
    /// Audiences the CA accepts (empty: Istio's `istio-ca`).
    pub audiences: Vec<String>,
}

impl ApiServerReview {
    /// Checks the settings before the first review needs them.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.server.starts_with("https://") {
            anyhow::bail!(
                "--token-review-server {}: write the API server's https:// URL (the review carries tokens)",
                self.server
            );
        }
        for (file, flag) in [
            (&self.token_file, "--token-review-token"),
            (&self.ca_file, "--token-review-ca"),
        ] {
            if let Err(e) = std::fs::metadata(file) {
                anyhow::bail!("{flag} {}: {e}", file.display());
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl TokenReviewer for ApiServerReview {
    async fn review(&self, token: &str) -> Result<ServiceAccount, String> {
        // A small local file: read in place.
        let own = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("cannot read {}: {e}", self.token_file.display()))?;
        let audiences = if self.audiences.is_empty() {
            vec![DEFAULT_AUDIENCE.to_string()]
        } else {
            self.audiences.clone()
        };
        let uri = format!(
            "{}{}",
            self.server.trim_end_matches('/'),
            token_review::PATH
        );
        let (status, body) = http_fetch::send(
            http_fetch::Outgoing {
                method: http::Method::POST,
                uri: &uri,
                bearer: Some(own.trim()),
                json_body: Some(token_review::request(token, &audiences)),
            },
            TIMEOUT,
            &self.ca_file,
        )
        .await
        .map_err(|e| format!("{uri}: {e}"))?;
        if !status.is_success() {
            let reason = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_default();
            return Err(format!("{uri} answered {status} {reason}"));
        }
        token_review::answer(&body, &audiences)
    }
}
