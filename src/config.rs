//! `agent_conf.json`: the original agent's config file, read unchanged.
//!
//! Parsing goes through `serde_json::Value` rather than a derived struct so that every
//! error can name the exact field (`advanced.pool_connection_dial_timeout_seconds`)
//! and unknown fields can be warned about instead of rejected.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// One entry of `pools`: `["host", port, "sub-account"]` (btcpool's agent protocol),
/// or `{"protocol": "stratum", "host": ..., "port": ..., "user": ...}` (a plain
/// Stratum V1 pool, docs/stratum-upstream.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    pub host: String,
    pub port: u16,
    /// The agent protocol's sub-account; empty for a Stratum pool.
    pub subaccount: String,
    /// `Some` for a plain Stratum V1 pool.
    pub stratum: Option<StratumEntry>,
}

/// What a plain Stratum V1 pool entry adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StratumEntry {
    /// The user template (`account.worker`, `{sub}.farm1` in multi-user mode).
    pub user: String,
    pub password: String,
    /// Send `mining.extranonce.subscribe` after authorize.
    pub extranonce_subscribe: bool,
    /// One upstream connection per miner, authorized as the template with its
    /// `{worker}` (docs/stratum-upstream.md §8).
    pub identity_passthrough: bool,
}

impl PoolEntry {
    /// What miners on this entry mine for in single-user mode: its sub-account, or on a
    /// Stratum pool its user.
    pub fn account(&self) -> &str {
        match &self.stratum {
            Some(s) => &s.user,
            None => &self.subaccount,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpDebug {
    pub enable: bool,
    /// `host:port`, kept as written; resolved when the listener starts.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Advanced {
    pub pool_connection_number_per_subaccount: u16,
    pub pool_connection_dial_timeout: Duration,
    pub pool_connection_read_timeout: Duration,
    pub fake_job_notify_interval: Duration,
    /// btcagent only: when every pool connection of a sub-account is lost, its miners
    /// stay connected this long while the connections dial the next pools; 0 lets them
    /// go at once (the original's behaviour).
    pub pool_failover_hold: Duration,
    pub tls_skip_certificate_verify: bool,
    /// The original's channel sizes; btcagent maps `miner_session` onto the bound of a
    /// miner's unsent output and `pool_session` onto the pool writer's buffer.
    pub message_queue_size: MessageQueueSize,
    /// Version mask offered to miners before the pool has sent its own.
    pub bitcoin_default_version_mask: u32,
    /// btcagent only: submits written to a pool connection within this window are sent
    /// in one TCP write. 0 writes every share at once.
    pub submit_coalesce: Duration,
    /// btcagent only: connections that have not authorized yet, in all; beyond it the
    /// oldest is closed (see `admission.rs`).
    pub max_unauthorized_connections: u32,
    /// btcagent only: the same per source address (IPv6: per /64); beyond it new
    /// connections from that source are closed.
    pub max_unauthorized_connections_per_ip: u32,
    /// btcagent only, Stratum pools: each miner's share rate the agent's vardiff aims at.
    pub stratum_shares_per_minute: u32,
    /// btcagent only, Stratum pools: a miner's first difficulty (never above the pool's).
    pub stratum_start_difficulty: f64,
    /// btcagent only, Stratum pools: the lowest difficulty a miner is given.
    pub stratum_min_difficulty: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageQueueSize {
    pub session_manager: u32,
    pub pool_session_manager: u32,
    pub pool_session: u32,
    pub miner_session: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub multi_user_mode: bool,
    /// Only "btc" is accepted today.
    pub agent_type: String,
    pub always_keep_downconn: bool,
    pub disconnect_when_lost_asicboost: bool,
    pub use_ip_as_worker_name: bool,
    pub ip_worker_name_format: String,
    pub fixed_worker_name: String,
    pub submit_response_from_server: bool,
    pub agent_listen_ip: IpAddr,
    pub agent_listen_port: u16,
    /// Proxy URLs as written (validated for scheme); `upstream` interprets them.
    pub proxy: Vec<String>,
    pub use_proxy: bool,
    pub direct_connect_with_proxy: bool,
    pub direct_connect_after_proxy: bool,
    pub pool_use_tls: bool,
    pub pools: Vec<PoolEntry>,
    pub http_debug: HttpDebug,
    pub advanced: Advanced,
    /// btcagent only: where the periodic status snapshot goes; empty disables it.
    pub status_file: String,
    /// btcagent only: how often the status snapshot is rewritten.
    pub status_interval: Duration,
}

impl Default for MessageQueueSize {
    fn default() -> Self {
        MessageQueueSize {
            session_manager: 64,
            pool_session_manager: 64,
            pool_session: 512,
            miner_session: 64,
        }
    }
}

impl Default for Advanced {
    fn default() -> Self {
        Advanced {
            pool_connection_number_per_subaccount: 5,
            pool_connection_dial_timeout: Duration::from_secs(15),
            pool_connection_read_timeout: Duration::from_secs(60),
            fake_job_notify_interval: Duration::from_secs(30),
            // Twice the dial timeout: a first pool whose host is down costs one dial
            // timeout before the next pool of the list is tried.
            pool_failover_hold: Duration::from_secs(30),
            tls_skip_certificate_verify: true,
            message_queue_size: MessageQueueSize::default(),
            bitcoin_default_version_mask: 0x1fff_e000,
            submit_coalesce: Duration::from_millis(DEFAULT_SUBMIT_COALESCE_MS),
            max_unauthorized_connections: DEFAULT_MAX_UNAUTHORIZED,
            max_unauthorized_connections_per_ip: DEFAULT_MAX_UNAUTHORIZED_PER_IP,
            stratum_shares_per_minute: 6,
            stratum_start_difficulty: 16384.0,
            stratum_min_difficulty: 1.0,
        }
    }
}

/// Long enough to gather the shares of a busy farm into one segment (10,000 miners on
/// five connections: about ten shares per write, and a third of the agent's CPU of a
/// 5 ms window, see the README's benchmark), short enough not to matter: a share is
/// good for as long as its job, tens of seconds.
pub const DEFAULT_SUBMIT_COALESCE_MS: u64 = 50;
/// Beyond a second the coalescing delay would be noticed as share latency.
pub const MAX_SUBMIT_COALESCE_MS: u64 = 1000;

/// Connections still in their handshake at one time. A farm needs a handful (a miner
/// authorizes within milliseconds of connecting) and a few hundred when thousands of
/// miners reconnect at once after a restart; a flood gets no more than this.
pub const DEFAULT_MAX_UNAUTHORIZED: u32 = 4096;
/// The same from one address: well above a rack of miners behind one NAT reconnecting
/// together.
pub const DEFAULT_MAX_UNAUTHORIZED_PER_IP: u32 = 256;

/// /var/run is tmpfs on OpenWrt and on systemd hosts: rewriting it costs no flash wear.
pub const DEFAULT_STATUS_FILE: &str = "/var/run/btcagent/status.json";
pub const DEFAULT_STATUS_INTERVAL_SECONDS: u64 = 5;
/// The longest `status_interval_seconds` the config takes.
pub const MAX_STATUS_INTERVAL_SECONDS: u64 = 3600;

/// The defaults of the original agent's code (not of its shipped template: that one
/// turns `multi_user_mode` on).
impl Default for Config {
    fn default() -> Self {
        Config {
            multi_user_mode: false,
            agent_type: "btc".into(),
            always_keep_downconn: false,
            disconnect_when_lost_asicboost: true,
            use_ip_as_worker_name: false,
            ip_worker_name_format: "{1}x{2}x{3}x{4}".into(),
            fixed_worker_name: String::new(),
            submit_response_from_server: false,
            agent_listen_ip: IpAddr::from([0, 0, 0, 0]),
            agent_listen_port: 3333,
            proxy: Vec::new(),
            use_proxy: true,
            direct_connect_with_proxy: false,
            direct_connect_after_proxy: true,
            pool_use_tls: false,
            pools: Vec::new(),
            http_debug: HttpDebug {
                enable: false,
                listen: "127.0.0.1:9999".into(),
            },
            advanced: Advanced::default(),
            status_file: DEFAULT_STATUS_FILE.into(),
            status_interval: Duration::from_secs(DEFAULT_STATUS_INTERVAL_SECONDS),
        }
    }
}

/// Why a config could not be used. `Display` gives the whole message, file name first
/// when the config came from a file.
#[derive(Debug)]
pub struct ConfigError {
    file: Option<PathBuf>,
    kind: ConfigErrorKind,
}

#[derive(Debug)]
pub enum ConfigErrorKind {
    /// The file could not be read (missing, permissions, not UTF-8).
    Read(std::io::Error),
    /// Not valid JSON; `line` and `column` count from 1.
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// Valid JSON but a field has the wrong type or an impossible value.
    Field { field: String, message: String },
}

impl ConfigError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            kind: ConfigErrorKind::Field {
                field: field.into(),
                message: message.into(),
            },
        }
    }

    pub fn kind(&self) -> &ConfigErrorKind {
        &self.kind
    }

    /// The path of the offending field (`pools[1][1]`), when the error is about one.
    pub fn field_path(&self) -> Option<&str> {
        match &self.kind {
            ConfigErrorKind::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Names the file the config came from (for configs parsed from translated text,
    /// such as a UCI file).
    pub fn in_file(mut self, file: &Path) -> ConfigError {
        self.file = Some(file.to_path_buf());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        match &self.kind {
            ConfigErrorKind::Read(e) => write!(f, "cannot read config file: {e}"),
            ConfigErrorKind::Syntax {
                line,
                column,
                message,
            } => {
                write!(f, "invalid JSON at line {line}, column {column}: {message}")
            }
            ConfigErrorKind::Field { field, message } => write!(f, "{field}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

const TOP_LEVEL_FIELDS: &[&str] = &[
    "multi_user_mode",
    "agent_type",
    "always_keep_downconn",
    "disconnect_when_lost_asicboost",
    "use_ip_as_worker_name",
    "ip_worker_name_format",
    "fixed_worker_name",
    "submit_response_from_server",
    "agent_listen_ip",
    "agent_listen_port",
    "proxy",
    "use_proxy",
    "direct_connect_with_proxy",
    "direct_connect_after_proxy",
    "pool_use_tls",
    "pools",
    "http_debug",
    "advanced",
    "status_file",
    "status_interval_seconds",
];
/// Options of the original agents (the C++ one had `use_iocp` for Windows) that mean
/// nothing to btcagent: files that still carry them must load without noise.
const TOP_LEVEL_IGNORED: &[&str] = &["use_iocp"];
const HTTP_DEBUG_FIELDS: &[&str] = &["enable", "listen"];
const ADVANCED_FIELDS: &[&str] = &[
    "pool_connection_number_per_subaccount",
    "pool_connection_dial_timeout_seconds",
    "pool_connection_read_timeout_seconds",
    "fake_job_notify_interval_seconds",
    "pool_failover_hold_seconds",
    "tls_skip_certificate_verify",
    "message_queue_size",
    "bitcoin_default_version_mask",
    "submit_coalesce_ms",
    "max_unauthorized_connections",
    "max_unauthorized_connections_per_ip",
    "stratum_shares_per_minute",
    "stratum_start_difficulty",
    "stratum_min_difficulty",
];
/// The keys of a Stratum pool object; strict (objects are new, unlike the old fields).
const STRATUM_POOL_FIELDS: &[&str] = &[
    "protocol",
    "host",
    "port",
    "user",
    "password",
    "identity_passthrough",
    "extranonce_subscribe",
];
const AGENT_POOL_FIELDS: &[&str] = &["protocol", "host", "port", "subaccount"];
const QUEUE_FIELDS: &[&str] = &[
    "session_manager",
    "pool_session_manager",
    "pool_session",
    "miner_session",
];
/// Bounds for the original's channel sizes: btcagent uses them as buffer bounds, so 0
/// (an unbuffered Go channel) becomes 1 and absurd sizes cannot exhaust a router's RAM.
const QUEUE_SIZE_RANGE: (u64, u64) = (1, 65536);
const MAX_SECONDS: u64 = u32::MAX as u64;

impl Config {
    /// Reads and validates a config file. Errors start with the file name.
    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            kind: ConfigErrorKind::Read(e),
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError {
            file: Some(path.to_path_buf()),
            kind: ConfigErrorKind::Read(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "file is not UTF-8 text",
            )),
        })?;
        Config::from_json_str(&text).map_err(|e| e.in_file(path))
    }

    /// Parses and validates config text. The `Vec` holds warnings (unknown fields and
    /// the like) for the caller to log once logging is up.
    pub fn from_json_str(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        // Windows editors save a byte-order mark; it is not JSON but means no harm.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            let message = "the config is empty; start from agent_conf.default.json".to_owned();
            return Err(ConfigError {
                file: None,
                kind: ConfigErrorKind::Syntax {
                    line: 1,
                    column: 1,
                    message,
                },
            });
        }
        let value: Value = serde_json::from_str(text).map_err(syntax_error)?;
        Config::from_json_value(&value)
    }

    /// Validates an already parsed document (the UCI translator produces one).
    pub fn from_json_value(value: &Value) -> Result<(Config, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let config = read_config(value, &mut warnings)?;
        Ok((config, warnings))
    }

    /// The effective config as JSON text in the template's field order; reading it back
    /// gives the same `Config`.
    pub fn to_json_pretty(&self) -> String {
        let q = &self.advanced.message_queue_size;
        let pools: Vec<String> = self
            .pools
            .iter()
            .map(|p| match &p.stratum {
                None => format!(
                    "[{}, {}, {}]",
                    json_string(&p.host),
                    p.port,
                    json_string(&p.subaccount)
                ),
                Some(s) => format!(
                    "{{\"protocol\": \"stratum\", \"host\": {}, \"port\": {}, \"user\": {}, \"password\": {}, \"extranonce_subscribe\": {}}}",
                    json_string(&p.host),
                    p.port,
                    json_string(&s.user),
                    json_string(&s.password),
                    s.extranonce_subscribe
                ),
            })
            .collect();
        let proxies: Vec<String> = self.proxy.iter().map(|p| json_string(p)).collect();
        let mut out = String::from("{\n");
        let mut field = |name: &str, value: String, last: bool| {
            out.push_str(&format!(
                "    \"{name}\": {value}{}\n",
                if last { "" } else { "," }
            ));
        };
        field("multi_user_mode", self.multi_user_mode.to_string(), false);
        field("agent_type", json_string(&self.agent_type), false);
        field(
            "always_keep_downconn",
            self.always_keep_downconn.to_string(),
            false,
        );
        field(
            "disconnect_when_lost_asicboost",
            self.disconnect_when_lost_asicboost.to_string(),
            false,
        );
        field(
            "use_ip_as_worker_name",
            self.use_ip_as_worker_name.to_string(),
            false,
        );
        field(
            "ip_worker_name_format",
            json_string(&self.ip_worker_name_format),
            false,
        );
        field(
            "fixed_worker_name",
            json_string(&self.fixed_worker_name),
            false,
        );
        field(
            "submit_response_from_server",
            self.submit_response_from_server.to_string(),
            false,
        );
        field(
            "agent_listen_ip",
            json_string(&self.agent_listen_ip.to_string()),
            false,
        );
        field(
            "agent_listen_port",
            self.agent_listen_port.to_string(),
            false,
        );
        field("proxy", format!("[{}]", proxies.join(", ")), false);
        field("use_proxy", self.use_proxy.to_string(), false);
        field(
            "direct_connect_with_proxy",
            self.direct_connect_with_proxy.to_string(),
            false,
        );
        field(
            "direct_connect_after_proxy",
            self.direct_connect_after_proxy.to_string(),
            false,
        );
        field("pool_use_tls", self.pool_use_tls.to_string(), false);
        field(
            "pools",
            format!("[\n        {}\n    ]", pools.join(",\n        ")),
            false,
        );
        field(
            "http_debug",
            format!(
                "{{\n        \"enable\": {},\n        \"listen\": {}\n    }}",
                self.http_debug.enable,
                json_string(&self.http_debug.listen)
            ),
            false,
        );
        let a = &self.advanced;
        field(
            "advanced",
            format!(
                "{{\n        \"pool_connection_number_per_subaccount\": {},\n        \
                 \"pool_connection_dial_timeout_seconds\": {},\n        \
                 \"pool_connection_read_timeout_seconds\": {},\n        \
                 \"fake_job_notify_interval_seconds\": {},\n        \
                 \"pool_failover_hold_seconds\": {},\n        \
                 \"tls_skip_certificate_verify\": {},\n        \
                 \"message_queue_size\": {{\n            \"session_manager\": {},\n            \
                 \"pool_session_manager\": {},\n            \"pool_session\": {},\n            \
                 \"miner_session\": {}\n        }},\n        \
                 \"bitcoin_default_version_mask\": {},\n        \
                 \"submit_coalesce_ms\": {},\n        \
                 \"max_unauthorized_connections\": {},\n        \
                 \"max_unauthorized_connections_per_ip\": {},\n        \
                 \"stratum_shares_per_minute\": {},\n        \
                 \"stratum_start_difficulty\": {},\n        \
                 \"stratum_min_difficulty\": {}\n    }}",
                a.pool_connection_number_per_subaccount,
                a.pool_connection_dial_timeout.as_secs(),
                a.pool_connection_read_timeout.as_secs(),
                a.fake_job_notify_interval.as_secs(),
                a.pool_failover_hold.as_secs(),
                a.tls_skip_certificate_verify,
                q.session_manager,
                q.pool_session_manager,
                q.pool_session,
                q.miner_session,
                a.bitcoin_default_version_mask,
                a.submit_coalesce.as_millis(),
                a.max_unauthorized_connections,
                a.max_unauthorized_connections_per_ip,
                a.stratum_shares_per_minute,
                crate::protocol::stratum::difficulty_text(a.stratum_start_difficulty),
                crate::protocol::stratum::difficulty_text(a.stratum_min_difficulty),
            ),
            false,
        );
        field("status_file", json_string(&self.status_file), false);
        field(
            "status_interval_seconds",
            self.status_interval.as_secs().to_string(),
            true,
        );
        out.push_str("}\n");
        out
    }
}

fn json_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn syntax_error(e: serde_json::Error) -> ConfigError {
    let (line, column) = (e.line(), e.column());
    let full = e.to_string();
    // serde_json appends " at line L column C"; the position is reported separately.
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    ConfigError {
        file: None,
        kind: ConfigErrorKind::Syntax {
            line,
            column,
            message,
        },
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A short description of a JSON value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() > 40 => {
            format!("string \"{}...\"", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("string {}", json_string(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The fields of one JSON object, by their canonical names. Unknown names become
/// warnings; `null` counts as absent (as Go's encoding/json treats it).
struct Fields<'v> {
    path: String,
    values: HashMap<&'static str, &'v Value>,
}

impl<'v> Fields<'v> {
    fn read(
        value: &'v Value,
        path: &str,
        known: &[&'static str],
        ignored: &[&str],
        warnings: &mut Vec<String>,
    ) -> Result<Fields<'v>, ConfigError> {
        let object = value.as_object().ok_or_else(|| {
            let name = if path.is_empty() { "the config" } else { path };
            ConfigError::field(
                name,
                format!("expected an object {{...}}, got {}", describe(value)),
            )
        })?;
        let mut values = HashMap::new();
        // Exact names first so that a case-variant duplicate never overrides them.
        for name in known {
            if let Some(v) = object.get(*name) {
                if !v.is_null() {
                    values.insert(*name, v);
                }
            }
        }
        for (key, v) in object {
            if known.contains(&key.as_str()) || ignored.iter().any(|i| i.eq_ignore_ascii_case(key))
            {
                continue;
            }
            // Go's encoding/json matches names case-insensitively, so the original
            // agent accepted `Pools`; keep accepting it, but say so.
            if let Some(name) = known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                warnings.push(format!(
                    "config: field `{}` read as `{}` (field names are lower case)",
                    join(path, key),
                    join(path, name)
                ));
                if !v.is_null() {
                    values.entry(*name).or_insert(v);
                }
                continue;
            }
            let mut warning = format!(
                "config: unknown field `{}` ignored",
                join(path, &shown(key))
            );
            if let Some(near) = nearest_name(key, known) {
                warning.push_str(&format!(" (did you mean `{}`?)", join(path, near)));
            }
            warnings.push(warning);
        }
        Ok(Fields {
            path: path.to_owned(),
            values,
        })
    }

    fn path_of(&self, name: &str) -> String {
        join(&self.path, name)
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.values.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(ConfigError::field(
                self.path_of(name),
                format!("expected true or false, got {}", describe(v)),
            )),
        }
    }

    fn string(&self, name: &str, default: &str) -> Result<String, ConfigError> {
        match self.values.get(name) {
            None => Ok(default.to_owned()),
            Some(v) => expect_string(v, &self.path_of(name)),
        }
    }

    fn uint(&self, name: &str, default: u64, range: (u64, u64)) -> Result<u64, ConfigError> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => expect_uint(v, &self.path_of(name), "", range),
        }
    }

    /// A difficulty: a number above 0 (fractions allowed), at most 2^64.
    fn difficulty(&self, name: &str, default: f64) -> Result<f64, ConfigError> {
        match self.values.get(name) {
            None => Ok(default),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(d) if d > 0.0 && d <= MAX_DIFFICULTY => Ok(d),
                _ => Err(ConfigError::field(
                    self.path_of(name),
                    format!("a difficulty must be above 0 and at most 2^64, got {n}"),
                )),
            },
            Some(v) => Err(ConfigError::field(
                self.path_of(name),
                format!("expected a number, got {}", describe(v)),
            )),
        }
    }

    fn get(&self, name: &str) -> Option<&'v Value> {
        self.values.get(name).copied()
    }
}

const MAX_DIFFICULTY: f64 = 18_446_744_073_709_551_616.0;

fn expect_string(value: &Value, path: &str) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        v => Err(ConfigError::field(
            path,
            format!("expected a string, got {}", describe(v)),
        )),
    }
}

/// An integer within `range` (inclusive). `label` names the quantity in the message
/// ("port must be 1..=65535, got 0").
fn expect_uint(
    value: &Value,
    path: &str,
    label: &str,
    range: (u64, u64),
) -> Result<u64, ConfigError> {
    let (lo, hi) = range;
    let subject = if label.is_empty() {
        "must be".to_owned()
    } else {
        format!("{label} must be")
    };
    let bounds = if hi >= MAX_SECONDS {
        format!("at least {lo}")
    } else {
        format!("{lo}..={hi}")
    };
    let Value::Number(n) = value else {
        return Err(ConfigError::field(
            path,
            format!("expected a number, got {}", describe(value)),
        ));
    };
    match n.as_u64() {
        Some(v) if (lo..=hi).contains(&v) => Ok(v),
        Some(_) => Err(ConfigError::field(
            path,
            format!("{subject} {bounds}, got {n}"),
        )),
        None if n.is_i64() => Err(ConfigError::field(
            path,
            format!("{subject} {bounds}, got {n}"),
        )),
        None => Err(ConfigError::field(
            path,
            format!("{subject} a whole number ({bounds}), got {n}"),
        )),
    }
}

/// A name or value from a config file as a message quotes it: control characters
/// escaped, so it cannot start a log line of its own, and one over 64 characters cut to
/// them and its length, so a 1 MiB name makes a short line.
pub fn shown(name: &str) -> String {
    const SHOWN: usize = 64;
    let mut shown: String = name
        .chars()
        .take(SHOWN)
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            escaped
                .into_iter()
                .flatten()
                .chain((!c.is_control()).then_some(c))
        })
        .collect();
    if name.chars().nth(SHOWN).is_some() {
        shown.push_str(&format!("... ({} bytes)", name.len()));
    }
    shown
}

