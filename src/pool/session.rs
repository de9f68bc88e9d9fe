//! One connection to the pool, speaking the agent's side of the BTCAgent protocol, or
//! plain Stratum V1 to any other pool ([`StratumConnection`] holds that protocol's
//! state; this file carries out what it decides). Both give miners the same extranonce
//! layout (but Stratum pools below 8 bytes, docs/stratum-upstream.md §3), jobs named
//! `"<connection>-<n>"` and one serialized notify per job, so the miner side and the
//! group never ask which protocol a connection speaks.

use super::jobs::JobBook;
use super::miner_list::MinerList;
use super::pending::{PendingShares, VERDICT_TIMEOUT};
use super::PoolGroup;
use crate::agent::Agent;
use crate::config::PoolEntry;
use crate::miner::MinerSession;
use crate::protocol::exmessage::{ExError, ExMessage};
use crate::protocol::framing::{Frame, FrameReader};
use crate::protocol::job::{rewrite_notify, Job};
use crate::protocol::stratum::{self, Message};
use crate::protocol::stratum_upstream::connection::{
    self as stratum_upstream, Event, Judgement, MinerShare, StratumConnection, SUBMIT_ID_BASE,
};
use crate::protocol::stratum_upstream::extranonce::MinerLayout;
use crate::protocol::stratum_upstream::messages::{reconnect_within_site, Reconnect};
use crate::protocol::worker;
use crate::upstream::PoolStream;
use async_io::Timer;
use serde_json::Value;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Unsent bytes to the pool beyond this mean it stopped reading.
const MAX_POOL_OUT: usize = 1024 * 1024;
/// Shares waiting for a SUBMIT_RESPONSE; far more than a healthy pool leaves pending.
const MAX_PENDING: usize = 16 * 1024;
/// The extranonce2 size the agent protocol needs: 4 bytes session id + 4 bytes miner.
const POOL_EXTRANONCE2_SIZE: u64 = 8;
/// How long the handshake waits for the answer to the second capabilities request:
/// sserver before late 2018 never answers `agent.get_capabilities`.
const CAPABILITIES_PATIENCE: Duration = Duration::from_secs(3);
/// A miner moved to a sibling connection stays registered on the one it left this
/// long, so that the shares it found on that connection's jobs still count (sserver
/// re-sends the latest job every 30 s, so by then nothing of the old jobs is mined).
pub const MOVE_GRACE: Duration = Duration::from_secs(30);

/// How often a Stratum connection lowers the difficulty of miners gone quiet.
const VARDIFF_TICK: Duration = Duration::from_secs(15);

/// The pool's silence on capabilities is logged once per run, not per connection.
static SILENT_CAPABILITIES_LOGGED: AtomicBool = AtomicBool::new(false);

/// How a miner leaves a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// It left the agent: unregister it now.
    Now,
    /// It moved to a sibling connection: unregister it after [`MOVE_GRACE`].
    AfterGrace,
}

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
    /// Shares that got no verdict within [`VERDICT_TIMEOUT`] (or were pushed out of a
    /// full pending list): the miner was told so.
    pub shares_unanswered: Cell<u32>,
    /// Verdicts for no waiting share (late, or an index never sent).
    pub verdicts_unmatched: Cell<u32>,
    /// Stratum pools: shares that met the miner's target but not the pool's, answered
    /// by the agent and never sent.
    pub shares_local: Cell<u32>,
}

/// A share waiting for the pool's verdict; its index is its place in [`PendingShares`].
struct Pending {
    miner: Weak<MinerSession>,
    id: Box<str>,
    /// What the share counts for at the miner once accepted.
    difficulty: f64,
}

