//! Wire formats, free of I/O: Stratum V1 lines, BTCAgent ex-messages, job rewriting,
//! and the rules that turn a miner's login into a worker name.

pub mod exmessage;
pub mod framing;
pub mod job;
pub mod stratum;
pub mod worker;
