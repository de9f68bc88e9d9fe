//! A plain Stratum V1 pool on real loopback TCP, as btcagent meets one upstream when a
//! pool speaks no agent protocol: its own extranonce1 per connection (4 bytes) and
//! extranonce2 size (8 by default, as ckpool), `mining.configure` version rolling with
//! its own mask, its own vardiff per connection, and every share checked by
//! rebuilding the coinbase and header and hashing them. Verdicts are given as real
//! pools give them; [`StratumPoolConfig::ckpool`] models ckpool's quirks (read from
//! ckolivas/ckpool src/stratifier.c): no reply at all to methods it does not know,
//! its own mask answered to `mining.configure` whatever was asked, difficulty and a
//! job sent right after `mining.subscribe`, and never a `mining.set_extranonce`
//! unless a test asks for one.
//!
//! Runs on its own thread and single-threaded executor; tests drive it through
//! [`StratumPool`] and wait on [`StratumPoolStats`] snapshots.

use crate::bitcoin::{hash_meets_target, hex_decode, hex_encode, target_for_difficulty};
use crate::framing::{Frame, FrameReader};
use crate::job::Job;
use crate::{lock, now_us};
use serde_json::{json, Value};
use smol::channel::{self, Receiver, Sender};
use smol::io::AsyncWriteExt;
use smol::net::{TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Jobs remembered per connection for share checks (older ones are stale).
const JOBS_KEPT: usize = 16;
/// Shares remembered per job for duplicate detection.
const SEEN_PER_JOB: usize = 100_000;
/// Longest line accepted from a client.
const MAX_LINE: usize = 16 * 1024;
/// Outbound bytes queued per connection before the pool drops it.
const OUTBOUND_LIMIT: usize = 4 << 20;
/// Methods and difficulties recorded per connection.
const HISTORY_KEPT: usize = 64;
/// Closed connections kept in the stats.
const CLOSED_KEPT: usize = 1024;
/// ckpool's window for a share's ntime past its job's (stratifier.c parse_submit).
const NTIME_ROLL: u32 = 7000;

/// How `mining.configure` is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigureAnswer {
    /// BIP 310: the pool's mask ANDed with the one asked for.
    Intersection,
    /// ckpool: the pool's own mask, whatever was asked.
    PoolMask,
    /// No version rolling: `{"version-rolling": false}`.
    Refuse,
}

/// How rejections are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerdictStyle {
    /// `{"result": null, "error": [code, "reason", null]}`: the Stratum way, ckpool
    /// since 2025 (`sshare_process_sv1`).
    Codes,
    /// ckpool before 2025, as a run against it (bb7b0aeb) answered: a judged share
    /// `{"reject-reason": "Above target", "result": false, "error": null}`, a
    /// malformed one `{"result": false, "error": "Worker mismatch"}`.
    RejectReason,
}

/// The pool's own vardiff per connection (ckpool-like: every `retarget_shares` valid
/// shares or `retarget_after`, aim at `share_interval` seconds per share).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolVardiff {
    pub share_interval: f64,
    pub retarget_shares: u32,
    pub retarget_after: Duration,
    pub min: f64,
    pub max: f64,
}

#[derive(Clone, Debug)]
pub struct StratumPoolConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Extranonce2 size in the subscribe result.
    pub extranonce2_size: usize,
    /// The pool's version-rolling mask.
    pub version_mask: u32,
    pub configure: ConfigureAnswer,
    /// Difficulty a connection starts at, as the JSON number text sent.
    pub start_difficulty: String,
    /// `None`: the difficulty changes only when a test sets it.
    pub vardiff: Option<PoolVardiff>,
    /// Send a new (non-clean) job this often; `None`: only on demand.
    pub job_interval: Option<Duration>,
    pub merkle_branch_len: usize,
    /// Send difficulty and a job right after `mining.subscribe`, before authorize (ckpool).
    pub notify_on_subscribe: bool,
    /// No reply at all to methods the pool does not know (ckpool); else error 20.
    pub silent_on_unknown_methods: bool,
    /// Answer `mining.extranonce.subscribe` with `true`; when false it is an unknown
    /// method (ckpool).
    pub extranonce_subscribe: bool,
    pub verdicts: VerdictStyle,
    /// ckpool's gating (stratifier.c parse_method): before `mining.subscribe`, any
    /// method but subscribe, authorize and configure closes the connection; before
    /// authorize, the others (submits too) are ignored without a reply.
    pub ckpool_gating: bool,
    /// ckpool "fixes" an extranonce2 of the wrong length (cut or zero-padded to size)
    /// and judges the share on that, instead of refusing it.
    pub fix_extranonce2_length: bool,
    /// Answer `mining.authorize` with error 24.
    pub reject_authorize: bool,
}

