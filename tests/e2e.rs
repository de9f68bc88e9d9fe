//! The agent end to end: the real binary between the pool simulator (which checks every
//! share by rebuilding the header and hashing it) and miners over loopback TCP.

mod common;

use btcagent_sim::pool::PoolSimConfig;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn error_code(v: &Value) -> Option<i64> {
    v["error"][0].as_i64()
}

#[test]
fn handshake_follows_the_protocol_order() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"multi_user_mode": false}),
    ));
    wait_pool(&pool, &agent, "the pool connection is set up", |s| {
        s.open_connections().any(|c| c.methods.len() >= 6)
    });
    let stats = pool.stats();
    let conn = stats.open_connections().next().unwrap();
    assert_eq!(
        conn.methods[..6],
        [
            "agent.get_capabilities", // the connection test
            "agent.get_capabilities",
            "mining.configure",
            "mining.subscribe",
            "mining.authorize",
            "agent.get_capabilities", // after authorize, so the pool turns on "subres"
        ]
    );
    assert_eq!(conn.sub_account.as_deref(), Some("poolsub"));
}

#[test]
fn refuses_a_pool_whose_extranonce2_is_not_8_bytes() {
    let pool = start_pool(PoolSimConfig {
        extranonce2_size: 4,
        ..Default::default()
    });
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"multi_user_mode": false}),
    ));
    assert!(
        agent.wait_log("extranonce2 of 4 bytes", T),
        "log:\n{}",
        agent.log()
    );
    block_on(async {
        // A miner is not let onto a pool connection that cannot carry its shares.
        let mut m = Miner::connect(&agent).await;
        m.conn.request("mining.subscribe", json!([])).await.unwrap();
        let id = m
            .conn
            .request("mining.authorize", json!(["w1", "x"]))
            .await
            .unwrap();
        let r = m.response(id).await;
        assert!(error_code(&r).is_some(), "{r}");
    });
    assert_eq!(pool.stats().registered_sessions(), 0);
}

#[test]
fn miner_gets_difficulty_mask_and_job_then_every_share_form_validates() {
    let pool = start_pool(PoolSimConfig {
        difficulty: "0.0000000005".into(),
        ..Default::default()
    });
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    let registered = std::sync::Mutex::new(None);
    block_on(async {
        let mut m = Miner::connect(&agent).await;
        m.user = "farm1.rig-7".into();
        let id = m
            .conn
            .request("mining.subscribe", json!(["cgminer/4.10"]))
            .await
            .unwrap();
        let r = m.response(id).await;
        let ex1 = r["result"][1].as_str().unwrap().to_string();
        assert_eq!(
            r["result"],
            json!([
                [["mining.set_difficulty", ex1], ["mining.notify", ex1]],
                ex1,
                4
            ])
        );
        assert!(
            ex1.len() == 8 && ex1.starts_with("0000"),
            "extranonce1 is the session id: {ex1}"
        );
        m.extranonce1 = ex1;
        let id = m
            .conn
            .request(
                "mining.configure",
                json!([["version-rolling"], {"version-rolling.mask": "ffffffff"}]),
            )
            .await
            .unwrap();
        let r = m.response(id).await;
        assert_eq!(
            r["result"],
            json!({"version-rolling": true, "version-rolling.mask": "1fffe000"})
        );
        let id = m
            .conn
            .request(
                "mining.authorize",
                json!(["farm1.rig-7", "secret-password"]),
            )
            .await
            .unwrap();
        assert_eq!(m.response(id).await["result"], json!(true));
        // In order: difficulty, version mask, then the last job as clean.
        let raw = m.conn.read_line(T).await.unwrap();
        assert!(
            raw.contains("\"params\":[0.0000000005]"),
            "forwarded exactly as the pool wrote it: {raw}"
        );
        let d: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(d["method"], "mining.set_difficulty");
        m.absorb(&d);
        let v = m.conn.read_json(T).await.unwrap();
        assert_eq!(
            v,
            json!({"id": null, "method": "mining.set_version_mask", "params": ["1fffe000"]})
        );
        m.absorb(&v);
        let j = m.conn.read_json(T).await.unwrap();
        assert_eq!(j["method"], "mining.notify");
        assert_eq!(
            j["params"][8],
            json!(true),
            "a new miner's first job is clean"
        );
        let pool_ex1 = pool
            .stats()
            .open_connections()
            .next()
            .unwrap()
            .extranonce1
            .clone();
        assert!(
            j["params"][2].as_str().unwrap().ends_with(&pool_ex1),
            "coinb1 carries the pool extranonce1"
        );
        m.absorb(&j);

        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        assert_eq!(m.submit_share(1, 0).await["result"], json!(true));
        assert_eq!(m.submit_share(0, 0x0000_6000).await["result"], json!(true));
        assert_eq!(m.submit_share(2, 0x1000_2000).await["result"], json!(true));
        wait_pool(&pool, &agent, "the worker registered", |s| {
            s.registered_sessions() == 1
        });
        let stats = pool.stats();
        let session = stats
            .open_connections()
            .next()
            .unwrap()
            .sessions
            .values()
            .next()
            .unwrap()
            .clone();
        *registered.lock().unwrap() = Some((session.worker_name, session.client_agent));
    });
    wait_pool(&pool, &agent, "four valid shares", |s| {
        s.totals.valid == 4 && s.open_count() == 0
    });
    let stats = pool.stats();
    let conn = stats.connections.values().next().unwrap();
    let f = conn.submit_forms;
    assert_eq!(
        (f.plain, f.with_time, f.with_ver, f.with_time_ver),
        (1, 1, 1, 1),
        "the smallest form each time"
    );
    assert_eq!(conn.sub_account.as_deref(), Some("farm1"));
    assert_eq!(
        *registered.lock().unwrap(),
        Some(("rig-7".to_string(), "cgminer/4.10".to_string()))
    );
    assert_eq!(stats.valid_for("farm1", "rig-7"), 4);
    assert!(
        !agent.log().contains("secret-password"),
        "a miner password must never be logged"
    );
    assert_clean(&pool);
}

