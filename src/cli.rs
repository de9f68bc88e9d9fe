//! Command line, compatible with the original agent's (`-c FILE -l DIR -alsologtostderr -v N`).
//!
//! The original parsed its flags with Go's `flag` package, so service files in the field
//! may write any flag with one or two dashes and values either as the next argument or
//! after `=` (`--c FILE`, `-c=FILE`, `-alsologtostderr=true`). Those spellings are first
//! rewritten into one canonical form, which pico-args then takes apart.

use std::ffi::OsString;
use std::path::PathBuf;

pub use crate::logging::LogTarget;

/// Where the config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `agent_conf.json`, the original's format.
    Json(PathBuf),
    /// An OpenWrt UCI file (`/etc/config/btcagent`), translated by `crate::uci`.
    Uci(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    pub config: ConfigSource,
    pub log: LogTarget,
    /// With a log directory or syslog, copy every line to standard error too.
    pub also_stderr: bool,
    /// 0 info, 1 debug, 2 and more trace.
    pub verbosity: u8,
    /// Print the effective config as JSON and exit instead of running.
    pub print_config: bool,
    /// Load the config, say which handoff state this binary reads, exit: a running
    /// agent asks this of the binary it is about to hand its miners to.
    pub check_handoff: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(RunOptions),
    /// `btcagent status [--file PATH]`: summarise the status file of a running agent.
    Status {
        file: Option<PathBuf>,
    },
    Help,
    Version,
}

/// The original agent's default, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "agent_conf.json";

pub const USAGE: &str = "\
Usage:
  btcagent [-c FILE | --uci FILE] [-l DIR|stderr|syslog] [-alsologtostderr] [-v N] [--print-config | --check-handoff]
  btcagent status [--file PATH]
  btcagent --help | --version

Options:
  -c FILE            JSON config file (default: agent_conf.json)
  --uci FILE         read an OpenWrt UCI config (e.g. /etc/config/btcagent) instead of JSON
  -l DIR             append the log to DIR/btcagent.log (kept under 16 MiB: one rotated file)
  -l stderr          log to standard error (the default)
  -l syslog          log to the local syslog daemon, facility daemon
  -alsologtostderr   with -l DIR or -l syslog, also copy the log to standard error
  -v N               verbosity: 0 info (default), 1 debug, 2 trace, 3 trace including libraries
  --print-config     print the effective config as JSON and exit
  --check-handoff    load the config, print whether this binary can take a running
                     agent's miners over (SIGUSR2 runs it first), exit
  -h, --help         print this help and exit
  -V, --version      print the version and exit

Subcommand:
  status [--file PATH]   summarise the status file of a running agent
                         (default: the status_file of the config)

Signals:
  SIGHUP             read the config again and apply it without dropping miners
                     (a file that does not load is refused; the running config stays)
  SIGUSR2            hand every miner over to the binary at the path the agent was
                     started from (an upgrade): it replaces this process, same pid,
                     and the miners stay connected (Linux)
  SIGHUP             also does that when the binary at that path was replaced
  SIGINT, SIGTERM    unregister every worker at the pool, close, exit 0

Flags take one or two dashes and a value either as the next argument or after '=',
as the original agent's did: -c agent_conf.json, --c=agent_conf.json, -alsologtostderr=true.
";

const HINT: &str = "run `btcagent --help` for the options";

