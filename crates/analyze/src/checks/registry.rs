//! Services as declared: ServiceEntry conflicts, ports without a protocol, TrafficSplit backends,
//! cross-cluster merge conflicts, `.global` hosts.

use std::collections::BTreeMap;

use strait_config::FieldPath;
use strait_config::istio::workload::ServiceEntry;
use strait_config::resource::Object;
use strait_model::{Hostname, Protocol};

use crate::context::{Context, at};
use crate::message::{Message, codes};

pub(super) fn service_entry_conflicts(ctx: &Context<'_>, out: &mut Vec<Message>) {
    let mut hosts: BTreeMap<&str, Vec<(&Object<ServiceEntry>, usize)>> = BTreeMap::new();
    let mut addresses: BTreeMap<&str, Vec<(&Object<ServiceEntry>, usize)>> = BTreeMap::new();
    for se in ctx.all(|c| &c.service_entries) {
        for (i, h) in se.spec.hosts.iter().enumerate() {
            hosts.entry(h).or_default().push((se, i));
        }
        for (i, a) in se.spec.addresses.iter().enumerate() {
            addresses.entry(a).or_default().push((se, i));
        }
    }
    let name = |se: &Object<ServiceEntry>| format!("{}/{}", se.meta.namespace, se.meta.name);
    for (host, list) in hosts {
        let distinct: Vec<String> = list
            .iter()
            .map(|(se, _)| name(se))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if distinct.len() < 2 {
            continue;
        }
        for (se, i) in &list {
            out.push(at(
                codes::SERVICE_ENTRY_HOST_CONFLICT,
                "ServiceEntry",
                se,
                &FieldPath::root().field("spec").field("hosts").index(*i),
                format!("host \"{host}\" is also defined by ServiceEntry {}; their ports and endpoints are merged, which is rarely intended", distinct.iter().filter(|n| **n != name(se)).cloned().collect::<Vec<_>>().join(", ")),
            ));
        }
    }
    for (address, list) in addresses {
        let distinct_hosts: std::collections::BTreeSet<&String> = list
            .iter()
            .flat_map(|(se, _)| se.spec.hosts.iter())
            .collect();
        let distinct_entries: std::collections::BTreeSet<String> =
            list.iter().map(|(se, _)| name(se)).collect();
        if distinct_entries.len() < 2 || distinct_hosts.len() < 2 {
            continue;
        }
        for (se, i) in &list {
            out.push(at(
                codes::SERVICE_ENTRY_ADDRESS_CONFLICT,
                "ServiceEntry",
                se,
                &FieldPath::root().field("spec").field("addresses").index(*i),
                format!("address {address} is also used by ServiceEntry {} for other hosts: traffic to it cannot be told apart; give each ServiceEntry its own address", distinct_entries.iter().filter(|n| **n != name(se)).cloned().collect::<Vec<_>>().join(", ")),
            ));
        }
    }
}

/// Service ports whose protocol neither the name, `appProtocol` nor `protocol` gives.
pub(super) fn undetermined_protocols(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for svc in ctx.all(|c| &c.services) {
        for (i, p) in svc.spec.ports.iter().enumerate() {
            let proto = Protocol::for_kubernetes_port(
                p.name.as_deref(),
                p.app_protocol.as_deref(),
                p.protocol.as_deref(),
            );
            if proto == Protocol::Unknown {
                let name = p.name.clone().unwrap_or_default();
                out.push(at(
                    codes::PORT_PROTOCOL_UNDETERMINED,
                    "Service",
                    svc,
                    &FieldPath::root().field("spec").field("ports").index(i),
                    format!(
                        "port {} ({}) gives no protocol: Strait detects it on each connection, which delays server-first protocols; name the port <protocol>[-<suffix>] (http-web, grpc, tcp-db) or set appProtocol",
                        p.port,
                        if name.is_empty() { "unnamed".to_string() } else { format!("name \"{name}\"") }
                    ),
                ));
            }
        }
    }
    for se in ctx.all(|c| &c.service_entries) {
        for (i, p) in se.spec.ports.iter().enumerate() {
            if p.protocol.as_deref().unwrap_or("").is_empty() {
                out.push(at(
                    codes::PORT_PROTOCOL_UNDETERMINED,
                    "ServiceEntry",
                    se,
                    &FieldPath::root().field("spec").field("ports").index(i).field("protocol"),
                    format!("port {} (\"{}\") has no protocol: Strait detects it on each connection; set protocol (HTTP, GRPC, TCP, TLS, ...)", p.number, p.name),
                ));
            }
        }
    }
}

pub(super) fn traffic_split_backends(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for ts in ctx.all(|c| &c.traffic_splits) {
        let spec = FieldPath::root().field("spec");
        let check = |name: &str, path: FieldPath, what: &str, out: &mut Vec<Message>| {
            if name.is_empty() {
                return;
            }
            let host = ctx.resolve(name, &ts.meta.namespace);
            if ctx.find_service(&host).is_none() {
                out.push(at(
                    codes::TRAFFIC_SPLIT_BACKEND_NOT_FOUND,
                    "TrafficSplit",
                    ts,
                    &path,
                    format!("{what} \"{name}\" does not exist ({host} is not defined in any cluster); a mirrored service is named <service>-<cluster> once the cluster is linked"),
                ));
            }
        };
        check(&ts.spec.service, spec.field("service"), "root service", out);
        for (i, b) in ts.spec.backends.iter().enumerate() {
            check(
                &b.service,
                spec.field("backends").index(i).field("service"),
                "backend service",
                out,
            );
        }
    }
}

pub(super) fn merge_conflicts(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for c in ctx.model.conflicts() {
        let mut m = Message::new(
            codes::SERVICE_PORT_CONFLICT,
            format!("service \"{}\": {}", c.host, c.message),
        );
        m.resource = Some(format!("Service {}", c.host));
        out.push(m);
    }
}

/// `.global` is a real top-level domain: accepted, but worth a note.
pub(super) fn global_hosts(ctx: &Context<'_>, out: &mut Vec<Message>) {
    for se in ctx.all(|c| &c.service_entries) {
        for (i, h) in se.spec.hosts.iter().enumerate() {
            if Hostname::new(h).as_str().ends_with(".global") {
                out.push(at(
                    codes::GLOBAL_SUFFIX_HOST,
                    "ServiceEntry",
                    se,
                    &FieldPath::root().field("spec").field("hosts").index(i),
                    format!("\"{h}\" is under .global, a real top-level domain that Istio's old multicluster guide used; Strait resolves it inside the mesh, but a name under a domain you own cannot collide with the Internet"),
                ));
            }
        }
    }
}