#[test]
fn unsupported_and_unknown_methods_get_an_error_not_silence() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        for method in [
            "mining.suggest_difficulty",
            "mining.multi_version",
            "no.such.method",
        ] {
            let id = m.conn.request(method, json!([1])).await.unwrap();
            let r = m.response(id).await;
            assert!(error_code(&r).is_some(), "{method}: {r}");
            assert_eq!(r["result"], Value::Null);
        }
        // NiceHash's extension is supported (docs/stratum-upstream.md §7).
        let id = m
            .conn
            .request("mining.extranonce.subscribe", json!([]))
            .await
            .unwrap();
        assert_eq!(m.response(id).await["result"], json!(true));
        // Submits before login, or with too few params, are refused with a reason.
        let id = m
            .conn
            .request("mining.submit", json!(["farm1.w1", "1"]))
            .await
            .unwrap();
        assert_eq!(error_code(&m.response(id).await), Some(27));
        let mut fresh = Miner::connect(&agent).await;
        let id = fresh
            .conn
            .request(
                "mining.submit",
                json!(["a", "1", "00000000", "00000000", "00000000"]),
            )
            .await
            .unwrap();
        assert_eq!(error_code(&fresh.response(id).await), Some(24));
        let id = fresh
            .conn
            .request("mining.authorize", json!(["farm1.w2", "x"]))
            .await
            .unwrap();
        assert_eq!(
            error_code(&fresh.response(id).await),
            Some(25),
            "authorize before subscribe"
        );
    });
}

#[test]
fn share_verdicts_come_from_the_pool_when_asked() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"submit_response_from_server": true}),
    ));
    wait_pool(&pool, &agent, "no connection before miners", |s| {
        s.open_count() == 0
    });
    block_on(async {
        let mut a = Miner::login(&agent, "farm1.a", false).await;
        let mut b = Miner::login(&agent, "farm1.b", true).await;
        assert!(pool.stats().open_connections().all(|c| c.subres_active()));
        assert_eq!(a.submit_share(0, 0).await["result"], json!(true));
        assert_eq!(
            error_code(&a.submit_bad_share().await),
            Some(23),
            "low difficulty, as the pool said"
        );
        assert_eq!(b.submit_share(0, 0x2000).await["result"], json!(true));
        // A duplicate: the very same share again.
        let (job, ex2, ntime, nonce) = a.find_share(0, 0);
        let params = json!([
            "farm1.a",
            job,
            format!("{ex2:08x}"),
            format!("{ntime:08x}"),
            format!("{nonce:08x}")
        ]);
        let first = a
            .conn
            .request("mining.submit", params.clone())
            .await
            .unwrap();
        let second = a.conn.request("mining.submit", params).await.unwrap();
        assert_eq!(a.response(first).await["result"], json!(true));
        assert_eq!(error_code(&a.response(second).await), Some(22));
        assert_eq!(b.submit_share(0, 0x4000).await["result"], json!(true));
    });
    wait_pool(&pool, &agent, "every verdict counted", |s| {
        s.totals.valid == 4
    });
    let t = pool.stats().totals;
    assert_eq!(
        (t.valid, t.invalid, t.duplicate, t.unregistered),
        (4, 1, 1, 0)
    );
}

