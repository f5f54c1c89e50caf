//! Routes: from VirtualServices (for the proxy's gateway context, labels and namespace), SMI
//! TrafficSplits as weighted routes, and a default route for services without either.

use std::collections::BTreeMap;
use std::sync::Arc;

use strait_config::istio::common::{Destination, StringMatch as IstioMatch};
use strait_config::istio::traffic::{
    HeaderOperations, Headers, HttpMatchRequest, HttpRoute, VirtualService,
};
use strait_config::resource::Object;
use strait_config::smi;
use strait_model::{ServicePort, ServiceView};
use strait_xds::StringMatch;
use strait_xds::route::{
    AbortStatus, Action, Cors, Fault, FaultAbort, FaultDelay, HashPolicy, HeaderEditList,
    HeaderEdits, HeaderMatch, Mirror, PathMatch, QueryMatch, Redirect, RetryPolicy, Route,
    RouteAction, RouteMatch, VirtualHost, WeightedCluster,
};

use crate::MeshView;
use crate::names;
use crate::policy;
use crate::proxy::ProxyNode;
use crate::scope::{exported_to, host_matches};

/// The gateway a route table is built for: sidecars and proxyless clients are on `mesh`.
pub const MESH_GATEWAY: &str = "mesh";

/// Istio's default retry policy for routes that set none.
fn default_retry() -> RetryPolicy {
    RetryPolicy {
        retry_on: [
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes",
        ]
        .map(String::from)
        .to_vec(),
        num_retries: 2,
        per_try_timeout_ms: None,
        retriable_status_codes: vec![503],
        backoff_base_ms: None,
        retry_other_hosts: true,
    }
}

fn millis(d: &Option<strait_config::duration::Duration>) -> Option<u64> {
    d.as_ref().map(|d| d.as_std().as_millis() as u64)
}

pub(crate) fn resolve_host(view: &MeshView<'_>, host: &str, namespace: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!(
            "{host}.{namespace}.svc.{}",
            view.model.settings.domain_suffix
        )
    }
}

/// The VirtualService for `host` on `gateway` visible to the proxy, if any.
pub fn virtual_service_for<'a>(
    view: &MeshView<'a>,
    proxy: &ProxyNode,
    host: &str,
    gateway: &str,
) -> Option<&'a Object<VirtualService>> {
    view.config
        .virtual_services
        .iter()
        .find(|vs| {
            let on_gateway = if gateway == MESH_GATEWAY {
                vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == MESH_GATEWAY)
            } else {
                vs.spec
                    .gateways
                    .iter()
                    .any(|g| gateway_ref_matches(g, &vs.meta.namespace, gateway))
            };
            on_gateway
                && exported_to(&vs.spec.export_to, &vs.meta.namespace, &proxy.namespace)
                && vs
                    .spec
                    .hosts
                    .iter()
                    .any(|h| host_matches(&resolve_host(view, h, &vs.meta.namespace), host))
        })
        .map(|vs| &**vs)
}

/// Whether a VirtualService's gateway reference names `gateway` (`namespace/name`).
pub fn gateway_ref_matches(reference: &str, vs_namespace: &str, gateway: &str) -> bool {
    match reference.split_once('/') {
        Some(_) => reference == gateway,
        None => match reference.split_once('.') {
            Some((name, rest)) => {
                format!("{}/{name}", rest.split('.').next().unwrap_or("")) == gateway
            }
            None => format!("{vs_namespace}/{reference}") == gateway,
        },
    }
}

/// Routes for traffic to `service` on `port`.
pub fn routes_for(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    service: &ServiceView,
    port: &ServicePort,
    gateway: &str,
) -> Vec<Arc<Route>> {
    route_list(view, proxy, service, port, gateway)
        .into_iter()
        .map(Arc::new)
        .collect()
}

fn route_list(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    service: &ServiceView,
    port: &ServicePort,
    gateway: &str,
) -> Vec<Route> {
    let host = service.service.host.as_str();
    if let Some(vs) = virtual_service_for(view, proxy, host, gateway) {
        return virtual_service_routes(view, proxy, vs, port.port, gateway);
    }
    if gateway == MESH_GATEWAY
        && let Some(route) = traffic_split_route(view, service, port)
    {
        return vec![route];
    }
    vec![default_route(names::outbound_cluster(port.port, "", host))]
}

