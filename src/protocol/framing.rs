//! Splits the pool's byte stream into frames: JSON lines and ex-messages interleave on
//! one connection, told apart by their first byte (0x7F starts an ex-message).

use super::exmessage::{frame_len, MAGIC};

#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A JSON line without its line ending.
    Line(&'a [u8]),
    /// A whole ex-message, header included.
    Ex(&'a [u8]),
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    LineTooLong(usize),
    BadExMessage(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::LineTooLong(n) => write!(f, "line longer than {n} bytes"),
            FrameError::BadExMessage(e) => write!(f, "{e}"),
        }
    }
}

/// Buffered frames of a stream; holds at most one partial frame plus what one read
/// brought, and refuses lines over `max_line` so a peer cannot grow it without bound.
pub struct FrameReader {
    buf: Vec<u8>,
    pos: usize,
    max_line: usize,
    /// Bytes from `pos` already searched for a `\n` without finding one.
    scanned: usize,
}

impl FrameReader {
    pub fn new(max_line: usize) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            pos: 0,
            max_line,
            scanned: 0,
        }
    }

    /// Appends newly read bytes (dropping what earlier frames consumed).
    pub fn extend(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete frame, or `None` until more bytes arrive. Blank lines are skipped.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        loop {
            let rest = &self.buf[self.pos..];
            if rest.is_empty() {
                return Ok(None);
            }
            if rest[0] == MAGIC {
                let len =
                    match frame_len(rest).map_err(|e| FrameError::BadExMessage(e.to_string()))? {
                        Some(len) if rest.len() >= len => len,
                        _ => return Ok(None),
                    };
                let start = self.pos;
                self.pos += len;
                return Ok(Some(Frame::Ex(&self.buf[start..start + len])));
            }
            let Some((len, taken)) =
                next_line_after(rest, self.scanned, self.max_line)?.map(|(l, t)| (l.len(), t))
            else {
                self.scanned = rest.len();
                return Ok(None);
            };
            self.scanned = 0;
            let start = self.pos;
            self.pos += taken;
            let line = &self.buf[start..start + len];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(Frame::Line(line)));
        }
    }
}

/// The line `data` starts with: its bytes without the line ending (`\n` or `\r\n`) and
/// how many bytes it takes with its ending; `None` while its `\n` has not come.
///
/// `max_line` bounds the line without its ending, blank or not, and a line is refused as
/// soon as what has come of it is longer (a final `\r` may still start the ending), so
/// the answer is the same however the bytes were cut into reads.
pub fn next_line(data: &[u8], max_line: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
    next_line_after(data, 0, max_line)
}