pub struct PoolSession {
    pub id: u32,
    pub entry: PoolEntry,
    /// Sub-account this connection authorized as.
    pub subaccount: String,
    pub route: String,
    pub since: SystemTime,
    /// `Some` on a plain Stratum pool: that protocol's state.
    stratum: Option<RefCell<StratumConnection>>,
    /// When the Stratum vardiff next looks for quiet miners.
    vardiff_tick: Cell<Option<Instant>>,
    /// Numbers the Stratum submits that wait for no verdict, so each request has its
    /// own id (those that wait are numbered by their place in `pending`).
    unanswered_submits: Cell<u16>,
    /// The Stratum pool's `client.reconnect` that ended the connection, for its slot.
    reconnect: RefCell<Option<Reconnect>>,
    group: Weak<PoolGroup>,
    state: Cell<PoolState>,
    extranonce1: RefCell<String>,
    verrol: Cell<bool>,
    subres: Cell<bool>,
    version_mask: Cell<u32>,
    miners: RefCell<MinerList>,
    /// Miners moved to a sibling, still registered here until the deadline.
    departing: RefCell<HashMap<u16, Instant>>,
    next_departure: Cell<Option<Instant>>,
    jobs: RefCell<JobBook>,
    last_job: RefCell<Option<Rc<Job>>>,
    /// The pool's first `mining.set_difficulty`, as sent: the pool's default, which is
    /// what a worker registered on this connection starts at. Later ones come from a
    /// connection-level controller that never sees a share and only decays
    /// (DiffController.cc); per-worker difficulty arrives as MINING_SET_DIFF.
    difficulty_line: RefCell<Option<Rc<[u8]>>>,
    difficulty: Cell<f64>,
    /// While the handshake waits for the second capabilities answer.
    capabilities_deadline: Cell<Option<Instant>>,
    out: RefCell<Vec<u8>>,
    /// The writer holds bytes taken from `out` that are not yet with the kernel.
    writing: Cell<bool>,
    urgent: Cell<bool>,
    wake: Sender<()>,
    kill: Sender<String>,
    kill_rx: Receiver<String>,
    /// Tells the reader that a deadline earlier than the one it sleeps to was set.
    rearm: Sender<()>,
    rearm_rx: Receiver<()>,
    pending: RefCell<PendingShares<Pending>>,
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
        stratum: Option<StratumConnection>,
    ) -> (Rc<PoolSession>, Receiver<()>) {
        let (wake, wake_rx) = smol::channel::bounded(1);
        let (kill, kill_rx) = smol::channel::bounded(1);
        let (rearm, rearm_rx) = smol::channel::bounded(1);
        let s = PoolSession {
            id,
            entry,
            subaccount,
            route,
            since: SystemTime::now(),
            vardiff_tick: Cell::new(stratum.as_ref().map(|_| Instant::now() + VARDIFF_TICK)),
            stratum: stratum.map(RefCell::new),
            unanswered_submits: Cell::new(0),
            reconnect: RefCell::new(None),
            group: Rc::downgrade(group),
            state: Cell::new(PoolState::Handshaking),
            extranonce1: RefCell::new(String::new()),
            verrol: Cell::new(false),
            subres: Cell::new(false),
            version_mask: Cell::new(0),
            miners: RefCell::new(MinerList::default()),
            departing: RefCell::new(HashMap::new()),
            next_departure: Cell::new(None),
            jobs: RefCell::new(JobBook::default()),
            last_job: RefCell::new(None),
            difficulty_line: RefCell::new(None),
            difficulty: Cell::new(0.0),
            capabilities_deadline: Cell::new(None),
            out: RefCell::new(Vec::new()),
            writing: Cell::new(false),
            urgent: Cell::new(false),
            wake,
            kill,
            kill_rx,
            rearm,
            rearm_rx,
            pending: RefCell::new(PendingShares::new(MAX_PENDING)),
            writer: RefCell::new(None),
            stats: PoolStats::default(),
        };
        (Rc::new(s), wake_rx)
    }

    /// True on a plain Stratum pool.
    pub fn is_stratum(&self) -> bool {
        self.stratum.is_some()
    }

    /// The pool's difficulty for this connection (0 before it sent one).
    pub fn pool_difficulty(&self) -> f64 {
        match &self.stratum {
            Some(s) => s.borrow().difficulty(),
            None => self.difficulty.get(),
        }
    }

    /// `pool#3 host:port/sub` for logs (`/user` on a Stratum pool).
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

    /// One more miner can join (a 4-5 byte Stratum pool's connection carries 256).
    pub fn has_room(&self) -> bool {
        self.stratum.as_ref().is_none_or(|s| s.borrow().has_room())
    }

    /// True when a miner of `layout` can mine here with its extranonce sizes (on a
    /// 4-5 byte pool its prefix may be taken: see [`Self::keeps`]).
    pub fn fits(&self, layout: MinerLayout) -> bool {
        match &self.stratum {
            Some(s) => layout.fits(&s.borrow().split()),
            None => layout == MinerLayout::Standard,
        }
    }

    /// True when `miner` joins here as it is, needing neither `mining.set_extranonce`
    /// nor a reconnect: its layout fits and, on a 4-5 byte pool, its prefix is free
    /// here (or still its own).
    pub fn keeps(&self, miner: &MinerSession) -> bool {
        let layout = miner.layout();
        self.fits(layout)
            && match (layout.prefix(), &self.stratum) {
                (Some(p), Some(s)) => s.borrow().keeps_prefix(miner.sid, p),
                _ => true,
            }
    }

    /// The prefix to tell a miner subscribing now that most likely joins this
    /// connection, if it is a 4-5 byte pool's with one free.
    pub fn suggest_prefix(&self) -> Option<u8> {
        self.stratum.as_ref()?.borrow_mut().suggest_prefix()
    }

    /// The miners' layout here, prefix aside: connections of one class trade miners
    /// freely.
    pub fn layout_class(&self) -> MinerLayout {
        MinerLayout::for_new_miner(self.layout_extranonce2_size(), 0)
    }

    /// The pool's extranonce2 size as the miners' layout depends on it: `None` on the
    /// agent protocol (always the standard layout).
    pub fn layout_extranonce2_size(&self) -> Option<usize> {
        self.stratum.as_ref().map(|s| s.borrow().extranonce2_size())
    }

    pub fn any_miner(&self) -> Option<Rc<MinerSession>> {
        self.miners.borrow().any()
    }

    pub fn version_mask(&self) -> u32 {
        if let Some(s) = &self.stratum {
            return s.borrow().version_mask();
        }
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
        match &self.stratum {
            Some(s) => s.borrow().extranonce1_hex(),
            None => self.extranonce1.borrow().clone(),
        }
    }

    /// Miners get the pool's verdict on each share (it announced "subres", or is a
    /// Stratum pool, which answers every submit, and the config asks for it).
    pub fn share_responses(&self) -> bool {
        match &self.stratum {
            Some(_) => self.wants_subres(),
            None => self.subres.get(),
        }
    }

    /// The `client.reconnect` the Stratum pool ended the connection with, if it did.
    pub fn take_reconnect(&self) -> Option<Reconnect> {
        self.reconnect.borrow_mut().take()
    }

    /// How long the slot waits before it dials again, when a `client.reconnect`
    /// ended the connection.
    pub fn reconnect_wait(&self) -> Option<Duration> {
        let r = self.reconnect.borrow();
        let r = r.as_ref()?;
        Some(Duration::from_secs(r.wait_seconds.unwrap_or(0).into()))
    }

    /// How long the pool may stay silent: the configured read timeout on the agent
    /// protocol (its server re-sends a job every 30 s); on a Stratum pool, grown
    /// from the pool's own job interval ([`StratumConnection::silence_limit`]).
    fn silence_limit(&self, read_timeout: Duration) -> Duration {
        match &self.stratum {
            Some(s) => s.borrow().silence_limit(read_timeout),
            None => read_timeout,
        }
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
    pub fn send_handshake(&self) {
        if let Some(s) = &self.stratum {
            let out = s.borrow().handshake();
            self.enqueue(&out, true);
            return;
        }
        let caps = self.capabilities();
        let mut out = Vec::with_capacity(512);
        out.extend(stratum::request("\"caps\"", "agent.get_capabilities", caps));
        out.extend(stratum::request(
            "\"configure\"",
            "mining.configure",
            r#"[["version-rolling"],{"version-rolling.mask":"ffffffff","version-rolling.min-bit-count":0}]"#,
        ));
        let ua = serde_json::to_string(worker::AGENT_USER_AGENT).unwrap_or_default();
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
    /// Between reads it keeps the connection's own deadlines: shares waiting too long
    /// for a verdict, miners whose grace period after a move is over, the handshake's
    /// wait for capabilities.
    pub async fn read_loop(
        self: &Rc<Self>,
        agent: &Rc<Agent>,
        r: &mut ReadHalf<PoolStream>,
        frames: &mut FrameReader,
        until_up: Option<Instant>,
    ) -> Result<(), String> {
        let mut buf = vec![0u8; 16 * 1024];
        let read_timeout = agent.config().advanced.pool_connection_read_timeout;
        let mut last_data = Instant::now();
        loop {
            while let Some(frame) = frames
                .next_frame()
                .map_err(|e| format!("pool sent garbage: {e}"))?
            {
                self.handle_frame(agent, frame)?;
            }
            let now = Instant::now();
            self.keep_deadlines(agent, now);
            if until_up.is_some() && self.is_up() {
                return Ok(());
            }
            let silence = self.silence_limit(read_timeout);
            let deadline = until_up.unwrap_or(last_data + silence);
            if now >= deadline {
                return Err(match until_up {
                    Some(_) => "handshake timed out".to_string(),
                    None => format!("no data for {} s", silence.as_secs()),
                });
            }
            let wake_at = self.next_deadline().map_or(deadline, |at| at.min(deadline));
            let read = async {
                r.read(&mut buf)
                    .await
                    .map(Some)
                    .map_err(|e| format!("read failed: {e}"))
            };
            let timer = async {
                Timer::at(wake_at).await;
                Ok(None)
            };
            let rearmed = async {
                let _ = self.rearm_rx.recv().await;
                Ok(None)
            };
            let killed = async {
                Err(self
                    .kill_rx
                    .recv()
                    .await
                    .unwrap_or_else(|_| "closed".into()))
            };
            let read = smol::future::or(read, smol::future::or(timer, rearmed));
            match smol::future::or(killed, read).await? {
                None => continue,
                Some(0) => return Err("closed by the pool".into()),
                Some(n) => {
                    last_data = Instant::now();
                    self.stats
                        .bytes_down
                        .set(self.stats.bytes_down.get() + n as u64);
                    frames.extend(&buf[..n]);
                }
            }
        }
    }

    /// The earliest of the connection's own deadlines.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.pending.borrow().next_deadline(VERDICT_TIMEOUT),
            self.next_departure.get(),
            self.capabilities_deadline.get(),
            self.vardiff_tick.get(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Wakes the reader so it sleeps to an earlier deadline.
    fn rearm(&self) {
        let _ = self.rearm.try_send(());
    }

    fn keep_deadlines(&self, agent: &Rc<Agent>, now: Instant) {
        let expired = self.pending.borrow_mut().expire(now, VERDICT_TIMEOUT);
        for p in expired {
            self.give_up(agent, p, "No response from pool");
        }
        if self.next_departure.get().is_some_and(|at| at <= now) {
            self.unregister_departed(|deadline| deadline <= now);
        }
        if self.vardiff_tick.get().is_some_and(|at| at <= now) {
            self.vardiff_tick.set(Some(now + VARDIFF_TICK));
            if let Some(s) = &self.stratum {
                let changes = s.borrow_mut().tick(now);
                self.set_miner_difficulties(agent, &changes);
                self.suggest_difficulty(now);
            }
        }
        if self.capabilities_deadline.get().is_some_and(|at| at <= now) {
            self.capabilities_deadline.set(None);
            if self.state.get() == PoolState::Handshaking {
                if !SILENT_CAPABILITIES_LOGGED.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "{}: the pool did not answer agent.get_capabilities within {} s (an sserver older than late 2018?): no share responses from it",
                        self.name(),
                        CAPABILITIES_PATIENCE.as_secs()
                    );
                }
                self.subres.set(false);
                self.state.set(PoolState::Up);
            }
        }
    }

    /// Sends UNREGISTER_WORKER for the departing miners whose deadline `is_over`.
    fn unregister_departed(&self, is_over: impl Fn(Instant) -> bool) {
        let mut gone = Vec::new();
        let mut departing = self.departing.borrow_mut();
        departing.retain(|&sid, &mut deadline| {
            let over = is_over(deadline);
            if over {
                gone.push(sid);
            }
            !over
        });
        self.next_departure.set(departing.values().min().copied());
        drop(departing);
        for session_id in gone {
            match &self.stratum {
                Some(s) => s.borrow_mut().remove_miner(session_id),
                None => self.send_ex(&ExMessage::UnregisterWorker { session_id }, false),
            }
        }
    }

    fn handle_frame(self: &Rc<Self>, agent: &Rc<Agent>, frame: Frame) -> Result<(), String> {
        if self.stratum.is_some() {
            return match frame {
                Frame::Line(line) => self.on_stratum_line(agent, line),
                Frame::Ex(_) => {
                    Err("pool sent binary data (a plain Stratum pool never does)".into())
                }
            };
        }
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

    /// One line from a Stratum pool: the protocol state decides, this carries it out.
    fn on_stratum_line(self: &Rc<Self>, agent: &Rc<Agent>, line: &[u8]) -> Result<(), String> {
        let Some(s) = &self.stratum else {
            return Ok(());
        };
        let events = s.borrow_mut().on_line(line, Instant::now())?;
        for event in events {
            match event {
                Event::Up => self.state.set(PoolState::Up),
                Event::Send(bytes) => self.enqueue(&bytes, true),
                Event::Job(job) => self.fan_out(agent, job),
                Event::MinerDifficulty(changes) => self.set_miner_difficulties(agent, &changes),
                Event::VersionMask(mask) => {
                    for miner in self.miners.borrow().iter() {
                        if miner.version_rolling.get() {
                            send_version_mask(agent, miner, mask);
                        }
                    }
                }
                Event::Verdict { index, verdict } => {
                    let counter = if verdict.accepted {
                        &self.stats.shares_accepted
                    } else {
                        &self.stats.shares_rejected
                    };
                    counter.set(counter.get() + 1);
                    if !self.share_responses() {
                        continue; // the miner was answered when the share was sent
                    }
                    let Some(p) = self.pending.borrow_mut().take(index) else {
                        self.stats
                            .verdicts_unmatched
                            .set(self.stats.verdicts_unmatched.get() + 1);
                        continue;
                    };
                    let Some(miner) = p.miner.upgrade() else {
                        continue;
                    };
                    if verdict.accepted {
                        tell_accepted(agent, &miner, &p.id, p.difficulty);
                    } else {
                        let (code, reason) = stratum_upstream::miner_rejection(&verdict);
                        miner.reject(agent, &p.id, code, &reason);
                    }
                }
                Event::Reconnect(r) => {
                    if let Some(host) = r.host.as_deref() {
                        if !reconnect_within_site(&self.entry.host, host) {
                            return Err(format!(
                                "the pool asked to reconnect, not followed ({host} is not within {}'s domain): dialling the pool list",
                                self.entry.host
                            ));
                        }
                    }
                    let to = match (&r.host, r.port) {
                        (None, None) => "the same pool".to_string(),
                        (host, port) => crate::upstream::proxy_url::host_port(
                            host.as_deref().unwrap_or(&self.entry.host),
                            port.unwrap_or(self.entry.port),
                        ),
                    };
                    let wait = r.wait_seconds.unwrap_or(0);
                    *self.reconnect.borrow_mut() = Some(r);
                    return Err(format!(
                        "the pool asked to reconnect (client.reconnect to {to} in {wait} s)"
                    ));
                }
                Event::Notice(text) => log::info!("{}: {text}", self.name()),
            }
        }
        Ok(())
    }

    /// Sends the Stratum pool the difficulty this connection's hashrate wants, when
    /// that is worth it ([`StratumConnection::suggestion`]); never awaited.
    fn suggest_difficulty(&self, now: Instant) {
        let Some(s) = &self.stratum else { return };
        let line = s.borrow_mut().suggestion(now);
        if let Some(line) = line {
            log::info!(
                "{}: {}",
                self.name(),
                String::from_utf8_lossy(&line).trim_end()
            );
            self.enqueue(&line, false);
        }
    }

    /// Sends these miners their new difficulty.
    fn set_miner_difficulties(&self, agent: &Rc<Agent>, changes: &[(u16, f64)]) {
        for &(sid, d) in changes {
            if let Some(miner) = self.miner(agent, sid) {
                miner.stats.difficulty.set(d);
                miner.send(agent, &stratum_upstream::set_difficulty_line(d));
            }
        }
    }

    /// A new job: kept for the miners who join later, and written to every miner.
    fn fan_out(self: &Rc<Self>, agent: &Rc<Agent>, job: Rc<Job>) {
        if job.clean && !self.departing.borrow().is_empty() {
            // Every job a departing miner could still finish here is dead.
            self.unregister_departed(|_| true);
        }
        *self.last_job.borrow_mut() = Some(job.clone());
        self.stats.jobs.set(self.stats.jobs.get() + 1);
        self.stats.last_job_at.set(Some(Instant::now()));
        if let Some(group) = self.group.upgrade() {
            group.note_job(&job);
        }
        for miner in self.miners.borrow_mut().for_fan_out() {
            miner.send_shared(agent, &job.notify);
        }
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
                    if self.state.get() == PoolState::Handshaking {
                        self.subres
                            .set(self.wants_subres() && caps.contains(&"subres"));
                        self.capabilities_deadline.set(None);
                        self.state.set(PoolState::Up);
                    } else {
                        // Up without share responses since the wait ran out: turning
                        // them on now would pair verdicts with the wrong shares.
                        log::info!(
                            "{}: capabilities answered late; share responses stay off on this connection",
                            self.name()
                        );
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
                self.capabilities_deadline
                    .set(Some(Instant::now() + CAPABILITIES_PATIENCE));
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
                self.jobs
                    .borrow_mut()
                    .add(job.id, job.ntime, job.clean, Instant::now());
                self.fan_out(agent, job);
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
                if self.difficulty_line.borrow().is_some() {
                    log::debug!(
                        "{}: not forwarding the connection's later mining.set_difficulty {params}",
                        self.name()
                    );
                    return Ok(());
                }
                // Forwarded as the pool wrote it: fractional values stay exact.
                let line: Rc<[u8]> = stratum::notification("mining.set_difficulty", params).into();
                self.difficulty.set(value);
                *self.difficulty_line.borrow_mut() = Some(line.clone());
                for miner in self.miners.borrow().iter() {
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
                        for miner in self.miners.borrow().iter() {
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
        for &sid in sessions {
            if let Some(miner) = self.miner(agent, sid) {
                miner.stats.difficulty.set(value);
                miner.send_shared(agent, &line);
            }
        }
    }

    fn on_submit_response(&self, agent: &Rc<Agent>, index: u16, status: u32) {
        if !self.subres.get() {
            return; // not asked for, or given up on during the handshake
        }
        let waiting = self.pending.borrow_mut().take(index);
        let Some(p) = waiting else {
            self.stats
                .verdicts_unmatched
                .set(self.stats.verdicts_unmatched.get() + 1);
            log::debug!(
                "{}: verdict {status} for share #{index}, which is not waiting",
                self.name()
            );
            return;
        };
        if let Some(miner) = p.miner.upgrade() {
            self.answer(agent, &miner, &p, status);
        }
    }

    fn answer(&self, agent: &Rc<Agent>, miner: &Rc<MinerSession>, p: &Pending, status: u32) {
        let id = &p.id;
        if stratum::status_is_accepted(status) {
            self.stats
                .shares_accepted
                .set(self.stats.shares_accepted.get() + 1);
            tell_accepted(agent, miner, id, p.difficulty);
        } else {
            self.stats
                .shares_rejected
                .set(self.stats.shares_rejected.get() + 1);
            let code = stratum::status_for_miner(status);
            miner.reject(agent, id, code, stratum::status_text(code));
        }
    }

    /// Tells the miner its share will get no verdict.
    fn give_up(&self, agent: &Rc<Agent>, p: Pending, why: &str) {
        self.stats
            .shares_unanswered
            .set(self.stats.shares_unanswered.get() + 1);
        if let Some(miner) = p.miner.upgrade() {
            miner.reject(agent, &p.id, stratum::code::INTERNAL_ERROR, why);
        }
    }

    /// The ntime of job `job_id` while the pool still honours it (see [`JobBook`]).
    pub fn job_ntime(&self, job_id: u8) -> Option<u32> {
        match &self.stratum {
            Some(s) => s.borrow().live_ntime(job_id),
            None => self.jobs.borrow().live_ntime(job_id, Instant::now()),
        }
    }

    /// Forwards one share; answers the miner now or when the pool's verdict arrives.
    /// On a Stratum pool the share is judged first (rebuilt and hashed): only what
    /// meets the pool's target goes there, what meets the miner's is accepted here.
    pub fn submit(&self, agent: &Rc<Agent>, miner: &Rc<MinerSession>, share: MinerShare, id: &str) {
        let difficulty = match &self.stratum {
            None => {
                let Some(share) = share.for_agent_protocol() else {
                    miner.reject(agent, id, stratum::code::OTHER, "Wrong extranonce2 size");
                    return;
                };
                self.send_ex(&ExMessage::SubmitShare(share), false);
                miner.stats.difficulty.get()
            }
            Some(s) => {
                let index = if self.share_responses() {
                    self.pending.borrow().next_index()
                } else {
                    let n = self.unanswered_submits.get();
                    self.unanswered_submits.set(n.wrapping_add(1));
                    n
                };
                let submit_id = SUBMIT_ID_BASE + u32::from(index);
                let now = Instant::now();
                let judged = s.borrow_mut().judge(&share, submit_id, now);
                self.suggest_difficulty(now);
                if let Some(d) = judged.new_difficulty {
                    self.set_miner_difficulties(agent, &[(miner.sid, d)]);
                }
                match judged.judgement {
                    Judgement::Reject { code, message } => {
                        miner.reject(agent, id, code, message);
                        return;
                    }
                    Judgement::Accept { difficulty } => {
                        self.stats
                            .shares_local
                            .set(self.stats.shares_local.get() + 1);
                        tell_accepted(agent, miner, id, difficulty);
                        return;
                    }
                    Judgement::Forward { line, difficulty } => {
                        self.enqueue(&line, false);
                        difficulty
                    }
                }
            }
        };
        self.stats.shares_sent.set(self.stats.shares_sent.get() + 1);
        if self.share_responses() {
            let mut pending = self.pending.borrow_mut();
            let first = pending.is_empty();
            let evicted = pending.push(
                Pending {
                    miner: Rc::downgrade(miner),
                    id: id.into(),
                    difficulty,
                },
                Instant::now(),
            );
            drop(pending);
            if let Some(p) = evicted {
                self.give_up(agent, p, "No response from pool");
            }
            if first {
                self.rearm();
            }
            return;
        }
        if self.stratum.is_none() {
            // A Stratum pool's verdicts are counted when they arrive, asked for or not.
            self.stats
                .shares_accepted
                .set(self.stats.shares_accepted.get() + 1);
        }
        tell_accepted(agent, miner, id, difficulty);
    }

    /// Takes `miner` onto this connection: registers it, then sends what a new miner
    /// needs to start hashing (difficulty, version mask, the last job as clean).
    pub fn adopt(self: &Rc<Self>, agent: &Rc<Agent>, miner: &Rc<MinerSession>) {
        if let Some(s) = &self.stratum {
            // Nothing to register: the pool sees the connection's user. The miner
            // keeps the difficulty it had (a move), else starts at the configured one.
            self.departing.borrow_mut().remove(&miner.sid);
            let placed = s.borrow_mut().place_miner(
                miner.sid,
                miner.layout(),
                miner.stats.difficulty.get(),
                Instant::now(),
            );
            let Some(placed) = placed else {
                // Full (the group asks `has_room` first): it waits for room.
                if let Some(group) = self.group.upgrade() {
                    group.no_room_for(agent, miner);
                }
                return;
            };
            if !self.tell_layout(agent, miner, placed.layout) {
                s.borrow_mut().remove_miner(miner.sid);
                return;
            }
            let d = placed.difficulty;
            self.take_on(miner);
            miner.set_pool(Some(self.clone()));
            miner.stats.difficulty.set(d);
            miner.send(agent, &stratum_upstream::set_difficulty_line(d));
            if miner.version_rolling.get() {
                send_version_mask(agent, miner, self.version_mask());
            }
            if let Some(job) = self.last_job.borrow().as_ref() {
                miner.send_shared(agent, &job.notify_clean);
            }
            return;
        }
        if !self.tell_layout(agent, miner, MinerLayout::Standard) {
            return;
        }
        if self.departing.borrow_mut().remove(&miner.sid).is_some() {
            // Back before its grace period ended: the pool would ignore a REGISTER for
            // a live session and keep its old difficulty, so start it afresh.
            self.send_ex(
                &ExMessage::UnregisterWorker {
                    session_id: miner.sid,
                },
                false,
            );
        }
        let worker = miner.worker();
        let client_agent = miner.user_agent();
        self.send_ex(
            &ExMessage::RegisterWorker {
                session_id: miner.sid,
                client_agent,
                worker_name: worker.to_string(),
            },
            false,
        );
        self.take_on(miner);
        miner.set_pool(Some(self.clone()));
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

    /// Gives `miner` the extranonce layout it needs here (docs/stratum-upstream.md §7):
    /// nothing when it has it; `mining.set_extranonce` (the clean job follows in
    /// [`Self::adopt`]) when it subscribed to changes; else `client.reconnect`, and
    /// false: it does not join. Either way its shares on the jobs of the connection it
    /// left are stale from now on (built with the old extranonce).
    fn tell_layout(
        &self,
        agent: &Rc<Agent>,
        miner: &Rc<MinerSession>,
        layout: MinerLayout,
    ) -> bool {
        if miner.layout() == layout {
            return true;
        }
        if let Some(group) = self.group.upgrade() {
            for s in group.sessions() {
                if !std::ptr::eq(&*s, self) {
                    s.forget(miner.sid);
                }
            }
        }
        miner.change_layout(agent, layout)
    }

    /// Puts `miner` on this connection's list, unless it is on it already (its pool is
    /// this connection from then on until [`PoolSession::release`]).
    fn take_on(self: &Rc<Self>, miner: &Rc<MinerSession>) {
        if !self.is_pool_of(miner) {
            self.miners.borrow_mut().push(miner.clone());
        }
    }

    fn is_pool_of(&self, miner: &MinerSession) -> bool {
        miner.pool().is_some_and(|p| std::ptr::eq(&*p, self))
    }

    /// The miner of session `sid` if it is on this connection.
    fn miner(&self, agent: &Agent, sid: u16) -> Option<Rc<MinerSession>> {
        agent.miner(sid).filter(|m| self.is_pool_of(m))
    }

    /// Takes `miner` off this connection. A miner that moved to a sibling stays
    /// registered at the pool for [`MOVE_GRACE`], so the shares it sends on this
    /// connection's jobs meanwhile are still taken here.
    pub fn release(&self, miner: &MinerSession, departure: Departure) {
        if self.is_pool_of(miner) {
            miner.set_pool(None);
        }
        if !self.miners.borrow_mut().remove(miner.sid) || !self.is_up() {
            return;
        }
        match departure {
            Departure::Now if self.stratum.is_some() => self.forget_stratum_miner(miner.sid),
            Departure::Now => self.send_ex(
                &ExMessage::UnregisterWorker {
                    session_id: miner.sid,
                },
                false,
            ),
            Departure::AfterGrace => {
                let deadline = Instant::now() + MOVE_GRACE;
                self.departing.borrow_mut().insert(miner.sid, deadline);
                if self.next_departure.get().is_none_or(|at| deadline < at) {
                    self.next_departure.set(Some(deadline));
                    self.rearm();
                }
            }
        }
    }

    /// The miner left the agent: if it is still registered here after a move,
    /// unregister it now (its session id will be given to another miner).
    pub fn forget(&self, session_id: u16) {
        if self.departing.borrow_mut().remove(&session_id).is_some() && self.is_up() {
            match &self.stratum {
                Some(_) => self.forget_stratum_miner(session_id),
                None => self.send_ex(&ExMessage::UnregisterWorker { session_id }, false),
            }
        }
    }

    fn forget_stratum_miner(&self, session_id: u16) {
        if let Some(s) = &self.stratum {
            s.borrow_mut().remove_miner(session_id);
        }
    }

    /// True while a miner that moved away may still submit shares on this
    /// connection's jobs.
    pub fn still_registered(&self, session_id: u16) -> bool {
        self.departing.borrow().contains_key(&session_id)
    }

    /// Marks the connection down and hands back its miners; shares still waiting for
    /// a verdict are answered with an error, since none will come.
    pub fn shut(&self, agent: &Rc<Agent>) -> Vec<Rc<MinerSession>> {
        self.state.set(PoolState::Down);
        self.writer.borrow_mut().take();
        let waiting = self.pending.borrow_mut().drain();
        for p in waiting {
            self.give_up(agent, p, "Pool connection lost");
        }
        self.departing.borrow_mut().clear();
        self.next_departure.set(None);
        let miners = self.miners.borrow_mut().take_all();
        for m in &miners {
            m.set_pool(None);
        }
        miners
    }

    /// Unregisters every miner (on shutdown) and returns once the pool has been sent
    /// everything or `within` has passed.
    pub async fn farewell(&self, within: Duration) {
        // Taken out of the map so that the miners' own departure sends nothing more.
        let mut sids: Vec<u16> = self
            .miners
            .borrow_mut()
            .take_all()
            .iter()
            .map(|m| m.sid)
            .collect();
        sids.extend(self.departing.borrow_mut().drain().map(|(sid, _)| sid));
        if self.stratum.is_none() {
            for sid in sids {
                self.send_ex(&ExMessage::UnregisterWorker { session_id: sid }, true);
            }
        }
        self.drain(within).await;
    }

    /// Nothing waits to be written to the pool.
    fn is_drained(&self) -> bool {
        self.out.borrow().is_empty() && !self.writing.get()
    }

    /// Has the writer send what is buffered at once, without the coalescing wait.
    fn flush_soon(&self) {
        self.urgent.set(true);
        let _ = self.wake.try_send(());
    }

    /// Waits until every buffered byte (the last shares, unregistrations) is written.
    pub async fn drain(&self, within: Duration) {
        drain_all(&[self], within).await;
    }

    /// Closes the connection once what is buffered has been written: the last miner's
    /// shares and its unregistration must not be lost with the connection.
    pub async fn retire(self: Rc<Self>, why: &'static str) {
        self.drain(Duration::from_secs(2)).await;
        self.kill(why);
    }
}

/// The miner's share `id` is accepted: counted at `difficulty`, and answered `true`.
fn tell_accepted(agent: &Rc<Agent>, miner: &Rc<MinerSession>, id: &str, difficulty: f64) {
    miner.count_accepted_at(difficulty);
    miner.send(agent, &stratum::result_line(id, "true"));
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

/// Waits until every byte buffered for these connections is written, or `within` has
/// passed. Each round asks every writer again to write at once, so that what comes in
/// meanwhile (shares from miners still mining) does not wait out a coalescing window.
/// Returns right after the check that found them all written, with no await between:
/// a caller can act on that (a handoff execs then).
pub async fn drain_all(sessions: &[&PoolSession], within: Duration) {
    let end = Instant::now() + within;
    while !sessions.iter().all(|s| s.is_drained()) && Instant::now() < end {
        for s in sessions {
            s.flush_soon();
        }
        Timer::after(Duration::from_millis(1)).await;
    }
}
