//! Verifying one compact JWT (`header.payload.signature`) against a key set: the header's
//! `alg` (never `none`) and `kid` pick the keys, ring checks the signature, then the claims:
//! `exp` and `nbf` with Envoy's 60 s clock skew, `aud` against the accepted audiences (scheme
//! and trailing slash ignored, as Envoy compares them).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{
    self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
};
use serde_json::{Map, Value};

use crate::jwks::{Curve, Key, KeySet, Material};

/// Envoy's default allowance for clocks that disagree.
const CLOCK_SKEW_SECS: u64 = 60;

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    /// `azp`, the party the token was issued to.
    pub presenter: Option<String>,
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
    /// The payload as it came (base64url), for `outputPayloadToHeader`.
    pub payload: String,
}

impl Verified {
    /// Istio's request principal: `<iss>/<sub>`.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }
}

/// Why a token was refused; the texts are Envoy's, which clients of Istio already see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed(String),
    UnsupportedAlgorithm(String),
    NoMatchingKey,
    BadSignature,
    Expired,
    NotYetValid,
    AudienceNotAllowed,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed(why) => write!(
                f,
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections: {why}"
            ),
            JwtError::UnsupportedAlgorithm(alg) => {
                write!(f, "Jwt algorithm {alg:?} is not supported")
            }
            JwtError::NoMatchingKey => {
                f.write_str("Jwks doesn't have key to match kid or alg from Jwt")
            }
            JwtError::BadSignature => f.write_str("Jwt verification fails"),
            JwtError::Expired => f.write_str("Jwt is expired"),
            JwtError::NotYetValid => f.write_str("Jwt not yet valid"),
            JwtError::AudienceNotAllowed => f.write_str("Audiences in Jwt are not allowed"),
        }
    }
}

/// A token split and decoded, not yet trusted.
struct Parts<'a> {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signed: &'a str,
    payload: &'a str,
    signature: Vec<u8>,
}

fn decode_json(segment: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|e| JwtError::Malformed(format!("{what} is not base64url: {e}")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed(format!("{what} is not a JSON object"))),
    }
}

fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwtError::Malformed("not three sections".into()));
    };
    let signature = URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| JwtError::Malformed(format!("the signature is not base64url: {e}")))?;
    Ok(Parts {
        header: decode_json(h, "the header")?,
        claims: decode_json(p, "the payload")?,
        signed: &token[..h.len() + 1 + p.len()],
        payload: p,
        signature,
    })
}

/// The issuer a token claims, read before it is trusted — to pick the rule whose keys verify it.
pub fn issuer_of(token: &str) -> Result<String, JwtError> {
    let parts = split(token)?;
    parts
        .claims
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| JwtError::Malformed("the payload has no \"iss\"".into()))
}

