//! A recorder of what crosses both sides of an agent, for comparing agents message by
//! message: a scripted pool stand-in on loopback that answers as btcpool's sserver does,
//! scripted Stratum miners, and a plain text transcript of the whole conversation.
//!
//! Transcript format, one message per line:
//!
//! ```text
//! == 9 miner1 submits on job 1 with the job's ntime
//! miner1>agent json {"id":3,"method":"mining.submit","params":[...]}
//! agent>pool ex SUBMIT_SHARE {"extranonce2":"00000001","job_id":1,...,"session":"{miner1}"}
//! pool>agent ex SUBMIT_RESPONSE {"index":0,"status":1798084231}
//! agent>miner1 json {"error":null,"id":3,"result":true}
//! ```
//!
//! `json` lines are the parsed line re-serialized compactly with sorted keys; `ex` lines
//! are an ex-message decoded field by field (numbers the miner writes in hex are shown as
//! 8 hex digits), or `ex RAW {"hex":...}` when the frame does not decode exactly (wrong
//! length, unknown command, strings without their NUL), so nothing is lost; `eof` is the
//! sender closing its side; `garbage` is bytes that are neither.
//!
//! Steps are sequenced by conditions on what has been recorded (the harness waits until
//! the pool stand-in or a miner has seen the messages a step causes), never by sleeping.
//! Within a step the lines are grouped by connection: first the connection the step's
//! stimulus was sent on, then the pool connections, then the miners in order, each in
//! wire order (both directions of one connection in the order the stand-in handled
//! them). Across connections an agent's order is not observable, so it is not recorded.
//!
//! Normalization (what legitimately differs between agents and is blanked):
//! - the session id an agent gives a miner: in every ex-message field and in the
//!   miner's subscribe result (both extranonce1 slots) it is shown as `{minerN}`;
//! - the ids the agent picks for its requests to the pool: shown as `<method#k>` (the
//!   k-th distinct id used with that method on that connection), in the request and in
//!   the pool's answer;
//! - the agent's user agent version: `btccom-agent/<anything>` becomes
//!   `btccom-agent/<version>` (any other user agent is kept as it is);
//! - JSON key order and whitespace (lines are re-serialized); timing and TCP segment
//!   boundaries (messages are parsed from the streams, so an agent that coalesces
//!   writes looks the same as one that does not).
//!
//! Everything else is kept: the miners' request ids, job ids, every hex field.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any one step may take: generous, a step needs milliseconds.
pub const T: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------
// The recording

/// One side of the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// The n-th connection the agent opened to the pool stand-in (0-based).
    Pool(usize),
    /// Scripted miner n (0-based; shown as miner1, miner2, ...).
    Miner(usize),
}

