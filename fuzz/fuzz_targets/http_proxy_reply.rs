//! An HTTP proxy's answer to the agent's CONNECT.
#![no_main]

use btcagent::upstream::http_connect;
use btcagent_fuzz::ScriptedPeer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|replies: &[u8]| {
    let _ = http_connect::parse_response_head(replies);
    let mut peer = ScriptedPeer::new(replies);
    let _ = smol::block_on(http_connect::handshake(
        &mut peer,
        "pool.example",
        1800,
        None,
    ));
});