impl Default for StratumPoolConfig {
    fn default() -> Self {
        StratumPoolConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            extranonce2_size: 8,
            version_mask: 0x1fff_e000,
            configure: ConfigureAnswer::Intersection,
            start_difficulty: crate::pool::EASY_DIFFICULTY.into(),
            vardiff: None,
            job_interval: None,
            merkle_branch_len: 4,
            notify_on_subscribe: false,
            silent_on_unknown_methods: false,
            extranonce_subscribe: true,
            verdicts: VerdictStyle::Codes,
            ckpool_gating: false,
            fix_extranonce2_length: false,
            reject_authorize: false,
        }
    }
}

impl StratumPoolConfig {
    /// ckpool's behaviour (ckolivas/ckpool src/stratifier.c, commit 050cc55): 4-byte
    /// extranonce1, 8-byte extranonce2, its own mask for `mining.configure`, diff and
    /// job right after subscribe, silence for unknown methods (so for
    /// `mining.extranonce.subscribe` too), its gating of methods before subscribe and
    /// authorize, wrong-length extranonce2s cut or padded, `[code, "msg", null]`
    /// rejections.
    pub fn ckpool() -> StratumPoolConfig {
        StratumPoolConfig {
            configure: ConfigureAnswer::PoolMask,
            notify_on_subscribe: true,
            silent_on_unknown_methods: true,
            extranonce_subscribe: false,
            ckpool_gating: true,
            fix_extranonce2_length: true,
            ..StratumPoolConfig::default()
        }
    }

    /// ckpool as built from ckolivas' tree at bb7b0aeb (2024-11-28) answered in a run
    /// against it: [`StratumPoolConfig::ckpool`] with [`VerdictStyle::RejectReason`].
    pub fn ckpool_2024() -> StratumPoolConfig {
        StratumPoolConfig {
            verdicts: VerdictStyle::RejectReason,
            ..StratumPoolConfig::ckpool()
        }
    }
}

/// Shares by verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StratumShareCounts {
    pub valid: u64,
    /// Above the share target (23).
    pub invalid: u64,
    /// Job unknown or older than the last clean job (21).
    pub stale: u64,
    pub duplicate: u64,
    /// Malformed fields, bad extranonce2 size, ntime out of range, version bits
    /// outside the mask, wrong or unauthorized worker (20, 24).
    pub refused: u64,
}

impl StratumShareCounts {
    fn add(&mut self, other: &StratumShareCounts) {
        self.valid += other.valid;
        self.invalid += other.invalid;
        self.stale += other.stale;
        self.duplicate += other.duplicate;
        self.refused += other.refused;
    }

    pub fn total(&self) -> u64 {
        self.valid + self.invalid + self.stale + self.duplicate + self.refused
    }
}

#[derive(Clone, Debug)]
pub struct StratumConnStats {
    pub id: u64,
    pub peer: SocketAddr,
    pub open: bool,
    /// The authorized user name.
    pub user: Option<String>,
    pub password: Option<String>,
    pub user_agent: Option<String>,
    /// Methods in arrival order (first 64).
    pub methods: Vec<String>,
    /// Hex.
    pub extranonce1: String,
    pub extranonce2_size: usize,
    pub extranonce_subscribed: bool,
    /// The mask granted by `mining.configure` (or set since), `None` without rolling.
    pub version_mask: Option<u32>,
    /// Every difficulty sent, in order (first 64).
    pub difficulties: Vec<f64>,
    /// Every `mining.suggest_difficulty` received, honoured or not (first 64).
    pub suggestions: Vec<f64>,
    pub shares: StratumShareCounts,
    /// Sum of the difficulty valid shares were credited at.
    pub credited_difficulty: f64,
    /// Rejections by reason text.
    pub rejects: BTreeMap<String, u64>,
    pub jobs_sent: u64,
    pub responses_sent: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// read(2) calls that returned data: the segments the client's writes arrived in.
    pub reads: u64,
}

#[derive(Clone, Debug, Default)]
pub struct StratumPoolStats {
    pub connections: BTreeMap<u64, StratumConnStats>,
    pub accepted_connections: u64,
    /// Over all connections, closed ones included.
    pub totals: StratumShareCounts,
    /// By the worker name a submit carried.
    pub by_worker: BTreeMap<String, StratumShareCounts>,
    pub jobs_sent: u64,
}

impl StratumPoolStats {
    pub fn open_connections(&self) -> impl Iterator<Item = &StratumConnStats> {
        self.connections.values().filter(|c| c.open)
    }

    pub fn open_count(&self) -> usize {
        self.open_connections().count()
    }

    pub fn worker(&self, name: &str) -> StratumShareCounts {
        self.by_worker.get(name).copied().unwrap_or_default()
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        format!(
            "conns={} valid={} invalid={} stale={} dup={} refused={} jobs={}",
            self.open_count(),
            t.valid,
            t.invalid,
            t.stale,
            t.duplicate,
            t.refused,
            self.jobs_sent
        )
    }
}

