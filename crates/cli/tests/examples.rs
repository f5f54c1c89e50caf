//! Every bundled example analyzes clean as a topology (`strait analyze examples/<name>`): each
//! cluster with the links its topology declares.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

#[test]
fn every_example_analyzes_clean() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for dir in std::fs::read_dir(&examples).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.join("topology.yaml").is_file() {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_strait"))
            .arg("analyze")
            .arg(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("No validation issues found"),
            "{}: {text}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        seen += 1;
    }
    assert!(
        seen >= 6,
        "only {seen} examples found in {}",
        examples.display()
    );
}
