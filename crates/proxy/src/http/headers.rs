//! Header work, pure: the route's edits, hop-by-hop headers a proxy must not forward, path and
//! host rewrites, CORS, and local replies (gRPC-shaped for gRPC requests, as Envoy does).

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{StatusCode, Uri};
use strait_xds::route::{Cors, HeaderEdits, PathMatch};

use super::body;
use crate::http::router::Matcher;
use crate::upstream::pool::Body;

/// Applies `set`, `add` and `remove` (in Envoy's order: remove last wins over nothing; we
/// remove first, then set, then add, as Istio's `headers` operations read).
pub fn apply_edits(headers: &mut HeaderMap, edits: &HeaderEdits) {
    for name in edits.remove() {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(n);
        }
    }
    for (name, value) in edits.set() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in edits.add() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

/// Header names the proxy reads or writes on every request, parsed once rather than per use.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub const ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes what must not go upstream as it came: connection-specific headers (RFC 9110
/// §7.6.1), keeping `Upgrade`/`Connection` when the request is an upgrade being passed through
/// and `te: trailers` (gRPC needs it), and a downstream's `x-envoy-attempt-count` (the proxy
/// sets its own on a retry).
pub fn strip_for_upstream(headers: &mut HeaderMap, upgrading: bool) {
    strip(headers, upgrading, true);
}

/// Removes connection-specific headers from a response for HTTP/2, where they are malformed
/// (an HTTP/1.1 upstream's `connection`, `keep-alive`, `transfer-encoding`).
pub fn strip_connection_specific(headers: &mut HeaderMap) {
    strip(headers, false, false);
}

fn strip(headers: &mut HeaderMap, upgrading: bool, attempt_count: bool) {
    // One pass over the names first: nearly every message has none of these, and it is
    // cheaper than looking each up.
    let found = headers.iter().any(|(name, value)| match name.as_str() {
        "te" => !value.as_bytes().eq_ignore_ascii_case(b"trailers"),
        "connection" | "upgrade" | "keep-alive" | "proxy-connection" | "transfer-encoding" => true,
        "x-envoy-attempt-count" => attempt_count,
        _ => false,
    });
    if !found {
        return;
    }
    if !upgrading {
        // Headers the Connection header names are hop-by-hop too.
        let named: Vec<HeaderName> = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
        headers.remove(http::header::CONNECTION);
        headers.remove(http::header::UPGRADE);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(http::header::TRANSFER_ENCODING);
    if attempt_count {
        headers.remove(ATTEMPT_COUNT);
    }
    if headers
        .get(http::header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(http::header::TE);
    }
}

/// The path after a route's rewrite: the matched prefix replaced, or the regex substituted.
pub fn rewrite_path(
    path_and_query: &str,
    matched: &PathMatch,
    prefix_rewrite: Option<&str>,
    regex_rewrite: Option<&(regex::Regex, String)>,
) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut new_path = path.to_string();
    if let Some(rewrite) = prefix_rewrite {
        let prefix = match matched {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p.as_str(),
            PathMatch::Regex(_) => path,
        };
        if path.len() >= prefix.len() {
            new_path = format!("{rewrite}{}", &path[prefix.len()..]);
        }
    } else if let Some((re, substitution)) = regex_rewrite {
        // Envoy's `$1`-style references become the regex crate's `${1}`.
        new_path = re.replace_all(path, substitution.as_str()).into_owned();
    }
    if new_path.is_empty() {
        new_path.push('/');
    }
    match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    }
}

