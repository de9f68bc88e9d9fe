//! btcagent in front of plain Stratum V1 pools (issue 15): real shares from scripted
//! miners through the agent binary to the plain-Stratum pool simulator, which checks
//! every share by rebuilding the coinbase and header and hashing them.

mod common;

use btcagent_sim::bitcoin::{hash_meets_target, hex_decode, target_for_difficulty};
use btcagent_sim::stratum_pool::{StratumPool, StratumPoolConfig, StratumPoolStats};
use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;

fn stratum_pool(config: StratumPoolConfig) -> StratumPool {
    StratumPool::start(config).expect("stratum pool simulator starts")
}

fn stratum_entry(addr: SocketAddr, user: &str) -> Value {
    json!({"protocol": "stratum", "host": addr.ip().to_string(), "port": addr.port(), "user": user})
}

/// Single-user mode, one connection, the given pool list.
fn agent_for(pools: Vec<Value>, extra: Value) -> AgentProc {
    let mut config = config_for(&[], extra);
    config["multi_user_mode"] = json!(false);
    config["pools"] = Value::Array(pools);
    AgentProc::start(config)
}

/// Whether the share `miner` just found meets `difficulty` (the pool's target).
fn meets(miner: &Miner, share: &(String, u32, u32, u32), difficulty: f64) -> bool {
    let job = miner.job.as_ref().unwrap();
    let ex1 = hex_decode(&miner.extranonce1).unwrap();
    let root = job.work.merkle_root(&[&ex1, &share.1.to_be_bytes()]);
    let hash = job
        .work
        .header_hash(&root, job.work.version, share.2, share.3);
    hash_meets_target(&hash, &target_for_difficulty(difficulty))
}

async fn submit(miner: &mut Miner, share: &(String, u32, u32, u32)) -> Value {
    let params = json!([
        miner.user,
        share.0,
        format!("{:08x}", share.1),
        format!("{:08x}", share.2),
        format!("{:08x}", share.3)
    ]);
    let id = miner.conn.request("mining.submit", params).await.unwrap();
    miner.response(id).await
}

/// Equal but for the last digits of a decimal difficulty as the miner parses it.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= b.abs() * 1e-9
}

fn totals(pool: &StratumPool) -> StratumPoolStats {
    pool.stats()
}

/// Every share reaches the pool valid, under the connection's user, on a pool that
/// answers as BIP 310 says and on one that answers as ckpool does.
#[test]
fn shares_reach_the_pool_valid() {
    for (name, config) in [
        ("bip310", StratumPoolConfig::default()),
        ("ckpool", StratumPoolConfig::ckpool()),
        ("ckpool-2024", StratumPoolConfig::ckpool_2024()),
    ] {
        let pool = stratum_pool(config);
        let agent = agent_for(vec![stratum_entry(pool.addr(), "acct.farm1")], json!({}));
        block_on(async {
            let mut m = Miner::login(&agent, "rig1", true).await;
            assert!(m.difficulty > 0.0, "{name}: the miner got a difficulty");
            for _ in 0..5 {
                let r = m.submit_share(0, 0x0000_2000).await;
                assert_eq!(r["result"], json!(true), "{name}: {r}");
            }
            for _ in 0..3 {
                let r = m.submit_share(0, 0).await;
                assert_eq!(r["result"], json!(true), "{name}: {r}");
            }
        });
        assert!(
            pool.wait_until(T, |s| s.totals.valid >= 8),
            "{name}: {}\nagent log:\n{}",
            pool.stats().summary(),
            agent.log()
        );
        let s = totals(&pool);
        assert_eq!(s.totals.valid, 8, "{name}: {}", s.summary());
        assert_eq!(s.totals.total(), 8, "{name}: nothing else: {}", s.summary());
        assert_eq!(s.worker("acct.farm1").valid, 8, "{name}");
        let conn = s
            .open_connections()
            .next()
            .expect("one upstream connection");
        assert_eq!(conn.user.as_deref(), Some("acct.farm1"));
        assert!(
            conn.user_agent
                .as_deref()
                .unwrap_or("")
                .starts_with("btcagent/"),
            "{name}: {:?}",
            conn.user_agent
        );
        assert_eq!(conn.methods[0], "mining.configure", "{name}: BIP 310 first");
    }
}

