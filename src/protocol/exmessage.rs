//! BTCAgent ex-messages: the binary frames that share the pool stream with JSON lines.
//!
//! Frame: magic `0x7F`, cmd u8, length u16 (whole frame, header included), body.
//! Every integer is little-endian on the wire whatever the host, so encoding goes
//! through `to_le_bytes` and decoding through `from_le_bytes`, never through casts of
//! structs: the agent runs on big-endian MIPS too.

use std::fmt;

pub const MAGIC: u8 = 0x7F;
pub const HEADER_LEN: usize = 4;

pub const CMD_REGISTER_WORKER: u8 = 0x01;
pub const CMD_SUBMIT_SHARE: u8 = 0x02;
pub const CMD_SUBMIT_SHARE_WITH_TIME: u8 = 0x03;
pub const CMD_UNREGISTER_WORKER: u8 = 0x04;
pub const CMD_MINING_SET_DIFF: u8 = 0x05;
pub const CMD_SUBMIT_RESPONSE: u8 = 0x10;
pub const CMD_SUBMIT_SHARE_WITH_VER: u8 = 0x12;
pub const CMD_SUBMIT_SHARE_WITH_TIME_VER: u8 = 0x13;

/// The pool drops REGISTER_WORKER frames longer than this.
pub const MAX_REGISTER_LEN: usize = 100;

/// A share as the pool needs it; `ntime` and `version_mask` are present only when
/// they differ from the job's, which selects the smallest of the four SUBMIT forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub job_id: u8,
    pub session_id: u16,
    pub extranonce2: u32,
    pub nonce: u32,
    pub ntime: Option<u32>,
    pub version_mask: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExMessage {
    RegisterWorker {
        session_id: u16,
        client_agent: String,
        worker_name: String,
    },
    SubmitShare(Share),
    UnregisterWorker {
        session_id: u16,
    },
    MiningSetDiff {
        diff_exp: u8,
        session_ids: Vec<u16>,
    },
    SubmitResponse {
        index: u16,
        status: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExError {
    /// The first byte is not 0x7F.
    BadMagic(u8),
    /// The length field is below the header size.
    BadLength(u16),
    /// The body does not have the size this cmd requires.
    WrongSize { cmd: u8, len: usize },
    /// A cmd this agent does not know; the caller may skip the frame.
    UnknownCmd(u8),
}

impl fmt::Display for ExError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExError::BadMagic(b) => write!(f, "ex-message starts with 0x{b:02x}, not 0x7f"),
            ExError::BadLength(l) => write!(f, "ex-message length {l} is shorter than its header"),
            ExError::WrongSize { cmd, len } => {
                write!(
                    f,
                    "ex-message 0x{cmd:02x} has a {len}-byte frame, which does not fit the command"
                )
            }
            ExError::UnknownCmd(c) => write!(f, "unknown ex-message command 0x{c:02x}"),
        }
    }
}

impl std::error::Error for ExError {}

/// The length of the frame at the start of `buf`, once its header has arrived.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ExError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != MAGIC {
        return Err(ExError::BadMagic(buf[0]));
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u16::from_le_bytes([buf[2], buf[3]]);
    if (len as usize) < HEADER_LEN {
        return Err(ExError::BadLength(len));
    }
    Ok(Some(len as usize))
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Share {
    pub fn cmd(&self) -> u8 {
        match (self.ntime.is_some(), self.version_mask.is_some()) {
            (false, false) => CMD_SUBMIT_SHARE,
            (true, false) => CMD_SUBMIT_SHARE_WITH_TIME,
            (false, true) => CMD_SUBMIT_SHARE_WITH_VER,
            (true, true) => CMD_SUBMIT_SHARE_WITH_TIME_VER,
        }
    }

    /// Frame size of a share of this form (15, 19 or 23 bytes).
    pub fn frame_len(&self) -> usize {
        15 + 4 * (self.ntime.is_some() as usize + self.version_mask.is_some() as usize)
    }
}

