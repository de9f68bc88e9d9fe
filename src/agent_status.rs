//! The agent's side of the status: reads the live sessions into a [`StatusDoc`] and
//! feeds the history with what they did. The only file that knows both the sessions
//! and the document; `status` formats and publishes without knowing [`Agent`], and
//! `agent.rs` sees this only as the [`StatusSource`] it hands to the publishers.

use crate::agent::Agent;
use crate::miner::{MinerSession, MinerState};
use crate::status::{
    hashrate, unix_seconds, window, MinerEntries, MinerStatus, PoolStatus, ShareCount, StatusDoc,
    StatusSource, SubaccountStatus, Totals,
};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

impl StatusSource for Agent {
    fn overview(&self) -> StatusDoc {
        document(self).0
    }

    fn document(&self) -> (StatusDoc, MinerEntries<'_>) {
        document(self)
    }

    fn sample(&self) {
        let now = unix_seconds(SystemTime::now());
        let miners = logged_in(self);
        record(self, &miners, now);
    }
}

/// Miners that logged in (authorized, or waiting for their first pool connection).
fn logged_in(agent: &Agent) -> Vec<Rc<MinerSession>> {
    let mut miners = agent.miners();
    miners.retain(|m| {
        matches!(
            m.state.get(),
            MinerState::Authorized | MinerState::WaitingForPool
        )
    });
    miners
}

/// Puts the shares since the last sample in the window and the rings; returns (agent
/// totals, last five minutes).
fn record(agent: &Agent, miners: &[Rc<MinerSession>], now: u64) -> (ShareCount, ShareCount) {
    let fallback = agent.fallback_subaccount();
    let mut connected = ShareCount::default();
    let mut per_sub: HashMap<String, ShareCount> = HashMap::new();
    for m in miners {
        connected.add(m.stats.shares());
        per_sub
            .entry(m.subaccount(&fallback))
            .or_default()
            .add(m.stats.take_history_delta());
    }
    // Zero deltas too: a bucket that exists says the sub-account had miners then.
    for (name, delta) in &per_sub {
        agent.status.subaccount_shares(now, name, *delta);
    }
    agent
        .status
        .sample(agent.started.elapsed().as_secs(), now, connected)
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

/// Takes the overview now and returns it with the entries of the same miners, each made
/// when it is taken (with its counters as of then). O(miners + pools); only the entries
/// allocate per miner, one at a time.
pub fn document(agent: &Agent) -> (StatusDoc, MinerEntries<'static>) {
    let now = SystemTime::now();
    let now_instant = Instant::now();
    let updated_at = unix_seconds(now);
    let uptime = now_instant.duration_since(agent.started);
    let cfg = agent.config();
    let tracker = &agent.status;

    let mut miners_now = logged_in(agent);
    let (total, last_5min) = record(agent, &miners_now, updated_at);
    miners_now.sort_by_key(|m| m.sid);

    let groups = agent.groups();
    // The slots dial only the entries miners share: with none, each miner's own
    // connections (identity pass-through) are all there is.
    let slots = if cfg.pools.iter().all(crate::pool::is_passthrough) {
        0
    } else {
        cfg.advanced.pool_connection_number_per_subaccount as u64
    };
    let mut passthrough = 0u64;
    let mut subaccounts: HashMap<String, SubaccountStatus> = HashMap::new();
    let mut pools = Vec::new();
    for g in &groups {
        for s in g.sessions() {
            if crate::pool::is_passthrough(&s.entry) {
                passthrough += 1;
            }
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
                last_job_age_seconds: age(now_instant, st.last_job_at.get()),
                shares_sent: st.shares_sent.get() as u64,
                shares_accepted: st.shares_accepted.get() as u64,
                shares_rejected: st.shares_rejected.get() as u64,
                bytes_up: st.bytes_up.get(),
                bytes_down: st.bytes_down.get(),
                protocol: if s.is_stratum() { "stratum" } else { "agent" }.into(),
                pool_difficulty: s.is_stratum().then(|| s.pool_difficulty()),
                shares_local: st.shares_local.get() as u64,
            });
        }
    }
    pools.sort_by_key(|p| p.id);

    // The offline workers that came back are pruned from that list; it holds at most
    // MAX_OFFLINE_WORKERS, so this looks the miners up in it rather than building a
    // set of every miner.
    let offline = tracker.offline_names();
    let offline: HashSet<(&str, &str)> = offline
        .iter()
        .map(|(s, w)| (s.as_str(), w.as_str()))
        .collect();
    let mut back: Vec<(String, Rc<str>)> = Vec::new();
    let fallback = agent.fallback_subaccount();
    for m in &miners_now {
        let subaccount = m.subaccount(&fallback);
        let ms = &m.stats;
        let connected = m.connected_at.age(now_instant);
        let entry = sub(&mut subaccounts, &subaccount);
        entry.miners += 1;
        entry.shares_accepted += ms.accepted.get() as u64;
        entry.shares_rejected += ms.rejected.get() as u64;
        entry.hashrate += hashrate(ms.accepted_difficulty.get(), connected.as_secs_f64());
        let worker = m.worker();
        if offline.contains(&(subaccount.as_str(), &*worker)) {
            back.push((subaccount, worker));
        }
    }
    let mut subaccounts: Vec<SubaccountStatus> = subaccounts.into_values().collect();
    subaccounts.sort_by(|a, b| a.name.cmp(&b.name));

    let back: HashSet<(&str, &str)> = back.iter().map(|(s, w)| (s.as_str(), &**w)).collect();
    let (history, pool_events, pool_event_counts, offline_workers) =
        tracker.history_parts(updated_at, &back);

    let totals = Totals {
        miners: miners_now.len() as u64,
        pools_up: pools.iter().filter(|p| p.state == "up").count() as u64,
        pool_connections: groups.len() as u64 * slots + passthrough,
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
    let doc = StatusDoc {
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
        miners: Vec::new(),
        history,
        pool_events,
        pool_event_counts,
        offline_workers,
    };
    // The entries keep these sessions (and a departed miner's socket) alive until the
    // document is written: milliseconds for the file, at most http_debug's write
    // timeout for a slow /status reader.
    let entries = miners_now
        .into_iter()
        .map(move |m| miner_entry(&m, &fallback, now, now_instant));
    (doc, Box::new(entries))
}

/// Seconds since `t`, if it happened.
fn age(now: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| now.saturating_duration_since(t).as_secs())
}

/// One miner's entry, with its counters as of now; times are those of the overview's
/// moment, so every entry of a document is dated alike.
fn miner_entry(m: &MinerSession, fallback: &str, now: SystemTime, at: Instant) -> MinerStatus {
    let connected = m.connected_at.age(at);
    let ms = &m.stats;
    MinerStatus {
        worker: m.worker().to_string(),
        subaccount: m.subaccount(fallback),
        ip: m.peer().ip().to_string(),
        session_id: m.sid,
        pool_id: m.pool().map(|p| p.id),
        difficulty: ms.difficulty.get(),
        version_rolling: m.version_rolling.get(),
        shares_accepted: ms.accepted.get() as u64,
        shares_rejected: ms.rejected.get() as u64,
        last_share_age_seconds: age(at, ms.last_share.get().instant()),
        connected_since: unix_seconds(now - connected),
        hashrate: hashrate(ms.accepted_difficulty.get(), connected.as_secs_f64()),
    }
}