/// The route of a service without a VirtualService: everything to its cluster, with Istio's
/// default retries ([`forward_all`] otherwise).
fn default_route(cluster: String) -> Route {
    let mut route = forward_all("default", &cluster);
    if let Action::Forward(action) = &mut route.action {
        action.retry = Some(Arc::new(default_retry()));
    }
    route
}

/// An SMI TrafficSplit whose root service is `service`: weighted routes to its backends.
fn traffic_split_route(
    view: &MeshView<'_>,
    service: &ServiceView,
    port: &ServicePort,
) -> Option<Route> {
    let ts = view.config.traffic_splits.iter().find(|ts| {
        ts.meta.namespace == service.service.namespace
            && resolve_host(view, &ts.spec.service, &ts.meta.namespace)
                == service.service.host.as_str()
    })?;
    let clusters: Vec<WeightedCluster> = ts
        .spec
        .backends
        .iter()
        .filter_map(|b| {
            let weight = u32::try_from(smi::weight_millis(&b.weight).ok()?).ok()?;
            (weight > 0).then(|| WeightedCluster {
                name: names::outbound_cluster(
                    port.port,
                    "",
                    &resolve_host(view, &b.service, &ts.meta.namespace),
                ),
                weight,
                request_headers: HeaderEdits::default(),
                response_headers: HeaderEdits::default(),
            })
        })
        .collect();
    if clusters.is_empty() {
        return None;
    }
    let mut route = default_route(String::new());
    route.name = format!("{}/{}", ts.meta.namespace, ts.meta.name);
    if let Action::Forward(a) = &mut route.action {
        a.clusters = clusters;
    }
    Some(route)
}

fn virtual_service_routes(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    vs: &Object<VirtualService>,
    port: u16,
    gateway: &str,
) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, rule) in vs.spec.http.iter().enumerate() {
        let name = rule
            .name
            .clone()
            .unwrap_or_else(|| format!("{}/{}.{i}", vs.meta.namespace, vs.meta.name));
        let matches: Vec<Option<&HttpMatchRequest>> = if rule.matches.is_empty() {
            vec![None]
        } else {
            rule.matches.iter().map(Some).collect()
        };
        for m in matches {
            if let Some(m) = m
                && !applies(m, proxy, port, gateway, &vs.meta.namespace)
            {
                continue;
            }
            out.push(Route {
                name: name.clone(),
                matching: m.map(route_match).unwrap_or_else(RouteMatch::any),
                action: action(view, proxy, vs, rule, port),
                request_headers: header_edits(
                    rule.headers.as_ref().and_then(|h| h.request.as_ref()),
                ),
                response_headers: header_edits(
                    rule.headers.as_ref().and_then(|h| h.response.as_ref()),
                ),
                fault: rule.fault.as_ref().map(|f| Box::new(fault(f))),
                cors: rule.cors_policy.as_ref().map(|c| Box::new(cors(c))),
            });
        }
    }
    out
}

/// Whether a match applies to this proxy and port (source labels, namespace, gateway, port).
fn applies(m: &HttpMatchRequest, proxy: &ProxyNode, port: u16, gateway: &str, vs_ns: &str) -> bool {
    m.port.is_none_or(|p| p == u32::from(port))
        && m.source_labels
            .iter()
            .all(|(k, v)| proxy.labels.get(k) == Some(v))
        && m.source_namespace
            .as_ref()
            .is_none_or(|ns| *ns == proxy.namespace)
        && (m.gateways.is_empty()
            || m.gateways
                .iter()
                .any(|g| g == gateway || gateway_ref_matches(g, vs_ns, gateway)))
}