impl ExMessage {
    /// Appends the frame to `out` (so many shares can be gathered in one buffer).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let cmd = match self {
            ExMessage::RegisterWorker { .. } => CMD_REGISTER_WORKER,
            ExMessage::SubmitShare(s) => s.cmd(),
            ExMessage::UnregisterWorker { .. } => CMD_UNREGISTER_WORKER,
            ExMessage::MiningSetDiff { .. } => CMD_MINING_SET_DIFF,
            ExMessage::SubmitResponse { .. } => CMD_SUBMIT_RESPONSE,
        };
        out.extend_from_slice(&[MAGIC, cmd, 0, 0]);
        match self {
            ExMessage::RegisterWorker {
                session_id,
                client_agent,
                worker_name,
            } => {
                put_u16(out, *session_id);
                let (agent, worker) = fit_register(client_agent, worker_name);
                out.extend_from_slice(agent);
                out.push(0);
                out.extend_from_slice(worker);
                out.push(0);
            }
            ExMessage::SubmitShare(s) => {
                out.push(s.job_id);
                put_u16(out, s.session_id);
                put_u32(out, s.extranonce2);
                put_u32(out, s.nonce);
                if let Some(t) = s.ntime {
                    put_u32(out, t);
                }
                if let Some(v) = s.version_mask {
                    put_u32(out, v);
                }
            }
            ExMessage::UnregisterWorker { session_id } => put_u16(out, *session_id),
            ExMessage::MiningSetDiff {
                diff_exp,
                session_ids,
            } => {
                // A frame holds at most 32764 ids; callers split longer lists.
                let ids = &session_ids[..session_ids.len().min(MAX_SET_DIFF_IDS)];
                out.push(*diff_exp);
                put_u16(out, ids.len() as u16);
                for id in ids {
                    put_u16(out, *id);
                }
            }
            ExMessage::SubmitResponse { index, status } => {
                put_u16(out, *index);
                put_u32(out, *status);
            }
        }
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        self.encode(&mut v);
        v
    }

    /// Decodes one whole frame (as delimited by [`frame_len`]).
    pub fn decode(frame: &[u8]) -> Result<ExMessage, ExError> {
        let len = match frame_len(frame)? {
            Some(l) if l == frame.len() => l,
            _ => {
                return Err(ExError::WrongSize {
                    cmd: frame.get(1).copied().unwrap_or(0),
                    len: frame.len(),
                })
            }
        };
        let cmd = frame[1];
        let b = &frame[HEADER_LEN..];
        let wrong = || ExError::WrongSize { cmd, len };
        match cmd {
            CMD_REGISTER_WORKER => {
                if b.len() < 4 {
                    return Err(wrong());
                }
                let session_id = get_u16(b, 0);
                let mut parts = b[2..].split(|&c| c == 0);
                let agent = parts.next().ok_or_else(wrong)?;
                let worker = parts.next().ok_or_else(wrong)?;
                if b.last() != Some(&0) {
                    return Err(wrong());
                }
                Ok(ExMessage::RegisterWorker {
                    session_id,
                    client_agent: String::from_utf8_lossy(agent).into_owned(),
                    worker_name: String::from_utf8_lossy(worker).into_owned(),
                })
            }
            CMD_SUBMIT_SHARE
            | CMD_SUBMIT_SHARE_WITH_TIME
            | CMD_SUBMIT_SHARE_WITH_VER
            | CMD_SUBMIT_SHARE_WITH_TIME_VER => {
                let with_time =
                    cmd == CMD_SUBMIT_SHARE_WITH_TIME || cmd == CMD_SUBMIT_SHARE_WITH_TIME_VER;
                let with_ver = cmd & 0x10 != 0;
                let want = 11 + 4 * (with_time as usize + with_ver as usize);
                if b.len() != want {
                    return Err(wrong());
                }
                let mut at = 11;
                let mut next = || {
                    let v = get_u32(b, at);
                    at += 4;
                    v
                };
                let ntime = if with_time { Some(next()) } else { None };
                let version_mask = if with_ver { Some(next()) } else { None };
                Ok(ExMessage::SubmitShare(Share {
                    job_id: b[0],
                    session_id: get_u16(b, 1),
                    extranonce2: get_u32(b, 3),
                    nonce: get_u32(b, 7),
                    ntime,
                    version_mask,
                }))
            }
            CMD_UNREGISTER_WORKER => {
                if b.len() != 2 {
                    return Err(wrong());
                }
                Ok(ExMessage::UnregisterWorker {
                    session_id: get_u16(b, 0),
                })
            }
            CMD_MINING_SET_DIFF => {
                if b.len() < 3 {
                    return Err(wrong());
                }
                let count = get_u16(b, 1) as usize;
                if b.len() != 3 + 2 * count {
                    return Err(wrong());
                }
                let session_ids = (0..count).map(|i| get_u16(b, 3 + 2 * i)).collect();
                Ok(ExMessage::MiningSetDiff {
                    diff_exp: b[0],
                    session_ids,
                })
            }
            CMD_SUBMIT_RESPONSE => {
                if b.len() != 6 {
                    return Err(wrong());
                }
                Ok(ExMessage::SubmitResponse {
                    index: get_u16(b, 0),
                    status: get_u32(b, 2),
                })
            }
            other => Err(ExError::UnknownCmd(other)),
        }
    }
}

