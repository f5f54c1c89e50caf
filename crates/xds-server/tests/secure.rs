//! xDS on the TLS port (Istio's 15012): a client with the mesh certificate of the proxy's own
//! namespace gets its configuration; one of another namespace is refused (permission denied),
//! and one without a certificate is refused (unauthenticated), each saying why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use strait_identity::cacerts::CaFiles;
use strait_identity::policy::Limits;
use strait_identity::serving::{ServingNames, serving_config};
use strait_identity::{Authority, SpiffeId, WorkloadCert, tls, transport};
use tokio_stream::wrappers::ReceiverStream;

const SERVER_NAME: &str = "istiod.istio-system.svc";

struct Secure {
    address: String,
    authority: Authority,
    /// Keeps the manifests and the TLS server alive.
    _served: support::Served,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn start() -> Secure {
    let served = support::serve_with(
        "apiVersion: v1\nkind: Service\nmetadata: {name: hello, namespace: a}\nspec: {ports: [{name: http, port: 80}], selector: {app: hello}}\n",
        strait_xds_server::gateway_dns::GatewayResolver::System,
    )
    .await;
    let server = served.server.clone();
    let authority = Authority::new(
        CaFiles::self_signed_for_development(SystemTime::now()).unwrap(),
        Limits::default(),
    )
    .unwrap();
    let names = ServingNames::istiod("cluster.local", "istio-system", &[]);
    let config = serving_config(&authority, &names, SystemTime::now()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.service())
            .serve_with_incoming_shutdown(
                transport::tls_incoming(listener, Arc::new(ArcSwap::new(config))),
                async move {
                    let _ = stop.changed().await;
                },
            ),
    );
    server.set_ready();
    Secure {
        address,
        authority,
        _served: served,
        _stop: stop_tx,
    }
}

/// The first answer to a CDS request for a sidecar in namespace `a`, presenting `cert`.
async fn first_answer(s: &Secure, cert: Option<&WorkloadCert>) -> Result<usize, tonic::Status> {
    let config = tls::control_plane_client_config(SERVER_NAME, s.authority.roots(), cert).unwrap();
    let channel = transport::connect_channel(
        &s.address,
        transport::ChannelOptions {
            tls: Some((config, SERVER_NAME.into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(Node {
            id: "sidecar~10.0.0.5~client.a~a.svc.cluster.local".into(),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let answer = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an answer within 10 s")?;
    Ok(answer.map_or(0, |r| r.resources.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_port_serves_a_proxy_only_to_its_own_namespace() {
    let s = start().await;
    let cert = |ns: &str| {
        s.authority
            .issue(
                &SpiffeId::new("cluster.local", ns, "client"),
                Duration::from_secs(3600),
                SystemTime::now(),
            )
            .unwrap()
    };
    let own = first_answer(&s, Some(&cert("a"))).await.unwrap();
    assert!(own > 0, "no clusters for the proxy's own namespace");

    let other = first_answer(&s, Some(&cert("b"))).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other}");
    assert!(
        other
            .message()
            .contains("spiffe://cluster.local/ns/b/sa/client"),
        "{other}"
    );

    let none = first_answer(&s, None).await.unwrap_err();
    assert_eq!(none.code(), tonic::Code::Unauthenticated, "{none}");
}
