//! Reading clusters' files into the store, building snapshots, and the watch loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use strait_config::linkerd::LinkSelector;
use strait_config::load::{Diagnostic, LoadOptions, list_files, load_bytes};
use strait_config::{ConfigSet, Kind};
use strait_model::{
    ClusterId, ClusterSource, ClusterView, Hostname, MeshModel, MeshSettings, NetworkId,
    build_cluster, rebuild_cluster,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::snapshot::{Change, Snapshot, config_diff};
use crate::store::{FileStore, fingerprint};

/// One cluster: its name, the files and directories holding its manifests, its network.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub id: ClusterId,
    pub paths: Vec<PathBuf>,
    /// The cluster's network; when `None`, its MeshConfig's `network` (or the default network).
    pub network: Option<NetworkId>,
}

/// A change to a cluster whose objects arrive over the network (a remote cluster's registry
/// stream) rather than from files. Each object is one manifest, named by a key unique in its
/// cluster (`<kind>/<namespace>/<name>`).
#[derive(Debug, Clone)]
pub enum Pushed {
    /// The cluster's objects are exactly these (a first or renewed full state); a cluster the
    /// registry does not hold yet is added, on `network` (else its MeshConfig's).
    Replace {
        cluster: ClusterId,
        network: Option<NetworkId>,
        /// Linked Linkerd-style: only the services this selector exports join, mirrored as
        /// `<name>-<cluster>` ([`strait_model::mirror`]); `None`: its services merge with the
        /// mesh's by name, as Istio's multi-cluster does.
        mirror: Option<LinkSelector>,
        objects: Vec<(String, Vec<u8>)>,
    },
    /// A mirrored cluster's gateway passed (`alive`) or failed its probes: while it fails, the
    /// mirrors keep their names but have no endpoints.
    Gateway { cluster: ClusterId, alive: bool },
    /// Some objects changed or appeared, some are gone.
    Update {
        cluster: ClusterId,
        upserts: Vec<(String, Vec<u8>)>,
        deletes: Vec<String>,
    },
    /// The cluster leaves the mesh: its services and endpoints are withdrawn.
    Remove { cluster: ClusterId },
}

impl Pushed {
    fn cluster(&self) -> &ClusterId {
        match self {
            Pushed::Replace { cluster, .. }
            | Pushed::Update { cluster, .. }
            | Pushed::Gateway { cluster, .. }
            | Pushed::Remove { cluster } => cluster,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Quiet time after a file change before reloading (changes during it are batched).
    pub debounce: Duration,
    /// Longest a reload waits while changes keep coming.
    pub max_delay: Duration,
    pub load: LoadOptions,
    /// The cluster whose MeshConfig gives the mesh settings (else the first that has one).
    pub local_cluster: Option<ClusterId>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            load: LoadOptions::default(),
            local_cluster: None,
        }
    }
}

struct ClusterState {
    spec: ClusterSpec,
    /// Its objects arrive as [`Pushed`] changes; it has no files to rescan.
    pushed: bool,
    /// Only the services this selects join, mirrored (see [`Pushed::Replace`]).
    mirror: Option<LinkSelector>,
    /// A mirrored cluster's gateway passes its probes.
    alive: bool,
    /// Its part of the model must be rebuilt although its objects did not change.
    rebuild: bool,
    store: FileStore,
    /// The cluster's objects in effect and their problems; `None` after its files changed.
    config: Option<(Arc<ConfigSet>, Vec<Diagnostic>)>,
    /// The cluster's part of the mesh model, and the settings and network it was built with.
    view: Option<(Arc<ClusterView>, Arc<MeshSettings>, NetworkId)>,
}

/// The registry of every cluster's manifests.
pub struct Registry {
    clusters: BTreeMap<ClusterId, ClusterState>,
    options: RegistryOptions,
    current: Arc<Snapshot>,
    tx: watch::Sender<Arc<Snapshot>>,
    pushed_tx: mpsc::UnboundedSender<Pushed>,
    pushed_rx: mpsc::UnboundedReceiver<Pushed>,
    /// The last probe result of each mirrored cluster's gateway — also for clusters whose
    /// objects have not arrived yet (a probe can fail before the first sync).
    gateways_alive: BTreeMap<ClusterId, bool>,
}