/// Most session ids one MINING_SET_DIFF frame can carry.
pub const MAX_SET_DIFF_IDS: usize = 32764;

/// Shortens the agent string first (the worker name is what operators look for), then
/// the worker name, so the frame stays within the pool's 100-byte limit.
fn fit_register<'a>(agent: &'a str, worker: &'a str) -> (&'a [u8], &'a [u8]) {
    const ROOM: usize = MAX_REGISTER_LEN - HEADER_LEN - 2 - 2;
    let worker = &worker.as_bytes()[..worker.len().min(ROOM)];
    let agent = &agent.as_bytes()[..agent.len().min(ROOM - worker.len())];
    // Cut bytes may split a UTF-8 char; worker names are ASCII by the time they get
    // here and the pool treats both as bytes, so nothing is lost.
    let agent = strip_nul(agent);
    (agent, strip_nul(worker))
}

/// A NUL inside a string would end it early on the pool side.
fn strip_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // The worked examples of the protocol page, byte for byte.
    #[test]
    fn register_worker_vector() {
        let m = ExMessage::RegisterWorker {
            session_id: 0x1122,
            client_agent: "cgminer".into(),
            worker_name: "s1099".into(),
        };
        let want = hex("7f 01 1400 2211 63676d696e657200 733130393900");
        // The page's example header says 0x0020; its body is 16 bytes, so the true
        // length of the frame it shows is 20 (0x14): the pool checks the real length.
        assert_eq!(m.to_bytes(), want);
        assert_eq!(ExMessage::decode(&want).unwrap(), m);
    }

    #[test]
    fn submit_share_vectors() {
        let base = Share {
            job_id: 0xa9,
            session_id: 0x1122,
            extranonce2: 0x11223344,
            nonce: 0xaabbccdd,
            ntime: None,
            version_mask: None,
        };
        let plain = hex("7f 02 0f00 a9 2211 44332211 ddccbbaa");
        assert_eq!(ExMessage::SubmitShare(base).to_bytes(), plain);
        assert_eq!(
            ExMessage::decode(&plain).unwrap(),
            ExMessage::SubmitShare(base)
        );

        let timed = Share {
            ntime: Some(0x57bd2ad0),
            ..base
        };
        let with_time = hex("7f 03 1300 a9 2211 44332211 ddccbbaa d02abd57");
        assert_eq!(ExMessage::SubmitShare(timed).to_bytes(), with_time);
        assert_eq!(
            ExMessage::decode(&with_time).unwrap(),
            ExMessage::SubmitShare(timed)
        );

        let ver = Share {
            version_mask: Some(0x1fffe000),
            ..base
        };
        let with_ver = hex("7f 12 1300 a9 2211 44332211 ddccbbaa 00e0ff1f");
        assert_eq!(ExMessage::SubmitShare(ver).to_bytes(), with_ver);
        assert_eq!(
            ExMessage::decode(&with_ver).unwrap(),
            ExMessage::SubmitShare(ver)
        );

        let both = Share {
            ntime: Some(0x57bd2ad0),
            version_mask: Some(0x00002000),
            ..base
        };
        let with_both = hex("7f 13 1700 a9 2211 44332211 ddccbbaa d02abd57 00200000");
        assert_eq!(ExMessage::SubmitShare(both).to_bytes(), with_both);
        assert_eq!(
            ExMessage::decode(&with_both).unwrap(),
            ExMessage::SubmitShare(both)
        );
        assert_eq!(both.frame_len(), 23);
    }

    #[test]
    fn unregister_and_set_diff_vectors() {
        let un = hex("7f 04 0600 2211");
        assert_eq!(
            ExMessage::UnregisterWorker { session_id: 0x1122 }.to_bytes(),
            un
        );
        assert_eq!(
            ExMessage::decode(&un).unwrap(),
            ExMessage::UnregisterWorker { session_id: 0x1122 }
        );

        let sd = hex("7f 05 0b00 0d 0200 2211 4433");
        let m = ExMessage::MiningSetDiff {
            diff_exp: 13,
            session_ids: vec![0x1122, 0x3344],
        };
        assert_eq!(ExMessage::decode(&sd).unwrap(), m);
        assert_eq!(m.to_bytes(), sd);
    }

    #[test]
    fn submit_response() {
        let m = ExMessage::SubmitResponse {
            index: 0x0102,
            status: 1798084231,
        };
        let b = m.to_bytes();
        assert_eq!(
            b,
            [0x7f, 0x10, 0x0a, 0x00, 0x02, 0x01, 0x87, 0x96, 0x2c, 0x6b]
        );
        assert_eq!(ExMessage::decode(&b).unwrap(), m);
    }

    #[test]
    fn register_is_cut_to_the_pool_limit() {
        let m = ExMessage::RegisterWorker {
            session_id: 1,
            client_agent: "a".repeat(200),
            worker_name: "w".repeat(60),
        };
        let b = m.to_bytes();
        assert_eq!(b.len(), MAX_REGISTER_LEN);
        match ExMessage::decode(&b).unwrap() {
            ExMessage::RegisterWorker {
                worker_name,
                client_agent,
                ..
            } => {
                assert_eq!(worker_name, "w".repeat(60));
                assert_eq!(client_agent.len(), 32);
            }
            other => panic!("{other:?}"),
        }
        let huge = ExMessage::RegisterWorker {
            session_id: 1,
            client_agent: "a".into(),
            worker_name: "w".repeat(500),
        };
        assert_eq!(huge.to_bytes().len(), MAX_REGISTER_LEN);
    }

    #[test]
    fn framing_errors() {
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0x7f, 0x02]), Ok(None));
        assert_eq!(frame_len(&[0x7f, 0x02, 0x0f, 0x00]), Ok(Some(15)));
        assert_eq!(frame_len(b"{"), Err(ExError::BadMagic(b'{')));
        assert_eq!(
            frame_len(&[0x7f, 0x02, 0x02, 0x00]),
            Err(ExError::BadLength(2))
        );
        // A submit whose length does not match its cmd is refused, never misread.
        let mut short = hex("7f 03 0f00 a9 2211 44332211 ddccbbaa");
        assert!(matches!(
            ExMessage::decode(&short),
            Err(ExError::WrongSize { cmd: 3, .. })
        ));
        short[1] = 0x99;
        assert_eq!(ExMessage::decode(&short), Err(ExError::UnknownCmd(0x99)));
        assert!(ExMessage::decode(&hex("7f 05 0900 0d 0200 2211")).is_err());
        assert!(ExMessage::decode(&hex("7f 10 0900 0100 00000000")).is_err());
    }
}
