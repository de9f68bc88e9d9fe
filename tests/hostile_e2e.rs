//! Hostile input against the real agent binary: strangers flooding the miner port, and
//! a pool that sends garbage. Honest miners (the sim's swarm, really mining) must lose
//! nothing and notice nothing.
//!
//! The flood test is heavy (it opens as many sockets as this process may hold) and is
//! meant for the release binary; scripts/test.sh runs it as
//! `BTCAGENT_BIN=target/release/btcagent cargo test --test hostile_e2e -- --include-ignored`.

mod common;

use btcagent_sim::miner::{MinerSwarm, MinerSwarmConfig, SwarmStats};
use btcagent_sim::net::connect_from;
use btcagent_sim::pool::{PoolSimConfig, PoolStats};
use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("the tests listen on 127.0.0.1"),
    }
}

/// Loopback source `n` of a range: 127.<range>.<n / 250>.<n % 250 + 1>.
fn source(range: u8, n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, range, (n / 250) as u8, (n % 250 + 1) as u8)
}

/// Whether the agent closed `s` (end of stream or reset) within `timeout`.
fn closed_within(mut s: &TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn swarm(agent: &AgentProc, miners: usize, pattern: &str) -> MinerSwarm {
    let mut cfg = MinerSwarmConfig::new(agent.addr, miners);
    cfg.user_pattern = pattern.into();
    cfg.share_interval = Some(Duration::from_millis(300));
    cfg.version_rolling_fraction = 0.5;
    // A disconnect must show, not be hidden by a reconnect.
    cfg.reconnect_delay = None;
    MinerSwarm::start(cfg).unwrap()
}

#[test]
fn handshakes_are_bounded_per_address_and_in_total() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"advanced": {"max_unauthorized_connections": 8, "max_unauthorized_connections_per_ip": 4}}),
    ));
    let addr = v4(agent.addr);
    // Four idle connections from one address are held; its fifth is closed at once.
    let first: Vec<TcpStream> = (0..4)
        .map(|_| connect_from(source(2, 0), addr).unwrap())
        .collect();
    let fifth = connect_from(source(2, 0), addr).unwrap();
    assert!(closed_within(&fifth, T), "the fifth from one address");
    assert!(agent.wait_log("from its address have not authorized", T));
    for s in &first {
        assert!(
            !closed_within(s, Duration::from_millis(50)),
            "the first four stay"
        );
    }
    // Four more from another address fill the total of 8; one more from a third
    // address closes the oldest handshake of all, the first connection.
    let second: Vec<TcpStream> = (0..4)
        .map(|_| connect_from(source(2, 1), addr).unwrap())
        .collect();
    let _third = connect_from(source(2, 2), addr).unwrap();
    assert!(closed_within(&first[0], T), "the oldest makes room");
    assert!(agent.wait_log("closed to make room", T));
    for s in first[1..].iter().chain(&second) {
        assert!(!closed_within(s, Duration::from_millis(50)));
    }
    // A miner still gets in (the next oldest handshake makes room for it), logs in
    // and mines; its login frees its slot at once.
    block_on(async {
        let mut m = Miner::login(&agent, "farm1.honest", false).await;
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
    });
    assert!(closed_within(&first[1], T), "made room for the miner");
    let _another = connect_from(source(2, 3), addr).unwrap();
    assert!(
        !closed_within(&first[2], Duration::from_millis(300)),
        "the login freed a slot: nobody had to make room"
    );
    assert_clean(&pool);
}

/// The connections the test pool has seen, by id.
fn conn_ids(s: &PoolStats) -> Vec<u64> {
    s.connections.keys().copied().collect()
}

