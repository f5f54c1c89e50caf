//! The demo workloads `strait up` runs in pods: Istio's helloworld, a client that calls a URL
//! in a loop and keeps a running tally of the answers, a TCP echo and a gRPC echo.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Istio's helloworld: `GET /hello` answers `Hello version: <version>, instance: <instance>`;
/// `/health` answers 200. Serves until the process ends.
pub async fn helloworld(
    listen: SocketAddr,
    version: String,
    instance: String,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("helloworld cannot listen on {listen}"))?;
    let answer = Bytes::from(format!("Hello version: {version}, instance: {instance}\n"));
    loop {
        let (stream, _) = listener.accept().await?;
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = answer.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/hello" => (StatusCode::OK, answer),
                        "/health" => (StatusCode::OK, Bytes::from_static(b"ok\n")),
                        _ => (
                            StatusCode::NOT_FOUND,
                            Bytes::from_static(b"not found; try /hello\n"),
                        ),
                    };
                    let mut resp = Response::new(Full::new(body));
                    *resp.status_mut() = status;
                    Ok::<_, Infallible>(resp)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// The gRPC echo's one method (request and reply are `strait.demo.v1.EchoMessage`:
/// `string message = 1; string instance = 2;`).
pub const GRPC_ECHO_METHOD: &str = "/strait.demo.v1.Echo/Echo";

/// A gRPC echo over HTTP/2 (h2c): [`GRPC_ECHO_METHOD`] answers the request's message with
/// `instance` set to this one's name; any other method is `UNIMPLEMENTED`. Serves until the
/// process ends.
pub async fn grpc_echo(listen: SocketAddr, instance: String) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("grpc-echo cannot listen on {listen}"))?;
    // Field 2 (`instance`), appended to the request's bytes: protobuf merges it in.
    let mut suffix = vec![0x12];
    put_varint(&mut suffix, instance.len() as u64);
    suffix.extend_from_slice(instance.as_bytes());
    let suffix = Bytes::from(suffix);
    loop {
        let (stream, _) = listener.accept().await?;
        let suffix = suffix.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let suffix = suffix.clone();
                async move {
                    let known = req.uri().path() == GRPC_ECHO_METHOD;
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let (status, message, frame) = match (known, body) {
                        (true, Ok(b)) => match grpc_frame(&b) {
                            Some(m) => {
                                let mut reply = m.to_vec();
                                reply.extend_from_slice(&suffix);
                                ("0", "", grpc_encode(&reply))
                            }
                            None => ("13", "malformed gRPC frame", Bytes::new()),
                        },
                        (true, Err(_)) => ("13", "the request body failed", Bytes::new()),
                        (false, _) => (
                            "12",
                            "unknown method; try /strait.demo.v1.Echo/Echo",
                            Bytes::new(),
                        ),
                    };
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert(
                        "grpc-status",
                        hyper::header::HeaderValue::from_static(status),
                    );
                    if !message.is_empty() {
                        trailers.insert(
                            "grpc-message",
                            hyper::header::HeaderValue::from_static(message),
                        );
                    }
                    let body = Full::new(frame)
                        .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
                    let mut resp = Response::new(body);
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/grpc"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        });
    }
}

/// The message of an uncompressed gRPC frame (flag 0, 4-byte big-endian length).
fn grpc_frame(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0).then(|| rest.get(4..4 + len)).flatten()
}

fn grpc_encode(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A TCP echo: writes back what it reads, prefixed once with `hello <instance>\n`.
pub async fn tcp_echo(listen: SocketAddr, instance: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("tcp-echo cannot listen on {listen}"))?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let greeting = format!("hello {instance}\n");
        tokio::spawn(async move {
            if stream.write_all(greeting.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The answer of one call: the status and the body's first line, or what went wrong.
pub type Outcome = Result<(u16, String), String>;

/// `GET url` over HTTP/1.1 (a new connection each time, as `curl` makes); `via`: connect to
/// this host at the URL's port instead, keeping the URL's `Host` (as `curl --connect-to` —
/// how an app without capture calls its sidecar's bound listener).
pub fn get(url: &str, via: Option<&str>, timeout: Duration) -> Outcome {
    get_whole(url, via, timeout)
        .map(|(status, body)| (status, body.lines().next().unwrap_or("").trim().to_string()))
}

/// As [`get`], with the whole body rather than its first line.
pub fn get_whole(url: &str, via: Option<&str>, timeout: Duration) -> Outcome {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let target = match via {
        Some(host) => {
            let port = target.rsplit_once(':').map_or("80", |(_, p)| p);
            format!("{host}:{port}")
        }
        None => target,
    };
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} has no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: strait-client\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| "connection closed before a response".to_string())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {head:.40}"))?;
    Ok((status, body.to_string()))
}

/// A running tally of answers: how many of each, and of failures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub answers: BTreeMap<String, u64>,
    pub failures: u64,
}

impl Tally {
    pub fn record(&mut self, outcome: &Outcome) {
        match outcome {
            Ok((200, body)) => *self.answers.entry(body.clone()).or_default() += 1,
            _ => self.failures += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.answers.values().sum::<u64>() + self.failures
    }

    /// `12 calls: 6 × Hello version: v1 …, 6 × Hello version: v2 …, 0 failed`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .answers
            .iter()
            .map(|(a, n)| format!("{n} × {a}"))
            .collect();
        parts.push(format!("{} failed", self.failures));
        format!("{} calls: {}", self.total(), parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helloworld_answers_as_istios_and_the_client_tallies() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = std::thread::spawn(move || {
            rt.block_on(async {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    helloworld(addr, "v2".into(), "hw-1".into()),
                )
                .await;
            })
        });
        let url = format!("http://{addr}/hello");
        let mut tally = Tally::default();
        for _ in 0..50 {
            let outcome = get(&url, None, Duration::from_secs(1));
            if outcome.is_ok() {
                tally.record(&outcome);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tally.record(&get(
            &format!("http://{addr}/nope"),
            None,
            Duration::from_secs(1),
        ));
        // An address nothing listens on, reached through `via` (as an app calls its sidecar).
        let elsewhere = format!("http://127.0.0.3:{}/hello", addr.port());
        assert!(get(&elsewhere, None, Duration::from_secs(1)).is_err());
        tally.record(&get(
            &elsewhere,
            Some(&addr.ip().to_string()),
            Duration::from_secs(1),
        ));
        assert_eq!(
            tally.summary(),
            "3 calls: 2 × Hello version: v2, instance: hw-1, 1 failed"
        );
        server.join().unwrap();
    }
}