impl Registry {
    /// Reads every cluster once and builds the first snapshot (version 1).
    pub fn load(specs: Vec<ClusterSpec>, options: RegistryOptions) -> Registry {
        let mut clusters = BTreeMap::new();
        for spec in specs {
            let mut state = ClusterState {
                spec,
                pushed: false,
                mirror: None,
                alive: true,
                rebuild: false,
                store: FileStore::new(),
                config: None,
                view: None,
            };
            rescan(&mut state, &options.load);
            clusters.insert(state.spec.id.clone(), state);
        }
        let current = Arc::new(build_snapshot(&mut clusters, &options, 1, None).0);
        let (tx, _) = watch::channel(current.clone());
        let (pushed_tx, pushed_rx) = mpsc::unbounded_channel();
        Registry {
            clusters,
            options,
            current,
            tx,
            pushed_tx,
            pushed_rx,
            gateways_alive: BTreeMap::new(),
        }
    }

    /// Where changes of pushed clusters go (see [`Pushed`]); [`Registry::watch`] applies them
    /// with the same debounce as file changes.
    pub fn pusher(&self) -> mpsc::UnboundedSender<Pushed> {
        self.pushed_tx.clone()
    }

    /// Applies a pushed change to its cluster's objects; returns the cluster to rebuild (none
    /// when nothing changed). Each object is loaded — parsed and validated — like a file.
    pub fn apply(&mut self, change: Pushed) -> Option<ClusterId> {
        let id = change.cluster().clone();
        let label = |key: &str| format!("{id} (remote): {key}");
        let path = |key: &str| PathBuf::from(format!("remote://{id}/{key}"));
        let mut changed = false;
        let upsert = |state: &mut ClusterState, objects: Vec<(String, Vec<u8>)>| {
            let mut any = false;
            for (key, bytes) in objects {
                let fp = fingerprint(&bytes);
                let p = path(&key);
                if state.store.fingerprint(&p) != Some(fp) {
                    let report = load_bytes(&bytes, &label(&key), &self.options.load);
                    state.store.update_file(&p, fp, report);
                    any = true;
                }
            }
            any
        };
        match change {
            Pushed::Replace {
                network,
                mirror,
                objects,
                ..
            } => {
                let alive = self.gateways_alive.get(&id).copied().unwrap_or(true);
                let state = self.clusters.entry(id.clone()).or_insert_with(|| {
                    changed = true;
                    ClusterState {
                        spec: ClusterSpec {
                            id: id.clone(),
                            paths: Vec::new(),
                            network: network.clone(),
                        },
                        pushed: true,
                        mirror: mirror.clone(),
                        alive,
                        rebuild: false,
                        store: FileStore::new(),
                        config: None,
                        view: None,
                    }
                });
                if !state.pushed {
                    warn!(cluster = %id, "a remote registry names a cluster this control plane reads from files; ignored");
                    return None;
                }
                if state.spec.network != network || state.mirror != mirror {
                    state.spec.network = network;
                    state.mirror = mirror;
                    state.rebuild = true;
                    changed = true;
                }
                let keep: BTreeSet<PathBuf> = objects.iter().map(|(k, _)| path(k)).collect();
                let gone: Vec<PathBuf> = state
                    .store
                    .paths()
                    .filter(|p| !keep.contains(*p))
                    .cloned()
                    .collect();
                for p in gone {
                    changed |= state.store.remove_file(&p);
                }
                changed |= upsert(state, objects);
            }
            Pushed::Update {
                upserts, deletes, ..
            } => {
                let state = self.clusters.get_mut(&id).filter(|s| s.pushed)?;
                for key in deletes {
                    changed |= state.store.remove_file(&path(&key));
                }
                changed |= upsert(state, upserts);
            }
            Pushed::Gateway { alive, .. } => {
                self.gateways_alive.insert(id.clone(), alive);
                let state = self
                    .clusters
                    .get_mut(&id)
                    .filter(|s| s.pushed && s.mirror.is_some())?;
                if state.alive == alive {
                    return None;
                }
                state.alive = alive;
                state.rebuild = true;
                changed = true;
            }
            Pushed::Remove { .. } => {
                if self.clusters.get(&id).is_some_and(|s| s.pushed) {
                    self.clusters.remove(&id);
                    changed = true;
                }
            }
        }
        if !changed {
            return None;
        }
        if let Some(state) = self.clusters.get_mut(&id) {
            state.config = None;
        }
        Some(id)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.clone()
    }

