//! A proxy URL from the config; credentials never reach its Display, Debug or the
//! redacted text used in errors (tests/proxy_secrets.rs checks the messages themselves).
#![no_main]

use btcagent::upstream::proxy_url::host_port;
use btcagent::upstream::{redact, ProxyUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|url: &str| {
    // Whatever stood before the last '@' is gone from the redacted text, but for a
    // scheme (letters, digits, "+-." and "://") in front.
    let redacted = redact(url);
    if let Some((_, after)) = url.rsplit_once('@') {
        let kept = redacted
            .strip_suffix(&format!("***@{after}"))
            .unwrap_or_else(|| panic!("{url:?} -> {redacted:?}"));
        if !kept.is_empty() {
            let scheme = kept.strip_suffix("://");
            assert!(
                url.starts_with(kept)
                    && scheme.is_some_and(|s| {
                        s.starts_with(|c: char| c.is_ascii_alphabetic())
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                    }),
                "{url:?} -> {redacted:?}"
            );
        }
    } else {
        assert_eq!(redacted, url);
    }
    if let Ok(p) = ProxyUrl::parse(url) {
        let target = host_port(&p.host, p.port);
        assert_eq!(format!("{p}"), format!("{} {target}", p.scheme.name()));
        let user = if p.auth.is_some() { "***@" } else { "" };
        assert_eq!(
            format!("{p:?}"),
            format!("{}://{user}{target}", p.scheme.name())
        );
    }
});
