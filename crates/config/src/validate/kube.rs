//! Rules for Kubernetes core objects, SMI TrafficSplit, Linkerd's Link and Strait's MeshConfig.

use std::collections::BTreeSet;

use super::networking::locality_lb_setting;
use super::rules;
use crate::issue::Issues;
use crate::istio::traffic::OutlierDetection;
use crate::kube::{IntOrString, SecretData, ServiceSpec};
use crate::linkerd::Link;
use crate::mesh::MeshConfig;
use crate::path::FieldPath;
use crate::resource::{EndpointSliceData, EndpointsData, PodData};
use crate::smi::{self, TrafficSplit};

pub(super) fn service(s: &ServiceSpec, spec: &FieldPath, out: &mut Issues) {
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        let pp = spec.field("ports").index(i);
        if let Err(e) = rules::validate_port(p.port.into()) {
            out.invalid(pp.field("port"), e);
        }
        match p.name.as_deref().unwrap_or("") {
            "" if s.ports.len() > 1 => out.required(
                pp.field("name"),
                "ports must be named when a Service has more than one port",
            ),
            "" => {}
            name => {
                if !rules::is_dns1123_label(name) {
                    out.invalid(pp.field("name"), format!("\"{name}\": a port name must be a DNS-1123 label (lower case letters, digits and '-')"));
                }
                if !names.insert(name.to_string()) {
                    out.error(
                        crate::issue::IssueKind::Duplicate,
                        pp.field("name"),
                        format!("port name \"{name}\" is used twice"),
                    );
                }
            }
        }
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            out.error(
                crate::issue::IssueKind::Unsupported,
                pp.field("protocol"),
                format!("\"{protocol}\": supported values: \"TCP\", \"UDP\", \"SCTP\""),
            );
        }
        if !ports.insert((p.port, protocol.to_string())) {
            out.error(
                crate::issue::IssueKind::Duplicate,
                pp.clone(),
                format!("port {}/{protocol} is used twice", p.port),
            );
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) => {
                if let Err(e) = rules::validate_port(*n) {
                    out.invalid(pp.field("targetPort"), e);
                }
            }
            Some(IntOrString::Str(name)) if !is_iana_svc_name(name) => {
                out.invalid(pp.field("targetPort"), format!("\"{name}\": a named target port is a container port name (IANA_SVC_NAME: at most 15 lower case letters, digits and '-')"));
            }
            Some(IntOrString::Str(_)) => {}
            None => {}
        }
    }
    if let Some(sel) = &s.selector {
        super::labels(sel, &spec.field("selector"), out);
    }
    if let Some(ip) = s.cluster_ip.as_deref()
        && !ip.is_empty()
        && ip != "None"
        && !rules::is_ip(ip)
    {
        out.invalid(
            spec.field("clusterIP"),
            format!("\"{ip}\": must be a valid IP address or \"None\""),
        );
    }
    if let Some(t) = s.service_type.as_deref()
        && !matches!(
            t,
            "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
        )
    {
        out.error(crate::issue::IssueKind::Unsupported, spec.field("type"), format!("\"{t}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""));
    }
    if s.service_type.as_deref() == Some("ExternalName")
        && s.external_name.as_deref().is_none_or(str::is_empty)
    {
        out.required(
            spec.field("externalName"),
            "an ExternalName service needs externalName",
        );
    }
}

fn is_iana_svc_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub(super) fn endpoints(e: &EndpointsData, out: &mut Issues) {
    for (i, subset) in e.subsets.iter().enumerate() {
        let sp = FieldPath::root().field("subsets").index(i);
        for (field, list) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, a) in list.iter().enumerate() {
                if let Err(err) = rules::validate_ip(&a.ip) {
                    out.invalid(sp.field(field).index(j).field("ip"), err);
                }
            }
        }
        for (j, p) in subset.ports.iter().enumerate() {
            if let Err(err) = rules::validate_port(p.port.into()) {
                out.invalid(sp.field("ports").index(j).field("port"), err);
            }
        }
    }
}

pub(super) fn endpoint_slice(s: &EndpointSliceData, out: &mut Issues) {
    let root = FieldPath::root();
    if !matches!(s.address_type.as_str(), "IPv4" | "IPv6" | "FQDN") {
        out.error(
            crate::issue::IssueKind::Unsupported,
            root.field("addressType"),
            format!(
                "\"{}\": supported values: \"IPv4\", \"IPv6\", \"FQDN\"",
                s.address_type
            ),
        );
    }
    for (i, ep) in s.endpoints.iter().enumerate() {
        let ep_path = root.field("endpoints").index(i);
        if ep.addresses.is_empty() {
            out.required(
                ep_path.field("addresses"),
                "an endpoint needs at least one address",
            );
        }
        for (j, a) in ep.addresses.iter().enumerate() {
            let ok = match s.address_type.as_str() {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => rules::validate_fqdn(a).is_ok(),
            };
            if !ok {
                out.invalid(
                    ep_path.field("addresses").index(j),
                    format!("\"{a}\" is not a valid {} address", s.address_type),
                );
            }
        }
    }
    for (j, p) in s.ports.iter().enumerate() {
        if let Err(err) = rules::validate_port(p.port.into()) {
            out.invalid(root.field("ports").index(j).field("port"), err);
        }
    }
}

