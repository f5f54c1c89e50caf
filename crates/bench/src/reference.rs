//! The well-known proxies Strait is measured against on the same two-hop chain: HAProxy (two
//! processes, two threads each; HTTP/1.1, HTTP/2, gRPC and TCP) and nginx (two processes, two
//! workers each; HTTP/1.1 and gRPC with upstream keep-alive — nginx cannot proxy plain HTTP/2
//! to an upstream, only gRPC). Each chain twice: plaintext between the hops, and mutual TLS
//! between the hops (the first hop presents its certificate and verifies the second's chain;
//! the second requires and verifies the first's), like the Strait sidecars' mTLS.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::pki::{Leaf, REFERENCE_NAME, ReferencePki};
use crate::process::Started;

/// Where the first and second hop of each reference chain listen.
pub const HAPROXY_A: &str = "127.2.0.150";
pub const HAPROXY_B: &str = "127.2.0.151";
pub const NGINX_A: &str = "127.2.0.160";
pub const NGINX_B: &str = "127.2.0.161";

/// The first hop's ports for each chain: plaintext between the hops on the first three, TLS
/// between the hops on the others.
pub const PLAIN_H1: u16 = 8080;
pub const PLAIN_H2: u16 = 8090;
pub const PLAIN_TCP: u16 = 7001;
pub const TLS_H1: u16 = 8180;
pub const TLS_H2: u16 = 8190;
pub const TLS_TCP: u16 = 7101;
pub const PLAIN_GRPC: u16 = 9000;
pub const TLS_GRPC: u16 = 9100;
/// The second hop's TLS ports.
const HOP_TLS_H1: u16 = 8443;
const HOP_TLS_H2: u16 = 9443;
const HOP_TLS_TCP: u16 = 7443;
const HOP_TLS_GRPC: u16 = 9543;

/// A frontend on `bind` to a backend with one `server` line.
fn haproxy_pair(name: &str, mode: &str, bind: &str, server: &str) -> String {
    let http = mode == "http";
    format!(
        "frontend {name}
  mode {mode}
  bind {bind}
{keep}  default_backend {name}
backend {name}
  mode {mode}
{reuse}  server next {server}
",
        keep = if http {
            "  option http-keep-alive\n"
        } else {
            ""
        },
        reuse = if http { "  http-reuse always\n" } else { "" },
    )
}

/// Each protocol of the HAProxy chains: its name and mode, whether it is HTTP/2 (h2c in
/// plaintext, ALPN `h2` over TLS), the first hop's plaintext-chain and TLS-chain ports, and the
/// second hop's TLS port (its plaintext port is the first hop's).
const HAPROXY_PROTOCOLS: [(&str, &str, bool, u16, u16, u16); 4] = [
    ("h1", "http", false, PLAIN_H1, TLS_H1, HOP_TLS_H1),
    ("h2", "http", true, PLAIN_H2, TLS_H2, HOP_TLS_H2),
    ("tcp", "tcp", false, PLAIN_TCP, TLS_TCP, HOP_TLS_TCP),
    ("grpc", "http", true, PLAIN_GRPC, TLS_GRPC, HOP_TLS_GRPC),
];

/// One HAProxy hop's configuration: every protocol's plaintext chain and TLS chain. The first
/// hop (`apps: None`) listens in plaintext and sends to the second, over TLS on the TLS chains;
/// the second terminates TLS on those and sends to the applications in plaintext. `leaf` is
/// this hop's certificate.
fn haproxy_conf(leaf: &Leaf, root: &Path, apps: Option<&Apps<'_>>) -> String {
    let tls_options = format!(
        "ssl crt {} ca-file {} verify required",
        leaf.combined.display(),
        root.display()
    );
    let mut conf = String::from(
        "global
  nbthread 2
  maxconn 4000
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
",
    );
    for (name, mode, h2, plain, first_tls, second_tls) in HAPROXY_PROTOCOLS {
        let proto = if h2 { " proto h2" } else { "" };
        let alpn = match (mode, h2) {
            ("tcp", _) => "",
            (_, true) => " alpn h2",
            _ => " alpn http/1.1",
        };
        let app = apps.map(|apps| match name {
            "h2" => apps.h2,
            "grpc" => apps.grpc,
            _ => apps.h1,
        });
        for tls in [false, true] {
            let section = if tls {
                format!("{name}tls")
            } else {
                name.to_string()
            };
            let second_port = if tls { second_tls } else { plain };
            let (bind, server) = match app {
                None => {
                    let port = if tls { first_tls } else { plain };
                    let to_tls = if tls {
                        format!(" {tls_options}{alpn}")
                    } else {
                        String::new()
                    };
                    (
                        format!("{HAPROXY_A}:{port}{proto}"),
                        format!("{HAPROXY_B}:{second_port}{to_tls}{proto}"),
                    )
                }
                Some(app) => {
                    let serve = if tls {
                        format!(" {tls_options}{alpn}")
                    } else {
                        proto.to_string()
                    };
                    (
                        format!("{HAPROXY_B}:{second_port}{serve}"),
                        format!("{app}{proto}"),
                    )
                }
            };
            conf.push_str(&haproxy_pair(&section, mode, &bind, &server));
        }
    }
    conf
}

