//! The jobs a pool connection still honours, as sserver keeps them per session.
//!
//! sserver numbers an agent connection's jobs 0..=255 and finds a share's job by that
//! short id, newest first. After a job with a new block height (sent with clean_jobs)
//! every older job is stale (answered 37) or gone (36); otherwise a job lives until
//! the pool drops it, 300 s after it was made (`max_job_lifetime`). A share on a job
//! the pool has forgotten is certain to be rejected, so the agent answers it itself
//! and never sends it (StratumSession.h `clearLocalJobs`, StratumServerBitcoin.cc).

use std::time::{Duration, Instant};

/// sserver's default `max_job_lifetime`.
pub const JOB_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Clone, Copy)]
struct Slot {
    received: Instant,
    ntime: u32,
}

pub struct JobBook {
    slots: Box<[Option<Slot>; 256]>,
}

impl Default for JobBook {
    fn default() -> Self {
        JobBook {
            slots: Box::new([None; 256]),
        }
    }
}

impl JobBook {
    /// Records a job; a clean one makes every other job dead.
    pub fn add(&mut self, id: u8, ntime: u32, clean: bool, now: Instant) {
        if clean {
            self.slots.fill(None);
        }
        self.slots[id as usize] = Some(Slot {
            received: now,
            ntime,
        });
    }

    /// The job's ntime while the pool still honours job `id`.
    pub fn live_ntime(&self, id: u8, now: Instant) -> Option<u32> {
        let slot = self.slots[id as usize]?;
        (now.saturating_duration_since(slot.received) < JOB_LIFETIME).then_some(slot.ntime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_job_ends_every_older_one() {
        let t0 = Instant::now();
        let mut book = JobBook::default();
        book.add(1, 100, true, t0);
        book.add(2, 101, false, t0);
        assert_eq!(book.live_ntime(1, t0), Some(100));
        assert_eq!(book.live_ntime(2, t0), Some(101));
        assert_eq!(book.live_ntime(3, t0), None);
        book.add(3, 102, true, t0);
        assert_eq!(book.live_ntime(1, t0), None);
        assert_eq!(book.live_ntime(2, t0), None);
        assert_eq!(book.live_ntime(3, t0), Some(102));
    }

    #[test]
    fn jobs_expire_and_ids_are_reused() {
        let t0 = Instant::now();
        let mut book = JobBook::default();
        book.add(7, 100, false, t0);
        assert_eq!(
            book.live_ntime(7, t0 + JOB_LIFETIME - Duration::from_secs(1)),
            Some(100)
        );
        assert_eq!(book.live_ntime(7, t0 + JOB_LIFETIME), None);
        book.add(7, 200, false, t0 + JOB_LIFETIME);
        assert_eq!(book.live_ntime(7, t0 + JOB_LIFETIME), Some(200));
    }
}
