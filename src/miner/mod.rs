//! The miner side: one [`MinerSession`] per Stratum V1 connection.
//!
//! A miner costs a few hundred bytes while idle: reads go through one scratch buffer
//! shared by every miner (only an unfinished line is kept per miner), and writes go
//! straight to the socket, queueing only what the kernel does not take.

mod compact;
pub mod deadlines;
mod output;
pub mod session_ids;
mod shared_str;
pub mod table;

use crate::agent::Agent;
use crate::handoff_state::{HandedMiner, Stage};
use crate::pool::{PoolGroup, PoolSession};
use crate::protocol::framing;
use crate::protocol::job::parse_miner_job_id;
use crate::protocol::stratum::{self, code, Message};
use crate::protocol::stratum_upstream::connection::MinerShare;
use crate::protocol::stratum_upstream::extranonce::{MinerExtranonce2, MinerLayout};
use crate::protocol::worker;
use crate::status::ShareCount;
use async_io::Async;
use compact::Peer;
pub use compact::Second;
use output::OutQueue;
use serde_json::Value;
pub use shared_str::SharedStr;
use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Instant;

/// A Stratum line from a miner longer than this closes the connection.
pub const MAX_LINE: usize = 16 * 1024;

/// After this many version-rolling shares, a share without a mask means the miner lost
/// AsicBoost (`disconnect_when_lost_asicboost`).
const ASICBOOST_SHARES: u8 = 100;

/// Consecutive unparsable lines tolerated before the miner is dropped.
const MAX_BAD_LINES: u8 = 8;

/// A miner asked to reconnect (its extranonce must change and it cannot be told) is
/// closed if it is still there this much later (docs/stratum-upstream.md §7).
pub const RECONNECT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinerState {
    Connected,
    Subscribed,
    /// Authorized by name, waiting for its sub-account's first pool connection.
    WaitingForPool,
    Authorized,
}

/// Per-miner counters for the status report.
#[derive(Default)]
pub struct MinerStats {
    pub accepted: Cell<u32>,
    pub rejected: Cell<u32>,
    pub last_share: Cell<Second>,
    /// Sum of the difficulty of accepted shares, for the hashrate estimate.
    pub accepted_difficulty: Cell<f64>,
    pub difficulty: Cell<f64>,
    /// The counters when the status history last took them: (accepted, rejected,
    /// accepted difficulty).
    pub history_mark: Cell<(u32, u32, f64)>,
}

impl MinerStats {
    /// Shares since the miner connected.
    pub fn shares(&self) -> ShareCount {
        ShareCount {
            accepted: self.accepted.get() as u64,
            rejected: self.rejected.get() as u64,
            difficulty: self.accepted_difficulty.get(),
        }
    }

    /// Shares since the last call, for the history: each share is counted once, under
    /// the sub-account the miner has when it is counted.
    pub fn take_history_delta(&self) -> ShareCount {
        let (a, r, d) = self.history_mark.get();
        let now = (
            self.accepted.get(),
            self.rejected.get(),
            self.accepted_difficulty.get(),
        );
        self.history_mark.set(now);
        ShareCount {
            accepted: now.0.saturating_sub(a) as u64,
            rejected: now.1.saturating_sub(r) as u64,
            difficulty: (now.2 - d).max(0.0),
        }
    }
}

/// A miner's extranonce layout (docs/stratum-upstream.md §3, §7) and a few flags, in
/// two bytes (the byte of padding the session's other small fields left, and the one a
/// `bool` for the deadline flag took), so the session does not grow: bits 0-7 the
/// prefix, 8-9 the layout (standard, session id, prefix + 3 bytes, prefix + 4 bytes),
/// then the flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct MinerFlags(u16);

/// It sent `mining.extranonce.subscribe`: it can be told a new extranonce.
const SUBSCRIBED: u16 = 1 << 10;
/// It was sent `client.reconnect` and is closed at its deadline.
const RECONNECT_ASKED: u16 = 1 << 11;
/// The agent's sweeper has its deadline ([`Agent::watch_deadline`]).
const DEADLINE_WATCHED: u16 = 1 << 12;
const LAYOUT_BITS: u16 = 0x3ff;

impl MinerFlags {
    fn layout(self) -> MinerLayout {
        let prefix = self.0 as u8;
        match (self.0 >> 8) & 3 {
            0 => MinerLayout::Standard,
            1 => MinerLayout::SessionId,
            kind => MinerLayout::Prefix {
                prefix,
                extranonce2_size: kind as u8 + 1,
            },
        }
    }

