//! The agent under test: the real release binary as a child process, with a config
//! pointing it at the in-process pool simulator.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    serde_json::to_string_pretty(&serde_json::json!({
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
    .unwrap_or_default()
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
