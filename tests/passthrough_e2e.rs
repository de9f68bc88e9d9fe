//! Identity pass-through (docs/stratum-upstream.md §8): a Stratum pool entry with
//! `identity_passthrough` gives each miner its own upstream connection, authorized as
//! the entry's user with the miner's worker name; the plain-Stratum pool simulator
//! checks every share by hashing and reports the user of each connection.

mod common;

use btcagent_sim::stratum_pool::{StratumPool, StratumPoolConfig, StratumPoolStats};
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

fn stratum_pool(config: StratumPoolConfig) -> StratumPool {
    StratumPool::start(config).expect("stratum pool simulator starts")
}

fn passthrough_entry(addr: SocketAddr, user: &str) -> Value {
    json!({"protocol": "stratum", "host": addr.ip().to_string(), "port": addr.port(),
           "user": user, "identity_passthrough": true})
}

fn shared_entry(addr: SocketAddr, user: &str) -> Value {
    json!({"protocol": "stratum", "host": addr.ip().to_string(), "port": addr.port(), "user": user})
}

/// Single-user mode, the given pool list.
fn agent_for(pools: Vec<Value>, extra: Value) -> AgentProc {
    let mut config = config_for(&[], extra);
    config["multi_user_mode"] = json!(false);
    config["pools"] = Value::Array(pools);
    AgentProc::start(config)
}

/// The users of the pool's open connections, sorted.
fn open_users(pool: &StratumPool) -> Vec<String> {
    users_of_open(&pool.stats())
}

/// The same, from a snapshot of the pool's figures (a connection is open at the pool
/// before its authorize is read there: it has no user yet).
fn users_of_open(stats: &StratumPoolStats) -> Vec<String> {
    let mut users: Vec<String> = stats
        .open_connections()
        .filter_map(|c| c.user.clone())
        .collect();
    users.sort();
    users
}

/// Equal but for the last digits of a decimal difficulty as the miner parses it.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= b.abs() * 1e-9
}

