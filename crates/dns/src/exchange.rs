//! One DNS message to one server and its answer — over UDP (the first datagram carrying the
//! question's ID) or over TCP (length-prefixed) — from a socket with an optional `SO_MARK`, so
//! capture rules can let the proxy's own questions out. Shared by forwarding and the stub
//! resolver.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// Largest DNS message (TCP length prefix).
pub const MAX_MESSAGE: usize = 65535;

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Sends `request` to `server` and returns its answer, or an error after `timeout`.
pub async fn exchange(
    server: SocketAddr,
    request: &[u8],
    transport: Transport,
    mark: Option<u32>,
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let attempt = async {
        match transport {
            Transport::Udp => udp(server, request, mark).await,
            Transport::Tcp => tcp(server, request, mark).await,
        }
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{server}: no answer"))
    })?
}

fn socket(
    server: SocketAddr,
    kind: Type,
    protocol: Protocol,
    mark: Option<u32>,
) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(server), kind, Some(protocol))?;
    if let Some(mark) = mark {
        socket.set_mark(mark)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

async fn udp(server: SocketAddr, request: &[u8], mark: Option<u32>) -> std::io::Result<Vec<u8>> {
    let socket = socket(server, Type::DGRAM, Protocol::UDP, mark)?;
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => ([0u16; 8], 0).into(),
    };
    socket.bind(&any.into())?;
    let socket = UdpSocket::from_std(socket.into())?;
    socket.connect(server).await?;
    socket.send(request).await?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Only the answer to this question (same ID).
        if n >= 2 && request.len() >= 2 && buf[..2] == request[..2] {
            return Ok(buf[..n].to_vec());
        }
    }
}

async fn tcp(server: SocketAddr, request: &[u8], mark: Option<u32>) -> std::io::Result<Vec<u8>> {
    let socket = socket(server, Type::STREAM, Protocol::TCP, mark)?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    let mut stream = socket.connect(server).await?;
    write_framed(&mut stream, request).await?;
    read_framed(&mut stream).await
}

/// One length-prefixed message from a TCP stream.
pub(crate) async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// One length-prefixed message to a TCP stream.
pub(crate) async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "message too long"))?;
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    stream.write_all(&out).await
}
