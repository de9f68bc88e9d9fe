//! A config change in the running agent (SIGHUP, what `/etc/init.d/btcagent reload`
//! sends): miners whose connection the change does not concern never notice, and those
//! it does concern see a new job, not a disconnect.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn error_code(v: &Value) -> Option<i64> {
    v["error"][0].as_i64()
}

/// A rolling redial hands each connection over for a couple of seconds, then dials it
/// again: allow it one dial per connection on top of the usual wait.
const REDIAL: Duration = Duration::from_secs(45);

fn reload(agent: &AgentProc, config: &Value) {
    agent.rewrite_config(&serde_json::to_vec_pretty(config).unwrap());
    agent.sighup();
}

/// Mines until a share is accepted: a share on a job of a connection that was just
/// handed over is answered stale (21), never sent to a pool that would reject it.
async fn mines(m: &mut Miner, version_bits: u32) {
    for _ in 0..4 {
        let r = m.submit_share(0, version_bits).await;
        if r["result"] == json!(true) {
            return;
        }
        assert_eq!(error_code(&r), Some(21), "{r}");
        m.catch_up().await;
    }
    panic!("{}: no share accepted after the reload", m.user);
}

#[test]
fn a_new_pool_list_moves_the_miners_without_disconnecting_them() {
    let old_pool = pool();
    let new_pool = pool();
    let extra = json!({"submit_response_from_server": true, "advanced": {"pool_connection_number_per_subaccount": 2}});
    let agent = AgentProc::start(config_for(&[old_pool.addr()], extra.clone()));
    block_on(async {
        let mut miners = Miner::farm(&agent, 6).await;
        for m in miners.iter_mut() {
            assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        }
        reload(&agent, &config_for(&[new_pool.addr()], extra));
        assert!(agent.wait_log("reload: applied", T), "{}", agent.log());
        let sids: Vec<u16> = miners.iter().map(Miner::session_id).collect();
        let moved = new_pool.wait_until(REDIAL, |s| {
            s.open_count() == 2
                && sids
                    .iter()
                    .all(|sid| s.open_connections().any(|c| c.sessions.contains_key(sid)))
        });
        assert!(moved, "{}\n{}", new_pool.stats().summary(), agent.log());
        assert!(
            old_pool.wait_until(T, |s| s.open_count() == 0),
            "the old pool's connections are closed: {}",
            agent.log()
        );
        for (i, m) in miners.iter_mut().enumerate() {
            mines(m, if i % 2 == 0 { 0x2000 } else { 0 }).await;
        }
        assert!(!agent.log().contains("disconnected"), "{}", agent.log());
    });
    wait_pool(&new_pool, &agent, "6 shares at the new pool", |s| {
        s.totals.valid == 6
    });
    assert_eq!(
        old_pool.stats().totals.valid,
        6,
        "the first shares stay counted"
    );
    assert_clean(&old_pool);
    assert_clean(&new_pool);
}

#[test]
fn a_config_with_a_mistake_is_refused_and_the_running_one_stays() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        agent.rewrite_config(b"{\"pools\": [[\"pool.example\", 1800, \"x\"]],");
        agent.sighup();
        assert!(
            agent.wait_log("reload refused, the running config stays", T),
            "{}",
            agent.log()
        );
        // A typo is named, and the rest of the file applies as usual.
        reload(
            &agent,
            &config_for(&[pool.addr()], json!({"agent_lisen_port": 1})),
        );
        assert!(agent.wait_log("agent_lisen_port", T), "{}", agent.log());
        assert!(
            agent.wait_log("reload: the config is unchanged", T),
            "{}",
            agent.log()
        );
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
    });
    let stats = pool.stats();
    assert_eq!(stats.accepted_connections, 1, "never dialled again");
    assert_clean(&pool);
}

#[test]
fn the_listen_address_waits_for_a_restart_and_the_rest_applies() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        let mut changed = config_for(
            &[pool.addr()],
            json!({"agent_listen_port": 40999, "advanced": {"pool_connection_read_timeout_seconds": 90}}),
        );
        changed["agent_listen_ip"] = json!("127.0.0.2");
        reload(&agent, &changed);
        for field in ["agent_listen_ip", "agent_listen_port"] {
            let line = format!("reload: {field} changed: it takes effect at the next restart (SIGUSR2 restarts without dropping miners)");
            assert!(agent.wait_log(&line, T), "{}", agent.log());
        }
        assert!(agent.wait_log("reload: applied", T), "{}", agent.log());
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        // Still listening where it was.
        Miner::login(&agent, "farm1.w2", false).await;
    });
    assert_eq!(
        pool.stats().accepted_connections,
        1,
        "a timeout needs no redial"
    );
    assert_clean(&pool);
}

