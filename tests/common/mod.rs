//! Shared pieces of the end-to-end tests: the real agent binary as a child process,
//! the pool simulator, and a scripted miner that finds real shares.
//!
//! `BTCAGENT_BIN` runs another build of the agent (a MIPS or ARM binary), and
//! `BTCAGENT_RUNNER` the emulator in front of it (`qemu-mips`), so the same tests
//! prove the router binaries. A `.exe` is the Windows build, run by `wine`
//! (scripts/test-wine.sh).
#![allow(dead_code)]

use btcagent_sim::bitcoin::{
    hash_meets_target, hex_decode, parse_difficulty, target_for_difficulty,
};
use btcagent_sim::conn::MinerConn;
use btcagent_sim::job::Job;
use btcagent_sim::pool::{PoolSim, PoolSimConfig, PoolStats};
use btcagent_sim::share::search_nonce;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous: under qemu the agent is some ten times slower.
pub const T: Duration = Duration::from_secs(15);

pub fn start_pool(config: PoolSimConfig) -> PoolSim {
    PoolSim::start(config).expect("pool simulator starts")
}

pub fn pool() -> PoolSim {
    start_pool(PoolSimConfig::default())
}

/// Held while a process is started and while an executable file is written. A child
/// forked while another thread has a new executable open for writing inherits that
/// descriptor until its own exec, and running the file meanwhile fails with "Text
/// file busy" (ETXTBSY). `Command::spawn` returns once the child has exec'd.
static FORK_LOCK: Mutex<()> = Mutex::new(());

fn fork_lock() -> std::sync::MutexGuard<'static, ()> {
    FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes an executable as a package manager installs one: beside `path`, then
