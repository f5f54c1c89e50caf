//! Authorization at run time: a chain's RBAC filters compiled once (regexes built, CIDRs parsed)
//! and evaluated, purely, against what is known of a connection or request. Envoy's semantics:
//! filters in order; a DENY filter denies when one of its policies matches; an ALLOW filter
//! denies when none does; a LOG filter marks a match for the access log; shadow filters only
//! report what they would have decided.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use strait_xds::StringMatch;
use strait_xds::jwt::AuthAttribute;
use strait_xds::rbac::{Permission, Principal, Rbac, RbacAction};
use strait_xds::route::HeaderMatch;

use crate::http::router::{Matcher, split_port};
use crate::listen::chain::Cidr;

/// What is known when deciding.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub peer: SocketAddr,
    pub destination: SocketAddr,
    /// The peer's SPIFFE ID, when mTLS verified it.
    pub principal: Option<&'a str>,
    pub server_name: Option<&'a str>,
    /// The request, for HTTP; `None` for a TCP connection.
    pub request: Option<RequestFacts<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a http::HeaderMap,
    pub authority: &'a str,
    /// The request's verified JWT, if it carried one.
    pub auth: Option<&'a strait_jwt::Verified>,
}

/// The outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `Some` when denied: the DENY policy that matched, or `None` inside when no ALLOW
    /// policy did (Envoy's `rbac_access_denied_matched_policy[none]`).
    pub denied: Option<Option<Arc<str>>>,
    /// The LOG (Istio AUDIT) policy that matched.
    pub audit: Option<Arc<str>>,
    /// What the shadow (dry-run) filters would have decided: `Some(true)` allowed.
    pub shadow_allowed: Option<bool>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.denied.is_none()
    }

    /// Envoy's response code details for a denial.
    pub fn details(&self) -> Option<String> {
        let policy = self.denied.as_ref()?;
        Some(format!(
            "rbac_access_denied_matched_policy[{}]",
            policy.as_deref().unwrap_or("none")
        ))
    }
}

/// A chain's RBAC filters, ready to evaluate.
#[derive(Debug)]
pub struct Authorizer {
    filters: Vec<Filter>,
}

#[derive(Debug)]
struct Filter {
    action: RbacAction,
    shadow: bool,
    policies: Vec<Policy>,
}

#[derive(Debug)]
struct Policy {
    name: Arc<str>,
    permissions: Vec<Perm>,
    principals: Vec<Who>,
}

#[derive(Debug)]
enum Perm {
    Any,
    And(Vec<Perm>),
    Or(Vec<Perm>),
    Not(Box<Perm>),
    Header(Header),
    Host(Matcher),
    Path(Matcher),
    DestinationIp(Cidr),
    DestinationPort(u16),
    ServerName(Matcher),
}

#[derive(Debug)]
enum Who {
    Any,
    And(Vec<Who>),
    Or(Vec<Who>),
    Not(Box<Who>),
    /// `None`: any authenticated peer.
    Authenticated(Option<Matcher>),
    DirectRemoteIp(Cidr),
    RemoteIp(Cidr),
    Header(Header),
    /// An attribute of the request's verified JWT; any of a list attribute's values.
    RequestAuth(AuthAttribute, Matcher),
}

#[derive(Debug)]
struct Header {
    name: String,
    matcher: Matcher,
    invert: bool,
}

