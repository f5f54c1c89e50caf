//! Request authentication at run time (Envoy's `jwt_authn` as Istio configures it): tokens are
//! looked for where the providers say (by default `Authorization: Bearer …` and the
//! `access_token` query parameter); a token is verified by the provider of its issuer; a
//! verified token's principal and claims go to authorization, and the request goes on without
//! the token (unless forwarded), with its payload and claims in headers when asked. A request
//! without a token passes unauthenticated; one whose token no provider verifies is refused.
//! When providers are required (`presence: REQUIRED`), each required one's token must be there
//! and valid and every other provider's valid or absent (Envoy's `requires_all`); the first
//! required provider's token is the request's principal.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use serde_json::Value;
use strait_jwt::{KeySet, Verified};
use strait_xds::jwt::{JwtAuthn, JwtProvider, TokenHeader};

/// The providers of one connection manager, their key sets parsed.
#[derive(Debug)]
pub struct JwtRuntime {
    providers: Vec<Provider>,
}

#[derive(Debug)]
struct Provider {
    config: JwtProvider,
    /// `None` when the control plane could not fetch the key set: every token is refused.
    keys: Option<KeySet>,
    /// Where it looks for tokens (Envoy's defaults when the configuration names none).
    places: Places,
}

#[derive(Debug)]
struct Places {
    headers: Vec<TokenHeader>,
    params: Vec<String>,
    cookies: Vec<String>,
}

/// What authentication decided.
#[derive(Debug)]
pub enum Authn {
    /// No token anywhere: authorization decides.
    Missing,
    Verified(Box<Verified>),
    /// A token no provider verified; the reason is Envoy's text.
    Refused(String),
}

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Header(String),
    Param(String),
    Cookie(String),
}

