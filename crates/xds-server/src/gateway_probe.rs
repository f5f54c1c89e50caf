//! Active checks of the networks' east-west gateways: the control plane opens a TCP connection
//! to each gateway's data port (15443) every probe period, from its own network — where its
//! sidecars are. A gateway that answered once and then fails its probes a number of times in a
//! row (a failure is probed again at once, so one lost SYN is not enough) is reported
//! unreachable, and sidecars get the endpoints behind it through another gateway of its
//! network, or unhealthy; the first probe it answers gives them back.
//!
//! Istio has no such check: a network cut off without a reset (its packets dropped) is noticed
//! only by each sidecar's outlier detection, one timed-out request at a time. Linkerd probes
//! linked gateways the same way (`probeSpec`), slower by default.
//!
//! A gateway never seen to answer is left alone (its state says so): a control plane whose
//! network cannot reach a gateway its sidecars can must not cut them off from it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

/// How gateways are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Time between the starts of two rounds; zero turns probing off.
    pub period: Duration,
    /// How long a TCP connection may take to open.
    pub timeout: Duration,
    /// Failed probes in a row that make a gateway unreachable.
    pub failures: u32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            period: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            failures: 2,
        }
    }
}

impl ProbeSettings {
    /// No probing: every gateway is taken to answer.
    pub fn off() -> Self {
        ProbeSettings {
            period: Duration::ZERO,
            ..Default::default()
        }
    }
}

/// What the probes say of one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Has not answered yet: not acted on.
    Unverified,
    Reachable,
    Unreachable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unverified => "unverified",
            Verdict::Reachable => "reachable",
            Verdict::Unreachable => "unreachable",
        }
    }
}

/// One gateway's probe history.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayState {
    pub verdict: Verdict,
    /// Failed probes since the last one answered.
    pub failures: u32,
    /// The last answered probe's connection time.
    pub connect_ms: Option<f64>,
    /// When the verdict last changed.
    pub since: Instant,
}

impl GatewayState {
    fn new(now: Instant) -> Self {
        GatewayState {
            verdict: Verdict::Unverified,
            failures: 0,
            connect_ms: None,
            since: now,
        }
    }

    /// Takes in one probe's outcome (its connection time when it answered); returns whether
    /// the verdict changed.
    pub fn record(&mut self, answered: Option<Duration>, threshold: u32, now: Instant) -> bool {
        let before = self.verdict;
        match answered {
            Some(took) => {
                self.failures = 0;
                self.connect_ms = Some(took.as_secs_f64() * 1000.0);
                self.verdict = Verdict::Reachable;
            }
            None => {
                self.failures = self.failures.saturating_add(1);
                if self.verdict == Verdict::Reachable && self.failures >= threshold.max(1) {
                    self.verdict = Verdict::Unreachable;
                }
            }
        }
        let changed = self.verdict != before;
        if changed {
            self.since = now;
        }
        changed
    }

    /// Whether a failed probe should be confirmed at once rather than next period: the
    /// gateway is in use and has not failed enough times yet.
    fn confirm_now(&self, threshold: u32) -> bool {
        self.verdict == Verdict::Reachable && self.failures > 0 && self.failures < threshold
    }
}

/// Every probed gateway's state, shared with the debug API.
pub type ProbeBoard = Arc<Mutex<BTreeMap<SocketAddr, GatewayState>>>;

/// The gateways found unreachable.
fn unreachable(board: &BTreeMap<SocketAddr, GatewayState>) -> BTreeSet<SocketAddr> {
    board
        .iter()
        .filter(|(_, s)| s.verdict == Verdict::Unreachable)
        .map(|(a, _)| *a)
        .collect()
}

/// Probes the addresses `targets` holds, round after round, publishing the unreachable ones on
/// `verdicts` (with probing off, none ever). Returns when `targets`' sender is gone.
pub async fn run(
    settings: ProbeSettings,
    mut targets: watch::Receiver<BTreeSet<SocketAddr>>,
    verdicts: watch::Sender<Arc<BTreeSet<SocketAddr>>>,
    board: ProbeBoard,
) {
    if settings.period.is_zero() {
        while targets.changed().await.is_ok() {}
        return;
    }
    loop {
        let started = tokio::time::Instant::now();
        let round: Vec<SocketAddr> = targets.borrow_and_update().iter().copied().collect();
        if let Ok(mut b) = board.lock() {
            b.retain(|a, _| round.contains(a));
        }
        let mut probes = tokio::task::JoinSet::new();
        for &addr in &round {
            probes.spawn(probe_gateway(addr, settings, board.clone()));
        }
        while probes.join_next().await.is_some() {}
        let down = match board.lock() {
            Ok(b) => unreachable(&b),
            Err(_) => return,
        };
        verdicts.send_if_modified(|v| {
            let changed = **v != down;
            if changed {
                *v = Arc::new(down);
            }
            changed
        });
        tokio::select! {
            r = targets.changed() => if r.is_err() { return },
            () = tokio::time::sleep_until(started + settings.period) => {}
        }
    }
}

