//! Splits a byte stream into frames: newline-terminated JSON lines and, where enabled,
//! binary ex-messages (first byte 0x7F). Bounded: a line or frame that cannot fit in
//! `max_frame` bytes is an error, never an unbounded buffer.

use crate::exmsg::{self, ExError};
use smol::io::{AsyncRead, AsyncReadExt};
use std::io;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A line without its `\n` (and without a trailing `\r`).
    Line(String),
    /// A whole ex-message, header included.
    Ex(Vec<u8>),
}

pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
    accept_ex: bool,
    /// Reads land here first, so a cancelled read (a timeout) leaves `buf` untouched;
    /// a field rather than a local keeps 10,000 idle miner futures small.
    scratch: Vec<u8>,
    /// Number of read() calls that returned data (to see how writes were coalesced).
    pub reads: u64,
    pub bytes: u64,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl FrameReader {
    /// `accept_ex`: true on the pool side; miners only ever get JSON lines.
    pub fn new(max_frame: usize, accept_ex: bool) -> FrameReader {
        Self::with_read_size(max_frame, accept_ex, 4096)
    }

    /// `read_size`: bytes asked of each read() (small for many idle connections).
    pub fn with_read_size(max_frame: usize, accept_ex: bool, read_size: usize) -> FrameReader {
        FrameReader {
            scratch: vec![0; read_size.max(1)],
            buf: Vec::new(),
            start: 0,
            max_frame,
            accept_ex,
            reads: 0,
            bytes: 0,
        }
    }

    /// The next complete frame already buffered, if any.
    pub fn next_buffered(&mut self) -> io::Result<Option<Frame>> {
        let pending = &self.buf[self.start..];
        if pending.is_empty() {
            return Ok(None);
        }
        if self.accept_ex && pending[0] == exmsg::MAGIC {
            let len = match exmsg::frame_len(pending) {
                None => return Ok(None),
                Some(Err(ExError::BadLength(len))) => {
                    return Err(invalid(format!("ex-message length {len} below 4")))
                }
                Some(Err(e)) => return Err(invalid(e.to_string())),
                Some(Ok(len)) => len,
            };
            if pending.len() < len {
                return Ok(None);
            }
            let frame = pending[..len].to_vec();
            self.start += len;
            return Ok(Some(Frame::Ex(frame)));
        }
        // The agent's rule (btcagent::protocol::framing::next_line): `max_frame` bounds a
        // line without its `\n` or `\r\n`, finished or not (a final `\r` may still start
        // the ending), so the answer does not depend on how the bytes were cut.
        let too_long = || invalid(format!("line longer than {} bytes", self.max_frame));
        match pending.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &pending[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() > self.max_frame {
                    return Err(too_long());
                }
                let text = std::str::from_utf8(line)
                    .map_err(|_| invalid("line is not UTF-8".into()))?
                    .to_string();
                self.start += end + 1;
                Ok(Some(Frame::Line(text)))
            }
            None if pending.strip_suffix(b"\r").unwrap_or(pending).len() > self.max_frame => {
                Err(too_long())
            }
            None => Ok(None),
        }
    }

    /// Reads until a frame is complete; `Ok(None)` at a clean end of stream.
    /// Cancel-safe: dropping the future loses no data.
    pub async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.next_buffered()? {
                return Ok(Some(frame));
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            // Room for the longest line and its "\r\n", and no more.
            let room = (self.max_frame + 2).saturating_sub(self.buf.len());
            let want = room.clamp(1, self.scratch.len());
            let n = stream.read(&mut self.scratch[..want]).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream ended inside a frame",
                    ))
                };
            }
            self.buf.extend_from_slice(&self.scratch[..n]);
            self.reads += 1;
            self.bytes += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], accept_ex: bool) -> io::Result<Vec<Frame>> {
        let mut reader = FrameReader::new(64, accept_ex);
        let mut stream = input;
        let mut out = Vec::new();
        smol::block_on(async {
            while let Some(frame) = reader.read_frame(&mut stream).await? {
                out.push(frame);
            }
            Ok(out)
        })
    }

    #[test]
    fn mixes_lines_and_ex_messages() {
        let input = b"{\"a\":1}\r\n\x7f\x04\x06\x00\x22\x11{\"b\":2}\n";
        assert_eq!(
            frames(input, true).unwrap(),
            vec![
                Frame::Line("{\"a\":1}".into()),
                Frame::Ex(vec![0x7f, 4, 6, 0, 0x22, 0x11]),
                Frame::Line("{\"b\":2}".into()),
            ]
        );
    }

    #[test]
    fn bounded_and_strict() {
        assert!(frames(&[b'x'; 100], true).is_err());
        assert!(frames(b"\x7f\x01\x02\x00", true).is_err());
        assert!(frames(b"{\"a\":1}", true).is_err());
        assert!(frames(b"\xff\xfe\n", true).is_err());
        // Miners treat 0x7F as part of a line.
        assert_eq!(
            frames(b"\x7fabc\n", false).unwrap(),
            vec![Frame::Line("\x7fabc".into())]
        );
    }

    /// Gives `pieces` one per read (less when the read asks for less).
    struct Pieces(Vec<Vec<u8>>);
    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let Some(piece) = self.0.first_mut() else {
                return std::task::Poll::Ready(Ok(0));
            };
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                self.0.remove(0);
            }
            std::task::Poll::Ready(Ok(n))
        }
    }

    /// Frames until the first error or the end, and how it ended.
    fn frames_in(pieces: Vec<Vec<u8>>) -> (Vec<Frame>, String) {
        let mut reader = FrameReader::new(16, true);
        let mut stream = Pieces(pieces.into_iter().filter(|p| !p.is_empty()).collect());
        let mut out = Vec::new();
        smol::block_on(async {
            loop {
                match reader.read_frame(&mut stream).await {
                    Ok(Some(frame)) => out.push(frame),
                    Ok(None) => return (out, "end".into()),
                    Err(e) => return (out, e.to_string()),
                }
            }
        })
    }

    #[test]
    fn max_frame_is_a_line_without_its_ending_however_the_bytes_arrive() {
        let x = |n: usize| "x".repeat(n).into_bytes();
        let line = |n: usize| Frame::Line("x".repeat(n));
        let too_long = "line longer than 16 bytes".to_string();
        let cases = [
            (
                [x(16), b"\r\n".to_vec()].concat(),
                vec![line(16)],
                "end".to_string(),
            ),
            (
                [x(16), b"\n".to_vec()].concat(),
                vec![line(16)],
                "end".into(),
            ),
            ([x(17), b"\n".to_vec()].concat(), vec![], too_long.clone()),
            (
                [x(16), b"\rx\n".to_vec()].concat(),
                vec![],
                too_long.clone(),
            ),
            (
                [
                    b"\x7f\x04\x14\x00".to_vec(),
                    vec![0; 16],
                    x(17),
                    b"\n".to_vec(),
                ]
                .concat(),
                vec![Frame::Ex(
                    [b"\x7f\x04\x14\x00".to_vec(), vec![0; 16]].concat(),
                )],
                too_long.clone(),
            ),
        ];
        for (stream, frames, end) in cases {
            let whole = frames_in(vec![stream.clone()]);
            assert_eq!(whole, (frames, end), "{stream:?}");
            for i in 0..=stream.len() {
                let (a, b) = stream.split_at(i);
                let cut = frames_in(vec![a.to_vec(), b.to_vec()]);
                assert_eq!(cut, whole, "cut at {i} of {stream:?}");
            }
            let bytes = stream.chunks(1).map(<[u8]>::to_vec).collect();
            assert_eq!(frames_in(bytes), whole, "byte by byte: {stream:?}");
        }
    }
}
