//! Makes sure async-io's timers fire where the kernel (or emulator) cannot arm them.
//!
//! async-io arms a timerfd with `timerfd_settime64` on 32-bit targets. qemu-user (7.2
//! and 10.0 seen) does not implement that syscall for MIPS and ARM, and the reactor
//! then sleeps until the next I/O event: no dial timeout, no backoff, no coalescing
//! flush. A kernel that lacked it would do the same. The agent checks once at start;
//! where timers do not fire, a helper thread wakes the reactor every [`TICK`], so
//! timers run at most that late.

use async_io::{Async, Timer};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How late a timer may fire in the fallback.
pub const TICK: Duration = Duration::from_millis(10);

/// True when a short timer fires on its own (checked against a wake-up from a thread).
fn timers_fire() -> bool {
    let Ok((probe, waker)) = UnixStream::pair() else {
        return true;
    };
    let Ok(probe) = Async::new(probe) else {
        return true;
    };
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let _ = (&waker).write(&[1]);
        // Keep the socket open until the probe has surely looked.
        std::thread::sleep(Duration::from_millis(100));
    });
    let start = std::time::Instant::now();
    smol::block_on(smol::future::or(
        async {
            Timer::after(Duration::from_millis(10)).await;
        },
        async {
            let _ = probe.readable().await;
        },
    ));
    // Woken by the thread rather than by the timer: a late timer is ready too when
    // polled again, so judge by the time it took.
    start.elapsed() < Duration::from_millis(250)
}

/// Starts the fallback tick when timers do not fire on their own.
pub fn ensure_timers_fire(ex: &'static smol::LocalExecutor<'static>) {
    if timers_fire() {
        return;
    }
    log::warn!(
        "timers do not fire on this kernel or emulator (no timerfd_settime64?): waking the reactor every {} ms instead",
        TICK.as_millis()
    );
    let Ok((tick, ticker)) = UnixStream::pair() else {
        return;
    };
    let Ok(tick) = Async::new(tick) else { return };
    std::thread::spawn(move || loop {
        std::thread::sleep(TICK);
        if (&ticker).write(&[0]).is_err() {
            return;
        }
    });
    ex.spawn(async move {
        let mut buf = [0u8; 64];
        while tick.readable().await.is_ok() {
            while let Ok(n) = tick.get_ref().read(&mut buf) {
                if n == 0 {
                    return;
                }
            }
        }
    })
    .detach();
}
