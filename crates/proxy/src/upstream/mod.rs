//! Upstream clusters at run time: their hosts (from EDS, static addresses or DNS), the plan that
//! picks a host (priority load, locality weights, balancer), per-host pools and outlier state,
//! and the cluster's circuit breakers and counters. A cluster's runtime outlives configuration
//! updates that leave its settings alone, and hosts keep their pools and outlier records across
//! endpoint updates by address.

pub mod dns;
pub mod http2;
pub mod lb;
pub mod limits;
pub mod origination;
pub mod outlier;
pub mod pool;
pub mod priority;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use strait_xds::cluster::{Discovery, UpstreamTlsMode};
use strait_xds::endpoint::{EndpointMetadata, HealthStatus};
use strait_xds::{Cluster, ClusterLoadAssignment, Locality};
use tracing::info;

use crate::metrics::{ServiceLabels, Text};
use crate::secrets::{Secrets, TlsMaterial};
use lb::{Balancer, Candidate, Draw};
use limits::Limits;
use outlier::{HostRecord, Outcome};
use pool::{ConnectSettings, Pool};
use priority::{LevelHealth, PriorityLoad};

/// What lives with a host across endpoint updates.
#[derive(Default)]
pub struct HostState {
    pub active_requests: AtomicU64,
    pub ejected: AtomicBool,
    /// Made when the host is first used: most of a large mesh's hosts are never called.
    pool: std::sync::OnceLock<Arc<Pool>>,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
}

impl HostState {
    /// The host's connection pool.
    pub fn pool(&self) -> &Arc<Pool> {
        self.pool.get_or_init(Arc::default)
    }

    /// Idle HTTP/1.1 connections in the pool (none before it exists).
    pub fn idle_connections(&self) -> usize {
        self.pool.get().map_or(0, |p| p.idle_count())
    }

    /// Connections the pool closed for their idle timeout.
    pub fn idle_timeouts(&self) -> u64 {
        self.pool
            .get()
            .map_or(0, |p| p.idle_timeouts.load(Ordering::Relaxed))
    }
}

/// A host's workload, namespace and cluster as telemetry labels them.
#[derive(Debug, Clone)]
pub struct HostLabels {
    pub workload: Text,
    pub namespace: Text,
    pub cluster: Text,
}

impl HostLabels {
    /// The labels of an endpoint, sharing its metadata's texts.
    fn of(m: &EndpointMetadata) -> HostLabels {
        HostLabels {
            workload: Text::known_or_unknown_shared(&m.workload),
            namespace: Text::known_or_unknown_shared(&m.namespace),
            cluster: Text::known_or_unknown_shared(&m.cluster),
        }
    }
}

/// What the hosts of one locality entry of a load assignment share.
#[derive(Debug, Default, PartialEq)]
pub struct LocalityGroup {
    pub locality: Locality,
    /// 0 is used first.
    pub priority: u32,
    /// The locality's weight within its priority (`distribute`).
    pub weight: Option<u32>,
}

/// One upstream host as the current assignment describes it.
pub struct Host {
    pub address: SocketAddr,
    pub weight: u32,
    pub health: HealthStatus,
    /// Shared by the hosts of one locality entry.
    pub group: Arc<LocalityGroup>,
    /// The endpoint's metadata, shared with its load assignment (and with the hosts of the same
    /// workload): mesh mTLS (`tlsMode: istio`), east-west gateway, telemetry labels.
    pub metadata: Arc<EndpointMetadata>,
    /// Made when the host is first used, or carried over from the host at the same address
    /// before an endpoint update: a large mesh's hosts are mostly never called.
    state: std::sync::OnceLock<Arc<HostState>>,
}

impl Host {
    /// Healthy by EDS and not ejected.
    pub fn is_available(&self) -> bool {
        self.health == HealthStatus::Healthy && !self.is_ejected()
    }

    /// Ejected by outlier detection.
    pub fn is_ejected(&self) -> bool {
        self.state
            .get()
            .is_some_and(|s| s.ejected.load(Ordering::Relaxed))
    }

    /// Requests in flight to the host.
    pub fn active_requests(&self) -> u64 {
        self.state
            .get()
            .map_or(0, |s| s.active_requests.load(Ordering::Relaxed))
    }

