//! The pool simulator keeps sserver's rules: one test per rule, each failing if the
//! simulator loses the rule. The sserver source each rule comes from is named in
//! sim/src/pool.rs.

use btcagent_sim::bitcoin::{hex_decode, target_for_difficulty};
use btcagent_sim::conn::{MinerConn, AGENT_USER_AGENT};
use btcagent_sim::exmsg::{self, ExMessage, Submit};
use btcagent_sim::framing::Frame;
use btcagent_sim::job::Job;
use btcagent_sim::pool::{PoolSim, PoolSimConfig};
use btcagent_sim::share::{check_submit, pool_extranonce2, search_nonce, Verdict};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

struct Agent {
    conn: MinerConn,
    extranonce1: [u8; 4],
    /// Jobs by id, newest last.
    jobs: Vec<Job>,
}

fn start(config: PoolSimConfig) -> PoolSim {
    PoolSim::start(config).unwrap()
}

/// Subscribes with `user_agent`, authorizes, turns on share responses, and reads the
/// first job (with the difficulty before it).
async fn agent_with(pool: &PoolSim, user_agent: &str) -> (Agent, Value) {
    let mut conn = MinerConn::connect_as_agent(pool.addr()).await.unwrap();
    let id = conn
        .request("mining.subscribe", json!([user_agent]))
        .await
        .unwrap();
    let sub = conn.read_response(id, T).await.unwrap();
    let extranonce1 = hex_decode(sub["result"][1].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let id = conn
        .request("mining.authorize", json!(["acct.x", "x"]))
        .await
        .unwrap();
    assert_eq!(conn.read_response(id, T).await.unwrap()["result"], true);
    let difficulty = conn.read_json(T).await.unwrap();
    assert_eq!(difficulty["method"], "mining.set_difficulty");
    let notify = conn.read_json(T).await.unwrap();
    assert_eq!(
        notify["method"], "mining.notify",
        "right after the difficulty"
    );
    let job = Job::from_notify_params(&notify["params"]).unwrap();
    conn.send_line(r#"{"id":"caps","method":"agent.get_capabilities","params":[["subres"]]}"#)
        .await
        .unwrap();
    let caps = conn.read_matching(T, |v| v["id"] == "caps").await.unwrap();
    assert!(caps.get("error").is_none(), "sserver's answer: {caps}");
    let agent = Agent {
        conn,
        extranonce1,
        jobs: vec![job],
    };
    (agent, difficulty)
}

async fn agent(pool: &PoolSim) -> Agent {
    agent_with(pool, AGENT_USER_AGENT).await.0
}

impl Agent {
    /// Reads up to the next job, returning the lines and ex-messages before it.
    async fn next_job(&mut self) -> (Job, Vec<Frame>) {
        let mut before = Vec::new();
        loop {
            let frame = self.conn.read_frame(T).await.unwrap();
            if let Frame::Line(line) = &frame {
                let v: Value = serde_json::from_str(line).unwrap();
                if v["method"] == "mining.notify" {
                    let job = Job::from_notify_params(&v["params"]).unwrap();
                    self.jobs.push(job.clone());
                    return (job, before);
                }
            }
            before.push(frame);
        }
    }

    async fn register(&mut self, session: u16, worker: &str) {
        self.conn
            .send_ex(&ExMessage::RegisterWorker {
                session_id: session,
                client_agent: "cgminer/4.11".into(),
                worker_name: worker.into(),
            })
            .await
            .unwrap();
    }

    /// A share on `job` meeting `easy` (and, when `hard` is given, missing it).
    fn mine(
        &self,
        job: &Job,
        session: u16,
        ex2: u32,
        ntime: u32,
        easy: f64,
        hard: Option<f64>,
    ) -> Submit {
        let root = job
            .work
            .merkle_root(&[&self.extranonce1, &pool_extranonce2(session, ex2)]);
        let target = target_for_difficulty(easy);
        let mut from = 0;
        loop {
            let nonce =
                search_nonce(&job.work, &root, 0, ntime, &target, from, u32::MAX - from).unwrap();
            let submit = Submit {
                cmd: exmsg::CMD_SUBMIT_SHARE_WITH_TIME,
                job_id: job.id.parse().unwrap(),
                session_id: session,
                extranonce2: ex2,
                nonce,
                ntime: Some(ntime),
                version_mask: None,
            };
            let misses = |d: f64| {
                check_submit(
                    &job.work,
                    &self.extranonce1,
                    &submit,
                    0,
                    &target_for_difficulty(d),
                ) == Verdict::LowDifficulty
            };
            if hard.is_none_or(misses) {
                return submit;
            }
            from = nonce + 1;
        }
    }

    async fn submit(&mut self, submit: Submit) {
        self.conn.send_ex(&ExMessage::Submit(submit)).await.unwrap();
    }

    /// Reads `n` SUBMIT_RESPONSEs, in arrival order.
    async fn responses(&mut self, n: usize) -> Vec<(u16, u32)> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.conn.read_ex(T).await.unwrap() {
                ExMessage::SubmitResponse { index, status } => got.push((index, status)),
                other => panic!("not a response: {other:?}"),
            }
        }
        got
    }

    async fn verdicts(&mut self, n: usize) -> BTreeMap<u16, u32> {
        self.responses(n).await.into_iter().collect()
    }

    async fn silent_for(&mut self, d: Duration) -> bool {
        self.conn.read_ex(d).await.is_err()
    }
}