    /// With `layout` instead; a prefix layout's extranonce2 is 3 or 4 bytes (pools of
    /// 4 or 5), anything else would not be one.
    fn with_layout(self, layout: MinerLayout) -> MinerFlags {
        let bits = match layout {
            MinerLayout::Standard => 0,
            MinerLayout::SessionId => 1 << 8,
            MinerLayout::Prefix {
                prefix,
                extranonce2_size,
            } => (u16::from(extranonce2_size.clamp(3, 4) - 1) << 8) | u16::from(prefix),
        };
        MinerFlags((self.0 & !LAYOUT_BITS) | bits)
    }

    fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }
}

/// One miner's connection and what the agent knows of it. Thousands of these live for
/// good, so the fields are the small forms: cells the accessors below copy out of
/// rather than `RefCell`s (no borrow flag each), times to the second, the peer
/// address compact.
pub struct MinerSession {
    pub sid: u16,
    peer: Peer,
    /// When it connected.
    pub connected_at: Second,
    stream: Async<TcpStream>,
    pub state: Cell<MinerState>,
    /// Interned: a farm's miners have a few user agents between them. `None`: none
    /// given ([`MinerSession::user_agent`]).
    user_agent: Cell<Option<SharedStr>>,
    /// Name at the pool, after the naming rules ([`MinerSession::worker`]).
    worker: Cell<Option<Rc<str>>>,
    /// The worker part of the login, kept to apply changed naming rules (a reload).
    /// Usually the same text as `worker`, and then the same copy.
    login_worker: Cell<Option<Rc<str>>>,
    group: Cell<Option<Rc<PoolGroup>>>,
    pool: Cell<Option<Rc<PoolSession>>>,
    pub version_rolling: Cell<bool>,
    pub requested_mask: Cell<u32>,
    rolled_shares: Cell<u8>,
    /// Its extranonce layout, whether it can be told another, and other flags.
    flags: Cell<MinerFlags>,
    /// The authorize request waiting for a pool connection.
    pending_auth: Cell<Option<Box<str>>>,
    /// Boxed: only a miner in its handshake, or waiting for a pool, has one.
    deadline: Cell<Option<Box<Instant>>>,
    out: RefCell<OutQueue>,
    /// An unfinished line, boxed: usually there is none. Kept here rather than in the
    /// reading task, so that a handoff can pass it on.
    // Boxed, unlike clippy would have it: one pointer here instead of a Vec's three.
    #[allow(clippy::box_collection)]
    partial: Cell<Option<Box<Vec<u8>>>>,
    closed: Cell<bool>,
    close_reason: Cell<Option<Box<str>>>,
    pub stats: MinerStats,
}

thread_local! {
    /// The read buffer every miner shares: the executor is single-threaded and a read
    /// is processed before the next await.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_LINE + 1024]);
}

impl MinerSession {
    pub fn new(
        sid: u16,
        stream: Async<TcpStream>,
        peer: SocketAddr,
        handshake_deadline: Instant,
    ) -> MinerSession {
        MinerSession {
            sid,
            peer: Peer::new(peer),
            connected_at: Second::now(),
            stream,
            state: Cell::new(MinerState::Connected),
            user_agent: Cell::new(None),
            worker: Cell::new(None),
            login_worker: Cell::new(None),
            group: Cell::new(None),
            pool: Cell::new(None),
            version_rolling: Cell::new(false),
            requested_mask: Cell::new(0),
            rolled_shares: Cell::new(0),
            flags: Cell::new(MinerFlags(0)),
            pending_auth: Cell::new(None),
            deadline: Cell::new(Some(Box::new(handshake_deadline))),
            out: RefCell::new(OutQueue::new()),
            partial: Cell::new(None),
            closed: Cell::new(false),
            close_reason: Cell::new(None),
            stats: MinerStats::default(),
        }
    }

