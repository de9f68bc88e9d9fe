//! The `log` backend: standard error, a log directory, or syslog.
//!
//! Lines look like `2026-11-25 01:30:42.123 INFO  message` (UTC). A log directory gets
//! `btcagent.log`, rotated to `btcagent.log.1` past 8 MiB, because routers keep logs on a
//! small tmpfs. Writing never panics: a failed write is dropped, the agent goes on.

use std::fmt::Arguments;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
#[cfg(unix)]
use std::os::unix::net::UnixDatagram;

/// Where log lines go (`-l` on the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    /// Append to `DIR/btcagent.log`.
    Dir(PathBuf),
    /// The local syslog daemon, facility daemon.
    Syslog,
}

pub const LOG_FILE_NAME: &str = "btcagent.log";
/// Past this size `btcagent.log` becomes `btcagent.log.1`: at most twice this on disk.
pub const ROTATE_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";
/// Lets a test point the syslog output at its own socket.
pub const SYSLOG_SOCKET_ENV: &str = "BTCAGENT_SYSLOG_SOCKET";

/// Installs the process-wide logger. `verbosity`: 0 info, 1 debug, 2 trace for btcagent's
/// own modules, 3 and more trace for the libraries too (async-io's trace is very chatty).
/// Fails when the log directory cannot be created or opened, or a logger already exists.
pub fn init(target: &LogTarget, verbosity: u8, also_stderr: bool) -> Result<(), String> {
    let syslog_socket = std::env::var_os(SYSLOG_SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSLOG_SOCKET));
    let (logger, warning) =
        AgentLogger::open(target, verbosity, also_stderr, ROTATE_BYTES, &syslog_socket)?;
    let logger: &'static AgentLogger = Box::leak(Box::new(logger));
    log::set_logger(logger).map_err(|_| "a logger is already installed".to_owned())?;
    let _ = LOGGER.set(logger);
    log::set_max_level(level_filter(verbosity));
    if let Some(warning) = warning {
        log::warn!("{warning}");
    }
    Ok(())
}

/// The installed logger, for [`set_verbosity`].
static LOGGER: std::sync::OnceLock<&'static AgentLogger> = std::sync::OnceLock::new();

/// Changes how much is logged from now on (a reload); false before [`init`].
pub fn set_verbosity(verbosity: u8) -> bool {
    let Some(logger) = LOGGER.get() else {
        return false;
    };
    logger.verbosity.store(verbosity, Ordering::Relaxed);
    log::set_max_level(level_filter(verbosity));
    true
}

/// The verbosity in force.
pub fn verbosity() -> Option<u8> {
    LOGGER.get().map(|l| l.verbosity.load(Ordering::Relaxed))
}

