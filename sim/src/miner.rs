//! A swarm of simulated Stratum V1 miners on one thread (one smol task per miner),
//! built to hold 10,000+ connections in one process. Each miner really mines: it
//! rebuilds the coinbase from the job and its extranonces, searches nonces (and
//! version bits when rolling) until the header hash meets its difficulty, and submits.

use crate::bitcoin::{hex_decode, hex_encode, hex_u32, parse_hex_u32, target_for_difficulty};
use crate::framing::{Frame, FrameReader};
use crate::histogram::Histogram;
use crate::job::Job;
use crate::now_us;
use crate::share::{search_nonce, spread_bits};
use serde_json::{json, Value};
use smol::channel::{self, Receiver, Sender};
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;
use smol::{LocalExecutor, Timer};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Nonces tried between yields, so one miner's search never stalls the others.
const HASHES_PER_YIELD: u32 = 256;
/// Longest line a miner accepts.
const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct MinerSwarmConfig {
    /// Where the agent (or any Stratum server) listens.
    pub agent: SocketAddr,
    pub miners: usize,
    /// Authorize name; `{i}` is the miner index, `{sub}` a sub-account taken in turn
    /// from `subaccounts`. Example: "{sub}.w{i}".
    pub user_pattern: String,
    pub subaccounts: Vec<String>,
    /// Raw names, one per miner (cycled); overrides `user_pattern` when non-empty.
    pub user_names: Vec<String>,
    pub password: String,
    /// Fraction of miners (spread evenly by index) that negotiate version rolling and
    /// submit with a sixth `version_mask` parameter.
    pub version_rolling_fraction: f64,
    /// Mean time between shares per miner, jittered +-50%; `None`: as fast as possible.
    pub share_interval: Option<Duration>,
    /// Stop submitting after this many shares per connection.
    pub shares_per_miner: Option<u64>,
    /// Submits awaiting an answer before a miner pauses.
    pub max_outstanding: usize,
    /// New connections per second at start; 0 = all at once.
    pub connect_rate: f64,
    /// Reconnect after a disconnect or `client.reconnect`; `None`: stay down.
    pub reconnect_delay: Option<Duration>,
    pub user_agent: String,
    /// Give up on a share after this many hashes (difficulty too high for a simulator).
    pub max_hashes_per_share: u32,
    /// Mine at difficulty × unit (the pool simulator's `difficulty_unit`).
    pub difficulty_unit: f64,
}

impl MinerSwarmConfig {
    pub fn new(agent: SocketAddr, miners: usize) -> MinerSwarmConfig {
        MinerSwarmConfig {
            agent,
            miners,
            user_pattern: "{sub}.w{i}".into(),
            subaccounts: vec!["sim".into()],
            user_names: Vec::new(),
            password: "x".into(),
            version_rolling_fraction: 0.0,
            share_interval: None,
            shares_per_miner: None,
            max_outstanding: 8,
            connect_rate: 0.0,
            reconnect_delay: Some(Duration::from_secs(1)),
            user_agent: "btcagent-sim/0.1".into(),
            max_hashes_per_share: 1 << 22,
            difficulty_unit: 1.0,
        }
    }

    pub fn user_name(&self, index: usize) -> String {
        if !self.user_names.is_empty() {
            return self.user_names[index % self.user_names.len()].clone();
        }
        let sub = match self.subaccounts.len() {
            0 => "",
            n => &self.subaccounts[index % n],
        };
        self.user_pattern
            .replace("{i}", &index.to_string())
            .replace("{sub}", sub)
    }

    /// Whether miner `index` rolls versions: exactly round(fraction * n) of the first n do.
    pub fn rolls_versions(&self, index: usize) -> bool {
        let f = self.version_rolling_fraction.clamp(0.0, 1.0);
        ((index + 1) as f64 * f).round() > (index as f64 * f).round()
    }
}

/// Per-miner counters (one entry per configured miner).
#[derive(Clone, Debug, Default)]
pub struct MinerStats {
    pub name: String,
    pub connected: bool,
    pub authorized: bool,
    pub extranonce1: String,
    pub jobs: u64,
    pub submitted: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub difficulty: f64,
    /// Every distinct difficulty received, in order (first 32).
    pub difficulties: Vec<f64>,
    pub version_mask: Option<u32>,
    pub reconnect_requests: u64,
}

