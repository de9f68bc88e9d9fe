//! The pool's byte stream split into lines and ex-messages: the frames must not depend
//! on how the bytes were cut into reads.
#![no_main]

use btcagent::protocol::exmessage::ExMessage;
use btcagent::protocol::framing::{Frame, FrameReader};
use btcagent::protocol::stratum::Message;
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 4096;

/// Frames (as owned bytes, tagged) until the first error, and whether one came.
fn frames(stream: &[u8], chunk: usize) -> (Vec<(bool, Vec<u8>)>, bool) {
    let mut reader = FrameReader::new(MAX_LINE);
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        reader.extend(piece);
        loop {
            match reader.next_frame() {
                Ok(Some(Frame::Line(l))) => {
                    assert!(l.len() <= MAX_LINE);
                    let _ = Message::parse(l);
                    out.push((false, l.to_vec()));
                }
                Ok(Some(Frame::Ex(e))) => {
                    let _ = ExMessage::decode(e);
                    out.push((true, e.to_vec()));
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        // Bounded: one partial frame (an ex-message is at most 64 KiB) plus one read.
        assert!(reader.buffered() <= 65_535 + chunk + MAX_LINE);
    }
    (out, false)
}

fuzz_target!(|stream: &[u8]| {
    let chunk = stream.len() % 61 + 1;
    let (whole, whole_err) = frames(stream, stream.len().max(1));
    let (cut, cut_err) = frames(stream, chunk);
    assert_eq!(whole_err, cut_err);
    if !whole_err {
        assert_eq!(whole, cut);
    }
});
