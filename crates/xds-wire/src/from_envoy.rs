//! Envoy v3 protobufs → Strait resources, for the proxy. Whatever a proxy cannot honour is
//! rejected here with a reason that names the field, and the reason travels back to the control
//! plane in the NACK; nothing of the wire types goes further than this module.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3 as ecluster;
use envoy_types::pb::envoy::config::core::v3 as ecore;
use envoy_types::pb::envoy::config::endpoint::v3 as eendpoint;
use envoy_types::pb::envoy::config::listener::v3 as elistener;
use envoy_types::pb::envoy::config::route::v3 as eroute;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as ecors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as efault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as ehcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as etcp;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as etls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as eup;
use envoy_types::pb::envoy::r#type::matcher::v3 as ematcher;
use envoy_types::pb::envoy::r#type::v3 as etype;
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::{Message, Name};
use strait_xds::cluster::{
    CircuitBreakers, Discovery, LbPolicy, OutlierDetection, ServiceInfo, TcpKeepalive, UpstreamTls,
    UpstreamTlsMode,
};
use strait_xds::endpoint::{EndpointMetadata, HealthStatus, LbEndpoint, LocalityEndpoints};
use strait_xds::listener::{
    ClientRoots, Direction, DownstreamTls, FilterChain, FilterChainMatch, HttpConnectionManager,
    HttpFilter, ListenerKind, NetworkFilter, RouteSource, ServerCertificate, SocketListener,
    TcpProxy,
};
use strait_xds::route::{
    AbortStatus, Action, Cors, Fault, FaultAbort, FaultDelay, HashPolicy, HeaderEditList,
    HeaderEdits, HeaderMatch, Mirror, PathMatch, QueryMatch, Redirect, RetryPolicy, Route,
    RouteAction, RouteMatch, VirtualHost, WeightedCluster,
};
use strait_xds::{
    Cluster, ClusterLoadAssignment, Listener, Locality, RouteConfiguration, SocketAddress,
    StringMatch, regex_escape,
};

use crate::meta;
use crate::to_envoy::{RAW_BUFFER, SDS_DEFAULT, SDS_ROOTCA, TLS_SOCKET};

/// A resource the proxy will not apply, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub resource: String,
    pub reason: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.resource, self.reason)
    }
}

impl std::error::Error for Rejected {}

pub(crate) type R<T> = Result<T, String>;

pub(crate) fn reject<T>(reason: impl Into<String>) -> R<T> {
    Err(reason.into())
}

fn named<T>(resource: &str, r: R<T>) -> Result<T, Rejected> {
    r.map_err(|reason| Rejected {
        resource: resource.to_string(),
        reason,
    })
}

/// Unpacks an `Any` of the expected message type.
pub(crate) fn unpack<M: Message + Name + Default>(any: &Any, field: &str) -> R<M> {
    if any.type_url != M::type_url() {
        return reject(format!(
            "{field}: expected {} but got {}",
            M::type_url(),
            any.type_url
        ));
    }
    M::decode(any.value.as_slice()).map_err(|e| format!("{field}: malformed {}: {e}", M::NAME))
}

fn ms(d: &Duration) -> u64 {
    (d.seconds.max(0) as u64) * 1000 + (d.nanos.max(0) as u64) / 1_000_000
}

fn socket_address(a: Option<&ecore::Address>, field: &str) -> R<SocketAddress> {
    use ecore::address::Address as A;
    use ecore::socket_address::PortSpecifier;
    match a.and_then(|a| a.address.as_ref()) {
        Some(A::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(PortSpecifier::PortValue(p)) => u16::try_from(p)
                    .map_err(|_| format!("{field}.port_value: {p} is not a port (1–65535)"))?,
                Some(PortSpecifier::NamedPort(ref n)) => {
                    return reject(format!(
                        "{field}.named_port {n:?}: named ports are not supported; use port_value"
                    ));
                }
                None => 0,
            };
            if s.address.is_empty() {
                return reject(format!("{field}.address: empty"));
            }
            Ok(SocketAddress::new(s.address.clone(), port))
        }
        Some(A::Pipe(_)) => reject(format!("{field}: pipe addresses are not supported")),
        Some(A::EnvoyInternalAddress(_)) => reject(format!(
            "{field}: Envoy internal addresses are not supported"
        )),
        None => reject(format!("{field}: missing")),
    }
}

fn locality(l: Option<&ecore::Locality>) -> Locality {
    l.map(|l| Locality {
        region: l.region.clone(),
        zone: l.zone.clone(),
        sub_zone: l.sub_zone.clone(),
    })
    .unwrap_or_default()
}

pub(crate) fn string_match(m: &ematcher::StringMatcher, field: &str) -> R<StringMatch> {
    use ematcher::string_matcher::MatchPattern;
    if m.ignore_case {
        return reject(format!("{field}.ignore_case: not supported"));
    }
    Ok(match &m.match_pattern {
        Some(MatchPattern::Exact(v)) => StringMatch::Exact(v.clone()),
        Some(MatchPattern::Prefix(v)) => StringMatch::Prefix(v.clone()),
        Some(MatchPattern::Suffix(v)) => StringMatch::Suffix(v.clone()),
        Some(MatchPattern::SafeRegex(r)) if r.regex == ".*" => StringMatch::Present,
        Some(MatchPattern::SafeRegex(r)) => StringMatch::Regex(r.regex.clone()),
        Some(MatchPattern::Contains(v)) => StringMatch::Regex(format!(".*{}.*", regex_escape(v))),
        Some(MatchPattern::Custom(_)) => {
            return reject(format!("{field}: custom string matchers are not supported"));
        }
        None => return reject(format!("{field}: no match pattern")),
    })
}

// The deprecated direct matchers are still what some control planes send.
#[allow(deprecated)]
pub(crate) fn header_match(h: eroute::HeaderMatcher, field: &str) -> R<HeaderMatch> {
    use eroute::header_matcher::HeaderMatchSpecifier as S;
    let matcher = match h.header_match_specifier {
        Some(S::PresentMatch(true)) => StringMatch::Present,
        Some(S::StringMatch(s)) => string_match(&s, field)?,
        Some(S::ExactMatch(v)) => StringMatch::Exact(v),
        Some(S::PrefixMatch(v)) => StringMatch::Prefix(v),
        Some(S::SuffixMatch(v)) => StringMatch::Suffix(v),
        Some(S::SafeRegexMatch(r)) => StringMatch::Regex(r.regex),
        Some(other) => {
            return reject(format!(
                "{field}: header matcher {other:?} is not supported"
            ));
        }
        None => StringMatch::Present,
    };
    Ok(HeaderMatch {
        name: h.name,
        matcher,
        invert: h.invert_match,
    })
}

