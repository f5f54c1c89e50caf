//! Circuit breakers: a cluster's caps on connections, pending requests, active requests and
//! active retries (Envoy's thresholds). A permit holds a place until it is dropped; asking
//! beyond a cap fails at once, and the caller answers 503 with the overflow flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use strait_xds::cluster::CircuitBreakers;

/// Which cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Connections = 0,
    Pending = 1,
    Requests = 2,
    Retries = 3,
}

/// The caps and what is in use.
#[derive(Debug)]
pub struct Limits {
    max: [u64; 4],
    used: [AtomicU64; 4],
    /// Times each cap turned something away.
    pub overflows: [AtomicU64; 4],
    /// Woken when a connection closes (its place under the cap frees up).
    pub connection_freed: crate::upstream::pool::Capacity,
}

impl Limits {
    /// No configured breakers: no caps (as Istio configures Envoy by default).
    pub fn new(breakers: Option<&CircuitBreakers>) -> Arc<Limits> {
        let cap = |v: Option<u32>| v.map_or(u64::MAX, u64::from);
        let b = breakers.cloned().unwrap_or_default();
        Arc::new(Limits {
            max: [
                cap(b.max_connections),
                cap(b.max_pending_requests),
                cap(b.max_requests),
                cap(b.max_retries),
            ],
            used: Default::default(),
            overflows: Default::default(),
            connection_freed: Default::default(),
        })
    }

    /// A place under the cap, or `None` (counted as an overflow).
    pub fn acquire(self: &Arc<Self>, r: Resource) -> Option<Permit> {
        let i = r as usize;
        let counter = &self.used[i];
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            if current >= self.max[i] {
                self.overflows[i].fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match counter.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Permit {
                        limits: self.clone(),
                        resource: i,
                    });
                }
                Err(now) => current = now,
            }
        }
    }

    /// Whether a new one would fit now (without taking it).
    pub fn has_room(&self, r: Resource) -> bool {
        self.used[r as usize].load(Ordering::Relaxed) < self.max[r as usize]
    }

    pub fn in_use(&self, r: Resource) -> u64 {
        self.used[r as usize].load(Ordering::Relaxed)
    }

    pub fn overflowed(&self, r: Resource) -> u64 {
        self.overflows[r as usize].load(Ordering::Relaxed)
    }

    pub fn max(&self, r: Resource) -> u64 {
        self.max[r as usize]
    }
}

/// A place held under a cap.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<Limits>,
    resource: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.used[self.resource].fetch_sub(1, Ordering::AcqRel);
        if self.resource == Resource::Connections as usize {
            self.limits.connection_freed.freed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_release() {
        let l = Limits::new(Some(&CircuitBreakers {
            max_pending_requests: Some(2),
            ..Default::default()
        }));
        let a = l.acquire(Resource::Pending).unwrap();
        let _b = l.acquire(Resource::Pending).unwrap();
        assert!(l.acquire(Resource::Pending).is_none());
        assert_eq!(l.overflowed(Resource::Pending), 1);
        drop(a);
        assert!(l.acquire(Resource::Pending).is_some());
        // Unconfigured caps never refuse.
        let held: Vec<_> = (0..1000)
            .filter_map(|_| l.acquire(Resource::Requests))
            .collect();
        assert_eq!(held.len(), 1000);
    }
}
