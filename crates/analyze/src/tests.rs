//! Each analyzer class, caught in realistic manifests.

use strait_config::{LoadOptions, load_str};
use strait_model::ClusterId;

use crate::*;

fn analyze_yaml(yaml: &str) -> Analysis {
    analyze(&[ClusterConfig {
        name: ClusterId::new("cluster1"),
        report: load_str(yaml, "mesh.yaml", &LoadOptions::default()),
        links: Vec::new(),
    }])
}

fn with_code(a: &Analysis, code: Code) -> Vec<&Message> {
    a.messages.iter().filter(|m| m.code == code.code).collect()
}

/// `<resource> <field>` of each message with `code`.
fn located(a: &Analysis, code: Code) -> Vec<String> {
    with_code(a, code)
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m.resource.clone().unwrap_or_default(),
                m.field.clone().unwrap_or_default()
            )
        })
        .collect()
}

const BOOKINFO: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: bookinfo, labels: {app: reviews, version: v1}}
spec: {serviceAccountName: reviews}
status: {podIP: 10.0.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: bookinfo, labels: {app: reviews, version: v2}}
spec: {serviceAccountName: reviews}
status: {podIP: 10.0.0.12}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

#[test]
fn clean_configuration_has_no_findings() {
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 80}\n    - {destination: {host: reviews.bookinfo.svc.cluster.local, subset: v2}, weight: 20}\n";
    let a = analyze_yaml(&format!("{BOOKINFO}{vs}"));
    assert!(a.messages.is_empty(), "{:#?}", a.messages);
    assert!(render(&a, Format::Text, "mesh.yaml").starts_with("✔ No validation issues"));
}

#[test]
fn destination_hosts_and_subsets_that_do_not_exist_are_errors_at_the_field() {
    let vs = r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: ratings, subset: v1}
  - route:
    - destination: {host: reviews, subset: v3}
"#;
    let a = analyze_yaml(&format!("{BOOKINFO}{vs}"));
    let host = with_code(&a, codes::DESTINATION_HOST_NOT_FOUND);
    assert_eq!(host.len(), 1);
    assert_eq!(
        host[0].resource.as_deref(),
        Some("VirtualService bookinfo/reviews")
    );
    assert_eq!(
        host[0].field.as_deref(),
        Some("spec.http[0].route[0].destination.host")
    );
    assert!(
        host[0]
            .message
            .contains("ratings.bookinfo.svc.cluster.local")
    );
    assert_eq!(host[0].line, Some(36), "the line of the host field");
    let subset = with_code(&a, codes::SUBSET_NOT_FOUND);
    assert_eq!(subset.len(), 1);
    assert_eq!(
        subset[0].field.as_deref(),
        Some("spec.http[1].route[0].destination.subset")
    );
    assert!(a.has_errors());
}

#[test]
fn subsets_that_select_no_workload_are_warned() {
    let dr = BOOKINFO.replace(
        "{name: v2, labels: {version: v2}}",
        "{name: v2, labels: {version: v2}}\n  - {name: v9, labels: {version: v9}}",
    );
    let a = analyze_yaml(&dr);
    let m = with_code(&a, codes::SUBSET_SELECTS_NO_WORKLOAD);
    assert_eq!(m.len(), 1);
    assert!(m[0].message.contains("\"v9\""));
    assert_eq!(m[0].level, Level::Warning);
}

#[test]
fn two_virtual_services_for_one_host_on_the_mesh_gateway_conflict() {
    let vs = |name: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec:\n  hosts: [reviews.bookinfo.svc.cluster.local]\n  http: [{{route: [{{destination: {{host: reviews}}}}]}}]\n"
        )
    };
    let a = analyze_yaml(&format!("{BOOKINFO}{}{}", vs("a"), vs("b")));
    let m = with_code(&a, codes::CONFLICTING_VIRTUAL_SERVICE_HOSTS);
    assert_eq!(m.len(), 2, "both VirtualServices are named");
    assert!(m[0].message.contains("bookinfo/a, bookinfo/b"));
}

#[test]
fn gateways_that_select_nothing_or_do_not_exist_are_errors() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cross-network-gateway, namespace: istio-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ["*.local"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ingress, namespace: bookinfo}
spec:
  hosts: [bookinfo.example.com]
  gateways: [istio-system/missing-gateway]
  http: [{route: [{destination: {host: reviews}}]}]
