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

/// What one miner was told of its extranonces: at `mining.subscribe`, or by its last
/// `mining.set_extranonce`. Three bytes, kept in the miner's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinerLayout {
    /// Extranonce1 `0000SSSS` (its session id), extranonce2 4 bytes: the agent
    /// protocol's and [`Layout::Standard`]'s.
    Standard,
    /// Extranonce1 `SSSS`, extranonce2 4 bytes ([`Layout::SessionId`]).
    SessionId,
    /// Extranonce1 one byte, its prefix on one connection, extranonce2
    /// `extranonce2_size` bytes ([`Layout::ConnectionPrefix`]).
    Prefix { prefix: u8, extranonce2_size: u8 },
}

impl MinerLayout {
    /// The layout for a connection split as `split`, with `prefix` on a
    /// [`Layout::ConnectionPrefix`] one. [`Layout::Direct`] (one miner per connection)
    /// has no shared layout: the standard one stands in.
    pub fn for_split(split: &Split, prefix: u8) -> MinerLayout {
        match split.layout {
            Layout::Standard | Layout::Direct => MinerLayout::Standard,
            Layout::SessionId => MinerLayout::SessionId,
            Layout::ConnectionPrefix => MinerLayout::Prefix {
                prefix,
                extranonce2_size: split.miner_extranonce2_size() as u8,
            },
        }
    }

    /// The layout a new miner is told at subscribe for a pool whose extranonce2 is
    /// `pool_extranonce2_size` bytes (`None`: the agent protocol, or not known yet).
    /// On a 4-5 byte pool its prefix is its session id's low byte: the fallback when
    /// no connection can suggest a free one ([`PrefixPool::suggest`]; the agent asks
    /// the connection the miner most likely lands on, docs/stratum-upstream.md §3).
    pub fn for_new_miner(pool_extranonce2_size: Option<usize>, session_id: u16) -> MinerLayout {
        pool_extranonce2_size
            .and_then(|n| Split::for_pool(&[], n, false).ok())
            .map_or(MinerLayout::Standard, |split| {
                MinerLayout::for_split(&split, session_id as u8)
            })
    }

    /// The layout of a miner told `extranonce1` (of session `session_id`) and
    /// `extranonce2_size` (a handoff from the previous process); `None` for what no
    /// layout gives.
    pub fn from_extranonce(
        extranonce1: &[u8],
        extranonce2_size: usize,
        session_id: u16,
    ) -> Option<MinerLayout> {
        let layout = match (extranonce1, extranonce2_size) {
            (&[p], 3 | 4) => MinerLayout::Prefix {
                prefix: p,
                extranonce2_size: extranonce2_size as u8,
            },
            (_, MINER_EXTRANONCE2_SIZE) if extranonce1.len() == 2 => MinerLayout::SessionId,
            (_, MINER_EXTRANONCE2_SIZE) if extranonce1.len() == 4 => MinerLayout::Standard,
            _ => return None,
        };
        (layout.extranonce1(session_id) == extranonce1).then_some(layout)
    }

    /// True when a miner with this layout can mine on a connection split as `split`
    /// as it is (a prefix must still be free there: [`PrefixPool::take_exact`]).
    pub fn fits(&self, split: &Split) -> bool {
        *self == MinerLayout::for_split(split, self.prefix().unwrap_or(0))
    }

    pub fn prefix(&self) -> Option<u8> {
        match *self {
            MinerLayout::Prefix { prefix, .. } => Some(prefix),
            _ => None,
        }
    }

    /// The miner's extranonce1 for session `session_id`.
    pub fn extranonce1(&self, session_id: u16) -> Vec<u8> {
        match *self {
            MinerLayout::Standard => (session_id as u32).to_be_bytes().to_vec(),
            MinerLayout::SessionId => session_id.to_be_bytes().to_vec(),
            MinerLayout::Prefix { prefix, .. } => vec![prefix],
        }
    }

    pub fn extranonce2_size(&self) -> usize {
        match *self {
            MinerLayout::Standard | MinerLayout::SessionId => MINER_EXTRANONCE2_SIZE,
            MinerLayout::Prefix {
                extranonce2_size, ..
            } => extranonce2_size as usize,
        }
    }

    /// The result of the miner's `mining.subscribe`: subscription ids are the session
    /// id in 8 hex digits whatever the layout (as the agent protocol's answer).
    pub fn subscribe_result(&self, session_id: u16) -> String {
        let sub = format!("{:08x}", session_id);
        format!(
            "[[[\"mining.set_difficulty\",\"{sub}\"],[\"mining.notify\",\"{sub}\"]],\"{}\",{}]",
            super::hex::encode(&self.extranonce1(session_id)),
            self.extranonce2_size()
        )
    }

