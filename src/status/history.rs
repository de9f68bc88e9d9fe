//! What the farm did over the last day, in memory fixed by design: share rings for the
//! farm and each sub-account, the last pool connection events, the workers that went
//! offline. Fed by the agent side with plain records; nothing here knows a session.
//!
//! Bounds: [`MINUTE_BUCKETS`] + [`TEN_MINUTE_BUCKETS`] buckets per series, at most
//! [`MAX_SUBACCOUNT_SERIES`] sub-account series, [`MAX_POOL_EVENTS`] events and
//! [`MAX_OFFLINE_WORKERS`] offline workers. Nothing grows with uptime.

use super::window::ShareCount;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// 1-minute buckets for the last hour.
pub const MINUTE_BUCKETS: usize = 60;
pub const MINUTE_SECONDS: u64 = 60;
/// 10-minute buckets for the last 24 hours.
pub const TEN_MINUTE_BUCKETS: usize = 144;
pub const TEN_MINUTE_SECONDS: u64 = 600;
/// Sub-accounts with their own series; shares of later ones count for the farm only.
/// A farm has a handful; a flood of made-up sub-account names must not cost memory.
pub const MAX_SUBACCOUNT_SERIES: usize = 32;
/// Pool connection events kept (the newest).
pub const MAX_POOL_EVENTS: usize = 256;
/// Offline workers kept (the newest departures).
pub const MAX_OFFLINE_WORKERS: usize = 1000;
/// A worker gone longer than this is forgotten.
pub const OFFLINE_KEEP_SECONDS: u64 = 86_400;
/// Longest event reason kept, in characters.
const MAX_REASON: usize = 200;
/// How far back a dial failure looks for the same one to count instead of adding.
const COALESCE_LOOKBACK: usize = 16;

/// Hashes per difficulty-1 share.
const HASHES_PER_DIFFICULTY: f64 = 4_294_967_296.0;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Bucket {
    /// Unix seconds at which the bucket starts; 0: never used.
    start: u64,
    accepted: u32,
    rejected: u32,
    /// Sum of the difficulty of the accepted shares.
    difficulty: f64,
}

/// A ring of `buckets.len()` buckets of `width` seconds, aligned to Unix time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ring {
    width: u64,
    buckets: Vec<Bucket>,
}

impl Ring {
    fn new(width: u64, n: usize) -> Ring {
        Ring {
            width,
            buckets: vec![Bucket::default(); n],
        }
    }

    fn add(&mut self, now: u64, delta: ShareCount) {
        let start = now - now % self.width;
        if start == 0 {
            return; // a clock at 1970: nothing sensible to keep
        }
        let n = self.buckets.len() as u64;
        let b = &mut self.buckets[((now / self.width) % n) as usize];
        if b.start != start {
            *b = Bucket {
                start,
                ..Bucket::default()
            };
        }
        b.accepted = b.accepted.saturating_add(clamp_u32(delta.accepted));
        b.rejected = b.rejected.saturating_add(clamp_u32(delta.rejected));
        if delta.difficulty.is_finite() && delta.difficulty > 0.0 {
            b.difficulty += delta.difficulty;
        }
    }

    /// The buckets within the ring's span as of `now`, oldest first. The newest one is
    /// still filling: its hashrate is over the seconds it covered so far.
    fn points(&self, now: u64) -> Vec<Point> {
        let span = self.width * self.buckets.len() as u64;
        let mut v: Vec<&Bucket> = self
            .buckets
            .iter()
            .filter(|b| b.start != 0 && b.start <= now && now - b.start < span)
            .collect();
        v.sort_by_key(|b| b.start);
        v.into_iter()
            .map(|b| {
                let covered = (now - b.start + 1).min(self.width);
                Point(
                    b.start,
                    b.accepted as u64,
                    b.rejected as u64,
                    hashrate(b.difficulty, covered as f64),
                )
            })
            .collect()
    }