    /// The state the host keeps across endpoint updates (made on first use).
    pub fn state(&self) -> &Arc<HostState> {
        self.state.get_or_init(Arc::default)
    }

    /// The state, if the host has been used.
    pub fn used_state(&self) -> Option<&Arc<HostState>> {
        self.state.get()
    }

    /// The host takes mesh mTLS (Istio's auto mTLS).
    pub fn mtls(&self) -> bool {
        self.metadata.mtls
    }

    /// The address is another network's east-west gateway.
    pub fn gateway(&self) -> bool {
        self.metadata.gateway
    }

    /// Its workload, namespace and cluster as telemetry labels them.
    pub fn labels(&self) -> HostLabels {
        HostLabels::of(&self.metadata)
    }
}

impl Candidate for Arc<Host> {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn active_requests(&self) -> u64 {
        Host::active_requests(self)
    }
    fn write_ring_key(&self, out: &mut Vec<u8>) {
        // `ip:port`, as Envoy hashes a host onto the ring.
        let _ = write!(out, "{}", self.address);
    }
}

struct LocalityPlan {
    hosts: Vec<Arc<Host>>,
    balancer: Balancer,
}

struct LevelPlan {
    localities: Vec<LocalityPlan>,
    /// Cumulative effective locality weights (`None`: one locality, or not weighted).
    cumulative: Option<Vec<u64>>,
}

/// How to pick, precomputed for the current hosts and their health.
pub struct Plan {
    pub hosts: Vec<Arc<Host>>,
    pub load: PriorityLoad,
    levels: Vec<LevelPlan>,
}

/// Counters of one cluster.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    /// Retries the cluster's retry budget refused (Envoy's `upstream_rq_retry_overflow`).
    pub retry_overflows: AtomicU64,
    /// Requests whose route's attempts ran out on a retriable outcome (Envoy's
    /// `upstream_rq_retry_limit_exceeded`).
    pub retry_limit_exceeded: AtomicU64,
    pub timeouts: AtomicU64,
    pub no_healthy: AtomicU64,
    pub ejections: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Connections opened (Envoy's `upstream_cx_total`).
    pub connections_opened: AtomicU64,
}

/// A cluster at run time.
/// What every cluster runtime shares with the proxy.
#[derive(Clone, Default)]
pub struct ClusterEnv {
    /// `SO_MARK` for upstream sockets.
    pub mark: Option<u32>,
    /// The source address of upstream sockets (Envoy's `upstream_bind_config`).
    pub source: Option<IpAddr>,
    /// The workload certificate mesh mTLS presents.
    pub identity: Arc<crate::identity::MeshIdentity>,
}

pub struct ClusterRuntime {
    pub config: Arc<Cluster>,
    /// The service it reaches, as telemetry labels it.
    pub service_labels: Option<ServiceLabels>,
    pub settings: ConnectSettings,
    pub limits: Arc<Limits>,
    pub stats: ClusterStats,
    plan: ArcSwap<Plan>,
    assignment: Mutex<Option<Arc<ClusterLoadAssignment>>>,
    /// The secrets (a `credentialName`'s) and certificate files its TLS origination was made
    /// with.
    tls_material: TlsMaterial,
    outlier: Mutex<HashMap<SocketAddr, HostRecord>>,
    counter: AtomicU64,
    overprovisioning: AtomicU64,
}

