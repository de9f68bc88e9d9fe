//! Sharing one upstream connection's extranonce space among many miners.
//!
//! The pool gives the connection an extranonce1 (`E1`) and an extranonce2 size `N`.
//! The agent moves `E1` into the coinb1 it sends miners (as the agent protocol does
//! today), so a miner's own extranonce1 is the start of the pool's extranonce2, and
//! any bytes the miner does not fill go, as zeros, in front of the coinb2 miners get:
//!
//! ```text
//! pool:   coinb1 | E1 | extranonce2 (N bytes)                   | coinb2
//! miner:  coinb1 + E1 | miner ex1 | miner ex2 | 00..00 + coinb2
//! ```
//!
//! The miner's extranonce1 is its 16-bit session id wherever the pool leaves room
//! (`N >= 6`): unique in the whole agent, hence on every connection of every pool, so
//! a miner moved to another connection keeps its extranonce1 and needs no
//! `mining.set_extranonce` (a new `E1` travels in the next notify's coinb1). With
//! `N >= 8` the layout is byte for byte the agent protocol's (`0000SSSS` + 4 bytes),
//! so moving between an agent-protocol pool and a Stratum pool costs nothing either.
//! With `N` of 4 or 5 only one byte is left for miners: a per-connection prefix
//! ([`PrefixPool`], 256 miners per connection). Below 4 no byte can be spared.

use std::fmt;

/// The miner's extranonce2 size wherever the pool leaves room for it: 2^64 hashes
/// per job and extranonce1, about 51 hours of a 100 TH/s miner without version rolling.
pub const MINER_EXTRANONCE2_SIZE: usize = 4;
/// cgminer and the firmwares built on it refuse an extranonce2 below 2 bytes
/// (`initiate_stratum`: "Failed to get valid n2size").
pub const MIN_MINER_EXTRANONCE2_SIZE: usize = 2;
/// Largest pool extranonce2 accepted (the coinbase scriptSig holds 100 bytes).
pub const MAX_POOL_EXTRANONCE2_SIZE: usize = 32;
/// Largest pool extranonce1 accepted (ckpool's own are 4 bytes, at most 16).
pub const MAX_POOL_EXTRANONCE1_SIZE: usize = 16;

/// How miners' extranonces fit into the pool's extranonce2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `N >= 8`: extranonce1 `0000SSSS` (session id), extranonce2 4 bytes: the agent
    /// protocol's layout.
    Standard,
    /// `N` of 6 or 7: extranonce1 `SSSS`, extranonce2 4 bytes.
    SessionId,
    /// `N` of 4 or 5: extranonce1 is one byte unique on its connection (256 miners per
    /// connection), extranonce2 `N - 1` bytes.
    ConnectionPrefix,
    /// One miner per connection (identity pass-through) on a pool whose `N` is below
    /// 4: the miner gets the pool's extranonce1 and size as they are.
    Direct,
}

/// The split of one upstream connection's extranonce2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub layout: Layout,
    /// The pool's extranonce2 size, `N`.
    pub pool_extranonce2_size: usize,
}

/// Why a pool's extranonce2 cannot be shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitError {
    /// Fewer than 4 bytes: nothing to give miners of a shared connection.
    TooSmall(usize),
    /// More than [`MAX_POOL_EXTRANONCE2_SIZE`] bytes: not a Bitcoin coinbase.
    TooLarge(usize),
    /// An extranonce1 longer than [`MAX_POOL_EXTRANONCE1_SIZE`] bytes.
    Extranonce1TooLong(usize),
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitError::TooSmall(n) => write!(
                f,
                "the pool's extranonce2 is {n} bytes: too small to share a connection among miners \
                 (4 or more needed); identity pass-through gives each miner its own connection"
            ),
            SplitError::TooLarge(n) => write!(
                f,
                "the pool's extranonce2 is {n} bytes: more than {MAX_POOL_EXTRANONCE2_SIZE} is not a Bitcoin pool"
            ),
            SplitError::Extranonce1TooLong(n) => write!(
                f,
                "the pool's extranonce1 is {n} bytes: more than {MAX_POOL_EXTRANONCE1_SIZE}"
            ),
        }
    }
}

