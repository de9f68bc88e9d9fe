//! A new binary takes the running agent's miners over (SIGUSR2; SIGHUP after the
//! binary was replaced, as a package upgrade does): same process id, every miner keeps
//! its TCP connection and session id, gets a new job, and mines on; a binary that
//! cannot take over leaves the old program serving.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;

/// The router binaries run under qemu-user, which cannot execve a foreign binary
/// without binfmt_misc: a handoff is tested on the native build.
fn native() -> bool {
    if std::env::var_os("BTCAGENT_BIN").is_some() {
        eprintln!("skipped: handoff tests run the native build only");
        return false;
    }
    true
}

fn error_code(v: &Value) -> Option<i64> {
    v["error"][0].as_i64()
}

/// Mines until a share is accepted: a share on the old program's jobs is answered
/// stale (21), never sent.
async fn mines(m: &mut Miner) {
    for _ in 0..4 {
        let r = m.submit_share(0, 0).await;
        if r["result"] == json!(true) {
            return;
        }
        assert_eq!(error_code(&r), Some(21), "{r}");
        m.wait_job().await;
    }
    panic!("{}: no share accepted after the handoff", m.user);
}

/// The program the process runs now: after a handoff to a replaced file, the new one
/// (the old inode is unlinked and shows as "(deleted)").
fn exe_of(agent: &AgentProc) -> String {
    std::fs::read_link(format!("/proc/{}/exe", agent.child.id()))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn replace_file(path: &Path, bytes: &[u8]) {
    install_executable(path, bytes);
}

/// A pool simulator and an agent on it, run from its own copy of the binary.
fn agent_on_pool() -> (btcagent_sim::pool::PoolSim, AgentProc) {
    let pool = pool();
    let agent = AgentProc::start_copy(config_for(&[pool.addr()], json!({})));
    (pool, agent)
}

/// Waits for the new program's line, failing with the log.
fn took_over(agent: &AgentProc, miners: usize) {
    let line = format!("handoff: took over {miners} of {miners} miners");
    assert!(agent.wait_log(&line, T), "{}", agent.log());
}

fn still_running(agent: &mut AgentProc) {
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited: {}",
        agent.log()
    );
}

#[test]
fn sigusr2_hands_every_miner_to_the_new_program_without_a_disconnect() {
    if !native() {
        return;
    }
    let pool = pool();
    let extra = json!({"submit_response_from_server": true, "advanced": {"pool_connection_number_per_subaccount": 2}});
    let mut agent = AgentProc::start_copy(config_for(&[pool.addr()], extra));
    block_on(async {
        let mut miners = Miner::farm(&agent, 6).await;
        for m in miners.iter_mut() {
            assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        }
        let first_conns: Vec<u64> = pool.stats().open_connections().map(|c| c.id).collect();
        agent.signal("USR2");
        took_over(&agent, 6);
        // The same sessions at the pool, on new connections only.
        let sids: Vec<u16> = miners.iter().map(Miner::session_id).collect();
        wait_pool(&pool, &agent, "every miner registered again", |s| {
            s.open_connections().all(|c| !first_conns.contains(&c.id))
                && sids
                    .iter()
                    .all(|sid| s.open_connections().any(|c| c.sessions.contains_key(sid)))
        });
        for m in miners.iter_mut() {
            m.wait_job().await;
            mines(m).await;
        }
        // Before the miners go at the end of this block.
        assert!(
            !agent.log().contains("disconnected"),
            "no miner noticed: {}",
            agent.log()
        );
    });
    still_running(&mut agent);
    wait_pool(&pool, &agent, "12 valid shares", |s| s.totals.valid == 12);
    assert_clean(&pool);
}

#[test]
fn a_replaced_binary_is_taken_into_use_on_reload() {
    if !native() {
        return;
    }
    let (pool, mut agent) = agent_on_pool();
    let pid = agent.child.id();
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", true).await;
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        // What `opkg upgrade` does, then procd's reload signal.
        let bytes = std::fs::read(agent.binary()).unwrap();
        replace_file(&agent.binary(), &bytes);
        assert!(exe_of(&agent).ends_with("(deleted)"));
        agent.sighup();
        took_over(&agent, 1);
        assert_eq!(agent.child.id(), pid);
        assert_eq!(
            Path::new(&exe_of(&agent)),
            agent.binary(),
            "runs the new file"
        );
        m.wait_job().await;
        mines(&mut m).await;
        // A reload with nothing replaced is only a reload.
        agent.sighup();
        assert!(agent.wait_log("reload: the config is unchanged", T));
        assert_eq!(agent.log().matches("handoff: checking").count(), 1);
    });
    still_running(&mut agent);
    assert_clean(&pool);
}

