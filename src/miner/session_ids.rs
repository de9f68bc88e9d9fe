//! 16-bit miner session ids: the miner's extranonce1 and its identity at the pool.

/// The pool ignores 0xFFFF, so 65,535 miners per agent at most.
pub const MAX_SESSION_ID: u16 = 0xFFFE;
const SLOTS: usize = MAX_SESSION_ID as usize + 1;

/// A bitmap of ids in use (8 KiB whatever the farm size). Ids are handed out
/// round-robin rather than lowest-first, so an id just freed is not reused at once:
/// a late pool response for the old miner can never reach a new one by accident.
pub struct SessionIds {
    used: Vec<u64>,
    next: usize,
    in_use: usize,
}

impl Default for SessionIds {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionIds {
    pub fn new() -> SessionIds {
        SessionIds {
            used: vec![0; SLOTS.div_ceil(64)],
            next: 0,
            in_use: 0,
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// A free id, or `None` when all 65,535 are taken.
    pub fn allocate(&mut self) -> Option<u16> {
        if self.in_use == SLOTS {
            return None;
        }
        let mut i = self.next;
        loop {
            let (word, bit) = (i / 64, i % 64);
            if self.used[word] == u64::MAX {
                i = (word + 1) * 64 % SLOTS;
                continue;
            }
            if self.used[word] & (1 << bit) == 0 {
                self.used[word] |= 1 << bit;
                self.in_use += 1;
                self.next = (i + 1) % SLOTS;
                return Some(i as u16);
            }
            i = (i + 1) % SLOTS;
        }
    }

    /// Takes `id` (a miner handed over by the previous process); false if it is taken
    /// or out of range.
    pub fn reserve(&mut self, id: u16) -> bool {
        let i = id as usize;
        if i >= SLOTS || self.used[i / 64] & (1 << (i % 64)) != 0 {
            return false;
        }
        self.used[i / 64] |= 1 << (i % 64);
        self.in_use += 1;
        true
    }

    pub fn release(&mut self, id: u16) {
        let i = id as usize;
        if i < SLOTS && self.used[i / 64] & (1 << (i % 64)) != 0 {
            self.used[i / 64] &= !(1 << (i % 64));
            self.in_use -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ids_then_refusal_then_reuse() {
        let mut ids = SessionIds::new();
        let mut seen = vec![false; SLOTS];
        for _ in 0..SLOTS {
            let id = ids.allocate().unwrap();
            assert!(id <= MAX_SESSION_ID);
            assert!(!seen[id as usize], "id {id} handed out twice");
            seen[id as usize] = true;
        }
        assert_eq!(ids.allocate(), None);
        ids.release(1234);
        ids.release(1234);
        assert_eq!(ids.in_use(), SLOTS - 1);
        assert_eq!(ids.allocate(), Some(1234));
        assert_eq!(ids.allocate(), None);
    }

    #[test]
    fn reserved_ids_are_not_handed_out() {
        let mut ids = SessionIds::new();
        assert!(ids.reserve(0));
        assert!(ids.reserve(2));
        assert!(!ids.reserve(2), "taken");
        assert!(!ids.reserve(0xFFFF), "beyond the last id");
        assert_eq!(ids.in_use(), 2);
        assert_eq!(ids.allocate(), Some(1));
        assert_eq!(ids.allocate(), Some(3));
        ids.release(2);
        assert_eq!(ids.in_use(), 3);
    }

    #[test]
    fn freed_ids_are_not_reused_at_once() {
        let mut ids = SessionIds::new();
        let a = ids.allocate().unwrap();
        ids.release(a);
        let b = ids.allocate().unwrap();
        assert_ne!(a, b);
    }
}
