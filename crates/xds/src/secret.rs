//! Secrets delivered by name (Envoy's SDS `Secret`): a certificate with its private key, or the
//! roots that verify peers. Istio names those a Gateway's or DestinationRule's `credentialName`
//! refers to `kubernetes://<name>` (the certificate) and `kubernetes://<name>-cacert` (the
//! roots), read from the Secret of that name in the proxy's own namespace.
//!
//! A private key is never shown: `Debug` and `Serialize` (config dumps, golden files) give a
//! digest of it instead, so two versions can still be told apart.

use std::fmt;

use serde::{Serialize, Serializer};

/// The prefix of SDS names that refer to Kubernetes Secrets.
pub const KUBERNETES_PREFIX: &str = "kubernetes://";
/// The suffix Istio adds to a credential's name for its CA certificates.
pub const CA_SUFFIX: &str = "-cacert";

/// The SDS name of credential `name`'s certificate.
pub fn certificate_name(credential: &str) -> String {
    format!("{KUBERNETES_PREFIX}{credential}")
}

/// The SDS name of credential `name`'s CA certificates.
pub fn roots_name(credential: &str) -> String {
    format!("{KUBERNETES_PREFIX}{credential}{CA_SUFFIX}")
}

/// One secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Secret {
    pub name: String,
    #[serde(flatten)]
    pub content: SecretContent,
}

/// What a secret holds, PEM-encoded as the Kubernetes Secret holds it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretContent {
    /// A certificate chain (leaf first) and its private key.
    Certificate {
        #[serde(serialize_with = "as_text")]
        certificate_chain: Vec<u8>,
        #[serde(serialize_with = "redacted")]
        private_key: Vec<u8>,
    },
    /// CA certificates that verify peers.
    Roots {
        #[serde(serialize_with = "as_text")]
        trusted_ca: Vec<u8>,
    },
}

impl fmt::Debug for SecretContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretContent::Certificate {
                certificate_chain,
                private_key,
            } => f
                .debug_struct("Certificate")
                .field(
                    "certificate_chain",
                    &String::from_utf8_lossy(certificate_chain),
                )
                .field("private_key", &Redacted(private_key))
                .finish(),
            SecretContent::Roots { trusted_ca } => f
                .debug_struct("Roots")
                .field("trusted_ca", &String::from_utf8_lossy(trusted_ca))
                .finish(),
        }
    }
}

/// A private key as shown: its length and a digest, never its bytes.
struct Redacted<'a>(&'a [u8]);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[redacted: {} bytes, fnv1a {:016x}]",
            self.0.len(),
            fnv1a(self.0)
        )
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// FNV-1a: tells versions of a key apart in a dump without revealing it (not a security hash:
/// the dump is for the operator, who could read the Secret anyway).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn as_text<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

fn redacted<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Redacted(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_key_is_never_shown() {
        let s = Secret {
            name: certificate_name("web"),
            content: SecretContent::Certificate {
                certificate_chain: b"-----BEGIN CERTIFICATE-----".to_vec(),
                private_key: b"-----BEGIN PRIVATE KEY-----\nSECRETBYTES".to_vec(),
            },
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("SECRETBYTES"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        let dumped = serde_json::to_string(&s).unwrap();
        assert!(!dumped.contains("SECRETBYTES"), "{dumped}");
        assert!(dumped.contains("BEGIN CERTIFICATE"), "{dumped}");
        assert_eq!(s.name, "kubernetes://web");
        assert_eq!(roots_name("web"), "kubernetes://web-cacert");
    }
}