/// The known name within edit distance 2 of a misspelt one, if any. The distance is at
/// least the difference in length, so only names of about the same length are compared:
/// the cost stays bounded however long the unknown name.
fn nearest_name(unknown: &str, known: &[&'static str]) -> Option<&'static str> {
    const MAX_EDITS: usize = 2;
    let longest = known.iter().map(|k| k.len()).max().unwrap_or(0);
    if unknown.len() > longest + MAX_EDITS {
        return None;
    }
    let unknown = unknown.to_ascii_lowercase();
    let length = unknown.chars().count();
    known
        .iter()
        .filter(|k| k.chars().count().abs_diff(length) <= MAX_EDITS)
        .map(|k| (edit_distance(&unknown, k), *k))
        .filter(|(d, _)| *d <= MAX_EDITS)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn read_config(value: &Value, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
    let d = Config::default();
    let top = Fields::read(value, "", TOP_LEVEL_FIELDS, TOP_LEVEL_IGNORED, warnings)?;

    let multi_user_mode = top.bool("multi_user_mode", d.multi_user_mode)?;
    // The original lower-cases agent_type before looking at it.
    let agent_type = top
        .string("agent_type", &d.agent_type)?
        .to_ascii_lowercase();
    if agent_type != "btc" {
        return Err(ConfigError::field(
            "agent_type",
            format!(
                "{} is not supported yet (only \"btc\")",
                json_string(&agent_type)
            ),
        ));
    }

    let listen_ip_text = top.string("agent_listen_ip", "")?;
    // The original passed the text to Go's net.Listen, where "" means every interface.
    let agent_listen_ip = if listen_ip_text.is_empty() {
        d.agent_listen_ip
    } else {
        let bare = listen_ip_text.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().map_err(|_| {
            ConfigError::field(
                "agent_listen_ip",
                format!("{} is not an IP address", json_string(&listen_ip_text)),
            )
        })?
    };
    // 0 lets the system pick a free port: tests use it; the port is logged at start.
    let agent_listen_port =
        top.uint("agent_listen_port", d.agent_listen_port.into(), (0, 65535))? as u16;

    let proxy = match top.get("proxy") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            let mut proxies = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let path = format!("proxy[{i}]");
                let text = expect_string(item, &path)?;
                check_proxy(&text).map_err(|m| ConfigError::field(&path, m))?;
                proxies.push(text);
            }
            proxies
        }
        Some(v) => {
            return Err(ConfigError::field(
                "proxy",
                format!(
                    "expected a list like [\"socks5://127.0.0.1:1080\"], got {}",
                    describe(v)
                ),
            ))
        }
    };

    let pools = read_pools(top.get("pools"), multi_user_mode, warnings)?;

    let http_debug = match top.get("http_debug") {
        None => d.http_debug.clone(),
        Some(v) => {
            let f = Fields::read(v, "http_debug", HTTP_DEBUG_FIELDS, &[], warnings)?;
            let enable = f.bool("enable", d.http_debug.enable)?;
            let listen = f.string("listen", &d.http_debug.listen)?;
            // A disabled endpoint's address never matters, so it cannot stop the agent.
            if enable {
                check_host_port(&listen).map_err(|m| ConfigError::field("http_debug.listen", m))?;
            }
            HttpDebug { enable, listen }
        }
    };

    let advanced = match top.get("advanced") {
        None => d.advanced.clone(),
        Some(v) => read_advanced(v, warnings)?,
    };

    let status_interval_seconds = top.uint(
        "status_interval_seconds",
        d.status_interval.as_secs(),
        (1, MAX_STATUS_INTERVAL_SECONDS),
    )?;

    Ok(Config {
        multi_user_mode,
        agent_type,
        always_keep_downconn: top.bool("always_keep_downconn", d.always_keep_downconn)?,
        disconnect_when_lost_asicboost: top.bool(
            "disconnect_when_lost_asicboost",
            d.disconnect_when_lost_asicboost,
        )?,
        use_ip_as_worker_name: top.bool("use_ip_as_worker_name", d.use_ip_as_worker_name)?,
        ip_worker_name_format: top.string("ip_worker_name_format", &d.ip_worker_name_format)?,
        fixed_worker_name: top.string("fixed_worker_name", &d.fixed_worker_name)?,
        submit_response_from_server: top
            .bool("submit_response_from_server", d.submit_response_from_server)?,
        agent_listen_ip,
        agent_listen_port,
        proxy,
        use_proxy: top.bool("use_proxy", d.use_proxy)?,
        direct_connect_with_proxy: top
            .bool("direct_connect_with_proxy", d.direct_connect_with_proxy)?,
        direct_connect_after_proxy: top
            .bool("direct_connect_after_proxy", d.direct_connect_after_proxy)?,
        pool_use_tls: top.bool("pool_use_tls", d.pool_use_tls)?,
        pools,
        http_debug,
        advanced,
        status_file: top.string("status_file", &d.status_file)?,
        status_interval: Duration::from_secs(status_interval_seconds),
    })
}

