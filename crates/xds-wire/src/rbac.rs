//! Authorization rules on the wire: Strait's `Rbac` ↔ Envoy's `envoy.config.rbac.v3.RBAC`, inside
//! the HTTP filter `envoy.filters.http.rbac` and the network filter `envoy.filters.network.rbac`.
//! Rules go in `rules`, or in `shadow_rules` for dry-run ones.

use envoy_types::pb::envoy::config::core::v3 as ecore;
use envoy_types::pb::envoy::config::listener::v3 as elistener;
use envoy_types::pb::envoy::config::rbac::v3 as erbac;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as ehttprbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as ehcm;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3 as enetrbac;
use envoy_types::pb::envoy::r#type::matcher::v3 as ematcher;
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use strait_xds::StringMatch;
use strait_xds::rbac::{Permission, Principal, Rbac, RbacAction, RbacPolicy};

use crate::from_envoy::{R, header_match, reject, string_match, unpack};
use crate::to_envoy::{header_matcher, string_matcher, to_any};

pub const HTTP_RBAC: &str = "envoy.filters.http.rbac";
pub const NETWORK_RBAC: &str = "envoy.filters.network.rbac";

// ---------------------------------------------------------------------------------------------
// Strait → Envoy

pub fn http_filter(r: &Rbac) -> ehcm::HttpFilter {
    let (rules, shadow_rules) = split(r);
    let config = ehttprbac::Rbac {
        rules,
        shadow_rules,
        ..Default::default()
    };
    ehcm::HttpFilter {
        name: HTTP_RBAC.into(),
        config_type: Some(ehcm::http_filter::ConfigType::TypedConfig(to_any(&config))),
        ..Default::default()
    }
}

pub fn network_filter(r: &Rbac, stat_prefix: &str) -> elistener::Filter {
    let (rules, shadow_rules) = split(r);
    let config = enetrbac::Rbac {
        rules,
        shadow_rules,
        stat_prefix: stat_prefix.to_string(),
        ..Default::default()
    };
    elistener::Filter {
        name: NETWORK_RBAC.into(),
        config_type: Some(elistener::filter::ConfigType::TypedConfig(to_any(&config))),
    }
}

fn split(r: &Rbac) -> (Option<erbac::Rbac>, Option<erbac::Rbac>) {
    let rules = Some(rules(r));
    if r.shadow {
        (None, rules)
    } else {
        (rules, None)
    }
}

fn rules(r: &Rbac) -> erbac::Rbac {
    erbac::Rbac {
        action: match r.action {
            RbacAction::Allow => erbac::rbac::Action::Allow,
            RbacAction::Deny => erbac::rbac::Action::Deny,
            RbacAction::Log => erbac::rbac::Action::Log,
        } as i32,
        policies: r
            .policies
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    erbac::Policy {
                        permissions: p.permissions.iter().map(permission).collect(),
                        principals: p.principals.iter().map(principal).collect(),
                        ..Default::default()
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}

fn cidr(text: &str) -> ecore::CidrRange {
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, len.parse().ok()),
        None => (text, None),
    };
    ecore::CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(UInt32Value {
            value: len.unwrap_or(if ip.contains(':') { 128 } else { 32 }),
        }),
    }
}

fn path_matcher(m: &StringMatch) -> ematcher::PathMatcher {
    ematcher::PathMatcher {
        rule: Some(ematcher::path_matcher::Rule::Path(string_matcher(m))),
    }
}

