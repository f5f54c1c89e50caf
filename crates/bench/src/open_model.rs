//! An open-model load generator for HTTP/1.1 keep-alive: request *i* is due at
//! `start + i / rate` whatever happened to the ones before it, and its latency is counted from
//! that due time — so a slow answer shows up in every request it delays instead of hiding by
//! slowing the sender (coordinated omission). Requests go out on idle connections, new ones
//! are opened while all are busy (up to a cap; beyond it a request waits, and the wait counts).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Connections at most; a request beyond waits for one (its wait is part of its latency).
const MAX_CONNECTIONS: usize = 256;
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

type Conn = BufReader<TcpStream>;

/// `GET path` with `host` to `addr` at `rate` requests per second for `duration`.
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
    let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let (idle, slots, opened, request) =
            (idle.clone(), slots.clone(), opened.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return None;
            };
            let conn = idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match conn {
                Some(c) => c,
                None => {
                    opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let s = TcpStream::connect(addr).await.ok()?;
                    let _ = s.set_nodelay(true);
                    BufReader::new(s)
                }
            };
            let answered = tokio::time::timeout(REQUEST_TIMEOUT, exchange(conn, &request)).await;
            match answered {
                Ok(Some(conn)) => {
                    let latency = due.elapsed();
                    idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
                    Some(latency)
                }
                _ => None,
            }
        }));
    }
    let mut out = OpenRun::default();
    for t in tasks {
        match t.await {
            Ok(Some(l)) => out.latencies.push(l),
            _ => out.errors += 1,
        }
    }
    out.achieved_rps = out.latencies.len() as f64 / start.elapsed().as_secs_f64().max(1e-9);
    out.connections = opened.load(std::sync::atomic::Ordering::Relaxed);
    out
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
}
