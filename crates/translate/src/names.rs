//! Istio's resource names, so users' tooling habits carry over.

/// Which way a cluster points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterDirection {
    Outbound,
    Inbound,
}

/// `outbound|<port>|<subset>|<host>`.
pub fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// `inbound|<port>||`.
pub fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

/// The SNI a client sends so an east-west gateway can route by it:
/// `outbound_.<port>_.<subset>_.<host>`.
pub fn sni_for(port: u16, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}

/// The cluster an east-west gateway SNI names (inverse of [`sni_for`]).
pub fn cluster_for_sni(sni: &str) -> Option<String> {
    let rest = sni.strip_prefix("outbound_.")?;
    let (port, rest) = rest.split_once("_.")?;
    let (subset, host) = rest.split_once("_.")?;
    let port: u16 = port.parse().ok()?;
    (!host.is_empty()).then(|| outbound_cluster(port, subset, host))
}

/// Parses `outbound|<port>|<subset>|<host>`.
pub fn parse_outbound(name: &str) -> Option<(u16, &str, &str)> {
    let rest = name.strip_prefix("outbound|")?;
    let mut it = rest.splitn(3, '|');
    let port = it.next()?.parse().ok()?;
    Some((port, it.next()?, it.next()?))
}

/// A proxyless gRPC listener (and its route) is named after the target: `<host>:<port>`.
pub fn grpc_listener(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

pub const BLACKHOLE: &str = "BlackHoleCluster";
pub const PASSTHROUGH: &str = "PassthroughCluster";
pub const OUTBOUND_LISTENER: &str = "virtualOutbound";
pub const INBOUND_LISTENER: &str = "virtualInbound";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_and_cluster_names_round_trip() {
        let sni = sni_for(5000, "v1", "helloworld.sample.svc.cluster.local");
        assert_eq!(
            sni,
            "outbound_.5000_.v1_.helloworld.sample.svc.cluster.local"
        );
        assert_eq!(
            cluster_for_sni(&sni).unwrap(),
            "outbound|5000|v1|helloworld.sample.svc.cluster.local"
        );
        assert_eq!(
            cluster_for_sni("outbound_.80_._.a.b").unwrap(),
            "outbound|80||a.b"
        );
        assert_eq!(cluster_for_sni("example.com"), None);
        assert_eq!(parse_outbound("outbound|80||a.b"), Some((80, "", "a.b")));
    }
}