    /// Fills the ring from points a previous run published at `published` (each
    /// hashrate taken back to difficulty over the seconds its bucket had covered then).
    fn restore(&mut self, points: &[Point], published: u64) {
        for p in points {
            let covered = published
                .saturating_sub(p.0)
                .saturating_add(1)
                .min(self.width);
            let delta = ShareCount {
                accepted: p.1,
                rejected: p.2,
                difficulty: p.3 * covered as f64 / HASHES_PER_DIFFICULTY,
            };
            if p.0 % self.width == 0 {
                self.add(p.0, delta);
            }
        }
    }
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn hashrate(difficulty: f64, seconds: f64) -> f64 {
    let h = difficulty * HASHES_PER_DIFFICULTY / seconds.max(1.0);
    if h.is_finite() && h > 0.0 {
        h
    } else {
        0.0
    }
}

/// One bucket as published: `[start, accepted, rejected, hashrate]` (Unix seconds,
/// shares, shares, hashes per second).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point(pub u64, pub u64, pub u64, pub f64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Series {
    minutes: Ring,
    ten_minutes: Ring,
}

impl Series {
    fn new() -> Series {
        Series {
            minutes: Ring::new(MINUTE_SECONDS, MINUTE_BUCKETS),
            ten_minutes: Ring::new(TEN_MINUTE_SECONDS, TEN_MINUTE_BUCKETS),
        }
    }

    fn add(&mut self, now: u64, delta: ShareCount) {
        self.minutes.add(now, delta);
        self.ten_minutes.add(now, delta);
    }
}

/// One resolution of the published history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistorySpan {
    pub bucket_seconds: u64,
    pub farm: Vec<Point>,
    /// By sub-account name.
    pub subaccounts: BTreeMap<String, Vec<Point>>,
}

/// The `history` member of the status document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryDoc {
    /// 1-minute buckets, the last hour.
    pub minutes: HistorySpan,
    /// 10-minute buckets, the last 24 hours.
    pub ten_minutes: HistorySpan,
}

/// A pool connection event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolEvent {
    /// Unix seconds.
    pub at: u64,
    /// "up", "down" (a connection that was up was lost) or "dial_failed".
    pub event: String,
    /// The connection's id; 0 for a dial that never made one.
    pub pool_id: u32,
    /// `host:port`.
    pub pool: String,
    pub subaccount: String,
    /// Why it went down or could not be dialled; "" for "up".
    pub reason: String,
    /// Identical dial failures in a row are counted in one event: how many, and when
    /// the last one was.
    pub count: u32,
    pub last_at: u64,
}

impl PoolEvent {
    pub fn new(
        at: u64,
        event: &str,
        pool_id: u32,
        pool: String,
        subaccount: String,
        reason: &str,
    ) -> PoolEvent {
        PoolEvent {
            at,
            event: event.to_string(),
            pool_id,
            pool,
            subaccount,
            reason: cut(reason, MAX_REASON),
            count: 1,
            last_at: at,
        }
    }
}

/// Events since the agent started, kept apart from the ring so they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolEventCounts {
    pub up: u64,
    pub down: u64,
    pub dial_failed: u64,
}

/// A worker seen in the last 24 hours that is not connected now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfflineWorker {
    pub worker: String,
    pub subaccount: String,
    pub ip: String,
    /// When it disconnected (Unix seconds).
    pub last_seen: u64,
    /// Its hashrate over its last connection, hashes per second.
    pub last_hashrate: f64,
    pub connected_seconds: u64,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        s.chars().take(max - 1).chain(['…']).collect()
    }
}