"#;
    let a = analyze_yaml(&format!("{BOOKINFO}---\n{yaml}"));
    assert_eq!(with_code(&a, codes::GATEWAY_SELECTS_NO_WORKLOAD).len(), 1);
    let gw = with_code(&a, codes::GATEWAY_NOT_FOUND);
    assert_eq!(gw.len(), 1);
    assert!(gw[0].message.contains("istio-system/missing-gateway"));
}

#[test]
fn service_entry_address_and_host_conflicts() {
    let se = |name: &str, host: &str, addr: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: prod}}\nspec:\n  hosts: [{host}]\n  addresses: [{addr}]\n  ports: [{{number: 3306, name: tcp-mysql, protocol: TCP}}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  endpoints: [{{address: 10.2.0.1}}]\n"
        )
    };
    let a = analyze_yaml(&format!(
        "{}{}{}",
        se("db-a", "db-a.prod.global", "240.0.0.10"),
        se("db-b", "db-b.prod.global", "240.0.0.10"),
        se("db-c", "db-a.prod.global", "240.0.0.11")
    ));
    assert_eq!(
        with_code(&a, codes::SERVICE_ENTRY_ADDRESS_CONFLICT).len(),
        2
    );
    assert_eq!(with_code(&a, codes::SERVICE_ENTRY_HOST_CONFLICT).len(), 2);
    assert_eq!(
        with_code(&a, codes::GLOBAL_SUFFIX_HOST).len(),
        3,
        ".global hosts get a note"
    );
}

#[test]
fn locality_settings_without_outlier_detection_are_the_trap_users_hit() {
    let dr = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-locality, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        enabled: true
        failover: [{from: region1, to: region2}]
"#;
    let a = analyze_yaml(&format!("{BOOKINFO}{dr}"));
    let m = with_code(&a, codes::FAILOVER_WITHOUT_OUTLIER_DETECTION);
    assert!(!m.is_empty());
    assert!(
        m.iter()
            .any(|m| m.message.contains("silently ignores failover"))
    );
    let distribute = dr.replace(
        "failover: [{from: region1, to: region2}]",
        "distribute: [{from: region1/*, to: {region1/*: 80, region2/*: 20}}]",
    );
    let a = analyze_yaml(&format!("{BOOKINFO}{distribute}"));
    assert_eq!(
        with_code(&a, codes::FAILOVER_WITHOUT_OUTLIER_DETECTION).len(),
        1
    );
    let bad_sum = distribute.replace("region2/*: 20", "region2/*: 30");
    let a = analyze_yaml(&format!("{BOOKINFO}{bad_sum}"));
    let m = with_code(&a, codes::LOCALITY_WEIGHTS);
    assert_eq!(m.len(), 1, "{:#?}", a.messages);
    assert!(m[0].message.contains("110"));
}

#[test]
fn strict_peer_authentication_against_a_rule_that_disables_tls() {
    let yaml = r#"
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-plain, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
"#;
    let a = analyze_yaml(&format!("{BOOKINFO}{yaml}"));
    let m = with_code(&a, codes::MTLS_STRICT_BUT_TLS_DISABLED);
    assert_eq!(m.len(), 1, "{:#?}", a.messages);
    assert_eq!(m[0].field.as_deref(), Some("spec.trafficPolicy.tls.mode"));
    let permissive_ns = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: bookinfo}\nspec: {mtls: {mode: PERMISSIVE}}\n";
    let a = analyze_yaml(&format!("{BOOKINFO}{yaml}{permissive_ns}"));
    assert!(
        with_code(&a, codes::MTLS_STRICT_BUT_TLS_DISABLED).is_empty(),
        "the namespace policy overrides the mesh one"
    );
}

/// The seed's 70/30 split of reviews between the local service and west's mirror.
const REVIEWS_SPLIT: &str = r#"
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: backend-split, namespace: bookinfo}
spec:
  service: reviews
  backends:
  - {service: reviews, weight: 70}
  - {service: reviews-west, weight: 30}
"#;

#[test]
fn traffic_split_backends_must_exist() {
    let a = analyze_yaml(&format!("{BOOKINFO}{REVIEWS_SPLIT}"));
    let m = with_code(&a, codes::TRAFFIC_SPLIT_BACKEND_NOT_FOUND);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].field.as_deref(), Some("spec.backends[1].service"));
}

#[test]
fn a_linked_clusters_exported_services_are_mirrored_for_traffic_split_backends() {
    let east = &format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec: {{ports: [{{port: 9080, name: http}}], selector: {{app: reviews}}}}\n{REVIEWS_SPLIT}"
    );
    let west = r#"
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: bookinfo
  labels: {mirror.linkerd.io/exported: "true"}
