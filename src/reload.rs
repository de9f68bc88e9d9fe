//! What a changed config means for a running agent (SIGHUP, `/etc/init.d/btcagent
//! reload`, LuCI's Save & Apply): which changes apply at once, which need the pool
//! connections dialled again, and which only a restart can make.
//!
//! Pure: two configs in, a plan out. The agent carries the plan out.

use crate::config::Config;

/// How the running agent takes a new config.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Fields whose new value waits for the next restart (the old one stays in force).
    pub needs_restart: Vec<&'static str>,
    /// The pools or the way to reach them changed: every pool connection is dialled
    /// again, one at a time, its miners moving to siblings meanwhile.
    pub redial: bool,
    /// Worker naming changed: miners whose name at the pool changes are registered
    /// again under the new name.
    pub rename: bool,
    /// The number of pool connections per sub-account changed.
    pub resize: bool,
    /// Nothing at all changed.
    pub unchanged: bool,
}

/// Compares the running config with the new one. `new` is taken as it is, except for
/// the fields listed in `needs_restart`, which the caller keeps from `old`
/// ([`applicable`]). Everything else the agent reads where it uses it (timeouts,
/// queue sizes, fake jobs, the failover hold), so it applies from the next use on.
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut p = ReloadPlan {
        unchanged: old == new,
        ..ReloadPlan::default()
    };
    let mut restart = |changed: bool, field: &'static str| {
        if changed {
            p.needs_restart.push(field);
        }
    };
    // The listening socket is bound once.
    restart(
        old.agent_listen_ip != new.agent_listen_ip,
        "agent_listen_ip",
    );
    restart(
        old.agent_listen_port != new.agent_listen_port,
        "agent_listen_port",
    );
    // Sub-accounts decide which connections a miner may use at all.
    restart(
        old.multi_user_mode != new.multi_user_mode,
        "multi_user_mode",
    );
    restart(old.agent_type != new.agent_type, "agent_type");
    // The handshake bounds count connections already open under the old ones.
    restart(
        old.advanced.max_unauthorized_connections != new.advanced.max_unauthorized_connections,
        "advanced.max_unauthorized_connections",
    );
    restart(
        old.advanced.max_unauthorized_connections_per_ip
            != new.advanced.max_unauthorized_connections_per_ip,
        "advanced.max_unauthorized_connections_per_ip",
    );
    // The status writers and the HTTP endpoint are started once.
    restart(old.status_file != new.status_file, "status_file");
    restart(
        old.status_interval != new.status_interval,
        "status_interval_seconds",
    );
    restart(old.http_debug != new.http_debug, "http_debug");
    p.redial = old.pools != new.pools
        || old.proxy != new.proxy
        || old.use_proxy != new.use_proxy
        || old.direct_connect_with_proxy != new.direct_connect_with_proxy
        || old.direct_connect_after_proxy != new.direct_connect_after_proxy
        || old.pool_use_tls != new.pool_use_tls
        || old.advanced.tls_skip_certificate_verify != new.advanced.tls_skip_certificate_verify
        // Share responses are asked for in the connection's handshake.
        || old.submit_response_from_server != new.submit_response_from_server;
    p.rename = old.use_ip_as_worker_name != new.use_ip_as_worker_name
        || old.ip_worker_name_format != new.ip_worker_name_format
        || old.fixed_worker_name != new.fixed_worker_name;
    p.resize = old.advanced.pool_connection_number_per_subaccount
        != new.advanced.pool_connection_number_per_subaccount;
    p
}

