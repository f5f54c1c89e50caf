//! State-of-the-world ADS (`StreamAggregatedResources`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message;
use strait_xds::ResourceType;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, warn};

use crate::Inner;
use crate::config::ProxyConfig;
use crate::metrics::TypeLabel;
use crate::status::ConnectionInfo;
use crate::stream::{PUSH_ORDER, Subscription, TypeState, changes, selected};

type Out = mpsc::Sender<Result<DiscoveryResponse, Status>>;

pub(crate) async fn run(inner: Arc<Inner>, mut inbound: Streaming<DiscoveryRequest>, out: Out) {
    let first = match inbound.message().await {
        Ok(Some(r)) => r,
        _ => return,
    };
    let Some(conn) = inner.connect(first.node.as_ref(), "sotw", &out).await else {
        return;
    };
    let mut current_rx = inner.current.clone();
    let mut conn_state = Connection {
        inner: inner.clone(),
        conn: conn.clone(),
        types: BTreeMap::new(),
        out: out.clone(),
        counter: 0,
    };
    conn_state.request(first).await;
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => conn_state.request(req).await,
                Ok(None) => break,
                Err(e) => { debug!(proxy = %conn.node_id, "stream ended: {e}"); break; }
            },
            changed = current_rx.changed() => {
                if changed.is_err() { break; }
                conn_state.push().await;
            }
        }
    }
    inner.disconnect(conn.id);
}

struct Connection {
    inner: Arc<Inner>,
    conn: Arc<ConnectionInfo>,
    types: BTreeMap<ResourceType, TypeState>,
    out: Out,
    counter: u64,
}

impl Connection {
    fn config(&self) -> (Arc<crate::config::Current>, Arc<ProxyConfig>) {
        self.inner.config_for(&self.conn.proxy)
    }

    async fn request(&mut self, req: DiscoveryRequest) {
        let Some(t) = ResourceType::from_type_url(&req.type_url) else {
            warn!(proxy = %self.conn.node_id, type_url = %req.type_url, "unsupported resource type requested; ignored");
            return;
        };
        let wanted = Subscription::from_names(t, &req.resource_names);
        let state = self
            .types
            .entry(t)
            .or_insert_with(|| TypeState::new(wanted.clone()));
        if !req.response_nonce.is_empty() {
            if req.response_nonce != state.sent_nonce {
                return; // an answer to an older response: superseded
            }
            if let Some(err) = &req.error_detail {
                let reason = err.message.clone();
                warn!(proxy = %self.conn.node_id, r#type = t.short(), version = %req.version_info, "proxy rejected configuration: {reason}");
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
                let (v, n) = (req.version_info.clone(), req.response_nonce.clone());
                self.conn.update(t, |s| {
                    s.acked_version = v;
                    s.acked_nonce = n;
                    s.last_nack = None;
                });
            }
            if wanted == state.subscription {
                return;
            }
        }
        // A first request, a reconnect, or a change of subscription: answer with the set.
        state.subscription = wanted;
        state.sent_from = None;
        self.send(t, true).await;
    }

    async fn push(&mut self) {
        for t in PUSH_ORDER {
            if self.types.contains_key(&t) {
                self.send(t, false).await;
            }
        }
    }

    async fn send(&mut self, t: ResourceType, forced: bool) {
        let started = Instant::now();
        let (current, config) = self.config();
        let now = config.of(t);
        let Some(state) = self.types.get_mut(&t) else {
            return;
        };
        if !forced
            && state
                .sent_from
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &now))
        {
            return;
        }
        let (changed, removed) = changes(state.sent_from.as_deref(), &now, &state.subscription);
        if !forced && changed.is_empty() && removed.is_empty() {
            state.sent_from = Some(now);
            return;
        }
        // Listeners and clusters are sent whole; routes and endpoints only when they changed.
        let resources: Vec<_> = if t.is_wildcard_in_sotw() || forced {
            selected(&now, &state.subscription)
                .map(|(_, e)| e.any.clone())
                .collect()
        } else {
            changed
                .iter()
                .filter_map(|n| now.get(n))
                .map(|e| e.any.clone())
                .collect()
        };
        self.counter += 1;
        let nonce = format!("{}-{}", self.conn.id, self.counter);
        let response = DiscoveryResponse {
            version_info: current.version.to_string(),
            resources,
            type_url: t.type_url().to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let bytes = response.encoded_len() as u64;
        let count = response.resources.len();
        state.sent_from = Some(now.clone());
        state.sent_nonce = nonce.clone();
        state.sent_version = current.version;
        state.sent_at = Some(Instant::now());
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