fn level_filter(verbosity: u8) -> LevelFilter {
    match verbosity {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

struct AgentLogger {
    /// An 8-bit atomic: there on every target (32-bit MIPS too).
    verbosity: AtomicU8,
    sink: Sink,
    /// Copy every line to standard error as well (`-alsologtostderr`).
    also_stderr: bool,
}

enum Sink {
    Stderr,
    File(Mutex<RotatingFile>),
    #[cfg(unix)]
    Syslog(Mutex<SyslogSink>),
}

impl AgentLogger {
    /// The logger and, when syslog was asked for but is absent, a warning to log.
    fn open(
        target: &LogTarget,
        verbosity: u8,
        also_stderr: bool,
        rotate_bytes: u64,
        syslog_socket: &Path,
    ) -> Result<(AgentLogger, Option<String>), String> {
        #[cfg_attr(not(unix), allow(unused_mut))]
        let mut warning = None;
        let sink = match target {
            LogTarget::Stderr => Sink::Stderr,
            LogTarget::Dir(dir) => Sink::File(Mutex::new(RotatingFile::open(dir, rotate_bytes)?)),
            #[cfg(unix)]
            LogTarget::Syslog => match SyslogSink::connect(syslog_socket) {
                Ok(sink) => Sink::Syslog(Mutex::new(sink)),
                Err(e) => {
                    warning = Some(format!(
                        "syslog unavailable at {} ({e}); logging to standard error",
                        syslog_socket.display()
                    ));
                    Sink::Stderr
                }
            },
            // The event log is not a socket to write lines to; refuse rather than
            // silently logging somewhere the user did not ask for.
            #[cfg(not(unix))]
            LogTarget::Syslog => {
                let _ = syslog_socket;
                return Err(
                    "-l syslog: there is no syslog on this system; use -l DIR (a log \
                     directory) or -l stderr"
                        .into(),
                );
            }
        };
        let also_stderr = also_stderr && !matches!(sink, Sink::Stderr);
        Ok((
            AgentLogger {
                verbosity: AtomicU8::new(verbosity),
                sink,
                also_stderr,
            },
            warning,
        ))
    }
}

impl Log for AgentLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let own = metadata.target() == "btcagent" || metadata.target().starts_with("btcagent::");
        let verbosity = self.verbosity.load(Ordering::Relaxed);
        metadata.level() <= level_filter(verbosity)
            && (own || metadata.level() <= Level::Info || verbosity >= 3)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match &self.sink {
            Sink::Stderr => write_stderr(&format_line(
                SystemTime::now(),
                record.level(),
                record.args(),
            )),
            Sink::File(file) => {
                let line = format_line(SystemTime::now(), record.level(), record.args());
                if let Ok(mut file) = file.lock() {
                    file.write_line(line.as_bytes());
                }
                if self.also_stderr {
                    write_stderr(&line);
                }
            }
            #[cfg(unix)]
            Sink::Syslog(syslog) => {
                if let Ok(mut syslog) = syslog.lock() {
                    syslog.send(record.level(), &record.args().to_string());
                }
                if self.also_stderr {
                    write_stderr(&format_line(
                        SystemTime::now(),
                        record.level(),
                        record.args(),
                    ));
                }
            }
        }
    }

    fn flush(&self) {
        if let Sink::File(file) = &self.sink {
            if let Ok(mut file) = file.lock() {
                file.flush();
            }
        }
    }
}

fn write_stderr(line: &str) {
    // Not eprint!: it panics when standard error is closed.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `2026-11-25 01:30:42.123 INFO  message\n`, in UTC.
fn format_line(now: SystemTime, level: Level, message: &Arguments) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86400) as i64);
    let second_of_day = seconds % 86400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} {level:<5} {message}\n",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_millis(),
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian; Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `DIR/btcagent.log`, moved to `btcagent.log.1` (replacing it) when a line would take
/// it past `rotate_bytes`.
struct RotatingFile {
    path: PathBuf,
    old_path: PathBuf,
    file: Option<File>,
    size: u64,
    rotate_bytes: u64,
}

impl RotatingFile {
    fn open(dir: &Path, rotate_bytes: u64) -> Result<RotatingFile, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create log directory {}: {e}", dir.display()))?;
        let path = dir.join(LOG_FILE_NAME);
        let file = open_append(&path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let old_path = dir.join(format!("{LOG_FILE_NAME}.1"));
        Ok(RotatingFile {
            path,
            old_path,
            file: Some(file),
            size,
            rotate_bytes,
        })
    }

