//! Watching one remote cluster's registry (the edge): connects with what its remote secret
//! gives (address, CA, reader token), feeds every response into the local registry, and
//! reconnects with backoff. While the remote is unreachable its last objects stay in effect —
//! for at most `stale_after`; then they are withdrawn, so a dead cluster's endpoints do not
//! linger. Each remote has a task of its own: one slow or dead cluster never delays another.
//! Its state is kept on a [`StatusBoard`] for the debug API and `strait multicluster check`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use strait_identity::{cert, tls, transport};
use strait_model::ClusterId;
use strait_registry::Pushed;
use tokio::sync::{mpsc, watch};
use tonic::metadata::MetadataValue;
use tracing::{info, warn};

use crate::pb::WatchRequest;
use crate::pb::remote_registry_client::RemoteRegistryClient;
use crate::secret::RemoteAccess;

/// Where a remote stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Connecting for the first time (nothing received yet).
    Connecting,
    /// Connected; waiting for its full state.
    Syncing,
    /// Connected and current.
    Synced,
    /// Disconnected; its last objects are still in effect (until `stale_after`).
    Stale,
    /// Disconnected for longer than `stale_after` (its objects withdrawn), or its secret is
    /// unusable.
    Failed,
}

/// One remote's status.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteStatus {
    pub cluster: String,
    pub server: String,
    /// The remote secret it comes from.
    pub source: String,
    pub state: SyncState,
    /// Why it is not synced (the last error).
    pub reason: Option<String>,
    /// Seconds in this state.
    #[serde(skip)]
    pub since: Option<Instant>,
    /// Objects of the remote in effect here.
    pub objects: usize,
    /// Unix seconds of the last response.
    pub last_update: Option<u64>,
    /// A linked (mirrored) cluster's gateway: whether it passes its probes (`None`: not
    /// probed, or no answer yet).
    pub gateway_alive: Option<bool>,
    /// The URL the gateway is probed at.
    pub probe: Option<String>,
    /// The last passing probe's round trip, in milliseconds.
    pub probe_ms: Option<f64>,
}

/// Every remote's status, by cluster.
pub type StatusBoard = Arc<Mutex<BTreeMap<String, RemoteStatus>>>;

/// The board as JSON, each entry with its age in seconds.
pub fn board_json(board: &StatusBoard) -> serde_json::Value {
    let remotes: Vec<serde_json::Value> = board
        .lock()
        .map(|b| b.values().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            v["age_s"] = serde_json::json!(s.since.map(|t| t.elapsed().as_secs()));
            v
        })
        .collect();
    serde_json::json!({ "remotes": remotes })
}

/// How a watcher behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The local cluster (sent to the remote for its logs).
    pub local: String,
    /// How long an unreachable remote's objects stay in effect.
    pub stale_after: Duration,
    /// How often a live connection is checked (HTTP/2 ping), so a silently dead link is noticed.
    pub keepalive: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            local: String::new(),
            stale_after: Duration::from_secs(120),
            keepalive: Duration::from_secs(5),
        }
    }
}

fn set(board: &StatusBoard, access: &RemoteAccess, update: impl FnOnce(&mut RemoteStatus)) {
    if let Ok(mut b) = board.lock() {
        let entry = b
            .entry(access.cluster.clone())
            .or_insert_with(|| RemoteStatus {
                cluster: access.cluster.clone(),
                server: access.server.clone(),
                source: access.source.clone(),
                state: SyncState::Connecting,
                reason: None,
                since: Some(Instant::now()),
                objects: 0,
                last_update: None,
                gateway_alive: None,
                probe: access.probe.clone(),
                probe_ms: None,
            });
        entry.server = access.server.clone();
        entry.source = access.source.clone();
        let before = entry.state;
        update(entry);
        if entry.state != before {
            entry.since = Some(Instant::now());
        }
    }
}