/// An nginx `location` proxying to upstream `next` with pooled connections (`extra`: TLS).
fn nginx_location(scheme: &str, next: &str, extra: &str) -> String {
    format!(
        "location / {{ proxy_pass {scheme}://{next}; proxy_http_version 1.1; proxy_set_header Connection \"\";{extra} }}"
    )
}

/// An nginx `location` passing gRPC to upstream `next` (`extra`: TLS).
fn nginx_grpc_location(scheme: &str, next: &str, extra: &str) -> String {
    format!("location / {{ grpc_pass {scheme}://{next};{extra} }}")
}

/// The TLS directives of an originating hop (`proxy` or `grpc`).
fn nginx_originate(module: &str, leaf: &Leaf, root: &Path) -> String {
    format!(
        " {module}_ssl_certificate {}; {module}_ssl_certificate_key {}; {module}_ssl_trusted_certificate {}; {module}_ssl_verify on; {module}_ssl_name {REFERENCE_NAME}; {module}_ssl_session_reuse on;",
        leaf.cert.display(),
        leaf.key.display(),
        root.display()
    )
}

/// One nginx hop: HTTP/1.1 on `listen`:8080 to `next` and gRPC on 9000 to `next_grpc`, with
/// pooled upstream connections. The first hop ([`NginxTls::Originate`]) also listens on 8180
/// and 9100 and sends over mutual TLS to the second; the second ([`NginxTls::Terminate`]) also
/// serves mutual TLS on 8443 and 9543.
fn nginx_conf(dir: &Path, name: &str, listen: &str, next: [&str; 2], tls: NginxTls<'_>) -> String {
    let [next, next_grpc] = next;
    let d = dir.display();
    let upstream = |name: &str, server: &str| {
        format!(
            "upstream {name} {{ server {server}; keepalive 64; keepalive_requests 1000000; }}\n  "
        )
    };
    let mut upstreams = upstream("next", next) + &upstream("grpc_next", next_grpc);
    let mut servers = format!(
        "server {{ listen {listen}:{PLAIN_H1}; {} }}\n  server {{ listen {listen}:{PLAIN_GRPC} http2; {} }}\n",
        nginx_location("http", "next", ""),
        nginx_grpc_location("grpc", "grpc_next", "")
    );
    match tls {
        NginxTls::Originate { to, leaf, root } => {
            let [to, to_grpc] = to;
            upstreams.push_str(&upstream("next_tls", to));
            upstreams.push_str(&upstream("grpc_next_tls", to_grpc));
            servers.push_str(&format!(
                "  server {{ listen {listen}:{TLS_H1}; {} }}\n  server {{ listen {listen}:{TLS_GRPC} http2; {} }}\n",
                nginx_location("https", "next_tls", &nginx_originate("proxy", leaf, root)),
                nginx_grpc_location(
                    "grpcs",
                    "grpc_next_tls",
                    &nginx_originate("grpc", leaf, root)
                )
            ));
        }
        NginxTls::Terminate { leaf, root } => {
            let terminate = format!(
                "ssl_certificate {}; ssl_certificate_key {}; ssl_client_certificate {}; ssl_verify_client on;",
                leaf.cert.display(),
                leaf.key.display(),
                root.display(),
            );
            servers.push_str(&format!(
                "  server {{ listen {listen}:{HOP_TLS_H1} ssl; {terminate} {} }}\n  server {{ listen {listen}:{HOP_TLS_GRPC} ssl http2; {terminate} {} }}\n",
                nginx_location("http", "next", ""),
                nginx_grpc_location("grpc", "grpc_next", "")
            ));
        }
    }
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
  {upstreams}{servers}}}
