//! The HTTP connection manager: serves HTTP/1.1 (with upgrades) and HTTP/2 on a downstream
//! connection, routes each request with the route configuration of the moment, and records it
//! (Istio metrics, access log) when its response body ends.

pub mod body;
mod date;
pub mod forward;
pub mod headers;
mod http2;
pub mod router;
mod sniff;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::HeaderValue;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use strait_xds::listener::Direction;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Proxy;
use crate::authz::{Authorizer, Facts, RequestFacts};
use crate::metrics::{Peer, RequestLabels, ServiceLabels, Text};
use crate::state::Retirement;
use crate::upstream::pool::{Body, BoxError};
use body::{Finished, Observed};
use http_body_util::BodyExt;
use router::Router;

/// Header carrying the calling workload's identity to the next sidecar (for `source_*` labels
/// on the destination side): `<workload>;<namespace>;<cluster>;<app>;<version>`.
pub const PEER_HEADER: http::HeaderName = http::HeaderName::from_static("x-strait-peer");

/// The largest HTTP/2 header list accepted, from clients and from hosts: Envoy's default
/// `max_request_headers_kb`, so large cookies and tokens pass as they do through Envoy
/// (hyper's 16 KiB, which the proxy had, refused them).
pub const MAX_HEADER_LIST: u32 = 60 * 1024;

/// Where a connection's routes come from.
#[derive(Clone)]
pub enum RouteRef {
    Rds(Arc<str>),
    Inline(Arc<Router>),
}

/// One downstream connection's context.
pub struct HttpConn {
    pub proxy: Arc<Proxy>,
    pub direction: Direction,
    pub listener: Arc<str>,
    pub route: RouteRef,
    pub downstream: SocketAddr,
    pub destination: SocketAddr,
    /// The destination is the original one of a captured connection (not this listener's
    /// own address): only then can a passthrough cluster use it without looping back here.
    pub captured: bool,
    pub upgrades: Vec<String>,
    /// The caller's SPIFFE ID, verified by mesh mTLS on this connection.
    pub peer_principal: Option<Arc<str>>,
    /// The TLS server name the client asked for, when known.
    pub server_name: Option<Arc<str>>,
    /// Who may make which requests (the connection manager's RBAC filters).
    pub authz: Option<Arc<Authorizer>>,
    /// Which JWTs requests may carry (the connection manager's `jwt_authn`).
    pub jwt: Option<Arc<crate::jwt::JwtRuntime>>,
    /// Set when the chain serving this connection is replaced: the connection then drains.
    pub retirement: Arc<Retirement>,
    /// Closes the connection after this long without a request in flight (`None`: never).
    pub idle_timeout: Option<std::time::Duration>,
    /// Where its requests were last recorded.
    pub series: crate::metrics::SeriesMemo,
}

/// Istio's `connection_security_policy`: what the server saw; a client reports `unknown`.
pub fn security_policy(direction: Direction, mutual_tls: bool) -> &'static str {
    match (direction, mutual_tls) {
        (Direction::Outbound, _) => "unknown",
        (Direction::Inbound, true) => "mutual_tls",
        (Direction::Inbound, false) => "none",
    }
}

impl HttpConn {
    /// Resolves when the connection should drain: the chain serving it was replaced, or it has
    /// been idle for the idle timeout (counted).
    async fn drained(&self, activity: &crate::idle::Activity) {
        tokio::select! {
            biased;
            () = self.retirement.wait() => {}
            () = activity.expired(self.idle_timeout) => {
                self.proxy.metrics.record_idle_timeout("http");
                tracing::debug!(downstream = %self.downstream, "connection idle for the idle timeout; closing");
            }
        }
    }
}

