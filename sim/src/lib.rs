pub mod bitcoin;
pub mod exmsg;
pub mod framing;
pub mod histogram;
pub mod job;
pub mod pool;
pub mod share;

/// Wall-clock microseconds since the Unix epoch (comparable across processes).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
pub mod conn;
pub mod miner;
pub mod rlimit;
