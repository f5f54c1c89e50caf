//! Primitive rules shared by every validator: DNS names, hosts with wildcards, label keys and
//! values, ports, IPs and CIDRs, protocols, header names. Each returns the problem in words.

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

#[allow(clippy::expect_used)] // fixed patterns, checked by the tests below
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static pattern")
}

static DNS1123_LABEL: LazyLock<Regex> = LazyLock::new(|| re("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static WILDCARD_LABEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\*|(\*|\*-)?[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"));
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| re("^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"));
static HEADER_NAME: LazyLock<Regex> = LazyLock::new(|| re("^[-_A-Za-z0-9]+$"));

/// A DNS-1123 label: lower-case letters, digits and `-`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && DNS1123_LABEL.is_match(s)
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn check_dns_preconditions(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if name.len() > 255 {
        return Err(format!("domain name \"{name}\" too long (max 255)"));
    }
    Ok(())
}

fn check_dns_labels(domain: &str, full: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    if let Some(tld) = parts.last()
        && !tld.is_empty()
        && tld.chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!(
            "domain name \"{full}\" invalid (top level domain \"{tld}\" cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name \"{full}\" invalid (label \"{label}\" invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified domain name (no wildcards).
pub fn validate_fqdn(name: &str) -> Result<(), String> {
    check_dns_preconditions(name)?;
    check_dns_labels(name, name)
}

/// A domain name whose first label may be a wildcard (`*`, `*.example.com`, `*x.example.com`).
pub fn validate_wildcard_domain(name: &str) -> Result<(), String> {
    check_dns_preconditions(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    if first.len() > 63 || !WILDCARD_LABEL.is_match(first) {
        return Err(format!(
            "domain name \"{name}\" invalid (label \"{first}\" invalid)"
        ));
    }
    match rest {
        Some(r) => check_dns_labels(r, name),
        None => Ok(()),
    }
}

/// Istio warns about wildcards that are not a whole first label (`*x.com`).
pub fn partial_wildcard_warning(host: &str) -> Option<String> {
    (host.contains('*') && host.len() != 1 && !host.starts_with("*.")).then(|| {
        format!("partial wildcard \"{host}\" not allowed; it is treated as \"*.\" plus the rest")
    })
}

pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

pub fn validate_ip(s: &str) -> Result<(), String> {
    if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s} is not a valid IP"))
    }
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub fn validate_ip_or_cidr(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some((ip, bits)) => {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{s} is not a valid CIDR block"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match bits.parse::<u8>() {
                Ok(b) if b <= max && !bits.starts_with('+') => Ok(()),
                _ => Err(format!("{s} is not a valid CIDR block")),
            }
        }
        None => validate_ip(s),
    }
}

/// Ports are 1–65535.
pub fn validate_port(port: i64) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port must be between 1-65535 (got {port})"))
    }
}

/// A Kubernetes label key: an optional DNS subdomain prefix and `/`, then a name.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Err(format!(
            "label key \"{key}\": prefix \"{p}\" must be a DNS subdomain"
        ));
    }
    if name.is_empty() || name.len() > 63 || !QUALIFIED_NAME.is_match(name) {
        return Err(format!(
            "label key \"{key}\" is invalid: a name of at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && QUALIFIED_NAME.is_match(value)) {
        Ok(())
    } else {
        Err(format!(
            "label value \"{value}\" is invalid: at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit"
        ))
    }
}

pub fn is_valid_header_name(name: &str) -> bool {
    HEADER_NAME.is_match(name)
}

/// Istio's protocol names (case-insensitive). `None` when unsupported.
pub fn parse_protocol(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "tcp" => "TCP",
        "udp" => "UDP",
        "grpc" => "GRPC",
        "grpc-web" => "GRPC-Web",
        "http" => "HTTP",
        "http_proxy" => "HTTP_PROXY",
        "http2" => "HTTP2",
        "https" => "HTTPS",
        "tls" => "TLS",
        "mongo" => "Mongo",
        "redis" => "Redis",
        "mysql" => "MySQL",
        _ => return None,
    })
}

pub fn protocol_is_http(p: &str) -> bool {
    matches!(p, "HTTP" | "HTTP2" | "GRPC" | "GRPC-Web" | "HTTP_PROXY")
}

pub fn protocol_is_tls(p: &str) -> bool {
    matches!(p, "HTTPS" | "TLS")
}

pub fn protocol_is_tcp(p: &str) -> bool {
    matches!(p, "TCP" | "HTTPS" | "TLS" | "Mongo" | "Redis" | "MySQL")
}

/// A regular expression as Envoy will run it (RE2 syntax), at most 1024 characters.
pub fn validate_regex(re: &str) -> Result<(), String> {
    if re.len() > 1024 {
        return Err("regex is too large, max length allowed is 1024".into());
    }
    Regex::new(re).map(|_| ()).map_err(|e| {
        format!(
            "{}; Istio uses RE2 style regex-based match",
            e.to_string().lines().last().unwrap_or("invalid regex")
        )
    })
}

/// gRPC status names accepted by fault injection.
pub const GRPC_STATUS_NAMES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Policies accepted in `retries.retryOn`, besides HTTP status codes.
pub const RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Registered HTTP status codes (as Go's `http.StatusText` knows them).
pub fn is_known_http_status(code: u16) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429
        | 431 | 451 | 500..=508 | 510 | 511)
}

pub const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

/// Cipher suites Envoy (BoringSSL) accepts in `cipherSuites`.
pub const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules_follow_istio() {
        assert!(validate_wildcard_domain("*.example.com").is_ok());
        assert!(validate_wildcard_domain("*x").is_ok());
        assert!(validate_wildcard_domain("*").is_ok());
        assert!(validate_wildcard_domain("reviews.bookinfo.svc.cluster.local").is_ok());
        assert!(validate_wildcard_domain("a.*.com").is_err());
        assert!(validate_wildcard_domain("Bad_Host").is_err());
        assert!(validate_wildcard_domain("").is_err());
        assert!(validate_wildcard_domain("foo.123").is_err());
        assert!(validate_fqdn("istio.io.").is_ok());
        assert!(validate_fqdn("*.istio.io").is_err());
    }

    #[test]
    fn labels_follow_kubernetes() {
        assert!(validate_label_key("topology.kubernetes.io/region").is_ok());
        assert!(validate_label_key("app").is_ok());
        assert!(validate_label_key("-app").is_err());
        assert!(validate_label_key("Bad Prefix/app").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("v1.2_3").is_ok());
        assert!(validate_label_value("a b").is_err());
    }

    #[test]
    fn addresses_and_cidrs() {
        assert!(validate_ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(validate_ip_or_cidr("2001:db8::/32").is_ok());
        assert!(validate_ip_or_cidr("1.2.3.4/99").is_err());
        assert!(validate_ip_or_cidr("1.2.3").is_err());
        assert!(validate_ip_or_cidr("001:db8::").is_ok());
    }

    #[test]
    fn protocols_and_regexes() {
        assert_eq!(parse_protocol("grpc"), Some("GRPC"));
        assert_eq!(parse_protocol("tls"), Some("TLS"));
        assert_eq!(parse_protocol("quic"), None);
        assert!(validate_regex("^/api/v[0-9]+").is_ok());
        assert!(validate_regex("(").is_err());
    }
}
