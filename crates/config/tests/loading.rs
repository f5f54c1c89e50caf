//! Loading files and directory trees: every document on its own, located problems, limits.

#![allow(clippy::unwrap_used)] // test helpers

use strait_config::load::{LoadOptions, Outcome, load_paths, load_str};
use strait_config::yaml::Limits;
use strait_config::{IssueKind, Kind, Resource};

const SERVICE: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, name: http}]}\n";

#[test]
fn one_bad_document_never_hides_the_others() {
    let text = format!(
        "{SERVICE}---\napiVersion: v1\nkind: Service\nmetadata: {{name: b\n---\n{}",
        SERVICE.replace("name: a", "name: c")
    );
    let r = load_str(&text, "three.yaml", &LoadOptions::default());
    let outcomes: Vec<bool> = r
        .documents
        .iter()
        .map(|d| matches!(d.outcome, Outcome::Accepted(_)))
        .collect();
    assert_eq!(outcomes, vec![true, false, true]);
    let d = &r.documents[1].diagnostics[0];
    assert_eq!((d.document, d.issue.kind), (2, IssueKind::Syntax));
    assert!(d.pos.line >= 7, "the error is located in the file: {d}");
    assert!(d.to_string().starts_with("three.yaml:"), "{d}");
}

#[test]
fn json_documents_and_lists_are_read() {
    let json = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "x"}, "spec": {"ports": [{"port": 80, "name": "http"}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "d"}, "spec": {"hostt": "a"}}
    ]}"#;
    let r = load_str(json, "list.json", &LoadOptions::default());
    assert_eq!(r.documents.len(), 2);
    assert!(matches!(&r.documents[0].outcome, Outcome::Accepted(r) if r.kind() == Kind::Service));
    let d = r.documents[1]
        .diagnostics
        .iter()
        .find(|d| d.issue.kind == IssueKind::UnknownField)
        .unwrap();
    assert_eq!(
        d.issue.path.to_string(),
        "spec.hostt",
        "paths are relative to the item"
    );
    assert_eq!(d.pos.line, 3, "but located in the file");
}

#[test]
fn namespaces_default_and_kinds_are_classified() {
    let text = format!(
        "{SERVICE}---\napiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {{name: v}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n---\nkind: Service\nmetadata: {{name: x}}\n"
    );
    let r = load_str(
        &text,
        "mix.yaml",
        &LoadOptions {
            default_namespace: "prod".into(),
            ..Default::default()
        },
    );
    match &r.documents[0].outcome {
        Outcome::Accepted(res) => match res.as_ref() {
            Resource::Service(o) => assert_eq!(o.meta.namespace, "prod"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let wrong = &r.documents[1].diagnostics[0];
    assert_eq!(
        (wrong.issue.kind, wrong.issue.path.to_string()),
        (IssueKind::Unsupported, "apiVersion".to_string())
    );
    assert!(
        wrong.issue.message.contains("networking.istio.io/v1beta1"),
        "{wrong}"
    );
    assert!(
        matches!(&r.documents[2].outcome, Outcome::Skipped { kind, reason: None, .. } if kind == "Deployment")
    );
    assert_eq!(
        r.documents[3].diagnostics[0].issue.kind,
        IssueKind::Required
    );
}

#[test]
fn directory_trees_are_walked_in_order_skipping_hidden_and_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("b/nested")).unwrap();
    std::fs::create_dir_all(p.join(".git")).unwrap();
    std::fs::write(
        p.join("b/nested/z.yml"),
        SERVICE.replace("name: a", "name: z"),
    )
    .unwrap();
    std::fs::write(p.join("a.yaml"), SERVICE).unwrap();
    std::fs::write(p.join(".hidden.yaml"), "not: read").unwrap();
    std::fs::write(p.join(".git/config.yaml"), "not: read").unwrap();
    std::fs::write(p.join("notes.txt"), "not: read").unwrap();
    std::fs::write(
        p.join("c.json"),
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}"#,
    )
    .unwrap();
    let r = load_paths(&[p.to_path_buf()], &LoadOptions::default());
    let names: Vec<String> = r
        .files
        .iter()
        .map(|f| f.strip_prefix(p).unwrap().display().to_string())
        .collect();
    assert_eq!(names, vec!["a.yaml", "b/nested/z.yml", "c.json"]);
    assert_eq!(r.resources().count(), 3);
    assert_eq!(r.error_count(), 0);
}

