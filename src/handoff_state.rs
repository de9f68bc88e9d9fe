//! What one agent process hands the next: every miner's socket (by descriptor number)
//! and what the agent knows of it. Pure data, written once by the old process and read
//! once by the new one ([`encode`], [`decode`]); the sockets themselves stay open across
//! the `execve` (`src/handoff.rs`).

use serde_json::{Map, Value};
use std::fmt::Write;
use std::net::SocketAddr;

/// Bumped whenever a field changes meaning. A binary that does not know the format of
/// the running one refuses the handoff at its check (`--check-handoff`), before any
/// miner is at stake.
pub const FORMAT: u32 = 1;

/// A state larger than this is refused: 65,535 miners take about 20 MB.
pub const MAX_BYTES: usize = 64 << 20;

/// Linux's highest possible open-files limit (fs.nr_open) is 2^20 by default.
const MAX_FD: usize = 1 << 24;

#[derive(Debug, Clone, PartialEq)]
pub struct HandoffState {
    pub format: u32,
    /// The miner port's listening socket.
    pub listener_fd: i32,
    /// The next pool connection id: a share on a job of the old process's
    /// connections names one of them, and must never match a new connection's job.
    pub next_pool_id: u32,
    /// The mode the miners logged in under: their groups mean something else in the
    /// other one.
    pub multi_user_mode: bool,
    pub miners: Vec<HandedMiner>,
}

/// How far a miner had got.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    Connected,
    Subscribed,
    /// Authorized by name, its authorize request (this id) not answered yet.
    WaitingForPool {
        auth_id: String,
    },
    Authorized,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HandedMiner {
    pub fd: i32,
    /// Its extranonce1 and its identity at the pool: kept, so the miner's work stays
    /// valid and the pool sees the same session.
    pub sid: u16,
    pub peer: SocketAddr,
    pub stage: Stage,
    pub user_agent: String,
    pub worker: String,
    pub login_worker: String,
    /// Its group: `None` in single-user mode.
    pub subaccount: Option<String>,
    pub version_rolling: bool,
    pub requested_mask: u32,
    pub difficulty: f64,
    pub accepted: u32,
    pub rejected: u32,
    pub accepted_difficulty: f64,
    pub connected_seconds: u64,
    /// An unfinished line the old process had read (the rest is in the socket).
    pub unread: Vec<u8>,
    /// Output the kernel had not taken yet: sent first by the new process.
    pub unsent: Vec<u8>,
    /// Its extranonce1 in hex and extranonce2 size when they are not the standard
    /// `0000SSSS` and 4 (a 4-7 byte Stratum pool's layout); empty and 0 otherwise.
    pub extranonce1: String,
    pub extranonce2_size: u8,
    /// It sent `mining.extranonce.subscribe`.
    pub extranonce_subscribed: bool,
}

/// The state as one JSON object. Written and read by hand rather than derived: the
/// derived code cost some 30 KB of every router binary for a document read once.
pub fn encode(state: &HandoffState) -> Vec<u8> {
    let mut out = String::with_capacity(64 + state.miners.len() * 320);
    let _ = write!(
        out,
        r#"{{"format":{},"listener_fd":{},"next_pool_id":{},"multi_user_mode":{},"miners":["#,
        state.format, state.listener_fd, state.next_pool_id, state.multi_user_mode
    );
    for (i, m) in state.miners.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_miner(&mut out, m);
    }
    out.push_str("]}");
    out.into_bytes()
}

