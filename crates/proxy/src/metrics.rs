//! Istio's standard metrics, with Istio's names and labels: `istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`,
//! `istio_tcp_sent_bytes_total`, `istio_tcp_received_bytes_total`,
//! `istio_tcp_connections_opened_total` and `_closed_total`. Label values are constants or shared
//! strings, so recording a request copies pointers, not text.

use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label value: a constant, or text shared by every request that carries it.
#[derive(Debug, Clone)]
pub enum Text {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Text {
    pub const UNKNOWN: Text = Text::Static("unknown");

    /// The text, or `unknown` when empty.
    pub fn known_or_unknown(s: &str) -> Text {
        if s.is_empty() {
            Text::UNKNOWN
        } else {
            Text::Shared(Arc::from(s))
        }
    }

    /// [`Text::known_or_unknown`] sharing the text it is given.
    pub fn known_or_unknown_shared(s: &Arc<str>) -> Text {
        if s.is_empty() {
            Text::UNKNOWN
        } else {
            Text::Shared(s.clone())
        }
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Static(s) => s,
            Text::Shared(s) => s,
        }
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        let (a, b) = (&**self, &**other);
        // Most label values are shared: the same text, compared by address first.
        (std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()) || a == b
    }
}

impl Eq for Text {}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::Shared(Arc::from(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::Shared(Arc::from(s))
    }
}

impl EncodeLabelValue for Text {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&**self, encoder)
    }
}

/// Who is at one end of a request, as Istio labels it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub workload: Text,
    pub namespace: Text,
    pub principal: Text,
    pub app: Text,
    pub version: Text,
    pub cluster: Text,
}

impl Peer {
    pub fn unknown() -> Peer {
        Peer {
            workload: Text::UNKNOWN,
            namespace: Text::UNKNOWN,
            principal: Text::UNKNOWN,
            app: Text::UNKNOWN,
            version: Text::UNKNOWN,
            cluster: Text::UNKNOWN,
        }
    }
}

/// The destination service of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceLabels {
    pub host: Text,
    pub name: Text,
    pub namespace: Text,
}

impl ServiceLabels {
    pub fn unknown() -> ServiceLabels {
        ServiceLabels {
            host: Text::UNKNOWN,
            name: Text::UNKNOWN,
            namespace: Text::UNKNOWN,
        }
    }

