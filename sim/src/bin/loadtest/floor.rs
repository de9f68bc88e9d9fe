//! The fan-out floor of this machine, measured in the same run as the agent: one thread
//! writes the same `mining.notify` line (a job as the pool simulator builds it, stamped
//! with its send time) to every miner's socket, one socket after the other, with the
//! same number of sockets and the same receivers (swarm processes, which time each job
//! from its stamp exactly as they do behind the agent). No agent can deliver a job to
//! every miner faster than this with one thread; the agent's fan-out figures are read
//! against it.

use crate::report::Figures;
use crate::swarm::{self, SwarmProcess, SwarmSpec};
use btcagent_sim::histogram::Histogram;
use btcagent_sim::job::Job;
use btcagent_sim::now_us;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the floor writer needs to know of the run.
pub struct FloorSpec {
    /// Sockets written to: the agent run's miners and probe together.
    pub miners: usize,
    pub per_process: usize,
    pub connect_rate: f64,
    pub jobs: u32,
    /// Merkle branch length of the pool simulator's jobs, so the line is as long.
    pub branch_len: usize,
}

/// The miners' handshake without reading it: the swarm's miners (no version rolling)
/// send subscribe as id 1 and authorize as id 2.
const HANDSHAKE_REPLY: &[u8] = b"{\"id\":1,\"result\":[[[\"mining.notify\",\"f\"]],\"00000001\",8],\"error\":null}\n{\"id\":2,\"result\":true,\"error\":null}\n";

/// Accepts `count` connections and answers their handshakes; stops at the first
/// accept error.
fn accept_all(listener: TcpListener, count: usize) -> io::Result<Vec<TcpStream>> {
    let mut sockets = Vec::with_capacity(count);
    while sockets.len() < count {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.write_all(HANDSHAKE_REPLY)?;
        sockets.push(s);
    }
    Ok(sockets)
}

/// Runs the floor: connects the receivers, sends `jobs` jobs a second apart, and
/// returns the `floor_*` figures.
pub fn measure(spec: &FloorSpec) -> Result<Figures, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("floor: {e}"))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| format!("floor: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let count = spec.miners;
    std::thread::spawn(move || {
        let _ = tx.send(accept_all(listener, count));
    });
    let processes = spec.miners.div_ceil(spec.per_process.max(1));
    let mut swarms = Vec::new();
    for k in 0..processes {
        let miners = spec.miners / processes + usize::from(k < spec.miners % processes);
        swarms.push(SwarmProcess::spawn(&SwarmSpec {
            agent: addr,
            miners,
            name_prefix: format!("f{k}"),
            // They receive only: no share within the measurement.
            share_interval_s: 1e9,
            version_rolling_fraction: 0.0,
            connect_rate: spec.connect_rate / processes as f64,
        })?);
    }
    let limit = Duration::from_secs_f64(spec.miners as f64 / spec.connect_rate + 60.0);
    let mut sockets = match rx.recv_timeout(limit) {
        Ok(Ok(sockets)) => sockets,
        Ok(Err(e)) => return Err(format!("floor: accept: {e}")),
        Err(_) => return Err(format!("floor: not all {count} receivers connected")),
    };
    let started = Instant::now();
    while (swarm::stats_of(&mut swarms)?.authorized as usize) < count {
        if started.elapsed() > limit {
            return Err("floor: the receivers did not take the handshake".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut write_ms = Vec::new();
    let mut line_len = 0;
    for seq in 0..spec.jobs {
        let before = swarm::stats_of(&mut swarms)?.jobs_received;
        let job = Job::build(1, u64::from(seq) + 1, now_us(), true, spec.branch_len);
        let line = job.notify_line();
        line_len = line.len();
        // A different order for every job, so no receiver is always last.
        fastrand::shuffle(&mut sockets);
        let t = Instant::now();
        for s in &mut sockets {
            s.write_all(line.as_bytes())
                .map_err(|e| format!("floor: write: {e}"))?;
        }
        write_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let deadline = Instant::now() + Duration::from_secs(30);
        while swarm::stats_of(&mut swarms)?.jobs_received < before + count as u64 {
            if Instant::now() > deadline {
                return Err("floor: a job did not reach every receiver within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let latency: Histogram = swarm::stop_all(&mut swarms)?.job_latency;
    drop(sockets);

    let mut f = Figures::new();
    let ms = |us: u64| us as f64 / 1e3;
    write_ms.sort_by(f64::total_cmp);
    let median_write = write_ms
        .get(write_ms.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);
    f.insert("floor_jobs".into(), f64::from(spec.jobs));
    f.insert("floor_sockets".into(), count as f64);
    f.insert("floor_message_bytes".into(), line_len as f64);
    f.insert("floor_write_all_ms".into(), median_write);
    f.insert(
        "floor_us_per_write".into(),
        median_write * 1e3 / count.max(1) as f64,
    );
    f.insert("floor_fanout_count".into(), latency.count() as f64);
    f.insert(
        "floor_fanout_p50_ms".into(),
        ms(latency.percentile_us(50.0)),
    );
    f.insert(
        "floor_fanout_p99_ms".into(),
        ms(latency.percentile_us(99.0)),
    );
    f.insert("floor_fanout_max_ms".into(), ms(latency.max_us()));
    Ok(f)
}
