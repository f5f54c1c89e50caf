//! A throw-away ES256 issuer for tests (feature `testing`): a fresh P-256 key, its key set as
//! JWKS text, and compact tokens signed with it — so tests of every crate that checks tokens
//! make them the same way.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// A P-256 signing key.
pub struct Es256Issuer {
    pair: EcdsaKeyPair,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Es256Issuer {
    /// A fresh key. Panics only if the system has no randomness (tests only).
    #[allow(clippy::expect_used)]
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generating a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("reading the P-256 key back");
        Self { pair }
    }

    /// The public key as one JWKS key (`kty`, `crv`, `x`, `y`) plus `extra` members.
    pub fn jwk(&self, extra: Value) -> Value {
        let public = self.pair.public_key().as_ref();
        let mut key = json!({"kty": "EC", "crv": "P-256",
            "x": b64(&public[1..33]), "y": b64(&public[33..])});
        if let (Some(key), Some(extra)) = (key.as_object_mut(), extra.as_object()) {
            key.extend(extra.clone());
        }
        key
    }

    /// A key set holding just this key (with `extra` members), as JWKS text.
    pub fn jwks(&self, extra: Value) -> String {
        json!({"keys": [self.jwk(extra)]}).to_string()
    }

    /// `header.claims.signature`, signed with this key.
    #[allow(clippy::expect_used)]
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("signing");
        format!("{signed}.{}", b64(sig.as_ref()))
    }
}
