//! The ADS client: one gRPC stream to the control plane, incremental (delta) when the server
//! offers it and state of the world otherwise. Clusters and listeners by wildcard; the endpoints
//! and routes they name, as they come and go. Every response is ACKed, or NACKed with the reasons
//! the store gives; the store keeps serving what it had while the control plane is away, and the
//! client reconnects with jittered exponential backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::grpc;
use super::store::{Store, Update};
use strait_xds::ResourceType;

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Order of the initial subscriptions (Envoy's: clusters before listeners; then the DNS name
/// table when the proxy answers DNS).
const WILDCARD: [ResourceType; 3] = [
    ResourceType::Cluster,
    ResourceType::Listener,
    ResourceType::NameTable,
];

/// Which ADS variant to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Delta, falling back to state of the world if the server does not implement it.
    Auto,
    Delta,
    StateOfTheWorld,
}

/// The connection's state, for the admin API.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConnectionStatus {
    pub connected: bool,
    pub variant: String,
    pub last_error: Option<String>,
    pub reconnects: u64,
    pub acks: u64,
    pub nacks: u64,
}

/// Shared between the client, the proxy and the admin API.
pub struct Shared {
    pub store: Mutex<Store>,
    pub status: Mutex<ConnectionStatus>,
    /// Bumped whenever the store changes.
    pub changed: watch::Sender<u64>,
    /// Whether to ask for the DNS name table.
    names: bool,
}

impl Shared {
    /// `names`: also ask for the DNS proxy's name table.
    pub fn new(names: bool) -> Arc<Shared> {
        Arc::new(Shared {
            store: Mutex::new(Store::default()),
            status: Mutex::new(ConnectionStatus::default()),
            changed: watch::channel(0).0,
            names,
        })
    }

    /// The wildcard types this proxy subscribes to, in order.
    fn wildcard(&self) -> impl Iterator<Item = ResourceType> + '_ {
        WILDCARD
            .into_iter()
            .filter(|t| *t != ResourceType::NameTable || self.names)
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    fn with_status(&self, f: impl FnOnce(&mut ConnectionStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }
}

/// Runs the client until `stop` flips.
pub async fn run(
    address: String,
    node: Node,
    variant: Variant,
    transport: XdsTransport,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut delta = variant != Variant::StateOfTheWorld;
    let mut failures: u32 = 0;
    loop {
        let attempt = async {
            let channel = connect(&address, &transport).await?;
            if delta {
                delta_stream(channel, &node, &shared).await
            } else {
                sotw_stream(channel, &node, &shared).await
            }
        };
        let outcome = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        shared.with_status(|s| s.connected = false);
        match outcome {
            Ok(progressed) => {
                info!(xds = %address, "the control plane closed the xDS stream; reconnecting");
                if progressed {
                    failures = 0;
                }
            }
            Err(StreamError::Unimplemented) if variant == Variant::Auto && delta => {
                info!("the control plane does not serve delta xDS; using state of the world");
                delta = false;
                continue;
            }
            Err(e) => {
                if matches!(
                    e,
                    StreamError::Failed {
                        progressed: true,
                        ..
                    }
                ) {
                    failures = 0;
                }
                warn!(xds = %address, error = %e, "xDS stream failed; serving the last good configuration");
                shared.with_status(|s| s.last_error = Some(e.to_string()));
            }
        }
        failures = failures.saturating_add(1);
        shared.with_status(|s| s.reconnects += 1);
        let wait = backoff(failures, fastrand::f64());
        debug!(?wait, "reconnecting to the control plane");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Exponential from 250 ms to 30 s, with full jitter over the upper half.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let base = 250u64.saturating_mul(1 << failures.clamp(1, 8).saturating_sub(1));
    let cap = base.min(30_000) as f64;
    Duration::from_millis((cap / 2.0 + cap / 2.0 * jitter) as u64)
}

#[derive(Debug)]
enum StreamError {
    Unimplemented,
    Failed { reason: String, progressed: bool },
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Unimplemented => write!(f, "not implemented by the server"),
            StreamError::Failed { reason, .. } => f.write_str(reason),
        }
    }
}

fn failed(reason: impl std::fmt::Display) -> StreamError {
    StreamError::Failed {
        reason: reason.to_string(),
        progressed: false,
    }
}

