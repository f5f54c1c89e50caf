//! The per-connection protocol, shared by both xDS variants: subscriptions, what was last sent
//! per type (an `Arc` of the shared resource map, so per-proxy memory stays small), versions,
//! nonces, ACKs and NACKs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use strait_xds::ResourceType;

use crate::config::{Encoded, TypeResources};

/// Which resources of a type a proxy asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    Wildcard,
    Names(BTreeSet<String>),
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

    /// From a state-of-the-world request: listeners and clusters with no names are wildcard.
    pub fn from_names(t: ResourceType, names: &[String]) -> Subscription {
        if names.is_empty() && t.is_wildcard_in_sotw() || names.iter().any(|n| n == "*") {
            Subscription::Wildcard
        } else {
            Subscription::Names(names.iter().cloned().collect())
        }
    }
}

/// One type's state on one connection.
pub struct TypeState {
    pub subscription: Subscription,
    /// The resource map the last response was computed from.
    pub sent_from: Option<Arc<TypeResources>>,
    /// Names the client was last told about (delta: what it holds).
    pub sent_nonce: String,
    pub sent_version: u64,
    pub sent_at: Option<Instant>,
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
            sent_at: None,
            published_at: None,
        }
    }
}

/// Resources of `all` in the subscription.
pub fn selected<'a>(
    all: &'a TypeResources,
    sub: &'a Subscription,
) -> impl Iterator<Item = (&'a String, &'a Arc<Encoded>)> + 'a {
    all.iter().filter(move |(name, _)| sub.contains(name))
}

/// What changed within the subscription between what was sent and `now`:
/// (names added or changed, names removed).
pub fn changes(
    sent: Option<&TypeResources>,
    now: &TypeResources,
    sub: &Subscription,
) -> (Vec<String>, Vec<String>) {
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
        for name in sent.keys().filter(|n| sub.contains(n)) {
            if !now.contains_key(name) {
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
