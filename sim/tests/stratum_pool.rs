//! The plain-Stratum pool simulator over real loopback TCP: scripted clients that
//! really mine (every share is found by hashing, and judged by the pool by hashing),
//! and a swarm of simulated miners straight against it. Every wait is for a
//! condition or a message, never a sleep.

use btcagent_sim::bitcoin::{hex_decode, hex_encode, target_for_difficulty};
use btcagent_sim::conn::MinerConn;
use btcagent_sim::job::Job;
use btcagent_sim::miner::{MinerSwarm, MinerSwarmConfig};
use btcagent_sim::share::search_nonce;
use btcagent_sim::stratum_pool::{
    ConfigureAnswer, PoolVardiff, StratumPool, StratumPoolConfig, StratumShareCounts,
};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);
/// 2^-20: a share in about 4096 hashes.
const DIFF_2_20: &str = "0.00000095367431640625";

fn pool(config: StratumPoolConfig) -> StratumPool {
    StratumPool::start(StratumPoolConfig {
        start_difficulty: DIFF_2_20.into(),
        ..config
    })
    .unwrap()
}

/// A client's view of its subscription.
struct Client {
    conn: MinerConn,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
}

async fn subscribe(pool: &StratumPool, user: &str) -> Client {
    let mut conn = MinerConn::connect(pool.addr()).await.unwrap();
    let sub = conn.subscribe_and_authorize(user, "x", T).await.unwrap();
    Client {
        conn,
        extranonce1: hex_decode(&sub.extranonce1).unwrap(),
        extranonce2_size: sub.extranonce2_size as usize,
    }
}

async fn next_job(client: &mut Client) -> Job {
    let notify = client.conn.read_method("mining.notify", T).await.unwrap();
    Job::from_notify_params(&notify["params"]).unwrap()
}

/// `n` as the client's extranonce2 (big-endian, zero-padded to its size).
fn extranonce2(client: &Client, n: u64) -> Vec<u8> {
    let mut out = vec![0u8; client.extranonce2_size];
    let k = out.len().min(8);
    out[..k].copy_from_slice(&n.to_be_bytes()[8 - k..]);
    out
}

/// The first nonce from `start` whose header meets (`meets`) or misses the target.
fn find_nonce(job: &Job, ex1: &[u8], ex2: &[u8], bits: u32, difficulty: f64, meets: bool) -> u32 {
    let root = job.work.merkle_root(&[ex1, ex2]);
    let target = target_for_difficulty(difficulty);
    if meets {
        return search_nonce(&job.work, &root, bits, job.work.ntime, &target, 0, u32::MAX).unwrap();
    }
    (0..u32::MAX)
        .find(|&n| search_nonce(&job.work, &root, bits, job.work.ntime, &target, n, 1).is_none())
        .unwrap()
}

async fn submit(
    client: &mut Client,
    user: &str,
    job: &Job,
    ex2: &[u8],
    nonce: u32,
    bits: Option<u32>,
) -> Value {
    let mut params = vec![
        json!(user),
        json!(job.id),
        json!(hex_encode(ex2)),
        json!(format!("{:08x}", job.work.ntime)),
        json!(format!("{nonce:08x}")),
    ];
    if let Some(bits) = bits {
        params.push(json!(format!("{bits:08x}")));
    }
    let id = client
        .conn
        .request("mining.submit", json!(params))
        .await
        .unwrap();
    client.conn.read_response(id, T).await.unwrap()
}

fn rejected(answer: &Value, code: i64, reason: &str) {
    assert_eq!(answer["result"], Value::Null, "{answer}");
    assert_eq!(answer["error"], json!([code, reason, null]), "{answer}");
}

