//! Plumbing shared by the `poolsim` and `minersim` binaries.

use std::time::{Duration, Instant};

/// Seconds from the command line: 0 = none; negative, NaN or absurd = an error.
pub fn secs(option: &str, value: f64) -> Result<Option<Duration>, String> {
    if value == 0.0 {
        return Ok(None);
    }
    match Duration::try_from_secs_f64(value) {
        Ok(d) if value <= 1e9 => Ok(Some(d)),
        _ => Err(format!(
            "{option} {value:?}: need seconds between 0 and 1e9"
        )),
    }
}

/// Prints `name`, the elapsed seconds and `summary()` every `every` until SIGINT/SIGTERM
/// (see [`crate::rlimit::catch_termination`]) or until `duration` (None = forever) has passed.
pub fn run_until_stopped(
    name: &str,
    duration: Option<Duration>,
    every: Duration,
    summary: impl Fn() -> String,
) {
    let started = Instant::now();
    let mut next_print = started + every;
    while !crate::rlimit::termination_requested() && duration.is_none_or(|d| started.elapsed() < d)
    {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next_print {
            next_print += every;
            println!(
                "{name} {:>5.0}s {}",
                started.elapsed().as_secs_f64(),
                summary()
            );
        }
    }
}
