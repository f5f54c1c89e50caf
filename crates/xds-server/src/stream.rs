//! The per-connection protocol, shared by both xDS variants: subscriptions, what was last sent
//! per type (the shared resource maps themselves, so per-proxy memory stays small), versions,
//! nonces, ACKs and NACKs, and what each response is recorded as.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use strait_xds::ResourceType;

use crate::Inner;
use crate::config::{Encoded, Name, Resources};
use crate::metrics::TypeLabel;
use crate::status::ConnectionInfo;

/// Which resources of a type a proxy asked for. Names are shared with the resource maps where
/// the resource exists, so a proxy subscribed to every endpoint set holds pointers, not copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    Wildcard,
    Names(BTreeSet<Name>),
}

impl Subscription {
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(n) => n.contains(name),
        }
    }

    pub fn len_hint(&self, all: usize) -> usize {
        match self {
            Subscription::Wildcard => all,
            Subscription::Names(n) => n.len(),
        }
    }

    /// Whether a state-of-the-world request asks for the same as this subscription (without
    /// building a set for every ACK).
    pub fn same_request(&self, t: ResourceType, names: &[String]) -> bool {
        match self {
            Subscription::Wildcard => {
                names.iter().any(|n| n == "*") || names.is_empty() && t.is_wildcard_in_sotw()
            }
            Subscription::Names(set) => {
                if names.is_empty() && t.is_wildcard_in_sotw()
                    || names.len() != set.len()
                    || !names.iter().all(|n| set.contains(n.as_str()))
                {
                    return false;
                }
                let mut distinct: Vec<&str> = names.iter().map(String::as_str).collect();
                distinct.sort_unstable();
                distinct.dedup();
                distinct.len() == set.len()
            }
        }
    }

    /// From a state-of-the-world request: listeners and clusters with no names are wildcard.
    pub fn from_request(t: ResourceType, names: &[String], known: &Resources) -> Subscription {
        if names.is_empty() && t.is_wildcard_in_sotw() || names.iter().any(|n| n == "*") {
            Subscription::Wildcard
        } else {
            Subscription::Names(names.iter().map(|n| intern(n, known)).collect())
        }
    }

    /// Names in `self` that `before` did not have (`None`: everything is new).
    pub fn added_since(&self, before: &Subscription) -> Option<BTreeSet<Name>> {
        match (self, before) {
            (Subscription::Names(now), Subscription::Names(old)) => {
                Some(now.difference(old).cloned().collect())
            }
            (Subscription::Names(_), Subscription::Wildcard) => Some(BTreeSet::new()),
            (Subscription::Wildcard, _) => None,
        }
    }
}

/// The shared name for `name` when a resource has it, else a new one.
pub fn intern(name: &str, known: &Resources) -> Name {
    known
        .name(name)
        .cloned()
        .unwrap_or_else(|| Name::from(name))
}

/// One type's state on one connection.
pub struct TypeState {
    pub subscription: Subscription,
    /// The resources the last response was computed from.
    pub sent_from: Option<Resources>,
    pub sent_nonce: String,
    pub sent_version: u64,
    /// When the version in the last response was published (for convergence time).
    pub published_at: Option<Instant>,
}

impl TypeState {
    pub fn new(subscription: Subscription) -> Self {
        Self {
            subscription,
            sent_from: None,
            sent_nonce: String::new(),
            sent_version: 0,
            published_at: None,
        }
    }
}

/// What a response must carry beyond the changes since the last one.
#[derive(Debug)]
pub enum Include {
    /// Only what changed.
    Changes,
    /// Every subscribed resource (a new subscription).
    All,
    /// These newly subscribed names too.
    Names(BTreeSet<Name>),
}

/// Resources of `all` in the subscription.
pub fn selected<'a>(
    all: &'a Resources,
    sub: &'a Subscription,
) -> impl Iterator<Item = (&'a Name, &'a Arc<Encoded>)> + 'a {
    all.iter().filter(move |(name, _)| sub.contains(name))
}

/// What changed within the subscription between what was sent and `now`:
/// (names added or changed, names removed).
pub fn changes(
    sent: Option<&Resources>,
    now: &Resources,
    sub: &Subscription,
) -> (Vec<Name>, Vec<Name>) {
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    for (name, enc) in selected(now, sub) {
        if sent
            .and_then(|s| s.get(name))
            .is_none_or(|old| old.hash != enc.hash)
        {
            changed.push(name.clone());
        }
    }
    if let Some(sent) = sent {
        for (name, _) in selected(sent, sub) {
            if !now.contains(name) {
                removed.push(name.clone());
            }
        }
    }
    (changed, removed)
}

/// Envoy's ordering for a consistent update: clusters, endpoints, listeners, routes.
pub const PUSH_ORDER: [ResourceType; 4] = [
    ResourceType::Cluster,
    ResourceType::Endpoint,
    ResourceType::Listener,
    ResourceType::Route,
];

/// A response about to be sent, for status and metrics.
pub struct Sent<'a> {
    pub t: ResourceType,
    pub version: u64,
    pub nonce: &'a str,
    pub resources: usize,
    pub subscribed: usize,
    pub bytes: usize,
    pub started: Instant,
}

/// Records a response in the connection's status and the metrics.
pub fn record_sent(inner: &Inner, conn: &ConnectionInfo, sent: Sent<'_>) {
    conn.update(sent.t, |s| {
        s.sent_version = sent.version.to_string();
        s.sent_nonce = sent.nonce.to_string();
        s.last_sent_resources = sent.resources;
        s.subscribed = sent.subscribed;
    });
    let label = TypeLabel {
        r#type: sent.t.short().into(),
    };
    inner.metrics.pushes.get_or_create(&label).inc();
    inner
        .metrics
        .push_bytes
        .get_or_create(&label)
        .inc_by(sent.bytes as u64);
    inner
        .metrics
        .push_seconds
        .observe(sent.started.elapsed().as_secs_f64());
}

/// Records a proxy's answer to a response: an ACK, or a NACK with its reason.
pub fn record_answer(
    inner: &Inner,
    conn: &ConnectionInfo,
    state: &mut TypeState,
    t: ResourceType,
    nack: Option<String>,
) {
    match nack {
        Some(reason) => {
            tracing::warn!(proxy = %conn.node_id, r#type = t.short(), version = state.sent_version, "proxy rejected configuration: {reason}");
            inner
                .metrics
                .nacks
                .get_or_create(&TypeLabel {
                    r#type: t.short().into(),
                })
                .inc();
            conn.update(t, |s| {
                s.last_nack = Some(reason);
                s.nacks += 1;
            });
        }
        None => {
            if let Some(p) = state.published_at.take() {
                inner
                    .metrics
                    .convergence_seconds
                    .observe(p.elapsed().as_secs_f64());
            }
            let (v, n) = (state.sent_version.to_string(), state.sent_nonce.clone());
            conn.update(t, |s| {
                s.acked_version = v;
                s.acked_nonce = n;
                s.last_nack = None;
            });
        }
    }
}
