//! The remote clusters a control plane watches (the edge): the remote secrets among its own
//! cluster's manifests, each remote watched by a task of its own. A secret added starts a
//! watch; a secret replaced (a rotated token, a new address or CA) restarts it with the new
//! credentials — the remote's objects stay in effect meanwhile, so discovery continues; a secret
//! deleted withdraws its cluster. No restart in any case.

use std::collections::BTreeMap;
use std::sync::Arc;

use strait_model::ClusterId;
use strait_registry::{Pushed, Snapshot};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use strait_config::ConfigSet;
use strait_config::linkerd::Link;

use crate::client::{self, StatusBoard, SyncState, WatchOptions};
use crate::secret::{self, RemoteAccess};

/// The remotes the local cluster's remote secrets name, with the mistakes found in them;
/// Linkerd `Link`s among its manifests say how their linked clusters are mirrored and probed.
pub fn wanted(local: &ClusterId, snapshot: &Snapshot) -> (Vec<RemoteAccess>, Vec<String>) {
    match snapshot.clusters.get(local) {
        Some(config) => from_config(local, config),
        None => (Vec::new(), Vec::new()),
    }
}

/// [`wanted`], from the local cluster's objects (pure).
pub fn from_config(local: &ClusterId, config: &ConfigSet) -> (Vec<RemoteAccess>, Vec<String>) {
    let mut remotes: BTreeMap<String, RemoteAccess> = BTreeMap::new();
    let mut problems = Vec::new();
    // A Link names its credentials Secret (same namespace), which then needs no cluster label.
    let linked_by_secret: BTreeMap<(&str, &str), &str> = config
        .links
        .iter()
        .filter_map(|l| {
            let secret = l.spec.cluster_credentials_secret.as_deref()?;
            Some((
                (l.meta.namespace.as_str(), secret),
                l.spec.target_cluster_name.as_str(),
            ))
        })
        .collect();
    for s in config
        .secrets
        .iter()
        .filter(|s| secret::is_remote_secret(s))
    {
        let linked = linked_by_secret
            .get(&(s.meta.namespace.as_str(), s.meta.name.as_str()))
            .copied();
        for access in secret::remote_access_named(s, linked) {
            match access {
                Ok(a) if a.cluster == local.as_str() => problems.push(format!(
                    "{}: names this cluster ({local}) itself; ignored",
                    a.source
                )),
                Ok(a) => {
                    if let Some(other) = remotes.get(&a.cluster) {
                        problems.push(format!(
                            "{} and {} both give access to cluster {}; using the first",
                            other.source, a.source, a.cluster
                        ));
                    } else {
                        remotes.insert(a.cluster.clone(), a);
                    }
                }
                Err(e) => problems.push(e),
            }
        }
    }
    for link in &config.links {
        let source = format!("Link {}/{}", link.meta.namespace, link.meta.name);
        let target = &link.spec.target_cluster_name;
        let Some(remote) = remotes.get_mut(target.as_str()) else {
            problems.push(format!(
                "{source}: no credentials for cluster {target} among the manifests; apply the Secret {} names (`strait multicluster link` prints one)",
                link.spec
                    .cluster_credentials_secret
                    .as_deref()
                    .unwrap_or("its clusterCredentialsSecret")
            ));
            continue;
        };
        remote.mirror = true;
        apply_link(&link.spec, remote);
    }
    (remotes.into_values().collect(), problems)
}

/// What a Link says of its cluster's mirroring and probing; what it leaves out keeps
/// Linkerd's defaults. (Validation has checked the numbers; a value that still does not
/// parse keeps the default.)
fn apply_link(link: &Link, remote: &mut RemoteAccess) {
    use strait_config::linkerd::defaults;
    let settings = &mut remote.link;
    if let Some(selector) = &link.selector {
        settings.selector = selector.clone();
    }
    let probe = &link.probe_spec;
    let duration = |text: Option<&str>, default: &str| {
        strait_config::duration::parse(text.unwrap_or(default))
            .map(|d| d.as_std())
            .ok()
    };
    if let Some(d) = duration(probe.period.as_deref(), defaults::PROBE_PERIOD) {
        settings.probe_period = d;
    }
    if let Some(d) = duration(probe.timeout.as_deref(), defaults::PROBE_TIMEOUT) {
        settings.probe_timeout = d;
    }
    settings.probe_failures = probe
        .failure_threshold
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(defaults::FAILURE_THRESHOLD);
    if let Some(address) = &link.gateway_address {
        // Linkerd lists several addresses comma-separated; the first is probed.
        let address = address.split(',').next().unwrap_or_default().trim();
        let port = probe
            .port
            .as_deref()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(defaults::PROBE_PORT);
        let path = probe.path.as_deref().unwrap_or(defaults::PROBE_PATH);
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.to_string()
        };
        remote.probe = Some(format!("http://{host}:{port}{path}"));
    }
}

