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
}

impl FrameReader {
    pub fn new(max_line: usize) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            pos: 0,
            max_line,
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
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let start = self.pos;
                    self.pos += end + 1;
                    let mut line = &self.buf[start..start + end];
                    if line.last() == Some(&b'\r') {
                        line = &line[..line.len() - 1];
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    if line.len() > self.max_line {
                        return Err(FrameError::LineTooLong(self.max_line));
                    }
                    return Ok(Some(Frame::Line(line)));
                }
                None if rest.len() > self.max_line => {
                    return Err(FrameError::LineTooLong(self.max_line))
                }
                None => return Ok(None),
            }
        }
    }
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
}
