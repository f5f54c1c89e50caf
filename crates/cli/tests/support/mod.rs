//! Test support for end-to-end tests: the `strait` binary and Python gRPC processes on
//! loopback, each stopped by PID when dropped; bounded waits; a minimal HTTP client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The virtualenv Python with grpcio that `scripts/test` creates.
pub fn python() -> PathBuf {
    let p = std::env::var("STRAIT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: these tests run a real gRPC xDS client; run scripts/test (it creates .venv with grpcio) or set STRAIT_PYTHON",
        p.display()
    );
    p
}

/// A loopback port free now, and never handed out before in this test process: tests run
/// side by side, and the kernel may offer a port again before the process it was meant for
/// has bound it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port that was not handed out already, in 1000 tries");
}

/// A child process stopped (by its PID) when dropped.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP echo server on `127.0.0.1` for the next `connections` connections (each served on a
/// thread of its own); its port.
pub fn tcp_echo_server(connections: usize) -> u16 {
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in echo.incoming().take(connections) {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Waits until `f` returns `Some`, at most `limit`, checking every 50 ms.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` on 127.0.0.1:port; (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A running control plane on free loopback ports.
pub struct ControlPlane {
    pub proc: Proc,
    pub xds_port: u16,
    pub debug_port: u16,
    /// The CA and xDS over TLS (Istio's 15012).
    pub secure_port: u16,
    pub config: PathBuf,
}

impl ControlPlane {
    pub fn start(config: &Path, extra: &[&str]) -> ControlPlane {
        // A port free a moment ago may be taken by the time the control plane binds it: then
        // it exits saying so, and fresh ports are tried (a bounded number of times).
        let mut last = String::new();
        for _ in 0..3 {
            match ControlPlane::try_start("cluster1", config, free_port(), free_port(), extra) {
                Ok(cp) => return cp,
                Err(e) if e.contains("in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last}")
    }

    /// Starts on given ports (to restart one where its proxies expect it).
    pub fn start_on(config: &Path, xds_port: u16, debug_port: u16, extra: &[&str]) -> ControlPlane {
        ControlPlane::start_cluster("cluster1", config, xds_port, debug_port, extra)
    }

    /// Starts the control plane of cluster `cluster`.
    pub fn start_cluster(
        cluster: &str,
        config: &Path,
        xds_port: u16,
        debug_port: u16,
        extra: &[&str],
    ) -> ControlPlane {
        ControlPlane::try_start(cluster, config, xds_port, debug_port, extra)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a control plane and waits until it is ready; the error carries its exit status
    /// and log when it exits first or is not ready within 30 s.
    fn try_start(
        cluster: &str,
        config: &Path,
        xds_port: u16,
        debug_port: u16,
        extra: &[&str],
    ) -> Result<ControlPlane, String> {
        let secure_port = free_port();
        let log = config.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_strait"))
            .args(["control-plane", "--cluster", cluster, "--config"])
            .arg(config)
            .args([
                "--xds-listen",
                &format!("127.0.0.1:{xds_port}"),
                "--debug-listen",
                &format!("127.0.0.1:{debug_port}"),
                "--secure-listen",
                &format!("127.0.0.1:{secure_port}"),
            ])
            .args(extra)
            // `STRAIT_TEST_LOG=debug` to see more of what a failing test's proxies did.
            .env(
                "RUST_LOG",
                std::env::var("STRAIT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let mut cp = ControlPlane {
            proc: Proc {
                child,
                what: "control plane".into(),
            },
            xds_port,
            debug_port,
            secure_port,
            config: config.to_path_buf(),
        };
        let start = Instant::now();
        loop {
            if http_get(debug_port, "/ready").is_some_and(|(s, _)| s == 200) {
                return Ok(cp);
            }
            let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(Some(status)) = cp.proc.child.try_wait() {
                return Err(format!(
                    "the control plane exited ({status}) before it was ready; its log:\n{}",
                    log_text()
                ));
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "the control plane was not ready after 30 s; its log:\n{}",
                    log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> String {
        http_get(self.debug_port, path)
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }

    /// Writes a gRPC xDS bootstrap for a proxyless client at `locality`.
    pub fn bootstrap(&self, dir: &Path, name: &str, region: &str, zone: &str) -> PathBuf {
        let path = dir.join(format!("{name}-bootstrap.json"));
        let body = serde_json::json!({
            "xds_servers": [{"server_uri": format!("127.0.0.1:{}", self.xds_port), "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
            "node": {
                "id": format!("sidecar~127.0.0.1~{name}.sample~sample.svc.cluster.local"),
                "metadata": {"GENERATOR": "grpc", "NAMESPACE": "sample"},
                "locality": {"region": region, "zone": zone}
            }
        });
        std::fs::write(&path, body.to_string()).unwrap();
        path
    }
}

/// Starts `cmd` and waits for it to print "ready".
fn spawn_ready(mut cmd: Command, what: String) -> Proc {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "{what} did not start");
    Proc { child, what }
}

/// A Python gRPC backend answering with `name` on `ip:port`.
pub fn backend(name: &str, ip: &str, port: u16) -> Proc {
    backend_with(name, ip, port, &[])
}

/// [`backend`], recycling each connection after `age_ms` (gRPC's `max_connection_age`).
pub fn backend_aged(name: &str, ip: &str, port: u16, age_ms: u32) -> Proc {
    backend_with(name, ip, port, &[&age_ms.to_string()])
}

fn backend_with(name: &str, ip: &str, port: u16, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/grpc/backend.py"))
        .args([name, &format!("{ip}:{port}")])
        .args(extra);
    spawn_ready(cmd, format!("gRPC backend {name} on {ip}:{port}"))
}

/// Runs the proxyless client to completion (at most 120 s) and returns its stdout.
pub fn client(bootstrap: &Path, target: &str, args: &[&str]) -> String {
    let mut child = client_spawn(bootstrap, target, args);
    let start = Instant::now();
    loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            let mut out = String::new();
            child
                .child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert!(status.success(), "client failed ({status}): {out}");
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "client did not finish in 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn client_spawn(bootstrap: &Path, target: &str, args: &[&str]) -> Proc {
    let child = Command::new(python())
        .arg(repo().join("tests/grpc/client.py"))
        .arg(target)
        .args(args)
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .env("GRPC_VERBOSITY", "ERROR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc {
        child,
        what: "client".into(),
    }
}

/// Lines of a running process's stdout, read on a thread.
pub fn lines(stdout: ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running `strait up` with its own run name and state directory; dropping it stops the run
/// and removes what it made (`strait up --down`), even when the test fails.
pub struct UpRun {
    pub up: Child,
    pub name: String,
    pub state: tempfile::TempDir,
    out: std::sync::mpsc::Receiver<String>,
    /// What `strait up` printed so far (as far as [`UpRun::wait_line`] read).
    pub printed: Vec<String>,
}

impl UpRun {
    /// Runs `command` (the `strait` binary, or a wrapper that ends with it) as
    /// `up examples/<example> --name NAME --state-dir STATE` and waits until it says it is up;
    /// panics with what it printed otherwise.
    pub fn start(
        mut command: Command,
        example: &str,
        name: String,
        state: tempfile::TempDir,
    ) -> UpRun {
        let mut up = command
            .arg("up")
            .arg(repo().join("examples").join(example))
            .args(["--name", &name, "--status-every", "0", "--state-dir"])
            .arg(state.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines(up.stdout.take().unwrap());
        let mut run = UpRun {
            up,
            name,
            state,
            out,
            printed: Vec::new(),
        };
        if run
            .wait_line(Duration::from_secs(120), |l| l.contains(" is up;"))
            .is_none()
        {
            let _ = run.up.kill();
            let mut err = String::new();
            let _ = BufReader::new(run.up.stderr.take().unwrap()).read_to_string(&mut err);
            panic!(
                "strait up {example} did not come up:\n{}\n{err}",
                run.printed.join("\n")
            );
        }
        run
    }

    /// Waits (at most `limit`) for a line of `strait up`'s output matching `want`.
    pub fn wait_line(&mut self, limit: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let line = self.out.recv_timeout(left).ok()?;
            self.printed.push(line.clone());
            if want(&line) {
                return Some(line);
            }
        }
        None
    }

    /// One of the run's log files (`<cluster>_<namespace>_<pod>.<what>.log`).
    pub fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.state.path().join("logs").join(file)).unwrap_or_default()
    }
}

impl Drop for UpRun {
    fn drop(&mut self) {
        let _ = self.up.kill();
        let _ = self.up.wait();
        let _ = Command::new(env!("CARGO_BIN_EXE_strait"))
            .args(["up", "--down", "--name", &self.name, "--state-dir"])
            .arg(self.state.path())
            .output();
    }
}

/// A Python HTTP/1.1 backend (`tests/http/backend.py`) named `name` on `ip:port`; with
/// `always`, it answers every request with that status.
pub fn http_backend(name: &str, ip: &str, port: u16, always: Option<u16>) -> Proc {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/http/backend.py"))
        .args([name, &format!("{ip}:{port}")]);
    if let Some(s) = always {
        cmd.arg(s.to_string());
    }
    spawn_ready(cmd, format!("HTTP backend {name} on {ip}:{port}"))
}

/// An HTTPS backend (`tests/http/backend.py` with its TLS variables) at `addr`, presenting
/// `cert`; with `client_ca`, requiring a client certificate issued by it.
pub fn https_backend(
    name: &str,
    addr: &str,
    dir: &Path,
    cert: &str,
    client_ca: Option<&str>,
) -> Proc {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/http/backend.py"))
        .args([name, addr])
        .env("BACKEND_TLS_CERT", dir.join(format!("{cert}.pem")))
        .env("BACKEND_TLS_KEY", dir.join(format!("{cert}.key")));
    if let Some(ca) = client_ca {
        cmd.env("BACKEND_TLS_CLIENT_CA", dir.join(ca));
    }
    spawn_ready(cmd, format!("HTTPS backend {name} on {addr}"))
}

/// A running `strait proxy` with its admin API on a free loopback port.
pub struct StraitProxy {
    pub proc: Proc,
    pub admin_port: u16,
    pub log: PathBuf,
    pub access_log: PathBuf,
}

impl StraitProxy {
    /// Starts a sidecar for `pod` in `namespace` with `labels` (`app=x,version=y`), and waits
    /// until it has its whole configuration.
    pub fn start(cp: &ControlPlane, dir: &Path, ip: &str, pod: &str, labels: &str) -> StraitProxy {
        let id = format!("sidecar~{ip}~{pod}.default~default.svc.cluster.local");
        StraitProxy::start_node(cp, dir, &id, pod, labels)
    }

    /// Starts a proxy with any node ID (`router~...` for a gateway).
    pub fn start_node(
        cp: &ControlPlane,
        dir: &Path,
        id: &str,
        pod: &str,
        labels: &str,
    ) -> StraitProxy {
        StraitProxy::start_with(cp, dir, id, pod, labels, &[])
    }

    /// Starts a proxy with extra flags; with `--ca-root` among them it talks to the control
    /// plane's TLS port (xDS and CA) instead of the plaintext one.
    pub fn start_with(
        cp: &ControlPlane,
        dir: &Path,
        id: &str,
        pod: &str,
        labels: &str,
        extra: &[&str],
    ) -> StraitProxy {
        let p = Self::spawn_with(cp, dir, id, pod, labels, extra);
        wait_for(Duration::from_secs(20), "the proxy to be ready", || {
            http_get(p.admin_port, "/ready").filter(|(s, _)| *s == 200)
        });
        p
    }

    /// As [`StraitProxy::start_with`], without waiting for the proxy to be ready (for one that
    /// is expected never to be).
    pub fn spawn_with(
        cp: &ControlPlane,
        dir: &Path,
        id: &str,
        pod: &str,
        labels: &str,
        extra: &[&str],
    ) -> StraitProxy {
        let admin_port = free_port();
        let xds_port = if extra.contains(&"--ca-root") {
            cp.secure_port
        } else {
            cp.xds_port
        };
        let log = dir.join(format!("{pod}.proxy.log"));
        let access_log = dir.join(format!("{pod}.access.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_strait"))
            .args([
                "proxy",
                "--xds",
                &format!("127.0.0.1:{xds_port}"),
                "--node-id",
                id,
                "--meta",
                "CLUSTER_ID=cluster1",
                "--meta",
                &format!("LABELS={labels}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin_port}"),
                "--health-listen",
                "off",
                "--prometheus-listen",
                "off",
                "--access-log",
            ])
            .arg(&access_log)
            .args(extra)
            // `STRAIT_TEST_LOG=debug` to see more of what a failing test's proxies did.
            .env(
                "RUST_LOG",
                std::env::var("STRAIT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        StraitProxy {
            proc: Proc {
                child,
                what: format!("proxy {pod}"),
            },
            admin_port,
            log,
            access_log,
        }
    }

    /// Waits (at most 20 s) until the proxy logs that it holds its workload certificate.
    pub fn wait_for_certificate(&self) {
        wait_for(Duration::from_secs(20), "the workload certificate", || {
            self.log()
                .contains("workload certificate issued")
                .then_some(())
        });
    }

    pub fn admin(&self, path: &str) -> String {
        http_get(self.admin_port, path)
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }
}

/// Runs a command to completion (at most 120 s; then it is killed by PID); (exit success,
/// stdout, stderr).
pub fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is missing ({e}): scripts/test installs it"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(out)) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => panic!("{program}: {e}"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{program} {args:?} did not finish in 120 s");
        }
    }
}

/// `curl` with `args`; (HTTP status, body). `-s -o - -w` adds the status on the last line.
pub fn curl(args: &[&str]) -> (u16, String) {
    let mut all = vec!["-s", "-m", "10", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let (_, out, _) = run("curl", &all);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Runs the gRPC client (`tests/grpc/client.py`) against a plain `host:port` target (no xDS);
/// returns its stdout.
pub fn client_plain(target: &str, args: &[&str]) -> String {
    let script = repo().join("tests/grpc/client.py");
    let mut all = vec![script.to_str().unwrap(), target];
    all.extend_from_slice(args);
    let (ok, out, err) = run(python().to_str().unwrap(), &all);
    assert!(ok, "gRPC client failed: {out}\n{err}");
    out
}

/// Runs the `strait` binary to completion; its stdout (panics with its stderr if it fails).
pub fn strait(args: &[&str]) -> String {
    let (ok, out, err) = run(env!("CARGO_BIN_EXE_strait"), args);
    assert!(ok, "strait {args:?} failed: {err}");
    out
}

/// A mesh root and cluster1's intermediate made with `strait ca`, as an operator makes them,
/// and the key that signs bootstrap tokens.
pub struct MeshCa {
    dir: PathBuf,
    /// `cacerts/`, in Istio's layout.
    pub cacerts: PathBuf,
    /// The roots proxies trust (`cacerts/root-cert.pem`).
    pub root: PathBuf,
    pub token_key: PathBuf,
}

impl MeshCa {
    pub fn create(dir: &Path) -> MeshCa {
        let path = |p: &str| dir.join(p).to_str().unwrap().to_string();
        strait(&["ca", "init", "--out", &path("root")]);
        strait(&[
            "ca",
            "intermediate",
            "--root",
            &path("root"),
            "--cluster",
            "cluster1",
            "--out",
            &path("cacerts"),
        ]);
        MeshCa {
            dir: dir.to_path_buf(),
            cacerts: dir.join("cacerts"),
            root: dir.join("cacerts/root-cert.pem"),
            token_key: dir.join("token-key"),
        }
    }

    /// The control plane's flags: sign with the intermediate, check tokens with the key.
    pub fn control_plane_args(&self) -> Vec<String> {
        vec![
            "--cacerts".into(),
            self.cacerts.to_str().unwrap().into(),
            "--token-key".into(),
            self.token_key.to_str().unwrap().into(),
        ]
    }

    /// A bootstrap token file for `namespace/service_account`.
    pub fn token(&self, namespace: &str, service_account: &str) -> PathBuf {
        let path = self
            .dir
            .join(format!("{namespace}.{service_account}.token"));
        let token = strait(&[
            "ca",
            "token",
            "--key",
            self.token_key.to_str().unwrap(),
            "--namespace",
            namespace,
            "--service-account",
            service_account,
        ]);
        std::fs::write(&path, token.trim()).unwrap();
        path
    }

    /// A proxy's flags to obtain its certificate (lifetime `ttl` seconds) and xDS over TLS.
    pub fn proxy_args(&self, namespace: &str, service_account: &str, ttl: &str) -> Vec<String> {
        vec![
            "--ca-root".into(),
            self.root.to_str().unwrap().into(),
            "--token".into(),
            self.token(namespace, service_account)
                .to_str()
                .unwrap()
                .into(),
            "--service-account".into(),
            service_account.into(),
            "--cert-ttl".into(),
            ttl.into(),
        ]
    }
}

/// `strait ca issue`: a certificate for `default/service_account` signed by the intermediate in
/// `cacerts`, written to `out` (`extra` flags such as `--ttl 1` appended).
pub fn issue_certificate(cacerts: &Path, service_account: &str, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "ca",
        "issue",
        "--cacerts",
        cacerts.to_str().unwrap(),
        "--namespace",
        "default",
        "--service-account",
        service_account,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    strait(&args);
}

/// Borrows owned arguments as the `&[&str]` process helpers take.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The manifests of a two-sidecar mesh in namespace `default`: `echo` (pod `echo-0` at
/// `echo_ip`, a sidecar with an explicit ingress listener on `echo_ip:8080` in front of the app
/// on `127.0.0.1:app_port`) and a `client` sidecar with an egress listener on
/// `client_ip:8080`, under a STRICT PeerAuthentication; `extra` manifests are appended.
pub fn two_sidecar_mesh(echo_ip: &str, client_ip: &str, app_port: u16, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec: {{ports: [{{name: http, port: 8080}}], selector: {{app: echo}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: echo-0, namespace: default, labels: {{app: echo, security.istio.io/tlsMode: istio}}}}
spec: {{serviceAccountName: echo}}
status: {{podIP: {echo_ip}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: client, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: client}}}}
  egress:
  - port: {{number: 8080, protocol: HTTP, name: http}}
    bind: {client_ip}
    captureMode: NONE
    hosts: [\"./*\"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: echo, namespace: default}}
spec:
  workloadSelector: {{labels: {{app: echo}}}}
  ingress:
  - port: {{number: 8080, protocol: HTTP, name: http}}
    bind: {echo_ip}
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:{app_port}
  egress:
  - hosts: [\"./*\"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
{extra}"
    )
}

/// h2load's count of responses by class: [2xx, 3xx, 4xx, 5xx], and of failed requests.
pub fn h2load(args: &[&str]) -> ([u64; 4], u64, String) {
    let (_, out, err) = run("h2load", args);
    let codes = out
        .lines()
        .find(|l| l.trim_start().starts_with("status codes:"))
        .unwrap_or_else(|| panic!("h2load printed no status codes:\n{out}\n{err}"));
    let mut n = [0u64; 4];
    for (i, part) in codes.split(':').nth(1).unwrap().split(',').enumerate() {
        n[i] = part.split_whitespace().next().unwrap().parse().unwrap();
    }
    let failed = out
        .lines()
        .find(|l| l.trim_start().starts_with("requests:"))
        .and_then(|l| {
            l.split(',')
                .find(|p| p.contains("failed"))
                .and_then(|p| p.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(u64::MAX);
    (n, failed, out)
}

/// `curl -s ARGS` run inside network namespace `ns`: its output.
pub fn curl_raw_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", ns, "curl", "-s"];
    all.extend_from_slice(args);
    run("ip", &all).1
}

/// `curl -s ARGS` run inside network namespace `ns` (10 s at most): (status, body).
pub fn curl_in(ns: &str, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-m", "10", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = curl_raw_in(ns, &all);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A Python grpcio client: one echo call, one call to an unknown method.
pub const GRPC_ECHO_CALL: &str = r#"
import sys, grpc
channel = grpc.insecure_channel(sys.argv[1])
grpc.channel_ready_future(channel).result(timeout=10)
echo = channel.unary_unary("/strait.demo.v1.Echo/Echo")
reply = echo(b"\n\x02hi", timeout=5)
print(reply.hex())
try:
    channel.unary_unary("/strait.demo.v1.Echo/Other")(b"", timeout=5)
    print("no error")
except grpc.RpcError as e:
    print(e.code().name)
"#;

/// `httpbin` in namespace `foo` at `ip` without capture: its Service, its Pod (mesh mTLS) and a
/// Sidecar binding each port `(number, protocol, app port)` on `ip` in front of the app on
/// `127.0.0.1`.
pub fn bound_httpbin(ip: &str, ports: &[(u16, &str, u16)]) -> String {
    let service_ports: Vec<String> = ports
        .iter()
        .map(|(n, p, _)| format!("{{name: {}-{n}, port: {n}}}", p.to_ascii_lowercase()))
        .collect();
    let ingress: String = ports
        .iter()
        .map(|(n, p, app)| {
            format!(
                "  - port: {{number: {n}, protocol: {p}, name: {}}}\n    bind: {ip}\n    captureMode: NONE\n    defaultEndpoint: 127.0.0.1:{app}\n",
                p.to_ascii_lowercase()
            )
        })
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: foo}}
spec: {{ports: [{}], selector: {{app: httpbin}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: httpbin-0, namespace: foo, labels: {{app: httpbin, security.istio.io/tlsMode: istio}}}}
spec: {{serviceAccountName: httpbin}}
status: {{podIP: {ip}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: httpbin, namespace: foo}}
spec:
  workloadSelector: {{labels: {{app: httpbin}}}}
  ingress:
{ingress}  egress:
  - hosts: [\"./*\"]
",
        service_ports.join(", ")
    )
}
