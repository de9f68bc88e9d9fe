//! loadtest: btcagent at farm scale. The pool simulator runs in this process, the
//! agent (the real release binary) and the simulated miners in child processes, so
//! the agent is measured alone; see docs/bench.md.

mod agent;
mod floor;
mod procfs;
mod report;
mod swarm;
mod syscalls;

use agent::{AgentOptions, AgentProcess, StratumStatus, StratumUpstream};
use btcagent_sim::histogram::Histogram;
use btcagent_sim::pool::{PoolSim, PoolSimConfig, PoolStats, ShareCounts};
use btcagent_sim::rlimit;
use btcagent_sim::stratum_pool::{
    StratumPool, StratumPoolConfig, StratumPoolStats, StratumShareCounts,
};
use report::Figures;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use swarm::{SwarmProcess, SwarmSnapshot, SwarmSpec};

const HELP: &str = "\
loadtest: btcagent under farm-scale load (pool simulator <- agent <- simulated miners)

USAGE: loadtest [OPTIONS]
  --miners N                  simulated miners in the swarm [1000]
  --probe N                   miners in a separate latency probe process [20]
  --seconds S                 measuring window [60]
  --warmup S                  wait after every miner is authorized [10]
  --share-interval S          mean seconds between shares per miner [10]
  --job-interval S            the pool sends a new job every S seconds [10]
  --version-rolling-fraction F  miners rolling versions [0.5]
  --connect-rate N            new miner connections per second during ramp-up [2000]
  --per-process N             most miners per swarm process [10000]
  --pool-connections N        advanced.pool_connection_number_per_subaccount [5]
  --coalesce-ms N             advanced.submit_coalesce_ms [the agent's default]
  --server-responses          submit_response_from_server: true (share latency)
  --cut-pool-at S             drop one pool connection S seconds into the window
  --after-window EVENT        then, with the miners still mining, one of:
                                pool-fails: the pool goes away for good, a second one
                                  (next in the agent's list) is up: failover
                                reload: the agent's config is rewritten to the second
                                  pool and it gets SIGHUP
                                handoff: SIGUSR2, the agent execs its binary in place and
                                  the new program takes the miners over (Linux, btcagent
                                  only: the Go agent has none)
                                upgrade: the agent runs from a copy of its binary in the
                                  work dir; the copy is replaced (write, rename) and the
                                  agent gets SIGHUP, which reloads and hands over
                              and time until every miner is at the second pool (after a
                              handoff: registered again on the new program's pool
                              connections) with a job, counting disconnects and lost
                              shares
  --stratum                   the pool is a plain Stratum V1 pool (ckpool-like), not an
                              agent-protocol one: the agent checks every share, forwards
                              those meeting the pool's difficulty (2^-26) and accepts the
                              rest (the miners mine at 2^-30: 1 in 16 forwarded); not
                              with --cut-pool-at or --after-window
  --agent-bin PATH            agent binary [btcagent next to this executable]; the
                              original Go agent takes the same config and flags
  --floor-jobs N              after the agent, the fan-out floor: one thread writes N
                              jobs to as many sockets and the same receivers [10]; 0: none
  --json FILE                 also write the figures as JSON
  --check                     exit 1 unless every share is valid, none lost, no disconnects
  --median A.json B.json ..   print the median table of earlier --json runs (with --json: write it)
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    PoolFails,
    Reload,
    /// SIGUSR2: the agent hands itself over to its binary, exec'd in place.
    Handoff,
    /// The agent's binary file is replaced, then SIGHUP: a reload and a handoff.
    Upgrade,
}

impl std::str::FromStr for Event {
    type Err = String;
    fn from_str(s: &str) -> Result<Event, String> {
        match s {
            "pool-fails" => Ok(Event::PoolFails),
            "reload" => Ok(Event::Reload),
            "handoff" => Ok(Event::Handoff),
            "upgrade" => Ok(Event::Upgrade),
            _ => Err(format!(
                "{s:?}: --after-window takes pool-fails, reload, handoff or upgrade"
            )),
        }
    }
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::PoolFails => "the pool fails over to the next",
            Event::Reload => "a reload moves the agent to another pool",
            Event::Handoff => "the agent hands over to its binary (SIGUSR2)",
            Event::Upgrade => "the agent's binary is replaced and it hands over (SIGHUP)",
        }
    }

    /// `event_kind` in the figures.
    fn kind(self) -> f64 {
        match self {
            Event::PoolFails => 1.0,
            Event::Reload => 2.0,
            Event::Handoff => 3.0,
            Event::Upgrade => 4.0,
        }
    }

    /// The miners move to a second pool; a handoff keeps the pool.
    fn second_pool(self) -> bool {
        matches!(self, Event::PoolFails | Event::Reload)
    }

    fn hands_over(self) -> bool {
        matches!(self, Event::Handoff | Event::Upgrade)
    }
}

struct Options {
    miners: usize,
    probe: usize,
    seconds: f64,
    warmup: f64,
    share_interval: f64,
    job_interval: f64,
    version_rolling_fraction: f64,
    connect_rate: f64,
    per_process: usize,
    pool_connections: u32,
    coalesce_ms: Option<u64>,
    server_responses: bool,
    cut_pool_at: Option<f64>,
    after_window: Option<Event>,
    stratum: bool,
    agent_bin: PathBuf,
    floor_jobs: u32,
    json: Option<PathBuf>,
    check: bool,
}

fn main() {
    let code = match run_cli() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("loadtest: {e}");
            2
        }
    };
    std::process::exit(code);
}