/// 2^-30, the default difficulty.
const EASY: f64 = 1.0 / (1u64 << 30) as f64;

#[test]
fn agent_mode_only_for_the_btccom_agent_prefix_after_filtering() {
    let pool = start(PoolSimConfig::default());
    smol::block_on(async {
        for (user_agent, agent_mode, kept) in [
            ("btcagent/0.1.0", false, "btcagent/0.1.0"),
            ("btccom-agent/2.0.0-mu", true, "btccom-agent/2.0.0-mu"),
            // Filtered first: the space goes, the prefix is there.
            (" btccom-agent/1 x", true, "btccom-agent/1x"),
            // Cut to 30 bytes first: the prefix is past them.
            (
                "0123456789012345678901234567890btccom-agent/1",
                false,
                "012345678901234567890123456789",
            ),
        ] {
            let (mut a, _) = agent_with(&pool, user_agent).await;
            a.register(1, "w").await;
            let job = a.jobs[0].clone();
            let share = a.mine(&job, 1, 1, job.work.ntime, EASY, None);
            a.submit(share).await;
            let conn = *pool.stats().connections.keys().last().unwrap();
            assert!(pool.wait_until(T, |s| {
                let c = &s.connections[&conn];
                c.shares.dropped_ex + c.shares.valid == 2 || c.shares.valid == 1
            }));
            let stats = pool.stats();
            let c = &stats.connections[&conn];
            assert_eq!(c.client_agent, kept);
            assert_eq!(c.agent_mode, agent_mode, "{user_agent}");
            if agent_mode {
                assert_eq!((c.shares.valid, c.shares.dropped_ex), (1, 0));
            } else {
                assert_eq!(
                    (c.registers, c.shares.valid, c.shares.dropped_ex),
                    (0, 0, 2)
                );
            }
        }
    });
}

#[test]
fn ex_messages_before_authorize_are_dropped() {
    let pool = start(PoolSimConfig::default());
    smol::block_on(async {
        let mut conn = MinerConn::connect_as_agent(pool.addr()).await.unwrap();
        let id = conn
            .request("mining.subscribe", json!([AGENT_USER_AGENT]))
            .await
            .unwrap();
        conn.read_response(id, T).await.unwrap();
        conn.send_ex(&ExMessage::RegisterWorker {
            session_id: 1,
            client_agent: "a".into(),
            worker_name: "w".into(),
        })
        .await
        .unwrap();
        assert!(pool.wait_until(T, |s| s.totals.dropped_ex == 1));
        let id = conn
            .request("mining.authorize", json!(["acct", ""]))
            .await
            .unwrap();
        conn.read_response(id, T).await.unwrap();
        conn.send_ex(&ExMessage::UnregisterWorker { session_id: 1 })
            .await
            .unwrap();
        assert!(pool.wait_until(T, |s| s.connections[&1].unregisters == 1));
        let stats = pool.stats();
        assert_eq!(
            (stats.connections[&1].registers, stats.totals.dropped_ex),
            (0, 1)
        );
    });
}

