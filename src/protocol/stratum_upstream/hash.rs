//! Bitcoin's proof-of-work arithmetic as a Stratum V1 pool applies it to a share:
//! sha256d, the merkle root from a coinbase and a branch, the 80-byte header, and
//! targets from a difficulty or from nbits.
//!
//! Byte orders, the usual source of bugs: hashes (merkle branch entries, the merkle
//! root, a header hash) are kept in header byte order, as sha256d produces them; a
//! [`Target`] is a big-endian 256-bit number, as explorers print hashes; u32 header
//! fields (version, ntime, nbits, nonce) go into the header little-endian.

use sha2::{Digest, Sha256};

/// Double SHA-256.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// The merkle root (header byte order) from the coinbase's hash and the notify's
/// branch: the coinbase is always the leftmost leaf, so every step hashes the running
/// value followed by the next branch entry.
pub fn merkle_root(coinbase_hash: [u8; 32], branch: &[[u8; 32]]) -> [u8; 32] {
    let mut root = coinbase_hash;
    let mut pair = [0u8; 64];
    for hash in branch {
        pair[..32].copy_from_slice(&root);
        pair[32..].copy_from_slice(hash);
        root = sha256d(&pair);
    }
    root
}

/// The 80-byte block header; `prevhash` and `merkle_root` in header byte order.
pub fn block_header(
    version: u32,
    prevhash: &[u8; 32],
    merkle_root: &[u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 80] {
    let mut header = [0u8; 80];
    header[0..4].copy_from_slice(&version.to_le_bytes());
    header[4..36].copy_from_slice(prevhash);
    header[36..68].copy_from_slice(merkle_root);
    header[68..72].copy_from_slice(&ntime.to_le_bytes());
    header[72..76].copy_from_slice(&nbits.to_le_bytes());
    header[76..80].copy_from_slice(&nonce.to_le_bytes());
    header
}

/// The header version of a version-rolling share (BIP 310):
/// `(job_version & !mask) | (version_bits & mask)`. ckpool ORs the bits into the job's
/// version instead; the two agree whenever the job's version has no bit inside the
/// mask, which BIP 320 pools guarantee.
pub fn rolled_version(job_version: u32, version_bits: u32, mask: u32) -> u32 {
    (job_version & !mask) | (version_bits & mask)
}

/// Converts a notify `prevhash` (the header's 32 bytes with every 4-byte word
/// byte-reversed, as Stratum sends it) to header byte order, and back.
pub fn swap_words(bytes: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (dst, src) in out.chunks_exact_mut(4).zip(bytes.chunks_exact(4)) {
        dst.copy_from_slice(&[src[3], src[2], src[1], src[0]]);
    }
    out
}

/// A share or block target: a big-endian 256-bit number a hash must not exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target(pub [u8; 32]);

/// Why nbits does not describe a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NbitsError {
    /// The sign bit (0x00800000) is set: a negative target.
    Negative(u32),
    /// The exponent puts the mantissa beyond 256 bits.
    Overflow(u32),
}

impl std::fmt::Display for NbitsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NbitsError::Negative(n) => write!(f, "nbits {n:08x} has the sign bit set"),
            NbitsError::Overflow(n) => write!(f, "nbits {n:08x} is beyond 256 bits"),
        }
    }
}

impl Target {
    /// The easiest target: every hash meets it.
    pub const MAX: Target = Target([0xff; 32]);

    /// `0xFFFF * 2^208 / difficulty`, saturating at [`Target::MAX`]; `None` for a
    /// difficulty that is not a positive finite number. Computed in f64 and expanded
    /// exactly, as pools that work in doubles (ckpool) compare.
    pub fn from_difficulty(difficulty: f64) -> Option<Target> {
        if !(difficulty.is_finite() && difficulty > 0.0) {
            return None;
        }
        let target = diff1() / difficulty;
        if target >= 2f64.powi(256) {
            return Some(Target::MAX);
        }
        let mut out = [0u8; 32];
        for (index, byte) in out.iter_mut().enumerate() {
            let shift = 8 * (31 - index) as i32;
            // Dividing by a power of two and flooring are exact in f64; so is `% 256`.
            *byte = ((target / 2f64.powi(shift)).floor() % 256.0) as u8;
        }
        Some(Target(out))
    }