/// The agent forwards exactly the shares that meet the pool's target, answers the rest
/// itself, and counts them all for the miner.
#[test]
fn shares_below_the_pool_target_stay_local() {
    let pool_difficulty = 0.0001;
    let pool = stratum_pool(StratumPoolConfig {
        start_difficulty: pool_difficulty.to_string(),
        ..StratumPoolConfig::default()
    });
    let agent = agent_for(
        vec![stratum_entry(pool.addr(), "acct.farm1")],
        json!({"advanced": {
            "stratum_start_difficulty": 0.000001,
            "stratum_min_difficulty": 0.000001,
        }}),
    );
    let forwarded = block_on(async {
        let mut m = Miner::login(&agent, "rig1", false).await;
        assert_eq!(
            m.difficulty, 0.000001,
            "the configured start, below the pool's"
        );
        let mut forwarded = 0;
        for i in 0..24 {
            // Every third share is mined at the pool's difficulty, the rest at the
            // miner's; which ones meet the pool's target is checked here by hashing.
            let saved = m.difficulty;
            if i % 3 == 0 {
                m.difficulty = pool_difficulty;
            }
            let share = m.find_share(0, 0);
            m.difficulty = saved;
            if meets(&m, &share, pool_difficulty) {
                forwarded += 1;
            }
            let r = submit(&mut m, &share).await;
            assert_eq!(r["result"], json!(true), "share {i}: {r}");
        }
        // A last share at the pool's difficulty: the connection delivers in order, so
        // once it is there, anything forwarded before it is there too.
        m.difficulty = pool_difficulty;
        let marker = m.find_share(0, 0);
        assert!(meets(&m, &marker, pool_difficulty));
        assert_eq!(submit(&mut m, &marker).await["result"], json!(true));
        forwarded + 1
    });
    assert!(forwarded >= 9);
    assert!(
        pool.wait_until(T, |s| s.totals.valid >= forwarded),
        "{}",
        pool.stats().summary()
    );
    let s = totals(&pool);
    assert_eq!(s.totals.valid, forwarded, "{}", s.summary());
    assert_eq!(
        s.totals.total(),
        forwarded,
        "none below the pool's target: {}",
        s.summary()
    );
}

/// A share that meets neither target is refused by the agent, never sent.
#[test]
fn a_share_below_the_miners_target_is_refused_locally() {
    let pool = stratum_pool(StratumPoolConfig {
        start_difficulty: "0.001".into(),
        ..StratumPoolConfig::default()
    });
    let agent = agent_for(
        vec![stratum_entry(pool.addr(), "acct.farm1")],
        json!({"advanced": {"stratum_start_difficulty": 0.001}}),
    );
    block_on(async {
        let mut m = Miner::login(&agent, "rig1", false).await;
        let r = m.submit_bad_share().await;
        assert_eq!(r["error"][0], json!(23), "{r}");
        let r = m.submit_share(0, 0).await;
        assert_eq!(r["result"], json!(true), "{r}");
    });
    assert!(pool.wait_until(T, |s| s.totals.valid == 1));
    assert_eq!(pool.stats().totals.total(), 1, "{}", pool.stats().summary());
}

/// With `submit_response_from_server` the miner gets the pool's own verdict: a share
/// sent twice is accepted once and refused as a duplicate the second time.
#[test]
fn the_pools_verdict_reaches_the_miner() {
    for config in [
        StratumPoolConfig::default(),
        StratumPoolConfig::ckpool_2024(),
    ] {
        let pool = stratum_pool(config);
        let agent = agent_for(
            vec![stratum_entry(pool.addr(), "acct.farm1")],
            json!({"submit_response_from_server": true}),
        );
        block_on(async {
            let mut m = Miner::login(&agent, "rig1", false).await;
            let share = m.find_share(0, 0);
            let r = submit(&mut m, &share).await;
            assert_eq!(r["result"], json!(true), "{r}");
            let r = submit(&mut m, &share).await;
            assert_eq!(
                r["error"][0],
                json!(22),
                "a duplicate, as the pool said: {r}"
            );
        });
        assert!(pool.wait_until(T, |s| s.totals.duplicate == 1 && s.totals.valid == 1));
    }
}

/// The first Stratum pool goes away: its miners stay connected, get the second pool's
/// job, and their shares are valid there.
#[test]
fn failover_between_two_stratum_pools_keeps_the_miners() {
    let first = stratum_pool(StratumPoolConfig::ckpool());
    let second = stratum_pool(StratumPoolConfig::default());
    let agent = agent_for(
        vec![
            stratum_entry(first.addr(), "acct.first"),
            stratum_entry(second.addr(), "acct.second"),
        ],
        json!({"advanced": {"pool_failover_hold_seconds": 20}}),
    );
    block_on(async {
        let mut m = Miner::login(&agent, "rig1", true).await;
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        first.stop();
        m.wait_job().await;
        let r = m.submit_share(0, 0x0000_4000).await;
        assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
    });
    assert!(
        second.wait_until(T, |s| s.worker("acct.second").valid == 1),
        "{}",
        second.stats().summary()
    );
    assert_eq!(second.stats().totals.total(), 1);
    assert!(
        agent.wait_log("takes over the 1 miners held", T),
        "{}",
        agent.log()
    );
}