#[test]
fn a_binary_that_cannot_take_over_leaves_the_old_program_serving() {
    if !native() {
        return;
    }
    let (pool, mut agent) = agent_on_pool();
    let original = std::fs::read(agent.binary()).unwrap();
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        // Broken: it fails, saying why.
        replace_file(
            &agent.binary(),
            b"#!/bin/sh\necho 'exec format error, say' >&2\nexit 1\n",
        );
        agent.signal("USR2");
        assert!(
            agent.wait_log("handoff refused, this process keeps serving", T),
            "{}",
            agent.log()
        );
        assert!(
            agent.log().contains("exec format error, say"),
            "{}",
            agent.log()
        );
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        // Older: it runs, but does not know the handoff.
        replace_file(&agent.binary(), b"#!/bin/sh\nexit 0\n");
        agent.signal("USR2");
        assert!(
            agent.wait_log("does not take miners over from this version", T),
            "{}",
            agent.log()
        );
        // Missing: it is not there to be run.
        std::fs::remove_file(agent.binary()).unwrap();
        agent.signal("USR2");
        assert!(agent.wait_log("does not start", T), "{}", agent.log());
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        // Back: the handoff works again.
        replace_file(&agent.binary(), &original);
        agent.signal("USR2");
        took_over(&agent, 1);
        m.wait_job().await;
        mines(&mut m).await;
        assert!(!agent.log().contains("disconnected"), "{}", agent.log());
    });
    still_running(&mut agent);
    assert_clean(&pool);
}

#[test]
fn a_config_the_new_program_refuses_leaves_the_old_one_serving() {
    if !native() {
        return;
    }
    let (_pool, mut agent) = agent_on_pool();
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        agent.rewrite_config(b"{\"pools\": [");
        agent.signal("USR2");
        assert!(
            agent.wait_log("handoff refused, this process keeps serving", T),
            "{}",
            agent.log()
        );
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
    });
    still_running(&mut agent);
}

#[test]
fn handshakes_under_way_finish_in_the_new_program() {
    if !native() {
        return;
    }
    let (pool, agent) = agent_on_pool();
    block_on(async {
        let mut working = Miner::login(&agent, "farm1.w0", false).await;
        // Subscribed, not authorized yet.
        let mut subscribed = Miner::connect(&agent).await;
        let id = subscribed
            .conn
            .request("mining.subscribe", json!(["cgminer/4.12"]))
            .await
            .unwrap();
        let r = subscribed.conn.read_response(id, T).await.unwrap();
        let extranonce1 = r["result"][1].as_str().unwrap().to_string();
        // A line and half of the next in one write: once the first is answered, the
        // agent has read the half line too, and holds it when it hands over.
        let mut halfway = Miner::connect(&agent).await;
        halfway
            .conn
            .send_bytes(b"{\"id\":6,\"method\":\"mining.configure\",\"params\":[[]]}\n{\"id\":7,\"method\":\"mining.subs")
            .await
            .unwrap();
        halfway.conn.read_response(6, T).await.unwrap();
        agent.signal("USR2");
        took_over(&agent, 3);
        halfway
            .conn
            .send_bytes(b"cribe\",\"params\":[]}\n")
            .await
            .unwrap();
        let r = halfway.conn.read_response(7, T).await.unwrap();
        assert!(r["result"][1].is_string(), "{r}");
        let id = subscribed
            .conn
            .request("mining.authorize", json!(["farm1.late", "x"]))
            .await
            .unwrap();
        let r = subscribed.conn.read_response(id, T).await.unwrap();
        assert_eq!(r["result"], json!(true), "{r}");
        subscribed.extranonce1 = extranonce1;
        subscribed.user = "farm1.late".into();
        subscribed.wait_job().await;
        mines(&mut subscribed).await;
        working.wait_job().await;
        mines(&mut working).await;
        assert!(!agent.log().contains("disconnected"), "{}", agent.log());
    });
    assert_clean(&pool);
}