impl ClusterRuntime {
    /// The runtime of `config`; TLS from a `credentialName` is made with `secrets`.
    pub fn new(config: Arc<Cluster>, env: &ClusterEnv, secrets: &Secrets) -> Arc<ClusterRuntime> {
        let mark = env.mark;
        // Taken before they are used.
        let tls_material = TlsMaterial::of(
            config.tls.iter().flat_map(|t| t.secret_names()),
            config.tls.iter().flat_map(|t| t.file_paths()),
            secrets,
        );
        let settings = ConnectSettings {
            connect_timeout: Duration::from_millis(config.connect_timeout_ms.max(1)),
            http2: config.http2,
            idle_timeout: crate::idle::configured(config.idle_timeout_ms),
            max_requests_per_connection: config.max_requests_per_connection,
            mark,
            source: env.source,
            keepalive: config
                .tcp_keepalive
                .as_ref()
                .and_then(|k| k.time_secs)
                .map(|s| Duration::from_secs(u64::from(s))),
            tls: config.tls.as_ref().map(|t| match t.mode {
                UpstreamTlsMode::IstioMutual => pool::UpstreamTlsRuntime::Mesh {
                    config: t.clone(),
                    identity: env.identity.clone(),
                },
                // Files were checked when the cluster arrived (rewritten, they make the cluster
                // again: `Snapshot::files_changed`); secrets not received yet fail its
                // connections until they are.
                UpstreamTlsMode::Simple | UpstreamTlsMode::Mutual => {
                    pool::UpstreamTlsRuntime::Origination {
                        sni: t.sni.clone(),
                        client: origination::client_config(t, config.http2, secrets),
                    }
                }
            }),
        };
        let rt = Arc::new(ClusterRuntime {
            tls_material,
            service_labels: config.service.as_ref().map(ServiceLabels::of),
            limits: Limits::new(config.circuit_breakers.as_ref()),
            settings,
            stats: ClusterStats::default(),
            plan: ArcSwap::from_pointee(Plan {
                hosts: vec![],
                load: priority::priority_load(&[], 140, 50.0),
                levels: vec![],
            }),
            assignment: Mutex::new(None),
            outlier: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            overprovisioning: AtomicU64::new(u64::from(priority::DEFAULT_OVERPROVISIONING)),
            config,
        });
        if let Discovery::Static(addrs) = &rt.config.discovery {
            let hosts = addrs
                .iter()
                .filter_map(|a| {
                    a.ip.parse::<IpAddr>()
                        .ok()
                        .map(|ip| SocketAddr::new(ip, a.port))
                })
                .map(simple_host)
                .collect();
            rt.set_hosts(hosts);
        }
        if let Discovery::StrictDns(targets) = &rt.config.discovery
            && tokio::runtime::Handle::try_current().is_ok()
        {
            tokio::spawn(dns::resolve_loop(Arc::downgrade(&rt), targets.clone()));
        }
        if rt.config.outlier_detection.is_some() {
            tokio::spawn(sweep_loop(Arc::downgrade(&rt)));
        }
        rt
    }

    /// A new runtime for a changed cluster, carrying over hosts (with their outlier state, and
    /// their pools unless the cluster's TLS changed) from the old one.
    pub fn successor(
        &self,
        config: Arc<Cluster>,
        env: &ClusterEnv,
        secrets: &Secrets,
    ) -> Arc<ClusterRuntime> {
        let next = ClusterRuntime::new(config, env, secrets);
        // Connections made with other TLS (a changed rule, a rotated secret) are not reused:
        // the hosts start with empty pools, as Envoy drains a replaced cluster's connections.
        let same_tls =
            next.config.tls == self.config.tls && next.tls_material.same_as(&self.tls_material);
        let fresh = |hosts: &[Arc<Host>]| -> Vec<Arc<Host>> {
            hosts
                .iter()
                .map(|h| {
                    Arc::new(Host {
                        state: Default::default(),
                        group: h.group.clone(),
                        metadata: h.metadata.clone(),
                        ..**h
                    })
                })
                .collect()
        };
        let old_hosts = self.plan.load().hosts.clone();
        let carried = if same_tls {
            old_hosts
        } else {
            fresh(&old_hosts)
        };
        if matches!(next.config.discovery, Discovery::Eds(_))
            && let Some(a) = self.assignment()
        {
            *next.outlier.lock().unwrap_or_else(|e| e.into_inner()) = self
                .outlier
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            next.set_assignment_with(a, &carried);
        }
        // The same names: keep their resolved hosts until the new runtime resolves them again.
        if matches!(next.config.discovery, Discovery::StrictDns(_))
            && next.config.discovery == self.config.discovery
        {
            next.set_hosts(carried);
        }
        next
    }

    /// The secrets and certificate files the cluster's TLS was made with.
    pub fn tls_material(&self) -> &TlsMaterial {
        &self.tls_material
    }

    /// Why its TLS origination cannot be made, if it cannot.
    pub fn tls_refused(&self) -> Option<&str> {
        match &self.settings.tls {
            Some(pool::UpstreamTlsRuntime::Origination { client: Err(e), .. }) => Some(e),
            _ => None,
        }
    }

