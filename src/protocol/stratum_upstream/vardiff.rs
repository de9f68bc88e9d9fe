//! Each miner's own difficulty behind a plain Stratum pool: a vardiff that aims at a
//! share interval, moves in powers of two, and stays between a floor and the pool's
//! difficulty (the ceiling: above it, shares the pool would credit would be lost).
//! Pure: share times in, difficulty out; the caller owns the clock.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VardiffConfig {
    /// Seconds between a miner's shares aimed at.
    pub share_interval: f64,
    /// Retarget once this many shares arrived since the last retarget...
    pub retarget_shares: u32,
    /// ...or this long passed, whichever comes first (a quiet miner is lowered then).
    pub retarget_after: Duration,
}

impl VardiffConfig {
    /// One share every `share_interval` seconds; retarget after 16 shares (a rate
    /// known to within a quarter), or after twice the time 16 shares should take (at
    /// least a minute): the time limit only catches miners at half their rate or
    /// less, since a window of a few shares would swing a settled miner.
    pub fn for_interval(share_interval: f64) -> VardiffConfig {
        let interval = if share_interval.is_finite() && share_interval > 0.0 {
            share_interval
        } else {
            10.0
        };
        VardiffConfig {
            share_interval: interval,
            retarget_shares: 16,
            retarget_after: Duration::from_secs_f64((32.0 * interval).max(60.0)),
        }
    }
}

/// Estimates within this factor of the current difficulty leave it alone: 16 shares
/// give the rate to within a quarter, so a narrower band would flap between the two
/// powers of two around a miner's optimum.
const HYSTERESIS: f64 = 2.0;
/// Estimates beyond this factor jump straight to the estimate; nearer ones move one
/// power of two at a time, so noise never swings a settled miner by 4x.
const JUMP: f64 = 4.0;
/// A quiet window (no share at all) divides the difficulty by this.
const QUIET_STEP: f64 = 4.0;

/// What is the same for every miner of one connection: the aim, the floor, and the
/// pool's difficulty as the ceiling. Kept once per connection, not per miner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VardiffRules {
    pub config: VardiffConfig,
    pub floor: f64,
    pub ceiling: f64,
}

impl VardiffRules {
    fn clamp(&self, d: f64) -> f64 {
        let d = if d.is_finite() && d > 0.0 {
            d
        } else {
            self.floor
        };
        d.max(self.floor).min(self.ceiling)
    }
}

/// One miner's vardiff state: 40 bytes, the rules apart.
#[derive(Clone, Debug)]
pub struct Vardiff {
    difficulty: f64,
    window_start: Instant,
    shares: u32,
    /// Sum of the difficulties the window's shares were credited at.
    work: f64,
}

/// The nearest power of two (2^k, k an integer) to `x > 0`.
fn nearest_power_of_two(x: f64) -> f64 {
    2f64.powi(x.log2().round() as i32)
}

impl Vardiff {
    /// Starts at `start` within the rules' `[floor, ceiling]` (the ceiling wins).
    pub fn new(rules: &VardiffRules, start: f64, now: Instant) -> Vardiff {
        Vardiff {
            difficulty: rules.clamp(start),
            window_start: now,
            shares: 0,
            work: 0.0,
        }
    }

    pub fn difficulty(&self) -> f64 {
        self.difficulty
    }

    fn restart(&mut self, now: Instant) {
        self.window_start = now;
        self.shares = 0;
        self.work = 0.0;
    }

    fn change_to(&mut self, rules: &VardiffRules, d: f64, now: Instant) -> Option<f64> {
        let d = rules.clamp(d);
        self.restart(now);
        if d == self.difficulty {
            return None;
        }
        self.difficulty = d;
        Some(d)
    }

