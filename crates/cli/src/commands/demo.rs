//! `strait demo`: the demo workloads `strait up` runs in its pods.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use strait_local::apps;

/// Demo workloads: Istio's helloworld, a client that calls a URL in a loop, a TCP echo.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub app: App,
}

#[derive(Debug, clap::Subcommand)]
pub enum App {
    /// Istio's helloworld: `GET /hello` answers `Hello version: <v>, instance: <pod>`.
    Helloworld {
        #[arg(long, default_value = "0.0.0.0:5000")]
        listen: SocketAddr,
        /// The version it reports (Istio's `SERVICE_VERSION`).
        #[arg(long, default_value = "v1")]
        service_version: String,
        #[arg(long, default_value = "helloworld")]
        instance: String,
    },
    /// Calls URL in a loop, printing each answer and a running tally; without a URL, idles
    /// (Istio's `sleep`).
    Client {
        url: Option<String>,
        /// Milliseconds between calls.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many calls (0: never).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// Connect to this host at the URL's port, keeping the URL's host in the request (as
        /// `curl --connect-to`): an app without capture calls its sidecar's bound listener.
        #[arg(long, value_name = "HOST")]
        via: Option<String>,
    },
    /// A gRPC echo (h2c): `/strait.demo.v1.Echo/Echo` answers the request's `message` (field 1)
    /// with `instance` (field 2) set to this one's name.
    GrpcEcho {
        #[arg(long, default_value = "0.0.0.0:9090")]
        listen: SocketAddr,
        #[arg(long, default_value = "grpc-echo")]
        instance: String,
    },
    /// Echoes what it reads, after a `hello <instance>` line.
    TcpEcho {
        #[arg(long, default_value = "0.0.0.0:9000")]
        listen: SocketAddr,
        #[arg(long, default_value = "tcp-echo")]
        instance: String,
    },
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    };
    match &args.app {
        App::Helloworld {
            listen,
            service_version,
            instance,
        } => runtime()?.block_on(apps::helloworld(
            *listen,
            service_version.clone(),
            instance.clone(),
        ))?,
        App::TcpEcho { listen, instance } => {
            runtime()?.block_on(apps::tcp_echo(*listen, instance.clone()))?
        }
        App::GrpcEcho { listen, instance } => {
            runtime()?.block_on(apps::grpc_echo(*listen, instance.clone()))?
        }
        App::Client { url: None, .. } => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        App::Client {
            url: Some(url),
            interval_ms,
            count,
            via,
        } => {
            let mut tally = apps::Tally::default();
            let mut out = std::io::stdout().lock();
            while *count == 0 || tally.total() < *count {
                let outcome = apps::get(url, via.as_deref(), Duration::from_secs(5));
                tally.record(&outcome);
                let answer = match &outcome {
                    Ok((code, body)) => format!("{code} {body}"),
                    Err(e) => format!("failed: {e}"),
                };
                writeln!(out, "{answer}    [{}]", tally.summary())?;
                out.flush()?;
                std::thread::sleep(Duration::from_millis(*interval_ms));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
