//! `strait analyze`: validation plus cross-reference checks, like `istioctl analyze`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use strait_analyze::{ClusterConfig, Format, analyze, render};
use strait_config::load::{LoadOptions, load_paths};
use strait_model::ClusterId;

/// Find problems in a whole configuration, like `istioctl analyze`.
///
/// Validates every document, then checks the set as a whole: VirtualService destinations and
/// subsets that do not exist, DestinationRule subsets that select no workload, two
/// VirtualServices for the same host and gateway, Gateways whose selector matches nothing,
/// ServiceEntry address and host conflicts, locality failover/distribute without outlier
/// detection (Istio then silently ignores failover), distribute weights that do not add up to
/// 100, STRICT mTLS against a DestinationRule that disables TLS, TrafficSplit backends that do
/// not exist, and Service ports whose protocol cannot be determined.
///
/// Each message has a level, a stable code (`ST0101`), the resource (`Kind namespace/name`),
/// the file and line, and what to do. Give paths for a single cluster, or `--cluster NAME=PATH`
/// once per cluster to analyze a multi-cluster mesh (services merge across clusters), or a
/// `strait up` directory (one holding `topology.yaml`): each of its clusters, with the links
/// its topology declares (a linked cluster's exported services mirrored as `<name>-<cluster>`).
/// Exit status: 1 when any error is found, 0 otherwise, 2 when the command itself fails.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories of one cluster's configuration.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// A cluster and its configuration directory; repeat for each cluster.
    #[arg(long = "cluster", value_name = "NAME=PATH")]
    pub clusters: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Namespace of documents that name none.
    #[arg(short, long, default_value = "default", value_name = "NAMESPACE")]
    pub namespace: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Yaml,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let options = LoadOptions {
        default_namespace: args.namespace.clone(),
        ..LoadOptions::default()
    };
    let mut clusters = Vec::new();
    let mut scope = Vec::new();
    let topology_dir = match args.paths.as_slice() {
        [dir] if dir.join(strait_local::topology::FILE).is_file() => Some(dir.clone()),
        _ => None,
    };
    if let Some(dir) = &topology_dir {
        let topology = strait_local::topology::read(dir)?;
        for c in &topology.clusters {
            let path = dir.join(&c.name);
            clusters.push(ClusterConfig {
                name: ClusterId::new(&c.name),
                report: load_paths(std::slice::from_ref(&path), &options),
                links: c.links.iter().map(|l| ClusterId::new(l)).collect(),
            });
            scope.push(format!("cluster {} ({})", c.name, path.display()));
        }
    } else if !args.paths.is_empty() {
        clusters.push(ClusterConfig {
            name: ClusterId::new("cluster"),
            report: load_paths(&args.paths, &options),
            links: Vec::new(),
        });
        scope.extend(args.paths.iter().map(|p| p.display().to_string()));
    }
    for spec in &args.clusters {
        let (name, path) = spec.split_once('=').with_context(|| {
            format!("--cluster {spec}: write NAME=PATH, e.g. --cluster cluster1=./cluster1")
        })?;
        if name.is_empty() || path.is_empty() {
            bail!("--cluster {spec}: both the cluster name and the path are needed (NAME=PATH)");
        }
        clusters.push(ClusterConfig {
            name: ClusterId::new(name),
            report: load_paths(&[PathBuf::from(path)], &options),
            links: Vec::new(),
        });
        scope.push(format!("cluster {name} ({path})"));
    }
    if clusters.is_empty() {
        bail!("nothing to analyze: give one or more PATHs, or --cluster NAME=PATH");
    }
    let analysis = analyze(&clusters);
    let format = match args.output {
        OutputFormat::Text => Format::Text,
        OutputFormat::Json => Format::Json,
        OutputFormat::Yaml => Format::Yaml,
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{}", render(&analysis, format, &scope.join(", ")))?;
    Ok(if analysis.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
