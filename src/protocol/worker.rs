//! Who a miner is at the pool: sub-account and worker name from its login, and who
//! the agent says it is.

use std::net::IpAddr;

/// The `mining.subscribe` user agent sent to the pool. sserver cuts it to 30 bytes,
/// keeps only `[A-Za-z0-9-._:|^/]` and treats the connection as an agent (the only
/// way ex-messages are read at all) when it starts with `btccom-agent/`
/// (StratumSession.cc `setClientAgent`); the `-rust` suffix tells this agent apart
/// from the original's `btccom-agent/2.0.0-mu`.
pub const AGENT_USER_AGENT: &str = concat!("btccom-agent/", env!("CARGO_PKG_VERSION"), "-rust");

/// Worker name used when nothing usable is left after filtering.
pub const DEFAULT_WORKER: &str = "__default__";

/// Longest worker name sent to the pool; the REGISTER_WORKER frame is capped anyway.
pub const MAX_WORKER_LEN: usize = 64;

/// How the agent names workers, from the config.
#[derive(Debug, Clone, Default)]
pub struct NamingRules {
    pub multi_user_mode: bool,
    pub use_ip_as_worker_name: bool,
    pub ip_worker_name_format: String,
    pub fixed_worker_name: String,
}

/// `Err` text is what the miner is told (error 105).
pub fn split_login(
    login: &str,
    multi_user_mode: bool,
) -> Result<(Option<&str>, &str), &'static str> {
    let login = login.trim();
    if !multi_user_mode {
        // The sub-account comes from the pool entry; everything after the first '.'
        // is the worker, as the original does.
        return Ok((None, login.split_once('.').map(|(_, w)| w).unwrap_or(login)));
    }
    match login.split_once('.') {
        Some(("", _)) => Err("Empty sub-account"),
        Some((sub, worker)) => Ok((Some(sub), worker)),
        None if login.is_empty() => Err("Empty sub-account"),
        None => Ok((Some(login), login)),
    }
}

/// Keeps only `a-z A-Z 0-9 - . _ : | ^ /`, as sserver does with every name it
/// registers (Stratum.cc `filterWorkerName`), so logs and status show the name the
/// pool shows. The original agent also kept `,` and `=`; the pool drops them.
pub fn filter_worker_name(name: &str) -> String {
    let kept: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-._:|^/".contains(*c))
        .take(MAX_WORKER_LEN)
        .collect();
    if kept.is_empty() {
        DEFAULT_WORKER.to_string()
    } else {
        kept
    }
}

/// `{1}..{4}` replaced by the IPv4 octets; IPv6 miners get their address with ':'
/// (a character the filter keeps).
pub fn ip_worker_name(format: &str, ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format
                .replace("{1}", &o[0].to_string())
                .replace("{2}", &o[1].to_string())
                .replace("{3}", &o[2].to_string())
                .replace("{4}", &o[3].to_string())
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

impl NamingRules {
    /// The worker name the pool sees for this login from this address.
    pub fn worker_name(&self, login_worker: &str, ip: IpAddr) -> String {
        if !self.fixed_worker_name.is_empty() {
            filter_worker_name(&self.fixed_worker_name)
        } else if self.use_ip_as_worker_name {
            filter_worker_name(&ip_worker_name(&self.ip_worker_name_format, ip))
        } else {
            filter_worker_name(login_worker)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What sserver keeps of a user agent before it checks the prefix.
    const POOL_USER_AGENT_LEN: usize = 30;

    #[test]
    fn the_pool_sees_an_agent() {
        let ua = AGENT_USER_AGENT;
        assert!(ua.len() <= POOL_USER_AGENT_LEN, "{ua} is cut by the pool");
        assert!(ua.starts_with("btccom-agent/"), "{ua}");
        assert!(
            ua.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:|^/".contains(&b)),
            "the pool would filter characters out of {ua}"
        );
    }

    #[test]
    fn logins() {
        assert_eq!(
            split_login("farm1.s19-001", true),
            Ok((Some("farm1"), "s19-001"))
        );
        assert_eq!(split_login("farm1.a.b", true), Ok((Some("farm1"), "a.b")));
        assert_eq!(split_login("farm1", true), Ok((Some("farm1"), "farm1")));
        assert_eq!(split_login(".w", true), Err("Empty sub-account"));
        assert_eq!(split_login("", true), Err("Empty sub-account"));
        assert_eq!(split_login("farm1.w1", false), Ok((None, "w1")));
        assert_eq!(split_login("w1", false), Ok((None, "w1")));
    }

    #[test]
    fn filtering() {
        assert_eq!(filter_worker_name("s19 #1<script>"), "s191script");
        assert_eq!(filter_worker_name("a/d.e-f_g:h|i^j"), "a/d.e-f_g:h|i^j");
        assert_eq!(filter_worker_name("rig-3,a=b c!"), "rig-3abc");
        assert_eq!(filter_worker_name(",="), DEFAULT_WORKER);
        assert_eq!(filter_worker_name("矿机"), DEFAULT_WORKER);
        assert_eq!(filter_worker_name(""), DEFAULT_WORKER);
        assert_eq!(filter_worker_name(&"x".repeat(500)).len(), MAX_WORKER_LEN);
    }

    #[test]
    fn ip_names() {
        let ip: IpAddr = "192.168.1.23".parse().unwrap();
        assert_eq!(ip_worker_name("{1}x{2}x{3}x{4}", ip), "192x168x1x23");
        assert_eq!(ip_worker_name("rack{3}-{4}", ip), "rack1-23");
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(ip_worker_name("{1}x{2}x{3}x{4}", mapped), "10x0x0x7");
        let v6: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(ip_worker_name("{1}x{2}x{3}x{4}", v6), "fe80::1");
    }

    #[test]
    fn precedence() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let mut r = NamingRules {
            ip_worker_name_format: "{1}x{2}x{3}x{4}".into(),
            ..Default::default()
        };
        assert_eq!(r.worker_name("w1", ip), "w1");
        r.use_ip_as_worker_name = true;
        assert_eq!(r.worker_name("w1", ip), "10x1x2x3");
        r.fixed_worker_name = "bigminer".into();
        assert_eq!(r.worker_name("w1", ip), "bigminer");
    }
}
