//! Authorization: the AuthorizationPolicies that select a workload become the RBAC filters of its
//! inbound chains, built as Istio builds them. A policy applies to a sidecar when it lives in the
//! workload's namespace or the root namespace and its selector (if any) matches the workload's
//! labels (gateways take them the same way, on their listeners' chains). A Gateway API
//! gateway's pods (labelled `gateway.networking.k8s.io/gateway-name`) also take the policies of
//! their namespace whose `targetRef(s)` name that Gateway; policies with `targetRef(s)` never
//! apply to sidecars (they attach to gateways, or to waypoints, which Strait does not run) —
//! Istio's policy attachment. Each rule is
//! one RBAC policy named `ns[<ns>]-policy[<name>]-rule[<i>]`: its `to` operations (with the
//! request-side `when` conditions) are the permissions, its `from` sources (with the caller-side
//! conditions) the principals. Filters come in Istio's order: AUDIT (log), DENY, ALLOW, then
//! the dry-run ones (shadow). On TCP chains, an ALLOW rule naming anything only HTTP has
//! (methods, paths, hosts, request principals, headers, JWT claims) never matches, and a DENY
//! rule is applied with those fields left out — both the safe way round. CUSTOM policies need an
//! external authorizer Strait does not have: their rules deny, as Istio does for a CUSTOM
//! provider it cannot use. Request principals and `request.auth.*` conditions match the
//! request's verified JWT (see [`crate::jwt`]).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use strait_config::istio::security::{
    AuthorizationPolicy, AuthzAction, Condition, Operation, PolicyTargetReference, Rule, Source,
};
use strait_config::resource::Object;
use strait_xds::jwt::{AuthAttribute, JwtAuthn};
use strait_xds::rbac::{Permission, Principal, Rbac, RbacAction, RbacPolicy};
use strait_xds::route::HeaderMatch;
use strait_xds::{StringMatch, regex_escape};

use crate::MeshView;

/// What a workload's inbound chains check: request authentication and the RBAC filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Authorization {
    /// The JWTs HTTP requests may carry (RequestAuthentication).
    pub jwt: Option<JwtAuthn>,
    /// For HTTP connection managers.
    pub http: Vec<Rbac>,
    /// For TCP chains (connection-level).
    pub tcp: Vec<Rbac>,
}

impl Authorization {
    /// A short fingerprint for cache keys: equal authorizations have equal keys.
    pub fn key(&self) -> String {
        if self.http.is_empty() && self.tcp.is_empty() && self.jwt.is_none() {
            return String::new();
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        format!("{:016x}", h.finish())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    Tcp,
}

/// The authorization of a workload in `namespace` with `labels`.
pub fn for_workload(
    view: &MeshView<'_>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Authorization {
    let jwt = crate::jwt::for_workload(view, namespace, labels);
    let mut policies: Vec<&Object<AuthorizationPolicy>> = view
        .config
        .authorization_policies
        .iter()
        .map(|p| &**p)
        .filter(|p| {
            selects(
                &p.meta,
                p.spec.selector.as_ref(),
                &targets(p.spec.target_ref.as_ref(), p.spec.target_refs.as_deref()),
                view.root_namespace,
                namespace,
                labels,
            )
        })
        .collect();
    if policies.is_empty() {
        return Authorization {
            jwt,
            ..Authorization::default()
        };
    }
    policies
        .sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    let settings = &view.model.settings;
    let mut trust_domains = vec![settings.trust_domain.clone()];
    for alias in &settings.trust_domain_aliases {
        if !trust_domains.contains(alias) {
            trust_domains.push(alias.clone());
        }
    }
    let builder = Builder { trust_domains };
    Authorization {
        jwt,
        http: builder.filters(&policies, Protocol::Http),
        tcp: builder.filters(&policies, Protocol::Tcp),
    }
}

/// The label Istio's deployment controller puts on a Gateway API gateway's pods.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Its older spelling, still honoured.
const OLD_GATEWAY_NAME_LABEL: &str = "istio.io/gateway-name";
const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// A policy's targets: `targetRefs`, else the legacy single `targetRef`.
pub(crate) fn targets<'a>(
    one: Option<&'a PolicyTargetReference>,
    many: Option<&'a [PolicyTargetReference]>,
) -> Vec<&'a PolicyTargetReference> {
    match many {
        Some(m) if !m.is_empty() => m.iter().collect(),
        _ => one.into_iter().collect(),
    }
}