/// renamed over it (a running program keeps its old file).
pub fn install_executable(path: &std::path::Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let _forks = fork_lock();
    let new = path.with_extension("new");
    std::fs::write(&new, bytes).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// The agent binary under test, as a child process.
pub struct AgentProc {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("btcagent-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config for one pool simulator, listening on a free loopback port; `extra` is
/// merged over it (nested objects merged too).
pub fn config_for(pools: &[SocketAddr], extra: Value) -> Value {
    let pools: Vec<Value> = pools
        .iter()
        .map(|a| json!([a.ip().to_string(), a.port(), "poolsub"]))
        .collect();
    let mut base = json!({
        "multi_user_mode": true,
        "agent_listen_ip": "127.0.0.1",
        "agent_listen_port": 0,
        "pools": pools,
        "status_file": "",
        "advanced": {
            "pool_connection_number_per_subaccount": 1,
            "pool_connection_dial_timeout_seconds": 5,
        }
    });
    merge(&mut base, extra);
    base
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}

/// UCI refuses port 0, as a router should: take a port that was free a moment ago.
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// The agent binary under test, ready for its arguments: `BTCAGENT_BIN` (behind
/// `BTCAGENT_RUNNER`, e.g. qemu-mips) when set, else this build's binary.
pub fn agent_command() -> Command {
    let bin = std::env::var("BTCAGENT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_btcagent").to_string());
    match std::env::var("BTCAGENT_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut c = Command::new(runner);
            c.arg(bin);
            c
        }
        _ => Command::new(bin),
    }
}

/// The agent under test is the Windows build (run under wine): it has no UCI reader,
/// and it stops on Ctrl-C rather than SIGTERM.
pub fn agent_is_windows() -> bool {
    std::env::var("BTCAGENT_BIN").is_ok_and(|b| b.ends_with(".exe"))
}

impl AgentProc {
    pub fn start(config: Value) -> AgentProc {
        Self::start_with_args(config, &[])
    }

    pub fn start_with_args(config: Value, args: &[&str]) -> AgentProc {
        Self::start_with_env(config, args, &[])
    }

    pub fn start_with_env(config: Value, args: &[&str], env: &[(&str, &str)]) -> AgentProc {
        let dir = TempDir::new("agent");
        let conf = dir.0.join("agent_conf.json");
        std::fs::write(&conf, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let mut cmd = agent_command();
        cmd.arg("-c").arg(&conf).args(["-l", "stderr"]).args(args);
        cmd.envs(env.iter().copied());
        Self::spawn(cmd, dir)
    }

    /// Runs a copy of the agent binary kept in the agent's own directory
    /// ([`AgentProc::binary`]), which a test may replace as an upgrade would.
    pub fn start_copy(config: Value) -> AgentProc {
        let dir = TempDir::new("agent-copy");
        let conf = dir.0.join("agent_conf.json");
        std::fs::write(&conf, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let binary = dir.0.join("btcagent");
        install_executable(
            &binary,
            &std::fs::read(env!("CARGO_BIN_EXE_btcagent")).unwrap(),
        );
        let mut cmd = Command::new(&binary);
        cmd.arg("-c").arg(&conf).args(["-l", "stderr"]);
        Self::spawn(cmd, dir)
    }

    /// Where [`AgentProc::start_copy`] put the binary.
    pub fn binary(&self) -> std::path::PathBuf {
        self._dir.0.join("btcagent")
    }

    /// Sends the agent a signal by name (`USR2`).
    pub fn signal(&self, name: &str) {
        let _forks = fork_lock();
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{name} failed");
    }

    /// Runs from an OpenWrt UCI config file (`--uci`), as the init script does.
    pub fn start_uci(uci: &str) -> AgentProc {
        let dir = TempDir::new("agent-uci");
        let conf = dir.0.join("btcagent");
        std::fs::write(&conf, uci).unwrap();
        let mut cmd = agent_command();
        cmd.arg("--uci").arg(&conf).args(["-l", "stderr"]);
        Self::spawn(cmd, dir)
    }

    fn spawn(mut cmd: Command, dir: TempDir) -> AgentProc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = {
            let _forks = fork_lock();
            cmd.spawn().expect("agent binary starts")
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("BTCAGENT_TEST_LOG").is_some() {
                    eprintln!("agent: {line}");
                }
                // Kept before the address is announced, so that a test never sees
                // an agent whose log lacks its first line.
                let addr = line
                    .split("listening for miners on ")
                    .nth(1)
                    .map(|a| a.trim().parse::<SocketAddr>().ok());
                sink.lock().unwrap().push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(T) {
            Ok(Some(a)) => a,
            _ => {
                let _ = child.kill();
                panic!(
                    "agent did not start listening; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        AgentProc {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Replaces the config file the agent was started with (`-c` or `--uci`), for a
    /// reload.
    pub fn rewrite_config(&self, text: &[u8]) {
        let json = self._dir.0.join("agent_conf.json");
        let conf = if json.exists() {
            json
        } else {
            self._dir.0.join("btcagent")
        };
        assert!(conf.exists(), "no config file to rewrite");
        // Written whole, then renamed over: the agent never reads half a file.
        let tmp = self._dir.0.join("config.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &conf).unwrap();
    }

    /// Asks the agent to read its config again, as `/etc/init.d/btcagent reload` does.
    pub fn sighup(&self) {
        let _forks = fork_lock();
        let ok = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -HUP failed");
    }

    /// Asks the agent to stop as its service manager would: SIGTERM, or for the
    /// Windows build Ctrl-C (wine turns the SIGINT into a CTRL_C_EVENT); waits for it
    /// to exit.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let signal = if agent_is_windows() { "-INT" } else { "-TERM" };
        {
            let _forks = fork_lock();
            let _ = Command::new("kill")
                .arg(signal)
                .arg(self.child.id().to_string())
                .status();
        }
        let end = Instant::now() + T;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < end,
                "agent did not exit after kill {signal}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails the test with the pool's and the agent's view when `cond` does not come true.
pub fn wait_pool(
    pool: &PoolSim,
    agent: &AgentProc,
    what: &str,
    cond: impl FnMut(&PoolStats) -> bool,
) {
    if !pool.wait_until(T, cond) {
        panic!(
            "timed out waiting for: {what}\npool: {}\nagent log:\n{}",
            pool.stats().summary(),
            agent.log()
        );
    }
}

/// Checks the pool saw nothing it would have dropped silently: every submit was for a
/// registered session and well formed, and every share was valid.
pub fn assert_clean(pool: &PoolSim) {
    let t = pool.stats().totals;
    assert_eq!(
        t.unregistered, 0,
        "submits for unregistered sessions: {t:?}"
    );
    assert_eq!(t.malformed, 0, "malformed ex-messages: {t:?}");
    assert_eq!(t.invalid, 0, "invalid shares: {t:?}");
}

/// A miner driven step by step, which mines real shares on what it received.
pub struct Miner {
    pub conn: MinerConn,
    pub extranonce1: String,
    pub difficulty: f64,
    pub difficulty_text: String,
    pub version_mask: Option<u32>,
    pub job: Option<Job>,
    pub jobs_seen: usize,
    pub user: String,
    /// Bytes of extranonce2 it fills (4 but on 4-5 byte Stratum pools).
    pub extranonce2_size: usize,
    /// The agent sent it `client.reconnect`.
    pub asked_to_reconnect: bool,
    next_ex2: u32,
    /// Responses read while waiting for another: verdicts come in the order the pool
    /// gives them, which is not the submit order.
    early: Vec<Value>,
}

pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    smol::block_on(f)
}

impl Miner {
    pub async fn connect(agent: &AgentProc) -> Miner {
        let conn = MinerConn::connect(agent.addr)
            .await
            .expect("connect to agent");
        Miner {
            conn,
            extranonce1: String::new(),
            difficulty: 0.0,
            difficulty_text: String::new(),
            version_mask: None,
            job: None,
            jobs_seen: 0,
            user: String::new(),
            extranonce2_size: 4,
            asked_to_reconnect: false,
            next_ex2: 1,
            early: Vec::new(),
        }
    }

    /// Connects, optionally asks for version rolling, logs in, and waits for the first job.
    pub async fn login(agent: &AgentProc, user: &str, rolling: bool) -> Miner {
        Miner::login_expecting(agent, user, rolling, 4, false).await
    }

    /// [`Miner::login`] where the agent must give `extranonce2_size` bytes of
    /// extranonce2; `extranonce_subscribe`: it sends `mining.extranonce.subscribe`
    /// (answered true) before it logs in.
    pub async fn login_expecting(
        agent: &AgentProc,
        user: &str,
        rolling: bool,
        extranonce2_size: usize,
        extranonce_subscribe: bool,
    ) -> Miner {
        let mut m = Miner::connect(agent).await;
        m.user = user.into();
        let id = m
            .conn
            .request("mining.subscribe", json!(["test-miner/1.0"]))
            .await
            .unwrap();
        let r = m.conn.read_response(id, T).await.unwrap();
        m.extranonce1 = r["result"][1].as_str().unwrap().to_string();
        assert_eq!(
            r["result"][2],
            json!(extranonce2_size),
            "miner extranonce2 size: {r}"
        );
        m.extranonce2_size = extranonce2_size;
        if extranonce_subscribe {
            let id = m
                .conn
                .request("mining.extranonce.subscribe", json!([]))
                .await
                .unwrap();
            let r = m.conn.read_response(id, T).await.unwrap();
            assert_eq!(r["result"], json!(true), "extranonce.subscribe: {r}");
        }
        if rolling {
            let id = m
                .conn
                .request("mining.configure", json!([["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}]))
                .await
                .unwrap();
            let r = m.conn.read_response(id, T).await.unwrap();
            assert_eq!(r["result"]["version-rolling"], json!(true), "{r}");
        }
        let id = m
            .conn
            .request("mining.authorize", json!([user, "x"]))
            .await
            .unwrap();
        let r = m.conn.read_response(id, T).await.unwrap();
        assert_eq!(r["result"], json!(true), "authorize: {r}");
        m.wait_job().await;
        m
    }

    /// `n` miners logged in as `farm1.w0`, `farm1.w1`, ..., every other one rolling
    /// versions, each with its first job.
    pub async fn farm(agent: &AgentProc, n: usize) -> Vec<Miner> {
        let mut miners = Vec::with_capacity(n);
        for i in 0..n {
            miners.push(Miner::login(agent, &format!("farm1.w{i}"), i % 2 == 0).await);
        }
        miners
    }

    /// Handles notifications until a job arrives.
    pub async fn wait_job(&mut self) -> &Job {
        let seen = self.jobs_seen;
        while self.jobs_seen == seen {
            let v = self.conn.read_json(T).await.expect("a notification");
            self.absorb(&v);
        }
        self.job.as_ref().unwrap()
    }

    /// Records a notification's effect.
    pub fn absorb(&mut self, v: &Value) {
        match v.get("method").and_then(Value::as_str) {
            Some("mining.set_difficulty") => {
                self.difficulty_text = v["params"][0].to_string();
                self.difficulty = parse_difficulty(&self.difficulty_text).unwrap();
            }
            Some("mining.set_version_mask") => {
                self.version_mask = u32::from_str_radix(v["params"][0].as_str().unwrap(), 16).ok();
            }
            Some("mining.set_extranonce") => {
                self.extranonce1 = v["params"][0].as_str().unwrap().to_string();
                self.extranonce2_size = v["params"][1].as_u64().unwrap() as usize;
            }
            Some("client.reconnect") => self.asked_to_reconnect = true,
            Some("mining.notify") => {
                self.job = Some(Job::from_notify_params(&v["params"]).expect("a well-formed job"));
                self.jobs_seen += 1;
            }
            _ => {}
        }
    }

    /// Absorbs whatever notifications are already on the way.
    pub async fn catch_up(&mut self) {
        while let Ok(v) = self.conn.read_json(Duration::from_millis(300)).await {
            self.absorb(&v);
        }
    }

    /// Reads lines until the response to `id`, absorbing notifications on the way.
    pub async fn response(&mut self, id: u64) -> Value {
        if let Some(at) = self.early.iter().position(|v| v["id"] == json!(id)) {
            return self.early.remove(at);
        }
        loop {
            let v = self.conn.read_json(T).await.expect("a response");
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
            if v.get("method").is_none() && !v["id"].is_null() {
                self.early.push(v);
                continue;
            }
            self.absorb(&v);
        }
    }

    /// Finds a share on the current job: `ntime_delta` moves ntime, `version_bits` are
    /// flipped in the version (0 = no rolling).
    pub fn find_share(&mut self, ntime_delta: u32, version_bits: u32) -> (String, u32, u32, u32) {
        let job = self.job.as_ref().expect("a job");
        let target = target_for_difficulty(self.difficulty);
        let ex1 = hex_decode(&self.extranonce1).unwrap();
        let ntime = job.work.ntime.wrapping_add(ntime_delta);
        loop {
            let ex2 = self.next_ex2;
            self.next_ex2 += 1;
            let ex2_bytes = self.extranonce2_bytes(ex2);
            let root = job.work.merkle_root(&[&ex1, &ex2_bytes]);
            if let Some(nonce) =
                search_nonce(&job.work, &root, version_bits, ntime, &target, 0, 1 << 20)
            {
                return (job.id.clone(), ex2, ntime, nonce);
            }
        }
    }

    /// The extranonce2 `ex2` as the miner fills it: its last `extranonce2_size` bytes.
    fn extranonce2_bytes(&self, ex2: u32) -> Vec<u8> {
        ex2.to_be_bytes()[4 - self.extranonce2_size.min(4)..].to_vec()
    }

    /// `ex2` in hex as the miner submits it.
    pub fn extranonce2_hex(&self, ex2: u32) -> String {
        format!("{ex2:0width$x}", width = 2 * self.extranonce2_size)
    }

    /// Mines and submits one share; returns the agent's response.
    pub async fn submit_share(&mut self, ntime_delta: u32, version_bits: u32) -> Value {
        let id = self.send_share(ntime_delta, version_bits).await;
        self.response(id).await
    }

    /// Mines and submits one share; returns the request id to wait for with
    /// [`Miner::response`].
    pub async fn send_share(&mut self, ntime_delta: u32, version_bits: u32) -> u64 {
        let (job, ex2, ntime, nonce) = self.find_share(ntime_delta, version_bits);
        let mut params = vec![
            json!(self.user),
            json!(job),
            json!(self.extranonce2_hex(ex2)),
            json!(format!("{ntime:08x}")),
            json!(format!("{nonce:08x}")),
        ];
        if version_bits != 0 {
            params.push(json!(format!("{version_bits:08x}")));
        }
        self.conn
            .request("mining.submit", Value::Array(params))
            .await
            .unwrap()
    }

    /// A share whose hash misses the target (at an easy difficulty many nonces hit it).
    pub async fn submit_bad_share(&mut self) -> Value {
        let job = self.job.as_ref().expect("a job");
        let target = target_for_difficulty(self.difficulty);
        let ex1 = hex_decode(&self.extranonce1).unwrap();
        let ex2 = self.next_ex2;
        self.next_ex2 += 1;
        let root = job.work.merkle_root(&[&ex1, &ex2.to_be_bytes()]);
        let ntime = job.work.ntime;
        let nonce = (0u32..)
            .find(|&n| {
                !hash_meets_target(
                    &job.work.header_hash(&root, job.work.version, ntime, n),
                    &target,
                )
            })
            .unwrap();
        let params = json!([
            self.user,
            job.id,
            format!("{ex2:08x}"),
            format!("{ntime:08x}"),
            format!("{nonce:08x}")
        ]);
        let id = self.conn.request("mining.submit", params).await.unwrap();
        self.response(id).await
    }

    pub fn session_id(&self) -> u16 {
        u16::from_str_radix(&self.extranonce1, 16).unwrap()
    }
}