/// Envoy's HTTP → gRPC status mapping for local replies.
pub fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// A reply the proxy makes itself (no route, no healthy upstream, overflow, timeout, faults).
pub fn local_reply(status: StatusCode, message: &str, grpc: bool) -> http::Response<Body> {
    if grpc {
        let mut r = http::Response::new(body::empty());
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(GRPC_STATUS, HeaderValue::from(grpc_status_for(status)));
        if let Ok(v) = HeaderValue::from_str(message) {
            h.insert(GRPC_MESSAGE, v);
        }
        return r;
    }
    let mut r = http::Response::new(body::full(message.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    r
}

/// The CORS policy ready to use.
#[derive(Debug)]
pub struct CorsPolicy {
    origins: Vec<Matcher>,
    config: Cors,
}

impl CorsPolicy {
    pub fn compile(c: &Cors) -> Result<CorsPolicy, String> {
        Ok(CorsPolicy {
            origins: c
                .allow_origins
                .iter()
                .map(Matcher::compile)
                .collect::<Result<_, _>>()?,
            config: c.clone(),
        })
    }

    fn allowed_origin<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = headers.get(http::header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|m| m.matches(text))
            .then_some(origin)
    }

    /// A preflight answered here, or `None` when the request is not one.
    pub fn preflight(
        &self,
        method: &http::Method,
        headers: &HeaderMap,
    ) -> Option<http::Response<Body>> {
        if method != http::Method::OPTIONS
            || !headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let mut r = http::Response::new(body::empty());
        if let Some(origin) = self.allowed_origin(headers) {
            let h = r.headers_mut();
            h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            let join = |v: &[String]| HeaderValue::from_str(&v.join(",")).ok();
            if let Some(v) = join(&self.config.allow_methods) {
                h.insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, v);
            }
            if let Some(v) = join(&self.config.allow_headers) {
                h.insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
            if let Some(age) = self.config.max_age_secs {
                h.insert(http::header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
            }
            if self.config.allow_credentials == Some(true) {
                h.insert(
                    http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        Some(r)
    }

    /// Headers added to an actual response.
    pub fn decorate(&self, request: &HeaderMap, response: &mut HeaderMap) {
        if let Some(origin) = self.allowed_origin(request) {
            response.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if self.config.allow_credentials == Some(true) {
                response.insert(
                    http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Ok(v) = HeaderValue::from_str(&self.config.expose_headers.join(","))
                && !self.config.expose_headers.is_empty()
            {
                response.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
            }
        }
    }
}

/// The authority a request goes upstream with, kept in the form it arrived in (HTTP/2's
/// `:authority`, HTTP/1.1's `Host`, or the route's rewrite) so that passing it on in the same
/// form shares its bytes instead of copying them.
pub enum UpstreamAuthority {
    Uri(Authority),
    Host(HeaderValue),
}

impl UpstreamAuthority {
    pub fn as_str(&self) -> &str {
        match self {
            UpstreamAuthority::Uri(a) => a.as_str(),
            UpstreamAuthority::Host(v) => v.to_str().unwrap_or(""),
        }
    }

    /// As HTTP/1.1's `Host` header.
    pub fn host_value(&self) -> Option<HeaderValue> {
        match self {
            UpstreamAuthority::Uri(a) => HeaderValue::from_str(a.as_str()).ok(),
            UpstreamAuthority::Host(v) => Some(v.clone()),
        }
    }

    /// As the authority of HTTP/2's absolute URI (`:authority`).
    pub fn uri_authority(&self) -> Option<Authority> {
        match self {
            UpstreamAuthority::Uri(a) => Some(a.clone()),
            UpstreamAuthority::Host(v) => Authority::try_from(v.as_bytes()).ok(),
        }
    }
}

/// Builds the upstream URI: origin form for HTTP/1.1, absolute for HTTP/2 (which needs an
/// authority).
pub fn upstream_uri(
    path_and_query: &PathAndQuery,
    authority: Option<&Authority>,
    absolute: bool,
) -> Option<Uri> {
    if absolute {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority?.clone());
        parts.path_and_query = Some(path_and_query.clone());
        Uri::from_parts(parts).ok()
    } else {
        Some(Uri::from(path_and_query.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_authority_goes_on_in_either_form() {
        let path = PathAndQuery::from_static("/a?b");
        let from_h2 = UpstreamAuthority::Uri(Authority::from_static("reviews:9080"));
        let from_h1 = UpstreamAuthority::Host(HeaderValue::from_static("reviews:9080"));
        for a in [&from_h2, &from_h1] {
            assert_eq!(a.as_str(), "reviews:9080");
            assert_eq!(a.host_value().unwrap(), "reviews:9080");
            let uri = upstream_uri(&path, a.uri_authority().as_ref(), true).unwrap();
            assert_eq!(uri, "http://reviews:9080/a?b");
        }
        assert_eq!(upstream_uri(&path, None, false).unwrap(), "/a?b");
        // A Host value that is no URI authority cannot go to an HTTP/2 host.
        let odd = UpstreamAuthority::Host(HeaderValue::from_static("a b"));
        assert!(odd.uri_authority().is_none());
        assert!(upstream_uri(&path, None, true).is_none());
    }

    #[test]
    fn edits_remove_set_and_add() {
        let mut h = HeaderMap::new();
        h.insert("x-old", HeaderValue::from_static("1"));
        h.insert("x-set", HeaderValue::from_static("before"));
        apply_edits(
            &mut h,
            &strait_xds::route::HeaderEditList {
                set: vec![("x-set".into(), "after".into())],
                add: vec![("x-add".into(), "a".into()), ("x-add".into(), "b".into())],
                remove: vec!["x-old".into()],
            }
            .into(),
        );
        assert!(!h.contains_key("x-old"));
        assert_eq!(h["x-set"], "after");
        assert_eq!(h.get_all("x-add").iter().count(), 2);
    }

    #[test]
    fn hop_by_hop_headers_and_the_attempt_count_go_but_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert("x-envoy-attempt-count", HeaderValue::from_static("7"));
        strip_for_upstream(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["te", "x-kept"]);
        // Each alone is found too (the one pass that looks before removing).
        for (name, value) in [
            ("connection", "close"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("x-envoy-attempt-count", "2"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            h.insert("x-kept", HeaderValue::from_static("1"));
            strip_for_upstream(&mut h, false);
            assert_eq!(h.len(), 1, "{name} stays");
        }
        // An upgrade passed through keeps its Connection and Upgrade.
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        strip_for_upstream(&mut h, true);
        assert_eq!(h.len(), 2);
        // A response keeps an `x-envoy-attempt-count` it carries; its hop-by-hop headers go.
        let mut h = HeaderMap::new();
        h.insert("x-envoy-attempt-count", HeaderValue::from_static("2"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        strip_connection_specific(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-envoy-attempt-count"]);
    }

    #[test]
    fn rewrites() {
        let prefix = PathMatch::Prefix("/v1/reviews".into());
        assert_eq!(
            rewrite_path("/v1/reviews/7?x=1", &prefix, Some("/reviews"), None),
            "/reviews/7?x=1"
        );
        assert_eq!(rewrite_path("/v1/reviews", &prefix, Some(""), None), "/");
        let re = (
            regex::Regex::new("^/api/(v[0-9]+)/(.*)$").unwrap(),
            "/${2}?ver=${1}".to_string(),
        );
        assert_eq!(
            rewrite_path(
                "/api/v2/items",
                &PathMatch::Prefix("/".into()),
                None,
                Some(&re)
            ),
            "/items?ver=v2"
        );
    }

    #[test]
    fn grpc_requests_get_grpc_local_replies() {
        let r = local_reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream", true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        let r = local_reply(StatusCode::NOT_FOUND, "", false);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
