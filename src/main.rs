//! `btcagent`: parses the command line, loads the config, runs the agent.

use btcagent::cli::{self, Command, ConfigSource, RunOptions};
use btcagent::config::{Config, ConfigError};
use btcagent::{agent, logging, uci};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            // The message ends with the hint to `--help`.
            eprintln!("btcagent: {e}");
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
        ConfigSource::Uci(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let json = uci::uci_to_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            Config::from_json_value(&json)
                .map_err(|e: ConfigError| e.in_file(Path::new(path)).to_string())
        }
    }
}

/// Without `-c`, a missing `agent_conf.json` is most likely a first run in the wrong
/// directory: say how to name another file.
fn with_default_config_hint(source: &ConfigSource, e: String) -> String {
    match source {
        ConfigSource::Json(path)
            if path == Path::new(cli::DEFAULT_CONFIG_PATH) && !path.exists() =>
        {
            format!(
                "{e}\n(without -c the agent reads {} in the current directory; `-c FILE` names \
                 another, and agent_conf.default.json is a template to copy)",
                cli::DEFAULT_CONFIG_PATH
            )
        }
        _ => e,
    }
}

fn run(opts: RunOptions) -> ExitCode {
    if let Err(e) = logging::init(&opts.log, opts.verbosity, opts.also_stderr) {
        eprintln!("btcagent: {e}");
        return ExitCode::from(2);
    }
    let (config, mut warnings) = match load(&opts.config) {
        Ok(c) => c,
        Err(e) => {
            let e = with_default_config_hint(&opts.config, e);
            log::error!("config: {e}");
            if !matches!(opts.log, logging::LogTarget::Stderr) {
                eprintln!("btcagent: config: {e}");
            }
            return ExitCode::from(2);
        }
    };
    warnings.extend(btcagent::startup::placeholder_warning(&config));
    for w in &warnings {
        // Each warning names its source ("config: ...").
        log::warn!("{w}");
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
    let signals =
        match async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term]) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
    let stop = async move {
        use smol::stream::StreamExt;
        let mut signals = signals;
        if let Some(Ok(sig)) = signals.next().await {
            log::info!("received {sig:?}");
        }
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
