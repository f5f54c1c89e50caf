//! TLS a listener terminates with a certificate of its own rather than the workload's mesh
//! certificate: a Gateway server's or a Sidecar ingress port's SIMPLE, MUTUAL or OPTIONAL_MUTUAL
//! mode, with the Secret its `credentialName` names (received by SDS) or the
//! `serverCertificate`, `privateKey` and `caCertificates` files it names. A file that cannot be
//! read or parsed rejects the listener with the reason when it arrives (the last good version
//! keeps serving), and a file rewritten later makes the chain again (an unusable rewrite leaves
//! the last good certificate serving); a secret is checked when it arrives, and a chain whose
//! secret has not arrived refuses connections until it does.

use std::sync::Arc;

use rustls::ServerConfig;
use strait_identity::tls::{self, ClientAuth};
use strait_xds::listener::{ClientRoots, DownstreamTls, ServerCertificate};

use crate::secrets::{Secrets, certified, secret_certificate, secret_roots};
use crate::upstream::origination::{load_roots, read};

/// The server configuration for `tls`, which is not the mesh's own ([`DownstreamTls::is_mesh`]),
/// with the secrets it names taken from `secrets`.
pub fn server_config(tls: &DownstreamTls, secrets: &Secrets) -> Result<Arc<ServerConfig>, String> {
    let cert = match &tls.certificate {
        ServerCertificate::Files {
            certificate_chain,
            private_key,
        } => certified(
            &read(certificate_chain, "tls.serverCertificate")?,
            &read(private_key, "tls.privateKey")?,
            &format!("tls.serverCertificate {certificate_chain}"),
            &format!("tls.privateKey {private_key}"),
        )?,
        ServerCertificate::Sds(name) => secret_certificate(name, secrets)?,
    };
    let auth = if tls.require_client_certificate {
        ClientAuth::Required
    } else {
        ClientAuth::Optional
    };
    let clients = match &tls.validation {
        None if tls.require_client_certificate => {
            return Err(
                "client certificates are required but no caCertificates verify them".to_string(),
            );
        }
        None => None,
        Some(ClientRoots::File { ca_certificates }) => {
            Some((load_roots(ca_certificates, "tls.caCertificates")?, auth))
        }
        Some(ClientRoots::Sds(name)) => Some((secret_roots(name, secrets)?, auth)),
    };
    let alpn: Vec<&[u8]> = tls.alpn.iter().map(|a| a.as_bytes()).collect();
    tls::own_server_config(cert, clients, &alpn).map_err(|e| format!("tls: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(chain: &str, key: &str) -> DownstreamTls {
        DownstreamTls {
            certificate: ServerCertificate::Files {
                certificate_chain: chain.into(),
                private_key: key.into(),
            },
            validation: None,
            require_client_certificate: false,
            alpn: vec!["h2".into(), "http/1.1".into()],
        }
    }

    /// What an operator reads in the NACK (and `strait proxy-config`) names the file and field.
    #[test]
    fn what_cannot_be_served_is_refused_with_the_file_and_field() {
        let missing = files("/nonexistent/strait-test/web.pem", "/nonexistent/web.key");
        let none = Secrets::new();
        assert!(
            server_config(&missing, &none).unwrap_err().starts_with(
                "tls.serverCertificate /nonexistent/strait-test/web.pem: cannot read it"
            ),
        );
        let by_name = DownstreamTls {
            certificate: ServerCertificate::Sds("kubernetes://web-cert".into()),
            ..missing.clone()
        };
        let not_yet = server_config(&by_name, &none).unwrap_err();
        assert!(
            not_yet.starts_with("secret kubernetes://web-cert has not been received")
                && not_yet.contains("Secret \"web-cert\""),
            "{not_yet}"
        );
        let path = std::env::temp_dir().join(format!("strait-own-tls-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate").unwrap();
        let garbage = path.to_str().unwrap();
        let refused = server_config(&files(garbage, garbage), &none).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            refused.starts_with(&format!("tls.serverCertificate {garbage}:")),
            "{refused}"
        );
    }
}