/// `new` with the fields that wait for a restart kept as they are in `old`.
pub fn applicable(old: &Config, mut new: Config, plan: &ReloadPlan) -> Config {
    for field in &plan.needs_restart {
        match *field {
            "agent_listen_ip" => new.agent_listen_ip = old.agent_listen_ip,
            "agent_listen_port" => new.agent_listen_port = old.agent_listen_port,
            "multi_user_mode" => new.multi_user_mode = old.multi_user_mode,
            "agent_type" => new.agent_type = old.agent_type.clone(),
            "advanced.max_unauthorized_connections" => {
                new.advanced.max_unauthorized_connections =
                    old.advanced.max_unauthorized_connections
            }
            "advanced.max_unauthorized_connections_per_ip" => {
                new.advanced.max_unauthorized_connections_per_ip =
                    old.advanced.max_unauthorized_connections_per_ip
            }
            "status_file" => new.status_file = old.status_file.clone(),
            "status_interval_seconds" => new.status_interval = old.status_interval,
            "http_debug" => new.http_debug = old.http_debug.clone(),
            _ => {}
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolEntry;
    use std::time::Duration;

    fn base() -> Config {
        Config {
            pools: vec![PoolEntry {
                host: "pool.example".into(),
                port: 1800,
                subaccount: "acct".into(),
                stratum: None,
            }],
            ..Config::default()
        }
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let p = plan(&base(), &base());
        assert!(p.unchanged);
        assert_eq!(
            p,
            ReloadPlan {
                unchanged: true,
                ..ReloadPlan::default()
            }
        );
    }

    #[test]
    fn timeouts_apply_without_anything_else() {
        let mut new = base();
        new.advanced.pool_connection_read_timeout = Duration::from_secs(90);
        new.advanced.pool_failover_hold = Duration::from_secs(5);
        new.advanced.fake_job_notify_interval = Duration::from_secs(5);
        let p = plan(&base(), &new);
        assert!(!p.unchanged && !p.redial && !p.rename && !p.resize);
        assert!(p.needs_restart.is_empty());
    }

    #[test]
    fn pools_and_routes_redial() {
        let mut new = base();
        new.pools[0].port = 443;
        assert!(plan(&base(), &new).redial);
        let mut new = base();
        new.proxy = vec!["socks5://10.0.0.2:1080".into()];
        assert!(plan(&base(), &new).redial);
        let mut new = base();
        new.pool_use_tls = true;
        assert!(plan(&base(), &new).redial);
        let mut new = base();
        new.submit_response_from_server = !base().submit_response_from_server;
        assert!(plan(&base(), &new).redial, "asked for in the handshake");
    }

    #[test]
    fn naming_renames_and_slots_resize() {
        let mut new = base();
        new.fixed_worker_name = "big".into();
        let p = plan(&base(), &new);
        assert!(p.rename && !p.redial);
        let mut new = base();
        new.advanced.pool_connection_number_per_subaccount = 2;
        assert!(plan(&base(), &new).resize);
    }

    #[test]
    fn the_listen_address_waits_for_a_restart() {
        let mut new = base();
        new.agent_listen_port = 4444;
        new.multi_user_mode = !base().multi_user_mode;
        new.fixed_worker_name = "big".into();
        let p = plan(&base(), &new);
        assert_eq!(p.needs_restart, ["agent_listen_port", "multi_user_mode"]);
        let kept = applicable(&base(), new, &p);
        assert_eq!(kept.agent_listen_port, base().agent_listen_port);
        assert_eq!(kept.multi_user_mode, base().multi_user_mode);
        assert_eq!(kept.fixed_worker_name, "big", "the rest applies");
    }

    #[test]
    fn every_field_that_waits_is_kept_from_the_old_config() {
        let mut new = base();
        new.agent_listen_ip = "127.0.0.1".parse().unwrap();
        new.agent_listen_port = 4444;
        new.multi_user_mode = !base().multi_user_mode;
        new.agent_type = "other".into();
        new.advanced.max_unauthorized_connections = 7;
        new.advanced.max_unauthorized_connections_per_ip = 3;
        new.status_file = "/tmp/elsewhere.json".into();
        new.status_interval = Duration::from_secs(1);
        new.http_debug.enable = !base().http_debug.enable;
        let p = plan(&base(), &new);
        assert_eq!(p.needs_restart.len(), 9, "{:?}", p.needs_restart);
        assert_eq!(applicable(&base(), new, &p), base());
    }
}