/// Whether a security policy applies to a workload in `namespace` with `labels` (Istio's
/// policy attachment): it lives in the workload's namespace or the root namespace, and
/// - for a sidecar or an Istio gateway: it has no targets and its selector (if any) matches;
/// - for a Gateway API gateway's pod: with no targets, the same; with targets, it lives in the
///   gateway's own namespace and one of them is that Gateway (`gateway.networking.k8s.io`,
///   `Gateway`, its name; no namespace or the gateway's).
///
/// Targets of other kinds (Service, ServiceEntry, GatewayClass) attach to waypoints only.
pub(crate) fn selects(
    meta: &strait_config::resource::Meta,
    selector: Option<&strait_config::istio::common::WorkloadSelector>,
    targets: &[&PolicyTargetReference],
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let in_scope = meta.namespace == namespace || meta.namespace == root_namespace;
    if !in_scope {
        return false;
    }
    let selected =
        || selector.is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let gateway = labels
        .get(GATEWAY_NAME_LABEL)
        .or_else(|| labels.get(OLD_GATEWAY_NAME_LABEL));
    match gateway {
        _ if targets.is_empty() => selected(),
        None => false,
        Some(gateway) => {
            meta.namespace == namespace
                && targets.iter().any(|t| {
                    t.group.as_deref() == Some(GATEWAY_API_GROUP)
                        && t.kind == "Gateway"
                        && t.name == *gateway
                        && t.namespace
                            .as_deref()
                            .is_none_or(|n| n.is_empty() || n == namespace)
                })
        }
    }
}

fn dry_run(p: &Object<AuthorizationPolicy>) -> bool {
    p.meta
        .annotations
        .get("istio.io/dry-run")
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "t" | "TRUE" | "True"))
}

struct Builder {
    /// The mesh's trust domain first, then its aliases.
    trust_domains: Vec<String>,
}

impl Builder {
    fn filters(&self, policies: &[&Object<AuthorizationPolicy>], protocol: Protocol) -> Vec<Rbac> {
        let mut log = Vec::new();
        let mut deny = Vec::new();
        let mut allow = Vec::new();
        let mut shadow_deny = Vec::new();
        let mut shadow_allow = Vec::new();
        let (mut any_allow, mut any_shadow_allow) = (false, false);
        for p in policies {
            let dry = dry_run(p);
            let action = p.spec.action();
            let (target, suffix) = match (action, dry) {
                (AuthzAction::Allow, false) => {
                    any_allow = true;
                    (&mut allow, "")
                }
                (AuthzAction::Allow, true) => {
                    any_shadow_allow = true;
                    (&mut shadow_allow, "")
                }
                (AuthzAction::Deny, false) => (&mut deny, ""),
                (AuthzAction::Deny, true) => (&mut shadow_deny, ""),
                (AuthzAction::Audit, _) => (&mut log, ""),
                (AuthzAction::Custom, _) => (&mut deny, "-deny-due-to-bad-CUSTOM-action"),
            };
            let enforce_as = match action {
                AuthzAction::Allow => RbacAction::Allow,
                AuthzAction::Audit => RbacAction::Log,
                AuthzAction::Deny | AuthzAction::Custom => RbacAction::Deny,
            };
            for (i, rule) in p.spec.rules.iter().flatten().enumerate() {
                let name = format!(
                    "ns[{}]-policy[{}]-rule[{i}]{suffix}",
                    p.meta.namespace, p.meta.name
                );
                if let Some(policy) = self.rule(name, rule, &p.meta.namespace, enforce_as, protocol)
                {
                    target.push(policy);
                }
            }
        }
        let mut out = Vec::new();
        let mut push = |action, mut policies: Vec<RbacPolicy>, shadow, always: bool| {
            if policies.is_empty() && !always {
                return;
            }
            policies.sort_by(|a, b| a.name.cmp(&b.name));
            out.push(Rbac {
                action,
                policies,
                shadow,
            });
        };
        push(RbacAction::Log, log, false, false);
        push(RbacAction::Deny, deny, false, false);
        // An ALLOW policy that matches nothing still denies everything else.
        push(RbacAction::Allow, allow, false, any_allow);
        push(RbacAction::Deny, shadow_deny, true, false);
        push(RbacAction::Allow, shadow_allow, true, any_shadow_allow);
        out
    }

