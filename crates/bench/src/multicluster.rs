//! Multi-cluster rows (root only): what the east-west gateway hop adds to a call, and how fast
//! traffic leaves a failed region — its pods stopped, with and without retries, or its gateway
//! blackholed — on `examples/locality-failover` run by `strait up`'s library (two clusters on
//! two networks, 80/20 `distribute`, outlier detection, the seed's retries).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use strait_local::plan::App;
use strait_local::up::{Mesh, Options};
use strait_local::{apps, netns};

#[derive(Debug, Clone)]
pub struct Params {
    /// The example directory (`examples/locality-failover`).
    pub example: PathBuf,
    /// Calls measured for the gateway hop.
    pub hop_calls: usize,
    /// How long each failure scenario is watched (the failure comes 1 s in).
    pub window: Duration,
    /// How long each path is loaded for its throughput.
    pub load: Duration,
}

/// One call from cluster1's client.
#[derive(Debug, Clone)]
struct Call {
    /// When it started, from the start of the run.
    at: Duration,
    took: Duration,
    answer: Answer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// helloworld v1, in cluster1 (the caller's network).
    Local,
    /// helloworld v2, in cluster2, through network2's east-west gateway.
    Far,
    Failed,
}

/// How one failure played out for the calls made after it.
#[derive(Debug, Clone)]
pub struct Failover {
    pub calls_after: usize,
    pub failed_after: usize,
    /// From the failure to the start of the last call it still affected (a failed call, an
    /// answer from the failed side, or a call stalled ≥ 500 ms); after it, every call went to
    /// the healthy side at full speed.
    pub moved_after: Duration,
}

#[derive(Debug, Clone)]
pub struct Results {
    /// Latency of calls answered in the caller's network.
    pub local: Vec<Duration>,
    /// Latency of calls answered across networks, through the far gateway.
    pub far: Vec<Duration>,
    /// Wall time of the hop run (sequential calls; calls/s = count / wall).
    pub hop_wall: Duration,
    pub stop_with_retries: Failover,
    pub stop_without_retries: Failover,
    pub blackhole: Failover,
    /// Saturation throughput (req/s, answers not 2xx) of each path, from cluster1's client pod.
    pub local_throughput: (f64, u64),
    pub far_throughput: (f64, u64),
}

/// A stall this long means the call waited on the failed side (the example's per-try and
/// connect timeouts are 1 s; a healthy call takes milliseconds).
const STALLED: Duration = Duration::from_millis(500);

/// Runs the three meshes in turn (each started and removed here).
pub fn run(strait: &Path, params: &Params, logs: &Path, say: fn(&str)) -> anyhow::Result<Results> {
    anyhow::ensure!(
        netns::can_create_namespaces(),
        "needs root (pods are network namespaces)"
    );
    say("  mesh 1: gateway hop, then cluster1's helloworld stopped (retries on)");
    let (hop, stop_with_retries) = with_mesh(strait, &params.example, logs, "mc1", |m| {
        let (calls, wall) = calls_from_cluster1(m, Drive::Count(params.hop_calls), None)?;
        let stop = failure(m, params.window, Failure::StopLocalPods)?;
        Ok(((calls, wall), stop))
    })?;
    let no_retries = copy_without_retries(&params.example, &logs.join("mc-no-retries"))?;
    say("  mesh 2: cluster1's helloworld stopped (retries off)");
    let stop_without_retries = with_mesh(strait, &no_retries, logs, "mc2", |m| {
        failure(m, params.window, Failure::StopLocalPods)
    })?;
    say("  mesh 3: network2's gateway blackholed (retries on)");
    let blackhole = with_mesh(strait, &params.example, logs, "mc3", |m| {
        failure(m, params.window, Failure::BlackholeFarNetwork)
    })?;
    say("  mesh 4: throughput of each path (h2load, 8 connections)");
    let paths = copy_with_paths(&params.example, &logs.join("mc-paths"))?;
    let (local_throughput, far_throughput) = with_mesh(strait, &paths, logs, "mc4", |m| {
        Ok((load(m, params.load, "local")?, load(m, params.load, "far")?))
    })?;
    let (calls, hop_wall) = hop;
    let pick = |a: Answer| -> Vec<Duration> {
        calls
            .iter()
            .filter(|c| c.answer == a)
            .map(|c| c.took)
            .collect()
    };
    Ok(Results {
        local: pick(Answer::Local),
        far: pick(Answer::Far),
        hop_wall,
        stop_with_retries,
        stop_without_retries,
        blackhole,
        local_throughput,
        far_throughput,
    })
}

