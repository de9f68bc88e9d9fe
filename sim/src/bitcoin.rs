//! Bitcoin hashing as Stratum V1 miners and pools do it: sha256d, merkle root from a
//! coinbase and a branch, the 80-byte header from notify fields, difficulty targets.
//!
//! Byte orders (the usual source of bugs): notify `version`, `nbits`, `ntime` and the
//! submitted `nonce` are big-endian hex of a u32 that goes little-endian into the header;
//! `prevhash` is the header's 32 bytes with every 4-byte word byte-reversed; merkle
//! branch hashes and extranonces are raw bytes in header order.

use sha2::{Digest, Sha256};

/// Double SHA-256.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    let first = Sha256::digest(data);
    Sha256::digest(first).into()
}

/// Decodes lowercase or uppercase hex; `None` on odd length or a non-hex digit.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87
    if bytes.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[(byte >> 4) as usize] as char);
        text.push(DIGITS[(byte & 0xf) as usize] as char);
    }
    text
}

/// Parses exactly 8 hex digits as a big-endian u32 (the Stratum way to write a u32).
pub fn parse_hex_u32(text: &str) -> Option<u32> {
    if text.len() != 8 {
        return None;
    }
    let bytes = hex_decode(text)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

pub fn hex_u32(value: u32) -> String {
    format!("{value:08x}")
}

/// Converts a notify `prevhash` (word-swapped) to header byte order, and back: the
/// transform is its own inverse.
pub fn swap_words(bytes: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (dst, src) in out.chunks_mut(4).zip(bytes.chunks(4)) {
        dst.copy_from_slice(&[src[3], src[2], src[1], src[0]]);
    }
    out
}

/// Merkle root (header order) from the coinbase transaction and the notify branch.
pub fn merkle_root(coinbase: &[u8], branch: &[[u8; 32]]) -> [u8; 32] {
    let mut root = sha256d(coinbase);
    let mut pair = [0u8; 64];
    for hash in branch {
        pair[..32].copy_from_slice(&root);
        pair[32..].copy_from_slice(hash);
        root = sha256d(&pair);
    }
    root
}

/// The 80-byte block header. `prevhash` and `merkle_root` are in header byte order.
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

/// A block hash as a big-endian 256-bit number (the way block explorers print it).
pub fn hash_to_be(hash: &[u8; 32]) -> [u8; 32] {
    let mut be = *hash;
    be.reverse();
    be
}

/// Parses a difficulty written as a JSON number ("0.0001", "1e-9", "65536").
/// Refuses zero, negative, NaN and infinite values.
pub fn parse_difficulty(text: &str) -> Option<f64> {
    let value: f64 = text.trim().parse().ok()?;
    (value.is_finite() && value > 0.0).then_some(value)
}

/// Share target for a difficulty, as a big-endian 256-bit number:
/// `0x00000000FFFF0000...0000 / difficulty`, saturating at 2^256 - 1.
/// Computed in f64, then expanded exactly, so pool and miner agree bit for bit.
pub fn target_for_difficulty(difficulty: f64) -> [u8; 32] {
    // 0xFFFF * 2^208 is difficulty 1.
    let target = 65535.0 * 2f64.powi(208) / difficulty;
    let mut out = [0u8; 32];
    if target.is_nan() || target >= 2f64.powi(256) {
        return [0xff; 32];
    }
    for (index, byte) in out.iter_mut().enumerate() {
        let shift = 8 * (31 - index) as i32;
        // Dividing by a power of two and flooring are exact in f64; so is `% 256`.
        *byte = ((target / 2f64.powi(shift)).floor() % 256.0) as u8;
    }
    out
}

/// True when sha256d(header) meets the big-endian `target`.
pub fn hash_meets_target(hash: &[u8; 32], target_be: &[u8; 32]) -> bool {
    hash_to_be(hash) <= *target_be
}

/// Difficulty-1 target divided by the hash: the "share difficulty" of a hash (approximate).
pub fn hash_difficulty(hash: &[u8; 32]) -> f64 {
    let be = hash_to_be(hash);
    let mut value = 0.0f64;
    for byte in be {
        value = value * 256.0 + byte as f64;
    }
    if value == 0.0 {
        return f64::INFINITY;
    }
    65535.0 * 2f64.powi(208) / value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash32(hex_display: &str) -> [u8; 32] {
        // Explorers print hashes reversed relative to header byte order.
        let mut bytes: [u8; 32] = hex_decode(hex_display).unwrap().try_into().unwrap();
        bytes.reverse();
        bytes
    }

    const GENESIS_COINBASE: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";

    #[test]
    fn genesis_block_from_its_coinbase() {
        let coinbase = hex_decode(GENESIS_COINBASE).unwrap();
        let root = merkle_root(&coinbase, &[]);
        assert_eq!(
            root,
            hash32("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b")
        );
        let header = block_header(1, &[0; 32], &root, 1231006505, 0x1d00ffff, 2083236893);
        let hash = sha256d(&header);
        assert_eq!(
            hex_encode(&hash_to_be(&hash)),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
        assert!(hash_meets_target(&hash, &target_for_difficulty(1.0)));
    }

    #[test]
    fn block_125552_from_stratum_fields() {
        // The block as a pool would announce it: prevhash word-swapped, u32s as BE hex.
        let prev = hash32("00000000000008a3a41b85b8b29ad444def299fee21793cd8b9e567eab02cd81");
        let notify_prevhash = hex_encode(&swap_words(&prev));
        let prev_back: [u8; 32] = hex_decode(&notify_prevhash).unwrap().try_into().unwrap();
        let root = hash32("2b12fcf1b09288fcaff797d71e950e71ae42b91e8bdb2304758dfcffc2b620e3");
        let header = block_header(
            parse_hex_u32("00000001").unwrap(),
            &swap_words(&prev_back),
            &root,
            parse_hex_u32(&hex_u32(1305998791)).unwrap(),
            parse_hex_u32("1a44b9f2").unwrap(),
            parse_hex_u32(&hex_u32(2504433986)).unwrap(),
        );
        let hash = sha256d(&header);
        assert_eq!(
            hex_encode(&hash_to_be(&hash)),
            "00000000000000001e8d6829a8a21adc5d38d0a473b144b6765798e61f98bd1d"
        );
        // Its share difficulty is far above 244112 (the network difficulty then).
        assert!(hash_difficulty(&hash) > 244_112.0);
        assert!(hash_meets_target(&hash, &target_for_difficulty(244_112.0)));
        let mut bad = header;
        bad[79] ^= 1;
        assert!(!hash_meets_target(
            &sha256d(&bad),
            &target_for_difficulty(1.0)
        ));
    }

    #[test]
    fn merkle_branch_folds_left() {
        let coinbase = b"coinbase";
        let a = sha256d(b"a");
        let b = sha256d(b"b");
        let mut step = [sha256d(coinbase), a].concat();
        let mut expected = sha256d(&step);
        step = [expected, b].concat();
        expected = sha256d(&step);
        assert_eq!(merkle_root(coinbase, &[a, b]), expected);
    }

    #[test]
    fn targets() {
        let one = target_for_difficulty(1.0);
        assert_eq!(
            hex_encode(&one),
            "00000000ffff0000000000000000000000000000000000000000000000000000"
        );
        let half = target_for_difficulty(2.0);
        assert_eq!(&hex_encode(&half)[..16], "000000007fff8000");
        let easy = target_for_difficulty(1.0 / 65536.0);
        assert_eq!(&hex_encode(&easy)[..16], "0000ffff00000000");
        assert_eq!(target_for_difficulty(1e-80), [0xff; 32]);
        assert_eq!(parse_difficulty("0.0001"), Some(0.0001));
        assert_eq!(parse_difficulty("0"), None);
        assert_eq!(parse_difficulty("-1"), None);
        assert_eq!(parse_difficulty("abc"), None);
    }

    #[test]
    fn hex_round_trip_and_refusals() {
        assert_eq!(hex_encode(&hex_decode("00aBff").unwrap()), "00abff");
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(parse_hex_u32("1fffe000"), Some(0x1fffe000));
        assert_eq!(parse_hex_u32("1fffe00"), None);
    }
}
