//! `logging::init` with the syslog target, through the `log` macros, to a real unix
//! datagram socket standing in for /dev/log. Its own test binary because the logger is
//! process-wide.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use btcagent::logging::{self, LogTarget};

#[test]
fn syslog_target_receives_log_macros() {
    let dir = std::env::temp_dir().join(format!("btcagent-syslog-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("log.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std::env::set_var(logging::SYSLOG_SOCKET_ENV, &socket_path);

    logging::init(&LogTarget::Syslog, 1, false).unwrap();
    log::debug!(target: "btcagent::test", "debug shown at verbosity 1");
    log::trace!(target: "btcagent::test", "trace hidden at verbosity 1");
    log::error!(target: "btcagent::test", "last line");

    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.iter().any(|d: &String| d.contains("last line")) {
        let n = socket
            .recv(&mut buffer)
            .expect("no datagram from the logger");
        received.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    assert_eq!(received.len(), 2, "{received:?}");
    // Priority 31 = daemon (3) * 8 + debug (7); 27 = daemon + error (3).
    assert!(
        received[0].starts_with("<31>") && received[0].contains("debug shown at verbosity 1"),
        "{received:?}"
    );
    assert!(
        received[1].starts_with("<27>") && received[1].contains("btcagent["),
        "{received:?}"
    );

    assert!(
        logging::init(&LogTarget::Stderr, 0, false).is_err(),
        "a second init must fail, not panic"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
