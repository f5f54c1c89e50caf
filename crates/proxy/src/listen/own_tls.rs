//! TLS a listener terminates with a certificate of its own rather than the workload's mesh
//! certificate: a Gateway server's or a Sidecar ingress port's SIMPLE, MUTUAL or OPTIONAL_MUTUAL
//! mode with the `serverCertificate`, `privateKey` and `caCertificates` files it names. The server
//! configuration is made when the listener arrives — a file that cannot be read or parsed
//! rejects the listener with the reason, and the last good version keeps serving.

use std::sync::Arc;

use rustls::ServerConfig;
use strait_identity::cert::{parse_pem_certs, parse_pem_key};
use strait_identity::tls::{self, ClientAuth};
use strait_xds::listener::{ClientRoots, DownstreamTls, ServerCertificate};

use crate::upstream::origination::{load_roots, read};

/// The server configuration for `tls`, which is not the mesh's own ([`DownstreamTls::is_mesh`]).
pub fn server_config(tls: &DownstreamTls) -> Result<Arc<ServerConfig>, String> {
    let ServerCertificate::Files {
        certificate_chain,
        private_key,
    } = &tls.certificate
    else {
        return Err(format!(
            "serves secret {:?}: the Strait proxy receives no secrets by name besides its workload certificate; name the certificate's files (a Gateway server's serverCertificate and privateKey) instead of a credentialName",
            tls.certificate
        ));
    };
    let chain = parse_pem_certs(
        &read(certificate_chain, "tls.serverCertificate")?,
        certificate_chain,
    )
    .map_err(|e| format!("tls.serverCertificate {certificate_chain}: {e}"))?;
    let key = parse_pem_key(&read(private_key, "tls.privateKey")?, private_key)
        .map_err(|e| format!("tls.privateKey {private_key}: {e}"))?;
    let cert = tls::certified_key_of(chain, key)
        .map_err(|e| format!("tls.privateKey {private_key}: {e}"))?;
    let clients = match &tls.validation {
        None if tls.require_client_certificate => {
            return Err(
                "client certificates are required but no caCertificates verify them".to_string(),
            );
        }
        None => None,
        Some(ClientRoots::File { ca_certificates }) => {
            let auth = if tls.require_client_certificate {
                ClientAuth::Required
            } else {
                ClientAuth::Optional
            };
            Some((load_roots(ca_certificates, "tls.caCertificates")?, auth))
        }
        Some(ClientRoots::Sds(name)) => {
            return Err(format!(
                "verifies clients against secret {name:?}: with a certificate of its own a listener names its caCertificates file"
            ));
        }
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
        assert!(
            server_config(&missing).unwrap_err().starts_with(
                "tls.serverCertificate /nonexistent/strait-test/web.pem: cannot read it"
            ),
        );
        let by_name = DownstreamTls {
            certificate: ServerCertificate::Sds("kubernetes://web-cert".into()),
            ..missing.clone()
        };
        assert!(
            server_config(&by_name)
                .unwrap_err()
                .contains("receives no secrets by name"),
        );
        let path = std::env::temp_dir().join(format!("strait-own-tls-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate").unwrap();
        let garbage = path.to_str().unwrap();
        let refused = server_config(&files(garbage, garbage)).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            refused.starts_with(&format!("tls.serverCertificate {garbage}:")),
            "{refused}"
        );
    }
}
