//! `strait up`: a whole multi-cluster mesh on one machine, until Ctrl-C.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use strait_local::netns;
use strait_local::plan::Runtime;
use strait_local::up::{Mesh, Options, down};

/// The example `strait up` runs without an argument.
const DEFAULT_EXAMPLE: &str = "examples/multi-primary-multi-network";

/// Run a multi-cluster mesh on this machine: per cluster a control plane, east-west gateways and
/// the workloads of its manifests, each pod a network namespace with its app and sidecar.
///
/// DIR holds `topology.yaml` (clusters, networks, localities, control planes) and a directory
/// of manifests per cluster. Each network is its own segment; networks meet only through their
/// east-west gateways. Pods run the demo images (`strait/helloworld`, `strait/client URL`,
/// `strait/tcp-echo`) or a gateway's proxy (`strait/strait`). Ctrl-C (or `strait up --down`)
/// removes every namespace, rule and process it made; a new start first cleans up what a
/// crashed run left. As root; without root (or with `--loopback`) the same mesh runs on this
/// host's loopback.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The example directory.
    #[arg(default_value = DEFAULT_EXAMPLE, value_name = "DIR")]
    pub dir: PathBuf,
    /// The run's name: the prefix of its namespaces.
    #[arg(long, default_value = "strait")]
    pub name: String,
    /// Where the run keeps generated manifests, CA files, logs and its state.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Remove what a run with this name made, and exit.
    #[arg(long)]
    pub down: bool,
    /// Log level of the mesh's processes (`RUST_LOG` syntax).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Run without root: every pod's processes on this host's loopback, each pod at its own
    /// 127.x address, sidecars with bound listeners instead of capture (chosen by itself when
    /// not root).
    #[arg(long)]
    pub loopback: bool,
    /// Seconds between status updates (0: none).
    #[arg(long, default_value_t = 5)]
    pub status_every: u64,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("strait-up-{}", args.name)));
    let mut out = std::io::stdout().lock();
    if args.down {
        let (processes, namespaces) = down(&args.name, &state_dir);
        writeln!(
            out,
            "removed {processes} processes and {namespaces} namespaces of {:?}",
            args.name
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = if args.loopback {
        Runtime::Loopback
    } else if netns::can_create_namespaces() {
        Runtime::Namespaces
    } else {
        writeln!(
            out,
            "not root: running in loopback mode (each pod at its own 127.x address, no iptables); as root each pod is a network namespace"
        )?;
        Runtime::Loopback
    };
    let options = Options {
        dir: args.dir.clone(),
        name: args.name.clone(),
        state_dir: state_dir.clone(),
        exe: std::env::current_exe().context("cannot find the strait binary")?,
        log_level: args.log_level.clone(),
        runtime,
    };
    // A failed start has removed what it made, and said so on `out`.
    let mut mesh = Mesh::start(options, &mut out)?;
    writeln!(out, "\n{}", mesh.status())?;
    writeln!(
        out,
        "mesh {:?} is up; logs in {}. Ctrl-C stops it and removes everything.",
        mesh.topology.name,
        state_dir.join("logs").display()
    )?;
    out.flush()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reason = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch SIGTERM")?;
        let every = Duration::from_secs(args.status_every.max(1));
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last_status = tokio::time::Instant::now();
        let mut shown = std::collections::BTreeMap::new();
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return anyhow::Ok("interrupted".to_string()),
                _ = term.recv() => return Ok("terminated".to_string()),
                _ = tick.tick() => {
                    let events = mesh.watch();
                    if !events.is_empty() {
                        let mut out = std::io::stdout().lock();
                        for e in events {
                            let _ = writeln!(out, "{e}");
                        }
                    }
                    if args.status_every > 0 && last_status.elapsed() >= every {
                        last_status = tokio::time::Instant::now();
                        let tallies = mesh.tallies();
                        let mut out = std::io::stdout().lock();
                        for (pod, tally) in &tallies {
                            if shown.get(pod) != Some(tally) {
                                let _ = writeln!(out, "{pod}: {tally}");
                            }
                        }
                        shown = tallies;
                    }
                }
            }
        }
    })?;
    writeln!(out, "stopping ({reason})")?;
    let (_, namespaces) = mesh.stop();
    writeln!(out, "removed {namespaces} namespaces")?;
    Ok(ExitCode::SUCCESS)
}
