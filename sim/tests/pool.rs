//! The pool simulator over real loopback TCP, driven by a scripted agent-side client.

use btcagent_sim::bitcoin::{hex_decode, target_for_difficulty};
use btcagent_sim::conn::MinerConn;
use btcagent_sim::exmsg::{self, ExMessage, Submit};
use btcagent_sim::framing::Frame;
use btcagent_sim::job::Job;
use btcagent_sim::pool::{PoolSim, PoolSimConfig};
use btcagent_sim::share::{check_submit, pool_extranonce2, search_nonce, Verdict};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);
/// 2^-20: about a million times easier than difficulty 1, a share in ~4096 hashes.
const DIFF_2_20: &str = "0.00000095367431640625";

struct Agent {
    conn: MinerConn,
    extranonce1: [u8; 4],
}

/// The agent's upstream handshake from agent-protocol.md, checking each answer.
async fn handshake(pool: &PoolSim, caps_again: &[&str]) -> Agent {
    let mut conn = MinerConn::connect_as_agent(pool.addr()).await.unwrap();
    conn.send_line(r#"{"id":"conn_test","method":"agent.get_capabilities","params":[["verrol"]]}"#)
        .await
        .unwrap();
    let answer = conn.read_json(T).await.unwrap();
    assert_eq!(answer["id"], "conn_test");
    assert_eq!(
        answer["result"]["capabilities"],
        json!(["verrol", "subres"])
    );
    assert_eq!(answer["error"], Value::Null);
    conn.send_line(
        r#"{"id":"caps","method":"agent.get_capabilities","params":[["verrol","subres"]]}"#,
    )
    .await
    .unwrap();
    assert_eq!(conn.read_json(T).await.unwrap()["id"], "caps");
    let id = conn
        .request(
            "mining.configure",
            json!([["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 0}]),
        )
        .await
        .unwrap();
    let configure = conn.read_json(T).await.unwrap();
    assert_eq!(configure["id"], id);
    assert_eq!(configure["result"]["version-rolling.mask"], "1fffe000");
    let mask = conn.read_json(T).await.unwrap();
    assert_eq!(mask["method"], "mining.set_version_mask");
    assert_eq!(mask["params"], json!(["1fffe000"]));
    let sub = conn
        .subscribe_and_authorize("subacct", "", T)
        .await
        .unwrap();
    assert_eq!(sub.extranonce2_size, 8);
    let extranonce1: [u8; 4] = hex_decode(&sub.extranonce1).unwrap().try_into().unwrap();
    let params = json!([caps_again]);
    conn.send_line(
        &json!({"id": "caps_again", "method": "agent.get_capabilities", "params": params})
            .to_string(),
    )
    .await
    .unwrap();
    conn.read_matching(T, |v| v["id"] == "caps_again")
        .await
        .unwrap();
    Agent { conn, extranonce1 }
}

async fn next_job(agent: &mut Agent) -> Job {
    let notify = agent.conn.read_method("mining.notify", T).await.unwrap();
    Job::from_notify_params(&notify["params"]).unwrap()
}

fn mine(job: &Job, ex1: &[u8; 4], session: u16, ex2: u32, difficulty: f64) -> u32 {
    let root = job
        .work
        .merkle_root(&[ex1, &pool_extranonce2(session, ex2)]);
    let target = target_for_difficulty(difficulty);
    search_nonce(&job.work, &root, 0, job.work.ntime, &target, 0, u32::MAX).unwrap()
}

fn share(job: &Job, session: u16, ex2: u32, nonce: u32) -> Submit {
    Submit {
        cmd: exmsg::CMD_SUBMIT_SHARE,
        job_id: job.id.parse().unwrap(),
        session_id: session,
        extranonce2: ex2,
        nonce,
        ntime: None,
        version_mask: None,
    }
}

fn register(session: u16, worker: &str) -> ExMessage {
    ExMessage::RegisterWorker {
        session_id: session,
        client_agent: "cgminer/4.11".into(),
        worker_name: worker.into(),
    }
}

/// Reads `n` SUBMIT_RESPONSEs (in whatever order they come): index -> status.
async fn responses(agent: &mut Agent, n: usize) -> BTreeMap<u16, u32> {
    let mut got = BTreeMap::new();
    while got.len() < n {
        match agent.conn.read_ex(T).await.unwrap() {
            ExMessage::SubmitResponse { index, status } => {
                assert!(got.insert(index, status).is_none(), "index {index} twice");
            }
            other => panic!("not a response: {other:?}"),
        }
    }
    got
}

async fn expect_response(agent: &mut Agent, index: u16, status: u32) {
    assert_eq!(responses(agent, 1).await, BTreeMap::from([(index, status)]));
}

#[test]
fn handshake_shares_and_subres() {
    let pool = PoolSim::start(PoolSimConfig {
        difficulty: DIFF_2_20.into(),
        ..Default::default()
    })
    .unwrap();
    smol::block_on(async {
        let mut agent = handshake(&pool, &["verrol", "subres"]).await;
        let set_diff = agent
            .conn
            .read_method("mining.set_difficulty", T)
            .await
            .unwrap();
        assert_eq!(set_diff["params"], json!([0.00000095367431640625]));
        let job = next_job(&mut agent).await;
        assert!(job.clean);
        assert_eq!(job.id, "0");
        let difficulty = 2f64.powi(-20);
        let ex1 = agent.extranonce1;

        agent.conn.send_ex(&register(7, "rig1")).await.unwrap();
        let nonce = mine(&job, &ex1, 7, 0x11, difficulty);
        let good = share(&job, 7, 0x11, nonce);
        agent.conn.send_ex(&ExMessage::Submit(good)).await.unwrap();
        agent.conn.send_ex(&ExMessage::Submit(good)).await.unwrap();
        assert_eq!(
            responses(&mut agent, 2).await,
            BTreeMap::from([(0, exmsg::STATUS_ACCEPT), (1, exmsg::STATUS_DUPLICATE)])
        );
        // A nonce known to miss the target.
        let target = target_for_difficulty(difficulty);
        let bad_nonce = (0..)
            .map(|n: u32| nonce.wrapping_add(1 + n))
            .find(|n| {
                check_submit(&job.work, &ex1, &share(&job, 7, 0x11, *n), 0, &target)
                    == Verdict::LowDifficulty
            })
            .unwrap();
        agent
            .conn
            .send_ex(&ExMessage::Submit(share(&job, 7, 0x11, bad_nonce)))
            .await
            .unwrap();
        expect_response(&mut agent, 2, exmsg::STATUS_LOW_DIFFICULTY).await;
        let mut stale = good;
        stale.job_id = 200;
        agent.conn.send_ex(&ExMessage::Submit(stale)).await.unwrap();
        expect_response(&mut agent, 3, exmsg::STATUS_JOB_NOT_FOUND).await;
        assert_eq!(exmsg::STATUS_JOB_NOT_FOUND, 36, "raw, as sserver sends it");
        // Unregistered session and wrong length: dropped uncounted, no index used.
        agent
            .conn
            .send_ex(&ExMessage::Submit(share(&job, 8, 1, 1)))
            .await
            .unwrap();
        let mut wrong_length = exmsg::encode(&ExMessage::Submit(share(&job, 7, 1, 1)));
        wrong_length[1] = exmsg::CMD_SUBMIT_SHARE_WITH_TIME;
        agent.conn.send_bytes(&wrong_length).await.unwrap();
        // Version rolling with time, within the pool's mask.
        let bits = 0x0000_6000;
        let ntime = job.work.ntime + 3;
        let root = job.work.merkle_root(&[&ex1, &pool_extranonce2(7, 0x12)]);
        let nonce = search_nonce(&job.work, &root, bits, ntime, &target, 0, u32::MAX).unwrap();
        let rolled = Submit {
            cmd: exmsg::CMD_SUBMIT_SHARE_WITH_TIME_VER,
            ntime: Some(ntime),
            version_mask: Some(bits),
            ..share(&job, 7, 0x12, nonce)
        };
        agent
            .conn
            .send_ex(&ExMessage::Submit(rolled))
            .await
            .unwrap();
        expect_response(&mut agent, 4, exmsg::STATUS_ACCEPT).await;
        agent
            .conn
            .send_ex(&ExMessage::UnregisterWorker { session_id: 7 })
            .await
            .unwrap();
        agent.conn.send_ex(&ExMessage::Submit(good)).await.unwrap();

        assert!(pool.wait_until(T, |s| s.totals.unregistered == 2));
        let stats = pool.stats();
        let conn = stats.connections.values().next().unwrap();
        assert_eq!(
            conn.methods,
            [
                "agent.get_capabilities",
                "agent.get_capabilities",
                "mining.configure",
                "mining.subscribe",
                "mining.authorize",
                "agent.get_capabilities"
            ]
        );
        assert!(conn.subres_active());
        assert_eq!(conn.sub_account.as_deref(), Some("subacct"));
        assert_eq!((conn.registers, conn.unregisters), (1, 1));
        assert!(conn.sessions.is_empty());
        let s = conn.shares;
        assert_eq!((s.valid, s.duplicate, s.invalid, s.stale), (2, 1, 1, 1));
        assert_eq!((s.unregistered, s.malformed), (2, 1));
        // Forms of the submits the pool counted (dropped ones are not read further).
        assert_eq!(conn.submit_forms.plain, 4);
        assert_eq!(conn.submit_forms.with_time_ver, 1);
        assert_eq!(conn.responses_sent, 5);
        assert_eq!(stats.valid_for("subacct", "rig1"), 2);
        assert_eq!(stats.connections_for("subacct").count(), 1);
        assert_eq!(stats.connections_for("other").count(), 0);
        assert!(conn.job_sent_at_us["0"] == job.sent_at_us && job.sent_at_us > 0);
        assert!(conn.reads >= 1 && conn.bytes_in > 0 && conn.bytes_out > 0);
    });
}

#[test]
fn subres_needs_asking_after_authorize() {
    let pool = PoolSim::start(PoolSimConfig::default()).unwrap();
    smol::block_on(async {
        // "subres" asked only before authorize (the "caps" request): not active.
        let mut agent = handshake(&pool, &["verrol"]).await;
        let job = next_job(&mut agent).await;
        agent.conn.send_ex(&register(1, "w")).await.unwrap();
        let nonce = mine(&job, &agent.extranonce1, 1, 5, 2f64.powi(-30));
        agent
            .conn
            .send_ex(&ExMessage::Submit(share(&job, 1, 5, nonce)))
            .await
            .unwrap();
        assert!(pool.wait_until(T, |s| s.totals.valid == 1));
        assert!(agent
            .conn
            .read_ex(Duration::from_millis(200))
            .await
            .is_err());
        assert!(!pool.stats().connections[&1].subres_active());
    });
}

#[test]
fn controls() {
    let pool = PoolSim::start(PoolSimConfig::default()).unwrap();
    smol::block_on(async {
        let mut agent = handshake(&pool, &["verrol", "subres"]).await;
        agent
            .conn
            .read_method("mining.set_difficulty", T)
            .await
            .unwrap();
        next_job(&mut agent).await;
        let conn_id = *pool.stats().connections.keys().next().unwrap();

        pool.set_difficulty("0.0001").unwrap();
        assert!(pool.set_difficulty("abc").is_err());
        pool.new_job(false);
        // Right before the job, and the number text reaches the wire exactly as given.
        assert_eq!(
            agent.conn.read_line(T).await.unwrap(),
            r#"{"id":null,"method":"mining.set_difficulty","params":[0.0001]}"#
        );
        let job = next_job(&mut agent).await;
        assert_eq!((job.id.as_str(), job.clean), ("1", false));
        pool.new_job(true);
        assert!(next_job(&mut agent).await.clean);

        for s in [0x1122, 0x3344] {
            agent.conn.send_ex(&register(s, "w")).await.unwrap();
        }
        assert!(pool.wait_until(T, |s| s.registered_sessions() == 2));
        // 0x5555 is not registered: sserver has no worker to change.
        pool.set_session_difficulty(conn_id, 13, vec![0x1122, 0x3344, 0x5555])
            .unwrap();
        assert_eq!(
            agent.conn.read_ex(T).await.unwrap(),
            ExMessage::MiningSetDiff {
                diff_exp: 13,
                session_ids: vec![0x1122, 0x3344]
            }
        );
        // ... and right after it, the job that is the first judged at it.
        assert!(!next_job(&mut agent).await.clean);
        pool.send_raw(conn_id, b"garbage\n".to_vec()).unwrap();
        assert_eq!(
            agent.conn.read_frame(T).await.unwrap(),
            Frame::Line("garbage".into())
        );

        pool.drop_connection(conn_id);
        assert!(agent.conn.closed_within(T).await);
        assert!(pool.wait_until(T, |s| s.open_count() == 0));

        pool.refuse_connections();
        assert!(MinerConn::connect(pool.addr()).await.is_err());
        pool.accept_connections().unwrap();
        let mut again = handshake(&pool, &["subres"]).await;
        next_job(&mut again).await;
        // sserver logs a line that is not JSON and reads on.
        again.conn.send_line("this is not json").await.unwrap();
        assert!(pool.wait_until(T, |s| s.connections[&2].bad_lines == 1));
        pool.new_job(false);
        next_job(&mut again).await;
        assert_eq!(pool.stats().open_count(), 1);
    });
}

#[test]
fn configurable_refusals() {
    let pool = PoolSim::start(PoolSimConfig {
        extranonce2_size: 4,
        reject_authorize: true,
        capabilities: vec![],
        ..Default::default()
    })
    .unwrap();
    smol::block_on(async {
        let mut conn = MinerConn::connect_as_agent(pool.addr()).await.unwrap();
        let id = conn
            .request("mining.configure", json!([["version-rolling"], {}]))
            .await
            .unwrap();
        assert_eq!(
            conn.read_response(id, T).await.unwrap()["result"]["version-rolling"],
            false
        );
        let id = conn
            .request("mining.subscribe", json!(["a"]))
            .await
            .unwrap();
        assert_eq!(conn.read_response(id, T).await.unwrap()["result"][2], 4);
        let id = conn
            .request("mining.authorize", json!(["x", ""]))
            .await
            .unwrap();
        assert_eq!(conn.read_response(id, T).await.unwrap()["error"][0], 29);
    });
    drop(pool);
}

#[test]
fn periodic_jobs() {
    let pool = PoolSim::start(PoolSimConfig {
        job_interval: Some(Duration::from_millis(50)),
        ..Default::default()
    })
    .unwrap();
    smol::block_on(async {
        let mut agent = handshake(&pool, &["subres"]).await;
        for expected in 0..4 {
            assert_eq!(next_job(&mut agent).await.id, expected.to_string());
        }
    });
    pool.stop();
}

#[test]
fn stop_closes_listener_and_connections() {
    let pool = PoolSim::start(PoolSimConfig::default()).unwrap();
    let addr = pool.addr();
    smol::block_on(async {
        let mut agent = handshake(&pool, &["subres"]).await;
        pool.stop();
        assert!(agent.conn.closed_within(T).await);
        assert!(MinerConn::connect(addr).await.is_err());
    });
}
