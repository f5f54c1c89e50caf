//! SDS `Secret`s both ways: a certificate with its key, or CA certificates, carried inline (the
//! control plane reads them from Kubernetes Secrets; the proxy has no file of them).

use envoy_types::pb::envoy::config::core::v3 as ecore;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as etls;
use envoy_types::pb::google::protobuf::Any;
use strait_xds::secret::{Secret, SecretContent};

use crate::from_envoy::{R, Rejected, reject, unpack};

/// The wire form of `s`.
pub fn secret(s: &Secret) -> etls::Secret {
    use etls::secret::Type;
    let inline = |bytes: &[u8]| ecore::DataSource {
        specifier: Some(ecore::data_source::Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    };
    etls::Secret {
        name: s.name.clone(),
        r#type: Some(match &s.content {
            SecretContent::Certificate {
                certificate_chain,
                private_key,
            } => Type::TlsCertificate(etls::TlsCertificate {
                certificate_chain: Some(inline(certificate_chain)),
                private_key: Some(inline(private_key)),
                ..Default::default()
            }),
            SecretContent::Roots { trusted_ca } => {
                Type::ValidationContext(etls::CertificateValidationContext {
                    trusted_ca: Some(inline(trusted_ca)),
                    ..Default::default()
                })
            }
        }),
    }
}

/// A secret, from the `Any` of an SDS response.
pub fn secret_from(any: &Any) -> Result<Secret, Rejected> {
    use etls::secret::Type;
    let s: etls::Secret = unpack(any, "resource").map_err(|reason| Rejected {
        resource: "secret".into(),
        reason,
    })?;
    let content = match s.r#type {
        Some(Type::TlsCertificate(c)) => inline_bytes(c.certificate_chain, "certificate_chain")
            .and_then(|certificate_chain| {
                Ok(SecretContent::Certificate {
                    certificate_chain,
                    private_key: inline_bytes(c.private_key, "private_key")?,
                })
            }),
        Some(Type::ValidationContext(v)) => inline_bytes(v.trusted_ca, "trusted_ca")
            .map(|trusted_ca| SecretContent::Roots { trusted_ca }),
        Some(_) => reject("only tls_certificate and validation_context secrets are supported"),
        None => reject("the secret holds nothing"),
    };
    content
        .map(|content| Secret {
            name: s.name.clone(),
            content,
        })
        .map_err(|reason| Rejected {
            resource: format!("secret {}", s.name),
            reason,
        })
}

/// The bytes of an inline data source (a file or environment variable is another machine's).
fn inline_bytes(d: Option<ecore::DataSource>, field: &str) -> R<Vec<u8>> {
    use ecore::data_source::Specifier;
    match d.and_then(|d| d.specifier) {
        Some(Specifier::InlineBytes(b)) => Ok(b),
        Some(Specifier::InlineString(s)) => Ok(s.into_bytes()),
        Some(_) => reject(format!(
            "{field}: only inline bytes or strings are supported in secrets"
        )),
        None => reject(format!("{field}: missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_any;

    #[test]
    fn secrets_make_the_round_trip_and_files_are_refused() {
        for s in [
            Secret {
                name: "kubernetes://web".into(),
                content: SecretContent::Certificate {
                    certificate_chain: b"chain".to_vec(),
                    private_key: b"key".to_vec(),
                },
            },
            Secret {
                name: "kubernetes://web-cacert".into(),
                content: SecretContent::Roots {
                    trusted_ca: b"roots".to_vec(),
                },
            },
        ] {
            assert_eq!(secret_from(&to_any(&secret(&s))).unwrap(), s);
        }
        let mut by_file = secret(&Secret {
            name: "kubernetes://web-cacert".into(),
            content: SecretContent::Roots { trusted_ca: vec![] },
        });
        if let Some(etls::secret::Type::ValidationContext(v)) = &mut by_file.r#type {
            v.trusted_ca = Some(ecore::DataSource {
                specifier: Some(ecore::data_source::Specifier::Filename("/ca.pem".into())),
                ..Default::default()
            });
        }
        let e = secret_from(&to_any(&by_file)).unwrap_err();
        assert_eq!(e.resource, "secret kubernetes://web-cacert");
        assert!(e.reason.starts_with("trusted_ca: only inline"), "{e}");
    }
}
