//! One connection to the pool, speaking the agent's side of the BTCAgent protocol.

use super::PoolGroup;
use crate::agent::Agent;
use crate::config::PoolEntry;
use crate::miner::MinerSession;
use crate::protocol::exmessage::{ExError, ExMessage, Share};
use crate::protocol::framing::{Frame, FrameReader};
use crate::protocol::job::{rewrite_notify, Job};
use crate::protocol::stratum::{self, Message};
use crate::upstream::PoolStream;
use async_io::Timer;
use serde_json::Value;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime};

/// Unsent bytes to the pool beyond this mean it stopped reading.
const MAX_POOL_OUT: usize = 1024 * 1024;
/// Shares waiting for a SUBMIT_RESPONSE; far more than a healthy pool leaves pending.
const MAX_PENDING: usize = 16 * 1024;
/// The extranonce2 size the agent protocol needs: 4 bytes session id + 4 bytes miner.
const POOL_EXTRANONCE2_SIZE: u64 = 8;
/// Jobs remembered per connection, to validate submits and pick the form.
const JOB_SLOTS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    Handshaking,
    Up,
    Down,
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Handshaking => "connecting",
            PoolState::Up => "up",
            PoolState::Down => "down",
        }
    }
}

#[derive(Default)]
pub struct PoolStats {
    pub shares_sent: Cell<u32>,
    pub shares_accepted: Cell<u32>,
    pub shares_rejected: Cell<u32>,
    pub jobs: Cell<u32>,
    pub bytes_up: Cell<u64>,
    pub bytes_down: Cell<u64>,
    pub writes: Cell<u32>,
    pub last_job_at: Cell<Option<Instant>>,
}

/// A share waiting for the pool's verdict.
struct Pending {
    index: u16,
    miner: Weak<MinerSession>,
    id: Box<str>,
}

#[derive(Clone, Copy, Default)]
struct JobSlot {
    /// 0 = empty; otherwise the job's place in the order jobs arrived.
    seq: u32,
    ntime: u32,
}

pub struct PoolSession {
    pub id: u32,
    pub entry: PoolEntry,
    /// Sub-account this connection authorized as.
    pub subaccount: String,
    pub route: String,
    pub since: SystemTime,
    group: Weak<PoolGroup>,
    state: Cell<PoolState>,
    extranonce1: RefCell<String>,
    verrol: Cell<bool>,
    subres: Cell<bool>,
    version_mask: Cell<u32>,
    miners: RefCell<HashMap<u16, Rc<MinerSession>>>,
    jobs: RefCell<Vec<JobSlot>>,
    job_seq: Cell<u32>,
    last_job: RefCell<Option<Rc<Job>>>,
    /// The pool's latest `mining.set_difficulty`, as sent, for newly assigned miners.
    difficulty_line: RefCell<Option<Rc<[u8]>>>,
    difficulty: Cell<f64>,
    out: RefCell<Vec<u8>>,
    /// The writer holds bytes taken from `out` that are not yet with the kernel.
    writing: Cell<bool>,
    urgent: Cell<bool>,
    wake: Sender<()>,
    kill: Sender<String>,
    kill_rx: Receiver<String>,
    submit_index: Cell<u16>,
    pending: RefCell<VecDeque<Pending>>,
    /// The writer task; dropped (cancelled) when the connection ends, which also closes
    /// the socket's write half.
    writer: RefCell<Option<smol::Task<()>>>,
    pub stats: PoolStats,
}

