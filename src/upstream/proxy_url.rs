//! Proxy URLs from the `proxy` config list: parsing, the `system` entry, redaction.
//!
//! Credentials live only in [`ProxyUrl::auth`]; every `Display` and every error message
//! goes through [`redact`] so a password never reaches a log line.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyScheme {
    /// SOCKS5 with remote DNS (`socks5://` and `socks5h://`).
    Socks5,
    /// HTTP CONNECT over plain TCP (`http://`, or no scheme).
    Http,
    /// HTTP CONNECT inside TLS to the proxy (`https://`).
    Https,
}

impl ProxyScheme {
    pub fn name(self) -> &'static str {
        match self {
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Http => "http",
            ProxyScheme::Https => "https",
        }
    }

    /// curl's defaults, so a URL that works with curl works here.
    fn default_port(self) -> u16 {
        match self {
            ProxyScheme::Socks5 | ProxyScheme::Http => 1080,
            ProxyScheme::Https => 443,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: ProxyScheme,
    /// Host name or IP literal, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// `(user, password)`, percent-decoded.
    pub auth: Option<(String, String)>,
}

/// Shows the route without credentials, e.g. `socks5 10.0.0.2:1080`.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.scheme.name(),
            host_port(&self.host, self.port)
        )
    }
}

/// Debug too must never print the password.
impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = if self.auth.is_some() { "***@" } else { "" };
        write!(
            f,
            "{}://{}{}",
            self.scheme.name(),
            user,
            host_port(&self.host, self.port)
        )
    }
}

/// `host:port`, with brackets around an IPv6 literal.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `url` with any `user:pass@` replaced by `***@`; safe to log whatever the input.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = split_scheme(url);
    match split_userinfo(rest) {
        (Some(_), after) => format!("{}***@{after}", scheme.unwrap_or("")),
        (None, _) => url.to_string(),
    }
}

/// `scheme://` (returned with its "://") and the rest, when what stands before the
/// first "://" can be a scheme (RFC 3986: a letter, then letters, digits, `+-.`).
/// Otherwise there is no scheme and the "://" is part of a password (`u:a://b@h`).
fn split_scheme(url: &str) -> (Option<&str>, &str) {
    match url.find("://") {
        Some(i)
            if url.as_bytes()[0].is_ascii_alphabetic()
                && url.as_bytes()[..i]
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            (Some(&url[..i + 3]), &url[i + 3..])
        }
        _ => (None, url),
    }
}

/// The userinfo (before the last '@') and what follows it. The last '@' rather than the
/// end of the authority (the first '/', '?' or '#'): a password is typed as is in UCI,
/// LuCI and environment variables, '@', '#', '/' and '?' included, and a proxy URL has
/// no path in which an '@' could stand. So redaction hides everything before it.
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    }
}

