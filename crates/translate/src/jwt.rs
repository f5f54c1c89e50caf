//! Request authentication: the RequestAuthentications that select a workload (in its namespace
//! or the root namespace, by selector) become one JWT filter on its inbound HTTP chains, one
//! provider per rule, as Istio builds Envoy's `jwt_authn` — a token any provider verifies is
//! accepted, a token none verifies refused, a request without one let through for authorization
//! to decide. Key sets come inline (`jwks`) or from `jwksUri`, fetched by the control plane
//! (Istio's default); one that could not be fetched refuses every token of its issuer.

use std::collections::BTreeMap;

use strait_config::istio::security::{JwtPresence, RequestAuthentication};
use strait_config::resource::Object;
use strait_xds::jwt::{ClaimHeader, JwtAuthn, JwtProvider, TokenHeader};

use crate::MeshView;
use crate::authz::{selects, targets};

/// Istio always treats `scope` and `permission` as space-separated lists, and the rule's
/// `spaceDelimitedClaims` too.
fn space_delimited(extra: Option<&[String]>) -> Vec<String> {
    let mut out: Vec<String> = vec!["scope".into(), "permission".into()];
    for c in extra.unwrap_or_default() {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

/// The JWT filter of a workload in `namespace` with `labels`, if any RequestAuthentication
/// selects it.
pub fn for_workload(
    view: &MeshView<'_>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<JwtAuthn> {
    let mut policies: Vec<&Object<RequestAuthentication>> = view
        .config
        .request_authentications
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
    policies
        .sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    let providers: Vec<JwtProvider> = policies
        .iter()
        .flat_map(|p| p.spec.jwt_rules.iter().flatten())
        .filter_map(|rule| {
            let issuer = rule.issuer.clone().filter(|i| !i.is_empty())?;
            let jwks = match (&rule.jwks, rule.jwks_uri()) {
                (Some(inline), _) => inline.clone(),
                (None, Some(uri)) => view.jwks.get(uri).cloned().unwrap_or_default(),
                (None, None) => String::new(),
            };
            Some((issuer, jwks, rule))
        })
        .enumerate()
        .map(|(i, (issuer, jwks, rule))| JwtProvider {
            name: format!("origins-{i}"),
            issuer,
            audiences: rule.audiences.clone().unwrap_or_default(),
            jwks,
            from_headers: rule
                .from_headers
                .iter()
                .flatten()
                .map(|h| TokenHeader {
                    name: h.name.to_ascii_lowercase(),
                    prefix: h.prefix.clone().unwrap_or_default(),
                })
                .collect(),
            from_params: rule.from_params.clone().unwrap_or_default(),
            from_cookies: rule.from_cookies.clone().unwrap_or_default(),
            forward: rule.forward_original_token.unwrap_or(false),
            payload_header: rule
                .output_payload_to_header
                .clone()
                .filter(|h| !h.is_empty()),
            claim_headers: rule
                .output_claim_to_headers
                .iter()
                .flatten()
                .flatten()
                .map(|c| ClaimHeader {
                    header: c.header.to_ascii_lowercase(),
                    claim: c.claim.clone(),
                })
                .collect(),
            space_delimited_claims: space_delimited(rule.space_delimited_claims.as_deref()),
            required: rule.presence == Some(JwtPresence::Required),
        })
        .collect();
    (!providers.is_empty()).then_some(JwtAuthn { providers })
}
