//! Starting and stopping a local mesh (the edge): namespaces and links as the plan says, the
//! mesh CA and bootstrap tokens, one control plane per primary, and in each pod its app and
//! sidecar (or a gateway's proxy) — every process recorded in a state file so `--down`, Ctrl-C
//! or the next start removes all of it. In loopback mode there are no namespaces: the same
//! processes run on this host, each listening on its pod's own loopback address.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use strait_config::ConfigSet;
use strait_config::load::{LoadOptions, load_paths};
use strait_identity::cacerts;
use strait_identity::token::{self, TokenKey};
use strait_multicluster::secret::{
    READER_NAMESPACE, READER_SERVICE_ACCOUNT, RemoteAccess, secret_yaml,
};

use crate::capture::Capture;
use crate::plan::{self, App, Plan, PodPlan, Runtime};
use crate::topology::{self, Topology};
use crate::{loopback, manifests, netns};

/// What [`Mesh::wait_ready`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Control planes ready and synced with the clusters they watch.
    ControlPlanes,
    /// Proxies holding their configuration.
    Proxies,
}

/// The trust domain of local meshes.
const TRUST_DOMAIN: &str = "cluster.local";
/// The name in the control planes' serving certificates.
const CONTROL_PLANE_NAME: &str = "istiod.istio-system.svc";

#[derive(Debug, Clone)]
pub struct Options {
    /// The example: `topology.yaml` and a directory of manifests per cluster.
    pub dir: PathBuf,
    /// Prefix of every namespace (and the run's name).
    pub name: String,
    /// Where state, generated manifests, CA files and logs go.
    pub state_dir: PathBuf,
    /// The `strait` binary the pods run.
    pub exe: PathBuf,
    /// `RUST_LOG` of the mesh's processes.
    pub log_level: String,
    /// Namespaces (root) or loopback.
    pub runtime: Runtime,
}

/// What a run created, written as it goes so a crashed run can be cleaned up.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    namespaces: Vec<String>,
    #[serde(default)]
    processes: Vec<Recorded>,
}

/// A process a run started: its PID and when it started (clock ticks since boot), so a PID the
/// system reused for someone else since a crash is never ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    pid: u32,
    start: u64,
}

/// When process `pid` started (`/proc/PID/stat` field 22), if it runs.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl State {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("state.json")
    }

    fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(state_dir);
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// A process of the mesh.
struct Process {
    what: String,
    child: Child,
    log: PathBuf,
    /// How it was started, for a restart.
    netns: String,
    args: Vec<String>,
    /// Restarted when it exits (a control plane, as its Deployment would); a pod's processes
    /// stay down, so stopping a pod shows how the mesh fails over.
    restart: bool,
    /// Its exit has been reported.
    reported: bool,
    restarts: u32,
}

/// Restarts of one process at most, so one that cannot run does not spin.
const MAX_RESTARTS: u32 = 5;

/// A running local mesh.
pub struct Mesh {
    pub options: Options,
    pub topology: Topology,
    pub plan: Plan,
    state: State,
    processes: Vec<Process>,
    /// What each control plane's probes last said of each network gateway:
    /// (cluster, network, gateway address) → state.
    gateways: BTreeMap<(String, String, String), String>,
    gateways_checked: Option<Instant>,
}

