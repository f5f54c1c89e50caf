//! The TCP proxy: a weighted cluster, a host from its balancer (or the original destination for
//! passthrough), bytes copied both ways, Istio's TCP metrics and an access log line when the
//! connection closes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use strait_xds::cluster::Discovery;
use strait_xds::listener::{Direction, TcpProxy};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use crate::Proxy;
use crate::idle::Activity;
use crate::metrics::{Peer, ServiceLabels, TcpLabels, Text};
use crate::upstream::limits::Resource;
use crate::upstream::outlier::Outcome;
use crate::upstream::pool::connect_stream;

/// One downstream TCP connection's context.
pub struct TcpConn {
    pub proxy: Arc<Proxy>,
    pub direction: Direction,
    pub downstream: SocketAddr,
    pub destination: SocketAddr,
    /// See `HttpConn::captured`.
    pub captured: bool,
    /// See `HttpConn::peer_principal`.
    pub peer_principal: Option<Arc<str>>,
}

/// The downstream side of a proxied connection: counts the bytes each way and marks the
/// connection active whenever some move (for the idle timeout).
struct Metered<'a, I> {
    io: &'a mut I,
    activity: &'a Activity,
    read: u64,
    written: u64,
}

impl<I: AsyncRead + Unpin> AsyncRead for Metered<'_, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> Metered<'_, I> {
    fn wrote(&mut self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.written += n as u64;
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Metered<'_, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.io).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut *self.io).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

/// Copies bytes both ways until either side closes or the idle timeout passes; the bytes
/// received from and sent to the downstream.
async fn relay<I, U>(
    c: &TcpConn,
    config: &TcpProxy,
    downstream: &mut I,
    upstream: &mut U,
) -> (u64, u64)
where
    I: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new(tokio::time::Instant::now());
    let mut metered = Metered {
        io: downstream,
        activity: &activity,
        read: 0,
        written: 0,
    };
    let idle = activity.expired(crate::idle::configured(config.idle_timeout_ms));
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut metered, upstream) => {}
        () = idle => {
            c.proxy.metrics.record_idle_timeout("tcp");
            debug!(downstream = %c.downstream, "no bytes either way for the idle timeout; closing");
        }
    }
    (metered.read, metered.written)
}

pub async fn serve<I>(c: TcpConn, config: &TcpProxy, mut downstream: I)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let snapshot = c.proxy.snapshot.load_full();
    let cluster_name =
        crate::upstream::lb::by_weight(&config.clusters, |(_, w)| *w, fastrand::u64(..))
            .map(|(n, _)| n.clone());
    let cluster = cluster_name
        .as_ref()
        .and_then(|n| snapshot.clusters.get(n).cloned());
    let mut flags = "-";
    let mut destination = Peer::unknown();
    let mut upstream_host = None;
    let service = cluster
        .as_ref()
        .and_then(|c| c.service_labels.clone())
        .unwrap_or_else(ServiceLabels::unknown);
    let (mut sent, mut received) = (0u64, 0u64);
    let labels_for = |destination: &Peer, flags: &'static str| -> TcpLabels {
        let me = &c.proxy.me;
        let (s, d) = match c.direction {
            Direction::Outbound => (me.clone(), destination.clone()),
            Direction::Inbound => {
                let mut s = Peer::unknown();
                if let Some(p) = &c.peer_principal {
                    s.principal = Text::Shared(p.clone());
                }
                (s, me.clone())
            }
        };
        TcpLabels {
            reporter: match c.direction {
                Direction::Outbound => "source",
                Direction::Inbound => "destination",
            },
            source_workload: s.workload,
            source_workload_namespace: s.namespace,
            source_principal: s.principal,
            source_app: s.app,
            source_version: s.version,
            source_cluster: s.cluster,
            destination_workload: d.workload,
            destination_workload_namespace: d.namespace,
            destination_principal: d.principal,
            destination_app: d.app,
            destination_version: d.version,
            destination_service: service.host.clone(),
            destination_service_name: service.name.clone(),
            destination_service_namespace: service.namespace.clone(),
            destination_cluster: d.cluster,
            request_protocol: "tcp",
            response_flags: Text::Static(flags),
            connection_security_policy: crate::http::security_policy(
                c.direction,
                c.peer_principal.is_some(),
            ),
        }
    };
    match &cluster {
        None => flags = "NC",
        Some(cluster) => {
            let host = match cluster.config.discovery {
                Discovery::OriginalDst => c
                    .captured
                    .then(|| crate::upstream::simple_host(c.destination)),
                _ => cluster.pick(None, &[]),
            };
            match host {
                None => flags = "UH",
                Some(host) => {
                    if c.direction == Direction::Outbound {
                        let labels = host.labels();
                        destination.workload = labels.workload;
                        destination.namespace = labels.namespace;
                        destination.cluster = labels.cluster;
                    }
                    upstream_host = Some(host.address);
                    match cluster.limits.acquire(Resource::Connections) {
                        None => flags = "UO",
                        Some(_permit) => {
                            match connect_stream(host.address, host.mtls(), &cluster.settings).await
                            {
                                Err(e) => {
                                    debug!(upstream = %host.address, error = %e, "upstream connection failed");
                                    flags = "UF";
                                    cluster.record(&host, Outcome::LocalFailure);
                                }
                                Ok(mut upstream) => {
                                    let opened = labels_for(&destination, "-");
                                    c.proxy.metrics.tcp_opened.get_or_create(&opened).inc();
                                    (received, sent) =
                                        relay(&c, config, &mut downstream, &mut upstream).await;
                                    // Its bytes before its close: a scrape that sees the
                                    // connection closed sees everything it carried.
                                    c.proxy
                                        .metrics
                                        .tcp_received
                                        .get_or_create(&opened)
                                        .inc_by(received);
                                    c.proxy.metrics.tcp_sent.get_or_create(&opened).inc_by(sent);
                                    c.proxy.metrics.tcp_closed.get_or_create(&opened).inc();
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if flags != "-" {
        // A connection that never reached an upstream still counts, with its flag.
        let labels = labels_for(&destination, flags);
        c.proxy.metrics.tcp_opened.get_or_create(&labels).inc();
        c.proxy.metrics.tcp_closed.get_or_create(&labels).inc();
    }
    if let Some(log) = &c.proxy.access_log {
        let start_time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis().saturating_sub(start.elapsed().as_millis()))
            .unwrap_or(0);
        log.write(&serde_json::json!({
            "start_time_unix_ms": start_time,
            "protocol": "tcp",
            "response_flags": flags,
            "duration_ms": start.elapsed().as_millis() as u64,
            "bytes_received": received,
            "bytes_sent": sent,
            "upstream_cluster": cluster_name,
            "upstream_host": upstream_host.map(|h| h.to_string()),
            "downstream_remote_address": c.downstream.to_string(),
            "destination_address": c.destination.to_string(),
            "source_cluster": &*c.proxy.me.cluster,
            "destination_cluster": &*destination.cluster,
            "destination_service": &*service.host,
        }));
    }
}
