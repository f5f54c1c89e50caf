//! Listeners: binds what the configuration says to bind (and lets go of what it no longer
//! names, leaving open connections alone), accepts connections on every worker, recovers a
//! captured connection's original destination (`SO_ORIGINAL_DST`), hands it to the listener for
//! that destination, detects its protocol when asked, and runs the chosen filter chain.

pub mod balance;
pub mod chain;
pub mod own_tls;
pub mod sniff;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strait_xds::listener::{Direction, NetworkFilter, RouteSource, TcpProxy};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::Proxy;
use crate::authz::Facts;
use crate::http::{self, HttpConn, RouteRef};
use crate::state::{ListenerRuntime, Termination};
use crate::tcp::{self, TcpConn};
use balance::{Balancer, ListenerBalance, Serving};
use chain::ConnectionFacts;

/// How long to wait for a client's first bytes when the protocol must be detected (Istio's
/// former default); a silent client is then treated as opaque TCP.
pub const DETECTION_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a peer has to finish its mTLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound listeners.
pub struct Bound {
    /// Each listener's address and its accept loop on every worker.
    running: HashMap<String, (SocketAddr, Vec<JoinHandle<()>>)>,
    /// Listeners that could not be bound, with the reason.
    pub errors: Arc<Mutex<HashMap<String, String>>>,
    /// The runtimes of the workers that accept and serve connections.
    workers: Arc<[Handle]>,
    /// Which worker serves each accepted connection.
    balancer: Arc<Balancer>,
}

impl Bound {
    pub fn new(
        errors: Arc<Mutex<HashMap<String, String>>>,
        workers: Vec<Handle>,
        metrics: &crate::metrics::Metrics,
    ) -> Bound {
        let balancer = Balancer::new(
            (0..workers.len())
                .map(|w| metrics.worker_connections(w))
                .collect(),
        );
        Bound {
            running: HashMap::new(),
            errors,
            workers: workers.into(),
            balancer,
        }
    }

    /// Binds new listeners and stops accepting on removed ones.
    pub async fn reconcile(&mut self, proxy: &Arc<Proxy>) {
        let snapshot = proxy.snapshot.load_full();
        let wanted: HashMap<&String, SocketAddr> = snapshot
            .listeners
            .iter()
            .filter(|(_, l)| l.socket().is_some_and(|s| s.bind_to_port))
            .map(|(n, l)| (n, local_address(l.address, proxy.wildcard_bind)))
            .collect();
        self.running.retain(|name, (addr, tasks)| {
            let keep = wanted.get(name) == Some(addr);
            if !keep {
                info!(listener = %name, address = %addr, "listener removed; its HTTP connections drain, TCP streams run to their end");
                tasks.iter().for_each(JoinHandle::abort);
            }
            keep
        });
        for (name, addr) in wanted {
            if self.running.contains_key(name) {
                continue;
            }
            match bind(addr).and_then(|l| self.accept_on_workers(proxy, name, &l)) {
                Ok(tasks) => {
                    info!(listener = %name, address = %addr, "listening");
                    self.errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(name);
                    self.running.insert(name.clone(), (addr, tasks));
                }
                Err(e) => {
                    warn!(listener = %name, address = %addr, error = %e, "cannot bind listener");
                    self.errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone(), format!("cannot bind {addr}: {e}"));
                }
            }
        }
    }

    /// An accept loop on every worker, each on its own descriptor of the one listening socket:
    /// whichever worker is free first takes the next connection and hands it to the worker
    /// serving the fewest of this listener's (then of all), which serves it to its end.
    fn accept_on_workers(
        &self,
        proxy: &Arc<Proxy>,
        name: &str,
        listener: &std::net::TcpListener,
    ) -> std::io::Result<Vec<JoinHandle<()>>> {
        let name: Arc<str> = Arc::from(name);
        let balance = self.balancer.listener();
        let mut tasks: Vec<JoinHandle<()>> = Vec::with_capacity(self.workers.len());
        for worker in self.workers.iter() {
            let listener = match listener.try_clone() {
                Ok(l) => l,
                Err(e) => {
                    // Out of descriptors: no half-running listener.
                    tasks.iter().for_each(JoinHandle::abort);
                    return Err(e);
                }
            };
            let (proxy, name) = (proxy.clone(), name.clone());
            let (workers, balance) = (self.workers.clone(), balance.clone());
            tasks.push(worker.spawn(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(proxy, name, listener, workers, balance).await,
                    Err(e) => warn!(listener = %name, error = %e, "a worker cannot accept on this listener"),
                }
            }));
        }
        Ok(tasks)
    }

    pub fn stop_all(&mut self) {
        for (_, (_, tasks)) in self.running.drain() {
            tasks.iter().for_each(JoinHandle::abort);
        }
    }
}

