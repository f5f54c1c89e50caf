//! The demo workloads `strait up` runs in pods: Istio's helloworld, a client that calls a URL
//! in a loop and keeps a running tally of the answers, and a TCP echo.

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

/// `GET url` over HTTP/1.1 (a new connection each time, as `curl` makes).
pub fn get(url: &str, timeout: Duration) -> Outcome {
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
    Ok((status, body.lines().next().unwrap_or("").trim().to_string()))
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
            let outcome = get(&url, Duration::from_secs(1));
            if outcome.is_ok() {
                tally.record(&outcome);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tally.record(&get(&format!("http://{addr}/nope"), Duration::from_secs(1)));
        assert_eq!(
            tally.summary(),
            "2 calls: 1 × Hello version: v2, instance: hw-1, 1 failed"
        );
        server.join().unwrap();
    }
}