fn string_match(m: &IstioMatch) -> StringMatch {
    if let Some(v) = &m.exact {
        StringMatch::Exact(v.clone())
    } else if let Some(v) = &m.prefix {
        StringMatch::Prefix(v.clone())
    } else if let Some(v) = &m.regex {
        StringMatch::Regex(v.clone())
    } else {
        StringMatch::Present
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let path = match &m.uri {
        Some(u) => match string_match(u) {
            StringMatch::Exact(v) => PathMatch::Exact(v),
            StringMatch::Prefix(v) => PathMatch::Prefix(v),
            StringMatch::Regex(v) => PathMatch::Regex(v),
            _ => PathMatch::Prefix("/".into()),
        },
        None => PathMatch::Prefix("/".into()),
    };
    let mut headers: Vec<HeaderMatch> = Vec::new();
    for (pseudo, sm) in [
        (":authority", &m.authority),
        (":method", &m.method),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            headers.push(HeaderMatch {
                name: pseudo.into(),
                matcher: string_match(sm),
                invert: false,
            });
        }
    }
    for (name, sm) in &m.headers {
        headers.push(HeaderMatch {
            name: name.to_ascii_lowercase(),
            matcher: string_match(sm),
            invert: false,
        });
    }
    for (name, sm) in &m.without_headers {
        headers.push(HeaderMatch {
            name: name.to_ascii_lowercase(),
            matcher: string_match(sm),
            invert: true,
        });
    }
    let query_params = m
        .query_params
        .iter()
        .map(|(k, sm)| QueryMatch {
            name: k.clone(),
            matcher: string_match(sm),
        })
        .collect();
    RouteMatch {
        path,
        case_sensitive: !m.ignore_uri_case,
        headers,
        query_params,
    }
}

fn header_edits(ops: Option<&HeaderOperations>) -> HeaderEdits {
    let Some(ops) = ops else {
        return HeaderEdits::default();
    };
    HeaderEditList {
        set: ops
            .set
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        add: ops
            .add
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        remove: ops.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
    }
    .into()
}

fn edits_of(h: Option<&Headers>) -> (HeaderEdits, HeaderEdits) {
    (
        header_edits(h.and_then(|h| h.request.as_ref())),
        header_edits(h.and_then(|h| h.response.as_ref())),
    )
}

/// The cluster a destination names, from a route on `listen_port`.
fn destination_cluster(
    view: &MeshView<'_>,
    vs: &Object<VirtualService>,
    d: &Destination,
    listen_port: u16,
) -> String {
    let host = resolve_host(view, &d.host, &vs.meta.namespace);
    let port = d
        .port_number()
        .and_then(|p| u16::try_from(p).ok())
        .or_else(|| {
            let ports = view
                .model
                .services()
                .find(|(k, _)| k.host.as_str() == host)
                .map(|(_, s)| s.service.ports.clone())
                .unwrap_or_default();
            (ports.len() == 1).then(|| ports[0].port)
        })
        .unwrap_or(listen_port);
    names::outbound_cluster(port, d.subset.as_deref().unwrap_or(""), &host)
}