fn percent(p: Option<&etype::FractionalPercent>) -> f64 {
    use etype::fractional_percent::DenominatorType;
    let Some(p) = p else { return 100.0 };
    let denominator = match DenominatorType::try_from(p.denominator) {
        Ok(DenominatorType::Hundred) => 100.0,
        Ok(DenominatorType::TenThousand) => 10_000.0,
        _ => 1_000_000.0,
    };
    f64::from(p.numerator) * 100.0 / denominator
}

/// Converted lists get allocations of their own size. Collecting a `Vec`'s `into_iter` reuses
/// the source's allocation when the new items are no larger, so a route of Strait's (712 bytes)
/// kept the 2272 of the Envoy message it came from, and a virtual host (72) the 1256 of
/// Envoy's, for as long as the configuration was current: 3.8 MB of a sidecar's heap with a
/// thousand services (measured with heaptrack).
trait Fit {
    fn fit(self) -> Self;
}

impl<T> Fit for Vec<T> {
    fn fit(mut self) -> Self {
        self.shrink_to_fit();
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Listeners

/// A listener, from the `Any` of an LDS response.
pub fn listener(any: &Any) -> Result<Listener, Rejected> {
    let l: elistener::Listener = named("listener", unpack(any, "resource"))?;
    let name = l.name.clone();
    named(&format!("listener {name}"), listener_body(l))
}

fn listener_body(l: elistener::Listener) -> R<Listener> {
    if let Some(api) = l.api_listener {
        let any = api
            .api_listener
            .ok_or("api_listener.api_listener: missing")?;
        let hcm: ehcm::HttpConnectionManager = unpack(&any, "api_listener")?;
        return Ok(Listener {
            name: l.name,
            kind: ListenerKind::Api(http_connection_manager(hcm, "api_listener")?),
        });
    }
    let address = socket_address(l.address.as_ref(), "address")?;
    let mut inspect_protocol = false;
    let mut use_original_dst = l.use_original_dst.is_some_and(|b| b.value);
    for (i, f) in l.listener_filters.iter().enumerate() {
        match f.name.as_str() {
            "envoy.filters.listener.tls_inspector" | "envoy.filters.listener.http_inspector" => {
                inspect_protocol = true
            }
            "envoy.filters.listener.original_dst" => use_original_dst = true,
            other => {
                return reject(format!(
                    "listener_filters[{i}]: {other:?} is not supported (supported: tls_inspector, http_inspector, original_dst)"
                ));
            }
        }
    }
    let filter_chains = l
        .filter_chains
        .into_iter()
        .enumerate()
        .map(|(i, fc)| filter_chain(fc, &format!("filter_chains[{i}]")))
        .collect::<R<Vec<_>>>()?
        .fit();
    let default_chain = l
        .default_filter_chain
        .map(|fc| filter_chain(fc, "default_filter_chain"))
        .transpose()?;
    Ok(Listener {
        name: l.name,
        kind: ListenerKind::Socket(SocketListener {
            address,
            direction: if l.traffic_direction == ecore::TrafficDirection::Inbound as i32 {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            use_original_dst,
            bind_to_port: l.bind_to_port.is_none_or(|b| b.value),
            inspect_protocol,
            filter_chains,
            default_chain,
        }),
    })
}

fn filter_chain(fc: elistener::FilterChain, field: &str) -> R<FilterChain> {
    let m = fc.filter_chain_match.unwrap_or_default();
    let destination_port = m
        .destination_port
        .map(|p| {
            u16::try_from(p.value).map_err(|_| {
                format!(
                    "{field}.filter_chain_match.destination_port: {} is not a port",
                    p.value
                )
            })
        })
        .transpose()?;
    let prefix_ranges = m
        .prefix_ranges
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c.address_prefix,
                c.prefix_len.map_or(
                    if c.address_prefix.contains(':') {
                        128
                    } else {
                        32
                    },
                    |l| l.value
                )
            )
        })
        .collect();
    let matching = FilterChainMatch {
        destination_port,
        prefix_ranges,
        server_names: m.server_names,
        transport_protocol: (!m.transport_protocol.is_empty()).then_some(m.transport_protocol),
        application_protocols: m.application_protocols,
    };
    let tls = match fc.transport_socket {
        None => None,
        Some(ts) => downstream_tls(ts, &format!("{field}.transport_socket"))?,
    };
    let mut sni_cluster = false;
    let mut filter = None;
    let mut rbac = Vec::new();
    for (i, f) in fc.filters.into_iter().enumerate() {
        let ff = format!("{field}.filters[{i}]");
        let config = match f.config_type {
            Some(elistener::filter::ConfigType::TypedConfig(any)) => any,
            _ => return reject(format!("{ff} ({}): typed_config missing", f.name)),
        };
        match f.name.as_str() {
            "envoy.filters.network.sni_cluster" => sni_cluster = true,
            crate::rbac::NETWORK_RBAC if filter.is_none() => {
                rbac.push(crate::rbac::from_network_filter(&config, &ff)?);
            }
            "envoy.filters.network.http_connection_manager" => {
                let hcm: ehcm::HttpConnectionManager = unpack(&config, &ff)?;
                filter = Some(NetworkFilter::Http(http_connection_manager(hcm, &ff)?));
            }
            "envoy.filters.network.tcp_proxy" => {
                let t: etcp::TcpProxy = unpack(&config, &ff)?;
                filter = Some(NetworkFilter::Tcp(tcp_proxy(t)?));
            }
            other => {
                return reject(format!(
                    "{ff}: network filter {other:?} is not supported (supported: rbac before the terminal filter, sni_cluster, http_connection_manager, tcp_proxy)"
                ));
            }
        }
    }
    let filter = match (filter, sni_cluster) {
        (Some(NetworkFilter::Tcp(t)), true) => NetworkFilter::SniCluster(t),
        (Some(_), true) => {
            return reject(format!(
                "{field}.filters: sni_cluster must be followed by tcp_proxy"
            ));
        }
        (Some(f), false) => f,
        (None, _) => {
            return reject(format!(
                "{field}.filters: no terminal filter (http_connection_manager or tcp_proxy)"
            ));
        }
    };
    Ok(FilterChain {
        name: fc.name,
        matching,
        tls,
        rbac,
        filter,
    })
}

