//! BTCAgent ex-messages: `0x7F, cmd u8, length u16 LE (header included), body`.
//! An independent implementation of the pool side of agent-protocol.md.

pub const MAGIC: u8 = 0x7f;
pub const HEADER_LEN: usize = 4;

pub const CMD_REGISTER_WORKER: u8 = 0x01;
pub const CMD_SUBMIT_SHARE: u8 = 0x02;
pub const CMD_SUBMIT_SHARE_WITH_TIME: u8 = 0x03;
pub const CMD_UNREGISTER_WORKER: u8 = 0x04;
pub const CMD_MINING_SET_DIFF: u8 = 0x05;
pub const CMD_SUBMIT_RESPONSE: u8 = 0x10;
pub const CMD_SUBMIT_SHARE_WITH_VER: u8 = 0x12;
pub const CMD_SUBMIT_SHARE_WITH_TIME_VER: u8 = 0x13;

/// Share status codes as sserver puts them in SUBMIT_RESPONSE (Stratum.h
/// `StratumStatus`): raw, so 36 and 37 too, which its JSON path turns into 21.
pub const STATUS_ACCEPT: u32 = 1798084231;
/// What miners are told for 36 and 37.
pub const STATUS_JOB_NOT_FOUND_OR_STALE: u32 = 21;
pub const STATUS_DUPLICATE: u32 = 22;
pub const STATUS_LOW_DIFFICULTY: u32 = 23;
pub const STATUS_TIME_TOO_OLD: u32 = 31;
pub const STATUS_TIME_TOO_NEW: u32 = 32;
pub const STATUS_ILLEGAL_VERSION_MASK: u32 = 33;
/// The share's job is no longer among the connection's jobs, or the pool dropped it.
pub const STATUS_JOB_NOT_FOUND: u32 = 36;
/// The share's job is from before the last new block.
pub const STATUS_STALE: u32 = 37;

/// One submitted share as carried by the four SUBMIT forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submit {
    pub cmd: u8,
    pub job_id: u8,
    pub session_id: u16,
    pub extranonce2: u32,
    pub nonce: u32,
    pub ntime: Option<u32>,
    pub version_mask: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExMessage {
    RegisterWorker {
        session_id: u16,
        client_agent: String,
        worker_name: String,
    },
    Submit(Submit),
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExError {
    /// Length field below the 4-byte header: the stream cannot be resynchronised.
    BadLength(u16),
    /// Body length does not fit the command (the pool ignores such messages).
    WrongLength {
        cmd: u8,
        len: usize,
    },
    UnknownCmd(u8),
    /// A string field lacks its terminating NUL.
    Unterminated,
}

impl std::fmt::Display for ExError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExError::BadLength(len) => write!(f, "ex-message length {len} is below 4"),
            ExError::WrongLength { cmd, len } => {
                write!(f, "ex-message cmd 0x{cmd:02x} with wrong length {len}")
            }
            ExError::UnknownCmd(cmd) => write!(f, "unknown ex-message cmd 0x{cmd:02x}"),
            ExError::Unterminated => write!(f, "ex-message string without NUL"),
        }
    }
}

/// Length of the complete frame at the start of `buf`, if its header is there.
pub fn frame_len(buf: &[u8]) -> Option<Result<usize, ExError>> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let len = u16::from_le_bytes([buf[2], buf[3]]);
    if (len as usize) < HEADER_LEN {
        return Some(Err(ExError::BadLength(len)));
    }
    Some(Ok(len as usize))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes one complete frame (`frame[0] == MAGIC`, length already checked).
