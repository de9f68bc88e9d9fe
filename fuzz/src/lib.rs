//! Shared by the fuzz targets: a scripted peer for the proxy handshakes.

use smol::io::{AsyncRead, AsyncWrite};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A proxy that answers with `replies` (then end of stream) and swallows what it is sent.
pub struct ScriptedPeer<'a> {
    replies: &'a [u8],
}

impl<'a> ScriptedPeer<'a> {
    pub fn new(replies: &'a [u8]) -> ScriptedPeer<'a> {
        ScriptedPeer { replies }
    }
}

impl AsyncRead for ScriptedPeer<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.replies.len());
        buf[..n].copy_from_slice(&self.replies[..n]);
        self.replies = &self.replies[n..];
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for ScriptedPeer<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
