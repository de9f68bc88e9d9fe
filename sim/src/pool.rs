//! The pool simulator: the pool side of the BTCAgent protocol on real loopback TCP,
//! on its own thread and single-threaded smol executor. Tests drive it through the
//! thread-safe [`PoolSim`] handle and read [`PoolStats`] snapshots.
//!
//! It keeps btcpool sserver's rules (checked in its source: StratumSession.cc,
//! bitcoin/StratumSessionBitcoin.cc, bitcoin/StratumMinerBitcoin.cc,
//! bitcoin/StratumServerBitcoin.cc, StratumMiner.h, StratumMessageDispatcher.cc,
//! DiffController.cc, Stratum.cc), in one mode:
//! - a connection is an agent only when its `mining.subscribe` params[0], cut to 30
//!   bytes and filtered as worker names are, starts with `btccom-agent/`; ex-messages
//!   of other connections, and of any connection before it authorized, are dropped;
//! - the connection's own difficulty (`mining.set_difficulty`, sent only right before a
//!   job, when it changed) comes from a controller that never sees a share: it starts
//!   at the pool default and halves toward the minimum with every job once
//!   [`PoolSimConfig::decay_after`] has passed. Shares are judged per worker, at the
//!   worker's difficulty frozen per job; a new worker starts at the pool default for
//!   every job already sent; MINING_SET_DIFF changes it, and goes out only right before
//!   a job (the first judged at the new difficulty);
//! - SUBMIT_RESPONSE carries the raw codes (36, 37, 31, 32 ...); job-not-found and
//!   duplicates are answered at once, the rest after a random 0 to
//!   [`PoolSimConfig::verdict_delay_max`] (so answers overtake each other), and not at
//!   all when the worker was unregistered meanwhile;
//! - the submit index counts every correctly sized SUBMIT of a registered session;
//!   others are dropped without an answer;
//! - a REGISTER for a live session id, over 100 bytes, or with a session id above
//!   0xFFFE is ignored; names are filtered as `filterWorkerName` does;
//! - after a job on a new block only the newest 4 jobs are kept, the 3 older ones are
//!   stale (37), older ones not found (36); otherwise a job is dropped
//!   [`PoolSimConfig::job_lifetime`] after it was made (36), the newest never;
//! - ntime below the job's mintime is 31, above job ntime + 600 is 32.

use crate::bitcoin::{hex_encode, parse_difficulty, target_for_difficulty};
use crate::exmsg::{self, ExMessage, Submit};
use crate::framing::{Frame, FrameReader};
use crate::job::Job;
use crate::now_us;
use crate::share::{check_submit, Verdict};
use serde_json::{json, Value};
use smol::channel::{self, Receiver, Sender};
use smol::io::AsyncWriteExt;
use smol::net::{TcpListener, TcpStream};
use smol::{LocalExecutor, Task, Timer};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Difficulty 2^-30 written as a decimal: a share in about 4 hashes.
pub const EASY_DIFFICULTY: &str = "0.000000000931322574615478515625";

/// sserver's `kMaxNumLocalJobs_`: short job ids 0..=255, as many jobs kept.
const JOBS_KEPT: usize = 256;
/// sserver's `kNumLocalJobsToKeep_`: jobs kept after a job on a new block.
const JOBS_KEPT_AFTER_NEW_BLOCK: usize = 4;
/// Outbound bytes queued per connection before the simulator gives up on it.
const OUTBOUND_LIMIT: usize = 4 << 20;
/// Longest JSON line or ex-message accepted.
const MAX_FRAME: usize = 64 * 1024;
/// Shares remembered per job for duplicate detection.
const SEEN_PER_JOB: usize = 200_000;
/// Closed connections kept in the stats.
const CLOSED_KEPT: usize = 1024;
/// Methods recorded per connection (the handshake order).
const METHODS_KEPT: usize = 64;
/// Difficulty texts recorded per connection.
const DIFFICULTIES_KEPT: usize = 64;
/// btcpool drops REGISTER_WORKER messages longer than this, or shorter than 8.
const MAX_REGISTER_LEN: usize = 100;
/// sserver's `AGENT_MAX_SESSION_ID`.
const MAX_SESSION_ID: u16 = 0xfffe;
/// sserver's `BtccomAgentPrefix`.
pub const AGENT_PREFIX: &str = "btccom-agent/";
/// A share's ntime may be this far past its job's (StratumServerBitcoin.cc checkShare).
pub const NTIME_AHEAD: u32 = 600;
/// sserver's name for a worker whose name filters down to nothing.
pub const DEFAULT_WORKER_NAME: &str = "__default__";

#[derive(Clone, Debug)]
pub struct PoolSimConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Answered to `agent.get_capabilities`.
    pub capabilities: Vec<String>,
    /// The pool's version mask: shares may flip these bits (whether or not the agent
    /// asked with mining.configure, as sserver checks its own mask only).
    pub version_mask: u32,
    /// Extranonce2 size in the subscribe result (the agent only accepts 8).
    pub extranonce2_size: u32,
    /// Answer `mining.authorize` with error 29.
    pub reject_authorize: bool,
    /// The pool default difficulty, as the JSON number text to send: the connection's
    /// first `mining.set_difficulty`, and every new worker's difficulty.
    pub difficulty: String,
    /// The floor the connection's difficulty decays to; `None`: the default / 256.
    pub min_difficulty: Option<f64>,
    /// From the connection's first job on, its difficulty halves with every job once
    /// this has passed (sserver: 60 s, DiffController.cc).
    pub decay_after: Duration,
    /// Send a new (non-clean) job this often; `None`: only on demand.
    pub job_interval: Option<Duration>,
    /// Hashes in each job's merkle branch.
    pub merkle_branch_len: usize,
    /// A job is forgotten this long after it was made (sserver `max_job_lifetime`).
    pub job_lifetime: Duration,
    /// A job's mintime is its ntime minus this (sserver: a proxied job's mintime is
    /// ntime - 600; from bitcoind it is the block template's mintime).
    pub mintime_behind: u32,
    /// Verdicts that go through sserver's share-checking threads wait a random time
    /// up to this before they are sent.
    pub verdict_delay_max: Duration,
    /// A pool from before late 2018: `agent.get_capabilities` is never answered (and
    /// so share responses never turned on).
    pub older_server: bool,
    /// Shares are judged, and simulated miners mine, at difficulty × unit: with a unit
    /// of 2^-40, the difficulty 2^13 of a MINING_SET_DIFF takes some 2^5 hashes.
    pub difficulty_unit: f64,
}