pub fn decode(frame: &[u8]) -> Result<ExMessage, ExError> {
    let cmd = frame[1];
    let body = &frame[HEADER_LEN..];
    let wrong = || ExError::WrongLength {
        cmd,
        len: frame.len(),
    };
    let submit = |ntime_at: Option<usize>, mask_at: Option<usize>, len: usize| {
        if body.len() != len {
            return Err(wrong());
        }
        Ok(ExMessage::Submit(Submit {
            cmd,
            job_id: body[0],
            session_id: u16_at(body, 1),
            extranonce2: u32_at(body, 3),
            nonce: u32_at(body, 7),
            ntime: ntime_at.map(|at| u32_at(body, at)),
            version_mask: mask_at.map(|at| u32_at(body, at)),
        }))
    };
    match cmd {
        CMD_REGISTER_WORKER => {
            if body.len() < 2 {
                return Err(wrong());
            }
            let mut parts = body[2..].splitn(3, |&b| b == 0);
            let agent = parts.next().unwrap_or_default();
            let worker = parts.next().ok_or(ExError::Unterminated)?;
            // Both strings must end in NUL: a third part (possibly empty) must exist.
            parts.next().ok_or(ExError::Unterminated)?;
            Ok(ExMessage::RegisterWorker {
                session_id: u16_at(body, 0),
                client_agent: String::from_utf8_lossy(agent).into_owned(),
                worker_name: String::from_utf8_lossy(worker).into_owned(),
            })
        }
        CMD_SUBMIT_SHARE => submit(None, None, 11),
        CMD_SUBMIT_SHARE_WITH_TIME => submit(Some(11), None, 15),
        CMD_SUBMIT_SHARE_WITH_VER => submit(None, Some(11), 15),
        CMD_SUBMIT_SHARE_WITH_TIME_VER => submit(Some(11), Some(15), 19),
        CMD_UNREGISTER_WORKER => {
            if body.len() != 2 {
                return Err(wrong());
            }
            Ok(ExMessage::UnregisterWorker {
                session_id: u16_at(body, 0),
            })
        }
        CMD_MINING_SET_DIFF => {
            if body.len() < 3 {
                return Err(wrong());
            }
            let count = u16_at(body, 1) as usize;
            if body.len() != 3 + 2 * count {
                return Err(wrong());
            }
            Ok(ExMessage::MiningSetDiff {
                diff_exp: body[0],
                session_ids: (0..count).map(|i| u16_at(body, 3 + 2 * i)).collect(),
            })
        }
        CMD_SUBMIT_RESPONSE => {
            if body.len() != 6 {
                return Err(wrong());
            }
            Ok(ExMessage::SubmitResponse {
                index: u16_at(body, 0),
                status: u32_at(body, 2),
            })
        }
        other => Err(ExError::UnknownCmd(other)),
    }
}

