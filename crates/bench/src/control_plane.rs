//! The control-plane scale scenario: the real `strait control-plane` process serving a synthetic
//! mesh to simulated proxies — cold sync, endpoint changes and service additions, each timed
//! from the manifest write to the last affected proxy's ACK, with bytes on the wire and the
//! control plane's memory and CPU.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::{mpsc, watch};

use crate::ads::{self, Event, Identity, Shared, Target, Type, Variant};
use crate::process::{self, Memory, Started};
use crate::synth::{self, Shape, ZONES};

/// What to run.
#[derive(Debug, Clone)]
pub struct Params {
    pub shape: Shape,
    pub proxies: usize,
    /// Distinct workloads the proxies belong to (replicas of one workload share labels).
    pub workloads: usize,
    pub endpoint_changes: usize,
    pub service_additions: usize,
    pub debounce_ms: u64,
    /// Profile the control plane while the second batch of proxies syncs.
    pub profile: bool,
}

/// One dimension of the mesh doubled, to see how the control plane's costs grow with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doubling {
    Services,
    Endpoints,
    Clusters,
    Proxies,
}

impl Doubling {
    pub const ALL: [Doubling; 4] = [
        Doubling::Services,
        Doubling::Endpoints,
        Doubling::Clusters,
        Doubling::Proxies,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Doubling::Services => "2× services",
            Doubling::Endpoints => "2× endpoints per service",
            Doubling::Clusters => "2× clusters",
            Doubling::Proxies => "2× proxies",
        }
    }

    /// This dimension's size in `params`.
    pub fn size(self, params: &Params) -> usize {
        match self {
            Doubling::Services => params.shape.services,
            Doubling::Endpoints => params.shape.endpoints,
            Doubling::Clusters => params.shape.clusters,
            Doubling::Proxies => params.proxies,
        }
    }

    /// `params` with this dimension doubled and everything else as it was.
    pub fn apply(self, params: &Params) -> Params {
        let mut doubled = params.clone();
        match self {
            Doubling::Services => doubled.shape.services *= 2,
            Doubling::Endpoints => doubled.shape.endpoints *= 2,
            Doubling::Clusters => doubled.shape.clusters *= 2,
            Doubling::Proxies => doubled.proxies *= 2,
        }
        doubled.profile = false;
        doubled
    }
}

/// Timings and bytes of one kind of change, repeated.
#[derive(Debug, Default)]
pub struct Changes {
    /// For each change: time from the manifest write until every affected proxy ACKed.
    pub all_acked: Vec<Duration>,
    /// For each change and proxy: time from the write to that proxy's ACK.
    pub each_acked: Vec<Duration>,
    /// For each change: response bytes received by all proxies, by type.
    pub bytes: Vec<[u64; 4]>,
    /// Changes that some proxy never ACKed within the time limit.
    pub timed_out: usize,
}

#[derive(Debug)]
pub struct PhaseResult {
    pub variant: Variant,
    pub manifests: usize,
    pub load_to_ready: Duration,
    pub idle: Memory,
    pub cold_sync_all: Duration,
    pub cold_sync_each: Vec<Duration>,
    pub cold_sync_cpu: f64,
    /// CPU the simulated proxies (this runner) used meanwhile, on the same cores.
    pub load_generator_cpu: f64,
    pub cold_bytes: [u64; 4],
    pub synced: Memory,
    /// RSS growth per proxy when a second batch of proxies connects to the warm control plane.
    pub marginal_kib: f64,
    /// Bytes of shared encoded configuration the control plane holds once synced (its
    /// `strait_xds_cache_bytes` metric).
    pub cache_bytes: Option<u64>,
    /// Where the control plane's CPU went while the second batch synced, and how much it
    /// used (CPU seconds); the reason when not profiled.
    pub batch_profile: Result<(crate::profile::Profile, f64), String>,
    pub endpoint_changes: Changes,
    pub service_additions: Changes,
    pub end: Memory,
}

impl PhaseResult {
    /// Memory the connected proxies added, per proxy, in KiB.
    pub fn kib_per_proxy(&self, proxies: usize) -> f64 {
        (self.synced.rss_kib as f64 - self.idle.rss_kib as f64) / proxies.max(1) as f64
    }
}