enum Command {
    NewJob { clean: bool },
    SetDifficulty { conn: Option<u64>, text: String },
    SetVersionMask { conn: u64, mask: u32 },
    SetExtranonce { conn: u64, size: Option<usize> },
    Reconnect { conn: u64, params: Value },
    Drop(Option<u64>),
    SendRaw { conn: u64, bytes: Vec<u8> },
    Stop,
}

struct Request {
    command: Command,
    done: Sender<io::Result<()>>,
}

/// Handle to a running plain-Stratum pool; stops it when dropped.
pub struct StratumPool {
    addr: SocketAddr,
    requests: Sender<Request>,
    stats: Arc<Mutex<StratumPoolStats>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn difficulty_of(text: &str) -> io::Result<f64> {
    let is_number = matches!(serde_json::from_str::<Value>(text), Ok(Value::Number(_)));
    match crate::bitcoin::parse_difficulty(text) {
        Some(d) if is_number => Ok(d),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("difficulty {text:?} is not a positive JSON number"),
        )),
    }
}

impl StratumPool {
    pub fn start(config: StratumPoolConfig) -> io::Result<StratumPool> {
        difficulty_of(&config.start_difficulty)?;
        if !(1..=32).contains(&config.extranonce2_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "extranonce2_size must be 1..=32",
            ));
        }
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = TcpListener::try_from(listener)?;
        let stats = Arc::new(Mutex::new(StratumPoolStats::default()));
        let (requests, receiver) = channel::bounded(256);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("stratumpool".into())
            .spawn(move || {
                let executor = Rc::new(LocalExecutor::new());
                let pool = Rc::new(Pool {
                    config,
                    stats: thread_stats,
                    executor: Rc::downgrade(&executor),
                    conns: RefCell::new(BTreeMap::new()),
                    next_conn: Cell::new(1),
                    job_seq: Cell::new(0),
                    extranonce_seq: Cell::new(0),
                });
                smol::block_on(executor.run(pool.run(listener, receiver)));
                drop(executor);
            })?;
        Ok(StratumPool {
            addr,
            requests,
            stats,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> StratumPoolStats {
        lock(&self.stats).clone()
    }

    /// Polls the stats until `condition` holds (true) or `timeout` passes (false).
    pub fn wait_until(
        &self,
        timeout: Duration,
        condition: impl FnMut(&StratumPoolStats) -> bool,
    ) -> bool {
        crate::wait_for(&self.stats, timeout, Duration::from_millis(5), condition)
    }

    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        condition: impl FnMut(&StratumPoolStats) -> bool,
    ) -> bool {
        crate::wait_for_async(&self.stats, timeout, Duration::from_millis(5), condition).await
    }

    fn request(&self, command: Command) -> io::Result<()> {
        let (done, result) = channel::bounded(1);
        let gone = || io::Error::new(io::ErrorKind::NotConnected, "stratum pool stopped");
        self.requests
            .send_blocking(Request { command, done })
            .map_err(|_| gone())?;
        result.recv_blocking().map_err(|_| gone())?
    }

    /// A new job now to every authorized connection.
    pub fn new_job(&self, clean: bool) {
        let _ = self.request(Command::NewJob { clean });
    }

    /// `mining.set_difficulty` with this number text, to one connection or all
    /// authorized ones. It applies to jobs sent after it; shares on earlier jobs are
    /// judged at the easier of the two, as ckpool does.
    pub fn set_difficulty(&self, conn: Option<u64>, text: &str) -> io::Result<()> {
        difficulty_of(text)?;
        self.request(Command::SetDifficulty {
            conn,
            text: text.to_string(),
        })
    }

    /// `mining.set_version_mask` on one connection; shares are checked against it at once.
    pub fn set_version_mask(&self, conn: u64, mask: u32) -> io::Result<()> {
        self.request(Command::SetVersionMask { conn, mask })
    }

    /// A new extranonce1 for one connection (and a new extranonce2 size if given),
    /// sent as `mining.set_extranonce`, then a clean job that uses it. Refused for a
    /// connection that did not send `mining.extranonce.subscribe`.
    pub fn set_extranonce(&self, conn: u64, size: Option<usize>) -> io::Result<()> {
        self.request(Command::SetExtranonce { conn, size })
    }

    /// `client.reconnect` with these params (`[]`, `["host", port, wait]`, ...).
    pub fn reconnect(&self, conn: u64, params: Value) -> io::Result<()> {
        self.request(Command::Reconnect { conn, params })
    }

    pub fn drop_connection(&self, conn: u64) {
        let _ = self.request(Command::Drop(Some(conn)));
    }

    pub fn drop_all(&self) {
        let _ = self.request(Command::Drop(None));
    }

    /// Writes raw bytes on one connection.
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

impl Drop for StratumPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct SentJob {
    job: Job,
    /// The extranonce1 the job was sent with (a later set_extranonce does not change it).
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    /// The difficulty in force when the job was sent.
    difficulty: f64,
    seen: HashSet<(Vec<u8>, u32, u32, u32)>,
}

/// The connection's vardiff window.
struct Window {
    started: Instant,
    shares: u32,
    work: f64,
}

struct Conn {
    id: u64,
    stream: TcpStream,
    outbound: RefCell<Vec<u8>>,
    outbound_ready: Sender<()>,
    extranonce1: RefCell<Vec<u8>>,
    extranonce2_size: Cell<usize>,
    subscribed: Cell<bool>,
    authorized: Cell<bool>,
    extranonce_subscribed: Cell<bool>,
    user: RefCell<String>,
    /// The granted mask, `None` without version rolling.
    version_mask: Cell<Option<u32>>,
    difficulty: Cell<f64>,
    /// The last suggested difficulty honoured (0: none): the vardiff's floor.
    suggested: Cell<f64>,
    window: RefCell<Window>,
    jobs: RefCell<VecDeque<SentJob>>,
    /// Ids of jobs voided by a clean job (bounded), answered "Stale".
    stale_ids: RefCell<VecDeque<String>>,
    next_job_id: Cell<u64>,
}

struct Pool {
    config: StratumPoolConfig,
    stats: Arc<Mutex<StratumPoolStats>>,
    executor: Weak<LocalExecutor<'static>>,
    conns: RefCell<BTreeMap<u64, Rc<Conn>>>,
    next_conn: Cell<u64>,
    job_seq: Cell<u64>,
    /// Extranonce1s handed out by set_extranonce, to keep them distinct.
    extranonce_seq: Cell<u64>,
}

fn line(value: Value) -> Vec<u8> {
    format!("{value}\n").into_bytes()
}

fn notification(method: &str, params: Value) -> Vec<u8> {
    line(json!({"id": null, "method": method, "params": params}))
}

/// What happened to one share.
struct Judgement {
    counts: StratumShareCounts,
    /// `None`: accepted; else the Stratum code and reason.
    error: Option<(i64, &'static str)>,
    credited: f64,
}

impl Judgement {
    fn refuse(code: i64, reason: &'static str) -> Judgement {
        let mut counts = StratumShareCounts::default();
        match code {
            21 => counts.stale = 1,
            22 => counts.duplicate = 1,
            23 => counts.invalid = 1,
            _ => counts.refused = 1,
        }
        Judgement {
            counts,
            error: Some((code, reason)),
            credited: 0.0,
        }
    }
}

fn hex_field(params: &[Value], i: usize) -> Option<&str> {
    params
        .get(i)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn u32_field(params: &[Value], i: usize) -> Option<u32> {
    let text = hex_field(params, i).filter(|s| s.len() == 8)?;
    u32::from_str_radix(text, 16).ok()
}

impl Pool {
    fn spawn(&self, future: impl std::future::Future<Output = ()> + 'static) {
        if let Some(executor) = self.executor.upgrade() {
            executor.spawn(future).detach();
        }
    }

    fn conn_stats<R>(&self, id: u64, update: impl FnOnce(&mut StratumConnStats) -> R) -> Option<R> {
        lock(&self.stats).connections.get_mut(&id).map(update)
    }

    async fn run(self: Rc<Self>, listener: TcpListener, requests: Receiver<Request>) {
        let pool = self.clone();
        self.spawn(async move {
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
        if let Some(interval) = self.config.job_interval {
            let pool = self.clone();
            self.spawn(async move {
                loop {
                    Timer::after(interval).await;
                    pool.broadcast_job(false);
                }
            });
        }
        if self.config.vardiff.is_some() {
            let pool = self.clone();
            self.spawn(async move {
                loop {
                    Timer::after(Duration::from_millis(200)).await;
                    pool.vardiff_tick();
                }
            });
        }
        while let Ok(Request { command, done }) = requests.recv().await {
            let stop = matches!(command, Command::Stop);
            let result = self.execute(command);
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

    fn conn(&self, id: u64) -> io::Result<Rc<Conn>> {
        self.conns.borrow().get(&id).cloned().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no open connection {id}"))
        })
    }

    fn execute(&self, command: Command) -> io::Result<()> {
        match command {
            Command::NewJob { clean } => self.broadcast_job(clean),
            Command::SetDifficulty { conn, text } => {
                let value = difficulty_of(&text)?;
                let targets: Vec<Rc<Conn>> = match conn {
                    Some(id) => vec![self.conn(id)?],
                    None => self
                        .conns
                        .borrow()
                        .values()
                        .filter(|c| c.authorized.get())
                        .cloned()
                        .collect(),
                };
                for c in targets {
                    self.send_difficulty(&c, &text, value);
                }
            }
            Command::SetVersionMask { conn, mask } => {
                let conn = self.conn(conn)?;
                conn.version_mask.set(Some(mask));
                self.send(
                    &conn,
                    notification("mining.set_version_mask", json!([format!("{mask:08x}")])),
                );
                self.conn_stats(conn.id, |c| c.version_mask = Some(mask));
            }
            Command::SetExtranonce { conn, size } => {
                let conn = self.conn(conn)?;
                if !conn.extranonce_subscribed.get() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "connection {} did not send mining.extranonce.subscribe",
                            conn.id
                        ),
                    ));
                }
                let size = size.unwrap_or(conn.extranonce2_size.get());
                let seq = self.extranonce_seq.get() + 1;
                self.extranonce_seq.set(seq);
                let ex1 = extranonce1_for(0x0080_0000 | seq << 12 | conn.id);
                *conn.extranonce1.borrow_mut() = ex1.clone();
                conn.extranonce2_size.set(size);
                self.send(
                    &conn,
                    notification("mining.set_extranonce", json!([hex_encode(&ex1), size])),
                );
                self.conn_stats(conn.id, |c| {
                    c.extranonce1 = hex_encode(&ex1);
                    c.extranonce2_size = size;
                });
                self.send_job(&conn, true);
            }
            Command::Reconnect { conn, params } => {
                let conn = self.conn(conn)?;
                self.send(&conn, notification("client.reconnect", params));
            }
            Command::Drop(target) => {
                for conn in self.conns.borrow().values() {
                    if target.is_none() || target == Some(conn.id) {
                        let _ = conn.stream.shutdown(Shutdown::Both);
                    }
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

    fn open(self: Rc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let difficulty = difficulty_of(&self.config.start_difficulty).unwrap_or(1.0);
        let extranonce1 = extranonce1_for(id);
        let (outbound_ready, writer_wake) = channel::bounded(1);
        let conn = Rc::new(Conn {
            id,
            stream: stream.clone(),
            outbound: RefCell::new(Vec::new()),
            outbound_ready,
            extranonce1: RefCell::new(extranonce1.clone()),
            extranonce2_size: Cell::new(self.config.extranonce2_size),
            subscribed: Cell::new(false),
            authorized: Cell::new(false),
            extranonce_subscribed: Cell::new(false),
            user: RefCell::new(String::new()),
            version_mask: Cell::new(None),
            difficulty: Cell::new(difficulty),
            suggested: Cell::new(0.0),
            window: RefCell::new(Window {
                started: Instant::now(),
                shares: 0,
                work: 0.0,
            }),
            jobs: RefCell::new(VecDeque::new()),
            stale_ids: RefCell::new(VecDeque::new()),
            next_job_id: Cell::new(0x67d5_e1a4_0000_0000),
        });
        {
            let mut stats = lock(&self.stats);
            stats.accepted_connections += 1;
            stats.connections.insert(
                id,
                StratumConnStats {
                    id,
                    peer,
                    open: true,
                    user: None,
                    password: None,
                    user_agent: None,
                    methods: Vec::new(),
                    extranonce1: hex_encode(&extranonce1),
                    extranonce2_size: self.config.extranonce2_size,
                    extranonce_subscribed: false,
                    version_mask: None,
                    difficulties: Vec::new(),
                    suggestions: Vec::new(),
                    shares: StratumShareCounts::default(),
                    credited_difficulty: 0.0,
                    rejects: BTreeMap::new(),
                    jobs_sent: 0,
                    responses_sent: 0,
                    bytes_in: 0,
                    bytes_out: 0,
                    reads: 0,
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
        let writer_conn = conn.clone();
        self.spawn(async move {
            pool.write_loop(&writer_conn, stream.clone(), writer_wake)
                .await;
        });
        let pool = self.clone();
        self.spawn(async move {
            let stream = conn.stream.clone();
            pool.read_loop(&conn, stream).await;
            let _ = conn.stream.shutdown(Shutdown::Both);
            conn.outbound_ready.close();
            pool.conns.borrow_mut().remove(&conn.id);
            pool.conn_stats(conn.id, |c| c.open = false);
        });
    }

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
            let _ = conn.stream.shutdown(Shutdown::Both);
            return;
        }
        outbound.extend_from_slice(&bytes);
        let _ = conn.outbound_ready.try_send(());
    }

    fn respond(&self, conn: &Conn, id: &Value, result: Value, error: Option<(i64, &str)>) {
        let message = match (error, self.config.verdicts) {
            (None, _) => json!({"id": id, "result": result, "error": null}),
            (Some((code, reason)), VerdictStyle::Codes) => {
                json!({"id": id, "result": null, "error": [code, reason, null]})
            }
            // A share that was judged (stale, duplicate, above target, ntime).
            (Some((code, reason)), VerdictStyle::RejectReason)
                if matches!(code, 21..=23) || reason == "Ntime out of range" =>
            {
                json!({"reject-reason": reason, "result": false, "error": null, "id": id})
            }
            (Some((_, reason)), VerdictStyle::RejectReason) => {
                json!({"result": false, "error": reason, "id": id})
            }
        };
        self.send(conn, line(message));
        self.conn_stats(conn.id, |c| c.responses_sent += 1);
    }

    async fn read_loop(&self, conn: &Rc<Conn>, mut stream: TcpStream) {
        let mut reader = FrameReader::new(MAX_LINE, false);
        let (mut reads, mut bytes) = (0, 0);
        loop {
            let frame = reader.read_frame(&mut stream).await;
            self.conn_stats(conn.id, |c| {
                c.bytes_in += reader.bytes - bytes;
                c.reads += reader.reads - reads;
            });
            (reads, bytes) = (reader.reads, reader.bytes);
            match frame {
                Ok(Some(Frame::Line(text))) => {
                    if !self.on_line(conn, &text) {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// One line from a client; false closes the connection (not JSON).
    fn on_line(&self, conn: &Rc<Conn>, text: &str) -> bool {
        if text.trim().is_empty() {
            return true;
        }
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return false;
        };
        let id = message.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            return true; // a response to something the pool never asked
        };
        let params: Vec<Value> = message
            .get("params")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        self.conn_stats(conn.id, |c| {
            if c.methods.len() < HISTORY_KEPT {
                c.methods.push(method.to_string());
            }
        });
        let handshake = matches!(
            method,
            "mining.subscribe" | "mining.authorize" | "mining.configure"
        );
        if self.config.ckpool_gating && !handshake {
            if !conn.subscribed.get() {
                return false; // "Dropping ... from unsubscribed client"
            }
            if !conn.authorized.get() {
                return true; // "Dropping ... from unauthorised client": no reply
            }
        }
        match method {
            "mining.configure" => self.on_configure(conn, &id, &params),
            "mining.subscribe" => {
                let ex1 = hex_encode(&conn.extranonce1.borrow());
                let session = format!("{:08x}", conn.id);
                let subscriptions = if self.config.notify_on_subscribe {
                    json!([["mining.notify", session]])
                } else {
                    json!([
                        ["mining.set_difficulty", session],
                        ["mining.notify", session]
                    ])
                };
                let size = conn.extranonce2_size.get();
                self.respond(conn, &id, json!([subscriptions, ex1, size]), None);
                conn.subscribed.set(true);
                let agent = params.first().and_then(Value::as_str).map(str::to_string);
                self.conn_stats(conn.id, |c| c.user_agent = agent);
                if self.config.notify_on_subscribe {
                    let text = self.config.start_difficulty.clone();
                    self.send_difficulty(conn, &text, conn.difficulty.get());
                    self.send_job(conn, true);
                }
            }
            "mining.extranonce.subscribe" if self.config.extranonce_subscribe => {
                conn.extranonce_subscribed.set(true);
                self.conn_stats(conn.id, |c| c.extranonce_subscribed = true);
                self.respond(conn, &id, json!(true), None);
            }
            "mining.authorize" => {
                let user = params.first().and_then(Value::as_str).unwrap_or("");
                if !conn.subscribed.get() {
                    self.respond(conn, &id, Value::Null, Some((25, "Not subscribed")));
                } else if self.config.reject_authorize || user.is_empty() {
                    self.respond(conn, &id, json!(false), Some((24, "Unauthorized worker")));
                } else {
                    let password = params.get(1).and_then(Value::as_str).map(str::to_string);
                    *conn.user.borrow_mut() = user.to_string();
                    self.conn_stats(conn.id, |c| {
                        c.user = Some(user.to_string());
                        c.password = password;
                    });
                    self.respond(conn, &id, json!(true), None);
                    if !conn.authorized.replace(true) && !self.config.notify_on_subscribe {
                        let text = self.config.start_difficulty.clone();
                        self.send_difficulty(conn, &text, conn.difficulty.get());
                        self.send_job(conn, true);
                    }
                }
            }
            "mining.submit" => self.on_submit(conn, &id, &params),
            "mining.suggest_difficulty" => self.on_suggest_difficulty(conn, &params),
            _ if self.config.silent_on_unknown_methods => {}
            _ => self.respond(conn, &id, Value::Null, Some((20, "Method not found"))),
        }
        true
    }

    /// ckpool's `suggest_diff` (stratifier.c): from an authorised client only (the
    /// gating), an integer only (`json_is_integer`; a pool of this simulator that is
    /// not ckpool takes any positive number, since test pools run at fractions), the
    /// difficulty set at once unless it is already the last suggestion or the
    /// current difficulty, kept as the vardiff's floor, the request never answered.
    fn on_suggest_difficulty(&self, conn: &Conn, params: &[Value]) {
        let first = params.first();
        if let Some(d) = first.and_then(Value::as_f64) {
            self.conn_stats(conn.id, |c| {
                if c.suggestions.len() < HISTORY_KEPT {
                    c.suggestions.push(d);
                }
            });
        }
        let taken = first.filter(|v| !self.config.ckpool_gating || v.is_i64() || v.is_u64());
        let Some(d) = taken
            .and_then(Value::as_f64)
            .filter(|d| d.is_finite() && *d > 0.0)
        else {
            return;
        };
        if d == conn.suggested.get() {
            return;
        }
        conn.suggested.set(d);
        if d == conn.difficulty.get() {
            return;
        }
        let d = self.config.vardiff.map_or(d, |v| d.max(v.min));
        self.send_difficulty(conn, &format!("{d:?}"), d);
    }

    fn on_configure(&self, conn: &Conn, id: &Value, params: &[Value]) {
        let wanted = params
            .first()
            .and_then(Value::as_array)
            .is_some_and(|list| list.iter().any(|e| e == "version-rolling"));
        let asked = params
            .get(1)
            .and_then(|o| o.get("version-rolling.mask"))
            .and_then(Value::as_str)
            .and_then(|m| u32::from_str_radix(m, 16).ok())
            .unwrap_or(u32::MAX);
        let granted = match self.config.configure {
            _ if !wanted => None,
            ConfigureAnswer::Refuse => None,
            ConfigureAnswer::PoolMask => Some(self.config.version_mask),
            ConfigureAnswer::Intersection => Some(self.config.version_mask & asked),
        };
        let result = match granted {
            Some(mask) => {
                json!({"version-rolling": true, "version-rolling.mask": format!("{mask:08x}")})
            }
            None => json!({"version-rolling": false}),
        };
        conn.version_mask.set(granted);
        self.conn_stats(conn.id, |c| c.version_mask = granted);
        self.respond(conn, id, result, None);
    }

    fn send_difficulty(&self, conn: &Conn, text: &str, value: f64) {
        conn.difficulty.set(value);
        // Written by hand so the number reaches the client exactly as given.
        let text_line =
            format!("{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{text}]}}\n");
        self.send(conn, text_line.into_bytes());
        self.conn_stats(conn.id, |c| {
            if c.difficulties.len() < HISTORY_KEPT {
                c.difficulties.push(value);
            }
        });
    }

    fn broadcast_job(&self, clean: bool) {
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        for conn in conns.iter().filter(|c| {
            c.authorized.get() || (self.config.notify_on_subscribe && c.subscribed.get())
        }) {
            self.send_job(conn, clean);
        }
    }

    fn send_job(&self, conn: &Conn, clean: bool) {
        let seq = self.job_seq.get();
        self.job_seq.set(seq + 1);
        let number = conn.next_job_id.get();
        conn.next_job_id.set(number + 1);
        let mut job = Job::build(0, seq, now_us(), clean, self.config.merkle_branch_len);
        // ckpool's job ids: 16 hex digits.
        job.id = format!("{number:016x}");
        let size = conn.extranonce2_size.get();
        // The coinbase's extranonce push must hold extranonce1 + extranonce2.
        let ex1 = conn.extranonce1.borrow().clone();
        if let Some(push) = job.work.coinb1.last_mut() {
            *push = (ex1.len() + size) as u8;
        }
        let script_len_at = 41;
        let delta = (ex1.len() + size) as i64 - 12;
        job.work.coinb1[script_len_at] = (job.work.coinb1[script_len_at] as i64 + delta) as u8;
        let text = job.notify_line();
        let mut jobs = conn.jobs.borrow_mut();
        if clean {
            let mut stale = conn.stale_ids.borrow_mut();
            for old in jobs.drain(..) {
                if stale.len() >= 4 * JOBS_KEPT {
                    stale.pop_front();
                }
                stale.push_back(old.job.id);
            }
        }
        if jobs.len() >= JOBS_KEPT {
            jobs.pop_front();
        }
        jobs.push_back(SentJob {
            job,
            extranonce1: ex1,
            extranonce2_size: size,
            difficulty: conn.difficulty.get(),
            seen: HashSet::new(),
        });
        drop(jobs);
        self.send(conn, text.into_bytes());
        let mut stats = lock(&self.stats);
        stats.jobs_sent += 1;
        if let Some(c) = stats.connections.get_mut(&conn.id) {
            c.jobs_sent += 1;
        }
    }

    fn on_submit(&self, conn: &Conn, id: &Value, params: &[Value]) {
        let worker = params
            .first()
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let judgement = self.judge(conn, &worker, params);
        self.respond(conn, id, json!(true), judgement.error);
        let mut stats = lock(&self.stats);
        stats.totals.add(&judgement.counts);
        stats
            .by_worker
            .entry(worker)
            .or_default()
            .add(&judgement.counts);
        if let Some(c) = stats.connections.get_mut(&conn.id) {
            c.shares.add(&judgement.counts);
            c.credited_difficulty += judgement.credited;
            if let Some((_, reason)) = judgement.error {
                *c.rejects.entry(reason.to_string()).or_insert(0) += 1;
            }
        }
        drop(stats);
        if judgement.counts.valid == 1 {
            let mut w = conn.window.borrow_mut();
            w.shares += 1;
            w.work += judgement.credited;
            let due = self
                .config
                .vardiff
                .is_some_and(|v| w.shares >= v.retarget_shares);
            drop(w);
            if due {
                self.retarget(conn);
            }
        }
    }

    fn judge(&self, conn: &Conn, worker: &str, params: &[Value]) -> Judgement {
        if !conn.authorized.get() {
            return Judgement::refuse(24, "Unauthorized worker");
        }
        if params.len() < 5 {
            return Judgement::refuse(20, "Invalid array size");
        }
        if worker != *conn.user.borrow() {
            return Judgement::refuse(24, "Worker mismatch");
        }
        let job_id = params[1].as_str().unwrap_or("");
        let (Some(ex2_text), Some(ntime), Some(nonce)) = (
            hex_field(params, 2),
            u32_field(params, 3),
            u32_field(params, 4),
        ) else {
            return Judgement::refuse(20, "Invalid params");
        };
        let version_bits = match params.get(5) {
            None | Some(Value::Null) => None,
            Some(_) => match u32_field(params, 5) {
                Some(bits) => Some(bits),
                None => return Judgement::refuse(20, "Invalid params"),
            },
        };
        let mut jobs = conn.jobs.borrow_mut();
        let Some(sent) = jobs.iter_mut().find(|j| j.job.id == job_id) else {
            // ckpool keeps the work of the last blocks: a job before the last clean one
            // is "Stale", one it never sent "Invalid JobID" (both 21).
            if conn.stale_ids.borrow().iter().any(|id| id == job_id) {
                return Judgement::refuse(21, "Stale");
            }
            return Judgement::refuse(21, "Invalid JobID");
        };
        let Some(mut extranonce2) = hex_decode(ex2_text) else {
            return Judgement::refuse(20, "Invalid params");
        };
        if extranonce2.len() != sent.extranonce2_size {
            if !self.config.fix_extranonce2_length {
                return Judgement::refuse(20, "Invalid nonce2 length");
            }
            // ckpool: "Fix broken clients sending too many/few chars".
            extranonce2.resize(sent.extranonce2_size, 0);
        }
        if ntime < sent.job.work.ntime || ntime > sent.job.work.ntime.saturating_add(NTIME_ROLL) {
            return Judgement::refuse(20, "Ntime out of range");
        }
        let mask = conn.version_mask.get().unwrap_or(0);
        let bits = version_bits.unwrap_or(0);
        if bits & !mask != 0 {
            return Judgement::refuse(20, "Invalid version mask");
        }
        let key = (extranonce2.clone(), ntime, nonce, bits);
        if sent.seen.contains(&key) {
            return Judgement::refuse(22, "Duplicate");
        }
        let work = &sent.job.work;
        let root = work.merkle_root(&[&sent.extranonce1, &extranonce2]);
        let version = (work.version & !mask) | (bits & mask);
        let hash = work.header_hash(&root, version, ntime, nonce);
        // Jobs sent before a difficulty change are judged at the easier of the two.
        let difficulty = sent.difficulty.min(conn.difficulty.get());
        if !hash_meets_target(&hash, &target_for_difficulty(difficulty)) {
            return Judgement::refuse(23, "Above target");
        }
        if sent.seen.len() < SEEN_PER_JOB {
            sent.seen.insert(key);
        }
        Judgement {
            counts: StratumShareCounts {
                valid: 1,
                ..Default::default()
            },
            error: None,
            credited: difficulty,
        }
    }

    fn vardiff_tick(&self) {
        let Some(v) = self.config.vardiff else { return };
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        for conn in conns.iter().filter(|c| c.authorized.get()) {
            if conn.window.borrow().started.elapsed() >= v.retarget_after {
                self.retarget(conn);
            }
        }
    }

    /// The pool's own vardiff step for one connection.
    fn retarget(&self, conn: &Conn) {
        let Some(v) = self.config.vardiff else { return };
        let (seconds, shares, work) = {
            let mut w = conn.window.borrow_mut();
            let out = (
                w.started.elapsed().as_secs_f64().max(1e-3),
                w.shares,
                w.work,
            );
            *w = Window {
                started: Instant::now(),
                shares: 0,
                work: 0.0,
            };
            out
        };
        let current = conn.difficulty.get();
        let optimal = if shares == 0 {
            current / 4.0
        } else {
            work / seconds * v.share_interval
        };
        let ratio = optimal / current;
        if (0.5..=2.0).contains(&ratio) {
            return;
        }
        // ckpool keeps a client's suggested difficulty as its floor.
        let floor = v.min.max(conn.suggested.get());
        let next = optimal.clamp(floor, v.max.max(floor));
        if next == current {
            return;
        }
        // Printed with Rust's shortest round-trip form, so the client reads it exactly.
        self.send_difficulty(conn, &format!("{next:?}"), next);
    }
}

/// Distinct per connection and recognisable in a capture.
fn extranonce1_for(n: u64) -> Vec<u8> {
    (0x5200_0000u32.wrapping_add(n as u32))
        .to_be_bytes()
        .to_vec()
}
