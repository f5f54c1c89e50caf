//! Load-balancing algorithms over one set of hosts, pure and deterministic given their inputs
//! (the random numbers and counters are passed in): round robin (weighted, interleaved), least
//! request (power of two choices), random, ring hash and Maglev. Built once per host-set change;
//! choosing is allocation-free.

use strait_xds::cluster::LbPolicy;

/// A host as the balancer sees it: its weight, and (for least request) how busy it is.
pub trait Candidate {
    fn weight(&self) -> u32;
    fn active_requests(&self) -> u64;
    /// Writes the key that places it on a hash ring (its address) to `out`; written on demand
    /// rather than kept, as the ring is built once per host-set change.
    fn write_ring_key(&self, out: &mut Vec<u8>);
}

/// The precomputed structure for one host set.
#[derive(Debug, Clone)]
pub enum Balancer {
    RoundRobin(Weights),
    LeastRequest(Weights),
    Random(Weights),
    /// Sorted (point, host index).
    Ring(Vec<(u64, u32)>),
    /// Host index per slot.
    Maglev(Vec<u32>),
}

/// Cumulative weights, or `None` when all weights are equal (the common, fast case).
#[derive(Debug, Clone)]
pub struct Weights {
    len: usize,
    cumulative: Option<Vec<u64>>,
}

impl Weights {
    fn new(weights: &[u32]) -> Self {
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative = (!equal).then(|| {
            let mut acc = 0u64;
            weights
                .iter()
                .map(|w| {
                    acc += u64::from((*w).max(1));
                    acc
                })
                .collect()
        });
        Self {
            len: weights.len(),
            cumulative,
        }
    }

    /// The host at `position` in `0..total` of the weighted line.
    fn at(&self, position: u64) -> usize {
        match &self.cumulative {
            None => (position % self.len as u64) as usize,
            Some(c) => {
                let total = c.last().copied().unwrap_or(1);
                let p = position % total;
                c.partition_point(|&edge| edge <= p)
            }
        }
    }

    fn total(&self) -> u64 {
        match &self.cumulative {
            None => self.len as u64,
            Some(c) => c.last().copied().unwrap_or(1),
        }
    }

    /// A weighted pick from a uniform random number.
    fn random(&self, roll: u64) -> usize {
        self.at(roll % self.total().max(1))
    }

    /// The `counter`-th pick of a weighted round robin: equal weights go in strict order; unequal
    /// ones follow a golden-ratio sequence over the weighted line, so each host's turns are
    /// interleaved with the others' and its share converges to its weight.
    fn round_robin(&self, counter: u64) -> usize {
        match &self.cumulative {
            None => (counter % self.len as u64) as usize,
            Some(_) => {
                const PHI_FRACTION: u64 = 0x9E37_79B9_7F4A_7C15; // 2^64 / φ
                let unit = counter.wrapping_mul(PHI_FRACTION);
                let position = ((u128::from(unit) * u128::from(self.total())) >> 64) as u64;
                self.at(position)
            }
        }
    }
}

/// Inputs of one choice: a counter (round robin), two random numbers, the request's hash.
#[derive(Debug, Clone, Copy, Default)]
pub struct Draw {
    pub counter: u64,
    pub random: [u64; 2],
    pub hash: Option<u64>,
}

impl Balancer {
    pub fn build<C: Candidate>(policy: &LbPolicy, hosts: &[C]) -> Balancer {
        let weights: Vec<u32> = hosts.iter().map(|h| h.weight()).collect();
        match policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(Weights::new(&weights)),
            LbPolicy::LeastRequest => Balancer::LeastRequest(Weights::new(&weights)),
            LbPolicy::Random => Balancer::Random(Weights::new(&weights)),
            LbPolicy::RingHash { minimum_ring_size } => {
                Balancer::Ring(ring(hosts, (*minimum_ring_size).clamp(1, 8_388_608)))
            }
            LbPolicy::Maglev { table_size } => Balancer::Maglev(maglev(hosts, *table_size)),
        }
    }

    /// The chosen host's index, or `None` for an empty set.
    pub fn choose<C: Candidate>(&self, hosts: &[C], draw: Draw) -> Option<usize> {
        if hosts.is_empty() {
            return None;
        }
        let pick = match self {
            Balancer::RoundRobin(w) => w.round_robin(draw.counter),
            Balancer::Random(w) => w.random(draw.random[0]),
            Balancer::LeastRequest(w) => {
                let a = w.random(draw.random[0]);
                let b = w.random(draw.random[1]);
                // Fewer active requests per unit of weight wins (Envoy's P2C).
                let load = |i: usize| {
                    (hosts[i].active_requests() + 1) as f64 / f64::from(hosts[i].weight().max(1))
                };
                if load(b) < load(a) { b } else { a }
            }
            Balancer::Ring(points) => {
                // Without a hash policy, a random point (Envoy does the same).
                let h = draw.hash.unwrap_or(draw.random[0]);
                let i = points.partition_point(|(p, _)| *p < h);
                let (_, host) = points.get(i).or_else(|| points.first())?;
                *host as usize
            }
            Balancer::Maglev(table) => {
                let h = draw.hash.unwrap_or(draw.random[0]);
                *table.get((h % table.len().max(1) as u64) as usize)? as usize
            }
        };
        (pick < hosts.len()).then_some(pick)
    }
}

