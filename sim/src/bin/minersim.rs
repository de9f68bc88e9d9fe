//! minersim: a swarm of simulated Stratum V1 miners in one process.

use btcagent_sim::cli::{self, secs};
use btcagent_sim::miner::{MinerSwarm, MinerSwarmConfig};
use btcagent_sim::rlimit;
use std::net::SocketAddr;
use std::time::Duration;

const HELP: &str = "\
minersim: N simulated Stratum V1 miners that really mine (at easy difficulties)

USAGE: minersim --agent ADDR [OPTIONS]
  --agent ADDR                    where the agent listens (required)
  --miners N                      number of miners [10]
  --user PATTERN                  authorize name; {i} = miner index, {sub} = a name
                                  from --subaccounts [{sub}.w{i}]
  --subaccounts A,B,..            sub-accounts used in turn for {sub} [sim]
  --share-interval SECS           mean seconds between shares per miner, jittered;
                                  0 = as fast as possible [10]
  --shares-per-miner N            stop submitting after N shares per connection
  --version-rolling-fraction F    fraction of miners rolling versions [0]
  --connect-rate N                connections opened per second, 0 = all at once [0]
  --duration SECS                 run this long, 0 = until SIGINT/SIGTERM [0]
  --stats-interval SECS           print a stats line every SECS [5]
Exits 1 when no share was accepted.";

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("minersim: {e}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<bool, String> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        println!("{HELP}");
        return Ok(true);
    }
    let arg = |e: pico_args::Error| e.to_string();
    let agent: SocketAddr = args.value_from_str("--agent").map_err(arg)?;
    let miners = args
        .opt_value_from_str("--miners")
        .map_err(arg)?
        .unwrap_or(10);
    let mut config = MinerSwarmConfig::new(agent, miners);
    if let Some(user) = args.opt_value_from_str("--user").map_err(arg)? {
        config.user_pattern = user;
    }
    if let Some(subs) = args
        .opt_value_from_str::<_, String>("--subaccounts")
        .map_err(arg)?
    {
        config.subaccounts = subs.split(',').map(str::to_string).collect();
    }
    let interval: f64 = args
        .opt_value_from_str("--share-interval")
        .map_err(arg)?
        .unwrap_or(10.0);
    config.share_interval = secs("--share-interval", interval)?;
    config.shares_per_miner = args.opt_value_from_str("--shares-per-miner").map_err(arg)?;
    config.version_rolling_fraction = args
        .opt_value_from_str("--version-rolling-fraction")
        .map_err(arg)?
        .unwrap_or(0.0);
    config.connect_rate = args
        .opt_value_from_str("--connect-rate")
        .map_err(arg)?
        .unwrap_or(0.0);
    let duration: f64 = args
        .opt_value_from_str("--duration")
        .map_err(arg)?
        .unwrap_or(0.0);
    let stats_every: f64 = args
        .opt_value_from_str("--stats-interval")
        .map_err(arg)?
        .unwrap_or(5.0);
    let rest = args.finish();
    if !rest.is_empty() {
        return Err(format!("unknown arguments {rest:?} (see --help)"));
    }
    if !(config.connect_rate >= 0.0 && config.connect_rate.is_finite()) {
        return Err("--connect-rate must be a number >= 0".into());
    }
    if !(0.0..=1.0).contains(&config.version_rolling_fraction) {
        return Err("--version-rolling-fraction must be within 0..1".into());
    }

    let limit = rlimit::raise_nofile_limit().unwrap_or(0);
    if limit != 0 && (miners as u64) + 64 > limit {
        eprintln!("minersim: warning: {miners} miners but only {limit} open files allowed");
    }
    rlimit::catch_termination();
    let swarm = MinerSwarm::start(config).map_err(|e| format!("cannot start: {e}"))?;
    let stats_every = secs("--stats-interval", stats_every)?.unwrap_or(Duration::from_secs(5));
    let duration = secs("--duration", duration)?;
    cli::run_until_stopped("minersim", duration, stats_every, || {
        swarm.stats().summary()
    });
    let stats = swarm.stats();
    swarm.stop();
    println!("minersim final: {}", stats.summary());
    let errors = if stats.errors_by_method.is_empty() {
        "no error answers".to_string()
    } else {
        format!("error answers by method {:?}", stats.errors_by_method)
    };
    println!(
        "minersim: {} connects, {} connect failures, {} reconnect requests, {errors}, {} hashes",
        stats.connects, stats.connect_failures, stats.reconnect_requests, stats.hashes
    );
    Ok(stats.accepted > 0)
}