    /// `mining.set_extranonce [ex1, size]` for the miner (NiceHash's extension: it
    /// applies from the next notify).
    pub fn set_extranonce_line(&self, session_id: u16) -> Vec<u8> {
        format!(
            "{{\"id\":null,\"method\":\"mining.set_extranonce\",\"params\":[\"{}\",{}]}}\n",
            super::hex::encode(&self.extranonce1(session_id)),
            self.extranonce2_size()
        )
        .into_bytes()
    }
}

/// A miner's extranonce2 as submitted: 1 to 8 bytes, inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinerExtranonce2 {
    bytes: [u8; 8],
    len: u8,
}

impl MinerExtranonce2 {
    /// Exactly `size` bytes (1..=8) of hex, either case; anything else is `None`: a
    /// shorter or longer one would build another coinbase than the pool rebuilds.
    pub fn parse(text: &str, size: usize) -> Option<MinerExtranonce2> {
        if !(1..=8).contains(&size) || text.len() != 2 * size {
            return None;
        }
        let mut bytes = [0u8; 8];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            bytes[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(MinerExtranonce2 {
            bytes,
            len: size as u8,
        })
    }

    /// The 4-byte extranonce2 of the standard layout.
    pub fn from_u32(v: u32) -> MinerExtranonce2 {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&v.to_be_bytes());
        MinerExtranonce2 { bytes, len: 4 }
    }

