//! The agent under test: the real release binary as a child process, with a config
//! pointing it at the in-process pool simulator.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone)]
pub struct AgentOptions {
    pub binary: PathBuf,
    /// The agent's pool list, in order.
    pub pools: Vec<SocketAddr>,
    pub pool_connections: u32,
    pub server_responses: bool,
    /// `advanced.submit_coalesce_ms`; `None` keeps the agent's default.
    pub coalesce_ms: Option<u64>,
    /// Where the config and the agent's log go.
    pub work_dir: PathBuf,
    /// `Some`: the pools are plain Stratum pools, not agent-protocol ones.
    pub stratum: Option<StratumUpstream>,
}

/// How the agent meets a plain Stratum pool.
#[derive(Clone, Debug)]
pub struct StratumUpstream {
    /// The pool entry's `user` (single-user mode: no `{sub}`).
    pub user: String,
    /// `advanced.stratum_start_difficulty` and `stratum_min_difficulty` both: the
    /// miners stay at it.
    pub miner_difficulty: f64,
}

pub struct AgentProcess {
    child: Child,
    pub listen: SocketAddr,
    pub log: PathBuf,
    config: PathBuf,
    options: AgentOptions,
}

/// The `btcagent` binary next to this executable (both built by the same cargo run).
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("btcagent")))
        .unwrap_or_else(|| PathBuf::from("btcagent"))
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn config_text(opts: &AgentOptions, pools: &[SocketAddr], listen_port: u16) -> String {
    let mut advanced = serde_json::json!({
        "pool_connection_number_per_subaccount": opts.pool_connections,
        // Every simulated miner comes from 127.0.0.1, a farm's from their own
        // addresses: at 19,000 miners the ramp-up has more than the default 256 of them
        // in their handshake at once, and the agent would refuse the rest of them.
        "max_unauthorized_connections_per_ip": 4096,
    });
    if let Some(ms) = opts.coalesce_ms {
        advanced["submit_coalesce_ms"] = ms.into();
    }
    let Some(stratum) = &opts.stratum else {
        return serde_json::to_string_pretty(&serde_json::json!({
            "multi_user_mode": false,
            "submit_response_from_server": opts.server_responses,
            "agent_listen_ip": "127.0.0.1",
            "agent_listen_port": listen_port,
            "pools": pools
                .iter()
                .map(|p| serde_json::json!([p.ip().to_string(), p.port(), "bench"]))
                .collect::<Vec<_>>(),
            "advanced": advanced,
        }))
        .unwrap_or_default();
    };
    advanced["stratum_start_difficulty"] = stratum.miner_difficulty.into();
    advanced["stratum_min_difficulty"] = stratum.miner_difficulty.into();
    serde_json::to_string_pretty(&serde_json::json!({
        "multi_user_mode": false,
        "submit_response_from_server": opts.server_responses,
        "agent_listen_ip": "127.0.0.1",
        "agent_listen_port": listen_port,
        // Its own status file (the default path is shared by every agent on the
        // machine), at the default interval: the load test reads the shares the agent
        // accepted without forwarding them from it.
        "status_file": status_path(&opts.work_dir).display().to_string(),
        "pools": pools
            .iter()
            .map(|p| serde_json::json!({
                "protocol": "stratum",
                "host": p.ip().to_string(),
                "port": p.port(),
                "user": stratum.user,
            }))
            .collect::<Vec<_>>(),
        "advanced": advanced,
    }))
    .unwrap_or_default()
}

fn status_path(work_dir: &Path) -> PathBuf {
    work_dir.join("status.json")
}

/// The agent's counters of its plain Stratum connections, from its status file.
#[derive(Clone, Copy, Debug, Default)]
pub struct StratumStatus {
    /// Shares forwarded to the pool.
    pub shares_sent: u64,
    /// Shares that met the miner's difficulty and not the pool's: accepted, not sent.
    pub shares_local: u64,
    /// The pool's verdicts on forwarded shares.
    pub shares_accepted: u64,
    pub shares_rejected: u64,
    pub connections: u64,
}

/// The document's `updated_at` (Unix seconds) and its Stratum counters.
fn read_status(path: &Path) -> Result<(u64, StratumStatus), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let pools = doc["pools"]
        .as_array()
        .ok_or_else(|| format!("{}: no pools list", path.display()))?;
    let mut s = StratumStatus::default();
    for p in pools.iter().filter(|p| p["protocol"] == "stratum") {
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        s.shares_sent += n("shares_sent");
        s.shares_local += n("shares_local");
        s.shares_accepted += n("shares_accepted");
        s.shares_rejected += n("shares_rejected");
        s.connections += 1;
    }
    Ok((doc["updated_at"].as_u64().unwrap_or(0), s))
}

