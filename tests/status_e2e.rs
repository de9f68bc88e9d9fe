//! The status published by a running agent binary matches what a real pool and real
//! miners did: a minimal in-test pool (a thread speaking the pool side of the BTCAgent
//! protocol on loopback) and raw Stratum miners over TCP. Checks the status file,
//! `btcagent status`, HTTP /status and /metrics (parsed by Python's prometheus_client),
//! and that bad HTTP clients do not disturb a good one.
//!
//! Needs scripts/test-deps-status.sh (python3 with prometheus_client).

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const ACCEPTED: u32 = 1798084231;
const REJECTED_STALE: u32 = 21;
/// Shares with this nonce are rejected by the test pool.
const BAD_NONCE: u32 = 0xbad;
const PASSWORD: &str = "pw-must-not-be-logged-7f3a";

#[derive(Default)]
struct PoolCounts {
    connections_up: AtomicUsize,
    registered: AtomicUsize,
    accepted: AtomicUsize,
    rejected: AtomicUsize,
    subaccounts: Mutex<Vec<String>>,
}

/// The pool side of the agent protocol, just enough for the handshake, jobs and shares.
fn run_pool(listener: TcpListener, counts: Arc<PoolCounts>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { return };
        let counts = counts.clone();
        thread::spawn(move || {
            let _ = serve_pool_connection(conn, &counts);
        });
    }
}

fn serve_pool_connection(mut c: TcpStream, counts: &PoolCounts) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut submit_index: u16 = 0;
    let send = |c: &mut TcpStream, v: Value| c.write_all(format!("{v}\n").as_bytes());
    loop {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            if buf.first() == Some(&0x7f) {
                if buf.len() < 4 {
                    break;
                }
                let len = u16::from_le_bytes([buf[2], buf[3]]) as usize;
                if buf.len() < len {
                    break;
                }
                let frame: Vec<u8> = buf.drain(..len).collect();
                match frame[1] {
                    0x01 => {
                        counts.registered.fetch_add(1, Ordering::SeqCst);
                    }
                    0x02 | 0x03 | 0x12 | 0x13 => {
                        let nonce =
                            u32::from_le_bytes([frame[11], frame[12], frame[13], frame[14]]);
                        let status = if nonce == BAD_NONCE {
                            counts.rejected.fetch_add(1, Ordering::SeqCst);
                            REJECTED_STALE
                        } else {
                            counts.accepted.fetch_add(1, Ordering::SeqCst);
                            ACCEPTED
                        };
                        let mut resp = vec![0x7f, 0x10, 10, 0];
                        resp.extend_from_slice(&submit_index.to_le_bytes());
                        resp.extend_from_slice(&status.to_le_bytes());
                        submit_index = submit_index.wrapping_add(1);
                        c.write_all(&resp)?;
                    }
                    _ => {}
                }
                continue;
            }
            let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                break;
            };
            let line: Vec<u8> = buf.drain(..=end).collect();
            let msg: Value = serde_json::from_slice(&line).expect("agent sent bad JSON");
            let id = msg["id"].clone();
            match msg["method"].as_str().unwrap_or("") {
                "agent.get_capabilities" => send(
                    &mut c,
                    serde_json::json!({"id": id, "result": {"capabilities": ["verrol", "subres"]}, "error": null}),
                )?,
                "mining.configure" => send(
                    &mut c,
                    serde_json::json!({"id": id, "result": {"version-rolling": true, "version-rolling.mask": "1fffe000"}, "error": null}),
                )?,
                "mining.subscribe" => send(
                    &mut c,
                    serde_json::json!({"id": id, "result": [[["mining.set_difficulty", "01000002"], ["mining.notify", "01000002"]], "01000002", 8], "error": null}),
                )?,
                "mining.authorize" => {
                    counts
                        .subaccounts
                        .lock()
                        .unwrap()
                        .push(msg["params"][0].as_str().unwrap_or("").to_string());
                    send(
                        &mut c,
                        serde_json::json!({"id": id, "result": true, "error": null}),
                    )?;
                    send(
                        &mut c,
                        serde_json::json!({"id": null, "method": "mining.set_difficulty", "params": [65536]}),
                    )?;
                    send(
                        &mut c,
                        serde_json::json!({"id": null, "method": "mining.notify", "params": ["1", "00".repeat(32), "aa", "bb", [], "20000000", "1d00ffff", "504e86b9", true]}),
                    )?;
                    counts.connections_up.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    }
}

