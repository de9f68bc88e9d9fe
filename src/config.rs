//! `agent_conf.json`: the original agent's config file, read unchanged.
//!
//! Parsing goes through `serde_json::Value` rather than a derived struct so that every
//! error can name the exact field (`advanced.pool_connection_dial_timeout_seconds`)
//! and unknown fields can be warned about instead of rejected.

use std::net::IpAddr;
use std::time::Duration;

/// One entry of `pools`: `["host", port, "sub-account"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    pub host: String,
    pub port: u16,
    pub subaccount: String,
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
    pub tls_skip_certificate_verify: bool,
    /// The original's channel sizes; btcagent maps `miner_session` onto the bound of a
    /// miner's unsent output and `pool_session` onto the pool writer's buffer.
    pub message_queue_size: MessageQueueSize,
    /// Version mask offered to miners before the pool has sent its own.
    pub bitcoin_default_version_mask: u32,
    /// btcagent only: submits written to a pool connection within this window are sent
    /// in one TCP write. 0 writes every share at once.
    pub submit_coalesce: Duration,
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
            tls_skip_certificate_verify: true,
            message_queue_size: MessageQueueSize::default(),
            bitcoin_default_version_mask: 0x1fff_e000,
            submit_coalesce: Duration::from_millis(DEFAULT_SUBMIT_COALESCE_MS),
        }
    }
}

/// Long enough to gather the shares of a busy farm into one segment, short enough that
/// a miner never notices: pools answer in tens of milliseconds anyway.
pub const DEFAULT_SUBMIT_COALESCE_MS: u64 = 5;

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
        }
    }
}