fn permission(p: &Permission) -> erbac::Permission {
    use erbac::permission::{Rule, Set};
    let rule = match p {
        Permission::Any => Rule::Any(true),
        Permission::And(v) => Rule::AndRules(Set {
            rules: v.iter().map(permission).collect(),
        }),
        Permission::Or(v) => Rule::OrRules(Set {
            rules: v.iter().map(permission).collect(),
        }),
        Permission::Not(inner) => Rule::NotRule(Box::new(permission(inner))),
        Permission::Header(h) => Rule::Header(header_matcher(h)),
        Permission::Host(m) => {
            let mut matcher = string_matcher(m);
            matcher.ignore_case = true;
            Rule::Header(
                envoy_types::pb::envoy::config::route::v3::HeaderMatcher {
                    name: ":authority".into(),
                    header_match_specifier: Some(
                        envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier::StringMatch(matcher),
                    ),
                    ..Default::default()
                },
            )
        }
        Permission::Path(m) => Rule::UrlPath(path_matcher(m)),
        Permission::DestinationIp(c) => Rule::DestinationIp(cidr(c)),
        Permission::DestinationPort(port) => Rule::DestinationPort(u32::from(*port)),
        Permission::ServerName(m) => Rule::RequestedServerName(string_matcher(m)),
    };
    erbac::Permission { rule: Some(rule) }
}

// `metadata` is deprecated in favour of `sourced_metadata`, but Istio still sends it.
#[allow(deprecated)]
fn principal(p: &Principal) -> erbac::Principal {
    use erbac::principal::{Authenticated, Identifier, Set};
    let id = match p {
        Principal::Any => Identifier::Any(true),
        Principal::And(v) => Identifier::AndIds(Set {
            ids: v.iter().map(principal).collect(),
        }),
        Principal::Or(v) => Identifier::OrIds(Set {
            ids: v.iter().map(principal).collect(),
        }),
        Principal::Not(inner) => Identifier::NotId(Box::new(principal(inner))),
        Principal::Authenticated(StringMatch::Present) => {
            Identifier::Authenticated(Authenticated {
                principal_name: None,
            })
        }
        Principal::Authenticated(m) => Identifier::Authenticated(Authenticated {
            principal_name: Some(string_matcher(m)),
        }),
        Principal::DirectRemoteIp(c) => Identifier::DirectRemoteIp(cidr(c)),
        Principal::RemoteIp(c) => Identifier::RemoteIp(cidr(c)),
        Principal::Header(h) => Identifier::Header(header_matcher(h)),
        Principal::RequestAuth { attribute, value } => {
            Identifier::Metadata(crate::jwt::metadata_matcher(attribute, value))
        }
    };
    erbac::Principal {
        identifier: Some(id),
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy → Strait

/// An `envoy.filters.http.rbac` filter's configuration.
pub fn from_http_filter(any: &Any, field: &str) -> R<Rbac> {
    let c: ehttprbac::Rbac = unpack(any, field)?;
    if c.matcher.is_some() || c.shadow_matcher.is_some() {
        return reject(format!(
            "{field}: RBAC matcher trees are not supported (use rules)"
        ));
    }
    from_rules(c.rules, c.shadow_rules, field)
}

/// An `envoy.filters.network.rbac` filter's configuration.
pub fn from_network_filter(any: &Any, field: &str) -> R<Rbac> {
    let c: enetrbac::Rbac = unpack(any, field)?;
    if c.matcher.is_some() || c.shadow_matcher.is_some() {
        return reject(format!(
            "{field}: RBAC matcher trees are not supported (use rules)"
        ));
    }
    if c.enforcement_type == enetrbac::rbac::EnforcementType::Continuous as i32 {
        return reject(format!(
            "{field}.enforcement_type: CONTINUOUS is not supported (ONE_TIME_ON_FIRST_BYTE)"
        ));
    }
    from_rules(c.rules, c.shadow_rules, field)
}

fn from_rules(
    rules: Option<erbac::Rbac>,
    shadow_rules: Option<erbac::Rbac>,
    field: &str,
) -> R<Rbac> {
    let (rules, shadow, field) = match (rules, shadow_rules) {
        (Some(r), None) => (r, false, format!("{field}.rules")),
        (None, Some(r)) => (r, true, format!("{field}.shadow_rules")),
        (None, None) => {
            // Envoy: no rules at all lets everything through.
            return Ok(Rbac {
                action: RbacAction::Deny,
                policies: Vec::new(),
                shadow: false,
            });
        }
        (Some(_), Some(_)) => {
            return reject(format!(
                "{field}: rules and shadow_rules together are not supported (send two filters)"
            ));
        }
    };
    let action = match erbac::rbac::Action::try_from(rules.action) {
        Ok(erbac::rbac::Action::Allow) => RbacAction::Allow,
        Ok(erbac::rbac::Action::Deny) => RbacAction::Deny,
        Ok(erbac::rbac::Action::Log) => RbacAction::Log,
        Err(_) => return reject(format!("{field}.action: unknown value {}", rules.action)),
    };
    if rules.audit_logging_options.is_some() {
        return reject(format!(
            "{field}.audit_logging_options: audit loggers are not supported"
        ));
    }
    let mut policies = rules
        .policies
        .into_iter()
        .map(|(name, p)| {
            let pf = format!("{field}.policies[{name}]");
            if p.condition.is_some() || p.checked_condition.is_some() {
                return reject(format!("{pf}.condition: CEL conditions are not supported"));
            }
            Ok(RbacPolicy {
                permissions: p
                    .permissions
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| from_permission(x, &format!("{pf}.permissions[{i}]")))
                    .collect::<R<_>>()?,
                principals: p
                    .principals
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| from_principal(x, &format!("{pf}.principals[{i}]")))
                    .collect::<R<_>>()?,
                name,
            })
        })
        .collect::<R<Vec<_>>>()?;
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Rbac {
        action,
        policies,
        shadow,
    })
}