    pub fn assignment(&self) -> Option<Arc<ClusterLoadAssignment>> {
        self.assignment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Connections to the cluster's current hosts closed for their idle timeout (Envoy's
    /// `upstream_cx_idle_timeout`).
    pub fn idle_timeouts(&self) -> u64 {
        self.plan
            .load()
            .hosts
            .iter()
            .filter_map(|h| h.used_state())
            .map(|s| s.idle_timeouts())
            .sum()
    }

    pub fn plan(&self) -> Arc<Plan> {
        self.plan.load_full()
    }

    /// Takes a new load assignment; hosts at the same address keep their state.
    pub fn set_assignment(&self, cla: Arc<ClusterLoadAssignment>) {
        let old = self.plan.load().hosts.clone();
        self.set_assignment_with(cla, &old);
    }

    fn set_assignment_with(&self, cla: Arc<ClusterLoadAssignment>, old: &[Arc<Host>]) {
        let previous: HashMap<SocketAddr, &Arc<HostState>> = old
            .iter()
            .filter_map(|h| Some((h.address, h.used_state()?)))
            .collect();
        let mut hosts = Vec::with_capacity(cla.localities.iter().map(|l| l.endpoints.len()).sum());
        for l in &cla.localities {
            let group = Arc::new(LocalityGroup {
                locality: l.locality.clone(),
                priority: l.priority,
                weight: l.weight,
            });
            for e in &l.endpoints {
                let Ok(ip) = e.address.ip.parse::<IpAddr>() else {
                    continue;
                };
                let address = SocketAddr::new(ip, e.address.port);
                hosts.push(Arc::new(Host {
                    address,
                    weight: e.weight.max(1),
                    health: e.health,
                    group: group.clone(),
                    metadata: e.metadata.clone(),
                    state: previous
                        .get(&address)
                        .map(|s| (*s).clone().into())
                        .unwrap_or_default(),
                }));
            }
        }
        self.overprovisioning.store(
            u64::from(
                cla.overprovisioning_factor
                    .unwrap_or(priority::DEFAULT_OVERPROVISIONING),
            ),
            Ordering::Relaxed,
        );
        *self.assignment.lock().unwrap_or_else(|e| e.into_inner()) = Some(cla);
        self.set_hosts(hosts);
    }

    /// Replaces the hosts (static and DNS clusters, and after EDS) and rebuilds the plan.
    pub fn set_hosts(&self, hosts: Vec<Arc<Host>>) {
        {
            let mut book = self.outlier.lock().unwrap_or_else(|e| e.into_inner());
            book.retain(|a, _| hosts.iter().any(|h| h.address == *a));
        }
        self.rebuild(hosts);
    }

    fn rebuild(&self, hosts: Vec<Arc<Host>>) {
        let plan = build_plan(
            hosts,
            &self.config,
            self.overprovisioning.load(Ordering::Relaxed) as u32,
        );
        self.plan.store(Arc::new(plan));
    }

    /// Picks a host, avoiding those in `avoid` when others can serve (retries to other hosts).
    pub fn pick(&self, hash: Option<u64>, avoid: &[SocketAddr]) -> Option<Arc<Host>> {
        let plan = self.plan.load();
        let mut chosen = None;
        for attempt in 0..3 {
            let draw = Draw {
                counter: self.counter.fetch_add(1, Ordering::Relaxed),
                random: [fastrand::u64(..), fastrand::u64(..)],
                hash: if attempt == 0 { hash } else { None },
            };
            let level_roll = fastrand::u32(..100);
            let h = pick_in(&plan, draw, level_roll)?;
            let again = avoid.contains(&h.address);
            chosen = Some(h);
            if !again {
                break;
            }
        }
        // Weighted draws can keep landing on an avoided host (a retry after a failure in the
        // locality that takes 80 % of the traffic); a retry then goes to another available host
        // of the same priority rather than back to the one that just failed.
        if let Some(h) = chosen.as_ref().filter(|h| avoid.contains(&h.address)) {
            let others: Vec<&Arc<Host>> = plan
                .hosts
                .iter()
                .filter(|o| {
                    o.group.priority == h.group.priority
                        && o.is_available()
                        && !avoid.contains(&o.address)
                })
                .collect();
            if !others.is_empty() {
                chosen = Some(others[fastrand::usize(..others.len())].clone());
            }
        }
        if chosen.is_none() {
            self.stats.no_healthy.fetch_add(1, Ordering::Relaxed);
        }
        chosen
    }

    /// Records a request's outcome against its host for outlier detection.
    pub fn record(&self, host: &Arc<Host>, outcome: Outcome) {
        let Some(policy) = &self.config.outlier_detection else {
            return;
        };
        let plan = self.plan.load();
        let mut ejected = 0;
        let mut current = false;
        for h in &plan.hosts {
            ejected += usize::from(h.is_ejected());
            current |= h.address == host.address;
        }
        if !current {
            // A host the last endpoint update removed.
            return;
        }
        let reason = {
            let mut book = self.outlier.lock().unwrap_or_else(|e| e.into_inner());
            let record = book.entry(host.address).or_default();
            outlier::record_host(
                policy,
                record,
                ejected,
                plan.hosts.len(),
                outcome,
                Instant::now(),
            )
        };
        if let Some(reason) = reason {
            host.state().ejected.store(true, Ordering::Relaxed);
            self.stats.ejections.fetch_add(1, Ordering::Relaxed);
            info!(cluster = %self.config.name, host = %host.address, reason = reason.as_str(), "outlier ejected");
            self.rebuild(plan.hosts.clone());
        }
    }

    /// The interval sweep: returns hosts whose ejection is over.
    fn sweep(&self) {
        let plan = self.plan.load();
        let mut book = self.outlier.lock().unwrap_or_else(|e| e.into_inner());
        let mut records: Vec<HostRecord> = plan
            .hosts
            .iter()
            .map(|h| book.get(&h.address).cloned().unwrap_or_default())
            .collect();
        let back = outlier::sweep(&mut records, Instant::now());
        for (h, r) in plan.hosts.iter().zip(records) {
            book.insert(h.address, r);
        }
        drop(book);
        if !back.is_empty() {
            for i in back {
                plan.hosts[i]
                    .state()
                    .ejected
                    .store(false, Ordering::Relaxed);
                info!(cluster = %self.config.name, host = %plan.hosts[i].address, "outlier ejection ended");
            }
            self.rebuild(plan.hosts.clone());
        }
    }

    /// A host's outlier record (for the admin API).
    pub fn outlier_record(&self, address: SocketAddr) -> Option<HostRecord> {
        self.outlier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&address)
            .cloned()
    }
}

