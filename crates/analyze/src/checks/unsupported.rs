//! What Strait does not do of what users write, named where it is written (ST0004
//! NotSupportedByStrait): Unix-socket ingress endpoints, two certificates for one gateway
//! server, client certificate checks beyond a CA file, certificate revocation lists.

use strait_config::FieldPath;
use strait_config::istio::common::{ServerPort, ServerTlsMode};
use strait_config::istio::traffic::{ClientTlsSettings, TrafficPolicy};
use strait_config::resource::Object;

use crate::context::{Context, at};
use crate::message::{Message, codes};

/// An ST0004 NotSupportedByStrait message at `path` of `obj`.
fn note<T>(kind: &str, obj: &Object<T>, path: &FieldPath, message: impl Into<String>) -> Message {
    at(codes::NOT_SUPPORTED_BY_STRAIT, kind, obj, path, message)
}

/// "port N" for a port, "its port" without a number.
fn port_text(port: Option<&ServerPort>) -> String {
    port.and_then(|p| p.number)
        .map_or("its port".to_string(), |n| format!("port {n}"))
}

/// Sidecar `ingress` ports handing to a Unix socket: Strait's proxies reach applications over
/// TCP only, so such a port goes to loopback at its own number instead.
pub(super) fn unix_socket_endpoints(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for sc in ctx.all(|c| &c.sidecars) {
        for (i, ing) in sc.spec.ingress.iter().enumerate() {
            let Some(endpoint) = ing
                .default_endpoint
                .as_deref()
                .filter(|e| e.starts_with("unix://"))
            else {
                continue;
            };
            let port = port_text(ing.port.as_ref());
            out.push(note(
                "Sidecar",
                sc,
                &FieldPath::root()
                    .field("spec")
                    .field("ingress")
                    .index(i)
                    .field("defaultEndpoint"),
                format!(
                    "{endpoint}: Strait's proxies do not reach applications over Unix sockets, so traffic to {port} goes to 127.0.0.1 on the same port; have the application listen on a TCP port and name it here (127.0.0.1:<port>)"
                ),
            ));
        }
    }
}

/// Gateway servers terminating TLS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL) with what Strait's proxies
/// do not have or do not check: two certificates (`credentialNames` or `tlsCertificates` with
/// two items: the server is not served) and client-certificate checks beyond the CA
/// certificates (`subjectAltNames`, `verifyCertificateSpki`, `verifyCertificateHash`, `caCrl`).
/// A `credentialName` whose Secret the gateway's workloads cannot be sent is
/// [`gateway_credentials`]' to report.
pub(super) fn gateway_server_certificates(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for gw in ctx.all(|c| &c.gateways) {
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let Some(tls) = &server.tls else { continue };
            let mode = match tls.mode {
                Some(ServerTlsMode::Simple) => "SIMPLE",
                Some(ServerTlsMode::Mutual) => "MUTUAL",
                Some(ServerTlsMode::OptionalMutual) => "OPTIONAL_MUTUAL",
                _ => continue,
            };
            let path = |field: &str| {
                FieldPath::root()
                    .field("spec")
                    .field("servers")
                    .index(i)
                    .field("tls")
                    .field(field)
            };
            let port = port_text(server.port.as_ref());
            let two = [
                (
                    "credentialNames",
                    tls.credential_names.as_ref().is_some_and(|n| n.len() > 1),
                ),
                ("tlsCertificates", tls.tls_certificates.is_some()),
            ];
            if let Some((field, _)) = two.iter().find(|(_, set)| *set) {
                out.push(note(
                    "Gateway",
                    gw,
                    &path(field),
                    format!(
                        "{mode} with {field}: Strait's gateways serve one certificate per server, so this server is not served on {port}; name one Secret (credentialName) or the certificate's files (serverCertificate, privateKey)"
                    ),
                ));
            }
            let unchecked = [
                ("subjectAltNames", !tls.subject_alt_names.is_empty()),
                (
                    "verifyCertificateSpki",
                    !tls.verify_certificate_spki.is_empty(),
                ),
                (
                    "verifyCertificateHash",
                    !tls.verify_certificate_hash.is_empty(),
                ),
                ("caCrl", tls.ca_crl.is_some()),
            ];
            for (field, _) in unchecked.iter().filter(|(_, set)| *set) {
                out.push(note(
                    "Gateway",
                    gw,
                    &path(field),
                    format!(
                        "{field}: Strait's gateways verify client certificates against caCertificates only; this check is not made"
                    ),
                ));
            }
        }
    }
}

/// DestinationRule TLS settings the proxy cannot honour: `caCrl` (revocation is not checked).
pub(super) fn client_tls_settings(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for dr in ctx.all(|c| &c.destination_rules) {
        let spec = FieldPath::root().field("spec");
        let mut policies: Vec<(FieldPath, &TrafficPolicy)> = Vec::new();
        if let Some(p) = &dr.spec.traffic_policy {
            policies.push((spec.field("trafficPolicy"), p));
        }
        for (i, subset) in dr.spec.subsets.iter().enumerate() {
            if let Some(p) = &subset.traffic_policy {
                policies.push((spec.field("subsets").index(i).field("trafficPolicy"), p));
            }
        }
        let mut settings: Vec<(FieldPath, &ClientTlsSettings)> = Vec::new();
        for (path, policy) in policies {
            if let Some(tls) = &policy.tls {
                settings.push((path.field("tls"), tls));
            }
            for (i, port) in policy.port_level_settings.iter().flatten().enumerate() {
                if let Some(tls) = &port.tls {
                    settings.push((path.field("portLevelSettings").index(i).field("tls"), tls));
                }
            }
        }
        for (path, tls) in settings {
            if tls.ca_crl.is_some() {
                out.push(note(
                    "DestinationRule",
                    dr,
                    &path.field("caCrl"),
                    "Strait's proxies do not check certificate revocation lists: a revoked server certificate that chains to caCertificates is accepted",
                ));
            }
        }
    }
}