impl Authorizer {
    /// `None` when there is nothing to evaluate.
    pub fn compile(filters: &[Rbac]) -> Result<Option<Authorizer>, String> {
        if filters.is_empty() {
            return Ok(None);
        }
        let filters = filters
            .iter()
            .map(|f| {
                Ok(Filter {
                    action: f.action,
                    shadow: f.shadow,
                    policies: f
                        .policies
                        .iter()
                        .map(|p| {
                            let name = &p.name;
                            Ok(Policy {
                                name: Arc::from(name.as_str()),
                                permissions: p
                                    .permissions
                                    .iter()
                                    .map(perm)
                                    .collect::<Result<_, String>>()
                                    .map_err(|e| format!("RBAC policy {name}: {e}"))?,
                                principals: p
                                    .principals
                                    .iter()
                                    .map(who)
                                    .collect::<Result<_, String>>()
                                    .map_err(|e| format!("RBAC policy {name}: {e}"))?,
                            })
                        })
                        .collect::<Result<_, String>>()?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Some(Authorizer { filters }))
    }

    pub fn evaluate(&self, facts: &Facts<'_>) -> Verdict {
        let mut verdict = Verdict::default();
        for f in &self.filters {
            let matched = f
                .policies
                .iter()
                .find(|p| p.matches(facts))
                .map(|p| p.name.clone());
            if f.shadow {
                let allowed = match f.action {
                    RbacAction::Allow => matched.is_some(),
                    RbacAction::Deny => matched.is_none(),
                    RbacAction::Log => true,
                };
                verdict.shadow_allowed = Some(verdict.shadow_allowed.unwrap_or(true) && allowed);
                continue;
            }
            match f.action {
                RbacAction::Log => {
                    if verdict.audit.is_none() {
                        verdict.audit = matched;
                    }
                }
                RbacAction::Deny => {
                    if matched.is_some() && verdict.denied.is_none() {
                        verdict.denied = Some(matched);
                    }
                }
                RbacAction::Allow => {
                    if matched.is_none() && verdict.denied.is_none() {
                        verdict.denied = Some(None);
                    }
                }
            }
        }
        verdict
    }
}

impl Policy {
    fn matches(&self, f: &Facts<'_>) -> bool {
        self.permissions.iter().any(|p| p.matches(f))
            && self.principals.iter().any(|p| p.matches(f))
    }
}

impl Perm {
    fn matches(&self, f: &Facts<'_>) -> bool {
        match self {
            Perm::Any => true,
            Perm::And(v) => v.iter().all(|p| p.matches(f)),
            Perm::Or(v) => v.iter().any(|p| p.matches(f)),
            Perm::Not(p) => !p.matches(f),
            Perm::Header(h) => h.matches(f),
            Perm::Host(m) => f.request.is_some_and(|r| {
                let (host, _) = split_port(r.authority);
                m.matches(&host.to_ascii_lowercase())
            }),
            Perm::Path(m) => f.request.is_some_and(|r| m.matches(r.uri.path())),
            Perm::DestinationIp(c) => c.contains(f.destination.ip()),
            Perm::DestinationPort(p) => f.destination.port() == *p,
            Perm::ServerName(m) => f.server_name.is_some_and(|s| m.matches(s)),
        }
    }
}

impl Who {
    fn matches(&self, f: &Facts<'_>) -> bool {
        match self {
            Who::Any => true,
            Who::And(v) => v.iter().all(|p| p.matches(f)),
            Who::Or(v) => v.iter().any(|p| p.matches(f)),
            Who::Not(p) => !p.matches(f),
            Who::Authenticated(m) => match (f.principal, m) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(id), Some(m)) => m.matches(id),
            },
            Who::DirectRemoteIp(c) => c.contains(f.peer.ip()),
            Who::RemoteIp(c) => c.contains(remote_ip(f)),
            Who::Header(h) => h.matches(f),
            Who::RequestAuth(attribute, m) => {
                let Some(v) = f.request.and_then(|r| r.auth) else {
                    return false;
                };
                crate::jwt::attribute_values(v, attribute)
                    .iter()
                    .any(|value| {
                        matches!(m, Matcher::Present) && !value.is_empty() || m.matches(value)
                    })
            }
        }
    }
}

impl Header {
    fn matches(&self, f: &Facts<'_>) -> bool {
        let value = f.request.and_then(|r| header_value(&r, &self.name));
        let hit = match (&value, &self.matcher) {
            (None, _) => false,
            (Some(_), Matcher::Present) => true,
            (Some(v), m) => m.matches(v),
        };
        hit != self.invert
    }
}

/// A header's value for matching: pseudo-headers from the request line, repeated headers
/// joined with commas (Envoy's rule).
fn header_value<'a>(r: &RequestFacts<'a>, name: &str) -> Option<Cow<'a, str>> {
    match name {
        ":method" => Some(Cow::Borrowed(r.method.as_str())),
        ":authority" | "host" => Some(Cow::Borrowed(r.authority)),
        ":path" => r.uri.path_and_query().map(|p| Cow::Borrowed(p.as_str())),
        ":scheme" => Some(Cow::Borrowed(r.uri.scheme_str().unwrap_or("http"))),
        _ => {
            let mut values = r
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok());
            let first = values.next()?;
            match values.next() {
                None => Some(Cow::Borrowed(first)),
                Some(second) => {
                    let mut joined = format!("{first},{second}");
                    for v in values {
                        joined.push(',');
                        joined.push_str(v);
                    }
                    Some(Cow::Owned(joined))
                }
            }
        }
    }
}

