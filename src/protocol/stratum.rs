//! Stratum V1 lines: what the agent reads from miners and pools, and what it writes.
//!
//! Parsing borrows from the line (`RawValue`) so that an id is echoed back exactly as
//! the miner wrote it, and a pool's `mining.set_difficulty` is forwarded byte for byte
//! (a fractional difficulty must not be rounded through an f64 and printed again).

use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt::Write as _;

/// One JSON-RPC object: a request or notification (`method` set) or a response.
#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(default)]
    pub method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

impl<'a> Message<'a> {
    pub fn parse(line: &'a [u8]) -> Result<Message<'a>, String> {
        let line = std::str::from_utf8(line).map_err(|_| "line is not UTF-8".to_string())?;
        serde_json::from_str(line.trim()).map_err(|e| format!("not a JSON-RPC object: {e}"))
    }

    /// The id as JSON text, `null` when absent.
    pub fn id_text(&self) -> &'a str {
        self.id.map(RawValue::get).unwrap_or("null")
    }

    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// The params as a list of values (empty when absent or not a list).
    pub fn params_list(&self) -> Vec<serde_json::Value> {
        self.params
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or_default()
    }

    /// True when the response's result is JSON `true`.
    pub fn result_is_true(&self) -> bool {
        self.result
            .map(|r| r.get().trim() == "true")
            .unwrap_or(false)
    }

    pub fn has_error(&self) -> bool {
        self.error
            .map(|e| e.get().trim() != "null")
            .unwrap_or(false)
    }
}

/// Stratum error codes the agent itself sends to miners (btcpool's numbering).
pub mod code {
    pub const OTHER: i32 = 20;
    pub const JOB_NOT_FOUND: i32 = 21;
    pub const DUPLICATE: i32 = 22;
    pub const LOW_DIFFICULTY: i32 = 23;
    pub const TIME_TOO_NEW: i32 = 32;
    pub const ILLEGAL_VERSION_MASK: i32 = 33;
    pub const UNAUTHORIZED: i32 = 24;
    pub const NOT_SUBSCRIBED: i32 = 25;
    pub const ILLEGAL_METHOD: i32 = 26;
    pub const ILLEGAL_PARAMS: i32 = 27;
    pub const INVALID_USERNAME: i32 = 29;
    pub const INTERNAL_ERROR: i32 = 30;
    pub const EMPTY_SUBACCOUNT: i32 = 105;
}

/// Share status codes of SUBMIT_RESPONSE that mean "accepted".
pub fn status_is_accepted(status: u32) -> bool {
    matches!(status, 1798084231 | 950395421 | 1422486894 | 1713984938)
}

/// SUBMIT_RESPONSE carries sserver's raw codes; 36 (job not found) and 37 (stale
/// share) are what sserver's own JSON path shows miners as 21, since miners know only
/// that one (StratumSessionBitcoin.cc `responseError`).
pub fn status_for_miner(status: u32) -> i32 {
    match status {
        36 | 37 => code::JOB_NOT_FOUND,
        s => i32::try_from(s).unwrap_or(code::OTHER),
    }
}

/// The reason sserver gives for a rejection code (Stratum.cc `StratumStatus::toString`).
pub fn status_text(status: i32) -> &'static str {
    match status {
        0 => "Share rejected",
        21 => "Job not found (=stale)",
        22 => "Duplicate share",
        23 => "Low difficulty",
        24 => "Unauthorized worker",
        25 => "Not subscribed",
        26 => "Illegal method",
        27 => "Illegal params",
        28 => "Ip banned",
        29 => "Invalid username",
        30 => "Internal error",
        31 => "Time too old",
        32 => "Time too new",
        33 => "Invalid version mask",
        36 => "Job not found",
        37 => "Stale share",
        _ => "Unknown",
    }
}

/// A difficulty as JSON number text: whole numbers without a fraction (`16384`, not
/// `16384.0`), others as Rust prints them, exactly enough to read back the same.
pub fn difficulty_text(difficulty: f64) -> String {
    if difficulty.fract() == 0.0 && difficulty.abs() < 1e15 {
        format!("{}", difficulty as u64)
    } else {
        format!("{difficulty}")
    }
}

/// `{"id":ID,"result":RESULT,"error":null}\n`; `result` is JSON text.
pub fn result_line(id: &str, result: &str) -> Vec<u8> {
    let mut s = String::with_capacity(40 + id.len() + result.len());
    let _ = writeln!(s, "{{\"id\":{id},\"result\":{result},\"error\":null}}");
    s.into_bytes()
}

/// `{"id":ID,"result":null,"error":[CODE,"MESSAGE",null]}\n`.
pub fn error_line(id: &str, code: i32, message: &str) -> Vec<u8> {
    let msg = serde_json::to_string(message).unwrap_or_else(|_| "\"error\"".into());
    let mut s = String::with_capacity(50 + id.len() + msg.len());
    let _ = writeln!(
        s,
        "{{\"id\":{id},\"result\":null,\"error\":[{code},{msg},null]}}"
    );
    s.into_bytes()
}

/// A notification: `{"id":null,"method":METHOD,"params":PARAMS}\n`; `params` is JSON text.
pub fn notification(method: &str, params: &str) -> Vec<u8> {
    let mut s = String::with_capacity(40 + method.len() + params.len());
    let _ = writeln!(
        s,
        "{{\"id\":null,\"method\":\"{method}\",\"params\":{params}}}"
    );
    s.into_bytes()
}

/// A request with an id (JSON text) to the pool.
pub fn request(id: &str, method: &str, params: &str) -> Vec<u8> {
    let mut s = String::with_capacity(40 + id.len() + method.len() + params.len());
    let _ = writeln!(
        s,
        "{{\"id\":{id},\"method\":\"{method}\",\"params\":{params}}}"
    );
    s.into_bytes()
}

