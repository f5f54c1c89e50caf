//! `strait validate`: checks documents on their own, like `istioctl validate`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use strait_config::load::{LoadOptions, Outcome, load_paths};

/// Check configuration files on their own, like `istioctl validate`.
///
/// Reads YAML or JSON files and directory trees (`.yaml`, `.yml`, `.json`; hidden entries are
/// skipped) of multi-document files, and checks every document the way Istio and Kubernetes
/// would: field names and types, required fields, the rules of Istio's CRD schemas and of its
/// admission webhook. Every problem is printed once, as
/// `FILE:LINE:COLUMN: error: KIND NAMESPACE/NAME (document N): FIELD: PROBLEM`.
///
/// Kinds Strait does not read (Deployment, ConfigMap, IstioOperator, ...) are listed as skipped
/// and are not errors. Exit status: 0 when every document Strait reads is valid, 1 when any is
/// invalid, 2 when the command itself fails.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories to check.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Namespace of documents that name none (as `kubectl apply -n`).
    #[arg(short, long, default_value = "default", value_name = "NAMESPACE")]
    pub namespace: String,
    /// Print only problems and the summary, not the list of skipped documents.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let options = LoadOptions {
        default_namespace: args.namespace.clone(),
        ..LoadOptions::default()
    };
    let report = load_paths(&args.paths, &options);
    let mut out = std::io::stdout().lock();
    for d in report.diagnostics() {
        writeln!(out, "{d}")?;
    }
    if !args.quiet {
        for doc in report.skipped() {
            if let Outcome::Skipped {
                api_version,
                kind,
                reason,
            } = &doc.outcome
            {
                match reason {
                    Some(why) => writeln!(
                        out,
                        "{}: document {}: skipped {kind} ({api_version}): not supported by Strait: {why}",
                        doc.file, doc.document
                    )?,
                    None => writeln!(
                        out,
                        "{}: document {}: skipped {kind} ({api_version}): not a kind Strait reads",
                        doc.file, doc.document
                    )?,
                }
            }
        }
    }
    let read = report.documents.len();
    let skipped = report.skipped().count();
    let rejected = report.rejected().count();
    let file_problems = report.file_problems.len();
    let checked = read - skipped;
    if rejected == 0 && file_problems == 0 {
        writeln!(
            out,
            "✔ {checked} document(s) valid in {} file(s) ({skipped} skipped)",
            report.files.len()
        )?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "✘ {rejected} of {checked} document(s) invalid, {} error(s) in {} file(s) ({skipped} skipped)",
            report.error_count(),
            report.files.len()
        )?;
        Ok(ExitCode::from(1))
    }
}
