//! Table tests of the model built from realistic manifests.

use std::collections::BTreeSet;
use std::sync::Arc;

use strait_config::{ConfigSet, LoadOptions, load_str};

use crate::*;

fn config(yaml: &str) -> Arc<ConfigSet> {
    let report = load_str(yaml, "test.yaml", &LoadOptions::default());
    let errors: Vec<String> = report
        .diagnostics()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(
        errors.is_empty(),
        "test manifests must be valid: {errors:?}"
    );
    Arc::new(ConfigSet::from_resources(report.into_resources()))
}

fn cluster(id: &str, network: &str, yaml: &str) -> ClusterSource {
    ClusterSource {
        id: ClusterId::new(id),
        network: NetworkId::new(network),
        config: config(yaml),
    }
}

/// One cluster's part of the model, built from `yaml` (default network).
pub(crate) fn view_of(id: &str, yaml: &str) -> ClusterView {
    build_cluster(&cluster(id, "", yaml), &MeshSettings::default())
}

const HELLOWORLD_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: helloworld, namespace: sample, labels: {app: helloworld}}
spec:
  ports: [{port: 5000, name: http}]
  selector: {app: helloworld}
"#;

fn helloworld_pod(name: &str, version: &str, ip: &str, node: &str) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: sample, labels: {{app: helloworld, version: {version}}}}}
spec:
  nodeName: {node}
  serviceAccountName: helloworld
  containers: [{{name: helloworld, image: hw, ports: [{{containerPort: 5000}}]}}]
status: {{podIP: {ip}, phase: Running}}
"#
    )
}

fn node(name: &str, region: &str, zone: &str) -> String {
    format!(
        "\n---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    topology.kubernetes.io/region: {region}\n    topology.kubernetes.io/zone: {zone}\n"
    )
}

fn two_clusters() -> MeshModel {
    let c1 = format!(
        "{HELLOWORLD_SERVICE}{}{}",
        helloworld_pod("hw-v1", "v1", "10.1.0.5", "n1"),
        node("n1", "region1", "zone1")
    );
    let c2 = format!(
        "{HELLOWORLD_SERVICE}{}{}",
        helloworld_pod("hw-v2", "v2", "10.2.0.7", "n2"),
        node("n2", "region2", "zone2")
    );
    let settings = Arc::new(MeshSettings {
        trust_domain: "company.com".into(),
        ..Default::default()
    });
    MeshModel::build(
        settings,
        &[
            cluster("cluster1", "network1", &c1),
            cluster("cluster2", "network2", &c2),
        ],
    )
}

#[test]
fn same_named_services_of_two_clusters_merge_and_keep_every_endpoints_origin() {
    let model = two_clusters();
    let host = Hostname::new("helloworld.sample.svc.cluster.local");
    let view = model
        .service(&host, &ClusterId::new("cluster1"))
        .expect("merged service");
    assert_eq!(view.service.clusters.len(), 2);
    assert_eq!(
        view.service.ports,
        vec![ServicePort {
            name: "http".into(),
            port: 5000,
            protocol: Protocol::Http,
            target_port: None,
        }]
    );
    assert_eq!(view.endpoints.len(), 2);
    let e1 = &view.endpoints[0];
    assert_eq!(e1.address, EndpointAddress::Ip("10.1.0.5".parse().unwrap()));
    assert_eq!(
        (e1.cluster.as_str(), e1.network.as_str()),
        ("cluster1", "network1")
    );
    assert_eq!(e1.locality, Locality::new("region1", "zone1", ""));
    assert_eq!(
        e1.identity.as_ref().unwrap().to_string(),
        "spiffe://company.com/ns/sample/sa/helloworld"
    );
    assert_eq!(e1.target_port(5000), Some(5000));
    assert_eq!(e1.labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(
        e1.labels
            .get("topology.istio.io/cluster")
            .map(String::as_str),
        Some("cluster1"),
        "topology labels let subsets select a cluster"
    );
    let e2 = &view.endpoints[1];
    assert_eq!(
        (e2.cluster.as_str(), e2.network.as_str()),
        ("cluster2", "network2")
    );
    assert_eq!(e2.locality.region, "region2");
    assert_eq!(e2.health, Health::Healthy);
}

#[test]
fn cluster_local_services_are_not_merged() {
    let dns = "apiVersion: v1\nkind: Service\nmetadata: {name: kube-dns, namespace: kube-system}\nspec: {ports: [{port: 53, name: dns}], selector: {k8s-app: kube-dns}}\n";
    let pod = |ip: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}\nstatus: {{podIP: {ip}}}\n"
        )
    };
    let model = MeshModel::build(
        Arc::new(MeshSettings::default()),
        &[
            cluster("c1", "", &format!("{dns}{}", pod("10.1.0.2"))),
            cluster("c2", "", &format!("{dns}{}", pod("10.2.0.2"))),
        ],
    );
    let host = Hostname::new("kube-dns.kube-system.svc.cluster.local");
    let from_c1 = model.service(&host, &ClusterId::new("c1")).unwrap();
    let from_c2 = model.service(&host, &ClusterId::new("c2")).unwrap();
    assert_eq!(from_c1.endpoints.len(), 1);
    assert_eq!(from_c1.endpoints[0].cluster.as_str(), "c1");
    assert_eq!(from_c2.endpoints[0].cluster.as_str(), "c2");
    assert_eq!(
        model.services_visible_from(&ClusterId::new("c1")).count(),
        1
    );
}