fn tcp_proxy(t: etcp::TcpProxy) -> R<TcpProxy> {
    use etcp::tcp_proxy::ClusterSpecifier;
    let clusters = match t.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => vec![(c, 100)],
        Some(ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .into_iter()
            .map(|c| (c.name, c.weight))
            .collect::<Vec<_>>()
            .fit(),
        None => Vec::new(),
    };
    Ok(TcpProxy {
        stat_prefix: t.stat_prefix,
        clusters,
        idle_timeout_ms: t.idle_timeout.as_ref().map(ms),
    })
}

fn http_connection_manager(
    h: ehcm::HttpConnectionManager,
    field: &str,
) -> R<HttpConnectionManager> {
    use ehcm::http_connection_manager::RouteSpecifier;
    let route = match h.route_specifier {
        Some(RouteSpecifier::Rds(r)) => {
            if r.route_config_name.is_empty() {
                return reject(format!("{field}.rds.route_config_name: empty"));
            }
            RouteSource::Rds(r.route_config_name)
        }
        Some(RouteSpecifier::RouteConfig(rc)) => RouteSource::Inline(route_configuration_body(rc)?),
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            return reject(format!("{field}.scoped_routes: not supported"));
        }
        None => {
            return reject(format!(
                "{field}: no route configuration (rds or route_config)"
            ));
        }
    };
    let mut http_filters = Vec::new();
    let mut rbac = Vec::new();
    let mut jwt = None;
    for (i, f) in h.http_filters.iter().enumerate() {
        match f.name.as_str() {
            crate::jwt::JWT_AUTHN => {
                let ff = format!("{field}.http_filters[{i}] ({})", f.name);
                if !http_filters.is_empty() || !rbac.is_empty() || jwt.is_some() {
                    return reject(format!(
                        "{ff}: one JWT filter, before the RBAC and other HTTP filters"
                    ));
                }
                let Some(ehcm::http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    return reject(format!("{ff}: typed_config missing"));
                };
                jwt = Some(crate::jwt::from_http_filter(any, &ff)?);
            }
            crate::rbac::HTTP_RBAC => {
                let ff = format!("{field}.http_filters[{i}] ({})", f.name);
                if !http_filters.is_empty() {
                    return reject(format!(
                        "{ff}: RBAC filters must come before the other HTTP filters"
                    ));
                }
                let Some(ehcm::http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    return reject(format!("{ff}: typed_config missing"));
                };
                rbac.push(crate::rbac::from_http_filter(any, &ff)?);
            }
            "envoy.filters.http.fault" => http_filters.push(HttpFilter::Fault),
            "envoy.filters.http.cors" => http_filters.push(HttpFilter::Cors),
            "envoy.filters.http.router" => http_filters.push(HttpFilter::Router),
            _ if f.is_optional => {}
            other => {
                return reject(format!(
                    "{field}.http_filters[{i}]: HTTP filter {other:?} is not supported (supported: jwt_authn, rbac, fault, cors, router)"
                ));
            }
        }
    }
    if http_filters.last() != Some(&HttpFilter::Router) {
        return reject(format!(
            "{field}.http_filters: the router filter must come last"
        ));
    }
    Ok(HttpConnectionManager {
        stat_prefix: h.stat_prefix,
        route,
        http_filters,
        rbac,
        jwt,
        upgrades: h
            .upgrade_configs
            .into_iter()
            .map(|u| u.upgrade_type)
            .collect::<Vec<_>>()
            .fit(),
        idle_timeout_ms: h
            .common_http_protocol_options
            .and_then(|o| o.idle_timeout)
            .as_ref()
            .map(ms),
    })
}

fn downstream_tls(ts: ecore::TransportSocket, field: &str) -> R<Option<DownstreamTls>> {
    if ts.name == RAW_BUFFER {
        return Ok(None);
    }
    if ts.name != TLS_SOCKET {
        return reject(format!(
            "{field}: transport socket {:?} is not supported",
            ts.name
        ));
    }
    let any = match ts.config_type {
        Some(ecore::transport_socket::ConfigType::TypedConfig(a)) => a,
        None => return reject(format!("{field}: typed_config missing")),
    };
    let ctx: etls::DownstreamTlsContext = unpack(&any, field)?;
    let common = ctx.common_tls_context.unwrap_or_default();
    let certificate = match (
        common.tls_certificate_sds_secret_configs.as_slice(),
        common.tls_certificates.as_slice(),
    ) {
        ([one], []) => ServerCertificate::Sds(one.name.clone()),
        ([], [one]) => {
            let path = |source: Option<&ecore::DataSource>, name: &str| {
                file_path(source, &format!("{field}.tls_certificates[0].{name}"))?.ok_or_else(
                    || format!("{field}.tls_certificates[0].{name}: a file is required"),
                )
            };
            ServerCertificate::Files {
                certificate_chain: path(one.certificate_chain.as_ref(), "certificate_chain")?,
                private_key: path(one.private_key.as_ref(), "private_key")?,
            }
        }
        _ => {
            return reject(format!(
                "{field}: exactly one certificate is supported (one SDS secret, or one tls_certificates entry of files)"
            ));
        }
    };
    use etls::common_tls_context::ValidationContextType;
    let validation = match common.validation_context_type {
        None => None,
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            Some(ClientRoots::Sds(s.name))
        }
        Some(ValidationContextType::CombinedValidationContext(c)) => c
            .validation_context_sds_secret_config
            .map(|s| ClientRoots::Sds(s.name)),
        Some(ValidationContextType::ValidationContext(v)) => file_path(
            v.trusted_ca.as_ref(),
            &format!("{field}.validation_context.trusted_ca"),
        )?
        .map(|ca_certificates| ClientRoots::File { ca_certificates }),
        Some(_) => {
            return reject(format!(
                "{field}: client certificates are verified against an SDS secret or a trusted_ca file only"
            ));
        }
    };
    Ok(Some(DownstreamTls {
        certificate,
        validation,
        require_client_certificate: ctx.require_client_certificate.is_some_and(|b| b.value),
        alpn: common.alpn_protocols,
    }))
}

