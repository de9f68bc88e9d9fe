//! Small forms of what every miner keeps for good: a peer address and times to the
//! second. A farm has thousands of miners, so bytes here are megabytes on the router.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A miner's address: IPv4 in place (farms' LANs), IPv6 boxed. 16 bytes instead of
/// `SocketAddr`'s 32.
pub enum Peer {
    V4(Ipv4Addr, u16),
    V6(Box<SocketAddrV6>),
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        match addr {
            SocketAddr::V4(a) => Peer::V4(*a.ip(), a.port()),
            SocketAddr::V6(a) => Peer::V6(Box::new(a)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Peer::V4(ip, port) => SocketAddr::new(IpAddr::V4(*ip), *port),
            Peer::V6(a) => SocketAddr::V6(**a),
        }
    }
}

/// Seconds since the process's first use of this clock, as a `u32` (136 years): half
/// the size of `Option<Instant>`, with 0 for "never".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Second(u32);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    // A second before the first use where the clock allows (it starts at boot): real
    // times are at least 1 anyway, 0 is "never".
    *BASE.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    })
}

impl Second {
    pub const NEVER: Second = Second(0);

    pub fn now() -> Second {
        Second::at(Instant::now())
    }

    pub fn at(t: Instant) -> Second {
        let secs = t.saturating_duration_since(base()).as_secs();
        Second(u32::try_from(secs).unwrap_or(u32::MAX).max(1))
    }

    /// `None` for [`Second::NEVER`].
    pub fn instant(self) -> Option<Instant> {
        (self.0 != 0).then(|| base() + Duration::from_secs(u64::from(self.0)))
    }

    /// How long ago, at `now`; zero for a time not passed yet or never.
    pub fn age(self, now: Instant) -> Duration {
        self.instant()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_keep_their_address() {
        for text in ["192.168.1.20:40122", "[fe80::1%2]:3333", "[2001:db8::7]:1"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(Peer::new(addr).addr(), addr);
        }
        assert!(std::mem::size_of::<Peer>() <= 16);
    }

    #[test]
    fn seconds_tell_never_from_now_and_age() {
        let now = Instant::now();
        let s = Second::at(now);
        assert_ne!(s, Second::NEVER);
        assert!(s.age(now + Duration::from_secs(5)) >= Duration::from_secs(4));
        assert!(s.age(now + Duration::from_secs(5)) <= Duration::from_secs(6));
        assert_eq!(Second::NEVER.instant(), None);
        assert_eq!(Second::NEVER.age(now), Duration::ZERO);
        assert_eq!(std::mem::size_of::<Second>(), 4);
    }
}
