//! The signing CA: turns an approved CSR into a workload certificate, and issues the control
//! plane's own serving certificate.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;

use crate::cacerts::{CaFiles, random_serial};
use crate::cert::{CertInfo, parse_pem_certs, to_pem};
use crate::policy::{self, Caller, CsrRequest, Grant, KeyAlgorithm, Limits, Refusal};
use crate::{SpiffeId, WorkloadCert};

/// Why a certificate was not issued; `Display` is what the caller is told.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(
        "the CSR cannot be used: {0} (send a PEM PKCS#10 request signed by its key, with only a URI SAN)"
    )]
    BadCsr(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the CA could not sign: {0}")]
    Signing(String),
}

/// A cluster's signing CA.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// Sent after the leaf: the signing CA and every intermediate above it.
    intermediates: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    ca_not_after: SystemTime,
    pub limits: Limits,
    /// Where the material came from, for messages (`None`: generated in memory).
    pub source: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("source", &self.source)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl Authority {
    pub fn new(files: CaFiles, limits: Limits) -> Result<Self, SignError> {
        let key =
            KeyPair::from_pem(&files.ca.key).map_err(|e| SignError::Signing(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&files.ca.cert, key)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        let ca_der = parse_pem_certs(&files.ca.cert, "ca-cert.pem")
            .map_err(|e| SignError::Signing(e.to_string()))?;
        let ca_not_after = CertInfo::of(&ca_der[0])
            .map_err(|e| SignError::Signing(e.to_string()))?
            .not_after;
        Ok(Self {
            issuer,
            intermediates: files.intermediates,
            roots: files.roots,
            ca_not_after,
            limits,
            source: files.dir,
        })
    }

    /// The roots workloads trust.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Signs `csr_pem` for `caller` after the policy approves it. Returns the chain as Istio's
    /// service does: the leaf, the intermediates, then the roots, one PEM certificate each.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        caller: &Caller,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<String>, SignError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| SignError::BadCsr(e.to_string()))?;
        let (uris, dns_names) = requested_names(&csr.params.subject_alt_names);
        let request = CsrRequest {
            uris,
            dns_names,
            key_algorithm: key_algorithm(csr.public_key.algorithm()),
            ttl,
        };
        let grant = policy::decide(caller, &request, &self.limits)?;
        csr.params = self.workload_params(&grant, now)?;
        let leaf = csr
            .signed_by(&self.issuer)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        Ok(self.chain_with(leaf.der().clone()))
    }

    fn chain_with(&self, leaf: CertificateDer<'static>) -> Vec<String> {
        std::iter::once(&leaf)
            .chain(&self.intermediates)
            .chain(&self.roots)
            .map(|c| to_pem(std::slice::from_ref(c)))
            .collect()
    }

    fn workload_params(
        &self,
        grant: &Grant,
        now: SystemTime,
    ) -> Result<CertificateParams, SignError> {
        let mut params = self.leaf_params(now, grant.ttl);
        let uri = grant
            .identity
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| SignError::Signing(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        Ok(params)
    }

    fn leaf_params(&self, now: SystemTime, ttl: Duration) -> CertificateParams {
        let mut params = CertificateParams::default();
        // An empty subject, as Istio's workload certificates: the identity is the URI SAN
        // (which rcgen then marks critical, per RFC 5280).
        params.distinguished_name = DistinguishedName::new();
        // Tolerate a minute of clock skew between peers.
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + ttl).min(self.ca_not_after).into();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params
    }

    /// Issues a certificate and key for `identity` directly (the control plane's own workloads,
    /// tests and benchmarks); workloads use [`Authority::sign_csr`].
    pub fn issue(
        &self,
        identity: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<WorkloadCert, SignError> {
        let grant = Grant {
            identity: identity.clone(),
            ttl,
        };
        let params = self.workload_params(&grant, now)?;
        self.sign_with_new_key(&params, identity)
    }

    /// The serving certificate of the control plane (xDS and CA on 15012): DNS and IP SANs, as
    /// istiod's `istiod.<namespace>.svc`.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        identity: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<WorkloadCert, SignError> {
        let mut params = self.leaf_params(now, ttl);
        for d in dns_names {
            let name = d
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| SignError::Signing(format!("DNS name {d}: {e}")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| SignError::Signing(e.to_string()))?;
        params.subject_alt_names.push(SanType::URI(uri));
        self.sign_with_new_key(&params, identity)
    }

    /// A new P-256 key and its certificate from `params`.
    fn sign_with_new_key(
        &self,
        params: &CertificateParams,
        identity: &SpiffeId,
    ) -> Result<WorkloadCert, SignError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        self.assemble(key, cert.der().clone(), identity.clone())
    }

    fn assemble(
        &self,
        key: KeyPair,
        leaf: CertificateDer<'static>,
        identity: SpiffeId,
    ) -> Result<WorkloadCert, SignError> {
        let info = CertInfo::of(&leaf).map_err(|e| SignError::Signing(e.to_string()))?;
        let mut chain = vec![leaf];
        chain.extend(self.intermediates.iter().cloned());
        Ok(WorkloadCert {
            key: rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            chain: crate::CertChain(chain),
            roots: self.roots.clone(),
            identity,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }
}

/// The URI and DNS SANs a CSR asks for.
fn requested_names(sans: &[SanType]) -> (Vec<String>, Vec<String>) {
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    for san in sans {
        match san {
            SanType::URI(u) => uris.push(u.as_str().to_string()),
            SanType::DnsName(d) => dns.push(d.as_str().to_string()),
            _ => {}
        }
    }
    (uris, dns)
}

fn key_algorithm(alg: &rcgen::SignatureAlgorithm) -> KeyAlgorithm {
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        KeyAlgorithm::EcdsaP256
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        KeyAlgorithm::EcdsaP384
    } else if alg == &rcgen::PKCS_RSA_SHA256
        || alg == &rcgen::PKCS_RSA_SHA384
        || alg == &rcgen::PKCS_RSA_SHA512
    {
        KeyAlgorithm::Rsa
    } else if alg == &rcgen::PKCS_ED25519 {
        KeyAlgorithm::Ed25519
    } else {
        KeyAlgorithm::Other
    }
}

/// A new P-256 key and a CSR for `identity`, as a workload creates them.
pub fn new_csr(identity: &SpiffeId) -> Result<(KeyPair, String), rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.pem()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Proof;

    fn authority() -> Authority {
        let files = CaFiles::self_signed_for_development(SystemTime::now()).expect("ca");
        Authority::new(files, Limits::default()).expect("authority")
    }

    #[test]
    fn a_signed_csr_carries_only_the_callers_spiffe_id() {
        let ca = authority();
        let id = SpiffeId::new("cluster.local", "sample", "sleep");
        let (_key, csr) = new_csr(&id).expect("csr");
        let caller = Caller {
            identity: id.clone(),
            proof: Proof::Token,
        };
        let now = SystemTime::now();
        let chain = ca
            .sign_csr(&csr, &caller, Duration::from_secs(3600), now)
            .expect("signed");
        assert_eq!(chain.len(), 2, "leaf then root for a self-signed CA");
        let leaf = parse_pem_certs(&chain[0], "leaf").expect("leaf");
        let info = CertInfo::of(&leaf[0]).expect("info");
        assert_eq!(info.spiffe_ids, vec![id]);
        assert!(info.dns_names.is_empty() && !info.is_ca && info.subject.is_empty());
        let life = info.lifetime().as_secs();
        assert!((3600..=3660).contains(&life), "{life}");
        let root = parse_pem_certs(&chain[1], "root").expect("root");
        assert!(crate::cacerts::signed_by(&leaf[0], &root[0]));
    }

    #[test]
    fn a_csr_for_another_namespace_or_a_tampered_csr_is_refused() {
        let ca = authority();
        let (_key, csr) =
            new_csr(&SpiffeId::new("cluster.local", "kube-system", "admin")).expect("csr");
        let caller = Caller {
            identity: SpiffeId::new("cluster.local", "sample", "sleep"),
            proof: Proof::Token,
        };
        let err = ca
            .sign_csr(&csr, &caller, Duration::ZERO, SystemTime::now())
            .expect_err("refused");
        assert!(
            matches!(err, SignError::Refused(Refusal::NotEntitled { .. })),
            "{err}"
        );
        let err = ca
            .sign_csr(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                &caller,
                Duration::ZERO,
                SystemTime::now(),
            )
            .expect_err("garbage");
        assert!(matches!(err, SignError::BadCsr(_)), "{err}");
    }
}
