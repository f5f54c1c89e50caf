//! Connections to one upstream host: HTTP/1.1 connections kept alive and reused (one request at a
//! time each, back in the pool when the response body ends), or a multiplexed HTTP/2
//! connection per worker. Every connection counts against its cluster's `max_connections`
//! until it closes. Each connection remembers the worker that opened it (its task runs there)
//! and requests take their own worker's first, so a request and its connection share a thread;
//! another worker's is taken only when no new connection may be opened. A connection without a
//! request for the cluster's idle timeout (Envoy's `common_http_protocol_options.idle_timeout`,
//! an hour unless a DestinationRule's `connectionPool.http.idleTimeout` says) is closed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use strait_identity::transport::ClientIo;
use strait_xds::cluster::UpstreamTls;

use super::limits::Permit;
use crate::identity::MeshIdentity;
use crate::idle::{Activity, InFlight};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy sends upstream or downstream.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// How to reach hosts of a cluster.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub connect_timeout: Duration,
    pub http2: bool,
    /// Pooled connections without a request this long are closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<u32>,
    /// `SO_MARK` on upstream sockets, so capture rules can let the proxy's own traffic out.
    pub mark: Option<u32>,
    /// The source address of upstream sockets (Envoy's `upstream_bind_config`).
    pub source: Option<std::net::IpAddr>,
    pub keepalive: Option<Duration>,
    /// Mesh mTLS to the hosts that have a sidecar (the cluster's `ISTIO_MUTUAL`).
    pub tls: Option<UpstreamTlsRuntime>,
}

/// A cluster's upstream TLS: mesh mTLS to the hosts that have a sidecar (what to verify, and
/// the identity to present), or TLS originated to every host (a DestinationRule's SIMPLE or
/// MUTUAL: its client configuration, or why it could not be made).
#[derive(Clone)]
pub enum UpstreamTlsRuntime {
    Mesh {
        config: Arc<UpstreamTls>,
        identity: Arc<MeshIdentity>,
    },
    Origination {
        sni: Option<String>,
        client: Result<Arc<rustls::ClientConfig>, String>,
    },
}

impl std::fmt::Debug for UpstreamTlsRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamTlsRuntime::Mesh { config, .. } => {
                f.debug_struct("Mesh").field("config", config).finish()
            }
            UpstreamTlsRuntime::Origination { sni, client } => f
                .debug_struct("Origination")
                .field("sni", sni)
                .field("ready", &client.is_ok())
                .finish(),
        }
    }
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Refused(std::io::Error),
    /// The mTLS handshake failed (or no certificate to present).
    Tls(String),
    Handshake(hyper::Error),
    Http2Handshake(h2::Error),
    /// The HTTP/2 connection another request was opening, which this one waited for, failed.
    Waited(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timeout"),
            ConnectError::Refused(e) => write!(f, "connect failed: {e}"),
            ConnectError::Tls(e) => write!(f, "mTLS failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
            ConnectError::Http2Handshake(e) => write!(f, "HTTP/2 handshake failed: {e}"),
            ConnectError::Waited(reason) => f.write_str(reason),
        }
    }
}

struct IdleH1 {
    sender: http1::SendRequest<Body>,
    used: u32,
    /// The worker whose runtime drives the connection.
    worker: usize,
    /// Its requests in flight (none while here) and since when it is idle; also what names it
    /// to its idle timer.
    activity: Arc<Activity>,
}

/// A worker's HTTP/2 connection.
struct SharedH2 {
    worker: usize,
    sender: h2::client::SendRequest<Bytes>,
    activity: Arc<Activity>,
}

/// Which workers' connections a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Only those opened on the caller's worker (the caller may open one of its own).
    OwnWorker,
    /// The caller's worker's first, then any (no new connection may be opened).
    AnyWorker,
}

