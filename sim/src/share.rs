//! Share math for both sides: the pool's check of a submitted share and the miner's
//! nonce search. Both rebuild the same coinbase, so one test pins them together.

use crate::bitcoin::hash_meets_target;
use crate::exmsg::{Submit, STATUS_ACCEPT, STATUS_ILLEGAL_VERSION_MASK, STATUS_LOW_DIFFICULTY};
use crate::job::Work;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    LowDifficulty,
    IllegalVersionMask,
}

impl Verdict {
    pub fn status(self) -> u32 {
        match self {
            Verdict::Valid => STATUS_ACCEPT,
            Verdict::LowDifficulty => STATUS_LOW_DIFFICULTY,
            Verdict::IllegalVersionMask => STATUS_ILLEGAL_VERSION_MASK,
        }
    }
}

/// The pool's 8-byte extranonce2 for an agent share: `session_id << 32 | extranonce2`,
/// big-endian (hex "0000SSSS" followed by the miner's 8 hex digits).
pub fn pool_extranonce2(session_id: u16, extranonce2: u32) -> [u8; 8] {
    ((session_id as u64) << 32 | extranonce2 as u64).to_be_bytes()
}

/// Checks one ex-message share against the job it names, as btcpool does.
pub fn check_submit(
    work: &Work,
    pool_extranonce1: &[u8; 4],
    submit: &Submit,
    allowed_version_mask: u32,
    target_be: &[u8; 32],
) -> Verdict {
    let mask = submit.version_mask.unwrap_or(0);
    if mask & !allowed_version_mask != 0 {
        return Verdict::IllegalVersionMask;
    }
    let extranonce2 = pool_extranonce2(submit.session_id, submit.extranonce2);
    let root = work.merkle_root(&[pool_extranonce1, &extranonce2]);
    let ntime = submit.ntime.unwrap_or(work.ntime);
    let hash = work.header_hash(&root, work.version ^ mask, ntime, submit.nonce);
    if hash_meets_target(&hash, target_be) {
        Verdict::Valid
    } else {
        Verdict::LowDifficulty
    }
}

/// Deposits the low bits of `counter` into the set bits of `mask` (like x86 PDEP):
/// how a miner turns a roll counter into version bits it may flip.
pub fn spread_bits(mut counter: u32, mask: u32) -> u32 {
    let mut out = 0;
    let mut remaining = mask;
    while remaining != 0 && counter != 0 {
        let lowest = remaining & remaining.wrapping_neg();
        if counter & 1 == 1 {
            out |= lowest;
        }
        counter >>= 1;
        remaining &= remaining - 1;
    }
    out
}

