//! What loopback mode adds to a cluster's manifests (pure): for each pod with a sidecar, the
//! Sidecar resource a user without iptables writes (Istio's `captureMode: NONE`) — its app's
//! port bound on the pod's own address in front of the app on `127.0.0.1`, and every service
//! port of the mesh bound there for the app to call. So every pod's ports live side by side on
//! one host's loopback. (Gateways need no resource: their proxies bind wildcard listeners to
//! their load balancer address, `strait proxy --wildcard-bind`, as a Gateway selecting gateways
//! of several clusters cannot name one address.)

use std::collections::BTreeMap;

use serde_json::{Value, json};
use strait_config::ConfigSet;
use strait_config::kube::IntOrString;
use strait_model::Protocol;

use crate::plan::{App, POD_LABEL, Plan, PodPlan};

/// Ports a proxy keeps for itself on its address (admin 15000, inbound 15006, health 15021,
/// metrics 15090, ...): never bound as egress listeners.
const PROXY_PORTS: std::ops::RangeInclusive<u16> = 15000..=15099;

/// The Sidecar resources of the pods with sidecars in `clusters` — those whose configuration a
/// control plane reads from its own cluster, as Istio reads a remote cluster's from its
/// primary — as YAML documents, and the service ports left out because this user may not
/// bind them (below `lowest_port`, Linux's `ip_unprivileged_port_start`). `configs` are every
/// cluster's manifests (the ports an app may call are those of the whole mesh's services,
/// except the mesh's own in `istio-system`).
pub fn sidecars(
    clusters: &[&str],
    plan: &Plan,
    configs: &[&ConfigSet],
    lowest_port: u16,
) -> (String, Vec<u16>) {
    let (egress_ports, privileged): (BTreeMap<u16, Protocol>, BTreeMap<u16, Protocol>) =
        mesh_ports(configs)
            .into_iter()
            .partition(|(port, _)| *port >= lowest_port);
    let mut out = String::new();
    for pod in plan
        .pods
        .iter()
        .filter(|p| clusters.contains(&p.cluster.as_str()) && p.sidecar)
    {
        out.push_str("---\n");
        out.push_str(&sidecar(pod, plan, configs, &egress_ports).to_string());
        out.push('\n');
    }
    (out, privileged.into_keys().collect())
}

/// One pod's Sidecar: selects the pod alone (its [`POD_LABEL`]), named after its cluster and
/// itself.
fn sidecar(
    pod: &PodPlan,
    plan: &Plan,
    configs: &[&ConfigSet],
    egress_ports: &BTreeMap<u16, Protocol>,
) -> Value {
    let ip = plan.listen_ip(pod).to_string();
    let mut ingress = Vec::new();
    if let Some(port) = pod.app.port() {
        let protocol = served_protocol(pod, configs, port);
        ingress.push(json!({
            "port": {"number": port, "protocol": protocol.as_str(), "name": format!("app-{port}")},
            "bind": ip,
            "captureMode": "NONE",
            "defaultEndpoint": pod.app_listen.to_string(),
        }));
    }
    let egress: Vec<Value> = egress_ports
        .iter()
        .filter(|(port, _)| Some(**port) != pod.app.port() && !PROXY_PORTS.contains(port))
        .map(|(port, protocol)| {
            json!({
                "port": {"number": port, "protocol": protocol.as_str(), "name": format!("egress-{port}")},
                "bind": ip,
                "captureMode": "NONE",
                "hosts": ["*/*"],
            })
        })
        .collect();
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {
            "name": format!("strait-up-{}-{}", pod.cluster, pod.name),
            "namespace": pod.namespace,
        },
        "spec": {
            "workloadSelector": {"labels": {POD_LABEL: pod.labels.get(POD_LABEL)}},
            "ingress": ingress,
            "egress": egress,
        },
    })
}

/// Every port of every Service in the mesh, with the protocol a listener on it speaks: HTTP
/// when any service there is HTTP (its routes then tell services apart by host), else TCP.
fn mesh_ports(configs: &[&ConfigSet]) -> BTreeMap<u16, Protocol> {
    let mut out: BTreeMap<u16, Protocol> = BTreeMap::new();
    let services = configs
        .iter()
        .flat_map(|c| &c.services)
        .filter(|s| s.meta.namespace != "istio-system");
    for svc in services {
        for p in &svc.spec.ports {
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let protocol = Protocol::for_kubernetes_port(
                p.name.as_deref(),
                p.app_protocol.as_deref(),
                p.protocol.as_deref(),
            );
            if protocol == Protocol::Udp {
                continue;
            }
            let listener = if protocol.is_http() {
                Protocol::Http
            } else {
                Protocol::Tcp
            };
            let e = out.entry(port).or_insert(listener);
            if listener == Protocol::Http {
                *e = Protocol::Http;
            }
        }
    }
    out
}