#[test]
fn shares_are_judged_by_hashing_them() {
    let pool = pool(StratumPoolConfig::default());
    smol::block_on(async {
        let mut c = subscribe(&pool, "acct.farm").await;
        assert_eq!(c.extranonce1.len(), 4);
        assert_eq!(c.extranonce2_size, 8);
        let diff = c
            .conn
            .read_method("mining.set_difficulty", T)
            .await
            .unwrap();
        assert_eq!(diff["params"][0].as_f64(), Some(2f64.powi(-20)));
        let job = next_job(&mut c).await;
        assert_eq!(job.id.len(), 16, "ckpool-style job ids");
        let d = 2f64.powi(-20);
        let ex1 = c.extranonce1.clone();
        let ex2 = extranonce2(&c, 1);
        let good = find_nonce(&job, &ex1, &ex2, 0, d, true);
        let answer = submit(&mut c, "acct.farm", &job, &ex2, good, None).await;
        assert_eq!(answer["result"], json!(true), "{answer}");
        assert_eq!(answer["error"], Value::Null);
        rejected(
            &submit(&mut c, "acct.farm", &job, &ex2, good, None).await,
            22,
            "Duplicate",
        );
        let bad = find_nonce(&job, &ex1, &ex2, 0, d, false);
        rejected(
            &submit(&mut c, "acct.farm", &job, &ex2, bad, None).await,
            23,
            "Above target",
        );
        rejected(
            &submit(&mut c, "acct.other", &job, &ex2, good, None).await,
            24,
            "Worker mismatch",
        );
        rejected(
            &submit(&mut c, "acct.farm", &job, &ex2[..4], good, None).await,
            20,
            "Invalid nonce2 length",
        );
        // Version bits without mining.configure are outside the (empty) mask.
        rejected(
            &submit(&mut c, "acct.farm", &job, &ex2, good, Some(0x2000)).await,
            20,
            "Invalid version mask",
        );
        let mut unknown = job.clone();
        unknown.id = "ffffffffffffffff".into();
        rejected(
            &submit(&mut c, "acct.farm", &unknown, &ex2, good, None).await,
            21,
            "Invalid JobID",
        );
        // A clean job makes the old one stale.
        pool.new_job(true);
        let fresh = next_job(&mut c).await;
        assert!(fresh.clean);
        let ex2b = extranonce2(&c, 2);
        let old = find_nonce(&job, &ex1, &ex2b, 0, d, true);
        rejected(
            &submit(&mut c, "acct.farm", &job, &ex2b, old, None).await,
            21,
            "Stale",
        );
        let n = find_nonce(&fresh, &ex1, &ex2b, 0, d, true);
        assert_eq!(
            submit(&mut c, "acct.farm", &fresh, &ex2b, n, None).await["result"],
            json!(true)
        );
    });
    let stats = pool.stats();
    assert_eq!(
        stats.worker("acct.farm"),
        StratumShareCounts {
            valid: 2,
            invalid: 1,
            stale: 2,
            duplicate: 1,
            refused: 2
        }
    );
    assert_eq!(stats.worker("acct.other").refused, 1);
    let conn = stats.connections.values().next().unwrap();
    assert_eq!(conn.user.as_deref(), Some("acct.farm"));
    assert_eq!(conn.password.as_deref(), Some("x"));
    assert_eq!(conn.rejects.get("Above target"), Some(&1));
    assert!((conn.credited_difficulty - 2.0 * 2f64.powi(-20)).abs() < 1e-12);
    // The eight submits above each waited for its answer: a read each at least.
    assert!(conn.reads >= 8 && conn.bytes_in > 0, "{} reads", conn.reads);
}