/// Watches `access`'s cluster until `stop` fires; changes go to `pusher`.
pub async fn watch_remote(
    access: RemoteAccess,
    options: WatchOptions,
    pusher: mpsc::UnboundedSender<Pushed>,
    board: StatusBoard,
    mut stop: watch::Receiver<bool>,
) {
    let cluster = ClusterId::new(&access.cluster);
    set(&board, &access, |s| s.state = SyncState::Connecting);
    if let Some(url) = access.probe.clone() {
        tokio::spawn(probe_gateway(
            access.clone(),
            url,
            pusher.clone(),
            board.clone(),
            stop.clone(),
        ));
    }
    // Set while the remote's objects are held without a connection: when it was lost.
    let mut lost_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut synced = false;
        let attempt = stream_once(&access, &options, &cluster, &pusher, &board, &mut synced);
        let outcome = tokio::select! {
            _ = stop.changed() => return,
            r = attempt => r,
        };
        let reason = match outcome {
            Ok(()) => "the remote closed the stream".to_string(),
            Err(e) => e,
        };
        if synced {
            lost_at = Some(Instant::now());
            backoff = Duration::from_millis(200);
        }
        let state = match lost_at {
            Some(t) if t.elapsed() >= options.stale_after => {
                let _ = pusher.send(Pushed::Remove {
                    cluster: cluster.clone(),
                });
                lost_at = None;
                warn!(cluster = %access.cluster, reason, stale_after_s = options.stale_after.as_secs(), "remote cluster unreachable for too long; its services and endpoints are withdrawn");
                SyncState::Failed
            }
            Some(_) => SyncState::Stale,
            None => SyncState::Failed,
        };
        set(&board, &access, |s| {
            s.reason = Some(reason.clone());
            s.state = state;
            if state == SyncState::Failed {
                s.objects = 0;
            }
        });
        info!(cluster = %access.cluster, reason, state = ?state, retry_in_ms = backoff.as_millis() as u64, "remote registry not connected");
        // Wake in time to withdraw a stale remote even while connection attempts keep failing.
        let until_stale = lost_at
            .map(|t| options.stale_after.saturating_sub(t.elapsed()))
            .unwrap_or(backoff);
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(backoff.min(until_stale)) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection: connect, watch, apply until the stream ends (`Ok`) or fails (`Err`).
async fn stream_once(
    access: &RemoteAccess,
    options: &WatchOptions,
    cluster: &ClusterId,
    pusher: &mpsc::UnboundedSender<Pushed>,
    board: &StatusBoard,
    synced: &mut bool,
) -> Result<(), String> {
    let roots = cert::parse_pem_certs(&access.ca_pem, "the remote secret's CA")
        .map_err(|e| e.to_string())?;
    let tls = tls::control_plane_client_config(&access.server_name, &roots, None)
        .map_err(|e| e.to_string())?;
    let channel = transport::connect_channel(
        &access.server,
        transport::ChannelOptions {
            mark: None,
            tls: Some((tls, access.server_name.clone())),
            keepalive: Some(options.keepalive),
        },
    )
    .await?;
    let token: MetadataValue<_> = format!("Bearer {}", access.token)
        .parse()
        .map_err(|_| "the remote secret's token is not a valid header value".to_string())?;
    let mut client =
        RemoteRegistryClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", token.clone());
            Ok(req)
        });
    set(board, access, |s| {
        if s.state != SyncState::Stale {
            s.state = SyncState::Syncing;
        }
    });
    let mut stream = client
        .watch(WatchRequest {
            watcher: options.local.clone(),
        })
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let mut keys: std::collections::BTreeSet<String> = Default::default();
    loop {
        let response = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(s) => return Err(format!("{}: {}", s.code(), s.message())),
        };
        let upserts: Vec<(String, Vec<u8>)> = response
            .upserts
            .into_iter()
            .map(|o| (o.key, o.manifest))
            .collect();
        if response.full {
            keys.clear();
        }
        keys.extend(upserts.iter().map(|(k, _)| k.clone()));
        for k in &response.deletes {
            keys.remove(k);
        }
        let count = keys.len();
        let change = if response.full {
            Pushed::Replace {
                cluster: cluster.clone(),
                network: None,
                mirror: access.mirror.then(|| access.link.selector.clone()),
                objects: upserts,
            }
        } else {
            Pushed::Update {
                cluster: cluster.clone(),
                upserts,
                deletes: response.deletes,
            }
        };
        if pusher.send(change).is_err() {
            return Err("the local registry has stopped".into());
        }
        if response.full {
            info!(cluster = %access.cluster, objects = count, "remote registry synced");
        }
        *synced = true;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        set(board, access, |s| {
            s.state = SyncState::Synced;
            s.reason = None;
            s.objects = count;
            s.last_update = Some(now);
        });
    }
}

/// Probes a linked cluster's gateway (`GET url` answered 200 within the link's probe timeout)
/// every probe period until `stop` fires. After the link's failure threshold of failures in a
/// row (one lost probe is not enough) the mirrors lose their endpoints; the next passing probe
/// gives them back. A gateway starts out presumed alive, so
/// a link made while its gateway is still starting does not flap.
async fn probe_gateway(
    access: RemoteAccess,
    url: String,
    pusher: mpsc::UnboundedSender<Pushed>,
    board: StatusBoard,
    mut stop: watch::Receiver<bool>,
) {
    let cluster = ClusterId::new(&access.cluster);
    let mut alive = true;
    let mut failures = 0;
    loop {
        let started = Instant::now();
        if probe(&url, access.link.probe_timeout).await {
            let rtt = started.elapsed().as_secs_f64() * 1000.0;
            failures = 0;
            if !alive {
                info!(cluster = %access.cluster, %url, "linked cluster's gateway answers again; its mirrors get their endpoints back");
                alive = true;
                let _ = pusher.send(Pushed::Gateway {
                    cluster: cluster.clone(),
                    alive,
                });
            }
            set(&board, &access, |s| {
                s.gateway_alive = Some(true);
                s.probe_ms = Some(rtt);
            });
        } else {
            failures += 1;
            if alive && failures >= access.link.probe_failures {
                warn!(cluster = %access.cluster, %url, failures, "linked cluster's gateway fails its probes; its mirrors lose their endpoints");
                alive = false;
                let _ = pusher.send(Pushed::Gateway {
                    cluster: cluster.clone(),
                    alive,
                });
                set(&board, &access, |s| s.gateway_alive = Some(false));
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(access.link.probe_period) => {}
        }
    }
}

/// `GET url` (plain HTTP) answered 200 within `timeout`.
async fn probe(url: &str, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(authority).await.ok()?;
        let req = format!("GET /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
