//! Route configurations: virtual hosts, matches and what to do with a request.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::StringMatch;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteConfiguration {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualHost {
    pub name: String,
    /// `host`, `host:port`, short names, VIPs; `*` matches any.
    pub domains: Vec<String>,
    /// Shared, not copied, by the proxy's compiled router and the requests it routes.
    pub routes: Vec<Arc<Route>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub name: String,
    pub matching: RouteMatch,
    pub action: Action,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    /// Boxed, as most routes have neither (a large mesh holds thousands of routes).
    pub fault: Option<Box<Fault>>,
    pub cors: Option<Box<Cors>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
}

impl RouteMatch {
    /// Matches every request.
    pub fn any() -> Self {
        Self {
            path: PathMatch::Prefix("/".into()),
            case_sensitive: true,
            headers: vec![],
            query_params: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(String),
}

/// A header condition; pseudo-headers (`:method`, `:authority`, `:scheme`) included.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderMatch {
    pub name: String,
    pub matcher: StringMatch,
    /// Matches when the header does not match (Istio's `withoutHeaders`).
    pub invert: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMatch {
    pub name: String,
    pub matcher: StringMatch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Forward(RouteAction),
    Redirect(Redirect),
    DirectResponse { status: u32, body: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteAction {
    /// One or more clusters with weights (a single cluster has weight 100).
    pub clusters: Vec<WeightedCluster>,
    /// Overall timeout; `Some(0)` disables it.
    pub timeout_ms: Option<u64>,
    /// Shared by the routes with the same policy (most routes of a mesh have Istio's default).
    pub retry: Option<Arc<RetryPolicy>>,
    pub mirrors: Vec<Mirror>,
    pub prefix_rewrite: Option<String>,
    /// (pattern, substitution)
    pub regex_rewrite: Option<(String, String)>,
    pub host_rewrite: Option<String>,
    pub hash_policy: Vec<HashPolicy>,
    /// Allow WebSocket upgrades.
    pub upgrades: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Envoy's retry-on conditions (`5xx`, `connect-failure`, gRPC `unavailable`, ...).
    pub retry_on: Vec<String>,
    pub num_retries: u32,
    pub per_try_timeout_ms: Option<u64>,
    pub retriable_status_codes: Vec<u32>,
    /// Base interval of the jittered exponential backoff.
    pub backoff_base_ms: Option<u64>,
    /// Avoid hosts already tried.
    pub retry_other_hosts: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    pub cluster: String,
    /// Percent of requests mirrored.
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashPolicy {
    Header(String),
    Cookie {
        name: String,
        ttl_ms: Option<u64>,
        path: Option<String>,
    },
    SourceIp,
    QueryParameter(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub response_code: u32,
}

/// Header changes of a route or a weighted cluster. Most have none, and there are four per
/// route: none costs one pointer rather than three empty lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "HeaderEditList", into = "HeaderEditList")]
pub struct HeaderEdits(Option<Box<HeaderEditList>>);

/// The changes themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderEditList {
    /// Replace the header's values.
    pub set: Vec<(String, String)>,
    /// Append a value.
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderEditList {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

impl From<HeaderEditList> for HeaderEdits {
    fn from(list: HeaderEditList) -> Self {
        HeaderEdits((!list.is_empty()).then(|| Box::new(list)))
    }
}

impl From<HeaderEdits> for HeaderEditList {
    fn from(edits: HeaderEdits) -> Self {
        edits.0.map(|list| *list).unwrap_or_default()
    }
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Headers whose values are replaced.
    pub fn set(&self) -> &[(String, String)] {
        self.0.as_ref().map_or(&[], |l| &l.set)
    }

    /// Values appended.
    pub fn add(&self) -> &[(String, String)] {
        self.0.as_ref().map_or(&[], |l| &l.add)
    }

    /// Headers removed.
    pub fn remove(&self) -> &[String] {
        self.0.as_ref().map_or(&[], |l| &l.remove)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultDelay {
    pub fixed_delay_ms: u64,
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultAbort {
    pub status: AbortStatus,
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortStatus {
    Http(u32),
    Grpc(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cors {
    pub allow_origins: Vec<StringMatch>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age_secs: Option<u64>,
    pub allow_credentials: Option<bool>,
}
