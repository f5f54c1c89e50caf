//! TLS the proxy originates to hosts outside the mesh (a DestinationRule's `tls.mode` SIMPLE or
//! MUTUAL, Istio's egress TLS origination): the client configuration from the files the rule
//! names, read when the cluster arrives — a file that cannot be read or parsed rejects the
//! cluster with the reason, and the last good version keeps serving; read again when they
//! change on disk (`crate::secrets::FilesUsed`) — or from the Secret its
//! `credentialName` names (received by SDS: the client certificate, and the CA certificates
//! unless the rule names a CA file or skips verification), made again when the secrets change;
//! until they arrive the cluster's connections fail with the reason.

use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};
use strait_identity::cert::{parse_pem_certs, parse_pem_key};
use strait_identity::tls;
use strait_xds::cluster::{UpstreamTls, UpstreamTlsMode};
use strait_xds::secret;

use crate::secrets::{self as sds, Secrets};

/// Where the system's trusted roots usually are, when a rule names no `caCertificates`
/// (Debian/Ubuntu, Fedora/RHEL, Alpine/macOS-style bundles); `SSL_CERT_FILE` comes first.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The client configuration for `tls` (SIMPLE or MUTUAL); `http2` offers ALPN `h2`; a
/// `credentialName`'s secrets are taken from `secrets`.
pub fn client_config(
    tls: &UpstreamTls,
    http2: bool,
    secrets: &Secrets,
) -> Result<Arc<ClientConfig>, String> {
    let credential = tls.credential_name.as_deref();
    let roots = match (tls.insecure_skip_verify, credential, &tls.ca_certificates) {
        (true, _, _) => None,
        (false, Some(c), None) => Some(sds::secret_roots(&secret::roots_name(c), secrets)?),
        (false, _, ca) => Some(roots(ca.as_deref())?),
    };
    let client = match (tls.mode, credential) {
        (UpstreamTlsMode::Mutual, Some(c)) => Some(sds::secret_certificate(
            &secret::certificate_name(c),
            secrets,
        )?),
        (UpstreamTlsMode::Mutual, None) => {
            let (Some(cert), Some(key)) = (&tls.client_certificate, &tls.private_key) else {
                return Err(
                    "tls.mode MUTUAL needs clientCertificate and privateKey (files) or a credentialName"
                        .to_string(),
                );
            };
            let chain = parse_pem_certs(&read(cert, "tls.clientCertificate")?, cert)
                .map_err(|e| format!("tls.clientCertificate {cert}: {e}"))?;
            let key_der = parse_pem_key(&read(key, "tls.privateKey")?, key)
                .map_err(|e| format!("tls.privateKey {key}: {e}"))?;
            Some(
                tls::certified_key_of(chain, key_der)
                    .map_err(|e| format!("tls.privateKey {key}: {e}"))?,
            )
        }
        (UpstreamTlsMode::Simple, _) => None,
        (UpstreamTlsMode::IstioMutual, _) => {
            return Err("ISTIO_MUTUAL is mesh mTLS, not origination".to_string());
        }
    };
    let alpn: &[&[u8]] = if http2 { &[b"h2"] } else { &[] };
    tls::origination_client_config(roots, tls.subject_alt_names.clone(), client, alpn)
        .map_err(|e| format!("tls: {e}"))
}

/// The roots in `ca_certificates`, or the system's — read once per process and shared by every
/// cluster that names no CA file (a bundle holds a hundred and more roots).
fn roots(ca_certificates: Option<&str>) -> Result<Arc<RootCertStore>, String> {
    static SYSTEM: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    match ca_certificates {
        Some(path) => load_roots(path, "tls.caCertificates"),
        None => SYSTEM.get_or_init(system_roots).clone(),
    }
}

/// The system's trust bundle: `SSL_CERT_FILE`, else the first of the usual places.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    let from_env = std::env::var("SSL_CERT_FILE").ok();
    let found = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(|s| s.to_string()))
        .find(|p| std::path::Path::new(p).exists())
        .ok_or_else(|| {
            format!(
                "no tls.caCertificates and no system trust bundle ({}, or SSL_CERT_FILE): name the CA file, or set insecureSkipVerify",
                SYSTEM_BUNDLES.join(", ")
            )
        })?;
    load_roots(&found, "the system trust bundle")
}

pub(crate) fn load_roots(path: &str, field: &str) -> Result<Arc<RootCertStore>, String> {
    let pem = read(path, field)?;
    let certs = parse_pem_certs(&pem, path).map_err(|e| format!("{field} {path}: {e}"))?;
    tls::root_store(&certs).map_err(|e| format!("{field} {path}: {e}"))
}

pub(crate) fn read(path: &str, field: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{field} {path}: cannot read it: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(mode: UpstreamTlsMode) -> UpstreamTls {
        UpstreamTls {
            mode,
            sni: None,
            subject_alt_names: vec![],
            alpn: vec![],
            ca_certificates: None,
            client_certificate: None,
            private_key: None,
            credential_name: None,
            insecure_skip_verify: false,
            auto_mtls: false,
        }
    }

    fn error(tls: &UpstreamTls) -> String {
        client_config(tls, false, &Secrets::new())
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn what_cannot_make_a_client_configuration_is_refused_with_the_field_and_file() {
        let missing = UpstreamTls {
            ca_certificates: Some("/nonexistent/strait/ca.pem".into()),
            ..rule(UpstreamTlsMode::Simple)
        };
        assert!(
            error(&missing)
                .starts_with("tls.caCertificates /nonexistent/strait/ca.pem: cannot read it"),
            "{}",
            error(&missing)
        );
        let not_pem = std::env::temp_dir().join(format!("strait-not-pem-{}", std::process::id()));
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let garbage = UpstreamTls {
            ca_certificates: Some(not_pem.to_str().unwrap().into()),
            ..rule(UpstreamTlsMode::Simple)
        };
        let garbage_error = error(&garbage);
        let _ = std::fs::remove_file(&not_pem);
        assert!(
            garbage_error.starts_with(&format!("tls.caCertificates {}: ", not_pem.display())),
            "{garbage_error}"
        );
        let by_name = UpstreamTls {
            credential_name: Some("client-credential".into()),
            ..rule(UpstreamTlsMode::Mutual)
        };
        assert!(
            error(&by_name)
                .starts_with("secret kubernetes://client-credential-cacert has not been received"),
            "{}",
            error(&by_name)
        );
        let no_key = UpstreamTls {
            insecure_skip_verify: true,
            client_certificate: Some("/etc/certs/client.pem".into()),
            ..rule(UpstreamTlsMode::Mutual)
        };
        assert_eq!(
            error(&no_key),
            "tls.mode MUTUAL needs clientCertificate and privateKey (files) or a credentialName"
        );
        let unchecked = rule(UpstreamTlsMode::Simple);
        assert!(
            client_config(
                &UpstreamTls {
                    insecure_skip_verify: true,
                    ..unchecked
                },
                true,
                &Secrets::new()
            )
            .is_ok_and(|c| c.alpn_protocols == [b"h2".to_vec()]),
            "insecureSkipVerify needs no roots; an HTTP/2 cluster offers h2"
        );
    }
}
