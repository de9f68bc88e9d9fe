//! One ex-message frame: decoding it, and encoding what was decoded.
#![no_main]

use btcagent::protocol::exmessage::{frame_len, ExMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let _ = frame_len(frame);
    let Ok(msg) = ExMessage::decode(frame) else {
        return;
    };
    // What decodes encodes to a frame that decodes again.
    let bytes = msg.to_bytes();
    assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
    let again = ExMessage::decode(&bytes).expect("an encoded frame decodes");
    match msg {
        // Names are cut to fit sserver's 100-byte REGISTER_WORKER (and decoded
        // lossily), so only the frame's size is certain.
        ExMessage::RegisterWorker { .. } => assert!(bytes.len() <= 100, "{}", bytes.len()),
        _ => assert_eq!(again, msg),
    }
});
