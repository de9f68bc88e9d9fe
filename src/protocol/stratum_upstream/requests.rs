//! What the agent writes on a plain Stratum connection, byte for byte: its requests
//! upstream (handshake and submits), and the `mining.notify` its miners get for one
//! pool job (coinb1 carrying the pool's extranonce1, coinb2 the split's padding).

use super::extranonce::Split;
use super::hash::swap_words;
use super::hex::encode;
use super::job::UpstreamJob;
use crate::protocol::stratum::{notification, request};

/// `mining.configure`, first (BIP 310): every bit offered, the pool's mask taken.
pub fn configure(id: u32) -> Vec<u8> {
    request(
        &id.to_string(),
        "mining.configure",
        r#"[["version-rolling"],{"version-rolling.mask":"ffffffff","version-rolling.min-bit-count":0}]"#,
    )
}

/// `mining.subscribe [user_agent]`.
pub fn subscribe(id: u32, user_agent: &str) -> Vec<u8> {
    let ua = serde_json::to_string(user_agent).unwrap_or_else(|_| "\"\"".into());
    request(&id.to_string(), "mining.subscribe", &format!("[{ua}]"))
}

/// `mining.authorize [user, password]`.
pub fn authorize(id: u32, user: &str, password: &str) -> Vec<u8> {
    let user = serde_json::to_string(user).unwrap_or_else(|_| "\"\"".into());
    let password = serde_json::to_string(password).unwrap_or_else(|_| "\"\"".into());
    request(
        &id.to_string(),
        "mining.authorize",
        &format!("[{user},{password}]"),
    )
}

/// `mining.extranonce.subscribe []`: sent after authorize, its answer never awaited.
pub fn extranonce_subscribe(id: u32) -> Vec<u8> {
    request(&id.to_string(), "mining.extranonce.subscribe", "[]")
}

/// `mining.suggest_difficulty [difficulty]`: a whole number as a JSON integer (ckpool
/// takes nothing else), a fraction only below 1.
pub fn suggest_difficulty(id: u32, difficulty: f64) -> Vec<u8> {
    let text = format!(
        "[{}]",
        crate::protocol::stratum::difficulty_text(difficulty)
    );
    request(&id.to_string(), "mining.suggest_difficulty", &text)
}

/// One share for the pool.
#[derive(Clone, Copy, Debug)]
pub struct Submit<'a> {
    pub user: &'a str,
    pub job_id: &'a str,
    /// At the pool's size (see [`Split::pool_extranonce2`]).
    pub extranonce2: &'a [u8],
    pub ntime: u32,
    pub nonce: u32,
    pub version_bits: Option<u32>,
}

/// `mining.submit [user, job_id, extranonce2, ntime, nonce(, version_bits)]`.
pub fn submit(id: u32, share: &Submit) -> Vec<u8> {
    let user = serde_json::to_string(share.user).unwrap_or_else(|_| "\"\"".into());
    let job = serde_json::to_string(share.job_id).unwrap_or_else(|_| "\"\"".into());
    let mut params = format!(
        "[{user},{job},\"{}\",\"{:08x}\",\"{:08x}\"",
        encode(share.extranonce2),
        share.ntime,
        share.nonce
    );
    if let Some(bits) = share.version_bits {
        params.push_str(&format!(",\"{bits:08x}\""));
    }
    params.push(']');
    request(&id.to_string(), "mining.submit", &params)
}

/// The notify every miner of one connection gets for a pool job, serialized once:
/// with the pool's clean flag, and as clean for a miner that has seen no earlier job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinerNotify {
    pub notify: Vec<u8>,
    pub notify_clean: Vec<u8>,
}