    /// As a big-endian u32 when it has 4 bytes (the agent protocol's SUBMIT field).
    pub fn as_u32(&self) -> Option<u32> {
        (self.len == 4).then(|| {
            u32::from_be_bytes([self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]])
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
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

    /// Prefixes neither taken nor cooling: what a new miner can get now.
    pub fn free(&self) -> usize {
        let busy: u32 = (0..4)
            .map(|i| (self.taken[i] | self.cooling[i]).count_ones())
            .sum();
        256 - busy as usize
    }

    /// True when `p` is neither taken nor cooling: a miner told it can join as it is.
    pub fn is_free(&self, p: u8) -> bool {
        !bit(&self.taken, p) && !bit(&self.cooling, p)
    }

    /// The first free prefix from the round-robin cursor on.
    fn next_free(&self) -> Option<u8> {
        (0..=255u8)
            .map(|step| self.next.wrapping_add(step))
            .find(|&p| self.is_free(p))
    }

    /// A free prefix, or `None` when all 256 are taken or cooling.
    pub fn take(&mut self) -> Option<u8> {
        let p = self.next_free()?;
        set(&mut self.taken, p, true);
        self.in_use += 1;
        self.next = p.wrapping_add(1);
        Some(p)
    }

    /// The prefix to tell a miner that subscribes now and most likely joins this
    /// connection once it logs in: the next free one from the round-robin cursor,
    /// which moves past it without taking it, so miners subscribing back to back are
    /// each told another one (up to 256 of them in flight). The miner takes it with
    /// [`PrefixPool::take_exact`] when it joins. `None` when none is free.
    pub fn suggest(&mut self) -> Option<u8> {
        let p = self.next_free()?;
        self.next = p.wrapping_add(1);
        Some(p)
    }

    /// Takes `p` if it is free: a miner moved here keeps its extranonce1 when it can.
    pub fn take_exact(&mut self, p: u8) -> bool {
        if !self.is_free(p) {
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
    fn miner_layouts_byte_exact() {
        let sid = 0x1234;
        let at = |n| MinerLayout::for_new_miner(n, sid);
        // The agent protocol, a pool not known yet and N >= 8: today's answer.
        for layout in [at(None), at(Some(8)), at(Some(12))] {
            assert_eq!(layout, MinerLayout::Standard);
            assert_eq!(
                layout.subscribe_result(sid),
                r#"[[["mining.set_difficulty","00001234"],["mining.notify","00001234"]],"00001234",4]"#
            );
        }
        assert_eq!(at(Some(7)), MinerLayout::SessionId);
        assert_eq!(
            at(Some(6)).subscribe_result(sid),
            r#"[[["mining.set_difficulty","00001234"],["mining.notify","00001234"]],"1234",4]"#
        );
        assert_eq!(
            at(Some(5)),
            MinerLayout::Prefix {
                prefix: 0x34,
                extranonce2_size: 4
            }
        );
        assert_eq!(
            at(Some(4)).subscribe_result(sid),
            r#"[[["mining.set_difficulty","00001234"],["mining.notify","00001234"]],"34",3]"#
        );
        // Too small to share: the standard answer, the miner is moved if it lands there.
        assert_eq!(at(Some(3)), MinerLayout::Standard);
        assert_eq!(
            std::str::from_utf8(&at(Some(4)).set_extranonce_line(sid)).unwrap(),
            "{\"id\":null,\"method\":\"mining.set_extranonce\",\"params\":[\"34\",3]}\n"
        );
        assert_eq!(
            std::str::from_utf8(&MinerLayout::SessionId.set_extranonce_line(sid)).unwrap(),
            "{\"id\":null,\"method\":\"mining.set_extranonce\",\"params\":[\"1234\",4]}\n"
        );
        for layout in [
            MinerLayout::Standard,
            MinerLayout::SessionId,
            at(Some(4)),
            at(Some(5)),
        ] {
            let back = MinerLayout::from_extranonce(
                &layout.extranonce1(sid),
                layout.extranonce2_size(),
                sid,
            );
            assert_eq!(back, Some(layout));
        }
        assert_eq!(
            MinerLayout::from_extranonce(&[0x12, 0x35], 4, sid),
            None,
            "another session's"
        );
        assert_eq!(MinerLayout::from_extranonce(&[7], 2, sid), None);
        assert_eq!(
            MinerLayout::from_extranonce(&[0, 0, 0x12, 0x34], 3, sid),
            None
        );
        let split = |n| Split::for_pool(&[0; 4], n, false).unwrap();
        assert!(MinerLayout::Standard.fits(&split(8)));
        assert!(!MinerLayout::Standard.fits(&split(7)));
        assert!(MinerLayout::SessionId.fits(&split(6)));
        assert!(at(Some(4)).fits(&split(4)));
        assert!(!at(Some(4)).fits(&split(5)), "another extranonce2 size");
        assert!(!at(Some(5)).fits(&split(8)));
        // The miner's extranonce1 is what the split rebuilds the pool's extranonce2 from.
        for n in [4, 5, 6, 7, 8, 9] {
            let layout = MinerLayout::for_split(&split(n), 0x34);
            assert_eq!(
                layout.extranonce1(sid),
                split(n).miner_extranonce1(sid, 0x34, &[]),
                "N = {n}"
            );
            assert_eq!(layout.extranonce2_size(), split(n).miner_extranonce2_size());
        }
    }

    #[test]
    fn miner_extranonce2_parses_exactly_its_size() {
        let e = MinerExtranonce2::parse("0a0B0c", 3).unwrap();
        assert_eq!(e.as_bytes(), &[0x0a, 0x0b, 0x0c]);
        assert_eq!(e.as_u32(), None);
        let e = MinerExtranonce2::parse("deadBEEF", 4).unwrap();
        assert_eq!(e.as_u32(), Some(0xdead_beef));
        assert_eq!(e, MinerExtranonce2::from_u32(0xdead_beef));
        assert_eq!(MinerExtranonce2::parse("deadbeef", 3), None);
        assert_eq!(MinerExtranonce2::parse("0a0b0", 3), None);
        assert_eq!(MinerExtranonce2::parse("0a0b0g", 3), None);
        assert_eq!(MinerExtranonce2::parse("+a0b0c", 3), None);
        assert_eq!(MinerExtranonce2::parse("é0b0", 2), None);
        assert_eq!(MinerExtranonce2::parse("", 0), None);
        assert_eq!(MinerExtranonce2::parse(&"00".repeat(9), 9), None);
        assert_eq!(
            MinerExtranonce2::parse("0102030405060708", 8)
                .unwrap()
                .as_bytes(),
            &[1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn free_prefixes_count_the_cooling_ones_out() {
        let mut pool = PrefixPool::new();
        assert_eq!(pool.free(), 256);
        let p = pool.take().unwrap();
        pool.take().unwrap();
        assert_eq!(pool.free(), 254);
        pool.release(p);
        assert_eq!((pool.free(), pool.in_use()), (254, 1));
        pool.clean_job();
        assert_eq!(pool.free(), 255);
    }

    #[test]
    fn suggested_prefixes_differ_back_to_back_and_are_not_taken() {
        let mut pool = PrefixPool::new();
        assert_eq!(pool.take(), Some(0));
        assert_eq!(pool.take(), Some(1));
        assert!(pool.take_exact(3));
        pool.release(1); // cools until the next clean job
                         // Two miners subscribing back to back: 2, then 4 (3 is taken, 1 cooling).
        assert_eq!(pool.suggest(), Some(2));
        assert_eq!(pool.suggest(), Some(4));
        assert_eq!((pool.in_use(), pool.free()), (2, 253), "nothing taken");
        assert!(pool.is_free(2) && pool.is_free(4));
        assert!(!pool.is_free(0) && !pool.is_free(1) && !pool.is_free(3));
        // They log in, in any order: each takes the prefix it was told.
        assert!(pool.take_exact(4));
        assert!(pool.take_exact(2));
        // A miner moved here without a fitting prefix gets one past the suggested.
        assert_eq!(pool.take(), Some(5));
        assert_eq!(pool.suggest(), Some(6));
        // The cursor wraps round, skipping what is taken or cooling.
        let mut pool = PrefixPool::new();
        for p in 0..=253u8 {
            assert!(pool.take_exact(p));
        }
        pool.release(10);
        assert_eq!(pool.take(), Some(254));
        assert_eq!(pool.suggest(), Some(255));
        assert_eq!(pool.suggest(), Some(255), "the only one free: told again");
        assert!(pool.take_exact(255));
        assert_eq!(pool.suggest(), None, "10 cools");
        pool.clean_job();
        assert_eq!(pool.suggest(), Some(10));
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
