//! The DNS proxy's sockets: questions over UDP and TCP on one address, answered from the
//! current table or forwarded to the upstream resolvers in order (the first that answers
//! wins; none answering is SERVFAIL). Upstream sockets carry the proxy's mark so the capture
//! rules let them out instead of sending them back here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use strait_xds::dns::NameTable;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::answer::{self, Decision};
use crate::exchange::{MAX_MESSAGE, Transport, exchange, read_framed, write_framed};
use crate::lookup::{Lookup, LookupContext};

/// How long one upstream resolver gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Questions being forwarded at once; more are dropped (their clients ask again).
const MAX_IN_FLIGHT: usize = 512;

/// Counters, for the admin API and metrics.
#[derive(Debug, Default)]
pub struct DnsStats {
    pub requests: AtomicU64,
    /// Answered from the table.
    pub answered: AtomicU64,
    pub forwarded: AtomicU64,
    /// Forwarded questions no upstream answered (SERVFAIL sent).
    pub upstream_failures: AtomicU64,
}

/// The DNS proxy: its table and where it forwards.
pub struct DnsServer {
    lookup: ArcSwapOption<Lookup>,
    /// The table `lookup` was built from.
    source: ArcSwapOption<NameTable>,
    context: LookupContext,
    upstreams: Vec<SocketAddr>,
    mark: Option<u32>,
    rotation: AtomicUsize,
    in_flight: Arc<Semaphore>,
    pub stats: DnsStats,
}

impl DnsServer {
    fn new(context: LookupContext, upstreams: Vec<SocketAddr>, mark: Option<u32>) -> Self {
        DnsServer {
            lookup: ArcSwapOption::empty(),
            source: ArcSwapOption::empty(),
            context,
            upstreams,
            mark,
            rotation: AtomicUsize::new(0),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            stats: DnsStats::default(),
        }
    }

    /// A server on `addr` (UDP and TCP, one port), serving from now on: it and the address it
    /// got.
    pub async fn start(
        addr: SocketAddr,
        context: LookupContext,
        upstreams: Vec<SocketAddr>,
        mark: Option<u32>,
    ) -> std::io::Result<(Arc<DnsServer>, SocketAddr)> {
        let (udp, tcp) = bind(addr).await?;
        let local = udp.local_addr()?;
        let server = Arc::new(DnsServer::new(context, upstreams, mark));
        tokio::spawn(server.clone().serve(udp, tcp));
        Ok((server, local))
    }

    /// Answers from `table` from now on (nothing to do when it is the table already in use).
    pub fn update(&self, table: &Arc<NameTable>) {
        if self
            .source
            .load()
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, table) || **s == **table)
        {
            return;
        }
        self.lookup
            .store(Some(Arc::new(Lookup::build(table, &self.context))));
        self.source.store(Some(table.clone()));
    }

    /// The table answered from (`None` before the first).
    pub fn table(&self) -> Option<Arc<NameTable>> {
        self.source.load_full()
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The answer to one question (`None`: nothing to send).
    pub async fn handle(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let rotate = self.rotation.fetch_add(1, Ordering::Relaxed);
        let lookup = self.lookup.load();
        match answer::decide(lookup.as_deref(), request, transport, rotate) {
            Decision::Reply(bytes) => {
                self.stats.answered.fetch_add(1, Ordering::Relaxed);
                Some(bytes)
            }
            Decision::Drop => None,
            Decision::Forward => {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                for upstream in &self.upstreams {
                    let result =
                        exchange(*upstream, request, transport, self.mark, UPSTREAM_TIMEOUT).await;
                    match result {
                        Ok(bytes) => return Some(bytes),
                        Err(e) => debug!(%upstream, error = %e, "upstream resolver failed"),
                    }
                }
                self.stats.upstream_failures.fetch_add(1, Ordering::Relaxed);
                answer::server_failure(request)
            }
        }
    }

    /// Serves questions on both sockets until the task is dropped.
    async fn serve(self: Arc<Self>, udp: UdpSocket, tcp: TcpListener) {
        let udp = Arc::new(udp);
        let udp_task = {
            let server = self.clone();
            let udp = udp.clone();
            async move {
                let mut buf = vec![0u8; MAX_MESSAGE];
                loop {
                    let (n, from) = match udp.recv_from(&mut buf).await {
                        Ok(r) => r,
                        Err(e) => {
                            warn!(error = %e, "DNS: receiving failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = server.in_flight.clone().try_acquire_owned() else {
                        continue;
                    };
                    let request = buf[..n].to_vec();
                    let (server, udp) = (server.clone(), udp.clone());
                    tokio::spawn(async move {
                        if let Some(reply) = server.handle(&request, Transport::Udp).await {
                            let _ = udp.send_to(&reply, from).await;
                        }
                        drop(permit);
                    });
                }
            }
        };
        let tcp_task = {
            let server = self.clone();
            async move {
                loop {
                    let Ok((stream, _)) = tcp.accept().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    tokio::spawn(server.clone().serve_connection(stream));
                }
            }
        };
        tokio::join!(udp_task, tcp_task);
    }

    /// Questions on one TCP connection, answered in order, until the client closes it.
    async fn serve_connection(self: Arc<Self>, mut stream: TcpStream) {
        loop {
            let request =
                match tokio::time::timeout(Duration::from_secs(10), read_framed(&mut stream)).await
                {
                    Ok(Ok(r)) => r,
                    _ => return,
                };
            let Some(reply) = self.handle(&request, Transport::Tcp).await else {
                return;
            };
            if write_framed(&mut stream, &reply).await.is_err() {
                return;
            }
        }
    }
}

/// Binds the DNS proxy's UDP and TCP sockets on `addr` (with port 0, both on the port UDP got).
/// UDP and TCP on one port. For port 0 the kernel picks the UDP port, and that port may be
/// taken for TCP (another socket's ephemeral port): then it tries a fresh one, a bounded number
/// of times. A fixed port in use is the caller's error, returned at once.
async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    const ATTEMPTS_FOR_ANY_PORT: usize = 16;
    let mut attempt = 1;
    loop {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS_FOR_ANY_PORT =>
            {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn any_port_gets_udp_and_tcp_on_the_same_port() {
        for _ in 0..20 {
            let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        }
    }

    #[tokio::test]
    async fn a_fixed_port_taken_for_tcp_is_an_error_not_a_different_port() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
