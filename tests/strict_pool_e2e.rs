//! The agent against the pool simulator's sserver rules (sim/src/pool.rs): many miners
//! with per-worker difficulties, an sserver from before share responses, and a move
//! between sibling connections while shares are in flight.

mod common;

use btcagent_sim::miner::{MinerSwarm, MinerSwarmConfig};
use btcagent_sim::pool::PoolSimConfig;
use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const MINERS: usize = 200;
const SHARES_PER_MINER: u64 = 50;

/// The exponent session `s` is given in round `round` (0 or 1).
fn exp_for(session: u16, round: usize) -> u8 {
    match round {
        0 => 11 + (session % 3) as u8,
        _ => 13 - (session % 3) as u8,
    }
}

#[test]
fn two_hundred_miners_with_per_worker_difficulties_are_all_credited() {
    // Pool units: default 2^10; shares judged at d * 2^-40 (2^-30 at the default).
    let unit = 2f64.powi(-40);
    let pool = start_pool(PoolSimConfig {
        difficulty: "1024".into(),
        min_difficulty: Some(1.0),
        // The connection difficulty decays from the second job on (sserver: 60 s).
        decay_after: Duration::from_millis(200),
        job_interval: Some(Duration::from_millis(250)),
        difficulty_unit: unit,
        ..Default::default()
    });
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"submit_response_from_server": true}),
    ));
    let mut config = MinerSwarmConfig::new(agent.addr, MINERS);
    config.user_pattern = "farm1.w{i}".into();
    config.version_rolling_fraction = 0.5;
    config.share_interval = Some(Duration::from_millis(150));
    config.shares_per_miner = Some(SHARES_PER_MINER);
    config.difficulty_unit = unit;
    config.reconnect_delay = None;
    let swarm = MinerSwarm::start(config).unwrap();
    let long = Duration::from_secs(60);
    wait_pool(&pool, &agent, "every worker registered", |s| {
        s.registered_sessions() == MINERS
    });
    let stats = pool.stats();
    let conn = stats.open_connections().next().unwrap();
    let (conn_id, sessions): (u64, Vec<u16>) = (conn.id, conn.sessions.keys().copied().collect());
    // Each miner's session is its extranonce1.
    let session_of = |m: &btcagent_sim::miner::MinerStats| {
        u16::from_str_radix(&m.extranonce1, 16).expect("a session id")
    };
    for round in 0..2 {
        let mut groups: BTreeMap<u8, Vec<u16>> = BTreeMap::new();
        for s in &sessions {
            groups.entry(exp_for(*s, round)).or_default().push(*s);
        }
        for (exp, group) in groups {
            pool.set_session_difficulty(conn_id, exp, group).unwrap();
        }
        assert!(
            swarm.wait_until(long, |s| s.miners.iter().all(|m| {
                m.difficulty == 2f64.powi(exp_for(session_of(m), round) as i32)
            })),
            "round {round}: not every miner got its difficulty: {}\nagent log:\n{}",
            swarm.stats().summary(),
            agent.log()
        );
    }
    let total = MINERS as u64 * SHARES_PER_MINER;
    assert!(
        swarm.wait_until(long, |s| s.accepted + s.rejected == total),
        "not every share answered: {}\npool: {}",
        swarm.stats().summary(),
        pool.stats().summary()
    );
    let miners = swarm.finish();
    wait_pool(&pool, &agent, "every share at the pool", |s| {
        s.totals.counted() == total
    });
    let stats = pool.stats();
    let t = stats.totals;
    assert_eq!(
        (miners.accepted, miners.rejected, miners.gave_up),
        (total, 0, 0),
        "{:?}",
        miners.rejects_by_code
    );
    assert_eq!(t.valid, total, "{}", stats.summary());
    assert_eq!(
        (t.invalid, t.low_difficulty, t.stale, t.duplicate),
        (0, 0, 0, 0)
    );
    assert_eq!(
        (t.unregistered, t.malformed, t.dropped_ex, t.withheld),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.connections[&conn_id].responses_sent, total);
    // The connection's difficulty decayed at the pool, and none of it reached a miner.
    assert!(
        stats.connection_difficulties.iter().any(|d| *d < 1024.0),
        "no decay: {:?}",
        stats.connection_difficulties
    );
    let allowed = [1024.0, 2048.0, 4096.0, 8192.0];
    for m in &miners.miners {
        assert!(
            m.difficulties.iter().all(|d| allowed.contains(d)),
            "{} received {:?}",
            m.name,
            m.difficulties
        );
        assert_eq!(
            m.difficulties[0], 1024.0,
            "{} starts at the default",
            m.name
        );
    }
}