/// Removes what a run named `name` left: its processes (by the PIDs it recorded) and its
/// namespaces. Returns what it removed.
pub fn down(name: &str, state_dir: &Path) -> (usize, usize) {
    let mut state: State = std::fs::read(State::path(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    for ns in netns::list(name) {
        if !state.namespaces.contains(&ns) {
            state.namespaces.push(ns);
        }
    }
    // A recorded PID is ended only while it is still the process the run started (same start
    // time): a PID the system reused since a crash belongs to someone else.
    let pids: Vec<rustix::process::Pid> = state
        .processes
        .iter()
        .filter(|p| start_time(p.pid) == Some(p.start))
        .filter_map(|p| rustix::process::Pid::from_raw(p.pid as i32))
        .collect();
    let mut killed = 0;
    for pid in &pids {
        if rustix::process::kill_process(*pid, rustix::process::Signal::TERM).is_ok() {
            killed += 1;
        }
    }
    if killed > 0 {
        std::thread::sleep(Duration::from_millis(500));
        for pid in &pids {
            let _ = rustix::process::kill_process(*pid, rustix::process::Signal::KILL);
        }
    }
    let removed = state.namespaces.len();
    for ns in &state.namespaces {
        netns::delete(ns);
    }
    let _ = std::fs::remove_file(State::path(state_dir));
    (killed, removed)
}

/// The first port this process may bind: 1 for root (or with `CAP_NET_BIND_SERVICE`, which
/// this does not look for), else Linux's `ip_unprivileged_port_start` (1024 by default).
fn lowest_bindable_port() -> u16 {
    if rustix::process::geteuid().is_root() {
        return 1;
    }
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// The last `n` lines of a log file.
fn log_tail(path: &Path, n: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(n).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Loads every cluster's manifests, failing with each problem found.
fn load_clusters(topology: &Topology) -> anyhow::Result<Vec<ConfigSet>> {
    let mut out = Vec::new();
    for c in &topology.clusters {
        let dir = topology.dir.join(&c.name);
        if !dir.is_dir() {
            bail!(
                "{}: no such directory; the topology names cluster {:?}, whose manifests belong there",
                dir.display(),
                c.name
            );
        }
        let report = load_paths(&[dir], &LoadOptions::default());
        let errors: Vec<String> = report
            .diagnostics()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            bail!(
                "cluster {}: the manifests have errors (fix them; `strait validate` shows the same):\n{}",
                c.name,
                errors.join("\n")
            );
        }
        let config = ConfigSet::from_resources(report.into_resources());
        if let Some(mesh) = config.mesh_configs.first()
            && let Some(n) = mesh.spec.network.as_deref()
            && n != c.network
        {
            bail!(
                "cluster {}: its MeshConfig says network {n:?} but the topology says {:?}; make them agree",
                c.name,
                c.network
            );
        }
        out.push(config);
    }
    Ok(out)
}

impl Mesh {
    /// Starts the mesh, reporting progress on `out`.
    pub fn start(options: Options, out: &mut dyn Write) -> anyhow::Result<Mesh> {
        if options.runtime == Runtime::Namespaces && !netns::can_create_namespaces() {
            bail!(
                "strait up runs pods as network namespaces, which needs root (try sudo); without root, `strait up --loopback` runs the same mesh on this host's loopback"
            );
        }
        let topology = topology::read(&options.dir)?;
        let configs = load_clusters(&topology)?;
        let plan = plan::plan(&topology, &configs, &options.name, options.runtime)
            .map_err(anyhow::Error::msg)?;
        let (killed, removed) = down(&options.name, &options.state_dir);
        if killed + removed > 0 {
            writeln!(
                out,
                "cleaned up a previous run of {:?}: {killed} processes, {removed} namespaces",
                options.name
            )?;
        }
        std::fs::create_dir_all(options.state_dir.join("logs"))
            .with_context(|| format!("cannot create {}", options.state_dir.display()))?;
        let mut mesh = Mesh {
            options,
            topology,
            plan,
            state: State::default(),
            processes: Vec::new(),
            gateways: BTreeMap::new(),
            gateways_checked: None,
        };
        // A start that fails half-way leaves nothing behind: what it started is stopped and
        // the namespaces it made are removed, and the error says what failed.
        match mesh.bring_up(&configs, out) {
            Ok(()) => Ok(mesh),
            Err(e) => {
                let (_, namespaces) = mesh.stop();
                let _ = writeln!(
                    out,
                    "start failed; removed the {namespaces} namespaces it had made"
                );
                Err(e)
            }
        }
    }

    /// Everything [`Mesh::start`] does after planning: files, networks, control planes, pods
    /// and apps, each phase waiting for the one before.
    fn bring_up(&mut self, configs: &[ConfigSet], out: &mut dyn Write) -> anyhow::Result<()> {
        self.write_manifests(configs, out)?;
        self.create_ca()?;
        self.write_remote_secrets()?;
        writeln!(out, "networks: {}", self.network_summary())?;
        if self.plan.runtime == Runtime::Namespaces {
            self.create_networks()?;
        } else {
            writeln!(
                out,
                "loopback mode: every pod on this host at its own 127.x address, sidecars with bound listeners (no capture, no DNS); networks are not isolated, but cross-network calls still go through the gateways"
            )?;
        }
        for (index, cp) in self.plan.control_planes.clone().iter().enumerate() {
            writeln!(out, "control plane of {} at {}", cp.cluster, cp.ip)?;
            self.start_control_plane(index, cp)?;
        }
        // Control planes first, each synced with the clusters it watches — as istiod waits
        // for its remote clusters before it is ready — so proxies start with the whole mesh.
        self.wait_ready(out, Phase::ControlPlanes)?;
        for (index, pod) in self.plan.pods.clone().iter().enumerate() {
            writeln!(
                out,
                "pod {}/{}/{} at {}{}{}",
                pod.cluster,
                pod.namespace,
                pod.name,
                pod.ip,
                pod.wan
                    .map(|w| format!(" (load balancer {w})"))
                    .unwrap_or_default(),
                if pod.sidecar { " with a sidecar" } else { "" }
            )?;
            self.start_pod(index, pod)?;
        }
        self.wait_ready(out, Phase::Proxies)?;
        // Apps start once every proxy holds its configuration, as Istio's
        // `holdApplicationUntilProxyStarts`: a client's first call does not race its sidecar.
        // Servers first, clients once the servers listen — as Kubernetes adds an endpoint only
        // when its pod is ready — so no first call meets a server still starting.
        let (clients, servers): (Vec<PodPlan>, Vec<PodPlan>) = self
            .plan
            .pods
            .clone()
            .into_iter()
            .partition(|p| matches!(p.app, App::Client { .. }));
        for pod in &servers {
            self.start_app(pod)?;
        }
        self.wait_apps_listening(&servers)?;
        for pod in &clients {
            self.start_app(pod)?;
        }
        Ok(())
    }

    fn state_path(&self, rel: &str) -> PathBuf {
        self.options.state_dir.join(rel)
    }

    fn network_summary(&self) -> String {
        self.plan
            .networks
            .iter()
            .map(|n| {
                let [a, b, ..] = n.router.octets();
                format!("{} {a}.{b}.0.0/16", n.name)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn write_manifests(&self, configs: &[ConfigSet], out: &mut dyn Write) -> anyhow::Result<()> {
        let all: Vec<&ConfigSet> = configs.iter().collect();
        for c in &self.topology.clusters {
            let src = self.topology.dir.join(&c.name);
            let dst = self.state_path(&format!("clusters/{}", c.name));
            let _ = std::fs::remove_dir_all(&dst);
            std::fs::create_dir_all(&dst)?;
            std::fs::write(
                dst.join("strait-up-node.yaml"),
                manifests::node(&c.name, c.locality.as_deref()),
            )?;
            if let Some(cp) = self
                .plan
                .control_planes
                .iter()
                .find(|p| p.cluster == c.name)
            {
                std::fs::write(
                    dst.join("strait-up-istiod.yaml"),
                    manifests::control_plane(&c.name, cp.ip, !cp.has_service),
                )?;
            }
            if self.plan.runtime == Runtime::Loopback && c.is_primary() {
                // Its own pods' and its remotes' (a primary holds its remotes' configuration).
                let served: Vec<&str> = self
                    .topology
                    .clusters
                    .iter()
                    .filter(|o| o.control_plane_cluster() == c.name)
                    .map(|o| o.name.as_str())
                    .collect();
                let (sidecars, left_out) =
                    loopback::sidecars(&served, &self.plan, &all, lowest_bindable_port());
                std::fs::write(dst.join("strait-up-loopback-sidecars.yaml"), sidecars)?;
                if !left_out.is_empty() {
                    let ports: Vec<String> = left_out.iter().map(u16::to_string).collect();
                    writeln!(
                        out,
                        "cluster {}: service ports {} are below the first port this user may bind, so apps cannot call them in loopback mode (run as root, or lower net.ipv4.ip_unprivileged_port_start)",
                        c.name,
                        ports.join(", ")
                    )?;
                }
            }
            let (files, _) = strait_config::load::list_files(std::slice::from_ref(&src), 10_000);
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let rel = file.strip_prefix(&src).unwrap_or(&file);
                let flat = rel.to_string_lossy().replace('/', "_");
                let rewritten =
                    manifests::rewrite(&text, &file.display().to_string(), &c.name, &self.plan)
                        .map_err(anyhow::Error::msg)?;
                std::fs::write(dst.join(flat).with_extension("yaml"), rewritten)?;
            }
        }
        Ok(())
    }

    fn create_ca(&self) -> anyhow::Result<()> {
        let now = SystemTime::now();
        let ca = self.state_path("ca");
        let _ = std::fs::remove_dir_all(&ca);
        let root_dir = ca.join("root");
        std::fs::create_dir_all(&root_dir)?;
        let root = cacerts::create_root(Duration::from_secs(365 * 86400), now)?;
        cacerts::write_root(&root_dir, &root)?;
        for cp in &self.plan.control_planes {
            let dir = ca.join(&cp.cluster);
            std::fs::create_dir_all(&dir)?;
            let inter = cacerts::create_intermediate(
                &root,
                &cp.cluster,
                Duration::from_secs(30 * 86400),
                now,
            )?;
            cacerts::write_intermediate(&dir, &inter, &root.cert, &root.cert)?;
        }
        let key = TokenKey::load_or_create(&ca.join("token-key")).map_err(anyhow::Error::msg)?;
        for pod in &self.plan.pods {
            let claims = token::claims(
                &pod.namespace,
                &pod.service_account,
                &pod.cluster,
                now,
                Duration::from_secs(86400),
            );
            token::write_secret(&self.token_path(pod), &key.mint(&claims))?;
        }
        Ok(())
    }

    /// Gives each control plane a remote secret per other primary, as `strait
    /// create-remote-secret` run there would: its registry stream's address (directly on one
    /// network, its WAN address from another), the mesh root, a reader token.
    fn write_remote_secrets(&self) -> anyhow::Result<()> {
        let key = TokenKey::load_or_create(&self.state_path("ca/token-key"))
            .map_err(anyhow::Error::msg)?;
        let root = std::fs::read_to_string(self.state_path("ca/root/root-cert.pem"))?;
        for cp in &self.plan.control_planes {
            for peer in &cp.peers {
                let Some(other) = self.plan.control_planes.iter().find(|p| p.cluster == *peer)
                else {
                    continue;
                };
                // Loopback mode has no WAN: every address is reachable.
                let address =
                    if other.network == cp.network || self.plan.runtime == Runtime::Loopback {
                        other.ip
                    } else {
                        other.wan
                    };
                let access = RemoteAccess {
                    cluster: peer.clone(),
                    server: format!("{address}:{}", plan::XDS_PORT),
                    server_name: CONTROL_PLANE_NAME.into(),
                    ca_pem: root.clone(),
                    token: key.mint(&token::claims(
                        READER_NAMESPACE,
                        READER_SERVICE_ACCOUNT,
                        peer,
                        SystemTime::now(),
                        Duration::from_secs(86400),
                    )),
                    source: String::new(),
                    mirror: cp.mirror,
                    // A link probes the linked cluster's gateway, as Linkerd's does.
                    probe: cp
                        .mirror
                        .then(|| {
                            self.plan
                                .pods
                                .iter()
                                .filter(|p| p.cluster == *peer && p.app == App::Gateway)
                                .find_map(|p| p.wan)
                                .map(|wan| format!("http://{wan}:15021/healthz/ready"))
                        })
                        .flatten(),
                    link: Default::default(),
                };
                let path = self.state_path(&format!(
                    "clusters/{}/strait-up-remote-secret-{peer}.yaml",
                    cp.cluster
                ));
                token::write_secret(&path, &secret_yaml(&access))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        Ok(())
    }

    fn token_path(&self, pod: &PodPlan) -> PathBuf {
        self.state_path(&format!(
            "ca/{}.{}.{}.token",
            pod.cluster, pod.namespace, pod.name
        ))
    }

    fn add_namespace(&mut self, ns: &str) -> anyhow::Result<()> {
        self.state.namespaces.push(ns.to_string());
        self.state.save(&self.options.state_dir)?;
        netns::add(ns)
    }

    fn create_networks(&mut self) -> anyhow::Result<()> {
        let wan = format!("{}-wan", self.plan.prefix);
        self.add_namespace(&wan)?;
        netns::add_bridge(&wan, None)?;
        for n in self.plan.networks.clone() {
            self.add_namespace(&n.netns)?;
            netns::add_bridge(&n.netns, Some((n.router, 16)))?;
            netns::attach(
                &n.netns,
                netns::WAN_LINK,
                n.wan,
                24,
                &wan,
                &format!("n{}", n.index),
            )?;
            netns::run_in(&n.netns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
            // The segment reaches the WAN (other networks' gateways) behind its router's
            // address, as a cluster's nodes reach a cloud load balancer.
            netns::run_in(
                &n.netns,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    netns::WAN_LINK,
                    "-j",
                    "MASQUERADE",
                ],
            )?;
        }
        Ok(())
    }

    /// A namespace on `network`'s segment at `ip`, routed through its router.
    fn join_segment(
        &mut self,
        ns: &str,
        network: &str,
        ip: Ipv4Addr,
        peer: &str,
    ) -> anyhow::Result<()> {
        let n = self
            .plan
            .network(network)
            .with_context(|| format!("network {network} is not planned"))?
            .clone();
        self.add_namespace(ns)?;
        netns::attach(ns, "eth0", ip, 16, &n.netns, peer)?;
        netns::run_in(
            ns,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &n.router.to_string(),
            ],
        )
    }

    /// Starts a process of the mesh; `restart`: restart it when it exits (see [`Mesh::watch`]).
    fn spawn(
        &mut self,
        ns: &str,
        what: String,
        args: &[String],
        restart: bool,
    ) -> anyhow::Result<()> {
        let mut process = self.start_process(ns, what, args, false)?;
        process.restart = restart;
        self.processes.push(process);
        Ok(())
    }

    /// Starts `strait ARGS` in `ns`, logging to the log of `what` (appending on a restart).
    fn start_process(
        &mut self,
        ns: &str,
        what: String,
        args: &[String],
        append: bool,
    ) -> anyhow::Result<Process> {
        let log = self.log_path(&what);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = if self.plan.runtime == Runtime::Loopback {
            Command::new(&self.options.exe)
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&self.options.exe);
            c
        };
        let child = command
            .args(args)
            .env("RUST_LOG", &self.options.log_level)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        if let Some(start) = start_time(child.id()) {
            self.state.processes.push(Recorded {
                pid: child.id(),
                start,
            });
        }
        self.state.save(&self.options.state_dir)?;
        Ok(Process {
            what,
            child,
            log,
            netns: ns.to_string(),
            args: args.to_vec(),
            restart: false,
            reported: false,
            restarts: 0,
        })
    }

    /// Starts the control plane planned at `index` (which names its link on the segment).
    /// Where the process `what` (`cluster/namespace/pod.app`, ...) logs.
    fn log_path(&self, what: &str) -> PathBuf {
        self.state_path(&format!("logs/{}.log", what.replace('/', "_")))
    }

    fn start_control_plane(
        &mut self,
        index: usize,
        cp: &plan::ControlPlanePlan,
    ) -> anyhow::Result<()> {
        let loopback = self.plan.runtime == Runtime::Loopback;
        if !loopback {
            self.join_segment(&cp.netns, &cp.network, cp.ip, &format!("cp{index}"))?;
            let wan_ns = format!("{}-wan", self.plan.prefix);
            netns::attach(
                &cp.netns,
                netns::WAN_LINK,
                cp.wan,
                24,
                &wan_ns,
                &format!("c{index}"),
            )?;
        }
        let dir = |c: &str| {
            self.state_path(&format!("clusters/{c}"))
                .display()
                .to_string()
        };
        let mut args: Vec<String> = vec![
            "control-plane".into(),
            "--cluster".into(),
            cp.cluster.clone(),
            "--config".into(),
            dir(&cp.cluster),
            "--xds-listen".into(),
            format!("{}:15010", cp.ip),
            "--debug-listen".into(),
            format!("{}:15014", cp.ip),
            // Namespaces: all addresses (proxies come from the segment, peers' registry watches
            // from the WAN); loopback: its own.
            "--secure-listen".into(),
            format!(
                "{}:{}",
                if loopback {
                    cp.ip
                } else {
                    Ipv4Addr::UNSPECIFIED
                },
                plan::XDS_PORT
            ),
            "--cacerts".into(),
            self.state_path(&format!("ca/{}", cp.cluster))
                .display()
                .to_string(),
            "--token-key".into(),
            self.state_path("ca/token-key").display().to_string(),
        ];
        if !loopback {
            // The cluster's DNS, as kube-dns: where sidecars forward what the mesh does not
            // know (port 53 needs privilege; loopback mode has no DNS capture to use it).
            args.push("--dns-listen".into());
            args.push(format!("{}:53", cp.ip));
        }
        for remote in &cp.remotes {
            args.push("--remote-config".into());
            args.push(format!("{remote}={}", dir(remote)));
        }
        self.spawn(
            &cp.netns.clone(),
            format!("{}/istiod", cp.cluster),
            &args,
            true,
        )
    }

    /// A pod's resolver: its cluster's DNS (the control plane, as kube-dns) and Kubernetes'
    /// search domains. With a sidecar, the questions go to its DNS proxy (capture), which
    /// forwards what the mesh does not know to this name server.
    fn resolv_conf(&self, pod: &PodPlan) -> String {
        let mut text = String::new();
        if let Some(cp) = self
            .plan
            .control_planes
            .iter()
            .find(|c| c.cluster == pod.cluster)
        {
            text.push_str(&format!("nameserver {}\n", cp.ip));
        }
        let ns = &pod.namespace;
        text.push_str(&format!(
            "search {ns}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        ));
        text
    }

    /// A pod's `/etc/hosts`: itself, and for a pod without a sidecar (no DNS proxy) the
    /// services it may call.
    fn hosts_file(&self, pod: &PodPlan) -> String {
        let mut text = String::from("127.0.0.1 localhost\n");
        text.push_str(&format!("{} {}\n", pod.ip, pod.name));
        if pod.sidecar {
            return text;
        }
        for (svc, vip) in self.plan.vips.get(&pod.cluster).into_iter().flatten() {
            let (ns, name) = svc.split_once('/').unwrap_or(("default", svc));
            text.push_str(&format!(
                "{vip} {name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}"
            ));
            if ns == pod.namespace {
                text.push_str(&format!(" {name}"));
            }
            text.push('\n');
        }
        // Linkerd-style mirrors of the linked clusters' exported services (`<name>-<cluster>`),
        // at the address the linked cluster gives them.
        let links = self
            .topology
            .clusters
            .iter()
            .find(|c| c.name == pod.cluster)
            .map(|c| c.links.clone())
            .unwrap_or_default();
        for linked in &links {
            for svc in self.plan.exported.get(linked).into_iter().flatten() {
                let Some(vip) = self.plan.vips.get(linked).and_then(|v| v.get(svc)) else {
                    continue;
                };
                let (ns, name) = svc.split_once('/').unwrap_or(("default", svc));
                let mirror = format!("{name}-{linked}");
                text.push_str(&format!(
                    "{vip} {mirror}.{ns}.svc.cluster.local {mirror}.{ns}.svc {mirror}.{ns}"
                ));
                if ns == pod.namespace {
                    text.push_str(&format!(" {mirror}"));
                }
                text.push('\n');
            }
        }
        text
    }

    /// Makes the pod planned at `index` (which names its links) and starts its proxy.
    fn start_pod(&mut self, index: usize, pod: &PodPlan) -> anyhow::Result<()> {
        if self.plan.runtime == Runtime::Loopback {
            if pod.sidecar || pod.app == App::Gateway {
                let args = self.proxy_args(pod, &Capture::default())?;
                let what = self.proxy_name(pod);
                self.spawn("", what, &args, false)?;
            }
            return Ok(());
        }
        self.join_segment(&pod.netns, &pod.network, pod.ip, &format!("p{index}"))?;
        if let Some(wan) = pod.wan {
            let wan_ns = format!("{}-wan", self.plan.prefix);
            netns::attach(
                &pod.netns,
                netns::WAN_LINK,
                wan,
                24,
                &wan_ns,
                &format!("g{index}"),
            )?;
        }
        netns::write_etc(&pod.netns, "hosts", &self.hosts_file(pod))?;
        netns::write_etc(&pod.netns, "resolv.conf", &self.resolv_conf(pod))?;
        let capture = Capture::default();
        if pod.sidecar {
            for rule in capture.rules() {
                let mut args = vec!["iptables"];
                args.extend(rule.iter().map(String::as_str));
                netns::run_in(&pod.netns, &args)?;
            }
        }
        if pod.sidecar || pod.app == App::Gateway {
            let args = self.proxy_args(pod, &capture)?;
            let what = self.proxy_name(pod);
            self.spawn(&pod.netns.clone(), what, &args, false)?;
        }
        Ok(())
    }

    /// The name of `pod`'s proxy process (`cluster/namespace/pod.sidecar` or `.gateway`).
    fn proxy_name(&self, pod: &PodPlan) -> String {
        let role = if pod.app == App::Gateway {
            "gateway"
        } else {
            "sidecar"
        };
        format!("{}/{}/{}.{role}", pod.cluster, pod.namespace, pod.name)
    }

    fn start_app(&mut self, pod: &PodPlan) -> anyhow::Result<()> {
        let who = format!("{}/{}/{}", pod.cluster, pod.namespace, pod.name);
        let app: Option<Vec<String>> = match &pod.app {
            App::HelloWorld { version, .. } => Some(vec![
                "demo".into(),
                "helloworld".into(),
                "--listen".into(),
                pod.app_listen.to_string(),
                "--service-version".into(),
                version.clone(),
                "--instance".into(),
                pod.name.clone(),
            ]),
            App::Client { url } => {
                let mut args: Vec<String> = vec!["demo".into(), "client".into()];
                args.extend(url.clone());
                // Without capture the app calls its sidecar's bound listeners itself.
                if self.plan.runtime == Runtime::Loopback && pod.sidecar {
                    args.push("--via".into());
                    args.push(self.plan.listen_ip(pod).to_string());
                }
                Some(args)
            }
            App::TcpEcho { .. } | App::GrpcEcho { .. } => Some(vec![
                "demo".into(),
                if matches!(pod.app, App::TcpEcho { .. }) {
                    "tcp-echo"
                } else {
                    "grpc-echo"
                }
                .into(),
                "--listen".into(),
                pod.app_listen.to_string(),
                "--instance".into(),
                pod.name.clone(),
            ]),
            App::Gateway => None,
        };
        if let Some(args) = app {
            self.spawn(&pod.netns.clone(), format!("{who}.app"), &args, false)?;
        }
        Ok(())
    }

    fn proxy_args(&self, pod: &PodPlan, capture: &Capture) -> anyhow::Result<Vec<String>> {
        let xds = self
            .plan
            .xds_address(&self.topology, pod)
            .map_err(anyhow::Error::msg)?;
        let kind = if pod.app == App::Gateway {
            "router"
        } else {
            "sidecar"
        };
        let labels = pod
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut args: Vec<String> = vec![
            "proxy".into(),
            "--mode".into(),
            kind.into(),
            "--xds".into(),
            xds.to_string(),
            "--node-id".into(),
            format!(
                "{kind}~{}~{}.{}~{}.svc.cluster.local",
                pod.ip, pod.name, pod.namespace, pod.namespace
            ),
            "--meta".into(),
            format!("CLUSTER_ID={}", pod.cluster),
            "--meta".into(),
            format!("NETWORK={}", pod.network),
            "--meta".into(),
            format!("NAMESPACE={}", pod.namespace),
            "--meta".into(),
            format!("LABELS={labels}"),
            "--ca-root".into(),
            self.state_path("ca/root/root-cert.pem")
                .display()
                .to_string(),
            "--token".into(),
            self.token_path(pod).display().to_string(),
            "--service-account".into(),
            pod.service_account.clone(),
            "--control-plane-name".into(),
            CONTROL_PLANE_NAME.into(),
            "--trust-domain".into(),
            TRUST_DOMAIN.into(),
            "--access-log".into(),
            self.state_path(&format!(
                "logs/{}_{}_{}.access.log",
                pod.cluster, pod.namespace, pod.name
            ))
            .display()
            .to_string(),
        ];
        if let Some(l) = &pod.locality {
            args.push("--meta".into());
            args.push(format!("LOCALITY={l}"));
        }
        if let Some(n) = pod.concurrency {
            args.push("--concurrency".into());
            args.push(n.to_string());
        }
        if self.plan.runtime == Runtime::Loopback {
            // Several proxies on one host: each on its pod's address, none capturing.
            let ip = self.plan.listen_ip(pod);
            for flag in ["--upstream-bind", "--wildcard-bind"] {
                args.push(flag.into());
                args.push(ip.to_string());
            }
            for (flag, port) in [
                ("--admin-listen", 15000),
                ("--health-listen", 15021),
                ("--prometheus-listen", 15090),
            ] {
                args.push(flag.into());
                args.push(format!("{ip}:{port}"));
            }
            args.push("--meta".into());
            args.push("INTERCEPTION_MODE=NONE".into());
            return Ok(args);
        }
        args.push("--mark".into());
        args.push(capture.mark.to_string());
        if pod.sidecar
            && let Some(port) = capture.dns_port
        {
            args.push("--dns-listen".into());
            args.push(format!("127.0.0.1:{port}"));
        }
        Ok(args)
    }

    /// Waits (at most a minute) until every control plane or every proxy is ready.
    fn wait_ready(&mut self, out: &mut dyn Write, phase: Phase) -> anyhow::Result<()> {
        // (what, namespace, URL, the answer's first line when ready; `None`: any 200)
        let mut pending: Vec<(String, String, String, Option<String>)> = Vec::new();
        let control_planes = match phase {
            Phase::ControlPlanes => &self.plan.control_planes[..],
            Phase::Proxies => &[],
        };
        for cp in control_planes {
            pending.push((
                format!("{}/istiod", cp.cluster),
                cp.netns.clone(),
                format!("http://{}:15014/ready", cp.ip),
                None,
            ));
            if !cp.peers.is_empty() {
                pending.push((
                    format!("{}/istiod synced with {}", cp.cluster, cp.peers.join(", ")),
                    cp.netns.clone(),
                    format!("http://{}:15014/debug/remotez/synced", cp.ip),
                    Some(cp.peers.len().to_string()),
                ));
            }
        }
        for pod in self
            .plan
            .pods
            .iter()
            .filter(|p| phase == Phase::Proxies && (p.sidecar || p.app == App::Gateway))
        {
            pending.push((
                format!("{}/{}/{} proxy", pod.cluster, pod.namespace, pod.name),
                pod.netns.clone(),
                format!("http://{}:15021/healthz/ready", self.plan.listen_ip(pod)),
                None,
            ));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pending.is_empty() {
            if let Some(dead) = self.exited() {
                bail!("{dead}");
            }
            let mut still = Vec::new();
            for (what, ns, url, want) in pending {
                let ready = self.probe(&ns, &url)?;
                let ok = match &ready {
                    Ok((200, body)) => want.as_ref().is_none_or(|w| body == w),
                    _ => false,
                };
                if ok {
                    writeln!(out, "ready: {what}")?;
                } else {
                    still.push((what, ns, url, want));
                }
            }
            pending = still;
            if Instant::now() > deadline {
                let names: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
                bail!(
                    "not ready after 60 s: {}; their logs are in {}",
                    names.join(", "),
                    self.state_path("logs").display()
                );
            }
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// Waits (at most 15 s) until each of `pods`' apps accepts connections where it listens.
    fn wait_apps_listening(&mut self, pods: &[PodPlan]) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        for pod in pods.iter().filter(|p| p.app.port().is_some()) {
            let mut addr = pod.app_listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(pod.ip);
            }
            loop {
                let addr = std::net::SocketAddr::V4(addr);
                let connect = move || {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
                };
                let listening = if self.plan.runtime == Runtime::Loopback {
                    connect()
                } else {
                    netns::within(&pod.netns, connect)?
                };
                if listening {
                    break;
                }
                if let Some(dead) = self.exited() {
                    bail!("{dead}");
                }
                if Instant::now() > deadline {
                    bail!(
                        "the app of {}/{}/{} does not listen on {addr} after 15 s; its log is in {}",
                        pod.cluster,
                        pod.namespace,
                        pod.name,
                        self.state_path("logs").display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// `GET url` from namespace `ns` (loopback mode: from here): the status and the body's
    /// first line.
    fn probe(&self, ns: &str, url: &str) -> anyhow::Result<crate::apps::Outcome> {
        self.probe_with(ns, url, crate::apps::get)
    }

    /// As [`Mesh::probe`], with the whole body.
    fn probe_whole(&self, ns: &str, url: &str) -> anyhow::Result<crate::apps::Outcome> {
        self.probe_with(ns, url, crate::apps::get_whole)
    }

    fn probe_with(
        &self,
        ns: &str,
        url: &str,
        get: fn(&str, Option<&str>, Duration) -> crate::apps::Outcome,
    ) -> anyhow::Result<crate::apps::Outcome> {
        let timeout = Duration::from_millis(500);
        if self.plan.runtime == Runtime::Loopback {
            return Ok(get(url, None, timeout));
        }
        let url = url.to_string();
        netns::within(ns, move || get(&url, None, timeout))
    }

    /// A process that has exited, described with its log's last lines (while starting, any
    /// exit is a failure).
    fn exited(&mut self) -> Option<String> {
        for p in &mut self.processes {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some(format!(
                    "{} exited ({status}); log {}:\n{}",
                    p.what,
                    p.log.display(),
                    log_tail(&p.log, 5)
                ));
            }
        }
        None
    }

    /// Once up: reports each process that exited since the last call, and restarts the
    /// control planes among them (at most [`MAX_RESTARTS`] times each). A pod's processes stay
    /// down — the rest of the mesh keeps running, as a cluster does when a pod stops.
    pub fn watch(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        for i in 0..self.processes.len() {
            let p = &mut self.processes[i];
            if p.reported {
                continue;
            }
            let Ok(Some(status)) = p.child.try_wait() else {
                continue;
            };
            p.reported = true;
            let what = p.what.clone();
            if !p.restart || p.restarts >= MAX_RESTARTS {
                events.push(format!(
                    "{what} exited ({status}); it stays down. Its log ({}) ends:\n{}",
                    p.log.display(),
                    log_tail(&p.log, 3)
                ));
                continue;
            }
            let (netns, args, restarts) = (p.netns.clone(), p.args.clone(), p.restarts + 1);
            match self.start_process(&netns, what.clone(), &args, true) {
                Ok(mut fresh) => {
                    fresh.restart = true;
                    fresh.restarts = restarts;
                    events.push(format!(
                        "{what} exited ({status}); restarted it (restart {restarts} of at most {MAX_RESTARTS})"
                    ));
                    self.processes[i] = fresh;
                }
                Err(e) => events.push(format!(
                    "{what} exited ({status}) and could not be restarted: {e:#}"
                )),
            }
        }
        events.extend(self.gateway_changes());
        events
    }

    /// What changed, at most every second, in what the control planes' probes say of the
    /// networks' gateways: one stopped answering, or answers again.
    fn gateway_changes(&mut self) -> Vec<String> {
        if self
            .gateways_checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Vec::new();
        }
        self.gateways_checked = Some(Instant::now());
        let mut events = Vec::new();
        for cp in &self.plan.control_planes {
            let url = format!("http://{}:15014/debug/gatewayz", cp.ip);
            let Ok(Ok((200, body))) = self.probe_whole(&cp.netns, &url) else {
                continue;
            };
            let Ok(page) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            for g in page["gateways"].as_array().into_iter().flatten() {
                let (Some(network), Some(address), Some(state)) = (
                    g["network"].as_str(),
                    g["address"].as_str(),
                    g["state"].as_str(),
                ) else {
                    continue;
                };
                let key = (cp.cluster.clone(), network.to_string(), address.to_string());
                let before = self.gateways.insert(key, state.to_string());
                let news = match (before.as_deref(), state) {
                    (Some("unreachable"), "reachable") => "answers its probes again",
                    (b, "unreachable") if b != Some("unreachable") => {
                        "does not answer its probes: the endpoints behind it are sent unhealthy"
                    }
                    _ => continue,
                };
                events.push(format!(
                    "{}/istiod: {network}'s gateway {address} {news}",
                    cp.cluster
                ));
            }
        }
        events
    }

    /// The clients' latest tallies (the last line of each client's log), by pod.
    pub fn tallies(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let clients = self
            .plan
            .pods
            .iter()
            .filter(|p| matches!(p.app, App::Client { url: Some(_) }));
        for pod in clients {
            let who = format!("{}/{}/{}", pod.cluster, pod.namespace, pod.name);
            let log =
                std::fs::read_to_string(self.log_path(&format!("{who}.app"))).unwrap_or_default();
            if let Some(last) = log.lines().rev().find(|l| l.contains(" calls: ")) {
                out.insert(who, last.to_string());
            }
        }
        out
    }

    /// A table of what runs.
    pub fn status(&self) -> String {
        let mut s = String::new();
        for c in &self.topology.clusters {
            let cp = self
                .plan
                .control_plane_for(&self.topology, &c.name)
                .map(|cp| format!("control plane {} ({})", cp.ip, cp.cluster))
                .unwrap_or_default();
            s.push_str(&format!(
                "cluster {} · network {} · {cp}\n",
                c.name, c.network
            ));
            for p in self.plan.pods.iter().filter(|p| p.cluster == c.name) {
                let role = match &p.app {
                    App::Gateway => format!(
                        "gateway, load balancer {}",
                        p.wan.map(|w| w.to_string()).unwrap_or_default()
                    ),
                    App::HelloWorld { version, .. } => format!("helloworld {version}"),
                    App::Client { url: Some(u) } => format!("client → {u}"),
                    App::Client { url: None } => "client (idle)".into(),
                    App::TcpEcho { .. } => "tcp-echo".into(),
                    App::GrpcEcho { .. } => "grpc-echo".into(),
                };
                s.push_str(&format!(
                    "  {:<28} {:<12} {role}{}\n",
                    format!("{}/{}", p.namespace, p.name),
                    p.ip,
                    if p.sidecar { " + sidecar" } else { "" }
                ));
                match self.plan.runtime {
                    Runtime::Namespaces => {
                        s.push_str(&format!("  {:<28} ip netns exec {} ...\n", "", p.netns))
                    }
                    // Its sidecar's bound listeners are where its calls go.
                    Runtime::Loopback if p.sidecar => s.push_str(&format!(
                        "  {:<28} calls via {}, e.g. curl --connect-to ::{}: http://<service>:<port>/\n",
                        "",
                        self.plan.listen_ip(p),
                        self.plan.listen_ip(p)
                    )),
                    Runtime::Loopback => {}
                }
            }
        }
        s
    }

    /// Stops every process and removes every namespace.
    pub fn stop(mut self) -> (usize, usize) {
        for p in &mut self.processes {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.state.processes.clear();
        let _ = self.state.save(&self.options.state_dir);
        down(&self.options.name, &self.options.state_dir)
    }
}