impl Peer {
    pub fn name(self) -> String {
        match self {
            Peer::Pool(0) => "pool".into(),
            Peer::Pool(n) => format!("pool{}", n + 1),
            Peer::Miner(n) => format!("miner{}", n + 1),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Payload {
    Json(Value),
    /// A whole ex-message frame, header included.
    Ex(Vec<u8>),
    Eof,
    Garbage(Vec<u8>),
}

impl Payload {
    pub fn method(&self) -> Option<&str> {
        match self {
            Payload::Json(v) => v.get("method").and_then(Value::as_str),
            _ => None,
        }
    }

    /// The ex-message command byte.
    pub fn ex_cmd(&self) -> Option<u8> {
        match self {
            Payload::Ex(b) if b.len() >= 2 => Some(b[1]),
            _ => None,
        }
    }

    /// True for a response (no method) carrying `id`.
    pub fn is_response_to(&self, id: u64) -> bool {
        match self {
            Payload::Json(v) => v.get("method").is_none() && v.get("id") == Some(&json!(id)),
            _ => false,
        }
    }

    /// The job id of a `mining.notify`, without a `<connection>-` prefix.
    pub fn notify_job(&self) -> Option<String> {
        match self {
            Payload::Json(v) if self.method() == Some("mining.notify") => {
                let id = v["params"][0].as_str()?;
                Some(strip_connection(id).to_string())
            }
            _ => None,
        }
    }
}

/// `3-17` -> `17`: a job id that names its connection, reduced to the pool's job id.
pub fn strip_connection(job_id: &str) -> &str {
    match job_id.split_once('-') {
        Some((conn, job))
            if !conn.is_empty()
                && conn.bytes().all(|b| b.is_ascii_digit())
                && !job.is_empty()
                && job.bytes().all(|b| b.is_ascii_digit()) =>
        {
            job
        }
        _ => job_id,
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    /// 1-based step number; 0 before the first step.
    pub step: usize,
    pub peer: Peer,
    /// Sent by the harness (pool stand-in or miner) to the agent.
    pub to_agent: bool,
    pub payload: Payload,
}

#[derive(Default, Clone)]
pub struct Log {
    pub titles: Vec<String>,
    pub entries: Vec<Entry>,
}

impl Log {
    pub fn step(&self) -> usize {
        self.titles.len()
    }

    /// What the agent sent `peer` during the current step.
    pub fn sent_this_step(&self, peer: Peer) -> impl Iterator<Item = &Payload> {
        let step = self.step();
        self.entries
            .iter()
            .filter(move |e| e.step == step && e.peer == peer && !e.to_agent)
            .map(|e| &e.payload)
    }

    /// What the agent sent `peer` so far.
    pub fn sent_to(&self, peer: Peer) -> impl Iterator<Item = &Payload> {
        self.entries
            .iter()
            .filter(move |e| e.peer == peer && !e.to_agent)
            .map(|e| &e.payload)
    }

    /// The agent answered `peer`'s request `id` (at any time).
    pub fn answered(&self, peer: Peer, id: u64) -> bool {
        self.sent_to(peer).any(|p| p.is_response_to(id))
    }

    /// The agent sent `peer` the job `job` during this step.
    pub fn got_job(&self, peer: Peer, job: &str) -> bool {
        self.sent_this_step(peer)
            .any(|p| p.notify_job().as_deref() == Some(job))
    }

    /// Ex-messages of command `cmd` the agent sent the pool during this step.
    pub fn ex_this_step(&self, cmd: u8) -> usize {
        let step = self.step();
        self.entries
            .iter()
            .filter(|e| {
                e.step == step
                    && matches!(e.peer, Peer::Pool(_))
                    && !e.to_agent
                    && e.payload.ex_cmd() == Some(cmd)
            })
            .count()
    }

    /// SUBMITs (of any form) the agent sent the pool so far.
    pub fn submits(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| {
                matches!(e.peer, Peer::Pool(_))
                    && !e.to_agent
                    && matches!(e.payload.ex_cmd(), Some(0x02 | 0x03 | 0x12 | 0x13))
            })
            .count()
    }

    /// The agent closed its side of `peer`'s connection.
    pub fn closed_by_agent(&self, peer: Peer) -> bool {
        self.sent_to(peer).any(|p| matches!(p, Payload::Eof))
    }

    /// The pool connection has answered a capabilities request that came after the
    /// authorize: the handshake is complete on both sides.
    pub fn pool_handshake_done(&self, peer: Peer) -> bool {
        let mut authorized = false;
        for e in self.entries.iter().filter(|e| e.peer == peer) {
            match (e.to_agent, e.payload.method()) {
                (false, Some("mining.authorize")) => authorized = true,
                (true, None) if authorized => {
                    if let Payload::Json(v) = &e.payload {
                        if v["result"].get("capabilities").is_some() {
                            return true;
                        }
                    }
                }
                _ => {}
            }
        }
        false
    }
}

#[derive(Clone, Default)]
pub struct Recorder(Arc<(Mutex<Log>, Condvar)>);

impl Recorder {
    pub fn push(&self, peer: Peer, to_agent: bool, payload: Payload) {
        let (lock, cond) = &*self.0;
        let mut log = lock.lock().unwrap();
        let step = log.step();
        log.entries.push(Entry {
            step,
            peer,
            to_agent,
            payload,
        });
        cond.notify_all();
    }

    pub fn begin_step(&self, title: &str) {
        let (lock, cond) = &*self.0;
        lock.lock().unwrap().titles.push(title.to_string());
        cond.notify_all();
    }

    /// Waits until `cond` holds on the log; false if `timeout` passes first.
    pub fn wait_until(&self, timeout: Duration, cond: impl Fn(&Log) -> bool) -> bool {
        let (lock, cvar) = &*self.0;
        let end = Instant::now() + timeout;
        let mut log = lock.lock().unwrap();
        loop {
            if cond(&log) {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            log = cvar.wait_timeout(log, end - now).unwrap().0;
        }
    }

    pub fn snapshot(&self) -> Log {
        self.0 .0.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------
// The pool stand-in

/// What sserver gives this agent connection as extranonce1 (4 bytes).
pub const POOL_EXTRANONCE1: &str = "2a0f71c3";
/// The version bits the pool allows (sserver's default `version_mask`).
pub const POOL_VERSION_MASK: u32 = 0x1fffe000;
/// The pool's default difficulty: the first `mining.set_difficulty` of a connection.
pub const POOL_DIFFICULTY: u64 = 8192;

/// SUBMIT_RESPONSE statuses (btcpool src/Stratum.h).
pub mod status {
    pub const ACCEPT: u32 = 1798084231;
    pub const JOB_NOT_FOUND_OR_STALE: u32 = 21;
    pub const LOW_DIFFICULTY: u32 = 23;
    pub const STALE_SHARE: u32 = 37;
}

/// A job as the pool stand-in sends it, in sserver's notify format.
#[derive(Clone)]
pub struct Job {
    pub id: &'static str,
    pub prevhash: &'static str,
    pub coinb1: &'static str,
    pub coinb2: &'static str,
    pub branches: &'static [&'static str],
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean: bool,
}

impl Job {
    /// sserver's line (StratumServerBitcoin.cc, miningNotify1..3); `first` is the
    /// clean copy a newly authorized connection gets.
    pub fn line(&self, first: bool) -> String {
        let branches: Vec<String> = self.branches.iter().map(|b| format!("\"{b}\"")).collect();
        format!(
            "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"{}\",\"{}\",\"{}\",\"{}\",[{}],\"{:08x}\",\"{:08x}\",\"{:08x}\",{}]}}\n",
            self.id,
            self.prevhash,
            self.coinb1,
            self.coinb2,
            branches.join(","),
            self.version,
            self.nbits,
            self.ntime,
            self.clean || first
        )
    }
}

/// What the stand-in does with the next SUBMIT it counts.
#[derive(Clone, Copy, Debug)]
pub enum Plan {
    /// Send SUBMIT_RESPONSE with this status at once (if share responses are on).
    Answer(u32),
    /// Keep it; the scenario answers it later with [`PoolStandIn::answer`], or never.
    Hold,
}

struct ConnState {
    out: TcpStream,
    /// What the stand-in has to say in answer to one message, or in one scripted
    /// action: written at once, as sserver's event loop flushes its output buffer
    /// once per callback (an answer never arrives split from what follows it).
    unsent: Vec<u8>,
    authorized: bool,
    subres: bool,
    submits: u16,
    registered: HashSet<u16>,
    /// Job ids sent before the latest clean job: stale at sserver (37).
    stale_jobs: HashSet<u8>,
    /// Job ids sent since the latest clean job.
    live_jobs: HashSet<u8>,
}

struct PoolConn {
    peer: Peer,
    /// Held while a message is recorded and answered, so that what the harness sends
    /// on its own never interleaves with an answer.
    state: Mutex<ConnState>,
}

struct PoolShared {
    rec: Recorder,
    conns: Mutex<Vec<Arc<PoolConn>>>,
    plans: Mutex<VecDeque<Plan>>,
    job: Mutex<Option<Job>>,
    /// What the stand-in ignored as sserver would, and why: shown when a step times out.
    dropped: Mutex<Vec<String>>,
}

/// The pool side: accepts the agent's connections and answers the handshake as
/// sserver does (btcpool src/bitcoin/StratumSessionBitcoin.cc, src/StratumSession.cc):
/// - `agent.get_capabilities` (any id, also the `conn_test` before subscribe) ->
///   `{"id":..,"result":{"capabilities":["verrol","subres"]}}`; share responses turn on
///   only for a request asking "subres" after a successful authorize (before it
///   sserver's dispatcher is the null one);
/// - `mining.configure` -> the result with the requested mask ANDed with the allowed
///   one, then `mining.set_version_mask` with that mask;
/// - `mining.subscribe` -> `[[["mining.set_difficulty",EX1],["mining.notify",EX1]],EX1,8]`;
/// - `mining.authorize` -> `true`, then `mining.set_difficulty` (the default) and the
///   latest job, clean;
/// - SUBMITs of the right length for a registered session are counted from 0 (the
///   index of SUBMIT_RESPONSE) and handled by the next [`Plan`].
pub struct PoolStandIn {
    pub addr: SocketAddr,
    shared: Arc<PoolShared>,
}

impl PoolStandIn {
    pub fn start(rec: Recorder) -> PoolStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("pool stand-in binds");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(PoolShared {
            rec,
            conns: Mutex::new(Vec::new()),
            plans: Mutex::new(VecDeque::new()),
            job: Mutex::new(None),
            dropped: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let _ = stream.set_nodelay(true);
                let Ok(out) = stream.try_clone() else { return };
                let mut conns = s.conns.lock().unwrap();
                let conn = Arc::new(PoolConn {
                    peer: Peer::Pool(conns.len()),
                    state: Mutex::new(ConnState {
                        out,
                        unsent: Vec::new(),
                        authorized: false,
                        subres: false,
                        submits: 0,
                        registered: HashSet::new(),
                        stale_jobs: HashSet::new(),
                        live_jobs: HashSet::new(),
                    }),
                });
                conns.push(conn.clone());
                drop(conns);
                let s = s.clone();
                std::thread::spawn(move || serve_pool_conn(s, conn, stream));
            }
        });
        PoolStandIn { addr, shared }
    }

    /// Sets how the next SUBMIT is handled.
    pub fn plan(&self, plan: Plan) {
        self.shared.plans.lock().unwrap().push_back(plan);
    }

    /// The messages the stand-in ignored as sserver would, with the reason.
    pub fn dropped(&self) -> Vec<String> {
        self.shared.dropped.lock().unwrap().clone()
    }

    /// Unused plans: a scenario that planned a submit the agent never sent.
    pub fn plans_left(&self) -> usize {
        self.shared.plans.lock().unwrap().len()
    }

    /// The job that newly authorized connections get; sent to the live ones too.
    pub fn notify(&self, job: Job) {
        self.notify_after(&[], job);
    }

    /// Like [`notify`](Self::notify), with `before` sent in the same write.
    pub fn notify_after(&self, before: &[&str], job: Job) {
        let line = job.line(false);
        *self.shared.job.lock().unwrap() = Some(job);
        let mut lines = before.to_vec();
        lines.push(&line);
        self.send_lines_all(&lines);
    }

    /// Sets the latest job without sending it (before any connection exists).
    pub fn set_job(&self, job: Job) {
        *self.shared.job.lock().unwrap() = Some(job);
    }

    /// Sends JSON lines (exactly as given) in one write on every live connection.
    pub fn send_lines_all(&self, lines: &[&str]) {
        for conn in self.shared.conns.lock().unwrap().iter() {
            let mut st = conn.state.lock().unwrap();
            for line in lines {
                send_line(&self.shared.rec, conn.peer, &mut st, line);
            }
            flush(&mut st);
        }
    }

    /// Sends an ex-message frame on pool connection `n`.
    pub fn send_ex(&self, n: usize, frame: &[u8]) {
        let conn = self.shared.conns.lock().unwrap()[n].clone();
        let mut st = conn.state.lock().unwrap();
        send_ex(&self.shared.rec, conn.peer, &mut st, frame);
        flush(&mut st);
    }

    /// Answers a held share on pool connection `n`.
    pub fn answer(&self, n: usize, index: u16, status: u32) {
        self.send_ex(n, &submit_response(index, status));
    }
}

fn send_line(rec: &Recorder, peer: Peer, st: &mut ConnState, line: &str) {
    let v: Value = serde_json::from_str(line).expect("the stand-in writes JSON");
    if v["method"] == "mining.notify" {
        if let Some(id) = v["params"][0].as_str().and_then(|id| id.parse::<u8>().ok()) {
            if v["params"][8] == Value::Bool(true) {
                let live: Vec<u8> = st.live_jobs.drain().collect();
                st.stale_jobs.extend(live);
            }
            st.stale_jobs.remove(&id);
            st.live_jobs.insert(id);
        }
    }
    rec.push(peer, true, Payload::Json(v));
    st.unsent.extend_from_slice(line.as_bytes());
    if !line.ends_with('\n') {
        st.unsent.push(b'\n');
    }
}

fn send_ex(rec: &Recorder, peer: Peer, st: &mut ConnState, frame: &[u8]) {
    rec.push(peer, true, Payload::Ex(frame.to_vec()));
    st.unsent.extend_from_slice(frame);
}

fn flush(st: &mut ConnState) {
    if !st.unsent.is_empty() {
        let _ = st.out.write_all(&st.unsent);
        st.unsent.clear();
    }
}

/// Reads one message: an ex-message when the next byte is 0x7F, else a JSON line.
/// `None` at a clean end of stream.
fn read_message(r: &mut impl BufRead) -> Option<Payload> {
    let first = match r.fill_buf() {
        Ok([]) | Err(_) => return None,
        Ok(buf) => buf[0],
    };
    if first == 0x7f {
        let mut frame = vec![0u8; 4];
        if r.read_exact(&mut frame).is_err() {
            return Some(Payload::Garbage(frame));
        }
        let len = u16::from_le_bytes([frame[2], frame[3]]) as usize;
        if len < 4 {
            return Some(Payload::Garbage(frame));
        }
        frame.resize(len, 0);
        if r.read_exact(&mut frame[4..]).is_err() {
            return Some(Payload::Garbage(frame));
        }
        return Some(Payload::Ex(frame));
    }
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).is_err() || !line.ends_with(b"\n") {
        return Some(Payload::Garbage(line));
    }
    Some(parse_json_line(line))
}

fn parse_json_line(line: Vec<u8>) -> Payload {
    match serde_json::from_slice::<Value>(&line) {
        Ok(v) if v.is_object() => Payload::Json(v),
        _ => Payload::Garbage(line),
    }
}

fn serve_pool_conn(shared: Arc<PoolShared>, conn: Arc<PoolConn>, stream: TcpStream) {
    let mut r = BufReader::new(stream);
    loop {
        let msg = read_message(&mut r);
        let mut st = conn.state.lock().unwrap();
        let Some(msg) = msg else {
            shared.rec.push(conn.peer, false, Payload::Eof);
            return;
        };
        shared.rec.push(conn.peer, false, msg.clone());
        if matches!(msg, Payload::Garbage(_)) {
            shared.rec.push(conn.peer, false, Payload::Eof);
            return;
        }
        react(&shared, conn.peer, &mut st, &msg);
        flush(&mut st);
    }
}

fn react(shared: &PoolShared, peer: Peer, st: &mut ConnState, msg: &Payload) {
    let rec = &shared.rec;
    match msg {
        Payload::Json(v) => {
            let id = v.get("id").cloned().unwrap_or(Value::Null).to_string();
            let params = v.get("params").cloned().unwrap_or(Value::Null);
            match msg.method() {
                Some("agent.get_capabilities") => {
                    send_line(
                        rec,
                        peer,
                        st,
                        &format!(
                            r#"{{"id":{id},"result":{{"capabilities":["verrol","subres"]}}}}"#
                        ),
                    );
                    let asks_subres = params[0]
                        .as_array()
                        .is_some_and(|caps| caps.iter().any(|c| c == "subres"));
                    if st.authorized && asks_subres {
                        st.subres = true;
                    }
                }
                Some("mining.configure") => {
                    let requested = params[1]["version-rolling.mask"]
                        .as_str()
                        .and_then(|m| u32::from_str_radix(m, 16).ok())
                        .unwrap_or(0);
                    let mask = requested & POOL_VERSION_MASK;
                    send_line(
                        rec,
                        peer,
                        st,
                        &format!(
                            r#"{{"id":{id},"result":{{"version-rolling":true,"version-rolling.mask":"{mask:08x}"}},"error":null}}"#
                        ),
                    );
                    if requested != 0 {
                        send_line(
                            rec,
                            peer,
                            st,
                            &format!(
                                r#"{{"id":null,"method":"mining.set_version_mask","params":["{mask:08x}"]}}"#
                            ),
                        );
                    }
                }
                Some("mining.subscribe") => send_line(
                    rec,
                    peer,
                    st,
                    &format!(
                        r#"{{"id":{id},"result":[[["mining.set_difficulty","{e}"],["mining.notify","{e}"]],"{e}",8],"error":null}}"#,
                        e = POOL_EXTRANONCE1
                    ),
                ),
                Some("mining.authorize") => {
                    send_line(
                        rec,
                        peer,
                        st,
                        &format!(r#"{{"id":{id},"result":true,"error":null}}"#),
                    );
                    st.authorized = true;
                    send_line(
                        rec,
                        peer,
                        st,
                        &format!(
                            r#"{{"id":null,"method":"mining.set_difficulty","params":[{POOL_DIFFICULTY}]}}"#
                        ),
                    );
                    if let Some(job) = shared.job.lock().unwrap().as_ref() {
                        send_line(rec, peer, st, &job.line(true));
                    }
                }
                _ => {}
            }
        }
        Payload::Ex(frame) => {
            let drop = |why: String| {
                let what = format!("{} {}: {why}", peer.name(), hex(frame));
                shared.dropped.lock().unwrap().push(what);
            };
            if !st.authorized {
                return drop("ex-message before authorize".into());
            }
            let sid = || u16::from_le_bytes([frame[4], frame[5]]);
            // The limits of StratumMessageDispatcher.cc.
            match (frame[1], frame.len()) {
                (0x01, 8..=100) if sid() <= 0xfffe => {
                    if !st.registered.insert(sid()) {
                        drop("REGISTER_WORKER for a registered session".into());
                    }
                }
                (0x01, len) => drop(format!("REGISTER_WORKER of {len} bytes or session 0xffff")),
                (0x04, 6) => {
                    st.registered.remove(&sid());
                }
                (0x02, 15) | (0x03 | 0x12, 19) | (0x13, 23) => {
                    let session = u16::from_le_bytes([frame[5], frame[6]]);
                    if !st.registered.contains(&session) {
                        return drop("SUBMIT for an unregistered session".into());
                    }
                    let index = st.submits;
                    st.submits = st.submits.wrapping_add(1);
                    if st.stale_jobs.contains(&frame[4]) {
                        // A job from before the latest new block: sserver marked it
                        // stale (StratumServerBitcoin.cc), whatever the scenario plans.
                        if st.subres {
                            let stale = submit_response(index, status::STALE_SHARE);
                            send_ex(rec, peer, st, &stale);
                        }
                        return;
                    }
                    let plan = shared.plans.lock().unwrap().pop_front();
                    if let Some(Plan::Answer(status)) = plan {
                        if st.subres {
                            send_ex(rec, peer, st, &submit_response(index, status));
                        }
                    }
                }
                (cmd, len) => drop(format!("command {cmd:#04x} of {len} bytes")),
            }
        }
        Payload::Eof | Payload::Garbage(_) => {}
    }
}

pub fn submit_response(index: u16, status: u32) -> Vec<u8> {
    let mut f = vec![0x7f, 0x10, 10, 0];
    f.extend_from_slice(&index.to_le_bytes());
    f.extend_from_slice(&status.to_le_bytes());
    f
}

pub fn mining_set_diff(diff_exp: u8, sessions: &[u16]) -> Vec<u8> {
    let len = 7 + 2 * sessions.len();
    let mut f = vec![0x7f, 0x05];
    f.extend_from_slice(&(len as u16).to_le_bytes());
    f.push(diff_exp);
    f.extend_from_slice(&(sessions.len() as u16).to_le_bytes());
    for s in sessions {
        f.extend_from_slice(&s.to_le_bytes());
    }
    f
}

// ---------------------------------------------------------------------------------
// Scripted miners

pub struct ScriptedMiner {
    pub peer: Peer,
    out: TcpStream,
    rec: Recorder,
    next_id: u64,
}

impl ScriptedMiner {
    /// Connects (retrying while the port is not yet open, up to [`T`]).
    pub fn connect(addr: SocketAddr, peer: Peer, rec: Recorder) -> ScriptedMiner {
        let end = Instant::now() + T;
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                // The agent has said it listens; only its bind can still be under way.
                Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!(
                    "{}: cannot connect to the agent at {addr}: {e}",
                    peer.name()
                ),
            }
        };
        let _ = stream.set_nodelay(true);
        let reader = stream.try_clone().unwrap();
        let r = rec.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => {
                        r.push(peer, false, Payload::Eof);
                        return;
                    }
                    Ok(_) if !line.ends_with(b"\n") => {
                        r.push(peer, false, Payload::Garbage(line));
                        r.push(peer, false, Payload::Eof);
                        return;
                    }
                    Ok(_) => r.push(peer, false, parse_json_line(line)),
                }
            }
        });
        ScriptedMiner {
            peer,
            out: stream,
            rec,
            next_id: 1,
        }
    }

    /// Sends a request; returns its id (1, 2, ... per miner).
    pub fn request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let v = json!({"id": id, "method": method, "params": params});
        self.rec.push(self.peer, true, Payload::Json(v.clone()));
        let mut line = serde_json::to_vec(&v).unwrap();
        line.push(b'\n');
        let _ = self.out.write_all(&line);
        id
    }

    /// Closes the miner's sending side (the agent sees end of stream).
    pub fn close(&mut self) {
        self.rec.push(self.peer, true, Payload::Eof);
        let _ = self.out.shutdown(Shutdown::Write);
    }
}