/// The original client: the last `X-Forwarded-For` entry (no trusted hops), else the peer.
fn remote_ip(f: &Facts<'_>) -> IpAddr {
    f.request
        .and_then(|r| r.headers.get_all("x-forwarded-for").iter().next_back())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f.peer.ip())
}

fn header(h: &HeaderMatch) -> Result<Header, String> {
    Ok(Header {
        name: h.name.to_ascii_lowercase(),
        matcher: Matcher::compile(&h.matcher)?,
        invert: h.invert,
    })
}

fn perm(p: &Permission) -> Result<Perm, String> {
    Ok(match p {
        Permission::Any => Perm::Any,
        Permission::And(v) => Perm::And(v.iter().map(perm).collect::<Result<_, _>>()?),
        Permission::Or(v) => Perm::Or(v.iter().map(perm).collect::<Result<_, _>>()?),
        Permission::Not(p) => Perm::Not(Box::new(perm(p)?)),
        Permission::Header(h) => Perm::Header(header(h)?),
        Permission::Host(m) => Perm::Host(Matcher::compile(m)?),
        Permission::Path(m) => Perm::Path(Matcher::compile(m)?),
        Permission::DestinationIp(c) => Perm::DestinationIp(Cidr::parse(c)?),
        Permission::DestinationPort(p) => Perm::DestinationPort(*p),
        Permission::ServerName(m) => Perm::ServerName(Matcher::compile(m)?),
    })
}

