//! What the agent tells at start about what it is going to do, from the config alone.
//!
//! In multi-user mode nothing is dialled until a miner logs in, so without this line a
//! user with unreachable pools sees only `listening` and cannot tell a quiet agent from
//! a stuck one.

use crate::config::Config;

/// The template's sub-account (`agent_conf.default.json`), which no pool knows.
pub const PLACEHOLDER_SUBACCOUNT: &str = "YourSubAccountName";

/// One line: the mode, the pools in the order they are tried, the routes, and when
/// connections open. `routes` is the connector's description ("direct", proxies).
pub fn plan(cfg: &Config, routes: &str) -> String {
    let connections = cfg.advanced.pool_connection_number_per_subaccount;
    let tls = if cfg.pool_use_tls {
        ", TLS to the pool"
    } else {
        ""
    };
    let pools: Vec<String> = cfg
        .pools
        .iter()
        .map(|p| {
            let pool = crate::upstream::proxy_url::host_port(&p.host, p.port);
            match (&p.stratum, cfg.multi_user_mode) {
                (Some(s), _) if s.identity_passthrough => format!(
                    "{pool} (Stratum V1, user {}, a connection per miner)",
                    s.user
                ),
                (Some(s), _) => format!("{pool} (Stratum V1, user {})", s.user),
                (None, true) => pool,
                (None, false) => format!("{pool} ({})", p.subaccount),
            }
        })
        .collect();
    let pools = match pools.len() {
        1 => format!("pool {}", pools[0]),
        _ => format!("pools {}, tried in that order", pools.join(", ")),
    };
    if cfg.multi_user_mode {
        format!(
            "multi-user mode: {pools} ({routes}{tls}); each \
             sub-account gets {connections} pool connections when its first miner logs in \
             as SUBACCOUNT.WORKER, so nothing is dialled before that"
        )
    } else {
        format!(
            "single-user mode: {pools} ({routes}{tls}); \
             opening {connections} pool connections now, shared by every miner"
        )
    }
}

/// A warning when a pool entry still holds the template's placeholder sub-account.
pub fn placeholder_warning(cfg: &Config) -> Option<String> {
    let entries: Vec<String> = cfg
        .pools
        .iter()
        .enumerate()
        .filter(|(_, p)| p.subaccount == PLACEHOLDER_SUBACCOUNT)
        .map(|(i, _)| format!("pools[{i}]"))
        .collect();
    if entries.is_empty() {
        return None;
    }
    let consequence = if cfg.multi_user_mode {
        "unused while multi_user_mode is on, as miners log in as SUBACCOUNT.WORKER, \
         but single-user mode would mine for it"
    } else {
        "every miner mines for it, and no pool knows it"
    };
    let verb = if entries.len() == 1 { "holds" } else { "hold" };
    Some(format!(
        "config: {} still {verb} the template's placeholder sub-account `{PLACEHOLDER_SUBACCOUNT}`: \
         replace it with your pool sub-account ({consequence})",
        entries.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolEntry;

    fn config(multi_user_mode: bool, subs: &[&str]) -> Config {
        Config {
            multi_user_mode,
            pools: subs
                .iter()
                .enumerate()
                .map(|(i, s)| PoolEntry {
                    host: "us.ss.btc.com".into(),
                    port: 1800 + i as u16,
                    subaccount: s.to_string(),
                    stratum: None,
                })
                .collect(),
            ..Config::default()
        }
    }

    #[test]
    fn multi_user_mode_says_connections_wait_for_the_first_miner() {
        let cfg = config(true, &["a", "a"]);
        assert_eq!(
            plan(&cfg, "direct"),
            "multi-user mode: pools us.ss.btc.com:1800, us.ss.btc.com:1801, tried in that \
             order (direct); each sub-account gets 5 pool connections when its first miner \
             logs in as SUBACCOUNT.WORKER, so nothing is dialled before that"
        );
    }

    #[test]
    fn single_user_mode_names_the_subaccounts_and_opens_now() {
        let mut cfg = config(false, &["farm"]);
        cfg.pool_use_tls = true;
        cfg.advanced.pool_connection_number_per_subaccount = 2;
        assert_eq!(
            plan(&cfg, "socks5 10.0.0.2:1080, direct after"),
            "single-user mode: pool us.ss.btc.com:1800 (farm) \
             (socks5 10.0.0.2:1080, direct after, TLS to the pool); opening 2 pool connections now, \
             shared by every miner"
        );
    }

    #[test]
    fn the_template_placeholder_is_named() {
        assert_eq!(placeholder_warning(&config(false, &["farm", "farm"])), None);
        let w = placeholder_warning(&config(
            false,
            &["farm", PLACEHOLDER_SUBACCOUNT, PLACEHOLDER_SUBACCOUNT],
        ))
        .unwrap();
        assert!(
            w.starts_with("config: pools[1], pools[2] still hold the template's placeholder sub-account `YourSubAccountName`"),
            "{w}"
        );
        assert!(w.contains("every miner mines for it"), "{w}");
        let w = placeholder_warning(&config(true, &[PLACEHOLDER_SUBACCOUNT])).unwrap();
        assert!(w.starts_with("config: pools[0] still holds "), "{w}");
        assert!(w.contains("unused while multi_user_mode is on"), "{w}");
    }

    #[test]
    fn the_shipped_template_holds_the_placeholder() {
        let (cfg, _) = Config::from_json_str(include_str!("../agent_conf.default.json")).unwrap();
        assert!(placeholder_warning(&cfg).is_some());
    }
}