/// The protocol of `pod`'s app on `port`: as the Services selecting the pod declare it, else
/// what the demo app speaks.
fn served_protocol(pod: &PodPlan, configs: &[&ConfigSet], port: u16) -> Protocol {
    let declared = configs
        .iter()
        .flat_map(|c| &c.services)
        .filter(|s| s.meta.namespace == pod.namespace)
        .filter(|s| {
            s.spec.selector.as_ref().is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
            })
        })
        .flat_map(|s| &s.spec.ports)
        .filter(|p| match &p.target_port {
            Some(IntOrString::Int(t)) => *t == i64::from(port),
            // A named target port: the demo apps have one port, so it is this one.
            Some(IntOrString::Str(_)) => true,
            None => p.port == i32::from(port),
        })
        .map(|p| {
            Protocol::for_kubernetes_port(
                p.name.as_deref(),
                p.app_protocol.as_deref(),
                p.protocol.as_deref(),
            )
        })
        .find(|p| *p != Protocol::Unknown);
    declared.unwrap_or(match pod.app {
        App::HelloWorld { .. } => Protocol::Http,
        App::GrpcEcho { .. } => Protocol::Grpc,
        _ => Protocol::Tcp,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::plan::tests::config;
    use crate::plan::{Runtime, plan};

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: sample, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: helloworld, namespace: sample}
spec: {ports: [{port: 5000, name: http}], selector: {app: helloworld}}
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: sample}
spec: {ports: [{port: 80, name: http}, {port: 9000, name: tcp}], selector: {app: legacy}}
---
apiVersion: v1
kind: Service
metadata: {name: istio-eastwestgateway, namespace: istio-system}
spec: {ports: [{port: 15443, name: tls}], selector: {istio: eastwestgateway}}
---
apiVersion: v1
kind: Pod
metadata: {name: hw, namespace: sample, labels: {app: helloworld}}
spec: {containers: [{name: hw, image: strait/helloworld, ports: [{containerPort: 5000}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: sample, labels: {app: sleep}}
spec: {containers: [{name: c, image: strait/client}]}
---
apiVersion: v1
kind: Pod
metadata: {name: gw, namespace: istio-system, labels: {istio: eastwestgateway}}
spec: {containers: [{name: istio-proxy, image: strait/strait}]}
"#;

    fn loopback_plan(configs: &[ConfigSet]) -> Plan {
        let topology = crate::topology::parse(
            "apiVersion: strait.dev/v1alpha1\nkind: Topology\nmetadata: {name: t}\nspec:\n  clusters:\n  - {name: c1, network: n1}\n",
            Path::new("."),
        )
        .unwrap();
        plan(&topology, configs, "st", Runtime::Loopback).unwrap()
    }

    #[test]
    fn each_sidecar_binds_its_app_port_and_the_mesh_ports_on_its_own_address() {
        let configs = [config(CLUSTER)];
        let plan = loopback_plan(&configs);
        let (text, left_out) = sidecars(&["c1"], &plan, &[&configs[0]], 1024);
        assert_eq!(left_out, [80], "below the first unprivileged port");
        let docs: Vec<Value> = text
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2, "hw and sleep, not the gateway");
        let hw = &docs[0];
        assert_eq!(hw["metadata"]["name"], "strait-up-c1-hw");
        assert_eq!(hw["spec"]["workloadSelector"]["labels"][POD_LABEL], "c1.hw");
        let ingress = &hw["spec"]["ingress"][0];
        assert_eq!(ingress["bind"], "127.1.1.10");
        assert_eq!(ingress["port"]["number"], 5000);
        assert_eq!(ingress["port"]["protocol"], "HTTP");
        assert_eq!(ingress["defaultEndpoint"], "127.0.0.1:20000");
        // hw calls 9000 (its own 5000 is its ingress; 15443 is the mesh's own, 80 privileged).
        let ports = |doc: &Value| -> Vec<u64> {
            doc["spec"]["egress"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["port"]["number"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(ports(hw), [9000]);
        let sleep = &docs[1];
        assert_eq!(sleep["spec"]["ingress"], json!([]));
        assert_eq!(ports(sleep), [5000, 9000]);
        let e5000 = &sleep["spec"]["egress"][0];
        assert_eq!(
            (e5000["bind"].clone(), e5000["port"]["protocol"].clone()),
            (json!("127.1.1.11"), json!("HTTP"))
        );
        assert_eq!(sleep["spec"]["egress"][1]["port"]["protocol"], "TCP");
        assert_eq!(
            sidecars(&["c1"], &plan, &[&configs[0]], 1).1,
            Vec::<u16>::new()
        );
        assert!(sidecars(&["c2"], &plan, &[&configs[0]], 1).0.is_empty());
    }
}
