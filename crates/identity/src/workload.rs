//! The workload side of identity: obtains a certificate for the workload's SPIFFE identity
//! from the CA (key generated here, never sent), keeps it current by renewing at about half its
//! lifetime with jitter, and publishes each new certificate and trust bundle to whoever serves
//! TLS with it (Istio's SDS secrets `default` and `ROOTCA`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tonic::metadata::MetadataValue;

use crate::authority::new_csr;
use crate::cacerts::is_self_signed;
use crate::cert::{CertInfo, parse_pem_certs};
use crate::pb::IstioCertificateRequest;
use crate::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::tls;
use crate::transport::{ChannelOptions, connect_channel};
use crate::{CertChain, SpiffeId, WorkloadCert};

/// Where and how a workload asks for its certificate.
#[derive(Debug, Clone)]
pub struct CaClientOptions {
    /// The CA's address (`host:port`, Istio's `CA_ADDR`, usually the control plane's 15012).
    pub address: String,
    /// The name the CA's serving certificate must carry (`istiod.istio-system.svc`).
    pub server_name: String,
    /// Roots that verify the CA before the workload has a trust bundle of its own
    /// (Istio's `root-cert.pem` from the `istio-ca-root-cert` ConfigMap).
    pub bootstrap_roots: Vec<CertificateDer<'static>>,
    /// The bootstrap token file, re-read on every request so it can be replaced.
    pub token_file: Option<PathBuf>,
    pub identity: SpiffeId,
    /// Requested lifetime (zero: the CA's default, 24 h).
    pub ttl: Duration,
    /// `SO_MARK` for the connection (so capture lets it out).
    pub mark: Option<u32>,
}

/// Asks the CA for a certificate, presenting `current` (if any) as the client certificate.
pub async fn request_certificate(
    options: &CaClientOptions,
    current: Option<&WorkloadCert>,
) -> Result<WorkloadCert, String> {
    let config =
        tls::control_plane_client_config(&options.server_name, &options.bootstrap_roots, current)
            .map_err(|e| e.to_string())?;
    let channel = connect_channel(
        &options.address,
        ChannelOptions {
            mark: options.mark,
            tls: Some((config, options.server_name.clone())),
            keepalive: None,
        },
    )
    .await?;
    let (key, csr) = new_csr(&options.identity).map_err(|e| format!("cannot create a CSR: {e}"))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: options.ttl.as_secs() as i64,
        metadata: None,
    });
    if let Some(path) = &options.token_file {
        match std::fs::read_to_string(path) {
            Ok(token) => {
                let value =
                    MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|e| {
                        format!("{}: the token is not a header value: {e}", path.display())
                    })?;
                request.metadata_mut().insert("authorization", value);
            }
            // A renewal can go ahead on the current certificate alone.
            Err(e) if current.is_some() => {
                tracing::debug!(file = %path.display(), error = %e, "no bootstrap token; renewing with the current certificate");
            }
            Err(e) => {
                return Err(format!(
                    "{}: cannot read the bootstrap token: {e}",
                    path.display()
                ));
            }
        }
    }
    let response = IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await
        .map_err(|s| format!("the CA refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    assemble(key, &response.cert_chain, &options.identity)
}

/// Splits the CA's answer into the chain to present and the roots to trust, and checks that the
/// leaf is ours: our identity, our key.
fn assemble(
    key: rcgen::KeyPair,
    pems: &[String],
    identity: &SpiffeId,
) -> Result<WorkloadCert, String> {
    let mut chain = Vec::new();
    let mut roots = Vec::new();
    for pem in pems {
        for cert in parse_pem_certs(pem, "the CA's answer").map_err(|e| e.to_string())? {
            if is_self_signed(&cert) {
                roots.push(cert);
            } else {
                chain.push(cert);
            }
        }
    }
    let leaf = chain
        .first()
        .ok_or("the CA answered without a certificate")?;
    let info = CertInfo::of(leaf).map_err(|e| e.to_string())?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err("the CA's certificate is not for the key this workload sent".into());
    }
    let granted = info
        .spiffe_ids
        .first()
        .cloned()
        .ok_or("the CA's certificate has no SPIFFE identity")?;
    if granted.namespace != identity.namespace
        || granted.service_account != identity.service_account
    {
        return Err(format!("the CA issued {granted}, not {identity}"));
    }
    if roots.is_empty() {
        return Err("the CA's answer has no root certificate".into());
    }
    Ok(WorkloadCert {
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        chain: CertChain(chain),
        roots,
        identity: granted,
        not_before: info.not_before,
        not_after: info.not_after,
    })
}

/// When the next renewal is due: about half the lifetime left (45 % to 55 %) so a fleet
/// issued at once does not renew at once. The lifetime counts from when the certificate arrived,
/// not from its `not_before`, which the CA backdates a minute for clock skew: a short-lived
/// certificate would otherwise look half-spent on arrival and be renewed again and again.
pub fn renewal_delay(cert: &WorkloadCert, now: SystemTime, jitter: f64) -> Duration {
    delay_within(cert.not_before, cert.not_after, now, jitter)
}

fn delay_within(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let fraction = 0.5 + (jitter.clamp(0.0, 1.0) - 0.5) * 0.1;
    not_after
        .duration_since(now.max(not_before))
        .unwrap_or_default()
        .mul_f64(fraction)
}

/// Keeps the workload's certificate current and publishes it.
pub struct IdentityManager {
    options: CaClientOptions,
    tx: watch::Sender<Option<Arc<WorkloadCert>>>,
}

impl IdentityManager {
    pub fn new(options: CaClientOptions) -> (Self, watch::Receiver<Option<Arc<WorkloadCert>>>) {
        let (tx, rx) = watch::channel(None);
        (Self { options, tx }, rx)
    }

    /// Runs until `stop` fires: fetch, wait until renewal, renew; failures retry with backoff
    /// (1 s doubling to 30 s) while the current certificate keeps serving.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let current = self.tx.borrow().clone();
            let wait = match request_certificate(&self.options, current.as_deref()).await {
                Ok(cert) => {
                    backoff = Duration::from_secs(1);
                    let delay = renewal_delay(&cert, SystemTime::now(), fastrand::f64());
                    tracing::info!(
                        identity = %cert.identity,
                        expires_in_s = cert.not_after.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
                        renew_in_s = delay.as_secs(),
                        roots = cert.roots.len(),
                        "workload certificate issued"
                    );
                    self.tx.send_replace(Some(Arc::new(cert)));
                    delay
                }
                Err(e) => {
                    let left = current
                        .as_ref()
                        .and_then(|c| c.not_after.duration_since(SystemTime::now()).ok());
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, current_valid_for_s = left.map(|d| d.as_secs()), "cannot obtain a workload certificate");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_half_the_lifetime_left_not_of_the_backdated_one() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // A 4-second certificate, backdated a minute by the CA.
        let delay = delay_within(
            now - Duration::from_secs(60),
            now + Duration::from_secs(4),
            now,
            0.5,
        );
        assert_eq!(delay, Duration::from_secs(2));
        // A day-long one, with the jitter at its ends: 45 % .. 55 %.
        let day = Duration::from_secs(86_400);
        let early = delay_within(now - Duration::from_secs(60), now + day, now, 0.0);
        let late = delay_within(now - Duration::from_secs(60), now + day, now, 1.0);
        assert_eq!(early, day.mul_f64(0.45));
        assert_eq!(late, day.mul_f64(0.55));
        // Already expired: renew at once.
        assert_eq!(
            delay_within(now - day, now - Duration::from_secs(1), now, 0.5),
            Duration::ZERO
        );
    }
}
