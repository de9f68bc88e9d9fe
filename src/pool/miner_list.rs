//! The miners of one pool connection: a plain list, 8 bytes a miner where a map by
//! session id took some 35. A miner is found by id through the agent's own map; the
//! list only answers "who is on this connection", for the fan-out of every job.

use crate::miner::MinerSession;
use std::rc::Rc;

#[derive(Default)]
pub struct MinerList {
    miners: Vec<Rc<MinerSession>>,
    /// Where the next fan-out starts: it moves on by one each time, so that no miner
    /// is always the last to get a job.
    start: usize,
}

impl MinerList {
    pub fn len(&self) -> usize {
        self.miners.len()
    }

    /// Adds a miner that is not on the list (the caller knows: it is the miner's pool).
    pub fn push(&mut self, miner: Rc<MinerSession>) {
        self.miners.push(miner);
    }

    /// Takes the miner of `sid` off; false if it was not on the list.
    pub fn remove(&mut self, sid: u16) -> bool {
        match self.miners.iter().position(|m| m.sid == sid) {
            Some(i) => {
                self.miners.swap_remove(i);
                if self.miners.len() < self.miners.capacity() / 4 {
                    self.miners.shrink_to(self.miners.len() * 2);
                }
                true
            }
            None => false,
        }
    }

    pub fn any(&self) -> Option<Rc<MinerSession>> {
        self.miners.last().cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rc<MinerSession>> {
        self.miners.iter()
    }

    /// Every miner once, starting one further along than the last time.
    pub fn for_fan_out(&mut self) -> impl Iterator<Item = &Rc<MinerSession>> {
        let n = self.miners.len();
        let start = if n == 0 { 0 } else { self.start % n };
        self.start = start + 1;
        let (head, tail) = self.miners.split_at(start);
        tail.iter().chain(head)
    }

    pub fn take_all(&mut self) -> Vec<Rc<MinerSession>> {
        self.start = 0;
        std::mem::take(&mut self.miners)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_io::Async;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    fn miners(n: u16) -> (Vec<Rc<MinerSession>>, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let list = (0..n)
            .map(|sid| {
                let stream = Async::new(TcpStream::connect(addr).unwrap()).unwrap();
                Rc::new(MinerSession::new(sid, stream, addr, Instant::now()))
            })
            .collect();
        (list, listener)
    }

    #[test]
    fn miners_come_and_go_by_session_id() {
        let (all, _listener) = miners(4);
        let mut list = MinerList::default();
        for m in &all {
            list.push(m.clone());
        }
        assert_eq!(list.len(), 4);
        assert!(list.remove(1));
        assert!(!list.remove(1), "gone already");
        let mut left: Vec<u16> = list.iter().map(|m| m.sid).collect();
        left.sort();
        assert_eq!(left, [0, 2, 3]);
        assert_eq!(list.take_all().len(), 3);
        assert!(list.len() == 0 && list.any().is_none());
    }

    #[test]
    fn each_fan_out_starts_one_further_along() {
        let (all, _listener) = miners(3);
        let mut list = MinerList::default();
        for m in &all {
            list.push(m.clone());
        }
        let order = |list: &mut MinerList| list.for_fan_out().map(|m| m.sid).collect::<Vec<_>>();
        assert_eq!(order(&mut list), [0, 1, 2]);
        assert_eq!(order(&mut list), [1, 2, 0]);
        assert_eq!(order(&mut list), [2, 0, 1]);
        assert_eq!(order(&mut list), [0, 1, 2]);
        assert!(MinerList::default().for_fan_out().next().is_none());
    }
}
