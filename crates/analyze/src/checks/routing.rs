//! VirtualService references: destination hosts, subsets, gateways, delegates; conflicting
//! hosts; Gateway selectors.

use std::collections::BTreeMap;

use strait_config::FieldPath;
use strait_config::istio::common::Destination;
use strait_config::istio::traffic::VirtualService;
use strait_config::resource::Object;

use crate::context::{Context, at};
use crate::message::{Message, codes};

/// Every destination of a VirtualService, with its field path.
fn destinations_of(vs: &VirtualService) -> Vec<(FieldPath, &Destination)> {
    let spec = FieldPath::root().field("spec");
    let mut out = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        let p = spec.field("http").index(i);
        for (j, d) in r.route.iter().enumerate() {
            out.push((
                p.field("route").index(j).field("destination"),
                &d.destination,
            ));
        }
        if let Some(m) = &r.mirror {
            out.push((p.field("mirror"), m));
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            out.push((
                p.field("mirrors").index(j).field("destination"),
                &m.destination,
            ));
        }
    }
    for (field, routes) in [
        ("tls", vs.tls.iter().map(|r| &r.route).collect::<Vec<_>>()),
        ("tcp", vs.tcp.iter().map(|r| &r.route).collect()),
    ] {
        for (i, route) in routes.into_iter().enumerate() {
            for (j, d) in route.iter().enumerate() {
                out.push((
                    spec.field(field)
                        .index(i)
                        .field("route")
                        .index(j)
                        .field("destination"),
                    &d.destination,
                ));
            }
        }
    }
    out
}

/// Destination hosts that no service defines, and subsets no DestinationRule defines.
pub(super) fn destinations(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let rules: Vec<_> = ctx.all(|c| &c.destination_rules).collect();
    for vs in ctx.all(|c| &c.virtual_services) {
        for (path, dest) in destinations_of(&vs.spec) {
            let host = ctx.resolve(&dest.host, &vs.meta.namespace);
            if ctx.find_service(&host).is_none() {
                out.push(at(
                    codes::DESTINATION_HOST_NOT_FOUND,
                    "VirtualService",
                    vs,
                    &path.field("host"),
                    format!("Referenced host not found: \"{host}\": no Service, ServiceEntry or mirrored service defines it; requests routed here fail with 503"),
                ));
                continue;
            }
            let Some(subset) = &dest.subset else { continue };
            let defined = rules.iter().any(|dr| {
                strait_config::validate::rules::validate_wildcard_domain(&dr.spec.host).is_ok()
                    && host_covers(&ctx.resolve(&dr.spec.host, &dr.meta.namespace), &host)
                    && dr.spec.subsets.iter().any(|s| &s.name == subset)
            });
            if !defined {
                out.push(at(
                    codes::SUBSET_NOT_FOUND,
                    "VirtualService",
                    vs,
                    &path.field("subset"),
                    format!("Referenced subset not found: no DestinationRule for \"{host}\" defines subset \"{subset}\"; requests routed here fail with 503 (define it in a DestinationRule's subsets)"),
                ));
            }
        }
    }
}

/// `pattern` (a host, maybe with a wildcard) covers `host`.
pub(super) fn host_covers(pattern: &str, host: &str) -> bool {
    pattern == host
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| host.ends_with(suffix))
}

/// `ns/name` of a gateway reference as written in a VirtualService in `namespace`.
fn gateway_key(reference: &str, namespace: &str) -> String {
    if reference == "mesh" {
        return "mesh".into();
    }
    match reference.split_once('/') {
        Some(_) => reference.to_string(),
        // Legacy forms: `name` (same namespace) and `name.namespace.svc.cluster.local`.
        None => match reference.split_once('.') {
            Some((name, rest)) => format!("{}/{name}", rest.split('.').next().unwrap_or(namespace)),
            None => format!("{namespace}/{reference}"),
        },
    }
}

