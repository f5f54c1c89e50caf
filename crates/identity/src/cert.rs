//! Certificates as the mesh uses them: PEM chains, the SPIFFE identity in a certificate's URI
//! SAN, validity, and a workload's key with its chain.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use strait_model::SpiffeId;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A problem with certificate material, phrased for the operator who supplied it.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{what}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { what: String },
    #[error("{what}: not a PEM private key (expected PKCS#8, SEC1 or PKCS#1): {reason}")]
    BadKey { what: String, reason: String },
    #[error("{what}: not a valid X.509 certificate: {reason}")]
    BadCertificate { what: String, reason: String },
}

/// Parses every certificate of a PEM bundle, in order.
pub fn parse_pem_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadCertificate {
            what: what.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate { what: what.into() });
    }
    for c in &certs {
        X509Certificate::from_der(c).map_err(|e| CertError::BadCertificate {
            what: what.into(),
            reason: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// Parses a PEM private key.
pub fn parse_pem_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::BadKey {
        what: what.into(),
        reason: e.to_string(),
    })
}

/// Encodes DER certificates as one PEM bundle.
pub fn to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|c| pem_block("CERTIFICATE", c))
        .collect::<String>()
}

/// Encodes a private key as PEM (PKCS#8, SEC1 or PKCS#1, as it is held).
pub fn key_to_pem(key: &PrivateKeyDer<'_>) -> String {
    match key {
        PrivateKeyDer::Pkcs8(k) => pem_block("PRIVATE KEY", k.secret_pkcs8_der()),
        PrivateKeyDer::Sec1(k) => pem_block("EC PRIVATE KEY", k.secret_sec1_der()),
        PrivateKeyDer::Pkcs1(k) => pem_block("RSA PRIVATE KEY", k.secret_pkcs1_der()),
        _ => String::new(),
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// What the mesh reads from one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// URI SANs that are SPIFFE workload IDs.
    pub spiffe_ids: Vec<SpiffeId>,
    /// Every URI SAN as written (a SPIFFE ID of another shape included).
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    pub subject: String,
    pub serial: String,
}

impl CertInfo {
    pub fn of(der: &[u8]) -> Result<Self, CertError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::BadCertificate {
            what: "certificate".into(),
            reason: e.to_string(),
        })?;
        let mut uris = Vec::new();
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push((*u).to_string()),
                    GeneralName::DNSName(d) => dns_names.push((*d).to_string()),
                    _ => {}
                }
            }
        }
        let to_time = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        Ok(Self {
            spiffe_ids: uris.iter().filter_map(|u| SpiffeId::parse(u)).collect(),
            uris,
            dns_names,
            not_before: to_time(cert.validity().not_before.timestamp()),
            not_after: to_time(cert.validity().not_after.timestamp()),
            is_ca: cert.is_ca(),
            subject: cert.subject().to_string(),
            serial: cert.raw_serial_as_string(),
        })
    }

    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}

/// A certificate chain, leaf first (as TLS sends it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertChain(pub Vec<CertificateDer<'static>>);

/// A workload's private key, its certificate chain (leaf first, without the root) and the roots
/// it trusts — what Istio's SDS calls the `default` and `ROOTCA` secrets.
#[derive(Debug)]
pub struct WorkloadCert {
    pub key: PrivateKeyDer<'static>,
    pub chain: CertChain,
    pub roots: Vec<CertificateDer<'static>>,
    pub identity: SpiffeId,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Clone for WorkloadCert {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone_key(),
            chain: self.chain.clone(),
            roots: self.roots.clone(),
            identity: self.identity.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_errors_name_the_input() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).expect("p");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://cluster.local/ns/ns1/sa/sa1"
                .try_into()
                .expect("uri"),
        ));
        let cert = params.self_signed(&key).expect("cert");
        let pem = cert.pem();
        let certs = parse_pem_certs(&pem, "x.pem").expect("parse");
        assert_eq!(to_pem(&certs), pem);
        let info = CertInfo::of(&certs[0]).expect("info");
        assert_eq!(
            info.spiffe_ids,
            vec![SpiffeId::new("cluster.local", "ns1", "sa1")]
        );
        assert_eq!(info.dns_names, vec!["a.example"]);
        let err = parse_pem_certs("hello", "cacerts/ca-cert.pem")
            .expect_err("not pem")
            .to_string();
        assert!(err.contains("cacerts/ca-cert.pem"), "{err}");
        assert!(parse_pem_key("nope", "k.pem").is_err());
    }
}
