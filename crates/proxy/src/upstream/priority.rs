//! How load is spread over priority levels, with Envoy's semantics: each level's health is its
//! healthy share scaled by the overprovisioning factor (capped at 100); levels take load in order
//! until 100 % is placed; when the levels together are not healthy enough (normalized total
//! health below 100) load is spread in proportion to health, and a level whose health is below
//! the panic threshold balances over all its hosts, healthy or not.

/// One priority level's host counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelHealth {
    pub healthy: u32,
    pub total: u32,
}

/// The share of requests (percent) each level takes, and whether it is in panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityLoad {
    pub percent: Vec<u32>,
    pub panic: Vec<bool>,
}

/// Envoy's default overprovisioning factor (1.4), in percent.
pub const DEFAULT_OVERPROVISIONING: u32 = 140;
/// Envoy's default panic threshold.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;

/// A level's health in percent: healthy share × overprovisioning factor, at most 100.
pub fn level_health(level: LevelHealth, overprovisioning: u32) -> u32 {
    if level.total == 0 {
        return 0;
    }
    let scaled = u64::from(level.healthy) * u64::from(overprovisioning) / u64::from(level.total);
    scaled.min(100) as u32
}

/// Spreads 100 % of the load over `levels` (priority 0 first).
pub fn priority_load(
    levels: &[LevelHealth],
    overprovisioning: u32,
    panic_threshold: f64,
) -> PriorityLoad {
    let n = levels.len();
    let mut percent = vec![0; n];
    let mut panic = vec![false; n];
    if n == 0 {
        return PriorityLoad { percent, panic };
    }
    let health: Vec<u32> = levels
        .iter()
        .map(|l| level_health(*l, overprovisioning))
        .collect();
    let total: u32 = health.iter().sum::<u32>().min(100);
    if total == 0 {
        // Nothing healthy anywhere: the first level with hosts takes everything, in panic.
        let first = levels.iter().position(|l| l.total > 0).unwrap_or(0);
        percent[first] = 100;
        panic[first] = true;
        return PriorityLoad { percent, panic };
    }
    if total == 100 {
        let mut left = 100;
        for (i, h) in health.iter().enumerate() {
            let take = (*h).min(left);
            percent[i] = take;
            left -= take;
        }
        return PriorityLoad { percent, panic };
    }
    // Not enough health in all levels together: in proportion to health, remainder to the first
    // level that has any.
    let mut placed = 0;
    for (i, h) in health.iter().enumerate() {
        percent[i] = h * 100 / total;
        placed += percent[i];
        let level = levels[i];
        let healthy_percent = if level.total == 0 {
            0.0
        } else {
            f64::from(level.healthy) * 100.0 / f64::from(level.total)
        };
        panic[i] = level.total > 0 && healthy_percent < panic_threshold;
    }
    if let Some(first) = health.iter().position(|h| *h > 0) {
        percent[first] += 100 - placed;
    }
    PriorityLoad { percent, panic }
}

/// Picks the level for a request given a uniform number in `0..100`.
pub fn choose_level(load: &PriorityLoad, roll: u32) -> usize {
    let mut acc = 0;
    for (i, p) in load.percent.iter().enumerate() {
        acc += p;
        if roll < acc {
            return i;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(healthy: u32, total: u32) -> LevelHealth {
        LevelHealth { healthy, total }
    }

    #[test]
    fn a_healthy_first_level_takes_everything() {
        let l = priority_load(&[lv(4, 4), lv(4, 4)], 140, 50.0);
        assert_eq!(l.percent, vec![100, 0]);
        assert_eq!(l.panic, vec![false, false]);
    }

    #[test]
    fn overprovisioning_keeps_load_until_health_drops_below_71_percent() {
        // 3 of 4 healthy: 75 % × 1.4 = 105 → still 100.
        assert_eq!(
            priority_load(&[lv(3, 4), lv(4, 4)], 140, 50.0).percent,
            vec![100, 0]
        );
        // 2 of 4: 50 % × 1.4 = 70 → 30 % spills to priority 1 (Envoy's documented example).
        assert_eq!(
            priority_load(&[lv(2, 4), lv(4, 4)], 140, 50.0).percent,
            vec![70, 30]
        );
        // Without overprovisioning, health maps one to one.
        assert_eq!(
            priority_load(&[lv(2, 4), lv(4, 4)], 100, 50.0).percent,
            vec![50, 50]
        );
    }

    #[test]
    fn levels_fill_in_order() {
        let l = priority_load(&[lv(1, 4), lv(1, 4), lv(4, 4)], 140, 50.0);
        assert_eq!(l.percent, vec![35, 35, 30]);
    }

    #[test]
    fn too_little_health_is_spread_in_proportion_and_weak_levels_panic() {
        // 35 + 35 = 70 < 100: normalized to 50/50; both levels below 50 % healthy panic.
        let l = priority_load(&[lv(1, 4), lv(1, 4)], 140, 50.0);
        assert_eq!(l.percent, vec![50, 50]);
        assert_eq!(l.panic, vec![true, true]);
        // One level fully healthy but small share: 20 % vs 0 %.
        let l = priority_load(&[lv(0, 4), lv(1, 7)], 140, 50.0);
        assert_eq!(l.percent, vec![0, 100]);
        assert_eq!(l.panic, vec![true, true]);
    }

    #[test]
    fn nothing_healthy_means_panic_in_the_first_level() {
        let l = priority_load(&[lv(0, 0), lv(0, 3)], 140, 50.0);
        assert_eq!(l.percent, vec![0, 100]);
        assert_eq!(l.panic, vec![false, true]);
    }

    #[test]
    fn choosing_follows_the_percentages() {
        let l = PriorityLoad {
            percent: vec![70, 30],
            panic: vec![false, false],
        };
        assert_eq!(choose_level(&l, 0), 0);
        assert_eq!(choose_level(&l, 69), 0);
        assert_eq!(choose_level(&l, 70), 1);
        assert_eq!(choose_level(&l, 99), 1);
    }
}