fn identity(p: usize, params: &Params) -> Identity {
    let app = p % params.workloads.max(1);
    let replica = p / params.workloads.max(1);
    Identity {
        ip: params
            .shape
            .endpoint_ip(1, app, replica % params.shape.endpoints.max(1), 0),
        pod: format!("svc-{app}-{replica}"),
        namespace: Shape::namespace_of(app),
        app: format!("svc-{app}"),
        cluster: "cluster1".into(),
        region: "region1".into(),
        zone: format!("zone{}", p % ZONES + 1),
    }
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the scenario once with clients of `variant` against a fresh control plane; `name` tells
/// this run's scratch directory and log from the others'.
pub async fn run(
    strait: &Path,
    params: &Params,
    variant: Variant,
    name: &str,
    logs: &Path,
) -> anyhow::Result<PhaseResult> {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("strait-bench-{}-{name}", std::process::id())));
    let root = &scratch.0;
    let _ = std::fs::remove_dir_all(root);
    let manifests = synth::write(params.shape, root)?;
    let (xds_port, debug_port) = (process::free_port()?, process::free_port()?);
    let mut cmd = Command::new(strait);
    cmd.arg("control-plane")
        .arg("--cluster")
        .arg("cluster1")
        .arg("--config")
        .arg(Shape::cluster_dir(root, 1))
        .arg("--xds-listen")
        .arg(format!("127.0.0.1:{xds_port}"))
        .arg("--debug-listen")
        .arg(format!("127.0.0.1:{debug_port}"))
        .arg("--secure-listen")
        .arg(format!("127.0.0.1:{}", process::free_port()?))
        .arg("--debounce")
        .arg(params.debounce_ms.to_string())
        .env("RUST_LOG", "warn");
    for c in 2..=params.shape.clusters {
        cmd.arg("--remote-config").arg(format!(
            "cluster{c}={}",
            Shape::cluster_dir(root, c).display()
        ));
    }
    let log = logs.join(format!("control-plane-{name}.log"));
    let mut cp = Started::spawn("strait control-plane", &mut cmd, &log)?;
    let load_to_ready = process::wait_ready(&mut cp, debug_port, Duration::from_secs(300))
        .await
        .with_context(|| format!("log: {}", log.display()))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = cp.memory()?;

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let shared = Shared::new(events_tx);
    let (stop_tx, stop_rx) = watch::channel(false);
    let addr = format!("http://127.0.0.1:{xds_port}");
    let cpu_before = cp.cpu_seconds()?;
    let own_cpu_before = process::cpu_seconds(std::process::id())?;
    let started = Instant::now();
    for p in 0..params.proxies {
        tokio::spawn(ads::run(
            p,
            addr.clone(),
            identity(p, params),
            variant,
            shared.clone(),
            stop_rx.clone(),
        ));
    }
    let mut cold_sync_each = Vec::with_capacity(params.proxies);
    let deadline = started + Duration::from_secs(180);
    while cold_sync_each.len() < params.proxies {
        match next_event(&mut events, deadline).await? {
            Event::Synced { at, .. } => cold_sync_each.push(at - started),
            Event::Failed { client, error } => bail!("simulated proxy {client}: {error}"),
            Event::Acked { .. } => {}
        }
    }
    let cold_sync_all = started.elapsed();
    quiet(&shared, Duration::from_millis(300), Duration::from_secs(10)).await;
    let cold_sync_cpu = cp.cpu_seconds()? - cpu_before;
    let load_generator_cpu = process::cpu_seconds(std::process::id())? - own_cpu_before;
    let cold_bytes = shared.total_bytes();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let synced = cp.memory()?;
    let cache_bytes = process::http_get(debug_port, "/metrics")
        .await
        .and_then(|(_, body)| metric(&body, "strait_xds_cache_bytes"));

    // What one more proxy costs once the mesh is warm: connect a second batch as large as the
    // first (new pods of the same workloads) and divide the growth.
    let before_batch = cp.memory()?;
    // The recording stays in the logs for `perf report -i`.
    let recording = match crate::profile::ready(params.profile.then_some(())) {
        Err(why) => Err(why),
        Ok(()) => crate::profile::Recording::start(
            &[cp.pid()],
            &logs.join(format!("perf-control-plane-{name}.data")),
            &logs.join(format!("perf-control-plane-{name}.log")),
        )
        .await
        .map_err(|e| format!("profiling failed: {e:#}")),
    };
    let batch_cpu_before = cp.cpu_seconds()?;
    let (batch_stop, batch_stop_rx) = watch::channel(false);
    let batch_started = Instant::now();
    for p in params.proxies..params.proxies * 2 {
        tokio::spawn(ads::run(
            p,
            addr.clone(),
            identity(p, params),
            variant,
            shared.clone(),
            batch_stop_rx.clone(),
        ));
    }
    let mut batch_synced = 0;
    let deadline = batch_started + Duration::from_secs(180);
    while batch_synced < params.proxies {
        match next_event(&mut events, deadline).await? {
            Event::Synced { .. } => batch_synced += 1,
            Event::Failed { client, error } => bail!("simulated proxy {client}: {error}"),
            Event::Acked { .. } => {}
        }
    }
    let batch_cpu = cp.cpu_seconds()? - batch_cpu_before;
    let batch_profile = recording.and_then(|recording| {
        recording
            .finish()
            .map(|p| (p, batch_cpu))
            .map_err(|e| format!("profiling failed: {e:#}"))
    });
    quiet(&shared, Duration::from_millis(300), Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_batch = cp.memory()?;
    let marginal_kib =
        (after_batch.rss_kib as f64 - before_batch.rss_kib as f64) / params.proxies.max(1) as f64;
    // The second batch leaves again: changes are timed with the first batch only.
    let _ = batch_stop.send(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut next_id = 0u64;
    let mut generation = 0usize;
    let mut endpoint_changes = Changes::default();
    for k in 0..params.endpoint_changes {
        let service = (k * 37 + 11) % params.shape.services;
        let cluster = k % params.shape.clusters + 1;
        generation += 1;
        next_id += 1;
        let path = Shape::service_file(root, cluster, service);
        let text = synth::service_manifest(params.shape, cluster, service, generation);
        let target = Target {
            id: next_id,
            r#type: Type::Endpoint,
            name: Shape::http_cluster(service),
        };
        change(
            &shared,
            &mut events,
            &mut cp,
            params.proxies,
            target,
            &mut endpoint_changes,
            || std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display())),
        )
        .await?;
    }
    let mut service_additions = Changes::default();
    for k in 0..params.service_additions {
        let service = params.shape.services + k;
        next_id += 1;
        let path = Shape::service_file(root, 1, service);
        let text = synth::service_manifest(params.shape, 1, service, 0);
        let target = Target {
            id: next_id,
            r#type: Type::Endpoint,
            name: Shape::http_cluster(service),
        };
        change(
            &shared,
            &mut events,
            &mut cp,
            params.proxies,
            target,
            &mut service_additions,
            || std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display())),
        )
        .await?;
    }
    let end = cp.memory()?;
    let _ = stop_tx.send(true);
    drop(cp);
    Ok(PhaseResult {
        variant,
        manifests,
        load_to_ready,
        idle,
        cold_sync_all,
        cold_sync_each,
        cold_sync_cpu,
        load_generator_cpu,
        cold_bytes,
        synced,
        marginal_kib,
        cache_bytes,
        batch_profile,
        endpoint_changes,
        service_additions,
        end,
    })
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    deadline: Instant,
) -> anyhow::Result<Event> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, events.recv()).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => bail!("every simulated proxy stopped"),
        Err(_) => bail!("timed out waiting for the simulated proxies"),
    }
}