    /// A miner the previous agent process handed over, as far as it had got with it
    /// (`src/handoff.rs`). Its group and pool are the new process's to give.
    pub fn handed(m: &HandedMiner, stream: Async<TcpStream>, handshake_deadline: Instant) -> Self {
        let miner = MinerSession::new(m.sid, stream, m.peer, handshake_deadline);
        let now = Instant::now();
        let miner = MinerSession {
            connected_at: Second::at(
                now.checked_sub(std::time::Duration::from_secs(m.connected_seconds))
                    .unwrap_or(now),
            ),
            ..miner
        };
        miner.state.set(match m.stage {
            Stage::Connected => MinerState::Connected,
            // The group takes it on from here.
            _ => MinerState::Subscribed,
        });
        if matches!(m.stage, Stage::WaitingForPool { .. } | Stage::Authorized) {
            miner.set_deadline(None);
        }
        if !m.user_agent.is_empty() {
            miner.user_agent.set(Some(m.user_agent.clone().into()));
        }
        let login_worker: Rc<str> = m.login_worker.as_str().into();
        miner.set_worker(if m.worker == m.login_worker {
            login_worker.clone()
        } else {
            m.worker.as_str().into()
        });
        miner.set_login_worker(login_worker);
        miner.version_rolling.set(m.version_rolling);
        miner.requested_mask.set(m.requested_mask);
        if !m.extranonce1.is_empty() {
            let layout =
                crate::protocol::stratum_upstream::hex::decode(&m.extranonce1).and_then(|ex1| {
                    MinerLayout::from_extranonce(&ex1, m.extranonce2_size.into(), m.sid)
                });
            // Anything else the new process could not have written: the standard one,
            // and the miner is moved as any other (docs/stratum-upstream.md §7).
            miner.set_layout(layout.unwrap_or(MinerLayout::Standard));
        }
        miner.set_flag(SUBSCRIBED, m.extranonce_subscribed);
        let s = &miner.stats;
        s.accepted.set(m.accepted);
        s.rejected.set(m.rejected);
        s.accepted_difficulty.set(m.accepted_difficulty);
        s.difficulty.set(m.difficulty);
        // Counted in the previous process's history already.
        s.history_mark
            .set((m.accepted, m.rejected, m.accepted_difficulty));
        if !m.unread.is_empty() {
            miner.partial.set(Some(Box::new(m.unread.clone())));
        }
        miner
    }

    /// What the next agent process needs to go on with this miner, `None` once it is
    /// closing. `subaccount` is its group's.
    #[cfg(unix)]
    pub fn handoff_record(&self) -> Option<HandedMiner> {
        use std::os::fd::AsRawFd;
        if self.closed.get() {
            return None;
        }
        let stage = match self.state.get() {
            MinerState::Connected => Stage::Connected,
            MinerState::Subscribed => Stage::Subscribed,
            MinerState::WaitingForPool => Stage::WaitingForPool {
                auth_id: peek(&self.pending_auth)
                    .as_deref()
                    .unwrap_or("null")
                    .to_string(),
            },
            MinerState::Authorized => Stage::Authorized,
        };
        let s = &self.stats;
        Some(HandedMiner {
            fd: self.stream.as_raw_fd(),
            sid: self.sid,
            peer: self.peer(),
            stage,
            user_agent: self.user_agent(),
            worker: self.worker().to_string(),
            login_worker: self.login_worker().to_string(),
            subaccount: self
                .group()
                .and_then(|g| g.subaccount.as_deref().map(String::from)),
            version_rolling: self.version_rolling.get(),
            requested_mask: self.requested_mask.get(),
            difficulty: s.difficulty.get(),
            accepted: s.accepted.get(),
            rejected: s.rejected.get(),
            accepted_difficulty: s.accepted_difficulty.get(),
            connected_seconds: self.connected_at.age(Instant::now()).as_secs(),
            unread: peek(&self.partial).map(|b| *b).unwrap_or_default(),
            unsent: self.out.borrow().pending(),
            extranonce1: match self.layout() {
                MinerLayout::Standard => String::new(),
                layout => {
                    crate::protocol::stratum_upstream::hex::encode(&layout.extranonce1(self.sid))
                }
            },
            extranonce2_size: match self.layout() {
                MinerLayout::Standard => 0,
                layout => layout.extranonce2_size() as u8,
            },
            extranonce_subscribed: self.flags.get().has(SUBSCRIBED),
        })
    }

    /// `sid/worker@ip` for logs.
    /// The sub-account the miner mines for: its group's; in single-user mode its pool
    /// connection's, and before it has one `fallback` (the first pool entry's).
    pub fn subaccount(&self, fallback: &str) -> String {
        if let Some(name) = self.group().and_then(|g| g.subaccount.clone()) {
            return name.to_string();
        }
        match self.pool() {
            Some(p) => p.subaccount.clone(),
            None => fallback.to_string(),
        }
    }

    pub fn name(&self) -> String {
        let w = self.worker();
        if w.is_empty() {
            format!("miner#{} {}", self.sid, self.peer())
        } else {
            format!("miner#{} {} {}", self.sid, w, self.peer().ip())
        }
    }

    /// What its `mining.subscribe` said it is ("" if nothing).
    pub fn user_agent(&self) -> String {
        peek(&self.user_agent).map(String::from).unwrap_or_default()
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer.addr()
    }

    /// Its name at the pool ("" before it logged in).
    pub fn worker(&self) -> Rc<str> {
        peek(&self.worker).unwrap_or_else(|| Rc::from(""))
    }

    pub fn set_worker(&self, name: Rc<str>) {
        self.worker.set(Some(name));
    }