/// Where a listener configured at `addr` binds: a wildcard address becomes `wildcard_bind`
/// (of the same family) when the proxy has one.
fn local_address(addr: SocketAddr, wildcard_bind: Option<std::net::IpAddr>) -> SocketAddr {
    match wildcard_bind {
        Some(ip) if addr.ip().is_unspecified() && ip.is_ipv4() == addr.is_ipv4() => {
            SocketAddr::new(ip, addr.port())
        }
        _ => addr,
    }
}

/// A non-blocking listening socket, not yet tied to any runtime.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    name: Arc<str>,
    listener: TcpListener,
    workers: Arc<[Handle]>,
    balance: Arc<ListenerBalance>,
) {
    let me = crate::workers::current();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (worker, serving) = balance.assign(me);
                debug!(listener = %name, %peer, accepted_on = me, served_on = worker, "connection accepted");
                let (proxy, name) = (proxy.clone(), name.clone());
                match workers.get(worker) {
                    Some(other) if worker != me => {
                        hand_off(other, proxy, name, stream, peer, serving);
                    }
                    _ => {
                        tokio::spawn(async move {
                            handle(proxy, name, stream, peer).await;
                            drop(serving);
                        });
                    }
                }
            }
            Err(e) => {
                // Out of descriptors and the like: back off a little rather than spin.
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves an accepted connection on another worker: registered again with that worker's
/// reactor, counted against it until it ends.
fn hand_off(
    other: &Handle,
    proxy: Arc<Proxy>,
    name: Arc<str>,
    stream: TcpStream,
    peer: SocketAddr,
    serving: Serving,
) {
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            warn!(listener = %name, %peer, error = %e, "cannot hand a connection to another worker; closing");
            return;
        }
    };
    other.spawn(async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => handle(proxy, name, stream, peer).await,
            Err(e) => {
                warn!(listener = %name, %peer, error = %e, "a worker cannot take over a connection; closing")
            }
        }
        drop(serving);
    });
}

/// The destination the client meant, before iptables redirected it here.
fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let original = if local.is_ipv4() {
        sock.original_dst_v4().ok()?
    } else {
        sock.original_dst_v6().ok()?
    };
    original.as_socket()
}