#[test]
fn an_older_server_is_used_without_share_responses() {
    let pool = start_pool(PoolSimConfig {
        older_server: true,
        ..Default::default()
    });
    // Such a pool takes 6 s to come up (3 s of silence to the connection test, 3 s to
    // the capabilities request), more than the 5 s the other tests allow a dial: the
    // default, 15 s.
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"submit_response_from_server": true,
               "advanced": {"pool_connection_number_per_subaccount": 2,
                            "pool_connection_dial_timeout_seconds": 15}}),
    ));
    block_on(async {
        let mut a = Miner::login(&agent, "farm1.a", false).await;
        // Without the capabilities answer the agent offers no version rolling.
        let mut b = Miner::login(&agent, "farm1.b", false).await;
        assert_eq!(a.submit_share(0, 0).await["result"], json!(true));
        assert_eq!(b.submit_share(0, 0).await["result"], json!(true));
        wait_pool(&pool, &agent, "both shares credited", |s| {
            s.totals.valid == 2
        });
        // Both connections up (the miners keep them open), one line for the silence.
        wait_pool(&pool, &agent, "two connections", |s| {
            s.connections_for("farm1").count() == 2
        });
        let up = || agent.log().matches("share responses off").count();
        assert!(
            (0..500).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                up() == 2
            }),
            "{}",
            agent.log()
        );
    });
    let silence = agent
        .log()
        .matches("did not answer agent.get_capabilities")
        .count();
    assert_eq!(silence, 1, "{}", agent.log());
    let stats = pool.stats();
    assert!(stats.open_connections().all(|c| !c.subres_active()));
    assert_clean(&pool);
}

#[test]
fn a_move_to_a_sibling_connection_loses_no_share() {
    // Verdicts take up to 3 s, so the shares are still being checked when the
    // connection that comes up late takes miners from the busy one.
    let pool = start_pool(PoolSimConfig {
        verdict_delay_max: Duration::from_secs(3),
        ..Default::default()
    });
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"submit_response_from_server": true,
               "advanced": {"pool_connection_number_per_subaccount": 2}}),
    ));
    block_on(async {
        let mut miners = Miner::farm(&agent, 8).await;
        wait_pool(&pool, &agent, "two connections", |s| {
            s.connections_for("farm1").count() == 2
        });
        // One connection goes: all miners end up on the other; the agent redials.
        let lost = pool.stats().open_connections().next().unwrap().id;
        pool.drop_connection(lost);
        wait_pool(&pool, &agent, "all 8 on the survivor", |s| {
            s.open_connections()
                .any(|c| c.id != lost && c.sessions.len() == 8)
        });
        let busy = pool
            .stats()
            .open_connections()
            .find(|c| c.sessions.len() == 8)
            .unwrap()
            .id;
        for m in miners.iter_mut() {
            // The survivor's job, clean, reaches every miner.
            while !m.job.as_ref().is_some_and(|j| j.clean) || m.jobs_seen < 2 {
                m.wait_job().await;
            }
        }
        let mut ids = Vec::new();
        for (i, m) in miners.iter_mut().enumerate() {
            let bits = if i % 2 == 0 { 0x2000 } else { 0 };
            ids.push(m.send_share(0, bits).await);
        }
        wait_pool(&pool, &agent, "the late connection takes miners", |s| {
            s.open_connections()
                .any(|c| c.id != busy && c.id != lost && !c.sessions.is_empty())
        });
        let answered_before_move = pool.stats().connections[&busy].responses_sent;
        for (m, id) in miners.iter_mut().zip(&ids) {
            let r = m.response(*id).await;
            assert_eq!(r["result"], json!(true), "{} lost a share: {r}", m.user);
        }
        // And they mine on, wherever they are now.
        for (i, m) in miners.iter_mut().enumerate() {
            let bits = if i % 2 == 0 { 0x4000 } else { 0 };
            let r = m.submit_share(0, bits).await;
            assert_eq!(r["result"], json!(true), "{}: {r}", m.user);
        }
        assert!(
            answered_before_move < 8,
            "every verdict came before the move: nothing was in flight"
        );
    });
    wait_pool(&pool, &agent, "16 shares credited", |s| {
        s.totals.valid == 16
    });
    let stats = pool.stats();
    assert_eq!(stats.totals.withheld, 0, "{}", stats.summary());
    assert_clean(&pool);
}
