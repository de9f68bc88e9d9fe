//! A pool's mining.notify params turned into the miners' job, and the fake jobs made
//! from it.
#![no_main]

use btcagent::protocol::job::{fake_job, parse_miner_job_id, rewrite_notify};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn notify_params(line: &[u8]) -> Vec<Value> {
    let v: Value = serde_json::from_slice(line).expect("the agent writes JSON");
    assert_eq!(v["method"], "mining.notify");
    v["params"].as_array().expect("params").clone()
}

fuzz_target!(|data: &[u8]| {
    let Ok(params) = std::str::from_utf8(data) else {
        return;
    };
    let connection = data.len() as u32;
    let Ok(job) = rewrite_notify(params, "f8002c90", connection) else {
        return;
    };
    for line in [&job.notify, &job.notify_clean] {
        let p = notify_params(line.strip_suffix(b"\n").unwrap_or(line));
        assert_eq!(p.len(), 9);
        assert_eq!(
            parse_miner_job_id(p[0].as_str().unwrap()),
            Some((connection, job.id))
        );
    }
    let fake = fake_job(&job, connection, 1_700_000_000);
    notify_params(fake.strip_suffix(b"\n").unwrap_or(&fake));
});