/// The pool of one host.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<IdleH1>>,
    /// The HTTP/2 connection each worker opened.
    h2: Mutex<Vec<SharedH2>>,
    /// The workers opening an HTTP/2 connection right now.
    h2_opening: Mutex<Vec<usize>>,
    /// Each worker's last failure to open one: when, and why.
    h2_failed: Mutex<Vec<(usize, Instant, String)>>,
    /// Requests waiting in the pending queue are woken when a connection comes back or opens.
    pub freed: Capacity,
    /// Connections closed by the idle timeout (Envoy's `upstream_cx_idle_timeout`).
    pub idle_timeouts: std::sync::atomic::AtomicU64,
}

/// The calling worker is opening this host's HTTP/2 connection until dropped; dropping it (the
/// connection opened, failed, or the request gave up) wakes the requests waiting for it.
pub struct Opening {
    pool: Arc<Pool>,
    worker: usize,
}

impl Opening {
    /// The connection could not be opened: the requests that waited for it fail with `reason`.
    pub fn failed(self, reason: String) {
        let mut failed = self
            .pool
            .h2_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failed.retain(|(w, _, _)| *w != self.worker);
        failed.push((self.worker, Instant::now(), reason));
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        let mut opening = self
            .pool
            .h2_opening
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        opening.retain(|w| *w != self.worker);
        drop(opening);
        self.pool.freed.freed();
    }
}

