//! Job rewriting: a pool's `mining.notify` turned into the notify every miner of that
//! pool connection receives, serialized once and shared.
//!
//! The pool gives the agent an 8-byte extranonce2; the agent hands each miner the first
//! four bytes as its extranonce1 (its session id) and keeps four for the miner's own
//! extranonce2. So the pool's extranonce1 moves into coinb1, and the miner's coinbase is
//! `coinb1 + pool_ex1 | 0000SSSS | miner_ex2 | coinb2`, the same bytes the pool rebuilds.

use super::stratum::notification;
use serde_json::Value;
use std::rc::Rc;

/// One pool job, ready for fan-out.
///
/// Miners see the job id as `"<connection>-<pool job id>"`: the pool numbers jobs per
/// connection, so after a miner is moved to a sibling connection a bare "17" could name
/// either connection's job 17, and a share on the old one would reach the pool as an
/// invalid share on the new one. With the connection in the id it is answered stale.
#[derive(Debug)]
pub struct Job {
    /// The pool's job id: a short decimal string of a u8 on the agent protocol.
    pub id: u8,
    /// Header ntime of the job; a share with another ntime needs the _TIME form.
    pub ntime: u32,
    /// The pool's clean_jobs: a new block, after which no older job counts.
    pub clean: bool,
    /// `mining.notify` line with the pool's clean_jobs flag.
    pub notify: Rc<[u8]>,
    /// The same job with clean_jobs = true, for a miner that has not seen the previous ones.
    pub notify_clean: Rc<[u8]>,
    /// The miner-facing params, kept to derive fake jobs while the pool is away.
    pub params: Vec<Value>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct JobError(pub String);

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex_str<'a>(params: &'a [Value], i: usize, what: &str) -> Result<&'a str, JobError> {
    match params.get(i).and_then(Value::as_str) {
        Some(s) if s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(s),
        _ => Err(JobError(format!(
            "mining.notify: {what} (param {i}) is not a hex string"
        ))),
    }
}

fn hex_u32(params: &[Value], i: usize, what: &str) -> Result<u32, JobError> {
    let s = hex_str(params, i, what)?;
    if s.len() != 8 {
        return Err(JobError(format!(
            "mining.notify: {what} (param {i}) is not 8 hex digits"
        )));
    }
    u32::from_str_radix(s, 16).map_err(|_| JobError(format!("mining.notify: bad {what}")))
}

/// The miner-facing job id of pool job `job` on pool connection `connection`.
pub fn miner_job_id(connection: u32, job: u8) -> String {
    format!("{connection}-{job}")
}

/// Splits a miner-facing job id into (connection, pool job id).
pub fn parse_miner_job_id(text: &str) -> Option<(u32, u8)> {
    let (conn, job) = text.split_once('-')?;
    Some((conn.parse().ok()?, job.parse().ok()?))
}

/// Builds the miner-facing job from the pool notify's params (JSON text), received on
/// pool connection `connection`.
pub fn rewrite_notify(
    params_json: &str,
    pool_extranonce1: &str,
    connection: u32,
) -> Result<Job, JobError> {
    let mut params: Vec<Value> = serde_json::from_str(params_json)
        .map_err(|e| JobError(format!("mining.notify: params are not a list: {e}")))?;
    if params.len() < 9 {
        return Err(JobError(format!(
            "mining.notify: {} params, 9 expected",
            params.len()
        )));
    }
    let id_text = params[0]
        .as_str()
        .ok_or_else(|| JobError("mining.notify: job id is not a string".into()))?;
    let id: u8 = id_text.parse().map_err(|_| {
        JobError(format!(
            "mining.notify: job id {id_text:?} is not a number 0..255, as the agent protocol needs"
        ))
    })?;
    hex_str(&params, 1, "prevhash")?;
    let coinb1 = hex_str(&params, 2, "coinb1")?;
    hex_str(&params, 3, "coinb2")?;
    if !params[4]
        .as_array()
        .map(|a| a.iter().all(|h| h.as_str().is_some()))
        .unwrap_or(false)
    {
        return Err(JobError(
            "mining.notify: merkle branch (param 4) is not a list of strings".into(),
        ));
    }
    hex_u32(&params, 5, "version")?;
    hex_u32(&params, 6, "nbits")?;
    let ntime = hex_u32(&params, 7, "ntime")?;
    let clean = params[8].as_bool().unwrap_or(true);
    params[2] = Value::String(format!("{coinb1}{pool_extranonce1}"));
    params[0] = Value::String(miner_job_id(connection, id));
    params.truncate(9);
    Ok(finish(id, ntime, params, clean))
}