#[test]
fn connection_difficulty_decays_while_workers_keep_the_default() {
    // Default 2^-20, floor 2^-23, decaying from the start.
    let pool = start(PoolSimConfig {
        difficulty: "0.00000095367431640625".into(),
        min_difficulty: Some(2f64.powi(-23)),
        decay_after: Duration::ZERO,
        verdict_delay_max: Duration::ZERO,
        ..Default::default()
    });
    let default = 2f64.powi(-20);
    smol::block_on(async {
        let (mut a, first) = agent_with(&pool, AGENT_USER_AGENT).await;
        assert_eq!(first["params"], json!([default]));
        a.register(1, "early").await;
        let mut seen = Vec::new();
        for _ in 0..5 {
            pool.new_job(false);
            let (_, before) = a.next_job().await;
            for frame in before {
                if let Frame::Line(line) = frame {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    if v["method"] == "mining.set_difficulty" {
                        seen.push(v["params"][0].as_f64().unwrap());
                    }
                }
            }
        }
        // Halved with each job down to the floor, then no more lines.
        assert_eq!(seen, [2f64.powi(-21), 2f64.powi(-22), 2f64.powi(-23)]);
        a.register(2, "late").await;
        let job = a.jobs.last().unwrap().clone();
        // Both workers are judged at the default, on old and new jobs alike.
        for (i, session) in [1u16, 2].into_iter().enumerate() {
            let at_floor = a.mine(
                &job,
                session,
                10 + i as u32,
                job.work.ntime,
                2f64.powi(-23),
                Some(default),
            );
            let at_default = a.mine(
                &a.jobs[1].clone(),
                session,
                20 + i as u32,
                job.work.ntime,
                default,
                None,
            );
            a.submit(at_floor).await;
            a.submit(at_default).await;
        }
        let verdicts = a.verdicts(4).await;
        assert_eq!(
            verdicts.values().copied().collect::<Vec<_>>(),
            [
                exmsg::STATUS_LOW_DIFFICULTY,
                exmsg::STATUS_ACCEPT,
                exmsg::STATUS_LOW_DIFFICULTY,
                exmsg::STATUS_ACCEPT
            ]
        );
        let stats = pool.stats();
        assert_eq!(stats.totals.low_difficulty, 2);
        assert_eq!(stats.connections[&1].difficulties_sent.len(), 4);
        assert_eq!(stats.worker_difficulty_values(), [default]);
    });
}

#[test]
fn a_worker_difficulty_is_frozen_per_job_and_changes_only_with_a_job() {
    // Pool units: default 2^20, judged at 2^20 * 2^-40 = 2^-20.
    let unit = 2f64.powi(-40);
    let pool = start(PoolSimConfig {
        difficulty: "1048576".into(),
        difficulty_unit: unit,
        verdict_delay_max: Duration::ZERO,
        ..Default::default()
    });
    smol::block_on(async {
        let mut a = agent(&pool).await;
        a.register(1, "w").await;
        a.register(2, "other").await;
        assert!(pool.wait_until(T, |s| s.registered_sessions() == 2));
        let old = a.jobs[0].clone();
        pool.set_session_difficulty(1, 22, vec![1]).unwrap();
        let (new, before) = a.next_job().await;
        let set_diff = exmsg::encode(&ExMessage::MiningSetDiff {
            diff_exp: 22,
            session_ids: vec![1],
        });
        assert_eq!(
            before,
            [Frame::Ex(set_diff)],
            "right before the job, only for 1"
        );
        let (low, high) = (2f64.powi(-20), 2f64.powi(-18));
        let shares = [
            a.mine(&old, 1, 1, old.work.ntime, low, Some(high)),
            a.mine(&new, 1, 2, new.work.ntime, low, Some(high)),
            a.mine(&new, 1, 3, new.work.ntime, high, None),
            a.mine(&new, 2, 4, new.work.ntime, low, Some(high)),
        ];
        for s in shares {
            a.submit(s).await;
        }
        assert_eq!(
            a.verdicts(4).await,
            BTreeMap::from([
                (0, exmsg::STATUS_ACCEPT),
                (1, exmsg::STATUS_LOW_DIFFICULTY),
                (2, exmsg::STATUS_ACCEPT),
                (3, exmsg::STATUS_ACCEPT),
            ])
        );
        // The same exponent again changes nothing: no MINING_SET_DIFF.
        pool.set_session_difficulty(1, 22, vec![1]).unwrap();
        assert!(a.next_job().await.1.is_empty());
        let stats = pool.stats();
        assert_eq!(
            stats.connections[&1].session_diff_exps,
            BTreeMap::from([(1, 22)])
        );
    });
}