#[test]
fn a_new_miner_port_is_opened_and_the_old_ports_miners_stay() {
    if !native() {
        return;
    }
    let pool = pool();
    let old_port = free_port();
    let config = config_for(&[pool.addr()], json!({"agent_listen_port": old_port}));
    let agent = AgentProc::start_copy(config.clone());
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.w1", false).await;
        let new_port = free_port();
        let mut changed = config.clone();
        changed["agent_listen_port"] = json!(new_port);
        agent.rewrite_config(&serde_json::to_vec_pretty(&changed).unwrap());
        agent.signal("USR2");
        assert!(
            agent.wait_log(&format!("listening for miners on 127.0.0.1:{new_port}"), T),
            "{}",
            agent.log()
        );
        assert!(
            agent.log().contains("the miners connected to"),
            "{}",
            agent.log()
        );
        m.wait_job().await;
        mines(&mut m).await;
        // New miners come on the new port; the old one is closed.
        let addr: std::net::SocketAddr = format!("127.0.0.1:{new_port}").parse().unwrap();
        let mut newcomer = btcagent_sim::conn::MinerConn::connect(addr).await.unwrap();
        let id = newcomer
            .request("mining.subscribe", json!([]))
            .await
            .unwrap();
        let r = newcomer.read_response(id, T).await.unwrap();
        assert!(r["result"][1].is_string(), "{r}");
        assert!(std::net::TcpStream::connect(("127.0.0.1", old_port)).is_err());
        assert!(!agent.log().contains("disconnected"), "{}", agent.log());
    });
}

#[test]
fn behind_a_plain_stratum_pool_a_handed_miner_keeps_its_difficulty() {
    use btcagent_sim::stratum_pool::{StratumPool, StratumPoolConfig};
    if !native() {
        return;
    }
    let pool = StratumPool::start(StratumPoolConfig::ckpool()).unwrap();
    let mut config = config_for(&[], json!({"multi_user_mode": false}));
    config["pools"] = json!([{"protocol": "stratum", "host": "127.0.0.1", "port": pool.addr().port(), "user": "acct.farm1"}]);
    let mut agent = AgentProc::start_copy(config);
    block_on(async {
        let mut m = Miner::login(&agent, "rig1", true).await;
        assert_eq!(m.submit_share(0, 0x2000).await["result"], json!(true));
        let difficulty = m.difficulty;
        let first = pool.stats().accepted_connections;
        agent.signal("USR2");
        took_over(&agent, 1);
        m.wait_job().await;
        assert_eq!(
            m.difficulty, difficulty,
            "its own difficulty, not the start one"
        );
        mines(&mut m).await;
        assert!(
            pool.stats().accepted_connections > first,
            "a new upstream connection"
        );
        assert!(!agent.log().contains("disconnected"), "{}", agent.log());
    });
    still_running(&mut agent);
    assert_eq!(pool.stats().totals.invalid, 0, "{}", pool.stats().summary());
}

/// Miners on a 4-byte Stratum pool keep their prefixes across a handoff: the new
/// program knows each one's extranonce and its subscription to changes, so it neither
/// asks them to reconnect nor tells them a new extranonce, and their shares stay valid.
#[test]
fn a_handoff_keeps_the_miners_extranonce_on_a_4_byte_pool() {
    use btcagent_sim::stratum_pool::{StratumPool, StratumPoolConfig};
    if !native() {
        return;
    }
    let pool = StratumPool::start(StratumPoolConfig {
        extranonce2_size: 4,
        ..StratumPoolConfig::default()
    })
    .unwrap();
    let addr = pool.addr();
    let mut config = config_for(&[], json!({}));
    config["multi_user_mode"] = json!(false);
    config["pools"] = json!([{"protocol": "stratum", "host": addr.ip().to_string(), "port": addr.port(), "user": "acct.farm1"}]);
    let mut agent = AgentProc::start_copy(config);
    assert!(agent.wait_log("up via", T), "{}", agent.log());
    block_on(async {
        let mut miners = [
            Miner::login_expecting(&agent, "told", false, 3, true).await,
            Miner::login_expecting(&agent, "plain", false, 3, false).await,
        ];
        let extranonces: Vec<String> = miners.iter().map(|m| m.extranonce1.clone()).collect();
        for m in miners.iter_mut() {
            assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
        }
        agent.signal("USR2");
        took_over(&agent, 2);
        for m in miners.iter_mut() {
            m.wait_job().await;
            mines(m).await;
        }
        let now: Vec<String> = miners.iter().map(|m| m.extranonce1.clone()).collect();
        assert_eq!(now, extranonces, "{}", agent.log());
        assert!(
            miners.iter().all(|m| !m.asked_to_reconnect),
            "{}",
            agent.log()
        );
    });
    still_running(&mut agent);
    assert!(
        pool.wait_until(T, |s| s.totals.valid == 4),
        "{}\n{}",
        pool.stats().summary(),
        agent.log()
    );
    assert_eq!(pool.stats().totals.total(), 4, "{}", pool.stats().summary());
}
