//! Listeners: `api_listener`s for proxyless gRPC clients, capture and per-port listeners for
//! sidecars, and listeners built from Gateway resources for routers.

use std::collections::BTreeMap;
use std::sync::Arc;

use strait_config::istio::common::{ServerPort, ServerTlsMode, ServerTlsSettings};

use strait_xds::MESH_MTLS_ALPN;
use strait_xds::secret;

use crate::security::PeerMode;
use strait_config::istio::gateway::{CaptureMode, Gateway, Server};
use strait_config::resource::Object;
use strait_model::{ServicePort, ServiceView};
use strait_xds::SocketAddress;
use strait_xds::listener::{
    ClientRoots, Direction, DownstreamTls, FilterChain, FilterChainMatch, HttpConnectionManager,
    HttpFilter, Listener, ListenerKind, NetworkFilter, RouteSource, ServerCertificate,
    SocketListener, TcpProxy,
};
use strait_xds::route::{RouteConfiguration, VirtualHost};

use crate::authz::Authorization;
use crate::names;
use crate::proxy::ProxyNode;
use crate::rds;
use crate::scope;
use crate::{Inbound, InboundPort, MeshView};

pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub const INBOUND_CAPTURE_PORT: u16 = 15006;

fn http_manager(stat_prefix: String, route: RouteSource) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix,
        route,
        http_filters: vec![HttpFilter::Fault, HttpFilter::Cors, HttpFilter::Router],
        rbac: Vec::new(),
        jwt: None,
        upgrades: vec!["websocket".into()],
        idle_timeout_ms: None,
    }
}

/// Istio's `IDLE_TIMEOUT` node metadata: every socket listener's HTTP connection managers and
/// TCP proxies close connections idle that long.
pub fn set_idle_timeout(listeners: &mut [Listener], ms: u64) {
    for l in listeners {
        let ListenerKind::Socket(s) = &mut l.kind else {
            continue;
        };
        for chain in s.filter_chains.iter_mut().chain(s.default_chain.as_mut()) {
            match &mut chain.filter {
                NetworkFilter::Http(h) => h.idle_timeout_ms = Some(ms),
                NetworkFilter::Tcp(t) | NetworkFilter::SniCluster(t) => {
                    t.idle_timeout_ms = Some(ms)
                }
            }
        }
    }
}

fn tcp(stat_prefix: &str, cluster: String) -> NetworkFilter {
    NetworkFilter::Tcp(TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        clusters: vec![(cluster, 100)],
        idle_timeout_ms: None,
    })
}

fn chain(name: String, matching: FilterChainMatch, filter: NetworkFilter) -> FilterChain {
    FilterChain {
        name,
        matching,
        tls: None,
        rbac: Vec::new(),
        filter,
    }
}

/// Proxyless gRPC: one `api_listener` per service port, named after the target `host:port`.
pub fn api_listeners(services: &[&ServiceView]) -> Vec<Listener> {
    services
        .iter()
        .flat_map(|s| {
            s.service
                .ports
                .iter()
                .map(move |p| names::grpc_listener(s.service.host.as_str(), p.port))
        })
        .map(|name| {
            let mut hcm = http_manager(name.clone(), RouteSource::Rds(name.clone()));
            hcm.http_filters = vec![HttpFilter::Fault, HttpFilter::Router];
            hcm.upgrades.clear();
            Listener {
                name,
                kind: ListenerKind::Api(hcm),
            }
        })
        .collect()
}