    /// The block target that a header's nbits encodes (mantissa * 256^(exponent-3)).
    pub fn from_nbits(nbits: u32) -> Result<Target, NbitsError> {
        if nbits & 0x0080_0000 != 0 && nbits & 0x007f_ffff != 0 {
            return Err(NbitsError::Negative(nbits));
        }
        let exponent = (nbits >> 24) as i32;
        let mantissa = nbits & 0x007f_ffff;
        let mut out = [0u8; 32];
        let bytes = mantissa.to_be_bytes(); // bytes[1..4] are the mantissa
        for (i, &b) in bytes[1..].iter().enumerate() {
            // Byte i of the mantissa has weight 256^(exponent - 1 - i).
            let weight = exponent - 1 - i as i32;
            if b == 0 {
                continue;
            }
            if weight >= 32 {
                return Err(NbitsError::Overflow(nbits));
            }
            if weight >= 0 {
                out[31 - weight as usize] = b;
            }
        }
        Ok(Target(out))
    }

    /// True when `hash` (header byte order, as [`sha256d`] returns it) is at most this
    /// target.
    pub fn is_met_by(&self, hash: &[u8; 32]) -> bool {
        // Compare most significant bytes first: the hash's last byte is its top one.
        for (h, t) in hash.iter().rev().zip(self.0.iter()) {
            if h != t {
                return h < t;
            }
        }
        true
    }

    /// The difficulty this target stands for (approximate, for display).
    pub fn difficulty(&self) -> f64 {
        let value = self.0.iter().fold(0.0f64, |v, &b| v * 256.0 + b as f64);
        if value == 0.0 {
            f64::INFINITY
        } else {
            diff1() / value
        }
    }
}

/// 0xFFFF * 2^208: the target of difficulty 1 ("pool difficulty", as every Stratum
/// pool counts it); exact in an f64 (a 16-bit mantissa).
fn diff1() -> f64 {
    65535.0 * 2f64.powi(208)
}