#[test]
fn multi_user_mode_opens_connections_per_subaccount_and_closes_them() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"advanced": {"pool_connection_number_per_subaccount": 2}}),
    ));
    block_on(async {
        let mut a: Vec<Miner> = Vec::new();
        for i in 0..4 {
            a.push(Miner::login(&agent, &format!("alice.w{i}"), false).await);
        }
        let b = Miner::login(&agent, "bob.w0", false).await;
        wait_pool(&pool, &agent, "2 connections per sub-account", |s| {
            let subs: Vec<_> = s
                .open_connections()
                .filter_map(|c| c.sub_account.clone())
                .collect();
            subs.iter().filter(|x| *x == "alice").count() == 2
                && subs.iter().filter(|x| *x == "bob").count() == 2
        });
        // Miners spread over alice's connections: the fewest-miners connection first.
        // (A miner moved off a connection stays registered there for a grace period,
        // so the busier one may count its departing miners too.)
        wait_pool(&pool, &agent, "alice's miners spread 2 + 2", |s| {
            let n: Vec<usize> = s
                .open_connections()
                .filter(|c| c.sub_account.as_deref() == Some("alice"))
                .map(|c| c.sessions.len())
                .collect();
            n.len() == 2 && n.iter().all(|&k| k >= 2)
        });
        for m in a.iter_mut() {
            m.catch_up().await; // a miner moved to balance the load has a new job waiting
            assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        }
        drop(b);
        wait_pool(
            &pool,
            &agent,
            "bob's connections closed after his last miner left",
            |s| {
                s.open_connections()
                    .all(|c| c.sub_account.as_deref() != Some("bob"))
            },
        );
        assert_eq!(pool.stats().open_count(), 2);
    });
    assert_clean(&pool);
}

#[test]
fn single_user_mode_uses_the_pool_entry_subaccount_for_everyone() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"multi_user_mode": false, "advanced": {"pool_connection_number_per_subaccount": 3}}),
    ));
    wait_pool(&pool, &agent, "3 connections up before any miner", |s| {
        s.open_count() == 3
    });
    block_on(async {
        let mut m = Miner::login(&agent, "someone.rig1", false).await;
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        let mut n = Miner::login(&agent, "rig2", false).await;
        assert_eq!(n.submit_share(0, 0).await["result"], json!(true));
    });
    wait_pool(
        &pool,
        &agent,
        "both shares under the pool's sub-account",
        |s| s.valid_for("poolsub", "rig1") == 1 && s.valid_for("poolsub", "rig2") == 1,
    );
    assert_clean(&pool);
}

#[test]
fn fails_over_along_the_pool_list_and_redials() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap(); // closed again: refuses
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[dead, pool.addr()],
        json!({"multi_user_mode": false}),
    ));
    wait_pool(&pool, &agent, "connected to the second pool", |s| {
        s.open_count() == 1
    });
    // The agent's stderr is read by another thread: the line may not be in yet when
    // the pool already sees the connection.
    assert!(
        agent.wait_log(&format!("{}", dead.port()), T),
        "the failed pool is logged:\n{}",
        agent.log()
    );
    // The pool drops the connection: the agent dials again.
    pool.drop_all();
    wait_pool(&pool, &agent, "re-dialled after the drop", |s| {
        s.accepted_connections >= 2 && s.open_count() == 1
    });
}

#[test]
fn a_silent_pool_is_dropped_after_the_read_timeout() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"multi_user_mode": false, "advanced": {"pool_connection_read_timeout_seconds": 2}}),
    ));
    wait_pool(&pool, &agent, "connected", |s| s.open_count() == 1);
    assert!(
        agent.wait_log("no data for 2 s", T),
        "log:\n{}",
        agent.log()
    );
    wait_pool(&pool, &agent, "re-dialled", |s| s.accepted_connections >= 2);
}

