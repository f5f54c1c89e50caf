//! The manifests a local cluster's control plane reads: the user's documents with what a
//! Kubernetes cluster would have added — each Pod's `status.podIP` and node (a Node labelled
//! with the cluster's locality, where Istio reads an endpoint's locality), a cluster IP for
//! Services without one, and the load balancer's address in an east-west gateway Service's
//! `status`.
//! Pure: text in, text out (each document re-written as JSON, which is YAML).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use strait_config::yaml::split_documents;

use crate::plan::{App, POD_LABEL, Plan, TLS_MODE_LABEL};

/// Rewrites one manifest file of `cluster`. `label` names the file in errors.
pub fn rewrite(text: &str, label: &str, cluster: &str, plan: &Plan) -> Result<String, String> {
    let mut out = String::new();
    for doc in split_documents(text) {
        let mut value: Value = serde_saphyr::from_str(&doc.text).map_err(|e| {
            format!(
                "{label}: document {} (line {}): {e}",
                doc.index,
                doc.line_offset + 1
            )
        })?;
        if value.is_null() {
            continue;
        }
        patch(&mut value, cluster, plan);
        out.push_str("---\n");
        out.push_str(&value.to_string());
        out.push('\n');
    }
    Ok(out)
}

/// The one node of a local cluster.
pub fn node_name(cluster: &str) -> String {
    format!("{cluster}-node")
}

/// The Node document of a local cluster, labelled with its locality (`region/zone[/subzone]`)
/// as a cloud labels its nodes.
pub fn node(cluster: &str, locality: Option<&str>) -> String {
    let mut labels = serde_json::Map::new();
    let parts: Vec<&str> = locality.map(|l| l.split('/').collect()).unwrap_or_default();
    for (key, value) in [
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.istio.io/subzone",
    ]
    .into_iter()
    .zip(parts)
    {
        labels.insert(key.into(), json!(value));
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node_name(cluster), "labels": labels},
    });
    format!("---\n{doc}\n")
}

/// The control plane of a primary cluster as Kubernetes would list it: its pod at `ip` and,
/// unless the manifests define it (`with_service` false), the `istiod` Service in
/// `istio-system` — so a gateway can pass 15012 through to it for remote clusters (Istio's
/// `expose-istiod.yaml`).
pub fn control_plane(cluster: &str, ip: std::net::Ipv4Addr, with_service: bool) -> String {
    let labels = json!({"app": "istiod", "istio": "pilot"});
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "istiod", "namespace": "istio-system", "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [
                {"name": "grpc-xds", "port": 15010},
                {"name": "https-dns", "port": 15012},
                {"name": "http-monitoring", "port": 15014},
            ],
        },
    });
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("istiod-{cluster}"), "namespace": "istio-system", "labels": labels},
        "spec": {
            "serviceAccountName": "istiod",
            "nodeName": node_name(cluster),
            "containers": [{"name": "discovery", "image": "strait/strait"}],
        },
        "status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    if with_service {
        format!("---\n{service}\n---\n{pod}\n")
    } else {
        format!("---\n{pod}\n")
    }
}

