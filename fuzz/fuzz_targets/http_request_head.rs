//! A request head on the HTTP debug port (status and metrics).
#![no_main]

use btcagent::http_debug::route;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|head: &[u8]| {
    let _ = route(head);
});