/// Builds the miners' notify for `job`, named `miner_job_id` (`"<connection>-<n>"`).
pub fn miner_notify(
    job: &UpstreamJob,
    split: &Split,
    pool_extranonce1: &[u8],
    miner_job_id: &str,
) -> MinerNotify {
    let branch: Vec<String> = job
        .branch
        .iter()
        .map(|h| format!("\"{}\"", encode(h)))
        .collect();
    let params = |clean: bool| {
        format!(
            "[\"{miner_job_id}\",\"{}\",\"{}\",\"{}\",[{}],\"{:08x}\",\"{:08x}\",\"{:08x}\",{clean}]",
            encode(&swap_words(&job.prevhash)),
            encode(&split.miner_coinb1(&job.coinb1, pool_extranonce1)),
            encode(&split.miner_coinb2(&job.coinb2)),
            branch.join(","),
            job.version,
            job.nbits,
            job.ntime,
        )
    };
    let notify = notification("mining.notify", &params(job.clean));
    let notify_clean = if job.clean {
        notify.clone()
    } else {
        notification("mining.notify", &params(true))
    };
    MinerNotify {
        notify,
        notify_clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::stratum_upstream::hex::decode;
    use crate::protocol::stratum_upstream::job::tests::{block_881423, notify_881423};

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn handshake_lines_byte_exact() {
        assert_eq!(
            text(configure(1)),
            "{\"id\":1,\"method\":\"mining.configure\",\"params\":[[\"version-rolling\"],{\"version-rolling.mask\":\"ffffffff\",\"version-rolling.min-bit-count\":0}]}\n"
        );
        assert_eq!(
            text(subscribe(2, "btcagent/0.1.0")),
            "{\"id\":2,\"method\":\"mining.subscribe\",\"params\":[\"btcagent/0.1.0\"]}\n"
        );
        assert_eq!(
            text(authorize(3, "alice.farm\"1", "x")),
            "{\"id\":3,\"method\":\"mining.authorize\",\"params\":[\"alice.farm\\\"1\",\"x\"]}\n"
        );
        assert_eq!(
            text(extranonce_subscribe(4)),
            "{\"id\":4,\"method\":\"mining.extranonce.subscribe\",\"params\":[]}\n"
        );
        assert_eq!(
            text(suggest_difficulty(5, 5461.0)),
            "{\"id\":5,\"method\":\"mining.suggest_difficulty\",\"params\":[5461]}\n"
        );
        assert_eq!(
            text(suggest_difficulty(5, 0.25)),
            "{\"id\":5,\"method\":\"mining.suggest_difficulty\",\"params\":[0.25]}\n"
        );
    }

    #[test]
    fn block_881423_submit_byte_exact() {
        let ex2 = decode(block_881423::EXTRANONCE2).unwrap();
        let share = Submit {
            user: "acct.farm1",
            job_id: "67d5e1a400001a2b",
            extranonce2: &ex2,
            ntime: 0x679a_c169,
            nonce: block_881423::NONCE,
            version_bits: Some(block_881423::VERSION_BITS),
        };
        assert_eq!(
            text(submit(7, &share)),
            "{\"id\":7,\"method\":\"mining.submit\",\"params\":[\"acct.farm1\",\"67d5e1a400001a2b\",\"b660000000000000\",\"679ac169\",\"ff05fb02\",\"0e596000\"]}\n"
        );
        let plain = Submit {
            version_bits: None,
            ..share
        };
        assert!(text(submit(8, &plain)).ends_with("\"ff05fb02\"]}\n"));
    }

    #[test]
    fn miner_notify_byte_exact() {
        use block_881423::*;
        let mut job = UpstreamJob::from_params(&notify_881423()).unwrap();
        let pool_ex1 = decode(EXTRANONCE1).unwrap();
        let split = Split::for_pool(&pool_ex1, 7, false).unwrap();
        job.clean = false;
        let n = miner_notify(&job, &split, &pool_ex1, "3-41");
        let branch: Vec<String> = BRANCH.iter().map(|h| format!("\"{h}\"")).collect();
        let want = format!(
            "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"3-41\",\"{PREVHASH_NOTIFY}\",\"{COINB1}{EXTRANONCE1}\",\"00{COINB2}\",[{}],\"{JOB_VERSION}\",\"{NBITS}\",\"{NTIME}\",false]}}\n",
            branch.join(",")
        );
        assert_eq!(text(n.notify.clone()), want);
        assert_eq!(text(n.notify_clean), want.replace("false]}", "true]}"));
        // Parsed back, it is the pool's job with the miner's coinb1/coinb2.
        let v: serde_json::Value = serde_json::from_slice(&n.notify).unwrap();
        let params: Vec<serde_json::Value> = serde_json::from_value(v["params"].clone()).unwrap();
        let back = UpstreamJob::from_params(&params).unwrap();
        assert_eq!(back.prevhash, job.prevhash);
        assert_eq!(back.branch, job.branch);
        assert_eq!(back.coinb1, [&job.coinb1[..], &pool_ex1].concat());
    }
}
