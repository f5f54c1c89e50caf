//! What a route does with a request: faults, direct responses, redirects, and forwarding — a
//! weighted cluster, header edits and rewrites, mirrors, then attempts under the route's overall
//! and per-try timeouts with retries (Envoy's retry-on conditions, jittered exponential backoff),
//! circuit breakers answering 503 `UO`, outlier detection fed by every attempt, and upgrades
//! (WebSocket) spliced through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{Response, StatusCode};
use strait_xds::cluster::Discovery;
use strait_xds::listener::Direction;
use strait_xds::route::{
    AbortStatus, Action, HashPolicy, Redirect, Route, RouteAction, WeightedCluster,
};
use tokio::time::Instant;

use super::body::{self, Replay};
use super::headers::{self, UpstreamAuthority, local_reply};
use super::{HttpConn, Outcome, RouteRef};
use crate::upstream::limits::{Permit, Resource};
use crate::upstream::outlier::Outcome as HostOutcome;
use crate::upstream::pool::{ActiveRequest, Body, Conn, ConnectError, Opening, Reach};
use crate::upstream::{ClusterRuntime, Host, lb};

/// Envoy's route timeout when the route sets none.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default retry back-off base.
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

pub async fn route_request(
    c: &Arc<HttpConn>,
    req: http::Request<Body>,
    grpc: bool,
    outcome: &mut Outcome,
) -> Response<Body> {
    let snapshot = c.proxy.snapshot.load_full();
    let router = match &c.route {
        RouteRef::Rds(name) => snapshot.routes.get(&**name).cloned(),
        RouteRef::Inline(r) => Some(r.clone()),
    };
    let Some(router) = router else {
        outcome.flag("NR");
        return local_reply(StatusCode::NOT_FOUND, "", grpc);
    };
    let (mut parts, body) = req.into_parts();
    let Some(selected) = router.select(&parts) else {
        outcome.flag("NR");
        return local_reply(StatusCode::NOT_FOUND, "", grpc);
    };
    let route = selected.route.clone();
    let regex_rewrite = selected.regex_rewrite.cloned();
    let cors = selected.cors.cloned();
    outcome.route = Some(route.clone());
    // The request's headers as they came, for CORS on the response (only when it applies).
    let request_headers = cors.as_ref().map(|_| parts.headers.clone());
    if let Some(policy) = &cors
        && let Some(r) = policy.preflight(&parts.method, &parts.headers)
    {
        return r;
    }
    if let Some(fault) = &route.fault {
        if let Some(delay) = &fault.delay
            && roll(delay.percent)
        {
            outcome.flag("DI");
            tokio::time::sleep(Duration::from_millis(delay.fixed_delay_ms)).await;
        }
        if let Some(abort) = &fault.abort
            && roll(abort.percent)
        {
            outcome.flag("FI");
            return match abort.status {
                AbortStatus::Http(code) => local_reply(
                    StatusCode::from_u16(code as u16).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    "fault filter abort",
                    false,
                ),
                AbortStatus::Grpc(code) => {
                    let mut r = local_reply(StatusCode::OK, "fault filter abort", true);
                    r.headers_mut()
                        .insert(headers::GRPC_STATUS, HeaderValue::from(code));
                    r
                }
            };
        }
    }
    let mut response = match &route.action {
        Action::DirectResponse { status, body: text } => {
            let mut r = Response::new(match text {
                Some(t) => body::full(t.clone()),
                None => body::empty(),
            });
            *r.status_mut() = StatusCode::from_u16(*status as u16).unwrap_or(StatusCode::OK);
            r
        }
        Action::Redirect(redirect) => redirect_response(redirect, &parts),
        Action::Forward(action) => {
            headers::apply_edits(&mut parts.headers, &route.request_headers);
            forward(
                c,
                &snapshot,
                parts,
                body,
                &route,
                action,
                regex_rewrite,
                grpc,
                outcome,
            )
            .await
        }
    };
    headers::apply_edits(response.headers_mut(), &route.response_headers);
    if let (Some(policy), Some(request_headers)) = (&cors, &request_headers) {
        policy.decorate(request_headers, response.headers_mut());
    }
    response
}

