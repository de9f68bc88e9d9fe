//! Shared by the status tests: a minimal pool speaking the pool side of the BTCAgent
//! protocol on loopback, the agent binary started on a config, raw Stratum miners.
#![allow(dead_code)] // each test binary uses its own part

use serde_json::Value;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const ACCEPTED: u32 = 1798084231;
pub const REJECTED_STALE: u32 = 21;
/// Shares with this nonce are rejected by the test pool.
pub const BAD_NONCE: u32 = 0xbad;
pub const PASSWORD: &str = "pw-must-not-be-logged-7f3a";

/// What the test pool saw, over all its connections.
#[derive(Default)]
pub struct PoolCounts {
    pub connections_up: AtomicUsize,
    pub registered: AtomicUsize,
    pub accepted: AtomicUsize,
    pub rejected: AtomicUsize,
    pub subaccounts: Mutex<Vec<String>>,
}

/// The pool side of the agent protocol, just enough for the handshake, jobs and shares.
/// Starts the test pool on a loopback port; returns the port and its counters.
pub fn spawn_pool() -> (u16, Arc<PoolCounts>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = Arc::new(PoolCounts::default());
    let shared = counts.clone();
    thread::spawn(move || run_pool(listener, shared));
    (port, counts)
}

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
    c.set_read_timeout(Some(Duration::from_secs(20)))?;
    let send = |c: &mut TcpStream, v: Value| c.write_all(format!("{v}\n").as_bytes());
    loop {
        let n = match c.read(&mut chunk) {
            Ok(n) => n,
            // Quiet for a while: a new job, as a real pool sends, so the agent's read
            // timeout (60 s) never takes the connection down in a long test.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                send(
                    &mut c,
                    serde_json::json!({"id": null, "method": "mining.notify", "params": ["2", "00".repeat(32), "aa", "bb", [], "20000000", "1d00ffff", "504e86b9", false]}),
                )?;
                continue;
            }
            Err(e) => return Err(e),
        };
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
                    // Sessions registered now: a miner moved between connections to
                    // balance the load is unregistered on one and registered on another.
                    0x01 => {
                        counts.registered.fetch_add(1, Ordering::SeqCst);
                    }
                    0x04 => {
                        counts.registered.fetch_sub(1, Ordering::SeqCst);
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

pub struct Agent {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    pub miner_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free a moment ago (the config refuses port 0 for http_debug).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the agent binary on `config` (written to `dir`) at trace level; returns once it
/// listens for miners and on the http_debug port.
pub fn start_agent(dir: &Path, config: &Value) -> Agent {
    let conf = dir.join("agent_conf.json");
    std::fs::write(&conf, config.to_string()).unwrap();
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
pub struct Miner {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    next_id: u64,
    pub job: String,
}

impl Miner {
    pub fn connect(agent: SocketAddr, login: &str) -> Miner {
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
    pub fn request(&mut self, method: &str, params: Value) -> Value {
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

    pub fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "agent closed the miner connection");
        let msg: Value = serde_json::from_str(&line).unwrap();
        if msg["method"] == "mining.notify" {
            self.job = msg["params"][0].as_str().unwrap().to_string();
        }
        msg
    }

    pub fn wait_for_job(&mut self) {
        while self.job.is_empty() {
            self.read();
        }
    }

    pub fn submit(&mut self, nonce: u32) -> bool {
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
pub fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls the agent's HTTP /status until `cond` holds; fails after 10 s with the last one.
pub fn wait_for_live_status(addr: SocketAddr, what: &str, cond: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = http(addr, b"GET /status HTTP/1.0\r\n\r\n");
        let doc: Option<Value> = serde_json::from_str(body(&resp)).ok();
        if doc.as_ref().is_some_and(&cond) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last /status:\n{resp}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
}

pub fn read_status(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// A python3 that has prometheus_client (PATH first, then Debian's).
pub fn python_with_prometheus() -> String {
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

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("btcagent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
