//! Exact system-call counts of the agent over the window, from the kernel's syscall
//! tracepoints through `perf stat` (when perf is installed and allowed).
//!
//! /proc/PID/io `syscw` is no substitute: it counts write(2) and writev(2) only,
//! while Rust's TcpStream sends with sendto(2), so socket writes would read as 0.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

/// The calls that show where an event loop's time goes.
pub const COUNTED: [&str; 8] = [
    "sendto",
    "recvfrom",
    "write",
    "read",
    "epoll_pwait",
    "epoll_ctl",
    "timerfd_settime",
    "futex",
];

pub struct SyscallCounter {
    child: Child,
}

impl SyscallCounter {
    /// `None` when perf is missing or cannot attach.
    pub fn start(pid: u32) -> Option<SyscallCounter> {
        let events: Vec<String> = COUNTED
            .iter()
            .map(|c| format!("syscalls:sys_enter_{c}"))
            .collect();
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-e", &events.join(","), "-p"])
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        Some(SyscallCounter { child })
    }

    /// Stops counting (SIGINT makes perf print its totals); counts by call name.
    pub fn finish(self) -> Option<BTreeMap<String, u64>> {
        // SAFETY: kill() with our own child's pid only sends a signal.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let output = self.child.wait_with_output().ok()?;
        let counts = parse(&String::from_utf8_lossy(&output.stderr));
        (!counts.is_empty()).then_some(counts)
    }
}

/// Lines of `perf stat -x ,`: `count,unit,event,...`; "<not counted>" lines are skipped.
fn parse(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(',');
            let count: u64 = fields.next()?.trim().parse().ok()?;
            let event = fields.nth(1)?;
            let name = event.strip_prefix("syscalls:sys_enter_")?;
            Some((name.to_string(), count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_perf_csv() {
        let text = "7867,,syscalls:sys_enter_sendto,5002895655,100.00,,\n\
                    <not counted>,,syscalls:sys_enter_futex,0,100.00,,\n\
                    oops\n";
        let counts = super::parse(text);
        assert_eq!(counts.len(), 1);
        assert_eq!(counts["sendto"], 7867);
    }
}
