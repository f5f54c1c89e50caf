//! CPU profiles taken in the run: `perf record` sampling the measured processes while they
//! work, summarized by component (kernel networking, scheduling, TLS, HTTP/2, runtime,
//! allocator, …), so that a missed target comes with where the time went.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Sampling frequency (Hz, per CPU). Odd, so it does not beat with periodic work.
const FREQUENCY: &str = "997";

/// What to profile with, when it is `wanted` (some) and `perf` can record here; the reason
/// when not.
pub fn ready<T>(wanted: Option<T>) -> Result<T, String> {
    let wanted = wanted.ok_or_else(|| "not profiled in this run".to_string())?;
    available()?;
    Ok(wanted)
}

/// Whether `perf` can record here; the reason when it cannot.
fn available() -> Result<(), String> {
    match Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`perf --version` failed ({s})")),
        Err(e) => Err(format!(
            "perf is not installed ({e}); scripts/bench installs it (Debian: linux-perf)"
        )),
    }
}

/// A `perf record` (samples) and a `perf stat` (system calls and context switches) attached to
/// some processes; stopped (SIGINT, so they write their data) by [`Recording::finish`], killed
/// by their PIDs when dropped unfinished.
pub struct Recording {
    record: Option<Child>,
    stat: Option<Child>,
    file: PathBuf,
    counts: PathBuf,
    started: Instant,
}

/// What `perf stat` counts alongside the samples.
const COUNTED: &str = "raw_syscalls:sys_enter,context-switches";

impl Recording {
    /// Starts sampling every thread of `pids` (on-CPU time, software clock: this machine's
    /// virtual CPUs have no hardware counters) into `file`, and counting their system calls
    /// and context switches; returns once perf had the moment it needs to attach.
    pub async fn start(pids: &[u32], file: &Path, log: &Path) -> anyhow::Result<Recording> {
        let pids = pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let log_file = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening log file {}", log.display()))
        };
        let spawn = |command: &mut Command| -> anyhow::Result<Child> {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file()?)
                .spawn()
                .with_context(|| format!("starting {command:?}"))
        };
        let counts = file.with_extension("counts");
        let mut recording = Recording {
            record: None,
            stat: None,
            file: file.to_path_buf(),
            counts: counts.clone(),
            started: Instant::now(),
        };
        recording.record = Some(spawn(
            Command::new("perf")
                .args(["record", "-e", "cpu-clock", "-F", FREQUENCY, "--quiet"])
                .args(["-p", &pids, "-o"])
                .arg(file),
        )?);
        recording.stat = Some(spawn(
            Command::new("perf")
                .args(["stat", "-x", ",", "-e", COUNTED, "-p", &pids, "-o"])
                .arg(&counts),
        )?);
        // perf attaches to the threads after it starts.
        tokio::time::sleep(Duration::from_millis(200)).await;
        recording.started = Instant::now();
        Ok(recording)
    }

    /// Stops recording and summarizes what was sampled and counted.
    pub fn finish(mut self) -> anyhow::Result<Profile> {
        let recorded = self.started.elapsed();
        let record = stop(self.record.take(), "perf record")?;
        let stat = stop(self.stat.take(), "perf stat")?;
        // perf exits with the signal's status after writing its data; the files tell.
        anyhow::ensure!(
            self.file.exists(),
            "perf record wrote no data ({record}); see its log"
        );
        let out = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--quiet",
                "--no-children",
                "--show-nr-samples",
            ])
            .args(["--sort", "dso,sym", "-i"])
            .arg(&self.file)
            .stderr(Stdio::null())
            .output()
            .context("running perf report")?;
        anyhow::ensure!(
            out.status.success(),
            "perf report failed ({}) on {}",
            out.status,
            self.file.display()
        );
        let mut profile = Profile::from_report(&String::from_utf8_lossy(&out.stdout));
        profile.recorded = recorded;
        let counts = std::fs::read_to_string(&self.counts)
            .with_context(|| format!("perf stat ({stat}) wrote no counts"))?;
        profile.syscalls = count(&counts, "raw_syscalls:sys_enter");
        profile.context_switches = count(&counts, "context-switches");
        Ok(profile)
    }
}

