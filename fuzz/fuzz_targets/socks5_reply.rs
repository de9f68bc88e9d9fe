//! A SOCKS5 proxy's replies to the agent's handshake.
#![no_main]

use btcagent::upstream::socks5;
use btcagent_fuzz::ScriptedPeer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|replies: &[u8]| {
    let auth = ("user".to_string(), "pass".to_string());
    for (host, auth) in [("pool.example", None), ("192.0.2.1", Some(&auth))] {
        let mut peer = ScriptedPeer::new(replies);
        let _ = smol::block_on(socks5::handshake(&mut peer, host, 1800, auth));
    }
});