    /// A receiver that always holds the latest snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Re-reads the given clusters; publishes a new snapshot if anything changed.
    pub fn reload(&mut self, which: &BTreeSet<ClusterId>) -> Option<Arc<Snapshot>> {
        let everything = which
            .iter()
            .map(|id| (id.clone(), Dirty::Everything))
            .collect();
        self.reload_dirty(&everything)
    }

    /// Re-reads what changed in the given clusters (the files named, else all of a cluster's
    /// files); publishes a new snapshot if anything changed.
    fn reload_dirty(&mut self, which: &BTreeMap<ClusterId, Dirty>) -> Option<Arc<Snapshot>> {
        let started = Instant::now();
        let mut changed = false;
        for (id, dirty) in which {
            match self.clusters.get_mut(id) {
                // A pushed cluster's objects were applied already; a removed one is gone.
                Some(state) if state.pushed => {
                    changed |= state.config.is_none() || state.rebuild;
                }
                Some(state) => {
                    let load = &self.options.load;
                    let read = match dirty {
                        Dirty::Files(files) => reread(state, files, load),
                        Dirty::Everything => rescan(state, load),
                    };
                    if read {
                        state.config = None;
                        changed = true;
                    }
                }
                None => changed |= self.current.clusters.contains_key(id),
            }
        }
        if !changed {
            return None;
        }
        let read = started.elapsed();
        let (next, phases) = build_snapshot(
            &mut self.clusters,
            &self.options,
            self.current.version + 1,
            Some(&self.current),
        );
        let next = Arc::new(next);
        let change = next.change.clone()?;
        if change.is_empty() && next.problems == self.current.problems {
            return None;
        }
        info!(
            read_ms = ms(read),
            objects_ms = ms(phases.objects),
            clusters_ms = ms(phases.clusters),
            merge_ms = ms(phases.merge),
            diff_ms = ms(phases.diff),
            total_ms = ms(started.elapsed()),
            version = next.version,
            services_added = change.services.added.len(),
            services_removed = change.services.removed.len(),
            services_changed = change.services.changed.len(),
            endpoints_changed = change.services.endpoints_changed.len(),
            objects_changed = change.config.len(),
            problems = next.problems.iter().filter(|d| d.is_error()).count(),
            "registry changed"
        );
        for p in next.problems.iter().filter(|d| d.is_error()) {
            warn!("{p}");
        }
        self.current = next.clone();
        self.tx.send_replace(next.clone());
        Some(next)
    }

