//! Simulated proxies: ADS clients that behave as an Envoy sidecar does on connect — clusters
//! and listeners by wildcard, then the endpoints of every EDS cluster and the routes every
//! listener names — and ACK everything. State-of-the-world or delta. Each reports when it is
//! fully synced and when it ACKed a response carrying the resource the runner is waiting for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

/// The four resource types, in the order used for per-type counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Type {
    Cluster = 0,
    Endpoint = 1,
    Listener = 2,
    Route = 3,
}

impl Type {
    pub const ALL: [Type; 4] = [Type::Cluster, Type::Endpoint, Type::Listener, Type::Route];

    pub fn url(self) -> &'static str {
        match self {
            Type::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Type::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Type::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Type::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Type::Cluster => "CDS",
            Type::Endpoint => "EDS",
            Type::Listener => "LDS",
            Type::Route => "RDS",
        }
    }

    fn of_url(url: &str) -> Option<Type> {
        Type::ALL.into_iter().find(|t| t.url() == url)
    }
}

/// Which ADS variant the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    StateOfTheWorld,
    Delta,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Variant::StateOfTheWorld => "SotW",
            Variant::Delta => "delta",
        }
    }
}

/// The resource the runner waits for: every client that receives it reports its ACK.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: u64,
    pub r#type: Type,
    pub name: String,
}

#[derive(Debug)]
pub enum Event {
    /// The client holds every cluster, endpoint set, listener and route it needs, all ACKed.
    Synced {
        at: Instant,
    },
    /// The client ACKed a response carrying the target.
    Acked {
        client: usize,
        target: u64,
        at: Instant,
    },
    Failed {
        client: usize,
        error: String,
    },
}

/// What the clients of one run share with the runner.
pub struct Shared {
    pub target: Mutex<Option<Target>>,
    /// Response bytes (protobuf-encoded `DiscoveryResponse`/`DeltaDiscoveryResponse`) received,
    /// by type.
    pub bytes: [AtomicU64; 4],
    pub responses: [AtomicU64; 4],
    pub events: mpsc::UnboundedSender<Event>,
}

impl Shared {
    pub fn new(events: mpsc::UnboundedSender<Event>) -> Arc<Shared> {
        Arc::new(Shared {
            target: Mutex::new(None),
            bytes: Default::default(),
            responses: Default::default(),
            events,
        })
    }

    pub fn set_target(&self, t: Option<Target>) {
        if let Ok(mut g) = self.target.lock() {
            *g = t;
        }
    }

