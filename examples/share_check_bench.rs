//! How many shares per second the agent can check: each check rebuilds a coinbase,
//! folds a merkle branch, builds the header and hashes it, as behind a plain Stratum
//! pool every share is (docs/stratum-upstream.md has the figures and commands).
//!
//!   cargo run --release --example share_check_bench [-- CHECKS [BRANCH_LEN]]
//!
//! Prints figures; asserts nothing about speed.

use btcagent::protocol::stratum_upstream::hash::{sha256d, Target};
use btcagent::protocol::stratum_upstream::job::{Share, UpstreamJob};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let checks: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let branch_len: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(12);
    // The shape of a mainnet job: ckpool's 58-byte coinb1 (BIP 34 height, time,
    // nonce pushes), a 4-byte extranonce1 and 8-byte extranonce2, a 130-byte coinb2
    // (tag, payout and witness commitment outputs), 12 branch hashes (2,048 to 4,095
    // transactions).
    let seed = |tag: &[u8], i: usize| sha256d(&[tag, &(i as u64).to_le_bytes()].concat());
    let job = UpstreamJob {
        job_id: "bench".into(),
        prevhash: seed(b"prev", 0),
        coinb1: (0..2).flat_map(|i| seed(b"c1", i)).take(58).collect(),
        coinb2: (0..5).flat_map(|i| seed(b"c2", i)).take(130).collect(),
        branch: (0..branch_len).map(|i| seed(b"tx", i)).collect(),
        version: 0x2000_0000,
        nbits: 0x1702_9a8a,
        ntime: 0x679a_c169,
        clean: true,
    };
    let extranonce1 = [0xf1, 0xad, 0x9a, 0x67];
    let pool = Target::from_difficulty(1e6).expect("a positive difficulty");
    let miner = Target::from_difficulty(65536.0).expect("a positive difficulty");
    let started = Instant::now();
    let mut met = 0u32;
    for i in 0..checks {
        let extranonce2 = (i as u64).to_be_bytes();
        let share = Share {
            extranonce1: &extranonce1,
            extranonce2: &extranonce2,
            ntime: job.ntime,
            nonce: i.wrapping_mul(2_654_435_761),
            version_bits: Some((i << 13 & 0x1fff_e000, 0x1fff_e000)),
        };
        let check = job.check(&share, &pool, &miner);
        met += check.meets_miner as u32;
    }
    let seconds = started.elapsed().as_secs_f64();
    let coinbase = job.coinb1.len() + 12 + job.coinb2.len();
    println!(
        "share checks: {checks} in {seconds:.3} s = {:.0} checks/s ({:.2} us each); \
         {coinbase}-byte coinbase, {branch_len}-hash merkle branch, \
         {} SHA-256 blocks per check; {met} met the miner target",
        checks as f64 / seconds,
        seconds * 1e6 / checks as f64,
        // coinbase (+ padding) once, the txid once, 3 per branch level, header 2 + 1.
        coinbase.div_ceil(64) + usize::from(coinbase % 64 > 55) + 1 + 3 * branch_len + 3,
    );
}
