//! Bounds on connections that have not authorized yet, so that a port scan or a flood
//! cannot take the descriptors and memory the farm's miners need.
//!
//! A connection is a *handshake* from accept until its `mining.authorize` is taken (or
//! it closes). Handshakes are bounded per source and in total:
//! - a source (an IPv4 address, an IPv6 /64) at its limit has its new connection closed
//!   at once: it only ever hurts itself;
//! - when the total is reached, the oldest handshake of all is closed to make room.
//!   An honest miner authorizes within milliseconds, so it would have to be outlived
//!   by `total` newer connections to be evicted, while a flood's idle connections are
//!   the oldest. Refusing the newcomer instead would lock the farm out until the
//!   flood's connections time out.
//!
//! Pure bookkeeping, no I/O: the agent closes what this says to close.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// What to do with a newly accepted connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Admit it, and close this (older) handshake to make room.
    AdmitEvicting(u16),
    /// Its source already has this many handshakes: close the new connection.
    RefuseSource(usize),
}

/// A miner's source for the per-source bound: IPv6 hosts get a /64 each, so one host
/// cannot dodge the bound by rotating addresses of its own network.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

pub struct Admission {
    max_total: usize,
    max_per_source: usize,
    /// Handshakes in progress: session id -> (source, ticket).
    pending: HashMap<u16, (IpAddr, u32)>,
    per_source: HashMap<IpAddr, u32>,
    /// Arrival order for eviction. Finished handshakes stay until they are skipped or
    /// swept, which happens before the queue holds twice what is pending.
    order: VecDeque<(u16, u32)>,
    next_ticket: u32,
}

impl Admission {
    pub fn new(max_total: usize, max_per_source: usize) -> Admission {
        Admission {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            pending: HashMap::new(),
            per_source: HashMap::new(),
            order: VecDeque::new(),
            next_ticket: 0,
        }
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    pub fn max_per_source(&self) -> usize {
        self.max_per_source
    }

    /// Handshakes in progress.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A connection from `ip` was accepted and given session id `sid`.
    pub fn admit(&mut self, sid: u16, ip: IpAddr) -> Verdict {
        let source = source_of(ip);
        let from_source = self.per_source.get(&source).copied().unwrap_or(0) as usize;
        if from_source >= self.max_per_source {
            return Verdict::RefuseSource(from_source);
        }
        let evicted = if self.pending.len() >= self.max_total {
            self.evict_oldest()
        } else {
            None
        };
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        self.pending.insert(sid, (source, ticket));
        *self.per_source.entry(source).or_insert(0) += 1;
        self.order.push_back((sid, ticket));
        match evicted {
            Some(old) => Verdict::AdmitEvicting(old),
            None => Verdict::Admit,
        }
    }

    /// The handshake of `sid` is over (authorized, or closed); no-op if it was not one.
    pub fn finished(&mut self, sid: u16) {
        if let Some((source, _)) = self.pending.remove(&sid) {
            self.release_source(source);
        }
        if self.order.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.order
                .retain(|(sid, ticket)| pending.get(sid).is_some_and(|p| p.1 == *ticket));
        }
    }

    fn release_source(&mut self, source: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// Removes the oldest handshake still in progress and returns its session id.
    fn evict_oldest(&mut self) -> Option<u16> {
        while let Some((sid, ticket)) = self.order.pop_front() {
            if self.pending.get(&sid).is_some_and(|p| p.1 == ticket) {
                let (source, _) = self.pending.remove(&sid)?;
                self.release_source(source);
                return Some(sid);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_at_its_limit_is_refused_and_others_are_not() {
        let mut a = Admission::new(100, 2);
        assert_eq!(a.admit(1, ip("10.0.0.1")), Verdict::Admit);
        assert_eq!(a.admit(2, ip("10.0.0.1")), Verdict::Admit);
        assert_eq!(a.admit(3, ip("10.0.0.1")), Verdict::RefuseSource(2));
        assert_eq!(a.admit(4, ip("10.0.0.2")), Verdict::Admit);
        // One authorizes: its source may open another.
        a.finished(1);
        assert_eq!(a.admit(5, ip("10.0.0.1")), Verdict::Admit);
        assert_eq!(a.pending(), 3);
    }

    #[test]
    fn the_total_is_kept_by_closing_the_oldest_handshake() {
        let mut a = Admission::new(3, 10);
        for sid in 1..=3 {
            assert_eq!(a.admit(sid, ip("10.0.0.1")), Verdict::Admit);
        }
        // 2 authorized meanwhile: the oldest still in its handshake is 1, then 3.
        a.finished(2);
        assert_eq!(a.admit(4, ip("10.0.0.9")), Verdict::Admit);
        assert_eq!(a.admit(5, ip("10.0.0.9")), Verdict::AdmitEvicting(1));
        assert_eq!(a.admit(6, ip("10.0.0.9")), Verdict::AdmitEvicting(3));
        assert_eq!(a.pending(), 3);
        // An evicted one that closes later changes nothing.
        a.finished(1);
        assert_eq!(a.pending(), 3);
    }

    #[test]
    fn a_reused_session_id_is_not_mistaken_for_its_predecessor() {
        let mut a = Admission::new(2, 10);
        a.admit(7, ip("10.0.0.1"));
        a.finished(7);
        a.admit(8, ip("10.0.0.1"));
        // Id 7 again, a new handshake: the oldest in progress is now 8, not the first 7.
        a.admit(7, ip("10.0.0.2"));
        assert_eq!(a.admit(9, ip("10.0.0.3")), Verdict::AdmitEvicting(8));
    }

    #[test]
    fn ipv6_hosts_count_per_64_and_mapped_ipv4_as_ipv4() {
        let mut a = Admission::new(100, 1);
        assert_eq!(a.admit(1, ip("2001:db8:1:2::1")), Verdict::Admit);
        assert_eq!(
            a.admit(2, ip("2001:db8:1:2:ffff::7")),
            Verdict::RefuseSource(1)
        );
        assert_eq!(a.admit(3, ip("2001:db8:1:3::1")), Verdict::Admit);
        assert_eq!(a.admit(4, ip("192.0.2.1")), Verdict::Admit);
        assert_eq!(a.admit(5, ip("::ffff:192.0.2.1")), Verdict::RefuseSource(1));
    }

    #[test]
    fn the_arrival_queue_stays_bounded_when_everyone_authorizes() {
        let mut a = Admission::new(10, 10);
        for i in 0..100_000u32 {
            let sid = (i % 60_000) as u16;
            a.admit(sid, ip("10.0.0.1"));
            a.finished(sid);
        }
        assert_eq!(a.pending(), 0);
        assert!(a.order.len() <= 64, "{}", a.order.len());
        assert!(a.per_source.is_empty());
    }
}