struct Agent {
    child: Child,
    log: Arc<Mutex<String>>,
    miner_addr: SocketAddr,
    http_addr: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free a moment ago (the config refuses port 0 for http_debug).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_agent(dir: &Path, pool_port: u16, status_file: &Path) -> Agent {
    let conf = dir.join("agent_conf.json");
    std::fs::write(
        &conf,
        serde_json::json!({
            "multi_user_mode": true,
            "agent_listen_ip": "127.0.0.1",
            "agent_listen_port": 0,
            "pools": [["127.0.0.1", pool_port, "unused"]],
            "submit_response_from_server": true,
            "status_file": status_file,
            "status_interval_seconds": 1,
            "http_debug": {"enable": true, "listen": format!("127.0.0.1:{}", free_port())},
            "advanced": {"pool_connection_number_per_subaccount": 2, "submit_coalesce_ms": 0}
        })
        .to_string(),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_btcagent"))
        .arg("-c")
        .arg(&conf)
        .args(["-v", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let log_writer = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            log_writer.lock().unwrap().push_str(&line);
            log_writer.lock().unwrap().push('\n');
            let _ = tx.send(line);
        }
    });
    let mut miner_addr = None;
    let mut http_addr = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while miner_addr.is_none() || http_addr.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("agent did not start:\n{}", log.lock().unwrap()));
        if let Some(rest) = line.split("listening for miners on ").nth(1) {
            miner_addr = Some(rest.trim().parse().unwrap());
        }
        if let Some(rest) = line.split("on http://").nth(1) {
            http_addr = Some(rest.trim().parse().unwrap());
        }
    }
    thread::spawn(move || while rx.recv().is_ok() {});
    Agent {
        child,
        log,
        miner_addr: miner_addr.unwrap(),
        http_addr: http_addr.unwrap(),
    }
}

/// A Stratum miner over raw TCP.
struct Miner {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    next_id: u64,
    job: String,
}

impl Miner {
    fn connect(agent: SocketAddr, login: &str) -> Miner {
        let stream = TcpStream::connect(agent).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut m = Miner {
            stream,
            reader,
            next_id: 1,
            job: String::new(),
        };
        m.request("mining.subscribe", serde_json::json!(["test-miner/1.0"]));
        m.request("mining.authorize", serde_json::json!([login, PASSWORD]));
        m
    }

    /// Sends a request and reads until its response, noting jobs on the way.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let line = serde_json::json!({"id": id, "method": method, "params": params});
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        loop {
            let msg = self.read();
            if msg["id"] == serde_json::json!(id) {
                return msg;
            }
        }
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "agent closed the miner connection");
        let msg: Value = serde_json::from_str(&line).unwrap();
        if msg["method"] == "mining.notify" {
            self.job = msg["params"][0].as_str().unwrap().to_string();
        }
        msg
    }

    fn wait_for_job(&mut self) {
        while self.job.is_empty() {
            self.read();
        }
    }

    fn submit(&mut self, nonce: u32) -> bool {
        self.wait_for_job();
        let params = serde_json::json!([
            "w",
            self.job,
            "00000001",
            "504e86b9",
            format!("{nonce:08x}")
        ]);
        let resp = self.request("mining.submit", params);
        resp["result"] == serde_json::json!(true)
    }
}

/// One HTTP request over a fresh connection; returns the whole response.
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
}

fn read_status(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// A python3 that has prometheus_client (PATH first, then Debian's).
fn python_with_prometheus() -> String {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", "import prometheus_client"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return py.to_string();
        }
    }
    panic!("no python3 with prometheus_client: run scripts/test-deps-status.sh");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("btcagent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn status_matches_what_the_pool_and_miners_saw() {
    let dir = temp_dir("status-e2e");
    let pool_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let pool_port = pool_listener.local_addr().unwrap().port();
    let counts = Arc::new(PoolCounts::default());
    {
        let counts = counts.clone();
        thread::spawn(move || run_pool(pool_listener, counts));
    }
    // The directory does not exist yet: the agent creates it.
    let status_file = dir.join("run/status.json");
    let agent = start_agent(&dir, pool_port, &status_file);

    let mut miners = vec![
        Miner::connect(agent.miner_addr, "farm1.w1"),
        Miner::connect(agent.miner_addr, "farm1.w2"),
        Miner::connect(agent.miner_addr, "farm2.w3"),
    ];
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

    // A miner leaving keeps its shares in the totals.
    drop(miners.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(doc) = read_status(&status_file) {
            if doc["totals"]["miners"] == 2 {
                assert_eq!(doc["totals"]["shares_accepted"], 6);
                assert_eq!(doc["totals"]["accepted_last_5min"], 6);
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
