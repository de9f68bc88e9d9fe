//! Unreachable pools in the log: the real agent against pools that refuse, counting
//! its lines. Each failed dial shows as a debug line (`-v 1`), so the tests wait for a
//! number of failed dials, not for time, and then count the warnings.

mod common;

use common::*;
use serde_json::json;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A port nobody listens on: dialling it is refused.
fn refusing_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A pool address that hangs up on every connection until opened, then forwards to
/// `pool`: an unreachable pool that comes back.
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
}

impl Gate {
    fn new(pool: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(false));
        let is_open = open.clone();
        std::thread::spawn(move || {
            for agent_side in listener.incoming().map_while(Result::ok) {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: closed before a byte
                }
                let Ok(pool_side) = TcpStream::connect(pool) else {
                    continue;
                };
                let (mut a, mut p) = (
                    agent_side.try_clone().unwrap(),
                    pool_side.try_clone().unwrap(),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut p);
                    let _ = p.shutdown(std::net::Shutdown::Write);
                });
                let (mut a, mut p) = (agent_side, pool_side);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut p, &mut a);
                    let _ = a.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Gate { addr, open }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// The failed dials of `pool` so far: one debug line per route attempt.
fn failed_dials(log: &str, pool: SocketAddr) -> usize {
    let needle = format!("DEBUG pool {pool}: direct: ");
    log.lines().filter(|l| l.contains(&needle)).count()
}

/// Lines above debug level that name `pool`, but for the start-up line listing the
/// pools (`... mode: pools ...`).
fn lines_about(log: &str, pool: SocketAddr) -> Vec<String> {
    let needle = pool.to_string();
    log.lines()
        .filter(|l| l.contains(&needle) && !l.contains(" mode: "))
        .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
        .map(String::from)
        .collect()
}

fn wait_for(agent: &AgentProc, what: &str, mut cond: impl FnMut(&str) -> bool) {
    let end = Instant::now() + T;
    while Instant::now() < end {
        if cond(&agent.log()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}\nagent log:\n{}", agent.log());
}

#[test]
fn an_unreachable_pool_gets_one_line_per_failure_streak_and_one_when_back() {
    let dead = refusing_port();
    let pool = pool();
    let gate = Gate::new(pool.addr());
    let agent = AgentProc::start_with_args(
        config_for(
            &[dead, gate.addr],
            json!({
                "multi_user_mode": false,
                "advanced": {"pool_connection_number_per_subaccount": 3}
            }),
        ),
        &["-v", "1"],
    );
    // Three slots, each round trying both pools: nine failed dials each is three rounds.
    wait_for(&agent, "nine failed dials of each pool", |log| {
        failed_dials(log, dead) >= 9 && failed_dials(log, gate.addr) >= 9
    });
    let log = agent.log();
    for addr in [dead, gate.addr] {
        let lines = lines_about(&log, addr);
        assert_eq!(lines.len(), 1, "one line for {addr}:\n{log}");
        assert!(lines[0].contains(" WARN "), "{}", lines[0]);
        assert!(
            lines[0].contains(&format!("pool {addr} (poolsub): cannot connect: direct: ")),
            "the line names the pool, the sub-account and the reason: {}",
            lines[0]
        );
    }
    assert!(
        lines_about(&log, dead)[0].contains("connection refused"),
        "{log}"
    );

    gate.open();
    wait_pool(&pool, &agent, "all three slots up via the gate", |s| {
        s.open_count() == 3
    });
    wait_for(&agent, "the line saying the pool is back", |log| {
        log.contains(&format!(
            "pool {} (poolsub): reachable again after ",
            gate.addr
        ))
    });
    let log = agent.log();
    let back: Vec<_> = lines_about(&log, gate.addr)
        .into_iter()
        .filter(|l| l.contains("reachable again"))
        .collect();
    assert_eq!(back.len(), 1, "one line when it comes back:\n{log}");
    assert!(back[0].contains(" INFO "), "{}", back[0]);
    // The dead pool's streak goes on, silently.
    assert_eq!(lines_about(&log, dead).len(), 1, "{log}");
}

#[test]
fn a_miner_behind_unreachable_pools_gets_one_line_per_pool_and_none_after_shutdown() {
    let dead: Vec<SocketAddr> = (0..3).map(|_| refusing_port()).collect();
    let mut agent = AgentProc::start_with_args(
        config_for(
            &dead,
            json!({
                // The template's shape: multi-user, five connections per sub-account.
                "advanced": {
                    "pool_connection_number_per_subaccount": 5,
                    "pool_connection_dial_timeout_seconds": 60
                }
            }),
        ),
        &["-v", "1"],
    );
    let _miner = block_on(async {
        let mut m = Miner::connect(&agent).await;
        m.conn
            .request("mining.subscribe", json!(["test-miner/1.0"]))
            .await
            .unwrap();
        m.conn
            .request("mining.authorize", json!(["sub1.w1", "x"]))
            .await
            .unwrap();
        m
    });
    wait_for(&agent, "ten failed dials of each pool", |log| {
        dead.iter().all(|&p| failed_dials(log, p) >= 10)
    });
    let log = agent.log();
    let warnings = log.lines().filter(|l| l.contains(" WARN ")).count();
    assert_eq!(warnings, 3, "one warning per pool:\n{log}");
    for &p in &dead {
        assert_eq!(lines_about(&log, p).len(), 1, "{p}:\n{log}");
    }

    let status = agent.sigterm();
    assert!(status.success(), "{status:?}\n{}", agent.log());
    let log = agent.log();
    let after: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("shutting down"))
        .filter(|l| dead.iter().any(|p| l.contains(&p.to_string())) && !l.contains(" DEBUG "))
        .collect();
    assert!(
        after.is_empty(),
        "pool lines after shutdown started: {after:?}\n{log}"
    );
}
