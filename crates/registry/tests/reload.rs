//! The registry watching a real directory: edit, break, fix and delete files, and see each
//! change published as a snapshot (with the last good version kept while a document is broken).

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use strait_config::Kind;
use strait_model::{ClusterId, Hostname};
use strait_registry::{ClusterSpec, Registry, RegistryOptions, Snapshot};
use tokio::sync::watch;

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: helloworld, namespace: sample}\nspec: {ports: [{port: 5000, name: http}], selector: {app: helloworld}}\n";

fn pod(ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: hw-v1, namespace: sample, labels: {{app: helloworld, version: v1}}}}\nstatus: {{podIP: {ip}}}\n"
    )
}

fn dr(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: helloworld, namespace: sample}}\nspec:\n  host: helloworld\n  subsets: [{{name: {subset}, labels: {{version: v1}}}}]\n"
    )
}

fn se(host: &str, addresses: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext, namespace: sample}}\nspec: {{hosts: [{host}], {addresses}ports: [{{number: 80, name: http, protocol: HTTP}}], resolution: DNS, location: MESH_EXTERNAL}}\n"
    )
}

/// Waits (at most 10 s) for a snapshot newer than `after`.
async fn next(rx: &mut watch::Receiver<Arc<Snapshot>>, after: u64) -> Arc<Snapshot> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            {
                let s = rx.borrow_and_update().clone();
                if s.version > after {
                    return s;
                }
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no snapshot after version {after} within 10 s"))
}

fn subsets(s: &Snapshot) -> Vec<String> {
    s.clusters[&ClusterId::new("c1")]
        .destination_rules
        .iter()
        .flat_map(|d| d.spec.subsets.iter().map(|x| x.name.clone()))
        .collect()
}