/// The item a uniform random `roll` lands on when each takes a share of its weight (weighted
/// clusters of a route or a TCP proxy); with all weights zero, the first.
pub fn by_weight<T>(items: &[T], weight: impl Fn(&T) -> u32, roll: u64) -> Option<&T> {
    let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
    if total == 0 {
        return items.first();
    }
    let mut roll = roll % total;
    for i in items {
        let w = u64::from(weight(i));
        if roll < w {
            return Some(i);
        }
        roll -= w;
    }
    items.last()
}

/// A stable 64-bit hash (FNV-1a with a final mix), the same in every proxy, so consistent
/// hashing sends a key to the same host whichever proxy handles it.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finalizer: spreads FNV's weak low bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Ketama-style ring: each host gets points in proportion to its weight, at least
/// `minimum_size` points in all.
fn ring<C: Candidate>(hosts: &[C], minimum_size: u64) -> Vec<(u64, u32)> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let total_weight: u64 = hosts.iter().map(|h| u64::from(h.weight().max(1))).sum();
    let scale = minimum_size.div_ceil(total_weight).max(1);
    let mut points = Vec::with_capacity((total_weight * scale) as usize);
    let mut key = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let n = u64::from(h.weight().max(1)) * scale;
        for replica in 0..n {
            key.clear();
            h.write_ring_key(&mut key);
            key.push(b'_');
            key.extend_from_slice(replica.to_string().as_bytes());
            points.push((stable_hash(&key), i as u32));
        }
    }
    points.sort_unstable();
    points
}