/// As [`next_line`], when the first `scanned` bytes of `data` are known to hold no `\n`
/// (they were looked at before the last read): a line trickled in byte by byte is
/// then searched once, not once per read.
pub fn next_line_after(
    data: &[u8],
    scanned: usize,
    max_line: usize,
) -> Result<Option<(&[u8], usize)>, FrameError> {
    let from = scanned.min(data.len());
    let (line, taken) = match data[from..].iter().position(|&b| b == b'\n') {
        Some(end) => (&data[..from + end], Some(from + end + 1)),
        None => (data, None),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max_line {
        return Err(FrameError::LineTooLong(max_line));
    }
    Ok(taken.map(|taken| (line, taken)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_lines_and_ex_messages() {
        let mut r = FrameReader::new(1024);
        let mut data = b"{\"id\":1}\r\n\n".to_vec();
        data.extend_from_slice(&[0x7f, 0x10, 0x0a, 0x00, 1, 0, 0x87, 0x96, 0x2c, 0x6b]);
        data.extend_from_slice(b"{\"id\":2}\n{\"par");
        // Fed one byte at a time, frames come out whole and in order.
        let mut got = Vec::new();
        for b in &data {
            r.extend(std::slice::from_ref(b));
            while let Some(f) = r.next_frame().unwrap() {
                got.push(match f {
                    Frame::Line(l) => String::from_utf8(l.to_vec()).unwrap(),
                    Frame::Ex(e) => format!("ex:{}", e.len()),
                });
            }
        }
        assert_eq!(got, ["{\"id\":1}", "ex:10", "{\"id\":2}"]);
        assert_eq!(r.buffered(), 5);
    }

    #[test]
    fn bounds_and_garbage() {
        let mut r = FrameReader::new(16);
        r.extend(&[b'x'; 17]);
        assert_eq!(r.next_frame(), Err(FrameError::LineTooLong(16)));
        let mut r = FrameReader::new(16);
        r.extend(&[0x7f, 0x02, 0x01, 0x00]);
        assert!(matches!(r.next_frame(), Err(FrameError::BadExMessage(_))));
    }

    /// Frames (lines as text, ex-messages as `ex:LEN`) until the first error, and it.
    type Outcome = (Vec<String>, Option<FrameError>);

    /// What `FrameReader::new(max_line)` makes of `stream` fed in `pieces`: the frames
    /// until the first error (tagged, owned), then the error if one came.
    fn read_in(max_line: usize, pieces: &[&[u8]]) -> Outcome {
        let mut r = FrameReader::new(max_line);
        let mut got = Vec::new();
        for piece in pieces {
            r.extend(piece);
            loop {
                match r.next_frame() {
                    Ok(Some(Frame::Line(l))) => got.push(String::from_utf8_lossy(l).into_owned()),
                    Ok(Some(Frame::Ex(e))) => got.push(format!("ex:{}", e.len())),
                    Ok(None) => break,
                    Err(e) => return (got, Some(e)),
                }
            }
        }
        (got, None)
    }

    /// The same frames and error whole, cut at every point, cut at every two points,
    /// and byte by byte.
    fn same_however_cut(max_line: usize, stream: &[u8]) -> Outcome {
        let whole = read_in(max_line, &[stream]);
        for i in 0..=stream.len() {
            let (a, b) = stream.split_at(i);
            assert_eq!(
                read_in(max_line, &[a, b]),
                whole,
                "cut at {i} of {stream:?}"
            );
            for j in i..=stream.len() {
                let pieces = [&stream[..i], &stream[i..j], &stream[j..]];
                assert_eq!(
                    read_in(max_line, &pieces),
                    whole,
                    "cut at {i}, {j} of {stream:?}"
                );
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(read_in(max_line, &bytes), whole, "byte by byte: {stream:?}");
        whole
    }

    #[test]
    fn max_line_is_the_length_without_the_line_ending_however_the_bytes_arrive() {
        let x = |n: usize| "x".repeat(n);
        let ok = |lines: &[&str]| (lines.iter().map(|l| l.to_string()).collect(), None);
        let too_long = |lines: &[&str]| {
            (
                lines.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
                Some(FrameError::LineTooLong(16)),
            )
        };
        let cases: Vec<(String, Outcome)> = vec![
            (x(16) + "\r\n", ok(&[&x(16)])),
            (x(16) + "\n", ok(&[&x(16)])),
            (x(16) + "\r\nab\n", ok(&[&x(16), "ab"])),
            (x(15) + "\r\r\n", ok(&[&(x(15) + "\r")])),
            (x(16) + "\r\r\n", too_long(&[])),
            (x(17) + "\n", too_long(&[])),
            (x(16) + "\rx\n", too_long(&[])),
            ("a\n".to_string() + &x(17), too_long(&["a"])),
            // Unfinished: nothing yet, and no error while it could still fit.
            (x(16), ok(&[])),
            (x(16) + "\r", ok(&[])),
            // A blank line is skipped, but one longer than max_line is refused: the
            // reader cannot know it is blank before its end.
            (" ".repeat(16) + "\r\nab\n", ok(&["ab"])),
            (" ".repeat(17) + "\nab\n", too_long(&[])),
            (" ".repeat(15) + "\r\r\n", ok(&[])),
            ("\r\n".repeat(20) + "ab\n", ok(&["ab"])),
        ];
        for (stream, expected) in cases {
            assert_eq!(
                same_however_cut(16, stream.as_bytes()),
                expected,
                "{stream:?}"
            );
        }
        let ex = [0x7f, 0x10, 0x0a, 0x00, 1, 0, 0x87, 0x96, 0x2c, 0x6b];
        let stream = [x(16).as_bytes(), b"\r\n", &ex, x(16).as_bytes(), b"\r\n"].concat();
        assert_eq!(
            same_however_cut(16, &stream),
            ok(&[&x(16), "ex:10", &x(16)])
        );
    }
}
