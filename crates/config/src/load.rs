//! Loading configuration from files and directory trees: every document is classified, typed
//! and validated on its own, and every problem is reported at its file, document, line,
//! column and field.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::issue::{Issue, IssueKind};
use crate::kube::{
    EndpointPort, EndpointSubset, NamespaceSpec, ObjectMeta, Opaque, PodSpec, PodStatus,
    SecretData, ServiceSpec, ServiceStatus, SliceEndpoint,
};
use crate::path::FieldPath;
use crate::resource::{
    Classification, EndpointSliceData, EndpointsData, Kind, Meta, Object, PodData, Resource,
    ResourceRef, Source, classify,
};
use crate::validate;
use crate::yaml::{self, Limits, Node, Pos, Value, de::from_node};

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub limits: Limits,
    /// Namespace of namespaced objects that do not name one (as `kubectl apply` does).
    pub default_namespace: String,
    /// Most files read from one directory tree.
    pub max_files: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            default_namespace: "default".into(),
            max_files: 100_000,
        }
    }
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: Arc<str>,
    /// 1-based document index in the file; 0 for problems with the file itself.
    pub document: usize,
    pub pos: Pos,
    pub resource: Option<ResourceRef>,
    pub issue: Issue,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.issue.is_error()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.pos.line > 0 {
            write!(f, ":{}:{}", self.pos.line, self.pos.column)?;
        }
        write!(f, ": {}: ", self.issue.severity.as_str())?;
        match (&self.resource, self.document) {
            (Some(r), d) if d > 0 => write!(f, "{r} (document {d}): ")?,
            (None, d) if d > 0 => write!(f, "document {d}: ")?,
            _ => {}
        }
        write!(f, "{}", self.issue)
    }
}

/// What became of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Accepted(Box<Resource>),
    Rejected,
    /// Not a kind Strait reads; `reason` explains Istio kinds outside Strait's scope.
    Skipped {
        api_version: String,
        kind: String,
        reason: Option<&'static str>,
    },
}

/// One document (or one item of a `List`) and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentReport {
    pub file: Arc<str>,
    pub document: usize,
    pub pos: Pos,
    pub reference: Option<ResourceRef>,
    pub outcome: Outcome,
    pub diagnostics: Vec<Diagnostic>,
}

/// Everything read from a set of inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub documents: Vec<DocumentReport>,
    /// Problems with files themselves (unreadable, not UTF-8, too large).
    pub file_problems: Vec<Diagnostic>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

impl LoadReport {
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.documents.iter().filter_map(|d| match &d.outcome {
            Outcome::Accepted(r) => Some(r.as_ref()),
            _ => None,
        })
    }

    pub fn into_resources(self) -> impl Iterator<Item = Resource> {
        self.documents.into_iter().filter_map(|d| match d.outcome {
            Outcome::Accepted(r) => Some(*r),
            _ => None,
        })
    }

    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.file_problems
            .iter()
            .chain(self.documents.iter().flat_map(|d| d.diagnostics.iter()))
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics().filter(|d| d.is_error()).count()
    }

    pub fn rejected(&self) -> impl Iterator<Item = &DocumentReport> {
        self.documents
            .iter()
            .filter(|d| d.outcome == Outcome::Rejected)
    }

    pub fn skipped(&self) -> impl Iterator<Item = &DocumentReport> {
        self.documents
            .iter()
            .filter(|d| matches!(d.outcome, Outcome::Skipped { .. }))
    }

    fn extend(&mut self, other: LoadReport) {
        self.documents.extend(other.documents);
        self.file_problems.extend(other.file_problems);
        self.files.extend(other.files);
    }
}

/// Loads files and directory trees (recursively: `.yaml`, `.yml` and `.json` files, hidden
/// entries skipped, in name order).
pub fn load_paths(paths: &[PathBuf], options: &LoadOptions) -> LoadReport {
    let (files, problems) = list_files(paths, options.max_files);
    let mut report = LoadReport {
        file_problems: problems,
        ..Default::default()
    };
    for file in files {
        report.extend(load_file(&file, options));
    }
    report
}