fn encode_miner(out: &mut String, m: &HandedMiner) {
    let text = |s: &str| Value::from(s).to_string();
    let stage = match &m.stage {
        Stage::Connected => r#""connected""#.to_string(),
        Stage::Subscribed => r#""subscribed""#.to_string(),
        Stage::WaitingForPool { auth_id } => {
            format!(r#"{{"waiting_for_pool":{{"auth_id":{}}}}}"#, text(auth_id))
        }
        Stage::Authorized => r#""authorized""#.to_string(),
    };
    let subaccount = m.subaccount.as_deref().map_or("null".into(), text);
    let _ = write!(
        out,
        r#"{{"fd":{},"sid":{},"peer":{},"stage":{stage},"user_agent":{},"worker":{},"login_worker":{},"subaccount":{subaccount},"version_rolling":{},"requested_mask":{},"difficulty":{},"accepted":{},"rejected":{},"accepted_difficulty":{},"connected_seconds":{}"#,
        m.fd,
        m.sid,
        text(&m.peer.to_string()),
        text(&m.user_agent),
        text(&m.worker),
        text(&m.login_worker),
        m.version_rolling,
        m.requested_mask,
        Value::from(m.difficulty),
        m.accepted,
        m.rejected,
        Value::from(m.accepted_difficulty),
        m.connected_seconds,
    );
    for (name, bytes) in [("unread", &m.unread), ("unsent", &m.unsent)] {
        if !bytes.is_empty() {
            let _ = write!(out, r#","{name}":{}"#, Value::from(bytes.as_slice()));
        }
    }
    // Absent for the standard layout, so older states read the same.
    if !m.extranonce1.is_empty() {
        let _ = write!(
            out,
            r#","extranonce":[{},{}]"#,
            text(&m.extranonce1),
            m.extranonce2_size
        );
    }
    if m.extranonce_subscribed {
        out.push_str(r#","extranonce_subscribed":true"#);
    }
    out.push('}');
}

/// Reads a state [`encode`] wrote (this binary's or another of the same format).
pub fn decode(bytes: &[u8]) -> Result<HandoffState, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_BYTES} a handoff may take",
            bytes.len()
        ));
    }
    let not_state = |e: String| format!("not a handoff state: {e}");
    let value: Value = serde_json::from_slice(bytes).map_err(|e| not_state(e.to_string()))?;
    let top = value
        .as_object()
        .ok_or_else(|| not_state("not an object".into()))?;
    // The format first: a newer layout would otherwise fail on a field, less clearly.
    let format = number(top, "format").map_err(not_state)?;
    if format != u64::from(FORMAT) {
        return Err(format!(
            "format {format}, this binary reads format {FORMAT}"
        ));
    }
    let miners = top
        .get("miners")
        .and_then(Value::as_array)
        .ok_or_else(|| not_state("no miners".into()))?
        .iter()
        .map(decode_miner)
        .collect::<Result<Vec<_>, String>>()
        .map_err(not_state)?;
    let state = HandoffState {
        format: FORMAT,
        listener_fd: int(top, "listener_fd").map_err(not_state)?,
        next_pool_id: int(top, "next_pool_id").map_err(not_state)?,
        multi_user_mode: flag(top, "multi_user_mode").map_err(not_state)?,
        miners,
    };
    let max_fd = state
        .miners
        .iter()
        .map(|m| m.fd)
        .chain([state.listener_fd])
        .max();
    let max_fd = max_fd.unwrap_or(0).max(0) as usize;
    // Far above any open-files limit: not a descriptor this process could have had.
    if max_fd > MAX_FD {
        return Err(format!("descriptor {max_fd} is out of range"));
    }
    let mut fds = Bits::new(max_fd + 1);
    let mut sids = Bits::new(1 << 16);
    fds.insert(state.listener_fd.max(0) as usize);
    for m in &state.miners {
        if m.fd < 3 || !fds.insert(m.fd as usize) {
            return Err(format!("miner {} has descriptor {}", m.sid, m.fd));
        }
        if !sids.insert(m.sid as usize) {
            return Err(format!("session id {} handed twice", m.sid));
        }
    }
    Ok(state)
}

/// A set of small numbers (descriptors, session ids).
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    /// False if `i` was in already.
    fn insert(&mut self, i: usize) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }
}