const POOL_SHAPE: &str = "[\"host\", port, \"sub-account\"]";

fn read_pools(
    value: Option<&Value>,
    multi_user_mode: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<PoolEntry>, ConfigError> {
    let missing = || {
        ConfigError::field(
            "pools",
            "at least one pool is required, e.g. [[\"us.ss.btc.com\", 1800, \"YourSubAccountName\"]]",
        )
    };
    let entries = match value {
        None => return Err(missing()),
        Some(Value::Array(entries)) if entries.is_empty() => return Err(missing()),
        Some(Value::Array(entries)) => entries,
        Some(v) => {
            return Err(ConfigError::field(
                "pools",
                format!(
                    "expected a list of {POOL_SHAPE} entries, got {}",
                    describe(v)
                ),
            ))
        }
    };
    let mut pools = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("pools[{i}]");
        let pool = match entry {
            Value::Object(_) => read_pool_object(entry, &path, multi_user_mode, warnings)?,
            Value::Array(items) if items.len() >= 2 => {
                read_pool_array(items, &path, multi_user_mode, warnings)?
            }
            Value::Array(items) => {
                return Err(ConfigError::field(
                    path,
                    format!("expected {POOL_SHAPE}, got {} element(s)", items.len()),
                ))
            }
            v => {
                return Err(ConfigError::field(
                    path,
                    format!("expected {POOL_SHAPE}, got {}", describe(v)),
                ))
            }
        };
        pools.push(pool);
    }
    Ok(pools)
}

