//! `btcagent`: parses the command line, loads the config, runs the agent.

use btcagent::cli::{self, Command, ConfigSource, RunOptions};
use btcagent::config::Config;
use btcagent::{agent, logging, service_notify, stop_request};
use std::process::ExitCode;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("btcagent: {e}\n(see btcagent --help)");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("btcagent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Status { file } => btcagent::status::print_summary(file.as_deref()),
        Command::Run(opts) => run(opts),
    }
}

fn load(source: &ConfigSource) -> Result<(Config, Vec<String>), String> {
    match source {
        ConfigSource::Json(path) => Config::load(path).map_err(|e| e.to_string()),
        // UCI is OpenWrt's config system; elsewhere the JSON file is the config.
        #[cfg(not(unix))]
        ConfigSource::Uci(_) => Err(
            "--uci reads an OpenWrt UCI config, which this system does not have: \
             use -c agent_conf.json"
                .into(),
        ),
        #[cfg(unix)]
        ConfigSource::Uci(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let json = btcagent::uci::uci_to_json(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Config::from_json_value(&json).map_err(|e: btcagent::config::ConfigError| {
                e.in_file(std::path::Path::new(path)).to_string()
            })
        }
    }
}

fn run(opts: RunOptions) -> ExitCode {
    if let Err(e) = logging::init(&opts.log, opts.verbosity, opts.also_stderr) {
        eprintln!("btcagent: {e}");
        return ExitCode::from(2);
    }
    let (config, warnings) = match load(&opts.config) {
        Ok(c) => c,
        Err(e) => {
            log::error!("config: {e}");
            if !matches!(opts.log, logging::LogTarget::Stderr) {
                eprintln!("btcagent: config: {e}");
            }
            return ExitCode::from(2);
        }
    };
    for w in &warnings {
        log::warn!("config: {w}");
    }
    if opts.print_config {
        print!("{}", config.to_json_pretty());
        return ExitCode::SUCCESS;
    }
    let listener = match agent::Agent::bind(&config) {
        Ok(l) => l,
        Err(e) => {
            log::error!(
                "cannot listen on {}:{}: {e}",
                config.agent_listen_ip,
                config.agent_listen_port
            );
            return ExitCode::from(1);
        }
    };
    match listener.get_ref().local_addr() {
        Ok(addr) => log::info!(
            "btcagent {} listening for miners on {addr}",
            env!("CARGO_PKG_VERSION")
        ),
        Err(_) => log::info!(
            "btcagent {} listening for miners",
            env!("CARGO_PKG_VERSION")
        ),
    }
    let stop = match stop_request::install() {
        Ok(stop) => stop,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    // Listening, and the stop handlers are in place: miners can come.
    service_notify::notify("READY=1");
    let stop = async move {
        stop.await;
        service_notify::notify("STOPPING=1");
    };
    match agent::run_blocking(config, listener, stop) {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}
