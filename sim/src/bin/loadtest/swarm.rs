//! Simulated miners in their own processes, so the agent is measured alone and each
//! process has its own open-files limit. The load test starts itself again as
//! `loadtest --swarm-worker ...`; the worker answers `stats` on stdin with one JSON
//! line on stdout, and `stop` with a final JSON line before it exits.

use btcagent_sim::histogram::Histogram;
use btcagent_sim::miner::{MinerSwarm, MinerSwarmConfig, SwarmStats};
use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// What one swarm worker runs.
#[derive(Clone, Debug)]
pub struct SwarmSpec {
    pub agent: SocketAddr,
    pub miners: usize,
    /// Distinguishes worker names across processes.
    pub name_prefix: String,
    pub share_interval_s: f64,
    pub version_rolling_fraction: f64,
    pub connect_rate: f64,
}

impl SwarmSpec {
    fn to_args(&self) -> Vec<String> {
        vec![
            "--swarm-worker".into(),
            "--agent".into(),
            self.agent.to_string(),
            "--miners".into(),
            self.miners.to_string(),
            "--name-prefix".into(),
            self.name_prefix.clone(),
            "--share-interval".into(),
            self.share_interval_s.to_string(),
            "--version-rolling-fraction".into(),
            self.version_rolling_fraction.to_string(),
            "--connect-rate".into(),
            self.connect_rate.to_string(),
        ]
    }

    pub fn from_args(args: &mut pico_args::Arguments) -> Result<SwarmSpec, pico_args::Error> {
        Ok(SwarmSpec {
            agent: args.value_from_str("--agent")?,
            miners: args.value_from_str("--miners")?,
            name_prefix: args.value_from_str("--name-prefix")?,
            share_interval_s: args.value_from_str("--share-interval")?,
            version_rolling_fraction: args.value_from_str("--version-rolling-fraction")?,
            connect_rate: args.value_from_str("--connect-rate")?,
        })
    }
}

/// The child side: runs the swarm and answers the parent until `stop` or end of input.
pub fn run_worker(spec: SwarmSpec) -> Result<(), String> {
    let mut config = MinerSwarmConfig::new(spec.agent, spec.miners);
    config.user_pattern = format!("bench.{}w{{i}}", spec.name_prefix);
    config.share_interval =
        (spec.share_interval_s > 0.0).then(|| Duration::from_secs_f64(spec.share_interval_s));
    config.version_rolling_fraction = spec.version_rolling_fraction;
    config.connect_rate = spec.connect_rate;
    let swarm = MinerSwarm::start(config).map_err(|e| format!("cannot start the swarm: {e}"))?;
    let stdin = io::stdin();
    let mut stdout = io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        match line.trim() {
            "stats" => writeln!(stdout, "{}", stats_json(&swarm.stats())),
            "stop" => break,
            other => writeln!(stdout, "{}", json!({ "error": other })),
        }
        .and_then(|_| stdout.flush())
        .map_err(|e| e.to_string())?;
    }
    let last = swarm.finish();
    writeln!(stdout, "{}", stats_json(&last))
        .and_then(|_| stdout.flush())
        .map_err(|e| e.to_string())
}

fn stats_json(s: &SwarmStats) -> Value {
    json!({
        "connected": s.connected,
        "connects": s.connects,
        "connect_failures": s.connect_failures,
        "authorized": s.authorized,
        "disconnects": s.disconnects,
        "jobs_received": s.jobs_received,
        "shares_submitted": s.shares_submitted,
        "accepted": s.accepted,
        "rejected": s.rejected,
        "reconnect_requests": s.reconnect_requests,
        "bad_lines": s.bad_lines,
        "gave_up": s.gave_up,
        "job_latency": s.job_latency.to_json(),
        "response_latency": s.response_latency.to_json(),
    })
}

