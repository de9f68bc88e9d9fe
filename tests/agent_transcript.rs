//! btcagent against the original agent (btccom/btcagent, branch `golang`), message by
//! message, on both sides: the same fixed scenario drives an agent between a scripted
//! pool stand-in (answering as btcpool's sserver) and scripted Stratum miners, and the
//! transcript of everything that crossed (tests/transcript_support/mod.rs says the
//! format and the normalization) is compared with the one recorded from the original,
//! committed in tests/data/go-agent/.
//!
//! Normalized in both transcripts (so not compared): the session ids the agents give
//! miners (`{minerN}`), the ids an agent picks for its requests to the pool
//! (`<method#k>`), the version after `btccom-agent/` in the user agent, JSON key order
//! and whitespace, timing and how writes are split into TCP segments (btcagent
//! coalesces its writes; messages are parsed from the streams), and the interleaving of
//! different connections within a step. Everything else is compared.
//!
//! Recording (a fact-gathering run, not part of the suite): with
//! `AGENT_TRANSCRIPT_RECORD=/path/to/agent` the scenarios run that binary instead (it
//! must take `-c <config> -l stderr`, as both agents do) and write
//! tests/data/go-agent/<scenario>.txt; `AGENT_TRANSCRIPT_LABEL` is written into the
//! header (what was run). Then `cargo test --test agent_transcript` compares btcagent
//! with those files; btcagent's own transcript lands in
//! target/tmp/agent-transcript/<scenario>.btcagent.txt for reading.
//!
//! The differences that are right are listed in [`accepted_differences`], each with why;
//! everything else must be identical. A message the original did not send at all is
//! not covered by any step's wait condition, so it may be reported in the step after
//! the one that caused it.

mod common;
mod transcript_support;

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use transcript_support::*;

const MINER1: Peer = Peer::Miner(0);
const MINER2: Peer = Peer::Miner(1);
const MINER3: Peer = Peer::Miner(2);
const MINER4: Peer = Peer::Miner(3);
const POOL: Peer = Peer::Pool(0);

const REGISTER_WORKER: u8 = 0x01;
const UNREGISTER_WORKER: u8 = 0x04;

const PREVHASH_A: &str = "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000";
const PREVHASH_B: &str = "b3a58ac0fcd0b2d61e0a5d8ad8e27f5a8e4bb0d4b8f11a3a0b4e1a0c00000000";
const COINB1: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4b03e4b00c04";
const COINB2: &str = "2f4254432e636f6d2fffffffff0100f2052a010000001976a914c825a1ecf2a6830c4401620c3a16f1995057c2ab88ac00000000";
const BRANCH_1: &str = "8e8f1c9e0d3b5b0a2c1e7f6d5c4b3a29180716f5e4d3c2b1a0f9e8d7c6b5a493";
const BRANCH_2: &str = "1f2e3d4c5b6a79880716253443526170819fa0b1c2d3e4f5061728394a5b6c7d";

/// A connection-level difficulty from sserver's controller after 60 s without shares
/// on the connection (it never sees the agent's shares): sent with the next job.
const LATER_DIFFICULTY: &str = r#"{"id":null,"method":"mining.set_difficulty","params":[4096]}"#;

fn job1() -> Job {
    Job {
        id: "1",
        prevhash: PREVHASH_A,
        coinb1: COINB1,
        coinb2: COINB2,
        branches: &[BRANCH_1, BRANCH_2],
        version: 0x2000_0000,
        nbits: 0x1705_dd01,
        ntime: 0x665f_1a00,
        clean: true,
    }
}

/// Same block as job 1, later ntime, another branch: not clean.
fn job2() -> Job {
    Job {
        id: "2",
        branches: &[BRANCH_2, BRANCH_1],
        ntime: 0x665f_1a1e,
        clean: false,
        ..job1()
    }
}

/// A new block: clean.
fn job3() -> Job {
    Job {
        id: "3",
        prevhash: PREVHASH_B,
        branches: &[BRANCH_1],
        ntime: 0x665f_1a3c,
        clean: true,
        ..job1()
    }
}

fn submit(
    worker: &str,
    job: &str,
    ex2: &str,
    ntime: &str,
    nonce: &str,
    mask: Option<&str>,
) -> Value {
    let mut p = vec![
        json!(worker),
        json!(job),
        json!(ex2),
        json!(ntime),
        json!(nonce),
    ];
    if let Some(m) = mask {
        p.push(json!(m));
    }
    Value::Array(p)
}

/// The job id `miner` was last sent for pool job `job` (btcagent's carry the connection).
fn job_id_for(h: &Harness, miner: Peer, job: &str) -> String {
    let log = h.rec.snapshot();
    log.sent_to(miner)
        .filter(|p| p.notify_job().as_deref() == Some(job))
        .filter_map(|p| match p {
            Payload::Json(v) => v["params"][0].as_str().map(String::from),
            _ => None,
        })
        .last()
        .unwrap_or_else(|| panic!("{} never got job {job}", miner.name()))
}

fn got_difficulty(l: &Log, miner: Peer) -> bool {
    l.sent_this_step(miner)
        .any(|p| p.method() == Some("mining.set_difficulty"))
}

// ---------------------------------------------------------------------------------
// The scenarios

struct Scenario {
    name: &'static str,
    about: &'static [&'static str],
    multi_user: bool,
    share_responses: bool,
    script: fn(&mut Harness),
}

const MULTI_USER: Scenario = Scenario {
    name: "multi_user_subres",
    about: &[
        "multi_user_mode on (one sub-account, sub1), submit_response_from_server on,",
        "always_keep_downconn on, one pool connection per sub-account.",
        "Four miners: with and without version rolling (configure before and after",
        "subscribe), a long user agent, a worker name the filters change, a login",
        "without a worker part; shares of all four forms, a rejection (23), a stale",
        "answer (37), responses out of order, one never answered; MINING_SET_DIFF; a",
        "later connection-level mining.set_difficulty; a late joiner; disconnects",
        "down to the last miner, which closes the sub-account's pool connection.",
    ],
    multi_user: true,
    share_responses: true,
    script: multi_user_script,
};