    /// A share that met the miner's target arrived; `credited` is the difficulty it
    /// was judged at (the previous one, just after a change). Returns the new
    /// difficulty when it changes.
    pub fn on_share(&mut self, rules: &VardiffRules, now: Instant, credited: f64) -> Option<f64> {
        let config = &rules.config;
        self.shares = self.shares.saturating_add(1);
        if credited.is_finite() && credited > 0.0 {
            self.work += credited;
        }
        let elapsed = now.saturating_duration_since(self.window_start);
        if self.shares < config.retarget_shares && elapsed < config.retarget_after {
            return None;
        }
        let seconds = elapsed.as_secs_f64().max(1e-3);
        // The window starts at a share and ends at one: counting all but the last
        // share's work makes the rate estimate unbiased (n/T would run n/(n-1) high).
        let counted = if self.shares > 1 {
            self.work - credited.max(0.0)
        } else {
            self.work
        };
        // Difficulty-1 shares per second stand for the hashrate (x 2^32 hashes).
        let optimal = counted.max(0.0) / seconds * config.share_interval;
        let ratio = optimal / self.difficulty;
        let next = if !(1.0 / JUMP..=JUMP).contains(&ratio) {
            // Far off (a start that did not fit): straight to the estimate.
            nearest_power_of_two(optimal)
        } else if ratio > HYSTERESIS {
            self.difficulty * 2.0
        } else if ratio < 1.0 / HYSTERESIS {
            self.difficulty / 2.0
        } else {
            self.restart(now);
            return None;
        };
        self.change_to(rules, next, now)
    }

    /// Called now and then: a miner with no share in a whole retarget window is
    /// lowered, so a slow miner started too high still gets to show its hashrate.
    pub fn on_tick(&mut self, rules: &VardiffRules, now: Instant) -> Option<f64> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if self.shares > 0 || elapsed < rules.config.retarget_after {
            return None;
        }
        self.change_to(rules, self.difficulty / QUIET_STEP, now)
    }

    /// The rules changed (the pool changed its difficulty: it is the new ceiling).
    /// Returns the new difficulty when the current one falls outside them.
    pub fn follow(&mut self, rules: &VardiffRules, now: Instant) -> Option<f64> {
        let d = rules.clamp(self.difficulty);
        if d == self.difficulty {
            return None;
        }
        self.change_to(rules, d, now)
    }
}