/// Counters of one or more swarms added together.
#[derive(Clone, Debug, Default)]
pub struct SwarmSnapshot {
    pub connected: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub authorized: u64,
    pub disconnects: u64,
    pub jobs_received: u64,
    pub shares_submitted: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub reconnect_requests: u64,
    pub bad_lines: u64,
    pub gave_up: u64,
    pub job_latency: Histogram,
    pub response_latency: Histogram,
}

impl SwarmSnapshot {
    fn from_json(v: &Value) -> Result<SwarmSnapshot, String> {
        let n = |key: &str| {
            v[key]
                .as_u64()
                .ok_or_else(|| format!("swarm worker stats without {key:?}: {v}"))
        };
        let h = |key: &str| {
            Histogram::from_json(&v[key]).ok_or_else(|| format!("swarm worker stats: bad {key:?}"))
        };
        Ok(SwarmSnapshot {
            connected: n("connected")?,
            connects: n("connects")?,
            connect_failures: n("connect_failures")?,
            authorized: n("authorized")?,
            disconnects: n("disconnects")?,
            jobs_received: n("jobs_received")?,
            shares_submitted: n("shares_submitted")?,
            accepted: n("accepted")?,
            rejected: n("rejected")?,
            reconnect_requests: n("reconnect_requests")?,
            bad_lines: n("bad_lines")?,
            gave_up: n("gave_up")?,
            job_latency: h("job_latency")?,
            response_latency: h("response_latency")?,
        })
    }

    fn add(&mut self, o: &SwarmSnapshot) {
        self.connected += o.connected;
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
        self.authorized += o.authorized;
        self.disconnects += o.disconnects;
        self.jobs_received += o.jobs_received;
        self.shares_submitted += o.shares_submitted;
        self.accepted += o.accepted;
        self.rejected += o.rejected;
        self.reconnect_requests += o.reconnect_requests;
        self.bad_lines += o.bad_lines;
        self.gave_up += o.gave_up;
        self.job_latency.merge(&o.job_latency);
        self.response_latency.merge(&o.response_latency);
    }
}

/// The parent side: one worker process.
pub struct SwarmProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl SwarmProcess {
    pub fn spawn(spec: &SwarmSpec) -> Result<SwarmProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut child = Command::new(exe)
            .args(spec.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a swarm worker: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no worker stdout")?);
        Ok(SwarmProcess {
            child,
            stdin,
            stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn request(&mut self, command: &str) -> Result<SwarmSnapshot, String> {
        let stdin = self.stdin.as_mut().ok_or("swarm worker already stopped")?;
        writeln!(stdin, "{command}")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("swarm worker {}: {e}", self.child.id()))?;
        if command == "stop" {
            self.stdin = None;
        }
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("swarm worker {}: {e}", self.child.id()))?;
        if line.is_empty() {
            return Err(format!("swarm worker {} exited", self.child.id()));
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| format!("swarm worker {}: {e}: {line}", self.child.id()))?;
        SwarmSnapshot::from_json(&value)
    }

    pub fn stats(&mut self) -> Result<SwarmSnapshot, String> {
        self.request("stats")
    }

    /// Stops the miners (closing their connections) and returns their last counters.
    pub fn stop(&mut self) -> Result<SwarmSnapshot, String> {
        let last = self.request("stop");
        let _ = self.child.wait();
        last
    }
}

impl Drop for SwarmProcess {
    fn drop(&mut self) {
        // Closing stdin stops a worker that is still running; kill only if it hangs.
        self.stdin = None;
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stats of several workers added together.
pub fn stats_of(workers: &mut [SwarmProcess]) -> Result<SwarmSnapshot, String> {
    let mut total = SwarmSnapshot::default();
    for w in workers {
        total.add(&w.stats()?);
    }
    Ok(total)
}

/// Stops several workers; their final counters added together.
pub fn stop_all(workers: &mut [SwarmProcess]) -> Result<SwarmSnapshot, String> {
    let mut total = SwarmSnapshot::default();
    for w in workers {
        total.add(&w.stop()?);
    }
    Ok(total)
}
