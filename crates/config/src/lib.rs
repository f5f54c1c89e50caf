//! Strait's configuration: the Istio, Kubernetes, SMI and Strait resources users write, read
//! from YAML or JSON within safety limits, and validated the way Istio validates them.
//!
//! The entry point is [`load::load_paths`]: it returns every document with what became of it
//! (accepted as a typed [`resource::Resource`], rejected, or skipped) and every problem located
//! at file, document, line, column and field path.

pub mod duration;
pub mod issue;
pub mod istio;
pub mod kube;
pub mod linkerd;
pub mod load;
pub mod mesh;
pub mod path;
pub mod resource;
pub mod smi;
pub mod validate;
pub mod yaml;

pub use issue::{Issue, IssueKind, Severity};
pub use load::{
    Diagnostic, DocumentReport, LoadOptions, LoadReport, Outcome, load_paths, load_str,
};
pub use path::FieldPath;
pub use resource::{ConfigSet, Kind, Meta, Object, Resource, ResourceRef, Source};