/// Saturation throughput from cluster1's client pod to helloworld along `path` (`local`:
/// cluster1's v1; `far`: cluster2's v2 through network2's gateway), chosen by a header the
/// bench's copy of the example routes on.
fn load(mesh: &Mesh, duration: Duration, path: &str) -> anyhow::Result<(f64, u64)> {
    let (client, url) = client_and_url(mesh)?;
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", &client, "h2load", "--h1", "-c", "8", "-t", "1", "-D",
        ])
        .arg(duration.as_secs().max(1).to_string())
        .args(["-H", &format!("{PATH_HEADER}: {path}")])
        .arg(&url)
        .output()
        .context("running h2load in the client pod (install nghttp2-client; scripts/bench does)")?;
    anyhow::ensure!(
        out.status.success(),
        "h2load in the client pod failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::data_plane::throughput(&String::from_utf8_lossy(&out.stdout))
}

/// cluster1's client pod's namespace, and helloworld's URL by its cluster IP (the pod's
/// hosts file is not this process's).
fn client_and_url(mesh: &Mesh) -> anyhow::Result<(String, String)> {
    let client = mesh
        .plan
        .pods
        .iter()
        .find(|p| p.cluster == "cluster1" && p.name == "sleep")
        .context("the example has no pod cluster1/sleep")?;
    let vip = mesh
        .plan
        .vips
        .get("cluster1")
        .and_then(|v| v.get("sample/helloworld"))
        .context("the example has no Service sample/helloworld in cluster1")?;
    Ok((client.netns.clone(), format!("http://{vip}:5000/hello")))
}

/// The header the bench's copy of the example routes on (`local` or `far`).
const PATH_HEADER: &str = "x-strait-bench-path";

/// A copy of the example whose helloworld routes by [`PATH_HEADER`]: `far` to v2 (cluster2,
/// through the gateway), anything else to v1 (cluster1).
fn copy_with_paths(example: &Path, to: &Path) -> anyhow::Result<PathBuf> {
    copy_changing(example, to, |text| {
        let host = "  host: helloworld.sample.svc.cluster.local\n";
        anyhow::ensure!(
            text.contains(host),
            "the example's DestinationRule changed shape"
        );
        let mut changed = text.replacen(
            host,
            &format!("{host}  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n"),
            1,
        );
        let vs = changed
            .find("\n---\n")
            .context("the example's VirtualService is missing")?;
        changed.truncate(vs);
        changed.push_str(&format!(
            "\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: helloworld, namespace: sample}}\nspec:\n  hosts: [helloworld.sample.svc.cluster.local]\n  http:\n  - match: [{{headers: {{{PATH_HEADER}: {{exact: far}}}}}}]\n    route: [{{destination: {{host: helloworld.sample.svc.cluster.local, subset: v2}}}}]\n  - route: [{{destination: {{host: helloworld.sample.svc.cluster.local, subset: v1}}}}]\n"
        ));
        Ok(changed)
    })
}