/// One flag the command line knows, under all the names it answers to.
enum Flag {
    /// Takes a value; rewritten to the given canonical name for pico-args.
    Value(&'static str),
    Switch(Switch),
    /// glog options the original accepted that mean nothing here; their value is skipped.
    IgnoredValue,
}

#[derive(Clone, Copy)]
enum Switch {
    AlsoStderr,
    OnlyStderr,
    PrintConfig,
    CheckHandoff,
    Help,
    Version,
}

fn run_flag(name: &str) -> Option<Flag> {
    Some(match name {
        "c" | "config" => Flag::Value("-c"),
        "l" | "log" | "log_dir" => Flag::Value("-l"),
        "v" => Flag::Value("-v"),
        "uci" => Flag::Value("--uci"),
        "alsologtostderr" => Flag::Switch(Switch::AlsoStderr),
        "logtostderr" => Flag::Switch(Switch::OnlyStderr),
        "print-config" | "print_config" => Flag::Switch(Switch::PrintConfig),
        "check-handoff" => Flag::Switch(Switch::CheckHandoff),
        "h" | "help" => Flag::Switch(Switch::Help),
        "V" | "version" => Flag::Switch(Switch::Version),
        "stderrthreshold" | "vmodule" | "log_backtrace_at" => Flag::IgnoredValue,
        _ => return None,
    })
}

fn status_flag(name: &str) -> Option<Flag> {
    Some(match name {
        "f" | "file" => Flag::Value("--file"),
        "h" | "help" => Flag::Switch(Switch::Help),
        _ => return None,
    })
}

/// Switches seen while rewriting, with the value they were given.
#[derive(Default)]
struct Switches {
    also_stderr: bool,
    only_stderr: bool,
    print_config: bool,
    check_handoff: bool,
    help: bool,
    version: bool,
}

/// Parses the arguments after the program name (`std::env::args_os().skip(1)`).
pub fn parse(args: Vec<OsString>) -> Result<Command, String> {
    if args.first().is_some_and(|a| a == "status") {
        let (canonical, switches) = canonicalize(args.into_iter().skip(1), status_flag)?;
        if switches.help {
            return Ok(Command::Help);
        }
        let mut parser = pico_args::Arguments::from_vec(canonical);
        let file = last_value(&mut parser, "--file")?.map(PathBuf::from);
        finish(parser)?;
        return Ok(Command::Status { file });
    }

    let (canonical, switches) = canonicalize(args.into_iter(), run_flag)?;
    if switches.help {
        return Ok(Command::Help);
    }
    if switches.version {
        return Ok(Command::Version);
    }
    let mut parser = pico_args::Arguments::from_vec(canonical);
    let json = last_value(&mut parser, "-c")?;
    let uci = last_value(&mut parser, "--uci")?;
    let log = last_value(&mut parser, "-l")?;
    let verbosity = match last_value(&mut parser, "-v")? {
        None => 0,
        Some(text) => {
            let text = text.to_string_lossy();
            text.parse::<u8>()
                .map_err(|_| format!("-v: expected a number 0..=255, got `{text}`\n{HINT}"))?
        }
    };
    finish(parser)?;

    let config = match (json, uci) {
        (Some(_), Some(_)) => {
            return Err(format!("-c and --uci both name a config; give one\n{HINT}"))
        }
        (None, Some(path)) => ConfigSource::Uci(path.into()),
        (Some(path), None) => ConfigSource::Json(path.into()),
        (None, None) => ConfigSource::Json(DEFAULT_CONFIG_PATH.into()),
    };
    let log = match log {
        // glog's -logtostderr sends everything to standard error, whatever -l says.
        _ if switches.only_stderr => LogTarget::Stderr,
        None => LogTarget::Stderr,
        Some(text) if text.is_empty() || text == "stderr" => LogTarget::Stderr,
        Some(text) if text == "syslog" => LogTarget::Syslog,
        Some(dir) => LogTarget::Dir(dir.into()),
    };
    Ok(Command::Run(RunOptions {
        config,
        log,
        also_stderr: switches.also_stderr,
        verbosity,
        print_config: switches.print_config,
        check_handoff: switches.check_handoff,
    }))
}

/// Rewrites Go-style flags into `-c VALUE` pairs and collects the switches.
fn canonicalize(
    args: impl Iterator<Item = OsString>,
    lookup: fn(&str) -> Option<Flag>,
) -> Result<(Vec<OsString>, Switches), String> {
    let mut args = args.peekable();
    let mut canonical = Vec::new();
    let mut switches = Switches::default();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            return Err(format!(
                "unexpected argument `{}`\n{HINT}",
                arg.to_string_lossy()
            ));
        };
        let body = text.strip_prefix("--").or_else(|| text.strip_prefix('-'));
        let Some(body) = body.filter(|b| !b.is_empty() && !b.starts_with('-')) else {
            return Err(format!("unexpected argument `{text}`\n{HINT}"));
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let Some(flag) = lookup(name) else {
            return Err(format!("unknown option `{text}`\n{HINT}"));
        };
        match flag {
            Flag::Value(_) | Flag::IgnoredValue
                if inline_value.is_none() && args.peek().is_none() =>
            {
                return Err(format!("option `{text}` needs a value\n{HINT}"));
            }
            Flag::Value(canonical_name) => {
                canonical.push(OsString::from(canonical_name));
                // Never None here: the guard above caught a missing value.
                match inline_value {
                    Some(value) => canonical.push(OsString::from(value)),
                    None => canonical.extend(args.next()),
                }
            }
            Flag::IgnoredValue => {
                if inline_value.is_none() {
                    args.next();
                }
            }
            Flag::Switch(switch) => {
                let on = match inline_value {
                    None => true,
                    Some(value) => parse_go_bool(value).ok_or_else(|| {
                        format!("option `{text}`: expected true or false, got `{value}`\n{HINT}")
                    })?,
                };
                match switch {
                    Switch::AlsoStderr => switches.also_stderr = on,
                    Switch::OnlyStderr => switches.only_stderr = on,
                    Switch::PrintConfig => switches.print_config = on,
                    Switch::CheckHandoff => switches.check_handoff = on,
                    Switch::Help => switches.help |= on,
                    Switch::Version => switches.version |= on,
                }
            }
        }
    }
    Ok((canonical, switches))
}

