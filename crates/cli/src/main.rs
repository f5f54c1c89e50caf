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
// `C` is the set of subcommands: every one ([`Command`]), or the proxy's alone
// ([`ProxyCommand`]) — one definition, so both parse and describe a command line alike. (A
// comment, not documentation: clap would show documentation in `strait --help`.)
#[derive(Debug, Parser)]
#[command(
    name = "strait",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli<C: Subcommand = Command> {
    #[command(subcommand)]
    command: C,
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

/// `strait proxy …` alone: the same command line as [`Command`]'s `proxy`, parsed without
/// building every other subcommand's arguments first. A sidecar starts once per pod, and clap's
/// derived parser constructs the whole command tree before it looks at the first argument —
/// hundreds of KiB of code that would stay resident in every idle sidecar. The tests hold its
/// help, version and parsing equal to the full command line's.
#[derive(Debug, Subcommand)]
enum ProxyCommand {
    Proxy(commands::proxy::Args),
}

/// Whether the command line asks for the proxy (its first argument is `proxy`).
fn runs_the_proxy() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| a == "proxy")
}

/// A sidecar should hold only the memory it uses: mimalloc then commits its arenas as they fill
/// rather than up front (about 1 MB of heap idle instead of 7). mimalloc reads its options when
/// the process starts, before `main`, so the proxy re-executes itself once with the option in
/// its environment (unless the caller set it, either way).
#[cfg(all(feature = "mimalloc", unix))]
fn lean_allocator_for_proxies() {
    use std::os::unix::process::CommandExt;
    const OPTION: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    if !runs_the_proxy() || std::env::var_os(OPTION).is_some() {
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
    if runs_the_proxy() {
        let Cli {
            command: ProxyCommand::Proxy(args),
        } = Cli::<ProxyCommand>::parse();
        return exit_code(commands::proxy::run(&args));
    }
    let cli = Cli::<Command>::parse();
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
    exit_code(result)
}

fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
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
        super::Cli::<super::Command>::command().debug_assert();
        super::Cli::<super::ProxyCommand>::command().debug_assert();
    }

    fn proxy_subcommand(mut command: clap::Command) -> clap::Command {
        command.build();
        command
            .find_subcommand("proxy")
            .cloned()
            .expect("a proxy subcommand")
    }

    #[test]
    fn the_proxys_own_parser_shows_the_same_help_and_version() {
        let mut full = proxy_subcommand(super::Cli::<super::Command>::command());
        let mut lean = proxy_subcommand(super::Cli::<super::ProxyCommand>::command());
        assert_eq!(
            lean.render_long_help().to_string(),
            full.render_long_help().to_string()
        );
        assert_eq!(
            lean.render_usage().to_string(),
            full.render_usage().to_string()
        );
        assert_eq!(lean.render_version(), full.render_version());
        assert!(full.render_long_help().to_string().contains("--node-id"));
    }

    #[test]
    fn the_proxys_own_parser_reads_a_command_line_as_the_full_one_does() {
        use clap::Parser;
        let argv = [
            "strait",
            "proxy",
            "--xds",
            "127.0.0.1:15010",
            "--node-id",
            "sidecar~10.0.0.1~a-1.default~default.svc.cluster.local",
            "--meta",
            "CLUSTER_ID=cluster1",
            "--meta",
            "LABELS=app=a",
            "--admin-listen",
            "127.0.0.1:15000",
        ];
        let super::Command::Proxy(full) = super::Cli::<super::Command>::try_parse_from(argv)
            .unwrap()
            .command
        else {
            panic!("the full parser did not read a proxy command line");
        };
        let super::ProxyCommand::Proxy(lean) =
            super::Cli::<super::ProxyCommand>::try_parse_from(argv)
                .unwrap()
                .command;
        assert_eq!(format!("{lean:?}"), format!("{full:?}"));
        // A mistake is reported the same way by both.
        let bad = ["strait", "proxy", "--no-such-flag"];
        assert_eq!(
            super::Cli::<super::ProxyCommand>::try_parse_from(bad)
                .unwrap_err()
                .to_string(),
            super::Cli::<super::Command>::try_parse_from(bad)
                .unwrap_err()
                .to_string()
        );
    }
}