/// Maglev lookup table (Eisenbud et al., 2016): each host fills slots following its own
/// permutation, weighted hosts taking proportionally more turns.
fn maglev<C: Candidate>(hosts: &[C], table_size: u64) -> Vec<u32> {
    let m = smallest_prime_at_least(table_size.clamp(1, 5_000_011));
    if hosts.is_empty() {
        return Vec::new();
    }
    let perms: Vec<(u64, u64)> = hosts
        .iter()
        .map(|h| {
            let mut salted = Vec::new();
            h.write_ring_key(&mut salted);
            let offset = stable_hash(&salted) % m;
            salted.extend_from_slice(b"#skip");
            let skip = stable_hash(&salted) % (m - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let max_weight = hosts.iter().map(|h| h.weight().max(1)).max().unwrap_or(1);
    let mut next = vec![0u64; hosts.len()];
    let mut credit = vec![0u64; hosts.len()];
    let mut table = vec![u32::MAX; m as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (i, h) in hosts.iter().enumerate() {
            credit[i] += u64::from(h.weight().max(1));
            if credit[i] < u64::from(max_weight) {
                continue;
            }
            credit[i] -= u64::from(max_weight);
            let (offset, skip) = perms[i];
            loop {
                let slot = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break 'fill;
            }
        }
    }
    table
}

fn smallest_prime_at_least(n: u64) -> u64 {
    let is_prime = |x: u64| {
        if x < 2 {
            return false;
        }
        let mut d = 2;
        while d * d <= x {
            if x.is_multiple_of(d) {
                return false;
            }
            d += 1;
        }
        true
    };
    (n.max(2)..).find(|x| is_prime(*x)).unwrap_or(65537)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H {
        key: String,
        weight: u32,
        active: u64,
    }

    impl Candidate for H {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn active_requests(&self) -> u64 {
            self.active
        }
        fn write_ring_key(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(self.key.as_bytes());
        }
    }

    fn hosts(weights: &[u32]) -> Vec<H> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| H {
                key: format!("10.0.0.{i}:80"),
                weight: *w,
                active: 0,
            })
            .collect()
    }

    fn counts(b: &Balancer, hs: &[H], n: u64, mut draw: impl FnMut(u64) -> Draw) -> Vec<u64> {
        let mut c = vec![0; hs.len()];
        for i in 0..n {
            c[b.choose(hs, draw(i)).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_is_strict_with_equal_weights() {
        let hs = hosts(&[1, 1, 1]);
        let b = Balancer::build(&LbPolicy::RoundRobin, &hs);
        let picks: Vec<usize> = (0..6)
            .map(|i| {
                b.choose(
                    &hs,
                    Draw {
                        counter: i,
                        ..Draw::default()
                    },
                )
                .unwrap()
            })
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_round_robin_interleaves_in_proportion() {
        let hs = hosts(&[1, 3]);
        let b = Balancer::build(&LbPolicy::RoundRobin, &hs);
        let c = counts(&b, &hs, 4000, |i| Draw {
            counter: i,
            ..Draw::default()
        });
        assert!((c[1] as f64 / 4000.0 - 0.75).abs() < 0.01, "{c:?}");
        // Interleaved: host 0 never gets three turns in a row.
        let picks: Vec<usize> = (0..40)
            .map(|i| {
                b.choose(
                    &hs,
                    Draw {
                        counter: i,
                        ..Draw::default()
                    },
                )
                .unwrap()
            })
            .collect();
        assert!(!picks.windows(3).any(|w| w == [0, 0, 0]), "{picks:?}");
    }

    #[test]
    fn least_request_prefers_the_idle_host_of_the_two() {
        let mut hs = hosts(&[1, 1]);
        hs[0].active = 10;
        let b = Balancer::build(&LbPolicy::LeastRequest, &hs);
        let pick = b.choose(
            &hs,
            Draw {
                random: [0, 1],
                ..Draw::default()
            },
        );
        assert_eq!(pick, Some(1));
        let pick = b.choose(
            &hs,
            Draw {
                random: [1, 0],
                ..Draw::default()
            },
        );
        assert_eq!(pick, Some(1));
    }

    #[test]
    fn random_follows_weights() {
        let hs = hosts(&[1, 4]);
        let b = Balancer::build(&LbPolicy::Random, &hs);
        let mut rng = fastrand::Rng::with_seed(7);
        let c = counts(&b, &hs, 10_000, |_| Draw {
            random: [rng.u64(..), 0],
            ..Draw::default()
        });
        assert!((c[1] as f64 / 10_000.0 - 0.8).abs() < 0.02, "{c:?}");
    }

    #[test]
    fn ring_hash_is_sticky_and_moves_little_when_a_host_leaves() {
        let policy = LbPolicy::RingHash {
            minimum_ring_size: 1024,
        };
        let hs = hosts(&[1, 1, 1, 1]);
        let b = Balancer::build(&policy, &hs);
        let keys: Vec<u64> = (0..1000)
            .map(|i| stable_hash(format!("user-{i}").as_bytes()))
            .collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| {
                b.choose(
                    &hs,
                    Draw {
                        hash: Some(*k),
                        ..Draw::default()
                    },
                )
                .unwrap()
            })
            .collect();
        // Same key, same host.
        let again = b.choose(
            &hs,
            Draw {
                hash: Some(keys[0]),
                ..Draw::default()
            },
        );
        assert_eq!(again, Some(before[0]));
        // Every host gets a fair share.
        let c = before.iter().fold(vec![0; 4], |mut c, i| {
            c[*i] += 1;
            c
        });
        assert!(c.iter().all(|n| *n > 150), "{c:?}");
        // Drop host 3: its keys move, and few others do (the ring's other points stay put;
        // the remaining hosts gain points to keep the ring at its minimum size).
        let fewer: Vec<H> = hosts(&[1, 1, 1]);
        let b2 = Balancer::build(&policy, &fewer);
        let mut stayed = 0;
        let mut others = 0;
        for (k, old) in keys.iter().zip(&before) {
            let new = b2
                .choose(
                    &fewer,
                    Draw {
                        hash: Some(*k),
                        ..Draw::default()
                    },
                )
                .unwrap();
            if *old != 3 {
                others += 1;
                stayed += usize::from(new == *old);
            }
        }
        assert!(stayed * 100 >= others * 85, "{stayed} of {others} stayed");
    }

    #[test]
    fn maglev_fills_its_table_evenly_and_by_weight() {
        let policy = LbPolicy::Maglev { table_size: 65537 };
        let hs = hosts(&[1, 1, 2]);
        let Balancer::Maglev(table) = Balancer::build(&policy, &hs) else {
            panic!("not maglev");
        };
        assert_eq!(table.len(), 65537);
        let c = table.iter().fold(vec![0u64; 3], |mut c, i| {
            c[*i as usize] += 1;
            c
        });
        assert!((c[2] as f64 / 65537.0 - 0.5).abs() < 0.01, "{c:?}");
        assert!((c[0] as f64 / 65537.0 - 0.25).abs() < 0.01, "{c:?}");
    }

    #[test]
    fn an_empty_set_chooses_nothing() {
        let hs: Vec<H> = vec![];
        for p in [
            LbPolicy::RoundRobin,
            LbPolicy::LeastRequest,
            LbPolicy::Random,
            LbPolicy::RingHash {
                minimum_ring_size: 16,
            },
            LbPolicy::Maglev { table_size: 7 },
        ] {
            assert_eq!(Balancer::build(&p, &hs).choose(&hs, Draw::default()), None);
        }
    }
}