impl Default for PoolSimConfig {
    fn default() -> Self {
        PoolSimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            capabilities: vec!["verrol".into(), "subres".into()],
            version_mask: 0x1fffe000,
            extranonce2_size: 8,
            reject_authorize: false,
            difficulty: EASY_DIFFICULTY.into(),
            min_difficulty: None,
            decay_after: Duration::from_secs(60),
            job_interval: None,
            merkle_branch_len: 4,
            job_lifetime: Duration::from_secs(300),
            mintime_behind: 600,
            verdict_delay_max: Duration::from_millis(50),
            older_server: false,
            difficulty_unit: 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShareCounts {
    pub valid: u64,
    /// Low difficulty (23), ntime out of range (31, 32), version mask outside the
    /// pool's (33).
    pub invalid: u64,
    /// Of `invalid`: low difficulty (23).
    pub low_difficulty: u64,
    /// Job not found (36) or stale (37).
    pub stale: u64,
    pub duplicate: u64,
    /// Submits for a session not registered on the connection: dropped uncounted.
    pub unregistered: u64,
    /// Ex-messages of the wrong length or unknown cmd: ignored.
    pub malformed: u64,
    /// Ex-messages dropped because the connection is no agent or not authorized.
    pub dropped_ex: u64,
    /// REGISTERs ignored (live session id, too long or short, id above 0xFFFE).
    pub ignored_registers: u64,
    /// Verdicts never sent: the worker was unregistered while its share was checked.
    pub withheld: u64,
}

impl ShareCounts {
    fn add(&mut self, other: &ShareCounts) {
        self.valid += other.valid;
        self.invalid += other.invalid;
        self.low_difficulty += other.low_difficulty;
        self.stale += other.stale;
        self.duplicate += other.duplicate;
        self.unregistered += other.unregistered;
        self.malformed += other.malformed;
        self.dropped_ex += other.dropped_ex;
        self.ignored_registers += other.ignored_registers;
        self.withheld += other.withheld;
    }

    /// Submits the pool counted (each took a submit index).
    pub fn counted(&self) -> u64 {
        self.valid + self.invalid + self.stale + self.duplicate
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// As the pool filtered it (`__default__` when nothing was left).
    pub worker_name: String,
    pub client_agent: String,
}

/// Submits received, by ex-message form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmitForms {
    pub plain: u64,
    pub with_time: u64,
    pub with_ver: u64,
    pub with_time_ver: u64,
}

#[derive(Clone, Debug)]
pub struct ConnStats {
    pub id: u64,
    pub peer: SocketAddr,
    pub open: bool,
    /// The subscribe user agent as the pool filtered it.
    pub client_agent: String,
    /// Ex-messages are read (the user agent starts with `btccom-agent/`).
    pub agent_mode: bool,
    pub sub_account: Option<String>,
    /// JSON methods in arrival order (first 64).
    pub methods: Vec<String>,
    /// Requests the pool never answers (unknown methods, as sserver).
    pub unanswered_methods: u64,
    /// Lines that are not JSON (sserver logs and skips them).
    pub bad_lines: u64,
    /// Capabilities in effect: "verrol" after configure, "subres" once activated.
    pub active_caps: Vec<String>,
    /// Hex, 8 digits.
    pub extranonce1: String,
    pub sessions: BTreeMap<u16, SessionInfo>,
    pub registers: u64,
    pub unregisters: u64,
    pub submit_forms: SubmitForms,
    pub shares: ShareCounts,
    /// Reject status codes sent or counted, by code.
    pub rejects: BTreeMap<u32, u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// read() calls that returned data: low relative to messages means good coalescing.
    pub reads: u64,
    pub responses_sent: u64,
    pub jobs_sent: u64,
    /// Job id -> wall-clock send time (microseconds since the epoch), latest per id.
    pub job_sent_at_us: BTreeMap<String, u64>,
    /// The difficulty text last sent.
    pub difficulty: String,
    /// Every `mining.set_difficulty` text sent, in order (first 64).
    pub difficulties_sent: Vec<String>,
    /// MINING_SET_DIFF exponents sent, by session (the last one).
    pub session_diff_exps: BTreeMap<u16, u8>,
}

impl ConnStats {
    pub fn subres_active(&self) -> bool {
        self.active_caps.iter().any(|c| c == "subres")
    }
}

#[derive(Clone, Debug, Default)]
pub struct PoolStats {
    pub connections: BTreeMap<u64, ConnStats>,
    pub accepted_connections: u64,
    /// Shares over all connections, including closed ones.
    pub totals: ShareCounts,
    /// Valid shares by (sub-account, worker name).
    pub worker_valid: BTreeMap<(String, String), u64>,
    pub jobs_sent: u64,
    /// Every connection-level difficulty value ever sent (as numbers, in pool units).
    pub connection_difficulties: Vec<f64>,
    /// Every difficulty a worker was ever judged at (pool default and MINING_SET_DIFF
    /// values, in pool units).
    pub worker_difficulties: BTreeSet<u64>,
}

impl PoolStats {
    pub fn open_connections(&self) -> impl Iterator<Item = &ConnStats> {
        self.connections.values().filter(|c| c.open)
    }

    pub fn open_count(&self) -> usize {
        self.open_connections().count()
    }

    /// Sessions registered on open connections.
    pub fn registered_sessions(&self) -> usize {
        self.open_connections().map(|c| c.sessions.len()).sum()
    }

    /// Open connections authorized for this sub-account.
    pub fn connections_for<'a>(
        &'a self,
        sub_account: &'a str,
    ) -> impl Iterator<Item = &'a ConnStats> + 'a {
        self.open_connections()
            .filter(move |c| c.sub_account.as_deref() == Some(sub_account))
    }

    pub fn valid_for(&self, sub_account: &str, worker: &str) -> u64 {
        self.worker_valid
            .get(&(sub_account.to_string(), worker.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The worker difficulties as numbers (`worker_difficulties` holds their bits).
    pub fn worker_difficulty_values(&self) -> Vec<f64> {
        self.worker_difficulties
            .iter()
            .map(|b| f64::from_bits(*b))
            .collect()
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        format!(
            "conns={} sessions={} valid={} invalid={} low_diff={} stale={} dup={} unregistered={} malformed={} dropped_ex={} ignored_registers={} withheld={} jobs={}",
            self.open_count(),
            self.registered_sessions(),
            t.valid,
            t.invalid,
            t.low_difficulty,
            t.stale,
            t.duplicate,
            t.unregistered,
            t.malformed,
            t.dropped_ex,
            t.ignored_registers,
            t.withheld,
            self.jobs_sent
        )
    }
}

enum Command {
    NewJob {
        clean: bool,
    },
    SetDifficulty(String),
    SetSessionDifficulty {
        conn: u64,
        diff_exp: u8,
        sessions: Vec<u16>,
    },
    Drop(Option<u64>),
    Refuse,
    Accept,
    SendRaw {
        conn: u64,
        bytes: Vec<u8>,
    },
    Stop,
}

struct Request {
    command: Command,
    done: Sender<io::Result<()>>,
}

/// Handle to a running pool simulator; stops it when dropped.
pub struct PoolSim {
    addr: SocketAddr,
    requests: Sender<Request>,
    stats: Arc<Mutex<PoolStats>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

use crate::lock;

fn check_difficulty_text(text: &str) -> io::Result<f64> {
    let is_json_number = matches!(serde_json::from_str::<Value>(text), Ok(Value::Number(_)));
    match parse_difficulty(text) {
        Some(d) if is_json_number => Ok(d),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("difficulty {text:?} is not a positive JSON number"),
        )),
    }
}

impl PoolSim {
    pub fn start(config: PoolSimConfig) -> io::Result<PoolSim> {
        check_difficulty_text(&config.difficulty)?;
        let unit = config.difficulty_unit;
        let floor = config.min_difficulty.unwrap_or(1.0);
        if !(unit > 0.0 && unit.is_finite() && floor > 0.0 && floor.is_finite()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "difficulty_unit and min_difficulty must be positive",
            ));
        }
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = TcpListener::try_from(listener)?;
        let stats = Arc::new(Mutex::new(PoolStats::default()));
        let (requests, receiver) = channel::bounded(256);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("poolsim".into())
            .spawn(move || {
                let executor = Rc::new(LocalExecutor::new());
                let default_difficulty = parse_difficulty(&config.difficulty).unwrap_or(1.0);
                let pool = Rc::new(Pool {
                    min_difficulty: config.min_difficulty.unwrap_or(default_difficulty / 256.0),
                    default_difficulty,
                    block: Cell::new(0),
                    config,
                    addr,
                    stats: thread_stats,
                    executor: Rc::downgrade(&executor),
                    conns: RefCell::new(BTreeMap::new()),
                    next_conn: Cell::new(1),
                    job_seq: Cell::new(0),
                    accept_task: RefCell::new(None),
                });
                smol::block_on(executor.run(pool.run(listener, receiver)));
                // Dropping the executor drops every task: the listener and all sockets
                // close now, not at process exit.
                drop(executor);
            })?;
        Ok(PoolSim {
            addr,
            requests,
            stats,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> PoolStats {
        lock(&self.stats).clone()
    }

    /// Polls the stats until `condition` holds (true) or `timeout` passes (false).
    /// Blocks the calling thread; from async code use [`PoolSim::wait_until_async`].
    pub fn wait_until(&self, timeout: Duration, condition: impl FnMut(&PoolStats) -> bool) -> bool {
        crate::wait_for(&self.stats, timeout, Duration::from_millis(5), condition)
    }

    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        condition: impl FnMut(&PoolStats) -> bool,
    ) -> bool {
        crate::wait_for_async(&self.stats, timeout, Duration::from_millis(5), condition).await
    }

    fn request(&self, command: Command) -> io::Result<()> {
        let (done, result) = channel::bounded(1);
        let gone = || io::Error::new(io::ErrorKind::NotConnected, "pool simulator stopped");
        self.requests
            .send_blocking(Request { command, done })
            .map_err(|_| gone())?;
        result.recv_blocking().map_err(|_| gone())?
    }

    /// Sends a new job now to every authorized connection.
    pub fn new_job(&self, clean: bool) {
        let _ = self.request(Command::NewJob { clean });
    }

    /// The next connection-level difficulty of every authorized connection: sent with
    /// this exact number text right before the next job (the decay goes on from it).
    /// As on sserver it changes no worker's difficulty: shares are judged per worker.
    pub fn set_difficulty(&self, text: &str) -> io::Result<()> {
        check_difficulty_text(text)?;
        self.request(Command::SetDifficulty(text.to_string()))
    }

    /// Difficulty 2^diff_exp for these sessions on one connection, as sserver's
    /// per-worker controller would change it: MINING_SET_DIFF for the registered ones
    /// whose difficulty changes goes out right before a job, sent now on that
    /// connection; that job and later ones are judged at it, earlier ones are not.
    pub fn set_session_difficulty(
        &self,
        conn: u64,
        diff_exp: u8,
        sessions: Vec<u16>,
    ) -> io::Result<()> {
        self.request(Command::SetSessionDifficulty {
            conn,
            diff_exp,
            sessions,
        })
    }

    pub fn drop_connection(&self, conn: u64) {
        let _ = self.request(Command::Drop(Some(conn)));
    }

    pub fn drop_all(&self) {
        let _ = self.request(Command::Drop(None));
    }

    /// Closes the listening socket: new connections are refused until [`PoolSim::accept_connections`].
    pub fn refuse_connections(&self) {
        let _ = self.request(Command::Refuse);
    }

    /// Listens again on the same address.
    pub fn accept_connections(&self) -> io::Result<()> {
        self.request(Command::Accept)
    }

    /// Writes raw bytes (e.g. garbage) on one connection.
    pub fn send_raw(&self, conn: u64, bytes: Vec<u8>) -> io::Result<()> {
        self.request(Command::SendRaw { conn, bytes })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.request(Command::Stop);
            let _ = thread.join();
        }
    }
}

impl Drop for PoolSim {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct SentJob {
    job: Job,
    /// Made (sserver drops a job `job_lifetime` after that, the newest never).
    made: Instant,
    /// From before the last new block (37).
    stale: bool,
    min_time: u32,
    /// Each registered worker's difficulty for this job (StratumMiner.h `jobDiffs_`).
    diffs: HashMap<u16, f64>,
    /// (session, extranonce2, nonce, ntime, version mask) of shares seen: sserver adds
    /// every share before checking it, so a repeat of an invalid one is a duplicate.
    seen: HashSet<(u16, u32, u32, u32, u32)>,
}

struct Worker {
    info: SessionInfo,
    /// Distinguishes registrations of one session id: a verdict for an earlier one is
    /// never sent (sserver's `alive_` of the miner object).
    generation: u64,
    /// The difficulty of the newest job.
    difficulty: f64,
    /// Set by a MINING_SET_DIFF control, applied with the next job.
    pending: Option<u8>,
}

/// The connection's own difficulty controller (DiffController.cc, which for an agent
/// connection never sees a share).
struct ConnDifficulty {
    /// Last value sent; 0 before the first job.
    sent: f64,
    value: f64,
    started: Option<Instant>,
    /// A value a test asked for, sent with the next job.
    forced: Option<(String, f64)>,
}

struct Conn {
    id: u64,
    stream: TcpStream,
    /// Bytes waiting for the writer task; grows only on demand (10,000 idle
    /// connections must stay cheap) and is bounded by OUTBOUND_LIMIT.
    outbound: RefCell<Vec<u8>>,
    /// Wakes the writer task; closed when the connection ends.
    outbound_ready: Sender<()>,
    extranonce1: [u8; 4],
    subscribed: Cell<bool>,
    agent_mode: Cell<bool>,
    authorized: Cell<bool>,
    subres: Cell<bool>,
    verrol: Cell<bool>,
    difficulty: RefCell<ConnDifficulty>,
    workers: RefCell<HashMap<u16, Worker>>,
    next_generation: Cell<u64>,
    sub_account: RefCell<String>,
    jobs: RefCell<VecDeque<SentJob>>,
    next_job_id: Cell<u8>,
    submit_index: Cell<u16>,
}

struct Pool {
    config: PoolSimConfig,
    default_difficulty: f64,
    min_difficulty: f64,
    addr: SocketAddr,
    stats: Arc<Mutex<PoolStats>>,
    /// Weak: tasks hold the pool, so a strong reference would be a cycle that keeps
    /// the listener open after stop.
    executor: Weak<LocalExecutor<'static>>,
    conns: RefCell<BTreeMap<u64, Rc<Conn>>>,
    next_conn: Cell<u64>,
    job_seq: Cell<u64>,
    /// The current block: jobs on it share prevhash and height.
    block: Cell<u64>,
    accept_task: RefCell<Option<Task<()>>>,
}

fn notification(method: &str, params: Value) -> Vec<u8> {
    format!(
        "{}\n",
        json!({"id": null, "method": method, "params": params})
    )
    .into_bytes()
}

fn response(id: &Value, result: Value, error: Value) -> Vec<u8> {
    format!("{}\n", json!({"id": id, "result": result, "error": error})).into_bytes()
}

/// sserver's Stratum.cc `filterWorkerName`: only `[A-Za-z0-9-._:|^/]` stay.
pub fn filter_worker_name(name: &[u8]) -> String {
    name.iter()
        .filter(|&&c| c.is_ascii_alphanumeric() || b"-._:|^/".contains(&c))
        .map(|&c| c as char)
        .collect()
}

/// The subscribe user agent as sserver keeps it: cut to 30 bytes, then filtered.
pub fn filter_client_agent(agent: &str) -> String {
    let bytes = agent.as_bytes();
    filter_worker_name(&bytes[..bytes.len().min(30)])
}

/// REGISTER_WORKER's body after the session id, read as sserver reads it: the last
/// byte is taken as the terminator whatever it is; the client agent runs to the first
/// NUL, the worker name from there to the next.
fn register_names(frame: &[u8]) -> (String, String) {
    let mut text = frame[6..].to_vec();
    let last = text.len() - 1;
    text[last] = 0;
    let agent_len = text.iter().position(|&b| b == 0).unwrap_or(last);
    let agent = filter_worker_name(&text[..agent_len]);
    let mut worker = String::new();
    if agent_len + 2 < text.len() {
        let rest = &text[agent_len + 1..];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        worker = filter_worker_name(&rest[..end]);
    }
    if worker.is_empty() {
        worker = DEFAULT_WORKER_NAME.to_string();
    }
    (agent, worker)
}

/// What a verdict costs before it can be sent.
enum Answer {
    /// Answered at once (job not found, duplicate).
    Now(u32),
    /// Through the share-checking threads.
    Checked(u32),
}

impl Pool {
    fn spawn(&self, future: impl std::future::Future<Output = ()> + 'static) -> Option<Task<()>> {
        self.executor
            .upgrade()
            .map(|executor| executor.spawn(future))
    }

    fn spawn_detached(&self, future: impl std::future::Future<Output = ()> + 'static) {
        if let Some(task) = self.spawn(future) {
            task.detach();
        }
    }

    fn stats(&self) -> MutexGuard<'_, PoolStats> {
        lock(&self.stats)
    }

    fn conn_stats<R>(&self, id: u64, update: impl FnOnce(&mut ConnStats) -> R) -> Option<R> {
        self.stats().connections.get_mut(&id).map(update)
    }

    async fn run(self: Rc<Self>, listener: TcpListener, requests: Receiver<Request>) {
        self.start_accepting(listener);
        if let Some(interval) = self.config.job_interval {
            let pool = self.clone();
            self.spawn_detached(async move {
                let mut ticks = Timer::interval(interval);
                loop {
                    smol::stream::StreamExt::next(&mut ticks).await;
                    pool.broadcast_job(false).await;
                }
            });
        }
        while let Ok(Request { command, done }) = requests.recv().await {
            let stop = matches!(command, Command::Stop);
            let result = self.execute(command).await;
            if stop {
                for conn in self.conns.borrow().values() {
                    let _ = conn.stream.shutdown(Shutdown::Both);
                }
                let _ = done.try_send(result);
                return;
            }
            let _ = done.try_send(result);
        }
    }

    async fn execute(self: &Rc<Self>, command: Command) -> io::Result<()> {
        match command {
            Command::NewJob { clean } => self.broadcast_job(clean).await,
            Command::SetDifficulty(text) => {
                let value = check_difficulty_text(&text)?;
                let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
                for conn in conns.iter().filter(|c| c.authorized.get()) {
                    conn.difficulty.borrow_mut().forced = Some((text.clone(), value));
                }
            }
            Command::SetSessionDifficulty {
                conn,
                diff_exp,
                sessions,
            } => {
                let conn = self.conn(conn)?;
                for session in &sessions {
                    if let Some(worker) = conn.workers.borrow_mut().get_mut(session) {
                        worker.pending = Some(diff_exp);
                    }
                }
                if conn.authorized.get() {
                    self.send_job(&conn, false);
                }
            }
            Command::Drop(target) => {
                for conn in self.conns.borrow().values() {
                    if target.is_none() || target == Some(conn.id) {
                        let _ = conn.stream.shutdown(Shutdown::Both);
                    }
                }
            }
            Command::Refuse => {
                let task = self.accept_task.borrow_mut().take();
                if let Some(task) = task {
                    // Dropping a task only schedules its cancellation; awaiting
                    // `cancel` guarantees the listener is closed before we answer.
                    task.cancel().await;
                }
            }
            Command::Accept => {
                if self.accept_task.borrow().is_none() {
                    let listener = std::net::TcpListener::bind(self.addr)?;
                    listener.set_nonblocking(true)?;
                    self.start_accepting(TcpListener::try_from(listener)?);
                }
            }
            Command::SendRaw { conn, bytes } => {
                let conn = self.conn(conn)?;
                self.send(&conn, bytes);
            }
            Command::Stop => {}
        }
        Ok(())
    }

    fn conn(&self, id: u64) -> io::Result<Rc<Conn>> {
        self.conns.borrow().get(&id).cloned().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no open connection {id}"))
        })
    }