/// Stops a perf process with SIGINT (it then writes what it has) and waits for it.
fn stop(perf: Option<Child>, what: &str) -> anyhow::Result<std::process::ExitStatus> {
    let Some(mut perf) = perf else {
        bail!("{what} was already stopped");
    };
    let _ = Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = perf.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = perf.kill();
            let _ = perf.wait();
            bail!("{what} did not stop within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An event's count from `perf stat -x ,` output (`12133,,raw_syscalls:sys_enter,…`).
fn count(stat: &str, event: &str) -> Option<u64> {
    stat.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&event))
        .and_then(|f| f.first()?.parse().ok())
}

impl Drop for Recording {
    fn drop(&mut self) {
        for mut perf in [self.record.take(), self.stat.take()].into_iter().flatten() {
            let _ = perf.kill();
            let _ = perf.wait();
        }
    }
}

/// One line of `perf report --sort dso,sym`: a symbol's share of the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    pub percent: f64,
    pub samples: u64,
    /// The executable or library (`[kernel.kallsyms]` for the kernel).
    pub dso: String,
    pub kernel: bool,
    pub name: String,
}

/// What a profile showed: shares by component, and the hottest symbols.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Components by share of the samples, largest first.
    pub components: Vec<(&'static str, f64)>,
    /// The hottest symbols, largest first.
    pub top: Vec<Symbol>,
    /// Samples in all.
    pub samples: u64,
    /// System calls and context switches of the profiled processes meanwhile (`perf stat`).
    pub syscalls: Option<u64>,
    pub context_switches: Option<u64>,
    pub recorded: Duration,
}

/// How many symbols [`Profile::top`] keeps.
const TOP: usize = 10;

impl Profile {
    /// Reads `perf report --stdio --quiet --no-children --show-nr-samples --sort dso,sym`
    /// output.
    pub fn from_report(report: &str) -> Profile {
        let symbols: Vec<Symbol> = report.lines().filter_map(parse_line).collect();
        let samples = symbols.iter().map(|s| s.samples).sum();
        let mut shares: HashMap<&'static str, f64> = HashMap::new();
        for s in &symbols {
            *shares.entry(component(s)).or_default() += s.percent;
        }
        let mut components: Vec<_> = shares.into_iter().collect();
        components.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let mut top = symbols;
        top.sort_by(|a, b| b.percent.total_cmp(&a.percent));
        top.truncate(TOP);
        Profile {
            components,
            top,
            samples,
            syscalls: None,
            context_switches: None,
            recorded: Duration::ZERO,
        }
    }

    /// The share of one component (0 when absent).
    pub fn share(&self, component: &str) -> f64 {
        self.components
            .iter()
            .find(|(c, _)| *c == component)
            .map(|(_, p)| *p)
            .unwrap_or(0.0)
    }

    /// The kernel's share, all kernel components together.
    pub fn kernel_share(&self) -> f64 {
        self.components
            .iter()
            .filter(|(c, _)| c.starts_with("kernel"))
            .map(|(_, p)| p)
            .sum()
    }
}

/// `    12.50%  1043  strait             [.] h2::codec::…` → a [`Symbol`].
fn parse_line(line: &str) -> Option<Symbol> {
    let line = line.trim_start();
    let (percent, rest) = line.split_once('%')?;
    let percent: f64 = percent.trim().parse().ok()?;
    let (samples, rest) = rest.trim_start().split_once(char::is_whitespace)?;
    let samples: u64 = samples.parse().ok()?;
    let rest = rest.trim_start();
    let (dso, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (kernel, name) = if let Some(name) = rest.strip_prefix("[k]") {
        (true, name)
    } else if let Some(name) = rest.strip_prefix("[.]") {
        (false, name)
    } else {
        return None;
    };
    Some(Symbol {
        percent,
        samples,
        dso: dso.to_string(),
        kernel,
        name: name.trim().to_string(),
    })
}

/// The component a sampled symbol belongs to.
pub fn component(s: &Symbol) -> &'static str {
    if s.kernel {
        return kernel_component(&s.name);
    }
    let dso = s.dso.as_str();
    if dso.starts_with("libc.so") || dso.starts_with("libc-") {
        return "libc (memcpy, memmove, …)";
    }
    if dso.starts_with("libcrypto") || dso.starts_with("libssl") {
        return "TLS (OpenSSL)";
    }
    if dso == "haproxy" {
        return "HAProxy";
    }
    if dso.starts_with("nginx") {
        return "nginx";
    }
    rust_component(&s.name)
}

