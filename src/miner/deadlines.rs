//! Miners' deadlines (authorize in time, get a pool connection in time), kept by one
//! agent-wide sweeper instead of a timer in every miner's task: a timer inside the task
//! would make every miner's future bigger, and register a reactor timer per miner.
//!
//! The queue holds `(deadline, session id)` entries and nothing else: a miner that left,
//! or whose deadline changed since, is recognised when its entry comes up (the agent
//! compares the entry with the miner's deadline then) and skipped. Such stale entries
//! are swept before the queue holds twice what it held after the last sweep.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::task::{Poll, Waker};
use std::time::Instant;

#[derive(Default)]
pub struct Deadlines {
    queue: RefCell<BinaryHeap<Reverse<(Instant, u16)>>>,
    /// Entries left by the last sweep of stale ones.
    kept: Cell<usize>,
    /// The sweeper, while it waits for the earliest deadline.
    sweeper: Cell<Option<Waker>>,
}

impl Deadlines {
    pub fn new() -> Deadlines {
        Deadlines::default()
    }

    /// Entries queued, stale ones included.
    pub fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Queues miner `sid`'s deadline `at`. Returns true when stale entries should be
    /// swept now ([`Deadlines::retain`]).
    pub fn push(&self, sid: u16, at: Instant) -> bool {
        let mut queue = self.queue.borrow_mut();
        let earliest = queue.peek().is_none_or(|Reverse((next, _))| at < *next);
        queue.push(Reverse((at, sid)));
        if earliest {
            // The sweeper waits for a later one (or none): let it wait for this one.
            if let Some(w) = self.sweeper.take() {
                w.wake();
            }
        }
        queue.len() > 2 * self.kept.get() + 64
    }

    /// Keeps only the entries `keep` says are still wanted.
    pub fn retain(&self, mut keep: impl FnMut(u16, Instant) -> bool) {
        let mut queue = self.queue.borrow_mut();
        queue.retain(|Reverse((at, sid))| keep(*sid, *at));
        self.kept.set(queue.len());
    }

    /// The next entry whose deadline is `now` or earlier.
    pub fn pop_passed(&self, now: Instant) -> Option<(u16, Instant)> {
        let mut queue = self.queue.borrow_mut();
        match queue.peek() {
            Some(Reverse((at, _))) if *at <= now => queue.pop().map(|Reverse((at, sid))| (sid, at)),
            _ => None,
        }
    }

    /// Waits until the earliest deadline has passed: at once if it has, for ever while
    /// there is none (a [`Deadlines::push`] of an earlier one wakes it to wait for that).
    pub async fn passed(&self) {
        loop {
            let next = self.queue.borrow().peek().map(|Reverse((at, _))| *at);
            let woke = match next {
                Some(at) if at <= Instant::now() => return,
                Some(at) => {
                    let timer = async {
                        async_io::Timer::at(at).await;
                        true
                    };
                    smol::future::or(timer, Pushed::new(self)).await
                }
                None => Pushed::new(self).await,
            };
            if woke {
                return;
            }
        }
    }
}

/// Ready (with `false`) once a push took the waker this future left.
struct Pushed<'a> {
    deadlines: &'a Deadlines,
    waiting: bool,
}

impl<'a> Pushed<'a> {
    fn new(deadlines: &'a Deadlines) -> Pushed<'a> {
        Pushed {
            deadlines,
            waiting: false,
        }
    }
}

impl Future for Pushed<'_> {
    type Output = bool;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        let waker = self.deadlines.sweeper.take();
        if self.waiting && waker.is_none() {
            return Poll::Ready(false);
        }
        self.waiting = true;
        self.deadlines.sweeper.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn passed_deadlines_come_out_earliest_first_and_only_once_passed() {
        let d = Deadlines::new();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        d.push(3, t0 + 3 * s);
        d.push(1, t0 + s);
        d.push(2, t0 + 2 * s);
        assert_eq!(d.pop_passed(t0), None);
        assert_eq!(d.pop_passed(t0 + 2 * s), Some((1, t0 + s)));
        assert_eq!(d.pop_passed(t0 + 2 * s), Some((2, t0 + 2 * s)));
        assert_eq!(d.pop_passed(t0 + 2 * s), None);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn stale_entries_are_swept_before_the_queue_doubles() {
        let d = Deadlines::new();
        let at = Instant::now() + Duration::from_secs(60);
        let mut sweeps = 0;
        for i in 0..10_000u16 {
            if d.push(i, at) {
                sweeps += 1;
                // Only the ten newest miners still wait.
                d.retain(|sid, _| sid + 10 > i);
            }
            assert!(d.len() <= 2 * 10 + 64 + 1, "{} entries", d.len());
        }
        assert!(sweeps > 0);
    }

    #[test]
    fn an_earlier_deadline_wakes_the_sweeper_waiting_for_a_later_one() {
        let d = Deadlines::new();
        d.push(1, Instant::now() + Duration::from_secs(3600));
        let woke = smol::block_on(async {
            let waited = async {
                d.passed().await;
                true
            };
            let push_earlier = async {
                // Let the sweeper start waiting for the far deadline first.
                smol::future::yield_now().await;
                d.push(2, Instant::now());
                std::future::pending::<bool>().await
            };
            let give_up = async {
                async_io::Timer::after(Duration::from_secs(30)).await;
                false
            };
            smol::future::or(smol::future::or(waited, push_earlier), give_up).await
        });
        assert!(woke, "the sweeper slept through an earlier deadline");
        assert_eq!(d.pop_passed(Instant::now()).map(|(sid, _)| sid), Some(2));
    }

    #[test]
    fn with_no_deadline_the_sweeper_waits_for_one() {
        let d = Deadlines::new();
        let woke = smol::block_on(async {
            let waited = async {
                d.passed().await;
                true
            };
            let push = async {
                smol::future::yield_now().await;
                smol::future::yield_now().await;
                d.push(7, Instant::now());
                std::future::pending::<bool>().await
            };
            let give_up = async {
                async_io::Timer::after(Duration::from_secs(30)).await;
                false
            };
            smol::future::or(smol::future::or(waited, push), give_up).await
        });
        assert!(woke);
    }
}