/// TLS to the control plane (Istio's 15012).
#[derive(Debug, Clone)]
pub struct XdsTls {
    /// The name its certificate must carry (`istiod.istio-system.svc`).
    pub server_name: String,
    /// Roots that verify it before the proxy has a trust bundle of its own.
    pub roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// How long a connection over TLS waits for the proxy's first certificate.
const FIRST_CERTIFICATE_WAIT: Duration = Duration::from_secs(10);

/// How the client reaches the control plane.
#[derive(Clone)]
pub struct XdsTransport {
    /// `SO_MARK`, so the pod's capture rules let the proxy's own xDS connection out.
    pub mark: Option<u32>,
    pub tls: Option<XdsTls>,
    /// Presented as the client certificate once the proxy has one.
    pub identity: Arc<crate::identity::MeshIdentity>,
}

/// Connects to the control plane, over TLS when configured (verifying its name against the
/// bootstrap roots and the current trust bundle, presenting the workload certificate if any).
async fn connect(address: &str, transport: &XdsTransport) -> Result<Channel, StreamError> {
    let tls = match &transport.tls {
        None => None,
        Some(t) => {
            // The control plane's TLS port serves a proxy only with its mesh certificate
            // (Istio's xDS authorization): with an identity configured, wait (a bounded time)
            // for the first one rather than be refused.
            if transport.identity.enabled {
                transport
                    .identity
                    .wait_for_certificate(FIRST_CERTIFICATE_WAIT)
                    .await;
            }
            let current = transport.identity.certificate();
            let config = strait_identity::tls::control_plane_client_config(
                &t.server_name,
                &t.roots,
                current.as_deref(),
            )
            .map_err(failed)?;
            Some((config, t.server_name.clone()))
        }
    };
    strait_identity::transport::connect_channel(
        address,
        strait_identity::transport::ChannelOptions {
            mark: transport.mark,
            tls,
            keepalive: None,
        },
    )
    .await
    .map_err(failed)
}

async fn open<Req, Resp>(
    channel: Channel,
    path: &'static str,
    requests: mpsc::Receiver<Req>,
) -> Result<grpc::Responses<Resp>, StreamError>
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default,
{
    match grpc::open(channel, path, requests).await {
        Ok(r) => Ok(r),
        Err(grpc::GrpcError::Status {
            code: tonic::Code::Unimplemented,
            ..
        }) => Err(StreamError::Unimplemented),
        Err(e) => Err(failed(e)),
    }
}

fn mark_open(shared: &Shared, variant: &str) {
    shared.with_status(|s| {
        s.connected = true;
        s.variant = variant.into();
        s.last_error = None;
    });
    info!(variant, "xDS stream open");
}

/// The next response; `None` when the server ended the stream.
async fn next<R: prost::Message + Default>(
    responses: &mut grpc::Responses<R>,
    progressed: bool,
) -> Result<Option<R>, StreamError> {
    responses.message().await.map_err(|e| StreamError::Failed {
        reason: e.to_string(),
        progressed,
    })
}

fn unknown_type(type_url: &str) -> Option<Status> {
    nack_status(Some(format!("this proxy does not handle {type_url}")))
}

/// Applies an update and says how to answer: `None` is an ACK, `Some(reasons)` a NACK.
fn apply(shared: &Shared, kind: ResourceType, update: Update) -> Option<String> {
    let applied = shared.with_store(|s| {
        let a = s.apply(kind, update);
        if a.changed {
            s.retain_wanted();
        }
        a
    });
    if applied.changed {
        shared.notify();
    }
    if applied.rejected.is_empty() {
        shared.with_status(|s| s.acks += 1);
        None
    } else {
        let reason = applied.rejected.join("; ");
        warn!(kind = kind.short(), %reason, "rejected configuration (NACK); keeping the last good version");
        shared.with_status(|s| s.nacks += 1);
        Some(reason)
    }
}

fn nack_status(reason: Option<String>) -> Option<Status> {
    reason.map(|message| Status {
        code: tonic::Code::InvalidArgument as i32,
        message,
        details: vec![],
    })
}

/// The endpoint, route and secret names the store wants now.
fn wanted(shared: &Shared) -> [(ResourceType, BTreeSet<String>); 3] {
    shared.with_store(|s| {
        [
            (ResourceType::Endpoint, s.wanted_endpoints()),
            (ResourceType::Route, s.wanted_routes()),
            (ResourceType::Secret, s.wanted_secrets()),
        ]
    })
}

async fn delta_stream(channel: Channel, node: &Node, shared: &Shared) -> Result<bool, StreamError> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let send = |r: DeltaDiscoveryRequest| {
        let tx = tx.clone();
        async move {
            tx.send(r)
                .await
                .map_err(|_| failed("the xDS stream closed"))
        }
    };
    for (i, kind) in shared.wildcard().enumerate() {
        send(DeltaDiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: kind.type_url().into(),
            ..Default::default()
        })
        .await?;
    }
    // After a reconnect, ask again for what the current clusters and listeners name.
    let mut subscribed: BTreeMap<ResourceType, BTreeSet<String>> = BTreeMap::new();
    for (kind, names) in wanted(shared) {
        if !names.is_empty() {
            send(DeltaDiscoveryRequest {
                type_url: kind.type_url().into(),
                resource_names_subscribe: names.iter().cloned().collect(),
                ..Default::default()
            })
            .await?;
        }
        subscribed.insert(kind, names);
    }
    let mut responses = open::<_, DeltaDiscoveryResponse>(channel, DELTA_PATH, rx).await?;
    mark_open(shared, "delta");
    let mut progressed = false;
    loop {
        let Some(response) = next(&mut responses, progressed).await? else {
            return Ok(progressed);
        };
        progressed = true;
        let Some(kind) = ResourceType::from_type_url(&response.type_url) else {
            send(DeltaDiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                error_detail: unknown_type(&response.type_url),
                ..Default::default()
            })
            .await?;
            continue;
        };
        let update = Update {
            version: response.system_version_info.clone(),
            resources: response
                .resources
                .into_iter()
                .filter_map(|r| r.resource.map(|any| (r.name, any)))
                .collect(),
            removed: response.removed_resources,
            complete: false,
        };
        let verdict = apply(shared, kind, update);
        // Subscriptions first, so endpoints and routes follow new clusters and listeners.
        for (k, names) in wanted(shared) {
            let old = subscribed.entry(k).or_default();
            let add: Vec<String> = names.difference(old).cloned().collect();
            let drop: Vec<String> = old.difference(&names).cloned().collect();
            if !add.is_empty() || !drop.is_empty() {
                send(DeltaDiscoveryRequest {
                    type_url: k.type_url().into(),
                    resource_names_subscribe: add,
                    resource_names_unsubscribe: drop,
                    ..Default::default()
                })
                .await?;
                *old = names;
            }
        }
        send(DeltaDiscoveryRequest {
            type_url: response.type_url,
            response_nonce: response.nonce,
            error_detail: nack_status(verdict),
            ..Default::default()
        })
        .await?;
    }
}

