//! Strait resources → Envoy v3 protobufs.

use envoy_types::pb::envoy::config::cluster::v3 as ecluster;
use envoy_types::pb::envoy::config::core::v3 as ecore;
use envoy_types::pb::envoy::config::endpoint::v3 as eendpoint;
use envoy_types::pb::envoy::config::listener::v3 as elistener;
use envoy_types::pb::envoy::config::route::v3 as eroute;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as ecors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as efault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3 as erouter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as ehcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as etcp;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as etls;
use envoy_types::pb::envoy::r#type::matcher::v3 as ematcher;
use envoy_types::pb::envoy::r#type::v3 as etype;
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value, UInt64Value};
use prost::{Message, Name};

use crate::meta;
use strait_xds::cluster::{Discovery, LbPolicy, UpstreamTls, UpstreamTlsMode};
use strait_xds::endpoint::{EndpointMetadata, HealthStatus};
use strait_xds::listener::{
    ClientRoots, DownstreamTls, HttpConnectionManager, HttpFilter, ListenerKind, NetworkFilter,
    RouteSource, ServerCertificate, TcpProxy,
};
use strait_xds::route::{Action, HeaderEdits, PathMatch};
use strait_xds::{
    Cluster, ClusterLoadAssignment, Listener, Locality, RouteConfiguration, SocketAddress,
    StringMatch,
};

/// Packs a message into `Any`.
pub fn to_any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn ms(v: u64) -> Duration {
    Duration {
        seconds: (v / 1000) as i64,
        nanos: ((v % 1000) * 1_000_000) as i32,
    }
}

fn u32v(v: u32) -> UInt32Value {
    UInt32Value { value: v }
}

