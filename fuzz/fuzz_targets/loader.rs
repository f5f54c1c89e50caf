//! Fuzzes the configuration loader end to end: any bytes must come back as documents and
//! located problems, never a panic, a hang or unbounded memory. Accepted documents are also
//! run through the mesh model and the analyzers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use strait_config::load::{LoadOptions, load_bytes};

fuzz_target!(|data: &[u8]| {
    let report = load_bytes(data, "fuzz.yaml", &LoadOptions::default());
    for d in report.diagnostics() {
        let _ = d.to_string();
    }
    let clusters = [strait_analyze::ClusterConfig { name: strait_model::ClusterId::new("c"), report }];
    let analysis = strait_analyze::analyze(&clusters);
    let _ = strait_analyze::render(&analysis, strait_analyze::Format::Json, "fuzz");
});
