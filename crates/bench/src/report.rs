//! `docs/benchmarks.md`: the machine, the command, and each scenario's tables with its targets
//! marked met or not met.

use std::fmt::Write as _;
use std::time::Duration;

use crate::ads::Type;
use crate::control_plane::{Changes, Doubling, Params, PhaseResult};
use crate::data_plane;
use crate::identity;
use crate::machine::Machine;
use crate::multicluster;
use crate::profile::Profile;
use crate::stats::{bytes, kib, ms, opt_ms, percentile};

pub struct Report<'a> {
    pub machine: &'a Machine,
    pub command: String,
    pub quick: bool,
    pub control_plane: Option<(&'a Params, &'a [PhaseResult])>,
    /// The delta scenario again with one dimension doubled, each with its parameters.
    pub growth: &'a [(Doubling, Params, PhaseResult)],
    pub data_plane: Option<(&'a data_plane::Params, &'a data_plane::Results)>,
    pub identity: Option<&'a identity::Results>,
    /// The multi-cluster scenario, or why it could not run.
    pub multicluster: Option<(
        &'a multicluster::Params,
        Result<&'a multicluster::Results, &'a String>,
    )>,
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

/// Mean bytes per change per proxy, by type.
fn per_change_per_proxy(c: &Changes, proxies: usize) -> [f64; 4] {
    let n = (c.bytes.len() * proxies.max(1)) as f64;
    std::array::from_fn(|i| {
        if n == 0.0 {
            0.0
        } else {
            c.bytes.iter().map(|b| b[i] as f64).sum::<f64>() / n
        }
    })
}

fn by_type(b: [f64; 4]) -> String {
    let total: f64 = b.iter().sum();
    let parts: Vec<String> = Type::ALL
        .iter()
        .filter(|t| b[**t as usize] > 0.0)
        .map(|t| format!("{} {}", t.short(), bytes(b[*t as usize])))
        .collect();
    if parts.is_empty() {
        "0 B".into()
    } else {
        format!("{} ({})", bytes(total), parts.join(", "))
    }
}

fn p(values: &[Duration], q: f64) -> String {
    opt_ms(percentile(values, q))
}

impl Report<'_> {
    pub fn render(&self) -> String {
        let m = self.machine;
        let mut s = String::new();
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Written by the benchmark runner; do not edit by hand. Every number below was measured in the run described here.{}\n",
            if self.quick {
                " **This is a `--quick` run (smaller scale, few repetitions): a smoke test, not a measurement to quote.**"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "- Reproduce: `{}`", self.command);
        let _ = writeln!(s, "- Date: {}", m.date);
        let _ = writeln!(
            s,
            "- Machine: {} × {} ({} cores visible), {:.1} GiB RAM, Linux {}",
            m.cores, m.cpu, m.cores, m.memory_gib, m.kernel
        );
        let _ = writeln!(
            s,
            "- Build: release profile, {}, commit {}",
            m.rustc, m.commit
        );
        let _ = writeln!(
            s,
            "- Everything runs on loopback on this one machine: the measured process shares its cores with the load generators.\n"
        );
        if let Some((params, phases)) = self.control_plane {
            control_plane(&mut s, params, phases);
            if let Some(base) = phases
                .iter()
                .find(|r| r.variant == crate::ads::Variant::Delta)
            {
                growth_section(&mut s, params, base, self.growth);
            }
        }
        match self.data_plane {
            Some((params, results)) => data_plane_section(&mut s, params, results),
            None => {
                let _ = writeln!(s, "## Data plane\n\nNot run (`--only`).\n");
            }
        }
        match self.identity {
            Some(r) => identity_section(&mut s, r),
            None => {
                let _ = writeln!(s, "## Identity\n\nNot run (`--only`).\n");
            }
        }
        match self.multicluster {
            Some((params, Ok(r))) => multicluster_section(&mut s, params, r),
            Some((_, Err(e))) => {
                let _ = writeln!(
                    s,
                    "## Multi-cluster: gateway hop and failover\n\n**NOT MEASURED in this run: {e}.** Run the runner as root to measure it.\n"
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "## Multi-cluster: gateway hop and failover\n\nNot run (`--only`).\n"
                );
            }
        }
        s
    }
}

