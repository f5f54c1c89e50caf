//! Outlier detection with Envoy's semantics, pure (time is passed in): consecutive 5xx, consecutive
//! gateway errors (502/503/504) and, when split from them, consecutive local-origin failures
//! (connect failures, resets, timeouts) eject a host; each ejection lasts the base ejection time
//! times the number of times the host has been ejected (up to 300 s); an interval sweep returns
//! hosts whose time is up and lets a well-behaved host's multiplier shrink again; no more than
//! the maximum ejection percentage of hosts is out at once (though at least one host may be).

use std::time::{Duration, Instant};

use strait_xds::cluster::OutlierDetection;

/// Envoy's cap on one ejection.
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// What one request to a host came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Response(u16),
    /// The proxy could not reach it or lost it: connect failure, reset, timeout.
    LocalFailure,
}

/// One host's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRecord {
    pub consecutive_5xx: u32,
    pub consecutive_gateway: u32,
    pub consecutive_local: u32,
    /// Times ejected so far (the ejection-time multiplier).
    pub ejections: u32,
    pub ejected_until: Option<Instant>,
    /// Total ejections, for the admin API.
    pub ejections_total: u64,
}

impl HostRecord {
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }
}

/// Why a host was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Reason::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
        }
    }
}

fn is_gateway_error(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// Records an outcome for `hosts[index]`; returns the reason if the host is now ejected.
pub fn record(
    policy: &OutlierDetection,
    hosts: &mut [HostRecord],
    index: usize,
    outcome: Outcome,
    now: Instant,
) -> Option<Reason> {
    let ejected = hosts.iter().filter(|h| h.is_ejected()).count();
    let total = hosts.len();
    record_host(policy, hosts.get_mut(index)?, ejected, total, outcome, now)
}

/// Records an outcome for one host of `total`, `ejected` of which are out now.
pub fn record_host(
    policy: &OutlierDetection,
    h: &mut HostRecord,
    ejected: usize,
    total: usize,
    outcome: Outcome,
    now: Instant,
) -> Option<Reason> {
    let split = policy.split_external_local_origin_errors;
    let reason = {
        match outcome {
            Outcome::Response(status) => {
                if status >= 500 {
                    h.consecutive_5xx += 1;
                } else {
                    h.consecutive_5xx = 0;
                }
                if is_gateway_error(status) {
                    h.consecutive_gateway += 1;
                } else {
                    h.consecutive_gateway = 0;
                }
                if split {
                    // An answer at all is a local-origin success.
                    h.consecutive_local = 0;
                }
            }
            Outcome::LocalFailure if split => h.consecutive_local += 1,
            // Not split: a local failure counts as a gateway error (Envoy maps it to 503).
            Outcome::LocalFailure => {
                h.consecutive_5xx += 1;
                h.consecutive_gateway += 1;
            }
        }
        if h.is_ejected() {
            return None;
        }
        let reached = |count: u32, threshold: Option<u32>| threshold.is_some_and(|t| count >= t);
        if reached(h.consecutive_5xx, policy.consecutive_5xx) {
            Some(Reason::Consecutive5xx)
        } else if reached(h.consecutive_gateway, policy.consecutive_gateway_errors) {
            Some(Reason::ConsecutiveGatewayFailure)
        } else if split
            && reached(
                h.consecutive_local,
                policy.consecutive_local_origin_failures,
            )
        {
            Some(Reason::ConsecutiveLocalOriginFailure)
        } else {
            None
        }
    }?;
    if !may_eject(policy, ejected, total) {
        return None;
    }
    h.ejections += 1;
    h.ejections_total += 1;
    h.ejected_until = Some(now + ejection_time(policy, h.ejections));
    h.consecutive_5xx = 0;
    h.consecutive_gateway = 0;
    h.consecutive_local = 0;
    Some(reason)
}

fn may_eject(policy: &OutlierDetection, ejected: usize, total: usize) -> bool {
    if ejected == 0 {
        // Envoy ejects at least one host whatever the percentage.
        return true;
    }
    (ejected + 1) * 100 <= total * policy.max_ejection_percent as usize
}

fn ejection_time(policy: &OutlierDetection, times: u32) -> Duration {
    Duration::from_millis(
        policy
            .base_ejection_time_ms
            .saturating_mul(u64::from(times)),
    )
    .min(MAX_EJECTION_TIME.max(Duration::from_millis(policy.base_ejection_time_ms)))
}

/// The interval sweep: returns hosts whose ejection is over (their indices), and shrinks the
/// multiplier of hosts that stayed in.
pub fn sweep(hosts: &mut [HostRecord], now: Instant) -> Vec<usize> {
    let mut returned = Vec::new();
    for (i, h) in hosts.iter_mut().enumerate() {
        match h.ejected_until {
            Some(until) if until <= now => {
                h.ejected_until = None;
                returned.push(i);
            }
            Some(_) => {}
            None => h.ejections = h.ejections.saturating_sub(1),
        }
    }
    returned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: Some(3),
            consecutive_gateway_errors: None,
            consecutive_local_origin_failures: None,
            split_external_local_origin_errors: false,
            interval_ms: 1000,
            base_ejection_time_ms: 30_000,
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn three_consecutive_5xx_eject_and_a_success_resets_the_count() {
        let p = policy();
        let now = Instant::now();
        let mut hs = vec![HostRecord::default(); 4];
        assert_eq!(record(&p, &mut hs, 0, Outcome::Response(500), now), None);
        assert_eq!(record(&p, &mut hs, 0, Outcome::Response(500), now), None);
        assert_eq!(record(&p, &mut hs, 0, Outcome::Response(200), now), None);
        assert_eq!(record(&p, &mut hs, 0, Outcome::Response(503), now), None);
        assert_eq!(record(&p, &mut hs, 0, Outcome::Response(503), now), None);
        assert_eq!(
            record(&p, &mut hs, 0, Outcome::LocalFailure, now),
            Some(Reason::Consecutive5xx)
        );
        assert_eq!(
            hs[0].ejected_until,
            Some(now + Duration::from_millis(30_000))
        );
    }

    #[test]
    fn gateway_errors_count_only_502_to_504() {
        let p = OutlierDetection {
            consecutive_5xx: None,
            consecutive_gateway_errors: Some(2),
            ..policy()
        };
        let now = Instant::now();
        let mut hs = vec![HostRecord::default(); 2];
        assert_eq!(record(&p, &mut hs, 1, Outcome::Response(500), now), None);
        assert_eq!(record(&p, &mut hs, 1, Outcome::Response(502), now), None);
        assert_eq!(record(&p, &mut hs, 1, Outcome::Response(500), now), None);
        assert_eq!(record(&p, &mut hs, 1, Outcome::Response(504), now), None);
        assert_eq!(
            record(&p, &mut hs, 1, Outcome::Response(503), now),
            Some(Reason::ConsecutiveGatewayFailure)
        );
    }

    #[test]
    fn split_local_origin_failures_count_apart_from_responses() {
        let p = OutlierDetection {
            consecutive_5xx: Some(2),
            consecutive_local_origin_failures: Some(2),
            split_external_local_origin_errors: true,
            ..policy()
        };
        let now = Instant::now();
        let mut hs = vec![HostRecord::default(); 2];
        assert_eq!(record(&p, &mut hs, 0, Outcome::LocalFailure, now), None);
        assert_eq!(record(&p, &mut hs, 0, Outcome::Response(500), now), None);
        // The 500 was an answer: the local-origin count restarted.
        assert_eq!(record(&p, &mut hs, 0, Outcome::LocalFailure, now), None);
        assert_eq!(
            record(&p, &mut hs, 0, Outcome::LocalFailure, now),
            Some(Reason::ConsecutiveLocalOriginFailure)
        );
    }

    #[test]
    fn ejections_grow_longer_and_come_back_after_their_time() {
        let p = OutlierDetection {
            consecutive_5xx: Some(1),
            ..policy()
        };
        let t0 = Instant::now();
        let mut hs = vec![HostRecord::default(); 2];
        record(&p, &mut hs, 0, Outcome::Response(500), t0);
        assert!(sweep(&mut hs, t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(sweep(&mut hs, t0 + Duration::from_secs(30)), vec![0]);
        let t1 = t0 + Duration::from_secs(31);
        record(&p, &mut hs, 0, Outcome::Response(500), t1);
        assert_eq!(hs[0].ejected_until, Some(t1 + Duration::from_secs(60)));
        assert_eq!(hs[0].ejections_total, 2);
        // Back in, and well-behaved for two intervals: the multiplier shrinks to zero.
        sweep(&mut hs, t1 + Duration::from_secs(60));
        sweep(&mut hs, t1 + Duration::from_secs(61));
        sweep(&mut hs, t1 + Duration::from_secs(62));
        assert_eq!(hs[0].ejections, 0);
    }

    #[test]
    fn never_more_than_the_maximum_percentage_but_always_one() {
        let p = OutlierDetection {
            consecutive_5xx: Some(1),
            max_ejection_percent: 10,
            ..policy()
        };
        let now = Instant::now();
        let mut hs = vec![HostRecord::default(); 4];
        // 10 % of 4 is less than one host, yet one may go.
        assert!(record(&p, &mut hs, 0, Outcome::Response(500), now).is_some());
        assert!(record(&p, &mut hs, 1, Outcome::Response(500), now).is_none());
        assert!(!hs[1].is_ejected());
    }

    #[test]
    fn ejection_time_is_capped() {
        let p = OutlierDetection {
            consecutive_5xx: Some(1),
            base_ejection_time_ms: 100_000,
            ..policy()
        };
        assert_eq!(ejection_time(&p, 5), MAX_EJECTION_TIME);
    }
}