async fn detect(stream: &TcpStream) -> sniff::Detected {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + DETECTION_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return sniff::Detected::Opaque,
        };
        if n == 0 {
            return sniff::Detected::Opaque;
        }
        if let Some(d) = sniff::detect(&buf[..n]) {
            return d;
        }
        if n == buf.len() {
            if buf.len() >= sniff::MAX_PEEK {
                return sniff::Detected::Opaque;
            }
            buf.resize(sniff::MAX_PEEK, 0);
        }
        // Part of a first message: wait for the rest.
        if tokio::time::Instant::now() >= deadline {
            return sniff::Detected::Opaque;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn handle(proxy: Arc<Proxy>, name: Arc<str>, stream: TcpStream, peer: SocketAddr) {
    let snapshot = proxy.snapshot.load_full();
    let Some(accepting) = snapshot.listeners.get(&*name).cloned() else {
        return;
    };
    let Some(socket) = accepting.socket() else {
        return;
    };
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let destination = if socket.use_original_dst {
        match original_destination(&stream) {
            Some(d) if d != local => d,
            _ => {
                // Not redirected here by capture rules: forwarding it would loop back to us.
                debug!(listener = %name, %peer, "connection without an original destination; closing");
                return;
            }
        }
    } else {
        local
    };
    let direction = socket.direction;
    let listener: Arc<ListenerRuntime> =
        if socket.use_original_dst && direction == Direction::Outbound {
            snapshot
                .listener_for(destination, Direction::Outbound)
                .cloned()
                .unwrap_or(accepting.clone())
        } else {
            accepting.clone()
        };
    let inspect = listener.socket().is_some_and(|s| s.inspect_protocol) || socket.inspect_protocol;
    let mut facts = ConnectionFacts {
        destination: Some(destination),
        transport: "raw_buffer",
        ..Default::default()
    };
    if inspect {
        let detected = detect(&stream).await;
        facts.transport = detected.transport();
        facts.application_protocols = detected.application_protocols();
        if let sniff::Detected::Tls { server_name, .. } = &detected {
            facts.server_name = server_name.clone();
        }
    }
    let Some(chain) = listener.select(&facts) else {
        debug!(listener = %listener.config.name, %destination, server_name = ?facts.server_name, transport = facts.transport, "no filter chain matches; closing");
        return;
    };
    let tls = match &chain.tls {
        None => None,
        Some(Termination::Own(own)) => Some(own.clone()),
        Some(Termination::Unavailable) => {
            warn!(listener = %listener.config.name, chain = %chain.config.name, %peer, "no server certificate of its own; closing");
            return;
        }
        Some(Termination::Mesh(alpn)) => match proxy.cluster_env.identity.server_config(alpn) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(listener = %listener.config.name, chain = %chain.config.name, %peer, error = %e, "cannot terminate mTLS; closing");
                return;
            }
        },
    };
    let connection_authz = chain.connection_authz.clone();
    let server_name: Option<Arc<str>> = facts.server_name.as_deref().map(Arc::from);
    let tcp_conn = || TcpConn {
        proxy: proxy.clone(),
        direction,
        downstream: peer,
        destination,
        captured: socket.use_original_dst,
        peer_principal: None,
    };
    let served = match &chain.config.filter {
        NetworkFilter::Http(hcm) => {
            let route = match (&hcm.route, &chain.inline_router) {
                (_, Some(r)) => RouteRef::Inline(r.clone()),
                (RouteSource::Rds(n), None) => RouteRef::Rds(Arc::from(n.as_str())),
                (RouteSource::Inline(_), None) => return,
            };
            Served::Http(HttpConn {
                proxy: proxy.clone(),
                direction,
                listener: Arc::from(listener.config.name.as_str()),
                route,
                downstream: peer,
                destination,
                captured: socket.use_original_dst,
                upgrades: hcm.upgrades.clone(),
                peer_principal: None,
                server_name: server_name.clone(),
                authz: chain.request_authz.clone(),
                jwt: chain.request_jwt.clone(),
                retirement: chain.retirement.clone(),
                idle_timeout: crate::idle::configured(hcm.idle_timeout_ms),
                series: Default::default(),
            })
        }
        NetworkFilter::Tcp(config) => Served::Tcp(tcp_conn(), config.clone()),
        NetworkFilter::SniCluster(config) => {
            // East-west gateway: the SNI names the cluster (`outbound_.<port>_.<subset>_.<host>`);
            // the bytes, the client's ClientHello included, pass through untouched.
            let Some(sni) = facts.server_name.as_deref() else {
                debug!(listener = %listener.config.name, %peer, "no SNI to route by; closing");
                return;
            };
            let by_sni = TcpProxy {
                clusters: vec![(sni.to_string(), 1)],
                ..config.clone()
            };
            Served::Tcp(tcp_conn(), by_sni)
        }
    };
    drop(snapshot);
    let authorized = |principal: Option<&str>| {
        let Some(authz) = &connection_authz else {
            return true;
        };
        let verdict = authz.evaluate(&Facts {
            peer,
            destination,
            principal,
            server_name: server_name.as_deref(),
            request: None,
        });
        proxy.metrics.record_authorization("tcp", &verdict);
        if let Some(policy) = &verdict.audit {
            info!(%peer, %destination, principal, %policy, "audit: connection matched an AUDIT policy");
        }
        if let Some(details) = verdict.details() {
            debug!(%peer, %destination, principal, %details, "connection denied by authorization policy; closing");
            return false;
        }
        true
    };
    match tls {
        None => {
            if authorized(None) {
                served.serve(stream).await;
            }
        }
        Some(config) => {
            let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
            let tls_stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "mTLS handshake failed; closing");
                    proxy.metrics.tls_handshake_failures.inc();
                    return;
                }
                Err(_) => {
                    debug!(%peer, "mTLS handshake timed out; closing");
                    proxy.metrics.tls_handshake_failures.inc();
                    return;
                }
            };
            let principal = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(strait_identity::tls::peer_identity)
                .map(|id| Arc::from(id.to_string()));
            if authorized(principal.as_deref()) {
                served.with_principal(principal).serve(tls_stream).await;
            }
        }
    }
}

/// What a connection is handed to once its chain is chosen.
enum Served {
    Http(HttpConn),
    Tcp(TcpConn, TcpProxy),
}

impl Served {
    fn with_principal(mut self, principal: Option<Arc<str>>) -> Self {
        match &mut self {
            Served::Http(c) => c.peer_principal = principal,
            Served::Tcp(c, _) => c.peer_principal = principal,
        }
        self
    }

    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        match self {
            Served::Http(conn) => http::serve(Arc::new(conn), io).await,
            Served::Tcp(conn, config) => tcp::serve(conn, &config, io).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_bind_the_given_address_of_their_family() {
        let v4: std::net::IpAddr = "127.1.1.12".parse().unwrap();
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert_eq!(
            local_address(at("0.0.0.0:15443"), Some(v4)),
            at("127.1.1.12:15443")
        );
        assert_eq!(
            local_address(at("0.0.0.0:15443"), None),
            at("0.0.0.0:15443")
        );
        assert_eq!(
            local_address(at("127.0.0.1:9000"), Some(v4)),
            at("127.0.0.1:9000"),
            "explicit addresses stay"
        );
        assert_eq!(local_address(at("[::]:80"), Some(v4)), at("[::]:80"));
    }
}
