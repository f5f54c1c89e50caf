//! Request authentication on the wire: Strait's `JwtAuthn` ↔ Envoy's HTTP filter
//! `envoy.filters.http.jwt_authn` in the shape Istio sends — one provider per accepted issuer
//! with its key set inline, and one rule for every path requiring any provider or no token at
//! all (`requires_any: [..., allow_missing]`). And the `request.auth.*` attributes authorization
//! asks of a verified token ↔ RBAC metadata matchers on Istio's `istio_authn` filter metadata.

use envoy_types::pb::envoy::config::core::v3 as ecore;
use envoy_types::pb::envoy::config::route::v3 as eroute;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as ejwt;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as ehcm;
use envoy_types::pb::envoy::r#type::matcher::v3 as ematcher;
use envoy_types::pb::google::protobuf::{Any, Empty};
use strait_xds::StringMatch;
use strait_xds::jwt::{AuthAttribute, ClaimHeader, JwtAuthn, JwtProvider, TokenHeader};

use crate::from_envoy::{R, reject, string_match, unpack};
use crate::to_envoy::{string_matcher, to_any};

pub const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
/// The filter metadata Istio's authentication fills from a verified token.
pub const AUTHN_METADATA: &str = "istio_authn";

// ---------------------------------------------------------------------------------------------
// Strait → Envoy

