//! Virtual IPs for ServiceEntry hosts declared without `addresses`, from Istio's ranges
//! `240.240.0.0/16` (class E, never routed) and, for dual-stack and IPv6 proxies, `2001:2::/48`
//! (set aside for benchmarking, never routed), so that a sidecar's DNS proxy can answer them and
//! TCP traffic to them can be told apart by address. Pure and deterministic: every control
//! plane replica and every push gives a host the same address — its slot is a hash of the host
//! name, and a collision moves the later host (in name order) to the next free slot; a host's
//! IPv6 address carries its IPv4 one in its last 32 bits, so the two are unique together.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use strait_config::istio::workload::Resolution;

use crate::service::{ServiceOrigin, ServiceView};

/// The first address of the range (`240.240.0.0/16`).
const BASE: [u8; 2] = [240, 240];
/// Usable last octets: 1..=254 (no network- or broadcast-looking addresses).
const PER_BLOCK: u32 = 254;
const SLOTS: u32 = 256 * PER_BLOCK;

/// Whether a service gets an allocated address: a ServiceEntry host that is not a wildcard,
/// declares no address and is resolved by the proxy (not `resolution: NONE`), as Istio decides.
pub fn wants_vip(s: &ServiceView) -> bool {
    let service = &s.service;
    matches!(
        service.origin,
        ServiceOrigin::ServiceEntry { resolution, .. } if resolution != Resolution::None
    ) && !service.host.as_str().starts_with('*')
        && service.addresses.values().all(Vec::is_empty)
}

/// The address of slot `n`.
fn slot_address(n: u32) -> Ipv4Addr {
    let block = (n / PER_BLOCK) as u8;
    let last = (n % PER_BLOCK + 1) as u8;
    Ipv4Addr::new(BASE[0], BASE[1], block, last)
}

/// The IPv6 address that goes with an allocated IPv4 one: `2001:2::` and its 32 bits.
pub fn ipv6_of(v4: Ipv4Addr) -> Ipv6Addr {
    let [a, b, c, d] = v4.octets();
    Ipv6Addr::new(
        0x2001,
        2,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    )
}

/// FNV-1a, 32 bits: stable across builds and platforms (unlike the standard hasher).
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Allocates addresses for `hosts` (in name order), avoiding `taken`.
pub fn allocate<'a>(
    hosts: impl IntoIterator<Item = &'a str>,
    taken: &BTreeSet<Ipv4Addr>,
) -> Vec<(&'a str, Ipv4Addr)> {
    let mut hosts: Vec<&str> = hosts.into_iter().collect();
    hosts.sort_unstable();
    hosts.dedup();
    let mut used = taken.clone();
    let mut out = Vec::with_capacity(hosts.len());
    for host in hosts {
        let start = fnv1a(host) % SLOTS;
        let free = (0..SLOTS)
            .map(|i| slot_address((start + i) % SLOTS))
            .find(|a| !used.contains(a));
        // With 65024 slots the range only runs out past 65024 hosts; those get no address
        // (as in Istio, they are then reached by port only).
        if let Some(a) = free {
            used.insert(a);
            out.push((host, a));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_in_range_stable_and_distinct() {
        let hosts = ["api.example.com", "db.example.com", "mongo.example.org"];
        let first = allocate(hosts, &BTreeSet::new());
        assert_eq!(first.len(), 3);
        for (_, a) in &first {
            let o = a.octets();
            assert_eq!((o[0], o[1]), (240, 240), "{a}");
            assert!(o[3] != 0 && o[3] != 255, "{a}");
        }
        let distinct: BTreeSet<_> = first.iter().map(|(_, a)| *a).collect();
        assert_eq!(distinct.len(), 3);
        // Same hosts in another order, and with another host added: the same addresses.
        let again = allocate(
            ["mongo.example.org", "api.example.com", "db.example.com"],
            &BTreeSet::new(),
        );
        assert_eq!(again, first);
        let more = allocate(
            [
                "api.example.com",
                "db.example.com",
                "mongo.example.org",
                "new.example.net",
            ],
            &BTreeSet::new(),
        );
        for pair in &first {
            assert!(more.contains(pair), "{pair:?} moved: {more:?}");
        }
    }

    #[test]
    fn ipv6_addresses_carry_the_ipv4_ones() {
        let v6 = ipv6_of(Ipv4Addr::new(240, 240, 3, 17));
        assert_eq!(v6.to_string(), "2001:2::f0f0:311");
        assert_eq!(
            &v6.octets()[..6],
            &[0x20, 0x01, 0, 2, 0, 0],
            "inside 2001:2::/48"
        );
    }

    #[test]
    fn a_taken_slot_moves_the_host_to_the_next_free_one() {
        let alone = allocate(["api.example.com"], &BTreeSet::new())[0].1;
        let moved = allocate(["api.example.com"], &BTreeSet::from([alone]))[0].1;
        assert_ne!(moved, alone);
        assert_eq!((moved.octets()[0], moved.octets()[1]), (240, 240));
    }
}