#[test]
fn ckpool_quirks() {
    let pool = pool(StratumPoolConfig::ckpool());
    smol::block_on(async {
        let mut conn = MinerConn::connect(pool.addr()).await.unwrap();
        // mining.configure answered with the pool's own mask, whatever was asked.
        let id = conn
            .request(
                "mining.configure",
                json!([["version-rolling"], {"version-rolling.mask": "00006000", "version-rolling.min-bit-count": 2}]),
            )
            .await
            .unwrap();
        let answer = conn.read_response(id, T).await.unwrap();
        assert_eq!(
            answer["result"],
            json!({"version-rolling": true, "version-rolling.mask": "1fffe000"})
        );
        let id = conn
            .request("mining.subscribe", json!(["cgminer/4.11"]))
            .await
            .unwrap();
        let answer = conn.read_response(id, T).await.unwrap();
        let result = &answer["result"];
        assert_eq!(
            result[0].as_array().unwrap().len(),
            1,
            "only mining.notify: {result}"
        );
        assert_eq!(result[0][0][0], "mining.notify");
        assert_eq!(result[1].as_str().unwrap().len(), 8);
        assert_eq!(result[2], 8);
        // Difficulty and a job before authorize.
        let diff = conn.read_json(T).await.unwrap();
        assert_eq!(diff["method"], "mining.set_difficulty");
        let notify = conn.read_json(T).await.unwrap();
        assert_eq!(notify["method"], "mining.notify");
        // No reply to unknown methods (mining.extranonce.subscribe is one): the next
        // answer is to the request after them.
        conn.request("mining.extranonce.subscribe", json!([]))
            .await
            .unwrap();
        conn.request("mining.bogus", json!([1])).await.unwrap();
        let id = conn
            .request("mining.authorize", json!(["acct.rig", "x"]))
            .await
            .unwrap();
        let answer = conn.read_json(T).await.unwrap();
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(answer["result"], json!(true));
    });
    let stats = pool.stats();
    let conn = stats.connections.values().next().unwrap();
    assert!(!conn.extranonce_subscribed);
    assert_eq!(conn.version_mask, Some(0x1fffe000));
    assert_eq!(conn.responses_sent, 3, "configure, subscribe, authorize");
    // ckpool never sends set_extranonce: refused for a client that did not subscribe.
    assert!(pool.set_extranonce(conn.id, None).is_err());
}

/// `mining.suggest_difficulty` on `conn`, then a malformed submit: the
/// difficulties the pool sent before the submit's answer.
async fn suggest(conn: &mut MinerConn, d: Value) -> Vec<f64> {
    conn.request("mining.suggest_difficulty", json!([d]))
        .await
        .unwrap();
    let id = conn
        .request("mining.submit", json!(["acct.rig", "00", "00", "00", "00"]))
        .await
        .unwrap();
    let mut sent = Vec::new();
    loop {
        let m = conn.read_json(T).await.unwrap();
        if m["id"] == id {
            return sent;
        }
        if m["method"] == "mining.set_difficulty" {
            sent.push(m["params"][0].as_f64().unwrap());
        }
    }
}

/// `mining.suggest_difficulty` as ckpool takes it (stratifier.c suggest_diff): an
/// integer only, set at once unless it repeats the last one, never answered;
/// fractions are ignored (but recorded). A simulator pool that is not ckpool takes
/// fractions too.
#[test]
fn suggested_difficulties_as_ckpool_takes_them() {
    let ckpool = pool(StratumPoolConfig::ckpool());
    let other = pool(StratumPoolConfig::default());
    smol::block_on(async {
        let mut c = subscribe(&ckpool, "acct.rig").await;
        // The start difficulty sent at subscribe; null is no suggestion.
        assert_eq!(suggest(&mut c.conn, Value::Null).await.len(), 1);
        assert_eq!(
            suggest(&mut c.conn, json!(0.5)).await,
            [0.0; 0],
            "a fraction"
        );
        assert_eq!(suggest(&mut c.conn, json!(1000)).await, [1000.0]);
        assert_eq!(suggest(&mut c.conn, json!(1000)).await, [0.0; 0], "again");
        let mut c = subscribe(&other, "acct.rig").await;
        assert_eq!(suggest(&mut c.conn, Value::Null).await.len(), 1);
        assert_eq!(suggest(&mut c.conn, json!(0.5)).await, [0.5]);
    });
    let stats = ckpool.stats();
    let conn = stats.connections.values().next().unwrap();
    assert_eq!(conn.suggestions, [0.5, 1000.0, 1000.0]);
    assert_eq!(
        conn.responses_sent,
        2 + 4,
        "subscribe, authorize, four submits"
    );
}