    /// One rule as an RBAC policy; `None` when it cannot match on this protocol.
    fn rule(
        &self,
        name: String,
        rule: &Rule,
        namespace: &str,
        action: RbacAction,
        protocol: Protocol,
    ) -> Option<RbacPolicy> {
        let tcp = protocol == Protocol::Tcp;
        if tcp && action == RbacAction::Allow && http_only(rule) {
            return None;
        }
        let mut when_permissions = Vec::new();
        let mut when_principals = Vec::new();
        for c in &rule.when {
            if tcp && condition_is_http_only(&c.key) {
                continue;
            }
            match self.condition(c, namespace) {
                Some(Side::Permission(p)) => when_permissions.push(p),
                Some(Side::Principal(p)) => when_principals.push(p),
                None => {}
            }
        }
        let operations: Vec<Option<&Operation>> = match &rule.to {
            Some(to) if !to.is_empty() => to.iter().map(|t| t.operation.as_ref()).collect(),
            _ => vec![None],
        };
        let sources: Vec<Option<&Source>> = match &rule.from {
            Some(from) if !from.is_empty() => from.iter().map(|f| f.source.as_ref()).collect(),
            _ => vec![None],
        };
        let permissions = operations
            .into_iter()
            .map(|op| {
                let mut parts = op.map(|o| operation(o, tcp)).unwrap_or_default();
                parts.extend(when_permissions.iter().cloned());
                all(parts)
            })
            .collect();
        let principals = sources
            .into_iter()
            .map(|src| {
                let mut parts = src
                    .map(|s| self.source(s, namespace, tcp))
                    .unwrap_or_default();
                parts.extend(when_principals.iter().cloned());
                all(parts)
            })
            .collect();
        Some(RbacPolicy {
            name,
            permissions,
            principals,
        })
    }

    fn source(&self, s: &Source, namespace: &str, tcp: bool) -> Vec<Principal> {
        let mut out = Vec::new();
        either(
            &mut out,
            s.principals.as_ref(),
            s.not_principals.as_ref(),
            |v| self.principal(v),
        );
        if !tcp {
            // `<iss>/<sub>` of the request's verified JWT (RequestAuthentication).
            either(
                &mut out,
                s.request_principals.as_ref(),
                s.not_request_principals.as_ref(),
                |v| request_auth(AuthAttribute::Principal, v),
            );
        }
        either(
            &mut out,
            s.namespaces.as_ref(),
            s.not_namespaces.as_ref(),
            namespace_matcher,
        );
        either(
            &mut out,
            s.service_accounts.as_ref(),
            s.not_service_accounts.as_ref(),
            |v| service_account_matcher(v, namespace),
        );
        either(
            &mut out,
            s.ip_blocks.as_ref(),
            s.not_ip_blocks.as_ref(),
            |v| Principal::DirectRemoteIp(v.to_string()),
        );
        either(
            &mut out,
            s.remote_ip_blocks.as_ref(),
            s.not_remote_ip_blocks.as_ref(),
            |v| Principal::RemoteIp(v.to_string()),
        );
        either(
            &mut out,
            s.trust_domains.as_ref(),
            s.not_trust_domains.as_ref(),
            |v| {
                Principal::Authenticated(if v == "*" {
                    StringMatch::Present
                } else {
                    StringMatch::Prefix(format!("spiffe://{v}/"))
                })
            },
        );
        out
    }