/// Wakes the requests waiting for capacity when some frees up — without a lock on the hot
/// path while nobody waits.
#[derive(Debug, Default)]
pub struct Capacity {
    notify: tokio::sync::Notify,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Capacity {
    /// Capacity freed up: wake whoever waits.
    pub fn freed(&self) {
        if self.waiting.load(std::sync::atomic::Ordering::Acquire) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Counts the caller as waiting until the guard drops; take it before looking for capacity,
    /// then await a [`Capacity::notified`] made before looking.
    pub fn wait(&self) -> WaitGuard<'_> {
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        WaitGuard(self)
    }

    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// See [`Capacity::wait`].
pub struct WaitGuard<'a>(&'a Capacity);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A request under way to a host: its place under the cluster's active-request cap and its count
/// on the host (which least-request balancing reads), both held until its response body ends
/// (Envoy's `upstream_rq_active`).
pub struct ActiveRequest {
    _permit: Permit,
    host: Arc<super::HostState>,
}

impl ActiveRequest {
    pub fn new(permit: Permit, host: Arc<super::HostState>) -> ActiveRequest {
        host.active_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ActiveRequest {
            _permit: permit,
            host,
        }
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.host
            .active_requests
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A connection ready for one request, counting it in flight until its response ends.
pub enum Conn {
    H1 {
        sender: http1::SendRequest<Body>,
        used: u32,
        pool: Weak<Pool>,
        /// The worker whose runtime drives the connection.
        worker: usize,
        in_flight: InFlight,
    },
    H2 {
        sender: h2::client::SendRequest<Bytes>,
        pool: Weak<Pool>,
        in_flight: InFlight,
    },
}

/// Why a request got no response from its host.
#[derive(Debug)]
pub enum SendError {
    Http1(hyper::Error),
    Http2(h2::Error),
}

impl SendError {
    /// The host did not process the request, so it is safe to retry (what `retryOn:
    /// refused-stream` retries): it refused the stream (HTTP/2 `REFUSED_STREAM`), or the stream
    /// was past the last one a graceful GOAWAY said the host would process.
    pub fn refused(&self) -> bool {
        match self {
            SendError::Http1(_) => false,
            SendError::Http2(e) => {
                e.reason() == Some(h2::Reason::REFUSED_STREAM)
                    || (e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR))
            }
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Http1(e) => e.fmt(f),
            SendError::Http2(e) => e.fmt(f),
        }
    }
}

impl Pool {
    /// A ready connection from the pool, if there is one within `reach`.
    pub fn checkout(self: &Arc<Self>, settings: &ConnectSettings, reach: Reach) -> Option<Conn> {
        let worker = crate::workers::current();
        if settings.http2 {
            let h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
            let own = h2.iter().find(|c| c.worker == worker);
            let any = || h2.first().filter(|_| reach == Reach::AnyWorker);
            // Counted in flight under the lock, so its idle timer cannot close it meanwhile.
            return own.or_else(any).map(|c| Conn::H2 {
                sender: c.sender.clone(),
                pool: Arc::downgrade(self),
                in_flight: c.activity.begin(),
            });
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The most recently returned first (the warmest); stale ones met on the way (closed by
        // the host, or idle too long) are dropped.
        let mut take = |wanted: &dyn Fn(&IdleH1) -> bool| {
            while let Some(p) = idle.iter().rposition(wanted) {
                let c = idle.remove(p);
                let now = tokio::time::Instant::now();
                let fresh = settings
                    .idle_timeout
                    .is_none_or(|t| c.activity.check(now, t) != crate::idle::Check::Expired);
                if c.sender.is_ready() && fresh {
                    return Some(c);
                }
            }
            None
        };
        let c = take(&|c| c.worker == worker).or_else(|| take(&|_| reach == Reach::AnyWorker))?;
        Some(Conn::H1 {
            in_flight: c.activity.begin(),
            sender: c.sender,
            used: c.used,
            pool: Arc::downgrade(self),
            worker: c.worker,
        })
    }

    /// The idle timer of the connection `activity` belongs to fired: takes it out of the pool
    /// and says whether it may close — not if a request took it since.
    fn close_idle(&self, activity: &Arc<Activity>, timeout: Duration) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = idle.iter().position(|c| Arc::ptr_eq(&c.activity, activity)) {
            idle.remove(p);
        } else {
            drop(idle);
            // Not idle in the pool: an HTTP/2 connection, or an HTTP/1.1 one a request took
            // (counted in under the lock above) or that will not be reused. Requests take
            // HTTP/2 connections under this lock: decide again under it.
            let mut h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
            if activity.check(tokio::time::Instant::now(), timeout) != crate::idle::Check::Expired {
                return false;
            }
            h2.retain(|c| !Arc::ptr_eq(&c.activity, activity));
        }
        self.idle_timeouts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// An HTTP/2 connection closed, or failed a request before opening its stream (it is going
    /// away): out of the pool, so requests open another.
    fn forget_h2(&self, activity: &Arc<Activity>) {
        let mut h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        h2.retain(|c| !Arc::ptr_eq(&c.activity, activity));
    }

    /// The right to open the calling worker's HTTP/2 connection, unless one of its requests is
    /// opening it already: the others wait for that one (as Envoy queues requests on a
    /// connecting HTTP/2 connection) rather than each opening its own — a burst of requests
    /// to a new host would otherwise open a connection per request.
    pub fn start_opening(self: &Arc<Self>) -> Option<Opening> {
        let worker = crate::workers::current();
        let mut opening = self.h2_opening.lock().unwrap_or_else(|e| e.into_inner());
        if opening.contains(&worker) {
            return None;
        }
        opening.push(worker);
        Some(Opening {
            pool: self.clone(),
            worker,
        })
    }

    /// Why the calling worker's HTTP/2 connection failed to open, if it did at or after `since`.
    pub fn failed_since(&self, since: Instant) -> Option<String> {
        let worker = crate::workers::current();
        let failed = self.h2_failed.lock().unwrap_or_else(|e| e.into_inner());
        failed
            .iter()
            .find(|(w, at, _)| *w == worker && *at >= since)
            .map(|(_, _, reason)| reason.clone())
    }

    fn put_back(&self, r: ReturnToPool, in_flight: InFlight) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push(IdleH1 {
            sender: r.sender,
            used: r.used,
            worker: r.worker,
            activity: in_flight.activity().clone(),
        });
        drop(idle);
        // Idle from now (after it is back, so its timer finds it there).
        drop(in_flight);
        self.freed.freed();
    }

    /// Idle HTTP/1.1 connections (for the admin API).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Opens a new connection; `permit` holds its place in the cluster's connection limit
    /// until it closes.
    pub async fn connect(
        self: &Arc<Self>,
        addr: SocketAddr,
        sidecar: bool,
        settings: &ConnectSettings,
        permit: Permit,
    ) -> Result<Conn, ConnectError> {
        // Connecting (TCP, the TLS handshake, HTTP/2's) is a large future on the rare path:
        // boxed, it does not grow every request's future, which is moved whole when spawned.
        Box::pin(self.open(addr, sidecar, settings, permit)).await
    }

    async fn open(
        self: &Arc<Self>,
        addr: SocketAddr,
        sidecar: bool,
        settings: &ConnectSettings,
        permit: Permit,
    ) -> Result<Conn, ConnectError> {
        let stream = connect_stream(addr, sidecar, settings).await?;
        let activity = Activity::new(tokio::time::Instant::now());
        let in_flight = activity.begin();
        let (pool, timeout) = (Arc::downgrade(self), settings.idle_timeout);
        if settings.http2 {
            let (sender, conn) = super::http2::handshake(stream)
                .await
                .map_err(ConnectError::Http2Handshake)?;
            tokio::spawn(drive(conn, pool, activity.clone(), timeout, permit));
            let worker = crate::workers::current();
            let mut h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
            h2.retain(|c| c.worker != worker);
            h2.push(SharedH2 {
                worker,
                sender: sender.clone(),
                activity,
            });
            drop(h2);
            self.freed.freed();
            Ok(Conn::H2 {
                sender,
                pool: Arc::downgrade(self),
                in_flight,
            })
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
                .map_err(ConnectError::Handshake)?;
            let conn = conn.with_upgrades();
            tokio::spawn(drive(conn, pool, activity, timeout, permit));
            Ok(Conn::H1 {
                sender,
                used: 0,
                pool: Arc::downgrade(self),
                worker: crate::workers::current(),
                in_flight,
            })
        }
    }
}

/// How long a connection closed for idleness may take to say goodbye (HTTP/2's GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Drives a connection until it closes or its idle timer closes it; its place under the
/// cluster's connection limit frees up then.
async fn drive<C: Future>(
    conn: C,
    pool: Weak<Pool>,
    activity: Arc<Activity>,
    timeout: Option<Duration>,
    permit: Permit,
) {
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            () = activity.expired(timeout) => {
                if let Some(timeout) = timeout
                    && pool.upgrade().is_none_or(|p| p.close_idle(&activity, timeout))
                {
                    tracing::debug!("upstream connection idle for the idle timeout; closing");
                    // No request can take it now. Let it close itself (bounded, should a
                    // stray handle keep it open): an HTTP/2 connection then sends GOAWAY
                    // (NO_ERROR) first, as Envoy does, so the host sees a close, not a loss.
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
                    break;
                }
            }
        }
    }
    // Closed (by the host, an error, or the timer): no request may take it any more.
    if let Some(pool) = pool.upgrade() {
        pool.forget_h2(&activity);
    }
    drop(permit);
}

/// A connection to `addr`: TLS when the cluster originates it — mesh mTLS that is automatic
/// only to hosts with a sidecar (`sidecar`) — plaintext otherwise.
pub async fn connect_stream(
    addr: SocketAddr,
    sidecar: bool,
    settings: &ConnectSettings,
) -> Result<ClientIo, ConnectError> {
    let tcp = connect_tcp(addr, settings).await?;
    let (config, sni) = match &settings.tls {
        Some(UpstreamTlsRuntime::Mesh { config, identity }) if sidecar || !config.auto_mtls => (
            identity.client_config(config).map_err(ConnectError::Tls)?,
            // Istio's SNI (`outbound_.<port>_.<subset>_.<host>`) lets an east-west gateway
            // route the connection without terminating it.
            config.sni.clone(),
        ),
        Some(UpstreamTlsRuntime::Origination { sni, client }) => {
            (client.clone().map_err(ConnectError::Tls)?, sni.clone())
        }
        _ => return Ok(ClientIo::Plain(tcp)),
    };
    let sni = sni.unwrap_or_else(|| addr.ip().to_string());
    let name = rustls::pki_types::ServerName::try_from(sni)
        .map_err(|e| ConnectError::Tls(format!("SNI: {e}")))?;
    let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    let stream = tokio::time::timeout(settings.connect_timeout, handshake)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    Ok(ClientIo::Tls(Box::new(stream)))
}

/// A TCP connection to `addr` with the cluster's timeout, keepalive and mark.
pub async fn connect_tcp(
    addr: SocketAddr,
    settings: &ConnectSettings,
) -> Result<TcpStream, ConnectError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(ConnectError::Refused)?;
    if let Some(mark) = settings.mark {
        socket2::SockRef::from(&socket)
            .set_mark(mark)
            .map_err(ConnectError::Refused)?;
    }
    if let Some(ip) = settings.source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(ConnectError::Refused)?;
    }
    if let Some(k) = settings.keepalive {
        let ka = socket2::TcpKeepalive::new().with_time(k);
        socket2::SockRef::from(&socket)
            .set_tcp_keepalive(&ka)
            .map_err(ConnectError::Refused)?;
    }
    let stream = tokio::time::timeout(settings.connect_timeout, socket.connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Refused)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl Conn {
    /// Sends a request; an HTTP/1.1 connection goes back to its pool when the response body
    /// has been read to the end (unless it has served its maximum of requests). `active` is
    /// held as long.
    pub async fn send(
        self,
        request: http::Request<Body>,
        max_requests: Option<u32>,
        active: Option<ActiveRequest>,
    ) -> Result<http::Response<Body>, SendError> {
        use http_body_util::BodyExt;
        match self {
            Conn::H2 {
                sender,
                pool,
                in_flight,
            } => {
                let r = match super::http2::send(sender, request).await {
                    Ok(r) => r,
                    Err(e) => {
                        if (e.is_go_away() || e.is_io())
                            && let Some(pool) = pool.upgrade()
                        {
                            // Going away or broken: the next request opens another.
                            pool.forget_h2(in_flight.activity());
                        }
                        return Err(SendError::Http2(e));
                    }
                };
                Ok(r.map(|inner| {
                    PooledBody {
                        inner,
                        back: None,
                        in_flight: Some(in_flight),
                        active,
                    }
                    .boxed_unsync()
                }))
            }
            Conn::H1 {
                mut sender,
                used,
                pool,
                worker,
                in_flight,
            } => {
                let upgrade = request.headers().contains_key(http::header::UPGRADE);
                let r = sender
                    .send_request(request)
                    .await
                    .map_err(SendError::Http1)?;
                let used = used + 1;
                let reusable = !upgrade
                    && r.status() != http::StatusCode::SWITCHING_PROTOCOLS
                    && max_requests.is_none_or(|m| used < m);
                let back = reusable.then_some(ReturnToPool {
                    sender,
                    used,
                    pool,
                    worker,
                });
                Ok(r.map(|b| {
                    let mut body = PooledBody {
                        inner: b,
                        back,
                        in_flight: Some(in_flight),
                        active,
                    };
                    if body.inner.is_end_stream() {
                        // Nothing to read (HEAD, 204, Content-Length: 0): free now.
                        body.release();
                    }
                    body.boxed_unsync()
                }))
            }
        }
    }
}

