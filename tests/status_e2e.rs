//! The status published by a running agent binary matches what a real pool and real
//! miners did: a minimal in-test pool (a thread speaking the pool side of the BTCAgent
//! protocol on loopback) and raw Stratum miners over TCP. Checks the status file,
//! `btcagent status`, HTTP /status and /metrics (parsed by Python's prometheus_client),
//! and that bad HTTP clients do not disturb a good one.
//!
//! Needs scripts/test-deps-status.sh (python3 with prometheus_client).

mod status_support;

use serde_json::Value;
use status_support::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn status_matches_what_the_pool_and_miners_saw() {
    let dir = temp_dir("status-e2e");
    let (pool_port, counts) = spawn_pool();
    // The directory does not exist yet: the agent creates it.
    let status_file = dir.join("run/status.json");
    let config = serde_json::json!({
        "multi_user_mode": true,
        "agent_listen_ip": "127.0.0.1",
        "agent_listen_port": 0,
        "pools": [["127.0.0.1", pool_port, "unused"]],
        "submit_response_from_server": true,
        "status_file": status_file,
        "status_interval_seconds": 1,
        "http_debug": {"enable": true, "listen": format!("127.0.0.1:{}", free_port())},
        "advanced": {"pool_connection_number_per_subaccount": 2, "submit_coalesce_ms": 0}
    });
    let agent = start_agent(&dir, &config);

    // The first miner of each sub-account opens its two connections. The second farm1
    // miner comes only once the agent has all four up: had it joined while one was
    // still dialling, the agent would move one of the two to balance the load, and a
    // share in flight during a move is answered stale.
    let w1 = Miner::connect(agent.miner_addr, "farm1.w1");
    let w3 = Miner::connect(agent.miner_addr, "farm2.w3");
    wait_for_live_status(agent.http_addr, "all four pool connections up", |doc| {
        doc["totals"]["pools_up"] == 4
    });
    let w2 = Miner::connect(agent.miner_addr, "farm1.w2");
    let mut miners = vec![w1, w2, w3];
    // 2 + 3 + 1 good shares, one bad one from w1.
    for (i, m) in miners.iter_mut().enumerate() {
        for k in 0..[2, 3, 1][i] {
            assert!(m.submit(0x1000 + k), "a good share was refused");
        }
    }
    assert!(!miners[0].submit(BAD_NONCE), "the bad share was accepted");
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 6);
    assert_eq!(counts.rejected.load(Ordering::SeqCst), 1);

    // The file catches up within a couple of intervals.
    let deadline = Instant::now() + Duration::from_secs(10);
    let doc = loop {
        if let Some(doc) = read_status(&status_file) {
            if doc["totals"]["shares_accepted"] == 6 && doc["totals"]["pools_up"] == 4 {
                break doc;
            }
        }
        assert!(
            Instant::now() < deadline,
            "status file never showed the shares: {:?}",
            read_status(&status_file)
        );
        thread::sleep(Duration::from_millis(100));
    };
    let t = &doc["totals"];
    assert_eq!(t["miners"], 3, "{doc:#}");
    assert_eq!(t["shares_rejected"], 1);
    assert_eq!(t["accepted_last_5min"], 6);
    assert_eq!(t["rejected_last_5min"], 1);
    assert_eq!(t["pool_connections"], 4);
    assert_eq!(
        t["pools_up"].as_u64().unwrap() as usize,
        counts.connections_up.load(Ordering::SeqCst)
    );
    assert!(t["hashrate"].as_f64().unwrap() > 0.0);
    assert_eq!(doc["listen"], agent.miner_addr.to_string());
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    let mut pool_subaccounts = counts.subaccounts.lock().unwrap().clone();
    pool_subaccounts.sort();
    assert_eq!(pool_subaccounts, ["farm1", "farm1", "farm2", "farm2"]);

    let pools = doc["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 4);
    let sum = |key: &str| pools.iter().map(|p| p[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("shares_accepted"), 6);
    assert_eq!(sum("shares_rejected"), 1);
    assert_eq!(sum("shares_sent"), 7);
    assert_eq!(sum("miners"), 3);
    assert_eq!(
        sum("miners") as usize,
        counts.registered.load(Ordering::SeqCst)
    );
    for p in pools {
        assert_eq!(p["state"], "up");
        assert_eq!(p["route"], "direct");
        assert_eq!(p["pool"], format!("127.0.0.1:{pool_port}"));
        assert_eq!(p["jobs"], 1);
        assert!(p["bytes_up"].as_u64().unwrap() > 0 && p["bytes_down"].as_u64().unwrap() > 0);
    }

    let subs = doc["subaccounts"].as_array().unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0]["name"], "farm1");
    assert_eq!(subs[0]["pool_connections"], 2);
    assert_eq!(subs[0]["miners"], 2);
    assert_eq!(subs[0]["shares_accepted"], 5);
    assert_eq!(subs[0]["shares_rejected"], 1);
    assert_eq!(subs[1]["name"], "farm2");
    assert_eq!(subs[1]["miners"], 1);
    assert_eq!(subs[1]["shares_accepted"], 1);

    let listed = doc["miners"].as_array().unwrap();
    let w1 = listed
        .iter()
        .find(|m| m["worker"] == "w1")
        .expect("w1 listed");
    assert_eq!(w1["subaccount"], "farm1");
    assert_eq!(w1["ip"], "127.0.0.1");
    assert_eq!(w1["shares_accepted"], 2);
    assert_eq!(w1["shares_rejected"], 1);
    assert_eq!(w1["difficulty"].as_f64(), Some(65536.0));
    assert!(w1["last_share_age_seconds"].as_u64().unwrap() < 10);
    assert!(w1["pool_id"].as_u64().is_some());
    assert!(w1["hashrate"].as_f64().unwrap() > 0.0);

    // `btcagent status` reads the same file.
    let out = Command::new(env!("CARGO_BIN_EXE_btcagent"))
        .args(["status", "--file"])
        .arg(&status_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Pools: 4 of 4 connections up"), "{text}");
    assert!(text.contains("Shares: 6 accepted, 1 rejected"), "{text}");
    assert!(text.contains("Miners: 3; all by hashrate:"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("w3 ")),
        "{text}"
    );

    // HTTP /status is the same document, taken fresh.
    let resp = http(agent.http_addr, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains("\r\nConnection: close\r\n"));
    let live: Value = serde_json::from_str(body(&resp)).unwrap();
    assert_eq!(live["totals"]["shares_accepted"], 6);
    assert_eq!(live["totals"]["miners"], 3);

    // /metrics parses with the reference parser and has the promised names.
    let resp = http(agent.http_addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains("Content-Type: text/plain; version=0.0.4"));
    let metrics = body(&resp).to_string();
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}|{labels}|{s.value}")
"#;
    let mut py = Command::new(python_with_prometheus())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let parsed = py.wait_with_output().unwrap();
    assert!(
        parsed.status.success(),
        "prometheus_client refused /metrics: {}\n{metrics}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let samples = String::from_utf8_lossy(&parsed.stdout).into_owned();
    let value = |name: &str, labels: &str| -> f64 {
        samples
            .lines()
            .find_map(|l| {
                let mut p = l.split('|');
                (p.next() == Some(name) && p.next() == Some(labels))
                    .then(|| p.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in:\n{samples}"))
    };
    assert_eq!(value("btcagent_up", ""), 1.0);
    assert!(value("btcagent_uptime_seconds", "") >= 0.0);
    assert_eq!(value("btcagent_miners", ""), 3.0);
    assert_eq!(value("btcagent_pool_connections", "state=up"), 4.0);
    assert_eq!(value("btcagent_shares_total", "result=accepted"), 6.0);
    assert_eq!(value("btcagent_shares_total", "result=rejected"), 1.0);
    let pool = format!("127.0.0.1:{pool_port}");
    assert_eq!(
        value(
            "btcagent_pool_shares_total",
            &format!("pool={pool},result=accepted,subaccount=farm1")
        ),
        5.0
    );
    assert_eq!(
        value(
            "btcagent_pool_miners",
            &format!("pool={pool},subaccount=farm2")
        ),
        1.0
    );
    assert!(
        value(
            "btcagent_pool_bytes_total",
            &format!("direction=up,pool={pool}")
        ) > 0.0
    );
    assert!(value("btcagent_subaccount_hashrate", "subaccount=farm1") > 0.0);
    assert_eq!(value("btcagent_pool_events_total", "event=up"), 4.0);
    assert_eq!(value("btcagent_pool_events_total", "event=down"), 0.0);
    assert_eq!(value("btcagent_offline_workers", ""), 0.0);

    // A miner leaving keeps its shares in the totals.
    drop(miners.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(doc) = read_status(&status_file) {
            if doc["totals"]["miners"] == 2 {
                assert_eq!(doc["totals"]["shares_accepted"], 6);
                assert_eq!(doc["totals"]["accepted_last_5min"], 6);
                // It is listed as offline, with what it did.
                let offline = doc["offline_workers"].as_array().unwrap();
                assert_eq!(offline.len(), 1, "{doc:#}");
                assert_eq!(offline[0]["worker"], "w3");
                assert_eq!(offline[0]["subaccount"], "farm2");
                assert_eq!(offline[0]["shares_accepted"], 1);
                assert!(offline[0]["last_hashrate"].as_f64().unwrap() > 0.0);
                // The history has every share, for the farm and per sub-account.
                let sum = |points: &Value, i: usize| {
                    points
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p[i].as_u64().unwrap())
                        .sum::<u64>()
                };
                let minutes = &doc["history"]["minutes"];
                assert_eq!(minutes["bucket_seconds"], 60);
                assert_eq!(sum(&minutes["farm"], 1), 6, "{minutes:#}");
                assert_eq!(sum(&minutes["farm"], 2), 1);
                assert_eq!(sum(&minutes["subaccounts"]["farm1"], 1), 5);
                assert_eq!(sum(&minutes["subaccounts"]["farm2"], 1), 1);
                assert_eq!(sum(&doc["history"]["ten_minutes"]["farm"], 1), 6);
                // Four connections came up.
                let events = doc["pool_events"].as_array().unwrap();
                assert_eq!(
                    events.iter().filter(|e| e["event"] == "up").count(),
                    4,
                    "{events:#?}"
                );
                assert_eq!(doc["pool_event_counts"]["up"], 4);
                break;
            }
        }
        assert!(Instant::now() < deadline, "the miner never left the status");
        thread::sleep(Duration::from_millis(100));
    }

    // Miner passwords never reach the log, even at trace level.
    let log = agent.log.lock().unwrap().clone();
    assert!(log.contains("authorized"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "a miner password was logged:\n{log}"
    );

    // The history is kept beside the status file for the next run (saved once a
    // minute and at shutdown; what it holds depends on when the minute turned).
    let saved = read_status(&dir.join("run/status.history.json")).expect("history file");
    assert!(saved["saved_at"].as_u64().is_some() && saved["history"].is_object());

    // Once the agent is gone the file goes stale, and `btcagent status` says so.
    drop(miners);
    drop(agent);
    // More than three 1-second intervals, counted in whole seconds.
    thread::sleep(Duration::from_millis(4500));
    let out = Command::new(env!("CARGO_BIN_EXE_btcagent"))
        .args(["status", "--file"])
        .arg(&status_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stale") && err.contains("agent not running?"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_btcagent"))
        .args(["status", "--file"])
        .arg(dir.join("missing.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no status file at"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 19 item 3: a file with numbers no agent writes gets a clear message and exit
/// code 1, not a wrapped verdict.
#[test]
fn btcagent_status_calls_out_an_absurd_file() {
    let dir = temp_dir("status-absurd");
    let path = dir.join("status.json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let doc = serde_json::json!({
        "version": "0.1.0", "started_at": now - 60, "updated_at": now, "uptime_seconds": 60,
        "listen": "0.0.0.0:3333", "status_interval_seconds": 1u64 << 63,
        "totals": {"miners": 0, "pools_up": 0, "pool_connections": 1,
                   "shares_accepted": u64::MAX, "shares_rejected": 1,
                   "accepted_last_5min": 0, "rejected_last_5min": 0, "hashrate": 0.0},
        "pools": [], "subaccounts": [], "miners": []
    });
    std::fs::write(&path, doc.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_btcagent"))
        .args(["status", "--file"])
        .arg(&path)
        .output()
        .unwrap();
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{text}{err}");
    assert!(
        err.contains("status_interval_seconds 9223372036854775808 is over 3600")
            && err.contains("a damaged file"),
        "{err}"
    );
    assert!(
        text.contains("18446744073709551615 accepted, 1 rejected (0.00%)"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