/// Tries `count` nonces from `nonce_start` with the given flipped version bits;
/// returns the first nonce whose header hash meets the target.
pub fn search_nonce(
    work: &Work,
    merkle_root: &[u8; 32],
    version_bits: u32,
    ntime: u32,
    target_be: &[u8; 32],
    nonce_start: u32,
    count: u32,
) -> Option<u32> {
    let version = work.version ^ version_bits;
    (0..count)
        .map(|i| nonce_start.wrapping_add(i))
        .find(|&nonce| {
            hash_meets_target(
                &work.header_hash(merkle_root, version, ntime, nonce),
                target_be,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::{hex_decode, parse_hex_u32, target_for_difficulty};
    use crate::exmsg::{CMD_SUBMIT_SHARE, CMD_SUBMIT_SHARE_WITH_TIME_VER};
    use crate::job::Job;

    const POOL_EX1: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];
    const SESSION: u16 = 0x0102;

    /// Mines like a miner behind the agent: the agent's coinb1 already carries the
    /// pool extranonce1; the miner's extranonce1 is "0000SSSS", its extranonce2 4 bytes.
    fn mine(job: &Job, difficulty: f64, ex2: u32, version_bits: u32, ntime: u32) -> u32 {
        let mut agent_work = job.work.clone();
        agent_work.coinb1.extend_from_slice(&POOL_EX1);
        let miner_ex1 = hex_decode(&format!("{:08x}", SESSION as u32)).unwrap();
        let miner_ex2 = hex_decode(&format!("{ex2:08x}")).unwrap();
        let root = agent_work.merkle_root(&[&miner_ex1, &miner_ex2]);
        let target = target_for_difficulty(difficulty);
        search_nonce(&agent_work, &root, version_bits, ntime, &target, 0, 1 << 22).unwrap()
    }

    fn submit(cmd: u8, ex2: u32, nonce: u32, ntime: Option<u32>, mask: Option<u32>) -> Submit {
        Submit {
            cmd,
            job_id: 3,
            session_id: SESSION,
            extranonce2: ex2,
            nonce,
            ntime,
            version_mask: mask,
        }
    }

    #[test]
    fn mined_share_passes_and_mangled_ones_fail() {
        let job = Job::build(3, 9, 1_000_000, true, 4);
        // Difficulty 1 takes ~2^32 hashes, 2^-16 about 65536: hard enough that a
        // mangled share passes by chance with probability 2^-16 only.
        let difficulty = 2f64.powi(-16);
        let target = target_for_difficulty(difficulty);
        let ex2 = 0x11223344;
        let nonce = mine(&job, difficulty, ex2, 0, job.work.ntime);
        let good = submit(CMD_SUBMIT_SHARE, ex2, nonce, None, None);
        assert_eq!(
            check_submit(&job.work, &POOL_EX1, &good, 0, &target),
            Verdict::Valid
        );
        let hard = target;
        for (name, bad) in [
            (
                "nonce",
                Submit {
                    nonce: nonce.wrapping_add(1 << 31),
                    ..good
                },
            ),
            (
                "extranonce2",
                Submit {
                    extranonce2: ex2 ^ 0x100,
                    ..good
                },
            ),
            (
                "session",
                Submit {
                    session_id: SESSION + 1,
                    ..good
                },
            ),
            (
                "ntime",
                Submit {
                    ntime: Some(job.work.ntime + 1),
                    ..good
                },
            ),
            (
                "version",
                Submit {
                    version_mask: Some(0x2000),
                    ..good
                },
            ),
        ] {
            let verdict = check_submit(&job.work, &POOL_EX1, &bad, 0x1fffe000, &hard);
            assert_eq!(
                verdict,
                Verdict::LowDifficulty,
                "mangled {name} must be invalid"
            );
        }
        let wrong_pool_ex1 = [0, 0, 0, 0];
        assert_eq!(
            check_submit(&job.work, &wrong_pool_ex1, &good, 0, &hard),
            Verdict::LowDifficulty
        );
    }

    #[test]
    fn version_rolling_share_with_time() {
        let job = Job::build(3, 10, 2_000_000, false, 2);
        let mask = parse_hex_u32("1fffe000").unwrap();
        let bits = spread_bits(0b1011, mask);
        assert_eq!(bits, 0b1011 << 13);
        let ntime = job.work.ntime + 7;
        let difficulty = 2f64.powi(-28);
        let nonce = mine(&job, difficulty, 5, bits, ntime);
        let target = target_for_difficulty(difficulty);
        let share = submit(
            CMD_SUBMIT_SHARE_WITH_TIME_VER,
            5,
            nonce,
            Some(ntime),
            Some(bits),
        );
        assert_eq!(
            check_submit(&job.work, &POOL_EX1, &share, mask, &target),
            Verdict::Valid
        );
        // The same bits outside the pool's mask are refused.
        assert_eq!(
            check_submit(&job.work, &POOL_EX1, &share, 0, &target),
            Verdict::IllegalVersionMask
        );
    }

    #[test]
    fn extranonce2_layout() {
        assert_eq!(
            pool_extranonce2(0x1122, 0xaabbccdd),
            [0, 0, 0x11, 0x22, 0xaa, 0xbb, 0xcc, 0xdd]
        );
        assert_eq!(spread_bits(u32::MAX, 0), 0);
        assert_eq!(spread_bits(1, 0x8000_0000), 0x8000_0000);
    }
}
