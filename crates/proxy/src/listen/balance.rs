//! Which worker serves an accepted connection: the one serving the fewest (Envoy's
//! `exact_balance`). Every worker accepts on every listener and the first to wake takes what is
//! waiting, so without this a burst of connections — a client's pool opening, the one HTTP/2
//! connection per worker another sidecar opens — lands on one worker while the others idle,
//! and a few long-lived multiplexed connections then keep the whole load on one core.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;

/// Connections each worker serves (also exported as `strait_worker_connections_active`).
pub struct Balancer {
    active: Box<[Gauge]>,
}

/// Counts a connection against its worker until dropped.
pub struct Serving {
    balancer: Arc<Balancer>,
    worker: usize,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(g) = self.balancer.active.get(self.worker) {
            g.dec();
        }
    }
}

impl Balancer {
    /// One counter per worker, in worker order.
    pub fn new(active: Vec<Gauge>) -> Arc<Balancer> {
        Arc::new(Balancer {
            active: active.into_boxed_slice(),
        })
    }

    /// The worker to serve a connection `me` just accepted, counted as serving it from now (so
    /// a burst accepted before any of it is served still spreads).
    pub fn assign(self: &Arc<Self>, me: usize) -> (usize, Serving) {
        let worker = least_loaded(self.active.iter().map(Gauge::get), me);
        if let Some(g) = self.active.get(worker) {
            g.inc();
        }
        let serving = Serving {
            balancer: self.clone(),
            worker,
        };
        (worker, serving)
    }
}

/// The index of the smallest load; `me` when it is among the smallest, so a tie never costs a
/// hand-off to another thread.
fn least_loaded(loads: impl Iterator<Item = i64>, me: usize) -> usize {
    let mut best: Option<(i64, usize)> = None;
    for (i, load) in loads.enumerate() {
        let better = match best {
            None => true,
            Some((b, bi)) => load < b || (load == b && i == me && bi != me),
        };
        if better {
            best = Some((load, i));
        }
    }
    best.map_or(me, |(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_worker_wins_and_ties_stay_with_the_acceptor() {
        assert_eq!(least_loaded([3, 1, 2].into_iter(), 0), 1);
        assert_eq!(least_loaded([1, 1, 1].into_iter(), 2), 2);
        assert_eq!(
            least_loaded([2, 1, 1].into_iter(), 0),
            1,
            "first of the least"
        );
        assert_eq!(least_loaded([0, 0].into_iter(), 1), 1);
        assert_eq!(least_loaded(std::iter::empty(), 0), 0);
    }

    #[test]
    fn a_burst_spreads_evenly_and_finished_connections_free_their_worker() {
        let gauges: Vec<Gauge> = (0..2).map(|_| Gauge::default()).collect();
        let balancer = Balancer::new(gauges.clone());
        // Worker 0 accepts a burst of four before serving any.
        let burst: Vec<_> = (0..4).map(|_| balancer.assign(0)).collect();
        let targets: Vec<usize> = burst.iter().map(|(w, _)| *w).collect();
        assert_eq!(targets, [0, 1, 0, 1]);
        assert_eq!((gauges[0].get(), gauges[1].get()), (2, 2));
        let (on_one, _still_on_zero): (Vec<_>, Vec<_>) =
            burst.into_iter().partition(|(w, _)| *w == 1);
        drop(on_one);
        assert_eq!((gauges[0].get(), gauges[1].get()), (2, 0));
        assert_eq!(balancer.assign(0).0, 1, "the idle worker takes the next");
    }
}
