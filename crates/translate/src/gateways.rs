//! Where each network's east-west gateways are: addresses given in `meshNetworks` (IPs, DNS
//! names resolved by the caller) or the endpoints of a gateway service in the registry.

use std::net::IpAddr;

use strait_model::settings::GatewayAddress;
use strait_model::{EndpointAddress, Hostname, MeshModel};

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
                }),
                GatewayAddress::Dns(name) => {
                    out.extend(dns(name).into_iter().map(|ip| GatewayEndpoint {
                        address: ip,
                        port: gw.port,
                        locality: locality.clone(),
                    }))
                }
                GatewayAddress::RegistryService(host) => {
                    let host = Hostname::new(host);
                    for (key, view) in model.services() {
                        if key.host != host {
                            continue;
                        }
                        for e in view.endpoints.iter().filter(|e| e.network == *network) {
                            if let EndpointAddress::Ip(ip) = e.address {
                                out.push(GatewayEndpoint {
                                    address: ip,
                                    port: gw.port,
                                    locality: e.locality.clone(),
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