fn frame(cmd: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(MAGIC);
    out.push(cmd);
    // Callers keep bodies far below 64 KiB (MINING_SET_DIFF is chunked).
    out.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Most session ids one MINING_SET_DIFF can carry.
pub const MAX_SET_DIFF_SESSIONS: usize = 32764;

/// Encodes a message; MINING_SET_DIFF with more than 32764 ids becomes several frames.
pub fn encode(message: &ExMessage) -> Vec<u8> {
    match message {
        ExMessage::RegisterWorker {
            session_id,
            client_agent,
            worker_name,
        } => {
            let mut body = session_id.to_le_bytes().to_vec();
            body.extend_from_slice(client_agent.as_bytes());
            body.push(0);
            body.extend_from_slice(worker_name.as_bytes());
            body.push(0);
            frame(CMD_REGISTER_WORKER, &body)
        }
        ExMessage::Submit(s) => {
            let mut body = vec![s.job_id];
            body.extend_from_slice(&s.session_id.to_le_bytes());
            body.extend_from_slice(&s.extranonce2.to_le_bytes());
            body.extend_from_slice(&s.nonce.to_le_bytes());
            let cmd = match (s.ntime, s.version_mask) {
                (None, None) => CMD_SUBMIT_SHARE,
                (Some(_), None) => CMD_SUBMIT_SHARE_WITH_TIME,
                (None, Some(_)) => CMD_SUBMIT_SHARE_WITH_VER,
                (Some(_), Some(_)) => CMD_SUBMIT_SHARE_WITH_TIME_VER,
            };
            for field in [s.ntime, s.version_mask].into_iter().flatten() {
                body.extend_from_slice(&field.to_le_bytes());
            }
            frame(cmd, &body)
        }
        ExMessage::UnregisterWorker { session_id } => {
            frame(CMD_UNREGISTER_WORKER, &session_id.to_le_bytes())
        }
        ExMessage::MiningSetDiff {
            diff_exp,
            session_ids,
        } => {
            let mut out = Vec::new();
            for chunk in session_ids.chunks(MAX_SET_DIFF_SESSIONS) {
                let mut body = vec![*diff_exp];
                body.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
                for id in chunk {
                    body.extend_from_slice(&id.to_le_bytes());
                }
                out.extend_from_slice(&frame(CMD_MINING_SET_DIFF, &body));
            }
            out
        }
        ExMessage::SubmitResponse { index, status } => {
            let mut body = index.to_le_bytes().to_vec();
            body.extend_from_slice(&status.to_le_bytes());
            frame(CMD_SUBMIT_RESPONSE, &body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::{hex_decode, hex_encode};

    fn round_trip(hex: &str, expected: ExMessage) {
        let bytes = hex_decode(&hex.replace(' ', "")).unwrap();
        assert_eq!(frame_len(&bytes), Some(Ok(bytes.len())));
        assert_eq!(decode(&bytes), Ok(expected.clone()));
        assert_eq!(hex_encode(&encode(&expected)), hex_encode(&bytes));
    }

    fn share(cmd: u8, ntime: Option<u32>, version_mask: Option<u32>) -> ExMessage {
        ExMessage::Submit(Submit {
            cmd,
            job_id: 0xa9,
            session_id: 0x1122,
            extranonce2: 0x11223344,
            nonce: 0xaabbccdd,
            ntime,
            version_mask,
        })
    }

    #[test]
    fn protocol_document_vectors() {
        // The document (copied from btcpool's AGENT.md) writes the length as 2000,
        // i.e. the decimal 20 typed as hex; the frame is 20 = 0x14 bytes long.
        round_trip(
            "7f 01 1400 2211 63676d696e657200 733130393900",
            ExMessage::RegisterWorker {
                session_id: 0x1122,
                client_agent: "cgminer".into(),
                worker_name: "s1099".into(),
            },
        );
        round_trip(
            "7f 02 0f00 a9 2211 44332211 ddccbbaa",
            share(CMD_SUBMIT_SHARE, None, None),
        );
        round_trip(
            "7f 03 1300 a9 2211 44332211 ddccbbaa d02abd57",
            share(CMD_SUBMIT_SHARE_WITH_TIME, Some(0x57bd2ad0), None),
        );
        round_trip(
            "7f 04 0600 2211",
            ExMessage::UnregisterWorker { session_id: 0x1122 },
        );
        round_trip(
            "7f 05 0b00 0d 0200 2211 4433",
            ExMessage::MiningSetDiff {
                diff_exp: 13,
                session_ids: vec![0x1122, 0x3344],
            },
        );
    }

    #[test]
    fn version_forms_and_response() {
        round_trip(
            "7f 12 1300 a9 2211 44332211 ddccbbaa 00e0ff1f",
            share(CMD_SUBMIT_SHARE_WITH_VER, None, Some(0x1fffe000)),
        );
        round_trip(
            "7f 13 1700 a9 2211 44332211 ddccbbaa d02abd57 00e0ff1f",
            share(
                CMD_SUBMIT_SHARE_WITH_TIME_VER,
                Some(0x57bd2ad0),
                Some(0x1fffe000),
            ),
        );
        round_trip(
            "7f 10 0a00 0500 87962c6b",
            ExMessage::SubmitResponse {
                index: 5,
                status: STATUS_ACCEPT,
            },
        );
    }

    #[test]
    fn bad_frames_are_errors() {
        // A SUBMIT_SHARE_WITH_TIME length on a plain SUBMIT_SHARE.
        let bytes = hex_decode("7f021300a9221144332211ddccbbaad02abd57").unwrap();
        assert!(matches!(
            decode(&bytes),
            Err(ExError::WrongLength { cmd: 2, .. })
        ));
        assert_eq!(
            frame_len(&[0x7f, 1, 3, 0]),
            Some(Err(ExError::BadLength(3)))
        );
        assert_eq!(frame_len(&[0x7f, 1, 3]), None);
        assert_eq!(decode(&[0x7f, 0x77, 4, 0]), Err(ExError::UnknownCmd(0x77)));
        assert_eq!(
            decode(&hex_decode("7f01090022116100").unwrap()),
            Err(ExError::Unterminated)
        );
    }

    #[test]
    fn set_diff_is_chunked() {
        let ids: Vec<u16> = (0..40000u32).map(|i| i as u16).collect();
        let bytes = encode(&ExMessage::MiningSetDiff {
            diff_exp: 3,
            session_ids: ids,
        });
        let first = frame_len(&bytes).unwrap().unwrap();
        assert_eq!(first, 4 + 3 + 2 * MAX_SET_DIFF_SESSIONS);
        match decode(&bytes[first..]).unwrap() {
            ExMessage::MiningSetDiff { session_ids, .. } => {
                assert_eq!(session_ids.len(), 40000 - MAX_SET_DIFF_SESSIONS)
            }
            other => panic!("{other:?}"),
        }
    }
}
