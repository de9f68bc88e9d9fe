//! The connector against real servers on loopback: danted (SOCKS5), tinyproxy (HTTP
//! CONNECT), stunnel4 (TLS pool, https proxy). Needs scripts/test-deps-upstream.sh.

mod upstream_support;

use btcagent::config::Config;
use btcagent::upstream::{ConnectError, Connected, Connector};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use std::time::Duration;
use upstream_support::*;

const SOCKS_USER: &str = "btcagentsocks";
const SOCKS_PASS: &str = "sock-Pass-7Qx";
const HTTP_USER: &str = "minerproxy";
const HTTP_PASS: &str = "http-Pass-3Zk";

fn config(proxies: &[String], edit: impl FnOnce(&mut Config)) -> Config {
    let mut cfg = Config {
        proxy: proxies.to_vec(),
        direct_connect_after_proxy: false,
        ..Config::default()
    };
    cfg.advanced.pool_connection_dial_timeout = Duration::from_secs(10);
    edit(&mut cfg);
    cfg
}

/// A connector whose environment is exactly `env` (the test machine's own proxy
/// variables must not leak in).
fn connector_with_env(cfg: &Config, env: &[(&str, String)]) -> Connector {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Connector::from_config_with_env(cfg, move |name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .unwrap()
}

fn connect(cfg: &Config, host: &str, port: u16) -> Result<Connected, ConnectError> {
    init_logging();
    smol::block_on(connector_with_env(cfg, &[]).connect(host, port))
}

/// Bytes flow both ways after the connection test: the pool's greeting (possibly in
/// `leftover`) then the echo of a line we send.
fn assert_flows(mut connected: Connected) {
    smol::block_on(async {
        let mut received = connected.leftover.clone();
        connected.stream.write_all(b"ping\n").await.unwrap();
        connected.stream.flush().await.unwrap();
        let expect = format!("{POOL_GREETING}echo:ping\n");
        let read_all = async {
            let mut chunk = [0u8; 1024];
            while received.len() < expect.len() {
                let n = connected.stream.read(&mut chunk).await.unwrap();
                assert!(
                    n > 0,
                    "stream closed after {:?}",
                    String::from_utf8_lossy(&received)
                );
                received.extend_from_slice(&chunk[..n]);
            }
        };
        smol::future::or(read_all, async {
            smol::Timer::after(Duration::from_secs(10)).await;
            panic!("no echo within 10 s");
        })
        .await;
        assert_eq!(String::from_utf8_lossy(&received), expect);
    });
}

/// As root: a system user for dante's `username` method (it checks the shadow file).
fn ensure_socks_user() -> bool {
    let sh = |script: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let ok = sh(&format!(
        "id -u {SOCKS_USER} >/dev/null 2>&1 || useradd -M -N -s /usr/sbin/nologin {SOCKS_USER} && \
         echo '{SOCKS_USER}:{SOCKS_PASS}' | chpasswd"
    ));
    if !ok {
        eprintln!("SKIP: cannot create system user {SOCKS_USER} for dante (needs root)");
    }
    ok
}

#[test]
fn direct_connection_test_and_flow() {
    let pool = FakePool::start();
    let connected = connect(&config(&[], |_| {}), "127.0.0.1", pool.port).unwrap();
    assert_eq!(connected.route, "direct");
    assert_flows(connected);
}

#[test]
fn socks5_without_auth() {
    if !have("danted") {
        return;
    }
    let dir = TempDir::new("socks");
    let pool = FakePool::start();
    let port = free_port();
    let _dante = danted(&dir, port, false);
    let connected = connect(
        &config(&[format!("socks5://127.0.0.1:{port}")], |_| {}),
        "127.0.0.1",
        pool.port,
    )
    .unwrap();
    assert_eq!(connected.route, format!("socks5 127.0.0.1:{port}"));
    assert_flows(connected);
}

#[test]
fn socks5_user_auth_and_wrong_password() {
    if !have("danted") || !ensure_socks_user() {
        return;
    }
    let dir = TempDir::new("socksauth");
    let pool = FakePool::start();
    let port = free_port();
    let _dante = danted(&dir, port, true);
    let good = format!("socks5://{SOCKS_USER}:{SOCKS_PASS}@127.0.0.1:{port}");
    let connected = connect(&config(&[good], |_| {}), "127.0.0.1", pool.port).unwrap();
    assert_eq!(connected.route, format!("socks5 127.0.0.1:{port}"));
    assert_flows(connected);

    let bad = format!("socks5://{SOCKS_USER}:wrong-Secret-1@127.0.0.1:{port}");
    let err = connect(&config(&[bad], |_| {}), "127.0.0.1", pool.port)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!("cannot reach pool 127.0.0.1:{}: socks5 127.0.0.1:{port}: auth failed: proxy rejected user name/password", pool.port)
    );
    let none = format!("socks5://127.0.0.1:{port}");
    let err = connect(&config(&[none], |_| {}), "127.0.0.1", pool.port)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("auth failed: proxy requires a user name/password"),
        "{err}"
    );
    assert_no_secret_logged("wrong-Secret-1");
    assert_no_secret_logged(SOCKS_PASS);
}