fn endpoint_ips(s: &Snapshot) -> Vec<String> {
    let host = Hostname::new("helloworld.sample.svc.cluster.local");
    s.model
        .service(&host, &ClusterId::new("c1"))
        .map(|v| v.endpoints.iter().map(|e| e.address.to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_breaks_fixes_and_deletes_are_published_as_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(
        path("service.yaml"),
        format!("{SERVICE}---\n{}", pod("10.1.0.5")),
    )
    .unwrap();
    std::fs::write(path("dr.yaml"), dr("v1")).unwrap();
    let options = RegistryOptions {
        debounce: Duration::from_millis(50),
        ..Default::default()
    };
    let registry = Registry::load(
        vec![ClusterSpec {
            id: ClusterId::new("c1"),
            paths: vec![dir.path().to_path_buf()],
            network: None,
        }],
        options,
    );
    let first = registry.snapshot();
    assert_eq!(first.version, 1);
    assert_eq!(subsets(&first), vec!["v1"]);
    assert_eq!(endpoint_ips(&first), vec!["10.1.0.5"]);
    let mut rx = registry.subscribe();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(registry.watch(stop_rx));

    // Edit: the pod moves; only endpoints change.
    std::fs::write(
        path("service.yaml"),
        format!("{SERVICE}---\n{}", pod("10.1.0.6")),
    )
    .unwrap();
    let s2 = next(&mut rx, 1).await;
    assert_eq!(endpoint_ips(&s2), vec!["10.1.0.6"]);
    let change = s2.changes_since(&first);
    assert_eq!(change.services.endpoints_changed.len(), 1);
    assert!(change.endpoints_only());
    assert_eq!(
        change
            .config
            .iter()
            .map(|k| k.kind)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([Kind::Pod])
    );

    // Break: an invalid subset name; the last good version stays and the error is reported.
    std::fs::write(path("dr.yaml"), dr("Not_Valid")).unwrap();
    let s3 = next(&mut rx, s2.version).await;
    assert_eq!(subsets(&s3), vec!["v1"], "last good version in effect");
    assert!(
        s3.problems
            .iter()
            .any(|d| d.is_error() && d.to_string().contains("subset name is invalid: Not_Valid")),
        "{:?}",
        s3.problems
    );
    assert!(
        s3.problems
            .iter()
            .any(|d| d.to_string().contains("last good version"))
    );
    assert!(s3.changes_since(&s2).config.is_empty(), "no object changed");

    // Fix: the new version takes effect and the problem goes away.
    std::fs::write(path("dr.yaml"), dr("v2")).unwrap();
    let s4 = next(&mut rx, s3.version).await;
    assert_eq!(subsets(&s4), vec!["v2"]);
    assert!(s4.problems.is_empty(), "{:?}", s4.problems);
    let change = s4.changes_since(&s3);
    assert_eq!(change.config.len(), 1);
    assert!(
        !change.endpoints_only(),
        "a DestinationRule change needs a full push"
    );

    // Delete: the file's objects are removed.
    std::fs::remove_file(path("dr.yaml")).unwrap();
    let s5 = next(&mut rx, s4.version).await;
    assert!(subsets(&s5).is_empty());

    // A new file in a new subdirectory is picked up.
    std::fs::create_dir(path("more")).unwrap();
    std::fs::write(path("more/dr.yaml"), dr("v3")).unwrap();
    let s6 = next(&mut rx, s5.version).await;
    assert_eq!(subsets(&s6), vec!["v3"]);

    // An editor's save: a hidden temporary file renamed over the file.
    std::fs::write(path("more/.dr.yaml.tmp"), dr("v4")).unwrap();
    std::fs::rename(path("more/.dr.yaml.tmp"), path("more/dr.yaml")).unwrap();
    let s7 = next(&mut rx, s6.version).await;
    assert_eq!(subsets(&s7), vec!["v4"]);

    // A directory removed with its files takes their objects.
    std::fs::remove_dir_all(path("more")).unwrap();
    let s8 = next(&mut rx, s7.version).await;
    assert!(subsets(&s8).is_empty());
    assert_eq!(endpoint_ips(&s8), vec!["10.1.0.6"], "other files stay");

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_becomes_one_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dr.yaml");
    std::fs::write(&file, dr("v1")).unwrap();
    let options = RegistryOptions {
        debounce: Duration::from_millis(300),
        ..Default::default()
    };
    let registry = Registry::load(
        vec![ClusterSpec {
            id: ClusterId::new("c1"),
            paths: vec![file.clone()],
            network: None,
        }],
        options,
    );
    let mut rx = registry.subscribe();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(registry.watch(stop_rx));
    for i in 0..5 {
        std::fs::write(&file, dr(&format!("v{}", i + 10))).unwrap();
    }
    let s = next(&mut rx, 1).await;
    assert_eq!(subsets(&s), vec!["v14"], "the last write wins");
    assert_eq!(
        s.version, 2,
        "five writes inside the debounce window make one snapshot"
    );
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// A reload rebuilds only the clusters whose files changed; what it publishes must equal a
/// registry built from scratch, and its change record must equal a full comparison.
#[test]
fn incremental_reloads_equal_building_from_scratch() {
    let root = tempfile::tempdir().unwrap();
    let ids = ["c1", "c2", "c3"];
    let specs = || {
        ids.iter()
            .map(|id| ClusterSpec {
                id: ClusterId::new(id),
                paths: vec![root.path().join(id)],
                network: None,
            })
            .collect::<Vec<_>>()
    };
    for (i, id) in ids.iter().enumerate() {
        std::fs::create_dir_all(root.path().join(id)).unwrap();
        std::fs::write(
            root.path().join(id).join("hw.yaml"),
            format!("{SERVICE}---\n{}", pod(&format!("10.{i}.0.5"))),
        )
        .unwrap();
    }
    let write = |id: &str, file: &str, text: &str| {
        std::fs::write(root.path().join(id).join(file), text).unwrap()
    };
    let mut registry = Registry::load(specs(), RegistryOptions::default());
    // (what, cluster, file, new content, what the new snapshot must show)
    let steps: Vec<(&str, &str, &str, String, Expect)> = vec![
        ("an endpoint moves in c2", "c2", "hw.yaml", format!("{SERVICE}---\n{}", pod("10.9.0.9")), anything),
        ("a service appears in c3", "c3", "other.yaml", SERVICE.replace("helloworld", "other"), anything),
        ("a DestinationRule appears in c1", "c1", "dr.yaml", dr("v1"), anything),
        ("the service leaves c2", "c2", "hw.yaml", pod("10.9.0.9"), anything),
        ("a ServiceEntry without addresses gets an automatic one", "c1", "se.yaml", se("api.example.com", ""), |s| automatic(s, "api.example.com")),
        ("a second automatic address leaves the first's alone", "c3", "se.yaml", se("db.example.com", ""), |s| automatic(s, "api.example.com") && automatic(s, "db.example.com")),
        ("the first ServiceEntry is given its own address", "c1", "se.yaml", se("api.example.com", "addresses: [10.200.0.1], "), |s| !automatic(s, "api.example.com") && automatic(s, "db.example.com")),
        (
            "a port's protocol conflicts between clusters",
            "c3",
            "hw.yaml",
            format!("{}---\n{}", SERVICE.replace("name: http", "name: tcp"), pod("10.2.0.5")),
            |s| !s.model.conflicts().is_empty(),
        ),
        ("the conflict goes", "c3", "hw.yaml", format!("{SERVICE}---\n{}", pod("10.2.0.5")), |s| s.model.conflicts().is_empty()),
        ("an EndpointSlice gives the other service an endpoint", "c3", "slice.yaml", slice("other", "10.7.0.1"), |s| ips(s, "other") == ["10.7.0.1"]),
        (
            "the slice moves to helloworld (both services change)",
            "c3",
            "slice.yaml",
            slice("helloworld", "10.7.0.2"),
            |s| ips(s, "other").is_empty() && ips(s, "helloworld").contains(&"10.7.0.2".to_string()),
        ),
        (
            "an Endpoints object replaces helloworld's selected pod in c1",
            "c1",
            "eps.yaml",
            "apiVersion: v1\nkind: Endpoints\nmetadata: {name: helloworld, namespace: sample}\nsubsets: [{addresses: [{ip: 10.8.0.1}], ports: [{port: 5000, name: http}]}]\n".into(),
            |s| ips(s, "helloworld").contains(&"10.8.0.1".to_string()) && !ips(s, "helloworld").contains(&"10.0.0.5".to_string()),
        ),
        (
            "mesh settings change (every cluster rebuilt)",
            "c1",
            "mesh.yaml",
            "apiVersion: strait.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec: {trustDomain: example.org}\n".into(),
            anything,
        ),
    ];
    for (what, cluster, file, text, expect) in steps {
        let before = registry.snapshot();
        write(cluster, file, &text);
        let all: BTreeSet<ClusterId> = ids.iter().map(|i| ClusterId::new(i)).collect();
        let after = registry
            .reload(&all)
            .unwrap_or_else(|| panic!("{what}: nothing published"));
        let scratch = Registry::load(specs(), RegistryOptions::default()).snapshot();
        assert_eq!(
            *after.model, *scratch.model,
            "{what}: model differs from a fresh build"
        );
        let recorded = after.change.as_deref().cloned().unwrap();
        assert_eq!(
            recorded,
            after.changes_since(&before),
            "{what}: change record"
        );
        assert!(!recorded.is_empty(), "{what}");
        assert!(expect(&after), "{what}: not shown in the snapshot");
    }
}

type Expect = fn(&Snapshot) -> bool;

fn anything(_: &Snapshot) -> bool {
    true
}

/// The endpoint addresses of Service `name` in namespace `sample`.
fn ips(s: &Snapshot, name: &str) -> Vec<String> {
    s.model
        .service(
            &Hostname::new(&format!("{name}.sample.svc.cluster.local")),
            &ClusterId::new("c1"),
        )
        .map(|v| v.endpoints.iter().map(|e| e.address.to_string()).collect())
        .unwrap_or_default()
}

fn slice(service: &str, ip: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s1, namespace: sample, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [{ip}]}}]\nports: [{{port: 5000, name: http}}]\n"
    )
}