/// The share difficulty of a hash (header byte order): difficulty 1's target divided
/// by the hash as a number; what pools log as "sdiff" and what a share is worth.
pub fn hash_difficulty(hash: &[u8; 32]) -> f64 {
    let mut be = *hash;
    be.reverse();
    Target(be).difficulty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::stratum_upstream::hex::{decode, encode};

    /// Explorers print hashes reversed relative to header byte order.
    fn displayed(hex: &str) -> [u8; 32] {
        let mut bytes: [u8; 32] = decode(hex).unwrap().try_into().unwrap();
        bytes.reverse();
        bytes
    }

    fn be(hash: &[u8; 32]) -> String {
        let mut b = *hash;
        b.reverse();
        encode(&b)
    }

    /// Block 0 (genesis), 2009-01-03: coinbase and header fields as every node has them.
    const GENESIS_COINBASE: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";

    #[test]
    fn genesis_block_from_its_coinbase() {
        let coinbase = decode(GENESIS_COINBASE).unwrap();
        let root = merkle_root(sha256d(&coinbase), &[]);
        assert_eq!(
            root,
            displayed("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b")
        );
        let header = block_header(1, &[0; 32], &root, 1231006505, 0x1d00ffff, 2083236893);
        let hash = sha256d(&header);
        assert_eq!(
            be(&hash),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
        let block_target = Target::from_nbits(0x1d00ffff).unwrap();
        assert_eq!(Target::from_difficulty(1.0), Some(block_target));
        assert!(block_target.is_met_by(&hash));
        let mut bad = header;
        bad[79] ^= 1;
        assert!(!block_target.is_met_by(&sha256d(&bad)));
    }

    #[test]
    fn nbits_targets() {
        assert_eq!(
            encode(&Target::from_nbits(0x1d00ffff).unwrap().0),
            "00000000ffff0000000000000000000000000000000000000000000000000000"
        );
        // Block 881,423's nbits.
        assert_eq!(
            encode(&Target::from_nbits(0x17029a8a).unwrap().0),
            "000000000000000000029a8a0000000000000000000000000000000000000000"
        );
        // Exponents below 3 shift the mantissa right (bytes fall off).
        assert_eq!(
            encode(&Target::from_nbits(0x02123456).unwrap().0),
            format!("{}1234", "0".repeat(60))
        );
        assert_eq!(Target::from_nbits(0x00000000).unwrap(), Target([0; 32]));
        assert_eq!(
            Target::from_nbits(0x04923456),
            Err(NbitsError::Negative(0x04923456))
        );
        // As Bitcoin Core's SetCompact: a zero top mantissa byte may sit beyond 256 bits.
        assert_eq!(
            Target::from_nbits(0x2101ffff),
            Err(NbitsError::Overflow(0x2101ffff))
        );
        assert_eq!(
            &encode(&Target::from_nbits(0x2100ffff).unwrap().0)[..4],
            "ffff"
        );
        assert_eq!(
            NbitsError::Overflow(0x2101ffff).to_string(),
            "nbits 2101ffff is beyond 256 bits"
        );
    }

    #[test]
    fn difficulty_targets() {
        let t = |d: f64| encode(&Target::from_difficulty(d).unwrap().0);
        assert_eq!(
            t(1.0),
            "00000000ffff0000000000000000000000000000000000000000000000000000"
        );
        assert_eq!(&t(2.0)[..16], "000000007fff8000");
        assert_eq!(&t(1.0 / 65536.0)[..16], "0000ffff00000000");
        assert_eq!(&t(65536.0)[..20], "000000000000ffff0000");
        assert_eq!(Target::from_difficulty(1e-80), Some(Target::MAX));
        assert_eq!(Target::from_difficulty(0.0), None);
        assert_eq!(Target::from_difficulty(-1.0), None);
        assert_eq!(Target::from_difficulty(f64::NAN), None);
        assert_eq!(Target::from_difficulty(f64::INFINITY), None);
        // A harder difficulty is a lower target.
        assert!(Target::from_difficulty(1000.0) < Target::from_difficulty(999.0));
        let d = Target::from_difficulty(4096.0).unwrap().difficulty();
        assert!((d - 4096.0).abs() < 1e-9, "{d}");
    }

    #[test]
    fn meeting_a_target_compares_the_hash_as_a_number() {
        let target = Target::from_difficulty(1.0).unwrap();
        let mut hash = [0u8; 32];
        // 0x00000000ffff0000...: exactly the target, met.
        hash[26] = 0xff;
        hash[27] = 0xff;
        assert!(target.is_met_by(&hash));
        hash[0] = 1; // one more at the least significant end
        assert!(!target.is_met_by(&hash));
        let mut low = [0xffu8; 32];
        low[28..].fill(0);
        low[27] = 0xff;
        low[26] = 0xfe;
        assert!(target.is_met_by(&low));
        assert!(Target::MAX.is_met_by(&[0xff; 32]));
        assert!(!Target([0; 32]).is_met_by(&[1; 32]));
    }

    #[test]
    fn rolled_versions_follow_bip310() {
        // Block 881,423: job version 0x20000000, rolled bits 0x0e596000 in 1fffe000.
        assert_eq!(
            rolled_version(0x2000_0000, 0x0e59_6000, 0x1fff_e000),
            0x2e59_6000
        );
        // Bits outside the mask are ignored; job bits inside the mask are replaced.
        assert_eq!(
            rolled_version(0x2000_2004, 0xe000_0001, 0x1fff_e000),
            0x2000_0004
        );
        assert_eq!(rolled_version(0x2000_0000, 0, 0), 0x2000_0000);
    }

    #[test]
    fn prevhash_word_swap_is_its_own_inverse() {
        let mut x = [0u8; 32];
        for (i, b) in x.iter_mut().enumerate() {
            *b = i as u8;
        }
        let s = swap_words(&x);
        assert_eq!(&s[..8], &[3, 2, 1, 0, 7, 6, 5, 4]);
        assert_eq!(swap_words(&s), x);
    }

    #[test]
    fn hash_difficulty_of_genesis() {
        let h = displayed("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f");
        let d = hash_difficulty(&h);
        assert!(d > 2536.0 && d < 2537.0, "{d}");
        assert_eq!(hash_difficulty(&[0; 32]), f64::INFINITY);
    }
}
