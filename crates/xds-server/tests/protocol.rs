//! The ADS protocol, against the in-process server with Envoy's own client types: versions,
//! nonces, ACK/NACK, endpoint-only pushes, and the delta variant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // protocol tests

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use strait_xds_server::XdsServer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

fn manifests(hello_ip: &str, with_other: bool) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: hello, namespace: a}}\nspec: {{ports: [{{name: http, port: 80}}], selector: {{app: hello}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: hello-1, namespace: a, labels: {{app: hello}}}}\nstatus: {{podIP: {hello_ip}}}\n"
    );
    if with_other {
        s.push_str("---\napiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: a}\nspec: {ports: [{name: http, port: 80}], selector: {app: other}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: other-1, namespace: a, labels: {app: other}}\nstatus: {podIP: 10.0.0.9}\n");
    }
    s
}

struct Harness {
    /// Keeps the manifest directory and the registry's watch alive.
    _served: support::Served,
    file: std::path::PathBuf,
    server: XdsServer,
    port: u16,
}

async fn start(text: &str) -> Harness {
    start_with(
        text,
        strait_xds_server::gateway_dns::GatewayResolver::System,
    )
    .await
}

/// [`start`], resolving gateway names with `resolver`.
async fn start_with(
    text: &str,
    resolver: strait_xds_server::gateway_dns::GatewayResolver,
) -> Harness {
    serve(support::serve_with(text, resolver).await).await
}

/// [`start`], with every server option chosen.
async fn start_options(text: &str, options: strait_xds_server::ServerOptions) -> Harness {
    serve(support::serve_options(text, options).await).await
}

async fn serve(served: support::Served) -> Harness {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(served.server.service())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    served.server.set_ready();
    Harness {
        file: served.file.clone(),
        server: served.server.clone(),
        _served: served,
        port,
    }
}

fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        ..Default::default()
    }
}

/// A node with string metadata (`NETWORK`, `INTERCEPTION_MODE`, …).
fn node_with(id: &str, metadata: &[(&str, &str)]) -> Node {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    Node {
        metadata: Some(Struct {
            fields: metadata
                .iter()
                .map(|(k, v)| {
                    let value = Value {
                        kind: Some(Kind::StringValue((*v).to_string())),
                    };
                    ((*k).to_string(), value)
                })
                .collect(),
        }),
        ..node(id)
    }
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn connect(port: u16) -> Sotw {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Sotw { tx, rx }
    }

    async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a response within 10 s")
            .unwrap()
            .unwrap()
    }

    /// Nothing arrives within `wait`.
    async fn quiet(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.rx.message()).await.is_err()
    }

    async fn ack(&self, r: &DiscoveryResponse, names: Vec<String>) {
        self.send(DiscoveryRequest {
            type_url: r.type_url.clone(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            resource_names: names,
            ..Default::default()
        })
        .await;
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    r.resources
        .iter()
        .map(|a| {
            if a.type_url == CDS {
                envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(a.value.as_slice())
                    .unwrap()
                    .name
            } else {
                envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
                    a.value.as_slice(),
                )
                .unwrap()
                .cluster_name
            }
        })
        .collect()
}

