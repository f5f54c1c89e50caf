//! Golden-file tests of translation: every directory under `tests/golden/` holds manifests
//! (`cluster1.yaml`, optionally `cluster2.yaml`), a proxy (`proxy.json`: its node, and which
//! resources to compare), optionally the gateways found not answering (`unreachable.json`) and
//! the expected resources (`expected.json`).
//! `STRAIT_UPDATE_GOLDEN=1 cargo test -p strait-translate --test golden` rewrites them.

#![allow(clippy::unwrap_used, clippy::panic)] // test harness

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use strait_config::{ConfigSet, LoadOptions, load_str};
use strait_model::{ClusterId, ClusterSource, Locality, MeshModel, MeshSettings, NetworkId};
use strait_translate::{MeshView, NodeInfo, Profile, ProxyNode, gateways};

#[derive(Deserialize)]
struct ProxySpec {
    id: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    locality: (String, String, String),
    /// Resource types to compare: listeners, routes, clusters, endpoints, names (the
    /// sidecar's DNS table), cluster_names (the cluster DNS's), secrets (those of the proxy's
    /// namespace it may ask for).
    types: Vec<String>,
    /// Only resources whose name contains one of these (all when empty).
    #[serde(default)]
    names: Vec<String>,
}

fn load(path: &Path) -> Arc<ConfigSet> {
    let text = std::fs::read_to_string(path).unwrap();
    let report = load_str(&text, &path.display().to_string(), &LoadOptions::default());
    let errors: Vec<String> = report
        .diagnostics()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "golden input must be valid: {errors:#?}");
    let mut set = ConfigSet::from_resources(report.into_resources());
    // As the control plane's registry: root VirtualServices with their delegates merged in.
    set.merge_delegates();
    Arc::new(set)
}