    fn start_accepting(self: &Rc<Self>, listener: TcpListener) {
        let pool = self.clone();
        let task = self.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => pool.clone().open(stream, peer),
                    // Out of file descriptors and the like: back off, keep listening.
                    Err(_) => {
                        Timer::after(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        *self.accept_task.borrow_mut() = task;
    }

    fn open(self: Rc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let (outbound_ready, writer_wake) = channel::bounded(1);
        // Distinct per connection and recognisable in a packet dump.
        let extranonce1 = (0x5100_0000u32.wrapping_add(id as u32)).to_be_bytes();
        let conn = Rc::new(Conn {
            id,
            stream: stream.clone(),
            outbound: RefCell::new(Vec::new()),
            outbound_ready,
            extranonce1,
            subscribed: Cell::new(false),
            agent_mode: Cell::new(false),
            authorized: Cell::new(false),
            subres: Cell::new(false),
            verrol: Cell::new(false),
            difficulty: RefCell::new(ConnDifficulty {
                sent: 0.0,
                value: self.default_difficulty,
                started: None,
                forced: None,
            }),
            workers: RefCell::new(HashMap::new()),
            next_generation: Cell::new(0),
            sub_account: RefCell::new(String::new()),
            jobs: RefCell::new(VecDeque::new()),
            next_job_id: Cell::new(0),
            submit_index: Cell::new(0),
        });
        {
            let mut stats = self.stats();
            stats.accepted_connections += 1;
            stats.connections.insert(
                id,
                ConnStats {
                    id,
                    peer,
                    open: true,
                    client_agent: String::new(),
                    agent_mode: false,
                    sub_account: None,
                    methods: Vec::new(),
                    unanswered_methods: 0,
                    bad_lines: 0,
                    active_caps: Vec::new(),
                    extranonce1: hex_encode(&extranonce1),
                    sessions: BTreeMap::new(),
                    registers: 0,
                    unregisters: 0,
                    submit_forms: SubmitForms::default(),
                    shares: ShareCounts::default(),
                    rejects: BTreeMap::new(),
                    bytes_in: 0,
                    bytes_out: 0,
                    reads: 0,
                    responses_sent: 0,
                    jobs_sent: 0,
                    job_sent_at_us: BTreeMap::new(),
                    difficulty: String::new(),
                    difficulties_sent: Vec::new(),
                    session_diff_exps: BTreeMap::new(),
                },
            );
            let closed: Vec<u64> = stats
                .connections
                .values()
                .filter(|c| !c.open)
                .map(|c| c.id)
                .collect();
            for old in closed.iter().take(closed.len().saturating_sub(CLOSED_KEPT)) {
                stats.connections.remove(old);
            }
        }
        self.conns.borrow_mut().insert(id, conn.clone());
        let pool = self.clone();
        let writer_stream = stream.clone();
        let writer_conn = conn.clone();
        self.spawn_detached(async move {
            pool.write_loop(&writer_conn, writer_stream, writer_wake)
                .await;
        });
        let pool = self.clone();
        self.spawn_detached(async move {
            pool.read_loop(&conn, stream).await;
            let _ = conn.stream.shutdown(Shutdown::Both);
            conn.outbound_ready.close();
            // The workers die with the connection: verdicts still being checked for
            // them are never sent.
            conn.workers.borrow_mut().clear();
            pool.conns.borrow_mut().remove(&conn.id);
            pool.conn_stats(conn.id, |c| c.open = false);
        });
    }

    /// Writes whatever is queued, all of it in one write (coalescing).
    async fn write_loop(&self, conn: &Conn, mut stream: TcpStream, wake: Receiver<()>) {
        while wake.recv().await.is_ok() {
            let batch = std::mem::take(&mut *conn.outbound.borrow_mut());
            if batch.is_empty() {
                continue;
            }
            if stream.write_all(&batch).await.is_err() {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            self.conn_stats(conn.id, |c| c.bytes_out += batch.len() as u64);
        }
    }

    fn send(&self, conn: &Conn, bytes: Vec<u8>) {
        let mut outbound = conn.outbound.borrow_mut();
        if outbound.len() + bytes.len() > OUTBOUND_LIMIT {
            // The agent stopped reading: a real pool would drop it too.
            let _ = conn.stream.shutdown(Shutdown::Both);
            return;
        }
        outbound.extend_from_slice(&bytes);
        let _ = conn.outbound_ready.try_send(());
    }

    async fn read_loop(self: &Rc<Self>, conn: &Rc<Conn>, mut stream: TcpStream) {
        let mut reader = FrameReader::new(MAX_FRAME, true);
        let (mut reads, mut bytes) = (0, 0);
        loop {
            let frame = reader.read_frame(&mut stream).await;
            self.conn_stats(conn.id, |c| {
                c.reads += reader.reads - reads;
                c.bytes_in += reader.bytes - bytes;
            });
            (reads, bytes) = (reader.reads, reader.bytes);
            match frame {
                Ok(Some(Frame::Line(line))) => self.on_line(conn, &line),
                Ok(Some(Frame::Ex(frame))) => self.on_ex(conn, &frame),
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Handles one JSON line as StratumSession.cc `handleLine` does.
    fn on_line(&self, conn: &Rc<Conn>, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            // sserver logs "decode line fail" and reads on.
            self.conn_stats(conn.id, |c| c.bad_lines += 1);
            return;
        };
        let id = match message.get("id") {
            Some(id @ (Value::Number(_) | Value::String(_))) => id.clone(),
            _ => Value::Null,
        };
        let method = message.get("method").and_then(Value::as_str);
        let params = message.get("params").filter(|p| p.is_array());
        let (Some(method), Some(params)) = (method.filter(|m| !m.is_empty()), params) else {
            if message.get("method").is_none() {
                // A response to something we never asked: sserver answers 27 even
                // to that, but nothing the agent sends looks like it.
                return;
            }
            self.send(
                conn,
                response(&id, Value::Null, json!([27, "Illegal params", null])),
            );
            return;
        };
        self.conn_stats(conn.id, |c| {
            if c.methods.len() < METHODS_KEPT {
                c.methods.push(method.to_string());
            }
        });
        match method {
            "agent.get_capabilities" if !self.config.older_server => {
                self.on_get_capabilities(conn, &id, params)
            }
            "mining.configure" => self.on_configure(conn, &id, params),
            "mining.subscribe" => self.on_subscribe(conn, &id, params),
            "mining.authorize" => self.on_authorize(conn, &id, params),
            // Everything else goes to the session's dispatcher, which on an agent
            // connection (or before authorize) answers nothing at all.
            _ => {
                self.conn_stats(conn.id, |c| c.unanswered_methods += 1);
            }
        }
    }

    fn on_get_capabilities(&self, conn: &Conn, id: &Value, params: &Value) {
        let caps = &self.config.capabilities;
        // sserver's answer has no "error" member.
        self.send(
            conn,
            format!("{}\n", json!({"id": id, "result": {"capabilities": caps}})).into_bytes(),
        );
        let asks_subres = params
            .get(0)
            .and_then(Value::as_array)
            .is_some_and(|wanted| wanted.iter().any(|w| w == "subres"));
        // Before authorize the session has no dispatcher to turn it on.
        let has_subres = caps.iter().any(|c| c == "subres");
        if asks_subres
            && has_subres
            && conn.authorized.get()
            && conn.agent_mode.get()
            && !conn.subres.get()
        {
            conn.subres.set(true);
            self.conn_stats(conn.id, |c| c.active_caps.push("subres".into()));
        }
    }

    fn on_configure(&self, conn: &Conn, id: &Value, params: &Value) {
        let (Some(extensions), Some(options)) = (
            params.get(0).and_then(Value::as_array),
            params.get(1).and_then(Value::as_object),
        ) else {
            self.send(
                conn,
                response(id, Value::Null, json!([27, "Illegal params", null])),
            );
            return;
        };
        let has_verrol = self.config.capabilities.iter().any(|c| c == "verrol");
        let mut result = serde_json::Map::new();
        let mut granted = 0;
        for name in extensions.iter().filter_map(Value::as_str) {
            match name {
                "version-rolling" if has_verrol => {
                    match options
                        .get("version-rolling.mask")
                        .and_then(Value::as_str)
                        .and_then(crate::bitcoin::parse_hex_u32)
                    {
                        Some(asked) => {
                            granted = asked & self.config.version_mask;
                            result.insert(name.into(), json!(true));
                            result.insert(
                                "version-rolling.mask".into(),
                                json!(format!("{granted:08x}")),
                            );
                        }
                        None => {
                            result.insert(name.into(), json!(false));
                        }
                    }
                }
                _ => {
                    result.insert(name.into(), json!(false));
                }
            }
        }
        self.send(conn, response(id, Value::Object(result), Value::Null));
        if granted != 0 {
            self.send(
                conn,
                notification("mining.set_version_mask", json!([format!("{granted:08x}")])),
            );
            if !conn.verrol.replace(true) {
                self.conn_stats(conn.id, |c| c.active_caps.push("verrol".into()));
            }
        }
    }

    fn on_subscribe(&self, conn: &Conn, id: &Value, params: &Value) {
        if conn.subscribed.get() {
            self.send(
                conn,
                response(id, Value::Null, json!([2147483647, "Unknown", null])),
            );
            return;
        }
        conn.subscribed.set(true);
        if let Some(agent) = params.get(0) {
            let text = match agent {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let agent = filter_client_agent(&text);
            let agent_mode = agent.starts_with(AGENT_PREFIX);
            conn.agent_mode.set(agent_mode);
            self.conn_stats(conn.id, |c| {
                c.client_agent = agent;
                c.agent_mode = agent_mode;
            });
        }
        let ex1 = hex_encode(&conn.extranonce1);
        let result = json!([
            [["mining.set_difficulty", ex1], ["mining.notify", ex1]],
            ex1,
            self.config.extranonce2_size
        ]);
        self.send(conn, response(id, result, Value::Null));
    }

    fn on_authorize(&self, conn: &Conn, id: &Value, params: &Value) {
        if !conn.subscribed.get() || conn.authorized.get() {
            self.send(
                conn,
                response(id, Value::Null, json!([25, "Not subscribed", null])),
            );
            return;
        }
        let name = params.get(0).and_then(Value::as_str).unwrap_or("");
        let user = filter_worker_name(name.split('.').next().unwrap_or("").as_bytes());
        if self.config.reject_authorize || user.is_empty() {
            self.send(
                conn,
                response(id, Value::Null, json!([29, "Invalid username", null])),
            );
            return;
        }
        self.send(conn, response(id, json!(true), Value::Null));
        *conn.sub_account.borrow_mut() = user.clone();
        self.conn_stats(conn.id, |c| c.sub_account = Some(user));
        conn.authorized.set(true);
        self.send_job(conn, true);
    }

    async fn broadcast_job(&self, clean: bool) {
        if clean {
            self.block.set(self.block.get() + 1);
        }
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        for conn in conns.iter().filter(|c| c.authorized.get()) {
            self.send_job(conn, clean);
            // Let this connection's writer run now: the embedded send time stays true
            // even with 10,000 connections.
            smol::future::yield_now().await;
        }
    }

    /// The connection difficulty for the next job (DiffController `calcCurDiff` of a
    /// controller without shares: halve once a period passed, never below the floor).
    fn next_conn_difficulty(&self, conn: &Conn, now: Instant) -> Option<(String, f64)> {
        let mut d = conn.difficulty.borrow_mut();
        // The first job only starts the clock.
        let started = d.started;
        d.started = Some(started.unwrap_or(now));
        let mut text = None;
        if let Some((forced, value)) = d.forced.take() {
            d.value = value;
            text = Some(forced);
        } else if started.is_some_and(|t| now.duration_since(t) >= self.config.decay_after)
            && d.value >= self.min_difficulty * 2.0
        {
            d.value /= 2.0;
        }
        if d.value == d.sent {
            return None;
        }
        d.sent = d.value;
        let text = text.unwrap_or_else(|| {
            if d.value == self.default_difficulty {
                self.config.difficulty.clone()
            } else {
                format!("{}", d.value)
            }
        });
        Some((text, d.value))
    }

    /// Sends a job as sserver's `sendMiningNotify` does: the connection difficulty if
    /// it changed, MINING_SET_DIFF for workers whose difficulty changes, the notify,
    /// then the old jobs are pruned.
    fn send_job(&self, conn: &Conn, clean: bool) {
        let now = Instant::now();
        if let Some((text, value)) = self.next_conn_difficulty(conn, now) {
            // Written by hand so the number text reaches the agent exactly as given.
            let line = format!(
                "{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{text}]}}\n"
            );
            self.send(conn, line.into_bytes());
            let mut stats = self.stats();
            stats.connection_difficulties.push(value);
            if let Some(c) = stats.connections.get_mut(&conn.id) {
                if c.difficulties_sent.len() < DIFFICULTIES_KEPT {
                    c.difficulties_sent.push(text.clone());
                }
                c.difficulty = text;
            }
        }
        let mut changes: BTreeMap<u8, Vec<u16>> = BTreeMap::new();
        let mut diffs = HashMap::new();
        for (session, worker) in conn.workers.borrow_mut().iter_mut() {
            if let Some(exp) = worker.pending.take() {
                let value = 2f64.powi(exp as i32);
                if value != worker.difficulty {
                    worker.difficulty = value;
                    changes.entry(exp).or_default().push(*session);
                }
            }
            diffs.insert(*session, worker.difficulty);
        }
        for (exp, mut sessions) in changes {
            sessions.sort_unstable();
            {
                let mut stats = self.stats();
                stats
                    .worker_difficulties
                    .insert(2f64.powi(exp as i32).to_bits());
                if let Some(c) = stats.connections.get_mut(&conn.id) {
                    for s in &sessions {
                        c.session_diff_exps.insert(*s, exp);
                    }
                }
            }
            self.send(
                conn,
                exmsg::encode(&ExMessage::MiningSetDiff {
                    diff_exp: exp,
                    session_ids: sessions,
                }),
            );
        }

        let id = conn.next_job_id.get();
        conn.next_job_id.set(id.wrapping_add(1));
        let seq = self.job_seq.get();
        self.job_seq.set(seq + 1);
        let sent_at = now_us();
        let job = Job::build_on(
            id,
            self.block.get(),
            seq,
            sent_at,
            clean,
            self.config.merkle_branch_len,
        );
        let line = job.notify_line();
        let mut jobs = conn.jobs.borrow_mut();
        if clean {
            // Every older job is stale now; only the newest 4 local jobs stay.
            for old in jobs.iter_mut() {
                old.stale = true;
            }
        }
        jobs.push_back(SentJob {
            min_time: job.work.ntime.saturating_sub(self.config.mintime_behind),
            job: job.clone(),
            made: now,
            stale: false,
            diffs,
            seen: HashSet::new(),
        });
        let keep = if clean {
            JOBS_KEPT_AFTER_NEW_BLOCK
        } else {
            JOBS_KEPT
        };
        while jobs.len() > keep {
            jobs.pop_front();
        }
        drop(jobs);
        self.send(conn, line.into_bytes());
        let mut stats = self.stats();
        stats.jobs_sent += 1;
        if let Some(c) = stats.connections.get_mut(&conn.id) {
            c.jobs_sent += 1;
            c.job_sent_at_us.insert(job.id, sent_at);
        }
    }

    fn on_ex(self: &Rc<Self>, conn: &Rc<Conn>, frame: &[u8]) {
        if !(conn.agent_mode.get() && conn.authorized.get()) {
            // No dispatcher yet, or a miner's: sserver drops every ex-message.
            self.count(conn, |c| c.dropped_ex += 1);
            return;
        }
        match frame[1] {
            exmsg::CMD_REGISTER_WORKER => self.on_register(conn, frame),
            exmsg::CMD_UNREGISTER_WORKER => {
                if frame.len() != 6 {
                    self.count(conn, |c| c.malformed += 1);
                    return;
                }
                let session = u16::from_le_bytes([frame[4], frame[5]]);
                let removed = conn.workers.borrow_mut().remove(&session).is_some();
                if removed {
                    for job in conn.jobs.borrow_mut().iter_mut() {
                        job.diffs.remove(&session);
                    }
                }
                self.conn_stats(conn.id, |c| {
                    c.unregisters += 1;
                    c.sessions.remove(&session);
                });
            }
            exmsg::CMD_SUBMIT_SHARE
            | exmsg::CMD_SUBMIT_SHARE_WITH_TIME
            | exmsg::CMD_SUBMIT_SHARE_WITH_VER
            | exmsg::CMD_SUBMIT_SHARE_WITH_TIME_VER => self.on_submit_frame(conn, frame),
            // Pool-to-agent or unknown commands: ignored.
            _ => self.count(conn, |c| c.malformed += 1),
        }
    }

    fn on_register(&self, conn: &Conn, frame: &[u8]) {
        let session = if frame.len() >= 6 {
            u16::from_le_bytes([frame[4], frame[5]])
        } else {
            0xffff
        };
        let live = conn.workers.borrow().contains_key(&session);
        if frame.len() < 8 || frame.len() > MAX_REGISTER_LEN || session > MAX_SESSION_ID || live {
            self.count(conn, |c| c.ignored_registers += 1);
            return;
        }
        let (client_agent, worker_name) = register_names(frame);
        let info = SessionInfo {
            worker_name,
            client_agent,
        };
        let generation = conn.next_generation.get();
        conn.next_generation.set(generation + 1);
        let default = self.default_difficulty;
        // StratumMiner.h: a new worker's difficulty for every job already sent.
        for job in conn.jobs.borrow_mut().iter_mut() {
            job.diffs.insert(session, default);
        }
        conn.workers.borrow_mut().insert(
            session,
            Worker {
                info: info.clone(),
                generation,
                difficulty: default,
                pending: None,
            },
        );
        let mut stats = self.stats();
        stats.worker_difficulties.insert(default.to_bits());
        if let Some(c) = stats.connections.get_mut(&conn.id) {
            c.registers += 1;
            c.sessions.insert(session, info);
        }
    }

    fn count(&self, conn: &Conn, update: impl Fn(&mut ShareCounts)) {
        let mut stats = self.stats();
        update(&mut stats.totals);
        if let Some(c) = stats.connections.get_mut(&conn.id) {
            update(&mut c.shares);
        }
    }

    fn on_submit_frame(self: &Rc<Self>, conn: &Rc<Conn>, frame: &[u8]) {
        // StratumSessionBitcoin `decodeSessionId`: too short names no session.
        let session = if frame.len() >= 7 {
            u16::from_le_bytes([frame[5], frame[6]])
        } else {
            0xffff
        };
        let worker = conn
            .workers
            .borrow()
            .get(&session)
            .map(|w| (w.info.worker_name.clone(), w.generation));
        let Some((worker_name, generation)) = worker else {
            self.count(conn, |c| c.unregistered += 1);
            return;
        };
        let submit = match exmsg::decode(frame) {
            Ok(ExMessage::Submit(submit)) => submit,
            // A registered session's submit of the wrong size: no index, no answer.
            _ => {
                self.count(conn, |c| c.malformed += 1);
                return;
            }
        };
        let index = conn.submit_index.get();
        conn.submit_index.set(index.wrapping_add(1));
        let answer = self.judge(conn, &submit);
        let status = match answer {
            Answer::Now(s) | Answer::Checked(s) => s,
        };
        let mut counts = ShareCounts::default();
        match status {
            exmsg::STATUS_ACCEPT => counts.valid = 1,
            exmsg::STATUS_JOB_NOT_FOUND | exmsg::STATUS_STALE => counts.stale = 1,
            exmsg::STATUS_DUPLICATE => counts.duplicate = 1,
            exmsg::STATUS_LOW_DIFFICULTY => {
                counts.invalid = 1;
                counts.low_difficulty = 1;
            }
            _ => counts.invalid = 1,
        }
        {
            let mut stats = self.stats();
            stats.totals.add(&counts);
            if counts.valid == 1 {
                let key = (conn.sub_account.borrow().clone(), worker_name);
                *stats.worker_valid.entry(key).or_insert(0) += 1;
            }
            if let Some(c) = stats.connections.get_mut(&conn.id) {
                c.shares.add(&counts);
                let forms = &mut c.submit_forms;
                match submit.cmd {
                    exmsg::CMD_SUBMIT_SHARE => forms.plain += 1,
                    exmsg::CMD_SUBMIT_SHARE_WITH_TIME => forms.with_time += 1,
                    exmsg::CMD_SUBMIT_SHARE_WITH_VER => forms.with_ver += 1,
                    _ => forms.with_time_ver += 1,
                }
                if status != exmsg::STATUS_ACCEPT {
                    *c.rejects.entry(status).or_insert(0) += 1;
                }
            }
        }
        let max = self.config.verdict_delay_max;
        match answer {
            Answer::Now(_) => self.answer(conn, session, generation, index, status),
            Answer::Checked(_) if max.is_zero() => {
                self.answer(conn, session, generation, index, status)
            }
            Answer::Checked(_) => {
                let delay = Duration::from_micros(fastrand::u64(0..=max.as_micros() as u64));
                let pool = self.clone();
                let conn = conn.clone();
                self.spawn_detached(async move {
                    Timer::after(delay).await;
                    pool.answer(&conn, session, generation, index, status);
                });
            }
        }
    }

    /// Sends a verdict unless its worker is gone (sserver's `alive_` expired).
    fn answer(&self, conn: &Conn, session: u16, generation: u64, index: u16, status: u32) {
        if !conn.subres.get() {
            return;
        }
        let alive = conn
            .workers
            .borrow()
            .get(&session)
            .is_some_and(|w| w.generation == generation);
        if !alive {
            self.count(conn, |c| c.withheld += 1);
            return;
        }
        self.send(
            conn,
            exmsg::encode(&ExMessage::SubmitResponse { index, status }),
        );
        self.conn_stats(conn.id, |c| c.responses_sent += 1);
    }

    /// The verdict for a share of a registered session (StratumMinerBitcoin.cc
    /// `handleRequest_Submit`, StratumServerBitcoin.cc `checkShare`).
    fn judge(&self, conn: &Conn, submit: &Submit) -> Answer {
        let job_id = submit.job_id.to_string();
        let now = Instant::now();
        let mut jobs = conn.jobs.borrow_mut();
        let newest = jobs.len().saturating_sub(1);
        let Some((at, sent)) = jobs
            .iter_mut()
            .enumerate()
            .rev()
            .find(|(_, j)| j.job.id == job_id)
        else {
            return Answer::Now(exmsg::STATUS_JOB_NOT_FOUND);
        };
        if at != newest && now.duration_since(sent.made) >= self.config.job_lifetime {
            return Answer::Now(exmsg::STATUS_JOB_NOT_FOUND);
        }
        let Some(&difficulty) = sent.diffs.get(&submit.session_id) else {
            return Answer::Now(exmsg::STATUS_JOB_NOT_FOUND);
        };
        let ntime = match submit.ntime {
            None | Some(0) => sent.job.work.ntime,
            Some(t) => t,
        };
        let mask = submit.version_mask.unwrap_or(0);
        let key = (
            submit.session_id,
            submit.extranonce2,
            submit.nonce,
            ntime,
            mask,
        );
        if sent.seen.contains(&key) {
            return Answer::Now(exmsg::STATUS_DUPLICATE);
        }
        if sent.seen.len() < SEEN_PER_JOB {
            sent.seen.insert(key);
        }
        if sent.stale {
            return Answer::Checked(exmsg::STATUS_STALE);
        }
        if ntime < sent.min_time {
            return Answer::Checked(exmsg::STATUS_TIME_TOO_OLD);
        }
        if ntime > sent.job.work.ntime.saturating_add(NTIME_AHEAD) {
            return Answer::Checked(exmsg::STATUS_TIME_TOO_NEW);
        }
        let target = target_for_difficulty(difficulty * self.config.difficulty_unit);
        let submit = Submit {
            ntime: Some(ntime),
            ..*submit
        };
        let verdict = check_submit(
            &sent.job.work,
            &conn.extranonce1,
            &submit,
            self.config.version_mask,
            &target,
        );
        Answer::Checked(match verdict {
            Verdict::Valid => exmsg::STATUS_ACCEPT,
            other => other.status(),
        })
    }
}