/// Sidecar listeners: the outbound and inbound capture listeners, one outbound listener per
/// service port, and explicit listeners of the Sidecar resource (captureMode NONE / bind).
pub fn sidecar_listeners(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    services: &[&ServiceView],
    inbound: &Inbound,
) -> Vec<Listener> {
    let authz = &inbound.authorization;
    let passthrough = if scope::allow_any(view, proxy) {
        names::PASSTHROUGH
    } else {
        names::BLACKHOLE
    };
    let mut out = vec![Listener {
        name: names::OUTBOUND_LISTENER.into(),
        kind: ListenerKind::Socket(SocketListener {
            address: SocketAddress::new("0.0.0.0", OUTBOUND_CAPTURE_PORT),
            direction: Direction::Outbound,
            use_original_dst: true,
            bind_to_port: true,
            inspect_protocol: false,
            filter_chains: vec![],
            default_chain: Some(chain(
                names::PASSTHROUGH.into(),
                FilterChainMatch::default(),
                tcp(passthrough, passthrough.to_string()),
            )),
        }),
    }];
    let mut ports: BTreeMap<u16, Vec<(&ServiceView, &ServicePort)>> = BTreeMap::new();
    for s in services {
        for p in &s.service.ports {
            ports.entry(p.port).or_default().push((s, p));
        }
    }
    for (port, entries) in &ports {
        out.push(Listener {
            name: format!("0.0.0.0_{port}"),
            kind: ListenerKind::Socket(outbound_port_listener(
                SocketAddress::new("0.0.0.0", *port),
                *port,
                entries,
                false,
                passthrough,
            )),
        });
    }
    // Explicit listeners from the Sidecar resource: bound sockets, no iptables needed.
    if let Some(sc) = scope::sidecar_for(view, proxy) {
        for eg in &sc.spec.egress {
            let Some(port) = eg.port.as_ref().and_then(ServerPort::port) else {
                continue;
            };
            let explicit = eg.capture_mode == Some(CaptureMode::None) || eg.bind.is_some();
            if !explicit || port == 0 {
                continue;
            }
            let bind = eg.bind.clone().unwrap_or_else(|| "127.0.0.1".into());
            let entries = ports.get(&port).cloned().unwrap_or_default();
            let mut l = outbound_port_listener(
                SocketAddress::new(bind.clone(), port),
                port,
                &entries,
                true,
                passthrough,
            );
            l.use_original_dst = false;
            out.push(Listener {
                name: format!("{bind}_{port}"),
                kind: ListenerKind::Socket(l),
            });
        }
    }
    // Explicit inbound listeners from the Sidecar's `ingress` (bind / captureMode NONE): the
    // application behind `defaultEndpoint`, reached without iptables.
    if let Some(sc) = scope::sidecar_for(view, proxy) {
        for ing in &sc.spec.ingress {
            let explicit = ing.capture_mode == Some(CaptureMode::None) || ing.bind.is_some();
            let port = ing.port.as_ref().and_then(ServerPort::port);
            // A bound listener fronts the application its `defaultEndpoint` names (without one,
            // the loopback port of its own number — on 0.0.0.0, the listener itself).
            let (Some(port), Some(_), true) = (port, ing.default_endpoint.as_ref(), explicit)
            else {
                continue;
            };
            let Some(ip) = inbound.ports.iter().find(|p| p.target_port == port) else {
                continue;
            };
            let bind = ing.bind.clone().unwrap_or_else(|| "0.0.0.0".into());
            let mut chains = inbound_chains(ip, authz);
            for c in &mut chains {
                c.matching.destination_port = None;
            }
            out.push(Listener {
                name: format!("{bind}_{port}"),
                kind: ListenerKind::Socket(SocketListener {
                    address: SocketAddress::new(bind, port),
                    direction: Direction::Inbound,
                    use_original_dst: false,
                    bind_to_port: true,
                    inspect_protocol: ip.mtls != PeerMode::Disable,
                    filter_chains: chains,
                    default_chain: None,
                }),
            });
        }
    }
    if proxy.captured {
        out.push(inbound_listener(inbound, authz));
    } else {
        // Without capture (`INTERCEPTION_MODE: NONE`) nothing reaches the capture listeners or
        // the per-port ones behind them: only the explicit, bound listeners remain.
        out.retain(|l| {
            l.name != names::OUTBOUND_LISTENER
                && matches!(&l.kind, ListenerKind::Socket(s) if s.bind_to_port)
        });
    }
    out
}

