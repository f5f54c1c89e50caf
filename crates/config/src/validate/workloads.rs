//! ServiceEntry, WorkloadEntry, WorkloadGroup, Gateway and Sidecar rules.

use std::collections::{BTreeMap, BTreeSet};

use super::networking::connection_pool;
use super::rules::{self, CIPHER_SUITES};
use super::{SelectorWording, at_most_one, export_to, selector_labels};
use crate::issue::{IssueKind, Issues};
use crate::istio::common::{ServerPort, ServerTlsMode, ServerTlsSettings, TlsProtocolVersion};
use crate::istio::gateway::{CaptureMode, Gateway, OutboundMode, Sidecar};
use crate::istio::workload::{Resolution, ServiceEntry, WorkloadEntry, WorkloadGroup};
use crate::path::FieldPath;
use crate::resource::Meta;

const UNIX: &str = "unix://";

pub(super) fn service_entry(se: &ServiceEntry, meta: &Meta, spec: &FieldPath, out: &mut Issues) {
    let resolution = se.resolution();
    if let Some(sel) = &se.workload_selector {
        selector_labels(
            &sel.labels,
            &spec.field("workloadSelector").field("labels"),
            SelectorWording::Labels,
            out,
        );
        if sel.labels.is_empty() {
            out.warn(IssueKind::Notice, spec.field("workloadSelector"), "service entry: workload selector specified without labels, will be applied to all services in namespace");
        }
    }
    if se.workload_selector.is_some() && se.endpoints.is_some() {
        out.invalid(
            spec.clone(),
            "only one of WorkloadSelector or Endpoints can be set",
        );
    }
    if se.hosts.is_empty() {
        out.required(
            spec.field("hosts"),
            "service entry must have at least one host",
        );
    } else if se.hosts.len() > 256 {
        out.invalid(spec.field("hosts"), "must have at most 256 items");
    }
    for (i, host) in se.hosts.iter().enumerate() {
        let hp = spec.field("hosts").index(i);
        if host == "*" {
            out.invalid(hp, "hostname cannot be wildcard");
        } else if let Err(e) = rules::validate_wildcard_domain(host) {
            out.invalid(hp, e);
        } else if let Some(w) = rules::partial_wildcard_warning(host) {
            out.warn(IssueKind::Notice, hp, w);
        }
    }
    let mut cidr = false;
    if se.addresses.len() > 256 {
        out.invalid(spec.field("addresses"), "must have at most 256 items");
    }
    for (i, a) in se.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        if let Err(e) = rules::validate_ip_or_cidr(a) {
            out.invalid(spec.field("addresses").index(i), e);
        }
    }
    if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
        out.invalid(
            spec.clone(),
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, port) in se.ports.iter().enumerate() {
        let pp = spec.field("ports").index(i);
        if !names.insert(port.name.as_str()) {
            out.error(
                IssueKind::Duplicate,
                pp.field("name"),
                format!("service entry port name \"{}\" already defined", port.name),
            );
        }
        if !numbers.insert(port.number) {
            out.invalid(
                pp.field("number"),
                format!(
                    "port number cannot be duplicated: service entry port {} already defined",
                    port.number
                ),
            );
        }
        if let Err(e) = rules::validate_port(port.number.into()) {
            out.invalid(pp.field("number"), e);
        }
        if let Some(t) = port.target_port {
            if let Err(e) = rules::validate_port(t.into()) {
                out.invalid(pp.field("targetPort"), e);
            } else if resolution == Resolution::None {
                out.warn(
                    IssueKind::Notice,
                    pp.field("targetPort"),
                    "targetPort has no effect when resolution mode is NONE",
                );
            }
        }
        if !rules::is_dns1123_label(&port.name) {
            out.invalid(
                pp.field("name"),
                format!("invalid port name: {}", port.name),
            );
        }
        if let Some(proto) = &port.protocol
            && !proto.is_empty()
            && rules::parse_protocol(proto).is_none()
        {
            out.invalid(
                pp.field("protocol"),
                format!("unsupported protocol: {proto}"),
            );
        }
    }
    let endpoints = se.endpoints.as_deref().unwrap_or_default();
    let port_names: BTreeSet<&str> = se.ports.iter().map(|p| p.name.as_str()).collect();
    match resolution {
        Resolution::None => {
            if se.endpoints.is_some() {
                out.invalid(spec.field("endpoints"), "NONE mode cannot set endpoints (no endpoints should be provided for resolution type none)");
            }
            if se.workload_selector.is_some() {
                out.warn(
                    IssueKind::Notice,
                    spec.field("workloadSelector"),
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        Resolution::Static => {
            for (i, ep) in endpoints.iter().enumerate() {
                workload_entry_rules(
                    ep,
                    Some(&port_names),
                    false,
                    &spec.field("endpoints").index(i),
                    out,
                );
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => {
            if endpoints.is_empty() {
                for (i, host) in se.hosts.iter().enumerate() {
                    if rules::validate_fqdn(host).is_err() {
                        out.invalid(spec.field("hosts").index(i), format!("hosts must be FQDN if no endpoints are provided for resolution mode {}", resolution.as_str()));
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && endpoints.len() > 1 {
                out.invalid(spec.field("endpoints"), "DNS_ROUND_ROBIN mode cannot have multiple endpoints (there must only be 0 or 1 endpoint)");
            }
            for (i, ep) in endpoints.iter().enumerate() {
                let ep_path = spec.field("endpoints").index(i);
                if let Some(addr) = &ep.address
                    && !rules::is_ip(addr)
                    && !addr.starts_with(UNIX)
                    && rules::validate_fqdn(addr).is_err()
                {
                    out.invalid(
                        ep_path.field("address"),
                        format!("endpoint address \"{addr}\" is not a valid FQDN or an IP address"),
                    );
                }
                workload_entry_rules(ep, Some(&port_names), true, &ep_path, out);
            }
            if se.workload_selector.is_some() {
                out.warn(
                    IssueKind::Notice,
                    spec.field("workloadSelector"),
                    format!(
                        "workloadSelector should not be set when resolution mode is {}",
                        resolution.as_str()
                    ),
                );
            }
        }
    }
    if resolution != Resolution::None && se.hosts.len() > 1 {
        let l4_only = se.ports.iter().find(|p| {
            let proto = p
                .protocol
                .as_deref()
                .and_then(rules::parse_protocol)
                .unwrap_or("");
            !rules::protocol_is_http(proto) && !rules::protocol_is_tls(proto)
        });
        if let Some(p) = l4_only {
            out.invalid(spec.field("hosts"), format!("multiple hosts provided with non-HTTP, non-TLS ports (port {}): a TCP connection does not say which host it is for", p.name));
        }
    }
    export_to(
        &meta.namespace,
        &se.export_to,
        true,
        false,
        &spec.field("exportTo"),
        out,
    );
}

pub(super) fn workload_entry(we: &WorkloadEntry, spec: &FieldPath, out: &mut Issues) {
    workload_entry_rules(we, None, true, spec, out);
}

/// Rules of a WorkloadEntry, also applied to ServiceEntry endpoints.
fn workload_entry_rules(
    we: &WorkloadEntry,
    service_ports: Option<&BTreeSet<&str>>,
    allow_fqdn: bool,
    p: &FieldPath,
    out: &mut Issues,
) {
    let addr = we.address.as_deref().unwrap_or("");
    if addr.is_empty() {
        if we.network.as_deref().unwrap_or("").is_empty() {
            out.required(p.field("address"), "Address is required (or a network, for a workload reached through its network's gateway)");
        } else {
            out.warn(
                IssueKind::Notice,
                p.field("address"),
                format!(
                    "address is unset with network \"{}\"",
                    we.network.as_deref().unwrap_or("")
                ),
            );
        }
    }
    if let Some(path) = addr.strip_prefix(UNIX) {
        if !(path.starts_with('/') || path.starts_with('@')) {
            out.invalid(
                p.field("address"),
                format!("\"{addr}\": UDS must be an absolute path or abstract socket"),
            );
        } else if path.ends_with('/') {
            out.invalid(
                p.field("address"),
                format!("\"{addr}\": UDS may not be a dir"),
            );
        }
        if we.ports.is_some() {
            out.invalid(
                p.clone(),
                format!("UDS may not include ports (unix endpoint {addr} must not include ports)"),
            );
        }
        if let Some(ports) = service_ports
            && ports.len() != 1
        {
            out.invalid(
                p.field("address"),
                "exactly 1 service port required for unix endpoints",
            );
        }
    } else if !addr.is_empty() && !rules::is_ip(addr) {
        if !allow_fqdn {
            out.invalid(
                p.field("address"),
                format!("endpoint address \"{addr}\" is not a valid IP address"),
            );
        } else if rules::validate_fqdn(addr).is_err() {
            out.invalid(
                p.field("address"),
                format!("endpoint address \"{addr}\" is not a valid FQDN or an IP address"),
            );
        }
    }
    if addr.len() > 256 {
        out.invalid(p.field("address"), "must be at most 256 characters");
    }
    if let Some(ports) = &we.ports {
        let bad_names: Vec<&String> = ports
            .keys()
            .filter(|n| n.len() >= 63 || !is_port_name(n))
            .collect();
        if !bad_names.is_empty() {
            out.invalid(p.field("ports"), format!("port name must be valid: {bad_names:?} (letters, digits and '-', starting and ending with a letter or digit)"));
        }
        for (name, port) in ports {
            if let Err(e) = rules::validate_port((*port).into()) {
                out.invalid(p.field("ports").key(name), e);
            }
            if let Some(sp) = service_ports
                && !sp.contains(name.as_str())
            {
                out.invalid(p.field("ports").key(name), format!("endpoint port {port} is not defined by the service entry (no port named \"{name}\")"));
            }
        }
    }
    super::labels(&we.labels, &p.field("labels"), out);
    if let Some(sa) = &we.service_account
        && sa.len() > 253
    {
        out.invalid(p.field("serviceAccount"), "must be at most 253 characters");
    }
    if let Some(loc) = &we.locality
        && loc.split('/').count() > 3
    {
        out.invalid(
            p.field("locality"),
            format!("\"{loc}\": a locality is region/zone/subzone"),
        );
    }
}

fn is_port_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

pub(super) fn workload_group(wg: &WorkloadGroup, spec: &FieldPath, out: &mut Issues) {
    match &wg.template {
        None => out.required(spec.field("template"), "template is required"),
        Some(t) => {
            let tp = spec.field("template");
            let addr = t.address.as_deref().unwrap_or("");
            if let Some(path) = addr.strip_prefix(UNIX) {
                if !(path.starts_with('/') || path.starts_with('@')) {
                    out.invalid(
                        tp.field("address"),
                        "UDS must be an absolute path or abstract socket",
                    );
                } else if path.ends_with('/') {
                    out.invalid(tp.field("address"), "UDS may not be a dir");
                }
                if t.ports.is_some() {
                    out.invalid(tp.clone(), "UDS may not include ports");
                }
            }
            if let Some(ports) = &t.ports {
                if ports.keys().any(|n| n.len() >= 63 || !is_port_name(n)) {
                    out.invalid(tp.field("ports"), "port name must be valid");
                }
                for (name, port) in ports {
                    if let Err(e) = rules::validate_port((*port).into()) {
                        out.invalid(tp.field("ports").key(name), e);
                    }
                }
            }
        }
    }
    if let Some(m) = &wg.metadata {
        super::labels(&m.labels, &spec.field("metadata").field("labels"), out);
    }
    let Some(probe) = &wg.probe else { return };
    let pp = spec.field("probe");
    for (field, v) in [
        ("periodSeconds", probe.period_seconds),
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if v.is_some_and(|v| v < 0) {
            out.invalid(pp.field(field), format!("{field} must be non-negative"));
        }
    }
    let methods = [
        ("httpGet", probe.http_get.is_some()),
        ("tcpSocket", probe.tcp_socket.is_some()),
        ("exec", probe.exec.is_some()),
        ("grpc", probe.grpc.is_some()),
    ];
    if !at_most_one(&methods, &pp, out) {
        return;
    }
    if let Some(h) = &probe.http_get {
        let hp = pp.field("httpGet");
        if let Err(e) = rules::validate_port(h.port.into()) {
            out.invalid(hp.field("port"), e);
        }
        if let Some(s) = &h.scheme
            && !s.is_empty()
            && s != "HTTP"
            && s != "HTTPS"
        {
            out.invalid(hp.field("scheme"), "scheme must be one of [HTTP, HTTPS]");
        }
        for (i, header) in h.http_headers.iter().enumerate() {
            let name = header.name.as_deref().unwrap_or("");
            if !rules::is_valid_header_name(name) {
                out.invalid(hp.field("httpHeaders").index(i).field("name"), format!("\"{name}\": spec.probe.httpGet.httpHeaders[{i}].name in body should match '^[-_A-Za-z0-9]+$'"));
            }
        }
    } else if let Some(t) = &probe.tcp_socket {
        if let Err(e) = rules::validate_port(t.port.into()) {
            out.invalid(pp.field("tcpSocket").field("port"), e);
        }
    } else if let Some(x) = &probe.exec {
        if x.command.is_empty() {
            out.required(
                pp.field("exec").field("command"),
                "exec.command is required",
            );
        }
        for (i, c) in x.command.iter().enumerate() {
            if c.is_empty() {
                out.invalid(
                    pp.field("exec").field("command").index(i),
                    "command arguments may not be empty",
                );
            }
        }
    } else if let Some(g) = &probe.grpc {
        if let Err(e) = rules::validate_port(g.port.unwrap_or(0).into()) {
            out.invalid(pp.field("grpc").field("port"), e);
        }
    } else {
        out.invalid(
            pp,
            "a probe needs one of httpGet, tcpSocket, exec or grpc (unknown health check method)",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway

pub(super) fn gateway(gw: &Gateway, spec: &FieldPath, out: &mut Issues) {
    if gw.servers.is_empty() {
        out.required(
            spec.field("servers"),
            "gateway must have at least one server",
        );
    }
    let mut port_names = BTreeMap::new();
    for (i, server) in gw.servers.iter().enumerate() {
        let sp = spec.field("servers").index(i);
        if server.hosts.is_empty() {
            out.required(
                sp.field("hosts"),
                "server config must contain at least one host",
            );
        }
        for (j, host) in server.hosts.iter().enumerate() {
            namespace_slash_host(host, true, &sp.field("hosts").index(j), out);
        }
        let bind = server.bind.as_deref().unwrap_or("");
        let port_ok = match &server.port {
            None => {
                out.required(sp.field("port"), "port is required");
                false
            }
            Some(port) => {
                let pp = sp.field("port");
                let mut ok = true;
                for (field, missing) in [
                    ("number", port.number.is_none()),
                    ("protocol", port.protocol.is_none()),
                    ("name", port.name.as_deref().unwrap_or("").is_empty()),
                ] {
                    if missing {
                        out.required(pp.field(field), format!("port {field} must be set"));
                        ok = false;
                    }
                }
                if let Some(proto) = &port.protocol
                    && rules::parse_protocol(proto).is_none()
                {
                    out.invalid(pp.field("protocol"), format!("invalid protocol \"{proto}\", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP"));
                    ok = false;
                }
                let number = port.number.unwrap_or(0);
                if (number > 0 || !bind.starts_with(UNIX))
                    && let Err(e) = rules::validate_port(number.into())
                {
                    out.invalid(pp.field("number"), e);
                    ok = false;
                }
                if port.target_port.is_some_and(|t| t > 0) {
                    out.invalid(
                        pp.field("targetPort"),
                        "targetPort has no impact on Gateways",
                    );
                }
                if let Some(name) = &port.name
                    && let Some(prev) = port_names.insert(name.clone(), i)
                {
                    out.invalid(pp.field("name"), format!("port names in servers must be unique: duplicate name {name} (also used by servers[{prev}])"));
                }
                ok
            }
        };
        bind_address(bind, server.port.as_ref(), &sp.field("bind"), out);
        if let Some(tls) = &server.tls {
            server_tls(tls, &sp.field("tls"), out);
        }
        if port_ok && let Some(port) = &server.port {
            let proto = port
                .protocol
                .as_deref()
                .and_then(rules::parse_protocol)
                .unwrap_or("");
            if rules::protocol_is_tls(proto) && server.tls.is_none() {
                out.required(
                    sp.field("tls"),
                    "server must have TLS settings for HTTPS/TLS protocols",
                );
            } else if !rules::protocol_is_tls(proto)
                && let Some(tls) = &server.tls
            {
                if rules::protocol_is_http(proto) {
                    let passthrough = matches!(
                        tls.mode,
                        Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough) | None
                    );
                    if !passthrough
                        || tls.ca_certificates.is_some()
                        || tls.private_key.is_some()
                        || tls.server_certificate.is_some()
                    {
                        out.invalid(
                            sp.field("tls"),
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                } else {
                    out.invalid(
                        sp.field("tls"),
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                }
            }
            if !rules::protocol_is_http(proto)
                && server.tls.as_ref().is_some_and(|t| t.https_redirect)
            {
                out.warn(
                    IssueKind::Notice,
                    sp.field("tls").field("httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }
}

fn bind_address(bind: &str, port: Option<&ServerPort>, p: &FieldPath, out: &mut Issues) {
    if let Some(path) = bind.strip_prefix(UNIX) {
        if !(path.starts_with('@') || (path.starts_with('/') && !path.ends_with('/'))) {
            out.invalid(
                p.clone(),
                format!("{path} is not an absolute path to a file"),
            );
        }
        if port.and_then(|x| x.number).is_some_and(|n| n != 0) {
            out.invalid(p.clone(), "port number must be 0 for unix domain socket");
        }
    } else if !bind.is_empty()
        && let Err(e) = rules::validate_ip(bind)
    {
        out.invalid(p.clone(), e);
    }
}

/// `namespace/host` (Sidecar egress; Gateway servers, where the namespace is optional).
fn namespace_slash_host(host: &str, is_gateway: bool, p: &FieldPath, out: &mut Issues) {
    let Some((ns, name)) = host.split_once('/') else {
        if is_gateway {
            host_part(host, true, p, out);
        } else {
            out.invalid(
                p.clone(),
                format!("\"{host}\": host must be of form namespace/dnsName"),
            );
        }
        return;
    };
    if ns.is_empty() || name.is_empty() {
        out.invalid(
            p.clone(),
            "config namespace and dnsName in host entry cannot be empty",
        );
    }
    let special = ns == "*" || ns == "." || (!is_gateway && ns == "~");
    if !special && !rules::is_dns1123_label(ns) {
        let what = if is_gateway { "gateway" } else { "sidecar" };
        out.invalid(
            p.clone(),
            format!("invalid namespace value \"{ns}\" in {what}"),
        );
    }
    host_part(name, is_gateway, p, out);
}

fn host_part(host: &str, is_gateway: bool, p: &FieldPath, out: &mut Issues) {
    if host != "*" && !host.contains('.') {
        out.invalid(
            p.clone(),
            format!("\"{host}\": short names (non FQDN) are not allowed"),
        );
    }
    if let Err(e) = rules::validate_wildcard_domain(host)
        && !(is_gateway && rules::is_ip(host))
    {
        out.invalid(p.clone(), e);
    }
    if let Some(w) = rules::partial_wildcard_warning(host) {
        out.invalid(p.clone(), w);
    }
}

fn server_tls(tls: &ServerTlsSettings, p: &FieldPath, out: &mut Issues) {
    let has = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    if tls.tls_certificates.is_some() && tls.credential_names.is_some() {
        out.invalid(
            p.clone(),
            "only one of credentialNames or tlsCertificates can be set",
        );
    }
    if tls.credential_name.is_some() && tls.credential_names.is_some() {
        out.invalid(
            p.clone(),
            "only one of credentialName or credentialNames can be set",
        );
    }
    for (field, len) in [
        (
            "credentialNames",
            tls.credential_names.as_ref().map(Vec::len),
        ),
        (
            "tlsCertificates",
            tls.tls_certificates.as_ref().map(Vec::len),
        ),
    ] {
        if let Some(n) = len
            && !(1..=2).contains(&n)
        {
            out.invalid(p.field(field), format!("must have 1 or 2 items, found {n}"));
        }
    }
    if matches!(
        tls.min_protocol_version,
        Some(TlsProtocolVersion::V1_0 | TlsProtocolVersion::V1_1)
    ) && tls.cipher_suites.is_empty()
    {
        out.warn(IssueKind::Notice, p.field("minProtocolVersion"), "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.");
    }
    let mut seen = BTreeSet::new();
    for (i, c) in tls.cipher_suites.iter().enumerate() {
        if !CIPHER_SUITES.contains(&c.as_str()) {
            out.warn(
                IssueKind::Notice,
                p.field("cipherSuites").index(i),
                format!("ignoring invalid cipher suite: {c}"),
            );
        } else if !seen.insert(c) {
            out.warn(
                IssueKind::Notice,
                p.field("cipherSuites").index(i),
                format!("ignoring duplicate cipher suite: {c}"),
            );
        }
    }
    match tls.mode {
        Some(ServerTlsMode::IstioMutual) => {
            for (field, set, what) in [
                (
                    "serverCertificate",
                    has(&tls.server_certificate),
                    "server certificate",
                ),
                ("privateKey", has(&tls.private_key), "private key"),
                ("caCertificates", has(&tls.ca_certificates), "CA bundle"),
                (
                    "credentialName",
                    has(&tls.credential_name),
                    "credentialName",
                ),
            ] {
                if set {
                    out.invalid(
                        p.field(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                    );
                }
            }
            return;
        }
        Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
            if has(&tls.ca_crl)
                || has(&tls.server_certificate)
                || has(&tls.private_key)
                || has(&tls.ca_certificates)
                || has(&tls.credential_name) =>
        {
            out.warn(
                IssueKind::Notice,
                p.clone(),
                "passthrough modes do not use certificates, they will be ignored",
            );
        }
        _ => {}
    }
    let credential = has(&tls.credential_name)
        || tls.credential_names.is_some()
        || tls.tls_certificates.is_some();
    if matches!(
        tls.mode,
        Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
    ) && credential
    {
        return;
    }
    match tls.mode {
        Some(ServerTlsMode::Simple) => {
            if !has(&tls.server_certificate) {
                out.required(
                    p.field("serverCertificate"),
                    "SIMPLE TLS requires a server certificate",
                );
            }
            if !has(&tls.private_key) {
                out.required(p.field("privateKey"), "SIMPLE TLS requires a private key");
            }
        }
        Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) => {
            if !has(&tls.server_certificate) {
                out.required(
                    p.field("serverCertificate"),
                    "MUTUAL TLS requires a server certificate",
                );
            }
            if !has(&tls.private_key) {
                out.required(p.field("privateKey"), "MUTUAL TLS requires a private key");
            }
            if !has(&tls.ca_certificates) {
                out.required(
                    p.field("caCertificates"),
                    "MUTUAL TLS requires a client CA bundle",
                );
            }
        }
        _ => {}
    }
    if has(&tls.ca_crl) {
        if has(&tls.credential_name) {
            out.invalid(p.field("caCrl"), "CRL is not supported with credentialName. CRL has to be specified in the credential");
        }
        if tls.mode == Some(ServerTlsMode::Simple) {
            out.invalid(p.field("caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sidecar

pub(super) fn sidecar(sc: &Sidecar, meta: &Meta, spec: &FieldPath, out: &mut Issues) {
    if let Some(sel) = &sc.workload_selector {
        selector_labels(
            &sel.labels,
            &spec.field("workloadSelector").field("labels"),
            SelectorWording::Labels,
            out,
        );
        if sel.labels.is_empty() {
            out.warn(IssueKind::Notice, spec.field("workloadSelector"), "sidecar: workload selector specified without labels, will be applied to all services in namespace");
        }
    }
    if sc.egress.is_empty()
        && sc.ingress.is_empty()
        && sc.outbound_traffic_policy.is_none()
        && sc.inbound_connection_pool.is_none()
    {
        out.invalid(spec.clone(), "sidecar: empty configuration provided");
        return;
    }
    let mut ports = BTreeSet::new();
    for (i, ing) in sc.ingress.iter().enumerate() {
        let ip = spec.field("ingress").index(i);
        let Some(port) = &ing.port else {
            out.required(
                ip.field("port"),
                "sidecar: port is required for ingress listeners",
            );
            continue;
        };
        if port.target_port.is_some_and(|t| t > 0) {
            out.invalid(
                ip.field("port").field("targetPort"),
                "targetPort has no impact on Sidecars",
            );
        }
        sidecar_port(port, &ip.field("port"), out);
        if let Err(e) = rules::validate_port(port.number.unwrap_or(0).into()) {
            out.invalid(ip.field("port").field("number"), e);
        }
        if let Some(b) = ing.bind.as_deref().filter(|b| !b.is_empty())
            && let Err(e) = rules::validate_ip(b)
        {
            out.invalid(ip.field("bind"), e);
        }
        if !ports.insert(port.number.unwrap_or(0)) {
            out.invalid(
                ip.field("port").field("number"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        if let Some(ep) = ing.default_endpoint.as_deref().filter(|e| !e.is_empty()) {
            default_endpoint(ep, &ip.field("defaultEndpoint"), out);
        }
        if let Some(tls) = &ing.tls {
            let tp = ip.field("tls");
            if !tls.subject_alt_names.is_empty() {
                out.invalid(
                    tp.field("subjectAltNames"),
                    "sidecar: subjectAltNames is not supported in ingress tls",
                );
            }
            if tls.https_redirect {
                out.invalid(
                    tp.field("httpsRedirect"),
                    "sidecar: httpsRedirect is not supported",
                );
            }
            if tls.credential_name.is_some() {
                out.invalid(
                    tp.field("credentialName"),
                    "sidecar: credentialName is not currently supported",
                );
            }
            if matches!(
                tls.mode,
                Some(ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)
            ) {
                out.invalid(tp.field("mode"), "configuration is invalid: cannot set mode to ISTIO_MUTUAL or AUTO_PASSTHROUGH in sidecar ingress tls");
            }
            server_tls(tls, &tp, out);
        }
        if let Some(cp) = &ing.connection_pool {
            connection_pool(cp, &ip.field("connectionPool"), out);
            let proto = port
                .protocol
                .as_deref()
                .and_then(rules::parse_protocol)
                .unwrap_or("");
            if cp.http.is_some() && !rules::protocol_is_http(proto) {
                out.warn(IssueKind::Notice, ip.field("connectionPool").field("http"), format!("sidecar: HTTP connection pool settings are configured for port {} but its protocol is not HTTP; only TCP settings will apply", port.number.unwrap_or(0)));
            }
        }
    }
    if let Some(cp) = &sc.inbound_connection_pool {
        connection_pool(cp, &spec.field("inboundConnectionPool"), out);
    }
    let mut ports = BTreeSet::new();
    let mut uds = BTreeSet::new();
    let mut catch_all = false;
    for (i, eg) in sc.egress.iter().enumerate() {
        let ep = spec.field("egress").index(i);
        match &eg.port {
            None => {
                if catch_all {
                    out.invalid(
                        ep.clone(),
                        "sidecar: egress can have only one listener with empty port",
                    );
                    continue;
                }
                if i == sc.egress.len() - 1 {
                    catch_all = true;
                } else {
                    out.invalid(ep.clone(), "sidecar: the egress listener with empty port should be the last listener in the list");
                }
            }
            Some(port) => {
                if port.target_port.is_some_and(|t| t > 0) {
                    out.invalid(
                        ep.field("port").field("targetPort"),
                        "targetPort has no impact on Sidecars",
                    );
                }
                sidecar_port(port, &ep.field("port"), out);
                let bind = eg.bind.as_deref().unwrap_or("");
                let number = port.number.unwrap_or(0);
                if number == 0 {
                    match bind.strip_prefix(UNIX) {
                        None => out.invalid(ep.field("bind"), "sidecar: ports with 0 value must have a unix domain socket bind address"),
                        Some(path) => {
                            if !(path.starts_with('@') || (path.starts_with('/') && !path.ends_with('/'))) {
                                out.invalid(ep.field("bind"), format!("{path} is not an absolute path to a file"));
                            }
                        }
                    }
                    if !matches!(
                        eg.capture_mode,
                        None | Some(CaptureMode::Default | CaptureMode::None)
                    ) {
                        out.invalid(ep.field("captureMode"), "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners");
                    }
                    if !uds.insert(bind.to_string()) {
                        out.invalid(
                            ep.field("bind"),
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                } else {
                    if let Err(e) = rules::validate_port(number.into()) {
                        out.invalid(ep.field("port").field("number"), e);
                    }
                    if !bind.is_empty()
                        && let Err(e) = rules::validate_ip(bind)
                    {
                        out.invalid(ep.field("bind"), e);
                    }
                    if !ports.insert(number) {
                        out.invalid(
                            ep.field("port").field("number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
        }
        if eg.hosts.is_empty() {
            out.required(
                ep.field("hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        let mut by_ns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (j, host) in eg.hosts.iter().enumerate() {
            let hp = ep.field("hosts").index(j);
            if let Some((ns, svc)) = host.split_once('/') {
                let ns = if ns == "." {
                    meta.namespace.clone()
                } else {
                    ns.to_string()
                };
                let set = by_ns.entry(ns).or_default();
                if (svc != "*" && (set.contains(svc) || set.contains("*")))
                    || (svc == "*" && !set.is_empty())
                {
                    out.warn(
                        IssueKind::Notice,
                        hp.clone(),
                        format!("duplicated egress host: {host}"),
                    );
                }
                set.insert(svc.to_string());
            }
            namespace_slash_host(host, false, &hp, out);
        }
        if by_ns.get("*").is_some_and(|s| s.contains("*")) && by_ns.len() != 1 {
            out.warn(
                IssueKind::Notice,
                ep.field("hosts"),
                "`*/*` host select all resources, no other hosts can be added",
            );
        }
    }
    if let Some(tp) = &sc.outbound_traffic_policy
        && let Some(proxy) = &tp.egress_proxy
    {
        let pp = spec.field("outboundTrafficPolicy").field("egressProxy");
        if tp.mode != Some(OutboundMode::AllowAny) {
            out.invalid(pp, "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode");
        } else {
            if let Err(e) = rules::validate_fqdn(&proxy.host) {
                out.invalid(pp.field("host"), e);
            }
            match proxy.port.as_ref().and_then(|p| p.number) {
                None => out.required(
                    pp.field("port"),
                    "sidecar: egress_proxy port must be non-nil",
                ),
                Some(n) => {
                    if let Err(e) = rules::validate_port(n.into()) {
                        out.invalid(pp.field("port").field("number"), e);
                    }
                }
            }
        }
    }
}

fn sidecar_port(port: &ServerPort, p: &FieldPath, out: &mut Issues) {
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty())
        && !rules::is_dns1123_label(name)
    {
        out.invalid(p.field("name"), format!("invalid port name: {name}"));
    }
    if let Some(proto) = port.protocol.as_deref().filter(|p| !p.is_empty())
        && rules::parse_protocol(proto).is_none()
    {
        out.invalid(
            p.field("protocol"),
            format!("unsupported protocol: {proto}"),
        );
    }
}

fn default_endpoint(ep: &str, p: &FieldPath, out: &mut Issues) {
    if let Some(path) = ep.strip_prefix(UNIX) {
        if !(path.starts_with('@') || (path.starts_with('/') && !path.ends_with('/'))) {
            out.invalid(
                p.clone(),
                format!("{path} is not an absolute path to a file"),
            );
        }
        return;
    }
    let (host, port) = match ep.rsplit_once(':') {
        Some((h, port)) => (h.trim_start_matches('[').trim_end_matches(']'), port),
        None => {
            out.invalid(p.clone(), format!("\"{ep}\": missing port in address"));
            return;
        }
    };
    if !host.is_empty() && !["127.0.0.1", "0.0.0.0", "::1", "::"].contains(&host) {
        out.invalid(p.clone(), "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset");
    }
    match port.parse::<i64>() {
        Ok(n) => {
            if let Err(e) = rules::validate_port(n) {
                out.invalid(p.clone(), e);
            }
        }
        Err(_) => out.invalid(
            p.clone(),
            format!("sidecar: defaultEndpoint port ({port}) is not a number"),
        ),
    }
}