    /// A `principals` value: `*`, `prefix*`, `*suffix` or exact, without `spiffe://`; a principal
    /// in the mesh's trust domain (or an alias, or Istio's default `cluster.local`) matches in
    /// every one of them.
    fn principal(&self, v: &str) -> Principal {
        if v == "*" {
            return Principal::Authenticated(StringMatch::Present);
        }
        if let Some(suffix) = v.strip_prefix('*') {
            return Principal::Authenticated(StringMatch::Suffix(suffix.to_string()));
        }
        let (body, prefix) = match v.strip_suffix('*') {
            Some(p) => (p, true),
            None => (v, false),
        };
        let make = |id: String| {
            Principal::Authenticated(if prefix {
                StringMatch::Prefix(id)
            } else {
                StringMatch::Exact(id)
            })
        };
        let local = body
            .split_once('/')
            .filter(|(td, _)| *td == "cluster.local" || self.trust_domains.iter().any(|t| t == td));
        match local {
            Some((_, rest)) => any_of(
                self.trust_domains
                    .iter()
                    .map(|td| make(format!("spiffe://{td}/{rest}")))
                    .collect(),
            ),
            None => make(format!("spiffe://{body}")),
        }
    }

    fn condition(&self, c: &Condition, namespace: &str) -> Option<Side> {
        let key = c.key.as_str();
        if let Some(name) = key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
        {
            let name = name.to_ascii_lowercase();
            return Some(Side::Principal(condition_values(c, |v| {
                Principal::Header(HeaderMatch {
                    name: name.clone(),
                    matcher: wildcard(v),
                    invert: false,
                })
            })));
        }
        Some(match key {
            "source.ip" => Side::Principal(condition_values(c, |v| {
                Principal::DirectRemoteIp(v.to_string())
            })),
            "remote.ip" => {
                Side::Principal(condition_values(c, |v| Principal::RemoteIp(v.to_string())))
            }
            "source.namespace" => Side::Principal(condition_values(c, namespace_matcher)),
            "source.principal" => Side::Principal(condition_values(c, |v| self.principal(v))),
            "source.serviceAccount" => Side::Principal(condition_values(c, |v| {
                service_account_matcher(v, namespace)
            })),
            "destination.ip" => Side::Permission(condition_values(c, |v| {
                Permission::DestinationIp(v.to_string())
            })),
            "destination.port" => Side::Permission(condition_values(c, |v| {
                v.parse::<u16>()
                    .map_or_else(|_| Permission::never(), Permission::DestinationPort)
            })),
            "connection.sni" => {
                Side::Permission(condition_values(c, |v| Permission::ServerName(wildcard(v))))
            }
            "request.auth.principal" => Side::Principal(condition_values(c, |v| {
                request_auth(AuthAttribute::Principal, v)
            })),
            "request.auth.audiences" => Side::Principal(condition_values(c, |v| {
                request_auth(AuthAttribute::Audiences, v)
            })),
            "request.auth.presenter" => Side::Principal(condition_values(c, |v| {
                request_auth(AuthAttribute::Presenter, v)
            })),
            _ => match claim_path(key) {
                Some(path) => Side::Principal(condition_values(c, |v| {
                    request_auth(AuthAttribute::Claim(path.clone()), v)
                })),
                // Envoy filter metadata (`experimental.envoy.filters.*`): nothing a request
                // carries here can match it.
                None => Side::Principal(condition_values(c, |_| Principal::never())),
            },
        })
    }
}

/// Where a `when` condition goes: what is asked for, or who asks.
enum Side {
    Permission(Permission),
    Principal(Principal),
}