pub(super) fn pod(p: &PodData, out: &mut Issues) {
    let status = FieldPath::root().field("status");
    if let Some(ip) = p.status.pod_ip.as_deref()
        && !ip.is_empty()
        && let Err(e) = rules::validate_ip(ip)
    {
        out.invalid(status.field("podIP"), e);
    }
    for (i, ip) in p.status.pod_ips.iter().enumerate() {
        if let Err(e) = rules::validate_ip(&ip.ip) {
            out.invalid(status.field("podIPs").index(i).field("ip"), e);
        }
    }
}

pub(super) fn traffic_split(ts: &TrafficSplit, spec: &FieldPath, out: &mut Issues) {
    if ts.service.is_empty() {
        out.required(
            spec.field("service"),
            "the root service clients call must be named",
        );
    }
    if ts.backends.is_empty() {
        out.required(
            spec.field("backends"),
            "a TrafficSplit needs at least one backend",
        );
    }
    let mut total = 0u64;
    let mut seen = BTreeSet::new();
    for (i, b) in ts.backends.iter().enumerate() {
        let bp = spec.field("backends").index(i);
        if b.service.is_empty() {
            out.required(bp.field("service"), "a backend names a service");
        } else if !rules::is_dns1123_label(&b.service) {
            out.invalid(
                bp.field("service"),
                format!(
                    "\"{}\": a backend is a Service name in the same namespace",
                    b.service
                ),
            );
        }
        if !seen.insert(&b.service) {
            out.error(
                crate::issue::IssueKind::Duplicate,
                bp.field("service"),
                format!("backend \"{}\" is listed twice", b.service),
            );
        }
        match smi::weight_millis(&b.weight) {
            Ok(w) => total += w,
            Err(e) => out.invalid(bp.field("weight"), e),
        }
    }
    if !ts.backends.is_empty() && total == 0 {
        out.invalid(
            spec.field("backends"),
            "total backend weight = 0: no traffic could be sent",
        );
    }
}

pub(super) fn mesh_config(m: &MeshConfig, spec: &FieldPath, out: &mut Issues) {
    for (field, domain) in std::iter::once(("trustDomain", &m.trust_domain)).chain(
        m.trust_domain_aliases
            .iter()
            .map(|d| ("trustDomainAliases", d)),
    ) {
        let labels_ok = !domain.is_empty()
            && domain
                .trim_end_matches('.')
                .split('.')
                .all(rules::is_dns1123_label);
        if !labels_ok {
            out.invalid(spec.field(field), format!("trust domain name \"{domain}\" invalid: it must be a DNS name such as cluster.local or example.com"));
        }
    }
    for (field, v) in [
        ("clusterName", &m.cluster_name),
        ("network", &m.network),
        ("meshId", &m.mesh_id),
    ] {
        if let Some(v) = v
            && !rules::is_dns1123_subdomain(v)
        {
            out.invalid(
                spec.field(field),
                format!("\"{v}\": must be lower case letters, digits, '-' and '.'"),
            );
        }
    }
    for (name, net) in &m.mesh_networks {
        let np = spec.field("meshNetworks").key(name);
        for (i, e) in net.endpoints.iter().enumerate() {
            let ep = np.field("endpoints").index(i);
            match (&e.from_cidr, &e.from_registry) {
                (Some(c), None) => {
                    if let Err(err) = rules::validate_ip_or_cidr(c) {
                        out.invalid(ep.field("fromCidr"), err);
                    }
                }
                (None, Some(r)) => {
                    if !rules::is_dns1123_label(r) {
                        out.invalid(
                            ep.field("fromRegistry"),
                            format!("invalid registry name: {r} (a cluster name)"),
                        );
                    }
                }
                _ => out.invalid(ep, "set exactly one of fromCidr or fromRegistry"),
            }
        }
        for (i, g) in net.gateways.iter().enumerate() {
            let gp = np.field("gateways").index(i);
            match (&g.address, &g.registry_service_name) {
                (Some(a), None) => {
                    // Unlike Istio (which needs RESOLVE_HOSTNAME_GATEWAYS), DNS names are first-class.
                    if !rules::is_ip(a) && rules::validate_fqdn(a).is_err() {
                        out.invalid(
                            gp.field("address"),
                            format!("\"{a}\" is neither an IP address nor a DNS name"),
                        );
                    }
                }
                (None, Some(s)) => {
                    if let Err(e) = rules::validate_fqdn(s) {
                        out.invalid(gp.field("registryServiceName"), e);
                    }
                }
                _ => out.invalid(
                    gp.clone(),
                    "set exactly one of address or registryServiceName",
                ),
            }
            if let Err(e) = rules::validate_port(g.port.into()) {
                out.invalid(gp.field("port"), e);
            }
        }
    }
    for (i, s) in m.service_settings.iter().enumerate() {
        for (j, h) in s.hosts.iter().enumerate() {
            if let Err(e) = rules::validate_wildcard_domain(h) {
                out.invalid(
                    spec.field("serviceSettings")
                        .index(i)
                        .field("hosts")
                        .index(j),
                    e,
                );
            }
        }
    }
    if let Some(l) = &m.locality_lb_setting {
        locality_lb_setting(
            l,
            Some(&OutlierDetection::default()),
            &spec.field("localityLbSetting"),
            out,
        );
    }
}

