//! The status snapshot of a running agent, published three ways: a JSON file rewritten
//! every `status_interval`, the optional HTTP endpoint ([`crate::http_debug`]), and a
//! one-line summary in the log every minute. `btcagent status` reads the file back.
//!
//! The document's shape is a contract with the LuCI page: change it only additively.

mod atomic_file;
pub mod history;
pub mod metrics;
mod pieces;
mod summary;
pub mod window;

pub use atomic_file::write_atomically;
pub use metrics::metrics_text;
pub use pieces::DocumentPieces;
pub use summary::{format_summary, print_summary};

use async_io::Timer;
use history::{History, HistoryDoc, OfflineWorker, PoolEvent, PoolEventCounts, SavedHistory};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
pub use window::ShareCount;
use window::ShareWindow;

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
    /// Additions (docs/status-history.md): older files read as empty.
    #[serde(default)]
    pub history: HistoryDoc,
    /// Newest first.
    #[serde(default)]
    pub pool_events: Vec<PoolEvent>,
    #[serde(default)]
    pub pool_event_counts: PoolEventCounts,
    /// Newest departure first.
    #[serde(default)]
    pub offline_workers: Vec<OfflineWorker>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Miners that logged in (authorized, or waiting for their first pool connection).
    pub miners: u64,
    /// Pool connections that are up.
    pub pools_up: u64,
    /// Pool connections the agent keeps (up or being dialled): one per slot of each
    /// sub-account group (none when every entry is identity pass-through), plus the
    /// miners' own pass-through connections that are up.
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
    /// `"agent"` (btcpool's agent protocol) or `"stratum"` (a plain Stratum pool).
    #[serde(default = "agent_protocol")]
    pub protocol: String,
    /// Stratum pools: the difficulty the pool set for the connection.
    #[serde(default)]
    pub pool_difficulty: Option<f64>,
    /// Stratum pools: shares that met the miner's difficulty but not the pool's,
    /// accepted by the agent and not sent (`shares_sent` counts those forwarded).
    #[serde(default)]
    pub shares_local: u64,
}

