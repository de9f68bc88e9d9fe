//! `btcagent`: parses the command line, loads the config, runs the agent.

use btcagent::cli::{self, Command, ConfigSource, RunOptions};
use btcagent::config::Config;
#[cfg(target_os = "linux")]
use btcagent::handoff;
use btcagent::{agent, control, logging, service_notify};
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
            Config::from_json_value(&json)
                .map_err(|e: btcagent::config::ConfigError| e.in_file(Path::new(path)).to_string())
        }
    }
}

/// On OpenWrt the log options are the init script's (`-v`, `-l` from UCI); procd
/// signals a reload instead of restarting with them, so they are read here.
#[cfg(unix)]
fn reload_log_options(uci_file: &Path, running: &logging::LogTarget) {
    let Ok(text) = std::fs::read_to_string(uci_file) else {
        return; // the config was just read: this is a race with an edit, not worth a line
    };
    match btcagent::uci::init_script_option(&text, "log_verbosity") {
        Ok(Some(v)) => match v.parse::<u8>() {
            Ok(v) if Some(v) != logging::verbosity() => {
                logging::set_verbosity(v);
                log::info!("reload: log_verbosity {v}");
            }
            Ok(_) => {}
            Err(_) => log::warn!("reload: log_verbosity '{v}' is not a number: kept"),
        },
        Ok(None) => {
            if logging::verbosity().is_some_and(|v| v != 0) {
                logging::set_verbosity(0);
                log::info!("reload: log_verbosity 0");
            }
        }
        Err(_) => {}
    }
    let target = btcagent::uci::init_script_option(&text, "log_target")
        .ok()
        .flatten();
    let wanted = match target.as_deref() {
        Some("stderr") => logging::LogTarget::Stderr,
        _ => logging::LogTarget::Syslog,
    };
    // Only the init script's two targets: a log directory (`-l DIR`) was chosen by hand.
    let by_init_script = matches!(
        running,
        logging::LogTarget::Stderr | logging::LogTarget::Syslog
    );
    if by_init_script && std::mem::discriminant(&wanted) != std::mem::discriminant(running) {
        log::warn!("reload: log_target changed: it takes effect at the next restart");
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

/// `--check-handoff`: what a running agent asks of the binary it would hand its miners
/// to. Quiet unless the config does not load: the running agent logs the outcome.
fn check_handoff(opts: &RunOptions) -> ExitCode {
    match load(&opts.config) {
        Ok(_) => {
            #[cfg(target_os = "linux")]
            println!("{}", btcagent::handoff::check_reply());
            #[cfg(not(target_os = "linux"))]
            println!("no handoff on this system");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("config: {}", with_default_config_hint(&opts.config, e));
            ExitCode::from(2)
        }
    }
}

/// The miner port: the one the previous program handed over if the config still names
/// it, else bound here.
fn listen(
    config: &Config,
    #[cfg(target_os = "linux")] inherited: Option<std::net::TcpListener>,
) -> std::io::Result<async_io::Async<std::net::TcpListener>> {
    #[cfg(target_os = "linux")]
    if let Some(listener) = inherited {
        let wanted = std::net::SocketAddr::new(config.agent_listen_ip, config.agent_listen_port);
        match listener.local_addr() {
            Ok(addr) if addr == wanted || config.agent_listen_port == 0 => {
                return async_io::Async::new(listener);
            }
            Ok(addr) => log::info!(
                "handoff: the miner port is {wanted} now (was {addr}): the miners connected to {addr} stay"
            ),
            Err(_) => {}
        }
    }
    agent::Agent::bind(config)
}

fn run(opts: RunOptions) -> ExitCode {
    if opts.check_handoff {
        return check_handoff(&opts);
    }
    // First of all: until the handlers are in, a SIGHUP (procd's reload) would kill the
    // process instead of reloading it.
    let requests = control::install();
    #[cfg(target_os = "linux")]
    let (binary, handed_state) = {
        // Blocked by a previous program across its execve: pending ones arrive now.
        handoff::unblock_signals();
        (
            handoff::Binary::at_start().map(std::rc::Rc::new),
            handoff::take_state(),
        )
    };
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
    #[cfg(target_os = "linux")]
    let (inherited_listener, handed) = match handed_state {
        None => (None, None),
        Some(Ok(state)) => {
            let inherited = handoff::inherit(state);
            (inherited.listener, Some(inherited.handed))
        }
        Some(Err(e)) => {
            log::error!(
                "handoff: the previous program's state is unreadable ({e}): its miners are lost"
            );
            handoff::close_strays();
            (None, None)
        }
    };
    #[cfg(not(target_os = "linux"))]
    let handed = None;
    let listener = match listen(
        &config,
        #[cfg(target_os = "linux")]
        inherited_listener,
    ) {
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
    let requests = match requests {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    // Listening, and the stop handlers are in place: miners can come.
    service_notify::notify("READY=1");
    let source = opts.config.clone();
    #[cfg(unix)]
    let log_target = opts.log.clone();
    let controls = smol::stream::StreamExt::flat_map(requests, move |request| {
        let mut controls = Vec::new();
        match request {
            control::Request::Reload => {
                service_notify::notify("RELOADING=1");
                match load(&source) {
                    Ok((config, warnings)) => {
                        for w in &warnings {
                            log::warn!("{w}");
                        }
                        #[cfg(unix)]
                        if let ConfigSource::Uci(path) = &source {
                            reload_log_options(path, &log_target);
                        }
                        controls.push(agent::Control::Reload(Box::new(config)));
                        // A package upgrade ends with a reload (procd sees the binary's
                        // checksum change): take the new binary into use too.
                        #[cfg(target_os = "linux")]
                        if let Some(binary) = binary.as_ref().filter(|b| b.replaced()) {
                            log::info!("reload: {} was replaced", binary.path.display());
                            controls.push(agent::Control::HandOff(binary.clone()));
                        }
                    }
                    Err(e) => log::error!("reload refused, the running config stays: {e}"),
                }
                service_notify::notify("READY=1");
            }
            control::Request::HandOff => {
                #[cfg(target_os = "linux")]
                match &binary {
                    Some(binary) => controls.push(agent::Control::HandOff(binary.clone())),
                    None => log::error!(
                        "handoff refused, this process keeps serving: the path of its binary is unknown"
                    ),
                }
                #[cfg(not(target_os = "linux"))]
                log::error!(
                    "handoff refused, this process keeps serving: it is built for Linux only"
                );
            }
            control::Request::Stop => {
                service_notify::notify("STOPPING=1");
                controls.push(agent::Control::Stop);
            }
        }
        smol::stream::iter(controls)
    });
    match agent::run_blocking(config, listener, controls, handed) {
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