/// An agent-protocol pool first and a Stratum pool as its backup: when the btcpool
/// server goes away its miners move to the Stratum pool without a reconnect (the same
/// extranonce layout on both), and back is just as quiet.
#[test]
fn mixed_config_agent_pool_with_a_stratum_backup() {
    let agent_pool = pool();
    let backup = stratum_pool(StratumPoolConfig::ckpool());
    let agent_addr = agent_pool.addr();
    let agent = agent_for(
        vec![
            json!([agent_addr.ip().to_string(), agent_addr.port(), "poolsub"]),
            stratum_entry(backup.addr(), "acct.backup"),
        ],
        json!({"advanced": {"pool_failover_hold_seconds": 20}}),
    );
    block_on(async {
        let mut m = Miner::login(&agent, "rig1", true).await;
        let extranonce1 = m.extranonce1.clone();
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        assert!(agent_pool.wait_until(T, |s| s.valid_for("poolsub", "rig1") == 1));
        agent_pool.stop();
        m.wait_job().await;
        for _ in 0..3 {
            let r = m.submit_share(0, 0x0000_2000).await;
            assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
        }
        assert_eq!(m.extranonce1, extranonce1, "no new subscribe was needed");
    });
    assert!(
        backup.wait_until(T, |s| s.worker("acct.backup").valid == 3),
        "{}\n{}",
        backup.stats().summary(),
        agent.log()
    );
    assert_eq!(backup.stats().totals.total(), 3);
}

/// Mistakes in a Stratum pool entry are refused at start with a message naming the
/// field.
#[test]
fn stratum_entry_mistakes_are_named() {
    for (pools, words) in [
        (
            json!([{"protocol": "stratum", "host": "h", "port": 1}]),
            "pools[0].user: missing",
        ),
        (
            json!([{"protocol": "stratum", "host": "h", "port": 1, "user": "a.b", "subaccount": "x"}]),
            "pools[0].subaccount: a Stratum pool has no sub-account",
        ),
        (
            json!([{"host": "h", "port": 1, "user": "a.b"}]),
            "pools[0]: say \"protocol\"",
        ),
        (
            json!([{"protocol": "stratum+tcp", "host": "h", "port": 1, "user": "a.b"}]),
            "is not a protocol",
        ),
    ] {
        let mut config = config_for(&[], json!({}));
        config["multi_user_mode"] = json!(false);
        config["pools"] = pools;
        let dir = TempDir::new("stratum-conf");
        let file = dir.0.join("agent_conf.json");
        std::fs::write(&file, serde_json::to_vec(&config).unwrap()).unwrap();
        let out = agent_command().arg("-c").arg(&file).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains(words), "{words:?} not in: {text}");
    }
}

/// Two miners of very different speed on one upstream connection: the fast one's
/// difficulty is raised towards its share rate, the slow one's stays, and both keep
/// getting their shares accepted.
#[test]
fn each_miner_gets_its_own_difficulty_on_a_shared_connection() {
    let easy = 2f64.powi(-30);
    let pool = stratum_pool(StratumPoolConfig {
        start_difficulty: 2f64.powi(-20).to_string(),
        ..StratumPoolConfig::default()
    });
    let agent = agent_for(
        vec![stratum_entry(pool.addr(), "acct.farm1")],
        json!({"advanced": {"stratum_start_difficulty": easy, "stratum_min_difficulty": easy}}),
    );
    block_on(async {
        let mut fast = Miner::login(&agent, "fast", false).await;
        let mut slow = Miner::login(&agent, "slow", false).await;
        assert!(close(fast.difficulty, easy) && close(slow.difficulty, easy));
        for _ in 0..2 {
            assert_eq!(slow.submit_share(0, 0).await["result"], json!(true));
        }
        // 20 shares in a few seconds at most, where one per 10 s is aimed at.
        for _ in 0..20 {
            assert_eq!(fast.submit_share(0, 0).await["result"], json!(true));
        }
        fast.catch_up().await;
        assert!(
            // 16 shares in T seconds estimate 150 / T times the start: 16x holds for
            // any T up to 13 s, even under qemu on a busy machine.
            fast.difficulty >= 16.0 * easy,
            "the fast miner was raised: {} (log:\n{})",
            fast.difficulty,
            agent.log()
        );
        assert!(
            fast.difficulty <= 2f64.powi(-20) * 1.000001,
            "never above the pool's"
        );
        let r = fast.submit_share(0, 0).await;
        assert_eq!(r["result"], json!(true), "at its new difficulty: {r}");
        slow.catch_up().await;
        assert!(close(slow.difficulty, easy), "the slow miner keeps its own");
        assert_eq!(slow.submit_share(0, 0).await["result"], json!(true));
    });
    let s = pool.stats();
    assert_eq!(s.open_count(), 1, "one upstream connection carries both");
    assert_eq!(s.totals.total(), s.totals.valid, "{}", s.summary());
}

