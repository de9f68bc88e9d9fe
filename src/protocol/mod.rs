//! Wire formats, free of I/O: Stratum V1 lines, BTCAgent ex-messages, job rewriting,
//! the rules that turn a miner's login into a worker name, and the share arithmetic
//! of plain Stratum pools.

pub mod exmessage;
pub mod framing;
pub mod job;
pub mod stratum;
pub mod stratum_upstream;
pub mod worker;
