//! Shares waiting for the pool's verdict, found by their SUBMIT_RESPONSE index.
//!
//! sserver answers some rejections at once and the rest from a share-checking thread
//! pool, so responses overtake each other; a share whose worker was unregistered while
//! it was checked gets no response at all. So a verdict is matched to its share by
//! index, never by position, and a share that waited too long is given up on.
//!
//! Indexes are handed out in order (the pool counts every submit it receives), so the
//! waiting shares sit in a ring whose front holds the oldest index: a lookup is an
//! offset from the front, and the oldest share is always the first to expire.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a share may wait for its verdict before the miner is told there is none.
pub const VERDICT_TIMEOUT: Duration = Duration::from_secs(30);

struct Waiting<T> {
    item: T,
    since: Instant,
}

pub struct PendingShares<T> {
    /// Slot `i` holds index `front + i`; `None` once answered.
    slots: VecDeque<Option<Waiting<T>>>,
    front: u16,
    /// The index the next submit gets.
    next: u16,
    waiting: usize,
    limit: usize,
}

impl<T> PendingShares<T> {
    /// At most `limit` shares wait (far below 65,536, so that an index names one share).
    pub fn new(limit: usize) -> PendingShares<T> {
        PendingShares {
            slots: VecDeque::new(),
            front: 0,
            next: 0,
            waiting: 0,
            limit: limit.clamp(1, 0x8000),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting
    }

    pub fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    /// The index the next [`PendingShares::push`] gives its share.
    pub fn next_index(&self) -> u16 {
        self.next
    }

    /// Records the share that was just sent with the next index. Returns the share that
    /// had to give up its place, if the ring was full: it will not be answered.
    pub fn push(&mut self, item: T, now: Instant) -> Option<T> {
        let mut evicted = None;
        if self.slots.len() >= self.limit {
            evicted = self.pop_front();
        }
        if self.slots.is_empty() {
            self.front = self.next;
        }
        self.slots.push_back(Some(Waiting { item, since: now }));
        self.waiting += 1;
        self.next = self.next.wrapping_add(1);
        evicted
    }

    /// The share with this index, if it is still waiting.
    pub fn take(&mut self, index: u16) -> Option<T> {
        let offset = index.wrapping_sub(self.front) as usize;
        let waiting = self.slots.get_mut(offset)?.take()?;
        self.waiting -= 1;
        self.trim();
        Some(waiting.item)
    }

    /// Shares that have waited `timeout` or longer at `now`, oldest first.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<T> {
        let mut expired = Vec::new();
        while let Some(Some(w)) = self.slots.front() {
            if now.duration_since(w.since) < timeout {
                break;
            }
            expired.extend(self.pop_front());
        }
        expired
    }

    /// When the oldest waiting share expires.
    pub fn next_deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.slots.front() {
            Some(Some(w)) => Some(w.since + timeout),
            _ => None,
        }
    }

    /// Every waiting share (the connection is gone).
    pub fn drain(&mut self) -> Vec<T> {
        let items = self.slots.drain(..).flatten().map(|w| w.item).collect();
        self.waiting = 0;
        items
    }

    fn pop_front(&mut self) -> Option<T> {
        let slot = self.slots.pop_front()?;
        self.front = self.front.wrapping_add(1);
        let item = slot.map(|w| {
            self.waiting -= 1;
            w.item
        });
        self.trim();
        item
    }

    /// Drops answered slots at the front, so the front is always a waiting share.
    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.front = self.front.wrapping_add(1);
        }
        if self.slots.is_empty() && self.slots.capacity() > 1024 {
            // A burst must not keep its memory for good.
            self.slots = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        thread_local!(static T0: Instant = Instant::now());
        T0.with(|t0| *t0 + Duration::from_secs(s))
    }

    #[test]
    fn verdicts_in_any_order_find_their_share() {
        let mut p = PendingShares::new(16);
        for i in 0..5 {
            assert!(p.push(i, at(0)).is_none());
        }
        assert_eq!(p.take(3), Some(3));
        assert_eq!(p.take(0), Some(0));
        assert_eq!(p.take(3), None, "answered once");
        assert_eq!(p.take(4), Some(4));
        assert_eq!(p.len(), 2);
        assert_eq!(p.take(1), Some(1));
        assert_eq!(p.take(2), Some(2));
        assert!(p.is_empty());
        assert_eq!(p.take(9), None, "never sent");
        // The next share gets index 5, whatever was answered before.
        p.push(5, at(0));
        assert_eq!(p.take(5), Some(5));
    }

    #[test]
    fn indexes_wrap_at_65536() {
        let mut p = PendingShares::new(16);
        for i in 0..65_534u32 {
            p.push(i, at(0));
            assert_eq!(p.take(i as u16), Some(i));
        }
        for i in 65_534u32..65_540 {
            p.push(i, at(0));
        }
        assert_eq!(p.take(2), Some(65_538));
        assert_eq!(p.take(65_535), Some(65_535));
        assert_eq!(p.take(0), Some(65_536));
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn a_share_without_verdict_expires_and_a_late_verdict_finds_nothing() {
        let mut p = PendingShares::new(16);
        p.push("a", at(0));
        p.push("b", at(10));
        p.push("c", at(20));
        assert_eq!(p.take(1), Some("b"));
        assert_eq!(p.next_deadline(VERDICT_TIMEOUT), Some(at(30)));
        assert!(p.expire(at(29), VERDICT_TIMEOUT).is_empty());
        assert_eq!(p.expire(at(30), VERDICT_TIMEOUT), vec!["a"]);
        assert_eq!(p.next_deadline(VERDICT_TIMEOUT), Some(at(50)));
        assert_eq!(p.take(0), None, "late");
        assert_eq!(p.expire(at(60), VERDICT_TIMEOUT), vec!["c"]);
        assert_eq!(p.next_deadline(VERDICT_TIMEOUT), None);
    }

    #[test]
    fn a_full_ring_gives_up_on_its_oldest_share() {
        let mut p = PendingShares::new(3);
        p.push(0, at(0));
        p.push(1, at(0));
        p.push(2, at(0));
        assert_eq!(p.push(3, at(0)), Some(0));
        assert_eq!(p.take(0), None);
        assert_eq!(p.take(3), Some(3));
        assert_eq!(p.drain(), vec![1, 2]);
        assert!(p.is_empty());
    }
}
