//! A plain Stratum pool's job in binary form, and the check of one share against it:
//! the coinbase rebuilt from coinb1, the extranonces and coinb2, the merkle root, the
//! header with the share's ntime, nonce and rolled version, its sha256d, and the two
//! targets that decide what happens to it (the pool's: forward; the miner's: accept).

use super::hash::{block_header, merkle_root, rolled_version, sha256d, swap_words, Target};
use super::hex;
use super::UpstreamError;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Longest coinb1 or coinb2 accepted, in bytes: ckpool bounds its own at 8192
/// (stratifier.c `MAX_COINBASE_LEN`); a coinbase is at most a block anyway.
pub const MAX_COINBASE_PART: usize = 8192;
/// Most merkle branch entries: 2^32 transactions is beyond any block.
pub const MAX_BRANCH: usize = 32;
/// Longest pool job id kept (ckpool's are 16 hex digits).
pub const MAX_JOB_ID: usize = 64;

/// One `mining.notify` from the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamJob {
    /// The pool's job id, echoed in `mining.submit`.
    pub job_id: Box<str>,
    /// The previous block hash in header byte order.
    pub prevhash: [u8; 32],
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    /// clean_jobs: earlier jobs are void.
    pub clean: bool,
}

/// What one share is, at the pool's level: extranonce2 already at the pool's size
/// (the miner's prefix and extranonce2, padded; see [`super::extranonce::Split`]).
#[derive(Clone, Copy, Debug)]
pub struct Share<'a> {
    pub extranonce1: &'a [u8],
    pub extranonce2: &'a [u8],
    pub ntime: u32,
    pub nonce: u32,
    /// `version_bits` and the mask in force; `None` without version rolling.
    pub version_bits: Option<(u32, u32)>,
}

/// How a share compares to the two targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareCheck {
    /// sha256d of the header, header byte order.
    pub hash: [u8; 32],
    /// Meets the pool's target: forward it.
    pub meets_pool: bool,
    /// Meets the miner's own target: accept it (answered by the agent when not forwarded).
    pub meets_miner: bool,
}