fn patch(doc: &mut Value, cluster: &str, plan: &Plan) {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api != "v1" {
        return;
    }
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    match kind.as_str() {
        "Pod" => {
            if let Some(pod) = plan
                .pods
                .iter()
                .find(|p| p.cluster == cluster && p.namespace == namespace && p.name == name)
            {
                if pod.sidecar {
                    // What Istio's sidecar injector leaves on a pod: peers use mesh mTLS to it.
                    doc["metadata"]["labels"][TLS_MODE_LABEL] = json!("istio");
                    doc["metadata"]["annotations"]["sidecar.istio.io/status"] =
                        json!(r#"{"containers":["istio-proxy"]}"#);
                }
                if let Some(own) = pod.labels.get(POD_LABEL) {
                    doc["metadata"]["labels"][POD_LABEL] = json!(own);
                }
                if doc.pointer("/spec/nodeName").is_none() {
                    doc["spec"]["nodeName"] = json!(node_name(cluster));
                }
                doc["status"] = json!({
                    "phase": "Running",
                    "podIP": pod.ip.to_string(),
                    "conditions": [{"type": "Ready", "status": "True"}],
                });
            }
        }
        "Service" => {
            if let Some(vip) = plan
                .vips
                .get(cluster)
                .and_then(|v| v.get(&format!("{namespace}/{name}")))
                && let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("clusterIP".into(), json!(vip.to_string()));
            }
            let selector: BTreeMap<String, String> = doc
                .pointer("/spec/selector")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default();
            if selector.is_empty() {
                return;
            }
            let ingress: Vec<Value> = plan
                .pods
                .iter()
                .filter(|p| p.cluster == cluster && p.namespace == namespace)
                .filter(|p| p.app == App::Gateway)
                .filter(|p| selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                .filter_map(|p| p.wan)
                .map(|ip| json!({"ip": ip.to_string()}))
                .collect();
            if !ingress.is_empty() {
                doc["status"] = json!({"loadBalancer": {"ingress": ingress}});
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::plan::{PodPlan, Runtime};

    #[test]
    fn pods_get_addresses_services_vips_and_gateways_load_balancers() {
        let pod =
            |name: &str, ns: &str, app: App, wan: Option<Ipv4Addr>, label: (&str, &str)| PodPlan {
                cluster: "c1".into(),
                namespace: ns.into(),
                name: name.into(),
                netns: String::new(),
                network: "n1".into(),
                ip: Ipv4Addr::new(10, 1, 1, 10),
                wan,
                labels: BTreeMap::from([(label.0.to_string(), label.1.to_string())]),
                service_account: "default".into(),
                sidecar: app != App::Gateway,
                app,
                locality: None,
                concurrency: None,
                app_listen: "0.0.0.0:80".parse().unwrap(),
            };
        let plan = Plan {
            prefix: "st".into(),
            runtime: Runtime::Namespaces,
            networks: vec![],
            control_planes: vec![],
            pods: vec![
                pod(
                    "hw",
                    "sample",
                    App::Client { url: None },
                    None,
                    ("app", "hw"),
                ),
                pod(
                    "gw",
                    "istio-system",
                    App::Gateway,
                    Some(Ipv4Addr::new(10, 255, 0, 100)),
                    ("istio", "eastwestgateway"),
                ),
            ],
            vips: BTreeMap::from([(
                "c1".into(),
                BTreeMap::from([("sample/hw".into(), Ipv4Addr::new(10, 200, 0, 10))]),
            )]),
            exported: BTreeMap::new(),
        };
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: hw, namespace: sample}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: hw, namespace: sample}\nspec: {selector: {app: hw}, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: gw, namespace: istio-system}\nspec: {selector: {istio: eastwestgateway}, ports: [{port: 15443}]}\n";
        let out = rewrite(text, "t.yaml", "c1", &plan).unwrap();
        assert!(out.contains(r#""podIP":"10.1.1.10""#), "{out}");
        assert!(out.contains(r#""nodeName":"c1-node""#), "{out}");
        let node = node("c1", Some("region1/zone1"));
        assert!(
            node.contains(r#""topology.kubernetes.io/zone":"zone1""#),
            "{node}"
        );
        assert!(
            out.contains(r#""security.istio.io/tlsMode":"istio""#),
            "{out}"
        );
        assert!(out.contains(r#""clusterIP":"10.200.0.10""#), "{out}");
        assert!(
            out.contains(r#""ingress":[{"ip":"10.255.0.100"}]"#),
            "{out}"
        );
        let e = rewrite("a: [", "bad.yaml", "c1", &plan).unwrap_err();
        assert!(e.starts_with("bad.yaml: document 1 (line 1)"), "{e}");
    }
}