fn from_cidr(c: &ecore::CidrRange, field: &str) -> R<String> {
    let ip: std::net::IpAddr = c
        .address_prefix
        .parse()
        .map_err(|_| format!("{field}: {:?} is not an IP address", c.address_prefix))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = c.prefix_len.as_ref().map_or(max, |l| l.value);
    if len > max {
        return reject(format!("{field}: prefix length {len} is over {max}"));
    }
    Ok(format!("{ip}/{len}"))
}

fn from_permission(p: erbac::Permission, field: &str) -> R<Permission> {
    use erbac::permission::Rule;
    let many = |rules: Vec<erbac::Permission>, kind: &str| -> R<Vec<Permission>> {
        rules
            .into_iter()
            .enumerate()
            .map(|(i, x)| from_permission(x, &format!("{field}.{kind}[{i}]")))
            .collect()
    };
    Ok(match p.rule {
        Some(Rule::Any(true)) => Permission::Any,
        Some(Rule::Any(false)) | None => {
            return reject(format!("{field}: empty permission"));
        }
        Some(Rule::AndRules(s)) => Permission::And(many(s.rules, "and_rules")?),
        Some(Rule::OrRules(s)) => Permission::Or(many(s.rules, "or_rules")?),
        Some(Rule::NotRule(inner)) => Permission::Not(Box::new(from_permission(
            *inner,
            &format!("{field}.not_rule"),
        )?)),
        Some(Rule::Header(h)) => {
            let host = matches!(h.name.as_str(), ":authority" | "host");
            match h.header_match_specifier {
                Some(
                    envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier::StringMatch(
                        mut m,
                    ),
                ) if host && m.ignore_case && !h.invert_match => {
                    m.ignore_case = false;
                    Permission::Host(lowercase(string_match(&m, &format!("{field}.header"))?))
                }
                _ => Permission::Header(header_match(h, &format!("{field}.header"))?),
            }
        }
        Some(Rule::UrlPath(pm)) => match pm.rule {
            Some(ematcher::path_matcher::Rule::Path(m)) => {
                Permission::Path(string_match(&m, &format!("{field}.url_path"))?)
            }
            None => return reject(format!("{field}.url_path: no matcher")),
        },
        Some(Rule::DestinationIp(c)) => {
            Permission::DestinationIp(from_cidr(&c, &format!("{field}.destination_ip"))?)
        }
        Some(Rule::DestinationPort(port)) => Permission::DestinationPort(
            u16::try_from(port)
                .map_err(|_| format!("{field}.destination_port: {port} is not a port"))?,
        ),
        Some(Rule::RequestedServerName(m)) => {
            Permission::ServerName(string_match(&m, &format!("{field}.requested_server_name"))?)
        }
        Some(other) => {
            return reject(format!(
                "{field}: permission {} is not supported (any, and/or/not, header, url_path, destination_ip, destination_port, requested_server_name)",
                permission_kind(&other)
            ));
        }
    })
}