impl Split {
    /// The split for a pool extranonce2 of `size` bytes. `one_miner` (identity
    /// pass-through) lets a pool below 4 bytes through, as [`Layout::Direct`].
    pub fn for_pool(extranonce1: &[u8], size: usize, one_miner: bool) -> Result<Split, SplitError> {
        if extranonce1.len() > MAX_POOL_EXTRANONCE1_SIZE {
            return Err(SplitError::Extranonce1TooLong(extranonce1.len()));
        }
        let layout = match size {
            n if n > MAX_POOL_EXTRANONCE2_SIZE => return Err(SplitError::TooLarge(n)),
            8.. => Layout::Standard,
            6 | 7 => Layout::SessionId,
            4 | 5 => Layout::ConnectionPrefix,
            _ if one_miner => Layout::Direct,
            n => return Err(SplitError::TooSmall(n)),
        };
        Ok(Split {
            layout,
            pool_extranonce2_size: size,
        })
    }

    /// Miners one connection can carry with this split.
    pub fn miners_per_connection(&self) -> usize {
        match self.layout {
            Layout::Standard | Layout::SessionId => 65_535,
            Layout::ConnectionPrefix => 256,
            Layout::Direct => 1,
        }
    }

    /// Bytes of the miner's extranonce1 (what `mining.subscribe` tells it), given the
    /// pool's extranonce1 size for [`Layout::Direct`].
    pub fn miner_extranonce1_size(&self, pool_extranonce1_size: usize) -> usize {
        match self.layout {
            Layout::Standard => 4,
            Layout::SessionId => 2,
            Layout::ConnectionPrefix => 1,
            Layout::Direct => pool_extranonce1_size,
        }
    }

    /// The miner's extranonce2 size (what `mining.subscribe` tells it).
    pub fn miner_extranonce2_size(&self) -> usize {
        match self.layout {
            Layout::Standard | Layout::SessionId => MINER_EXTRANONCE2_SIZE,
            Layout::ConnectionPrefix => self.pool_extranonce2_size - 1,
            Layout::Direct => self.pool_extranonce2_size,
        }
    }

    /// Zero bytes the agent puts in front of coinb2 for miners: the part of the pool's
    /// extranonce2 no miner fills.
    pub fn padding(&self) -> usize {
        match self.layout {
            Layout::Direct => 0,
            _ => {
                self.pool_extranonce2_size
                    - self.miner_extranonce1_size(0)
                    - self.miner_extranonce2_size()
            }
        }
    }

    /// The miner's extranonce1: from its session id, or its prefix on this connection
    /// ([`Layout::ConnectionPrefix`]), or the pool's own ([`Layout::Direct`]).
    pub fn miner_extranonce1(
        &self,
        session_id: u16,
        prefix: u8,
        pool_extranonce1: &[u8],
    ) -> Vec<u8> {
        match self.layout {
            Layout::Standard => (session_id as u32).to_be_bytes().to_vec(),
            Layout::SessionId => session_id.to_be_bytes().to_vec(),
            Layout::ConnectionPrefix => vec![prefix],
            Layout::Direct => pool_extranonce1.to_vec(),
        }
    }

    /// The coinb1 miners get: the pool's, followed by its extranonce1 (except
    /// [`Layout::Direct`], where the extranonce1 is the miner's own).
    pub fn miner_coinb1(&self, coinb1: &[u8], pool_extranonce1: &[u8]) -> Vec<u8> {
        match self.layout {
            Layout::Direct => coinb1.to_vec(),
            _ => [coinb1, pool_extranonce1].concat(),
        }
    }