spec: {ports: [{port: 9080, name: http}], selector: {app: reviews}}
"#;
    let link_secret = "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: cluster-credentials-west\n  namespace: linkerd-multicluster\n  labels: {mirror.linkerd.io/cluster-name: west}\ntype: mirror.linkerd.io/remote-kubeconfig\nstringData: {kubeconfig: x}\n";
    let run = |east: &str, links: Vec<ClusterId>| {
        analyze(&[
            ClusterConfig {
                name: ClusterId::new("east"),
                report: load_str(east, "east.yaml", &LoadOptions::default()),
                links,
            },
            ClusterConfig {
                name: ClusterId::new("west"),
                report: load_str(west, "west.yaml", &LoadOptions::default()),
                links: Vec::new(),
            },
        ])
    };
    let missing = |a: &Analysis| with_code(a, codes::TRAFFIC_SPLIT_BACKEND_NOT_FOUND).len();
    // Not linked: two clusters merged Istio's way; `reviews-west` exists nowhere.
    assert_eq!(missing(&run(east, vec![])), 1);
    // Linked by the topology, or by a link Secret among east's manifests.
    assert_eq!(missing(&run(east, vec![ClusterId::new("west")])), 0);
    assert_eq!(missing(&run(&format!("{east}{link_secret}"), vec![])), 0);
}

#[test]
fn ports_without_a_protocol_are_noted() {
    let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: legacy, namespace: bookinfo}\nspec: {ports: [{port: 8080, name: web}, {port: 9090, name: http-metrics}], selector: {app: legacy}}\n";
    let a = analyze_yaml(&format!("{BOOKINFO}{svc}"));
    let m = with_code(&a, codes::PORT_PROTOCOL_UNDETERMINED);
    assert_eq!(m.len(), 1);
    assert!(m[0].message.contains("port 8080"));
    assert_eq!(m[0].level, Level::Info);
    assert!(!a.has_errors());
}

#[test]
fn sidecar_ingress_ports_handing_to_a_unix_socket_are_noted() {
    let sidecar = "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  workloadSelector: {labels: {app: reviews}}\n  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:8080\n  - port: {number: 9090, protocol: GRPC, name: grpc}\n    defaultEndpoint: unix:///var/run/reviews.sock\n";
    let a = analyze_yaml(&format!("{BOOKINFO}{sidecar}"));
    let m = with_code(&a, codes::NOT_SUPPORTED_BY_STRAIT);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].message.contains("unix:///var/run/reviews.sock") && m[0].message.contains("port 9090"),
        "{}",
        m[0]
    );
    assert_eq!(m[0].level, Level::Info);
    assert!(
        m[0].to_string().contains("spec.ingress[1].defaultEndpoint"),
        "{}",
        m[0]
    );
    assert!(!a.has_errors());
}

#[test]
fn tls_settings_strait_does_not_apply_are_noted_where_written_and_those_it_does_are_not() {
    let yaml = "---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialNames: [web-rsa, web-ecdsa]}
  - port: {number: 8443, name: https-files, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/web.pem, privateKey: /etc/certs/web.key}
  - port: {number: 9443, name: https-partners, protocol: HTTPS}
    hosts: ['*']
    tls:
      mode: MUTUAL
      serverCertificate: /etc/certs/web.pem
      privateKey: /etc/certs/web.key
      caCertificates: /etc/certs/partners.pem
      subjectAltNames: [partner.example.com]
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ['*']
    tls: {mode: AUTO_PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: external, namespace: bookinfo}
spec:
  host: api.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, caCertificates: /etc/certs/ca.pem, caCrl: /etc/certs/ca.crl}
  subsets:
  - name: partner
    labels: {tier: partner}
    trafficPolicy:
      tls: {mode: MUTUAL, credentialName: partner-client}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: bookinfo}
spec:
  workloadSelector: {labels: {app: reviews}}
  inboundConnectionPool: {tcp: {maxConnections: 10}}
  ingress:
  - port: {number: 9080, protocol: HTTPS, name: https}
    defaultEndpoint: 127.0.0.1:8080
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem}
    connectionPool: {tcp: {maxConnections: 5}}
";
    let a = analyze_yaml(&format!("{BOOKINFO}{yaml}"));
    assert_eq!(
        located(&a, codes::NOT_SUPPORTED_BY_STRAIT),
        [
            "Gateway bookinfo/web spec.servers[1].tls.credentialNames",
            "Gateway bookinfo/web spec.servers[3].tls.subjectAltNames",
            "DestinationRule bookinfo/external spec.trafficPolicy.portLevelSettings[0].tls.caCrl",
        ]
    );
}