    /// The worker part of its login.
    pub fn login_worker(&self) -> Rc<str> {
        peek(&self.login_worker).unwrap_or_else(|| Rc::from(""))
    }

    pub fn set_login_worker(&self, name: Rc<str>) {
        self.login_worker.set(Some(name));
    }

    /// Its sub-account's group, once it logged in.
    pub fn group(&self) -> Option<Rc<PoolGroup>> {
        peek(&self.group)
    }

    pub fn set_group(&self, group: Option<Rc<PoolGroup>>) -> Option<Rc<PoolGroup>> {
        self.group.replace(group)
    }

    /// The pool connection it mines on.
    pub fn pool(&self) -> Option<Rc<PoolSession>> {
        peek(&self.pool)
    }

    pub fn set_pool(&self, pool: Option<Rc<PoolSession>>) -> Option<Rc<PoolSession>> {
        self.pool.replace(pool)
    }

    /// What it was told of its extranonces.
    pub fn layout(&self) -> MinerLayout {
        self.flags.get().layout()
    }

    fn set_layout(&self, layout: MinerLayout) {
        self.flags.set(self.flags.get().with_layout(layout));
    }

    fn set_flag(&self, flag: u16, on: bool) {
        let bits = self.flags.get().0;
        self.flags
            .set(MinerFlags(if on { bits | flag } else { bits & !flag }));
    }

    /// Moves the miner to `layout` (another pool's extranonce split, or a prefix free
    /// on its new connection): a miner that subscribed to extranonce changes is sent
    /// `mining.set_extranonce` (the caller sends a clean job after it) and true is
    /// returned; any other is asked to reconnect, closed if still there after
    /// [`RECONNECT_GRACE`], and false is returned. True at once when it has it already.
    pub fn change_layout(self: &Rc<Self>, agent: &Rc<Agent>, layout: MinerLayout) -> bool {
        let state = self.flags.get();
        if state.layout() == layout {
            return true;
        }
        if state.has(SUBSCRIBED) {
            log::info!(
                "{}: new extranonce {} + {} bytes (mining.set_extranonce)",
                self.name(),
                crate::protocol::stratum_upstream::hex::encode(&layout.extranonce1(self.sid)),
                layout.extranonce2_size()
            );
            self.set_layout(layout);
            self.send(agent, &layout.set_extranonce_line(self.sid));
            return true;
        }
        if !state.has(RECONNECT_ASKED) {
            self.set_flag(RECONNECT_ASKED, true);
            log::info!(
                "{}: its pool connection splits the extranonce otherwise, and it did not subscribe to extranonce changes: asking it to reconnect",
                self.name()
            );
            self.send(agent, &stratum::notification("client.reconnect", "[]"));
            self.set_deadline(Some(Instant::now() + RECONNECT_GRACE));
            agent.watch_deadline(self);
        }
        false
    }

    /// It was asked to reconnect: its deadline closes it.
    pub fn reconnect_asked(&self) -> bool {
        self.flags.get().has(RECONNECT_ASKED)
    }

    /// The id of the authorize request waiting for a pool connection, taken.
    pub fn take_pending_auth(&self) -> Option<Box<str>> {
        self.pending_auth.take()
    }

    pub fn set_pending_auth(&self, id: &str) {
        self.pending_auth.set(Some(id.into()));
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// The miner's task gives a new deadline to the agent's sweeper before it next
    /// waits (as it used to set its own timer then).
    pub fn set_deadline(&self, at: Option<Instant>) {
        self.deadline.set(at.map(Box::new));
        self.set_flag(DEADLINE_WATCHED, false);
    }

    pub fn deadline(&self) -> Option<Instant> {
        peek(&self.deadline).map(|b| *b)
    }

    /// The deadline, if the sweeper has not been given it yet; it has it after this.
    pub fn deadline_to_watch(&self) -> Option<Instant> {
        if self.flags.get().has(DEADLINE_WATCHED) {
            return None;
        }
        self.set_flag(DEADLINE_WATCHED, true);
        self.deadline()
    }

    /// Closes the connection from anywhere: the reader sees end-of-stream and cleans up.
    pub fn close(&self, reason: impl Into<String>) {
        if !self.closed.replace(true) {
            self.close_reason.set(Some(reason.into().into_boxed_str()));
            let _ = self.stream.get_ref().shutdown(Shutdown::Both);
        }
    }

    /// Sends a shared buffer (a job): written directly, or queued by reference.
    pub fn send_shared(self: &Rc<Self>, agent: &Rc<Agent>, data: &Rc<[u8]>) {
        self.send_with(agent, data, || data.clone());
    }

    pub fn send(self: &Rc<Self>, agent: &Rc<Agent>, data: &[u8]) {
        self.send_with(agent, data, || Rc::from(data));
    }

    fn send_with(self: &Rc<Self>, agent: &Rc<Agent>, data: &[u8], keep: impl FnOnce() -> Rc<[u8]>) {
        if self.closed.get() {
            return;
        }
        let mut out = self.out.borrow_mut();
        let mut written = 0;
        if out.is_empty() {
            match self.stream.get_ref().write(data) {
                Ok(n) if n == data.len() => return,
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    drop(out);
                    self.close(format!("write failed: {e}"));
                    return;
                }
            }
        }
        out.push(keep(), written);
        if out.bytes() > agent.miner_output_limit() {
            let pending = out.bytes();
            drop(out);
            self.close(format!("not reading its socket ({pending} bytes unsent)"));
            return;
        }
        if !out.flushing() {
            out.set_flushing(true);
            drop(out);
            agent.spawn(flush(self.clone()));
        }
    }

