//! Filter-chain selection, pure, in Envoy's order: destination port, destination IP (longest
//! prefix), TLS server name (exact, then the longest wildcard), transport protocol, application
//! protocol. At each step the chains that name the connection's value win over those that leave
//! the criterion open; chains that name another value are out. No chain left: the default chain.

use std::net::{IpAddr, SocketAddr};

use strait_xds::listener::{FilterChain, FilterChainMatch};

/// What is known of a connection when a chain is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionFacts {
    pub destination: Option<SocketAddr>,
    pub server_name: Option<String>,
    /// `tls` or `raw_buffer`.
    pub transport: &'static str,
    /// ALPN offered (TLS) or the detected protocol (`http/1.1`, `h2c`).
    pub application_protocols: Vec<String>,
}

/// An IP prefix (`10.0.0.0/8`, `::1/128`, a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub length: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip, len) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let address: IpAddr = ip
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let length = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { address, length })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.address, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4),
            (_, ip) => Some(ip),
        };
        match (self.address, ip) {
            (IpAddr::V4(a), Some(IpAddr::V4(b))) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.length))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), Some(IpAddr::V6(b))) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.length))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// A chain's match, parsed once.
#[derive(Debug, Clone)]
pub struct CompiledMatch {
    destination_port: Option<u16>,
    prefixes: Vec<Cidr>,
    server_names: Vec<String>,
    transport: Option<String>,
    application_protocols: Vec<String>,
}

impl CompiledMatch {
    pub fn compile(m: &FilterChainMatch) -> Result<CompiledMatch, String> {
        Ok(CompiledMatch {
            destination_port: m.destination_port,
            prefixes: m
                .prefix_ranges
                .iter()
                .map(|p| Cidr::parse(p))
                .collect::<Result<_, _>>()?,
            server_names: m
                .server_names
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            transport: m.transport_protocol.clone(),
            application_protocols: m.application_protocols.clone(),
        })
    }
}

/// Chooses among `chains` (their compiled matches, in order); `None` means the default chain.
pub fn select(chains: &[CompiledMatch], facts: &ConnectionFacts) -> Option<usize> {
    let mut candidates: Vec<usize> = (0..chains.len()).collect();
    // 1. Destination port.
    let port = facts.destination.map(|d| d.port());
    narrow(&mut candidates, |i| match chains[i].destination_port {
        None => Some(0),
        Some(p) if Some(p) == port => Some(1),
        Some(_) => None,
    });
    // 2. Destination IP: the longest matching prefix.
    let ip = facts.destination.map(|d| d.ip());
    narrow(&mut candidates, |i| {
        let c = &chains[i];
        if c.prefixes.is_empty() {
            return Some(0);
        }
        let ip = ip?;
        c.prefixes
            .iter()
            .filter(|p| p.contains(ip))
            .map(|p| u32::from(p.length) + 1)
            .max()
    });
    // 3. Server name: exact, then the longest wildcard.
    let sni = facts.server_name.as_deref().map(str::to_ascii_lowercase);
    narrow(&mut candidates, |i| {
        let c = &chains[i];
        if c.server_names.is_empty() {
            return Some(0);
        }
        let sni = sni.as_deref()?;
        c.server_names
            .iter()
            .filter_map(|n| {
                if n == sni {
                    Some(u32::MAX)
                } else if let Some(suffix) = n.strip_prefix('*') {
                    (sni.len() > suffix.len() && sni.ends_with(suffix))
                        .then_some(suffix.len() as u32 + 1)
                } else {
                    None
                }
            })
            .max()
    });
    // 4. Transport protocol.
    narrow(&mut candidates, |i| match &chains[i].transport {
        None => Some(0),
        Some(t) if t == facts.transport => Some(1),
        Some(_) => None,
    });
    // 5. Application protocol.
    narrow(&mut candidates, |i| {
        let c = &chains[i];
        if c.application_protocols.is_empty() {
            return Some(0);
        }
        c.application_protocols
            .iter()
            .any(|p| facts.application_protocols.contains(p))
            .then_some(1)
    });
    candidates.first().copied()
}