const SINGLE_USER: Scenario = Scenario {
    name: "single_user",
    about: &[
        "multi_user_mode off (the pool entry's sub-account, poolsub),",
        "submit_response_from_server off, always_keep_downconn on, one pool connection.",
        "Two miners (one rolling versions), shares of all four forms answered by the",
        "agent itself, MINING_SET_DIFF, a later connection-level mining.set_difficulty,",
        "disconnects, then SIGTERM.",
    ],
    multi_user: false,
    share_responses: false,
    script: single_user_script,
};

fn multi_user_script(h: &mut Harness) {
    h.step("miner1 subscribes");
    let id = h
        .miner(0)
        .request("mining.subscribe", json!(["cgminer/4.10.0"]));
    h.wait("miner1's subscribe result", |l| l.answered(MINER1, id));

    h.step("miner1 authorizes as sub1.rig1: the agent opens the pool connection of sub1 and registers the miner");
    let id = h
        .miner(0)
        .request("mining.authorize", json!(["sub1.rig1", "x"]));
    h.wait(
        "miner1's authorize result, job 1, its REGISTER_WORKER",
        |l| {
            l.answered(MINER1, id) && l.got_job(MINER1, "1") && l.ex_this_step(REGISTER_WORKER) >= 1
        },
    );

    h.step("miner2 asks for version rolling (1fffe000) before subscribing");
    let id = h.miner(1).request(
        "mining.configure",
        json!([["version-rolling"], {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}]),
    );
    h.wait("miner2's configure result", |l| l.answered(MINER2, id));

    h.step("miner2 subscribes");
    let id = h
        .miner(1)
        .request("mining.subscribe", json!(["bmminer/2.0.0"]));
    h.wait("miner2's subscribe result", |l| l.answered(MINER2, id));

    h.step("miner2 authorizes as sub1.rig2");
    let id = h
        .miner(1)
        .request("mining.authorize", json!(["sub1.rig2", "x"]));
    h.wait(
        "miner2's authorize result, job 1, its REGISTER_WORKER",
        |l| {
            l.answered(MINER2, id) && l.got_job(MINER2, "1") && l.ex_this_step(REGISTER_WORKER) >= 1
        },
    );

    h.step("miner3 subscribes with a long user agent");
    let id = h.miner(2).request(
        "mining.subscribe",
        json!(["NiceMiner/3.1.4-build.20240601-gabcdef0123456789-linux-armv7-controller-c52"]),
    );
    h.wait("miner3's subscribe result", |l| l.answered(MINER3, id));

    h.step("miner3 asks for version rolling with the full mask after subscribing");
    let id = h.miner(2).request(
        "mining.configure",
        json!([["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}]),
    );
    h.wait("miner3's configure result", |l| l.answered(MINER3, id));

    h.step("miner3 authorizes as 'sub1.rig-3,a=b c!' (characters the filters drop)");
    let id = h
        .miner(2)
        .request("mining.authorize", json!(["sub1.rig-3,a=b c!", "x"]));
    h.wait(
        "miner3's authorize result, job 1, its REGISTER_WORKER",
        |l| {
            l.answered(MINER3, id) && l.got_job(MINER3, "1") && l.ex_this_step(REGISTER_WORKER) >= 1
        },
    );

    // Shares: index 0, 1, ... in the order the pool counts them.
    let j1 = job_id_for(h, MINER1, "1");
    h.step(
        "miner1 submits on job 1 with the job's ntime, no version mask; the pool accepts (index 0)",
    );
    h.pool.plan(Plan::Answer(status::ACCEPT));
    let id = h.miner(0).request(
        "mining.submit",
        submit("sub1.rig1", &j1, "00000001", "665f1a00", "1d3c5e7f", None),
    );
    h.wait("miner1's share result", |l| l.answered(MINER1, id));

    h.step(
        "miner1 submits on job 1 with a later ntime; the pool rejects it, low difficulty (index 1)",
    );
    h.pool.plan(Plan::Answer(status::LOW_DIFFICULTY));
    let id = h.miner(0).request(
        "mining.submit",
        submit("sub1.rig1", &j1, "00000002", "665f1a05", "0a1b2c3d", None),
    );
    h.wait("miner1's share result", |l| l.answered(MINER1, id));

    let j1 = job_id_for(h, MINER2, "1");
    h.step("miner2 submits on job 1 with the job's ntime and a version mask; the pool accepts (index 2)");
    h.pool.plan(Plan::Answer(status::ACCEPT));
    let id = h.miner(1).request(
        "mining.submit",
        submit(
            "sub1.rig2",
            &j1,
            "00000001",
            "665f1a00",
            "7e6d5c4b",
            Some("04000000"),
        ),
    );
    h.wait("miner2's share result", |l| l.answered(MINER2, id));

    h.step("miner2 submits on job 1 with a later ntime and a version mask; the pool holds the answer (index 3)");
    h.pool.plan(Plan::Hold);
    let held = h.miner(1).request(
        "mining.submit",
        submit(
            "sub1.rig2",
            &j1,
            "00000002",
            "665f1a07",
            "00c0ffee",
            Some("1fffe000"),
        ),
    );
    h.wait("the pool to count share 3", |l| l.submits() >= 4);

    let j1 = job_id_for(h, MINER3, "1");
    h.step("miner3 submits on job 1 with the job's ntime and a version mask; the pool answers it before miner2's (index 4)");
    h.pool.plan(Plan::Answer(status::ACCEPT));
    let id = h.miner(2).request(
        "mining.submit",
        submit(
            "sub1.rig-3,a=b c!",
            &j1,
            "00000001",
            "665f1a00",
            "55aa55aa",
            Some("00002000"),
        ),
    );
    h.wait("miner3's share result", |l| l.answered(MINER3, id));

    h.step("the pool answers miner2's held share (index 3) after index 4");
    h.pool.answer(0, 3, status::ACCEPT);
    h.wait("miner2's share result", |l| l.answered(MINER2, held));

    // sserver sends MINING_SET_DIFF right before the job that uses it, in one write;
    // here the job waits until the difficulty has reached the miners, because the
    // original agent forwards the two from separate goroutines, in no fixed order.
    h.step("the pool sends MINING_SET_DIFF 2^14 for miner1 and miner3");
    let sessions = [h.sid(0), h.sid(2)];
    h.pool.send_ex(0, &mining_set_diff(14, &sessions));
    h.wait("mining.set_difficulty to miner1 and miner3", |l| {
        got_difficulty(l, MINER1) && got_difficulty(l, MINER3)
    });

    h.step("the pool sends job 2 (same block)");
    h.pool.notify(job2());
    h.wait("job 2 at every miner", |l| {
        [MINER1, MINER2, MINER3].iter().all(|&m| l.got_job(m, "2"))
    });

    let j2 = job_id_for(h, MINER1, "2");
    h.step("miner1 submits on job 2; the pool never answers it (index 5)");
    h.pool.plan(Plan::Hold);
    h.miner(0).request(
        "mining.submit",
        submit("sub1.rig1", &j2, "00000003", "665f1a1e", "31415926", None),
    );
    h.wait("the pool to count share 5", |l| l.submits() >= 6);

    h.step("the pool sends a connection-level mining.set_difficulty 4096 (its controller decaying), then job 3 (a new block)");
    h.pool.notify_after(&[LATER_DIFFICULTY], job3());
    h.wait("job 3 at every miner", |l| {
        [MINER1, MINER2, MINER3].iter().all(|&m| l.got_job(m, "3"))
    });

    h.step("miner4 subscribes");
    let id = h
        .miner(3)
        .request("mining.subscribe", json!(["cgminer/4.12.1"]));
    h.wait("miner4's subscribe result", |l| l.answered(MINER4, id));

    h.step("miner4 authorizes as 'sub1' (no worker part) and joins the running connection");
    let id = h.miner(3).request("mining.authorize", json!(["sub1", "x"]));
    h.wait(
        "miner4's authorize result, job 3, its REGISTER_WORKER",
        |l| {
            l.answered(MINER4, id) && l.got_job(MINER4, "3") && l.ex_this_step(REGISTER_WORKER) >= 1
        },
    );

    let j2 = job_id_for(h, MINER3, "2");
    // The stand-in answers a job from before the new block stale as sserver does; no plan.
    h.step("miner3 submits a late share on job 2 (the old block); the pool answers stale, 37 (index 6)");
    let id = h.miner(2).request(
        "mining.submit",
        submit(
            "sub1.rig-3,a=b c!",
            &j2,
            "00000002",
            "665f1a1e",
            "27182818",
            None,
        ),
    );
    h.wait("miner3's share result", |l| l.answered(MINER3, id));

    let j3 = job_id_for(h, MINER4, "3");
    h.step("miner4 submits on job 3 with a later ntime; the pool accepts (index 7)");
    h.pool.plan(Plan::Answer(status::ACCEPT));
    let id = h.miner(3).request(
        "mining.submit",
        submit("sub1", &j3, "00000001", "665f1a40", "16180339", None),
    );
    h.wait("miner4's share result", |l| l.answered(MINER4, id));

    h.step("miner1 disconnects, its share 5 still unanswered");
    h.miner(0).close();
    h.wait("the agent to close miner1 and unregister it", |l| {
        l.closed_by_agent(MINER1) && l.ex_this_step(UNREGISTER_WORKER) >= 1
    });

    h.step("miner2 disconnects");
    h.miner(1).close();
    h.wait("the agent to close miner2 and unregister it", |l| {
        l.closed_by_agent(MINER2) && l.ex_this_step(UNREGISTER_WORKER) >= 1
    });

    h.step("miner3 disconnects");
    h.miner(2).close();
    h.wait("the agent to close miner3 and unregister it", |l| {
        l.closed_by_agent(MINER3) && l.ex_this_step(UNREGISTER_WORKER) >= 1
    });

    h.step("miner4, the last miner of sub1, disconnects: the agent closes the pool connection");
    h.miner(3).close();
    h.wait(
        "the agent to unregister miner4 and close the pool connection",
        |l| {
            l.closed_by_agent(MINER4)
                && l.ex_this_step(UNREGISTER_WORKER) >= 1
                && l.closed_by_agent(POOL)
        },
    );

    h.step("the agent is stopped (SIGTERM)");
    let agent = h.agent.as_mut().unwrap();
    assert!(
        agent.terminate(),
        "the agent did not exit on SIGTERM; log:\n{}",
        agent.log()
    );
}

fn single_user_script(h: &mut Harness) {
    // Step 1, the agent's start, is open: the connection comes up on its own.
    h.wait("the pool connection's handshake", |l| {
        l.pool_handshake_done(POOL)
    });

    h.step("miner1 subscribes");
    let id = h
        .miner(0)
        .request("mining.subscribe", json!(["cgminer/4.10.0"]));
    h.wait("miner1's subscribe result", |l| l.answered(MINER1, id));

    h.step("miner1 authorizes as sub1.rig1 (the part before '.' is ignored in single-user mode)");
    let id = h
        .miner(0)
        .request("mining.authorize", json!(["sub1.rig1", "x"]));
    h.wait(
        "miner1's authorize result, job 1, its REGISTER_WORKER",
        |l| {
            l.answered(MINER1, id) && l.got_job(MINER1, "1") && l.ex_this_step(REGISTER_WORKER) >= 1
        },
    );

    h.step("miner2 subscribes");
    let id = h
        .miner(1)
        .request("mining.subscribe", json!(["bmminer/2.0.0"]));
    h.wait("miner2's subscribe result", |l| l.answered(MINER2, id));

    h.step("miner2 asks for version rolling (1fffe000) after subscribing");
    let id = h.miner(1).request(
        "mining.configure",
        json!([["version-rolling"], {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}]),
    );
    h.wait("miner2's configure result", |l| l.answered(MINER2, id));

    h.step("miner2 authorizes as rig2 (no '.')");
    let id = h.miner(1).request("mining.authorize", json!(["rig2", "x"]));
    h.wait(
        "miner2's authorize result, job 1, its REGISTER_WORKER",
        |l| {
            l.answered(MINER2, id) && l.got_job(MINER2, "1") && l.ex_this_step(REGISTER_WORKER) >= 1
        },
    );

    let j1 = job_id_for(h, MINER1, "1");
    h.step("miner1 submits on job 1 with the job's ntime, no version mask");
    let id = h.miner(0).request(
        "mining.submit",
        submit("sub1.rig1", &j1, "00000001", "665f1a00", "1d3c5e7f", None),
    );
    h.wait("miner1's share result and the share at the pool", |l| {
        l.answered(MINER1, id) && l.submits() >= 1
    });

    h.step("miner1 submits on job 1 with a later ntime");
    let id = h.miner(0).request(
        "mining.submit",
        submit("sub1.rig1", &j1, "00000002", "665f1a05", "0a1b2c3d", None),
    );
    h.wait("miner1's share result and the share at the pool", |l| {
        l.answered(MINER1, id) && l.submits() >= 2
    });

    let j1 = job_id_for(h, MINER2, "1");
    h.step("miner2 submits on job 1 with the job's ntime and a version mask");
    let id = h.miner(1).request(
        "mining.submit",
        submit(
            "rig2",
            &j1,
            "00000001",
            "665f1a00",
            "7e6d5c4b",
            Some("04000000"),
        ),
    );
    h.wait("miner2's share result and the share at the pool", |l| {
        l.answered(MINER2, id) && l.submits() >= 3
    });

    h.step("miner2 submits on job 1 with a later ntime and a version mask");
    let id = h.miner(1).request(
        "mining.submit",
        submit(
            "rig2",
            &j1,
            "00000002",
            "665f1a07",
            "00c0ffee",
            Some("1fffe000"),
        ),
    );
    h.wait("miner2's share result and the share at the pool", |l| {
        l.answered(MINER2, id) && l.submits() >= 4
    });

    // The job follows in its own step, as in the multi-user scenario.
    h.step("the pool sends MINING_SET_DIFF 2^15 for miner2");
    let sessions = [h.sid(1)];
    h.pool.send_ex(0, &mining_set_diff(15, &sessions));
    h.wait("mining.set_difficulty to miner2", |l| {
        got_difficulty(l, MINER2)
    });

    h.step("the pool sends job 2 (same block)");
    h.pool.notify(job2());
    h.wait("job 2 at every miner", |l| {
        l.got_job(MINER1, "2") && l.got_job(MINER2, "2")
    });

    h.step(
        "the pool sends a connection-level mining.set_difficulty 4096, then job 3 (a new block)",
    );
    h.pool.notify_after(&[LATER_DIFFICULTY], job3());
    h.wait("job 3 at every miner", |l| {
        l.got_job(MINER1, "3") && l.got_job(MINER2, "3")
    });

    h.step("miner1 disconnects");
    h.miner(0).close();
    h.wait("the agent to close miner1 and unregister it", |l| {
        l.closed_by_agent(MINER1) && l.ex_this_step(UNREGISTER_WORKER) >= 1
    });

    h.step("miner2 disconnects");
    h.miner(1).close();
    h.wait("the agent to close miner2 and unregister it", |l| {
        l.closed_by_agent(MINER2) && l.ex_this_step(UNREGISTER_WORKER) >= 1
    });

    h.step("the agent is stopped (SIGTERM)");
    let agent = h.agent.as_mut().unwrap();
    assert!(
        agent.terminate(),
        "the agent did not exit on SIGTERM; log:\n{}",
        agent.log()
    );
    h.wait("the pool connection to close", |l| l.closed_by_agent(POOL));
}

fn config(s: &Scenario, pool: SocketAddr, listen_port: u16) -> Value {
    json!({
        "multi_user_mode": s.multi_user,
        "agent_type": "btc",
        // On, so that a miner arriving while the original agent has not yet taken in
        // its own handshake is parked instead of disconnected (a race of the
        // original: tests/data/go-agent/README.md).
        "always_keep_downconn": true,
        "submit_response_from_server": s.share_responses,
        "agent_listen_ip": "127.0.0.1",
        "agent_listen_port": listen_port,
        "proxy": [],
        "use_proxy": false,
        "pools": [[pool.ip().to_string(), pool.port(), "poolsub"]],
        "status_file": "",
        "advanced": {
            "pool_connection_number_per_subaccount": 1,
            "pool_connection_dial_timeout_seconds": 15,
        }
    })
}

fn data_path(s: &Scenario) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/go-agent")
        .join(format!("{}.txt", s.name))
}

/// Runs the scenario against the agent under test; returns its transcript and what
/// the pool stand-in ignored (as sserver would).
fn run(s: &Scenario, recording: Option<&str>) -> (String, Vec<String>) {
    let mut h = Harness::new();
    let (cmd, port) = match recording {
        Some(bin) => (std::process::Command::new(bin), free_port()),
        None => (common::agent_command(), 0),
    };
    h.pool.set_job(job1());
    h.step("the agent starts");
    h.agent = Some(AgentProcess::start(
        cmd,
        &config(s, h.pool.addr, port),
        s.name,
    ));
    (s.script)(&mut h);
    assert_eq!(
        h.pool.plans_left(),
        0,
        "the agent never sent a planned share"
    );
    let mut header: Vec<String> = vec![format!("scenario {}", s.name)];
    header.extend(s.about.iter().map(|l| l.to_string()));
    header.push(String::new());
    header.push(match recording {
        Some(bin) => std::env::var("AGENT_TRANSCRIPT_LABEL")
            .unwrap_or_else(|_| format!("recorded from {bin}")),
        None => "recorded from btcagent (this build)".into(),
    });
    header.push("format and normalization: tests/transcript_support/mod.rs".into());
    let dropped = h.pool.dropped();
    if recording.is_some() {
        header.extend(
            dropped
                .iter()
                .map(|d| format!("ignored by the pool stand-in, as by sserver: {d}")),
        );
    }
    (h.transcript(&header), dropped)
}

fn check(s: &Scenario) {
    if let Ok(bin) = std::env::var("AGENT_TRANSCRIPT_RECORD") {
        let (text, _) = run(s, Some(&bin));
        let path = data_path(s);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        eprintln!("recorded {}", path.display());
        return;
    }
    let expected_text = std::fs::read_to_string(data_path(s)).expect("the recorded transcript");
    let (actual_text, dropped) = run(s, None);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("agent-transcript");
    std::fs::create_dir_all(&out).unwrap();
    let actual_path = out.join(format!("{}.btcagent.txt", s.name));
    std::fs::write(&actual_path, &actual_text).unwrap();

    let expected = parse_transcript(&expected_text);
    let actual = parse_transcript(&actual_text);
    let titles = |steps: &[Step]| steps.iter().map(|s| s.title.clone()).collect::<Vec<_>>();
    assert_eq!(
        titles(&expected),
        titles(&actual),
        "the scenario's steps changed since the recording: record it again"
    );
    let (expected, actual) = accepted_differences(expected, actual);
    let mut report = String::new();
    for d in &dropped {
        report.push_str(&format!(
            "ignored by the pool stand-in, as by sserver: {d}\n"
        ));
    }
    for (n, (e, a)) in expected.iter().zip(&actual).enumerate() {
        let e: Vec<String> = e.lines.iter().map(Line::text).collect();
        let a: Vec<String> = a.lines.iter().map(Line::text).collect();
        if e != a {
            report.push_str(&format!(
                "== {} {}\n{}",
                n + 1,
                expected[n].title,
                diff_lines(&e, &a)
            ));
        }
    }
    assert!(
        report.is_empty(),
        "btcagent differs from the original agent (- original, + btcagent; after the accepted differences);\nbtcagent's transcript: {}\n{report}",
        actual_path.display()
    );
}

#[test]
fn multi_user_with_share_responses_matches_the_original_agent() {
    check(&MULTI_USER);
}

#[test]
fn single_user_without_share_responses_matches_the_original_agent() {
    check(&SINGLE_USER);
}

// ---------------------------------------------------------------------------------
// The differences that are right

/// Rewrites both transcripts so that the differences that are right disappear, and
/// nothing else. Each rule says why it is right.
fn accepted_differences(mut expected: Vec<Step>, mut actual: Vec<Step>) -> (Vec<Step>, Vec<Step>) {
    for steps in [&mut expected, &mut actual] {
        // Job ids that name their connection ("3-17"): btcagent routes a share on the
        // job's own connection while that one is up (a miner moved between
        // connections loses nothing, issue 11 item 9), and sends the pool only the
        // part after '-'. Miners treat job ids as opaque strings: what matters is
        // that the pool's job id comes back in the SUBMIT, which the ex lines check.
        for line in steps.iter_mut().flat_map(|s| s.lines.iter_mut()) {
            strip_connection_from_job_id(line);
        }
        // A SUBMIT_SHARE(_WITH_VER) is the same share as a _WITH_TIME(_VER) carrying
        // the job's own ntime: sserver takes the job's ntime for the forms without
        // one (StratumMinerBitcoin.cc). The Go agent keeps no jobs, so it always
        // sends the ntime; btcagent saves the 4 bytes when it equals the job's.
        let mut ntimes = HashMap::new();
        for step in steps.iter_mut() {
            for line in step.lines.iter_mut() {
                short_submit_form(line, &mut ntimes);
            }
        }
        for step in steps.iter_mut() {
            // The difficulty and the version mask a miner gets before its first job
            // are independent settings, both in force for the job that follows:
            // their order is not part of the protocol (the Go agent sends the mask
            // first, btcagent the difficulty).
            settings_in_one_order(&mut step.lines);
            // The connection test's capabilities list: sserver answers any
            // agent.get_capabilities with its fixed list, and before authorize its
            // null dispatcher ignores "subres" (StratumSession.cc,
            // StratumSessionBitcoin.cc handleRequest_AgentGetCapabilities). The test
            // only waits for a line; what it asks for has no effect.
            for line in step.lines.iter_mut() {
                forget_conn_test_params(line);
            }
        }
    }
    // A share on a job older than its connection's latest clean job (a new block):
    // sserver answers it 37 for certain (StratumServerBitcoin.cc marks every older job
    // stale), so btcagent answers the miner 21 itself and never sends it (issue 11
    // item 7). The original sends it: its SUBMIT and the pool's 37 go, and the pool's
    // later indexes on that connection are one lower for btcagent.
    unsent_stale_shares(&mut expected);
    let mut masks = VersionMasks::default();
    for (e, a) in expected.iter_mut().zip(actual.iter_mut()) {
        for line in e.lines.iter_mut() {
            // What a miner's mining.configure is answered: the Go agent answers the
            // miner's own mask (here ffffffff) even when it knows the pool's, and
            // narrows it with mining.set_version_mask only after authorize. btcagent
            // answers the bits the miner may really roll, its mask AND the pool's
            // (BIP 310: the result's mask is what the miner may change), as the
            // pool itself answers configure.
            masks.configure_result_as_allowed(line);
            // The name the pool shows: sserver filters the worker name of a
            // REGISTER_WORKER again (Stratum.cc filterWorkerName: ',' and '=' go too),
            // the Go agent's filter keeps ',' and '='. btcagent must send (and show in
            // its logs and status) the name the pool shows (issue 11 item 5).
            pool_filtered_worker_name(line);
            // Miners see 36 and 37 as 21, as sserver's own JSON path shows them
            // (StratumSessionBitcoin.cc responseError); the Go agent passes the raw
            // code, which miner firmware may not know (issue 11 item 4).
            stale_as_21(line);
        }
        // sserver ignores a REGISTER_WORKER over 100 bytes
        // (StratumMessageDispatcher.cc): the Go agent sends the miner's whole user
        // agent, so a long one leaves the miner unregistered at a real pool and all
        // its shares dropped. An agent must bound the user agent so that the frame
        // fits; where it cuts is its choice (the string only labels the worker in the
        // pool's statistics). What is left must be the start of the miner's.
        truncated_client_agent(&mut e.lines, &a.lines);
    }
    (expected, actual)
}

fn unsent_stale_shares(steps: &mut [Step]) {
    #[derive(Default)]
    struct PoolJobs {
        live: HashSet<u64>,
        stale: HashSet<u64>,
        submits: u64,
        /// Indexes of the shares btcagent would not have sent.
        unsent: Vec<u64>,
    }
    let mut pools: HashMap<String, PoolJobs> = HashMap::new();
    for step in steps.iter_mut() {
        step.lines.retain_mut(|line| {
            let Some(pool) = line.pool().map(String::from) else {
                return true;
            };
            let p = pools.entry(pool).or_default();
            if line.to == "agent" && line.method() == Some("mining.notify") {
                let v = line.json().unwrap();
                if let Some(id) = v["params"][0].as_str().and_then(|i| i.parse().ok()) {
                    if v["params"][8] == json!(true) {
                        let live: Vec<u64> = p.live.drain().collect();
                        p.stale.extend(live);
                    }
                    p.stale.remove(&id);
                    p.live.insert(id);
                }
                return true;
            }
            let Kind::Ex(name, fields) = &mut line.kind else {
                return true;
            };
            if name.starts_with("SUBMIT_SHARE") {
                let index = p.submits;
                p.submits += 1;
                if fields["job_id"]
                    .as_u64()
                    .is_some_and(|j| p.stale.contains(&j))
                {
                    p.unsent.push(index);
                    return false;
                }
            } else if name == "SUBMIT_RESPONSE" {
                let Some(index) = fields["index"].as_u64() else {
                    return true;
                };
                if p.unsent.contains(&index) {
                    return false;
                }
                let lower = p.unsent.iter().filter(|&&u| u < index).count() as u64;
                fields["index"] = json!(index - lower);
            }
            true
        });
    }
}

fn strip_connection_from_job_id(line: &mut Line) {
    let slot = match line.method() {
        Some("mining.notify") if line.from == "agent" => 0,
        Some("mining.submit") if line.to == "agent" => 1,
        _ => return,
    };
    if let Kind::Json(v) = &mut line.kind {
        if let Some(id) = v["params"][slot].as_str() {
            let id = strip_connection(id).to_string();
            v["params"][slot] = json!(id);
        }
    }
}

fn short_submit_form(line: &mut Line, ntimes: &mut HashMap<(String, u64), String>) {
    if line.method() == Some("mining.notify") && line.to == "agent" && line.pool().is_some() {
        let v = line.json().unwrap();
        if let (Some(id), Some(ntime)) = (
            v["params"][0].as_str().and_then(|i| i.parse::<u64>().ok()),
            v["params"][7].as_str(),
        ) {
            ntimes.insert((line.from.clone(), id), ntime.to_string());
        }
        return;
    }
    let Some(pool) = line.pool().map(String::from) else {
        return;
    };
    let Kind::Ex(name, fields) = &mut line.kind else {
        return;
    };
    let short = match name.as_str() {
        "SUBMIT_SHARE_WITH_TIME" => "SUBMIT_SHARE",
        "SUBMIT_SHARE_WITH_TIME_VER" => "SUBMIT_SHARE_WITH_VER",
        _ => return,
    };
    let job = fields["job_id"].as_u64().unwrap_or(u64::MAX);
    if ntimes.get(&(pool, job)).map(String::as_str) == fields["ntime"].as_str() {
        fields.as_object_mut().unwrap().remove("ntime");
        *name = short.to_string();
    }
}

fn settings_in_one_order(lines: &mut [Line]) {
    let is_setting = |l: &Line| {
        l.from == "agent"
            && l.miner().is_some()
            && matches!(
                l.method(),
                Some("mining.set_difficulty" | "mining.set_version_mask")
            )
    };
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        while j < lines.len() && is_setting(&lines[j]) && lines[j].to == lines[i].to {
            j += 1;
        }
        if j > i {
            lines[i..j].sort_by(|a, b| a.method().cmp(&b.method()));
            i = j;
        } else {
            i += 1;
        }
    }
}

fn forget_conn_test_params(line: &mut Line) {
    if line.from != "agent" || line.method() != Some("agent.get_capabilities") {
        return;
    }
    if let Kind::Json(v) = &mut line.kind {
        if v["id"] == "<agent.get_capabilities#1>" {
            v["params"] = json!("<connection test>");
        }
    }
}

/// sserver's filterWorkerName (btcpool src/Stratum.cc).
fn sserver_filter(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-._:|^/".contains(*c))
        .collect()
}

fn pool_filtered_worker_name(line: &mut Line) {
    if let Kind::Ex(name, fields) = &mut line.kind {
        if name == "REGISTER_WORKER" {
            if let Some(w) = fields["worker_name"].as_str() {
                let filtered = sserver_filter(w);
                fields["worker_name"] = json!(if filtered.is_empty() {
                    "__default__".to_string()
                } else {
                    filtered
                });
            }
        }
    }
}

fn stale_as_21(line: &mut Line) {
    if line.from != "agent" || line.miner().is_none() {
        return;
    }
    if let Kind::Json(v) = &mut line.kind {
        if matches!(v["error"][0].as_u64(), Some(36 | 37)) {
            v["error"] = json!([21, "Job not found (=stale)", null]);
        }
    }
}

/// The masks a transcript has shown so far: the pool's, and each miner's request.
#[derive(Default)]
struct VersionMasks {
    pool: Option<u32>,
    requested: HashMap<String, u32>,
}

impl VersionMasks {
    fn configure_result_as_allowed(&mut self, line: &mut Line) {
        let hex = |v: &Value| v.as_str().and_then(|m| u32::from_str_radix(m, 16).ok());
        match (line.method(), line.pool(), line.miner()) {
            (Some("mining.set_version_mask"), Some(_), _) if line.to == "agent" => {
                self.pool = hex(&line.json().unwrap()["params"][0]);
            }
            (Some("mining.configure"), _, Some(miner)) if line.to == "agent" => {
                if let Some(m) = hex(&line.json().unwrap()["params"][1]["version-rolling.mask"]) {
                    self.requested.insert(miner.to_string(), m);
                }
            }
            (None, _, Some(miner)) if line.from == "agent" => {
                let (Some(pool), Some(&requested)) = (self.pool, self.requested.get(miner)) else {
                    return;
                };
                if let Kind::Json(v) = &mut line.kind {
                    if v["result"]["version-rolling"] == true
                        && v["result"]["version-rolling.mask"].is_string()
                    {
                        v["result"]["version-rolling.mask"] =
                            json!(format!("{:08x}", requested & pool));
                    }
                }
            }
            _ => {}
        }
    }
}

fn register_len(fields: &Value) -> usize {
    let s = |k: &str| fields[k].as_str().map(str::len).unwrap_or(0);
    4 + 2 + s("client_agent") + 1 + s("worker_name") + 1
}

fn truncated_client_agent(expected: &mut [Line], actual: &[Line]) {
    for line in expected.iter_mut() {
        let Kind::Ex(name, fields) = &mut line.kind else {
            continue;
        };
        if name != "REGISTER_WORKER" {
            continue;
        }
        let theirs = actual.iter().find_map(|l| match &l.kind {
            Kind::Ex(n, f) if n == "REGISTER_WORKER" && f["session"] == fields["session"] => {
                Some(f)
            }
            _ => None,
        });
        let Some(theirs) = theirs else { continue };
        let (Some(full), Some(cut)) = (
            fields["client_agent"].as_str(),
            theirs["client_agent"].as_str(),
        ) else {
            continue;
        };
        let mut candidate = fields.clone();
        candidate["client_agent"] = json!(cut);
        if !cut.is_empty() && full.starts_with(cut) && register_len(&candidate) <= 100 {
            *fields = candidate;
        }
    }
}

// ---------------------------------------------------------------------------------
// The rules accept what they say and nothing more

fn line(text: &str) -> Line {
    Line::parse(text)
}

#[test]
fn job_ids_lose_only_a_numeric_connection_prefix() {
    assert_eq!(strip_connection("3-17"), "17");
    assert_eq!(strip_connection("17"), "17");
    assert_eq!(strip_connection("a-17"), "a-17");
    assert_eq!(strip_connection("3-"), "3-");
    assert_eq!(strip_connection("3-1-7"), "3-1-7");
    let mut l = line(
        r#"miner1>agent json {"id":3,"method":"mining.submit","params":["w","3-17","00000001","665f1a00","00000000"]}"#,
    );
    strip_connection_from_job_id(&mut l);
    assert_eq!(l.json().unwrap()["params"][1], "17");
    // Only the job id slot: a worker name that looks like one stays.
    let mut l = line(
        r#"miner1>agent json {"id":3,"method":"mining.submit","params":["3-17","1","00000001","665f1a00","00000000"]}"#,
    );
    strip_connection_from_job_id(&mut l);
    assert_eq!(l.json().unwrap()["params"][0], "3-17");
}

#[test]
fn a_submit_with_time_is_short_only_with_its_jobs_own_ntime() {
    let mut ntimes = HashMap::new();
    let mut notify = line(
        r#"pool>agent json {"id":null,"method":"mining.notify","params":["1","p","c1","c2",[],"20000000","1705dd01","665f1a00",true]}"#,
    );
    short_submit_form(&mut notify, &mut ntimes);
    let submit = |ntime: &str, job: u8| {
        line(&format!(
            r#"agent>pool ex SUBMIT_SHARE_WITH_TIME {{"extranonce2":"00000001","job_id":{job},"nonce":"00000002","ntime":"{ntime}","session":"{{miner1}}"}}"#
        ))
    };
    let mut same = submit("665f1a00", 1);
    short_submit_form(&mut same, &mut ntimes);
    assert_eq!(
        same.text(),
        r#"agent>pool ex SUBMIT_SHARE {"extranonce2":"00000001","job_id":1,"nonce":"00000002","session":"{miner1}"}"#
    );
    for (ntime, job) in [("665f1a01", 1), ("665f1a00", 2)] {
        let mut other = submit(ntime, job);
        let before = other.text();
        short_submit_form(&mut other, &mut ntimes);
        assert_eq!(other.text(), before, "ntime {ntime} on job {job}");
    }
}

#[test]
fn only_difficulty_and_mask_swap_and_never_across_a_job() {
    let d = r#"agent>miner1 json {"id":null,"method":"mining.set_difficulty","params":[8192]}"#;
    let m =
        r#"agent>miner1 json {"id":null,"method":"mining.set_version_mask","params":["1fffe000"]}"#;
    let n = r#"agent>miner1 json {"id":null,"method":"mining.notify","params":["1"]}"#;
    let d2 = r#"agent>miner1 json {"id":null,"method":"mining.set_difficulty","params":[4096]}"#;
    let sorted = |texts: &[&str]| {
        let mut lines: Vec<Line> = texts.iter().map(|t| line(t)).collect();
        settings_in_one_order(&mut lines);
        lines.iter().map(Line::text).collect::<Vec<_>>()
    };
    assert_eq!(sorted(&[m, d, n]), sorted(&[d, m, n]));
    assert_ne!(sorted(&[n, d]), sorted(&[d, n]));
    assert_ne!(sorted(&[d, d2]), sorted(&[d2, d]));
}

#[test]
fn a_cut_user_agent_must_be_a_prefix_and_fit_100_bytes() {
    let reg = |agent: &str| {
        line(&format!(
            r#"agent>pool ex REGISTER_WORKER {{"client_agent":"{agent}","session":"{{miner1}}","worker_name":"rig1"}}"#
        ))
    };
    let full = "x".repeat(120);
    let cut = "x".repeat(60);
    let mut expected = vec![reg(&full)];
    truncated_client_agent(&mut expected, &[reg(&cut)]);
    assert_eq!(expected[0].text(), reg(&cut).text());
    for theirs in ["y".repeat(60), "x".repeat(95), String::new()] {
        let mut expected = vec![reg(&full)];
        truncated_client_agent(&mut expected, &[reg(&theirs)]);
        assert_eq!(expected[0].text(), reg(&full).text(), "{theirs:?}");
    }
}

#[test]
fn only_36_and_37_become_21() {
    for (code, becomes) in [(36, 21), (37, 21), (23, 23), (21, 21)] {
        let mut l = line(&format!(
            r#"agent>miner1 json {{"error":[{code},"x",null],"id":5,"result":null}}"#
        ));
        stale_as_21(&mut l);
        assert_eq!(l.json().unwrap()["error"][0], becomes);
    }
}

#[test]
fn the_configure_answer_is_the_miners_mask_and_the_pools() {
    let mut masks = VersionMasks::default();
    let mut lines = [
        line(
            r#"pool>agent json {"id":null,"method":"mining.set_version_mask","params":["1fffe000"]}"#,
        ),
        line(
            r#"miner3>agent json {"id":2,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"ffffffff"}]}"#,
        ),
        line(
            r#"agent>miner3 json {"error":null,"id":2,"result":{"version-rolling":true,"version-rolling.mask":"ffffffff"}}"#,
        ),
    ];
    for l in lines.iter_mut() {
        masks.configure_result_as_allowed(l);
    }
    assert_eq!(
        lines[2].json().unwrap()["result"]["version-rolling.mask"],
        "1fffe000"
    );
}

#[test]
fn sserver_drops_comma_and_equals_from_worker_names() {
    assert_eq!(sserver_filter("rig-3,a=bc"), "rig-3abc");
    assert_eq!(sserver_filter("a.b_c:d|e^f/g"), "a.b_c:d|e^f/g");
}

#[test]
fn committed_transcripts_read_back_line_for_line() {
    for s in [&MULTI_USER, &SINGLE_USER] {
        let text = std::fs::read_to_string(data_path(s)).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("== "))
            .collect();
        let steps = parse_transcript(&text);
        let back: Vec<String> = steps
            .iter()
            .flat_map(|s| s.lines.iter().map(Line::text))
            .collect();
        assert_eq!(lines, back, "{}", s.name);
        assert!(steps
            .iter()
            .flat_map(|s| &s.lines)
            .all(|l| !matches!(l.kind, Kind::Other(_))));
    }
}