/// Waits until no response bytes arrive for `still`, at most `limit`.
async fn quiet(shared: &Shared, still: Duration, limit: Duration) {
    let start = Instant::now();
    let mut last = shared.total_bytes();
    let mut since = Instant::now();
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = shared.total_bytes();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= still {
            return;
        }
    }
}

/// Makes one change and waits for every proxy to ACK the target resource.
async fn change(
    shared: &Arc<Shared>,
    events: &mut mpsc::UnboundedReceiver<Event>,
    cp: &mut Started,
    proxies: usize,
    target: Target,
    out: &mut Changes,
    apply: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    cp.check_alive()?;
    while events.try_recv().is_ok() {}
    let id = target.id;
    shared.set_target(Some(target));
    let before = shared.total_bytes();
    let written = Instant::now();
    apply()?;
    let deadline = written + Duration::from_secs(10);
    let mut acked = BTreeSet::new();
    let mut last = Duration::ZERO;
    while acked.len() < proxies {
        match next_event(events, deadline).await {
            Ok(Event::Acked { client, target, at }) if target == id => {
                if acked.insert(client) {
                    out.each_acked.push(at - written);
                    last = last.max(at - written);
                }
            }
            Ok(Event::Failed { client, error }) => bail!("simulated proxy {client}: {error}"),
            Ok(_) => {}
            Err(_) => {
                out.timed_out += 1;
                break;
            }
        }
    }
    if acked.len() == proxies {
        out.all_acked.push(last);
    }
    shared.set_target(None);
    quiet(shared, Duration::from_millis(300), Duration::from_secs(5)).await;
    let after = shared.total_bytes();
    out.bytes
        .push(std::array::from_fn(|i| after[i] - before[i]));
    Ok(())
}