struct ReturnToPool {
    sender: http1::SendRequest<Body>,
    used: u32,
    pool: Weak<Pool>,
    worker: usize,
}

/// A response body that counts its request in flight on its connection until it ends (then an
/// HTTP/1.1 connection that may serve again goes back to the pool).
struct PooledBody<B> {
    inner: B,
    back: Option<ReturnToPool>,
    in_flight: Option<InFlight>,
    active: Option<ActiveRequest>,
}

impl<B> PooledBody<B> {
    fn release(&mut self) {
        // The request is over with its body.
        drop(self.active.take());
        let in_flight = self.in_flight.take();
        if let Some(r) = self.back.take()
            && let Some(pool) = r.pool.upgrade()
            && let Some(in_flight) = in_flight
        {
            pool.put_back(r, in_flight);
        }
    }
}

impl<B> HttpBody for PooledBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::limits::{Limits, Resource};
    use crate::workers::Workers;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn settings() -> ConnectSettings {
        ConnectSettings {
            connect_timeout: Duration::from_secs(5),
            http2: false,
            idle_timeout: Some(Duration::from_secs(60)),
            max_requests_per_connection: None,
            mark: None,
            source: None,
            keepalive: None,
            tls: None,
        }
    }

    /// An HTTP/1.1 server answering every request on a connection with an empty 200.
    async fn server() -> SocketAddr {
        server_sending(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", b"").await
    }

    /// An HTTP/1.1 server answering every request with `head`, and 300 ms later `body_later`.
    async fn server_sending(head: &'static [u8], body_later: &'static [u8]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(head).await.is_err() {
                            break;
                        }
                        if !body_later.is_empty() {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            if s.write_all(body_later).await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// Runs `f` on worker `index` and waits for its answer.
    fn on<T: Send + 'static>(
        workers: &Workers,
        index: usize,
        f: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        workers.handles()[index].spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    /// Two workers, one host's pool, and a server behind it.
    struct Fixture {
        workers: Workers,
        pool: Arc<Pool>,
        limits: Arc<Limits>,
        addr: SocketAddr,
        settings: ConnectSettings,
    }

    impl Fixture {
        async fn new() -> Fixture {
            Fixture {
                workers: Workers::start(2, None).unwrap(),
                pool: Arc::new(Pool::default()),
                limits: Limits::new(None),
                addr: server().await,
                settings: settings(),
            }
        }

        /// Worker `index` opens a connection and makes a request on it; the connection goes
        /// back to the pool when the response ends.
        fn open_and_use(&self, index: usize) {
            let (pool, limits, addr) = (self.pool.clone(), self.limits.clone(), self.addr);
            let settings = self.settings.clone();
            on(&self.workers, index, async move {
                let permit = limits.acquire(Resource::Connections).unwrap();
                let conn = pool.connect(addr, false, &settings, permit).await.unwrap();
                let request = http::Request::get(format!("http://{addr}/"))
                    .body(Body::default())
                    .unwrap();
                let response = conn.send(request, None, None).await.unwrap();
                assert_eq!(response.status(), 200);
                use http_body_util::BodyExt;
                response.into_body().collect().await.unwrap();
            });
        }

        /// What worker `index` checks out within `reach`: the worker owning that connection.
        fn checkout(&self, index: usize, reach: Reach) -> Option<usize> {
            let (pool, settings) = (self.pool.clone(), self.settings.clone());
            on(&self.workers, index, async move {
                match pool.checkout(&settings, reach)? {
                    Conn::H1 { worker, .. } => Some(worker),
                    Conn::H2 { .. } => panic!("an HTTP/1.1 connection"),
                }
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_request_takes_its_own_workers_connection_and_another_workers_only_when_told() {
        let f = Fixture::new().await;
        f.open_and_use(0);
        assert_eq!(f.pool.idle_count(), 1);
        // Worker 1 has none of its own; at the limit it may take worker 0's.
        assert_eq!(f.checkout(1, Reach::OwnWorker), None);
        assert_eq!(f.pool.idle_count(), 1, "looking does not take it");
        assert_eq!(f.checkout(1, Reach::AnyWorker), Some(0));
        assert_eq!(f.pool.idle_count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn one_request_per_worker_opens_its_http2_connection_at_a_time() {
        let f = Fixture::new().await;
        let pool = f.pool.clone();
        let (first, second, other) = on(&f.workers, 0, async move {
            let first = pool.start_opening();
            let second = pool.start_opening().is_some();
            let other = pool.h2_opening.lock().unwrap().clone();
            (first, second, other)
        });
        assert!(first.is_some() && !second, "the second waits for the first");
        assert_eq!(other, [0]);
        let pool = f.pool.clone();
        assert!(
            on(&f.workers, 1, async move { pool.start_opening().is_some() }),
            "another worker opens its own"
        );
        drop(first);
        let pool = f.pool.clone();
        let (next, failure_seen) = on(&f.workers, 0, async move {
            let since = Instant::now();
            let next = pool.start_opening();
            let failed = next.map(|o| o.failed("connect timeout".into()));
            (failed.is_some(), pool.failed_since(since))
        });
        assert!(next, "once it is done (opened or failed) the next may");
        assert_eq!(
            failure_seen.as_deref(),
            Some("connect timeout"),
            "waiters see why"
        );
        let pool = f.pool.clone();
        let later = on(
            &f.workers,
            0,
            async move { pool.failed_since(Instant::now()) },
        );
        assert_eq!(later, None, "a request arriving after it tries again");
        let pool = f.pool.clone();
        let elsewhere = on(&f.workers, 1, async move {
            pool.failed_since(Instant::now() - Duration::from_secs(60))
        });
        assert_eq!(elsewhere, None, "another worker's connection is its own");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn each_worker_gets_its_own_connection_back_before_anothers() {
        let f = Fixture::new().await;
        f.open_and_use(1);
        f.open_and_use(0);
        assert_eq!(f.pool.idle_count(), 2);
        // Worker 1's is the older one, further from the top of the idle stack.
        assert_eq!(f.checkout(1, Reach::AnyWorker), Some(1));
        assert_eq!(f.checkout(0, Reach::OwnWorker), Some(0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_idle_connection_closes_after_the_idle_timeout_and_one_in_use_does_not() {
        let mut f = Fixture::new().await;
        f.settings.idle_timeout = Some(Duration::from_millis(200));
        let open = |f: &Fixture| f.limits.in_use(Resource::Connections);
        let wait_closed = |f: &Fixture| {
            for _ in 0..100 {
                if open(f) == 0 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("the idle connection is still open");
        };
        f.open_and_use(0);
        assert_eq!((f.pool.idle_count(), open(&f)), (1, 1));
        wait_closed(&f);
        assert_eq!(f.pool.idle_count(), 0, "taken out of the pool");
        assert_eq!(
            f.pool
                .idle_timeouts
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );

        // Taken out for a request for three timeouts: not closed under it.
        f.open_and_use(1);
        let (pool, settings) = (f.pool.clone(), f.settings.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        f.workers.handles()[1].spawn(async move {
            let conn = pool.checkout(&settings, Reach::OwnWorker);
            let _ = tx.send(conn.is_some());
            tokio::time::sleep(Duration::from_millis(600)).await;
            drop(conn);
        });
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(open(&f), 1, "in use: still open");
        assert_eq!(
            f.pool
                .idle_timeouts
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        wait_closed(&f);
    }

    /// A server's side of a connection, keeping what it read from the client.
    struct Recording {
        io: TcpStream,
        read: Arc<Mutex<Vec<u8>>>,
    }

    impl tokio::io::AsyncRead for Recording {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.io).poll_read(cx, buf);
            let mut read = self.read.lock().unwrap();
            read.extend_from_slice(&buf.filled()[before..]);
            polled
        }
    }

    impl tokio::io::AsyncWrite for Recording {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// An HTTP/2 server answering every request with an empty 200; each connection's bytes
    /// from the client come out of the receiver once it has ended.
    async fn h2_server() -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let read = Arc::new(Mutex::new(Vec::new()));
                    let recording = Recording {
                        io,
                        read: read.clone(),
                    };
                    let mut conn = h2::server::handshake(recording).await.unwrap();
                    while let Some(Ok((_, mut respond))) = conn.accept().await {
                        respond
                            .send_response(http::Response::new(()), true)
                            .unwrap();
                    }
                    drop(conn);
                    let _ = tx.send(std::mem::take(&mut *read.lock().unwrap()));
                });
            }
        });
        (addr, rx)
    }

    /// The error codes of the GOAWAY frames in what an HTTP/2 client sent.
    fn go_aways(sent: &[u8]) -> Vec<u32> {
        let mut frames = sent.get(24..).unwrap_or_default();
        let mut codes = Vec::new();
        while frames.len() >= 9 {
            let len = u32::from_be_bytes([0, frames[0], frames[1], frames[2]]) as usize;
            let payload = &frames[9..(9 + len).min(frames.len())];
            if frames[3] == 0x7 && payload.len() >= 8 {
                codes.push(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
            frames = &frames[(9 + len).min(frames.len())..];
        }
        codes
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_http2_connection_closed_for_idleness_says_goaway_first() {
        let (addr, ended) = h2_server().await;
        let mut f = Fixture {
            addr,
            ..Fixture::new().await
        };
        f.settings.http2 = true;
        f.settings.idle_timeout = Some(Duration::from_millis(200));
        let (pool, limits, settings) = (f.pool.clone(), f.limits.clone(), f.settings.clone());
        let status = on(&f.workers, 0, async move {
            let permit = limits.acquire(Resource::Connections).unwrap();
            let conn = pool.connect(addr, false, &settings, permit).await.unwrap();
            let request = http::Request::get(format!("http://{addr}/"))
                .body(Body::default())
                .unwrap();
            conn.send(request, None, None).await.unwrap().status()
        });
        assert_eq!(status, 200);
        let sent = ended
            .recv_timeout(Duration::from_secs(5))
            .expect("the idle connection closed");
        assert_eq!(
            go_aways(&sent),
            [0],
            "one GOAWAY, NO_ERROR, before the close"
        );
        for _ in 0..100 {
            if f.limits.in_use(Resource::Connections) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            f.limits.in_use(Resource::Connections),
            0,
            "its place is free"
        );
        assert_eq!(
            f.pool
                .idle_timeouts
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_request_counts_as_active_until_its_response_body_ends() {
        let f = Fixture {
            // The head at once, the body 300 ms later.
            addr: server_sending(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"hello").await,
            ..Fixture::new().await
        };
        let (pool, limits, addr) = (f.pool.clone(), f.limits.clone(), f.addr);
        let host = Arc::new(super::super::HostState::default());
        let counts = on(&f.workers, 0, async move {
            let active = || {
                (
                    limits.in_use(Resource::Requests),
                    host.active_requests
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            };
            let permit = limits.acquire(Resource::Connections).unwrap();
            let conn = pool
                .connect(addr, false, &settings(), permit)
                .await
                .unwrap();
            let request = http::Request::get(format!("http://{addr}/"))
                .body(Body::default())
                .unwrap();
            let counted =
                ActiveRequest::new(limits.acquire(Resource::Requests).unwrap(), host.clone());
            let response = conn.send(request, None, Some(counted)).await.unwrap();
            let at_head = active();
            use http_body_util::BodyExt;
            response.into_body().collect().await.unwrap();
            (at_head, active())
        });
        assert_eq!(counts.0, (1, 1), "the head is in, the body not yet");
        assert_eq!(counts.1, (0, 0), "the body has ended");
    }

    #[test]
    fn an_idle_timer_closes_only_a_connection_no_request_holds() {
        let pool = Pool::default();
        let timeout = Duration::from_millis(10);
        let opened = tokio::time::Instant::now() - Duration::from_secs(1);
        let used = Activity::new(opened);
        let request = used.begin();
        assert!(!pool.close_idle(&used, timeout), "a request holds it");
        drop(request);
        assert!(
            !pool.close_idle(&used, timeout),
            "idle since the request ended, not for the timeout yet"
        );
        // In neither list (an HTTP/1.1 connection that will not be reused, say) and unused
        // past the timeout: closed, rather than its timer firing again and again.
        let unused = Activity::new(opened);
        assert!(pool.close_idle(&unused, timeout));
        assert_eq!(
            pool.idle_timeouts
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
