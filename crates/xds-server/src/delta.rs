//! Incremental ADS (`DeltaAggregatedResources`): only changed resources are sent, removed ones
//! are named, and subscriptions change by difference.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use prost::Message;
use strait_xds::ResourceType;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, warn};

use crate::Inner;
use crate::metrics::TypeLabel;
use crate::status::ConnectionInfo;
use crate::stream::{PUSH_ORDER, Subscription, TypeState, changes};

type Out = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

pub(crate) async fn run(
    inner: Arc<Inner>,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    out: Out,
) {
    let first = match inbound.message().await {
        Ok(Some(r)) => r,
        _ => return,
    };
    let Some(conn) = inner.connect_delta(first.node.as_ref(), &out).await else {
        return;
    };
    let mut current_rx = inner.current.clone();
    let mut c = Connection {
        inner: inner.clone(),
        conn: conn.clone(),
        types: BTreeMap::new(),
        known: HashMap::new(),
        out: out.clone(),
        counter: 0,
    };
    c.request(first).await;
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => c.request(req).await,
                Ok(None) => break,
                Err(e) => { debug!(proxy = %conn.node_id, "stream ended: {e}"); break; }
            },
            changed = current_rx.changed() => {
                if changed.is_err() { break; }
                for t in PUSH_ORDER {
                    if c.types.contains_key(&t) { c.send(t).await; }
                }
            }
        }
    }
    inner.disconnect(conn.id);
}

struct Connection {
    inner: Arc<Inner>,
    conn: Arc<ConnectionInfo>,
    types: BTreeMap<ResourceType, TypeState>,
    /// Versions a reconnecting client said it already holds (used once).
    known: HashMap<ResourceType, BTreeMap<String, String>>,
    out: Out,
    counter: u64,
}

impl Connection {
    async fn request(&mut self, req: DeltaDiscoveryRequest) {
        let Some(t) = ResourceType::from_type_url(&req.type_url) else {
            warn!(proxy = %self.conn.node_id, type_url = %req.type_url, "unsupported resource type requested; ignored");
            return;
        };
        let first = !self.types.contains_key(&t);
        if first {
            let wildcard = t.is_wildcard_in_sotw() && req.resource_names_subscribe.is_empty()
                || req.resource_names_subscribe.iter().any(|n| n == "*");
            let sub = if wildcard {
                Subscription::Wildcard
            } else {
                Subscription::Names(BTreeSet::new())
            };
            self.types.insert(t, TypeState::new(sub));
            if !req.initial_resource_versions.is_empty() {
                self.known.insert(
                    t,
                    req.initial_resource_versions
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                );
            }
        }
        let Some(state) = self.types.get_mut(&t) else {
            return;
        };
        if !req.response_nonce.is_empty() && req.response_nonce == state.sent_nonce {
            if let Some(err) = &req.error_detail {
                let reason = err.message.clone();
                warn!(proxy = %self.conn.node_id, r#type = t.short(), "proxy rejected configuration: {reason}");
                self.inner
                    .metrics
                    .nacks
                    .get_or_create(&TypeLabel {
                        r#type: t.short().into(),
                    })
                    .inc();
                self.conn.update(t, |s| {
                    s.last_nack = Some(reason);
                    s.nacks += 1;
                });
            } else {
                if let Some(p) = state.published_at.take() {
                    self.inner
                        .metrics
                        .convergence_seconds
                        .observe(p.elapsed().as_secs_f64());
                }
                let n = req.response_nonce.clone();
                let v = state.sent_version.to_string();
                self.conn.update(t, |s| {
                    s.acked_version = v;
                    s.acked_nonce = n;
                    s.last_nack = None;
                });
            }
        }
        let mut resubscribed = false;
        if let Subscription::Names(names) = &mut state.subscription {
            for n in &req.resource_names_subscribe {
                resubscribed |= names.insert(n.clone());
            }
            for n in &req.resource_names_unsubscribe {
                names.remove(n);
            }
        }
        if first || resubscribed {
            self.send(t).await;
        }
    }

    async fn send(&mut self, t: ResourceType) {
        let started = Instant::now();
        let (current, config) = self.inner.config_for(&self.conn.proxy);
        let now = config.of(t);
        let Some(state) = self.types.get_mut(&t) else {
            return;
        };
        let (mut changed, removed) = changes(state.sent_from.as_deref(), &now, &state.subscription);
        if let Some(known) = self.known.remove(&t) {
            changed.retain(|n| {
                known
                    .get(n)
                    .is_none_or(|v| now.get(n).is_none_or(|e| e.version() != *v))
            });
        }
        state.sent_from = Some(now.clone());
        if changed.is_empty() && removed.is_empty() {
            return;
        }
        let resources: Vec<Resource> = changed
            .iter()
            .filter_map(|n| now.get(n).map(|e| (n, e)))
            .map(|(n, e)| Resource {
                name: n.clone(),
                version: e.version(),
                resource: Some(e.any.clone()),
                ..Default::default()
            })
            .collect();
        self.counter += 1;
        let nonce = format!("{}-{}", self.conn.id, self.counter);
        let response = DeltaDiscoveryResponse {
            system_version_info: current.version.to_string(),
            resources,
            type_url: t.type_url().to_string(),
            removed_resources: removed,
            nonce: nonce.clone(),
            ..Default::default()
        };
        let bytes = response.encoded_len() as u64;
        let count = response.resources.len();
        state.sent_nonce = nonce.clone();
        state.sent_version = current.version;
        state.published_at = Some(current.published_at);
        let subscribed = state.subscription.len_hint(now.len());
        let version = current.version.to_string();
        self.conn.update(t, |s| {
            s.sent_version = version;
            s.sent_nonce = nonce;
            s.last_sent_resources = count;
            s.subscribed = subscribed;
        });
        let label = TypeLabel {
            r#type: t.short().into(),
        };
        self.inner.metrics.pushes.get_or_create(&label).inc();
        self.inner
            .metrics
            .push_bytes
            .get_or_create(&label)
            .inc_by(bytes);
        self.inner
            .metrics
            .push_seconds
            .observe(started.elapsed().as_secs_f64());
        let _ = self.out.send(Ok(response)).await;
    }
}
