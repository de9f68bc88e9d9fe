//! No proxy password reaches a message, whatever the URL around it: for many generated
//! proxy URLs (passwords holding '#', '/', '?', '@', ':', "://", %-escapes, spaces, bad
//! hosts and ports after them), every text the agent could print about them is checked:
//! parse errors, config errors and warnings (JSON and UCI), the connector's errors and
//! its log lines for a `system` proxy from the environment, Display and Debug.
//!
//! Passwords are built from characters that nothing else in an input or a message
//! holds (`Q`, `Z`, `W`, `ж`), so any piece of one that leaks is seen.

mod upstream_support;

use btcagent::config::Config;
use btcagent::upstream::{redact, Connector, ProxyUrl};
use upstream_support::{init_logging, logs};

const RUNS: usize = 10_000;
const SECRET_CHARS: [char; 4] = ['Q', 'Z', 'W', 'ж'];

/// Seeded xorshift: the same inputs every run, so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn password(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "Q", "Z", "W", "ж", "QZ", "#", "/", "?", "@", ":", "://", "%", "%23", "%2", "%zz", "[",
        "]", ".", " ", "\t", "\n", "'", "\"", "WQ@", "Z/",
    ];
    let mut p = String::new();
    // At least one secret character, so there is something to leak.
    p.push(SECRET_CHARS[(rng.next() % 4) as usize]);
    for _ in 0..rng.next() % 6 {
        p.push_str(rng.pick(PIECES));
    }
    if rng.next() % 2 == 0 {
        p = p.chars().rev().collect();
    }
    p
}

fn url(rng: &mut Rng) -> (String, String) {
    let scheme = rng.pick(&[
        "",
        "socks5://",
        "socks5h://",
        "http://",
        "https://",
        "HTTP://",
        "gopher://",
        "x y://",
        "://",
    ]);
    let user = rng.pick(&["u", "alice", "a.b-c_d", "%41", "", "u%zz"]);
    let pass = password(rng);
    let host = rng.pick(&[
        "h",
        "1.2.3.4",
        "proxy.lan",
        "[::1]",
        "[fe80::1]",
        "",
        "[bad",
        "[::1]x",
        "h h",
        "::1",
        "h%",
    ]);
    let port = rng.pick(&["", ":1080", ":0", ":99999", ":x", ":", ":1:2"]);
    let tail = rng.pick(&["", "/", "/path", "?q", "#f", "/a@b", "//", " "]);
    // Without ':' the "password" is part of the user name, hidden all the same; but
    // `uQ://@h` with no scheme before it is a scheme, not a user name.
    let sep = match (rng.pick(&[":", ":", ":", ""]), scheme, user) {
        ("", "", _) | ("", _, "") => ":",
        (sep, ..) => sep,
    };
    (
        format!("{scheme}{user}{sep}{pass}@{host}{port}{tail}"),
        pass,
    )
}

fn assert_hidden(input: &str, pass: &str, what: &str, text: &str) {
    let leaked = text.contains(SECRET_CHARS) || (pass.chars().count() >= 3 && text.contains(pass));
    assert!(
        !leaked,
        "password {pass:?} of {input:?} leaked into {what}: {text}"
    );
}

fn json_with_proxy(url: &str) -> String {
    let proxy = serde_json::Value::String(url.to_string());
    format!(r#"{{"pools": [["pool.example", 1800, "sub"]], "proxy": [{proxy}]}}"#)
}

#[test]
fn no_message_holds_a_proxy_password() {
    init_logging();
    let system = Config::from_json_str(&json_with_proxy("system")).unwrap().0;

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for _ in 0..RUNS {
        let (input, pass) = url(&mut rng);
        let check = |what: &str, text: &str| assert_hidden(&input, &pass, what, text);

        check("redact", &redact(&input));
        match ProxyUrl::parse(&input) {
            Ok(p) => {
                parsed += 1;
                check("Display", &p.to_string());
                check("Debug", &format!("{p:?}"));
            }
            Err(e) => check("parse error", &e),
        }

        match Config::from_json_str(&json_with_proxy(&input)) {
            Ok((_, warnings)) => warnings.iter().for_each(|w| check("config warning", w)),
            Err(e) => {
                check("config error", &e.to_string());
                check("config error Debug", &format!("{e:?}"));
            }
        }

        let uci = format!(
            "config btcagent 'main'\n\tlist proxy '{}'\nconfig pool\n\toption host 'h'\n\toption port '1'\n",
            input.replace('\'', "'\\''")
        );
        match btcagent::uci::uci_to_json(&uci) {
            Ok(json) => match Config::from_json_str(&json.to_string()) {
                Ok((_, warnings)) => warnings.iter().for_each(|w| check("UCI warning", w)),
                Err(e) => check("UCI config error", &e.to_string()),
            },
            Err(e) => check("UCI error", &e),
        }

        for var in ["ALL_PROXY", "https_proxy", "HTTP_PROXY"] {
            let env = |name: &str| (name == var).then(|| input.clone());
            if let Err(e) = Connector::from_config_with_env(&system, env) {
                check("connector error", &e);
            }
        }
        for line in logs().lock().unwrap().drain(..) {
            check("log line", &line);
        }
    }
    // The generator reaches both sides.
    assert!(
        parsed > RUNS / 20 && parsed < RUNS / 2,
        "{parsed} of {RUNS} parsed"
    );
}