fn who(p: &Principal) -> Result<Who, String> {
    Ok(match p {
        Principal::Any => Who::Any,
        Principal::And(v) => Who::And(v.iter().map(who).collect::<Result<_, _>>()?),
        Principal::Or(v) => Who::Or(v.iter().map(who).collect::<Result<_, _>>()?),
        Principal::Not(p) => Who::Not(Box::new(who(p)?)),
        Principal::Authenticated(StringMatch::Present) => Who::Authenticated(None),
        Principal::Authenticated(m) => Who::Authenticated(Some(Matcher::compile(m)?)),
        Principal::DirectRemoteIp(c) => Who::DirectRemoteIp(Cidr::parse(c)?),
        Principal::RemoteIp(c) => Who::RemoteIp(Cidr::parse(c)?),
        Principal::Header(h) => Who::Header(header(h)?),
        Principal::RequestAuth { attribute, value } => {
            Who::RequestAuth(attribute.clone(), Matcher::compile(value)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_xds::rbac::RbacPolicy;

    fn policy(name: &str, permissions: Vec<Permission>, principals: Vec<Principal>) -> RbacPolicy {
        RbacPolicy {
            name: name.into(),
            permissions,
            principals,
        }
    }

    fn rbac(action: RbacAction, policies: Vec<RbacPolicy>) -> Rbac {
        Rbac {
            action,
            policies,
            shadow: false,
        }
    }

    struct Req {
        method: http::Method,
        uri: http::Uri,
        headers: http::HeaderMap,
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Req {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Req {
            method: method.parse().unwrap(),
            uri: path.parse().unwrap(),
            headers: h,
        }
    }

    fn facts<'a>(r: Option<&'a Req>, principal: Option<&'a str>, peer: &str) -> Facts<'a> {
        Facts {
            peer: format!("{peer}:40000").parse().unwrap(),
            destination: "10.0.0.5:8000".parse().unwrap(),
            principal,
            server_name: None,
            request: r.map(|r| RequestFacts {
                method: &r.method,
                uri: &r.uri,
                headers: &r.headers,
                authority: "HTTPBIN.foo:8000",
                auth: None,
            }),
        }
    }

    #[test]
    fn request_principals_and_claims_match_the_verified_token_only() {
        use strait_xds::jwt::AuthAttribute;
        let allow = vec![rbac(
            RbacAction::Allow,
            vec![policy(
                "jwt",
                vec![Permission::Any],
                vec![Principal::And(vec![
                    Principal::RequestAuth {
                        attribute: AuthAttribute::Principal,
                        value: StringMatch::Prefix("https://issuer/".into()),
                    },
                    Principal::RequestAuth {
                        attribute: AuthAttribute::Claim(vec!["realm".into(), "roles".into()]),
                        value: StringMatch::Exact("admin".into()),
                    },
                ])],
            )],
        )];
        let a = Authorizer::compile(&allow).unwrap().unwrap();
        let token = |roles: serde_json::Value| strait_jwt::Verified {
            issuer: "https://issuer".into(),
            subject: "alice".into(),
            audiences: vec![],
            presenter: None,
            claims: serde_json::json!({"realm": {"roles": roles}})
                .as_object()
                .unwrap()
                .clone(),
            payload: String::new(),
        };
        let r = req("GET", "/", &[]);
        let with = |v: &strait_jwt::Verified| {
            let mut f = facts(Some(&r), None, "10.0.0.9");
            if let Some(req) = f.request.as_mut() {
                req.auth = Some(v);
            }
            a.evaluate(&f).denied.is_none()
        };
        assert!(with(&token(serde_json::json!(["user", "admin"]))));
        assert!(with(&token(serde_json::json!("admin"))));
        assert!(!with(&token(serde_json::json!(["user"]))));
        // Without a verified token nothing about one matches.
        assert!(
            a.evaluate(&facts(Some(&r), None, "10.0.0.9"))
                .denied
                .is_some()
        );
    }

    fn sleep_allowed_to_get() -> Vec<Rbac> {
        vec![
            rbac(
                RbacAction::Deny,
                vec![policy(
                    "deny-admin",
                    vec![Permission::Path(StringMatch::Prefix("/admin/".into()))],
                    vec![Principal::Any],
                )],
            ),
            rbac(
                RbacAction::Allow,
                vec![policy(
                    "allow-sleep-get",
                    vec![Permission::And(vec![
                        Permission::Header(HeaderMatch {
                            name: ":method".into(),
                            matcher: StringMatch::Exact("GET".into()),
                            invert: false,
                        }),
                        Permission::Host(StringMatch::Exact("httpbin.foo".into())),
                    ])],
                    vec![Principal::Authenticated(StringMatch::Exact(
                        "spiffe://cluster.local/ns/foo/sa/sleep".into(),
                    ))],
                )],
            ),
        ]
    }

    #[test]
    fn deny_comes_before_allow_and_unmatched_requests_are_denied() {
        let a = Authorizer::compile(&sleep_allowed_to_get())
            .unwrap()
            .unwrap();
        let sleep = Some("spiffe://cluster.local/ns/foo/sa/sleep");
        let get = req("GET", "/info?x=1", &[]);
        assert!(a.evaluate(&facts(Some(&get), sleep, "10.0.0.9")).allowed());
        let admin = req("GET", "/admin/x", &[]);
        let v = a.evaluate(&facts(Some(&admin), sleep, "10.0.0.9"));
        assert_eq!(v.denied, Some(Some(Arc::from("deny-admin"))));
        assert_eq!(
            v.details().unwrap(),
            "rbac_access_denied_matched_policy[deny-admin]"
        );
        let post = req("POST", "/info", &[]);
        let v = a.evaluate(&facts(Some(&post), sleep, "10.0.0.9"));
        assert_eq!(v.denied, Some(None));
        // Another identity, and no identity at all (plaintext).
        let other = Some("spiffe://cluster.local/ns/bar/sa/sleep");
        assert!(!a.evaluate(&facts(Some(&get), other, "10.0.0.9")).allowed());
        assert!(!a.evaluate(&facts(Some(&get), None, "10.0.0.9")).allowed());
    }

    #[test]
    fn an_allow_filter_without_policies_denies_everything() {
        let a = Authorizer::compile(&[rbac(RbacAction::Allow, vec![])])
            .unwrap()
            .unwrap();
        assert!(!a.evaluate(&facts(None, None, "10.0.0.9")).allowed());
        assert!(Authorizer::compile(&[]).unwrap().is_none());
    }

    #[test]
    fn ips_headers_and_shadow_and_log_filters() {
        let filters = vec![
            rbac(
                RbacAction::Log,
                vec![policy(
                    "audit-token",
                    vec![Permission::Any],
                    vec![Principal::Header(HeaderMatch {
                        name: "x-token".into(),
                        matcher: StringMatch::Present,
                        invert: false,
                    })],
                )],
            ),
            rbac(
                RbacAction::Deny,
                vec![policy(
                    "deny-quarantine",
                    vec![Permission::Any],
                    vec![Principal::Or(vec![
                        Principal::DirectRemoteIp("192.0.2.0/24".into()),
                        Principal::RemoteIp("198.51.100.7".into()),
                    ])],
                )],
            ),
            Rbac {
                action: RbacAction::Allow,
                policies: vec![policy(
                    "trial",
                    vec![Permission::never()],
                    vec![Principal::Any],
                )],
                shadow: true,
            },
        ];
        let a = Authorizer::compile(&filters).unwrap().unwrap();
        let plain = req("GET", "/", &[("x-token", "a"), ("x-token", "b")]);
        let v = a.evaluate(&facts(Some(&plain), None, "10.0.0.9"));
        assert!(v.allowed());
        assert_eq!(v.audit.as_deref(), Some("audit-token"));
        assert_eq!(v.shadow_allowed, Some(false));
        assert!(
            !a.evaluate(&facts(Some(&plain), None, "192.0.2.4"))
                .allowed()
        );
        let forwarded = req(
            "GET",
            "/",
            &[("x-forwarded-for", "203.0.113.1, 198.51.100.7")],
        );
        assert!(
            !a.evaluate(&facts(Some(&forwarded), None, "10.0.0.9"))
                .allowed()
        );
        // A TCP connection: no headers, so header and path permissions never match.
        let tcp = facts(None, None, "10.0.0.9");
        assert!(a.evaluate(&tcp).allowed());
        assert_eq!(a.evaluate(&tcp).audit, None);
    }

    #[test]
    fn bad_patterns_are_refused_with_the_policy_named() {
        let err = Authorizer::compile(&[rbac(
            RbacAction::Deny,
            vec![policy(
                "ns[foo]-policy[x]-rule[0]",
                vec![Permission::DestinationIp("10.0.0.0/99".into())],
                vec![Principal::Any],
            )],
        )])
        .unwrap_err();
        assert!(err.contains("ns[foo]-policy[x]-rule[0]"), "{err}");
    }
}