/// Probes one gateway, confirming a failure at once while it is in use.
async fn probe_gateway(addr: SocketAddr, settings: ProbeSettings, board: ProbeBoard) {
    loop {
        let answered = connect(addr, settings.timeout).await;
        let Ok(mut b) = board.lock() else { return };
        let now = Instant::now();
        let state = b.entry(addr).or_insert_with(|| GatewayState::new(now));
        if state.record(answered, settings.failures, now) {
            match state.verdict {
                Verdict::Unreachable => warn!(
                    gateway = %addr,
                    failures = state.failures,
                    "network gateway does not answer the control plane's probes; endpoints behind it go through another gateway of its network, or are sent unhealthy"
                ),
                Verdict::Reachable => {
                    info!(gateway = %addr, "network gateway answers the control plane's probes")
                }
                Verdict::Unverified => {}
            }
        }
        if !state.confirm_now(settings.failures) {
            return;
        }
    }
}

/// Opens and closes a TCP connection to `addr`; how long opening it took, if it did within
/// `timeout`.
async fn connect(addr: SocketAddr, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Some(started.elapsed()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Option<Duration> = Some(Duration::from_millis(2));

    #[test]
    fn a_gateway_is_unreachable_only_after_answering_once_and_then_failing_in_a_row() {
        let now = Instant::now();
        let mut s = GatewayState::new(now);
        // Never answered: failures are counted, never acted on.
        for _ in 0..5 {
            assert!(!s.record(None, 2, now));
        }
        assert_eq!((s.verdict, s.failures), (Verdict::Unverified, 5));
        assert!(s.record(OK, 2, now));
        assert_eq!((s.verdict, s.failures), (Verdict::Reachable, 0));
        // One failure is confirmed at once, and not yet a verdict.
        assert!(!s.record(None, 2, now));
        assert!(s.confirm_now(2));
        assert_eq!(s.verdict, Verdict::Reachable);
        // An answer in between starts the count again.
        assert!(!s.record(OK, 2, now));
        assert!(!s.record(None, 2, now));
        assert!(s.record(None, 2, now));
        assert_eq!(s.verdict, Verdict::Unreachable);
        assert!(
            !s.confirm_now(2),
            "an unreachable gateway waits for the next round"
        );
        assert!(!s.record(None, 2, now));
        // The first answer gives it back.
        assert!(s.record(OK, 2, now));
        assert_eq!(s.verdict, Verdict::Reachable);
    }

    #[tokio::test]
    async fn probes_find_a_closed_gateway_unreachable_and_a_reopened_one_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = ProbeSettings {
            period: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            failures: 2,
        };
        let (targets_tx, targets) = watch::channel(BTreeSet::from([addr]));
        let (verdicts, down) = watch::channel(Arc::new(BTreeSet::new()));
        let board = ProbeBoard::default();
        let prober = tokio::spawn(run(settings, targets, verdicts, board.clone()));
        let wait_for = |want_down: bool| {
            let mut down = down.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        if down.borrow_and_update().contains(&addr) == want_down {
                            return;
                        }
                        down.changed().await.unwrap();
                    }
                })
                .await
                .unwrap();
            }
        };
        // Answers: reachable, not down.
        tokio::time::timeout(Duration::from_secs(10), async {
            while board.lock().unwrap().get(&addr).map(|s| s.verdict) != Some(Verdict::Reachable) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert!(!down.borrow().contains(&addr));
        drop(listener);
        wait_for(true).await;
        let _listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        wait_for(false).await;
        // A gateway no longer in the table is forgotten.
        targets_tx.send_replace(BTreeSet::new());
        tokio::time::timeout(Duration::from_secs(10), async {
            while !board.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        drop(targets_tx);
        tokio::time::timeout(Duration::from_secs(10), prober)
            .await
            .unwrap()
            .unwrap();
    }
}