async fn sweep_loop(cluster: Weak<ClusterRuntime>) {
    let interval = match cluster
        .upgrade()
        .and_then(|c| c.config.outlier_detection.clone())
    {
        Some(p) => Duration::from_millis(p.interval_ms.max(10)),
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = cluster.upgrade() else { return };
        c.sweep();
    }
}

/// A host without locality or metadata (static, DNS and original-destination clusters).
pub fn simple_host(address: SocketAddr) -> Arc<Host> {
    Arc::new(Host {
        address,
        weight: 1,
        health: HealthStatus::Healthy,
        group: Arc::default(),
        metadata: Arc::default(),
        state: std::sync::OnceLock::new(),
    })
}

fn build_plan(hosts: Vec<Arc<Host>>, config: &Cluster, overprovisioning: u32) -> Plan {
    let max_priority = hosts.iter().map(|h| h.group.priority).max();
    let levels_n = max_priority.map_or(0, |p| p as usize + 1);
    let mut by_level: Vec<Vec<Arc<Host>>> = vec![Vec::new(); levels_n];
    for h in &hosts {
        by_level[h.group.priority as usize].push(h.clone());
    }
    let health: Vec<LevelHealth> = by_level
        .iter()
        .map(|l| LevelHealth {
            healthy: l.iter().filter(|h| h.is_available()).count() as u32,
            total: l.len() as u32,
        })
        .collect();
    let panic_threshold = config
        .panic_threshold_percent
        .unwrap_or(priority::DEFAULT_PANIC_THRESHOLD);
    let load = priority::priority_load(&health, overprovisioning, panic_threshold);
    let levels = by_level
        .iter()
        .enumerate()
        .map(|(i, level)| {
            let panic = load.panic.get(i).copied().unwrap_or(false);
            let mut chosen: Vec<Arc<Host>> = level
                .iter()
                .filter(|h| panic || h.is_available())
                .cloned()
                .collect();
            // Kept for as long as the plan is current: no room to spare.
            chosen.shrink_to_fit();
            level_plan(chosen, level, config, overprovisioning, panic)
        })
        .collect();
    Plan {
        hosts,
        load,
        levels,
    }
}