fn roll(percent: f64) -> bool {
    fastrand::f64() * 100.0 < percent
}

fn redirect_response(r: &Redirect, parts: &http::request::Parts) -> Response<Body> {
    let authority = super::router::authority_of(&parts.uri, &parts.headers);
    let (host, port) = super::router::split_port(authority);
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let host = r.host.as_deref().unwrap_or(host);
    let port = match (r.port, port) {
        (Some(p), _) => format!(":{p}"),
        (None, Some(p)) if r.host.is_none() => format!(":{p}"),
        _ => String::new(),
    };
    let original = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let path = match (&r.path, &r.prefix_rewrite) {
        (Some(p), _) => p.clone(),
        (None, Some(prefix)) => prefix.clone() + original.trim_start_matches('/'),
        (None, None) => original.to_string(),
    };
    let mut resp = Response::new(body::empty());
    *resp.status_mut() =
        StatusCode::from_u16(r.response_code as u16).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{host}{port}{path}")) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

fn pick_weighted(clusters: &[WeightedCluster]) -> Option<&WeightedCluster> {
    lb::by_weight(clusters, |c| c.weight, fastrand::u64(..))
}

fn request_hash(
    policies: &[HashPolicy],
    parts: &http::request::Parts,
    authority: &str,
    downstream: SocketAddr,
) -> Option<u64> {
    let mut combined: Option<u64> = None;
    for p in policies {
        let h = match p {
            // The authority, whichever way the request carried it (`Host` is not kept for an
            // HTTP/2 upstream).
            HashPolicy::Header(name)
                if name.eq_ignore_ascii_case("host") || name == ":authority" =>
            {
                (!authority.is_empty()).then(|| lb::stable_hash(authority.as_bytes()))
            }
            HashPolicy::Header(name) => parts
                .headers
                .get(name.as_str())
                .map(|v| lb::stable_hash(v.as_bytes())),
            HashPolicy::Cookie { name, .. } => parts
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name).then(|| lb::stable_hash(v.as_bytes()))
                }),
            HashPolicy::SourceIp => Some(lb::stable_hash(downstream.ip().to_string().as_bytes())),
            HashPolicy::QueryParameter(name) => parts
                .uri
                .query()
                .and_then(|q| super::router::query_param(q, name))
                .map(|v| lb::stable_hash(v.as_bytes())),
        };
        if let Some(h) = h {
            combined = Some(combined.map_or(h, |c| c.rotate_left(1) ^ h));
        }
    }
    combined
}

/// Envoy's retry-on conditions, decided on a response status (or a local failure).
fn retriable(retry_on: &[String], codes: &[u32], attempt: &Attempt) -> bool {
    retry_on.iter().any(|cond| match (cond.as_str(), attempt) {
        ("5xx", Attempt::Response { status, .. }) => *status >= 500,
        ("5xx" | "gateway-error" | "connect-failure" | "reset", Attempt::ConnectFailed) => true,
        ("5xx" | "gateway-error" | "reset", Attempt::Reset) => true,
        ("gateway-error", Attempt::Response { status, .. }) => matches!(status, 502..=504),
        ("retriable-4xx", Attempt::Response { status, .. }) => *status == 409,
        ("retriable-status-codes", Attempt::Response { status, .. }) => {
            codes.contains(&u32::from(*status))
        }
        ("refused-stream", Attempt::Refused) => true,
        (grpc_condition, Attempt::Response { grpc: Some(g), .. }) => matches!(
            (grpc_condition, *g),
            ("cancelled", 1)
                | ("deadline-exceeded", 4)
                | ("resource-exhausted", 8)
                | ("internal", 13)
                | ("unavailable", 14)
        ),
        _ => false,
    })
}

/// How one attempt went.
enum Attempt {
    Response { status: u16, grpc: Option<u32> },
    ConnectFailed,
    Reset,
    Refused,
}

