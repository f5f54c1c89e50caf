//! Where each network's east-west gateways are: addresses given in `meshNetworks` (IPs, DNS
//! names resolved by the caller) or a gateway service in the registry — its load balancer's
//! addresses as the network's cluster publishes them, else its endpoints.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use strait_model::settings::GatewayAddress;
use strait_model::{EndpointAddress, Hostname, MeshModel, NetworkId};

use crate::eds::{GatewayEndpoint, GatewayTable};

/// Resolves every network's gateways. `dns` resolves DNS names (IO stays with the caller).
pub fn resolve(model: &MeshModel, dns: &dyn Fn(&str) -> Vec<IpAddr>) -> GatewayTable {
    let mut table = GatewayTable::new();
    for (network, gws) in &model.settings.gateways {
        let mut out = Vec::new();
        for gw in gws {
            let locality = gw.locality.clone().unwrap_or_default();
            match &gw.address {
                GatewayAddress::Ip(ip) => out.push(GatewayEndpoint {
                    address: *ip,
                    port: gw.port,
                    locality,
                    reachable: true,
                }),
                GatewayAddress::Dns(name) => {
                    out.extend(dns(name).into_iter().map(|ip| GatewayEndpoint {
                        address: ip,
                        port: gw.port,
                        locality: locality.clone(),
                        reachable: true,
                    }))
                }
                GatewayAddress::RegistryService(host) => {
                    let host = Hostname::new(host);
                    for (key, view) in model.services() {
                        if key.host != host {
                            continue;
                        }
                        // Istio's way: the gateway Service's load balancer, as published in
                        // the cluster(s) of this network.
                        let external = view
                            .service
                            .external_addresses
                            .get(network)
                            .map(Vec::as_slice)
                            .unwrap_or_default();
                        for address in external {
                            let ips = match address.parse::<IpAddr>() {
                                Ok(ip) => vec![ip],
                                Err(_) => dns(address),
                            };
                            out.extend(ips.into_iter().map(|ip| GatewayEndpoint {
                                address: ip,
                                port: gw.port,
                                locality: locality.clone(),
                                reachable: true,
                            }));
                        }
                        if !external.is_empty() {
                            continue;
                        }
                        // No load balancer published: the gateway's own endpoints, which other
                        // networks reach only when pod addresses are routable between them.
                        for e in view.endpoints.iter().filter(|e| e.network == *network) {
                            if let EndpointAddress::Ip(ip) = e.address {
                                out.push(GatewayEndpoint {
                                    address: ip,
                                    port: gw.port,
                                    locality: e.locality.clone(),
                                    reachable: true,
                                });
                            }
                        }
                    }
                }
            }
        }
        out.sort_by_key(|g| (g.address, g.port));
        out.dedup();
        table.insert(network.clone(), out);
    }
    table
}

/// Every gateway address in `table` (what the control plane probes).
pub fn addresses(table: &GatewayTable) -> BTreeSet<SocketAddr> {
    table
        .values()
        .flatten()
        .map(|g| SocketAddr::new(g.address, g.port))
        .collect()
}

/// Marks the gateways at `unreachable` addresses as not answering.
pub fn mark_unreachable(table: &mut GatewayTable, unreachable: &BTreeSet<SocketAddr>) {
    for g in table.values_mut().flatten() {
        g.reachable = !unreachable.contains(&SocketAddr::new(g.address, g.port));
    }
}

/// Networks whose gateways differ between `a` and `b` (added, removed, moved, or reachable
/// differently): only endpoints on those networks are placed differently.
pub fn changed_networks(a: &GatewayTable, b: &GatewayTable) -> BTreeSet<NetworkId> {
    a.keys()
        .chain(b.keys())
        .filter(|n| a.get(*n) != b.get(*n))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use strait_config::{ConfigSet, LoadOptions, load_str};
    use strait_model::{ClusterId, ClusterSource, MeshSettings, NetworkId};

    use super::*;

    const MESH: &str = r#"
apiVersion: strait.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  meshNetworks:
    network1:
      endpoints: [{fromRegistry: cluster1}]
      gateways: [{registryServiceName: istio-eastwestgateway.istio-system.svc.cluster.local, port: 15443}]
    network2:
      endpoints: [{fromRegistry: cluster2}]
      gateways: [{registryServiceName: istio-eastwestgateway.istio-system.svc.cluster.local, port: 15443}]
    network3:
      endpoints: [{fromRegistry: cluster3}]
      gateways: [{registryServiceName: istio-eastwestgateway.istio-system.svc.cluster.local, port: 15443}]
"#;

    /// A cluster with the east-west gateway's Service (with `status`) and its pod.
    fn cluster(name: &str, pod_ip: &str, status: &str) -> ClusterSource {
        let yaml = format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: istio-eastwestgateway, namespace: istio-system}}
spec:
  type: LoadBalancer
  selector: {{istio: eastwestgateway}}
  ports: [{{name: tls, port: 15443}}]
{status}
---
apiVersion: v1
kind: Pod
metadata: {{name: gw, namespace: istio-system, labels: {{istio: eastwestgateway}}}}
status: {{podIP: {pod_ip}}}
"#
        );
        let report = load_str(&yaml, name, &LoadOptions::default());
        assert!(report.diagnostics().all(|d| !d.is_error()), "{yaml}");
        ClusterSource {
            id: ClusterId::new(name),
            network: NetworkId::new(""),
            config: Arc::new(ConfigSet::from_resources(report.into_resources())),
        }
    }

    #[test]
    fn registry_gateways_are_their_load_balancers_addresses_else_their_endpoints() {
        let mesh = load_str(MESH, "mesh.yaml", &LoadOptions::default()).into_resources();
        let config = ConfigSet::from_resources(mesh);
        let settings = Arc::new(MeshSettings::from_config(&config.mesh_configs[0].spec));
        let model = MeshModel::build(
            settings,
            &[
                cluster(
                    "cluster1",
                    "10.1.0.5",
                    "status: {loadBalancer: {ingress: [{hostname: gw1.example.com}]}}",
                ),
                cluster(
                    "cluster2",
                    "10.2.0.5",
                    "status: {loadBalancer: {ingress: [{ip: 192.0.2.20}]}}",
                ),
                cluster("cluster3", "10.3.0.5", ""),
            ],
        );
        let table = resolve(&model, &|name: &str| {
            assert_eq!(name, "gw1.example.com");
            vec!["192.0.2.10".parse().unwrap()]
        });
        let addresses = |n: &str| -> Vec<String> {
            table[&NetworkId::new(n)]
                .iter()
                .map(|g| format!("{}:{}", g.address, g.port))
                .collect()
        };
        assert_eq!(addresses("network1"), ["192.0.2.10:15443"]);
        assert_eq!(addresses("network2"), ["192.0.2.20:15443"]);
        assert_eq!(addresses("network3"), ["10.3.0.5:15443"]);
    }
}
