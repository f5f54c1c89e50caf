//! Idle timeouts of connections. The HTTP connection manager's (Envoy's
//! `common_http_protocol_options.idle_timeout`): a downstream connection with no request in
//! flight for that long is closed — HTTP/1.1 at once, HTTP/2 after a GOAWAY; the same for a
//! cluster's pooled upstream connections. The TCP proxy's (`idle_timeout`): a connection whose
//! bytes stood still both ways for that long is closed.
//!
//! Requests only count themselves in and out, bytes only stamp the time; nothing is re-armed
//! per request or read. One timer per connection wakes at the earliest moment the connection
//! could have been idle long enough and decides then. (A timer reset on every request, as
//! hyper's header-read timeout does, costs an event-loop wake-up per request: the runtime's
//! driver is signalled whenever a timer becomes its earliest.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

// Tokio's clock, so that tests can pause time.
use tokio::time::Instant;

/// Envoy's default when the configuration does not say.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The idle timeout a configuration asks for: `None` when disabled (`0`).
pub fn configured(idle_timeout_ms: Option<u64>) -> Option<Duration> {
    match idle_timeout_ms {
        None => Some(DEFAULT_IDLE_TIMEOUT),
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
    }
}

/// A connection's requests in flight and when it was last active.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` when the connection was last active: its last request ended,
    /// or bytes last moved.
    idle_since_ms: AtomicU64,
}

/// A request in flight; the connection is idle again when the last one is dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

/// What the idle timer should do when it wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Idle for the whole timeout: close the connection.
    Expired,
    /// Not (yet) idle long enough: wake again then.
    WakeAt(Instant),
}

impl Activity {
    pub fn new(now: Instant) -> Arc<Activity> {
        Arc::new(Activity {
            epoch: now,
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// Counts a request in until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Marks the connection active now (bytes moved).
    pub fn touch(&self) {
        self.idle_since_ms
            .store(self.millis_now(), Ordering::Relaxed);
    }

    fn millis_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The decision at `now`: expired only when no request is in flight and the last one ended
    /// (or the connection opened) at least `timeout` ago.
    pub fn check(&self, now: Instant, timeout: Duration) -> Check {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Check::WakeAt(now + timeout);
        }
        let idle_since =
            self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        let deadline = idle_since + timeout;
        if now >= deadline {
            Check::Expired
        } else {
            Check::WakeAt(deadline)
        }
    }

    /// Resolves once the connection has been idle for `timeout`; never without one.
    pub async fn expired(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        let mut wake = self.epoch + timeout;
        loop {
            // The connection's task polls this on every wake-up (every read and write): once
            // the timer is registered, it is polled again only after it fired — an atomic
            // load instead of a trip through the time driver's entry each time. The waker it
            // registered stays right: the same task polls it.
            let sleep = tokio::time::sleep_until(wake);
            tokio::pin!(sleep);
            let mut registered = false;
            std::future::poll_fn(|cx| {
                if registered && !sleep.is_elapsed() {
                    return std::task::Poll::Pending;
                }
                registered = true;
                sleep.as_mut().poll(cx)
            })
            .await;
            match self.check(Instant::now(), timeout) {
                Check::Expired => return,
                Check::WakeAt(next) => wake = next,
            }
        }
    }
}

impl InFlight {
    /// The connection's activity this request counts on.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            a.touch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn unset_is_an_hour_and_zero_disables() {
        assert_eq!(configured(None), Some(Duration::from_secs(3600)));
        assert_eq!(configured(Some(0)), None);
        assert_eq!(configured(Some(1500)), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn a_connection_never_used_expires_a_timeout_after_it_opened() {
        let start = Instant::now();
        let a = Activity::new(start);
        assert_eq!(
            a.check(start + Duration::from_secs(4), T),
            Check::WakeAt(start + T)
        );
        assert_eq!(a.check(start + T, T), Check::Expired);
    }

    #[test]
    fn a_request_in_flight_keeps_the_connection_however_long_it_takes() {
        let start = Instant::now();
        let a = Activity::new(start);
        let request = a.begin();
        let later = start + 5 * T;
        assert_eq!(a.check(later, T), Check::WakeAt(later + T));
        drop(request);
        // Idle from the moment the request ended, not from when the connection opened.
        let now = Instant::now();
        assert!(
            matches!(a.check(now, T), Check::WakeAt(d) if d >= now + T - Duration::from_millis(2))
        );
    }

    #[test]
    fn only_the_last_request_to_end_starts_the_idle_period() {
        let start = Instant::now();
        let a = Activity::new(start);
        let first = a.begin();
        let second = a.begin();
        drop(first);
        assert!(matches!(a.check(start + 3 * T, T), Check::WakeAt(_)));
        drop(second);
        assert_eq!(a.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(a.check(Instant::now() + T, T), Check::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_fires_once_idle_long_enough_and_not_while_busy() {
        let a = Activity::new(Instant::now());
        let request = a.begin();
        let timer = a.expired(Some(Duration::from_millis(100)));
        tokio::pin!(timer);
        // Busy for 350 ms: three timeouts pass without expiring.
        tokio::select! {
            () = &mut timer => panic!("expired while a request was in flight"),
            () = tokio::time::sleep(Duration::from_millis(350)) => {}
        }
        drop(request);
        let ended = Instant::now();
        timer.await;
        assert!(Instant::now() - ended >= Duration::from_millis(100));
    }
}