/// Outbound traffic to one port: HTTP through the port's route table, TCP to the service
/// owning the destination address.
fn outbound_port_listener(
    address: SocketAddress,
    port: u16,
    entries: &[(&ServiceView, &ServicePort)],
    bound: bool,
    passthrough: &str,
) -> SocketListener {
    let any_http = entries.iter().any(|(_, p)| p.protocol.is_http());
    let mut filter_chains = Vec::new();
    for (s, p) in entries.iter().filter(|(_, p)| !p.protocol.is_http()) {
        let vips: Vec<String> = s
            .service
            .addresses
            .values()
            .flatten()
            .map(|a| {
                if a.contains('/') {
                    a.clone()
                } else if a.contains(':') {
                    format!("{a}/128")
                } else {
                    format!("{a}/32")
                }
            })
            .collect();
        if vips.is_empty() && entries.len() > 1 {
            continue;
        }
        filter_chains.push(chain(
            format!("{}:{}", s.service.host, p.port),
            FilterChainMatch {
                prefix_ranges: vips,
                ..Default::default()
            },
            tcp(
                &names::outbound_cluster(p.port, "", s.service.host.as_str()),
                names::outbound_cluster(p.port, "", s.service.host.as_str()),
            ),
        ));
    }
    let inspect_protocol = entries
        .iter()
        .any(|(_, p)| p.protocol == strait_model::Protocol::Unknown);
    let (filter_chains, default_chain, inspect_protocol) = if bound && !any_http {
        // A bound listener (no original destination) cannot tell TCP services apart by
        // address: its one TCP service takes every connection; with several, none does.
        let only = (filter_chains.len() == 1).then(|| filter_chains.remove(0));
        let default_chain = match only {
            Some(mut c) => {
                c.matching = FilterChainMatch::default();
                c
            }
            None => chain(
                names::BLACKHOLE.into(),
                FilterChainMatch::default(),
                tcp(names::BLACKHOLE, names::BLACKHOLE.into()),
            ),
        };
        (Vec::new(), default_chain, false)
    } else if any_http {
        let http = chain(
            format!("http_{port}"),
            FilterChainMatch::default(),
            NetworkFilter::Http(http_manager(
                format!("outbound_0.0.0.0_{port}"),
                RouteSource::Rds(port.to_string()),
            )),
        );
        (filter_chains, http, inspect_protocol)
    } else {
        let passthrough = chain(
            names::PASSTHROUGH.into(),
            FilterChainMatch::default(),
            tcp(passthrough, passthrough.to_string()),
        );
        (filter_chains, passthrough, inspect_protocol)
    };
    SocketListener {
        address,
        direction: Direction::Outbound,
        use_original_dst: false,
        bind_to_port: bound,
        inspect_protocol,
        filter_chains,
        default_chain: Some(default_chain),
    }
}

/// The inbound capture listener: the chains of each workload port, to its application; traffic
/// to any other port passes through to the port it was sent to, as PeerAuthentication allows
/// (a `portLevelMtls` port by its own mode), behind the same authorization. There is no
/// default chain: a connection no chain takes (plaintext to a STRICT port) is closed, as
/// Envoy closes it on Istio's inbound listener.
fn inbound_listener(inbound: &Inbound, authz: &Authorization) -> Listener {
    let mut filter_chains: Vec<FilterChain> = inbound
        .ports
        .iter()
        .flat_map(|p| inbound_chains(p, authz))
        .collect();
    for (&port, &mode) in &inbound.passthrough.ports {
        if !inbound.ports.iter().any(|p| p.target_port == port) {
            filter_chains.extend(passthrough_chains(Some(port), mode, authz));
        }
    }
    filter_chains.extend(passthrough_chains(
        None,
        inbound.passthrough.workload,
        authz,
    ));
    Listener {
        name: names::INBOUND_LISTENER.into(),
        kind: ListenerKind::Socket(SocketListener {
            address: SocketAddress::new("0.0.0.0", INBOUND_CAPTURE_PORT),
            direction: Direction::Inbound,
            use_original_dst: true,
            bind_to_port: true,
            inspect_protocol: true,
            filter_chains,
            default_chain: None,
        }),
    }
}