/// `["host", port, "sub-account"]`: the agent protocol.
fn read_pool_array(
    items: &[Value],
    path: &str,
    multi_user_mode: bool,
    warnings: &mut Vec<String>,
) -> Result<PoolEntry, ConfigError> {
    if items.len() > 3 {
        warnings.push(format!(
            "config: {path}: elements after the sub-account are ignored"
        ));
    }
    let host_path = format!("{path}[0]");
    let host = expect_string(&items[0], &host_path)?;
    if let Some((scheme, rest)) = host.split_once("://") {
        // btc.com writes its agent ports as stratum+tcp:// URLs too: the host is the
        // likely fix, the Stratum object the other one.
        let name = rest.split([':', '/']).next().unwrap_or(rest);
        return Err(ConfigError::field(
            host_path,
            format!(
                "write the host name only ({}), without \"{scheme}://\"; a pool that does not speak btcpool's agent protocol is written {{\"protocol\": \"stratum\", \"host\": {}, \"port\": {}, \"user\": \"account.worker\"}}",
                json_string(name),
                json_string(name),
                items[1]
            ),
        ));
    }
    let host = check_pool_host(host, &host_path)?;
    let port = expect_uint(&items[1], &format!("{path}[1]"), "port", (1, 65535))? as u16;
    let subaccount = match items.get(2) {
        Some(v) => expect_string(v, &format!("{path}[2]"))?,
        None => String::new(),
    };
    if subaccount.is_empty() && !multi_user_mode {
        let where_ = if items.len() > 2 {
            format!("{path}[2]")
        } else {
            path.to_string()
        };
        return Err(ConfigError::field(
            where_,
            "sub-account is empty: set it, or turn on multi_user_mode to take it from the miners' names",
        ));
    }
    Ok(PoolEntry {
        host,
        port,
        subaccount,
        stratum: None,
    })
}