fn finish(id: u8, ntime: u32, mut params: Vec<Value>, clean: bool) -> Job {
    params[8] = Value::Bool(clean);
    let notify: Rc<[u8]> =
        notification("mining.notify", &Value::Array(params.clone()).to_string()).into();
    let notify_clean = if clean {
        notify.clone()
    } else {
        params[8] = Value::Bool(true);
        notification("mining.notify", &Value::Array(params.clone()).to_string()).into()
    };
    Job {
        id,
        ntime,
        clean,
        notify,
        notify_clean,
        params,
    }
}

/// A job to keep miners hashing while no pool connection is up (`always_keep_downconn`).
/// Its id starts with 'f' so that shares on it are recognised and never forwarded, and
/// the end of coinb2 (the lock time) carries `stamp` so every fake job differs.
pub fn fake_job(last: &Job, seq: u32, stamp: u32) -> Rc<[u8]> {
    let mut params = last.params.clone();
    params[0] = Value::String(format!("f{seq}"));
    if let Some(coinb2) = params[3].as_str() {
        let keep = coinb2.len().saturating_sub(8);
        params[3] = Value::String(format!("{}{:08x}", &coinb2[..keep], stamp.swap_bytes()));
    }
    params[8] = Value::Bool(true);
    notification("mining.notify", &Value::Array(params).to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &str = r#"["17","4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000","01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20020862062f503253482f04b8864e5008","072f736c7573682f000000000100f2052a010000001976a914d23fcdf86f7e756a64a7a9688ef9903327048ed988ac00000000",["a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"],"20000000","1d00ffff","504e86b9",false]"#;

    #[test]
    fn appends_pool_extranonce1_to_coinb1_byte_exact() {
        let job = rewrite_notify(NOTIFY, "a1b2c3d4", 3).unwrap();
        assert_eq!(job.id, 17);
        assert_eq!(job.ntime, 0x504e86b9);
        let want = concat!(
            r#"{"id":null,"method":"mining.notify","params":["3-17","4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000","#,
            r#""01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20020862062f503253482f04b8864e5008a1b2c3d4","#,
            r#""072f736c7573682f000000000100f2052a010000001976a914d23fcdf86f7e756a64a7a9688ef9903327048ed988ac00000000","#,
            r#"["a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"],"20000000","1d00ffff","504e86b9",false]}"#,
            "\n"
        );
        assert_eq!(std::str::from_utf8(&job.notify).unwrap(), want);
        let clean = want.replace("false]}", "true]}");
        assert_eq!(std::str::from_utf8(&job.notify_clean).unwrap(), clean);
    }

    #[test]
    fn clean_job_shares_one_buffer() {
        let job = rewrite_notify(&NOTIFY.replace("false]", "true]"), "00000001", 3).unwrap();
        assert!(Rc::ptr_eq(&job.notify, &job.notify_clean));
        assert!(job.clean);
        assert!(!rewrite_notify(NOTIFY, "00000001", 3).unwrap().clean);
    }

    #[test]
    fn refuses_what_the_agent_protocol_cannot_carry() {
        assert!(rewrite_notify(&NOTIFY.replace("\"17\"", "\"abc\""), "00", 3).is_err());
        assert!(rewrite_notify(&NOTIFY.replace("\"17\"", "\"256\""), "00", 3).is_err());
        assert!(rewrite_notify(&NOTIFY.replace("\"504e86b9\"", "\"xyz\""), "00", 3).is_err());
        assert!(rewrite_notify("[\"1\"]", "00", 3).is_err());
        assert!(rewrite_notify("{}", "00", 3).is_err());
        assert!(rewrite_notify(&NOTIFY.replace("[\"a1b2", "[1,\"a1b2"), "00", 3).is_err());
    }

    #[test]
    fn miner_job_ids_name_the_connection() {
        assert_eq!(miner_job_id(3, 17), "3-17");
        assert_eq!(parse_miner_job_id("3-17"), Some((3, 17)));
        assert_eq!(parse_miner_job_id("17"), None);
        assert_eq!(parse_miner_job_id("3-256"), None);
        assert_eq!(parse_miner_job_id("f1"), None);
        assert_eq!(parse_miner_job_id("-1"), None);
    }

    #[test]
    fn fake_jobs_are_marked_and_distinct() {
        let job = rewrite_notify(NOTIFY, "a1b2c3d4", 3).unwrap();
        let a = String::from_utf8(fake_job(&job, 1, 0x11223344).to_vec()).unwrap();
        let b = String::from_utf8(fake_job(&job, 2, 0x11223345).to_vec()).unwrap();
        assert!(a.contains(r#""params":["f1","#));
        assert!(a.contains("88ac44332211\""));
        assert!(a.ends_with("true]}\n"));
        assert_ne!(a, b);
    }
}
