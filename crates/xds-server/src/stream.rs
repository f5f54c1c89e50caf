//! The per-connection protocol, shared by both xDS variants: subscriptions, what was last sent
//! per type (the shared resource maps themselves, so per-proxy memory stays small), versions,
//! nonces, ACKs and NACKs, and what each response is recorded as.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use strait_xds::ResourceType;

use crate::Inner;
use crate::config::{Encoded, Name, Resources, TypeResources};
use crate::metrics::TypeLabel;
use crate::status::ConnectionInfo;

/// A set of names, hashed with a per-process random seed (names come from clients).
pub type NameSet = foldhash::HashSet<Name>;

/// Which resources of a type a proxy asked for. Names are shared with the resource maps where
/// the resource exists, so a proxy subscribed to every endpoint set holds pointers, not copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    Wildcard,
    Names(NameSet),
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
                // As many names, all in the set: the same set unless a name repeats.
                let mut distinct: foldhash::HashSet<&str> = foldhash::HashSet::default();
                distinct.extend(names.iter().map(String::as_str));
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
                Some(now.iter().filter(|n| !old.contains(*n)).cloned().collect())
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
    let Some(sent) = sent else {
        changed.extend(selected(now, sub).map(|(n, _)| n.clone()));
        return (changed, removed);
    };
    match (sent.layers(), now.layers()) {
        (old, new) if old.len() == new.len() => {
            for (old, new) in old.iter().zip(new) {
                if !Arc::ptr_eq(old, new) {
                    merge_changes(old, new, sub, &mut changed, &mut removed);
                }
            }
        }
        _ => {
            for (name, enc) in selected(now, sub) {
                if sent.get(name).is_none_or(|old| old.hash != enc.hash) {
                    changed.push(name.clone());
                }
            }
            for (name, _) in selected(sent, sub) {
                if !now.contains(name) {
                    removed.push(name.clone());
                }
            }
        }
    }
    (changed, removed)
}

/// Walks two name-ordered maps side by side. A map derived from another shares its names and
/// unchanged encodings, so most steps are pointer comparisons.
fn merge_changes(
    old: &TypeResources,
    new: &TypeResources,
    sub: &Subscription,
    changed: &mut Vec<Name>,
    removed: &mut Vec<Name>,
) {
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) if Arc::ptr_eq(ka, kb) => std::cmp::Ordering::Equal,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some((k, _)) = a.next()
                    && sub.contains(k)
                {
                    removed.push(k.clone());
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((k, _)) = b.next()
                    && sub.contains(k)
                {
                    changed.push(k.clone());
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some((_, ea)), Some((k, eb))) = (a.next(), b.next())
                    && !Arc::ptr_eq(ea, eb)
                    && ea.hash != eb.hash
                    && sub.contains(k)
                {
                    changed.push(k.clone());
                }
            }
        }
    }
}

/// Envoy's ordering for a consistent update: clusters, endpoints, secrets, listeners, routes; then the
/// DNS name table (Istio's NDS).
pub const PUSH_ORDER: [ResourceType; 6] = [
    ResourceType::Cluster,
    ResourceType::Endpoint,
    // A listener's new certificates before the listener.
    ResourceType::Secret,
    ResourceType::Listener,
    ResourceType::Route,
    ResourceType::NameTable,
];

/// A response about to be sent, for status and metrics.
pub struct Sent {
    pub t: ResourceType,
    pub nonce: String,
    pub resources: usize,
    /// Resources of the type the proxy could be sent (for the subscription count).
    pub available: usize,
    pub bytes: usize,
    pub started: Instant,
}

/// Records a response of configuration `current` in the type's state (the nonce to expect
/// back), the connection's status and the metrics.
pub fn record_sent(
    inner: &Inner,
    conn: &ConnectionInfo,
    state: &mut TypeState,
    current: &crate::config::Current,
    sent: Sent,
) {
    let subscribed = state.subscription.len_hint(sent.available);
    conn.update(sent.t, |s| {
        s.sent_version = current.version.to_string();
        s.sent_nonce = sent.nonce.clone();
        s.last_sent_resources = sent.resources;
        s.subscribed = subscribed;
    });
    state.sent_nonce = sent.nonce;
    state.sent_version = current.version;
    state.published_at = Some(current.published_at);
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

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::Any;

    use super::*;

    fn enc(v: u8) -> Arc<Encoded> {
        let any = Any {
            type_url: "t".into(),
            value: vec![v],
        };
        Arc::new(Encoded::new(&any, u64::from(v)))
    }

    fn names(v: &[Name]) -> Vec<&str> {
        v.iter().map(|n| &**n).collect()
    }

    #[test]
    fn changes_between_a_map_and_one_derived_from_it() {
        let old: TypeResources = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, n)| (Name::from(*n), enc(i as u8)))
            .collect();
        let mut new = old.clone();
        new.insert(Name::from("b"), enc(9)); // changed
        new.remove("c"); // removed
        new.insert(Name::from("bb"), enc(7)); // added
        new.insert(Name::from("d"), enc(3)); // re-encoded, same content
        let (old, new) = (
            Resources::from_layers(vec![Arc::new(old)]),
            Resources::from_layers(vec![Arc::new(new)]),
        );
        let (changed, removed) = changes(Some(&old), &new, &Subscription::Wildcard);
        assert_eq!(
            (names(&changed), names(&removed)),
            (vec!["b", "bb"], vec!["c"])
        );
        // Only what the proxy asked for.
        let sub = Subscription::Names(["b", "c"].iter().map(|n| Name::from(*n)).collect());
        let (changed, removed) = changes(Some(&old), &new, &sub);
        assert_eq!((names(&changed), names(&removed)), (vec!["b"], vec!["c"]));
        // The very same maps: nothing.
        assert_eq!(
            changes(Some(&new), &new, &Subscription::Wildcard),
            (vec![], vec![])
        );
        // Nothing sent yet: everything subscribed.
        let (changed, _) = changes(None, &new, &sub);
        assert_eq!(names(&changed), vec!["b"]);
    }

    #[test]
    fn a_request_naming_the_same_set_in_another_order_is_the_same_subscription() {
        let known = Resources::default();
        let req = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sub = Subscription::from_request(ResourceType::Endpoint, &req(&["a", "b"]), &known);
        assert!(sub.same_request(ResourceType::Endpoint, &req(&["b", "a"])));
        assert!(!sub.same_request(ResourceType::Endpoint, &req(&["a", "a"])));
        assert!(!sub.same_request(ResourceType::Endpoint, &req(&["a"])));
        assert!(!sub.same_request(ResourceType::Endpoint, &req(&["a", "b", "c"])));
        let all = Subscription::from_request(ResourceType::Cluster, &[], &known);
        assert_eq!(all, Subscription::Wildcard);
        assert!(all.same_request(ResourceType::Cluster, &[]));
        assert!(!all.same_request(ResourceType::Cluster, &req(&["a"])));
    }
}