/// Follows the local cluster's remote secrets until `stop` fires.
pub async fn run(
    local: ClusterId,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    pusher: mpsc::UnboundedSender<Pushed>,
    board: StatusBoard,
    options: WatchOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut running: BTreeMap<String, (RemoteAccess, watch::Sender<bool>)> = BTreeMap::new();
    let mut reported: Vec<String> = Vec::new();
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let (remotes, problems) = wanted(&local, &snapshot);
        if problems != reported {
            for p in &problems {
                warn!("remote secret: {p}");
            }
            reported = problems;
        }
        let names: Vec<&str> = remotes.iter().map(|r| r.cluster.as_str()).collect();
        let gone: Vec<String> = running
            .keys()
            .filter(|c| !names.contains(&c.as_str()))
            .cloned()
            .collect();
        for cluster in gone {
            if let Some((_, stop_watch)) = running.remove(&cluster) {
                let _ = stop_watch.send(true);
            }
            let _ = pusher.send(Pushed::Remove {
                cluster: ClusterId::new(&cluster),
            });
            if let Ok(mut b) = board.lock() {
                b.remove(&cluster);
            }
            info!(%cluster, "remote secret deleted; the cluster's services and endpoints are withdrawn");
        }
        for access in remotes {
            if running
                .get(&access.cluster)
                .is_some_and(|(a, _)| *a == access)
            {
                continue;
            }
            if let Some((_, old)) = running.remove(&access.cluster) {
                let _ = old.send(true);
                info!(cluster = %access.cluster, "remote secret changed; reconnecting with it");
            } else {
                info!(cluster = %access.cluster, server = %access.server, "remote secret found; watching the cluster");
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            tokio::spawn(client::watch_remote(
                access.clone(),
                options.clone(),
                pusher.clone(),
                board.clone(),
                stop_rx,
            ));
            running.insert(access.cluster.clone(), (access, stop_tx));
        }
        tokio::select! {
            _ = stop.changed() => break,
            changed = snapshots.changed() => if changed.is_err() { break },
        }
    }
    for (_, (_, s)) in running {
        let _ = s.send(true);
    }
}

/// How many remotes on the board are synced.
pub fn synced_count(board: &StatusBoard) -> usize {
    board
        .lock()
        .map(|b| b.values().filter(|s| s.state == SyncState::Synced).count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::secret::{LINK_CLUSTER_LABEL, LinkSettings, secret_yaml};
    use crate::valid_config as config;

    /// Link credentials for `west`, without the cluster-name label (as a Link names them).
    fn credentials() -> String {
        let access = RemoteAccess {
            cluster: "west".into(),
            server: "10.2.0.2:15012".into(),
            server_name: "istiod.istio-system.svc".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            token: "strait1.abc.def".into(),
            source: String::new(),
            mirror: true,
            probe: None,
            link: LinkSettings::default(),
        };
        let yaml = secret_yaml(&access);
        yaml.split("---\n")
            .next()
            .unwrap()
            .lines()
            .filter(|l| !l.contains(LINK_CLUSTER_LABEL))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    const LINK: &str = "apiVersion: multicluster.linkerd.io/v1alpha2\nkind: Link\nmetadata: {name: west, namespace: linkerd-multicluster}\nspec:\n  targetClusterName: west\n  clusterCredentialsSecret: cluster-credentials-west\n  gatewayAddress: 10.255.0.101\n  gatewayPort: \"4143\"\n  probeSpec: {path: /ready, port: \"4191\", period: 5s, failureThreshold: \"4\"}\n  selector:\n    matchExpressions: [{key: mirror.linkerd.io/exported, operator: In, values: [\"true\", \"yes\"]}]\n";

    #[test]
    fn a_link_names_its_credentials_and_sets_probing_and_selection() {
        let (remotes, problems) = from_config(
            &ClusterId::new("east"),
            &config(&format!("{}---\n{LINK}", credentials())),
        );
        assert!(problems.is_empty(), "{problems:?}");
        let west = &remotes[0];
        assert_eq!(west.cluster, "west");
        assert!(west.mirror);
        assert_eq!(
            west.probe.as_deref(),
            Some("http://10.255.0.101:4191/ready")
        );
        assert_eq!(west.link.probe_period, Duration::from_secs(5));
        assert_eq!(west.link.probe_failures, 4);
        assert_eq!(
            west.link.probe_timeout,
            Duration::from_secs(30),
            "Linkerd's default"
        );
        let yes = [("mirror.linkerd.io/exported".to_string(), "yes".to_string())].into();
        assert!(west.link.selector.matches(&yes));
    }

    #[test]
    fn a_link_without_credentials_and_credentials_without_a_name_are_reported() {
        let (remotes, problems) = from_config(&ClusterId::new("east"), &config(LINK));
        assert!(remotes.is_empty());
        assert!(
            problems[0].contains("Link linkerd-multicluster/west: no credentials for cluster west")
                && problems[0].contains("cluster-credentials-west"),
            "{problems:?}"
        );
        let (remotes, problems) = from_config(&ClusterId::new("east"), &config(&credentials()));
        assert!(remotes.is_empty());
        assert!(problems[0].contains(LINK_CLUSTER_LABEL), "{problems:?}");
    }
}