fn action(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    vs: &Object<VirtualService>,
    rule: &HttpRoute,
    port: u16,
) -> Action {
    if let Some(r) = &rule.redirect {
        return Action::Redirect(Redirect {
            scheme: r.scheme.clone(),
            host: r.authority.clone(),
            port: r.port.and_then(|p| u16::try_from(p).ok()),
            path: r.uri.clone(),
            prefix_rewrite: r.prefix_rewrite.clone(),
            response_code: r.redirect_code.filter(|c| *c != 0).unwrap_or(301),
        });
    }
    if let Some(d) = &rule.direct_response {
        return Action::DirectResponse {
            status: d.status,
            body: d
                .body
                .as_ref()
                .and_then(|b| b.string.clone().or_else(|| b.bytes.clone())),
        };
    }
    let clusters: Vec<WeightedCluster> = rule
        .route
        .iter()
        .map(|d| {
            let (request_headers, response_headers) = edits_of(d.headers.as_ref());
            WeightedCluster {
                name: destination_cluster(view, vs, &d.destination, port),
                weight: match (rule.route.len(), d.weight) {
                    (1, _) => 100,
                    (_, w) => u32::try_from(w.unwrap_or(0)).unwrap_or(0),
                },
                request_headers,
                response_headers,
            }
        })
        .filter(|c| c.weight > 0)
        .collect();
    let retry = match &rule.retries {
        None => Some(Arc::new(default_retry())),
        Some(r) if r.attempts <= 0 => None,
        Some(r) => {
            let mut on = Vec::new();
            let mut codes = Vec::new();
            for p in r
                .retry_on
                .as_deref()
                .unwrap_or(
                    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                )
                .split(',')
            {
                let p = p.trim();
                match p.parse::<u32>() {
                    Ok(code) => codes.push(code),
                    Err(_) if !p.is_empty() => on.push(p.to_string()),
                    Err(_) => {}
                }
            }
            if !codes.is_empty() && !on.iter().any(|o| o == "retriable-status-codes") {
                on.push("retriable-status-codes".into());
            }
            Some(Arc::new(RetryPolicy {
                retry_on: on,
                num_retries: u32::try_from(r.attempts).unwrap_or(0),
                per_try_timeout_ms: millis(&r.per_try_timeout),
                retriable_status_codes: codes,
                backoff_base_ms: millis(&r.backoff),
                retry_other_hosts: r.retry_ignore_previous_hosts != Some(false),
            }))
        }
    };
    let mut mirrors: Vec<Mirror> = Vec::new();
    if let Some(m) = &rule.mirror {
        let percent = rule
            .mirror_percentage
            .map(|p| p.value)
            .or(rule
                .mirror_percent
                .or(rule.mirror_percent_snake)
                .map(f64::from))
            .unwrap_or(100.0);
        mirrors.push(Mirror {
            cluster: destination_cluster(view, vs, m, port),
            percent,
        });
    }
    for m in &rule.mirrors {
        mirrors.push(Mirror {
            cluster: destination_cluster(view, vs, &m.destination, port),
            percent: m.percentage.map(|p| p.value).unwrap_or(100.0),
        });
    }
    let rewrite = rule.rewrite.as_ref();
    Action::Forward(RouteAction {
        hash_policy: hash_policy(view, proxy, vs, rule),
        clusters,
        // As Istio: no timeout unless the rule sets one.
        timeout_ms: millis(&rule.timeout).or(Some(0)),
        retry,
        mirrors,
        prefix_rewrite: rewrite.and_then(|r| r.uri.clone()),
        regex_rewrite: rewrite
            .and_then(|r| r.uri_regex_rewrite.as_ref())
            .and_then(|r| Some((r.pattern.clone()?, r.rewrite.clone()?))),
        host_rewrite: rewrite.and_then(|r| r.authority.clone()),
        upgrades: vec!["websocket".into()],
    })
}

/// Consistent-hash keys from the DestinationRule of the first destination.
fn hash_policy(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    vs: &Object<VirtualService>,
    rule: &HttpRoute,
) -> Vec<HashPolicy> {
    let Some(d) = rule.route.first() else {
        return Vec::new();
    };
    let host = resolve_host(view, &d.destination.host, &vs.meta.namespace);
    let ns = view
        .model
        .services()
        .find(|(k, _)| k.host.as_str() == host)
        .map(|(_, s)| s.service.namespace.clone())
        .unwrap_or_default();
    let Some(dr) = policy::rule_for(view, proxy, &host, &ns) else {
        return Vec::new();
    };
    let subset = d
        .destination
        .subset
        .as_ref()
        .and_then(|n| dr.spec.subsets.iter().find(|s| &s.name == n));
    let port = d
        .destination
        .port_number()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    hash_of(&policy::effective(Some(&dr.spec), port, subset))
}

pub(crate) fn hash_of(p: &policy::Policy) -> Vec<HashPolicy> {
    let Some(ch) = p
        .load_balancer
        .as_ref()
        .and_then(|l| l.consistent_hash.as_ref())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(h) = &ch.http_header_name {
        out.push(HashPolicy::Header(h.to_ascii_lowercase()));
    }
    if let Some(c) = &ch.http_cookie {
        out.push(HashPolicy::Cookie {
            name: c.name.clone(),
            ttl_ms: millis(&c.ttl),
            path: c.path.clone(),
        });
    }
    if ch.use_source_ip == Some(true) {
        out.push(HashPolicy::SourceIp);
    }
    if let Some(q) = &ch.http_query_parameter_name {
        out.push(HashPolicy::QueryParameter(q.clone()));
    }
    out
}

fn fault(f: &strait_config::istio::traffic::HttpFaultInjection) -> Fault {
    let percent = |p: Option<strait_config::istio::common::Percent>, legacy: Option<i32>| {
        p.map(|p| p.value)
            .or(legacy.map(f64::from))
            .unwrap_or(100.0)
    };
    Fault {
        delay: f.delay.as_ref().and_then(|d| {
            Some(FaultDelay {
                fixed_delay_ms: millis(&d.fixed_delay)?,
                percent: percent(d.percentage, d.percent),
            })
        }),
        abort: f.abort.as_ref().and_then(|a| {
            let status = match (a.http_status, &a.grpc_status) {
                (Some(s), _) => AbortStatus::Http(u32::try_from(s).ok()?),
                (None, Some(g)) => AbortStatus::Grpc(grpc_code(g)?),
                _ => return None,
            };
            Some(FaultAbort {
                status,
                percent: percent(a.percentage, None),
            })
        }),
    }
}

