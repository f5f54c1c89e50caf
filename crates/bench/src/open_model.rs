//! Open-model load generators for HTTP/1.1 keep-alive and HTTP/2 (and gRPC over it): request
//! *i* is due at `start + i / rate` whatever happened to the ones before it, and its latency is
//! counted from that due time — so a slow answer shows up in every request it delays instead of
//! hiding by slowing the sender (coordinated omission). HTTP/1.1 requests go out on idle
//! connections, new ones are opened while all are busy (up to a cap; beyond it a request waits,
//! and the wait counts); HTTP/2 requests are streams spread over a fixed set of connections.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// HTTP/1.1 connections at most; a request beyond waits for one (its wait is part of its
/// latency).
const MAX_CONNECTIONS: usize = 256;
/// HTTP/2 connections the streams are spread over (as many as the fixed-rate runs' h2load
/// clients were; each carries up to the server's concurrent-stream limit).
const H2_CONNECTIONS: usize = 10;
/// A request not answered within this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct OpenRun {
    /// Latency of each answered request, from its due time.
    pub latencies: Vec<Duration>,
    pub errors: u64,
    /// Requests answered per second over the run.
    pub achieved_rps: f64,
    /// Connections it needed.
    pub connections: usize,
}

/// Starts request *i* (`send(i)`, which says whether it was answered as expected) at its due
/// time, each in its own task; the latencies from the due times. The due times are kept by a
/// thread of its own sleeping with the kernel's precision: the async runtime's timers tick in
/// whole milliseconds and fire up to two late, which at 1000 requests per second would be most
/// of what the table shows.
async fn schedule<F, Fut>(rate: u32, duration: Duration, send: F) -> OpenRun
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let runtime = tokio::runtime::Handle::current();
    let dispatcher = tokio::task::spawn_blocking(move || {
        let mut send = send;
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = start + interval.mul_f64(i as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let answered = send(i);
            tasks.push(runtime.spawn(async move {
                match tokio::time::timeout(REQUEST_TIMEOUT, answered).await {
                    Ok(true) => Some(due.elapsed()),
                    _ => None,
                }
            }));
        }
        (start, tasks)
    });
    let mut out = OpenRun::default();
    let Ok((start, tasks)) = dispatcher.await else {
        out.errors = total;
        return out;
    };
    for t in tasks {
        match t.await {
            Ok(Some(l)) => out.latencies.push(l),
            _ => out.errors += 1,
        }
    }
    out.achieved_rps = out.latencies.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    out
}

type Conn = BufReader<TcpStream>;

/// `GET path` with `host` to `addr` over HTTP/1.1 at `rate` requests per second for `duration`.
pub async fn run(
    addr: SocketAddr,
    host: &str,
    path: &str,
    rate: u32,
    duration: Duration,
) -> OpenRun {
    let request: Arc<[u8]> =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: strait-bench\r\n\r\n")
            .into_bytes()
            .into();
    let idle: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = opened.clone();
    let mut out = schedule(rate, duration, move |_| {
        let (idle, slots, opened, request) =
            (idle.clone(), slots.clone(), opened.clone(), request.clone());
        async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return false;
            };
            let conn = idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match conn {
                Some(c) => c,
                None => {
                    opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Ok(s) = TcpStream::connect(addr).await else {
                        return false;
                    };
                    let _ = s.set_nodelay(true);
                    BufReader::new(s)
                }
            };
            match exchange(conn, &request).await {
                Some(conn) => {
                    idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
                    true
                }
                None => false,
            }
        }
    })
    .await;
    out.connections = counted.load(std::sync::atomic::Ordering::Relaxed);
    out
}

/// What each HTTP/2 request is.
#[derive(Debug, Clone)]
pub struct H2Request {
    pub authority: String,
    pub path: String,
    /// A gRPC call's request frame: the request is a POST with gRPC's headers, and it counts as
    /// answered only with `grpc-status: 0` in the trailers.
    pub grpc: Option<Bytes>,
}

impl H2Request {
    fn build(&self, uri: &http::Uri) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(self.grpc.clone().unwrap_or_default()));
        *request.uri_mut() = uri.clone();
        *request.version_mut() = http::Version::HTTP_2;
        if self.grpc.is_some() {
            *request.method_mut() = http::Method::POST;
            let headers = request.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        }
        request
    }
}