#[test]
fn checked_verdicts_are_held_a_while_and_overtake_each_other() {
    let pool = start(PoolSimConfig::default());
    smol::block_on(async {
        let mut a = agent(&pool).await;
        a.register(1, "w").await;
        let job = a.jobs[0].clone();
        let first = a.mine(&job, 1, 0, job.work.ntime, EASY, None);
        let mut bytes = Vec::new();
        for ex2 in 0..40 {
            let share = a.mine(&job, 1, ex2, job.work.ntime, EASY, None);
            bytes.extend(exmsg::encode(&ExMessage::Submit(share)));
        }
        // Index 40: a duplicate, answered at once, ahead of the checked ones.
        bytes.extend(exmsg::encode(&ExMessage::Submit(first)));
        a.conn.send_bytes(&bytes).await.unwrap();
        let order = a.responses(41).await;
        assert_eq!(order[0], (40, exmsg::STATUS_DUPLICATE));
        let indexes: Vec<u16> = order[1..].iter().map(|r| r.0).collect();
        let mut sorted = indexes.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..40).collect::<Vec<u16>>());
        assert_ne!(indexes, sorted, "40 verdicts came in submit order");
    });
}

#[test]
fn no_verdict_for_a_worker_unregistered_while_its_share_is_checked() {
    let pool = start(PoolSimConfig::default());
    smol::block_on(async {
        let mut a = agent(&pool).await;
        a.register(1, "w").await;
        let job = a.jobs[0].clone();
        let share = a.mine(&job, 1, 1, job.work.ntime, EASY, None);
        // One write: the pool reads the unregister before any check is done.
        let mut bytes = exmsg::encode(&ExMessage::Submit(share));
        bytes.extend(exmsg::encode(&ExMessage::UnregisterWorker {
            session_id: 1,
        }));
        a.conn.send_bytes(&bytes).await.unwrap();
        assert!(pool.wait_until(T, |s| s.totals.withheld == 1));
        assert_eq!(pool.stats().totals.valid, 1, "credited all the same");
        // Registered again: a new worker, and the index went on counting.
        a.register(1, "w").await;
        let share = a.mine(&job, 1, 2, job.work.ntime, EASY, None);
        a.submit(share).await;
        assert_eq!(a.responses(1).await, [(1, exmsg::STATUS_ACCEPT)]);
    });
}

#[test]
fn jobs_after_a_new_block_are_pruned_to_four_and_the_rest_stale() {
    let pool = start(PoolSimConfig::default());
    smol::block_on(async {
        let mut a = agent(&pool).await;
        a.register(1, "w").await;
        for _ in 0..4 {
            pool.new_job(false);
            a.next_job().await;
        }
        pool.new_job(true);
        let (clean, _) = a.next_job().await;
        assert!(clean.clean);
        assert_ne!(clean.work.prevhash, a.jobs[0].work.prevhash);
        assert_eq!(
            a.jobs[1].work.prevhash, a.jobs[0].work.prevhash,
            "same block"
        );
        // Jobs 0..=5: 2, 3, 4 and 5 kept, of which 2, 3 and 4 stale.
        for (i, job) in a.jobs.clone().iter().enumerate() {
            let share = a.mine(job, 1, i as u32, job.work.ntime, EASY, None);
            a.submit(share).await;
        }
        assert_eq!(
            a.verdicts(6).await.into_values().collect::<Vec<_>>(),
            [36, 36, 37, 37, 37, exmsg::STATUS_ACCEPT]
        );
        assert_eq!(pool.stats().totals.stale, 5);
    });
}

#[test]
fn jobs_are_forgotten_after_their_lifetime_but_never_the_newest() {
    let lifetime = Duration::from_millis(300);
    let pool = start(PoolSimConfig {
        job_lifetime: lifetime,
        ..Default::default()
    });
    smol::block_on(async {
        let mut a = agent(&pool).await;
        a.register(1, "w").await;
        pool.new_job(false);
        a.next_job().await;
        let made = Instant::now();
        let shares: Vec<Submit> = (0..2)
            .map(|i| {
                let job = &a.jobs[i];
                a.mine(job, 1, i as u32, job.work.ntime, EASY, None)
            })
            .collect();
        // The condition is the lifetime itself.
        while made.elapsed() < lifetime {
            smol::Timer::after(lifetime - made.elapsed()).await;
        }
        for s in shares {
            a.submit(s).await;
        }
        assert_eq!(
            a.verdicts(2).await,
            BTreeMap::from([(0, exmsg::STATUS_JOB_NOT_FOUND), (1, exmsg::STATUS_ACCEPT)])
        );
    });
}

