//! Processes the runner starts: each is stopped by its PID when dropped; what the kernel says
//! about them (resident memory, CPU time); a minimal HTTP GET for readiness and metrics.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A started process, killed (by PID) and reaped when dropped.
pub struct Started {
    child: Child,
    pub what: String,
    /// Stop with SIGTERM first (processes that must stop their own children, like nginx's
    /// master), then SIGKILL after 3 s.
    pub graceful: bool,
}

impl Started {
    pub fn spawn(what: &str, command: &mut Command, log: &Path) -> anyhow::Result<Started> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("creating log file {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {what}: {command:?}"))?;
        Ok(Started {
            child,
            what: what.to_string(),
            graceful: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status}); see its log", self.what);
        }
        Ok(())
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid())
    }

    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid())
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.graceful {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident set size now, in KiB.
    pub rss_kib: u64,
    /// Peak resident set size, in KiB.
    pub peak_kib: u64,
    /// Of the resident set, anonymous memory (heap, stacks): the process's own, in KiB.
    pub anon_kib: u64,
    /// Of the resident set, pages of mapped files (the executable's code and data, shared
    /// libraries), in KiB: the page cache's, shared with every process that maps the same file.
    pub file_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
        })
    }
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User plus system CPU time of a process, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc/PID/stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((ticks(11) + ticks(12)) as f64 / clock_ticks())
}

/// CPU time of a process and its direct children (nginx's master and workers).
pub fn tree_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let mut total = cpu_seconds(pid)?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            total += cpu_seconds(child).unwrap_or(0.0);
        }
    }
    Ok(total)
}

/// A free loopback port (bound and released; the runner uses it right away).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// `GET path` on 127.0.0.1:port with HTTP/1.0: the status and body, or `None` when nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Waits until `GET /ready` answers 200, at most `limit`.
pub async fn wait_ready(p: &mut Started, port: u16, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        p.check_alive()?;
        if let Some((200, _)) = http_get(port, "/ready").await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("{} was not ready after {limit:?}", p.what);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
