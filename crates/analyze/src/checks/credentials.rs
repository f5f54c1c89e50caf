//! Gateway servers whose `credentialName` names a Secret their workloads cannot be sent (Istio's
//! `InvalidGatewayCredential`): the control plane sends a gateway the Secrets of its own
//! namespace in its own cluster, so each workload the Gateway selects needs the Secret there,
//! with a certificate and key, and CA certificates for MUTUAL and OPTIONAL_MUTUAL.

use std::collections::BTreeSet;

use strait_config::FieldPath;
use strait_config::istio::common::ServerTlsMode;
use strait_config::kube::{SecretData, roots_secret};

use crate::context::{Context, at};
use crate::message::{Message, codes};

pub(super) fn gateway_credentials(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for gw in ctx
        .all(|c| &c.gateways)
        .filter(|g| !g.spec.selector.is_empty())
    {
        // Where the gateway's proxies run: (cluster, namespace) of each selected workload.
        let places: BTreeSet<(String, String)> = ctx
            .selected(None, &gw.spec.selector)
            .map(|w| (w.cluster.to_string(), w.namespace.clone()))
            .collect();
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let Some(tls) = &server.tls else { continue };
            let verify = match tls.mode {
                Some(ServerTlsMode::Simple) => false,
                Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) => true,
                _ => continue,
            };
            let (field, name) = match (&tls.credential_name, tls.credential_names.as_deref()) {
                (Some(name), _) => ("credentialName", name.as_str()),
                (None, Some([one])) => ("credentialNames", one.as_str()),
                _ => continue,
            };
            let ca_name = tls.ca_cert_credential_name.as_deref().unwrap_or(name);
            let path = FieldPath::root()
                .field("spec")
                .field("servers")
                .index(i)
                .field("tls")
                .field(field);
            for (cluster, namespace) in &places {
                let secret = |n: &str| find(ctx, cluster, namespace, n);
                let problem = match secret(name) {
                    None => Some(format!("no Secret {namespace}/{name}")),
                    Some(s) if s.certificate().is_none() => Some(format!(
                        "Secret {namespace}/{name} holds no certificate and key (tls.crt and tls.key, or cert and key)"
                    )),
                    _ if verify
                        && roots_secret(secret, ca_name)
                            .is_none_or(|s| s.ca_certificates().is_none()) =>
                    {
                        Some(format!(
                            "neither Secret {namespace}/{ca_name}-cacert nor {namespace}/{ca_name} holds CA certificates (ca.crt or cacert) to verify clients with"
                        ))
                    }
                    _ => None,
                };
                if let Some(problem) = problem {
                    out.push(at(
                        codes::INVALID_GATEWAY_CREDENTIAL,
                        "Gateway",
                        gw,
                        &path,
                        format!(
                            "{problem} in cluster {cluster}, where this Gateway's workloads run: they refuse TLS connections to this server until it exists"
                        ),
                    ));
                }
            }
        }
    }
}

/// Secret `name` of `namespace` in `cluster`.
fn find<'a>(
    ctx: &Context<'a>,
    cluster: &str,
    namespace: &str,
    name: &str,
) -> Option<&'a SecretData> {
    ctx.configs
        .iter()
        .filter(|(c, _)| c.as_str() == cluster)
        .flat_map(|(_, config)| config.secrets.iter())
        .find(|s| s.meta.namespace == namespace && s.meta.name == name)
        .map(|s| &s.spec)
}
