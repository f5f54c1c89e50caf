//! Endpoints for one cluster as one proxy should see them: filtered by subset, grouped by
//! locality, prioritized from the proxy's own locality and the locality load-balancing settings,
//! and with endpoints on other networks replaced by those networks' gateways (split horizon).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use strait_config::istio::traffic::LocalityLbSetting;
use strait_model::{
    Endpoint, EndpointAddress, Health, Labels, Locality as ModelLocality, NetworkId, ServicePort,
    ServiceView,
};
use strait_xds::endpoint::{
    ClusterLoadAssignment, EndpointMetadata, HealthStatus, LbEndpoint, LocalityEndpoints,
};
use strait_xds::{Locality, SocketAddress};

use crate::proxy::{ProxyKind, ProxyNode};

/// A gateway into a network, resolved to an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEndpoint {
    pub address: IpAddr,
    pub port: u16,
    pub locality: ModelLocality,
    /// Whether it answers the control plane's probes (or has never been seen to): a gateway
    /// that stopped answering carries no traffic while another into its network does, and
    /// when none does, the network's endpoints are sent unhealthy.
    pub reachable: bool,
}

/// Every network's gateways.
pub type GatewayTable = BTreeMap<NetworkId, Vec<GatewayEndpoint>>;

/// What the load assignment of one cluster depends on.
pub struct EdsRequest<'a> {
    pub cluster_name: &'a str,
    pub service: &'a ServiceView,
    pub port: &'a ServicePort,
    /// The subset's labels: only endpoints carrying them.
    pub subset_labels: Option<&'a BTreeMap<String, String>>,
    /// The DestinationRule's locality setting for this port and subset.
    pub locality: Option<&'a LocalityLbSetting>,
    /// Whether outlier detection is on (Istio's condition for locality priorities).
    pub outlier_detection: bool,
    pub mesh_locality: Option<&'a LocalityLbSetting>,
    pub gateways: &'a GatewayTable,
}

fn xds_locality(l: &ModelLocality) -> Locality {
    Locality {
        region: l.region.clone(),
        zone: l.zone.clone(),
        sub_zone: l.subzone.clone(),
    }
}

fn health(h: Health) -> HealthStatus {
    match h {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Draining => HealthStatus::Draining,
    }
}

/// An endpoint placed for the proxy, before prioritizing.
struct Placed {
    locality: ModelLocality,
    endpoint: LbEndpoint,
    /// Labels used by `failoverPriority` (the endpoint's, with topology labels; shared).
    labels: Labels,
}

