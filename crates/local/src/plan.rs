//! The plan of a local mesh (pure): from a topology and each cluster's manifests, every
//! network segment, control plane, pod and service address, with the names of the network
//! namespaces that will hold them.
//!
//! Addresses: network *n* (in order of first appearance) is `10.n.0.0/16` with its router at
//! `10.n.0.1` and control planes from `10.n.0.2`; pods from `10.n.1.10`. The networks meet only
//! on the WAN segment `10.255.0.0/24` (routers at `10.255.0.n`, control planes' registry
//! endpoints from `10.255.0.50`, east-west gateways' load balancer addresses from
//! `10.255.0.100`). Cluster *c*'s service VIPs are `10.(200+c).0.x`.
//!
//! In loopback mode (no root) the same plan lives on this host's loopback: every address above
//! with `127` for `10` (Linux routes all of `127.0.0.0/8` to `lo`), each pod's app behind its
//! sidecar on `127.0.0.1` at a port of its own.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use strait_config::ConfigSet;
use strait_config::kube::PodSpec;

use crate::topology::{Discovery, Topology};

/// The demo images `strait up` runs, and what they become.
pub const HELLOWORLD_IMAGE: &str = "strait/helloworld";
pub const CLIENT_IMAGE: &str = "strait/client";
pub const TCP_ECHO_IMAGE: &str = "strait/tcp-echo";
pub const GRPC_ECHO_IMAGE: &str = "strait/grpc-echo";
/// A pod of the proxy alone: a gateway (`strait proxy --mode router`).
pub const PROXY_IMAGE: &str = "strait/strait";

/// The label Istio's injector puts on pods with a sidecar (peers then use mesh mTLS).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// The control plane's port for proxies (mTLS-secured xDS and certificates).
pub const XDS_PORT: u16 = 15012;

/// The label that exports a Service to linking clusters (Linkerd's).
pub const EXPORTED_LABEL: &str = "mirror.linkerd.io/exported";

/// The WAN segment's routers' and gateways' prefix.
pub const WAN_PREFIX: [u8; 3] = [10, 255, 0];

/// The label that tells one pod from its replicas, so a Sidecar resource can select it alone
/// (loopback mode gives each pod its own bind address).
pub const POD_LABEL: &str = "strait.dev/pod";

/// In loopback mode, pod *i*'s app listens on `127.0.0.1:(APP_PORT_BASE + i)` behind its
/// sidecar (below Linux's ephemeral ports, so outgoing connections never hold them).
pub const APP_PORT_BASE: u16 = 20000;

/// How the pods of a local mesh are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// Each pod a network namespace with its sidecar capturing by iptables, each network its
    /// own segment (needs root).
    #[default]
    Namespaces,
    /// Every process on this host's loopback, each pod at its own `127.x` address: sidecars
    /// with explicit `bind` listeners (Istio's Sidecar `captureMode: NONE`), gateways bound to
    /// their load balancer addresses, no capture and no DNS (needs no privilege).
    Loopback,
}

