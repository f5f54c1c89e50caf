//! PeerAuthentication, RequestAuthentication and AuthorizationPolicy rules.

use super::rules;
use super::{SelectorWording, selector_labels};
use crate::issue::{IssueKind, Issues};
use crate::istio::security::*;
use crate::path::FieldPath;
use crate::resource::Meta;

pub(super) fn peer_authentication(pa: &PeerAuthentication, spec: &FieldPath, out: &mut Issues) {
    let empty_selector = pa
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty());
    if let Some(sel) = &pa.selector {
        selector_labels(
            &sel.match_labels,
            &spec.field("selector").field("matchLabels"),
            SelectorWording::MatchLabels,
            out,
        );
    }
    let Some(ports) = &pa.port_level_mtls else {
        return;
    };
    let pp = spec.field("portLevelMtls");
    if ports.is_empty() {
        out.invalid(pp.clone(), "spec.portLevelMtls in body should have at least 1 properties (port level mTLS, if defined, must have at least one element)");
    }
    if empty_selector {
        out.invalid(pp.clone(), "portLevelMtls requires selector (mesh/namespace peer authentication cannot have port level mTLS)");
    }
    for key in ports.keys() {
        match key.parse::<i64>() {
            Ok(port) => {
                if let Err(e) = rules::validate_port(port) {
                    out.invalid(pp.key(key), e);
                }
            }
            Err(_) => out.invalid(
                pp.key(key),
                format!("type conversion error from string \"{key}\" to port number: portLevelMtls keys are port numbers"),
            ),
        }
    }
}

/// What a policy applies to: a workload selector, or one or several target references — at
/// most one of them.
fn policy_target(
    selector: Option<&crate::istio::common::WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: Option<&Vec<PolicyTargetReference>>,
    spec: &FieldPath,
    out: &mut Issues,
) {
    let selectors = [
        selector.is_some(),
        target_ref.is_some(),
        target_refs.is_some_and(|v| !v.is_empty()),
    ];
    if selectors.iter().filter(|b| **b).count() > 1 {
        out.invalid(
            spec.clone(),
            "only one of targetRefs or selector can be set",
        );
    }
    if let Some(sel) = selector {
        selector_labels(
            &sel.match_labels,
            &spec.field("selector").field("matchLabels"),
            SelectorWording::MatchLabels,
            out,
        );
        if sel.match_labels.is_empty() {
            out.warn(
                IssueKind::Notice,
                spec.field("selector"),
                "workload selector specified without labels",
            );
        }
    }
    if let Some(t) = target_ref {
        self::target_ref(t, &spec.field("targetRef"), out);
    }
    if let Some(ts) = target_refs {
        if ts.len() > 16 {
            out.invalid(spec.field("targetRefs"), "must have at most 16 items");
        }
        for (i, t) in ts.iter().enumerate() {
            self::target_ref(t, &spec.field("targetRefs").index(i), out);
        }
    }
}

pub(super) fn request_authentication(
    ra: &RequestAuthentication,
    spec: &FieldPath,
    out: &mut Issues,
) {
    policy_target(
        ra.selector.as_ref(),
        ra.target_ref.as_ref(),
        ra.target_refs.as_ref(),
        spec,
        out,
    );
    let rules = spec.field("jwtRules");
    if ra.jwt_rules.len() > 4096 {
        out.invalid(rules.clone(), "must have at most 4096 items");
    }
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        let p = rules.index(i);
        match rule {
            Some(rule) => jwt_rule(rule, &p, out),
            None => out.invalid(p.clone(), format!("{p} in body must be of type object")),
        }
    }
}

/// A list of strings none of which may be empty (the schema's `minLength: 1` on items).
fn non_empty_items(items: Option<&Vec<String>>, path: &FieldPath, out: &mut Issues) {
    for (i, item) in items.into_iter().flatten().enumerate() {
        if item.is_empty() {
            let p = path.index(i);
            out.invalid(
                p.clone(),
                format!("{p} in body should be at least 1 chars long"),
            );
        }
    }
}

