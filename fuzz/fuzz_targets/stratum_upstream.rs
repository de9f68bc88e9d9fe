//! A plain Stratum pool's lines through one upstream connection's state, with miners'
//! shares judged in between: whatever the pool sends, nothing panics, an error ends
//! the connection cleanly, and what the state keeps stays bounded.
#![no_main]

use btcagent::protocol::stratum_upstream::connection::{MinerShare, Settings, StratumConnection};
use btcagent::protocol::stratum_upstream::extranonce::MinerExtranonce2;
use btcagent::protocol::stratum_upstream::vardiff::VardiffConfig;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut c = StratumConnection::new(Settings {
        connection: 1,
        user: "acct.farm1".into(),
        password: "x".into(),
        user_agent: "btcagent/fuzz".into(),
        extranonce_subscribe: true,
        vardiff: VardiffConfig::for_interval(10.0),
        start_difficulty: 16384.0,
        min_difficulty: 1e-9,
        passthrough: false,
    });
    let t0 = Instant::now();
    let _ = c.handshake();
    for sid in 0..4 {
        c.add_miner(sid, 0.0, t0);
    }
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 250);
        if c.on_line(line, now).is_err() {
            return; // the session closes the connection
        }
        // A share from the line's first bytes, on any job number.
        let b = |k: usize| line.get(k).copied().unwrap_or(0);
        // The miner's extranonce2 at any size a layout gives (3 or 4), or a wrong one.
        let size = 1 + usize::from(b(17) % 4);
        let hex: String = (0..size).map(|k| format!("{:02x}", b(2 + k))).collect();
        let Some(extranonce2) = MinerExtranonce2::parse(&hex, size) else {
            continue;
        };
        let share = MinerShare {
            job_id: b(0),
            session_id: u16::from(b(1) % 5),
            extranonce2,
            nonce: u32::from_le_bytes([b(6), b(7), b(8), b(9)]),
            ntime: (b(10) & 1 == 1).then(|| u32::from_le_bytes([b(11), b(12), b(13), b(14)])),
            version_mask: (b(15) & 1 == 1).then(|| u32::from(b(16)) << 13),
        };
        let _ = c.judge(&share, 16, now);
        let _ = c.tick(now);
        assert!(c.miner_count() <= 4);
        assert!(c.version_mask() == 0 || c.is_up() || c.version_mask() != 0);
    }
});
