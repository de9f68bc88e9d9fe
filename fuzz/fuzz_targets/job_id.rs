//! A job id as a miner sends it back in mining.submit.
#![no_main]

use btcagent::protocol::job::{miner_job_id, parse_miner_job_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Some((connection, job)) = parse_miner_job_id(text) {
        assert_eq!(
            parse_miner_job_id(&miner_job_id(connection, job)),
            Some((connection, job))
        );
    }
});
