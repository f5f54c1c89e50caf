//! The control plane's Prometheus metrics (one struct, no globals).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub connected_proxies: Gauge,
    pub pushes: Family<TypeLabel, Counter>,
    pub push_bytes: Family<TypeLabel, Counter>,
    pub nacks: Family<TypeLabel, Counter>,
    pub push_seconds: Histogram,
    pub convergence_seconds: Histogram,
    pub snapshot_version: Gauge,
    pub cache_resources: Gauge,
    pub cache_bytes: Gauge,
    pub config_errors: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("strait");
        let m = Metrics {
            connected_proxies: Gauge::default(),
            pushes: Family::default(),
            push_bytes: Family::default(),
            nacks: Family::default(),
            push_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            convergence_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            snapshot_version: Gauge::default(),
            cache_resources: Gauge::default(),
            cache_bytes: Gauge::default(),
            config_errors: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "xds_connected_proxies",
            "Proxies connected over ADS",
            m.connected_proxies.clone(),
        );
        registry.register(
            "xds_pushes",
            "xDS responses sent, by type",
            m.pushes.clone(),
        );
        registry.register(
            "xds_push_bytes",
            "Bytes of xDS responses sent, by type",
            m.push_bytes.clone(),
        );
        registry.register(
            "xds_nacks",
            "xDS responses rejected by proxies, by type",
            m.nacks.clone(),
        );
        registry.register(
            "xds_push_duration_seconds",
            "Time to generate and send one xDS response",
            m.push_seconds.clone(),
        );
        registry.register(
            "xds_convergence_seconds",
            "Time from a configuration change being published to a proxy acknowledging it",
            m.convergence_seconds.clone(),
        );
        registry.register(
            "xds_cache_resources",
            "Distinct encoded resources held for connected proxies (shared by proxies alike)",
            m.cache_resources.clone(),
        );
        registry.register(
            "xds_cache_bytes",
            "Bytes of the encoded resources held for connected proxies",
            m.cache_bytes.clone(),
        );
        registry.register(
            "registry_snapshot_version",
            "Version of the configuration being served",
            m.snapshot_version.clone(),
        );
        registry.register(
            "registry_config_errors",
            "Invalid documents in the watched configuration (last good versions kept)",
            m.config_errors.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
