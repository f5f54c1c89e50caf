//! Problems found in a document, in the vocabulary Kubernetes and Istio users already read:
//! `spec.hosts: Required value`, `spec.mtls.mode: Unsupported value: "BLAH"`.

use std::fmt;

use crate::path::FieldPath;

/// Whether a problem rejects the document or only deserves attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// The class of a problem. The first five are Kubernetes' field error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueKind {
    /// A field that must be set is missing or empty.
    Required,
    /// A value breaks a rule (range, format, combination with other fields).
    Invalid,
    /// A value is not one of the allowed choices.
    Unsupported,
    /// A value repeats one that must be unique.
    Duplicate,
    /// A field may not be set in this situation.
    Forbidden,
    /// A field the schema does not know (usually a typo or a wrong indentation).
    UnknownField,
    /// A value of the wrong type (a number where text is expected, ...).
    WrongType,
    /// The text is not well-formed YAML or JSON.
    Syntax,
    /// The input exceeds a safety limit (size, depth, alias expansion).
    Limit,
    /// A field that still works but is deprecated.
    Deprecated,
    /// Anything else worth a warning.
    Notice,
}

impl IssueKind {
    /// Kubernetes' wording of the class, used as the message prefix.
    pub fn phrase(self) -> &'static str {
        match self {
            IssueKind::Required => "Required value",
            IssueKind::Invalid => "Invalid value",
            IssueKind::Unsupported => "Unsupported value",
            IssueKind::Duplicate => "Duplicate value",
            IssueKind::Forbidden => "Forbidden",
            IssueKind::UnknownField => "unknown field",
            IssueKind::WrongType => "Invalid type",
            IssueKind::Syntax => "syntax error",
            IssueKind::Limit => "input too large",
            IssueKind::Deprecated => "deprecated",
            IssueKind::Notice => "note",
        }
    }
}

/// One problem at one field of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub severity: Severity,
    pub kind: IssueKind,
    pub path: FieldPath,
    pub message: String,
    /// A stable code for rules `strait analyze` reports under their own name.
    pub code: Option<&'static str>,
}

impl Issue {
    pub fn error(kind: IssueKind, path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            kind,
            path,
            message: message.into(),
            code: None,
        }
    }

    pub fn warning(kind: IssueKind, path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            kind,
            path,
            message: message.into(),
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Notices are plain sentences; the other kinds lead with Kubernetes' wording.
        let phrase = (self.kind != IssueKind::Notice).then(|| self.kind.phrase());
        let parts: Vec<String> = [
            (!self.path.is_root()).then(|| self.path.to_string()),
            phrase.map(str::to_string),
            (!self.message.is_empty()).then(|| self.message.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        f.write_str(&parts.join(": "))
    }
}

/// Collects the problems of one document as validation walks it.
#[derive(Debug, Default)]
pub struct Issues(Vec<Issue>);

impl Issues {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, issue: Issue) {
        self.0.push(issue);
    }

    pub fn error(&mut self, kind: IssueKind, path: FieldPath, message: impl Into<String>) {
        self.0.push(Issue::error(kind, path, message));
    }

    pub fn invalid(&mut self, path: FieldPath, message: impl Into<String>) {
        self.error(IssueKind::Invalid, path, message);
    }

    pub fn required(&mut self, path: FieldPath, message: impl Into<String>) {
        self.error(IssueKind::Required, path, message);
    }

    pub fn warn(&mut self, kind: IssueKind, path: FieldPath, message: impl Into<String>) {
        self.0.push(Issue::warning(kind, path, message));
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Issue::is_error)
    }

    pub fn into_vec(self) -> Vec<Issue> {
        self.0
    }

    pub fn as_slice(&self) -> &[Issue] {
        &self.0
    }
}
