//! Request authentication with Envoy's `jwt_authn` semantics as Istio configures it from
//! `RequestAuthentication`: each provider is one accepted issuer with its key set, where its
//! tokens are looked for, and what is passed on. A request carrying a token that no provider
//! verifies is refused (401); a request without any token passes unauthenticated — whether it
//! may do so is the authorization's decision (`requestPrincipals`, `request.auth.*`) — unless a
//! provider is `required` (Istio's `presence: REQUIRED`): then its token must be there and valid,
//! and every other provider's token valid or absent.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JwtAuthn {
    pub providers: Vec<JwtProvider>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JwtProvider {
    /// Unique in the filter (Istio's `origins-<n>`).
    pub name: String,
    pub issuer: String,
    /// Accepted audiences; empty accepts any.
    pub audiences: Vec<String>,
    /// The key set (JWKS JSON). Empty when it could not be fetched: every token of the
    /// issuer is then refused, as Istio fails closed.
    pub jwks: String,
    /// Where tokens are; all empty: `Authorization: Bearer …` and the `access_token` query
    /// parameter (Envoy's defaults).
    pub from_headers: Vec<TokenHeader>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    /// Keep the token in the request passed on (else the header carrying it is removed).
    pub forward: bool,
    /// A header to carry the verified payload (base64url) to the application.
    pub payload_header: Option<String>,
    pub claim_headers: Vec<ClaimHeader>,
    /// Claims whose string value is a space-separated list (`scope`, `permission`, and
    /// `spaceDelimitedClaims`): authorization matches their items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// Its token must be present (Istio's `presence: REQUIRED`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// A header carrying tokens, after an optional prefix (`Bearer `).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHeader {
    pub name: String,
    pub prefix: String,
}

/// A claim copied into a request header once the token is verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClaimHeader {
    pub header: String,
    pub claim: String,
}

/// What authorization may ask of a verified token (Istio's `request.auth.*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthAttribute {
    /// `<iss>/<sub>` (`requestPrincipals`, `request.auth.principal`).
    Principal,
    /// One of the token's `aud`.
    Audiences,
    /// `azp`.
    Presenter,
    /// A claim, nested claims as a path (`request.auth.claims[groups]`); a list claim matches
    /// when one of its items does.
    Claim(Vec<String>),
}