#[test]
fn a_new_naming_rule_registers_the_miners_again_under_their_new_name() {
    let pool = pool();
    let agent = AgentProc::start(config_for(&[pool.addr()], json!({})));
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        let sid = m.session_id();
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        reload(
            &agent,
            &config_for(&[pool.addr()], json!({"fixed_worker_name": "rack7"})),
        );
        wait_pool(&pool, &agent, "the miner is registered as rack7", |s| {
            s.open_connections().any(|c| {
                c.sessions
                    .get(&sid)
                    .is_some_and(|w| w.worker_name == "rack7")
            })
        });
        mines(&mut m, 0).await;
    });
    wait_pool(&pool, &agent, "a share under each name", |s| {
        s.worker_valid.get(&("farm1".into(), "w1".into())) == Some(&1)
            && s.worker_valid.get(&("farm1".into(), "rack7".into())) == Some(&1)
    });
    assert_eq!(pool.stats().accepted_connections, 1);
    assert_clean(&pool);
}

#[test]
fn more_or_fewer_connections_per_sub_account_keep_every_miner() {
    let pool = pool();
    let with = |n: u16| {
        config_for(
            &[pool.addr()],
            json!({"advanced": {"pool_connection_number_per_subaccount": n}}),
        )
    };
    let agent = AgentProc::start(with(1));
    block_on(async {
        let mut miners = Vec::new();
        for i in 0..4 {
            miners.push(Miner::login(&agent, &format!("farm1.w{i}"), false).await);
        }
        reload(&agent, &with(3));
        wait_pool(&pool, &agent, "3 connections", |s| s.open_count() == 3);
        reload(&agent, &with(1));
        wait_pool(&pool, &agent, "1 connection with every miner", |s| {
            s.open_count() == 1 && s.registered_sessions() == 4
        });
        for m in miners.iter_mut() {
            mines(m, 0).await;
        }
        assert!(!agent.log().contains("disconnected"), "{}", agent.log());
    });
    assert_clean(&pool);
}

#[test]
fn an_openwrt_reload_applies_the_init_scripts_log_detail_too() {
    // procd signals the running agent (reload_signal) instead of starting it with the
    // init script's new `-v`: the agent reads log_verbosity from the UCI file itself.
    let pool = pool();
    let port = free_port();
    let uci = |verbosity: u8| {
        format!(
            "config btcagent 'main'\n\toption enabled '1'\n\toption log_verbosity '{verbosity}'\n\toption log_target 'stderr'\n\toption agent_listen_ip '127.0.0.1'\n\toption agent_listen_port '{port}'\n\toption status_file ''\n\toption pool_connection_number_per_subaccount '1'\n\nconfig pool\n\toption host '{}'\n\toption port '{}'\n\toption subaccount 'poolsub'\n",
            pool.addr().ip(),
            pool.addr().port()
        )
    };
    let agent = AgentProc::start_uci(&uci(0));
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        // An unknown method is logged at debug level only; answered before the reload.
        let id = m.conn.request("mining.hello", json!([])).await.unwrap();
        assert!(!m.response(id).await["error"].is_null());
        agent.rewrite_config(uci(1).as_bytes());
        agent.sighup();
        assert!(
            agent.wait_log("reload: log_verbosity 1", T),
            "{}",
            agent.log()
        );
        assert!(
            agent.wait_log("reload: the config is unchanged", T),
            "{}",
            agent.log()
        );
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        assert!(!agent.log().contains("\"mining.hello\""), "{}", agent.log());
        m.conn.request("mining.hello", json!([])).await.unwrap();
        assert!(
            agent.wait_log("unknown method \"mining.hello\"", T),
            "debug lines from now on: {}",
            agent.log()
        );
    });
    assert!(
        !agent.log().contains("log_target changed"),
        "{}",
        agent.log()
    );
    assert_eq!(pool.stats().accepted_connections, 1);
    assert_clean(&pool);
}
