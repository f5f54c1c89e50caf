//! Network gateways addressed by DNS name (`meshNetworks` `gateways: [{address: gw.example.com}]`):
//! resolved with their TTL and resolved again when it runs out, so a gateway whose address
//! changes (a cloud load balancer's, say) is followed without a configuration change. A failed
//! lookup keeps the last addresses (a resolver hiccup must not cut a network off) and is tried
//! again soon.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use strait_model::MeshSettings;
use strait_model::settings::GatewayAddress;
use tracing::{info, warn};

/// Bounds on how long an answer is kept: at least a second (TTL 0 must not spin), at most five
/// minutes (a gateway that moves is noticed within that).
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(300);
/// When a name could not be resolved: try again after this.
const RETRY: Duration = Duration::from_secs(5);
/// Kept for names the C library resolves (`/etc/hosts`), which has no TTL.
const SYSTEM_TTL: Duration = Duration::from_secs(30);

/// Where gateway names are asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GatewayResolver {
    /// `/etc/resolv.conf`'s name servers (with their TTLs), else the C library's resolver.
    #[default]
    System,
    /// These name servers only.
    Servers(Vec<SocketAddr>),
}

#[derive(Debug, Clone)]
struct Entry {
    ips: Vec<IpAddr>,
    due: Instant,
}

/// Gateway names and their current addresses.
#[derive(Debug, Default)]
pub struct GatewayDns {
    resolver: GatewayResolver,
    names: BTreeMap<String, Entry>,
}

impl GatewayDns {
    pub fn new(resolver: GatewayResolver) -> Self {
        GatewayDns {
            resolver,
            names: BTreeMap::new(),
        }
    }

    /// The names `settings` uses (with a port each, for the system resolver).
    fn wanted(settings: &MeshSettings) -> BTreeMap<String, u16> {
        settings
            .gateways
            .values()
            .flatten()
            .filter_map(|g| match &g.address {
                GatewayAddress::Dns(name) => Some((name.clone(), g.port)),
                _ => None,
            })
            .collect()
    }

    /// Resolves the names `settings` uses that are new or due, forgets the others; returns
    /// whether any name's addresses changed.
    pub async fn refresh(&mut self, settings: &MeshSettings) -> bool {
        let wanted = Self::wanted(settings);
        self.names.retain(|n, _| wanted.contains_key(n));
        let now = Instant::now();
        let mut changed = false;
        for (name, port) in wanted {
            let entry = self.names.get(&name);
            if entry.is_some_and(|e| e.due > now) {
                continue;
            }
            let next = match self.lookup(&name, port).await {
                Ok((ips, ttl)) => Entry {
                    ips,
                    due: now + ttl.clamp(MIN_TTL, MAX_TTL),
                },
                Err(e) => {
                    let kept = entry.map(|e| e.ips.clone()).unwrap_or_default();
                    warn!(gateway = %name, error = %e, kept = ?kept, "cannot resolve the gateway's name; keeping its last addresses and trying again in 5 s");
                    Entry {
                        ips: kept,
                        due: now + RETRY,
                    }
                }
            };
            let before = entry.map(|e| e.ips.clone());
            if before.as_ref() != Some(&next.ips) {
                if before.is_some() {
                    info!(gateway = %name, from = ?before, to = ?next.ips, "gateway address changed");
                }
                changed = true;
            }
            self.names.insert(name, next);
        }
        changed
    }

    /// When the first name is due again (`None`: no names).
    pub fn next_due(&self) -> Option<Instant> {
        self.names.values().map(|e| e.due).min()
    }

    /// A name's current addresses.
    pub fn addresses(&self, name: &str) -> Vec<IpAddr> {
        self.names
            .get(name)
            .map(|e| e.ips.clone())
            .unwrap_or_default()
    }

    async fn lookup(&self, name: &str, port: u16) -> std::io::Result<(Vec<IpAddr>, Duration)> {
        let servers = match &self.resolver {
            GatewayResolver::Servers(s) => s.clone(),
            GatewayResolver::System => std::fs::read_to_string("/etc/resolv.conf")
                .ok()
                .and_then(|t| strait_dns::ResolvConf::parse(&t).ok())
                .map(|c| c.nameservers)
                .unwrap_or_default(),
        };
        if !servers.is_empty() {
            match strait_dns::client::resolve(name, &servers).await {
                Ok(r) if !r.ips.is_empty() => return Ok((r.ips, r.ttl)),
                Ok(_) | Err(_) if self.resolver == GatewayResolver::System => {}
                Ok(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no addresses",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        // The C library's resolver (also `/etc/hosts`), which gives no TTL.
        let ips = strait_dns::client::system(name, port, Duration::from_secs(2))
            .await?
            .iter()
            .map(SocketAddr::ip)
            .collect();
        Ok((ips, SYSTEM_TTL))
    }
}

#[cfg(test)]
mod tests {
    use strait_model::NetworkId;
    use strait_model::settings::NetworkGateway;

    use super::*;

    fn settings(name: &str) -> MeshSettings {
        let mut s = MeshSettings::default();
        s.gateways.insert(
            NetworkId::new("network2"),
            vec![NetworkGateway {
                address: GatewayAddress::Dns(name.into()),
                port: 15443,
                locality: None,
            }],
        );
        s
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_the_last_addresses_and_retries_soon() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut dns = GatewayDns::new(GatewayResolver::Servers(vec![silent.local_addr().unwrap()]));
        let known: IpAddr = "198.51.100.1".parse().unwrap();
        dns.names.insert(
            "gw.example".into(),
            Entry {
                ips: vec![known],
                due: Instant::now(),
            },
        );
        let started = Instant::now();
        assert!(!dns.refresh(&settings("gw.example")).await);
        assert_eq!(dns.addresses("gw.example"), vec![known]);
        let due = dns.next_due().unwrap();
        assert!(due >= started + RETRY && due <= Instant::now() + RETRY);
        // A name the settings no longer use is forgotten.
        // A name the settings no longer use is forgotten (the new one, unresolvable, is new:
        // a change).
        assert!(dns.refresh(&settings("other.example")).await);
        assert!(dns.addresses("gw.example").is_empty());
    }
}