#[test]
fn first_miners_of_a_new_subaccount_wait_for_its_connection() {
    let pool = pool();
    pool.refuse_connections();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"advanced": {"pool_connection_dial_timeout_seconds": 10}}),
    ));
    block_on(async {
        let mut m = Miner::connect(&agent).await;
        m.user = "newsub.w1".into();
        let id = m.conn.request("mining.subscribe", json!([])).await.unwrap();
        let r = m.response(id).await;
        m.extranonce1 = r["result"][1].as_str().unwrap().into();
        let id = m
            .conn
            .request("mining.authorize", json!(["newsub.w1", "x"]))
            .await
            .unwrap();
        smol::Timer::after(Duration::from_millis(1500)).await;
        pool.accept_connections().unwrap();
        assert_eq!(
            m.response(id).await["result"],
            json!(true),
            "authorized once the pool is reachable"
        );
        m.wait_job().await;
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
    });
    assert_clean(&pool);
}

#[test]
fn only_the_connections_first_difficulty_reaches_miners() {
    // sserver's later mining.set_difficulty on an agent connection comes from a
    // controller that never sees a share and only decays (DiffController.cc): shares
    // are judged at each worker's own difficulty, which starts at that first value.
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    block_on(async {
        let mut a = Miner::login(&agent, "farm1.a", false).await;
        let first = 2f64.powi(-30); // EASY_DIFFICULTY
        assert_eq!(a.difficulty, first, "the pool's first value");
        for text in ["0.00000000093", "0.0000000012"] {
            pool.set_difficulty(text).unwrap();
            // The job comes after the difficulty on the pool's stream: whatever the
            // agent forwarded of it is on the miner's stream before the job.
            pool.new_job(false);
            loop {
                let raw = a.conn.read_line(T).await.unwrap();
                assert!(
                    !raw.contains("mining.set_difficulty"),
                    "a later connection difficulty was forwarded: {raw}"
                );
                let v: Value = serde_json::from_str(&raw).unwrap();
                a.absorb(&v);
                if v["method"] == "mining.notify" {
                    break;
                }
            }
        }
        let c = Miner::login(&agent, "farm1.c", false).await;
        assert_eq!(
            c.difficulty, first,
            "a newcomer starts at the first difficulty too"
        );
        assert_eq!(a.submit_share(0, 0).await["result"], json!(true));
    });
    assert_clean(&pool);
}

#[test]
fn mining_set_diff_reaches_exactly_the_listed_sessions() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    block_on(async {
        let mut a = Miner::login(&agent, "farm1.a", false).await;
        let mut b = Miner::login(&agent, "farm1.b", false).await;
        // sserver changes only the difficulty of a worker it has: wait for both.
        wait_pool(&pool, &agent, "a and b registered", |s| {
            s.registered_sessions() == 2
        });
        let conn = pool.stats().open_connections().next().unwrap().id;
        pool.set_session_difficulty(conn, 13, vec![a.session_id()])
            .unwrap();
        let v = a
            .conn
            .read_method("mining.set_difficulty", T)
            .await
            .unwrap();
        assert_eq!(v["params"], json!([8192]));
        // 0xfff0 is no session of the agent's: the pool can name one only when the
        // agent unregistered it just before, so the strict simulator never does; the
        // raw message stands for that race.
        let raw = btcagent_sim::exmsg::encode(&btcagent_sim::exmsg::ExMessage::MiningSetDiff {
            diff_exp: 0,
            session_ids: vec![b.session_id(), 0xfff0],
        });
        pool.send_raw(conn, raw).unwrap();
        let v = b
            .conn
            .read_method("mining.set_difficulty", T)
            .await
            .unwrap();
        assert_eq!(v["params"], json!([1]));
        // a saw nothing more than its own.
        pool.new_job(false);
        let next = a.conn.read_json(T).await.unwrap();
        assert_eq!(
            next["method"], "mining.notify",
            "a got no difficulty meant for b: {next}"
        );
    });
}

#[test]
fn miners_move_to_a_sibling_connection_without_disconnecting() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"submit_response_from_server": true, "advanced": {"pool_connection_number_per_subaccount": 2}}),
    ));
    block_on(async {
        let mut miners = Miner::farm(&agent, 4).await;
        // 2 + 2 (the connection the rebalance took miners from still has the moved
        // ones registered for a grace period).
        wait_pool(&pool, &agent, "2 + 2", |s| {
            let n: Vec<usize> = s.open_connections().map(|c| c.sessions.len()).collect();
            n.len() == 2 && n.iter().all(|&k| k >= 2)
        });
        let victim = pool.stats().open_connections().next().unwrap().id;
        pool.drop_connection(victim);
        wait_pool(
            &pool,
            &agent,
            "all 4 miners registered on the survivor",
            |s| {
                s.open_connections()
                    .any(|c| c.id != victim && c.sessions.len() == 4)
            },
        );
        for (i, m) in miners.iter_mut().enumerate() {
            // Each moved miner gets the survivor's job as clean; then its shares validate.
            let bits = if i % 2 == 0 { 0x2000 } else { 0 };
            let mut accepted = false;
            for _ in 0..3 {
                let r = m.submit_share(0, bits).await;
                if r["result"] == json!(true) {
                    accepted = true;
                    break;
                }
                // A share on the dead connection's job is answered stale, never sent
                // to the survivor as an invalid share.
                assert!(matches!(error_code(&r), Some(21) | Some(30)), "{r}");
                m.catch_up().await;
            }
            assert!(accepted, "miner {i} mines again after the move");
        }
    });
    wait_pool(&pool, &agent, "the moved miners' shares", |s| {
        s.totals.valid >= 4
    });
    assert_clean(&pool);
}