impl PoolSession {
    pub fn new(
        id: u32,
        entry: PoolEntry,
        subaccount: String,
        route: String,
        group: &Rc<PoolGroup>,
    ) -> (Rc<PoolSession>, Receiver<()>) {
        let (wake, wake_rx) = smol::channel::bounded(1);
        let (kill, kill_rx) = smol::channel::bounded(1);
        let s = PoolSession {
            id,
            entry,
            subaccount,
            route,
            since: SystemTime::now(),
            group: Rc::downgrade(group),
            state: Cell::new(PoolState::Handshaking),
            extranonce1: RefCell::new(String::new()),
            verrol: Cell::new(false),
            subres: Cell::new(false),
            version_mask: Cell::new(0),
            miners: RefCell::new(HashMap::new()),
            jobs: RefCell::new(vec![JobSlot::default(); JOB_SLOTS]),
            job_seq: Cell::new(0),
            last_job: RefCell::new(None),
            difficulty_line: RefCell::new(None),
            difficulty: Cell::new(0.0),
            out: RefCell::new(Vec::new()),
            writing: Cell::new(false),
            urgent: Cell::new(false),
            wake,
            kill,
            kill_rx,
            submit_index: Cell::new(0),
            pending: RefCell::new(VecDeque::new()),
            writer: RefCell::new(None),
            stats: PoolStats::default(),
        };
        (Rc::new(s), wake_rx)
    }

    /// `pool#3 host:port/sub` for logs.
    pub fn name(&self) -> String {
        format!(
            "pool#{} {}:{}/{}",
            self.id, self.entry.host, self.entry.port, self.subaccount
        )
    }

    pub fn state(&self) -> PoolState {
        self.state.get()
    }

    pub fn is_up(&self) -> bool {
        self.state.get() == PoolState::Up
    }

    pub fn miner_count(&self) -> usize {
        self.miners.borrow().len()
    }

    pub fn any_miner(&self) -> Option<Rc<MinerSession>> {
        self.miners.borrow().values().next().cloned()
    }

    pub fn version_mask(&self) -> u32 {
        if self.verrol.get() {
            self.version_mask.get()
        } else {
            0
        }
    }

    pub fn set_writer(&self, task: smol::Task<()>) {
        *self.writer.borrow_mut() = Some(task);
    }

    pub fn extranonce1(&self) -> String {
        self.extranonce1.borrow().clone()
    }

    /// The pool answers each share (it announced "subres" and the config asks for it).
    pub fn share_responses(&self) -> bool {
        self.subres.get()
    }

    /// Ends the connection; the session's reader returns `reason`.
    pub fn kill(&self, reason: impl Into<String>) {
        let _ = self.kill.try_send(reason.into());
    }

    fn enqueue(&self, bytes: &[u8], urgent: bool) {
        let mut out = self.out.borrow_mut();
        if out.len() + bytes.len() > MAX_POOL_OUT {
            drop(out);
            self.kill(format!("pool is not reading: {MAX_POOL_OUT} bytes unsent"));
            return;
        }
        out.extend_from_slice(bytes);
        if urgent {
            self.urgent.set(true);
        }
        let _ = self.wake.try_send(());
    }

    fn send_ex(&self, msg: &ExMessage, urgent: bool) {
        let mut buf = Vec::with_capacity(32);
        msg.encode(&mut buf);
        self.enqueue(&buf, urgent);
    }

    /// The handshake of the protocol page, up to authorize; the second capabilities
    /// request follows the authorize result (the pool turns on share responses only
    /// when it arrives after authorization).
    pub fn send_handshake(&self, agent: &Agent) {
        let caps = self.capabilities();
        let mut out = Vec::with_capacity(512);
        out.extend(stratum::request("\"caps\"", "agent.get_capabilities", caps));
        out.extend(stratum::request(
            "\"configure\"",
            "mining.configure",
            r#"[["version-rolling"],{"version-rolling.mask":"ffffffff","version-rolling.min-bit-count":0}]"#,
        ));
        let ua = serde_json::to_string(&agent.user_agent()).unwrap_or_default();
        out.extend(stratum::request(
            "\"subscribe\"",
            "mining.subscribe",
            &format!("[{ua}]"),
        ));
        let sub = serde_json::to_string(&self.subaccount).unwrap_or_default();
        out.extend(stratum::request(
            "\"authorize\"",
            "mining.authorize",
            &format!("[{sub},\"\"]"),
        ));
        self.enqueue(&out, true);
    }