    /// Starts watching every cluster's paths, then returns the loop that reloads on change until
    /// `shutdown` fires. The watches exist when this returns, so no change made afterwards is
    /// missed; changes made between [`Registry::load`] and now are picked up by a first rescan.
    /// Watch failures are reported and the last snapshot stays in effect.
    pub fn watch(mut self, mut shutdown: watch::Receiver<bool>) -> impl Future<Output = ()> + Send {
        let (events_tx, mut events) = mpsc::unbounded_channel::<(ClusterId, Dirty)>();
        let watchers = self.start_watchers(&events_tx);
        let all: BTreeSet<ClusterId> = self.clusters.keys().cloned().collect();
        self.reload(&all);
        async move {
            let _watchers = watchers;
            let mut dirty: BTreeMap<ClusterId, Dirty> = BTreeMap::new();
            // A pushed cluster has no files: it is rebuilt from the objects applied.
            let mark = |dirty: &mut BTreeMap<ClusterId, Dirty>, id: Option<ClusterId>, what| {
                if let Some(id) = id {
                    let entry = dirty.entry(id).or_insert(Dirty::Files(BTreeSet::new()));
                    entry.add(what);
                }
            };
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    Some((id, what)) = events.recv() => mark(&mut dirty, Some(id), what),
                    Some(change) = self.pushed_rx.recv() => {
                        mark(&mut dirty, self.apply(change), Dirty::Everything);
                    }
                }
                // Debounce: wait for a quiet period, but no longer than `max_delay` in all.
                let deadline = tokio::time::Instant::now() + self.options.max_delay;
                loop {
                    let quiet = tokio::time::sleep(self.options.debounce);
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = quiet => break,
                        Some((id, what)) = events.recv() => {
                            mark(&mut dirty, Some(id), what);
                            if tokio::time::Instant::now() >= deadline { break; }
                        }
                        Some(change) = self.pushed_rx.recv() => {
                            mark(&mut dirty, self.apply(change), Dirty::Everything);
                            if tokio::time::Instant::now() >= deadline { break; }
                        }
                    }
                }
                self.reload_dirty(&std::mem::take(&mut dirty));
            }
        }
    }

    fn start_watchers(
        &self,
        tx: &mpsc::UnboundedSender<(ClusterId, Dirty)>,
    ) -> Vec<notify::RecommendedWatcher> {
        let mut watchers = Vec::new();
        for (id, state) in &self.clusters {
            let id = id.clone();
            let tx = tx.clone();
            let watcher =
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    let what = match event {
                        Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => return,
                        Ok(e) if !e.need_rescan() && !e.paths.is_empty() => {
                            Dirty::Files(e.paths.into_iter().collect())
                        }
                        // Events were lost, or an error: read everything again.
                        _ => Dirty::Everything,
                    };
                    let _ = tx.send((id.clone(), what));
                });
            let mut watcher = match watcher {
                Ok(w) => w,
                Err(e) => {
                    warn!(cluster = %state.spec.id, "cannot watch files ({e}); changes will not be picked up until restart");
                    continue;
                }
            };
            for path in &state.spec.paths {
                // Files are watched through their directory: editors replace files by renaming.
                let (target, mode) = if path.is_dir() {
                    (path.as_path(), RecursiveMode::Recursive)
                } else {
                    (
                        path.parent()
                            .filter(|p| !p.as_os_str().is_empty())
                            .unwrap_or(Path::new(".")),
                        RecursiveMode::NonRecursive,
                    )
                };
                if let Err(e) = watcher.watch(target, mode) {
                    warn!(cluster = %state.spec.id, path = %target.display(), "cannot watch ({e}); changes there will not be picked up");
                }
            }
            watchers.push(watcher);
        }
        watchers
    }
}

/// What changed on disk in a cluster, as its watcher reported it.
#[derive(Debug)]
enum Dirty {
    /// These paths (files or directories) changed.
    Files(BTreeSet<PathBuf>),
    /// Anything may have changed.
    Everything,
}

impl Dirty {
    fn add(&mut self, more: Dirty) {
        match (self, more) {
            (Dirty::Files(files), Dirty::Files(more)) => files.extend(more),
            (this, _) => *this = Dirty::Everything,
        }
    }
}

/// Re-reads the named files of a cluster; returns whether any changed or disappeared. A path
/// the cluster does not hold as a file that exists (a new file, a directory, a symlink swap),
/// or is gone with files the cluster holds under it, or a file that cannot be read, makes it
/// [`rescan`] the cluster instead, which applies the rules of which files count. A path that
/// is gone and held nothing (an editor's or `sed -i`'s temporary file, renamed over the real
/// one) is no change.
fn reread(state: &mut ClusterState, paths: &BTreeSet<PathBuf>, load: &LoadOptions) -> bool {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        if state.store.fingerprint(path).is_some() {
            files.push(path);
            continue;
        }
        let gone = matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if !gone || state.store.paths().any(|p| p.starts_with(path)) {
            return rescan(state, load);
        }
    }
    let mut changed = false;
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                changed |= state.store.remove_file(file);
                continue;
            }
            Err(_) => return rescan(state, load) || changed,
        };
        let fp = fingerprint(&bytes);
        if state.store.fingerprint(file) != Some(fp) {
            let report = load_bytes(&bytes, &file.display().to_string(), load);
            state.store.update_file(file, fp, report);
            changed = true;
        }
    }
    changed
}

