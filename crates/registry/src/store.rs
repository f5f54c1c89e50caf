//! The objects of one cluster's files, with last-good semantics: a document that becomes
//! invalid keeps its last good version in effect (and the problem is reported); a document or
//! file that disappears takes its objects with it. Pure: files are given as load reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strait_config::load::{Diagnostic, LoadReport, Outcome};
use strait_config::{ConfigSet, FieldPath, Issue, IssueKind, Resource, ResourceRef};

/// One object in effect, and where it came from.
#[derive(Debug, Clone, PartialEq)]
struct Kept {
    identity: Option<ResourceRef>,
    document: usize,
    resource: Resource,
    /// True when the current document is invalid and this is its last good version.
    stale: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct FileEntry {
    fingerprint: u64,
    objects: Vec<Kept>,
    problems: Vec<Diagnostic>,
}

/// The files of one cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileStore {
    files: BTreeMap<PathBuf, FileEntry>,
}

/// What a file update did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileUpdate {
    /// Objects of the file whose last good version stays in effect.
    pub kept_last_good: Vec<ResourceRef>,
    pub errors: usize,
}

impl FileStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The fingerprint the file had when last applied.
    pub fn fingerprint(&self, path: &Path) -> Option<u64> {
        self.files.get(path).map(|f| f.fingerprint)
    }

    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.keys()
    }

    /// Applies a new version of a file.
    pub fn update_file(&mut self, path: &Path, fingerprint: u64, report: LoadReport) -> FileUpdate {
        let previous = self.files.remove(path).unwrap_or_default();
        let mut used = BTreeSet::new();
        let mut entry = FileEntry {
            fingerprint,
            objects: Vec::new(),
            problems: report.file_problems.clone(),
        };
        let mut update = FileUpdate::default();
        for doc in report.documents {
            entry.problems.extend(doc.diagnostics.iter().cloned());
            update.errors += doc.diagnostics.iter().filter(|d| d.is_error()).count();
            match doc.outcome {
                Outcome::Accepted(resource) => entry.objects.push(Kept {
                    identity: Some(resource.reference()),
                    document: doc.document,
                    resource: *resource,
                    stale: false,
                }),
                Outcome::Rejected => {
                    // The previous version of the same object (by identity, else by position).
                    let found = previous.objects.iter().enumerate().find(|(i, k)| {
                        !used.contains(i)
                            && match (&doc.reference, &k.identity) {
                                (Some(new), Some(old)) if !new.name.is_empty() => new == old,
                                _ => k.document == doc.document,
                            }
                    });
                    if let Some((i, k)) = found {
                        used.insert(i);
                        let who = k.identity.clone().unwrap_or_else(|| k.resource.reference());
                        entry.problems.push(Diagnostic {
                            file: doc.file.clone(),
                            document: doc.document,
                            pos: doc.pos,
                            resource: Some(who.clone()),
                            issue: Issue::warning(
                                IssueKind::Notice,
                                FieldPath::root(),
                                format!("this document is invalid, so the last good version of {who} stays in effect until it is fixed"),
                            ),
                        });
                        update.kept_last_good.push(who);
                        entry.objects.push(Kept {
                            stale: true,
                            document: doc.document,
                            ..k.clone()
                        });
                    }
                }
                Outcome::Skipped { .. } => {}
            }
        }
        self.files.insert(path.to_path_buf(), entry);
        update
    }

    /// Forgets a deleted file and its objects.
    pub fn remove_file(&mut self, path: &Path) -> bool {
        self.files.remove(path).is_some()
    }

    /// The objects in effect. When two files define the same object, the first file (in path
    /// order) wins and the other definition is reported. Delegating VirtualServices come with
    /// their delegates' routes merged in.
    pub fn config(&self) -> (ConfigSet, Vec<Diagnostic>) {
        let mut seen: BTreeMap<ResourceRef, &Path> = BTreeMap::new();
        let mut set = ConfigSet::default();
        let mut problems = Vec::new();
        for (path, entry) in &self.files {
            problems.extend(entry.problems.iter().cloned());
            for k in &entry.objects {
                let id = k.resource.reference();
                if let Some(first) = seen.get(&id) {
                    let source = k.resource.source();
                    problems.push(Diagnostic {
                        file: source.file.clone(),
                        document: source.document,
                        pos: source.pos(),
                        resource: Some(id.clone()),
                        issue: Issue::error(
                            IssueKind::Duplicate,
                            FieldPath::root().field("metadata").field("name"),
                            format!("{id} is also defined in {}; that definition is used, this one ignored", first.display()),
                        ),
                    });
                    continue;
                }
                seen.insert(id, path);
                set.insert(k.resource.clone());
            }
        }
        set.merge_delegates();
        (set, problems)
    }

    /// How many objects are running on a last good version.
    pub fn stale_count(&self) -> usize {
        self.files
            .values()
            .flat_map(|f| f.objects.iter())
            .filter(|k| k.stale)
            .count()
    }
}

