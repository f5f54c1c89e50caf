//! rustls configurations for mesh mTLS (ring provider): workload certificates as rustls keys,
//! a server-certificate verifier that checks the chain to the mesh roots and then the peer's
//! SPIFFE identity (workload certificates carry no DNS names), and the caller's identity.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::cert::CertInfo;
use crate::{SpiffeId, WorkloadCert};

/// The ring crypto provider, built once.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// A problem building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the workload key cannot be used: {0}")]
    Key(String),
    #[error("the trust bundle has no usable root: {0}")]
    Roots(String),
    #[error("{0}")]
    Config(String),
}

/// The roots as a rustls store.
pub fn root_store(roots: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(roots.iter().cloned());
    if added == 0 {
        return Err(TlsError::Roots(format!(
            "none of {} certificate(s) parses as a trust anchor",
            roots.len()
        )));
    }
    Ok(Arc::new(store))
}

/// The workload's chain and key as rustls presents them.
pub fn certified_key(cert: &WorkloadCert) -> Result<Arc<CertifiedKey>, TlsError> {
    certified_key_of(cert.chain.0.clone(), cert.key.clone_key())
}

/// Whether a server must, may or need not present a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Mesh mTLS (STRICT, and the TLS side of PERMISSIVE).
    Required,
    /// The control plane's 15012: a first certificate request authenticates with a token.
    Optional,
}

/// A server configuration presenting `cert` and verifying clients against `roots`.
pub fn server_config(
    cert: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    own_server_config(cert, Some((roots, client_auth)), alpn)
}