// ---------------------------------------------------------------------------------------------
// Routes

/// A route configuration, from the `Any` of an RDS response.
pub fn route_configuration(any: &Any) -> Result<RouteConfiguration, Rejected> {
    let rc: eroute::RouteConfiguration = named("route", unpack(any, "resource"))?;
    let name = rc.name.clone();
    named(&format!("route {name}"), route_configuration_body(rc))
}

/// One copy of what a configuration's routes repeat.
#[derive(Default)]
struct Repeated {
    retry_policies: HashSet<Arc<RetryPolicy>>,
}

impl Repeated {
    fn retry_policy(&mut self, policy: RetryPolicy) -> Arc<RetryPolicy> {
        intern(&mut self.retry_policies, policy)
    }
}

/// The copy of `value` already in `set`, or `value` shared and added.
fn intern<T: Eq + std::hash::Hash>(set: &mut HashSet<Arc<T>>, value: T) -> Arc<T> {
    if let Some(shared) = set.get(&value) {
        return shared.clone();
    }
    let shared = Arc::new(value);
    set.insert(shared.clone());
    shared
}

fn route_configuration_body(rc: eroute::RouteConfiguration) -> R<RouteConfiguration> {
    let mut repeated = Repeated::default();
    let virtual_hosts = rc
        .virtual_hosts
        .into_iter()
        .enumerate()
        .map(|(i, vh)| {
            let field = format!("virtual_hosts[{i}] ({})", vh.name);
            if vh.domains.is_empty() {
                return reject(format!("{field}.domains: empty"));
            }
            Ok(VirtualHost {
                routes: vh
                    .routes
                    .into_iter()
                    .enumerate()
                    .map(|(j, r)| {
                        route(r, &format!("{field}.routes[{j}]"), &mut repeated).map(Arc::new)
                    })
                    .collect::<R<Vec<_>>>()?
                    .fit(),
                name: vh.name,
                domains: vh.domains,
            })
        })
        .collect::<R<Vec<_>>>()?
        .fit();
    Ok(RouteConfiguration {
        name: rc.name,
        virtual_hosts,
    })
}

// The deprecated `append` flag is still what some control planes send.
#[allow(deprecated)]
fn header_edits(
    add: Vec<ecore::HeaderValueOption>,
    remove: Vec<String>,
    field: &str,
) -> R<HeaderEdits> {
    use ecore::header_value_option::HeaderAppendAction;
    let mut edits = HeaderEditList {
        remove,
        ..Default::default()
    };
    for (i, o) in add.into_iter().enumerate() {
        let Some(h) = o.header else {
            return reject(format!("{field}[{i}].header: missing"));
        };
        let append = match HeaderAppendAction::try_from(o.append_action) {
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => {
                // The deprecated `append` flag, when given, decides.
                o.append.is_none_or(|a| a.value)
            }
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => false,
            Ok(HeaderAppendAction::AddIfAbsent | HeaderAppendAction::OverwriteIfExists)
            | Err(_) => {
                return reject(format!(
                    "{field}[{i}].append_action: only APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD are supported"
                ));
            }
        };
        let pair = (h.key, h.value);
        if append {
            edits.add.push(pair);
        } else {
            edits.set.push(pair);
        }
    }
    Ok(edits.into())
}

// Deprecated header matchers are still what some control planes send.
#[allow(deprecated)]
fn route(r: eroute::Route, field: &str, repeated: &mut Repeated) -> R<Route> {
    use eroute::route_match::PathSpecifier;
    let m = r.r#match.ok_or(format!("{field}.match: missing"))?;
    let path = match m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p),
        Some(PathSpecifier::SafeRegex(r)) => PathMatch::Regex(r.regex),
        Some(other) => {
            return reject(format!(
                "{field}.match: path matcher {other:?} is not supported (prefix, path, safe_regex)"
            ));
        }
        None => return reject(format!("{field}.match: no path matcher")),
    };
    let headers = m
        .headers
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let hf = format!("{field}.match.headers[{i}] ({})", h.name);
            header_match(h, &hf)
        })
        .collect::<R<Vec<_>>>()?
        .fit();
    let query_params = m
        .query_parameters
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            use eroute::query_parameter_matcher::QueryParameterMatchSpecifier as S;
            let qf = format!("{field}.match.query_parameters[{i}] ({})", q.name);
            let matcher = match q.query_parameter_match_specifier {
                Some(S::PresentMatch(true)) | None => StringMatch::Present,
                Some(S::PresentMatch(false)) => {
                    return reject(format!("{qf}.present_match: false is not supported"));
                }
                Some(S::StringMatch(s)) => string_match(&s, &qf)?,
            };
            Ok(QueryMatch {
                name: q.name,
                matcher,
            })
        })
        .collect::<R<Vec<_>>>()?
        .fit();
    let matching = RouteMatch {
        path,
        case_sensitive: m.case_sensitive.is_none_or(|b| b.value),
        headers,
        query_params,
    };
    let action = match r.action {
        Some(eroute::route::Action::Route(a)) => Action::Forward(route_action(a, field, repeated)?),
        Some(eroute::route::Action::Redirect(rd)) => Action::Redirect(redirect(rd, field)?),
        Some(eroute::route::Action::DirectResponse(d)) => {
            let body = match d.body.and_then(|b| b.specifier) {
                None => None,
                Some(ecore::data_source::Specifier::InlineString(s)) => Some(s),
                Some(ecore::data_source::Specifier::InlineBytes(b)) => Some(
                    String::from_utf8(b)
                        .map_err(|_| format!("{field}.direct_response.body: not UTF-8"))?,
                ),
                Some(_) => {
                    return reject(format!(
                        "{field}.direct_response.body: only inline bodies are supported"
                    ));
                }
            };
            Action::DirectResponse {
                status: d.status,
                body,
            }
        }
        Some(other) => {
            return reject(format!("{field}: route action {other:?} is not supported"));
        }
        None => return reject(format!("{field}: no action")),
    };
    let mut fault = None;
    let mut cors = None;
    for (name, any) in &r.typed_per_filter_config {
        match name.as_str() {
            "envoy.filters.http.fault" => {
                let f: efault::HttpFault =
                    unpack(any, &format!("{field}.typed_per_filter_config"))?;
                fault = Some(Box::new(fault_from(f, field)?));
            }
            "envoy.filters.http.cors" => {
                let c: ecors::CorsPolicy =
                    unpack(any, &format!("{field}.typed_per_filter_config"))?;
                cors = Some(Box::new(cors_from(c, field)?));
            }
            other => {
                return reject(format!(
                    "{field}.typed_per_filter_config: {other:?} is not supported (fault, cors)"
                ));
            }
        }
    }
    Ok(Route {
        name: r.name,
        matching,
        action,
        request_headers: header_edits(
            r.request_headers_to_add,
            r.request_headers_to_remove,
            &format!("{field}.request_headers_to_add"),
        )?,
        response_headers: header_edits(
            r.response_headers_to_add,
            r.response_headers_to_remove,
            &format!("{field}.response_headers_to_add"),
        )?,
        fault,
        cors,
    })
}