// ---------------------------------------------------------------------------------
// Rendering

struct Names {
    /// Miner session id -> `{minerN}`.
    sids: HashMap<u16, String>,
    /// Miner extranonce1 text -> `{minerN}`.
    extranonce1: HashMap<String, String>,
    /// (pool connection, id as JSON text) -> `<method#k>`.
    request_ids: HashMap<(Peer, String), String>,
    /// Each miner's subscribe request id.
    subscribe_ids: HashMap<Peer, Value>,
}

fn names(log: &Log) -> Names {
    let mut n = Names {
        sids: HashMap::new(),
        extranonce1: HashMap::new(),
        request_ids: HashMap::new(),
        subscribe_ids: HashMap::new(),
    };
    let mut per_method: HashMap<(Peer, String), usize> = HashMap::new();
    for e in &log.entries {
        let Payload::Json(v) = &e.payload else {
            continue;
        };
        match (e.peer, e.to_agent) {
            (Peer::Miner(_), true) if e.payload.method() == Some("mining.subscribe") => {
                n.subscribe_ids.insert(e.peer, v["id"].clone());
            }
            (Peer::Miner(_), false)
                if e.payload.method().is_none() && n.subscribe_ids.get(&e.peer) == v.get("id") =>
            {
                if let Some(ex1) = v["result"][1].as_str() {
                    let name = format!("{{{}}}", e.peer.name());
                    if let Some(sid) = u32::from_str_radix(ex1, 16)
                        .ok()
                        .and_then(|s| u16::try_from(s).ok())
                    {
                        n.sids.entry(sid).or_insert_with(|| name.clone());
                    }
                    n.extranonce1.entry(ex1.to_string()).or_insert(name);
                }
            }
            (Peer::Pool(_), false) => {
                let (Some(method), Some(id)) = (e.payload.method(), v.get("id")) else {
                    continue;
                };
                if id.is_null() {
                    continue;
                }
                n.request_ids
                    .entry((e.peer, id.to_string()))
                    .or_insert_with(|| {
                        let k = per_method.entry((e.peer, method.to_string())).or_insert(0);
                        *k += 1;
                        format!("<{method}#{k}>")
                    });
            }
            _ => {}
        }
    }
    n
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn u16le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn u32le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// An ex-message, decoded field by field when its layout is exactly right.
fn render_ex(frame: &[u8], names: &Names) -> String {
    let session = |sid: u16| -> Value {
        Value::String(
            names
                .sids
                .get(&sid)
                .cloned()
                .unwrap_or_else(|| format!("{sid:#06x}")),
        )
    };
    let decoded = (|| -> Option<(&'static str, Value)> {
        if frame.len() < 4 || frame[0] != 0x7f || u16le(&frame[2..]) as usize != frame.len() {
            return None;
        }
        let body = &frame[4..];
        match frame[1] {
            0x01 => {
                let (sid, strings) = (u16le(body.get(..2)?), &body[2..]);
                let first = strings.iter().position(|&b| b == 0)?;
                let rest = &strings[first + 1..];
                let second = rest.iter().position(|&b| b == 0)?;
                if second + 1 != rest.len() {
                    return None;
                }
                let client_agent = std::str::from_utf8(&strings[..first]).ok()?;
                let worker_name = std::str::from_utf8(&rest[..second]).ok()?;
                Some((
                    "REGISTER_WORKER",
                    json!({"session": session(sid), "client_agent": client_agent, "worker_name": worker_name}),
                ))
            }
            cmd @ (0x02 | 0x03 | 0x12 | 0x13) => {
                let (name, len) = match cmd {
                    0x02 => ("SUBMIT_SHARE", 11),
                    0x03 => ("SUBMIT_SHARE_WITH_TIME", 15),
                    0x12 => ("SUBMIT_SHARE_WITH_VER", 15),
                    _ => ("SUBMIT_SHARE_WITH_TIME_VER", 19),
                };
                if body.len() != len {
                    return None;
                }
                let mut f = json!({
                    "job_id": body[0],
                    "session": session(u16le(&body[1..])),
                    "extranonce2": format!("{:08x}", u32le(&body[3..])),
                    "nonce": format!("{:08x}", u32le(&body[7..])),
                });
                let mut at = 11;
                if cmd & 0x01 == 0x01 {
                    f["ntime"] = json!(format!("{:08x}", u32le(&body[at..])));
                    at += 4;
                }
                if cmd & 0x10 == 0x10 {
                    f["version_mask"] = json!(format!("{:08x}", u32le(&body[at..])));
                }
                Some((name, f))
            }
            0x04 if body.len() == 2 => Some((
                "UNREGISTER_WORKER",
                json!({"session": session(u16le(body))}),
            )),
            0x05 if body.len() >= 3 => {
                let count = u16le(&body[1..]) as usize;
                if body.len() != 3 + 2 * count {
                    return None;
                }
                let sessions: Vec<Value> = body[3..].chunks(2).map(|c| session(u16le(c))).collect();
                Some((
                    "MINING_SET_DIFF",
                    json!({"diff_exp": body[0], "sessions": sessions}),
                ))
            }
            0x10 if body.len() == 6 => Some((
                "SUBMIT_RESPONSE",
                json!({"index": u16le(body), "status": u32le(&body[2..])}),
            )),
            _ => None,
        }
    })();
    match decoded {
        Some((name, fields)) => format!("ex {name} {fields}"),
        None => format!("ex RAW {}", json!({ "hex": hex(frame) })),
    }
}

fn render_json(mut v: Value, peer: Peer, to_agent: bool, names: &Names) -> String {
    match peer {
        Peer::Pool(_) => {
            if let Some(id) = v.get("id").filter(|id| !id.is_null()) {
                if let Some(p) = names.request_ids.get(&(peer, id.to_string())) {
                    v["id"] = json!(p);
                }
            }
            if !to_agent && v["method"] == "mining.subscribe" {
                if let Some(ua) = v["params"][0].as_str() {
                    if ua.starts_with("btccom-agent/") {
                        v["params"][0] = json!("btccom-agent/<version>");
                    }
                }
            }
        }
        Peer::Miner(_) => {
            if !to_agent
                && v.get("method").is_none()
                && names.subscribe_ids.get(&peer) == v.get("id")
            {
                let blank = |s: &mut Value| {
                    if let Some(n) = s.as_str().and_then(|x| names.extranonce1.get(x)) {
                        *s = json!(n);
                    }
                };
                if let Some(subs) = v["result"][0].as_array_mut() {
                    for sub in subs {
                        if let Some(slot) = sub.get_mut(1) {
                            blank(slot);
                        }
                    }
                }
                if let Some(slot) = v["result"].get_mut(1) {
                    blank(slot);
                }
            }
        }
    }
    format!("json {v}")
}

fn render_entry(e: &Entry, names: &Names) -> String {
    let (from, to) = if e.to_agent {
        (e.peer.name(), "agent".to_string())
    } else {
        ("agent".to_string(), e.peer.name())
    };
    let body = match &e.payload {
        Payload::Json(v) => render_json(v.clone(), e.peer, e.to_agent, names),
        Payload::Ex(f) => render_ex(f, names),
        Payload::Eof => "eof".into(),
        Payload::Garbage(b) => format!("garbage {}", json!(String::from_utf8_lossy(b))),
    };
    format!("{from}>{to} {body}")
}

/// The transcript text: `header` lines as `# ` comments, then every step.
pub fn render(header: &[String], log: &Log) -> String {
    let names = names(log);
    let mut out = String::new();
    for h in header {
        out.push_str(&format!("# {h}\n").replace("# \n", "#\n"));
    }
    for step in 0..=log.titles.len() {
        let entries: Vec<&Entry> = log.entries.iter().filter(|e| e.step == step).collect();
        if step == 0 {
            if entries.is_empty() {
                continue;
            }
            out.push_str("== 0 before the first step\n");
        } else {
            out.push_str(&format!("== {step} {}\n", log.titles[step - 1]));
        }
        let Some(first) = entries.first().map(|e| e.peer) else {
            continue;
        };
        let mut peers: Vec<Peer> = entries.iter().map(|e| e.peer).collect();
        peers.sort();
        peers.dedup();
        peers.retain(|p| *p != first);
        peers.insert(0, first);
        for peer in peers {
            for e in entries.iter().filter(|e| e.peer == peer) {
                out.push_str(&render_entry(e, &names));
                out.push('\n');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// The agent under test

/// An agent process: any binary that takes `-c <config> -l stderr`.
pub struct AgentProcess {
    child: std::process::Child,
    log: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl AgentProcess {
    /// Starts `cmd` on `config`. With `listen_port` 0 the agent must announce
    /// `listening for miners on ADDR` (btcagent does); otherwise the port is the given
    /// one and the harness waits for any log line saying `listening`.
    pub fn start(mut cmd: std::process::Command, config: &Value, tag: &str) -> AgentProcess {
        use std::process::Stdio;
        let dir =
            std::env::temp_dir().join(format!("btcagent-transcript-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("agent_conf.json");
        std::fs::write(&conf, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        cmd.arg("-c").arg(&conf).args(["-l", "stderr"]);
        cmd.current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the agent starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let announced = line
                        .split("listening for miners on ")
                        .nth(1)
                        .and_then(|a| a.trim().parse::<SocketAddr>().ok());
                    let _ = tx.send(announced);
                }
                if std::env::var_os("BTCAGENT_TEST_LOG").is_some() {
                    eprintln!("agent: {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let port = config["agent_listen_port"].as_u64().unwrap_or(0) as u16;
        let addr = match rx.recv_timeout(T) {
            Ok(Some(a)) => a,
            Ok(None) if port != 0 => SocketAddr::from(([127, 0, 0, 1], port)),
            _ => {
                let _ = child.kill();
                panic!(
                    "the agent did not say it listens; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        AgentProcess {
            child,
            log,
            addr,
            dir,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> bool {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + T;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that is free now (for an agent that cannot announce its port).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// ---------------------------------------------------------------------------------
// A scenario run

pub struct Harness {
    pub rec: Recorder,
    pub pool: PoolStandIn,
    pub agent: Option<AgentProcess>,
    miners: Vec<Option<ScriptedMiner>>,
}

impl Harness {
    pub fn new() -> Harness {
        let rec = Recorder::default();
        let pool = PoolStandIn::start(rec.clone());
        Harness {
            rec,
            pool,
            agent: None,
            miners: Vec::new(),
        }
    }

    pub fn step(&self, title: &str) {
        self.rec.begin_step(title);
    }

    /// Waits for `cond`; fails the test with the transcript so far and the agent's log.
    pub fn wait(&self, what: &str, cond: impl Fn(&Log) -> bool) {
        if !self.rec.wait_until(T, cond) {
            let log = self.rec.snapshot();
            panic!(
                "step {} ({}): timed out waiting for {what}\ntranscript so far:\n{}\nignored by the pool stand-in (as by sserver):\n{}\nagent log:\n{}",
                log.step(),
                log.titles.last().map(String::as_str).unwrap_or(""),
                render(&[], &log),
                self.pool.dropped().join("\n"),
                self.agent.as_ref().map(|a| a.log()).unwrap_or_default()
            );
        }
    }

    /// Scripted miner `n` (0-based), connected on first use.
    pub fn miner(&mut self, n: usize) -> &mut ScriptedMiner {
        if self.miners.len() <= n {
            self.miners.resize_with(n + 1, || None);
        }
        if self.miners[n].is_none() {
            let addr = self.agent.as_ref().expect("the agent runs").addr;
            self.miners[n] = Some(ScriptedMiner::connect(
                addr,
                Peer::Miner(n),
                self.rec.clone(),
            ));
        }
        self.miners[n].as_mut().unwrap()
    }

    /// The session id the agent gave miner `n` (its extranonce1).
    pub fn sid(&self, n: usize) -> u16 {
        let log = self.rec.snapshot();
        let peer = Peer::Miner(n);
        let sub = log
            .entries
            .iter()
            .find(|e| {
                e.peer == peer && e.to_agent && e.payload.method() == Some("mining.subscribe")
            })
            .and_then(|e| match &e.payload {
                Payload::Json(v) => v["id"].as_u64(),
                _ => None,
            })
            .expect("the miner subscribed");
        let sid = log
            .sent_to(peer)
            .find_map(|p| match p {
                Payload::Json(v) if p.is_response_to(sub) => v["result"][1]
                    .as_str()
                    .and_then(|s| u32::from_str_radix(s, 16).ok())
                    .and_then(|s| u16::try_from(s).ok()),
                _ => None,
            })
            .expect("the agent gave the miner an extranonce1");
        sid
    }

    pub fn transcript(&self, header: &[String]) -> String {
        render(header, &self.rec.snapshot())
    }
}

// ---------------------------------------------------------------------------------
// Reading transcripts back, and a readable diff

/// One message line of a transcript, parsed back.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// `agent`, `pool`, `pool2`, `miner1`, ...
    pub from: String,
    pub to: String,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Json(Value),
    /// An ex-message by name, with its decoded fields.
    Ex(String, Value),
    Eof,
    /// Anything else (garbage), kept as text.
    Other(String),
}

impl Line {
    pub fn parse(text: &str) -> Line {
        let (dir, rest) = text.split_once(' ').unwrap_or((text, ""));
        let (from, to) = dir.split_once('>').unwrap_or((dir, ""));
        let (kind, body) = rest.split_once(' ').unwrap_or((rest, ""));
        let kind = match kind {
            "json" => serde_json::from_str(body)
                .map(Kind::Json)
                .unwrap_or_else(|_| Kind::Other(rest.into())),
            "ex" => {
                let (name, fields) = body.split_once(' ').unwrap_or((body, "null"));
                serde_json::from_str(fields)
                    .map(|f| Kind::Ex(name.into(), f))
                    .unwrap_or_else(|_| Kind::Other(rest.into()))
            }
            "eof" => Kind::Eof,
            _ => Kind::Other(rest.into()),
        };
        Line {
            from: from.into(),
            to: to.into(),
            kind,
        }
    }

    pub fn text(&self) -> String {
        let body = match &self.kind {
            Kind::Json(v) => format!("json {v}"),
            Kind::Ex(name, f) => format!("ex {name} {f}"),
            Kind::Eof => "eof".into(),
            Kind::Other(s) => s.clone(),
        };
        format!("{}>{} {body}", self.from, self.to)
    }

    pub fn json(&self) -> Option<&Value> {
        match &self.kind {
            Kind::Json(v) => Some(v),
            _ => None,
        }
    }

    pub fn method(&self) -> Option<&str> {
        self.json()?.get("method")?.as_str()
    }

    pub fn is_ex(&self, name: &str) -> bool {
        matches!(&self.kind, Kind::Ex(n, _) if n == name)
    }

    /// The miner end of the line (`miner2`), if it is on a miner connection.
    pub fn miner(&self) -> Option<&str> {
        [&self.from, &self.to]
            .into_iter()
            .find(|p| p.starts_with("miner"))
            .map(String::as_str)
    }

    /// The pool end of the line (`pool`, `pool2`), if it is on a pool connection.
    pub fn pool(&self) -> Option<&str> {
        [&self.from, &self.to]
            .into_iter()
            .find(|p| p.starts_with("pool"))
            .map(String::as_str)
    }
}

pub struct Step {
    pub title: String,
    pub lines: Vec<Line>,
}

/// The steps of a transcript (`#` lines are comments).
pub fn parse_transcript(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(head) = line.strip_prefix("== ") {
            let title = head.split_once(' ').map(|(_, t)| t).unwrap_or("");
            steps.push(Step {
                title: title.into(),
                lines: Vec::new(),
            });
            continue;
        }
        if steps.is_empty() {
            steps.push(Step {
                title: String::new(),
                lines: Vec::new(),
            });
        }
        steps.last_mut().unwrap().lines.push(Line::parse(line));
    }
    steps
}

/// A line diff (longest common subsequence): `  ` both, `- ` expected only, `+ `
/// actual only.
pub fn diff_lines(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out.push_str(&format!("  {}\n", expected[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", expected[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", actual[j]));
            j += 1;
        }
    }
    out
}