/// What a TLS server of HTTP offers clients by ALPN: HTTP/2 first, as Istio's listeners.
fn http_alpn() -> Vec<String> {
    vec!["h2".into(), "http/1.1".into()]
}

/// TLS terminated with a certificate of the listener's own (a Gateway server's, or a Sidecar
/// ingress port's: SIMPLE, MUTUAL, OPTIONAL_MUTUAL): the Secret its `credentialName` names
/// (sent by SDS as `kubernetes://<name>`, its CA certificates as `kubernetes://<name>-cacert`,
/// or `caCertCredentialName`'s), else the files it names. `None` for two certificates
/// (`credentialNames` or `tlsCertificates` with two items, which Strait does not serve: `strait
/// analyze` says so, ST0004), missing files, or another mode.
pub(crate) fn own_certificate(t: &ServerTlsSettings) -> Option<DownstreamTls> {
    if !matches!(
        t.mode,
        Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
    ) {
        return None;
    }
    let verify = matches!(
        t.mode,
        Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
    );
    let credential = match (&t.credential_name, &t.credential_names) {
        (Some(name), _) => Some(name.as_str()),
        (None, Some(names)) => match names.as_slice() {
            [one] => Some(one.as_str()),
            _ => return None,
        },
        (None, None) => None,
    };
    let (certificate, validation) = match credential {
        Some(name) => (
            ServerCertificate::Sds(secret::certificate_name(name)),
            verify.then(|| {
                ClientRoots::Sds(secret::roots_name(
                    t.ca_cert_credential_name.as_deref().unwrap_or(name),
                ))
            }),
        ),
        None if t.tls_certificates.is_some() => return None,
        None => {
            let (Some(chain), Some(key)) = (&t.server_certificate, &t.private_key) else {
                return None;
            };
            let roots = match (verify, &t.ca_certificates) {
                (false, _) => None,
                (true, Some(ca_certificates)) => Some(ClientRoots::File {
                    ca_certificates: ca_certificates.clone(),
                }),
                (true, None) => return None,
            };
            (
                ServerCertificate::Files {
                    certificate_chain: chain.clone(),
                    private_key: key.clone(),
                },
                roots,
            )
        }
    };
    Some(DownstreamTls {
        certificate,
        validation,
        require_client_certificate: t.mode == Some(ServerTlsMode::Mutual),
        alpn: http_alpn(),
    })
}

/// Matching mesh mTLS (TLS offering Istio's ALPN values) to `port` (any port: `None`).
fn mesh_mtls_match(port: Option<u16>) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: port,
        transport_protocol: Some("tls".into()),
        application_protocols: MESH_MTLS_ALPN.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Matching a transport to `port` (any port: `None`; any transport: `None`).
fn transport_match(port: Option<u16>, transport: Option<&str>) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: port,
        transport_protocol: transport.map(Into::into),
        ..Default::default()
    }
}

