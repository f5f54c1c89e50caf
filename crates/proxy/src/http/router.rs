//! Route selection, pure: a route configuration compiled once (regexes built, domains sorted by
//! Envoy's precedence) and matched against a request's method, authority, path, headers and
//! query. Virtual hosts: exact domain, then the longest `*.suffix`, then the longest `prefix.*`,
//! then `*`. Routes: first match in order.

use std::sync::Arc;

use http::request::Parts;
use regex::Regex;
use strait_xds::StringMatch;
use strait_xds::route::{PathMatch, Route, RouteConfiguration};

use super::headers::CorsPolicy;

/// A string matcher ready to run.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
    Present,
}

impl Matcher {
    pub fn compile(m: &StringMatch) -> Result<Matcher, String> {
        Ok(match m {
            StringMatch::Exact(s) => Matcher::Exact(s.clone()),
            StringMatch::Prefix(s) => Matcher::Prefix(s.clone()),
            StringMatch::Suffix(s) => Matcher::Suffix(s.clone()),
            StringMatch::Regex(r) => Matcher::Regex(full_match(r)?),
            StringMatch::Present => Matcher::Present,
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => value == s,
            Matcher::Prefix(s) => value.starts_with(s.as_str()),
            Matcher::Suffix(s) => value.ends_with(s.as_str()),
            Matcher::Regex(r) => r.is_match(value),
            Matcher::Present => true,
        }
    }
}

/// Envoy's regexes match the whole value.
fn full_match(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("regex {pattern:?}: {e}"))
}

#[derive(Debug, Clone)]
enum PathMatcher {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    path: PathMatcher,
    case_sensitive: bool,
    headers: Vec<(String, Matcher, bool)>,
    query: Vec<(String, Matcher)>,
    route: Arc<Route>,
    regex_rewrite: Option<Arc<(Regex, String)>>,
    cors: Option<Arc<CorsPolicy>>,
}

#[derive(Debug, Clone)]
struct CompiledVirtualHost {
    name: String,
    routes: Vec<CompiledRoute>,
}

/// A route configuration ready to match requests.
#[derive(Debug, Clone)]
pub struct Router {
    pub name: String,
    /// Exact domains (a large mesh has thousands: keys and indices kept small).
    exact: foldhash::HashMap<Box<str>, u32>,
    /// (`.suffix`, host index), longest first.
    suffixes: Vec<(String, usize)>,
    /// (`prefix.`, host index), longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    hosts: Vec<CompiledVirtualHost>,
}

/// The matched virtual host's name and route.
#[derive(Debug, Clone)]
pub struct Selected<'a> {
    pub virtual_host: &'a str,
    pub route: &'a Arc<Route>,
    /// The compiled `regex_rewrite` of a forwarding route.
    pub regex_rewrite: Option<&'a Arc<(Regex, String)>>,
    /// The route's CORS policy, compiled.
    pub cors: Option<&'a Arc<CorsPolicy>>,
}

impl Router {
    pub fn compile(config: &RouteConfiguration) -> Result<Router, String> {
        let mut router = Router {
            name: config.name.clone(),
            exact: Default::default(),
            suffixes: vec![],
            prefixes: vec![],
            any: None,
            hosts: Vec::with_capacity(config.virtual_hosts.len()),
        };
        for (i, vh) in config.virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                let d = domain.to_ascii_lowercase();
                if d == "*" {
                    router.any.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    router.suffixes.push((suffix.to_string(), i));
                } else if let Some(prefix) = d.strip_suffix('*') {
                    router.prefixes.push((prefix.to_string(), i));
                } else {
                    router.exact.entry(d.into_boxed_str()).or_insert(i as u32);
                }
            }
            // Sized exactly: collecting through `Result` starts at a capacity of four, and most
            // virtual hosts of a large mesh have one route.
            let mut routes = Vec::with_capacity(vh.routes.len());
            for r in &vh.routes {
                routes
                    .push(compile_route(r).map_err(|e| format!("virtual host {}: {e}", vh.name))?);
            }
            router.hosts.push(CompiledVirtualHost {
                name: vh.name.clone(),
                routes,
            });
        }
        router
            .suffixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        router
            .prefixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(router)
    }

    fn virtual_host(&self, authority: &str) -> Option<usize> {
        // Lower-cased only when it has to be: most authorities already are.
        let host: std::borrow::Cow<'_, str> = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            authority.to_ascii_lowercase().into()
        } else {
            authority.into()
        };
        if let Some(i) = self.exact.get(&*host) {
            return Some(*i as usize);
        }
        if let Some((_, i)) = self
            .suffixes
            .iter()
            .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
        {
            return Some(*i);
        }
        if let Some((_, i)) = self
            .prefixes
            .iter()
            .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
        {
            return Some(*i);
        }
        self.any
    }

    /// The route for a request, or `None` (Envoy answers 404 `NR`).
    pub fn select(&self, parts: &Parts) -> Option<Selected<'_>> {
        let authority = authority_of(&parts.uri, &parts.headers);
        let vh = &self.hosts[self.virtual_host(authority)?];
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let route = vh
            .routes
            .iter()
            .find(|r| route_matches(r, parts, authority, path_and_query))?;
        Some(Selected {
            virtual_host: &vh.name,
            route: &route.route,
            regex_rewrite: route.regex_rewrite.as_ref(),
            cors: route.cors.as_ref(),
        })
    }
}