impl JwtRuntime {
    /// Compiles the filter; a key set that is present but unreadable is a configuration error.
    pub fn compile(j: &JwtAuthn) -> Result<JwtRuntime, String> {
        let providers = j
            .providers
            .iter()
            .map(|p| {
                let keys = if p.jwks.is_empty() {
                    None
                } else {
                    Some(
                        strait_jwt::parse(&p.jwks)
                            .map_err(|e| format!("JWT provider {}: {e}", p.name))?,
                    )
                };
                Ok(Provider {
                    config: p.clone(),
                    keys,
                    places: places(p),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(JwtRuntime { providers })
    }

    /// Authenticates a request, changing its headers as the verifying provider says.
    pub fn authenticate(&self, headers: &mut HeaderMap, uri: &Uri, now: SystemTime) -> Authn {
        if self.providers.iter().any(|p| p.config.required) {
            return self.authenticate_each(headers, uri, now);
        }
        // Each provider's tokens, read once.
        let seen: Vec<Vec<(Location, String)>> = self
            .providers
            .iter()
            .map(|p| tokens(&p.places, headers, uri))
            .collect();
        let mut found: Vec<&(Location, String)> = Vec::new();
        for t in seen.iter().flatten() {
            if !found.iter().any(|f| f.1 == t.1) {
                found.push(t);
            }
        }
        if found.is_empty() {
            return Authn::Missing;
        }
        let mut reason = None;
        for (location, token) in found {
            let issuer = match strait_jwt::issuer_of(token) {
                Ok(i) => i,
                Err(e) => {
                    reason.get_or_insert(e.to_string());
                    continue;
                }
            };
            // The provider of the token's issuer that looks where it was found.
            let provider = self.providers.iter().zip(&seen).find(|(p, its)| {
                p.config.issuer == issuer && its.iter().any(|(l, t)| l == location && t == token)
            });
            let Some((provider, _)) = provider else {
                reason.get_or_insert("Jwt issuer is not configured".into());
                continue;
            };
            match provider.verify(token, now) {
                Ok(mut verified) => {
                    pass_on(&provider.config, location, &verified, headers);
                    split_space_delimited(&mut verified, &provider.config.space_delimited_claims);
                    return Authn::Verified(Box::new(verified));
                }
                Err(e) => {
                    reason.get_or_insert(e);
                }
            }
        }
        Authn::Refused(reason.unwrap_or_else(|| "Jwt verification fails".into()))
    }
}

impl JwtRuntime {
    /// Every provider in turn (some are required): a required one's token present and valid,
    /// the others' valid or absent. A provider's token is the first in its places that claims its
    /// issuer (tokens of other issuers are not its business).
    fn authenticate_each(&self, headers: &mut HeaderMap, uri: &Uri, now: SystemTime) -> Authn {
        let mut verified: Vec<(&Provider, Location, Verified)> = Vec::new();
        for p in &self.providers {
            let mine = tokens(&p.places, headers, uri)
                .into_iter()
                .find(|(_, t)| strait_jwt::issuer_of(t).is_ok_and(|iss| iss == p.config.issuer));
            let Some((location, token)) = mine else {
                if p.config.required {
                    return Authn::Refused("Jwt is missing".into());
                }
                continue;
            };
            match p.verify(&token, now) {
                Ok(v) => verified.push((p, location, v)),
                Err(e) => return Authn::Refused(e),
            }
        }
        // Accepted: only now is the request changed, as each provider says. The principal is
        // the first required provider's token (else the first verified one).
        let chosen = verified
            .iter()
            .position(|(p, _, _)| p.config.required)
            .unwrap_or(0);
        let mut principal = None;
        for (i, (p, location, mut v)) in verified.into_iter().enumerate() {
            pass_on(&p.config, &location, &v, headers);
            split_space_delimited(&mut v, &p.config.space_delimited_claims);
            if i == chosen {
                principal = Some(v);
            }
        }
        match principal {
            Some(v) => Authn::Verified(Box::new(v)),
            None => Authn::Missing,
        }
    }
}

impl Provider {
    /// Verifies `token` with this provider's key set and audiences; Envoy's reason if not.
    fn verify(&self, token: &str, now: SystemTime) -> Result<Verified, String> {
        let Some(keys) = &self.keys else {
            return Err("Jwks remote fetch is failed".into());
        };
        strait_jwt::verify(token, keys, &self.config.audiences, now).map_err(|e| e.to_string())
    }
}

/// The places a provider looks, Envoy's defaults when it names none.
fn places(p: &JwtProvider) -> Places {
    if p.from_headers.is_empty() && p.from_params.is_empty() && p.from_cookies.is_empty() {
        return Places {
            headers: vec![TokenHeader {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            }],
            params: vec!["access_token".into()],
            cookies: Vec::new(),
        };
    }
    Places {
        headers: p.from_headers.clone(),
        params: p.from_params.clone(),
        cookies: p.from_cookies.clone(),
    }
}

/// The tokens in a request at `places`.
fn tokens(places: &Places, headers: &HeaderMap, uri: &Uri) -> Vec<(Location, String)> {
    let (from_headers, from_params, from_cookies) =
        (&places.headers, &places.params, &places.cookies);
    let mut out = Vec::new();
    for h in from_headers {
        for v in headers.get_all(h.name.as_str()) {
            let Ok(v) = v.to_str() else { continue };
            // Envoy finds the prefix anywhere in the value (`Bearer ` after other schemes too).
            let token = match v.find(h.prefix.as_str()) {
                Some(at) if !h.prefix.is_empty() => &v[at + h.prefix.len()..],
                Some(_) => v,
                None => continue,
            };
            let token = token.split([',', ' ']).next().unwrap_or("").trim();
            if !token.is_empty() {
                out.push((Location::Header(h.name.clone()), token.to_string()));
            }
        }
    }
    if let Some(query) = uri.query() {
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !value.is_empty() && from_params.iter().any(|p| p == name) {
                out.push((Location::Param(name.to_string()), value.to_string()));
            }
        }
    }
    for cookies in headers.get_all(http::header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for c in cookies.split(';') {
            let (name, value) = c.trim().split_once('=').unwrap_or((c, ""));
            if !value.is_empty() && from_cookies.iter().any(|n| n == name) {
                out.push((Location::Cookie(name.to_string()), value.to_string()));
            }
        }
    }
    out
}

/// What goes on with the request once `provider` verified its token: the token's header is
/// removed unless forwarded, the payload and the asked-for claims are added as headers.
fn pass_on(provider: &JwtProvider, location: &Location, v: &Verified, headers: &mut HeaderMap) {
    if !provider.forward
        && let Location::Header(name) = location
    {
        headers.remove(name.as_str());
    }
    let mut set = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    };
    if let Some(h) = &provider.payload_header {
        set(h, &v.payload);
    }
    for c in &provider.claim_headers {
        let value = match v.claims.get(&c.claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => continue,
        };
        set(&c.header, &value);
    }
}

/// Turns the named claims' string values into lists of their space-separated items (Envoy's
/// `normalize_payload_in_metadata`), so authorization matches one scope of `"read write"`.
fn split_space_delimited(v: &mut Verified, names: &[String]) {
    for name in names {
        if let Some(Value::String(s)) = v.claims.get(name) {
            let items: Vec<Value> = s
                .split(' ')
                .filter(|i| !i.is_empty())
                .map(|i| Value::String(i.to_string()))
                .collect();
            v.claims.insert(name.clone(), Value::Array(items));
        }
    }
}

/// The values of a verified token's attribute, for authorization: one for the principal and
/// presenter, several for audiences and list claims.
pub fn attribute_values(v: &Verified, attribute: &strait_xds::jwt::AuthAttribute) -> Vec<String> {
    use strait_xds::jwt::AuthAttribute;
    match attribute {
        AuthAttribute::Principal => vec![v.principal()],
        AuthAttribute::Presenter => v.presenter.iter().cloned().collect(),
        AuthAttribute::Audiences => v.audiences.clone(),
        AuthAttribute::Claim(path) => {
            let mut value = path.first().and_then(|k| v.claims.get(k));
            for k in path.iter().skip(1) {
                value = value.and_then(|x| x.get(k));
            }
            match value {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|i| match i {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        Value::Bool(b) => Some(b.to_string()),
                        _ => None,
                    })
                    .collect(),
                Some(Value::Number(n)) => vec![n.to_string()],
                Some(Value::Bool(b)) => vec![b.to_string()],
                _ => Vec::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strait_jwt::testing::Es256Issuer;

    use super::*;

    /// An issuer's signing key and the provider that accepts its tokens from `header`.
    fn issuer(name: &str, header: &str, required: bool) -> (Es256Issuer, JwtProvider) {
        let key = Es256Issuer::generate();
        let jwks = key.jwks(json!({}));
        let provider = JwtProvider {
            name: name.into(),
            issuer: name.into(),
            audiences: vec![],
            jwks,
            from_headers: vec![TokenHeader {
                name: header.into(),
                prefix: String::new(),
            }],
            from_params: vec![],
            from_cookies: vec![],
            forward: false,
            payload_header: None,
            claim_headers: vec![],
            space_delimited_claims: vec![],
            required,
        };
        (key, provider)
    }

    fn token(key: &Es256Issuer, iss: &str, sub: &str) -> String {
        key.sign(&json!({"alg": "ES256"}), &json!({"iss": iss, "sub": sub}))
    }

    fn run(rt: &JwtRuntime, headers: &[(&str, String)]) -> Result<String, String> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match rt.authenticate(&mut h, &"/".parse().unwrap(), SystemTime::now()) {
            Authn::Verified(v) => Ok(v.principal()),
            Authn::Missing => Ok("-".into()),
            Authn::Refused(r) => Err(r),
        }
    }

    #[test]
    fn a_required_token_must_be_there_and_the_optional_ones_valid_if_there() {
        let (idp, identity) = issuer("idp", "authorization", true);
        let (scopes, scope) = issuer("scopes", "x-scope-token", false);
        let rt = JwtRuntime::compile(&JwtAuthn {
            providers: vec![scope, identity],
        })
        .unwrap();
        let id = token(&idp, "idp", "alice");
        let sc = token(&scopes, "scopes", "svc");
        // Both: the required provider's token is the principal, whatever the order.
        assert_eq!(
            run(
                &rt,
                &[("authorization", id.clone()), ("x-scope-token", sc.clone())]
            ),
            Ok("idp/alice".into())
        );
        // The required one alone passes; the optional one alone does not.
        assert_eq!(
            run(&rt, &[("authorization", id.clone())]),
            Ok("idp/alice".into())
        );
        assert_eq!(
            run(&rt, &[("x-scope-token", sc)]),
            Err("Jwt is missing".into())
        );
        assert_eq!(run(&rt, &[]), Err("Jwt is missing".into()));
        // An optional token that is there must be valid.
        let forged = token(&idp, "scopes", "svc");
        assert_eq!(
            run(&rt, &[("authorization", id), ("x-scope-token", forged)]),
            Err("Jwt verification fails".into())
        );
    }

    #[test]
    fn without_required_providers_a_missing_token_passes_and_any_valid_one_does() {
        let (idp, identity) = issuer("idp", "authorization", false);
        let rt = JwtRuntime::compile(&JwtAuthn {
            providers: vec![identity],
        })
        .unwrap();
        assert_eq!(run(&rt, &[]), Ok("-".into()));
        let id = token(&idp, "idp", "bob");
        assert_eq!(run(&rt, &[("authorization", id)]), Ok("idp/bob".into()));
    }
}
