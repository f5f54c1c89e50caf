//! Subcommands of `strait`.

pub mod analyze;
pub mod ca;
pub mod control_plane;
pub mod demo;
pub mod multicluster;
pub mod proxy;
pub mod proxy_config;
mod sa_issuers;
mod token_review;
pub mod up;
pub mod validate;

use std::io::Write;

/// Writes a failure that stopped a command (not a finding in the configuration) to stderr.
pub fn report_failure(e: &anyhow::Error) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "strait: {e:#}");
}

/// No transparent huge pages for the control plane. Its big buffers come and go — a cold sync
/// encodes and sends megabytes to every proxy — and with huge pages (whether the kernel uses
/// them always or the allocator asks for them) every fresh 2 MiB region is zeroed in full when
/// first touched, again after each return to the system. Measured in the control-plane
/// benchmark's cold sync: 14 % of the control plane's CPU was that zeroing; for the proxy the
/// data-plane benchmark showed no difference, so it keeps the kernel's setting. The setting is
/// the process's own (`prctl(PR_SET_THP_DISABLE)`, not inherited by `strait up`'s apps, which
/// `strait up` starts itself); a kernel without it changes nothing.
pub fn without_huge_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!("transparent huge pages stay as the kernel sets them: {e}");
    }
}

/// Colours only for a person watching: a log file or pipe gets plain text to grep.
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Logs to stderr; `RUST_LOG` overrides the level (`info` by default).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .try_init();
}

/// Logs to stderr like [`init_logging`], with a handle that changes the filter at run time
/// (the proxy's `/logging?level=`).
pub fn init_reloadable_logging() -> strait_proxy::SetLogLevel {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour()),
        )
        .try_init();
    Box::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| format!("level {level:?}: {e}"))?;
        handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log level: {e}"))
    })
}

/// A GET over HTTP/1.0 to a local JSON API (a proxy's admin port, a control plane's debug
/// port), parsed. `what` names the API and `hint` says how to point at it, in errors.
pub fn get_json(
    addr: &str,
    path: &str,
    what: &str,
    hint: &str,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)
        .with_context(|| format!("cannot reach {what} at {addr}: {hint}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{what} sent no HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        anyhow::bail!("{addr}{path}: {}", head.lines().next().unwrap_or_default());
    }
    serde_json::from_str(body).with_context(|| format!("{addr}{path}: not JSON"))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