/// Re-reads a cluster's files; returns whether any file changed, appeared or disappeared.
fn rescan(state: &mut ClusterState, load: &LoadOptions) -> bool {
    let (files, _problems) = list_files(&state.spec.paths, load.max_files);
    let mut changed = false;
    let present: BTreeSet<&PathBuf> = files.iter().collect();
    let gone: Vec<PathBuf> = state
        .store
        .paths()
        .filter(|p| !present.contains(p))
        .cloned()
        .collect();
    for p in gone {
        changed |= state.store.remove_file(&p);
    }
    for file in &files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            // Vanished between listing and reading: the next event rescans.
            Err(_) => continue,
        };
        let fp = fingerprint(&bytes);
        if state.store.fingerprint(file) == Some(fp) {
            continue;
        }
        let report = load_bytes(&bytes, &file.display().to_string(), load);
        state.store.update_file(file, fp, report);
        changed = true;
    }
    changed
}

/// Builds the snapshot after `previous`, rebuilding only what changed: a cluster's objects
/// when its files changed, its part of the model when those objects, the mesh settings or its
/// network changed. The change from `previous` is computed over those clusters alone.
fn build_snapshot(
    clusters: &mut BTreeMap<ClusterId, ClusterState>,
    options: &RegistryOptions,
    version: u64,
    previous: Option<&Snapshot>,
) -> (Snapshot, Phases) {
    let mut clock = Phases::start();
    for state in clusters.values_mut() {
        if state.config.is_none() {
            let (set, problems) = state.store.config();
            state.config = Some((Arc::new(set), problems));
        }
    }
    let mut configs = BTreeMap::new();
    let mut problems = Vec::new();
    for (id, state) in clusters.iter() {
        if let Some((set, p)) = &state.config {
            problems.extend(p.iter().cloned());
            configs.insert(id.clone(), set.clone());
        }
    }
    clock.objects = clock.lap();
    let mesh_config = options
        .local_cluster
        .as_ref()
        .and_then(|l| configs.get(l))
        .and_then(|c| c.mesh_configs.first())
        .or_else(|| configs.values().find_map(|c| c.mesh_configs.first()))
        .map(|m| m.spec.clone());
    let settings = Arc::new(
        mesh_config
            .as_ref()
            .map(MeshSettings::from_config)
            .unwrap_or_default(),
    );
    let settings = match previous {
        Some(p) if *p.settings == *settings => p.settings.clone(),
        _ => settings,
    };
    // Objects added, removed or modified, in the clusters whose objects changed.
    let mut config_changes = BTreeSet::new();
    if let Some(p) = previous {
        let ids: BTreeSet<&ClusterId> = configs.keys().chain(p.clusters.keys()).collect();
        let empty = Arc::new(ConfigSet::default());
        for id in ids {
            let new = configs.get(id).unwrap_or(&empty);
            let old = p.clusters.get(id).unwrap_or(&empty);
            if !Arc::ptr_eq(new, old) {
                config_diff(id, old, new, &mut config_changes);
            }
        }
    }
    // Hosts whose services changed in the rebuilt clusters, and whether their workloads moved.
    let mut touched: BTreeSet<Hostname> = BTreeSet::new();
    let mut workloads_changed = false;
    if let Some(p) = previous {
        // A cluster that left takes its services with it.
        for gone in p.networks.keys().filter(|id| !clusters.contains_key(*id)) {
            workloads_changed = true;
            touched.extend(
                p.model
                    .services()
                    .filter(|(_, s)| s.service.clusters.contains(gone))
                    .map(|(k, _)| k.host.clone()),
            );
        }
    }
    for (id, state) in clusters.iter_mut() {
        let config = configs[id].clone();
        let network = state.spec.network.clone().unwrap_or_else(|| {
            NetworkId::new(
                config
                    .mesh_configs
                    .first()
                    .and_then(|m| m.spec.network.as_deref())
                    .unwrap_or(""),
            )
        });
        let fresh = match &state.view {
            Some((_, s, n)) => {
                std::mem::take(&mut state.rebuild)
                    || !Arc::ptr_eq(s, &settings)
                    || *n != network
                    || previous
                        .and_then(|p| p.clusters.get(id))
                        .is_none_or(|old| !Arc::ptr_eq(old, &config))
            }
            None => true,
        };
        if !fresh {
            continue;
        }
        let source = ClusterSource {
            id: id.clone(),
            network: network.clone(),
            config,
        };
        // Only the services whose objects changed are built again, when the view before was
        // built from the objects before, with the same settings and network.
        let basis = state
            .view
            .as_ref()
            .filter(|(_, s, n)| {
                state.mirror.is_none() && Arc::ptr_eq(s, &settings) && *n == network
            })
            .map(|(view, _, _)| view.clone());
        let built = match (basis, previous.and_then(|p| p.clusters.get(id))) {
            (Some(view), Some(old)) => {
                let changed: BTreeSet<(Kind, String)> = config_changes
                    .iter()
                    .filter(|k| k.cluster == *id)
                    .map(|k| (k.kind, k.name.clone()))
                    .collect();
                rebuild_cluster(&source, &settings, &view, old, &changed)
            }
            _ => build_cluster(&source, &settings),
        };
        let view = Arc::new(match &state.mirror {
            Some(selector) => strait_model::mirror::mirror_view(&built, id, state.alive, selector),
            None => built,
        });
        match state.view.take() {
            Some((old, _, _)) => {
                touched.extend(old.changed_hosts(&view));
                workloads_changed |= !Arc::ptr_eq(&old.workloads, &view.workloads)
                    && old.workloads != view.workloads;
            }
            None => {
                touched.extend(view.services.iter().map(|s| s.service.host.clone()));
                workloads_changed = true;
            }
        }
        state.view = Some((view, settings.clone(), network));
    }
    clock.clusters = clock.lap();
    let views: Vec<(&ClusterId, &ClusterView)> = clusters
        .iter()
        .filter_map(|(id, s)| s.view.as_ref().map(|(v, _, _)| (id, v.as_ref())))
        .collect();
    let model = Arc::new(match previous {
        Some(p) => p
            .model
            .rebuilt(settings.clone(), &views, &touched, workloads_changed),
        None => MeshModel::from_views(settings.clone(), &views),
    });
    clock.merge = clock.lap();
    let networks = clusters
        .iter()
        .filter_map(|(id, s)| s.view.as_ref().map(|(_, _, n)| (id.clone(), n.clone())))
        .collect();
    let change = previous.map(|p| {
        Arc::new(Change {
            from: p.version,
            to: version,
            services: p.model.diff(&model),
            config: config_changes,
        })
    });
    clock.diff = clock.lap();
    let snapshot = Snapshot {
        version,
        clusters: configs,
        networks,
        settings,
        model,
        problems: Arc::new(problems),
        change,
    };
    (snapshot, clock)
}

/// How long each step of building a snapshot took (logged with every change, so an operator
/// sees where a slow reload spends its time).
struct Phases {
    last: Instant,
    /// The changed clusters' objects assembled from their files.
    objects: Duration,
    /// The changed clusters' services and workloads built.
    clusters: Duration,
    /// The mesh model merged from the clusters.
    merge: Duration,
    /// What changed, computed.
    diff: Duration,
}

impl Phases {
    fn start() -> Phases {
        Phases {
            last: Instant::now(),
            objects: Duration::ZERO,
            clusters: Duration::ZERO,
            merge: Duration::ZERO,
            diff: Duration::ZERO,
        }
    }

    /// The time since the previous lap.
    fn lap(&mut self) -> Duration {
        let now = Instant::now();
        std::mem::replace(&mut self.last, now).elapsed()
    }
}

/// Milliseconds with one decimal, for logs.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
