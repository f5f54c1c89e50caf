//! The DNS proxy's sockets: questions over UDP and TCP on one address, answered from the
//! current table or forwarded to the upstream resolvers in order (the first that answers
//! wins; none answering is SERVFAIL). Upstream sockets carry the proxy's mark so the capture
//! rules let them out instead of sending them back here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use socket2::{Domain, Protocol, Socket, Type};
use strait_xds::dns::NameTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::answer::{self, Decision, Transport};
use crate::lookup::{Lookup, LookupContext};

/// How long one upstream resolver gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Questions being forwarded at once; more are dropped (their clients ask again).
const MAX_IN_FLIGHT: usize = 512;
/// Largest DNS message (TCP length prefix).
const MAX_MESSAGE: usize = 65535;

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
    pub fn new(context: LookupContext, upstreams: Vec<SocketAddr>, mark: Option<u32>) -> Self {
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
                    let result = match transport {
                        Transport::Udp => self.forward_udp(*upstream, request).await,
                        Transport::Tcp => self.forward_tcp(*upstream, request).await,
                    };
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

    fn socket(
        &self,
        upstream: SocketAddr,
        kind: Type,
        protocol: Protocol,
    ) -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(upstream), kind, Some(protocol))?;
        if let Some(mark) = self.mark {
            socket.set_mark(mark)?;
        }
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    async fn forward_udp(&self, upstream: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
        let socket = self.socket(upstream, Type::DGRAM, Protocol::UDP)?;
        let any: SocketAddr = match upstream {
            SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
            SocketAddr::V6(_) => ([0u16; 8], 0).into(),
        };
        socket.bind(&any.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        socket.connect(upstream).await?;
        socket.send(request).await?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                let n = socket.recv(&mut buf).await?;
                // Only the answer to this question (same ID).
                if n >= 2 && request.len() >= 2 && buf[..2] == request[..2] {
                    return Ok(buf[..n].to_vec());
                }
            }
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))?
    }

    async fn forward_tcp(&self, upstream: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
        let socket = self.socket(upstream, Type::STREAM, Protocol::TCP)?;
        let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            let mut stream = socket.connect(upstream).await?;
            write_framed(&mut stream, request).await?;
            read_framed(&mut stream).await
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))?
    }

    /// Serves questions on both sockets until the task is dropped.
    pub async fn serve(self: Arc<Self>, udp: UdpSocket, tcp: TcpListener) {
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
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let udp = UdpSocket::bind(addr).await?;
    let tcp = TcpListener::bind(udp.local_addr()?).await?;
    Ok((udp, tcp))
}

pub(crate) async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

pub(crate) async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "message too long"))?;
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    stream.write_all(&out).await
}