fn operation(o: &Operation, tcp: bool) -> Vec<Permission> {
    let mut out = Vec::new();
    if !tcp {
        either(&mut out, o.hosts.as_ref(), o.not_hosts.as_ref(), |v| {
            Permission::Host(wildcard(&v.to_ascii_lowercase()))
        });
    }
    either(&mut out, o.ports.as_ref(), o.not_ports.as_ref(), |v| {
        v.parse::<u16>()
            .map_or_else(|_| Permission::never(), Permission::DestinationPort)
    });
    if !tcp {
        either(&mut out, o.methods.as_ref(), o.not_methods.as_ref(), |v| {
            Permission::Header(HeaderMatch {
                name: ":method".into(),
                matcher: if v == "*" {
                    StringMatch::Present
                } else {
                    StringMatch::Exact(v.to_string())
                },
                invert: false,
            })
        });
        either(&mut out, o.paths.as_ref(), o.not_paths.as_ref(), |v| {
            Permission::Path(path_matcher(v))
        });
    }
    out
}

/// Whether a rule names something only HTTP requests have.
fn http_only(rule: &Rule) -> bool {
    let set = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    let from = rule.from.iter().flatten().filter_map(|f| f.source.as_ref());
    let to = rule
        .to
        .iter()
        .flatten()
        .filter_map(|t| t.operation.as_ref());
    from.clone()
        .any(|s| set(&s.request_principals) || set(&s.not_request_principals))
        || to.clone().any(|o| {
            set(&o.hosts)
                || set(&o.not_hosts)
                || set(&o.methods)
                || set(&o.not_methods)
                || set(&o.paths)
                || set(&o.not_paths)
        })
        || rule.when.iter().any(|c| condition_is_http_only(&c.key))
}

fn condition_is_http_only(key: &str) -> bool {
    key.starts_with("request.") || key.starts_with("experimental.")
}

/// An attribute of the request's verified JWT matching `v` (`*`, `prefix*`, `*suffix`, exact).
fn request_auth(attribute: AuthAttribute, v: &str) -> Principal {
    Principal::RequestAuth {
        attribute,
        value: wildcard(v),
    }
}

/// `request.auth.claims[a][b]` → `[a, b]`.
fn claim_path(key: &str) -> Option<Vec<String>> {
    let mut rest = key.strip_prefix("request.auth.claims")?;
    let mut path = Vec::new();
    while let Some(r) = rest.strip_prefix('[') {
        let (name, after) = r.split_once(']')?;
        if name.is_empty() {
            return None;
        }
        path.push(name.to_string());
        rest = after;
    }
    (rest.is_empty() && !path.is_empty()).then_some(path)
}

/// `*` (present), `prefix*`, `*suffix` or exact.
fn wildcard(v: &str) -> StringMatch {
    if v == "*" {
        StringMatch::Present
    } else if let Some(s) = v.strip_prefix('*') {
        StringMatch::Suffix(s.to_string())
    } else if let Some(p) = v.strip_suffix('*') {
        StringMatch::Prefix(p.to_string())
    } else {
        StringMatch::Exact(v.to_string())
    }
}

/// A `paths` value: as `wildcard`, plus Istio's templates (`{*}` one segment, `{**}` the rest).
fn path_matcher(v: &str) -> StringMatch {
    if !v.contains("{*}") && !v.contains("{**}") {
        return wildcard(v);
    }
    let mut regex = String::new();
    let mut rest = v;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{**}") {
            regex.push_str(".*");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{*}") {
            regex.push_str("[^/]+");
            rest = r;
        } else {
            let next = rest.find('{').filter(|i| *i > 0).unwrap_or(rest.len());
            regex.push_str(&regex_escape(&rest[..next]));
            rest = &rest[next..];
        }
    }
    StringMatch::Regex(regex)
}

/// A namespace pattern as a match on the peer's SPIFFE ID.
fn namespace_matcher(v: &str) -> Principal {
    let segment = segment_regex(v);
    Principal::Authenticated(StringMatch::Regex(format!(
        "spiffe://[^/]+/ns/{segment}/.*"
    )))
}

/// `namespace/name` (a bare name is in the policy's namespace).
fn service_account_matcher(v: &str, policy_namespace: &str) -> Principal {
    let (ns, sa) = v.split_once('/').unwrap_or((policy_namespace, v));
    Principal::Authenticated(StringMatch::Regex(format!(
        "spiffe://[^/]+/ns/{}/sa/{}",
        segment_regex(ns),
        segment_regex(sa)
    )))
}

