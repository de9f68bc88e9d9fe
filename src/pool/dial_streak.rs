//! Which failed pool dials are worth a log line.
//!
//! Every connection slot of every sub-account walks the pool list and backs off, so an
//! unreachable pool fails dozens of dials a minute; on a router the log is RAM
//! (`logread`). A pool gets one line when a failure streak starts (with the reason), a
//! reminder with the count at widening intervals while it lasts, and one line when a
//! dial succeeds again. Pure bookkeeping: the caller gives the time and logs the lines.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The first reminder of a streak; each next one waits twice as long, up to
/// [`MAX_REMIND_AFTER`].
pub const FIRST_REMIND_AFTER: Duration = Duration::from_secs(5 * 60);
pub const MAX_REMIND_AFTER: Duration = Duration::from_secs(60 * 60);
/// Streaks kept at once. Sub-accounts come from miners' logins, so their number is
/// not the config's to bound; past this the oldest streak is forgotten (its next
/// failure starts a new streak, with a line).
pub const MAX_STREAKS: usize = 256;

struct Streak {
    started: Instant,
    failures: u64,
    next_remind: Instant,
    remind_after: Duration,
}

/// Failure streaks by pool label (`pool host:port (sub-account)`).
#[derive(Default)]
pub struct DialStreaks {
    streaks: HashMap<String, Streak>,
}

impl DialStreaks {
    pub fn new() -> DialStreaks {
        DialStreaks::default()
    }

    /// A dial of `pool` failed for `reason`: the line to log, if any.
    pub fn failed(&mut self, pool: &str, reason: &str, now: Instant) -> Option<String> {
        if let Some(streak) = self.streaks.get_mut(pool) {
            streak.failures += 1;
            if now < streak.next_remind {
                return None;
            }
            streak.remind_after = (streak.remind_after * 2).min(MAX_REMIND_AFTER);
            streak.next_remind = now + streak.remind_after;
            return Some(format!(
                "{pool}: still failing: {} failed dials in {}; last: {reason}",
                streak.failures,
                span(now.saturating_duration_since(streak.started))
            ));
        }
        if self.streaks.len() >= MAX_STREAKS {
            let oldest = self
                .streaks
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| k.clone());
            if let Some(key) = oldest {
                self.streaks.remove(&key);
            }
        }
        self.streaks.insert(
            pool.to_string(),
            Streak {
                started: now,
                failures: 1,
                next_remind: now + FIRST_REMIND_AFTER,
                remind_after: FIRST_REMIND_AFTER,
            },
        );
        Some(format!(
            "{pool}: {reason} (retrying; further failures are counted, not logged)"
        ))
    }

    /// A dial of `pool` succeeded: the line to log when it ends a streak.
    pub fn connected(&mut self, pool: &str, now: Instant) -> Option<String> {
        let streak = self.streaks.remove(pool)?;
        let dials = match streak.failures {
            1 => "1 failed dial".to_string(),
            n => format!("{n} failed dials"),
        };
        Some(format!(
            "{pool}: reachable again after {dials} in {}",
            span(now.saturating_duration_since(streak.started))
        ))
    }

    /// Streaks now running.
    pub fn len(&self) -> usize {
        self.streaks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streaks.is_empty()
    }
}

/// `42 s`, `5 min`, `2 h 5 min`: a streak's length for people.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = "pool us.ss.btc.com:1800 (sub1)";

    #[test]
    fn one_line_per_streak_then_one_when_back() {
        let mut streaks = DialStreaks::new();
        let t0 = Instant::now();
        let first = streaks.failed(POOL, "cannot connect: direct: connection refused", t0);
        assert_eq!(
            first.as_deref(),
            Some("pool us.ss.btc.com:1800 (sub1): cannot connect: direct: connection refused (retrying; further failures are counted, not logged)")
        );
        // Five slots, backing off: many more failures within the first minutes, silent.
        for i in 1..150u64 {
            let at = t0 + Duration::from_secs(i);
            assert_eq!(streaks.failed(POOL, "cannot connect: timeout", at), None);
        }
        assert_eq!(
            streaks
                .connected(POOL, t0 + Duration::from_secs(150))
                .as_deref(),
            Some("pool us.ss.btc.com:1800 (sub1): reachable again after 150 failed dials in 2 min")
        );
        assert!(streaks.is_empty());
        // A success without a streak says nothing; the next failure starts a new streak.
        assert_eq!(streaks.connected(POOL, t0), None);
        assert!(streaks.failed(POOL, "x", t0).is_some());
        assert_eq!(
            streaks
                .connected(POOL, t0 + Duration::from_secs(3))
                .as_deref(),
            Some("pool us.ss.btc.com:1800 (sub1): reachable again after 1 failed dial in 3 s")
        );
    }

    #[test]
    fn long_streaks_are_reminded_with_the_count_at_widening_intervals() {
        let mut streaks = DialStreaks::new();
        let t0 = Instant::now();
        let mut lines = Vec::new();
        // One failure a second for five hours.
        for s in 0..5 * 3600u64 {
            if let Some(line) = streaks.failed(POOL, "why", t0 + Duration::from_secs(s)) {
                lines.push((s, line));
            }
        }
        let at: Vec<u64> = lines.iter().map(|(s, _)| *s).collect();
        // 5 min, then +10, +20, +40 min, then hourly.
        assert_eq!(at, [0, 300, 900, 2100, 4500, 8100, 11700, 15300]);
        assert_eq!(
            lines[1].1,
            "pool us.ss.btc.com:1800 (sub1): still failing: 301 failed dials in 5 min; last: why"
        );
        assert_eq!(
            lines[5].1,
            "pool us.ss.btc.com:1800 (sub1): still failing: 8101 failed dials in 2 h 15 min; last: why"
        );
    }

    #[test]
    fn pools_have_their_own_streaks() {
        let mut streaks = DialStreaks::new();
        let t0 = Instant::now();
        assert!(streaks.failed("pool a:1 (s)", "x", t0).is_some());
        assert!(streaks.failed("pool b:1 (s)", "x", t0).is_some());
        assert!(streaks.failed("pool a:1 (t)", "x", t0).is_some());
        assert!(streaks.failed("pool a:1 (s)", "x", t0).is_none());
        assert!(streaks.connected("pool b:1 (s)", t0).is_some());
        assert!(streaks.failed("pool a:1 (s)", "x", t0).is_none());
        assert_eq!(streaks.len(), 2);
    }

    #[test]
    fn streaks_are_bounded_and_the_oldest_goes_first() {
        let mut streaks = DialStreaks::new();
        let t0 = Instant::now();
        for i in 0..MAX_STREAKS as u64 + 10 {
            let at = t0 + Duration::from_secs(i);
            assert!(streaks
                .failed(&format!("pool p:1 (s{i})"), "x", at)
                .is_some());
        }
        assert_eq!(streaks.len(), MAX_STREAKS);
        // The ten oldest were forgotten: their next failure is a new streak, with a line.
        assert!(streaks.failed("pool p:1 (s0)", "x", t0).is_some());
        assert!(streaks
            .failed(&format!("pool p:1 (s{})", MAX_STREAKS + 9), "x", t0)
            .is_none());
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(Duration::from_millis(400)), "0 s");
        assert_eq!(span(Duration::from_secs(59)), "59 s");
        assert_eq!(span(Duration::from_secs(61)), "1 min");
        assert_eq!(span(Duration::from_secs(3600 * 26 + 60 * 7)), "26 h 7 min");
    }
}