#[test]
fn ckpool_gates_methods_before_subscribe_and_authorize() {
    let pool = pool(StratumPoolConfig::ckpool());
    smol::block_on(async {
        // Anything but the handshake before subscribe: dropped.
        let mut early = MinerConn::connect(pool.addr()).await.unwrap();
        early
            .request("mining.extranonce.subscribe", json!([]))
            .await
            .unwrap();
        assert!(early.closed_within(T).await);
        // After subscribe, before authorize: ignored, submits included.
        let mut conn = MinerConn::connect(pool.addr()).await.unwrap();
        let id = conn
            .request("mining.subscribe", json!(["x"]))
            .await
            .unwrap();
        conn.read_response(id, T).await.unwrap();
        let notify = conn.read_method("mining.notify", T).await.unwrap();
        let job = Job::from_notify_params(&notify["params"]).unwrap();
        let params = json!([
            "acct.rig",
            job.id,
            "0000000000000000",
            format!("{:08x}", job.work.ntime),
            "00000000"
        ]);
        conn.request("mining.submit", params).await.unwrap();
        let id = conn
            .request("mining.authorize", json!(["acct.rig", "x"]))
            .await
            .unwrap();
        let answer = conn
            .read_matching(T, |v| v.get("method").is_none())
            .await
            .unwrap();
        assert_eq!(answer["id"], id, "the submit got no answer: {answer}");
        // A wrong-length extranonce2 is padded, then judged on its hash.
        let mut c = Client {
            conn,
            extranonce1: vec![],
            extranonce2_size: 8,
        };
        c.extranonce1 = hex_decode(
            &pool
                .stats()
                .connections
                .values()
                .last()
                .unwrap()
                .extranonce1,
        )
        .unwrap();
        let ex2 = [0u8, 0, 0, 7, 0, 0, 0, 0];
        let d = 2f64.powi(-20);
        let n = find_nonce(&job, &c.extranonce1.clone(), &ex2, 0, d, true);
        let answer = submit(&mut c, "acct.rig", &job, &ex2[..4], n, None).await;
        assert_eq!(
            answer["result"],
            json!(true),
            "00000007 padded is the mined 0000000700000000: {answer}"
        );
    });
    assert_eq!(pool.stats().totals.valid, 1);
}

#[test]
fn version_rolling_masks() {
    let pool = pool(StratumPoolConfig::default());
    smol::block_on(async {
        let mut conn = MinerConn::connect(pool.addr()).await.unwrap();
        let id = conn
            .request(
                "mining.configure",
                json!([["version-rolling"], {"version-rolling.mask": "0fff0000"}]),
            )
            .await
            .unwrap();
        let answer = conn.read_response(id, T).await.unwrap();
        // BIP 310: the intersection.
        assert_eq!(answer["result"]["version-rolling.mask"], "0fff0000");
        let sub = conn
            .subscribe_and_authorize("acct.roll", "", T)
            .await
            .unwrap();
        let mut c = Client {
            conn,
            extranonce1: hex_decode(&sub.extranonce1).unwrap(),
            extranonce2_size: sub.extranonce2_size as usize,
        };
        let job = next_job(&mut c).await;
        let d = 2f64.powi(-20);
        let ex2 = extranonce2(&c, 9);
        let bits = 0x0123_0000;
        let n = find_nonce(&job, &c.extranonce1.clone(), &ex2, bits, d, true);
        assert_eq!(
            submit(&mut c, "acct.roll", &job, &ex2, n, Some(bits)).await["result"],
            json!(true)
        );
        // The pool narrows the mask: bits outside it are refused at once.
        let id = pool.stats().connections.keys().next().copied().unwrap();
        pool.set_version_mask(id, 0x00ff_0000).unwrap();
        let note = c
            .conn
            .read_method("mining.set_version_mask", T)
            .await
            .unwrap();
        assert_eq!(note["params"], json!(["00ff0000"]));
        let ex2 = extranonce2(&c, 10);
        let n = find_nonce(&job, &c.extranonce1.clone(), &ex2, bits, d, true);
        rejected(
            &submit(&mut c, "acct.roll", &job, &ex2, n, Some(bits)).await,
            20,
            "Invalid version mask",
        );
    });
}