/// The passthrough chains of `port` (of every port no chain names: `None`) in `mode`: mesh mTLS
/// terminated, other TLS (the application's own) and plaintext passed as they are — each only
/// where the mode lets it in.
fn passthrough_chains(
    port: Option<u16>,
    mode: PeerMode,
    authz: &Authorization,
) -> Vec<FilterChain> {
    let name = match port {
        Some(p) => format!("InboundPassthrough|{p}"),
        None => "InboundPassthrough".into(),
    };
    let passthrough = |suffix: &str, matching: FilterChainMatch| FilterChain {
        rbac: authz.tcp.clone(),
        ..chain(
            format!("{name}{suffix}"),
            matching,
            tcp(names::PASSTHROUGH, names::PASSTHROUGH.into()),
        )
    };
    let mtls = || FilterChain {
        tls: Some(DownstreamTls::mesh(Vec::new())),
        ..passthrough("|mtls", mesh_mtls_match(port))
    };
    match mode {
        PeerMode::Strict => vec![mtls()],
        PeerMode::Permissive => vec![
            mtls(),
            passthrough("|tls", transport_match(port, Some("tls"))),
            passthrough("", transport_match(port, Some("raw_buffer"))),
        ],
        PeerMode::Disable => vec![passthrough("", transport_match(port, None))],
    }
}

/// The chains of one workload port: HTTP or TCP to its inbound cluster, behind mesh mTLS
/// and/or in plaintext as PeerAuthentication says. Where plaintext is let in, so is TLS that
/// is not mesh mTLS (the application's own), passed to it untouched.
fn inbound_chains(ip: &InboundPort, authz: &Authorization) -> Vec<FilterChain> {
    let cluster = names::inbound_cluster(ip.target_port);
    let port = Some(ip.target_port);
    let (filter, rbac) = if ip.http() {
        let route = RouteConfiguration {
            name: cluster.clone(),
            virtual_hosts: vec![VirtualHost {
                name: "inbound|http".into(),
                domains: vec!["*".into()],
                routes: vec![Arc::new(rds::forward_all("default", &cluster))],
            }],
        };
        let mut hcm = http_manager(cluster.clone(), RouteSource::Inline(route));
        hcm.rbac = authz.http.clone();
        hcm.jwt = authz.jwt.clone();
        (NetworkFilter::Http(hcm), Vec::new())
    } else {
        (tcp(&cluster, cluster.clone()), authz.tcp.clone())
    };
    let alpn = if ip.http() { http_alpn() } else { Vec::new() };
    if let Some(own) = &ip.tls {
        // The ingress port's own certificate, for callers from outside the mesh (Istio's
        // Sidecar ingress `tls`): TLS, terminated, and nothing else.
        let own = DownstreamTls {
            alpn,
            ..own.clone()
        };
        return vec![FilterChain {
            tls: Some(own),
            rbac,
            ..chain(
                format!("{cluster}|own-tls"),
                transport_match(port, Some("tls")),
                filter,
            )
        }];
    }
    let mtls = FilterChain {
        tls: Some(DownstreamTls::mesh(alpn)),
        rbac: rbac.clone(),
        ..chain(
            format!("{cluster}|mtls"),
            mesh_mtls_match(port),
            filter.clone(),
        )
    };
    let plaintext = |transport: Option<&str>| FilterChain {
        rbac: rbac.clone(),
        ..chain(
            cluster.clone(),
            transport_match(port, transport),
            filter.clone(),
        )
    };
    // The application's own TLS, which neither HTTP filter could read: bytes to its port.
    let opaque_tls = || FilterChain {
        rbac: authz.tcp.clone(),
        ..chain(
            format!("{cluster}|tls"),
            transport_match(port, Some("tls")),
            tcp(&cluster, cluster.clone()),
        )
    };
    match (ip.mtls, ip.http()) {
        (PeerMode::Strict, _) => vec![mtls],
        (PeerMode::Permissive, _) => vec![mtls, opaque_tls(), plaintext(Some("raw_buffer"))],
        (PeerMode::Disable, true) => vec![opaque_tls(), plaintext(Some("raw_buffer"))],
        (PeerMode::Disable, false) => vec![plaintext(None)],
    }
}

/// The Gateways whose selector matches a router.
pub fn gateways_for<'a>(view: &MeshView<'a>, proxy: &ProxyNode) -> Vec<&'a Object<Gateway>> {
    view.config
        .gateways
        .iter()
        .map(|g| &**g)
        .filter(|g| {
            !g.spec.selector.is_empty()
                && g.spec
                    .selector
                    .iter()
                    .all(|(k, v)| proxy.labels.get(k) == Some(v))
        })
        .collect()
}