    fn capabilities(&self) -> &'static str {
        if self.wants_subres() {
            r#"[["verrol","subres"]]"#
        } else {
            r#"[["verrol"]]"#
        }
    }

    fn wants_subres(&self) -> bool {
        self.group
            .upgrade()
            .map(|g| g.submit_response_from_server())
            .unwrap_or(false)
    }

    /// Writes buffered output; waits a short window first so submits coalesce.
    pub async fn write_loop(
        self: Rc<Self>,
        mut w: WriteHalf<PoolStream>,
        wake: Receiver<()>,
        coalesce: Duration,
    ) {
        let mut spare = Vec::new();
        while wake.recv().await.is_ok() {
            if !self.urgent.get() && !coalesce.is_zero() {
                Timer::after(coalesce).await;
            }
            self.urgent.set(false);
            std::mem::swap(&mut spare, &mut *self.out.borrow_mut());
            if spare.is_empty() {
                continue;
            }
            self.writing.set(true);
            let sent = async {
                w.write_all(&spare).await?;
                w.flush().await
            };
            let sent = sent.await;
            self.writing.set(false);
            if let Err(e) = sent {
                self.kill(format!("write failed: {e}"));
                return;
            }
            self.stats
                .bytes_up
                .set(self.stats.bytes_up.get() + spare.len() as u64);
            self.stats.writes.set(self.stats.writes.get() + 1);
            spare.clear();
            if spare.capacity() > 64 * 1024 {
                spare = Vec::new();
            }
        }
    }

    /// Reads the pool until the connection ends. Returns `Ok` once the handshake is done
    /// if `until_up`, else runs until the end; `Err` carries why the connection ended.
    pub async fn read_loop(
        self: &Rc<Self>,
        agent: &Rc<Agent>,
        r: &mut ReadHalf<PoolStream>,
        frames: &mut FrameReader,
        until_up: Option<Instant>,
    ) -> Result<(), String> {
        let mut buf = vec![0u8; 16 * 1024];
        let read_timeout = agent.config().advanced.pool_connection_read_timeout;
        loop {
            while let Some(frame) = frames
                .next_frame()
                .map_err(|e| format!("pool sent garbage: {e}"))?
            {
                self.handle_frame(agent, frame)?;
            }
            if until_up.is_some() && self.is_up() {
                return Ok(());
            }
            let deadline = until_up.unwrap_or_else(|| Instant::now() + read_timeout);
            let read = async {
                r.read(&mut buf)
                    .await
                    .map_err(|e| format!("read failed: {e}"))
            };
            let timer = async {
                Timer::at(deadline).await;
                Err(match until_up {
                    Some(_) => "handshake timed out".to_string(),
                    None => format!("no data for {} s", read_timeout.as_secs()),
                })
            };
            let killed = async {
                Err(self
                    .kill_rx
                    .recv()
                    .await
                    .unwrap_or_else(|_| "closed".into()))
            };
            let n = smol::future::or(killed, smol::future::or(read, timer)).await?;
            if n == 0 {
                return Err("closed by the pool".into());
            }
            self.stats
                .bytes_down
                .set(self.stats.bytes_down.get() + n as u64);
            frames.extend(&buf[..n]);
        }
    }

    fn handle_frame(self: &Rc<Self>, agent: &Rc<Agent>, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Ex(bytes) => match ExMessage::decode(bytes) {
                Ok(ExMessage::SubmitResponse { index, status }) => {
                    self.on_submit_response(agent, index, status)
                }
                Ok(ExMessage::MiningSetDiff {
                    diff_exp,
                    session_ids,
                }) => self.on_set_diff(agent, diff_exp, &session_ids),
                Ok(other) => log::debug!("{}: ignoring {other:?} from the pool", self.name()),
                // A newer pool's command: skip it. A known one of the wrong size is a
                // broken or hostile pool: drop the connection (miners move to a sibling).
                Err(e @ ExError::UnknownCmd(_)) => {
                    log::debug!("{}: skipping an ex-message: {e}", self.name())
                }
                Err(e) => return Err(format!("pool sent a bad ex-message: {e}")),
            },
            Frame::Line(line) => {
                let msg = Message::parse(line).map_err(|e| format!("pool sent garbage: {e}"))?;
                match msg.method() {
                    Some(method) => self.on_notification(agent, method, &msg)?,
                    None => self.on_response(agent, &msg)?,
                }
            }
        }
        Ok(())
    }

    fn on_response(self: &Rc<Self>, agent: &Rc<Agent>, msg: &Message) -> Result<(), String> {
        let id = msg.id_text();
        let result: Value = msg
            .result
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or(Value::Null);
        match id {
            "\"caps\"" | "\"caps_again\"" | "\"conn_test\"" => {
                let caps: Vec<&str> = result
                    .get("capabilities")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if id == "\"caps\"" {
                    self.verrol.set(caps.contains(&"verrol"));
                }
                if id == "\"caps_again\"" {
                    self.subres
                        .set(self.wants_subres() && caps.contains(&"subres"));
                    if self.state.get() == PoolState::Handshaking {
                        self.state.set(PoolState::Up);
                    }
                }
            }
            "\"configure\"" => {
                if let Some(mask) = result
                    .get("version-rolling.mask")
                    .and_then(stratum::parse_hex_u32)
                {
                    self.version_mask.set(mask);
                }
            }
            "\"subscribe\"" => {
                let ex1 = result.get(1).and_then(Value::as_str).unwrap_or("");
                let size = result.get(2).and_then(Value::as_u64);
                if msg.has_error() || ex1.is_empty() || !ex1.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(format!("pool refused mining.subscribe: {}", line_of(msg)));
                }
                if size != Some(POOL_EXTRANONCE2_SIZE) {
                    return Err(format!(
                        "pool gives an extranonce2 of {} bytes; the agent protocol needs {POOL_EXTRANONCE2_SIZE}: is this a btcpool agent port?",
                        size.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
                    ));
                }
                *self.extranonce1.borrow_mut() = ex1.to_ascii_lowercase();
            }
            "\"authorize\"" => {
                if !msg.result_is_true() {
                    return Err(format!(
                        "pool refused sub-account {:?}: {}",
                        self.subaccount,
                        line_of(msg)
                    ));
                }
                let caps = self.capabilities();
                self.enqueue(
                    &stratum::request("\"caps_again\"", "agent.get_capabilities", caps),
                    true,
                );
            }
            other => log::debug!("{}: response to unknown id {other}", self.name()),
        }
        let _ = agent;
        Ok(())
    }

    fn on_notification(
        self: &Rc<Self>,
        agent: &Rc<Agent>,
        method: &str,
        msg: &Message,
    ) -> Result<(), String> {
        match method {
            "mining.notify" => {
                let params = msg.params.map(|p| p.get()).unwrap_or("[]");
                let job = match rewrite_notify(params, &self.extranonce1.borrow(), self.id) {
                    Ok(job) => Rc::new(job),
                    Err(e) => {
                        log::warn!("{}: job skipped: {e}", self.name());
                        return Ok(());
                    }
                };
                let seq = self.job_seq.get() + 1;
                self.job_seq.set(seq);
                self.jobs.borrow_mut()[job.id as usize] = JobSlot {
                    seq,
                    ntime: job.ntime,
                };
                *self.last_job.borrow_mut() = Some(job.clone());
                self.stats.jobs.set(self.stats.jobs.get() + 1);
                self.stats.last_job_at.set(Some(Instant::now()));
                if let Some(group) = self.group.upgrade() {
                    group.note_job(&job);
                }
                for miner in self.miners.borrow().values() {
                    miner.send_shared(agent, &job.notify);
                }
            }
            "mining.set_difficulty" => {
                let params = msg.params.map(|p| p.get()).unwrap_or("[]");
                let value = serde_json::from_str::<Vec<Value>>(params)
                    .ok()
                    .and_then(|v| v.first().and_then(Value::as_f64));
                let Some(value) = value.filter(|d| *d > 0.0) else {
                    log::warn!("{}: ignoring mining.set_difficulty {params}", self.name());
                    return Ok(());
                };
                // Forwarded as the pool wrote it: fractional values stay exact.
                let line: Rc<[u8]> = stratum::notification("mining.set_difficulty", params).into();
                self.difficulty.set(value);
                *self.difficulty_line.borrow_mut() = Some(line.clone());
                for miner in self.miners.borrow().values() {
                    miner.stats.difficulty.set(value);
                    miner.send_shared(agent, &line);
                }
            }
            "mining.set_version_mask" => {
                let mask = msg.params_list().first().and_then(stratum::parse_hex_u32);
                if let Some(mask) = mask {
                    let changed = mask != self.version_mask.get();
                    self.version_mask.set(mask);
                    if changed && self.verrol.get() {
                        for miner in self.miners.borrow().values() {
                            if miner.version_rolling.get() {
                                send_version_mask(agent, miner, mask);
                            }
                        }
                    }
                }
            }
            other => log::debug!("{}: ignoring pool notification {other}", self.name()),
        }
        Ok(())
    }

    fn on_set_diff(&self, agent: &Rc<Agent>, exp: u8, sessions: &[u16]) {
        let line: Rc<[u8]> = stratum::set_difficulty_pow2(exp).into();
        let value = 2f64.powi(exp as i32);
        let miners = self.miners.borrow();
        for sid in sessions {
            if let Some(miner) = miners.get(sid) {
                miner.stats.difficulty.set(value);
                miner.send_shared(agent, &line);
            }
        }
    }

    fn on_submit_response(&self, agent: &Rc<Agent>, index: u16, status: u32) {
        let mut pending = self.pending.borrow_mut();
        while let Some(front) = pending.front() {
            let behind = index.wrapping_sub(front.index);
            if behind >= 0x8000 {
                // A response for a share not waiting (answered locally when the
                // pending list was full): nothing to do.
                return;
            }
            let p = pending.pop_front().expect("front exists");
            let Some(miner) = p.miner.upgrade() else {
                continue;
            };
            if behind == 0 {
                self.answer(agent, &miner, &p.id, status);
                return;
            }
            // The pool skipped this one; say so rather than leave the miner waiting.
            miner.reject(
                agent,
                &p.id,
                stratum::code::INTERNAL_ERROR,
                "No response from pool",
            );
        }
    }

    fn answer(&self, agent: &Rc<Agent>, miner: &Rc<MinerSession>, id: &str, status: u32) {
        if stratum::status_is_accepted(status) {
            self.stats
                .shares_accepted
                .set(self.stats.shares_accepted.get() + 1);
            miner.count_accepted();
            miner.send(agent, &stratum::result_line(id, "true"));
        } else {
            self.stats
                .shares_rejected
                .set(self.stats.shares_rejected.get() + 1);
            let code = i32::try_from(status).unwrap_or(stratum::code::OTHER);
            miner.reject(agent, id, code, stratum::status_text(status));
        }
    }

    /// The ntime of job `job_id` if this connection has received it.
    pub fn job_ntime(&self, job_id: u8) -> Option<u32> {
        let slot = self.jobs.borrow()[job_id as usize];
        (slot.seq != 0).then_some(slot.ntime)
    }

    /// Forwards one share; answers the miner now or when the pool's verdict arrives.
    pub fn submit(&self, agent: &Rc<Agent>, miner: &Rc<MinerSession>, share: Share, id: &str) {
        self.send_ex(&ExMessage::SubmitShare(share), false);
        self.stats.shares_sent.set(self.stats.shares_sent.get() + 1);
        if self.subres.get() {
            let index = self.submit_index.get();
            self.submit_index.set(index.wrapping_add(1));
            let mut pending = self.pending.borrow_mut();
            if pending.len() < MAX_PENDING {
                pending.push_back(Pending {
                    index,
                    miner: Rc::downgrade(miner),
                    id: id.into(),
                });
                return;
            }
        }
        self.stats
            .shares_accepted
            .set(self.stats.shares_accepted.get() + 1);
        miner.count_accepted();
        miner.send(agent, &stratum::result_line(id, "true"));
    }

    /// Takes `miner` onto this connection: registers it, then sends what a new miner
    /// needs to start hashing (difficulty, version mask, the last job as clean).
    pub fn adopt(self: &Rc<Self>, agent: &Rc<Agent>, miner: &Rc<MinerSession>) {
        let worker = miner.worker.borrow().clone();
        let client_agent = miner.user_agent.borrow().clone();
        self.send_ex(
            &ExMessage::RegisterWorker {
                session_id: miner.sid,
                client_agent: client_agent.into(),
                worker_name: worker.to_string(),
            },
            false,
        );
        self.miners.borrow_mut().insert(miner.sid, miner.clone());
        *miner.pool.borrow_mut() = Some(self.clone());
        if let Some(line) = self.difficulty_line.borrow().as_ref() {
            miner.stats.difficulty.set(self.difficulty.get());
            miner.send_shared(agent, line);
        }
        if miner.version_rolling.get() {
            send_version_mask(agent, miner, self.version_mask());
        }
        if let Some(job) = self.last_job.borrow().as_ref() {
            miner.send_shared(agent, &job.notify_clean);
        }
    }

    /// Takes `miner` off this connection, telling the pool when the connection is up.
    pub fn release(&self, miner: &MinerSession) {
        if self.miners.borrow_mut().remove(&miner.sid).is_some() && self.is_up() {
            self.send_ex(
                &ExMessage::UnregisterWorker {
                    session_id: miner.sid,
                },
                false,
            );
        }
    }

    /// Marks the connection down and hands back its miners; shares still waiting for
    /// a verdict are answered with an error, since none will come.
    pub fn shut(&self, agent: &Rc<Agent>) -> Vec<Rc<MinerSession>> {
        self.state.set(PoolState::Down);
        self.writer.borrow_mut().take();
        for p in self.pending.borrow_mut().drain(..) {
            if let Some(miner) = p.miner.upgrade() {
                miner.reject(
                    agent,
                    &p.id,
                    stratum::code::INTERNAL_ERROR,
                    "Pool connection lost",
                );
            }
        }
        let miners: Vec<_> = self.miners.borrow_mut().drain().map(|(_, m)| m).collect();
        for m in &miners {
            *m.pool.borrow_mut() = None;
        }
        miners
    }

    /// Unregisters every miner (on shutdown) and returns once the pool has been sent
    /// everything or `within` has passed.
    pub async fn farewell(&self, within: Duration) {
        // Taken out of the map so that the miners' own departure sends nothing more.
        let sids: Vec<u16> = self
            .miners
            .borrow_mut()
            .drain()
            .map(|(sid, _)| sid)
            .collect();
        for sid in sids {
            self.send_ex(&ExMessage::UnregisterWorker { session_id: sid }, true);
        }
        self.drain(within).await;
    }

    /// Waits until every buffered byte (the last shares, unregistrations) is written.
    pub async fn drain(&self, within: Duration) {
        self.urgent.set(true);
        let _ = self.wake.try_send(());
        let end = Instant::now() + within;
        while (!self.out.borrow().is_empty() || self.writing.get()) && Instant::now() < end {
            Timer::after(Duration::from_millis(5)).await;
        }
    }

    /// Closes the connection once what is buffered has been written: the last miner's
    /// shares and its unregistration must not be lost with the connection.
    pub async fn retire(self: Rc<Self>, why: &'static str) {
        self.drain(Duration::from_secs(2)).await;
        self.kill(why);
    }
}

fn send_version_mask(agent: &Rc<Agent>, miner: &Rc<MinerSession>, pool_mask: u32) {
    let mask = pool_mask & miner.requested_mask.get();
    miner.send(
        agent,
        &stratum::notification(
            "mining.set_version_mask",
            &format!("[\"{}\"]", stratum::hex8(mask)),
        ),
    );
}

fn line_of(msg: &Message) -> String {
    let err = msg.error.map(|e| e.get()).unwrap_or("null");
    let res = msg.result.map(|r| r.get()).unwrap_or("null");
    format!("result {res}, error {err}")
}
