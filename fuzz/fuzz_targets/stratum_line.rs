//! A Stratum line from a miner or a pool, and what the agent reads out of it.
#![no_main]

use btcagent::protocol::stratum::{parse_hex_u32, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let Ok(msg) = Message::parse(line) else {
        return;
    };
    let _ = msg.id_text();
    let _ = msg.method();
    let _ = msg.result_is_true();
    let _ = msg.has_error();
    for p in msg.params_list() {
        if let Some(v) = parse_hex_u32(&p) {
            assert_eq!(
                parse_hex_u32(&serde_json::json!(format!("{v:08x}"))),
                Some(v)
            );
        }
    }
});