/// The configuration files under `paths` (files as given; directories recursively: `.yaml`,
/// `.yml` and `.json`, hidden entries skipped, in name order), and problems listing them.
pub fn list_files(paths: &[PathBuf], max_files: usize) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        collect_files(path, max_files, &mut files, &mut problems);
    }
    (files, problems)
}

fn file_problem(file: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: Arc::from(file),
        document: 0,
        pos: Pos::default(),
        resource: None,
        issue: Issue::error(IssueKind::Invalid, FieldPath::root(), message),
    }
}

fn collect_files(
    path: &Path,
    max: usize,
    files: &mut Vec<PathBuf>,
    problems: &mut Vec<Diagnostic>,
) {
    let mut seen = BTreeSet::new();
    let mut stack = vec![path.to_path_buf()];
    let explicit = path.to_path_buf();
    while let Some(p) = stack.pop() {
        let meta = match std::fs::metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                problems.push(file_problem(
                    &p.display().to_string(),
                    format!("cannot read: {e}"),
                ));
                continue;
            }
        };
        if meta.is_dir() {
            let canonical = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if !seen.insert(canonical) {
                continue; // a symlink loop
            }
            let mut children: Vec<PathBuf> = match std::fs::read_dir(&p) {
                Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
                Err(e) => {
                    problems.push(file_problem(
                        &p.display().to_string(),
                        format!("cannot list directory: {e}"),
                    ));
                    continue;
                }
            };
            children.retain(|c| {
                c.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
            });
            children.sort();
            stack.extend(children.into_iter().rev());
        } else if p == explicit || is_config_file(&p) {
            if files.len() >= max {
                problems.push(file_problem(
                    &path.display().to_string(),
                    format!("more than {max} files; the rest were not read"),
                ));
                return;
            }
            files.push(p);
        }
    }
}

fn is_config_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Loads one file.
pub fn load_file(path: &Path, options: &LoadOptions) -> LoadReport {
    let label = path.display().to_string();
    let mut report = LoadReport {
        files: vec![path.to_path_buf()],
        ..Default::default()
    };
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > options.limits.max_file_bytes as u64 {
        report.file_problems.push(file_problem(
            &label,
            format!(
                "file is {size} bytes, more than the limit of {} bytes; split it into smaller files",
                options.limits.max_file_bytes
            ),
        ));
        return report;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            report
                .file_problems
                .push(file_problem(&label, format!("cannot read: {e}")));
            return report;
        }
    };
    let mut r = load_bytes(&bytes, &label, options);
    r.files = report.files;
    r
}

/// Loads the content of one file, named `label` in messages. Never panics, whatever the bytes.
pub fn load_bytes(bytes: &[u8], label: &str, options: &LoadOptions) -> LoadReport {
    let mut report = LoadReport::default();
    if bytes.len() > options.limits.max_file_bytes {
        report.file_problems.push(file_problem(
            label,
            "input is larger than the file size limit".into(),
        ));
        return report;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            report.file_problems.push(file_problem(
                label,
                format!(
                    "not UTF-8 text (invalid byte at offset {}); configuration must be UTF-8",
                    e.valid_up_to()
                ),
            ));
            return report;
        }
    };
    load_str(text, label, options)
}

/// Loads YAML or JSON text, named `label` in messages.
pub fn load_str(text: &str, label: &str, options: &LoadOptions) -> LoadReport {
    let file: Arc<str> = Arc::from(label);
    let mut report = LoadReport::default();
    let docs = yaml::split_documents(text);
    if docs.len() > options.limits.max_documents {
        report.file_problems.push(file_problem(
            label,
            format!(
                "{} documents, more than the limit of {}; split the file",
                docs.len(),
                options.limits.max_documents
            ),
        ));
        return report;
    }
    for doc in &docs {
        match yaml::parse_document(doc, &options.limits) {
            Ok(node) => load_tree(Arc::new(node), &file, doc.index, options, &mut report),
            Err(issue) => {
                let pos = yaml::error_position(&issue.message)
                    .unwrap_or(Pos::new(doc.line_offset + 1, 1));
                report.documents.push(DocumentReport {
                    file: file.clone(),
                    document: doc.index,
                    pos,
                    reference: None,
                    outcome: Outcome::Rejected,
                    diagnostics: vec![Diagnostic {
                        file: file.clone(),
                        document: doc.index,
                        pos,
                        resource: None,
                        issue,
                    }],
                });
            }
        }
    }
    report
}