#[derive(Clone, Debug, Default)]
pub struct SwarmStats {
    /// Connections open now.
    pub connected: u64,
    /// Connections ever opened.
    pub connects: u64,
    pub connect_failures: u64,
    pub subscribed: u64,
    /// Miners authorized now.
    pub authorized: u64,
    pub disconnects: u64,
    pub jobs_received: u64,
    /// Job receive time minus the send time the pool simulator embedded in it.
    pub job_latency: Histogram,
    pub shares_submitted: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Reject reasons: the error code, or -1 for `false` without an error.
    pub rejects_by_code: BTreeMap<i64, u64>,
    /// Time from sending a submit to its answer.
    pub response_latency: Histogram,
    pub reconnect_requests: u64,
    pub last_difficulty: Option<f64>,
    pub last_version_mask: Option<u32>,
    /// Error answers by the method of the request.
    pub errors_by_method: BTreeMap<String, u64>,
    /// Lines that were not JSON or not understood.
    pub bad_lines: u64,
    pub hashes: u64,
    /// Shares abandoned after `max_hashes_per_share`.
    pub gave_up: u64,
    pub miners: Vec<MinerStats>,
}

impl SwarmStats {
    pub fn summary(&self) -> String {
        format!(
            "connected={} authorized={} disconnects={} jobs={} submitted={} accepted={} rejected={}{} job_latency[{}] response_latency[{}]",
            self.connected,
            self.authorized,
            self.disconnects,
            self.jobs_received,
            self.shares_submitted,
            self.accepted,
            self.rejected,
            if self.rejects_by_code.is_empty() {
                String::new()
            } else {
                format!(" rejects_by_code={:?}", self.rejects_by_code)
            },
            self.job_latency.summary(),
            self.response_latency.summary(),
        )
    }
}