#[test]
fn ntime_from_the_job_mintime_to_600_s_past_the_job() {
    let pool = start(PoolSimConfig {
        mintime_behind: 1000,
        ..Default::default()
    });
    smol::block_on(async {
        let mut a = agent(&pool).await;
        a.register(1, "w").await;
        let job = a.jobs[0].clone();
        let t = job.work.ntime;
        for (ex2, ntime) in [(1, t - 1001), (2, t - 1000), (3, t + 600), (4, t + 601)] {
            let share = a.mine(&job, 1, ex2, ntime, EASY, None);
            a.submit(share).await;
        }
        assert_eq!(
            a.verdicts(4).await.into_values().collect::<Vec<_>>(),
            [
                exmsg::STATUS_TIME_TOO_OLD,
                exmsg::STATUS_ACCEPT,
                exmsg::STATUS_ACCEPT,
                exmsg::STATUS_TIME_TOO_NEW
            ]
        );
    });
}

#[test]
fn registers_ignored_as_sserver_ignores_them_and_names_filtered() {
    let pool = start(PoolSimConfig::default());
    smol::block_on(async {
        let mut a = agent(&pool).await;
        a.register(1, "rig,1=a b").await;
        a.register(1, "second").await;
        a.register(0xffff, "too-high").await;
        a.register(2, &"x".repeat(100)).await;
        a.register(3, "").await;
        a.register(0xfffe, "highest").await;
        assert!(pool.wait_until(T, |s| s.totals.ignored_registers == 3
            && s.connections[&1].registers == 3));
        let stats = pool.stats();
        let names: Vec<(u16, &str)> = stats.connections[&1]
            .sessions
            .iter()
            .map(|(id, s)| (*id, s.worker_name.as_str()))
            .collect();
        assert_eq!(
            names,
            [(1, "rig1ab"), (3, "__default__"), (0xfffe, "highest")]
        );
    });
}

#[test]
fn submits_of_a_wrong_size_or_an_unknown_session_take_no_index() {
    let pool = start(PoolSimConfig::default());
    smol::block_on(async {
        let mut a = agent(&pool).await;
        a.register(1, "w").await;
        let job = a.jobs[0].clone();
        let share = a.mine(&job, 1, 1, job.work.ntime, EASY, None);
        let mut wrong = exmsg::encode(&ExMessage::Submit(share));
        wrong[1] = exmsg::CMD_SUBMIT_SHARE; // a plain SUBMIT's cmd on 19 bytes
        a.conn.send_bytes(&wrong).await.unwrap();
        a.submit(Submit {
            session_id: 9,
            ..share
        })
        .await;
        a.submit(share).await;
        assert_eq!(a.responses(1).await, [(0, exmsg::STATUS_ACCEPT)]);
        assert!(a.silent_for(Duration::from_millis(100)).await);
        let t = pool.stats().totals;
        assert_eq!((t.malformed, t.unregistered, t.counted()), (1, 1, 1));
    });
}

#[test]
fn unknown_methods_get_no_answer() {
    let pool = start(PoolSimConfig::default());
    smol::block_on(async {
        let mut a = agent(&pool).await;
        let id = a
            .conn
            .request("mining.extranonce.subscribe", json!([]))
            .await
            .unwrap();
        let id2 = a
            .conn
            .request("mining.subscribe", json!(["again"]))
            .await
            .unwrap();
        let r = a.conn.read_response(id2, T).await.unwrap();
        assert!(r["error"].is_array(), "a second subscribe is refused: {r}");
        assert!(a
            .conn
            .read_response(id, Duration::from_millis(100))
            .await
            .is_err());
        assert_eq!(pool.stats().connections[&1].unanswered_methods, 1);
    });
}

#[test]
fn an_older_server_never_answers_get_capabilities() {
    let pool = start(PoolSimConfig {
        older_server: true,
        ..Default::default()
    });
    smol::block_on(async {
        let mut conn = MinerConn::connect_as_agent(pool.addr()).await.unwrap();
        conn.send_line(r#"{"id":"t","method":"agent.get_capabilities","params":[["verrol"]]}"#)
            .await
            .unwrap();
        conn.subscribe_and_authorize("acct", "", T).await.unwrap();
        conn.send_line(r#"{"id":"c","method":"agent.get_capabilities","params":[["subres"]]}"#)
            .await
            .unwrap();
        conn.read_method("mining.notify", T).await.unwrap();
        assert!(conn
            .read_matching(Duration::from_millis(200), |v| v.get("method").is_none())
            .await
            .is_err());
        let stats = pool.stats();
        assert!(!stats.connections[&1].subres_active());
        assert_eq!(stats.connections[&1].unanswered_methods, 2);
    });
}
