//! btcagent-sim: a simulated btcpool server and a swarm of simulated miners, for
//! btcagent's end-to-end tests, load benchmarks and demo. It never uses the
//! `btcagent` crate: both protocol sides are implemented again here, so a bug in the
//! agent's codec shows up as a failed share or a wrong count, not as a silent agreement.
//!
//! - [`pool::PoolSim`]: the pool side of the BTCAgent protocol on its own thread;
//!   checks every share, counts everything, and takes controls (new job, difficulty,
//!   MINING_SET_DIFF, drop, refuse, garbage, stop). Wait with `wait_until`.
//! - [`miner::MinerSwarm`]: N miners on one thread that really mine; stats snapshots
//!   with job fan-out and submit-response latency histograms.
//! - [`conn::MinerConn`]: one scripted connection (as a miner, or as an agent to the
//!   pool) for exact protocol tests.
//! - [`bitcoin`], [`exmsg`], [`job`], [`share`]: the hashing, framing and share math
//!   both sides use; [`framing`], [`histogram`], [`rlimit`]: plumbing.
//!
//! Every job from [`pool::PoolSim`] carries its wall-clock send time inside coinb1
//! ([`job::job_sent_at_us`]), so a miner in another process can measure fan-out latency.

pub mod bitcoin;
pub mod cli;
pub mod conn;
pub mod exmsg;
pub mod framing;
pub mod histogram;
pub mod job;
pub mod miner;
pub mod net;
pub mod pool;
pub mod rlimit;
pub mod share;
pub mod stratum_pool;

/// Wall-clock microseconds since the Unix epoch (comparable across processes).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A stats mutex, usable even after a panicking holder (stats stay readable).
pub(crate) fn lock<S>(stats: &std::sync::Mutex<S>) -> std::sync::MutexGuard<'_, S> {
    stats
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `stats` every `every` until `condition` holds (true) or `timeout` passes (false),
/// blocking the calling thread.
pub(crate) fn wait_for<S>(
    stats: &std::sync::Mutex<S>,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut condition: impl FnMut(&S) -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if condition(&lock(stats)) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// [`wait_for`] for async code.
pub(crate) async fn wait_for_async<S>(
    stats: &std::sync::Mutex<S>,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut condition: impl FnMut(&S) -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if condition(&lock(stats)) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        smol::Timer::after(every).await;
    }
}
