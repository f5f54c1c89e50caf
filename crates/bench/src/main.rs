//! `strait-bench`: Strait's benchmark runner. Starts the release `strait` binary on loopback,
//! drives it with simulated clients, and rewrites `docs/benchmarks.md` with what it measured.

mod ads;
mod control_plane;
mod data_plane;
mod grpc_app;
mod identity;
mod machine;
mod multicluster;
mod open_model;
mod pki;
mod process;
mod profile;
mod reference;
mod report;
mod stats;
mod synth;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// The same allocator as `strait`: the simulated proxies allocate much, and the runner should
/// take as little of the shared cores as it can.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure Strait and write the results to a Markdown report.
///
/// Runs the control-plane scale scenario (synthetic mesh, simulated ADS proxies, state-of-the-
/// world and delta) against the real `strait` binary. Use `scripts/bench`, which builds both
/// binaries in release first.
#[derive(Debug, Parser)]
#[command(name = "strait-bench", version)]
struct Args {
    /// Small scale and few repetitions (a smoke test that the runner works, under 2 minutes);
    /// writes to target/benchmarks-quick.md unless --out is given.
    #[arg(long)]
    quick: bool,
    /// Where to write the report.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The `strait` binary to measure (default: next to this one).
    #[arg(long, value_name = "PATH")]
    strait: Option<PathBuf>,
    /// Services in the synthetic mesh.
    #[arg(long, value_name = "N")]
    services: Option<usize>,
    /// Endpoints of each service in each cluster.
    #[arg(long, value_name = "N")]
    endpoints: Option<usize>,
    /// Clusters (each holds every service).
    #[arg(long, value_name = "N")]
    clusters: Option<usize>,
    /// Simulated proxies.
    #[arg(long, value_name = "N")]
    proxies: Option<usize>,
    /// Endpoint changes to time.
    #[arg(long, value_name = "N")]
    changes: Option<usize>,
    /// Service additions to time.
    #[arg(long, value_name = "N")]
    additions: Option<usize>,
    /// Only write the synthetic mesh's manifests to DIR (for profiling by hand) and exit.
    #[arg(long, value_name = "DIR")]
    write_mesh: Option<PathBuf>,
    /// Seconds of each data-plane load run (a saturation round and the fixed rate; default 5
    /// and 15, or 2 and 3 with --quick).
    #[arg(long, value_name = "S")]
    seconds: Option<u64>,
    /// Run only one scenario.
    #[arg(long, value_enum)]
    only: Option<Scenario>,
    /// The repository's examples (the multi-cluster scenario runs `locality-failover`).
    #[arg(long, value_name = "DIR", default_value = "examples")]
    examples: PathBuf,
    /// Where process logs go.
    #[arg(long, value_name = "DIR", default_value = "target/bench-logs")]
    logs: PathBuf,
    /// Only serve the gRPC rows' application on these addresses (the runner starts itself so).
    #[arg(long, value_name = "ADDR", num_args = 1.., hide = true)]
    serve_grpc: Vec<std::net::SocketAddr>,
    /// Only start the data-plane chains, warm them up, print how to load each (an h2load
    /// command) and the PIDs of the processes it measures, and keep them up for SECONDS or until
    /// Ctrl-C: for profiling by hand; measures nothing and writes no report.
    #[arg(long, value_name = "SECONDS")]
    hold: Option<u64>,
    /// Only keep one core busy for this many seconds (the runner starts itself so).
    #[arg(long, value_name = "SECONDS", hide = true)]
    busy_loop: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    ControlPlane,
    DataPlane,
    Identity,
    Multicluster,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(seconds) = args.busy_loop {
        data_plane::busy_loop(seconds);
        return ExitCode::SUCCESS;
    }
    let result = if args.serve_grpc.is_empty() {
        run(&args)
    } else {
        grpc_app::serve(&args.serve_grpc)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "strait-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn run(args: &Args) -> anyhow::Result<()> {
    let strait = match &args.strait {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the runner's own directory")?
            .join("strait"),
    };
    anyhow::ensure!(
        strait.exists(),
        "{} does not exist: build it (scripts/bench does) or pass --strait",
        strait.display()
    );
    std::fs::create_dir_all(&args.logs)
        .with_context(|| format!("creating {}", args.logs.display()))?;
    let (services, endpoints, clusters, proxies, changes, additions) = if args.quick {
        (100, 10, 3, 20, 5, 2)
    } else {
        (1000, 10, 3, 200, 100, 10)
    };
    let params = control_plane::Params {
        shape: synth::Shape {
            services: args.services.unwrap_or(services),
            endpoints: args.endpoints.unwrap_or(endpoints),
            clusters: args.clusters.unwrap_or(clusters),
        },
        proxies: args.proxies.unwrap_or(proxies),
        workloads: 50,
        endpoint_changes: args.changes.unwrap_or(changes),
        service_additions: args.additions.unwrap_or(additions),
        debounce_ms: 100,
        profile: true,
    };
    if let Some(dir) = &args.write_mesh {
        let files = synth::write(params.shape, dir)?;
        say(&format!(
            "wrote {files} manifest files under {}",
            dir.display()
        ));
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut phases = Vec::new();
    // --hold is about the data plane's chains alone.
    let only = if args.hold.is_some() {
        Some(Scenario::DataPlane)
    } else {
        args.only
    };
    let runs = |s: Scenario| only.is_none_or(|o| o == s);
    let control_plane_runs = if !runs(Scenario::ControlPlane) {
        vec![]
    } else {
        vec![ads::Variant::StateOfTheWorld, ads::Variant::Delta]
    };
    // One control-plane run: what it is, then what it measured.
    let measure = |what: &str, p: &control_plane::Params, variant: ads::Variant, name: &str| {
        say(&format!(
            "control plane{what}: {} services × {} endpoints × {} clusters, {} {} proxies…",
            p.shape.services,
            p.shape.endpoints,
            p.shape.clusters,
            p.proxies,
            variant.label()
        ));
        let r = runtime.block_on(control_plane::run(&strait, p, variant, name, &args.logs))?;
        say(&format!(
            "  cold sync {}, endpoint change p99 {}, {} per proxy, {} per additional proxy",
            stats::ms(r.cold_sync_all),
            stats::opt_ms(stats::percentile(&r.endpoint_changes.all_acked, 99.0)),
            stats::kib(r.kib_per_proxy(p.proxies)),
            stats::kib(r.marginal_kib)
        ));
        anyhow::Ok(r)
    };
    for variant in control_plane_runs {
        phases.push(measure("", &params, variant, variant.label())?);
    }
    let mut growth = Vec::new();
    if runs(Scenario::ControlPlane) {
        for doubling in control_plane::Doubling::ALL {
            let doubled = doubling.apply(&params);
            let name = format!("delta-{doubling:?}").to_lowercase();
            let what = format!(", {}", doubling.label());
            let r = measure(&what, &doubled, ads::Variant::Delta, &name)?;
            growth.push((doubling, doubled, r));
        }
    }
    let identity = if runs(Scenario::Identity) {
        say("identity: CSR signing rate, mTLS handshake cost…");
        let r = identity::run(args.quick)?;
        say(&format!(
            "  {:.0} CSRs/s on one thread; mTLS connection {:?} (TCP {:?})",
            r.csr_per_sec, r.mtls_wall, r.tcp_wall
        ));
        Some(r)
    } else {
        None
    };
    let data_plane = if !runs(Scenario::DataPlane) {
        None
    } else {
        let dp = data_plane::Params {
            saturation: Duration::from_secs(args.seconds.unwrap_or(if args.quick { 2 } else { 5 })),
            rounds: if args.quick { 2 } else { 3 },
            fixed_rate: 1000,
            fixed_duration: Duration::from_secs(args.seconds.unwrap_or(if args.quick {
                3
            } else {
                15
            })),
            large: synth::Shape {
                services: if args.quick { 100 } else { 1000 },
                endpoints: 10,
                clusters: 1,
            },
            profile: Some(Duration::from_secs(if args.quick { 1 } else { 5 })),
            hold: args.hold.map(Duration::from_secs),
        };
        say(
            "data plane: direct, one and two Strait hops (plaintext and mTLS), HAProxy and nginx; HTTP/1.1, HTTP/2, gRPC, TCP…",
        );
        match runtime.block_on(data_plane::run(&strait, &dp, &args.logs, say))? {
            Some(results) => Some((dp.clone(), results)),
            None => return Ok(()),
        }
    };
    let multicluster = if !runs(Scenario::Multicluster) {
        None
    } else {
        say("multi-cluster: gateway hop and failover on examples/locality-failover…");
        let params = multicluster::Params {
            example: args.examples.join("locality-failover"),
            hop_calls: if args.quick { 300 } else { 3000 },
            window: Duration::from_secs(if args.quick { 5 } else { 10 }),
            load: Duration::from_secs(if args.quick { 2 } else { 10 }),
        };
        let r = multicluster::run(&strait, &params, &args.logs, say);
        if let Err(e) = &r {
            say(&format!("  not measured: {e:#}"));
        }
        Some((params, r.map_err(|e| format!("{e:#}"))))
    };
    let machine = machine::Machine::describe();
    let mut command = String::from("scripts/bench");
    for a in std::env::args().skip(1) {
        command.push(' ');
        command.push_str(&a);
    }
    let report = report::Report {
        machine: &machine,
        command,
        quick: args.quick,
        control_plane: (!phases.is_empty()).then_some((&params, &phases[..])),
        growth: &growth,
        data_plane: data_plane.as_ref().map(|(p, r)| (p, r)),
        identity: identity.as_ref(),
        multicluster: multicluster.as_ref().map(|(p, r)| (p, r.as_ref())),
    };
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(if args.quick {
            "target/benchmarks-quick.md"
        } else {
            "docs/benchmarks.md"
        })
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, report.render()).with_context(|| format!("writing {}", out.display()))?;
    say(&format!("wrote {}", out.display()));
    Ok(())
}
