//! Clusters resolved by DNS (Envoy's `STRICT_DNS`, a ServiceEntry with `resolution: DNS`): every
//! address of every name becomes a host, and the names are resolved again every few seconds
//! (Envoy's default refresh rate) so a moved service is followed. IPv4 only, as Istio asks of
//! Envoy by default (`V4_ONLY`). A failed lookup keeps the hosts the name had; the task ends
//! with its cluster's runtime.

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;

use tracing::{debug, warn};

use super::{ClusterRuntime, simple_host};

/// How often names are resolved again (Envoy's `dns_refresh_rate` default).
pub const REFRESH: Duration = Duration::from_secs(5);
/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves `targets` now and every [`REFRESH`] while the cluster's runtime lives.
pub async fn resolve_loop(runtime: Weak<ClusterRuntime>, targets: Vec<(String, u16)>) {
    let mut known: Vec<Vec<SocketAddr>> = vec![Vec::new(); targets.len()];
    loop {
        for (i, (name, port)) in targets.iter().enumerate() {
            match lookup(name, *port).await {
                Ok(addrs) => known[i] = addrs,
                Err(e) => {
                    warn!(%name, error = %e, kept = known[i].len(), "cannot resolve an upstream host; keeping its last addresses")
                }
            }
        }
        let mut all: Vec<SocketAddr> = known.iter().flatten().copied().collect();
        all.sort();
        all.dedup();
        let Some(rt) = runtime.upgrade() else {
            return;
        };
        let current: Vec<SocketAddr> = {
            let mut c: Vec<SocketAddr> = rt.plan.load().hosts.iter().map(|h| h.address).collect();
            c.sort();
            c
        };
        if current != all {
            debug!(cluster = %rt.config.name, hosts = ?all, "DNS hosts changed");
            rt.set_hosts(all.into_iter().map(simple_host).collect());
        }
        drop(rt);
        tokio::time::sleep(REFRESH).await;
    }
}

/// A name's IPv4 addresses (an IP literal is itself).
async fn lookup(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = strait_dns::client::system(name, port, LOOKUP_TIMEOUT)
        .await?
        .into_iter()
        .filter(SocketAddr::is_ipv4)
        .collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no IPv4 address",
        ));
    }
    Ok(addrs)
}