/// Builds the load assignment of one cluster for one proxy.
pub fn load_assignment(req: &EdsRequest<'_>, proxy: &ProxyNode) -> ClusterLoadAssignment {
    let selected: Vec<&Endpoint> = req
        .service
        .endpoints
        .iter()
        .filter(|e| e.target_port(req.port.port).is_some())
        .filter(|e| {
            req.subset_labels
                .is_none_or(|l| l.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
        })
        .collect();
    let placed = place(&selected, req, proxy);
    let setting = req
        .locality
        .or(req.mesh_locality)
        .filter(|s| s.enabled != Some(false));
    let localities = prioritize(placed, setting, req.outlier_detection, proxy);
    ClusterLoadAssignment {
        cluster_name: req.cluster_name.to_string(),
        localities,
        overprovisioning_factor: None,
    }
}

/// Same-network endpoints as they are; other networks' endpoints through their gateways.
fn place(selected: &[&Endpoint], req: &EdsRequest<'_>, proxy: &ProxyNode) -> Vec<Placed> {
    let mut out = Vec::new();
    // (network, locality) → (healthy count, any endpoint for metadata)
    let mut remote: BTreeMap<(NetworkId, ModelLocality), (u32, u32, &Endpoint)> = BTreeMap::new();
    for e in selected {
        let Some(target) = e.target_port(req.port.port) else {
            continue;
        };
        let same_network = proxy.in_network(&e.network);
        if same_network {
            let EndpointAddress::Ip(ip) = e.address else {
                continue;
            };
            out.push(Placed {
                locality: e.locality.clone(),
                labels: e.labels.clone(),
                endpoint: LbEndpoint {
                    address: SocketAddress::new(ip.to_string(), target),
                    health: health(e.health),
                    weight: e.weight.max(1),
                    metadata: Arc::new(EndpointMetadata {
                        cluster: e.cluster.shared(),
                        network: e.network.shared(),
                        identity: e.identity.as_ref().map(|i| i.to_string().into()),
                        mtls: e.sidecar,
                        gateway: false,
                        workload: e.workload.name.as_str().into(),
                        namespace: e.workload.namespace.as_str().into(),
                    }),
                },
            });
        } else if proxy.kind != ProxyKind::Router && e.sidecar {
            // A gateway never sends traffic on to another network; and another network is
            // reached only with mesh mTLS, whose SNI its gateway routes by — an endpoint without
            // a sidecar could not be reached there, so it is left out (as Istio does).
            let entry = remote
                .entry((e.network.clone(), e.locality.clone()))
                .or_insert((0, 0, e));
            entry.1 += e.weight.max(1);
            if e.health == Health::Healthy {
                entry.0 += e.weight.max(1);
            }
        }
    }
    for ((network, locality), (healthy, total, sample)) in remote {
        let Some(gws) = req.gateways.get(&network).filter(|g| !g.is_empty()) else {
            continue;
        };
        let reachable: Vec<&GatewayEndpoint> = gws.iter().filter(|g| g.reachable).collect();
        let (gws, cut_off) = if reachable.is_empty() {
            (gws.iter().collect(), true)
        } else {
            (reachable, false)
        };
        let ways = gws.len() as u32;
        let share = |count: u32| count.div_ceil(ways).max(1);
        for gw in gws {
            out.push(Placed {
                locality: locality.clone(),
                labels: sample.labels.clone(),
                endpoint: LbEndpoint {
                    address: SocketAddress::new(gw.address.to_string(), gw.port),
                    health: if healthy > 0 && !cut_off {
                        HealthStatus::Healthy
                    } else {
                        HealthStatus::Unhealthy
                    },
                    weight: share(if healthy > 0 { healthy } else { total }),
                    metadata: Arc::new(EndpointMetadata {
                        cluster: sample.cluster.shared(),
                        network: network.shared(),
                        identity: sample.identity.as_ref().map(|i| i.to_string().into()),
                        mtls: true,
                        gateway: true,
                        workload: "".into(),
                        namespace: sample.workload.namespace.as_str().into(),
                    }),
                },
            });
        }
    }
    out
}

/// Istio's proximity priority of an endpoint locality for a proxy locality, with `failover`.
fn locality_priority(
    proxy: &ModelLocality,
    ep: &ModelLocality,
    setting: Option<&LocalityLbSetting>,
) -> u32 {
    if !proxy.region.is_empty() && proxy.region == ep.region {
        if proxy.zone == ep.zone {
            if proxy.subzone == ep.subzone { 0 } else { 1 }
        } else {
            2
        }
    } else if setting.is_some_and(|s| {
        s.failover
            .iter()
            .any(|f| f.from == proxy.region && f.to == ep.region)
    }) {
        3
    } else {
        4
    }
}

/// The proxy's view of a topology label (its own labels, then its locality and network).
fn proxy_label(proxy: &ProxyNode, key: &str) -> Option<String> {
    if let Some(v) = proxy.labels.get(key) {
        return Some(v.clone());
    }
    let v = match key {
        "topology.kubernetes.io/region" => proxy.locality.region.clone(),
        "topology.kubernetes.io/zone" => proxy.locality.zone.clone(),
        "topology.istio.io/subzone" => proxy.locality.subzone.clone(),
        "topology.istio.io/network" => proxy.network.to_string(),
        "topology.istio.io/cluster" => proxy.cluster.to_string(),
        _ => return None,
    };
    (!v.is_empty()).then_some(v)
}

/// `region/zone/subzone` pattern with a trailing `*`.
fn locality_matches(pattern: &str, l: &ModelLocality) -> bool {
    let parts = [l.region.as_str(), l.zone.as_str(), l.subzone.as_str()];
    for (i, p) in pattern.split('/').enumerate() {
        if p == "*" {
            return true;
        }
        if parts.get(i).is_none_or(|v| *v != p) {
            return false;
        }
    }
    true
}

fn prioritize(
    placed: Vec<Placed>,
    setting: Option<&LocalityLbSetting>,
    outlier: bool,
    proxy: &ProxyNode,
) -> Vec<LocalityEndpoints> {
    let distribute = setting.and_then(|s| {
        s.distribute
            .iter()
            .find(|d| locality_matches(&d.from, &proxy.locality))
    });
    let failover_on = outlier && distribute.is_none();
    // (priority key, locality) → endpoints
    let mut groups: BTreeMap<((u32, u32), ModelLocality), Vec<LbEndpoint>> = BTreeMap::new();
    for p in placed {
        let key = if failover_on {
            let labels = setting
                .map(|s| s.failover_priority.as_slice())
                .unwrap_or_default();
            let matched = labels
                .iter()
                .take_while(|k| {
                    proxy_label(proxy, k).is_some_and(|v| p.labels.get(k.as_str()) == Some(&v))
                })
                .count();
            let label_priority = (labels.len() - matched) as u32;
            // With `failoverPriority` alone, labels decide; region failover orders within.
            let loc_priority =
                if !labels.is_empty() && setting.is_some_and(|s| s.failover.is_empty()) {
                    0
                } else {
                    locality_priority(&proxy.locality, &p.locality, setting)
                };
            (label_priority, loc_priority)
        } else {
            (0, 0)
        };
        groups
            .entry((key, p.locality))
            .or_default()
            .push(p.endpoint);
    }
    // Compact priorities to 0, 1, 2, ... (gRPC requires contiguous priorities).
    let mut ranks: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    for ((key, _), _) in groups.iter() {
        let next = ranks.len() as u32;
        ranks.entry(*key).or_insert(next);
    }
    let mut out: Vec<LocalityEndpoints> = groups
        .into_iter()
        .map(|((key, locality), endpoints)| LocalityEndpoints {
            weight: Some(endpoints.iter().map(|e| e.weight).sum::<u32>().max(1)),
            priority: ranks[&key],
            locality: xds_locality(&locality),
            endpoints,
        })
        .collect();
    if let Some(d) = distribute {
        apply_distribute(&mut out, d);
    }
    out
}

/// Locality weights from `distribute`: each `to` pattern's weight is shared by the localities
/// it matches in proportion to their endpoints; localities no pattern matches get no traffic.
fn apply_distribute(
    localities: &mut Vec<LocalityEndpoints>,
    d: &strait_config::istio::traffic::LocalityDistribute,
) {
    let model = |l: &Locality| ModelLocality::new(&l.region, &l.zone, &l.sub_zone);
    // Most specific matching pattern per locality.
    let pattern_of = |l: &Locality| -> Option<&String> {
        d.to.keys()
            .filter(|p| locality_matches(p, &model(l)))
            .max_by_key(|p| p.len())
    };
    let mut totals: BTreeMap<&String, u64> = BTreeMap::new();
    for le in localities.iter() {
        if let Some(p) = pattern_of(&le.locality) {
            *totals.entry(p).or_default() += le.endpoints.len() as u64;
        }
    }
    let weights: Vec<Option<u32>> = localities
        .iter()
        .map(|le| {
            let p = pattern_of(&le.locality)?;
            let share = u64::from(d.to[p]) * 1000 * le.endpoints.len() as u64 / totals[p].max(1);
            u32::try_from(share).ok().filter(|w| *w > 0)
        })
        .collect();
    let mut i = 0;
    localities.retain(|_| {
        let keep = weights[i].is_some();
        i += 1;
        keep
    });
    for (le, w) in localities.iter_mut().zip(weights.into_iter().flatten()) {
        le.weight = Some(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(r: &str, z: &str) -> ModelLocality {
        ModelLocality::new(r, z, "")
    }

    #[test]
    fn proximity_orders_zone_region_failover_then_the_rest() {
        let failover = LocalityLbSetting {
            failover: vec![strait_config::istio::traffic::LocalityFailover {
                from: "r1".into(),
                to: "r3".into(),
            }],
            ..Default::default()
        };
        let me = loc("r1", "z1");
        assert_eq!(locality_priority(&me, &loc("r1", "z1"), None), 0);
        assert_eq!(
            locality_priority(&me, &ModelLocality::new("r1", "z1", "s9"), None),
            1
        );
        assert_eq!(locality_priority(&me, &loc("r1", "z2"), None), 2);
        assert_eq!(locality_priority(&me, &loc("r3", "z1"), Some(&failover)), 3);
        assert_eq!(locality_priority(&me, &loc("r2", "z1"), Some(&failover)), 4);
    }

    #[test]
    fn locality_patterns() {
        assert!(locality_matches("r1/*", &loc("r1", "z")));
        assert!(locality_matches("*", &loc("r9", "z")));
        assert!(locality_matches("r1/z1/*", &loc("r1", "z1")));
        assert!(!locality_matches("r1/z2/*", &loc("r1", "z1")));
        assert!(locality_matches("r1/z1", &loc("r1", "z1")));
    }
}