/// Whether `host` has an automatically allocated address.
fn automatic(s: &Snapshot, host: &str) -> bool {
    s.model
        .service(&Hostname::new(host), &ClusterId::new("c1"))
        .is_some_and(|v| v.service.vip_allocated)
}

/// A pushed cluster (a remote registry stream) joins, changes and leaves the mesh through the
/// same snapshots as file changes; an invalid pushed object is reported under its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_clusters_join_change_and_leave() {
    use strait_registry::Pushed;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("svc.yaml"), SERVICE).unwrap();
    let registry = Registry::load(
        vec![ClusterSpec {
            id: ClusterId::new("c1"),
            paths: vec![dir.path().to_path_buf()],
            network: None,
        }],
        RegistryOptions::default(),
    );
    let mut rx = registry.subscribe();
    let pusher = registry.pusher();
    let (_stop_tx, stop) = watch::channel(false);
    tokio::spawn(registry.watch(stop));
    let remote = ClusterId::new("remote");
    let host = Hostname::new("helloworld.sample.svc.cluster.local");
    let ips = |s: &Snapshot| -> Vec<String> {
        s.model
            .service(&host, &remote)
            .map(|v| v.endpoints.iter().map(|e| e.address.to_string()).collect())
            .unwrap_or_default()
    };
    let v0 = rx.borrow().version;

    pusher
        .send(Pushed::Replace {
            cluster: remote.clone(),
            network: None,
            mirror: None,
            objects: vec![
                ("Service/sample/helloworld".into(), SERVICE.into()),
                ("Pod/sample/hw-v1".into(), pod("10.9.0.1").into()),
            ],
        })
        .unwrap();
    let s = next(&mut rx, v0).await;
    assert_eq!(ips(&s), ["10.9.0.1"]);

    pusher
        .send(Pushed::Update {
            cluster: remote.clone(),
            upserts: vec![(
                "Pod/sample/hw-v1".into(),
                b"apiVersion: v1\nkind: Pod\nmetadata: {name: hw-v1, namespace: sample, labels: [oops]}\n"
                    .to_vec(),
            )],
            deletes: vec![],
        })
        .unwrap();
    let s = next(&mut rx, s.version).await;
    assert_eq!(ips(&s), ["10.9.0.1"], "the last good Pod stays in effect");
    assert!(
        s.problems
            .iter()
            .any(|p| p.to_string().contains("remote (remote): Pod/sample/hw-v1")),
        "{:?}",
        s.problems
    );

    pusher
        .send(Pushed::Update {
            cluster: remote.clone(),
            upserts: vec![],
            deletes: vec!["Pod/sample/hw-v1".into()],
        })
        .unwrap();
    let s = next(&mut rx, s.version).await;
    assert!(ips(&s).is_empty());

    pusher
        .send(Pushed::Remove {
            cluster: remote.clone(),
        })
        .unwrap();
    let s = next(&mut rx, s.version).await;
    assert!(!s.clusters.contains_key(&remote));
    assert!(s.clusters.contains_key(&ClusterId::new("c1")));

    // Linked Linkerd-style: only the exported service joins, as `<name>-<cluster>`, and loses
    // its endpoints while the cluster's gateway fails its probes.
    let exported = SERVICE.replace(
        "namespace: sample}",
        "namespace: sample, labels: {mirror.linkerd.io/exported: \"true\"}}",
    );
    pusher
        .send(Pushed::Replace {
            cluster: remote.clone(),
            network: None,
            mirror: Some(strait_model::mirror::default_export_selector()),
            objects: vec![
                ("Service/sample/helloworld".into(), exported.clone().into()),
                ("Pod/sample/hw-v1".into(), pod("10.9.0.2").into()),
            ],
        })
        .unwrap();
    let s = next(&mut rx, s.version).await;
    let mirror = Hostname::new("helloworld-remote.sample.svc.cluster.local");
    let mirror_ips = |s: &Snapshot| -> Vec<String> {
        s.model
            .service(&mirror, &remote)
            .map(|v| v.endpoints.iter().map(|e| e.address.to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(mirror_ips(&s), ["10.9.0.2"]);
    assert!(
        ips(&s).is_empty(),
        "a linked cluster does not merge by name"
    );
    pusher
        .send(Pushed::Gateway {
            cluster: remote.clone(),
            alive: false,
        })
        .unwrap();
    let s = next(&mut rx, s.version).await;
    assert!(mirror_ips(&s).is_empty());
    assert!(
        s.model.service(&mirror, &remote).is_some(),
        "the mirror keeps its name"
    );
    pusher
        .send(Pushed::Gateway {
            cluster: remote.clone(),
            alive: true,
        })
        .unwrap();
    let s = next(&mut rx, s.version).await;
    assert_eq!(mirror_ips(&s), ["10.9.0.2"]);

    // A gateway found failing before its cluster's objects arrive: they arrive without
    // endpoints.
    let late = ClusterId::new("late");
    pusher
        .send(Pushed::Gateway {
            cluster: late.clone(),
            alive: false,
        })
        .unwrap();
    pusher
        .send(Pushed::Replace {
            cluster: late.clone(),
            network: None,
            mirror: Some(strait_model::mirror::default_export_selector()),
            objects: vec![
                ("Service/sample/helloworld".into(), exported.clone().into()),
                ("Pod/sample/hw-v1".into(), pod("10.9.0.3").into()),
            ],
        })
        .unwrap();
    let s = next(&mut rx, s.version).await;
    let late_mirror = Hostname::new("helloworld-late.sample.svc.cluster.local");
    let view = s.model.service(&late_mirror, &late).expect("the mirror");
    assert!(view.endpoints.is_empty(), "{:?}", view.endpoints);
}