fn jwt_rule(rule: &JwtRule, p: &FieldPath, out: &mut Issues) {
    match rule.issuer.as_deref() {
        None => out.required(p.field("issuer"), "issuer must be set"),
        Some("") => {
            let ip = p.field("issuer");
            out.invalid(
                ip.clone(),
                format!("{ip} in body should be at least 1 chars long"),
            );
        }
        Some(_) => {}
    }
    non_empty_items(rule.audiences.as_ref(), &p.field("audiences"), out);
    let sources = [
        rule.jwks_uri.is_some(),
        rule.jwks_uri_snake.is_some(),
        rule.jwks.is_some(),
    ];
    if sources.iter().filter(|b| **b).count() > 1 {
        out.invalid(p.clone(), "only one of jwks or jwksUri can be set");
    }
    for (field, uri) in [
        ("jwksUri", rule.jwks_uri.as_deref()),
        ("jwks_uri", rule.jwks_uri_snake.as_deref()),
    ] {
        if let Some(uri) = uri
            && let Err(e) = jwks_uri(uri)
        {
            out.invalid(p.field(field), e);
        }
    }
    if let Some(jwks) = rule.jwks.as_deref()
        && let Err(e) = strait_jwt::parse(jwks)
    {
        out.invalid(p.field("jwks"), format!("jwks parse error: {e}"));
    }
    for (i, h) in rule.from_headers.iter().flatten().enumerate() {
        if h.name.is_empty() {
            let np = p.field("fromHeaders").index(i).field("name");
            out.invalid(
                np.clone(),
                format!("{np} in body should be at least 1 chars long"),
            );
        }
    }
    non_empty_items(rule.from_params.as_ref(), &p.field("fromParams"), out);
    non_empty_items(rule.from_cookies.as_ref(), &p.field("fromCookies"), out);
    for (i, c) in rule.output_claim_to_headers.iter().flatten().enumerate() {
        let cp = p.field("outputClaimToHeaders").index(i);
        let Some(c) = c else {
            out.invalid(cp.clone(), format!("{cp} in body must be of type object"));
            continue;
        };
        for (field, value) in [("claim", &c.claim), ("header", &c.header)] {
            if value.is_empty() {
                let fp = cp.field(field);
                out.invalid(
                    fp.clone(),
                    format!("{fp} in body should be at least 1 chars long"),
                );
            }
        }
        if !c.header.is_empty()
            && !c
                .header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            let hp = cp.field("header");
            out.invalid(
                hp.clone(),
                format!("{hp} in body should match '^[-_A-Za-z0-9]+$'"),
            );
        }
    }
    super::duration_min_1ms(&rule.timeout, &p.field("timeout"), out);
    let claims = rule.space_delimited_claims.as_ref();
    if claims.is_some_and(|c| c.len() > 64) {
        out.invalid(
            p.field("spaceDelimitedClaims"),
            "must have at most 64 items",
        );
    }
    non_empty_items(claims, &p.field("spaceDelimitedClaims"), out);
}

/// A key set's address: an `http://` or `https://` URL with a host.
fn jwks_uri(uri: &str) -> Result<(), String> {
    if uri.len() > 2048 {
        return Err("may not be longer than 2048 characters".into());
    }
    let scheme_ok = ["http://", "https://"]
        .iter()
        .any(|s| uri.len() > s.len() && uri[..s.len()].eq_ignore_ascii_case(s));
    if !scheme_ok {
        return Err(format!("{uri:?}: url must have scheme http:// or https://"));
    }
    let rest = uri.split_once("://").map_or("", |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{uri:?}: the URL has no host"));
    }
    Ok(())
}