#[test]
fn a_pool_that_sends_garbage_is_dropped_its_miners_move_and_it_is_redialled_with_backoff() {
    let pool = pool();
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({"multi_user_mode": false, "advanced": {"pool_connection_number_per_subaccount": 2}}),
    ));
    wait_pool(&pool, &agent, "two connections up", |s| s.open_count() == 2);
    let miners = swarm(&agent, 10, "rig{i}");
    assert!(
        miners.wait_until(T, |s| s.authorized == 10 && s.accepted >= 10),
        "{}",
        miners.stats().summary()
    );
    let ids = conn_ids(&pool.stats());
    let (keep, mut bad) = (ids[0], ids[1]);
    // Each poison goes to the newest connection of the second slot; a connection that
    // dies within 10 s of coming up counts as a failed dial: 1 s, 2 s, 4 s of backoff.
    let mut oversized_ex = vec![0x7f, 0x10, 0xff, 0xff]; // SUBMIT_RESPONSE is 10 bytes
    oversized_ex.resize(0xffff, 0);
    let mut long_line = vec![b'{'; 1 << 20];
    long_line.push(b'\n');
    let poisons: [(&str, Vec<u8>, &str); 3] = [
        (
            "garbage",
            b"HTTP/1.1 502 Bad Gateway\r\n\r\n".to_vec(),
            "pool sent garbage",
        ),
        ("a 64 KiB SUBMIT_RESPONSE", oversized_ex, "bad ex-message"),
        ("a 1 MB line", long_line, "line longer than"),
    ];
    let mut backoff = Duration::from_secs(1);
    for (what, bytes, logged) in poisons {
        let sent = Instant::now();
        pool.send_raw(bad, bytes).unwrap();
        wait_pool(
            &pool,
            &agent,
            &format!("{what}: dropped and redialled"),
            |s| !s.connections[&bad].open && s.connections.keys().any(|&id| id > bad),
        );
        let redialled = sent.elapsed();
        assert!(
            agent.log().contains(logged),
            "{what}: log says {logged:?}\n{}",
            agent.log()
        );
        assert!(
            redialled >= backoff,
            "{what}: redialled after {redialled:?}, before the {backoff:?} backoff"
        );
        println!("{what}: dropped, redialled {redialled:?} later (backoff {backoff:?})");
        backoff *= 2;
        bad = *conn_ids(&pool.stats()).last().unwrap();
        wait_pool(&pool, &agent, "the new connection authorized", |s| {
            s.connections[&bad].sub_account.is_some()
        });
        assert!(pool.stats().connections[&keep].open, "the sibling stays up");
    }
    // The miners stayed connected through all of it and still mine.
    let before = miners.stats().accepted;
    assert!(miners.wait_until(T, |s| s.accepted >= before + 10));
    let stats = miners.finish();
    assert_eq!(stats.disconnects, 0, "{}", stats.summary());
    assert_eq!(stats.authorized, 10);
    // Shares in flight while a miner moved may be answered stale (counted, not lost
    // silently); every share that reached the pool was valid.
    println!("swarm: {}", stats.summary());
    assert_clean(&pool);
}

// ---- the flood -------------------------------------------------------------------