/// Whether a Gateway selecting the router passes TLS through by SNI to any service
/// (`AUTO_PASSTHROUGH`, the east-west gateway): it then needs a cluster per SNI.
pub fn auto_passthrough(view: &MeshView<'_>, proxy: &ProxyNode) -> bool {
    gateways_for(view, proxy).iter().any(|g| {
        g.spec
            .servers
            .iter()
            .any(|s| s.tls.as_ref().and_then(|t| t.mode) == Some(ServerTlsMode::AutoPassthrough))
    })
}

/// Router listeners and their route tables, from the Gateways selecting the proxy, with the
/// RequestAuthentications and AuthorizationPolicies that select the gateway workload (its
/// namespace or the root namespace, by selector) on every chain: JWT and request RBAC on HTTP
/// servers, connection RBAC on the others — as Istio applies policies to gateways.
pub fn router_listeners(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    services: &[&ServiceView],
) -> (Vec<Listener>, Vec<RouteConfiguration>) {
    let (mut listeners, routes) = gateway_listeners(view, proxy, services);
    let authz = crate::authz::for_workload(view, &proxy.namespace, &proxy.labels);
    for l in &mut listeners {
        let ListenerKind::Socket(s) = &mut l.kind else {
            continue;
        };
        for c in s.filter_chains.iter_mut().chain(s.default_chain.as_mut()) {
            match &mut c.filter {
                NetworkFilter::Http(hcm) => {
                    hcm.rbac = authz.http.clone();
                    hcm.jwt = authz.jwt.clone();
                }
                _ => c.rbac = authz.tcp.clone(),
            }
        }
    }
    (listeners, routes)
}