fn load_tree(
    node: Arc<Node>,
    file: &Arc<str>,
    document: usize,
    options: &LoadOptions,
    report: &mut LoadReport,
) {
    // A `List` (as `kubectl get -o yaml` writes) holds its objects under `items`.
    let is_list = node
        .get("kind")
        .and_then(Node::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && matches!(node.get("items").map(|n| &n.value), Some(Value::Seq(_)));
    if is_list {
        if let Some(Value::Seq(items)) = node.get("items").map(|n| &n.value) {
            for i in 0..items.len() {
                let base = FieldPath::root().field("items").index(i);
                report
                    .documents
                    .push(load_object(node.clone(), base, file, document, options));
            }
        }
        return;
    }
    report.documents.push(load_object(
        node,
        FieldPath::root(),
        file,
        document,
        options,
    ));
}

fn load_object(
    root: Arc<Node>,
    base: FieldPath,
    file: &Arc<str>,
    document: usize,
    options: &LoadOptions,
) -> DocumentReport {
    let source = Arc::new(Source {
        file: file.clone(),
        document,
        base: base.clone(),
        node: root,
    });
    let node = object_node(&source);
    let pos = source.pos();
    let mut report = DocumentReport {
        file: file.clone(),
        document,
        pos,
        reference: None,
        outcome: Outcome::Rejected,
        diagnostics: Vec::new(),
    };
    let text_field = |name: &str| {
        node.and_then(|n| n.get(name))
            .and_then(Node::as_str)
            .unwrap_or("")
            .to_string()
    };
    let api_version = text_field("apiVersion");
    let kind_name = text_field("kind");
    let name = node
        .and_then(|n| n.get("metadata"))
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .unwrap_or("");
    let namespace = node
        .and_then(|n| n.get("metadata"))
        .and_then(|m| m.get("namespace"))
        .and_then(Node::as_str);
    let push = |report: &mut DocumentReport, issue: Issue| {
        let pos = source.locate(&issue.path);
        report.diagnostics.push(Diagnostic {
            file: file.clone(),
            document,
            pos,
            resource: report.reference.clone(),
            issue,
        });
    };
    if !matches!(node.map(|n| &n.value), Some(Value::Map(_))) {
        push(
            &mut report,
            Issue::error(
                IssueKind::WrongType,
                FieldPath::root(),
                "a document must be a mapping with apiVersion, kind and metadata",
            ),
        );
        return report;
    }
    if api_version.is_empty() || kind_name.is_empty() {
        let missing = if api_version.is_empty() {
            "apiVersion"
        } else {
            "kind"
        };
        push(
            &mut report,
            Issue::error(
                IssueKind::Required,
                FieldPath::root().field(missing),
                format!("every document needs apiVersion and kind; \"{missing}\" is missing"),
            ),
        );
        return report;
    }
    let kind = match classify(&api_version, &kind_name) {
        Classification::Supported(k) => k,
        Classification::WrongVersion(k) => {
            report.reference = Some(ResourceRef::new(&kind_name, namespace.unwrap_or(""), name));
            let allowed: Vec<String> = k
                .api_versions()
                .iter()
                .map(|v| format!("\"{v}\""))
                .collect();
            push(
                &mut report,
                Issue::error(
                    IssueKind::Unsupported,
                    FieldPath::root().field("apiVersion"),
                    format!(
                        "\"{api_version}\": {kind_name} is read in {}",
                        allowed.join(", ")
                    ),
                ),
            );
            return report;
        }
        Classification::NotSupported(reason) => {
            report.outcome = Outcome::Skipped {
                api_version,
                kind: kind_name,
                reason: Some(reason),
            };
            return report;
        }
        Classification::Other => {
            report.outcome = Outcome::Skipped {
                api_version,
                kind: kind_name,
                reason: None,
            };
            return report;
        }
    };
    let namespace = if kind.is_namespaced() {
        namespace.unwrap_or(&options.default_namespace)
    } else {
        ""
    };
    report.reference = Some(ResourceRef::new(kind.as_str(), namespace, name));
    let Some(node) = node else { return report };
    match read_resource(kind, node, &base, source.clone(), namespace) {
        Ok((resource, mut issues)) => {
            issues.extend(validate::resource(&resource));
            let rejected = issues.iter().any(Issue::is_error);
            for issue in issues {
                push(&mut report, relative(issue, &base));
            }
            if !rejected {
                report.outcome = Outcome::Accepted(Box::new(resource));
            }
        }
        Err(issues) => {
            for issue in issues {
                push(&mut report, relative(issue, &base));
            }
        }
    }
    report.diagnostics.sort_by_key(|d| d.pos);
    report
}

/// Problems are reported relative to the object (`spec.host`, not `items[2].spec.host`).
fn relative(mut issue: Issue, base: &FieldPath) -> Issue {
    if !base.is_root() && issue.path.starts_with(base) {
        issue.path = FieldPath::parse(
            issue
                .path
                .to_string()
                .strip_prefix(&base.to_string())
                .unwrap_or("")
                .trim_start_matches('.'),
        );
    }
    issue
}

fn object_node(source: &Source) -> Option<&Node> {
    let mut node: &Node = &source.node;
    for seg in source.base.segments() {
        node = match (seg, &node.value) {
            (crate::path::Segment::Field(f), Value::Map(_)) => node.get(f)?,
            (crate::path::Segment::Index(i), Value::Seq(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

// ---------------------------------------------------------------------------------------------
// Documents as written, converted to typed objects.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecDocument<S, T = Opaque> {
    #[allow(dead_code)] // read by classify before typing
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: Option<S>,
    /// Ignored (`Opaque`) except where a kind's status matters (a Service's load balancer).
    status: Option<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointsDocument {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    subsets: Vec<EndpointSubset>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndpointSliceDocument {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    address_type: String,
    #[serde(default)]
    endpoints: Vec<SliceEndpoint>,
    #[serde(default)]
    ports: Vec<EndpointPort>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodDocument {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: PodSpec,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeDocument {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[allow(dead_code)]
    spec: Option<Opaque>,
    #[allow(dead_code)]
    status: Option<Opaque>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretDocument {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    data: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    string_data: std::collections::BTreeMap<String, String>,
    #[serde(rename = "type")]
    secret_type: Option<String>,
    immutable: Option<bool>,
}

type Typed = Result<(Resource, Vec<Issue>), Vec<Issue>>;

fn meta(api_version: &str, m: ObjectMeta, namespace: &str) -> Meta {
    Meta {
        api_version: api_version.to_string(),
        name: m.name,
        namespace: namespace.to_string(),
        labels: m.labels,
        annotations: m.annotations,
    }
}

fn read_resource(
    kind: Kind,
    node: &Node,
    base: &FieldPath,
    source: Arc<Source>,
    namespace: &str,
) -> Typed {
    let api = node
        .get("apiVersion")
        .and_then(Node::as_str)
        .unwrap_or("")
        .to_string();
    // Istio resources whose schema requires `spec`.
    let spec_required = matches!(
        kind,
        Kind::ServiceEntry | Kind::WorkloadEntry | Kind::WorkloadGroup
    );
    macro_rules! spec_kind {
        ($variant:ident) => {{
            let (doc, mut issues) = typed::<SpecDocument<_>>(node, base)?;
            let spec = match doc.spec {
                Some(s) => s,
                None if spec_required => {
                    issues.push(Issue::error(
                        IssueKind::Required,
                        base.field("spec"),
                        "the spec of this kind must be set",
                    ));
                    return Err(issues);
                }
                None => Default::default(),
            };
            Ok((
                Resource::$variant(Arc::new(Object {
                    meta: meta(&api, doc.metadata, namespace),
                    spec,
                    source,
                })),
                issues,
            ))
        }};
    }
    match kind {
        Kind::VirtualService => spec_kind!(VirtualService),
        Kind::DestinationRule => spec_kind!(DestinationRule),
        Kind::ServiceEntry => spec_kind!(ServiceEntry),
        Kind::WorkloadEntry => spec_kind!(WorkloadEntry),
        Kind::WorkloadGroup => spec_kind!(WorkloadGroup),
        Kind::Gateway => spec_kind!(Gateway),
        Kind::Sidecar => spec_kind!(Sidecar),
        Kind::PeerAuthentication => spec_kind!(PeerAuthentication),
        Kind::RequestAuthentication => spec_kind!(RequestAuthentication),
        Kind::AuthorizationPolicy => spec_kind!(AuthorizationPolicy),
        Kind::TrafficSplit => spec_kind!(TrafficSplit),
        Kind::Link => spec_kind!(Link),
        Kind::MeshConfig => spec_kind!(MeshConfig),
        Kind::Service => {
            let (doc, issues) = typed::<SpecDocument<ServiceSpec, ServiceStatus>>(node, base)?;
            let mut spec = doc.spec.unwrap_or_default();
            spec.load_balancer_ingress = doc
                .status
                .map(|s| s.ingress_addresses())
                .unwrap_or_default();
            Ok((
                Resource::Service(Arc::new(Object {
                    meta: meta(&api, doc.metadata, namespace),
                    spec,
                    source,
                })),
                issues,
            ))
        }
        Kind::Namespace => {
            let (doc, issues) = typed::<SpecDocument<NamespaceSpec>>(node, base)?;
            let spec = doc.spec.unwrap_or_default();
            Ok((
                Resource::Namespace(Arc::new(Object {
                    meta: meta(&api, doc.metadata, namespace),
                    spec,
                    source,
                })),
                issues,
            ))
        }
        Kind::Endpoints => {
            let (doc, issues) = typed::<EndpointsDocument>(node, base)?;
            let spec = EndpointsData {
                subsets: doc.subsets,
            };
            Ok((
                Resource::Endpoints(Arc::new(Object {
                    meta: meta(&api, doc.metadata, namespace),
                    spec,
                    source,
                })),
                issues,
            ))
        }
        Kind::EndpointSlice => {
            let (doc, issues) = typed::<EndpointSliceDocument>(node, base)?;
            let spec = EndpointSliceData {
                address_type: doc.address_type,
                endpoints: doc.endpoints,
                ports: doc.ports,
            };
            Ok((
                Resource::EndpointSlice(Arc::new(Object {
                    meta: meta(&api, doc.metadata, namespace),
                    spec,
                    source,
                })),
                issues,
            ))
        }
        Kind::Pod => {
            let (doc, issues) = typed::<PodDocument>(node, base)?;
            let spec = PodData {
                spec: doc.spec,
                status: doc.status,
            };
            Ok((
                Resource::Pod(Arc::new(Object {
                    meta: meta(&api, doc.metadata, namespace),
                    spec,
                    source,
                })),
                issues,
            ))
        }
        Kind::Node => {
            let (doc, issues) = typed::<NodeDocument>(node, base)?;
            Ok((
                Resource::Node(Arc::new(Object {
                    meta: meta(&api, doc.metadata, namespace),
                    spec: (),
                    source,
                })),
                issues,
            ))
        }
        Kind::Secret => {
            let (doc, issues) = typed::<SecretDocument>(node, base)?;
            let spec = SecretData {
                data: doc.data,
                string_data: doc.string_data,
                secret_type: doc.secret_type,
                immutable: doc.immutable,
            };
            Ok((
                Resource::Secret(Arc::new(Object {
                    meta: meta(&api, doc.metadata, namespace),
                    spec,
                    source,
                })),
                issues,
            ))
        }
    }
}

/// Deserializes; unknown fields come back as issues beside the value so that semantic
/// validation still runs and the document's problems are reported together.
fn typed<T: DeserializeOwned>(
    node: &Node,
    base: &FieldPath,
) -> Result<(T, Vec<Issue>), Vec<Issue>> {
    from_node::<T>(node, base)
}
