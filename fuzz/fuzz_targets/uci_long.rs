//! Long UCI files built from a short input: `head`, then `unit` repeated until the file
//! is near the translator's 1 MiB cap, then `tail`, where a 0x01 byte in `unit` becomes
//! the repetition's number (so option and section names can differ). Quadratic parsing
//! (counting anonymous sections, finding options by a scan) took 10-90 s on such files:
//! libFuzzer's per-input timeout catches it coming back.
//!
//! Input: `head`, 0x00, `unit`, 0x00, `tail`; without two 0x00 bytes it is all `unit`.
#![no_main]

use btcagent::config::Config;
use btcagent::uci::uci_to_json;
use libfuzzer_sys::fuzz_target;

const CAP: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (head, unit, tail) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(u), Some(t)) => (h, u, t),
        _ => (&[][..], data, &[][..]),
    };
    if unit.is_empty() || head.len() + tail.len() >= CAP {
        return;
    }
    let mut text = head.to_vec();
    let mut i = 0u32;
    loop {
        let number = i.to_string();
        let piece: Vec<u8> = unit
            .iter()
            .flat_map(|&b| {
                if b == 1 {
                    number.as_bytes().to_vec()
                } else {
                    vec![b]
                }
            })
            .collect();
        if text.len() + piece.len() + tail.len() > CAP {
            break;
        }
        text.extend_from_slice(&piece);
        i += 1;
    }
    text.extend_from_slice(tail);
    let Ok(text) = std::str::from_utf8(&text) else {
        return;
    };
    if let Ok(json) = uci_to_json(text) {
        let _ = Config::from_json_value(&json);
    }
});