fn gateway_listeners(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    services: &[&ServiceView],
) -> (Vec<Listener>, Vec<RouteConfiguration>) {
    // One listener per address: a server's `bind` (Istio's), else the wildcard.
    type Servers<'a> = Vec<(&'a Object<Gateway>, &'a Server)>;
    let mut by_port: BTreeMap<(String, u16), Servers<'_>> = BTreeMap::new();
    for gw in gateways_for(view, proxy) {
        for server in &gw.spec.servers {
            if let Some(n) = server.port.as_ref().and_then(ServerPort::port) {
                let bind = server.bind.clone().unwrap_or_else(|| "0.0.0.0".into());
                by_port.entry((bind, n)).or_default().push((gw, server));
            }
        }
    }
    let mut listeners = Vec::new();
    let mut routes = Vec::new();
    for ((bind, port), servers) in by_port {
        let mut filter_chains = Vec::new();
        let mut default_chain = None;
        for (gw, server) in servers {
            let gw_name = format!("{}/{}", gw.meta.namespace, gw.meta.name);
            let protocol = server
                .port
                .as_ref()
                .and_then(|p| p.protocol.as_deref())
                .unwrap_or("")
                .to_ascii_uppercase();
            let tls_mode = server.tls.as_ref().and_then(|t| t.mode);
            let server_names: Vec<String> = server
                .hosts
                .iter()
                .map(|h| {
                    h.split_once('/')
                        .map_or(h.as_str(), |(_, host)| host)
                        .to_string()
                })
                .filter(|h| h != "*")
                .collect();
            match (protocol.as_str(), tls_mode) {
                (_, Some(ServerTlsMode::AutoPassthrough)) => filter_chains.push(FilterChain {
                    name: format!("{gw_name}/sni"),
                    matching: FilterChainMatch {
                        transport_protocol: Some("tls".into()), // The hosts (`*.local`) match the SNI clients send (`outbound_.<port>_.<subset>_.<host>`).
                        server_names: server_names.clone(),
                        ..Default::default()
                    },
                    tls: None,
                    rbac: Vec::new(),
                    filter: NetworkFilter::SniCluster(TcpProxy {
                        stat_prefix: format!("{gw_name}/sni"),
                        clusters: vec![],
                        idle_timeout_ms: None,
                    }),
                }),
                (_, Some(ServerTlsMode::Passthrough)) => {
                    for (vs_route, cluster) in tls_routes(view, &gw_name, port) {
                        filter_chains.push(FilterChain {
                            name: format!("{gw_name}/{}", vs_route.join(",")),
                            matching: FilterChainMatch {
                                transport_protocol: Some("tls".into()),
                                server_names: vs_route,
                                ..Default::default()
                            },
                            tls: None,
                            rbac: Vec::new(),
                            filter: tcp(&cluster, cluster.clone()),
                        });
                    }
                }
                ("HTTP" | "HTTP2" | "GRPC" | "HTTPS", mode) => {
                    let route_name = format!("http.{port}");
                    let tls = match (mode, server.tls.as_ref()) {
                        (Some(ServerTlsMode::IstioMutual), _) => {
                            Some(DownstreamTls::mesh(http_alpn()))
                        }
                        (
                            Some(
                                ServerTlsMode::Simple
                                | ServerTlsMode::Mutual
                                | ServerTlsMode::OptionalMutual,
                            ),
                            Some(t),
                        ) => match own_certificate(t) {
                            Some(tls) => Some(tls),
                            // Two certificates, or none: not served (`strait analyze` says
                            // so, ST0004).
                            None => continue,
                        },
                        _ => None,
                    };
                    if !routes
                        .iter()
                        .any(|r: &RouteConfiguration| r.name == route_name)
                    {
                        routes.push(gateway_routes(view, proxy, services, port, &route_name));
                    }
                    let fc = FilterChain {
                        // Servers terminating TLS share a port, one chain each: named by
                        // their port's name (unique in a Gateway).
                        name: match (&tls, server.port.as_ref().and_then(|p| p.name.as_deref())) {
                            (Some(_), Some(port_name)) => format!("{gw_name}/{port_name}"),
                            _ => format!("{gw_name}/{protocol}"),
                        },
                        matching: FilterChainMatch {
                            server_names: if tls.is_some() { server_names } else { vec![] },
                            ..Default::default()
                        },
                        tls,
                        rbac: Vec::new(),
                        filter: NetworkFilter::Http(http_manager(
                            format!("{gw_name}.{port}"),
                            RouteSource::Rds(route_name),
                        )),
                    };
                    if fc.tls.is_some() {
                        filter_chains.push(fc)
                    } else {
                        default_chain = Some(fc)
                    }
                }
                _ => {
                    if let Some((_, cluster)) = tcp_route(view, &gw_name, port) {
                        default_chain = Some(chain(
                            format!("{gw_name}/tcp"),
                            FilterChainMatch::default(),
                            tcp(&cluster, cluster.clone()),
                        ));
                    }
                }
            }
        }
        listeners.push(Listener {
            name: format!("{bind}_{port}"),
            kind: ListenerKind::Socket(SocketListener {
                address: SocketAddress::new(bind, port),
                direction: Direction::Outbound,
                use_original_dst: false,
                bind_to_port: true,
                inspect_protocol: !filter_chains.is_empty(),
                filter_chains,
                default_chain,
            }),
        });
    }
    (listeners, routes)
}

/// `tls` routes of VirtualServices bound to the gateway: (SNI hosts, cluster).
fn tls_routes(view: &MeshView<'_>, gateway: &str, port: u16) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    for vs in &view.config.virtual_services {
        if !vs
            .spec
            .gateways
            .iter()
            .any(|g| rds::gateway_ref_matches(g, &vs.meta.namespace, gateway))
        {
            continue;
        }
        for r in &vs.spec.tls {
            let Some(dest) = r.route.first() else {
                continue;
            };
            for m in r
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == u32::from(port)))
            {
                let host = rds::resolve_host(view, &dest.destination.host, &vs.meta.namespace);
                let dport = dest
                    .destination
                    .port_number()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(port);
                let sni: Vec<String> = m.sni_hosts.iter().filter(|h| *h != "*").cloned().collect();
                out.push((
                    sni,
                    names::outbound_cluster(
                        dport,
                        dest.destination.subset.as_deref().unwrap_or(""),
                        &host,
                    ),
                ));
            }
        }
    }
    out
}

