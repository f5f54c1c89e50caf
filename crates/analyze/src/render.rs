//! Output of `strait analyze` as text (like istioctl's), JSON or YAML.

use serde::Serialize;

use crate::{Analysis, Level, Message};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

#[derive(Serialize)]
struct Report<'a> {
    messages: &'a [Message],
    summary: Summary,
}

#[derive(Serialize)]
struct Summary {
    errors: usize,
    warnings: usize,
    info: usize,
    documents: usize,
    skipped: usize,
}

/// Renders an analysis. `scope` names what was analyzed (files, clusters) for the text summary.
pub fn render(analysis: &Analysis, format: Format, scope: &str) -> String {
    let summary = Summary {
        errors: analysis.count(Level::Error),
        warnings: analysis.count(Level::Warning),
        info: analysis.count(Level::Info),
        documents: analysis.documents,
        skipped: analysis.skipped,
    };
    match format {
        Format::Text => {
            let mut s = String::new();
            for m in &analysis.messages {
                s.push_str(&m.to_string());
                s.push('\n');
            }
            if analysis.messages.is_empty() {
                s.push_str(&format!(
                    "✔ No validation issues found when analyzing {scope}.\n"
                ));
            } else {
                s.push_str(&format!(
                    "{} error(s), {} warning(s), {} info message(s) in {} document(s) from {scope}.\n",
                    summary.errors, summary.warnings, summary.info, summary.documents
                ));
            }
            s
        }
        Format::Json => {
            let r = Report {
                messages: &analysis.messages,
                summary,
            };
            serde_json::to_string_pretty(&r)
                .map(|s| s + "\n")
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}\n"))
        }
        Format::Yaml => {
            let r = Report {
                messages: &analysis.messages,
                summary,
            };
            serde_saphyr::to_string(&r).unwrap_or_else(|e| format!("error: {e}\n"))
        }
    }
}
