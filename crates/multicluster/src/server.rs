//! The remote registry service (the edge): streams this cluster's shared objects to watchers
//! that present a reader token — first every object, then each change. It re-reads the
//! cluster's manifest paths (once per registry version, for all watchers) whenever the local
//! registry publishes a snapshot that touched this cluster, so watchers see what this control
//! plane sees. A watcher's stream ends when its token expires (checked at the start and
//! enforced on the open stream).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use strait_config::load::list_files;
use strait_identity::token::TokenKey;
use strait_model::ClusterId;
use strait_registry::Snapshot;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::objects::{self, Objects};
use crate::pb::remote_registry_server::{RemoteRegistry, RemoteRegistryServer};
use crate::pb::{RegistryObject, WatchRequest, WatchResponse};
use crate::secret::{READER_NAMESPACE, READER_SERVICE_ACCOUNT};

/// How often an open registry stream's token is checked against the revocation list.
const REVOCATION_CHECK: Duration = Duration::from_secs(2);
/// The shared objects read at one registry version.
type Reading = (u64, Arc<Objects>);

/// Serves one cluster's registry.
#[derive(Clone)]
pub struct RegistryService {
    cluster: ClusterId,
    paths: Vec<PathBuf>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    tokens: Option<Arc<TokenKey>>,
    /// The shared objects as of a registry version, read once for all watchers.
    read_at: Arc<Mutex<Option<Reading>>>,
}

impl RegistryService {
    /// `paths` are the cluster's manifests (what its registry reads); `tokens` verifies
    /// readers' tokens (without it every watcher is refused, saying why).
    pub fn new(
        cluster: ClusterId,
        paths: Vec<PathBuf>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        tokens: Option<Arc<TokenKey>>,
    ) -> Self {
        Self {
            cluster,
            paths,
            snapshots,
            tokens,
            read_at: Arc::default(),
        }
    }

    pub fn into_server(self) -> RemoteRegistryServer<Self> {
        RemoteRegistryServer::new(self)
    }

    /// Only a valid reader token is let in; returns it and when it expires.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<(String, SystemTime), Status> {
        let Some(key) = &self.tokens else {
            return Err(Status::unauthenticated(
                "this control plane runs without --token-key, so it cannot check reader tokens; start it with one and create the remote secret from the same key",
            ));
        };
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no reader token: send `authorization: Bearer <token>` (the remote secret's users[0].user.token)",
                )
            })?;
        let claims = key.verify(token, SystemTime::now()).map_err(|e| {
            Status::unauthenticated(format!(
                "reader token: {e}; create a fresh remote secret with `strait create-remote-secret`"
            ))
        })?;
        if claims.namespace != READER_NAMESPACE || claims.service_account != READER_SERVICE_ACCOUNT
        {
            return Err(Status::permission_denied(format!(
                "the token is for {}/{}, not the registry reader {READER_NAMESPACE}/{READER_SERVICE_ACCOUNT}",
                claims.namespace, claims.service_account
            )));
        }
        Ok((
            token.to_string(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(claims.exp),
        ))
    }

    /// Why a reader token let in earlier is no longer good (revoked since), if it is not.
    fn still_valid(&self, token: &str) -> Result<(), String> {
        match &self.tokens {
            Some(key) => key
                .verify(token, SystemTime::now())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// The cluster's shared objects as of registry `version` (read from its files by the first
    /// watcher that asks; the others share that reading).
    fn objects_at(&self, version: u64) -> Arc<Objects> {
        let mut cached = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, objects)) = cached.as_ref()
            && *v == version
        {
            return objects.clone();
        }
        let objects = Arc::new(self.read());
        *cached = Some((version, objects.clone()));
        objects
    }

    /// The cluster's shared objects as its files hold them now.
    fn read(&self) -> Objects {
        let (files, _) = list_files(&self.paths, 100_000);
        let mut out = Objects::new();
        for file in files {
            if let Ok(text) = std::fs::read_to_string(&file) {
                objects::add_from_text(&text, &mut out);
            }
        }
        out
    }
}

fn response(cluster: &str, version: u64, full: bool, diff: objects::Diff) -> WatchResponse {
    WatchResponse {
        cluster: cluster.to_string(),
        version,
        full,
        upserts: diff
            .upserts
            .into_iter()
            .map(|(key, manifest)| RegistryObject { key, manifest })
            .collect(),
        deletes: diff.deletes,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RemoteRegistry for RegistryService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (token, expires) = match self.authenticate(&request) {
            Ok(e) => e,
            Err(status) => {
                warn!(reason = status.message(), "registry watcher refused");
                return Err(status);
            }
        };
        // The stream ends when the token does: an expired credential reads nothing more.
        let expiry = tokio::time::Instant::now()
            + expires
                .duration_since(SystemTime::now())
                .unwrap_or_default();
        let watcher = request.into_inner().watcher;
        info!(%watcher, "registry watcher connected");
        let (tx, rx) = mpsc::channel(16);
        let service = self.clone();
        tokio::spawn(async move {
            let mut snapshots = service.snapshots.clone();
            snapshots.mark_unchanged();
            let cluster = service.cluster.to_string();
            let mut held = service.objects_at(snapshots.borrow().version);
            let mut version = 1;
            // A revocation applies to open streams too, within this.
            let mut recheck = tokio::time::interval(REVOCATION_CHECK);
            recheck.tick().await;
            let all = objects::diff(&Objects::new(), &held);
            if tx
                .send(Ok(response(&cluster, version, true, all)))
                .await
                .is_err()
            {
                return;
            }
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    changed = snapshots.changed() => if changed.is_err() { break },
                    _ = recheck.tick() => {
                        match service.still_valid(&token) {
                            Ok(()) => continue,
                            Err(why) => {
                                warn!(%watcher, reason = %why, "registry watcher's token is no longer valid; stream ended");
                                let _ = tx
                                    .send(Err(Status::unauthenticated(format!(
                                        "reader token: {why}; give this cluster a fresh remote secret (`strait create-remote-secret`)"
                                    ))))
                                    .await;
                                break;
                            }
                        }
                    }
                    () = tokio::time::sleep_until(expiry) => {
                        warn!(%watcher, "registry watcher's token expired; stream ended");
                        let _ = tx
                            .send(Err(Status::unauthenticated(
                                "reader token: expired while watching; give this cluster a fresh remote secret (`strait create-remote-secret`)",
                            )))
                            .await;
                        break;
                    }
                }
                let (version_now, touched) = {
                    let snapshot = snapshots.borrow_and_update();
                    let touched = snapshot
                        .change
                        .as_ref()
                        .is_none_or(|c| c.config.iter().any(|k| k.cluster == service.cluster));
                    (snapshot.version, touched)
                };
                if !touched {
                    continue;
                }
                let next = service.objects_at(version_now);
                let diff = objects::diff(&held, &next);
                if diff.is_empty() {
                    continue;
                }
                version += 1;
                if tx
                    .send(Ok(response(&cluster, version, false, diff)))
                    .await
                    .is_err()
                {
                    break;
                }
                held = next;
            }
            info!(%watcher, "registry watcher left");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