/// Keeps the candidates with the best score (`None` = excluded).
fn narrow(candidates: &mut Vec<usize>, score: impl Fn(usize) -> Option<u32>) {
    let scored: Vec<(usize, u32)> = candidates
        .iter()
        .filter_map(|i| score(*i).map(|s| (*i, s)))
        .collect();
    let best = scored.iter().map(|(_, s)| *s).max();
    candidates.clear();
    candidates.extend(
        scored
            .into_iter()
            .filter(|(_, s)| Some(*s) == best)
            .map(|(i, _)| i),
    );
}

/// Compiles every chain's match of a listener.
pub fn compile_all(chains: &[FilterChain]) -> Result<Vec<CompiledMatch>, String> {
    chains
        .iter()
        .map(|c| {
            CompiledMatch::compile(&c.matching).map_err(|e| format!("filter chain {}: {e}", c.name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(f: impl FnOnce(&mut FilterChainMatch)) -> CompiledMatch {
        let mut x = FilterChainMatch::default();
        f(&mut x);
        CompiledMatch::compile(&x).unwrap()
    }

    fn facts(dst: &str) -> ConnectionFacts {
        ConnectionFacts {
            destination: Some(dst.parse().unwrap()),
            transport: "raw_buffer",
            ..Default::default()
        }
    }

    #[test]
    fn cidr_containment() {
        let c = Cidr::parse("10.96.0.0/12").unwrap();
        assert!(c.contains("10.96.0.33".parse().unwrap()));
        assert!(c.contains("10.111.255.255".parse().unwrap()));
        assert!(!c.contains("10.112.0.0".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("10.0.0.1")
                .unwrap()
                .contains("::ffff:10.0.0.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(
            !Cidr::parse("fd00::/8")
                .unwrap()
                .contains("10.0.0.1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten").is_err());
    }

    #[test]
    fn the_destination_port_then_the_longest_prefix_win() {
        let chains = vec![
            m(|_| {}),
            m(|x| x.destination_port = Some(9080)),
            m(|x| x.prefix_ranges = vec!["10.96.0.0/16".into()]),
            m(|x| x.prefix_ranges = vec!["10.96.0.33/32".into()]),
        ];
        assert_eq!(select(&chains, &facts("10.0.0.1:9080")), Some(1));
        assert_eq!(select(&chains, &facts("10.96.0.33:3306")), Some(3));
        assert_eq!(select(&chains, &facts("10.96.1.1:3306")), Some(2));
        assert_eq!(select(&chains, &facts("10.1.1.1:3306")), Some(0));
    }

    #[test]
    fn nothing_matching_falls_to_the_default_chain() {
        let chains = vec![m(|x| x.prefix_ranges = vec!["10.96.0.33/32".into()])];
        assert_eq!(select(&chains, &facts("10.1.1.1:3306")), None);
    }

    #[test]
    fn server_names_exact_before_wildcards_and_transport_then_alpn() {
        let chains = vec![
            m(|x| x.server_names = vec!["*.svc.cluster.local".into()]),
            m(|x| x.server_names = vec!["reviews.bookinfo.svc.cluster.local".into()]),
            m(|x| x.transport_protocol = Some("tls".into())),
            m(|x| {
                x.transport_protocol = Some("raw_buffer".into());
                x.application_protocols = vec!["h2c".into()];
            }),
            m(|x| x.transport_protocol = Some("raw_buffer".into())),
        ];
        let mut f = facts("10.0.0.1:443");
        f.transport = "tls";
        f.server_name = Some("Reviews.bookinfo.svc.cluster.local".into());
        assert_eq!(select(&chains, &f), Some(1));
        f.server_name = Some("ratings.bookinfo.svc.cluster.local".into());
        assert_eq!(select(&chains, &f), Some(0));
        f.server_name = Some("example.com".into());
        assert_eq!(select(&chains, &f), Some(2));
        let mut plain = facts("10.0.0.1:80");
        plain.application_protocols = vec!["h2c".into()];
        assert_eq!(select(&chains, &plain), Some(3));
        plain.application_protocols = vec!["http/1.1".into()];
        assert_eq!(select(&chains, &plain), Some(4));
    }
}