/// A copy of the example with each cluster's `locality.yaml` passed through `change`.
fn copy_changing(
    example: &Path,
    to: &Path,
    change: impl Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<PathBuf> {
    let _ = std::fs::remove_dir_all(to);
    copy_dir(example, to)?;
    for cluster in ["cluster1", "cluster2"] {
        let path = to.join(cluster).join("locality.yaml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        std::fs::write(&path, change(&text)?)?;
    }
    Ok(to.to_path_buf())
}

/// Starts the mesh of `example`, runs `f`, and removes the mesh whatever `f` returned.
fn with_mesh<T>(
    strait: &Path,
    example: &Path,
    logs: &Path,
    name: &str,
    f: impl FnOnce(&Mesh) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let options = Options {
        dir: example.to_path_buf(),
        name: format!("sb{name}"),
        state_dir: logs.join(format!("strait-up-{name}")),
        exe: strait.to_path_buf(),
        log_level: "warn".into(),
        // Namespaces: the gateway hop and failover are measured across real segments.
        runtime: strait_local::plan::Runtime::Namespaces,
    };
    let mut progress = Vec::new();
    let mesh = Mesh::start(options, &mut progress)?;
    let out = f(&mesh);
    mesh.stop();
    out
}

enum Drive {
    Count(usize),
    For(Duration),
}

#[derive(Clone, Copy)]
enum Failure {
    /// Every process of cluster1's helloworld pod ends (SIGKILL).
    StopLocalPods,
    /// network2 (its router and gateway) drops every packet to or from the WAN.
    BlackholeFarNetwork,
}

/// Calls helloworld from cluster1's client pod one after another (a new connection each, as
/// `curl` makes); `event` runs on another thread at its time (from the start) and its own
/// start is returned with the calls.
fn calls_from_cluster1(
    mesh: &Mesh,
    drive: Drive,
    event: Option<(Duration, Box<dyn FnOnce() + Send>)>,
) -> anyhow::Result<(Vec<Call>, Duration)> {
    let (client, url) = client_and_url(mesh)?;
    let (started_tx, started_rx) = mpsc::channel();
    let event_thread = event.map(|(at, f)| {
        let started: mpsc::Receiver<Instant> = started_rx;
        std::thread::spawn(move || {
            let Ok(start) = started.recv() else { return };
            std::thread::sleep(at.saturating_sub(start.elapsed()));
            f();
        })
    });
    let calls_and_wall = netns::within(&client, move || {
        let start = Instant::now();
        let _ = started_tx.send(start);
        let mut calls = Vec::new();
        loop {
            match drive {
                Drive::Count(n) if calls.len() >= n => break,
                Drive::For(d) if start.elapsed() >= d => break,
                _ => {}
            }
            let at = start.elapsed();
            let outcome = apps::get(&url, None, Duration::from_secs(10));
            let answer = match &outcome {
                Ok((200, body)) if body.contains("v1") => Answer::Local,
                Ok((200, body)) if body.contains("v2") => Answer::Far,
                _ => Answer::Failed,
            };
            calls.push(Call {
                at,
                took: start.elapsed() - at,
                answer,
            });
        }
        (calls, start.elapsed())
    })?;
    if let Some(t) = event_thread {
        let _ = t.join();
    }
    Ok(calls_and_wall)
}

/// Calls for `window`; 1 s in, `failure` happens.
fn failure(mesh: &Mesh, window: Duration, failure: Failure) -> anyhow::Result<Failover> {
    let at = Duration::from_secs(1);
    let find = |cluster: &str, pred: &dyn Fn(&App, &str) -> bool| {
        mesh.plan
            .pods
            .iter()
            .find(|p| p.cluster == cluster && pred(&p.app, &p.name))
            .map(|p| p.netns.clone())
    };
    let event: Box<dyn FnOnce() + Send> = match failure {
        Failure::StopLocalPods => {
            let ns = find("cluster1", &|app, _| matches!(app, App::HelloWorld { .. }))
                .context("no helloworld pod in cluster1")?;
            Box::new(move || {
                netns::kill_all(&ns);
            })
        }
        Failure::BlackholeFarNetwork => {
            let gateway = find("cluster2", &|app, _| *app == App::Gateway)
                .context("no gateway in cluster2")?;
            let router = mesh
                .plan
                .network("network2")
                .context("no network2")?
                .netns
                .clone();
            Box::new(move || {
                let _ = netns::cut_off(&router, &[&gateway], true);
            })
        }
    };
    let (calls, _) = calls_from_cluster1(mesh, Drive::For(window), Some((at, event)))?;
    Ok(summarize(&calls, at, failure))
}

fn summarize(calls: &[Call], failed_at: Duration, failure: Failure) -> Failover {
    let after: Vec<&Call> = calls.iter().filter(|c| c.at + c.took > failed_at).collect();
    let affected = |c: &&&Call| match failure {
        Failure::StopLocalPods => c.answer != Answer::Far,
        Failure::BlackholeFarNetwork => c.answer != Answer::Local || c.took >= STALLED,
    };
    let last = after.iter().filter(affected).map(|c| c.at).max();
    Failover {
        calls_after: after.len(),
        failed_after: after.iter().filter(|c| c.answer == Answer::Failed).count(),
        moved_after: last.map_or(Duration::ZERO, |l| l.saturating_sub(failed_at)),
    }
}

/// A copy of the example whose helloworld VirtualService makes no retries.
fn copy_without_retries(example: &Path, to: &Path) -> anyhow::Result<PathBuf> {
    copy_changing(example, to, |text| {
        let retries = text
            .find("    retries:\n")
            .context("the example's VirtualService has no retries to turn off")?;
        Ok(format!(
            "{}    retries:\n      attempts: 0\n",
            &text[..retries]
        ))
    })
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(at_ms: u64, took_ms: u64, answer: Answer) -> Call {
        Call {
            at: Duration::from_millis(at_ms),
            took: Duration::from_millis(took_ms),
            answer,
        }
    }

    #[test]
    fn failover_is_measured_to_the_last_affected_call() {
        let calls = [
            call(900, 5, Answer::Local),
            call(990, 20, Answer::Failed),
            call(1100, 5, Answer::Local),
            call(1400, 5, Answer::Failed),
            call(1500, 5, Answer::Far),
        ];
        let f = summarize(&calls, Duration::from_secs(1), Failure::StopLocalPods);
        assert_eq!((f.calls_after, f.failed_after), (4, 2));
        assert_eq!(f.moved_after, Duration::from_millis(400));

        let stalled = [
            call(1200, 1000, Answer::Local),
            call(2300, 4, Answer::Local),
        ];
        let f = summarize(
            &stalled,
            Duration::from_secs(1),
            Failure::BlackholeFarNetwork,
        );
        assert_eq!(f.moved_after, Duration::from_millis(200));
        let f = summarize(
            &stalled[1..],
            Duration::from_secs(1),
            Failure::BlackholeFarNetwork,
        );
        assert_eq!(f.moved_after, Duration::ZERO);
    }
}
