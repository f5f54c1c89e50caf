//! Which network an address is on, following Istio's precedence: the workload's
//! `topology.istio.io/network` label, its namespace's label, `meshNetworks` (`fromCidr`, then
//! `fromRegistry`), and finally the cluster's own network.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::ids::{ClusterId, NetworkId};

pub const NETWORK_LABEL: &str = "topology.istio.io/network";

/// `meshNetworks` reduced to what endpoint placement needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkRules {
    /// (CIDR, network), in declaration order.
    pub cidrs: Vec<(Cidr, NetworkId)>,
    /// Cluster → network, from `fromRegistry`.
    pub registries: BTreeMap<ClusterId, NetworkId>,
}

impl NetworkRules {
    /// The network of an endpoint at `ip` in `cluster`, before the cluster default applies.
    pub fn lookup(&self, ip: Option<IpAddr>, cluster: &ClusterId) -> Option<NetworkId> {
        if let Some(ip) = ip
            && let Some((_, n)) = self.cidrs.iter().find(|(c, _)| c.contains(ip))
        {
            return Some(n.clone());
        }
        self.registries.get(cluster).cloned()
    }
}

/// An IP prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, b) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = if b.is_empty() { max } else { b.parse().ok()? };
        (bits <= max).then_some(Cidr { addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_contain_their_addresses() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert!(Cidr::parse("1.2.3.4/33").is_none());
    }

    #[test]
    fn cidr_rules_come_before_registry_rules() {
        let rules = NetworkRules {
            cidrs: vec![(Cidr::parse("10.2.0.0/16").unwrap(), NetworkId::new("net-b"))],
            registries: [(ClusterId::new("c1"), NetworkId::new("net-a"))].into(),
        };
        let c1 = ClusterId::new("c1");
        assert_eq!(
            rules.lookup(Some("10.2.0.9".parse().unwrap()), &c1),
            Some(NetworkId::new("net-b"))
        );
        assert_eq!(
            rules.lookup(Some("10.1.0.9".parse().unwrap()), &c1),
            Some(NetworkId::new("net-a"))
        );
        assert_eq!(rules.lookup(None, &ClusterId::new("c2")), None);
    }
}