/// WARN and ERROR lines of the agent's log: how many, and the first few.
pub fn log_complaints(path: &Path) -> (u64, u64, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut warnings, mut errors, mut first) = (0, 0, Vec::new());
    for line in text.lines() {
        match severity(line) {
            Some(Severity::Warning) => warnings += 1,
            Some(Severity::Error) => errors += 1,
            None => continue,
        }
        if first.len() < 10 {
            first.push(line.to_string());
        }
    }
    (warnings, errors, first)
}

#[derive(Debug, PartialEq, Eq)]
enum Severity {
    Warning,
    Error,
}

/// A warning or error line: btcagent's `DATE TIME LEVEL ...`, or glog's `Lmmdd hh:mm:ss`
/// (the Go agent's), whose first letter is the level (W, E, F).
fn severity(line: &str) -> Option<Severity> {
    let mut words = line.split_whitespace();
    let head = words.next()?;
    match words.nth(1) {
        Some("WARN") => return Some(Severity::Warning),
        Some("ERROR") => return Some(Severity::Error),
        _ => {}
    }
    let (level, date) = head.split_at_checked(1)?;
    if date.len() != 4 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match level {
        "W" => Some(Severity::Warning),
        "E" | "F" => Some(Severity::Error),
        _ => None,
    }
}

impl AgentProcess {
    pub fn start(opts: &AgentOptions) -> Result<AgentProcess, String> {
        if !opts.binary.is_file() {
            return Err(format!(
                "agent binary {} not found: build it with `cargo build --release -p btcagent` or pass --agent-bin",
                opts.binary.display()
            ));
        }
        let port = free_port()?;
        let config = opts.work_dir.join("agent_conf.json");
        std::fs::write(&config, config_text(opts, &opts.pools, port))
            .map_err(|e| format!("{}: {e}", config.display()))?;
        let log = opts.work_dir.join("agent.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(&opts.binary)
            .arg("-c")
            .arg(&config)
            .args(["-l", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", opts.binary.display()))?;
        let mut agent = AgentProcess {
            child,
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            config,
            options: opts.clone(),
        };
        agent.wait_listening(Duration::from_secs(10))?;
        Ok(agent)
    }

    /// Rewrites the config with another pool list and sends SIGHUP: the reload of
    /// `/etc/init.d/btcagent reload`.
    pub fn reload_with_pools(&self, pools: &[SocketAddr]) -> Result<(), String> {
        let tmp = self.config.with_extension("new");
        std::fs::write(&tmp, config_text(&self.options, pools, self.listen.port()))
            .and_then(|()| std::fs::rename(&tmp, &self.config))
            .map_err(|e| format!("{}: {e}", self.config.display()))?;
        // SAFETY: kill() with our own child's pid only sends a signal.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP);
        }
        Ok(())
    }

    /// The Stratum counters of the first status document the agent takes in a later
    /// second than `after` (it writes one every `status_interval_seconds`, 5 by default).
    pub fn stratum_status_after(
        &self,
        after: SystemTime,
        within: Duration,
    ) -> Result<StratumStatus, String> {
        let path = status_path(&self.options.work_dir);
        let after_s = after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let deadline = Instant::now() + within;
        let mut checked = None;
        loop {
            // Written whole and renamed into place: a document is never read half done.
            let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            if written.is_some() && written != checked {
                checked = written;
                let (updated_at, status) = read_status(&path)?;
                if updated_at > after_s {
                    return Ok(status);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: no document taken after the miners stopped within {} s",
                    path.display(),
                    within.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_listening(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the agent exited ({status}) at start; its log:\n{}",
                    tail(&self.log)
                ));
            }
            if TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "the agent does not listen on {}; its log:\n{}",
            self.listen,
            tail(&self.log)
        ))
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        // SAFETY: kill() with our own child's pid only sends a signal.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.alive() {
            self.stop(Duration::from_secs(5));
        }
    }
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::{severity, Severity};

    #[test]
    fn warnings_and_errors_of_both_agents_log_formats() {
        assert_eq!(
            severity("2026-12-03 15:36:52.498 WARN  pool#2 x: down"),
            Some(Severity::Warning)
        );
        assert_eq!(
            severity("2026-12-03 15:36:52.498 ERROR x"),
            Some(Severity::Error)
        );
        assert_eq!(severity("2026-12-03 15:36:52.498 INFO  x"), None);
        assert_eq!(
            severity("E1203 16:20:01.123456   4242 session.go:88] failed"),
            Some(Severity::Error)
        );
        assert_eq!(
            severity("W1203 16:20:01.123456   4242 x.go:1] slow"),
            Some(Severity::Warning)
        );
        assert_eq!(severity("I1203 16:20:01.123456   4242 x.go:1] up"), None);
        assert_eq!(severity("Error: not a log line"), None);
        assert_eq!(severity(""), None);
    }
}