#[test]
fn miners_are_disconnected_when_no_connection_comes_back_within_the_hold() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"advanced": {"pool_failover_hold_seconds": 1}}),
    ));
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        pool.refuse_connections();
        pool.drop_all();
        assert!(
            m.conn.closed_within(T).await,
            "miner must be free to fail over to its backup pool"
        );
    });
    assert!(agent.wait_log("1 s failover hold", T), "{}", agent.log());
}

/// The only pool restarts and is back 8 s later, inside the 12 s hold: the slot dials
/// it in time (the dial backoff alone, 1-2-4-8 s, would sleep from 7 s to 15 s and let
/// the hold run out with the pool up, as a run against ckpool showed), and the miner
/// never notices.
#[test]
fn a_pool_back_late_in_the_hold_is_found_before_it_ends() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"advanced": {"pool_failover_hold_seconds": 12}}),
    ));
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        pool.refuse_connections();
        pool.drop_all();
        assert!(agent.wait_log("holding 1 miners", T), "{}", agent.log());
        // The outage: its length is what this test is about.
        std::thread::sleep(Duration::from_secs(8));
        pool.accept_connections().unwrap();
        m.wait_job().await;
        let r = m.submit_share(0, 0).await;
        assert_eq!(r["result"], json!(true), "{r}\n{}", agent.log());
    });
    assert!(
        agent.wait_log("takes over the 1 miners held", T),
        "{}",
        agent.log()
    );
    assert!(!agent.log().contains("failover hold: "), "{}", agent.log());
}

#[test]
fn a_lost_pool_is_replaced_by_the_next_without_disconnecting_miners() {
    // The first pool of the list goes away for good; the second is up. The miners
    // stay connected, get the second pool's job as clean and are registered there.
    let first = pool();
    let second = pool();
    let agent = AgentProc::start(config_for(
        &[first.addr(), second.addr()],
        json!({"submit_response_from_server": true, "advanced": {"pool_connection_number_per_subaccount": 2}}),
    ));
    block_on(async {
        let mut miners = Miner::farm(&agent, 4).await;
        for m in miners.iter_mut() {
            assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        }
        first.refuse_connections();
        first.drop_all();
        let sids: Vec<u16> = miners.iter().map(Miner::session_id).collect();
        wait_pool(
            &second,
            &agent,
            "all 4 miners registered at the second pool",
            |s| {
                sids.iter()
                    .all(|sid| s.open_connections().any(|c| c.sessions.contains_key(sid)))
            },
        );
        for (i, m) in miners.iter_mut().enumerate() {
            // A share on a job of the first pool (or of a connection to it that was
            // dying when the miner moved there) is answered stale, never sent anywhere;
            // the second pool's job comes as clean and its shares count.
            let bits = if i % 2 == 0 { 0x2000 } else { 0 };
            let mut accepted = false;
            for _ in 0..4 {
                let r = m.submit_share(0, bits).await;
                if r["result"] == json!(true) {
                    accepted = true;
                    break;
                }
                assert_eq!(error_code(&r), Some(21), "{r}");
                m.catch_up().await;
            }
            assert!(accepted, "miner {i} mines at the second pool");
        }
        // Checked while the miners are still connected (their own goodbye is logged).
        assert!(!agent.log().contains("disconnected"), "{}", agent.log());
    });
    wait_pool(&second, &agent, "4 shares at the second pool", |s| {
        s.totals.valid == 4
    });
    assert_clean(&first);
    assert_clean(&second);
}

