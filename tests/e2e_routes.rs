//! Shares from miners reach the pool simulator through every upstream route, with the
//! real servers: dante (SOCKS5), tinyproxy (HTTP CONNECT), stunnel (TLS to the pool and
//! to an https proxy). Installed by scripts/test-deps-upstream.sh.

mod common;
mod upstream_support;

use common::*;
use serde_json::{json, Value};
use upstream_support::{danted, dead_port, free_port, make_pki, stunnel, tinyproxy};

const SOCKS_USER: &str = "btcagentsocks";
const SOCKS_PASS: &str = "sock-Pass-7Qx";
const HTTP_USER: &str = "minerproxy";
const HTTP_PASS: &str = "http-Pass-3Zk";

fn socks_user() {
    let script = format!(
        "id -u {SOCKS_USER} >/dev/null 2>&1 || useradd -M -N -s /usr/sbin/nologin {SOCKS_USER} && \
         echo '{SOCKS_USER}:{SOCKS_PASS}' | chpasswd"
    );
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "creating the SOCKS5 test user needs root");
}

/// One miner logs in through the agent and its share must validate at the pool.
fn mine_through(agent: &AgentProc, pool: &btcagent_sim::pool::PoolSim) {
    block_on(async {
        let mut m = Miner::login(agent, "farm1.w1", false).await;
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
    });
    wait_pool(pool, agent, "the share validated at the pool", |s| {
        s.totals.valid == 1
    });
    assert_clean(pool);
}

fn agent_via(pool_port: u16, extra: Value) -> Value {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{pool_port}").parse().unwrap();
    config_for(&[addr], extra)
}

#[test]
fn through_socks5_with_password() {
    socks_user();
    let dir = upstream_support::TempDir::new("route-socks");
    let port = free_port();
    let _dante = danted(&dir, port, true);
    let pool = pool();
    let proxy = format!("socks5://{SOCKS_USER}:{SOCKS_PASS}@127.0.0.1:{port}");
    let agent = AgentProc::start(agent_via(
        pool.addr().port(),
        json!({"proxy": [proxy], "direct_connect_after_proxy": false}),
    ));
    mine_through(&agent, &pool);
    assert!(
        agent.log().contains(&format!("socks5 127.0.0.1:{port}")),
        "{}",
        agent.log()
    );
    assert!(
        !agent.log().contains(SOCKS_PASS),
        "credentials never logged"
    );
}

#[test]
fn through_http_connect_with_basic_auth_and_a_dead_proxy_in_the_list() {
    let dir = upstream_support::TempDir::new("route-http");
    let port = free_port();
    let _tiny = tinyproxy(&dir, port, Some((HTTP_USER, HTTP_PASS)));
    let (dead, dead_too) = (dead_port(), dead_port());
    let pool = pool();
    let proxies = json!([
        format!("socks5://127.0.0.1:{}", dead.port),
        format!("http://{HTTP_USER}:{HTTP_PASS}@127.0.0.1:{port}"),
        format!("127.0.0.1:{}", dead_too.port),
    ]);
    let agent = AgentProc::start(agent_via(
        pool.addr().port(),
        json!({"proxy": proxies, "direct_connect_after_proxy": false}),
    ));
    mine_through(&agent, &pool);
    assert!(!agent.log().contains(HTTP_PASS), "credentials never logged");
}

#[test]
fn over_tls_to_the_pool_verified_against_a_given_ca() {
    let dir = upstream_support::TempDir::new("route-tls");
    let pki = make_pki(&dir);
    let pool = pool();
    let tls_port = free_port();
    let _tunnel = stunnel(&dir, tls_port, pool.addr().port(), &pki.good.0, &pki.good.1);
    let ca = pki.ca.display().to_string();
    let conf = agent_via(
        tls_port,
        json!({"pool_use_tls": true, "advanced": {"tls_skip_certificate_verify": false}}),
    );
    let mut conf = conf;
    conf["pools"][0][0] = json!("localhost");
    let agent = AgentProc::start_with_env(conf, &[], &[("SSL_CERT_FILE", &ca)]);
    mine_through(&agent, &pool);
}

