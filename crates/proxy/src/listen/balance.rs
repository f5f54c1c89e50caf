//! Which worker serves an accepted connection: the one serving the fewest of the listener's
//! connections, then the fewest of all (Envoy's `exact_balance` counts per listener). Every
//! worker accepts on every listener and the first to wake takes what is waiting, so without
//! this a burst of connections — a client's pool opening, the one HTTP/2 connection per worker
//! another sidecar opens — lands on one worker while the others idle, and a few long-lived
//! multiplexed connections then keep the whole load on one core.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

/// Connections each worker serves, all listeners together (exported as
/// `strait_worker_connections_active`).
pub struct Balancer {
    total: Box<[Gauge]>,
}

/// One listener's connections per worker. A listener's own count decides first: the total
/// counts idle pooled connections of other ports too, and two busy multiplexed connections on
/// one port should not share a worker because another port's idle one sits on the other.
pub struct ListenerBalance {
    balancer: Arc<Balancer>,
    own: Box<[AtomicI64]>,
    /// Held while choosing and counting: two workers woken by the same burst would otherwise
    /// both see the same counts and choose the same worker.
    choosing: Mutex<()>,
}

/// Counts a connection against its worker until dropped.
pub struct Serving {
    listener: Arc<ListenerBalance>,
    worker: usize,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(n) = self.listener.own.get(self.worker) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(g) = self.listener.balancer.total.get(self.worker) {
            g.dec();
        }
    }
}

impl Balancer {
    /// One counter per worker, in worker order.
    pub fn new(total: Vec<Gauge>) -> Arc<Balancer> {
        Arc::new(Balancer {
            total: total.into_boxed_slice(),
        })
    }

    /// The counts of a newly bound listener.
    pub fn listener(self: &Arc<Self>) -> Arc<ListenerBalance> {
        Arc::new(ListenerBalance {
            balancer: self.clone(),
            own: self.total.iter().map(|_| AtomicI64::new(0)).collect(),
            choosing: Mutex::new(()),
        })
    }
}

impl ListenerBalance {
    /// The worker to serve a connection `me` just accepted, counted as serving it from now (so
    /// a burst accepted before any of it is served still spreads).
    pub fn assign(self: &Arc<Self>, me: usize) -> (usize, Serving) {
        let _choosing = self.choosing.lock().unwrap_or_else(|e| e.into_inner());
        let loads = self
            .own
            .iter()
            .zip(self.balancer.total.iter())
            .map(|(own, total)| (own.load(Ordering::Relaxed), total.get()));
        let worker = least_loaded(loads, me);
        if let Some(n) = self.own.get(worker) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(g) = self.balancer.total.get(worker) {
            g.inc();
        }
        let serving = Serving {
            listener: self.clone(),
            worker,
        };
        (worker, serving)
    }
}

/// The index of the smallest load; `me` when it is among the smallest, so a tie never costs a
/// hand-off to another thread.
fn least_loaded<L: Ord + Copy>(loads: impl Iterator<Item = L>, me: usize) -> usize {
    let mut best: Option<(L, usize)> = None;
    for (i, load) in loads.enumerate() {
        let better = match best {
            None => true,
            Some((b, _)) => load < b || (load == b && i == me),
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
        assert_eq!(least_loaded(std::iter::empty::<i64>(), 0), 0);
        assert_eq!(
            least_loaded([(1, 5), (1, 2)].into_iter(), 0),
            1,
            "then by total"
        );
    }

    #[test]
    fn a_burst_spreads_evenly_and_finished_connections_free_their_worker() {
        let gauges: Vec<Gauge> = (0..2).map(|_| Gauge::default()).collect();
        let listener = Balancer::new(gauges.clone()).listener();
        // Worker 0 accepts a burst of four before serving any.
        let burst: Vec<_> = (0..4).map(|_| listener.assign(0)).collect();
        let targets: Vec<usize> = burst.iter().map(|(w, _)| *w).collect();
        assert_eq!(targets, [0, 1, 0, 1]);
        assert_eq!((gauges[0].get(), gauges[1].get()), (2, 2));
        let (on_one, _still_on_zero): (Vec<_>, Vec<_>) =
            burst.into_iter().partition(|(w, _)| *w == 1);
        drop(on_one);
        assert_eq!((gauges[0].get(), gauges[1].get()), (2, 0));
        assert_eq!(listener.assign(0).0, 1, "the idle worker takes the next");
    }

    #[test]
    fn a_listeners_own_connections_decide_before_other_listeners() {
        let gauges: Vec<Gauge> = (0..2).map(|_| Gauge::default()).collect();
        let balancer = Balancer::new(gauges.clone());
        let (http, grpc) = (balancer.listener(), balancer.listener());
        // An idle pooled connection of another port on worker 0.
        let _pooled = http.assign(0);
        // Two connections of the busy port: the first goes where fewer are served in all,
        // the second where fewer of this port's are, though that worker serves more in all.
        let (first, _a) = grpc.assign(1);
        let (second, _b) = grpc.assign(1);
        assert_eq!((first, second), (1, 0));
        assert_eq!((gauges[0].get(), gauges[1].get()), (2, 1));
    }
}