    /// The coinb2 miners get: [`Split::padding`] zeros, then the pool's.
    pub fn miner_coinb2(&self, coinb2: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; self.padding()];
        out.extend_from_slice(coinb2);
        out
    }

    /// The extranonce2 to submit to the pool for a miner's share, or `None` when the
    /// miner's parts do not have this split's sizes (a miner still on an old split).
    pub fn pool_extranonce2(
        &self,
        miner_extranonce1: &[u8],
        miner_extranonce2: &[u8],
    ) -> Option<Vec<u8>> {
        if miner_extranonce2.len() != self.miner_extranonce2_size() {
            return None;
        }
        match self.layout {
            Layout::Direct => Some(miner_extranonce2.to_vec()),
            _ => {
                if miner_extranonce1.len() != self.miner_extranonce1_size(0) {
                    return None;
                }
                let mut out = Vec::with_capacity(self.pool_extranonce2_size);
                out.extend_from_slice(miner_extranonce1);
                out.extend_from_slice(miner_extranonce2);
                out.resize(self.pool_extranonce2_size, 0);
                Some(out)
            }
        }
    }

    /// True when a miner set up for `self` can go on unchanged on a connection split as
    /// `other` (same extranonce sizes; session-id extranonce1s): no
    /// `mining.set_extranonce` or `client.reconnect` needed.
    pub fn keeps_miners_on(&self, other: &Split) -> bool {
        let same_sizes = self.miner_extranonce1_size(0) == other.miner_extranonce1_size(0)
            && self.miner_extranonce2_size() == other.miner_extranonce2_size();
        same_sizes
            && matches!(self.layout, Layout::Standard | Layout::SessionId)
            && self.layout == other.layout
    }
}

/// The one-byte miner prefixes of one [`Layout::ConnectionPrefix`] connection: 256
/// at most (bounded: a 32-byte bitmap each for taken and cooling prefixes). A released
/// prefix cools until the connection's next clean job, so no new miner ever repeats
/// the work a departed one may still be finishing on a live job; prefixes are handed
/// out round-robin, so one just freed is the last to come back.
#[derive(Clone, Debug, Default)]
pub struct PrefixPool {
    taken: [u64; 4],
    cooling: [u64; 4],
    next: u8,
    in_use: u16,
}

fn bit(map: &[u64; 4], p: u8) -> bool {
    map[(p >> 6) as usize] & (1 << (p & 63)) != 0
}

fn set(map: &mut [u64; 4], p: u8, on: bool) {
    let word = &mut map[(p >> 6) as usize];
    if on {
        *word |= 1 << (p & 63);
    } else {
        *word &= !(1 << (p & 63));
    }
}

impl PrefixPool {
    pub fn new() -> PrefixPool {
        PrefixPool::default()
    }

    /// Prefixes held by miners.
    pub fn in_use(&self) -> usize {
        self.in_use as usize
    }

    /// A free prefix, or `None` when all 256 are taken or cooling.
    pub fn take(&mut self) -> Option<u8> {
        for step in 0..=255u8 {
            let p = self.next.wrapping_add(step);
            if !bit(&self.taken, p) && !bit(&self.cooling, p) {
                set(&mut self.taken, p, true);
                self.in_use += 1;
                self.next = p.wrapping_add(1);
                return Some(p);
            }
        }
        None
    }

    /// Takes `p` if it is free: a miner moved here keeps its extranonce1 when it can.
    pub fn take_exact(&mut self, p: u8) -> bool {
        if bit(&self.taken, p) || bit(&self.cooling, p) {
            return false;
        }
        set(&mut self.taken, p, true);
        self.in_use += 1;
        true
    }

    /// A miner left: its prefix cools until [`PrefixPool::clean_job`]. Releasing a
    /// prefix not taken does nothing.
    pub fn release(&mut self, p: u8) {
        if bit(&self.taken, p) {
            set(&mut self.taken, p, false);
            set(&mut self.cooling, p, true);
            self.in_use -= 1;
        }
    }