/// Where a miner starts: the configured start difficulty, but never above the pool's
/// (its shares would be lost) nor below the floor.
pub fn start_difficulty(configured: f64, floor: f64, pool: f64) -> f64 {
    configured.max(floor).min(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Difficulty-1 shares per second of a miner hashing `hashes_per_second`.
    fn rate(hashes_per_second: f64) -> f64 {
        hashes_per_second / 4_294_967_296.0
    }

    /// Runs a miner of `rate` diff-1 shares/s for `seconds`, with exponential share
    /// gaps from a fixed-seed generator; returns the difficulties it was given.
    fn run(v: &mut Vardiff, rules: &VardiffRules, rate: f64, seconds: f64, seed: u64) -> Vec<f64> {
        let t0 = Instant::now();
        let mut t = 0.0;
        let mut state = seed;
        let mut seen = vec![v.difficulty()];
        let mut next_tick = 1.0;
        loop {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let gap = -u.ln() * v.difficulty() / rate;
            // Quiet periods are seen by the ticks the session runs every second.
            while next_tick < t + gap && next_tick < seconds {
                if let Some(d) = v.on_tick(rules, t0 + Duration::from_secs_f64(next_tick)) {
                    seen.push(d);
                }
                next_tick += 1.0;
            }
            t += gap;
            if t >= seconds {
                return seen;
            }
            let credited = v.difficulty();
            if let Some(d) = v.on_share(rules, t0 + Duration::from_secs_f64(t), credited) {
                seen.push(d);
            }
        }
    }

    #[test]
    fn converges_to_the_share_interval_and_stays() {
        let config = VardiffConfig::for_interval(10.0);
        let miners = [100e12, 200e12, 1e12, 13.5e12, 500e9];
        for (hashrate, seed) in miners.iter().flat_map(|&h| (1..=6).map(move |s| (h, s))) {
            let rules = VardiffRules {
                config,
                floor: 1.0,
                ceiling: 1e12,
            };
            let mut v = Vardiff::new(&rules, 1024.0, Instant::now());
            let seen = run(&mut v, &rules, rate(hashrate), 3600.0, seed);
            let optimal = rate(hashrate) * 10.0;
            let settled = v.difficulty();
            assert!(
                settled / optimal < 2.0 && optimal / settled < 2.0,
                "{hashrate}: settled at {settled}, optimal {optimal} ({seen:?})"
            );
            // Settled within a few retargets, then a few changes at most in an hour.
            assert!(seen.len() < 12, "{hashrate}: flapping {seen:?}");
            assert!(seen.iter().skip(1).all(|d| d.log2().fract() == 0.0));
        }
    }

    #[test]
    fn never_above_the_pool() {
        let config = VardiffConfig::for_interval(10.0);
        let mut rules = VardiffRules {
            config,
            floor: 1.0,
            ceiling: 65536.0,
        };
        let mut v = Vardiff::new(&rules, 1024.0, Instant::now());
        let seen = run(&mut v, &rules, rate(100e12), 600.0, 7);
        assert!(seen.iter().all(|&d| d <= 65536.0), "{seen:?}");
        assert_eq!(v.difficulty(), 65536.0);
        // The pool lowers its difficulty: the miner follows at once.
        let now = Instant::now();
        rules.ceiling = 4000.0;
        assert_eq!(v.follow(&rules, now), Some(4000.0));
        assert_eq!(
            {
                rules.ceiling = 8000.0;
                v.follow(&rules, now)
            },
            None,
            "raising the ceiling changes nothing yet"
        );
        // A start above the pool starts at the pool.
        let rules = VardiffRules {
            config,
            floor: 1.0,
            ceiling: 1e6,
        };
        let v = Vardiff::new(&rules, 1e9, now);
        assert_eq!(v.difficulty(), 1e6);
        assert_eq!(start_difficulty(16384.0, 1.0, 512.0), 512.0);
        assert_eq!(start_difficulty(16384.0, 1.0, 1e9), 16384.0);
        assert_eq!(start_difficulty(0.5, 1.0, 1e9), 1.0);
    }

    #[test]
    fn quiet_miners_are_lowered_down_to_the_floor() {
        let config = VardiffConfig::for_interval(10.0);
        let t0 = Instant::now();
        let rules = VardiffRules {
            config,
            floor: 64.0,
            ceiling: 1e9,
        };
        let mut v = Vardiff::new(&rules, 1024.0, t0);
        assert_eq!(v.on_tick(&rules, t0 + Duration::from_secs(319)), None);
        assert_eq!(
            v.on_tick(&rules, t0 + Duration::from_secs(320)),
            Some(256.0)
        );
        assert_eq!(
            v.on_tick(&rules, t0 + Duration::from_secs(400)),
            None,
            "a new window"
        );
        assert_eq!(v.on_tick(&rules, t0 + Duration::from_secs(640)), Some(64.0));
        assert_eq!(
            v.on_tick(&rules, t0 + Duration::from_secs(960)),
            None,
            "at the floor"
        );
        // A share in the window stops the quiet step.
        let rules = VardiffRules {
            config,
            floor: 1.0,
            ceiling: 1e9,
        };
        let mut v = Vardiff::new(&rules, 1024.0, t0);
        assert_eq!(
            v.on_share(&rules, t0 + Duration::from_secs(5), 1024.0),
            None
        );
        assert_eq!(v.on_tick(&rules, t0 + Duration::from_secs(321)), None);
    }

    #[test]
    fn retarget_steps_byte_exact() {
        let config = VardiffConfig::for_interval(10.0);
        let t0 = Instant::now();
        let rules = VardiffRules {
            config,
            floor: 1.0,
            ceiling: 1e12,
        };
        let mut v = Vardiff::new(&rules, 1024.0, t0);
        // 16 shares at 1024 in 16 s: 1024 diff-1/s, optimal 10240 -> 8192.
        for i in 1..16 {
            assert_eq!(
                v.on_share(&rules, t0 + Duration::from_secs(i), 1024.0),
                None
            );
        }
        assert_eq!(
            v.on_share(&rules, t0 + Duration::from_secs(16), 1024.0),
            Some(8192.0)
        );
        // A share still credited at 1024 counts at 1024; 16 at the right pace keep it.
        let t1 = t0 + Duration::from_secs(16);
        for i in 1..=16u64 {
            assert_eq!(
                v.on_share(&rules, t1 + Duration::from_millis(8000 * i), 8192.0),
                None
            );
        }
        assert_eq!(v.difficulty(), 8192.0);
        // Bad inputs (a zero or NaN credit) are not work.
        let rules = VardiffRules {
            config,
            floor: 1.0,
            ceiling: 1e12,
        };
        let mut v = Vardiff::new(&rules, 1024.0, t0);
        for i in 1..=16 {
            let _ = v.on_share(&rules, t0 + Duration::from_secs(i), f64::NAN);
        }
        assert!(v.difficulty() >= 1.0);
        assert!(VardiffConfig::for_interval(f64::NAN).share_interval == 10.0);
    }
}