#[test]
fn network_comes_from_pod_label_then_namespace_then_mesh_networks_then_cluster() {
    let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: labelled, labels: {topology.istio.io/network: ns-net}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: labelled, labels: {topology.istio.io/network: pod-net}}
status: {podIP: 10.9.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: labelled}
status: {podIP: 10.9.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: plain}
status: {podIP: 172.16.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: plain}
status: {podIP: 10.9.0.4}
"#;
    let mesh: strait_config::mesh::MeshConfig = {
        let r = load_str(
            "apiVersion: strait.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: m}\nspec:\n  meshNetworks:\n    cidr-net:\n      endpoints: [{fromCidr: 172.16.0.0/12}]\n      gateways: [{address: gw.example.com, port: 15443}]\n",
            "mesh.yaml",
            &LoadOptions::default(),
        );
        match r.into_resources().next().unwrap() {
            strait_config::Resource::MeshConfig(o) => o.spec.clone(),
            _ => unreachable!(),
        }
    };
    let settings = Arc::new(MeshSettings::from_config(&mesh));
    let model = MeshModel::build(settings.clone(), &[cluster("c1", "cluster-net", yaml)]);
    let net = |name: &str| {
        model
            .workloads()
            .iter()
            .find(|w| w.name == name)
            .unwrap()
            .network
            .to_string()
    };
    assert_eq!(net("a"), "pod-net");
    assert_eq!(net("b"), "ns-net");
    assert_eq!(net("c"), "cidr-net");
    assert_eq!(net("d"), "cluster-net");
    let gw = &settings.gateways[&NetworkId::new("cidr-net")][0];
    assert_eq!(
        gw.address,
        settings::GatewayAddress::Dns("gw.example.com".into()),
        "gateways may be DNS names"
    );
}

#[test]
fn endpoint_slices_give_health_zones_and_named_target_ports() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: prod}
spec:
  ports: [{name: grpc-api, port: 8080, targetPort: api}]
  selector: {app: api}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-abc, namespace: prod, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: grpc-api, port: 9090}]
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
  zone: zone-a
  hostname: api-0
- addresses: [10.0.0.2]
  conditions: {ready: false}
- addresses: [10.0.0.3]
  conditions: {ready: false, terminating: true}
"#;
    let model = MeshModel::build(
        Arc::new(MeshSettings::default()),
        &[cluster("c1", "", yaml)],
    );
    let view = model
        .service(
            &Hostname::new("api.prod.svc.cluster.local"),
            &ClusterId::new("c1"),
        )
        .unwrap();
    assert_eq!(view.service.ports[0].protocol, Protocol::Grpc);
    let health: Vec<Health> = view.endpoints.iter().map(|e| e.health).collect();
    assert_eq!(
        health,
        vec![Health::Healthy, Health::Unhealthy, Health::Draining]
    );
    assert_eq!(view.endpoints[0].target_port(8080), Some(9090));
    assert_eq!(view.endpoints[0].locality.zone, "zone-a");
    assert_eq!(view.endpoints[0].hostname.as_deref(), Some("api-0"));
    assert_eq!(view.endpoints[1].hostname, None);
    assert_eq!(
        view.endpoints[0].identity, None,
        "an address with no known pod has no identity"
    );
}

#[test]
fn endpoints_objects_find_their_pods_for_labels_and_identity() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: prod}
spec: {ports: [{name: tcp-db, port: 3306}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: db, namespace: prod}
subsets:
- addresses: [{ip: 10.0.1.1, hostname: db-0, targetRef: {kind: Pod, name: db-0, namespace: prod}}]
  notReadyAddresses: [{ip: 10.0.1.2}]
  ports: [{name: tcp-db, port: 3306}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: prod, labels: {app: db, role: primary}}
spec: {serviceAccountName: db}
status: {podIP: 10.0.1.1}
"#;
    let model = MeshModel::build(
        Arc::new(MeshSettings::default()),
        &[cluster("c1", "", yaml)],
    );
    let view = model
        .service(
            &Hostname::new("db.prod.svc.cluster.local"),
            &ClusterId::new("c1"),
        )
        .unwrap();
    assert_eq!(view.endpoints.len(), 2);
    assert_eq!(
        view.endpoints[0].labels.get("role").map(String::as_str),
        Some("primary")
    );
    assert_eq!(view.endpoints[0].service_account, "db");
    assert_eq!(view.endpoints[1].health, Health::Unhealthy);
    assert_eq!(view.service.ports[0].protocol, Protocol::Tcp);
    assert_eq!(view.endpoints[0].hostname.as_deref(), Some("db-0"));
}

