//! The open-files limit: one descriptor per miner, so a farm needs thousands.
//!
//! The agent raises its soft limit to the hard one at start, as Go programs do (the
//! original agent got this from its runtime): systemd hands services 1024 soft under a
//! hard limit of 524288, and procd sets both (65536, see the init script). The limit
//! also caps how many descriptors strangers' handshakes may take (`agent.rs`).

#[cfg(unix)]
fn get() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force.
#[cfg(unix)]
pub fn raise() -> Option<u64> {
    let limit = get()?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct passed to it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return current();
        }
    }
    current()
}

/// The soft RLIMIT_NOFILE now in force.
#[cfg(unix)]
pub fn current() -> Option<u64> {
    // rlim_t is 32 bits wide on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    get().map(|l| l.rlim_cur as u64)
}

/// Windows has no such per-process limit on sockets.
#[cfg(not(unix))]
pub fn raise() -> Option<u64> {
    None
}

#[cfg(not(unix))]
pub fn current() -> Option<u64> {
    None
}
