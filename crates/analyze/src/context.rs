//! What every check needs: all clusters' objects, the merged model, host resolution as Istio
//! does it, and messages located at a field of an object.

use std::collections::BTreeMap;
use std::sync::Arc;

use strait_config::resource::Object;
use strait_config::{ConfigSet, FieldPath};
use strait_model::{ClusterId, Hostname, MeshModel, ServiceView, Workload};

use crate::message::{Code, Message};

pub(crate) struct Context<'a> {
    pub configs: &'a [(ClusterId, Arc<ConfigSet>)],
    pub model: &'a MeshModel,
}

impl<'a> Context<'a> {
    pub fn new(configs: &'a [(ClusterId, Arc<ConfigSet>)], model: &'a MeshModel) -> Self {
        Self { configs, model }
    }

    /// Every object of one kind across clusters.
    pub fn all<T: 'a>(
        &self,
        pick: impl Fn(&'a ConfigSet) -> &'a Vec<Arc<Object<T>>>,
    ) -> impl Iterator<Item = &'a Object<T>> {
        self.configs
            .iter()
            .flat_map(move |(_, c)| pick(c).iter().map(|o| &**o))
    }

    /// Istio's short-name rule: a host without dots is a service in the object's namespace.
    pub fn resolve(&self, host: &str, namespace: &str) -> String {
        if host.starts_with('*') || host.contains('.') {
            host.to_string()
        } else {
            format!(
                "{host}.{namespace}.svc.{}",
                self.model.settings.domain_suffix
            )
        }
    }

    /// The service a (resolved) host names: by exact host, else through a wildcard host.
    pub fn find_service(&self, host: &str) -> Option<&'a ServiceView> {
        let exact = Hostname::new(host);
        let mut wildcard = None;
        for (key, view) in self.model.services() {
            if key.host == exact {
                return Some(view);
            }
            if let Some(suffix) = key.host.as_str().strip_prefix('*')
                && host.ends_with(suffix)
            {
                wildcard = Some(view);
            }
        }
        wildcard
    }

    /// Workloads in `namespace` (any when `None`) carrying every label of `selector`.
    pub fn selected(
        &self,
        namespace: Option<&str>,
        selector: &BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Workload> {
        let ns = namespace.map(str::to_string);
        let selector = selector.clone();
        self.model
            .workloads()
            .iter()
            .filter(move |w| ns.as_deref().is_none_or(|n| n == w.namespace) && w.matches(&selector))
    }
}

/// A message about `path` of `obj` (a `Kind` named `kind`).
pub(crate) fn at<T>(
    code: Code,
    kind: &str,
    obj: &Object<T>,
    path: &FieldPath,
    message: impl Into<String>,
) -> Message {
    let mut m = Message::new(code, message);
    m.resource = Some(
        strait_config::ResourceRef::new(kind, &obj.meta.namespace, &obj.meta.name).to_string(),
    );
    let pos = obj.source.locate(path);
    m.file = Some(obj.source.file.to_string());
    m.line = (pos.line > 0).then_some(pos.line);
    m.column = (pos.column > 0).then_some(pos.column);
    if !path.is_root() {
        m.field = Some(path.to_string());
    }
    m
}
