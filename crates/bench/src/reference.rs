//! The well-known proxies Strait is measured against on the same two-hop chain: HAProxy (two
//! processes, two threads each; HTTP/1.1, HTTP/2 and TCP) and nginx (two processes, two workers
//! each; HTTP/1.1 with upstream keep-alive — nginx cannot proxy HTTP/2 to an upstream). Plaintext
//! between the hops, like the Strait rows until mTLS lands.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::process::Started;

/// Where the first and second hop of each reference chain listen.
pub const HAPROXY_A: &str = "127.2.0.150";
pub const HAPROXY_B: &str = "127.2.0.151";
pub const NGINX_A: &str = "127.2.0.160";
pub const NGINX_B: &str = "127.2.0.161";

/// One HAProxy hop: HTTP/1.1 on 8080, HTTP/2 (h2c) on 8090, TCP on 7001, each to `next`.
fn haproxy_conf(listen: &str, next_h1: &str, next_h2: &str, next_tcp: &str) -> String {
    format!(
        "global
  nbthread 2
  maxconn 4000
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend h1
  mode http
  bind {listen}:8080
  option http-keep-alive
  default_backend h1
backend h1
  mode http
  http-reuse always
  server next {next_h1}
frontend h2
  mode http
  bind {listen}:8090 proto h2
  default_backend h2
backend h2
  mode http
  http-reuse always
  server next {next_h2} proto h2
frontend tcp
  mode tcp
  bind {listen}:7001
  default_backend tcp
backend tcp
  mode tcp
  server next {next_tcp}
"
    )
}

/// One nginx hop: HTTP/1.1 on 8080 to `next`, with pooled upstream connections.
fn nginx_conf(dir: &Path, name: &str, listen: &str, next: &str) -> String {
    let d = dir.display();
    format!(
        "worker_processes 2;
daemon off;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  keepalive_requests 1000000;
  upstream next {{ server {next}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen {listen}:8080;
    location / {{ proxy_pass http://next; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}
  }}
}}
"
    )
}

/// The running reference proxies, stopped when dropped (nginx gracefully, so its workers go).
pub struct References {
    pub haproxy: [Started; 2],
    pub nginx: [Started; 2],
}

/// Starts both chains in front of the application at `app_h1` / `app_h2`.
pub fn start(work: &Path, logs: &Path, app_h1: &str, app_h2: &str) -> anyhow::Result<References> {
    let haproxy = |name: &str, conf: String| -> anyhow::Result<Started> {
        let path = work.join(format!("{name}.cfg"));
        std::fs::write(&path, conf)?;
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&path);
        Started::spawn(name, &mut cmd, &logs.join(format!("{name}.log")))
            .context("starting haproxy (install haproxy; scripts/bench does)")
    };
    let b = haproxy("haproxy-b", haproxy_conf(HAPROXY_B, app_h1, app_h2, app_h1))?;
    let a = haproxy(
        "haproxy-a",
        haproxy_conf(
            HAPROXY_A,
            &format!("{HAPROXY_B}:8080"),
            &format!("{HAPROXY_B}:8090"),
            &format!("{HAPROXY_B}:7001"),
        ),
    )?;
    let nginx = |name: &str, listen: &str, next: &str| -> anyhow::Result<Started> {
        let path = work.join(format!("{name}.conf"));
        std::fs::write(&path, nginx_conf(work, name, listen, next))?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-c").arg(&path).arg("-p").arg(work);
        let mut s = Started::spawn(name, &mut cmd, &logs.join(format!("{name}.log")))?;
        s.graceful = true;
        Ok(s)
    };
    let nb = nginx("nginx-b", NGINX_B, app_h1)?;
    let na = nginx("nginx-a", NGINX_A, &format!("{NGINX_B}:8080"))?;
    let mut refs = References {
        haproxy: [a, b],
        nginx: [na, nb],
    };
    refs.wait_listening()?;
    Ok(refs)
}

impl References {
    /// Waits until every hop accepts connections; fails (pointing at its log) if one exits.
    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let hops = [
            (HAPROXY_A, 8080),
            (HAPROXY_B, 8080),
            (NGINX_A, 8080),
            (NGINX_B, 8080),
        ];
        for (ip, port) in hops {
            while std::net::TcpStream::connect((ip, port)).is_err() {
                for p in self.haproxy.iter_mut().chain(self.nginx.iter_mut()) {
                    p.check_alive()?;
                }
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "nothing listens on {ip}:{port} after 10 s; see the haproxy and nginx logs"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Total CPU seconds of a chain's processes (nginx: master and workers).
    pub fn cpu_seconds(&self, haproxy: bool) -> Vec<f64> {
        let procs = if haproxy { &self.haproxy } else { &self.nginx };
        procs
            .iter()
            .map(|p| crate::process::tree_cpu_seconds(p.pid()).unwrap_or(0.0))
            .collect()
    }
}