fn redirect(rd: eroute::RedirectAction, field: &str) -> R<Redirect> {
    use eroute::redirect_action::{
        PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
    };
    let (path, prefix_rewrite) = match rd.path_rewrite_specifier {
        Some(PathRewriteSpecifier::PathRedirect(p)) => (Some(p), None),
        Some(PathRewriteSpecifier::PrefixRewrite(p)) => (None, Some(p)),
        Some(PathRewriteSpecifier::RegexRewrite(_) | PathRewriteSpecifier::PathRewrite(_)) => {
            return reject(format!(
                "{field}.redirect: only path_redirect and prefix_rewrite are supported"
            ));
        }
        None => (None, None),
    };
    Ok(Redirect {
        scheme: match rd.scheme_rewrite_specifier {
            Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s),
            Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".into()),
            _ => None,
        },
        host: (!rd.host_redirect.is_empty()).then_some(rd.host_redirect),
        port: match rd.port_redirect {
            0 => None,
            p => Some(
                u16::try_from(p)
                    .map_err(|_| format!("{field}.redirect.port_redirect: {p} is not a port"))?,
            ),
        },
        path,
        prefix_rewrite,
        response_code: match RedirectResponseCode::try_from(rd.response_code) {
            Ok(RedirectResponseCode::Found) => 302,
            Ok(RedirectResponseCode::SeeOther) => 303,
            Ok(RedirectResponseCode::TemporaryRedirect) => 307,
            Ok(RedirectResponseCode::PermanentRedirect) => 308,
            _ => 301,
        },
    })
}

fn fault_from(f: efault::HttpFault, field: &str) -> R<Fault> {
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
    let delay = match f.delay {
        None => None,
        Some(d) => match d.fault_delay_secifier {
            Some(FaultDelaySecifier::FixedDelay(t)) => Some(FaultDelay {
                fixed_delay_ms: ms(&t),
                percent: percent(d.percentage.as_ref()),
            }),
            _ => return reject(format!("{field}: only fixed fault delays are supported")),
        },
    };
    let abort = match f.abort {
        None => None,
        Some(a) => {
            use efault::fault_abort::ErrorType;
            let status = match a.error_type {
                Some(ErrorType::HttpStatus(s)) => AbortStatus::Http(s),
                Some(ErrorType::GrpcStatus(s)) => AbortStatus::Grpc(s),
                _ => return reject(format!("{field}: fault abort needs an HTTP or gRPC status")),
            };
            Some(FaultAbort {
                status,
                percent: percent(a.percentage.as_ref()),
            })
        }
    };
    Ok(Fault { delay, abort })
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

fn cors_from(c: ecors::CorsPolicy, field: &str) -> R<Cors> {
    Ok(Cors {
        allow_origins: c
            .allow_origin_string_match
            .iter()
            .enumerate()
            .map(|(i, m)| string_match(m, &format!("{field}.cors.allow_origin_string_match[{i}]")))
            .collect::<R<Vec<_>>>()?,
        allow_methods: split_list(&c.allow_methods),
        allow_headers: split_list(&c.allow_headers),
        expose_headers: split_list(&c.expose_headers),
        max_age_secs: if c.max_age.is_empty() {
            None
        } else {
            Some(c.max_age.parse().map_err(|_| {
                format!(
                    "{field}.cors.max_age: {:?} is not a number of seconds",
                    c.max_age
                )
            })?)
        },
        allow_credentials: c.allow_credentials.map(|b| b.value),
    })
}

fn route_action(a: eroute::RouteAction, field: &str, repeated: &mut Repeated) -> R<RouteAction> {
    use eroute::route_action::ClusterSpecifier;
    let clusters = match a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => vec![WeightedCluster {
            name: c,
            weight: 100,
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
        }],
        Some(ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let cf = format!("{field}.route.weighted_clusters.clusters[{i}]");
                Ok(WeightedCluster {
                    weight: c.weight.map_or(0, |w| w.value),
                    request_headers: header_edits(
                        c.request_headers_to_add,
                        c.request_headers_to_remove,
                        &format!("{cf}.request_headers_to_add"),
                    )?,
                    response_headers: header_edits(
                        c.response_headers_to_add,
                        c.response_headers_to_remove,
                        &format!("{cf}.response_headers_to_add"),
                    )?,
                    name: c.name,
                })
            })
            .collect::<R<Vec<_>>>()?
            .fit(),
        Some(other) => {
            return reject(format!(
                "{field}.route: cluster specifier {other:?} is not supported (cluster, weighted_clusters)"
            ));
        }
        None => return reject(format!("{field}.route: no cluster")),
    };
    if clusters.iter().all(|c| c.weight == 0) {
        return reject(format!(
            "{field}.route.weighted_clusters: all weights are zero"
        ));
    }
    let retry = a
        .retry_policy
        .map(|r| {
            Ok::<_, String>(RetryPolicy {
                retry_on: split_list(&r.retry_on),
                // Envoy's default is one retry.
                num_retries: r.num_retries.map_or(1, |n| n.value),
                per_try_timeout_ms: r.per_try_timeout.as_ref().map(ms),
                retriable_status_codes: r.retriable_status_codes,
                backoff_base_ms: r
                    .retry_back_off
                    .and_then(|b| b.base_interval)
                    .as_ref()
                    .map(ms),
                retry_other_hosts: r
                    .retry_host_predicate
                    .iter()
                    .any(|p| p.name == "envoy.retry_host_predicates.previous_hosts"),
            })
        })
        .transpose()?
        .map(|policy| repeated.retry_policy(policy));
    let hash_policy = a
        .hash_policy
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            use eroute::route_action::hash_policy::PolicySpecifier;
            Ok(match h.policy_specifier {
                Some(PolicySpecifier::Header(h)) => HashPolicy::Header(h.header_name),
                Some(PolicySpecifier::Cookie(c)) => HashPolicy::Cookie {
                    ttl_ms: c.ttl.as_ref().map(ms),
                    path: (!c.path.is_empty()).then_some(c.path),
                    name: c.name,
                },
                Some(PolicySpecifier::ConnectionProperties(c)) if c.source_ip => {
                    HashPolicy::SourceIp
                }
                Some(PolicySpecifier::QueryParameter(q)) => HashPolicy::QueryParameter(q.name),
                _ => {
                    return reject(format!(
                        "{field}.route.hash_policy[{i}]: only header, cookie, source IP and query parameter hashing are supported"
                    ));
                }
            })
        })
        .collect::<R<Vec<_>>>()?.fit();
    use eroute::route_action::HostRewriteSpecifier;
    let host_rewrite = match a.host_rewrite_specifier {
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(h),
        Some(_) => {
            return reject(format!(
                "{field}.route: only host_rewrite_literal is supported for host rewrites"
            ));
        }
        None => None,
    };
    Ok(RouteAction {
        clusters,
        timeout_ms: a.timeout.as_ref().map(ms),
        retry,
        mirrors: a
            .request_mirror_policies
            .into_iter()
            .map(|m| Mirror {
                percent: m
                    .runtime_fraction
                    .as_ref()
                    .map_or(100.0, |f| percent(f.default_value.as_ref())),
                cluster: m.cluster,
            })
            .collect::<Vec<_>>()
            .fit(),
        prefix_rewrite: (!a.prefix_rewrite.is_empty()).then_some(a.prefix_rewrite),
        regex_rewrite: a.regex_rewrite.map(|r| {
            (
                r.pattern.map(|p| p.regex).unwrap_or_default(),
                r.substitution,
            )
        }),
        host_rewrite,
        hash_policy,
        upgrades: a
            .upgrade_configs
            .into_iter()
            .map(|u| u.upgrade_type)
            .collect::<Vec<_>>()
            .fit(),
    })
}

