//! State-of-the-world ADS (`StreamAggregatedResources`). Listeners and clusters are sent whole;
//! routes and endpoints only when they changed or were newly asked for, as the xDS protocol
//! allows for those types.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use strait_xds::ResourceType;
use tracing::{debug, warn};

use crate::Inner;
use crate::config::ProxyConfig;
use crate::status::ConnectionInfo;
use crate::stream::{
    Include, PUSH_ORDER, Sent, Subscription, TypeState, changes, record_answer, record_sent,
    selected,
};
use crate::wire::{Outbound, Outgoing, Requests};

pub(crate) async fn run(
    inner: Arc<Inner>,
    mut inbound: Requests<DiscoveryRequest>,
    out: Outbound,
    caller: crate::caller::Caller,
) {
    let first = match inbound.message().await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(status) => {
            let _ = out.send(Err(status)).await;
            return;
        }
    };
    let Some(conn) = inner
        .connect(first.node.as_ref(), "sotw", &out, &caller)
        .await
    else {
        return;
    };
    let mut current_rx = inner.current.clone();
    let mut c = Connection {
        inner: inner.clone(),
        conn: conn.clone(),
        types: BTreeMap::new(),
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
                    if c.types.contains_key(&t) { c.send(t, Include::Changes).await; }
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
    out: Outbound,
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
        let Some(state) = self.types.get_mut(&t) else {
            // The first request for this type on this stream (also after a reconnect, whatever
            // nonce it carries): answer with everything asked for.
            let known = self.config().1.served(t, &self.conn);
            let wanted = Subscription::from_request(t, &req.resource_names, &known);
            self.types.insert(t, TypeState::new(wanted));
            self.send(t, Include::All).await;
            return;
        };
        if !req.response_nonce.is_empty() {
            if req.response_nonce != state.sent_nonce {
                return; // an answer to an older response: superseded by the one in flight
            }
            let nack = req.error_detail.as_ref().map(|e| e.message.clone());
            record_answer(&self.inner, &self.conn, state, t, nack);
        }
        if state.subscription.same_request(t, &req.resource_names) {
            return;
        }
        let known = self
            .inner
            .config_for(&self.conn.proxy)
            .1
            .served(t, &self.conn);
        let wanted = Subscription::from_request(t, &req.resource_names, &known);
        let Some(state) = self.types.get_mut(&t) else {
            return;
        };
        let include = match wanted.added_since(&state.subscription) {
            Some(names) => Include::Names(names),
            None => Include::All,
        };
        state.subscription = wanted;
        self.send(t, include).await;
    }

    async fn send(&mut self, t: ResourceType, include: Include) {
        let started = Instant::now();
        let (current, config) = self.config();
        let now = config.served(t, &self.conn);
        let Some(state) = self.types.get_mut(&t) else {
            return;
        };
        if matches!(include, Include::Changes)
            && state.sent_from.as_ref().is_some_and(|s| s.same_as(&now))
        {
            return;
        }
        let (changed, removed) = changes(state.sent_from.as_ref(), &now, &state.subscription);
        let whole = t.is_wildcard_in_sotw() || matches!(include, Include::All);
        let resources: Vec<bytes::Bytes> = if whole {
            if matches!(include, Include::Changes) && changed.is_empty() && removed.is_empty() {
                state.sent_from = Some(now);
                return;
            }
            selected(&now, &state.subscription)
                .map(|(_, e)| e.any.clone())
                .collect()
        } else {
            let mut names: std::collections::BTreeSet<&str> =
                changed.iter().map(|n| &**n).collect();
            if let Include::Names(added) = &include {
                names.extend(added.iter().map(|n| &**n));
            }
            names
                .into_iter()
                .filter_map(|n| now.get(n))
                .map(|e| e.any.clone())
                .collect()
        };
        state.sent_from = Some(now.clone());
        if resources.is_empty() && !whole {
            return; // nothing the proxy holds changed
        }
        self.counter += 1;
        let nonce = format!("{}-{}", self.conn.id, self.counter);
        let count = resources.len();
        let message = Outgoing::sotw(
            &current.version.to_string(),
            t.type_url(),
            &nonce,
            resources,
        );
        record_sent(
            &self.inner,
            &self.conn,
            state,
            &current,
            Sent {
                t,
                nonce,
                resources: count,
                available: now.len(),
                bytes: message.wire_len(),
                started,
            },
        );
        let _ = self.out.send(Ok(message)).await;
    }
}
