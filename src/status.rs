//! The status snapshot of a running agent, published three ways: a JSON file rewritten
//! every `status_interval`, the optional HTTP endpoint ([`crate::http_debug`]), and a
//! one-line summary in the log every minute. `btcagent status` reads the file back.
//!
//! The document's shape is a contract with the LuCI page: change it only additively.

pub mod metrics;
mod summary;
pub mod window;

pub use metrics::metrics_text;
pub use summary::{format_summary, print_summary};

use crate::agent::Agent;
use crate::miner::{MinerSession, MinerState};
use async_io::Timer;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use window::{ShareCount, ShareWindow};

/// How often the log gets its one-line summary.
pub const LOG_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// Hashes per difficulty-1 share.
const HASHES_PER_DIFFICULTY: f64 = 4_294_967_296.0;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusDoc {
    pub version: String,
    pub started_at: u64,
    pub updated_at: u64,
    pub uptime_seconds: u64,
    pub listen: String,
    /// How often the file is rewritten, so a reader can tell a stale file. Not in the
    /// original contract: an addition (0 when the file is not written).
    #[serde(default)]
    pub status_interval_seconds: u64,
    pub totals: Totals,
    pub pools: Vec<PoolStatus>,
    pub subaccounts: Vec<SubaccountStatus>,
    pub miners: Vec<MinerStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Miners that logged in (authorized, or waiting for their first pool connection).
    pub miners: u64,
    /// Pool connections that are up.
    pub pools_up: u64,
    /// Pool connections the agent keeps (up or being dialled): one per slot of each
    /// sub-account group.
    pub pool_connections: u64,
    /// Since the agent started, as answered to the miners (local rejects included).
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub accepted_last_5min: u64,
    pub rejected_last_5min: u64,
    /// Hashes per second over the last five minutes of accepted shares.
    pub hashrate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PoolStatus {
    pub id: u32,
    /// `host:port`.
    pub pool: String,
    pub subaccount: String,
    pub state: String,
    pub since: u64,
    pub route: String,
    pub miners: u64,
    pub jobs: u64,
    pub last_job_age_seconds: Option<u64>,
    pub shares_sent: u64,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubaccountStatus {
    pub name: String,
    pub pool_connections: u64,
    pub miners: u64,
    /// Of the miners connected now.
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub hashrate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MinerStatus {
    pub worker: String,
    pub subaccount: String,
    pub ip: String,
    pub session_id: u16,
    pub pool_id: Option<u32>,
    pub difficulty: f64,
    pub version_rolling: bool,
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub last_share_age_seconds: Option<u64>,
    pub connected_since: u64,
    /// Accepted difficulty × 2^32 / seconds connected.
    pub hashrate: f64,
}

/// Agent-wide share accounting for the status: totals of the miners gone, and the
/// five-minute window fed with the deltas of the agent's totals.
#[derive(Default)]
pub struct Tracker {
    departed: Cell<ShareCount>,
    last_total: Cell<ShareCount>,
    window: RefCell<ShareWindow>,
    /// The address miners connect to, once bound (the config may say port 0).
    listen: RefCell<Option<SocketAddr>>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Keeps a leaving miner's shares in the agent's totals.
    pub fn miner_left(&self, miner: &MinerSession) {
        let mut d = self.departed.get();
        d.add(miner_shares(miner));
        self.departed.set(d);
    }

    /// The agent's totals now, with the change since the last sample put in the window.
    /// Returns (totals, last five minutes).
    fn sample(&self, agent: &Agent, miners: &[Rc<MinerSession>]) -> (ShareCount, ShareCount) {
        let mut total = self.departed.get();
        for m in miners {
            total.add(miner_shares(m));
        }
        let now = agent.started.elapsed().as_secs();
        let delta = total.since(self.last_total.get());
        self.last_total.set(total);
        let mut window = self.window.borrow_mut();
        window.add(now, delta);
        (total, window.sum(now))
    }
}

fn miner_shares(m: &MinerSession) -> ShareCount {
    ShareCount {
        accepted: m.stats.accepted.get() as u64,
        rejected: m.stats.rejected.get() as u64,
        difficulty: m.stats.accepted_difficulty.get(),
    }
}

/// The sub-account's entry, created empty on first use.
fn sub<'a>(all: &'a mut HashMap<String, SubaccountStatus>, name: &str) -> &'a mut SubaccountStatus {
    all.entry(name.to_string())
        .or_insert_with(|| SubaccountStatus {
            name: name.to_string(),
            pool_connections: 0,
            miners: 0,
            shares_accepted: 0,
            shares_rejected: 0,
            hashrate: 0.0,
        })
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `difficulty` worth of shares over `seconds`, in hashes per second; finite, ≥ 0.
pub fn hashrate(difficulty: f64, seconds: f64) -> f64 {
    let h = difficulty * HASHES_PER_DIFFICULTY / seconds.max(1.0);
    if h.is_finite() && h > 0.0 {
        h
    } else {
        0.0
    }
}

/// Takes the snapshot. O(miners + pools); allocates a few short strings per miner.
pub fn snapshot(agent: &Agent) -> StatusDoc {
    let now = SystemTime::now();
    let now_instant = Instant::now();
    let updated_at = unix_seconds(now);
    let uptime = now_instant.duration_since(agent.started);
    let cfg = agent.config();
    let tracker = &agent.status;

    let mut miners_now = agent.miners();
    miners_now.retain(|m| {
        matches!(
            m.state.get(),
            MinerState::Authorized | MinerState::WaitingForPool
        )
    });
    let (total, last_5min) = tracker.sample(agent, &miners_now);
    miners_now.sort_by_key(|m| m.sid);

    let age = |t: Option<Instant>| t.map(|t| now_instant.saturating_duration_since(t).as_secs());
    let groups = agent.groups();
    let slots = cfg.advanced.pool_connection_number_per_subaccount as u64;
    let mut subaccounts: HashMap<String, SubaccountStatus> = HashMap::new();
    let mut pools = Vec::new();
    for g in &groups {
        for s in g.sessions() {
            let st = &s.stats;
            sub(&mut subaccounts, &s.subaccount).pool_connections += 1;
            pools.push(PoolStatus {
                id: s.id,
                pool: format!("{}:{}", s.entry.host, s.entry.port),
                subaccount: s.subaccount.clone(),
                state: s.state().as_str().to_string(),
                since: unix_seconds(s.since),
                route: s.route.clone(),
                miners: s.miner_count() as u64,
                jobs: st.jobs.get() as u64,
                last_job_age_seconds: age(st.last_job_at.get()),
                shares_sent: st.shares_sent.get() as u64,
                shares_accepted: st.shares_accepted.get() as u64,
                shares_rejected: st.shares_rejected.get() as u64,
                bytes_up: st.bytes_up.get(),
                bytes_down: st.bytes_down.get(),
            });
        }
    }
    pools.sort_by_key(|p| p.id);

    // Single-user mode: a miner's sub-account is its pool entry's; before it has a
    // pool, the first entry's (the one the agent dials first).
    let first_entry_subaccount = cfg
        .pools
        .first()
        .map(|p| p.subaccount.as_str())
        .unwrap_or("");
    let mut miners = Vec::with_capacity(miners_now.len());
    for m in &miners_now {
        let pool = m.pool.borrow().clone();
        let group_subaccount = m.group.borrow().as_ref().and_then(|g| g.subaccount.clone());
        let subaccount = match (&group_subaccount, &pool) {
            (Some(name), _) => name.to_string(),
            (None, Some(p)) => p.subaccount.clone(),
            (None, None) => first_entry_subaccount.to_string(),
        };
        let connected = now_instant.saturating_duration_since(m.connected_at);
        let ms = &m.stats;
        let rate = hashrate(ms.accepted_difficulty.get(), connected.as_secs_f64());
        let entry = sub(&mut subaccounts, &subaccount);
        entry.miners += 1;
        entry.shares_accepted += ms.accepted.get() as u64;
        entry.shares_rejected += ms.rejected.get() as u64;
        entry.hashrate += rate;
        miners.push(MinerStatus {
            worker: m.worker.borrow().to_string(),
            subaccount,
            ip: m.peer.ip().to_string(),
            session_id: m.sid,
            pool_id: pool.map(|p| p.id),
            difficulty: ms.difficulty.get(),
            version_rolling: m.version_rolling.get(),
            shares_accepted: ms.accepted.get() as u64,
            shares_rejected: ms.rejected.get() as u64,
            last_share_age_seconds: age(ms.last_share.get()),
            connected_since: unix_seconds(now - connected),
            hashrate: rate,
        });
    }
    let mut subaccounts: Vec<SubaccountStatus> = subaccounts.into_values().collect();
    subaccounts.sort_by(|a, b| a.name.cmp(&b.name));

    let totals = Totals {
        miners: miners.len() as u64,
        pools_up: pools.iter().filter(|p| p.state == "up").count() as u64,
        pool_connections: groups.len() as u64 * slots,
        shares_accepted: total.accepted,
        shares_rejected: total.rejected,
        accepted_last_5min: last_5min.accepted,
        rejected_last_5min: last_5min.rejected,
        hashrate: hashrate(
            last_5min.difficulty,
            window::span_seconds(uptime.as_secs()) as f64,
        ),
    };
    let listen = match *tracker.listen.borrow() {
        Some(addr) => addr.to_string(),
        None => SocketAddr::new(cfg.agent_listen_ip, cfg.agent_listen_port).to_string(),
    };
    StatusDoc {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: unix_seconds(now - uptime),
        updated_at,
        uptime_seconds: uptime.as_secs(),
        listen,
        status_interval_seconds: if cfg.status_file.is_empty() {
            0
        } else {
            cfg.status_interval.as_secs()
        },
        totals,
        pools,
        subaccounts,
        miners,
    }
}

/// Starts publishing: the status file, the HTTP endpoint if enabled, the log summary,
/// and the sampler that feeds the five-minute window. `listen` is the miner port as
/// bound. Call once, after the agent is created.
pub fn start(agent: &Rc<Agent>, listen: Option<SocketAddr>) {
    *agent.status.listen.borrow_mut() = listen;
    let cfg = agent.config();
    agent.spawn(sample_loop(agent.clone()));
    agent.spawn(log_loop(agent.clone()));
    if !cfg.status_file.is_empty() {
        agent.spawn(file_loop(
            agent.clone(),
            PathBuf::from(&cfg.status_file),
            cfg.status_interval,
        ));
    }
    if cfg.http_debug.enable {
        crate::http_debug::start(agent, &cfg.http_debug.listen);
    }
}

/// Samples the totals every bucket so the window has no holes when nothing else asks.
async fn sample_loop(agent: Rc<Agent>) {
    loop {
        Timer::after(Duration::from_secs(window::BUCKET_SECONDS)).await;
        let miners = agent.miners();
        agent.status.sample(&agent, &miners);
    }
}

async fn log_loop(agent: Rc<Agent>) {
    loop {
        Timer::after(LOG_SUMMARY_INTERVAL).await;
        log::info!("{}", log_line(&snapshot(&agent)));
    }
}

/// The minute's one-line summary.
pub fn log_line(doc: &StatusDoc) -> String {
    let t = &doc.totals;
    let minutes = window::span_seconds(doc.uptime_seconds) as f64 / 60.0;
    format!(
        "status: {}/{} pool connections up, {} miners, shares/min {:.1} accepted {:.1} rejected (last {:.0} min), {} accepted {} rejected since start",
        t.pools_up,
        t.pool_connections,
        t.miners,
        t.accepted_last_5min as f64 / minutes,
        t.rejected_last_5min as f64 / minutes,
        minutes.ceil(),
        t.shares_accepted,
        t.shares_rejected,
    )
}

/// Rewrites the status file every `interval`: one warning when it cannot, one note when
/// it works again; the agent keeps running either way. Only the snapshot is taken on the
/// executor; serializing and writing (most of the time at 10k miners) run on a blocking
/// thread, so miners are not kept waiting meanwhile.
async fn file_loop(agent: Rc<Agent>, path: PathBuf, interval: Duration) {
    let path = Arc::new(path);
    let mut buf = Vec::new();
    let mut failing = false;
    loop {
        let started = Instant::now();
        let doc = snapshot(&agent);
        let snapshot_took = started.elapsed();
        let miners = doc.totals.miners;
        let target = path.clone();
        let (written, returned) = smol::unblock(move || {
            buf.clear();
            let written = serde_json::to_writer(&mut buf, &doc)
                .map_err(io::Error::other)
                .and_then(|()| write_atomically(&target, &buf));
            (written, buf)
        })
        .await;
        buf = returned;
        match written {
            Ok(()) => {
                if failing {
                    log::info!("status file {}: written again", path.display());
                    failing = false;
                }
                log::trace!(
                    "status file: {miners} miners, {} bytes in {:?} (snapshot {snapshot_took:?} on the executor)",
                    buf.len(),
                    started.elapsed()
                );
            }
            Err(e) => {
                if !failing {
                    log::warn!(
                        "status file {}: {e}; the agent keeps running without it",
                        path.display()
                    );
                    failing = true;
                }
            }
        }
        // Not kept between writes: at 10,000 miners it is 2.5 MB of resident memory
        // for a few milliseconds of work every few seconds.
        buf = Vec::new();
        Timer::after(interval).await;
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so a
/// reader sees the old document or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A document with `miners` miners spread over two sub-accounts, for tests and the
    /// write-time measurement.
    pub(crate) fn sample_doc(miners: usize) -> StatusDoc {
        let mut doc = StatusDoc {
            version: "0.1.0".into(),
            started_at: 1_764_034_242,
            updated_at: 1_764_034_300,
            uptime_seconds: 58,
            listen: "0.0.0.0:3333".into(),
            status_interval_seconds: 5,
            totals: Totals {
                miners: miners as u64,
                pools_up: 2,
                pool_connections: 2,
                shares_accepted: 120,
                shares_rejected: 1,
                accepted_last_5min: 100,
                rejected_last_5min: 1,
                hashrate: 1.2e14,
            },
            pools: vec![
                PoolStatus {
                    id: 1,
                    pool: "us.ss.btc.com:1800".into(),
                    subaccount: "farm1".into(),
                    state: "up".into(),
                    since: 1_764_034_243,
                    route: "direct".into(),
                    miners: 2,
                    jobs: 12,
                    last_job_age_seconds: Some(3),
                    shares_sent: 80,
                    shares_accepted: 79,
                    shares_rejected: 1,
                    bytes_up: 1234,
                    bytes_down: 5678,
                },
                PoolStatus {
                    id: 2,
                    pool: "eu.ss.btc.com:1800".into(),
                    subaccount: "farm\"2\\".into(),
                    state: "up".into(),
                    since: 1_764_034_244,
                    route: "socks5 127.0.0.1:1080".into(),
                    miners: 1,
                    jobs: 0,
                    last_job_age_seconds: None,
                    shares_sent: 0,
                    shares_accepted: 0,
                    shares_rejected: 0,
                    bytes_up: 10,
                    bytes_down: 20,
                },
            ],
            subaccounts: vec![SubaccountStatus {
                name: "farm1".into(),
                pool_connections: 1,
                miners: 2,
                shares_accepted: 79,
                shares_rejected: 1,
                hashrate: 8.0e13,
            }],
            miners: Vec::new(),
        };
        for i in 0..miners {
            doc.miners.push(MinerStatus {
                worker: format!("s19-{i:05}"),
                subaccount: if i % 2 == 0 { "farm1" } else { "farm2" }.into(),
                ip: format!("192.168.{}.{}", i / 250, i % 250 + 1),
                session_id: i as u16,
                pool_id: Some(1 + (i % 2) as u32),
                difficulty: 65536.0,
                version_rolling: true,
                shares_accepted: 40 + i as u64,
                shares_rejected: (i % 3) as u64,
                last_share_age_seconds: Some(5),
                connected_since: 1_764_034_250,
                hashrate: 4.0e13 + i as f64 * 1e9,
            });
        }
        doc
    }

    #[test]
    fn document_has_the_contract_shape() {
        let value = serde_json::to_value(sample_doc(1)).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let mut top = vec![
            "version",
            "started_at",
            "updated_at",
            "uptime_seconds",
            "listen",
            "status_interval_seconds",
            "totals",
            "pools",
            "subaccounts",
            "miners",
        ];
        top.sort();
        assert_eq!(keys(&value), top);
        let mut totals = vec![
            "miners",
            "pools_up",
            "pool_connections",
            "shares_accepted",
            "shares_rejected",
            "accepted_last_5min",
            "rejected_last_5min",
            "hashrate",
        ];
        totals.sort();
        assert_eq!(keys(&value["totals"]), totals);
        let mut pool = vec![
            "id",
            "pool",
            "subaccount",
            "state",
            "since",
            "route",
            "miners",
            "jobs",
            "last_job_age_seconds",
            "shares_sent",
            "shares_accepted",
            "shares_rejected",
            "bytes_up",
            "bytes_down",
        ];
        pool.sort();
        assert_eq!(keys(&value["pools"][0]), pool);
        assert!(value["pools"][1]["last_job_age_seconds"].is_null());
        let mut sub = vec![
            "name",
            "pool_connections",
            "miners",
            "shares_accepted",
            "shares_rejected",
            "hashrate",
        ];
        sub.sort();
        assert_eq!(keys(&value["subaccounts"][0]), sub);
        let mut miner = vec![
            "worker",
            "subaccount",
            "ip",
            "session_id",
            "pool_id",
            "difficulty",
            "version_rolling",
            "shares_accepted",
            "shares_rejected",
            "last_share_age_seconds",
            "connected_since",
            "hashrate",
        ];
        miner.sort();
        assert_eq!(keys(&value["miners"][0]), miner);
        assert_eq!(value["miners"][0]["hashrate"].as_f64(), Some(4.0e13));
    }

    #[test]
    fn document_round_trips() {
        let doc = sample_doc(3);
        let text = serde_json::to_string(&doc).unwrap();
        assert_eq!(serde_json::from_str::<StatusDoc>(&text).unwrap(), doc);
    }

    #[test]
    fn hashrate_is_finite_and_never_divides_by_zero() {
        assert_eq!(hashrate(1.0, 1.0), 4_294_967_296.0);
        assert_eq!(hashrate(65536.0, 0.0), 65536.0 * 4_294_967_296.0);
        assert_eq!(hashrate(f64::NAN, 10.0), 0.0);
        assert_eq!(hashrate(f64::INFINITY, 10.0), 0.0);
    }

    #[test]
    fn log_line_reads_per_minute_rates() {
        let mut doc = sample_doc(0);
        doc.uptime_seconds = 600;
        doc.totals.accepted_last_5min = 150;
        doc.totals.rejected_last_5min = 5;
        let line = log_line(&doc);
        assert!(
            line.contains("2/2 pool connections up, 0 miners, shares/min 30.0 accepted 1.0 rejected (last 5 min)"),
            "{line}"
        );
    }

    #[test]
    fn atomic_write_creates_the_directory_and_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("btcagent-status-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/status.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        // A path whose directory cannot exist fails with an error, not a panic.
        std::fs::write(dir.join("file"), b"x").unwrap();
        assert!(write_atomically(&dir.join("file/status.json"), b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The serialize-and-write cost at 10,000 miners (printed; run with --nocapture).
    #[test]
    fn write_time_at_ten_thousand_miners() {
        let doc = sample_doc(10_000);
        let dir = std::env::temp_dir().join(format!("btcagent-status-10k-{}", std::process::id()));
        let path = dir.join("status.json");
        let mut buf = Vec::new();
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            buf.clear();
            serde_json::to_writer(&mut buf, &doc).unwrap();
            write_atomically(&path, &buf).unwrap();
            best = best.min(t.elapsed());
        }
        println!(
            "status file at 10k miners: {} bytes, serialize + write {best:?}",
            buf.len()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