#[test]
fn a_wrong_certificate_is_refused_unless_verification_is_skipped() {
    let dir = upstream_support::TempDir::new("route-badcert");
    let pki = make_pki(&dir);
    let pool = pool();
    let tls_port = free_port();
    let _tunnel = stunnel(
        &dir,
        tls_port,
        pool.addr().port(),
        &pki.self_signed.0,
        &pki.self_signed.1,
    );
    let mut strict = agent_via(
        tls_port,
        json!({"multi_user_mode": false, "pool_use_tls": true, "advanced": {"tls_skip_certificate_verify": false}}),
    );
    strict["pools"][0][0] = json!("localhost");
    let agent = AgentProc::start(strict.clone());
    assert!(
        agent.wait_log("certificate", T),
        "a certificate error is named:\n{}",
        agent.log()
    );
    assert_eq!(pool.stats().registered_sessions(), 0);
    assert_eq!(
        pool.stats().open_count(),
        0,
        "no session through an unverified tunnel"
    );
    drop(agent);
    let mut lax = strict;
    lax["advanced"]["tls_skip_certificate_verify"] = json!(true);
    lax["multi_user_mode"] = json!(true);
    let agent = AgentProc::start(lax);
    mine_through(&agent, &pool);
}

#[test]
fn through_an_https_proxy() {
    let dir = upstream_support::TempDir::new("route-https");
    let pki = make_pki(&dir);
    let tiny_port = free_port();
    let _tiny = tinyproxy(&dir, tiny_port, None);
    let tls_port = free_port();
    let _tunnel = stunnel(&dir, tls_port, tiny_port, &pki.good.0, &pki.good.1);
    let pool = pool();
    let agent = AgentProc::start(agent_via(
        pool.addr().port(),
        json!({"proxy": [format!("https://127.0.0.1:{tls_port}")], "direct_connect_after_proxy": false}),
    ));
    mine_through(&agent, &pool);
}

/// A plain Stratum pool (as ckpool behaves: a first method it does not know closes the
/// connection) reached through SOCKS5, with a dead proxy racing it: the route test is
/// the session's own `mining.configure`, and its answer reaches the session.
#[test]
fn a_stratum_pool_through_socks5_beside_a_dead_proxy() {
    use btcagent_sim::stratum_pool::{StratumPool, StratumPoolConfig};
    socks_user();
    let dir = upstream_support::TempDir::new("route-stratum-socks");
    let port = free_port();
    let _dante = danted(&dir, port, true);
    let dead = dead_port();
    let pool = StratumPool::start(StratumPoolConfig::ckpool()).unwrap();
    let mut conf = agent_via(
        pool.addr().port(),
        json!({"proxy": [
            format!("socks5://127.0.0.1:{}", dead.port),
            format!("socks5://{SOCKS_USER}:{SOCKS_PASS}@127.0.0.1:{port}"),
        ], "direct_connect_after_proxy": false}),
    );
    conf["pools"] = json!([{"protocol": "stratum", "host": "127.0.0.1",
        "port": pool.addr().port(), "user": "{sub}.farm1"}]);
    let agent = AgentProc::start(conf);
    block_on(async {
        let mut m = Miner::login(&agent, "acct.w1", true).await;
        assert_eq!(m.submit_share(0, 0x2000).await["result"], json!(true));
    });
    assert!(
        pool.wait_until(T, |s| s.worker("acct.farm1").valid == 1),
        "{}\n{}",
        pool.stats().summary(),
        agent.log()
    );
    assert_eq!(pool.stats().totals.total(), 1);
    assert!(
        agent.log().contains(&format!("socks5 127.0.0.1:{port}")),
        "{}",
        agent.log()
    );
}

/// A plain Stratum pool over TLS (stunnel in front of it), the certificate verified.
#[test]
fn a_stratum_pool_over_tls() {
    use btcagent_sim::stratum_pool::{StratumPool, StratumPoolConfig};
    let dir = upstream_support::TempDir::new("route-stratum-tls");
    let pki = make_pki(&dir);
    let pool = StratumPool::start(StratumPoolConfig::default()).unwrap();
    let tls_port = free_port();
    let _tunnel = stunnel(&dir, tls_port, pool.addr().port(), &pki.good.0, &pki.good.1);
    let ca = pki.ca.display().to_string();
    let mut conf = agent_via(
        tls_port,
        json!({"multi_user_mode": false, "pool_use_tls": true,
               "advanced": {"tls_skip_certificate_verify": false}}),
    );
    conf["pools"] = json!([{"protocol": "stratum", "host": "localhost",
        "port": tls_port, "user": "acct.tls"}]);
    let agent = AgentProc::start_with_env(conf, &[], &[("SSL_CERT_FILE", &ca)]);
    block_on(async {
        let mut m = Miner::login(&agent, "w1", false).await;
        assert_eq!(m.submit_share(0, 0).await["result"], json!(true));
    });
    assert!(
        pool.wait_until(T, |s| s.worker("acct.tls").valid == 1),
        "{}\n{}",
        pool.stats().summary(),
        agent.log()
    );
}