/// Handle to a running swarm; stops it (closing every connection) when dropped.
pub struct MinerSwarm {
    stats: Arc<Mutex<SwarmStats>>,
    stop: Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

use crate::lock;

impl MinerSwarm {
    pub fn start(config: MinerSwarmConfig) -> io::Result<MinerSwarm> {
        // Best effort: without it the swarm still runs, just with fewer miners.
        let _ = crate::rlimit::raise_nofile_limit();
        let stats = Arc::new(Mutex::new(SwarmStats {
            miners: (0..config.miners)
                .map(|i| MinerStats {
                    name: config.user_name(i),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }));
        let (stop, stopped) = channel::bounded::<()>(1);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("minersim".into())
            .spawn(move || {
                let executor = LocalExecutor::new();
                let config = Rc::new(config);
                for index in 0..config.miners {
                    let miner = Miner {
                        index,
                        config: config.clone(),
                        stats: thread_stats.clone(),
                    };
                    executor.spawn(miner.run()).detach();
                }
                smol::block_on(executor.run(async {
                    let _ = stopped.recv().await;
                }));
            })?;
        Ok(MinerSwarm {
            stats,
            stop,
            thread: Some(thread),
        })
    }

    pub fn stats(&self) -> SwarmStats {
        lock(&self.stats).clone()
    }

    /// Polls the stats until `condition` holds (true) or `timeout` passes (false).
    pub fn wait_until(
        &self,
        timeout: Duration,
        condition: impl FnMut(&SwarmStats) -> bool,
    ) -> bool {
        crate::wait_for(&self.stats, timeout, Duration::from_millis(10), condition)
    }

    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        condition: impl FnMut(&SwarmStats) -> bool,
    ) -> bool {
        crate::wait_for_async(&self.stats, timeout, Duration::from_millis(10), condition).await
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stops the swarm and returns its final counters: nothing is sent after them.
    pub fn finish(mut self) -> SwarmStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.stop.try_send(());
            let _ = thread.join();
        }
    }
}

impl Drop for MinerSwarm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `duration * factor`, saturating instead of panicking on absurd configured values.
fn jittered(duration: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// The first element of the `params` array parsed straight from the line's text.
fn first_param_number(line: &str) -> Option<f64> {
    let after = &line[line.find("\"params\"")? + 8..];
    let after = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('[')?;
    let end = after.find([',', ']'])?;
    after[..end].trim().parse().ok()
}

struct Miner {
    index: usize,
    config: Rc<MinerSwarmConfig>,
    stats: Arc<Mutex<SwarmStats>>,
}

/// What the reading half learned, shared with the mining half.
#[derive(Default)]
struct Session {
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    authorized: bool,
    difficulty: f64,
    version_mask: Option<u32>,
    job: Option<Rc<Job>>,
    /// The difficulty in effect when the job came: a `mining.set_difficulty` applies
    /// to the jobs after it, as pools judge shares at the difficulty of their job.
    job_difficulty: f64,
    /// Bumped on every job, so a search in progress notices clean jobs.
    job_generation: u64,
    /// Request id -> (method, send time).
    pending: HashMap<u64, (&'static str, Instant)>,
    outstanding_submits: usize,
    submitted: u64,
}

enum Ended {
    Closed,
    Reconnect,
}

impl Miner {
    fn stats(&self) -> MutexGuard<'_, SwarmStats> {
        lock(&self.stats)
    }

    fn me<R>(&self, update: impl FnOnce(&mut MinerStats) -> R) -> R {
        update(&mut self.stats().miners[self.index])
    }

    async fn run(self) {
        if self.config.connect_rate > 0.0 {
            let delay = self.index as f64 / self.config.connect_rate;
            // A rate so low the delay overflows just means "never".
            Timer::after(Duration::try_from_secs_f64(delay).unwrap_or(Duration::MAX)).await;
        }
        loop {
            let mut delay = self.config.reconnect_delay;
            match TcpStream::connect(self.config.agent).await {
                Ok(stream) => {
                    if let Ended::Reconnect = self.session(stream).await {
                        // client.reconnect: real miners come back at once.
                        delay = Some(Duration::from_millis(100));
                    }
                    let mut stats = self.stats();
                    stats.disconnects += 1;
                    stats.connected -= 1;
                    if stats.miners[self.index].authorized {
                        stats.authorized -= 1;
                    }
                    let me = &mut stats.miners[self.index];
                    me.connected = false;
                    me.authorized = false;
                }
                Err(_) => self.stats().connect_failures += 1,
            }
            let Some(delay) = delay else {
                return;
            };
            let jitter = 0.5 + fastrand::f64();
            Timer::after(jittered(delay, jitter)).await;
        }
    }

    async fn session(&self, stream: TcpStream) -> Ended {
        let _ = stream.set_nodelay(true);
        {
            let mut stats = self.stats();
            stats.connected += 1;
            stats.connects += 1;
            stats.miners[self.index].connected = true;
        }
        let rolling = self.config.rolls_versions(self.index);
        let session = Rc::new(RefCell::new(Session {
            difficulty: 1.0,
            ..Default::default()
        }));
        let (wake, woken) = channel::bounded::<()>(1);
        let mut writer = stream.clone();
        let mut next_id = 1u64;
        let mut handshake = String::new();
        let mut request = |method: &'static str, params: Value, session: &mut Session| {
            let id = next_id;
            next_id += 1;
            session.pending.insert(id, (method, Instant::now()));
            handshake.push_str(&json!({"id": id, "method": method, "params": params}).to_string());
            handshake.push('\n');
        };
        {
            let s = &mut *session.borrow_mut();
            request("mining.subscribe", json!([self.config.user_agent]), s);
            if rolling {
                let params = json!([["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 0}]);
                request("mining.configure", params, s);
            }
            let name = self.config.user_name(self.index);
            request("mining.authorize", json!([name, self.config.password]), s);
        }
        if writer.write_all(handshake.as_bytes()).await.is_err() {
            return Ended::Closed;
        }
        let reader = self.read_loop(stream, &session, wake);
        let miner = self.mine_loop(writer, &session, woken, next_id, rolling);
        smol::future::or(reader, miner).await
    }

    async fn read_loop(
        &self,
        mut stream: TcpStream,
        session: &RefCell<Session>,
        wake: Sender<()>,
    ) -> Ended {
        let mut reader = FrameReader::with_read_size(MAX_LINE, false, 1024);
        loop {
            let line = match reader.read_frame(&mut stream).await {
                Ok(Some(Frame::Line(line))) => line,
                _ => return Ended::Closed,
            };
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                self.stats().bad_lines += 1;
                continue;
            };
            match message.get("method").and_then(Value::as_str) {
                Some(method) => {
                    let mut params = message["params"].clone();
                    if method == "mining.set_difficulty" {
                        // serde_json's f64 parsing may be 1 ulp off; the text is exact.
                        if let Some(exact) = first_param_number(&line) {
                            params = json!([exact]);
                        }
                    }
                    if !self.on_notification(method, &params, session) {
                        return Ended::Reconnect;
                    }
                }
                None => self.on_response(&message, session),
            }
            let _ = wake.try_send(());
        }
    }

    /// False when the miner must reconnect.
    fn on_notification(&self, method: &str, params: &Value, session: &RefCell<Session>) -> bool {
        match method {
            "mining.set_difficulty" => match params.get(0).and_then(Value::as_f64) {
                Some(d) if d > 0.0 => {
                    session.borrow_mut().difficulty = d;
                    self.stats().last_difficulty = Some(d);
                    self.me(|m| {
                        m.difficulty = d;
                        if !m.difficulties.contains(&d) && m.difficulties.len() < 32 {
                            m.difficulties.push(d);
                        }
                    });
                }
                _ => self.stats().bad_lines += 1,
            },
            "mining.notify" => match Job::from_notify_params(params) {
                Some(job) => {
                    // Jobs not built by the pool simulator (the agent's fake jobs) carry
                    // no send time.
                    let latency =
                        (job.sent_at_us != 0).then(|| now_us().saturating_sub(job.sent_at_us));
                    {
                        let mut s = session.borrow_mut();
                        s.job_difficulty = s.difficulty;
                        s.job = Some(Rc::new(job));
                        s.job_generation += 1;
                    }
                    let mut stats = self.stats();
                    stats.jobs_received += 1;
                    if let Some(latency) = latency {
                        stats.job_latency.record(latency);
                    }
                    stats.miners[self.index].jobs += 1;
                }
                None => self.stats().bad_lines += 1,
            },
            "mining.set_version_mask" => match params
                .get(0)
                .and_then(Value::as_str)
                .and_then(parse_hex_u32)
            {
                Some(mask) => {
                    session.borrow_mut().version_mask = Some(mask);
                    self.stats().last_version_mask = Some(mask);
                    self.me(|m| m.version_mask = Some(mask));
                }
                None => self.stats().bad_lines += 1,
            },
            "client.reconnect" => {
                self.stats().reconnect_requests += 1;
                self.me(|m| m.reconnect_requests += 1);
                return false;
            }
            _ => {}
        }
        true
    }

    fn on_response(&self, message: &Value, session: &RefCell<Session>) {
        let Some(id) = message.get("id").and_then(Value::as_u64) else {
            self.stats().bad_lines += 1;
            return;
        };
        let mut s = session.borrow_mut();
        let Some((method, sent)) = s.pending.remove(&id) else {
            drop(s);
            self.stats().bad_lines += 1;
            return;
        };
        let error = message.get("error").filter(|e| !e.is_null());
        let result = message.get("result").unwrap_or(&Value::Null);
        let mut stats = self.stats();
        if error.is_some() {
            *stats
                .errors_by_method
                .entry(method.to_string())
                .or_insert(0) += 1;
        }
        match method {
            "mining.subscribe" => {
                let ex1 = result.get(1).and_then(Value::as_str).and_then(hex_decode);
                let size = result.get(2).and_then(Value::as_u64);
                if let (Some(ex1), Some(size)) = (ex1, size) {
                    stats.miners[self.index].extranonce1 = hex_encode(&ex1);
                    stats.subscribed += 1;
                    s.extranonce1 = ex1;
                    s.extranonce2_size = (size as usize).min(8);
                }
            }
            // BIP 310: the mask granted here holds until a mining.set_version_mask.
            "mining.configure" if result.get("version-rolling") == Some(&json!(true)) => {
                if let Some(mask) = result
                    .get("version-rolling.mask")
                    .and_then(Value::as_str)
                    .and_then(parse_hex_u32)
                {
                    s.version_mask = Some(mask);
                    stats.last_version_mask = Some(mask);
                    stats.miners[self.index].version_mask = Some(mask);
                }
            }
            "mining.authorize" if result == &json!(true) && !s.authorized => {
                s.authorized = true;
                stats.authorized += 1;
                stats.miners[self.index].authorized = true;
            }
            "mining.submit" => {
                s.outstanding_submits = s.outstanding_submits.saturating_sub(1);
                stats
                    .response_latency
                    .record(sent.elapsed().as_micros() as u64);
                if result == &json!(true) {
                    stats.accepted += 1;
                    stats.miners[self.index].accepted += 1;
                } else {
                    stats.rejected += 1;
                    stats.miners[self.index].rejected += 1;
                    let code = error
                        .and_then(|e| e.get(0))
                        .and_then(Value::as_i64)
                        .unwrap_or(-1);
                    *stats.rejects_by_code.entry(code).or_insert(0) += 1;
                }
            }
            _ => {}
        }
    }

    async fn mine_loop(
        &self,
        mut writer: TcpStream,
        session: &RefCell<Session>,
        woken: Receiver<()>,
        mut next_id: u64,
        rolling: bool,
    ) -> Ended {
        let config = &self.config;
        let name = config.user_name(self.index);
        let mut counter: u32 = fastrand::u32(..);
        // Spread the first shares over one interval so miners do not submit in lockstep.
        let mut next_share = Instant::now()
            + config
                .share_interval
                .map(|i| jittered(i, fastrand::f64()))
                .unwrap_or_default();
        loop {
            let ready = {
                let s = session.borrow();
                s.authorized
                    && s.job.is_some()
                    && !s.extranonce1.is_empty()
                    && s.outstanding_submits < config.max_outstanding
                    && !matches!(config.shares_per_miner, Some(limit) if s.submitted >= limit)
            };
            if !ready {
                if woken.recv().await.is_err() {
                    return Ended::Closed;
                }
                continue;
            }
            if let Some(interval) = config.share_interval {
                let now = Instant::now();
                if next_share > now {
                    Timer::at(next_share).await;
                }
                next_share = Instant::now() + jittered(interval, 0.5 + fastrand::f64());
            }
            counter = counter.wrapping_add(1);
            let Some(found) = self.find_share(session, counter, rolling).await else {
                continue;
            };
            let (job_id, ex2, ntime, nonce, bits) = found;
            let mut params = vec![
                json!(name),
                json!(job_id),
                json!(ex2),
                json!(hex_u32(ntime)),
                json!(hex_u32(nonce)),
            ];
            if rolling {
                params.push(json!(hex_u32(bits)));
            }
            let id = next_id;
            next_id += 1;
            let line = format!(
                "{}\n",
                json!({"id": id, "method": "mining.submit", "params": params})
            );
            {
                let mut s = session.borrow_mut();
                s.pending.insert(id, ("mining.submit", Instant::now()));
                s.outstanding_submits += 1;
                s.submitted += 1;
            }
            {
                let mut stats = self.stats();
                stats.shares_submitted += 1;
                stats.miners[self.index].submitted += 1;
            }
            if writer.write_all(line.as_bytes()).await.is_err() {
                return Ended::Closed;
            }
            if config.share_interval.is_none() {
                smol::future::yield_now().await;
            }
        }
    }

    /// Searches one share on the current job: (job id, extranonce2 hex, ntime, nonce,
    /// flipped version bits). `None` when the job changed or the search gave up.
    async fn find_share(
        &self,
        session: &RefCell<Session>,
        counter: u32,
        rolling: bool,
    ) -> Option<(String, String, u32, u32, u32)> {
        let (job, ex1, ex2_size, difficulty, mask, generation) = {
            let s = session.borrow();
            (
                s.job.clone()?,
                s.extranonce1.clone(),
                s.extranonce2_size,
                s.job_difficulty,
                s.version_mask,
                s.job_generation,
            )
        };
        let ex2 = &(counter as u64).to_be_bytes()[8 - ex2_size..];
        let root = job.work.merkle_root(&[&ex1, ex2]);
        let bits = if rolling {
            spread_bits(counter, mask.unwrap_or(0))
        } else {
            0
        };
        let target = target_for_difficulty(difficulty * self.config.difficulty_unit);
        let start = fastrand::u32(..);
        let mut tried = 0u32;
        while tried < self.config.max_hashes_per_share {
            let found = search_nonce(
                &job.work,
                &root,
                bits,
                job.work.ntime,
                &target,
                start.wrapping_add(tried),
                HASHES_PER_YIELD,
            );
            let hashes = found.map_or(HASHES_PER_YIELD, |n| {
                n.wrapping_sub(start.wrapping_add(tried)) + 1
            });
            self.stats().hashes += hashes as u64;
            if let Some(nonce) = found {
                return Some((job.id.clone(), hex_encode(ex2), job.work.ntime, nonce, bits));
            }
            tried += HASHES_PER_YIELD;
            smol::future::yield_now().await;
            if session.borrow().job_generation != generation
                && session.borrow().job.as_ref().is_some_and(|j| j.clean)
            {
                return None;
            }
        }
        self.stats().gave_up += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::first_param_number;

    #[test]
    fn difficulty_text_is_parsed_exactly() {
        let line =
            r#"{"id":null,"method":"mining.set_difficulty","params": [ 5.960464477539063e-8 ]}"#;
        assert_eq!(first_param_number(line), Some(2f64.powi(-24)));
        assert_eq!(first_param_number(r#"{"params":[0.0001,1]}"#), Some(0.0001));
        assert_eq!(first_param_number(r#"{"params":["x"]}"#), None);
        assert_eq!(first_param_number(r#"{"params":"#), None);
    }
}