/// `mining.set_difficulty` for a MINING_SET_DIFF exponent: 2^exp as an integer when it
/// fits in a JSON-safe integer, as a float beyond.
pub fn set_difficulty_pow2(exp: u8) -> Vec<u8> {
    let params = if exp < 53 {
        format!("[{}]", 1u64 << exp)
    } else {
        format!("[{:e}]", 2f64.powi(exp as i32))
    };
    notification("mining.set_difficulty", &params)
}

/// Parses a hex field of a share (`"1a2b3c4d"`, at most 8 digits) as a big-endian u32.
pub fn parse_hex_u32(v: &serde_json::Value) -> Option<u32> {
    let s = v.as_str()?;
    // from_str_radix alone would also take a leading '+'.
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Parses a share field that must be exactly 8 hex digits (extranonce2, ntime, nonce).
pub fn parse_hex8(v: &serde_json::Value) -> Option<u32> {
    v.as_str().filter(|s| s.len() == 8).and(parse_hex_u32(v))
}

/// sserver rejects a share whose ntime is more than this past its job's (32).
pub const MAX_NTIME_AHEAD: u32 = 600;

/// Lower-case 8-digit hex of a u32, as Stratum writes versions, masks and ids.
pub fn hex8(v: u32) -> String {
    format!("{v:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_keeps_raw_id() {
        let m = Message::parse(br#"{"id": "a\"b", "method":"mining.submit","params":["w","1","00000001","5f5e1000","1a2b3c4d"]}"#).unwrap();
        assert_eq!(m.id_text(), r#""a\"b""#);
        assert_eq!(m.method(), Some("mining.submit"));
        assert_eq!(m.params_list().len(), 5);
        let n = Message::parse(
            b"{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[0.00001525]}\n",
        )
        .unwrap();
        assert_eq!(n.id_text(), "null");
        assert_eq!(n.params.unwrap().get(), "[0.00001525]");
    }

    #[test]
    fn parses_responses() {
        let m = Message::parse(br#"{"id":"authorize","result":true,"error":null}"#).unwrap();
        assert!(m.result_is_true());
        assert!(!m.has_error());
        let e = Message::parse(br#"{"id":3,"result":null,"error":[29,"Invalid username",null]}"#)
            .unwrap();
        assert!(e.has_error());
        assert!(!e.result_is_true());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Message::parse(b"GET / HTTP/1.1").is_err());
        assert!(Message::parse(b"[1,2,3]").is_err());
        assert!(Message::parse(&[0xff, 0xfe]).is_err());
        assert!(Message::parse(br#"{"id":1,"method":5}"#).is_err());
    }

    #[test]
    fn builds_lines_byte_exact() {
        assert_eq!(
            result_line("7", "true"),
            b"{\"id\":7,\"result\":true,\"error\":null}\n"
        );
        assert_eq!(
            error_line("\"x\"", 21, "Job not found (=stale)"),
            b"{\"id\":\"x\",\"result\":null,\"error\":[21,\"Job not found (=stale)\",null]}\n"
                .to_vec()
        );
        assert_eq!(
            notification("mining.set_difficulty", "[0.5]"),
            b"{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[0.5]}\n".to_vec()
        );
        assert_eq!(
            request("\"caps\"", "agent.get_capabilities", "[[\"verrol\"]]"),
            b"{\"id\":\"caps\",\"method\":\"agent.get_capabilities\",\"params\":[[\"verrol\"]]}\n"
                .to_vec()
        );
        assert_eq!(
            set_difficulty_pow2(13),
            notification("mining.set_difficulty", "[8192]")
        );
        assert_eq!(
            set_difficulty_pow2(0),
            notification("mining.set_difficulty", "[1]")
        );
        assert!(String::from_utf8(set_difficulty_pow2(60))
            .unwrap()
            .contains("1.152921504606847e18"));
    }

    #[test]
    fn hex_fields() {
        use serde_json::json;
        assert_eq!(parse_hex_u32(&json!("1a2b3c4d")), Some(0x1a2b3c4d));
        assert_eq!(parse_hex_u32(&json!("ff")), Some(0xff));
        assert_eq!(parse_hex_u32(&json!("1a2b3c4d5")), None);
        assert_eq!(parse_hex_u32(&json!("zz")), None);
        assert_eq!(parse_hex_u32(&json!(12)), None);
        assert_eq!(parse_hex_u32(&json!("")), None);
        assert_eq!(parse_hex_u32(&json!("+1")), None);
        assert_eq!(hex8(0x1fffe000), "1fffe000");
        assert_eq!(parse_hex8(&json!("0000abcd")), Some(0xabcd));
        assert_eq!(parse_hex8(&json!("abcd")), None);
        assert_eq!(parse_hex8(&json!("0000abcd0")), None);
        assert_eq!(parse_hex8(&json!("+000abcd")), None);
    }

    #[test]
    fn status_codes() {
        assert!(status_is_accepted(1798084231));
        assert!(status_is_accepted(1713984938));
        assert!(!status_is_accepted(23));
        assert_eq!(status_text(22), "Duplicate share");
        assert_eq!(status_for_miner(36), 21);
        assert_eq!(status_for_miner(37), 21);
        assert_eq!(status_text(status_for_miner(37)), "Job not found (=stale)");
        assert_eq!(status_for_miner(23), 23);
        assert_eq!(status_for_miner(2147483647), 2147483647);
        assert_eq!(status_for_miner(u32::MAX), code::OTHER);
    }
}
