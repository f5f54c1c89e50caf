//! The name table a sidecar's DNS proxy answers from (Istio's NDS): every service the proxy can
//! reach, at the address it should use — its cluster's virtual IP, else another cluster's
//! (a service that exists only in a remote cluster resolves with no stub Service), else the
//! address allocated to a ServiceEntry host; a headless service answers with its endpoints in
//! the proxy's own cluster and network, as Kubernetes DNS does, and each endpoint with a
//! `hostname` (a StatefulSet's pods) by its own name, `<hostname>.<service host>`, when it is on
//! the proxy's network (reachable directly, as Istio answers them) — the proxy's own cluster's
//! pod first when two clusters name one alike.

use strait_model::{ClusterId, EndpointAddress, MeshModel, ServiceOrigin, ServiceView};
use strait_xds::dns::{NameInfo, NameTable, REGISTRY_EXTERNAL, REGISTRY_KUBERNETES};

use crate::{MeshView, ProxyNode, scope};

/// The name table of `proxy`.
pub fn name_table(view: &MeshView<'_>, proxy: &ProxyNode) -> NameTable {
    name_table_of(&scope::visible_services(view, proxy), proxy)
}

/// The name table of a proxy that sees `visible` (its [`scope::visible_services`]): besides
/// them, only the proxy's cluster and network matter, so proxies alike in those share it.
pub fn name_table_of(visible: &[&ServiceView], proxy: &ProxyNode) -> NameTable {
    let mut table = NameTable::default();
    for s in visible.iter().copied() {
        let ips = addresses_for(s, proxy);
        if ips.is_empty() {
            continue;
        }
        let service = &s.service;
        let kubernetes = service.origin == ServiceOrigin::Kubernetes;
        let info = NameInfo {
            ips,
            registry: if kubernetes {
                REGISTRY_KUBERNETES
            } else {
                REGISTRY_EXTERNAL
            }
            .into(),
            short_name: if kubernetes {
                service.name.clone()
            } else {
                String::new()
            },
            namespace: if kubernetes {
                service.namespace.clone()
            } else {
                String::new()
            },
            alt_hosts: Vec::new(),
        };
        table.hosts.insert(service.host.as_str().to_string(), info);
    }
    for s in visible.iter().copied() {
        add_pod_names(
            &mut table,
            s,
            |e| proxy.in_network(&e.network),
            &proxy.cluster,
        );
    }
    table
}

/// The names of a headless Kubernetes service's endpoints that have a `hostname`
/// (`web-0.nginx.ns.svc.cluster.local`, short form `web-0.nginx`), for the endpoints `reachable`
/// says; an endpoint of `preferred` wins a name two clusters share.
fn add_pod_names(
    table: &mut NameTable,
    s: &ServiceView,
    reachable: impl Fn(&strait_model::Endpoint) -> bool,
    preferred: &ClusterId,
) {
    let service = &s.service;
    let headless = service.addresses.values().all(|a| a.is_empty());
    if !headless || service.origin != ServiceOrigin::Kubernetes || service.resolved_by_dns() {
        return;
    }
    let mut endpoints: Vec<&strait_model::Endpoint> = s
        .endpoints
        .iter()
        .filter(|e| e.hostname.is_some() && reachable(e))
        .collect();
    // The preferred cluster's endpoints first: they take a name before the others.
    endpoints.sort_by_key(|e| e.cluster != *preferred);
    for e in endpoints {
        let (Some(hostname), Some(ip)) = (&e.hostname, e.address.ip()) else {
            continue;
        };
        let host = format!("{hostname}.{}", service.host.as_str());
        if table.hosts.contains_key(&host) {
            continue;
        }
        table.hosts.insert(
            host,
            NameInfo {
                ips: vec![ip.to_string()],
                registry: REGISTRY_KUBERNETES.into(),
                short_name: format!("{hostname}.{}", service.name),
                namespace: service.namespace.clone(),
                alt_hosts: Vec::new(),
            },
        );
    }
}

/// What a cluster's own DNS (kube-dns) knows: its Kubernetes Services by full name, at their
/// cluster IPs, or a headless Service's endpoints in the cluster. No short forms (clients send
/// full names after their search domains) and nothing of other clusters — that is what the
/// sidecars' name tables add.
pub fn cluster_table(model: &MeshModel, cluster: &ClusterId) -> NameTable {
    let mut table = NameTable::default();
    for s in model.services_visible_from(cluster) {
        let service = &s.service;
        if service.origin != ServiceOrigin::Kubernetes
            || service.mirror_of.is_some()
            || !service.clusters.contains(cluster)
        {
            continue;
        }
        let mut ips: Vec<String> = match service.addresses.get(cluster) {
            Some(vips) if !vips.is_empty() => vips.clone(),
            _ => s
                .endpoints
                .iter()
                .filter(|e| e.cluster == *cluster)
                .filter_map(|e| e.address.ip().map(|ip| ip.to_string()))
                .collect(),
        };
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            continue;
        }
        add_pod_names(&mut table, s, |e| e.cluster == *cluster, cluster);
        table.hosts.insert(
            service.host.as_str().to_string(),
            NameInfo {
                ips,
                registry: REGISTRY_KUBERNETES.into(),
                ..NameInfo::default()
            },
        );
    }
    table
}

/// The addresses `proxy` should reach `s` by.
fn addresses_for(s: &ServiceView, proxy: &ProxyNode) -> Vec<String> {
    let vips = s
        .service
        .addresses
        .get(&proxy.cluster)
        .filter(|a| !a.is_empty())
        .or_else(|| s.service.addresses.values().find(|a| !a.is_empty()));
    if let Some(vips) = vips {
        // CIDR ranges match traffic; they are no answer to a name. Of the addresses the mesh
        // allocated, only those of the proxy's families.
        return vips
            .iter()
            .filter(|a| {
                a.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| !s.service.vip_allocated || proxy.families.has(ip))
            })
            .cloned()
            .collect();
    }
    if s.service.resolved_by_dns() {
        return Vec::new();
    }
    let mut ips: Vec<String> = s
        .endpoints
        .iter()
        .filter(|e| e.cluster == proxy.cluster && proxy.in_network(&e.network))
        .filter_map(|e| match e.address {
            EndpointAddress::Ip(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}