#[test]
fn set_extranonce_and_reconnect_on_demand() {
    let pool = pool(StratumPoolConfig {
        extranonce2_size: 4,
        ..StratumPoolConfig::default()
    });
    smol::block_on(async {
        let mut conn = MinerConn::connect(pool.addr()).await.unwrap();
        let id = conn
            .request("mining.subscribe", json!(["x"]))
            .await
            .unwrap();
        let sub = conn.read_response(id, T).await.unwrap();
        let old_ex1 = hex_decode(sub["result"][1].as_str().unwrap()).unwrap();
        let id = conn
            .request("mining.extranonce.subscribe", json!([]))
            .await
            .unwrap();
        assert_eq!(
            conn.read_response(id, T).await.unwrap()["result"],
            json!(true)
        );
        let id = conn
            .request("mining.authorize", json!(["acct.xn", "x"]))
            .await
            .unwrap();
        assert_eq!(
            conn.read_response(id, T).await.unwrap()["result"],
            json!(true)
        );
        let mut c = Client {
            conn,
            extranonce1: old_ex1.clone(),
            extranonce2_size: 4,
        };
        let old_job = next_job(&mut c).await;
        let cid = pool.stats().connections.keys().next().copied().unwrap();
        pool.set_extranonce(cid, Some(6)).unwrap();
        let note = c
            .conn
            .read_method("mining.set_extranonce", T)
            .await
            .unwrap();
        let new_ex1 = hex_decode(note["params"][0].as_str().unwrap()).unwrap();
        assert_ne!(new_ex1, old_ex1);
        assert_eq!(note["params"][1], 6);
        let job = next_job(&mut c).await;
        assert!(job.clean, "the new extranonce comes with a clean job");
        c.extranonce1 = new_ex1.clone();
        c.extranonce2_size = 6;
        let d = 2f64.powi(-20);
        let ex2 = extranonce2(&c, 3);
        assert_eq!(ex2.len(), 6);
        let n = find_nonce(&job, &new_ex1, &ex2, 0, d, true);
        assert_eq!(
            submit(&mut c, "acct.xn", &job, &ex2, n, None).await["result"],
            json!(true)
        );
        // The job from before is gone with the clean job.
        let ex2o = [0u8, 0, 0, 1];
        let n = find_nonce(&old_job, &old_ex1, &ex2o, 0, d, true);
        rejected(
            &submit(&mut c, "acct.xn", &old_job, &ex2o, n, None).await,
            21,
            "Stale",
        );
        pool.reconnect(cid, json!(["pool.example", 3334, 2]))
            .unwrap();
        let note = c.conn.read_method("client.reconnect", T).await.unwrap();
        assert_eq!(note["params"], json!(["pool.example", 3334, 2]));
    });
    let stats = pool.stats();
    let conn = stats.connections.values().next().unwrap();
    assert!(conn.extranonce_subscribed);
    assert_eq!(conn.extranonce2_size, 6);
}

/// Submits and returns the answer without its id.
async fn ask(conn: &mut MinerConn, params: Value) -> Value {
    let id = conn.request("mining.submit", params).await.unwrap();
    let mut answer = conn.read_response(id, T).await.unwrap();
    answer.as_object_mut().unwrap().remove("id");
    answer
}