/// The fingerprint of file content (to skip files that did not change).
pub fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A shared, immutable view of a [`ConfigSet`].
pub type SharedConfig = Arc<ConfigSet>;

#[cfg(test)]
mod tests {
    use strait_config::{LoadOptions, load_str};

    use super::*;

    fn report(text: &str) -> LoadReport {
        load_str(text, "f.yaml", &LoadOptions::default())
    }

    const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: prod}\nspec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}\n";
    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: prod}\nspec: {ports: [{port: 9080, name: http}]}\n";

    fn subset_names(store: &FileStore) -> Vec<String> {
        store
            .config()
            .0
            .destination_rules
            .iter()
            .flat_map(|d| d.spec.subsets.iter().map(|s| s.name.clone()))
            .collect()
    }

    #[test]
    fn an_invalid_document_keeps_its_last_good_version_and_reports_why() {
        let mut store = FileStore::new();
        let p = Path::new("f.yaml");
        store.update_file(p, 1, report(&format!("{DR}---\n{SVC}")));
        assert_eq!(subset_names(&store), vec!["v1"]);
        let broken = DR.replace("name: v1, labels", "name: V_1, labels");
        let u = store.update_file(p, 2, report(&format!("{broken}---\n{SVC}")));
        assert_eq!(u.kept_last_good.len(), 1);
        assert_eq!(
            subset_names(&store),
            vec!["v1"],
            "the last good version stays"
        );
        let (set, problems) = store.config();
        assert_eq!(set.services.len(), 1, "the other document is unaffected");
        assert!(
            problems
                .iter()
                .any(|d| d.is_error() && d.issue.to_string().contains("subset name is invalid"))
        );
        assert!(problems.iter().any(|d| {
            d.issue
                .message
                .contains("last good version of DestinationRule prod/reviews")
        }));
        assert_eq!(store.stale_count(), 1);
        let fixed = DR.replace("name: v1, labels", "name: v2, labels");
        store.update_file(p, 3, report(&format!("{fixed}---\n{SVC}")));
        assert_eq!(subset_names(&store), vec!["v2"]);
        assert_eq!(store.stale_count(), 0);
        assert!(store.config().1.is_empty());
    }

    #[test]
    fn a_syntax_error_keeps_the_document_at_the_same_position() {
        let mut store = FileStore::new();
        let p = Path::new("f.yaml");
        store.update_file(p, 1, report(&format!("{SVC}---\n{DR}")));
        let u = store.update_file(p, 2, report(&format!("{SVC}---\nspec: [unclosed\n")));
        assert_eq!(u.kept_last_good.len(), 1);
        assert_eq!(store.config().0.destination_rules.len(), 1);
    }

    #[test]
    fn removed_documents_and_deleted_files_take_their_objects() {
        let mut store = FileStore::new();
        store.update_file(Path::new("a.yaml"), 1, report(&format!("{DR}---\n{SVC}")));
        store.update_file(Path::new("a.yaml"), 2, report(SVC));
        assert!(store.config().0.destination_rules.is_empty());
        assert!(store.remove_file(Path::new("a.yaml")));
        assert!(store.config().0.is_empty());
    }

    #[test]
    fn an_object_defined_in_two_files_is_taken_from_the_first() {
        let mut store = FileStore::new();
        store.update_file(Path::new("a.yaml"), 1, report(DR));
        store.update_file(
            Path::new("b.yaml"),
            1,
            report(&DR.replace("name: v1", "name: v9")),
        );
        let (set, problems) = store.config();
        assert_eq!(set.destination_rules.len(), 1);
        assert_eq!(subset_names(&store), vec!["v1"]);
        assert!(
            problems
                .iter()
                .any(|d| d.issue.kind == IssueKind::Duplicate)
        );
    }
}
