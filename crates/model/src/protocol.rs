//! The protocol of a service port, determined as Istio does: from `appProtocol`, else from the
//! port name's prefix (`http`, `http-web`, `grpc-api`, ...), else unknown (Strait then detects it
//! on the connection).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Udp,
    Mongo,
    Redis,
    Mysql,
    /// Not declared: detected per connection (Istio's "auto").
    Unknown,
}

impl Protocol {
    /// Parses a protocol name as Istio's `protocol.Parse` (case-insensitive); `None` if unknown.
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.to_ascii_lowercase().as_str() {
            "http" | "http_proxy" => Protocol::Http,
            "http2" | "h2c" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    /// From a Kubernetes `appProtocol` (`http`, `kubernetes.io/h2c`, `grpc`, ...).
    pub fn from_app_protocol(app: &str) -> Option<Protocol> {
        match app {
            "kubernetes.io/h2c" => Some(Protocol::Http2),
            "kubernetes.io/ws" | "kubernetes.io/wss" => Some(Protocol::Http),
            other => Protocol::parse(other),
        }
    }

    /// From a port name: `http`, `http-web`, `grpc_api` → the prefix before `-` or `_`.
    pub fn from_port_name(name: &str) -> Option<Protocol> {
        let prefix = name.split(['-', '_']).next().unwrap_or(name);
        Protocol::parse(prefix)
    }

    /// Istio's rule for a Kubernetes Service port.
    pub fn for_kubernetes_port(
        name: Option<&str>,
        app_protocol: Option<&str>,
        l4: Option<&str>,
    ) -> Protocol {
        if l4 == Some("UDP") {
            return Protocol::Udp;
        }
        app_protocol
            .and_then(Protocol::from_app_protocol)
            .or_else(|| name.and_then(Protocol::from_port_name))
            .unwrap_or(Protocol::Unknown)
    }

    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    /// HTTP/2 end to end (HTTP2 and gRPC ports).
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
            Protocol::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_ports_follow_istio_precedence() {
        let p = Protocol::for_kubernetes_port;
        assert_eq!(p(Some("http"), None, None), Protocol::Http);
        assert_eq!(p(Some("http-web"), None, None), Protocol::Http);
        assert_eq!(p(Some("grpc_api"), None, None), Protocol::Grpc);
        assert_eq!(
            p(Some("tcp"), Some("http"), None),
            Protocol::Http,
            "appProtocol wins"
        );
        assert_eq!(p(Some("web"), None, None), Protocol::Unknown);
        assert_eq!(p(None, Some("kubernetes.io/h2c"), None), Protocol::Http2);
        assert_eq!(p(Some("http"), None, Some("UDP")), Protocol::Udp);
    }
}
