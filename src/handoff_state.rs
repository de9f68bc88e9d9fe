//! What one agent process hands the next: every miner's socket (by descriptor number)
//! and what the agent knows of it. Pure data, written once by the old process and read
//! once by the new one ([`encode`], [`decode`]); the sockets themselves stay open across
//! the `execve` (`src/handoff.rs`).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Bumped whenever a field changes meaning. A binary that does not know the format of
/// the running one refuses the handoff at its check (`--check-handoff`), before any
/// miner is at stake.
pub const FORMAT: u32 = 1;

/// A state larger than this is refused: 65,535 miners take about 20 MB.
pub const MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Connected,
    Subscribed,
    /// Authorized by name, its authorize request (this id) not answered yet.
    WaitingForPool {
        auth_id: String,
    },
    Authorized,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<u8>,
    /// Output the kernel had not taken yet: sent first by the new process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsent: Vec<u8>,
}

pub fn encode(state: &HandoffState) -> Vec<u8> {
    // Only plain data: serialization cannot fail.
    serde_json::to_vec(state).unwrap_or_default()
}

pub fn decode(bytes: &[u8]) -> Result<HandoffState, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_BYTES} a handoff may take",
            bytes.len()
        ));
    }
    // The format first: a newer layout would otherwise fail on a field, less clearly.
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let format = serde_json::from_slice::<Format>(bytes)
        .map_err(|e| format!("not a handoff state: {e}"))?
        .format;
    if format != FORMAT {
        return Err(format!(
            "format {format}, this binary reads format {FORMAT}"
        ));
    }
    let state: HandoffState =
        serde_json::from_slice(bytes).map_err(|e| format!("not a handoff state: {e}"))?;
    let mut sids = std::collections::HashSet::new();
    let mut fds = std::collections::HashSet::from([state.listener_fd]);
    for m in &state.miners {
        if m.fd < 3 || !fds.insert(m.fd) {
            return Err(format!("miner {} has descriptor {}", m.sid, m.fd));
        }
        if !sids.insert(m.sid) {
            return Err(format!("session id {} handed twice", m.sid));
        }
    }
    Ok(state)
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
    fn another_format_is_refused_by_number() {
        let e = decode(br#"{"format":2,"whatever":[]}"#).unwrap_err();
        assert_eq!(e, "format 2, this binary reads format 1");
        assert!(decode(b"{\"listener_fd\":3}")
            .unwrap_err()
            .starts_with("not a handoff state"));
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
