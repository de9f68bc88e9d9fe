//! What the kernel counts for a process: memory, CPU time and write calls, read
//! from /proc so the agent is measured from outside, exactly as an operator would.

use std::io;

/// One reading of a process's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// Resident set size now, in KiB (VmRSS).
    pub rss_kb: u64,
    /// Peak resident set size, in KiB (VmHWM).
    pub hwm_kb: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
    /// write()-family system calls (syscw), all descriptors.
    pub write_calls: u64,
}

/// Clock ticks per second of /proc/PID/stat times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The value of a `Name:   123 kB` line of /proc/PID/status.
fn status_kb(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// utime + stime in ticks: fields 14 and 15 of /proc/PID/stat, counted after the
/// command name (which may itself contain spaces and parentheses).
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The process's start time (field 22 of /proc/PID/stat, in ticks since boot): the
/// same across an exec in place, another for another process with a reused pid.
fn stat_start_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// When process `pid` started, in clock ticks since boot.
pub fn start_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat_start_ticks(&stat).ok_or_else(|| malformed("stat", pid))
}

/// The value of a `name: 123` line of /proc/PID/io.
fn io_field(io_text: &str, name: &str) -> Option<u64> {
    io_text
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().parse().ok())
}

fn malformed(what: &str, pid: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("/proc/{pid}/{what}: unexpected format"),
    )
}

/// Reads the counters of process `pid` (or of this process with "self").
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // /proc/PID/io needs ptrace rights; without them write counts read as 0.
    let io_text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    Ok(ProcSample {
        rss_kb: status_kb(&status, "VmRSS").ok_or_else(|| malformed("status", pid))?,
        hwm_kb: status_kb(&status, "VmHWM").ok_or_else(|| malformed("status", pid))?,
        cpu_s: stat_cpu_ticks(&stat).ok_or_else(|| malformed("stat", pid))? as f64 / clock_ticks(),
        write_calls: io_field(&io_text, "syscw").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_stat_and_io() {
        let status = "Name:\tbtcagent\nVmHWM:\t    9000 kB\nVmRSS:\t    8123 kB\n";
        assert_eq!(status_kb(status, "VmRSS"), Some(8123));
        assert_eq!(status_kb(status, "VmHWM"), Some(9000));
        assert_eq!(status_kb(status, "VmSwap"), None);
        let stat = "42 (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_cpu_ticks(stat), Some(300));
        assert_eq!(stat_cpu_ticks("42 (x"), None);
        assert_eq!(stat_start_ticks(stat), None, "too few fields");
        let full =
            "42 (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 987654 1000";
        assert_eq!(stat_start_ticks(full), Some(987654));
        let io_text = "rchar: 10\nwchar: 2048\nsyscr: 3\nsyscw: 7\n";
        assert_eq!(io_field(io_text, "syscw"), Some(7));
        assert_eq!(io_field(io_text, "wchar"), Some(2048));
    }

    #[test]
    fn samples_this_process() {
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kb > 0 && me.hwm_kb >= me.rss_kb);
        assert!(start_ticks(std::process::id()).is_ok());
    }
}