async fn sotw_stream(channel: Channel, node: &Node, shared: &Shared) -> Result<bool, StreamError> {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let send = |r: DiscoveryRequest| {
        let tx = tx.clone();
        async move {
            tx.send(r)
                .await
                .map_err(|_| failed("the xDS stream closed"))
        }
    };
    // Per type: the names asked for (None = wildcard), the last accepted version, the last nonce.
    let mut names: BTreeMap<ResourceType, BTreeSet<String>> = BTreeMap::new();
    let mut nonces: BTreeMap<ResourceType, String> = BTreeMap::new();
    let version = |kind: ResourceType| {
        shared.with_store(|s| s.versions.get(&kind).cloned().unwrap_or_default())
    };
    for (i, kind) in shared.wildcard().enumerate() {
        send(DiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: kind.type_url().into(),
            version_info: version(kind),
            ..Default::default()
        })
        .await?;
    }
    for (kind, wanted_names) in wanted(shared) {
        if !wanted_names.is_empty() {
            send(DiscoveryRequest {
                type_url: kind.type_url().into(),
                resource_names: wanted_names.iter().cloned().collect(),
                ..Default::default()
            })
            .await?;
        }
        names.insert(kind, wanted_names);
    }
    let mut responses = open::<_, DiscoveryResponse>(channel, SOTW_PATH, rx).await?;
    mark_open(shared, "sotw");
    let mut progressed = false;
    loop {
        let Some(response) = next(&mut responses, progressed).await? else {
            return Ok(progressed);
        };
        progressed = true;
        let Some(kind) = ResourceType::from_type_url(&response.type_url) else {
            send(DiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                error_detail: unknown_type(&response.type_url),
                ..Default::default()
            })
            .await?;
            continue;
        };
        let update = Update {
            version: response.version_info.clone(),
            resources: response
                .resources
                .into_iter()
                .map(|any| (String::new(), any))
                .collect(),
            removed: vec![],
            complete: kind.is_wildcard_in_sotw(),
        };
        let verdict = apply(shared, kind, update);
        nonces.insert(kind, response.nonce.clone());
        let accepted_version = version(kind);
        send(DiscoveryRequest {
            type_url: response.type_url,
            version_info: accepted_version,
            resource_names: names
                .get(&kind)
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default(),
            response_nonce: response.nonce,
            error_detail: nack_status(verdict),
            ..Default::default()
        })
        .await?;
        for (k, wanted_names) in wanted(shared) {
            if names.get(&k) != Some(&wanted_names) {
                send(DiscoveryRequest {
                    type_url: k.type_url().into(),
                    version_info: version(k),
                    resource_names: wanted_names.iter().cloned().collect(),
                    response_nonce: nonces.get(&k).cloned().unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
                names.insert(k, wanted_names);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_thirty_seconds_with_jitter() {
        assert_eq!(backoff(1, 0.0), Duration::from_millis(125));
        assert_eq!(backoff(1, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(1000));
        assert_eq!(backoff(50, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(50, 0.0), Duration::from_secs(15));
    }
}
