//! A miner's login, split into sub-account and worker and named by the config's rules.
#![no_main]

use btcagent::protocol::worker::{filter_worker_name, split_login, NamingRules, MAX_WORKER_LEN};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fn check_name(name: &str) {
    assert!(!name.is_empty() && name.len() <= MAX_WORKER_LEN, "{name:?}");
}

fuzz_target!(|data: &[u8]| {
    // The first 16 bytes are the miner's address, the rest its login and the rules.
    if data.len() < 16 {
        return;
    }
    let ip = IpAddr::from(<[u8; 16]>::try_from(&data[..16]).unwrap());
    let Ok(text) = std::str::from_utf8(&data[16..]) else {
        return;
    };
    let (login, format) = text.split_once('\n').unwrap_or((text, "{1}x{2}x{3}x{4}"));
    let filtered = filter_worker_name(login);
    check_name(&filtered);
    assert!(filtered
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ",=/.-_:|^".contains(c)));
    for multi_user_mode in [false, true] {
        if let Ok((sub, worker)) = split_login(login, multi_user_mode) {
            assert_eq!(sub.is_some(), multi_user_mode);
            for use_ip in [false, true] {
                let rules = NamingRules {
                    multi_user_mode,
                    use_ip_as_worker_name: use_ip,
                    ip_worker_name_format: format.to_string(),
                    fixed_worker_name: String::new(),
                };
                check_name(&rules.worker_name(worker, ip));
            }
        }
    }
});