/// `{"protocol": "stratum" | "agent", ...}`. Objects are new, so their keys are strict.
fn read_pool_object(
    value: &Value,
    path: &str,
    multi_user_mode: bool,
    warnings: &mut Vec<String>,
) -> Result<PoolEntry, ConfigError> {
    let object = value.as_object().expect("an object");
    let protocol_path = format!("{path}.protocol");
    let stratum = match object.get("protocol") {
        None => {
            return Err(ConfigError::field(
                path,
                "say \"protocol\": \"stratum\" (plain Stratum V1) or \"agent\" (btcpool's agent protocol)",
            ))
        }
        Some(Value::String(p)) if p == "stratum" => true,
        Some(Value::String(p)) if p == "agent" => false,
        Some(Value::String(p)) => {
            return Err(ConfigError::field(
                protocol_path,
                format!("{} is not a protocol: \"stratum\" or \"agent\"", json_string(p)),
            ))
        }
        Some(v) => {
            return Err(ConfigError::field(
                protocol_path,
                format!("expected \"stratum\" or \"agent\", got {}", describe(v)),
            ))
        }
    };
    let known = if stratum {
        STRATUM_POOL_FIELDS
    } else {
        AGENT_POOL_FIELDS
    };
    for key in object.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let message = match key.as_str() {
            "subaccount" => "a Stratum pool has no sub-account: write \"user\": \"account.worker\" (in multi_user_mode \"{sub}.worker\")".to_string(),
            "user" | "password" | "identity_passthrough" | "extranonce_subscribe" => format!(
                "an agent-protocol pool takes \"subaccount\"; {} is for \"protocol\": \"stratum\"",
                json_string(key)
            ),
            _ => format!(
                "unknown key: a {} pool has {}",
                if stratum { "Stratum" } else { "agent-protocol" },
                known.join(", ")
            ),
        };
        return Err(ConfigError::field(
            format!("{path}.{}", shown(key)),
            message,
        ));
    }
    let f = Fields::read(value, path, known, &[], warnings)?;
    let host_path = f.path_of("host");
    let host = match f.get("host") {
        Some(v) => check_pool_host(expect_string(v, &host_path)?, &host_path)?,
        None => {
            return Err(ConfigError::field(
                host_path,
                "missing: the pool's host name",
            ))
        }
    };
    let port = match f.get("port") {
        Some(v) => expect_uint(v, &f.path_of("port"), "port", (1, 65535))? as u16,
        None => {
            return Err(ConfigError::field(
                f.path_of("port"),
                "missing: the pool's port",
            ))
        }
    };
    if !stratum {
        let array = [
            Value::String(host),
            Value::from(port),
            Value::String(f.string("subaccount", "")?),
        ];
        return read_pool_array(&array, path, multi_user_mode, warnings);
    }
    let user_path = f.path_of("user");
    let user = match f.get("user") {
        Some(v) => expect_string(v, &user_path)?,
        None => {
            return Err(ConfigError::field(
                user_path,
                "missing: the name the pool expects, e.g. \"account.worker\"",
            ))
        }
    };
    let identity_passthrough = f.bool("identity_passthrough", false)?;
    crate::protocol::stratum_upstream::user::UserTemplate::parse(
        &user,
        multi_user_mode,
        identity_passthrough,
    )
    .map_err(|m| ConfigError::field(&user_path, m))?;
    Ok(PoolEntry {
        host,
        port,
        subaccount: String::new(),
        stratum: Some(StratumEntry {
            user,
            password: f.string("password", "x")?,
            extranonce_subscribe: f.bool("extranonce_subscribe", true)?,
            identity_passthrough,
        }),
    })
}

/// A pool's host name: not empty, no scheme, no spaces or slashes.
fn check_pool_host(host: String, path: &str) -> Result<String, ConfigError> {
    if host.is_empty() {
        return Err(ConfigError::field(path, "host is empty"));
    }
    if let Some((scheme, rest)) = host.split_once("://") {
        return Err(ConfigError::field(
            path,
            format!("write the host name only ({rest:?}), without \"{scheme}://\""),
        ));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ConfigError::field(
            path,
            format!("{} is not a host name", json_string(&host)),
        ));
    }
    Ok(host)
}

fn read_advanced(value: &Value, warnings: &mut Vec<String>) -> Result<Advanced, ConfigError> {
    let d = Advanced::default();
    let f = Fields::read(value, "advanced", ADVANCED_FIELDS, &[], warnings)?;
    let seconds = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(f.uint(
            name,
            default.as_secs(),
            (1, MAX_SECONDS),
        )?))
    };
    let message_queue_size = match f.get("message_queue_size") {
        None => d.message_queue_size,
        Some(v) => {
            let q = Fields::read(
                v,
                "advanced.message_queue_size",
                QUEUE_FIELDS,
                &[],
                warnings,
            )?;
            let dq = d.message_queue_size;
            let mut size = |name: &str, default: u32| -> Result<u32, ConfigError> {
                let path = q.path_of(name);
                match q.get(name) {
                    None => Ok(default),
                    Some(v) => {
                        let n = expect_uint(v, &path, "", (0, u64::from(u32::MAX)))?;
                        let clamped = n.clamp(QUEUE_SIZE_RANGE.0, QUEUE_SIZE_RANGE.1);
                        if clamped != n {
                            warnings.push(format!("config: {path}: {n} taken as {clamped}"));
                        }
                        Ok(clamped as u32)
                    }
                }
            };
            MessageQueueSize {
                session_manager: size("session_manager", dq.session_manager)?,
                pool_session_manager: size("pool_session_manager", dq.pool_session_manager)?,
                pool_session: size("pool_session", dq.pool_session)?,
                miner_session: size("miner_session", dq.miner_session)?,
            }
        }
    };
    Ok(Advanced {
        pool_connection_number_per_subaccount: f.uint(
            "pool_connection_number_per_subaccount",
            d.pool_connection_number_per_subaccount.into(),
            (1, 100),
        )? as u16,
        pool_connection_dial_timeout: seconds(
            "pool_connection_dial_timeout_seconds",
            d.pool_connection_dial_timeout,
        )?,
        pool_connection_read_timeout: seconds(
            "pool_connection_read_timeout_seconds",
            d.pool_connection_read_timeout,
        )?,
        fake_job_notify_interval: seconds(
            "fake_job_notify_interval_seconds",
            d.fake_job_notify_interval,
        )?,
        pool_failover_hold: Duration::from_secs(f.uint(
            "pool_failover_hold_seconds",
            d.pool_failover_hold.as_secs(),
            (0, MAX_SECONDS),
        )?),
        tls_skip_certificate_verify: f
            .bool("tls_skip_certificate_verify", d.tls_skip_certificate_verify)?,
        message_queue_size,
        bitcoin_default_version_mask: f.uint(
            "bitcoin_default_version_mask",
            d.bitcoin_default_version_mask.into(),
            (0, u64::from(u32::MAX) - 1),
        )? as u32,
        submit_coalesce: Duration::from_millis(f.uint(
            "submit_coalesce_ms",
            d.submit_coalesce.as_millis() as u64,
            (0, MAX_SUBMIT_COALESCE_MS),
        )?),
        max_unauthorized_connections: f.uint(
            "max_unauthorized_connections",
            d.max_unauthorized_connections.into(),
            (1, 65_535),
        )? as u32,
        max_unauthorized_connections_per_ip: f.uint(
            "max_unauthorized_connections_per_ip",
            d.max_unauthorized_connections_per_ip.into(),
            (1, 65_535),
        )? as u32,
        stratum_shares_per_minute: f.uint(
            "stratum_shares_per_minute",
            d.stratum_shares_per_minute.into(),
            (1, 60),
        )? as u32,
        stratum_start_difficulty: f
            .difficulty("stratum_start_difficulty", d.stratum_start_difficulty)?,
        stratum_min_difficulty: f.difficulty("stratum_min_difficulty", d.stratum_min_difficulty)?,
    })
}