    pub fn of(s: &strait_xds::cluster::ServiceInfo) -> ServiceLabels {
        ServiceLabels {
            host: Text::known_or_unknown(&s.host),
            name: Text::known_or_unknown(&s.name),
            namespace: Text::known_or_unknown(&s.namespace),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: &'static str,
    pub source_workload: Text,
    pub source_workload_namespace: Text,
    pub source_principal: Text,
    pub source_app: Text,
    pub source_version: Text,
    pub source_cluster: Text,
    pub source_canonical_service: Text,
    pub source_canonical_revision: Text,
    pub destination_workload: Text,
    pub destination_workload_namespace: Text,
    pub destination_principal: Text,
    pub destination_app: Text,
    pub destination_version: Text,
    pub destination_service: Text,
    pub destination_service_name: Text,
    pub destination_service_namespace: Text,
    pub destination_cluster: Text,
    pub destination_canonical_service: Text,
    pub destination_canonical_revision: Text,
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub grpc_response_status: Text,
    pub response_flags: Text,
    pub connection_security_policy: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: &'static str,
    pub source_workload: Text,
    pub source_workload_namespace: Text,
    pub source_principal: Text,
    pub source_app: Text,
    pub source_version: Text,
    pub source_cluster: Text,
    pub destination_workload: Text,
    pub destination_workload_namespace: Text,
    pub destination_principal: Text,
    pub destination_app: Text,
    pub destination_version: Text,
    pub destination_service: Text,
    pub destination_service_name: Text,
    pub destination_service_namespace: Text,
    pub destination_cluster: Text,
    pub request_protocol: &'static str,
    pub response_flags: Text,
    pub connection_security_policy: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // Istio's default buckets for request duration (milliseconds).
    Histogram::new([
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ])
}

fn bytes_histogram() -> Histogram {
    // Istio's default buckets for sizes: 1 B to 1 GB by powers of ten.
    Histogram::new([
        1.0,
        10.0,
        100.0,
        1000.0,
        10000.0,
        100000.0,
        1000000.0,
        10000000.0,
        100000000.0,
        1000000000.0,
    ])
}

/// The four request metrics of one label set.
#[derive(Clone)]
pub struct RequestSeries {
    pub requests: Counter,
    pub duration: Histogram,
    pub request_bytes: Histogram,
    pub response_bytes: Histogram,
}

/// The last label set a connection's requests were recorded under, and its series: the next
/// request with the same labels (nearly every one on a keep-alive connection) skips hashing
/// two dozen label values to find them.
#[derive(Default)]
pub struct SeriesMemo(std::sync::Mutex<Option<(RequestLabels, RequestSeries)>>);

/// The metric families, registered once per proxy (no global state).
pub struct Metrics {
    /// The families' series by label set, found with one fast hash instead of four SipHash
    /// passes over every label (the families' own maps).
    series: std::sync::RwLock<
        std::collections::HashMap<RequestLabels, RequestSeries, foldhash::fast::RandomState>,
    >,
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: HistogramFamily<RequestLabels>,
    pub request_bytes: HistogramFamily<RequestLabels>,
    pub response_bytes: HistogramFamily<RequestLabels>,
    pub tcp_sent: Family<TcpLabels, Counter>,
    pub tcp_received: Family<TcpLabels, Counter>,
    pub tcp_opened: Family<TcpLabels, Counter>,
    pub tcp_closed: Family<TcpLabels, Counter>,
    /// Inbound mTLS handshakes that failed (untrusted or expired peer, plaintext to a
    /// TLS-only port that looked like TLS, ...): Envoy's `ssl.handshake` errors.
    pub tls_handshake_failures: Counter,
    /// Downstream connections closed by an idle timeout, by `protocol` (`http`: Envoy's
    /// `http.<prefix>.downstream_cx_idle_timeout`; `tcp`: `tcp.<prefix>.idle_timeout`).
    pub idle_timeouts: Family<IdleLabels, Counter>,
    /// Authorization decisions (Envoy's `rbac.allowed` / `rbac.denied` / `rbac.shadow_*`).
    pub authorization: Family<AuthzLabels, Counter>,
    /// Downstream connections each worker serves (Envoy's `worker_<N>.downstream_cx_active`).
    worker_connections: Family<WorkerLabels, Gauge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct IdleLabels {
    /// `http` (no request in flight) or `tcp` (no bytes either way).
    pub protocol: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthzLabels {
    /// `http` (per request) or `tcp` (per connection).
    pub protocol: &'static str,
    /// `allowed`, `denied`, `shadow_allowed`, `shadow_denied`.
    pub result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = HistogramFamily::new_with_constructor(duration_histogram as fn() -> _);
        let request_bytes = HistogramFamily::new_with_constructor(bytes_histogram as fn() -> _);
        let response_bytes = HistogramFamily::new_with_constructor(bytes_histogram as fn() -> _);
        let tcp_sent = Family::<TcpLabels, Counter>::default();
        let tcp_received = Family::<TcpLabels, Counter>::default();
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        let tcp_closed = Family::<TcpLabels, Counter>::default();
        registry.register(
            "istio_requests",
            "Requests handled by the proxy",
            requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream in TCP connections",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream in TCP connections",
            tcp_received.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "strait_tls_handshake_failures",
            "Inbound mTLS handshakes that failed",
            tls_handshake_failures.clone(),
        );
        let idle_timeouts = Family::<IdleLabels, Counter>::default();
        registry.register(
            "strait_idle_timeouts",
            "Downstream connections closed by the idle timeout, by protocol",
            idle_timeouts.clone(),
        );
        let authorization = Family::<AuthzLabels, Counter>::default();
        registry.register(
            "strait_authorization_decisions",
            "Authorization decisions of RBAC filters, by protocol and result",
            authorization.clone(),
        );
        let worker_connections = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "strait_worker_connections_active",
            "Downstream connections each worker thread is serving",
            worker_connections.clone(),
        );
        Metrics {
            series: Default::default(),
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            tcp_sent,
            tcp_received,
            tcp_opened,
            tcp_closed,
            tls_handshake_failures,
            idle_timeouts,
            authorization,
            worker_connections,
        }
    }

    /// Counts a connection closed by its idle timeout.
    pub fn record_idle_timeout(&self, protocol: &'static str) {
        self.idle_timeouts
            .get_or_create(&IdleLabels { protocol })
            .inc();
    }

    /// The gauge of connections worker `index` serves.
    pub fn worker_connections(&self, index: usize) -> Gauge {
        self.worker_connections
            .get_or_create(&WorkerLabels {
                worker: index.to_string(),
            })
            .clone()
    }

    /// Counts one authorization verdict.
    pub fn record_authorization(&self, protocol: &'static str, v: &crate::authz::Verdict) {
        let result = if v.allowed() { "allowed" } else { "denied" };
        self.authorization
            .get_or_create(&AuthzLabels { protocol, result })
            .inc();
        if let Some(shadow) = v.shadow_allowed {
            let result = if shadow {
                "shadow_allowed"
            } else {
                "shadow_denied"
            };
            self.authorization
                .get_or_create(&AuthzLabels { protocol, result })
                .inc();
        }
    }

    /// The series of `labels`, remembered in `memo` (a connection's) for its next request.
    pub fn request_series_memo(&self, memo: &SeriesMemo, labels: &RequestLabels) -> RequestSeries {
        let mut last = memo.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((l, series)) = last.as_ref()
            && l == labels
        {
            return series.clone();
        }
        let series = self.request_series(labels);
        *last = Some((labels.clone(), series.clone()));
        series
    }

    /// The series of `labels`, created on first use.
    pub fn request_series(&self, labels: &RequestLabels) -> RequestSeries {
        if let Ok(map) = self.series.read()
            && let Some(s) = map.get(labels)
        {
            return s.clone();
        }
        let s = RequestSeries {
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        };
        if let Ok(mut map) = self.series.write() {
            map.insert(labels.clone(), s.clone());
        }
        s
    }

    /// A gRPC status as a label value (the 17 codes without allocating).
    pub fn grpc_status(status: Option<&str>) -> Text {
        const CODES: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        match status {
            None => Text::Static(""),
            Some(s) => CODES
                .iter()
                .find(|c| **c == s)
                .map_or_else(|| Text::from(s), |c| Text::Static(c)),
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(code: u16, workload: Text) -> RequestLabels {
        let t = || Text::Static("x");
        RequestLabels {
            reporter: "source",
            source_workload: workload,
            source_workload_namespace: t(),
            source_principal: t(),
            source_app: t(),
            source_version: t(),
            source_cluster: t(),
            source_canonical_service: t(),
            source_canonical_revision: t(),
            destination_workload: t(),
            destination_workload_namespace: t(),
            destination_principal: t(),
            destination_app: t(),
            destination_version: t(),
            destination_service: t(),
            destination_service_name: t(),
            destination_service_namespace: t(),
            destination_cluster: t(),
            destination_canonical_service: t(),
            destination_canonical_revision: t(),
            request_protocol: "http",
            response_code: code,
            grpc_response_status: Text::Static(""),
            response_flags: Text::Static("-"),
            connection_security_policy: "unknown",
        }
    }

    #[test]
    fn label_values_are_equal_by_content_whether_shared_or_not() {
        let shared: Arc<str> = Arc::from("reviews-v1");
        let (a, b) = (Text::Shared(shared.clone()), Text::Shared(shared));
        assert_eq!(a, b);
        assert_eq!(a, Text::from("reviews-v1"));
        assert_eq!(Text::Static("reviews-v1"), a);
        assert_ne!(a, Text::from("reviews-v2"));
        // The same address, another length: another value.
        let long: &'static str = "reviews-v1-extra";
        assert_ne!(Text::Static(&long[..10]), Text::Static(long));
    }

    #[test]
    fn a_connections_requests_count_into_their_label_sets_series() {
        let metrics = Metrics::new();
        let memo = SeriesMemo::default();
        let workload: Arc<str> = Arc::from("client-0");
        for code in [200, 200, 503, 200] {
            let l = labels(code, Text::Shared(workload.clone()));
            metrics.request_series_memo(&memo, &l).requests.inc();
        }
        // Equal labels built from other allocations find the same series.
        let copy = labels(200, Text::from("client-0"));
        metrics.request_series_memo(&memo, &copy).requests.inc();
        assert_eq!(
            metrics
                .request_series(&labels(200, Text::from("client-0")))
                .requests
                .get(),
            4
        );
        assert_eq!(
            metrics
                .request_series(&labels(503, Text::from("client-0")))
                .requests
                .get(),
            1
        );
        let text = metrics.encode();
        assert!(text.contains("response_code=\"503\""), "{text}");
    }
}