/// The request's authority: the URI's (HTTP/2, absolute form) or the Host header.
pub fn authority_of<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> &'a str {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

/// The value of query parameter `name` (its first occurrence) in `query`.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// An authority's host and, when it has one, its port.
pub fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

fn compile_route(r: &Arc<Route>) -> Result<CompiledRoute, String> {
    let path = match &r.matching.path {
        PathMatch::Prefix(p) => PathMatcher::Prefix(p.clone()),
        PathMatch::Exact(p) => PathMatcher::Exact(p.clone()),
        PathMatch::Regex(p) => {
            PathMatcher::Regex(full_match(p).map_err(|e| format!("route {}: path {e}", r.name))?)
        }
    };
    let headers = r
        .matching
        .headers
        .iter()
        .map(|h| {
            Matcher::compile(&h.matcher)
                .map(|m| (h.name.to_ascii_lowercase(), m, h.invert))
                .map_err(|e| format!("route {}: header {}: {e}", r.name, h.name))
        })
        .collect::<Result<_, _>>()?;
    let query = r
        .matching
        .query_params
        .iter()
        .map(|q| {
            Matcher::compile(&q.matcher)
                .map(|m| (q.name.clone(), m))
                .map_err(|e| format!("route {}: query parameter {}: {e}", r.name, q.name))
        })
        .collect::<Result<_, _>>()?;
    let regex_rewrite = match &r.action {
        strait_xds::route::Action::Forward(a) => match &a.regex_rewrite {
            Some((pattern, substitution)) => Some(Arc::new((
                Regex::new(pattern)
                    .map_err(|e| format!("route {}: regex rewrite {pattern:?}: {e}", r.name))?,
                envoy_substitution(substitution),
            ))),
            None => None,
        },
        _ => None,
    };
    let cors = r
        .cors
        .as_ref()
        .map(|c| {
            CorsPolicy::compile(c)
                .map(Arc::new)
                .map_err(|e| format!("route {}: CORS allowed origin: {e}", r.name))
        })
        .transpose()?;
    Ok(CompiledRoute {
        path,
        case_sensitive: r.matching.case_sensitive,
        headers,
        query,
        route: r.clone(),
        regex_rewrite,
        cors,
    })
}

/// Envoy's (RE2's) `\1` group references, in the regex crate's `${1}` form.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    n.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{n}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn route_matches(r: &CompiledRoute, parts: &Parts, authority: &str, path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or("");
    let path_ok = match &r.path {
        PathMatcher::Prefix(p) if r.case_sensitive => path_and_query.starts_with(p.as_str()),
        PathMatcher::Prefix(p) => path_and_query
            .get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p)),
        PathMatcher::Exact(p) if r.case_sensitive => path == p,
        PathMatcher::Exact(p) => path.eq_ignore_ascii_case(p),
        PathMatcher::Regex(re) => re.is_match(path),
    };
    if !path_ok {
        return false;
    }
    for (name, m, invert) in &r.headers {
        let value = header_value(parts, name, authority);
        let ok = value.is_some_and(|v| m.matches(&v));
        if ok == *invert {
            return false;
        }
    }
    if !r.query.is_empty() {
        let query = path_and_query.split_once('?').map(|(_, q)| q).unwrap_or("");
        for (name, m) in &r.query {
            let value = query_param(query, name);
            if !value.is_some_and(|v| m.matches(v)) {
                return false;
            }
        }
    }
    true
}

