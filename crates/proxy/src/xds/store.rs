//! What the proxy holds from xDS, pure: resources by type and name, in Strait's own types, each
//! checked when it arrives (converted from Envoy's protobuf, regexes and CIDRs compiled). A
//! resource that fails keeps its last good version and the response is NACKed with every reason;
//! the others still apply (Envoy's behaviour). It also says which endpoints and routes to ask for:
//! those the current clusters and listeners name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use strait_xds::cluster::UpstreamTlsMode;

use envoy_types::pb::google::protobuf::Any;
use strait_xds::cluster::Discovery;
use strait_xds::dns::NameTable;
use strait_xds::listener::{ListenerKind, NetworkFilter, RouteSource};
use strait_xds::secret::Secret;
use strait_xds::{Cluster, ClusterLoadAssignment, Listener, ResourceType, RouteConfiguration};
use strait_xds_wire::{from_envoy, nds, sds};

use crate::authz::Authorizer;
use crate::http::router::Router;
use crate::listen::chain;

/// A route configuration with its compiled router.
#[derive(Debug, Clone)]
pub struct Routes {
    pub config: Arc<RouteConfiguration>,
    pub router: Arc<Router>,
}

/// Everything accepted so far.
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub listeners: BTreeMap<String, Arc<Listener>>,
    pub routes: BTreeMap<String, Routes>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    pub endpoints: BTreeMap<String, Arc<ClusterLoadAssignment>>,
    /// Secrets by SDS name (the certificates and roots listeners and clusters name).
    pub secrets: BTreeMap<String, Arc<Secret>>,
    /// The DNS proxy's name table (when the proxy asks for one).
    pub names: Option<Arc<NameTable>>,
    /// The last version accepted per type (Envoy's `version_info`).
    pub versions: BTreeMap<ResourceType, String>,
    /// The last rejection per type, for the admin API.
    pub rejections: BTreeMap<ResourceType, String>,
}

/// One response's content. Names come from the resources themselves; the given name (delta's
/// `Resource.name`, empty in state-of-the-world) only names a resource that fails to decode.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub version: String,
    pub resources: Vec<(String, Any)>,
    pub removed: Vec<String>,
    /// State of the world for a wildcard type: names absent from `resources` are gone.
    pub complete: bool,
}

/// What applying an update did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub changed: bool,
    /// Reasons for the resources that were rejected (empty: ACK).
    pub rejected: Vec<String>,
}

impl Store {
    pub fn apply(&mut self, kind: ResourceType, update: Update) -> Applied {
        let mut applied = Applied::default();
        let mut names = BTreeSet::new();
        let mut unnamed_failure = false;
        for (given, any) in &update.resources {
            let result = match kind {
                ResourceType::Listener => decode_listener(any).map(|l| {
                    names.insert(l.name.clone());
                    let name = l.name.clone();
                    insert(
                        &mut self.listeners,
                        &name,
                        Arc::new(l),
                        &mut applied.changed,
                    )
                }),
                ResourceType::Route => decode_routes(any).map(|r| {
                    let name = r.config.name.clone();
                    names.insert(name.clone());
                    let same = self
                        .routes
                        .get(&name)
                        .is_some_and(|old| old.config == r.config);
                    if !same {
                        self.routes.insert(name, r);
                        applied.changed = true;
                    }
                }),
                ResourceType::Cluster => decode_cluster(any).map(|c| {
                    names.insert(c.name.clone());
                    let name = c.name.clone();
                    insert(&mut self.clusters, &name, Arc::new(c), &mut applied.changed)
                }),
                ResourceType::Endpoint => from_envoy::load_assignment(any)
                    .map_err(|e| e.to_string())
                    .map(|e| {
                        names.insert(e.cluster_name.clone());
                        let name = e.cluster_name.clone();
                        insert(
                            &mut self.endpoints,
                            &name,
                            Arc::new(e),
                            &mut applied.changed,
                        )
                    }),
                ResourceType::Secret => decode_secret(any).map(|secret| {
                    names.insert(secret.name.clone());
                    let name = secret.name.clone();
                    insert(
                        &mut self.secrets,
                        &name,
                        Arc::new(secret),
                        &mut applied.changed,
                    )
                }),
                ResourceType::NameTable => nds::name_table_from(any)
                    .map_err(|e| e.to_string())
                    .map(|t| {
                        names.insert(strait_xds::dns::NAME_TABLE.to_string());
                        if self.names.as_deref() != Some(&t) {
                            self.names = Some(Arc::new(t));
                            applied.changed = true;
                        }
                    }),
            };
            if let Err(reason) = result {
                // A failed resource keeps its last good version: it is not "absent".
                if given.is_empty() {
                    unnamed_failure = true;
                } else {
                    names.insert(given.clone());
                }
                let shown = if given.is_empty() { "(unnamed)" } else { given };
                applied
                    .rejected
                    .push(format!("{} {shown}: {reason}", kind.short()));
            }
        }
        let mut gone: Vec<String> = update.removed.clone();
        if update.complete && !unnamed_failure {
            gone.extend(self.names(kind).into_iter().filter(|n| !names.contains(n)));
        }
        for name in gone {
            applied.changed |= self.remove(kind, &name);
        }
        if applied.rejected.is_empty() {
            self.versions.insert(kind, update.version);
            self.rejections.remove(&kind);
        } else {
            self.rejections.insert(kind, applied.rejected.join("; "));
        }
        applied
    }

