//! The miner swarm against a minimal in-test Stratum server that hands out pool jobs
//! the way the agent does (pool extranonce1 appended to coinb1, extranonce1 "0000SSSS",
//! extranonce2 size 4) and judges every submit with the pool simulator's checker.

use btcagent_sim::bitcoin::{parse_hex_u32, target_for_difficulty};
use btcagent_sim::exmsg::{self, Submit};
use btcagent_sim::job::Job;
use btcagent_sim::miner::{MinerSwarm, MinerSwarmConfig};
use btcagent_sim::now_us;
use btcagent_sim::share::{check_submit, Verdict};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const POOL_EX1: [u8; 4] = [0x51, 0, 0, 1];
const MASK: u32 = 0x1fffe000;

#[derive(Default)]
struct Seen {
    valid: u64,
    invalid: u64,
    six_params: u64,
    rolled: u64,
    names: Vec<String>,
}

fn serve_miner(stream: TcpStream, session: u16, seen: Arc<Mutex<Seen>>) {
    let mut writer = stream.try_clone().unwrap();
    let job = Job::build(9, session as u64, now_us(), true, 3);
    let mut miner_job = job.clone();
    miner_job.work.coinb1.extend_from_slice(&POOL_EX1);
    let difficulty = 2f64.powi(-24);
    let mut send = |v: Value| writeln!(writer, "{v}").unwrap();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let request: Value = serde_json::from_str(&line).unwrap();
        let id = request["id"].clone();
        let params = &request["params"];
        match request["method"].as_str().unwrap() {
            "mining.subscribe" => send(json!({"id": id, "error": null, "result":
                [[["mining.notify", "x"]], format!("{:08x}", session), 4]})),
            "mining.configure" => {
                send(
                    json!({"id": id, "error": null, "result": {"version-rolling": true, "version-rolling.mask": "1fffe000"}}),
                );
                send(
                    json!({"id": null, "method": "mining.set_version_mask", "params": ["1fffe000"]}),
                );
            }
            "mining.authorize" => {
                seen.lock()
                    .unwrap()
                    .names
                    .push(params[0].as_str().unwrap().to_string());
                send(json!({"id": id, "error": null, "result": true}));
                send(
                    json!({"id": null, "method": "mining.set_difficulty", "params": [difficulty]}),
                );
                let notify: Value = serde_json::from_str(&miner_job.notify_line()).unwrap();
                send(notify);
            }
            "mining.submit" => {
                let p = params.as_array().unwrap();
                let version_mask = p
                    .get(5)
                    .map(|m| parse_hex_u32(m.as_str().unwrap()).unwrap());
                let submit = Submit {
                    cmd: exmsg::CMD_SUBMIT_SHARE_WITH_TIME_VER,
                    job_id: p[1].as_str().unwrap().parse().unwrap(),
                    session_id: session,
                    extranonce2: parse_hex_u32(p[2].as_str().unwrap()).unwrap(),
                    nonce: parse_hex_u32(p[4].as_str().unwrap()).unwrap(),
                    ntime: Some(parse_hex_u32(p[3].as_str().unwrap()).unwrap()),
                    version_mask,
                };
                let target = target_for_difficulty(difficulty);
                let verdict = check_submit(&job.work, &POOL_EX1, &submit, MASK, &target);
                let mut s = seen.lock().unwrap();
                s.six_params += (p.len() == 6) as u64;
                s.rolled += version_mask.is_some_and(|m| m != 0) as u64;
                if verdict == Verdict::Valid {
                    s.valid += 1;
                    send(json!({"id": id, "error": null, "result": true}));
                } else {
                    s.invalid += 1;
                    send(json!({"id": id, "error": [23, "Low difficulty", null], "result": null}));
                }
            }
            other => panic!("unexpected method {other}"),
        }
    }
}

#[test]
fn swarm_mines_shares_the_pool_checker_accepts() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sessions = Arc::new(AtomicU32::new(1));
    let server_seen = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let session = sessions.fetch_add(1, Ordering::Relaxed) as u16;
            let seen = server_seen.clone();
            std::thread::spawn(move || serve_miner(stream.unwrap(), session, seen));
        }
    });

    let mut config = MinerSwarmConfig::new(addr, 4);
    config.version_rolling_fraction = 0.5;
    config.shares_per_miner = Some(5);
    config.subaccounts = vec!["alice".into(), "bob".into()];
    let swarm = MinerSwarm::start(config).unwrap();
    assert!(swarm.wait_until(Duration::from_secs(20), |s| s.accepted + s.rejected == 20));
    let stats = swarm.stats();
    assert_eq!(
        (stats.accepted, stats.rejected, stats.gave_up),
        (20, 0, 0),
        "{}",
        stats.summary()
    );
    assert_eq!(stats.connected, 4);
    assert_eq!(stats.authorized, 4);
    assert_eq!(stats.jobs_received, 4);
    assert_eq!(stats.job_latency.count(), 4);
    assert!(stats.job_latency.max_us() < 10_000_000);
    assert_eq!(stats.response_latency.count(), 20);
    assert_eq!(stats.last_version_mask, Some(MASK));
    assert_eq!(stats.last_difficulty, Some(2f64.powi(-24)));
    assert!(stats
        .miners
        .iter()
        .all(|m| m.accepted == 5 && m.extranonce1.len() == 8));
    let s = seen.lock().unwrap();
    assert_eq!((s.valid, s.invalid), (20, 0));
    // Half the miners roll versions: six parameters, and some flipped bits.
    assert_eq!(s.six_params, 10);
    assert!(s.rolled > 0);
    let mut names = s.names.clone();
    names.sort();
    assert_eq!(names, ["alice.w0", "alice.w2", "bob.w1", "bob.w3"]);
    drop(s);
    swarm.stop();
}

#[test]
fn names_and_rolling_fraction() {
    let addr = "127.0.0.1:1".parse().unwrap();
    let mut config = MinerSwarmConfig::new(addr, 10);
    config.version_rolling_fraction = 0.3;
    assert_eq!((0..10).filter(|&i| config.rolls_versions(i)).count(), 3);
    config.user_pattern = "farm.{i}".into();
    assert_eq!(config.user_name(7), "farm.7");
    config.user_names = vec!["a".into(), "b".into()];
    assert_eq!(config.user_name(3), "b");
}
