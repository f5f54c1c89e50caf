//! JSON Web Tokens as Istio's `RequestAuthentication` accepts them (Envoy's `jwt_authn`
//! semantics): a key set (JWKS) is parsed once into keys ring can verify with; a token's
//! signature is checked against them (RS/PS 256–512, ES256/ES384, EdDSA; never `none`), then
//! its registered claims — expiry and not-before with Envoy's 60 s of clock skew, audiences.
//! Pure: no IO, the time is given.

pub mod jwks;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod token;

pub use jwks::{KeySet, parse};
pub use token::{JwtError, Verified, issuer_of, verify};
