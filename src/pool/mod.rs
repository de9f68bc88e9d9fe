//! The pool side: one [`PoolSession`] per upstream connection, grouped per sub-account
//! in a [`PoolGroup`].
//!
//! A session writes through a buffer that a writer task flushes after a short window,
//! so the shares of many miners leave in one TCP segment; it reads pool frames, fans
//! jobs out to its miners (one serialized buffer for all), and answers share results.

pub mod dial_streak;
mod group;
mod jobs;
pub mod layouts;
mod miner_list;
mod passthrough;
mod pending;
mod session;

pub use group::{session_for_share, PoolGroup};
pub use passthrough::is_passthrough;
pub use session::{drain_all, Departure, PoolSession, PoolState, PoolStats};
