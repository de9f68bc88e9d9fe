//! The pool simulator: the pool side of the BTCAgent protocol on real loopback TCP,
//! on its own thread and single-threaded smol executor. Tests drive it through the
//! thread-safe [`PoolSim`] handle and read [`PoolStats`] snapshots.

use crate::bitcoin::{hex_encode, parse_difficulty, target_for_difficulty};
use crate::exmsg::{self, ExError, ExMessage, Submit};
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
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Difficulty 2^-30 written as a decimal: a share in about 4 hashes.
pub const EASY_DIFFICULTY: &str = "0.000000000931322574615478515625";

/// Jobs remembered per connection for share checks.
const JOBS_KEPT: usize = 16;
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
/// btcpool drops REGISTER_WORKER messages longer than this.
const MAX_REGISTER_LEN: usize = 100;

#[derive(Clone, Debug)]
pub struct PoolSimConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Answered to `agent.get_capabilities`.
    pub capabilities: Vec<String>,
    /// Sent in `mining.set_version_mask` and allowed in version-rolling shares.
    pub version_mask: u32,
    /// Extranonce2 size in the subscribe result (the agent only accepts 8).
    pub extranonce2_size: u32,
    /// Answer `mining.authorize` with error 29.
    pub reject_authorize: bool,
    /// Initial difficulty, as the JSON number text to send.
    pub difficulty: String,
    /// Send a new (non-clean) job this often; `None`: only on demand.
    pub job_interval: Option<Duration>,
    /// Hashes in each job's merkle branch.
    pub merkle_branch_len: usize,
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
            job_interval: None,
            merkle_branch_len: 4,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShareCounts {
    pub valid: u64,
    /// Low difficulty (23) or a version mask outside the pool's (33).
    pub invalid: u64,
    /// Job not found (21).
    pub stale: u64,
    pub duplicate: u64,
    /// Submits for a session not registered on the connection: dropped uncounted.
    pub unregistered: u64,
    /// Ex-messages of the wrong length or unknown cmd: ignored.
    pub malformed: u64,
}

impl ShareCounts {
    fn add(&mut self, other: &ShareCounts) {
        self.valid += other.valid;
        self.invalid += other.invalid;
        self.stale += other.stale;
        self.duplicate += other.duplicate;
        self.unregistered += other.unregistered;
        self.malformed += other.malformed;
    }

