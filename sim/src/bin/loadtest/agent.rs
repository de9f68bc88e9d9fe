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
    /// Copy the binary into `work_dir` and run it from there, so that the copy can be
    /// replaced (`--after-window upgrade`).
    pub run_copy: bool,
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
    /// The path the agent was started from (the copy in `work_dir` with `run_copy`).
    start_path: PathBuf,
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
        let start_path = if opts.run_copy {
            let copy = opts.work_dir.join("btcagent");
            std::fs::copy(&opts.binary, &copy).map_err(|e| {
                format!(
                    "copying {} to {}: {e}",
                    opts.binary.display(),
                    copy.display()
                )
            })?;
            copy
        } else {
            opts.binary.clone()
        };
        // Its stderr is the log file, not a pipe: the descriptor survives an exec in
        // place (a handoff), and the new program's log goes on in the same file.
        let child = Command::new(&start_path)
            .arg("-c")
            .arg(&config)
            .args(["-l", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", start_path.display()))?;
        let mut agent = AgentProcess {
            child,
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            config,
            options: opts.clone(),
            start_path,
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
        self.signal(libc::SIGHUP);
        Ok(())
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill() with our own child's pid only sends a signal.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Whether the agent has a handler for `signal` (SigCgt of /proc/PID/status): a
    /// signal it neither catches nor ignores may kill it.
    pub fn catches(&self, signal: libc::c_int) -> Result<bool, String> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        signal_mask(&status, "SigCgt")
            .map(|mask| mask_has(mask, signal))
            .ok_or_else(|| format!("{path}: no SigCgt line"))
    }

    /// Replaces the binary the agent was started from (a `run_copy`) with a fresh copy
    /// of `binary`, as a package upgrade does: written beside it, renamed over it.
    pub fn replace_binary(&self) -> Result<(), String> {
        let tmp = self.start_path.with_extension("new");
        std::fs::copy(&self.options.binary, &tmp)
            .and_then(|_| std::fs::rename(&tmp, &self.start_path))
            .map_err(|e| format!("replacing {}: {e}", self.start_path.display()))
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

/// `btcagent --version` of `binary` (within 5 s), or why it did not answer as
/// btcagent: the Go agent does not, and has no handoff.
pub fn btcagent_version(binary: &Path) -> Result<String, String> {
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} --version did not exit", binary.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
    }
    let line = out.lines().next().unwrap_or("").trim().to_string();
    if is_btcagent_version(&line) {
        Ok(line)
    } else {
        Err(format!(
            "{} --version says {line:?}, not btcagent's \"btcagent X.Y.Z\"",
            binary.display()
        ))
    }
}

/// btcagent's `--version` line: `btcagent 0.1.0`.
fn is_btcagent_version(line: &str) -> bool {
    line.strip_prefix("btcagent ")
        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
}

/// A signal mask line of /proc/PID/status (`SigCgt:\t0000000000004a07`).
fn signal_mask(status: &str, name: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Signal n is bit n-1 of a /proc signal mask.
fn mask_has(mask: u64, signal: libc::c_int) -> bool {
    (1..=64).contains(&signal) && mask & (1u64 << (signal - 1)) != 0
}

/// What the agent logs about a handoff.
#[derive(Debug, PartialEq, Eq)]
pub enum HandoffLog {
    /// The old program: `handoff: handing N miners to PATH`.
    Handing { miners: u64, to: String },
    /// The new program: `handoff: took over N miners`, or `N of M miners` (M handed).
    TookOver { miners: u64, of: Option<u64> },
    /// `handoff refused, this process keeps serving: REASON`.
    Refused { reason: String },
}

/// The handoff news of one log line, wherever the line's prefix (time, level, target)
/// ends.
pub fn handoff_line(line: &str) -> Option<HandoffLog> {
    const REFUSED: &str = "handoff refused, this process keeps serving: ";
    if let Some(i) = line.find(REFUSED) {
        return Some(HandoffLog::Refused {
            reason: line[i + REFUSED.len()..].trim().to_string(),
        });
    }
    let after = |marker: &str| Some(&line[line.find(marker)? + marker.len()..]);
    if let Some(rest) = after("handoff: handing ") {
        let (miners, rest) = number(rest)?;
        let to = rest.strip_prefix("miners to ")?.trim().to_string();
        return Some(HandoffLog::Handing { miners, to });
    }
    let (miners, rest) = number(after("handoff: took over ")?)?;
    if rest.starts_with("miners") {
        return Some(HandoffLog::TookOver { miners, of: None });
    }
    let (of, rest) = number(rest.strip_prefix("of ")?)?;
    rest.starts_with("miners").then_some(HandoffLog::TookOver {
        miners,
        of: Some(of),
    })
}

/// A number and the text after the space that ends it.
fn number(text: &str) -> Option<(u64, &str)> {
    let (n, rest) = text.split_once(' ')?;
    Some((n.parse().ok()?, rest))
}

/// The lines added to a log since the last call (whole lines only).
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    /// From the log's current end on.
    pub fn from_end(path: &Path) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            offset: std::fs::metadata(path).map_or(0, |m| m.len()),
            partial: String::new(),
        }
    }

    pub fn new_lines(&mut self) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = Vec::new();
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            if file.seek(SeekFrom::Start(self.offset)).is_ok() {
                let _ = file.read_to_end(&mut bytes);
            }
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let lines = self.partial[..end].lines().map(str::to_string).collect();
        self.partial.drain(..=end);
        lines
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
    use super::*;

    #[test]
    fn handoff_log_lines() {
        assert_eq!(
            handoff_line("2026-12-04 10:00:01.000 INFO  btcagent: handoff: handing 10020 miners to /tmp/x/btcagent"),
            Some(HandoffLog::Handing {
                miners: 10020,
                to: "/tmp/x/btcagent".into()
            })
        );
        assert_eq!(
            handoff_line("2026-12-04 10:00:01.300 INFO  handoff: took over 10020 miners"),
            Some(HandoffLog::TookOver {
                miners: 10020,
                of: None
            })
        );
        assert_eq!(
            handoff_line("2026-12-04 10:00:01.300 INFO  handoff: took over 10019 of 10020 miners"),
            Some(HandoffLog::TookOver {
                miners: 10019,
                of: Some(10020)
            })
        );
        assert_eq!(handoff_line("handoff: took over 3 of many miners"), None);
        assert_eq!(handoff_line("handoff: took over 3 of 4 sockets"), None);
        assert_eq!(
            handoff_line("pool#1: took over 40 miners to balance the load"),
            None
        );
        assert_eq!(
            handoff_line("2026-12-04 10:00:01.000 WARN  handoff refused, this process keeps serving: /tmp/x/btcagent --check-handoff exited 1 "),
            Some(HandoffLog::Refused {
                reason: "/tmp/x/btcagent --check-handoff exited 1".into()
            })
        );
        assert_eq!(handoff_line("handoff: took over some miners"), None);
        assert_eq!(handoff_line("handoff: handing 3 miners"), None);
        assert_eq!(handoff_line("2026-12-04 INFO  pool#1 up"), None);
    }

    #[test]
    fn signal_masks_and_versions() {
        let status = "Name:\tbtcagent\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000004803\n";
        let caught = signal_mask(status, "SigCgt").unwrap();
        assert_eq!(caught, 0x4803);
        assert!(mask_has(caught, libc::SIGHUP)); // 1: bit 0
        assert!(mask_has(caught, libc::SIGUSR2)); // 12: bit 11
        assert!(mask_has(caught, libc::SIGTERM)); // 15: bit 14
        assert!(!mask_has(caught, libc::SIGUSR1)); // 10: bit 9
        assert!(!mask_has(caught, 0) && !mask_has(caught, 65));
        assert_eq!(signal_mask(status, "SigBlk"), None);
        assert!(is_btcagent_version("btcagent 0.1.0"));
        assert!(!is_btcagent_version(
            "flag provided but not defined: -version"
        ));
        assert!(!is_btcagent_version("btcagent"));
        assert!(!is_btcagent_version(""));
    }

    #[test]
    fn log_tail_gives_whole_new_lines() {
        let path = std::env::temp_dir().join(format!("loadtest-logtail-{}", std::process::id()));
        std::fs::write(&path, "old line\n").unwrap();
        let mut tail = LogTail::from_end(&path);
        assert!(tail.new_lines().is_empty());
        let append = |s: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(s.as_bytes()).unwrap();
        };
        append("one\ntw");
        assert_eq!(tail.new_lines(), ["one"]);
        append("o\nthree\n");
        assert_eq!(tail.new_lines(), ["two", "three"]);
        assert!(tail.new_lines().is_empty());
        let _ = std::fs::remove_file(&path);
    }

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