fn kernel_component(name: &str) -> &'static str {
    let has = |needles: &[&str]| needles.iter().any(|n| name.contains(n));
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| name.starts_with(p));
    // Scheduling first: its names (`finish_task_switch`) would match networking's
    // abbreviations. `_raw_spin_unlock_irqrestore` is where a sampling interrupt held back
    // by a lock (mostly the scheduler's and wake-ups') lands.
    if has(&[
        "task_switch",
        "schedule",
        "__switch_to",
        "futex",
        "wake_up",
        "ep_poll",
        "epoll",
        "pick_next",
        "enqueue_",
        "dequeue_",
        "update_curr",
        "irqrestore",
        "do_idle",
        "hrtimer",
        "select_task_rq",
        "ttwu",
    ]) || starts(&["ep_"])
    {
        "kernel: scheduling, wakeups and epoll"
    } else if has(&[
        "copy_user",
        "copy_to_user",
        "copy_from_user",
        "_copy_to_iter",
        "_copy_from_iter",
    ]) {
        "kernel: copying to and from user space"
    } else if has(&[
        "tcp",
        "ip_",
        "ipv4",
        "ipv6",
        "ip6",
        "skb",
        "sock",
        "inet",
        "net_rx",
        "netif",
        "napi",
        "__dev_",
        "dev_queue",
        "dev_hard",
        "loopback",
        "nf_",
        "csum",
        "recvmsg",
        "sendmsg",
        "sendto",
        "recvfrom",
    ]) || starts(&["sk_", "__sk_", "net_"])
    {
        "kernel: TCP/IP and sockets"
    } else if has(&["syscall", "entry_", "exit_to_user"]) {
        "kernel: system call entry and exit"
    } else {
        "kernel: other"
    }
}