/// `request` to `addr` over HTTP/2 (prior knowledge, h2c) at `rate` requests per second for
/// `duration`, as streams spread round-robin over [`H2_CONNECTIONS`] connections.
pub async fn run_h2(
    addr: SocketAddr,
    request: &H2Request,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<OpenRun> {
    let uri: http::Uri = format!("http://{}{}", request.authority, request.path)
        .parse()
        .with_context(|| format!("the request URI for {} {}", request.authority, request.path))?;
    let mut senders = Vec::with_capacity(H2_CONNECTIONS);
    let mut drivers = Vec::with_capacity(H2_CONNECTIONS);
    for _ in 0..H2_CONNECTIONS {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
        senders.push(sender);
        drivers.push(tokio::spawn(connection));
    }
    let grpc = request.grpc.is_some();
    let request = request.clone();
    let mut out = schedule(rate, duration, move |i| {
        let mut sender = senders[i as usize % senders.len()].clone();
        let outgoing = request.build(&uri);
        async move {
            let Ok(response) = sender.send_request(outgoing).await else {
                return false;
            };
            if response.status() != http::StatusCode::OK {
                return false;
            }
            let Ok(body) = response.into_body().collect().await else {
                return false;
            };
            !grpc
                || body
                    .trailers()
                    .and_then(|t| t.get("grpc-status"))
                    .is_some_and(|status| status == "0")
        }
    })
    .await;
    for d in drivers {
        d.abort();
    }
    out.connections = H2_CONNECTIONS;
    Ok(out)
}

/// One request and its answer (status 200, body by `Content-Length`); the connection back
/// when it can be used again.
async fn exchange(mut conn: Conn, request: &[u8]) -> Option<Conn> {
    conn.get_mut().write_all(request).await.ok()?;
    let mut line = String::new();
    conn.read_line(&mut line).await.ok()?;
    if !line.starts_with("HTTP/1.1 200") {
        return None;
    }
    let mut length = 0usize;
    let mut close = false;
    loop {
        line.clear();
        if conn.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok()?;
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await.ok()?;
    (!close).then_some(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers each request after `delay`, one at a time per connection.
    async fn slow_server(delay: Duration) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut s = BufReader::new(s);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            tokio::time::sleep(delay).await;
                            let _ = s
                                .get_mut()
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn requests_keep_their_schedule_and_latency_counts_from_it() {
        // 200 requests per second for 1 s against a server taking 20 ms each: a closed loop
        // on one connection would manage 50; the open model opens connections to keep the
        // rate, and every latency includes the 20 ms.
        let addr = slow_server(Duration::from_millis(20)).await;
        let r = run(addr, "x", "/", 200, Duration::from_secs(1)).await;
        assert_eq!(r.errors, 0);
        assert_eq!(r.latencies.len(), 200);
        assert!(r.connections > 1, "{} connections", r.connections);
        assert!(r.latencies.iter().all(|l| *l >= Duration::from_millis(20)));
    }

    /// An HTTP/2 server answering every request after `delay`, with `grpc-status` trailers when
    /// given one.
    async fn h2_server(delay: Duration, grpc_status: Option<&'static str>) -> SocketAddr {
        use hyper::service::service_fn;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let service = service_fn(
                    move |_request: http::Request<hyper::body::Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        let body = Full::new(Bytes::from_static(b"ok")).with_trailers(async move {
                            let status = grpc_status?;
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static(status));
                            Some(Ok::<_, std::convert::Infallible>(trailers))
                        });
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), service),
                );
            }
        });
        addr
    }

    fn h2_request(grpc: bool) -> H2Request {
        H2Request {
            authority: "app.test:80".into(),
            path: "/svc/Method".into(),
            grpc: grpc.then(|| Bytes::from_static(b"\0\0\0\0\0")),
        }
    }

    #[tokio::test]
    async fn http2_requests_keep_their_schedule_on_multiplexed_connections() {
        // 200 requests per second for 1 s, each answered after 20 ms: all go out on time as
        // concurrent streams, and every latency includes the 20 ms.
        let addr = h2_server(Duration::from_millis(20), None).await;
        let r = run_h2(addr, &h2_request(false), 200, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(r.errors, 0);
        assert_eq!(r.latencies.len(), 200);
        assert!(r.latencies.iter().all(|l| *l >= Duration::from_millis(20)));
        assert!(r.latencies.iter().all(|l| *l < Duration::from_millis(1000)));
    }

    #[tokio::test]
    async fn a_grpc_call_counts_only_with_status_ok() {
        let ok = h2_server(Duration::ZERO, Some("0")).await;
        let r = run_h2(ok, &h2_request(true), 100, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!((r.latencies.len(), r.errors), (50, 0));
        let failing = h2_server(Duration::ZERO, Some("13")).await;
        let r = run_h2(failing, &h2_request(true), 100, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!((r.latencies.len(), r.errors), (0, 50));
        // Without any grpc-status the call did not succeed either.
        let silent = h2_server(Duration::ZERO, None).await;
        let r = run_h2(silent, &h2_request(true), 100, Duration::from_millis(500))
            .await
            .unwrap();
        assert_eq!(r.errors, 50);
    }
}