/// The run against ckpool (ckolivas' tree at bb7b0aeb, 2024-11-28, built in the
/// session with a bitcoind RPC stand-in; nothing of it committed), replayed against
/// `StratumPoolConfig::ckpool_2024()`: each answer as ckpool gave it (values; ckpool
/// orders keys otherwise).
#[test]
fn replays_the_run_against_ckpool_2024() {
    let pool = pool(StratumPoolConfig::ckpool_2024());
    smol::block_on(async {
        let mut conn = MinerConn::connect(pool.addr()).await.unwrap();
        let id = conn
            .request(
                "mining.configure",
                json!([["version-rolling"], {"version-rolling.mask": "00006000", "version-rolling.min-bit-count": 2}]),
            )
            .await
            .unwrap();
        // ckpool: {"result":{"version-rolling":true,"version-rolling.mask":"1fffe000"},"id":1,"error":null}
        assert_eq!(
            conn.read_response(id, T).await.unwrap(),
            json!({"result": {"version-rolling": true, "version-rolling.mask": "1fffe000"}, "id": id, "error": null})
        );
        let id = conn
            .request("mining.subscribe", json!(["btcagent-probe/0.1"]))
            .await
            .unwrap();
        // ckpool: {"result":[[["mining.notify","6b102cee"]],"ee2c106b",8],"id":2,"error":null}
        let sub = conn.read_response(id, T).await.unwrap();
        assert_eq!(sub["result"][0].as_array().unwrap().len(), 1);
        assert_eq!(sub["result"][0][0][0], "mining.notify");
        assert_eq!(sub["result"][1].as_str().unwrap().len(), 8);
        assert_eq!(sub["result"][2], 8);
        assert_eq!(
            conn.read_json(T).await.unwrap()["method"],
            "mining.set_difficulty"
        );
        let notify = conn.read_json(T).await.unwrap();
        let job = Job::from_notify_params(&notify["params"]).unwrap();
        // Before authorize: extranonce.subscribe, an unknown method and a submit get
        // nothing; the next answer is authorize's.
        conn.request("mining.extranonce.subscribe", json!([]))
            .await
            .unwrap();
        conn.request("mining.bogus", json!([1])).await.unwrap();
        conn.request("mining.submit", json!(["acct.rig", "1", "00", "00", "00"]))
            .await
            .unwrap();
        let id = conn
            .request("mining.authorize", json!(["acct.rig", "x"]))
            .await
            .unwrap();
        // ckpool: {"result":true,"error":null,"id":6}
        assert_eq!(
            conn.read_matching(T, |v| v.get("method").is_none())
                .await
                .unwrap(),
            json!({"result": true, "error": null, "id": id})
        );
        let ex1 = hex_decode(sub["result"][1].as_str().unwrap()).unwrap();
        let mut c = Client {
            conn,
            extranonce1: ex1.clone(),
            extranonce2_size: 8,
        };
        let ex2 = [0u8; 8];
        let d = 2f64.powi(-20);
        let bad = find_nonce(&job, &ex1, &ex2, 0, d, false);
        let ntime = format!("{:08x}", job.work.ntime);
        let judged =
            |reason: &str| json!({"reject-reason": reason, "result": false, "error": null});
        let refused = |reason: &str| json!({"result": false, "error": reason});
        // ckpool: {"reject-reason":"Above target","result":false,"error":null,"id":9}
        let nonce = format!("{bad:08x}");
        assert_eq!(
            ask(
                &mut c.conn,
                json!(["acct.rig", job.id, hex_encode(&ex2), ntime, nonce])
            )
            .await,
            judged("Above target")
        );
        // ckpool: {"reject-reason":"Invalid JobID","result":false,"error":null,"id":10}
        assert_eq!(
            ask(
                &mut c.conn,
                json!(["acct.rig", "deadbeef", hex_encode(&ex2), ntime, nonce])
            )
            .await,
            judged("Invalid JobID")
        );
        // ckpool: {"result":false,"error":"Invalid version mask","id":11}
        assert_eq!(
            ask(
                &mut c.conn,
                json!([
                    "acct.rig",
                    job.id,
                    hex_encode(&ex2),
                    ntime,
                    nonce,
                    "e0000000"
                ])
            )
            .await,
            refused("Invalid version mask")
        );
        // ckpool: {"result":false,"error":"Worker mismatch","id":12}
        assert_eq!(
            ask(
                &mut c.conn,
                json!(["acct.other", job.id, hex_encode(&ex2), ntime, nonce])
            )
            .await,
            refused("Worker mismatch")
        );
        // A 2-byte extranonce2 is padded to 8 and judged. ckpool: "Above target".
        let short = find_nonce(&job, &ex1, &[0, 1, 0, 0, 0, 0, 0, 0], 0, d, false);
        assert_eq!(
            ask(
                &mut c.conn,
                json!(["acct.rig", job.id, "0001", ntime, format!("{short:08x}")])
            )
            .await,
            judged("Above target")
        );
        // ntime 8000 s ahead. ckpool: {"reject-reason":"Ntime out of range",...}
        let late = format!("{:08x}", job.work.ntime + 8000);
        assert_eq!(
            ask(
                &mut c.conn,
                json!(["acct.rig", job.id, hex_encode(&ex2), late, nonce])
            )
            .await,
            judged("Ntime out of range")
        );
        // suggest_difficulty: the difficulty at once, the request unanswered.
        // ckpool: {"params":[1000],"id":null,"method":"mining.set_difficulty"}
        c.conn
            .request("mining.suggest_difficulty", json!([1000]))
            .await
            .unwrap();
        let next = c.conn.read_json(T).await.unwrap();
        assert_eq!(next["method"], "mining.set_difficulty");
        assert_eq!(next["params"][0].as_f64(), Some(1000.0));
        // A method before subscribe on a new connection: closed.
        let mut early = MinerConn::connect(pool.addr()).await.unwrap();
        early
            .request("mining.extranonce.subscribe", json!([]))
            .await
            .unwrap();
        assert!(early.closed_within(T).await);
    });
}