"
    )
}

/// What an nginx hop does with TLS.
enum NginxTls<'a> {
    /// Sends to `to` (HTTP/1.1, gRPC) over mutual TLS (the first hop).
    Originate {
        to: [&'a str; 2],
        leaf: &'a Leaf,
        root: &'a Path,
    },
    /// Serves mutual TLS (the second hop).
    Terminate { leaf: &'a Leaf, root: &'a Path },
}

/// The running reference proxies, stopped when dropped (nginx gracefully, so its workers go).
pub struct References {
    pub haproxy: [Started; 2],
    pub nginx: [Started; 2],
}

/// The applications' addresses: HTTP/1.1, HTTP/2 (h2c), gRPC.
#[derive(Clone, Copy)]
pub struct Apps<'a> {
    pub h1: &'a str,
    pub h2: &'a str,
    pub grpc: &'a str,
}

/// Starts both chains in front of the applications.
pub fn start(
    work: &Path,
    logs: &Path,
    pki: &ReferencePki,
    apps: Apps<'_>,
) -> anyhow::Result<References> {
    let haproxy = |name: &str, conf: String| -> anyhow::Result<Started> {
        let path = work.join(format!("{name}.cfg"));
        std::fs::write(&path, conf)?;
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&path);
        Started::spawn(name, &mut cmd, &logs.join(format!("{name}.log")))
            .context("starting haproxy (install haproxy; scripts/bench does)")
    };
    let b = haproxy(
        "haproxy-b",
        haproxy_conf(&pki.second, &pki.root, Some(&apps)),
    )?;
    let a = haproxy("haproxy-a", haproxy_conf(&pki.first, &pki.root, None))?;
    let nginx = |name: &str, listen: &str, next: [&str; 2], tls| -> anyhow::Result<Started> {
        let path = work.join(format!("{name}.conf"));
        std::fs::write(&path, nginx_conf(work, name, listen, next, tls))?;
        let mut cmd = Command::new("nginx");
        cmd.arg("-c").arg(&path).arg("-p").arg(work);
        let mut s = Started::spawn(name, &mut cmd, &logs.join(format!("{name}.log")))?;
        s.graceful = true;
        Ok(s)
    };
    let nb = nginx(
        "nginx-b",
        NGINX_B,
        [apps.h1, apps.grpc],
        NginxTls::Terminate {
            leaf: &pki.second,
            root: &pki.root,
        },
    )?;
    let to = [
        format!("{NGINX_B}:{HOP_TLS_H1}"),
        format!("{NGINX_B}:{HOP_TLS_GRPC}"),
    ];
    let next = [
        format!("{NGINX_B}:{PLAIN_H1}"),
        format!("{NGINX_B}:{PLAIN_GRPC}"),
    ];
    let na = nginx(
        "nginx-a",
        NGINX_A,
        [&next[0], &next[1]],
        NginxTls::Originate {
            to: [&to[0], &to[1]],
            leaf: &pki.first,
            root: &pki.root,
        },
    )?;
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
            (HAPROXY_A, PLAIN_H1),
            (HAPROXY_A, TLS_TCP),
            (HAPROXY_B, PLAIN_H1),
            (HAPROXY_B, HOP_TLS_TCP),
            (NGINX_A, PLAIN_H1),
            (NGINX_A, TLS_H1),
            (NGINX_B, PLAIN_H1),
            (NGINX_B, HOP_TLS_H1),
            (NGINX_A, TLS_GRPC),
            (NGINX_B, HOP_TLS_GRPC),
            (HAPROXY_A, TLS_GRPC),
            (HAPROXY_B, HOP_TLS_GRPC),
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

    /// The PIDs of a chain's hops (nginx: the masters only).
    pub fn pids(&self, haproxy: bool) -> Vec<u32> {
        let procs = if haproxy { &self.haproxy } else { &self.nginx };
        procs.iter().map(Started::pid).collect()
    }
}
