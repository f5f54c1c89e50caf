//! Bootstrap tokens: how a workload proves, on its first certificate request, which namespace
//! and service account it runs as — the role Kubernetes service-account tokens play for Istio.
//!
//! A token is `strait1.<claims>.<mac>`: base64url JSON claims (namespace, service account,
//! cluster, expiry, ID, issue time) and an HMAC-SHA256 over `strait1.<claims>` with the control
//! plane's token key. A token the key's revocation list names is refused
//! ([`crate::revocation`]). Minting and checking are pure; the key file is read by the caller.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::revocation::Revocations;

/// What every bootstrap token starts with.
pub(crate) const PREFIX: &str = "strait1";
const KEY_LEN: usize = 32;

/// What a token vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "ns")]
    pub namespace: String,
    #[serde(rename = "sa")]
    pub service_account: String,
    /// The cluster the workload runs in (informational; logged by the CA).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// A random ID, by which one token can be revoked (empty in tokens minted before IDs).
    #[serde(rename = "jti", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// When it was minted, seconds since the Unix epoch (0 in tokens minted before).
    #[serde(rename = "iat", default)]
    pub issued_at: u64,
}

impl Claims {
    /// The claims of a token, read without checking it (to name it in a revocation list).
    pub fn peek(token: &str) -> Result<Claims, TokenError> {
        let (signed, _) = token.trim().rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (prefix, claims) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if prefix != PREFIX {
            return Err(TokenError::Malformed);
        }
        let json = B64.decode(claims).map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }
}

/// Why a token is not accepted; `Display` is what the caller is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a Strait bootstrap token (expected strait1.<claims>.<mac>)")]
    Malformed,
    #[error(
        "the token's signature does not match this control plane's token key (minted by another control plane, or the key was replaced)"
    )]
    BadSignature,
    #[error("the token expired {0:?} ago; mint a new one with `strait ca token`")]
    Expired(Duration),
    #[error("{0}; mint a new one with `strait ca token`")]
    Revoked(String),
}

/// The HMAC key tokens are minted and checked with, and the tokens it no longer accepts.
pub struct TokenKey {
    key: hmac::Key,
    revoked: RwLock<Arc<Revocations>>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            revoked: RwLock::default(),
        }
    }

    /// Replaces the revocation list (the control plane re-reads its file when it changes).
    pub fn set_revocations(&self, revocations: Revocations) {
        *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(revocations);
    }

    /// A new random key, and its bytes to store.
    pub fn generate() -> (Self, Vec<u8>) {
        let mut bytes = vec![0u8; KEY_LEN];
        // SystemRandom only fails when the OS has no entropy source; the key is then all zeros
        // and `load_or_create` refuses it below.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        (Self::from_bytes(&bytes), bytes)
    }

    /// Reads the key file (base64), creating it (mode 0600) with a random key when missing.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| format!("{}: not a base64 token key: {e}", path.display()))?;
                if bytes.len() < 16 {
                    return Err(format!(
                        "{}: the token key is {} bytes; it must be at least 16 (delete the file to create a new one)",
                        path.display(),
                        bytes.len()
                    ));
                }
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, bytes) = Self::generate();
                if bytes.iter().all(|b| *b == 0) {
                    return Err("the operating system gave no randomness for a token key".into());
                }
                write_secret(
                    path,
                    &base64::engine::general_purpose::STANDARD.encode(&bytes),
                )
                .map_err(|e| format!("{}: cannot create the token key: {e}", path.display()))?;
                Ok(key)
            }
            Err(e) => Err(format!(
                "{}: cannot read the token key: {e}",
                path.display()
            )),
        }
    }

    /// Mints a token for `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let signed = format!("{PREFIX}.{}", B64.encode(json));
        let mac = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", B64.encode(mac.as_ref()))
    }

    /// Checks a token's MAC, expiry at `now` and revocation, returning its claims.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        let token = token.trim();
        let (signed, mac) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (prefix, claims) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if prefix != PREFIX {
            return Err(TokenError::Malformed);
        }
        let mac = B64.decode(mac).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, signed.as_bytes(), &mac).map_err(|_| TokenError::BadSignature)?;
        let json = B64.decode(claims).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now_s >= claims.exp {
            return Err(TokenError::Expired(Duration::from_secs(now_s - claims.exp)));
        }
        let revoked = self
            .revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(why) = revoked.check(&claims) {
            return Err(TokenError::Revoked(why));
        }
        Ok(claims)
    }
}