/// Multi-user mode: each sub-account gets its own upstream connections, authorized as
/// the entry's user with `{sub}` filled in.
#[test]
fn multi_user_mode_authorizes_each_sub_account_as_its_own_user() {
    let pool = stratum_pool(StratumPoolConfig::ckpool());
    let mut config = config_for(&[], json!({}));
    config["pools"] = json!([stratum_entry(pool.addr(), "{sub}.farm1")]);
    let agent = AgentProc::start(config);
    block_on(async {
        let mut alice = Miner::login(&agent, "alice.rig1", false).await;
        let mut bob = Miner::login(&agent, "bob.rig2", false).await;
        assert_eq!(alice.submit_share(0, 0).await["result"], json!(true));
        assert_eq!(bob.submit_share(0, 0).await["result"], json!(true));
    });
    assert!(pool.wait_until(T, |s| {
        s.worker("alice.farm1").valid == 1 && s.worker("bob.farm1").valid == 1
    }));
    // The miners have gone, and with them their sub-accounts' connections: all count.
    let mut users: Vec<_> = pool
        .stats()
        .connections
        .values()
        .filter_map(|c| c.user.clone())
        .collect();
    users.sort();
    assert_eq!(users, ["alice.farm1", "bob.farm1"]);
}

/// From an OpenWrt UCI file, as the init script runs it: a Stratum pool section mines.
#[test]
fn runs_from_a_uci_config_with_a_stratum_pool() {
    if agent_is_windows() {
        return; // --uci is refused there, by design
    }
    let pool = stratum_pool(StratumPoolConfig::ckpool());
    let uci = format!(
        "config btcagent 'main'\n\toption enabled '1'\n\toption multi_user_mode '1'\n\
         \toption agent_listen_ip '127.0.0.1'\n\toption agent_listen_port '{}'\n\
         \toption status_file ''\n\toption pool_connection_number_per_subaccount '1'\n\
         \toption stratum_min_difficulty '0.000001'\n\n\
         config pool\n\toption protocol 'stratum'\n\toption host '127.0.0.1'\n\
         \toption port '{}'\n\toption user '{{sub}}.router'\n\toption password 'p1'\n",
        free_port(),
        pool.addr().port()
    );
    let agent = AgentProc::start_uci(&uci);
    block_on(async {
        let mut m = Miner::login(&agent, "farm9.rig1", true).await;
        assert_eq!(m.submit_share(0, 0x2000).await["result"], json!(true));
    });
    assert!(
        pool.wait_until(T, |s| s.worker("farm9.router").valid == 1),
        "{}\n{}",
        pool.stats().summary(),
        agent.log()
    );
    // The miner has gone, and with it the sub-account's connection: look among all.
    let s = pool.stats();
    let conn = s
        .connections
        .values()
        .find(|c| c.user.as_deref() == Some("farm9.router"));
    assert_eq!(conn.and_then(|c| c.password.as_deref()), Some("p1"));
}

/// The id of the pool's one open connection.
fn open_connection(pool: &StratumPool) -> u64 {
    assert!(pool.wait_until(T, |s| s.open_count() == 1));
    pool.stats().open_connections().next().unwrap().id
}

/// The connection the miner's current job is from (its job ids are `"<conn>-<n>"`).
fn job_connection(m: &Miner) -> String {
    let id = &m.job.as_ref().expect("a job").id;
    id.split('-').next().unwrap_or_default().to_string()
}

/// Waits for a job from another connection than `old`'s.
async fn wait_job_from_another_connection(m: &mut Miner, old: &str) {
    while job_connection(m) == old {
        m.wait_job().await;
    }
}

/// `client.reconnect [host, port, wait]` is followed: after the wait, to the host and
/// port given, for that one redial (the entry is not changed: when that connection
/// ends, the slot dials the list again); the miner is held meanwhile, never
/// disconnected.
#[test]
fn client_reconnect_is_followed_once_to_the_host_given() {
    let first = stratum_pool(StratumPoolConfig::ckpool());
    let second = stratum_pool(StratumPoolConfig::default());
    let agent = agent_for(
        vec![stratum_entry(first.addr(), "acct.farm1")],
        json!({"advanced": {"pool_failover_hold_seconds": 20}}),
    );
    block_on(async {
        let mut m = Miner::login(&agent, "rig1", true).await;
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        // As ckpool writes it: the port as a string.
        let port = second.addr().port();
        first
            .reconnect(
                open_connection(&first),
                json!(["127.0.0.1", port.to_string(), 1]),
            )
            .unwrap();
        let before = job_connection(&m);
        wait_job_from_another_connection(&mut m, &before).await;
        let r = m.submit_share(0, 0x0000_2000).await;
        assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
        assert!(
            second.wait_until(T, |s| s.worker("acct.farm1").valid == 1),
            "{}",
            second.stats().summary()
        );
        assert!(
            agent.wait_log(
                &format!("following the pool's client.reconnect: dialling 127.0.0.1:{port} in 1 s"),
                T
            ),
            "{}",
            agent.log()
        );
        // Not kept: the next dial is the list's.
        second.drop_all();
        let before = job_connection(&m);
        wait_job_from_another_connection(&mut m, &before).await;
        let r = m.submit_share(0, 0).await;
        assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
    });
    assert!(
        first.wait_until(T, |s| s.worker("acct.farm1").valid == 2),
        "{}\n{}",
        first.stats().summary(),
        agent.log()
    );
    assert_eq!(first.stats().accepted_connections, 2);
}