pub fn http_filter(j: &JwtAuthn) -> ehcm::HttpFilter {
    let providers = j
        .providers
        .iter()
        .map(|p| (p.name.clone(), provider(p)))
        .collect();
    use ejwt::jwt_requirement::RequiresType;
    let named = |p: &JwtProvider| requirement(RequiresType::ProviderName(p.name.clone()));
    let allow_missing = || requirement(RequiresType::AllowMissing(Empty::default()));
    let top = if j.providers.iter().any(|p| p.required) {
        RequiresType::RequiresAll(ejwt::JwtRequirementAndList {
            requirements: j
                .providers
                .iter()
                .map(|p| {
                    if p.required {
                        named(p)
                    } else {
                        requirement(RequiresType::RequiresAny(ejwt::JwtRequirementOrList {
                            requirements: vec![named(p), allow_missing()],
                        }))
                    }
                })
                .collect(),
        })
    } else {
        let mut requirements: Vec<ejwt::JwtRequirement> = j.providers.iter().map(named).collect();
        requirements.push(allow_missing());
        RequiresType::RequiresAny(ejwt::JwtRequirementOrList { requirements })
    };
    let config = ejwt::JwtAuthentication {
        providers,
        rules: vec![ejwt::RequirementRule {
            r#match: Some(eroute::RouteMatch {
                path_specifier: Some(eroute::route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(ejwt::requirement_rule::RequirementType::Requires(
                requirement(top),
            )),
        }],
        ..Default::default()
    };
    ehcm::HttpFilter {
        name: JWT_AUTHN.into(),
        config_type: Some(ehcm::http_filter::ConfigType::TypedConfig(to_any(&config))),
        ..Default::default()
    }
}

fn requirement(t: ejwt::jwt_requirement::RequiresType) -> ejwt::JwtRequirement {
    ejwt::JwtRequirement {
        requires_type: Some(t),
    }
}

fn provider(p: &JwtProvider) -> ejwt::JwtProvider {
    ejwt::JwtProvider {
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        forward: p.forward,
        from_headers: p
            .from_headers
            .iter()
            .map(|h| ejwt::JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: p.from_params.clone(),
        from_cookies: p.from_cookies.clone(),
        forward_payload_header: p.payload_header.clone().unwrap_or_default(),
        // Istio keys the verified payload by issuer.
        payload_in_metadata: p.issuer.clone(),
        claim_to_headers: p
            .claim_headers
            .iter()
            .map(|c| ejwt::JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..Default::default()
            })
            .collect(),
        normalize_payload_in_metadata: (!p.space_delimited_claims.is_empty()).then(|| {
            ejwt::jwt_provider::NormalizePayload {
                space_delimited_claims: p.space_delimited_claims.clone(),
            }
        }),
        jwks_source_specifier: Some(ejwt::jwt_provider::JwksSourceSpecifier::LocalJwks(
            ecore::DataSource {
                specifier: Some(ecore::data_source::Specifier::InlineString(p.jwks.clone())),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// The metadata path of an attribute (Istio's keys in `istio_authn`).
fn path(a: &AuthAttribute) -> Vec<String> {
    match a {
        AuthAttribute::Principal => vec!["request.auth.principal".into()],
        AuthAttribute::Audiences => vec!["request.auth.audiences".into()],
        AuthAttribute::Presenter => vec!["request.auth.presenter".into()],
        AuthAttribute::Claim(p) => std::iter::once("request.auth.claims".to_string())
            .chain(p.iter().cloned())
            .collect(),
    }
}

/// An RBAC metadata matcher for `attribute` matching `value`; list-valued attributes (audiences,
/// claims) match when one item does, as Istio writes them.
pub fn metadata_matcher(
    attribute: &AuthAttribute,
    value: &StringMatch,
) -> ematcher::MetadataMatcher {
    use ematcher::value_matcher::MatchPattern;
    let string = ematcher::ValueMatcher {
        match_pattern: Some(MatchPattern::StringMatch(string_matcher(value))),
    };
    let value = match attribute {
        AuthAttribute::Principal | AuthAttribute::Presenter => string,
        AuthAttribute::Audiences | AuthAttribute::Claim(_) => ematcher::ValueMatcher {
            match_pattern: Some(MatchPattern::ListMatch(Box::new(ematcher::ListMatcher {
                match_pattern: Some(ematcher::list_matcher::MatchPattern::OneOf(Box::new(
                    string,
                ))),
            }))),
        },
    };
    ematcher::MetadataMatcher {
        filter: AUTHN_METADATA.into(),
        path: path(attribute)
            .into_iter()
            .map(|k| ematcher::metadata_matcher::PathSegment {
                segment: Some(ematcher::metadata_matcher::path_segment::Segment::Key(k)),
            })
            .collect(),
        value: Some(value),
        invert: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy → Strait

pub fn from_http_filter(any: &Any, field: &str) -> R<JwtAuthn> {
    use ejwt::jwt_requirement::RequiresType;
    let mut config: ejwt::JwtAuthentication = unpack(any, field)?;
    let [rule] = config.rules.as_slice() else {
        return reject(format!(
            "{field}.rules: one rule for every path is supported (Istio's shape), not {}",
            config.rules.len()
        ));
    };
    let prefix = rule
        .r#match
        .as_ref()
        .and_then(|m| m.path_specifier.as_ref());
    if !matches!(prefix, Some(eroute::route_match::PathSpecifier::Prefix(p)) if p == "/") {
        return reject(format!(
            "{field}.rules[0].match: only prefix \"/\" is supported"
        ));
    }
    let shape = || {
        format!(
            "{field}.rules[0].requires: only Istio's shapes are supported: requires_any of providers and allow_missing, or requires_all of providers (required) and requires_any [provider, allow_missing] (optional)"
        )
    };
    let top = match &rule.requirement_type {
        Some(ejwt::requirement_rule::RequirementType::Requires(ejwt::JwtRequirement {
            requires_type: Some(t),
        })) => t,
        _ => return reject(shape()),
    };
    // (provider name, required)
    let mut names: Vec<(String, bool)> = Vec::new();
    match top {
        RequiresType::RequiresAny(any_of) => {
            let mut allow_missing = false;
            for r in &any_of.requirements {
                match &r.requires_type {
                    Some(RequiresType::ProviderName(n)) => names.push((n.clone(), false)),
                    Some(RequiresType::AllowMissing(_)) => allow_missing = true,
                    _ => return reject(shape()),
                }
            }
            if !allow_missing {
                return reject(format!(
                    "{field}.rules[0].requires.requires_any: allow_missing is required (a request without a token is authorization's decision unless a provider is required)"
                ));
            }
        }
        RequiresType::RequiresAll(all_of) => {
            for r in &all_of.requirements {
                match &r.requires_type {
                    Some(RequiresType::ProviderName(n)) => names.push((n.clone(), true)),
                    Some(RequiresType::RequiresAny(inner)) => match inner.requirements.as_slice() {
                        [
                            ejwt::JwtRequirement {
                                requires_type: Some(RequiresType::ProviderName(n)),
                            },
                            ejwt::JwtRequirement {
                                requires_type: Some(RequiresType::AllowMissing(_)),
                            },
                        ] => names.push((n.clone(), false)),
                        _ => return reject(shape()),
                    },
                    _ => return reject(shape()),
                }
            }
        }
        _ => return reject(shape()),
    }
    let mut providers = Vec::new();
    for (name, required) in names {
        let pf = format!("{field}.providers[{name}]");
        let Some(p) = config.providers.remove(&name) else {
            return reject(format!(
                "{pf}: the rule names a provider that is not defined"
            ));
        };
        let jwks = match p.jwks_source_specifier {
            Some(ejwt::jwt_provider::JwksSourceSpecifier::LocalJwks(ecore::DataSource {
                specifier: Some(ecore::data_source::Specifier::InlineString(s)),
                ..
            })) => s,
            _ => {
                return reject(format!(
                    "{pf}.jwks_source_specifier: only local_jwks with inline_string is supported (the control plane fetches key sets)"
                ));
            }
        };
        providers.push(JwtProvider {
            name,
            issuer: p.issuer,
            audiences: p.audiences,
            jwks,
            from_headers: p
                .from_headers
                .into_iter()
                .map(|h| TokenHeader {
                    name: h.name.to_ascii_lowercase(),
                    prefix: h.value_prefix,
                })
                .collect(),
            from_params: p.from_params,
            from_cookies: p.from_cookies,
            forward: p.forward,
            payload_header: Some(p.forward_payload_header).filter(|h| !h.is_empty()),
            claim_headers: p
                .claim_to_headers
                .into_iter()
                .map(|c| ClaimHeader {
                    header: c.header_name.to_ascii_lowercase(),
                    claim: c.claim_name,
                })
                .collect(),
            space_delimited_claims: p
                .normalize_payload_in_metadata
                .map(|n| n.space_delimited_claims)
                .unwrap_or_default(),
            required,
        });
    }
    Ok(JwtAuthn { providers })
}

/// The attribute and value of an `istio_authn` metadata matcher.
pub fn from_metadata_matcher(
    m: &ematcher::MetadataMatcher,
    field: &str,
) -> R<(AuthAttribute, StringMatch)> {
    use ematcher::value_matcher::MatchPattern;
    if m.filter != AUTHN_METADATA || m.invert {
        return reject(format!(
            "{field}.metadata: only {AUTHN_METADATA:?} (request authentication), not inverted, is supported"
        ));
    }
    let keys: Vec<&str> = m
        .path
        .iter()
        .filter_map(|s| {
            s.segment.as_ref().map(|seg| match seg {
                ematcher::metadata_matcher::path_segment::Segment::Key(k) => k.as_str(),
            })
        })
        .collect();
    let attribute = match keys.as_slice() {
        ["request.auth.principal"] => AuthAttribute::Principal,
        ["request.auth.audiences"] => AuthAttribute::Audiences,
        ["request.auth.presenter"] => AuthAttribute::Presenter,
        ["request.auth.claims", rest @ ..] if !rest.is_empty() => {
            AuthAttribute::Claim(rest.iter().map(|s| s.to_string()).collect())
        }
        _ => {
            return reject(format!(
                "{field}.metadata.path: {keys:?} is not a request.auth attribute"
            ));
        }
    };
    let mut value = m.value.as_ref();
    if let Some(ematcher::ValueMatcher {
        match_pattern: Some(MatchPattern::ListMatch(list)),
    }) = value
    {
        let Some(ematcher::list_matcher::MatchPattern::OneOf(one)) = &list.match_pattern else {
            return reject(format!("{field}.metadata.value.list_match: one_of missing"));
        };
        value = Some(one);
    }
    match value {
        Some(ematcher::ValueMatcher {
            match_pattern: Some(MatchPattern::StringMatch(s)),
        }) => Ok((
            attribute,
            string_match(s, &format!("{field}.metadata.value"))?,
        )),
        _ => reject(format!(
            "{field}.metadata.value: only string_match (or list_match.one_of a string_match) is supported"
        )),
    }
}