#[test]
fn always_keep_downconn_feeds_fake_jobs_then_returns_to_the_pool() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"always_keep_downconn": true, "advanced": {"fake_job_notify_interval_seconds": 1, "pool_failover_hold_seconds": 1}}),
    ));
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        pool.refuse_connections();
        pool.drop_all();
        for _ in 0..2 {
            let j = m.conn.read_method("mining.notify", T).await.unwrap();
            assert!(
                j["params"][0].as_str().unwrap().starts_with('f'),
                "fake job: {j}"
            );
            m.absorb(&j);
        }
        let r = m.submit_share(0, 0).await;
        assert_eq!(
            r["result"],
            json!(true),
            "shares on fake jobs are answered true"
        );
        pool.accept_connections().unwrap();
        loop {
            let j = m.conn.read_method("mining.notify", T).await.unwrap();
            m.absorb(&j);
            if !j["params"][0].as_str().unwrap().starts_with('f') {
                break;
            }
        }
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
    });
    wait_pool(&pool, &agent, "the real share arrived", |s| {
        s.totals.valid == 1
    });
    assert_clean(&pool);
}

#[test]
fn a_miner_that_loses_asicboost_is_asked_to_reconnect() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", true).await;
        for i in 0..101u32 {
            let r = m.submit_share(0, (i % 7 + 1) << 13).await;
            assert_eq!(r["result"], json!(true));
        }
        let _ = m.submit_share(0, 0).await;
        let v = m.conn.read_method("client.reconnect", T).await.unwrap();
        assert_eq!(v["params"], json!([]));
    });
    assert_clean(&pool);
}

#[test]
fn worker_names_are_filtered_and_can_come_from_ip_or_config() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    block_on(async {
        let _a = Miner::login(&agent, "farm1.s19 <#1>", false).await;
        let _b = Miner::login(&agent, "farm1.矿机", false).await;
        wait_pool(&pool, &agent, "both registered", |s| {
            s.registered_sessions() == 2
        });
    });
    let names: Vec<String> = pool
        .stats()
        .open_connections()
        .flat_map(|c| c.sessions.values().map(|s| s.worker_name.clone()))
        .collect();
    assert!(names.contains(&"s191".to_string()), "{names:?}");
    assert!(names.contains(&"__default__".to_string()), "{names:?}");

    let pool = pool_fn();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"use_ip_as_worker_name": true, "ip_worker_name_format": "rack{3}-{4}"}),
    ));
    block_on(async {
        let _a = Miner::login(&agent, "farm1.ignored", false).await;
        wait_pool(&pool, &agent, "registered", |s| {
            s.registered_sessions() == 1
        });
    });
    let name = pool
        .stats()
        .open_connections()
        .next()
        .unwrap()
        .sessions
        .values()
        .next()
        .unwrap()
        .worker_name
        .clone();
    assert_eq!(name, "rack0-1");

    let pool = pool_fn();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"fixed_worker_name": "bigfarm"}),
    ));
    block_on(async {
        let _a = Miner::login(&agent, "farm1.x", false).await;
        wait_pool(&pool, &agent, "registered", |s| {
            s.registered_sessions() == 1
        });
    });
    assert_eq!(
        pool.stats()
            .open_connections()
            .next()
            .unwrap()
            .sessions
            .values()
            .next()
            .unwrap()
            .worker_name,
        "bigfarm"
    );
}

fn pool_fn() -> btcagent_sim::pool::PoolSim {
    common::pool()
}

#[test]
fn an_empty_subaccount_is_refused_with_error_105() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    block_on(async {
        let mut m = Miner::connect(&agent).await;
        m.conn.request("mining.subscribe", json!([])).await.unwrap();
        let id = m
            .conn
            .request("mining.authorize", json!([".w1", "x"]))
            .await
            .unwrap();
        assert_eq!(error_code(&m.response(id).await), Some(105));
    });
}