/// A reconnect that cannot be followed (a host that is no host name, or not within the
/// pool's domain), or whose dial fails, ends the connection and the slot dials the list, as for a lost connection.
#[test]
fn a_reconnect_that_cannot_be_followed_falls_back_to_the_list() {
    let pool = stratum_pool(StratumPoolConfig::ckpool());
    let agent = agent_for(
        vec![stratum_entry(pool.addr(), "acct.farm1")],
        json!({"advanced": {"pool_failover_hold_seconds": 20}}),
    );
    block_on(async {
        let mut m = Miner::login(&agent, "rig1", false).await;
        let before = job_connection(&m);
        pool.reconnect(open_connection(&pool), json!(["bad host!", 3333]))
            .unwrap();
        wait_job_from_another_connection(&mut m, &before).await;
        assert!(
            agent.wait_log("the pool asked to reconnect, not followed (host \"bad host!\" is not a host name or IP address): dialling the pool list", T),
            "{}",
            agent.log()
        );
        assert!(pool.wait_until(T, |s| s.accepted_connections == 2));
        // Another site than the pool's (its entry is 127.0.0.1): never followed, so a
        // pool cannot send the farm's hashrate elsewhere.
        let before = job_connection(&m);
        pool.reconnect(
            open_connection(&pool),
            json!(["pool.attacker.example", 3333]),
        )
        .unwrap();
        wait_job_from_another_connection(&mut m, &before).await;
        assert!(
            agent.wait_log("the pool asked to reconnect, not followed (pool.attacker.example is not within 127.0.0.1's domain): dialling the pool list", T),
            "{}",
            agent.log()
        );
        assert!(pool.wait_until(T, |s| s.accepted_connections == 3));
        // Nothing listens there: the dial fails, the list is dialled.
        let closed = free_port();
        let before = job_connection(&m);
        pool.reconnect(open_connection(&pool), json!(["127.0.0.1", closed, 0]))
            .unwrap();
        wait_job_from_another_connection(&mut m, &before).await;
        assert!(
            agent.wait_log("the pool's client.reconnect could not be followed", T),
            "{}",
            agent.log()
        );
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
    });
    assert!(pool.wait_until(T, |s| s.worker("acct.farm1").valid == 1));
    assert_eq!(pool.stats().accepted_connections, 4);
}

/// A share the agent accepted itself (below the pool's target), sent again, is
/// refused as a duplicate; nothing of it reaches the pool.
#[test]
fn a_share_accepted_here_twice_is_refused_as_a_duplicate() {
    let pool = stratum_pool(StratumPoolConfig {
        start_difficulty: "1".into(),
        ..StratumPoolConfig::default()
    });
    let agent = agent_for(
        vec![stratum_entry(pool.addr(), "acct.farm1")],
        json!({"advanced": {
            "stratum_start_difficulty": 0.000001,
            "stratum_min_difficulty": 0.000001,
        }}),
    );
    block_on(async {
        let mut m = Miner::login(&agent, "rig1", false).await;
        let share = m.find_share(0, 0);
        assert!(!meets(&m, &share, 1.0));
        assert_eq!(submit(&mut m, &share).await["result"], json!(true));
        let r = submit(&mut m, &share).await;
        assert_eq!(r["error"], json!([22, "Duplicate share", null]), "{r}");
        let other = m.find_share(0, 0);
        assert_eq!(submit(&mut m, &other).await["result"], json!(true));
        let r = submit(&mut m, &other).await;
        assert_eq!(r["error"][0], json!(22), "{r}");
    });
    assert_eq!(pool.stats().totals.total(), 0, "{}", pool.stats().summary());
}

/// The connection's hashrate goes to the pool as `mining.suggest_difficulty` once
/// its miners' shares show it wants more than twice the pool's difficulty; the pool
/// sets it, the agent waits for no answer and its miner keeps mining.
#[test]
fn the_connections_hashrate_is_suggested_to_the_pool() {
    let start = 2f64.powi(-24);
    let pool = stratum_pool(StratumPoolConfig {
        start_difficulty: start.to_string(),
        ..StratumPoolConfig::default()
    });
    let agent = agent_for(vec![stratum_entry(pool.addr(), "acct.farm1")], json!({}));
    let suggested = |s: &StratumPoolStats| {
        s.open_connections()
            .next()
            .and_then(|c| c.suggestions.first().copied())
    };
    block_on(async {
        let mut m = Miner::login(&agent, "rig1", false).await;
        // Shares far faster than one per 3.33 s at the pool's difficulty: once 16 of
        // them span 2 s, the suggestion goes.
        for _ in 0..10_000 {
            let r = m.submit_share(0, 0).await;
            assert_eq!(r["result"], json!(true), "{r}");
            if suggested(&pool.stats()).is_some() {
                break;
            }
        }
        let r = m.submit_share(0, 0).await;
        assert_eq!(r["result"], json!(true), "after the suggestion: {r}");
    });
    let s = pool.stats();
    let d = suggested(&s).expect("a suggestion");
    assert!(d >= 2.0 * start, "{d}");
    assert!(
        s.open_connections()
            .next()
            .unwrap()
            .difficulties
            .contains(&d),
        "the pool set it"
    );
    assert!(
        agent.wait_log("mining.suggest_difficulty", T),
        "{}",
        agent.log()
    );
}