#[test]
fn service_entries_give_one_service_per_host_with_their_endpoints() {
    let yaml = r#"
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: backend-multicluster, namespace: prod}
spec:
  hosts: [backend.prod.global, backend.example.com]
  addresses: [240.0.0.12]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - {address: 10.1.1.10, ports: {http: 8081}, labels: {cluster: cluster1}, locality: us-east/zone-a}
  - {address: 10.2.1.10, labels: {topology.istio.io/cluster: cluster2}, network: network2, serviceAccount: backend}
"#;
    let model = MeshModel::build(
        Arc::new(MeshSettings::default()),
        &[cluster("cluster1", "network1", yaml)],
    );
    let c1 = ClusterId::new("cluster1");
    let view = model
        .service(&Hostname::new("backend.prod.global"), &c1)
        .unwrap();
    assert!(
        model
            .service(&Hostname::new("backend.example.com"), &c1)
            .is_some()
    );
    assert_eq!(view.service.addresses[&c1], vec!["240.0.0.12".to_string()]);
    assert!(matches!(
        view.service.origin,
        ServiceOrigin::ServiceEntry { .. }
    ));
    let (a, b) = (&view.endpoints[0], &view.endpoints[1]);
    assert_eq!(a.target_port(8080), Some(8081));
    assert_eq!(a.locality, Locality::new("us-east", "zone-a", ""));
    assert_eq!(
        (a.cluster.as_str(), a.network.as_str()),
        ("cluster1", "network1")
    );
    assert_eq!(a.identity, None);
    assert_eq!(b.target_port(8080), Some(8080));
    assert_eq!(
        (b.cluster.as_str(), b.network.as_str()),
        ("cluster2", "network2")
    );
    assert_eq!(
        b.identity.as_ref().unwrap().to_string(),
        "spiffe://cluster.local/ns/prod/sa/backend"
    );
}

#[test]
fn service_entry_hosts_without_addresses_get_an_ipv4_and_an_ipv6_address() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: prod}
spec:
  hosts: [api.example.com, db.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
"#;
    let model = MeshModel::build(
        Arc::new(MeshSettings::default()),
        &[cluster("cluster1", "network1", yaml)],
    );
    let c1 = ClusterId::new("cluster1");
    let addresses = |host: &str| {
        let v = model.service(&Hostname::new(host), &c1).unwrap();
        assert!(v.service.vip_allocated);
        v.service.addresses[&c1].clone()
    };
    let (api, db) = (addresses("api.example.com"), addresses("db.example.com"));
    for a in [&api, &db] {
        let v4: std::net::Ipv4Addr = a[0].parse().unwrap();
        assert_eq!(&v4.octets()[..2], &[240, 240], "{a:?}");
        assert_eq!(a[1], vips::ipv6_of(v4).to_string(), "{a:?}");
        assert_eq!(a.len(), 2);
    }
    assert_ne!(api, db);
}

#[test]
fn selectors_of_services_and_service_entries_choose_pods_and_workload_entries() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {ports: [{name: http, port: 9080}], selector: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-reviews, namespace: bookinfo}
spec: {address: 192.168.9.9, labels: {app: reviews, version: v3}, network: vm-network, locality: r1/z1, serviceAccount: reviews-vm, weight: 3, ports: {http: 19080}}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: bookinfo, labels: {app: reviews, version: v1}}
status: {podIP: 10.0.0.9}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: other, labels: {app: reviews}}
status: {podIP: 10.0.0.10}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews-mesh, namespace: bookinfo}
spec:
  hosts: [reviews.internal]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 9080}]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
"#;
    let model = MeshModel::build(
        Arc::new(MeshSettings::default()),
        &[cluster("c1", "net1", yaml)],
    );
    let c1 = ClusterId::new("c1");
    let reviews = model
        .service(&Hostname::new("reviews.bookinfo.svc.cluster.local"), &c1)
        .unwrap();
    assert_eq!(
        reviews.endpoints.len(),
        2,
        "pods of other namespaces are not selected"
    );
    let vm = reviews
        .endpoints
        .iter()
        .find(|e| e.workload.kind == WorkloadKind::WorkloadEntry)
        .unwrap();
    assert_eq!(
        (vm.network.as_str(), vm.weight, vm.target_port(9080)),
        ("vm-network", 3, Some(19080))
    );
    assert_eq!(vm.identity.as_ref().unwrap().service_account, "reviews-vm");
    let internal = model
        .service(&Hostname::new("reviews.internal"), &c1)
        .unwrap();
    assert_eq!(internal.endpoints.len(), 2);
    let pod = internal
        .endpoints
        .iter()
        .find(|e| e.workload.kind == WorkloadKind::Pod)
        .unwrap();
    assert_eq!(pod.target_port(80), Some(9080));
}