fn run_cli() -> Result<bool, String> {
    let mut args = pico_args::Arguments::from_env();
    let arg = |e: pico_args::Error| e.to_string();
    if args.contains(["-h", "--help"]) {
        print!("{HELP}");
        return Ok(true);
    }
    if args.contains("--swarm-worker") {
        let spec = SwarmSpec::from_args(&mut args).map_err(arg)?;
        swarm::run_worker(spec)?;
        return Ok(true);
    }
    let json: Option<PathBuf> = args.opt_value_from_str("--json").map_err(arg)?;
    if args.contains("--median") {
        let files: Vec<PathBuf> = args.finish().into_iter().map(PathBuf::from).collect();
        return print_median(&files, json);
    }
    let opts = Options {
        miners: args
            .opt_value_from_str("--miners")
            .map_err(arg)?
            .unwrap_or(1000),
        probe: args
            .opt_value_from_str("--probe")
            .map_err(arg)?
            .unwrap_or(20),
        seconds: args
            .opt_value_from_str("--seconds")
            .map_err(arg)?
            .unwrap_or(60.0),
        warmup: args
            .opt_value_from_str("--warmup")
            .map_err(arg)?
            .unwrap_or(10.0),
        share_interval: args
            .opt_value_from_str("--share-interval")
            .map_err(arg)?
            .unwrap_or(10.0),
        job_interval: args
            .opt_value_from_str("--job-interval")
            .map_err(arg)?
            .unwrap_or(10.0),
        version_rolling_fraction: args
            .opt_value_from_str("--version-rolling-fraction")
            .map_err(arg)?
            .unwrap_or(0.5),
        connect_rate: args
            .opt_value_from_str("--connect-rate")
            .map_err(arg)?
            .unwrap_or(2000.0),
        per_process: args
            .opt_value_from_str("--per-process")
            .map_err(arg)?
            .unwrap_or(10_000),
        pool_connections: args
            .opt_value_from_str("--pool-connections")
            .map_err(arg)?
            .unwrap_or(5),
        coalesce_ms: args.opt_value_from_str("--coalesce-ms").map_err(arg)?,
        server_responses: args.contains("--server-responses"),
        cut_pool_at: args.opt_value_from_str("--cut-pool-at").map_err(arg)?,
        after_window: args.opt_value_from_str("--after-window").map_err(arg)?,
        stratum: args.contains("--stratum"),
        agent_bin: args
            .opt_value_from_str("--agent-bin")
            .map_err(arg)?
            .unwrap_or_else(agent::default_binary),
        floor_jobs: args
            .opt_value_from_str("--floor-jobs")
            .map_err(arg)?
            .unwrap_or(10),
        json,
        check: args.contains("--check"),
    };
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unknown arguments {rest:?} (see --help)"));
    }
    validate(&opts)?;
    let (figures, problems) = run(&opts)?;
    let title = format!(
        "btcagent load test{}{}",
        if opts.stratum {
            ", plain Stratum pool"
        } else {
            ""
        },
        match (opts.cut_pool_at, opts.after_window) {
            (Some(_), _) => ", one pool connection cut".to_string(),
            (None, Some(e)) => format!(", then {}", e.name()),
            (None, None) => String::new(),
        }
    );
    println!("{}", report::table(&figures, &title));
    if let Some(path) = &opts.json {
        write_json(path, &figures)?;
    }
    for p in &problems {
        eprintln!("loadtest: {p}");
    }
    Ok(!opts.check || problems.is_empty())
}

fn validate(o: &Options) -> Result<(), String> {
    if o.miners == 0 && o.probe == 0 {
        return Err("--miners and --probe are both 0: nothing to measure".into());
    }
    if o.per_process == 0 || o.seconds <= 0.0 || o.warmup < 0.0 || o.connect_rate <= 0.0 {
        return Err("--per-process, --seconds and --connect-rate must be > 0".into());
    }
    if !(0.0..=1.0).contains(&o.version_rolling_fraction) {
        return Err("--version-rolling-fraction must be within 0..1".into());
    }
    if o.pool_connections == 0 || o.job_interval <= 0.0 {
        return Err("--pool-connections and --job-interval must be > 0".into());
    }
    if o.stratum && (o.cut_pool_at.is_some() || o.after_window.is_some()) {
        return Err("--cut-pool-at and --after-window are for agent-protocol pools".into());
    }
    if let Some(at) = o.cut_pool_at {
        if at < 0.0 || at >= o.seconds {
            return Err("--cut-pool-at must fall inside the window (0..--seconds)".into());
        }
    }
    let limit = rlimit::raise_nofile_limit().map_err(|e| format!("open-files limit: {e}"))?;
    // The agent inherits this limit and needs one descriptor per miner plus a few.
    let needed = (o.miners + o.probe + 64) as u64;
    if needed > limit {
        return Err(format!(
            "{} miners need about {needed} open files in the agent, the limit is {limit}",
            o.miners + o.probe
        ));
    }
    if (o.per_process + 64) as u64 > limit {
        return Err(format!(
            "--per-process {} exceeds the open-files limit {limit}",
            o.per_process
        ));
    }
    Ok(())
}

