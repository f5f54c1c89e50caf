//! The `strait` binary: one command line for every role Strait plays. Each subcommand is a thin
//! wrapper over the crates that do the work.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The allocator (mimalloc unless built with --no-default-features) is strait-alloc's.
use strait_alloc as _;

/// Strait: a multi-cluster service mesh in one binary.
///
/// Strait reads the configuration Istio and Linkerd users already write (VirtualService,
/// DestinationRule, ServiceEntry, WorkloadEntry, Gateway, Sidecar, PeerAuthentication,
/// AuthorizationPolicy, Kubernetes Services, Endpoints and Pods, SMI TrafficSplit), checks it
/// exactly as Istio would accept or reject it, and serves it to proxies over Envoy's xDS.
#[derive(Debug, Parser)]
#[command(
    name = "strait",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Validate(commands::validate::Args),
    Analyze(commands::analyze::Args),
    Ca(commands::ca::Args),
    ControlPlane(commands::control_plane::Args),
    Proxy(commands::proxy::Args),
    ProxyConfig(commands::proxy_config::Args),
    Up(commands::up::Args),
    Demo(commands::demo::Args),
    CreateRemoteSecret(commands::multicluster::CreateRemoteSecretArgs),
    Multicluster(commands::multicluster::MulticlusterArgs),
}

/// A sidecar should hold only the memory it uses: mimalloc then commits its arenas as they fill
/// rather than up front (about 1 MB of heap idle instead of 7). mimalloc reads its options when
/// the process starts, before `main`, so the proxy re-executes itself once with the option in
/// its environment (unless the caller set it, either way).
#[cfg(all(feature = "mimalloc", unix))]
fn lean_allocator_for_proxies() {
    use std::os::unix::process::CommandExt;
    const OPTION: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    let is_proxy = std::env::args_os().nth(1).is_some_and(|a| a == "proxy");
    if !is_proxy || std::env::var_os(OPTION).is_some() {
        return;
    }
    let Ok(me) = std::env::current_exe() else {
        return;
    };
    // Only returns on failure, and then the proxy simply runs with the defaults.
    let _ = std::process::Command::new(me)
        .args(std::env::args_os().skip(1))
        .env(OPTION, "0")
        .exec();
}

fn main() -> ExitCode {
    #[cfg(all(feature = "mimalloc", unix))]
    lean_allocator_for_proxies();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => commands::validate::run(&args),
        Command::Analyze(args) => commands::analyze::run(&args),
        Command::Ca(args) => commands::ca::run(&args),
        Command::ControlPlane(args) => commands::control_plane::run(&args),
        Command::Proxy(args) => commands::proxy::run(&args),
        Command::ProxyConfig(args) => commands::proxy_config::run(&args),
        Command::Up(args) => commands::up::run(&args),
        Command::Demo(args) => commands::demo::run(&args),
        Command::CreateRemoteSecret(args) => commands::multicluster::create_remote_secret(&args),
        Command::Multicluster(args) => commands::multicluster::multicluster(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            commands::report_failure(&e);
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