/// A header's value for matching; a repeated header's values joined with commas, as Envoy
/// matches them (borrowed in the usual case of one value).
fn header_value<'a>(
    parts: &'a Parts,
    name: &str,
    authority: &'a str,
) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    match name {
        ":method" => Some(Cow::Borrowed(parts.method.as_str())),
        ":authority" | "host" => Some(Cow::Borrowed(authority)),
        ":path" => parts
            .uri
            .path_and_query()
            .map(|p| Cow::Borrowed(p.as_str())),
        ":scheme" => Some(Cow::Borrowed(parts.uri.scheme_str().unwrap_or("http"))),
        _ => {
            let mut values = parts.headers.get_all(name).iter();
            let first = values.next()?.to_str().ok()?;
            let mut joined: Option<String> = None;
            for v in values {
                let v = v.to_str().ok()?;
                let j = joined.get_or_insert_with(|| first.to_string());
                j.push(',');
                j.push_str(v);
            }
            Some(joined.map_or(Cow::Borrowed(first), Cow::Owned))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_xds::route::{
        Action, HeaderEdits, HeaderMatch, QueryMatch, RouteMatch, VirtualHost,
    };

    fn route(name: &str, matching: RouteMatch) -> Route {
        Route {
            name: name.into(),
            matching,
            action: Action::DirectResponse {
                status: 200,
                body: None,
            },
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
            fault: None,
            cors: None,
        }
    }

    fn config(hosts: Vec<(&str, Vec<&str>, Vec<Route>)>) -> Router {
        Router::compile(&RouteConfiguration {
            name: "80".into(),
            virtual_hosts: hosts
                .into_iter()
                .map(|(n, d, r)| VirtualHost {
                    name: n.into(),
                    domains: d.into_iter().map(String::from).collect(),
                    routes: r.into_iter().map(Arc::new).collect(),
                })
                .collect(),
        })
        .unwrap()
    }

    fn request(authority: &str, path: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(path).header("host", authority);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn selected(r: &Router, p: &Parts) -> Option<String> {
        r.select(p)
            .map(|s| format!("{}/{}", s.virtual_host, s.route.name))
    }

    #[test]
    fn the_router_shares_the_configurations_routes_rather_than_copying_them() {
        let config = RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![VirtualHost {
                name: "reviews".into(),
                domains: vec!["reviews".into()],
                routes: vec![Arc::new(route("r", RouteMatch::any()))],
            }],
        };
        let router = Router::compile(&config).unwrap();
        let chosen = router.select(&request("reviews", "/", &[])).unwrap();
        assert!(Arc::ptr_eq(
            chosen.route,
            &config.virtual_hosts[0].routes[0]
        ));
    }

    #[test]
    fn virtual_hosts_by_envoy_precedence() {
        let r = config(vec![
            ("any", vec!["*"], vec![route("a", RouteMatch::any())]),
            (
                "suffix",
                vec!["*.example.com"],
                vec![route("s", RouteMatch::any())],
            ),
            (
                "longer",
                vec!["*.api.example.com"],
                vec![route("l", RouteMatch::any())],
            ),
            (
                "prefix",
                vec!["reviews.*"],
                vec![route("p", RouteMatch::any())],
            ),
            (
                "exact",
                vec!["reviews.bookinfo.example.com", "reviews:9080"],
                vec![route("e", RouteMatch::any())],
            ),
        ]);
        assert_eq!(
            selected(&r, &request("reviews.bookinfo.example.com", "/", &[])).unwrap(),
            "exact/e"
        );
        assert_eq!(
            selected(&r, &request("Reviews:9080", "/", &[])).unwrap(),
            "exact/e"
        );
        assert_eq!(
            selected(&r, &request("v1.api.example.com", "/", &[])).unwrap(),
            "longer/l"
        );
        assert_eq!(
            selected(&r, &request("www.example.com", "/", &[])).unwrap(),
            "suffix/s"
        );
        assert_eq!(
            selected(&r, &request("reviews.other", "/", &[])).unwrap(),
            "prefix/p"
        );
        assert_eq!(
            selected(&r, &request("elsewhere", "/", &[])).unwrap(),
            "any/a"
        );
    }

    #[test]
    fn no_virtual_host_no_route() {
        let r = config(vec![("x", vec!["x"], vec![route("x", RouteMatch::any())])]);
        assert_eq!(selected(&r, &request("y", "/", &[])), None);
    }

    #[test]
    fn paths_headers_and_query_parameters() {
        let m = |path: PathMatch, case_sensitive: bool| RouteMatch {
            path,
            case_sensitive,
            headers: vec![],
            query_params: vec![],
        };
        let mut with_header = m(PathMatch::Prefix("/".into()), true);
        with_header.headers = vec![
            HeaderMatch {
                name: "end-user".into(),
                matcher: StringMatch::Exact("jason".into()),
                invert: false,
            },
            HeaderMatch {
                name: ":method".into(),
                matcher: StringMatch::Regex("GET|HEAD".into()),
                invert: false,
            },
            HeaderMatch {
                name: "x-canary".into(),
                matcher: StringMatch::Present,
                invert: true,
            },
        ];
        let mut joined = m(PathMatch::Prefix("/joined".into()), true);
        joined.headers = vec![HeaderMatch {
            name: "x-tag".into(),
            matcher: StringMatch::Exact("a,b".into()),
            invert: false,
        }];
        let mut with_query = m(PathMatch::Prefix("/q".into()), true);
        with_query.query_params = vec![QueryMatch {
            name: "v".into(),
            matcher: StringMatch::Exact("2".into()),
        }];
        let r = config(vec![(
            "h",
            vec!["*"],
            vec![
                route("exact", m(PathMatch::Exact("/login".into()), true)),
                route("regex", m(PathMatch::Regex("/api/v[0-9]+/.*".into()), true)),
                route("nocase", m(PathMatch::Prefix("/STATIC".into()), false)),
                route("jason", with_header),
                route("query", with_query),
                route("joined", joined),
            ],
        )]);
        let s = |path: &str, headers: &[(&str, &str)]| {
            selected(&r, &request("h", path, headers)).map(|s| s[2..].to_string())
        };
        assert_eq!(s("/login", &[]).as_deref(), Some("exact"));
        assert_eq!(s("/login?next=/", &[]).as_deref(), Some("exact"));
        assert_eq!(s("/login/x", &[]), None);
        assert_eq!(s("/api/v2/users", &[]).as_deref(), Some("regex"));
        assert_eq!(s("/api/vx/users", &[]), None);
        assert_eq!(s("/static/app.js", &[]).as_deref(), Some("nocase"));
        assert_eq!(s("/x", &[("end-user", "jason")]).as_deref(), Some("jason"));
        assert_eq!(s("/x", &[("end-user", "jason"), ("x-canary", "1")]), None);
        assert_eq!(s("/x", &[("end-user", "bob")]), None);
        // A repeated header is matched as its values joined with commas (Envoy's rule).
        assert_eq!(
            s("/x", &[("end-user", "jason"), ("end-user", "bob")]),
            None,
            "\"jason,bob\" is not \"jason\""
        );
        assert_eq!(s("/q?a=1&v=2", &[]).as_deref(), Some("query"));
        assert_eq!(s("/q?v=3", &[]), None);
        assert_eq!(
            s("/joined", &[("x-tag", "a"), ("x-tag", "b")]).as_deref(),
            Some("joined")
        );
        assert_eq!(s("/joined", &[("x-tag", "a")]), None);
    }

    #[test]
    fn envoy_group_references_translate() {
        assert_eq!(
            envoy_substitution("/\\2?v=\\1&cost=$5"),
            "/${2}?v=${1}&cost=$$5"
        );
    }

    #[test]
    fn a_bad_regex_is_rejected_with_the_route_named() {
        let bad = route(
            "broken",
            RouteMatch {
                path: PathMatch::Regex("(".into()),
                case_sensitive: true,
                headers: vec![],
                query_params: vec![],
            },
        );
        let err = Router::compile(&RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![VirtualHost {
                name: "vh".into(),
                domains: vec!["*".into()],
                routes: vec![Arc::new(bad)],
            }],
        })
        .unwrap_err();
        assert!(
            err.contains("virtual host vh: route broken: path regex"),
            "{err}"
        );
    }
}