/// Everything a run keeps for the next one (the history file beside the status file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedHistory {
    /// When it was saved (Unix seconds).
    #[serde(default)]
    pub saved_at: u64,
    #[serde(default)]
    pub history: HistoryDoc,
    #[serde(default)]
    pub pool_events: Vec<PoolEvent>,
    #[serde(default)]
    pub offline_workers: Vec<OfflineWorker>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct History {
    farm: Series,
    subaccounts: BTreeMap<Box<str>, Series>,
    events: VecDeque<PoolEvent>,
    counts: PoolEventCounts,
    /// Oldest departure first.
    offline: VecDeque<OfflineWorker>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> History {
        History {
            farm: Series::new(),
            subaccounts: BTreeMap::new(),
            events: VecDeque::new(),
            counts: PoolEventCounts::default(),
            offline: VecDeque::new(),
        }
    }

    /// Shares of the whole farm at `now` (Unix seconds). Call at least once a minute
    /// while the agent runs, with zero if nothing happened: a bucket that exists says
    /// the agent was running, a missing one that it was not.
    pub fn add_farm(&mut self, now: u64, delta: ShareCount) {
        self.farm.add(now, delta);
    }

    /// Shares of one sub-account's miners at `now`.
    pub fn add_subaccount(&mut self, now: u64, name: &str, delta: ShareCount) {
        if let Some(s) = self.subaccounts.get_mut(name) {
            s.add(now, delta);
            return;
        }
        if self.subaccounts.len() >= MAX_SUBACCOUNT_SERIES {
            return;
        }
        let mut s = Series::new();
        s.add(now, delta);
        self.subaccounts.insert(name.into(), s);
    }

    pub fn pool_event(&mut self, e: PoolEvent) {
        match e.event.as_str() {
            "up" => self.counts.up += 1,
            "down" => self.counts.down += 1,
            _ => self.counts.dial_failed += 1,
        }
        if e.event == "dial_failed" {
            let same = self
                .events
                .iter_mut()
                .rev()
                .take(COALESCE_LOOKBACK)
                .find(|o| o.event == e.event && o.pool == e.pool && o.subaccount == e.subaccount);
            if let Some(o) = same {
                if o.reason == e.reason {
                    o.count = o.count.saturating_add(1);
                    o.last_at = e.at;
                    return;
                }
            }
        }
        if self.events.len() >= MAX_POOL_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    pub fn event_counts(&self) -> PoolEventCounts {
        self.counts
    }

    /// A worker that had logged in left.
    pub fn worker_left(&mut self, w: OfflineWorker) {
        self.offline
            .retain(|o| !(o.worker == w.worker && o.subaccount == w.subaccount));
        if self.offline.len() >= MAX_OFFLINE_WORKERS {
            self.offline.pop_front();
        }
        self.offline.push_back(w);
    }

    /// Drops the offline workers that are connected again (`connected` holds
    /// `(subaccount, worker)`) or gone longer than a day.
    pub fn prune_offline(&mut self, now: u64, connected: &HashSet<(&str, &str)>) {
        self.offline.retain(|o| {
            now.saturating_sub(o.last_seen) < OFFLINE_KEEP_SECONDS
                && !connected.contains(&(o.subaccount.as_str(), o.worker.as_str()))
        });
    }

    pub fn doc(&self, now: u64) -> HistoryDoc {
        let span = |pick: fn(&Series) -> &Ring, seconds| HistorySpan {
            bucket_seconds: seconds,
            farm: pick(&self.farm).points(now),
            subaccounts: self
                .subaccounts
                .iter()
                .map(|(name, s)| (name.to_string(), pick(s).points(now)))
                .filter(|(_, p)| !p.is_empty())
                .collect(),
        };
        HistoryDoc {
            minutes: span(|s| &s.minutes, MINUTE_SECONDS),
            ten_minutes: span(|s| &s.ten_minutes, TEN_MINUTE_SECONDS),
        }
    }

    /// Newest first.
    pub fn pool_events(&self) -> Vec<PoolEvent> {
        self.events.iter().rev().cloned().collect()
    }

    pub fn offline_names(&self) -> Vec<(String, String)> {
        self.offline
            .iter()
            .map(|o| (o.subaccount.clone(), o.worker.clone()))
            .collect()
    }

    /// Newest departure first.
    pub fn offline_workers(&self) -> Vec<OfflineWorker> {
        self.offline.iter().rev().cloned().collect()
    }

    /// What a previous run saved, taken into an empty history (within the bounds).
    pub fn restore(&mut self, saved: &SavedHistory) {
        for (span, pick) in [
            (
                &saved.history.minutes,
                (|s: &mut Series| &mut s.minutes) as fn(&mut Series) -> &mut Ring,
            ),
            (&saved.history.ten_minutes, |s: &mut Series| {
                &mut s.ten_minutes
            }),
        ] {
            pick(&mut self.farm).restore(&span.farm, saved.saved_at);
            for (name, points) in &span.subaccounts {
                if !self.subaccounts.contains_key(name.as_str())
                    && self.subaccounts.len() >= MAX_SUBACCOUNT_SERIES
                {
                    continue;
                }
                let s = self
                    .subaccounts
                    .entry(name.as_str().into())
                    .or_insert_with(Series::new);
                pick(s).restore(points, saved.saved_at);
            }
        }
        // Saved newest first; kept oldest first.
        for e in saved.pool_events.iter().take(MAX_POOL_EVENTS).rev() {
            let mut e = e.clone();
            e.reason = cut(&e.reason, MAX_REASON);
            self.events.push_back(e);
        }
        for w in saved.offline_workers.iter().take(MAX_OFFLINE_WORKERS).rev() {
            self.offline.push_back(w.clone());
        }
    }

    pub fn saved(&self, now: u64) -> SavedHistory {
        SavedHistory {
            saved_at: now,
            history: self.doc(now),
            pool_events: self.pool_events(),
            offline_workers: self.offline_workers(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_764_000_000; // a multiple of 600

    fn shares(accepted: u64, rejected: u64, difficulty: f64) -> ShareCount {
        ShareCount {
            accepted,
            rejected,
            difficulty,
        }
    }

    fn worker(name: &str, at: u64) -> OfflineWorker {
        OfflineWorker {
            worker: name.into(),
            subaccount: "farm1".into(),
            ip: "10.0.0.1".into(),
            last_seen: at,
            last_hashrate: 1e12,
            connected_seconds: 60,
            shares_accepted: 3,
            shares_rejected: 0,
        }
    }

    #[test]
    fn minute_buckets_cover_the_last_hour() {
        let mut h = History::new();
        h.add_farm(T0, shares(1, 0, 60.0));
        h.add_farm(T0 + 30, shares(2, 1, 0.0));
        h.add_farm(T0 + 60, shares(4, 0, 0.0));
        let doc = h.doc(T0 + 119);
        assert_eq!(doc.minutes.bucket_seconds, 60);
        assert_eq!(
            doc.minutes.farm,
            [
                Point(T0, 3, 1, 60.0 * HASHES_PER_DIFFICULTY / 60.0),
                Point(T0 + 60, 4, 0, 0.0)
            ]
        );
        // The 10-minute bucket holds all of it.
        assert_eq!(doc.ten_minutes.farm.len(), 1);
        assert_eq!(doc.ten_minutes.farm[0].1, 7);
        // An hour later the first minute has fallen out of the minute ring only.
        let doc = h.doc(T0 + 3600);
        assert_eq!(doc.minutes.farm, [Point(T0 + 60, 4, 0, 0.0)]);
        assert_eq!(h.doc(T0 + 86_399).ten_minutes.farm.len(), 1);
        assert!(h.doc(T0 + 86_400).ten_minutes.farm.is_empty());
    }

    #[test]
    fn a_bucket_still_filling_reads_its_rate_over_the_seconds_so_far() {
        let mut h = History::new();
        h.add_farm(T0, shares(1, 0, 10.0));
        let p = h.doc(T0 + 9).minutes.farm[0];
        assert_eq!(p.3, 10.0 * HASHES_PER_DIFFICULTY / 10.0);
    }

    #[test]
    fn a_reused_bucket_starts_from_zero() {
        let mut h = History::new();
        h.add_farm(T0, shares(5, 5, 1.0));
        h.add_farm(T0 + 3600, shares(1, 0, 0.0)); // same minute-ring slot
        assert_eq!(h.doc(T0 + 3600).minutes.farm, [Point(T0 + 3600, 1, 0, 0.0)]);
    }

    #[test]
    fn sub_account_series_are_bounded() {
        let mut h = History::new();
        for i in 0..MAX_SUBACCOUNT_SERIES + 10 {
            h.add_subaccount(T0, &format!("sub{i:03}"), shares(1, 0, 0.0));
        }
        let doc = h.doc(T0);
        assert_eq!(doc.minutes.subaccounts.len(), MAX_SUBACCOUNT_SERIES);
        assert!(doc.minutes.subaccounts.contains_key("sub000"));
        assert!(!doc.minutes.subaccounts.contains_key("sub040"));
    }

    #[test]
    fn events_are_a_bounded_ring_newest_first_and_dial_failures_coalesce() {
        let mut h = History::new();
        let ev = |at, kind: &str, reason: &str| {
            PoolEvent::new(at, kind, 1, "p:1".into(), "farm1".into(), reason)
        };
        h.pool_event(ev(T0, "up", ""));
        h.pool_event(ev(T0 + 5, "down", "read timeout"));
        h.pool_event(ev(T0 + 6, "dial_failed", "connection refused"));
        h.pool_event(ev(T0 + 8, "dial_failed", "connection refused"));
        h.pool_event(ev(T0 + 12, "dial_failed", "connection refused"));
        let events = h.pool_events();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].event, "dial_failed");
        assert_eq!(
            (events[0].at, events[0].count, events[0].last_at),
            (T0 + 6, 3, T0 + 12)
        );
        assert_eq!(events[2].event, "up");
        assert_eq!(
            h.event_counts(),
            PoolEventCounts {
                up: 1,
                down: 1,
                dial_failed: 3
            }
        );
        for i in 0..2 * MAX_POOL_EVENTS as u64 {
            h.pool_event(ev(
                T0 + 100 + i,
                if i % 2 == 0 { "up" } else { "down" },
                "x",
            ));
        }
        let events = h.pool_events();
        assert_eq!(events.len(), MAX_POOL_EVENTS);
        assert_eq!(events[0].at, T0 + 100 + 2 * MAX_POOL_EVENTS as u64 - 1);
        assert_eq!(h.event_counts().up, 1 + MAX_POOL_EVENTS as u64);
        let long = ev(T0, "down", &"x".repeat(10_000));
        assert_eq!(long.reason.chars().count(), MAX_REASON);
    }

    #[test]
    fn offline_workers_are_bounded_newest_first_and_leave_when_back_or_old() {
        let mut h = History::new();
        h.worker_left(worker("w1", T0));
        h.worker_left(worker("w2", T0 + 10));
        h.worker_left(worker("w1", T0 + 20)); // left again: one entry, the newest
        let names: Vec<_> = h.offline_workers().into_iter().map(|w| w.worker).collect();
        assert_eq!(names, ["w1", "w2"]);
        let back: HashSet<(&str, &str)> = [("farm1", "w2")].into();
        h.prune_offline(T0 + 30, &back);
        assert_eq!(h.offline_workers().len(), 1);
        h.prune_offline(T0 + 20 + OFFLINE_KEEP_SECONDS, &HashSet::new());
        assert!(h.offline_workers().is_empty());
        for i in 0..MAX_OFFLINE_WORKERS + 5 {
            h.worker_left(worker(&format!("x{i}"), T0 + i as u64));
        }
        let all = h.offline_workers();
        assert_eq!(all.len(), MAX_OFFLINE_WORKERS);
        assert_eq!(all[0].worker, format!("x{}", MAX_OFFLINE_WORKERS + 4));
    }

    #[test]
    fn what_is_saved_comes_back() {
        let mut h = History::new();
        h.add_farm(T0, shares(3, 1, 600.0));
        h.add_farm(T0 + 600, shares(2, 0, 60.0));
        h.add_subaccount(T0, "farm1", shares(3, 1, 600.0));
        h.pool_event(PoolEvent::new(
            T0,
            "up",
            1,
            "p:1".into(),
            "farm1".into(),
            "",
        ));
        h.pool_event(PoolEvent::new(
            T0 + 1,
            "down",
            1,
            "p:1".into(),
            "farm1".into(),
            "eof",
        ));
        h.worker_left(worker("w1", T0));
        h.worker_left(worker("w2", T0 + 1));
        // Saved at the end of a full bucket, so the hashrates are over whole widths.
        let saved = h.saved(T0 + 659);
        let text = serde_json::to_string(&saved).unwrap();
        let mut back = History::new();
        back.restore(&serde_json::from_str(&text).unwrap());
        assert_eq!(back.saved(T0 + 659), saved);
        // And it goes on from there.
        back.add_farm(T0 + 660, shares(1, 0, 0.0));
        assert_eq!(back.doc(T0 + 660).minutes.farm.len(), 3);
    }

    /// docs/status-history.md counts 24 bytes a bucket (4.9 KiB a series); the heap at
    /// the bounds is measured by tests/status_memory.rs.
    #[test]
    fn a_bucket_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Bucket>(), 24);
    }
}