fn decode_miner(value: &Value) -> Result<HandedMiner, String> {
    let m = value.as_object().ok_or("a miner is not an object")?;
    let stage = match m.get("stage") {
        Some(Value::String(s)) if s == "connected" => Stage::Connected,
        Some(Value::String(s)) if s == "subscribed" => Stage::Subscribed,
        Some(Value::String(s)) if s == "authorized" => Stage::Authorized,
        Some(Value::Object(o)) => {
            let waiting = o
                .get("waiting_for_pool")
                .and_then(Value::as_object)
                .ok_or("an unknown stage")?;
            Stage::WaitingForPool {
                auth_id: text(waiting, "auth_id")?,
            }
        }
        _ => return Err("an unknown stage".into()),
    };
    let peer = text(m, "peer")?;
    let (extranonce1, extranonce2_size) = match m.get("extranonce") {
        None => (String::new(), 0),
        Some(v) => match (
            v[0].as_str(),
            v[1].as_u64().and_then(|n| u8::try_from(n).ok()),
        ) {
            (Some(ex1), Some(size)) if v.as_array().is_some_and(|a| a.len() == 2) => {
                (ex1.to_string(), size)
            }
            _ => return Err("extranonce is not [extranonce1, size]".into()),
        },
    };
    Ok(HandedMiner {
        fd: int(m, "fd")?,
        sid: int(m, "sid")?,
        peer: peer
            .parse()
            .map_err(|_| format!("peer {peer:?} is not an address"))?,
        stage,
        user_agent: text(m, "user_agent")?,
        worker: text(m, "worker")?,
        login_worker: text(m, "login_worker")?,
        subaccount: match m.get("subaccount") {
            None | Some(Value::Null) => None,
            Some(_) => Some(text(m, "subaccount")?),
        },
        version_rolling: flag(m, "version_rolling")?,
        requested_mask: int(m, "requested_mask")?,
        difficulty: real(m, "difficulty")?,
        accepted: int(m, "accepted")?,
        rejected: int(m, "rejected")?,
        accepted_difficulty: real(m, "accepted_difficulty")?,
        connected_seconds: number(m, "connected_seconds")?,
        unread: bytes(m, "unread")?,
        unsent: bytes(m, "unsent")?,
        extranonce1,
        extranonce2_size,
        extranonce_subscribed: match m.get("extranonce_subscribed") {
            None => false,
            Some(_) => flag(m, "extranonce_subscribed")?,
        },
    })
}

fn number(o: &Map<String, Value>, key: &str) -> Result<u64, String> {
    o.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{key} is not a number"))
}

/// A whole number that fits `T` (a descriptor, an id, a count).
fn int<T: TryFrom<u64>>(o: &Map<String, Value>, key: &str) -> Result<T, String> {
    T::try_from(number(o, key)?).map_err(|_| format!("{key} is out of range"))
}

fn real(o: &Map<String, Value>, key: &str) -> Result<f64, String> {
    o.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("{key} is not a number"))
}

fn flag(o: &Map<String, Value>, key: &str) -> Result<bool, String> {
    o.get(key)
        .and_then(Value::as_bool)
        .ok_or_else(|| format!("{key} is not true or false"))
}

fn text(o: &Map<String, Value>, key: &str) -> Result<String, String> {
    o.get(key)
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| format!("{key} is not a string"))
}

