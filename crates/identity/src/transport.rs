//! gRPC over mesh TLS: a TLS listener for tonic servers that hands each request the peer's
//! verified certificates, and a channel connector (optionally TLS, optionally `SO_MARK`ed so a
//! captured pod lets the proxy's own connections out).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a tonic handler learns about the connection (request extension).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The client's verified chain, leaf first; empty when it presented none.
    pub certs: Arc<Vec<CertificateDer<'static>>>,
}

/// One accepted TLS connection.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections and completes their TLS handshakes concurrently (a slow client does
/// not hold up others), with the server configuration current at each accept — so a rotated
/// serving certificate or trust bundle applies to the next connection.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(config.load_full());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let certs = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                            .unwrap_or_default();
                        let conn = TlsConn {
                            inner: stream,
                            info: PeerInfo {
                                remote: Some(remote),
                                certs: Arc::new(certs),
                            },
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// How a gRPC client connects.
#[derive(Clone, Default)]
pub struct ChannelOptions {
    /// `SO_MARK` for the socket (capture lets marked traffic out).
    pub mark: Option<u32>,
    /// TLS configuration and the name to verify; `None` is plaintext.
    pub tls: Option<(Arc<ClientConfig>, String)>,
    /// How often the connection is pinged, so a silently dead link is noticed (no answer
    /// within the same time ends it); default: every 30 s, with tonic's timeout.
    pub keepalive: Option<Duration>,
}

/// Opens a gRPC channel to `address` (`host:port`).
pub async fn connect_channel(address: &str, options: ChannelOptions) -> Result<Channel, String> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| format!("bad address {address:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30));
    if let Some(every) = options.keepalive {
        endpoint = endpoint
            .http2_keep_alive_interval(every)
            .keep_alive_timeout(every)
            .keep_alive_while_idle(true);
    }
    if options.mark.is_none() && options.tls.is_none() {
        return endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"));
    }
    let connector = tower::service_fn(move |uri: http::Uri| {
        let options = options.clone();
        async move {
            let host = uri
                .host()
                .unwrap_or("127.0.0.1")
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(15012);
            let tcp = connect_tcp(&host, port, options.mark).await?;
            match options.tls {
                None => Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(ClientIo::Plain(tcp))),
                Some((config, name)) => {
                    let name = ServerName::try_from(name)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await?;
                    Ok(hyper_util::rt::TokioIo::new(ClientIo::Tls(Box::new(tls))))
                }
            }
        }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            let mut msg = format!("cannot connect to {address}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        })
}

async fn connect_tcp(host: &str, port: u16, mark: Option<u32>) -> std::io::Result<TcpStream> {
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host}: no address")))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(mark) = mark {
        socket2::SockRef::from(&socket).set_mark(mark)?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A client connection, plaintext or TLS (gRPC channels here, upstream connections in the proxy).
pub enum ClientIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    // Forwarded so writers that gather (hyper's HTTP/1 head and body, h2's frame head and DATA
    // payload) send them in one system call and one TLS record rather than one each.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            ClientIo::Plain(s) => s.is_write_vectored(),
            ClientIo::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::Authority;
    use crate::cacerts::CaFiles;
    use crate::policy::Limits;
    use crate::tls::{self, ClientAuth, Expect, MeshServerVerifier};
    use std::io::IoSlice;
    use std::time::SystemTime;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes a head and a body as one gathered write and reads both back on the other side.
    async fn gathered_write_arrives_whole<R: AsyncRead + Unpin>(mut client: ClientIo, mut peer: R) {
        assert!(client.is_write_vectored());
        let (head, body) = (b"head:".as_slice(), [7u8; 1024]);
        let written = client
            .write_vectored(&[IoSlice::new(head), IoSlice::new(&body)])
            .await
            .unwrap();
        assert_eq!(written, head.len() + body.len(), "both slices in one write");
        client.flush().await.unwrap();
        let mut got = vec![0u8; written];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..head.len()], head);
        assert_eq!(&got[head.len()..], &body[..]);
    }

    #[tokio::test]
    async fn plain_connections_gather_writes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        gathered_write_arrives_whole(ClientIo::Plain(client.unwrap()), accepted.unwrap().0).await;
    }

    #[tokio::test]
    async fn tls_connections_gather_writes() {
        let now = SystemTime::now();
        let ca = Authority::new(
            CaFiles::self_signed_for_development(now).unwrap(),
            Limits::default(),
        )
        .unwrap();
        let roots = tls::root_store(ca.roots()).unwrap();
        let issue = |sa: &str| {
            let id = crate::SpiffeId::new("cluster.local", "default", sa);
            let cert = ca.issue(&id, Duration::from_secs(3600), now).unwrap();
            (id, tls::certified_key(&cert).unwrap())
        };
        let (server_id, server_key) = issue("server");
        let (_, client_key) = issue("client");
        let server =
            tls::server_config(server_key, roots.clone(), ClientAuth::Required, &[]).unwrap();
        let verifier = MeshServerVerifier::new(
            roots,
            Expect::Identities {
                ids: vec![server_id.to_string()],
                trust_domain_aliases: vec![],
            },
        );
        let client = tls::client_config(Some(client_key), verifier, &[]).unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap());
        let (tcp, accepted) = tokio::join!(tcp, listener.accept());
        let name = ServerName::try_from("server.mesh").unwrap();
        let (client, server) = tokio::join!(
            tokio_rustls::TlsConnector::from(client).connect(name, tcp.unwrap()),
            tokio_rustls::TlsAcceptor::from(server).accept(accepted.unwrap().0),
        );
        gathered_write_arrives_whole(ClientIo::Tls(Box::new(client.unwrap())), server.unwrap())
            .await;
    }
}
