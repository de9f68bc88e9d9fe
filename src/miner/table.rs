//! Every miner of the agent, found by session id: a set of the sessions themselves
//! hashed by their id (8 bytes an entry where a map from id to session took 16).

use super::MinerSession;
use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

struct BySid(Rc<MinerSession>);

impl Hash for BySid {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.sid.hash(state);
    }
}

impl PartialEq for BySid {
    fn eq(&self, other: &Self) -> bool {
        self.0.sid == other.0.sid
    }
}

impl Eq for BySid {}

/// Lets the set be asked by id: hashes and compares as the id does.
impl Borrow<u16> for BySid {
    fn borrow(&self) -> &u16 {
        &self.0.sid
    }
}

#[derive(Default)]
pub struct MinerTable(HashSet<BySid>);

impl MinerTable {
    pub fn get(&self, sid: u16) -> Option<&Rc<MinerSession>> {
        self.0.get(&sid).map(|m| &m.0)
    }

    /// Adds a miner, replacing one of the same id.
    pub fn insert(&mut self, miner: Rc<MinerSession>) {
        self.0.replace(BySid(miner));
    }

    pub fn remove(&mut self, sid: u16) -> Option<Rc<MinerSession>> {
        self.0.take(&sid).map(|m| m.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rc<MinerSession>> {
        self.0.iter().map(|m| &m.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_io::Async;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    #[test]
    fn miners_are_found_by_session_id() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let miner = |sid| {
            let stream = Async::new(TcpStream::connect(addr).unwrap()).unwrap();
            Rc::new(MinerSession::new(sid, stream, addr, Instant::now()))
        };
        let mut table = MinerTable::default();
        table.insert(miner(7));
        table.insert(miner(9));
        let again = miner(7);
        table.insert(again.clone());
        assert_eq!(table.len(), 2);
        assert!(Rc::ptr_eq(table.get(7).unwrap(), &again), "replaced");
        assert!(table.get(8).is_none());
        assert!(Rc::ptr_eq(&table.remove(7).unwrap(), &again));
        assert!(table.remove(7).is_none());
        assert_eq!(table.iter().map(|m| m.sid).collect::<Vec<_>>(), [9]);
        assert!(!table.is_empty());
    }
}
