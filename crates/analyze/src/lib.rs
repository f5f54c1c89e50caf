//! `strait analyze`: validation plus cross-reference checks over a whole configuration, as
//! `istioctl analyze` does: hosts and subsets that do not exist, selectors that match nothing,
//! conflicting definitions, and settings that silently do nothing.

mod checks;
mod context;
pub mod message;
mod render;

use std::sync::Arc;

use strait_config::linkerd::LinkSelector;
use strait_config::load::{LoadReport, Outcome};
use strait_config::{ConfigSet, IssueKind, Severity};
use strait_model::{
    ClusterId, ClusterSource, ClusterView, MeshModel, MeshSettings, NetworkId, build_cluster,
    mirror,
};

pub use message::{Code, Level, Message, codes};
pub use render::{Format, render};

/// One cluster's loaded configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: ClusterId,
    pub report: LoadReport,
    /// Clusters this one links Linkerd-style (a topology's `links`), besides those its link
    /// Secrets name: their exported services are mirrored into the model as `<name>-<cluster>`.
    pub links: Vec<ClusterId>,
}

/// The findings of an analysis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    pub messages: Vec<Message>,
    /// How many documents were read, and how many of them Strait does not read.
    pub documents: usize,
    pub skipped: usize,
}

impl Analysis {
    pub fn has_errors(&self) -> bool {
        self.messages.iter().any(|m| m.level == Level::Error)
    }

    pub fn count(&self, level: Level) -> usize {
        self.messages.iter().filter(|m| m.level == level).count()
    }
}

/// Analyzes the configuration of one or more clusters.
pub fn analyze(clusters: &[ClusterConfig]) -> Analysis {
    let mut analysis = Analysis::default();
    for cluster in clusters {
        validation_messages(&cluster.report, &mut analysis);
    }
    let configs: Vec<(ClusterId, Arc<ConfigSet>)> = clusters
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                Arc::new(ConfigSet::from_resources(c.report.resources().cloned())),
            )
        })
        .collect();
    let mesh_config = configs
        .iter()
        .find_map(|(_, c)| c.mesh_configs.first())
        .map(|m| m.spec.clone());
    let settings = Arc::new(
        mesh_config
            .as_ref()
            .map(MeshSettings::from_config)
            .unwrap_or_default(),
    );
    let sources: Vec<ClusterSource> = configs
        .iter()
        .map(|(id, config)| ClusterSource {
            id: id.clone(),
            network: NetworkId::new(
                config
                    .mesh_configs
                    .first()
                    .and_then(|m| m.spec.network.as_deref())
                    .unwrap_or(""),
            ),
            config: config.clone(),
        })
        .collect();
    let links: Vec<(ClusterId, Vec<(ClusterId, LinkSelector)>)> = clusters
        .iter()
        .zip(&configs)
        .map(|(c, (id, config))| {
            let mut l = mirror::links(config);
            for extra in &c.links {
                if !l.iter().any(|(id, _)| id == extra) {
                    l.push((extra.clone(), mirror::default_export_selector()));
                }
            }
            (id.clone(), l)
        })
        .collect();
    let model = build_model(settings, &sources, &links);
    let ctx = context::Context::new(&configs, &model);
    checks::run(&ctx, &mut analysis.messages);
    analysis.messages.sort_by(|a, b| {
        (a.level, &a.file, a.line, a.code, &a.message)
            .cmp(&(b.level, &b.file, b.line, b.code, &b.message))
    });
    analysis.messages.dedup();
    analysis
}

/// The merged model, with the Linkerd-style mirrors of linked clusters: a cluster that links
/// another analyzed cluster (by a link Secret among its manifests, or its topology's `links`)
/// sees that cluster's exported services as `<name>-<cluster>`, as its control plane would.
/// (The linked cluster's services also merge as usual, so its own objects are checked against
/// them.)
fn build_model(
    settings: Arc<MeshSettings>,
    sources: &[ClusterSource],
    links: &[(ClusterId, Vec<(ClusterId, LinkSelector)>)],
) -> MeshModel {
    let views: Vec<(ClusterId, ClusterView)> = sources
        .iter()
        .map(|c| (c.id.clone(), build_cluster(c, &settings)))
        .collect();
    let mut mirrors: Vec<(ClusterId, ClusterView)> = Vec::new();
    for (linked, selector) in links.iter().flat_map(|(_, l)| l) {
        if mirrors.iter().any(|(id, _)| id == linked) {
            continue;
        }
        if let Some((_, view)) = views.iter().find(|(id, _)| id == linked) {
            mirrors.push((
                linked.clone(),
                mirror::mirror_view(view, linked, true, selector),
            ));
        }
    }
    let refs: Vec<(&ClusterId, &ClusterView)> = views
        .iter()
        .chain(&mirrors)
        .map(|(id, v)| (id, v))
        .collect();
    MeshModel::from_views(settings, &refs)
}

/// Validation problems and skipped kinds, as messages.
fn validation_messages(report: &LoadReport, analysis: &mut Analysis) {
    analysis.documents += report.documents.len();
    for d in report.diagnostics() {
        let code = match (d.issue.code, d.issue.severity, d.issue.kind) {
            (Some(c), _, _) => codes::ALL
                .iter()
                .copied()
                .find(|k| k.code == c)
                .unwrap_or(codes::VALIDATION_WARNING),
            (None, Severity::Error, _) => codes::SCHEMA_VALIDATION_ERROR,
            (None, Severity::Warning, IssueKind::Deprecated) => codes::DEPRECATED_FIELD,
            (None, Severity::Warning, _) => codes::VALIDATION_WARNING,
        };
        let mut m = Message::new(code, d.issue.to_string());
        // An error-level rule reported as a warning (or the reverse) keeps the issue's severity.
        m.level = match d.issue.severity {
            Severity::Error => Level::Error,
            Severity::Warning if code.level == Level::Error => Level::Warning,
            Severity::Warning => code.level,
        };
        m.resource = d.resource.as_ref().map(ToString::to_string);
        m.file = Some(d.file.to_string());
        m.line = (d.pos.line > 0).then_some(d.pos.line);
        m.column = (d.pos.column > 0).then_some(d.pos.column);
        analysis.messages.push(m);
    }
    for doc in &report.documents {
        if let Outcome::Skipped {
            kind,
            reason,
            api_version,
        } = &doc.outcome
        {
            analysis.skipped += 1;
            if let Some(reason) = reason {
                let mut m = Message::new(
                    codes::NOT_SUPPORTED_BY_STRAIT,
                    format!(
                        "{kind} ({api_version}) is not supported by Strait and was skipped: {reason}"
                    ),
                );
                m.file = Some(doc.file.to_string());
                m.line = Some(doc.pos.line);
                analysis.messages.push(m);
            }
        }
    }
}

#[cfg(test)]
mod tests;