fn tcp_route(view: &MeshView<'_>, gateway: &str, port: u16) -> Option<(String, String)> {
    for vs in &view.config.virtual_services {
        if !vs
            .spec
            .gateways
            .iter()
            .any(|g| rds::gateway_ref_matches(g, &vs.meta.namespace, gateway))
        {
            continue;
        }
        for r in &vs.spec.tcp {
            if r.matches
                .iter()
                .any(|m| m.port.is_some_and(|p| p != u32::from(port)))
            {
                continue;
            }
            let dest = r.route.first()?;
            let host = rds::resolve_host(view, &dest.destination.host, &vs.meta.namespace);
            let dport = dest
                .destination
                .port_number()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(port);
            return Some((
                host.clone(),
                names::outbound_cluster(
                    dport,
                    dest.destination.subset.as_deref().unwrap_or(""),
                    &host,
                ),
            ));
        }
    }
    None
}

/// The HTTP route table of a gateway port: one virtual host per VirtualService host bound to it.
fn gateway_routes(
    view: &MeshView<'_>,
    proxy: &ProxyNode,
    services: &[&ServiceView],
    port: u16,
    name: &str,
) -> RouteConfiguration {
    let mut virtual_hosts = Vec::new();
    for gw in gateways_for(view, proxy) {
        let gw_name = format!("{}/{}", gw.meta.namespace, gw.meta.name);
        for vs in view.config.virtual_services.iter().filter(|vs| {
            vs.spec
                .gateways
                .iter()
                .any(|g| rds::gateway_ref_matches(g, &vs.meta.namespace, &gw_name))
        }) {
            for host in &vs.spec.hosts {
                let target = services
                    .iter()
                    .find(|s| scope::host_matches(host, s.service.host.as_str()));
                let routes = match target {
                    Some(s) => {
                        let sp = s
                            .service
                            .ports
                            .iter()
                            .find(|p| p.port == port)
                            .or(s.service.ports.first());
                        match sp {
                            Some(sp) => rds::routes_for(view, proxy, s, sp, &gw_name),
                            None => continue,
                        }
                    }
                    // A gateway host that is not a service (e.g. bookinfo.example.com).
                    None => {
                        let fake = ServiceView {
                            service: strait_model::Service {
                                host: strait_model::Hostname::new(host),
                                namespace: vs.meta.namespace.clone(),
                                name: host.clone(),
                                ports: vec![],
                                origin: strait_model::ServiceOrigin::Kubernetes,
                                addresses: Default::default(),
                                external_addresses: Default::default(),
                                clusters: Default::default(),
                                cluster_local: false,
                                export_to: vec![],
                                labels: Default::default(),
                                selector: None,
                                mirror_of: None,
                                vip_allocated: false,
                            },
                            endpoints: vec![],
                        };
                        let sp = ServicePort {
                            name: String::new(),
                            port,
                            protocol: strait_model::Protocol::Http,
                            target_port: None,
                        };
                        rds::routes_for(view, proxy, &fake, &sp, &gw_name)
                    }
                };
                if !virtual_hosts
                    .iter()
                    .any(|v: &VirtualHost| v.name == format!("{host}:{port}"))
                {
                    virtual_hosts.push(VirtualHost {
                        name: format!("{host}:{port}"),
                        domains: vec![host.clone(), format!("{host}:{port}")],
                        routes,
                    });
                }
            }
        }
    }
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
    }
}