/// The delay before retry `n` (1-based): random in [0, base × 2^n), at most 10 × base.
pub fn retry_backoff(base: Duration, n: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1 << n.min(16))
        .min(base.saturating_mul(10));
    ceiling.mul_f64(fastrand::f64())
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    c: &Arc<HttpConn>,
    snapshot: &crate::state::Snapshot,
    mut parts: http::request::Parts,
    body: Body,
    route: &Route,
    action: &RouteAction,
    regex_rewrite: Option<Arc<(regex::Regex, String)>>,
    grpc: bool,
    outcome: &mut Outcome,
) -> Response<Body> {
    let Some(weighted) = pick_weighted(&action.clusters) else {
        outcome.flag("NC");
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "no cluster", grpc);
    };
    let Some(cluster) = snapshot.clusters.get(&weighted.name).cloned() else {
        outcome.flag("NC");
        return local_reply(StatusCode::SERVICE_UNAVAILABLE, "no cluster", grpc);
    };
    outcome.cluster = Some(cluster.clone());
    outcome.service = cluster.service_labels.clone();
    headers::apply_edits(&mut parts.headers, &weighted.request_headers);

    // Upgrades (WebSocket) pass through when the route allows them.
    let upgrade = parts
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let upgrading = upgrade.as_ref().is_some_and(|u| {
        action.upgrades.iter().any(|a| a.eq_ignore_ascii_case(u))
            || c.upgrades.iter().any(|a| a.eq_ignore_ascii_case(u))
    });
    let downstream_upgrade = if upgrading {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    headers::strip_for_upstream(&mut parts.headers, upgrading);

    // Rewrites. Without them the upstream request reuses the downstream one's path and
    // authority bytes (shared, not copied).
    let original = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let path = if action.prefix_rewrite.is_some() || regex_rewrite.is_some() {
        let rewritten = headers::rewrite_path(
            original.as_str(),
            &route.matching.path,
            action.prefix_rewrite.as_deref(),
            regex_rewrite.as_deref(),
        );
        match PathAndQuery::try_from(rewritten) {
            Ok(p) => p,
            Err(_) => return local_reply(StatusCode::BAD_REQUEST, "invalid request target", grpc),
        }
    } else {
        original
    };
    let authority = match (&action.host_rewrite, parts.uri.authority()) {
        (Some(host), _) => HeaderValue::from_str(host)
            .ok()
            .map(UpstreamAuthority::Host),
        (None, Some(a)) => Some(UpstreamAuthority::Uri(a.clone())),
        (None, None) => parts
            .headers
            .get(http::header::HOST)
            .cloned()
            .map(UpstreamAuthority::Host),
    };
    // HTTP/2 carries the authority in the URI (`:authority`); HTTP/1.1 in `Host`.
    let absolute = cluster.settings.http2;
    let uri_authority = if absolute {
        parts.headers.remove(http::header::HOST);
        authority
            .as_ref()
            .and_then(UpstreamAuthority::uri_authority)
    } else {
        if let Some(v) = authority.as_ref().and_then(UpstreamAuthority::host_value)
            && parts.headers.get(http::header::HOST) != Some(&v)
        {
            parts.headers.insert(http::header::HOST, v);
        }
        None
    };
    let authority = authority.as_ref().map_or("", UpstreamAuthority::as_str);
    if c.direction == Direction::Outbound
        && let Some(v) = &c.proxy.peer_header
    {
        parts.headers.insert(super::PEER_HEADER, v.clone());
    }
    let hash = request_hash(&action.hash_policy, &parts, authority, c.downstream);

    let timeout = match action.timeout_ms {
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
        None => Some(DEFAULT_ROUTE_TIMEOUT),
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let retry = action.retry.as_ref();
    let max_attempts = retry.map_or(1, |r| 1 + r.num_retries);
    let per_try = retry
        .and_then(|r| r.per_try_timeout_ms)
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    let replay = Replay::default();
    let mut first_body = Some(if retry.is_some() || !action.mirrors.is_empty() {
        replay.record(body)
    } else {
        body
    });

    // Mirrors get the request once its body has been read (fire and forget).
    let mirror_targets: Vec<Arc<ClusterRuntime>> = action
        .mirrors
        .iter()
        .filter(|m| roll(m.percent))
        .filter_map(|m| snapshot.clusters.get(&m.cluster).cloned())
        .collect();

    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retry_permit = None;
    let mut attempt_n = 0u32;
    loop {
        attempt_n += 1;
        outcome.attempts = attempt_n;
        let body = match first_body.take() {
            Some(b) => b,
            None => match replay.again() {
                Some(b) => b,
                None => {
                    // The body could not be kept for another try.
                    return local_reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "upstream reset before the request body could be retried",
                        grpc,
                    );
                }
            },
        };
        let Some(uri) = headers::upstream_uri(&path, uri_authority.as_ref(), absolute) else {
            return local_reply(StatusCode::BAD_REQUEST, "invalid request target", grpc);
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = if attempt_n >= max_attempts && mirror_targets.is_empty() {
            // No other attempt or mirror will need them.
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        if attempt_n > 1 {
            request
                .headers_mut()
                .insert(headers::ATTEMPT_COUNT, HeaderValue::from(attempt_n));
        }
        *request.version_mut() = if absolute {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        let try_deadline = match (deadline, per_try) {
            (Some(d), Some(p)) => Some(d.min(Instant::now() + p)),
            (Some(d), None) => Some(d),
            (None, Some(p)) => Some(Instant::now() + p),
            (None, None) => None,
        };
        let (result, host) =
            attempt(c, &cluster, request, hash, &tried, try_deadline, outcome).await;
        if let Some(h) = &host {
            // Kept only for a next attempt to avoid (a request's one attempt allocates nothing).
            if attempt_n < max_attempts {
                tried.push(h.address);
            }
            outcome.upstream_host = Some(h.address);
            outcome.destination = Some(h.labels());
        }
        if attempt_n == 1 && !mirror_targets.is_empty() {
            mirror(&mirror_targets, &parts, &path, authority, &replay);
        }
        let (kind, response) = match result {
            AttemptResult::Response(r) => {
                let status = r.status().as_u16();
                let grpc_status = r
                    .headers()
                    .get(headers::GRPC_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse().ok());
                if let Some(h) = &host {
                    cluster.record(h, HostOutcome::Response(status));
                }
                (
                    Attempt::Response {
                        status,
                        grpc: grpc_status,
                    },
                    r,
                )
            }
            AttemptResult::Local(kind, reply) => {
                if let (Some(h), Attempt::ConnectFailed | Attempt::Reset) = (&host, &kind) {
                    cluster.record(h, HostOutcome::LocalFailure);
                }
                (kind, reply)
            }
            AttemptResult::Final(reply) => return reply,
        };
        // Envoy's retry decision: a retriable outcome is retried while the route's attempts
        // last (else `URX`, `upstream_rq_retry_limit_exceeded`) and the cluster's retry
        // budget has room (else `UO`, `upstream_rq_retry_overflow`).
        if !retry.is_some_and(|r| retriable(&r.retry_on, &r.retriable_status_codes, &kind)) {
            return finish_upgrade(response, downstream_upgrade, upgrading);
        }
        if attempt_n >= max_attempts {
            outcome.flag("URX");
            cluster
                .stats
                .retry_limit_exceeded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return finish_upgrade(response, downstream_upgrade, upgrading);
        }
        // One more try: within the retry budget and the overall deadline.
        if retry_permit.is_none() {
            retry_permit = cluster.limits.acquire(Resource::Retries);
            if retry_permit.is_none() {
                outcome.flag("UO");
                cluster
                    .stats
                    .retry_overflows
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return response;
            }
        }
        let base = retry
            .and_then(|r| r.backoff_base_ms)
            .map_or(DEFAULT_BACKOFF_BASE, Duration::from_millis);
        let wait = retry_backoff(base, attempt_n);
        if deadline.is_some_and(|d| Instant::now() + wait >= d) {
            return response;
        }
        cluster
            .stats
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(response);
        tokio::time::sleep(wait).await;
        if !retry.is_some_and(|r| r.retry_other_hosts) {
            tried.clear();
        }
    }
}

enum AttemptResult {
    Response(Response<Body>),
    /// A failure the proxy answers itself, which a retry may still fix.
    Local(Attempt, Response<Body>),
    /// A failure no retry fixes (overflow, no healthy host).
    Final(Response<Body>),
}

async fn attempt(
    c: &Arc<HttpConn>,
    cluster: &Arc<ClusterRuntime>,
    request: http::Request<Body>,
    hash: Option<u64>,
    tried: &[SocketAddr],
    deadline: Option<Instant>,
    outcome: &mut Outcome,
) -> (AttemptResult, Option<Arc<Host>>) {
    let grpc = super::is_grpc(request.headers());
    let Some(request_permit) = cluster.limits.acquire(Resource::Requests) else {
        outcome.flag("UO");
        return (
            AttemptResult::Final(local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                grpc,
            )),
            None,
        );
    };
    let host = match &cluster.config.discovery {
        Discovery::OriginalDst => c
            .captured
            .then(|| crate::upstream::simple_host(c.destination)),
        _ => cluster.pick(hash, tried),
    };
    let Some(host) = host else {
        outcome.flag("UH");
        return (
            AttemptResult::Final(local_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy upstream",
                grpc,
            )),
            None,
        );
    };
    cluster
        .stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    host.state()
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let work = async {
        let conn = match connection(cluster, &host, deadline).await {
            Ok(conn) => conn,
            Err(ConnFailure::Overflow) => {
                outcome.flag("UO");
                return AttemptResult::Final(local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                    grpc,
                ));
            }
            Err(ConnFailure::Connect(e)) => {
                outcome.flag("UF");
                cluster
                    .stats
                    .connect_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return AttemptResult::Local(
                    Attempt::ConnectFailed,
                    local_reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!(
                            "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: {e}"
                        ),
                        grpc,
                    ),
                );
            }
        };
        let active = ActiveRequest::new(request_permit, host.state().clone());
        let sent = conn
            .send(
                request,
                cluster.settings.max_requests_per_connection,
                Some(active),
            )
            .await;
        match sent {
            Ok(r) => AttemptResult::Response(r),
            Err(e) => {
                outcome.flag("UC");
                let kind = if e.refused() {
                    Attempt::Refused
                } else {
                    Attempt::Reset
                };
                AttemptResult::Local(
                    kind,
                    local_reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!(
                            "upstream connect error or disconnect/reset before headers. reset reason: {e}"
                        ),
                        grpc,
                    ),
                )
            }
        }
    };
    // `work` awaited in one place only: a future held in two states is stored twice, and the
    // request's whole future is moved on every spawn.
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let finished = tokio::select! {
        biased;
        r = work => Some(r),
        () = expired => None,
    };
    let result = match finished {
        Some(r) => r,
        None => {
            outcome.flag("UT");
            cluster
                .stats
                .timeouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            host.state()
                .failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            AttemptResult::Local(
                Attempt::Reset,
                local_reply(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream request timeout",
                    grpc,
                ),
            )
        }
    };
    (result, Some(host))
}