/// A pool whose jobs come less often than the configured read timeout keeps its
/// connection: the silence allowed grows from the pool's own job interval.
#[test]
fn a_pool_with_jobs_further_apart_than_the_read_timeout_is_not_dropped() {
    let pool = stratum_pool(StratumPoolConfig {
        job_interval: Some(std::time::Duration::from_millis(1500)),
        ..StratumPoolConfig::ckpool()
    });
    let agent = agent_for(
        vec![stratum_entry(pool.addr(), "acct.farm1")],
        json!({"advanced": {"pool_connection_read_timeout_seconds": 1}}),
    );
    block_on(async {
        let mut m = Miner::login(&agent, "rig1", false).await;
        for _ in 0..4 {
            m.wait_job().await;
        }
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
    });
    assert_eq!(
        pool.stats().accepted_connections,
        1,
        "no redial:\n{}",
        agent.log()
    );
    assert!(!agent.log().contains("no data for"), "{}", agent.log());
}

/// Pools whose extranonce2 is below 8 bytes (docs/stratum-upstream.md §3): miners that
/// subscribe once the pool is up get its layout (6 bytes: `SSSS` + 4; 4 bytes: a
/// prefix of their own on the connection + 3), and every share reaches it valid.
#[test]
fn pools_of_6_and_4_byte_extranonce2_take_valid_shares() {
    for (size, ex1_hex_len, miner_ex2) in [(6, 4, 4), (4, 2, 3)] {
        let pool = stratum_pool(StratumPoolConfig {
            extranonce2_size: size,
            ..StratumPoolConfig::ckpool()
        });
        let agent = agent_for(vec![stratum_entry(pool.addr(), "acct.farm1")], json!({}));
        assert!(agent.wait_log("up via", T), "{}", agent.log());
        let extranonces = block_on(async {
            let mut a = Miner::login_expecting(&agent, "rig1", true, miner_ex2, false).await;
            let mut b = Miner::login_expecting(&agent, "rig2", false, miner_ex2, false).await;
            for m in [&a, &b] {
                assert_eq!(
                    m.extranonce1.len(),
                    ex1_hex_len,
                    "N = {size}: {}",
                    m.extranonce1
                );
            }
            for _ in 0..3 {
                let r = a.submit_share(0, 0x0000_2000).await;
                assert_eq!(r["result"], json!(true), "N = {size}: {r}\n{}", agent.log());
                let r = b.submit_share(0, 0).await;
                assert_eq!(r["result"], json!(true), "N = {size}: {r}\n{}", agent.log());
            }
            (a.extranonce1.clone(), b.extranonce1.clone())
        });
        assert_ne!(extranonces.0, extranonces.1, "N = {size}: each its own");
        assert!(
            pool.wait_until(T, |s| s.totals.valid >= 6),
            "N = {size}: {}\n{}",
            pool.stats().summary(),
            agent.log()
        );
        let s = pool.stats();
        assert_eq!(
            s.totals.total(),
            6,
            "N = {size}: nothing invalid: {}",
            s.summary()
        );
        assert_eq!(s.open_count(), 1, "N = {size}: both on one connection");
    }
}