/// `host:port` or `[v6]:port` with a valid port; the host is resolved later.
fn check_host_port(text: &str) -> Result<(String, u16), String> {
    let bad = || format!("expected host:port, got {}", json_string(text));
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        (host, after.strip_prefix(':').ok_or_else(bad)?)
    } else {
        text.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(format!("port must be 1..=65535, got {}", json_string(port))),
    }
}

/// A `proxy` entry: the word `system`, or a URL the connector can use. The connector's
/// own parser decides, so the config never accepts what the connector would refuse.
fn check_proxy(text: &str) -> Result<(), String> {
    if text.trim().eq_ignore_ascii_case("system") {
        return Ok(());
    }
    crate::upstream::ProxyUrl::parse(text).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Config, Vec<String>) {
        match Config::from_json_str(text) {
            Ok(parsed) => parsed,
            Err(e) => panic!("config rejected: {e}"),
        }
    }

    fn error(text: &str) -> ConfigError {
        match Config::from_json_str(text) {
            Ok(_) => panic!("config accepted: {text}"),
            Err(e) => e,
        }
    }

    /// Asserts the error names `field` and its message contains `words`.
    fn assert_field_error(text: &str, field: &str, words: &str) {
        let e = error(text);
        assert_eq!(e.field_path(), Some(field), "wrong field in: {e}");
        let message = e.to_string();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
        assert!(message.contains(words), "{message:?} lacks {words:?}");
    }

    const POOL: &str = r#""pools": [["pool.example", 1800, "acct"]]"#;

    fn with_pool(fields: &str) -> String {
        format!("{{{POOL}, {fields}}}")
    }

    #[test]
    fn shipped_template_loads_without_warnings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent_conf.default.json");
        let (config, warnings) = Config::load(&path).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(config.multi_user_mode);
        assert_eq!(config.pools.len(), 3);
        assert_eq!(
            config.pools[1],
            PoolEntry {
                host: "us.ss.btc.com".into(),
                port: 443,
                subaccount: "YourSubAccountName".into(),
                stratum: None,
            }
        );
        // Apart from multi_user_mode and the pools, the template states the code defaults.
        let expected = Config {
            multi_user_mode: true,
            pools: config.pools.clone(),
            ..Config::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn original_full_example_loads() {
        // The original agent's own example file, with its Windows-only `use_iocp`.
        let text = r#"{
            "agent_type": "btc",
            "always_keep_downconn": false,
            "disconnect_when_lost_asicboost": true,
            "use_ip_as_worker_name": false,
            "ip_worker_name_format": "{1}x{2}x{3}x{4}",
            "submit_response_from_server": true,
            "agent_listen_ip": "0.0.0.0",
            "agent_listen_port": 3333,
            "pool_use_tls": false,
            "use_iocp": false,
            "fixed_worker_name": "",
            "pools": [
                ["cn.ss.btc.com", 1800, "testpool"],
                ["cn.ss.btc.com", 443, "testpool"],
                ["cn.ss.btc.com", 3333, "testpool"]
            ]
        }"#;
        let (config, warnings) = parse(text);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!config.multi_user_mode);
        assert!(config.submit_response_from_server);
        assert_eq!(config.pools[2].port, 3333);
        assert_eq!(config.pools[0].subaccount, "testpool");
    }

    #[test]
    fn minimal_file_gets_code_defaults() {
        let (config, warnings) = parse(&format!("{{{POOL}}}"));
        assert!(warnings.is_empty());
        let expected = Config {
            pools: vec![PoolEntry {
                host: "pool.example".into(),
                port: 1800,
                subaccount: "acct".into(),
                stratum: None,
            }],
            ..Config::default()
        };
        assert_eq!(config, expected);
        assert_eq!(config.status_file, "/var/run/btcagent/status.json");
        assert_eq!(config.status_interval, Duration::from_secs(5));
        assert_eq!(
            config.advanced.submit_coalesce,
            Duration::from_millis(DEFAULT_SUBMIT_COALESCE_MS)
        );
    }

    #[test]
    fn btcagent_fields_are_read() {
        let (config, warnings) = parse(&with_pool(
            r#""status_file": "", "status_interval_seconds": 2, "advanced": {"submit_coalesce_ms": 0}"#,
        ));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.status_file, "");
        assert_eq!(config.status_interval, Duration::from_secs(2));
        assert_eq!(config.advanced.submit_coalesce, Duration::ZERO);
        assert_field_error(
            &with_pool(r#""advanced": {"submit_coalesce_ms": 1001}"#),
            "advanced.submit_coalesce_ms",
            "0..=1000, got 1001",
        );
        assert_field_error(
            &with_pool(r#""status_interval_seconds": 0"#),
            "status_interval_seconds",
            "1..=3600",
        );
    }

    #[test]
    fn print_config_round_trips() {
        let (config, _) = parse(&with_pool(
            r#""proxy": ["socks5://u:p@127.0.0.1:1080", "system"], "agent_listen_ip": "::1",
               "http_debug": {"enable": true, "listen": "[::1]:8080"}, "fixed_worker_name": "a\"b",
               "advanced": {"submit_coalesce_ms": 7, "message_queue_size": {"pool_session": 9}}"#,
        ));
        let text = config.to_json_pretty();
        let (again, warnings) = parse(&text);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again, config);
        // Template order, so a user can diff it against their file.
        assert!(text.find("multi_user_mode").unwrap() < text.find("pools").unwrap());
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let e = error("{\n  \"pools\": [\n    [\"a\", 1, \"b\"],\n  ]\n}");
        match e.kind() {
            ConfigErrorKind::Syntax { line, column, .. } => assert_eq!((*line, *column), (4, 3)),
            other => panic!("{other:?}"),
        }
        let message = e.to_string();
        assert!(
            message.starts_with("invalid JSON at line 4, column 3: "),
            "{message}"
        );
        assert!(
            !message.ends_with("column 3"),
            "position repeated: {message}"
        );
    }

    #[test]
    fn load_names_the_file() {
        let missing = Path::new("/nonexistent/agent_conf.json");
        let e = Config::load(missing).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/agent_conf.json: cannot read"),
            "{e}"
        );

        let dir = std::env::temp_dir().join(format!("btcagent-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.json");
        std::fs::write(&file, r#"{"pools": [["h", 0, "a"]]}"#).unwrap();
        let e = Config::load(&file).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: pools[0][1]: port must be 1..=65535, got 0",
                file.display()
            )
        );
        std::fs::write(&file, b"\xef\xbb\xbf{\"pools\": [[\"h\", 1, \"a\"]]}").unwrap();
        assert!(
            Config::load(&file).is_ok(),
            "byte-order mark must be accepted"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pool_errors_name_the_entry() {
        let pools = |p: &str| format!(r#"{{"pools": {p}}}"#);
        assert_field_error("{}", "pools", "at least one pool is required");
        assert_field_error(&pools("[]"), "pools", "at least one pool is required");
        assert_field_error(&pools("null"), "pools", "at least one pool is required");
        assert_field_error(&pools(r#""h:1""#), "pools", "expected a list");
        assert_field_error(
            &pools(r#"[["a", 1, "x"], ["b", 0, "x"]]"#),
            "pools[1][1]",
            "port must be 1..=65535, got 0",
        );
        assert_field_error(
            &pools(r#"[["a", 65536, "x"]]"#),
            "pools[0][1]",
            "port must be 1..=65535, got 65536",
        );
        assert_field_error(&pools(r#"[["a", -1, "x"]]"#), "pools[0][1]", "got -1");
        assert_field_error(
            &pools(r#"[["a", 3333.0, "x"]]"#),
            "pools[0][1]",
            "whole number",
        );
        assert_field_error(
            &pools(r#"[["a", "3333", "x"]]"#),
            "pools[0][1]",
            "expected a number",
        );
        assert_field_error(&pools(r#"[["", 1, "x"]]"#), "pools[0][0]", "host is empty");
        assert_field_error(
            &pools(r#"[[7, 1, "x"]]"#),
            "pools[0][0]",
            "expected a string",
        );
        assert_field_error(
            &pools(r#"[["stratum+tcp://a.b", 1, "x"]]"#),
            "pools[0][0]",
            "without \"stratum+tcp://\"",
        );
        assert_field_error(&pools(r#"[["a"]]"#), "pools[0]", "got 1 element(s)");
        assert_field_error(
            &pools(r#"["a"]"#),
            "pools[0]",
            "expected [\"host\", port, \"sub-account\"]",
        );
        assert_field_error(
            &pools(r#"[["a", 1, ""]]"#),
            "pools[0][2]",
            "sub-account is empty",
        );
        assert_field_error(&pools(r#"[["a", 1]]"#), "pools[0]", "sub-account is empty");
        assert_field_error(
            &pools(r#"[["a", 1, 5]]"#),
            "pools[0][2]",
            "expected a string",
        );
    }

    #[test]
    fn multi_user_mode_allows_empty_subaccount() {
        let (config, _) = parse(r#"{"multi_user_mode": true, "pools": [["a", 1], ["b", 2, ""]]}"#);
        assert_eq!(config.pools[0].subaccount, "");
        assert_eq!(config.pools[1].port, 2);
        let (_, warnings) = parse(r#"{"pools": [["a", 1, "x", "extra"]]}"#);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn handshake_bounds_default_and_refuse_zero() {
        let (config, _) = parse(&with_pool(
            r#""advanced": {"max_unauthorized_connections_per_ip": 16}"#,
        ));
        assert_eq!(config.advanced.max_unauthorized_connections, 4096);
        assert_eq!(config.advanced.max_unauthorized_connections_per_ip, 16);
        assert_field_error(
            &with_pool(r#""advanced": {"max_unauthorized_connections": 0}"#),
            "advanced.max_unauthorized_connections",
            "must be 1..=65535, got 0",
        );
        assert_field_error(
            &with_pool(r#""advanced": {"max_unauthorized_connections_per_ip": 65536}"#),
            "advanced.max_unauthorized_connections_per_ip",
            "65535",
        );
    }

    #[test]
    fn every_field_error_names_its_field() {
        assert_field_error(
            &with_pool(r#""advanced": {"pool_connection_dial_timeout_seconds": "15"}"#),
            "advanced.pool_connection_dial_timeout_seconds",
            "expected a number",
        );
        assert_field_error(
            &with_pool(r#""advanced": {"pool_connection_dial_timeout_seconds": 0}"#),
            "advanced.pool_connection_dial_timeout_seconds",
            "at least 1, got 0",
        );
        assert_field_error(
            &with_pool(r#""advanced": {"pool_connection_read_timeout_seconds": 0}"#),
            "advanced.pool_connection_read_timeout_seconds",
            "at least 1",
        );
        assert_field_error(
            &with_pool(r#""advanced": {"fake_job_notify_interval_seconds": 1.5}"#),
            "advanced.fake_job_notify_interval_seconds",
            "whole number",
        );
        assert_field_error(
            &with_pool(r#""advanced": {"pool_connection_number_per_subaccount": 101}"#),
            "advanced.pool_connection_number_per_subaccount",
            "1..=100, got 101",
        );
        assert_field_error(
            &with_pool(r#""advanced": {"pool_connection_number_per_subaccount": 0}"#),
            "advanced.pool_connection_number_per_subaccount",
            "1..=100, got 0",
        );
        assert_field_error(
            &with_pool(r#""advanced": {"tls_skip_certificate_verify": "yes"}"#),
            "advanced.tls_skip_certificate_verify",
            "expected true or false",
        );
        assert_field_error(
            &with_pool(r#""advanced": {"message_queue_size": {"pool_session": "x"}}"#),
            "advanced.message_queue_size.pool_session",
            "expected a number",
        );
        assert_field_error(
            &with_pool(r#""advanced": {"message_queue_size": []}"#),
            "advanced.message_queue_size",
            "expected an object",
        );
        assert_field_error(
            &with_pool(r#""advanced": {"bitcoin_default_version_mask": -1}"#),
            "advanced.bitcoin_default_version_mask",
            "got -1",
        );
        assert_field_error(
            &with_pool(r#""advanced": 5"#),
            "advanced",
            "expected an object",
        );
        assert_field_error(
            &with_pool(r#""agent_listen_ip": "0.0.0.x""#),
            "agent_listen_ip",
            "\"0.0.0.x\" is not an IP address",
        );
        assert_field_error(
            &with_pool(r#""agent_listen_port": 70000"#),
            "agent_listen_port",
            "0..=65535, got 70000",
        );
        assert_field_error(
            &with_pool(r#""agent_type": "eth""#),
            "agent_type",
            "\"eth\" is not supported yet",
        );
        assert_field_error(
            &with_pool(r#""multi_user_mode": 1"#),
            "multi_user_mode",
            "expected true or false, got number 1",
        );
        assert_field_error(
            &with_pool(r#""fixed_worker_name": false"#),
            "fixed_worker_name",
            "expected a string",
        );
        assert_field_error(
            &with_pool(r#""status_file": 1"#),
            "status_file",
            "expected a string",
        );
        assert_field_error(
            &with_pool(r#""http_debug": {"enable": true, "listen": "9999"}"#),
            "http_debug.listen",
            "host:port",
        );
        assert_field_error(
            &with_pool(r#""http_debug": {"enable": true, "listen": "a:0"}"#),
            "http_debug.listen",
            "port must be",
        );
        assert_field_error("[1]", "the config", "expected an object");
    }

    #[test]
    fn lenient_where_the_original_was() {
        let (config, warnings) = parse(&with_pool(
            r#""agent_type": "BTC", "agent_listen_ip": "", "fixed_worker_name": null,
               "http_debug": {"enable": false, "listen": "not an address"},
               "advanced": {"message_queue_size": {"pool_session": 0, "miner_session": 100000000}}"#,
        ));
        assert_eq!(config.agent_type, "btc");
        assert_eq!(config.agent_listen_ip, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(config.fixed_worker_name, "");
        assert_eq!(config.advanced.message_queue_size.pool_session, 1);
        assert_eq!(config.advanced.message_queue_size.miner_session, 65536);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let (config, _) = parse(&with_pool(r#""agent_listen_ip": "::""#));
        assert_eq!(config.agent_listen_ip, "::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn unknown_fields_warn_with_a_hint() {
        let (config, warnings) = parse(&with_pool(
            r#""multi_user_mod": true, "zzz": 1, "Always_Keep_Downconn": true,
               "advanced": {"pool_conection_dial_timeout_seconds": 3,
                            "message_queue_size": {"pool_sesion": 3}},
               "http_debug": {"enabled": true}"#,
        ));
        let expect = [
            "unknown field `multi_user_mod` ignored (did you mean `multi_user_mode`?)",
            "unknown field `zzz` ignored",
            "field `Always_Keep_Downconn` read as `always_keep_downconn`",
            "unknown field `advanced.pool_conection_dial_timeout_seconds` ignored (did you mean `advanced.pool_connection_dial_timeout_seconds`?)",
            "unknown field `advanced.message_queue_size.pool_sesion` ignored (did you mean `advanced.message_queue_size.pool_session`?)",
            "unknown field `http_debug.enabled` ignored (did you mean `http_debug.enable`?)",
        ];
        for e in expect {
            assert!(
                warnings.iter().any(|w| w.contains(e)),
                "no warning {e:?} in {warnings:?}"
            );
        }
        assert_eq!(warnings.len(), expect.len(), "{warnings:?}");
        assert!(!warnings
            .iter()
            .any(|w| w.contains("zzz") && w.contains("did you mean")));
        assert!(config.always_keep_downconn);
        assert!(!config.multi_user_mode);
    }

    #[test]
    fn proxies() {
        let (config, warnings) = parse(&with_pool(
            r#""proxy": ["system", "socks5://127.0.0.1:1080", "h:8080"]"#,
        ));
        assert!(warnings.is_empty());
        assert_eq!(
            config.proxy,
            ["system", "socks5://127.0.0.1:1080", "h:8080"]
        );
        assert_field_error(
            &with_pool(r#""proxy": ["socks4://h:1"]"#),
            "proxy[0]",
            "unsupported scheme \"socks4\"",
        );
        assert_field_error(
            &with_pool(r#""proxy": ["system", "socks5://"]"#),
            "proxy[1]",
            "missing host",
        );
        assert_field_error(
            &with_pool(r#""proxy": ["http://h:99999"]"#),
            "proxy[0]",
            "bad port \"99999\"",
        );
        assert_field_error(
            &with_pool(r#""proxy": ["http://:80"]"#),
            "proxy[0]",
            "missing host",
        );
        assert_field_error(
            &with_pool(r#""proxy": ["http://h:80/path"]"#),
            "proxy[0]",
            "no path",
        );
        assert_field_error(
            &with_pool(r#""proxy": ["http://u%zz@h:80"]"#),
            "proxy[0]",
            "%-escape",
        );
        assert_field_error(
            &with_pool(r#""proxy": [1]"#),
            "proxy[0]",
            "expected a string",
        );
        assert_field_error(&with_pool(r#""proxy": "h:1""#), "proxy", "expected a list");
    }

    #[test]
    fn a_huge_or_strange_unknown_key_makes_a_short_warning_line() {
        let key = format!("multi_user_mode{}", "x".repeat(1 << 20));
        let (_, warnings) = parse(&with_pool(&format!("{}: 1", json_string(&key))));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let w = &warnings[0];
        assert!(w.len() < 200, "{} bytes: {}...", w.len(), &w[..200]);
        assert!(
            w.contains("unknown field `multi_user_modexxx") && w.contains("(1048591 bytes)"),
            "{w}"
        );
        assert!(!w.contains("did you mean"), "{w}");
        // Control characters cannot start a line of their own in the log.
        let (_, warnings) = parse(&with_pool(r#""multi_user\nmode": 1, "a\u001b[2Jb": 1"#));
        assert!(
            warnings.iter().all(|w| !w.contains(['\n', '\u{1b}'])),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains(r"`multi_user\nmode`")),
            "{warnings:?}"
        );
        // A name far longer than every known one is not matched at all (that took
        // 2.5 s for 1 MiB); one within two edits still is.
        assert_eq!(nearest_name(&"a".repeat(1 << 20), TOP_LEVEL_FIELDS), None);
        assert_eq!(
            nearest_name("pool_use_tlsxx", TOP_LEVEL_FIELDS),
            Some("pool_use_tls")
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("pools", "pools"), 0);
        assert_eq!(edit_distance("pool", "pools"), 1);
        assert_eq!(edit_distance("polos", "pools"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(nearest_name("POOL", TOP_LEVEL_FIELDS), Some("pools"));
    }

    #[test]
    fn stratum_pool_entries() {
        let text = r#"{"pools": [["a.example", 1800, "acct"],
            {"protocol": "stratum", "host": "solo.ckpool.org", "port": 3333, "user": "bc1q.farm1"},
            {"protocol": "agent", "host": "b.example", "port": 443, "subaccount": "acct"}],
            "advanced": {"stratum_shares_per_minute": 3, "stratum_min_difficulty": 0.5}}"#;
        let (c, warnings) = parse(text);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.pools[0].stratum, None);
        assert_eq!(
            c.pools[1],
            PoolEntry {
                host: "solo.ckpool.org".into(),
                port: 3333,
                subaccount: String::new(),
                stratum: Some(StratumEntry {
                    user: "bc1q.farm1".into(),
                    password: "x".into(),
                    extranonce_subscribe: true,
                    identity_passthrough: false,
                }),
            }
        );
        assert_eq!(c.pools[1].account(), "bc1q.farm1");
        let (passthrough, _) = parse(
            r#"{"pools": [{"protocol": "stratum", "host": "h", "port": 1,
                "user": "acct.{worker}", "identity_passthrough": true}]}"#,
        );
        let entry = passthrough.pools[0].stratum.as_ref().unwrap();
        assert!(entry.identity_passthrough);
        assert_eq!(
            c.pools[2],
            PoolEntry {
                stratum: None,
                host: "b.example".into(),
                port: 443,
                subaccount: "acct".into()
            }
        );
        assert_eq!(c.advanced.stratum_shares_per_minute, 3);
        assert_eq!(c.advanced.stratum_start_difficulty, 16384.0);
        assert_eq!(c.advanced.stratum_min_difficulty, 0.5);
        // What --print-config writes reads back the same.
        let (back, _) = parse(&c.to_json_pretty());
        assert_eq!(back, c);
    }

    #[test]
    fn stratum_pool_mistakes_name_the_field() {
        let pools = |p: &str| format!(r#"{{"pools": [{p}]}}"#);
        let stratum = r#""protocol": "stratum", "host": "h", "port": 1"#;
        assert_field_error(
            &pools(r#"{"host": "h", "port": 1}"#),
            "pools[0]",
            "say \"protocol\": \"stratum\"",
        );
        assert_field_error(
            &pools(r#"{"protocol": "stratum+tcp", "host": "h", "port": 1}"#),
            "pools[0].protocol",
            "is not a protocol",
        );
        assert_field_error(
            &pools(r#"{"protocol": 1}"#),
            "pools[0].protocol",
            "expected \"stratum\" or \"agent\"",
        );
        assert_field_error(
            &pools(&format!("{{{stratum}}}")),
            "pools[0].user",
            "missing",
        );
        assert_field_error(
            &pools(&format!(
                r#"{{{stratum}, "user": "a.b", "subaccount": "s"}}"#
            )),
            "pools[0].subaccount",
            "has no sub-account",
        );
        assert_field_error(
            &pools(&format!(r#"{{{stratum}, "user": "a.b", "usr": "s"}}"#)),
            "pools[0].usr",
            "unknown key",
        );
        assert_field_error(
            &pools(&format!(r#"{{{stratum}, "user": "a b"}}"#)),
            "pools[0].user",
            "white space",
        );
        assert_field_error(
            &pools(&format!(r#"{{{stratum}, "user": "a.{{worker}}"}}"#)),
            "pools[0].user",
            "identity_passthrough",
        );
        assert_field_error(
            &pools(&format!(
                r#"{{{stratum}, "user": "a.b", "identity_passthrough": true}}"#
            )),
            "pools[0].user",
            "has no {worker}",
        );
        assert_field_error(
            &pools(&format!(
                r#"{{{stratum}, "user": "a.{{worker}}", "identity_passthrough": 1}}"#
            )),
            "pools[0].identity_passthrough",
            "expected",
        );
        assert_field_error(
            &pools(r#"{"protocol": "stratum", "port": 1, "user": "a"}"#),
            "pools[0].host",
            "missing",
        );
        assert_field_error(
            &pools(r#"{"protocol": "stratum", "host": "h", "user": "a"}"#),
            "pools[0].port",
            "missing",
        );
        assert_field_error(
            &pools(r#"{"protocol": "agent", "host": "h", "port": 1, "user": "a"}"#),
            "pools[0].user",
            "takes \"subaccount\"",
        );
        assert_field_error(
            &pools(r#"["stratum+tcp://pool.example:3333", 3333, "x"]"#),
            "pools[0][0]",
            "{\"protocol\": \"stratum\", \"host\": \"pool.example\", \"port\": 3333",
        );
        // In multi-user mode the user names the sub-account's.
        let multi = |user: &str| {
            format!(r#"{{"multi_user_mode": true, "pools": [{{{stratum}, "user": "{user}"}}]}}"#)
        };
        assert_field_error(&multi("acct.farm1"), "pools[0].user", "has no {sub}");
        let (c, _) = parse(&multi("{sub}.farm1"));
        assert_eq!(c.pools[0].stratum.as_ref().unwrap().user, "{sub}.farm1");
        assert_field_error(
            &format!(r#"{{{POOL}, "advanced": {{"stratum_min_difficulty": 0}}}}"#),
            "advanced.stratum_min_difficulty",
            "above 0",
        );
        assert_field_error(
            &format!(r#"{{{POOL}, "advanced": {{"stratum_shares_per_minute": 61}}}}"#),
            "advanced.stratum_shares_per_minute",
            "1..=60",
        );
    }
}