/// By the crate the (demangled) symbol's path starts with; for `<A as B>::f`, A's crate.
fn rust_component(name: &str) -> &'static str {
    let path = name.trim_start_matches(['<', '&', '*', ' ']);
    let path = path
        .strip_prefix("mut ")
        .or_else(|| path.strip_prefix("dyn "))
        .or_else(|| path.strip_prefix("const "))
        .unwrap_or(path);
    let krate = path.split("::").next().unwrap_or_default();
    let asm_crypto = [
        "aes",
        "gcm_",
        "ecp_nistz256",
        "sha256_block",
        "sha512_block",
        "chacha",
    ];
    if krate == "ring"
        || name.starts_with("ring_core")
        || asm_crypto.iter().any(|p| name.starts_with(p))
    {
        return "TLS crypto (ring)";
    }
    if name.starts_with("mi_") || name.starts_with("_mi_") || krate == "mimalloc" {
        return "allocator (mimalloc)";
    }
    match krate {
        "rustls" | "tokio_rustls" => "TLS protocol (rustls)",
        "h2" => "HTTP/2 (h2)",
        "hyper" | "hyper_util" => "HTTP (hyper)",
        "http" | "httparse" | "bytes" | "http_body" | "http_body_util" => {
            "HTTP types and buffers (http, httparse, bytes)"
        }
        "tokio" | "mio" => "async runtime and I/O (tokio)",
        "prost" | "tonic" | "envoy_types" => "protobuf and gRPC (prost, tonic)",
        "core" | "alloc" | "std" | "hashbrown" => "Rust core and std (drops, hashing, …)",
        k if k.starts_with("strait") => "Strait's own code",
        _ if name.starts_with("0x") => "unresolved addresses",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "
    14.00%   140  [kernel.kallsyms]  [k] _raw_spin_unlock_irqrestore
     6.00%    60  [kernel.kallsyms]  [k] finish_task_switch.isra.0
    10.00%   100  [kernel.kallsyms]  [k] tcp_sendmsg_locked
     5.00%    50  [kernel.kallsyms]  [k] _copy_to_iter
     9.00%    90  libc.so.6          [.] __memmove_avx_unaligned_erms
     8.00%    80  strait             [.] h2::codec::framed_write::FramedWrite<T,B>::buffer
     7.00%    70  strait             [.] <h2::proto::streams::streams::OpaqueStreamRef as core::ops::drop::Drop>::drop
     6.00%    60  strait             [.] ring_core_0_17_14__aes_gcm_enc_update_vaes_avx2
     4.00%    40  strait             [.] _mi_page_malloc
     3.00%    30  strait             [.] <strait_proxy::http::Service as hyper::service::Service<R>>::call
     2.00%    20  strait             [.] tokio::runtime::scheduler::current_thread::Context::run_task
     1.00%    10  strait             [.] 0x0000000000a1b2c3
    # a comment line
";

    #[test]
    fn report_lines_are_summed_by_component() {
        let p = Profile::from_report(REPORT);
        assert_eq!(p.share("HTTP/2 (h2)"), 15.0);
        assert_eq!(p.share("kernel: scheduling, wakeups and epoll"), 20.0);
        assert_eq!(p.share("kernel: TCP/IP and sockets"), 10.0);
        assert_eq!(p.share("kernel: copying to and from user space"), 5.0);
        assert_eq!(p.share("libc (memcpy, memmove, …)"), 9.0);
        assert_eq!(p.share("TLS crypto (ring)"), 6.0);
        assert_eq!(p.share("allocator (mimalloc)"), 4.0);
        assert_eq!(p.share("Strait's own code"), 3.0);
        assert_eq!(p.share("async runtime and I/O (tokio)"), 2.0);
        assert_eq!(p.share("unresolved addresses"), 1.0);
        assert_eq!(p.kernel_share(), 35.0);
        assert_eq!(p.samples, 750);
        // Largest first, the comment ignored.
        assert_eq!(
            p.components[0],
            ("kernel: scheduling, wakeups and epoll", 20.0)
        );
        assert_eq!(p.top.len(), TOP);
        assert_eq!(p.top[0].name, "_raw_spin_unlock_irqrestore");
        assert!(p.top[0].kernel);
    }

    #[test]
    fn perf_stat_counts_are_read_by_event() {
        let stat = "# started on Sun Dec  6 16:21:57 2026\n\n12133,,raw_syscalls:sys_enter,251628105,100.00,,\n5990,,context-switches,251628105,100.00,,\n";
        assert_eq!(count(stat, "raw_syscalls:sys_enter"), Some(12133));
        assert_eq!(count(stat, "context-switches"), Some(5990));
        assert_eq!(count(stat, "cpu-clock"), None);
        // An event perf could not count.
        assert_eq!(
            count(
                "<not supported>,,context-switches,0,100.00,,\n",
                "context-switches"
            ),
            None
        );
    }

    #[test]
    fn other_programs_are_named_by_their_library() {
        let s = |dso: &str, name: &str| Symbol {
            percent: 1.0,
            samples: 1,
            dso: dso.to_string(),
            kernel: false,
            name: name.to_string(),
        };
        assert_eq!(
            component(&s("libcrypto.so.3", "aesni_gcm_encrypt")),
            "TLS (OpenSSL)"
        );
        assert_eq!(component(&s("haproxy", "process_stream")), "HAProxy");
        assert_eq!(
            component(&s("strait", "rustls::conn::ConnectionCommon<T>::read_tls")),
            "TLS protocol (rustls)"
        );
    }
}