fn ads() -> ecore::ConfigSource {
    ecore::ConfigSource {
        resource_api_version: ecore::ApiVersion::V3 as i32,
        config_source_specifier: Some(ecore::config_source::ConfigSourceSpecifier::Ads(
            ecore::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn address(a: &SocketAddress) -> ecore::Address {
    ecore::Address {
        address: Some(ecore::address::Address::SocketAddress(
            ecore::SocketAddress {
                address: a.ip.clone(),
                port_specifier: Some(ecore::socket_address::PortSpecifier::PortValue(u32::from(
                    a.port,
                ))),
                ..Default::default()
            },
        )),
    }
}

fn locality(l: &Locality) -> ecore::Locality {
    ecore::Locality {
        region: l.region.clone(),
        zone: l.zone.clone(),
        sub_zone: l.sub_zone.clone(),
    }
}

pub(crate) fn header_matcher(h: &strait_xds::route::HeaderMatch) -> eroute::HeaderMatcher {
    eroute::HeaderMatcher {
        name: h.name.clone(),
        invert_match: h.invert,
        header_match_specifier: Some(match &h.matcher {
            StringMatch::Present => {
                eroute::header_matcher::HeaderMatchSpecifier::PresentMatch(true)
            }
            other => {
                eroute::header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(other))
            }
        }),
        ..Default::default()
    }
}

pub(crate) fn string_matcher(m: &StringMatch) -> ematcher::StringMatcher {
    use ematcher::string_matcher::MatchPattern;
    let pattern = match m {
        StringMatch::Exact(v) => MatchPattern::Exact(v.clone()),
        StringMatch::Prefix(v) => MatchPattern::Prefix(v.clone()),
        StringMatch::Suffix(v) => MatchPattern::Suffix(v.clone()),
        StringMatch::Regex(v) => MatchPattern::SafeRegex(regex(v)),
        StringMatch::Present => MatchPattern::SafeRegex(regex(".*")),
    };
    ematcher::StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

fn regex(v: &str) -> ematcher::RegexMatcher {
    ematcher::RegexMatcher {
        regex: v.to_string(),
        ..Default::default()
    }
}

fn percent(p: f64) -> etype::FractionalPercent {
    etype::FractionalPercent {
        numerator: (p.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: etype::fractional_percent::DenominatorType::Million as i32,
    }
}

// ---------------------------------------------------------------------------------------------
// Listeners

pub fn listener(l: &Listener) -> elistener::Listener {
    match &l.kind {
        ListenerKind::Api(hcm) => elistener::Listener {
            name: l.name.clone(),
            api_listener: Some(elistener::ApiListener {
                api_listener: Some(to_any(&http_connection_manager(hcm))),
            }),
            ..Default::default()
        },
        ListenerKind::Socket(s) => {
            let mut listener_filters = Vec::new();
            if s.inspect_protocol {
                listener_filters.push(named_listener_filter(
                    "envoy.filters.listener.tls_inspector",
                    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
                ));
                listener_filters.push(named_listener_filter(
                    "envoy.filters.listener.http_inspector",
                    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
                ));
            }
            if s.use_original_dst {
                listener_filters.push(named_listener_filter(
                    "envoy.filters.listener.original_dst",
                    "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
                ));
            }
            elistener::Listener {
                name: l.name.clone(),
                address: Some(address(&s.address)),
                filter_chains: s.filter_chains.iter().map(filter_chain).collect(),
                default_filter_chain: s.default_chain.as_ref().map(filter_chain),
                listener_filters,
                bind_to_port: Some(BoolValue {
                    value: s.bind_to_port,
                }),
                traffic_direction: match s.direction {
                    strait_xds::listener::Direction::Outbound => {
                        ecore::TrafficDirection::Outbound as i32
                    }
                    strait_xds::listener::Direction::Inbound => {
                        ecore::TrafficDirection::Inbound as i32
                    }
                },
                ..Default::default()
            }
        }
    }
}

fn named_listener_filter(name: &str, type_url: &str) -> elistener::ListenerFilter {
    elistener::ListenerFilter {
        name: name.to_string(),
        config_type: Some(elistener::listener_filter::ConfigType::TypedConfig(Any {
            type_url: type_url.to_string(),
            value: Vec::new(),
        })),
        ..Default::default()
    }
}

fn filter_chain(fc: &strait_xds::listener::FilterChain) -> elistener::FilterChain {
    let m = &fc.matching;
    let filter = match &fc.filter {
        NetworkFilter::Http(h) => elistener::Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(elistener::filter::ConfigType::TypedConfig(to_any(
                &http_connection_manager(h),
            ))),
        },
        NetworkFilter::Tcp(t) => tcp_filter(t),
        NetworkFilter::SniCluster(t) => tcp_filter(t),
    };
    let mut filters: Vec<elistener::Filter> = fc
        .rbac
        .iter()
        .map(|r| crate::rbac::network_filter(r, &fc.name))
        .collect();
    if matches!(fc.filter, NetworkFilter::SniCluster(_)) {
        filters.push(elistener::Filter {
            name: "envoy.filters.network.sni_cluster".into(),
            config_type: Some(elistener::filter::ConfigType::TypedConfig(Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster"
                        .into(),
                value: Vec::new(),
            })),
        });
    }
    filters.push(filter);
    elistener::FilterChain {
        name: fc.name.clone(),
        filter_chain_match: Some(elistener::FilterChainMatch {
            destination_port: m.destination_port.map(|p| u32v(u32::from(p))),
            prefix_ranges: m
                .prefix_ranges
                .iter()
                .filter_map(|c| {
                    let (ip, bits) = c.split_once('/')?;
                    Some(ecore::CidrRange {
                        address_prefix: ip.to_string(),
                        prefix_len: Some(u32v(bits.parse().ok()?)),
                    })
                })
                .collect(),
            server_names: m.server_names.clone(),
            transport_protocol: m.transport_protocol.clone().unwrap_or_default(),
            application_protocols: m.application_protocols.clone(),
            ..Default::default()
        }),
        filters,
        transport_socket: fc.tls.as_ref().map(downstream_tls_socket),
        ..Default::default()
    }
}

fn tcp_filter(t: &TcpProxy) -> elistener::Filter {
    use etcp::tcp_proxy::ClusterSpecifier;
    let specifier = match t.clusters.as_slice() {
        [] => None,
        [(one, _)] => Some(ClusterSpecifier::Cluster(one.clone())),
        many => Some(ClusterSpecifier::WeightedClusters(
            etcp::tcp_proxy::WeightedCluster {
                clusters: many
                    .iter()
                    .map(
                        |(name, w)| etcp::tcp_proxy::weighted_cluster::ClusterWeight {
                            name: name.clone(),
                            weight: *w,
                            ..Default::default()
                        },
                    )
                    .collect(),
            },
        )),
    };
    let proxy = etcp::TcpProxy {
        stat_prefix: t.stat_prefix.clone(),
        cluster_specifier: specifier,
        idle_timeout: t.idle_timeout_ms.map(ms),
        ..Default::default()
    };
    elistener::Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(elistener::filter::ConfigType::TypedConfig(to_any(&proxy))),
    }
}

fn http_connection_manager(h: &HttpConnectionManager) -> ehcm::HttpConnectionManager {
    let route_specifier = match &h.route {
        RouteSource::Rds(name) => ehcm::http_connection_manager::RouteSpecifier::Rds(ehcm::Rds {
            config_source: Some(ads()),
            route_config_name: name.clone(),
        }),
        RouteSource::Inline(rc) => {
            ehcm::http_connection_manager::RouteSpecifier::RouteConfig(route_configuration(rc))
        }
    };
    let jwt = h.jwt.iter().map(crate::jwt::http_filter);
    let rbac = h.rbac.iter().map(crate::rbac::http_filter);
    let http_filters = jwt
        .chain(rbac)
        .chain(h.http_filters.iter().map(|f| {
            let (name, config) = match f {
                HttpFilter::Fault => (
                    "envoy.filters.http.fault",
                    to_any(&efault::HttpFault::default()),
                ),
                HttpFilter::Cors => (
                    "envoy.filters.http.cors",
                    Any {
                        type_url: "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
                            .into(),
                        value: Vec::new(),
                    },
                ),
                HttpFilter::Router => (
                    "envoy.filters.http.router",
                    to_any(&erouter::Router::default()),
                ),
            };
            ehcm::HttpFilter {
                name: name.into(),
                config_type: Some(ehcm::http_filter::ConfigType::TypedConfig(config)),
                ..Default::default()
            }
        }))
        .collect();
    ehcm::HttpConnectionManager {
        stat_prefix: h.stat_prefix.clone(),
        route_specifier: Some(route_specifier),
        http_filters,
        upgrade_configs: h
            .upgrades
            .iter()
            .map(|u| ehcm::http_connection_manager::UpgradeConfig {
                upgrade_type: u.clone(),
                ..Default::default()
            })
            .collect(),
        common_http_protocol_options: h.idle_timeout_ms.map(|t| ecore::HttpProtocolOptions {
            idle_timeout: Some(ms(t)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Routes

pub fn route_configuration(rc: &RouteConfiguration) -> eroute::RouteConfiguration {
    eroute::RouteConfiguration {
        name: rc.name.clone(),
        virtual_hosts: rc
            .virtual_hosts
            .iter()
            .map(|vh| eroute::VirtualHost {
                name: vh.name.clone(),
                domains: vh.domains.clone(),
                routes: vh.routes.iter().map(|r| route(r)).collect(),
                ..Default::default()
            })
            .collect(),
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

fn header_options(edits: &HeaderEdits) -> Vec<ecore::HeaderValueOption> {
    let opt = |k: &String, v: &String, append: bool| ecore::HeaderValueOption {
        header: Some(ecore::HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        }),
        append_action: if append {
            ecore::header_value_option::HeaderAppendAction::AppendIfExistsOrAdd as i32
        } else {
            ecore::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        },
        ..Default::default()
    };
    edits
        .set()
        .iter()
        .map(|(k, v)| opt(k, v, false))
        .chain(edits.add().iter().map(|(k, v)| opt(k, v, true)))
        .collect()
}

fn route(r: &strait_xds::route::Route) -> eroute::Route {
    use eroute::route_match::PathSpecifier;
    let m = &r.matching;
    let path = match &m.path {
        PathMatch::Prefix(p) => PathSpecifier::Prefix(p.clone()),
        PathMatch::Exact(p) => PathSpecifier::Path(p.clone()),
        PathMatch::Regex(p) => PathSpecifier::SafeRegex(regex(p)),
    };
    let headers = m.headers.iter().map(header_matcher).collect();
    let query_parameters = m
        .query_params
        .iter()
        .map(|q| eroute::QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(match &q.matcher {
                StringMatch::Present => {
                    eroute::query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(
                        true,
                    )
                }
                other => {
                    eroute::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        string_matcher(other),
                    )
                }
            }),
        })
        .collect();
    let action = match &r.action {
        Action::Forward(a) => eroute::route::Action::Route(route_action(a)),
        Action::Redirect(rd) => eroute::route::Action::Redirect(eroute::RedirectAction {
            host_redirect: rd.host.clone().unwrap_or_default(),
            port_redirect: rd.port.map(u32::from).unwrap_or(0),
            scheme_rewrite_specifier: rd
                .scheme
                .clone()
                .map(eroute::redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
            path_rewrite_specifier: rd
                .path
                .clone()
                .map(eroute::redirect_action::PathRewriteSpecifier::PathRedirect)
                .or(rd
                    .prefix_rewrite
                    .clone()
                    .map(eroute::redirect_action::PathRewriteSpecifier::PrefixRewrite)),
            response_code: match rd.response_code {
                302 => eroute::redirect_action::RedirectResponseCode::Found as i32,
                303 => eroute::redirect_action::RedirectResponseCode::SeeOther as i32,
                307 => eroute::redirect_action::RedirectResponseCode::TemporaryRedirect as i32,
                308 => eroute::redirect_action::RedirectResponseCode::PermanentRedirect as i32,
                _ => eroute::redirect_action::RedirectResponseCode::MovedPermanently as i32,
            },
            ..Default::default()
        }),
        Action::DirectResponse { status, body } => {
            eroute::route::Action::DirectResponse(eroute::DirectResponseAction {
                status: *status,
                body: body.clone().map(|b| ecore::DataSource {
                    specifier: Some(ecore::data_source::Specifier::InlineString(b)),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }
    };
    let mut typed_per_filter_config = std::collections::HashMap::new();
    if let Some(f) = &r.fault {
        typed_per_filter_config.insert("envoy.filters.http.fault".to_string(), to_any(&fault(f)));
    }
    if let Some(c) = &r.cors {
        typed_per_filter_config.insert("envoy.filters.http.cors".to_string(), to_any(&cors(c)));
    }
    eroute::Route {
        name: r.name.clone(),
        r#match: Some(eroute::RouteMatch {
            path_specifier: Some(path),
            case_sensitive: Some(BoolValue {
                value: m.case_sensitive,
            }),
            headers,
            query_parameters,
            ..Default::default()
        }),
        action: Some(action),
        request_headers_to_add: header_options(&r.request_headers),
        request_headers_to_remove: r.request_headers.remove().to_vec(),
        response_headers_to_add: header_options(&r.response_headers),
        response_headers_to_remove: r.response_headers.remove().to_vec(),
        typed_per_filter_config,
        ..Default::default()
    }
}

fn cors(c: &strait_xds::route::Cors) -> ecors::CorsPolicy {
    ecors::CorsPolicy {
        allow_origin_string_match: c.allow_origins.iter().map(string_matcher).collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c.max_age_secs.map(|s| s.to_string()).unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        ..Default::default()
    }
}

fn fault(f: &strait_xds::route::Fault) -> efault::HttpFault {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as ecfault;
    efault::HttpFault {
        delay: f.delay.as_ref().map(|d| ecfault::FaultDelay {
            fault_delay_secifier: Some(ecfault::fault_delay::FaultDelaySecifier::FixedDelay(ms(
                d.fixed_delay_ms
            ))),
            percentage: Some(percent(d.percent)),
        }),
        abort: f.abort.as_ref().map(|a| efault::FaultAbort {
            error_type: Some(match a.status {
                strait_xds::route::AbortStatus::Http(s) => {
                    efault::fault_abort::ErrorType::HttpStatus(s)
                }
                strait_xds::route::AbortStatus::Grpc(s) => {
                    efault::fault_abort::ErrorType::GrpcStatus(s)
                }
            }),
            percentage: Some(percent(a.percent)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn route_action(a: &strait_xds::route::RouteAction) -> eroute::RouteAction {
    use eroute::route_action::ClusterSpecifier;
    let cluster_specifier = match a.clusters.as_slice() {
        [one] if one.request_headers.is_empty() && one.response_headers.is_empty() => {
            ClusterSpecifier::Cluster(one.name.clone())
        }
        many => ClusterSpecifier::WeightedClusters(eroute::WeightedCluster {
            clusters: many
                .iter()
                .map(|c| eroute::weighted_cluster::ClusterWeight {
                    name: c.name.clone(),
                    weight: Some(u32v(c.weight)),
                    request_headers_to_add: header_options(&c.request_headers),
                    request_headers_to_remove: c.request_headers.remove().to_vec(),
                    response_headers_to_add: header_options(&c.response_headers),
                    response_headers_to_remove: c.response_headers.remove().to_vec(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    eroute::RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: a.timeout_ms.map(ms),
        // gRPC clients read the stream deadline from here.
        max_stream_duration: a.timeout_ms.map(|t| eroute::route_action::MaxStreamDuration { max_stream_duration: Some(ms(t)), ..Default::default() }),
        retry_policy: a.retry.as_ref().map(|r| eroute::RetryPolicy {
            retry_on: r.retry_on.join(","),
            num_retries: Some(u32v(r.num_retries)),
            per_try_timeout: r.per_try_timeout_ms.map(ms),
            retriable_status_codes: r.retriable_status_codes.clone(),
            retry_back_off: r.backoff_base_ms.map(|b| eroute::retry_policy::RetryBackOff { base_interval: Some(ms(b)), ..Default::default() }),
            retry_host_predicate: if r.retry_other_hosts {
                vec![eroute::retry_policy::RetryHostPredicate {
                    name: "envoy.retry_host_predicates.previous_hosts".into(),
                    config_type: Some(eroute::retry_policy::retry_host_predicate::ConfigType::TypedConfig(Any {
                        type_url: "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate".into(),
                        value: Vec::new(),
                    })),
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        }),
        request_mirror_policies: a
            .mirrors
            .iter()
            .map(|m| eroute::route_action::RequestMirrorPolicy {
                cluster: m.cluster.clone(),
                runtime_fraction: Some(ecore::RuntimeFractionalPercent { default_value: Some(percent(m.percent)), ..Default::default() }),
                ..Default::default()
            })
            .collect(),
        prefix_rewrite: a.prefix_rewrite.clone().unwrap_or_default(),
        regex_rewrite: a.regex_rewrite.as_ref().map(|(p, s)| ematcher::RegexMatchAndSubstitute { pattern: Some(regex(p)), substitution: s.clone() }),
        host_rewrite_specifier: a.host_rewrite.clone().map(eroute::route_action::HostRewriteSpecifier::HostRewriteLiteral),
        hash_policy: a
            .hash_policy
            .iter()
            .map(|h| {
                use eroute::route_action::hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter};
                let spec = match h {
                    strait_xds::route::HashPolicy::Header(n) => PolicySpecifier::Header(Header { header_name: n.clone(), ..Default::default() }),
                    strait_xds::route::HashPolicy::Cookie { name, ttl_ms, path } => {
                        PolicySpecifier::Cookie(Cookie { name: name.clone(), ttl: ttl_ms.map(ms), path: path.clone().unwrap_or_default(), ..Default::default() })
                    }
                    strait_xds::route::HashPolicy::SourceIp => PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true }),
                    strait_xds::route::HashPolicy::QueryParameter(n) => PolicySpecifier::QueryParameter(QueryParameter { name: n.clone() }),
                };
                eroute::route_action::HashPolicy { policy_specifier: Some(spec), ..Default::default() }
            })
            .collect(),
        upgrade_configs: a.upgrades.iter().map(|u| eroute::route_action::UpgradeConfig { upgrade_type: u.clone(), ..Default::default() }).collect(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Clusters and endpoints

pub fn cluster(c: &Cluster) -> ecluster::Cluster {
    use ecluster::cluster::{
        ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy as ELb,
    };
    let mut out = ecluster::Cluster {
        name: c.name.clone(),
        connect_timeout: Some(ms(c.connect_timeout_ms)),
        ..Default::default()
    };
    let static_assignment = |targets: Vec<(String, u16)>| eendpoint::ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints: vec![eendpoint::LocalityLbEndpoints {
            lb_endpoints: targets
                .into_iter()
                .map(|(ip, port)| eendpoint::LbEndpoint {
                    host_identifier: Some(eendpoint::lb_endpoint::HostIdentifier::Endpoint(
                        eendpoint::Endpoint {
                            address: Some(address(&SocketAddress::new(ip, port))),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    match &c.discovery {
        Discovery::Eds(service) => {
            out.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            out.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: service.clone().unwrap_or_default(),
            });
        }
        Discovery::Static(addrs) => {
            out.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
            out.load_assignment = Some(static_assignment(
                addrs.iter().map(|a| (a.ip.clone(), a.port)).collect(),
            ));
        }
        Discovery::StrictDns(targets) => {
            out.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
            out.load_assignment = Some(static_assignment(targets.clone()));
        }
        Discovery::OriginalDst => {
            out.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            out.lb_policy = ELb::ClusterProvided as i32;
        }
        Discovery::None => {
            out.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
        }
    }
    if !matches!(c.discovery, Discovery::OriginalDst) {
        out.lb_policy = match c.lb_policy {
            LbPolicy::RoundRobin => ELb::RoundRobin,
            LbPolicy::LeastRequest => ELb::LeastRequest,
            LbPolicy::Random => ELb::Random,
            LbPolicy::RingHash { .. } => ELb::RingHash,
            LbPolicy::Maglev { .. } => ELb::Maglev,
        } as i32;
    }
    match c.lb_policy {
        LbPolicy::RingHash { minimum_ring_size } => {
            out.lb_config = Some(ecluster::cluster::LbConfig::RingHashLbConfig(
                ecluster::cluster::RingHashLbConfig {
                    minimum_ring_size: Some(UInt64Value {
                        value: minimum_ring_size,
                    }),
                    ..Default::default()
                },
            ));
        }
        LbPolicy::Maglev { table_size } => {
            out.lb_config = Some(ecluster::cluster::LbConfig::MaglevLbConfig(
                ecluster::cluster::MaglevLbConfig {
                    table_size: Some(UInt64Value { value: table_size }),
                },
            ));
        }
        _ => {}
    }
    if let Some(cb) = &c.circuit_breakers {
        out.circuit_breakers = Some(ecluster::CircuitBreakers {
            thresholds: vec![ecluster::circuit_breakers::Thresholds {
                max_connections: cb.max_connections.map(u32v),
                max_pending_requests: cb.max_pending_requests.map(u32v),
                max_requests: cb.max_requests.map(u32v),
                max_retries: cb.max_retries.map(u32v),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    if let Some(o) = &c.outlier_detection {
        out.outlier_detection = Some(ecluster::OutlierDetection {
            consecutive_5xx: Some(u32v(o.consecutive_5xx.unwrap_or(0))),
            enforcing_consecutive_5xx: Some(u32v(if o.consecutive_5xx.is_some_and(|v| v > 0) {
                100
            } else {
                0
            })),
            consecutive_gateway_failure: o.consecutive_gateway_errors.map(u32v),
            enforcing_consecutive_gateway_failure: o
                .consecutive_gateway_errors
                .map(|v| u32v(if v > 0 { 100 } else { 0 })),
            consecutive_local_origin_failure: o.consecutive_local_origin_failures.map(u32v),
            split_external_local_origin_errors: o.split_external_local_origin_errors,
            interval: Some(ms(o.interval_ms)),
            base_ejection_time: Some(ms(o.base_ejection_time_ms)),
            max_ejection_percent: Some(u32v(o.max_ejection_percent)),
            ..Default::default()
        });
    }
    if c.panic_threshold_percent.is_some() || c.locality_weighted {
        out.common_lb_config = Some(ecluster::cluster::CommonLbConfig {
            healthy_panic_threshold: c.panic_threshold_percent.map(|v| etype::Percent { value: v }),
            locality_config_specifier: c.locality_weighted.then_some(ecluster::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(Default::default())),
            ..Default::default()
        });
    }
    let mut http_options = ecore::HttpProtocolOptions::default();
    let mut has_http_options = false;
    if let Some(n) = c.max_requests_per_connection {
        http_options.max_requests_per_connection = Some(u32v(n));
        has_http_options = true;
    }
    if let Some(t) = c.idle_timeout_ms {
        http_options.idle_timeout = Some(ms(t));
        has_http_options = true;
    }
    if has_http_options || c.http2 {
        use envoy_types::pb::envoy::extensions::upstreams::http::v3 as eup;
        let protocol = if c.http2 {
            eup::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                Default::default(),
            )
        } else {
            eup::http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                Default::default(),
            )
        };
        let options = eup::HttpProtocolOptions {
            common_http_protocol_options: has_http_options.then_some(http_options),
            upstream_protocol_options: Some(
                eup::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    eup::http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(protocol),
                    },
                ),
            ),
            ..Default::default()
        };
        out.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
            to_any(&options),
        );
    }
    if let Some(svc) = &c.service {
        out.metadata = meta::metadata(vec![(
            meta::ISTIO,
            meta::structure(
                [
                    (
                        "services",
                        meta::list(vec![meta::object([
                            ("host", meta::string(&svc.host)),
                            ("name", meta::string(&svc.name)),
                            ("namespace", meta::string(&svc.namespace)),
                        ])]),
                    ),
                    ("default_original_port", meta::number(f64::from(svc.port))),
                ]
                .into_iter()
                .chain(svc.subset.as_deref().map(|v| ("subset", meta::string(v)))),
            ),
        )]);
    }
    if let Some(tls) = &c.tls {
        let socket = upstream_tls_socket(tls);
        if tls.mode == UpstreamTlsMode::IstioMutual && tls.auto_mtls {
            // As Istio's auto mTLS: mTLS to endpoints labelled tlsMode=istio, plaintext to the
            // others. A DestinationRule's own ISTIO_MUTUAL is the cluster's one socket.
            out.transport_socket_matches = vec![
                ecluster::cluster::TransportSocketMatch {
                    name: "tlsMode-istio".into(),
                    r#match: Some(meta::structure([("tlsMode", meta::string("istio"))])),
                    transport_socket: Some(socket),
                },
                ecluster::cluster::TransportSocketMatch {
                    name: "tlsMode-disabled".into(),
                    r#match: Some(Default::default()),
                    transport_socket: Some(raw_buffer()),
                },
            ];
        } else {
            out.transport_socket = Some(socket);
        }
    }
    if let Some(k) = &c.tcp_keepalive {
        out.upstream_connection_options = Some(ecluster::UpstreamConnectionOptions {
            tcp_keepalive: Some(ecore::TcpKeepalive {
                keepalive_probes: k.probes.map(u32v),
                keepalive_time: k.time_secs.map(u32v),
                keepalive_interval: k.interval_secs.map(u32v),
            }),
            ..Default::default()
        });
    }
    out
}

pub(crate) const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
pub(crate) const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";
pub use strait_xds::{SDS_DEFAULT, SDS_ROOTCA};

fn raw_buffer() -> ecore::TransportSocket {
    ecore::TransportSocket {
        name: RAW_BUFFER.into(),
        config_type: Some(ecore::transport_socket::ConfigType::TypedConfig(Any {
            type_url:
                "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
                    .into(),
            value: Vec::new(),
        })),
    }
}

pub(crate) fn sds(name: &str) -> etls::SdsSecretConfig {
    etls::SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    }
}

fn file(path: &str) -> ecore::DataSource {
    ecore::DataSource {
        specifier: Some(ecore::data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

fn upstream_tls_socket(t: &UpstreamTls) -> ecore::TransportSocket {
    let sans = t
        .subject_alt_names
        .iter()
        .map(|san| etls::SubjectAltNameMatcher {
            san_type: if san.starts_with("spiffe://") {
                etls::subject_alt_name_matcher::SanType::Uri
            } else {
                etls::subject_alt_name_matcher::SanType::Dns
            } as i32,
            matcher: Some(string_matcher(&StringMatch::Exact(san.clone()))),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let mut common = etls::CommonTlsContext {
        alpn_protocols: t.alpn.clone(),
        ..Default::default()
    };
    let mut validation = etls::CertificateValidationContext {
        match_typed_subject_alt_names: sans,
        trusted_ca: t.ca_certificates.as_deref().map(file),
        ..Default::default()
    };
    if t.insecure_skip_verify {
        validation.trust_chain_verification =
            etls::certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32;
    }
    use etls::common_tls_context::ValidationContextType;
    let roots_from_sds = match (t.mode, &t.credential_name) {
        (UpstreamTlsMode::IstioMutual, _) => Some(SDS_ROOTCA.to_string()),
        (_, Some(c)) if t.ca_certificates.is_none() => Some(strait_xds::secret::roots_name(c)),
        _ => None,
    };
    common.validation_context_type = Some(match roots_from_sds {
        Some(name) => ValidationContextType::CombinedValidationContext(
            etls::common_tls_context::CombinedCertificateValidationContext {
                default_validation_context: Some(validation),
                validation_context_sds_secret_config: Some(sds(&name)),
                ..Default::default()
            },
        ),
        None => ValidationContextType::ValidationContext(validation),
    });
    match t.mode {
        UpstreamTlsMode::IstioMutual => {
            common.tls_certificate_sds_secret_configs = vec![sds(SDS_DEFAULT)];
        }
        UpstreamTlsMode::Mutual => match (&t.credential_name, &t.client_certificate) {
            (Some(c), _) => {
                common.tls_certificate_sds_secret_configs =
                    vec![sds(&strait_xds::secret::certificate_name(c))]
            }
            (None, Some(cert)) => {
                common.tls_certificates = vec![etls::TlsCertificate {
                    certificate_chain: Some(file(cert)),
                    private_key: t.private_key.as_deref().map(file),
                    ..Default::default()
                }];
            }
            (None, None) => {}
        },
        UpstreamTlsMode::Simple => {}
    }
    let context = etls::UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: t.sni.clone().unwrap_or_default(),
        ..Default::default()
    };
    ecore::TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(ecore::transport_socket::ConfigType::TypedConfig(to_any(
            &context,
        ))),
    }
}

pub(crate) fn downstream_tls_socket(t: &DownstreamTls) -> ecore::TransportSocket {
    use etls::common_tls_context::ValidationContextType;
    let mut common = etls::CommonTlsContext {
        validation_context_type: t.validation.as_ref().map(|v| match v {
            ClientRoots::Sds(name) => {
                ValidationContextType::ValidationContextSdsSecretConfig(sds(name))
            }
            ClientRoots::File { ca_certificates } => {
                ValidationContextType::ValidationContext(etls::CertificateValidationContext {
                    trusted_ca: Some(file(ca_certificates)),
                    ..Default::default()
                })
            }
        }),
        alpn_protocols: t.alpn.clone(),
        ..Default::default()
    };
    match &t.certificate {
        ServerCertificate::Sds(name) => common.tls_certificate_sds_secret_configs = vec![sds(name)],
        ServerCertificate::Files {
            certificate_chain,
            private_key,
        } => {
            common.tls_certificates = vec![etls::TlsCertificate {
                certificate_chain: Some(file(certificate_chain)),
                private_key: Some(file(private_key)),
                ..Default::default()
            }];
        }
    }
    let context = etls::DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue {
            value: t.require_client_certificate,
        }),
        ..Default::default()
    };
    ecore::TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(ecore::transport_socket::ConfigType::TypedConfig(to_any(
            &context,
        ))),
    }
}

/// What a proxy needs per endpoint, and no more (it is repeated for every endpoint of every
/// cluster): Istio's workload string (`<workload>;<namespace>;<canonical service>;<revision>;
/// <cluster>`, for telemetry), Istio's `tlsMode` (auto mTLS), and whether the address is another
/// network's gateway. The network and identity stay with the control plane: identities a proxy
/// verifies are the cluster's.
fn endpoint_metadata(m: &EndpointMetadata) -> Option<ecore::Metadata> {
    let mut namespaces = vec![(
        meta::ISTIO,
        meta::structure([(
            "workload",
            meta::string(&format!("{};{};;;{}", m.workload, m.namespace, m.cluster)),
        )]),
    )];
    if m.mtls {
        namespaces.push((
            meta::TRANSPORT_SOCKET_MATCH,
            meta::structure([("tlsMode", meta::string("istio"))]),
        ));
    }
    if m.gateway {
        namespaces.push((
            meta::STRAIT,
            meta::structure([("gateway", meta::boolean(true))]),
        ));
    }
    meta::metadata(namespaces)
}

pub fn load_assignment(cla: &ClusterLoadAssignment) -> eendpoint::ClusterLoadAssignment {
    eendpoint::ClusterLoadAssignment {
        cluster_name: cla.cluster_name.clone(),
        endpoints: cla
            .localities
            .iter()
            .map(|l| eendpoint::LocalityLbEndpoints {
                locality: Some(locality(&l.locality)),
                priority: l.priority,
                load_balancing_weight: l.weight.map(u32v),
                lb_endpoints: l
                    .endpoints
                    .iter()
                    .map(|e| eendpoint::LbEndpoint {
                        host_identifier: Some(eendpoint::lb_endpoint::HostIdentifier::Endpoint(
                            eendpoint::Endpoint {
                                address: Some(address(&e.address)),
                                ..Default::default()
                            },
                        )),
                        health_status: match e.health {
                            HealthStatus::Healthy => ecore::HealthStatus::Healthy,
                            HealthStatus::Unhealthy => ecore::HealthStatus::Unhealthy,
                            HealthStatus::Draining => ecore::HealthStatus::Draining,
                        } as i32,
                        load_balancing_weight: Some(u32v(e.weight.max(1))),
                        metadata: endpoint_metadata(&e.metadata),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        policy: cla
            .overprovisioning_factor
            .map(|f| eendpoint::cluster_load_assignment::Policy {
                overprovisioning_factor: Some(u32v(f)),
                ..Default::default()
            }),
        ..Default::default()
    }
}