#[test]
fn http_connect_with_basic_auth_and_wrong_password() {
    if !have("tinyproxy") {
        return;
    }
    let dir = TempDir::new("http");
    let pool = FakePool::start();
    let port = free_port();
    let _tiny = tinyproxy(&dir, port, Some((HTTP_USER, HTTP_PASS)));
    // No scheme means http.
    let good = format!("{HTTP_USER}:{HTTP_PASS}@127.0.0.1:{port}");
    let connected = connect(&config(&[good], |_| {}), "127.0.0.1", pool.port).unwrap();
    assert_eq!(connected.route, format!("http 127.0.0.1:{port}"));
    assert_flows(connected);

    let bad = format!("http://{HTTP_USER}:wrong-Secret-2@127.0.0.1:{port}");
    let err = connect(&config(&[bad], |_| {}), "127.0.0.1", pool.port)
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with(&format!("cannot reach pool 127.0.0.1:{}: http 127.0.0.1:{port}: auth failed: proxy said HTTP 40", pool.port)), "{err}");
    assert!(
        !err.contains("wrong-Secret-2") && !err.contains(HTTP_USER),
        "{err}"
    );
    assert_no_secret_logged("wrong-Secret-2");
    assert_no_secret_logged(HTTP_PASS);
}

#[cfg(feature = "tls")]
#[test]
fn https_proxy_tls_then_connect() {
    if !have("tinyproxy") || !have("stunnel4") || !have("openssl") {
        return;
    }
    let dir = TempDir::new("https");
    let pki = make_pki(&dir);
    let pool = FakePool::start();
    let (proxy_port, tls_port) = (free_port(), free_port());
    let _tiny = tinyproxy(&dir, proxy_port, Some((HTTP_USER, HTTP_PASS)));
    let _stunnel = stunnel(&dir, tls_port, proxy_port, &pki.good.0, &pki.good.1);
    let url = vec![format!(
        "https://{HTTP_USER}:{HTTP_PASS}@127.0.0.1:{tls_port}"
    )];

    let connected = connect(&config(&url, |_| {}), "127.0.0.1", pool.port).unwrap();
    assert_eq!(connected.route, format!("https 127.0.0.1:{tls_port}"));
    assert_flows(connected);

    // Verified against the test CA given by SSL_CERT_FILE.
    let cfg = config(&url, |c| c.advanced.tls_skip_certificate_verify = false);
    let ca = pki.ca.display().to_string();
    let connected = smol::block_on(
        connector_with_env(&cfg, &[("SSL_CERT_FILE", ca)]).connect("127.0.0.1", pool.port),
    );
    assert_flows(connected.unwrap());
    // ...and refused against the system roots.
    let err = connect(&cfg, "127.0.0.1", pool.port)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("certificate error") && err.contains("proxy's certificate"),
        "{err}"
    );
    assert_no_secret_logged(HTTP_PASS);
}

#[test]
fn dead_proxy_among_three_does_not_stop_the_connection() {
    if !have("danted") || !have("tinyproxy") {
        return;
    }
    let dir = TempDir::new("three");
    let pool = FakePool::start();
    let (dead, socks, http) = (dead_port(), free_port(), free_port());
    let dead = dead.port;
    let _dante = danted(&dir, socks, false);
    let _tiny = tinyproxy(&dir, http, None);
    let proxies = vec![
        format!("socks5://127.0.0.1:{dead}"),
        format!("http://127.0.0.1:{http}"),
        format!("socks5://127.0.0.1:{socks}"),
    ];
    let connected = connect(&config(&proxies, |_| {}), "127.0.0.1", pool.port).unwrap();
    assert!(
        [
            format!("http 127.0.0.1:{http}"),
            format!("socks5 127.0.0.1:{socks}")
        ]
        .contains(&connected.route),
        "{}",
        connected.route
    );
    assert_flows(connected);
}

