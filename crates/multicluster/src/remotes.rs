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

use crate::client::{self, StatusBoard, SyncState, WatchOptions};
use crate::secret::{self, RemoteAccess};

/// The remotes the local cluster's remote secrets name, with the mistakes found in them.
pub fn wanted(local: &ClusterId, snapshot: &Snapshot) -> (Vec<RemoteAccess>, Vec<String>) {
    let mut remotes: BTreeMap<String, RemoteAccess> = BTreeMap::new();
    let mut problems = Vec::new();
    let Some(config) = snapshot.clusters.get(local) else {
        return (Vec::new(), problems);
    };
    for s in config
        .secrets
        .iter()
        .filter(|s| secret::is_remote_secret(s))
    {
        for access in secret::remote_access(s) {
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
    (remotes.into_values().collect(), problems)
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
