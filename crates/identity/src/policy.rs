//! Which certificate a caller gets: the CA's decision as a pure function of who the caller
//! proved to be, what its CSR asks for and the CA's limits.
//!
//! As Istio's CA, the certificate names the caller's own identity, whatever else the CSR says;
//! unlike it, a CSR that *asks* for another identity is refused with a reason rather than
//! silently rewritten, so a misconfigured workload learns why it was not given what it asked.

use std::time::Duration;

use strait_model::SpiffeId;

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// A bootstrap token minted by the control plane for the workload.
    Token,
    /// A Kubernetes service-account token its cluster's issuer signed.
    ServiceAccountToken,
    /// The client certificate of the TLS connection (a workload renewing its certificate).
    ClientCertificate,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: SpiffeId,
    pub proof: Proof,
}

/// What the CSR asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CsrRequest {
    /// URI SANs of the CSR.
    pub uris: Vec<String>,
    /// DNS SANs of the CSR (not honoured for workloads).
    pub dns_names: Vec<String>,
    /// The CSR key's algorithm, as rcgen names it (`ECDSA_P256_SHA256`, ...).
    pub key_algorithm: KeyAlgorithm,
    /// Requested validity; zero means the CA's default.
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Rsa,
    Ed25519,
    Other,
}

/// The CA's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub trust_domain: String,
    /// Other trust domains whose identities this CA also accepts from callers (Istio's
    /// `trustDomainAliases`), e.g. while migrating; certificates are issued in `trust_domain`.
    pub trust_domain_aliases: Vec<String>,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: Vec::new(),
            default_ttl: crate::DEFAULT_WORKLOAD_TTL,
            max_ttl: crate::MAX_WORKLOAD_TTL,
        }
    }
}

/// What the CA signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub identity: SpiffeId,
    pub ttl: Duration,
}

/// Why a request is refused; `Display` is what the caller is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the CSR asks for {asked} but the caller is {caller}: a workload can only obtain its own identity (check the namespace and service account the bootstrap token was minted for)"
    )]
    NotEntitled { asked: String, caller: SpiffeId },
    #[error(
        "the caller's identity {caller} is in trust domain {}, which this CA does not serve (it serves {serves}; add the domain to trustDomainAliases to accept it)", caller.trust_domain
    )]
    ForeignTrustDomain { caller: SpiffeId, serves: String },
    #[error("the CSR's key is {0:?}; workload keys must be ECDSA P-256, P-384 or RSA")]
    UnsupportedKey(KeyAlgorithm),
    #[error(
        "requested validity {requested:?} exceeds the maximum {max:?} (Istio's MAX_WORKLOAD_CERT_TTL); ask for less"
    )]
    TtlTooLong { requested: Duration, max: Duration },
}

