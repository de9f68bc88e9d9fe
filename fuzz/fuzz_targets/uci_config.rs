//! /etc/config/btcagent through the UCI translator into the agent's config.
#![no_main]

use btcagent::config::Config;
use btcagent::uci::uci_to_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(json) = uci_to_json(text) {
        let _ = Config::from_json_value(&json);
    }
});