#[test]
fn hostile_traffic_is_closed_with_one_log_line_and_harms_no_one() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    block_on(async {
        let mut good = Miner::login(&agent, "farm1.good", false).await;
        let probes: [(&[u8], &str); 4] = [
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "looks like HTTP"),
            (
                &[
                    0x03, 0x00, 0x00, 0x13, 0x0e, 0xe0, 0, 0, 0, 0, 0, 1, 0, 8, 0, 3, 0, 0, 0,
                ],
                "looks like RDP",
            ),
            (
                &[
                    0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
                ],
                "looks like a TLS handshake",
            ),
            (b"\x00\x00\x00\x00garbage", "first byte is not"),
        ];
        for (bytes, expect) in probes {
            let mut p = btcagent_sim::conn::MinerConn::connect(agent.addr)
                .await
                .unwrap();
            p.send_bytes(bytes).await.unwrap();
            assert!(p.closed_within(T).await, "probe {expect} closed");
            assert!(
                agent.wait_log(expect, T),
                "log names it: {expect}\n{}",
                agent.log()
            );
        }
        // A 1 MB line, and a miner that sends broken JSON.
        let mut big = btcagent_sim::conn::MinerConn::connect(agent.addr)
            .await
            .unwrap();
        let mut line = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"".to_vec();
        line.resize(1 << 20, b'a');
        let _ = big.send_bytes(&line).await;
        assert!(
            big.closed_within(T).await,
            "an over-long line closes the connection"
        );
        assert!(agent.wait_log("line over 16384 bytes", T));
        let mut broken = btcagent_sim::conn::MinerConn::connect(agent.addr)
            .await
            .unwrap();
        broken.send_line("{\"id\":1,\"method\":").await.unwrap();
        let r = broken.read_json(T).await.unwrap();
        assert_eq!(r["error"][1], "Malformed JSON-RPC line");
        // The good miner noticed nothing.
        assert_eq!(good.submit_share(0, 0).await["result"], json!(true));
        pool.new_job(true);
        good.wait_job().await;
        assert_eq!(good.submit_share(0, 0).await["result"], json!(true));
    });
    assert_clean(&pool);
}

/// `MAX_LINE` bounds a miner's line without its `\r\n`, as on the pool side, however
/// the bytes arrive: cut before the `\r`, between `\r` and `\n`, or not at all.
#[test]
fn a_miner_line_of_exactly_max_line_bytes_is_read_however_it_is_cut() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    let max = btcagent::miner::MAX_LINE;
    let subscribe = |len: usize| {
        let mut line = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"".to_vec();
        line.resize(len - 3, b'a');
        line.extend_from_slice(b"\"]}\r\n");
        line
    };
    block_on(async {
        let line = subscribe(max);
        assert_eq!(line.len(), max + 2);
        for cut in [line.len(), max, max + 1, 1] {
            let mut m = btcagent_sim::conn::MinerConn::connect(agent.addr)
                .await
                .unwrap();
            m.send_bytes(&line[..cut]).await.unwrap();
            m.send_bytes(&line[cut..]).await.unwrap();
            let r = m.read_json(T).await.unwrap();
            assert!(r["id"] == 1 && r["result"].is_array(), "cut at {cut}: {r}");
        }
        let mut over = btcagent_sim::conn::MinerConn::connect(agent.addr)
            .await
            .unwrap();
        over.send_bytes(&subscribe(max + 1)).await.unwrap();
        assert!(over.closed_within(T).await, "one byte over closes");
    });
}

#[test]
fn a_miner_that_never_authorizes_is_dropped() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"advanced": {"pool_connection_read_timeout_seconds": 2}}),
    ));
    block_on(async {
        let mut m = Miner::connect(&agent).await;
        m.conn.request("mining.subscribe", json!([])).await.unwrap();
        let start = Instant::now();
        assert!(m.conn.closed_within(T).await);
        assert!(
            start.elapsed() >= Duration::from_millis(1500),
            "not before the timeout"
        );
    });
    assert!(
        agent.wait_log("did not authorize within 2 s", T),
        "{}",
        agent.log()
    );
}

#[test]
fn a_miner_that_stops_reading_is_cut_off_not_buffered_forever() {
    let pool = start_pool(PoolSimConfig {
        merkle_branch_len: 12,
        ..Default::default()
    });
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"advanced": {"message_queue_size": {"miner_session": 16}}}),
    ));
    block_on(async {
        let _stalled = Miner::login(&agent, "farm1.stalled", false).await;
        let mut good = Miner::login(&agent, "farm1.good", false).await;
        // Some 20 MB of jobs: far beyond the socket buffers and the agent's bound.
        let give_up = Instant::now() + Duration::from_secs(90);
        loop {
            for _ in 0..80 {
                pool.new_job(false);
            }
            // Keep the good miner reading.
            while let Ok(v) = good.conn.read_json(Duration::from_millis(1)).await {
                good.absorb(&v);
            }
            if agent.log().contains("not reading its socket") {
                break;
            }
            assert!(
                Instant::now() < give_up,
                "the stalled miner was never cut off:\n{}",
                agent.log()
            );
        }
        // A last job, clean: once the good miner has it, it has every job the agent was
        // still writing to it. (Job ids wrap at 256: a share on a job it had not caught
        // up from could name an id a later job has taken, and be judged on that job.)
        pool.new_job(true);
        loop {
            let v = good
                .conn
                .read_json(T)
                .await
                .expect("the good miner gets jobs");
            good.absorb(&v);
            if v["method"] == json!("mining.notify") && v["params"][8] == json!(true) {
                break;
            }
        }
        assert_eq!(good.submit_share(0, 0).await["result"], json!(true));
    });
}