// ---------------------------------------------------------------------------------------------
// Clusters

/// A cluster, from the `Any` of a CDS response.
pub fn cluster(any: &Any) -> Result<Cluster, Rejected> {
    let c: ecluster::Cluster = named("cluster", unpack(any, "resource"))?;
    let name = c.name.clone();
    named(&format!("cluster {name}"), cluster_body(c))
}

fn static_targets(cla: Option<&eendpoint::ClusterLoadAssignment>) -> R<Vec<SocketAddress>> {
    let mut out = Vec::new();
    for (i, l) in cla.iter().flat_map(|c| c.endpoints.iter()).enumerate() {
        for (j, e) in l.lb_endpoints.iter().enumerate() {
            match &e.host_identifier {
                Some(eendpoint::lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                    out.push(socket_address(
                        ep.address.as_ref(),
                        &format!(
                            "load_assignment.endpoints[{i}].lb_endpoints[{j}].endpoint.address"
                        ),
                    )?)
                }
                _ => {
                    return reject(format!(
                        "load_assignment.endpoints[{i}].lb_endpoints[{j}]: only endpoints with an address are supported"
                    ));
                }
            }
        }
    }
    Ok(out)
}

// Deprecated cluster fields (`http2_protocol_options`, `max_requests_per_connection`) are still
// what some control planes send.
#[allow(deprecated)]
fn cluster_body(c: ecluster::Cluster) -> R<Cluster> {
    use ecluster::cluster::{ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy as ELb};
    let tls = upstream_tls(&c)?.map(Arc::new);
    let discovery_type = match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => {
            DiscoveryType::try_from(t).map_err(|_| format!("type: unknown discovery type {t}"))?
        }
        Some(ClusterDiscoveryType::ClusterType(ref t)) => {
            return reject(format!(
                "cluster_type {:?}: custom cluster types are not supported",
                t.name
            ));
        }
        None => DiscoveryType::Static,
    };
    let discovery = match discovery_type {
        DiscoveryType::Eds => Discovery::Eds(
            c.eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|s| !s.is_empty()),
        ),
        DiscoveryType::Static => match &c.load_assignment {
            None => Discovery::None,
            Some(cla) => Discovery::Static(static_targets(Some(cla))?),
        },
        DiscoveryType::StrictDns => Discovery::StrictDns(
            static_targets(c.load_assignment.as_ref())?
                .into_iter()
                .map(|a| (a.ip, a.port))
                .collect::<Vec<_>>()
                .fit(),
        ),
        DiscoveryType::OriginalDst => Discovery::OriginalDst,
        DiscoveryType::LogicalDns => {
            return reject("type LOGICAL_DNS: not supported; use STRICT_DNS");
        }
    };
    let lb_policy = match ELb::try_from(c.lb_policy) {
        Ok(ELb::RoundRobin) => LbPolicy::RoundRobin,
        Ok(ELb::LeastRequest) => LbPolicy::LeastRequest,
        Ok(ELb::Random) => LbPolicy::Random,
        Ok(ELb::RingHash) => LbPolicy::RingHash {
            minimum_ring_size: match &c.lb_config {
                Some(LbConfig::RingHashLbConfig(r)) => {
                    r.minimum_ring_size.map_or(1024, |v| v.value)
                }
                _ => 1024,
            },
        },
        Ok(ELb::Maglev) => LbPolicy::Maglev {
            table_size: match &c.lb_config {
                Some(LbConfig::MaglevLbConfig(m)) => m.table_size.map_or(65537, |v| v.value),
                _ => 65537,
            },
        },
        Ok(ELb::ClusterProvided) if discovery == Discovery::OriginalDst => LbPolicy::RoundRobin,
        Ok(other) => return reject(format!("lb_policy {other:?}: not supported")),
        Err(_) => return reject(format!("lb_policy: unknown value {}", c.lb_policy)),
    };
    let circuit_breakers = c.circuit_breakers.and_then(|cb| {
        cb.thresholds
            .into_iter()
            .find(|t| t.priority == ecore::RoutingPriority::Default as i32)
            .map(|t| CircuitBreakers {
                max_connections: t.max_connections.map(|v| v.value),
                max_pending_requests: t.max_pending_requests.map(|v| v.value),
                max_requests: t.max_requests.map(|v| v.value),
                max_retries: t.max_retries.map(|v| v.value),
            })
    });
    let outlier_detection = c.outlier_detection.map(|o| OutlierDetection {
        consecutive_5xx: o
            .consecutive_5xx
            .map(|v| v.value)
            .filter(|_| o.enforcing_consecutive_5xx.is_none_or(|e| e.value > 0))
            .filter(|v| *v > 0),
        consecutive_gateway_errors: o.consecutive_gateway_failure.map(|v| v.value),
        consecutive_local_origin_failures: o.consecutive_local_origin_failure.map(|v| v.value),
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        interval_ms: o.interval.as_ref().map_or(10_000, ms),
        base_ejection_time_ms: o.base_ejection_time.as_ref().map_or(30_000, ms),
        max_ejection_percent: o.max_ejection_percent.map_or(10, |v| v.value),
    });
    let common = c.common_lb_config.clone().unwrap_or_default();
    let mut http2 = c.http2_protocol_options.is_some();
    let mut max_requests_per_connection = c.max_requests_per_connection.map(|v| v.value);
    let mut idle_timeout_ms = None;
    for (name, any) in &c.typed_extension_protocol_options {
        if name != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
            return reject(format!(
                "typed_extension_protocol_options[{name:?}]: not supported"
            ));
        }
        let o: eup::HttpProtocolOptions = unpack(any, "typed_extension_protocol_options")?;
        if let Some(common) = o.common_http_protocol_options {
            if let Some(n) = common.max_requests_per_connection {
                max_requests_per_connection = Some(n.value);
            }
            idle_timeout_ms = common.idle_timeout.as_ref().map(ms);
        }
        use eup::http_protocol_options::UpstreamProtocolOptions;
        use eup::http_protocol_options::explicit_http_config::ProtocolConfig;
        match o.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => {
                http2 = matches!(
                    e.protocol_config,
                    Some(ProtocolConfig::Http2ProtocolOptions(_))
                );
            }
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                return reject("use_downstream_protocol_config: not supported; say http1 or http2");
            }
            Some(UpstreamProtocolOptions::AutoConfig(_)) => {
                return reject("auto_config: not supported; say http1 or http2");
            }
            None => {}
        }
    }
    let service = meta::as_list(meta::field(c.metadata.as_ref(), meta::ISTIO, "services"))
        .and_then(|l| l.first())
        .and_then(|v| meta::as_struct(Some(v)))
        .map(|s| ServiceInfo {
            host: meta::as_str(s.fields.get("host"))
                .unwrap_or_default()
                .to_string(),
            name: meta::as_str(s.fields.get("name"))
                .unwrap_or_default()
                .to_string(),
            namespace: meta::as_str(s.fields.get("namespace"))
                .unwrap_or_default()
                .to_string(),
            port: meta::as_number(meta::field(
                c.metadata.as_ref(),
                meta::ISTIO,
                "default_original_port",
            ))
            .map_or(0, |p| p as u16),
            subset: meta::as_str(meta::field(c.metadata.as_ref(), meta::ISTIO, "subset"))
                .map(str::to_string),
        });
    Ok(Cluster {
        connect_timeout_ms: c.connect_timeout.as_ref().map_or(5000, ms),
        discovery,
        lb_policy,
        circuit_breakers,
        outlier_detection,
        http2,
        tls,
        locality_weighted: matches!(
            common.locality_config_specifier,
            Some(ecluster::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
        ),
        panic_threshold_percent: common.healthy_panic_threshold.map(|p| p.value),
        max_requests_per_connection,
        idle_timeout_ms,
        tcp_keepalive: c
            .upstream_connection_options
            .and_then(|o| o.tcp_keepalive)
            .map(|k| TcpKeepalive {
                probes: k.keepalive_probes.map(|v| v.value),
                time_secs: k.keepalive_time.map(|v| v.value),
                interval_secs: k.keepalive_interval.map(|v| v.value),
            }),
        service,
        name: c.name,
    })
}