/// Builds the case's view and proxy and hands them to `f`.
fn with_case<T>(dir: &Path, f: impl FnOnce(&MeshView<'_>, &ProxyNode, &ProxySpec) -> T) -> T {
    let c1 = load(&dir.join("cluster1.yaml"));
    let mesh = c1.mesh_configs.first().map(|m| m.spec.clone());
    let settings = Arc::new(
        mesh.as_ref()
            .map(MeshSettings::from_config)
            .unwrap_or_default(),
    );
    let network = |c: &ConfigSet| {
        NetworkId::new(
            c.mesh_configs
                .first()
                .and_then(|m| m.spec.network.as_deref())
                .unwrap_or(""),
        )
    };
    let mut clusters = vec![ClusterSource {
        id: ClusterId::new("cluster1"),
        network: network(&c1),
        config: c1.clone(),
    }];
    if dir.join("cluster2.yaml").exists() {
        let c2 = load(&dir.join("cluster2.yaml"));
        clusters.push(ClusterSource {
            id: ClusterId::new("cluster2"),
            network: network(&c2),
            config: c2,
        });
    }
    let model = MeshModel::build(settings, &clusters);
    // DNS names of gateways resolve to documentation addresses (no lookup in tests).
    let mut table = gateways::resolve(&model, &|name: &str| {
        vec![
            if name.contains("network2") {
                "198.51.100.2"
            } else {
                "198.51.100.1"
            }
            .parse()
            .unwrap(),
        ]
    });
    // Gateways the control plane's probes found not answering: the case's `unreachable.json`.
    let unreachable: std::collections::BTreeSet<std::net::SocketAddr> =
        std::fs::read_to_string(dir.join("unreachable.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or_default();
    gateways::mark_unreachable(&mut table, &unreachable);
    // What the control plane fetched for `jwksUri`s: the case's `jwks.json`, by URI.
    let jwks: BTreeMap<String, String> = std::fs::read_to_string(dir.join("jwks.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or_default();
    let view = MeshView {
        model: &model,
        config: &c1,
        gateways: &table,
        jwks: &jwks,
        root_namespace: "istio-system",
        mesh_locality: mesh.as_ref().and_then(|m| m.locality_lb_setting.as_ref()),
        mesh_outbound_mode: None,
    };
    let spec: ProxySpec =
        serde_json::from_str(&std::fs::read_to_string(dir.join("proxy.json")).unwrap()).unwrap();
    let node = NodeInfo {
        id: spec.id.clone(),
        metadata: spec.metadata.clone(),
        labels: BTreeMap::new(),
        locality: Locality::new(&spec.locality.0, &spec.locality.1, &spec.locality.2),
    };
    let proxy = ProxyNode::from_node(&node, &ClusterId::new("cluster1")).unwrap();
    f(&view, &proxy, &spec)
}

fn run_case(dir: &Path) -> String {
    with_case(dir, |view, proxy, spec| render(view, proxy, spec, dir))
}

fn render(view: &MeshView<'_>, proxy: &ProxyNode, spec: &ProxySpec, dir: &Path) -> String {
    let generated = strait_translate::generate(view, proxy);
    let keep =
        |name: &str| spec.names.is_empty() || spec.names.iter().any(|n| name.contains(n.as_str()));
    let mut out = serde_json::Map::new();
    for t in &spec.types {
        let value = match t.as_str() {
            "listeners" => serde_json::to_value(
                generated
                    .listeners
                    .iter()
                    .filter(|r| keep(&r.name))
                    .collect::<Vec<_>>(),
            ),
            "routes" => serde_json::to_value(
                generated
                    .routes
                    .iter()
                    .filter(|r| keep(&r.name))
                    .collect::<Vec<_>>(),
            ),
            "clusters" => serde_json::to_value(
                generated
                    .clusters
                    .iter()
                    .filter(|r| keep(&r.name))
                    .collect::<Vec<_>>(),
            ),
            "endpoints" => serde_json::to_value(
                generated
                    .endpoints
                    .iter()
                    .filter(|r| keep(&r.cluster_name))
                    .collect::<Vec<_>>(),
            ),
            "names" => serde_json::to_value(strait_translate::dns::name_table(view, proxy)),
            "secrets" => serde_json::to_value(strait_translate::secrets::of_namespace(
                view.config,
                &proxy.namespace,
            )),
            "cluster_names" => serde_json::to_value(strait_translate::dns::cluster_table(
                view.model,
                &proxy.cluster,
            )),
            other => panic!("unknown resource type {other} in {}", dir.display()),
        };
        out.insert(t.clone(), value.unwrap());
    }
    serde_json::to_string_pretty(&out).unwrap() + "\n"
}

/// Proxies with equal generation keys get equal resources: the server shares one generation
/// among them, so a key that left out something translation reads would serve a proxy another
/// proxy's configuration.
#[test]
fn proxies_with_equal_keys_get_equal_resources() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let (mut checked, mut relevant_seen) = (0, 0);
    for dir in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()) {
        with_case(&dir, |view, proxy, _| {
            let profile = Profile::new(view);
            let keys = profile.keys(view, proxy);
            // Same place and ports, different everything else that keys leave out.
            let mut twin = proxy.clone();
            twin.id = format!("{}-twin", proxy.id);
            twin.service_account = "someone-else".into();
            twin.labels.insert("unrelated-label".into(), "x".into());
            twin.labels
                .insert("pod-template-hash".into(), "abc123".into());
            assert_eq!(profile.keys(view, &twin), keys, "{}", dir.display());
            assert_eq!(
                strait_translate::generate(view, &twin),
                strait_translate::generate(view, proxy),
                "{}: a proxy with the same keys got different resources",
                dir.display()
            );
            // A different locality or namespace is a different key.
            let mut moved = proxy.clone();
            moved.locality = Locality::new("elsewhere", "z", "");
            assert_ne!(profile.keys(view, &moved).endpoints, keys.endpoints);
            let mut other_ns = proxy.clone();
            other_ns.namespace = format!("{}-other", proxy.namespace);
            assert_ne!(profile.keys(view, &other_ns).outbound, keys.outbound);
            for label in profile.relevant_labels() {
                let mut relabelled = proxy.clone();
                relabelled
                    .labels
                    .insert(label.clone(), "a-value-no-selector-uses".into());
                if relabelled.labels != proxy.labels {
                    assert_ne!(profile.keys(view, &relabelled).outbound, keys.outbound);
                    relevant_seen += 1;
                }
            }
            checked += 1;
        });
    }
    assert!(checked >= 16, "only {checked} cases checked");
    assert!(
        relevant_seen > 0,
        "no case exercises a label a selector uses"
    );
}

#[test]
fn translation_matches_the_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let update = std::env::var("STRAIT_UPDATE_GOLDEN").is_ok();
    let mut failures = Vec::new();
    for dir in &dirs {
        let actual = run_case(dir);
        let golden = dir.join("expected.json");
        if update {
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            let first = expected
                .lines()
                .zip(actual.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            failures.push(format!(
                "{}: output differs from expected.json at line {}:\n  expected: {}\n  actual:   {}",
                dir.file_name().unwrap().to_string_lossy(),
                first + 1,
                expected.lines().nth(first).unwrap_or("<end>"),
                actual.lines().nth(first).unwrap_or("<end>")
            ));
        }
    }
    println!("{} golden cases", dirs.len());
    assert!(!dirs.is_empty());
    assert!(
        failures.is_empty(),
        "{}\n(run with STRAIT_UPDATE_GOLDEN=1 to accept, then review the diff)",
        failures.join("\n")
    );
}
