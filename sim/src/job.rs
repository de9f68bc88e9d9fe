//! Mining jobs: what `mining.notify` carries, built by the pool simulator and parsed
//! by the simulated miners. The pool embeds its send time (microseconds since the Unix
//! epoch) in the coinbase scriptSig so any process that receives the job, even through
//! the agent, can compute the fan-out latency with [`job_sent_at_us`].

use crate::bitcoin::{hex_decode, hex_encode, hex_u32, parse_hex_u32, sha256d, swap_words};
use serde_json::{json, Value};

/// The hashing inputs of a job, in binary form (prevhash in header byte order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    pub prevhash: [u8; 32],
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
}

impl Work {
    /// coinb1 + extranonce parts + coinb2, hashed up the branch.
    pub fn merkle_root(&self, extranonce_parts: &[&[u8]]) -> [u8; 32] {
        let mut coinbase = Vec::with_capacity(self.coinb1.len() + 16 + self.coinb2.len());
        coinbase.extend_from_slice(&self.coinb1);
        for part in extranonce_parts {
            coinbase.extend_from_slice(part);
        }
        coinbase.extend_from_slice(&self.coinb2);
        crate::bitcoin::merkle_root(&coinbase, &self.branch)
    }

    pub fn header_hash(
        &self,
        merkle_root: &[u8; 32],
        version: u32,
        ntime: u32,
        nonce: u32,
    ) -> [u8; 32] {
        let header = crate::bitcoin::block_header(
            version,
            &self.prevhash,
            merkle_root,
            ntime,
            self.nbits,
            nonce,
        );
        sha256d(&header)
    }
}

/// A job as the pool sent it on one connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub work: Work,
    pub clean: bool,
    pub sent_at_us: u64,
}

/// Offset of the 8-byte little-endian send timestamp inside coinb1.
const TIMESTAMP_AT: usize = 47;
/// coinb1 ends with the push opcode for the 12 extranonce bytes.
const COINB1_LEN: usize = 56;
const COINBASE_TAG: &[u8] = b"/btcagent-sim/";

impl Job {
    /// A realistic job: `seq` varies prevhash, branch and height; `sent_at_us` is embedded.
    pub fn build(id: u8, seq: u64, sent_at_us: u64, clean: bool, branch_len: usize) -> Job {
        Job::build_on(id, seq, seq, sent_at_us, clean, branch_len)
    }

    /// A job on block `block` (prevhash and height come from it, as jobs between two
    /// blocks share them); `seq` varies the branch.
    pub fn build_on(
        id: u8,
        block: u64,
        seq: u64,
        sent_at_us: u64,
        clean: bool,
        branch_len: usize,
    ) -> Job {
        let height = (800_000 + block) as u32;
        let mut coinb1 = Vec::with_capacity(COINB1_LEN);
        coinb1.extend_from_slice(&1u32.to_le_bytes()); // tx version
        coinb1.push(1); // one input
        coinb1.extend_from_slice(&[0; 32]); // null prevout hash
        coinb1.extend_from_slice(&[0xff; 4]); // null prevout index
        let script_len = 4 + 9 + 13 + 1 + COINBASE_TAG.len();
        coinb1.push(script_len as u8);
        coinb1.push(3); // BIP34 height push
        coinb1.extend_from_slice(&height.to_le_bytes()[..3]);
        coinb1.push(8);
        coinb1.extend_from_slice(&sent_at_us.to_le_bytes());
        coinb1.push(12); // push of extranonce1 (4) + extranonce2 (8)
        debug_assert_eq!(coinb1.len(), COINB1_LEN);

        let mut coinb2 = Vec::with_capacity(64);
        coinb2.push(COINBASE_TAG.len() as u8);
        coinb2.extend_from_slice(COINBASE_TAG);
        coinb2.extend_from_slice(&[0xff; 4]); // sequence
        coinb2.push(1); // one output
        coinb2.extend_from_slice(&625_000_000u64.to_le_bytes());
        coinb2.extend_from_slice(&[0x19, 0x76, 0xa9, 0x14]);
        coinb2.extend_from_slice(&sha256d(b"btcagent-sim payout")[..20]);
        coinb2.extend_from_slice(&[0x88, 0xac]);
        coinb2.extend_from_slice(&[0; 4]); // lock time

        let seed = seq.to_le_bytes();
        let mut prevhash = sha256d(&[b"prev".as_slice(), &block.to_le_bytes()].concat());
        // A real previous block hash: leading zeros when printed, trailing in header order.
        prevhash[24..].fill(0);
        let branch = (0..branch_len)
            .map(|i| sha256d(&[b"tx".as_slice(), &seed, &(i as u64).to_le_bytes()].concat()))
            .collect();
        Job {
            id: id.to_string(),
            work: Work {
                prevhash,
                coinb1,
                coinb2,
                branch,
                version: 0x2000_0000,
                nbits: 0x1703_a30c,
                ntime: (sent_at_us / 1_000_000) as u32,
            },
            clean,
            sent_at_us,
        }
    }