#[allow(deprecated)] // names the deprecated `metadata` rule to refuse it
fn permission_kind(r: &erbac::permission::Rule) -> &'static str {
    use erbac::permission::Rule;
    match r {
        Rule::DestinationPortRange(_) => "destination_port_range",
        Rule::Metadata(_) => "metadata",
        Rule::Matcher(_) => "matcher",
        Rule::UriTemplate(_) => "uri_template",
        Rule::SourcedMetadata(_) => "sourced_metadata",
        _ => "of this kind",
    }
}

fn lowercase(m: StringMatch) -> StringMatch {
    match m {
        StringMatch::Exact(s) => StringMatch::Exact(s.to_ascii_lowercase()),
        StringMatch::Prefix(s) => StringMatch::Prefix(s.to_ascii_lowercase()),
        StringMatch::Suffix(s) => StringMatch::Suffix(s.to_ascii_lowercase()),
        StringMatch::Regex(r) => StringMatch::Regex(format!("(?i:{r})")),
        StringMatch::Present => StringMatch::Present,
    }
}

// `source_ip` is deprecated but still sent by older control planes.
#[allow(deprecated)]
fn from_principal(p: erbac::Principal, field: &str) -> R<Principal> {
    use erbac::principal::Identifier;
    let many = |ids: Vec<erbac::Principal>, kind: &str| -> R<Vec<Principal>> {
        ids.into_iter()
            .enumerate()
            .map(|(i, x)| from_principal(x, &format!("{field}.{kind}[{i}]")))
            .collect()
    };
    Ok(match p.identifier {
        Some(Identifier::Any(true)) => Principal::Any,
        Some(Identifier::Any(false)) | None => {
            return reject(format!("{field}: empty principal"));
        }
        Some(Identifier::AndIds(s)) => Principal::And(many(s.ids, "and_ids")?),
        Some(Identifier::OrIds(s)) => Principal::Or(many(s.ids, "or_ids")?),
        Some(Identifier::NotId(inner)) => Principal::Not(Box::new(from_principal(
            *inner,
            &format!("{field}.not_id"),
        )?)),
        Some(Identifier::Authenticated(a)) => Principal::Authenticated(match a.principal_name {
            None => StringMatch::Present,
            Some(m) => string_match(&m, &format!("{field}.authenticated.principal_name"))?,
        }),
        Some(Identifier::DirectRemoteIp(c)) => {
            Principal::DirectRemoteIp(from_cidr(&c, &format!("{field}.direct_remote_ip"))?)
        }
        // Without a PROXY-protocol listener, the source address is the peer's.
        Some(Identifier::SourceIp(c)) => {
            Principal::DirectRemoteIp(from_cidr(&c, &format!("{field}.source_ip"))?)
        }
        Some(Identifier::RemoteIp(c)) => {
            Principal::RemoteIp(from_cidr(&c, &format!("{field}.remote_ip"))?)
        }
        Some(Identifier::Header(h)) => {
            Principal::Header(header_match(h, &format!("{field}.header"))?)
        }
        Some(Identifier::Metadata(m)) => {
            let (attribute, value) = crate::jwt::from_metadata_matcher(&m, field)?;
            Principal::RequestAuth { attribute, value }
        }
        Some(_) => {
            return reject(format!(
                "{field}: principal kind is not supported (any, and/or/not, authenticated, direct_remote_ip, source_ip, remote_ip, header, metadata of istio_authn)"
            ));
        }
    })
}
