//! Incremental ADS (`DeltaAggregatedResources`): only changed resources are sent, removed ones
//! are named, and subscriptions change by difference.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use strait_xds::ResourceType;
use tracing::{debug, warn};

use crate::Inner;
use crate::config::{Name, Resources};
use crate::status::ConnectionInfo;
use crate::stream::{
    Include, PUSH_ORDER, Sent, Subscription, TypeState, changes, intern, record_answer, record_sent,
};
use crate::wire::{DeltaEntry, Outbound, Outgoing, Requests};

pub(crate) async fn run(
    inner: Arc<Inner>,
    mut inbound: Requests<DeltaDiscoveryRequest>,
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
        .connect(first.node.as_ref(), "delta", &out, &caller)
        .await
    else {
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
    /// Versions a reconnecting client said it already holds (used once).
    known: HashMap<ResourceType, BTreeMap<String, String>>,
    out: Outbound,
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
                Subscription::Names(Default::default())
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
            let nack = req.error_detail.as_ref().map(|e| e.message.clone());
            record_answer(&self.inner, &self.conn, state, t, nack);
        }
        let mut added = BTreeSet::new();
        if let Subscription::Names(names) = &mut state.subscription {
            let known = if req.resource_names_subscribe.is_empty() {
                Resources::default()
            } else {
                self.inner
                    .config_for(&self.conn.proxy)
                    .1
                    .served(t, &self.conn)
            };
            for n in &req.resource_names_subscribe {
                if !names.contains(n.as_str()) {
                    let name = intern(n, &known);
                    names.insert(name.clone());
                    added.insert(name);
                }
            }
            for n in &req.resource_names_unsubscribe {
                names.remove(n.as_str());
            }
        }
        if first {
            // Nothing sent yet: everything subscribed goes, and names that do not exist are
            // answered as removed.
            self.send(t, Include::Names(added)).await;
        } else if !added.is_empty() {
            self.send(t, Include::Names(added)).await;
        }
    }

    async fn send(&mut self, t: ResourceType, include: Include) {
        let started = Instant::now();
        let (current, config) = self.inner.config_for(&self.conn.proxy);
        let now = config.served(t, &self.conn);
        let Some(state) = self.types.get_mut(&t) else {
            return;
        };
        if matches!(include, Include::Changes)
            && state.sent_from.as_ref().is_some_and(|s| s.same_as(&now))
        {
            return;
        }
        let sent_from = match include {
            Include::All => None,
            _ => state.sent_from.as_ref(),
        };
        let (changed, mut removed) = changes(sent_from, &now, &state.subscription);
        let mut names: BTreeSet<Name> = changed.into_iter().collect();
        if let Include::Names(added) = &include {
            for n in added {
                if now.contains(n) {
                    names.insert(n.clone());
                } else {
                    // Asked for and absent: say so, so the proxy need not wait for it.
                    removed.push(n.clone());
                }
            }
        }
        if let Some(known) = self.known.remove(&t) {
            names.retain(|n| {
                known
                    .get(&**n)
                    .is_none_or(|v| now.get(n).is_none_or(|e| *e.version != **v))
            });
        }
        state.sent_from = Some(now.clone());
        // The first answer to a subscription goes out even when empty: a proxy with no
        // listeners (no capture, no Sidecar) is still told so, and does not wait for them.
        let first = state.sent_nonce.is_empty();
        if names.is_empty() && removed.is_empty() && !first {
            return;
        }
        let resources: Vec<DeltaEntry> = names
            .into_iter()
            .filter_map(|n| {
                now.get(&n).map(|e| DeltaEntry {
                    version: e.version.clone(),
                    any: e.any.clone(),
                    name: n,
                })
            })
            .collect();
        self.counter += 1;
        let nonce = format!("{}-{}", self.conn.id, self.counter);
        let count = resources.len();
        let message = Outgoing::delta(
            &current.version.to_string(),
            t.type_url(),
            &nonce,
            &removed,
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