/// Reads the status file until `until` holds for it.
fn status_until(path: &Path, what: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let doc: Option<Value> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match doc {
            Some(doc) if until(&doc) => return doc,
            doc => assert!(
                Instant::now() < deadline,
                "status file never showed {what}: {doc:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three miners through a pass-through entry: three pool connections, each authorized
/// as its own worker, every forwarded share valid at the pool, the pool's difficulty of
/// each connection followed by its miner alone; the status shows the three; a miner
/// leaving closes its connection.
#[test]
fn each_miner_gets_its_own_connection_as_its_own_worker() {
    let pool = stratum_pool(StratumPoolConfig::ckpool());
    let dir = TempDir::new("passthrough-status");
    let status_file = dir.0.join("status.json");
    let agent = agent_for(
        vec![passthrough_entry(pool.addr(), "acct.{worker}")],
        json!({"status_file": status_file, "status_interval_seconds": 1,
               "advanced": {"stratum_start_difficulty": 1024, "stratum_min_difficulty": 1}}),
    );
    let pool_difficulty = 2f64.powi(-30);
    let raised = 2f64.powi(-24);
    block_on(async {
        let mut miners = Vec::new();
        for name in ["rig1", "rig2", "rig3"] {
            let m = Miner::login(&agent, name, true).await;
            assert!(
                close(m.difficulty, pool_difficulty),
                "{name} has the pool's difficulty, not the configured start or floor: {}",
                m.difficulty
            );
            miners.push(m);
        }
        assert_eq!(open_users(&pool), ["acct.rig1", "acct.rig2", "acct.rig3"]);
        for m in miners.iter_mut() {
            for bits in [0, 0x2000] {
                let r = m.submit_share(0, bits).await;
                assert_eq!(r["result"], json!(true), "{}: {r}", m.user);
            }
        }
        assert!(
            pool.wait_until(T, |s| s.totals.valid >= 6),
            "{}",
            pool.stats().summary()
        );
        // The pool raises rig2's difficulty alone: rig2 follows, the others keep theirs.
        let rig2 = pool
            .stats()
            .open_connections()
            .find(|c| c.user.as_deref() == Some("acct.rig2"))
            .map(|c| c.id)
            .unwrap();
        pool.set_difficulty(Some(rig2), "0.000000059604644775390625")
            .unwrap();
        pool.new_job(true);
        for m in miners.iter_mut() {
            m.wait_job().await;
        }
        assert!(
            close(miners[1].difficulty, raised),
            "{}",
            miners[1].difficulty
        );
        assert!(close(miners[0].difficulty, pool_difficulty));
        assert!(close(miners[2].difficulty, pool_difficulty));
        for m in miners.iter_mut() {
            let r = m.submit_share(0, 0).await;
            assert_eq!(r["result"], json!(true), "{}: {r}", m.user);
        }
        assert!(
            pool.wait_until(T, |s| s.totals.valid >= 9),
            "{}",
            pool.stats().summary()
        );
        let s = pool.stats();
        assert_eq!(s.totals.total(), 9, "every share valid: {}", s.summary());
        for name in ["acct.rig1", "acct.rig2", "acct.rig3"] {
            assert_eq!(s.worker(name).valid, 3, "{name}: {}", s.summary());
        }
        let credited = s
            .open_connections()
            .find(|c| c.id == rig2)
            .unwrap()
            .credited_difficulty;
        assert!(
            credited >= raised + 2.0 * pool_difficulty,
            "rig2's last share was credited at the raised difficulty: {credited}"
        );

        let doc = status_until(&status_file, "three pass-through connections", |doc| {
            doc["pools"].as_array().is_some_and(|p| {
                p.iter()
                    .filter(|c| c["state"] == "up" && c["miners"] == 1)
                    .count()
                    == 3
            })
        });
        assert_eq!(doc["totals"]["pool_connections"], 3, "{doc:#}");
        assert_eq!(doc["totals"]["pools_up"], 3, "{doc:#}");
        let mut users: Vec<&str> = doc["pools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["subaccount"].as_str())
            .collect();
        users.sort();
        assert_eq!(users, ["acct.rig1", "acct.rig2", "acct.rig3"], "{doc:#}");

        // rig3 leaves: its connection closes, the others stay.
        drop(miners.pop());
        assert!(
            pool.wait_until(T, |s| s.open_count() == 2),
            "{}\n{}",
            pool.stats().summary(),
            agent.log()
        );
        assert_eq!(open_users(&pool), ["acct.rig1", "acct.rig2"]);
        assert_eq!(miners[0].submit_share(0, 0).await["result"], json!(true));
    });
}

/// The pass-through pool goes away: its miners stay connected and move to the next
/// entry of the list, a Stratum pool the miners share, with nothing but a new job.
#[test]
fn failover_from_a_passthrough_pool_to_a_shared_stratum_pool() {
    let first = stratum_pool(StratumPoolConfig::ckpool());
    let second = stratum_pool(StratumPoolConfig::default());
    let agent = agent_for(
        vec![
            passthrough_entry(first.addr(), "acct.{worker}"),
            shared_entry(second.addr(), "acct.backup"),
        ],
        json!({"advanced": {"pool_failover_hold_seconds": 20}}),
    );
    block_on(async {
        let mut a = Miner::login(&agent, "rig1", true).await;
        let mut b = Miner::login(&agent, "rig2", false).await;
        let extranonce1 = a.extranonce1.clone();
        assert_eq!(open_users(&first), ["acct.rig1", "acct.rig2"]);
        assert_eq!(a.submit_share(0, 0).await["result"], json!(true));
        assert_eq!(b.submit_share(0, 0).await["result"], json!(true));
        assert!(first.wait_until(T, |s| s.totals.valid == 2));
        first.stop();
        a.wait_job().await;
        b.wait_job().await;
        for m in [&mut a, &mut b] {
            let r = m.submit_share(0, 0).await;
            assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
        }
        assert_eq!(a.extranonce1, extranonce1, "no new subscribe was needed");
    });
    assert!(
        second.wait_until(T, |s| s.worker("acct.backup").valid == 2),
        "{}\n{}",
        second.stats().summary(),
        agent.log()
    );
    let s = second.stats();
    assert_eq!(s.totals.total(), 2, "{}", s.summary());
    assert_eq!(s.open_count(), 1, "one shared connection carries both");
    assert!(
        agent.wait_log("rig2 127.0.0.1: on the shared pool#", T),
        "{}",
        agent.log()
    );
}

/// A pass-through pool with an extranonce2 below 4 bytes is refused with its reason,
/// and the miner goes on to the next entry of the list.
#[test]
fn a_small_extranonce2_passthrough_pool_is_skipped_for_the_next_entry() {
    let small = stratum_pool(StratumPoolConfig {
        extranonce2_size: 3,
        ..StratumPoolConfig::default()
    });
    let second = stratum_pool(StratumPoolConfig::default());
    let agent = agent_for(
        vec![
            passthrough_entry(small.addr(), "acct.{worker}"),
            shared_entry(second.addr(), "acct.backup"),
        ],
        json!({}),
    );
    block_on(async {
        let mut m = Miner::login(&agent, "rig1", false).await;
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
    });
    assert!(second.wait_until(T, |s| s.worker("acct.backup").valid == 1));
    assert!(
        agent.wait_log(
            "extranonce2 is 3 bytes: identity pass-through needs 4 or more",
            T
        ),
        "{}",
        agent.log()
    );
    assert_eq!(small.stats().totals.total(), 0);
}

/// Pass-through pools of 6 and 4 bytes: each miner's own connection splits as a
/// shared one would. The first miner, told the standard layout at subscribe (no
/// connection to that pool was up yet), is told its new one once its connection is up
/// (`mining.set_extranonce`: it subscribed to it); a miner arriving while one is up is
/// told the pool's layout at subscribe, so it needs no reconnect even though it did not
/// subscribe to extranonce changes. Every share is valid at the pool.
#[test]
fn passthrough_pools_of_4_and_6_bytes_split_each_miners_connection() {
    for size in [6usize, 4] {
        let pool = stratum_pool(StratumPoolConfig {
            extranonce2_size: size,
            ..StratumPoolConfig::default()
        });
        let agent = agent_for(
            vec![passthrough_entry(pool.addr(), "acct.{worker}")],
            json!({}),
        );
        let miner_size = if size == 4 { 3 } else { 4 };
        block_on(async {
            let mut told = Miner::login_expecting(&agent, "told", true, 4, true).await;
            // Its extranonce1, in hex: the session id (2 bytes) or a prefix (1 byte).
            let ex1_hex = if size == 4 { 2 } else { 4 };
            while told.extranonce1.len() != ex1_hex {
                told.wait_job().await;
            }
            assert_eq!(told.extranonce2_size, miner_size);
            let r = told.submit_share(0, 0).await;
            assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
            let mut asked = Miner::login_expecting(&agent, "asked", false, miner_size, false).await;
            let r = asked.submit_share(0, 0).await;
            assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
            assert!(!asked.asked_to_reconnect, "{}", agent.log());
        });
        assert!(
            pool.wait_until(T, |s| s.worker("acct.told").valid == 1
                && s.worker("acct.asked").valid == 1),
            "{}\n{}",
            pool.stats().summary(),
            agent.log()
        );
        assert_eq!(pool.stats().totals.total(), 2, "{}", pool.stats().summary());
    }
}

/// Multi-user mode: the user is the template with the miner's sub-account and worker.
#[test]
fn multi_user_mode_passes_sub_account_and_worker() {
    let pool = stratum_pool(StratumPoolConfig::ckpool());
    let mut config = config_for(&[], json!({}));
    config["pools"] = json!([passthrough_entry(pool.addr(), "{sub}.{worker}")]);
    let agent = AgentProc::start(config);
    block_on(async {
        let mut alice = Miner::login(&agent, "alice.rig1", false).await;
        let mut bob = Miner::login(&agent, "bob.rig2", false).await;
        assert_eq!(open_users(&pool), ["alice.rig1", "bob.rig2"]);
        assert_eq!(alice.submit_share(0, 0).await["result"], json!(true));
        assert_eq!(bob.submit_share(0, 0).await["result"], json!(true));
    });
    assert!(pool.wait_until(T, |s| {
        s.worker("alice.rig1").valid == 1 && s.worker("bob.rig2").valid == 1
    }));
}

/// The open-files limit bounds the pass-through connections (two descriptors a miner):
/// lowered under the running agent to room for one, the second miner is not given a
/// connection of its own but goes on to the next entry, a shared pool, with a warning.
#[cfg(target_os = "linux")]
#[test]
fn miners_beyond_the_open_files_limit_go_on_to_the_next_entry() {
    let first = stratum_pool(StratumPoolConfig::ckpool());
    let second = stratum_pool(StratumPoolConfig::default());
    let agent = agent_for(
        vec![
            passthrough_entry(first.addr(), "acct.{worker}"),
            shared_entry(second.addr(), "acct.backup"),
        ],
        json!({}),
    );
    // 89 descriptors: a quarter for handshakes and 64 kept leave 3, one connection's two.
    let limit = libc::rlimit {
        rlim_cur: 89,
        rlim_max: 89,
    };
    let pid = agent.child.id() as libc::pid_t;
    // SAFETY: prlimit only reads the struct passed to it; no old limit is asked for.
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    block_on(async {
        let mut a = Miner::login(&agent, "rig1", false).await;
        let mut b = Miner::login(&agent, "rig2", false).await;
        assert_eq!(open_users(&first), ["acct.rig1"]);
        assert_eq!(a.submit_share(0, 0).await["result"], json!(true));
        assert_eq!(b.submit_share(0, 0).await["result"], json!(true));
    });
    assert!(first.wait_until(T, |s| s.worker("acct.rig1").valid == 1));
    assert!(second.wait_until(T, |s| s.worker("acct.backup").valid == 1));
    assert!(
        agent.wait_log("the open-files limit allows 1 pass-through connections", T),
        "{}",
        agent.log()
    );
}

/// A reload to another pass-through pool: each miner's connection closes and its miner
/// walks the new list, still connected, onto a connection of its own there.
#[test]
fn a_reload_moves_each_miner_to_its_own_connection_at_the_new_pool() {
    let old_pool = stratum_pool(StratumPoolConfig::ckpool());
    let new_pool = stratum_pool(StratumPoolConfig::default());
    let config = |pool: &StratumPool| {
        let mut config = config_for(&[], json!({}));
        config["multi_user_mode"] = json!(false);
        config["pools"] = json!([passthrough_entry(pool.addr(), "acct.{worker}")]);
        config
    };
    let agent = AgentProc::start(config(&old_pool));
    block_on(async {
        let mut a = Miner::login(&agent, "rig1", true).await;
        let mut b = Miner::login(&agent, "rig2", false).await;
        assert_eq!(open_users(&old_pool), ["acct.rig1", "acct.rig2"]);
        agent.rewrite_config(&serde_json::to_vec_pretty(&config(&new_pool)).unwrap());
        agent.sighup();
        assert!(agent.wait_log("reload: applied", T), "{}", agent.log());
        // Both connections open and authorized as their workers.
        assert!(
            new_pool.wait_until(T, |s| s.open_count() == 2
                && users_of_open(s) == ["acct.rig1", "acct.rig2"]),
            "{}\n{}",
            new_pool.stats().summary(),
            agent.log()
        );
        assert!(old_pool.wait_until(T, |s| s.open_count() == 0));
        for m in [&mut a, &mut b] {
            // Once the new connection's job is there, a share on it is valid there.
            let prefix = new_connection_prefix(&agent, &m.user);
            while !m.job.as_ref().is_some_and(|j| j.id.starts_with(&prefix)) {
                m.wait_job().await;
            }
            let r = m.submit_share(0, 0).await;
            assert_eq!(r["result"], json!(true), "{}: {r}\n{}", m.user, agent.log());
        }
        assert!(!agent.log().contains("disconnected"), "{}", agent.log());
    });
    assert!(new_pool.wait_until(T, |s| {
        s.worker("acct.rig1").valid == 1 && s.worker("acct.rig2").valid == 1
    }));
}

/// The job id prefix (`"<connection>-"`) of `user`'s second pass-through connection,
/// once the agent's log says it is up.
fn new_connection_prefix(agent: &AgentProc, user: &str) -> String {
    let needle = format!("/acct.{user}: up via");
    let deadline = Instant::now() + T;
    loop {
        let log = agent.log();
        let ups: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
        if let Some(line) = ups.get(1) {
            let id = line
                .split("pool#")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or("?");
            return format!("{id}-");
        }
        assert!(
            Instant::now() < deadline,
            "{user}: no second connection up\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
