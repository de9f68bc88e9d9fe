//! A fixed-size latency histogram in microseconds: exact below 16 us, then four
//! buckets per power of two (at most 25% error), so memory never grows.

#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

const LINEAR: u64 = 16;
const BUCKETS: usize = 16 + 60 * 4;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; BUCKETS],
            count: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() as u64; // >= 4
    let sub = (us >> (exp - 2)) & 3;
    (16 + (exp - 4) * 4 + sub) as usize
}

/// Lowest value that falls in bucket `index`.
fn bucket_floor(index: usize) -> u64 {
    if (index as u64) < LINEAR {
        return index as u64;
    }
    let exp = (index as u64 - 16) / 4 + 4;
    let sub = (index as u64 - 16) % 4;
    (1 << exp) + (sub << (exp - 2))
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        let index = bucket_of(us).min(BUCKETS - 1);
        self.buckets[index] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    pub fn mean_us(&self) -> u64 {
        self.sum_us.checked_div(self.count).unwrap_or(0)
    }

    /// The `p`-th percentile (0.0..=100.0), rounded down to its bucket's floor.
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_floor(index).min(self.max_us);
            }
        }
        self.max_us
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// "n=.. p50=..us p99=..us max=..us"
    pub fn summary(&self) -> String {
        format!(
            "n={} p50={}us p90={}us p99={}us max={}us",
            self.count,
            self.percentile_us(50.0),
            self.percentile_us(90.0),
            self.percentile_us(99.0),
            self.max_us
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        for us in [0u64, 1, 15, 16, 17, 31, 32, 1000, 123_456, u64::MAX / 2] {
            let index = bucket_of(us);
            assert!(bucket_floor(index) <= us, "{us}");
            assert!(us - bucket_floor(index) <= us / 4, "{us}");
        }
        assert!(bucket_of(u64::MAX) >= BUCKETS - 4);
    }

    #[test]
    fn percentiles() {
        let mut h = Histogram::default();
        for us in 1..=1000 {
            h.record(us);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max_us(), 1000);
        let p50 = h.percentile_us(50.0);
        assert!((384..=500).contains(&p50), "{p50}");
        assert!(h.percentile_us(99.0) >= 768);
        assert_eq!(Histogram::default().percentile_us(50.0), 0);
    }
}