#[test]
fn sigterm_unregisters_every_worker_and_exits_zero() {
    let pool = pool();
    let mut agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"advanced": {"pool_connection_number_per_subaccount": 2}}),
    ));
    block_on(async {
        let _a = Miner::login(&agent, "farm1.a", false).await;
        let _b = Miner::login(&agent, "farm1.b", false).await;
        let _c = Miner::login(&agent, "other.c", false).await;
        wait_pool(&pool, &agent, "3 registered", |s| {
            s.registered_sessions() == 3
        });
        let status = agent.sigterm();
        assert!(status.success(), "exit status {status:?}\n{}", agent.log());
    });
    // Every session the pool knew is gone (a miner moved to balance the load counts
    // one unregistration per connection it left).
    let stats = pool.stats();
    assert!(
        stats.connections.values().all(|c| c.sessions.is_empty()),
        "{:?}\n{}",
        stats.connections,
        agent.log()
    );
    let (registers, unregisters) = stats
        .connections
        .values()
        .fold((0, 0), |(r, u), c| (r + c.registers, u + c.unregisters));
    assert_eq!(registers, unregisters);
}

#[test]
fn a_config_typo_is_named_in_a_warning() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({"multi_user_mod": false})));
    assert!(agent.wait_log("multi_user_mod", T));
    assert!(
        agent.log().contains("did you mean `multi_user_mode`"),
        "{}",
        agent.log()
    );
}

#[test]
fn a_bad_config_is_refused_before_any_socket_naming_the_field() {
    let dir = TempDir::new("badconf");
    let conf = dir.0.join("agent_conf.json");
    std::fs::write(&conf, r#"{"pools": [["pool.example", 0, "x"]]}"#).unwrap();
    let mut cmd = agent_command();
    let out = cmd.arg("-c").arg(&conf).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pools[0][1]"), "{err}");
}

#[test]
fn runs_from_the_packaged_uci_config() {
    if agent_is_windows() {
        // Refused there, by design: see uci_and_syslog_are_refused_on_windows_naming_the_alternative.
        return;
    }
    let pool = pool();
    let port = pool.addr().port().to_string();
    let uci = include_str!("../openwrt/files/btcagent.config")
        .replace(
            "option agent_listen_ip '0.0.0.0'",
            "option agent_listen_ip '127.0.0.1'",
        )
        .replace(
            "option agent_listen_port '3333'",
            &format!("option agent_listen_port '{}'", free_port()),
        )
        .replace(
            "option status_file '/var/run/btcagent/status.json'",
            "option status_file ''",
        )
        .replace("option host 'us.ss.btc.com'", "option host '127.0.0.1'")
        .replace(
            "option subaccount 'YourSubAccountName'",
            "option subaccount 'poolsub'",
        );
    let uci = ["1800", "443", "3333"].iter().fold(uci, |u, p| {
        u.replace(
            &format!("option port '{p}'"),
            &format!("option port '{port}'"),
        )
    });
    let agent = AgentProc::start_uci(&uci);
    block_on(async {
        let mut m = Miner::login(&agent, "farm9.rig1", true).await;
        assert_eq!(m.submit_share(0, 0x2000).await["result"], json!(true));
    });
    wait_pool(
        &pool,
        &agent,
        "the share from the UCI-configured agent",
        |s| s.valid_for("farm9", "rig1") == 1,
    );
    assert_clean(&pool);
}

/// OpenWrt's config system and syslog do not exist on Windows: the Windows build says
/// so and what to use instead, rather than half-working.
#[test]
fn uci_and_syslog_are_refused_on_windows_naming_the_alternative() {
    if !agent_is_windows() {
        return;
    }
    let dir = TempDir::new("windows-refusals");
    let uci = dir.0.join("btcagent");
    std::fs::write(&uci, include_str!("../openwrt/files/btcagent.config")).unwrap();
    let out = agent_command().arg("--uci").arg(&uci).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--uci") && err.contains("-c agent_conf.json"),
        "{err}"
    );

    let conf = dir.0.join("agent_conf.json");
    std::fs::write(&conf, r#"{"pools": [["127.0.0.1", 9, "x"]]}"#).unwrap();
    let out = agent_command()
        .arg("-c")
        .arg(&conf)
        .args(["-l", "syslog"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-l syslog") && err.contains("-l DIR"), "{err}");
}
