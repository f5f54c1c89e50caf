//! The ADS gRPC service mounted on the tonic server: routes the two ADS methods to their
//! stream handlers over [`crate::wire`]'s transport; anything else is `UNIMPLEMENTED`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

use strait_identity::transport::PeerInfo;

use crate::Inner;
use crate::caller::Caller;
use crate::wire::{Requests, ResponseBody};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
/// Largest request accepted (a state-of-the-world request names every resource it wants).
const MAX_REQUEST: usize = 64 * 1024 * 1024;
/// Responses queued per stream before its task waits for the client to read.
const QUEUED_RESPONSES: usize = 16;

/// Envoy's `AggregatedDiscoveryService`: `StreamAggregatedResources` and
/// `DeltaAggregatedResources`.
#[derive(Clone)]
pub struct AdsService {
    pub(crate) inner: Arc<Inner>,
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE;
}

fn grpc_response(body: Body) -> http::Response<Body> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

impl tower_service::Service<http::Request<Body>> for AdsService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .strip_prefix(&format!("/{SERVICE}/"))
            .map(str::to_string);
        let (tx, rx) = mpsc::channel(QUEUED_RESPONSES);
        let inner = self.inner.clone();
        // The TLS listener hands each request the client's verified certificates.
        let caller = match request.extensions().get::<PeerInfo>() {
            None => Caller::Plaintext,
            Some(peer) => Caller::Tls(strait_identity::tls::peer_identity(&peer.certs)),
        };
        match method.as_deref() {
            Some("StreamAggregatedResources") => {
                let requests = Requests::<DiscoveryRequest>::new(request.into_body(), MAX_REQUEST);
                tokio::spawn(crate::sotw::run(inner, requests, tx, caller));
            }
            Some("DeltaAggregatedResources") => {
                let requests =
                    Requests::<DeltaDiscoveryRequest>::new(request.into_body(), MAX_REQUEST);
                tokio::spawn(crate::delta::run(inner, requests, tx, caller));
            }
            _ => {
                let status = Status::unimplemented(format!(
                    "{} is not served here: this server serves {SERVICE} (StreamAggregatedResources, DeltaAggregatedResources)",
                    request.uri().path()
                ));
                return ready(Ok(status.into_http()));
            }
        }
        ready(Ok(grpc_response(Body::new(ResponseBody::new(
            rx,
            self.inner.send_budget.clone(),
        )))))
    }
}