fn agent_protocol() -> String {
    "agent".into()
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

/// The miners' entries of a document, one at a time.
pub type MinerEntries<'a> = Box<dyn Iterator<Item = MinerStatus> + 'a>;

/// Where the status comes from. The agent implements it (`src/agent_status.rs`); the
/// publishers here and [`crate::http_debug`] only see this.
pub trait StatusSource {
    /// The document as of now without the miners' entries (`miners` is empty,
    /// `totals.miners` counts them): what the log line and the metrics need, for a
    /// few kilobytes. Records a sample, as [`StatusSource::sample`].
    fn overview(&self) -> StatusDoc;
    /// The overview and the entries of the same miners, made as they are taken, so
    /// that the document of 10,000 miners is never whole in memory.
    fn document(&self) -> (StatusDoc, MinerEntries<'_>);
    /// The whole document at once (tests, small documents).
    fn snapshot(&self) -> StatusDoc {
        let (mut doc, miners) = self.document();
        doc.miners = miners.collect();
        doc
    }
    /// Feeds the windows and rings; called every [`window::BUCKET_SECONDS`] so they
    /// have no holes when nobody asks for a document.
    fn sample(&self);
}

/// Agent-wide share accounting for the status: totals of the miners gone, the
/// five-minute window fed with the deltas of the agent's totals, and the history.
/// Plain data fed by the agent side: it knows no session.
#[derive(Default)]
pub struct Tracker {
    departed: Cell<ShareCount>,
    last_total: Cell<ShareCount>,
    window: RefCell<ShareWindow>,
    /// The address miners connect to, once bound (the config may say port 0).
    pub listen: RefCell<Option<SocketAddr>>,
    history: RefCell<History>,
    /// Where the history is kept for the next run, and the minute it was last saved.
    history_file: RefCell<Option<PathBuf>>,
    saved_minute: Cell<u64>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Keeps a leaving miner's shares in the agent's totals.
    pub fn miner_left(&self, shares: ShareCount) {
        let mut d = self.departed.get();
        d.add(shares);
        self.departed.set(d);
    }

    /// A worker that had logged in left (for the offline-workers list).
    pub fn worker_left(&self, w: OfflineWorker) {
        self.history.borrow_mut().worker_left(w);
    }

    pub fn pool_event(&self, e: PoolEvent) {
        self.history.borrow_mut().pool_event(e);
    }

    /// Shares of one sub-account's miners since they were last counted.
    pub fn subaccount_shares(&self, now_unix: u64, name: &str, delta: ShareCount) {
        self.history
            .borrow_mut()
            .add_subaccount(now_unix, name, delta);
    }

    /// Takes the shares of the miners connected now (their totals since they came);
    /// returns (agent totals, last five minutes). `uptime` in seconds.
    pub fn sample(
        &self,
        uptime: u64,
        now_unix: u64,
        connected: ShareCount,
    ) -> (ShareCount, ShareCount) {
        let mut total = self.departed.get();
        total.add(connected);
        let delta = total.since(self.last_total.get());
        self.last_total.set(total);
        let mut window = self.window.borrow_mut();
        window.add(uptime, delta);
        self.history.borrow_mut().add_farm(now_unix, delta);
        self.save_history_if_due(now_unix);
        (total, window.sum(uptime))
    }

    /// `(subaccount, worker)` of the workers on the offline list (at most
    /// [`history::MAX_OFFLINE_WORKERS`]).
    pub fn offline_names(&self) -> Vec<(String, String)> {
        self.history.borrow().offline_names()
    }

    /// History, events and offline workers as of `now_unix`; `connected` names, as
    /// `(subaccount, worker)`, the workers connected now (those on the offline list
    /// are enough: the others change nothing).
    pub fn history_parts(
        &self,
        now_unix: u64,
        connected: &HashSet<(&str, &str)>,
    ) -> (
        HistoryDoc,
        Vec<PoolEvent>,
        PoolEventCounts,
        Vec<OfflineWorker>,
    ) {
        let mut h = self.history.borrow_mut();
        h.prune_offline(now_unix, connected);
        (
            h.doc(now_unix),
            h.pool_events(),
            h.event_counts(),
            h.offline_workers(),
        )
    }

    /// Keeps the history in `path` from now on (saved once a minute), and takes what a
    /// previous run left there. A missing file is normal; a bad one is logged and
    /// replaced.
    pub fn keep_history_in(&self, path: PathBuf) {
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<SavedHistory>(&bytes) {
                Ok(saved) => self.history.borrow_mut().restore(&saved),
                Err(e) => log::warn!(
                    "history file {}: {e}; starting a new history",
                    path.display()
                ),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("history file {}: {e}", path.display()),
        }
        *self.history_file.borrow_mut() = Some(path);
    }

    /// Once a minute: small (kilobytes per sub-account), written on the executor.
    fn save_history_if_due(&self, now_unix: u64) {
        let minute = now_unix / 60;
        if minute != self.saved_minute.get() {
            self.saved_minute.set(minute);
            self.save_history(now_unix);
        }
    }

    /// Writes the history file now (also at shutdown, so a restart loses nothing).
    pub fn save_history(&self, now_unix: u64) {
        let Some(path) = self.history_file.borrow().clone() else {
            return;
        };
        let saved = self.history.borrow().saved(now_unix);
        let result = serde_json::to_vec(&saved)
            .map_err(io::Error::other)
            .and_then(|bytes| write_atomically(&path, &bytes));
        if let Err(e) = result {
            log::debug!("history file {}: {e}", path.display());
        }
    }
}

/// The history file beside `status_file`: `status.json` -> `status.history.json`.
pub fn history_path(status_file: &Path) -> PathBuf {
    let mut name = status_file
        .file_stem()
        .map(|s| s.to_os_string())
        .unwrap_or_else(|| "status".into());
    name.push(".history.json");
    status_file.with_file_name(name)
}

pub fn unix_seconds(t: SystemTime) -> u64 {
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

/// Samples every bucket so the window and rings have no holes when nothing else asks.
pub async fn sample_loop(source: Rc<dyn StatusSource>) {
    loop {
        Timer::after(Duration::from_secs(window::BUCKET_SECONDS)).await;
        source.sample();
    }
}

/// The one-line summary in the log every minute.
pub async fn log_loop(source: Rc<dyn StatusSource>) {
    loop {
        Timer::after(LOG_SUMMARY_INTERVAL).await;
        log::info!("{}", log_line(&source.overview()));
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
/// it works again; the agent keeps running either way.
pub async fn file_loop(source: Rc<dyn StatusSource>, path: PathBuf, interval: Duration) {
    let path = Arc::new(path);
    let mut failing = false;
    loop {
        let started = Instant::now();
        match write_file(&*source, path.clone()).await {
            Ok((miners, bytes)) => {
                if failing {
                    log::info!("status file {}: written again", path.display());
                    failing = false;
                }
                log::trace!(
                    "status file: {miners} miners, {bytes} bytes in {:?}",
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
        Timer::after(interval).await;
    }
}

/// One document into `path`, a piece at a time: each piece is serialized on the
/// executor (well under a millisecond) and written on a blocking thread, so neither the
/// miners wait for the whole document nor does the whole document sit in memory.
/// Returns the miners and bytes written.
async fn write_file(source: &dyn StatusSource, path: Arc<PathBuf>) -> io::Result<(u64, usize)> {
    let (overview, miners) = source.document();
    let count = overview.totals.miners;
    let (mut pieces, mut buf) = DocumentPieces::new(&overview, miners)?;
    drop(overview);
    let mut file = smol::unblock(move || atomic_file::AtomicFile::create(&path)).await?;
    let mut bytes = 0;
    loop {
        bytes += buf.len();
        let (written, f, b) = smol::unblock(move || {
            let written = file.write_all(&buf);
            buf.clear();
            (written, file, buf)
        })
        .await;
        written?;
        (file, buf) = (f, b);
        if !pieces.next_piece(&mut buf)? {
            break;
        }
    }
    smol::unblock(move || file.commit()).await?;
    Ok((count, bytes))
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
                    protocol: "agent".into(),
                    pool_difficulty: None,
                    shares_local: 0,
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
                    protocol: "stratum".into(),
                    pool_difficulty: Some(65536.0),
                    shares_local: 7,
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
            history: HistoryDoc::default(),
            pool_events: Vec::new(),
            pool_event_counts: PoolEventCounts::default(),
            offline_workers: Vec::new(),
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

    /// `doc` with an hour of history for the farm and two sub-accounts, pool events
    /// and `offline` offline workers, as a running agent fills them in.
    pub(crate) fn with_history(mut doc: StatusDoc, offline: usize) -> StatusDoc {
        let mut h = History::new();
        let now = doc.updated_at;
        for m in 0..60u64 {
            let t = now - 3600 + m * 60;
            let d = |n: u64| ShareCount {
                accepted: n,
                rejected: n / 20,
                difficulty: n as f64 * 65536.0,
            };
            h.add_farm(t, d(100 + m));
            h.add_subaccount(t, "farm1", d(60 + m));
            h.add_subaccount(t, "farm2", d(40));
        }
        let event = |at, kind: &str, why: &str| {
            PoolEvent::new(
                at,
                kind,
                1,
                "us.ss.btc.com:1800".into(),
                "farm1".into(),
                why,
            )
        };
        h.pool_event(event(now - 3000, "up", ""));
        h.pool_event(event(
            now - 1800,
            "down",
            "read timeout (60 s without a byte)",
        ));
        h.pool_event(event(now - 1790, "dial_failed", "connection refused"));
        h.pool_event(event(now - 1700, "up", ""));
        for i in 0..offline {
            h.worker_left(OfflineWorker {
                worker: format!("gone-{i:05}"),
                subaccount: "farm1".into(),
                ip: format!("192.168.9.{}", i % 250 + 1),
                last_seen: now - 7200 + i as u64,
                last_hashrate: 9.5e13,
                connected_seconds: 86_000,
                shares_accepted: 5000,
                shares_rejected: 3,
            });
        }
        doc.history = h.doc(now);
        // Whole numbers, so that a JSON round trip gives the same floats back.
        for span in [&mut doc.history.minutes, &mut doc.history.ten_minutes] {
            for p in span
                .farm
                .iter_mut()
                .chain(span.subaccounts.values_mut().flatten())
            {
                p.3 = p.3.round();
            }
        }
        doc.pool_events = h.pool_events();
        doc.pool_event_counts = h.event_counts();
        doc.offline_workers = h.offline_workers();
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
            // Additions (docs/status-history.md).
            "history",
            "pool_events",
            "pool_event_counts",
            "offline_workers",
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
            "protocol",
            "pool_difficulty",
            "shares_local",
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
        for doc in [sample_doc(3), with_history(sample_doc(3), 4)] {
            let text = serde_json::to_string(&doc).unwrap();
            assert_eq!(serde_json::from_str::<StatusDoc>(&text).unwrap(), doc);
        }
    }

    #[test]
    fn history_members_have_the_documented_shape() {
        let value = serde_json::to_value(with_history(sample_doc(0), 1)).unwrap();
        let h = &value["history"];
        assert_eq!(h["minutes"]["bucket_seconds"], 60);
        assert_eq!(h["ten_minutes"]["bucket_seconds"], 600);
        let p = &h["minutes"]["farm"][0];
        assert_eq!(
            p.as_array().unwrap().len(),
            4,
            "[start, accepted, rejected, hashrate]"
        );
        assert!(h["minutes"]["subaccounts"]["farm2"].is_array());
        let e = &value["pool_events"][0];
        assert_eq!(e["event"], "up", "newest first");
        let mut keys: Vec<_> = e.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "at",
                "count",
                "event",
                "last_at",
                "pool",
                "pool_id",
                "reason",
                "subaccount"
            ]
        );
        assert_eq!(value["pool_event_counts"]["down"], 1);
        let mut keys: Vec<_> = value["offline_workers"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "connected_seconds",
                "ip",
                "last_hashrate",
                "last_seen",
                "shares_accepted",
                "shares_rejected",
                "subaccount",
                "worker"
            ]
        );
    }

    #[test]
    fn a_file_from_before_the_history_still_reads() {
        let mut value = serde_json::to_value(sample_doc(1)).unwrap();
        for key in [
            "history",
            "pool_events",
            "pool_event_counts",
            "offline_workers",
        ] {
            value.as_object_mut().unwrap().remove(key);
        }
        let doc: StatusDoc = serde_json::from_value(value).unwrap();
        assert_eq!(doc, sample_doc(1));
    }

    #[test]
    fn tracker_totals_keep_departed_miners_and_feed_the_rings() {
        let t = Tracker::new();
        let now = 1_764_000_000;
        let s = |a, r| ShareCount {
            accepted: a,
            rejected: r,
            difficulty: a as f64,
        };
        assert_eq!(t.sample(5, now, s(3, 1)), (s(3, 1), s(3, 1)));
        // A miner with 2 of those leaves; one more share from the others.
        t.miner_left(s(2, 0));
        assert_eq!(t.sample(15, now + 10, s(2, 1)), (s(4, 1), s(4, 1)));
        t.subaccount_shares(now + 10, "farm1", s(4, 1));
        let (history, ..) = t.history_parts(now + 10, &HashSet::new());
        assert_eq!(history.minutes.farm.len(), 1);
        assert_eq!(history.minutes.farm[0].1, 4);
        assert_eq!(history.minutes.subaccounts["farm1"][0].1, 4);
    }

    #[test]
    fn the_history_file_sits_beside_the_status_file_and_survives_a_restart() {
        assert_eq!(
            history_path(Path::new("/var/run/btcagent/status.json")),
            Path::new("/var/run/btcagent/status.history.json")
        );
        let dir =
            std::env::temp_dir().join(format!("btcagent-history-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("status.history.json");
        let now = 1_764_000_000;
        let first = Tracker::new();
        first.keep_history_in(path.clone()); // none yet: starts empty
        first.pool_event(PoolEvent::new(
            now,
            "up",
            1,
            "p:1".into(),
            "farm1".into(),
            "",
        ));
        first.sample(1, now, ShareCount::default()); // a new minute: saved
        let second = Tracker::new();
        second.keep_history_in(path.clone());
        let (history, events, ..) = second.history_parts(now + 1, &HashSet::new());
        assert_eq!(history.minutes.farm.len(), 1);
        assert_eq!(events.len(), 1);
        // A damaged file is replaced, not fatal.
        std::fs::write(&path, b"{not json").unwrap();
        let third = Tracker::new();
        third.keep_history_in(path.clone());
        assert!(third.history_parts(now, &HashSet::new()).1.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
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

    /// The serialize-and-write cost at 10,000 miners, whole and a piece at a time as
    /// the agent writes it (printed; run with --nocapture).
    #[test]
    fn write_time_at_ten_thousand_miners() {
        let doc = sample_doc(10_000);
        let mut overview = doc.clone();
        let miners = std::mem::take(&mut overview.miners);
        let dir = std::env::temp_dir().join(format!("btcagent-status-10k-{}", std::process::id()));
        let path = dir.join("status.json");
        let (mut whole, mut pieced) = (Duration::MAX, Duration::MAX);
        let mut len = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let buf = serde_json::to_vec(&doc).unwrap();
            write_atomically(&path, &buf).unwrap();
            whole = whole.min(t.elapsed());
            len = buf.len();

            let t = Instant::now();
            let entries = Box::new(miners.iter().cloned());
            let (mut pieces, mut buf) = DocumentPieces::new(&overview, entries).unwrap();
            let mut file = atomic_file::AtomicFile::create(&path).unwrap();
            loop {
                file.write_all(&buf).unwrap();
                buf.clear();
                if !pieces.next_piece(&mut buf).unwrap() {
                    break;
                }
            }
            file.commit().unwrap();
            pieced = pieced.min(t.elapsed());
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, len);
        println!(
            "status file at 10k miners: {len} bytes, serialize + write {whole:?} whole, {pieced:?} in pieces"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
