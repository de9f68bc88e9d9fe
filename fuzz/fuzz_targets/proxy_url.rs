//! A proxy URL from the config; credentials never reach its Display, Debug or the
//! redacted text used in errors.
#![no_main]

use btcagent::upstream::proxy_url::host_port;
use btcagent::upstream::{redact, ProxyUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|url: &str| {
    // Whatever stood before the authority's last '@' is gone from the redacted text.
    let redacted = redact(url);
    let authority = |u: &str| -> String {
        let rest = u.split_once("://").map_or(u, |(_, rest)| rest);
        rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())].to_string()
    };
    if let Some((userinfo, _)) = authority(url).rsplit_once('@') {
        let shown = authority(&redacted);
        let (kept, _) = shown.rsplit_once('@').expect("an @ stays");
        assert_eq!(kept, "***", "{userinfo:?} -> {redacted:?}");
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