/// Decides what certificate `caller` gets for `csr`.
pub fn decide(caller: &Caller, csr: &CsrRequest, limits: &Limits) -> Result<Grant, Refusal> {
    let td = &caller.identity.trust_domain;
    if td != &limits.trust_domain && !limits.trust_domain_aliases.iter().any(|a| a == td) {
        return Err(Refusal::ForeignTrustDomain {
            caller: caller.identity.clone(),
            serves: limits.trust_domain.clone(),
        });
    }
    if matches!(
        csr.key_algorithm,
        KeyAlgorithm::Ed25519 | KeyAlgorithm::Other
    ) {
        return Err(Refusal::UnsupportedKey(csr.key_algorithm));
    }
    // The certificate is issued in the CA's own trust domain, for the caller's namespace and
    // service account.
    let identity = SpiffeId::new(
        &limits.trust_domain,
        &caller.identity.namespace,
        &caller.identity.service_account,
    );
    for asked in &csr.uris {
        let same = SpiffeId::parse(asked).is_some_and(|id| {
            id.namespace == identity.namespace
                && id.service_account == identity.service_account
                && (id.trust_domain == limits.trust_domain
                    || limits.trust_domain_aliases.contains(&id.trust_domain))
        });
        if !same {
            return Err(Refusal::NotEntitled {
                asked: asked.clone(),
                caller: caller.identity.clone(),
            });
        }
    }
    if let Some(asked) = csr.dns_names.first() {
        return Err(Refusal::NotEntitled {
            asked: format!("DNS name {asked}"),
            caller: caller.identity.clone(),
        });
    }
    let ttl = if csr.ttl.is_zero() {
        limits.default_ttl
    } else {
        csr.ttl
    };
    if ttl > limits.max_ttl {
        return Err(Refusal::TtlTooLong {
            requested: ttl,
            max: limits.max_ttl,
        });
    }
    Ok(Grant { identity, ttl })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(ns: &str, sa: &str) -> Caller {
        Caller {
            identity: SpiffeId::new("cluster.local", ns, sa),
            proof: Proof::Token,
        }
    }

    fn csr(uris: &[&str]) -> CsrRequest {
        CsrRequest {
            uris: uris.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_caller_gets_its_own_identity_for_the_default_lifetime() {
        let grant = decide(
            &caller("sample", "sleep"),
            &csr(&["spiffe://cluster.local/ns/sample/sa/sleep"]),
            &Limits::default(),
        )
        .expect("granted");
        assert_eq!(
            grant.identity.to_string(),
            "spiffe://cluster.local/ns/sample/sa/sleep"
        );
        assert_eq!(grant.ttl, crate::DEFAULT_WORKLOAD_TTL);
        // No SAN in the CSR: the caller's identity is still what is issued.
        let grant = decide(&caller("a", "b"), &csr(&[]), &Limits::default()).expect("granted");
        assert_eq!(grant.identity, SpiffeId::new("cluster.local", "a", "b"));
    }

    #[test]
    fn asking_for_another_namespace_or_account_is_refused() {
        for asked in [
            "spiffe://cluster.local/ns/other/sa/sleep",
            "spiffe://cluster.local/ns/sample/sa/admin",
            "spiffe://evil.example/ns/sample/sa/sleep",
            "https://example.com",
        ] {
            let err = decide(
                &caller("sample", "sleep"),
                &csr(&[asked]),
                &Limits::default(),
            )
            .expect_err(asked);
            assert!(matches!(err, Refusal::NotEntitled { .. }), "{asked}: {err}");
            assert!(err.to_string().contains(asked));
        }
        let dns = CsrRequest {
            dns_names: vec!["istiod.istio-system.svc".into()],
            ..Default::default()
        };
        assert!(decide(&caller("a", "b"), &dns, &Limits::default()).is_err());
    }

    #[test]
    fn validity_is_capped_and_trust_domains_checked() {
        let long = CsrRequest {
            ttl: Duration::from_secs(91 * 86400),
            ..Default::default()
        };
        assert!(matches!(
            decide(&caller("a", "b"), &long, &Limits::default()),
            Err(Refusal::TtlTooLong { .. })
        ));
        let short = CsrRequest {
            ttl: Duration::from_secs(600),
            ..Default::default()
        };
        assert_eq!(
            decide(&caller("a", "b"), &short, &Limits::default()).map(|g| g.ttl),
            Ok(Duration::from_secs(600))
        );
        let foreign = Caller {
            identity: SpiffeId::new("old.local", "a", "b"),
            proof: Proof::ClientCertificate,
        };
        assert!(matches!(
            decide(&foreign, &csr(&[]), &Limits::default()),
            Err(Refusal::ForeignTrustDomain { .. })
        ));
        let limits = Limits {
            trust_domain_aliases: vec!["old.local".into()],
            ..Limits::default()
        };
        let grant = decide(&foreign, &csr(&[]), &limits).expect("alias accepted");
        assert_eq!(grant.identity.trust_domain, "cluster.local");
        let ed = CsrRequest {
            key_algorithm: KeyAlgorithm::Ed25519,
            ..Default::default()
        };
        assert!(decide(&caller("a", "b"), &ed, &Limits::default()).is_err());
    }
}
