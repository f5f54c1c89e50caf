//! `strait analyze` over the YAML of the two design documents Strait comes from
//! (`shared/reference/seeds/`). Their YAML is what users bring; some of it is not valid Istio,
//! and the analysis must say so precisely.

#![allow(clippy::panic, clippy::unwrap_used)] // test helpers: a missing seed stops the test loudly

use std::path::{Path, PathBuf};

use strait_analyze::{Analysis, ClusterConfig, analyze, codes};
use strait_config::{LoadOptions, load_str};
use strait_model::ClusterId;

fn seeds_dir() -> PathBuf {
    let candidates = [
        std::env::var("STRAIT_SEEDS").ok().map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/seeds")),
        Some(PathBuf::from("/work/shared/reference/seeds")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!("the seed documents were not found: set STRAIT_SEEDS to shared/reference/seeds")
        })
}

/// The fenced YAML blocks of the seeds that hold Kubernetes objects, as one file each.
fn seed_yaml() -> Vec<(String, String)> {
    let fence = regex::Regex::new(r"(?s)```yaml\n(.*?)```").unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(seeds_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let blocks: Vec<&str> = fence
                .captures_iter(&text)
                .map(|c| c.get(1).unwrap().as_str())
                .filter(|b| b.contains("apiVersion:"))
                .collect();
            (
                f.file_name().unwrap().to_string_lossy().to_string(),
                blocks.join("\n---\n"),
            )
        })
        .collect()
}

fn analysis() -> Analysis {
    let clusters: Vec<ClusterConfig> = seed_yaml()
        .into_iter()
        .map(|(name, yaml)| {
            let report = load_str(&yaml, &name, &LoadOptions::default());
            ClusterConfig {
                name: ClusterId::new("cluster1"),
                report,
                links: Vec::new(),
            }
        })
        .collect();
    analyze(&clusters)
}

/// A finding with this code about this resource whose text contains `needle`.
fn has(a: &Analysis, code: &str, resource: &str, needle: &str) -> bool {
    a.messages.iter().any(|m| {
        m.code == code && m.resource.as_deref() == Some(resource) && m.to_string().contains(needle)
    })
}

#[test]
fn the_seed_yaml_that_is_not_valid_istio_is_named_precisely() {
    let a = analysis();
    for m in &a.messages {
        println!("{m}");
    }
    let err = codes::SCHEMA_VALIDATION_ERROR.code;
    // Istio rejects `distribute` together with `failover` (the seeds combine them three times).
    for dr in [
        "DestinationRule sample/cross-cluster-destination",
        "DestinationRule prod/locality-lb",
        "DestinationRule prod/multi-cloud-dr",
    ] {
        assert!(
            has(
                &a,
                err,
                dr,
                "can not simultaneously specify 'distribute' and 'failover'"
            ),
            "{dr}"
        );
    }
    // `failover` with a topology label in `failoverPriority` is rejected too.
    assert!(has(
        &a,
        err,
        "DestinationRule prod/failover-policy",
        "failoverPriority[0]"
    ));
    // Placeholders are not addresses.
    assert!(has(
        &a,
        err,
        "ServiceEntry istio-system/external-svc-cluster2",
        "<CLUSTER2_EW_GATEWAY_IP>"
    ));
    assert!(has(
        &a,
        err,
        "ServiceEntry prod/external-database",
        "<CLUSTER2_DATABASE_IP>"
    ));
    // A STATIC ServiceEntry's endpoints must be IPs, not service names.
    assert!(has(
        &a,
        err,
        "ServiceEntry istio-system/cross-cluster-user-service",
        "user-service.production.svc.cluster.local\" is not a valid IP address"
    ));
    // `healthCheck` is not a ServiceEntry field.
    assert!(has(
        &a,
        err,
        "ServiceEntry default/external-api",
        "spec.healthCheck: unknown field"
    ));
    // Deprecated `consecutiveErrors` is accepted with a warning.
    assert!(has(
        &a,
        codes::DEPRECATED_FIELD.code,
        "DestinationRule sample/cross-cluster-destination",
        "consecutiveErrors"
    ));
    // Linkerd's mirrored backend does not exist until the west cluster is linked.
    assert!(has(
        &a,
        codes::TRAFFIC_SPLIT_BACKEND_NOT_FOUND.code,
        "TrafficSplit prod/backend-split",
        "backend-api-west"
    ));
    // `.global` hosts are accepted, with a note.
    assert!(has(
        &a,
        codes::GLOBAL_SUFFIX_HOST.code,
        "ServiceEntry prod/backend-service-multicluster",
        "backend.prod.global"
    ));
    // EnvoyFilter is outside Strait's scope.
    assert!(a.messages.iter().any(
        |m| m.code == codes::NOT_SUPPORTED_BY_STRAIT.code && m.message.contains("EnvoyFilter")
    ));
    // The valid parts are accepted: the east-west Gateway and the exported Service validate.
    assert!(!a.messages.iter().any(|m| m.code == err
        && m.resource.as_deref() == Some("Gateway istio-system/cross-network-gateway")));
    assert!(
        !a.messages
            .iter()
            .any(|m| m.code == err && m.resource.as_deref() == Some("Service prod/backend-api"))
    );
}