/// The agent's peak and current resident memory, from /proc (kB).
fn agent_memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Log lines per wall-clock second (by the agent's own timestamps), but those `skip`
/// names.
fn lines_per_second(log: &str, skip: impl Fn(&str) -> bool) -> BTreeMap<String, usize> {
    let mut per_second = BTreeMap::new();
    for line in log.lines().filter(|l| !skip(l)) {
        if let Some(second) = line.get(..19) {
            *per_second.entry(second.to_string()).or_insert(0) += 1;
        }
    }
    per_second
}

fn soft_nofile_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Strangers' attacks, one after the other; the idle flood stays open until the end.
struct Attack {
    idle: Vec<TcpStream>,
}

impl Attack {
    /// As many idle connections as this process may still open, from 100 addresses.
    fn idle_flood(addr: SocketAddrV4, count: usize) -> Attack {
        let mut idle = Vec::with_capacity(count);
        for i in 0..count {
            match connect_from(source(10, i % 100), addr) {
                Ok(s) => idle.push(s),
                Err(e) => panic!("flood connection {i}: {e}"),
            }
        }
        Attack { idle }
    }

    /// Connections that send a line one byte every 500 ms and never finish it.
    fn slowloris(addr: SocketAddrV4, count: usize, rounds: usize) -> usize {
        let mut conns: Vec<TcpStream> = (0..count)
            .filter_map(|i| connect_from(source(11, i % 20), addr).ok())
            .collect();
        let line = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"slow";
        for round in 0..rounds {
            for c in &mut conns {
                let _ = c.write_all(&line[round % line.len()..][..1]);
            }
            thread::sleep(Duration::from_millis(500));
        }
        conns.len()
    }

    /// Connections that each send a 1 MB line.
    fn megabyte_lines(addr: SocketAddrV4, count: usize) -> usize {
        let mut line = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"".to_vec();
        line.resize(1 << 20, b'a');
        let mut closed = 0;
        for i in 0..count {
            let Ok(mut c) = connect_from(source(12, i % 5), addr) else {
                continue;
            };
            let _ = c.write_all(&line);
            if closed_within(&c, T) {
                closed += 1;
            }
        }
        closed
    }

    /// HTTP, TLS and RDP hellos; returns how many the agent closed.
    fn hellos(addr: SocketAddrV4, each: usize) -> usize {
        let hellos: [&[u8]; 3] = [
            b"GET / HTTP/1.1\r\nHost: router\r\nUser-Agent: scanner\r\n\r\n",
            &[
                0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
            ],
            &[
                0x03, 0x00, 0x00, 0x13, 0x0e, 0xe0, 0, 0, 0, 0, 0, 1, 0, 8, 0, 3, 0, 0, 0,
            ],
        ];
        let mut conns = Vec::new();
        for i in 0..each {
            for (k, hello) in hellos.iter().enumerate() {
                if let Ok(mut c) = connect_from(source(13, i % 10 + 10 * k), addr) {
                    let _ = c.write_all(hello);
                    conns.push(c);
                }
            }
        }
        conns.iter().filter(|c| closed_within(c, T)).count()
    }

    /// Miners that log in and then never read (a receive buffer of a few KB).
    fn never_reading(addr: SocketAddrV4, count: usize) -> Vec<TcpStream> {
        (0..count)
            .filter_map(|i| {
                let mut c = connect_from(source(14, i), addr).ok()?;
                let login = format!(
                    "{{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}}\n{{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"farm.mute{i}\",\"x\"]}}\n"
                );
                c.write_all(login.as_bytes()).ok()?;
                Some(c)
            })
            .collect()
    }
}

#[test]
#[ignore = "heavy: scripts/test.sh runs it against the release binary"]
fn honest_miners_lose_nothing_while_strangers_flood_the_port() {
    const HONEST: usize = 100;
    const NEWCOMERS: usize = 50;
    const SHARES_EACH: u64 = 60;
    let pool = start_pool(PoolSimConfig {
        job_interval: Some(Duration::from_millis(500)),
        merkle_branch_len: 12,
        ..Default::default()
    });
    let agent = AgentProc::start(config_for(
        &[pool.addr()],
        json!({
            "submit_response_from_server": true,
            "advanced": {
                "pool_connection_number_per_subaccount": 3,
                "pool_connection_read_timeout_seconds": 10,
                "message_queue_size": {"miner_session": 16}
            }
        }),
    ));
    let pid = agent.child.id();
    let addr = v4(agent.addr);
    let mut cfg = MinerSwarmConfig::new(agent.addr, HONEST);
    cfg.user_pattern = "farm.w{i}".into();
    cfg.share_interval = Some(Duration::from_millis(500));
    cfg.shares_per_miner = Some(SHARES_EACH);
    cfg.version_rolling_fraction = 0.5;
    cfg.reconnect_delay = None;
    let honest = MinerSwarm::start(cfg).unwrap();
    assert!(
        honest.wait_until(T, |s| s.authorized == HONEST as u64),
        "{}",
        honest.stats().summary()
    );
    let attack_started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let watcher_done = done.clone();
    let peak_fds = thread::spawn(move || {
        let mut peak = 0;
        while !watcher_done.load(Ordering::SeqCst) {
            peak = peak.max(open_descriptors(pid));
            thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    let log_lines_before = agent.log().lines().count();

    // 1. The descriptor-limit flood: what this process may still open, from 100
    // addresses (each under the per-address bound, so the total bound is what holds).
    let reserve = 1_200; // the swarms, the pool simulator, the other attacks
    let flood_size = soft_nofile_limit().saturating_sub(reserve).min(60_000);
    let t = Instant::now();
    let flood = Attack::idle_flood(addr, flood_size);
    let flood_secs = t.elapsed().as_secs_f64();
    // Let the agent take in the tail of the flood before counting its descriptors.
    thread::sleep(Duration::from_secs(1));
    println!(
        "flood: {} idle connections from 100 addresses in {flood_secs:.1} s; the agent then holds {} descriptors (bound: 4096 handshakes + miners + pool)",
        flood.idle.len(),
        open_descriptors(pid)
    );
    // New honest miners still get in while the flood holds its sockets.
    let t = Instant::now();
    let mut ncfg = MinerSwarmConfig::new(agent.addr, NEWCOMERS);
    ncfg.user_pattern = "farm.new{i}".into();
    ncfg.share_interval = Some(Duration::from_millis(500));
    ncfg.shares_per_miner = Some(10);
    ncfg.reconnect_delay = None;
    let newcomers = MinerSwarm::start(ncfg).unwrap();
    assert!(
        newcomers.wait_until(T, |s| s.authorized == NEWCOMERS as u64),
        "newcomers during the flood: {}",
        newcomers.stats().summary()
    );
    println!(
        "flood: {NEWCOMERS} new miners authorized {:.0} ms after they started connecting",
        t.elapsed().as_secs_f64() * 1000.0
    );

    // 2-5 in turn, the flood still open.
    let slow = Attack::slowloris(addr, 200, 8);
    let big = Attack::megabyte_lines(addr, 20);
    let hellos = Attack::hellos(addr, 100);
    let mute = Attack::never_reading(addr, 20);
    println!(
        "attacks: {slow} slowloris connections, {big} of 20 megabyte lines closed, {hellos} of 300 HTTP/TLS/RDP hellos closed, {} miners that never read",
        mute.len()
    );

    // The honest miners finish their shares; none was lost or refused.
    let all = HONEST as u64 * SHARES_EACH;
    let finished = honest.wait_until(Duration::from_secs(120), |s| s.accepted + s.rejected >= all);
    done.store(true, Ordering::SeqCst);
    let peak_fds = peak_fds.join().unwrap();
    let (peak_kb, now_kb) = agent_memory_kb(pid);
    let log = agent.log();
    let attack_log: String = log
        .lines()
        .skip(log_lines_before)
        .collect::<Vec<_>>()
        .join("\n");
    let per_second = lines_per_second(&attack_log, |l| l.contains(": authorized"));
    let busiest = per_second.values().copied().max().unwrap_or(0);
    let s: SwarmStats = honest.finish();
    let n = newcomers.finish();
    println!(
        "agent: peak RSS {:.1} MB (now {:.1} MB), peak {peak_fds} descriptors (sampled every 50 ms); log: {} lines in {:.0} s of attack, at most {busiest} in one second (logins of honest miners not counted)",
        peak_kb as f64 / 1024.0,
        now_kb as f64 / 1024.0,
        attack_log.lines().count(),
        attack_started.elapsed().as_secs_f64()
    );
    println!("honest: {}", s.summary());
    println!("newcomers: {}", n.summary());
    assert!(finished, "honest miners did not finish: {}", s.summary());
    assert_eq!(s.disconnects, 0, "an honest miner was disconnected");
    assert_eq!(s.authorized, HONEST as u64);
    assert_eq!(
        s.rejected, 0,
        "honest shares refused: {:?}",
        s.rejects_by_code
    );
    assert_eq!(s.accepted, all);
    assert_eq!(n.disconnects, 0, "a newcomer was disconnected");
    assert_eq!(n.rejected, 0);
    let p = pool.stats();
    let farm_valid: u64 = p
        .worker_valid
        .iter()
        .filter(|((sub, w), _)| sub == "farm" && w.starts_with('w'))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(farm_valid, all, "every honest share reached the pool valid");
    assert_clean(&pool);
    // Bounds, far above the figures printed: memory of a router, not of the flood.
    assert!(peak_kb < 100 * 1024, "peak RSS {peak_kb} kB");
    assert!(busiest <= 50, "{busiest} log lines in one second");
    drop(mute);
    drop(flood);
}