#[test]
fn pods_not_running_yet_are_workloads_but_not_endpoints() {
    let yaml = format!(
        "{HELLOWORLD_SERVICE}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: pending, namespace: sample, labels: {{app: helloworld}}}}\n"
    );
    let model = MeshModel::build(
        Arc::new(MeshSettings::default()),
        &[cluster("c1", "", &yaml)],
    );
    assert_eq!(model.workloads().len(), 1);
    assert_eq!(model.workloads()[0].address, EndpointAddress::None);
    let view = model
        .service(
            &Hostname::new("helloworld.sample.svc.cluster.local"),
            &ClusterId::new("c1"),
        )
        .unwrap();
    assert!(view.endpoints.is_empty());
}

#[test]
fn diffs_tell_endpoint_changes_from_definition_changes() {
    let base = two_clusters();
    let c1 = format!(
        "{HELLOWORLD_SERVICE}{}{}",
        helloworld_pod("hw-v1", "v1", "10.1.0.6", "n1"),
        node("n1", "region1", "zone1")
    );
    let c2 = format!(
        "{HELLOWORLD_SERVICE}{}{}",
        helloworld_pod("hw-v2", "v2", "10.2.0.7", "n2"),
        node("n2", "region2", "zone2")
    );
    let settings = base.settings.clone();
    let moved = MeshModel::build(
        settings.clone(),
        &[
            cluster("cluster1", "network1", &c1),
            cluster("cluster2", "network2", &c2),
        ],
    );
    let d = base.diff(&moved);
    assert_eq!(d.endpoints_changed.len(), 1);
    assert!(d.endpoints_only());
    let c1b = c1.replace("port: 5000, name: http", "port: 5000, name: grpc");
    let redefined = MeshModel::build(
        settings,
        &[
            cluster("cluster1", "network1", &c1b),
            cluster("cluster2", "network2", &c2),
        ],
    );
    let d = moved.diff(&redefined);
    assert_eq!(d.changed.len(), 1);
    assert!(!d.endpoints_only());
    assert_eq!(
        redefined.conflicts().len(),
        1,
        "a port declared with two protocols is reported"
    );
    assert!(base.diff(&base).is_empty());
}

/// A cluster rebuilt after one service's Endpoints changed builds that service again and
/// shares every other with the view before; a Pod change rebuilds everything.
#[test]
fn a_rebuilt_cluster_builds_only_the_services_whose_objects_changed() {
    let service = |name: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{ports: [{{port: 80, name: http}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: ns}}\nsubsets: [{{addresses: [{{ip: {ip}}}], ports: [{{port: 8080, name: http}}]}}]\n---\n"
        )
    };
    let settings = MeshSettings::default();
    let before = cluster(
        "c1",
        "",
        &format!("{}{}", service("a", "10.0.0.1"), service("b", "10.0.0.2")),
    );
    let view = build_cluster(&before, &settings);
    let after = cluster(
        "c1",
        "",
        &format!("{}{}", service("a", "10.0.0.9"), service("b", "10.0.0.2")),
    );
    let changed = BTreeSet::from([(strait_config::Kind::Endpoints, "ns/a".to_string())]);
    let rebuilt = rebuild_cluster(&after, &settings, &view, &before.config, &changed);
    assert_eq!(rebuilt, build_cluster(&after, &settings));
    assert!(
        !Arc::ptr_eq(&view.services[0], &rebuilt.services[0]),
        "a is built again"
    );
    assert!(
        Arc::ptr_eq(&view.services[1], &rebuilt.services[1]),
        "b is shared"
    );
    assert!(Arc::ptr_eq(&view.workloads, &rebuilt.workloads));

    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nstatus: {podIP: 10.0.0.2}\n";
    let with_pod = cluster(
        "c1",
        "",
        &format!(
            "{}{}{pod}",
            service("a", "10.0.0.9"),
            service("b", "10.0.0.2")
        ),
    );
    let changed = BTreeSet::from([(strait_config::Kind::Pod, "ns/p".to_string())]);
    let rebuilt_again = rebuild_cluster(&with_pod, &settings, &rebuilt, &after.config, &changed);
    assert_eq!(rebuilt_again, build_cluster(&with_pod, &settings));
    assert!(
        !Arc::ptr_eq(&rebuilt.services[1], &rebuilt_again.services[1]),
        "a pod can be any service's endpoint"
    );
}