fn file_path(d: Option<&ecore::DataSource>, field: &str) -> R<Option<String>> {
    match d.and_then(|d| d.specifier.as_ref()) {
        None => Ok(None),
        Some(ecore::data_source::Specifier::Filename(f)) => Ok(Some(f.clone())),
        Some(_) => reject(format!("{field}: only file names are supported")),
    }
}

fn upstream_tls(c: &ecluster::Cluster) -> R<Option<UpstreamTls>> {
    let (socket, istio) = match (&c.transport_socket, c.transport_socket_matches.as_slice()) {
        (Some(ts), []) => (ts.clone(), false),
        (None, []) => return Ok(None),
        (_, matches) => {
            let istio = matches.iter().find(|m| {
                m.r#match
                    .as_ref()
                    .and_then(|s| meta::as_str(s.fields.get("tlsMode")))
                    == Some("istio")
            });
            match istio.and_then(|m| m.transport_socket.clone()) {
                Some(ts) => (ts, true),
                None => {
                    return reject(
                        "transport_socket_matches: only Istio's tlsMode=istio match is supported",
                    );
                }
            }
        }
    };
    if socket.name == RAW_BUFFER {
        return Ok(None);
    }
    if socket.name != TLS_SOCKET {
        return reject(format!("transport_socket {:?}: not supported", socket.name));
    }
    let any = match socket.config_type {
        Some(ecore::transport_socket::ConfigType::TypedConfig(a)) => a,
        None => return reject("transport_socket: typed_config missing"),
    };
    let ctx: etls::UpstreamTlsContext = unpack(&any, "transport_socket")?;
    let common = ctx.common_tls_context.unwrap_or_default();
    use etls::common_tls_context::ValidationContextType;
    let (validation, roots_sds) = match common.validation_context_type {
        Some(ValidationContextType::ValidationContext(v)) => (Some(v), None),
        Some(ValidationContextType::CombinedValidationContext(c)) => (
            c.default_validation_context,
            c.validation_context_sds_secret_config.map(|s| s.name),
        ),
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => (None, Some(s.name)),
        Some(_) => return reject("transport_socket: unsupported validation context"),
        None => (None, None),
    };
    let validation = validation.unwrap_or_default();
    let subject_alt_names = validation
        .match_typed_subject_alt_names
        .iter()
        .map(|m| {
            match m
                .matcher
                .as_ref()
                .map(|m| string_match(m, "match_typed_subject_alt_names"))
            {
                Some(Ok(StringMatch::Exact(v))) => Ok(v),
                _ => reject("match_typed_subject_alt_names: only exact matches are supported"),
            }
        })
        .collect::<R<Vec<_>>>()?;
    let cert_sds = common
        .tls_certificate_sds_secret_configs
        .first()
        .map(|s| s.name.clone());
    let client_cert = common.tls_certificates.first();
    let mode = if istio
        || (cert_sds.as_deref() == Some(SDS_DEFAULT) && roots_sds.as_deref() == Some(SDS_ROOTCA))
    {
        UpstreamTlsMode::IstioMutual
    } else if cert_sds.is_some() || client_cert.is_some() {
        UpstreamTlsMode::Mutual
    } else {
        UpstreamTlsMode::Simple
    };
    // Istio's names: `kubernetes://<credential>` and `kubernetes://<credential>-cacert`.
    let credential = |sds: &str| {
        sds.strip_prefix(strait_xds::secret::KUBERNETES_PREFIX)
            .unwrap_or(sds)
            .to_string()
    };
    let credential_name = match mode {
        UpstreamTlsMode::IstioMutual => None,
        _ => cert_sds.as_deref().map(credential).or_else(|| {
            roots_sds
                .as_deref()
                .map(|r| credential(r.strip_suffix(strait_xds::secret::CA_SUFFIX).unwrap_or(r)))
        }),
    };
    Ok(Some(UpstreamTls {
        mode,
        sni: (!ctx.sni.is_empty()).then_some(ctx.sni),
        subject_alt_names,
        alpn: common.alpn_protocols,
        ca_certificates: file_path(
            validation.trusted_ca.as_ref(),
            "validation_context.trusted_ca",
        )?,
        client_certificate: file_path(
            client_cert.and_then(|c| c.certificate_chain.as_ref()),
            "tls_certificates[0].certificate_chain",
        )?,
        private_key: file_path(
            client_cert.and_then(|c| c.private_key.as_ref()),
            "tls_certificates[0].private_key",
        )?,
        credential_name,
        insecure_skip_verify: validation.trust_chain_verification
            == etls::certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32,
        // Chosen per endpoint by its tlsMode (Istio's auto mTLS), else every endpoint's.
        auto_mtls: istio,
    }))
}