#[test]
fn all_proxies_dead_then_direct_or_one_line_error() {
    let pool = FakePool::start();
    let (dead1, dead2) = (dead_port(), dead_port());
    let (dead1, dead2) = (dead1.port, dead2.port);
    let proxies = vec![
        format!("socks5://u:hunter2@127.0.0.1:{dead1}"),
        format!("127.0.0.1:{dead2}"),
    ];
    let err = connect(&config(&proxies, |_| {}), "127.0.0.1", pool.port)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!(
            "cannot reach pool 127.0.0.1:{}: socks5 127.0.0.1:{dead1}: connection refused; \
             http 127.0.0.1:{dead2}: connection refused",
            pool.port
        )
    );
    let connected = connect(
        &config(&proxies, |c| c.direct_connect_after_proxy = true),
        "127.0.0.1",
        pool.port,
    )
    .unwrap();
    assert_eq!(connected.route, "direct");
    assert_flows(connected);
    // Raced alongside the proxies too.
    let connected = connect(
        &config(&proxies, |c| c.direct_connect_with_proxy = true),
        "127.0.0.1",
        pool.port,
    )
    .unwrap();
    assert_eq!(connected.route, "direct");
    // use_proxy false ignores the list.
    let connected = connect(
        &config(&proxies, |c| c.use_proxy = false),
        "127.0.0.1",
        pool.port,
    )
    .unwrap();
    assert_eq!(connected.route, "direct");
    assert_no_secret_logged("hunter2");
}

#[test]
fn system_proxy_from_environment() {
    if !have("danted") {
        return;
    }
    init_logging();
    let dir = TempDir::new("system");
    let pool = FakePool::start();
    let port = free_port();
    let _dante = danted(&dir, port, false);
    let cfg = config(&["system".to_string()], |_| {});
    let env = [
        ("https_proxy", "http://127.0.0.1:1".to_string()),
        ("ALL_PROXY", format!("socks5://127.0.0.1:{port}")),
    ];
    let connected =
        smol::block_on(connector_with_env(&cfg, &env).connect("127.0.0.1", pool.port)).unwrap();
    assert_eq!(connected.route, format!("socks5 127.0.0.1:{port}"));
    assert_flows(connected);
}

#[cfg(feature = "tls")]
#[test]
fn tls_pool_certificate_checks() {
    if !have("stunnel4") || !have("openssl") || !have("danted") {
        return;
    }
    init_logging();
    let dir = TempDir::new("tls");
    let pki = make_pki(&dir);
    let pool = FakePool::start();
    let (good, wrong, selfs, socks) = (free_port(), free_port(), free_port(), free_port());
    let _s1 = stunnel(&dir, good, pool.port, &pki.good.0, &pki.good.1);
    let _s2 = stunnel(&dir, wrong, pool.port, &pki.wrong_name.0, &pki.wrong_name.1);
    let _s3 = stunnel(
        &dir,
        selfs,
        pool.port,
        &pki.self_signed.0,
        &pki.self_signed.1,
    );
    let _dante = danted(&dir, socks, false);
    let ca = [("SSL_CERT_FILE", pki.ca.display().to_string())];
    let skip = config(&[], |c| c.pool_use_tls = true);
    let verify = config(&[], |c| {
        c.pool_use_tls = true;
        c.advanced.tls_skip_certificate_verify = false;
    });
    let run = |cfg: &Config, env: &[(&str, String)], host: &str, port: u16| {
        smol::block_on(connector_with_env(cfg, env).connect(host, port))
    };

    // Skip-verify (the default) takes any certificate.
    for port in [good, wrong, selfs] {
        assert_flows(run(&skip, &[], "localhost", port).unwrap());
    }
    // Verified: CA from SSL_CERT_FILE, name localhost or IP.
    assert_flows(run(&verify, &ca, "localhost", good).unwrap());
    assert_flows(run(&verify, &ca, "127.0.0.1", good).unwrap());
    // System roots do not know the test CA.
    let err = run(&verify, &[], "localhost", good)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("direct: certificate error: UnknownIssuer"),
        "{err}"
    );
    // Wrong name, self-signed: refused even with the CA.
    let err = run(&verify, &ca, "localhost", wrong)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("certificate error: certificate not valid for name \"localhost\""),
        "{err}"
    );
    let err = run(&verify, &ca, "localhost", selfs)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("certificate error"), "{err}");
    // TLS to the pool inside a SOCKS5 tunnel.
    let via_socks = config(&[format!("socks5://127.0.0.1:{socks}")], |c| {
        c.pool_use_tls = true;
        c.advanced.tls_skip_certificate_verify = false;
    });
    let connected = run(&via_socks, &ca, "127.0.0.1", good).unwrap();
    assert_eq!(connected.route, format!("socks5 127.0.0.1:{socks}"));
    assert_flows(connected);
}

#[test]
fn silent_proxy_times_out_within_the_dial_timeout() {
    // Accepts TCP but never answers the SOCKS5 greeting.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let pool = FakePool::start();
    let cfg = config(&[format!("socks5://127.0.0.1:{port}")], |c| {
        c.advanced.pool_connection_dial_timeout = Duration::from_secs(1)
    });
    let started = std::time::Instant::now();
    let err = connect(&cfg, "127.0.0.1", pool.port)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!(
            "cannot reach pool 127.0.0.1:{}: socks5 127.0.0.1:{port}: timeout",
            pool.port
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}
