//! The status at 10,000 miners: how long the agent takes to build and write the status
//! file (from its own trace line), how long /status and /metrics take, and the agent's
//! resident memory per miner. Ignored by default (20,000 sockets, ~1 min); run with
//!   cargo test --release --test status_scale -- --ignored --nocapture

mod status_support;

use status_support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const MINERS: usize = 10_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

fn timed_get(addr: SocketAddr, path: &str) -> (Duration, usize) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200 OK"));
    (t.elapsed(), out.len())
}

#[test]
#[ignore]
fn status_at_ten_thousand_miners() {
    let dir = std::env::temp_dir().join(format!("btcagent-status-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (pool_port, _counts) = spawn_pool();
    let status_file = dir.join("status.json");
    let config = serde_json::json!({
        "agent_listen_ip": "127.0.0.1",
        "agent_listen_port": 0,
        "pools": [["127.0.0.1", pool_port, "farm1"]],
        "status_file": status_file,
        "status_interval_seconds": 1,
        "http_debug": {"enable": true, "listen": format!("127.0.0.1:{}", free_port())},
        // The whole farm arrives at once from one address (loopback): above the
        // handshake bounds a real farm behind one NAT needs.
        "advanced": {
            "pool_connection_number_per_subaccount": 2,
            "max_unauthorized_connections": 20000,
            "max_unauthorized_connections_per_ip": 20000
        }
    });
    let agent = start_agent(&dir, &config);
    let pid = agent.child.id();
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss_kib(pid);

    let mut miners = Vec::with_capacity(MINERS);
    for i in 0..MINERS {
        let mut s = TcpStream::connect(agent.miner_addr).unwrap();
        let lines = format!(
            "{{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"scale/1.0\"]}}\n{{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"farm1.w{i:05}\",\"x\"]}}\n"
        );
        s.write_all(lines.as_bytes()).unwrap();
        miners.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let doc: Option<serde_json::Value> = std::fs::read(&status_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if doc.is_some_and(|d| d["totals"]["miners"] == MINERS as u64) {
            break;
        }
        if Instant::now() > deadline {
            let log = agent.log.lock().unwrap().clone();
            let trouble: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("disconnected"))
                .take(20)
                .collect();
            panic!("miners never all showed up:\n{}", trouble.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // A few more writes at full size.
    std::thread::sleep(Duration::from_secs(3));
    let rss_after = rss_kib(pid);
    println!(
        "agent RSS: {rss_before} KiB idle, {rss_after} KiB with {MINERS} miners: {} bytes per miner",
        (rss_after.saturating_sub(rss_before)) * 1024 / MINERS as u64
    );

    // A tenth of the farm goes offline: the offline-workers list fills to its bound.
    const GONE: usize = 1_000;
    drop(miners.drain(..GONE));
    let deadline = Instant::now() + Duration::from_secs(60);
    let doc = loop {
        let doc: Option<serde_json::Value> = std::fs::read(&status_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(d) = doc.filter(|d| d["offline_workers"].as_array().map(Vec::len) == Some(GONE))
        {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the offline workers never showed up"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(2));
    let rss_offline = rss_kib(pid);
    let file_len = std::fs::metadata(&status_file)
        .map(|m| m.len())
        .unwrap_or(0);
    let history_len = serde_json::to_vec(&doc["history"]).unwrap().len();
    let offline_len = serde_json::to_vec(&doc["offline_workers"]).unwrap().len();
    let events_len = serde_json::to_vec(&doc["pool_events"]).unwrap().len();
    let (status_time, status_len) = timed_get(agent.http_addr, "/status");
    let (metrics_time, metrics_len) = timed_get(agent.http_addr, "/metrics");

    let log = agent.log.lock().unwrap().clone();
    let writes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("status file: {MINERS} miners")))
        .collect();
    assert!(!writes.is_empty(), "no trace line of a full-size write");
    println!("agent's status-file writes at {MINERS} miners (snapshot + serialize + write):");
    for w in writes.iter().rev().take(3) {
        println!("  {}", w.split("status file: ").nth(1).unwrap());
    }
    println!("GET /status: {status_len} bytes in {status_time:?}; GET /metrics: {metrics_len} bytes in {metrics_time:?}");
    println!(
        "with {} miners and {GONE} offline workers: agent RSS {rss_offline} KiB; status file {file_len} bytes, of which history {history_len}, offline_workers {offline_len}, pool_events {events_len}",
        MINERS - GONE
    );
    drop(miners);
    let _ = std::fs::remove_dir_all(&dir);
}
