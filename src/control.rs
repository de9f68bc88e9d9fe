//! What the process is asked from outside: stop (SIGINT, SIGTERM on Unix; on Windows
//! the console's control events: Ctrl-C, Ctrl-Break, closing the console window, system
//! shutdown), read the config again (SIGHUP, Unix only) or hand the miners over to a
//! new binary (SIGUSR2, Unix only; `src/handoff.rs`).
//!
//! A stop shuts the agent down as on SIGTERM: it unregisters every worker at the pool
//! and closes the miners' connections, so the pool does not count them until its own
//! timeout.

use smol::stream::{Stream, StreamExt};

pub enum Request {
    Stop,
    /// Read the config source again and apply it (`/etc/init.d/btcagent reload`).
    Reload,
    /// Replace the running binary without dropping miners (`/etc/init.d/btcagent restart`).
    HandOff,
}

/// Installs the handlers. Call it first thing: until then a SIGHUP (procd's reload)
/// would kill the process instead of reloading it.
#[cfg(unix)]
pub fn install() -> Result<impl Stream<Item = Request> + 'static, String> {
    use async_signal::Signal;
    let signals =
        async_signal::Signals::new([Signal::Int, Signal::Term, Signal::Hup, Signal::Usr2])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    Ok(signals.filter_map(|sig| match sig {
        Ok(Signal::Hup) => Some(Request::Reload),
        Ok(Signal::Usr2) => Some(Request::HandOff),
        Ok(sig) => {
            log::info!("received {sig:?}");
            Some(Request::Stop)
        }
        Err(_) => None,
    }))
}

/// Installs the handlers; there is no reload request on Windows (restart the agent).
///
/// async-signal maps only Ctrl-C on Windows, and closing the console window would kill
/// the agent without unregistering anyone; hence a console control handler of our own.
#[cfg(windows)]
pub fn install() -> Result<impl Stream<Item = Request> + 'static, String> {
    let receiver = console::install()?;
    Ok(receiver.map(|event| {
        log::info!("received {}", console::event_name(event));
        Request::Stop
    }))
}

#[cfg(windows)]
mod console {
    use smol::channel::{Receiver, Sender};
    use std::sync::OnceLock;

    // wincon.h
    const CTRL_C_EVENT: u32 = 0;
    const CTRL_BREAK_EVENT: u32 = 1;
    const CTRL_CLOSE_EVENT: u32 = 2;
    const CTRL_LOGOFF_EVENT: u32 = 5;
    const CTRL_SHUTDOWN_EVENT: u32 = 6;

    #[link(name = "kernel32")]
    extern "system" {
        fn SetConsoleCtrlHandler(
            handler: Option<unsafe extern "system" fn(u32) -> i32>,
            add: i32,
        ) -> i32;
    }

    /// The stop request, for the agent's executor; one is enough.
    static STOP: OnceLock<Sender<u32>> = OnceLock::new();

    pub fn install() -> Result<Receiver<u32>, String> {
        let (sender, receiver) = smol::channel::bounded(1);
        STOP.set(sender)
            .map_err(|_| "console control handler installed twice".to_owned())?;
        // SAFETY: registers a handler function that lives as long as the program.
        if unsafe { SetConsoleCtrlHandler(Some(on_console_event), 1) } == 0 {
            return Err(format!(
                "cannot install the console control handler: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(receiver)
    }

    pub fn event_name(event: u32) -> &'static str {
        match event {
            CTRL_C_EVENT => "Ctrl-C",
            CTRL_BREAK_EVENT => "Ctrl-Break",
            CTRL_CLOSE_EVENT => "console close",
            CTRL_SHUTDOWN_EVENT => "system shutdown",
            _ => "console event",
        }
    }

    /// Runs on a thread Windows starts for the event. Returning TRUE for Ctrl-C/Break
    /// keeps the process alive for the shutdown; for close and shutdown Windows ends the
    /// process as soon as the handler returns (or after its timeout, 5 s for close), so
    /// the handler waits instead, and the process ends when `main` returns.
    unsafe extern "system" fn on_console_event(event: u32) -> i32 {
        match event {
            // Sent to services (NSSM, WinSW run the agent as one) whenever any user
            // logs off: not a reason to stop.
            CTRL_LOGOFF_EVENT => 1,
            CTRL_C_EVENT | CTRL_BREAK_EVENT => {
                request_stop(event);
                1
            }
            CTRL_CLOSE_EVENT | CTRL_SHUTDOWN_EVENT => {
                request_stop(event);
                loop {
                    std::thread::park();
                }
            }
            _ => 0,
        }
    }

    fn request_stop(event: u32) {
        if let Some(stop) = STOP.get() {
            // Full: a stop is already on its way.
            let _ = stop.try_send(event);
        }
    }
}