fn level_plan(
    chosen: Vec<Arc<Host>>,
    all: &[Arc<Host>],
    config: &Cluster,
    overprovisioning: u32,
    panic: bool,
) -> LevelPlan {
    if !config.locality_weighted {
        let balancer = Balancer::build(&config.lb_policy, &chosen);
        return LevelPlan {
            localities: vec![LocalityPlan {
                hosts: chosen,
                balancer,
            }],
            cumulative: None,
        };
    }
    // Group by locality, in first-seen order.
    let mut order: Vec<&Locality> = Vec::new();
    for h in all {
        if !order.contains(&&h.group.locality) {
            order.push(&h.group.locality);
        }
    }
    let mut localities = Vec::new();
    let mut cumulative = Vec::new();
    let mut acc = 0u64;
    for loc in order {
        let members: Vec<&Arc<Host>> = all.iter().filter(|h| h.group.locality == *loc).collect();
        let mut hosts: Vec<Arc<Host>> = chosen
            .iter()
            .filter(|h| h.group.locality == *loc)
            .cloned()
            .collect();
        hosts.shrink_to_fit();
        let weight = u64::from(members.first().and_then(|h| h.group.weight).unwrap_or(1));
        let healthy = members.iter().filter(|h| h.is_available()).count() as u32;
        // Envoy: locality weight × its health (with overprovisioning), unless in panic.
        let health = if panic {
            100
        } else {
            priority::level_health(
                LevelHealth {
                    healthy,
                    total: members.len() as u32,
                },
                overprovisioning,
            )
        };
        acc += weight * u64::from(health);
        cumulative.push(acc);
        let balancer = Balancer::build(&config.lb_policy, &hosts);
        localities.push(LocalityPlan { hosts, balancer });
    }
    LevelPlan {
        localities,
        cumulative: Some(cumulative),
    }
}