/// Linkerd's `Link`: the target is named, ports are ports, the probe's path, period, timeout
/// and threshold make sense, and selectors use Kubernetes' operators.
pub(super) fn link(l: &Link, spec: &FieldPath, out: &mut Issues) {
    if l.target_cluster_name.is_empty() {
        out.required(
            spec.field("targetClusterName"),
            "a Link names the cluster it links (the target's cluster name)",
        );
    } else if !rules::is_dns1123_label(&l.target_cluster_name) {
        out.invalid(
            spec.field("targetClusterName"),
            format!(
                "\"{}\" must be a DNS-1123 label (lower case letters, digits and '-'): it becomes part of mirrored service names",
                l.target_cluster_name
            ),
        );
    }
    if let Some(secret) = &l.cluster_credentials_secret
        && !rules::is_dns1123_subdomain(secret)
    {
        out.invalid(
            spec.field("clusterCredentialsSecret"),
            format!("\"{secret}\" is not a Secret name"),
        );
    }
    let port = |text: &Option<String>, path: FieldPath, out: &mut Issues| {
        if let Some(t) = text
            && t.parse::<u16>().ok().filter(|p| *p > 0).is_none()
        {
            out.invalid(path, format!("\"{t}\" is not a port (1–65535)"));
        }
    };
    port(&l.gateway_port, spec.field("gatewayPort"), out);
    let probe = spec.field("probeSpec");
    port(&l.probe_spec.port, probe.field("port"), out);
    if let Some(path) = &l.probe_spec.path
        && !path.starts_with('/')
    {
        out.invalid(
            probe.field("path"),
            format!("\"{path}\" must start with '/'"),
        );
    }
    for (text, field) in [
        (&l.probe_spec.period, "period"),
        (&l.probe_spec.timeout, "timeout"),
    ] {
        if let Some(t) = text {
            match crate::duration::parse(t) {
                Ok(d) if d.as_std().is_zero() => out.invalid(
                    probe.field(field),
                    format!("\"{t}\" must be more than zero"),
                ),
                Ok(_) => {}
                Err(e) => out.invalid(probe.field(field), format!("{e}; write e.g. 3s")),
            }
        }
    }
    if let Some(t) = &l.probe_spec.failure_threshold
        && t.parse::<u32>().ok().filter(|n| *n > 0).is_none()
    {
        out.invalid(
            probe.field("failureThreshold"),
            format!("\"{t}\" is not a positive whole number"),
        );
    }
    for (selector, field) in [
        (&l.selector, "selector"),
        (&l.remote_discovery_selector, "remoteDiscoverySelector"),
        (&l.federated_service_selector, "federatedServiceSelector"),
    ] {
        for (i, e) in selector
            .iter()
            .flat_map(|s| s.match_expressions.iter())
            .enumerate()
        {
            let ep = spec.field(field).field("matchExpressions").index(i);
            match e.operator.as_str() {
                "In" | "NotIn" if e.values.is_empty() => {
                    out.required(ep.field("values"), format!("{} needs values", e.operator))
                }
                "Exists" | "DoesNotExist" if !e.values.is_empty() => out.invalid(
                    ep.field("values"),
                    format!("{} takes no values", e.operator),
                ),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => out.invalid(
                    ep.field("operator"),
                    format!("\"{other}\" is not one of In, NotIn, Exists, DoesNotExist"),
                ),
            }
        }
    }
}

/// A Secret's `data` values are base64, as the API server requires (its `stringData` is text).
pub(super) fn secret(s: &SecretData, out: &mut Issues) {
    for (key, value) in &s.data {
        if let Err(e) = crate::kube::decode_base64(value) {
            out.invalid(
                FieldPath::root().field("data").key(key),
                format!("not base64 ({e}): a Secret's data values are base64-encoded; put text under stringData instead"),
            );
        }
    }
}