/// At most a few dozen characters of `text`, for a message.
fn clipped(text: &str) -> String {
    const SHOWN: usize = 24;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

impl ProxyUrl {
    /// Parses `scheme://[user:pass@]host[:port][/]`; no scheme means `http`. The user
    /// name and password may hold any character but '@' and ':' (the user name) unescaped;
    /// %-escapes are decoded. Errors quote the URL redacted.
    pub fn parse(url: &str) -> Result<ProxyUrl, String> {
        let bad = |why: &str| format!("proxy \"{}\": {why}", redact(url));
        let trimmed = url.trim();
        let (scheme_text, rest) = split_scheme(trimmed);
        let scheme = match scheme_text.map(|s| s[..s.len() - 3].to_ascii_lowercase()) {
            None => ProxyScheme::Http,
            Some(name) => match name.as_str() {
                "socks5" | "socks5h" => ProxyScheme::Socks5,
                "http" => ProxyScheme::Http,
                "https" => ProxyScheme::Https,
                other => {
                    return Err(bad(&format!(
                        "unsupported scheme \"{}\" (use socks5://, http://, https:// or system)",
                        clipped(other)
                    )))
                }
            },
        };
        let (userinfo, after) = split_userinfo(rest);
        // A trailing "/" is common in HTTP_PROXY values; any real path is a mistake.
        let hostport = match after.find(['/', '?', '#']) {
            None => after,
            Some(i) if after[i..] == *"/" => &after[..i],
            Some(i) if after.as_bytes()[i] == b'/' => return Err(bad("a proxy URL has no path")),
            Some(i) => {
                return Err(bad(&format!(
                    "'{}' after the address: a proxy URL has no query or fragment",
                    &after[i..=i]
                )))
            }
        };
        let auth = match userinfo {
            None => None,
            Some(info) => {
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in user name"))?;
                let pass = percent_decode(pass).ok_or_else(|| bad("bad %-escape in password"))?;
                if user.is_empty() {
                    return Err(bad("empty user name"));
                }
                Some((user, pass))
            }
        };
        let (host, port) = split_host_port(hostport).map_err(|why| bad(&why))?;
        let port = port.unwrap_or(scheme.default_port());
        Ok(ProxyUrl {
            scheme,
            host,
            port,
            auth,
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; port 0 and junk are refused.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let close = inner.find(']').ok_or("missing ']' after IPv6 address")?;
        let host = &inner[..close];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("\"{host}\" is not an IPv6 address"));
        }
        match &inner[close + 1..] {
            "" => (host, None),
            after => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err("junk after ']'".into()),
            },
        }
    } else {
        match s.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err("IPv6 address must be in brackets, e.g. [::1]:1080".into())
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
    {
        return Err(format!("bad character in host \"{host}\""));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("bad port \"{p}\" (1..65535)")),
            Ok(n) => Some(n),
        },
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The environment variables a `system` entry reads, first set (non-empty) wins.
pub const SYSTEM_PROXY_VARS: [&str; 6] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// The proxy URL a `system` entry stands for, with `getenv` injected for tests.
/// Returns `(variable name, value)`.
pub fn system_proxy(getenv: impl Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    SYSTEM_PROXY_VARS.iter().find_map(|name| {
        let value = getenv(name)?;
        let value = value.trim();
        (!value.is_empty()).then(|| (*name, value.to_string()))
    })
}

/// Expands the config's `proxy` list: `system` becomes the environment's proxy (or
/// nothing when none is set), everything else is parsed.
pub fn resolve_proxy_list(
    entries: &[String],
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ProxyUrl>, String> {
    let mut out = Vec::new();
    for entry in entries {
        if entry.trim().eq_ignore_ascii_case("system") {
            match system_proxy(&getenv) {
                Some((var, value)) => {
                    let url = ProxyUrl::parse(&value).map_err(|e| format!("{e} (from {var})"))?;
                    log::info!("proxy \"system\" is {url} (from {var})");
                    out.push(url);
                }
                None => log::info!(
                    "proxy \"system\": none of {} is set",
                    SYSTEM_PROXY_VARS.join(", ")
                ),
            }
        } else {
            out.push(ProxyUrl::parse(entry)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(u: &str, p: &str) -> Option<(String, String)> {
        Some((u.to_string(), p.to_string()))
    }

    #[test]
    fn parses_schemes_and_defaults() {
        let u = ProxyUrl::parse("socks5://10.0.0.2:1081").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.auth.clone()),
            (ProxyScheme::Socks5, "10.0.0.2", 1081, None)
        );
        assert_eq!(ProxyUrl::parse("socks5h://p").unwrap().port, 1080);
        let u = ProxyUrl::parse("proxy.lan:3128").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (ProxyScheme::Http, "proxy.lan", 3128)
        );
        let u = ProxyUrl::parse("HTTPS://proxy.lan/").unwrap();
        assert_eq!((u.scheme, u.port), (ProxyScheme::Https, 443));
    }

    #[test]
    fn parses_credentials() {
        let u = ProxyUrl::parse("socks5://alice:s3cr%40t@h:1080").unwrap();
        assert_eq!(u.auth, auth("alice", "s3cr@t"));
        // An unescaped '@' in the password: the last '@' ends the userinfo.
        let u = ProxyUrl::parse("http://bob:p@ss@h:8080").unwrap();
        assert_eq!((u.auth, u.host.as_str()), (auth("bob", "p@ss"), "h"));
        let u = ProxyUrl::parse("http://bob@h:8080").unwrap();
        assert_eq!(u.auth, auth("bob", ""));
        assert!(ProxyUrl::parse("http://:pw@h:1").is_err());
    }

    #[test]
    fn parses_ipv6() {
        let u = ProxyUrl::parse("socks5://[::1]:1080").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1080));
        assert_eq!(u.to_string(), "socks5 [::1]:1080");
        let u = ProxyUrl::parse("http://u:p@[fe80::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fe80::1", 1080));
        assert!(ProxyUrl::parse("socks5://::1:1080").is_err());
        assert!(ProxyUrl::parse("socks5://[::1").is_err());
        assert!(ProxyUrl::parse("socks5://[nothex]:1").is_err());
    }

    #[test]
    fn refuses_bad_urls_without_leaking_passwords() {
        for bad in [
            "socks4://u:hunter2@h:1",
            "ftp://u:hunter2@h:1",
            "http://u:hunter2@h:0",
            "http://u:hunter2@h:99999",
            "http://u:hunter2@h:port",
            "http://u:hunter2@:1",
            "http://u:hunter2@h:1/path",
            "http://u:hunter2@h%:1",
            "http://u:hunter2%zz@h:1",
            "",
        ] {
            let err = ProxyUrl::parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.starts_with("proxy \""), "{err}");
        }
        assert!(ProxyUrl::parse("socks4://h:1")
            .unwrap_err()
            .contains("unsupported scheme \"socks4\""));
    }

    #[test]
    fn display_and_debug_hide_credentials() {
        let u = ProxyUrl::parse("https://alice:hunter2@p.example:8443").unwrap();
        assert_eq!(u.to_string(), "https p.example:8443");
        assert_eq!(format!("{u:?}"), "https://***@p.example:8443");
    }

    #[test]
    fn redacts() {
        assert_eq!(
            redact("socks5://alice:hunter2@h:1080"),
            "socks5://***@h:1080"
        );
        assert_eq!(redact("alice:hunter2@h:1080/x"), "***@h:1080/x");
        assert_eq!(redact("http://a:b@c@h:1"), "http://***@h:1");
        // A proxy URL has no path: an '@' in one still hides what stands before it.
        assert_eq!(redact("http://h:1/a@b"), "http://***@b");
        assert_eq!(redact("system"), "system");
    }

    #[test]
    fn system_env_order_and_case() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(system_proxy(env(&[])), None);
        assert_eq!(
            system_proxy(env(&[("http_proxy", "h:1")])),
            Some(("http_proxy", "h:1".into()))
        );
        assert_eq!(
            system_proxy(env(&[("HTTP_PROXY", "h:1"), ("https_proxy", "s:2")])),
            Some(("https_proxy", "s:2".into()))
        );
        assert_eq!(
            system_proxy(env(&[
                ("HTTPS_PROXY", "s:2"),
                ("all_proxy", "socks5://a:3")
            ])),
            Some(("all_proxy", "socks5://a:3".into()))
        );
        assert_eq!(
            system_proxy(env(&[("ALL_PROXY", " "), ("HTTP_PROXY", "h:1")])),
            Some(("HTTP_PROXY", "h:1".into()))
        );

        let list = resolve_proxy_list(
            &["system".into(), "socks5://x:1".into()],
            env(&[("HTTPS_PROXY", "http://u:p@s:3128/")]),
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].scheme, list[0].host.as_str(), list[0].port),
            (ProxyScheme::Http, "s", 3128)
        );
        assert!(resolve_proxy_list(&["SYSTEM".into()], env(&[]))
            .unwrap()
            .is_empty());
        let err = resolve_proxy_list(
            &["system".into()],
            env(&[("ALL_PROXY", "gopher://u:pw@x:1")]),
        )
        .unwrap_err();
        assert!(
            err.contains("from ALL_PROXY") && !err.contains("pw"),
            "{err}"
        );
    }

    #[test]
    fn a_password_may_hold_hash_slash_and_question_mark() {
        // As typed in UCI or LuCI, not %-escaped: the last '@' ends the userinfo.
        let u = ProxyUrl::parse("socks5://user:se#cret@1.2.3.4:1080").unwrap();
        assert_eq!(
            (u.auth, u.host.as_str(), u.port),
            (auth("user", "se#cret"), "1.2.3.4", 1080)
        );
        let u = ProxyUrl::parse("http://u:a/b?c#d:e@h:1/").unwrap();
        assert_eq!((u.auth, u.host.as_str()), (auth("u", "a/b?c#d:e"), "h"));
        // "://" in a password is no scheme: "u:a" cannot be one.
        let u = ProxyUrl::parse("u:a://b@h:1").unwrap();
        assert_eq!((u.scheme, u.auth), (ProxyScheme::Http, auth("u", "a://b")));
        assert!(ProxyUrl::parse("socks5://u:p%231@h:1").is_ok());
        // After the host, '/', '?' and '#' are still refused, and quoted redacted.
        for (url, why) in [
            ("http://u:hun/ter2@h:1/x", "no path"),
            ("http://u:hun?ter2@h:1?x", "no query"),
            ("http://u:hun#ter2@h:1#x", "no query"),
        ] {
            let err = ProxyUrl::parse(url).unwrap_err();
            assert!(err.contains(why) && !err.contains("hun"), "{err}");
        }
    }

    #[test]
    fn redacts_up_to_the_last_at() {
        assert_eq!(redact("socks5://u:se#cret@h:1"), "socks5://***@h:1");
        assert_eq!(redact("socks5://u:se/cret@h:1"), "socks5://***@h:1");
        assert_eq!(redact("u:se?cret@h:1"), "***@h:1");
        assert_eq!(redact("u:a://b@h:1"), "***@h:1");
    }

    #[test]
    fn a_system_proxy_with_such_a_password_works_and_its_errors_hide_it() {
        let env =
            |value: &'static str| move |k: &str| (k == "ALL_PROXY").then(|| value.to_string());
        let list = resolve_proxy_list(&["system".into()], env("socks5://u:hun/t#r2@h:1")).unwrap();
        assert_eq!(list[0].auth, auth("u", "hun/t#r2"));
        for bad in [
            "socks5://u:hun/t#r2@h:0",
            "socks5://u:hun/t#r2@h:1/x",
            "u:hun/t://r2@",
        ] {
            let err = resolve_proxy_list(&["system".into()], env(bad)).unwrap_err();
            assert!(
                err.contains("(from ALL_PROXY)") && !err.contains("hun"),
                "{err}"
            );
        }
    }
}
