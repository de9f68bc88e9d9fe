//! The original agent's connection test: ask for capabilities, wait for any line.
//!
//! A route only counts as up once the pool itself has answered through it, so a proxy
//! that accepts the tunnel but cannot reach the pool loses the race. An sserver from
//! before late 2018 answers nothing before authorize (it has no
//! `agent.get_capabilities`): a route that stays silent for [`PATIENCE`] is taken as
//! it is, so the handshake can go on and find out.

use super::error::FailureReason;
use crate::protocol::framing::next_line_after;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::time::{Duration, Instant};

/// How long a route waits for the pool's answer before it counts as up anyway.
pub const PATIENCE: Duration = Duration::from_secs(3);

pub const CONN_TEST_REQUEST: &[u8] =
    b"{\"id\":\"conn_test\",\"method\":\"agent.get_capabilities\",\"params\":[[\"verrol\"]]}\n";

/// What the connection test asks, and whose the answer is.
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    pub request: &'a [u8],
    /// The answer belongs to the session (the request was its first), not to the test.
    pub keep_answer: bool,
}

impl Probe<'static> {
    /// The agent protocol's test: `agent.get_capabilities`, answered to the test.
    pub const CAPABILITIES: Probe<'static> = Probe {
        request: CONN_TEST_REQUEST,
        keep_answer: false,
    };
}

impl<'a> Probe<'a> {
    /// A plain Stratum pool's test is the session's own first request: ckpool closes a
    /// connection whose first method is one it does not know (stratifier.c
    /// `parse_method`), so `agent.get_capabilities` would lose every route to it.
    pub fn session_request(request: &'a [u8]) -> Probe<'a> {
        Probe {
            request,
            keep_answer: true,
        }
    }
}

/// A reply line longer than this is not a pool talking.
pub const MAX_REPLY_LINE: usize = 16 * 1024;

/// Sends the test and reads up to the first `\n`; returns what was read past it,
/// which belongs to the pool session. A pool silent for `patience` passes too, with
/// whatever it sent so far.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    patience: Duration,
) -> Result<Vec<u8>, FailureReason> {
    run_probe(stream, patience, Probe::CAPABILITIES).await
}

/// [`run`] with another request; with `keep_answer` everything read is returned.
pub async fn run_probe<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    patience: Duration,
    probe: Probe<'_>,
) -> Result<Vec<u8>, FailureReason> {
    stream.write_all(probe.request).await?;
    stream.flush().await?;
    let silent_after = Instant::now() + patience;
    let mut received = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let read = async { Some(stream.read(&mut chunk).await) };
        let silence = async {
            smol::Timer::at(silent_after).await;
            None
        };
        let Some(n) = smol::future::or(read, silence).await else {
            return Ok(received);
        };
        let n = n?;
        if n == 0 {
            return Err(FailureReason::Protocol(
                "closed before answering the connection test".into(),
            ));
        }
        let scanned = received.len();
        received.extend_from_slice(&chunk[..n]);
        // The pool side's rule (the line without its ending), so the verdict does not
        // depend on how the reply was cut into reads.
        match next_line_after(&received, scanned, MAX_REPLY_LINE) {
            Ok(Some(_)) if probe.keep_answer => return Ok(received),
            Ok(Some((_, taken))) => return Ok(received.split_off(taken)),
            Ok(None) => {}
            Err(_) => {
                return Err(FailureReason::Protocol(format!(
                    "no line within {MAX_REPLY_LINE} bytes in answer to the connection test"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Replies arrive in the given chunks, one per read.
    struct Chunks {
        chunks: Vec<Vec<u8>>,
        written: Vec<u8>,
    }
    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.chunks.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let chunk = self.chunks.remove(0);
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.chunks.insert(0, chunk[n..].to_vec());
            }
            Poll::Ready(Ok(n))
        }
    }
    impl AsyncWrite for Chunks {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn run_with(chunks: &[&[u8]]) -> (Result<Vec<u8>, FailureReason>, Vec<u8>) {
        let mut s = Chunks {
            chunks: chunks.iter().map(|c| c.to_vec()).collect(),
            written: Vec::new(),
        };
        let r = smol::block_on(run(&mut s, Duration::from_secs(60)));
        (r, s.written)
    }

    #[test]
    fn keeps_bytes_after_the_reply_line() {
        let (r, written) = run_with(&[b"{\"id\":\"conn_", b"test\"}\n{\"id\":1}\n\x7f\x05"]);
        assert_eq!(r.unwrap(), b"{\"id\":1}\n\x7f\x05");
        assert_eq!(written, CONN_TEST_REQUEST);
        assert_eq!(run_with(&[b"x\n"]).0.unwrap(), b"");
    }

    /// A pool that answers nothing (an old sserver before authorize).
    struct Silent;
    impl AsyncRead for Silent {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Pending
        }
    }
    impl AsyncWrite for Silent {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_silent_pool_passes_after_the_patience() {
        let r = smol::block_on(run(&mut Silent, Duration::from_millis(20)));
        assert_eq!(r.unwrap(), b"");
    }

    #[test]
    fn closed_or_endless_line_fails() {
        assert!(matches!(
            run_with(&[b"partial"]).0,
            Err(FailureReason::Protocol(_))
        ));
        let big = vec![b'a'; 4096];
        let chunks: Vec<&[u8]> = (0..10).map(|_| &big[..]).collect();
        let r = run_with(&chunks).0;
        assert!(
            matches!(r, Err(FailureReason::Protocol(ref m)) if m.contains("no line")),
            "{r:?}"
        );
    }

    #[test]
    fn the_reply_line_is_bounded_the_same_however_it_is_cut() {
        let max = MAX_REPLY_LINE;
        let line = |len: usize, ending: &[u8]| [&vec![b'x'; len][..], ending, b"rest"].concat();
        for (reply, ok) in [
            (line(max, b"\r\n"), true),
            (line(max, b"\n"), true),
            (line(max + 1, b"\n"), false),
            (line(max, b"\rx\n"), false),
        ] {
            // The verdict; what is read past the line depends on the reads by design
            // (the session reads the rest), but is always the start of it.
            let outcome = |pieces: &[&[u8]]| {
                let r = run_with(pieces).0;
                if let Ok(past) = &r {
                    assert!(b"rest".starts_with(past), "{past:?}");
                }
                format!("{:?}", r.map(|_| ()))
            };
            let whole = outcome(&[&reply]);
            let expected = if ok {
                "Ok(())"
            } else {
                "Err(Protocol(\"no line within 16384 bytes in answer to the connection test\"))"
            };
            assert_eq!(whole, expected);
            for cut in [1, 2048, max - 1, max, max + 1, max + 2, max + 3] {
                let (a, b) = reply.split_at(cut);
                assert_eq!(outcome(&[a, b]), whole, "cut at {cut}");
            }
            let bytes: Vec<&[u8]> = reply.chunks(1).collect();
            assert_eq!(outcome(&bytes), whole, "byte by byte");
        }
    }
}