    /// The miner's task: reads and handles lines until the connection ends, then tells
    /// the agent why it ended. Its future is kept small: every miner has one for good.
    pub async fn serve(self: Rc<Self>, agent: Rc<Agent>) {
        // A miner past its first line (one handed over by the previous process) is
        // known to speak Stratum.
        let mut first_byte_seen = self.state.get() != MinerState::Connected || {
            let partial = self.partial.take();
            let seen = partial.is_some();
            self.partial.set(partial);
            seen
        };
        let mut bad_lines = 0u8;
        let why = 'read: loop {
            if self.closed.get() {
                break "closed".into();
            }
            // The sweeper closes it when its deadline passes.
            agent.watch_deadline(&self);
            // poll_readable keeps one waker in the socket's reactor entry; readable()
            // would add a slab of wakers per miner (about 100 bytes each).
            if let Err(e) = std::future::poll_fn(|cx| self.stream.poll_readable(cx)).await {
                break format!("socket error: {e}");
            }
            // Drain what is readable, a bounded number of times so one busy miner
            // cannot starve the others.
            for _ in 0..4 {
                let step = SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    let n = match self.stream.get_ref().read(&mut scratch[..]) {
                        Ok(0) => return Err("closed by the miner".to_string()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
                        Err(e) => return Err(format!("read failed: {e}")),
                    };
                    let data = &scratch[..n];
                    if !first_byte_seen {
                        if let Some(&b) = data.iter().find(|b| !b.is_ascii_whitespace()) {
                            first_byte_seen = true;
                            if b != b'{' {
                                return Err(format!("not Stratum: {}", describe_foreign(data)));
                            }
                        }
                    }
                    match self.partial.take() {
                        None => {
                            let consumed = self.handle_lines(&agent, data, 0, &mut bad_lines)?;
                            if consumed < n {
                                self.partial.set(Some(Box::new(data[consumed..].to_vec())));
                            }
                        }
                        Some(mut kept) => {
                            // What was kept holds no '\n': search only the new bytes.
                            let scanned = kept.len();
                            kept.extend_from_slice(data);
                            let consumed =
                                self.handle_lines(&agent, &kept, scanned, &mut bad_lines)?;
                            kept.drain(..consumed);
                            if !kept.is_empty() {
                                self.partial.set(Some(kept));
                            }
                        }
                    }
                    Ok(n == scratch.len())
                });
                match step {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(reason) => break 'read reason,
                }
            }
            smol::future::yield_now().await;
        };
        // When the agent closed the socket itself, its reason beats the end-of-stream
        // the reader saw because of it.
        let why = self.close_reason.take().map_or(why, String::from);
        agent.miner_gone(&self, &why);
    }

    /// Handles the complete lines of `data`, whose first `scanned` bytes hold no `\n`;
    /// returns how many bytes they took. A line over [`MAX_LINE`] without its ending,
    /// finished or not, is an error (the pool side's rule, [`framing::next_line`]).
    fn handle_lines(
        self: &Rc<Self>,
        agent: &Rc<Agent>,
        data: &[u8],
        mut scanned: usize,
        bad_lines: &mut u8,
    ) -> Result<usize, String> {
        let mut consumed = 0;
        loop {
            let line = match framing::next_line_after(&data[consumed..], scanned, MAX_LINE) {
                Ok(Some((line, taken))) => {
                    consumed += taken;
                    line
                }
                Ok(None) => break,
                Err(_) => return Err(format!("sent a line over {MAX_LINE} bytes")),
            };
            scanned = 0;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match Message::parse(line) {
                Ok(msg) => {
                    *bad_lines = 0;
                    self.handle_message(agent, &msg)?;
                }
                Err(e) => {
                    *bad_lines += 1;
                    if agent.may_log_about(self) {
                        log::warn!("{}: {e}", self.name());
                    }
                    self.send(
                        agent,
                        &stratum::error_line("null", code::OTHER, "Malformed JSON-RPC line"),
                    );
                    if *bad_lines >= MAX_BAD_LINES {
                        return Err(format!("{MAX_BAD_LINES} malformed lines in a row"));
                    }
                }
            }
            if self.closed.get() {
                break;
            }
        }
        Ok(consumed)
    }

    fn handle_message(self: &Rc<Self>, agent: &Rc<Agent>, msg: &Message) -> Result<(), String> {
        let id = msg.id_text();
        let Some(method) = msg.method() else {
            return Ok(()); // a response to nothing the agent asked: ignore
        };
        match method {
            "mining.subscribe" => self.on_subscribe(agent, id, msg),
            "mining.configure" => self.on_configure(agent, id, msg),
            "mining.authorize" => self.on_authorize(agent, id, msg),
            "mining.submit" => self.on_submit(agent, id, msg),
            "mining.extranonce.subscribe" => {
                // NiceHash's extension: it takes `mining.set_extranonce` from now on.
                self.set_flag(SUBSCRIBED, true);
                self.send(agent, &stratum::result_line(id, "true"));
            }
            "mining.suggest_difficulty" | "mining.suggest_target" | "mining.multi_version" => {
                self.send(
                    agent,
                    &stratum::error_line(
                        id,
                        code::ILLEGAL_METHOD,
                        &format!("{method} is not supported by this agent"),
                    ),
                );
            }
            _ => {
                log::debug!("{}: unknown method {method:?}", self.name());
                self.send(
                    agent,
                    &stratum::error_line(
                        id,
                        code::ILLEGAL_METHOD,
                        &format!("unknown method {method}"),
                    ),
                );
            }
        }
        Ok(())
    }

    fn on_subscribe(self: &Rc<Self>, agent: &Rc<Agent>, id: &str, msg: &Message) {
        if let Some(ua) = msg.params_list().first().and_then(Value::as_str) {
            let ua: String = ua.chars().take(64).collect();
            self.user_agent.set((!ua.is_empty()).then(|| ua.into()));
        }
        if self.state.get() == MinerState::Connected {
            self.state.set(MinerState::Subscribed);
        }
        // The layout of the pool it most likely lands on (docs/stratum-upstream.md §3):
        // `0000SSSS` + 4 on the agent protocol and on pools of 8 bytes or more.
        let layout = agent.layout_for_new_miner(self.sid);
        self.set_layout(layout);
        let result = layout.subscribe_result(self.sid);
        self.send(agent, &stratum::result_line(id, &result));
    }

    fn on_configure(self: &Rc<Self>, agent: &Rc<Agent>, id: &str, msg: &Message) {
        let params = msg.params_list();
        let wanted: Vec<&str> = params
            .first()
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let opts = params.get(1);
        let mut result = serde_json::Map::new();
        for ext in wanted {
            if ext == "version-rolling" {
                let requested = opts
                    .and_then(|o| o.get("version-rolling.mask"))
                    .and_then(stratum::parse_hex_u32)
                    .unwrap_or(u32::MAX);
                let mask = requested & agent.version_mask_for_new_miners();
                self.requested_mask.set(requested);
                self.version_rolling.set(mask != 0);
                result.insert("version-rolling".into(), Value::Bool(mask != 0));
                result.insert(
                    "version-rolling.mask".into(),
                    Value::String(stratum::hex8(mask)),
                );
            } else {
                result.insert(ext.into(), Value::Bool(false));
            }
        }
        self.send(
            agent,
            &stratum::result_line(id, &Value::Object(result).to_string()),
        );
    }

    fn on_authorize(self: &Rc<Self>, agent: &Rc<Agent>, id: &str, msg: &Message) {
        match self.state.get() {
            MinerState::Connected => {
                self.send(
                    agent,
                    &stratum::error_line(id, code::NOT_SUBSCRIBED, "Not subscribed"),
                );
                return;
            }
            MinerState::Authorized => {
                self.send(agent, &stratum::result_line(id, "true"));
                return;
            }
            MinerState::WaitingForPool => {
                self.send(
                    agent,
                    &stratum::error_line(id, code::OTHER, "Authorization in progress"),
                );
                return;
            }
            MinerState::Subscribed => {}
        }
        let params = msg.params_list();
        let login = params.first().and_then(Value::as_str).unwrap_or("");
        let cfg = agent.config();
        let (sub, login_worker) = match worker::split_login(login, cfg.multi_user_mode) {
            Ok(v) => v,
            Err(why) => {
                if agent.may_log_about(self) {
                    log::warn!("{}: refused login {login:?}: {why}", self.name());
                }
                self.send(agent, &stratum::error_line(id, code::EMPTY_SUBACCOUNT, why));
                return;
            }
        };
        agent.handshake_done(self);
        let name: Rc<str> = agent
            .naming()
            .worker_name(login_worker, self.peer().ip())
            .into();
        let login_worker = if *name == *login_worker {
            name.clone()
        } else {
            login_worker.into()
        };
        self.set_worker(name);
        self.set_login_worker(login_worker);
        let group = agent.group_for(sub);
        group.join(agent, self, id);
    }

    fn on_submit(self: &Rc<Self>, agent: &Rc<Agent>, id: &str, msg: &Message) {
        if self.state.get() != MinerState::Authorized {
            self.send(
                agent,
                &stratum::error_line(id, code::UNAUTHORIZED, "Unauthorized worker"),
            );
            return;
        }
        let params = msg.params_list();
        if params.len() < 5 {
            self.send(
                agent,
                &stratum::error_line(
                    id,
                    code::ILLEGAL_PARAMS,
                    "mining.submit needs 5 or 6 params",
                ),
            );
            return;
        }
        let job_text = params[1].as_str().unwrap_or("");
        if job_text.starts_with('f') {
            // A share on a fake job: keeps the miner content, is never worth sending.
            self.send(agent, &stratum::result_line(id, "true"));
            return;
        }
        // The job names its connection: the miner's own, or the one it was just moved
        // from, which still takes shares on its jobs for a while. Anything else, and a
        // job that connection's pool has forgotten, is stale: sending it would only
        // earn a rejection (or, without share responses, a false "accepted").
        let job = parse_miner_job_id(job_text).and_then(|(conn, job_id)| {
            let pool = crate::pool::session_for_share(self, conn)?;
            let ntime = pool.job_ntime(job_id)?;
            Some((pool, job_id, ntime))
        });
        let Some((pool, job_id, job_ntime)) = job else {
            self.reject(agent, id, code::JOB_NOT_FOUND, "Job not found (=stale)");
            return;
        };
        // Exactly as wide as the header needs: a shorter extranonce2 would build
        // another coinbase than the one the pool rebuilds from `%016x`. Its width is
        // the miner's layout's (4 bytes but on 4-5 byte Stratum pools).
        let extranonce2 = match self.layout().extranonce2_size() {
            4 => stratum::parse_hex8(&params[2]).map(MinerExtranonce2::from_u32),
            size => params[2]
                .as_str()
                .and_then(|text| MinerExtranonce2::parse(text, size)),
        };
        let fields = (
            extranonce2,
            stratum::parse_hex8(&params[3]),
            stratum::parse_hex8(&params[4]),
        );
        let (Some(extranonce2), Some(ntime), Some(nonce)) = fields else {
            self.reject(agent, id, code::ILLEGAL_PARAMS, "Illegal params");
            return;
        };
        let version_mask = match params.get(5) {
            None | Some(Value::Null) => None,
            Some(v) => match stratum::parse_hex_u32(v) {
                Some(m) => Some(m),
                None => {
                    self.reject(agent, id, code::ILLEGAL_PARAMS, "Illegal params");
                    return;
                }
            },
        };
        let version_mask = version_mask.filter(|&m| m != 0);
        // What sserver rejects for certain, answered here instead of sent.
        if ntime > job_ntime.saturating_add(stratum::MAX_NTIME_AHEAD) {
            self.reject(agent, id, code::TIME_TOO_NEW, "Time too new");
            return;
        }
        if version_mask.is_some_and(|m| m & !pool.version_mask() != 0) {
            self.reject(
                agent,
                id,
                code::ILLEGAL_VERSION_MASK,
                "Invalid version mask",
            );
            return;
        }
        let share = MinerShare {
            job_id,
            session_id: self.sid,
            extranonce2,
            nonce,
            ntime: (ntime != job_ntime).then_some(ntime),
            version_mask,
        };
        pool.submit(agent, self, share, id);
        self.watch_asicboost(agent, version_mask.is_some());
    }

    /// Counts an accepted share found at `difficulty` (the miner's difficulty when it
    /// was judged), for the hashrate estimate.
    pub fn count_accepted_at(&self, difficulty: f64) {
        let s = &self.stats;
        s.accepted.set(s.accepted.get() + 1);
        s.last_share.set(Second::now());
        s.accepted_difficulty
            .set(s.accepted_difficulty.get() + difficulty);
    }

    pub fn reject(self: &Rc<Self>, agent: &Rc<Agent>, id: &str, code: i32, why: &str) {
        self.stats.rejected.set(self.stats.rejected.get() + 1);
        self.stats.last_share.set(Second::now());
        self.send(agent, &stratum::error_line(id, code, why));
    }

    fn watch_asicboost(self: &Rc<Self>, agent: &Rc<Agent>, rolled: bool) {
        if rolled {
            self.rolled_shares
                .set(self.rolled_shares.get().saturating_add(1));
        } else if self.rolled_shares.get() > ASICBOOST_SHARES
            && agent.config().disconnect_when_lost_asicboost
        {
            log::warn!("{}: stopped rolling versions after {}+ shares (lost AsicBoost): asking it to reconnect", self.name(), ASICBOOST_SHARES);
            self.rolled_shares.set(0);
            self.send(agent, &stratum::notification("client.reconnect", "[]"));
        }
    }
}