const HELLO: &str = "outbound|80||hello.a.svc.cluster.local";
const OTHER: &str = "outbound|80||other.a.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_the_world_answers_acks_and_pushes_endpoint_changes_as_eds_alone_to_watchers_only()
{
    let h = start(&manifests("10.0.0.1", true)).await;
    // Proxy A watches hello's endpoints; proxy B only other's.
    let mut a = Sotw::connect(h.port).await;
    a.send(DiscoveryRequest {
        node: Some(node("sidecar~10.1.0.1~a.a~a.svc.cluster.local")),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await;
    let cds = a.recv().await;
    assert_eq!(cds.version_info, "1");
    assert!(
        names(&cds).contains(&HELLO.to_string()),
        "{:?}",
        names(&cds)
    );
    a.ack(&cds, vec![]).await;
    a.send(DiscoveryRequest {
        type_url: EDS.into(),
        resource_names: vec![HELLO.into()],
        ..Default::default()
    })
    .await;
    let eds = a.recv().await;
    assert_eq!(names(&eds), vec![HELLO.to_string()]);
    a.ack(&eds, vec![HELLO.into()]).await;
    let mut b = Sotw::connect(h.port).await;
    b.send(DiscoveryRequest {
        node: Some(node("sidecar~10.1.0.2~b.a~a.svc.cluster.local")),
        type_url: EDS.into(),
        resource_names: vec![OTHER.into()],
        ..Default::default()
    })
    .await;
    let eds_b = b.recv().await;
    b.ack(&eds_b, vec![OTHER.into()]).await;

    // hello's pod moves: only EDS, only to A.
    std::fs::write(&h.file, manifests("10.0.0.2", true)).unwrap();
    let push = a.recv().await;
    assert_eq!(
        push.type_url, EDS,
        "an endpoint change is pushed as EDS alone"
    );
    assert_eq!(names(&push), vec![HELLO.to_string()]);
    assert_eq!(push.version_info, "2");
    a.ack(&push, vec![HELLO.into()]).await;
    assert!(
        a.quiet(Duration::from_millis(700)).await,
        "no CDS follows an endpoint-only change"
    );
    assert!(
        b.quiet(Duration::from_millis(300)).await,
        "a proxy not watching hello gets nothing"
    );

    // A service appears: a full push (CDS) reaches A.
    std::fs::write(&h.file, manifests("10.0.0.2", true) + "---\napiVersion: v1\nkind: Service\nmetadata: {name: new, namespace: a}\nspec: {ports: [{name: http, port: 80}]}\n").unwrap();
    let cds2 = a.recv().await;
    assert_eq!(cds2.type_url, CDS);
    assert!(names(&cds2).contains(&"outbound|80||new.a.svc.cluster.local".to_string()));

    let conns = h.server.connections();
    let status = conns
        .iter()
        .find(|c| c.node_id.starts_with("sidecar~10.1.0.1"))
        .unwrap()
        .status();
    assert_eq!(status["EDS"].acked_version, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_is_recorded_with_its_reason_and_does_not_stop_other_proxies() {
    let h = start(&manifests("10.0.0.1", false)).await;
    let mut a = Sotw::connect(h.port).await;
    let mut b = Sotw::connect(h.port).await;
    for (c, id) in [
        (&mut a, "sidecar~10.1.0.1~a.a~a.svc.cluster.local"),
        (&mut b, "sidecar~10.1.0.2~b.a~a.svc.cluster.local"),
    ] {
        c.send(DiscoveryRequest {
            node: Some(node(id)),
            type_url: CDS.into(),
            ..Default::default()
        })
        .await;
    }
    let (ra, rb) = (a.recv().await, b.recv().await);
    // A rejects; B accepts.
    a.send(DiscoveryRequest {
        type_url: CDS.into(),
        version_info: String::new(),
        response_nonce: ra.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "cannot honour lb_policy".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    b.ack(&rb, vec![]).await;
    std::fs::write(&h.file, manifests("10.0.0.1", true)).unwrap();
    let rb2 = b.recv().await;
    assert_eq!(rb2.version_info, "2", "B keeps getting updates");
    let ra2 = a.recv().await;
    assert_eq!(ra2.version_info, "2", "A gets the next version too");
    let a_status = h
        .server
        .connections()
        .into_iter()
        .find(|c| c.node_id.starts_with("sidecar~10.1.0.1"))
        .unwrap()
        .status();
    assert_eq!(
        a_status["CDS"].last_nack.as_deref(),
        Some("cannot honour lb_policy")
    );
    assert_eq!(a_status["CDS"].nacks, 1);
    assert!(
        h.server
            .metrics_text()
            .contains("strait_xds_nacks_total{type=\"CDS\"} 1")
    );
}

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn connect(port: u16) -> Delta {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Delta { tx, rx }
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a response within 10 s")
            .unwrap()
            .unwrap()
    }

    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.tx
            .send(DeltaDiscoveryRequest {
                type_url: r.type_url.clone(),
                response_nonce: r.nonce.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_sends_only_changes_names_removals_and_resumes_from_known_versions() {
    let h = start(&manifests("10.0.0.1", true)).await;
    let mut d = Delta::connect(h.port).await;
    let id = "sidecar~10.1.0.1~a.a~a.svc.cluster.local";
    d.tx.send(DeltaDiscoveryRequest {
        node: Some(node(id)),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let first = d.recv().await;
    let versions: BTreeMap<String, String> = first
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    assert!(versions.contains_key(HELLO) && versions.contains_key(OTHER));
    d.ack(&first).await;
    d.tx.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        resource_names_subscribe: vec![HELLO.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let eds = d.recv().await;
    assert_eq!(
        eds.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        vec![HELLO]
    );
    d.ack(&eds).await;

    // Remove `other`: its clusters are named as removed; nothing else is resent.
    std::fs::write(&h.file, manifests("10.0.0.1", false)).unwrap();
    let removal = d.recv().await;
    assert_eq!(removal.type_url, CDS);
    assert!(
        removal.resources.is_empty(),
        "unchanged clusters are not resent: {:?}",
        removal
            .resources
            .iter()
            .map(|r| &r.name)
            .collect::<Vec<_>>()
    );
    assert!(removal.removed_resources.contains(&OTHER.to_string()));
    d.ack(&removal).await;

    // Reconnect knowing hello's version: nothing is resent for it.
    let mut again = Delta::connect(h.port).await;
    again
        .tx
        .send(DeltaDiscoveryRequest {
            node: Some(node(id)),
            type_url: CDS.into(),
            initial_resource_versions: versions.clone().into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let resumed = tokio::time::timeout(Duration::from_millis(800), again.rx.message()).await;
    match resumed {
        Err(_) => {} // nothing to send: the client is up to date
        Ok(Ok(Some(r))) => assert!(
            r.resources.iter().all(|x| x.name != HELLO),
            "hello was not resent"
        ),
        Ok(other) => panic!("{other:?}"),
    }
}

/// A proxy without capture (`INTERCEPTION_MODE: NONE`) and no Sidecar has no listeners; its
/// wildcard LDS subscription is still answered — empty — so it does not wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_wildcard_subscription_is_answered_empty() {
    let h = start(&manifests("10.0.0.1", true)).await;
    let mut d = Delta::connect(h.port).await;
    let n = node_with(
        "sidecar~10.1.0.1~a.a~a.svc.cluster.local",
        &[("INTERCEPTION_MODE", "NONE")],
    );
    d.tx.send(DeltaDiscoveryRequest {
        node: Some(n),
        type_url: LDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let lds = d.recv().await;
    assert_eq!(lds.type_url, LDS);
    assert!(lds.resources.is_empty() && lds.removed_resources.is_empty());
    assert!(!lds.nonce.is_empty());
}

/// Growing a state-of-the-world EDS subscription sends the newly asked-for assignments only;
/// an ACK carrying the same names (in any order) sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_sotw_subscription_gets_only_the_new_names() {
    let h = start(&manifests("10.0.0.1", true)).await;
    let mut a = Sotw::connect(h.port).await;
    a.send(DiscoveryRequest {
        node: Some(node("sidecar~10.1.0.1~a.a~a.svc.cluster.local")),
        type_url: EDS.into(),
        resource_names: vec![HELLO.into()],
        ..Default::default()
    })
    .await;
    let first = a.recv().await;
    assert_eq!(names(&first), vec![HELLO.to_string()]);
    a.ack(&first, vec![HELLO.into(), OTHER.into()]).await;
    let grown = a.recv().await;
    assert_eq!(
        names(&grown),
        vec![OTHER.to_string()],
        "only the added name"
    );
    a.ack(&grown, vec![OTHER.into(), HELLO.into()]).await;
    assert!(
        a.quiet(Duration::from_millis(500)).await,
        "the same subscription sends nothing"
    );
}

/// Delta: subscribing to a cluster that appears later gets it (it was pushed to no one before);
/// subscribing to a name that does not exist is answered with that name removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_subscriptions_to_new_and_missing_names_are_answered() {
    let h = start(&manifests("10.0.0.1", false)).await;
    let mut d = Delta::connect(h.port).await;
    let id = "sidecar~10.1.0.1~a.a~a.svc.cluster.local";
    d.tx.send(DeltaDiscoveryRequest {
        node: Some(node(id)),
        type_url: EDS.into(),
        resource_names_subscribe: vec![
            HELLO.into(),
            "outbound|80||missing.a.svc.cluster.local".into(),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let first = d.recv().await;
    assert_eq!(
        first
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        vec![HELLO]
    );
    assert_eq!(
        first.removed_resources,
        vec!["outbound|80||missing.a.svc.cluster.local".to_string()]
    );
    d.ack(&first).await;
    // `other` appears: nobody watches it yet, so nothing is sent…
    std::fs::write(&h.file, manifests("10.0.0.1", true)).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // …until the proxy asks for it.
    d.tx.send(DeltaDiscoveryRequest {
        type_url: EDS.into(),
        resource_names_subscribe: vec![OTHER.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let other = loop {
        let r = d.recv().await;
        d.ack(&r).await;
        if r.resources.iter().any(|x| x.name == OTHER) {
            break r;
        }
    };
    assert!(other.resources.iter().all(|x| x.name == OTHER));
}

/// Methods other than the two ADS streams are refused with UNIMPLEMENTED, as gRPC servers do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_are_unimplemented() {
    let h = start(&manifests("10.0.0.1", false)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", h.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<DiscoveryRequest, DiscoveryResponse, _>(
            tonic::Request::new(DiscoveryRequest::default()),
            http::uri::PathAndQuery::from_static(
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/FetchSomething",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}

const NDS: &str = "type.googleapis.com/istio.networking.nds.v1.NameTable";

/// The name table in a response: host → addresses.
fn name_table(r: &DiscoveryResponse) -> BTreeMap<String, Vec<String>> {
    assert_eq!(r.resources.len(), 1, "one name table");
    let table = strait_xds_wire::nds::name_table_from(&r.resources[0]).unwrap();
    table.hosts.into_iter().map(|(h, i)| (h, i.ips)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_get_a_name_table_that_follows_headless_endpoints_and_routers_none() {
    let h = start(&manifests("10.0.0.1", true)).await;
    let mut a = Sotw::connect(h.port).await;
    a.send(DiscoveryRequest {
        node: Some(node("sidecar~10.1.0.1~a.a~a.svc.cluster.local")),
        type_url: NDS.into(),
        ..Default::default()
    })
    .await;
    let nds = a.recv().await;
    assert_eq!(nds.type_url, NDS);
    // Services without a cluster IP are headless: their endpoints answer.
    assert_eq!(
        name_table(&nds),
        BTreeMap::from([
            (
                "hello.a.svc.cluster.local".to_string(),
                vec!["10.0.0.1".to_string()]
            ),
            (
                "other.a.svc.cluster.local".to_string(),
                vec!["10.0.0.9".to_string()]
            ),
        ])
    );
    a.ack(&nds, vec![]).await;

    // hello's pod moves (an endpoint-only change): the table follows.
    std::fs::write(&h.file, manifests("10.0.0.2", true)).unwrap();
    let push = a.recv().await;
    assert_eq!(push.type_url, NDS);
    assert_eq!(
        name_table(&push)["hello.a.svc.cluster.local"],
        vec!["10.0.0.2".to_string()]
    );

    let mut router = Sotw::connect(h.port).await;
    router
        .send(DiscoveryRequest {
            node: Some(node("router~10.1.0.3~gw.a~a.svc.cluster.local")),
            type_url: NDS.into(),
            ..Default::default()
        })
        .await;
    let none = router.recv().await;
    assert!(none.resources.is_empty(), "a router answers no DNS");
}

/// Sidecars that see the same services share one name table; one that sees fewer (here a
/// service exported to its own namespace only) gets its own, whichever connects first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_that_see_different_services_get_different_name_tables() {
    let text = manifests("10.0.0.1", true).replace(
        "metadata: {name: other, namespace: a}",
        "metadata: {name: other, namespace: a, annotations: {networking.istio.io/exportTo: \".\"}}",
    );
    let both = ["hello.a.svc.cluster.local", "other.a.svc.cluster.local"];
    for order in [["a", "b"], ["b", "a"]] {
        // A control plane of its own for each order: nothing cached.
        let h = start(&text).await;
        for ns in order {
            let mut s = Sotw::connect(h.port).await;
            s.send(DiscoveryRequest {
                node: Some(node(&format!(
                    "sidecar~10.1.0.9~{ns}1.{ns}~{ns}.svc.cluster.local"
                ))),
                type_url: NDS.into(),
                ..Default::default()
            })
            .await;
            let seen: Vec<String> = name_table(&s.recv().await).into_keys().collect();
            let expected: &[&str] = if ns == "a" { &both } else { &both[..1] };
            assert_eq!(seen, expected, "namespace {ns} in order {order:?}");
        }
    }
}

/// A ServiceEntry host without addresses has an IPv4 and an IPv6 address from the mesh: an
/// IPv4 sidecar's name table holds the first, a dual-stack sidecar's (its `INSTANCE_IPS`) both —
/// in either connection order, so their tables are not shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_sidecars_are_told_the_ipv6_address_the_mesh_allocated_too() {
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: api, namespace: a}\nspec:\n  hosts: [api.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n";
    for dual_first in [false, true] {
        let h = start(text).await;
        for dual in [dual_first, !dual_first] {
            let ips: &[(&str, &str)] = if dual {
                &[("INSTANCE_IPS", "10.1.0.9,fd00::9")]
            } else {
                &[("INSTANCE_IPS", "10.1.0.8")]
            };
            let mut s = Sotw::connect(h.port).await;
            s.send(DiscoveryRequest {
                node: Some(node_with("sidecar~10.1.0.9~a1.a~a.svc.cluster.local", ips)),
                type_url: NDS.into(),
                ..Default::default()
            })
            .await;
            let table = name_table(&s.recv().await);
            let api = &table["api.example.com"];
            let families: Vec<bool> = api
                .iter()
                .map(|a| a.parse::<std::net::IpAddr>().unwrap().is_ipv6())
                .collect();
            let expected: &[bool] = if dual { &[false, true] } else { &[false] };
            assert_eq!(families, expected, "dual-stack {dual}: {api:?}");
            assert!(api[0].starts_with("240.240."), "{api:?}");
            if dual {
                assert!(api[1].starts_with("2001:2::"), "{api:?}");
            }
        }
    }
}

/// A name server on loopback answering `gw.network2.example` with the address in `ip`, TTL 1 s.
async fn gateway_name_server(
    ip: std::sync::Arc<std::sync::Mutex<std::net::Ipv4Addr>>,
) -> std::net::SocketAddr {
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.add_queries(q.queries.iter().cloned());
            let question = &q.queries[0];
            if question.query_type() == RecordType::A {
                let a = *ip.lock().unwrap();
                r.add_answer(Record::from_rdata(
                    question.name().clone(),
                    1,
                    RData::A(A(a)),
                ));
            }
            socket.send_to(&r.to_vec().unwrap(), from).await.unwrap();
        }
    });
    addr
}

/// The first endpoint of `outbound|80||far.a.example` as the control plane on `port` gives it to
/// `node` (debug-printed, to look for an address in).
async fn far_endpoint_for(port: u16, node: Node) -> String {
    let mut a = Sotw::connect(port).await;
    a.send(DiscoveryRequest {
        node: Some(node),
        type_url: EDS.into(),
        resource_names: vec!["outbound|80||far.a.example".into()],
        ..Default::default()
    })
    .await;
    let eds = a.recv().await;
    use prost::Message;
    let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
        eds.resources[0].value.as_slice(),
    )
    .unwrap();
    format!("{:?}", cla.endpoints[0].lb_endpoints[0])
}

/// A node that does not say its `NETWORK` is on the network its cluster's MeshConfig names
/// (what Istio's injection tells every sidecar of a cluster): another network's endpoint
/// reaches it through that network's gateway; with `NETWORK` given, the node's word counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_network_is_on_its_clusters_network() {
    let manifests = "apiVersion: strait.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  clusterName: c1\n  network: network1\n  meshNetworks:\n    network2:\n      gateways: [{address: 198.51.100.7, port: 15443}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: far, namespace: a}\nspec:\n  hosts: [far.a.example]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.2.0.5, network: network2, serviceAccount: far, labels: {security.istio.io/tlsMode: istio}}]\n";
    let h = start(manifests).await;
    let address_for = |node: Node| far_endpoint_for(h.port, node);
    let id = "sidecar~10.1.0.1~a.a~a.svc.cluster.local";
    let unsaid = address_for(node(id)).await;
    assert!(unsaid.contains("198.51.100.7"), "{unsaid}");
    let said = address_for(node_with(id, &[("NETWORK", "network2")])).await;
    assert!(said.contains("10.2.0.5"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_network_is_on_its_pods_labelled_network() {
    // The pod at 10.1.0.9 carries `topology.istio.io/network: network2`, so its own endpoints
    // are on network2; its sidecar, not saying NETWORK, is there too and reaches network2's
    // endpoint directly. Another pod of the cluster, unlabelled, is on the cluster's network1
    // and goes through network2's gateway.
    let manifests = "apiVersion: strait.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  clusterName: c1\n  network: network1\n  meshNetworks:\n    network2:\n      gateways: [{address: 198.51.100.7, port: 15443}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: far, namespace: a}\nspec:\n  hosts: [far.a.example]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.2.0.5, network: network2, serviceAccount: far, labels: {security.istio.io/tlsMode: istio}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: edge-0, namespace: a, labels: {app: edge, topology.istio.io/network: network2}}\nspec: {serviceAccountName: edge}\nstatus: {podIP: 10.1.0.9}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: core-0, namespace: a, labels: {app: core}}\nspec: {serviceAccountName: core}\nstatus: {podIP: 10.1.0.8}\n";
    let h = start(manifests).await;
    let address_for = |node: Node| far_endpoint_for(h.port, node);
    let labelled = address_for(node("sidecar~10.1.0.9~edge-0.a~a.svc.cluster.local")).await;
    assert!(labelled.contains("10.2.0.5"), "{labelled}");
    let unlabelled = address_for(node("sidecar~10.1.0.8~core-0.a~a.svc.cluster.local")).await;
    assert!(unlabelled.contains("198.51.100.7"), "{unlabelled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_named_by_dns_is_followed_when_its_address_changes() {
    let ip = std::sync::Arc::new(std::sync::Mutex::new(std::net::Ipv4Addr::new(
        198, 51, 100, 1,
    )));
    let dns = gateway_name_server(ip.clone()).await;
    let manifests = "apiVersion: strait.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  clusterName: c1\n  network: network1\n  meshNetworks:\n    network2:\n      gateways: [{address: gw.network2.example, port: 15443}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: far, namespace: a}\nspec:\n  hosts: [far.a.example]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.2.0.5, network: network2, serviceAccount: far, labels: {security.istio.io/tlsMode: istio}}]\n";
    let h = start_with(
        manifests,
        strait_xds_server::gateway_dns::GatewayResolver::Servers(vec![dns]),
    )
    .await;
    const FAR: &str = "outbound|80||far.a.example";
    let gateway_of = |r: &DiscoveryResponse| -> String {
        use prost::Message;
        let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
            r.resources[0].value.as_slice(),
        )
        .unwrap();
        let lb = &cla.endpoints[0].lb_endpoints[0];
        format!("{lb:?}")
    };
    let (mut a, eds) = far_on_network1(h.port, FAR).await;
    assert!(
        gateway_of(&eds).contains("198.51.100.1"),
        "{}",
        gateway_of(&eds)
    );
    a.ack(&eds, vec![FAR.into()]).await;

    // The name now resolves elsewhere; no manifest changes. Within a few TTLs the endpoint
    // (network2's gateway) follows.
    *ip.lock().unwrap() = std::net::Ipv4Addr::new(198, 51, 100, 2);
    let push = a.recv().await;
    assert!(
        gateway_of(&push).contains("198.51.100.2"),
        "{}",
        gateway_of(&push)
    );
    assert!(
        push.version_info.parse::<u64>().unwrap() > eds.version_info.parse::<u64>().unwrap(),
        "a new version: {} after {}",
        push.version_info,
        eds.version_info
    );
}

/// The control plane probes each network's gateway (a TCP connection to its data port): one
/// that answered and stops answering has the endpoints behind it sent unhealthy at once, with no
/// manifest change; when it answers again they are healthy again. `/debug/gatewayz` says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stops_answering_probes_has_its_networks_endpoints_sent_unhealthy() {
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = gateway.local_addr().unwrap();
    let manifests = format!(
        "apiVersion: strait.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec:\n  clusterName: c1\n  network: network1\n  meshNetworks:\n    network2:\n      gateways: [{{address: {}, port: {}}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: far, namespace: a}}\nspec:\n  hosts: [far.a.example]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 10.2.0.5, network: network2, serviceAccount: far, labels: {{security.istio.io/tlsMode: istio}}}}]\n",
        gw.ip(),
        gw.port()
    );
    let h = start_options(
        &manifests,
        strait_xds_server::ServerOptions {
            cluster: strait_model::ClusterId::new("c1"),
            root_namespace: "istio-system".into(),
            gateway_resolver: Default::default(),
            jwks: Default::default(),
            gateway_probe: support::ProbeSettings {
                period: Duration::from_millis(100),
                timeout: Duration::from_millis(500),
                failures: 2,
            },
        },
    )
    .await;
    const FAR: &str = "outbound|80||far.a.example";
    let health_of = |r: &DiscoveryResponse| -> (String, i32) {
        use prost::Message;
        let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
            r.resources[0].value.as_slice(),
        )
        .unwrap();
        let lb = &cla.endpoints[0].lb_endpoints[0];
        (format!("{lb:?}"), lb.health_status)
    };
    let state = || {
        let page = h.server.debug_page("/debug/gatewayz").unwrap()();
        page["gateways"][0]["state"].as_str().unwrap().to_string()
    };
    let (mut a, first) = far_on_network1(h.port, FAR).await;
    let (lb, health) = health_of(&first);
    assert!(lb.contains(&gw.ip().to_string()), "{lb}");
    assert_eq!(health, 1, "HEALTHY: {lb}");
    a.ack(&first, vec![FAR.into()]).await;
    // Seen answering before anything is acted on.
    for _ in 0..100 {
        if state() == "reachable" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state(), "reachable");

    drop(gateway);
    let down = a.recv().await;
    let (lb, health) = health_of(&down);
    assert_eq!(
        health, 2,
        "UNHEALTHY once the gateway stops answering: {lb}"
    );
    assert_eq!(state(), "unreachable");
    a.ack(&down, vec![FAR.into()]).await;

    let _gateway = tokio::net::TcpListener::bind(gw).await.unwrap();
    let up = a.recv().await;
    let (lb, health) = health_of(&up);
    assert_eq!(health, 1, "HEALTHY once it answers again: {lb}");
    assert_eq!(state(), "reachable");
}

/// A sidecar on network1 (as its cluster's sidecars are told: a node that does not say its
/// network reaches every endpoint directly, as Istio's) subscribed to the load assignment of
/// `cluster`: the stream and the first response.
async fn far_on_network1(port: u16, cluster: &str) -> (Sotw, DiscoveryResponse) {
    let mut a = Sotw::connect(port).await;
    a.send(DiscoveryRequest {
        node: Some(node_with(
            "sidecar~10.1.0.1~a.a~a.svc.cluster.local",
            &[("NETWORK", "network1")],
        )),
        type_url: EDS.into(),
        resource_names: vec![cluster.into()],
        ..Default::default()
    })
    .await;
    let first = a.recv().await;
    (a, first)
}