fn control_plane(s: &mut String, params: &Params, phases: &[PhaseResult]) {
    let sh = params.shape;
    let _ = writeln!(s, "## Control plane\n");
    let _ = writeln!(
        s,
        "The real `strait control-plane` process, watching manifests of a synthetic mesh: {} services, each in all {} clusters with {} endpoints in each ({} endpoints; one file per service and cluster, {} manifest files), plus 3 Nodes per cluster for zones. {} simulated sidecars in cluster1 (pods of {} workloads in {} namespaces, spread over 3 zones) connect over ADS as Envoy does — clusters and listeners by wildcard, then the endpoints of every cluster and the routes every listener names — and ACK every response. Each service exposes HTTP on 80, every fifth also gRPC on 9090, so every sidecar holds every cluster and endpoint set (no `Sidecar` scoping). Debounce {} ms.\n",
        sh.services,
        sh.clusters,
        sh.endpoints,
        sh.services * sh.clusters * sh.endpoints,
        phases.first().map_or(0, |p| p.manifests),
        params.proxies,
        params.workloads,
        crate::synth::NAMESPACES,
        params.debounce_ms,
    );
    let _ = writeln!(
        s,
        "An *endpoint change* rewrites one service's file in one cluster with one endpoint address changed; it is timed from the file write (so the watcher, the debounce, the reload, the model rebuild and the push are all included) to the moment every proxy ACKed the response carrying that service's load assignment. A *service addition* writes a new service's file; it needs a full push (new cluster, new route entry) and is timed to every proxy's ACK of the new cluster's endpoints. Bytes are protobuf-encoded response messages as the clients decode them (HTTP/2 and gRPC framing not counted), averaged per change and proxy.\n"
    );
    let _ = writeln!(s, "### Targets\n");
    let _ = writeln!(s, "| Target | Measured | |");
    let _ = writeln!(s, "|---|---|---|");
    for r in phases {
        let v = r.variant.label();
        let p99 = percentile(&r.endpoint_changes.all_acked, 99.0);
        let ok = r.endpoint_changes.timed_out == 0
            && p99.is_some_and(|d| d <= Duration::from_millis(500));
        let _ = writeln!(
            s,
            "| Endpoint change ACKed by all proxies, p99 ≤ 500 ms ({v}) | {} over {} changes{} | {} |",
            opt_ms(p99),
            r.endpoint_changes.all_acked.len(),
            timed_out_note(&r.endpoint_changes),
            met(ok)
        );
    }
    for r in phases {
        let _ = writeln!(
            s,
            "| Cold sync of all proxies ≤ 1 s ({}) | {} | {} |",
            r.variant.label(),
            ms(r.cold_sync_all),
            met(r.cold_sync_all <= Duration::from_secs(1))
        );
    }
    for r in phases {
        let _ = writeln!(
            s,
            "| ≤ 200 KB of control-plane memory per connected proxy ({}) | {} per additional proxy ({} per proxy of the first {}, caches included) | {} |",
            r.variant.label(),
            marginal(r, params.proxies),
            kib(r.kib_per_proxy(params.proxies)),
            params.proxies,
            if r.marginal_kib < 0.0 {
                "not measurable in this run"
            } else {
                met(r.marginal_kib * 1024.0 <= 200_000.0)
            }
        );
    }
    let sotw = phases
        .iter()
        .find(|r| r.variant == crate::ads::Variant::StateOfTheWorld);
    let delta = phases
        .iter()
        .find(|r| r.variant == crate::ads::Variant::Delta);
    if let (Some(sotw), Some(delta)) = (sotw, delta) {
        let cluster_size = sotw.cold_bytes[Type::Cluster as usize] as f64
            / params.proxies.max(1) as f64
            / sh.service_ports() as f64;
        let d =
            per_change_per_proxy(&delta.service_additions, params.proxies)[Type::Cluster as usize];
        let so =
            per_change_per_proxy(&sotw.service_additions, params.proxies)[Type::Cluster as usize];
        let _ = writeln!(
            s,
            "| Delta sends O(change) bytes | one added service: delta sends {} of clusters per proxy (one cluster ≈ {}), SotW {} | {} |",
            bytes(d),
            bytes(cluster_size),
            bytes(so),
            met(d > 0.0 && d <= 3.0 * cluster_size)
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "### Results\n");
    let _ = write!(s, "| |");
    for r in phases {
        let _ = write!(s, " {} |", r.variant.label());
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---|");
    for _ in phases {
        let _ = write!(s, "---|");
    }
    let _ = writeln!(s);
    let row = |s: &mut String, name: &str, f: &dyn Fn(&PhaseResult) -> String| {
        let _ = write!(s, "| {name} |");
        for r in phases {
            let _ = write!(s, " {} |", f(r));
        }
        let _ = writeln!(s);
    };
    let n = params.proxies;
    row(s, "Start to ready (first load of all manifests)", &|r| {
        ms(r.load_to_ready)
    });
    row(s, "Control-plane RSS, ready, no proxies", &|r| {
        kib(r.idle.rss_kib as f64)
    });
    row(s, &format!("Cold sync, all {n} proxies"), &|r| {
        ms(r.cold_sync_all)
    });
    row(s, "Cold sync, each proxy p50 / p99", &|r| {
        format!(
            "{} / {}",
            p(&r.cold_sync_each, 50.0),
            p(&r.cold_sync_each, 99.0)
        )
    });
    row(s, "Control-plane CPU during cold sync", &|r| {
        format!("{:.2} s", r.cold_sync_cpu)
    });
    row(s, "Simulated proxies' CPU meanwhile (same cores)", &|r| {
        format!("{:.2} s", r.load_generator_cpu)
    });
    row(s, "Bytes per proxy, cold sync", &|r| {
        by_type(std::array::from_fn(|i| {
            r.cold_bytes[i] as f64 / n.max(1) as f64
        }))
    });
    row(
        s,
        &format!("Control-plane RSS with {n} proxies synced"),
        &|r| kib(r.synced.rss_kib as f64),
    );
    row(
        s,
        "RSS growth per proxy, first batch (caches included)",
        &|r| kib(r.kib_per_proxy(n)),
    );
    row(
        s,
        &format!("RSS growth per proxy, a second batch of {n}"),
        &|r| marginal(r, n),
    );
    row(s, "Of which shared encoded configuration", &|r| {
        r.cache_bytes
            .map(|b| bytes(b as f64))
            .unwrap_or_else(|| "not reported".into())
    });
    row(s, "Endpoint change → all ACKed, p50 / p99 / max", &|r| {
        let c = &r.endpoint_changes;
        format!(
            "{} / {} / {} ({} changes{})",
            p(&c.all_acked, 50.0),
            p(&c.all_acked, 99.0),
            p(&c.all_acked, 100.0),
            c.all_acked.len(),
            timed_out_note(c)
        )
    });
    row(s, "Endpoint change → each proxy's ACK, p50 / p99", &|r| {
        let c = &r.endpoint_changes;
        format!("{} / {}", p(&c.each_acked, 50.0), p(&c.each_acked, 99.0))
    });
    row(s, "Bytes per endpoint change per proxy", &|r| {
        by_type(per_change_per_proxy(&r.endpoint_changes, n))
    });
    row(s, "Service addition → all ACKed, p50 / max", &|r| {
        let c = &r.service_additions;
        format!(
            "{} / {} ({} additions{})",
            p(&c.all_acked, 50.0),
            p(&c.all_acked, 100.0),
            c.all_acked.len(),
            timed_out_note(c)
        )
    });
    row(s, "Bytes per service addition per proxy", &|r| {
        by_type(per_change_per_proxy(&r.service_additions, n))
    });
    row(s, "Control-plane peak RSS", &|r| kib(r.end.peak_kib as f64));
    let _ = writeln!(s);
    reading(s, params, phases);
    control_plane_profiles(s, params, phases);
}

/// A growth table's cell for one run: the value shown and the number its ratio to the base is
/// taken of.
type GrowthCell = dyn Fn(&Params, &PhaseResult) -> Option<(String, f64)>;

/// How the delta scenario's costs grow when one dimension of the mesh doubles.
fn growth_section(
    s: &mut String,
    params: &Params,
    base: &PhaseResult,
    growth: &[(Doubling, Params, PhaseResult)],
) {
    if growth.is_empty() {
        return;
    }
    let _ = writeln!(s, "### Growth when the mesh doubles\n");
    let _ = writeln!(
        s,
        "The delta scenario again, on a fresh control plane each time, with one dimension doubled and the rest as above (the same changes and additions). In brackets each value's ratio to the base column: ×2.0 is linear growth in that dimension, ×1.0 none.\n"
    );
    let _ = write!(s, "| | base |");
    for (d, p, _) in growth {
        let _ = write!(s, " {} ({}) |", d.label(), d.size(p));
    }
    let _ = writeln!(s);
    let _ = write!(s, "|---|---|");
    for _ in growth {
        let _ = write!(s, "---|");
    }
    let _ = writeln!(s);
    let columns: Vec<(&Params, &PhaseResult)> = std::iter::once((params, base))
        .chain(growth.iter().map(|(_, p, r)| (p, r)))
        .collect();
    let row = |s: &mut String, name: &str, f: &GrowthCell| {
        let _ = write!(s, "| {name} |");
        let base_value = f(params, base).map(|(_, v)| v);
        for (i, (p, r)) in columns.iter().enumerate() {
            match (f(p, r), base_value) {
                (Some((shown, v)), Some(b)) if i > 0 && b > 0.0 && v > 0.0 => {
                    let _ = write!(s, " {shown} (×{:.1}) |", v / b);
                }
                (Some((shown, _)), _) => {
                    let _ = write!(s, " {shown} |");
                }
                (None, _) => {
                    let _ = write!(s, " — |");
                }
            }
        }
        let _ = writeln!(s);
    };
    fn millis(d: Duration) -> Option<(String, f64)> {
        Some((ms(d), d.as_secs_f64()))
    }
    row(s, "Start to ready", &|_, r| millis(r.load_to_ready));
    row(s, "Control-plane RSS, ready, no proxies", &|_, r| {
        let k = r.idle.rss_kib as f64;
        Some((kib(k), k))
    });
    row(s, "Cold sync, all proxies", &|_, r| millis(r.cold_sync_all));
    row(s, "Control-plane CPU during cold sync", &|_, r| {
        Some((format!("{:.2} s", r.cold_sync_cpu), r.cold_sync_cpu))
    });
    row(s, "Bytes sent in the cold sync, all proxies", &|_, r| {
        let b = r.cold_bytes.iter().sum::<u64>() as f64;
        Some((bytes(b), b))
    });
    row(s, "Control-plane RSS, all proxies synced", &|_, r| {
        let k = r.synced.rss_kib as f64;
        Some((kib(k), k))
    });
    row(s, "RSS growth per additional proxy", &|p, r| {
        Some((marginal(r, p.proxies), r.marginal_kib))
    });
    row(s, "Endpoint change → all ACKed, p50", &|_, r| {
        percentile(&r.endpoint_changes.all_acked, 50.0).and_then(millis)
    });
    row(s, "Endpoint change → all ACKed, p99", &|_, r| {
        percentile(&r.endpoint_changes.all_acked, 99.0).and_then(millis)
    });
    row(s, "Bytes per endpoint change, all proxies", &|p, r| {
        let b = per_change_per_proxy(&r.endpoint_changes, p.proxies)
            .iter()
            .sum::<f64>()
            * p.proxies as f64;
        Some((bytes(b), b))
    });
    row(s, "Service addition → all ACKed, p50", &|_, r| {
        percentile(&r.service_additions.all_acked, 50.0).and_then(millis)
    });
    let _ = writeln!(s);
    let timed_out: Vec<String> = growth
        .iter()
        .filter(|(_, _, r)| r.endpoint_changes.timed_out + r.service_additions.timed_out > 0)
        .map(|(d, _, r)| {
            format!(
                "{}: {} changes not ACKed by every proxy within 10 s",
                d.label(),
                r.endpoint_changes.timed_out + r.service_additions.timed_out
            )
        })
        .collect();
    if !timed_out.is_empty() {
        let _ = writeln!(s, "**{}.**\n", timed_out.join("; "));
    }
}

/// What the numbers mean, with the run's own values.
fn reading(s: &mut String, params: &Params, phases: &[PhaseResult]) {
    let n = params.proxies;
    let _ = writeln!(
        s,
        "### Reading these numbers
"
    );
    for r in phases {
        let _ = writeln!(
            s,
            "- **{}, cold sync:** the control plane spent {:.2} CPU-seconds ({:.1} ms per proxy, {:.0} MiB sent in all) while the {} simulated proxies, on the same {} cores, spent {:.2} CPU-seconds receiving and decoding it. The wall time is bounded by both together; the control plane's own share is what a deployment with proxies elsewhere would see.",
            r.variant.label(),
            r.cold_sync_cpu,
            r.cold_sync_cpu * 1000.0 / n.max(1) as f64,
            r.cold_bytes.iter().sum::<u64>() as f64 / 1024.0 / 1024.0,
            n,
            std::thread::available_parallelism().map_or(1, |c| c.get()),
            r.load_generator_cpu,
        );
    }
    let _ = writeln!(
        s,
        "- **Memory:** the first {n} proxies bring the one-time generation caches (the configuration encoded once per kind of proxy, shown as *shared encoded configuration*, and the indexes behind it) and the allocator's high-water mark of the cold-sync burst; the second batch of {n} shows what each further proxy costs, which is what the per-proxy target is about. Both are resident-set growth of the real process (`/proc/PID/status`), not estimates."
    );
    let _ = writeln!(
        s,
        "- **Bytes:** an endpoint change sends one load assignment to each proxy in both variants (the protocol lets state-of-the-world send only changed endpoint sets); a new service is where they differ: state-of-the-world resends every cluster, delta only the new ones. Both resend the port's whole route table, as Istio does, since a route configuration is one resource.\n"
    );
}

/// What each proxy of the second batch added; when the resident set shrank meanwhile (the
/// allocator returned more of the first burst's memory than the batch took), that, not a
/// negative cost.
fn marginal(r: &PhaseResult, proxies: usize) -> String {
    if r.marginal_kib < 0.0 {
        format!(
            "none measurable (the resident set fell {} while they connected)",
            kib(-r.marginal_kib * proxies as f64)
        )
    } else {
        kib(r.marginal_kib)
    }
}

fn timed_out_note(c: &Changes) -> String {
    if c.timed_out > 0 {
        format!(", **{} not ACKed by every proxy within 10 s**", c.timed_out)
    } else {
        String::new()
    }
}

fn data_plane_section(s: &mut String, params: &data_plane::Params, r: &data_plane::Results) {
    use data_plane::Via;
    let _ = writeln!(s, "## Data plane\n");
    let _ = writeln!(
        s,
        "nginx (one process) answers every request with 1 KiB. {} drives it directly, through the client's Strait sidecar (an explicit `bind` egress listener, as `Sidecar` with `captureMode: NONE` gives), through both the client's and the server's sidecars (the server's `ingress` listener hands to nginx on loopback; each sidecar with its default two workers), and for reference through two HAProxy 2.6 hops (two threads each) and two nginx hops (two workers each, pooled upstream connections), over HTTP/1.1 keep-alive, HTTP/2 (h2c end to end; nginx cannot proxy HTTP/2 upstream), gRPC unary (h2load posting one framed 16-byte message to a tonic server in its own process that answers 1 KiB; nginx with `grpc_pass`; one real gRPC call through each chain first must return OK, since h2load does not read `grpc-status`) and opaque TCP (HTTP/1.1 bytes through a TCP proxy). Every two-hop chain runs twice: plaintext between the hops, and mutual TLS between the hops — for Strait mesh mTLS to a third sidecar whose identity (ECDSA P-256, SPIFFE) the control plane's CA issued, STRICT by PeerAuthentication, the client's sidecar verifying the server's SPIFFE identity; for HAProxy and nginx TLS 1.3 with an ECDSA P-256 certificate on each hop, the first presenting its own and verifying the second's, the second requiring and verifying the first's. The application, the load generator and the first hop always talk plaintext (as an app and its sidecar do). The mTLS chains of HTTP/1.1, HTTP/2 and gRPC run once more through a second pair of Strait sidecars started with `--worker-scheduling batch` (their worker threads under Linux's `SCHED_BATCH`: woken by a socket, a worker waits for the thread running on its CPU to block instead of preempting it); the targets are judged on the default configuration. *Saturation*: one h2load thread, 32 connections (HTTP/1.1, TCP) or 8 connections × 16 streams (HTTP/2, gRPC), for {} s per chain per round; {} rounds, each loading every chain in turn, so slow spells of the shared machine fall on all chains alike: the table shows the median round's throughput (in brackets the slowest and the fastest round's), and every ratio compares medians. *Fixed rate*: {} requests per second, {} rounds of {} s per chain, interleaved as the saturation rounds are. Every row uses strait-bench's open-model generator: request *i* is due at start + *i*/rate whatever the earlier ones did, and its latency counts from its due time — free of coordinated omission. HTTP/1.1 and TCP requests go out on an idle keep-alive connection (a new one is opened while all are busy); HTTP/2 and gRPC requests are streams spread round-robin over 10 HTTP/2 connections (hyper's client), and a gRPC call counts only when its trailers say `grpc-status: 0`. CPU is each proxy's user + system time per 1000 requests in the chain's median round (by all its proxies' CPU together; on the direct rows the server's own, answering: the floor under every chain); the latency percentiles are over every round's requests. Everything shares the machine's cores: load generator, nginx, control plane and proxies.\n",
        r.load_generator,
        params.saturation.as_secs(),
        params.rounds.max(1),
        params.fixed_rate,
        params.rounds.max(1),
        params.fixed_round_length().as_secs_f64()
    );
    let find = |via: Via, protocol: &str, tls: bool| {
        r.paths
            .iter()
            .find(|p| p.via == via && p.protocol == protocol && p.tls == tls)
    };
    let direct = |protocol: &str| find(Via::Direct, protocol, false).map(|p| p.saturation_rps);
    let p99 = |via: Via, protocol: &str, tls: bool| -> Option<Duration> {
        Some(find(via, protocol, tls)?.latency?[2])
    };
    let _ = writeln!(s, "### Targets\n");
    let _ = writeln!(s, "| Target | Measured | |");
    let _ = writeln!(s, "|---|---|---|");
    // The targets are the mTLS chain's; the plaintext chain's are shown after them.
    for (protocol, tls) in [
        ("HTTP/1.1", true),
        ("HTTP/2", true),
        ("gRPC", true),
        ("HTTP/1.1", false),
        ("HTTP/2", false),
        ("gRPC", false),
    ] {
        let chain = if tls { "mTLS" } else { "plaintext" };
        let two = find(Via::Strait(2), protocol, tls);
        if let (Some(d), Some(two)) = (direct(protocol), two) {
            let ratio = two.saturation_rps / d.max(1.0);
            let _ = writeln!(
                s,
                "| 2 Strait hops ≥ 0.5× direct throughput ({protocol}, {chain}) | {:.2}× ({:.0} vs {:.0} req/s) | {} |",
                ratio,
                two.saturation_rps,
                d,
                met(ratio >= 0.5)
            );
        }
        for (via, name) in [(Via::Haproxy, "HAProxy"), (Via::Nginx, "nginx")] {
            if let (Some(reference), Some(two)) = (find(via, protocol, tls), two) {
                let ratio = two.saturation_rps / reference.saturation_rps.max(1.0);
                let _ = writeln!(
                    s,
                    "| 2 Strait hops ≥ 1.0× {name} on the same chain ({protocol}, {chain}) | {:.2}× ({:.0} vs {:.0} req/s) | {} |",
                    ratio,
                    two.saturation_rps,
                    reference.saturation_rps,
                    met(ratio >= 1.0)
                );
            }
        }
        // Added = the chain's p99 − direct's; both chains add to the same direct p99, so the
        // comparison is the chains' own p99s. When direct's tail was the higher (one slow
        // moment of the shared machine), the added parts are within this run's noise.
        if let (Some(ours), Some(theirs), Some(base)) = (
            p99(Via::Strait(2), protocol, tls),
            p99(Via::Haproxy, protocol, tls),
            p99(Via::Direct, protocol, false),
        ) {
            let measured = if base < ours && base < theirs {
                format!(
                    "{} vs {} (p99 {} vs {}, direct {})",
                    ms(ours - base),
                    ms(theirs - base),
                    ms(ours),
                    ms(theirs),
                    ms(base)
                )
            } else {
                format!(
                    "p99 {} vs {}; direct's own p99 ({}) was not below both, so the added parts are within this run's noise",
                    ms(ours),
                    ms(theirs),
                    ms(base)
                )
            };
            let _ = writeln!(
                s,
                "| Added p99 at {} req/s ≤ HAProxy's ({protocol}, two hops, {chain}) | {measured} | {} |",
                params.fixed_rate,
                met(ours <= theirs)
            );
        }
    }
    let worst_cpu = r
        .paths
        .iter()
        // The target is the default configuration's; the batch-worker rows show an option.
        .filter(|p| matches!(p.via, Via::Strait(_)))
        .flat_map(|p| p.cpu_per_1000.iter().copied())
        .fold(0.0f64, f64::max);
    // For scale: what the server alone spent answering the same requests directly.
    let server_cpu = r
        .paths
        .iter()
        .filter(|p| p.via == Via::Direct)
        .flat_map(|p| {
            p.cpu_per_1000
                .first()
                .map(|c| format!("{} {c:.3}", p.protocol))
        })
        .collect::<Vec<_>>();
    let _ = writeln!(
        s,
        "| ≤ 0.10 vCPU per 1000 req/s per Strait proxy | {:.3} vCPU at worst (CPU-seconds per 1000 requests; the server alone, answering directly: {}) | {} |",
        worst_cpu,
        server_cpu.join(", "),
        met(worst_cpu <= 0.10)
    );
    let _ = writeln!(
        s,
        "| Idle RSS ≤ 8 MB | {} | {} |",
        kib(r.idle.rss_kib as f64),
        met(r.idle.rss_kib as f64 <= 8.0 * 1000.0 * 1000.0 / 1024.0)
    );
    let _ = writeln!(
        s,
        "| RSS ≤ 20 MB holding {} services × {} endpoints | {} | {} |\n",
        r.large_shape.services,
        r.large_shape.endpoints,
        kib(r.large.rss_kib as f64),
        met(r.large.rss_kib as f64 <= 20.0 * 1000.0 * 1000.0 / 1024.0)
    );
    let _ = writeln!(s, "### Results\n");
    let _ = writeln!(
        s,
        "| Protocol | Path | Saturation req/s | vs direct | vs 2 HAProxy hops (same TLS) | At {} req/s: p50 / p90 / p99 | CPU per 1000 req (each proxy) | Errors |",
        params.fixed_rate
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for p in &r.paths {
        let vs = direct(if p.protocol == "TCP" {
            "HTTP/1.1"
        } else {
            p.protocol
        })
        .map(|d| format!("{:.2}×", p.saturation_rps / d.max(1.0)))
        .unwrap_or_default();
        let vs_haproxy = find(Via::Haproxy, p.protocol, p.tls)
            .map(|h| format!("{:.2}×", p.saturation_rps / h.saturation_rps.max(1.0)))
            .unwrap_or_else(|| "—".into());
        let lat = p
            .latency
            .map(|l| format!("{} / {} / {}", ms(l[0]), ms(l[1]), ms(l[2])))
            .unwrap_or_else(|| "—".into());
        let cpu = if p.cpu_per_1000.is_empty() {
            "—".to_string()
        } else if p.via == Via::Direct {
            format!("server: {:.3} s", p.cpu_per_1000[0])
        } else {
            p.cpu_per_1000
                .iter()
                .map(|c| format!("{c:.3} s"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} ({:.0}–{:.0}) | {} | {} | {} ({:.0} req/s achieved) | {} | {} |",
            p.protocol,
            p.path,
            p.saturation_rps,
            p.saturation_range.0,
            p.saturation_range.1,
            vs,
            vs_haproxy,
            lat,
            p.fixed_rps,
            cpu,
            p.saturation_errors + p.fixed_errors
        );
    }
    let _ = writeln!(
        s,
        "\nProxy memory (resident set, `/proc/PID/status`): {} idle with this small configuration — {} of it the proxy's own memory (heap, stacks) and {} pages of the `strait` executable mapped from the page cache, which every proxy on the machine shares; {} holding {} services × {} endpoints ({} endpoints in its clusters, counted on its admin API; {} own, {} executable; every service visible, no `Sidecar` scoping; ready {} after start). The RSS targets count both parts; the executable's part is the code and read-only data the proxy has touched, in one binary that is also the control plane, the CA and the CLI.\n",
        kib(r.idle.rss_kib as f64),
        kib(r.idle.anon_kib as f64),
        kib(r.idle.file_kib as f64),
        kib(r.large.rss_kib as f64),
        r.large_shape.services,
        r.large_shape.endpoints,
        r.large_hosts,
        kib(r.large.anon_kib as f64),
        kib(r.large.file_kib as f64),
        ms(r.large_ready)
    );
    let _ = writeln!(
        s,
        "TCP rows compare with direct HTTP/1.1 (the same bytes). The TCP path opens one upstream connection per downstream connection; HTTP paths pool upstream connections.\n"
    );
    batch_section(s, r, params.fixed_rate);
    profiles_section(s, r);
}

/// The batch-worker chains beside the default ones: what `--worker-scheduling batch` changed,
/// with the machine otherwise idle and with every core kept busy.
fn batch_section(s: &mut String, r: &data_plane::Results, rate: u32) {
    use data_plane::Via;
    let mut lines = Vec::new();
    for batch in r.paths.iter().filter(|p| p.via == Via::StraitBatch) {
        let Some(default) = r
            .paths
            .iter()
            .find(|p| p.via == Via::Strait(2) && p.tls && p.protocol == batch.protocol)
        else {
            continue;
        };
        let cpu = |p: &data_plane::PathResult| p.cpu_per_1000.iter().sum::<f64>();
        lines.push(format!(
            "- {}: both proxies' CPU per 1000 requests at {rate} req/s {:.3} → {:.3} s ({:.2}×); {}; saturation {:.0} → {:.0} req/s.",
            batch.protocol,
            cpu(default),
            cpu(batch),
            cpu(batch) / cpu(default).max(f64::EPSILON),
            latency_change(default.latency, batch.latency),
            default.saturation_rps,
            batch.saturation_rps,
        ));
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "**Batch workers** (`--worker-scheduling batch`) against the default, same mTLS chain, this run:\n\n{}\n",
        lines.join("\n")
    );
    let mut busy = Vec::new();
    for b in r.busy.iter().filter(|b| b.path.ends_with("batch workers")) {
        let Some(d) = r
            .busy
            .iter()
            .find(|d| d.protocol == b.protocol && !d.path.ends_with("batch workers"))
        else {
            continue;
        };
        busy.push(format!(
            "- {}: {} ({:.0} → {:.0} req/s achieved, {} → {} errors).",
            b.protocol,
            latency_change(d.latency, b.latency),
            d.achieved_rps,
            b.achieved_rps,
            d.errors,
            b.errors
        ));
    }
    if !busy.is_empty() {
        let _ = writeln!(
            s,
            "The other side of the trade: with every core kept busy by other processes ({} busy-looping processes, one per core, while the fixed rate runs again on these chains), a batch worker woken by a request waits for the running thread's time slice to end instead of preempting it:\n\n{}\n",
            r.busy_loops,
            busy.join("\n")
        );
    }
}

/// "p50 a → b, p99 c → d" between two chains' fixed-rate latencies.
fn latency_change(from: Option<[Duration; 3]>, to: Option<[Duration; 3]>) -> String {
    match (from, to) {
        (Some(f), Some(t)) => format!(
            "p50 {} → {}, p99 {} → {}",
            ms(f[0]),
            ms(t[0]),
            ms(f[2]),
            ms(t[2])
        ),
        _ => "no latencies".to_string(),
    }
}

/// Where the proxies' CPU went: one table per load, a column per profiled chain.
fn profiles_section(s: &mut String, r: &data_plane::Results) {
    let _ = writeln!(
        s,
        "### Where the proxies' CPU goes
"
    );
    let profiles = match &r.profiles {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => {
            let _ = writeln!(s, "**NOT PROFILED in this run: no chain to profile.**\n");
            return;
        }
        Err(why) => {
            let _ = writeln!(s, "**NOT PROFILED in this run: {why}.**\n");
            return;
        }
    };
    let length = profiles[0].profile.recorded.as_secs_f64();
    let _ = writeln!(
        s,
        "`perf record` sampled both proxies of a chain (on-CPU time, software clock at 997 Hz: this machine's virtual CPUs have no hardware counters) while the chain carried load for {length:.0} s: at saturation (h2load as in the saturation rows) and at the fixed rate (the open-model generator). Samples are grouped by component: by library, and for Rust code by the crate the function belongs to (inlined code counts where it was inlined). CPU per request: each proxy's user + system time divided by the requests completed, in a run of the same load just before, without perf (sampling and tracing every system call cost the profiled processes CPU of their own); system calls and context switches (`perf stat`) are both proxies' together, per request of the profiled run. Percentages are of both proxies' samples together.\n"
    );
    for fixed_rate in [false, true] {
        let group: Vec<&data_plane::ChainProfile> = profiles
            .iter()
            .filter(|p| p.rate.is_some() == fixed_rate)
            .collect();
        let Some(first) = group.first() else {
            continue;
        };
        let load = load_name(first.rate);
        let _ = writeln!(s, "**At {load}**\n");
        header(s, &group, |p| format!("{} {}", p.protocol, p.path));
        cells(s, "Requests", &group, |p| p.requests.to_string());
        cells(s, "CPU per request, each proxy", &group, |p| {
            let each: Vec<String> = p
                .cpu_us_per_request
                .iter()
                .map(|us| format!("{us:.1} µs"))
                .collect();
            each.join(", ")
        });
        cells(s, "System calls per request, all proxies", &group, |p| {
            per(p.profile.syscalls, p.requests, 1)
        });
        cells(
            s,
            "Context switches per request, all proxies",
            &group,
            |p| per(p.profile.context_switches, p.requests, 1),
        );
        let columns: Vec<&Profile> = group.iter().map(|p| &p.profile).collect();
        profile_rows(s, &columns);
        let _ = writeln!(s, "\n");
        let through = |p: &&&data_plane::ChainProfile, who: &str| p.path.contains(who);
        for strait in group.iter().filter(|p| through(p, "Strait")) {
            let haproxy = group
                .iter()
                .find(|p| through(p, "HAProxy") && p.protocol == strait.protocol);
            if let Some(haproxy) = haproxy {
                let total = |p: &data_plane::ChainProfile| p.cpu_us_per_request.iter().sum::<f64>();
                let _ = writeln!(
                    s,
                    "- {} at {load}: the two Strait proxies spent {:.1} µs of CPU per request together, the two HAProxy hops {:.1} µs ({:.2}×); the kernel took {:.0} % of Strait's samples and {:.0} % of HAProxy's. Strait's largest parts outside the kernel: {}.{}",
                    strait.protocol,
                    total(strait),
                    total(haproxy),
                    total(strait) / total(haproxy).max(f64::MIN_POSITIVE),
                    strait.profile.kernel_share(),
                    haproxy.profile.kernel_share(),
                    largest_outside_kernel(&strait.profile, 3),
                    if strait.rate.is_some() {
                        " The CPU target (≤ 0.10 vCPU per 1000 req/s) is 100 µs per request per proxy."
                    } else {
                        ""
                    }
                );
            }
        }
        let _ = writeln!(s);
    }
    for p in profiles.iter().filter(|p| p.path.contains("Strait")) {
        let what = format!("{} {}, {}", p.protocol, p.path, load_name(p.rate));
        hottest(s, &what, &p.profile);
    }
}

/// A table's first two lines: an empty corner, then a column per item named by `name`.
fn header<T>(s: &mut String, items: &[T], name: impl Fn(&T) -> String) {
    let _ = write!(s, "| |");
    for item in items {
        let _ = write!(s, " {} |", name(item));
    }
    let _ = write!(s, "\n|---|");
    for _ in items {
        let _ = write!(s, "---|");
    }
}

/// A table row, starting on a new line: `name`, then a cell per item.
fn cells<T>(s: &mut String, name: &str, items: &[T], cell: impl Fn(&T) -> String) {
    let _ = write!(s, "\n| {name} |");
    for item in items {
        let _ = write!(s, " {} |", cell(item));
    }
}

/// A count per `unit` with `decimals` decimals ("not counted" when perf could not count it).
fn per(count: Option<u64>, unit: u64, decimals: usize) -> String {
    match count {
        Some(n) => format!("{:.decimals$}", n as f64 / unit.max(1) as f64),
        None => "not counted".to_string(),
    }
}

/// `saturation`, or the fixed rate (`1000 req/s`).
fn load_name(rate: Option<u32>) -> String {
    match rate {
        None => "saturation".to_string(),
        Some(rps) => format!("{rps} req/s"),
    }
}

/// The rows every profile table has, each starting on a new line: samples, the kernel's
/// share, then every component any profile has, largest first.
fn profile_rows(s: &mut String, profiles: &[&Profile]) {
    cells(s, "Samples", profiles, |p| p.samples.to_string());
    cells(s, "Kernel, all parts", profiles, |p| {
        format!("{:.1} %", p.kernel_share())
    });
    let mut components: Vec<(&str, f64)> = Vec::new();
    for p in profiles {
        for (c, share) in &p.components {
            match components.iter_mut().find(|(name, _)| name == c) {
                Some(entry) => entry.1 = entry.1.max(*share),
                None => components.push((c, *share)),
            }
        }
    }
    components.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (c, _) in components {
        cells(s, c, profiles, |p| match p.share(c) {
            share if share > 0.0 => format!("{share:.1} %"),
            _ => "—".to_string(),
        });
    }
}

/// Where the control plane's CPU went while the second batch of proxies synced.
fn control_plane_profiles(s: &mut String, params: &Params, phases: &[PhaseResult]) {
    let _ = writeln!(s, "### Where the control plane's CPU goes\n");
    let profiled: Vec<(&PhaseResult, &Profile, f64)> = phases
        .iter()
        .filter_map(|r| r.batch_profile.as_ref().ok().map(|(p, cpu)| (r, p, *cpu)))
        .collect();
    if profiled.is_empty() {
        for r in phases {
            if let Err(why) = &r.batch_profile {
                let _ = writeln!(s, "**NOT PROFILED ({}): {why}.**\n", r.variant.label());
            }
        }
        return;
    }
    let n = params.proxies;
    let _ = writeln!(
        s,
        "`perf record` sampled the control plane (on-CPU time, software clock at 997 Hz) while the second batch of {n} proxies connected and synced — the warm control plane's cost of a cold sync, generation caches built. Samples are grouped by component: by library, and for Rust code by the crate the function belongs to.\n"
    );
    header(s, &profiled, |(r, _, _)| r.variant.label().to_string());
    cells(s, "CPU per proxy synced", &profiled, |(_, _, cpu)| {
        format!("{:.2} ms", cpu * 1000.0 / n.max(1) as f64)
    });
    cells(
        s,
        "System calls per proxy synced",
        &profiled,
        |(_, p, _)| per(p.syscalls, n as u64, 0),
    );
    cells(
        s,
        "Context switches per proxy synced",
        &profiled,
        |(_, p, _)| per(p.context_switches, n as u64, 0),
    );
    let columns: Vec<&Profile> = profiled.iter().map(|(_, p, _)| *p).collect();
    profile_rows(s, &columns);
    let _ = writeln!(s, "\n");
    for (r, p, _) in &profiled {
        let _ = writeln!(
            s,
            "- {}: the kernel took {:.0} % of the samples; the largest parts outside it: {}.",
            r.variant.label(),
            p.kernel_share(),
            largest_outside_kernel(p, 4)
        );
    }
    let _ = writeln!(s);
    for (r, p, _) in &profiled {
        hottest(s, &format!("control plane, {}", r.variant.label()), p);
    }
}

/// The `n` largest components that are not the kernel's: `h2 (19.6 %), …`.
fn largest_outside_kernel(p: &Profile, n: usize) -> String {
    p.components
        .iter()
        .filter(|(c, _)| !c.starts_with("kernel"))
        .take(n)
        .map(|(c, share)| format!("{c} {share:.1} %"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A folded table of a profile's hottest functions.
fn hottest(s: &mut String, what: &str, p: &Profile) {
    let _ = writeln!(
        s,
        "<details><summary>Hottest functions: {what}</summary>\n\n| Share | Where | Function |\n|---|---|---|"
    );
    for sym in &p.top {
        let mut name = sym.name.replace('|', "\\|");
        if name.chars().count() > 110 {
            name = name.chars().take(110).collect::<String>() + "…";
        }
        let _ = writeln!(s, "| {:.1} % | {} | `{name}` |", sym.percent, sym.dso);
    }
    let _ = writeln!(s, "\n</details>\n");
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn identity_section(s: &mut String, r: &identity::Results) {
    let _ = writeln!(s, "## Identity\n");
    let _ = writeln!(
        s,
        "In process, one thread. The CA signs {} workload CSRs (ECDSA P-256: parse, policy, sign, chain) made beforehand; the ceiling is the same library's bare P-256 signature rate. Then {} sequential loopback connections each do a full TLS 1.3 mutual handshake as two sidecars do (both chains and the SPIFFE identity verified) and a one-byte echo, against the same in plaintext; CPU is this process's, both ends of the hop.\n",
        r.csrs, r.handshakes
    );
    let _ = writeln!(s, "| Measure | Result | Baseline | Target |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    let _ = writeln!(
        s,
        "| CSR signing rate, one core | {:.0} /s | bare P-256 signatures {:.0} /s ({:.2}×) | ≥ 1000 /s per core: {} |",
        r.csr_per_sec,
        r.raw_sign_per_sec,
        r.csr_per_sec / r.raw_sign_per_sec,
        met(r.csr_per_sec >= 1000.0)
    );
    let _ = writeln!(
        s,
        "| mTLS connection per hop, wall | {} | plaintext {} | — |",
        micros(r.mtls_wall),
        micros(r.tcp_wall)
    );
    let _ = writeln!(
        s,
        "| mTLS connection per hop, CPU (both ends) | {} | plaintext {} | — |",
        micros(r.mtls_cpu),
        micros(r.tcp_cpu)
    );
    let _ = writeln!(
        s,
        "\nA handshake is paid once per connection: the proxies pool upstream connections, so at steady state requests ride established mTLS connections.\n"
    );
}

fn multicluster_section(s: &mut String, params: &multicluster::Params, r: &multicluster::Results) {
    let _ = writeln!(s, "## Multi-cluster: gateway hop and failover\n");
    let _ = writeln!(
        s,
        "`{}` run by `strait up`'s library: two primary clusters on two networks (network namespaces; the networks meet only on a WAN segment through their routers and east-west gateways), helloworld v1 in cluster1 and v2 in cluster2, 80/20 locality `distribute`, outlier detection (5 consecutive 5xx, 30 s), 1 s connect timeout, the seed's retries (3 attempts, 1 s per try). cluster1's client pod calls helloworld one call after another, each on a new connection to its sidecar (release build; everything shares this machine's cores).\n",
        params.example.display()
    );
    let _ = writeln!(
        s,
        "### The gateway hop\n\n{} calls in {:.1} s; the answer says which path it took. A local call is client sidecar → server sidecar (mTLS); a far call is client sidecar → network2's east-west gateway (SNI passthrough, the mTLS untouched) → server sidecar, plus the routers between the networks.\n",
        r.local.len() + r.far.len(),
        r.hop_wall.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| Path | Calls | p50 | p90 | p99 |\n|---|---|---|---|---|"
    );
    for (name, v) in [
        ("in cluster1's network", &r.local),
        ("across networks, through the gateway", &r.far),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} |",
            v.len(),
            p(v, 50.0),
            p(v, 90.0),
            p(v, 99.0)
        );
    }
    let added = |q: f64| match (percentile(&r.far, q), percentile(&r.local, q)) {
        (Some(f), Some(l)) => {
            let d = f.as_secs_f64() - l.as_secs_f64();
            format!("{:+.2} ms", d * 1000.0)
        }
        _ => "n/a".into(),
    };
    let _ = writeln!(
        s,
        "\nAdded by the gateway hop (far − local): p50 {}, p99 {}.\n",
        added(50.0),
        added(99.0)
    );
    let _ = writeln!(
        s,
        "Saturation throughput from cluster1's client pod, h2load with 8 HTTP/1.1 connections for {} s along each path (the bench's copy of the example routes a header to subset v1 or v2):\n\n| Path | req/s | not 2xx |\n|---|---|---|\n| in cluster1's network | {:.0} | {} |\n| across networks, through the gateway | {:.0} | {} |\n\nThrough the gateway: {:.2}× the local path's throughput.\n",
        params.load.as_secs(),
        r.local_throughput.0,
        r.local_throughput.1,
        r.far_throughput.0,
        r.far_throughput.1,
        r.far_throughput.0 / r.local_throughput.0.max(1.0)
    );
    let _ = writeln!(
        s,
        "### Failover\n\nThe client calls for {:.0} s; 1 s in, the failure happens. *Moved after*: from the failure to the start of the last call it still touched (failed, answered by the failed side, or stalled ≥ 500 ms on it) — after that every call went to the healthy side at full speed. Targets: moved ≤ 3 s; ≤ 0.1 % failed with retries.\n",
        params.window.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| Failure | Retries | Calls after it | Failed | Moved after | Target |\n|---|---|---|---|---|---|"
    );
    for (name, retries, f) in [
        (
            "cluster1's helloworld pod stopped (SIGKILL)",
            true,
            &r.stop_with_retries,
        ),
        (
            "cluster1's helloworld pod stopped (SIGKILL)",
            false,
            &r.stop_without_retries,
        ),
        (
            "network2 blackholed (router and gateway drop every packet)",
            true,
            &r.blackhole,
        ),
    ] {
        let failed_pct = f.failed_after as f64 * 100.0 / f.calls_after.max(1) as f64;
        let ok = f.moved_after <= Duration::from_secs(3) && (!retries || failed_pct <= 0.1);
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} ({failed_pct:.2} %) | {} | {} |",
            if retries { "3 × 1 s" } else { "none" },
            f.calls_after,
            f.failed_after,
            ms(f.moved_after),
            met(ok)
        );
    }
    let _ = writeln!(
        s,
        "\nWhy a blackhole takes longer than a stopped pod: a stopped pod refuses at once, so its 5 consecutive failures (the outlier threshold) come within milliseconds and the retry hides each. A blackholed gateway answers nothing: each call sent its way waits out the 1 s per-try (or connect) timeout before its retry succeeds in cluster1, and only 20 % of a single sequential caller's calls go that way, so outlier detection alone would collect its 5 failures only over several seconds. What moves the traffic sooner is cluster1's control plane probing network2's gateway (a TCP connection to 15443 every second, 500 ms to open, a failure probed again at once; two in a row make it unreachable): it then sends the endpoints behind that gateway unhealthy and the sidecar stops choosing them. Istio has no such check (its sidecars rely on outlier detection alone).\n"
    );
}