impl Runtime {
    /// The first octet of every planned address.
    fn first_octet(self) -> u8 {
        match self {
            Runtime::Namespaces => 10,
            Runtime::Loopback => 127,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Prefix of every namespace name (`strait up --name`).
    pub prefix: String,
    pub runtime: Runtime,
    pub networks: Vec<NetworkPlan>,
    pub control_planes: Vec<ControlPlanePlan>,
    pub pods: Vec<PodPlan>,
    /// Cluster → `namespace/name` of a Service → its VIP, for Services without a cluster IP.
    pub vips: BTreeMap<String, BTreeMap<String, Ipv4Addr>>,
    /// Cluster → `namespace/name` of its Services labelled `mirror.linkerd.io/exported: "true"`.
    pub exported: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    pub name: String,
    pub index: u8,
    /// The namespace holding the segment's bridge and its router.
    pub netns: String,
    pub router: Ipv4Addr,
    /// The router's address on the WAN (where it masquerades the segment's traffic).
    pub wan: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlanePlan {
    pub cluster: String,
    pub network: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// Its address on the WAN, where other networks' control planes reach its registry stream
    /// (as a cloud exposes a cluster's API server).
    pub wan: Ipv4Addr,
    /// The other primaries, whose registries it watches through remote secrets (Istio), or
    /// the clusters it links (Linkerd).
    pub peers: Vec<String>,
    /// It links its peers Linkerd-style (mirrors of their exported services).
    pub mirror: bool,
    /// The remote clusters (no control plane of their own), whose manifests it reads directly
    /// — as a primary reads a remote's API server.
    pub remotes: Vec<String>,
    /// Whether the cluster's manifests define the `istio-system/istiod` Service themselves (as
    /// an install would); otherwise `strait up` adds it.
    pub has_service: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub netns: String,
    pub network: String,
    pub ip: Ipv4Addr,
    /// A gateway's load-balancer address on the WAN.
    pub wan: Option<Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub app: App,
    /// Whether a sidecar is injected (Istio's rules: the namespace's `istio-injection=enabled`
    /// or the pod's `sidecar.istio.io/inject=true`, unless the pod says `false`).
    pub sidecar: bool,
    pub locality: Option<String>,
    /// Its proxy's worker threads, from the pod's `proxy.istio.io/config` annotation
    /// (`concurrency`); `None`: the proxy's default.
    pub concurrency: Option<usize>,
    /// Where its app listens (a gateway: nowhere, port 0). Namespaces: every address of the
    /// pod at the app's port. Loopback: behind a sidecar, `127.0.0.1` at a port of the pod's
    /// own; without one, the pod's address.
    pub app_listen: SocketAddrV4,
}

/// What runs in a pod besides (or, for a gateway, as) its proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum App {
    /// Istio's helloworld: answers `Hello version: <version>, instance: <pod>`.
    HelloWorld {
        port: u16,
        version: String,
    },
    /// Calls `url` in a loop and keeps a tally; without a URL it idles like Istio's `sleep`.
    Client {
        url: Option<String>,
    },
    TcpEcho {
        port: u16,
    },
    /// A gRPC echo (`strait demo grpc-echo`).
    GrpcEcho {
        port: u16,
    },
    /// No app: the pod is an east-west (or ingress) gateway.
    Gateway,
}

/// Plans the mesh. `configs` holds each cluster's manifests, in the topology's order.
pub fn plan(
    topology: &Topology,
    configs: &[ConfigSet],
    prefix: &str,
    runtime: Runtime,
) -> Result<Plan, String> {
    let a = runtime.first_octet();
    let wan_prefix = [a, WAN_PREFIX[1], WAN_PREFIX[2]];
    let mut networks: Vec<NetworkPlan> = Vec::new();
    for c in &topology.clusters {
        if !networks.iter().any(|n| n.name == c.network) {
            let index = u8::try_from(networks.len() + 1)
                .ok()
                .filter(|i| *i < 200)
                .ok_or("more than 199 networks")?;
            networks.push(NetworkPlan {
                name: c.network.clone(),
                index,
                netns: format!("{prefix}-net-{}", c.network),
                router: Ipv4Addr::new(a, index, 0, 1),
                wan: Ipv4Addr::new(wan_prefix[0], wan_prefix[1], wan_prefix[2], index),
            });
        }
    }
    let index_of = |network: &str| {
        networks
            .iter()
            .find(|n| n.name == network)
            .map(|n| n.index)
            .unwrap_or(0)
    };
    let mut control_planes = Vec::new();
    let mut next_host: BTreeMap<u8, u16> = BTreeMap::new();
    for (c, config) in topology
        .clusters
        .iter()
        .zip(configs)
        .filter(|(c, _)| c.is_primary())
    {
        let n = index_of(&c.network);
        let host = next_host.entry(n).or_insert(2);
        control_planes.push(ControlPlanePlan {
            cluster: c.name.clone(),
            network: c.network.clone(),
            netns: format!("{prefix}-{}-istiod", c.name),
            ip: Ipv4Addr::new(
                a,
                n,
                0,
                u8::try_from(*host).map_err(|_| "too many control planes")?,
            ),
            wan: Ipv4Addr::new(
                wan_prefix[0],
                wan_prefix[1],
                wan_prefix[2],
                u8::try_from(50 + control_planes.len())
                    .ok()
                    .filter(|a| *a < 100)
                    .ok_or("more than 50 control planes")?,
            ),
            peers: match topology.discovery {
                Discovery::Istio => topology
                    .clusters
                    .iter()
                    .filter(|o| o.name != c.name && o.is_primary())
                    .map(|o| o.name.clone())
                    .collect(),
                Discovery::Linkerd => c.links.clone(),
            },
            mirror: topology.discovery == Discovery::Linkerd,
            remotes: topology
                .clusters
                .iter()
                .filter(|o| !o.is_primary())
                .map(|o| o.name.clone())
                .collect(),
            has_service: config
                .services
                .iter()
                .any(|s| s.meta.namespace == "istio-system" && s.meta.name == "istiod"),
        });
        *host += 1;
    }
    let mut pods = Vec::new();
    let mut next_pod: BTreeMap<u8, u32> = BTreeMap::new();
    let mut next_gateway = 100u32;
    let mut vips = BTreeMap::new();
    for (ci, (cluster, config)) in topology.clusters.iter().zip(configs).enumerate() {
        let n = index_of(&cluster.network);
        let injected_namespaces: Vec<&str> = config
            .namespaces
            .iter()
            .filter(|ns| {
                ns.meta.labels.get("istio-injection").map(String::as_str) == Some("enabled")
            })
            .map(|ns| ns.meta.name.as_str())
            .collect();
        for pod in &config.pods {
            let where_ = format!(
                "{}: Pod {}/{}",
                cluster.name, pod.meta.namespace, pod.meta.name
            );
            let app =
                app_of(&pod.spec.spec, &pod.meta.labels).map_err(|e| format!("{where_}: {e}"))?;
            let concurrency =
                proxy_concurrency(&pod.meta.annotations).map_err(|e| format!("{where_}: {e}"))?;
            let k = next_pod.entry(n).or_insert(0);
            let ip = Ipv4Addr::new(
                a,
                n,
                u8::try_from(1 + *k / 200).map_err(|_| format!("{where_}: too many pods"))?,
                (10 + *k % 200) as u8,
            );
            *k += 1;
            let wan = (app == App::Gateway).then(|| {
                let g = next_gateway;
                next_gateway += 1;
                Ipv4Addr::new(wan_prefix[0], wan_prefix[1], wan_prefix[2], g as u8)
            });
            if next_gateway > 250 {
                return Err(format!("{where_}: too many gateways"));
            }
            let inject = pod
                .meta
                .labels
                .get("sidecar.istio.io/inject")
                .map(String::as_str);
            let sidecar = app != App::Gateway
                && inject != Some("false")
                && (inject == Some("true")
                    || injected_namespaces.contains(&pod.meta.namespace.as_str()));
            let spec = &pod.spec.spec;
            let mut labels = pod.meta.labels.clone();
            if sidecar {
                labels.insert(TLS_MODE_LABEL.into(), "istio".into());
            }
            if runtime == Runtime::Loopback && sidecar {
                // Unique in the mesh (a control plane may serve several clusters' pods), and a
                // valid label value (at most 63 characters).
                let own = format!("{}.{}", cluster.name, pod.meta.name);
                let own = if own.len() <= 63 {
                    own
                } else {
                    format!("pod-{}", pods.len())
                };
                labels.insert(POD_LABEL.into(), own);
            }
            let app_port = app.port().unwrap_or(0);
            let app_listen = match runtime {
                Runtime::Namespaces => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, app_port),
                Runtime::Loopback if sidecar => {
                    let port = u16::try_from(pods.len())
                        .ok()
                        .and_then(|i| APP_PORT_BASE.checked_add(i))
                        .filter(|p| *p < 32768)
                        .ok_or_else(|| format!("{where_}: too many pods for loopback mode"))?;
                    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
                }
                Runtime::Loopback => SocketAddrV4::new(ip, app_port),
            };
            pods.push(PodPlan {
                cluster: cluster.name.clone(),
                namespace: pod.meta.namespace.clone(),
                name: pod.meta.name.clone(),
                netns: format!(
                    "{prefix}-{}-{}-{}",
                    cluster.name, pod.meta.namespace, pod.meta.name
                ),
                network: cluster.network.clone(),
                ip,
                wan,
                labels,
                service_account: spec
                    .service_account_name
                    .clone()
                    .or(spec.service_account.clone())
                    .unwrap_or_else(|| "default".into()),
                app,
                sidecar,
                locality: cluster.locality.clone(),
                concurrency,
                app_listen,
            });
        }
        let mut cluster_vips = BTreeMap::new();
        let mut next_vip = 10u32;
        for svc in &config.services {
            let has_ip = svc
                .spec
                .cluster_ip
                .as_deref()
                .is_some_and(|ip| !ip.is_empty())
                || !svc.spec.cluster_ips.is_empty();
            if has_ip || svc.spec.external_name.is_some() {
                continue;
            }
            let c = u8::try_from(200 + ci).map_err(|_| "more than 55 clusters")?;
            cluster_vips.insert(
                format!("{}/{}", svc.meta.namespace, svc.meta.name),
                Ipv4Addr::new(a, c, (next_vip / 250) as u8, (next_vip % 250) as u8),
            );
            next_vip += 1;
        }
        vips.insert(cluster.name.clone(), cluster_vips);
    }
    let exported = topology
        .clusters
        .iter()
        .zip(configs)
        .map(|(c, config)| {
            let names = config
                .services
                .iter()
                .filter(|s| s.meta.labels.get(EXPORTED_LABEL).map(String::as_str) == Some("true"))
                .map(|s| format!("{}/{}", s.meta.namespace, s.meta.name))
                .collect();
            (c.name.clone(), names)
        })
        .collect();
    let plan = Plan {
        prefix: prefix.to_string(),
        runtime,
        networks,
        control_planes,
        pods,
        vips,
        exported,
    };
    for pod in plan
        .pods
        .iter()
        .filter(|p| p.sidecar || p.app == App::Gateway)
    {
        plan.xds_address(topology, pod)?;
    }
    Ok(plan)
}

impl App {
    /// The port it serves.
    pub fn port(&self) -> Option<u16> {
        match self {
            App::HelloWorld { port, .. } | App::TcpEcho { port } | App::GrpcEcho { port } => {
                Some(*port)
            }
            App::Client { .. } | App::Gateway => None,
        }
    }
}

/// What a pod runs, from its first container's image (and args, ports, labels).
/// The `concurrency` of a pod's `proxy.istio.io/config` annotation (Istio's ProxyConfig, as
/// YAML or JSON; its other fields are Istio's and left alone here).
fn proxy_concurrency(annotations: &BTreeMap<String, String>) -> Result<Option<usize>, String> {
    const ANNOTATION: &str = "proxy.istio.io/config";
    #[derive(serde::Deserialize)]
    struct ProxyConfig {
        concurrency: Option<u32>,
    }
    let Some(text) = annotations.get(ANNOTATION) else {
        return Ok(None);
    };
    let config: ProxyConfig = serde_saphyr::from_str(text).map_err(|e| {
        format!(
            "annotation {ANNOTATION}: {e}; expected ProxyConfig fields such as `concurrency: 2`"
        )
    })?;
    Ok(config.concurrency.map(|c| c as usize))
}

fn app_of(spec: &PodSpec, labels: &BTreeMap<String, String>) -> Result<App, String> {
    let Some(container) = spec.containers.first() else {
        return Err("no containers; give it one with a demo image".into());
    };
    let image = container.image.as_deref().unwrap_or("");
    let image = image.split_once(':').map_or(image, |(name, _)| name);
    let port = |default: u16| {
        container
            .ports
            .first()
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(default)
    };
    Ok(match image {
        HELLOWORLD_IMAGE => App::HelloWorld {
            port: port(5000),
            version: labels
                .get("version")
                .cloned()
                .unwrap_or_else(|| "v1".into()),
        },
        CLIENT_IMAGE => App::Client {
            url: container.args.first().cloned(),
        },
        TCP_ECHO_IMAGE => App::TcpEcho { port: port(9000) },
        GRPC_ECHO_IMAGE => App::GrpcEcho { port: port(9090) },
        PROXY_IMAGE => App::Gateway,
        other => {
            return Err(format!(
                "image {other:?} is not one strait up can run; use {HELLOWORLD_IMAGE}, {CLIENT_IMAGE}, {TCP_ECHO_IMAGE}, {GRPC_ECHO_IMAGE} or {PROXY_IMAGE} (a gateway)"
            ));
        }
    })
}

impl Plan {
    /// The address `pod`'s proxy listens on (admin, health, metrics, bound listeners): its
    /// own; in loopback mode a gateway's is its load balancer address, where callers reach it.
    pub fn listen_ip(&self, pod: &PodPlan) -> Ipv4Addr {
        match (self.runtime, pod.wan) {
            (Runtime::Loopback, Some(wan)) => wan,
            _ => pod.ip,
        }
    }