/// Claims valid for `ttl` from `now`, with a fresh random ID.
pub fn claims(
    namespace: &str,
    service_account: &str,
    cluster: &str,
    now: SystemTime,
    ttl: Duration,
) -> Claims {
    Claims {
        namespace: namespace.into(),
        service_account: service_account.into(),
        cluster: cluster.into(),
        exp: (now + ttl)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        id: random_id(),
        issued_at: now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
    }
}

/// 12 random bytes, base64url.
fn random_id() -> String {
    let mut bytes = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    B64.encode(bytes)
}

/// Writes a file only its owner can read.
pub fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_tokens_are_refused_and_others_are_not() {
        let now = SystemTime::now();
        let (key, _) = TokenKey::generate();
        let a = claims("sample", "sleep", "", now, Duration::from_secs(60));
        let b = claims("sample", "sleep", "", now, Duration::from_secs(60));
        assert_ne!(a.id, b.id, "each token has its own ID");
        let (ta, tb) = (key.mint(&a), key.mint(&b));
        assert_eq!(Claims::peek(&ta).unwrap().id, a.id);
        key.set_revocations(Revocations::parse(&format!("token {}\n", a.id), "list").unwrap());
        assert!(matches!(key.verify(&ta, now), Err(TokenError::Revoked(_))));
        assert_eq!(key.verify(&tb, now), Ok(b.clone()));
        let issued = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        key.set_revocations(
            Revocations::parse(
                &format!("serviceaccount sample/sleep {}\n", issued + 1),
                "list",
            )
            .unwrap(),
        );
        let e = key.verify(&tb, now).unwrap_err();
        assert!(e.to_string().contains("sample/sleep"), "{e}");
        key.set_revocations(Revocations::default());
        assert!(key.verify(&ta, now).is_ok());
    }

    #[test]
    fn tokens_verify_only_with_their_key_and_before_expiry() {
        let now = SystemTime::now();
        let (key, _) = TokenKey::generate();
        let c = claims("sample", "sleep", "cluster1", now, Duration::from_secs(60));
        let token = key.mint(&c);
        assert_eq!(key.verify(&token, now), Ok(c.clone()));
        let (other, _) = TokenKey::generate();
        assert_eq!(other.verify(&token, now), Err(TokenError::BadSignature));
        assert!(matches!(
            key.verify(&token, now + Duration::from_secs(61)),
            Err(TokenError::Expired(_))
        ));
        // Claims cannot be swapped under the same MAC.
        let forged_claims = B64.encode(
            serde_json::to_vec(&claims(
                "kube-system",
                "admin",
                "",
                now,
                Duration::from_secs(60),
            ))
            .expect("json"),
        );
        let mac = token.rsplit_once('.').expect("mac").1;
        let forged = format!("{PREFIX}.{forged_claims}.{mac}");
        assert_eq!(key.verify(&forged, now), Err(TokenError::BadSignature));
        assert_eq!(key.verify("Bearer x", now), Err(TokenError::Malformed));
    }

    #[test]
    fn the_key_file_is_created_once_and_reread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token-key");
        let key = TokenKey::load_or_create(&path).expect("create");
        let token = key.mint(&claims(
            "a",
            "b",
            "",
            SystemTime::now(),
            Duration::from_secs(60),
        ));
        let again = TokenKey::load_or_create(&path).expect("read");
        assert!(again.verify(&token, SystemTime::now()).is_ok());
        std::fs::write(&path, "short").expect("write");
        assert!(TokenKey::load_or_create(&path).is_err());
    }
}