    /// The pool sent a clean job: nothing older can be finished, cooled prefixes are free.
    pub fn clean_job(&mut self) {
        self.cooling = [0; 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::stratum_upstream::hash::{sha256d, Target};
    use crate::protocol::stratum_upstream::hex::{decode, encode};
    use crate::protocol::stratum_upstream::job::tests::{block_881423, notify_881423};
    use crate::protocol::stratum_upstream::job::{Share, UpstreamJob};

    #[test]
    fn layouts_by_pool_extranonce2_size() {
        let ex1 = [1, 2, 3, 4];
        let s = |n: usize| Split::for_pool(&ex1, n, false);
        let sizes = |n: usize| {
            let s = s(n).unwrap();
            (
                s.layout,
                s.miner_extranonce1_size(4),
                s.miner_extranonce2_size(),
                s.padding(),
                s.miners_per_connection(),
            )
        };
        assert_eq!(sizes(8), (Layout::Standard, 4, 4, 0, 65_535)); // ckpool
        assert_eq!(sizes(12), (Layout::Standard, 4, 4, 4, 65_535));
        assert_eq!(sizes(32), (Layout::Standard, 4, 4, 24, 65_535));
        assert_eq!(sizes(7), (Layout::SessionId, 2, 4, 1, 65_535));
        assert_eq!(sizes(6), (Layout::SessionId, 2, 4, 0, 65_535));
        assert_eq!(sizes(5), (Layout::ConnectionPrefix, 1, 4, 0, 256));
        assert_eq!(sizes(4), (Layout::ConnectionPrefix, 1, 3, 0, 256));
        assert_eq!(s(3), Err(SplitError::TooSmall(3)));
        assert_eq!(s(0), Err(SplitError::TooSmall(0)));
        assert_eq!(s(33), Err(SplitError::TooLarge(33)));
        assert_eq!(
            Split::for_pool(&[0; 17], 8, false),
            Err(SplitError::Extranonce1TooLong(17))
        );
        let direct = Split::for_pool(&ex1, 2, true).unwrap();
        assert_eq!(direct.layout, Layout::Direct);
        assert_eq!(
            (
                direct.miner_extranonce1_size(4),
                direct.miner_extranonce2_size(),
                direct.padding(),
                direct.miners_per_connection()
            ),
            (4, 2, 0, 1)
        );
        // Identity pass-through on a roomy pool splits as usual (one layout for all).
        assert_eq!(
            Split::for_pool(&ex1, 8, true).unwrap().layout,
            Layout::Standard
        );
        assert!(SplitError::TooSmall(2).to_string().contains("2 bytes"));
        // Every miner-facing extranonce2 is one cgminer accepts.
        for n in 4..=32 {
            assert!(s(n).unwrap().miner_extranonce2_size() >= MIN_MINER_EXTRANONCE2_SIZE);
        }
    }

    #[test]
    fn miner_extranonces_byte_exact() {
        let pool_ex1 = [0xf1, 0xad, 0x9a, 0x67];
        let standard = Split::for_pool(&pool_ex1, 8, false).unwrap();
        assert_eq!(
            encode(&standard.miner_extranonce1(0x1234, 9, &pool_ex1)),
            "00001234"
        );
        assert_eq!(
            encode(
                &standard
                    .pool_extranonce2(&[0, 0, 0x12, 0x34], &[0xa, 0xb, 0xc, 0xd])
                    .unwrap()
            ),
            "000012340a0b0c0d"
        );
        let short = Split::for_pool(&pool_ex1, 7, false).unwrap();
        assert_eq!(
            encode(&short.miner_extranonce1(0x1234, 9, &pool_ex1)),
            "1234"
        );
        assert_eq!(
            encode(
                &short
                    .pool_extranonce2(&[0x12, 0x34], &[1, 2, 3, 4])
                    .unwrap()
            ),
            "12340102030400"
        );
        assert_eq!(encode(&short.miner_coinb2(&[0xee])), "00ee");
        let prefix = Split::for_pool(&pool_ex1, 4, false).unwrap();
        assert_eq!(
            encode(&prefix.miner_extranonce1(0x1234, 9, &pool_ex1)),
            "09"
        );
        assert_eq!(
            encode(&prefix.pool_extranonce2(&[9], &[1, 2, 3]).unwrap()),
            "09010203"
        );
        // Wrong sizes (a miner still on another split) are refused, not truncated.
        assert_eq!(
            standard.pool_extranonce2(&[0, 0, 0x12, 0x34], &[1, 2, 3]),
            None
        );
        assert_eq!(
            standard.pool_extranonce2(&[0x12, 0x34], &[1, 2, 3, 4]),
            None
        );
        assert_eq!(prefix.pool_extranonce2(&[9], &[1, 2, 3, 4]), None);
        let direct = Split::for_pool(&pool_ex1, 2, true).unwrap();
        assert_eq!(direct.miner_extranonce1(7, 9, &pool_ex1), pool_ex1.to_vec());
        assert_eq!(direct.miner_coinb1(&[0xc1], &pool_ex1), vec![0xc1]);
        assert_eq!(
            direct.pool_extranonce2(&pool_ex1, &[5, 6]).unwrap(),
            vec![5, 6]
        );
    }

    /// The heart of the split: for every layout, the coinbase a miner builds from what
    /// the agent sends it is byte for byte the one the pool rebuilds from the share
    /// the agent forwards, here on block 881,423's real coinbase (pool extranonce2
    /// "b660000000000000" read as session 0xb660's miner extranonce2 00000000).
    #[test]
    fn miner_coinbase_is_the_pool_coinbase() {
        let job = UpstreamJob::from_params(&notify_881423()).unwrap();
        let pool_ex1 = decode(block_881423::EXTRANONCE1).unwrap();
        for (n, sid, prefix) in [
            (8, 0x0000u16, 0xb6u8),
            (7, 0xb660, 1),
            (6, 0x0102, 2),
            (5, 0, 0xb6),
            (4, 0, 0x77),
        ] {
            let split = Split::for_pool(&pool_ex1, n, false).unwrap();
            let miner_ex1 = split.miner_extranonce1(sid, prefix, &pool_ex1);
            let miner_ex2: Vec<u8> = (0..split.miner_extranonce2_size() as u8).collect();
            let miner_coinbase = [
                split.miner_coinb1(&job.coinb1, &pool_ex1),
                miner_ex1.clone(),
                miner_ex2.clone(),
                split.miner_coinb2(&job.coinb2),
            ]
            .concat();
            let pool_ex2 = split.pool_extranonce2(&miner_ex1, &miner_ex2).unwrap();
            assert_eq!(pool_ex2.len(), n);
            assert_eq!(
                miner_coinbase,
                job.coinbase(&pool_ex1, &pool_ex2),
                "N = {n}"
            );
        }
        // And the real block: its extranonce2 b660000000000000, taken as a miner's
        // extranonce1 b6600000 and extranonce2 00000000, comes out of the split
        // unchanged and gives the block's hash.
        let split = Split::for_pool(&pool_ex1, 8, false).unwrap();
        let pool_ex2 = split
            .pool_extranonce2(&[0xb6, 0x60, 0, 0], &[0, 0, 0, 0])
            .unwrap();
        assert_eq!(encode(&pool_ex2), block_881423::EXTRANONCE2);
        let share = Share {
            extranonce1: &pool_ex1,
            extranonce2: &pool_ex2,
            ntime: job.ntime,
            nonce: block_881423::NONCE,
            version_bits: Some((block_881423::VERSION_BITS, 0x1fff_e000)),
        };
        let hash = sha256d(&job.header(&share));
        assert!(Target::from_nbits(job.nbits).unwrap().is_met_by(&hash));
    }

    #[test]
    fn moves_that_keep_the_extranonce() {
        let e = [0; 4];
        let split = |n| Split::for_pool(&e, n, false).unwrap();
        assert!(split(8).keeps_miners_on(&split(8)));
        assert!(split(8).keeps_miners_on(&split(16)));
        assert!(split(6).keeps_miners_on(&split(7)));
        assert!(!split(8).keeps_miners_on(&split(7)));
        assert!(
            !split(5).keeps_miners_on(&split(5)),
            "prefixes are per connection"
        );
        assert!(!split(7).keeps_miners_on(&split(5)));
    }

    #[test]
    fn prefixes_are_unique_bounded_and_cool_down() {
        let mut pool = PrefixPool::new();
        let mut got: Vec<u8> = (0..256).map(|_| pool.take().unwrap()).collect();
        assert_eq!(pool.in_use(), 256);
        assert_eq!(pool.take(), None);
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), 256);
        pool.release(17);
        pool.release(17); // twice: no effect
        assert_eq!(pool.in_use(), 255);
        assert_eq!(pool.take(), None, "17 cools until the next clean job");
        assert!(!pool.take_exact(17));
        pool.clean_job();
        assert_eq!(pool.take(), Some(17));
        assert!(!pool.take_exact(3), "taken");
        pool.release(3);
        pool.clean_job();
        assert!(pool.take_exact(3));
        assert_eq!(pool.in_use(), 256);
    }

    #[test]
    fn prefixes_come_back_round_robin() {
        let mut pool = PrefixPool::new();
        assert_eq!(pool.take(), Some(0));
        assert_eq!(pool.take(), Some(1));
        pool.release(0);
        pool.clean_job();
        assert_eq!(pool.take(), Some(2), "0 was just freed: others first");
    }
}