/// Failover from an 8-byte pool to a 4-byte one: the miner that subscribed to
/// extranonce changes is told its new extranonce (`mining.set_extranonce`) and mines
/// on; the one that did not is asked to reconnect, and once it has, it gets the 4-byte
/// pool's layout. Every share reaches the pools valid.
#[test]
fn failover_to_a_4_byte_pool_moves_miners_by_set_extranonce_or_reconnect() {
    let first = stratum_pool(StratumPoolConfig::default());
    let second = stratum_pool(StratumPoolConfig {
        extranonce2_size: 4,
        ..StratumPoolConfig::default()
    });
    let agent = agent_for(
        vec![
            stratum_entry(first.addr(), "acct.first"),
            stratum_entry(second.addr(), "acct.second"),
        ],
        json!({"advanced": {"pool_failover_hold_seconds": 20}}),
    );
    assert!(agent.wait_log("up via", T), "{}", agent.log());
    block_on(async {
        let mut told = Miner::login_expecting(&agent, "told", true, 4, true).await;
        let mut asked = Miner::login_expecting(&agent, "asked", false, 4, false).await;
        assert_eq!(told.submit_share(0, 0).await["result"], json!(true));
        assert_eq!(asked.submit_share(0, 0).await["result"], json!(true));
        assert!(first.wait_until(T, |s| s.totals.valid == 2 && s.totals.total() == 2));
        first.stop();
        // The set_extranonce comes before the clean job of the new connection.
        told.wait_job().await;
        assert_eq!(
            (told.extranonce1.len(), told.extranonce2_size),
            (2, 3),
            "{}",
            agent.log()
        );
        for _ in 0..3 {
            let r = told.submit_share(0, 0x0000_4000).await;
            assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
        }
        while !asked.asked_to_reconnect {
            let v = asked.conn.read_json(T).await.expect("client.reconnect");
            asked.absorb(&v);
        }
        let mut again = Miner::login_expecting(&agent, "asked", false, 3, false).await;
        assert_eq!(again.extranonce1.len(), 2);
        assert_ne!(again.extranonce1, told.extranonce1, "each its own prefix");
        for _ in 0..3 {
            let r = again.submit_share(0, 0).await;
            assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
        }
        // The old connection, never closed by this miner, is closed by the agent 10 s
        // after it asked (well within the read's 20 s).
        let end = loop {
            match asked
                .conn
                .read_json(std::time::Duration::from_secs(20))
                .await
            {
                Ok(v) => assert!(v.get("method") != Some(&json!("mining.notify")), "{v}"),
                Err(e) => break e,
            }
        };
        assert_eq!(end.kind(), std::io::ErrorKind::UnexpectedEof, "{end}");
        assert!(
            agent.wait_log(
                "asked to reconnect for a new extranonce, still there after 10 s",
                T
            ),
            "{}",
            agent.log()
        );
    });
    assert!(
        second.wait_until(T, |s| s.totals.valid >= 6),
        "{}\n{}",
        second.stats().summary(),
        agent.log()
    );
    let s = second.stats();
    assert_eq!(s.totals.total(), 6, "nothing invalid: {}", s.summary());
    assert_eq!(s.worker("acct.second").valid, 6);
}

/// A 4-byte pool's connection carries 256 miners (one prefix each): the 257th makes
/// the agent open another connection, where it mines, its share valid.
#[test]
fn a_full_4_byte_connection_makes_the_agent_open_another() {
    let pool = stratum_pool(StratumPoolConfig {
        extranonce2_size: 4,
        ..StratumPoolConfig::default()
    });
    let agent = agent_for(vec![stratum_entry(pool.addr(), "acct.farm1")], json!({}));
    assert!(agent.wait_log("up via", T), "{}", agent.log());
    block_on(async {
        let mut miners = Vec::new();
        for i in 0..256 {
            miners.push(Miner::login_expecting(&agent, &format!("w{i}"), false, 3, false).await);
        }
        assert_eq!(pool.stats().open_count(), 1);
        let mut last = Miner::login_expecting(&agent, "w256", false, 3, false).await;
        assert!(
            agent.wait_log("every connection is full, opening one more (2 in all)", T),
            "{}",
            agent.log()
        );
        let r = last.submit_share(0, 0).await;
        assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
        let r = miners[0].submit_share(0, 0).await;
        assert_eq!(r["result"], json!(true), "{r}");
        assert!(!last.asked_to_reconnect && !miners[0].asked_to_reconnect);
        let log = agent.log();
        assert!(
            !log.contains("asking it to reconnect") && !log.contains("new extranonce"),
            "every miner kept the prefix it was told: {log}"
        );
    });
    assert!(
        pool.wait_until(T, |s| s.totals.valid == 2),
        "{}",
        pool.stats().summary()
    );
    let s = pool.stats();
    assert_eq!(s.totals.total(), 2, "{}", s.summary());
    assert_eq!(s.open_count(), 2, "{}", s.summary());
}