    fn write_line(&mut self, line: &[u8]) {
        if self.size > 0 && self.size + line.len() as u64 > self.rotate_bytes {
            self.rotate();
        }
        if self.file.is_none() {
            // Someone removed the directory or the file system was full: try again.
            self.reopen();
        }
        if let Some(file) = &mut self.file {
            if file.write_all(line).is_ok() {
                self.size += line.len() as u64;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let renamed = std::fs::rename(&self.path, &self.old_path).is_ok();
        self.reopen();
        if !renamed && self.size >= self.rotate_bytes {
            // Cannot keep the old lines: dropping them beats filling the tmpfs.
            if let Some(file) = &self.file {
                if file.set_len(0).is_ok() {
                    self.size = 0;
                }
            }
        }
    }

    fn reopen(&mut self) {
        self.file = open_append(&self.path).ok();
        self.size = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
    }

    fn flush(&mut self) {
        if let Some(file) = &mut self.file {
            let _ = file.flush();
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(unix)]
/// RFC 3164 messages over the local syslog socket: `<PRI>btcagent[PID]: message`.
///
/// Written by hand rather than with the `syslog` crate: its timestamp formatting pulls
/// in the `time` crate (some 40 KiB of a router binary), and the daemon stamps messages
/// that arrive without a time itself (busybox syslogd and OpenWrt's logd both do), in
/// the router's own time zone, which the agent does not know.
struct SyslogSink {
    path: PathBuf,
    socket: UnixDatagram,
    pid: u32,
}

/// Facility `daemon` (3) in the priority value.
#[cfg(unix)]
const FACILITY_DAEMON: u8 = 3 << 3;

#[cfg(unix)]
impl SyslogSink {
    fn connect(path: &Path) -> Result<SyslogSink, String> {
        if !path.exists() {
            return Err("no such socket".into());
        }
        let socket = UnixDatagram::unbound().map_err(|e| e.to_string())?;
        socket.connect(path).map_err(|e| e.to_string())?;
        Ok(SyslogSink {
            path: path.to_path_buf(),
            socket,
            pid: std::process::id(),
        })
    }

    fn send(&mut self, level: Level, message: &str) {
        if self.send_once(level, message).is_ok() {
            return;
        }
        // A restarted syslog daemon leaves our datagram socket connected to nothing:
        // reconnect once, and drop the message if that fails too.
        if let Ok(fresh) = SyslogSink::connect(&self.path) {
            *self = fresh;
            let _ = self.send_once(level, message);
        }
    }

    fn send_once(&self, level: Level, message: &str) -> std::io::Result<()> {
        let severity = match level {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        };
        let line = format!(
            "<{}>btcagent[{}]: {message}",
            FACILITY_DAEMON | severity,
            self.pid
        );
        self.socket.send(line.as_bytes()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    /// Binds a datagram socket where a test can read what the logger sent.
    fn bind_test_syslog(dir: &Path) -> (PathBuf, UnixDatagram) {
        let path = dir.join("log.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        (path, socket)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("btcagent-logging-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn log_at(logger: &AgentLogger, level: Level, target: &str, message: &str) {
        logger.log(
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{message}"))
                .build(),
        );
    }

    #[test]
    fn line_format_is_utc_with_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_570_242_123);
        assert_eq!(
            format_line(at, Level::Info, &format_args!("hello {}", 1)),
            "2026-11-25 01:30:42.123 INFO  hello 1\n"
        );
        assert_eq!(
            format_line(UNIX_EPOCH, Level::Error, &format_args!("x")),
            "1970-01-01 00:00:00.000 ERROR x\n"
        );
    }

    #[test]
    fn calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
    }

    #[test]
    fn verbosity_levels_and_library_noise() {
        let logger = |verbosity| AgentLogger {
            verbosity: AtomicU8::new(verbosity),
            sink: Sink::Stderr,
            also_stderr: false,
        };
        let enabled = |l: &AgentLogger, level, target| {
            l.enabled(&Metadata::builder().level(level).target(target).build())
        };
        assert!(enabled(&logger(0), Level::Info, "btcagent::pool"));
        assert!(!enabled(&logger(0), Level::Debug, "btcagent::pool"));
        assert!(enabled(&logger(1), Level::Debug, "btcagent"));
        assert!(!enabled(&logger(1), Level::Trace, "btcagent"));
        assert!(enabled(&logger(2), Level::Trace, "btcagent::miner"));
        assert!(!enabled(&logger(2), Level::Trace, "async_io::reactor"));
        assert!(enabled(&logger(2), Level::Warn, "async_io::reactor"));
        assert!(enabled(&logger(3), Level::Trace, "async_io::reactor"));
    }

    #[test]
    fn dir_target_appends_and_rotates() {
        let dir = temp_dir("rotate").join("made-by-logger");
        let (logger, warning) = AgentLogger::open(
            &LogTarget::Dir(dir.clone()),
            0,
            false,
            200,
            Path::new("/unused"),
        )
        .unwrap();
        assert!(warning.is_none());
        let log_file = dir.join(LOG_FILE_NAME);
        let old_file = dir.join("btcagent.log.1");
        log_at(&logger, Level::Info, "btcagent", "first line");
        log_at(&logger, Level::Debug, "btcagent", "filtered out");
        let text = std::fs::read_to_string(&log_file).unwrap();
        assert!(text.ends_with(" INFO  first line\n"), "{text:?}");
        assert_eq!(text.lines().count(), 1);
        assert!(!old_file.exists());

        for i in 0..20 {
            log_at(
                &logger,
                Level::Warn,
                "btcagent",
                &format!("line number {i}"),
            );
        }
        logger.flush();
        let current = std::fs::read_to_string(&log_file).unwrap();
        let old = std::fs::read_to_string(&old_file).unwrap();
        assert!(
            current.len() <= 200 && old.len() <= 200,
            "{} {}",
            current.len(),
            old.len()
        );
        assert!(current.ends_with("line number 19\n"), "{current:?}");
        assert!(
            !old.is_empty() && !old.contains("first line"),
            "only one old file is kept: {old:?}"
        );

        // Reopening appends to what is there instead of truncating it.
        drop(logger);
        let (logger, _) = AgentLogger::open(
            &LogTarget::Dir(dir.clone()),
            0,
            false,
            200,
            Path::new("/unused"),
        )
        .unwrap();
        log_at(&logger, Level::Info, "btcagent", "after restart");
        let again = std::fs::read_to_string(&log_file).unwrap();
        assert!(again.ends_with("after restart\n"));
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn dir_target_reports_an_unusable_directory() {
        let dir = temp_dir("unusable");
        let blocker = dir.join("a-file");
        std::fs::write(&blocker, "").unwrap();
        let result = AgentLogger::open(
            &LogTarget::Dir(blocker.join("sub")),
            0,
            false,
            200,
            Path::new("/unused"),
        );
        let message = result.err().unwrap();
        assert!(message.contains("cannot create log directory"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syslog_target_sends_datagrams() {
        let dir = temp_dir("syslog");
        let (path, socket) = bind_test_syslog(&dir);
        let (logger, warning) =
            AgentLogger::open(&LogTarget::Syslog, 0, false, ROTATE_BYTES, &path).unwrap();
        assert!(warning.is_none());
        log_at(
            &logger,
            Level::Warn,
            "btcagent::pool",
            "pool connection lost",
        );
        let mut buffer = [0u8; 2048];
        let n = socket.recv(&mut buffer).unwrap();
        let datagram = String::from_utf8_lossy(&buffer[..n]).into_owned();
        // <28> = facility daemon (3) * 8 + severity warning (4).
        assert!(datagram.starts_with("<28>"), "{datagram}");
        assert!(
            datagram.contains(&format!(
                "btcagent[{}]: pool connection lost",
                std::process::id()
            )),
            "{datagram}"
        );

        // The daemon restarts: the logger reconnects and the next message arrives.
        drop(socket);
        std::fs::remove_file(&path).unwrap();
        let (_, socket) = bind_test_syslog(&dir);
        log_at(&logger, Level::Info, "btcagent", "after syslog restart");
        let n = socket.recv(&mut buffer).unwrap();
        assert!(String::from_utf8_lossy(&buffer[..n]).contains("after syslog restart"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_syslog_falls_back_to_stderr() {
        let (logger, warning) = AgentLogger::open(
            &LogTarget::Syslog,
            0,
            true,
            ROTATE_BYTES,
            Path::new("/nonexistent/log"),
        )
        .unwrap();
        assert!(matches!(logger.sink, Sink::Stderr));
        assert!(!logger.also_stderr, "stderr must not get every line twice");
        assert!(warning
            .unwrap()
            .contains("syslog unavailable at /nonexistent/log"));
    }
}