pub(super) fn authorization_policy(
    ap: &AuthorizationPolicy,
    meta: &Meta,
    spec: &FieldPath,
    out: &mut Issues,
) {
    policy_target(
        ap.selector.as_ref(),
        ap.target_ref.as_ref(),
        ap.target_refs.as_ref(),
        spec,
        out,
    );
    let action = ap.action();
    if let Some(dry) = meta.annotations.get("istio.io/dry-run") {
        let path = FieldPath::root()
            .field("metadata")
            .field("annotations")
            .key("istio.io/dry-run");
        if !matches!(action, AuthzAction::Allow | AuthzAction::Deny) {
            out.invalid(
                path,
                "the annotation istio.io/dry-run currently only supports action ALLOW/DENY",
            );
        } else if !matches!(
            dry.as_str(),
            "true" | "false" | "1" | "0" | "t" | "f" | "TRUE" | "FALSE" | "True" | "False"
        ) {
            out.invalid(
                path,
                format!("invalid value ({dry}): must be true or false"),
            );
        }
    }
    if action == AuthzAction::Custom {
        if ap.rules.is_none() {
            out.invalid(spec.field("rules"), "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
        } else if ap
            .provider
            .as_ref()
            .and_then(|p| p.name.as_deref())
            .unwrap_or("")
            .is_empty()
        {
            out.required(
                spec.field("provider").field("name"),
                "`provider.name` must not be empty",
            );
        }
    }
    if ap.provider.is_some() && action != AuthzAction::Custom {
        out.invalid(
            spec.field("provider"),
            format!("`provider` must not be with non CUSTOM action, found {action:?}"),
        );
    }
    if action == AuthzAction::Deny && ap.rules.is_none() {
        out.invalid(spec.field("rules"), "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
    }
    let rules_list = ap.rules.as_deref().unwrap_or_default();
    if rules_list.len() > 512 {
        out.invalid(spec.field("rules"), "must have at most 512 items");
    }
    for (i, rule) in rules_list.iter().enumerate() {
        let rp = spec.field("rules").index(i);
        let (mut from_exists, mut to_exists, mut tcp_from, mut tcp_to) =
            (false, false, false, false);
        if let Some(from) = &rule.from {
            if from.is_empty() {
                out.invalid(
                    rp.field("from"),
                    format!("`from` must not be empty, found at rule {i}"),
                );
            }
            for (j, f) in from.iter().enumerate() {
                let fp = rp.field("from").index(j);
                let Some(src) = &f.source else {
                    out.required(
                        fp.field("source"),
                        format!("`from.source` must not be nil, found at rule {i}"),
                    );
                    continue;
                };
                from_exists = true;
                tcp_from |= source(src, action, i, &fp.field("source"), out);
            }
        }
        if let Some(to) = &rule.to {
            if to.is_empty() {
                out.invalid(
                    rp.field("to"),
                    format!("`to` must not be empty, found at rule {i}"),
                );
            }
            for (j, t) in to.iter().enumerate() {
                let tp = rp.field("to").index(j);
                let Some(op) = &t.operation else {
                    out.required(
                        tp.field("operation"),
                        format!("`to.operation` must not be nil, found at rule {i}"),
                    );
                    continue;
                };
                to_exists = true;
                tcp_to |= operation(op, i, &tp.field("operation"), out);
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            condition(c, action, &rp.field("when").index(j), out);
        }
        if ((from_exists && !to_exists && !tcp_from) || (to_exists && !tcp_to))
            && action == AuthzAction::Deny
        {
            out.warn(IssueKind::Notice, rp, "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port");
        }
    }
}

fn target_ref(t: &PolicyTargetReference, p: &FieldPath, out: &mut Issues) {
    if t.name.is_empty() {
        out.required(p.field("name"), "targetRef name must be set");
    }
    let group = t.group.as_deref().unwrap_or("");
    if !group.is_empty() && !rules::is_dns1123_subdomain(group) {
        let gp = p.field("group");
        out.invalid(
            gp.clone(),
            format!("{gp} in body should match '^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'"),
        );
        return;
    }
    let kind_ok = t.kind.len() <= 63
        && t.kind.starts_with(|c: char| c.is_ascii_alphabetic())
        && !t.kind.ends_with('-')
        && t.kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !kind_ok {
        let kp = p.field("kind");
        out.invalid(
            kp.clone(),
            format!("{kp} in body should match '^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$'"),
        );
        return;
    }
    if t.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
        out.invalid(
            p.field("namespace"),
            "cross namespace referencing is not currently supported",
        );
    }
    let group = t.group.as_deref().unwrap_or("");
    let allowed = matches!(
        (group, t.kind.as_str()),
        ("" | "core", "Service")
            | ("networking.istio.io", "ServiceEntry")
            | ("gateway.networking.k8s.io", "Gateway")
    );
    if !allowed {
        out.invalid(p.field("kind"), format!("targetRef must be to one of Service, ServiceEntry or gateway.networking.k8s.io Gateway but was {group}/{}", t.kind));
    }
}

/// Checks a `source`; returns whether it uses attributes that apply to TCP.
fn source(s: &Source, action: AuthzAction, rule: usize, p: &FieldPath, out: &mut Issues) -> bool {
    let lists: [(&str, &Option<Vec<String>>); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ];
    if lists
        .iter()
        .all(|(_, l)| l.as_ref().is_none_or(Vec::is_empty))
    {
        out.invalid(
            p.clone(),
            format!("`from.source` must not be empty, found at rule {rule}"),
        );
    }
    if (s.service_accounts.is_some() || s.not_service_accounts.is_some())
        && (s.principals.is_some()
            || s.not_principals.is_some()
            || s.namespaces.is_some()
            || s.not_namespaces.is_some())
    {
        out.invalid(
            p.clone(),
            "Cannot set serviceAccounts with namespaces or principals",
        );
    }
    for (field, list) in lists {
        let Some(list) = list else { continue };
        for (i, v) in list.iter().enumerate() {
            if v.is_empty() {
                out.invalid(
                    p.field(field).index(i),
                    format!("empty value not allowed, found in {field}"),
                );
            }
        }
        if field.ends_with("IpBlocks") || field.ends_with("pBlocks") {
            for (i, v) in list.iter().enumerate() {
                if !v.is_empty()
                    && let Err(e) = rules::validate_ip_or_cidr(v)
                {
                    out.invalid(p.field(field).index(i), e);
                }
            }
        }
        if field.ends_with("erviceAccounts") {
            if list.len() > 16 {
                out.invalid(p.field(field), "must have at most 16 items");
            }
            for (i, v) in list.iter().enumerate() {
                if v.len() > 320 {
                    out.invalid(p.field(field).index(i), "must be at most 320 characters");
                }
            }
        }
    }
    if action == AuthzAction::Custom {
        for (field, list) in [
            ("namespaces", &s.namespaces),
            ("notNamespaces", &s.not_namespaces),
            ("principals", &s.principals),
            ("notPrincipals", &s.not_principals),
            ("requestPrincipals", &s.request_principals),
            ("notRequestPrincipals", &s.not_request_principals),
        ] {
            if list.as_ref().is_some_and(|l| !l.is_empty()) {
                out.invalid(
                    p.field(field),
                    format!("From.{field} is currently not supported with CUSTOM action"),
                );
            }
        }
    }
    s.principals.is_some()
        || s.not_principals.is_some()
        || s.ip_blocks.is_some()
        || s.not_ip_blocks.is_some()
        || s.namespaces.is_some()
        || s.not_namespaces.is_some()
        || s.remote_ip_blocks.is_some()
        || s.not_remote_ip_blocks.is_some()
        || s.service_accounts.is_some()
        || s.not_service_accounts.is_some()
}

/// Checks an `operation`; returns whether it uses ports (which apply to TCP).
fn operation(o: &Operation, rule: usize, p: &FieldPath, out: &mut Issues) -> bool {
    let lists: [(&str, &Option<Vec<String>>); 8] = [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ];
    if lists
        .iter()
        .all(|(_, l)| l.as_ref().is_none_or(Vec::is_empty))
    {
        out.invalid(
            p.clone(),
            format!("`to.operation` must not be empty, found at rule {rule}"),
        );
    }
    for (field, list) in lists {
        let Some(list) = list else { continue };
        for (i, v) in list.iter().enumerate() {
            let vp = p.field(field).index(i);
            if v.is_empty() {
                out.invalid(vp, format!("empty value not allowed, found in {field}"));
            } else if field.ends_with("orts") {
                match v.parse::<i64>() {
                    Ok(n) => {
                        if let Err(e) = rules::validate_port(n) {
                            out.invalid(vp, e);
                        }
                    }
                    Err(_) => out.invalid(vp, format!("invalid port: {v}")),
                }
            } else if field.ends_with("aths")
                && let Err(e) = path_template(v)
            {
                out.invalid(vp, e);
            }
        }
    }
    o.ports.is_some() || o.not_ports.is_some()
}

/// Path templates: segments `{*}` (one segment) and `{**}` (any number, once).
fn path_template(path: &str) -> Result<(), String> {
    if !path.contains('{') && !path.contains('}') {
        return Ok(());
    }
    let mut double = 0;
    for segment in path.split('/') {
        if segment.contains('{') || segment.contains('}') {
            match segment {
                "{*}" => {}
                "{**}" => double += 1,
                _ => {
                    return Err(format!(
                        "invalid or unsupported path {path}: template operators must be a whole segment, {{*}} or {{**}}"
                    ));
                }
            }
        }
    }
    if double > 1 {
        return Err(format!(
            "invalid or unsupported path {path}: {{**}} may appear only once"
        ));
    }
    if path.contains('*') && path.replace("{**}", "").replace("{*}", "").contains('*') {
        return Err(format!(
            "invalid or unsupported path {path}: do not mix path templates and '*' wildcards"
        ));
    }
    Ok(())
}

fn condition(c: &Condition, action: AuthzAction, p: &FieldPath, out: &mut Issues) {
    if c.key.is_empty() {
        out.required(p.field("key"), "`key` must not be empty");
        return;
    }
    let values = c.values.as_deref().unwrap_or_default();
    let not_values = c.not_values.as_deref().unwrap_or_default();
    if values.is_empty() && not_values.is_empty() {
        out.invalid(
            p.clone(),
            format!(
                "at least one of `values` or `notValues` must be set for key {}",
                c.key
            ),
        );
        return;
    }
    for (field, list) in [("values", values), ("notValues", not_values)] {
        if let Err(e) = attribute(&c.key, list) {
            let what = if field == "values" {
                "value"
            } else {
                "notValue"
            };
            out.invalid(
                p.field(field),
                format!("invalid `{what}` for `key` {}: {e}", c.key),
            );
        }
    }
    if action == AuthzAction::Custom
        && (c.key == "source.namespace"
            || c.key == "source.principal"
            || c.key.starts_with("request.auth."))
    {
        out.invalid(
            p.field("key"),
            format!("{} is currently not supported with CUSTOM action", c.key),
        );
    }
}

/// The attributes a `when` condition may test, and their value formats.
fn attribute(key: &str, values: &[String]) -> Result<(), String> {
    if values.iter().any(String::is_empty) {
        return Err(format!("empty value not allowed, found in {key}"));
    }
    let bracketed = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
    };
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => values
            .iter()
            .try_for_each(|v| rules::validate_ip_or_cidr(v)),
        "destination.port" => values.iter().try_for_each(|v| {
            v.parse::<i64>()
                .map_err(|_| format!("invalid port: {v}"))
                .and_then(rules::validate_port)
        }),
        "source.namespace"
        | "source.principal"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(()),
        _ if bracketed("request.headers") || bracketed("request.auth.claims") => Ok(()),
        _ if key.starts_with("experimental.envoy.filters.") => Ok(()),
        _ => Err(format!("unknown attribute ({key})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates() {
        assert!(path_template("/path/template/{*}").is_ok());
        assert!(path_template("/{**}/path/template").is_ok());
        assert!(path_template("/a/{**}/b/{**}").is_err());
        assert!(path_template("/a/x{*}").is_err());
        assert!(path_template("/prefix/*").is_ok());
    }

    #[test]
    fn condition_keys() {
        assert!(attribute("request.headers[x-a]", &["v".into()]).is_ok());
        assert!(attribute("request.auth.claims[a][b]", &["v".into()]).is_ok());
        assert!(attribute("source.ip", &["10.0.0.0/8".into()]).is_ok());
        assert!(attribute("source.ip", &["ten".into()]).is_err());
        assert!(attribute("destination.port", &["99999".into()]).is_err());
        assert!(attribute("request.colour", &["red".into()]).is_err());
    }
}