#[test]
fn gateway_credentials_their_workloads_cannot_be_sent_are_errors() {
    let yaml = "---
apiVersion: v1
kind: Pod
metadata: {name: ingress-0, namespace: istio-system, labels: {istio: ingressgateway}}
status: {podIP: 10.0.0.50}
---
apiVersion: v1
kind: Secret
metadata: {name: web-cert, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: CHAIN, tls.key: KEY}
---
apiVersion: v1
kind: Secret
metadata: {name: api-cert, namespace: istio-system}
stringData: {cert: CHAIN, key: KEY}
---
apiVersion: v1
kind: Secret
metadata: {name: api-cert-cacert, namespace: istio-system}
stringData: {cacert: ROOTS}
---
apiVersion: v1
kind: Secret
metadata: {name: opaque, namespace: istio-system}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Secret
metadata: {name: elsewhere, namespace: bookinfo}
stringData: {tls.crt: CHAIN, tls.key: KEY}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: web-cert}
  - port: {number: 444, name: https-elsewhere, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: elsewhere}
  - port: {number: 445, name: https-no-ca, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: MUTUAL, credentialName: web-cert}
  - port: {number: 446, name: https-api, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: MUTUAL, credentialName: api-cert}
  - port: {number: 447, name: https-opaque, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialNames: [opaque]}
";
    let a = analyze_yaml(yaml);
    assert_eq!(
        located(&a, codes::INVALID_GATEWAY_CREDENTIAL),
        [
            "Gateway bookinfo/web spec.servers[1].tls.credentialName",
            "Gateway bookinfo/web spec.servers[2].tls.credentialName",
            "Gateway bookinfo/web spec.servers[4].tls.credentialNames",
        ]
    );
    let m = with_code(&a, codes::INVALID_GATEWAY_CREDENTIAL);
    // The Secret is looked for where the gateway runs, not where the Gateway object is.
    assert!(
        m[0].message
            .starts_with("no Secret istio-system/elsewhere in cluster "),
        "{}",
        m[0].message
    );
    assert!(m[1].message.contains("web-cert-cacert"), "{}", m[1].message);
    assert!(
        m[2].message.contains("holds no certificate"),
        "{}",
        m[2].message
    );
    assert!(a.has_errors());
}

#[test]
fn delegates_missing_or_with_routes_outside_the_root_are_reported() {
    let yaml = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /reviews}}]
    delegate: {name: reviews-routes}
  - match: [{uri: {prefix: /old}}]
    delegate: {name: private-routes, namespace: other}
  - route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-routes, namespace: bookinfo}
spec:
  http:
  - match: [{uri: {prefix: /reviews/v2}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /ratings}}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: private-routes, namespace: other}
spec:
  exportTo: [.]
  http:
  - route: [{destination: {host: reviews.bookinfo.svc.cluster.local}}]
";
    let a = analyze_yaml(&format!("{BOOKINFO}{yaml}"));
    assert_eq!(
        located(&a, codes::DELEGATE_NOT_FOUND),
        ["VirtualService bookinfo/root spec.http[1].delegate"]
    );
    assert_eq!(
        located(&a, codes::DELEGATE_ROUTE_OUTSIDE_ROOT),
        ["VirtualService bookinfo/reviews-routes spec.http[1].match"]
    );
}

#[test]
fn validation_problems_and_unsupported_kinds_are_messages_too() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: bad}\nspec:\n  host: reviews\n  trafficPolicy:\n    outlierDetection: {consecutiveErrors: 5}\n    loadBalancer: {simpel: ROUND_ROBIN}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f}\nspec: {}\n";
    let a = analyze_yaml(yaml);
    let schema = with_code(&a, codes::SCHEMA_VALIDATION_ERROR);
    assert_eq!(schema.len(), 1);
    assert!(
        schema[0].message.contains("did you mean \"simple\""),
        "{}",
        schema[0]
    );
    assert_eq!(schema[0].line, Some(8));
    assert_eq!(with_code(&a, codes::DEPRECATED_FIELD).len(), 1);
    assert_eq!(with_code(&a, codes::NOT_SUPPORTED_BY_STRAIT).len(), 1);
    let json: serde_json::Value = serde_json::from_str(&render(&a, Format::Json, "x")).unwrap();
    assert_eq!(json["summary"]["errors"], 1);
    assert!(render(&a, Format::Yaml, "x").contains("code: ST0001"));
}