/// How ring verifies one algorithm: RSA from the key's components, the others from the
/// public key's bytes.
#[derive(Clone, Copy)]
enum Verifier {
    Rsa(&'static RsaParameters),
    Bytes(&'static dyn VerificationAlgorithm),
}

/// The verifier for a JWS `alg` and a key, if they go together.
fn verifier(alg: &str, key: &Key) -> Option<Verifier> {
    use signature::*;
    Some(match (alg, &key.material) {
        ("RS256", Material::Rsa { .. }) => Verifier::Rsa(&RSA_PKCS1_2048_8192_SHA256),
        ("RS384", Material::Rsa { .. }) => Verifier::Rsa(&RSA_PKCS1_2048_8192_SHA384),
        ("RS512", Material::Rsa { .. }) => Verifier::Rsa(&RSA_PKCS1_2048_8192_SHA512),
        ("PS256", Material::Rsa { .. }) => Verifier::Rsa(&RSA_PSS_2048_8192_SHA256),
        ("PS384", Material::Rsa { .. }) => Verifier::Rsa(&RSA_PSS_2048_8192_SHA384),
        ("PS512", Material::Rsa { .. }) => Verifier::Rsa(&RSA_PSS_2048_8192_SHA512),
        ("ES256", Material::Ec { curve, .. }) if *curve == Curve::P256 => {
            Verifier::Bytes(&ECDSA_P256_SHA256_FIXED)
        }
        ("ES384", Material::Ec { curve, .. }) if *curve == Curve::P384 => {
            Verifier::Bytes(&ECDSA_P384_SHA384_FIXED)
        }
        ("EdDSA", Material::Ed25519(_)) => Verifier::Bytes(&ED25519),
        _ => return None,
    })
}

fn signature_holds(verifier: Verifier, key: &Key, message: &[u8], sig: &[u8]) -> bool {
    match (verifier, &key.material) {
        (Verifier::Rsa(params), Material::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
            .verify(params, message, sig)
            .is_ok(),
        (Verifier::Bytes(alg), Material::Ec { point, .. }) => UnparsedPublicKey::new(alg, point)
            .verify(message, sig)
            .is_ok(),
        (Verifier::Bytes(alg), Material::Ed25519(x)) => {
            UnparsedPublicKey::new(alg, x).verify(message, sig).is_ok()
        }
        _ => false,
    }
}

/// `aud` without its scheme and trailing slash, as Envoy compares audiences.
fn normalized(aud: &str) -> &str {
    let a = aud
        .strip_prefix("https://")
        .or_else(|| aud.strip_prefix("http://"))
        .unwrap_or(aud);
    a.strip_suffix('/').unwrap_or(a)
}

/// Verifies `token` with `keys`; `audiences` empty accepts any audience.
pub fn verify(
    token: &str,
    keys: &KeySet,
    audiences: &[String],
    now: SystemTime,
) -> Result<Verified, JwtError> {
    let parts = split(token)?;
    let alg = parts
        .header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::Malformed("the header has no \"alg\"".into()))?;
    if !matches!(
        alg,
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA"
    ) {
        return Err(JwtError::UnsupportedAlgorithm(alg.to_string()));
    }
    let kid = parts.header.get("kid").and_then(Value::as_str);
    let candidates: Vec<(&Key, Verifier)> = keys
        .keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.kid.as_deref().is_none_or(|own| own == kid)))
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg))
        .filter_map(|k| verifier(alg, k).map(|v| (k, v)))
        .collect();
    if candidates.is_empty() {
        return Err(JwtError::NoMatchingKey);
    }
    let signed = parts.signed.as_bytes();
    if !candidates
        .iter()
        .any(|(k, v)| signature_holds(*v, k, signed, &parts.signature))
    {
        return Err(JwtError::BadSignature);
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let seconds = |claim: &str| parts.claims.get(claim).and_then(Value::as_u64);
    if seconds("exp").is_some_and(|exp| now > exp.saturating_add(CLOCK_SKEW_SECS)) {
        return Err(JwtError::Expired);
    }
    if seconds("nbf").is_some_and(|nbf| now.saturating_add(CLOCK_SKEW_SECS) < nbf) {
        return Err(JwtError::NotYetValid);
    }
    let token_audiences: Vec<String> = match parts.claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(v)) => v
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    if !audiences.is_empty()
        && !token_audiences
            .iter()
            .any(|t| audiences.iter().any(|a| normalized(a) == normalized(t)))
    {
        return Err(JwtError::AudienceNotAllowed);
    }
    let text = |claim: &str| {
        parts
            .claims
            .get(claim)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(Verified {
        issuer: text("iss").unwrap_or_default(),
        subject: text("sub").unwrap_or_default(),
        audiences: token_audiences,
        presenter: text("azp"),
        payload: parts.payload.to_string(),
        claims: parts.claims,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;

    use super::*;
    use crate::jwks::parse;
    use crate::testing::Es256Issuer;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// An ES256 issuer and its key set.
    fn es256() -> (Es256Issuer, KeySet) {
        let issuer = Es256Issuer::generate();
        let keys = parse(&issuer.jwks(json!({"kid": "k1"}))).unwrap();
        (issuer, keys)
    }

    fn sign_es256(issuer: &Es256Issuer, header: Value, claims: Value) -> String {
        issuer.sign(&header, &claims)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_good_token_gives_its_principal_audiences_and_claims() {
        let (pair, keys) = es256();
        let token = sign_es256(
            &pair,
            json!({"alg": "ES256", "kid": "k1"}),
            json!({"iss": "https://issuer.example", "sub": "alice", "aud": ["https://api.example/"],
                   "azp": "web", "exp": 2000, "nbf": 1000, "groups": ["a", "b"]}),
        );
        assert_eq!(issuer_of(&token).unwrap(), "https://issuer.example");
        let v = verify(&token, &keys, &["api.example".into()], at(1500)).unwrap();
        assert_eq!(v.principal(), "https://issuer.example/alice");
        assert_eq!(v.audiences, ["https://api.example/"]);
        assert_eq!(v.presenter.as_deref(), Some("web"));
        assert_eq!(v.claims["groups"], json!(["a", "b"]));
        // Any audience when none is required; the clock's skew is allowed for.
        assert!(verify(&token, &keys, &[], at(2059)).is_ok());
        assert!(verify(&token, &keys, &[], at(941)).is_ok());
    }

    #[test]
    fn bad_tokens_are_refused_with_envoys_reasons() {
        let (pair, keys) = es256();
        let claims = json!({"iss": "i", "sub": "s", "aud": "x", "exp": 2000, "nbf": 1000});
        let token = sign_es256(&pair, json!({"alg": "ES256"}), claims.clone());
        assert_eq!(verify(&token, &keys, &[], at(2061)), Err(JwtError::Expired));
        assert_eq!(
            verify(&token, &keys, &[], at(939)),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            verify(&token, &keys, &["y".into()], at(1500)),
            Err(JwtError::AudienceNotAllowed)
        );
        // Another key's signature, a changed payload, an unknown kid, `none`.
        let (other, _) = es256();
        let forged = sign_es256(&other, json!({"alg": "ES256"}), claims.clone());
        assert_eq!(
            verify(&forged, &keys, &[], at(1500)),
            Err(JwtError::BadSignature)
        );
        let mut sections: Vec<String> = token.split('.').map(str::to_string).collect();
        sections[1] = b64(json!({"iss": "i", "sub": "mallory"}).to_string().as_bytes());
        assert_eq!(
            verify(&sections.join("."), &keys, &[], at(1500)),
            Err(JwtError::BadSignature)
        );
        let other_kid = sign_es256(&pair, json!({"alg": "ES256", "kid": "k2"}), claims.clone());
        assert_eq!(
            verify(&other_kid, &keys, &[], at(1500)),
            Err(JwtError::NoMatchingKey)
        );
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none"}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        assert!(matches!(
            verify(&none, &keys, &[], at(1500)),
            Err(JwtError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            verify("a.b", &keys, &[], at(1500)),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn eddsa_tokens_verify() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let set = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}]});
        let keys = parse(&set.to_string()).unwrap();
        let signed = format!(
            "{}.{}",
            b64(json!({"alg": "EdDSA"}).to_string().as_bytes()),
            b64(json!({"iss": "i", "sub": "s"}).to_string().as_bytes())
        );
        let token = format!("{signed}.{}", b64(pair.sign(signed.as_bytes()).as_ref()));
        assert_eq!(
            verify(&token, &keys, &[], at(0)).unwrap().principal(),
            "i/s"
        );
    }
}
