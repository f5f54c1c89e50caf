//! VirtualService and DestinationRule rules (Istio's webhook and CRD schema).

use std::collections::{BTreeMap, BTreeSet};

use super::rules::{self, GRPC_STATUS_NAMES, HTTP_METHODS, RETRY_ON_POLICIES};
use super::{
    SelectorWording, at_most_one, deprecated, duration_min_1ms, export_to, selector_labels,
};
use crate::issue::{Issue, IssueKind, Issues};
use crate::istio::common::{Destination, StringMatch};
use crate::istio::traffic::*;
use crate::path::FieldPath;
use crate::resource::Meta;
use crate::validate::codes;

pub(super) fn virtual_service(
    vs: &VirtualService,
    meta: &Meta,
    spec: &FieldPath,
    out: &mut Issues,
) {
    let delegate = vs.hosts.is_empty();
    if delegate {
        if !vs.gateways.is_empty() {
            out.invalid(
                spec.field("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if !vs.tls.is_empty() {
            out.invalid(
                spec.field("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if !vs.tcp.is_empty() {
            out.invalid(
                spec.field("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    let applies_to_gateway = !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh");
    let applies_to_mesh = vs.gateways.is_empty() || !applies_to_gateway;
    gateway_names(&vs.gateways, &spec.field("gateways"), out);

    let sni = vs
        .tls
        .iter()
        .any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()));
    let mut all_valid = true;
    for (i, host) in vs.hosts.iter().enumerate() {
        let p = spec.field("hosts").index(i);
        let res = if applies_to_gateway {
            gateway_bound_domain(sni, host)
        } else {
            rules::validate_wildcard_domain(host)
        };
        match res {
            Err(e) if !rules::is_ip(host) => {
                out.invalid(p, e);
                all_valid = false;
            }
            Ok(()) if applies_to_mesh && host == "*" => {
                out.invalid(
                    p,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_valid = false;
            }
            _ => {}
        }
    }
    if all_valid {
        for i in 0..vs.hosts.len() {
            for j in i + 1..vs.hosts.len() {
                if host_matches(&vs.hosts[i], &vs.hosts[j]) {
                    out.invalid(
                        spec.field("hosts").index(j),
                        format!(
                            "duplicate hosts in virtual service: {} & {}",
                            vs.hosts[i], vs.hosts[j]
                        ),
                    );
                }
            }
        }
    }
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        out.required(
            spec.clone(),
            "http, tcp or tls must be provided in virtual service",
        );
    }
    for (i, route) in vs.http.iter().enumerate() {
        http_route(route, delegate, &spec.field("http").index(i), out);
    }
    for (i, route) in vs.tls.iter().enumerate() {
        let p = spec.field("tls").index(i);
        if route.matches.is_empty() {
            out.required(
                p.field("match"),
                "TLS route must have at least one match condition",
            );
        }
        for (j, m) in route.matches.iter().enumerate() {
            let mp = p.field("match").index(j);
            if m.sni_hosts.is_empty() {
                out.required(
                    mp.field("sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
            for (k, sni_host) in m.sni_hosts.iter().enumerate() {
                sni_host_rule(
                    sni_host,
                    vs,
                    applies_to_gateway,
                    &mp.field("sniHosts").index(k),
                    out,
                );
            }
            subnets(&m.destination_subnets, &mp.field("destinationSubnets"), out);
            port_opt(m.port, &mp.field("port"), out);
            super::labels(&m.source_labels, &mp.field("sourceLabels"), out);
            gateway_names(&m.gateways, &mp.field("gateways"), out);
        }
        if route.route.is_empty() {
            out.required(p.field("route"), "TLS route is required");
        }
        route_destinations(
            route.route.iter().map(|r| (&r.destination, r.weight)),
            &p.field("route"),
            out,
        );
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        let p = spec.field("tcp").index(i);
        for (j, m) in route.matches.iter().enumerate() {
            let mp = p.field("match").index(j);
            subnets(&m.destination_subnets, &mp.field("destinationSubnets"), out);
            port_opt(m.port, &mp.field("port"), out);
            super::labels(&m.source_labels, &mp.field("sourceLabels"), out);
            gateway_names(&m.gateways, &mp.field("gateways"), out);
        }
        if route.route.is_empty() {
            out.required(p.field("route"), "TCP route is required");
        }
        route_destinations(
            route.route.iter().map(|r| (&r.destination, r.weight)),
            &p.field("route"),
            out,
        );
    }
    export_to(
        &meta.namespace,
        &vs.export_to,
        false,
        false,
        &spec.field("exportTo"),
        out,
    );
    unreachable_rules(vs, spec, out);
}

fn gateway_bound_domain(sni: bool, domain: &str) -> Result<(), String> {
    if sni && domain.starts_with("outbound_.") {
        return Ok(());
    }
    rules::validate_wildcard_domain(domain)
}

/// Istio's host matching: equal, or one wildcard covers the other.
pub(crate) fn host_matches(a: &str, b: &str) -> bool {
    fn covers(wild: &str, other: &str) -> bool {
        match wild.strip_prefix('*') {
            Some(suffix) => {
                other.ends_with(suffix)
                    || other.strip_prefix('*').is_some_and(|o| o.ends_with(suffix))
            }
            None => false,
        }
    }
    a == b || covers(a, b) || covers(b, a)
}

/// Whether `sub` is within `sup` (an exact host within a wildcard, or a narrower wildcard).
fn host_subset_of(sub: &str, sup: &str) -> bool {
    if sub == sup || sup == "*" {
        return true;
    }
    match (sub.strip_prefix('*'), sup.strip_prefix('*')) {
        (_, Some(sup_suffix)) => sub.ends_with(sup_suffix),
        (Some(_), None) => false,
        (None, None) => false,
    }
}

fn sni_host_rule(sni: &str, vs: &VirtualService, gateway: bool, p: &FieldPath, out: &mut Issues) {
    let res = if gateway {
        gateway_bound_domain(true, sni)
    } else {
        rules::validate_wildcard_domain(sni)
    };
    if let Err(e) = res {
        if rules::is_ip(sni) {
            out.warn(IssueKind::Notice, p.clone(), format!("using an IP address (\"{sni}\") goes against SNI spec and most clients do not support this"));
        } else {
            out.invalid(p.clone(), e);
        }
        return;
    }
    if !vs.hosts.iter().any(|h| host_subset_of(sni, h)) {
        out.invalid(p.clone(), format!("SNI host \"{sni}\" is not a compatible subset of any of the virtual service hosts: [{}]", vs.hosts.join(", ")));
    }
}

fn gateway_names(names: &[String], p: &FieldPath, out: &mut Issues) {
    for (i, name) in names.iter().enumerate() {
        let ip = p.index(i);
        match name.split_once('/') {
            None => {
                if name == "mesh" {
                    continue;
                }
                if let Some((n, ns)) = name.split_once('.') {
                    out.warn(IssueKind::Notice, ip.clone(), format!("using legacy gatewayName format \"{name}\"; prefer the <namespace>/<name> format: \"{}/{n}\"", ns.split('.').next().unwrap_or(ns)));
                }
                if let Err(e) = rules::validate_fqdn(name) {
                    out.invalid(ip, e);
                }
            }
            Some((ns, gw)) => {
                if ns.is_empty() || gw.is_empty() {
                    out.invalid(
                        ip.clone(),
                        "config namespace and gateway name cannot be empty",
                    );
                }
                if !rules::is_dns1123_label(ns) {
                    out.invalid(ip.clone(), format!("invalid value for namespace: \"{ns}\""));
                }
                if !rules::is_dns1123_label(gw) {
                    out.invalid(ip, format!("invalid value for gateway name: \"{gw}\""));
                }
            }
        }
    }
}

fn subnets(list: &[String], p: &FieldPath, out: &mut Issues) {
    for (i, s) in list.iter().enumerate() {
        if let Err(e) = rules::validate_ip_or_cidr(s) {
            out.invalid(p.index(i), e);
        }
    }
}

fn port_opt(port: Option<u32>, p: &FieldPath, out: &mut Issues) {
    if let Some(n) = port
        && n != 0
        && let Err(e) = rules::validate_port(n.into())
    {
        out.invalid(p.clone(), e);
    }
}

fn http_route(r: &HttpRoute, delegate: bool, p: &FieldPath, out: &mut Issues) {
    let root = r.delegate.is_some() && !delegate;
    if root {
        if r.redirect.is_some() {
            out.invalid(
                p.field("redirect"),
                format!(
                    "root HTTP route {} must not specify redirect",
                    r.name.as_deref().unwrap_or("")
                ),
            );
        }
        if !r.route.is_empty() {
            out.invalid(
                p.field("route"),
                format!(
                    "root HTTP route {} must not specify route",
                    r.name.as_deref().unwrap_or("")
                ),
            );
        }
    } else {
        if delegate && r.delegate.is_some() {
            out.invalid(
                p.field("delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        let terminal = [
            ("redirect", r.redirect.is_some()),
            ("directResponse", r.direct_response.is_some()),
        ];
        if r.redirect.is_some() {
            if !r.route.is_empty() {
                out.invalid(
                    p.clone(),
                    "HTTP route cannot contain both route and redirect",
                );
            }
            if r.fault.is_some() {
                out.invalid(
                    p.clone(),
                    "HTTP route cannot contain both fault and redirect",
                );
            }
            if r.rewrite.is_some() {
                out.invalid(
                    p.clone(),
                    "HTTP route rule cannot contain both rewrite and redirect",
                );
            }
        }
        if r.direct_response.is_some() {
            if !r.route.is_empty() {
                out.invalid(
                    p.clone(),
                    "HTTP route cannot contain both route and directResponse",
                );
            }
            if r.redirect.is_some() {
                out.invalid(
                    p.clone(),
                    "HTTP route cannot contain both redirect and directResponse",
                );
            }
            if r.fault.is_some() {
                out.invalid(
                    p.clone(),
                    "HTTP route cannot contain both fault and directResponse",
                );
            }
            if r.rewrite.is_some() {
                out.invalid(
                    p.clone(),
                    "HTTP route rule cannot contain both rewrite and directResponse",
                );
            }
        }
        if r.route.is_empty() && !terminal.iter().any(|(_, on)| *on) {
            out.required(
                p.field("route"),
                "HTTP route, redirect or directResponse is required",
            );
        }
    }
    for (i, m) in r.matches.iter().enumerate() {
        let mp = p.field("match").index(i);
        for (field, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                string_match(sm, delegate || root, field, &mp.field(field), out);
            }
        }
        for (field, map) in [
            ("headers", &m.headers),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (name, sm) in map {
                let hp = mp.field(field).key(name);
                if name.is_empty() {
                    out.invalid(hp.clone(), "header name cannot be empty");
                } else if !rules::is_valid_header_name(name) && !is_jwt_claim_route(name) {
                    out.invalid(
                        hp.clone(),
                        format!("header name {name} is not a valid header name"),
                    );
                }
                string_match(sm, delegate || root, field, &hp, out);
            }
        }
        for (name, sm) in &m.query_params {
            string_match(
                sm,
                delegate || root,
                "queryParams",
                &mp.field("queryParams").key(name),
                out,
            );
        }
        port_opt(m.port, &mp.field("port"), out);
        super::labels(&m.source_labels, &mp.field("sourceLabels"), out);
        gateway_names(&m.gateways, &mp.field("gateways"), out);
        if let Some(ns) = &m.source_namespace
            && !rules::is_dns1123_label(ns)
        {
            out.invalid(
                mp.field("sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
    }
    if let Some(h) = &r.headers {
        header_operations(h, &p.field("headers"), out);
    }
    authority_rewrite(r, p, out);
    if let Some(c) = &r.cors_policy {
        cors(c, &p.field("corsPolicy"), out);
    }
    if let Some(f) = &r.fault {
        fault(f, &p.field("fault"), out);
    }
    let mirror_percent = r.mirror_percent.or(r.mirror_percent_snake);
    if let Some(v) = mirror_percent {
        let field = if r.mirror_percent.is_some() {
            "mirrorPercent"
        } else {
            "mirror_percent"
        };
        if v > 100 {
            out.invalid(
                p.field(field),
                format!("mirror_percent must have a max value of 100 (it has {v})"),
            );
        }
        deprecated(
            p.field(field),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
            out,
        );
    }
    if let Some(pc) = &r.mirror_percentage {
        if pc.value > 100.0 {
            out.invalid(
                p.field("mirrorPercentage").field("value"),
                format!(
                    "mirror_percentage must have a max value of 100 (it has {})",
                    pc.value
                ),
            );
        }
        if pc.value < 0.0 {
            out.invalid(
                p.field("mirrorPercentage").field("value"),
                format!(
                    "mirror_percentage must have a min value of 0 (it has {})",
                    pc.value
                ),
            );
        }
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        out.invalid(p.clone(), "cannot specify both mirror and mirrors");
    }
    if let Some(m) = &r.mirror {
        destination(m, &p.field("mirror"), out);
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let mp = p.field("mirrors").index(i);
        destination(&m.destination, &mp.field("destination"), out);
        if let Some(pc) = &m.percentage
            && !(0.0..=100.0).contains(&pc.value)
        {
            out.invalid(
                mp.field("percentage").field("value"),
                format!(
                    "mirror percentage must be between 0 and 100 (it has {})",
                    pc.value
                ),
            );
        }
    }
    if let Some(rd) = &r.redirect {
        redirect(rd, &p.field("redirect"), out);
    }
    if let Some(dr) = &r.direct_response {
        direct_response(dr, &p.field("directResponse"), out);
    }
    if let Some(rt) = &r.retries {
        retries(rt, &p.field("retries"), out);
    }
    if let Some(rw) = &r.rewrite {
        rewrite(rw, &p.field("rewrite"), out);
    }
    route_destinations(
        r.route.iter().map(|d| (&d.destination, d.weight)),
        &p.field("route"),
        out,
    );
    for (i, d) in r.route.iter().enumerate() {
        if let Some(h) = &d.headers {
            header_operations(h, &p.field("route").index(i).field("headers"), out);
        }
    }
    duration_min_1ms(&r.timeout, &p.field("timeout"), out);
}

fn is_jwt_claim_route(name: &str) -> bool {
    name.starts_with("@request.auth.claims.")
        || (name.starts_with("@request.auth.claims[") && name.ends_with(']'))
}

fn string_match(sm: &StringMatch, delegating: bool, what: &str, p: &FieldPath, out: &mut Issues) {
    if !at_most_one(
        &[
            ("exact", sm.exact.is_some()),
            ("prefix", sm.prefix.is_some()),
            ("regex", sm.regex.is_some()),
        ],
        p,
        out,
    ) {
        return;
    }
    if let Some(prefix) = &sm.prefix
        && prefix.is_empty()
    {
        out.invalid(
            p.field("prefix"),
            format!("\"{what}\": prefix string match should not be empty"),
        );
    }
    if let Some(re) = &sm.regex {
        if delegating {
            out.invalid(
                p.field("regex"),
                format!("{what} match does not support regex match for delegating"),
            );
        } else if re.is_empty() {
            out.invalid(
                p.field("regex"),
                format!("\"{what}\": regex string match should not be empty"),
            );
        } else if let Err(e) = rules::validate_regex(re) {
            out.invalid(p.field("regex"), format!("\"{what}\": {e}"));
        }
    }
}

fn header_operations(h: &Headers, p: &FieldPath, out: &mut Issues) {
    for (side, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let sp = p.field(side);
        for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let np = sp.field(field).key(name);
                header_name_for_change(name, side == "request", &np, out);
                header_value(value, &np, out);
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            header_name_for_change(name, false, &sp.field("remove").index(i), out);
        }
    }
}

fn header_name_for_change(name: &str, authority_allowed: bool, p: &FieldPath, out: &mut Issues) {
    let is_authority = name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host");
    if name.is_empty() {
        out.invalid(p.clone(), "header name cannot be empty");
    } else if authority_allowed && is_authority {
        // Rewriting the authority through headers is allowed for requests.
    } else if name.eq_ignore_ascii_case("host") {
        out.invalid(
            p.clone(),
            format!("invalid header \"{name}\": cannot set Host header"),
        );
    } else if name.starts_with(':') {
        out.invalid(
            p.clone(),
            format!("invalid header \"{name}\": header cannot have \":\" prefix"),
        );
    }
}

fn header_value(value: &str, p: &FieldPath, out: &mut Issues) {
    if value
        .chars()
        .any(|c| (c as u32) < 0x20 && c != '\t' || c as u32 == 0x7f)
    {
        out.invalid(p.clone(), format!("header value configuration {value:?} is invalid: control characters are not allowed"));
        return;
    }
    // `%` starts an Envoy variable (`%HOSTNAME%`) and must be closed; `%%` is a literal `%`.
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('%') {
            rest = stripped;
            continue;
        }
        match after.find('%') {
            Some(j) if j > 0 => rest = &after[j + 1..],
            _ => {
                out.invalid(p.clone(), format!("header value configuration {value:?} is invalid: a '%' starts a variable such as %HOSTNAME% and must be closed; write %% for a literal %"));
                return;
            }
        }
    }
}

fn authority_rewrite(r: &HttpRoute, p: &FieldPath, out: &mut Issues) {
    let mut current = r.rewrite.as_ref().and_then(|rw| rw.authority.clone());
    let Some(req) = r.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    for map in [&req.set, &req.add] {
        for (k, v) in map {
            if !(k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host")) {
                continue;
            }
            if let Some(c) = &current {
                out.invalid(p.field("headers"), format!("authority header cannot be set multiple times: have \"{c}\", attempting to set \"{v}\""));
                return;
            }
            current = Some(v.clone());
        }
    }
}

fn cors(c: &CorsPolicy, p: &FieldPath, out: &mut Issues) {
    for (i, o) in c.allow_origins.iter().enumerate() {
        let op = p.field("allowOrigins").index(i);
        if !at_most_one(
            &[
                ("exact", o.exact.is_some()),
                ("prefix", o.prefix.is_some()),
                ("regex", o.regex.is_some()),
            ],
            &op,
            out,
        ) {
            continue;
        }
        let value = o
            .exact
            .as_deref()
            .or(o.prefix.as_deref())
            .or(o.regex.as_deref())
            .unwrap_or("");
        if value.is_empty() {
            out.invalid(
                op,
                format!("'{value}' is not a valid match type for CORS allow origins"),
            );
        } else if let Some(re) = &o.regex
            && let Err(e) = rules::validate_regex(re)
        {
            out.invalid(
                op.field("regex"),
                format!("\"corsPolicy.allowOrigins\": {e}"),
            );
        }
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !HTTP_METHODS.contains(&m.as_str()) {
            out.invalid(
                p.field("allowMethods").index(i),
                format!("\"{m}\" is not a supported HTTP method"),
            );
        }
    }
    for (field, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in list.iter().enumerate() {
            if h.is_empty() {
                out.invalid(p.field(field).index(i), "header name cannot be empty");
            } else if h != "*" && !rules::is_valid_header_name(h) {
                out.invalid(
                    p.field(field).index(i),
                    format!("header name {h} is not a valid header name"),
                );
            }
        }
    }
    if let Some(max_age) = &c.max_age {
        duration_min_1ms(&c.max_age, &p.field("maxAge"), out);
        if max_age.as_std().subsec_nanos() != 0 {
            out.invalid(
                p.field("maxAge"),
                "max_age duration is accurate only to seconds precision",
            );
        }
    }
    if !c.allow_origin.is_empty() {
        deprecated(
            p.field("allowOrigin"),
            "allowOrigin is deprecated; use allowOrigins with exact, prefix or regex",
            out,
        );
    }
}

fn fault(f: &HttpFaultInjection, p: &FieldPath, out: &mut Issues) {
    if f.abort.is_none() && f.delay.is_none() {
        out.invalid(
            p.clone(),
            "HTTP fault injection must have an abort and/or a delay",
        );
    }
    if let Some(a) = &f.abort {
        let ap = p.field("abort");
        percentage(
            a.percentage.map(|x| x.value),
            &ap.field("percentage").field("value"),
            out,
        );
        let set = [
            ("httpStatus", a.http_status.is_some()),
            ("grpcStatus", a.grpc_status.is_some()),
            ("http2Error", a.http2_error.is_some()),
        ];
        if at_most_one(&set, &ap, out) {
            if let Some(s) = a.http_status {
                http_status(s.into(), &ap.field("httpStatus"), out);
            } else if let Some(g) = &a.grpc_status {
                if !GRPC_STATUS_NAMES.contains(&g.as_str()) {
                    out.invalid(ap.field("grpcStatus"), format!("gRPC status \"{g}\" is not supported; use a name such as NOT_FOUND or UNAVAILABLE"));
                }
            } else if a.http2_error.is_some() {
                out.invalid(
                    ap.field("http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                );
            } else {
                out.warn(
                    IssueKind::Notice,
                    ap,
                    "abort configured, but error type not set",
                );
            }
        }
    }
    if let Some(d) = &f.delay {
        let dp = p.field("delay");
        percentage(
            d.percentage.map(|x| x.value),
            &dp.field("percentage").field("value"),
            out,
        );
        if at_most_one(
            &[
                ("fixedDelay", d.fixed_delay.is_some()),
                ("exponentialDelay", d.exponential_delay.is_some()),
            ],
            &dp,
            out,
        ) {
            duration_min_1ms(&d.fixed_delay, &dp.field("fixedDelay"), out);
            if d.exponential_delay.is_some() {
                duration_min_1ms(&d.exponential_delay, &dp.field("exponentialDelay"), out);
                out.invalid(
                    dp.field("exponentialDelay"),
                    "exponentialDelay not supported yet",
                );
            }
        }
        if let Some(pc) = d.percent {
            if !(0..=100).contains(&pc) {
                out.invalid(
                    dp.field("percent"),
                    format!("percentage {pc} is not in range 0..100"),
                );
            }
            deprecated(
                dp.field("percent"),
                "percent is deprecated; use percentage.value",
                out,
            );
        }
    }
}

fn percentage(value: Option<f64>, p: &FieldPath, out: &mut Issues) {
    if let Some(v) = value
        && (!(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001))
    {
        out.invalid(
            p.clone(),
            format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
    }
}

fn http_status(status: i64, p: &FieldPath, out: &mut Issues) {
    if !(200..=599).contains(&status) {
        out.invalid(
            p.clone(),
            format!("HTTP status {status} is not in range 200-599"),
        );
    }
}

fn redirect(r: &HttpRedirect, p: &FieldPath, out: &mut Issues) {
    if !at_most_one(
        &[
            ("port", r.port.is_some()),
            ("derivePort", r.derive_port.is_some()),
        ],
        p,
        out,
    ) {
        return;
    }
    if r.uri.is_none()
        && r.authority.is_none()
        && r.port.is_none()
        && r.derive_port.is_none()
        && r.scheme.is_none()
        && r.prefix_rewrite.is_none()
    {
        out.invalid(
            p.clone(),
            "redirect must specify URI, authority, scheme, or port",
        );
    }
    if let Some(code) = r.redirect_code
        && code != 0
        && !(300..=399).contains(&code)
    {
        out.invalid(
            p.field("redirectCode"),
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
    }
    if let Some(s) = &r.scheme
        && !s.is_empty()
        && s != "http"
        && s != "https"
    {
        out.invalid(
            p.field("scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    port_opt(r.port, &p.field("port"), out);
}

fn direct_response(d: &HttpDirectResponse, p: &FieldPath, out: &mut Issues) {
    if let Some(body) = &d.body
        && at_most_one(
            &[
                ("string", body.string.is_some()),
                ("bytes", body.bytes.is_some()),
            ],
            &p.field("body"),
            out,
        )
    {
        let size = body
            .string
            .as_ref()
            .or(body.bytes.as_ref())
            .map_or(0, String::len);
        if size > 1024 * 1024 {
            out.invalid(p.field("body"), "large direct_responses may impact control plane performance, must be less than 1MB");
        } else if size > 100 * 1024 {
            out.warn(
                IssueKind::Notice,
                p.field("body"),
                "large direct_responses may impact control plane performance",
            );
        }
    }
    http_status(d.status.into(), &p.field("status"), out);
}

fn retries(r: &HttpRetry, p: &FieldPath, out: &mut Issues) {
    if r.attempts < 0 {
        out.invalid(p.field("attempts"), "attempts cannot be negative");
    }
    if r.attempts == 0
        && (r.per_try_timeout.is_some()
            || r.retry_on.is_some()
            || r.retry_remote_localities.is_some())
    {
        out.invalid(
            p.clone(),
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    duration_min_1ms(&r.per_try_timeout, &p.field("perTryTimeout"), out);
    duration_min_1ms(&r.backoff, &p.field("backoff"), out);
    if let Some(on) = &r.retry_on {
        for policy in on.split(',').filter(|s| !s.is_empty()) {
            let policy = policy.trim();
            let status_ok = policy.parse::<u16>().is_ok_and(rules::is_known_http_status);
            if !status_ok && !RETRY_ON_POLICIES.contains(&policy) {
                out.invalid(
                    p.field("retryOn"),
                    format!("\"{policy}\" is not a valid retryOn policy"),
                );
            }
        }
    }
}

fn rewrite(r: &HttpRewrite, p: &FieldPath, out: &mut Issues) {
    if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
        out.invalid(
            p.clone(),
            "rewrite may only contain one of URI or UriRegexRewrite",
        );
    }
    if r.uri.is_none() && r.uri_regex_rewrite.is_none() && r.authority.is_none() {
        out.invalid(p.clone(), "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified");
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        let rp = p.field("uriRegexRewrite");
        match (&rr.pattern, &rr.rewrite) {
            (Some(m), Some(w)) if !m.is_empty() && !w.is_empty() => {
                if let Err(e) = rules::validate_regex(m) {
                    out.invalid(
                        rp.field("match"),
                        format!("UriRegexRewrite has errors: {e}"),
                    );
                }
            }
            _ => out.invalid(
                rp,
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            ),
        }
    }
}

/// Weights must be non-negative and not all zero; each destination valid.
fn route_destinations<'a>(
    dests: impl Iterator<Item = (&'a Destination, Option<i32>)>,
    p: &FieldPath,
    out: &mut Issues,
) {
    let mut total: i64 = 0;
    let mut count = 0;
    for (i, (d, weight)) in dests.enumerate() {
        count += 1;
        let dp = p.index(i);
        destination(d, &dp.field("destination"), out);
        let w = weight.unwrap_or(0);
        if w < 0 {
            out.invalid(dp.field("weight"), format!("weight {w} < 0"));
        }
        total += i64::from(w);
    }
    if count > 1 && total == 0 {
        out.invalid(p.clone(), "total destination weight = 0");
    }
}

pub(super) fn destination(d: &Destination, p: &FieldPath, out: &mut Issues) {
    if d.host == "*" {
        out.invalid(
            p.field("host"),
            format!("invalid destination host {}", d.host),
        );
    } else if d.host.is_empty() {
        out.required(p.field("host"), "a destination needs a host");
    } else if let Err(e) = rules::validate_wildcard_domain(&d.host) {
        out.invalid(p.field("host"), e);
    }
    if let Some(s) = &d.subset {
        subset_name(s, &p.field("subset"), out);
    }
    if let Some(port) = &d.port {
        match port.number {
            Some(n) => {
                if let Err(e) = rules::validate_port(n.into()) {
                    out.invalid(p.field("port").field("number"), e);
                }
            }
            None => out.invalid(
                p.field("port").field("number"),
                "port must be between 1-65535 (got 0)",
            ),
        }
    }
}

fn subset_name(name: &str, p: &FieldPath, out: &mut Issues) {
    if name.is_empty() {
        out.invalid(p.clone(), "subset name cannot be empty");
    } else if !rules::is_dns1123_label(name) {
        out.invalid(p.clone(), format!("subset name is invalid: {name}"));
    }
}

/// Istio's warnings about rules that can never be reached.
fn unreachable_rules(vs: &VirtualService, spec: &FieldPath, out: &mut Issues) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut catch_all: Option<usize> = None;
    for (i, route) in vs.http.iter().enumerate() {
        let name = route
            .name
            .as_ref()
            .map_or_else(|| format!("#{i}"), |n| format!("\"{n}\""));
        if route.matches.is_empty() {
            if catch_all.is_some() {
                out.warn(IssueKind::Notice, spec.field("http").index(i), format!("virtualService rule {name} not used (only the last rule can have no matches)"));
            }
            catch_all = Some(i);
            continue;
        }
        if let Some(c) = catch_all {
            out.warn(IssueKind::Notice, spec.field("http").index(i), format!("virtualService rule {name} not used (rule #{c} before it matches every request)"));
        }
        let mut duplicates = 0;
        for (j, m) in route.matches.iter().enumerate() {
            let mut m = m.clone();
            m.name = None;
            let key = format!("{m:?}");
            if let Some(prev) = seen.get(&key) {
                duplicates += 1;
                out.warn(IssueKind::Notice, spec.field("http").index(i).field("match").index(j), format!("virtualService rule {name} match #{j} is not used (duplicate/overlapping match in rule #{prev})"));
            } else {
                seen.insert(key, i);
            }
        }
        if duplicates == route.matches.len() {
            out.warn(
                IssueKind::Notice,
                spec.field("http").index(i),
                format!("virtualService rule {name} not used (all matches used by prior rules)"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DestinationRule

pub(super) fn destination_rule(
    dr: &DestinationRule,
    meta: &Meta,
    spec: &FieldPath,
    out: &mut Issues,
) {
    if let Err(e) = rules::validate_wildcard_domain(&dr.host) {
        if dr.host.is_empty() {
            out.required(
                spec.field("host"),
                "the host this rule applies to must be set",
            );
        } else {
            out.invalid(spec.field("host"), e);
        }
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(tp, &spec.field("trafficPolicy"), out);
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let sp = spec.field("subsets").index(i);
        if !names.insert(s.name.as_str()) {
            out.error(
                IssueKind::Duplicate,
                sp.field("name"),
                format!("duplicate subset names: {}", s.name),
            );
        }
        subset_name(&s.name, &sp.field("name"), out);
        super::labels(&s.labels, &sp.field("labels"), out);
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(tp, &sp.field("trafficPolicy"), out);
        }
    }
    export_to(
        &meta.namespace,
        &dr.export_to,
        false,
        dr.workload_selector.is_some(),
        &spec.field("exportTo"),
        out,
    );
    if let Some(sel) = &dr.workload_selector {
        let sp = spec.field("workloadSelector").field("matchLabels");
        selector_labels(&sel.match_labels, &sp, SelectorWording::MatchLabels, out);
        if sel.match_labels.is_empty() {
            out.warn(
                IssueKind::Notice,
                spec.field("workloadSelector"),
                "workload selector specified without labels",
            );
        }
    }
}

fn traffic_policy(tp: &TrafficPolicy, p: &FieldPath, out: &mut Issues) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_none()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        out.invalid(p.clone(), "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        out.invalid(
            p.clone(),
            "tunnel and proxyProtocol must not be set together",
        );
        return;
    }
    if let Some(o) = &tp.outlier_detection {
        outlier(o, &p.field("outlierDetection"), out);
    }
    if let Some(c) = &tp.connection_pool {
        connection_pool(c, &p.field("connectionPool"), out);
    }
    if let Some(lb) = &tp.load_balancer {
        load_balancer(
            lb,
            tp.outlier_detection.as_ref(),
            &p.field("loadBalancer"),
            out,
        );
    }
    if let Some(t) = &tp.tls {
        client_tls(t, &p.field("tls"), out);
    }
    if let Some(pls) = &tp.port_level_settings {
        if pls.len() > 4096 {
            out.invalid(p.field("portLevelSettings"), "must have at most 4096 items");
        }
        for (i, pl) in pls.iter().enumerate() {
            let pp = p.field("portLevelSettings").index(i);
            match pl.port.as_ref().and_then(|x| x.number) {
                None => out.invalid(pp.field("port"), "portTrafficPolicy must have valid port"),
                Some(n) => {
                    if let Err(e) = rules::validate_port(n.into()) {
                        out.invalid(pp.field("port").field("number"), e);
                    }
                }
            }
            if pl.outlier_detection.is_none()
                && pl.connection_pool.is_none()
                && pl.load_balancer.is_none()
                && pl.tls.is_none()
            {
                out.invalid(pp, "port traffic policy must have at least one field");
                continue;
            }
            if let Some(o) = &pl.outlier_detection {
                outlier(o, &pp.field("outlierDetection"), out);
            }
            if let Some(c) = &pl.connection_pool {
                connection_pool(c, &pp.field("connectionPool"), out);
            }
            if let Some(lb) = &pl.load_balancer {
                load_balancer(
                    lb,
                    pl.outlier_detection.as_ref(),
                    &pp.field("loadBalancer"),
                    out,
                );
            }
            if let Some(t) = &pl.tls {
                client_tls(t, &pp.field("tls"), out);
            }
        }
    }
    if let Some(t) = &tp.tunnel {
        let tp_ = p.field("tunnel");
        if let Some(proto) = &t.protocol
            && !proto.is_empty()
            && proto != "CONNECT"
            && proto != "POST"
        {
            out.invalid(
                tp_.field("protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
        if rules::validate_fqdn(&t.target_host).is_err() && !rules::is_ip(&t.target_host) {
            out.invalid(
                tp_.field("targetHost"),
                format!(
                    "tunnel target host must be valid FQDN or IP address: \"{}\"",
                    t.target_host
                ),
            );
        }
        if let Err(e) = rules::validate_port(t.target_port.into()) {
            out.invalid(
                tp_.field("targetPort"),
                format!("tunnel target port is invalid: {e}"),
            );
        }
    }
    if let Some(rb) = &tp.retry_budget
        && let Some(pc) = rb.percent
        && !(0.0..=100.0).contains(&pc)
    {
        out.invalid(
            p.field("retryBudget").field("percent"),
            format!("{pc}: must be between 0 and 100"),
        );
    }
}

fn outlier(o: &OutlierDetection, p: &FieldPath, out: &mut Issues) {
    duration_min_1ms(&o.base_ejection_time, &p.field("baseEjectionTime"), out);
    duration_min_1ms(&o.interval, &p.field("interval"), out);
    if o.consecutive_errors.is_some_and(|v| v != 0) {
        deprecated(
            p.field("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
            out,
        );
    }
    if !o.split_external_local_origin_errors
        && o.consecutive_local_origin_failures.is_some_and(|v| v > 0)
    {
        out.invalid(p.field("consecutiveLocalOriginFailures"), "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false");
    }
    for (field, v) in [
        ("maxEjectionPercent", o.max_ejection_percent),
        ("minHealthPercent", o.min_health_percent),
    ] {
        if let Some(v) = v
            && !(0..=100).contains(&v)
        {
            out.invalid(
                p.field(field),
                format!("percentage {v} is not in range 0..100"),
            );
        }
    }
    for (i, code) in o.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            out.invalid(
                p.field("outlierDetectionHttpErrorCodes").index(i),
                format!("{code}: must be between 100 and 599"),
            );
        }
    }
}

pub(super) fn connection_pool(c: &ConnectionPoolSettings, p: &FieldPath, out: &mut Issues) {
    if c.http.is_none() && c.tcp.is_none() {
        out.invalid(p.clone(), "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &c.http {
        let hp = p.field("http");
        for (field, v, what) in [
            (
                "http1MaxPendingRequests",
                h.http1_max_pending_requests,
                "http1 max pending requests",
            ),
            (
                "http2MaxRequests",
                h.http2_max_requests,
                "http2 max requests",
            ),
            (
                "maxRequestsPerConnection",
                h.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", h.max_retries, "max retries"),
            (
                "maxConcurrentStreams",
                h.max_concurrent_streams,
                "max concurrent streams",
            ),
        ] {
            if v.is_some_and(|v| v < 0) {
                out.invalid(hp.field(field), format!("{what} must be non-negative"));
            }
        }
        duration_min_1ms(&h.idle_timeout, &hp.field("idleTimeout"), out);
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && h.use_client_protocol {
            out.invalid(
                hp.field("useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            duration_min_1ms(
                &ka.interval,
                &hp.field("http2KeepAlive").field("interval"),
                out,
            );
            duration_min_1ms(
                &ka.timeout,
                &hp.field("http2KeepAlive").field("timeout"),
                out,
            );
        }
    }
    if let Some(t) = &c.tcp {
        let tp = p.field("tcp");
        if t.max_connections.is_some_and(|v| v < 0) {
            out.invalid(
                tp.field("maxConnections"),
                "max connections must be non-negative",
            );
        }
        duration_min_1ms(&t.connect_timeout, &tp.field("connectTimeout"), out);
        duration_min_1ms(
            &t.max_connection_duration,
            &tp.field("maxConnectionDuration"),
            out,
        );
        duration_min_1ms(&t.idle_timeout, &tp.field("idleTimeout"), out);
        if let Some(ka) = &t.tcp_keepalive {
            duration_min_1ms(&ka.time, &tp.field("tcpKeepalive").field("time"), out);
            duration_min_1ms(
                &ka.interval,
                &tp.field("tcpKeepalive").field("interval"),
                out,
            );
        }
    }
}

fn load_balancer(
    lb: &LoadBalancerSettings,
    outlier: Option<&OutlierDetection>,
    p: &FieldPath,
    out: &mut Issues,
) {
    at_most_one(
        &[
            ("simple", lb.simple.is_some()),
            ("consistentHash", lb.consistent_hash.is_some()),
            ("backendUtilization", lb.backend_utilization.is_some()),
        ],
        p,
        out,
    );
    if let Some(ch) = &lb.consistent_hash {
        let cp = p.field("consistentHash");
        if ch.http_cookie.as_ref().is_some_and(|c| c.name.is_empty()) {
            out.required(
                cp.field("httpCookie").field("name"),
                "name required for HttpCookie",
            );
        }
        let keys = [
            ("httpHeaderName", ch.http_header_name.is_some()),
            ("httpCookie", ch.http_cookie.is_some()),
            ("useSourceIp", ch.use_source_ip.is_some()),
            (
                "httpQueryParameterName",
                ch.http_query_parameter_name.is_some(),
            ),
        ];
        at_most_one(&keys, &cp, out);
        at_most_one(
            &[
                ("ringHash", ch.ring_hash.is_some()),
                ("maglev", ch.maglev.is_some()),
            ],
            &cp,
            out,
        );
        if ch.minimum_ring_size.is_some_and(|v| v != 0) {
            deprecated(
                cp.field("minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
                out,
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                out.invalid(
                    cp.field("minimumRingSize"),
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                );
            }
        }
        if let Some(m) = &ch.maglev {
            let mp = cp.field("maglev").field("tableSize");
            if m.table_size == 0 {
                out.invalid(mp.clone(), "tableSize must be set for maglev");
            } else if m.table_size >= 5_000_011 {
                out.invalid(mp.clone(), "tableSize must be less than 5000011 for maglev");
            } else if !is_prime(m.table_size) {
                out.invalid(mp, "tableSize must be a prime number for maglev");
            }
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        locality_lb_setting(l, outlier, &p.field("localityLbSetting"), out);
    }
    if lb.warmup_duration_secs.is_some() {
        duration_min_1ms(
            &lb.warmup_duration_secs,
            &p.field("warmupDurationSecs"),
            out,
        );
        deprecated(
            p.field("warmupDurationSecs"),
            "warmupDurationSecs is deprecated; use warmup.duration",
            out,
        );
    }
    if let Some(w) = &lb.warmup {
        let wp = p.field("warmup");
        duration_min_1ms(&Some(w.duration.clone()), &wp.field("duration"), out);
        if let Some(m) = w.minimum_percent
            && !(0.0..=100.0).contains(&m)
        {
            out.invalid(
                wp.field("minimumPercent"),
                format!("{m}: must be between 0 and 100"),
            );
        }
        if let Some(a) = w.aggression
            && a < 0.0
        {
            out.invalid(
                wp.field("aggression"),
                format!("{a}: must be greater than or equal to 0"),
            );
        }
    }
    if let Some(z) = &lb.zone_aware_lb_setting
        && z.min_cluster_size == Some(0)
    {
        out.invalid(
            p.field("zoneAwareLbSetting").field("minClusterSize"),
            "0: must be greater than or equal to 1",
        );
    }
}

fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut f = 3;
    while f * f <= x {
        if x.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

/// Locality load balancing, as Istio validates it (also used for the mesh-wide default).
pub(super) fn locality_lb_setting(
    l: &LocalityLbSetting,
    outlier: Option<&OutlierDetection>,
    p: &FieldPath,
    out: &mut Issues,
) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        out.invalid(
            p.clone(),
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    if !l.failover.is_empty() {
        for (i, label) in l.failover_priority.iter().enumerate() {
            if matches!(
                label.as_str(),
                "topology.kubernetes.io/region"
                    | "topology.kubernetes.io/zone"
                    | "topology.istio.io/subzone"
            ) {
                out.invalid(p.field("failoverPriority").index(i), format!("can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"));
                return;
            }
        }
    }
    let mut sources = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let dp = p.field("distribute").index(i);
        sources.push(d.from.clone());
        let mut total: u64 = 0;
        for (loc, w) in &d.to {
            if *w == 0 || *w > 100 {
                out.invalid(
                    dp.field("to").key(loc),
                    "locality weight must be in range [1, 100]",
                );
                return;
            }
            total += u64::from(*w);
        }
        if total != 100 {
            out.push(Issue::error(IssueKind::Invalid, dp.field("to"), format!("total locality weight {total} != 100: the weights of one 'from' must add up to 100")).with_code(codes::LOCALITY_WEIGHTS));
            return;
        }
        if let Err(e) = localities(d.to.keys().map(String::as_str)) {
            out.invalid(dp.field("to"), e);
        }
    }
    if let Err(e) = localities(sources.iter().map(String::as_str)) {
        out.invalid(p.field("distribute"), e);
    }
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && outlier.is_none() {
        out.push(
            Issue::warning(
                IssueKind::Notice,
                p.clone(),
                "outlier detection policy must be provided for failover: without it Istio silently ignores failover, and traffic never leaves a failing locality; add outlierDetection to the same trafficPolicy",
            )
            .with_code(codes::FAILOVER_WITHOUT_OUTLIER_DETECTION),
        );
    }
    for (i, f) in l.failover.iter().enumerate() {
        let fp = p.field("failover").index(i);
        if f.from == f.to {
            out.invalid(
                fp.clone(),
                "locality lb failover settings must specify different regions",
            );
        }
        if f.from.contains('/') || f.to.contains('/') {
            out.invalid(fp.clone(), "locality lb failover only specify region");
        }
        if f.from.contains('*') || f.to.contains('*') {
            out.invalid(
                fp,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Localities `region[/zone[/subzone]]` with at most one trailing `*`, not overlapping.
fn localities<'a>(list: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen: Vec<Vec<&str>> = Vec::new();
    for loc in list {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            return Err(format!(
                "locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        let parts: Vec<&str> = loc.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "locality {loc} must not contain empty region/zone/subzone info"
            ));
        }
        for prev in &seen {
            if covers_locality(prev, &parts) || covers_locality(&parts, prev) {
                return Err(format!(
                    "locality {loc} overlap with previous specified ones"
                ));
            }
        }
        seen.push(parts);
    }
    Ok(())
}

/// Whether locality `a` includes `b`: `a` is a prefix of `b`, or matches up to a `*`.
fn covers_locality(a: &[&str], b: &[&str]) -> bool {
    for (i, part) in a.iter().enumerate() {
        if *part == "*" {
            return true;
        }
        if b.get(i) != Some(part) {
            return false;
        }
    }
    true
}

pub(super) fn client_tls(t: &ClientTlsSettings, p: &FieldPath, out: &mut Issues) {
    let mode = t.mode;
    let has = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    if t.insecure_skip_verify == Some(true) {
        if mode == Some(ClientTlsMode::Simple)
            && (has(&t.ca_certificates) || has(&t.credential_name) || t.subject_alt_names.is_some())
        {
            out.invalid(p.clone(), "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true");
        }
        if mode == Some(ClientTlsMode::Mutual)
            && (has(&t.ca_certificates) || t.subject_alt_names.is_some())
        {
            out.invalid(p.clone(), "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true");
        }
    }
    if matches!(mode, Some(ClientTlsMode::Simple | ClientTlsMode::Mutual))
        && has(&t.credential_name)
    {
        if has(&t.client_certificate)
            || has(&t.ca_certificates)
            || has(&t.private_key)
            || has(&t.ca_crl)
        {
            out.invalid(p.clone(), "cannot specify client certificates or CA certificate or CA CRL If credentialName is set");
        }
        return;
    }
    if mode == Some(ClientTlsMode::Mutual) {
        if !has(&t.client_certificate) {
            out.required(
                p.field("clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if !has(&t.private_key) {
            out.required(p.field("privateKey"), "private key required for mutual tls");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_localities_are_found() {
        assert!(localities(["us-east/*", "us-west/*"].into_iter()).is_ok());
        assert!(localities(["us-east/*", "us-east/zone1"].into_iter()).is_err());
        assert!(localities(["us-east", "us-east/zone1"].into_iter()).is_err());
        assert!(localities(["us-east/zone1/a", "us-east/zone1/b"].into_iter()).is_ok());
        assert!(localities(["*", "us-east"].into_iter()).is_err());
        assert!(localities(["us-*/a"].into_iter()).is_err());
    }

    #[test]
    fn hosts_match_through_wildcards() {
        assert!(host_matches("*.foo.com", "a.foo.com"));
        assert!(host_matches("*.com", "*.foo.com"));
        assert!(!host_matches("a.foo.com", "b.foo.com"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
        assert!(!host_subset_of("*.com", "*.foo.com"));
    }

    #[test]
    fn maglev_sizes_must_be_prime() {
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
    }
}