#[test]
fn a_share_on_a_job_before_the_new_block_is_not_sent() {
    let mut steps = parse_transcript(concat!(
        "== 1 jobs\n",
        r#"pool>agent json {"id":null,"method":"mining.notify","params":["1","p","c1","c2",[],"20000000","1705dd01","665f1a1e",true]}"#,
        "\n",
        r#"pool>agent json {"id":null,"method":"mining.notify","params":["2","q","c1","c2",[],"20000000","1705dd01","665f1a1f",true]}"#,
        "\n== 2 shares\n",
        r#"agent>pool ex SUBMIT_SHARE {"extranonce2":"00000002","job_id":1,"nonce":"1","session":"{miner1}"}"#,
        "\n",
        r#"agent>pool ex SUBMIT_SHARE {"extranonce2":"00000003","job_id":2,"nonce":"2","session":"{miner1}"}"#,
        "\n",
        r#"pool>agent ex SUBMIT_RESPONSE {"index":0,"status":37}"#,
        "\n",
        r#"pool>agent ex SUBMIT_RESPONSE {"index":1,"status":1798084231}"#,
        "\n",
    ));
    unsent_stale_shares(&mut steps);
    let left: Vec<String> = steps[1].lines.iter().map(Line::text).collect();
    assert_eq!(
        left,
        [
            r#"agent>pool ex SUBMIT_SHARE {"extranonce2":"00000003","job_id":2,"nonce":"2","session":"{miner1}"}"#,
            r#"pool>agent ex SUBMIT_RESPONSE {"index":0,"status":1798084231}"#,
        ]
    );
}