    pub fn total_bytes(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.bytes[i].load(Ordering::Relaxed))
    }

    fn record(&self, t: Type, bytes: usize) {
        self.bytes[t as usize].fetch_add(bytes as u64, Ordering::Relaxed);
        self.responses[t as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn target_in<'a>(&self, t: Type, mut names: impl Iterator<Item = &'a str>) -> Option<u64> {
        let g = self.target.lock().ok()?;
        let target = g.as_ref()?;
        (target.r#type == t && names.any(|n| n == target.name)).then_some(target.id)
    }
}

/// Who a simulated proxy is: Istio's node ID and metadata for a sidecar.
#[derive(Debug, Clone)]
pub struct Identity {
    pub ip: String,
    pub pod: String,
    pub namespace: String,
    pub app: String,
    pub cluster: String,
    pub region: String,
    pub zone: String,
}

impl Identity {
    fn node(&self) -> Node {
        let s = |v: &str| Value {
            kind: Some(ValueKind::StringValue(v.to_string())),
        };
        let labels = Struct {
            fields: [("app".to_string(), s(&self.app))].into_iter().collect(),
        };
        Node {
            id: format!(
                "sidecar~{}~{}.{}~{}.svc.cluster.local",
                self.ip, self.pod, self.namespace, self.namespace
            ),
            cluster: self.app.clone(),
            metadata: Some(Struct {
                fields: [
                    ("CLUSTER_ID".to_string(), s(&self.cluster)),
                    ("NAMESPACE".to_string(), s(&self.namespace)),
                    ("NETWORK".to_string(), s("network1")),
                    (
                        "LABELS".to_string(),
                        Value {
                            kind: Some(ValueKind::StructValue(labels)),
                        },
                    ),
                ]
                .into_iter()
                .collect(),
            }),
            locality: Some(Locality {
                region: self.region.clone(),
                zone: self.zone.clone(),
                sub_zone: String::new(),
            }),
            ..Default::default()
        }
    }
}

// What the simulated proxies decode: only the fields they act on. Field numbers are those of
// Envoy's messages; everything else is skipped without being copied, so the runner's own CPU
// stays small next to the control plane's.

// Every field the server sends is declared (unused ones as raw bytes), so `encoded_len` is
// the size of the message on the wire.

/// `DiscoveryResponse`.
#[derive(Clone, PartialEq, Message)]
struct SotwResponse {
    #[prost(string, tag = "1")]
    version_info: String,
    #[prost(message, repeated, tag = "2")]
    resources: Vec<AnyLite>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// `DeltaDiscoveryResponse`.
#[derive(Clone, PartialEq, Message)]
struct DeltaResponse {
    #[prost(bytes = "bytes", tag = "1")]
    system_version_info: Bytes,
    #[prost(message, repeated, tag = "2")]
    resources: Vec<ResourceLite>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
    #[prost(string, repeated, tag = "6")]
    removed_resources: Vec<String>,
}

/// `Resource` of a delta response.
#[derive(Clone, PartialEq, Message)]
struct ResourceLite {
    #[prost(bytes = "bytes", tag = "1")]
    version: Bytes,
    #[prost(message, optional, tag = "2")]
    resource: Option<AnyLite>,
    #[prost(string, tag = "3")]
    name: String,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct AnyLite {
    #[prost(bytes = "bytes", tag = "1")]
    type_url: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// The name (field 1) of a ClusterLoadAssignment or RouteConfiguration.
#[derive(Clone, PartialEq, Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

/// `Cluster`: name, discovery type, EDS service name.
#[derive(Clone, PartialEq, Message)]
struct ClusterLite {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, optional, tag = "2")]
    r#type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds_cluster_config: Option<EdsConfigLite>,
}

#[derive(Clone, PartialEq, Message)]
struct EdsConfigLite {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// Envoy's `Cluster.DiscoveryType.EDS`.
const EDS: i32 = 3;

fn name_of(any: &AnyLite) -> String {
    NameOnly::decode(any.value.clone())
        .map(|n| n.name)
        .unwrap_or_default()
}

/// A cluster's name, and its EDS name when it is an EDS cluster (its service name, else its
/// own name).
fn eds_name(any: &AnyLite) -> Option<(String, Option<String>)> {
    let c = ClusterLite::decode(any.value.clone()).ok()?;
    let service = c
        .eds_cluster_config
        .map(|e| e.service_name)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| c.name.clone());
    Some((c.name, (c.r#type == Some(EDS)).then_some(service)))
}

/// The route configurations a listener's HTTP connection managers name.
fn route_names(any: &AnyLite) -> Option<(String, BTreeSet<String>)> {
    let l = Listener::decode(any.value.clone()).ok()?;
    let mut names = BTreeSet::new();
    for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        for f in &chain.filters {
            if let Some(ConfigType::TypedConfig(tc)) = &f.config_type
                && tc.type_url.ends_with("HttpConnectionManager")
                && let Ok(hcm) = HttpConnectionManager::decode(tc.value.as_slice())
                && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
            {
                names.insert(rds.route_config_name);
            }
        }
    }
    Some((l.name, names))
}

/// What a client holds, shared by both variants.
#[derive(Default)]
struct Holdings {
    /// Cluster name → its EDS name, if it is an EDS cluster.
    clusters: BTreeMap<String, Option<String>>,
    listeners: BTreeMap<String, BTreeSet<String>>,
    endpoints: BTreeSet<String>,
    routes: BTreeSet<String>,
    acked: [bool; 4],
    synced: bool,
}

impl Holdings {
    fn eds_names(&self) -> BTreeSet<String> {
        self.clusters.values().flatten().cloned().collect()
    }

    fn route_names(&self) -> BTreeSet<String> {
        self.listeners.values().flatten().cloned().collect()
    }

    fn is_synced(&self) -> bool {
        self.acked[Type::Cluster as usize]
            && self.acked[Type::Listener as usize]
            && self.eds_names().is_subset(&self.endpoints)
            && self.route_names().is_subset(&self.routes)
    }
}

pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(addr.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Opens an ADS stream that sends `Req` and decodes the light `Resp`.
async fn open<Req, Resp>(
    ch: Channel,
    path: &'static str,
    requests: mpsc::Receiver<Req>,
) -> anyhow::Result<tonic::Streaming<Resp>>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch).max_decoding_message_size(256 * 1024 * 1024);
    grpc.ready().await.context("the ADS channel is not ready")?;
    let response = grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(requests)),
            http::uri::PathAndQuery::from_static(path),
            ProstCodec::<Req, Resp>::default(),
        )
        .await?;
    Ok(response.into_inner())
}

/// Runs one simulated proxy until `stop` flips or the stream ends.
pub async fn run(
    index: usize,
    addr: String,
    identity: Identity,
    variant: Variant,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let result = match variant {
        Variant::StateOfTheWorld => sotw(index, &addr, &identity, &shared, stop).await,
        Variant::Delta => delta(index, &addr, &identity, &shared, stop).await,
    };
    if let Err(e) = result {
        let _ = shared.events.send(Event::Failed {
            client: index,
            error: format!("{e:#}"),
        });
    }
}

fn note_progress(index: usize, shared: &Shared, h: &mut Holdings, t: Type, target: Option<u64>) {
    h.acked[t as usize] = true;
    let at = Instant::now();
    if let Some(id) = target {
        let _ = shared.events.send(Event::Acked {
            client: index,
            target: id,
            at,
        });
    }
    if !h.synced && h.is_synced() {
        h.synced = true;
        let _ = shared.events.send(Event::Synced { at });
    }
}

async fn sotw(
    index: usize,
    addr: &str,
    id: &Identity,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ch = channel(addr).await?;
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let request = |t: Type, names: Vec<String>, version: String, nonce: String| DiscoveryRequest {
        type_url: t.url().to_string(),
        resource_names: names,
        version_info: version,
        response_nonce: nonce,
        ..Default::default()
    };
    let mut first = request(Type::Cluster, Vec::new(), String::new(), String::new());
    first.node = Some(id.node());
    tx.send(first).await?;
    tx.send(request(
        Type::Listener,
        Vec::new(),
        String::new(),
        String::new(),
    ))
    .await?;
    let mut inbound = open::<DiscoveryRequest, SotwResponse>(ch, SOTW_PATH, rx).await?;
    let mut h = Holdings::default();
    // The last (version, nonce) per type, carried on subscription changes as Envoy does.
    let mut last: [(String, String); 4] = Default::default();
    let mut subscribed: [Vec<String>; 4] = Default::default();
    loop {
        let response: SotwResponse = tokio::select! {
            m = inbound.message() => match m? { Some(r) => r, None => return Ok(()) },
            _ = stop.changed() => return Ok(()),
        };
        let Some(t) = Type::of_url(&response.type_url) else {
            continue;
        };
        shared.record(t, response.encoded_len());
        let mut names: Vec<String> = Vec::with_capacity(response.resources.len());
        match t {
            Type::Cluster => {
                h.clusters = response.resources.iter().filter_map(eds_name).collect();
                names.extend(h.clusters.keys().cloned());
            }
            Type::Listener => {
                h.listeners = response.resources.iter().filter_map(route_names).collect();
                names.extend(h.listeners.keys().cloned());
            }
            Type::Endpoint | Type::Route => {
                names.extend(response.resources.iter().map(name_of));
                let held = if t == Type::Endpoint {
                    &mut h.endpoints
                } else {
                    &mut h.routes
                };
                held.extend(names.iter().cloned());
            }
        }
        last[t as usize] = (response.version_info.clone(), response.nonce.clone());
        tx.send(request(
            t,
            subscribed[t as usize].clone(),
            response.version_info,
            response.nonce,
        ))
        .await?;
        let target = shared.target_in(t, names.iter().map(String::as_str));
        note_progress(index, shared, &mut h, t, target);
        // New clusters or listeners change what the proxy subscribes to.
        let dependent = match t {
            Type::Cluster => Some((Type::Endpoint, h.eds_names())),
            Type::Listener => Some((Type::Route, h.route_names())),
            Type::Endpoint | Type::Route => None,
        };
        if let Some((dependent, wanted)) = dependent {
            let wanted: Vec<String> = wanted.into_iter().collect();
            if wanted != subscribed[dependent as usize] {
                subscribed[dependent as usize] = wanted.clone();
                let (v, n) = last[dependent as usize].clone();
                tx.send(request(dependent, wanted, v, n)).await?;
            }
        }
    }
}

async fn delta(
    index: usize,
    addr: &str,
    id: &Identity,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ch = channel(addr).await?;
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let subscribe = |t: Type, add: Vec<String>, remove: Vec<String>| DeltaDiscoveryRequest {
        type_url: t.url().to_string(),
        resource_names_subscribe: add,
        resource_names_unsubscribe: remove,
        ..Default::default()
    };
    let mut first = subscribe(Type::Cluster, Vec::new(), Vec::new());
    first.node = Some(id.node());
    tx.send(first).await?;
    tx.send(subscribe(Type::Listener, Vec::new(), Vec::new()))
        .await?;
    let mut inbound = open::<DeltaDiscoveryRequest, DeltaResponse>(ch, DELTA_PATH, rx).await?;
    let mut h = Holdings::default();
    loop {
        let response: DeltaResponse = tokio::select! {
            m = inbound.message() => match m? { Some(r) => r, None => return Ok(()) },
            _ = stop.changed() => return Ok(()),
        };
        let Some(t) = Type::of_url(&response.type_url) else {
            continue;
        };
        shared.record(t, response.encoded_len());
        // Only clusters and listeners change what the proxy subscribes to.
        let structural = matches!(t, Type::Cluster | Type::Listener);
        let (before_eds, before_routes) = if structural {
            (h.eds_names(), h.route_names())
        } else {
            Default::default()
        };
        for name in &response.removed_resources {
            match t {
                Type::Cluster => drop(h.clusters.remove(name)),
                Type::Listener => drop(h.listeners.remove(name)),
                Type::Endpoint => drop(h.endpoints.remove(name)),
                Type::Route => drop(h.routes.remove(name)),
            }
        }
        for r in &response.resources {
            match (t, &r.resource) {
                (Type::Cluster, Some(any)) => {
                    if let Some((name, eds)) = eds_name(any) {
                        h.clusters.insert(name, eds);
                    }
                }
                (Type::Listener, Some(any)) => {
                    if let Some((name, routes)) = route_names(any) {
                        h.listeners.insert(name, routes);
                    }
                }
                (Type::Endpoint, _) => drop(h.endpoints.insert(r.name.clone())),
                (Type::Route, _) => drop(h.routes.insert(r.name.clone())),
                _ => {}
            }
        }
        tx.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await?;
        let target = shared.target_in(t, response.resources.iter().map(|r| r.name.as_str()));
        note_progress(index, shared, &mut h, t, target);
        let dependents = if structural {
            vec![
                (Type::Endpoint, before_eds, h.eds_names()),
                (Type::Route, before_routes, h.route_names()),
            ]
        } else {
            Vec::new()
        };
        for (dependent, before, after) in dependents {
            let add: Vec<String> = after.difference(&before).cloned().collect();
            let remove: Vec<String> = before.difference(&after).cloned().collect();
            if !add.is_empty() || !remove.is_empty() {
                tx.send(subscribe(dependent, add, remove)).await?;
            }
        }
    }
}
