//! The pure side of plain Stratum V1 pools (issue 15): what btcagent needs to be an
//! aggregating proxy in front of a pool that does not speak the agent protocol.
//!
//! - [`connection`]: one upstream connection's state (handshake, jobs, each miner's
//!   difficulty, each share's verdict), fed lines and shares by the pool session;
//! - [`messages`]: the pool's lines parsed (subscribe and configure results,
//!   set_difficulty, notify, set_extranonce, set_version_mask, client.reconnect,
//!   verdicts in every dialect seen);
//! - [`job`]: a notify in binary form, and one share rebuilt, hashed and compared with
//!   the pool's and the miner's targets;
//! - [`requests`]: what the agent writes upstream, and the notify its miners get;
//! - [`extranonce`]: one connection's extranonce2 split among its miners;
//! - [`vardiff`]: each miner's own difficulty, never above the pool's;
//! - [`user`]: the user name the pool sees;
//! - [`hash`], [`hex`]: sha256d, merkle roots, headers, targets; hex text.
//!
//! docs/stratum-upstream.md describes the design these serve.

pub mod connection;
pub mod extranonce;
pub mod hash;
pub mod hex;
pub mod job;
pub mod messages;
pub mod requests;
pub mod user;
pub mod vardiff;

use std::fmt;

/// A line from the pool that cannot be used: which message, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamError {
    pub context: &'static str,
    pub what: String,
}

impl UpstreamError {
    pub fn new(context: &'static str, what: String) -> UpstreamError {
        UpstreamError { context, what }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.what)
    }
}

impl std::error::Error for UpstreamError {}
