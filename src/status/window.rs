//! Shares over the last five minutes, in a fixed ring of ten-second buckets.
//!
//! O(1) memory for the whole agent: the ring is fed deltas of agent-wide totals, so
//! nothing is kept per miner.

/// Width of one bucket.
pub const BUCKET_SECONDS: u64 = 10;
/// Buckets in the ring: 30 × 10 s = 5 minutes.
pub const BUCKETS: usize = 30;
/// The span the window covers once the agent has run that long.
pub const WINDOW_SECONDS: u64 = BUCKET_SECONDS * BUCKETS as u64;

/// Share counters; also used for running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShareCount {
    pub accepted: u64,
    pub rejected: u64,
    /// Sum of the difficulty of the accepted shares, for the hashrate estimate.
    pub difficulty: f64,
}

impl ShareCount {
    pub fn add(&mut self, other: ShareCount) {
        self.accepted = self.accepted.saturating_add(other.accepted);
        self.rejected = self.rejected.saturating_add(other.rejected);
        self.difficulty += other.difficulty;
    }

    /// What happened since `earlier`; never negative, so a counter that went back
    /// (it cannot today, but a miner's counters are only u32) adds nothing.
    pub fn since(self, earlier: ShareCount) -> ShareCount {
        ShareCount {
            accepted: self.accepted.saturating_sub(earlier.accepted),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            difficulty: (self.difficulty - earlier.difficulty).max(0.0),
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Which ten seconds of the agent's life this bucket holds (seconds / 10).
    slot: u64,
    count: ShareCount,
}

pub struct ShareWindow {
    buckets: [Bucket; BUCKETS],
}

impl Default for ShareWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ShareWindow {
    pub fn new() -> ShareWindow {
        ShareWindow {
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// Adds shares seen at `now` (seconds since the agent started).
    pub fn add(&mut self, now: u64, delta: ShareCount) {
        let slot = now / BUCKET_SECONDS;
        let bucket = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if bucket.slot != slot {
            // The bucket still holds a slot five minutes old (or more): start it over.
            *bucket = Bucket {
                slot,
                count: ShareCount::default(),
            };
        }
        bucket.count.add(delta);
    }

    /// The shares of the last five minutes as of `now`.
    pub fn sum(&self, now: u64) -> ShareCount {
        let slot = now / BUCKET_SECONDS;
        let mut total = ShareCount::default();
        for b in &self.buckets {
            if b.slot <= slot && slot - b.slot < BUCKETS as u64 {
                total.add(b.count);
            }
        }
        total
    }
}

/// Seconds the window covers at `uptime`: less than five minutes early on, never 0.
pub fn span_seconds(uptime: u64) -> u64 {
    uptime.clamp(1, WINDOW_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(accepted: u64, rejected: u64) -> ShareCount {
        ShareCount {
            accepted,
            rejected,
            difficulty: accepted as f64 * 2.0,
        }
    }

    #[test]
    fn sums_what_was_added_within_five_minutes() {
        let mut w = ShareWindow::new();
        w.add(0, shares(1, 0));
        w.add(5, shares(2, 1));
        w.add(150, shares(4, 0));
        assert_eq!(w.sum(150), shares(7, 1));
        // At 299 s the first bucket (0..10 s) is still inside the window.
        assert_eq!(w.sum(299), shares(7, 1));
    }

    #[test]
    fn old_buckets_fall_out() {
        let mut w = ShareWindow::new();
        w.add(0, shares(1, 0));
        w.add(150, shares(4, 0));
        assert_eq!(w.sum(300), shares(4, 0));
        assert_eq!(w.sum(449), shares(4, 0));
        assert_eq!(w.sum(450), ShareCount::default());
    }

    #[test]
    fn a_reused_bucket_starts_from_zero() {
        let mut w = ShareWindow::new();
        w.add(3, shares(5, 5));
        // 303 s maps to the same ring position as 3 s.
        w.add(303, shares(1, 0));
        assert_eq!(w.sum(303), shares(1, 0));
    }

    #[test]
    fn a_long_idle_gap_forgets_everything() {
        let mut w = ShareWindow::new();
        for t in (0..300).step_by(10) {
            w.add(t, shares(1, 0));
        }
        assert_eq!(w.sum(299).accepted, 30);
        assert_eq!(w.sum(10_000), ShareCount::default());
    }

    #[test]
    fn since_never_goes_negative() {
        let now = shares(1, 0);
        let earlier = shares(3, 2);
        assert_eq!(now.since(earlier), ShareCount::default());
        assert_eq!(shares(5, 2).since(shares(3, 1)), shares(2, 1));
    }

    #[test]
    fn span_is_uptime_capped_at_five_minutes() {
        assert_eq!(span_seconds(0), 1);
        assert_eq!(span_seconds(42), 42);
        assert_eq!(span_seconds(86_400), 300);
    }
}
