//! A miner's unsent output. Usually empty: bytes go straight to the socket, and only
//! what the kernel would not take waits here, as shared job buffers where possible.

use std::collections::VecDeque;
use std::rc::Rc;

pub struct OutQueue {
    chunks: VecDeque<Rc<[u8]>>,
    /// Bytes of the front chunk already written.
    offset: usize,
    bytes: usize,
    /// A flush task is running for this queue.
    pub flushing: bool,
}

impl OutQueue {
    pub const fn new() -> OutQueue {
        OutQueue {
            chunks: VecDeque::new(),
            offset: 0,
            bytes: 0,
            flushing: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, chunk: Rc<[u8]>, offset: usize) {
        self.bytes += chunk.len() - offset;
        if self.chunks.is_empty() {
            self.offset = offset;
        }
        self.chunks.push_back(chunk);
    }

    /// The bytes to write next.
    pub fn front(&self) -> Option<&[u8]> {
        self.chunks.front().map(|c| &c[self.offset..])
    }

    /// Marks `n` bytes of the front as written.
    pub fn advance(&mut self, n: usize) {
        self.bytes -= n;
        self.offset += n;
        if let Some(front) = self.chunks.front() {
            if self.offset >= front.len() {
                self.chunks.pop_front();
                self.offset = 0;
            }
        }
        if self.chunks.is_empty() {
            // Give the ring's memory back: a slow miner must not keep it for good.
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes() {
        let mut q = OutQueue::new();
        q.push(Rc::from(&b"hello"[..]), 2);
        q.push(Rc::from(&b"world"[..]), 0);
        assert_eq!(q.bytes(), 8);
        assert_eq!(q.front(), Some(&b"llo"[..]));
        q.advance(2);
        assert_eq!(q.front(), Some(&b"o"[..]));
        q.advance(1);
        assert_eq!(q.front(), Some(&b"world"[..]));
        q.advance(5);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }
}