impl UpstreamJob {
    /// Parses `mining.notify` params:
    /// `[job_id, prevhash, coinb1, coinb2, [branch...], version, nbits, ntime, clean]`.
    pub fn from_params(params: &[Value]) -> Result<UpstreamJob, UpstreamError> {
        let err = |what: String| UpstreamError::new("mining.notify", what);
        if params.len() < 9 {
            return Err(err(format!("{} params, 9 expected", params.len())));
        }
        let job_id = match &params[0] {
            Value::String(s) if !s.is_empty() && s.len() <= MAX_JOB_ID => s.as_str(),
            Value::String(s) if s.is_empty() => return Err(err("job id is empty".into())),
            Value::String(_) => {
                return Err(err(format!(
                    "job id is longer than {MAX_JOB_ID} characters"
                )))
            }
            _ => return Err(err("job id (param 0) is not a string".into())),
        };
        let text = |i: usize, what: &str| {
            params[i]
                .as_str()
                .ok_or_else(|| err(format!("{what} (param {i}) is not a string")))
        };
        let prev = text(1, "prevhash")?;
        let prevhash = hex::decode_array::<32>(prev)
            .ok_or_else(|| err(format!("prevhash (param 1) is not 64 hex digits: {prev:?}")))?;
        let part = |i: usize, what: &str| -> Result<Vec<u8>, UpstreamError> {
            let t = text(i, what)?;
            if t.len() > 2 * MAX_COINBASE_PART {
                return Err(err(format!(
                    "{what} (param {i}) is longer than {MAX_COINBASE_PART} bytes"
                )));
            }
            hex::decode(t).ok_or_else(|| err(format!("{what} (param {i}) is not hex")))
        };
        let coinb1 = part(2, "coinb1")?;
        let coinb2 = part(3, "coinb2")?;
        let entries = params[4]
            .as_array()
            .ok_or_else(|| err("merkle branch (param 4) is not a list".into()))?;
        if entries.len() > MAX_BRANCH {
            return Err(err(format!(
                "merkle branch has {} entries, at most {MAX_BRANCH} make sense",
                entries.len()
            )));
        }
        let branch = entries
            .iter()
            .enumerate()
            .map(|(i, h)| {
                h.as_str()
                    .and_then(hex::decode_array::<32>)
                    .ok_or_else(|| err(format!("merkle branch entry {i} is not 64 hex digits")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let word = |i: usize, what: &str| -> Result<u32, UpstreamError> {
            let t = text(i, what)?;
            hex::parse_u32(t)
                .ok_or_else(|| err(format!("{what} (param {i}) is not 8 hex digits: {t:?}")))
        };
        let version = word(5, "version")?;
        let nbits = word(6, "nbits")?;
        let ntime = word(7, "ntime")?;
        let clean = params[8]
            .as_bool()
            .ok_or_else(|| err("clean_jobs (param 8) is not true or false".into()))?;
        Ok(UpstreamJob {
            job_id: job_id.into(),
            prevhash: swap_words(&prevhash),
            coinb1,
            coinb2,
            branch,
            version,
            nbits,
            ntime,
            clean,
        })
    }

    /// The coinbase transaction as the pool rebuilds it (legacy serialization, which is
    /// what its txid hashes).
    pub fn coinbase(&self, extranonce1: &[u8], extranonce2: &[u8]) -> Vec<u8> {
        [&self.coinb1[..], extranonce1, extranonce2, &self.coinb2].concat()
    }

    /// The merkle root for these extranonces, hashing the coinbase in place.
    pub fn merkle_root(&self, extranonce1: &[u8], extranonce2: &[u8]) -> [u8; 32] {
        let first = Sha256::new()
            .chain_update(&self.coinb1)
            .chain_update(extranonce1)
            .chain_update(extranonce2)
            .chain_update(&self.coinb2)
            .finalize();
        let txid: [u8; 32] = Sha256::digest(first).into();
        merkle_root(txid, &self.branch)
    }

    /// The header a share commits to.
    pub fn header(&self, share: &Share) -> [u8; 80] {
        let root = self.merkle_root(share.extranonce1, share.extranonce2);
        let version = match share.version_bits {
            Some((bits, mask)) => rolled_version(self.version, bits, mask),
            None => self.version,
        };
        block_header(
            version,
            &self.prevhash,
            &root,
            share.ntime,
            self.nbits,
            share.nonce,
        )
    }

    /// Rebuilds and hashes the share, and compares it with both targets.
    pub fn check(&self, share: &Share, pool: &Target, miner: &Target) -> ShareCheck {
        let hash = sha256d(&self.header(share));
        ShareCheck {
            hash,
            meets_pool: pool.is_met_by(&hash),
            meets_miner: miner.is_met_by(&hash),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::stratum_upstream::hash::hash_difficulty;
    use serde_json::json;

    /// Block 881,423 (2025-01-30, found by the 256 Foundation's "Telehash" pool): its
    /// coinbase in legacy serialization, split where its scriptSig's 12-byte push
    /// holds a ckpool-style 4-byte extranonce1 and 8-byte extranonce2, its 11 merkle
    /// branch hashes, and its header fields. Source: the block itself, as quoted by
    /// 256foundation/mujina (mujina-miner/src/job_source/test_blocks.rs, commit
    /// 497ee957), with the segwit marker and witness removed from its coinbase.
    pub(crate) mod block_881423 {
        pub const PREVHASH_NOTIFY: &str =
            "8a6ac9e3fe15ca70f8995e21434cb64ac4d2b5e10001543b0000000000000000";
        pub const COINB1: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff3d030f730d000469c19a6704830cee220c";
        pub const EXTRANONCE1: &str = "f1ad9a67";
        pub const EXTRANONCE2: &str = "b660000000000000";
        pub const COINB2: &str = "0a41706f6c6c6f192f6d696e65642062792032353620466f756e646174696f6e2fffffffff0275aac01200000000160014c64b1b9283ba1ea86bb9e7b696b0c8f68dad04000000000000000000266a24aa21a9edb395560ab72068c2afb1d7e6c7db26b813482089d2c4d2471b9036c5e826140600000000";
        pub const BRANCH: [&str; 11] = [
            "4282357ab0a2f4e8e562c8c5eae1d63b559068f9072374b72e26b88ac841908f",
            "c2bbae90d06f8025ade3516ca2e42d79318b6e56fccb9609df85a654a8341068",
            "cbb30084acbcb5ce6d5436e853bc612466df0c00702be6f51d47072f1a5d0480",
            "bb092e533f70b79246fc9e4bdc9b81ac8332e56f2651e3b237a150d6d807b081",
            "0d32959988733447cb340326a1fe4d3c2cff5d636e32a4e08c3fc5a234f6f6bc",
            "8ba3477940924a90067cff3dd30bc46916cf4c2f73fb6229b8f8197b83b6ddb9",
            "3fe97cc5dec1cddd66c9d3780888c145c12418590cd983c4871b1bf03fabbf9e",
            "bd1c6a3bcd0ebaa0eca54d9c802540f312c7705435601d776b4f59bb52cff67d",
            "8638c10190b8f4f558bafdbb57f46226c349a83f229f431143ae75e425fb5cbd",
            "6d6f4eae41cccb21a7c97ac496d9f89b8a4f772389b76f7691519dda38264221",
            "82dad7a1e2613af0e61f77f03d6208c83e72f917dade4235cc35e37ee3ad6e3f",
        ];
        /// The job's version before rolling, and the bits rolled within 1fffe000.
        pub const JOB_VERSION: &str = "20000000";
        pub const VERSION_BITS: u32 = 0x0e59_6000;
        pub const NBITS: &str = "17029a8a";
        pub const NTIME: &str = "679ac169";
        pub const NONCE: u32 = 0xff05_fb02;
        pub const MERKLE_ROOT: &str =
            "2d62cfdf6b3470f7c870e8a4be8fbf58dfbbeee2ccb03e6d01b5b8f1353af676";
        pub const BLOCK_HASH: &str =
            "0000000000000000000269d52c24ea451225613aab095d90d771d4e29aa96cdd";
    }

    /// Block 881,423 as a pool would have announced it.
    pub(crate) fn notify_881423() -> Vec<Value> {
        use block_881423::*;
        serde_json::from_value(json!([
            "67d5e1a400001a2b",
            PREVHASH_NOTIFY,
            COINB1,
            COINB2,
            BRANCH,
            JOB_VERSION,
            NBITS,
            NTIME,
            true
        ]))
        .unwrap()
    }

    fn displayed(hash: &[u8; 32]) -> String {
        let mut b = *hash;
        b.reverse();
        hex::encode(&b)
    }

    #[test]
    fn block_881423_from_a_notify_and_its_extranonces() {
        use block_881423::*;
        let job = UpstreamJob::from_params(&notify_881423()).unwrap();
        let ex1 = hex::decode(EXTRANONCE1).unwrap();
        let ex2 = hex::decode(EXTRANONCE2).unwrap();
        assert_eq!(displayed(&job.merkle_root(&ex1, &ex2)), MERKLE_ROOT);
        // The in-place coinbase hash is the hash of the assembled coinbase.
        assert_eq!(
            sha256d(&job.coinbase(&ex1, &ex2)),
            super::super::hash::sha256d(&job.coinbase(&ex1, &ex2))
        );
        let share = Share {
            extranonce1: &ex1,
            extranonce2: &ex2,
            ntime: job.ntime,
            nonce: NONCE,
            version_bits: Some((VERSION_BITS, 0x1fff_e000)),
        };
        let header = job.header(&share);
        assert_eq!(&header[..4], &0x2e59_6000u32.to_le_bytes());
        let block = Target::from_nbits(job.nbits).unwrap();
        let pool = Target::from_difficulty(1e9).unwrap();
        let check = job.check(&share, &pool, &block);
        assert_eq!(displayed(&check.hash), BLOCK_HASH);
        assert!(
            check.meets_pool && check.meets_miner,
            "a block meets every share target"
        );
        assert!(hash_difficulty(&check.hash) > 1.1e14);
        // The same share without its rolled version bits, or one nonce off, is
        // worthless even at difficulty 1.
        let diff1 = Target::from_difficulty(1.0).unwrap();
        for bad in [
            Share {
                version_bits: None,
                ..share
            },
            Share {
                nonce: NONCE ^ 1,
                ..share
            },
            Share {
                ntime: job.ntime + 1,
                ..share
            },
        ] {
            let c = job.check(&bad, &diff1, &diff1);
            assert!(!c.meets_pool && !c.meets_miner);
        }
    }

    #[test]
    fn notify_refusals_name_the_problem() {
        let good = notify_881423();
        let with = |i: usize, v: Value| {
            let mut p = good.clone();
            p[i] = v;
            UpstreamJob::from_params(&p).unwrap_err().to_string()
        };
        assert_eq!(
            UpstreamJob::from_params(&good[..8])
                .unwrap_err()
                .to_string(),
            "mining.notify: 8 params, 9 expected"
        );
        assert_eq!(
            with(0, json!(7)),
            "mining.notify: job id (param 0) is not a string"
        );
        assert_eq!(with(0, json!("")), "mining.notify: job id is empty");
        assert!(with(0, json!("x".repeat(65))).contains("longer than 64"));
        assert!(with(1, json!("00")).contains("prevhash (param 1) is not 64 hex digits"));
        assert_eq!(
            with(2, json!("0g")),
            "mining.notify: coinb1 (param 2) is not hex"
        );
        assert_eq!(
            with(3, json!("abc")),
            "mining.notify: coinb2 (param 3) is not hex"
        );
        assert!(with(3, json!("00".repeat(8193))).contains("longer than 8192 bytes"));
        assert_eq!(
            with(4, json!("00")),
            "mining.notify: merkle branch (param 4) is not a list"
        );
        assert_eq!(
            with(4, json!(["00"])),
            "mining.notify: merkle branch entry 0 is not 64 hex digits"
        );
        assert!(with(4, json!(vec!["00".repeat(32); 33])).contains("33 entries"));
        assert!(with(5, json!("2000000")).contains("version (param 5) is not 8 hex digits"));
        assert!(with(6, json!(null)).contains("nbits (param 6) is not a string"));
        assert!(with(7, json!("xyzxyzxy")).contains("ntime (param 7)"));
        assert_eq!(
            with(8, json!("true")),
            "mining.notify: clean_jobs (param 8) is not true or false"
        );
        // Extra params (some pools add more) are ignored.
        let mut more = good.clone();
        more.push(json!("extra"));
        assert!(UpstreamJob::from_params(&more).is_ok());
    }
}