/// A copy of what a cell holds (a shared pointer: a count goes up), left in place.
fn peek<T: Clone>(cell: &Cell<Option<T>>) -> Option<T> {
    let value = cell.take();
    let copy = value.clone();
    cell.set(value);
    copy
}

/// Writes a miner's queued output as the socket drains; ends when the queue is empty.
async fn flush(miner: Rc<MinerSession>) {
    loop {
        if miner.closed.get() {
            return;
        }
        {
            let mut out = miner.out.borrow_mut();
            while let Some(front) = out.front() {
                match miner.stream.get_ref().write(front) {
                    Ok(0) => {
                        drop(out);
                        miner.close("write returned 0");
                        return;
                    }
                    Ok(n) => out.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        drop(out);
                        miner.close(format!("write failed: {e}"));
                        return;
                    }
                }
            }
            if out.is_empty() {
                out.set_flushing(false);
                return;
            }
        }
        if miner.stream.writable().await.is_err() {
            miner.close("socket error");
            return;
        }
    }
}

/// Names what a non-Stratum client looks like, for the one log line it gets.
fn describe_foreign(data: &[u8]) -> &'static str {
    let head = &data[..data.len().min(8)];
    if [
        &b"GET "[..],
        b"POST",
        b"HEAD",
        b"PUT ",
        b"OPTI",
        b"CONN",
        b"PRI ",
    ]
    .iter()
    .any(|m| head.starts_with(m))
    {
        "looks like HTTP"
    } else if head.first() == Some(&0x16) {
        "looks like a TLS handshake"
    } else if head.first() == Some(&0x03) && head.get(1) == Some(&0x00) {
        "looks like RDP"
    } else if head.starts_with(b"SSH-") {
        "looks like SSH"
    } else {
        "first byte is not '{'"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_protocols_are_named() {
        assert_eq!(describe_foreign(b"GET / HTTP/1.1\r\n"), "looks like HTTP");
        assert_eq!(
            describe_foreign(&[0x16, 0x03, 0x01, 0x02]),
            "looks like a TLS handshake"
        );
        assert_eq!(
            describe_foreign(&[0x03, 0x00, 0x00, 0x13, 0x0e]),
            "looks like RDP"
        );
        assert_eq!(describe_foreign(b"SSH-2.0-x"), "looks like SSH");
        assert_eq!(describe_foreign(b"\x00\x01"), "first byte is not '{'");
    }
}