/// The numeric gRPC status for a name.
pub fn grpc_code(name: &str) -> Option<u32> {
    strait_config::validate::rules::GRPC_STATUS_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u32)
}

fn cors(c: &strait_config::istio::traffic::CorsPolicy) -> Cors {
    let mut origins: Vec<StringMatch> = c.allow_origins.iter().map(string_match).collect();
    origins.extend(c.allow_origin.iter().map(|o| StringMatch::Exact(o.clone())));
    Cors {
        allow_origins: origins,
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age_secs: c.max_age.as_ref().map(|d| d.as_std().as_secs()),
        allow_credentials: c.allow_credentials,
    }
}

/// The names under which a service is reached: host, host:port, and for callers in the same
/// namespace the short names, plus the service's addresses.
pub fn domains(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    service: &ServiceView,
    port: u16,
) -> Vec<String> {
    let s = &service.service;
    let host = s.host.as_str();
    let mut out = vec![host.to_string(), format!("{host}:{port}")];
    let suffix = format!(".svc.{}", view.model.settings.domain_suffix);
    if let Some(short) = host.strip_suffix(&suffix) {
        // `name.namespace.svc`, `name.namespace`, and `name` from the same namespace.
        let svc = format!("{short}.svc");
        out.extend([
            svc.clone(),
            format!("{svc}:{port}"),
            short.to_string(),
            format!("{short}:{port}"),
        ]);
        if s.namespace == proxy.namespace {
            out.extend([s.name.clone(), format!("{}:{port}", s.name)]);
        }
    }
    for addrs in s
        .addresses
        .get(&proxy.cluster)
        .into_iter()
        .chain(s.addresses.values().take(1))
    {
        for a in addrs.iter().filter(|a| !a.contains('/')) {
            // As a Host header names it: an IPv6 address in brackets.
            let a = if a.contains(':') {
                format!("[{a}]")
            } else {
                a.clone()
            };
            out.push(a.clone());
            out.push(format!("{a}:{port}"));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|d| seen.insert(d.clone()));
    out
}

/// The virtual host of `service` on `port` for a proxy on `gateway`.
pub fn virtual_host(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    service: &ServiceView,
    port: &ServicePort,
    gateway: &str,
) -> VirtualHost {
    VirtualHost {
        name: format!("{}:{}", service.service.host, port.port),
        domains: domains(view, proxy, service, port.port),
        routes: routes_for(view, proxy, service, port, gateway),
    }
}

/// Groups the HTTP ports of visible services by port number.
pub fn http_ports<'a>(
    services: &[&'a ServiceView],
) -> BTreeMap<u16, Vec<(&'a ServiceView, &'a ServicePort)>> {
    let mut by_port: BTreeMap<u16, Vec<(&ServiceView, &ServicePort)>> = BTreeMap::new();
    for s in services {
        for p in &s.service.ports {
            if p.protocol.is_http() {
                by_port.entry(p.port).or_default().push((s, p));
            }
        }
    }
    by_port
}

/// A route that sends every request to one cluster, with no timeout or retries and WebSocket
/// allowed: the sidecar's inbound routes and the passthrough route.
pub(crate) fn forward_all(name: &str, cluster: &str) -> Route {
    Route {
        name: name.into(),
        matching: RouteMatch::any(),
        action: Action::Forward(RouteAction {
            clusters: vec![WeightedCluster {
                name: cluster.into(),
                weight: 100,
                request_headers: HeaderEdits::default(),
                response_headers: HeaderEdits::default(),
            }],
            timeout_ms: Some(0),
            retry: None,
            mirrors: vec![],
            prefix_rewrite: None,
            regex_rewrite: None,
            host_rewrite: None,
            hash_policy: vec![],
            upgrades: vec!["websocket".into()],
        }),
        request_headers: HeaderEdits::default(),
        response_headers: HeaderEdits::default(),
        fault: None,
        cors: None,
    }
}