/// One SPIFFE path segment matching `*`, `prefix*`, `*suffix` or exact.
fn segment_regex(v: &str) -> String {
    if v == "*" {
        "[^/]+".into()
    } else if let Some(s) = v.strip_prefix('*') {
        format!("[^/]*{}", regex_escape(s))
    } else if let Some(p) = v.strip_suffix('*') {
        format!("{}[^/]*", regex_escape(p))
    } else {
        regex_escape(v)
    }
}

/// Tree nodes of either side.
trait Node: Sized + Clone {
    fn any() -> Self;
    fn and(v: Vec<Self>) -> Self;
    fn or(v: Vec<Self>) -> Self;
    fn not(self) -> Self;
}

impl Node for Permission {
    fn any() -> Self {
        Permission::Any
    }
    fn and(v: Vec<Self>) -> Self {
        Permission::And(v)
    }
    fn or(v: Vec<Self>) -> Self {
        Permission::Or(v)
    }
    fn not(self) -> Self {
        Permission::Not(Box::new(self))
    }
}

impl Node for Principal {
    fn any() -> Self {
        Principal::Any
    }
    fn and(v: Vec<Self>) -> Self {
        Principal::And(v)
    }
    fn or(v: Vec<Self>) -> Self {
        Principal::Or(v)
    }
    fn not(self) -> Self {
        Principal::Not(Box::new(self))
    }
}

fn any_of<T: Node>(mut v: Vec<T>) -> T {
    if v.len() == 1 { v.remove(0) } else { T::or(v) }
}

fn all<T: Node>(mut v: Vec<T>) -> T {
    match v.len() {
        0 => T::any(),
        1 => v.remove(0),
        _ => T::and(v),
    }
}

/// Adds "one of `yes`" and "none of `no`" (when given) to `out`.
fn either<T: Node>(
    out: &mut Vec<T>,
    yes: Option<&Vec<String>>,
    no: Option<&Vec<String>>,
    each: impl Fn(&str) -> T,
) {
    if let Some(yes) = yes.filter(|v| !v.is_empty()) {
        out.push(any_of(yes.iter().map(|v| each(v)).collect()));
    }
    if let Some(no) = no.filter(|v| !v.is_empty()) {
        out.push(any_of(no.iter().map(|v| each(v)).collect()).not());
    }
}