#[cfg(test)]
mod extranonce_state {
    use super::*;

    #[test]
    fn every_layout_packs_and_the_flags_stay() {
        let state = MinerFlags(0);
        assert_eq!(state.layout(), MinerLayout::Standard);
        for layout in [
            MinerLayout::SessionId,
            MinerLayout::Prefix {
                prefix: 0xff,
                extranonce2_size: 3,
            },
            MinerLayout::Prefix {
                prefix: 0,
                extranonce2_size: 4,
            },
            MinerLayout::Standard,
        ] {
            let s = MinerFlags(SUBSCRIBED).with_layout(layout);
            assert_eq!(s.layout(), layout);
            assert!(s.has(SUBSCRIBED) && !s.has(RECONNECT_ASKED));
        }
        let s = MinerFlags(RECONNECT_ASKED).with_layout(MinerLayout::Prefix {
            prefix: 7,
            extranonce2_size: 3,
        });
        assert_eq!(s.0, 0x0a07);
    }
}

#[cfg(test)]
mod size {
    /// Thousands of these live for good: a field that grows it should be a decision.
    #[test]
    fn a_miner_session_stays_small() {
        let size = std::mem::size_of::<super::MinerSession>();
        eprintln!("MinerSession: {size} bytes");
        #[cfg(target_pointer_width = "64")]
        assert!(size <= 216, "{size}");
    }
}