    fn names(&self, kind: ResourceType) -> Vec<String> {
        match kind {
            ResourceType::Listener => self.listeners.keys().cloned().collect(),
            ResourceType::Route => self.routes.keys().cloned().collect(),
            ResourceType::Cluster => self.clusters.keys().cloned().collect(),
            ResourceType::Endpoint => self.endpoints.keys().cloned().collect(),
            ResourceType::Secret => self.secrets.keys().cloned().collect(),
            ResourceType::NameTable => self
                .names
                .iter()
                .map(|_| strait_xds::dns::NAME_TABLE.to_string())
                .collect(),
        }
    }

    fn remove(&mut self, kind: ResourceType, name: &str) -> bool {
        match kind {
            ResourceType::Listener => self.listeners.remove(name).is_some(),
            ResourceType::Route => self.routes.remove(name).is_some(),
            ResourceType::Cluster => self.clusters.remove(name).is_some(),
            ResourceType::Endpoint => self.endpoints.remove(name).is_some(),
            ResourceType::Secret => self.secrets.remove(name).is_some(),
            ResourceType::NameTable => self.names.take().is_some(),
        }
    }

    /// The load assignments the clusters need (EDS subscriptions).
    pub fn wanted_endpoints(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .filter_map(|c| match &c.discovery {
                Discovery::Eds(service) => Some(service.clone().unwrap_or_else(|| c.name.clone())),
                _ => None,
            })
            .collect()
    }