/// Absent: none.
fn bytes(o: &Map<String, Value>, key: &str) -> Result<Vec<u8>, String> {
    match o.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| format!("{key} is not bytes")),
        Some(_) => Err(format!("{key} is not bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miner(sid: u16, fd: i32, stage: Stage) -> HandedMiner {
        HandedMiner {
            fd,
            sid,
            peer: "192.168.1.20:40122".parse().unwrap(),
            stage,
            user_agent: "bmminer/2.0.0".into(),
            worker: "s19-a01".into(),
            login_worker: "s19-a01".into(),
            subaccount: Some("farm1".into()),
            version_rolling: true,
            requested_mask: 0x1fff_e000,
            difficulty: 16384.0,
            accepted: 12,
            rejected: 1,
            accepted_difficulty: 196_608.0,
            connected_seconds: 3600,
            unread: Vec::new(),
            unsent: Vec::new(),
            extranonce1: String::new(),
            extranonce2_size: 0,
            extranonce_subscribed: false,
        }
    }

    fn state() -> HandoffState {
        let mut waiting = miner(
            2,
            8,
            Stage::WaitingForPool {
                auth_id: "3".into(),
            },
        );
        waiting.unread = b"{\"id\":4,\"method\":\"mining.sub".to_vec();
        waiting.unsent = vec![0xff, b'\n'];
        HandoffState {
            format: FORMAT,
            listener_fd: 5,
            next_pool_id: 6,
            multi_user_mode: true,
            miners: vec![
                miner(1, 7, Stage::Authorized),
                waiting,
                miner(3, 9, Stage::Connected),
            ],
        }
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let s = state();
        assert_eq!(decode(&encode(&s)).unwrap(), s);
    }

    #[test]
    fn the_written_form_is_stable() {
        // What an older binary of this format writes: a newer one must read it.
        let text = br#"{"format":1,"listener_fd":5,"next_pool_id":6,"multi_user_mode":true,"miners":[{"fd":7,"sid":1,"peer":"192.168.1.20:40122","stage":"authorized","user_agent":"bmminer/2.0.0","worker":"s19-a01","login_worker":"s19-a01","subaccount":"farm1","version_rolling":true,"requested_mask":536862720,"difficulty":16384.0,"accepted":12,"rejected":1,"accepted_difficulty":196608.0,"connected_seconds":3600},{"fd":8,"sid":2,"peer":"192.168.1.20:40122","stage":{"waiting_for_pool":{"auth_id":"3"}},"user_agent":"bmminer/2.0.0","worker":"s19-a01","login_worker":"s19-a01","subaccount":"farm1","version_rolling":true,"requested_mask":536862720,"difficulty":16384.0,"accepted":12,"rejected":1,"accepted_difficulty":196608.0,"connected_seconds":3600,"unread":[123,34,105,100,34,58,52,44,34,109,101,116,104,111,100,34,58,34,109,105,110,105,110,103,46,115,117,98],"unsent":[255,10]},{"fd":9,"sid":3,"peer":"192.168.1.20:40122","stage":"connected","user_agent":"bmminer/2.0.0","worker":"s19-a01","login_worker":"s19-a01","subaccount":"farm1","version_rolling":true,"requested_mask":536862720,"difficulty":16384.0,"accepted":12,"rejected":1,"accepted_difficulty":196608.0,"connected_seconds":3600}]}"#;
        assert_eq!(encode(&state()), text.to_vec());
        assert_eq!(decode(text).unwrap(), state());
    }

    #[test]
    fn a_miners_extranonce_layout_is_handed_over() {
        let mut s = state();
        s.miners[0].extranonce1 = "34".into();
        s.miners[0].extranonce2_size = 3;
        s.miners[0].extranonce_subscribed = true;
        let text = String::from_utf8(encode(&s)).unwrap();
        assert!(
            text.contains(
                r#""connected_seconds":3600,"extranonce":["34",3],"extranonce_subscribed":true}"#
            ),
            "{text}"
        );
        assert_eq!(decode(text.as_bytes()).unwrap(), s);
        let bad = text.replace(r#"["34",3]"#, r#"["34"]"#);
        let e = decode(bad.as_bytes()).unwrap_err();
        assert!(e.contains("extranonce is not [extranonce1, size]"), "{e}");
    }

    #[test]
    fn another_format_is_refused_by_number() {
        let e = decode(br#"{"format":2,"whatever":[]}"#).unwrap_err();
        assert_eq!(e, "format 2, this binary reads format 1");
        assert_eq!(
            decode(b"{\"listener_fd\":3}").unwrap_err(),
            "not a handoff state: format is not a number"
        );
        let mut s = state();
        s.miners[0].peer = "192.168.1.20:40122".parse().unwrap();
        let text = String::from_utf8(encode(&s))
            .unwrap()
            .replace("\"sid\":1,", "\"sid\":70000,");
        assert_eq!(
            decode(text.as_bytes()).unwrap_err(),
            "not a handoff state: sid is out of range"
        );
        assert!(decode(b"garbage")
            .unwrap_err()
            .starts_with("not a handoff state"));
    }

    #[test]
    fn impossible_descriptors_and_ids_are_refused() {
        let mut s = state();
        s.miners[0].fd = 1;
        assert_eq!(decode(&encode(&s)).unwrap_err(), "miner 1 has descriptor 1");
        let mut s = state();
        s.miners[0].fd = s.listener_fd;
        assert!(decode(&encode(&s)).is_err());
        let mut s = state();
        s.miners[0].fd = i32::MAX;
        assert!(decode(&encode(&s)).unwrap_err().contains("out of range"));
        let mut s = state();
        s.miners[0].fd = s.miners[1].fd;
        assert_eq!(decode(&encode(&s)).unwrap_err(), "miner 2 has descriptor 8");
        let mut s = state();
        s.miners[1].sid = 1;
        assert_eq!(
            decode(&encode(&s)).unwrap_err(),
            "session id 1 handed twice"
        );
    }

    #[test]
    fn an_oversized_state_is_refused_unread() {
        let big = vec![b' '; MAX_BYTES + 1];
        assert!(decode(&big).unwrap_err().contains("more than"));
    }
}