/// A condition's `values` (one of) and `notValues` (none of), each value made a node by `each`.
fn condition_values<T: Node>(c: &Condition, each: impl Fn(&str) -> T) -> T {
    let mut parts = Vec::new();
    either(&mut parts, c.values.as_ref(), c.not_values.as_ref(), each);
    all(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_attach_as_istio_attaches_them() {
        let meta = |ns: &str| strait_config::resource::Meta {
            name: "p".into(),
            namespace: ns.into(),
            ..Default::default()
        };
        let gateway_ref = |name: &str, ns: Option<&str>| PolicyTargetReference {
            group: Some(GATEWAY_API_GROUP.into()),
            kind: "Gateway".into(),
            name: name.into(),
            namespace: ns.map(Into::into),
        };
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let sidecar = labels(&[("app", "web")]);
        let gateway = labels(&[(GATEWAY_NAME_LABEL, "public"), ("app", "public-istio")]);
        let old_gateway = labels(&[(OLD_GATEWAY_NAME_LABEL, "public")]);
        let public = gateway_ref("public", None);
        let attach = |policy_ns: &str, targets: &[&PolicyTargetReference], labels| {
            selects(
                &meta(policy_ns),
                None,
                targets,
                "istio-system",
                "web",
                labels,
            )
        };
        // No targets: namespace and selector, for sidecars and gateways alike.
        assert!(attach("web", &[], &sidecar));
        assert!(attach("istio-system", &[], &sidecar));
        assert!(!attach("other", &[], &sidecar));
        assert!(attach("web", &[], &gateway));
        // Targets: never a sidecar; the named Gateway of the policy's own namespace.
        assert!(!attach("web", &[&public], &sidecar));
        assert!(attach("web", &[&public], &gateway));
        assert!(attach("web", &[&public], &old_gateway));
        assert!(attach(
            "web",
            &[&gateway_ref("public", Some("web"))],
            &gateway
        ));
        assert!(!attach(
            "web",
            &[&gateway_ref("public", Some("other"))],
            &gateway
        ));
        assert!(!attach("web", &[&gateway_ref("private", None)], &gateway));
        assert!(
            !attach("istio-system", &[&public], &gateway),
            "a root-namespace policy targets its own namespace's gateways only"
        );
        let service = PolicyTargetReference {
            group: None,
            kind: "Service".into(),
            name: "public".into(),
            namespace: None,
        };
        assert!(!attach("web", &[&service], &gateway), "waypoints only");
        assert!(attach("web", &[&service, &public], &gateway));
        // `targetRefs` wins over the legacy `targetRef`.
        let many = [gateway_ref("private", None)];
        assert_eq!(targets(Some(&public), Some(&many)), vec![&many[0]]);
        assert_eq!(targets(Some(&public), Some(&[])), vec![&public]);
    }

    #[test]
    fn wildcards_and_path_templates() {
        assert_eq!(wildcard("*"), StringMatch::Present);
        assert_eq!(wildcard("/api/*"), StringMatch::Prefix("/api/".into()));
        assert_eq!(wildcard("*.local"), StringMatch::Suffix(".local".into()));
        assert_eq!(
            path_matcher("/v1/{*}/items/{**}"),
            StringMatch::Regex("/v1/[^/]+/items/.*".into())
        );
        assert_eq!(
            path_matcher("/a.b/{*}"),
            StringMatch::Regex("/a\\.b/[^/]+".into())
        );
    }

    #[test]
    fn principals_in_the_mesh_trust_domain_match_in_its_aliases() {
        let b = Builder {
            trust_domains: vec!["td1".into(), "old-td".into()],
        };
        assert_eq!(
            b.principal("cluster.local/ns/a/sa/b"),
            Principal::Or(vec![
                Principal::Authenticated(StringMatch::Exact("spiffe://td1/ns/a/sa/b".into())),
                Principal::Authenticated(StringMatch::Exact("spiffe://old-td/ns/a/sa/b".into())),
            ])
        );
        assert_eq!(
            b.principal("other/ns/a/sa/*"),
            Principal::Authenticated(StringMatch::Prefix("spiffe://other/ns/a/sa/".into()))
        );
        assert_eq!(
            b.principal("*"),
            Principal::Authenticated(StringMatch::Present)
        );
    }

    #[test]
    fn tcp_drops_http_only_allow_rules_and_widens_deny_rules() {
        let b = Builder {
            trust_domains: vec!["cluster.local".into()],
        };
        let rule: Rule = serde_json::from_value(serde_json::json!({
            "to": [{"operation": {"methods": ["GET"], "ports": ["8080"]}}]
        }))
        .unwrap();
        assert!(
            b.rule("r".into(), &rule, "ns", RbacAction::Allow, Protocol::Tcp)
                .is_none()
        );
        let deny = b
            .rule("r".into(), &rule, "ns", RbacAction::Deny, Protocol::Tcp)
            .unwrap();
        assert_eq!(deny.permissions, vec![Permission::DestinationPort(8080)]);
        let http = b
            .rule("r".into(), &rule, "ns", RbacAction::Deny, Protocol::Http)
            .unwrap();
        assert_eq!(
            http.permissions,
            vec![Permission::And(vec![
                Permission::DestinationPort(8080),
                Permission::Header(HeaderMatch {
                    name: ":method".into(),
                    matcher: StringMatch::Exact("GET".into()),
                    invert: false,
                }),
            ])]
        );
        assert_eq!(http.principals, vec![Principal::Any]);
    }
}
