//! JSON Web Key Sets (RFC 7517): the public keys of an issuer, kept in the form ring verifies
//! with. Keys of a type Strait cannot verify with (symmetric `oct` keys, unknown curves) are
//! left out; a set with no usable key at all is an error, as it could verify nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// The usable keys of a key set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub kid: Option<String>,
    /// The algorithm the key is for, when the set says (`RS256`, `ES256`, ...).
    pub alg: Option<String>,
    pub material: Material,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    /// Modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed point (`04 ‖ x ‖ y`) on P-256 or P-384.
    Ec { curve: Curve, point: Vec<u8> },
    /// An Ed25519 public key.
    Ed25519(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<RawKey>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parses a key set (`{"keys": [...]}`).
pub fn parse(text: &str) -> Result<KeySet, String> {
    let raw: RawSet =
        serde_json::from_str(text).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let mut keys = Vec::new();
    for (i, k) in raw.keys.iter().enumerate() {
        if k.use_.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let field = |name: &str, v: &Option<String>| -> Result<Vec<u8>, String> {
            let v = v
                .as_deref()
                .ok_or_else(|| format!("key {i} ({}) has no {name:?}", k.kty))?;
            URL_SAFE_NO_PAD
                .decode(v.trim_end_matches('='))
                .map_err(|e| format!("key {i}: {name:?} is not base64url: {e}"))
        };
        let material = match (k.kty.as_str(), k.crv.as_deref()) {
            ("RSA", _) => Material::Rsa {
                n: field("n", &k.n)?,
                e: field("e", &k.e)?,
            },
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let (curve, len) = if crv == "P-256" {
                    (Curve::P256, 32)
                } else {
                    (Curve::P384, 48)
                };
                let (x, y) = (field("x", &k.x)?, field("y", &k.y)?);
                if x.len() != len || y.len() != len {
                    return Err(format!("key {i}: x and y of a {crv} key are {len} bytes"));
                }
                let mut point = vec![4u8];
                point.extend(x);
                point.extend(y);
                Material::Ec { curve, point }
            }
            ("OKP", Some("Ed25519")) => Material::Ed25519(field("x", &k.x)?),
            _ => continue,
        };
        keys.push(Key {
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            material,
        });
    }
    if keys.is_empty() {
        return Err(
            "the key set has no key that can verify signatures (RSA, EC P-256/P-384 or Ed25519)"
                .into(),
        );
    }
    Ok(KeySet { keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_keys_are_kept_and_the_rest_left_out() {
        let set = parse(
            r#"{"keys": [
              {"kty": "RSA", "kid": "r", "alg": "RS256", "n": "AQAB", "e": "AQAB"},
              {"kty": "oct", "k": "c2VjcmV0"},
              {"kty": "EC", "crv": "P-256", "x": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "y": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
              {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(set.keys.len(), 2);
        assert_eq!(set.keys[0].kid.as_deref(), Some("r"));
        assert!(
            matches!(&set.keys[1].material, Material::Ec { curve: Curve::P256, point } if point.len() == 65)
        );
    }

    #[test]
    fn bad_sets_say_why() {
        assert!(
            parse("nope")
                .unwrap_err()
                .contains("not a JSON Web Key Set")
        );
        assert!(parse(r#"{"keys": []}"#).unwrap_err().contains("no key"));
        assert!(
            parse(r#"{"keys": [{"kty": "RSA", "e": "AQAB"}]}"#)
                .unwrap_err()
                .contains("has no \"n\"")
        );
        assert!(
            parse(r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"}]}"#)
                .unwrap_err()
                .contains("32 bytes")
        );
    }
}