    pub fn network(&self, name: &str) -> Option<&NetworkPlan> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The control plane serving `cluster`'s proxies.
    pub fn control_plane_for<'a>(
        &'a self,
        topology: &Topology,
        cluster: &str,
    ) -> Option<&'a ControlPlanePlan> {
        let c = topology.clusters.iter().find(|c| c.name == cluster)?;
        let cp = c.control_plane_cluster();
        self.control_planes.iter().find(|p| p.cluster == cp)
    }

    /// Where `pod`'s proxy reaches its control plane: directly on the same network; from
    /// another network (a remote cluster's pods), through the east-west gateway of the control
    /// plane's cluster, which passes 15012 through to it (Istio's `expose-istiod.yaml`).
    pub fn xds_address(&self, topology: &Topology, pod: &PodPlan) -> Result<SocketAddrV4, String> {
        let cp = self
            .control_plane_for(topology, &pod.cluster)
            .ok_or_else(|| format!("cluster {} has no control plane", pod.cluster))?;
        if cp.network == pod.network {
            return Ok(SocketAddrV4::new(cp.ip, XDS_PORT));
        }
        self.pods
            .iter()
            .filter(|p| p.cluster == cp.cluster && p.app == App::Gateway)
            .find_map(|p| p.wan)
            .map(|wan| SocketAddrV4::new(wan, XDS_PORT))
            .ok_or_else(|| {
                format!(
                    "cluster {} is on network {} but its control plane (cluster {}) is on network {}: give cluster {} an east-west gateway exposing port {XDS_PORT} (Istio's expose-istiod.yaml), or put both on one network",
                    pod.cluster, pod.network, cp.cluster, cp.network, cp.cluster
                )
            })
    }

    /// Every namespace the plan creates.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out = vec![format!("{}-wan", self.prefix)];
        out.extend(self.networks.iter().map(|n| n.netns.clone()));
        out.extend(self.control_planes.iter().map(|c| c.netns.clone()));
        out.extend(self.pods.iter().map(|p| p.netns.clone()));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use strait_config::{LoadOptions, load_str};

    use super::*;

    /// A cluster's manifests from YAML (for this crate's tests).
    pub(crate) fn config(yaml: &str) -> ConfigSet {
        ConfigSet::from_resources(load_str(yaml, "t", &LoadOptions::default()).into_resources())
    }

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: sample, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: helloworld, namespace: sample}
spec: {ports: [{port: 5000, name: http}], selector: {app: helloworld}}
---
apiVersion: v1
kind: Pod
metadata: {name: hw, namespace: sample, labels: {app: helloworld, version: v2}}
spec:
  serviceAccountName: helloworld
  containers: [{name: hw, image: strait/helloworld, ports: [{containerPort: 5000}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: gw, namespace: istio-system, labels: {istio: eastwestgateway}}
spec: {containers: [{name: istio-proxy, image: strait/strait}]}
"#;

    #[test]
    fn networks_pods_gateways_and_vips_get_addresses() {
        let topology = crate::topology::parse(
            "apiVersion: strait.dev/v1alpha1\nkind: Topology\nmetadata: {name: t}\nspec:\n  clusters:\n  - {name: c1, network: n1}\n  - {name: c2, network: n2}\n",
            Path::new("."),
        )
        .unwrap();
        let plan = plan(
            &topology,
            &[config(CLUSTER), config(CLUSTER)],
            "st",
            Runtime::Namespaces,
        )
        .unwrap();
        assert_eq!(plan.networks[1].router, Ipv4Addr::new(10, 2, 0, 1));
        assert_eq!(plan.control_planes[1].ip, Ipv4Addr::new(10, 2, 0, 2));
        assert_eq!(plan.control_planes[0].peers, ["c2"]);
        assert_eq!(plan.control_planes[1].wan, Ipv4Addr::new(10, 255, 0, 51));
        let hw = &plan.pods[2];
        assert_eq!(hw.netns, "st-c2-sample-hw");
        assert_eq!(hw.ip, Ipv4Addr::new(10, 2, 1, 10));
        assert!(hw.sidecar);
        assert_eq!(
            hw.app,
            App::HelloWorld {
                port: 5000,
                version: "v2".into()
            }
        );
        let gw = &plan.pods[3];
        assert_eq!((gw.app.clone(), gw.sidecar), (App::Gateway, false));
        assert_eq!(gw.wan, Some(Ipv4Addr::new(10, 255, 0, 101)));
        assert_eq!(
            plan.vips["c2"]["sample/helloworld"],
            Ipv4Addr::new(10, 201, 0, 10)
        );
    }

    #[test]
    fn a_pods_proxy_config_annotation_sets_its_proxys_worker_threads() {
        let topology = crate::topology::parse(
            "apiVersion: strait.dev/v1alpha1\nkind: Topology\nmetadata: {name: t}\nspec:\n  clusters:\n  - {name: c1, network: n1}\n",
            Path::new("."),
        )
        .unwrap();
        let with = |annotation: &str| {
            let yaml = CLUSTER.replace(
                "metadata: {name: hw, namespace: sample,",
                &format!("metadata: {{name: hw, namespace: sample, annotations: {{proxy.istio.io/config: '{annotation}'}},"),
            );
            plan(&topology, &[config(&yaml)], "st", Runtime::Namespaces)
        };
        let plan = with(r#"{"concurrency": 1, "holdApplicationUntilProxyStarts": true}"#).unwrap();
        assert_eq!(plan.pods[0].concurrency, Some(1));
        assert_eq!(
            plan.pods[1].concurrency, None,
            "the gateway has no annotation"
        );
        assert_eq!(with("tracing: {}").unwrap().pods[0].concurrency, None);
        let err = with("concurrency: many").unwrap_err();
        assert!(
            err.contains("Pod sample/hw") && err.contains("proxy.istio.io/config"),
            "{err}"
        );
    }

    #[test]
    fn loopback_mode_plans_the_same_mesh_on_127_with_apps_behind_their_sidecars() {
        let topology = crate::topology::parse(
            "apiVersion: strait.dev/v1alpha1\nkind: Topology\nmetadata: {name: t}\nspec:\n  clusters:\n  - {name: c1, network: n1}\n  - {name: c2, network: n2}\n",
            Path::new("."),
        )
        .unwrap();
        let configs = [config(CLUSTER), config(CLUSTER)];
        let plan = plan(&topology, &configs, "st", Runtime::Loopback).unwrap();
        assert_eq!(plan.control_planes[1].ip, Ipv4Addr::new(127, 2, 0, 2));
        let hw = &plan.pods[2];
        assert_eq!(hw.ip, Ipv4Addr::new(127, 2, 1, 10));
        assert_eq!(hw.app_listen, "127.0.0.1:20002".parse().unwrap());
        assert_eq!(hw.labels[POD_LABEL], "c2.hw");
        assert_eq!(plan.listen_ip(hw), hw.ip);
        let gw = &plan.pods[3];
        assert_eq!(gw.wan, Some(Ipv4Addr::new(127, 255, 0, 101)));
        assert_eq!(plan.listen_ip(gw), Ipv4Addr::new(127, 255, 0, 101));
        assert!(!gw.labels.contains_key(POD_LABEL));
        assert_eq!(
            plan.vips["c2"]["sample/helloworld"],
            Ipv4Addr::new(127, 201, 0, 10)
        );

        let namespaces = super::plan(&topology, &configs, "st", Runtime::Namespaces).unwrap();
        assert_eq!(
            namespaces.pods[2].app_listen,
            "0.0.0.0:5000".parse().unwrap()
        );
        assert_eq!(
            namespaces.listen_ip(&namespaces.pods[3]),
            namespaces.pods[3].ip
        );
    }

    #[test]
    fn a_remote_on_another_network_reaches_its_control_plane_through_the_gateway() {
        let topology = crate::topology::parse(
            "apiVersion: strait.dev/v1alpha1\nkind: Topology\nmetadata: {name: t}\nspec:\n  clusters:\n  - {name: c1, network: n1}\n  - {name: c2, network: n2, controlPlane: c1}\n",
            Path::new("."),
        )
        .unwrap();
        let planned = plan(
            &topology,
            &[config(CLUSTER), config(CLUSTER)],
            "st",
            Runtime::Namespaces,
        )
        .unwrap();
        assert_eq!(planned.control_planes.len(), 1);
        let local = planned.xds_address(&topology, &planned.pods[0]).unwrap();
        assert_eq!(local, "10.1.0.2:15012".parse().unwrap());
        let remote = planned.xds_address(&topology, &planned.pods[2]).unwrap();
        assert_eq!(remote, "10.255.0.100:15012".parse().unwrap());

        let no_gateway: String = CLUSTER.split("---").take(3).collect::<Vec<_>>().join("---");
        let e = plan(
            &topology,
            &[config(&no_gateway), config(CLUSTER)],
            "st",
            Runtime::Namespaces,
        )
        .unwrap_err();
        assert!(e.contains("expose-istiod"), "{e}");
    }

    #[test]
    fn an_unknown_image_names_the_pod() {
        let topology = crate::topology::parse(
            "apiVersion: strait.dev/v1alpha1\nkind: Topology\nmetadata: {name: t}\nspec:\n  clusters:\n  - {name: c1, network: n1}\n",
            Path::new("."),
        )
        .unwrap();
        let bad = CLUSTER.replace(
            "strait/helloworld",
            "docker.io/istio/examples-helloworld-v1",
        );
        let e = plan(&topology, &[config(&bad)], "st", Runtime::Namespaces).unwrap_err();
        assert!(
            e.contains("c1: Pod sample/hw") && e.contains("examples-helloworld"),
            "{e}"
        );
    }
}
