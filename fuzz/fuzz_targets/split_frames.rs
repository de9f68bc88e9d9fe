//! The pool's byte stream cut into reads at points the fuzzer picks, with a small
//! `max_line` (1..=64) so lines at, around and over it are common: the frames and the
//! error must be those of the stream read whole.
//!
//! Input: `max_line - 1` (one byte, mod 64), the number of cuts (one byte, mod 16), the
//! cuts (one byte each, offsets into the stream mod its length), then the stream.
#![no_main]

use btcagent::protocol::framing::{next_line, next_line_after, Frame, FrameError, FrameReader};
use libfuzzer_sys::fuzz_target;

type Outcome = (Vec<(bool, Vec<u8>)>, Option<FrameError>);

fn read_in(max_line: usize, pieces: &[&[u8]]) -> Outcome {
    let mut reader = FrameReader::new(max_line);
    let mut out = Vec::new();
    for piece in pieces {
        reader.extend(piece);
        loop {
            match reader.next_frame() {
                Ok(Some(Frame::Line(l))) => {
                    assert!(l.len() <= max_line);
                    out.push((false, l.to_vec()));
                }
                Ok(Some(Frame::Ex(e))) => out.push((true, e.to_vec())),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        // Bounded: one partial frame (an ex-message is at most 64 KiB) plus one read.
        assert!(reader.buffered() <= 65_535 + piece.len() + max_line + 1);
    }
    (out, None)
}

/// Lines only, as the miner side reads them (src/miner/mod.rs, `handle_lines`): a
/// buffer that keeps only the unfinished line between reads, searched from where the
/// last search stopped.
fn lines_in(max_line: usize, pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut partial = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        let mut scanned = partial.len();
        partial.extend_from_slice(piece);
        let mut consumed = 0;
        loop {
            match next_line_after(&partial[consumed..], scanned, max_line) {
                Ok(Some((line, taken))) => {
                    out.push(line.to_vec());
                    consumed += taken;
                    scanned = 0;
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        partial.drain(..consumed);
        assert!(partial.len() <= max_line + 1);
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let [max, cuts, rest @ ..] = data else { return };
    let max_line = usize::from(max % 64) + 1;
    let cuts = usize::from(cuts % 16).min(rest.len());
    let (cuts, stream) = rest.split_at(cuts);
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for p in points {
        pieces.push(&stream[start..p]);
        start = p;
    }
    pieces.push(&stream[start..]);

    assert_eq!(read_in(max_line, &pieces), read_in(max_line, &[stream]));
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(read_in(max_line, &bytes), read_in(max_line, &[stream]));
    assert_eq!(lines_in(max_line, &pieces), lines_in(max_line, &[stream]));
    // The one-shot reading agrees with the buffered one on the first line.
    if let Ok(Some((line, _))) = next_line(stream, max_line) {
        assert_eq!(
            lines_in(max_line, &[stream]).0.first().map(Vec::as_slice),
            Some(line)
        );
    }
});