    /// The `mining.notify` notification line (with trailing newline).
    pub fn notify_line(&self) -> String {
        let w = &self.work;
        let branch: Vec<String> = w.branch.iter().map(|h| hex_encode(h)).collect();
        let message = json!({
            "id": null,
            "method": "mining.notify",
            "params": [
                self.id,
                hex_encode(&swap_words(&w.prevhash)),
                hex_encode(&w.coinb1),
                hex_encode(&w.coinb2),
                branch,
                hex_u32(w.version),
                hex_u32(w.nbits),
                hex_u32(w.ntime),
                self.clean,
            ]
        });
        format!("{message}\n")
    }

    /// Parses `mining.notify` params; `None` when any field is malformed.
    pub fn from_notify_params(params: &Value) -> Option<Job> {
        let p = params.as_array()?;
        if p.len() < 9 {
            return None;
        }
        let prev: [u8; 32] = hex_decode(p[1].as_str()?)?.try_into().ok()?;
        let mut branch = Vec::new();
        for hash in p[4].as_array()? {
            branch.push(hex_decode(hash.as_str()?)?.try_into().ok()?);
        }
        let coinb1 = hex_decode(p[2].as_str()?)?;
        Some(Job {
            id: p[0].as_str()?.to_string(),
            sent_at_us: job_sent_at_us(&coinb1).unwrap_or(0),
            work: Work {
                prevhash: swap_words(&prev),
                coinb1,
                coinb2: hex_decode(p[3].as_str()?)?,
                branch,
                version: parse_hex_u32(p[5].as_str()?)?,
                nbits: parse_hex_u32(p[6].as_str()?)?,
                ntime: parse_hex_u32(p[7].as_str()?)?,
            },
            clean: p[8].as_bool()?,
        })
    }
}

/// The pool's send time embedded in a coinb1 built by [`Job::build`] (also after the
/// agent appended its extranonce1), or `None` for a foreign coinbase.
pub fn job_sent_at_us(coinb1: &[u8]) -> Option<u64> {
    if coinb1.len() < COINB1_LEN || coinb1[42] != 3 || coinb1[46] != 8 || coinb1[55] != 12 {
        return None;
    }
    let bytes: [u8; 8] = coinb1[TIMESTAMP_AT..TIMESTAMP_AT + 8].try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_round_trip_keeps_work_and_timestamp() {
        let job = Job::build(7, 42, 1_700_000_000_123_456, true, 3);
        let line = job.notify_line();
        assert!(line.ends_with('\n'));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["method"], "mining.notify");
        let parsed = Job::from_notify_params(&value["params"]).unwrap();
        assert_eq!(parsed, job);
        assert_eq!(parsed.sent_at_us, 1_700_000_000_123_456);
        // The agent appends its extranonce1 to coinb1: the timestamp must survive.
        let mut longer = job.work.coinb1.clone();
        longer.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(job_sent_at_us(&longer), Some(1_700_000_000_123_456));
        assert_eq!(job_sent_at_us(&job.work.coinb2), None);
    }

    #[test]
    fn coinbase_is_a_well_formed_transaction() {
        let job = Job::build(0, 1, 5, false, 0);
        let w = &job.work;
        let script_len = w.coinb1[41] as usize;
        // Script: everything after the length byte in coinb1, 12 extranonce bytes,
        // then coinb2 up to the 4-byte sequence.
        let in_coinb2 = script_len - (w.coinb1.len() - 42) - 12;
        assert_eq!(&w.coinb2[in_coinb2..in_coinb2 + 4], &[0xff; 4]);
        assert_eq!(w.coinb2.len() - in_coinb2, 4 + 1 + 8 + 1 + 25 + 4);
    }

    #[test]
    fn malformed_notify_is_refused() {
        let job = Job::build(1, 1, 1, true, 2);
        let value: Value = serde_json::from_str(&job.notify_line()).unwrap();
        let mut params = value["params"].clone();
        params[5] = json!("2000000");
        assert!(Job::from_notify_params(&params).is_none());
        let mut params = value["params"].clone();
        params[4] = json!(["00"]);
        assert!(Job::from_notify_params(&params).is_none());
        assert!(Job::from_notify_params(&json!([])).is_none());
    }
}