fn pick_in(plan: &Plan, draw: Draw, level_roll: u32) -> Option<Arc<Host>> {
    let level = plan
        .levels
        .get(priority::choose_level(&plan.load, level_roll))?;
    let locality = match &level.cumulative {
        None => level.localities.first()?,
        Some(c) => {
            let total = *c.last()?;
            if total == 0 {
                return None;
            }
            let roll = draw.random[1] % total;
            level
                .localities
                .get(c.partition_point(|edge| *edge <= roll))?
        }
    };
    let i = locality.balancer.choose(&locality.hosts, draw)?;
    locality.hosts.get(i).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_xds::SocketAddress;
    use strait_xds::cluster::{LbPolicy, OutlierDetection};
    use strait_xds::endpoint::{LbEndpoint, LocalityEndpoints};

    fn cluster(locality_weighted: bool, outlier: Option<OutlierDetection>) -> Arc<Cluster> {
        Arc::new(Cluster {
            name: "outbound|80||svc".into(),
            discovery: Discovery::Eds(None),
            lb_policy: LbPolicy::RoundRobin,
            connect_timeout_ms: 1000,
            circuit_breakers: None,
            outlier_detection: outlier,
            http2: false,
            tls: None,
            locality_weighted,
            panic_threshold_percent: None,
            max_requests_per_connection: None,
            idle_timeout_ms: None,
            tcp_keepalive: None,
            service: None,
        })
    }

    fn locality(zone: &str, priority: u32, weight: Option<u32>, ips: &[&str]) -> LocalityEndpoints {
        LocalityEndpoints {
            locality: Locality {
                region: "r".into(),
                zone: zone.into(),
                sub_zone: String::new(),
            },
            priority,
            weight,
            endpoints: ips
                .iter()
                .map(|ip| LbEndpoint {
                    address: SocketAddress::new(*ip, 80),
                    health: HealthStatus::Healthy,
                    weight: 1,
                    metadata: Arc::default(),
                })
                .collect(),
        }
    }

    fn counts(c: &ClusterRuntime, n: usize) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for _ in 0..n {
            let h = c.pick(None, &[]).unwrap();
            *m.entry(h.address.ip().to_string()).or_default() += 1;
        }
        m
    }

    #[tokio::test]
    async fn priorities_fail_over_as_hosts_are_ejected_and_come_back() {
        let c = ClusterRuntime::new(
            cluster(
                false,
                Some(OutlierDetection {
                    consecutive_5xx: Some(1),
                    interval_ms: 10,
                    base_ejection_time_ms: 50,
                    max_ejection_percent: 100,
                    ..Default::default()
                }),
            ),
            &ClusterEnv::default(),
            &Secrets::new(),
        );
        c.set_assignment(Arc::new(ClusterLoadAssignment {
            cluster_name: "x".into(),
            localities: vec![
                locality("a", 0, None, &["10.0.0.1", "10.0.0.2"]),
                locality("b", 1, None, &["10.0.1.1"]),
            ],
            overprovisioning_factor: None,
        }));
        let m = counts(&c, 100);
        assert_eq!(
            m.get("10.0.1.1"),
            None,
            "priority 1 idle while 0 is healthy"
        );
        assert_eq!(m["10.0.0.1"], 50);
        // Eject both priority-0 hosts: everything goes to priority 1.
        for ip in ["10.0.0.1", "10.0.0.2"] {
            let h = c
                .plan()
                .hosts
                .iter()
                .find(|h| h.address.ip().to_string() == ip)
                .unwrap()
                .clone();
            c.record(&h, Outcome::Response(503));
        }
        let m = counts(&c, 50);
        assert_eq!(m["10.0.1.1"], 50, "{m:?}");
        // After the ejection time, the sweep brings them back.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let m = counts(&c, 50);
        assert_eq!(m.get("10.0.1.1"), None, "{m:?}");
    }

    #[tokio::test]
    async fn locality_weights_split_traffic() {
        let c = ClusterRuntime::new(cluster(true, None), &ClusterEnv::default(), &Secrets::new());
        c.set_assignment(Arc::new(ClusterLoadAssignment {
            cluster_name: "x".into(),
            localities: vec![
                locality("a", 0, Some(80), &["10.0.0.1"]),
                locality("b", 0, Some(20), &["10.0.1.1"]),
            ],
            overprovisioning_factor: None,
        }));
        let m = counts(&c, 5000);
        let share = m["10.0.0.1"] as f64 / 5000.0;
        assert!((share - 0.8).abs() < 0.03, "{m:?}");
    }

    #[tokio::test]
    async fn a_retry_leaves_the_host_that_failed_even_against_the_weights() {
        let c = ClusterRuntime::new(cluster(true, None), &ClusterEnv::default(), &Secrets::new());
        c.set_assignment(Arc::new(ClusterLoadAssignment {
            cluster_name: "x".into(),
            localities: vec![
                locality("a", 0, Some(99), &["10.0.0.1"]),
                locality("b", 0, Some(1), &["10.0.1.1"]),
                locality("c", 1, None, &["10.0.2.1"]),
            ],
            overprovisioning_factor: None,
        }));
        let failed: SocketAddr = "10.0.0.1:80".parse().unwrap();
        for _ in 0..200 {
            let h = c.pick(None, &[failed]).unwrap();
            assert_eq!(h.address.ip().to_string(), "10.0.1.1");
        }
        // With every host of its priority avoided, the pick stays in that priority.
        let all: Vec<SocketAddr> = ["10.0.0.1:80", "10.0.1.1:80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_ne!(
            c.pick(None, &all).unwrap().address.ip().to_string(),
            "10.0.2.1"
        );
    }

    #[tokio::test]
    async fn hosts_keep_their_state_across_endpoint_updates() {
        let c = ClusterRuntime::new(
            cluster(false, None),
            &ClusterEnv::default(),
            &Secrets::new(),
        );
        let cla = |ips: &[&str]| {
            Arc::new(ClusterLoadAssignment {
                cluster_name: "x".into(),
                localities: vec![locality("a", 0, None, ips)],
                overprovisioning_factor: None,
            })
        };
        c.set_assignment(cla(&["10.0.0.1", "10.0.0.2"]));
        assert!(
            c.plan().hosts.iter().all(|h| h.used_state().is_none()),
            "a host's state is made when it is first used"
        );
        let before = c.plan().hosts[0].state().clone();
        c.set_assignment(cla(&["10.0.0.1", "10.0.0.3"]));
        assert!(Arc::ptr_eq(&before, c.plan().hosts[0].state()));
        assert_eq!(c.plan().hosts.len(), 2);
    }
}