/// Waits until `n` log lines contain `needle`.
fn wait_log_count(agent: &AgentProc, needle: &str, n: usize) -> bool {
    let end = std::time::Instant::now() + T;
    while std::time::Instant::now() < end {
        if agent.log().matches(needle).count() >= n {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Subscribes without `mining.extranonce.subscribe` (as most ASIC firmware does):
/// the miner is told its extranonce here and can only be moved off it by a reconnect.
/// Also returns its session id (the subscription id).
async fn subscribe_only(agent: &AgentProc, user: &str) -> (Miner, u16) {
    let mut m = Miner::connect(agent).await;
    m.user = user.into();
    let id = m
        .conn
        .request("mining.subscribe", json!(["test-miner/1.0"]))
        .await
        .unwrap();
    let r = m.conn.read_response(id, T).await.unwrap();
    m.extranonce1 = r["result"][1].as_str().unwrap().to_string();
    assert_eq!(r["result"][2], json!(3), "a 4-byte pool's layout: {r}");
    m.extranonce2_size = 3;
    let sid = r["result"][0][0][1].as_str().unwrap();
    (m, u16::from_str_radix(sid, 16).unwrap())
}

async fn authorize(agent: &AgentProc, m: &mut Miner) {
    let id = m
        .conn
        .request("mining.authorize", json!([m.user.clone(), "x"]))
        .await
        .unwrap();
    let r = m.conn.read_response(id, T).await.unwrap();
    assert_eq!(r["result"], json!(true), "authorize: {r}\n{}", agent.log());
    m.wait_job().await;
}

/// Subscribes `users` first, all of them, then logs them in: the prefixes told at
/// subscribe must differ though no miner holds one yet.
async fn join_batch(
    agent: &AgentProc,
    users: impl Iterator<Item = String>,
) -> (Vec<Miner>, Vec<u16>) {
    let mut batch = Vec::new();
    let mut sids = Vec::new();
    for user in users {
        let (m, sid) = subscribe_only(agent, &user).await;
        batch.push(m);
        sids.push(sid);
    }
    for m in batch.iter_mut() {
        authorize(agent, m).await;
    }
    (batch, sids)
}

/// The extranonce each miner was told at subscribe is the one it mines with: the
/// agent picked a prefix free on the connection it was placed on, so none is asked
/// to reconnect (none subscribed to extranonce changes) or sent set_extranonce.
async fn none_moved(agent: &AgentProc, miners: &mut [Miner]) {
    for m in miners.iter_mut() {
        let told = m.extranonce1.clone();
        let r = m.submit_share(0, 0).await;
        assert_eq!(r["result"], json!(true), "{}: {r}\n{}", m.user, agent.log());
        assert!(!m.asked_to_reconnect, "{}\n{}", m.user, agent.log());
        assert_eq!(m.extranonce1, told, "{}", m.user);
    }
    let log = agent.log();
    assert!(
        !log.contains("asking it to reconnect") && !log.contains("new extranonce"),
        "every miner kept the prefix it was told at subscribe: {log}"
    );
}

/// A large farm of miners that do not subscribe to extranonce changes joins a 4-byte
/// pool (one prefix of 256 per miner and connection, docs/stratum-upstream.md §3):
/// each is told at subscribe a prefix free on the connection it will be placed on,
/// so none is asked to reconnect, even with session ids whose low bytes collide,
/// with miners subscribing in batches before any logs in, and with prefixes of
/// departed miners cooling until the next clean job. Every share is valid.
#[test]
fn a_farm_joins_a_4_byte_pool_without_reconnects() {
    for connections in [1usize, 2] {
        let pool = stratum_pool(StratumPoolConfig {
            extranonce2_size: 4,
            ..StratumPoolConfig::default()
        });
        let agent = agent_for(
            vec![stratum_entry(pool.addr(), "acct.farm1")],
            json!({"advanced": {"pool_connection_number_per_subaccount": connections}}),
        );
        assert!(
            wait_log_count(&agent, "up via", connections),
            "{}",
            agent.log()
        );
        let shares = block_on(async {
            let mut miners = Vec::new();
            for batch in 0..10 {
                let users = (0..20).map(|i| format!("w{}", batch * 20 + i));
                miners.extend(join_batch(&agent, users).await.0);
            }
            let told: Vec<u8> = miners
                .iter()
                .map(|m| u8::from_str_radix(&m.extranonce1, 16).unwrap())
                .collect();
            let mut distinct = told.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(
                distinct.len() >= 200 / connections,
                "{connections}: {distinct:?}"
            );
            none_moved(&agent, &mut miners).await;
            // 30 leave, their prefixes cooling; 56 more subscribe and go, so the next
            // session ids' low bytes are prefixes held or cooling: the session id's
            // low byte would have been taken.
            let left: Vec<Miner> = miners.drain(..30).collect();
            drop(left);
            for i in 0..56 {
                drop(subscribe_only(&agent, &format!("gone{i}")).await);
            }
            let (mut fresh, sids) = join_batch(&agent, (0..30).map(|i| format!("n{i}"))).await;
            assert!(
                sids.iter().any(|&sid| told.contains(&(sid as u8))),
                "{connections}: session ids {sids:?} would not have collided"
            );
            none_moved(&agent, &mut fresh).await;
            // A clean job frees the cooled prefixes; more miners come and go. (Only
            // once the pool has every share so far: those still on the way would be
            // stale.)
            assert!(
                pool.wait_until(T, |s| s.totals.valid == 230),
                "{connections}: {}",
                pool.stats().summary()
            );
            pool.new_job(true);
            for m in miners.iter_mut().chain(fresh.iter_mut()) {
                m.wait_job().await;
            }
            let left: Vec<Miner> = miners.drain(..30).collect();
            drop(left);
            let (mut later, _) = join_batch(&agent, (0..30).map(|i| format!("l{i}"))).await;
            none_moved(&agent, &mut later).await;
            none_moved(&agent, &mut miners).await;
            none_moved(&agent, &mut fresh).await;
            (200 + 30 + 30 + 140 + 30) as u64
        });
        assert!(
            pool.wait_until(T, |s| s.totals.valid == shares),
            "{connections}: {}\n{}",
            pool.stats().summary(),
            agent.log()
        );
        let s = pool.stats();
        assert_eq!(s.totals.total(), shares, "{connections}: {}", s.summary());
        assert_eq!(
            s.open_count(),
            connections,
            "{connections}: {}",
            s.summary()
        );
    }
}
