//! Request authentication at run time (Envoy's `jwt_authn` as Istio configures it): tokens are
//! looked for where the providers say (by default `Authorization: Bearer …` and the
//! `access_token` query parameter); a token is verified by the provider of its issuer; a
//! verified token's principal and claims go to authorization, and the request goes on without
//! the token (unless forwarded), with its payload and claims in headers when asked. A request
//! without a token passes unauthenticated; one whose token no provider verifies is refused.

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
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(JwtRuntime { providers })
    }

    /// Authenticates a request, changing its headers as the verifying provider says.
    pub fn authenticate(&self, headers: &mut HeaderMap, uri: &Uri, now: SystemTime) -> Authn {
        let mut found: Vec<(usize, Location, String)> = Vec::new();
        for (i, p) in self.providers.iter().enumerate() {
            for (location, token) in tokens(&p.config, headers, uri) {
                if !found.iter().any(|(_, _, t)| *t == token) {
                    found.push((i, location, token));
                }
            }
        }
        if found.is_empty() {
            return Authn::Missing;
        }
        let mut reason = None;
        for (_, location, token) in &found {
            let issuer = match strait_jwt::issuer_of(token) {
                Ok(i) => i,
                Err(e) => {
                    reason.get_or_insert(e.to_string());
                    continue;
                }
            };
            // The provider of the token's issuer that looks where it was found.
            let provider = self.providers.iter().find(|p| {
                p.config.issuer == issuer
                    && tokens(&p.config, headers, uri)
                        .iter()
                        .any(|(l, t)| l == location && t == token)
            });
            let Some(provider) = provider else {
                reason.get_or_insert("Jwt issuer is not configured".into());
                continue;
            };
            let Some(keys) = &provider.keys else {
                reason.get_or_insert("Jwks remote fetch is failed".into());
                continue;
            };
            match strait_jwt::verify(token, keys, &provider.config.audiences, now) {
                Ok(mut verified) => {
                    pass_on(&provider.config, location, &verified, headers);
                    split_space_delimited(&mut verified, &provider.config.space_delimited_claims);
                    return Authn::Verified(Box::new(verified));
                }
                Err(e) => {
                    reason.get_or_insert(e.to_string());
                }
            }
        }
        Authn::Refused(reason.unwrap_or_else(|| "Jwt verification fails".into()))
    }
}

/// The places a provider looks, Envoy's defaults when it names none.
fn locations(p: &JwtProvider) -> (Vec<TokenHeader>, Vec<String>, Vec<String>) {
    if p.from_headers.is_empty() && p.from_params.is_empty() && p.from_cookies.is_empty() {
        return (
            vec![TokenHeader {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            }],
            vec!["access_token".into()],
            Vec::new(),
        );
    }
    (
        p.from_headers.clone(),
        p.from_params.clone(),
        p.from_cookies.clone(),
    )
}

/// The tokens in a request where provider `p` looks.
fn tokens(p: &JwtProvider, headers: &HeaderMap, uri: &Uri) -> Vec<(Location, String)> {
    let (from_headers, from_params, from_cookies) = locations(p);
    let mut out = Vec::new();
    for h in &from_headers {
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