// ---------------------------------------------------------------------------------------------
// Load assignments

/// A load assignment, from the `Any` of an EDS response.
pub fn load_assignment(any: &Any) -> Result<ClusterLoadAssignment, Rejected> {
    let cla: eendpoint::ClusterLoadAssignment = named("endpoints", unpack(any, "resource"))?;
    let name = cla.cluster_name.clone();
    named(&format!("endpoints {name}"), load_assignment_body(cla))
}

/// One copy of each text an assignment's endpoints repeat (namespace, cluster), and of each
/// metadata (a workload's replicas carry the same).
#[derive(Default)]
struct Texts {
    texts: HashSet<Arc<str>>,
    metadata: HashSet<Arc<EndpointMetadata>>,
}

impl Texts {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(t) = self.texts.get(s) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(s);
        self.texts.insert(t.clone());
        t
    }

    fn metadata(&mut self, m: EndpointMetadata) -> Arc<EndpointMetadata> {
        intern(&mut self.metadata, m)
    }
}

fn endpoint_metadata(m: Option<&ecore::Metadata>, texts: &mut Texts) -> Arc<EndpointMetadata> {
    let workload = meta::as_str(meta::field(m, meta::ISTIO, "workload")).unwrap_or_default();
    let mut parts = workload.split(';');
    let (name, namespace, cluster) = (parts.next(), parts.next(), parts.nth(2));
    let mut text = |p: Option<&str>| texts.get(p.unwrap_or_default());
    let metadata = EndpointMetadata {
        workload: text(name),
        namespace: text(namespace),
        cluster: text(cluster),
        // Not carried on the wire (see `to_envoy::endpoint_metadata`).
        network: text(None),
        identity: None,
        gateway: meta::as_bool(meta::field(m, meta::STRAIT, "gateway")).unwrap_or(false),
        mtls: meta::as_str(meta::field(m, meta::TRANSPORT_SOCKET_MATCH, "tlsMode"))
            == Some("istio"),
    };
    texts.metadata(metadata)
}

fn load_assignment_body(cla: eendpoint::ClusterLoadAssignment) -> R<ClusterLoadAssignment> {
    let mut localities = Vec::with_capacity(cla.endpoints.len());
    let mut texts = Texts::default();
    for (i, l) in cla.endpoints.into_iter().enumerate() {
        let mut endpoints = Vec::with_capacity(l.lb_endpoints.len());
        for (j, e) in l.lb_endpoints.into_iter().enumerate() {
            let field = format!("endpoints[{i}].lb_endpoints[{j}]");
            let address = match &e.host_identifier {
                Some(eendpoint::lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                    socket_address(ep.address.as_ref(), &format!("{field}.endpoint.address"))?
                }
                _ => {
                    return reject(format!(
                        "{field}: only endpoints with an address are supported"
                    ));
                }
            };
            if address.port == 0 {
                return reject(format!("{field}.endpoint.address: port 0"));
            }
            let health = match ecore::HealthStatus::try_from(e.health_status) {
                Ok(ecore::HealthStatus::Unhealthy | ecore::HealthStatus::Timeout) => {
                    HealthStatus::Unhealthy
                }
                Ok(ecore::HealthStatus::Draining) => HealthStatus::Draining,
                _ => HealthStatus::Healthy,
            };
            endpoints.push(LbEndpoint {
                address,
                health,
                weight: e.load_balancing_weight.map_or(1, |w| w.value).max(1),
                metadata: endpoint_metadata(e.metadata.as_ref(), &mut texts),
            });
        }
        localities.push(LocalityEndpoints {
            locality: locality(l.locality.as_ref()),
            priority: l.priority,
            weight: l.load_balancing_weight.map(|w| w.value),
            endpoints,
        });
    }
    Ok(ClusterLoadAssignment {
        cluster_name: cla.cluster_name,
        localities,
        overprovisioning_factor: cla
            .policy
            .and_then(|p| p.overprovisioning_factor)
            .map(|f| f.value),
    })
}