#[test]
fn unknown_methods_get_an_error_unless_silent() {
    let pool = pool(StratumPoolConfig {
        configure: ConfigureAnswer::Refuse,
        ..StratumPoolConfig::default()
    });
    smol::block_on(async {
        let mut conn = MinerConn::connect(pool.addr()).await.unwrap();
        let id = conn.request("mining.bogus", json!([])).await.unwrap();
        let answer = conn.read_response(id, T).await.unwrap();
        assert_eq!(answer["error"][0], 20);
        let id = conn
            .request("mining.configure", json!([["version-rolling"], {}]))
            .await
            .unwrap();
        let answer = conn.read_response(id, T).await.unwrap();
        assert_eq!(answer["result"], json!({"version-rolling": false}));
    });
}

/// Miners hashing straight against the pool: every share the swarm finds is valid,
/// and the pool's vardiff raises each connection's difficulty from the easy start.
#[test]
fn swarm_shares_are_valid_and_vardiff_raises_difficulty() {
    let pool = StratumPool::start(StratumPoolConfig {
        start_difficulty: "0.0000000037252902984619140625".into(), // 2^-28
        vardiff: Some(PoolVardiff {
            share_interval: 0.5,
            retarget_shares: 8,
            retarget_after: Duration::from_secs(30),
            min: 2f64.powi(-30),
            max: 2f64.powi(-16),
        }),
        // New jobs carry the new difficulty; shares on older ones are credited at
        // the easier one, as ckpool does.
        job_interval: Some(Duration::from_millis(500)),
        ..StratumPoolConfig::default()
    })
    .unwrap();
    let mut config = MinerSwarmConfig::new(pool.addr(), 3);
    config.user_pattern = "acct.w{i}".into();
    config.version_rolling_fraction = 0.34;
    let swarm = MinerSwarm::start(config).unwrap();
    let raised = pool.wait_until(Duration::from_secs(30), |s| {
        s.open_count() == 3
            && s.open_connections().all(|c| {
                c.difficulties.len() >= 2 && c.difficulties.last() > c.difficulties.first()
            })
            && s.totals.valid >= 60
    });
    let stats = pool.stats();
    let swarm_stats = swarm.finish();
    assert!(
        raised,
        "{} / {:?}",
        stats.summary(),
        stats
            .open_connections()
            .map(|c| c.difficulties.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(stats.totals.invalid, 0, "{}", stats.summary());
    assert_eq!(stats.totals.refused, 0, "{}", stats.summary());
    assert_eq!(stats.totals.duplicate, 0, "{}", stats.summary());
    assert!(stats
        .open_connections()
        .any(|c| c.version_mask == Some(0x1fffe000)));
    assert!(swarm_stats.accepted > 0);
    for i in 0..3 {
        assert!(stats.worker(&format!("acct.w{i}")).valid > 0);
    }
}