enum ConnFailure {
    Overflow,
    Connect(ConnectError),
}

/// What a request found when it looked for a connection.
enum Found {
    Pooled(Conn),
    /// Room to open one (and, for HTTP/2, this worker's turn to).
    Open(Permit, Option<Opening>),
    /// This worker's HTTP/2 connection, which the request waited for, failed to open.
    Failed(String),
}

/// A connection to `host`: a pooled one of this worker's, a new one within `max_connections`,
/// at the limit another worker's pooled one, or a place in the pending queue (within
/// `max_pending_requests`) until one of those frees up.
async fn connection(
    cluster: &Arc<ClusterRuntime>,
    host: &Arc<Host>,
    deadline: Option<Instant>,
) -> Result<Conn, ConnFailure> {
    let pool = host.state().pool().clone();
    let since = std::time::Instant::now();
    // This worker's pooled connection, else a new one within the limit, else (at the limit)
    // another worker's pooled one. HTTP/2: while another request of this worker opens its
    // connection, wait for it, and fail if it fails (as Envoy fails the requests queued on a
    // connection that cannot connect) rather than try again one after another.
    let available = || {
        if let Some(c) = pool.checkout(&cluster.settings, Reach::OwnWorker) {
            return Some(Found::Pooled(c));
        }
        let opening = if cluster.settings.http2 {
            if let Some(reason) = pool.failed_since(since) {
                return Some(Found::Failed(reason));
            }
            Some(pool.start_opening()?)
        } else {
            None
        };
        if let Some(permit) = cluster.limits.acquire(Resource::Connections) {
            return Some(Found::Open(permit, opening));
        }
        pool.checkout(&cluster.settings, Reach::AnyWorker)
            .map(Found::Pooled)
    };
    let take = |found: Found| async {
        match found {
            Found::Pooled(c) => Ok(c),
            Found::Failed(reason) => Err(ConnFailure::Connect(ConnectError::Waited(reason))),
            Found::Open(permit, opening) => {
                let opened = pool
                    .connect(host.address, host.mtls(), &cluster.settings, permit)
                    .await;
                match (&opened, opening) {
                    (Ok(_), _) => {
                        cluster
                            .stats
                            .connections_opened
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Whoever waited for this one learns why (the guard's drop wakes them).
                    (Err(e), Some(opening)) => opening.failed(e.to_string()),
                    (Err(_), None) => {}
                }
                opened.map_err(ConnFailure::Connect)
            }
        }
    };
    if let Some(found) = available() {
        return take(found).await;
    }
    let Some(_pending) = cluster.limits.acquire(Resource::Pending) else {
        return Err(ConnFailure::Overflow);
    };
    // Woken when a connection comes back to the pool or one closes; registered before looking,
    // so nothing freed in between is missed. A slow timer guards against anything else.
    let _waiting = (pool.freed.wait(), cluster.limits.connection_freed.wait());
    loop {
        let back = pool.freed.notified();
        let closed = cluster.limits.connection_freed.notified();
        tokio::pin!(back, closed);
        back.as_mut().enable();
        closed.as_mut().enable();
        if let Some(found) = available() {
            return take(found).await;
        }
        let freed = async {
            tokio::select! {
                () = back => {}
                () = closed => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        };
        match deadline {
            Some(d) => {
                if tokio::time::timeout_at(d, freed).await.is_err() {
                    return Err(ConnFailure::Overflow);
                }
            }
            None => freed.await,
        }
    }
}

fn mirror(
    targets: &[Arc<ClusterRuntime>],
    parts: &http::request::Parts,
    path: &PathAndQuery,
    authority: &str,
    replay: &Replay,
) {
    // Envoy sends the shadow to `<host>-shadow`.
    let shadow_authority = match super::router::split_port(authority) {
        (h, Some(p)) => format!("{h}-shadow:{p}"),
        (h, None) => format!("{h}-shadow"),
    };
    for cluster in targets {
        let cluster = cluster.clone();
        let method = parts.method.clone();
        let mut headers = parts.headers.clone();
        if let Ok(v) = HeaderValue::from_str(&shadow_authority) {
            headers.insert(http::header::HOST, v);
        }
        let path = path.clone();
        let authority = shadow_authority.clone();
        let replay = replay.clone();
        tokio::spawn(async move {
            // Wait for the original body to have been read.
            let mut body = None;
            for _ in 0..100 {
                if let Some(b) = replay.again() {
                    body = Some(b);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let Some(body) = body else { return };
            let Some(host) = cluster.pick(None, &[]) else {
                return;
            };
            let absolute = cluster.settings.http2;
            let uri_authority = http::uri::Authority::try_from(authority.as_str()).ok();
            let Some(uri) = headers::upstream_uri(&path, uri_authority.as_ref(), absolute) else {
                return;
            };
            let mut request = http::Request::new(body);
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.headers_mut() = headers;
            if absolute {
                request.headers_mut().remove(http::header::HOST);
                *request.version_mut() = http::Version::HTTP_2;
            }
            let Ok(conn) = connection(
                &cluster,
                &host,
                Some(Instant::now() + Duration::from_secs(5)),
            )
            .await
            else {
                return;
            };
            if let Ok(r) = conn
                .send(request, cluster.settings.max_requests_per_connection, None)
                .await
            {
                use http_body_util::BodyExt;
                let _ = r.into_body().collect().await;
            }
        });
    }
}

/// For a 101 answer to an allowed upgrade: splice the two upgraded connections.
fn finish_upgrade(
    mut response: Response<Body>,
    downstream: Option<hyper::upgrade::OnUpgrade>,
    upgrading: bool,
) -> Response<Body> {
    if !upgrading || response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let Some(downstream) = downstream else {
        return response;
    };
    let upstream = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (Ok(down), Ok(up)) = (downstream.await, upstream.await) else {
            return;
        };
        let mut down = hyper_util::rt::TokioIo::new(down);
        let mut up = hyper_util::rt::TokioIo::new(up);
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(conds: &[&str]) -> Vec<String> {
        conds.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_hash_on_host_or_authority_hashes_the_authority_however_it_came() {
        let downstream: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let (h1, _) = http::Request::builder()
            .uri("/")
            .header("host", "reviews:9080")
            .body(())
            .unwrap()
            .into_parts();
        // HTTP/2: the authority is in the URI, and `Host` is not kept for an HTTP/2 upstream.
        let (h2, _) = http::Request::builder()
            .uri("http://reviews:9080/")
            .body(())
            .unwrap()
            .into_parts();
        for name in ["host", "Host", ":authority"] {
            let by = [HashPolicy::Header(name.into())];
            let a = request_hash(&by, &h1, "reviews:9080", downstream);
            let b = request_hash(&by, &h2, "reviews:9080", downstream);
            assert!(a.is_some() && a == b, "{name}");
            let other = request_hash(&by, &h2, "ratings:9080", downstream);
            assert_ne!(a, other, "{name}");
        }
        let by = [HashPolicy::Header("x-user".into())];
        assert_eq!(request_hash(&by, &h2, "reviews:9080", downstream), None);
    }

    #[test]
    fn retry_on_conditions_as_envoy_reads_them() {
        let r = |status| Attempt::Response { status, grpc: None };
        assert!(retriable(&on(&["5xx"]), &[], &r(503)));
        assert!(!retriable(&on(&["5xx"]), &[], &r(404)));
        assert!(retriable(&on(&["gateway-error"]), &[], &r(504)));
        assert!(!retriable(&on(&["gateway-error"]), &[], &r(500)));
        assert!(retriable(
            &on(&["connect-failure"]),
            &[],
            &Attempt::ConnectFailed
        ));
        assert!(!retriable(&on(&["connect-failure"]), &[], &r(503)));
        assert!(retriable(&on(&["retriable-status-codes"]), &[418], &r(418)));
        assert!(retriable(&on(&["retriable-4xx"]), &[], &r(409)));
        let g = |code| Attempt::Response {
            status: 200,
            grpc: Some(code),
        };
        assert!(retriable(&on(&["unavailable"]), &[], &g(14)));
        assert!(!retriable(&on(&["unavailable"]), &[], &g(13)));
        assert!(retriable(&on(&["internal", "cancelled"]), &[], &g(13)));
        assert!(retriable(&on(&["refused-stream"]), &[], &Attempt::Refused));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        for n in 1..10 {
            let d = retry_backoff(Duration::from_millis(25), n);
            assert!(d <= Duration::from_millis(250), "{d:?}");
        }
        let spread: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| retry_backoff(Duration::from_millis(25), 3).as_micros())
            .collect();
        assert!(spread.len() > 10, "jittered");
    }

    #[test]
    fn weighted_clusters_follow_their_weights() {
        let wc = |name: &str, weight| WeightedCluster {
            name: name.into(),
            weight,
            request_headers: Default::default(),
            response_headers: Default::default(),
        };
        let clusters = vec![wc("a", 80), wc("b", 20), wc("c", 0)];
        let mut n = [0; 3];
        for _ in 0..10_000 {
            match pick_weighted(&clusters).unwrap().name.as_str() {
                "a" => n[0] += 1,
                "b" => n[1] += 1,
                _ => n[2] += 1,
            }
        }
        assert_eq!(n[2], 0);
        assert!((n[0] as f64 / 10_000.0 - 0.8).abs() < 0.02, "{n:?}");
    }
}
