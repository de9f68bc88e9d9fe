//! A miner's unsent output. Usually empty: bytes go straight to the socket, and only
//! what the kernel would not take waits here, as shared job buffers where possible.

use std::collections::VecDeque;
use std::rc::Rc;

/// One pointer, null while empty, which is nearly always: the queue itself is boxed.
pub struct OutQueue {
    queued: Option<Box<Queued>>,
}

struct Queued {
    /// A flush task is running for this queue (only a queue that holds bytes has one).
    flushing: bool,
    chunks: VecDeque<Rc<[u8]>>,
    /// Bytes of the front chunk already written.
    offset: usize,
    bytes: usize,
}

impl OutQueue {
    pub const fn new() -> OutQueue {
        OutQueue { queued: None }
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_none()
    }

    pub fn bytes(&self) -> usize {
        self.queued.as_ref().map_or(0, |q| q.bytes)
    }

    pub fn push(&mut self, chunk: Rc<[u8]>, offset: usize) {
        let q = self.queued.get_or_insert_with(|| {
            Box::new(Queued {
                flushing: false,
                chunks: VecDeque::new(),
                offset,
                bytes: 0,
            })
        });
        q.bytes += chunk.len() - offset;
        q.chunks.push_back(chunk);
    }

    /// A flush task is running for this queue.
    pub fn flushing(&self) -> bool {
        self.queued.as_ref().is_some_and(|q| q.flushing)
    }

    /// Says whether a flush task runs; an empty queue has none.
    pub fn set_flushing(&mut self, flushing: bool) {
        if let Some(q) = self.queued.as_mut() {
            q.flushing = flushing;
        }
    }

    /// The bytes to write next.
    pub fn front(&self) -> Option<&[u8]> {
        let q = self.queued.as_ref()?;
        q.chunks.front().map(|c| &c[q.offset..])
    }

    /// Every byte not written yet, in order (for a handoff).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn pending(&self) -> Vec<u8> {
        let Some(q) = self.queued.as_ref() else {
            return Vec::new();
        };
        let mut bytes = Vec::with_capacity(q.bytes);
        for (i, chunk) in q.chunks.iter().enumerate() {
            bytes.extend_from_slice(if i == 0 { &chunk[q.offset..] } else { chunk });
        }
        bytes
    }

    /// Marks `n` bytes of the front as written.
    pub fn advance(&mut self, n: usize) {
        let Some(q) = self.queued.as_mut() else {
            return;
        };
        q.bytes -= n;
        q.offset += n;
        if let Some(front) = q.chunks.front() {
            if q.offset >= front.len() {
                q.chunks.pop_front();
                q.offset = 0;
            }
        }
        if q.chunks.is_empty() {
            // Give the memory back: a slow miner must not keep it for good.
            self.queued = None;
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
        assert_eq!(q.pending(), b"lloworld");
        assert_eq!(q.front(), Some(&b"llo"[..]));
        q.advance(2);
        assert_eq!(q.front(), Some(&b"o"[..]));
        assert_eq!(q.pending(), b"oworld");
        q.advance(1);
        assert_eq!(q.front(), Some(&b"world"[..]));
        q.advance(5);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        assert!(q.pending().is_empty());
    }
}
