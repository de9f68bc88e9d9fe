//! btcagent: a mining-farm pool agent.
//!
//! Miners speak Stratum V1 to the agent; the agent speaks BTCAgent's compact protocol
//! (Stratum lines plus binary ex-messages) to a btcpool-family pool over a handful of
//! connections. Layers, bottom up:
//! - [`protocol`]: pure encoding and decoding, no I/O;
//! - [`upstream`]: how a TCP stream to the pool is obtained (direct, proxies, TLS);
//! - [`pool`] and [`miner`]: the sessions on each side, on one smol executor;
//! - [`agent`]: ties the two sides together; `main.rs` only parses the command line;
//! - [`status`] formats and publishes a [`status::StatusDoc`] without knowing the agent;
//!   [`agent_status`] builds it from the sessions; [`http_debug`] serves it.

pub mod admission;
pub mod agent;
pub mod agent_status;
pub mod cli;
pub mod config;
pub mod control;
pub mod fd_limit;
#[cfg(target_os = "linux")]
pub mod handoff;
pub mod handoff_state;
pub mod http_debug;
pub mod logging;
pub mod miner;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod service_notify;
pub mod startup;
pub mod status;
pub mod timer_check;
pub mod uci;
pub mod upstream;
