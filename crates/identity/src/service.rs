//! Istio's certificate service (`istio.v1.auth.IstioCertificateService/CreateCertificate`)
//! over gRPC: authenticates the caller (a bootstrap token, a Kubernetes service-account token of a
//! trusted issuer or one the API server vouches for, or the mesh certificate it renews with),
//! lets the policy decide, signs with the current authority.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tonic::{Request, Response, Status};

use crate::authority::{Authority, SignError};
use crate::pb::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::pb::{IstioCertificateRequest, IstioCertificateResponse};
use crate::policy::{Caller, Proof};
use crate::service_account::{self, ServiceAccountIssuer};
use crate::token::TokenKey;
use crate::token_review::TokenReviewer;
use crate::transport::PeerInfo;
use crate::{SpiffeId, tls};

/// The certificate service.
#[derive(Clone)]
pub struct CaService {
    authority: Arc<ArcSwap<Authority>>,
    tokens: Option<Arc<TokenKey>>,
    service_accounts: Arc<ArcSwap<Vec<ServiceAccountIssuer>>>,
    reviewer: Option<Arc<dyn TokenReviewer>>,
}

impl CaService {
    /// `tokens`: the key bootstrap tokens are checked with; without it only callers holding a
    /// mesh certificate (renewals) are served.
    pub fn new(authority: Arc<ArcSwap<Authority>>, tokens: Option<Arc<TokenKey>>) -> Self {
        Self {
            authority,
            tokens,
            service_accounts: Arc::default(),
            reviewer: None,
        }
    }

    /// Also accepts service-account tokens `reviewer` (the API server) vouches for — those no
    /// trusted issuer's keys verify.
    pub fn with_token_review(mut self, reviewer: Arc<dyn TokenReviewer>) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    /// Also accepts Kubernetes service-account tokens signed by one of `issuers` (whoever
    /// holds the other end may replace them, as an issuer's keys rotate).
    pub fn with_service_account_issuers(
        mut self,
        issuers: Arc<ArcSwap<Vec<ServiceAccountIssuer>>>,
    ) -> Self {
        self.service_accounts = issuers;
        self
    }

    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    /// Who a bearer token says the caller is: a bootstrap token (`strait1.`) checked with the
    /// token key, any other a Kubernetes service-account token — verified with a trusted
    /// issuer's keys, else reviewed by the API server.
    async fn token_caller(
        &self,
        token: &str,
        trust_domain: &str,
        now: SystemTime,
    ) -> Result<Caller, String> {
        if token.starts_with(crate::token::PREFIX) {
            let key = self.tokens.as_ref().ok_or(
                "bootstrap tokens are not accepted by this control plane (it runs without --token-key)",
            )?;
            let claims = key
                .verify(token, now)
                .map_err(|e| format!("bootstrap token: {e}"))?;
            return Ok(Caller {
                identity: SpiffeId::new(trust_domain, &claims.namespace, &claims.service_account),
                proof: Proof::Token,
            });
        }
        let issuers = self.service_accounts.load_full();
        let offline = if issuers.is_empty() {
            None
        } else {
            Some(service_account::verify(&issuers, token, now))
        };
        let sa = match (offline, &self.reviewer) {
            (Some(Ok(sa)), _) => sa,
            (Some(Err(e)), None) => return Err(format!("service-account token: {e}")),
            (None, None) => {
                return Err("not a bootstrap token, and this control plane trusts no service-account issuer (--service-account-issuer) and reviews no tokens (--token-review-server)".into());
            }
            (offline, Some(reviewer)) => {
                reviewer.review(token).await.map_err(|e| match offline {
                    Some(Err(o)) => format!("service-account token: {o}; TokenReview: {e}"),
                    _ => format!("service-account token: TokenReview: {e}"),
                })?
            }
        };
        Ok(Caller {
            identity: SpiffeId::new(trust_domain, &sa.namespace, &sa.name),
            proof: Proof::ServiceAccountToken,
        })
    }

    /// Who is calling: a valid bearer token, else a verified client certificate.
    pub async fn authenticate<T>(
        &self,
        request: &Request<T>,
        now: SystemTime,
    ) -> Result<Caller, Status> {
        let trust_domain = self.authority.load().limits.trust_domain.clone();
        let mut reasons = Vec::new();
        let token = request.metadata().get("authorization").map(|value| {
            value
                .to_str()
                .unwrap_or_default()
                .trim()
                .strip_prefix("Bearer ")
                .unwrap_or_default()
                .to_string()
        });
        let certs = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.certs.clone())
            .unwrap_or_default();
        if let Some(token) = token {
            match self.token_caller(&token, &trust_domain, now).await {
                Ok(caller) => return Ok(caller),
                Err(reason) => reasons.push(reason),
            }
        }
        if !certs.is_empty() {
            match tls::peer_identity(&certs) {
                Some(identity) => {
                    return Ok(Caller {
                        identity,
                        proof: Proof::ClientCertificate,
                    });
                }
                None => reasons.push("the client certificate has no SPIFFE identity".into()),
            }
        }
        if reasons.is_empty() {
            reasons.push(
                "no credentials: send a bootstrap token (authorization: Bearer <token>) or connect with a mesh certificate"
                    .into(),
            );
        }
        Err(Status::unauthenticated(reasons.join("; ")))
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let now = SystemTime::now();
        let caller = match self.authenticate(&request, now).await {
            Ok(c) => c,
            Err(status) => {
                tracing::warn!(
                    reason = status.message(),
                    "certificate request not authenticated"
                );
                return Err(status);
            }
        };
        let body = request.into_inner();
        let ttl = Duration::from_secs(body.validity_duration.max(0) as u64);
        let authority = self.authority.load_full();
        match authority.sign_csr(&body.csr, &caller, ttl, now) {
            Ok(cert_chain) => {
                tracing::debug!(identity = %caller.identity, proof = ?caller.proof, "certificate issued");
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(e) => {
                tracing::warn!(caller = %caller.identity, reason = %e, "certificate refused");
                Err(match e {
                    SignError::BadCsr(_) => Status::invalid_argument(e.to_string()),
                    SignError::Refused(_) => Status::permission_denied(e.to_string()),
                    SignError::Signing(_) => Status::internal(e.to_string()),
                })
            }
        }
    }
}
