//! poolsim: a BTCAgent-protocol pool simulator for demos and load tests, or with
//! `--stratum` a plain Stratum V1 pool (ckpool's behaviour).

use btcagent_sim::bitcoin::parse_hex_u32;
use btcagent_sim::cli::{self, secs};
use btcagent_sim::pool::{PoolSim, PoolSimConfig, PoolStats, EASY_DIFFICULTY};
use btcagent_sim::rlimit;
use btcagent_sim::stratum_pool::{StratumPool, StratumPoolConfig, StratumPoolStats};
use std::time::Duration;

const HELP: &str = "\
poolsim: simulated btcpool server speaking the BTCAgent protocol

USAGE: poolsim [OPTIONS]
  --listen ADDR            listen address [127.0.0.1:0 = a free port, printed]
  --job-interval SECS      new job every SECS, 0 = only the first [30]
  --difficulty NUM         difficulty as a JSON number [2^-30 as a decimal]
  --version-mask HEX       version-rolling mask [1fffe000]
  --extranonce2-size N     extranonce2 size in subscribe results [8]
  --no-subres              do not offer share responses
  --no-verrol              do not offer version rolling
  --reject-authorize       refuse every mining.authorize
  --older-server           never answer agent.get_capabilities (sserver before late 2018)
  --decay-after SECS       connection difficulty halves each job after SECS [60]
  --job-lifetime SECS      jobs are forgotten SECS after they were made [300]
  --stats-interval SECS    print a stats line every SECS [5]
  --duration SECS          exit after SECS, 0 = until SIGINT/SIGTERM [0]
  --stratum                a plain Stratum V1 pool instead, as ckpool behaves (4-byte
                           extranonce1, --extranonce2-size, --difficulty, --job-interval,
                           --version-mask; the agent-protocol options do not apply)
On exit prints the valid shares per (sub-account, worker), or per user with --stratum.";

fn main() {
    if let Err(e) = run() {
        eprintln!("poolsim: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        println!("{HELP}");
        return Ok(());
    }
    let arg = |e: pico_args::Error| e.to_string();
    let mut config = PoolSimConfig::default();
    if let Some(listen) = args.opt_value_from_str("--listen").map_err(arg)? {
        config.listen = listen;
    }
    let mut seconds = |option: &'static str, default: f64| -> Result<Option<Duration>, String> {
        let value = args.opt_value_from_str(option).map_err(arg)?;
        secs(option, value.unwrap_or(default))
    };
    config.job_interval = seconds("--job-interval", 30.0)?;
    let stats_every = seconds("--stats-interval", 5.0)?.unwrap_or(Duration::from_secs(5));
    let duration = seconds("--duration", 0.0)?;
    config.decay_after = seconds("--decay-after", 60.0)?.unwrap_or(Duration::ZERO);
    config.job_lifetime = seconds("--job-lifetime", 300.0)?.unwrap_or(Duration::ZERO);
    config.difficulty = args
        .opt_value_from_str("--difficulty")
        .map_err(arg)?
        .unwrap_or_else(|| EASY_DIFFICULTY.to_string());
    if let Some(mask) = args
        .opt_value_from_str::<_, String>("--version-mask")
        .map_err(arg)?
    {
        config.version_mask =
            parse_hex_u32(&mask).ok_or(format!("--version-mask {mask:?}: need 8 hex digits"))?;
    }
    if let Some(size) = args.opt_value_from_str("--extranonce2-size").map_err(arg)? {
        config.extranonce2_size = size;
    }
    if args.contains("--no-subres") {
        config.capabilities.retain(|c| c != "subres");
    }
    if args.contains("--no-verrol") {
        config.capabilities.retain(|c| c != "verrol");
    }
    config.reject_authorize = args.contains("--reject-authorize");
    config.older_server = args.contains("--older-server");
    let stratum = args.contains("--stratum");
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unknown arguments {rest:?} (see --help)"));
    }

    let _ = rlimit::raise_nofile_limit();
    rlimit::catch_termination();
    if stratum {
        let pool = StratumPool::start(StratumPoolConfig {
            listen: config.listen,
            extranonce2_size: config.extranonce2_size as usize,
            version_mask: config.version_mask,
            start_difficulty: config.difficulty,
            job_interval: config.job_interval,
            ..StratumPoolConfig::ckpool()
        })
        .map_err(|e| format!("cannot start: {e}"))?;
        println!("poolsim listening on {} (plain Stratum V1)", pool.addr());
        cli::run_until_stopped("poolsim", duration, stats_every, || pool.stats().summary());
        let stats = pool.stats();
        pool.stop();
        report_stratum(&stats);
        return Ok(());
    }
    let pool = PoolSim::start(config).map_err(|e| format!("cannot start: {e}"))?;
    println!("poolsim listening on {}", pool.addr());
    cli::run_until_stopped("poolsim", duration, stats_every, || pool.stats().summary());
    let stats = pool.stats();
    pool.stop();
    report(&stats);
    Ok(())
}

fn report(stats: &PoolStats) {
    println!("poolsim final: {}", stats.summary());
    println!("valid shares per worker (sub-account / worker):");
    let mut workers: Vec<_> = stats.worker_valid.iter().collect();
    workers.sort_by(|((sa, wa), _), ((sb, wb), _)| {
        natural_cmp(sa, sb).then_with(|| natural_cmp(wa, wb))
    });
    for ((sub, worker), valid) in workers {
        println!("  {sub:<16} {worker:<24} {valid}");
    }
    if stats.worker_valid.is_empty() {
        println!("  (none)");
    }
}

fn report_stratum(stats: &StratumPoolStats) {
    println!("poolsim final: {}", stats.summary());
    println!("valid shares per user:");
    let mut users: Vec<_> = stats.by_worker.iter().collect();
    users.sort_by(|(a, _), (b, _)| natural_cmp(a, b));
    for (user, counts) in &users {
        println!("  {user:<41} {}", counts.valid);
    }
    if users.is_empty() {
        println!("  (none)");
    }
}

/// Text order with runs of digits compared as numbers: w2 before w10.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        let (Some(ca), Some(cb)) = (a.chars().next(), b.chars().next()) else {
            return a.len().cmp(&b.len());
        };
        let ord = if ca.is_ascii_digit() && cb.is_ascii_digit() {
            let na = a.len() - a.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let nb = b.len() - b.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let (da, db) = (
                a[..na].trim_start_matches('0'),
                b[..nb].trim_start_matches('0'),
            );
            let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
            a = &a[na..];
            b = &b[nb..];
            ord
        } else {
            a = &a[ca.len_utf8()..];
            b = &b[cb.len_utf8()..];
            ca.cmp(&cb)
        };
        if ord.is_ne() {
            return ord;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;

    #[test]
    fn workers_sort_by_number() {
        let mut names = vec!["w10", "w2", "w0", "w12", "w1", "x", "w007", "demo2", "demo"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["demo", "demo2", "w0", "w1", "w2", "w007", "w10", "w12", "x"]
        );
    }
}