    /// The route configurations the listeners name (RDS subscriptions).
    pub fn wanted_routes(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for l in self.listeners.values() {
            match &l.kind {
                ListenerKind::Api(hcm) => {
                    if let RouteSource::Rds(n) = &hcm.route {
                        out.insert(n.clone());
                    }
                }
                ListenerKind::Socket(s) => {
                    for c in s.filter_chains.iter().chain(&s.default_chain) {
                        if let NetworkFilter::Http(hcm) = &c.filter
                            && let RouteSource::Rds(n) = &hcm.route
                        {
                            out.insert(n.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// The secrets the listeners' and clusters' TLS name (SDS subscriptions): every name but
    /// the workload's own certificate and the mesh roots, which the proxy's identity provides.
    pub fn wanted_secrets(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for l in self.listeners.values() {
            if let ListenerKind::Socket(s) = &l.kind {
                for tls in s
                    .filter_chains
                    .iter()
                    .chain(&s.default_chain)
                    .filter_map(|c| c.tls.as_ref())
                {
                    out.extend(tls.secret_names().map(str::to_string));
                }
            }
        }
        for tls in self.clusters.values().filter_map(|c| c.tls.as_ref()) {
            out.extend(tls.secret_names());
        }
        out
    }

    /// Forgets endpoints, routes and secrets nobody names any more (after an unsubscribe).
    pub fn retain_wanted(&mut self) {
        let eds = self.wanted_endpoints();
        self.endpoints.retain(|k, _| eds.contains(k));
        let rds = self.wanted_routes();
        self.routes.retain(|k, _| rds.contains(k));
        let sds = self.wanted_secrets();
        self.secrets.retain(|k, _| sds.contains(k));
    }

    /// Has every named load assignment and route configuration arrived, and the first answer
    /// about the secrets named (Envoy's warming)? A secret the control plane does not have
    /// leaves its chain refusing connections rather than the proxy unready.
    pub fn is_warm(&self) -> bool {
        self.versions.contains_key(&ResourceType::Cluster)
            && self.versions.contains_key(&ResourceType::Listener)
            && self
                .wanted_endpoints()
                .iter()
                .all(|n| self.endpoints.contains_key(n))
            && self
                .wanted_routes()
                .iter()
                .all(|n| self.routes.contains_key(n))
            && (self.versions.contains_key(&ResourceType::Secret)
                || self.rejections.contains_key(&ResourceType::Secret)
                || self.wanted_secrets().is_empty())
    }
}

fn insert<T: PartialEq>(
    map: &mut BTreeMap<String, Arc<T>>,
    name: &str,
    value: Arc<T>,
    changed: &mut bool,
) {
    if map.get(name).is_none_or(|old| **old != *value) {
        map.insert(name.to_string(), value);
        *changed = true;
    }
}

fn decode_listener(any: &Any) -> Result<Listener, String> {
    let l = from_envoy::listener(any).map_err(|e| e.to_string())?;
    if let ListenerKind::Socket(s) = &l.kind {
        chain::compile_all(&s.filter_chains)?;
        s.address
            .ip
            .parse::<std::net::IpAddr>()
            .map_err(|_| format!("address {:?} is not an IP address", s.address.ip))?;
        for c in s.filter_chains.iter().chain(&s.default_chain) {
            let in_chain = |e: String| format!("filter chain {}: {e}", c.name);
            Authorizer::compile(&c.rbac).map_err(in_chain)?;
            if let NetworkFilter::Http(hcm) = &c.filter {
                Authorizer::compile(&hcm.rbac).map_err(in_chain)?;
                if let Some(j) = &hcm.jwt {
                    crate::jwt::JwtRuntime::compile(j).map_err(in_chain)?;
                }
                if let RouteSource::Inline(rc) = &hcm.route {
                    Router::compile(rc)?;
                }
            }
            // A certificate of its own from files: they must make a server configuration now
            // (one from secrets is made when they arrive).
            if let Some(tls) = c
                .tls
                .as_ref()
                .filter(|t| !t.is_mesh() && t.secret_names().next().is_none())
            {
                crate::listen::own_tls::server_config(tls, &Default::default())
                    .map_err(in_chain)?;
            }
        }
    }
    Ok(l)
}

/// A secret, checked now: a certificate must parse and match its key, roots must parse.
fn decode_secret(any: &Any) -> Result<Secret, String> {
    let secret = sds::secret_from(any).map_err(|e| e.to_string())?;
    crate::secrets::check_secret(&secret).map_err(|e| format!("secret {}: {e}", secret.name))?;
    Ok(secret)
}

fn decode_routes(any: &Any) -> Result<Routes, String> {
    let config = from_envoy::route_configuration(any).map_err(|e| e.to_string())?;
    let router = Router::compile(&config)?;
    Ok(Routes {
        config: Arc::new(config),
        router: Arc::new(router),
    })
}

fn decode_cluster(any: &Any) -> Result<Cluster, String> {
    let c = from_envoy::cluster(any).map_err(|e| e.to_string())?;
    // TLS origination: the files it names must make a client configuration now (one from a
    // credential's secrets is made when they arrive).
    if let Some(tls) = &c.tls
        && tls.mode != UpstreamTlsMode::IstioMutual
        && tls.credential_name.is_none()
    {
        crate::upstream::origination::client_config(tls, c.http2, &Default::default())?;
    }
    if let Discovery::Static(addrs) = &c.discovery {
        for a in addrs {
            a.ip.parse::<std::net::IpAddr>()
                .map_err(|_| format!("static address {:?} is not an IP address", a.ip))?;
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_xds::cluster::LbPolicy;
    use strait_xds_wire as wire;

    fn cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            discovery: Discovery::Eds(None),
            lb_policy: LbPolicy::RoundRobin,
            connect_timeout_ms: 1000,
            circuit_breakers: None,
            outlier_detection: None,
            http2: false,
            tls: None,
            locality_weighted: false,
            panic_threshold_percent: None,
            max_requests_per_connection: None,
            idle_timeout_ms: None,
            tcp_keepalive: None,
            service: None,
        }
    }

    fn any(c: &Cluster) -> (String, Any) {
        (c.name.clone(), wire::to_any(&wire::cluster(c)))
    }

    #[test]
    fn state_of_the_world_replaces_and_names_endpoints_to_fetch() {
        let mut s = Store::default();
        let a = s.apply(
            ResourceType::Cluster,
            Update {
                version: "1".into(),
                resources: vec![any(&cluster("a")), any(&cluster("b"))],
                removed: vec![],
                complete: true,
            },
        );
        assert_eq!(
            a,
            Applied {
                changed: true,
                rejected: vec![]
            }
        );
        assert_eq!(
            s.wanted_endpoints().into_iter().collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        assert!(!s.is_warm());
        let a = s.apply(
            ResourceType::Cluster,
            Update {
                version: "2".into(),
                resources: vec![any(&cluster("b"))],
                removed: vec![],
                complete: true,
            },
        );
        assert!(a.changed);
        assert_eq!(s.clusters.keys().collect::<Vec<_>>(), vec!["b"]);
        // The same again changes nothing.
        let a = s.apply(
            ResourceType::Cluster,
            Update {
                version: "3".into(),
                resources: vec![any(&cluster("b"))],
                removed: vec![],
                complete: true,
            },
        );
        assert!(!a.changed);
        assert_eq!(s.versions[&ResourceType::Cluster], "3");
    }

    #[test]
    fn a_bad_resource_keeps_its_last_good_version_and_the_rest_apply() {
        let mut s = Store::default();
        s.apply(
            ResourceType::Cluster,
            Update {
                version: "1".into(),
                resources: vec![any(&cluster("a"))],
                ..Default::default()
            },
        );
        let mut bad = cluster("a");
        bad.tls = Some(Arc::new(strait_xds::cluster::UpstreamTls {
            mode: UpstreamTlsMode::Simple,
            sni: None,
            subject_alt_names: vec![],
            alpn: vec![],
            ca_certificates: Some("/nonexistent/strait-test/ca.pem".into()),
            client_certificate: None,
            private_key: None,
            credential_name: None,
            insecure_skip_verify: false,
            auto_mtls: false,
        }));
        let a = s.apply(
            ResourceType::Cluster,
            Update {
                version: "2".into(),
                resources: vec![any(&bad), any(&cluster("c"))],
                ..Default::default()
            },
        );
        assert_eq!(a.rejected.len(), 1);
        assert!(
            a.rejected[0].starts_with(
                "CDS a: tls.caCertificates /nonexistent/strait-test/ca.pem: cannot read it"
            ),
            "{:?}",
            a.rejected
        );
        assert!(s.clusters["a"].tls.is_none(), "the last good version stays");
        assert!(s.clusters.contains_key("c"), "the good resource applied");
        assert_eq!(s.versions[&ResourceType::Cluster], "1");
        assert!(s.rejections.contains_key(&ResourceType::Cluster));
    }

    #[test]
    fn delta_removals_and_unwanted_endpoints_go() {
        let mut s = Store::default();
        s.apply(
            ResourceType::Cluster,
            Update {
                version: "1".into(),
                resources: vec![any(&cluster("a")), any(&cluster("b"))],
                ..Default::default()
            },
        );
        let cla = |n: &str| {
            (
                n.to_string(),
                wire::to_any(&wire::load_assignment(&ClusterLoadAssignment {
                    cluster_name: n.into(),
                    localities: vec![],
                    overprovisioning_factor: None,
                })),
            )
        };
        s.apply(
            ResourceType::Endpoint,
            Update {
                version: "1".into(),
                resources: vec![cla("a"), cla("b")],
                ..Default::default()
            },
        );
        s.apply(
            ResourceType::Cluster,
            Update {
                version: "2".into(),
                removed: vec!["a".into()],
                ..Default::default()
            },
        );
        s.retain_wanted();
        assert_eq!(s.endpoints.keys().collect::<Vec<_>>(), vec!["b"]);
    }
}