    /// Submits the pool counted (and answered, with subres).
    pub fn counted(&self) -> u64 {
        self.valid + self.invalid + self.stale + self.duplicate
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
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
    pub sub_account: Option<String>,
    /// JSON methods in arrival order (first 64).
    pub methods: Vec<String>,
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

    /// One line for humans.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        format!(
            "conns={} sessions={} valid={} invalid={} stale={} dup={} unregistered={} malformed={} jobs={}",
            self.open_count(),
            self.registered_sessions(),
            t.valid,
            t.invalid,
            t.stale,
            t.duplicate,
            t.unregistered,
            t.malformed,
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
                let pool = Rc::new(Pool {
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

    /// Sends `mining.set_difficulty` with this exact number text to every authorized
    /// connection; shares are then checked against it (the previous difficulty stays
    /// acceptable until the next clean job, to avoid races).
    pub fn set_difficulty(&self, text: &str) -> io::Result<()> {
        check_difficulty_text(text)?;
        self.request(Command::SetDifficulty(text.to_string()))
    }

    /// Sends MINING_SET_DIFF (difficulty 2^diff_exp) for these sessions on one connection.
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

/// Per-session or per-connection difficulty, with the previous one still accepted
/// until the next clean job (a share may be in flight when the difficulty changes).
#[derive(Clone, Copy)]
struct Difficulty {
    now: f64,
    previous: f64,
}

impl Difficulty {
    fn set(&mut self, value: f64) {
        self.previous = self.now;
        self.now = value;
    }

    fn easiest(&self) -> f64 {
        self.now.min(self.previous)
    }
}

struct SentJob {
    job: Job,
    seen: HashSet<(u16, u32, u32, u32, u32)>,
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
    authorized: Cell<bool>,
    subres: Cell<bool>,
    verrol: Cell<bool>,
    difficulty: Cell<Difficulty>,
    session_difficulty: RefCell<HashMap<u16, Difficulty>>,
    sessions: RefCell<HashMap<u16, SessionInfo>>,
    sub_account: RefCell<String>,
    jobs: RefCell<VecDeque<SentJob>>,
    next_job_id: Cell<u8>,
    submit_index: Cell<u16>,
}

struct Pool {
    config: PoolSimConfig,
    addr: SocketAddr,
    stats: Arc<Mutex<PoolStats>>,
    /// Weak: tasks hold the pool, so a strong reference would be a cycle that keeps
    /// the listener open after stop.
    executor: Weak<LocalExecutor<'static>>,
    conns: RefCell<BTreeMap<u64, Rc<Conn>>>,
    next_conn: Cell<u64>,
    job_seq: Cell<u64>,
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
                    self.send_difficulty(conn, &text, value);
                }
            }
            Command::SetSessionDifficulty {
                conn,
                diff_exp,
                sessions,
            } => {
                let conn = self.conn(conn)?;
                let value = 2f64.powi(diff_exp as i32);
                let base = conn.difficulty.get();
                let mut per_session = conn.session_difficulty.borrow_mut();
                for session in &sessions {
                    per_session.entry(*session).or_insert(base).set(value);
                }
                drop(per_session);
                self.send(
                    &conn,
                    exmsg::encode(&ExMessage::MiningSetDiff {
                        diff_exp,
                        session_ids: sessions,
                    }),
                );
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
        let difficulty = parse_difficulty(&self.config.difficulty).unwrap_or(1.0);
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
            authorized: Cell::new(false),
            subres: Cell::new(false),
            verrol: Cell::new(false),
            difficulty: Cell::new(Difficulty {
                now: difficulty,
                previous: difficulty,
            }),
            session_difficulty: RefCell::new(HashMap::new()),
            sessions: RefCell::new(HashMap::new()),
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
                    sub_account: None,
                    methods: Vec::new(),
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
                    difficulty: self.config.difficulty.clone(),
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

    async fn read_loop(&self, conn: &Rc<Conn>, mut stream: TcpStream) {
        let mut reader = FrameReader::new(MAX_FRAME, true);
        let (mut reads, mut bytes) = (0, 0);
        loop {
            let frame = reader.read_frame(&mut stream).await;
            self.conn_stats(conn.id, |c| {
                c.reads += reader.reads - reads;
                c.bytes_in += reader.bytes - bytes;
            });
            (reads, bytes) = (reader.reads, reader.bytes);
            let keep_open = match frame {
                Ok(Some(Frame::Line(line))) => self.on_line(conn, &line),
                Ok(Some(Frame::Ex(frame))) => {
                    self.on_ex(conn, &frame);
                    true
                }
                Ok(None) | Err(_) => false,
            };
            if !keep_open {
                return;
            }
        }
    }

    /// Handles one JSON line; false closes the connection (garbage).
    fn on_line(&self, conn: &Rc<Conn>, line: &str) -> bool {
        if line.trim().is_empty() {
            return true;
        }
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            return false;
        };
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            // A response to something we never asked: ignore.
            return true;
        };
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        self.conn_stats(conn.id, |c| {
            if c.methods.len() < METHODS_KEPT {
                c.methods.push(method.to_string());
            }
        });
        let caps = &self.config.capabilities;
        let has_cap = |name: &str| caps.iter().any(|c| c == name);
        match method {
            "agent.get_capabilities" => {
                self.send(
                    conn,
                    response(&id, json!({ "capabilities": caps }), Value::Null),
                );
                let asks_subres = params
                    .get(0)
                    .and_then(Value::as_array)
                    .is_some_and(|wanted| wanted.iter().any(|w| w == "subres"));
                if asks_subres && has_cap("subres") && conn.authorized.get() && !conn.subres.get() {
                    conn.subres.set(true);
                    self.conn_stats(conn.id, |c| c.active_caps.push("subres".into()));
                }
            }
            "mining.configure" => {
                if has_cap("verrol") {
                    let mask = format!("{:08x}", self.config.version_mask);
                    self.send(
                        conn,
                        response(
                            &id,
                            json!({"version-rolling": true, "version-rolling.mask": mask}),
                            Value::Null,
                        ),
                    );
                    self.send(conn, notification("mining.set_version_mask", json!([mask])));
                    if !conn.verrol.get() {
                        conn.verrol.set(true);
                        self.conn_stats(conn.id, |c| c.active_caps.push("verrol".into()));
                    }
                } else {
                    self.send(
                        conn,
                        response(&id, json!({"version-rolling": false}), Value::Null),
                    );
                }
            }
            "mining.subscribe" => {
                let ex1 = hex_encode(&conn.extranonce1);
                let result = json!([
                    [["mining.set_difficulty", ex1], ["mining.notify", ex1]],
                    ex1,
                    self.config.extranonce2_size
                ]);
                self.send(conn, response(&id, result, Value::Null));
                conn.subscribed.set(true);
            }
            "mining.authorize" => {
                let name = params.get(0).and_then(Value::as_str).unwrap_or("");
                if !conn.subscribed.get() {
                    self.send(
                        conn,
                        response(&id, Value::Null, json!([25, "Not subscribed", null])),
                    );
                } else if self.config.reject_authorize || name.is_empty() {
                    self.send(
                        conn,
                        response(&id, Value::Null, json!([29, "Invalid username", null])),
                    );
                } else {
                    self.send(conn, response(&id, json!(true), Value::Null));
                    *conn.sub_account.borrow_mut() = name.to_string();
                    self.conn_stats(conn.id, |c| c.sub_account = Some(name.to_string()));
                    if !conn.authorized.replace(true) {
                        let text = self.config.difficulty.clone();
                        let value = conn.difficulty.get().now;
                        self.send_difficulty(conn, &text, value);
                        self.send_job(conn, true);
                    }
                }
            }
            _ => {
                self.send(
                    conn,
                    response(&id, Value::Null, json!([26, "Illegal method", null])),
                );
            }
        }
        true
    }

    fn send_difficulty(&self, conn: &Conn, text: &str, value: f64) {
        let mut difficulty = conn.difficulty.get();
        difficulty.set(value);
        conn.difficulty.set(difficulty);
        conn.session_difficulty.borrow_mut().clear();
        // Written by hand so the number text reaches the agent exactly as given.
        let line =
            format!("{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{text}]}}\n");
        self.send(conn, line.into_bytes());
        self.conn_stats(conn.id, |c| c.difficulty = text.to_string());
    }

    async fn broadcast_job(&self, clean: bool) {
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        for conn in conns.iter().filter(|c| c.authorized.get()) {
            self.send_job(conn, clean);
            // Let this connection's writer run now: the embedded send time stays true
            // even with 10,000 connections.
            smol::future::yield_now().await;
        }
    }

    fn send_job(&self, conn: &Conn, clean: bool) {
        let id = conn.next_job_id.get();
        conn.next_job_id.set(id.wrapping_add(1));
        let seq = self.job_seq.get();
        self.job_seq.set(seq + 1);
        let sent_at = now_us();
        let job = Job::build(id, seq, sent_at, clean, self.config.merkle_branch_len);
        let line = job.notify_line();
        if clean {
            // Shares for older work are stale now; old difficulties no longer apply.
            let mut d = conn.difficulty.get();
            d.previous = d.now;
            conn.difficulty.set(d);
            for d in conn.session_difficulty.borrow_mut().values_mut() {
                d.previous = d.now;
            }
            conn.jobs.borrow_mut().clear();
        }
        let mut jobs = conn.jobs.borrow_mut();
        if jobs.len() >= JOBS_KEPT {
            jobs.pop_front();
        }
        jobs.push_back(SentJob {
            job: job.clone(),
            seen: HashSet::new(),
        });
        drop(jobs);
        self.send(conn, line.into_bytes());
        let mut stats = self.stats();
        stats.jobs_sent += 1;
        if let Some(c) = stats.connections.get_mut(&conn.id) {
            c.jobs_sent += 1;
            c.job_sent_at_us.insert(job.id, sent_at);
        }
    }

    fn on_ex(&self, conn: &Conn, frame: &[u8]) {
        let message = match exmsg::decode(frame) {
            Ok(message) => message,
            Err(
                ExError::WrongLength { .. }
                | ExError::UnknownCmd(_)
                | ExError::Unterminated
                | ExError::BadLength(_),
            ) => {
                self.count_malformed(conn);
                return;
            }
        };
        match message {
            ExMessage::RegisterWorker {
                session_id,
                client_agent,
                worker_name,
            } => {
                if frame.len() > MAX_REGISTER_LEN || session_id > 0xfffe {
                    self.count_malformed(conn);
                    return;
                }
                let info = SessionInfo {
                    worker_name,
                    client_agent,
                };
                conn.sessions.borrow_mut().insert(session_id, info.clone());
                self.conn_stats(conn.id, |c| {
                    c.registers += 1;
                    c.sessions.insert(session_id, info);
                });
            }
            ExMessage::UnregisterWorker { session_id } => {
                conn.sessions.borrow_mut().remove(&session_id);
                conn.session_difficulty.borrow_mut().remove(&session_id);
                self.conn_stats(conn.id, |c| {
                    c.unregisters += 1;
                    c.sessions.remove(&session_id);
                });
            }
            ExMessage::Submit(submit) => self.on_submit(conn, &submit),
            // Pool-to-agent messages have no business arriving here.
            ExMessage::MiningSetDiff { .. } | ExMessage::SubmitResponse { .. } => {
                self.count_malformed(conn)
            }
        }
    }

    fn count_malformed(&self, conn: &Conn) {
        let mut stats = self.stats();
        stats.totals.malformed += 1;
        if let Some(c) = stats.connections.get_mut(&conn.id) {
            c.shares.malformed += 1;
        }
    }

    fn on_submit(&self, conn: &Conn, submit: &Submit) {
        let worker = conn
            .sessions
            .borrow()
            .get(&submit.session_id)
            .map(|s| s.worker_name.clone());
        let mut counts = ShareCounts::default();
        let status = match worker {
            None => {
                counts.unregistered = 1;
                None
            }
            Some(_) => Some(self.judge(conn, submit)),
        };
        match status {
            Some(exmsg::STATUS_ACCEPT) => counts.valid = 1,
            Some(exmsg::STATUS_JOB_NOT_FOUND) => counts.stale = 1,
            Some(exmsg::STATUS_DUPLICATE) => counts.duplicate = 1,
            Some(_) => counts.invalid = 1,
            None => {}
        }
        if let Some(status) = status {
            if conn.subres.get() {
                let index = conn.submit_index.get();
                conn.submit_index.set(index.wrapping_add(1));
                self.send(
                    conn,
                    exmsg::encode(&ExMessage::SubmitResponse { index, status }),
                );
            }
        }
        let mut stats = self.stats();
        stats.totals.add(&counts);
        if counts.valid == 1 {
            let key = (
                conn.sub_account.borrow().clone(),
                worker.clone().unwrap_or_default(),
            );
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
            if let Some(code) = status.filter(|s| *s != exmsg::STATUS_ACCEPT) {
                *c.rejects.entry(code).or_insert(0) += 1;
            }
            if status.is_some() && conn.subres.get() {
                c.responses_sent += 1;
            }
        }
    }

    /// The status for a share of a registered session.
    fn judge(&self, conn: &Conn, submit: &Submit) -> u32 {
        let job_id = submit.job_id.to_string();
        let mut jobs = conn.jobs.borrow_mut();
        let Some(sent) = jobs.iter_mut().find(|j| j.job.id == job_id) else {
            return exmsg::STATUS_JOB_NOT_FOUND;
        };
        let key = (
            submit.session_id,
            submit.extranonce2,
            submit.nonce,
            submit.ntime.unwrap_or(0),
            submit.version_mask.unwrap_or(0),
        );
        if sent.seen.contains(&key) {
            return exmsg::STATUS_DUPLICATE;
        }
        let difficulty = conn
            .session_difficulty
            .borrow()
            .get(&submit.session_id)
            .copied()
            .unwrap_or(conn.difficulty.get());
        let allowed_mask = if conn.verrol.get() {
            self.config.version_mask
        } else {
            0
        };
        let target = target_for_difficulty(difficulty.easiest());
        let verdict = check_submit(
            &sent.job.work,
            &conn.extranonce1,
            submit,
            allowed_mask,
            &target,
        );
        if verdict == Verdict::Valid && sent.seen.len() < SEEN_PER_JOB {
            sent.seen.insert(key);
        }
        verdict.status()
    }
}