fn write_json(path: &PathBuf, figures: &Figures) -> Result<(), String> {
    let text = serde_json::to_string_pretty(&report::to_json(figures)).unwrap_or_default();
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

fn print_median(files: &[PathBuf], json: Option<PathBuf>) -> Result<bool, String> {
    if files.is_empty() {
        return Err("--median needs JSON files of earlier runs".into());
    }
    let runs = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            report::from_json(&text).map_err(|e| format!("{}: {e}", f.display()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let median = report::median(&runs);
    let title = format!("median of {} runs", runs.len());
    println!("{}", report::table(&median, &title));
    if let Some(path) = json {
        write_json(&path, &median)?;
    }
    Ok(true)
}

/// The pool simulator's counters, summed over every connection it has seen.
#[derive(Clone, Debug, Default)]
struct PoolSnapshot {
    shares: ShareCounts,
    bytes_in: u64,
    bytes_out: u64,
    reads: u64,
    /// Submit ex-messages weighted by their size at the protocol minimum.
    min_submit_bytes: u64,
    submits: u64,
    /// A plain Stratum pool's verdicts (`shares` stays empty there).
    stratum_shares: StratumShareCounts,
}

impl PoolSnapshot {
    /// Both pools' shares count: the miners mined at both.
    fn add(&mut self, other: &PoolSnapshot) {
        let (a, b) = (&mut self.shares, &other.shares);
        a.valid += b.valid;
        a.invalid += b.invalid;
        a.stale += b.stale;
        a.duplicate += b.duplicate;
        a.unregistered += b.unregistered;
        a.malformed += b.malformed;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.reads += other.reads;
        self.min_submit_bytes += other.min_submit_bytes;
        self.submits += other.submits;
    }

    fn of(stats: &PoolStats) -> PoolSnapshot {
        let mut s = PoolSnapshot {
            shares: stats.totals,
            ..Default::default()
        };
        for c in stats.connections.values() {
            s.bytes_in += c.bytes_in;
            s.bytes_out += c.bytes_out;
            s.reads += c.reads;
            let f = &c.submit_forms;
            // SUBMIT_SHARE 15 bytes, with time or version 19, with both 23.
            s.min_submit_bytes +=
                15 * f.plain + 19 * (f.with_time + f.with_ver) + 23 * f.with_time_ver;
            s.submits += f.plain + f.with_time + f.with_ver + f.with_time_ver;
        }
        s
    }

    fn of_stratum(stats: &StratumPoolStats) -> PoolSnapshot {
        let mut s = PoolSnapshot {
            stratum_shares: stats.totals,
            ..Default::default()
        };
        for c in stats.connections.values() {
            s.bytes_in += c.bytes_in;
            s.bytes_out += c.bytes_out;
            s.reads += c.reads;
        }
        s
    }
}

/// The pool simulator the agent mines at.
enum Upstream {
    Agent(PoolSim),
    Stratum(StratumPool),
}

impl Upstream {
    fn addr(&self) -> SocketAddr {
        match self {
            Upstream::Agent(p) => p.addr(),
            Upstream::Stratum(p) => p.addr(),
        }
    }

    /// The agent-protocol pool simulator (`--cut-pool-at` and `--after-window` need it).
    fn agent(&self) -> Option<&PoolSim> {
        match self {
            Upstream::Agent(p) => Some(p),
            Upstream::Stratum(_) => None,
        }
    }

    fn agent_or_err(&self) -> Result<&PoolSim, String> {
        self.agent()
            .ok_or_else(|| "this needs an agent-protocol pool".to_string())
    }

    fn snapshot(&self) -> PoolSnapshot {
        match self {
            Upstream::Agent(p) => PoolSnapshot::of(&p.stats()),
            Upstream::Stratum(p) => PoolSnapshot::of_stratum(&p.stats()),
        }
    }

    /// Shares the pool has given a verdict.
    fn counted(&self) -> u64 {
        match self {
            Upstream::Agent(p) => p.stats().totals.counted(),
            Upstream::Stratum(p) => p.stats().totals.total(),
        }
    }

    fn wait_connections(&self, within: Duration, n: usize) -> bool {
        match self {
            Upstream::Agent(p) => p.wait_until(within, |s| s.open_count() >= n),
            Upstream::Stratum(p) => p.wait_until(within, |s| s.open_count() >= n),
        }
    }

    fn open_count(&self) -> usize {
        match self {
            Upstream::Agent(p) => p.stats().open_count(),
            Upstream::Stratum(p) => p.stats().open_count(),
        }
    }
}

/// `--stratum`: the pool's difficulty (2^-26, about 64 hashes a share) and the miners'
/// (2^-30, the agent's `stratum_start_difficulty` and `stratum_min_difficulty`: about 4
/// hashes a share, cheap for the simulated miners), so 1 share in 16 is forwarded.
const STRATUM_POOL_DIFFICULTY: &str = "0.00000001490116119384765625";
const STRATUM_MINER_DIFFICULTY: f64 = 1.0 / (1u64 << 30) as f64;

fn stratum_pool_config(o: &Options) -> StratumPoolConfig {
    StratumPoolConfig {
        job_interval: Some(secs(o.job_interval)),
        start_difficulty: STRATUM_POOL_DIFFICULTY.into(),
        ..StratumPoolConfig::ckpool()
    }
}

/// Everything read at one instant.
struct Snapshot {
    at: Instant,
    agent: procfs::ProcSample,
    pool: PoolSnapshot,
    swarm: SwarmSnapshot,
    probe: SwarmSnapshot,
    swarm_cpu_s: f64,
    probe_cpu_s: f64,
    own_cpu_s: f64,
}

struct Bench {
    pool: Upstream,
    /// The pool the `--after-window` event moves the agent to.
    second: Option<PoolSim>,
    agent: AgentProcess,
    swarms: Vec<SwarmProcess>,
    probe: Vec<SwarmProcess>,
}

impl Bench {
    fn snapshot(&mut self) -> Result<Snapshot, String> {
        let cpu = |workers: &[SwarmProcess]| {
            workers
                .iter()
                .filter_map(|w| procfs::sample(w.pid()).ok())
                .map(|s| s.cpu_s)
                .sum::<f64>()
        };
        Ok(Snapshot {
            at: Instant::now(),
            agent: procfs::sample(self.agent.pid()).map_err(|e| format!("agent: {e}"))?,
            pool: self.pool.snapshot(),
            swarm: swarm::stats_of(&mut self.swarms)?,
            probe: swarm::stats_of(&mut self.probe)?,
            swarm_cpu_s: cpu(&self.swarms),
            probe_cpu_s: cpu(&self.probe),
            own_cpu_s: procfs::sample(std::process::id())
                .map(|s| s.cpu_s)
                .unwrap_or(0.0),
        })
    }

    fn swarm_and_probe(&mut self) -> Result<SwarmSnapshot, String> {
        let mut both = swarm::stats_of(&mut self.swarms)?;
        let probe = swarm::stats_of(&mut self.probe)?;
        both.jobs_received += probe.jobs_received;
        Ok(both)
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn run(o: &Options) -> Result<(Figures, Vec<String>), String> {
    if o.after_window.is_some_and(Event::hands_over) {
        // Before anything starts: a binary without a handoff would be killed by
        // SIGUSR2, or keep running its old program after the upgrade's SIGHUP.
        agent::btcagent_version(&o.agent_bin)
            .map_err(|e| format!("--after-window: {e}: the Go agent has no handoff"))?;
    }
    let mut problems = Vec::new();
    let work_dir = std::env::temp_dir().join(format!("btcagent-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
    let pool = if o.stratum {
        Upstream::Stratum(
            StratumPool::start(stratum_pool_config(o))
                .map_err(|e| format!("Stratum pool simulator: {e}"))?,
        )
    } else {
        Upstream::Agent(
            PoolSim::start(PoolSimConfig {
                listen: "127.0.0.1:0".parse().expect("literal address"),
                job_interval: Some(secs(o.job_interval)),
                ..PoolSimConfig::default()
            })
            .map_err(|e| format!("pool simulator: {e}"))?,
        )
    };
    let second = match o.after_window {
        Some(e) if e.second_pool() => Some(
            PoolSim::start(PoolSimConfig {
                listen: "127.0.0.1:0".parse().expect("literal address"),
                job_interval: Some(secs(o.job_interval)),
                ..PoolSimConfig::default()
            })
            .map_err(|e| format!("second pool simulator: {e}"))?,
        ),
        _ => None,
    };
    let mut pools = vec![pool.addr()];
    if let (Some(Event::PoolFails), Some(second)) = (o.after_window, &second) {
        pools.push(second.addr());
    }
    let agent = AgentProcess::start(&AgentOptions {
        binary: o.agent_bin.clone(),
        pools,
        pool_connections: o.pool_connections,
        server_responses: o.server_responses,
        coalesce_ms: o.coalesce_ms,
        work_dir: work_dir.clone(),
        stratum: o.stratum.then(|| StratumUpstream {
            user: "acct.farm1".into(),
            miner_difficulty: STRATUM_MINER_DIFFICULTY,
        }),
        run_copy: o.after_window == Some(Event::Upgrade),
    })?;
    if o.after_window == Some(Event::Handoff) && !agent.catches(libc::SIGUSR2)? {
        return Err(format!(
            "--after-window handoff: {} does not catch SIGUSR2 (it would die of it): this btcagent has no handoff",
            o.agent_bin.display()
        ));
    }
    eprintln!(
        "loadtest: agent pid {} on {}, log {}",
        agent.pid(),
        agent.listen,
        agent.log.display()
    );
    let conns = o.pool_connections as usize;
    if !pool.wait_connections(Duration::from_secs(15), conns) {
        problems.push(format!(
            "only {} of {conns} pool connections came up",
            pool.open_count()
        ));
    }
    std::thread::sleep(Duration::from_secs(1));
    let idle = procfs::sample(agent.pid()).map_err(|e| format!("agent: {e}"))?;
    let mut bench = Bench {
        pool,
        second,
        agent,
        swarms: Vec::new(),
        probe: Vec::new(),
    };

    // Ramp-up: the probe first (all at once), then the swarm at a bounded rate.
    let base = SwarmSpec {
        agent: bench.agent.listen,
        miners: o.probe,
        name_prefix: "probe".into(),
        share_interval_s: o.share_interval,
        version_rolling_fraction: o.version_rolling_fraction,
        connect_rate: 0.0,
    };
    if o.probe > 0 {
        bench.probe.push(SwarmProcess::spawn(&base)?);
    }
    let processes = o.miners.div_ceil(o.per_process);
    for k in 0..processes {
        let miners = o.miners / processes + usize::from(k < o.miners % processes);
        bench.swarms.push(SwarmProcess::spawn(&SwarmSpec {
            miners,
            name_prefix: format!("s{k}"),
            connect_rate: o.connect_rate / processes as f64,
            ..base.clone()
        })?);
    }
    let total = o.miners + o.probe;
    let ramp_started = Instant::now();
    let ramp_limit = secs(o.miners as f64 / o.connect_rate + 60.0);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let swarm = bench.swarm_and_probe()?;
        let registered = match bench.pool.agent() {
            Some(pool) => pool.stats().registered_sessions(),
            // A Stratum pool sees the agent's connections, not its miners: the miners
            // authorized by the agent (which gives each a job at once) stand for them.
            None => (swarm.authorized + swarm::stats_of(&mut bench.probe)?.authorized) as usize,
        };
        if registered >= total && swarm.authorized as usize >= o.miners {
            break;
        }
        if !bench.agent.alive() {
            return Err(format!(
                "the agent died during ramp-up; its log:\n{}",
                agent::tail(&bench.agent.log)
            ));
        }
        if ramp_started.elapsed() > ramp_limit {
            problems.push(format!(
                "ramp-up incomplete after {:.0} s: {registered} of {total} {}",
                ramp_started.elapsed().as_secs_f64(),
                if o.stratum {
                    "miners authorized"
                } else {
                    "sessions registered at the pool"
                }
            ));
            break;
        }
    }
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    eprintln!("loadtest: {total} miners up after {ramp_s:.1} s; warming up");
    std::thread::sleep(secs(o.warmup));

    eprintln!("loadtest: measuring for {} s", o.seconds);
    let counter = syscalls::SyscallCounter::start(bench.agent.pid());
    let a = bench.snapshot()?;
    let window_end = a.at + secs(o.seconds);
    let mut cut = Figures::new();
    if let Some(at) = o.cut_pool_at {
        std::thread::sleep((a.at + secs(at)).saturating_duration_since(Instant::now()));
        cut = cut_one_connection(&mut bench, o, total)?;
    }
    std::thread::sleep(window_end.saturating_duration_since(Instant::now()));
    let b = bench.snapshot()?;
    let syscall_counts = counter.and_then(|c| c.finish());
    if !bench.agent.alive() {
        problems.push("the agent died during the window".into());
    }
    match o.after_window {
        Some(event) if event.hands_over() => {
            cut.extend(handoff(&mut bench, o, total, event, &mut problems)?);
        }
        Some(event) => cut.extend(after_window(&mut bench, o, total, event)?),
        None => {}
    }

    // Stop the miners, let the agent forward what it still holds, then count.
    let final_probe = swarm::stop_all(&mut bench.probe)?;
    let final_swarm = swarm::stop_all(&mut bench.swarms)?;
    let mut last_counted = u64::MAX;
    let mut stable_since = Instant::now();
    let settle_limit = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle_limit && stable_since.elapsed() < Duration::from_secs(1) {
        let counted = bench.pool.counted();
        if counted != last_counted {
            last_counted = counted;
            stable_since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut final_pool = bench.pool.snapshot();
    if let Some(second) = &bench.second {
        final_pool.add(&PoolSnapshot::of(&second.stats()));
    }
    let final_agent = procfs::sample(bench.agent.pid()).unwrap_or(b.agent);
    // The shares the agent accepted without forwarding them are counted nowhere else.
    let stratum_status = if o.stratum {
        let settled = SystemTime::now();
        match bench
            .agent
            .stratum_status_after(settled, Duration::from_secs(15))
        {
            Ok(status) => Some(status),
            Err(e) => {
                problems.push(format!("the agent's status: {e}"));
                None
            }
        }
    } else {
        None
    };
    bench.agent.stop(Duration::from_secs(10));
    let log_complaints = agent::log_complaints(&bench.agent.log);
    drop(bench);

    let mut f = figures(
        o,
        &idle,
        &a,
        &b,
        ramp_s,
        &final_swarm,
        &final_probe,
        &final_pool,
        &final_agent,
        cut,
    );
    if o.stratum {
        stratum_figures(
            &mut f,
            &a,
            &b,
            &final_swarm,
            &final_probe,
            &final_pool,
            stratum_status.as_ref(),
        );
        let (warnings, errors, first) = log_complaints;
        f.insert("agent_log_warnings".into(), warnings as f64);
        f.insert("agent_log_errors".into(), errors as f64);
        for line in first {
            eprintln!("loadtest: agent log: {line}");
        }
    }
    if let Some(counts) = syscall_counts {
        let window = (b.at - a.at).as_secs_f64();
        let shares = f.get("window_shares_counted").copied().unwrap_or(f64::NAN);
        let mut total = 0;
        for (name, count) in counts {
            total += count;
            f.insert(format!("syscalls_{name}_per_s"), count as f64 / window);
        }
        f.insert("syscalls_per_share".into(), total as f64 / shares);
    } else {
        eprintln!("loadtest: perf not available: no system-call counts");
    }
    if o.floor_jobs > 0 {
        eprintln!("loadtest: the fan-out floor: {total} sockets, one writer thread");
        match floor::measure(&floor::FloorSpec {
            miners: total,
            per_process: o.per_process,
            connect_rate: o.connect_rate,
            jobs: o.floor_jobs,
            branch_len: if o.stratum {
                stratum_pool_config(o).merkle_branch_len
            } else {
                PoolSimConfig::default().merkle_branch_len
            },
        }) {
            Ok(floor) => {
                f.extend(floor);
                floor_ratios(&mut f);
            }
            // The agent's figures stand without it.
            Err(e) => eprintln!("loadtest: {e}"),
        }
    }
    if o.check {
        check(&f, &mut problems);
    }
    if problems.is_empty() {
        let _ = std::fs::remove_dir_all(&work_dir);
    } else {
        eprintln!(
            "loadtest: agent config and log kept in {}",
            work_dir.display()
        );
    }
    Ok((f, problems))
}

/// Sleeps until half-way between the pool's last job and its next one (jobs every
/// `job_interval` seconds).
fn sleep_until_between_jobs(stats: &PoolStats, job_interval: f64) {
    let last_job_us = stats
        .open_connections()
        .flat_map(|c| c.job_sent_at_us.values().copied())
        .max()
        .unwrap_or(0);
    let interval_us = (job_interval * 1e6) as u64;
    let now = btcagent_sim::now_us();
    let mut target = last_job_us + interval_us / 2;
    while target < now {
        target += interval_us;
    }
    std::thread::sleep(Duration::from_micros(target - now));
}

/// Drops the pool connection with the most miners, half-way between two jobs, and
/// times the agent's recovery: its miners registered on the sibling connections
/// again, and each of them given a job.
fn cut_one_connection(bench: &mut Bench, o: &Options, total: usize) -> Result<Figures, String> {
    // Half-way between jobs, so a regular job does not pass for a recovery job.
    sleep_until_between_jobs(&bench.pool.agent_or_err()?.stats(), o.job_interval);

    let stats = bench.pool.agent_or_err()?.stats();
    let victim = stats
        .open_connections()
        .max_by_key(|c| c.sessions.len())
        .ok_or("no open pool connection to cut")?;
    let (victim_id, moved) = (victim.id, victim.sessions.len());
    let jobs_before = bench.swarm_and_probe()?.jobs_received;
    eprintln!("loadtest: cutting pool connection {victim_id} ({moved} miners)");
    let cut_at = Instant::now();
    let pool = bench.pool.agent_or_err()?;
    pool.drop_connection(victim_id);
    let closed = pool.wait_until(Duration::from_secs(5), |s| {
        s.connections.get(&victim_id).is_none_or(|c| !c.open)
    });
    let reregistered = closed
        && pool.wait_until(Duration::from_secs(30), |s| {
            s.registered_sessions() >= total
        });
    let reregistered_ms = cut_at.elapsed().as_secs_f64() * 1e3;
    let mut have_job_ms = f64::NAN;
    while cut_at.elapsed() < Duration::from_secs(30) {
        if bench.swarm_and_probe()?.jobs_received >= jobs_before + moved as u64 {
            have_job_ms = cut_at.elapsed().as_secs_f64() * 1e3;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut f = Figures::new();
    f.insert("cut_moved_miners".into(), moved as f64);
    f.insert(
        "cut_reregistered_ms".into(),
        if reregistered {
            reregistered_ms
        } else {
            f64::NAN
        },
    );
    f.insert("cut_miners_have_job_ms".into(), have_job_ms);
    Ok(f)
}

/// The `--after-window` event, with the miners still mining: the pool fails (the
/// agent's list has the second one next), or the agent is reloaded with a config
/// naming only the second pool. Times until every miner is registered at the second
/// pool and every miner has had a job since, and counts the disconnects meanwhile.
fn after_window(
    bench: &mut Bench,
    o: &Options,
    total: usize,
    event: Event,
) -> Result<Figures, String> {
    let second_addr = bench
        .second
        .as_ref()
        .map(|p| p.addr())
        .ok_or("no second pool")?;
    let before = bench.swarm_and_probe()?;
    let disconnects_before = before.disconnects + swarm::stats_of(&mut bench.probe)?.disconnects;
    eprintln!("loadtest: {}", event.name());
    let at = Instant::now();
    match event {
        Event::PoolFails => {
            let pool = bench.pool.agent_or_err()?;
            pool.refuse_connections();
            pool.drop_all();
        }
        Event::Reload => bench.agent.reload_with_pools(&[second_addr])?,
        Event::Handoff | Event::Upgrade => return Err("a handoff is timed by fn handoff".into()),
    }
    let second = bench.second.as_ref().ok_or("no second pool")?;
    let limit = Duration::from_secs(120);
    let moved = second.wait_until(limit, |s| s.registered_sessions() >= total);
    let moved_ms = at.elapsed().as_secs_f64() * 1e3;
    let mut have_job_ms = f64::NAN;
    while at.elapsed() < limit {
        if bench.swarm_and_probe()?.jobs_received >= before.jobs_received + total as u64 {
            have_job_ms = at.elapsed().as_secs_f64() * 1e3;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Mining goes on at the second pool for a while before the counts are taken.
    std::thread::sleep(secs(o.share_interval * 2.0));
    let after = bench.swarm_and_probe()?;
    let disconnects =
        after.disconnects + swarm::stats_of(&mut bench.probe)?.disconnects - disconnects_before;
    let mut f = Figures::new();
    f.insert("event_miners".into(), total as f64);
    f.insert(
        "event_at_second_pool_ms".into(),
        if moved { moved_ms } else { f64::NAN },
    );
    f.insert("event_miners_have_job_ms".into(), have_job_ms);
    f.insert("event_disconnects".into(), disconnects as f64);
    f.insert("event_kind".into(), event.kind());
    Ok(f)
}

/// `--after-window handoff|upgrade`, with the miners still mining and half-way between
/// two jobs (a regular job on the old connections must not pass for the new program's):
/// SIGUSR2, or the binary replaced and SIGHUP. Times until the old pool connections
/// are closed, until every miner is registered on the new program's connections and
/// until every miner has had a job since; counts the disconnects meanwhile, and checks
/// that it is the same process (pid and start time) that serves them.
fn handoff(
    bench: &mut Bench,
    o: &Options,
    total: usize,
    event: Event,
    problems: &mut Vec<String>,
) -> Result<Figures, String> {
    let pool = bench.pool.agent_or_err()?;
    sleep_until_between_jobs(&pool.stats(), o.job_interval);

    let pid = bench.agent.pid();
    let started = procfs::start_ticks(pid).map_err(|e| format!("agent: {e}"))?;
    let old: std::collections::BTreeSet<u64> =
        pool.stats().open_connections().map(|c| c.id).collect();
    let mut log = agent::LogTail::from_end(&bench.agent.log);
    let before = bench.swarm_and_probe()?;
    let probe_before = swarm::stats_of(&mut bench.probe)?;
    let disconnects_before = before.disconnects + probe_before.disconnects;
    let rejected_before = before.rejected + probe_before.rejected;
    eprintln!("loadtest: {}", event.name());
    let at = Instant::now();
    let at_us = btcagent_sim::now_us();
    match event {
        Event::Handoff => bench.agent.signal(libc::SIGUSR2),
        _ => {
            bench.agent.replace_binary()?;
            bench.agent.signal(libc::SIGHUP);
        }
    }
    let ms = |t: Instant| t.duration_since(at).as_secs_f64() * 1e3;
    let (mut handing, mut took_over, mut refused) = (None, None, None);
    let (mut old_closed, mut registered, mut have_job) = (None, None, None);
    let limit = Duration::from_secs(120);
    while at.elapsed() < limit && refused.is_none() {
        for line in log.new_lines() {
            match agent::handoff_line(&line) {
                Some(agent::HandoffLog::Handing { miners, to }) => {
                    eprintln!("loadtest: the agent hands {miners} miners to {to}");
                    handing = Some(miners);
                }
                Some(agent::HandoffLog::TookOver { miners, of }) => {
                    if of.is_some_and(|of| of != miners) {
                        problems.push(format!(
                            "the new program took over {miners} of {} miners",
                            of.unwrap_or(0)
                        ));
                    }
                    took_over.get_or_insert((miners, Instant::now()));
                }
                Some(agent::HandoffLog::Refused { reason }) => refused = Some(reason),
                None => {}
            }
        }
        let pool = bench.pool.agent_or_err()?;
        if old_closed.is_none()
            && pool.wait_until(Duration::ZERO, |s| {
                old.iter()
                    .all(|id| s.connections.get(id).is_none_or(|c| !c.open))
            })
        {
            old_closed = Some(Instant::now());
        }
        if registered.is_none()
            && pool.wait_until(Duration::ZERO, |s| {
                let new = s.open_connections().filter(|c| !old.contains(&c.id));
                new.map(|c| c.sessions.len()).sum::<usize>() >= total
            })
        {
            registered = Some(Instant::now());
        }
        if have_job.is_none()
            && bench.swarm_and_probe()?.jobs_received >= before.jobs_received + total as u64
        {
            have_job = Some((Instant::now(), btcagent_sim::now_us()));
        }
        if took_over.is_some() && old_closed.is_some() && registered.is_some() && have_job.is_some()
        {
            break;
        }
        if !bench.agent.alive() {
            problems.push("the agent died in the handoff".into());
            break;
        }
        // As often as the other events poll: each poll asks every swarm process.
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(reason) = &refused {
        problems.push(format!("handoff refused: {reason}"));
    } else if took_over.is_none() {
        problems.push(format!(
            "no \"handoff: took over\" in the agent's log within {} s",
            limit.as_secs()
        ));
    }
    // A regular job sent on the old connections after the signal, before every miner
    // had a job, would pass for one of the new program's.
    let pool = bench.pool.agent_or_err()?;
    let late_old_job =
        have_job.is_some_and(|(_, until_us)| pool_has_job_between(pool, &old, at_us, until_us));
    if late_old_job {
        problems.push("a regular job went out on the old pool connections after the signal: the time to a job may be early".into());
    }
    // Mining goes on for a while before the counts are taken.
    std::thread::sleep(secs(o.share_interval * 2.0));
    let after = bench.swarm_and_probe()?;
    let probe_after = swarm::stats_of(&mut bench.probe)?;
    let disconnects = after.disconnects + probe_after.disconnects - disconnects_before;
    // Shares found on the old program's jobs, answered stale by the new one.
    let rejected = after.rejected + probe_after.rejected - rejected_before;
    let same_pid = bench.agent.alive()
        && bench.agent.pid() == pid
        && procfs::start_ticks(pid).is_ok_and(|t| t == started);
    if !same_pid {
        problems.push(format!("the agent's process {pid} is gone or not the same"));
    }
    let nan = f64::NAN;
    let mut f = Figures::new();
    f.insert("event_miners".into(), total as f64);
    f.insert("event_kind".into(), event.kind());
    f.insert(
        "event_refused".into(),
        f64::from(u8::from(refused.is_some())),
    );
    f.insert(
        "event_handed_miners".into(),
        handing.map_or(nan, |n| n as f64),
    );
    f.insert(
        "event_took_over_miners".into(),
        took_over.map_or(nan, |(n, _)| n as f64),
    );
    f.insert(
        "event_took_over_ms".into(),
        took_over.map_or(nan, |(_, t)| ms(t)),
    );
    f.insert("event_old_closed_ms".into(), old_closed.map_or(nan, ms));
    f.insert("event_reregistered_ms".into(), registered.map_or(nan, ms));
    f.insert(
        "event_miners_have_job_ms".into(),
        have_job.map_or(nan, |(t, _)| ms(t)),
    );
    f.insert("event_disconnects".into(), disconnects as f64);
    f.insert("event_rejected_at_miners".into(), rejected as f64);
    f.insert("event_same_pid".into(), f64::from(u8::from(same_pid)));
    Ok(f)
}

/// Whether any of the connections `ids` was sent a job within `from_us..=until_us`.
fn pool_has_job_between(
    pool: &PoolSim,
    ids: &std::collections::BTreeSet<u64>,
    from_us: u64,
    until_us: u64,
) -> bool {
    pool.wait_until(Duration::ZERO, |s| {
        ids.iter().filter_map(|id| s.connections.get(id)).any(|c| {
            c.job_sent_at_us
                .values()
                .any(|&t| (from_us..=until_us).contains(&t))
        })
    })
}

/// The agent's fan-out over the floor's, both over every miner's socket (the probe,
/// a separate process of a few miners, has no counterpart in the floor run).
fn floor_ratios(f: &mut Figures) {
    for p in ["p50", "p99"] {
        let agent = f.get(&format!("fanout_swarm_{p}_ms")).copied();
        let floor = f.get(&format!("floor_fanout_{p}_ms")).copied();
        if let (Some(agent), Some(floor)) = (agent, floor) {
            f.insert(format!("fanout_swarm_{p}_over_floor"), agent / floor);
        }
    }
}

/// A counter's growth over the window. The pool simulator forgets the oldest closed
/// connections, so a sum over connections could in principle shrink: never underflow.
fn delta(after: u64, before: u64) -> f64 {
    after.saturating_sub(before) as f64
}

fn insert_latency(f: &mut Figures, prefix: &str, h: &Histogram) {
    let ms = |us: u64| us as f64 / 1e3;
    f.insert(format!("{prefix}_count"), h.count() as f64);
    f.insert(format!("{prefix}_p50_ms"), ms(h.percentile_us(50.0)));
    f.insert(format!("{prefix}_p99_ms"), ms(h.percentile_us(99.0)));
    f.insert(format!("{prefix}_max_ms"), ms(h.max_us()));
}

#[allow(clippy::too_many_arguments)]
fn figures(
    o: &Options,
    idle: &procfs::ProcSample,
    a: &Snapshot,
    b: &Snapshot,
    ramp_s: f64,
    final_swarm: &SwarmSnapshot,
    final_probe: &SwarmSnapshot,
    final_pool: &PoolSnapshot,
    final_agent: &procfs::ProcSample,
    cut: Figures,
) -> Figures {
    let mut f = cut;
    let mut put = |k: &str, v: f64| {
        f.insert(k.to_string(), v);
    };
    let window = (b.at - a.at).as_secs_f64();
    let miners = (o.miners + o.probe) as f64;
    put("miners", o.miners as f64);
    put("probe_miners", o.probe as f64);
    put("window_s", window);
    put("ramp_s", ramp_s);
    put("share_interval_s", o.share_interval);
    put("job_interval_s", o.job_interval);
    put("version_rolling_fraction", o.version_rolling_fraction);
    put("pool_connections", o.pool_connections as f64);
    put(
        "server_responses",
        if o.server_responses { 1.0 } else { 0.0 },
    );

    put("agent_rss_idle_kb", idle.rss_kb as f64);
    put("agent_rss_kb", b.agent.rss_kb as f64);
    put(
        "agent_hwm_kb",
        final_agent.hwm_kb.max(b.agent.hwm_kb) as f64,
    );
    put(
        "agent_bytes_per_miner",
        (b.agent.rss_kb as f64 - idle.rss_kb as f64) * 1024.0 / miners,
    );

    let sent = (b.swarm.shares_submitted + b.probe.shares_submitted) as f64
        - (a.swarm.shares_submitted + a.probe.shares_submitted) as f64;
    let counted = delta(b.pool.shares.counted(), a.pool.shares.counted());
    let agent_cpu = b.agent.cpu_s - a.agent.cpu_s;
    put("window_shares_sent", sent);
    put("window_shares_counted", counted);
    put("shares_per_s", counted / window);
    put("agent_cpu_pct", agent_cpu / window * 100.0);
    put(
        "agent_cpu_ms_per_1000_shares",
        agent_cpu * 1e3 / (counted / 1e3),
    );

    let bytes_in = delta(b.pool.bytes_in, a.pool.bytes_in);
    let reads = delta(b.pool.reads, a.pool.reads);
    let submits = delta(b.pool.submits, a.pool.submits);
    put("agent_to_pool_bytes_per_s", bytes_in / window);
    put("agent_to_pool_kbps", bytes_in * 8.0 / 1e3 / window);
    put("agent_to_pool_bytes_per_share", bytes_in / counted);
    put(
        "protocol_min_bytes_per_share",
        delta(b.pool.min_submit_bytes, a.pool.min_submit_bytes) / submits,
    );
    put("agent_to_pool_reads_per_s", reads / window);
    put("shares_per_pool_read", counted / reads);
    let bytes_out = delta(b.pool.bytes_out, a.pool.bytes_out);
    put("pool_to_agent_bytes_per_s", bytes_out / window);
    put("pool_to_agent_kbps", bytes_out * 8.0 / 1e3 / window);
    put("pool_to_agent_bytes_per_share", bytes_out / counted);
    let writes = delta(b.agent.write_calls, a.agent.write_calls);
    put("agent_write2_calls_per_s", writes / window);

    insert_latency(
        &mut f,
        "fanout_swarm",
        &b.swarm.job_latency.since(&a.swarm.job_latency),
    );
    insert_latency(
        &mut f,
        "fanout_probe",
        &b.probe.job_latency.since(&a.probe.job_latency),
    );
    let mut responses = b.swarm.response_latency.since(&a.swarm.response_latency);
    responses.merge(&b.probe.response_latency.since(&a.probe.response_latency));
    insert_latency(&mut f, "response", &responses);

    let mut put = |k: &str, v: f64| {
        f.insert(k.to_string(), v);
    };
    let total_sent = (final_swarm.shares_submitted + final_probe.shares_submitted) as f64;
    let s = &final_pool.shares;
    put("total_shares_sent", total_sent);
    put("total_valid", s.valid as f64);
    put("total_invalid", s.invalid as f64);
    put("total_stale", s.stale as f64);
    put("total_duplicate", s.duplicate as f64);
    put("total_unregistered", s.unregistered as f64);
    put("total_malformed", s.malformed as f64);
    put("total_lost", total_sent - s.counted() as f64);
    put(
        "total_rejected_at_miners",
        (final_swarm.rejected + final_probe.rejected) as f64,
    );
    put(
        "window_disconnects",
        (b.swarm.disconnects + b.probe.disconnects) as f64
            - (a.swarm.disconnects + a.probe.disconnects) as f64,
    );
    put(
        "total_disconnects",
        (final_swarm.disconnects + final_probe.disconnects) as f64,
    );
    put(
        "connect_failures",
        (final_swarm.connect_failures + final_probe.connect_failures) as f64,
    );
    put(
        "reconnect_requests",
        (final_swarm.reconnect_requests + final_probe.reconnect_requests) as f64,
    );
    put(
        "swarm_cpu_pct",
        (b.swarm_cpu_s - a.swarm_cpu_s) / window * 100.0,
    );
    put(
        "probe_cpu_pct",
        (b.probe_cpu_s - a.probe_cpu_s) / window * 100.0,
    );
    put(
        "pool_sim_cpu_pct",
        (b.own_cpu_s - a.own_cpu_s) / window * 100.0,
    );
    f
}

/// `--stratum`: the share figures of a plain Stratum pool, where only the shares
/// meeting the pool's difficulty reach it and the agent accepts the others itself.
/// They replace the agent-protocol ones `figures` made of the pool's counts.
fn stratum_figures(
    f: &mut Figures,
    a: &Snapshot,
    b: &Snapshot,
    final_swarm: &SwarmSnapshot,
    final_probe: &SwarmSnapshot,
    final_pool: &PoolSnapshot,
    status: Option<&StratumStatus>,
) {
    let window = (b.at - a.at).as_secs_f64();
    let answered =
        |s: &Snapshot| s.swarm.accepted + s.swarm.rejected + s.probe.accepted + s.probe.rejected;
    // Every share a miner sent is checked by the agent and answered (by the agent,
    // or by the pool with --server-responses).
    let handled = delta(answered(b), answered(a));
    let forwarded = delta(b.pool.stratum_shares.total(), a.pool.stratum_shares.total());
    let valid = delta(b.pool.stratum_shares.valid, a.pool.stratum_shares.valid);
    let agent_cpu = b.agent.cpu_s - a.agent.cpu_s;
    let bytes_in = delta(b.pool.bytes_in, a.pool.bytes_in);
    let bytes_out = delta(b.pool.bytes_out, a.pool.bytes_out);
    let reads = delta(b.pool.reads, a.pool.reads);
    for key in [
        "protocol_min_bytes_per_share",
        "agent_to_pool_bytes_per_share",
        "pool_to_agent_bytes_per_share",
        "shares_per_pool_read",
        "total_unregistered",
        "total_malformed",
    ] {
        f.remove(key);
    }
    let mut put = |k: &str, v: f64| {
        f.insert(k.to_string(), v);
    };
    let pool_difficulty =
        btcagent_sim::bitcoin::parse_difficulty(STRATUM_POOL_DIFFICULTY).unwrap_or(f64::NAN);
    put("stratum", 1.0);
    put("stratum_pool_difficulty", pool_difficulty);
    put("stratum_miner_difficulty", STRATUM_MINER_DIFFICULTY);
    put(
        "expected_forwarded_fraction",
        STRATUM_MINER_DIFFICULTY / pool_difficulty,
    );
    put("window_shares_counted", handled);
    put("shares_per_s", handled / window);
    put(
        "agent_cpu_ms_per_1000_shares",
        agent_cpu * 1e3 / (handled / 1e3),
    );
    put("window_shares_forwarded", forwarded);
    put("forwarded_per_s", valid / window);
    put("forwarded_fraction", forwarded / handled);
    put("window_shares_local", handled - forwarded);
    put("local_per_s", (handled - forwarded) / window);
    put(
        "agent_to_pool_bytes_per_forwarded_share",
        bytes_in / forwarded,
    );
    put("forwarded_shares_per_pool_read", forwarded / reads);
    put(
        "pool_to_agent_bytes_per_forwarded_share",
        bytes_out / forwarded,
    );

    let sent = (final_swarm.shares_submitted + final_probe.shares_submitted) as f64;
    let s = &final_pool.stratum_shares;
    put("total_valid", s.valid as f64);
    put("total_invalid", s.invalid as f64);
    put("total_stale", s.stale as f64);
    put("total_duplicate", s.duplicate as f64);
    put("total_refused", s.refused as f64);
    put(
        "total_unanswered_at_stop",
        sent - (final_swarm.accepted
            + final_swarm.rejected
            + final_probe.accepted
            + final_probe.rejected) as f64,
    );
    let nan = f64::NAN;
    let (local, sent_by_agent, pool_rejected) = status.map_or((nan, nan, nan), |st| {
        (
            st.shares_local as f64,
            st.shares_sent as f64,
            st.shares_rejected as f64,
        )
    });
    put("total_local_at_agent", local);
    put("total_forwarded_by_agent", sent_by_agent);
    put("total_rejected_by_pool_at_agent", pool_rejected);
    // Neither forwarded nor accepted by the agent: refused by it, or never read.
    put("total_lost", sent - (s.total() as f64 + local));
    // Forwarded by the agent's count and never judged by the pool (or the reverse).
    put("total_forwarded_missing", sent_by_agent - s.total() as f64);
}

/// What `--check` requires of a run (correctness only, never timings).
fn check(f: &Figures, problems: &mut Vec<String>) {
    let g = |k: &str| f.get(k).copied().unwrap_or(f64::NAN);
    let valid = g("total_valid");
    if valid.is_nan() || valid <= 0.0 {
        problems.push("no valid share reached the pool".into());
    }
    let keys: &[&str] = if f.contains_key("stratum") {
        &[
            "total_invalid",
            "total_stale",
            "total_duplicate",
            "total_refused",
            "total_lost",
            "total_forwarded_missing",
            "total_rejected_by_pool_at_agent",
            "total_rejected_at_miners",
            "window_disconnects",
            "total_disconnects",
            "connect_failures",
        ]
    } else {
        &[
            "total_invalid",
            "total_stale",
            "total_duplicate",
            "total_unregistered",
            "total_malformed",
            "total_lost",
            "total_rejected_at_miners",
            "window_disconnects",
            "total_disconnects",
            "connect_failures",
        ]
    };
    for &key in keys {
        if g(key) != 0.0 {
            problems.push(format!("{key} = {}", g(key)));
        }
    }
    // Only a run with an --after-window event has it.
    if f.contains_key("event_miners") && g("event_disconnects") != 0.0 {
        problems.push(format!("event_disconnects = {}", g("event_disconnects")));
    }
    if f.contains_key("event_same_pid") && g("event_same_pid") != 1.0 {
        problems.push("event_same_pid = 0".into());
    }
}

#[cfg(test)]
mod tests {
    use super::Event;

    #[test]
    fn after_window_events() {
        for (text, event) in [
            ("pool-fails", Event::PoolFails),
            ("reload", Event::Reload),
            ("handoff", Event::Handoff),
            ("upgrade", Event::Upgrade),
        ] {
            assert_eq!(text.parse::<Event>(), Ok(event));
        }
        let e = "hand-off".parse::<Event>().unwrap_err();
        assert!(e.contains("handoff or upgrade"), "{e}");
        assert!(Event::Handoff.hands_over() && Event::Upgrade.hands_over());
        assert!(!Event::Handoff.second_pool() && Event::Reload.second_pool());
        assert!(!Event::PoolFails.hands_over());
        assert_eq!(Event::Upgrade.kind(), 4.0);
    }
}