/// A server configuration presenting `cert`: client certificates verified against the roots of
/// `clients` (required, or optional), or with none given not asked for — as a gateway serving
/// clients from outside the mesh with a certificate of its own does.
pub fn own_server_config(
    cert: Arc<CertifiedKey>,
    clients: Option<(Arc<RootCertStore>, ClientAuth)>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some((roots, client_auth)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = match client_auth {
                ClientAuth::Required => verifier.build(),
                ClientAuth::Optional => verifier.allow_unauthenticated().build(),
            }
            .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(cert)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What a client accepts as the server's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// One of these SPIFFE IDs (the identities the control plane says back the destination;
    /// Istio's `subjectAltNames`). `trust_domain_aliases` lists every domain of the mesh's
    /// group (its trust domain and its aliases): an identity in one counts in all.
    Identities {
        ids: Vec<String>,
        trust_domain_aliases: Vec<String>,
    },
    /// Any certificate chaining to the mesh roots (no identities known for the destination).
    AnyMeshIdentity,
    /// One of these DNS names (the control plane: `istiod.istio-system.svc`; a DestinationRule's
    /// `subjectAltNames`), or with none listed the name the connection was made for (its SNI),
    /// as a browser checks a server.
    DnsNames(Vec<String>),
    /// Any certificate at all (a DestinationRule's `insecureSkipVerify`): the handshake's
    /// signatures are still checked against the certificate presented.
    Unchecked,
}

/// Verifies the server's chain to the mesh roots, then its identity per [`Expect`].
#[derive(Debug)]
pub struct MeshServerVerifier {
    roots: Arc<RootCertStore>,
    expect: Expect,
}

impl MeshServerVerifier {
    pub fn new(roots: Arc<RootCertStore>, expect: Expect) -> Self {
        Self { roots, expect }
    }
}

/// Whether `presented` is `wanted`, treating the listed trust domains as one.
pub fn same_identity(presented: &str, wanted: &str, aliases: &[String]) -> bool {
    if presented == wanted {
        return true;
    }
    match (SpiffeId::parse(presented), SpiffeId::parse(wanted)) {
        (Some(p), Some(w)) => {
            let in_group = |td: &str| aliases.iter().any(|a| a == td);
            p.namespace == w.namespace
                && p.service_account == w.service_account
                && (p.trust_domain == w.trust_domain
                    || (in_group(&p.trust_domain) && in_group(&w.trust_domain)))
        }
        _ => false,
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.expect == Expect::Unchecked {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            algorithms().all,
        )?;
        match &self.expect {
            Expect::DnsNames(names) if names.is_empty() => {
                rustls::client::verify_server_name(&cert, server_name)?;
            }
            Expect::DnsNames(names) => {
                let mut last = None;
                for name in names {
                    let name = ServerName::try_from(name.as_str()).map_err(|e| {
                        rustls::Error::General(format!("expected name {name}: {e}"))
                    })?;
                    match rustls::client::verify_server_name(&cert, &name) {
                        Ok(()) => return Ok(ServerCertVerified::assertion()),
                        Err(e) => last = Some(e),
                    }
                }
                return Err(last.unwrap_or(rustls::Error::General("no name to expect".into())));
            }
            Expect::Unchecked => {}
            Expect::AnyMeshIdentity => {
                let info =
                    CertInfo::of(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
                if info.spiffe_ids.is_empty() {
                    return Err(rustls::Error::General(
                        "the server's certificate has no SPIFFE identity".into(),
                    ));
                }
            }
            Expect::Identities {
                ids,
                trust_domain_aliases,
            } => {
                let info =
                    CertInfo::of(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
                let ok = info.uris.iter().any(|presented| {
                    ids.iter()
                        .any(|w| same_identity(presented, w, trust_domain_aliases))
                });
                if !ok {
                    return Err(rustls::Error::General(format!(
                        "the server presented {} but the destination is backed by {}",
                        if info.uris.is_empty() {
                            "no SPIFFE identity".to_string()
                        } else {
                            info.uris.join(", ")
                        },
                        ids.join(", ")
                    )));
                }
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// A client configuration presenting `cert` (if any) and verifying the server with `verifier`.
pub fn client_config(
    cert: Option<Arc<CertifiedKey>>,
    verifier: MeshServerVerifier,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match cert {
        Some(c) => {
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(c)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A chain and its key as rustls presents them (a client certificate read from files).
pub fn certified_key_of(
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// TLS originated to a server outside the mesh (a DestinationRule's `SIMPLE` or `MUTUAL`): the
/// server's certificate checked against `roots` for one of `names` (with none, the connection's
/// SNI) — or not at all with `roots` `None` (`insecureSkipVerify`) — presenting `client` if any.
pub fn origination_client_config(
    roots: Option<Arc<RootCertStore>>,
    names: Vec<String>,
    client: Option<Arc<CertifiedKey>>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = match roots {
        Some(roots) => MeshServerVerifier::new(roots, Expect::DnsNames(names)),
        None => MeshServerVerifier::new(Arc::new(RootCertStore::empty()), Expect::Unchecked),
    };
    client_config(client, verifier, alpn)
}

/// TLS to the control plane (xDS and CA on 15012): its certificate must carry `server_name`
/// and chain to the bootstrap roots or to the bundle of the workload's `current` certificate,
/// which is presented (once there is one) so the control plane knows the caller.
pub fn control_plane_client_config(
    server_name: &str,
    bootstrap_roots: &[CertificateDer<'static>],
    current: Option<&WorkloadCert>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = bootstrap_roots.to_vec();
    if let Some(c) = current {
        roots.extend(
            c.roots
                .iter()
                .filter(|r| !bootstrap_roots.contains(r))
                .cloned(),
        );
    }
    let key = match current {
        Some(c) if c.not_after > std::time::SystemTime::now() => Some(certified_key(c)?),
        _ => None,
    };
    let verifier = MeshServerVerifier::new(
        root_store(&roots)?,
        Expect::DnsNames(vec![server_name.into()]),
    );
    client_config(key, verifier, &[b"h2"])
}

/// The SPIFFE identity of a verified peer's certificate chain.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    let leaf = certs.first()?;
    CertInfo::of(leaf).ok()?.spiffe_ids.into_iter().next()
}
