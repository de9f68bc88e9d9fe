//! A fixed-size latency histogram in microseconds: exact below 32 us, then sixteen
//! buckets per power of two (at most 6.25% error, fine enough to read a fan-out
//! against its floor), so memory never grows.

#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

const LINEAR: u64 = 16;
/// Buckets per power of two above [`LINEAR`].
const PER_OCTAVE: u64 = 16;
const BUCKETS: usize = 16 + 60 * PER_OCTAVE as usize;

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
    let sub = (us >> (exp - 4)) & (PER_OCTAVE - 1);
    (LINEAR + (exp - 4) * PER_OCTAVE + sub) as usize
}

/// Lowest value that falls in bucket `index`.
fn bucket_floor(index: usize) -> u64 {
    if (index as u64) < LINEAR {
        return index as u64;
    }
    let exp = (index as u64 - LINEAR) / PER_OCTAVE + 4;
    let sub = (index as u64 - LINEAR) % PER_OCTAVE;
    (1 << exp) + (sub << (exp - 4))
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

    /// The histogram as JSON, so a swarm in another process can hand it over.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "buckets": self.buckets,
            "count": self.count,
            "sum_us": self.sum_us,
            "max_us": self.max_us,
        })
    }

    /// The inverse of [`Histogram::to_json`]; `None` when the shape is wrong.
    pub fn from_json(value: &serde_json::Value) -> Option<Histogram> {
        let buckets: Vec<u64> = value["buckets"]
            .as_array()?
            .iter()
            .map(|b| b.as_u64())
            .collect::<Option<_>>()?;
        if buckets.len() != BUCKETS {
            return None;
        }
        Some(Histogram {
            buckets,
            count: value["count"].as_u64()?,
            sum_us: value["sum_us"].as_u64()?,
            max_us: value["max_us"].as_u64()?,
        })
    }

    /// What was recorded after `earlier` (a snapshot of this same histogram): a
    /// measuring window. The maximum is exact when it was set inside the window,
    /// otherwise it is the upper end of the highest bucket the window touched.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .map(|(now, then)| now.saturating_sub(*then))
            .collect();
        let max_us = if self.max_us > earlier.max_us {
            self.max_us
        } else {
            match buckets.iter().rposition(|n| *n > 0) {
                Some(top) if top + 1 < BUCKETS => (bucket_floor(top + 1) - 1).min(self.max_us),
                Some(_) => self.max_us,
                None => 0,
            }
        };
        Histogram {
            buckets,
            count: self.count.saturating_sub(earlier.count),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
            max_us,
        }
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
            assert!(us - bucket_floor(index) <= us / 16, "{us}");
            assert!(bucket_floor(index + 1) > us, "{us}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        for index in 1..BUCKETS {
            assert!(bucket_floor(index) > bucket_floor(index - 1), "{index}");
            assert_eq!(bucket_of(bucket_floor(index)), index);
        }
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
        assert!((470..=500).contains(&p50), "{p50}");
        assert!((960..=990).contains(&h.percentile_us(99.0)));
        assert_eq!(Histogram::default().percentile_us(50.0), 0);
    }
    #[test]
    fn json_round_trip_and_window() {
        let mut h = Histogram::default();
        for us in [5, 100, 2000] {
            h.record(us);
        }
        let back = Histogram::from_json(&h.to_json()).unwrap();
        assert_eq!(back.summary(), h.summary());
        assert!(Histogram::from_json(&serde_json::json!({"buckets": [1]})).is_none());

        let earlier = h.clone();
        h.record(50);
        h.record(60);
        let window = h.since(&earlier);
        assert_eq!(window.count(), 2);
        assert!((48..=60).contains(&window.percentile_us(99.0)));
        assert!((60..2000).contains(&window.max_us()), "{}", window.max_us());
        h.record(9000);
        assert_eq!(h.since(&earlier).max_us(), 9000);
        assert_eq!(earlier.since(&earlier).max_us(), 0);
    }
}
