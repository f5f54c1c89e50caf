//! Istio's own validation corpus (`shared/conformance/istio-validation`) run through the same
//! loader `strait validate` uses: every document of every `*-valid.yaml` must be accepted, every
//! document of every `*-invalid.yaml` rejected with an error naming the problem its `_err` line
//! names (at the field path, when the line gives one). Kinds outside Strait's scope must be
//! reported as not supported.

#![allow(clippy::panic)] // test support: a missing corpus must stop the test loudly

use std::path::{Path, PathBuf};

use strait_config::load::{LoadOptions, Outcome, load_str};
use strait_config::{Diagnostic, IssueKind};

fn corpus_dir() -> PathBuf {
    let candidates = [
        std::env::var("STRAIT_ISTIO_CONFORMANCE")
            .ok()
            .map(PathBuf::from),
        Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/conformance/istio-validation"),
        ),
        Some(PathBuf::from("/work/shared/conformance/istio-validation")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "Istio's validation corpus was not found: set STRAIT_ISTIO_CONFORMANCE to the \
             directory holding *-valid.yaml and *-invalid.yaml"
            )
        })
}

/// What an `_err` line says: a field path, a Kubernetes error class, or Istio's wording.
#[derive(Debug)]
struct Expected {
    text: String,
    path: Option<String>,
    kind: Option<IssueKind>,
    phrase: Option<String>,
}

fn expected(err: &str) -> Expected {
    let text = err
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .to_string();
    let classes = [
        (": Required value", IssueKind::Required),
        (": Invalid value", IssueKind::Invalid),
        (": Unsupported value", IssueKind::Unsupported),
        (": Duplicate value", IssueKind::Duplicate),
    ];
    for (suffix, kind) in classes {
        if let Some(i) = text.find(suffix) {
            return Expected {
                path: Some(text[..i].to_string()),
                kind: Some(kind),
                phrase: None,
                text,
            };
        }
    }
    if let Some(value) = text.strip_prefix("Unsupported value: ") {
        let phrase = Some(value.to_string());
        return Expected {
            path: None,
            kind: Some(IssueKind::Unsupported),
            phrase,
            text,
        };
    }
    if text == "Duplicate value" {
        return Expected {
            path: None,
            kind: Some(IssueKind::Duplicate),
            phrase: None,
            text,
        };
    }
    if let Some(i) = text.find(" in body should") {
        return Expected {
            path: Some(text[..i].to_string()),
            kind: Some(IssueKind::Invalid),
            phrase: None,
            text,
        };
    }
    Expected {
        phrase: Some(text.clone()),
        path: None,
        kind: None,
        text,
    }
}

fn matches(d: &Diagnostic, e: &Expected) -> bool {
    let shown = d.issue.to_string().to_lowercase();
    // An `_err` line may quote only the end of Kubernetes' message (`audiences[0] in body
    // ...` for `spec.jwtRules[0].audiences[0]`): the path then ends with what it names.
    let path = d.issue.path.to_string();
    e.path
        .as_ref()
        .is_none_or(|p| path == *p || path.ends_with(&format!(".{p}")))
        && e.kind.is_none_or(|k| d.issue.kind == k)
        && e.phrase
            .as_ref()
            .is_none_or(|p| shown.contains(&p.to_lowercase()))
        && d.is_error()
}

/// Splits a corpus file into (expected error, document text without the `_err` line).
fn corpus_documents(text: &str) -> Vec<(Option<String>, String)> {
    let mut docs = Vec::new();
    for chunk in text.split("\n---") {
        let mut err = None;
        let mut body = String::new();
        for line in chunk.lines() {
            if let Some(e) = line.strip_prefix("_err:") {
                err = Some(e.trim().to_string());
            } else {
                body.push_str(line);
                body.push('\n');
            }
        }
        let has_content = body
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if has_content {
            docs.push((err, body));
        }
    }
    docs
}

#[test]
fn istio_validation_corpus_is_accepted_and_rejected_as_istio_does() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let options = LoadOptions::default();
    let (mut valid_ok, mut valid_total, mut invalid_ok, mut invalid_total, mut unsupported) =
        (0, 0, 0, 0, 0);
    let mut unsupported_kinds = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let want_valid = name.ends_with("-valid.yaml");
        assert!(
            want_valid || name.ends_with("-invalid.yaml"),
            "unexpected corpus file {name}"
        );
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, (err, body)) in corpus_documents(&text).into_iter().enumerate() {
            let label = format!("{name}#{}", i + 1);
            let report = load_str(&body, &label, &options);
            assert_eq!(
                report.documents.len(),
                1,
                "{label}: one object per corpus document"
            );
            let doc = &report.documents[0];
            if let Outcome::Skipped {
                kind,
                reason: Some(_),
                ..
            } = &doc.outcome
            {
                unsupported += 1;
                unsupported_kinds.insert(kind.clone());
                continue;
            }
            let diags: Vec<&Diagnostic> = doc.diagnostics.iter().collect();
            if want_valid {
                valid_total += 1;
                match &doc.outcome {
                    Outcome::Accepted(_) => valid_ok += 1,
                    _ => failures.push(format!(
                        "{label}: valid document rejected: {}",
                        diags
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(" | ")
                    )),
                }
            } else {
                invalid_total += 1;
                let e = expected(
                    err.as_deref()
                        .unwrap_or_else(|| panic!("{label}: invalid document without _err")),
                );
                let rejected = doc.outcome == Outcome::Rejected;
                let named = diags.iter().any(|d| matches(d, &e));
                if rejected && named {
                    invalid_ok += 1;
                } else {
                    failures.push(format!(
                        "{label}: expected rejection naming \"{}\"; got {}: {}",
                        e.text,
                        if rejected { "rejected" } else { "accepted" },
                        diags
                            .iter()
                            .map(|d| d.issue.to_string())
                            .collect::<Vec<_>>()
                            .join(" | ")
                    ));
                }
            }
        }
    }
    println!(
        "Istio validation corpus ({}): valid accepted {valid_ok}/{valid_total}, invalid rejected at the named problem {invalid_ok}/{invalid_total}; {unsupported} documents of kinds outside Strait's scope reported as not supported ({})",
        dir.display(),
        unsupported_kinds.into_iter().collect::<Vec<_>>().join(", ")
    );
    assert!(valid_total > 0 && invalid_total > 0, "the corpus is empty");
    assert!(
        failures.is_empty(),
        "{} corpus mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