/// Two VirtualServices claiming the same host on the same gateway.
pub(super) fn virtual_service_conflicts(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let mut claims: BTreeMap<(String, String), Vec<&Object<VirtualService>>> = BTreeMap::new();
    for vs in ctx.all(|c| &c.virtual_services) {
        let gateways: Vec<String> = if vs.spec.gateways.is_empty() {
            vec!["mesh".into()]
        } else {
            vs.spec
                .gateways
                .iter()
                .map(|g| gateway_key(g, &vs.meta.namespace))
                .collect()
        };
        for gw in gateways {
            for host in &vs.spec.hosts {
                let list = claims
                    .entry((gw.clone(), ctx.resolve(host, &vs.meta.namespace)))
                    .or_default();
                if !list.iter().any(|o| o.meta == vs.meta) {
                    list.push(vs);
                }
            }
        }
    }
    for ((gateway, host), list) in claims {
        if list.len() < 2 {
            continue;
        }
        let names: Vec<String> = list
            .iter()
            .map(|v| format!("{}/{}", v.meta.namespace, v.meta.name))
            .collect();
        for vs in &list {
            let mut m = at(
                codes::CONFLICTING_VIRTUAL_SERVICE_HOSTS,
                "VirtualService",
                vs,
                &FieldPath::root().field("spec").field("hosts"),
                format!(
                    "the VirtualServices {} all define host \"{host}\" for gateway \"{gateway}\"; {}",
                    names.join(", "),
                    if gateway == "mesh" {
                        "only one applies to sidecars: merge them into one VirtualService"
                    } else {
                        "their routes are merged in creation order and later conflicting rules never match: merge them"
                    }
                ),
            );
            if gateway != "mesh" {
                m.level = crate::Level::Warning;
            }
            out.push(m);
        }
    }
}

/// Gateways referenced but not defined; Gateways whose selector matches no workload.
pub(super) fn gateways(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let defined: Vec<String> = ctx
        .all(|c| &c.gateways)
        .map(|g| format!("{}/{}", g.meta.namespace, g.meta.name))
        .collect();
    for vs in ctx.all(|c| &c.virtual_services) {
        for (i, g) in vs.spec.gateways.iter().enumerate() {
            let key = gateway_key(g, &vs.meta.namespace);
            if key != "mesh" && !defined.contains(&key) {
                out.push(at(
                    codes::GATEWAY_NOT_FOUND,
                    "VirtualService",
                    vs,
                    &FieldPath::root().field("spec").field("gateways").index(i),
                    format!("Referenced gateway not found: \"{key}\"; the routes for it are not applied anywhere"),
                ));
            }
        }
    }
    for gw in ctx.all(|c| &c.gateways) {
        if gw.spec.selector.is_empty() {
            continue;
        }
        if ctx.selected(None, &gw.spec.selector).next().is_none() {
            let labels: Vec<String> = gw
                .spec
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push(at(
                codes::GATEWAY_SELECTS_NO_WORKLOAD,
                "Gateway",
                gw,
                &FieldPath::root().field("spec").field("selector"),
                format!("no workload matches the selector {}: no proxy serves this Gateway (is the gateway deployed and labelled?)", labels.join(",")),
            ));
        }
    }
}

/// Root VirtualServices' `delegate`s: one missing, not a delegate (it has hosts) or not exported
/// to the root's namespace drops the route naming it; a delegate route whose conditions fall
/// outside the root route's is dropped from the merge.
pub(super) fn delegates(ctx: &Context<'_>, out: &mut Vec<Message>) {
    use strait_config::istio::delegation;
    for (_, config) in ctx.configs {
        let services = &config.virtual_services;
        for root in services.iter().filter(|v| !v.spec.hosts.is_empty()) {
            for (i, route) in root.spec.http.iter().enumerate() {
                let Some(d) = &route.delegate else { continue };
                let (namespace, name) = d.target(&root.meta.namespace);
                let path = FieldPath::root()
                    .field("spec")
                    .field("http")
                    .index(i)
                    .field("delegate");
                let Some(child) = delegation::delegate(services, d, &root.meta.namespace) else {
                    out.push(at(
                        codes::DELEGATE_NOT_FOUND,
                        "VirtualService",
                        root,
                        &path,
                        format!(
                            "no VirtualService {namespace}/{name} without hosts is visible to namespace {}: this route is dropped, and its requests fall to the routes after it",
                            root.meta.namespace
                        ),
                    ));
                    continue;
                };
                for (j, c) in child.spec.http.iter().enumerate() {
                    if !delegation::fits(route, c) {
                        out.push(at(
                            codes::DELEGATE_ROUTE_OUTSIDE_ROOT,
                            "VirtualService",
                            child,
                            &FieldPath::root().field("spec").field("http").index(j).field("match"),
                            format!(
                                "these conditions are not within those of the route delegating to it ({}/{} spec.http[{i}]): the route is dropped from the merge",
                                root.meta.namespace, root.meta.name
                            ),
                        ));
                    }
                }
            }
        }
    }
}
