//! The loader, model and analyzers never panic, whatever the bytes: hostile inputs made by hand
//! (bombs, deep nesting, huge scalars, invalid UTF-8) and a bounded, deterministic mutation loop
//! over real configuration. The coverage-guided fuzzer (`fuzz/`, `cargo fuzz run loader`)
//! explores further; its findings become regression inputs here.

#![allow(clippy::unwrap_used)] // test helpers

use std::path::{Path, PathBuf};

use strait_analyze::{ClusterConfig, Format, analyze, render};
use strait_config::load::{LoadOptions, load_bytes};
use strait_model::ClusterId;

fn run_pipeline(bytes: &[u8]) -> usize {
    let report = load_bytes(bytes, "input.yaml", &LoadOptions::default());
    let rendered: usize = report.diagnostics().map(|d| d.to_string().len()).sum();
    let analysis = analyze(&[ClusterConfig {
        name: ClusterId::new("c"),
        report,
        links: Vec::new(),
    }]);
    rendered + render(&analysis, Format::Json, "input").len()
}

fn hostile_inputs() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        b"\xef\xbb\xbfapiVersion: v1\nkind: Service\nmetadata: {name: bom}\n".to_vec(),
        b"---\n---\n---\n".to_vec(),
        b"apiVersion: v1\nkind: List\nitems: [1, [2], {kind: Service}]\n".to_vec(),
        b"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: 7\n".to_vec(),
        b"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {http: [{route: [{destination: {host: 5}}]}]}\n".to_vec(),
        b"apiVersion: [a]\nkind: {b: c}\n".to_vec(),
        b"- just\n- a\n- list\n".to_vec(),
        b"a: !!binary aGVsbG8=\nb: !custom tag\n".to_vec(),
        b"key: \"unterminated\n".to_vec(),
        b"\t\tbad: tabs\n".to_vec(),
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: n}\nstatus: {podIP: 999.1.1.1}\n".to_vec(),
        b"apiVersion: strait.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: m}\nspec: {meshNetworks: {n: {endpoints: [{fromCidr: 10.0.0.0/99}], gateways: [{port: 70000}]}}}\n".to_vec(),
    ];
    v.push(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes());
    v.push(format!("a: {}", "{b: ".repeat(5_000)).into_bytes());
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..20u8 {
        let (n, p) = (char::from(b'a' + i), char::from(b'a' + i - 1));
        bomb.push_str(&format!(
            "{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        ));
    }
    v.push(bomb.into_bytes());
    v.push(
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n",
            "x".repeat(5_000_000)
        )
        .into_bytes(),
    );
    v.push(
        "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n"
            .repeat(3_000)
            .into_bytes(),
    );
    v
}

/// Real configuration to mutate: Istio's corpus and samples when present, plus built-in text.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![
        b"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: p}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting: {distribute: [{from: a/*, to: {a/*: 80, b/*: 20}}]}\n    outlierDetection: {consecutive5xxErrors: 5}\n  subsets: [{name: v1, labels: {version: v1}}]\n".to_vec(),
        b"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: p}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{headers: {x: {exact: y}}, uri: {prefix: /a}}]\n    route: [{destination: {host: reviews, subset: v1}, weight: 80}, {destination: {host: reviews, subset: v2}, weight: 20}]\n    retries: {attempts: 3, perTryTimeout: 1s, retryOn: 5xx}\n".to_vec(),
    ];
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    for dir in ["conformance/istio-validation", "reference/istio-samples"] {
        let d: PathBuf = shared.join(dir);
        if let Ok(entries) = std::fs::read_dir(&d) {
            let mut files: Vec<PathBuf> =
                entries.filter_map(Result::ok).map(|e| e.path()).collect();
            files.sort();
            out.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
        }
    }
    out
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b": ", b"- ", b"\n", b"{", b"}", b"[", b"]", b"&a ", b"*a", b"---\n", b"\"", b"'", b"~",
        b"-1", b"99999", b"*", b"/", b"\t", b"\xff", b"null", b"!!str ",
    ];
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 => out.insert(at.min(out.len()), (rng.next() & 0xff) as u8),
            1 if !out.is_empty() => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                out.splice(at.min(out.len())..at.min(out.len()), t.iter().copied());
            }
            _ if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = out[rng.below(out.len())];
            }
            _ => {}
        }
    }
    out
}

#[test]
fn hostile_inputs_are_reported_not_fatal() {
    for input in hostile_inputs() {
        run_pipeline(&input);
    }
    let alias_bomb = hostile_inputs()
        .into_iter()
        .find(|i| i.starts_with(b"a: &a"))
        .unwrap();
    let report = load_bytes(&alias_bomb, "bomb.yaml", &LoadOptions::default());
    assert!(
        report
            .diagnostics()
            .any(|d| d.to_string().contains("safety limit")),
        "a YAML bomb is named as such"
    );
}

#[test]
fn mutated_configuration_never_panics() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let rounds = 3_000;
    for _ in 0..rounds {
        let seed = &seeds[rng.below(seeds.len())];
        run_pipeline(&mutate(seed, &mut rng));
    }
    println!(
        "{rounds} mutated inputs from {} seeds went through load, model and analysis",
        seeds.len()
    );
}