#[test]
fn oversized_and_non_utf8_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "a: b\n".repeat(100)).unwrap();
    let options = LoadOptions {
        limits: Limits {
            max_file_bytes: 100,
            ..Limits::default()
        },
        ..Default::default()
    };
    let r = load_paths(std::slice::from_ref(&big), &options);
    assert!(
        r.file_problems[0]
            .to_string()
            .contains("more than the limit of 100 bytes"),
        "{}",
        r.file_problems[0]
    );
    let bin = dir.path().join("bin.yaml");
    std::fs::write(&bin, b"apiVersion: v1\n\xff\xfe").unwrap();
    let r = load_paths(&[bin], &LoadOptions::default());
    assert!(
        r.file_problems[0]
            .to_string()
            .contains("not UTF-8 text (invalid byte at offset 15)"),
        "{}",
        r.file_problems[0]
    );
    let r = load_paths(&[dir.path().join("missing.yaml")], &LoadOptions::default());
    assert!(
        r.file_problems[0].to_string().contains("cannot read"),
        "{}",
        r.file_problems[0]
    );
}

/// A Link as `linkerd multicluster link --cluster-name west` writes it.
const LINK: &str = r#"apiVersion: multicluster.linkerd.io/v1alpha2
kind: Link
metadata: {name: west, namespace: linkerd-multicluster}
spec:
  clusterCredentialsSecret: cluster-credentials-west
  gatewayAddress: 203.0.113.10
  gatewayIdentity: linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local
  gatewayPort: "4143"
  probeSpec: {path: /ready, period: 3s, port: "4191", failureThreshold: "3", timeout: 30s}
  remoteDiscoverySelector:
    matchLabels: {mirror.linkerd.io/exported: remote-discovery}
  selector:
    matchLabels: {mirror.linkerd.io/exported: "true"}
  targetClusterDomain: cluster.local
  targetClusterLinkerdNamespace: linkerd
  targetClusterName: west
"#;

#[test]
fn linkerd_links_are_read_and_their_mistakes_located() {
    let r = load_str(LINK, "link.yaml", &LoadOptions::default());
    let errors: Vec<String> = r
        .diagnostics()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(matches!(&r.documents[0].outcome, Outcome::Accepted(r) if r.kind() == Kind::Link));

    let bad = LINK
        .replace("gatewayPort: \"4143\"", "gatewayPort: \"gateway\"")
        .replace("period: 3s", "period: soon")
        .replace("targetClusterName: west", "targetClusterName: West_1")
        .replace(
            "    matchLabels: {mirror.linkerd.io/exported: \"true\"}",
            "    matchExpressions: [{key: a, operator: Matches}]",
        );
    let r = load_str(&bad, "link.yaml", &LoadOptions::default());
    let mut fields: Vec<String> = r
        .diagnostics()
        .filter(|d| d.is_error())
        .map(|d| d.issue.path.to_string())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "spec.gatewayPort",
            "spec.probeSpec.period",
            "spec.selector.matchExpressions[0].operator",
            "spec.targetClusterName",
        ]
    );
}

/// A Secret's `data` must be base64 (the API server refuses it otherwise); the error names the
/// key, its line, and what to write instead. `stringData` wins over `data`, as the API server
/// merges them.
#[test]
fn secret_data_that_is_not_base64_is_refused_at_its_key() {
    let yaml = "apiVersion: v1
kind: Secret
metadata: {name: web, namespace: istio-system}
type: kubernetes.io/tls
data:
  tls.crt: Q0hBSU4=
  tls.key: not base64!
";
    let r = load_str(yaml, "secret.yaml", &LoadOptions::default());
    let errors: Vec<String> = r
        .diagnostics()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("secret.yaml:7") && errors[0].contains("data[tls.key]"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("stringData"), "{}", errors[0]);

    let fixed = yaml.replace(
        "tls.key: not base64!",
        "tls.key: S0VZ\nstringData: {tls.key: OTHER}",
    );
    let set = strait_config::ConfigSet::from_resources(
        load_str(&fixed, "secret.yaml", &LoadOptions::default()).into_resources(),
    );
    let secret = &set.secrets[0].spec;
    assert_eq!(
        secret.certificate(),
        Some((b"CHAIN".to_vec(), b"OTHER".to_vec()))
    );
    assert_eq!(secret.ca_certificates(), None);
}