/// Serves the connection until it closes: HTTP/2 when it starts with HTTP/2's connection
/// preface (prior knowledge, or TLS with ALPN `h2`), HTTP/1.1 otherwise.
pub async fn serve<I>(conn: Arc<HttpConn>, mut io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = crate::idle::Activity::new(tokio::time::Instant::now());
    // A connection that sends nothing is closed by the idle timeout, or when drained.
    let sniffed = tokio::select! {
        sniffed = sniff::preface(&mut io) => sniffed,
        () = conn.drained(&activity) => return,
    };
    let (seen, http2) = match sniffed {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(downstream = %conn.downstream, "connection closed before a request: {e}");
            return;
        }
    };
    let io = sniff::Rewind::new(seen, io);
    if http2 {
        http2::serve(conn, io, activity).await;
    } else {
        serve_http1(conn, io, activity).await;
    }
}

/// Serves HTTP/1.1 (with upgrades) on hyper.
async fn serve_http1<I>(conn: Arc<HttpConn>, io: I, activity: Arc<crate::idle::Activity>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let this = conn.clone();
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let c = conn.clone();
        let in_flight = requests.begin();
        let req = req.map(|b| b.map_err(BoxError::from).boxed_unsync());
        // Boxed: hyper moves the service's future whole; a pointer moves cheaper than the
        // request's kilobytes of state.
        let response = crate::boxed::boxed(|| handle(c, req, in_flight));
        async move { Ok::<_, Infallible>(response.await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // No header-read timeout (Envoy's `request_headers_timeout` is off by default too): hyper
    // re-arms it for every request, which wakes the event loop once more per request. Idle
    // connections are closed by the idle timeout below.
    builder.header_read_timeout(None);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        biased;
        _ = connection.as_mut() => return,
        () = this.drained(&activity) => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// What the request came to, filled in along the way.
#[derive(Default, Clone)]
pub struct Outcome {
    pub flags: Vec<&'static str>,
    pub route: Option<Arc<strait_xds::route::Route>>,
    pub cluster: Option<Arc<crate::upstream::ClusterRuntime>>,
    pub upstream_host: Option<SocketAddr>,
    /// The destination's workload, namespace and cluster (from the endpoint's metadata).
    pub destination: Option<crate::upstream::HostLabels>,
    pub service: Option<ServiceLabels>,
    pub attempts: u32,
}

impl Outcome {
    pub fn flag(&mut self, f: &'static str) {
        if !self.flags.contains(&f) {
            self.flags.push(f);
        }
    }

    fn flags_text(&self) -> Text {
        match self.flags[..] {
            [] => Text::Static("-"),
            [one] => Text::Static(one),
            _ => Text::from(self.flags.join(",")),
        }
    }
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The peer header's content for a caller.
pub fn peer_header_value(p: &Peer) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{};{};{};{};{}",
        p.workload, p.namespace, p.cluster, p.app, p.version
    ))
    .ok()
}

fn peer_from_header(v: &HeaderValue) -> Option<Peer> {
    let text = v.to_str().ok()?;
    let mut it = text.split(';').map(Text::known_or_unknown);
    let mut p = Peer::unknown();
    p.workload = it.next()?;
    p.namespace = it.next()?;
    p.cluster = it.next()?;
    p.app = it.next().unwrap_or_else(|| p.app.clone());
    p.version = it.next().unwrap_or_else(|| p.version.clone());
    Some(p)
}

/// Routes and forwards one request; `in_flight` counts it on its connection until its response
/// body ends.
async fn handle(
    c: Arc<HttpConn>,
    mut req: http::Request<Body>,
    in_flight: crate::idle::InFlight,
) -> http::Response<Body> {
    let start = Instant::now();
    let started_at = SystemTime::now();
    let trace_id = crate::trace::propagate(req.headers_mut());
    let caller = match c.direction {
        Direction::Inbound => req
            .headers_mut()
            .remove(PEER_HEADER)
            .and_then(|v| peer_from_header(&v)),
        Direction::Outbound => {
            req.headers_mut().remove(PEER_HEADER);
            None
        }
    };
    let grpc = is_grpc(req.headers());
    // Request authentication first: it may take the token out of the request.
    let authn = match &c.jwt {
        Some(j) => {
            let uri = req.uri().clone();
            j.authenticate(req.headers_mut(), &uri, SystemTime::now())
        }
        None => crate::jwt::Authn::Missing,
    };
    let verified = match &authn {
        crate::jwt::Authn::Verified(v) => Some(v.as_ref()),
        _ => None,
    };
    // What only the access log and the inbound service label need: taken only then.
    let authority = if c.direction == Direction::Inbound || c.proxy.access_log.is_some() {
        router::authority_of(req.uri(), req.headers()).to_string()
    } else {
        String::new()
    };
    let log_context = c.proxy.access_log.as_ref().map(|_| LogContext {
        started_at,
        method: req.method().clone(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".into(), |p| p.as_str().to_string()),
        protocol: format!("{:?}", req.version()),
        user_agent: header_text(req.headers(), http::header::USER_AGENT.as_str()),
        request_id: header_text(req.headers(), "x-request-id"),
        trace_id,
    });

    // Count request bytes as the upstream reads them.
    let request_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = request_bytes.clone();
    let req = req.map(move |b| {
        Observed::new(b, move |f: Finished| {
            counter.store(f.bytes, std::sync::atomic::Ordering::Relaxed);
        })
        .boxed_unsync()
    });

    let mut outcome = Outcome::default();
    let refused = match &authn {
        crate::jwt::Authn::Refused(reason) => Some(reason.as_str()),
        _ => None,
    };
    let verdict = c.authz.as_ref().filter(|_| refused.is_none()).map(|a| {
        let v = a.evaluate(&Facts {
            peer: c.downstream,
            destination: c.destination,
            principal: c.peer_principal.as_deref(),
            server_name: c.server_name.as_deref(),
            request: Some(RequestFacts {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                authority: router::authority_of(req.uri(), req.headers()),
                auth: verified,
            }),
        });
        c.proxy.metrics.record_authorization("http", &v);
        v
    });
    // Envoy's response code details: `jwt_authn_access_denied{<reason>}` for a refused token.
    let denial = match refused {
        Some(reason) => Some(format!(
            "jwt_authn_access_denied{{{}}}",
            reason.split(':').next().unwrap_or(reason).replace(' ', "_")
        )),
        None => verdict.as_ref().and_then(|v| v.details()),
    };
    let response = match (refused, &denial) {
        // Envoy's local reply for a refused token (gRPC callers get UNAUTHENTICATED).
        (Some(reason), _) => {
            let mut r = headers::local_reply(http::StatusCode::UNAUTHORIZED, reason, grpc);
            if !grpc {
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            r
        }
        // Envoy's local reply for an RBAC denial (gRPC callers get PERMISSION_DENIED).
        (None, Some(_)) => {
            headers::local_reply(http::StatusCode::FORBIDDEN, "RBAC: access denied", grpc)
        }
        (None, None) => forward::route_request(&c, req, grpc, &mut outcome).await,
    };
    let audit = verdict.and_then(|v| v.audit);
    let status = response.status().as_u16();
    let header_grpc_status = response
        .headers()
        .get(headers::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let conn = c.clone();
    let (parts, body) = response.into_parts();
    let body = Observed::new(body, move |f: Finished| {
        let (proxy, direction) = (&conn.proxy, conn.direction);
        let (downstream, peer_principal) = (conn.downstream, &conn.peer_principal);
        drop(in_flight);
        let grpc_status = f.grpc_status.clone().or(header_grpc_status);
        let mut outcome = outcome;
        if !f.complete {
            outcome.flag("DC");
        }
        let me = &proxy.me;
        let (source, destination) = match direction {
            Direction::Outbound => {
                let mut d = Peer::unknown();
                if let Some(h) = &outcome.destination {
                    d.workload = h.workload.clone();
                    d.namespace = h.namespace.clone();
                    d.cluster = h.cluster.clone();
                }
                (me.clone(), d)
            }
            Direction::Inbound => {
                let mut s = caller.unwrap_or_else(Peer::unknown);
                if let Some(p) = &peer_principal {
                    s.principal = Text::Shared(p.clone());
                }
                (s, me.clone())
            }
        };
        let service = outcome.service.clone().unwrap_or_else(|| match direction {
            Direction::Inbound => inbound_service(&authority),
            Direction::Outbound => ServiceLabels::unknown(),
        });
        let labels = RequestLabels {
            reporter: match direction {
                Direction::Outbound => "source",
                Direction::Inbound => "destination",
            },
            source_canonical_service: source.app.clone(),
            source_canonical_revision: source.version.clone(),
            destination_canonical_service: destination.app.clone(),
            destination_canonical_revision: destination.version.clone(),
            source_workload: source.workload.clone(),
            source_workload_namespace: source.namespace.clone(),
            source_principal: source.principal.clone(),
            source_app: source.app.clone(),
            source_version: source.version.clone(),
            source_cluster: source.cluster.clone(),
            destination_workload: destination.workload.clone(),
            destination_workload_namespace: destination.namespace.clone(),
            destination_principal: destination.principal.clone(),
            destination_app: destination.app.clone(),
            destination_version: destination.version.clone(),
            destination_service: service.host.clone(),
            destination_service_name: service.name.clone(),
            destination_service_namespace: service.namespace.clone(),
            destination_cluster: destination.cluster.clone(),
            request_protocol: if grpc { "grpc" } else { "http" },
            response_code: status,
            grpc_response_status: crate::metrics::Metrics::grpc_status(grpc_status.as_deref()),
            response_flags: outcome.flags_text(),
            connection_security_policy: security_policy(direction, peer_principal.is_some()),
        };
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let request_size = request_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let series = proxy.metrics.request_series_memo(&conn.series, &labels);
        series.requests.inc();
        series.duration.observe(ms);
        series.request_bytes.observe(request_size as f64);
        series.response_bytes.observe(f.bytes as f64);
        if let (Some(log), Some(cx)) = (&proxy.access_log, log_context) {
            let start_time = cx
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            log.write(&serde_json::json!({
                "start_time_unix_ms": start_time,
                "method": cx.method.as_str(),
                "path": cx.path,
                "protocol": cx.protocol,
                "authority": authority,
                "response_code": status,
                "grpc_status": grpc_status,
                "response_flags": &*labels.response_flags,
                "duration_ms": ms.round() as u64,
                "bytes_received": request_size,
                "bytes_sent": f.bytes,
                "upstream_cluster": outcome.cluster.as_ref().map(|c| c.config.name.as_str()),
                "upstream_host": outcome.upstream_host.map(|h| h.to_string()),
                "route_name": outcome.route.as_ref().map(|r| r.name.as_str()),
                "attempts": outcome.attempts,
                "downstream_remote_address": downstream.to_string(),
                "user_agent": cx.user_agent,
                "request_id": cx.request_id,
                "trace_id": cx.trace_id.as_str(),
                "reporter": labels.reporter,
                "source_workload": &*labels.source_workload,
                "source_namespace": &*labels.source_workload_namespace,
                "source_cluster": &*labels.source_cluster,
                "destination_workload": &*labels.destination_workload,
                "destination_namespace": &*labels.destination_workload_namespace,
                "destination_cluster": &*labels.destination_cluster,
                "destination_service": &*labels.destination_service,
                "source_principal": &*labels.source_principal,
                "response_code_details": denial,
                "audit_policy": audit.as_deref(),
            }));
        }
    });
    http::Response::from_parts(parts, body.boxed_unsync())
}

/// What an access log line needs of the request.
struct LogContext {
    started_at: SystemTime,
    method: http::Method,
    path: String,
    protocol: String,
    user_agent: Option<String>,
    request_id: Option<String>,
    trace_id: crate::trace::TraceId,
}

fn header_text(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The service an inbound request is for, from its authority (`reviews.bookinfo.svc...`).
fn inbound_service(authority: &str) -> ServiceLabels {
    let (host, _) = router::split_port(authority);
    let mut labels = ServiceLabels::unknown();
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return labels;
    }
    let mut parts = host.split('.');
    if let (Some(name), Some(ns)) = (parts.next(), parts.next()) {
        labels.name = Text::from(name);
        labels.namespace = Text::from(ns);
    }
    labels.host = Text::from(host);
    labels
}