/// The spellings Go's strconv.ParseBool accepts.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The last value given for a flag: as with Go's flag package, a repeated flag overrides.
fn last_value(
    parser: &mut pico_args::Arguments,
    name: &'static str,
) -> Result<Option<OsString>, String> {
    let values: Vec<OsString> = parser
        .values_from_os_str(name, |v| Ok::<_, String>(v.to_os_string()))
        .map_err(|e| format!("{e}\n{HINT}"))?;
    Ok(values.into_iter().last())
}

fn finish(parser: pico_args::Arguments) -> Result<(), String> {
    match parser.finish().first() {
        None => Ok(()),
        Some(extra) => Err(format!(
            "unexpected argument `{}`\n{HINT}",
            extra.to_string_lossy()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> RunOptions {
        match parse(args.iter().map(OsString::from).collect()) {
            Ok(Command::Run(options)) => options,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn command(args: &[&str]) -> Command {
        parse(args.iter().map(OsString::from).collect()).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn error(args: &[&str]) -> String {
        match parse(args.iter().map(OsString::from).collect()) {
            Err(e) => e,
            Ok(c) => panic!("{args:?} accepted: {c:?}"),
        }
    }

    fn json(path: &str) -> ConfigSource {
        ConfigSource::Json(path.into())
    }

    #[test]
    fn no_arguments_gives_the_original_defaults() {
        let options = run(&[]);
        assert_eq!(
            options,
            RunOptions {
                config: json("agent_conf.json"),
                log: LogTarget::Stderr,
                also_stderr: false,
                verbosity: 0,
                print_config: false,
                check_handoff: false,
            }
        );
    }

    #[test]
    fn original_service_command_line() {
        let options = run(&[
            "-c",
            "/etc/btcagent/agent_conf.json",
            "-l",
            "/var/log/btcagent",
            "-alsologtostderr",
        ]);
        assert_eq!(options.config, json("/etc/btcagent/agent_conf.json"));
        assert_eq!(options.log, LogTarget::Dir("/var/log/btcagent".into()));
        assert!(options.also_stderr);
        assert_eq!(run(&["-l", "stderr"]).log, LogTarget::Stderr);
        assert_eq!(run(&["-l", "syslog"]).log, LogTarget::Syslog);
        assert_eq!(run(&["-l", ""]).log, LogTarget::Stderr);
    }

    #[test]
    fn go_flag_spellings() {
        for args in [
            &["-c", "a.json"][..],
            &["--c", "a.json"],
            &["-c=a.json"],
            &["--c=a.json"],
            &["--config", "a.json"],
            &["-config=a.json"],
        ] {
            assert_eq!(run(args).config, json("a.json"), "{args:?}");
        }
        for args in [
            &["-alsologtostderr"][..],
            &["--alsologtostderr"],
            &["-alsologtostderr=true"],
            &["--alsologtostderr=1"],
            &["-alsologtostderr=T"],
        ] {
            assert!(run(args).also_stderr, "{args:?}");
        }
        assert!(!run(&["-alsologtostderr", "-alsologtostderr=false"]).also_stderr);
        for args in [
            &["-l", "d"][..],
            &["--l", "d"],
            &["-l=d"],
            &["--log=d"],
            &["-log_dir", "d"],
        ] {
            assert_eq!(run(args).log, LogTarget::Dir("d".into()), "{args:?}");
        }
        // A value may itself contain '=' or start with a dash.
        assert_eq!(run(&["-c=a=b.json"]).config, json("a=b.json"));
        assert_eq!(run(&["-c", "-odd.json"]).config, json("-odd.json"));
        // Repeated flags: the last wins, as with Go.
        assert_eq!(run(&["-c", "a", "-c", "b"]).config, json("b"));
    }

    #[test]
    fn verbosity() {
        assert_eq!(run(&["-v", "0"]).verbosity, 0);
        assert_eq!(run(&["-v", "1"]).verbosity, 1);
        assert_eq!(run(&["-v=2"]).verbosity, 2);
        assert_eq!(run(&["--v", "5"]).verbosity, 5);
        assert!(error(&["-v", "x"]).contains("-v: expected a number 0..=255, got `x`"));
        assert!(error(&["-v", "-1"]).contains("got `-1`"));
        assert!(error(&["-v"]).contains("option `-v` needs a value"));
    }

    #[test]
    fn glog_flags() {
        let options = run(&["-l", "d", "-logtostderr"]);
        assert_eq!(options.log, LogTarget::Stderr);
        assert_eq!(
            run(&["-l", "d", "-logtostderr=false"]).log,
            LogTarget::Dir("d".into())
        );
        assert_eq!(
            run(&["-stderrthreshold=INFO", "-vmodule", "x=2", "-c", "a"]).config,
            json("a")
        );
    }

    #[test]
    fn btcagent_options() {
        assert_eq!(
            run(&["--uci", "/etc/config/btcagent"]).config,
            ConfigSource::Uci("/etc/config/btcagent".into())
        );
        assert_eq!(
            run(&["-uci=/etc/config/btcagent"]).config,
            ConfigSource::Uci("/etc/config/btcagent".into())
        );
        assert!(run(&["--print-config"]).print_config);
        assert!(run(&["-print-config", "-c", "x"]).print_config);
        assert!(run(&["--print_config"]).print_config);
        assert!(error(&["-c", "a", "--uci", "b"]).contains("-c and --uci"));
    }

    #[test]
    fn help_and_version() {
        for args in [
            &["-h"][..],
            &["--help"],
            &["-help"],
            &["-c", "x", "--help"],
            &["--version", "-h"],
        ] {
            assert_eq!(command(args), Command::Help, "{args:?}");
        }
        for args in [&["-V"][..], &["--version"], &["-version"]] {
            assert_eq!(command(args), Command::Version, "{args:?}");
        }
        for option in [
            "-c FILE",
            "--uci FILE",
            "-l DIR",
            "-l stderr",
            "-l syslog",
            "-alsologtostderr",
            "-v N",
            "--print-config",
            "--help",
            "--version",
            "status [--file PATH]",
        ] {
            assert!(USAGE.contains(option), "USAGE lacks {option}");
        }
    }

    #[test]
    fn status_subcommand() {
        assert_eq!(command(&["status"]), Command::Status { file: None });
        for args in [
            &["status", "--file", "/tmp/s.json"][..],
            &["status", "-file=/tmp/s.json"],
            &["status", "-f", "/tmp/s.json"],
        ] {
            assert_eq!(
                command(args),
                Command::Status {
                    file: Some("/tmp/s.json".into())
                },
                "{args:?}"
            );
        }
        assert_eq!(command(&["status", "--help"]), Command::Help);
        assert!(error(&["status", "-c", "x"]).contains("unknown option `-c`"));
        assert!(error(&["status", "extra"]).contains("unexpected argument `extra`"));
        assert!(error(&["status", "--file"]).contains("needs a value"));
    }

    #[test]
    fn bad_arguments_are_explained() {
        let e = error(&["-x"]);
        assert!(
            e.starts_with("unknown option `-x`") && e.contains("btcagent --help"),
            "{e}"
        );
        assert!(error(&["--verbose"]).contains("unknown option `--verbose`"));
        assert!(error(&["---c", "x"]).contains("unexpected argument `---c`"));
        assert!(error(&["agent_conf.json"]).contains("unexpected argument `agent_conf.json`"));
        assert!(error(&["-", "x"]).contains("unexpected argument `-`"));
        assert!(error(&["-c"]).contains("option `-c` needs a value"));
        assert!(error(&["-alsologtostderr=yes"]).contains("expected true or false, got `yes`"));
        assert!(error(&["-c", "a", "stray"]).contains("unexpected argument `stray`"));
    }

    #[test]
    fn non_utf8_paths_are_kept() {
        use std::os::unix::ffi::OsStringExt;
        let path = OsString::from_vec(b"/tmp/\xffconf.json".to_vec());
        let parsed = parse(vec!["-c".into(), path.clone()]).unwrap();
        assert_eq!(
            parsed,
            Command::Run(RunOptions {
                config: ConfigSource::Json(path.into()),
                ..run(&[])
            })
        );
    }
}
